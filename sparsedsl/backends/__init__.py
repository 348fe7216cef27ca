"""Backends: each turns a loop-IR function into a callable: ``cpu`` (numba) and ``cuda`` (cupy, NVRTC)."""

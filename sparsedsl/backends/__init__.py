"""Backends: each turns a loop-IR module into a callable (numba_cpu; cuda_cupy later)."""

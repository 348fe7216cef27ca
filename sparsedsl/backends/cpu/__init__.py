"""The CPU backend: loop IR rendered as Python source (``render``) and compiled with numba, machine code
cached on disk (``compile``)."""

from .compile import build

__all__ = ["build"]

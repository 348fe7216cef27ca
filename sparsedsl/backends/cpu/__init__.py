"""The CPU backend: loop IR rendered as Python source (``render``) and compiled with numba, machine code
cached on disk (``compile``).

``LOWERING`` is what this backend asks of the (backend-independent) lowering: dense output indices
innermost where that makes the inner loop a contiguous axpy, a bitset ordering a dense workspace's
coordinates, and these loop-IR passes, in order (``lang/passes.py``): prefetch the rows a sparse loop
gathers, then unroll axpys four entries at a time."""

from .compile import build

LOWERING = {"trailing_dense": True, "bitset_workspace": True, "passes": ("prefetch_gathers", "unroll_axpys")}

__all__ = ["LOWERING", "build"]

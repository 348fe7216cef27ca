"""PartitionedTensor: a sparse tensor as a grid of SparseTensor blocks held by Dask.

Row blocks (a grid of p x 1) serve SpMV, SpMM, SDDMM, elementwise operations and reductions; a 2-D
grid (p x q) serves the block SpGEMM. The offsets of every cut (``splits``) travel with the
blocks, so ``.compute()`` reassembles exactly the tensor that was cut.
"""

from __future__ import annotations

import itertools

import dask
import numpy as np

import sparsedsl as sd

from . import blocks


class PartitionedTensor:
    """A tensor of ``shape`` stored as ``blocks`` (a numpy object array of ``dask.delayed`` values,
    each a SparseTensor in ``format``); ``splits[d]`` are the offsets of the blocks along dimension d.

    Build one with :func:`sparsedsl.dask.partition`; operators (``@``, ``+``, ``*``, ``.sum()``...)
    and :func:`sparsedsl.dask.call` give lazy results (dask arrays or PartitionedTensors).
    """

    __array_priority__ = 20
    __array_ufunc__ = None  # numpy defers: ``x @ P`` calls P.__rmatmul__

    def __init__(self, cells: np.ndarray, splits, fmt, dtype):
        self.blocks = cells
        self.splits = tuple(tuple(int(c) for c in s) for s in splits)
        self.shape = tuple(s[-1] for s in self.splits)
        self.format = sd.as_format(fmt, len(self.shape))
        self.dtype = np.dtype(dtype)
        if cells.shape != self.grid:
            raise ValueError(f"{cells.shape} blocks do not match splits of {self.grid} blocks")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def grid(self) -> tuple[int, ...]:
        """Blocks along each dimension."""
        return tuple(len(s) - 1 for s in self.splits)

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        """Block sizes along each dimension, as dask arrays spell them (``partition(B, chunks=A.chunks)``)."""
        return tuple(blocks.sizes(s) for s in self.splits)

    @property
    def npartitions(self) -> int:
        return int(np.prod(self.grid))

    def __repr__(self):
        return (f"PartitionedTensor(shape={self.shape}, format={self.format}, dtype={self.dtype}, "
                f"grid={self.grid}, chunks={self.chunks})")

    def __array__(self, dtype=None, copy=None):
        raise TypeError("a PartitionedTensor is not an array of this process: run a kernel on it with "
                        "sparsedsl.dask.call(kernel, A=PA, ...), or gather it first with PA.compute()")

    def __sparsedsl_call__(self, kernel, operands: dict):
        """``kernel(**operands)`` with this tensor among them: the partitioned call (``Kernel.__call__``
        defers to an operand that defines this method)."""
        return _ops().call(kernel, **operands)

    # ---- Dask ------------------------------------------------------------------------------
    def compute(self, **kwargs) -> sd.SparseTensor:
        """Gather the blocks (``dask.compute``: the active Client's cluster, or local threads) and
        assemble the SparseTensor they were cut from, in ``format``."""
        cells = dask.compute(*self.blocks.flat, **kwargs)
        index = list(itertools.product(*(range(g) for g in self.grid)))
        return blocks.glue(dict(zip(index, cells)), self.splits, self.format)

    def persist(self, **kwargs) -> PartitionedTensor:
        """The same tensor with its blocks computed and held in (cluster) memory."""
        done = dask.persist(*self.blocks.flat, **kwargs)
        cells = np.empty(self.grid, dtype=object)
        for k, idx in enumerate(itertools.product(*(range(g) for g in self.grid))):
            cells[idx] = done[k]
        return PartitionedTensor(cells, self.splits, self.format, self.dtype)

    def map_blocks(self, fn, *args) -> PartitionedTensor:
        """``fn(block, *args)`` on every block; ``fn`` must keep block shapes and return SparseTensors
        (its format and dtype are those of ``fn`` on an empty block)."""
        meta = fn(blocks.empty(self.format, (0,) * self.ndim, self.dtype), *args)
        cells = np.empty(self.grid, dtype=object)
        for idx in np.ndindex(*self.grid):
            cells[idx] = dask.delayed(fn, pure=True)(self.blocks[idx], *args)
        return PartitionedTensor(cells, self.splits, meta.format, meta.dtype)

    # ---- operators (sparsedsl/dask/ops.py) ---------------------------------------------------
    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __rmatmul__(self, other):
        return _ops().matmul(other, self)

    def dot(self, other):
        return self @ other

    def __neg__(self):
        return self.map_blocks(_neg)

    def __abs__(self):
        return self.map_blocks(abs)

    def sum(self, axis=None):
        """As ``SparseTensor.sum``: a dask array (0-d for ``axis=None``)."""
        return _ops().reduce("sum", self, axis)

    def max(self, axis=None):
        return _ops().reduce("max", self, axis)

    def min(self, axis=None):
        return _ops().reduce("min", self, axis)

    @property
    def T(self) -> PartitionedTensor:
        """The transpose (2-D): each block transposed, the grid transposed; no data moves."""
        if self.ndim != 2:
            raise ValueError(f".T needs a 2-D tensor; this one is {self.ndim}-D")
        meta = blocks.empty(self.format, (0, 0), self.dtype).T
        cells = np.empty(self.grid[::-1], dtype=object)
        for r, c in np.ndindex(*self.grid):
            cells[c, r] = dask.delayed(_transpose, pure=True)(self.blocks[r, c])
        return PartitionedTensor(cells, self.splits[::-1], meta.format, meta.dtype)


def _elementwise(op: str):
    def left(self, other):
        return _ops().elementwise(op, self, other)

    def right(self, other):
        return _ops().elementwise(op, other, self)

    return left, right


for _name, _op in (("add", "+"), ("sub", "-"), ("mul", "*"), ("truediv", "/")):  # a op b and b op a, block by block
    setattr(PartitionedTensor, f"__{_name}__", _elementwise(_op)[0])
    setattr(PartitionedTensor, f"__r{_name}__", _elementwise(_op)[1])


def active_client():
    """The distributed Client in use, or None (no distributed installed, or Dask's local threads)."""
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:
        return None


def _neg(block):
    return -block


def _transpose(block):
    return block.T


# The operators and the partitioned call are tasks built above this module (ops, tasks), which install
# themselves here when sparsedsl.dask is imported: the data structure imports nothing above it.
_operators = None


def install_operators(module) -> None:
    global _operators
    _operators = module


def _ops():
    return _operators

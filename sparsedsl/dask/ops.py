"""PartitionedTensor's operators: the products as partitioned kernel calls, elementwise operations
and reductions as SparseTensor's own operators applied block by block (so their results follow
``sparsedsl.array_ops``' conventions exactly: formats, dtypes, what is refused).
"""

from __future__ import annotations

import itertools
import operator
import sys

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp

import sparsedsl as sd

from . import blocks, tasks
from .partitioned import PartitionedTensor, install_operators

_OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_PRODUCTS = {  # (left ndim, right ndim, both sparse) -> (name, index notation of ``left @ right``)
    (2, 1, False): ("spmv", "y[i] = A[i,j] * B[j]"),
    (2, 2, False): ("spmm", "Y[i,k] = A[i,j] * B[j,k]"),
    (1, 2, False): ("vecmat", "y[j] = A[i] * B[i,j]"),
    (2, 2, True): ("spgemm", "C[i,k] = A[i,j] * B[j,k]"),
}


def matmul(a, b):
    """``a @ b`` with one side partitioned: SpMV and SpMM give dask arrays, SpGEMM (a partitioned
    or whole sparse right side) a PartitionedTensor in csr."""
    a, b = _matrix(a), _matrix(b)
    if a is NotImplemented or b is NotImplemented:
        return NotImplemented
    if a.shape[-1] != b.shape[0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not align ({a.shape[-1]} != {b.shape[0]})")
    sparse = isinstance(b, (PartitionedTensor, sd.SparseTensor)) and isinstance(a, (PartitionedTensor, sd.SparseTensor))
    name, expr = _PRODUCTS.get((a.ndim, b.ndim, sparse), (None, None))
    if expr is None:
        raise ValueError(f"matmul of a {a.ndim}-D and a {b.ndim}-D operand is not supported here")
    if isinstance(a, PartitionedTensor) and isinstance(b, PartitionedTensor) and a.grid[1] != b.grid[0]:
        raise ValueError(f"the block product needs A's column blocks to match B's row blocks: A is cut {a.chunks}, "
                         f"B {b.chunks}; partition B with chunks=(A.chunks[1], ...)")
    return tasks.compute(expr, out_format="csr" if sparse else None, name=name, A=a, B=b)


def _matrix(x):
    if isinstance(x, (PartitionedTensor, sd.SparseTensor, da.Array)):
        return x
    if sp.issparse(x):
        return sd.asformat(x, "csr")
    if isinstance(x, (np.ndarray, list, tuple)):
        return np.asarray(x)
    return NotImplemented


def elementwise(op: str, a, b):
    """``a op b`` block by block: two PartitionedTensors cut alike, or one with a scalar or a dense
    array (broadcast as numpy does, and cut like the partitioned side)."""
    fn = _OPERATORS[op]
    p = a if isinstance(a, PartitionedTensor) else b
    if isinstance(a, PartitionedTensor) and isinstance(b, PartitionedTensor):
        if a.splits != b.splits:
            raise ValueError(f"elementwise {op} needs operands cut alike; got chunks {a.chunks} and {b.chunks}: "
                             f"partition one with chunks= the other's")
        other = b
    else:
        other = b if p is a else a
        if sp.issparse(other):
            other = sd.asformat(other, "csr")
        elif not isinstance(other, sd.SparseTensor):
            other = other if np.ndim(other) == 0 else np.broadcast_to(np.asarray(other), p.shape)
    meta = _apply(fn, p is a, blocks.empty(p.format, (0,) * p.ndim, p.dtype), _piece(other, p, None))
    results = {}
    for idx in np.ndindex(*p.grid):
        results[idx] = dask.delayed(_apply, pure=True)(fn, p is a, p.blocks[idx], _piece(other, p, idx))
    return _collect(results, p.splits, meta)


def _apply(fn, partitioned_left, block, other):
    return fn(block, other) if partitioned_left else fn(other, block)


def _piece(other, p: PartitionedTensor, idx):
    """The part of ``other`` facing block ``idx`` of ``p`` (idx None: an empty stand-in)."""
    if isinstance(other, PartitionedTensor):
        return other.blocks[idx] if idx is not None else blocks.empty(other.format, (0,) * p.ndim, other.dtype)
    if np.ndim(other) == 0 and not isinstance(other, sd.SparseTensor):
        return other
    if idx is None:
        return blocks.empty(other.format, (0,) * p.ndim, other.dtype) if isinstance(other, sd.SparseTensor) \
            else np.zeros((0,) * p.ndim, other.dtype)
    where = tuple(slice(s[b], s[b + 1]) for s, b in zip(p.splits, idx))
    if isinstance(other, sd.SparseTensor):
        return dask.delayed(blocks.cut(other, tuple((s[b], s[b + 1]) for s, b in zip(p.splits, idx)))[(0,) * p.ndim])
    return np.ascontiguousarray(other[where])


def _collect(results: dict, splits, meta):
    """Block results keyed by grid index as a PartitionedTensor (sparse) or a dask array (dense)."""
    grid = tuple(len(s) - 1 for s in splits)
    if isinstance(meta, sd.SparseTensor):
        cells = np.empty(grid, dtype=object)
        for idx, r in results.items():
            cells[idx] = r
        return PartitionedTensor(cells, splits, meta.format, meta.dtype)
    meta = np.asarray(meta)
    arrays = np.empty(grid, dtype=object)
    for idx, r in results.items():
        arrays[idx] = da.from_delayed(r, shape=blocks.block_shape(splits, idx), dtype=meta.dtype)
    return da.block(arrays.tolist())


def reduce(kind: str, p: PartitionedTensor, axis=None):
    """``p.sum/max/min(axis)``: each block reduced by its own operator, partials across the reduced
    axes combined, kept axes concatenated. A dask array (0-d for ``axis=None``)."""
    axes = tuple(range(p.ndim)) if axis is None else tuple(sorted(a % p.ndim for a in np.atleast_1d(axis)))
    kept = [d for d in range(p.ndim) if d not in axes]
    combine = {"sum": np.add, "max": np.maximum, "min": np.minimum}[kind]
    meta = np.asarray(getattr(blocks.empty(p.format, (1,) * p.ndim, p.dtype), kind)(axis))
    groups: dict[tuple, list] = {}
    for idx in np.ndindex(*p.grid):
        part = dask.delayed(_reduce_block, pure=True)(p.blocks[idx], kind, axis)
        groups.setdefault(tuple(idx[d] for d in kept), []).append(part)
    results = {k: dask.delayed(_combine_all, pure=True)(combine, parts) for k, parts in groups.items()}
    if not kept:
        return da.from_delayed(results[()], shape=(), dtype=meta.dtype)
    return _collect(results, tuple(p.splits[d] for d in kept), meta)


def _reduce_block(block, kind, axis):
    return np.asarray(getattr(block, kind)(axis))


def _combine_all(combine, parts):
    out = parts[0]
    for q in itertools.islice(parts, 1, None):
        out = combine(out, q)
    return out


call = tasks.call  # the partitioned call, for PartitionedTensor.__sparsedsl_call__
install_operators(sys.modules[__name__])  # PartitionedTensor's operators call this module

"""Cutting a local tensor into blocks and gluing blocks back together, exactly.

A partition is described by ``splits``: per dimension, the offsets where its blocks start, closed
by the extent (``(0, 500, 1000)`` cuts 1000 rows in two). Blocks are SparseTensors in the source's
format, so a kernel compiled for the whole tensor runs on each block unchanged.
"""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp

import sparsedsl as sd

# One block per task: a block of fewer nonzeros than this is cheaper to keep whole than to schedule
# (a Dask task costs ~1 ms of scheduler time; a csr SpMV does ~1e8 nonzeros a second per core).
MIN_BLOCK_NNZ = 10_000


def even_splits(n: int, parts: int, step: int = 1) -> tuple[int, ...]:
    """``parts`` blocks of ``n`` as equal as multiples of ``step`` allow (fewer when n is small)."""
    units = -(-n // step)
    parts = max(1, min(parts, units))
    cuts = [min(n, step * (units * k // parts)) for k in range(parts + 1)]
    return _strict(cuts, n)


def nnz_splits(row_nnz: np.ndarray, parts: int, step: int = 1) -> tuple[int, ...]:
    """Row offsets cutting rows into ``parts`` blocks of about equal nonzeros (a skewed matrix's
    heavy rows then do not all land on one worker), each a multiple of ``step`` rows."""
    n = len(row_nnz)
    if n == 0:
        return (0, 0)
    cum = np.concatenate([[0], np.cumsum(row_nnz, dtype=np.int64)])
    if cum[-1] == 0:
        return even_splits(n, parts, step)
    targets = cum[-1] * np.arange(1, parts) / parts
    cuts = np.searchsorted(cum, targets, side="left")
    cuts = (np.round(cuts / step) * step).astype(np.int64)
    return _strict([0, *np.clip(cuts, 0, n).tolist(), n], n)


def _strict(cuts, n) -> tuple[int, ...]:
    out = [0]
    for c in cuts[1:]:
        if c > out[-1]:
            out.append(int(c))
    if out[-1] != n:
        out.append(n)
    return tuple(out) if n else (0, 0)


def sizes_to_splits(sizes, n: int, what: str) -> tuple[int, ...]:
    """Offsets from block sizes (an int: blocks of that many, the last shorter; or a sequence)."""
    if isinstance(sizes, (int, np.integer)):
        if sizes < 1:
            raise ValueError(f"partition(): {what} must be a positive number of entries per block; got {sizes}")
        return _strict(list(range(0, n, int(sizes))) + [n], n)
    sizes = [int(s) for s in sizes]
    if any(s < 0 for s in sizes) or sum(sizes) != n:
        raise ValueError(f"partition(): {what} must be block sizes summing to the extent {n}; got {tuple(sizes)}")
    return tuple(int(c) for c in np.concatenate([[0], np.cumsum(sizes)]))


def sizes(splits) -> tuple[int, ...]:
    """Block sizes from offsets (dask's ``chunks`` along one dimension)."""
    return tuple(b - a for a, b in zip(splits[:-1], splits[1:]))


def block_shape(splits, index) -> tuple[int, ...]:
    return tuple(s[b + 1] - s[b] for s, b in zip(splits, index))


def cut(A: sd.SparseTensor, splits) -> dict[tuple, sd.SparseTensor]:
    """The blocks of ``A`` by ``splits``, keyed by block index, each in ``A``'s format."""
    grid = [range(len(s) - 1) for s in splits]
    if A.ndim == 2 and A.format == sd.as_format("csr") and tuple(splits[1]) == (0, A.shape[1]):
        return {(b, 0): _csr_rows(A, splits[0][b], splits[0][b + 1]) for b in grid[0]}
    if A.ndim == 2:
        m = A.to_scipy().tocsr()
        return {idx: sd.asformat(m[splits[0][idx[0]]:splits[0][idx[0] + 1],
                                   splits[1][idx[1]]:splits[1][idx[1] + 1]], A.format)
                for idx in itertools.product(*grid)}
    coords, vals = A.coordinates()
    out = {}
    for idx in itertools.product(*grid):
        keep = np.ones(len(vals), dtype=bool)
        for d, b in enumerate(idx):
            keep &= (coords[d] >= splits[d][b]) & (coords[d] < splits[d][b + 1])
        lo = np.array([splits[d][b] for d, b in enumerate(idx)])[:, None]
        out[idx] = sd.from_coordinates(coords[:, keep] - lo, vals[keep], block_shape(splits, idx), A.format)
    return out


def _csr_rows(A: sd.SparseTensor, r0: int, r1: int) -> sd.SparseTensor:
    """Rows r0:r1 of a csr tensor without conversion: slices of its arrays (it was validated once)."""
    pos, crd = A.levels[1]["pos"], A.levels[1]["crd"]
    p0, p1 = int(pos[r0]), int(pos[r1])
    levels = [{}, {"pos": (pos[r0:r1 + 1] - p0).astype(pos.dtype), "crd": crd[p0:p1]}]
    return sd.SparseTensor(A.format, (r1 - r0, A.shape[1]), levels, A.values[p0:p1], check=False)


def glue(blocks: dict[tuple, sd.SparseTensor], splits, fmt) -> sd.SparseTensor:
    """One SparseTensor in ``fmt`` from blocks keyed by block index (the inverse of ``cut``)."""
    shape = tuple(s[-1] for s in splits)
    grid = tuple(len(s) - 1 for s in splits)
    if len(shape) == 2 and fmt == sd.as_format("csr") and grid[1] == 1 and \
            all(blocks[(b, 0)].format == fmt for b in range(grid[0])):
        parts = [blocks[(b, 0)] for b in range(grid[0])]
        pos = [np.zeros(1, np.int64)]
        base = 0
        for p in parts:
            pos.append(p.levels[1]["pos"][1:].astype(np.int64) + base)
            base += p.nnz
        crd = np.concatenate([p.levels[1]["crd"] for p in parts]) if parts else np.zeros(0, np.int32)
        vals = np.concatenate([p.values for p in parts])
        return sd.SparseTensor(fmt, shape, [{}, {"pos": np.concatenate(pos), "crd": crd}], vals, check=False)
    if len(shape) == 2:
        rows = [[_scipy(blocks[(r, c)]) for c in range(grid[1])] for r in range(grid[0])]
        return sd.asformat(sp.bmat(rows, format="csr"), fmt)
    coords, vals = [], []
    for idx, blk in blocks.items():
        c, v = blk.coordinates()
        coords.append(c + np.array([splits[d][b] for d, b in enumerate(idx)])[:, None])
        vals.append(v)
    return sd.from_coordinates(np.concatenate(coords, axis=1), np.concatenate(vals), shape, fmt)


def _scipy(blk: sd.SparseTensor):
    return sp.csr_matrix(blk.todense()) if blk.format.is_dense else sp.csr_matrix(blk.to_scipy())


def empty(fmt, shape, dtype) -> sd.SparseTensor:
    """A tensor of ``shape`` in ``fmt`` storing nothing (the stand-in for a block when working out
    what a kernel returns without running it on data)."""
    ndim = len(shape)
    return sd.from_coordinates(np.zeros((ndim, 0), np.int64), np.zeros(0, dtype), shape, fmt)

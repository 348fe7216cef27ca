"""``partition``: a PartitionedTensor from a SparseTensor, a scipy matrix, a numpy or dask array, or a
Matrix Market file read in chunks by the workers.
"""

from __future__ import annotations

import os

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp

import sparsedsl as sd

from . import blocks, mtx
from .partitioned import PartitionedTensor, active_client


def partition(A, nparts=None, *, chunks=None, format=None, scatter=None) -> PartitionedTensor:  # noqa: A002
    """Cut ``A`` into blocks held by Dask.

    Parameters
    ----------
    A : SparseTensor, scipy.sparse matrix, numpy array, dask array, or the path of a Matrix Market
        file (read in byte ranges by the workers, never whole by this process).
    nparts : int, or (p, q) for a 2-D grid of blocks (the block SpGEMM). Rows are cut so that the
        blocks hold about equal nonzeros (row counts for a file); columns evenly.
    chunks : instead of ``nparts``: block sizes as dask spells them, for the rows (an int: rows per
        block; a tuple: each block's rows) or per dimension (a tuple of those, ``A.chunks`` of another
        PartitionedTensor). A dask array keeps its own chunks when neither is given.
    format : the blocks' format; default: a SparseTensor's own, else "csr" (2-D).
    scatter : send locally cut blocks to the workers now (default: when a distributed Client is
        active), so they are not carried inside every task graph.

    Returns
    -------
    PartitionedTensor

    >>> import scipy.sparse as sp
    >>> P = partition(sp.random(100, 50, density=0.1, format="csr", random_state=0), 4)
    >>> P.grid, P.shape
    ((4, 1), (100, 50))
    """
    if nparts is not None and chunks is not None:
        raise ValueError("partition(): give nparts or chunks, not both")
    if isinstance(A, (str, os.PathLike)):
        return mtx.read(A, nparts, chunks=chunks, format=format or "csr")
    if isinstance(A, da.Array):
        return _from_dask(A, nparts, chunks, format)
    if isinstance(A, PartitionedTensor):
        raise TypeError("partition(): A is already partitioned; gather it with A.compute() to cut it differently")
    if sp.issparse(A):
        A = sd.asformat(A, format or ("csr" if A.ndim == 2 else "sparse"))
    elif not isinstance(A, sd.SparseTensor):
        arr = np.asarray(A)
        if arr.ndim == 0 or arr.dtype.kind not in "biuf":
            raise TypeError(f"partition(): A must be a SparseTensor, a scipy.sparse matrix, a numeric numpy or dask "
                            f"array, or a Matrix Market path; got {type(A).__name__}")
        A = sd.asformat(arr, format or ("csr" if arr.ndim == 2 else "sparse"))
    if format is not None:
        A = sd.asformat(A, format)
    splits = _splits(A, nparts, chunks)
    cut = blocks.cut(A, splits)
    cells = np.empty(tuple(len(s) - 1 for s in splits), dtype=object)
    client = active_client() if scatter is None or scatter else None
    if scatter and client is None:
        raise ValueError("partition(scatter=True) needs a distributed Client; create one, or pass scatter=False")
    keys = list(cut)
    if client is not None:
        # hash=False: keys of their own; content keys would be shared with (and released by) another
        # partition of equal blocks
        futures = client.scatter([cut[k] for k in keys], hash=False)
        for k, f in zip(keys, futures):
            cells[k] = dask.delayed(f)
    else:
        for k in keys:
            cells[k] = dask.delayed(cut[k], pure=False)  # a key of its own: no hashing of the block's data
    return PartitionedTensor(cells, splits, A.format, A.dtype)


def _splits(A: sd.SparseTensor, nparts, chunks):
    step = A.format.blocks  # a blocked format (bsr) is cut on whole blocks
    if chunks is not None:
        per_dim = chunks if isinstance(chunks, tuple) and chunks and isinstance(chunks[0], (tuple, list)) \
            else (chunks,)
        if len(per_dim) > A.ndim:
            raise ValueError(f"partition(): chunks has {len(per_dim)} dimensions, the tensor {A.ndim}")
        splits = [blocks.sizes_to_splits(c, A.shape[d], f"chunks[{d}]") for d, c in enumerate(per_dim)]
        splits += [(0, n) for n in A.shape[len(splits):]]
        for d, s in enumerate(splits):
            b = step.get(d, 1)
            if any(c % b for c in s[:-1]):
                raise ValueError(f"partition(): format {A.format} stores dimension {d} in blocks of {b}; every "
                                 f"chunk boundary must be a multiple of {b}, got offsets {s}")
        return tuple(splits)
    parts = nparts if nparts is not None else 1
    parts = tuple(parts) if isinstance(parts, (tuple, list)) else (parts,)
    if not all(isinstance(p, (int, np.integer)) and p >= 1 for p in parts) or len(parts) > A.ndim:
        raise ValueError(f"partition(): nparts must be a positive int or one per dimension (p, q); got {nparts!r}")
    splits = [blocks.nnz_splits(_row_nnz(A), parts[0], step.get(0, 1))]
    splits += [blocks.even_splits(A.shape[d], p, step.get(d, 1)) for d, p in enumerate(parts[1:], start=1)]
    splits += [(0, n) for n in A.shape[len(splits):]]
    return tuple(splits)


def _row_nnz(A: sd.SparseTensor) -> np.ndarray:
    if A.ndim == 2 and A.format == sd.as_format("csr"):
        return np.diff(A.levels[1]["pos"])  # no unpacking of 20M coordinates to count rows
    return np.bincount(A.coordinates()[0][0], minlength=A.shape[0])


def _from_dask(x: da.Array, nparts, chunks, fmt) -> PartitionedTensor:
    if nparts is not None:
        parts = tuple(nparts) if isinstance(nparts, (tuple, list)) else (nparts,)
        x = x.rechunk(tuple(blocks.sizes(blocks.even_splits(x.shape[d], parts[d])) if d < len(parts) else -1
                            for d in range(x.ndim)))
    elif chunks is not None:
        x = x.rechunk(chunks if isinstance(chunks, tuple) and chunks and isinstance(chunks[0], (tuple, list))
                      else (chunks,) + (-1,) * (x.ndim - 1))
    fmt = sd.as_format(fmt or ("csr" if x.ndim == 2 else "sparse"), x.ndim)
    cells = np.empty(x.numblocks, dtype=object)
    for idx, d in np.ndenumerate(x.to_delayed()):
        cells[idx] = dask.delayed(sd.asformat, pure=True)(d, fmt)
    splits = tuple(tuple(np.concatenate([[0], np.cumsum(c)]).astype(int)) for c in x.chunks)
    dtype = np.asarray(sd.asformat(np.zeros((1,) * x.ndim, x.dtype), fmt).values).dtype
    return PartitionedTensor(cells, splits, fmt, dtype)

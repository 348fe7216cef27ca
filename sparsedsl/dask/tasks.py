"""A compiled kernel over partitioned operands: one Dask task per block, the kernel as its work.

An index is *cut* when it runs along a partitioned dimension of an operand (``A[i,j]`` with A in
row blocks cuts ``i``). There is one task per combination of blocks of the cut indices; each calls
the kernel on its blocks, on the matching slices of the dense operands that a cut index runs
along, and on the whole of every other operand (one copy per worker, not per task). A cut index
the result keeps gives result blocks (row blocks of ``y[i]``); one it sums away gives partial
results that are added (or max/min-ed) together (``s[j] = A[i,j]``, or the k of a 2-D block SpGEMM).

The kernel travels as its program (``Kernel.__reduce__``), once per worker as a shared dependency
of the tasks, and is planned there at its first call from the disk cache: never machine code.
"""

from __future__ import annotations

import functools
import itertools
import operator
import os
import pickle
import time
from collections import Counter

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp

import sparsedsl as sd

from . import blocks, indices
from .partitioned import PartitionedTensor, active_client

SCATTER_BYTES = 1 << 20  # operands from this size on are scattered to the workers, not put in the graph
COMBINE_FAN_IN = 8  # partial results added per task (a tree of them past this)
_COMBINE = {"sum": np.add, "max": np.maximum, "min": np.minimum}


def call(kernel: sd.Kernel, /, **operands):
    """Run ``kernel`` on operands of which some are partitioned; lazily.

    Returns a dask array for a dense result (row blocks where the result keeps the cut index) or a
    :class:`PartitionedTensor` for a sparse one; ``.compute()`` gives the numpy array or
    SparseTensor that ``kernel(**operands)`` gives on one machine.
    """
    if not isinstance(kernel, sd.Kernel):
        raise TypeError(f"call() takes a compiled kernel (sd.compile(...) or @sd.sparse_kernel) first; got "
                        f"{type(kernel).__name__}. For an expression use sparsedsl.dask.compute(expr, ...)")
    params = [p.name for p in kernel.program.params]
    missing, extra = set(params) - operands.keys(), operands.keys() - set(params)
    if missing or extra:
        raise TypeError(f"{kernel.name}() takes the operands {', '.join(params)}; "
                        + (f"missing {', '.join(sorted(missing))}" if missing else f"got {', '.join(sorted(extra))}"))
    operands = {n: _local(v) for n, v in operands.items()}
    ix = indices.read(kernel)
    dims = {n: _dim_indices(n, ix.accesses.get(n, [])) for n in operands}
    cuts = _cut_indices(operands, dims)
    if not cuts:
        raise ValueError(f"{kernel.name}(): no operand is partitioned; call the kernel itself, or partition an "
                         f"operand with sparsedsl.dask.partition(A, nparts)")
    _check_temporaries(kernel, ix, cuts)
    reduced = {v: indices.reduction_over(ix.final_value, v) for v in cuts if v not in ix.output_indices}
    for v, op in reduced.items():
        if op is None:
            raise ValueError(f"{kernel.name}(): the result {ix.output}[{','.join(ix.output_indices)}] drops the "
                             f"partitioned index {v!r}, but the reduction over {v!r} does not cover the whole "
                             f"right-hand side, so per-block results cannot be combined. Compute the reduction in a "
                             f"kernel of its own, or partition along another index")
    meta = kernel(**{n: _stand_in(v, dims[n], cuts) for n, v in operands.items()})
    if isinstance(meta, sd.SparseTensor) and any(op != "sum" for op in reduced.values()):
        raise ValueError(f"{kernel.name}(): a sparse result can combine partial results only by sum; "
                         f"give the kernel a dense output (out_format='dense')")
    per_block = {n: _operand_blocks(v, dims[n], cuts) for n, v in operands.items()}
    shared = dask.delayed(_Shipped(kernel), pure=True)
    names = list(operands)
    kept = [v for v in cuts if v in ix.output_indices]
    partials: dict[tuple, list] = {}
    for combo in itertools.product(*(range(len(cuts[v]) - 1) for v in cuts)):
        at = dict(zip(cuts, combo))
        args = [per_block[n](at) for n in names]
        task = dask.delayed(_run_block, pure=True)(shared, names, *args)
        partials.setdefault(tuple(at[v] for v in kept), []).append(task)
    op = next(iter(reduced.values()), "sum")
    combined = {k: _tree(op, meta, parts) for k, parts in partials.items()}
    return _assemble(combined, meta, ix.output_indices, kept, cuts)


@functools.lru_cache(maxsize=256)
def _compiled(expr: str, out_format, name: str) -> sd.Kernel:
    return sd.compile(expr, out_format=out_format, name=name)


def compute(expr: str, /, *, out_format=None, name: str = "kernel", **operands):
    """``sd.compute(expr, ...)`` with partitioned operands: ``compute("y[i] = A[i,j]*x[j]", A=PA, x=x)``.
    ``name`` names the kernel (in task keys and ``worker_stats``)."""
    return call(_compiled(expr, out_format, name), **operands)


# ---- operands ------------------------------------------------------------------------------------

def _local(v):
    if isinstance(v, (PartitionedTensor, da.Array, sd.SparseTensor, np.ndarray)):
        return v
    if sp.issparse(v):
        return sd.asformat(v, "csr" if v.ndim == 2 else "sparse")
    if isinstance(v, (bool, int, float, np.number, np.bool_)):
        return v
    if isinstance(v, (list, tuple)):
        return np.asarray(v)
    raise TypeError(f"operands of a partitioned call are PartitionedTensors, dask or numpy arrays, SparseTensors, "
                    f"scipy.sparse matrices or scalars; got {type(v).__name__}")


def _dim_indices(name, accesses) -> tuple:
    """The index variable along each dimension of operand ``name`` (a set where accesses differ)."""
    if not accesses:
        return ()
    nd = len(accesses[0])
    return tuple(frozenset(a[d] for a in accesses) for d in range(nd))


def _cut_indices(operands, dims) -> dict[str, tuple[int, ...]]:
    """index -> block offsets, from the partitioned operands; every operand cut along an index must be
    cut the same way."""
    cuts: dict[str, tuple[int, ...]] = {}
    owner: dict[str, str] = {}
    for n, v in operands.items():
        if not isinstance(v, PartitionedTensor):
            continue
        for d, vs in enumerate(dims[n]):
            if v.grid[d] == 1:
                continue
            if len(vs) != 1:
                raise ValueError(f"{n} is partitioned along dimension {d}, which the kernel indexes by several "
                                 f"indices ({', '.join(sorted(vs))}); pass the tensor once per use, partitioned "
                                 f"to match each")
            (var,) = vs
            if var in cuts and cuts[var] != v.splits[d]:
                raise ValueError(f"{n} and {owner[var]} are cut differently along index {var!r}: "
                                 f"{v.chunks[d]} and {blocks.sizes(cuts[var])}; partition {n} like {owner[var]} "
                                 f"(partition(..., chunks=...) with the same block sizes)")
            cuts[var], owner[var] = v.splits[d], n
    for n, v in operands.items():
        if isinstance(v, PartitionedTensor):
            for d, vs in enumerate(dims[n]):
                if v.grid[d] == 1 and vs & cuts.keys():
                    (var,) = vs & cuts.keys()
                    raise ValueError(f"{n} is whole along dimension {d}, but index {var!r} is partitioned by "
                                     f"{owner[var]}: partition {n} along dimension {d} like {owner[var]}, or pass "
                                     f"{n} unpartitioned")
        elif isinstance(v, (np.ndarray, da.Array, sd.SparseTensor)):
            for d, vs in enumerate(dims[n]):
                if vs & cuts.keys() and len(vs) > 1:
                    raise ValueError(f"operand {n} is indexed along dimension {d} both by the partitioned index "
                                     f"{sorted(vs & cuts.keys())[0]!r} and by others ({', '.join(sorted(vs))}); "
                                     f"pass it once per use under two names")
    return cuts


def _check_temporaries(kernel, ix, cuts):
    for target, used in ix.lets:
        lost = (used & cuts.keys()) - set(target)
        if lost:
            raise ValueError(f"{kernel.name}(): a temporary [{','.join(target)}] reduces the partitioned index "
                             f"{sorted(lost)[0]!r}, which needs every block at once; compute it in a kernel of its "
                             f"own first")


def _cut_dims(v, dims, cuts):
    """(dimension, index) pairs of operand ``v`` cut into blocks."""
    if np.ndim(v) == 0 and not isinstance(v, sd.SparseTensor):
        return []
    return [(d, next(iter(vs))) for d, vs in enumerate(dims) if vs & cuts.keys()]


def _stand_in(v, dims, cuts):
    """What the kernel gets in place of ``v`` to say what it returns: cut dimensions of extent 0."""
    cut = dict(_cut_dims(v, dims, cuts))
    if not cut and not isinstance(v, (PartitionedTensor, da.Array)):
        return v
    shape = tuple(0 if d in cut else n for d, n in enumerate(v.shape))
    if isinstance(v, (PartitionedTensor, sd.SparseTensor)):
        return blocks.empty(v.format, shape, v.dtype)
    return np.zeros(shape, dtype=v.dtype)


def _operand_blocks(v, dims, cuts):
    """A function from block numbers of the cut indices to this operand's piece for that task."""
    cut = _cut_dims(v, dims, cuts)
    if isinstance(v, PartitionedTensor):
        where = dict(cut)
        return lambda at: v.blocks[tuple(at[where[d]] if d in where else 0 for d in range(v.ndim))]
    if not cut and not isinstance(v, da.Array):
        whole = v if np.ndim(v) == 0 and not isinstance(v, sd.SparseTensor) else _held(v, broadcast=True)
        return lambda at: whole
    splits = tuple(cuts[dict(cut)[d]] if d in dict(cut) else (0, n) for d, n in enumerate(v.shape))
    if isinstance(v, da.Array):
        grid = v.rechunk(tuple(blocks.sizes(s) for s in splits)).to_delayed()
    elif isinstance(v, sd.SparseTensor):
        grid = {k: _held(b) for k, b in blocks.cut(v, splits).items()}
    else:
        grid = {idx: _held(np.ascontiguousarray(v[tuple(slice(s[b], s[b + 1]) for s, b in zip(splits, idx))]))
                for idx in itertools.product(*(range(len(s) - 1) for s in splits))}
    where = dict(cut)
    return lambda at: grid[tuple(at[where[d]] if d in where else 0 for d in range(len(splits)))]


def _held(value, broadcast=False):
    """``value`` as a dependency of the tasks. A large one goes from this process to the workers
    directly (scattered; ``broadcast``: to every worker at once) instead of inside the graph, which
    travels through the scheduler (a 25 MiB SpMM operand in the graph: a warning and ~2x the time)."""
    client = active_client()
    if client is not None and getattr(value, "nbytes", 0) >= SCATTER_BYTES:
        return dask.delayed(client.scatter(value, broadcast=broadcast, hash=False))
    return dask.delayed(value, pure=True)


# ---- tasks, run on the workers ---------------------------------------------------------------------

class _Shipped:
    """A kernel with a token of its program: a worker keeps the first kernel of each token it
    receives, with its plans, so later calls (of this graph and of later ones) find them made."""

    def __init__(self, kernel: sd.Kernel):
        self.kernel = kernel
        self.token = dask.base.tokenize(pickle.dumps(kernel))


KEPT_KERNELS = 256
_kept: dict[str, sd.Kernel] = {}
_stats: Counter = Counter()
_seconds: dict[str, list[float]] = {}


def _kernel(shipped: _Shipped) -> sd.Kernel:
    kernel = _kept.get(shipped.token)
    if kernel is None:  # this process's first call of this kernel: it plans (disk cache) now
        if len(_kept) >= KEPT_KERNELS:
            del _kept[next(iter(_kept))]
        kernel = _kept[shipped.token] = shipped.kernel
        _stats[f"planned:{kernel.name}"] += 1
    return kernel


def _run_block(shipped, names, *values):
    kernel = _kernel(shipped)
    start = time.perf_counter()
    out = kernel(**dict(zip(names, values)))
    _seconds.setdefault(kernel.name, []).append(time.perf_counter() - start)
    _stats[f"calls:{kernel.name}"] += 1
    return out


def worker_stats() -> dict:
    """This process's record of partitioned kernel calls: ``planned:NAME`` (kernel objects planned,
    i.e. compiled or loaded from the disk cache), ``calls:NAME`` and the seconds of each call.
    ``client.run(sparsedsl.dask.worker_stats)`` collects it from every worker."""
    return {"pid": os.getpid(), "counts": dict(_stats), "seconds": {k: list(v) for k, v in _seconds.items()}}


def _combine(op, fmt, *parts):
    if isinstance(parts[0], sd.SparseTensor):
        out = functools.reduce(operator.add, parts)
        return out if out.format == fmt else sd.asformat(out, fmt)
    return functools.reduce(_COMBINE[op], parts)


def _tree(op, meta, parts):
    fmt = meta.format if isinstance(meta, sd.SparseTensor) else None
    while len(parts) > 1:
        parts = [dask.delayed(_combine, pure=True)(op, fmt, *parts[k:k + COMBINE_FAN_IN])
                 for k in range(0, len(parts), COMBINE_FAN_IN)]
    return parts[0]


def _assemble(combined, meta, out_indices, kept, cuts):
    """The result: a dask array (dense) or a PartitionedTensor (sparse), blocks along kept cut indices."""
    where = {d: v for d, v in enumerate(out_indices) if v in kept}
    splits = tuple(cuts[where[d]] if d in where else (0, n) for d, n in enumerate(meta.shape))
    grid = tuple(len(s) - 1 for s in splits)

    dim_of = {v: d for d, v in where.items()}

    def block_of(idx):
        return combined[tuple(idx[dim_of[v]] for v in kept)]

    if isinstance(meta, sd.SparseTensor):
        cells = np.empty(grid, dtype=object)
        for idx in itertools.product(*(range(g) for g in grid)):
            cells[idx] = block_of(idx)
        return PartitionedTensor(cells, splits, meta.format, meta.dtype)
    meta = np.asarray(meta)
    if not grid:
        return da.from_delayed(combined[()], shape=(), dtype=meta.dtype)
    arrays = np.empty(grid, dtype=object)
    for idx in itertools.product(*(range(g) for g in grid)):
        arrays[idx] = da.from_delayed(block_of(idx), shape=blocks.block_shape(splits, idx), dtype=meta.dtype,
                                      meta=np.empty((0,) * len(grid), meta.dtype))
    return da.block(arrays.tolist())

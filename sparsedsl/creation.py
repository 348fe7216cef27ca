"""Constructors, as scipy.sparse has them: ``random``, ``eye``, ``zeros``.

Each builds the coordinates of its entries and packs them into the requested format (the same
``from_coordinates`` every conversion uses); none allocates the dense tensor, so
``zeros((10**6, 10**6))`` costs one row-pointer array in csr.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

from .errors import FormatError
from .lang.formats import as_format
from .tensor import DTYPES, SparseTensor, from_coordinates


def random(shape, density=0.01, *, format="csr", dtype=np.float64, seed=None) -> SparseTensor:  # noqa: A002
    """A tensor with ``round(density * size)`` entries at distinct, uniformly random positions.

    As ``scipy.sparse.random``: float values are uniform in [0, 1); integer values are uniform over
    the dtype's range; bool values are True. No dense intermediate: the positions are drawn as flat
    indices (or, above density 1/2, the absent ones are), so memory is O(nnz).

    Parameters
    ----------
    shape : int or tuple of ints
    density : float in [0, 1]
    format : str or Format, default "csr"
    dtype : float32, float64, int32, int64 or bool
    seed : None, int or numpy.random.Generator (passed to ``numpy.random.default_rng``)

    >>> A = random((4, 5), 0.25, seed=0)
    >>> A.nnz, A.format.name
    (5, 'csr')
    """
    shape = _shape(shape, "random")
    dtype = _dtype(dtype, "random")
    if not (isinstance(density, Real) and not isinstance(density, bool) and 0 <= density <= 1):
        raise FormatError(f"the 'density' parameter of random() must be a number in [0, 1], got {density!r}")
    fmt = as_format(format, len(shape))
    rng = np.random.default_rng(seed)
    size = math.prod(shape)
    k = int(round(density * size))
    flat = _distinct(rng, size, k) if 2 * k <= size else np.setdiff1d(np.arange(size), _distinct(rng, size, size - k))
    flat = np.sort(flat)
    if dtype.kind == "f":
        values = rng.random(k, dtype=dtype)
    elif dtype.kind == "i":
        info = np.iinfo(dtype)
        values = rng.integers(info.min, info.max, size=k, dtype=dtype, endpoint=True)
    else:
        values = np.ones(k, dtype=dtype)
    coords = np.array(np.unravel_index(flat, shape), dtype=np.int64).reshape(len(shape), k)
    return from_coordinates(coords, values, shape, fmt)


def _distinct(rng, size: int, k: int) -> np.ndarray:
    """``k`` distinct integers from [0, size), uniformly: draw with replacement, keep the new ones, repeat.
    With k <= size / 2 each round keeps at least half its draws, so a few rounds suffice."""
    got = np.zeros(0, dtype=np.int64)
    while len(got) < k:
        need = k - len(got)
        got = np.union1d(got, rng.integers(0, size, size=need + need // 8 + 16, dtype=np.int64))
    if len(got) > k:
        got = rng.choice(got, k, replace=False)
    return got


def eye(n, m=None, k=0, *, format="csr", dtype=np.float64) -> SparseTensor:  # noqa: A002
    """An ``n`` x ``m`` tensor with ones on diagonal ``k`` (0: the main one, > 0 above it), as
    ``scipy.sparse.eye``.

    >>> eye(3, k=1).todense().tolist()
    [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    m = n if m is None else m
    n, m = _shape((n, m), "eye")
    if not isinstance(k, Integral) or isinstance(k, bool):
        raise FormatError(f"the 'k' parameter of eye() must be an int (the diagonal), got {k!r}")
    dtype = _dtype(dtype, "eye")
    rows = np.arange(max(0, -int(k)), max(0, min(n, m - int(k))), dtype=np.int64)
    coords = np.stack([rows, rows + int(k)])
    return from_coordinates(coords, np.ones(len(rows), dtype=dtype), (n, m), as_format(format, 2))


def zeros(shape, *, format="csr", dtype=np.float64) -> SparseTensor:  # noqa: A002
    """A tensor with no stored entries (all zeros) in ``format``.

    >>> zeros((100000, 100000)).nnz
    0
    """
    shape = _shape(shape, "zeros")
    fmt = as_format(format, len(shape))
    return from_coordinates(np.zeros((len(shape), 0), dtype=np.int64), np.zeros(0, dtype=_dtype(dtype, "zeros")),
                            shape, fmt)


def _shape(shape, who) -> tuple[int, ...]:
    items = (shape,) if isinstance(shape, Integral) else shape
    try:
        items = tuple(items)
    except TypeError:
        items = None
    if not items or not all(isinstance(s, Integral) and not isinstance(s, bool) and s >= 0 for s in items):
        raise FormatError(f"the 'shape' parameter of {who}() must be a non-negative int or a tuple of them, "
                          f"got {shape!r}")
    return tuple(int(s) for s in items)


def _dtype(dtype, who) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.type not in DTYPES:
        raise FormatError(f"the 'dtype' parameter of {who}() must be one of "
                          f"{', '.join(np.dtype(t).name for t in DTYPES)}, got {dtype!r}")
    return dt

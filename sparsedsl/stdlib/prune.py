"""Pruning constructors: keep a chosen support of a dense tensor and store it as a SparseTensor.

Every function takes a numpy array, a scipy.sparse matrix or a SparseTensor (read as its dense
values, absent entries being 0) and returns a SparseTensor in ``format=`` (default ``csr`` for
2-D, ``sparse`` for 1-D, ``coo`` above). The result stores exactly the kept positions, explicit
zeros included, so its ``nnz`` is the kept count. Ties in magnitude go to the lowest index
(row-major), so the result is deterministic.

Counts: ``k`` is taken as given; ``density`` keeps ``round(density * size)`` entries and
``sparsity`` keeps ``round((1 - sparsity) * size)``, where ``size`` is the length of one slice
(``per=``), one group or the whole tensor, and ``round`` is Python's (ties to even: 2.5 -> 2).
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp

from ..errors import FormatError
from ..lang.formats import as_format
from ..tensor import SparseTensor, from_coordinates

__all__ = ["block", "magnitude", "nm", "random"]


def magnitude(x, *, sparsity=None, density=None, k=None, per="global", format=None) -> SparseTensor:
    """Magnitude pruning: keep the entries of largest ``|x|``, over the whole tensor or per slice.

    Parameters
    ----------
    x : array_like, scipy.sparse matrix or SparseTensor
    sparsity, density, k : exactly one; the fraction dropped, the fraction kept, or the kept count.
    per : "global", "row" (each slice along the last axis: a matrix row, a token's vector as in
        Mustafar's per-token KV-cache pruning), "column" (each slice along axis -2) or an int
        axis (each 1-D slice along that axis keeps the count).
    format : output format.

    References
    ----------
    Han, Pool, Tran, Dally, "Learning both Weights and Connections for Efficient Neural Network", 2015.

    >>> magnitude(np.array([[1., -3., 2.], [0., 5., 4.]]), k=1, per="row").to_numpy()
    array([[ 0., -3.,  0.],
           [ 0.,  5.,  0.]])
    """
    arr = _dense(x, "magnitude")
    mag = _magnitudes(arr)
    if isinstance(per, str) and per == "global":
        keep = _count(mag.size, sparsity, density, k)
        mask = _top_k_mask(mag.reshape(1, -1), keep).reshape(arr.shape)
    else:
        axis = _per_axis(per, arr.ndim)
        moved = np.moveaxis(mag, axis, -1)
        keep = _count(moved.shape[-1], sparsity, density, k)
        mask = np.moveaxis(_top_k_mask(moved.reshape(-1, moved.shape[-1]), keep).reshape(moved.shape), -1, axis)
    return _pack_mask(arr, mask, format, _default_format(arr.ndim))


def nm(x, n: int, m: int, *, axis: int = -1, format=None) -> SparseTensor:
    """N:M projection: in every group of ``m`` consecutive entries along ``axis`` keep the ``n``
    largest ``|x|`` (2:4 for sparse tensor cores). Default format ``nm(n,m)`` grouped along ``axis``.

    References
    ----------
    Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From Scratch", 2021;
    Mishra et al., "Accelerating Sparse Deep Neural Networks" (NVIDIA ASP), 2021.

    >>> nm(np.array([[1., -3., 2., 0.5]]), 2, 4).to_numpy()
    array([[ 0., -3.,  2.,  0.]])
    """
    arr = _dense(x, "nm")
    if not (_is_int(n) and _is_int(m) and 1 <= n <= m):
        raise FormatError(f"nm() keeps n of every m entries and needs integers 1 <= n <= m; got n={n!r}, m={m!r}")
    ax = _axis(axis, arr.ndim, "axis")
    length = arr.shape[ax]
    if length % m:
        raise FormatError(f"nm({n},{m}) needs the length along axis {ax} ({length}) to be a multiple of {m}; "
                          f"pad x with zeros to {-(-length // m) * m} along that axis (np.pad) first")
    moved = np.moveaxis(_magnitudes(arr), ax, -1)
    mask = _top_k_mask(moved.reshape(-1, m), n).reshape(moved.shape)
    return _pack_mask(arr, np.moveaxis(mask, -1, ax), format, f"nm({n},{m},axis={ax})")


_NORMS = {"fro": lambda t: np.sqrt(np.sum(np.square(t, dtype=np.float64), axis=1)),
          "l1": lambda t: np.sum(t, axis=1, dtype=np.float64),
          "max": lambda t: np.max(t, axis=1)}


def block(x, block_shape, *, sparsity=None, density=None, k=None, norm="fro", format=None) -> SparseTensor:
    """Block pruning: keep the ``block_shape`` tiles of a matrix with the largest norm (whole tiles,
    explicit zeros included). Default format ``bsr(r,c)``.

    ``norm``: "fro" (Frobenius), "l1" (sum of ``|x|``) or "max" (largest ``|x|``). The count applies
    to the number of tiles.

    References
    ----------
    Narang, Undersander, Diamos, "Block-Sparse Recurrent Neural Networks", 2017.

    >>> block(np.arange(16.).reshape(4, 4), (2, 2), k=1).to_numpy()[2:, 2:]
    array([[10., 11.],
           [14., 15.]])
    """
    arr = _dense(x, "block")
    if arr.ndim != 2:
        raise FormatError(f"block() prunes a matrix; x is {arr.ndim}-D with shape {arr.shape}. "
                          f"Reshape it to 2-D first")
    shape = tuple(block_shape) if isinstance(block_shape, (tuple, list)) else ()
    if len(shape) != 2 or not all(_is_int(b) and b >= 1 for b in shape) or arr.shape[0] % shape[0] \
            or arr.shape[1] % shape[1]:
        raise FormatError(f"the 'block_shape' parameter of block() must be two positive ints dividing the "
                          f"shape {arr.shape}; got {block_shape!r}. Pad x or pick another block")
    if norm not in _NORMS:
        raise FormatError(f"the 'norm' parameter of block() must be one of {', '.join(_NORMS)}; got {norm!r}")
    (r, c), rows, cols = shape, arr.shape[0] // shape[0], arr.shape[1] // shape[1]
    tiles = _magnitudes(arr).reshape(rows, r, cols, c).swapaxes(1, 2).reshape(rows * cols, r * c)
    keep = _count(rows * cols, sparsity, density, k)
    chosen = _top_k_mask(_NORMS[norm](tiles).reshape(1, -1), keep).reshape(rows, cols)
    mask = np.repeat(np.repeat(chosen, r, axis=0), c, axis=1)
    return _pack_mask(arr, mask, format, f"bsr({r},{c})")


def random(shape_or_x, *, density, seed=None, format=None, dtype=None) -> SparseTensor:
    """A fixed, uniformly random support of exactly ``round(density * size)`` entries.

    Given an array, its values are kept on that support (random pruning); given a shape (an int or
    a tuple), values are drawn from N(0, 1). ``seed``: None, an int or a ``numpy.random.Generator``
    (passed to ``np.random.default_rng``); the same seed gives the same support.

    References
    ----------
    Han et al., "SLTrain: a sparse plus low-rank approach for parameter and memory efficient
    pretraining", 2024 (the fixed random support of the sparse part).

    >>> random((4, 5), density=0.25, seed=0).nnz
    5
    """
    rng = np.random.default_rng(seed)
    if _is_int(shape_or_x) or isinstance(shape_or_x, tuple):
        shape = (shape_or_x,) if _is_int(shape_or_x) else shape_or_x
        if not shape or not all(_is_int(s) and s >= 0 for s in shape):
            raise FormatError(f"random() needs a shape of non-negative ints (at least one), got {shape_or_x!r}")
        shape, arr = tuple(int(s) for s in shape), None
    else:
        arr = _dense(shape_or_x, "random")
        shape = arr.shape
    size = int(np.prod(shape))
    flat = np.sort(rng.choice(size, _count(size, None, density, None), replace=False))
    values = rng.standard_normal(len(flat)) if arr is None else arr.reshape(-1)[flat]
    if dtype is not None or arr is None:
        values = values.astype(np.float64 if dtype is None else dtype)
    coords = np.array(np.unravel_index(flat, shape), dtype=np.int64).reshape(len(shape), -1)
    return _pack(coords, values, shape, format, _default_format(len(shape)))


# ---- shared pieces ------------------------------------------------------------------------------


def _top_k_mask(mag: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``mag`` (2-D), the ``k`` largest entries; ties go to the lowest column."""
    length = mag.shape[1]
    if k <= 0 or length == 0:
        return np.zeros(mag.shape, dtype=bool)
    if k >= length:
        return np.ones(mag.shape, dtype=bool)
    # O(length) per row: the k-th largest value splits the row; among entries equal to it, the
    # first (k - #greater) are kept, which is what a stable descending sort would keep.
    kth = np.partition(mag, length - k, axis=1)[:, length - k, None]
    above, tied = mag > kth, mag == kth
    room = k - above.sum(axis=1, keepdims=True)
    return above | (tied & (np.cumsum(tied, axis=1) <= room))


def _count(size, sparsity, density, k) -> int:
    given = {name: v for name, v in (("sparsity", sparsity), ("density", density), ("k", k)) if v is not None}
    if len(given) != 1:
        raise FormatError(f"give exactly one of sparsity=, density= or k=; got {', '.join(given) or 'none'}")
    (name, value), = given.items()
    if name == "k":
        if not (_is_int(value) and 0 <= value <= size):
            raise FormatError(f"k must be an int in [0, {size}] (the entries it is chosen from), got {value!r}")
        return int(value)
    if not (isinstance(value, Real) and not isinstance(value, bool) and 0 <= value <= 1):
        raise FormatError(f"{name} must be a number in [0, 1], got {value!r}")
    return int(round((value if name == "density" else 1 - value) * size))


def _dense(x, who) -> np.ndarray:
    if isinstance(x, SparseTensor):
        arr = x.to_numpy()
    elif sp.issparse(x):
        arr = x.toarray()
    else:
        arr = np.asarray(x)
    if arr.ndim == 0 or arr.dtype.kind not in "biuf":
        raise FormatError(f"{who}() needs a real array of at least 1 dimension; got {arr.ndim}-D {arr.dtype}")
    return arr


def _magnitudes(arr):
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise FormatError("x contains NaN, which has no magnitude order; replace it first (np.nan_to_num)")
    return np.abs(arr)


def _per_axis(per, ndim) -> int:
    if isinstance(per, str) and per in ("row", "column") and ndim >= (1 if per == "row" else 2):
        return ndim - 1 if per == "row" else ndim - 2
    if _is_int(per):
        return _axis(per, ndim, "per")
    raise FormatError(f"the 'per' parameter must be 'global', 'row', 'column' (x at least 2-D) or an axis "
                      f"int; got {per!r} for a {ndim}-D x")


def _axis(axis, ndim, name) -> int:
    if not (_is_int(axis) and -ndim <= axis < ndim):
        raise FormatError(f"the '{name}' parameter must be an axis int in [{-ndim}, {ndim}) for a {ndim}-D x; "
                          f"got {axis!r}")
    return int(axis) % ndim


def _is_int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _default_format(ndim) -> str:
    return "csr" if ndim <= 2 else "coo"  # as_format("csr", 1) is the 1-D "sparse" format


def _pack_mask(arr, mask, format, default) -> SparseTensor:
    coords = np.array(np.nonzero(mask), dtype=np.int64).reshape(arr.ndim, -1)
    return _pack(coords, arr[mask], arr.shape, format, default)


def _pack(coords, values, shape, format, default) -> SparseTensor:
    fmt = as_format(default if format is None else format, len(shape))
    # coords come row-major and unique: already in level order when the levels store dims 0, 1, ... plainly
    in_order = [(lv.dim, lv.op) for lv in fmt.levels] == [(d, None) for d in range(len(shape))]
    return from_coordinates(coords, values, shape, fmt, presorted=in_order)

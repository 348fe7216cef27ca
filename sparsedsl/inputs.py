"""Checks of what users hand to ``asformat`` and ``from_coordinates``, before numpy or scipy reads it.

scipy's C++ routines (``tocoo``, ``has_canonical_format``, ``toarray``) trust a matrix's arrays:
on an ``indptr`` that decreases they read and write out of bounds ("free(): invalid next size"
ended the process). scipy checks a matrix only partly when it is built, and its arrays can be
replaced afterwards, so every scipy matrix is checked here, in numpy, before any scipy method runs.
Each error names the array, the first bad position and what was expected.
"""

from __future__ import annotations

import numpy as np

from .errors import FormatError

_REBUILD = "; the matrix's arrays are inconsistent: rebuild it from valid arrays"
_ACCEPTED = "a numpy array, a scipy.sparse matrix, a SparseTensor or a (nested) list of numbers"


def check_scipy(m) -> None:
    """Raise FormatError when the arrays of scipy.sparse matrix ``m`` do not describe a matrix."""
    what = f"scipy {m.format} matrix of shape {m.shape}"
    if m.format in ("csr", "csc", "bsr"):
        _check_compressed(m, what)
    elif m.format == "coo":
        coords = getattr(m, "coords", None) or (m.row, m.col)
        data = _array(m.data, "data", what, integer=False)
        for d, c in enumerate(coords):
            name = ("row", "col")[d] if len(coords) == 2 else f"coords[{d}]"
            c = _array(c, name, what)
            if len(c) != len(data):
                raise FormatError(f"{what}: {name} has {len(c)} entries but data has {len(data)}{_REBUILD}")
            _in_range(c, m.shape[d], name, what)


def _check_compressed(m, what):
    r, c = m.blocksize if m.format == "bsr" else (1, 1)
    shape = m.shape if len(m.shape) == 2 else (1, *m.shape)  # a 1-D csr_array is one row
    rows, cols = (shape[0] // r, shape[1] // c) if m.format != "csc" else (shape[1], shape[0])
    outer, inner = ("row", "column") if m.format != "csc" else ("column", "row")
    indptr = _array(m.indptr, "indptr", what)
    indices = _array(m.indices, "indices", what)
    if len(indptr) != rows + 1:
        raise FormatError(f"{what}: indptr must have length {rows + 1} (one more than the {rows} "
                          f"{'block ' if r * c > 1 else ''}{outer}s), got {len(indptr)}{_REBUILD}")
    if indptr[0] != 0:
        raise FormatError(f"{what}: indptr[0] must be 0, got {indptr[0]}{_REBUILD}")
    bad = np.flatnonzero(indptr[1:] < indptr[:-1])
    if len(bad):
        k = int(bad[0])
        raise FormatError(f"{what}: indptr must not decrease; indptr[{k + 1}] = {indptr[k + 1]} < "
                          f"indptr[{k}] = {indptr[k]} ({outer} {k} would end before it starts){_REBUILD}")
    if indptr[-1] != len(indices):
        raise FormatError(f"{what}: indptr[-1] = {indptr[-1]} must equal the length of indices, "
                          f"{len(indices)}{_REBUILD}")
    data = m.data
    if not isinstance(data, np.ndarray):
        raise FormatError(f"{what}: data must be a numpy array, got {type(data).__name__}{_REBUILD}")
    want = (len(indices),) if m.format != "bsr" else (len(indices), r, c)
    if data.shape != want:
        raise FormatError(f"{what}: data must have shape {want} (one {'block' if r * c > 1 else 'value'} per "
                          f"index), got {data.shape}{_REBUILD}")
    _in_range(indices, cols, "indices", what, f" (a {'block ' if r * c > 1 else ''}{inner} index)")


def _array(a, name, what, integer=True) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.ndim != 1:
        got = f"a {a.ndim}-D array" if isinstance(a, np.ndarray) else type(a).__name__
        raise FormatError(f"{what}: {name} must be a 1-D numpy array, got {got}{_REBUILD}")
    if integer and a.dtype.kind not in "iu":
        raise FormatError(f"{what}: {name} must hold integers, got dtype {a.dtype}{_REBUILD}")
    return a


def _in_range(idx, n, name, what, unit=""):
    bad = np.flatnonzero((idx < 0) | (idx >= n)) if len(idx) else ()
    if len(bad):
        k = int(bad[0])
        raise FormatError(f"{what}: {name}[{k}] = {idx[k]} is outside [0, {n}){unit}{_REBUILD}")


def as_shape(shape) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints."""
    try:
        dims = tuple(int(s) for s in shape)
        exact = all(d == s and d >= 0 for d, s in zip(dims, shape))
    except (TypeError, ValueError):
        exact = False
    if not exact:
        raise FormatError(f"shape must be a tuple of non-negative integers, got {shape!r}")
    return dims


def coordinates(coords, values, shape) -> tuple[np.ndarray, np.ndarray]:
    """``from_coordinates``' arguments as an int64 (ndim, n) array and a 1-D array of n values."""
    ndim = len(shape)
    c = _rectangular(coords, "coordinates")
    v = _rectangular(values, "values")
    if c.size == 0:  # no entries, or the one entry of a 0-d tensor
        c = c.reshape(ndim, 0 if ndim else v.size)
    elif c.ndim == 1 and ndim == 1:
        c = c.reshape(1, -1)
    if c.ndim != 2 or c.shape[0] != ndim:
        raise FormatError(f"coordinates must be an array of shape (ndim, n) = ({ndim}, n), one row per "
                          f"dimension of the shape {shape}; got shape {c.shape}")
    if c.dtype.kind == "f":
        frac = np.flatnonzero(~np.isfinite(c).ravel() | (c.ravel() != np.round(c.ravel())))
        if len(frac):
            d, q = divmod(int(frac[0]), c.shape[1])
            raise FormatError(f"coordinates must be integers; coordinate {q} of dimension {d} is {c[d, q]}")
    elif c.dtype.kind not in "iu":
        raise FormatError(f"coordinates must be integers, got an array of dtype {c.dtype}")
    if v.ndim != 1 or len(v) != c.shape[1]:
        raise FormatError(f"values must be a 1-D array with one value per coordinate column ({c.shape[1]}), "
                          f"got shape {v.shape}")
    return c.astype(np.int64, copy=False), v


def _rectangular(x, name) -> np.ndarray:
    if x is None:
        raise FormatError(f"{name} must be an array, got None")
    try:
        a = np.asarray(x)
    except ValueError:  # numpy refuses ragged nested lists
        raise FormatError(f"{name} must be a rectangular array; got ragged nested lists (rows of different "
                          f"lengths)") from None
    if a.dtype == object:
        raise FormatError(f"{name} must be an array of numbers, got {_describe(x)}")
    return a


def as_array(obj) -> np.ndarray:
    """``obj`` (anything but scipy.sparse, torch and SparseTensor) as a numpy array of numbers."""
    if obj is None or isinstance(obj, (str, bytes)):
        raise FormatError(f"asformat() takes {_ACCEPTED}; got {_describe(obj)}")
    try:
        arr = np.asarray(obj)
    except ValueError:
        raise FormatError(f"asformat() takes {_ACCEPTED}; got ragged nested lists (rows of different "
                          f"lengths): pad them to one length or build the tensor with from_coordinates()") from None
    if arr.dtype == object or arr.dtype.kind in "USV":
        raise FormatError(f"asformat() takes {_ACCEPTED}; got {_describe(obj)}")
    return arr


def _describe(obj) -> str:
    if obj is None:
        return "None"
    if isinstance(obj, np.ndarray):
        return f"a numpy array of dtype {obj.dtype}"
    if isinstance(obj, (str, bytes)):
        return f"a {type(obj).__name__} ({obj[:20]!r})"
    return f"an object of type {type(obj).__name__}"

"""SparseTensor: a format, a shape, one dict of arrays per level, and the values.

Every tensor is validated once, when it is built (DESIGN.md's safety contract), so generated
kernels need no bounds checks. Conversions between formats go through sorted coordinates
(unpack, sort by the target's level order, pack), never through a dense copy unless the target
is dense.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from . import inputs
from .errors import FormatError
from .lang.formats import Format, as_format
from .lang.levels.base import array_module

DTYPES = (np.float32, np.float64, np.int32, np.int64, np.bool_)
# np.asarray(A) densifies a sparse tensor of at most this many entries (16 Mi: 128 MiB of float64);
# a larger one raises and asks for an explicit A.todense() (pydata/sparse refuses them all)
AUTO_DENSIFY_LIMIT = 2**24
REPR_ENTRIES = 10  # the repr lists the entries of a tensor with at most this many (or of <= 100 positions)


class SparseTensor:
    """A tensor stored in a format; build one with :func:`sparsedsl.asformat`."""

    __array_priority__ = 10
    __array_ufunc__ = None  # numpy defers: ``x @ A``, ``x + A`` call the operators below, never densify A

    def __init__(self, fmt: Format, shape, levels, values: np.ndarray, *, check: bool = True):
        self.format = as_format(fmt, len(shape))
        self.shape = tuple(int(s) for s in shape)
        self.levels = tuple(dict(lv) for lv in levels)
        self.values = values
        if check:
            self._validate()

    # ---- validation ---------------------------------------------------------------------
    def _validate(self):
        fmt = self.format
        if any(s < 0 for s in self.shape):
            raise FormatError(f"shape must be non-negative, got {self.shape}")
        if len(self.levels) != len(fmt.levels):
            raise FormatError(f"format {fmt} has {len(fmt.levels)} levels, got arrays for {len(self.levels)}")
        for d, b in fmt.blocks.items():
            if self.shape[d] % b:
                raise FormatError(f"format {fmt}: block size {b} does not divide dimension {d} of shape "
                                  f"{self.shape}; pad the tensor to a multiple of {b}")
        if not isinstance(self.values, np.ndarray) or self.values.ndim != 1:
            raise FormatError("values must be a 1-D numpy array")
        if self.values.dtype.type not in DTYPES:
            raise FormatError(f"dtype {self.values.dtype} is not supported; use one of "
                              f"{', '.join(np.dtype(t).name for t in DTYPES)}")
        nparents = 1
        for k, (spec, arrays) in enumerate(zip(fmt.levels, self.levels)):
            where = f"level {k} ({spec.spelling(_names(fmt.ndim))})"
            extent = spec.extent(self.shape)
            spec.type.validate(arrays, nparents, extent, where)
            if spec.type.takes_segment and len(arrays["crd"]) > 1:
                self._check_singleton_order(k)
            nparents = spec.type.npositions(arrays, nparents, extent)
        if len(self.values) != nparents:
            raise FormatError(f"values must hold one entry per position of the last level ({nparents}), "
                              f"got {len(self.values)}")

    def _check_singleton_order(self, k):
        # entries below one segment of the levels above must be sorted by this level's coordinate
        above = np.stack([self.levels[i]["crd"].astype(np.int64) for i in range(k)], axis=0)
        same = np.all(above[:, 1:] == above[:, :-1], axis=0)
        crd = self.levels[k]["crd"].astype(np.int64)
        strict = self.format.levels[k].type.unique
        step = np.diff(crd)
        bad = np.flatnonzero(same & ((step <= 0) if strict else (step < 0)))
        if len(bad):
            q = int(bad[0]) + 1
            raise FormatError(f"level {k}: entries must be sorted without duplicates; entry {q} "
                              f"(crd {crd[q]}) follows crd {crd[q - 1]} under the same parent")

    # ---- properties ---------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    @property
    def nnz(self) -> int:
        """Stored entries (explicit zeros in dense blocks or N:M slots included)."""
        return len(self.values)

    @property
    def density(self) -> float:
        size = int(np.prod(self.shape))
        return self.coordinates()[1].size / size if size else 0.0

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + sum(spec.type.nbytes(a) for spec, a in zip(self.format.levels, self.levels))

    @property
    def size(self) -> int:
        """The number of elements, ``prod(shape)``, as numpy and pydata/sparse count them (scipy.sparse's
        ``.size`` counts stored entries instead: that is ``nnz`` here)."""
        return math.prod(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError(f"the truth value of a tensor of shape {self.shape} is ambiguous; use (A != 0).nnz")
        return bool(self.todense().reshape(-1)[0])

    def __repr__(self):
        """Shape, format, dtype, nnz, density (nnz / size) and bytes; the entries when there are few."""
        where = ", device='cuda'" if self.device == "cuda" else ""
        density = self.nnz / self.size if self.size else 0.0
        head = (f"SparseTensor(shape={self.shape}, format={self.format}, dtype={self.dtype}, nnz={self.nnz}, "
                f"density={density:.3g}, nbytes={_human_bytes(self.nbytes)}{where})")
        if self.nnz > REPR_ENTRIES and self.size > 100:
            return head
        coords, vals = self.coordinates()
        lines = [f"  {tuple(int(c) for c in coords[:, q])}  {vals[q]}" for q in range(min(len(vals), REPR_ENTRIES))]
        if len(vals) > REPR_ENTRIES:
            lines.append(f"  ... {len(vals) - REPR_ENTRIES} more")
        return "\n".join([head] + lines)

    def _repr_html_(self) -> str:
        """In a notebook: a small spy image and the format summary (sparsedsl/display.py)."""
        from . import display

        return display.tensor_html(self)

    # ---- devices --------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """"cpu" (numpy arrays) or "cuda" (cupy arrays, after ``.to("cuda")``)."""
        return "cuda" if hasattr(self.values, "__cuda_array_interface__") else "cpu"

    def to(self, device: str) -> SparseTensor:
        """The same tensor with its arrays on ``device`` ("cuda" or "cpu"); no validation again
        (it was validated when built), no copy when it is already there."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == self.device:
            return self
        if device == "cuda":
            from .backends.cuda.device import to_device as move
        else:
            def move(a):
                return a.get()
        levels = [{k: move(a) for k, a in lv.items()} for lv in self.levels]
        return SparseTensor(self.format, self.shape, levels, move(self.values), check=False)

    # ---- conversions --------------------------------------------------------------------
    def coordinates(self) -> tuple[np.ndarray, np.ndarray]:
        """(coords of shape (ndim, n), values) of the stored entries, in storage order."""
        if self.device != "cpu":
            return self.to("cpu").coordinates()
        if self.format.is_dense:
            arr = self.values.reshape(self.shape)
            idx = np.nonzero(arr)
            return np.array(idx, dtype=np.int64).reshape(self.ndim, -1), arr[idx]
        parents = np.zeros(1, dtype=np.int64)
        nparents = 1
        coords = np.zeros((self.ndim, 1), dtype=np.int64)
        for spec, arrays in zip(self.format.levels, self.levels):
            extent = spec.extent(self.shape)
            owner, c, child = spec.type.unpack(parents, arrays, nparents, extent)
            coords = coords[:, owner]
            if spec.op == "/":
                c = c * spec.block
            coords[spec.dim] += c
            nparents = spec.type.npositions(arrays, nparents, extent)
            parents = child
        return coords, self.values[parents]

    def to_numpy(self) -> np.ndarray:
        if self.device != "cpu":
            return self.to("cpu").to_numpy()
        if self.format.is_dense:
            return self.values.reshape(self.shape)
        out = np.zeros(self.shape, dtype=self.dtype)
        coords, vals = self.coordinates()
        if vals.size:
            np.add.at(out, tuple(coords), vals)
        return out

    def __array__(self, dtype=None, copy=None):
        """Implicit densification (``np.asarray(A)``), refused past ``AUTO_DENSIFY_LIMIT`` entries."""
        if not self.format.is_dense:
            if self.size > AUTO_DENSIFY_LIMIT:
                raise FormatError(f"np.asarray() would densify this {self.shape} sparse tensor into {self.size} "
                                  f"entries ({_human_bytes(self.size * self.dtype.itemsize)}); call .todense() "
                                  f"to do that on purpose, or keep it sparse (A @ x, A + B, A.sum(axis) run "
                                  f"without densifying). Only tensors of at most AUTO_DENSIFY_LIMIT = "
                                  f"{AUTO_DENSIFY_LIMIT} entries convert implicitly")
            if copy is False:
                raise ValueError("a sparse tensor cannot become a numpy array without a copy (copy=False)")
        arr = self.to_numpy()
        return arr if dtype is None else arr.astype(dtype)

    def todense(self) -> np.ndarray:
        """The dense numpy array, of any size (explicit, unlike ``np.asarray(A)``)."""
        arr = self.to_numpy()
        return arr.copy() if self.format.is_dense else arr

    toarray = todense

    def copy(self) -> SparseTensor:
        """A copy with arrays of its own."""
        levels = [{k: a.copy() for k, a in lv.items()} for lv in self.levels]
        return SparseTensor(self.format, self.shape, levels, self.values.copy(), check=False)

    def to_scipy(self) -> sp.csr_array:
        if self.ndim != 2:
            raise FormatError(f"to_scipy() needs a 2-D tensor, this one is {self.ndim}-D")
        if self.device != "cpu":
            return self.to("cpu").to_scipy()
        if self.format == as_format("csr"):
            pos, crd = self.levels[1]["pos"], self.levels[1]["crd"]
            return sp.csr_array((self.values, crd, pos), shape=self.shape)
        coords, vals = self.coordinates()
        return sp.coo_array((vals, (coords[0], coords[1])), shape=self.shape).tocsr()

    def astype(self, dtype) -> SparseTensor:
        """The values as ``dtype``; on the GPU also float16 and "bfloat16" (storage, float32 arithmetic)."""
        if self.device == "cuda":
            from .backends.cuda.device import astype

            return SparseTensor(self.format, self.shape, self.levels, astype(self.values, dtype), check=False)
        return SparseTensor(self.format, self.shape, self.levels, self.values.astype(dtype), check=False)

    def asformat(self, fmt) -> SparseTensor:
        return asformat(self, fmt)

    @property
    def T(self) -> SparseTensor:
        """The transpose (2-D), in the format with the level order of the dimensions swapped."""
        order = list(range(self.ndim))[::-1]
        coords, vals = self.coordinates()
        fmt = self.format.permuted(order) if not self.format.is_dense else self.format
        return from_coordinates(coords[order], vals, tuple(self.shape[d] for d in order), fmt)

    # ---- array operators: each a compiled kernel, cached (sparsedsl/array_ops.py) ---------------
    def __matmul__(self, other):
        return _ops().matmul(self, other)

    def __rmatmul__(self, other):
        return _ops().matmul(other, self)

    def __add__(self, other):
        return _ops().elementwise("+", self, other)

    def __radd__(self, other):
        return _ops().elementwise("+", other, self)

    def __sub__(self, other):
        return _ops().elementwise("-", self, other)

    def __rsub__(self, other):
        return _ops().elementwise("-", other, self)

    def __mul__(self, other):
        return _ops().elementwise("*", self, other)

    def __rmul__(self, other):
        return _ops().elementwise("*", other, self)

    def __truediv__(self, other):
        return _ops().elementwise("/", self, other)

    def __rtruediv__(self, other):
        return _ops().elementwise("/", other, self)

    def __neg__(self):
        return _ops().negative(self)

    def __abs__(self):
        return _ops().absolute(self)

    def __eq__(self, other):
        return _ops().compare("==", self, other)

    def __ne__(self, other):
        return _ops().compare("!=", self, other)

    def __lt__(self, other):
        return _ops().compare("<", self, other)

    def __le__(self, other):
        return _ops().compare("<=", self, other)

    def __gt__(self, other):
        return _ops().compare(">", self, other)

    def __ge__(self, other):
        return _ops().compare(">=", self, other)

    __hash__ = None  # == is elementwise, as for numpy and scipy arrays

    def sum(self, axis=None):
        """The sum over ``axis`` (None: all, a numpy scalar; an int or tuple: a dense numpy array)."""
        return _ops().reduce("sum", self, axis)

    def max(self, axis=None):
        """The maximum over ``axis``, absent entries counting as 0 (scipy's rule): a row that does not
        store every column has a maximum of at least 0. None: a numpy scalar; else a numpy array."""
        return _ops().reduce("max", self, axis)

    def min(self, axis=None):
        """The minimum over ``axis``, absent entries counting as 0 (scipy's rule), as ``max``."""
        return _ops().reduce("min", self, axis)


# The array operators (+, *, @, sum, max, transpose, ...) are compiled kernels, defined above this module
# in array_ops, which installs itself here when sparsedsl is imported: the data structure imports
# nothing from the compiler.
_operators = None


def install_operators(module) -> None:
    global _operators
    _operators = module


def _ops():
    return _operators


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _names(ndim):
    return ["i", "j", "k", "l", "m", "n", "o", "p"][:ndim]


def from_coordinates(coords: np.ndarray, values: np.ndarray, shape, fmt, *, presorted=False) -> SparseTensor:
    """Pack entries given by coordinates (ndim, n) into ``fmt``; duplicates are summed.

    ``presorted``: the entries are unique and already in the format's level order (the compiler
    knows this of the outputs it assembles), so sorting and validation are skipped."""
    shape = inputs.as_shape(shape)
    fmt = as_format(fmt, len(shape))
    xp = array_module(coords)  # cupy entries (a GPU kernel's output) are packed on the device
    if xp is np:
        coords, values = inputs.coordinates(coords, values, shape)  # (ndim, n) integers, n values, or a FormatError
    else:
        coords, values = coords.reshape(len(shape), -1).astype(np.int64, copy=False), values.reshape(-1)
    values = _as_value_array(values)
    for d, n in enumerate(shape):
        bad = xp.flatnonzero((coords[d] < 0) | (coords[d] >= n))
        if len(bad):
            raise FormatError(f"coordinate {int(coords[d, bad[0]])} of dimension {d} is outside [0, {n})")
    if fmt.is_dense and xp is not np:  # (not reached by the compiler: a dense output is no entry list)
        raise FormatError("from_coordinates(): pack device entries into a sparse format, or move them to the host")
    if fmt.is_dense:
        out = np.zeros(shape, dtype=values.dtype)
        np.add.at(out, tuple(coords), values)
        return SparseTensor(fmt, shape, [{} for _ in fmt.levels], out.reshape(-1), check=False)
    for d, b in fmt.blocks.items():
        if shape[d] % b:
            raise FormatError(f"format {fmt}: block size {b} does not divide dimension {d} of shape "
                              f"{shape}; pad the tensor to a multiple of {b}")
    # level coordinates, sorted lexicographically by level order
    lvl = xp.empty((len(fmt.levels), coords.shape[1]), dtype=np.int64)
    for k, spec in enumerate(fmt.levels):
        c = coords[spec.dim]
        lvl[k] = c // spec.block if spec.op == "/" else (c % spec.block if spec.op == "%" else c)
    if not presorted:
        order = xp.lexsort(xp.ascontiguousarray(lvl[::-1])) if lvl.shape[1] else xp.zeros(0, dtype=np.int64)
        lvl, values = lvl[:, order], values[order]
    if not presorted and lvl.shape[1] > 1:
        dup = xp.all(lvl[:, 1:] == lvl[:, :-1], axis=0)
        if bool(dup.any()):
            start = xp.concatenate([xp.ones(1, dtype=bool), ~dup])
            summed = xp.zeros(int(start.sum()), dtype=values.dtype)
            _add_at(xp, summed, xp.cumsum(start) - 1, values)  # duplicates are summed
            values, lvl = summed, lvl[:, start]
    parent = xp.zeros(lvl.shape[1], dtype=np.int64)
    nparents = 1
    levels = []
    for k, spec in enumerate(fmt.levels):
        extent = spec.extent(shape)
        arrays, parent, nparents = spec.type.pack(parent, lvl[k], nparents, extent)
        levels.append(arrays)
    if presorted and nparents == len(values):
        return SparseTensor(fmt, shape, levels, values, check=False)
    vals = xp.zeros(nparents, dtype=values.dtype)
    vals[parent] = values  # entries are unique here
    return SparseTensor(fmt, shape, levels, vals, check=not presorted and xp is np)


def _add_at(xp, out, index, values):
    """``out[index] += values`` with repeated indices adding up (numpy's ufunc.at; cupyx's scatter_add)."""
    if xp is np:
        np.add.at(out, index, values)
    else:
        import cupyx  # noqa: PLC0415 - present wherever cupy arrays are

        cupyx.scatter_add(out, index, values)


def _as_value_array(values: np.ndarray) -> np.ndarray:
    if values.dtype.type in DTYPES:
        return values
    for t in ((np.int64,) if values.dtype.kind in "iu" else ()) + (np.float64, np.int64, np.bool_):  # ints stay ints
        if np.can_cast(values.dtype, t):
            return values.astype(t)
    raise FormatError(f"dtype {values.dtype} is not supported; use float32, float64, int32, int64 or bool")


def asformat(obj, fmt="dense") -> SparseTensor:
    """Store ``obj`` (numpy array, scipy.sparse matrix/array, SparseTensor) in format ``fmt``.

    A scipy CSR matrix with sorted, unique indices becomes a ``csr`` tensor without copying.
    Objects on a GPU are converted on the host and moved back (``SparseTensor.to``).
    """
    from .backends.cuda.device import on_device, to_host

    if on_device(obj):
        if isinstance(obj, SparseTensor) and as_format(fmt, obj.ndim) == obj.format:
            return obj
        from .backends.cuda.device import storage

        out = asformat(to_host(obj), fmt).to("cuda")
        half = storage(obj)  # float16 / bfloat16 values: widened on the host, 16-bit again on the device
        return out if half is None else out.astype(half)
    if isinstance(obj, SparseTensor):
        fmt = as_format(fmt, obj.ndim)
        if fmt == obj.format:
            return obj
        if obj.format.is_dense:
            return asformat(obj.values.reshape(obj.shape), fmt)
        pair = (obj.format, fmt)
        if obj.ndim == 2 and pair in ((as_format("csr"), as_format("csc")), (as_format("csc"), as_format("csr"))):
            # a transposition of compressed storage: scipy's linear-time C++ conversion
            m = (sp.csr_array if obj.format == as_format("csr") else sp.csc_array)(
                (obj.values, obj.levels[1]["crd"], obj.levels[1]["pos"]), shape=obj.shape)
            m = m.tocsc() if fmt == as_format("csc") else m.tocsr()
            return SparseTensor(fmt, obj.shape, [{}, {"pos": m.indptr, "crd": m.indices}], m.data, check=False)
        coords, vals = obj.coordinates()
        return from_coordinates(coords, vals, obj.shape, fmt)
    if sp.issparse(obj):
        inputs.check_scipy(obj)  # before any scipy method: its C++ code trusts indptr and indices
        fmt = as_format(fmt, obj.ndim)
        if fmt.is_dense:
            return asformat(obj.toarray(), fmt)
        if obj.format == "csr" and fmt == as_format("csr"):
            m = obj
            if not m.has_canonical_format:
                m = m.copy()
                m.sum_duplicates()
            # no copy: the tensor holds read-only views of the matrix's arrays (README, "Formats")
            pos, crd, data = (_read_only(a) for a in (m.indptr, m.indices, _as_value_array(m.data)))
            return SparseTensor(fmt, m.shape, [{}, {"pos": pos, "crd": crd}], data)
        coo = obj.tocoo()
        coords = getattr(coo, "coords", None) or (coo.row, coo.col)
        return from_coordinates(np.vstack(coords), coo.data, coo.shape, fmt)
    if _is_torch(obj):
        obj = obj.detach().cpu().to_dense().numpy() if obj.is_sparse or obj.layout != _torch_strided() \
            else obj.detach().cpu().numpy()
    arr = inputs.as_array(obj)
    fmt = as_format(fmt, arr.ndim)
    arr = _as_value_array(arr)
    if fmt.is_dense:
        return SparseTensor(fmt, arr.shape, [{} for _ in fmt.levels], np.ascontiguousarray(arr).reshape(-1))
    idx = np.nonzero(arr)
    return from_coordinates(np.array(idx, dtype=np.int64).reshape(arr.ndim, -1), arr[idx], arr.shape, fmt)


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a``: a tensor's storage must not change after it was validated."""
    v = a.view()
    v.flags.writeable = False
    return v


def _is_torch(obj) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "layout")


def _torch_strided():
    import torch

    return torch.strided

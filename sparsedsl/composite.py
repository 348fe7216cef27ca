"""Composite operands: matrices given by algebra over stored factors, not by storage.

``kron(B, C)`` is A[(i1,i2),(j1,j2)] = B[i1,j1]·C[i2,j2]; ``lowrank(U, V)`` is A[i,j] = Σr U[i,r]·V[j,r]
and ``lowrank(U, V) + S`` adds a sparse S; ``monarch(L, R)`` is the Monarch matrix P L Pᵀ R of
Dao et al. (2022). A composite passed to a kernel is never materialised: the rewrite stage
(``lang/rewrite.py``) expands it into index notation over its factors and picks a contraction
order, so a kernel written for a plain matrix gets the fast algorithm. ``.to_numpy()`` (and
``numpy.asarray``) materialise one, for tests and small cases only.

The factors are kept as given (numpy arrays or SparseTensors in any format); the operand's
*type* (:class:`CompositeType`) records their shapes, dtypes and formats, so compiled plans are
cached per composite structure, never per value.
"""

from __future__ import annotations

import copy

import numpy as np

from .errors import FormatError
from .lang.check import CompositeType, TensorType
from .lang.formats import as_format
from .tensor import SparseTensor, asformat, from_coordinates


class Composite:
    """Base class of composite operands (see the module docstring)."""

    kind = ""
    __array_priority__ = 20

    def parts(self) -> tuple:
        """The factors, numpy arrays or SparseTensors, in a fixed order per kind."""
        raise NotImplementedError

    @property
    def shape(self) -> tuple:
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.result_type(*(p.dtype for p in self.parts()))

    @property
    def type(self) -> CompositeType:
        parts = tuple(TensorType(p.shape, p.dtype, p.format) if isinstance(p, SparseTensor) else
                      TensorType(p.shape, p.dtype, as_format("dense", p.ndim)) for p in self.parts())
        return CompositeType(self.shape, self.dtype, as_format("dense", self.ndim), kind=self.kind, parts=parts,
                             transposed=getattr(self, "transposed", False),
                             densities=tuple(_density(p) for p in self.parts()))

    def to_numpy(self) -> np.ndarray:
        raise NotImplementedError

    @property
    def device(self) -> str:
        """"cuda" when every factor is on the GPU (after ``.to("cuda")``), else "cpu"."""
        return "cuda" if all(_on_device(p) for p in self.parts()) else "cpu"

    def to(self, device: str):
        """The same composite with every factor on ``device`` ("cuda" or "cpu"); kernels called with
        it run there. No copy of a factor that is already there."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        moved = copy.copy(self)
        for name, v in vars(self).items():
            if isinstance(v, tuple):
                setattr(moved, name, tuple(_move(f, device) for f in v))
            elif hasattr(v, "shape"):
                setattr(moved, name, _move(v, device))
        return moved

    def materialize(self):
        """The operand as a plain tensor, with presence: a SparseTensor (COO) when the algebra of
        stored entries leaves entries absent (a Kronecker product of sparse factors), else numpy.
        The dense reference interpreter evaluates programs on this."""
        return self.to_numpy()

    def __array__(self, dtype=None, copy=None):
        arr = self.to_numpy()
        return arr if dtype is None else arr.astype(dtype)

    def __repr__(self):
        inner = ", ".join(f"{type(p).__name__}{tuple(p.shape)}" for p in self.parts())
        return f"{self.kind}({inner}) -> shape {self.shape}, {self.dtype}"


def _factor(x, what: str):
    """A factor as a numpy or cupy array (dense, C-contiguous, supported dtype) or a SparseTensor."""
    if isinstance(x, SparseTensor):
        return x.to_numpy() if x.format.is_dense and x.device == "cpu" else x
    if hasattr(x, "tocsr"):  # scipy.sparse, or cupyx.scipy.sparse (packed on the host, kept on the device)
        return asformat(x, "csr") if not _on_device(x) else asformat(x.get(), "csr").to("cuda")
    if isinstance(x, Composite):
        raise FormatError(f"{what} is itself a composite ({x.kind}); nest composites by materialising the "
                          f"inner one or by writing the product in index notation")
    if _on_device(x):  # cupy, torch CUDA: kept on the device, C-contiguous
        from .backends.cuda import device

        arr = device.pack(x, _DENSE_PARAM, None)
    else:
        arr = np.ascontiguousarray(x)
    if arr.dtype.kind not in "biuf" or arr.dtype.itemsize > 8:
        raise FormatError(f"{what} has dtype {arr.dtype}; use float32, float64, int32, int64 or bool")
    return arr.astype(np.int64) if arr.dtype.kind == "u" else arr


def _density(p) -> float:
    """The stored fraction rounded to a power of ten: plans are cached per composite type, so the cost
    model sees densities only to within a factor of ~3."""
    if not isinstance(p, SparseTensor):
        return 1.0
    size = max(int(np.prod(p.shape)), 1)
    return float(10.0 ** round(np.log10(max(p.nnz / size, 1e-9))))


def _dense(p):
    """A factor as a host numpy array."""
    p = _move(p, "cpu")
    return p.to_numpy() if isinstance(p, SparseTensor) else p


def _on_device(p) -> bool:
    from .backends.cuda.device import on_device

    return on_device(p)


def _move(p, device: str):
    """A factor (array or SparseTensor) on ``device``."""
    if isinstance(p, SparseTensor):
        return p.to(device)
    if device == "cuda":
        from .backends.cuda.device import to_device

        return p if _on_device(p) else to_device(p)
    return p.get() if _on_device(p) else p


class _DenseParam:
    """What ``device.pack`` needs to know of a dense factor."""

    kind, format = "tensor", "dense"


_DENSE_PARAM = _DenseParam()


# ---- Kronecker products ------------------------------------------------------------------------


class Kron(Composite):
    """A[(i1,...,ik), (j1,...,jk)] = F1[i1,j1] · ... · Fk[ik,jk] (any ndim, the same for every factor).

    A dimension's index is the row-major combination of the factors' indices: i = i1·m2 + i2 for
    two factors, as ``numpy.kron`` lays it out."""

    kind = "kron"

    def __init__(self, factors):
        self.factors = tuple(factors)
        if len(self.factors) < 2:
            raise FormatError(f"kron() needs at least two factors, got {len(self.factors)}")
        nd = {f.ndim for f in self.factors}
        if len(nd) != 1 or nd == {0}:
            raise FormatError(f"the factors of kron() must all have the same number of dimensions (≥ 1); got "
                              f"shapes {[tuple(f.shape) for f in self.factors]}")

    def parts(self):
        return self.factors

    @property
    def shape(self):
        return tuple(int(np.prod([f.shape[d] for f in self.factors])) for d in range(self.factors[0].ndim))

    @property
    def T(self) -> Kron:
        return Kron([f.T if isinstance(f, SparseTensor) else f.T.copy(order="C") for f in self.factors])

    def to_numpy(self):
        out = _dense(self.factors[0])
        for f in self.factors[1:]:
            out = np.kron(out, _dense(f))
        return out.astype(self.dtype, copy=False)

    def materialize(self):
        if self.device != "cpu":
            return self.to("cpu").materialize()
        if all(isinstance(f, np.ndarray) for f in self.factors):
            return self.to_numpy()
        # entries are present where every factor stores one: the Kronecker product of patterns
        coords, vals = None, None
        for f in self.factors:
            if isinstance(f, SparseTensor):
                c, v = f.coordinates()
            else:
                c = np.indices(f.shape).reshape(f.ndim, -1)
                v = f.reshape(-1)
            if coords is None:
                coords, vals = c, v
                continue
            ext = np.array(f.shape, dtype=np.int64)[:, None]
            coords = (coords[:, :, None] * ext[:, :, None] + c[:, None, :]).reshape(len(ext), -1)
            vals = (vals[:, None] * v[None, :]).reshape(-1)
        return from_coordinates(coords, vals.astype(self.dtype), self.shape, "coo" if self.ndim > 1 else "sparse")


def kron(*factors) -> Kron:
    """The Kronecker product of ``factors`` (numpy arrays, scipy.sparse matrices or SparseTensors).

    Nothing is multiplied out: a kernel that reads the result expands it into index notation over
    the factors, so ``y[i] = K[i,j] * x[j]`` with ``K = kron(B, C)`` costs O(n·(n1 + n2)), not O(n²).

    >>> import numpy as np, sparsedsl as sd
    >>> B, C = np.arange(4.0).reshape(2, 2), np.eye(3)
    >>> bool(np.allclose(sd.kron(B, C).to_numpy(), np.kron(B, C)))
    True
    """
    if len(factors) == 1 and isinstance(factors[0], (list, tuple)):
        factors = tuple(factors[0])
    return Kron([_factor(f, f"factor {k} of kron()") for k, f in enumerate(factors)])


# ---- low rank (+ sparse) -----------------------------------------------------------------------


class LowRank(Composite):
    """A[i,j] = Σr U[i,r] · V[j,r], i.e. U Vᵀ."""

    kind = "lowrank"

    def __init__(self, U, V):
        self.U, self.V = U, V
        if U.ndim != 2 or V.ndim != 2 or U.shape[1] != V.shape[1]:
            raise FormatError(f"lowrank(U, V) needs U (m, r) and V (n, r) with the same r; got U {tuple(U.shape)}, "
                              f"V {tuple(V.shape)}")

    def parts(self):
        return (self.U, self.V)

    @property
    def shape(self):
        return (self.U.shape[0], self.V.shape[0])

    @property
    def T(self) -> LowRank:
        return LowRank(self.V, self.U)

    def to_numpy(self):
        return (_dense(self.U) @ _dense(self.V).T).astype(self.dtype, copy=False)

    def __add__(self, other):
        if isinstance(other, Composite):
            return NotImplemented
        S = _factor(other, "the sparse part of lowrank(U, V) + S")
        if not isinstance(S, SparseTensor):
            S = _move(asformat(_dense(S), "csr"), "cuda" if _on_device(S) else "cpu")
        if tuple(S.shape) != self.shape:
            raise FormatError(f"lowrank(U, V) + S: S has shape {tuple(S.shape)} but U Vᵀ has shape {self.shape}")
        return LowRankPlusSparse(self.U, self.V, S)

    __radd__ = __add__


class LowRankPlusSparse(Composite):
    """A[i,j] = Σr U[i,r] · V[j,r] + S[i,j] with S stored sparse (SLTrain, robust PCA, SpQR outliers)."""

    kind = "lowrank+sparse"

    def __init__(self, U, V, S):
        self.U, self.V, self.S = U, V, S

    def parts(self):
        return (self.U, self.V, self.S)

    @property
    def shape(self):
        return (self.U.shape[0], self.V.shape[0])

    @property
    def lowrank(self) -> LowRank:
        return LowRank(self.U, self.V)

    @property
    def T(self) -> LowRankPlusSparse:
        return LowRankPlusSparse(self.V, self.U, self.S.T)

    def to_numpy(self):
        return (_dense(self.U) @ _dense(self.V).T + _dense(self.S)).astype(self.dtype, copy=False)


def lowrank(U, V) -> LowRank:
    """The rank-r matrix U Vᵀ (U: m×r, V: n×r), kept factored; ``lowrank(U, V) + S`` adds a sparse S.

    >>> import numpy as np, sparsedsl as sd
    >>> U, V = np.ones((4, 2)), np.ones((3, 2))
    >>> sd.lowrank(U, V).shape
    (4, 3)
    """
    return LowRank(_factor(U, "U"), _factor(V, "V"))


# ---- Monarch -----------------------------------------------------------------------------------


class Monarch(Composite):
    """M = P L Pᵀ R (Dao et al. 2022) with block-diagonal L and R stored as stacks of blocks.

    R holds ``k`` blocks of shape (p, q) and L holds ``p`` blocks of shape (s, k); P is the
    reshape-transpose permutation. With i = c·p + a and j = k'·q + b,

        M[i, j] = L[a, c, k'] · R[k', a, b]

    so M is (s·p) × (k·q); the square case of the paper is p = q = s = k = √n."""

    kind = "monarch"

    def __init__(self, L, R, transposed=False):
        self.L, self.R, self.transposed = L, R, transposed
        if L.ndim != 3 or R.ndim != 3 or L.shape[0] != R.shape[1] or L.shape[2] != R.shape[0]:
            raise FormatError(f"monarch(L, R): L must hold p blocks (p, s, k) and R k blocks (k, p, q); got L "
                              f"{tuple(L.shape)}, R {tuple(R.shape)}")

    def parts(self):
        return (self.L, self.R)

    @property
    def blocks(self) -> tuple:
        """(p, s, k, q): L's block count and block shape (s, k); R's block count k and block shape (p, q)."""
        p, s, k = self.L.shape
        return p, s, k, self.R.shape[2]

    @property
    def shape(self):
        p, s, k, q = self.blocks
        return (k * q, s * p) if self.transposed else (s * p, k * q)

    @property
    def T(self) -> Monarch:
        return Monarch(self.L, self.R, not self.transposed)

    def to_numpy(self):
        p, s, k, q = self.blocks
        L, R = _dense(self.L), _dense(self.R)
        M4 = np.einsum("ack,kab->cakb", L, R)  # M[(c,a),(k,b)]
        M = M4.reshape(s * p, k * q).astype(self.dtype, copy=False)
        return np.ascontiguousarray(M.T) if self.transposed else M


def monarch(L, R, nblocks: int | None = None) -> Monarch:
    """A Monarch matrix M = P L Pᵀ R from its block-diagonal factors.

    ``L`` and ``R`` are either stacks of blocks (3-D: L (p, s, k), R (k, p, q)) or square
    block-diagonal matrices with ``nblocks`` equal blocks each (the paper's n = m² case: both n×n
    with m blocks of m×m); see :class:`Monarch` for the index map.

    References: T. Dao et al., "Monarch: Expressive Structured Matrices for Efficient and Accurate
    Training", ICML 2022.

    >>> import numpy as np, sparsedsl as sd
    >>> M = sd.monarch(np.ones((2, 2, 2)), np.ones((2, 2, 2)))
    >>> M.shape
    (4, 4)
    """
    on_gpu = _on_device(L) or _on_device(R)
    L, R = _dense(_factor(L, "L")), _dense(_factor(R, "R"))
    if L.ndim == 2 or R.ndim == 2:
        if nblocks is None:
            raise FormatError("monarch(L, R, nblocks): give nblocks when L and R are block-diagonal matrices")
        L, R = _blocks(L, nblocks, "L"), _blocks(R, nblocks, "R")
        # blocks of the block-diagonal L act on the permuted vector: stack (p, s, k) as the paper does
    elif nblocks is not None and R.shape[0] != nblocks:
        raise FormatError(f"monarch(L, R, nblocks): R holds {R.shape[0]} blocks, but nblocks={nblocks}")
    M = Monarch(np.ascontiguousarray(L), np.ascontiguousarray(R))
    return M.to("cuda") if on_gpu else M  # checked on the host, kept where it came from


def _blocks(M, nblocks, what):
    """The diagonal blocks of a block-diagonal matrix, checked to be zero off the blocks."""
    if not isinstance(nblocks, (int, np.integer)) or nblocks < 1 or M.shape[0] % nblocks or M.shape[1] % nblocks:
        raise FormatError(f"The 'nblocks' parameter of monarch() must be a positive int dividing the shape "
                          f"{tuple(M.shape)} of {what}. Got {nblocks!r}")
    r, c = M.shape[0] // nblocks, M.shape[1] // nblocks
    blocks = np.stack([M[b * r:(b + 1) * r, b * c:(b + 1) * c] for b in range(nblocks)])
    off = M.copy()
    for b in range(nblocks):
        off[b * r:(b + 1) * r, b * c:(b + 1) * c] = 0
    if np.any(off):
        raise FormatError(f"{what} is not block-diagonal with {nblocks} blocks of {r}×{c}: it has entries off "
                          f"the diagonal blocks")
    return blocks


# ---- run time: the operands a rewritten program reads, and its outputs put back -----------------


def bind(checked, bound: dict) -> dict:
    """The environment of a rewritten program: ``bound`` plus the inputs the rewrite stage derived
    (factors of composites, operands with split or permuted dimensions; ``Checked.derived``)."""
    env = dict(bound)
    for name, (src, part, splits, perm) in checked.derived.items():
        v = bound[src]
        if part is not None:
            v = v.parts()[part]
        env[name] = _split(v, splits, perm)
    return env


def unsplit(checked, results: dict) -> dict:
    """Outputs computed with split dimensions, reshaped back (``Checked.reshaped``)."""
    for name, t in checked.reshaped.items():
        r = results[name]
        if isinstance(r, SparseTensor):
            device, r = r.device, r.to("cpu")  # regrouping coordinates is host work
            coords, vals = r.coordinates()
            merged, k = [], 0
            for n in t.shape:  # consecutive split dimensions whose extents multiply to n
                c, prod = np.zeros(coords.shape[1], dtype=np.int64), 1
                while prod < n:
                    c = c * r.shape[k] + coords[k]
                    prod *= r.shape[k]
                    k += 1
                merged.append(c)
            merged_t = from_coordinates(np.array(merged).reshape(len(t.shape), -1), vals, t.shape, t.format)
            results[name] = merged_t.to(device)
        else:
            results[name] = r.reshape(t.shape)
    return results


def _split(v, splits, perm):
    """``v`` with its dimensions split (``splits``: the new extents of each) and permuted, on the
    device it is on."""
    from .lang.rewrite import split_format

    shape = tuple(n for s in splits for n in s)
    if isinstance(v, SparseTensor) and not v.format.is_dense:
        if all(len(s) == 1 for s in splits):
            return v
        device, v = v.device, v.to("cpu")  # regrouping coordinates is host work
        coords, vals = v.coordinates()
        new = []
        for d, s in enumerate(splits):
            stride = int(np.prod(s))
            for n in s:
                stride //= n
                new.append((coords[d] // stride) % n)
        return from_coordinates(np.array(new, dtype=np.int64).reshape(len(shape), -1), vals, shape,
                                split_format(v.format, splits)).to(device)
    arr = (v.to_numpy() if isinstance(v, SparseTensor) else v).reshape(shape)  # numpy or cupy
    return arr.transpose(perm).copy(order="C") if perm is not None else arr

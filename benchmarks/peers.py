"""Adapters: each impl turns scipy/numpy operands into its own objects (untimed) and returns
``(run, to_result, note)``: ``run()`` is the timed call, ``to_result(out)`` gives numpy (dense)
or scipy CSR (sparse) for the correctness check.

Ops: spmv(A, x, fmt), spmm(A, X), sddmm(S, U, V), spgemm(A, B), add(A, B), hadamard(A, B).
"""

from __future__ import annotations

import time
from importlib import metadata

import numpy as np
import scipy.sparse as sp


def csr(data, indices, indptr, shape):
    return sp.csr_array((np.asarray(data), np.asarray(indices), np.asarray(indptr)), shape=shape)


class Peer:
    name = ""
    dist = ""  # pip distribution name, for the version

    def load(self):
        """Import the library (raises if unavailable)."""

    def version(self):
        try:
            return metadata.version(self.dist)
        except metadata.PackageNotFoundError:
            return None

    def prepare(self, op, **data):
        fn = getattr(self, op, None)
        if fn is None:
            raise NotImplementedError(f"{op} not supported")
        out = fn(**data)
        return out if len(out) == 3 else (*out, "")


class SparseDSL(Peer):
    name, dist = "sparsedsl", "sparsedsl"

    def load(self):
        import sparsedsl

        self.sd = sparsedsl

    def version(self):
        return super().version() or getattr(self.sd, "__version__", None)

    def _sparse(self, expr, A, B):
        k = self.sd.compile(expr, A="csr", B="csr", out_format="csr")
        tA, tB = self.sd.asformat(A, "csr"), self.sd.asformat(B, "csr")
        return lambda: k(A=tA, B=tB), lambda C: C.to_scipy()

    def spmv(self, A, x, fmt="csr"):
        k = self.sd.compile("y[i] = A[i,j] * x[j]", A=fmt, x="dense")
        tA = self.sd.asformat(A, fmt)
        return lambda: k(A=tA, x=x), np.asarray, f"{storage_bytes(tA) / 1e6:.1f} MB as {fmt}"

    def spmm(self, A, X):
        k = self.sd.compile("Y[i,n] = A[i,j] * X[j,n]", A="csr", X="dense")
        tA = self.sd.asformat(A, "csr")
        return lambda: k(A=tA, X=X), np.asarray

    def sddmm(self, S, U, V):
        k = self.sd.compile(
            "C[i,j] = S[i,j] * U[i,k] * V[j,k]", S="csr", U="dense", V="dense", out_format="csr"
        )
        tS = self.sd.asformat(S, "csr")
        return lambda: k(S=tS, U=U, V=V), lambda C: C.to_scipy()

    def spgemm(self, A, B):
        return self._sparse("C[i,j] = A[i,k] * B[k,j]", A, B)

    def add(self, A, B):
        return self._sparse("C[i,j] = A[i,j] + B[i,j]", A, B)

    def hadamard(self, A, B):
        return self._sparse("C[i,j] = A[i,j] * B[i,j]", A, B)


def storage_bytes(t) -> int:
    """`.nbytes` of a sparsedsl tensor, else the sum of its numpy-array attributes."""
    if hasattr(t, "nbytes"):
        return int(t.nbytes)
    seen = [v for v in vars(t).values() if isinstance(v, np.ndarray)]
    for v in vars(t).values():
        if isinstance(v, (list, tuple)):
            seen += [a for a in v if isinstance(a, np.ndarray)]
    return sum(a.nbytes for a in seen)


class Scipy(Peer):
    name, dist = "scipy", "scipy"

    def spmv(self, A, x, fmt="csr"):
        return lambda: A @ x, np.asarray

    def spmm(self, A, X):
        return lambda: A @ X, np.asarray

    def sddmm(self, S, U, V):
        rows = np.repeat(np.arange(S.shape[0]), np.diff(S.indptr))
        cols = S.indices
        variants = {
            "gather-sum": lambda: (U[rows] * V[cols]).sum(1) * S.data,
            "einsum": lambda: np.einsum("ij,ij->i", U[rows], V[cols]) * S.data,
        }
        best = min(variants, key=lambda v: _best_of(variants[v], 3))
        return variants[best], lambda d: csr(d, S.indices, S.indptr, S.shape), f"variant={best}"

    def spgemm(self, A, B):
        return lambda: A @ B, sp.csr_array

    def add(self, A, B):
        return lambda: A + B, sp.csr_array

    def hadamard(self, A, B):
        return lambda: A.multiply(B), sp.csr_array


def _best_of(fn, n):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


class GraphBLAS(Peer):
    name, dist = "graphblas", "python-graphblas"

    def load(self):
        import graphblas

        self.gb = graphblas

    def _m(self, A):
        return self.gb.io.from_scipy_sparse(A)

    def _out(self, C):
        return self.gb.io.to_scipy_sparse(C, format="csr")

    def spmv(self, A, x, fmt="csr"):
        gA, gx = self._m(A), self.gb.Vector.from_dense(x)
        return lambda: gA.mxv(gx).new(), lambda w: w.to_dense(fill_value=0.0)

    def spmm(self, A, X):
        gA, gX = self._m(A), self.gb.Matrix.from_dense(X)
        return lambda: gA.mxm(gX).new(), lambda C: C.to_dense(fill_value=0.0)

    def sddmm(self, S, U, V):
        gS, gU, gV = self._m(S), self.gb.Matrix.from_dense(U), self.gb.Matrix.from_dense(V)
        return lambda: gU.mxm(gV.T).new(mask=gS.S).ewise_mult(gS).new(), self._out

    def spgemm(self, A, B):
        gA, gB = self._m(A), self._m(B)
        return lambda: gA.mxm(gB).new(), self._out

    def add(self, A, B):
        gA, gB = self._m(A), self._m(B)
        return lambda: gA.ewise_add(gB).new(), self._out

    def hadamard(self, A, B):
        gA, gB = self._m(A), self._m(B)
        return lambda: gA.ewise_mult(gB).new(), self._out


class PydataSparse(Peer):
    name, dist = "pydata-sparse", "sparse"

    def load(self):
        import sparse

        self.sparse = sparse

    def _m(self, A):
        return self.sparse.GCXS.from_scipy_sparse(A)

    def _out(self, C):
        return sp.csr_array(C.to_scipy_sparse())

    def spmv(self, A, x, fmt="csr"):
        sA = self._m(A)
        return lambda: sA @ x, np.asarray

    def spmm(self, A, X):
        sA = self._m(A)
        return lambda: sA @ X, np.asarray

    def spgemm(self, A, B):
        sA, sB = self._m(A), self._m(B)
        return lambda: sA @ sB, self._out

    def add(self, A, B):
        sA, sB = self._m(A), self._m(B)
        return lambda: sA + sB, self._out

    def hadamard(self, A, B):
        sA, sB = self._m(A), self._m(B)
        return lambda: sA * sB, self._out


class Torch(Peer):
    name, dist = "torch", "torch"

    def load(self):
        import warnings

        import torch

        warnings.filterwarnings("ignore", message="Sparse (invariant checks|CSR tensor support)")
        torch.set_num_threads(2)
        self.torch = torch

    def _m(self, A):
        t = self.torch
        return t.sparse_csr_tensor(
            t.from_numpy(A.indptr), t.from_numpy(A.indices), t.from_numpy(A.data), size=A.shape
        )

    @staticmethod
    def _out(C):
        return csr(C.values().numpy(), C.col_indices().numpy(), C.crow_indices().numpy(), tuple(C.shape))

    def spmv(self, A, x, fmt="csr"):
        tA, tx = self._m(A), self.torch.from_numpy(x)
        return lambda: self.torch.mv(tA, tx), lambda y: y.numpy()

    def spmm(self, A, X):
        tA, tX = self._m(A), self.torch.from_numpy(X)
        return lambda: tA @ tX, lambda Y: Y.numpy()

    def sddmm(self, S, U, V):
        t = self.torch
        tS, tU, tVt = self._m(S), t.from_numpy(U), t.from_numpy(V).T
        sv = tS.values()

        def run():
            R = t.sparse.sampled_addmm(tS, tU, tVt, beta=0.0)
            return t.sparse_csr_tensor(R.crow_indices(), R.col_indices(), R.values() * sv, size=R.shape)

        return run, self._out

    def spgemm(self, A, B):
        tA, tB = self._m(A), self._m(B)
        return lambda: tA @ tB, self._out

    def add(self, A, B):
        tA, tB = self._m(A), self._m(B)
        return lambda: tA + tB, self._out

    def hadamard(self, A, B):
        tA, tB = self._m(A), self._m(B)
        return lambda: tA * tB, self._out


class Tensora(Peer):
    """TACO-style kernels via `tensora.tensor_method` (LLVM backend).

    Operands are built with tensora's own cffi taco structures, filled with memmove: its
    `Tensor.from_scipy_sparse` goes through Python dicts and is impractical at millions of nonzeros.
    """

    name, dist = "tensora", "tensora"

    def load(self):
        import tensora
        from tensora.compile import _cffi_ownership as own

        self.ta, self.own = tensora, own

    def _tensor(self, dims, modes, levels, vals):
        own, ffi = self.own, self.own.tensor_cdefs
        t = own.allocate_taco_structure(modes, dims, tuple(range(len(dims))))
        holder = own.global_weakkeydict[t]
        cidx = ffi.cast("int32_t***", t.indices)
        for lvl, arrays in enumerate(levels):
            for k, a in enumerate(arrays):
                a = np.ascontiguousarray(a, dtype=np.int32)
                buf = ffi.new("int32_t[]", max(len(a), 1))
                ffi.memmove(buf, a, a.nbytes)
                holder["**indices"][lvl][k] = buf
                cidx[lvl][k] = buf
        vals = np.ascontiguousarray(vals, dtype=np.float64).ravel()
        cv = ffi.new("double[]", max(vals.size, 1))
        ffi.memmove(cv, vals, vals.nbytes)
        holder["vals"] = cv
        t.vals = ffi.cast("double*", cv)
        return self.ta.Tensor(t)

    def _csr(self, A):
        return self._tensor(A.shape, (0, 1), [[], [A.indptr, A.indices]], A.data)

    def _dense(self, X):
        return self._tensor(X.shape, (0,) * X.ndim, [[] for _ in X.shape], X)

    def _read(self, T):
        ffi, dims = self.own.tensor_cdefs, T.dimensions
        if all(m == self.ta.Mode.dense for m in T.modes):
            n = int(np.prod(dims))
            return (
                np.frombuffer(ffi.buffer(ffi.cast("double*", T.cffi_tensor.vals), 8 * n), np.float64)
                .reshape(dims)
                .copy()
            )
        cidx = ffi.cast("int32_t***", T.cffi_tensor.indices)
        pos = np.frombuffer(ffi.buffer(cidx[1][0], 4 * (dims[0] + 1)), np.int32).copy()
        nnz = int(pos[-1])
        crd = np.frombuffer(ffi.buffer(cidx[1][1], 4 * nnz), np.int32).copy()
        vals = np.frombuffer(ffi.buffer(ffi.cast("double*", T.cffi_tensor.vals), 8 * nnz), np.float64).copy()
        return csr(vals, crd, pos, dims)

    def _run(self, expr, formats, **ops):
        f = self.ta.tensor_method(expr, formats)
        return lambda: f(**ops), self._read

    def spmv(self, A, x, fmt="csr"):
        return self._run(
            "y(i) = A(i,j) * x(j)", {"y": "d", "A": "ds", "x": "d"}, A=self._csr(A), x=self._dense(x)
        )

    def spmm(self, A, X):
        return self._run(
            "Y(i,n) = A(i,j) * X(j,n)", {"Y": "dd", "A": "ds", "X": "dd"}, A=self._csr(A), X=self._dense(X)
        )

    def sddmm(self, S, U, V):
        return self._run(
            "C(i,j) = S(i,j) * U(i,k) * V(j,k)",
            {"C": "ds", "S": "ds", "U": "dd", "V": "dd"},
            S=self._csr(S),
            U=self._dense(U),
            V=self._dense(V),
        )

    def spgemm(self, A, B):
        return self._run(
            "C(i,j) = A(i,k) * B(k,j)", {"C": "ds", "A": "ds", "B": "ds"}, A=self._csr(A), B=self._csr(B)
        )

    def add(self, A, B):
        return self._run(
            "C(i,j) = A(i,j) + B(i,j)", {"C": "ds", "A": "ds", "B": "ds"}, A=self._csr(A), B=self._csr(B)
        )

    def hadamard(self, A, B):
        return self._run(
            "C(i,j) = A(i,j) * B(i,j)", {"C": "ds", "A": "ds", "B": "ds"}, A=self._csr(A), B=self._csr(B)
        )


class Finch(Peer):
    """finch-tensor's array API; `load` runs a tiny SpMV so that a broken install is reported once."""

    name, dist = "finch", "finch-tensor"

    def load(self):
        import finch

        self.finch = finch
        A = sp.csr_array(np.eye(4))
        run, to_result, _ = self.prepare("spmv", A=A, x=np.ones(4))
        to_result(run())

    def spmv(self, A, x, fmt="csr"):
        fA, fx = self.finch.asarray(A), self.finch.asarray(x)
        return lambda: fA @ fx, np.asarray


PEERS = [SparseDSL(), Scipy(), GraphBLAS(), Tensora(), PydataSparse(), Torch(), Finch()]

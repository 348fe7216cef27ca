"""Benchmark operands (fixed seeds) and case definitions for full and --quick sizes."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

SEED = 20240601


def _csr_from_cols(cols, n_cols, rng):
    """CSR with per-row column lists `cols` (n_rows x k), sorted and de-duplicated per row."""
    cols = np.sort(cols, axis=1)
    keep = np.ones(cols.shape, bool)
    keep[:, 1:] = cols[:, 1:] != cols[:, :-1]
    indptr = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int32)
    indices = cols[keep].astype(np.int32)
    return sp.csr_array((rng.random(indices.size), indices, indptr), shape=(cols.shape[0], n_cols))


def banded(n, lo=-8, hi=7, seed=SEED):
    rng = np.random.default_rng(seed)
    offs = list(range(lo, hi + 1))
    A = sp.diags_array([rng.random(n - abs(o)) for o in offs], offsets=offs, shape=(n, n)).tocsr()
    A.indices, A.indptr = A.indices.astype(np.int32), A.indptr.astype(np.int32)
    return A


def random_csr(n, m, per_row, seed=SEED):
    rng = np.random.default_rng(seed)
    return _csr_from_cols(rng.integers(0, m, (n, per_row)), m, rng)


def overlapping_pair(n, per_row, seed=SEED):
    """Two random CSR matrices whose patterns share about half their entries per row."""
    rng = np.random.default_rng(seed)
    cols = rng.integers(0, n, (n, per_row * 3 // 2))
    half = per_row // 2
    return _csr_from_cols(cols[:, :per_row], n, rng), _csr_from_cols(cols[:, half : half + per_row], n, rng)


def poisson2d(g):
    T = sp.diags_array([-1.0, 2.0, -1.0], offsets=[-1, 0, 1], shape=(g, g))
    I = sp.eye_array(g)
    return sp.csr_array(sp.kron(I, T) + sp.kron(T, I))


def powerlaw(n, edges, alpha=0.5, seed=SEED):
    """Chung-Lu style directed graph: endpoints drawn with p_i ~ (i+1)^-alpha (degree exponent 1+1/alpha)."""
    rng = np.random.default_rng(seed)
    p = (np.arange(n) + 1.0) ** -alpha
    p /= p.sum()
    perm = rng.permutation(n)
    r, c = perm[rng.choice(n, edges, p=p)], perm[rng.choice(n, edges, p=p)]
    A = sp.csr_array((np.ones(edges), (r, c)), shape=(n, n))
    A.sum_duplicates()
    A.data = rng.random(A.nnz)
    A.indices, A.indptr = A.indices.astype(np.int32), A.indptr.astype(np.int32)
    return A


def nm24(n, seed=SEED):
    """n x n matrix where every aligned group of 4 in a row holds exactly 2 nonzeros."""
    rng = np.random.default_rng(seed)
    pairs = np.array(
        [[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 0, 1], [0, 0, 1, 1]], bool
    )
    mask = pairs[rng.integers(0, 6, (n, n // 4))].reshape(n, n)
    D = np.where(mask, rng.random((n, n)) + 0.5, 0.0)
    return sp.csr_array(D)


def vec(n, seed=SEED + 1):
    return np.random.default_rng(seed).random(n)


def dense(n, k, seed=SEED + 2):
    return np.random.default_rng(seed).random((n, k))


def kernel_cases(quick: bool) -> dict:
    """name -> zero-arg builder returning {desc, op, data, expected, [peers, batch, fmt]}."""
    q = quick
    n_spmv = 20_000 if q else 2_000_000
    n_spmm = 5_000 if q else 200_000
    n_sdd = 400 if q else 8_000
    g = 40 if q else 1000
    n_pl, e_pl = (3_000, 30_000) if q else (100_000, 1_000_000)
    n_add = 20_000 if q else 1_000_000
    n_nm = 256 if q else 8192

    def spmv(A, desc, **kw):
        x = vec(A.shape[1])
        return {"desc": desc, "op": "spmv", "data": {"A": A, "x": x, **kw}, "expected": A @ x}

    def spmm():
        A, X = random_csr(n_spmm, n_spmm, 16), dense(n_spmm, 64)
        return {
            "desc": f"CSR {n_spmm}^2, nnz={A.nnz:,} x dense {n_spmm}x64",
            "op": "spmm",
            "data": {"A": A, "X": X},
            "expected": A @ X,
        }

    def sddmm():
        S = sp.csr_array(sp.random_array((n_sdd, n_sdd), density=0.01, format="csr", rng=SEED))
        U, V = dense(n_sdd, 64), dense(n_sdd, 64, SEED + 3)
        rows = np.repeat(np.arange(n_sdd), np.diff(S.indptr))
        exp = sp.csr_array(
            (np.einsum("ij,ij->i", U[rows], V[S.indices]) * S.data, S.indices, S.indptr), S.shape
        )
        return {
            "desc": f"S {n_sdd}^2 1% (nnz={S.nnz:,}), U,V {n_sdd}x64",
            "op": "sddmm",
            "data": {"S": S, "U": U, "V": V},
            "expected": exp,
        }

    def binary(op, A, B, desc):
        exp = {"spgemm": lambda: A @ B, "add": lambda: A + B, "hadamard": lambda: A.multiply(B)}[op]()
        return {
            "desc": f"{desc}, nnz(C)={exp.nnz:,}",
            "op": op,
            "data": {"A": A, "B": B},
            "expected": sp.csr_array(exp),
        }

    def pair(op):
        A, B = overlapping_pair(n_add, 8)
        return binary(op, A, B, f"two CSR {n_add}^2, nnz {A.nnz:,} + {B.nnz:,}")

    def bitmap_like(fmt):
        A = nm24(n_nm)
        c = spmv(A, f"2:4 matrix {n_nm}^2 (50% dense, nnz={A.nnz:,}), sparsedsl as {fmt} vs CSR", fmt=fmt)
        c["peers"] = ["sparsedsl", "scipy"]
        c["csr_bytes"] = A.data.nbytes + A.indices.nbytes + A.indptr.nbytes
        return c

    def small():
        A = random_csr(10, 10, 3)
        c = spmv(A, "10x10 CSR SpMV, per-call time")
        c["batch"] = 200 if q else 2000
        return c

    return {
        "spmv_banded": lambda: spmv(banded(n_spmv), f"banded CSR {n_spmv:,}^2, 16 nnz/row"),
        "spmv_random": lambda: spmv(random_csr(n_spmv, n_spmv, 16), f"random CSR {n_spmv:,}^2, 16 nnz/row"),
        "spmm": spmm,
        "sddmm": sddmm,
        "spgemm_poisson": lambda: binary(
            "spgemm", poisson2d(g), poisson2d(g), f"A*A, 2-D Poisson {g}x{g} grid ({g * g:,} rows)"
        ),
        "spgemm_powerlaw": lambda: (
            lambda A: binary("spgemm", A, A, f"A*A, Chung-Lu power-law graph {n_pl:,} nodes, nnz={A.nnz:,}")
        )(powerlaw(n_pl, e_pl)),
        "add": lambda: pair("add"),
        "hadamard": lambda: pair("hadamard"),
        "spmv_bitmap": lambda: bitmap_like("bitmap"),
        "spmv_nm24": lambda: bitmap_like("nm(2,4)"),
        "small_overhead": small,
    }

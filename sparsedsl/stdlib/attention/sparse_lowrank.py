"""Scatterbrain: sparse (LSH buckets) + low-rank (positive random features) attention.

The unnormalised attention exp(s·QKᵀ) is estimated as φ(Q)φ(K)ᵀ (Performer's positive random
features, unbiased) plus, on the pairs an LSH puts in the same bucket, the difference between the
exact entry and its low-rank estimate: those pairs are exact and counted once (no double counting),
the others come from the features, so the estimate stays unbiased. Output = Â V / Â 1.

The sparse correction is a sparsedsl program over the LSH mask (two SDDMMs and a masked difference),
and Â·[V 1] is one product of the composite ``sd.lowrank(φ(Q), φ(K)) + E``, which the rewrite stage
evaluates as φ(Q)(φ(K)ᵀ[V 1]) + E[V 1], never forming an L×L matrix.

References
----------
Chen, Dao, Winsor, Song, Rudra, Ré, "Scatterbrain: Unifying Sparse and Low-rank Attention
Approximation", 2021; Choromanski et al., "Rethinking Attention with Performers", 2021 (FAVOR+);
Kitaev, Kaiser, Levskaya, "Reformer: The Efficient Transformer", 2020 (LSH attention).
"""

from __future__ import annotations

import numpy as np

import sparsedsl as sd

from ._core import _host64

CORRECTION_PROGRAM = """
let A[i,j] = M[i,j] * Q[i,d] * K[j,d]
let B[i,j] = M[i,j] * P[i,r] * R[j,r]
E[i,j] = M[i,j] * (exp(A[i,j]) - B[i,j])
"""

_correction = None


def _correction_kernel():
    global _correction
    if _correction is None:
        _correction = sd.compile(CORRECTION_PROGRAM, M="csr", out_format="csr", name="scatterbrain_correction")
    return _correction


def positive_features(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """FAVOR+ positive random features: φ(x) = exp(w·x − |x|²/2)/√m, E[φ(q)·φ(k)] = exp(q·k)."""
    return np.exp(x @ w.T - 0.5 * (x * x).sum(-1, keepdims=True)) / np.sqrt(w.shape[0])


def random_features(m: int, d: int, rng, orthogonal: bool = True) -> np.ndarray:
    """m projection directions (m, d): i.i.d. Gaussian, or orthogonal blocks of d rescaled by
    chi-distributed norms (FAVOR+'s ORF: each row is still N(0, I), so φ stays unbiased, with a
    lower variance)."""
    if not orthogonal:
        return rng.standard_normal((m, d))
    blocks = []
    for _ in range(-(-m // d)):
        qm, _ = np.linalg.qr(rng.standard_normal((d, d)))
        blocks.append(qm.T * np.sqrt(rng.chisquare(d, size=(d, 1))))
    return np.concatenate(blocks)[:m]


def lsh_buckets(x: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """SimHash bucket of each row of ``x`` (unit-normalised): the signs of ``planes`` projections."""
    bits = (x @ planes.T) > 0
    return bits @ (1 << np.arange(planes.shape[0]))


def lsh_mask(q: np.ndarray, k: np.ndarray, n_bits: int, rng) -> sd.SparseTensor:
    """CSR mask of the (query, key) pairs in the same SimHash bucket (q, k: (L, d))."""
    planes = rng.standard_normal((n_bits, q.shape[1]))
    unit = np.concatenate([q, k]) / np.maximum(np.linalg.norm(np.concatenate([q, k]), axis=1, keepdims=True), 1e-12)
    b = lsh_buckets(unit, planes)
    bq, bk = b[: len(q)], b[len(q):]
    i, j = np.nonzero(bq[:, None] == bk[None, :])
    return sd.from_coordinates(np.vstack([i, j]), np.ones(len(i)), (len(q), len(k)), "csr")


def scatterbrain(q, k, v, *, n_features: int = 32, n_bits: int = 3, scale: float | None = None,
                 method: str = "scatterbrain", orthogonal: bool = True, random_state=None,
                 return_unnormalized: bool = False):
    r"""Scatterbrain attention for one head: q (L, d), k (Lk, d), v (Lk, dv).

    .. math:: \hat A = \phi(Q)\phi(K)^T + \sum_{(i,j)\in \mathrm{LSH}} (e^{s q_i\cdot k_j} - \phi(q_i)\cdot\phi(k_j)),
              \quad O = \hat A V / \hat A \mathbf 1

    Parameters
    ----------
    n_features : random features m (the low-rank part's rank).
    n_bits : SimHash bits (2**n_bits buckets; about L / 2**n_bits keys per query in the sparse part).
    method : "scatterbrain" (sparse + low-rank), "sparse" (LSH attention only, Reformer) or "lowrank"
        (random features only, Performer): the two parts alone, for comparisons at equal budget.
    orthogonal : orthogonal random features (FAVOR+'s ORF; i.i.d. Gaussian when False).
    random_state : seed or numpy Generator (features and hash planes).
    return_unnormalized : return (Â V, Â 1) instead of O (their averages over seeds converge to the
        exact exp(sQKᵀ)V and exp(sQKᵀ)1: the estimator is unbiased).

    Returns
    -------
    O of shape (L, dv) (float64 numpy), or the pair above.

    References
    ----------
    Chen et al., "Scatterbrain: Unifying Sparse and Low-rank Attention Approximation", 2021.
    """
    if method not in ("scatterbrain", "sparse", "lowrank"):
        raise ValueError(f"scatterbrain(): method must be 'scatterbrain', 'sparse' or 'lowrank'; got {method!r}")
    qh, kh, vh = (_host64(x) for x in (q, k, v))
    if qh.ndim != 2 or kh.ndim != 2 or vh.ndim != 2 or qh.shape[1] != kh.shape[1] or len(kh) != len(vh):
        raise ValueError(f"scatterbrain(): q (L, d), k (Lk, d), v (Lk, dv) for one head; got {qh.shape}, "
                         f"{kh.shape}, {vh.shape}")
    rng = np.random.default_rng(random_state)
    s = 1.0 / np.sqrt(qh.shape[1]) if scale is None else float(scale)
    qs, ks = qh * np.sqrt(s), kh * np.sqrt(s)  # exp(qs·ks) = exp(s q·k)
    w1 = np.concatenate([vh, np.ones((len(vh), 1))], axis=1)
    w = random_features(n_features, qh.shape[1], rng, orthogonal)
    mask = lsh_mask(qs, ks, n_bits, rng)
    if method == "sparse":
        e = _correction_kernel()(M=mask, Q=qs, K=ks, P=np.zeros((len(qs), 1)), R=np.zeros((len(ks), 1)))
        y = e @ w1
    else:
        pq, pk = positive_features(qs, w), positive_features(ks, w)
        if method == "lowrank":
            y = sd.compute("Y[i,c] = A[i,j] * W[j,c]", A=sd.lowrank(pq, pk), W=w1)
        else:
            e = _correction_kernel()(M=mask, Q=qs, K=ks, P=pq, R=pk)
            y = sd.compute("Y[i,c] = A[i,j] * W[j,c]", A=sd.lowrank(pq, pk) + e, W=w1)
    y = np.asarray(y)
    if return_unnormalized:
        return y[:, :-1], y[:, -1]
    z = y[:, -1:]
    return y[:, :-1] / np.where(z != 0, z, 1)


__all__ = ["CORRECTION_PROGRAM", "lsh_mask", "positive_features", "random_features", "scatterbrain"]

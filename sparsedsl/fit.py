"""Fitting structured operators to a matrix: low rank + sparse, Monarch, Kronecker.

Each function returns a composite operand (``sparsedsl.lowrank(U, V) + S``, ``sparsedsl.monarch``,
``sparsedsl.kron``) that kernels use through the rewrite stage, never materialised.
"""

from __future__ import annotations

import warnings

import numpy as np

from .composite import Kron, LowRankPlusSparse, Monarch
from .tensor import SparseTensor, from_coordinates


def _matrix(A, what="A") -> np.ndarray:
    if isinstance(A, SparseTensor) or hasattr(A, "to_numpy"):
        A = A.to_numpy()
    elif hasattr(A, "toarray"):
        A = A.toarray()
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2:
        raise ValueError(f"{what} must be a 2-D matrix; got shape {A.shape}")
    return A


def lowrank_plus_sparse(A, rank: int, sparsity: float, *, max_iter: int = 100, tol: float = 1e-9,
                        format: str = "csr", random_state=None) -> LowRankPlusSparse:  # noqa: A002
    """Split A ≈ U Vᵀ + S with rank(U Vᵀ) ≤ ``rank`` and S holding a ``sparsity`` fraction of the entries.

    Alternating projection (the GoDec / robust-PCA-by-projection scheme): S is the hard
    thresholding of A − U Vᵀ to its largest entries, U Vᵀ the truncated SVD of A − S, until the
    relative change of ‖A − U Vᵀ − S‖_F is below ``tol``:

        min ‖A − L − S‖_F  subject to  rank(L) ≤ r,  nnz(S) ≤ sparsity · m · n

    Parameters
    ----------
    A : (m, n) array-like (numpy, scipy.sparse, SparseTensor)
    rank : int, the rank r of the low-rank part (0 ≤ r ≤ min(m, n))
    sparsity : float in [0, 1], the fraction of A's entries stored in S (0.01 keeps the 1% largest residuals)
    max_iter, tol : stopping rule; a warning names ``max_iter`` when it is reached first
    format : the storage format of S
    random_state : seed of the randomized SVD used for matrices larger than 1024 on both sides

    Returns
    -------
    ``sparsedsl.lowrank(U, V) + S`` with U (m, r) and V (n, r) scaled by √σ each.

    References
    ----------
    T. Zhou and D. Tao, "GoDec: Randomized Low-rank & Sparse Matrix Decomposition in Noisy Case", ICML 2011.
    A. Han et al., "SLTrain: a sparse plus low-rank approach for parameter and memory efficient pretraining", 2024.

    >>> import numpy as np, sparsedsl as sd
    >>> rng = np.random.default_rng(0)
    >>> A = rng.standard_normal((30, 2)) @ rng.standard_normal((2, 20))
    >>> A[3, 4] += 50
    >>> fit = sd.fit.lowrank_plus_sparse(A, rank=2, sparsity=0.01)
    >>> bool(np.allclose(fit.to_numpy(), A, atol=1e-6))
    True
    """
    A = _matrix(A)
    m, n = A.shape
    if not isinstance(rank, (int, np.integer)) or not 0 <= rank <= min(m, n):
        raise ValueError(f"The 'rank' parameter of lowrank_plus_sparse() must be an int in [0, {min(m, n)}]. "
                         f"Got {rank!r}")
    if not 0 <= sparsity <= 1:
        raise ValueError(f"The 'sparsity' parameter of lowrank_plus_sparse() must be a fraction in [0, 1]. "
                         f"Got {sparsity!r}")
    keep = int(round(sparsity * m * n))
    norm = np.linalg.norm(A) or 1.0
    S = _largest(A, keep)  # sparse projection first (as AltProj does), so large outliers do not steer the SVD
    err_prev = np.inf
    rng = np.random.default_rng(random_state)
    for _ in range(max_iter):
        U, s, Vt = _truncated_svd(A - S, rank, rng)
        L = (U * s) @ Vt
        S = _largest(A - L, keep)
        err = np.linalg.norm(A - L - S) / norm
        if abs(err_prev - err) <= tol * max(err, 1e-300) or err <= tol:
            break
        err_prev = err
    else:
        warnings.warn(f"lowrank_plus_sparse() did not converge in max_iter={max_iter} iterations (relative "
                      f"change above tol={tol}); raise max_iter", stacklevel=2)
    U, s, Vt = _truncated_svd(A - S, rank, rng)
    root = np.sqrt(s)
    idx = np.nonzero(S)
    St = from_coordinates(np.array(idx, dtype=np.int64).reshape(2, -1), S[idx], S.shape, format)
    return LowRankPlusSparse(np.ascontiguousarray(U * root), np.ascontiguousarray(Vt.T * root), St)


def _truncated_svd(M, rank, rng, exact_below=1024):
    """The top ``rank`` singular triplets: exact for small matrices, else a randomized range finder with
    oversampling and power iterations (Halko, Martinsson & Tropp, "Finding structure with randomness", 2011)."""
    if min(M.shape) <= exact_below or rank >= min(M.shape) // 4:
        U, s, Vt = np.linalg.svd(M, full_matrices=False)
        return U[:, :rank], s[:rank], Vt[:rank]
    Q = np.linalg.qr(M @ rng.standard_normal((M.shape[1], rank + 10)))[0]
    for _ in range(4):
        Q = np.linalg.qr(M @ np.linalg.qr(M.T @ Q)[0])[0]
    U, s, Vt = np.linalg.svd(Q.T @ M, full_matrices=False)
    return (Q @ U)[:, :rank], s[:rank], Vt[:rank]


def _largest(R, keep):
    """R with all but its ``keep`` largest-magnitude entries set to zero."""
    out = np.zeros_like(R)
    if keep <= 0:
        return out
    flat = np.abs(R).reshape(-1)
    if keep >= flat.size:
        return R.copy()
    idx = np.argpartition(flat, flat.size - keep)[flat.size - keep:]
    out.reshape(-1)[idx] = R.reshape(-1)[idx]
    return out


def monarch(A, nblocks: int) -> Monarch:
    """The Monarch matrix nearest to A in Frobenius norm (closed form, no iterations).

    With R of ``nblocks`` = k blocks (p × q, q = n / k, p = q) and L of p blocks (s × k, s = m / p),
    M[(c,a),(k',b)] = L[a,c,k'] · R[k',a,b]: for each (a, k') the (c, b) slice of M is rank one, so
    the optimum is the best rank-one approximation (top singular pair) of each slice of A
    (Dao et al. 2022, the "analytical optimal solution" of the projection onto Monarch matrices).

    Parameters
    ----------
    A : (m, n) array-like
    nblocks : int, the number of blocks of R; must divide n, and n / nblocks must divide m
        (for the paper's square case n = m², nblocks = m).

    Returns
    -------
    ``sparsedsl.monarch(L, R)`` with L (p, s, k) and R (k, p, q).

    References
    ----------
    T. Dao et al., "Monarch: Expressive Structured Matrices for Efficient and Accurate Training", ICML 2022.

    >>> import numpy as np, sparsedsl as sd
    >>> M = sd.monarch(np.random.rand(4, 4, 4), np.random.rand(4, 4, 4))
    >>> bool(np.allclose(sd.fit.monarch(M.to_numpy(), 4).to_numpy(), M.to_numpy()))
    True
    """
    A = _matrix(A)
    m, n = A.shape
    if not isinstance(nblocks, (int, np.integer)) or nblocks < 1 or n % nblocks or m % (n // nblocks):
        raise ValueError(f"The 'nblocks' parameter of fit.monarch() must be a positive int dividing the number "
                         f"of columns {n}, with n / nblocks dividing the number of rows {m}. Got {nblocks!r} "
                         f"for shape {A.shape}")
    k = nblocks
    q = n // k
    p = q
    s = m // p
    slices = A.reshape(s, p, k, q).transpose(1, 2, 0, 3)  # [a, k', c, b]
    U, sig, Vt = np.linalg.svd(slices, full_matrices=False)
    root = np.sqrt(sig[..., 0])
    L = (U[..., :, 0] * root[..., None])  # [a, k', c]
    R = (Vt[..., 0, :] * root[..., None])  # [a, k', b]
    return Monarch(np.ascontiguousarray(L.transpose(0, 2, 1)), np.ascontiguousarray(R.transpose(1, 0, 2)))


def kron(A, shapes) -> Kron:
    """The Kronecker product nearest to A in Frobenius norm (Van Loan–Pitsianis).

    For two factors, A[(i1,i2),(j1,j2)] rearranged as a matrix over ((i1,j1), (i2,j2)) has the
    Kronecker product B ⊗ C as the rank-one matrix vec(B) vec(C)ᵀ, so the optimum is its top
    singular pair. More factors are fitted one at a time (B1 against the rest, then the rest),
    which is exact for an exact Kronecker product.

    Parameters
    ----------
    A : (m, n) array-like
    shapes : the factors' shapes [(m1, n1), (m2, n2), ...], with Π mk = m and Π nk = n

    Returns
    -------
    ``sparsedsl.kron(B1, B2, ...)``

    References
    ----------
    C. F. Van Loan and N. Pitsianis, "Approximation with Kronecker Products", 1993.

    >>> import numpy as np, sparsedsl as sd
    >>> B, C = np.random.rand(2, 3), np.random.rand(4, 5)
    >>> K = sd.fit.kron(np.kron(B, C), [(2, 3), (4, 5)])
    >>> bool(np.allclose(K.to_numpy(), np.kron(B, C)))
    True
    """
    A = _matrix(A)
    shapes = [tuple(int(v) for v in s) for s in shapes]
    if len(shapes) < 2 or any(len(s) != 2 or min(s) < 1 for s in shapes) or \
            (int(np.prod([s[0] for s in shapes])), int(np.prod([s[1] for s in shapes]))) != A.shape:
        raise ValueError(f"The 'shapes' parameter of fit.kron() must list two or more (rows, cols) pairs whose "
                         f"products are the shape {A.shape}. Got {shapes}")
    factors = []
    rest = A
    for m1, n1 in shapes[:-1]:
        m2, n2 = rest.shape[0] // m1, rest.shape[1] // n1
        R = rest.reshape(m1, m2, n1, n2).transpose(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)
        U, sig, Vt = np.linalg.svd(R, full_matrices=False)
        root = np.sqrt(sig[0])
        factors.append((U[:, 0] * root).reshape(m1, n1))
        rest = (Vt[0] * root).reshape(m2, n2)
    factors.append(rest)
    return Kron([np.ascontiguousarray(f) for f in factors])

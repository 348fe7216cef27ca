"""Sparse encoders for a fixed dictionary: proximal gradient with ℓ1, ℓ0, ℓq and CEL0 penalties, and
batched Cholesky-updated orthogonal matching pursuit.

Conventions (scikit-learn's): signals ``X`` are (n_samples, n_features), the dictionary ``D`` is
(n_atoms, n_features) with unit-norm rows, codes ``C`` are (n_samples, n_atoms) and ``X ≈ C D``.
Every encoder returns the codes as a csr SparseTensor. ``D`` may be a numpy or cupy array, a
SparseTensor or a composite such as ``sd.kron(A, B)``: it is only ever used through the kernels
X·Dᵀ and D·Dᵀ of ``_core``, never densified.
"""

from __future__ import annotations

import math

import numpy as np

from ... import SparseTensor
from . import _core
from ._core import CROSS, GRAM, MOMENTUM, RECON, STEP

__all__ = ["cel0", "fista", "iht", "ista", "lq", "nnz_at_error", "omp", "sparse_encode"]

METHODS = ("ista", "fista", "hard", "lq", "cel0", "omp")


def ista(X, D, *, alpha=1.0, max_iter=1000, tol=1e-6, init=None) -> SparseTensor:
    """ℓ1 sparse coding by iterative soft thresholding (ISTA).

    .. math:: \\min_C \\tfrac12\\|X - C D\\|_F^2 + \\alpha \\|C\\|_1

    Parameters
    ----------
    X : array (n_samples, n_features) — signals (numpy or cupy).
    D : array, SparseTensor or composite (n_atoms, n_features) — the dictionary, unit-norm rows.
    alpha : float > 0 — the ℓ1 weight (scikit-learn's ``sparse_encode`` convention).
    max_iter : int — iteration limit; a ConvergenceWarning names it when reached.
    tol : float — stop when ‖C_k − C_{k−1}‖_F ≤ tol·‖C_k‖_F.
    init : array (n_samples, n_atoms), optional — starting codes (warm start).

    Returns
    -------
    C : SparseTensor (n_samples, n_atoms), csr.

    References
    ----------
    Daubechies, Defrise, De Mol, "An iterative thresholding algorithm for linear inverse problems
    with a sparsity constraint", 2004.

    >>> D = np.eye(3); ista(np.array([[2.0, 0.5, -3.0]]), D, alpha=1.0).todense()
    array([[ 1.,  0., -2.]])
    """
    return _proximal(X, D, "l1", alpha=alpha, max_iter=max_iter, tol=tol, init=init, accelerate=False)


def fista(X, D, *, alpha=1.0, max_iter=1000, tol=1e-6, init=None) -> SparseTensor:
    """ℓ1 sparse coding by FISTA (ISTA with Nesterov momentum, O(1/k²)).

    .. math:: \\min_C \\tfrac12\\|X - C D\\|_F^2 + \\alpha \\|C\\|_1

    Parameters and Returns as :func:`ista`.

    References
    ----------
    Beck, Teboulle, "A Fast Iterative Shrinkage-Thresholding Algorithm for Linear Inverse Problems", 2009;
    O'Donoghue, Candès, "Adaptive Restart for Accelerated Gradient Schemes", 2015 (the momentum restart).

    >>> fista(np.array([[2.0, 0.5, -3.0]]), np.eye(3), alpha=1.0).todense()
    array([[ 1.,  0., -2.]])
    """
    return _proximal(X, D, "l1", alpha=alpha, max_iter=max_iter, tol=tol, init=init, accelerate=True)


def iht(X, D, *, alpha=1.0, max_iter=1000, tol=1e-6, init=None) -> SparseTensor:
    """ℓ0-penalised sparse coding by iterative hard thresholding.

    .. math:: \\min_C \\tfrac12\\|X - C D\\|_F^2 + \\alpha \\|C\\|_0

    Each step keeps the entries of the gradient step whose magnitude exceeds sqrt(2·alpha·step).
    Parameters and Returns as :func:`ista` (non-convex: the result is a stationary point).

    References
    ----------
    Blumensath, Davies, "Iterative Thresholding for Sparse Approximations", 2008.

    >>> iht(np.array([[2.0, 0.5, -3.0]]), np.eye(3), alpha=1.0).todense()
    array([[ 2.,  0., -3.]])
    """
    return _proximal(X, D, "l0", alpha=alpha, max_iter=max_iter, tol=tol, init=init, accelerate=False)


def lq(X, D, *, alpha=1.0, q=0.5, max_iter=1000, tol=1e-6, init=None) -> SparseTensor:
    """ℓq-penalised sparse coding (0 < q < 1) by generalised iterated shrinkage.

    .. math:: \\min_C \\tfrac12\\|X - C D\\|_F^2 + \\alpha \\sum |C_{ik}|^q

    The proximal map is the generalised soft threshold: zero below
    τ = (2λ(1−q))^{1/(2−q)} + λq(2λ(1−q))^{(q−1)/(2−q)}, λ = alpha·step, else three fixed-point steps.

    Parameters
    ----------
    q : float in (0, 1) — the exponent; others as :func:`ista`.

    Returns
    -------
    C : SparseTensor (n_samples, n_atoms), csr.

    References
    ----------
    Zuo, Meng, Zhang, Feng, Zhang, "A Generalized Iterated Shrinkage Algorithm for Non-convex
    Sparse Coding", 2013.

    >>> lq(np.array([[2.0, 0.1, -3.0]]), np.eye(3), alpha=0.5, q=0.5).todense().round(3)
    array([[ 1.814,  0.   , -2.852]])
    """
    _core.check_positive("q", q, upper=1)
    return _proximal(X, D, "lq", alpha=alpha, max_iter=max_iter, tol=tol, init=init, accelerate=False, q=q)


def cel0(X, D, *, alpha=1.0, max_iter=1000, tol=1e-6, init=None) -> SparseTensor:
    """Sparse coding with the continuous exact ℓ0 relaxation (CEL0) by forward-backward splitting.

    .. math:: \\min_C \\tfrac12\\|X - C D\\|_F^2 + \\sum_{ik} \\alpha - \\tfrac{\\|d_k\\|^2}{2}
              (|C_{ik}| - \\theta_k)^2 1\\{|C_{ik}| \\le \\theta_k\\}, \\quad \\theta_k = \\sqrt{2\\alpha}/\\|d_k\\|

    CEL0 has the same global minimisers as the ℓ0 problem ``½‖X − CD‖² + alpha‖C‖₀`` and fewer
    local ones. Parameters and Returns as :func:`ista`.

    References
    ----------
    Soubies, Blanc-Féraud, Aubert, "A Continuous Exact ℓ0 Penalty (CEL0) for Least Squares
    Regularized Problem", 2015.

    >>> cel0(np.array([[2.0, 0.5, -3.0]]), np.eye(3), alpha=1.0).todense()
    array([[ 2.,  0., -3.]])
    """
    return _proximal(X, D, "cel0", alpha=alpha, max_iter=max_iter, tol=tol, init=init, accelerate=False)


class _Problem:
    """X·Dᵀ, D·Dᵀ and the Lipschitz constant of one (X, D) pair, computed once and shared by every
    solve on it (a warm-started alpha path re-solved 100 times paid these products each time)."""

    def __init__(self, X, D):
        self.X = _core.check_signals(X, D)
        self.xp = xp = _core.array_module(self.X, D)
        self.B = CROSS(X=self.X, D=D)                 # X·Dᵀ
        self.G = GRAM(D=D)                            # D·Dᵀ (n_atoms²)
        self.w = xp.diagonal(self.G).copy()           # squared atom norms
        self.lip = float(xp.linalg.eigvalsh(self.G)[-1])   # Lipschitz constant of the smooth part
        self.x2 = float((self.X * self.X).sum())

    def residual_norm(self, Z) -> float:
        """‖X − Z D‖_F from the products: ‖X‖² − 2⟨Z, X·Dᵀ⟩ + ⟨Z·G, Z⟩."""
        r2 = self.x2 - 2.0 * float((Z * self.B).sum()) + float((RECON(C=Z, D=self.G) * Z).sum())
        return math.sqrt(max(r2, 0.0))


def _proximal(X, D, penalty, *, alpha, max_iter, tol, init, accelerate, q=0.5, problem=None, dense=False):
    _core.check_positive("alpha", alpha, allow_zero=True)
    _core.check_positive("max_iter", max_iter, integer=True)
    _core.check_positive("tol", tol, allow_zero=True)
    pb = _Problem(X, D) if problem is None else problem
    xp, B, G, w, lip = pb.xp, pb.B, pb.G, pb.w, pb.lip
    step = 1.0 / lip
    kernel, extra = STEP[penalty], {}
    if penalty == "l1":
        extra = {"t": alpha * step}
    elif penalty == "l0":
        extra = {"t": math.sqrt(2.0 * alpha * step)}
    elif penalty == "cel0":
        step = 0.999 / lip                    # the CEL0 prox needs step·‖d_k‖² < 1
        extra = {"a": step * xp.sqrt(2.0 * alpha * w), "b": 1.0 - step * w}
    elif penalty == "lq":
        lam = alpha * step
        base = 2.0 * lam * (1.0 - q)
        tau = base ** (1.0 / (2.0 - q)) + lam * q * base ** ((q - 1.0) / (2.0 - q)) if lam > 0 else 0.0
        extra = {"t": lam, "q": float(q), "tau": tau}
    if isinstance(init, SparseTensor):
        init = init.to("cpu").todense()
    Z = xp.zeros_like(B) if init is None else xp.array(init, dtype=B.dtype)
    if Z.shape != B.shape:
        raise ValueError(f"init must be (n_samples, n_atoms) = {B.shape}; got {Z.shape}")
    # Each sample is its own problem: a row stops once its own relative change is below tol (the rest
    # keep iterating on the rows still moving), so easy samples stop paying for the hardest one. On the
    # lasso benchmark (1000 patches, 100 atoms, alpha 0.5, tol 1e-5) FISTA did 184,000 row-iterations
    # against 274,000 (274 iterations of every row) when all rows stopped together.
    Y, t_k = Z.copy(), 1.0
    active = None  # None: every row (no gathers)
    for _ in range(max_iter):
        Ya, Za = (Y, Z) if active is None else (Y[active], Z[active])
        Ba = B if active is None else B[active]
        Z_new = kernel(Y=Ya, G=G, B=Ba, s=step, **extra)
        if accelerate:
            # adaptive restart (O'Donoghue & Candès 2015): drop the momentum when the step went uphill
            # (⟨Y − Z_new, Z_new − Z⟩ > 0); on patch problems it cut FISTA's iterations several-fold. An
            # elementwise product and sum, not BLAS's dot: on the loaded 2-core machine np.vdot of 300 x 100
            # took 6 ms (its threads woken at each call) against 0.05 ms, and FISTA at 300 patches 1.5 s
            # against 0.13 s.
            if float(xp.sum((Ya - Z_new) * (Z_new - Za))) > 0:
                t_k = 1.0
            t_next = (1.0 + math.sqrt(1.0 + 4.0 * t_k * t_k)) / 2.0
            Y_new = MOMENTUM(Z=Z_new, P=Za, m=(t_k - 1.0) / t_next)
            t_k = t_next
        else:
            Y_new = Z_new
        moving = xp.linalg.norm(Z_new - Za, axis=1) > tol * xp.maximum(xp.linalg.norm(Z_new, axis=1), 1e-300)
        if active is None:
            Z, Y = Z_new, Y_new
            active = xp.flatnonzero(moving)
        else:
            Z[active], Y[active] = Z_new, Y_new
            active = active[moving]
        if active.size == 0:
            break
    else:
        _core.warn_not_converged(f"{penalty} proximal gradient", max_iter)
    return Z if dense else _core.as_codes(Z)


# ---- orthogonal matching pursuit ----------------------------------------------------------------


def omp(X, D, *, n_nonzero_coefs=None, tol=None) -> SparseTensor:
    """Orthogonal matching pursuit, batched over samples, with Cholesky updates of the Gram system.

    .. math:: \\min_C \\|X - C D\\|_F^2 \\ \\text{s.t.}\\ \\|C_{i:}\\|_0 \\le k \\quad
              (\\text{or until } \\|x_i - c_i D\\|^2 \\le \\text{tol})

    All samples advance together: each step picks, per sample, the atom most correlated with its
    residual, extends that sample's Cholesky factor of D_S D_Sᵀ by one row and re-solves; residual
    correlations are ``X·Dᵀ − C·(D·Dᵀ)`` with the codes C sparse (a csr × dense kernel).

    Parameters
    ----------
    X : array (n_samples, n_features).
    D : array, SparseTensor or composite (n_atoms, n_features), unit-norm rows.
    n_nonzero_coefs : int, optional — atoms per sample; default max(n_features // 10, 1) as scikit-learn.
    tol : float, optional — squared residual norm to reach; overrides n_nonzero_coefs.

    Returns
    -------
    C : SparseTensor (n_samples, n_atoms), csr.

    References
    ----------
    Pati, Rezaiifar, Krishnaprasad, "Orthogonal Matching Pursuit: Recursive Function Approximation
    with Applications to Wavelet Decomposition", 1993; Rubinstein, Zibulevsky, Elad, "Efficient
    Implementation of the K-SVD Algorithm using Batch Orthogonal Matching Pursuit", 2008.

    >>> omp(np.array([[0.0, 2.0, 0.5]]), np.eye(3), n_nonzero_coefs=1).todense()
    array([[0., 2., 0.]])
    """
    X = _core.check_signals(X, D)
    n_atoms, n_features = _core.dict_shape(D)
    if tol is not None:
        _core.check_positive("tol", tol, allow_zero=True)
        s_max = min(n_features, n_atoms)
    else:
        if n_nonzero_coefs is None:
            n_nonzero_coefs = max(int(0.1 * n_features), 1)
        _core.check_positive("n_nonzero_coefs", n_nonzero_coefs, integer=True)
        if n_nonzero_coefs > min(n_features, n_atoms):
            raise ValueError(f"The 'n_nonzero_coefs' parameter must be <= min(n_features, n_atoms) = "
                             f"{min(n_features, n_atoms)}. Got {n_nonzero_coefs}.")
        s_max = n_nonzero_coefs
    xp = _core.array_module(X, D)
    alpha = CROSS(X=X, D=D)            # X·Dᵀ
    G = GRAM(D=D)
    n = X.shape[0]
    idx = xp.zeros((n, s_max), dtype=np.int64)
    gamma = xp.zeros((n, s_max), dtype=alpha.dtype)
    count = xp.zeros(n, dtype=np.int64)
    L = xp.zeros((n, s_max, s_max), dtype=alpha.dtype)
    rows = xp.arange(n)
    active = rows
    corr = alpha
    res2 = (X * X).sum(axis=1) if tol is not None else None
    if tol is not None:
        active = rows[res2 > tol]
    dependent = False
    for t in range(s_max):
        if active.size == 0:
            break
        k = xp.argmax(xp.abs(corr[active]), axis=1)
        if t == 0:
            L[active, 0, 0] = xp.sqrt(G[k, k])
        else:
            b = G[idx[active, :t], k[:, None]]                        # (a, t): G[S, k]
            w = _forward(L[active, :t, :t], b)
            d2 = G[k, k] - (w * w).sum(axis=1)
            ok = d2 > np.finfo(alpha.dtype).eps * 10
            if not bool(ok.all()):
                dependent = True                                   # atom already spanned: stop that sample
                active, k, w, d2 = active[ok], k[ok], w[ok], d2[ok]
                if active.size == 0:
                    break
            L[active, t, :t] = w
            L[active, t, t] = xp.sqrt(d2)
        idx[active, t] = k
        count[active] = t + 1
        rhs = alpha[active[:, None], idx[active, : t + 1]]           # alpha restricted to the support
        La = L[active, : t + 1, : t + 1]
        g = _backward(La, _forward(La, rhs))
        gamma[active, : t + 1] = g
        if tol is not None:
            r2 = res2[active] - (g * rhs).sum(axis=1)
            active = active[r2 > tol]
        if t + 1 < s_max and active.size:
            codes = _support_codes(idx[active, : t + 1], gamma[active, : t + 1], n_atoms, xp)
            corr = xp.zeros_like(alpha)
            corr[active] = alpha[active] - RECON(C=codes, D=G)      # residual correlations X·Dᵀ − C·G
    if dependent:
        import warnings

        warnings.warn("omp: an atom selected twice (the residual lies in the span of the chosen atoms); "
                      "those samples keep fewer than n_nonzero_coefs atoms", RuntimeWarning, stacklevel=2)
    keep = xp.arange(s_max)[None, :] < count[:, None]
    gamma = xp.where(keep, gamma, 0.0)
    return _support_codes(idx, gamma, n_atoms, xp)     # on the GPU when the inputs were


def _forward(L, b):
    """Solve L w = b for a batch of lower-triangular L (a, t, t), b (a, t)."""
    w = b.copy()
    for j in range(b.shape[1]):
        if j:
            w[:, j] -= (L[:, j, :j] * w[:, :j]).sum(axis=1)
        w[:, j] /= L[:, j, j]
    return w


def _backward(L, b):
    """Solve Lᵀ w = b for a batch of lower-triangular L."""
    w = b.copy()
    t = b.shape[1]
    for j in range(t - 1, -1, -1):
        if j < t - 1:
            w[:, j] -= (L[:, j + 1:, j] * w[:, j + 1:]).sum(axis=1)
        w[:, j] /= L[:, j, j]
    return w


def _support_codes(idx, val, n_atoms, xp):
    if xp is np:
        return _core.codes_from_support(idx, val, n_atoms)
    return _core.codes_from_support(_core.to_numpy(idx), _core.to_numpy(val), n_atoms).to("cuda")


# ---- one entry ----------------------------------------------------------------------------------


def sparse_encode(X, D, *, method="omp", alpha=1.0, n_nonzero_coefs=None, max_iter=1000, tol=None,
                  q=0.5, init=None) -> SparseTensor:
    """Sparse codes of ``X`` over the dictionary ``D`` by one of the encoders of this module.

    .. math:: X \\approx C D, \\quad C \\text{ sparse}

    Parameters
    ----------
    X : array (n_samples, n_features).
    D : array, SparseTensor or composite (n_atoms, n_features), unit-norm rows.
    method : "ista", "fista" (ℓ1), "hard" (ℓ0, iterative hard thresholding), "lq" (ℓq, 0 < q < 1),
        "cel0" (continuous exact ℓ0) or "omp" (orthogonal matching pursuit).
    alpha : float — penalty weight (not used by "omp").
    n_nonzero_coefs : int, optional — atoms per sample for "omp".
    max_iter : int — iteration limit of the proximal methods.
    tol : float, optional — proximal methods: relative change to stop at (default 1e-6); "omp":
        squared residual norm (overrides n_nonzero_coefs).
    q : float — the exponent of "lq".
    init : array, optional — warm start of the proximal methods.

    Returns
    -------
    C : SparseTensor (n_samples, n_atoms), csr.

    References
    ----------
    Mairal, Bach, Ponce, Sapiro, "Online Learning for Matrix Factorization and Sparse Coding", 2010
    (the interface); each method cites its own paper.

    >>> sparse_encode(np.array([[0.0, 2.0, 0.5]]), np.eye(3), method="omp", n_nonzero_coefs=1).todense()
    array([[0., 2., 0.]])
    """
    _core.check_choice("method", method, METHODS)
    if method == "omp":
        return omp(X, D, n_nonzero_coefs=n_nonzero_coefs, tol=tol)
    opts = {"alpha": alpha, "max_iter": max_iter, "tol": 1e-6 if tol is None else tol, "init": init}
    if method == "lq":
        return lq(X, D, q=q, **opts)
    return {"ista": ista, "fista": fista, "hard": iht, "cel0": cel0}[method](X, D, **opts)


def nnz_at_error(X, D, *, method, target, alphas=None, max_iter=200, tol=1e-4, q=0.5) -> float:
    """Mean nonzeros per code at a given relative reconstruction error, along a warm-started path.

    .. math:: \\text{nnz}(C_{\\alpha^*})/n, \\quad
              \\alpha^* = \\max\\{\\alpha : \\|X - C_\\alpha D\\|_F \\le \\text{target}\\,\\|X\\|_F\\}

    Decreasing ``alpha`` over a geometric grid (each solve warm-started from the last: continuation),
    the codes of the first alpha that reaches ``target`` are counted — the measurement behind
    "Beyond ℓ1": at matched error, which penalty gives the sparser code.

    Parameters
    ----------
    X, D : signals and dictionary as :func:`sparse_encode`.
    method : a proximal method of :func:`sparse_encode` ("ista", "fista", "hard", "lq", "cel0").
    target : float in (0, 1) — relative error ‖X − CD‖_F / ‖X‖_F to reach.
    alphas : decreasing array, optional — the grid; default 100 values from max|X·Dᵀ|² down by 10⁻⁴.

    Returns
    -------
    float — nnz(C) / n_samples at the first alpha reaching ``target`` (nan if none does).

    References
    ----------
    Rentzeperis, Calatroni, Perrinet, Kowalski, "Beyond ℓ1 sparse coding in V1", 2023.

    >>> round(nnz_at_error(np.array([[2.0, 0.5]]), np.eye(2), method="hard", target=0.3), 1)
    1.0
    """
    _core.check_choice("method", method, ("ista", "fista", "hard", "lq", "cel0"))
    _core.check_positive("target", target, upper=1)
    pb = _Problem(X, D)
    xp = pb.xp
    if alphas is None:
        top = float(xp.abs(pb.B).max()) ** 2
        alphas = np.geomspace(top, top * 1e-4, 100)
    penalty = {"ista": "l1", "fista": "l1", "hard": "l0", "lq": "lq", "cel0": "cel0"}[method]
    norm = math.sqrt(pb.x2)
    import warnings

    Z = None
    for a in alphas:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", _core.ConvergenceWarning)
            Z = _proximal(None, None, penalty, alpha=float(a), max_iter=max_iter, tol=tol, init=Z,
                          accelerate=method == "fista", q=q, problem=pb, dense=True)
        if pb.residual_norm(Z) <= target * norm:
            return float(xp.count_nonzero(Z)) / Z.shape[0]
    return float("nan")

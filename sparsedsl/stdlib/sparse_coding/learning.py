"""Dictionary learning: alternating (MOD, K-SVD) and online mini-batch, any encoder as the coding step.

The per-sample products — coding (X·Dᵀ, C·G), the sufficient statistics Cᵀ·C and Cᵀ·X of the
codes, the residual X − C·D — are sparsedsl kernels with the codes as csr SparseTensors. What is
left in numpy is small and independent of n_samples: the (n_atoms × n_atoms) MOD solve, the
block-coordinate atom updates of the online method, K-SVD's rank-1 SVDs of one atom's residual.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ... import SparseTensor, asformat
from . import _core
from ._core import CODE_GRAM, CODE_T_X, RECON
from ._estimator import BaseEstimator, TransformerMixin
from .encoders import METHODS, sparse_encode

__all__ = ["DictionaryLearning", "MiniBatchDictionaryLearning", "dict_learning", "dict_learning_online"]

UPDATES = ("mod", "ksvd")


def dict_learning(X, *, n_components, method="omp", update="ksvd", alpha=1.0, n_nonzero_coefs=None,
                  max_iter=30, tol=1e-6, dict_init=None, random_state=None, verbose=False):
    """Alternating dictionary learning: sparse-code all signals, then update the dictionary.

    .. math:: \\min_{C, D:\\ \\|d_k\\|=1} \\tfrac12\\|X - C D\\|_F^2 + \\alpha\\,\\Omega(C)

    with Ω the penalty of ``method`` (ℓ1 for "ista"/"fista", ℓ0 for "hard"/"cel0", ℓq for "lq",
    a count constraint for "omp"). ``update="mod"`` solves D = (CᵀC)⁻¹CᵀX (method of optimal
    directions); ``update="ksvd"`` replaces each atom and its coefficients by the leading singular
    pair of the residual of the signals that use it.

    Parameters
    ----------
    X : array (n_samples, n_features).
    n_components : int — number of atoms.
    method : encoder of :func:`sparse_encode` used for the coding step.
    update : "mod" or "ksvd".
    alpha, n_nonzero_coefs : passed to the encoder.
    max_iter : int — alternations; tol : float — stop when the objective improves by less than
        tol (relative).
    dict_init : array (n_components, n_features), optional. random_state : seed or Generator.
    verbose : bool — a tqdm progress bar.

    Returns
    -------
    C : SparseTensor (n_samples, n_components), csr; D : ndarray (n_components, n_features);
    history : list of objective values, one per alternation.

    References
    ----------
    Engan, Aase, Husøy, "Method of Optimal Directions for Frame Design", 1999; Aharon, Elad,
    Bruckstein, "K-SVD: An Algorithm for Designing Overcomplete Dictionaries for Sparse
    Representation", 2006.

    >>> X = np.random.default_rng(0).standard_normal((50, 8))
    >>> C, D, hist = dict_learning(X, n_components=12, n_nonzero_coefs=2, max_iter=5, random_state=0)
    >>> D.shape, C.shape, hist[-1] <= hist[0]
    ((12, 8), (50, 12), True)
    """
    _core.check_positive("n_components", n_components, integer=True)
    _core.check_choice("method", method, METHODS)
    _core.check_choice("update", update, UPDATES)
    _core.check_positive("max_iter", max_iter, integer=True)
    _core.check_positive("tol", tol, allow_zero=True)
    X = _core.check_signals(X, None)
    rng = _core.random_state(random_state)
    D = _initial_dictionary(X, n_components, dict_init, rng)
    history, C = [], None
    for _ in _core.progress(range(max_iter), verbose=verbose, desc=f"dict_learning ({update})"):
        C = _encode(X, D, method, alpha, n_nonzero_coefs, init=C if method != "omp" else None)
        if update == "mod":
            D = _mod_update(X, C, D, rng)
        else:
            C, D = _ksvd_update(X, C, D, rng)
        history.append(_objective(X, C, D, method, alpha))
        if len(history) > 1 and history[-2] - history[-1] <= tol * abs(history[-2]):
            break
    else:
        if max_iter > 1 and tol > 0:
            _core.warn_not_converged("dict_learning", max_iter)
    return C, D, history


def dict_learning_online(X, *, n_components, method="omp", alpha=1.0, n_nonzero_coefs=None, batch_size=256,
                         max_iter=10, shuffle=True, dict_init=None, random_state=None, verbose=False):
    """Online dictionary learning over mini-batches (Mairal et al.): code a batch, fold it into the
    statistics A = Σ CᵀC and B = Σ CᵀX (with scikit-learn's forgetting factor), then update every
    atom by one pass of block coordinate descent on ½tr(DᵀAD) − tr(DᵀB).

    .. math:: \\min_{D:\\ \\|d_k\\|=1} \\ \\mathbb{E}_x \\min_c \\tfrac12\\|x - c D\\|^2 + \\alpha\\,\\Omega(c)

    Parameters
    ----------
    X : array (n_samples, n_features).
    n_components : int. method, alpha, n_nonzero_coefs : the coding step (:func:`sparse_encode`).
    batch_size : int. max_iter : int — passes over X (epochs). shuffle : bool.
    dict_init, random_state, verbose : as :func:`dict_learning`.

    Returns
    -------
    D : ndarray (n_components, n_features); history : list of the mean per-sample objective of each batch.

    References
    ----------
    Mairal, Bach, Ponce, Sapiro, "Online Learning for Matrix Factorization and Sparse Coding", 2010.

    >>> X = np.random.default_rng(0).standard_normal((300, 8))
    >>> D, hist = dict_learning_online(X, n_components=12, n_nonzero_coefs=2, batch_size=50, random_state=0)
    >>> D.shape
    (12, 8)
    """
    _core.check_positive("n_components", n_components, integer=True)
    _core.check_choice("method", method, METHODS)
    _core.check_positive("batch_size", batch_size, integer=True)
    _core.check_positive("max_iter", max_iter, integer=True)
    X = _core.check_signals(X, None)
    rng = _core.random_state(random_state)
    state = _OnlineState(_initial_dictionary(X, n_components, dict_init, rng), batch_size)
    n = X.shape[0]
    n_batches = max(n // batch_size, 1)
    bar = _core.progress(range(max_iter * n_batches), verbose=verbose, desc="dict_learning_online")
    order = np.arange(n)
    for step in bar:
        if step % n_batches == 0 and shuffle:
            order = rng.permutation(n)
        b = step % n_batches
        batch = X[order[b * batch_size:(b + 1) * batch_size]]
        state.update(batch, method, alpha, n_nonzero_coefs, rng)
    return state.D, state.history


class _OnlineState:
    """The running statistics of online dictionary learning (no signal is stored)."""

    def __init__(self, D, batch_size):
        k = D.shape[0]
        self.D, self.batch_size, self.step = D, batch_size, 0
        self.A = np.zeros((k, k))
        self.B = np.zeros_like(D)
        self.history = []

    def update(self, batch, method, alpha, n_nonzero_coefs, rng):
        C = _encode(batch, self.D, method, alpha, n_nonzero_coefs)
        self.history.append(_objective(batch, C, self.D, method, alpha) / batch.shape[0])
        bs = self.batch_size
        theta = (self.step + 1) * bs if self.step < bs - 1 else bs * bs + self.step + 1 - bs
        beta = (theta + 1 - bs) / (theta + 1)                       # scikit-learn's forgetting factor
        self.A = beta * self.A + _core.to_numpy(CODE_GRAM(C=C)) / len(batch)
        self.B = beta * self.B + _core.to_numpy(CODE_T_X(C=C, X=batch)) / len(batch)
        self.D = _bcd_atoms(self.D, self.A, self.B, batch, rng)
        self.step += 1


def _bcd_atoms(D, A, B, batch, rng):
    """One pass of block coordinate descent over the atoms; an unused atom restarts at a signal."""
    D = D.copy()
    for k in range(D.shape[0]):
        if A[k, k] > 1e-10:
            D[k] += (B[k] - A[k] @ D) / A[k, k]
        else:
            D[k] = _core.to_numpy(batch[rng.integers(len(batch))]) + 1e-6 * rng.standard_normal(D.shape[1])
        D[k] /= max(np.linalg.norm(D[k]), 1e-12)
    return D


# ---- estimators ---------------------------------------------------------------------------------


class _Transform(TransformerMixin):
    def transform(self, X):
        """Sparse codes of X over ``components_`` (a csr SparseTensor) with the transform_* options."""
        if not hasattr(self, "components_"):
            raise ValueError(f"This {type(self).__name__} is not fitted yet; call fit(X) first")
        alpha = self.alpha if self.transform_alpha is None else self.transform_alpha
        k = self.transform_n_nonzero_coefs
        k = self.n_nonzero_coefs if k is None else k
        return _encode(X, self.components_, self.transform_algorithm, alpha, k)

    def _n_components(self, X):
        n = self.n_components
        return np.shape(X)[-1] if n is None else n


class DictionaryLearning(_Transform, BaseEstimator):
    """Alternating dictionary learning (MOD or K-SVD) as a scikit-learn estimator.

    .. math:: \\min_{C, D:\\ \\|d_k\\|=1} \\tfrac12\\|X - C D\\|_F^2 + \\alpha\\,\\Omega(C)

    Parameters
    ----------
    n_components : int, optional — atoms (default n_features).
    alpha, n_nonzero_coefs, fit_algorithm, update, max_iter, tol : see :func:`dict_learning`
        (``fit_algorithm`` is its ``method``).
    transform_algorithm, transform_n_nonzero_coefs, transform_alpha : the encoder of transform().
    dict_init, random_state, verbose : see :func:`dict_learning`.

    Attributes
    ----------
    components_ : ndarray (n_components, n_features). history_ : objective per alternation.
    n_iter_ : int.

    References
    ----------
    Aharon, Elad, Bruckstein, "K-SVD: An Algorithm for Designing Overcomplete Dictionaries for
    Sparse Representation", 2006; Engan, Aase, Husøy, "Method of Optimal Directions for Frame Design", 1999.

    >>> X = np.random.default_rng(0).standard_normal((40, 6))
    >>> DictionaryLearning(8, n_nonzero_coefs=2, max_iter=3, random_state=0).fit(X).components_.shape
    (8, 6)
    """

    def __init__(self, n_components=None, *, alpha=1.0, n_nonzero_coefs=None, fit_algorithm="omp", update="ksvd",
                 max_iter=30, tol=1e-6, transform_algorithm="omp", transform_n_nonzero_coefs=None,
                 transform_alpha=None, dict_init=None, random_state=None, verbose=False):
        self.n_components = n_components
        self.alpha = alpha
        self.n_nonzero_coefs = n_nonzero_coefs
        self.fit_algorithm = fit_algorithm
        self.update = update
        self.max_iter = max_iter
        self.tol = tol
        self.transform_algorithm = transform_algorithm
        self.transform_n_nonzero_coefs = transform_n_nonzero_coefs
        self.transform_alpha = transform_alpha
        self.dict_init = dict_init
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        self.fit_transform(X)
        return self

    def fit_transform(self, X, y=None):
        """Fit and return the codes of the last alternation (no second encoding pass)."""
        _core.check_choice("transform_algorithm", self.transform_algorithm, METHODS)
        C, D, history = dict_learning(
            X, n_components=self._n_components(X), method=self.fit_algorithm, update=self.update, alpha=self.alpha,
            n_nonzero_coefs=self.n_nonzero_coefs, max_iter=self.max_iter, tol=self.tol, dict_init=self.dict_init,
            random_state=self.random_state, verbose=self.verbose)
        self.components_, self.history_, self.n_iter_ = D, history, len(history)
        return C


class MiniBatchDictionaryLearning(_Transform, BaseEstimator):
    """Online mini-batch dictionary learning (Mairal et al.) as a scikit-learn estimator.

    .. math:: \\min_{D:\\ \\|d_k\\|=1} \\ \\mathbb{E}_x \\min_c \\tfrac12\\|x - c D\\|^2 + \\alpha\\,\\Omega(c)

    Parameters
    ----------
    n_components : int, optional — atoms (default n_features).
    alpha, n_nonzero_coefs : the coding step; fit_algorithm : its encoder (default "omp").
    batch_size : int. max_iter : int — epochs. shuffle : bool.
    transform_algorithm, transform_n_nonzero_coefs, transform_alpha : the encoder of transform().
    dict_init, random_state, verbose : as :class:`DictionaryLearning`.

    Attributes
    ----------
    components_ : ndarray (n_components, n_features). history_ : mean objective per batch.
    n_steps_ : int — batches seen.

    References
    ----------
    Mairal, Bach, Ponce, Sapiro, "Online Learning for Matrix Factorization and Sparse Coding", 2010.

    >>> X = np.random.default_rng(0).standard_normal((200, 6))
    >>> MiniBatchDictionaryLearning(8, n_nonzero_coefs=2, batch_size=50, random_state=0).fit(X).components_.shape
    (8, 6)
    """

    def __init__(self, n_components=None, *, alpha=1.0, n_nonzero_coefs=None, fit_algorithm="omp", batch_size=256,
                 max_iter=10, shuffle=True, transform_algorithm="omp", transform_n_nonzero_coefs=None,
                 transform_alpha=None, dict_init=None, random_state=None, verbose=False):
        self.n_components = n_components
        self.alpha = alpha
        self.n_nonzero_coefs = n_nonzero_coefs
        self.fit_algorithm = fit_algorithm
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.transform_algorithm = transform_algorithm
        self.transform_n_nonzero_coefs = transform_n_nonzero_coefs
        self.transform_alpha = transform_alpha
        self.dict_init = dict_init
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        _core.check_choice("transform_algorithm", self.transform_algorithm, METHODS)
        D, history = dict_learning_online(
            X, n_components=self._n_components(X), method=self.fit_algorithm, alpha=self.alpha,
            n_nonzero_coefs=self.n_nonzero_coefs, batch_size=self.batch_size, max_iter=self.max_iter,
            shuffle=self.shuffle, dict_init=self.dict_init, random_state=self.random_state, verbose=self.verbose)
        self.components_, self.history_, self.n_steps_ = D, history, len(history)
        return self

    def partial_fit(self, X, y=None):
        """Update the dictionary with one mini-batch X (the statistics persist between calls)."""
        X = _core.check_signals(X, None)
        if not hasattr(self, "_state"):
            self._rng = _core.random_state(self.random_state)
            D0 = _initial_dictionary(X, self._n_components(X), self.dict_init, self._rng)
            self._state = _OnlineState(D0, self.batch_size)
        self._state.update(X, self.fit_algorithm, self.alpha, self.n_nonzero_coefs, self._rng)
        self.components_, self.history_, self.n_steps_ = self._state.D, self._state.history, self._state.step
        return self


# ---- pieces -------------------------------------------------------------------------------------


def _encode(X, D, method, alpha, n_nonzero_coefs, init=None) -> SparseTensor:
    if method == "omp":
        return sparse_encode(X, D, method="omp", n_nonzero_coefs=n_nonzero_coefs)
    import warnings

    with warnings.catch_warnings():  # inexact inner solves are expected inside an alternation
        warnings.simplefilter("ignore", _core.ConvergenceWarning)
        return sparse_encode(X, D, method=method, alpha=alpha, max_iter=200, tol=1e-4, init=init)


def _objective(X, C, D, method, alpha) -> float:
    """½‖X − CD‖² + alpha·Ω(C) (Ω = 0 for omp, whose sparsity is a constraint)."""
    xp = _core.array_module(X)
    R = X - RECON(C=C, D=D)
    v = _core.to_numpy(C.values)
    penalty = {"omp": 0.0, "ista": np.abs(v).sum(), "fista": np.abs(v).sum(), "hard": np.count_nonzero(v),
               "cel0": np.count_nonzero(v), "lq": (np.abs(v) ** 0.5).sum()}[method]
    return 0.5 * float(xp.sum(R * R)) + alpha * float(penalty)


def _initial_dictionary(X, n_components, dict_init, rng):
    if dict_init is not None:
        D = np.array(_core.to_numpy(dict_init), dtype=float)
        if D.shape != (n_components, X.shape[1]):
            raise ValueError(f"dict_init must be (n_components, n_features) = {(n_components, X.shape[1])}; "
                             f"got {D.shape}")
    else:
        Xh = _core.to_numpy(X)
        D = Xh[rng.choice(len(Xh), n_components, replace=len(Xh) < n_components)].astype(float)
        D += 1e-6 * rng.standard_normal(D.shape)
    return D / np.maximum(np.linalg.norm(D, axis=1, keepdims=True), 1e-12)


def _mod_update(X, C, D, rng):
    A = _core.to_numpy(CODE_GRAM(C=C))                 # CᵀC (n_atoms²), a csr-transpose kernel
    B = _core.to_numpy(CODE_T_X(C=C, X=X))             # CᵀX
    unused = np.diag(A) <= 1e-12
    A = A + 1e-10 * np.trace(A) / len(A) * np.eye(len(A))
    Dn = np.linalg.solve(A, B)
    Xh = _core.to_numpy(X)
    Dn[unused] = Xh[rng.integers(len(Xh), size=int(unused.sum()))]
    return Dn / np.maximum(np.linalg.norm(Dn, axis=1, keepdims=True), 1e-12)


def _ksvd_update(X, C, D, rng):
    """K-SVD: atom by atom, the rank-1 SVD of the residual of the signals using the atom."""
    xp = _core.array_module(X)
    E = X - RECON(C=C, D=D)                           # residual, n_samples × n_features
    Cc = sp.csc_matrix(C.to("cpu").to_scipy())       # column access to the codes (host, support fixed)
    D = D.copy()
    for k in range(D.shape[0]):
        lo, hi = Cc.indptr[k], Cc.indptr[k + 1]
        if lo == hi:                                  # unused atom: the worst-represented signal
            worst = int(_core.to_numpy((E * E).sum(axis=1)).argmax())
            D[k] = _core.to_numpy(E[worst]) / max(float(xp.linalg.norm(E[worst])), 1e-12)
            continue
        rows = xp.asarray(Cc.indices[lo:hi])
        g = xp.asarray(Cc.data[lo:hi])
        Ek = E[rows] + xp.outer(g, xp.asarray(D[k]))
        # the leading singular pair by power iteration from the current atom (Rubinstein et al.'s
        # approximate K-SVD, iterated): numpy's SVD of a 500×64 block took 60 ms and even eigh of the
        # 64×64 Gram 15 ms on the busy 2-core VM (LAPACK threads), ten matvec pairs well under 1 ms
        v = xp.asarray(D[k])
        for _ in range(10):
            w = Ek.T @ (Ek @ v)
            w /= max(float(xp.linalg.norm(w)), 1e-300)
            done = float(xp.abs(w - v).max()) < 1e-8
            v = w
            if done:
                break
        g_new = Ek @ v                                 # σ₁u₁
        D[k] = _core.to_numpy(v)
        Cc.data[lo:hi] = _core.to_numpy(g_new)
        E[rows] = Ek - xp.outer(g_new, v)
    return asformat(Cc.tocsr(), "csr"), D

"""Online orthogonal dictionary learning by a Frank–Wolfe method over the relaxed orthogonal group.

The dictionary is square and orthogonal, so the codes of a signal are its coefficients X·Dᵀ and the
sparsest such codes maximise a sparsity-promoting norm of them. The streaming problem

    max_{D ∈ conv O(n)}  E_x ‖D x‖₃³          (conv O(n) = {D : ‖D‖₂ ≤ 1}, the relaxation)

has a convex objective over a convex set, so its maxima sit on the extreme points (orthogonal
matrices). Each step folds the batch gradient 3·(|Z|∘Z)ᵀX/n into a running estimate M (no signal
is kept), calls the linear maximisation oracle over the spectral-norm ball — the polar factor of M,
an orthogonal matrix — and moves to it. For a convex objective the best point on the Frank–Wolfe
segment is an end, and we take the full step (the vertex), which keeps D exactly orthogonal.
"""

from __future__ import annotations

import numpy as np

from ... import compile as _compile
from . import _core
from ._core import CROSS
from ._estimator import BaseEstimator, TransformerMixin

__all__ = ["OnlineOrthogonalDictionaryLearning"]

# batch gradient of Σ‖D x‖₃³ with respect to D: 3 (|Z|∘Z)ᵀ X, Z = X·Dᵀ
_L3_GRAD = _compile("M[k,j] = abs(Z[i,k]) * Z[i,k] * X[i,j]")


class OnlineOrthogonalDictionaryLearning(TransformerMixin, BaseEstimator):
    """Streaming orthogonal dictionary learning (Frank–Wolfe on the relaxed orthogonal group).

    .. math:: \\max_{D:\\ \\|D\\|_2 \\le 1} \\ \\mathbb{E}_x \\|D x\\|_3^3, \\qquad X \\approx C D,\\ C = X D^T

    Parameters
    ----------
    n_nonzero_coefs : int, optional — codes kept per sample by transform() (the largest |X·Dᵀ|);
        default all.
    batch_size : int — samples per step when fit() is given an array.
    averaging : float in (0, 1] — the running gradient is M_t = (1 − ρ_t)M_{t−1} + ρ_t ∇_t with
        ρ_t = t^(−averaging).
    max_iter : int — passes over an array given to fit().
    random_state : seed for the initial orthogonal D. verbose : bool — tqdm progress bar.

    Attributes
    ----------
    components_ : ndarray (n_features, n_features), orthogonal rows.
    history_ : list — per batch, the objective −mean‖Dx‖₃³/‖x‖³ of the batch before the step
        (so lower is better; it decreases as D adapts).
    n_steps_ : int.

    References
    ----------
    Xue, Lau, "Online Orthogonal Dictionary Learning Based on Frank-Wolfe Method", 2021 (IEEE TNNLS 2023);
    Zhai, Yang, Liao, Wright, Ma, "Complete Dictionary Learning via ℓ4-Norm Maximization over the
    Orthogonal Group", 2020.

    >>> X = np.random.default_rng(0).standard_normal((500, 4))
    >>> model = OnlineOrthogonalDictionaryLearning(batch_size=100, random_state=0).fit(X)
    >>> bool(np.allclose(model.components_ @ model.components_.T, np.eye(4)))
    True
    """

    def __init__(self, *, n_nonzero_coefs=None, batch_size=256, averaging=0.5, max_iter=1, random_state=None,
                 verbose=False):
        self.n_nonzero_coefs = n_nonzero_coefs
        self.batch_size = batch_size
        self.averaging = averaging
        self.max_iter = max_iter
        self.random_state = random_state
        self.verbose = verbose

    def fit(self, X, y=None):
        """Learn from an array (in batches, ``max_iter`` passes) or from an iterable of batches (a stream,
        consumed once; nothing is stored)."""
        _core.check_positive("batch_size", self.batch_size, integer=True)
        _core.check_positive("max_iter", self.max_iter, integer=True)
        for attr in ("_M", "components_"):
            if hasattr(self, attr):
                delattr(self, attr)
        if hasattr(X, "shape"):
            n = X.shape[0]
            batches = (X[b:b + self.batch_size] for _ in range(self.max_iter) for b in range(0, n, self.batch_size))
            total = self.max_iter * -(-n // self.batch_size)
        else:
            batches, total = iter(X), None
        for batch in _core.progress(batches, verbose=self.verbose, desc="online orthogonal DL", total=total):
            self.partial_fit(batch)
        return self

    def partial_fit(self, X, y=None):
        """One Frank–Wolfe step on the batch X (n, n_features)."""
        _core.check_positive("averaging", self.averaging, upper=1.0 + 1e-12)
        X = _core.check_signals(X, None)
        xp = _core.array_module(X)
        if not hasattr(self, "components_"):
            rng = _core.random_state(self.random_state)
            q, _ = np.linalg.qr(rng.standard_normal((X.shape[1], X.shape[1])))
            self.components_ = xp.asarray(q)
            self._M = xp.zeros_like(self.components_)
            self.history_, self.n_steps_ = [], 0
        D = self.components_
        if X.shape[1] != D.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features but the dictionary has {D.shape[1]}")
        Z = CROSS(X=X, D=D)                                              # codes X·Dᵀ
        norms = xp.linalg.norm(X, axis=1)
        live = norms > 0                                                 # an all-zero sample has no codes
        self.history_.append(-float(xp.mean((xp.abs(Z[live]) ** 3).sum(axis=1) / norms[live] ** 3)))
        self.n_steps_ += 1
        rho = self.n_steps_ ** -float(self.averaging)
        self._M = (1 - rho) * self._M + rho * 3.0 * _L3_GRAD(Z=Z, X=X) / X.shape[0]
        u, _, vt = xp.linalg.svd(self._M)                               # linear maximisation oracle:
        self.components_ = u @ vt                                        # the polar factor, orthogonal
        return self

    def transform(self, X):
        """Codes X·Dᵀ, keeping the ``n_nonzero_coefs`` largest per sample (a csr SparseTensor)."""
        if not hasattr(self, "components_"):
            raise ValueError("This OnlineOrthogonalDictionaryLearning is not fitted yet; call fit(X) first")
        X = _core.check_signals(X, self.components_)
        Z = _core.to_numpy(CROSS(X=X, D=self.components_))
        k = self.n_nonzero_coefs
        if k is None or k >= Z.shape[1]:
            return _core.as_codes(Z)
        _core.check_positive("n_nonzero_coefs", k, integer=True)
        idx = np.argpartition(-np.abs(Z), k - 1, axis=1)[:, :k]
        return _core.codes_from_support(idx, np.take_along_axis(Z, idx, 1), Z.shape[1])

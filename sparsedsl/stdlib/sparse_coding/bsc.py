"""Binary Sparse Coding learned by EM with expectation truncation (after ProSper's BSC-ET).

Model: s ∈ {0,1}^H with p(s) = π^{|s|}(1−π)^{H−|s|}; x | s ~ N(s W, σ² I), W (H, n_features).
Expectation truncation: the posterior of each sample is computed exactly on a small set of states —
every state with at most ``max_active`` ones among the ``n_candidates`` latents whose singleton
states explain the sample best — and is zero elsewhere. The M-step is closed form in W, σ and π.
"""

from __future__ import annotations

from itertools import combinations, product

import numpy as np

from ... import SparseTensor
from . import _core
from ._core import CODE_T_X, CROSS, GRAM
from ._estimator import BaseEstimator, TransformerMixin

__all__ = ["BinarySparseCoding"]


class BinarySparseCoding(TransformerMixin, BaseEstimator):
    """Binary Sparse Coding with expectation truncation: learns W, the sparsity π and the noise σ.

    .. math:: p(s) = \\prod_h \\pi^{s_h}(1-\\pi)^{1-s_h}, \\quad x \\mid s \\sim \\mathcal N(s W, \\sigma^2 I)

    Parameters
    ----------
    n_components : int — H, the number of binary causes.
    n_candidates : int — H', the latents per sample the truncated posterior ranges over (default min(H, 8)).
    max_active : int — γ, most ones in a state considered (default min(H', 5)).
    max_iter : int — EM iterations. anneal : float ≥ 1 — initial temperature, lowered linearly to 1
        over the first half of the iterations (deterministic annealing against poor local optima).
    tol : float — stop when the log-likelihood bound improves by less (relative).
    random_state, verbose : seed; tqdm progress bar.

    Attributes
    ----------
    components_ : ndarray (H, n_features) — W. sparsity_ : float — π. noise_ : float — σ.
    value_probs_ : ndarray (1,) — π again, as DiscreteSparseCoding's per-value probabilities.
    history_ : list — per iteration, the truncated log-likelihood per sample. n_iter_ : int.

    References
    ----------
    Henniges, Puertas, Bornschein, Eggert, Lücke, "Binary Sparse Coding", 2010; Lücke, Eggert,
    "Expectation Truncation and the Benefits of Preselection in Training Generative Models", 2010;
    Bornschein, Henniges, Lücke et al., "ProSper: a Python library for probabilistic sparse coding", 2014.

    >>> X = (np.random.default_rng(0).random((200, 4)) < 0.3) * 1.0
    >>> BinarySparseCoding(4, max_iter=5, random_state=0).fit(X).components_.shape
    (4, 4)
    """

    def __init__(self, n_components, *, n_candidates=None, max_active=None, max_iter=100, anneal=1.0, tol=1e-6,
                 random_state=None, verbose=False):
        self.n_components = n_components
        self.n_candidates = n_candidates
        self.max_active = max_active
        self.max_iter = max_iter
        self.anneal = anneal
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose

    _values = (1.0,)  # the nonzero values a latent takes (DiscreteSparseCoding: its ``values``)
    _default_max_active = 5

    def fit(self, X, y=None):
        H = _core.check_positive("n_components", self.n_components, integer=True)
        Hc = min(H, 8) if self.n_candidates is None else self.n_candidates
        _core.check_positive("n_candidates", Hc, integer=True, upper=H + 1)
        gamma = min(Hc, self._default_max_active) if self.max_active is None else self.max_active
        _core.check_positive("max_active", gamma, integer=True, upper=Hc + 1)
        _core.check_positive("max_iter", self.max_iter, integer=True)
        if not (isinstance(self.anneal, int | float) and self.anneal >= 1):
            raise ValueError(f"The 'anneal' parameter must be a number >= 1. Got {self.anneal!r}.")
        values = self._nonzero_values()
        X = np.asarray(_core.to_numpy(_core.check_signals(X, None)))
        rng = _core.random_state(self.random_state)
        n, f = X.shape
        states = _states(Hc, gamma, values)                          # (M, H') patterns
        counts = np.stack([(states == v).sum(axis=1) for v in values], axis=1)  # (M, K) latents at each value
        W = X.mean(axis=0) + 0.5 * X.std() * rng.standard_normal((H, f))
        sigma, probs = float(X.std()), np.full(len(values), 1.0 / (H * len(values)))
        self.history_ = []
        half = max(self.max_iter // 2, 1)
        for it in _core.progress(range(self.max_iter), verbose=self.verbose, desc=f"{type(self).__name__} (ET)"):
            temp = max(1.0, self.anneal - (self.anneal - 1.0) * it / half)
            log_prior = counts @ np.log(probs) + (H - counts.sum(axis=1)) * np.log1p(-probs.sum())
            post, cand, ll = _truncated_posterior(X, W, sigma, states, log_prior, Hc, temp, values)
            Es, Ess = _moments(post, cand, states, H)
            # M-step (closed form): W = ⟨ssᵀ⟩⁻¹ ⟨s⟩ᵀX, σ² = ⟨‖x − sW‖²⟩/(n f), π_v = ⟨#{h: s_h = v}⟩/(n H)
            SX = CODE_T_X(C=Es, X=X)
            W = np.linalg.solve(Ess + 1e-8 * np.eye(H), SX)
            G = GRAM(D=W)
            err = (X * X).sum() - 2.0 * (SX * W).sum() + (G * Ess).sum()
            sigma = float(np.sqrt(max(err, 1e-300) / (n * f)))
            probs = np.clip((post @ counts).sum(axis=0) / (n * H), 1e-6, None)
            probs = probs / max(1.0, probs.sum() / (1 - 1e-6))
            self.history_.append(ll / n)
            if temp == 1.0 and len(self.history_) > 1 and \
                    abs(self.history_[-1] - self.history_[-2]) <= self.tol * abs(self.history_[-2]):
                break
        else:
            if self.tol > 0 and self.max_iter > 1:
                _core.warn_not_converged(f"{type(self).__name__} EM", self.max_iter)
        self.components_, self.noise_, self.n_iter_ = W, sigma, len(self.history_)
        self.sparsity_ = float(probs.sum())
        self.value_probs_ = probs
        self._truncation = (Hc, gamma)
        return self

    def _nonzero_values(self):
        return self._values

    def transform(self, X) -> SparseTensor:
        """Posterior means ⟨s⟩ under the truncated posterior, as a csr SparseTensor."""
        if not hasattr(self, "components_"):
            raise ValueError(f"This {type(self).__name__} is not fitted yet; call fit(X) first")
        X = np.asarray(_core.to_numpy(_core.check_signals(X, self.components_)))
        Hc, gamma = self._truncation
        values = self._nonzero_values()
        states = _states(Hc, gamma, values)
        counts = np.stack([(states == v).sum(axis=1) for v in values], axis=1)
        H = self.n_components
        log_prior = counts @ np.log(self.value_probs_) + (H - counts.sum(axis=1)) * np.log1p(-self.sparsity_)
        post, cand, _ = _truncated_posterior(X, self.components_, self.noise_, states, log_prior, Hc, 1.0, values)
        Es, _ = _moments(post, cand, states, H)
        Es[np.abs(Es) < 1e-12] = 0.0
        return _core.as_codes(Es)


def _states(Hc, gamma, values=(1.0,)):
    """Every pattern on H' latents with at most γ nonzeros, each nonzero one of ``values``."""
    rows = [np.zeros(Hc)]
    for k in range(1, gamma + 1):
        for c in combinations(range(Hc), k):
            for vals in product(values, repeat=k):
                s = np.zeros(Hc)
                s[list(c)] = vals
                rows.append(s)
    return np.array(rows)


def _truncated_posterior(X, W, sigma, states, log_prior, Hc, temp, values):
    """Posterior over ``states`` (M, H') on each sample's H' candidate latents, zero elsewhere (expectation
    truncation), for x | s ~ N(s W, σ²I) and a state prior ``log_prior`` (M,). The candidates are the
    latents whose best singleton state (value in ``values`` on one latent) explains the sample best.
    Returns the posterior (n, M), the candidates (n, H') and the truncated log-likelihood."""
    n, f = X.shape
    XW = CROSS(X=X, D=W)                                # x·W_h for every sample and cause
    G = GRAM(D=W)
    # selection: the singleton joint log p(x, v e_h) ∝ 2 v x·W_h − v² ‖W_h‖², best over the values v
    score = np.max([2.0 * v * XW - v * v * np.diag(G)[None, :] for v in values], axis=0)
    cand = np.argsort(-score, axis=1)[:, :Hc]           # (n, H')
    a = np.take_along_axis(XW, cand, 1)                 # (n, H')
    Gc = G[cand[:, :, None], cand[:, None, :]]          # (n, H', H')
    lin = a @ states.T                                  # (n, M): Σ_h s_h x·W_h
    quad = np.einsum("mh,nhk,mk->nm", states, Gc, states, optimize=True)
    x2 = (X * X).sum(axis=1)[:, None]
    logp = -(x2 - 2 * lin + quad) / (2 * sigma ** 2) - 0.5 * f * np.log(2 * np.pi * sigma ** 2) + log_prior
    top = logp.max(axis=1, keepdims=True)
    ll = float((top[:, 0] + np.log(np.exp(logp - top).sum(axis=1))).sum())
    w = np.exp((logp - top) / temp)
    return w / w.sum(axis=1, keepdims=True), cand, ll


def _moments(post, cand, states, H):
    """⟨s⟩ per sample (n, H) and Σ_n ⟨ssᵀ⟩ (H, H) under the truncated posterior."""
    n, Hc = cand.shape
    Es_c = post @ states                                 # (n, H'): ⟨s_h⟩ on the candidates
    Es = np.zeros((n, H))
    np.put_along_axis(Es, cand, Es_c, 1)
    pair = np.einsum("nm,mh,mk->nhk", post, states, states, optimize=True)   # (n, H', H')
    Ess = np.zeros((H, H))
    np.add.at(Ess, (cand[:, :, None], cand[:, None, :]), pair)
    return Es, Ess

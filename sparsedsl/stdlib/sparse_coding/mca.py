"""Maximal Causes Analysis: binary causes combined by a maximum instead of a sum (after ProSper's MCA),
learned by EM with expectation truncation.

Model: s ∈ {0,1}^H with p(s) = π^{|s|}(1−π)^{H−|s|}; x_d | s ~ N(max_h s_h W_hd, σ²) (0 when no cause is
on), W ≥ 0 (H, n_features). Occluding or saturating components (bars that overlap, objects in front of
each other) add up to their maximum, not their sum. The truncated posterior is BSC's (the states on each
sample's best ``n_candidates`` causes); the W update is the ρ → ∞ limit of the paper's soft-max rule:
each pixel's intensity is credited to the cause that is maximal there. The candidate scores use the
sparsedsl cross-product kernel; the max-combined means and their arg-max credit are numpy (a max over
a state's causes per pixel, no product to hand to a kernel).
"""

from __future__ import annotations

import numpy as np

from . import _core
from ._core import CROSS
from ._estimator import TruncatedEM
from .bsc import _moments, _states

__all__ = ["MaximalCausesAnalysis"]


class MaximalCausesAnalysis(TruncatedEM):
    """Maximal Causes Analysis with expectation truncation: learns W ≥ 0, the sparsity π and the noise σ.

    .. math:: p(s) = \\prod_h \\pi^{s_h}(1-\\pi)^{1-s_h},\\quad
              x_d \\mid s \\sim \\mathcal N\\big(\\max_h s_h W_{hd},\\ \\sigma^2\\big)

    Parameters
    ----------
    n_components : int — H, the number of causes.
    n_candidates : int — H', the causes per sample the truncated posterior ranges over (default min(H, 8)).
    max_active : int — γ, most causes on in a state considered (default min(H', 4)).
    max_iter : int — EM iterations. tol : float — stop when the truncated log-likelihood per sample
        improves by less (relative).
    random_state, verbose : seed; tqdm progress bar.

    Attributes
    ----------
    components_ : ndarray (H, n_features) — W. sparsity_ : float — π. noise_ : float — σ.
    history_ : list — the truncated log-likelihood per sample after each E-step. n_iter_ : int.

    References
    ----------
    Lücke, Sahani, "Maximal Causes for Non-linear Component Extraction", JMLR 2008; Puertas, Bornschein,
    Lücke, "The Maximal Causes of Natural Scenes are Edge Filters", NIPS 2010 (with expectation
    truncation); Bornschein, Henniges, Lücke et al., "ProSper: a Python library for probabilistic sparse
    coding", 2014.

    >>> X = np.maximum(*(np.random.default_rng(0).random((2, 200, 4)) < 0.3)) * 1.0
    >>> MaximalCausesAnalysis(4, max_iter=5, random_state=0).fit(X).components_.shape
    (4, 4)
    """

    def _truncation(self):
        H = _core.check_positive("n_components", self.n_components, integer=True)
        Hc = min(H, 8) if self.n_candidates is None else self.n_candidates
        _core.check_positive("n_candidates", Hc, integer=True, upper=H + 1)
        gamma = min(Hc, 4) if self.max_active is None else self.max_active
        _core.check_positive("max_active", gamma, integer=True, upper=Hc + 1)
        return H, Hc, gamma

    def fit(self, X, y=None):
        H, Hc, gamma = self._truncation()
        _core.check_positive("max_iter", self.max_iter, integer=True)
        X = np.asarray(_core.to_numpy(_core.check_signals(X, None)))
        rng = _core.random_state(self.random_state)
        n, f = X.shape
        states = _states(Hc, gamma)
        W = np.abs(X.mean(axis=0) + 0.5 * X.std() * rng.standard_normal((H, f)))
        sigma, pi = float(X.std()), 1.0 / H
        self.history_ = []
        for _ in _core.progress(range(self.max_iter), verbose=self.verbose, desc="MCA (ET)"):
            post, cand, ll, winner = _e_step(X, W, sigma, pi, states, Hc)
            # M-step: W_hd = Σ ⟨[h is the maximal cause at d]⟩ x_d / Σ ⟨[h is the maximal cause at d]⟩
            num, den = np.zeros((H, f)), np.zeros((H, f))
            for m in range(1, len(states)):  # state 0 (no cause) credits nobody
                cause = np.take_along_axis(cand, winner[:, m, :], axis=1)        # (n, f) global cause ids
                w = post[:, m:m + 1] * np.ones((1, f))
                cols = np.broadcast_to(np.arange(f), cause.shape)
                np.add.at(den, (cause, cols), w)
                np.add.at(num, (cause, cols), w * X)
            used = den > 1e-12
            W = np.maximum(np.where(used, num / np.where(used, den, 1.0), W), 0.0)  # the model's W >= 0
            # σ² = ⟨‖x − W̄(s)‖²⟩ / (n f) at the new W; π = ⟨|s|⟩ / (n H)
            err = (post * _sq_error(X, W, states, cand)).sum()
            sigma = float(np.sqrt(max(err, 1e-300) / (n * f)))
            pi = float(np.clip((post @ states.sum(axis=1)).sum() / (n * H), 1e-6, 1 - 1e-6))
            self.history_.append(ll / n)
            if len(self.history_) > 1 and abs(self.history_[-1] - self.history_[-2]) <= self.tol * abs(
                    self.history_[-2]):
                break
        else:
            if self.tol > 0 and self.max_iter > 1:
                _core.warn_not_converged("MaximalCausesAnalysis EM", self.max_iter)
        self.components_, self.noise_, self.sparsity_, self.n_iter_ = W, sigma, pi, len(self.history_)
        return self

    def transform(self, X):
        """Posterior means ⟨s⟩ under the truncated posterior, as a csr SparseTensor."""
        if not hasattr(self, "components_"):
            raise ValueError("This MaximalCausesAnalysis is not fitted yet; call fit(X) first")
        _, Hc, gamma = self._truncation()
        X = np.asarray(_core.to_numpy(_core.check_signals(X, self.components_)))
        states = _states(Hc, gamma)
        post, cand, _, _ = _e_step(X, self.components_, self.noise_, self.sparsity_, states, Hc)
        Es, _ = _moments(post, cand, states, self.n_components)
        Es[Es < 1e-12] = 0.0
        return _core.as_codes(Es)


def _means(W, states, cand):
    """W̄ (n, M, f): for each sample's candidate causes and each state, the pixelwise maximum of the
    causes that are on (0 where none is), and the candidate index (n, M, f) of the maximal one."""
    Wc = W[cand]                                                   # (n, H', f)
    on = np.where(states[None, :, :, None] > 0, Wc[:, None, :, :], -np.inf)   # (n, M, H', f): off causes out
    return np.maximum(on.max(axis=2), 0.0), on.argmax(axis=2)


def _sq_error(X, W, states, cand):
    Wbar, _ = _means(W, states, cand)
    return ((X[:, None, :] - Wbar) ** 2).sum(axis=2)               # (n, M)


def _e_step(X, W, sigma, pi, states, Hc):
    """Truncated posterior over ``states`` on each sample's candidate causes, chosen by how well each
    cause alone explains the sample."""
    n, f = X.shape
    H = W.shape[0]
    single = (W * W).sum(axis=1)[None, :] - 2.0 * CROSS(X=X, D=W)   # ‖x − W_h‖² − ‖x‖², (n, H)
    cand = np.argsort(single, axis=1)[:, :Hc]
    Wbar, winner = _means(W, states, cand)
    k = states.sum(axis=1)
    logp = (-((X[:, None, :] - Wbar) ** 2).sum(axis=2) / (2 * sigma ** 2) - 0.5 * f * np.log(2 * np.pi * sigma ** 2)
            + k * np.log(pi) + (H - k) * np.log1p(-pi))
    top = logp.max(axis=1, keepdims=True)
    ll = float((top[:, 0] + np.log(np.exp(logp - top).sum(axis=1))).sum())
    w = np.exp(logp - top)
    return w / w.sum(axis=1, keepdims=True), cand, ll, winner

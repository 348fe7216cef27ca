"""Gaussian spike-and-slab sparse coding learned by truncated EM (after ProSper's GSC).

Model: s_h ~ Bernoulli(π), z_h ~ N(μ_h, ψ_h), x = (s∘z) W + ε, ε ~ N(0, σ²I), W (H, n_features).
Given a binary state with active set A, x is Gaussian (mean μ_A W_A, covariance σ²I + W_Aᵀ Ψ_A W_A)
and z_A | x is Gaussian with precision Λ = Ψ_A⁻¹ + W_A W_Aᵀ/σ², so every quantity of a state is a
k×k computation (Woodbury), k ≤ max_active. As in BSC, the posterior over binary states is truncated
to the states on each sample's best ``n_candidates`` latents.
"""

from __future__ import annotations

import numpy as np

from ... import SparseTensor
from . import _core
from ._core import CODE_T_X, CROSS, GRAM
from ._estimator import TruncatedEM
from .bsc import _states

__all__ = ["SpikeSlabSparseCoding"]


class SpikeSlabSparseCoding(TruncatedEM):
    """Gaussian spike-and-slab sparse coding with expectation truncation: learns W, π, μ, ψ and σ.

    .. math:: s_h \\sim \\mathrm{Bern}(\\pi),\\ z_h \\sim \\mathcal N(\\mu_h, \\psi_h),\\
              x \\mid s, z \\sim \\mathcal N((s \\circ z) W, \\sigma^2 I)

    Parameters
    ----------
    n_components : int — H. n_candidates, max_active : the truncation (defaults min(H, 6), min(H', 3)).
    max_iter : int — EM iterations. tol : float — relative change of the bound to stop at.
    random_state, verbose : seed; tqdm progress bar.

    Attributes
    ----------
    components_ : (H, n_features). sparsity_ : π. slab_mean_ : μ (H,). slab_var_ : ψ (H,).
    noise_ : σ. history_ : truncated log-likelihood per sample, per iteration. n_iter_ : int.

    References
    ----------
    Sheikh, Shelton, Lücke, "A Truncated EM Approach for Spike-and-Slab Sparse Coding", 2014;
    Bornschein, Henniges, Lücke et al., "ProSper: a Python library for probabilistic sparse coding", 2014.

    >>> X = np.random.default_rng(0).standard_normal((100, 4))
    >>> SpikeSlabSparseCoding(3, max_iter=3, random_state=0).fit(X).components_.shape
    (3, 4)
    """

    def fit(self, X, y=None):
        H = _core.check_positive("n_components", self.n_components, integer=True)
        Hc = min(H, 6) if self.n_candidates is None else self.n_candidates
        _core.check_positive("n_candidates", Hc, integer=True, upper=H + 1)
        gamma = min(Hc, 3) if self.max_active is None else self.max_active
        _core.check_positive("max_active", gamma, integer=True, upper=Hc + 1)
        _core.check_positive("max_iter", self.max_iter, integer=True)
        X = np.asarray(_core.to_numpy(_core.check_signals(X, None)))
        rng = _core.random_state(self.random_state)
        n, f = X.shape
        W = X[rng.choice(n, H, replace=n < H)] + 0.1 * X.std() * rng.standard_normal((H, f))
        p = {"W": W, "pi": 1.0 / H, "mu": np.zeros(H), "psi": np.ones(H), "sigma": float(X.std())}
        states = _states(Hc, gamma)
        self.history_ = []
        for _ in _core.progress(range(self.max_iter), verbose=self.verbose, desc="GSC (ET)"):
            post, ll = _posterior(X, p, states, Hc)
            Esz, Ezz, Es = _moments(post, n, H)
            # M-step (closed form)
            SX = CODE_T_X(C=Esz, X=X)                                    # Σ ⟨s∘z⟩ᵀ x
            W = np.linalg.solve(Ezz + 1e-8 * np.eye(H), SX)
            G = GRAM(D=W)
            err = (X * X).sum() - 2.0 * (SX * W).sum() + (G * Ezz).sum()
            on = np.maximum(Es.sum(axis=0), 1e-12)
            mu = Esz.sum(axis=0) / on
            psi = np.maximum((np.diag(Ezz) - 2 * mu * Esz.sum(axis=0) + mu * mu * on) / on, 1e-6)
            p = {"W": W, "pi": float(np.clip(Es.sum() / (n * H), 1e-6, 1 - 1e-6)), "mu": mu, "psi": psi,
                 "sigma": float(np.sqrt(max(err, 1e-300) / (n * f)))}
            self.history_.append(ll / n)
            h = self.history_
            if len(h) > 1 and abs(h[-1] - h[-2]) <= self.tol * abs(h[-2]):
                break
        else:
            if self.tol > 0 and self.max_iter > 1:
                _core.warn_not_converged("SpikeSlabSparseCoding EM", self.max_iter)
        self.components_, self.sparsity_, self.slab_mean_ = p["W"], p["pi"], p["mu"]
        self.slab_var_, self.noise_, self.n_iter_ = p["psi"], p["sigma"], len(self.history_)
        self._truncation = (Hc, gamma)
        return self

    def transform(self, X) -> SparseTensor:
        """Posterior means ⟨s∘z⟩ under the truncated posterior, as a csr SparseTensor."""
        if not hasattr(self, "components_"):
            raise ValueError("This SpikeSlabSparseCoding is not fitted yet; call fit(X) first")
        X = np.asarray(_core.to_numpy(_core.check_signals(X, self.components_)))
        p = {"W": self.components_, "pi": self.sparsity_, "mu": self.slab_mean_, "psi": self.slab_var_,
             "sigma": self.noise_}
        Hc, gamma = self._truncation
        post, _ = _posterior(X, p, _states(Hc, gamma), Hc)
        Esz, _, _ = _moments(post, X.shape[0], self.n_components)
        return _core.as_codes(Esz)


def _posterior(X, p, states, Hc):
    """Per state (grouped as index sets on each sample's candidates): log p(x, s), the posterior
    mean κ and covariance Λ⁻¹ of z_A; returns the normalised truncated posterior and the bound."""
    W, pi, mu, psi, s2 = p["W"], p["pi"], p["mu"], p["psi"], p["sigma"] ** 2
    n, f = X.shape
    H = W.shape[0]
    a = CROSS(X=X, D=W)                                  # x·W_hᵀ
    G = GRAM(D=W)
    x2 = (X * X).sum(axis=1)
    # selection: log p(x, e_h) of each singleton state
    lam1 = 1 / psi + np.diag(G) / s2
    q1 = (x2[:, None] - 2 * mu * a + mu * mu * np.diag(G)) / s2 - (a - np.diag(G) * mu) ** 2 / (s2 * s2 * lam1)
    single = -0.5 * (q1 + np.log(psi) + np.log(lam1))
    cand = np.argsort(-single, axis=1)[:, :Hc]
    entries, logps = [], []
    for s in states:
        act = np.flatnonzero(s)
        k = len(act)
        base = -0.5 * f * np.log(2 * np.pi * s2) + k * np.log(pi) + (H - k) * np.log1p(-pi)
        if k == 0:
            logps.append(base - 0.5 * x2 / s2)
            entries.append((None, None, None))
            continue
        idx = cand[:, act]                                                  # (n, k)
        GA = G[idx[:, :, None], idx[:, None, :]]                             # (n, k, k)
        aA, muA, psiA = np.take_along_axis(a, idx, 1), mu[idx], psi[idx]
        Lam = GA / s2 + np.einsum("nk,kl->nkl", 1 / psiA, np.eye(k))
        Linv = np.linalg.inv(Lam)
        b = aA - np.einsum("nkl,nl->nk", GA, muA)                            # W_A r
        r2 = x2 - 2 * (muA * aA).sum(axis=1) + np.einsum("nk,nkl,nl->n", muA, GA, muA)
        quad = r2 / s2 - np.einsum("nk,nkl,nl->n", b, Linv, b) / (s2 * s2)
        logdet = np.log(psiA).sum(axis=1) + np.linalg.slogdet(Lam)[1]
        logps.append(base - 0.5 * (quad + logdet))
        kappa = np.einsum("nkl,nl->nk", Linv, aA / s2 + muA / psiA)
        entries.append((idx, kappa, Linv))
    logp = np.stack(logps, axis=1)                                           # (n, M)
    top = logp.max(axis=1, keepdims=True)
    ll = float((top[:, 0] + np.log(np.exp(logp - top).sum(axis=1))).sum())
    q = np.exp(logp - top)
    q /= q.sum(axis=1, keepdims=True)
    return (q, entries), ll


def _moments(post, n, H):
    """⟨s∘z⟩ (n, H), Σ_n ⟨(s∘z)(s∘z)ᵀ⟩ (H, H) and ⟨s⟩ (n, H)."""
    q, entries = post
    Esz, Es, Ezz = np.zeros((n, H)), np.zeros((n, H)), np.zeros((H, H))
    rows = np.arange(n)[:, None]
    for m, (idx, kappa, Linv) in enumerate(entries):
        if idx is None:
            continue
        w = q[:, m]
        np.add.at(Esz, (rows, idx), w[:, None] * kappa)
        np.add.at(Es, (rows, idx), np.broadcast_to(w[:, None], idx.shape))
        second = w[:, None, None] * (Linv + kappa[:, :, None] * kappa[:, None, :])
        np.add.at(Ezz, (idx[:, :, None], idx[:, None, :]), second)
    return Esz, Ezz, Es

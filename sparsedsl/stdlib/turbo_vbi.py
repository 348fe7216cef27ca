"""Turbo-VBI: sparse Bayesian recovery with a three-layer prior whose support is a Markov chain, so that
nonzeros come in clusters (blocks of unknown position and length) rather than one by one.

    support    s ∈ {0, 1}ⁿ, a two-state Markov chain (mean run length of ones ``cluster_length``)
    precision  ρⱼ | sⱼ ~ Gamma(a, b) if sⱼ = 1 (active), Gamma(ā, b̄) if sⱼ = 0 (ρⱼ huge: xⱼ ≈ 0)
    signal     xⱼ | ρⱼ ~ N(0, 1/ρⱼ);   y = Φx + n,  n ~ N(0, σ²I)

Two modules pass messages about s (the "turbo" loop): module A is variational Bayesian inference
(VBI) of x, ρ and σ² given a prior on each sⱼ; it returns the evidence its data give for sⱼ = 1. Module B
runs sum-product (forward–backward) on the chain with that evidence and returns to A each sⱼ's prior
from its neighbours. The products with Φ are :mod:`sparsedsl.stdlib.sbl`'s compiled kernels, so Φ may be
dense, any SparseTensor format or a composite, and cupy inputs run on the GPU; the m×m solve is numpy.
"""

from __future__ import annotations

from numbers import Real

import numpy as np
from scipy.special import digamma, gammaln

from .sbl import _MATVEC, _QUAD_DIAG, _RMATVEC, _WEIGHTED_GRAM, _array_module, _check_common, _warn

__all__ = ["TurboVBIResult", "turbo_vbi"]


class TurboVBIResult:
    """What Turbo-VBI converged to. Unpacks as ``(mean, cov_diag, support_prob, noise_var)``; also
    ``precision`` (E[ρ]), ``transition`` (p(0→1), p(1→0) of the support chain), ``history`` (the
    largest change of the mean, relative to its largest entry, at each iteration), ``n_iter``,
    ``converged``."""

    def __init__(self, mean, cov_diag, support_prob, noise_var, precision, transition, history, n_iter, converged):
        self.mean, self.cov_diag, self.support_prob, self.noise_var = mean, cov_diag, support_prob, noise_var
        self.precision, self.transition, self.history = precision, transition, history
        self.n_iter, self.converged = n_iter, converged

    def __iter__(self):
        return iter((self.mean, self.cov_diag, self.support_prob, self.noise_var))

    def __repr__(self):
        return (f"TurboVBIResult(n={len(self.mean)}, n_iter={self.n_iter}, converged={self.converged}, "
                f"noise_var={self.noise_var:.3g}, support={int((self.support_prob > 0.5).sum())})")


def _chain_messages(log_evidence, p01, p10, start):
    """Forward–backward on the two-state chain with local evidence odds exp(log_evidence). Returns each
    state's extrinsic prior p(sⱼ = 1 | the others' evidence), its posterior, and the expected
    transition counts (for the EM update of p01, p10). Normalised per step: no underflow."""
    n = len(log_evidence)
    T = np.array([[1 - p01, p01], [p10, 1 - p10]])
    ev = np.exp(np.clip(log_evidence, -500, 500))
    like = np.stack([np.ones(n), ev], axis=1)
    like /= like.sum(axis=1, keepdims=True)
    fwd = np.empty((n, 2))  # prior of sⱼ given the evidence before j
    bwd = np.empty((n, 2))  # evidence after j given sⱼ
    fwd[0] = [1 - start, start]
    for j in range(1, n):
        f = (fwd[j - 1] * like[j - 1]) @ T
        fwd[j] = f / f.sum()
    bwd[-1] = 1.0
    for j in range(n - 2, -1, -1):
        b = T @ (like[j + 1] * bwd[j + 1])
        bwd[j] = b / b.sum()
    extr = fwd * bwd
    extr /= extr.sum(axis=1, keepdims=True)
    post = extr * like
    post /= post.sum(axis=1, keepdims=True)
    # ξ(sⱼ = u, sⱼ₊₁ = v) ∝ fwd[j, u] like[j, u] T[u, v] like[j+1, v] bwd[j+1, v]
    xi = (fwd[:-1] * like[:-1])[:, :, None] * T[None] * (like[1:] * bwd[1:])[:, None, :]
    xi /= xi.sum(axis=(1, 2), keepdims=True)
    return extr[:, 1], post[:, 1], xi.sum(axis=0)


def _gamma_log_norm(shape, rate):
    return shape * np.log(rate) - gammaln(shape)


def turbo_vbi(Phi, y, *, sparsity=0.1, cluster_length=8.0, learn_structure=False, noise_var=None,
              active=(1e-3, None), inactive=(1.0, None), max_iter=500, tol=1e-6):
    r"""Sparse recovery with a clustered-support prior by Turbo-VBI.

    .. math:: y = \Phi x + n,\quad x_j \sim \mathcal N(0, \rho_j^{-1}),\quad
              \rho_j \sim \mathrm{Gamma}(a, b)^{s_j}\,\mathrm{Gamma}(\bar a, \bar b)^{1 - s_j},\quad
              s \sim \text{Markov chain}

    Each iteration: the VBI E-step on x (SBL's, with variances ``1/E[ρ]``), the update of
    ``q(ρⱼ) = Gamma(π̃ⱼa + (1-π̃ⱼ)ā + 1/2, π̃ⱼb + (1-π̃ⱼ)b̄ + (μⱼ² + Σⱼⱼ)/2)``, the evidence
    ``log νⱼ = E_q[log Gamma(ρⱼ; a, b) - log Gamma(ρⱼ; ā, b̄)]`` sent to the chain, forward–backward
    there (and, with ``learn_structure``, the EM update of the chain's transition probabilities), the
    chain's extrinsic prior πⱼ back (π̃ⱼ is πⱼ combined with νⱼ), and the noise variance.

    Parameters
    ----------
    Phi : ndarray, SparseTensor, scipy.sparse matrix or composite, shape (m, n).
    y : ndarray, shape (m,).
    sparsity : float in (0, 1), the chain's stationary p(sⱼ = 1) at the start.
    cluster_length : float > 1, the mean run length of ones at the start.
    learn_structure : bool, learn the transition probabilities by EM (else keep the two above).
    noise_var : float, optional: σ² if known; learned when None.
    active, inactive : (shape, rate) of the Gamma priors on ρ for sⱼ = 1 and sⱼ = 0. A rate of None
        scales with the data, ``v = ||y||² / ||Φ||_F² / sparsity`` estimating an active coefficient's
        variance: the active prior defaults to Gamma(1e-3, 1e-3 v), nearly flat (an active
        coefficient's precision is learned from the data, as in SBL: E[ρ] -> 1 / (μ² + Σ)), the
        inactive one to Gamma(1, 1e-4 v), of mean precision 1e4 / v.
    max_iter, tol : stop when no mean entry moves by more than ``tol`` times the largest.

    Returns
    -------
    TurboVBIResult : unpacks as ``(mean, cov_diag, support_prob, noise_var)``.

    References
    ----------
    Xia, Tsang, Lau, "Structured Bayesian Compression for Deep Neural Networks Based on the Turbo-VBI
    Approach", IEEE Transactions on Signal Processing, 2023 (the three-layer prior and the turbo
    exchange between VBI and message passing on the support).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> Phi = rng.standard_normal((40, 100)) / np.sqrt(40)
    >>> x = np.zeros(100); x[30:38] = rng.standard_normal(8) + 2
    >>> res = turbo_vbi(Phi, Phi @ x + 0.01 * rng.standard_normal(40))
    >>> np.flatnonzero(res.support_prob > 0.5).tolist() == list(range(30, 38))
    True
    """
    fn = "turbo_vbi"
    if not hasattr(Phi, "shape") or len(Phi.shape) != 2:
        raise ValueError(f"The 'Phi' parameter of {fn}() must be a matrix (ndarray, SparseTensor, scipy.sparse "
                         f"or a composite); got {type(Phi).__name__}")
    m, n = Phi.shape
    if isinstance(sparsity, bool) or not isinstance(sparsity, Real) or not 0 < sparsity < 1:
        raise ValueError(f"The 'sparsity' parameter of {fn}() must be in (0, 1); got {sparsity!r}")
    if isinstance(cluster_length, bool) or not isinstance(cluster_length, Real) or not cluster_length > 1:
        raise ValueError(f"The 'cluster_length' parameter of {fn}() must be a number > 1; got {cluster_length!r}")
    xp = _array_module(Phi, y)
    y_host = _check_common(fn, y.get() if hasattr(y, "get") else y, m, max_iter, tol, noise_var)
    y = xp.asarray(y_host)
    # E||y||² ≈ (||Φ||_F² / n) (sparsity n) v for active coefficients of variance v.
    fro2 = float(xp.sum(xp.asarray(_QUAD_DIAG(A=Phi, W=xp.eye(m)))))  # ||Φ||_F² = sum of diag(ΦᵀΦ)
    v = max(float(y_host @ y_host) / max(fro2, 1e-300) / sparsity, 1e-300)
    (a, b) = _prior(active, 1e-3 * v, "active", fn)
    (a0, b0) = _prior(inactive, None, "inactive", fn, 1e-4 * v)
    if not a0 / b0 > a / b:
        raise ValueError(f"The 'inactive' prior of {fn}() must have a larger mean precision than the 'active' "
                         f"one (shape/rate {a0 / b0:.3g} <= {a / b:.3g}): inactive coefficients are the ones near 0")
    log_norm = _gamma_log_norm(a, b) - _gamma_log_norm(a0, b0)
    p10 = 1.0 / cluster_length
    p01 = sparsity * p10 / (1 - sparsity)
    start = sparsity
    learn_noise = noise_var is None
    sigma2 = 0.1 * float(np.var(y_host)) + 1e-12 if learn_noise else float(noise_var)
    prior = np.full(n, sparsity)  # π: the chain's extrinsic message
    post = prior.copy()  # π̃: q(s = 1)
    rho = np.full(n, 1.0 / v)
    mu_prev, history, converged = None, [], False
    for it in range(1, max_iter + 1):  # noqa: B007 (it is the iteration count after the loop)
        # Module A, x: SBL's E-step with variances 1/E[ρ] (through Σ_y = σ²I + ΦΓΦᵀ, m x m).
        gamma = xp.asarray(1.0 / rho)
        Sy = xp.asarray(_WEIGHTED_GRAM(A=Phi, g=gamma)) + sigma2 * xp.eye(m)
        W = xp.linalg.inv(Sy)
        mu_x = gamma * xp.asarray(_RMATVEC(A=Phi, x=W @ y))
        d = xp.asarray(_QUAD_DIAG(A=Phi, W=W))
        cov_x = gamma - gamma ** 2 * d
        mu, cov = _host(mu_x), np.maximum(_host(cov_x), 0.0)
        # Module A, ρ: q(ρ) = Gamma(shape, rate) under the current q(s).
        shape = post * a + (1 - post) * a0 + 0.5
        rate = post * b + (1 - post) * b0 + 0.5 * (mu ** 2 + cov)
        rho = shape / rate
        log_rho = digamma(shape) - np.log(rate)
        # Module A -> B: the evidence of ρ's posterior for an active coefficient; B -> A: the chain's prior.
        evidence = log_norm + (a - a0) * log_rho - (b - b0) * rho
        prior, post, counts = _chain_messages(evidence, p01, p10, start)
        if learn_structure:
            p01 = float(np.clip(counts[0, 1] / max(counts[0].sum(), 1e-300), 1e-6, 1 - 1e-6))
            p10 = float(np.clip(counts[1, 0] / max(counts[1].sum(), 1e-300), 1e-6, 1 - 1e-6))
            start = float(np.clip(post[0], 1e-6, 1 - 1e-6))
        if learn_noise:
            r = y - xp.asarray(_MATVEC(A=Phi, x=mu_x))
            sigma2 = max((float(r @ r) + sigma2 * float(gamma @ d)) / m, 1e-300)
        if mu_prev is not None:
            history.append(float(np.abs(mu - mu_prev).max()) / max(float(np.abs(mu).max()), 1e-300))
            if history[-1] <= tol:
                converged = True
                break
        mu_prev = mu
    if not converged:
        _warn(fn, max_iter, tol)
    back = xp.asarray
    return TurboVBIResult(mu_x, cov_x, back(post), sigma2, back(rho), (p01, p10), np.array(history), it, converged)


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _prior(pair, default_rate, name, fn, default_variance=None):
    """(shape, rate); a rate of None becomes ``default_rate``, or shape x ``default_variance`` (a prior
    mean precision of 1 / default_variance)."""
    try:
        shape, rate = pair
    except (TypeError, ValueError):
        raise ValueError(f"The '{name}' parameter of {fn}() must be a (shape, rate) pair; got {pair!r}") from None
    if rate is None:
        rate = default_rate if default_variance is None else shape * default_variance
    for value in (shape, rate):
        if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < np.inf:
            raise ValueError(f"The '{name}' parameter of {fn}() must be a (shape, rate) pair of positive numbers "
                             f"(rate None: scaled to the data); got {pair!r}")
    return float(shape), float(rate)


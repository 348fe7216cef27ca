"""Discrete sparse coding: latents that take a few values (ternary: -1, 0, +1), learned by EM with
expectation truncation — Binary Sparse Coding's model and algorithm with a richer latent alphabet."""

from __future__ import annotations

import numpy as np

from .bsc import BinarySparseCoding

__all__ = ["DiscreteSparseCoding"]


class DiscreteSparseCoding(BinarySparseCoding):
    """Discrete (by default ternary) sparse coding with expectation truncation: learns W, the
    probability of each nonzero value and the noise σ.

    .. math:: p(s_h = v) = \\pi_v\\ (v \\in \\text{values}),\\quad p(s_h = 0) = 1 - \\textstyle\\sum_v \\pi_v,
              \\quad x \\mid s \\sim \\mathcal N(s W, \\sigma^2 I)

    The E-step is BSC's on every state with at most ``max_active`` nonzeros among each sample's
    ``n_candidates`` best latents, now with each nonzero taking any of ``values`` (so ``len(values)^k``
    states per support of size k); the M-step is closed form in W and σ, and π_v is the expected
    fraction of latents at value v.

    Parameters
    ----------
    n_components : int — H.
    values : sequence of distinct nonzero floats, default (-1.0, 1.0) (ternary sparse coding).
    n_candidates, max_active, max_iter, anneal, tol, random_state, verbose : as in BinarySparseCoding
        (defaults: H' = min(H, 8), γ = min(H', 3)).

    Attributes
    ----------
    components_ : (H, n_features). value_probs_ : (len(values),) — π_v. sparsity_ : float — Σ_v π_v.
    noise_ : σ. history_ : truncated log-likelihood per sample, per iteration. n_iter_ : int.

    References
    ----------
    Exarchakis, Henniges, Eggert, Lücke, "Ternary Sparse Coding", 2012; Exarchakis, Lücke, "Discrete
    Sparse Coding", Neural Computation, 2017; Bornschein, Henniges, Lücke et al., "ProSper: a Python
    library for probabilistic sparse coding", 2014.

    >>> X = np.random.default_rng(0).choice([-1.0, 0.0, 1.0], size=(200, 4), p=[0.15, 0.7, 0.15])
    >>> DiscreteSparseCoding(4, max_iter=5, random_state=0).fit(X).value_probs_.shape
    (2,)
    """

    def __init__(self, n_components, *, values=(-1.0, 1.0), n_candidates=None, max_active=None, max_iter=100,
                 anneal=1.0, tol=1e-6, random_state=None, verbose=False):
        super().__init__(n_components, n_candidates=n_candidates, max_active=max_active, max_iter=max_iter,
                         anneal=anneal, tol=tol, random_state=random_state, verbose=verbose)
        self.values = values

    _default_max_active = 3  # len(values)^k states per support of size k: fewer than BSC's 5

    def _nonzero_values(self):
        try:
            values = tuple(float(v) for v in self.values)
        except (TypeError, ValueError):
            values = ()
        if not values or 0.0 in values or len(set(values)) != len(values) or not np.all(np.isfinite(values)):
            raise ValueError(f"The 'values' parameter must be a sequence of distinct nonzero finite numbers "
                             f"(the values a latent takes besides 0). Got {self.values!r}.")
        return values

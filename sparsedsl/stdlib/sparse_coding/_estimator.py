"""scikit-learn's estimator protocol: its BaseEstimator/TransformerMixin when scikit-learn is installed
(an optional dependency), else a minimal stand-in with the same get_params/set_params/fit_transform."""

from __future__ import annotations

import inspect

try:
    from sklearn.base import BaseEstimator, TransformerMixin
except ImportError:  # pragma: no cover - exercised only without scikit-learn

    class BaseEstimator:
        @classmethod
        def _get_param_names(cls):
            sig = inspect.signature(cls.__init__)
            return sorted(p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD)

        def get_params(self, deep=True):
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for key, value in params.items():
                if key not in valid:
                    raise ValueError(f"Invalid parameter {key!r} for estimator {type(self).__name__}; "
                                     f"valid parameters are {valid}")
                setattr(self, key, value)
            return self

        def __repr__(self):
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
            return f"{type(self).__name__}({args})"

    class TransformerMixin:
        def fit_transform(self, X, y=None, **fit_params):
            return self.fit(X, y, **fit_params).transform(X)


class TruncatedEM(TransformerMixin, BaseEstimator):
    """The parameters every model learned by EM with expectation truncation takes (the posterior of a
    sample ranges over the states with at most ``max_active`` causes on among its ``n_candidates`` best)."""

    def __init__(self, n_components, *, n_candidates=None, max_active=None, max_iter=100, tol=1e-6,
                 random_state=None, verbose=False):
        self.n_components = n_components
        self.n_candidates = n_candidates
        self.max_active = max_active
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose


__all__ = ["BaseEstimator", "TransformerMixin", "TruncatedEM"]

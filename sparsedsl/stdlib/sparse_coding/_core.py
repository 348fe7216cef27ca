"""The products every sparse-coding routine is made of, as sparsedsl kernels compiled once.

Each heavy product is index notation, so the operands may be numpy or cupy arrays, SparseTensors
(codes in csr, a sparse dictionary) or composites (``sd.kron`` of two small dictionaries): the
rewrite stage expands a composite and orders the contraction, a sparse operand is co-iterated, and
nothing is densified. Small dense algebra (Cholesky factors, SVDs of a few atoms) stays in numpy.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np

from ... import SparseTensor, asformat
from ... import compile as _compile

# X·Dᵀ (correlations of signals with atoms), C·D (reconstruction), D·Dᵀ (Gram), Cᵀ·X and Cᵀ·C
CROSS = _compile("G[i,k] = X[i,j] * D[k,j]")
RECON = _compile("R[i,j] = C[i,k] * D[k,j]")
GRAM = _compile("G[k,l] = D[k,j] * D[l,j]")
CODE_T_X = _compile("B[k,j] = C[i,k] * X[i,j]")
CODE_GRAM = _compile("A[k,l] = C[i,k] * C[i,l]")
# one proximal-gradient step V = Y − s(Y·G − B) followed by the proximal map of the penalty
_GRAD = "let V[i,k] = Y[i,k] - s * (Y[i,l] * G[l,k] - B[i,k])\n"
STEP = {
    # soft thresholding: prox of t‖·‖₁
    "l1": _compile(_GRAD + "Z[i,k] = sign(V[i,k]) * relu(abs(V[i,k]) - t)"),
    # hard thresholding: prox of λ‖·‖₀ keeps |v| > sqrt(2λs)
    "l0": _compile(_GRAD + "Z[i,k] = where(abs(V[i,k]) > t, V[i,k], 0.0)"),
    # CEL0 (Soubies et al. 2015), atom k of squared norm w_k: a[k] = s·sqrt(2λ w_k), b[k] = 1 − s w_k
    "cel0": _compile(_GRAD + "Z[i,k] = sign(V[i,k]) * min(abs(V[i,k]), relu((abs(V[i,k]) - a[k]) / b[k]))"),
    # generalised soft thresholding for λ|c|^q (Zuo et al. 2013): three fixed-point steps from |v|
    "lq": _compile(_GRAD + """
let M[i,k] = abs(V[i,k])
let P1[i,k] = M[i,k] - t * q * pow(M[i,k], q - 1.0)
let P2[i,k] = M[i,k] - t * q * pow(P1[i,k], q - 1.0)
let P3[i,k] = M[i,k] - t * q * pow(P2[i,k], q - 1.0)
Z[i,k] = where(M[i,k] > tau, sign(V[i,k]) * P3[i,k], 0.0)"""),
}
MOMENTUM = _compile("Y[i,k] = Z[i,k] + m * (Z[i,k] - P[i,k])")


class ConvergenceWarning(UserWarning):
    """An iterative method stopped at its iteration limit before reaching its tolerance."""


def array_module(*arrays):
    """cupy when any operand lives on the GPU, else numpy (so one code path serves both)."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith(("cupy", "cupyx")) or getattr(a, "device", None) == "cuda":
            import cupy

            return cupy
    return np


def to_numpy(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def as_codes(Z) -> SparseTensor:
    """Dense iterate → csr SparseTensor storing its nonzeros (a GPU array goes through the host)."""
    if isinstance(Z, SparseTensor):
        return Z.asformat("csr")
    return asformat(Z, "csr")


def codes_from_support(idx, val, n_atoms) -> SparseTensor:
    """csr codes from per-sample atom indices (n, s) and values (n, s), s entries per row."""
    import scipy.sparse as sp

    n, s = idx.shape
    order = np.argsort(idx, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, 1)
    val = np.take_along_axis(val, order, 1)
    m = sp.csr_matrix((val.ravel(), idx.ravel(), np.arange(0, n * s + 1, s)), shape=(n, n_atoms))
    m.eliminate_zeros()
    return asformat(m, "csr")


def dict_shape(D) -> tuple[int, int]:
    shape = tuple(getattr(D, "shape", ()))
    if len(shape) != 2:
        raise ValueError(f"The dictionary D must be 2-D (n_atoms, n_features); got shape {shape}")
    return shape


def check_signals(X, D, name="X"):
    """X as a 2-D float array matching D's n_features; 1-D X is one signal."""
    xp = array_module(X)
    X = xp.asarray(X)
    if X.ndim == 1:
        X = X[None, :]
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features); got shape {X.shape}")
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    if D is not None:
        n_atoms, n_features = dict_shape(D)
        if X.shape[1] != n_features:
            raise ValueError(f"{name} has {X.shape[1]} features but the dictionary D has {n_features} "
                             f"(D is (n_atoms, n_features) = {(n_atoms, n_features)})")
    return X


def check_positive(name, value, *, integer=False, allow_zero=False, upper=None):
    kind = Integral if integer else Real
    ok = isinstance(value, kind) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if ok and upper is not None:
        ok = value < upper
    if not ok:
        what = "an integer" if integer else "a number"
        bound = ">= 0" if allow_zero else "> 0"
        if upper is not None:
            bound += f" and < {upper}"
        raise ValueError(f"The '{name}' parameter must be {what} {bound}. Got {value!r}.")
    return value


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"The '{name}' parameter must be one of {sorted(choices)}. Got {value!r}.")
    return value


def warn_not_converged(what, max_iter, knob="max_iter"):
    warnings.warn(f"{what} did not converge in max_iter={max_iter} iterations; increase '{knob}' or loosen 'tol'",
                  ConvergenceWarning, stacklevel=3)


def progress(iterable, *, verbose, desc, total=None):
    """tqdm around ``iterable`` when verbose, else the iterable itself."""
    if not verbose:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False)


def random_state(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)

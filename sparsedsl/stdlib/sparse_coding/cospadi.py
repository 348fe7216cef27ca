"""CoSpaDi: a weight matrix as a dense dictionary times column-sparse coefficients, fitted to the
layer's output on calibration activations, and the data-aware truncated SVD it is compared with.

With a calibration batch X (n, d_in) and the Cholesky factor R of XᵀX (RᵀR = XᵀX), the output
error ‖XW − XDC‖_F equals ‖RW − RDC‖_F: CoSpaDi learns a dictionary for the columns of RW by
K-SVD with OMP (s nonzeros per column) and maps it back, D = R⁻¹D̃.
"""

from __future__ import annotations

import numpy as np

from ... import compile as _compile
from . import _core
from .learning import dict_learning

__all__ = ["cospadi", "data_aware_svd"]

_GRAM = _compile("G[j,l] = X[i,j] * X[i,l]")          # XᵀX of the calibration activations


def cospadi(W, X, *, compression=0.5, atoms_per_nonzero=2.0, max_iter=20, random_state=None, verbose=False):
    """Compress W (d_in, d_out) ≈ D C, D (d_in, k) dense, C (k, d_out) with s nonzeros per column, so that
    the calibration output error is small.

    .. math:: \\min_{D, C:\\ \\|C_{:j}\\|_0 \\le s} \\|X W - X D C\\|_F

    The budget: d_in·k + s·d_out stored values ≤ (1 − compression)·d_in·d_out, with k ≈
    atoms_per_nonzero·s (index storage not counted).

    Parameters
    ----------
    W : array (d_in, d_out). X : array (n, d_in) — calibration activations (inputs of the layer).
    compression : float in (0, 1) — fraction of W's parameters removed.
    atoms_per_nonzero : float — k / s. max_iter : K-SVD alternations. random_state, verbose.

    Returns
    -------
    D : ndarray (d_in, k); C : SparseTensor (k, d_out), csr; info : dict with k, s, params,
    relative output error.

    References
    ----------
    Shopkhoev, Ali, Zhussip, Malykh, Lefkimmiatis, Komodakis, Zagoruyko, "CoSpaDi: Compressing LLMs
    via Calibration-Guided Sparse Dictionary Learning", 2025.

    >>> rng = np.random.default_rng(0); W, X = rng.standard_normal((16, 16)), rng.standard_normal((64, 16))
    >>> D, C, info = cospadi(W, X, compression=0.5, random_state=0); info["params"] <= 128
    True
    """
    _core.check_positive("compression", compression, upper=1)
    _core.check_positive("atoms_per_nonzero", atoms_per_nonzero)
    W, X, R = _prepare(W, X)
    d_in, d_out = W.shape
    budget = (1 - compression) * d_in * d_out
    s = max(int(budget // (atoms_per_nonzero * d_in + d_out)), 1)
    k = int((budget - s * d_out) // d_in)
    if k < s:
        raise ValueError(f"compression={compression} leaves too few parameters for a dictionary of {d_in}-dim atoms; "
                         "lower 'compression'")
    k = min(k, d_out)
    Y = (R @ W).T                                      # signals: columns of RW, one per output
    codes, A, _ = dict_learning(Y, n_components=k, method="omp", update="ksvd", n_nonzero_coefs=min(s, k),
                                max_iter=max_iter, tol=1e-6, random_state=random_state, verbose=verbose)
    D = np.linalg.solve(R, A.T)                        # D = R⁻¹ D̃
    C = codes.T.asformat("csr")                        # (k, d_out)
    err = _output_error(W, X, (X @ D) @ C)
    return D, C, {"k": k, "s": s, "params": d_in * k + s * d_out, "relative_output_error": err}


def data_aware_svd(W, X, *, compression=None, rank=None):
    """The best rank-r approximation of W for the calibration output: W ≈ R⁻¹ trunc_r(R W).

    .. math:: \\min_{\\operatorname{rank} W' \\le r} \\|X W - X W'\\|_F

    Parameters
    ----------
    W, X : as :func:`cospadi`. compression : float, or rank : int — r(d_in + d_out) ≤ (1 − compression)·d_in·d_out.

    Returns
    -------
    U : ndarray (d_in, r); V : ndarray (r, d_out) with W ≈ U V; info : dict (rank, params, relative error).

    References
    ----------
    Wang, Zheng, Zhang, Chen, "SVD-LLM: Truncation-aware Singular Value Decomposition for Large
    Language Model Compression", 2024.

    >>> rng = np.random.default_rng(0); W, X = rng.standard_normal((16, 16)), rng.standard_normal((64, 16))
    >>> data_aware_svd(W, X, compression=0.5)[2]["rank"]
    4
    """
    W, X, R = _prepare(W, X)
    d_in, d_out = W.shape
    if rank is None:
        _core.check_positive("compression", compression, upper=1)
        rank = max(int((1 - compression) * d_in * d_out // (d_in + d_out)), 1)
    _core.check_positive("rank", rank, integer=True)
    u, sv, vt = np.linalg.svd(R @ W, full_matrices=False)
    U = np.linalg.solve(R, u[:, :rank] * sv[:rank])
    V = vt[:rank]
    err = _output_error(W, X, (X @ U) @ V)
    return U, V, {"rank": rank, "params": rank * (d_in + d_out), "relative_output_error": err}


def _prepare(W, X):
    W = np.asarray(_core.to_numpy(W), dtype=float)
    X = np.asarray(_core.to_numpy(X), dtype=float)
    if W.ndim != 2 or X.ndim != 2 or X.shape[1] != W.shape[0]:
        raise ValueError(f"W must be (d_in, d_out) and X (n, d_in); got W {W.shape}, X {X.shape}")
    G = _GRAM(X=X)
    G = G + 1e-8 * np.trace(G) / len(G) * np.eye(len(G))   # a rank-deficient calibration set stays invertible
    R = np.linalg.cholesky(G).T                              # RᵀR = XᵀX
    return W, X, R


def _output_error(W, X, approx_out):
    ref = X @ W
    return float(np.linalg.norm(ref - approx_out) / np.linalg.norm(ref))

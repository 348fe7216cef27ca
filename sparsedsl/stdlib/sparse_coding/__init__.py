"""Sparse coding and dictionary learning written on sparsedsl kernels (issue 15).

Conventions are scikit-learn's: signals ``X`` (n_samples, n_features), dictionary ``D``
(n_atoms, n_features) with unit-norm rows, codes ``C`` (n_samples, n_atoms), ``X ≈ C D``; the ℓ1
objective is ``½‖X − CD‖²_F + alpha‖C‖₁``. Codes are csr SparseTensors; dictionaries may be
dense, sparse or composite (``sd.kron``); cupy inputs run on the GPU.
"""

from ._core import ConvergenceWarning
from .encoders import cel0, fista, iht, ista, lq, nnz_at_error, omp, sparse_encode

__all__ = ["ConvergenceWarning", "cel0", "fista", "iht", "ista", "lq", "nnz_at_error", "omp", "sparse_encode"]

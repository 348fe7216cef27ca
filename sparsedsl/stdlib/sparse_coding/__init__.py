"""Sparse coding and dictionary learning written on sparsedsl kernels (issue 15).

Conventions are scikit-learn's: signals ``X`` (n_samples, n_features), dictionary ``D``
(n_atoms, n_features) with unit-norm rows, codes ``C`` (n_samples, n_atoms), ``X ≈ C D``; the ℓ1
objective is ``½‖X − CD‖²_F + alpha‖C‖₁``. Codes are csr SparseTensors; dictionaries may be
dense, sparse or composite (``sd.kron``); cupy inputs run on the GPU.

- encoders (``encoders``): ista, fista, iht (ℓ0), lq, cel0, omp, sparse_encode, nnz_at_error
- dictionary learning (``learning``): dict_learning (MOD, K-SVD), dict_learning_online,
  DictionaryLearning, MiniBatchDictionaryLearning
- OnlineOrthogonalDictionaryLearning (``orthogonal``): streaming Frank–Wolfe
- cospadi, data_aware_svd (``cospadi``): weight compression on calibration activations
- BinarySparseCoding (``bsc``), DiscreteSparseCoding (``discrete``, ternary by default),
  MaximalCausesAnalysis (``mca``), SpikeSlabSparseCoding (``gsc``): EM with expectation truncation
"""

from ._core import ConvergenceWarning
from .bsc import BinarySparseCoding
from .cospadi import cospadi, data_aware_svd
from .discrete import DiscreteSparseCoding
from .encoders import cel0, fista, iht, ista, lq, nnz_at_error, omp, sparse_encode
from .gsc import SpikeSlabSparseCoding
from .learning import DictionaryLearning, MiniBatchDictionaryLearning, dict_learning, dict_learning_online
from .mca import MaximalCausesAnalysis
from .orthogonal import OnlineOrthogonalDictionaryLearning

__all__ = ["BinarySparseCoding", "ConvergenceWarning", "DictionaryLearning", "DiscreteSparseCoding",
           "MaximalCausesAnalysis", "MiniBatchDictionaryLearning", "OnlineOrthogonalDictionaryLearning",
           "SpikeSlabSparseCoding", "cel0", "cospadi", "data_aware_svd", "dict_learning", "dict_learning_online",
           "fista", "iht", "ista", "lq", "nnz_at_error", "omp", "sparse_encode"]

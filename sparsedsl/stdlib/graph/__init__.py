"""Graph sparsification and embeddings written on sparsedsl kernels.

Every function takes an undirected weighted graph as the user holds it (a symmetric scipy.sparse
matrix, a networkx Graph with edge attribute ``weight``, or a SparseTensor) and returns the result
in the same kind. The sparse products (Laplacian times a block of vectors inside conjugate
gradient, the random-walk transition times a block, incidence products, degree aggregations) are
sparsedsl kernels compiled once below; O(n) and O(m) vector work is numpy.
"""

from .dynamic import DynamicSparsifier
from .embeddings import fastrp, teddy, very_sparse_projection
from .sparsify import (
                       effective_resistances,
                       jl_relative_error,
                       laplacian_quadratic_ratio,
                       sparsifier_bounds,
                       spectral_sparsify,
)

__all__ = ["DynamicSparsifier", "effective_resistances", "fastrp", "jl_relative_error", "laplacian_quadratic_ratio",
           "sparsifier_bounds", "spectral_sparsify", "teddy", "very_sparse_projection"]

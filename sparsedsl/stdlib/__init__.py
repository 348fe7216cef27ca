"""Algorithms written on top of the DSL, one module each, citing the paper it implements."""
# graph (spectral_sparsify, DynamicSparsifier, teddy, fastrp) and ot (sinkhorn, sinkhorn_newton_sparse) are
# imported on demand (`from sparsedsl.stdlib import graph, ot`): their kernels are parsed at import (~45 ms).

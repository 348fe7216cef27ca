"""Hand-written kernels for loop nests the generic CUDA kernels run badly: the skinny tensor-core
products of N:M and bitmap weights (``skinny``) and SpGEMM's hash-table rows (``spgemm``)."""

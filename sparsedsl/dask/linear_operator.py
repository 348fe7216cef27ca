"""A PartitionedTensor as a scipy ``LinearOperator``: any SpMV-bound iterative solver that takes one
(``scipy.sparse.linalg.cg``, ``gmres``, ``eigsh``, ``lobpcg``...) then runs its products on Dask."""

from __future__ import annotations

import numpy as np
from scipy.sparse.linalg import LinearOperator

from .partitioned import PartitionedTensor


def aslinearoperator(A: PartitionedTensor, **compute_kwargs) -> LinearOperator:
    """``A`` as a LinearOperator whose ``A @ v``, ``A @ V`` and ``A.T @ v`` are partitioned kernel
    calls computed at once (``compute_kwargs`` go to ``.compute()``)."""
    if not isinstance(A, PartitionedTensor) or A.ndim != 2:
        raise TypeError(f"aslinearoperator() takes a 2-D PartitionedTensor; got {type(A).__name__}")

    def matvec(v):
        return np.asarray((A @ np.ascontiguousarray(v).reshape(-1)).compute(**compute_kwargs))

    def matmat(V):
        return np.asarray((A @ np.ascontiguousarray(V)).compute(**compute_kwargs))

    def rmatvec(v):
        return np.asarray((np.ascontiguousarray(v).reshape(-1) @ A).compute(**compute_kwargs))

    return LinearOperator(A.shape, matvec=matvec, matmat=matmat, rmatvec=rmatvec, dtype=A.dtype)

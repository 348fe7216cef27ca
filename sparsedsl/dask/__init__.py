"""sparsedsl on Dask: compiled kernels as the per-partition work over partitioned sparse tensors.

    >>> import numpy as np, scipy.sparse as sp, sparsedsl.dask as sdd
    >>> A = sp.random(1000, 1000, density=0.01, format="csr", random_state=0)
    >>> PA = sdd.partition(A, 4)                      # row blocks, about equal nonzeros each
    >>> y = (PA @ np.ones(1000)).compute()            # SpMV: one task per block, a dask array
    >>> bool(np.allclose(y, A @ np.ones(1000)))
    True

The same code runs on a laptop (no Client: Dask's threads; ``LocalCluster``) and on a cluster
(``distributed.Client("tcp://scheduler:8786")``): see docs/dask.md.
"""

from .linear_operator import aslinearoperator
from .mtx import read as read_mtx
from .partition import partition
from .partitioned import PartitionedTensor
from .tasks import call, compute, worker_stats

__all__ = ["PartitionedTensor", "aslinearoperator", "call", "compute", "partition", "read_mtx", "worker_stats"]

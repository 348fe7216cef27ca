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

try:
    import dask  # noqa: F401
except ImportError as exc:  # the extra is not installed
    raise ImportError("sparsedsl.dask needs dask and distributed: pip install 'sparsedsl[dask]'") from exc

from . import ops  # noqa: E402, F401 (installs PartitionedTensor's operators)
from .linear_operator import aslinearoperator  # noqa: E402
from .mtx import read as read_mtx  # noqa: E402
from .partition import partition  # noqa: E402
from .partitioned import PartitionedTensor  # noqa: E402
from .tasks import call, compute, worker_stats  # noqa: E402

__all__ = ["PartitionedTensor", "aslinearoperator", "call", "compute", "partition", "read_mtx", "worker_stats"]

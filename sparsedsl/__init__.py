"""sparsedsl: storage formats as levels, index notation, compiled kernels.

    >>> import numpy as np, scipy.sparse as sp, sparsedsl
    >>> A = sparsedsl.asformat(sp.random(100, 100, density=0.05, format="csr", random_state=0), "csr")
    >>> y = sparsedsl.compute("y[i] = A[i,j] * x[j]", A=A, x=np.ones(100))
"""

from . import array_ops, fit, io  # noqa: F401 (array_ops installs SparseTensor's operators)
from .advise import advise, bench  # sd.advise (the fastest format) and sd.bench (the roofline)
from .compiler import Kernel, compile, compute, explain, sparse_kernel
from .composite import kron, lowrank, monarch
from .creation import eye, random, zeros
from .errors import DSLError, FormatError
from .lang.check import semiring
from .lang.formats import Format, as_format
from .loader import load
from .settings import config
from .stdlib import prune
from .tensor import SparseTensor, asformat, from_coordinates

__version__ = "0.1.0"
__all__ = ["DSLError", "FormatError", "Format", "Kernel", "SparseTensor", "as_format", "asformat", "compile",
           "compute", "config", "explain", "fit", "from_coordinates", "kron", "load", "lowrank", "monarch", "prune",
           "semiring", "sparse_kernel"]
__all__ += ["eye", "io", "random", "zeros"]  # SparseTensor as an array: constructors, Matrix Market/npz
__all__ += ["advise", "bench"]  # the roofline and the format advisor

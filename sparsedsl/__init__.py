"""sparsedsl: storage formats as levels, index notation, compiled kernels."""

from .errors import DSLError, FormatError
from .lang.formats import Format, as_format
from .tensor import SparseTensor, asformat, from_coordinates

__version__ = "0.1.0"
__all__ = ["DSLError", "FormatError", "Format", "as_format", "SparseTensor", "asformat", "from_coordinates"]

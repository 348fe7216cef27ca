"""SparseTensor's array operators, each a kernel compiled once and cached.

Every operator is index notation run through :func:`sparsedsl.compile` — ``A @ x`` is
``y[i] = A[i,j] * x[j]``, ``A + B`` is ``C[i,j] = A[i,j] + B[i,j]``, ``A.sum(axis=0)`` is
``s[j] = A[i,j]`` — so none densifies a sparse operand and every format works. The kernels live in
one small cache, ``_KERNELS``, keyed by (expression, output format, operand formats and dtypes).

The conventions are those of scipy.sparse arrays and pydata/sparse:

* an absent entry is 0. Sparse op sparse is sparse: the union for ``+`` and ``-``, the intersection
  for ``*``, in csr when 2-D (``sparse`` when 1-D, the left operand's format otherwise);
* ``-A``, ``abs(A)``, ``A * c`` and ``A / c`` keep A's format; ``A + c`` is refused for c != 0 (every
  entry would be present: scipy's rule), so is ``c / A`` and sparse ``/`` sparse;
* sparse ``*`` dense is sparse; sparse ``+``, ``-``, ``/`` dense and ``@`` with a dense side are
  numpy arrays. The dense side broadcasts as in numpy (``A * x[None, :]``, ``A - x``);
* a SparseTensor in the ``dense`` format acts as a numpy array, and elementwise results of such
  tensors stay SparseTensors in the dense format;
* dtypes follow numpy's promotion (NEP 50: a Python scalar does not widen float32), then the
  nearest storable dtype (float32/float64/int32/int64/bool);
* comparisons give bool tensors that store exactly their True entries (as scipy's do). Where the
  comparison of two absent entries is itself True (``A == B``, ``A <= B``, ``A >= B``, ``A < c`` for
  c > 0, ...) the result stores every such position, as scipy's does, so it is refused above
  ``AUTO_DENSIFY_LIMIT`` positions: compare with ``!=``, ``<`` or ``>`` instead, or densify.
"""

from __future__ import annotations

import math
import sys
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .compiler import Kernel, compile
from .errors import FormatError
from .lang.formats import Format, as_format
from .tensor import AUTO_DENSIFY_LIMIT, SparseTensor, asformat, from_coordinates, install_operators

MAX_KERNELS = 256  # compiled kernels kept; the oldest is dropped past this (each holds its plans)
_KERNELS: dict[tuple, Kernel] = {}
_INDEX = "ijklmnop"


def run(expr: str, out_format: Format | None = None, **operands):
    """Run ``expr`` on ``operands``, compiling it the first time this (expression, output format,
    operand formats and dtypes) is seen. ``out_format=None`` gives a dense (numpy) result."""
    key = (expr, out_format) + tuple((n, _signature(v)) for n, v in operands.items())
    kernel = _KERNELS.get(key)
    if kernel is None:
        if len(_KERNELS) >= MAX_KERNELS:
            del _KERNELS[next(iter(_KERNELS))]
        kernel = _KERNELS[key] = compile(expr, out_format=out_format)
    return kernel(**operands)


def _signature(v):
    if isinstance(v, SparseTensor):
        return v.format, v.dtype
    if isinstance(v, np.ndarray) or hasattr(v, "shape") and np.ndim(v):
        return "dense", v.ndim, v.dtype
    return "scalar", np.asarray(v).dtype


# ---- operands ---------------------------------------------------------------------------------


class _Operand(NamedTuple):
    kind: str       # "sparse", "dense" (an array, or a SparseTensor in the dense format) or "scalar"
    value: object   # a SparseTensor (sparse), an array (dense), a Python or numpy scalar


def _operand(x) -> _Operand | None:
    """What an operator's operand is; None for what it does not take (the operator then returns
    NotImplemented, so Python tries the other side: a composite's ``__radd__``, say)."""
    if type(x) is np.ndarray and x.ndim and x.dtype.kind in "biuf":  # the common case, first
        return _Operand("dense", x)
    if isinstance(x, SparseTensor):
        if x.format.is_dense:
            return _Operand("dense", x.values.reshape(x.shape))
        return _Operand("sparse", x)
    if sp.issparse(x):
        return _Operand("sparse", asformat(x, "csr" if x.ndim == 2 else "sparse"))
    if isinstance(x, (bool, int, float, np.bool_, np.integer, np.floating)):
        return _Operand("scalar", x)
    if isinstance(x, (np.ndarray, list, tuple)):
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            return None
        return _Operand("scalar", arr[()]) if arr.ndim == 0 else _Operand("dense", arr)
    if hasattr(x, "__cuda_array_interface__") and hasattr(x, "shape"):
        return _Operand("dense", x)
    return None


def _sample(op: _Operand):
    """A stand-in that numpy promotes as it would the operand (Python scalars stay weak)."""
    return op.value if op.kind == "scalar" else np.ones(1, op.value.dtype)


def _storable(dt) -> np.dtype:
    """The nearest dtype a SparseTensor stores (float16 -> float32, int8 -> int32, ...)."""
    dt = np.dtype(dt)
    if dt.kind == "b":
        return dt
    if dt.kind == "f" and dt.itemsize <= 8:
        return np.dtype(np.float32 if dt.itemsize <= 4 else np.float64)
    if dt.kind in "iu" and np.can_cast(dt, np.int64):
        return np.dtype(np.int32 if np.can_cast(dt, np.int32) else np.int64)
    raise TypeError(f"dtype {dt} is not supported by sparse operators; use float32, float64, int32, int64 or bool")


def _as(v, dtype):
    """``v`` (tensor, array or scalar) with values of ``dtype``."""
    if isinstance(v, SparseTensor):
        return v if v.dtype == dtype else v.astype(dtype)
    if type(v) is np.ndarray and v.dtype == dtype and v.flags.c_contiguous:
        return v
    if hasattr(v, "shape") and np.ndim(v):
        if hasattr(v, "__cuda_array_interface__"):
            return v.astype(dtype, copy=False)
        return np.ascontiguousarray(v, dtype=dtype)
    return dtype.type(v)


def _cast(result, dtype):
    return result if result.dtype == dtype else result.astype(dtype)


def _idx(dims) -> str:
    return "[" + ",".join(_INDEX[d] for d in dims) + "]"


def _sparse_format(A: SparseTensor) -> Format:
    """The format of a sparse result computed from ``A`` and another operand."""
    return as_format({1: "sparse", 2: "csr"}.get(A.ndim) or A.format, A.ndim)


def _broadcast(arr, shape):
    """A dense operand broadcast against ``shape`` (numpy's rule): the array without its broadcast
    length-1 axes, and the dimensions of ``shape`` it indexes."""
    if np.ndim(arr) > len(shape):
        raise ValueError(f"operands could not be broadcast together with shapes {shape} {tuple(arr.shape)}")
    lead = len(shape) - arr.ndim
    dims = []
    for a, n in enumerate(arr.shape):
        if n == shape[lead + a]:
            dims.append(lead + a)
        elif n != 1:
            raise ValueError(f"operands could not be broadcast together with shapes {shape} {tuple(arr.shape)}")
    return arr.reshape(tuple(shape[d] for d in dims)), dims


def _same_shape(A, B, what):
    if A.shape != B.shape:
        raise ValueError(f"{what}: the sparse operands have shapes {A.shape} and {B.shape}; they must be equal")


def _dense_access(name, arr, shape):
    """(index-notation access, kernel operand) for a dense operand broadcast to ``shape``."""
    arr, dims = _broadcast(arr, shape)
    return (f"{name}{_idx(dims)}", arr) if dims else (name, arr[()])


# ---- elementwise arithmetic -----------------------------------------------------------------

_ARITH = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide}


def elementwise(op: str, a, b):
    """``a op b`` for op in + - * /, where ``a`` or ``b`` is a SparseTensor; the other a SparseTensor,
    a scipy.sparse matrix or array, a numpy array or a scalar."""
    x, y = _operand(a), _operand(b)
    if x is None or y is None:
        return NotImplemented
    dtype = _storable(_ARITH[op](_sample(x), _sample(y)).dtype)  # numpy's promotion, and numpy's TypeError
    if "sparse" not in (x.kind, y.kind):
        return _dense_elementwise(op, x, y, dtype)
    if x.kind == y.kind == "sparse":
        A, B = x.value, y.value
        _same_shape(A, B, f"A {op} B")
        if op == "/":
            raise TypeError("A / B of two sparse tensors would be 0/0 = nan wherever both are absent; divide by "
                            "a scalar or a dense array, or write the kernel you mean with sd.compute")
        ix = _idx(range(A.ndim))
        out = run(f"C{ix} = A{ix} {op} B{ix}", _sparse_format(A), A=_as(A, dtype), B=_as(B, dtype))
        return _cast(out, dtype)
    if "scalar" in (x.kind, y.kind):
        return _sparse_scalar(op, x, y, dtype)
    return _sparse_dense(op, x, y, dtype)


def _sparse_scalar(op, x, y, dtype):
    scalar_first = x.kind == "scalar"
    A, c = (y.value, x.value) if scalar_first else (x.value, y.value)
    ix = _idx(range(A.ndim))
    if op in "+-":
        if c != 0:
            raise NotImplementedError(f"{'c ' + op + ' A' if scalar_first else 'A ' + op + ' c'} with a nonzero "
                                      f"scalar c would store every entry (scipy refuses it too); use "
                                      f"A.todense() {op} c")
        return negative(_as(A, dtype)) if op == "-" and scalar_first else _cast(A.copy(), dtype)
    if op == "/" and scalar_first:
        raise TypeError("c / A divides by every absent entry (c / 0); divide the dense array: c / A.todense()")
    out = run(f"C{ix} = A{ix} {op} s", A.format, A=_as(A, dtype), s=_as(c, dtype))
    return _cast(out, dtype)


def _sparse_dense(op, x, y, dtype):
    sparse_first = x.kind == "sparse"
    A, X = (x.value, y.value) if sparse_first else (y.value, x.value)
    ix = _idx(range(A.ndim))
    xs, Xk = _dense_access("X", _as(X, dtype), A.shape)
    a = f"A{ix}" if op != "/" else f"(A{ix} + mask({xs}, 0))"  # A over every position: 0/x, x/0 as numpy
    expr = f"C{ix} = {a} {op} {xs}" if sparse_first else f"C{ix} = {xs} {op} {a}"
    out_format = _sparse_format(A) if op == "*" else None  # sparse * dense is sparse, the rest dense
    return _cast(run(expr, out_format, A=_as(A, dtype), X=Xk), dtype)


def _dense_elementwise(op, x, y, dtype, out_dtype=None):
    """Neither side sparse: a SparseTensor in the dense format with an array or a scalar."""
    shape = np.broadcast_shapes(np.shape(x.value), np.shape(y.value))
    ix = _idx(range(len(shape)))
    xs, Xk = _dense_access("X", _as(x.value, dtype), shape) if x.kind == "dense" else ("X", _as(x.value, dtype))
    ys, Yk = _dense_access("Y", _as(y.value, dtype), shape) if y.kind == "dense" else ("Y", _as(y.value, dtype))
    out = _cast(run(f"C{ix} = {xs} {op} {ys}", X=Xk, Y=Yk), out_dtype or dtype)
    return asformat(out, "dense")


# ---- unary ----------------------------------------------------------------------------------


def negative(A: SparseTensor):
    """``-A`` in A's format (numpy's TypeError for bool)."""
    return _unary("-{}", np.negative, A)


def absolute(A: SparseTensor):
    """``abs(A)`` in A's format."""
    return _unary("abs({})", np.absolute, A)


def _unary(template, ufunc, A):
    dtype = _storable(ufunc(np.zeros(1, A.dtype)).dtype)
    ix = _idx(range(A.ndim))
    if A.format.is_dense:
        out = run(f"C{ix} = " + template.format(f"A{ix}"), A=A.values.reshape(A.shape))
        return asformat(_cast(out, dtype), "dense")
    return _cast(run(f"C{ix} = " + template.format(f"A{ix}"), A.format, A=A), dtype)


# ---- comparisons ----------------------------------------------------------------------------

_COMPARE = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
            ">=": np.greater_equal}
_SWAPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


def compare(op: str, a, b):
    """``a op b`` elementwise, a bool result (see the module docstring for which positions it stores)."""
    x, y = _operand(a), _operand(b)
    if x is None or y is None:
        return NotImplemented
    if x.kind != "sparse" and y.kind == "sparse":
        x, y, op = y, x, _SWAPPED[op]
    dtype = _storable(np.result_type(_sample(x), _sample(y)))  # the type both sides are compared in
    if x.kind != "sparse":
        return _dense_elementwise(op, x, y, dtype, np.dtype(np.bool_))
    A = _as(x.value, dtype)
    ix = _idx(range(A.ndim))
    a = f"A{ix}"
    if y.kind == "dense":
        xs, Xk = _dense_access("X", _as(y.value, dtype), A.shape)
        out = run(f"C{ix} = (A{ix} + mask({xs}, 0)) {op} {xs}", A=A, X=Xk)  # every position: a dense result
        return _cast(out, np.dtype(np.bool_))
    if y.kind == "sparse":
        B = _as(y.value, dtype)
        _same_shape(A, B, f"A {op} B")
        # both sides over the union of the patterns, the absent side as 0
        expr = f"C{ix} = ({a} + mask(B{ix}, 0)) {op} (B{ix} + mask({a}, 0))"
        stored = run(expr, _sparse_format(A), A=A, B=B)
        absent = bool(_COMPARE[op](0, 0))
    else:
        c = _as(y.value, dtype)
        stored = run(f"C{ix} = {a} {op} c", _sparse_format(A), A=A, c=c)
        absent = bool(_COMPARE[op](dtype.type(0), c))
    return _true_entries(stored, absent, op)


def _true_entries(stored: SparseTensor, absent: bool, op: str) -> SparseTensor:
    """A bool tensor storing exactly the True positions: those of ``stored`` (the comparison at every
    position either operand stores) and, when ``absent`` is True, every position neither stores."""
    coords, vals = stored.coordinates()
    vals = vals.astype(bool)
    if not absent:
        keep = coords[:, vals]
        return from_coordinates(keep, np.ones(keep.shape[1], dtype=np.bool_), stored.shape, stored.format)
    size = math.prod(stored.shape)
    if size > AUTO_DENSIFY_LIMIT:
        raise FormatError(f"this '{op}' comparison is True wherever both sides are absent, so its result would "
                          f"store almost all of the {size} positions of shape {stored.shape} (more than "
                          f"AUTO_DENSIFY_LIMIT = {AUTO_DENSIFY_LIMIT}). Compare with the opposite operator "
                          f"(!=, <, >), which stays sparse, or compare .todense() arrays")
    full = np.ones(stored.shape, dtype=np.bool_)
    full[tuple(coords[:, ~vals])] = False
    return asformat(full, stored.format)


# ---- matmul ---------------------------------------------------------------------------------


def _matmul_expr(nd_a, nd_b):
    ia, ib = ("i" if nd_a == 2 else "") + "j", "j" + ("k" if nd_b == 2 else "")
    out = ia[:-1] + ib[1:]
    return f"C[{','.join(out)}] = A[{','.join(ia)}] * B[{','.join(ib)}]", out


_MATMUL = {(a, b): _matmul_expr(a, b) for a in (1, 2) for b in (1, 2)}  # (expression, output indices)


def matmul(a, b):
    """``a @ b`` for 1-D and 2-D operands. Sparse @ sparse is sparse (csr when 2-D); with a dense
    side the result is a numpy array; a 1-D @ 1-D product is a numpy scalar."""
    x, y = _operand(a), _operand(b)
    if x is None or y is None:
        return NotImplemented
    if "scalar" in (x.kind, y.kind):
        raise ValueError("matmul: an operand is a scalar; use * to scale a tensor")
    sa, sb = tuple(x.value.shape), tuple(y.value.shape)
    if not (1 <= len(sa) <= 2 and 1 <= len(sb) <= 2):
        raise ValueError(f"matmul: operands must be 1-D or 2-D, got shapes {sa} and {sb}")
    if sa[-1] != sb[0]:
        raise ValueError(f"matmul: shapes {sa} and {sb} are not aligned: {sa[-1]} (dim {len(sa) - 1}) != {sb[0]} "
                         f"(dim 0)")
    dtype = _storable(np.result_type(x.value.dtype, y.value.dtype))
    expr, out = _MATMUL[len(sa), len(sb)]
    if x.kind == y.kind == "sparse" and out:
        out_format = as_format("csr" if len(out) == 2 else "sparse", len(out))
    else:
        out_format = None
    result = run(expr, out_format, A=_as(x.value, dtype), B=_as(y.value, dtype))
    if not out:
        return dtype.type(np.asarray(result)[()])
    return _cast(result, dtype)


# ---- reductions -----------------------------------------------------------------------------


def reduce(kind: str, A: SparseTensor, axis=None):
    """``A.sum(axis)``, ``A.max(axis)`` or ``A.min(axis)`` (kind "sum", "max", "min").

    ``axis=None`` reduces everything and gives a numpy scalar; an int or a tuple of ints gives a
    dense numpy array. Absent entries count as 0 (scipy's rule), so the max of a row that does not
    store every column is at least 0. A sum of integers or bools is int64 (numpy's ``sum``)."""
    nd = A.ndim
    axes = _axes(axis, nd)
    dtype = _storable(np.sum(np.zeros(1, A.dtype)).dtype if kind == "sum" else A.dtype)
    src = A.values.reshape(A.shape) if A.format.is_dense else A
    src = _as(src, dtype)
    full = len(axes) == nd
    keep = [d for d in range(nd) if d not in axes]  # none for a full reduction: a 0-d result
    red = [d for d in range(nd) if d not in keep]
    ix, kx, rx = _idx(range(nd)), _idx(keep), ",".join(_INDEX[d] for d in red)
    if kind == "sum":
        out = _cast(np.asarray(run(f"s{kx} = A{ix}", A=src)), dtype)
        return dtype.type(out[()]) if full else out
    extent = math.prod(A.shape[d] for d in red)
    if extent == 0:
        raise ValueError(f"zero-size reduction: {kind}() of a tensor of shape {A.shape} over axis {axis} has no "
                         f"identity")
    best = np.asarray(run(f"m{kx} = {kind}[{rx}](A{ix})", A=src))  # over stored entries; identity where none
    count = np.asarray(run(f"n{kx} = sum[{rx}](mask(A{ix}, 1))", A=src))
    with_zero = np.maximum(best, 0) if kind == "max" else np.minimum(best, 0)
    out = _cast(np.where(count < extent, with_zero, best), dtype)  # an absent entry is a 0 in the running
    return dtype.type(out[()]) if full else out


def _axes(axis, nd) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(nd))
    items = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in items:
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool) or not -nd <= a < nd:
            raise np.exceptions.AxisError(f"axis {a!r} is out of bounds for a tensor of dimension {nd}")
        out.append(int(a) % nd)
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate value in 'axis': {axis!r}")
    if not out:
        raise ValueError("axis=() reduces nothing; pass None, an int or a tuple of ints")
    return tuple(sorted(out))


install_operators(sys.modules[__name__])  # SparseTensor's operators call this module

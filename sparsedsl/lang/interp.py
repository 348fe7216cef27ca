"""The dense reference interpreter: evaluates a checked program with numpy. It is the test oracle.

Values carry a *presence* mask: a sparse operand is present where it stores an entry. ``*``, ``/``,
comparisons and functions are present where all their arguments are (intersection); ``+`` and
``-`` where either is, the missing side counting as 0 (union); a reduction reduces present terms
only and is present where any term is. A dense result holds the identity of its reduction (0 for
a sum, +inf for min, -inf for max, False for any, True for all; 0 without a reduction) where no
term reached, and is present everywhere. A reduction nested in an expression is the temporary it is
hoisted into (lang/rewrite.py): dense, so total, unless the statement's result is sparse with the
same indices, then present where a term is.
"""

from __future__ import annotations

import numpy as np

from .ast import free_indices
from .check import Checked

_IDENTITY = {"+": 0, "max": -np.inf, "min": np.inf, "or": False, "and": True}


def interpret(checked: Checked, operands: dict, pack_sparse=None) -> dict:
    """Evaluate; ``operands`` maps names to numpy arrays, scalars or sparse tensors (anything with
    ``coordinates()`` and ``to_numpy()``). Returns the outputs: dense ones as numpy arrays, a sparse one
    as ``pack_sparse(coordinates, values, shape, format)`` (the compiler passes ``from_coordinates``),
    by default that tuple."""

    env: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    scalars = {}
    for name in checked.inputs:
        v = operands[name]
        if name in checked.scalars:
            scalars[name] = v
        elif hasattr(v, "coordinates") and hasattr(v, "to_numpy"):
            present = np.zeros(v.shape, dtype=bool)
            coords, _ = v.coordinates()
            present[tuple(coords)] = True
            env[name] = (v.to_numpy(), present)
        else:
            arr = np.asarray(v)
            env[name] = (arr, np.ones(arr.shape, dtype=bool))
    results = {}
    for st in checked.statements:
        ttype = checked.types[st.target.tensor]
        out_vars = [ix.name for ix in st.target.indices]
        axes = out_vars + list(st.reduce_indices)
        sparse_vars = None if ttype.format.is_dense else set(out_vars)
        val, present = _Eval(env, scalars, checked.extents, axes, st.mul_op, sparse_vars).run(st.value)
        shape = tuple(checked.extents[v] for v in axes)
        val = np.broadcast_to(val, shape)
        present = np.broadcast_to(present, shape)
        red = tuple(range(len(out_vars), len(axes)))
        val, present = _reduce(val, present, st.reduce_op, red)
        empty = identity(st.reduce_op, ttype.dtype) if red else 0
        val = np.where(present, val, empty).astype(ttype.dtype)
        if st.accumulate:
            val = env[st.target.tensor][0] + val
        if ttype.format.is_dense:
            present = np.ones_like(present)
        env[st.target.tensor] = (val, present)
        if st.target.tensor in checked.outputs:
            if ttype.format.is_dense:
                results[st.target.tensor] = val
            else:
                idx = np.nonzero(present)
                packed = (np.array(idx).reshape(val.ndim, -1), val[idx], val.shape, ttype.format)
                results[st.target.tensor] = pack_sparse(*packed) if pack_sparse else packed
    return results


def identity(op: str, dtype):
    """The value a reduction ``op`` has over no terms, in ``dtype`` (the closest integer for an
    integer min/max, whose identity +-inf has no integer)."""
    dtype = np.dtype(dtype)
    if op in ("max", "min") and dtype.kind in "iu":
        return np.iinfo(dtype).min if op == "max" else np.iinfo(dtype).max
    if op in ("max", "min") and dtype.kind == "b":
        return op == "min"
    return _IDENTITY[op]


def _reduce(val, present, op, axes):
    if not axes:
        return val, present
    with np.errstate(invalid="ignore"):
        if op == "+":
            out = np.where(present, val, 0).sum(axis=axes)
        elif op in ("max", "min"):
            f = np.max if op == "max" else np.min
            out = f(np.where(present, val, identity(op, val.dtype)), axis=axes)
        elif op == "or":
            out = np.any(present & val.astype(bool), axis=axes)
        else:
            out = np.all(np.where(present, val.astype(bool), True), axis=axes)
    return out, np.any(present, axis=axes)


class _Eval:
    def __init__(self, env, scalars, extents, axes, mul_op, sparse_vars=None):
        self.env, self.scalars, self.extents, self.axes, self.mul = env, scalars, extents, axes, mul_op
        self.sparse_vars = sparse_vars  # the result's indices when it is sparse (see Reduce)

    def run(self, e):
        return getattr(self, type(e).__name__)(e)

    def place(self, arr, names):
        """Move ``arr`` (axes ``names``) onto the statement's axes, adding size-1 axes."""
        order = sorted(range(len(names)), key=lambda k: self.axes.index(names[k]))
        arr = np.transpose(arr, order)
        shape = [1] * len(self.axes)
        for k in order:
            shape[self.axes.index(names[k])] = arr.shape[order.index(k)]
        return arr.reshape(shape)

    def Access(self, e):
        val, present = self.env[e.tensor]
        names = [ix.name for ix in e.indices]
        return self.place(val, names), self.place(present, names)

    def Literal(self, e):
        return e.value, np.asarray(True)  # a Python number: weak in numpy's promotion, as in the checker

    def Scalar(self, e):
        v = self.scalars[e.name]
        return (v if type(v) in (int, float, bool) else np.asarray(v)), np.asarray(True)

    def Neg(self, e):
        v, p = self.run(e.operand)
        return -_counted(v), p

    def BinOp(self, e):
        (a, pa), (b, pb) = self.run(e.left), self.run(e.right)
        with np.errstate(all="ignore"):
            if e.op in "+-":
                a, b = _counted(a), _counted(b)
                both = a + b if e.op == "+" else a - b
                only_b = b if e.op == "+" else -b
                return np.where(pa & pb, both, np.where(pa, a, only_b)), pa | pb
            if e.op == "*":
                return _combine(self.mul, a, b), pa & pb
            if e.op == "/":
                return np.true_divide(a, b), pa & pb
            return _COMPARE[e.op](a, b), pa & pb

    def Call(self, e):
        args = [self.run(a) for a in e.args]
        present = np.asarray(True)
        for _, p in args:
            present = present & p
        vals = [v for v, _ in args]
        if e.fn == "sign":  # of a boolean: the integer 0 or 1, as in + and -
            vals = [_counted(v) for v in vals]
        if e.fn in _FLOATING:  # of integers and booleans: float64, as the checker types it (numpy: float16 for bool)
            vals = [np.asarray(v, dtype=np.float64) if np.asarray(v).dtype.kind in "biu" else v for v in vals]
        with np.errstate(all="ignore"):
            return _FUNCS[e.fn](*vals), present

    def Reduce(self, e):
        inner_axes = self.axes + [ix.name for ix in e.indices]
        sub = _Eval(self.env, self.scalars, self.extents, inner_axes, _semiring_mul(e.op, self.mul), self.sparse_vars)
        v, p = sub.run(e.body)
        shape = tuple(self.extents[a] for a in inner_axes)
        v, p = np.broadcast_to(v, shape), np.broadcast_to(p, shape)
        from .check import REDUCERS, SEMIRINGS

        op = REDUCERS.get(e.op) or SEMIRINGS[e.op][0]
        v, p = _reduce(v, p, op, tuple(range(len(self.axes), len(inner_axes))))
        v = np.where(p, v, identity(op, v.dtype))
        if self.sparse_vars is not None and set(free_indices(e)) == self.sparse_vars:
            return v, p  # a sparse temporary in the result's format: present where a term is
        return v, np.ones_like(p)  # a dense temporary: present everywhere


def _counted(v):
    """Booleans in + and - (and negation) are the integers 0 and 1, as the checker types them (int64)."""
    return np.asarray(v).astype(np.int64) if np.asarray(v).dtype == np.bool_ else v


def _semiring_mul(op, default):
    from .check import SEMIRINGS

    return SEMIRINGS[op][1] if op in SEMIRINGS else "*"


def _combine(op, a, b):
    return {"*": np.multiply, "+": np.add, "max": np.maximum, "min": np.minimum,
            "and": np.logical_and, "or": np.logical_or}[op](a, b)


_COMPARE = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal,
            "!=": np.not_equal}
_FLOATING = {"exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid"}
_FUNCS = {
    "exp": np.exp, "log": np.log, "abs": np.abs, "sqrt": np.sqrt, "relu": lambda x: np.maximum(x, 0),
    "sign": np.sign, "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "where": lambda c, a, b: np.where(c, a, b),
    "mask": lambda p, e: np.broadcast_to(e, np.broadcast(p, e).shape),  # e's values and dtype, p's shape
    "pow": np.power, "min": np.minimum, "max": np.maximum,
}

"""The dense reference interpreter: evaluates a checked program with numpy. It is the test oracle.

Values carry a *presence* mask: a sparse operand is present where it stores an entry. ``*``, ``/``,
comparisons and functions are present where all their arguments are (intersection); ``+`` and
``-`` where either is, the missing side counting as 0 (union); a reduction reduces present terms
only and is present where any term is. Absent entries of a dense result are 0.
"""

from __future__ import annotations

import numpy as np

from .check import Checked

_IDENTITY = {"+": 0, "max": -np.inf, "min": np.inf, "or": False, "and": True}


def interpret(checked: Checked, operands: dict) -> dict:
    """Evaluate; ``operands`` maps names to numpy arrays, SparseTensors or scalars. Returns outputs."""
    from ..tensor import SparseTensor, from_coordinates

    env: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    scalars = {}
    for name in checked.inputs:
        v = operands[name]
        if name in checked.scalars:
            scalars[name] = v
        elif isinstance(v, SparseTensor):
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
        val, present = _Eval(env, scalars, checked.extents, axes, st.mul_op).run(st.value)
        shape = tuple(checked.extents[v] for v in axes)
        val = np.broadcast_to(val, shape)
        present = np.broadcast_to(present, shape)
        red = tuple(range(len(out_vars), len(axes)))
        val, present = _reduce(val, present, st.reduce_op, red)
        val = np.where(present, val, 0).astype(ttype.dtype)
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
                results[st.target.tensor] = from_coordinates(np.array(idx).reshape(val.ndim, -1), val[idx],
                                                             val.shape, ttype.format)
    return results


def _reduce(val, present, op, axes):
    if not axes:
        return val, present
    with np.errstate(invalid="ignore"):
        if op == "+":
            out = np.where(present, val, 0).sum(axis=axes)
        elif op in ("max", "min"):
            fill = _IDENTITY[op] if val.dtype.kind == "f" else (
                np.iinfo(val.dtype).min if op == "max" else np.iinfo(val.dtype).max) if val.dtype.kind in "iu" \
                else (op == "min")
            f = np.max if op == "max" else np.min
            out = f(np.where(present, val, fill), axis=axes)
        elif op == "or":
            out = np.any(present & val.astype(bool), axis=axes)
        else:
            out = np.all(np.where(present, val.astype(bool), True), axis=axes)
    return out, np.any(present, axis=axes)


class _Eval:
    def __init__(self, env, scalars, extents, axes, mul_op):
        self.env, self.scalars, self.extents, self.axes, self.mul = env, scalars, extents, axes, mul_op

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
        return np.asarray(e.value), np.asarray(True)

    def Scalar(self, e):
        return np.asarray(self.scalars[e.name]), np.asarray(True)

    def Neg(self, e):
        v, p = self.run(e.operand)
        return -v, p

    def BinOp(self, e):
        (a, pa), (b, pb) = self.run(e.left), self.run(e.right)
        with np.errstate(all="ignore"):
            if e.op in "+-":
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
        with np.errstate(all="ignore"):
            return _FUNCS[e.fn](*vals), present

    def Reduce(self, e):
        inner_axes = self.axes + [ix.name for ix in e.indices]
        sub = _Eval(self.env, self.scalars, self.extents, inner_axes, _semiring_mul(e.op, self.mul))
        v, p = sub.run(e.body)
        shape = tuple(self.extents[a] for a in inner_axes)
        v, p = np.broadcast_to(v, shape), np.broadcast_to(p, shape)
        from .check import REDUCERS, SEMIRINGS

        op = REDUCERS.get(e.op) or SEMIRINGS[e.op][0]
        return _reduce(v, p, op, tuple(range(len(self.axes), len(inner_axes))))


def _semiring_mul(op, default):
    from .check import SEMIRINGS

    return SEMIRINGS[op][1] if op in SEMIRINGS else "*"


def _combine(op, a, b):
    return {"*": np.multiply, "+": np.add, "max": np.maximum, "min": np.minimum,
            "and": np.logical_and, "or": np.logical_or}[op](a, b)


_COMPARE = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal, "==": np.equal,
            "!=": np.not_equal}
_FUNCS = {
    "exp": np.exp, "log": np.log, "abs": np.abs, "sqrt": np.sqrt, "relu": lambda x: np.maximum(x, 0),
    "sign": np.sign, "sin": np.sin, "cos": np.cos, "tanh": np.tanh, "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "where": lambda c, a, b: np.where(c, a, b), "mask": lambda p, e: e + 0 * np.zeros_like(p, dtype=np.int8),
    "pow": np.power, "min": np.minimum, "max": np.maximum,
}

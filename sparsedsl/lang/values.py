"""Expressions of a statement in the loop IR, for the lowering (``lower._Lowering`` inherits them): the
presence formula (where a term has entries: intersection for ``*``, ``/``, comparisons and functions,
union for ``+``/``-``, as the interpreter rules), each term's value and presence at the innermost loop,
literals, and the identity of a reduction."""

from __future__ import annotations

import numpy as np

from . import ast as A

_IDENTITY = {"+": "0", "or": "False", "and": "True"}

def _literal(value) -> str:
    """A literal as source: inf and nan by name; an integer past int64 (checked to be used with
    floats) as a float."""
    if isinstance(value, float) and not np.isfinite(value):
        return "np.nan" if np.isnan(value) else ("np.inf" if value > 0 else "(-np.inf)")
    if type(value) is int and not -2**63 <= value < 2**63:
        return repr(float(value))
    return repr(value)


def _lit(p: str):
    return True if p == "True" else ("expr", p)


def _combine(op, a, b) -> str:
    if op in ("*", "+"):
        return f"({a} {op} {b})"
    if op in ("and", "or"):
        return f"(({a} != 0) {op} ({b} != 0))"
    return f"{op}({a}, {b})"


_FLOATING = {"exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid"}


def _call(fn, args) -> str:
    if fn == "mask":
        return args[1]
    if fn == "where":
        return f"({args[1]} if {args[0]} else {args[2]})"
    if fn == "relu":
        return f"max({args[0]}, 0)"
    return f"{fn}({', '.join(args)})"


def tensor_name(name: str) -> str:
    """The loop-IR name of a tensor's values."""
    return f"t_{name}"


class Values:
    """The lowering's expression methods (state: ``accesses``, ``canon``, ``sparse``, ``operands``,
    ``c``, ``st``, ``out_type``, ``assumed``)."""

    def presence(self, e):
        """('and'|'or', [...]), ('atom', access id) or True."""
        if isinstance(e, A.Access):
            k = self.canon[next(i for i, a in enumerate(self.accesses) if a is e)]
            return ("atom", k) if k in self.sparse else True
        if isinstance(e, (A.Literal, A.Scalar)):
            return True
        if isinstance(e, A.Neg):
            return self.presence(e.operand)
        if isinstance(e, A.BinOp):
            kind = "or" if e.op in "+-" else "and"
            return (kind, [self.presence(e.left), self.presence(e.right)])
        if isinstance(e, A.Call):
            return ("and", [self.presence(a) for a in e.args])
        raise AssertionError(type(e))

    @staticmethod
    def evaluate(f, atoms: dict) -> str:
        """The formula as an expression, atoms replaced by ``atoms[id]`` (missing ones: True)."""
        if f is True:
            return "True"
        if f[0] == "atom":
            return atoms.get(f[1], "True")
        if f[0] == "expr":
            return f[1]
        parts = [Values.evaluate(g, atoms) for g in f[1]]
        if f[0] == "and":
            if "False" in parts:
                return "False"
            parts = [p for p in parts if p != "True"]
            return "True" if not parts else parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"
        if "True" in parts:
            return "True"
        parts = [p for p in parts if p != "False"]
        return "False" if not parts else parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"

    def identity(self, op, dt) -> str:
        if op in _IDENTITY:
            return {"+": "0.0" if dt.kind == "f" else "0"}.get(op, _IDENTITY[op])
        if dt.kind == "f":
            return "-np.inf" if op == "max" else "np.inf"
        if dt.kind == "b":
            return "False" if op == "max" else "True"
        info = np.iinfo(dt)
        return str(info.min if op == "max" else info.max)

    def value(self, e, ops) -> tuple[str, str]:
        """(value expression, presence expression) of ``e`` at the current point."""
        if isinstance(e, A.Access):
            k = self.canon[next(i for i, a in enumerate(self.accesses) if a is e)]
            if k in ops:
                op = ops[k]
                if op.safe and op.present != "True" and op.level == len(op.fmt.levels):
                    return f"ld_{op.tag}", op.present  # loaded before the leaf: a select, not a branch
                return f"{op.tensor}[{op.parent.pos}]", op.present
            idx = ", ".join(self.coord(ix.name) for ix in e.indices) or "0"  # a 0-d tensor is passed as 1 element
            return f"{tensor_name(e.tensor)}[{idx}]", "True"
        if isinstance(e, A.Literal):
            return _literal(e.value), "True"
        if isinstance(e, A.Scalar):
            return f"s_{e.name}", "True"
        if isinstance(e, A.Neg):
            v, p = self.value(e.operand, ops)
            return (f"(-({v} + 0))" if self.boolean(e.operand) else f"(-{v})"), p  # a boolean counts as 0 or 1
        if isinstance(e, A.BinOp):
            (a, pa), (b, pb) = self.value(e.left, ops), self.value(e.right, ops)
            if e.op in "+-":
                a = f"({a} + 0)" if self.boolean(e.left) else a  # booleans add as integers, as the checker types them
                b = f"({b} + 0)" if self.boolean(e.right) else b
                a = a if pa == "True" else f"({a} if {pa} else 0)"
                b = b if pb == "True" else f"({b} if {pb} else 0)"
                return f"({a} {e.op} {b})", self.evaluate(("or", [_lit(pa), _lit(pb)]), {})
            pres = self.evaluate(("and", [_lit(pa), _lit(pb)]), {})
            if e.op == "*":
                return _combine(self.st.mul_op, a, b), pres
            return f"({a} {e.op} {b})", pres
        if isinstance(e, A.Call):
            vals = [self.value(x, ops) for x in e.args]
            pres = self.evaluate(("and", [_lit(p) for _, p in vals]), {})
            args = [v for v, _ in vals]
            if e.fn in _FLOATING or e.fn == "sign":  # of a boolean: float64 (numba's would be float32); sign: int
                zero = "0" if e.fn == "sign" else "0.0"
                args = [f"({v} + {zero})" if self.boolean(x) else v for v, x in zip(args, e.args)]
            return _call(e.fn, args), pres
        raise AssertionError(type(e))

    def boolean(self, e) -> bool:
        """Whether ``e`` may be boolean-valued: a bool tensor, a comparison, a bool literal, or a
        function with a boolean argument (the generated code then casts it where it counts)."""
        if isinstance(e, A.Access):
            return self.c.types[e.tensor].dtype == np.bool_
        if isinstance(e, A.BinOp):
            return e.op in ("<", "<=", ">", ">=", "==", "!=") or (
                e.op == "*" and self.boolean(e.left) and self.boolean(e.right))
        if isinstance(e, A.Call):
            args = e.args[1:] if e.fn in ("where", "mask") else e.args
            # any boolean branch: numba may type the whole as boolean (a constant condition folds)
            return e.fn in ("where", "mask", "abs", "min", "max", "relu") and any(self.boolean(a) for a in args)
        return isinstance(e, A.Literal) and isinstance(e.value, bool)

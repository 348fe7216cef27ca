"""Rewrite: put the program in the form the lowering takes.

Today this hoists every reduction nested inside an expression into a temporary statement
(``y[i] = max[j](A[i,j]) + b[i]`` becomes ``let r[i] = max[j](A[i,j]); y[i] = r[i] + b[i]``),
so each statement has at most one reduction, at its top.
"""

from __future__ import annotations

from dataclasses import replace

from . import ast as A
from .check import Checked, check


def rewrite(checked: Checked) -> Checked:
    program = checked.program
    statements: list[A.Assign] = []
    counter = [0]

    def hoist(e, top: bool):
        if isinstance(e, A.Reduce) and not top:
            body = hoist(e.body, False)
            free = _free(body, {ix.name for ix in e.indices})
            counter[0] += 1
            name = f"__red{counter[0]}"
            target = A.Access(e.span, name, tuple(A.Index(e.span, v) for v in free))
            statements.append(A.Assign(e.span, target, replace(e, body=body), True))
            return A.Access(e.span, name, target.indices)
        if isinstance(e, A.Reduce):
            return replace(e, body=hoist(e.body, False))
        if isinstance(e, A.BinOp):
            return replace(e, left=hoist(e.left, False), right=hoist(e.right, False))
        if isinstance(e, A.Neg):
            return replace(e, operand=hoist(e.operand, False))
        if isinstance(e, A.Call):
            return replace(e, args=tuple(hoist(a, False) for a in e.args))
        return e

    changed = False
    for st in program.statements:
        before = len(statements)
        value = hoist(st.value, True)
        changed |= len(statements) > before
        statements.append(replace(st, value=value))
    if not changed:
        return checked
    operands = {n: t for n, t in checked.types.items() if n in checked.inputs}
    operands.update(checked.scalars)
    return check(replace(program, statements=tuple(statements)), operands)


def _free(e, bound) -> list[str]:
    out: list[str] = []
    for node in A.walk(e):
        if isinstance(node, A.Reduce):
            inner = set(bound) | {ix.name for ix in node.indices}
            for v in _free(node.body, inner):
                if v not in out:
                    out.append(v)
            continue
        if isinstance(node, A.Access):
            for ix in node.indices:
                if ix.name not in bound and ix.name not in out:
                    out.append(ix.name)
    return out

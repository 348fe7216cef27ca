"""The index-notation AST that both front ends (text and Python) produce. Every node has a span."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import Span

NOWHERE = Span("<generated>", 1, 1)


@dataclass(frozen=True)
class Node:
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Index(Node):
    name: str = ""


@dataclass(frozen=True)
class Access(Node):
    tensor: str = ""
    indices: tuple[Index, ...] = ()


@dataclass(frozen=True)
class Literal(Node):
    value: float | int | bool = 0


@dataclass(frozen=True)
class Scalar(Node):
    """A scalar parameter used by name."""

    name: str = ""


@dataclass(frozen=True)
class BinOp(Node):
    op: str = "+"  # + - * / < <= > >= == !=
    left: Node = None
    right: Node = None


@dataclass(frozen=True)
class Neg(Node):
    operand: Node = None


@dataclass(frozen=True)
class Call(Node):
    fn: str = ""
    args: tuple[Node, ...] = ()


@dataclass(frozen=True)
class Reduce(Node):
    """``op[i, j](body)``: reduce ``body`` over the listed indices with ``op`` (sum, max, min or a semiring)."""

    op: str = "sum"
    indices: tuple[Index, ...] = ()
    body: Node = None


@dataclass(frozen=True)
class Assign(Node):
    target: Access = None
    value: Node = None
    is_let: bool = False
    accumulate: bool = False  # target += value (made by the rewrite stage for sums of terms; not in the syntax)
    format: object = None  # a temporary's format when the rewrite stage chose it (hoisted reductions)


@dataclass(frozen=True)
class Param(Node):
    name: str = ""
    kind: str = "tensor"  # "tensor" or "scalar"
    format: object = None  # a format spec (name, Format) or None: taken from the operand


@dataclass(frozen=True)
class Program(Node):
    name: str = "kernel"
    params: tuple[Param, ...] = ()
    outputs: tuple[Param, ...] = ()
    statements: tuple[Assign, ...] = ()


def walk(node):
    """Yield ``node`` and every node below it."""
    yield node
    for child in children(node):
        yield from walk(child)


def free_indices(e, bound=()) -> list[str]:
    """Free index names of ``e`` in order of first appearance (a reduction binds its indices)."""
    out: list[str] = []

    def visit(n, bound):
        if isinstance(n, Access):
            out.extend(ix.name for ix in n.indices if ix.name not in bound and ix.name not in out)
        elif isinstance(n, Reduce):
            visit(n.body, bound | {ix.name for ix in n.indices})
        else:
            for ch in children(n):
                visit(ch, bound)

    visit(e, frozenset(bound))
    return out


def children(node):
    if isinstance(node, Access):
        return node.indices
    if isinstance(node, BinOp):
        return (node.left, node.right)
    if isinstance(node, Neg):
        return (node.operand,)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Reduce):
        return (*node.indices, node.body)
    if isinstance(node, Assign):
        return (node.target, node.value)
    if isinstance(node, Program):
        return (*node.params, *node.outputs, *node.statements)
    return ()


def map_children(node, fn):
    """A copy of an expression node whose child expressions are replaced by ``fn(child)``."""
    if isinstance(node, Access):
        return replace(node, indices=tuple(fn(ix) for ix in node.indices))
    if isinstance(node, BinOp):
        return replace(node, left=fn(node.left), right=fn(node.right))
    if isinstance(node, Neg):
        return replace(node, operand=fn(node.operand))
    if isinstance(node, Call):
        return replace(node, args=tuple(fn(a) for a in node.args))
    if isinstance(node, Reduce):
        return replace(node, indices=tuple(fn(ix) for ix in node.indices), body=fn(node.body))
    return node


def shape_of(node) -> tuple:
    """A span-free structural key (for comparing the ASTs of two front ends)."""
    if isinstance(node, tuple):
        return tuple(shape_of(n) for n in node)
    if isinstance(node, Node):
        fields = {k: shape_of(v) for k, v in node.__dict__.items() if k != "span"}
        return (type(node).__name__, tuple(sorted(fields.items())))
    return node


def to_text(node) -> str:
    """Index notation for an expression or statement (fully parenthesised binary operations)."""
    if isinstance(node, Assign):
        return f"{'let ' if node.is_let else ''}{to_text(node.target)} = {to_text(node.value)}"
    if isinstance(node, Access):
        return f"{node.tensor}[{','.join(ix.name for ix in node.indices)}]" if node.indices else node.tensor
    if isinstance(node, Index | Scalar):
        return node.name
    if isinstance(node, Literal):
        return repr(node.value)
    if isinstance(node, BinOp):
        return f"({to_text(node.left)} {node.op} {to_text(node.right)})"
    if isinstance(node, Neg):
        return f"-{to_text(node.operand)}"
    if isinstance(node, Call):
        return f"{node.fn}({', '.join(to_text(a) for a in node.args)})"
    if isinstance(node, Reduce):
        return f"{node.op}[{','.join(ix.name for ix in node.indices)}]({to_text(node.body)})"
    return type(node).__name__

"""Which index variable runs along which dimension of each operand, read from a kernel's program.

The partitioned call needs three facts about a kernel: how every operand is indexed (``A[i,j]``:
dimension 0 by ``i``), which indices the result keeps (``y[i]``), and, for an index that is cut
into blocks but summed away, whether per-block partial results may simply be combined (they may
when the reduction over that index wraps the whole right-hand side: ``s[j] = A[i,j] * x[i]``, not
``s[j] = exp(A[i,j]) + z[j]``).

The program is read through its public attributes (``kernel.program``: statements with targets
and values); nodes are recognised by their fields, so this module imports nothing of
``sparsedsl.lang``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

# Reductions whose per-block partial results combine into the whole's: the name in the language
# and the numpy function that combines two partials.
COMBINABLE = ("sum", "max", "min")


class Indexing(NamedTuple):
    accesses: dict[str, list[tuple[str, ...]]]   # operand -> index names of each of its accesses
    output: str
    output_indices: tuple[str, ...]
    lets: list[tuple[tuple[str, ...], frozenset]]  # per temporary: its indices, the indices it uses
    final_value: object                          # the output statement's right-hand side


def read(kernel) -> Indexing:
    program = kernel.program
    if len(program.outputs) != 1:
        raise ValueError(f"sparsedsl.dask runs kernels with one output; {kernel.name} has "
                         f"{len(program.outputs)}: split it into one kernel per output")
    statements = program.statements
    temps = {st.target.tensor for st in statements[:-1]}
    accesses: dict[str, list[tuple[str, ...]]] = {}
    lets = []
    for st in statements:
        for node in _walk(st.value):
            if _is_access(node) and node.tensor not in temps:
                accesses.setdefault(node.tensor, []).append(tuple(ix.name for ix in node.indices))
        if st is not statements[-1]:
            lets.append((tuple(ix.name for ix in st.target.indices), frozenset(_used(st.value))))
    last = statements[-1]
    return Indexing(accesses, last.target.tensor, tuple(ix.name for ix in last.target.indices), lets, last.value)


def reduction_over(value, index: str) -> str | None:
    """How the result's right-hand side reduces ``index`` as a whole ("sum", "max", "min"), or None
    when the reduction covers only a part of it (then per-block partials do not combine)."""
    if _is_reduce(value) and index in (ix.name for ix in value.indices):
        return value.op if value.op in COMBINABLE else None
    # an implicit sum wraps the smallest sub-expression holding every use of its index (DESIGN.md,
    # "Semantics"); a product chain is one unit. It wraps the whole value unless one operand of the
    # top node holds every use.
    if any(_is_reduce(n) and index in (ix.name for ix in n.indices) for n in _walk(value)):
        return None
    if getattr(value, "op", None) == "*" or _is_access(value):
        return "sum"
    children = [c for c in _children(value) if index in _used(c)]
    if len(children) >= 2 and type(value).__name__ == "BinOp" and value.op in ("+", "-"):
        return "sum"
    return None


def _walk(node):
    yield node
    for child in _children(node):
        yield from _walk(child)


def _children(node):
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if dataclasses.is_dataclass(v) and not isinstance(v, type) and not _is_index(v):
                yield v


def _used(node) -> set[str]:
    return {ix.name for n in _walk(node) if _is_access(n) for ix in n.indices}


def _is_access(node) -> bool:
    return hasattr(node, "tensor") and hasattr(node, "indices")


def _is_reduce(node) -> bool:
    return hasattr(node, "body") and hasattr(node, "indices") and hasattr(node, "op")


def _is_index(node) -> bool:
    fields = {f.name for f in dataclasses.fields(node)}
    return fields <= {"span", "name"} and "name" in fields

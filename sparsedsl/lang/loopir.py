"""Loop IR: the lowered program every backend renders.

Statements are small dataclasses; expressions are strings in a Python-syntax subset (names,
integer and float literals, subscripts, arithmetic, bitwise ``&``, ``|``, ``^``, ``<<``, ``>>`` on
integers, comparisons, ``and``/``or``/``not``, calls of the math functions in ``FUNCTIONS`` and of the
bit functions in ``INTRINSICS``, ``x if c else y``). A backend renders them by parsing the
string with ``ast``, so a C-like backend needs no second expression language.
"""

from __future__ import annotations

import ast as pyast
from dataclasses import dataclass, field, replace

# Elementwise functions a program may call; each backend spells them.
FUNCTIONS = {"exp", "log", "abs", "sqrt", "relu", "sign", "where", "mask", "min", "max", "pow",
             "sin", "cos", "tanh", "sigmoid"}
# Bit functions that level code (not programs) may call: ``trailing_zeros(x)``, the index of x's
# lowest set bit (x != 0), for walking a bitmap word a set bit at a time.
INTRINSICS = {"trailing_zeros"}


@dataclass(frozen=True)
class Iteration:
    """What a level's loop walks, declared by the level that emits it (``levels/*.py``) and attached to
    that loop, so that a backend or template reads the walk's meaning instead of recognising its text.

    ``kind``: "range" (dense: every coordinate, its position located), "segment" (compressed and
    singleton: positions ``start .. stop``, coordinates ``crd[q]``),
    "bitmap_words" (a row's 32-bit mask words, a set bit at a time, values packed in bit order),
    "nm_groups" (N:M: groups of M coordinates with N slots each, a slot's in-group index packed in
    ``bits`` of the group's meta word; an empty slot holds an index >= M). ``fields``: the walk's parts
    by name, as expressions in the loop's variables (``field(name)``); ``own``: how many statements
    the level itself emits inside the loop (what is not its own is the body it was given)."""

    kind: str
    fields: tuple = ()  # ((name, value), ...)
    own: int = 0

    def field(self, name: str):
        return dict(self.fields)[name]


@dataclass
class For:
    """``for var in [start, stop)``. A ``parallel`` loop's iterations are independent; a backend may
    split them among workers, balanced by ``weight`` (an array of cumulative work indexed by the loop
    variable, such as a CSR ``pos``), giving each worker its own copy of the ``private`` allocations.
    ``iteration``: what the loop walks, when a level emitted it."""

    var: str
    start: str
    stop: str
    body: list
    parallel: bool = False
    weight: str | None = None
    private: list = field(default_factory=list)
    iteration: Iteration | None = None


@dataclass
class While:
    cond: str
    body: list


@dataclass
class If:
    cond: str
    then: list
    orelse: list = field(default_factory=list)


@dataclass
class Assign:
    """``target = value``, or ``target = target <op> value`` for a reduction op (+, max, min, or, and)."""

    target: str
    value: str
    op: str | None = None


@dataclass
class Reduce(Assign):
    """A step of an output entry's reduction: ``target = target <op> value`` into its accumulator (a
    scalar the loop nest keeps per output entry), or with ``op`` None the accumulator's start. A
    backend may split the loop around the terms and combine partial accumulators with ``op``."""


@dataclass
class Touch(Assign):
    """``target = True`` (or its start, ``False``): the flag that the output entry at hand received a
    term; a sparse output stores only touched entries."""


@dataclass
class Alloc:
    """``var = new array(shape) of dtype`` filled with ``fill`` (None: uninitialised). ``written``:
    every element will be written (an assembled output), so backends may back it with huge pages."""

    var: str
    shape: str
    dtype: str
    fill: str | None = "0"
    written: bool = False


@dataclass
class SortRange:
    """Sort ``array[start:stop]`` in place (used to order a workspace's touched coordinates).

    When ``marks`` is given, the values are exactly the ``w < universe`` with ``marks[w] == stamp``,
    so a backend may rebuild the sorted list by scanning ``marks`` when that is cheaper. When
    ``bits`` is given, the values' bits are set there; the sort must leave them cleared."""

    array: str
    start: str
    stop: str
    marks: str | None = None
    stamp: str | None = None
    universe: str | None = None
    bits: str | None = None  # a bitset with the values' bits set: scan it (and clear it) instead


@dataclass(frozen=True)
class Entries:
    """The growable buffers a sparse output's entries are appended to: ``coords`` (an int64 array per
    output dimension), ``values``, ``count`` (a scalar: the entries so far, also past ``capacity``) and
    ``capacity`` (a parameter: the buffers' length; the driver reruns with a larger one on overflow)."""

    coords: tuple
    values: str
    count: str
    capacity: str


@dataclass
class Emit:
    """Append one entry (coordinates, value) to the output's growable entry buffers ``into``."""

    coords: list
    value: str
    into: Entries | None = None


@dataclass
class Comment:
    text: str


@dataclass
class Prefetch:
    """A hint, no effect on results: ``array[crd[pos + distance]]`` (with ``row``, that whole row of a
    2-D array) will be read soon: a gather through a compressed level's coordinates; ``pos +
    distance`` is clamped to ``crd``'s length."""

    array: str
    crd: str
    pos: str
    distance: int = 64
    row: bool = False
    when: str | None = None  # a runtime flag (a parameter) that turns the hint on


@dataclass
class Return:
    values: list


@dataclass(frozen=True)
class Output:
    """Where a function's result is. ``array``: the dense output parameter, stored into or added to
    (``None`` when the output is sparse). A sparse output is either appended entry by entry
    (``entries``, returned to the driver) or assembled in two passes over its outer loop: ``offsets``
    (the outer iterations' first entries, a prefix sum of their counts), ``coords`` and ``values``
    (the arrays the fill pass writes); the function then returns ``offsets, *coords, values``."""

    array: str | None = None
    entries: Entries | None = None
    offsets: str | None = None
    coords: tuple = ()
    values: str | None = None
    csr: bool = False  # the two-phase assembly's offsets, coords (one array) and values are a (dense,
    # compressed) format's level arrays, ready as they are wherever the kernel ran

    def stores_into(self, target: str) -> bool:
        """Whether the assignment target ``target`` (``out[i, j]``) is an element of the dense output."""
        node = pyast.parse(target, mode="eval").body
        return self.array is not None and isinstance(node, pyast.Subscript) and \
            isinstance(node.value, pyast.Name) and node.value.id == self.array


@dataclass
class Function:
    name: str
    params: list
    body: list
    hints: dict = field(default_factory=dict)  # backend hints, e.g. "reassociate": sums may be reordered
    output: Output = field(default_factory=Output)


@dataclass
class Module:
    """Several functions and the name of the entry point; ``notes`` feed ``explain()``."""

    functions: list
    entry: str
    notes: list = field(default_factory=list)


STATEMENTS = (For, While, If, Assign, Alloc, SortRange, Emit, Comment, Return, Prefetch)  # Reduce, Touch: Assigns


def verify(module: Module) -> list[str]:
    """Return the reasons the module is malformed (empty when it is well formed)."""
    problems: list[str] = []

    def check_expr(text: str, where: str):
        try:
            pyast.parse(text, mode="eval")
        except SyntaxError as exc:
            problems.append(f"{where}: expression {text!r} does not parse ({exc.msg})")

    def walk(stmts, where):
        for s in stmts:
            if not isinstance(s, STATEMENTS):
                problems.append(f"{where}: {type(s).__name__} is not a loop-IR statement")
                continue
            if isinstance(s, For):
                check_expr(s.start, where)
                check_expr(s.stop, where)
                if s.iteration is not None:
                    for name, value in s.iteration.fields:
                        if isinstance(value, str):
                            check_expr(value, f"{where}/for {s.var} ({s.iteration.kind} {name})")
                    inside = len(list(walk_all(s.body)))
                    if inside < s.iteration.own:
                        problems.append(f"{where}/for {s.var}: its {s.iteration.kind} iteration declares "
                                        f"{s.iteration.own} statements of its level, the loop holds {inside}")
                walk(s.private, f"{where}/for {s.var} (private)")
                walk(s.body, f"{where}/for {s.var}")
            elif isinstance(s, While):
                check_expr(s.cond, where)
                walk(s.body, f"{where}/while")
            elif isinstance(s, If):
                check_expr(s.cond, where)
                walk(s.then, f"{where}/if")
                walk(s.orelse, f"{where}/else")
            elif isinstance(s, Assign):
                check_expr(s.target, where)
                check_expr(s.value, where)
                if isinstance(s, (Reduce, Touch)) and not s.target.isidentifier():
                    problems.append(f"{where}: {type(s).__name__} into {s.target!r}, not a scalar")
                if isinstance(s, Touch) and (s.op is not None or s.value not in ("True", "False")):
                    problems.append(f"{where}: Touch {s.target} {s.op or ''}= {s.value}: a flag is set True or False")
            elif isinstance(s, Emit):
                if s.into is None or len(s.into.coords) != len(s.coords):
                    problems.append(f"{where}: emit ({', '.join(s.coords)}) has no entry buffers of its arity")

    names = {f.name for f in module.functions}
    if module.entry not in names:
        problems.append(f"entry function {module.entry!r} is not defined")
    for f in module.functions:
        walk(f.body, f.name)
        out = f.output
        if out.array is not None and out.array not in f.params:
            problems.append(f"{f.name}: its output array {out.array!r} is not a parameter")
        if out.entries is not None and out.entries.capacity not in f.params:
            problems.append(f"{f.name}: its entry buffers' capacity {out.entries.capacity!r} is not a parameter")
        if out.offsets is not None and not any(isinstance(x, Return) and x.values == [out.offsets, *out.coords,
                                               out.values] for x in f.body):
            problems.append(f"{f.name}: a two-phase assembly that does not return its offsets, coordinates, values")
    return problems


def dump(module: Module) -> str:
    """A readable listing of the IR (``SPARSEDSL_DUMP=lower``)."""
    lines: list[str] = []

    def walk(stmts, ind):
        pad = "  " * ind
        for s in stmts:
            if isinstance(s, For):
                par = f" parallel{f' (balanced by {s.weight})' if s.weight else ''}" if s.parallel else ""
                lines.append(f"{pad}for{par} {s.var} in [{s.start}, {s.stop}):")
                if s.private:
                    lines.append(f"{pad}  private:")
                    walk(s.private, ind + 2)
                walk(s.body, ind + 1)
            elif isinstance(s, While):
                lines.append(f"{pad}while {s.cond}:")
                walk(s.body, ind + 1)
            elif isinstance(s, If):
                lines.append(f"{pad}if {s.cond}:")
                walk(s.then, ind + 1)
                if s.orelse:
                    lines.append(f"{pad}else:")
                    walk(s.orelse, ind + 1)
            elif isinstance(s, Assign):
                lines.append(f"{pad}{s.target} {s.op + '=' if s.op else '='} {s.value}")
            elif isinstance(s, Alloc):
                lines.append(f"{pad}{s.var} = alloc({s.shape}, {s.dtype}, fill={s.fill})")
            elif isinstance(s, SortRange):
                lines.append(f"{pad}sort {s.array}[{s.start}:{s.stop}]")
            elif isinstance(s, Emit):
                lines.append(f"{pad}emit ({', '.join(s.coords)}) = {s.value}")
            elif isinstance(s, Comment):
                lines.append(f"{pad}# {s.text}")
            elif isinstance(s, Return):
                lines.append(f"{pad}return {', '.join(s.values)}")
            elif isinstance(s, Prefetch):
                lines.append(f"{pad}prefetch {s.array}[{s.crd}[{s.pos} + {s.distance}]{', :' if s.row else ''}]")

    for f in module.functions:
        lines.append(f"def {f.name}({', '.join(f.params)}):")
        walk(f.body, 1)
    return "\n".join(lines)


# ---- walkers: the one place that knows which statements hold others -----------------------------


def walk_all(stmts):
    return walk(stmts)


def walk(stmts, private: bool = True):
    """Every statement of ``stmts`` and below, parents first (a loop's private setup too, unless
    ``private`` is False)."""
    for s in stmts:
        yield s
        for attr in (("private",) if private else ()) + ("body", "then", "orelse"):
            yield from walk(getattr(s, attr, None) or [], private)


def map_stmts(stmts, fn) -> list:
    """A copy of ``stmts`` with each statement replaced by ``fn(statement)`` (a list), bodies first."""
    out = []
    for s in stmts:
        if isinstance(s, For):
            s = replace(s, body=map_stmts(s.body, fn), private=map_stmts(s.private, fn))
        elif isinstance(s, While):
            s = replace(s, body=map_stmts(s.body, fn))
        elif isinstance(s, If):
            s = replace(s, then=map_stmts(s.then, fn), orelse=map_stmts(s.orelse, fn))
        out += fn(s)
    return out


def names(expr: str) -> set:
    """The variable names an expression reads."""
    return {n.id for n in pyast.walk(pyast.parse(expr, mode="eval")) if isinstance(n, pyast.Name)}


def renamed(expr: str, table: dict) -> str:
    """``expr`` with the variables in ``table`` replaced by the given expressions."""
    class Rename(pyast.NodeTransformer):
        def visit_Name(self, node):
            return pyast.parse(table[node.id], mode="eval").body if node.id in table else node
    return pyast.unparse(Rename().visit(pyast.parse(expr, mode="eval")))

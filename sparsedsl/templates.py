"""The template registry: hand-written kernels that the pipeline may use in place of generated code.

A template is a fast path for one kind of program or loop nest that the generated code runs
badly (a fused attention kernel, the tensor-core products of N:M weights, SpGEMM in shared-memory
hash tables). It says what it matches and, through ``fits``, whether it applies to a given case and
if not, why; the ``select`` pass of the pipeline (``compiler._Plan``) asks every registered template
of the stage and backend in turn and takes the first that fits. ``explain`` prints the choice and
each rejection's reason. The generated code is always built too: it is the fallback when no
template fits, and the oracle the template's tests compare with (``schedule={"templates": False}``
turns templates off for a kernel).

Two stages can be matched:

- ``"program"``: the whole checked program. A template gives a ``pattern``: statements in index
  notation that the program must equal up to the names of its tensors, scalars and indices
  (``match_program``), e.g. SDDMM → masked row softmax → SpMM for fused attention. ``fits(match)``
  then looks at the types (formats, dtypes, shapes) through ``match.type(name)``; ``build(match)``
  returns a function from the operands, keyed by the pattern's names, to the outputs, keyed the same.
- ``"loops"``: one statement's loop IR, for backend templates that replace the kernel of a loop
  nest (``sparsedsl.backends``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .lang import ast as A
from .lang.check import bind_implicit_sums

STAGES = ("program", "loops")


@dataclass(frozen=True)
class Template:
    """A registered fast path. ``fits(match) -> str | None``: None when it applies, else the reason
    it does not; ``build(match) -> callable``; ``pattern``: for the program stage, the statements
    (index notation, ``;`` or newline separated) the program must equal up to renaming."""

    name: str
    backend: str
    stage: str
    fits: Callable
    build: Callable
    pattern: str | None = None
    doc: str = ""

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"template {self.name!r}: stage must be one of {STAGES}, not {self.stage!r}")
        if self.stage == "program" and not self.pattern:
            raise ValueError(f"template {self.name!r}: a program template needs a pattern (its statements)")


_registry: dict[str, Template] = {}


def register(template: Template) -> Template:
    """Add ``template`` (replacing one of the same name) and return it."""
    if template.stage == "program":
        _pattern(template.pattern)  # a pattern that does not parse fails here, not at a user's call
    _registry[template.name] = template
    return template


def unregister(name: str) -> None:
    _registry.pop(name, None)


def registered(stage: str | None = None, backend: str | None = None) -> list[Template]:
    return [t for t in _registry.values() if stage in (None, t.stage) and backend in (None, t.backend)]


@dataclass
class ProgramMatch:
    """A program-stage template matched to a checked program: ``names`` maps the pattern's tensor
    and scalar names to the program's, ``indices`` its index names."""

    template: Template
    checked: object  # lang.check.Checked
    names: dict[str, str]
    indices: dict[str, str]
    backend: str

    def type(self, name: str):
        """The program's TensorType (shape, dtype, format) or scalar dtype of a pattern name."""
        real = self.names[name]
        return self.checked.types.get(real, self.checked.scalars.get(real))

    def operands(self, env: dict) -> dict:
        return {p: env[real] for p, real in self.names.items() if real in env}


@dataclass
class Selection:
    """What the select pass decided for one stage: the chosen template and its match (or None),
    and ``rejected``: (template name, reason) for each one that did not fit."""

    template: Template | None = None
    match: object = None
    rejected: list = field(default_factory=list)

    def notes(self) -> list[str]:
        out = [f"template: {self.template.name} ({self.template.stage})"] if self.template else []
        out += [f"template {name} not used: {why}" for name, why in self.rejected]
        return out


def select_program(checked, backend: str, enabled: bool = True) -> Selection:
    """The select pass for whole programs: the first registered program template that matches
    ``checked`` and whose ``fits`` says yes."""
    def candidates():
        for t in registered("program", backend):
            found = match_program(t.pattern, checked)
            yield t, found if isinstance(found, str) else ProgramMatch(t, checked, *found, backend)
    return _first_fit(candidates() if enabled else ())


def select_loops(subject, backend: str, enabled: bool = True) -> Selection:
    """The select pass for a loop nest: the first registered loops template whose ``fits`` says yes."""
    return _first_fit(((t, subject) for t in registered("loops", backend)) if enabled else ())


def _first_fit(candidates) -> Selection:
    """(template, its match or why it does not match) in order -> the first that fits, and why the
    ones before it did not."""
    sel = Selection()
    for t, match in candidates:
        why = match if isinstance(match, str) else t.fits(match)
        if why is None:
            sel.template, sel.match = t, match
            return sel
        sel.rejected.append((t.name, why))
    return sel


# ---- matching a program against a pattern ----------------------------------------------------------


def _pattern(text: str) -> list[A.Assign]:
    from .lang.syntax import parse_statements

    return [bind_implicit_sums(st) for st in parse_statements(text, "<template pattern>")]


def match_program(pattern: str, checked) -> tuple[dict, dict] | str:
    """(tensor/scalar names, index names) mapping ``pattern``'s names to ``checked``'s program,
    or the reason they differ. Statements must correspond one to one and in order, each equal up to
    a consistent renaming; a commutative ``+``/``*`` may have its operands swapped."""
    want = _pattern(pattern)
    have = [bind_implicit_sums(st) for st in checked.program.statements]
    if len(want) != len(have):
        return f"the program has {len(have)} statements, the pattern {len(want)}"
    names, indices = {}, {}
    for k, (p, s) in enumerate(zip(want, have)):
        why = _unify(p.target, s.target, names, indices) or _unify(p.value, s.value, names, indices)
        if why:
            return f"statement {k + 1} ({A.to_text(s)}) differs from the pattern's ({A.to_text(p)}): {why}"
    return names, indices


def _bind(table: dict, key: str, value: str, what: str) -> str | None:
    if table.get(key, value) != value:
        return f"{what} {key!r} stands for both {table[key]!r} and {value!r}"
    if key not in table and value in table.values():
        return f"{what} {value!r} would stand for two of the pattern's names"
    table[key] = value
    return None


def _unify(p, s, names: dict, indices: dict) -> str | None:
    """None when ``s`` equals the pattern node ``p`` under the (extended) renamings, else why not.
    The tables are extended in place; a failed swap of commutative operands rolls them back."""
    if type(p) is not type(s):
        return f"{type(p).__name__.lower()} in the pattern, {type(s).__name__.lower()} in the program"
    if isinstance(p, A.Access):
        if len(p.indices) != len(s.indices):
            return f"{p.tensor} has {len(p.indices)} indices in the pattern, {s.tensor} {len(s.indices)}"
        return _bind(names, p.tensor, s.tensor, "tensor") or next(
            (w for a, b in zip(p.indices, s.indices) if (w := _bind(indices, a.name, b.name, "index"))), None)
    if isinstance(p, A.Index):
        return _bind(indices, p.name, s.name, "index")
    if isinstance(p, A.Scalar):
        return _bind(names, p.name, s.name, "scalar")
    if isinstance(p, A.Literal):
        return None if p.value == s.value else f"literal {p.value!r} vs {s.value!r}"
    if isinstance(p, A.BinOp):
        if p.op != s.op:
            return f"operator {p.op!r} vs {s.op!r}"
        saved = dict(names), dict(indices)
        why = _unify(p.left, s.left, names, indices) or _unify(p.right, s.right, names, indices)
        if why and p.op in "+*":
            names.clear(), names.update(saved[0]), indices.clear(), indices.update(saved[1])
            if not (_unify(p.left, s.right, names, indices) or _unify(p.right, s.left, names, indices)):
                return None
            names.clear(), names.update(saved[0]), indices.clear(), indices.update(saved[1])
        return why
    if isinstance(p, A.Neg):
        return _unify(p.operand, s.operand, names, indices)
    if isinstance(p, A.Call | A.Reduce):
        head_p, head_s = (p.fn, s.fn) if isinstance(p, A.Call) else (p.op, s.op)
        kids_p = p.args if isinstance(p, A.Call) else (*p.indices, p.body)
        kids_s = s.args if isinstance(s, A.Call) else (*s.indices, s.body)
        if head_p != head_s or len(kids_p) != len(kids_s):
            return f"{head_p}(...) vs {head_s}(...)"
        return next((w for a, b in zip(kids_p, kids_s) if (w := _unify(a, b, names, indices))), None)
    return None if p == s else "different nodes"

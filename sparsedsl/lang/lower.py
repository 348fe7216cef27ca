"""Lowering: one checked statement -> a loop-IR function.

Each index variable becomes a loop over the levels it indexes (blocked levels split it into an
outer and an inner variable). Where several operands share a variable they are co-iterated:

- no sparse level there: ``for v in range(extent)``, dense levels located;
- one sparse level the expression cannot do without: that level's own ``for`` loop;
- otherwise a merge (TACO's merge lattices in the form of one loop): ``while`` the presence
  formula of the expression over the cursors' validity holds, take the least coordinate, or a
  dense-driven loop when the expression can be present with no sparse operand present (unions
  with a dense operand).

Presence follows the interpreter's rules (``interp.py``): intersection for ``*``, ``/``,
comparisons and functions, union for ``+``/``-``. Results are accumulated in a scalar, scattered
into a dense output, emitted as entries (sparse output), or gathered in a dense workspace when a
reduction variable comes before an output variable (Gustavson's row-wise SpGEMM).

The lowering knows no backend: a backend declares the options it wants (``LOWERING`` in its
package: ``trailing_dense`` loop order, ``bitset_workspace``, and the named loop-IR ``passes`` run
after lowering, in order; ``lang/passes.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from . import ast as A
from .assembly import Assembly, hash_grow, hash_probe
from .check import Checked, Statement
from .levels import Parent
from .loopir import Assign, Comment, Emit, For, Function, If, Output, Prefetch, Reduce, Touch, While, walk
from .passes import PASSES
from .values import Values, tensor_name


@dataclass(frozen=True)
class Var:
    """A loop variable: an index, or the outer/inner part of a blocked index."""

    index: str
    part: str = ""  # "", "o" or "i"
    block: int = 1

    @property
    def name(self) -> str:
        return {"": "v_", "o": "vo_", "i": "vi_"}[self.part] + self.index

    def extent(self) -> str:
        n = f"n_{self.index}"
        return {"": n, "o": f"({n} // {self.block})", "i": str(self.block)}[self.part]


@dataclass(frozen=True)
class Operand:
    """One access of a sparse-format tensor, and where its iteration stands."""

    id: int
    tensor: str
    fmt: object
    vars: tuple  # one Var per level
    level: int = 0
    parent: Parent = Parent(pos="0")
    present: str = "True"
    tag: str = "a0"
    safe: bool = False  # its value position is in bounds even where it is not present (a merge's cursor)

    def names(self, k: int) -> dict:
        """The kernel's names of level ``k``'s arrays (those its level type declares)."""
        return {a: f"{self.tensor}{k}_{a}" for a in self.fmt.levels[k].type.array_names}

    def level_extent(self, k: int) -> str:
        spec = self.fmt.levels[k]
        d = f"{self.tensor}_d{spec.dim}"
        return {None: d, "/": f"({d} // {spec.block})", "%": str(spec.block)}[spec.op]


@dataclass
class Lowered:
    function: Function
    order: list  # loop variables, outermost first
    notes: list = field(default_factory=list)
    converted: dict = field(default_factory=dict)  # access id -> the format it is converted to first
    arguments: dict = field(default_factory=dict)  # parameter -> what to pass (see params())
    sorted_output: bool = False  # a sparse output's entries come out in its level order
    assembly: str | None = None  # sparse output: "csr" (offs, crd, vals), "coords" (offs, coords, vals), "growable"
    dense_volume: int = 0  # iterations of an all-dense loop nest (its work, for choosing parallel code)
    overwrites: bool = False  # a dense output whose every element the function stores once: allocated uninitialised


def lower(checked: Checked, st: Statement, index: int, options: dict | None = None) -> Lowered:
    """``options``: schedule choices that override the automatic ones, e.g. ``workspace="hash"``."""
    return _Lowering(checked, st, index, options or {}).run()


# reductions whose identity is not 0: a scattered dense output starts at the identity, which the
# entries no term reaches keep (DESIGN.md, semantics)
_TRACKED = ("max", "min", "and")


class _Lowering(Assembly, Values):
    def __init__(self, checked: Checked, st: Statement, index: int, options: dict):
        self.c, self.st, self.index, self.options = checked, st, index, options
        self.hashed = False
        self.output = Output(array="out")  # the function's result (sparse: set where its assembly is chosen)
        # a bitset orders a dense workspace's coordinates (the CPU's choice: C-like backends would need
        # 64-bit literals for the bit arithmetic)
        self.bitset = options.get("bitset_workspace", False)
        self.assumed: set = set()  # presence conditions known to hold where code is being generated
        self.notes: list[str] = []
        self.accesses = [n for n in A.walk(st.value) if isinstance(n, A.Access)]
        self.out_type = checked.types[st.target.tensor]
        self.out_vars = [ix.name for ix in st.target.indices]
        self.tmp = 0

    # ---- plan -------------------------------------------------------------------------------
    def run(self) -> Lowered:
        self.converted: dict = {}
        # a contiguous inner axpy wins on the CPU; the GPU renderer wants (row, column) threads
        self.trailing = self.trailing_dense() if self.options.get("trailing_dense", False) else set()
        self.blocks = self.split_blocked()
        self.sparse = {}
        self.canon = {}
        first: dict = {}
        for k, acc in enumerate(self.accesses):
            key = (acc.tensor, tuple(ix.name for ix in acc.indices))
            self.canon[k] = first.setdefault(key, k)
            fmt = self.converted.get(k) or self.c.types[acc.tensor].format
            if not fmt.is_dense and self.canon[k] == k:
                self.sparse[k] = fmt
        self.order = self.loop_order()
        self.operands = {}
        for k, fmt in self.sparse.items():
            acc = self.accesses[k]
            vs = tuple(self.level_var(acc.indices[lv.dim].name, lv) for lv in fmt.levels)
            self.operands[k] = Operand(k, tensor_name(acc.tensor) + (f"_C{k}" if k in self.converted else ""),
                                       fmt, vs, tag=f"a{k}")
            # every level must have its loop: one without would be read at a wrong position, silently
            assert set(vs) <= set(self.order), f"{acc.tensor}: levels over {vs} outside the loops {self.order}"
        self.formula = self.presence(self.st.value)
        self.assembly = None
        body = self.function_body()
        for name in self.options.get("passes", ()):  # the backend's loop-IR passes, in its order
            body = PASSES[name](body)
        if self.options.get("passes"):
            self.notes.append(f"passes: {', '.join(self.options['passes'])}")
        params = self.params()
        hints = [s for s in walk(body, private=False) if isinstance(s, Prefetch)]
        if hints:  # on only for scattered coordinates: a banded matrix's gathers pay for the hint
            crd = self.arguments[hints[0].crd]
            pos = ("level", *crd[1:4], "pos")
            self.arguments["prefetch_"] = ("scattered", pos if pos in self.arguments.values() else None, crd)
            params.append("prefetch_")
        fn = Function(f"stmt{self.index}", params, body, output=self.output)
        innermost = self.order[-1] if self.order else None
        if not any(innermost in op.vars for op in self.operands.values()):
            # the innermost loop reads dense operands only: its sums may be reassociated (vectorised,
            # several accumulators); over a sparse level that only produces slow vector gathers
            fn.hints["reassociate"] = True
        self.notes.insert(0, f"statement {self.index}: {self.st.target.tensor}[{', '.join(self.out_vars)}]; "
                             f"loop order {', '.join(v.index + v.part for v in self.order)}")
        volume = 1
        for v in self.order:
            volume *= v.block if v.part == "i" else self.c.extents[v.index] // (v.block if v.part else 1)
        return Lowered(fn, self.order, list(dict.fromkeys(self.notes)), self.converted, self.arguments,
                       self.sorted_out(), self.assembly, volume if not self.sparse else 0,
                       self.arguments.get("out") == ("out",) and _overwrites(fn.body, self.arguments, self.out_vars))

    def split_blocked(self) -> dict:
        """Block sizes of blocked indices. Operands that disagree (another block size, or a sparse
        operand stored unblocked along the same index) are converted to a plain format first, until
        none disagree: a copy is unblocked along all its indices, which may clash with a third
        operand's blocks (A[j,k] blocked, z[j] plain, B[i,k] blocked: A's copy then clashes with B on k)."""
        sparse = [(k, acc) for k, acc in enumerate(self.accesses) if not self.c.types[acc.tensor].format.is_dense]

        def fmt_of(k, acc):
            return self.converted.get(k) or self.c.types[acc.tensor].format

        while True:
            blocks: dict[str, int] = {}
            clash: set = set()
            for k, acc in sparse:
                for lv in fmt_of(k, acc).levels:
                    name = acc.indices[lv.dim].name
                    if blocks.setdefault(name, lv.block if lv.op else 1) != (lv.block if lv.op else 1):
                        clash.add(name)
            disagree = [(k, acc) for k, acc in sparse
                        if any(acc.indices[d].name in clash for d in fmt_of(k, acc).blocks)]
            if not disagree:
                break
            for k, acc in disagree:
                self.convert(k, [(d, None, 1) for d in fmt_of(k, acc).dim_order],
                             "its blocks do not match another operand's")
        return {acc.indices[d].name: b for k, acc in sparse for d, b in fmt_of(k, acc).blocks.items()}

    def convert(self, k: int, levels: list, why: str):
        """Read access ``k`` from a copy whose levels are ``levels`` ((dim, op, block) each): the
        first dense, in-block levels dense, the others compressed."""
        from .formats import Format, LevelSpec
        from .levels import Compressed, Dense

        specs = [LevelSpec(d, Dense() if (n == 0 or op == "%") else Compressed(), op, b)
                 for n, (d, op, b) in enumerate(levels)]
        fmt = Format(len(self.accesses[k].indices), tuple(specs))
        self.converted[k] = fmt
        acc = self.accesses[k]
        self.notes.append(f"conversion: {acc.tensor} is copied to {fmt.spelling()} before the loop ({why})")

    def level_var(self, index: str, lv) -> Var:
        if lv.op == "/":
            return Var(index, "o", lv.block)
        if lv.op == "%":
            return Var(index, "i", lv.block)
        return Var(index)

    def all_vars(self) -> list:
        seen, out = set(), []
        for name in self.out_vars + list(self.st.reduce_indices):
            if name in seen:
                continue
            seen.add(name)
            if name in self.blocks:
                out += [Var(name, "o", self.blocks[name]), Var(name, "i", self.blocks[name])]
            else:
                out.append(Var(name))
        return out

    def loop_order(self):
        """A topological order of the variables that every sparse operand's level order allows;
        an operand that conflicts is read from a transposed copy (reported by explain())."""
        variables = self.all_vars()
        edges = {(Var(v.index, "o", v.block), v) for v in variables if v.part == "i"}
        conflicting = []
        for k, fmt in self.sparse.items():
            acc = self.accesses[k]
            chain = [self.level_var(acc.indices[lv.dim].name, lv) for lv in fmt.levels]
            new = edges | set(zip(chain, chain[1:]))
            if _toposort(variables, new, self.priority) is not None:
                edges = new
            else:
                conflicting.append(k)
        order = _toposort(variables, edges, self.priority)
        for k in conflicting:
            acc = self.accesses[k]
            dim_of = {ix.name: d for d, ix in enumerate(acc.indices)}
            levels = [(dim_of[v.index], {"": None, "o": "/", "i": "%"}[v.part], v.block)
                      for v in order if v.index in dim_of]
            self.convert(k, levels, "it is read against its level order: a transposition")
            fmt = self.converted[k]
            self.sparse[k] = fmt
        return order

    def priority(self, v: Var):
        return (v.index in self.trailing, v.index not in self.out_vars,
                (self.out_vars + list(self.st.reduce_indices)).index(v.index))

    def trailing_dense(self) -> set:
        """Output indices to loop innermost: indices of a dense output that only dense operands use,
        always as their last (contiguous) index. ``Y[i,n] = A[i,j] * X[j,n]`` then runs i, j, n and
        its inner loop is a contiguous axpy into a row of Y, not a strided dot product per (i, n)."""
        if not self.out_type.format.is_dense or not self.st.reduce_indices:
            return set()
        accesses = self.accesses + [self.st.target]
        found = set()
        for n in self.out_vars:
            users = [a for a in accesses if any(ix.name == n for ix in a.indices)]
            if all((a is self.st.target or self.c.types[a.tensor].format.is_dense) and a.indices[-1].name == n
                   for a in users) and n != self.out_vars[0]:
                found.add(n)
        return found

    # ---- code ----------------------------------------------------------------------------
    def fresh(self, stem: str) -> str:
        self.tmp += 1
        return f"{stem}{self.tmp}"

    def function_body(self) -> list:
        red_pos = [d for d, v in enumerate(self.order) if v.index not in self.out_vars]
        self.first_red = red_pos[0] if red_pos else len(self.order)
        later_out = [v for v in self.order[self.first_red:] if v.index in self.out_vars]
        sparse_out = not self.out_type.format.is_dense
        dt = self.out_type.dtype
        self.acc_init = self.identity(self.st.reduce_op, dt)
        if not red_pos:
            self.mode = "emit" if sparse_out else "store"
        elif not later_out:
            self.mode = "scalar"
        else:
            self.mode = "workspace" if sparse_out else "scatter"
        self.ws_vars = later_out
        pre: list = []
        private: list = []
        if self.mode == "workspace":
            private = self.workspace(dt)
        if self.mode in ("scatter", "scalar") and not sparse_out and self.st.reduce_op in _TRACKED:
            # rows a sparse outer level skips are never visited: every entry starts at the identity
            pre += self.over_output([Assign(f"out[{', '.join(f'c{k}' for k in range(len(self.out_vars))) or '0'}]",
                                            self.acc_init)])
        loops = self.gen(0, dict(self.operands))
        top = next((s for s in loops if isinstance(s, For)), None)
        if top is not None and top.parallel:
            top.weight = self.weight_of(top)
            self.notes.append(f"schedule: outer loop {top.var} in parallel, chunks balanced by "
                              f"{top.weight or 'iteration count'}")
        # two-phase assembly counts per outer iteration: every entry must be emitted inside that loop
        emits = [x for x in walk(loops, private=False) if isinstance(x, Emit)]
        inside = top is not None and self.order[0].index in self.out_vars and emits and \
            len([x for x in walk(top.body, private=False) if isinstance(x, Emit)]) == len(emits)
        if sparse_out and inside:
            self.assembly = "csr" if self.direct_csr(top) else "coords"
            return pre + self.two_phase(loops, top, private)
        if sparse_out:
            buffers, loops = self.growable(loops, dt)
            pre += buffers
        body = pre + private + loops
        if sparse_out:
            body.append(Comment("entries are returned to the driver, which packs them into the output format"))
        elif top is not None:
            top.private = private
        return body

    def weight_of(self, top: For) -> str | None:
        """A cumulative-work array for the parallel outer loop: the ``pos`` array one level below it."""
        for op in self.operands.values():
            if len(op.fmt.levels) < 2 or op.vars[0] != self.order[0] or "pos" not in \
                    op.fmt.levels[1].type.array_names:
                continue
            driven = top.var == op.vars[0].name and op.fmt.levels[0].type.locatable
            if driven or top.var == f"{op.tag}_0_q":
                return op.names(1)["pos"]
        return None

    def params(self) -> list:
        """The function's parameters; ``self.arguments`` says what the driver passes for each:
        ("values", tensor, conv) / ("level", tensor, conv, level, array) / ("dim", tensor, conv, d) /
        ("extent", index) / ("scalar", name) / ("out",) / ("out", target) (the array to add to) /
        ("out_cap",) / ("scattered", pos, crd) (1 when the coordinates of that level, given as the
        two "level" entries, are far apart, so prefetching its gathers pays); ``conv`` names a
        converted copy."""
        args: dict[str, tuple] = {}
        for k, acc in enumerate(self.accesses):
            if self.canon[k] != k:
                continue
            conv = k if k in self.converted else None
            if k in self.operands:
                op = self.operands[k]
                for lv_k, lv in enumerate(op.fmt.levels):
                    names = op.names(lv_k)
                    for a in lv.type.array_names:
                        args[names[a]] = ("level", acc.tensor, conv, lv_k, a)
                args[op.tensor] = ("values", acc.tensor, conv)
                for d in range(len(acc.indices)):
                    args[f"{op.tensor}_d{d}"] = ("dim", acc.tensor, conv, d)
            else:
                args[tensor_name(acc.tensor)] = ("values", acc.tensor, None)
        for x in A.walk(self.st.value):
            if isinstance(x, A.Scalar):
                args[f"s_{x.name}"] = ("scalar", x.name)
        for v in dict.fromkeys(self.out_vars + list(self.st.reduce_indices)):
            args[f"n_{v}"] = ("extent", v)
        if self.out_type.format.is_dense:  # an accumulating statement adds to the target's values
            args["out"] = ("out", self.st.target.tensor) if self.st.accumulate else ("out",)
        else:
            args["out_cap"] = ("out_cap",)
        self.arguments = args
        return list(args)

    def coord(self, index: str) -> str:
        if index in self.blocks:
            b = self.blocks[index]
            return f"(vo_{index} * {b} + vi_{index})"
        return f"v_{index}"

    def gen(self, depth: int, ops: dict) -> list:
        if depth == self.first_red and self.mode == "scalar":
            return self.scalar_reduction(depth, ops)
        if depth == self.first_red and self.mode == "workspace":
            return self.workspace_reduction(depth, ops)
        if depth == len(self.order):
            return self.leaf(ops)
        v = self.order[depth]
        here = {k: op for k, op in ops.items() if op.level < len(op.fmt.levels) and op.vars[op.level] == v}
        locate = {k: op for k, op in here.items() if op.fmt.levels[op.level].type.locatable}
        iterate = {k: op for k, op in here.items() if k not in locate}
        extent = v.extent()
        out: list = []

        def located(ops_after):
            stmts, new = [], dict(ops_after)
            for k, op in locate.items():
                p = f"{op.tag}_{op.level}_q"
                lt = op.fmt.levels[op.level].type
                stmts.append(Assign(p, lt.locate(op.names(op.level), op.parent, op.level_extent(op.level), v.name)))
                new[k] = replace(op, level=op.level + 1, parent=lt.child(p))
            return stmts, new

        atoms = {k: op.present for k, op in ops.items()}
        if not iterate:
            stmts, new = located(ops)
            par = depth == 0 and self.parallel_ok()
            return [For(v.name, "0", extent, stmts + self.gen(depth + 1, new), parallel=par)]
        if len(iterate) == 1:
            (k, op), = iterate.items()
            if self.evaluate(self.formula, {**atoms, k: "False"}) == "False":
                lt = op.fmt.levels[op.level].type
                q = f"{op.tag}_{op.level}_q"
                new = dict(ops)
                new[k] = replace(op, level=op.level + 1, parent=lt.child(q))
                stmts, new = located(new)
                inner = stmts + self.gen(depth + 1, new)
                par = depth == 0 and self.parallel_ok() and lt.unique and op.parent.pos == "0"
                loop = lt.loop(op.names(op.level), op.parent, op.level_extent(op.level), v.name, q, inner)
                if par and loop and isinstance(loop[0], For):
                    loop[0].parallel = True
                return self.guard(op, loop)
        # merge: cursors for every iterating operand
        curs = {}
        for k, op in iterate.items():
            lt = op.fmt.levels[op.level].type
            tag = f"{op.tag}_{op.level}"
            cur = lt.cursor(op.names(op.level), op.parent, op.level_extent(op.level), tag)
            curs[k] = cur
            out += self.guarded_init(op, cur.init)
        valid = {k: (cur.valid if ops[k].present == "True" else f"({ops[k].present} and {cur.valid})")
                 for k, cur in curs.items()}
        dense_driven = self.evaluate(self.formula, {**atoms, **{k: "False" for k in curs}}) != "False"
        present_flags = {k: f"p_{ops[k].tag}_{ops[k].level}" for k in curs}
        new = dict(ops)
        for k, cur in curs.items():
            # not safe: this loop runs on past a cursor's end (dense-driven, or while any is valid)
            new[k] = replace(ops[k], level=ops[k].level + 1, parent=cur.child, present=present_flags[k], safe=False)
        stmts, new = located(new)
        step = [Assign(present_flags[k], f"{valid[k]} and {cur.coord} == {v.name}") for k, cur in curs.items()]
        advance = [If(present_flags[k], cur.advance) for k, cur in curs.items()]
        cond = self.evaluate(self.formula, {**atoms, **present_flags})
        inner = stmts + self.gen(depth + 1, new)
        body = step + ([If(cond, inner)] if cond != "True" else inner) + advance
        if dense_driven:
            self.notes.append(f"co-iteration over {v.index + v.part}: dense-driven (union with a full operand)")
            return out + [For(v.name, "0", extent, body)]
        kind = "intersection" if " or " not in cond else "union"
        if len(curs) <= 3:
            return out + self.lattice(depth, v, ops, curs, valid, atoms, located, kind)
        self.notes.append(f"co-iteration over {v.index + v.part}: merge of {len(curs)} operands ({kind})")
        least = [Assign(v.name, extent)]
        for k, cur in curs.items():
            least.append(If(f"{valid[k]} and {cur.coord} < {v.name}", [Assign(v.name, cur.coord)]))
        return out + [While(self.evaluate(self.formula, {**atoms, **valid}), least + body)]

    def lattice(self, depth, v, ops, curs, valid, atoms, located, kind) -> list:
        """Merge-lattice co-iteration (Kjolstad et al., "The Tensor Algebra Compiler", 2017): one
        loop per set of cursors that can still be valid together, largest first. Each loop runs
        while all of its cursors are valid, so its body never tests validity and the sets of one
        cursor become plain scans."""
        import itertools

        keys = list(curs)
        points = [set(c) for n in range(len(keys), 0, -1) for c in itertools.combinations(keys, n)]
        points = [S for S in points
                  if self.evaluate(self.formula, {**atoms, **{k: ("True" if k in S else "False") for k in keys}})
                  != "False"]
        loops = []
        for S in points:
            flags = {k: (f"p_{ops[k].tag}_{ops[k].level}" if k in S and len(S) > 1 else
                         "True" if k in S else "False") for k in keys}
            new = dict(ops)
            for k, cur in curs.items():
                new[k] = replace(ops[k], level=ops[k].level + 1, parent=cur.child, present=flags[k],
                                 safe=k in S and not cur.child.is_segment)
            stmts, new = located(new)
            coords = {k: f"c_{ops[k].tag}_{ops[k].level}" for k in S}
            head = [Assign(coords[k], curs[k].coord) for k in keys if k in S]
            first, *rest = [k for k in keys if k in S]
            head.append(Assign(v.name, coords[first]))
            for k in rest:
                head.append(If(f"{coords[k]} < {v.name}", [Assign(v.name, coords[k])]))
            head += [Assign(flags[k], f"{coords[k]} == {v.name}") for k in keys if k in S and len(S) > 1]
            cond = self.evaluate(self.formula, {**atoms, **flags})
            # the least coordinate is present in at least one cursor of S: a condition true for
            # every non-empty subset of S present holds throughout this loop
            subsets = [T for n in range(1, len(S) + 1) for T in itertools.combinations(sorted(S), n)]
            always = all(self.evaluate(self.formula, {**atoms, **{k: ("True" if k in T else "False")
                                                                    for k in keys}}) == "True" for T in subsets)
            if cond == "False":
                inner = []
            else:
                if always and cond != "True":
                    self.assumed.add(cond)
                inner = stmts + self.gen(depth + 1, new)
                self.assumed.discard(cond)
                inner = inner if cond == "True" or always else [If(cond, inner)]
            advance = []
            for k in keys:
                if k not in S:
                    continue
                step = curs[k].advance
                if flags[k] == "True":
                    advance += step
                elif len(step) == 1 and isinstance(step[0], Assign) and step[0].op == "+" and step[0].value == "1":
                    advance.append(Assign(step[0].target, flags[k], "+"))  # branch-free
                else:
                    advance.append(If(flags[k], step))
            loops.append(While(" and ".join(valid[k] for k in keys if k in S), head + inner + advance))
        self.notes.append(f"co-iteration over {v.index + v.part}: {kind} of {len(curs)} operands, "
                          f"merge lattice of {len(points)} loops")
        return loops

    def guard(self, op: Operand, loop: list) -> list:
        return loop if op.present == "True" else [If(op.present, loop)]

    def guarded_init(self, op: Operand, init: list) -> list:
        if op.present == "True":
            return init
        assigned = []
        for s in walk(init, private=False):
            if isinstance(s, Assign) and s.op is None and s.target not in assigned:
                assigned.append(s.target)
        return [If(op.present, init, [Assign(t, "0") for t in assigned])]

    def parallel_ok(self) -> bool:
        """The outer loop runs over an output index, so its iterations write disjoint parts of the
        output (dense), or their own entries (sparse outputs, assembled in two phases)."""
        return bool(self.order) and self.order[0].index in self.out_vars

    # ---- leaves and reductions ------------------------------------------------------------
    def leaf(self, ops) -> list:
        val, pres = self.value(self.st.value, ops)
        loads = [Assign(f"ld_{op.tag}", f"{op.tensor}[{op.parent.pos}]") for op in ops.values()
                 if op.safe and op.present != "True" and op.level == len(op.fmt.levels)
                 and f"ld_{op.tag}" in val]
        if pres in self.assumed:
            pres = "True"
        return loads + self.leaf_action(val, pres)

    def leaf_action(self, val, pres) -> list:
        coords = [self.coord(n) for n in self.out_vars]
        idx = ", ".join(coords) if coords else "0"
        if self.st.reduce_indices and (self.st.reduce_op in ("and", "or") or (
                self.st.reduce_op in ("max", "min") and self.out_type.dtype == np.bool_)):
            # any/all (and min/max into booleans) reduce truth values: Python's and/or would return the
            # operand, and a boolean semiring product (True + True) is an integer the bool accumulator
            # does not take on the GPU
            val = f"({val} != 0)"
        elif self.st.reduce_op == "+" and self.st.reduce_indices and self.boolean(self.st.value):
            val = f"({val} + 0)"  # a sum of booleans counts them (the checker's int64), in every engine
        if self.mode == "store":
            action = [Assign(f"out[{idx}]", val, "+" if self.st.accumulate else None)]
        elif self.mode == "emit":
            action = [Emit(coords, val)]
        elif self.mode == "scalar":
            action = [Reduce("acc", val, self.st.reduce_op)]
            if not self.out_type.format.is_dense:
                action.append(Touch("touched", "True"))
        elif self.mode == "scatter":
            action = [Assign(f"out[{idx}]", val, self.st.reduce_op)]
        else:
            lin = self.linear_vars(self.ws_vars)
            if self.hashed:
                action = [Assign("w", lin), *hash_probe("ws_f", "ws_k", "ws_cap"),
                          If("ws_f[h] != ws_gen",
                             [Assign("ws_f[h]", "ws_gen"), Assign("ws_k[h]", "w"), Assign("ws_v[h]", val),
                              Assign("ws_l[ws_n]", "w"), Assign("ws_n", "1", "+"),
                              If("ws_n * 2 > ws_cap", hash_grow(str(self.out_type.dtype)))],
                             [Assign("ws_v[h]", val, self.st.reduce_op)])]
            else:
                first = [Assign("ws_f[w]", "ws_gen"), Assign("ws_l[ws_n]", "w"), Assign("ws_n", "1", "+"),
                         Assign("ws_v[w]", val)]
                if self.bitset:
                    first.append(Assign("ws_b[w >> 6]", "ws_b[w >> 6] | (1 << (w & 63))"))
                action = [If("ws_f[w] != ws_gen", first, [Assign("ws_v[w]", val, self.st.reduce_op)])]
                action.insert(0, Assign("w", lin))
        return action if pres == "True" else [If(pres, action)]

    def scalar_reduction(self, depth, ops) -> list:
        coords = [self.coord(n) for n in self.out_vars]
        idx = ", ".join(coords) if coords else "0"
        dense = self.out_type.format.is_dense  # an entry no term reaches holds the identity
        init = [Reduce("acc", self.acc_init)] + ([] if dense else [Touch("touched", "False")])
        body = self.gen_after_switch(depth, ops)
        if dense:
            done = [Assign(f"out[{idx}]", "acc", "+" if self.st.accumulate else None)]
        else:
            done = [If("touched", [Emit(coords, "acc")])]
        return init + body + done

    def gen_after_switch(self, depth, ops):
        first, self.first_red = self.first_red, -1
        try:
            return self.gen(depth, ops)
        finally:
            self.first_red = first

    def linear_vars(self, vs) -> str:
        expr = "0"
        for v in vs:
            expr = f"({expr}) * {v.extent()} + {v.name}"
        return expr

    def over_output(self, inner: list) -> list:
        """Loops over every element of the dense output (c0, c1, ...) around ``inner``."""
        for k in reversed(range(len(self.out_vars))):
            inner = [For(f"c{k}", "0", f"n_{self.out_vars[k]}", inner)]
        return inner


def _overwrites(body: list, arguments: dict, out_vars: list) -> bool:
    """Whether ``body`` stores every element of ``out`` before anything reads it: its one store into
    ``out`` is ``out[v_a, v_b, ..] = value``, reached unconditionally through loops ``for v_a in [0, n_a)``
    over the output's whole extents, in its index order."""
    stores = [s for s in walk(body, private=False) if isinstance(s, Assign) and s.target.split("[")[0] == "out"]
    if len(stores) != 1 or stores[0].op is not None:
        return False
    path, level = [], body
    for x in out_vars:
        loop = next((s for s in level if isinstance(s, For) and s.var == f"v_{x}"), None)
        if loop is None or loop.start != "0" or arguments.get(loop.stop) != ("extent", x):
            return False
        path.append(loop.var)
        level = loop.body
    target = f"out[{', '.join(path)}]" if path else "out[0]"
    return any(s is stores[0] and s.target == target for s in level)






def _toposort(variables, edges, priority):
    indeg = {v: 0 for v in variables}
    for a, b in edges:
        if a in indeg and b in indeg:
            indeg[b] += 1
    order, ready = [], [v for v in variables if indeg[v] == 0]
    while ready:
        ready.sort(key=priority)
        v = ready.pop(0)
        order.append(v)
        for a, b in edges:
            if a == v and b in indeg:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
    return order if len(order) == len(variables) else None

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
"""

from __future__ import annotations

import ast as pyast
from dataclasses import dataclass, field, replace

import numpy as np

from . import ast as A
from .check import Checked, Statement
from .levels import Parent
from .loopir import Alloc, Assign, Comment, Emit, For, Function, If, Prefetch, Return, SortRange, While


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


def tensor_name(name: str) -> str:
    return f"t_{name}"


def lower(checked: Checked, st: Statement, index: int, options: dict | None = None) -> Lowered:
    """``options``: schedule choices that override the automatic ones, e.g. ``workspace="hash"``."""
    return _Lowering(checked, st, index, options or {}).run()


_IDENTITY = {"+": "0", "or": "False", "and": "True"}
# reductions whose identity is not 0: a scattered dense output starts at the identity, which the
# entries no term reaches keep (DESIGN.md, semantics)
_TRACKED = ("max", "min", "and")


class _Lowering:
    def __init__(self, checked: Checked, st: Statement, index: int, options: dict):
        self.c, self.st, self.index, self.options = checked, st, index, options
        self.hashed = False
        # CPU only: C-like backends would need 64-bit literals for the bit arithmetic
        self.bitset = options.get("backend", "cpu") == "cpu"
        self.assumed: set = set()  # presence conditions known to hold where code is being generated
        self.notes: list[str] = []
        self.accesses = [n for n in A.walk(st.value) if isinstance(n, A.Access)]
        self.out_type = checked.types[st.target.tensor]
        self.out_vars = [ix.name for ix in st.target.indices]
        self.tmp = 0

    # ---- plan -------------------------------------------------------------------------------
    def run(self) -> Lowered:
        self.converted: dict = {}
        # on the CPU a contiguous inner axpy wins; the GPU renderer wants (row, column) threads
        self.trailing = self.trailing_dense() if self.options.get("backend", "cpu") == "cpu" else set()
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
        self.formula = self.presence(self.st.value)
        self.assembly = None
        body = self.function_body()
        if self.options.get("backend", "cpu") == "cpu":
            body = _unroll_axpys(_prefetch_gathers(body))
        params = self.params()
        hints = [s for s in _walk_stmts(body) if isinstance(s, Prefetch)]
        if hints:  # on only for scattered coordinates: a banded matrix's gathers pay for the hint
            crd = self.arguments[hints[0].crd]
            pos = ("level", *crd[1:4], "pos")
            self.arguments["prefetch_"] = ("scattered", pos if pos in self.arguments.values() else None, crd)
            params.append("prefetch_")
        fn = Function(f"stmt{self.index}", params, body)
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
        operand stored unblocked along the same index) are converted to a plain format first."""
        sparse = [(k, acc, self.c.types[acc.tensor].format) for k, acc in enumerate(self.accesses)
                  if not self.c.types[acc.tensor].format.is_dense]
        blocks: dict[str, int] = {}
        clash: set = set()
        for _, acc, fmt in sparse:
            for lv in fmt.levels:
                name = acc.indices[lv.dim].name
                b = lv.block if lv.op else 1
                if blocks.setdefault(name, b) != b:
                    clash.add(name)
        for k, acc, fmt in sparse:
            if any(acc.indices[d].name in clash for d in fmt.blocks):
                self.convert(k, [(d, None, 1) for d in fmt.dim_order], "its blocks do not match another operand's")
        kept = {}
        for k, acc, fmt in sparse:
            if k not in self.converted:
                kept.update({acc.indices[d].name: b for d, b in fmt.blocks.items()})
        return kept

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

    # ---- presence formula -----------------------------------------------------------------
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
        parts = [_Lowering.evaluate(g, atoms) for g in f[1]]
        if f[0] == "and":
            if "False" in parts:
                return "False"
            parts = [p for p in parts if p != "True"]
            return "True" if not parts else parts[0] if len(parts) == 1 else "(" + " and ".join(parts) + ")"
        if "True" in parts:
            return "True"
        parts = [p for p in parts if p != "False"]
        return "False" if not parts else parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"

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
            size = " * ".join(v.extent() for v in self.ws_vars)
            width = 1
            for v in self.ws_vars:
                width *= v.block if v.part == "i" else self.c.extents[v.index] // (v.block if v.part else 1)
            self.hashed = self.options.get("workspace") == "hash" or (
                self.options.get("workspace") != "dense" and width > DENSE_WORKSPACE_LIMIT)
            names = ", ".join(v.index + v.part for v in self.ws_vars)
            if self.hashed:
                private = [Alloc("ws_v", str(HASH_START), str(dt), None),
                           Alloc("ws_f", str(HASH_START), "int64", "0"),
                           Alloc("ws_k", str(HASH_START), "int64", None),
                           Alloc("ws_l", str(HASH_START), "int64", None),
                           Assign("ws_cap", str(HASH_START)), Assign("ws_gen", "0")]
                self.notes.append(f"workspace: hash table over {names} (open addressing, doubles when half "
                                  f"full; row-wise, Gustavson)")
            else:
                private = [Alloc("ws_v", size, str(dt), None), Alloc("ws_f", size, "int64", "0"),
                           Alloc("ws_l", size, "int64", None), Assign("ws_gen", "0")]
                self.notes.append(f"workspace: dense over {names} (row-wise, Gustavson)")
                if self.bitset:
                    private.append(Alloc("ws_b", f"({size}) // 64 + 1", "int64", "0"))
                    self.notes.append("workspace order: a bitset of the touched coordinates, scanned between "
                                      "the least and greatest (no comparison sort)")
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
        emits = [x for x in _walk_stmts(loops) if isinstance(x, Emit)]
        inside = top is not None and self.order[0].index in self.out_vars and emits and \
            len([x for x in _walk_stmts(top.body) if isinstance(x, Emit)]) == len(emits)
        if sparse_out and inside:
            self.assembly = "csr" if self.direct_csr(top) else "coords"
            return pre + self.two_phase(loops, top, private)
        if sparse_out:
            self.assembly = "growable"
            nd = len(self.out_vars)
            pre += [Alloc(f"out_c{d}", "out_cap", "int64", None) for d in range(nd)]
            pre += [Alloc("out_v", "out_cap", str(dt), None), Assign("out_n", "0")]
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

    def direct_csr(self, top: For) -> bool:
        """The output is CSR-shaped and rows come in order: counts per row are its ``pos``."""
        from .levels import Compressed, Dense

        lv = self.out_type.format.levels
        return (len(lv) == 2 and isinstance(lv[0].type, Dense) and isinstance(lv[1].type, Compressed)
                and lv[1].type.unique and not self.out_type.format.blocks and self.sorted_out()
                and top.var == f"v_{self.out_vars[lv[0].dim]}" and top.start == "0")

    def sorted_out(self) -> bool:
        fmt = self.out_type.format
        out_seq = [v.index for v in self.order if v.index in self.out_vars]
        in_order = [self.out_vars[lv.dim] for lv in fmt.levels]
        return not fmt.blocks and out_seq == in_order and all(v.part == "" for v in self.order
                                                              if v.index in self.out_vars)

    def two_phase(self, loops: list, top: For, private: list) -> list:
        """Sparse-output assembly in two passes over the outer loop: count the entries of each outer
        iteration, prefix-sum the counts into offsets, then fill. Both passes may run in parallel;
        cursors started before the outer loop (a merge it drives) are started again for the fill."""
        dt = self.out_type.dtype
        skip = self.out_type.format.levels[0].dim if self.assembly == "csr" else None
        k = loops.index(top)
        n_outer = f"({top.stop}) - ({top.start})"
        rel = f"{top.var} - ({top.start})"
        counting = replace(top, body=[Assign("cnt", "0"), *_count_pass(top.body),
                                      Assign(f"counts[{rel}]", "cnt")], private=_count_pass(private))
        coords = [d for d in range(len(self.out_vars)) if d != skip]
        filling = replace(top, body=[Assign("oq", f"offs[{rel}]"), *_fill_pass(top.body, coords)],
                          private=private)
        offsets = [Alloc("offs", "n_outer + 1", "int64", "0"),
                   For("r_", "0", "n_outer", [Assign("offs[r_ + 1]", "offs[r_] + counts[r_]")])]
        small = all(self.c.extents[n] < 2**31 for n in self.out_vars)
        crd_type = "int32" if skip is not None and small else "int64"
        outputs = [Alloc(f"out_c{d}", "offs[n_outer]", crd_type, None, written=True) for d in coords]
        outputs.append(Alloc("out_v", "offs[n_outer]", str(dt), None, written=True))
        self.notes.append("assembly: two-phase (count entries per outer iteration, prefix sum, fill)"
                          + (", counts become the CSR pos array" if skip is not None else ""))
        return (loops[:k] + [Assign("n_outer", n_outer), Alloc("counts", "n_outer", "int64", "0"), counting]
                + offsets + outputs + loops[:k] + [filling] + loops[k + 1:]
                + [Return(["offs", *(f"out_c{d}" for d in coords), "out_v"])])

    def identity(self, op, dt) -> str:
        if op in _IDENTITY:
            return {"+": "0.0" if dt.kind == "f" else "0"}.get(op, _IDENTITY[op])
        if dt.kind == "f":
            return "-np.inf" if op == "max" else "np.inf"
        if dt.kind == "b":
            return "False" if op == "max" else "True"
        info = np.iinfo(dt)
        return str(info.min if op == "max" else info.max)

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
        for s in _walk_stmts(init):
            if isinstance(s, Assign) and s.op is None and s.target not in assigned:
                assigned.append(s.target)
        return [If(op.present, init, [Assign(t, "0") for t in assigned])]

    def parallel_ok(self) -> bool:
        """The outer loop runs over an output index, so its iterations write disjoint parts of the
        output (dense), or their own entries (sparse outputs, assembled in two phases)."""
        return bool(self.order) and self.order[0].index in self.out_vars

    # ---- leaves and reductions ------------------------------------------------------------
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
            action = [Assign("acc", val, self.st.reduce_op)]
            if not self.out_type.format.is_dense:
                action.append(Assign("touched", "True"))
        elif self.mode == "scatter":
            action = [Assign(f"out[{idx}]", val, self.st.reduce_op)]
        else:
            lin = self.linear_vars(self.ws_vars)
            if self.hashed:
                action = [Assign("w", lin), *_hash_probe("ws_f", "ws_k", "ws_cap"),
                          If("ws_f[h] != ws_gen",
                             [Assign("ws_f[h]", "ws_gen"), Assign("ws_k[h]", "w"), Assign("ws_v[h]", val),
                              Assign("ws_l[ws_n]", "w"), Assign("ws_n", "1", "+"),
                              If("ws_n * 2 > ws_cap", _hash_grow(str(self.out_type.dtype)))],
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
        init = [Assign("acc", self.acc_init)] + ([] if dense else [Assign("touched", "False")])
        body = self.gen_after_switch(depth, ops)
        if dense:
            done = [Assign(f"out[{idx}]", "acc", "+" if self.st.accumulate else None)]
        else:
            done = [If("touched", [Emit(coords, "acc")])]
        return init + body + done

    def workspace_reduction(self, depth, ops) -> list:
        body = self.gen_after_switch(depth, ops)
        coords = []
        decode = [Assign("w", "ws_l[t]")]
        if len(self.ws_vars) == 1:
            decode.append(Assign(self.ws_vars[0].name, "w"))
        else:
            for v in reversed(self.ws_vars):
                decode += [Assign(v.name, f"w % {v.extent()}"), Assign("w", f"w // {v.extent()}")]
        coords = [self.coord(n) for n in self.out_vars]
        size = " * ".join(v.extent() for v in self.ws_vars)
        if self.hashed:
            flush = [SortRange("ws_l", "0", "ws_n"),
                     For("t", "0", "ws_n", [*decode, Assign("w", "ws_l[t]"), *_hash_probe("ws_f", "ws_k", "ws_cap"),
                                            Emit(coords, "ws_v[h]")])]
        else:
            flush = [SortRange("ws_l", "0", "ws_n", "ws_f", "ws_gen", size, "ws_b" if self.bitset else None),
                     For("t", "0", "ws_n", decode + [Emit(coords, "ws_v[ws_l[t]]")])]
        # entries of ws_f equal to ws_gen were touched in this pass: no clearing between passes
        return [Assign("ws_gen", "1", "+"), Assign("ws_n", "0")] + body + flush

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


# A dense workspace holds one slot per coordinate of the output's inner dimensions, per worker;
# wider than this, a hash table sized by the entries actually touched is used instead.
DENSE_WORKSPACE_LIMIT = 1 << 22
HASH_START = 64
_HASH = "2654435761"  # Knuth's multiplicative hash (TAOCP 6.4), in int64 arithmetic


def _hash_probe(stamp, keys, cap) -> list:
    """Find key ``w``'s slot ``h`` by linear probing; a slot is free unless stamped this pass."""
    return [Assign("h", f"((w * {_HASH}) >> 16) & ({cap} - 1)"),
            While(f"{stamp}[h] == ws_gen and {keys}[h] != w", [Assign("h", f"(h + 1) & ({cap} - 1)")])]


def _hash_grow(dtype: str) -> list:
    """Double the hash table, re-inserting this pass's keys (listed in ws_l)."""
    return [
        Assign("ws_cap2", "ws_cap * 2"),
        Alloc("ws_v2", "ws_cap2", dtype, None), Alloc("ws_f2", "ws_cap2", "int64", "0"),
        Alloc("ws_k2", "ws_cap2", "int64", None), Alloc("ws_l2", "ws_cap2", "int64", None),
        For("t", "0", "ws_n", [
            Assign("w", "ws_l[t]"), Assign("ws_l2[t]", "w"), *_hash_probe("ws_f", "ws_k", "ws_cap"),
            Assign("g", "h"), Assign("w", "ws_k[g]"), *_hash_probe("ws_f2", "ws_k2", "ws_cap2"),
            Assign("ws_f2[h]", "ws_gen"), Assign("ws_k2[h]", "w"), Assign("ws_v2[h]", "ws_v[g]"),
        ]),
        Assign("ws_v", "ws_v2"), Assign("ws_f", "ws_f2"), Assign("ws_k", "ws_k2"), Assign("ws_l", "ws_l2"),
        Assign("ws_cap", "ws_cap2"),
        Comment("the new key's slot moved: find it again"),
        Assign("w", "ws_l[ws_n - 1]"), *_hash_probe("ws_f", "ws_k", "ws_cap"),
    ]


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


def _map_stmts(stmts, fn) -> list:
    """A copy of ``stmts`` with each statement replaced by ``fn(statement)`` (a list), bodies first."""
    out = []
    for s in stmts:
        if isinstance(s, For):
            s = replace(s, body=_map_stmts(s.body, fn), private=_map_stmts(s.private, fn))
        elif isinstance(s, While):
            s = replace(s, body=_map_stmts(s.body, fn))
        elif isinstance(s, If):
            s = replace(s, then=_map_stmts(s.then, fn), orelse=_map_stmts(s.orelse, fn))
        out += fn(s)
    return out


UNROLL = 4  # sparse entries combined per pass over a dense row (_unroll_axpys)


def _unroll_axpys(stmts) -> list:
    """Unroll a sparse loop whose body is an axpy into a fixed row, four entries at a time.

    ``for q: j = crd[q]; for n: out[i, n] += A[q] * X[j, n]`` becomes a loop over groups of four
    entries with one inner pass ``out[i, n] += (A[q]*X[j0, n] + A[q+1]*X[j1, n]) + (...)``: the row
    of ``out`` is loaded and stored once per four entries, and four rows of ``X`` are in flight (the
    SpMM inner loop; CSR SpMM 8192^2 at 1%, 64 columns: 6.6 -> 4.3 ms on two cores). Only where the
    accumulated element does not depend on the entry, so combining entries first is a reassociation.
    """
    def unroll(f):
        if not isinstance(f, For) or f.parallel or f.private or not f.body:
            return [f]
        *pre, inner = f.body
        hints = [a for a in pre if isinstance(a, Prefetch) and a.pos == f.var]  # made once per entry
        pre = [a for a in pre if a not in hints]
        if not (all(isinstance(a, Assign) and a.op is None and a.target.isidentifier() for a in pre)
                and isinstance(inner, For) and len(inner.body) == 1 and isinstance(inner.body[0], Assign)
                and inner.body[0].op == "+"):
            return [f]
        acc = inner.body[0]
        per_entry = {f.var, *(a.target for a in pre)}
        if _names(acc.target) & per_entry or (_names(inner.start) | _names(inner.stop)) & per_entry:
            return [f]
        end = f"{f.var}_end"

        def entry(u):  # the statements and the added term of entry q + u
            names = {f.var: f"({f.var} + {u})", **{a.target: f"{a.target}_{u}" for a in pre}}
            return ([replace(h, pos=names[f.var]) for h in hints]
                    + [Assign(names[a.target], _renamed(a.value, names)) for a in pre], _renamed(acc.value, names))

        groups = [entry(u) for u in range(UNROLL)]
        terms = [t for _, t in groups]
        total = " + ".join(f"(({a}) + ({b}))" for a, b in zip(terms[::2], terms[1::2]))  # terms may be comparisons
        return [Assign(f.var, f.start), Assign(end, f.stop),
                While(f"{f.var} + {UNROLL - 1} < {end}",
                      [a for stmts, _ in groups for a in stmts]
                      + [replace(inner, body=[Assign(acc.target, total, "+")]), Assign(f.var, str(UNROLL), "+")]),
                While(f"{f.var} < {end}", [*hints, *pre, inner, Assign(f.var, "1", "+")])]
    return _map_stmts(stmts, unroll)


def _overwrites(body: list, arguments: dict, out_vars: list) -> bool:
    """Whether ``body`` stores every element of ``out`` before anything reads it: its one store into
    ``out`` is ``out[v_a, v_b, ..] = value``, reached unconditionally through loops ``for v_a in [0, n_a)``
    over the output's whole extents, in its index order."""
    stores = [s for s in _walk_stmts(body) if isinstance(s, Assign) and s.target.split("[")[0] == "out"]
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


def _prefetch_gathers(stmts) -> list:
    """Prefetch the dense operand a sparse loop gathers: ``for q: j = crd[q]; ... x[j]`` asks for
    ``x[crd[q + 64]]`` ahead, and ``... X[j, n]`` for the whole row ``X[crd[q + 32], :]``. Random-column
    CSR SpMV (2M rows, x of 16 MB) runs 1.7x faster, CSR SpMM 200000^2 x 64 columns 1.3x; on a banded
    matrix, whose gathers the hardware prefetcher already follows, it costs 5-9%, so the hints run
    behind a flag the driver sets only for scattered coordinates (``compiler._scattered``)."""
    def add(f):
        if not isinstance(f, For) or f.parallel or not f.body or not isinstance(f.body[0], Assign):
            return [f]
        first = f.body[0]
        crd = first.value[:-len(f"[{f.var}]")] if first.value.endswith(f"[{f.var}]") else ""
        if first.op is not None or not crd.isidentifier() or not first.target.isidentifier():
            return [f]
        gathered: dict = {}  # array -> whole rows?
        for s in _walk_stmts(f.body[1:]):
            for text in (getattr(s, "value", None), getattr(s, "cond", None)):
                for node in pyast.walk(pyast.parse(text, mode="eval")) if isinstance(text, str) else ():
                    if not (isinstance(node, pyast.Subscript) and isinstance(node.value, pyast.Name)) or \
                            node.value.id == crd:
                        continue
                    lead = node.slice.elts[0] if isinstance(node.slice, pyast.Tuple) else node.slice
                    if isinstance(lead, pyast.Name) and lead.id == first.target:
                        gathered.setdefault(node.value.id, isinstance(node.slice, pyast.Tuple))
        hints = [Prefetch(a, crd, f.var, 32 if row else 64, row, "prefetch_") for a, row in gathered.items()]
        return [replace(f, body=[*hints, *f.body])]
    return _map_stmts(stmts, add)


def _names(expr: str) -> set:
    return {n.id for n in pyast.walk(pyast.parse(expr, mode="eval")) if isinstance(n, pyast.Name)}


def _renamed(expr: str, names: dict) -> str:
    """``expr`` with the variables in ``names`` replaced by the given expressions."""
    class Rename(pyast.NodeTransformer):
        def visit_Name(self, node):
            return pyast.parse(names[node.id], mode="eval").body if node.id in names else node
    return pyast.unparse(Rename().visit(pyast.parse(expr, mode="eval")))


def _count_pass(stmts) -> list:
    """The counting pass: each emitted entry adds one; values and orderings are not computed."""
    def count(s):
        if isinstance(s, Emit):
            return [Assign("cnt", "1", "+")]
        if isinstance(s, SortRange) or (isinstance(s, Assign) and s.target.startswith(("ws_v", "ws_b"))):
            return []
        if isinstance(s, Alloc) and s.var.startswith("ws_v"):
            return []
        return [s]
    return _map_stmts(stmts, count)


def _fill_pass(stmts, coords) -> list:
    """The filling pass: each emitted entry is written at the next offset of its outer iteration."""
    def fill(s):
        if isinstance(s, Emit):
            return ([Assign(f"out_c{d}[oq]", s.coords[d]) for d in coords]
                    + [Assign("out_v[oq]", s.value), Assign("oq", "1", "+")])
        return [s]
    return _map_stmts(stmts, fill)


def _walk_stmts(stmts):
    for s in stmts:
        yield s
        for attr in ("body", "then", "orelse"):
            yield from _walk_stmts(getattr(s, attr, []) or [])


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

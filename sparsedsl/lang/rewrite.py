"""Rewrite: put the program in the form the lowering takes.

1. **Composite operands are algebra** (DESIGN.md). An access of ``kron(B, C)``, ``lowrank(U, V)``
   (``+ S``) or ``monarch(L, R)`` is replaced by index notation over the factors, with split index
   variables where the algebra needs them (``K[i,j]`` with ``K = kron(B, C)`` becomes
   ``B[i0,j0] * C[i1,j1]`` with i = i0·m2 + i1). Every other tensor indexed by a split index is
   read reshaped (``x[j]`` -> ``x'[j0,j1]``; a dense reshape is free, a sparse operand's coordinates
   are split) and a split output is reshaped back after the kernel (``Checked.derived`` and
   ``Checked.reshaped`` say how; ``sparsedsl.composite.bind`` and ``unsplit`` do it at run time).
   A ``+``-reduced sum of products is then distributed into terms, and each term is contracted
   pairwise into ``let`` temporaries in the order the cost model of ``contract.py`` picks
   (``kron(B,C)·x`` = ``B · (C · X)ᵀ``, ``(U Vᵀ + S)·X`` = ``U (Vᵀ X) + S X``). Dense inputs that a
   contraction would read against their layout are read from a transposed copy.
2. **Nested reductions are hoisted** into temporaries (``y[i] = max[j](A[i,j]) + b[i]`` becomes
   ``let r[i] = max[j](A[i,j]); y[i] = r[i] + b[i]``), so each statement has at most one reduction,
   at its top.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ..errors import DSLError
from . import ast as A
from .check import SEMIRINGS, Checked, CompositeType, TensorType, check, python_type
from .contract import Operand, best_order
from .formats import Format, LevelSpec, as_format
from .levels import Compressed, Dense

_MAX_TERMS = 64
_SPARSE_GUESS = 0.1  # density assumed for a plain sparse operand (its nnz is not part of a plan's key)


def rewrite(checked: Checked) -> Checked:
    if any(isinstance(checked.types.get(n), CompositeType) for n in checked.inputs):
        checked = _Expansion(checked).run()              # composites -> index notation, contraction order
    return _hoist(checked)                                # nested reductions -> temporaries


# ---- 1. composite operands ------------------------------------------------------------------


class _Expansion:
    def __init__(self, checked: Checked):
        self.c, self.p = checked, checked.program
        self.comp = {n: t for n, t in checked.types.items() if n in checked.inputs and isinstance(t, CompositeType)}
        self.inputs = set(checked.inputs)
        self.defined = {st.target.tensor for st in checked.statements}
        self.extent = dict(checked.extents)
        self.derived: dict = {}  # name -> (source, part, dim splits, permutation or None)
        self.dtypes: dict = {}  # derived name -> TensorType
        self.labels: dict = {}
        self.taken = set(checked.types) | set(checked.scalars)
        self.notes: list = []
        self.counter = 0

    def fresh(self, stem: str) -> str:
        while True:
            self.counter += 1
            name = f"{stem}{self.counter}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    # ---- which indices split, and how ---------------------------------------------------
    def find_splits(self):
        parent: dict = {}

        def find(x):
            parent.setdefault(x, x)
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        seeds: dict = {}
        for k, assign in enumerate(self.p.statements):
            for acc in [assign.target] + [n for n in A.walk(assign.value) if isinstance(n, A.Access)]:
                for d, ix in enumerate(acc.indices):
                    node = ("i", k, ix.name)
                    find(node)
                    if acc.tensor in self.comp:
                        nat = _natural_split(self.comp[acc.tensor], d)
                        if nat is not None:
                            seeds.setdefault(node, []).append((nat, ix))
                    elif acc.tensor in self.defined:
                        parent[find(node)] = find(("t", acc.tensor, d))
        groups: dict = {}
        for node, found in seeds.items():
            groups.setdefault(find(node), []).extend(found)
        self.splits = {}
        self.tensor_splits = {}
        for node in list(parent):
            root = find(node)
            if root not in groups:
                continue
            sizes = _refine(groups[root])
            if len(sizes) < 2:
                continue
            if node[0] == "i":
                self.splits[(node[1], node[2])] = sizes
            else:
                self.tensor_splits[(node[1], node[2])] = sizes

    def parts_of(self, k: int, v: str) -> list:
        """The (name, extent) parts of index ``v`` in statement ``k`` (one part when not split)."""
        sizes = self.splits.get((k, v))
        if sizes is None:
            return [(v, self.extent.get(v))]
        names = [(f"{v}__{k}_{t}", n) for t, n in enumerate(sizes)]
        for name, n in names:
            self.extent[name] = n
        return names

    # ---- operands made from the bound ones ----------------------------------------------
    def base_type(self, src, part) -> TensorType:
        return self.comp[src].parts[part] if part is not None else self.c.types[src]

    def derive(self, src, part, splits, perm=None) -> str:
        """The name of an input made from operand ``src`` (its factor ``part``), each dimension
        split into ``splits[d]``, then permuted by ``perm``."""
        base = self.base_type(src, part)
        trivial = all(s == (n,) for s, n in zip(splits, base.shape)) and perm is None
        if trivial and part is None:
            return src
        key = (src, part, tuple(splits), perm)
        for name, spec in self.derived.items():
            if spec == key:
                return name
        stem = f"{src}__{part}" if part is not None else f"{src}__s"
        name = stem if trivial and stem not in self.taken else self.fresh(stem + "_")
        self.taken.add(name)
        shape = tuple(n for s in splits for n in s)
        if base.format.is_dense:
            if perm is not None:
                shape = tuple(shape[p] for p in perm)
            fmt = as_format("dense", len(shape))
        else:
            fmt = base.format if trivial else split_format(base.format, splits)
        self.derived[name] = key
        self.dtypes[name] = TensorType(shape, base.dtype, fmt)
        roles = _ROLES.get(self.comp[src].kind, ()) if part is not None else ()
        self.labels[name] = f"{src}.{roles[part] if part < len(roles) else f'F{part}'}" if part is not None else src
        return name

    def factor_access(self, src, part, groups, span) -> A.Access:
        groups = list(groups)
        for d, g in enumerate(groups):
            if not g:  # a dimension of extent 1 that no index part maps to: its own index of extent 1
                one = self.fresh("u__")
                self.extent[one] = 1
                groups[d] = [(one, 1)]
        splits = [tuple(n for _, n in g) for g in groups]
        name = self.derive(src, part, splits)
        return A.Access(span, name, tuple(A.Index(span, v) for g in groups for v, _ in g))

    def split_access(self, k, acc: A.Access) -> A.Access:
        groups = [self.parts_of(k, ix.name) for ix in acc.indices]
        if all(len(g) == 1 and g[0][0] == ix.name for g, ix in zip(groups, acc.indices)):
            return acc
        if acc.tensor in self.defined:
            return A.Access(acc.span, acc.tensor, tuple(A.Index(acc.span, v) for g in groups for v, _ in g))
        return self.factor_access(acc.tensor, None, groups, acc.span)

    def composite_access(self, k, acc: A.Access):
        t = self.comp[acc.tensor]
        sp, src = acc.span, acc.tensor
        dims = [self.parts_of(k, ix.name) for ix in acc.indices]
        if t.kind == "kron":
            per_factor = [[] for _ in t.parts]
            for d, parts in enumerate(dims):
                for f, g in enumerate(_group(parts, [p.shape[d] for p in t.parts])):
                    per_factor[f].append(g)
            return _product([self.factor_access(src, f, gs, sp) for f, gs in enumerate(per_factor)])
        if t.kind in ("lowrank", "lowrank+sparse"):
            r = self.fresh("r__")
            self.extent[r] = t.parts[0].shape[1]
            u = self.factor_access(src, 0, [dims[0], [(r, self.extent[r])]], sp)
            v = self.factor_access(src, 1, [dims[1], [(r, self.extent[r])]], sp)
            low = A.Reduce(sp, "sum", (A.Index(sp, r),), A.BinOp(sp, "*", u, v))
            if t.kind == "lowrank":
                return low
            return A.BinOp(sp, "+", low, self.factor_access(src, 2, dims, sp))
        if t.kind == "monarch":
            rows, cols = (dims[1], dims[0]) if t.transposed else (dims[0], dims[1])
            p, s, kk = t.parts[0].shape
            q = t.parts[1].shape[2]
            gc, ga = _group(rows, [s, p])
            gk, gb = _group(cols, [kk, q])
            return A.BinOp(sp, "*", self.factor_access(src, 0, [ga, gc, gk], sp),
                           self.factor_access(src, 1, [gk, ga, gb], sp))
        raise AssertionError(t.kind)

    def expand(self, k, e, semiring=False):
        """``e`` with composite accesses expanded and split indices split (no reordering). Inside a
        semiring reduction ``*`` means the semiring's product, so there a composite is first
        evaluated into a temporary (``self.pending``) with ordinary arithmetic."""
        if isinstance(e, A.Access):
            if e.tensor not in self.comp:
                return self.split_access(k, e)
            value = self.composite_access(k, e)
            if not semiring:
                return value
            name = self.fresh("__m")
            idx = _indices(A.free_indices(value, set()))
            self.pending.append(A.Assign(e.span, A.Access(e.span, name, idx), value, True))
            return A.Access(e.span, name, idx)
        if isinstance(e, A.Reduce):
            idx = tuple(A.Index(ix.span, v) for ix in e.indices for v, _ in self.parts_of(k, ix.name))
            inner = semiring or SEMIRINGS.get(e.op, ("+", "*"))[1] != "*"
            return replace(e, indices=idx, body=self.expand(k, e.body, inner))
        if isinstance(e, A.BinOp):
            return replace(e, left=self.expand(k, e.left, semiring), right=self.expand(k, e.right, semiring))
        if isinstance(e, A.Neg):
            return replace(e, operand=self.expand(k, e.operand, semiring))
        if isinstance(e, A.Call):
            return replace(e, args=tuple(self.expand(k, a, semiring) for a in e.args))
        return e

    # ---- the whole program --------------------------------------------------------------
    def run(self) -> Checked:
        self.find_splits()
        statements = []
        for k, (assign, st) in enumerate(zip(self.p.statements, self.c.statements)):
            uses = any(isinstance(n, A.Access) and n.tensor in self.comp for n in A.walk(assign.value))
            out = None
            if uses and st.reduce_op == "+" and st.mul_op == "*":
                out = self.contract_statement(k, assign, st)
            if out is None:
                self.pending = []
                value = self.expand(k, assign.value)
                out = self.pending + [replace(assign, target=self.split_access(k, assign.target), value=value)]
            statements += out
        return self.program(statements)

    def program(self, statements) -> Checked:
        c, p = self.c, self.p
        params, seen = [], set()
        targets = {st.target.tensor for st in statements}
        for st in statements:
            for n in A.walk(st.value):
                if isinstance(n, A.Access) and n.tensor not in seen and n.tensor not in targets:
                    seen.add(n.tensor)
                    params.append(A.Param(p.span, n.tensor, "tensor", None))
        params += [q for q in p.params if q.kind == "scalar"]
        operands = {q.name: self.dtypes.get(q.name) or c.types[q.name] for q in params if q.kind == "tensor"}
        operands.update(_scalar_operands(c))
        outputs, reshaped = [], {}
        for q in p.outputs:
            splits = [self.tensor_splits.get((q.name, d)) for d in range(len(c.types[q.name].shape))]
            if not any(splits):
                outputs.append(q)
                continue
            t = c.types[q.name]
            reshaped[q.name] = t
            splits = [s or (n,) for s, n in zip(splits, t.shape)]
            fmt = "dense" if t.format.is_dense else split_format(t.format, splits)
            outputs.append(replace(q, format=fmt))
        new = replace(p, params=tuple(params), outputs=tuple(outputs), statements=tuple(statements))
        out = check(new, operands)
        return replace(out, derived=dict(self.derived), reshaped=reshaped, notes=self.notes)

    # ---- sums of products, contracted pairwise --------------------------------------------
    def contract_statement(self, k, assign: A.Assign, st):
        target = self.split_access(k, st.target)
        out_names = [ix.name for ix in target.indices]
        body = self.expand(k, st.value)
        terms = self.terms(body)
        if terms is None:
            return None
        top = [v for ix in st.reduce_indices for v, _ in self.parts_of(k, ix)]
        full = []
        for coef, factors, sums in terms:
            present = set().union(*(A.free_indices(f, set()) for f in factors)) if factors else set()
            missing = [v for v in top if v not in present]
            coef = coef * math.prod(self.extent[v] for v in missing)
            full.append((coef, factors, [v for v in top if v in present] + [v for v in sums if v not in top]))
        dense_target = self.c.types[st.target.tensor].format.is_dense
        if dense_target and len(full) > 1 and all(
                f and set(out_names) <= {v for x in f for v in A.free_indices(x, set())} for _, f, _ in full):
            return self.accumulate_terms(k, assign, st, full, out_names)
        direct = len(full) == 1 and full[0][1]
        stmts, finals = [], []
        for t, (coef, factors, sums) in enumerate(full):
            if not factors:
                finals.append(A.Literal(assign.span, coef))
                continue
            keep = [v for v in out_names if any(v in A.free_indices(f, set()) for f in factors)]
            if len(factors) == 1 and not sums and not direct:
                finals.append(_scaled(coef, factors[0]))
                continue
            name, is_let = (st.target.tensor, assign.is_let) if direct else (self.fresh("__t"), True)
            order = out_names if direct else keep
            if dense_target:
                self.contract_term(k, t, factors, sums, coef if direct else 1, name, order, is_let, stmts, assign.span)
            else:  # a sparse result keeps its pattern only if the term is one statement
                value = _product(factors)
                if sums:
                    value = A.Reduce(assign.span, "sum", tuple(A.Index(assign.span, v) for v in sums), value)
                stmts.append(A.Assign(assign.span, A.Access(assign.span, name, _indices(order)),
                                      _scaled(coef if direct else 1, value), is_let))
            if not direct:
                finals.append(_scaled(coef, A.Access(assign.span, name, _indices(keep))))
        if not direct:
            value = finals[0]
            for f in finals[1:]:
                value = A.BinOp(assign.span, "+", value, f)
            stmts.append(A.Assign(assign.span, target, value, assign.is_let))
        return stmts

    def accumulate_terms(self, k, assign, st, full, out_names) -> list:
        """A dense target that is a sum of terms, each over all its indices: the first term is written
        into the target and the others are added to it (``accumulate``), with no temporary per term
        and no final pass adding them up."""
        span, name = assign.span, st.target.tensor
        stmts: list = []
        for t, (coef, factors, sums) in enumerate(full):
            if len(factors) == 1 and not sums:
                stmts.append(A.Assign(span, A.Access(span, name, _indices(out_names)), _scaled(coef, factors[0]),
                                      assign.is_let))
            else:
                self.contract_term(k, t, factors, sums, coef, name, out_names, assign.is_let, stmts, span)
            if t:
                stmts[-1] = replace(stmts[-1], accumulate=True)
        return stmts

    def terms(self, e):
        """``e`` as a list of (coefficient, factors, summed indices), or None if it is not a sum of products."""
        if isinstance(e, (A.Access, A.Scalar)):
            return [(1, [e], [])]
        if isinstance(e, A.Literal):
            return None if isinstance(e.value, bool) else [(e.value, [], [])]
        if isinstance(e, A.Neg):
            inner = self.terms(e.operand)
            return None if inner is None else [(-c, f, s) for c, f, s in inner]
        if isinstance(e, A.BinOp) and e.op in "+-":
            a, b = self.terms(e.left), self.terms(e.right)
            if a is None or b is None:
                return None
            return a + [(c if e.op == "+" else -c, f, s) for c, f, s in b]
        if isinstance(e, A.BinOp) and e.op == "*":
            a, b = self.terms(e.left), self.terms(e.right)
            if a is None or b is None or len(a) * len(b) > _MAX_TERMS:
                return None
            return [(ca * cb, fa + fb, sa + sb) for ca, fa, sa in a for cb, fb, sb in b]
        if isinstance(e, A.BinOp) and e.op == "/" and isinstance(e.right, A.Literal) and \
                not isinstance(e.right.value, bool) and e.right.value != 0:
            a = self.terms(e.left)
            return None if a is None else [(c / e.right.value, f, s) for c, f, s in a]
        if isinstance(e, A.Reduce) and e.op == "sum":
            inner = self.terms(e.body)
            if inner is None:
                return None
            rename = {}
            for ix in e.indices:  # each lifted reduction gets its own names
                rename[ix.name] = self.fresh(ix.name + "__")
                self.extent[rename[ix.name]] = self.extent[ix.name]
            return [(c, [_rename(x, rename) for x in f], s + list(rename.values())) for c, f, s in inner]
        return [(1, [e], [])]  # anything else (functions, comparisons, max...) is one opaque factor

    def contract_term(self, k, t, factors, sums, coef, name, order, is_let, stmts, span):
        ops = [Operand(tuple(A.free_indices(f, set())), self.density(f), self.label(f)) for f in factors]
        plan = best_order(ops, order, self.extent)
        self.notes.append(f"statement {k} term {t}: contraction order {plan.describe(ops)}; predicted cost "
                          f"{plan.cost:.3g} against {plan.naive_cost:.3g} for one loop nest over all indices "
                          f"({plan.naive_cost / max(plan.cost, 1):.3g}x)")
        leaf_sets = [set(o.indices) for o in ops]

        def leaves(tree):
            return [tree] if isinstance(tree, int) else leaves(tree[0]) + leaves(tree[1])

        def result(tree):  # the indices a subtree's temporary keeps
            mine = set(leaves(tree))
            others = set().union(*(leaf_sets[i] for i in range(len(ops)) if i not in mine))
            return set().union(*(leaf_sets[i] for i in mine)) & (set(order) | others)

        def emit(tree, target_name, target_order, let, scale):
            if isinstance(tree, int):  # one factor, summed over its own indices
                value = factors[tree]
                red = [v for v in ops[tree].indices if v not in target_order]
            else:
                sides = [leaf_sets[s] if isinstance(s, int) else result(s) for s in tree]
                red = sorted(set().union(*sides) - set(target_order),
                             key=lambda v: self.innermost_rank(v, tree, factors, ops))
                loop = self.loop_model(list(target_order), red, tree, factors)
                # a sparse operand drives its loops (the lowering gathers the dense side): no relayout then
                all_dense = all(not isinstance(s, int) or ops[s].density >= 1 for s in tree)
                nodes = []
                for s, side in zip(tree, sides):
                    if isinstance(s, int):
                        nodes.append(self.relayout(factors[s], loop) if all_dense else factors[s])
                    else:
                        sub_order = [v for v in loop if v in side]
                        sub = self.fresh("__c")
                        emit(s, sub, sub_order, True, 1)
                        nodes.append(A.Access(span, sub, _indices(sub_order)))
                value = A.BinOp(span, "*", nodes[0], nodes[1])
            if red:
                value = A.Reduce(span, "sum", _indices(red), value)
            stmts.append(A.Assign(span, A.Access(span, target_name, _indices(target_order)),
                                  _scaled(scale, value), let))

        if plan.tree is None:
            value = _product(factors)
            red = list(dict.fromkeys(v for o in ops for v in o.indices if v not in order))
            if red:
                value = A.Reduce(span, "sum", _indices(red), value)
            stmts.append(A.Assign(span, A.Access(span, name, _indices(order)), _scaled(coef, value), is_let))
            return
        emit(plan.tree, name, order, is_let, coef)

    def innermost_rank(self, v, tree, factors, ops):
        """Sort key of a summed index: those that are the last dimension of a stored operand go innermost."""
        best = -len(self.extent)  # in no stored operand: outermost
        stack = [tree]
        while stack:
            s = stack.pop()
            if isinstance(s, tuple):
                stack += list(s)
                continue
            if v in ops[s].indices and isinstance(factors[s], A.Access):
                best = max(best, ops[s].indices.index(v) + 1 - len(ops[s].indices))
        return best

    def loop_model(self, target_order, red, tree, factors) -> list:
        """The loop order the CPU lowering will give a statement (``lower.trailing_dense``): output
        indices, then sums, except that a last output index which every factor using it stores last
        runs innermost, as a contiguous axpy. Temporaries are laid out in this order."""
        last = target_order[-1] if len(target_order) > 1 and red else None
        stack = [tree]
        while stack and last is not None:
            s = stack.pop()
            if isinstance(s, tuple):
                stack += list(s)
                continue
            f = factors[s]
            names = [ix.name for ix in f.indices] if isinstance(f, A.Access) else A.free_indices(f, set())
            if last in names and (not isinstance(f, A.Access) or names[-1] != last):
                last = None
        if last is None:
            return target_order + red
        return target_order[:-1] + red + [last]

    def relayout(self, acc, loop):
        """A dense input read in the order of ``loop``: transposed copy when its layout disagrees in
        the innermost loop (an operand the innermost loop does not index is read once per its trip)."""
        if not isinstance(acc, A.Access) or len(acc.indices) < 2 or acc.tensor in self.defined:
            return acc
        names = [ix.name for ix in acc.indices]
        if any(v not in loop for v in names) or loop[-1] not in names:
            return acc
        want = sorted(range(len(names)), key=lambda d: loop.index(names[d]))
        if want[-1] == len(names) - 1:
            return acc  # its innermost loop runs along its last (contiguous) dimension: good enough, no copy
        if acc.tensor in self.derived:
            src, part, splits, perm = self.derived[acc.tensor]
            if perm is not None:
                return acc
        else:
            src, part, splits = acc.tensor, None, tuple((n,) for n in self.c.types[acc.tensor].shape)
        if not self.base_type(src, part).format.is_dense:
            return acc
        name = self.derive(src, part, splits, tuple(want))
        self.labels[name] = self.labels.get(acc.tensor, acc.tensor) + "ᵀ"
        return A.Access(acc.span, name, tuple(acc.indices[d] for d in want))

    def density(self, f) -> float:
        if not isinstance(f, A.Access):
            return 1.0
        spec = self.derived.get(f.tensor)
        if spec is not None and spec[1] is not None:
            return self.comp[spec[0]].densities[spec[1]] if self.comp[spec[0]].densities else 1.0
        t = self.dtypes.get(f.tensor) or self.c.types.get(f.tensor)
        return 1.0 if t is None or t.format.is_dense else _SPARSE_GUESS

    def label(self, f) -> str:
        if isinstance(f, A.Access):
            return f"{self.labels.get(f.tensor, f.tensor)}[{','.join(ix.name for ix in f.indices)}]"
        return type(f).__name__


_ROLES = {"kron": (), "lowrank": ("U", "V"), "lowrank+sparse": ("U", "V", "S"), "monarch": ("L", "R")}


def _natural_split(t: CompositeType, d: int):
    if t.kind == "kron":
        return tuple(p.shape[d] for p in t.parts)
    if t.kind == "monarch":
        p, s, k = t.parts[0].shape
        rows, cols = (s, p), (k, t.parts[1].shape[2])
        if t.transposed:
            rows, cols = cols, rows
        return rows if d == 0 else cols
    return None


def _refine(found) -> tuple:
    """The common refinement of several row-major splits of one extent (an error if they do not nest)."""
    cuts = set()
    for sizes, _ in found:
        stride = 1
        for n in reversed(sizes):
            cuts.add(stride)
            stride *= n
        cuts.add(stride)
    order = sorted(cuts, reverse=True)
    for big, small in zip(order, order[1:]):
        if big % small:
            (a, ia), (b, _) = found[0], found[-1]
            raise DSLError(f"index {ia.name!r} is split as {a} by one composite operand and as {b} by another; "
                           f"the splits do not nest, so no common index split exists", ia.span)
    return tuple(big // small for big, small in zip(order, order[1:]))


def _group(parts, sizes):
    """Cut the list of (name, extent) parts into consecutive groups of the given products."""
    out, k = [], 0
    for size in sizes:
        g, prod = [], 1
        while prod < size:
            g.append(parts[k])
            prod *= parts[k][1]
            k += 1
        if prod != size:
            raise AssertionError(f"split {parts} does not refine {sizes}")
        out.append(g)
    out[0] += parts[k:]  # what is left has extent 1 (an index of extent 1 that no size consumed)
    return out


def split_format(fmt: Format, splits) -> Format:
    """The format of a sparse tensor whose dimension d is split into ``splits[d]`` (row-major):
    dimensions keep their level order; a part is dense while every level above it is dense."""
    order = fmt.dim_order
    kinds = {lv.dim: isinstance(lv.type, Dense) and lv.op is None for lv in fmt.levels}
    start, first = 0, {}
    for d, s in enumerate(splits):
        first[d] = start
        start += len(s)
    dims, types, dense = [], [], True
    for d in order:
        dense = dense and kinds[d]
        for p in range(len(splits[d])):
            dims.append(first[d] + p)
            types.append(Dense() if dense else Compressed())
    if not dims:
        raise DSLError("cannot split a sparse operand into no dimensions")
    return Format(start, tuple(LevelSpec(d, t) for d, t in zip(dims, types)))


def _product(nodes):
    out = nodes[0]
    for n in nodes[1:]:
        out = A.BinOp(n.span, "*", out, n)
    return out


def _scaled(coef, node):
    if coef == 1:
        return node
    if coef == -1:
        return A.Neg(node.span, node)
    return A.BinOp(node.span, "*", A.Literal(node.span, coef), node)


def _indices(names):
    return tuple(A.Index(A.NOWHERE, v) for v in names)


def _rename(e, mapping):
    if isinstance(e, A.Index):
        return replace(e, name=mapping.get(e.name, e.name))
    return A.map_children(e, lambda c: _rename(c, mapping))


# ---- 2. nested reductions -------------------------------------------------------------------


def _hoist(checked: Checked) -> Checked:
    program = checked.program
    statements: list[A.Assign] = []
    counter = [0]

    def hoist(e, top: bool, result):
        if isinstance(e, A.Reduce) and not top:
            body = hoist(e.body, False, result)
            free = A.free_indices(body, {ix.name for ix in e.indices})
            counter[0] += 1
            name = f"__red{counter[0]}"
            fmt = "dense"  # a nested reduction is total (the interpreter's rule), not sparse like an operand
            out = [ix.name for ix in result.indices]
            if not checked.types[result.tensor].format.is_dense and set(free) == set(out):
                free, fmt = out, checked.types[result.tensor].format  # sparse like the result: absent stays absent
            target = A.Access(e.span, name, tuple(A.Index(e.span, v) for v in free))
            statements.append(A.Assign(e.span, target, replace(e, body=body), True, format=fmt))
            return A.Access(e.span, name, target.indices)
        return A.map_children(e, lambda c: hoist(c, False, result))

    changed = False
    for st in program.statements:
        before = len(statements)
        value = hoist(st.value, True, st.target)
        changed |= len(statements) > before
        statements.append(replace(st, value=value))
    if not changed:
        return checked
    operands = {n: t for n, t in checked.types.items() if n in checked.inputs}
    operands.update(_scalar_operands(checked))
    out = check(replace(program, statements=tuple(statements)), operands)
    # the program's own tensors keep the types it was checked with: a hoisted reduction of Python
    # numbers alone (max[k](mask(z[k], -1.5))) is a float64 temporary, which must not widen the result
    # that numpy's promotion of the weak value gave (float32 / weak -> float32)
    types = {**out.types, **{n: t for n, t in checked.types.items() if n in out.types}}
    return replace(out, types=types, derived=checked.derived, reshaped=checked.reshaped, notes=checked.notes)


def _scalar_operands(checked: Checked) -> dict:
    """The scalar parameters' types for a re-check: Python number types for weak ones."""
    return {n: python_type(dt) if n in checked.weak else dt for n, dt in checked.scalars.items()}

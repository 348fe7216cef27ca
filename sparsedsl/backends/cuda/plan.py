"""The plan of one loop-IR function for the CUDA backend, and the loop shapes its kernels take.

``plan_steps`` splits a function's top level into host steps (a scalar of scalars, an allocation, a
prefix sum, a parallel or serial kernel, the return). Each parallel loop is first cleared of dead
scalars (``drop_dead``), then matched against the shapes the renderer has kernels for: a lane-split
reduction (``_reduction_shape``), an (outer, inner) collapse (``_collapse_shape``), a reduction nested
in sequential code (``_nested_reduction``), or a serial scatter run in parallel with atomics
(``_atomic_scatter``). Expressions are the loop IR's strings, parsed with ``ast`` (cached).
Nothing here needs cupy or a GPU.
"""

from __future__ import annotations

import ast as pyast
import dataclasses
import functools

import numpy as np

from ...lang import loopir as L

# ---- expressions and statements ----------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _parse(text: str):
    """The expression's AST (cached: the launch path asks again at every call; never mutated)."""
    return pyast.parse(text, mode="eval").body


@functools.lru_cache(maxsize=4096)
def _names(text: str) -> frozenset:
    return frozenset(n.id for n in pyast.walk(pyast.parse(text, mode="eval")) if isinstance(n, pyast.Name))


_walk = L.walk  # (loopir's one walker)


def _exprs(s) -> list:
    """The expression strings a statement holds (not its children's)."""
    if isinstance(s, L.For):
        return [s.start, s.stop]
    if isinstance(s, (L.While, L.If)):
        return [s.cond]
    if isinstance(s, L.Assign):
        return [s.target, s.value]
    if isinstance(s, L.Alloc):
        return [s.shape] + ([s.fill] if s.fill else [])
    if isinstance(s, L.SortRange):
        return [s.array, s.start, s.stop]
    if isinstance(s, L.Emit):
        return [*s.coords, s.value]
    if isinstance(s, L.Return):
        return list(s.values)
    return []


def _assigned(stmts) -> set:
    out = set()
    for s in _walk(stmts):
        if isinstance(s, L.Assign) and isinstance(_parse(s.target), pyast.Name):
            out.add(s.target)
        elif isinstance(s, L.For):
            out.add(s.var)
        elif isinstance(s, L.Emit):
            out.add(s.into.count)
    return out


def _read(stmts) -> set:
    out = set()
    for s in _walk(stmts):
        for e in _exprs(s):
            out |= _names(e)
        if isinstance(s, L.Emit):
            out |= {s.into.count, s.into.capacity}
    return out


# ---- the plan of one function: host steps and kernels -----------------------------------------


BLOCK = 256  # threads a block of the generic kernels


class Step:
    def __init__(self, kind: str, **kw):
        self.kind = kind
        self.__dict__.update(kw)


def plan_steps(fn: L.Function, scalars=(), off=frozenset()) -> list:
    """Split the top level into host steps: host (a scalar of the ``scalars`` parameters), alloc,
    cumsum, parallel launch, serial launch, return. ``off``: passes (``render.PASSES``) not to apply."""
    steps, serial = [], []
    host_vars: set = set()

    def flush():
        if serial:
            steps.append(Step("serial", body=list(serial)))
            serial.clear()

    for s in fn.body:
        if isinstance(s, L.Comment):
            continue
        if isinstance(s, L.Assign) and s.op is None and isinstance(_parse(s.target), pyast.Name) and \
                not serial and _names(s.value) <= set(scalars) | host_vars:
            steps.append(Step("host", assign=s))  # a scalar of scalars: no kernel needed
            host_vars.add(s.target)
        elif isinstance(s, L.Alloc):
            flush()
            steps.append(Step("alloc", alloc=s))
        elif isinstance(s, L.Return):
            flush()
            steps.append(Step("return", values=list(s.values)))
        elif isinstance(s, L.For) and _is_prefix_sum(s):
            flush()
            steps.append(Step("cumsum", loop=s))
        elif isinstance(s, L.For) and not s.parallel and "atomic_scatter" not in off and \
                _atomic_scatter(s, fn.body, fn.output):
            flush()
            steps.append(Step("parallel", loop=s, reduction=None, collapse=None, atomic=True, nested=None))
        elif isinstance(s, L.For) and s.parallel:
            flush()
            s = drop_dead(s, set())  # a parallel loop's scalars are its iterations' own (no state crosses)
            red = _reduction_shape(s) if "lane_split" not in off else None
            col = _collapse_shape(s) if "collapse" not in off else None
            nested = _nested_reduction(s) if red is None and col is None and "nested_lanes" not in off else None
            steps.append(Step("parallel", loop=s, reduction=red, collapse=col, atomic=False, nested=nested))
        elif isinstance(s, L.For) and s.private:
            for a in s.private:
                if isinstance(a, L.Alloc):
                    flush()
                    steps.append(Step("alloc", alloc=a))
                else:
                    serial.append(a)
            serial.append(L.For(s.var, s.start, s.stop, s.body))
        else:
            serial.append(s)
    flush()
    return steps


def _live_reads(stmts) -> set:
    """Names read, a reduction's read of its own target not counted (``acc += x`` alone keeps no acc)."""
    out = set()
    for s in _walk(stmts):
        if isinstance(s, L.Assign):
            out |= _names(s.value) | (set() if isinstance(_parse(s.target), pyast.Name) else _names(s.target))
        else:
            for e in _exprs(s):
                out |= _names(e)
            if isinstance(s, L.Emit):
                out |= {s.into.count, s.into.capacity}
    return out


def drop_dead(loop: L.For, keep: set) -> L.For:
    """``loop`` without the scalars nobody reads (``keep``: names read after it), and with inner
    loops that then only set constants turned into ``if start < stop``. The count pass of a sampled
    product (SDDMM: count S's entries whose k loop ran) then no longer computes the dot products."""
    body = loop.body
    for _ in range(8):
        live = _live_reads(body) | set(keep) | _names(loop.start) | _names(loop.stop) | _read(loop.private)
        new = _prune(body, live)
        if new == body:
            break
        body = new
    if body == loop.body:
        return loop
    return dataclasses.replace(loop, body=body)


def _prune(stmts, live) -> list:
    out = []
    for s in stmts:
        if isinstance(s, L.Assign) and isinstance(_parse(s.target), pyast.Name) and s.target not in live:
            continue
        if isinstance(s, L.For) and not s.private:
            body = _prune(s.body, live)
            if not body and s.var not in live:
                continue
            if s.var not in live and all(isinstance(x, L.Assign) and x.op is None and isinstance(_parse(x.target),
                                         pyast.Name) and isinstance(_parse(x.value), pyast.Constant) for x in body):
                out.append(L.If(f"({s.start}) < ({s.stop})", body))
                continue
            s = dataclasses.replace(s, body=body)
        elif isinstance(s, L.If):
            then, orelse = _prune(s.then, live), _prune(s.orelse, live)
            if not then and not orelse:
                continue
            s = L.If(s.cond, then or [L.Comment("nothing")], orelse)
        elif isinstance(s, L.While):
            s = L.While(s.cond, _prune(s.body, live))
        out.append(s)
    return out


ATOMIC_DTYPES = {"float32", "float64", "int32", "int64", "uint32", "uint64"}


def _atomic_scatter(loop: L.For, top: list, output: L.Output) -> bool:
    """A serial outer loop whose iterations only add into the dense output (``out[..] += v``; the
    output is zeroed first) and otherwise keep to their own scalars: run it in parallel with atomicAdd."""
    if loop.private:
        return False
    stores = [x for x in _walk(loop.body) if isinstance(x, L.Assign) and isinstance(_parse(x.target), pyast.Subscript)]
    if not stores or any(not output.stores_into(x.target) or x.op != "+" for x in stores):
        return False
    if any(isinstance(x, (L.Alloc, L.Emit, L.SortRange, L.Return)) or (isinstance(x, L.For) and x.private)
           for x in _walk(loop.body)):
        return False
    local = _assigned(loop.body) | {loop.var}
    plain = {x.target for x in _walk(loop.body) if isinstance(x, L.Assign) and x.op is None}
    if any(isinstance(x, L.Assign) and x.op and x.target in local and x.target not in plain for x in _walk(loop.body)):
        return False  # carried from one iteration to the next (a merge cursor over the outer level)
    rest = [x for x in top if x is not loop]
    return not (local & _read(rest)) and not ((_names(loop.start) | _names(loop.stop)) & local)


def _is_prefix_sum(s: L.For) -> bool:
    """``for r in [0, n): X[r + 1] = X[r] + Y[r]`` (a two-phase assembly's offsets)."""
    if s.start != "0" or len(s.body) != 1 or not isinstance(s.body[0], L.Assign) or s.body[0].op:
        return False
    a = s.body[0]
    t, v = _parse(a.target), _parse(a.value)
    return (isinstance(t, pyast.Subscript) and pyast.unparse(t.slice) == f"{s.var} + 1"
            and isinstance(v, pyast.BinOp) and isinstance(v.op, pyast.Add)
            and pyast.unparse(v.left) == f"{t.value.id}[{s.var}]"
            and isinstance(v.right, pyast.Subscript) and pyast.unparse(v.right.slice) == s.var)


@dataclasses.dataclass
class Reduction:
    """A parallel loop's body ``head; inner for (acc op= ...); tail`` whose inner loop's iterations are
    independent apart from the reduction (``Reduce``) into ``acc`` and its ``Touch`` flag ``touched``."""

    head: list
    inner: L.For
    tail: list
    op: str
    init: str  # the accumulator's start
    acc: str
    touched: str | None


def _reduces(s) -> bool:
    return isinstance(s, L.Reduce) and s.op is not None


def _reduction_shape(loop: L.For) -> Reduction | None:
    """The loop as a :class:`Reduction`, else None. Lanes may then split the inner loop."""
    body = loop.body
    if loop.private:
        return None
    red = [k for k, s in enumerate(body) if any(_reduces(x) for x in _walk([s]))]
    if len(red) != 1 or not isinstance(body[red[0]], L.For):
        return None
    k = red[0]
    head, inner, tail = body[:k], body[k], body[k + 1:]
    terms = [x for x in _walk([inner]) if _reduces(x)]
    accs, ops = {x.target for x in terms}, {x.op for x in terms}
    init = [s.value for s in head if isinstance(s, L.Reduce) and s.op is None and s.target in accs]
    if len(ops) != 1 or len(accs) != 1 or not init or next(iter(ops)) not in ("+", "max", "min", "or", "and"):
        return None
    touched = set()
    for x in _walk(inner.body):
        if isinstance(x, (L.Alloc, L.Emit, L.SortRange, L.Return)) or (isinstance(x, L.For) and x.private):
            return None
        if isinstance(x, L.Touch):
            if x.value != "True":
                return None
            touched.add(x.target)
        elif isinstance(x, L.Reduce):
            if x.op is None:
                return None
        elif isinstance(x, L.Assign) and not isinstance(_parse(x.target), pyast.Name):
            return None  # a store to memory
    if len(touched) > 1:
        return None
    local = _assigned(inner.body) - accs - touched
    if local & (_assigned(head) | _read(tail)) or inner.var in _read(tail):
        return None
    plain = {x.target for x in _walk(inner.body) if isinstance(x, L.Assign) and x.op is None}
    if any(isinstance(x, L.Assign) and x.op and x.target in local and x.target not in plain
           for x in _walk(inner.body)):
        return None  # carried from one inner iteration to the next
    return Reduction(head, inner, tail, next(iter(ops)), init[0], next(iter(accs)), next(iter(touched), None))


IDENTITY = {"+": 0, "max": -np.inf, "min": np.inf, "or": False, "and": True}


@dataclasses.dataclass
class Nested:
    """A parallel loop with exactly one loop that reduces (``Reduce``) into ``acc``, nested in
    sequential code (see ``_nested_reduction``)."""

    inner: L.For
    op: str
    acc: str
    touched: str | None  # the Touch flag the loop sets, if any
    every: bool = False  # the flag is set by every iteration (it ran iff the loop was not empty)


def _nested_reduction(loop: L.For) -> Nested | None:
    """For a parallel loop with exactly one loop that reduces into ``acc`` (``acc op= ..``, and
    ``touched = True``), nested anywhere in sequential code that stores only into arrays it does not
    read (the fill pass of a sampled product, SDDMM: per stored entry a dot product over k), return
    it as :class:`Nested`. A group of lanes then runs the body redundantly, splits that loop and
    combines ``acc`` with xor shuffles; lane 0 stores. Else None."""
    if loop.private:
        return None
    reds = [x for x in _walk(loop.body) if isinstance(x, L.For) and any(_reduces(y) for y in x.body)]
    if len(reds) != 1:
        return None
    inner = reds[0]
    terms = [y for y in inner.body if _reduces(y)]
    ops, accs = {y.op for y in terms}, {y.target for y in terms}
    if len(ops) != 1 or len(accs) != 1 or next(iter(ops)) not in IDENTITY:
        return None
    op, acc = next(iter(ops)), next(iter(accs))
    touched = set()
    for y in _walk(inner.body):
        if not isinstance(y, (L.Assign, L.If, L.Comment)):
            return None
        if isinstance(y, L.Assign):
            if not isinstance(_parse(y.target), pyast.Name):
                return None  # a store inside the split loop
            if isinstance(y, L.Reduce) != (y.op is not None) and not isinstance(y, L.Touch):
                return None  # a plain reduction, or the accumulator restarted
            if isinstance(y, L.Touch):
                if y.value != "True":
                    return None
                touched.add(y.target)
    if len(touched) > 1:
        return None
    outside = [x for x in _walk_skipping(loop.body, inner)]
    if any(isinstance(x, (L.Alloc, L.Emit, L.SortRange, L.Return)) or isinstance(x, L.For) and x.private
           for x in outside):
        return None
    for x in outside:  # every lane holds the same acc before the loop: it must be op's identity
        if isinstance(x, L.Assign) and x.target == acc:
            if x.op is not None:
                return None
            try:
                if eval(x.value, {"np": np, "True": True, "False": False}) != IDENTITY[op]:  # noqa: S307 (IR)
                    return None
            except Exception:
                return None
    local = (_assigned(inner.body) | {inner.var}) - {acc} - touched
    if local & set().union(*(_names(e) for x in outside for e in _exprs(x))):
        return None
    stored = {_parse(x.target).value.id for x in _walk(loop.body) if isinstance(x, L.Assign)
              and isinstance(_parse(x.target), pyast.Subscript)}
    read = set()
    for x in _walk(loop.body):
        for e in ([x.value] + ([pyast.unparse(_parse(x.target).slice)] if isinstance(_parse(x.target), pyast.Subscript)
                               else []) if isinstance(x, L.Assign) else _exprs(x)):
            read |= _names(e)
    if stored & read:
        return None  # a lane could read what lane 0 stored
    every = any(isinstance(x, L.Touch) and x.value == "True" for x in inner.body)
    return Nested(inner, op, acc, next(iter(touched), None), every)


# element dtype -> C vector type of 16 bytes (or 8: the narrowest array of a loop sets its width)
VECTOR_TYPES = {("float32", 4): "float4", ("float32", 2): "float2", ("float64", 2): "double2",
                ("int32", 4): "int4", ("int32", 2): "int2", ("int64", 2): "longlong2",
                ("uint32", 4): "uint4", ("uint32", 2): "uint2", ("uint64", 2): "ulonglong2"}


def vector_accesses(loop: L.For, arrays: dict):
    """The array reads ``X[.., v]`` of a split loop over ``v`` whose last index is ``v`` alone and whose
    other indices do not involve it (a row of a dense factor: SDDMM's U[i, k] and V[j, k]), as sorted
    (array, subscript text) pairs, when every read that involves ``v`` is one of them and each such
    array holds a 4- or 8-byte type; else None. Consecutive iterations then read consecutive
    elements, so a lane can take ``width`` iterations with one 16-byte load per array (the launch
    checks alignment and trip count)."""
    found = set()
    for x in _walk(loop.body):
        for e in _exprs(x):
            for n in pyast.walk(_parse(e)):
                if not isinstance(n, pyast.Subscript) or loop.var not in _names(pyast.unparse(n)):
                    continue
                idx = n.slice.elts if isinstance(n.slice, pyast.Tuple) else [n.slice]
                last = idx[-1]
                if not (isinstance(last, pyast.Name) and last.id == loop.var) or \
                        any(loop.var in _names(pyast.unparse(i)) for i in idx[:-1]) or \
                        (arrays.get(n.value.id, (None,))[0], 2) not in VECTOR_TYPES:
                    return None
                found.add((n.value.id, pyast.unparse(n)))
    return sorted(found) or None


def _walk_skipping(stmts, skip):
    for s in stmts:
        if s is skip:
            continue
        yield s
        for attr in ("body", "then", "orelse"):
            yield from _walk_skipping(getattr(s, attr, None) or [], skip)


def _collapse_shape(loop: L.For):
    """For a parallel loop whose body is ``head; for v in [a, b): inner`` with the inner loop's bounds
    independent of the outer iteration and its iterations independent (an output index: each writes
    its own elements), return the inner loop: threads then take (outer, inner) pairs, so neighbouring
    threads read neighbouring dense columns (SpMM, SDDMM). Else None."""
    body = loop.body
    if loop.private or not body or not isinstance(body[-1], L.For) or body[-1].private:
        return None
    head, inner = body[:-1], body[-1]
    if (_names(inner.start) | _names(inner.stop)) & (_assigned(head) | {loop.var}):
        return None
    if any(not isinstance(x, (L.Assign, L.Comment)) for x in head):
        return None
    for x in _walk(inner.body):
        if isinstance(x, (L.Alloc, L.Emit, L.SortRange, L.Return)) or (isinstance(x, L.For) and x.private):
            return None
    local = _assigned(inner.body) | {inner.var}
    if local & _assigned(head):
        return None
    plain = {x.target for x in _walk(inner.body) if isinstance(x, L.Assign) and x.op is None}
    if any(isinstance(x, L.Assign) and x.op and isinstance(_parse(x.target), pyast.Name) and x.target not in plain
           for x in _walk(inner.body)):
        return None
    for x in _walk(inner.body):
        t = _parse(x.target) if isinstance(x, L.Assign) and x.op else None
        if isinstance(t, pyast.Subscript):
            # out[i, n] += ..: a pair's own element when both loops index it directly (an earlier term
            # of a sum written into the same target); else a scatter whose index may be a reduction's
            idx = {pyast.unparse(e) for e in (t.slice.elts if isinstance(t.slice, pyast.Tuple) else [t.slice])}
            if not {loop.var, inner.var} <= idx:
                return None
    return inner


# ---- dense contractions: cuBLAS ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Contraction:
    """A function that is one dense contraction ``out[o..] (=|+=) Σ_r left[..] * right[..]``, every
    loop over a whole extent: the CUDA backend hands it to cuBLAS through ``cupy.tensordot`` (the
    factored products of composites, U·(Vᵀ·X), are such steps)."""

    spec: str  # einsum subscripts, "jr,jn->rn"
    left: str
    right: str
    accumulate: bool
    out: str


def dense_contraction(fn: L.Function) -> Contraction | None:
    """``fn`` as a :class:`Contraction` when its body is exactly a perfect nest of output loops, the
    accumulator's start at zero, a perfect nest of reduction loops around ``acc += A[..] * B[..]``,
    and the store of ``acc`` into the output at the output loops' indices; else None."""
    params = set(fn.params)

    def nest(body, stop_at):
        """(the variables of a perfect nest of whole-extent loops, the innermost body), stopping at
        the first loop whose body satisfies ``stop_at``; None without a loop."""
        loops = []
        while len(body) == 1 and isinstance(body[0], L.For) and not body[0].private and body[0].start == "0" \
                and body[0].stop in params:
            loops.append(body[0].var)
            body = body[0].body
            if stop_at(body):
                break
        return (loops, body) if loops else None

    def is_core(body):
        return len(body) == 3 and isinstance(body[0], L.Reduce)

    got = nest(fn.body, is_core)
    if got is None or not is_core(got[1]):
        return None
    outer, (init, red, store) = got
    if init.op is not None or init.value not in ("0", "0.0") or not isinstance(red, L.For):
        return None
    got = nest([red], lambda body: False)
    if got is None or len(got[1]) != 1 or not isinstance(got[1][0], L.Assign):
        return None
    inner, (term,) = got
    if not isinstance(term, L.Reduce) or term.target != init.target or term.op != "+" or \
            not isinstance(store, L.Assign) or store.value != init.target or store.op not in (None, "+"):
        return None
    product, target = _parse(term.value), _parse(store.target)
    if not (isinstance(product, pyast.BinOp) and isinstance(product.op, pyast.Mult)):
        return None
    operands = [_subscript_vars(e) for e in (product.left, product.right, target)]
    if any(o is None for o in operands) or operands[2][0] != fn.output.array or list(operands[2][1]) != outer:
        return None
    (left, lv), (right, rv) = operands[:2]
    loops = outer + inner
    if left not in params or right not in params or len(set(loops)) != len(loops) or \
            any(len(set(v)) != len(v) or not set(v) <= set(loops) for v in (lv, rv)) or \
            set(loops) != set(lv) | set(rv) or len(loops) > 26:
        return None
    letter = {v: chr(ord("a") + k) for k, v in enumerate(loops)}
    spec = "".join(letter[v] for v in lv) + "," + "".join(letter[v] for v in rv) + "->" + \
        "".join(letter[v] for v in outer)
    return Contraction(spec, left, right, store.op == "+", fn.output.array)


def _subscript_vars(e):
    """(array name, its index variables) of ``a[i, j]`` / ``a[i]``; None for anything else."""
    if not (isinstance(e, pyast.Subscript) and isinstance(e.value, pyast.Name)):
        return None
    parts = e.slice.elts if isinstance(e.slice, pyast.Tuple) else [e.slice]
    if not all(isinstance(p, pyast.Name) for p in parts):
        return None
    return e.value.id, tuple(p.id for p in parts)

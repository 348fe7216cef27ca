"""Bind and check: resolve names, formats, index extents and dtypes; every error points at source.

``check(program, operands)`` returns a ``Checked`` program: the statements with their reduction
indices made explicit (einsum convention: an index only on the right is summed), and the type
(shape, dtype, format) of every tensor, temporaries and outputs included.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import DSLError, FormatError
from . import ast as A
from .formats import Format, as_format

# semiring name -> (add, mul); add is the reduction, mul combines factors
SEMIRINGS = {
    "plus_times": ("+", "*"), "min_plus": ("min", "+"), "max_plus": ("max", "+"),
    "max_times": ("max", "*"), "min_times": ("min", "*"), "or_and": ("or", "and"),
}
REDUCERS = {"sum": "+", "max": "max", "min": "min", "any": "or", "all": "and"}
FUNCTION_ARITY = {"exp": 1, "log": 1, "abs": 1, "sqrt": 1, "relu": 1, "sign": 1, "sin": 1, "cos": 1,
                  "tanh": 1, "sigmoid": 1, "where": 3, "mask": 2, "pow": 2, "min": 2, "max": 2}


def semiring(name: str, add: str, mul: str) -> None:
    """Register a named semiring usable as ``name[k](A[i,k] * B[k,j])`` (``*`` becomes ``mul``)."""
    if add not in ("+", "max", "min", "or", "and") or mul not in ("+", "*", "max", "min", "and", "or"):
        raise ValueError(f"semiring add must be one of + max min or and, mul one of + * max min and or; "
                         f"got add={add!r}, mul={mul!r}")
    SEMIRINGS[name] = (add, mul)


@dataclass(frozen=True)
class TensorType:
    shape: tuple
    dtype: np.dtype
    format: Format
    storage: str | None = None  # how the values are stored when it is not ``dtype`` ("bfloat16" on a GPU)


@dataclass(frozen=True)
class CompositeType(TensorType):
    """A composite operand (``sparsedsl.kron``, ``lowrank``, ``monarch``): algebra over factors, no storage.

    ``format`` is a dense placeholder; ``kind`` is ``"kron"``, ``"lowrank"``, ``"lowrank+sparse"`` or
    ``"monarch"``; ``parts`` are the factors' TensorTypes; ``transposed`` marks a Monarch used as Mᵀ.
    The rewrite stage expands accesses of such operands into index notation over the factors."""

    kind: str = ""
    parts: tuple = ()
    transposed: bool = False
    densities: tuple = ()  # per part, the stored fraction rounded to a power of ten (for the cost model)


@dataclass
class Statement:
    target: A.Access
    value: A.Node  # the body, without the top-level reduction
    reduce_op: str  # "+", "max", "min", "or", "and"
    reduce_indices: tuple[str, ...]
    mul_op: str  # what "*" means in this statement ("*" unless a semiring says otherwise)
    span: object = None
    accumulate: bool = False  # add to the target's values (a dense target assigned just before)


@dataclass
class Checked:
    program: A.Program
    statements: list[Statement]
    types: dict[str, TensorType]  # inputs, temporaries, outputs
    scalars: dict[str, np.dtype]
    extents: dict[str, int] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    temporaries: tuple[str, ...] = ()
    weak: frozenset = frozenset()  # scalar parameters given as Python numbers (weak in numpy's promotion)
    # set by the rewrite stage when composite operands were expanded (see lang/rewrite.py):
    derived: dict = field(default_factory=dict)  # input name -> how it is made from the bound operands
    reshaped: dict = field(default_factory=dict)  # output name -> its TensorType before index splitting
    notes: list = field(default_factory=list)  # what the rewrite did (contraction orders, costs), for explain()


def check(program: A.Program, operands: dict | None = None) -> Checked:
    """Check ``program``; with ``operands`` ({name: TensorType or dtype}) also shapes and dtypes."""
    return _Checker(program, operands).run()


class _Checker:
    def __init__(self, program, operands):
        self.p = program
        self.operands = operands
        self.types: dict[str, TensorType] = {}
        self.ranks: dict[str, int] = {}
        self.scalars: dict[str, np.dtype] = {}
        self.extents: dict[str, int] = {}
        self.extent_site: dict[str, A.Index] = {}
        self.weak: set[str] = set()  # scalar parameters given as Python numbers

    def run(self) -> Checked:
        p = self.p
        names = set()
        for prm in (*p.params, *p.outputs):
            if prm.name in names:
                raise DSLError(f"{prm.name!r} is declared twice", prm.span)
            if prm.name in ("true", "false") or prm.name in REDUCERS or prm.name in SEMIRINGS:
                raise DSLError(f"{prm.name!r} is a word of the language (a literal or a reduction); "
                               f"rename this parameter", prm.span)
            names.add(prm.name)
        for prm in p.params:
            self.bind_param(prm)
        outputs = {o.name: o for o in p.outputs}
        defined = set(self.ranks) | set(self.scalars)
        statements, temps, placed = [], [], []
        assigned = set()
        for st in p.statements:
            st = bind_implicit_sums(st)  # TACO's rule: each implicit sum wraps its smallest sub-expression
            placed.append(st)
            name = st.target.tensor
            if name in defined and not (st.accumulate and name in assigned):
                what = "an input" if any(q.name == name for q in p.params) else "already assigned"
                raise DSLError(f"{name!r} is {what}; assign each output or temporary once", st.target.span)
            if not st.is_let and name not in outputs:
                raise DSLError(f"{name!r} is not an output of this kernel; declare it as an output or "
                               f"write 'let {name}[...] = ...' for a temporary", st.target.span)
            statements.append(self.statement(st))
            defined.add(name)
            assigned.add(name)
            if st.is_let and name not in temps:
                temps.append(name)
        for o in p.outputs:
            if o.name not in defined:
                raise DSLError(f"output {o.name!r} is never assigned", o.span)
        p = replace(p, statements=tuple(placed))
        return Checked(p, statements, self.types, self.scalars, self.extents,
                       tuple(q.name for q in p.params), tuple(outputs), tuple(temps), weak=frozenset(self.weak))

    # ---- parameters ---------------------------------------------------------------------
    def bind_param(self, prm: A.Param):
        if prm.kind == "scalar":
            dt = np.dtype(np.float64)
            if self.operands is not None:
                given = self.operands.get(prm.name)
                if given is None:
                    raise DSLError(f"no value was given for scalar {prm.name!r}", prm.span)
                if isinstance(given, TensorType):
                    raise DSLError(f"{prm.name!r} is declared scalar but a {len(given.shape)}-D tensor "
                                   f"was given", prm.span)
                if given in _PYTHON_SCALARS:  # a Python number: weak in numpy's promotion (NEP 50)
                    self.weak.add(prm.name)
                dt = np.dtype(given)
            self.scalars[prm.name] = dt
            return
        if self.operands is None:
            self.ranks[prm.name] = _fixed_rank(prm.format)
            return
        given = self.operands.get(prm.name)
        if given is None:
            raise DSLError(f"no operand was given for {prm.name!r}", prm.span)
        if not isinstance(given, TensorType):
            raise DSLError(f"{prm.name!r} is a tensor parameter but a scalar was given", prm.span)
        self.types[prm.name] = given
        self.ranks[prm.name] = len(given.shape)

    # ---- statements ---------------------------------------------------------------------
    def statement(self, st: A.Assign) -> Statement:
        target = st.target
        seen = set()
        for ix in target.indices:
            if ix.name in seen:
                raise DSLError(f"index {ix.name!r} appears twice on the left", ix.span)
            seen.add(ix.name)
        body, op, listed, mul = st.value, "+", (), "*"
        if isinstance(body, A.Reduce):
            op, mul = self.reducer(body)
            listed = tuple(ix.name for ix in body.indices)
            for ix in body.indices:
                if ix.name in seen:
                    raise DSLError(f"index {ix.name!r} is reduced but also appears on the left", ix.span)
            body = body.body
        free = self.expr(body, bound=set())
        for ix in (st.value.indices if isinstance(st.value, A.Reduce) else ()):
            if ix.name not in free:
                raise DSLError(f"reduction index {ix.name!r} does not appear in the reduced expression", ix.span)
        for ix in target.indices:
            if ix.name not in free:
                raise DSLError(f"index {ix.name!r} on the left does not appear on the right, so its extent "
                               f"is unknown", ix.span)
        reduce = tuple(listed) + tuple(v for v in free if v not in seen and v not in listed)
        # the target's type
        name = target.tensor
        self.ranks[name] = len(target.indices)
        if self.operands is not None:
            shape = tuple(self.extents[ix.name] for ix in target.indices)
            dtype = self.dtype(body, op if reduce else None)
            fmt = self.target_format(st, body, shape)
            self.types[name] = TensorType(shape, dtype, fmt)
        return Statement(target, body, op, reduce, mul, st.span, st.accumulate)

    def reducer(self, r: A.Reduce):
        if r.op in REDUCERS:
            return REDUCERS[r.op], "*"
        if r.op in SEMIRINGS:
            return SEMIRINGS[r.op]
        raise DSLError(f"unknown reduction {r.op!r}; use sum, max, min, any, all or a semiring "
                       f"({', '.join(SEMIRINGS)})", r.span)

    def target_format(self, st: A.Assign, body, shape):
        declared = next((o.format for o in self.p.outputs if o.name == st.target.tensor), None)
        if declared is not None:
            try:
                return as_format(declared, len(shape))
            except FormatError as exc:
                raise DSLError(str(exc), st.target.span) from None
        if st.is_let and st.format is not None:  # chosen by the rewrite stage
            return as_format(st.format, len(shape))
        if st.is_let:  # a temporary takes the format of a sparse operand with the same indices
            want = tuple(ix.name for ix in st.target.indices)
            for node in A.walk(body):
                if isinstance(node, A.Access) and tuple(ix.name for ix in node.indices) == want:
                    t = self.types.get(node.tensor)
                    if t is not None and not t.format.is_dense and not any(lv.type.bounded for lv in t.format.levels):
                        # (not nm: a computed pattern need not fit N of every M)
                        return t.format if self.whole_blocks(body, node, t.format) else t.format.unblocked()
        return as_format("dense", len(shape))

    def whole_blocks(self, body, chosen: A.Access, fmt) -> bool:
        """Whether a temporary stored in ``fmt`` (``chosen``'s format) is present in whole blocks: a block
        stores its absent entries too, present in later statements, so the body's sparse operands must
        all be blocked like ``chosen`` (S = M * Q * K with M bsr is; x[j] != B[i,j] with x plain is not)."""
        blocks = {chosen.indices[d].name: b for d, b in fmt.blocks.items()}
        if not blocks:
            return True
        for node in A.walk(body):
            t = self.types.get(node.tensor) if isinstance(node, A.Access) else None
            if t is not None and not t.format.is_dense and \
                    {node.indices[d].name: b for d, b in t.format.blocks.items()} != blocks:
                return False
        return True

    # ---- expressions: return the free index names in order of appearance ----------------
    def expr(self, e, bound) -> list[str]:
        if isinstance(e, A.Access):
            return self.access(e)
        if isinstance(e, A.Literal):
            return []
        if isinstance(e, A.Scalar):
            if e.name in self.scalars:
                return []
            if e.name in self.ranks:
                raise DSLError(f"{e.name!r} is a tensor; index it, e.g. {e.name}[i]", e.span)
            raise DSLError(f"unknown name {e.name!r}", e.span)
        if isinstance(e, A.BinOp):
            return _union(self.expr(e.left, bound), self.expr(e.right, bound))
        if isinstance(e, A.Neg):
            return self.expr(e.operand, bound)
        if isinstance(e, A.Call):
            want = FUNCTION_ARITY.get(e.fn)
            if want is None:
                raise DSLError(f"unknown function {e.fn!r}; functions are {', '.join(FUNCTION_ARITY)}", e.span)
            if len(e.args) != want:
                raise DSLError(f"{e.fn}() takes {want} argument{'s' * (want > 1)}, got {len(e.args)}", e.span)
            out: list[str] = []
            for a in e.args:
                out = _union(out, self.expr(a, bound))
            return out
        if isinstance(e, A.Reduce):
            self.reducer(e)
            inner = self.expr(e.body, bound)
            for ix in e.indices:
                if ix.name not in inner:
                    raise DSLError(f"reduction index {ix.name!r} does not appear in the reduced expression",
                                   ix.span)
            names = {ix.name for ix in e.indices}
            return [v for v in inner if v not in names]
        raise DSLError(f"unexpected {type(e).__name__} in an expression", getattr(e, "span", None))

    def access(self, e: A.Access) -> list[str]:
        if e.tensor in self.scalars:
            raise DSLError(f"{e.tensor!r} is a scalar and cannot be indexed", e.span)
        if e.tensor not in self.ranks:
            raise DSLError(f"unknown tensor {e.tensor!r}; it is neither a parameter nor assigned above", e.span)
        rank = self.ranks[e.tensor]
        if rank is not None and rank != len(e.indices):
            raise DSLError(f"{e.tensor} is {rank}-D but is indexed with {len(e.indices)} "
                           f"ind{'ex' if len(e.indices) == 1 else 'ices'}", e.span)
        names = [ix.name for ix in e.indices]
        for k, ix in enumerate(e.indices):
            if ix.name in names[:k]:
                raise DSLError(f"index {ix.name!r} appears twice in one access (diagonals are not supported; "
                               f"use a mask tensor)", ix.span)
        if self.operands is not None and e.tensor in self.types:
            shape = self.types[e.tensor].shape
            for ix, n in zip(e.indices, shape):
                have = self.extents.get(ix.name)
                if have is None:
                    self.extents[ix.name] = n
                    self.extent_site[ix.name] = ix
                elif have != n:
                    first = self.extent_site[ix.name]
                    raise DSLError(f"index {ix.name!r} ranges over {n} here but over {have} at line "
                                   f"{first.span.line}, column {first.span.col}: the shapes do not agree", ix.span)
        return names

    def dtype(self, e, op) -> np.dtype:
        """The result's dtype, numpy's: a sum of booleans counts them (int64); a comparison is bool."""
        if op in ("or", "and"):
            return np.dtype(np.bool_)
        dt = np.dtype(np.result_type(self.expr_dtype(e)))
        if op == "+" and dt == np.bool_:
            return np.dtype(np.int64)
        return dt

    def expr_dtype(self, e) -> np.dtype:
        if isinstance(e, A.Access):
            return self.types[e.tensor].dtype
        if isinstance(e, A.Literal):
            return e.value  # a weak Python scalar in numpy's promotion (NEP 50)
        if isinstance(e, A.Scalar):
            return _PYTHON_SCALARS[python_type(self.scalars[e.name])] if e.name in self.weak else self.scalars[e.name]
        if isinstance(e, A.BinOp):
            a, b = self.expr_dtype(e.left), self.expr_dtype(e.right)
            if e.op in ("<", "<=", ">", ">=", "==", "!="):
                return np.dtype(np.bool_)
            if e.op == "/":
                return _float_result(a, b)
            r = np.dtype(np.result_type(a, b))
            r = np.dtype(np.int64) if r == np.bool_ and e.op in "+-" else r
            _literal_fits(e.left, r)
            _literal_fits(e.right, r)
            return r
        if isinstance(e, A.Neg):
            dt = self.expr_dtype(e.operand)  # a negated boolean counts as an integer, as in + and -
            return np.dtype(np.int64) if isinstance(dt, bool) or (isinstance(dt, np.dtype) and dt == np.bool_) else dt
        if isinstance(e, A.Call):
            args = [self.expr_dtype(a) for a in e.args]
            if e.fn == "where":
                return np.result_type(args[1], args[2])
            if e.fn == "mask":
                return args[1]
            if e.fn == "sign":  # of a boolean: counted as an integer, as in + and -
                dt = np.result_type(*args)
                return np.dtype(np.int64) if dt == np.bool_ else dt
            if e.fn == "abs" or e.fn in ("min", "max", "relu"):
                return np.result_type(*args)
            return _float_result(*args)
        if isinstance(e, A.Reduce):
            add = REDUCERS.get(e.op) or SEMIRINGS[e.op][0]
            body = self.expr_dtype(e.body)
            if add in ("or", "and"):
                return np.dtype(np.bool_)
            return np.dtype(np.int64) if add == "+" and np.result_type(body) == np.bool_ else body
        raise AssertionError(type(e))


def _float_result(*args) -> np.dtype:
    """The dtype of a float function or a division of ``args`` (dtypes, or Python numbers: weak), as
    numpy gives it: float16 widened to float32, integers and booleans to float64, and Python numbers
    alone float64 (``np.tanh(-1.5)``, ``1.0 / 2``); a weak number takes a float operand's type."""
    if not any(isinstance(a, np.dtype) for a in args):
        return np.dtype(np.float64)
    r = np.result_type(*args)
    return np.result_type(r, np.float32) if r.kind == "f" else np.dtype(np.float64)


# a Python number's type -> a value of it, for numpy's promotion (weak: float32 * 2.5 is float32)
_PYTHON_SCALARS = {int: 0, float: 0.0, bool: False}


def python_type(dtype: np.dtype) -> type:
    """The Python number type a weak scalar parameter of ``dtype`` was given as."""
    return {"b": bool, "i": int, "u": int}.get(np.dtype(dtype).kind, float)


def _literal_fits(e, dtype):
    """An integer literal combined with integers must fit their type (numpy raises OverflowError)."""
    if isinstance(e, A.Literal) and type(e.value) is int and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not info.min <= e.value <= info.max:
            raise DSLError(f"the integer literal {e.value} does not fit {dtype} (the type of this expression); "
                           f"write it as a float ({float(e.value):g}) or use wider operands", e.span)


def _union(a, b):
    return a + [v for v in b if v not in a]


def _fixed_rank(fmt) -> int | None:
    """The rank a declared format implies (csr: 2), or None for rank-generic names (dense, coo)."""
    if fmt is None:
        return None
    if isinstance(fmt, Format):
        return fmt.ndim
    name = str(fmt).strip().split("(")[0].strip()
    if name in ("csr", "csc", "dcsr", "bsr", "blocked_bitmap", "nm"):
        return 2
    if name == "sparse":
        return 1
    if "->" in str(fmt):
        try:
            return as_format(fmt).ndim
        except FormatError:
            return None
    return None


# ---- where an implicit sum binds ------------------------------------------------------------
_BODY = "body"  # the path step from a Reduce to its body


def bind_implicit_sums(st: A.Assign) -> A.Assign:
    """``st`` with each implicit sum made explicit where it binds (TACO's rule): an index that is
    neither on the left nor listed by a reduction is summed over the smallest sub-expression that
    holds every use of it, so ``y[i] = A[i,j]*x[j] + x[i]`` is ``sum[j](A[i,j]*x[j]) + x[i]``.
    A product chain is one unit (``A[i,j]*B[j,k]*x[k]`` sums over j and k together, equal by
    distributivity and cheaper), and an index whose sum would wrap the whole right-hand side is
    left to the statement's own reduction, as before. Also rejects an index that a reduction binds
    and that is used outside it (``y[i] = x[i]*sum[i](B[i,j])``): two loops under one name."""
    left = {ix.name for ix in st.target.indices}
    uses: dict[str, list] = {}
    _check_scoping(st.value, left)
    top = st.value
    body, base = (top.body, (_BODY,)) if isinstance(top, A.Reduce) else (top, ())
    _collect_uses(top, (), frozenset(), uses)
    wrap: dict[tuple, list] = {}
    for v, paths in uses.items():
        if v in left:
            continue
        here = _common_prefix(paths)
        here = _product_chain_root(top, here, base)
        if here == base and not (isinstance(top, A.Reduce) and _reducer_add(top.op) != "+"):
            continue  # wraps the whole right-hand side: the statement's own (sum) reduction
        wrap.setdefault(here, []).append(v)
    if not wrap:
        return st
    return replace(st, value=_wrap_sums(top, (), wrap))


def _reducer_add(op: str) -> str | None:
    return REDUCERS.get(op) or SEMIRINGS.get(op, (None,))[0]


def _kids(node) -> list:
    """(path step, child expression) pairs: index nodes are not expressions."""
    if isinstance(node, A.BinOp):
        return [(0, node.left), (1, node.right)]
    if isinstance(node, A.Neg):
        return [(0, node.operand)]
    if isinstance(node, A.Call):
        return list(enumerate(node.args))
    if isinstance(node, A.Reduce):
        return [(_BODY, node.body)]
    return []


def _node_at(node, path):
    for step in path:
        node = dict(_kids(node))[step]
    return node


def _collect_uses(node, path, bound, uses):
    """index name -> paths of the accesses that use it freely (not under a reduction that lists it)."""
    if isinstance(node, A.Access):
        for ix in node.indices:
            if ix.name not in bound:
                uses.setdefault(ix.name, []).append(path)
        return
    if isinstance(node, A.Reduce):
        bound = bound | {ix.name for ix in node.indices}
    for step, child in _kids(node):
        _collect_uses(child, path + (step,), bound, uses)


def _common_prefix(paths) -> tuple:
    first = paths[0]
    n = len(first)
    for p in paths[1:]:
        n = min(n, len(p))
        while first[:n] != p[:n]:
            n -= 1
    return first[:n]


def _product_chain_root(top, path, base) -> tuple:
    """Climb from ``path`` while its parent is a product (or a quotient it is the numerator of):
    a sum over part of a product chain is the same sum over the whole chain."""
    while len(path) > len(base):
        parent = _node_at(top, path[:-1])
        if isinstance(parent, A.BinOp) and (parent.op == "*" or (parent.op == "/" and path[-1] == 0)):
            path = path[:-1]
        else:
            break
    return path


def _wrap_sums(node, path, wrap, merged_here=False):
    """``node`` with ``sum[names](...)`` around each sub-expression at a path in ``wrap``; a sum
    that would wrap the body of an explicit ``sum`` joins that sum's indices instead."""
    merge = wrap.get(path + (_BODY,), []) if isinstance(node, A.Reduce) and node.op == "sum" else []
    kids = {step: _wrap_sums(child, path + (step,), wrap, bool(merge) and step == _BODY)
            for step, child in _kids(node)}
    if isinstance(node, A.BinOp):
        node = replace(node, left=kids[0], right=kids[1])
    elif isinstance(node, A.Neg):
        node = replace(node, operand=kids[0])
    elif isinstance(node, A.Call):
        node = replace(node, args=tuple(kids[k] for k in range(len(node.args))))
    elif isinstance(node, A.Reduce):
        node = replace(node, indices=node.indices + tuple(A.Index(node.span, v) for v in merge), body=kids[_BODY])
    names = wrap.get(path, [])
    if names and not merged_here:
        node = A.Reduce(node.span, "sum", tuple(A.Index(node.span, v) for v in names), node)
    return node


def _check_scoping(value, left):
    """A reduction's index must not also be used outside it: that would name two loops alike."""
    free: dict[str, A.Index] = {}

    def outside(node, bound):
        if isinstance(node, A.Access):
            for ix in node.indices:
                if ix.name not in bound:
                    free.setdefault(ix.name, ix)
            return
        if isinstance(node, A.Reduce):
            bound = bound | {ix.name for ix in node.indices}
        for _, child in _kids(node):
            outside(child, bound)

    outside(value, frozenset())

    def reductions(node, bound):
        if isinstance(node, A.Reduce):
            for ix in node.indices:
                if ix.name in bound:
                    raise DSLError(f"index {ix.name!r} is reduced here inside another reduction over "
                                   f"{ix.name!r}; rename one of them", ix.span)
                if ix.name in left:
                    raise DSLError(f"index {ix.name!r} is reduced but also appears on the left; rename the "
                                   f"reduced index", ix.span)
                if ix.name in free:
                    use = free[ix.name]
                    raise DSLError(f"index {ix.name!r} is reduced here but also used outside this reduction "
                                   f"(line {use.span.line}, column {use.span.col}); they would be two different "
                                   f"loops under one name: rename the reduced index", ix.span)
            bound = bound | {ix.name for ix in node.indices}
        for _, child in _kids(node):
            reductions(child, bound)

    reductions(value, frozenset())

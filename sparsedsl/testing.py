"""What the tests and the differential fuzz share: ``assert_equal`` (a compiled result against the
reference interpreter's, canonical form included), ``random_operand``, and ``programs()``, a
hypothesis strategy of random well-formed programs drawn from the grammar with operands to run them
on. Needs hypothesis (the ``dev`` extra)."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from .tensor import SparseTensor

FORMATS_1D = ["dense", "sparse", "coo", "bitmap"]
FORMATS_2D = ["dense", "csr", "csc", "dcsr", "coo", "bitmap", "nm(2,4)", "nm(2,8)", "bsr(2,2)",
              "blocked_bitmap(2,2)"]
DTYPES = [np.float64, np.float32, np.int64, np.int32, np.uint8, np.bool_]


def random_operand(rng, shape, density, fmt, dtype):
    """Values in [0, 1) (integers 0-9) at about ``density``, projected onto N:M groups for nm formats."""
    a = rng.random(shape) * (rng.random(shape) < density)
    if fmt.startswith("nm"):  # keep the N largest of every M along the last axis
        n, m = (int(t) for t in fmt[3:-1].split(","))
        g = a.reshape(-1, m)
        np.put_along_axis(g, np.argsort(-np.abs(g), axis=1)[:, n:], 0, axis=1)
        a = g.reshape(shape)
    kind = np.dtype(dtype).kind
    if kind in "iu":
        a = np.round(a * 10)
    elif kind == "b":
        a = a > 0.5
    return a.astype(dtype)


def assert_equal(got, ref, tol=None, *, dtype=True):
    """Compiled result equals the interpreter's (or numpy's); a sparse result is also valid and
    canonical. ``tol``: relative and absolute tolerance (by default from the result's dtype);
    ``dtype=False`` compares values only (against a numpy expression of another dtype)."""
    if isinstance(ref, SparseTensor):
        assert isinstance(got, SparseTensor) and got.format == ref.format and got.shape == ref.shape, (got, ref)
        SparseTensor(got.format, got.shape, got.levels, got.values)  # re-validates: sorted, no duplicates
        coords, _ = got.coordinates()
        assert len({tuple(c) for c in coords.T}) == coords.shape[1], "duplicate entries in the output"
        got, ref = got.to_numpy(), ref.to_numpy()
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and (got.dtype == ref.dtype or not dtype), (got.shape, ref.shape,
                                                                              got.dtype, ref.dtype)
    tol = tol or (1e-3 if got.dtype == np.float32 else 1e-9)
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol, equal_nan=True)


# ---- random programs -----------------------------------------------------------------------
_REDUCERS = ["sum", "sum", "sum", "max", "min", "any", "all", "min_plus", "max_plus", "max_times"]
_UNARY = ["abs", "relu", "sign", "exp", "sqrt", "tanh", "sigmoid", "-"]
_BINARY = ["+", "+", "-", "*", "*", "*", "/", "max", "min"]
_COMPARE = ["<", "<=", ">", ">=", "==", "!="]


@st.composite
def programs(draw, max_depth: int = 3):
    """(source, {operand: format}, {operand: numpy value}, out_format): a random program over tensors
    A, B (2-D), x, z (1-D) and a scalar s, with nested reductions, semirings, functions, unions,
    let temporaries and scalar outputs; each tensor is read with one fixed index tuple."""
    pool = ["i", "j", "k"]
    extents = {"i": draw(st.integers(1, 6)), "j": draw(st.sampled_from([4, 8])), "k": draw(st.integers(1, 5))}
    tensors = {}
    for name, rank in (("A", 2), ("B", 2), ("x", 1), ("z", 1)):
        idx = tuple(draw(st.permutations(pool))[:rank])
        tensors[name] = idx
    used: set = set()

    def leaf():
        kind = draw(st.sampled_from(["tensor"] * 6 + ["literal", "scalar"]))
        if kind == "literal":
            return repr(draw(st.sampled_from([0, 1, 2, 0.5, -1.5, 3])))
        if kind == "scalar":
            used.add("s")
            return "s"
        name = draw(st.sampled_from(sorted(tensors)))
        used.add(name)
        return f"{name}[{','.join(tensors[name])}]"

    def expr(depth):
        if depth == 0:
            return leaf()
        kind = draw(st.sampled_from(["leaf", "binary", "binary", "unary", "reduce", "where", "compare", "mask"]))
        if kind == "leaf":
            return leaf()
        if kind == "binary":
            op = draw(st.sampled_from(_BINARY))
            a, b = expr(depth - 1), expr(depth - 1)
            return f"{op}({a}, {b})" if op in ("max", "min") else f"({a} {op} {b})"
        if kind == "unary":
            fn = draw(st.sampled_from(_UNARY))
            return f"(-{expr(depth - 1)})" if fn == "-" else f"{fn}({expr(depth - 1)})"
        if kind == "compare":
            return f"({expr(depth - 1)} {draw(st.sampled_from(_COMPARE))} {expr(depth - 1)})"
        if kind == "where":
            cond = f"({expr(depth - 1)} > {draw(st.sampled_from([0, 0.5]))})"
            return f"where({cond}, {expr(depth - 1)}, {expr(depth - 1)})"
        if kind == "mask":
            return f"mask({leaf()}, {expr(depth - 1)})"
        body = expr(depth - 1)
        free = [v for v in pool if f"{v}]" in body or f"{v}," in body]
        if not free:
            return body
        over = draw(st.lists(st.sampled_from(free), min_size=1, max_size=len(free), unique=True))
        return f"{draw(st.sampled_from(_REDUCERS))}[{','.join(over)}]({body})"

    lets = ""
    if draw(st.integers(0, 3)) == 0:  # a let temporary, read by the final statement
        first = expr(draw(st.integers(1, 2)))
        kept = draw(st.permutations(_free(first)))
        kept = kept[:draw(st.integers(0, min(2, len(kept))))]
        lets = f"let t[{','.join(kept)}] = {first}\n"
        tensors["t"] = tuple(kept)
    body = expr(draw(st.integers(1, max_depth)))
    free = _free(body)
    out = draw(st.lists(st.sampled_from(free), max_size=min(2, len(free)), unique=True)) if free else []
    out_format = "dense"
    if len(out) == 2:
        out_format = draw(st.sampled_from(["dense", "csr", "coo", "dcsr"]))
    elif len(out) == 1:
        out_format = draw(st.sampled_from(["dense", "sparse"]))
    source = f"{lets}y[{','.join(out)}] = {body}"
    formats, values = {}, {}
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    for name in sorted(used - {"t"}):
        if name == "s":
            values["s"] = draw(st.sampled_from([2.0, -0.5, 3, np.float32(1.5)]))
            continue
        idx = tensors[name]
        shape = tuple(extents[v] for v in idx)
        fmt = draw(st.sampled_from(FORMATS_2D if len(idx) == 2 else FORMATS_1D))
        if fmt.startswith("nm") and shape[-1] % int(fmt[5:-1]):
            fmt = "csr"
        if "(2,2)" in fmt and any(n % 2 for n in shape):
            fmt = "csr"
        dtype = draw(st.sampled_from(DTYPES))
        formats[name] = fmt
        values[name] = random_operand(rng, shape, draw(st.sampled_from([0.0, 0.3, 0.7, 1.0])), fmt, dtype)
    return source, formats, values, out_format


def _free(body: str) -> list:
    """Free indices of a generated body (its reductions bind theirs), via the parser."""
    from .lang.ast import free_indices
    from .lang.syntax import parse_statements

    return free_indices(parse_statements(f"y__[i] = {body}")[0].value)


def check_program(source, formats, values, out_format, backend="cpu") -> str:
    """Compile and run one program on ``backend`` ("cpu" or "cuda"), compare with the interpreter:
    "ok", or "rejected" when the program is refused with a DSLError/FormatError (a clear error is a
    correct answer to a program the language does not accept). A disagreement raises AssertionError;
    anything else is a crash."""
    import sparsedsl as sd

    from .errors import DSLError, FormatError

    try:
        kernel = sd.compile(source, out_format=out_format, **formats)
        operands = {n: v if n == "s" else sd.asformat(v, formats[n]) for n, v in values.items()}
        ref = kernel.reference(**operands)
    except (DSLError, FormatError):
        return "rejected"
    with np.errstate(all="ignore"):
        got = kernel(**operands, backend=backend)
    if backend == "cuda":  # back on the host for the comparison
        got = got.to("cpu") if hasattr(got, "to") else got.get() if hasattr(got, "get") else got
    single = any(np.asarray(v).dtype == np.float32 for v in values.values())  # float32 anywhere: its rounding
    assert_equal(got, ref, 1e-3 if single else None)
    return "ok"

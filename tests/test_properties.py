"""Property tests: compiled kernels against the dense interpreter (and scipy for 2-D), on random
shapes, densities, dtypes and formats for every operand."""

import contextlib

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsedsl as sd
from sparsedsl.testing import assert_equal, random_operand

FORMATS_2D = ["dense", "csr", "csc", "dcsr", "coo", "bitmap", "nm(2,4)", "nm(2,8)", "bsr(2,2)", "blocked_bitmap(2,2)"]
FORMATS_3D = ["dense", "csf", "coo", "bitmap", "(i, j, k) -> (k: dense, i: compressed, j: compressed)",
              "(i, j, k) -> (j: compressed, k: compressed, i: compressed)"]
FORMATS_1D = ["dense", "sparse", "coo", "bitmap"]
DTYPES = [np.float64, np.float32, np.int64, np.int32, np.uint8, np.bool_]

# (program, {operand: index names}, whether a sparse output is allowed)
PROGRAMS = [
    ("y[i] = A[i,j] * x[j]", {"A": "ij", "x": "j"}),
    ("Y[i,n] = A[i,j] * X[j,n]", {"A": "ij", "X": "jn"}),
    ("C[i,j] = S[i,j] * U[i,k] * V[j,k]", {"S": "ij", "U": "ik", "V": "jk"}),
    ("y[i] = A[i,j] * B[i,j] * x[j]", {"A": "ij", "B": "ij", "x": "j"}),
    ("C[i,j] = A[i,j] * B[i,j]", {"A": "ij", "B": "ij"}),
    ("C[i,j] = A[i,j] + B[i,j]", {"A": "ij", "B": "ij"}),
    ("C[i,j] = A[i,j] - 2 * B[i,j]", {"A": "ij", "B": "ij"}),
    ("C[i,j] = A[i,j] * (B[i,j] + D[i,j])", {"A": "ij", "B": "ij", "D": "ij"}),
    ("C[i,j] = A[i,k] * B[k,j]", {"A": "ik", "B": "kj"}),
    ("y[j] = A[i,j] * x[i]", {"A": "ij", "x": "i"}),
    ("C[i,j] = A[j,i] + B[i,j]", {"A": "ji", "B": "ij"}),
    ("y[i] = max[j](A[i,j])", {"A": "ij"}),
    ("y[i] = min[j](A[i,j] * x[j])", {"A": "ij", "x": "j"}),
    ("C[i,j] = min_plus[k](A[i,k] * B[k,j])", {"A": "ik", "B": "kj"}),
    ("C[i,j] = max_times[k](A[i,k] * B[k,j])", {"A": "ik", "B": "kj"}),
    ("C[i,j] = max_plus[k](A[i,k] * B[k,j])", {"A": "ik", "B": "kj"}),
    ("C[i,j] = or_and[k]((A[i,k] > 0.2) * (B[k,j] > 0.2))", {"A": "ik", "B": "kj"}),
    ("y[i] = any[j](A[i,j] > 0.5)", {"A": "ij"}),
    ("y[i] = all[j](A[i,j] > 0.1)", {"A": "ij"}),
    ("y[i] = sum[j](A[i,j] * A[i,j])", {"A": "ij"}),
    ("C[i,j] = A[i,j] + x[j]", {"A": "ij", "x": "j"}),
    ("C[i,j] = where(A[i,j] > 0.5, relu(A[i,j] - B[i,j]), abs(A[i,j]))", {"A": "ij", "B": "ij"}),
    ("y[i] = T[i,j,k] * u[j] * w[k]", {"T": "ijk", "u": "j", "w": "k"}),
    ("M[i,r] = T[i,j,k] * B[j,r] * D[k,r]", {"T": "ijk", "B": "jr", "D": "kr"}),
    ("C[i,j] = T[i,j,k] * T2[i,j,k]", {"T": "ijk", "T2": "ijk"}),
    ("z[i] = a[i] * b[i] + c[i]", {"a": "i", "b": "i", "c": "i"}),
]


@st.composite
def instances(draw, program):
    expr, operands = program
    names = sorted({c for idx in operands.values() for c in idx})
    extents = {n: draw(st.sampled_from([4, 8])) if n in "jk" else draw(st.integers(2, 7)) for n in names}
    seed = draw(st.integers(0, 2**31))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(seed)
    formats, values = {}, {}
    for name, idx in operands.items():
        shape = tuple(extents[c] for c in idx)
        choices = {1: FORMATS_1D, 2: FORMATS_2D, 3: FORMATS_3D}[len(idx)]
        fmt = draw(st.sampled_from(choices))
        if fmt.startswith("nm") and shape[-1] % int(fmt[5:-1]):
            fmt = "csr"
        if "(2,2)" in fmt and any(s % 2 for s in shape):
            fmt = "csr"
        formats[name] = fmt
        values[name] = random_operand(rng, shape, draw(st.sampled_from([0.0, 0.3, 0.7, 1.0])), fmt, dtype)
    out_format = draw(st.sampled_from(["dense", "sparse"]))
    return expr, formats, values, out_format


@pytest.mark.parametrize("program", PROGRAMS, ids=[p[0] for p in PROGRAMS])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_matches_interpreter(program, data):
    expr, formats, values, out_kind = data.draw(instances(program))
    out_ndim = len(expr.split("=")[0].split("[")[1].split(","))
    out_format = "dense" if out_kind == "dense" else {1: "sparse", 2: "csr", 3: "csf"}[out_ndim]
    kernel = sd.compile(expr, out_format=out_format, **formats)
    operands = {n: sd.asformat(v, formats[n]) for n, v in values.items()}
    assert_equal(kernel(**operands), kernel.reference(**operands))


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dcsr", "bitmap", "bsr(2,2)"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_d_kernels_match_scipy(fmt, dtype):
    rng = np.random.default_rng(7)
    a = sp.random(12, 10, density=0.3, format="csr", random_state=1, dtype=dtype)
    b = sp.random(10, 8, density=0.3, format="csr", random_state=2, dtype=dtype)
    x = rng.random(10).astype(dtype)
    A, B = sd.asformat(a, fmt), sd.asformat(b, fmt)
    tol = dict(rtol=1e-5) if dtype == np.float32 else dict(rtol=1e-12)
    np.testing.assert_allclose(sd.compute("y[i] = A[i,j] * x[j]", A=A, x=x), a @ x, **tol)
    np.testing.assert_allclose(sd.compute("Y[i,n] = A[i,j] * X[j,n]", A=A, X=b.toarray()), a @ b.toarray(), **tol)
    C = sd.compute("C[i,j] = A[i,k] * B[k,j]", A=A, B=B, out_format="csr")
    np.testing.assert_allclose(C.to_scipy().toarray(), (a @ b).toarray(), **tol)
    a2 = sp.random(12, 10, density=0.3, format="csr", random_state=3, dtype=dtype)
    A2 = sd.asformat(a2, fmt)
    np.testing.assert_allclose(sd.compute("C[i,j] = A[i,j] + B[i,j]", A=A, B=A2, out_format="csr").to_numpy(),
                               (a + a2).toarray(), **tol)
    np.testing.assert_allclose(sd.compute("C[i,j] = A[i,j] * B[i,j]", A=A, B=A2, out_format="csr").to_numpy(),
                               a.multiply(a2).toarray(), **tol)


BITMAP_PROGRAMS = [
    ("y[i] = A[i,j] * x[j]", {"A": "bitmap", "x": "dense"}),  # the sum over a row's set bits
    ("Y[i,n] = A[i,j] * X[j,n]", {"A": "bitmap", "X": "dense"}),
    ("y[i] = max[j](A[i,j] * x[j])", {"A": "bitmap", "x": "dense"}),
    ("C[i,j] = A[i,j] * B[i,j]", {"A": "bitmap", "B": "bitmap"}),  # co-iteration: two cursors
    ("C[i,j] = A[i,j] + B[i,j]", {"A": "bitmap", "B": "csr"}),
    ("C[i,j] = A[i,j] * B[i,j]", {"A": "bitmap", "B": "csr"}),
    ("y[j] = A[i,j] * x[i]", {"A": "bitmap", "x": "dense"}),
]


@st.composite
def bitmap_rows(draw, cols):
    """A matrix of ``cols`` columns (not always a multiple of the mask's 32-bit words) whose rows are
    empty, full, one entry at either end, or random."""
    rows = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    a = np.zeros((rows, cols))
    for r in range(rows):
        kind = draw(st.sampled_from(["empty", "full", "first", "last", "random", "random"]))
        keep = {"empty": np.zeros(cols, bool), "full": np.ones(cols, bool),
                "first": np.arange(cols) == 0, "last": np.arange(cols) == cols - 1,
                "random": rng.random(cols) < draw(st.sampled_from([0.1, 0.5, 0.9]))}[kind]
        a[r] = np.where(keep, rng.integers(1, 9, cols), 0)
    return a


def bitmap_case(data, cols, program, out_format):
    """(kernel, operands) of a bitmap program on rows drawn by ``bitmap_rows``; checks the mask's
    layout and the conversions on the way."""
    expr, formats = program
    a = data.draw(bitmap_rows(cols))
    A = sd.asformat(a, "bitmap")
    mask = A.levels[1]["mask"]
    assert mask.dtype == np.uint32 and len(mask) == a.shape[0] * ((cols + 31) // 32)  # one bit per coordinate
    np.testing.assert_array_equal(A.to_numpy(), a)
    np.testing.assert_array_equal(sd.asformat(A, "csr").to_scipy().toarray(), a)
    rng = np.random.default_rng(1)
    b = data.draw(bitmap_rows(cols))[:1].repeat(a.shape[0], axis=0) if data.draw(st.booleans()) else \
        np.where(rng.random(a.shape) < 0.5, rng.integers(1, 9, a.shape), 0).astype(float)
    operands = {"A": A, "B": sd.asformat(b, formats.get("B", "csr")), "x": rng.integers(-3, 4, a.shape[1] if
                "x[j]" in expr else a.shape[0]).astype(float), "X": rng.integers(-3, 4, (cols, 3)).astype(float)}
    names = {n for n in ("A", "B", "x", "X") if f"{n}[" in expr}
    out = "dense" if out_format == "dense" or expr.startswith(("y", "Y")) else "csr"
    kernel = sd.compile(expr, out_format=out, **{n: formats[n] for n in names})
    return kernel, {n: operands[n] for n in names}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), cols=st.sampled_from([1, 31, 32, 33, 64, 100]),
       program=st.sampled_from(BITMAP_PROGRAMS), out_format=st.sampled_from(["dense", "csr"]))
def test_bitmap_rows_across_word_boundaries_match_interpreter(data, cols, program, out_format):
    kernel, operands = bitmap_case(data, cols, program, out_format)
    assert_equal(kernel(**operands), kernel.reference(**operands))


# programs whose sparse output is gathered in a workspace (a reduction index before an output one)
WORKSPACE_PROGRAMS = [p for p in PROGRAMS if p[0] in (
    "C[i,j] = A[i,k] * B[k,j]", "y[j] = A[i,j] * x[i]", "C[i,j] = min_plus[k](A[i,k] * B[k,j])",
    "C[i,j] = max_times[k](A[i,k] * B[k,j])", "M[i,r] = T[i,j,k] * B[j,r] * D[k,r]")]


@pytest.mark.parametrize("program", WORKSPACE_PROGRAMS, ids=[p[0] for p in WORKSPACE_PROGRAMS])
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hash_workspace_matches_interpreter(program, data):
    """Sparse outputs gathered in a hash-table workspace (forced; chosen by default only for very
    wide outputs) equal the interpreter's, whatever the operand formats."""
    expr, formats, values, _ = data.draw(instances(program))
    out_format = {1: "sparse", 2: "csr"}[len(expr.split("=")[0].split(","))]
    kernel = sd.compile(expr, out_format=out_format, schedule={"workspace": "hash"}, **formats)
    operands = {n: sd.asformat(v, formats[n]) for n, v in values.items()}
    assert_equal(kernel(**operands), kernel.reference(**operands))


def test_hash_workspace_grows_past_its_first_size():
    a = sp.random(50, 2000, density=0.3, format="csr", random_state=8)  # rows of ~600 entries
    b = sp.random(2000, 2000, density=0.01, format="csr", random_state=9)
    k = sd.compile("C[i,j] = A[i,k] * B[k,j]", A="csr", B="csr", out_format="csr", schedule={"workspace": "hash"})
    assert "hash table" in sd.explain(k, a, b)
    C = k(A=a, B=b).to_scipy()
    np.testing.assert_allclose(C.toarray(), (a @ b).toarray(), rtol=1e-12)
    assert C.has_sorted_indices


def test_schedule_options_are_checked():
    with pytest.raises(sd.DSLError, match="schedule"):
        sd.compile("y[i] = A[i,j] * x[j]", schedule={"workspace": "tree"})


@pytest.mark.parametrize("n, density", [(40, 0.02), (70, 0.5), (300, 0.15)])
def test_spgemm_rows_long_and_short_match_scipy(n, density):
    """Workspace rows short (insertion sort), long against the column count (scan of the marks) and
    in between (sort); the result must be canonical CSR, identical in pattern to scipy's."""
    a = sp.random(n, n, density=density, format="csr", random_state=5)
    b = sp.random(n, n, density=density, format="csr", random_state=6)
    C = sd.compute("C[i,j] = A[i,k] * B[k,j]", A=a, B=b, out_format="csr").to_scipy()
    ref = (a @ b).tocsr()
    ref.sort_indices()
    np.testing.assert_array_equal(C.indptr, ref.indptr)
    np.testing.assert_array_equal(C.indices, ref.indices)
    np.testing.assert_allclose(C.data, ref.data, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_spmm_rows_of_every_length_match_scipy(dtype):
    """Row i holds i entries (0..10): the CPU lowering adds sparse entries to a dense row four at a time
    with a remainder loop, so every remainder and the empty row are exercised; Aᵀ·X scatters into the
    entry's own row and must not be combined."""
    rng = np.random.default_rng(4)
    rows = [(i, j) for i in range(11) for j in rng.choice(12, size=i, replace=False)]
    i, j = np.array(rows).T
    a = sp.csr_array((rng.integers(-5, 6, len(i)).astype(dtype), (i, j)), shape=(11, 12))
    x = rng.integers(-5, 6, (12, 7)).astype(dtype)
    np.testing.assert_array_equal(sd.compute("Y[i,n] = A[i,j] * X[j,n]", A=a, X=x), a @ x)
    xt = rng.integers(-5, 6, (11, 7)).astype(dtype)
    np.testing.assert_array_equal(sd.compute("Y[j,n] = A[i,j] * X[i,n]", A=a, X=xt), a.T @ xt)


def test_gathers_prefetched_only_for_scattered_coordinates_and_results_unchanged():
    """Large enough for the parallel build (and the scattered-coordinates test): random columns turn
    the gather prefetch on, a banded matrix leaves it off; SpMV and SpMM equal scipy either way."""
    from sparsedsl.compiler import _scattered
    rng = np.random.default_rng(6)
    n = 30_000
    rand = sp.random(n, n, density=12 / n, format="csr", random_state=7)
    band = sp.diags([rng.standard_normal(n - abs(d)) for d in range(-6, 7)], list(range(-6, 7)), format="csr")
    assert (_scattered(rand.indptr, rand.indices), _scattered(band.indptr, band.indices)) == (1, 0)
    assert _scattered(None, rand.indices) == 1 and _scattered(np.zeros(1, np.int64), np.zeros(0, np.int32)) == 0
    x, X = rng.standard_normal(n), rng.standard_normal((n, 8))
    for a in (rand, band):
        np.testing.assert_allclose(sd.compute("y[i] = A[i,j] * x[j]", A=a, x=x), a @ x, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sd.compute("Y[i,n] = A[i,j] * X[j,n]", A=a, X=X), a @ X, rtol=1e-12, atol=1e-12)


def test_sparse_row_softmax_is_one_kernel():
    a = sp.random(30, 20, density=0.2, format="csr", random_state=4)
    kernel = sd.compile("let m[i] = max[j](S[i,j])\n"
                        "let e[i,j] = mask(S[i,j], exp(S[i,j] - m[i]))\n"
                        "let z[i] = e[i,j]\n"
                        "P[i,j] = e[i,j] / z[i]", S="csr", out_format="csr")
    S = sd.asformat(a, "csr")
    # one compiled kernel: its four statements (max, masked exp, row sum, divide) one function each
    stages = kernel.stages(S=S)
    assert len(stages["loop_ir"]) == 4 and all("def stmt" in src for src in stages["source"])
    P = kernel(S=S).to_scipy()
    assert (P != 0).nnz == a.nnz  # same pattern
    for r in range(30):
        row = a.data[a.indptr[r]:a.indptr[r + 1]]
        if len(row):
            want = np.exp(row - row.max()) / np.exp(row - row.max()).sum()
            np.testing.assert_allclose(P.data[P.indptr[r]:P.indptr[r + 1]], want)


def test_shortest_path_relaxation_and_reachability_are_one_line():
    g = sp.random(15, 15, density=0.2, format="csr", random_state=5)
    d = np.full(15, np.inf)
    d[0] = 0.0
    G = sd.asformat(g, "csr")
    # a sparse result stores only reached vertices; absent ones stay at +inf
    step = sd.compile("dn[j] = min_plus[i](d[i] * G[i,j])", G="csr", out_format="sparse")
    for _ in range(15):
        relaxed = step(d=d, G=G)
        coords, vals = relaxed.coordinates()
        d[coords[0]] = np.minimum(d[coords[0]], vals)
    from scipy.sparse.csgraph import shortest_path

    want = shortest_path(g, directed=True, indices=0)
    reach = np.isfinite(want)
    np.testing.assert_allclose(d[reach], want[reach])
    nxt = sd.compute("r[j] = or_and[i](f[i] * B[i,j])", f=np.eye(15, dtype=bool)[0], B=sd.asformat(g != 0, "csr"))
    np.testing.assert_array_equal(nxt, (g[[0]] != 0).toarray()[0])


def test_python_and_text_kernels_run():
    @sd.sparse_kernel
    def spmv(A: "csr", x: "dense", alpha: "scalar") -> "dense":
        y[i] = alpha * A[i, j] * x[j]  # noqa: F821
        return y  # noqa: F821

    a = sp.random(9, 6, density=0.4, format="csr", random_state=0)
    x = np.arange(6.0)
    np.testing.assert_allclose(spmv(a, x, 2.0), 2 * (a @ x))
    assert "prange" in sd.explain(spmv, a, x, 2.0)


def test_csr_from_scipy_is_not_copied():
    a = sp.random(40, 30, density=0.2, format="csr", random_state=0)
    a.sort_indices()
    t = sd.asformat(a, "csr")
    for ours, theirs in ((t.levels[1]["pos"], a.indptr), (t.levels[1]["crd"], a.indices), (t.values, a.data)):
        assert np.shares_memory(ours, theirs) and not ours.flags.writeable  # a read-only view, no copy


@contextlib.contextmanager
def poisoned_allocations():
    """A context in which a dense output the lowering says its kernel stores in full is allocated
    poisoned (NaN, or 77 for integers) instead of uninitialised, so any element left shows up."""
    from sparsedsl import compiler

    real = compiler._allocator

    def allocator(backend, overwrites):
        if not overwrites:
            return real(backend, overwrites)
        full = np.full
        if backend == "cuda":
            import cupy

            full = cupy.full
        return lambda shape, dtype: full(shape, np.nan if np.dtype(dtype).kind == "f" else 77, dtype=dtype)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compiler, "_allocator", allocator)
        yield


@pytest.mark.parametrize("program", PROGRAMS, ids=[p[0] for p in PROGRAMS])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_outputs_allocated_uninitialised_are_stored_everywhere(program, data):
    expr, formats, values, _ = data.draw(instances(program))
    kernel = sd.compile(expr, **formats)
    operands = {n: sd.asformat(v, formats[n]) for n, v in values.items()}
    with poisoned_allocations():
        got = kernel(**operands)
    assert_equal(got, kernel.reference(**operands))


def test_which_outputs_are_stored_in_full():
    from sparsedsl.lang.lower import lower

    a = sp.random(6, 5, density=0.5, format="csr", random_state=1)
    # (CPU, CUDA): the CPU adds a row of A times a row of X into the output row (an axpy), the GPU
    # sums each output element in a register
    cases = {"y[i] = A[i,j] * x[j]": (True, True), "Y[i,n] = A[i,j] * X[j,n]": (False, True),
             "y[i] = A[i,j] * x[j] + z[i]": (True, True), "y[j] = A[i,j] * x[i]": (False, False),
             "y[i] = max[j](A[i,j])": (False, False)}
    for expr, (full, full_gpu) in cases.items():
        k = sd.compile(expr, A="csr")
        ops = {"A": a, "x": np.ones(6 if expr.startswith("y[j]") else 5), "X": np.ones((5, 3)), "z": np.ones(6)}
        plan = k.plan(k.bind((), {n: v for n, v in ops.items() if n in {p.name for p in k.program.params}}))
        st_, low, _, _ = plan.steps[-1]  # (A·x + z: the sum is its own statement, then + z)
        assert low.overwrites == full, expr
        assert lower(plan.rewritten, st_, len(plan.steps) - 1, {"backend": "cuda"}).overwrites == full_gpu, expr

"""The language's semantics rules (README, "Semantics"), each checked against numpy, scipy or a closed
form, for the compiled kernel and for the reference interpreter alike (the interpreter is the oracle
of the property tests, so it is tested here on its own against independent answers)."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import shortest_path

import sparsedsl as sd
from sparsedsl import DSLError


def both(kernel, **operands):
    """(compiled result, interpreter result) as numpy arrays."""
    def dense(r):
        return r.to_numpy() if isinstance(r, sd.SparseTensor) else np.asarray(r)
    return dense(kernel(**operands)), dense(kernel.reference(**operands))


def check(kernel, want, rtol=1e-10, **operands):
    got, ref = both(kernel, **operands)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(ref, want, rtol=rtol, atol=rtol)


@pytest.fixture
def a_with_empty_row_and_column():
    a = sp.random(7, 6, density=0.45, format="lil", random_state=3)
    a[2, :] = 0
    a[:, 4] = 0
    a = a.tocsr()
    a.eliminate_zeros()
    return a


# ---- where an implicit sum binds -----------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csr", "coo", "dense", "bitmap"])
def test_implicit_sum_wraps_the_product_only(fmt, a_with_empty_row_and_column):
    a = a_with_empty_row_and_column[:6]
    x = np.arange(1.0, 7.0)
    k = sd.compile("y[i] = A[i,j]*x[j] + x[i]", A=fmt)
    check(k, a @ x + x, A=sd.asformat(a, fmt), x=x)


@pytest.mark.parametrize("out_format", ["dense", "csr"])
def test_spgemm_plus_a_sums_the_product_only(out_format):
    a = sp.random(9, 9, density=0.25, format="csr", random_state=5)
    k = sd.compile("C[i,j] = A[i,k]*B[k,j] + A[i,j]", A="csr", B="csr", out_format=out_format)
    want = (a @ a + a).toarray()
    check(k, want, A=a, B=a)
    if out_format == "csr":  # present where either term is, as scipy stores it
        c = k(A=a, B=a)
        assert c.nnz == (a @ a + a).nnz


def test_sum_inside_a_function_binds_inside_it():
    a = sp.random(5, 4, density=0.5, format="csr", random_state=1)
    x = np.linspace(0.1, 0.4, 4)
    k = sd.compile("y[i] = exp(A[i,j]*x[j])", A="csr")
    check(k, np.exp(a @ x), A=a, x=x)


def test_product_chain_is_summed_as_a_whole():
    a = sp.random(5, 4, density=0.5, format="csr", random_state=2)
    b = np.random.default_rng(0).random((4, 3))
    x = np.arange(3.0)
    k = sd.compile("y[i] = A[i,j]*B[j,k]*x[k]", A="csr")
    check(k, a @ b @ x, A=a, B=b, x=x)


def test_implicit_sum_inside_a_max_is_a_sum():
    a = np.random.default_rng(1).random((4, 5))
    b = np.random.default_rng(2).random((5, 3))
    k = sd.compile("y[i] = max[j](A[i,j]*B[j,k])")
    check(k, (a * b.sum(axis=1)).max(axis=1), A=a, B=b)


# ---- the identity of a reduction -------------------------------------------------------------

@pytest.mark.parametrize("op,fill", [("min", np.inf), ("max", -np.inf)])
def test_empty_columns_hold_the_identity(op, fill, a_with_empty_row_and_column):
    a = a_with_empty_row_and_column
    k = sd.compile(f"y[j] = {op}[i](A[i,j])", A="csr")
    want = np.array([getattr(a.data[a.indices == j], op)() if (a.indices == j).any() else fill
                     for j in range(a.shape[1])])
    check(k, want, A=a)


@pytest.mark.parametrize("fmt", ["csr", "dcsr", "coo"])
def test_empty_rows_hold_the_identity_of_any_and_all(fmt, a_with_empty_row_and_column):
    a = a_with_empty_row_and_column
    d = a.toarray()
    stored = d != 0
    for op, want in (("any", (stored & (d > 0.5)).any(axis=1)),
                     ("all", np.where(stored, d > 0.5, True).all(axis=1))):
        k = sd.compile(f"y[i] = {op}[j](A[i,j] > 0.5)", A=fmt)
        got, ref = both(k, A=sd.asformat(a, fmt))
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(ref, want)


def test_integer_min_of_an_empty_row_is_the_largest_integer():
    a = sp.csr_array(np.array([[3, 0, 1], [0, 0, 0]], dtype=np.int64))
    k = sd.compile("y[i] = min[j](A[i,j])", A="csr")
    check(k, [1, np.iinfo(np.int64).max], A=a)


def test_bellman_ford_agrees_with_scipy_shortest_path():
    rng = np.random.default_rng(7)
    n = 12
    w = sp.random(n, n, density=0.2, format="lil", random_state=11)
    w.setdiag(0)
    w[:, 5] = 0  # vertex 5 has no in-edges: unreachable, +inf
    w = sp.csr_array(w)
    w.eliminate_zeros()
    w.data = rng.uniform(0.5, 3.0, w.nnz)
    step = sd.compile("e[j] = min(d[j], min_plus[i](d[i] * W[i,j]))", W="csr")
    d = np.full(n, np.inf)
    d[0] = 0.0
    ref = d.copy()
    for _ in range(n - 1):
        d = step(d=d, W=w)
        ref = step.reference(d=ref, W=w)
    want = shortest_path(w, directed=True, indices=0)
    np.testing.assert_allclose(d, want)
    np.testing.assert_allclose(ref, want)
    assert np.isinf(d[5])


def test_nested_reduction_over_an_empty_row_equals_the_let_form(a_with_empty_row_and_column):
    a = a_with_empty_row_and_column
    b = np.arange(7.0)
    nested = sd.compile("y[i] = max[j](A[i,j]) + b[i]", A="csr")
    let = sd.compile("let m[i] = max[j](A[i,j])\ny[i] = m[i] + b[i]", A="csr")
    d = a.toarray()
    want = np.where((d != 0).any(axis=1), np.where(d != 0, d, -np.inf).max(axis=1), -np.inf) + b
    check(nested, want, A=a, b=b)
    check(let, want, A=a, b=b)
    assert np.isneginf(want[2])


# ---- index scoping ---------------------------------------------------------------------------

@pytest.mark.parametrize("expr,col", [("y[i] = x[i]*sum[i](B[i,j])", 17),
                                      ("y[k] = x[j]*sum[j](B[j,k])", 17),
                                      ("y[i] = sum[j](A[i,j]*sum[j](B[i,j]))", 26),
                                      ("y[i] = sum[j](A[i,j]) + B[i,j]", 12)])
def test_an_index_reduced_and_used_outside_is_a_located_error(expr, col):
    with pytest.raises(DSLError) as ei:
        sd.compile(expr)
    assert f"<expr>:1:{col}" in str(ei.value)
    assert "rename" in str(ei.value)


# ---- scalar results and full reductions in expressions ------------------------------------

def test_scalar_results():
    x = np.arange(1.0, 6.0)
    a = sp.random(6, 5, density=0.4, format="csr", random_state=4)
    check(sd.compile("s[] = x[i]*x[i]"), x @ x, x=x)
    check(sd.compile("s[] = sum[i,j](A[i,j])", A="csr"), a.sum(), A=a)
    check(sd.compile("y[i] = x[i] / sum[j](x[j])"), x / x.sum(), x=x)
    k = sd.compile("C[i,j] = A[i,j] / sum[k,l](A[k,l])", A="csr", out_format="csr")
    check(k, a.toarray() / a.sum(), A=a)
    assert k(A=a).nnz == a.nnz
    assert np.shape(sd.compute("s[] = x[i]*x[i]", x=x)) == ()


# ---- literals ------------------------------------------------------------------------------

def test_literals_like_numpy():
    x = np.arange(3.0)
    np.testing.assert_array_equal(sd.compute("y[i] = x[i] + 99999999999999999999999", x=x), x + 1e23)
    assert np.isinf(sd.compute("y[i] = x[i] + 1e999", x=x)).all()
    with pytest.raises(DSLError, match="does not fit int64") as ei:
        sd.compute("y[i] = x[i] + 99999999999999999999999", x=np.arange(3))
    assert "<expr>:1:15" in str(ei.value)
    with pytest.raises(DSLError, match="5000 digits") as ei:
        sd.compute("y[i] = x[i] + " + "7" * 5000, x=x)
    assert "<expr>:1:15" in str(ei.value)
    with pytest.raises(DSLError, match="does not fit int32"):
        sd.compute("y[i] = x[i] * 3000000000", x=np.arange(3, dtype=np.int32))


def test_parameters_named_like_words_of_the_language_are_errors():
    def f(x: "dense", true: "scalar") -> "dense":
        y[i] = x[i] * true  # index notation
        return y

    with pytest.raises(DSLError, match="'true' is a word of the language") as ei:
        sd.sparse_kernel(f)
    assert "test_semantics.py" in str(ei.value)


# ---- dtypes --------------------------------------------------------------------------------

def test_float16_computes_in_float32_and_stores_float16():
    x = (np.arange(8) / 3).astype(np.float16)
    got = sd.compute("y[i] = x[i] * x[i] + 1", x=x)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, (x.astype(np.float32) ** 2 + 1).astype(np.float16))


@pytest.mark.parametrize("expr,operands,numpy_result", [
    ("y[i] = x[i] > 2", {"x": np.arange(4, dtype=np.float32)}, lambda x: x > 2),
    ("y[i] = x[i] * a", {"x": np.arange(4, dtype=np.float32), "a": 2.5}, lambda x, a: x * a),  # weak
    ("y[i] = x[i] * a", {"x": np.arange(4, dtype=np.float32), "a": np.float64(2.5)}, lambda x, a: x * a),
    ("y[i] = x[i] * 2", {"x": np.arange(4, dtype=np.int32)}, lambda x: x * 2),
    ("y[i] = x[i] + 1", {"x": np.arange(4, dtype=np.uint8)}, lambda x: x.astype(np.int64) + 1),  # int64 storage
    ("s[i] = sum[j](A[i,j] > 0)", {"A": np.eye(3)}, lambda A: (A > 0).sum(axis=1)),  # a count, int64
    ("y[i] = any[j](A[i,j] > 0)", {"A": np.eye(3)}, lambda A: (A > 0).any(axis=1)),
    ("y[i] = exp(x[i])", {"x": np.arange(3)}, lambda x: np.exp(x)),  # float64 of integers
])
def test_dtypes_follow_numpy_promotion(expr, operands, numpy_result):
    want = numpy_result(*operands.values())
    k = sd.compile(expr)
    for got in (k(**operands), k.reference(**operands)):
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        np.testing.assert_allclose(got, want)


# ---- bugs the differential fuzz found (each a program that disagreed with the interpreter) ----------

def test_unrolled_sum_of_comparisons_keeps_each_comparison_whole():
    a = np.random.default_rng(0).random((7, 3))  # 7 rows: four-way unrolled loop plus a remainder
    k = sd.compile("y[] = A[j,k] != A[j,k]")
    check(k, 0, A=a)
    check(sd.compile("y[] = sum[i,j](A[i,j] == A[i,j])"), a.size, A=a)


def test_weak_scalar_survives_hoisting():
    a = np.random.default_rng(1).random((4, 3)).astype(np.float32)
    k = sd.compile("y[] = s / A[j,i]", A="csc")  # the sum over A is hoisted into a temporary
    got = k(A=sd.asformat(a, "csc"), s=2.0)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, 2.0 / a.sum(), rtol=1e-5)


def test_nan_propagates_through_max_and_min_as_in_numpy():
    x = np.array([1.0, np.nan, 3.0])
    z = np.array([np.nan, 2.0, 0.0])
    for fn, ufunc in (("max", np.maximum), ("min", np.minimum)):
        check(sd.compile(f"y[i] = {fn}(x[i], z[i])"), ufunc(x, z), x=x, z=z)
    check(sd.compile("y[] = max[i](x[i])"), np.nan, x=x)


def test_a_nested_reduction_is_dense_even_beside_a_sparse_operand():
    # the sum over j is a temporary; a sparse z[k] beside it must not make it sparse (absent != 0 here)
    a = np.array([[0.0, 0.2, 0.8, 0.6], [0.1, 0.4, 0.0, 0.0]])
    z = np.array([0, 6])
    k = sd.compile("y[] = where(A[k,j] > 0.5, z[k], A[k,j]) == (0 - z[k])", z="coo")
    # sum over j binds the where() only; where() is absent where z[k] is, so r = [0 (no terms), 0.1 + 0.4]
    r = np.array([0.0, 0.5])
    check(k, int(np.sum(r == 0 - z)), A=a, z=sd.asformat(z, "coo"))  # (0 == 0) + (0.5 == -6) = 1


def test_union_with_a_dense_driven_inner_loop_reads_no_value_past_the_end():
    # the fuzz (Python engine) found A's value loaded one past its last entry: the load ahead of the
    # presence test was marked safe for a cursor that the dense-driven j loop runs past its end
    from sparsedsl.testing import random_operand

    old = sd.config(check="bounds")  # an out-of-bounds read is an IndexError here
    try:
        k = sd.compile("y[j,i] = A[k,j] / z[i] + relu(B[i,k])", A="dcsr", B="dcsr")
        for seed in range(6):
            rng = np.random.default_rng(seed)
            ni, nk = int(rng.integers(1, 6)), int(rng.integers(1, 5))
            a = random_operand(rng, (nk, 4), 0.5, "dcsr", np.float64)
            b = random_operand(rng, (ni, nk), 0.5, "dcsr", np.float32)
            z = rng.integers(1, 5, ni)
            want = np.einsum("kj,i->ji", a, 1.0 / z) + np.maximum(b, 0).sum(axis=1)[None, :]
            check(k, want, rtol=1e-6, A=sd.asformat(a, "dcsr"), B=sd.asformat(b, "dcsr"), z=z)
    finally:
        sd.config(**old)


def test_a_temporary_beside_an_nm_operand_is_not_nm():
    # the let rule took B's nm(2,4) for t, and B + 3 (present everywhere) cannot be stored N of every M
    b = sd.prune.nm(np.arange(1.0, 17.0).reshape(4, 4), 2, 4)
    k = sd.compile("let t[k,j] = B[k,j] + 3\ny[k] = t[k,j]", B="nm(2,4)")
    check(k, (b.to_numpy() + 3).sum(axis=1), B=b)


def test_a_float_function_of_a_where_with_a_boolean_branch_is_float64():
    b = np.array([[True, False], [False, True]])
    check(sd.compile("y[j,i] = -tanh(where(2 > 0, B[j,i], 0))"), -np.tanh(b.astype(np.float64)), B=b)


def test_mask_keeps_its_value_dtype_in_the_interpreter():
    # the interpreter's mask() added int8 zeros, so a boolean min over it took int8's identity (127)
    rng = np.random.default_rng(0)
    a = (rng.random((2, 4)) * 10).round().astype(np.int64)
    b, x = rng.random((3, 4)) > 0.5, rng.random(4) > 0.5
    k = sd.compile("y[] = mask(A[k,j], min_plus[i](mask(B[i,j], x[j])))", A="dcsr", B="bitmap", x="coo")
    # x absent (False) at j = 0, 1: no terms, min's identity True; at j = 2, 3 present and True
    check(k, 4, A=sd.asformat(a, "dcsr"), B=sd.asformat(b, "bitmap"), x=sd.asformat(x, "coo"))


def test_a_function_of_python_numbers_alone_is_float64_as_in_numpy():
    """A float function or division of Python numbers only is float64 (``np.tanh(-1.5)``, ``1.0 / 2``);
    with a float32 operand beside it, numpy's float64 scalar makes the result float64 too. (The fuzz
    found ``let t[] = tanh(-1.5)`` computed in float32.)"""
    got = sd.compute("y[] = tanh(-1.5)")
    assert got.dtype == np.float64 and got == pytest.approx(np.tanh(-1.5), rel=1e-15)
    assert sd.compute("y[] = 1.0 / 2").dtype == np.float64
    x = np.linspace(-1, 1, 7, dtype=np.float32)
    for expr, want in (("y[i] = x[i] * tanh(2.0)", x * np.tanh(2.0)), ("y[i] = x[i] / 2", x / 2),
                       ("y[i] = exp(x[i])", np.exp(x))):
        got = sd.compute(expr, x=x)
        assert got.dtype == want.dtype, expr
        np.testing.assert_allclose(got, want, rtol=1e-6)
    k = sd.compile("let t[] = tanh(-1.5)\ny[] = where((A[j,k] > 0), t[], A[j,k])", A="csr")
    a = sp.random(6, 5, density=0.5, format="csr", random_state=3)
    a.data -= 0.5
    want = np.where(a.data > 0, np.tanh(-1.5), a.data).sum()
    assert k(A=sd.asformat(a, "csr")) == pytest.approx(want, rel=1e-14) == k.reference(A=sd.asformat(a, "csr"))


def test_a_hoisted_reduction_of_python_numbers_does_not_widen_the_result():
    """``max[k](mask(z[k], -1.5))`` alone is float64 (numpy: a Python float with nothing to take its type
    from), but inside ``B / (...)`` the weak value takes float32 from B; hoisting the nested reduction
    into a temporary must keep the statement's float32 (found by the differential fuzz)."""
    rng = np.random.default_rng(0)
    B = (rng.random((3, 4)) * (rng.random((3, 4)) < 0.6)).astype(np.float32)
    z = np.array([0.0, 0.5, 0.0, 0.25, 0.0], np.float32)
    kernel = sd.compile("y[] = B[i,j] / max[k](mask(z[k], -1.5))", B="csc", z="bitmap")
    got = kernel(B=sd.asformat(B, "csc"), z=sd.asformat(z, "bitmap"))
    assert np.asarray(got).dtype == np.float32
    np.testing.assert_allclose(got, (B / np.float32(-1.5)).sum(dtype=np.float32), rtol=1e-6)


@pytest.mark.parametrize("a_fmt", ["bsr(2,2)", "blocked_bitmap(2,2)"])
def test_a_blocked_operand_copied_unblocked_unblocks_the_operands_it_then_disagrees_with(a_fmt):
    # the fuzz found A[j,k] copied to plain CSR (its j blocks clash with z's plain j) while B kept its
    # k blocks: the copy's k level had no loop and A was read at its row's position, silently
    rng = np.random.default_rng(0)
    a = np.where(rng.random((6, 4)) < 0.6, rng.integers(1, 9, (6, 4)), 0).astype(np.float64)
    b = np.where(rng.random((4, 4)) < 0.5, rng.random((4, 4)), 0.0)
    z = np.where(rng.random(6) < 0.7, rng.random(6) + 0.5, 0.0)
    k = sd.compile("y[i] = A[j,k] * z[j] * B[i,k]", A=a_fmt, B="blocked_bitmap(2,2)", z="coo")
    operands = dict(A=sd.asformat(a, a_fmt), B=sd.asformat(b, "blocked_bitmap(2,2)"), z=sd.asformat(z, "coo"))
    check(k, np.einsum("jk,j,ik->i", a, z, b), rtol=1e-12, **operands)
    assert any("copied" in line and "B" in line for line in sd.explain(k, **operands).splitlines())


@pytest.mark.parametrize("dtype", [np.uint8, np.uint64, np.int64])
def test_sigmoid_of_an_integer_negates_it_as_a_float(dtype):
    # the fuzz found sigmoid(max[i](x[i])) = 1 for an empty uint8 x: the max is int64's minimum, whose
    # integer negation wraps to itself (and -x wraps for any uint64)
    info = np.iinfo(dtype)
    x = np.array([0, 1, 3, info.max, info.min], dtype=dtype)
    with np.errstate(over="ignore"):
        want = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    check(sd.compile("y[i] = sigmoid(x[i])"), want, rtol=1e-12, x=x)
    empty = sd.asformat(np.zeros(3, dtype), "coo")
    check(sd.compile("y[] = sigmoid(max[i](x[i]))", x="coo"), 0.0, x=empty)


@pytest.mark.parametrize("b_fmt", ["bsr(2,2)", "blocked_bitmap(2,2)"])
def test_a_temporary_is_blocked_only_where_it_is_present_in_whole_blocks(b_fmt):
    # the fuzz found t = x[j] != B[i,j] stored in B's blocks: the block's other entries, absent from
    # t (x is not there), were stored, and present in y = 2 > t
    b = np.array([[0, 2], [0, 3], [2, 7], [1, 9]], np.int32)
    x = sd.asformat(np.array([9, 0]), "sparse")
    k = sd.compile("let t[i,j] = x[j] != B[i,j]\ny[i,j] = 2 > t[i,j]", out_format="csr", B=b_fmt, x="sparse")
    got = k(B=sd.asformat(b, b_fmt), x=x)
    assert np.array_equal(got.coordinates()[0], [[0, 1, 2, 3], [0, 0, 0, 0]])  # B padded, x at j = 0 only
    assert got.to_numpy()[:, 0].all()
    # a temporary that is present in whole blocks keeps them (attention's S = M * Q * K)
    m = sd.compile("let t[i,j] = B[i,j] * 2\ny[i] = t[i,j]", B=b_fmt)
    assert str(m.stages(B=sd.asformat(b, b_fmt))["checked"].types["t"].format) == b_fmt

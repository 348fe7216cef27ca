"""SparseTensor as an array: operators, __array__, repr, constructors and I/O, each checked against
scipy.sparse or numpy (never against sparsedsl's own output)."""

import math
import warnings

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsedsl as sd
from sparsedsl import array_ops
from sparsedsl.tensor import AUTO_DENSIFY_LIMIT

FORMATS = ["csr", "csc", "coo", "dcsr", "bitmap"]
DTYPES = [np.float32, np.float64, np.int64]
# every new (operator, formats, dtype) compiles a kernel (~0.3-3 s): keep the example counts modest
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def scipy_matrix(shape, density, dtype, seed) -> sp.csr_array:
    """A random scipy matrix with small nonzero integer values (exact in every dtype), some of them
    negative, some rows and columns empty."""
    rng = np.random.default_rng(seed)
    m = sp.random_array(shape, density=density, format="csr", rng=rng)
    m.data = rng.choice([-4, -3, -2, -1, 1, 2, 3, 4], size=m.nnz).astype(dtype)
    return m


@st.composite
def matrices(draw, shape=None, formats=FORMATS, dtypes=DTYPES):
    shape = shape or (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    density = draw(st.sampled_from([0.0, 0.1, 0.3, 0.6, 1.0]))
    S = scipy_matrix(shape, density, draw(st.sampled_from(dtypes)), draw(st.integers(0, 2**16)))
    return S, sd.asformat(S, draw(st.sampled_from(formats)))


def assert_eq(got, ref, dtype=None, fmt=None):
    """``got`` (SparseTensor, numpy array or scalar) equals ``ref`` (scipy or numpy); a SparseTensor
    must also be valid storage (re-validated here) in ``fmt``, and the dtype must be ``dtype``."""
    if isinstance(got, sd.SparseTensor):
        sd.SparseTensor(got.format, got.shape, got.levels, got.values)  # validates, raises if malformed
        if fmt is not None:
            assert got.format == sd.as_format(fmt, got.ndim), (got.format, fmt)
        dense = got.todense()
    else:
        assert fmt is None, f"expected a SparseTensor in {fmt}, got {type(got).__name__}"
        dense = got.toarray() if sp.issparse(got) else np.asarray(got)
    expected = ref.toarray() if sp.issparse(ref) else np.asarray(ref)
    assert dense.shape == expected.shape
    if dtype is not None:
        assert dense.dtype == np.dtype(dtype), (dense.dtype, dtype)
    if expected.dtype.kind == "f" or dense.dtype.kind == "f":
        tol = 1e-5 if np.float32 in (dense.dtype, expected.dtype) else 1e-12
        np.testing.assert_allclose(dense, expected, rtol=tol, atol=tol, equal_nan=True)
    else:
        np.testing.assert_array_equal(dense, expected)


# ---- matmul ---------------------------------------------------------------------------------


@SETTINGS
@given(matrices(), st.integers(1, 3))
def test_matmul_with_dense(SA, k):
    S, A = SA
    rng = np.random.default_rng(0)
    x = rng.standard_normal(S.shape[1])
    X = rng.standard_normal((S.shape[1], k))
    z = rng.standard_normal(S.shape[0])
    Z = rng.standard_normal((k, S.shape[0]))
    assert_eq(A @ x, S @ x, np.result_type(S.dtype, x.dtype))
    assert_eq(A @ X, S @ X)
    assert_eq(z @ A, z @ S)          # numpy defers to A.__rmatmul__
    assert_eq(Z @ A, Z @ S)


@SETTINGS
@given(st.data())
def test_matmul_sparse_sparse(data):
    m, k, n = (data.draw(st.integers(1, 10)) for _ in range(3))
    SA, A = data.draw(matrices((m, k)))
    SB, B = data.draw(matrices((k, n), formats=["csr", "csc"]))
    dtype = np.result_type(SA.dtype, SB.dtype)
    assert_eq(A @ B, SA.astype(dtype) @ SB.astype(dtype), dtype, fmt="csr")


def test_matmul_vectors_and_errors():
    S = scipy_matrix((5, 4), 0.5, np.float64, 1)
    A = sd.asformat(S, "csr")
    v = sd.asformat(np.array([1.0, 0, 2, 0]), "sparse")
    assert_eq(A @ v, S @ v.todense(), fmt="sparse")
    w = np.arange(4.0)
    assert A.T @ np.ones(5) @ w == pytest.approx(np.ones(5) @ S @ w)
    assert (v @ w) == pytest.approx(v.todense() @ w)
    with pytest.raises(ValueError, match="not aligned"):
        A @ np.ones(5)
    with pytest.raises(ValueError, match="scalar"):
        A @ 2
    assert_eq(A @ S.T, S @ S.T, fmt="csr")          # a scipy operand is converted
    assert_eq(A @ S.T.tocsc(), S @ S.T, fmt="csr")


def test_spmv_on_a_matrix_too_large_to_densify():
    n = 300_000  # dense, this is 720 GB
    A = sd.random((n, n), density=1 / n, seed=0)
    assert A.nnz == n
    x = np.random.default_rng(1).standard_normal(n)
    assert_eq(A @ x, A.to_scipy() @ x)
    assert_eq(x @ A, x @ A.to_scipy())


# ---- elementwise arithmetic -----------------------------------------------------------------


@SETTINGS
@given(st.data(), st.sampled_from(["+", "-", "*"]))
def test_sparse_op_sparse(data, op):
    shape = (data.draw(st.integers(1, 12)), data.draw(st.integers(1, 12)))
    SA, A = data.draw(matrices(shape))
    SB, B = data.draw(matrices(shape))
    ref = {"+": SA + SB, "-": SA - SB, "*": SA.multiply(SB)}[op]
    got = {"+": A + B, "-": A - B, "*": A * B}[op]
    dtype = np.result_type(SA.dtype, SB.dtype)
    assert_eq(got, ref, dtype, fmt="csr")
    if op == "*":  # the intersection: nothing stored where either side is absent
        assert got.nnz == SA.multiply(SB).nnz


@SETTINGS
@given(matrices(), st.sampled_from([2, -3, 0.5, np.float32(2)]))
def test_scalar_ops_keep_the_format(SA, c):
    S, A = SA
    D = S.toarray()
    assert_eq(A * c, S * c, (D * c).dtype, fmt=A.format)
    assert_eq(c * A, S * c, (c * D).dtype, fmt=A.format)
    assert_eq(A / c, S / c, (D / c).dtype, fmt=A.format)
    assert_eq(-A, -S, D.dtype, fmt=A.format)
    assert_eq(abs(A), abs(S), D.dtype, fmt=A.format)
    assert_eq(A + 0, S, D.dtype, fmt=A.format)
    assert_eq(0 - A, -S, D.dtype, fmt=A.format)


def test_scalar_dtype_follows_numpy():
    A = sd.asformat(scipy_matrix((4, 4), 0.5, np.float32, 0), "csr")
    assert (A * 2.0).dtype == np.float32          # a Python float does not widen float32 (NEP 50)
    assert (A * np.float64(2.0)).dtype == np.float64
    Ai = sd.asformat(scipy_matrix((4, 4), 0.5, np.int64, 0), "csr")
    assert (Ai / 2).dtype == np.float64 and (Ai * 2).dtype == np.int64
    Ab = Ai != 0
    assert Ab.dtype == np.bool_ and (Ab * 2).dtype == np.int64 and (-Ai).dtype == np.int64
    with pytest.raises(TypeError):
        _ = -Ab                                    # numpy refuses negating bools, so do we
    with pytest.raises(TypeError):
        _ = Ab - Ab


@SETTINGS
@given(matrices(formats=["csr", "coo", "bitmap"]), st.sampled_from(["full", "row", "col"]))
def test_sparse_op_dense(SA, how):
    S, A = SA
    D = S.toarray()
    rng = np.random.default_rng(1)
    X = {"full": rng.standard_normal(S.shape), "row": rng.standard_normal(S.shape[1]),
         "col": rng.standard_normal((S.shape[0], 1))}[how]
    assert_eq(A + X, D + X)
    assert_eq(X + A, X + D)
    assert_eq(A - X, D - X)
    assert_eq(X - A, X - D)
    assert_eq(A * X, S.multiply(X), fmt="csr")     # sparse * dense stays sparse (scipy)
    assert_eq(X * A, S.multiply(X), fmt="csr")
    with np.errstate(all="ignore"):
        assert_eq(A / X, D / X)
        Xz = np.where(rng.random(X.shape) < 0.3, 0.0, X)
        assert_eq(A / Xz, D / Xz)                  # 0/0 = nan where A is absent, as numpy
        assert_eq(Xz / A, Xz / D)


def test_scipy_operands_either_side():
    S1, S2 = scipy_matrix((6, 5), 0.4, np.float64, 1), scipy_matrix((6, 5), 0.4, np.float64, 2)
    A = sd.asformat(S1, "csc")
    for other in (S2, sp.csr_matrix(S2), S2.tocoo()):
        assert_eq(A + other, S1 + S2, fmt="csr")
        assert_eq(A - other, S1 - S2, fmt="csr")
        assert_eq(A * other, S1.multiply(S2), fmt="csr")
    assert_eq(S2 + A, S1 + S2, fmt="csr")          # scipy returns NotImplemented, A.__radd__ runs
    assert_eq(S2 - A, S2 - S1, fmt="csr")


def test_elementwise_errors():
    A = sd.asformat(scipy_matrix((3, 4), 0.5, np.float64, 0), "csr")
    B = sd.asformat(scipy_matrix((4, 3), 0.5, np.float64, 0), "csr")
    with pytest.raises(ValueError, match="shapes"):
        A + B
    with pytest.raises(ValueError, match="broadcast"):
        A * np.ones(3)
    with pytest.raises(NotImplementedError, match="todense"):
        A + 1                                      # scipy refuses it too: every entry would be stored
    with pytest.raises(TypeError, match="0/0"):
        A / A
    with pytest.raises(TypeError):
        A + "x"


def test_dense_format_tensors_act_as_arrays():
    D = np.arange(12.0).reshape(3, 4) - 5
    T = sd.asformat(D, "dense")
    for got, ref in [(T + T, D + D), (T * 2, D * 2), (T + 1, D + 1), (T - np.ones(4), D - 1), (-T, -D),
                     (abs(T), abs(D)), (T > 0, D > 0)]:
        assert isinstance(got, sd.SparseTensor) and got.format.is_dense
        assert_eq(got, ref)
    S = sd.asformat(sp.csr_array(D), "csr")
    assert_eq(S + T, D + D)
    assert_eq(T @ np.ones(4), D @ np.ones(4))
    assert T.sum() == D.sum() and T.max() == D.max()


def test_kernels_are_cached():
    A = sd.asformat(scipy_matrix((5, 5), 0.5, np.float64, 0), "csr")
    A + A
    n = len(array_ops._KERNELS)
    for _ in range(3):
        A + A
    A2 = sd.asformat(scipy_matrix((7, 3), 0.5, np.float64, 1), "csr")
    A2 + A2                                        # another shape: the same kernel
    assert len(array_ops._KERNELS) == n
    assert len(array_ops._KERNELS) <= array_ops.MAX_KERNELS


# ---- reductions -----------------------------------------------------------------------------


@SETTINGS
@given(matrices(dtypes=[np.float32, np.float64, np.int32, np.int64]))
def test_reductions(SA):
    S, A = SA
    D = S.toarray()
    assert_eq(A.sum(), S.sum(), D.sum().dtype)
    assert np.isscalar(A.sum()) and np.isscalar(A.max())
    for axis in (0, 1, -1):
        assert_eq(A.sum(axis=axis), S.sum(axis=axis), D.sum(axis=axis).dtype)
        assert_eq(A.max(axis=axis), S.max(axis=axis).toarray(), D.dtype)  # implicit zeros count
        assert_eq(A.min(axis=axis), S.min(axis=axis).toarray(), D.dtype)
    assert_eq(A.max(), S.max(), D.dtype)
    assert_eq(A.min(), S.min(), D.dtype)
    assert_eq(A.sum(axis=(0, 1)), S.sum())


def test_reduction_details():
    # row 0 full and negative, row 1 partly stored and negative, row 2 empty
    S = sp.csr_array(np.array([[-1.0, -2.0, -3.0], [-1.0, 0, -5.0], [0, 0, 0]]))
    S.eliminate_zeros()
    A = sd.asformat(S, "csr")
    np.testing.assert_array_equal(A.max(axis=1), [-1.0, 0.0, 0.0])   # scipy: absent entries are zeros
    np.testing.assert_array_equal(A.min(axis=1), [-3.0, -5.0, 0.0])
    np.testing.assert_array_equal(A.max(axis=1), S.max(axis=1).toarray())
    B = sd.asformat(S != 0, "csr")
    assert B.sum().dtype == np.int64 and B.sum() == 5                 # bools sum to int64, as numpy
    with pytest.raises(ValueError, match="zero-size"):
        sd.zeros((0, 3)).max(axis=0)
    with pytest.raises(np.exceptions.AxisError):
        A.sum(axis=2)
    v = sd.asformat(np.array([0.0, -2.0, 0.0, 3.0]), "sparse")
    assert v.sum() == 1.0 and v.max() == 3.0 and v.min() == -2.0


# ---- comparisons ----------------------------------------------------------------------------


@settings(SETTINGS, max_examples=15)
@given(st.data(), st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
def test_comparisons_sparse_sparse(data, op):
    shape = (data.draw(st.integers(1, 10)), data.draw(st.integers(1, 10)))
    SA, A = data.draw(matrices(shape, dtypes=[np.float64, np.int64]))
    SB, B = data.draw(matrices(shape, formats=["csr", "coo"], dtypes=[np.float64]))
    cmp = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
           "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}[op]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # scipy's SparseEfficiencyWarning for ==, <=, >=
        ref = cmp(SA, SB)
    got = cmp(A, B)
    assert_eq(got, ref, np.bool_, fmt="csr")
    assert got.nnz == ref.nnz                       # exactly the True entries, as scipy stores them


@SETTINGS
@given(matrices(dtypes=[np.float64, np.int64]), st.sampled_from([-1, 0, 2, 2.5]),
       st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
def test_comparisons_with_scalars_and_arrays(SA, c, op):
    S, A = SA
    D = S.toarray()
    cmp = {"==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
           ">=": np.greater_equal}[op]
    flipped = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}[op]
    pyop = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
    got = pyop[op](A, c)
    assert_eq(got, cmp(D, c), np.bool_, fmt="csr")
    assert got.nnz == np.count_nonzero(cmp(D, c))
    assert_eq(pyop[flipped](c, A), cmp(D, c), np.bool_, fmt="csr")
    X = np.random.default_rng(0).integers(-2, 3, size=S.shape).astype(float)
    assert_eq(pyop[op](A, X), cmp(D, X), np.bool_)       # a dense operand: a dense bool array
    assert_eq(pyop[op](X, A), cmp(X, D), np.bool_)


def test_equality_is_refused_when_it_would_store_everything():
    Z = sd.zeros((100_000, 100_000))
    with pytest.raises(sd.FormatError, match="!="):
        _ = Z == Z                                  # True at 10**10 absent positions
    assert (Z != Z).nnz == 0 and (Z > 0).nnz == 0  # their opposites stay sparse


# ---- conversions, protocol, repr ------------------------------------------------------------


def test_len_size_copy_todense():
    S = scipy_matrix((6, 5), 0.4, np.float64, 3)
    A = sd.asformat(S, "dcsr")
    assert len(A) == 6 == len(S.toarray())
    assert A.size == S.toarray().size == 30       # numpy's size (scipy.sparse's .size is nnz: A.nnz)
    np.testing.assert_array_equal(A.todense(), S.toarray())
    np.testing.assert_array_equal(A.toarray(), S.toarray())
    C = A.copy()
    assert C is not A and C.format == A.format
    C.values[...] = 7
    np.testing.assert_array_equal(A.todense(), S.toarray())  # the copy owns its arrays
    with pytest.raises(ValueError, match="ambiguous"):
        bool(A)
    assert bool(sd.asformat(sp.csr_array(np.array([[2.0]])), "csr"))


def test_array_refuses_large_tensors():
    Z = sd.zeros((100_000, 100_000))               # 10**10 entries: 80 GB dense, never allocated
    assert Z.size > AUTO_DENSIFY_LIMIT
    with pytest.raises(sd.FormatError, match=r"\.todense\(\)"):
        np.asarray(Z)
    with pytest.raises(ValueError):                # FormatError is a ValueError
        np.array(Z)
    y = np.ones(100_000) @ Z                       # numpy defers to Z.__rmatmul__: no densifying
    np.testing.assert_array_equal(y, np.zeros(100_000))
    assert_eq(Z @ np.ones(100_000), np.zeros(100_000))
    with pytest.raises(TypeError):
        np.add(np.ones(3), Z)                      # ufuncs are not taken implicitly
    S = scipy_matrix((6, 5), 0.4, np.float64, 3)
    np.testing.assert_array_equal(np.asarray(sd.asformat(S, "coo")), S.toarray())  # small: densified


def test_repr():
    S = sp.csr_array(np.array([[0, 2.5, 0], [0, 0, -1.0]]))
    r = repr(sd.asformat(S, "csr"))
    for part in ["shape=(2, 3)", "format=csr", "dtype=float64", "nnz=2", "density=0.333", "nbytes=", "B",
                 "(0, 1)  2.5", "(1, 2)  -1.0"]:
        assert part in r, (part, r)
    big = sd.random((1000, 1000), 0.01, seed=0)
    r = repr(big)
    assert "nnz=10000" in r and "density=0.01" in r and "KiB" in r and "\n" not in r


def test_repr_names_the_device(monkeypatch):
    Z = sd.random((1000, 1000), 0.01, seed=0)     # too many entries to list: no host copy needed
    monkeypatch.setattr(sd.SparseTensor, "device", property(lambda self: "cuda"))
    assert "device='cuda'" in repr(Z)


# ---- constructors ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dcsr", "bitmap", "dense"])
def test_eye_and_zeros_match_scipy(fmt):
    for n, m, k in [(4, None, 0), (3, 5, 1), (5, 3, -2), (3, 3, 5)]:
        E = sd.eye(n, m, k, format=fmt)
        assert E.format == sd.as_format(fmt, 2)
        assert_eq(E, sp.eye_array(n, m, k=k) if abs(k) < min(n, m or n) else np.eye(n, m, k), np.float64)
    assert_eq(sd.eye(3, dtype=np.int64, format=fmt), np.eye(3, dtype=np.int64), np.int64)
    Z = sd.zeros((4, 6), format=fmt, dtype=np.float32)
    assert_eq(Z, sp.csr_array((4, 6), dtype=np.float32), np.float32)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("density", [0.0, 0.05, 0.3, 0.75, 1.0])
def test_random_matches_scipy(fmt, density):
    shape = (23, 17)
    A = sd.random(shape, density, format=fmt, seed=5)
    ref = sp.random_array(shape, density=density, rng=0)
    assert A.format == sd.as_format(fmt, 2) and A.shape == shape and A.dtype == np.float64
    assert A.nnz == ref.nnz == round(density * math.prod(shape))   # exact, distinct positions
    vals = A.todense()[A.todense() != 0]
    assert ((vals > 0) & (vals < 1)).all()
    B = sd.random(shape, density, format=fmt, seed=5)
    np.testing.assert_array_equal(A.todense(), B.todense())       # a seed fixes the tensor


def test_random_options():
    assert sd.random((50, 40), 0.1, dtype=np.float32, seed=0).dtype == np.float32
    Ai = sd.random((50, 40), 0.1, dtype=np.int64, seed=0)
    assert Ai.dtype == np.int64 and Ai.nnz == 200
    assert sd.random(100, 0.2, seed=1).shape == (100,)
    big = sd.random((10**6, 10**6), 1e-7, seed=2)                 # 10**12 positions, 10**5 entries
    assert big.nnz == 100_000
    assert len(np.unique(big.to_scipy().tocoo().coords[0] * 10**6 + big.to_scipy().tocoo().coords[1])) == 100_000
    with pytest.raises(sd.FormatError, match="density"):
        sd.random((3, 3), 1.5)
    with pytest.raises(sd.FormatError, match="shape"):
        sd.zeros((3, -1))
    with pytest.raises(sd.FormatError, match="dtype"):
        sd.eye(3, dtype=np.complex128)


# ---- I/O ------------------------------------------------------------------------------------


def test_matrix_market_round_trip(tmp_path):
    S = scipy_matrix((9, 7), 0.3, np.float64, 4)
    path = tmp_path / "a.mtx"
    sd.io.mmwrite(path, sd.asformat(S, "dcsr"))
    assert_eq(sp.csr_array(scipy.io.mmread(path)), S)             # scipy reads what we wrote
    scipy.io.mmwrite(tmp_path / "b.mtx", S)
    A = sd.io.mmread(tmp_path / "b.mtx")                          # we read what scipy wrote
    assert_eq(A, S, np.float64, fmt="csr")
    Si = scipy_matrix((5, 5), 0.4, np.int64, 1)
    sd.io.mmwrite(tmp_path / "i.mtx", Si)
    assert_eq(sd.io.mmread(tmp_path / "i.mtx", format="coo"), Si, np.int64, fmt="coo")


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dcsr", "bitmap", "bsr(2,2)", "nm(2,4)", "dense",
                                 "(i, j) -> (j: compressed, i: compressed)"])
def test_npz_round_trip_keeps_the_storage(tmp_path, fmt):
    S = scipy_matrix((6, 8), 0.3, np.float32, 2)
    A = sd.prune.nm(S.toarray(), 2, 4) if fmt == "nm(2,4)" else sd.asformat(S, fmt)
    sd.io.save_npz(tmp_path / "a.npz", A)
    B = sd.io.load_npz(tmp_path / "a.npz")
    assert B.format == A.format and str(B.format) == str(A.format) and B.shape == A.shape
    assert B.values.dtype == A.values.dtype
    for la, lb in zip(A.levels, B.levels):
        assert la.keys() == lb.keys()
        for key in la:
            assert la[key].dtype == lb[key].dtype
            np.testing.assert_array_equal(la[key], lb[key])
    np.testing.assert_array_equal(B.todense(), A.todense())


def test_npz_reads_scipy_files_and_validates(tmp_path):
    S = scipy_matrix((6, 8), 0.3, np.float64, 2)
    sp.save_npz(tmp_path / "s.npz", S)
    assert_eq(sd.io.load_npz(tmp_path / "s.npz"), S, fmt="csr")
    A = sd.asformat(S, "csr")
    bad = {"sparsedsl_npz": np.array(1), "format": np.array("csr"), "shape": np.array([6, 8]),
           "values": A.values, "level1_pos": A.levels[1]["pos"], "level1_crd": A.levels[1]["crd"] + 100}
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(sd.FormatError, match="level 1"):
        sd.io.load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.ones(3))
    with pytest.raises(sd.FormatError, match="save_npz"):
        sd.io.load_npz(tmp_path / "other.npz")

"""sparsedsl.prune against brute-force numpy references (a stable sort per row / group / block list):
format, exact kept count, largest magnitudes kept, values unchanged, ties to the lowest index."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsedsl as sd
from sparsedsl.tensor import SparseTensor

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FLOATS = [np.float32, np.float64]


def make(seed, shape, dtype, ties):
    """Random values; with ``ties`` small integers, so equal magnitudes are common."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-3, 4, size=shape) if ties else rng.standard_normal(shape)
    return a.astype(dtype)


def support(t: SparseTensor) -> np.ndarray:
    """Boolean mask of the stored positions (explicit zeros included), each stored once."""
    coords, _ = t.coordinates()
    mask = np.zeros(t.shape, dtype=bool)
    mask[tuple(coords)] = True
    assert mask.sum() == coords.shape[1], "a position is stored twice"
    return mask


def stable_top(mag_rows: np.ndarray, k: int) -> np.ndarray:
    """Reference: per row, the first k of a stable descending sort (ties: lowest index)."""
    order = np.argsort(-mag_rows, axis=1, kind="stable")[:, :k]
    mask = np.zeros(mag_rows.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def check_result(t, x, fmt, ref_mask):
    """Format, re-validation, support equal to the reference, values equal to x where kept."""
    assert isinstance(t, SparseTensor) and t.format == sd.as_format(fmt, x.ndim)
    SparseTensor(t.format, t.shape, t.levels, t.values)  # validates the level arrays again
    mask = support(t)
    np.testing.assert_array_equal(mask, ref_mask)
    assert t.nnz == ref_mask.sum()  # kept zeros are stored too: the count is exact
    assert t.dtype == x.dtype and t.shape == x.shape
    np.testing.assert_array_equal(t.to_numpy(), np.where(mask, x, 0))
    coords, vals = t.coordinates()
    np.testing.assert_array_equal(vals, x[tuple(coords)])
    return mask


def assert_largest(mag_rows, mask_rows):
    """Every kept |value| >= every dropped |value| in the same row."""
    kept_min = np.where(mask_rows, mag_rows, np.inf).min(axis=1)
    dropped_max = np.where(mask_rows, -np.inf, mag_rows).max(axis=1)
    assert np.all(kept_min >= dropped_max)


# ---- magnitude ----------------------------------------------------------------------------------


@st.composite
def magnitude_cases(draw):
    ndim = draw(st.sampled_from([1, 2, 2, 3]))
    shape = tuple(draw(st.integers(1, 9)) for _ in range(ndim))
    fmts = {1: ["sparse", "coo", "bitmap"], 2: ["csr", "csc", "coo", "dcsr", "bitmap"], 3: ["coo", "csf"]}[ndim]
    per = draw(st.sampled_from(["global", "row", "column", 0, -1] if ndim > 1 else ["global", "row", 0]))
    how = draw(st.sampled_from(["density", "sparsity", "k"]))
    amount = draw(st.floats(0, 1)) if how != "k" else None
    return dict(shape=shape, dtype=draw(st.sampled_from(FLOATS)), ties=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31)), fmt=draw(st.sampled_from([None, *fmts])), per=per, how=how,
                amount=amount, kfrac=draw(st.floats(0, 1)))


@SETTINGS
@given(magnitude_cases())
def test_magnitude_matches_stable_sort(case):
    x = make(case["seed"], case["shape"], case["dtype"], case["ties"])
    axis = {"global": None, "row": -1, "column": -2}.get(case["per"], case["per"])
    rows = np.abs(x).reshape(1, -1) if axis is None else np.moveaxis(np.abs(x), axis, -1).reshape(-1, x.shape[axis])
    length = rows.shape[1]
    if case["how"] == "k":
        kw, k = {"k": int(case["kfrac"] * length)}, int(case["kfrac"] * length)
    else:
        kw = {case["how"]: case["amount"]}
        k = round((case["amount"] if case["how"] == "density" else 1 - case["amount"]) * length)
    t = sd.prune.magnitude(x, per=case["per"], format=case["fmt"], **kw)
    ref_rows = stable_top(rows, k)
    ref = ref_rows.reshape(x.shape) if axis is None else \
        np.moveaxis(ref_rows.reshape(np.moveaxis(x, axis, -1).shape), -1, axis)
    fmt = case["fmt"] or {1: "sparse", 2: "csr"}.get(x.ndim, "coo")
    mask = check_result(t, x, fmt, ref)
    assert mask.sum() == k * rows.shape[0]  # exact count per slice
    got_rows = mask.reshape(1, -1) if axis is None else np.moveaxis(mask, axis, -1).reshape(rows.shape)
    assert_largest(rows, got_rows)


def test_magnitude_rounding_and_inputs():
    x = np.array([[5.0, -1.0, 3.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    # round(0.5 * 5) = 2 (ties to even); ties keep the lowest column
    t = sd.prune.magnitude(x, density=0.5, per="row")
    np.testing.assert_array_equal(t.to_numpy(), [[5, 0, 3, 0, 0], [1, 1, 0, 0, 0]])
    assert sd.prune.magnitude(x, sparsity=0.5, per="row").nnz == 4
    # a kept zero is stored explicitly, so the count is exact
    z = sd.prune.magnitude(np.zeros((2, 3)), k=2, per="row")
    assert z.nnz == 4 and not z.to_numpy().any()
    # scipy.sparse and SparseTensor inputs read as their dense values
    for src in (sp.csr_matrix(x), sd.asformat(x, "coo")):
        np.testing.assert_array_equal(sd.prune.magnitude(src, k=3).to_numpy(), sd.prune.magnitude(x, k=3).to_numpy())


# ---- N:M ----------------------------------------------------------------------------------------


@st.composite
def nm_cases(draw):
    m = draw(st.sampled_from([2, 4, 8]))
    n = draw(st.integers(1, m))
    ndim = draw(st.sampled_from([2, 2, 3]))
    axis = draw(st.integers(-ndim, ndim - 1))
    shape = [draw(st.integers(1, 6)) for _ in range(ndim)]
    shape[axis] = m * draw(st.integers(1, 4))
    return dict(n=n, m=m, axis=axis, shape=tuple(shape), dtype=draw(st.sampled_from(FLOATS)),
                ties=draw(st.booleans()), seed=draw(st.integers(0, 2**31)))


@SETTINGS
@given(nm_cases())
def test_nm_matches_per_group_sort(case):
    n, m, axis = case["n"], case["m"], case["axis"]
    x = make(case["seed"], case["shape"], case["dtype"], case["ties"])
    t = sd.prune.nm(x, n, m, axis=axis)
    moved = np.moveaxis(np.abs(x), axis, -1)
    groups = moved.reshape(-1, m)
    ref = np.moveaxis(stable_top(groups, n).reshape(moved.shape), -1, axis)
    mask = check_result(t, x, f"nm({n},{m},axis={axis % x.ndim})", ref)
    got = np.moveaxis(mask, axis, -1).reshape(-1, m)
    assert np.all(got.sum(axis=1) == n)  # n kept in every group (<= n is what the format allows)
    assert_largest(groups, got)
    if x.ndim == 2 and axis in (1, -1):
        assert t.format == sd.as_format("nm(2,4)".replace("2,4", f"{n},{m}"))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n, m, axis", [(2, 4, -1), (1, 4, 1), (2, 4, 0)])
def test_nm_result_runs_in_compiled_spmv(dtype, n, m, axis):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((12, 16)).astype(dtype)
    x = rng.standard_normal(16).astype(dtype)
    pruned = sd.prune.nm(w, n, m, axis=axis)
    y = sd.compute("y[i] = W[i,j] * x[j]", W=pruned, x=x)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, pruned.to_numpy() @ x, rtol=tol, atol=tol)


def test_nm_other_format():
    x = make(3, (4, 8), np.float64, ties=True)
    t = sd.prune.nm(x, 2, 4, format="csr")
    assert t.format == sd.as_format("csr") and t.nnz == 16
    np.testing.assert_array_equal(t.to_numpy(), sd.prune.nm(x, 2, 4).to_numpy())


# ---- block --------------------------------------------------------------------------------------


def block_norms(x, r, c, norm):
    """Reference: loop over the tiles in row-major order."""
    out = []
    for bi in range(x.shape[0] // r):
        for bj in range(x.shape[1] // c):
            tile = np.abs(x[bi * r:(bi + 1) * r, bj * c:(bj + 1) * c]).astype(np.float64)
            out.append({"fro": np.linalg.norm(tile), "l1": tile.sum(), "max": tile.max()}[norm])
    return np.array(out)


@SETTINGS
@given(r=st.integers(1, 4), c=st.integers(1, 4), R=st.integers(1, 5), C=st.integers(1, 5),
       norm=st.sampled_from(["fro", "l1", "max"]), density=st.floats(0, 1), dtype=st.sampled_from(FLOATS),
       ties=st.booleans(), seed=st.integers(0, 2**31), fmt=st.sampled_from([None, "csr", "coo"]))
def test_block_keeps_largest_tiles(r, c, R, C, norm, density, dtype, ties, seed, fmt):
    x = make(seed, (R * r, C * c), dtype, ties)
    t = sd.prune.block(x, (r, c), density=density, norm=norm, format=fmt)
    norms = block_norms(x, r, c, norm)
    keep = round(density * R * C)
    chosen = stable_top(norms[None, :], keep).reshape(R, C)
    ref = np.kron(chosen, np.ones((r, c), dtype=bool)).astype(bool)
    mask = check_result(t, x, fmt or f"bsr({r},{c})", ref)
    tiles = mask.reshape(R, r, C, c)
    assert np.all(tiles.all(axis=(1, 3)) == tiles.any(axis=(1, 3)))  # whole tiles only
    kept = tiles.all(axis=(1, 3)).reshape(1, -1)
    assert kept.sum() == keep
    assert_largest(norms[None, :], kept)


# ---- random -------------------------------------------------------------------------------------


@SETTINGS
@given(shape=st.lists(st.integers(0, 8), min_size=1, max_size=3).map(tuple), density=st.floats(0, 1),
       seed=st.integers(0, 2**31), dtype=st.sampled_from(FLOATS), from_array=st.booleans())
def test_random_support(shape, density, seed, dtype, from_array):
    x = make(seed, shape, dtype, ties=False)
    src = x if from_array else shape
    t = sd.prune.random(src, density=density, seed=seed, dtype=None if from_array else dtype)
    count = round(density * x.size)
    assert t.format == sd.as_format({1: "sparse", 2: "csr"}.get(len(shape), "coo"), len(shape))
    assert t.shape == shape and t.dtype == dtype and t.nnz == count
    mask = support(t)
    assert mask.sum() == count
    again = sd.prune.random(src, density=density, seed=np.random.default_rng(seed),
                            dtype=None if from_array else dtype)
    np.testing.assert_array_equal(support(again), mask)  # same seed (or a Generator from it): same support
    np.testing.assert_array_equal(again.to_numpy(), t.to_numpy())
    if from_array:
        np.testing.assert_array_equal(t.to_numpy(), np.where(mask, x, 0))


def test_random_is_uniform():
    freq = np.mean([support(sd.prune.random((6, 5), density=0.3, seed=s)) for s in range(600)], axis=0)
    assert np.all(np.abs(freq - 0.3) < 0.1), freq  # 0.1 is ~5 standard deviations
    a, b = (support(sd.prune.random((20, 20), density=0.5, seed=s)) for s in (1, 2))
    assert not np.array_equal(a, b)
    vals = sd.prune.random((200, 50), density=0.5, seed=0).values
    assert abs(vals.mean()) < 0.05 and abs(vals.std() - 1) < 0.05  # N(0, 1)


# ---- errors -------------------------------------------------------------------------------------

X = np.arange(48.0).reshape(6, 8)
ERRORS = [
    (lambda: sd.prune.magnitude(X, density=1.5), r"density must be a number in \[0, 1\], got 1.5"),
    (lambda: sd.prune.magnitude(X, sparsity=-0.1), r"sparsity must be a number in \[0, 1\]"),
    (lambda: sd.prune.magnitude(X, sparsity=0.5, density=0.5), r"exactly one of .*got sparsity, density"),
    (lambda: sd.prune.magnitude(X), r"exactly one of .*got none"),
    (lambda: sd.prune.magnitude(X, k=9, per="row"), r"k must be an int in \[0, 8\]"),
    (lambda: sd.prune.magnitude(X, k=1.5), r"k must be an int"),
    (lambda: sd.prune.magnitude(X, k=1, per="rows"), r"'per' parameter must be 'global', 'row'"),
    (lambda: sd.prune.magnitude(X, k=1, per=2), r"'per' parameter must be an axis int in \[-2, 2\)"),
    (lambda: sd.prune.magnitude(np.arange(4.0), k=1, per="column"), r"'per' parameter .*1-D"),
    (lambda: sd.prune.magnitude(np.float64(3.0), k=1), r"at least 1 dimension"),
    (lambda: sd.prune.magnitude(np.array([1.0, np.nan]), k=1), r"NaN.*nan_to_num"),
    (lambda: sd.prune.magnitude(X, k=1, format="nonsense"), r"unknown format"),
    (lambda: sd.prune.nm(X, 5, 4), r"1 <= n <= m; got n=5, m=4"),
    (lambda: sd.prune.nm(X, 0, 4), r"1 <= n <= m"),
    (lambda: sd.prune.nm(X, 2, 4, axis=0), r"axis 0 \(6\) to be a multiple of 4; pad x with zeros to 8"),
    (lambda: sd.prune.nm(X, 2, 4, axis=2), r"'axis' parameter must be an axis int"),
    (lambda: sd.prune.block(X[None], (2, 2), k=1), r"prunes a matrix.*Reshape it to 2-D"),
    (lambda: sd.prune.block(X, (4, 4), k=1), r"'block_shape' .*dividing the shape \(6, 8\); got \(4, 4\)"),
    (lambda: sd.prune.block(X, (0, 2), k=1), r"'block_shape'"),
    (lambda: sd.prune.block(X, (2, 2), k=1, norm="l2"), r"'norm' parameter .*fro, l1, max; got 'l2'"),
    (lambda: sd.prune.block(X, (2, 2), k=13), r"k must be an int in \[0, 12\]"),
    (lambda: sd.prune.random((3, -1), density=0.5), r"shape of non-negative ints"),
    (lambda: sd.prune.random(X, density=2), r"density must be a number in \[0, 1\]"),
]


@pytest.mark.parametrize("call, message", ERRORS)
def test_bad_arguments_say_what_to_do(call, message):
    with pytest.raises(sd.FormatError, match=message) as info:
        call()
    assert isinstance(info.value, ValueError)

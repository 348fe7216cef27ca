"""sparsedsl.stdlib.wht against peers: fwht against scipy.linalg.hadamard, spright against the spectrum a
signal was built from (x[m] = Σ_k X[k] (-1)^popcount(k & m), evaluated directly)."""

import importlib.util
import warnings

import numpy as np
import pytest
import scipy.linalg as sl
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsedsl.stdlib.wht import fwht, spright

HAVE_GPU = importlib.util.find_spec("cupy") is not None and __import__("cupy").is_available()


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 9), batch=st.lists(st.integers(1, 3), max_size=2), axis_pos=st.integers(0, 2),
       seed=st.integers(0, 2**16))
def test_fwht_is_the_hadamard_matrix_product(n, batch, axis_pos, seed):
    shape = list(batch)
    axis = min(axis_pos, len(shape))
    shape.insert(axis, 1 << n)
    x = np.random.default_rng(seed).standard_normal(shape)
    expected = np.moveaxis(np.tensordot(sl.hadamard(1 << n), np.moveaxis(x, axis, 0), axes=1), 0, axis)
    np.testing.assert_allclose(fwht(x, axis=axis), expected, rtol=1e-10, atol=1e-9)


def test_fwht_dtypes_and_inverse():
    x = np.arange(32) - 7
    y = fwht(x)
    assert y.dtype == np.int64 and np.array_equal(y, sl.hadamard(32) @ x)  # integers exactly
    f = np.random.default_rng(1).standard_normal(64).astype(np.float32)
    assert fwht(f).dtype == np.float32
    np.testing.assert_allclose(fwht(f), sl.hadamard(64) @ f, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fwht(fwht(f.astype(np.float64))) / 64, f, rtol=1e-12, atol=1e-5)  # H H = N I
    z = f.astype(np.float64) + 1j * f[::-1]
    np.testing.assert_allclose(fwht(z), sl.hadamard(64) @ z, atol=1e-9)


def test_fwht_large_length_against_the_butterfly_definition():
    n = 16  # four 16x16 factors (n = 17..20 compile a five-factor kernel: 15 s on a cold cache)
    x = np.random.default_rng(2).standard_normal(1 << n)
    y = x.copy()
    for s in range(n):  # a plain radix-2 butterfly as the peer
        v = y.reshape(-1, 2, 1 << s)
        y = np.stack([v[:, 0] + v[:, 1], v[:, 0] - v[:, 1]], axis=1).reshape(-1)
    np.testing.assert_allclose(fwht(x), y, rtol=1e-9, atol=1e-8)


def test_fwht_rejects_bad_input():
    with pytest.raises(ValueError, match="power of two.*got 12"):
        fwht(np.ones(12))
    with pytest.raises(ValueError, match="'axis'.*got 2"):
        fwht(np.ones((4, 4)), axis=2)
    with pytest.raises(ValueError, match="0-d"):
        fwht(np.float64(1.0))


def _signal(n, K, rng, snr_db=None):
    N = 1 << n
    support = np.sort(rng.choice(N, K, replace=False))
    X = rng.choice([-1.0, 1.0], K) * rng.uniform(1.0, 2.0, K)
    m = np.arange(N)
    x = np.zeros(N)
    for k, v in zip(support, X):  # the closed form, independent of fwht
        x += v * (1.0 - 2.0 * (np.bitwise_count(m & k) & 1))
    if snr_db is not None:
        x += rng.standard_normal(N) * np.sqrt(np.sum(X ** 2) / 10 ** (snr_db / 10))
    return x, support, X


def test_spright_noiseless_recovers_the_spectrum_exactly():
    rng = np.random.default_rng(3)
    x, support, X = _signal(16, 12, rng)
    asked = []
    res = spright(lambda idx: (asked.append(len(idx)), x[idx])[1], 16, 12, random_state=0)
    idx, val = res
    assert np.array_equal(idx, support)
    np.testing.assert_allclose(val, X, rtol=1e-9)
    assert res.n_samples == sum(asked) < (1 << 16) // 4 and res.converged and res.time_s > 0


@pytest.mark.parametrize("n,K", [(10, 16), (14, 4), (16, 64), (18, 16)])
def test_spright_recovers_the_support_at_snr_10db(n, K):
    """The paper's claim at small scale: exact support recovery with high probability under noise, with
    O(K log N) samples (the ratio printed by the benchmark for every N)."""
    ok = 0
    for trial in range(10):
        x, support, X = _signal(n, K, np.random.default_rng(100 * n + trial), snr_db=10)
        res = spright(x, n, K, snr_db=10, random_state=trial)
        ok += np.array_equal(res.indices, support)
        assert res.n_samples <= 40 * K * n or res.n_samples == 1 << n
    assert ok >= 9


def test_spright_sample_count_grows_like_k_log_n():
    ratios = []
    for n in (12, 16, 20):
        x_at = lambda idx: np.ones(len(idx))  # content does not matter for the count
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ratios.append(spright(x_at, n, 16, random_state=0).n_samples / (16 * n))
    assert max(ratios) < 20 and max(ratios) / min(ratios) < 1.5


def test_spright_warns_naming_the_knob_when_the_spectrum_is_denser_than_k():
    x, _, _ = _signal(14, 200, np.random.default_rng(4))
    with pytest.warns(RuntimeWarning, match="'K'"):
        spright(x, 14, 4, random_state=0)


def test_spright_rejects_bad_parameters():
    x = np.zeros(1024)
    with pytest.raises(ValueError, match="'K'.*got 0"):
        spright(x, 10, 0)
    with pytest.raises(ValueError, match="'n_bins'.*power of two.*got 12"):
        spright(x, 10, 4, n_bins=12)
    with pytest.raises(ValueError, match="'sample'.*length 2\\*\\*n = 2048"):
        spright(x, 11, 4)
    with pytest.raises(ValueError, match="not both"):
        spright(x, 10, 4, snr_db=10, noise_var=1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU, reason="needs cupy and an NVIDIA GPU")
def test_fwht_on_the_gpu_equals_the_cpu():
    import cupy

    for shape, axis in [((1 << 20,), -1), ((64, 1 << 12), -1), ((1 << 10, 7), 0)]:
        x = np.random.default_rng(5).standard_normal(shape)
        for dtype in (np.float64, np.float32):
            got = fwht(cupy.asarray(x.astype(dtype)), axis=axis)
            assert isinstance(got, cupy.ndarray) and got.dtype == dtype
            np.testing.assert_allclose(got.get(), fwht(x.astype(dtype), axis=axis),
                                       rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-3)

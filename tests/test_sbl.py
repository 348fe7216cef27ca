"""sparsedsl.stdlib.sbl against closed forms (the EM posterior written out in numpy on the materialised
dictionary) and the papers' claims at small scale (recovery NMSE, a cost that never increases, Kronecker
structure helping on Kronecker-supported data)."""

import importlib.util
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.stdlib.sbl import kron_sbl, sbl

HAVE_GPU = importlib.util.find_spec("cupy") is not None and __import__("cupy").is_available()


def _nmse_db(estimate, truth):
    return 10 * np.log10(np.sum((estimate - truth) ** 2) / np.sum(truth ** 2))


def _posterior(Phi, y, gamma, sigma2):
    """The SBL E-step in numpy: μ = ΓΦᵀΣ_y⁻¹y, diag Σ = diag((ΦᵀΦ/σ² + Γ⁻¹)⁻¹) (the n×n form)."""
    cov = np.linalg.inv(Phi.T @ Phi / sigma2 + np.diag(1.0 / gamma))
    return cov @ Phi.T @ y / sigma2, np.diag(cov)


def _problem(rng, m=80, n=256, k=10, snr_db=20):
    Phi = rng.standard_normal((m, n)) / np.sqrt(m)
    x = np.zeros(n)
    x[rng.choice(n, k, replace=False)] = rng.standard_normal(k)
    clean = Phi @ x
    return Phi, clean + rng.standard_normal(m) * np.sqrt(np.mean(clean ** 2) / 10 ** (snr_db / 10)), x


def test_sbl_recovers_a_10_sparse_vector_at_20db_with_a_nonincreasing_cost():
    """Issue 16's line: n = 256, m = 80, 10-sparse, SNR 20 dB: NMSE <= -15 dB; EM never increases the cost."""
    Phi, y, x = _problem(np.random.default_rng(0))
    res = sbl(Phi, y, max_iter=400, tol=1e-5)
    assert _nmse_db(res.mean, x) <= -15
    h = res.history
    assert np.all(np.diff(h) <= 1e-9 * np.abs(h[:-1]))
    mean, cov_diag, gamma, noise_var = res
    assert mean is res.mean and gamma.shape == (256,) and noise_var > 0 and np.all(cov_diag >= -1e-12)


@pytest.mark.parametrize("kind", ["dense", "csr", "lowrank", "kron"])
def test_sbl_e_step_matches_the_closed_form_for_any_dictionary(kind):
    rng = np.random.default_rng(1)
    if kind == "kron":  # plain SBL on a Kronecker dictionary: unstructured gamma, Phi still not formed
        P1, P2 = rng.standard_normal((6, 10)), rng.standard_normal((5, 5))
        Phi, dense = sd.kron(P1, P2), np.kron(P1, P2)
    elif kind == "lowrank":
        U, V = rng.standard_normal((30, 5)), rng.standard_normal((50, 5))
        Phi, dense = sd.lowrank(U, V), U @ V.T
    else:
        dense = sp.random(30, 50, density=0.3, random_state=2).toarray() + 0.0
        Phi = dense if kind == "dense" else sd.asformat(sp.csr_matrix(dense), "csr")
    y = rng.standard_normal(30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one iteration does not converge
        res = sbl(Phi, y, max_iter=1, noise_var=0.3)
    mu, cov = _posterior(dense, y, np.ones(50), 0.3)  # the first E-step runs at gamma = 1
    np.testing.assert_allclose(res.mean, mu, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.cov_diag, cov, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.gamma, mu ** 2 + cov, rtol=1e-8, atol=1e-10)  # the M-step


def test_kron_sbl_e_step_matches_the_closed_form_on_the_materialised_dictionary():
    rng = np.random.default_rng(3)
    P1, P2, P3 = rng.standard_normal((4, 6)), rng.standard_normal((3, 5)), rng.standard_normal((2, 3))
    y = rng.standard_normal(24)
    for factors in ([P1, P2], [P1, P2, P3]):
        Phi = sd.kron(*factors)
        dense = factors[0]
        for f in factors[1:]:
            dense = np.kron(dense, f)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = kron_sbl(Phi, y[:dense.shape[0]], max_iter=1, noise_var=0.5)
        mu, cov = _posterior(dense, y[:dense.shape[0]], np.ones(dense.shape[1]), 0.5)
        np.testing.assert_allclose(res.mean, mu, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(res.cov_diag, cov, rtol=1e-8, atol=1e-10)


def _kron_problem(rng, m=12, n=24, k=3, snr_db=20):
    P1, P2 = rng.standard_normal((m, n)) / np.sqrt(m), rng.standard_normal((m, n)) / np.sqrt(m)
    X = np.zeros((n, n))
    X[np.ix_(rng.choice(n, k, replace=False), rng.choice(n, k, replace=False))] = rng.standard_normal((k, k))
    clean = (P1 @ X @ P2.T).ravel()
    y = clean + rng.standard_normal(clean.size) * np.sqrt(np.mean(clean ** 2) / 10 ** (snr_db / 10))
    return P1, P2, y, X.ravel()


def test_kron_sbl_am_cost_never_increases_and_beats_plain_sbl_on_kronecker_support():
    """The paper's claim at small scale (the benchmark runs issue 16's 32x64 factors)."""
    rng = np.random.default_rng(4)
    wins = 0
    for _ in range(3):
        P1, P2, y, x = _kron_problem(rng, m=8, n=16, k=2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            am = kron_sbl(sd.kron(P1, P2), y, method="am", max_iter=100, tol=1e-5)
            plain = sbl(np.kron(P1, P2), y, max_iter=100, tol=1e-5)
        h = am.history
        assert np.all(np.diff(h) <= 1e-9 * np.abs(h[:-1]))
        wins += _nmse_db(am.mean, x) < _nmse_db(plain.mean, x)
    assert wins >= 2


def test_kron_sbl_svd_variant_recovers_the_support():
    P1, P2, y, x = _kron_problem(np.random.default_rng(5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = kron_sbl(sd.kron(P1, P2), y, method="svd", max_iter=150, tol=1e-5)
    assert _nmse_db(res.mean, x) <= -15
    assert np.allclose(res.gamma, np.kron(*res.gammas))


def test_kron_sbl_block_sparsity_ties_gamma_within_blocks():
    rng = np.random.default_rng(6)
    P1, P2 = rng.standard_normal((12, 24)) / np.sqrt(12), rng.standard_normal((12, 24)) / np.sqrt(12)
    X = np.zeros((24, 24))
    X[8:12, 16:20] = rng.standard_normal((4, 4))  # one 4x4 block: block-sparse in both factors
    y = (P1 @ X @ P2.T).ravel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = kron_sbl(sd.kron(P1, P2), y, block_sizes=(4, 4), max_iter=100, noise_var=1e-4)
    for g in res.gammas:
        assert np.allclose(g.reshape(-1, 4), g.reshape(-1, 4)[:, :1])
    assert _nmse_db(res.mean, X.ravel()) <= -15


def test_sbl_warns_naming_max_iter_and_validates_parameters():
    Phi, y, _ = _problem(np.random.default_rng(7), m=20, n=40, k=2)
    with pytest.warns(RuntimeWarning, match="'max_iter'"):
        sbl(Phi, y, max_iter=2)
    with pytest.raises(ValueError, match="'max_iter'.*got 0"):
        sbl(Phi, y, max_iter=0)
    with pytest.raises(ValueError, match="'noise_var'.*got -1"):
        sbl(Phi, y, noise_var=-1)
    with pytest.raises(ValueError, match="'y'.*length 20.*got shape \\(19,\\)"):
        sbl(Phi, y[:-1])
    with pytest.raises(ValueError, match="'Phi'.*sd.kron"):
        kron_sbl(Phi, y)
    with pytest.raises(ValueError, match="'method'.*got 'eig'"):
        kron_sbl(sd.kron(Phi[:4, :5], Phi[:5, :8]), y, method="eig")
    with pytest.raises(ValueError, match="'block_sizes'.*got \\(3, 3\\)"):
        kron_sbl(sd.kron(Phi[:4, :5], Phi[:5, :8]), y, block_sizes=(3, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU, reason="needs cupy and an NVIDIA GPU")
def test_sbl_on_the_gpu_equals_the_cpu():
    import cupy

    Phi, y, _ = _problem(np.random.default_rng(8), m=40, n=96, k=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cpu = sbl(Phi, y, max_iter=20, noise_var=1e-3)
        gpu = sbl(cupy.asarray(Phi), cupy.asarray(y), max_iter=20, noise_var=1e-3)
    assert isinstance(gpu.mean, cupy.ndarray)
    np.testing.assert_allclose(gpu.mean.get(), cpu.mean, rtol=1e-6, atol=1e-8)

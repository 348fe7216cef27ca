"""sparsedsl.stdlib.turbo_vbi: the chain's messages against brute-force enumeration, the VBI posterior
against its closed form in numpy, and the paper's claim that a clustered-support prior recovers
block-sparse signals better than an independent one (plain SBL)."""

import importlib.util
import itertools
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.stdlib.sbl import sbl
from sparsedsl.stdlib.turbo_vbi import _chain_messages, turbo_vbi


def _nmse_db(estimate, truth):
    return 10 * np.log10(np.sum((estimate - truth) ** 2) / np.sum(truth ** 2))


def _clustered(seed, n=256, m=64, blocks=3, length=8, snr_db=20):
    rng = np.random.default_rng(seed)
    Phi = rng.standard_normal((m, n)) / np.sqrt(m)
    x = np.zeros(n)
    for start in rng.choice(n // 16, blocks, replace=False) * 16 + rng.integers(0, 8, blocks):
        x[start:start + length] = rng.standard_normal(length)
    clean = Phi @ x
    return Phi, clean + rng.standard_normal(m) * np.sqrt(np.mean(clean ** 2) / 10 ** (snr_db / 10)), x


def test_chain_messages_equal_brute_force_enumeration():
    rng = np.random.default_rng(0)
    n, p01, p10, start = 6, 0.2, 0.3, 0.4
    log_ev = rng.normal(0, 1.5, n)
    states = np.array(list(itertools.product([0, 1], repeat=n)))
    prior = np.where(states[:, 0] == 1, start, 1 - start)
    T = np.array([[1 - p01, p01], [p10, 1 - p10]])
    for j in range(1, n):
        prior = prior * T[states[:, j - 1], states[:, j]]
    weight = prior * np.exp(states @ log_ev)
    post_ref = (weight[:, None] * states).sum(0) / weight.sum()
    extr, post, counts = _chain_messages(log_ev, p01, p10, start)
    np.testing.assert_allclose(post, post_ref, rtol=1e-10)
    # Extrinsic: the same enumeration without state j's own evidence.
    for j in range(n):
        w = weight * np.exp(-states[:, j] * log_ev[j])
        assert extr[j] == pytest.approx((w * states[:, j]).sum() / w.sum(), rel=1e-10)
    pairs = np.array([[((states[:, :-1] == u) & (states[:, 1:] == v)).sum(1) @ weight / weight.sum()
                       for v in (0, 1)] for u in (0, 1)])
    np.testing.assert_allclose(counts, pairs, rtol=1e-10)


def test_posterior_is_the_gaussian_closed_form_at_the_learned_precisions():
    Phi, y, _ = _clustered(1, n=64, m=24, blocks=2, length=4)
    res = turbo_vbi(Phi, y, max_iter=200)
    rho, s2 = np.asarray(res.precision), res.noise_var
    cov = np.linalg.inv(Phi.T @ Phi / s2 + np.diag(rho))
    # The returned mean is one E-step behind the returned precisions; at convergence they agree.
    np.testing.assert_allclose(res.mean, cov @ Phi.T @ y / s2, atol=1e-4 * np.abs(res.mean).max())
    mean, cov_diag, support, noise = res
    assert mean is res.mean and support.shape == (64,) and noise > 0 and res.converged


def test_clustered_prior_beats_plain_sbl_on_block_sparse_signals():
    # The paper's claim: the structured (Markov) support prior recovers clustered supports better than an
    # independent prior. n = 256, m = 64, three runs of 8 nonzeros, 20 dB, mean over 5 problems.
    turbo, plain = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for seed in range(5):
            Phi, y, x = _clustered(seed)
            turbo.append(_nmse_db(turbo_vbi(Phi, y).mean, x))
            plain.append(_nmse_db(sbl(Phi, y, max_iter=500, tol=1e-5).mean, x))
    assert np.mean(turbo) <= np.mean(plain) - 3, (np.mean(turbo), np.mean(plain))


@pytest.mark.parametrize("kind", ["csr", "kron"])
def test_structured_dictionaries_give_the_dense_result(kind):
    rng = np.random.default_rng(3)
    if kind == "kron":
        P1, P2 = rng.standard_normal((6, 8)), rng.standard_normal((5, 8))
        Phi, dense = sd.kron(P1, P2), np.kron(P1, P2)
    else:
        dense = sp.random(30, 64, density=0.3, random_state=4).toarray()
        Phi = sd.asformat(sp.csr_matrix(dense), "csr")
    x = np.zeros(64)
    x[10:16] = 1.0 + rng.random(6)
    y = dense @ x + 0.01 * rng.standard_normal(dense.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        a, b = turbo_vbi(Phi, y, max_iter=50), turbo_vbi(dense, y, max_iter=50)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a.support_prob, b.support_prob, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kwargs, match", [
    ({"sparsity": 1.0}, "sparsity"), ({"cluster_length": 1.0}, "cluster_length"),
    ({"active": (1.0,)}, "active"), ({"inactive": (1.0, -1.0)}, "inactive"),
    ({"active": (1.0, 1.0), "inactive": (1.0, 10.0)}, "larger mean precision"), ({"max_iter": 0}, "max_iter"),
])
def test_bad_parameters_are_refused(kwargs, match):
    Phi, y, _ = _clustered(0, n=32, m=16, blocks=1, length=4)
    with pytest.raises(ValueError, match=match):
        turbo_vbi(Phi, y, **kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not (importlib.util.find_spec("cupy") is not None and __import__("cupy").is_available()),
                    reason="needs cupy and an NVIDIA GPU")
def test_turbo_vbi_on_the_gpu_equals_the_cpu():
    import cupy

    Phi, y, _ = _clustered(8, n=96, m=40, blocks=2, length=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        cpu = turbo_vbi(Phi, y, max_iter=20, noise_var=1e-3)
        gpu = turbo_vbi(cupy.asarray(Phi), cupy.asarray(y), max_iter=20, noise_var=1e-3)
    assert isinstance(gpu.mean, cupy.ndarray)
    np.testing.assert_allclose(gpu.mean.get(), cpu.mean, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gpu.support_prob.get(), cpu.support_prob, rtol=1e-6, atol=1e-8)

"""sparsedsl.stdlib.ot against POT (ot.sinkhorn, ot.sinkhorn with method="sinkhorn_log") and the
SNS paper's claim (far fewer iterations than Sinkhorn at small regularisation)."""

import importlib.util

import numpy as np
import pytest

from sparsedsl.stdlib import ot as sot


@pytest.fixture
def pot():
    """POT, the peer (the GPU test needs only cupy)."""
    return pytest.importorskip("ot")


def _problem(n, m, seed, *, dim=2):
    rng = np.random.default_rng(seed)
    x, y = rng.random((n, dim)), rng.random((m, dim))
    M = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)  # squared Euclidean, as ot.dist
    M /= M.max()
    a, b = rng.random(n) + 0.1, rng.random(m) + 0.1
    return a / a.sum(), b / b.sum(), M


def _marginal_error(P, a, b):
    return np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum()


@pytest.mark.parametrize("seed, n, m, reg", [(0, 40, 40, 0.1), (1, 60, 35, 0.05), (2, 25, 70, 0.5)])
@pytest.mark.parametrize("method", ["stabilized", "log"])
def test_sinkhorn_matches_pot(seed, n, m, reg, method, pot):
    a, b, M = _problem(n, m, seed)
    ref = pot.sinkhorn(a, b, M, reg, stopThr=1e-13, numItermax=100_000)
    P = sot.sinkhorn(a, b, M, reg, method=method, max_iter=100_000)
    np.testing.assert_allclose(P, ref, rtol=0, atol=1e-7)
    assert _marginal_error(P, a, b) <= 1e-9


def test_sinkhorn_small_reg_matches_pot_log_domain(pot):
    # exp(-M/reg) underflows to 0 at reg = 2e-3 for most entries; POT's log-domain solver is the peer.
    a, b, M = _problem(50, 50, 3)
    ref = pot.sinkhorn(a, b, M, 2e-3, method="sinkhorn_log", stopThr=1e-12, numItermax=100_000)
    for method in ("stabilized", "log"):
        P = sot.sinkhorn(a, b, M, 2e-3, method=method, max_iter=100_000)
        np.testing.assert_allclose(P, ref, rtol=0, atol=1e-7)


def test_sinkhorn_log_dict_and_pot_aliases(pot):
    a, b, M = _problem(30, 30, 4)
    P, log = sot.sinkhorn(a, b, M, 0.1, log=True, stopThr=1e-10, numItermax=5000)
    assert log["n_iter"] == len(log["err"]) and log["err"][-1] <= 1e-10 < log["err"][0]
    f, g = log["f"], log["g"]
    np.testing.assert_allclose(P, np.exp((f[:, None] + g[None, :] - M) / 0.1), rtol=1e-12)
    ref = pot.sinkhorn(a, b, M, 0.1, stopThr=1e-13, numItermax=100_000)
    np.testing.assert_allclose(P, ref, atol=1e-7)


def test_empty_marginals_mean_uniform_as_in_pot(pot):
    _, _, M = _problem(20, 30, 5)
    ref = pot.sinkhorn([], [], M, 0.2, stopThr=1e-13)
    np.testing.assert_allclose(sot.sinkhorn([], [], M, 0.2), ref, atol=1e-7)


def test_nonconvergence_warns_naming_the_knob():
    a, b, M = _problem(30, 30, 6)
    with pytest.warns(sot.ConvergenceWarning, match="max_iter"):
        sot.sinkhorn(a, b, M, 0.01, max_iter=3)
    with pytest.warns(sot.ConvergenceWarning, match="max_iter"):
        sot.sinkhorn_newton_sparse(a, b, M, 0.01, max_iter=1, sinkhorn_iters=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"reg": -1.0}, "reg must be a positive"),
    ({"b": np.full(30, 2 / 30)}, "same total mass"),
    ({"M": np.zeros((30, 29))}, "29 columns"),
    ({"tol": 0.0}, "tol must be"),
    ({"max_iter": 0}, "max_iter must be"),
    ({"tol": 1e-6, "stopThr": 1e-8}, "disagree"),
    ({"method": "greenkhorn"}, "method must be"),
])
def test_sinkhorn_rejects_bad_parameters(kwargs, match):
    a, b, M = _problem(30, 30, 7)
    args = {"a": a, "b": b, "M": M, "reg": 0.1} | kwargs
    with pytest.raises(ValueError, match=match):
        sot.sinkhorn(args.pop("a"), args.pop("b"), args.pop("M"), args.pop("reg"), **args)


@pytest.mark.parametrize("kwargs, match", [
    ({"cg_tol": 1.0}, "cg_tol must be"),
    ({"density": 0.0}, "density must be"),
    ({"sinkhorn_iters": -1}, "sinkhorn_iters must be"),
])
def test_sns_rejects_bad_parameters(kwargs, match):
    a, b, M = _problem(30, 30, 7)
    with pytest.raises(ValueError, match=match):
        sot.sinkhorn_newton_sparse(a, b, M, 0.1, **kwargs)


@pytest.mark.parametrize("cg_tol", [None, 1e-8])
def test_sns_inexact_and_exact_newton_reach_pots_plan(cg_tol, pot):
    # The default solves each Newton system only to min(1e-2, sqrt(err)); the plan is POT's all the same.
    a, b, M = _problem(150, 150, 4)
    ref = pot.sinkhorn(a, b, M, 2e-3, method="sinkhorn_stabilized", stopThr=1e-12, numItermax=100_000)
    P, log = sot.sinkhorn_newton_sparse(a, b, M, 2e-3, cg_tol=cg_tol, log=True)
    np.testing.assert_allclose(P, ref, rtol=0, atol=1e-7)
    assert len(log["cg_iters"]) == len(log["hessian_nnz"]) == log["n_newton"] and log["err"][-1] <= 1e-9


@pytest.mark.parametrize("seed, n, reg", [(0, 60, 0.05), (1, 120, 0.01)])
def test_sns_matches_pot_plan(seed, n, reg, pot):
    a, b, M = _problem(n, n, seed)
    ref = pot.sinkhorn(a, b, M, reg, stopThr=1e-13, numItermax=100_000)
    P, log = sot.sinkhorn_newton_sparse(a, b, M, reg, log=True)
    np.testing.assert_allclose(P, ref, rtol=0, atol=1e-7)
    assert _marginal_error(P, a, b) <= 1e-9
    assert log["n_iter"] == log["n_sinkhorn"] + log["n_newton"] and log["err"][-1] <= 1e-9


def test_sns_needs_far_fewer_iterations_than_sinkhorn(pot):
    # The paper's claim at small regularisation (plan close to sparse): Sinkhorn needs thousands of
    # iterations, SNS a few dozen warm-start iterations and a handful of Newton steps.
    a, b, M = _problem(200, 200, 8)
    _, log_s = sot.sinkhorn(a, b, M, 1e-3, log=True, max_iter=50_000)
    P, log_n = sot.sinkhorn_newton_sparse(a, b, M, 1e-3, log=True)
    assert log_n["err"][-1] <= 1e-9 and log_s["err"][-1] <= 1e-9
    assert 10 * log_n["n_iter"] <= log_s["n_iter"], (log_n["n_iter"], log_s["n_iter"])
    ref = pot.sinkhorn(a, b, M, 1e-3, method="sinkhorn_stabilized", stopThr=1e-12, numItermax=100_000)
    np.testing.assert_allclose(P, ref, rtol=0, atol=1e-7)


def test_sns_w2_between_1d_densities(pot):
    # W2 between two discretised 1-D densities (the paper's second family): a monotone, banded plan.
    x = np.linspace(0, 1, 200)
    a = np.exp(-((x - 0.3) ** 2) / 0.01) + 0.05
    b = np.exp(-((x - 0.7) ** 2) / 0.02) + 0.05
    a, b = a / a.sum(), b / b.sum()
    M = (x[:, None] - x[None, :]) ** 2
    P, log = sot.sinkhorn_newton_sparse(a, b, M, 1e-3, log=True)
    ref = pot.sinkhorn(a, b, M, 1e-3, method="sinkhorn_stabilized", stopThr=1e-12, numItermax=100_000)
    np.testing.assert_allclose(P, ref, rtol=0, atol=1e-7)
    assert log["err"][-1] <= 1e-9


HAVE_GPU = importlib.util.find_spec("cupy") is not None and __import__("cupy").is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU, reason="needs cupy and an NVIDIA GPU")
@pytest.mark.parametrize("solver", [sot.sinkhorn, sot.sinkhorn_newton_sparse])
def test_cupy_inputs_equal_cpu(solver):
    import cupy

    a, b, M = _problem(300, 300, 9)
    P_cpu = solver(a, b, M, 0.01)
    P_gpu = solver(cupy.asarray(a), cupy.asarray(b), cupy.asarray(M), 0.01)
    assert isinstance(P_gpu, cupy.ndarray)
    # Both stop at a marginal error <= 1e-9 of the same unique plan (SNS's sparsification threshold may
    # differ by rounding between devices, so its path may too).
    atol = 1e-9 if solver is sot.sinkhorn else 1e-8
    np.testing.assert_allclose(cupy.asnumpy(P_gpu), P_cpu, rtol=0, atol=atol)
    assert abs(float(P_gpu.sum()) - 1.0) < 1e-8

"""Backends declare named, ordered passes; explain prints them; a schedule turns one off, and the
result stays the same (against scipy)."""

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.backends import cpu, cuda

A = sp.random(200, 150, density=0.05, format="csr", random_state=0)
X = np.random.default_rng(0).standard_normal((150, 8))


def test_the_cpu_passes_run_in_the_declared_order_and_each_can_be_turned_off():
    assert cpu.LOWERING["passes"] == ("prefetch_gathers", "unroll_axpys")
    for off, left in ((None, "prefetch_gathers, unroll_axpys"), ("unroll_axpys", "prefetch_gathers"),
                      ("prefetch_gathers", "unroll_axpys")):
        k = sd.compile("Y[i,n] = A[i,j] * X[j,n]", A="csr", schedule={"passes": {off: False}} if off else None)
        np.testing.assert_allclose(k(A=A, X=X), A @ X, rtol=1e-12, atol=1e-12)
        assert f"passes: {left}" in sd.explain(k, A=A, X=X).split("\n")


def test_a_cuda_pass_turned_off_changes_the_rendered_plan():
    on = sd.explain(sd.compile("y[i] = A[i,j] * x[j]", A="csr"), A=A, x=np.ones(150), backend="cuda")
    k = sd.compile("y[i] = A[i,j] * x[j]", A="csr", schedule={"passes": {"lane_split": False, "nested_lanes": False}})
    off = sd.explain(k, A=A, x=np.ones(150), backend="cuda")
    assert "threads per iteration chosen per call" in on and "threads per iteration chosen per call" not in off
    assert "one thread per iteration (grid-stride)" in off and "lane_split" in cuda.PASSES


def test_an_unknown_pass_is_a_located_error():
    with pytest.raises(sd.DSLError, match="schedule options"):
        sd.compile("y[i] = A[i,j] * x[j]", schedule={"passes": {"unroll": False}})

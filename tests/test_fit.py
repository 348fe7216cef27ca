"""sparsedsl.fit: exact recovery of exact structure, optimality of the closed forms."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsedsl as sd


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@settings(max_examples=20, deadline=None)
@given(p=st.integers(1, 5), s=st.integers(1, 5), k=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_monarch_fit_recovers_an_exact_monarch(p, s, k, seed):
    rng = np.random.default_rng(seed)
    M = sd.monarch(rng.standard_normal((p, s, k)), rng.standard_normal((k, p, p)))  # q = p, as fit.monarch uses
    fit = sd.fit.monarch(M.to_numpy(), nblocks=k)
    assert fit.shape == M.shape
    assert rel(fit.to_numpy(), M.to_numpy()) < 1e-10


def _gradient_fits(A, nblocks, starts=100, steps=1500, lr=0.02, seed=0):
    """Relative errors of `starts` random-start gradient fits (Adam on ‖M(L,R) − A‖²), batched."""
    rng = np.random.default_rng(seed)
    m, n = A.shape
    k, q = nblocks, n // nblocks
    p, s = q, m // q
    A4 = A.reshape(s, p, k, q)  # [c, a, k, b]
    L = rng.standard_normal((starts, p, s, k)) * 0.5
    R = rng.standard_normal((starts, k, p, q)) * 0.5
    state = [np.zeros_like(L), np.zeros_like(L), np.zeros_like(R), np.zeros_like(R)]
    for t in range(1, steps + 1):
        E = np.einsum("zack,zkab->zcakb", L, R) - A4  # residual per start
        gL = 2 * np.einsum("zcakb,zkab->zack", E, R)
        gR = 2 * np.einsum("zcakb,zack->zkab", E, L)
        for (x, g, i) in ((L, gL, 0), (R, gR, 2)):
            state[i] = 0.9 * state[i] + 0.1 * g
            state[i + 1] = 0.999 * state[i + 1] + 0.001 * g * g
            x -= lr * (state[i] / (1 - 0.9**t)) / (np.sqrt(state[i + 1] / (1 - 0.999**t)) + 1e-12)
    M = np.einsum("zack,zkab->zcakb", L, R).reshape(starts, m, n)
    return np.linalg.norm(M - A, axis=(1, 2)) / np.linalg.norm(A)


def test_monarch_closed_form_beats_gradient_fits():
    """The paper's claim: the projection onto Monarch matrices has an analytical optimum; on random
    matrices no gradient fit from 100 random starts does better."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((16, 16))
    closed = rel(sd.fit.monarch(A, nblocks=4).to_numpy(), A)
    gd = _gradient_fits(A, 4)
    assert closed <= gd.min() + 1e-9
    assert closed < 1  # and it is a real fit


@settings(max_examples=20, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), min_size=2, max_size=3),
       seed=st.integers(0, 2**16))
def test_kron_fit_recovers_an_exact_kron(shapes, seed):
    rng = np.random.default_rng(seed)
    K = sd.kron(*[rng.standard_normal(s) for s in shapes])
    fit = sd.fit.kron(K.to_numpy(), shapes)
    assert rel(fit.to_numpy(), K.to_numpy()) < 1e-10


def test_kron_fit_is_the_nearest_kron():
    """Van Loan–Pitsianis: no other Kronecker product of the same shapes is nearer (perturbations)."""
    rng = np.random.default_rng(1)
    A = rng.standard_normal((6, 12))
    fit = sd.fit.kron(A, [(2, 3), (3, 4)])
    best = rel(fit.to_numpy(), A)
    B, C = fit.factors
    for _ in range(200):
        Bp, Cp = B + 0.05 * rng.standard_normal(B.shape), C + 0.05 * rng.standard_normal(C.shape)
        assert rel(np.kron(Bp, Cp), A) >= best - 1e-12


def test_lowrank_plus_sparse_recovers_low_rank_with_outliers():
    rng = np.random.default_rng(2)
    m, n, r = 60, 40, 3
    L = rng.standard_normal((m, r)) @ rng.standard_normal((r, n))
    S = np.zeros((m, n))
    idx = rng.choice(m * n, size=int(0.02 * m * n), replace=False)
    S.reshape(-1)[idx] = rng.choice([-1, 1], size=len(idx)) * (10 + 5 * rng.random(len(idx)))
    A = L + S
    fit = sd.fit.lowrank_plus_sparse(A, rank=r, sparsity=0.02)
    assert rel(fit.to_numpy(), A) < 1e-6
    assert rel(fit.lowrank.to_numpy(), L) < 1e-6
    assert fit.S.format == sd.as_format("csr") and fit.S.nnz <= len(idx)
    # the fitted operator is usable in kernels as it is
    x = rng.standard_normal(n)
    y = sd.compute("y[i] = A[i,j] * x[j]", A=fit, x=x)
    np.testing.assert_allclose(y, A @ x, atol=1e-6)


def test_fit_parameters_are_validated():
    A = np.ones((6, 6))
    with pytest.raises(ValueError, match="'rank'"):
        sd.fit.lowrank_plus_sparse(A, rank=7, sparsity=0.1)
    with pytest.raises(ValueError, match="'sparsity'"):
        sd.fit.lowrank_plus_sparse(A, rank=1, sparsity=2)
    with pytest.raises(ValueError, match="'nblocks'"):
        sd.fit.monarch(A, nblocks=4)
    with pytest.raises(ValueError, match="'shapes'"):
        sd.fit.kron(A, [(2, 2), (2, 2)])


def test_lowrank_plus_sparse_large_uses_randomized_svd():
    rng = np.random.default_rng(3)
    m, n, r = 1500, 1200, 4
    L = rng.standard_normal((m, r)) @ rng.standard_normal((r, n))
    S = np.zeros((m, n))
    idx = rng.choice(m * n, size=int(0.001 * m * n), replace=False)
    S.reshape(-1)[idx] = 20.0
    fit = sd.fit.lowrank_plus_sparse(L + S, rank=r, sparsity=0.001, random_state=0, max_iter=30)
    assert rel(fit.to_numpy(), L + S) < 1e-6

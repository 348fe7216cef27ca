"""sparsedsl.stdlib.sparse_coding against scikit-learn (orthogonal_mp, Lasso, MiniBatchDictionaryLearning)
and the claims of the papers it implements (issue 15). Sizes are small; speed lives in
benchmarks/stdlib_sparse_coding.py."""


import numpy as np
import pytest

import sparsedsl as sd
from sparsedsl.stdlib import sparse_coding as sc

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import Lasso, orthogonal_mp  # noqa: E402


def _dictionary(n_atoms, n_features, seed):
    D = np.random.default_rng(seed).standard_normal((n_atoms, n_features))
    return D / np.linalg.norm(D, axis=1, keepdims=True)


def _sparse_signals(D, n, k, noise, seed):
    rng = np.random.default_rng(seed)
    C = np.zeros((n, D.shape[0]))
    for i in range(n):
        C[i, rng.choice(D.shape[0], k, replace=False)] = rng.standard_normal(k)
    return C @ D + noise * rng.standard_normal((n, D.shape[1]))


# ---- encoders -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_omp_matches_scikit_learn_orthogonal_mp(seed):
    D = _dictionary(40, 20, seed)
    X = np.random.default_rng(seed + 10).standard_normal((25, 20))
    C = sc.omp(X, D, n_nonzero_coefs=6)
    ref = orthogonal_mp(D.T, X.T, n_nonzero_coefs=6).T
    assert isinstance(C, sd.SparseTensor) and C.shape == (25, 40)
    assert np.array_equal(C.todense() != 0, ref != 0)
    np.testing.assert_allclose(C.todense(), ref, atol=1e-10)


def test_omp_with_a_residual_tolerance_matches_scikit_learn():
    D = _dictionary(50, 16, 3)
    X = np.random.default_rng(4).standard_normal((20, 16))
    C = sc.omp(X, D, tol=0.5)
    ref = orthogonal_mp(D.T, X.T, tol=0.5).T
    assert np.array_equal(C.todense() != 0, ref != 0)
    np.testing.assert_allclose(C.todense(), ref, atol=1e-10)


def test_fista_reaches_the_lasso_solution():
    D = _dictionary(30, 20, 5)
    X = np.random.default_rng(6).standard_normal((3, 20))
    alpha = 0.4
    C = sc.fista(X, D, alpha=alpha, max_iter=20000, tol=1e-13).todense()
    for i in range(3):  # Lasso's objective is (1/(2 n_features))‖x − Dᵀc‖² + alpha'‖c‖₁
        ref = Lasso(alpha=alpha / 20, fit_intercept=False, tol=1e-12, max_iter=100000).fit(D.T, X[i]).coef_
        np.testing.assert_allclose(C[i], ref, atol=1e-6)


def test_ista_agrees_with_fista():
    D = _dictionary(30, 20, 7)
    X = np.random.default_rng(8).standard_normal((4, 20))
    a = sc.ista(X, D, alpha=0.5, max_iter=20000, tol=1e-12).todense()
    b = sc.fista(X, D, alpha=0.5, max_iter=20000, tol=1e-12).todense()
    np.testing.assert_allclose(a, b, atol=1e-7)


def test_proximal_maps_on_an_orthonormal_dictionary_are_the_closed_forms():
    x = np.array([[2.0, 0.5, -3.0, 1.2]])
    D = np.eye(4)
    np.testing.assert_allclose(sc.ista(x, D, alpha=1.0).todense(), [[1.0, 0, -2.0, 0.2]], atol=1e-12)
    # ℓ0 with alpha: keep |x| > sqrt(2 alpha)
    np.testing.assert_allclose(sc.iht(x, D, alpha=0.5).todense(), [[2.0, 0, -3.0, 1.2]], atol=1e-12)
    np.testing.assert_allclose(sc.iht(x, D, alpha=1.0).todense(), [[2.0, 0, -3.0, 0]], atol=1e-12)
    # ℓq, q = 1/2: the minimiser of ½(c − x)² + alpha|c|^½ by brute force
    grid = np.linspace(-4, 4, 800001)
    got = sc.lq(x, D, alpha=0.5, q=0.5).todense()[0]
    for xi, ci in zip(x[0], got):
        ref = grid[np.argmin(0.5 * (grid - xi) ** 2 + 0.5 * np.abs(grid) ** 0.5)]
        assert abs(ci - ref) < 1e-3


def test_beyond_l1_nonconvex_codes_are_sparser_at_matched_error():
    """Beyond ℓ1 sparse coding in V1: at equal relative reconstruction error soft thresholding
    (ℓ1) needs more nonzeros than hard thresholding (ℓ0) and CEL0 (and ℓ½)."""
    D = _dictionary(64, 32, 0)
    X = _sparse_signals(D, 40, 6, 0.05, 1)
    target = 0.2
    nnz = {m: sc.nnz_at_error(X, D, method=m, target=target) for m in ("ista", "hard", "cel0", "lq")}
    assert nnz["ista"] > 1.3 * nnz["hard"]
    assert nnz["ista"] > 1.3 * nnz["cel0"]
    assert nnz["ista"] > 1.3 * nnz["lq"]


def test_encoders_take_a_kron_dictionary_without_materialising_it():
    A, B = _dictionary(6, 4, 1), _dictionary(5, 4, 2)
    K = sd.kron(A, B)                                    # (30, 16), unit-norm rows
    X = np.random.default_rng(3).standard_normal((8, 16))
    dense = np.kron(A, B)
    np.testing.assert_allclose(sc.omp(X, K, n_nonzero_coefs=4).todense(),
                               orthogonal_mp(dense.T, X.T, n_nonzero_coefs=4).T, atol=1e-10)
    np.testing.assert_allclose(sc.fista(X, K, alpha=0.2, tol=1e-10, max_iter=5000).todense(),
                               sc.fista(X, dense, alpha=0.2, tol=1e-10, max_iter=5000).todense(), atol=1e-8)


def test_encoders_take_a_sparse_dictionary():
    import scipy.sparse as sp

    m = sp.random(40, 30, density=0.2, format="csr", random_state=0)
    m = sp.diags(1 / np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel() + 1e-300)) @ m
    Ds = sd.asformat(m.tocsr(), "csr")
    X = np.random.default_rng(0).standard_normal((6, 30))
    np.testing.assert_allclose(sc.omp(X, Ds, n_nonzero_coefs=3).todense(),
                               orthogonal_mp(m.toarray().T, X.T, n_nonzero_coefs=3).T, atol=1e-10)


@pytest.mark.parametrize("method", ["ista", "fista", "hard", "lq", "cel0", "omp"])
def test_sparse_encode_dispatches_and_returns_csr_codes(method):
    D = _dictionary(12, 8, 0)
    X = np.random.default_rng(1).standard_normal((5, 8))
    C = sc.sparse_encode(X, D, method=method, alpha=0.1, n_nonzero_coefs=3, max_iter=20000)
    assert isinstance(C, sd.SparseTensor) and C.format == sd.as_format("csr") and C.shape == (5, 12)


def test_parameters_are_validated_with_clear_errors():
    D = _dictionary(12, 8, 0)
    X = np.ones((2, 8))
    with pytest.raises(ValueError, match="'method' parameter must be one of"):
        sc.sparse_encode(X, D, method="lars")
    with pytest.raises(ValueError, match="'alpha' parameter"):
        sc.ista(X, D, alpha=-1.0)
    with pytest.raises(ValueError, match="'q' parameter"):
        sc.lq(X, D, q=1.5)
    with pytest.raises(ValueError, match="9 features but the dictionary D has 8"):
        sc.omp(np.ones((2, 9)), D)
    with pytest.raises(ValueError, match="'n_nonzero_coefs' parameter must be <="):
        sc.omp(X, D, n_nonzero_coefs=20)


def test_non_convergence_warns_and_names_max_iter():
    D = _dictionary(30, 20, 0)
    X = np.random.default_rng(0).standard_normal((3, 20))
    with pytest.warns(sc.ConvergenceWarning, match="max_iter=3"):
        sc.ista(X, D, alpha=0.1, max_iter=3, tol=1e-12)

"""Composite operands (kron, lowrank (+ sparse), monarch) against the dense interpreter on the
materialised matrix, on random small shapes."""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsedsl as sd
from sparsedsl.errors import DSLError, FormatError
from sparsedsl.tensor import SparseTensor
from sparsedsl.testing import assert_equal as _assert_equal

SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_equal(got, ref, rtol=1e-9):
    _assert_equal(got, ref, rtol, dtype=False)


def check(expr, **operands):
    """Compiled == interpreter on the materialised operands == numpy where given."""
    k = sd.compile(expr, **{n: f for n, f in operands.pop("formats", {}).items()})
    got = k(**operands)
    assert_equal(got, k.reference(**operands))
    return got


def factor(rng, shape, fmt, density=0.5):
    a = rng.standard_normal(shape) * (rng.random(shape) < density if fmt != "dense" else 1)
    return a if fmt == "dense" else sd.asformat(a, fmt)


dims = st.integers(1, 4)
fmts = st.sampled_from(["dense", "csr", "csc", "coo", "dcsr", "bitmap"])


@SETTINGS
@given(m1=dims, n1=dims, m2=dims, n2=dims, f1=fmts, f2=fmts, seed=st.integers(0, 2**16))
def test_kron_matvec(m1, n1, m2, n2, f1, f2, seed):
    rng = np.random.default_rng(seed)
    B, C = factor(rng, (m1, n1), f1), factor(rng, (m2, n2), f2)
    K = sd.kron(B, C)
    x = rng.standard_normal(n1 * n2)
    y = check("y[i] = K[i,j] * x[j]", K=K, x=x)
    np.testing.assert_allclose(y, np.kron(np.asarray(B), np.asarray(C)) @ x, atol=1e-9)
    z = rng.standard_normal(m1 * m2)
    Kt = K.to_numpy().T
    np.testing.assert_allclose(check("y[j] = K[i,j] * z[i]", K=K, z=z), Kt @ z, atol=1e-9)  # Kᵀz by indices
    np.testing.assert_allclose(check("y[i] = Kt[i,j] * z[j]", Kt=K.T, z=z), Kt @ z, atol=1e-9)  # and by .T


@SETTINGS
@given(shapes=st.lists(st.tuples(dims, dims), min_size=3, max_size=3), nrhs=st.integers(1, 3),
       sparse=st.booleans(), seed=st.integers(0, 2**16))
def test_kron_three_factors_matmat(shapes, nrhs, sparse, seed):
    rng = np.random.default_rng(seed)
    fs = [factor(rng, s, "csr" if sparse and k == 1 else "dense") for k, s in enumerate(shapes)]
    K = sd.kron(*fs)
    X = rng.standard_normal((K.shape[1], nrhs))
    Y = check("Y[i,n] = K[i,j] * X[j,n]", K=K, X=X)
    np.testing.assert_allclose(Y, K.to_numpy() @ X, atol=1e-9)


@SETTINGS
@given(m=dims, n=dims, r=st.integers(1, 3), with_s=st.booleans(), fmt=st.sampled_from(["csr", "csc", "coo"]),
       nrhs=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_lowrank_plus_sparse(m, n, r, with_s, fmt, nrhs, seed):
    rng = np.random.default_rng(seed)
    U, V = rng.standard_normal((m, r)), rng.standard_normal((n, r))
    A = sd.lowrank(U, V)
    if with_s:
        A = A + factor(rng, (m, n), fmt, 0.3)
    X = rng.standard_normal((n, nrhs))
    Y = check("Y[i,k] = A[i,j] * X[j,k]", A=A, X=X)
    np.testing.assert_allclose(Y, A.to_numpy() @ X, atol=1e-9)
    z = rng.standard_normal(m)
    np.testing.assert_allclose(check("y[j] = A[i,j] * z[i]", A=A, z=z), A.to_numpy().T @ z, atol=1e-9)
    np.testing.assert_allclose(check("y[i] = A.T[i,j] * z[j]".replace("A.T", "At"), At=A.T, z=z),
                               A.to_numpy().T @ z, atol=1e-9)


@SETTINGS
@given(p=dims, s=dims, k=dims, q=dims, seed=st.integers(0, 2**16))
def test_monarch(p, s, k, q, seed):
    rng = np.random.default_rng(seed)
    M = sd.monarch(rng.standard_normal((p, s, k)), rng.standard_normal((k, p, q)))
    x = rng.standard_normal(M.shape[1])
    np.testing.assert_allclose(check("y[i] = M[i,j] * x[j]", M=M, x=x), M.to_numpy() @ x, atol=1e-9)
    z = rng.standard_normal(M.shape[0])
    np.testing.assert_allclose(check("y[i] = Mt[i,j] * z[j]", Mt=M.T, z=z), M.to_numpy().T @ z, atol=1e-9)


def test_monarch_is_the_papers_P_L_Pt_R():
    """M = P L Pᵀ R with L, R block-diagonal (m blocks of m×m) and P the reshape-transpose permutation."""
    rng = np.random.default_rng(0)
    m = 3
    n = m * m
    Lb, Rb = rng.standard_normal((m, m, m)), rng.standard_normal((m, m, m))
    L = np.zeros((n, n))
    R = np.zeros((n, n))
    for b in range(m):
        L[b * m:(b + 1) * m, b * m:(b + 1) * m] = Lb[b]
        R[b * m:(b + 1) * m, b * m:(b + 1) * m] = Rb[b]
    P = np.eye(n)[np.arange(n).reshape(m, m).T.reshape(-1)]
    M = sd.monarch(L, R, nblocks=m)
    np.testing.assert_allclose(M.to_numpy(), P @ L @ P.T @ R, atol=1e-12)
    with pytest.raises(FormatError, match="block-diagonal"):
        sd.monarch(np.ones((n, n)), R, nblocks=m)


@SETTINGS
@given(m1=dims, m2=dims, k=dims, r=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_composite_times_composite(m1, m2, k, r, seed):
    rng = np.random.default_rng(seed)
    K = sd.kron(rng.standard_normal((m1, m2)), rng.standard_normal((k, 2)))
    L = sd.lowrank(rng.standard_normal((m2 * 2, r)), rng.standard_normal((3, r)))
    C = check("C[i,j] = K[i,l] * L[l,j]", K=K, L=L)
    np.testing.assert_allclose(C, K.to_numpy() @ L.to_numpy(), atol=1e-9)
    E = rng.standard_normal((4, m1 * k))
    np.testing.assert_allclose(check("C[i,j] = E[i,l] * K[l,j]", E=E, K=K), E @ K.to_numpy(), atol=1e-9)
    D = rng.standard_normal((m1 * k, 5))
    np.testing.assert_allclose(check("C[i,j] = K[l,i] * D[l,j]", K=K, D=D), K.to_numpy().T @ D, atol=1e-9)


@SETTINGS
@given(m=dims, n=dims, r=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_sddmm_with_composites(m, n, r, seed):
    rng = np.random.default_rng(seed)
    P = sd.asformat(sp.random(m * 2, n * 3, density=0.4, random_state=seed, format="csr"), "csr")
    A = sd.lowrank(rng.standard_normal((m * 2, r)), rng.standard_normal((n * 3, r)))
    A = A + sd.asformat(sp.random(m * 2, n * 3, density=0.3, random_state=seed + 1, format="csr"), "csr")
    check("C[i,j] = P[i,j] * A[i,j]", P=P, A=A, formats={"C": "csr"})
    K = sd.kron(rng.standard_normal((m, n)), rng.standard_normal((2, 3)))
    C = check("C[i,j] = P[i,j] * K[i,j]", P=P, K=K, formats={"C": "csr"})
    assert isinstance(C, SparseTensor)
    U, W = rng.standard_normal((m * 2, 2)), rng.standard_normal((2, n * 3))
    check("C[i,j] = P[i,j] * K[i,j] * U[i,k] * W[k,j]", P=P, K=K, U=U, W=W, formats={"C": "csr"})


def test_sparse_kron_keeps_its_pattern():
    """Entries of a Kronecker product of sparse factors are present only where both factors store one."""
    rng = np.random.default_rng(1)
    B = sd.asformat(sp.random(3, 4, density=0.5, random_state=1, format="csr"), "csr")
    C = sd.asformat(sp.random(2, 3, density=0.5, random_state=2, format="csr"), "csr")
    K = sd.kron(B, C)
    check("y[i] = max[j](K[i,j])", K=K)
    check("y[i] = K[i,j] * x[j]", K=K, x=rng.standard_normal(12))


def test_temporaries_and_elementwise_use():
    rng = np.random.default_rng(2)
    K = sd.kron(rng.standard_normal((2, 3)), rng.standard_normal((3, 2)))
    x = rng.standard_normal(6)
    k = sd.compile("let t[i] = K[i,j] * x[j]\ny[i] = relu(t[i]) + 2 * t[i]")
    assert_equal(k(K=K, x=x), k.reference(K=K, x=x))
    check("C[i,j] = exp(K[i,j]) - K[i,j] / 2", K=K)
    check("y[i] = 3 * K[i,j] * x[j] - x[i]", K=K, x=x)
    L = sd.lowrank(rng.standard_normal((6, 2)), rng.standard_normal((6, 2)))
    check("y[i] = max[j](L[i,j])", L=L)
    # inside a semiring reduction `*` is the semiring's product; the composite's own product is not
    check("C[i,j] = min_plus[k](K[i,k] * L[k,j])", K=K, L=L)
    check("C[i,j] = max_times[k](L[i,k] * D[k,j])", L=L, D=rng.standard_normal((6, 3)))


def test_explain_shows_order_and_cost():
    rng = np.random.default_rng(3)
    K = sd.kron(rng.standard_normal((16, 16)), rng.standard_normal((16, 16)))
    k = sd.compile("y[i] = K[i,j] * x[j]")
    text = sd.explain(k, K=K, x=rng.standard_normal(256))
    assert "contraction order" in text and "predicted cost" in text
    cost, naive = [float(w) for w in text.split("predicted cost ")[1].split(" for")[0].split(" against ")]
    assert naive > 5 * cost


def test_sum_of_terms_adds_into_the_target():
    """(U Vᵀ + S)·X with a dense target: the sparse term is added into the rows the low-rank term
    wrote (no temporary per term, no pass adding them); results still equal the interpreter's."""
    rng = np.random.default_rng(5)
    A = sd.lowrank(rng.standard_normal((9, 2)), rng.standard_normal((8, 2))) + factor(rng, (9, 8), "csr", 0.3)
    X = rng.standard_normal((8, 3))
    k = sd.compile("Y[i,n] = sum[j](A[i,j] * X[j,n]) - 2 * Z[i,n]")
    Z = rng.standard_normal((9, 3))
    assert_equal(k(A=A, X=X, Z=Z), A.to_numpy() @ X - 2 * Z)
    assert_equal(k(A=A, X=X, Z=Z), k.reference(A=A, X=X, Z=Z))
    targets = [ln.split(";")[0] for ln in sd.explain(k, A=A, X=X, Z=Z).splitlines()
               if ln.startswith("statement") and "loop order" in ln]
    assert sum(t.endswith("Y[i, n]") for t in targets) == 3 and not any("__t" in t for t in targets)


def test_to_numpy_only_materialises():
    B, C = np.arange(6.0).reshape(2, 3), np.eye(2)
    np.testing.assert_array_equal(sd.kron(B, C).to_numpy(), np.kron(B, C))
    np.testing.assert_array_equal(np.asarray(sd.kron(B, C).T), np.kron(B, C).T)
    assert sd.kron(B, C).shape == (4, 6) and sd.kron(B, C).dtype == np.float64
    with pytest.raises(FormatError, match="same r"):
        sd.lowrank(np.ones((3, 2)), np.ones((3, 1)))


def test_incompatible_splits_are_reported():
    K1 = sd.kron(np.ones((2, 3)), np.ones((2, 4)))  # columns split 3 x 4
    K2 = sd.kron(np.ones((2, 2)), np.ones((6, 2)))  # rows split 2 x 6
    with pytest.raises(DSLError, match="do not nest"):
        sd.compute("C[i,j] = K1[i,k] * K2[k,j]", K1=K1, K2=K2)


def test_contraction_order_matrix_chain():
    """The classic matrix-chain case: (A B) C is ~10x cheaper than A (B C) for these shapes."""
    from sparsedsl.lang.contract import DP_LIMIT, Operand, best_order

    ext = {"i": 10, "j": 100, "k": 5, "l": 50}
    ops = [Operand(("i", "j"), label="A"), Operand(("j", "k"), label="B"), Operand(("k", "l"), label="C")]
    plan = best_order(ops, ["i", "l"], ext)
    assert plan.describe(ops) == "(C · (A · B))" or plan.describe(ops) == "((A · B) · C)"
    assert plan.cost < plan.naive_cost
    # a sparse operand's density lowers the cost of the contraction it takes part in
    sparse = [Operand(("i", "j"), 0.01, "A"), Operand(("j", "k"), label="B"), Operand(("k", "l"), label="C")]
    assert best_order(sparse, ["i", "l"], ext).cost < plan.cost
    # beyond the DP limit the greedy order still contracts every operand once
    chain = [Operand((f"x{t}", f"x{t + 1}"), label=f"M{t}") for t in range(DP_LIMIT + 2)]
    big = best_order(chain, ["x0", f"x{DP_LIMIT + 2}"], {f"x{t}": 4 for t in range(DP_LIMIT + 3)})

    def leaves(t):
        return [t] if isinstance(t, int) else leaves(t[0]) + leaves(t[1])

    assert sorted(leaves(big.tree)) == list(range(DP_LIMIT + 2))

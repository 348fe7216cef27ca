"""Composite operands (kron, lowrank + sparse, monarch) on the CUDA backend: the same kernels as
tests/test_composite.py, run on the GPU and compared with the dense interpreter on the host."""

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.backends.cuda import compiled, device
from sparsedsl.tensor import SparseTensor

HAVE_GPU = device.available()
gpu = pytest.mark.skipif(not HAVE_GPU, reason="needs cupy and an NVIDIA GPU")


def _csr(rng, m, n, density):
    return sd.asformat(sp.random(m, n, density=density, random_state=rng, format="csr"), "csr")


def _cases(rng):
    """(expression, output formats, operands), each operand on the host."""
    K = sd.kron(rng.standard_normal((6, 5)), _csr(rng, 7, 4, 0.5))
    K3 = sd.kron(rng.standard_normal((3, 2)), rng.standard_normal((4, 3)), rng.standard_normal((2, 5)))
    A = sd.lowrank(rng.standard_normal((40, 3)), rng.standard_normal((30, 3))) + _csr(rng, 40, 30, 0.1)
    L = sd.lowrank(rng.standard_normal((20, 2)), rng.standard_normal((9, 2)))
    M = sd.monarch(rng.standard_normal((4, 5, 3)), rng.standard_normal((3, 4, 6)))
    Ks = sd.kron(_csr(rng, 5, 6, 0.4), _csr(rng, 4, 3, 0.5))
    P = _csr(rng, 40, 30, 0.2)
    return {
        "kron_matvec": ("y[i] = K[i,j] * x[j]", {}, {"K": K, "x": rng.standard_normal(20)}),
        "kron_transposed": ("y[j] = K[i,j] * z[i]", {}, {"K": K, "z": rng.standard_normal(42)}),
        "kron3_matmat": ("Y[i,n] = K[i,j] * X[j,n]", {}, {"K": K3, "X": rng.standard_normal((30, 4))}),
        "lowrank_plus_sparse": ("Y[i,n] = A[i,j] * X[j,n]", {}, {"A": A, "X": rng.standard_normal((30, 8))}),
        "sum_of_terms": ("Y[i,n] = sum[j](A[i,j] * X[j,n]) - 2 * Z[i,n]", {},
                         {"A": A, "X": rng.standard_normal((30, 3)), "Z": rng.standard_normal((40, 3))}),
        "monarch": ("y[i] = M[i,j] * x[j]", {}, {"M": M, "x": rng.standard_normal(18)}),
        "monarch_T": ("y[i] = M[i,j] * x[j]", {}, {"M": M.T, "x": rng.standard_normal(20)}),
        "composite_times_composite": ("C[i,j] = K[i,l] * L[l,j]", {},
                                      {"K": sd.kron(rng.standard_normal((4, 5)), rng.standard_normal((3, 4))), "L": L}),
        "sparse_kron": ("y[i] = K[i,j] * x[j]", {}, {"K": Ks, "x": rng.standard_normal(18)}),
        "sddmm_lowrank_plus_sparse": ("C[i,j] = P[i,j] * A[i,j]", {"C": "csr"}, {"P": P, "A": A}),
        "temporaries": ("let t[i] = K[i,j] * x[j]\ny[i] = relu(t[i]) + 2 * t[i]", {},
                        {"K": K, "x": rng.standard_normal(20)}),
    }


CASES = sorted(_cases(np.random.default_rng(0)))


def _host(r):
    if isinstance(r, SparseTensor):
        assert r.device == "cuda"
        return r.to("cpu").to_numpy()
    assert device.on_device(r)
    return r.get()


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES)
def test_composite_kernels_on_the_gpu_match_the_interpreter(case):
    expr, formats, operands = _cases(np.random.default_rng(0))[case]
    k = sd.compile(expr, **formats)
    ref = k.reference(**operands)
    ref = ref.to_numpy() if isinstance(ref, SparseTensor) else np.asarray(ref)
    # host operands, the backend asked for: composites are moved to the device with their factors
    np.testing.assert_allclose(_host(k(backend="cuda", **operands)), ref, rtol=1e-9, atol=1e-9)
    # device operands: the backend follows them
    on_gpu = {n: v.to("cuda") if hasattr(v, "to") else device.to_device(v) for n, v in operands.items()}
    assert all(device.on_device(v) for v in on_gpu.values())
    np.testing.assert_allclose(_host(k(**on_gpu)), ref, rtol=1e-9, atol=1e-9)


@gpu
@pytest.mark.gpu
def test_composites_built_from_device_arrays_stay_there():
    import cupy as cp

    rng = np.random.default_rng(1)
    B, C, x = rng.standard_normal((5, 4)), rng.standard_normal((3, 6)), rng.standard_normal(24)
    K = sd.kron(cp.asarray(B), cp.asarray(C))
    assert K.device == "cuda"
    y = sd.compute("y[i] = K[i,j] * x[j]", K=K, x=cp.asarray(x))
    np.testing.assert_allclose(y.get(), np.kron(B, C) @ x, rtol=1e-12)
    U, V = cp.asarray(rng.standard_normal((8, 2))), cp.asarray(rng.standard_normal((7, 2)))
    S = cp.asarray(sp.random(8, 7, density=0.3, random_state=2).toarray())
    A = sd.lowrank(U, V) + S
    assert A.device == "cuda" and A.S.device == "cuda"
    np.testing.assert_allclose(A.to_numpy(), (U @ V.T + S).get(), rtol=1e-12)
    M = sd.monarch(cp.asarray(rng.standard_normal((2, 3, 2))), cp.asarray(rng.standard_normal((2, 2, 3))))
    assert M.device == "cuda"


def test_moving_a_composite_keeps_its_algebra():
    rng = np.random.default_rng(3)
    A = sd.lowrank(rng.standard_normal((6, 2)), rng.standard_normal((5, 2))) + _csr(rng, 6, 5, 0.4)
    assert A.device == "cpu" and A.to("cpu").device == "cpu"
    np.testing.assert_array_equal(A.to("cpu").to_numpy(), A.to_numpy())
    with pytest.raises(ValueError, match="device"):
        A.to("tpu")
    if not HAVE_GPU:
        with pytest.raises(device.CudaUnavailable, match="pip install"):
            A.to("cuda")


def test_dense_contraction_steps_are_recognised_for_cublas():
    """The factored steps of (U Vᵀ + S)·X, Vᵀ·X and U·(..), are dense contractions (cuBLAS on the GPU);
    the sparse step S·X added into the target is not."""
    from sparsedsl.backends.cuda.plan import dense_contraction
    from sparsedsl.lang.lower import lower

    rng = np.random.default_rng(4)
    A = sd.lowrank(rng.standard_normal((30, 3)), rng.standard_normal((20, 3))) + _csr(rng, 30, 20, 0.2)
    k = sd.compile("Y[i,n] = A[i,j] * X[j,n]")
    plan = k.plan(k.bind((), {"A": A, "X": rng.standard_normal((20, 4))}))
    found = [dense_contraction(lower(plan.rewritten, st, i, {"backend": "cuda"}).function)
             for i, (st, *_) in enumerate(plan.steps)]
    assert [c is not None for c in found] == [True, True, False]
    # the sparse term, added into Y, takes a thread per (row, column) pair like a plain SpMM
    from sparsedsl.backends.cuda.plan import plan_steps

    st, *_ = plan.steps[2]
    kernels = [s for s in plan_steps(lower(plan.rewritten, st, 2, {"backend": "cuda"}).function, [])
               if s.kind == "parallel"]
    assert len(kernels) == 1 and kernels[0].collapse is not None and not kernels[0].atomic
    vtx, u_t = found[0], found[1]
    assert not vtx.accumulate and not u_t.accumulate
    ins, out = vtx.spec.split("->")
    assert len(out) == 2 and set(ins.split(",")[0]) & set(ins.split(",")[1]) - set(out)  # a contracted index
    # a stored product whose loops do not cover whole extents, or a sum of terms, is not one
    k2 = sd.compile("Y[i,n] = A[i,j] * X[j,n] + Z[i,n]")
    plan2 = k2.plan(k2.bind((), {"A": rng.standard_normal((5, 4)), "X": rng.standard_normal((4, 3)),
                                 "Z": rng.standard_normal((5, 3))}))
    # (the implicit sum binds the product only: it is a step of its own, a contraction; the sum is not)
    found2 = {st.target.tensor: dense_contraction(lower(plan2.rewritten, st, i, {"backend": "cuda"}).function)
              for i, (st, *_) in enumerate(plan2.steps)}
    assert found2.pop("Y") is None and [c is not None for c in found2.values()] == [True]


@pytest.mark.parametrize("spec", ["ca,cb->ab", "ac,cb->ab", "ab,b->a", "abc,cd->abd", "bac,cd->dab",
                                  "ab,ab->a", "ab,cb->ca", "a,b->ab", "abc,cbd->ad"])
def test_contraction_step_matches_einsum(spec, monkeypatch):
    """The cuBLAS path of a dense contraction step (tensordot, then the output's axis order), run
    here with numpy standing in for cupy (the two share these functions)."""
    from sparsedsl.backends.cuda.plan import Contraction

    monkeypatch.setattr(device, "cupy", lambda: np)
    rng = np.random.default_rng(len(spec))
    (lix, rix), oix = spec.split("->")[0].split(","), spec.split("->")[1]
    dims = {x: int(rng.integers(1, 5)) for x in set(lix + rix)}
    left, right = (rng.standard_normal([dims[x] for x in ix]) for ix in (lix, rix))
    want = np.einsum(spec, left, right)
    for accumulate, start in ((False, 0.0), (True, 1.5)):
        out = np.full(want.shape, start)
        got = compiled._contract({"L": left, "R": right, "out": out}, Contraction(spec, "L", "R", accumulate, "out"))
        assert got is out
        np.testing.assert_allclose(out, want + start, rtol=1e-12, atol=1e-12)

"""sparsedsl.dask on a LocalCluster of 2 worker processes: every partitioned operation against the
single-machine result (and scipy), kernels planned once per worker, a worker killed mid-run."""

import os
import pickle
import signal
import time

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import sparsedsl as sd

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
import dask.array as da  # noqa: E402

import sparsedsl.dask as sdd  # noqa: E402


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


def matrix(m=300, n=200, density=0.05, seed=0):
    return sp.random(m, n, density=density, format="csr", random_state=seed)


def same_sparse(got, want: sd.SparseTensor, tol=1e-12):
    assert isinstance(got, sd.SparseTensor)
    assert got.shape == want.shape and got.format == want.format and got.dtype == want.dtype
    np.testing.assert_allclose(got.todense(), want.todense(), rtol=tol, atol=tol)


# ---- partitions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["csr", "coo", "csc", "bsr(4,4)"])
def test_partition_round_trip_every_format(client, fmt):
    A = sd.asformat(matrix(64, 48), fmt)
    for parts in (3, (2, 3)):
        P = sdd.partition(A, parts)
        assert P.shape == A.shape and P.format == A.format
        same_sparse(P.compute(), A, tol=0)
    P = sdd.partition(A, chunks=((16, 48), (24, 24)))
    assert P.grid == (2, 2)
    same_sparse(P.compute(), A, tol=0)


def test_partition_balances_nonzeros_of_skewed_rows():
    rows = np.repeat(np.arange(100), np.r_[[200] * 5, [2] * 95])  # five heavy rows first
    A = sp.csr_matrix((np.ones(len(rows)), (rows, np.arange(len(rows)) % 300)), shape=(100, 300))
    P = sdd.partition(A, 4, scatter=False)
    per_block = [A[a:b].nnz for a, b in zip(P.splits[0][:-1], P.splits[0][1:])]
    assert max(per_block) <= 1.5 * A.nnz / 4 + 200, per_block


def test_partition_from_dask_array_and_numpy(client):
    A = matrix(120, 90).toarray()
    x = da.from_array(A, chunks=(40, 90))
    P = sdd.partition(x)
    assert P.chunks == ((40, 40, 40), (90,))
    np.testing.assert_array_equal(P.compute().todense(), A)
    np.testing.assert_array_equal(sdd.partition(x, 2).compute().todense(), A)
    np.testing.assert_array_equal(sdd.partition(A, chunks=50).compute().todense(), A)
    chunks_of_scipy = x.map_blocks(sp.csr_matrix, meta=sp.csr_matrix((0, 0)))
    np.testing.assert_array_equal(sdd.partition(chunks_of_scipy).compute().todense(), A)


@pytest.mark.parametrize("symmetry", ["general", "symmetric"])
def test_matrix_market_read_in_byte_ranges(client, tmp_path, symmetry):
    M = matrix(150, 150, density=0.05, seed=3)
    if symmetry == "symmetric":
        M = sp.csr_matrix(M + M.T)
    path = tmp_path / "m.mtx"
    scipy.io.mmwrite(path, M, symmetry=symmetry)
    P = sdd.read_mtx(path, 3, chunk_bytes=500)  # many small ranges: lines cut at range ends
    assert P.grid == (3, 1)
    np.testing.assert_allclose(P.compute().todense(), M.toarray(), rtol=1e-15)
    same_sparse(sdd.partition(str(path), 2).compute(), sd.io.mmread(path))


# ---- operations against the single-machine result -------------------------------------------------

@pytest.mark.parametrize("fmt", ["csr", "coo", "bsr(4,4)"])
def test_spmv_spmm(client, fmt):
    A = sd.asformat(matrix(128, 96), fmt)
    P = sdd.partition(A, 3)
    x, X = np.random.default_rng(0).random(96), np.random.default_rng(1).random((96, 5))
    y = P @ x
    assert isinstance(y, da.Array) and y.chunks == (P.chunks[0],)
    np.testing.assert_allclose(y.compute(), A @ x, rtol=1e-13)
    np.testing.assert_allclose((P @ X).compute(), A @ X, rtol=1e-13)
    np.testing.assert_allclose((P @ da.from_array(X, chunks=(30, 5))).compute(), A @ X, rtol=1e-13)
    u = np.random.default_rng(2).random(128)
    np.testing.assert_allclose((u @ P).compute(), u @ A, rtol=1e-13)  # the cut index summed away
    np.testing.assert_allclose(y.compute(), A.to_scipy() @ x, rtol=1e-13)  # and scipy


def test_spmv_on_a_2d_grid_adds_partial_products(client):
    A = sd.asformat(matrix(), "csr")
    P = sdd.partition(A, (3, 2))
    x = np.arange(200.0)
    np.testing.assert_allclose((P @ x).compute(), A @ x, rtol=1e-13)


def test_kernel_call_and_sddmm(client):
    A = sd.asformat(matrix(), "csr")
    P = sdd.partition(A, 4)
    rng = np.random.default_rng(0)
    U, V = rng.random((300, 8)), rng.random((200, 8))
    sddmm = sd.compile("C[i,j] = S[i,j] * U[i,k] * V[j,k]", S="csr", out_format="csr")
    got = sdd.call(sddmm, S=P, U=U, V=V)
    assert isinstance(got, sdd.PartitionedTensor) and got.chunks == P.chunks
    same_sparse(got.compute(), sddmm(S=A, U=U, V=V))
    hook = P.__sparsedsl_call__(sddmm, {"S": P, "U": U, "V": V})  # what Kernel.__call__ may defer to
    same_sparse(hook.compute(), sddmm(S=A, U=U, V=V))
    alpha = sd.compile("y[i] = alpha * A[i,j] * x[j] + x2[i]")
    x, x2 = rng.random(200), rng.random(300)  # x2 is cut with A's rows, x is whole on every worker
    np.testing.assert_allclose(sdd.call(alpha, A=P, x=x, x2=x2, alpha=2.5).compute(),
                               alpha(A=A, x=x, x2=x2, alpha=2.5), rtol=1e-13)


def test_three_dimensional_tensor(client):
    T = sd.random((30, 20, 10), 0.05, format="coo", seed=0)
    PT = sdd.partition(T, 3)
    same_sparse(PT.compute(), T, tol=0)
    rng = np.random.default_rng(0)
    B, C = rng.random((20, 4)), rng.random((10, 4))
    mttkrp = sd.compile("M[i,r] = T[i,j,k] * B[j,r] * C[k,r]", name="mttkrp")
    np.testing.assert_allclose(sdd.call(mttkrp, T=PT, B=B, C=C).compute(), mttkrp(T=T, B=B, C=C), rtol=1e-13)


def test_kernel_with_row_temporaries(client):
    softmax = sd.compile("let m[i] = max[j](S[i,j])\n"
                         "let e[i,j] = mask(S[i,j], exp(S[i,j] - m[i]))\n"
                         "let z[i] = e[i,j]\n"
                         "P[i,j] = e[i,j] / z[i]", S="csr", out_format="csr", name="softmax")
    A = sd.asformat(matrix(), "csr")
    same_sparse(sdd.call(softmax, S=sdd.partition(A, 3)).compute(), softmax(S=A))  # temporaries per row block
    by_column = sd.compile("let z[j] = S[i,j]\nP[i,j] = S[i,j] / z[j]", S="csr", out_format="csr")
    with pytest.raises(ValueError, match="temporary .* reduces the partitioned index 'i'"):
        sdd.call(by_column, S=sdd.partition(A, 3))


def test_elementwise(client):
    A, B = sd.asformat(matrix(seed=0), "csr"), sd.asformat(matrix(seed=1), "csr")
    PA = sdd.partition(A, 3)
    PB = sdd.partition(B, chunks=PA.chunks)
    for got, want in [(PA + PB, A + B), (PA - PB, A - B), (PA * PB, A * B), (PA * 2.0, A * 2.0),
                      (3 * PA, 3 * A), (PA / 4, A / 4), (-PA, -A), (abs(-PA), abs(-A))]:
        same_sparse(got.compute(), want)
    P2 = sdd.partition(A, (2, 2))
    same_sparse((P2 + B).compute(), A + B)  # a whole SparseTensor is cut to face each block
    same_sparse((B * P2).compute(), B * A)
    row = np.arange(200.0)
    same_sparse((PA * row).compute(), A * row)  # sparse * dense stays sparse, the dense side cut by rows
    np.testing.assert_allclose((PA + row).compute(), A + row)  # sparse + dense is dense: a dask array
    e = sdd.compute("C[i,j] = A[i,j] * B[i,j] + A[i,j]", A=PA, B=PB, out_format="csr")
    same_sparse(e.compute(), sd.compute("C[i,j] = A[i,j] * B[i,j] + A[i,j]", A=A, B=B, out_format="csr"))


@pytest.mark.parametrize("grid", [3, (2, 2)])
def test_reductions(client, grid):
    A = sd.asformat(matrix(), "csr")
    P = sdd.partition(A, grid)
    for kind in ("sum", "max", "min"):
        for axis in (None, 0, 1):
            want = getattr(A, kind)(axis=axis)
            np.testing.assert_allclose(getattr(P, kind)(axis=axis).compute(), want, rtol=1e-12)
    np.testing.assert_allclose(sdd.compute("s[j] = A[i,j]", A=P).compute(), A.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sdd.compute("m[j] = max[i](A[i,j])", A=P).compute(),
                               sd.compute("m[j] = max[i](A[i,j])", A=A))
    np.testing.assert_allclose(sdd.compute("s[] = A[i,j] * A[i,j]", A=P).compute(),
                               sd.compute("s[] = A[i,j] * A[i,j]", A=A), rtol=1e-12)


def test_spgemm_block_row_times_replicated_and_2d_blocks(client):
    A, B = sd.asformat(matrix(300, 200, seed=0), "csr"), sd.asformat(matrix(200, 150, seed=1), "csr")
    want = A @ B
    C = sdd.partition(A, 3) @ B  # block rows of A times the whole B, on every worker
    assert isinstance(C, sdd.PartitionedTensor) and C.grid == (3, 1)
    same_sparse(C.compute(), want)
    PA = sdd.partition(A, (3, 2))
    PB = sdd.partition(B, chunks=(PA.chunks[1], (75, 75)))
    C2 = PA @ PB  # C_IJ = sum_K A_IK B_KJ: partial products added as sparse tensors
    assert C2.grid == (3, 2)
    same_sparse(C2.compute(), want)
    np.testing.assert_allclose(C2.compute().to_scipy().toarray(), (A.to_scipy() @ B.to_scipy()).toarray())


def test_transpose_and_linear_operator_in_scipy_cg(client):
    n = 120
    L = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(n, n), format="csr")
    P = sdd.partition(L, 3)
    same_sparse(P.T.compute(), sd.asformat(L, "csr").T)
    b = np.random.default_rng(0).random(n)
    x, info = sp.linalg.cg(sdd.aslinearoperator(P), b, rtol=1e-10)
    want, _ = sp.linalg.cg(L, b, rtol=1e-10)
    assert info == 0
    np.testing.assert_allclose(x, want, rtol=1e-8)


# ---- the standard library's SpMV-bound solvers on partitioned operands --------------------------------

def test_spectral_sparsify_solves_on_a_partitioned_graph(client):
    from sparsedsl.stdlib import graph

    path = sp.diags([1.0, 1.0], [-1, 1], shape=(8, 8))
    G = sd.asformat(sp.csr_matrix(sp.kron(path, sp.eye(8)) + sp.kron(sp.eye(8), path)), "csr")  # 8x8 grid
    PG = sdd.partition(G, 2)
    u, v, w, R = graph.effective_resistances(G, random_state=0)
    pu, pv, pw, pR = graph.effective_resistances(PG, random_state=0)  # the block CG's products on the blocks
    np.testing.assert_array_equal(pu, u)
    np.testing.assert_allclose(pR, R, rtol=1e-8)
    H, PH = graph.spectral_sparsify(G, 0.5, random_state=0), graph.spectral_sparsify(PG, 0.5, random_state=0)
    same_sparse(PH, H, tol=1e-8)


def test_sns_conjugate_gradient_with_a_partitioned_hessian(client):
    from sparsedsl.stdlib import ot

    rng = np.random.default_rng(0)
    n = 60
    x, y = rng.random((n, 2)), rng.random((n, 2))
    M = ((x[:, None] - y[None]) ** 2).sum(-1)
    P = np.exp(-M / 0.05)
    P /= P.sum()
    S, St = ot._sparsify(P, None, rng, 1e-4)  # SNS's sparsified Hessian block and its transpose (csr)
    r, c = P.sum(1), P.sum(0)
    PS, PSt = sdd.partition(S, 3), sdd.partition(St, 3)

    def hess(z):  # the stdlib's own Hessian kernels, run on the partitions
        u, v = z[:n], z[n:]
        return np.concatenate([sdd.call(ot._hess_top, S=PS, r=r, u=u, v=v).compute(),
                               sdd.call(ot._hess_bottom, St=PSt, c=c, u=u, v=v).compute()])

    def local(z):
        u, v = z[:n], z[n:]
        return np.concatenate([ot._hess_top(S=S, r=r, u=u, v=v), ot._hess_bottom(St=St, c=c, u=u, v=v)])

    rhs = np.concatenate([rng.random(n) - 0.5, rng.random(n) - 0.5])
    precond = 1.0 / np.concatenate([r, c])
    got, k = ot._cg(hess, rhs, precond, 1e-8, 200)
    want, k0 = ot._cg(local, rhs, precond, 1e-8, 200)
    assert k == k0
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


# ---- Dask behaviour: kernels travel as programs, planned once per worker; a lost worker ---------------

def test_kernels_pickle_and_plan_once_per_worker(client):
    spmv = sd.compile("y[i] = A[i,j] * x[j]", name="spmv_once")
    again = pickle.loads(pickle.dumps(spmv))  # the program travels, not machine code
    A = sd.asformat(matrix(), "csr")
    x = np.ones(200)
    np.testing.assert_allclose(again(A=A, x=x), spmv(A=A, x=x))
    P = sdd.partition(A, 8)
    for _ in range(3):  # three graphs of 8 tasks
        np.testing.assert_allclose(sdd.call(spmv, A=P, x=x).compute(), A @ x, rtol=1e-13)
    stats = client.run(sdd.worker_stats)
    calls = sum(s["counts"].get("calls:spmv_once", 0) for s in stats.values())
    planned = [s["counts"].get("planned:spmv_once", 0) for s in stats.values()]
    assert calls == 24
    assert all(p <= 1 for p in planned) and sum(planned) >= 1, planned  # once per worker that ran it
    for s in stats.values():  # every call after a worker's first finds its plan made
        secs = s["seconds"].get("spmv_once", [])
        if len(secs) > 2:
            assert max(secs[1:]) < 0.5 * secs[0] or secs[0] < 0.01, secs


def test_worker_killed_mid_computation_is_recomputed(client, tmp_path):
    M = matrix(400, 400, density=0.05, seed=5)
    path = tmp_path / "big.mtx"
    scipy.io.mmwrite(path, M)
    P = sdd.read_mtx(path, 4, chunk_bytes=4000)  # ~50 read tasks, then the SpMV on 4 blocks
    x = np.random.default_rng(0).random(400)
    future = client.compute(P @ x)
    pids = client.run(os.getpid)
    deadline = time.time() + 30
    while not any(client.processing().values()) and time.time() < deadline:
        time.sleep(0.01)
    victim = next(iter(pids.values()))
    os.kill(victim, signal.SIGKILL)
    assert not future.done()  # killed mid-computation
    y = future.result(timeout=60)
    np.testing.assert_allclose(y, M @ x, rtol=1e-12)
    assert victim not in client.run(os.getpid).values()  # the nanny started a new process


# ---- errors that say what to do ---------------------------------------------------------------------

def test_a_kernel_called_with_a_partitioned_operand_runs_on_the_blocks(client):
    A = sd.asformat(matrix(), "csr")
    y = sd.compile("y[i] = A[i,j] * x[j]")(A=sdd.partition(A, 3), x=np.ones(A.shape[1]))
    np.testing.assert_allclose(np.asarray(y.compute()), A.to_scipy() @ np.ones(A.shape[1]), rtol=1e-12)


def test_errors(client):
    A = sd.asformat(matrix(), "csr")
    P3, P2 = sdd.partition(A, 3), sdd.partition(A, 2)
    with pytest.raises(ValueError, match="cut differently.*partition"):
        sdd.compute("C[i,j] = A[i,j] + B[i,j]", A=P3, B=P2, out_format="csr")
    with pytest.raises(ValueError, match="cut alike"):
        P3 + P2
    with pytest.raises(ValueError, match="cannot be combined"):
        sdd.compute("y[j] = exp(A[i,j] * x[i])", A=P3, x=np.ones(300))
    with pytest.raises(ValueError, match="no operand is partitioned"):
        sdd.compute("y[i] = A[i,j] * x[j]", A=A, x=np.ones(200))
    with pytest.raises(TypeError, match="takes the operands"):
        sdd.compute("y[i] = A[i,j] * x[j]", A=P3)
    with pytest.raises(ValueError, match="nparts must be"):
        sdd.partition(A, 0)
    with pytest.raises(ValueError, match="multiple of 4"):
        sdd.partition(sd.asformat(matrix(64, 48), "bsr(4,4)"), chunks=(30, 34))
    with pytest.raises(ValueError, match="do not align"):
        P3 @ np.ones(7)
    with pytest.raises(ValueError, match="column blocks to match"):
        sdd.partition(A, (3, 2)) @ sdd.partition(matrix(200, 50), 3)

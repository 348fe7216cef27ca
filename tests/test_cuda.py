"""The CUDA backend: rendered source (everywhere), and on a GPU the property suite of the CPU backend
(tests/test_properties.py) against the dense interpreter, plus device operands of every kind."""

import re

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.backends.cuda import cexpr, compiled, device, plan
from sparsedsl.backends.cuda import render as cuda_render

HAVE_GPU = device.available()
gpu = pytest.mark.skipif(not HAVE_GPU, reason="needs cupy and an NVIDIA GPU")


def _step_args(kernel, **operands):
    """(loop-IR function, host arguments) of a one-statement kernel, as the driver would pass them."""
    from sparsedsl.lang.lower import lower

    bound = kernel.bind((), operands)
    plan = kernel.plan(bound)  # checked on the CPU; lowered again below as for the GPU (its schedules differ)
    (st, _, _, _), = plan.steps
    low = lower(plan.rewritten, st, 0, {"backend": "cuda"})
    ttype = plan.rewritten.types[st.target.tensor]
    return low.function, [plan.argument(low.arguments[p], bound, {}, ttype) for p in low.function.params]


# ---- render only: no cupy or GPU needed ---------------------------------------------------------


def test_spmv_renders_a_lane_split_reduction():
    a = sp.random(30, 20, density=0.3, format="csr", random_state=0, dtype=np.float32)
    fn, args = _step_args(sd.compile("y[i] = A[i,j] * x[j]", A="csr"), A=a, x=np.ones(20, np.float32))
    src = cuda_render.render(fn, args)
    assert "__shfl_down_sync" in src and 'extern "C" __global__ void stmt0_k0_l32(' in src
    assert "const float* __restrict__ t_A" in src and "const int* __restrict__ t_A1_pos" in src
    assert "float acc;" in src  # float32 accumulates in float32 (a Python literal does not promote)
    assert "one thread: serial code" not in src


def test_two_phase_sparse_output_is_parallel_apart_from_scalars():
    a = sp.random(30, 20, density=0.3, format="csr", random_state=0)
    k = sd.compile("C[i,j] = A[i,j] * B[i,j]", A="csr", B="csr", out_format="csr")
    fn, args = _step_args(k, A=a, B=a)
    steps = plan.plan_steps(fn, [p for p, v in zip(fn.params, args) if np.ndim(v) == 0])
    kinds = [s.kind for s in steps]
    if "return" in kinds:  # the lowering assembles in two phases
        assert kinds.count("parallel") == 2 and "cumsum" in kinds and "serial" not in kinds
    assert "__global__" in cuda_render.render(fn, args)


def test_expressions_print_as_c():
    types = cexpr.Types({"a": ("float32", 1), "m": ("float64", 2)}, {"i": "int64", "s": "float32"})
    c = cexpr.CExpr(types, {"m": ["m_sh1"]})
    assert c("(a[i] if i > 2 else 0.5)") == "((i > 2) ? a[i] : ((float)(0.5)))"
    assert c("max(a[i], 0)") == "sd_max(a[i], ((float)(0)))"
    assert c("m[i, i + 1] * s") == "(m[(i) * m_sh1 + (i + 1)] * ((double)(s)))"
    assert c("-np.inf") == "(-SD_INF)"
    assert c("not (i < 3 and s >= 1.0)") == "(!((i < 3) && (s >= ((float)(1.0)))))"
    assert c("exp(i)") == "sd_exp(((double)(i)))"
    assert c("i // 4 + i % 4") == "(sd_floordiv(i, ((long long)(4))) + sd_mod(i, ((long long)(4))))"
    # bit operations in the operands' integer type, literals cast (C would shift 1 as an int)
    types.arrays["w"] = ("uint32", 1)
    assert c("w[i] >> 16 & 255") == "((w[i] >> ((unsigned int)(16))) & ((unsigned int)(255)))"
    assert c("1 << i") == "(((long long)(1)) << i)"
    assert c("i & (i - 1)") == "(i & (i - 1))"
    assert c("trailing_zeros(w[i])") == "sd_trailing_zeros(w[i])"  # __ffs(x) - 1, by overload
    assert cexpr.join("float32", cexpr.WEAK_FLOAT) == "float32"
    assert cexpr.join("int32", "float32") == "float64"


@pytest.mark.skipif(HAVE_GPU, reason="checks the error without a GPU")
def test_cuda_without_cupy_or_gpu_says_how_to_install():
    with pytest.raises(device.CudaUnavailable, match=r'pip install "sparsedsl\[cuda\]"'):
        sd.compute("y[i] = A[i,j] * x[j]", A=sp.eye(3, format="csr"), x=np.ones(3), backend="cuda")


# ---- on the GPU -----------------------------------------------------------------------------------

if HAVE_GPU:
    import cupy as cp
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from test_properties import BITMAP_PROGRAMS, PROGRAMS, assert_equal, bitmap_case, instances, poisoned_allocations

    @pytest.mark.gpu
    @pytest.mark.parametrize("program", PROGRAMS, ids=[p[0] for p in PROGRAMS])
    @settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data())
    def test_cuda_matches_interpreter(program, data):
        expr, formats, values, out_kind = data.draw(instances(program))
        out_ndim = len(expr.split("=")[0].split("[")[1].split(","))
        out_format = "dense" if out_kind == "dense" else {1: "sparse", 2: "csr", 3: "csf"}[out_ndim]
        kernel = sd.compile(expr, out_format=out_format, **formats)
        operands = {n: sd.asformat(v, formats[n]) for n, v in values.items()}
        with poisoned_allocations():  # outputs stored in full start as NaN / 77, not as zeros
            got = kernel(**operands, backend="cuda")
        got = got.to("cpu") if isinstance(got, sd.SparseTensor) else cp.asnumpy(got)
        assert_equal(got, kernel.reference(**operands))

    @pytest.mark.gpu
    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data(), cols=st.sampled_from([1, 31, 32, 33, 64, 100]),
           program=st.sampled_from(BITMAP_PROGRAMS), out_format=st.sampled_from(["dense", "csr"]))
    def test_cuda_bitmap_rows_across_word_boundaries_match_interpreter(data, cols, program, out_format):
        kernel, operands = bitmap_case(data, cols, program, out_format)
        got = kernel(**operands, backend="cuda")
        got = got.to("cpu") if isinstance(got, sd.SparseTensor) else cp.asnumpy(got)
        assert_equal(got, kernel.reference(**operands))


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nnz_per_row", [1, 5, 40, 300])
def test_spmv_on_device_operands_matches_cusparse(dtype, nnz_per_row):
    import cupyx.scipy.sparse as csp

    rng = np.random.default_rng(nnz_per_row)
    n = 3000
    a = sp.random(n, n, density=nnz_per_row / n, format="csr", random_state=rng, dtype=dtype)
    A = sd.asformat(a, "csr").to("cuda")
    assert A.device == "cuda" and isinstance(A.values, cp.ndarray)
    x = cp.asarray(rng.random(n).astype(dtype))
    kernel = sd.compile("y[i] = A[i,j] * x[j]", A="csr")
    y = kernel(A=A, x=x)  # on the GPU because the operands are
    assert isinstance(y, cp.ndarray) and y.dtype == dtype
    want = csp.csr_matrix(a) @ x
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(cp.asnumpy(y), cp.asnumpy(want), rtol=tol, atol=tol)
    assert ("__shfl_down_sync" in sd.explain(kernel, A=A, x=x)) == (nnz_per_row >= 8)  # lanes ~ nnz/4


@gpu
@pytest.mark.gpu
def test_cupyx_and_torch_operands_come_back_as_they_went_in():
    import cupyx.scipy.sparse as csp

    a = sp.random(200, 100, density=0.1, format="csr", random_state=3, dtype=np.float32)
    X = np.random.default_rng(0).random((100, 8)).astype(np.float32)
    Y = sd.compute("Y[i,n] = A[i,j] * X[j,n]", A=csp.csr_matrix(a), X=cp.asarray(X))
    assert isinstance(Y, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(Y), a @ X, rtol=1e-4)
    torch = pytest.importorskip("torch")
    Yt = sd.compute("Y[i,n] = A[i,j] * X[j,n]", A=sd.asformat(a, "csr"), X=torch.from_numpy(X).cuda())
    assert isinstance(Yt, torch.Tensor) and Yt.is_cuda
    np.testing.assert_allclose(Yt.cpu().numpy(), a @ X, rtol=1e-4)


@gpu
@pytest.mark.gpu
def test_sparse_output_on_device_and_multi_statement_softmax():
    a = sp.random(300, 200, density=0.05, format="csr", random_state=4)
    A = sd.asformat(a, "csr").to("cuda")
    C = sd.compute("C[i,j] = A[i,k] * B[k,j]", A=A, B=sd.asformat(a.T.tocsr(), "csr").to("cuda"), out_format="csr")
    assert isinstance(C, sd.SparseTensor) and C.device == "cuda"
    np.testing.assert_allclose(C.to_numpy(), (a @ a.T).toarray(), rtol=1e-12, atol=1e-12)
    kernel = sd.compile("let m[i] = max[j](S[i,j])\n"
                        "let e[i,j] = mask(S[i,j], exp(S[i,j] - m[i]))\n"
                        "let z[i] = e[i,j]\n"
                        "P[i,j] = e[i,j] / z[i]", S="csr", out_format="csr")
    P = kernel(S=A)
    want = kernel.reference(S=sd.asformat(a, "csr"))
    np.testing.assert_allclose(P.to_numpy(), want.to_numpy(), rtol=1e-12, atol=1e-12)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("out_format", ["coo", "csc", "dcsr", "bitmap"])
@pytest.mark.parametrize("program", ["C[i,j] = A[i,j] * B[i,j]", "C[i,j] = A[i,k] * B[k,j]",
                                     "C[i,j] = A[i,j] + B[j,i]"])
def test_every_sparse_output_format_is_packed_on_the_device(out_format, program):
    """Entry lists and two-phase coordinates stay on the GPU: the output's level arrays and values are
    cupy arrays (no host round trip), and the tensor equals the CPU result."""
    a = sp.random(120, 120, density=0.05, format="csr", random_state=5)
    b = sp.random(120, 120, density=0.05, format="csr", random_state=6)
    kernel = sd.compile(program, A="csr", B="csr", out_format=out_format)
    got = kernel(A=sd.asformat(a, "csr").to("cuda"), B=sd.asformat(b, "csr").to("cuda"))
    want = kernel(A=sd.asformat(a, "csr"), B=sd.asformat(b, "csr"))
    assert got.device == "cuda" and isinstance(got.values, cp.ndarray)
    assert all(isinstance(arr, cp.ndarray) for lv in got.levels for arr in lv.values())
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12, atol=1e-12)


# ---- 16-bit floats and the skinny (weights x a few columns) template ------------------------------


def _pruned(rows, cols, fmt, rng):
    """A float32 matrix whose nonzeros fit ``fmt`` (2 of every 4 / 8 columns, or 30% of a bitmap)."""
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    if fmt.startswith("nm"):
        n, m = (int(v) for v in fmt[3:-1].split(","))
        g = np.abs(w).reshape(rows, cols // m, m)
        keep = np.argsort(g, axis=2)[:, :, m - n:]
        mask = np.zeros_like(g, dtype=bool)
        np.put_along_axis(mask, keep, True, axis=2)
        return w * mask.reshape(rows, cols)
    return w * (rng.random((rows, cols)) < 0.3)


@pytest.mark.parametrize("fmt", ["nm(2,4)", "nm(2,8)", "bitmap"])
def test_skinny_product_renders_the_tensor_core_template_for_16_bit_weights(fmt):
    rng = np.random.default_rng(0)
    w = _pruned(32, 128, fmt, rng)
    kernel = sd.compile("Y[i,n] = W[i,j] * X[j,n]", W=fmt)
    fn, args = _step_args(kernel, W=sd.asformat(w, fmt), X=np.ones((128, 16), np.float32))
    assert "skinny" not in cuda_render.render(fn, args)  # float32 weights: the generic kernel only
    half = [a.astype(np.float16) if isinstance(a, np.ndarray) and a.dtype == np.float32 and p != "out" else a
            for p, a in zip(fn.params, args)]
    src = cuda_render.render(fn, half)
    assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in src and "_skinny1x8x1x1x8(" in src
    assert "sd_h2f(" in src  # the generic kernel widens 16-bit loads to float32 as well
    if fmt == "bitmap":  # a mask word per lane and row, the values through a window in shared memory
        assert "__ldg(t_W1_mask + sd_base[h] + (sd_c + 2) * 4 + sd_t)" in src and "sd_win[sd_warp]" in src
        assert "sd_trailing_zeros(" in src  # the generic kernel walks the set bits


def _half_skinny(fmt):
    """(loop-IR function, float16 host arguments) of Y = W·X with W in ``fmt``."""
    w = _pruned(32, 128, fmt, np.random.default_rng(0))
    fn, args = _step_args(sd.compile("Y[i,n] = W[i,j] * X[j,n]", W=fmt), W=sd.asformat(w, fmt),
                          X=np.ones((128, 16), np.float32))
    return fn, [a.astype(np.float16) if isinstance(a, np.ndarray) and a.dtype == np.float32 and p != "out" else a
                for p, a in zip(fn.params, args)]


@pytest.mark.parametrize("fmt, template", [("nm(2,4)", "cuda.skinny"), ("nm(2,8)", "cuda.skinny"),
                                           ("bitmap", "cuda.skinny"), ("csr", None)])
def test_the_registry_picks_each_weight_formats_template(fmt, template):
    fn, args = _half_skinny(fmt)
    (step,) = [st for st in cuda_render.rendered(fn, args).steps if st.kind == "parallel"]
    assert step.template == template
    if template is None:  # CSR weights: neither fits, each says why
        assert dict(step.rejected) == {
            "cuda.skinny": "the weight level's loop is neither (N:M: the column loop holds no walk of N:M groups "
                           "(no nm_groups iteration declared by a level)) nor (bitmap: the column loop holds no "
                           "walk of mask words (no bitmap_words iteration declared by a level))",
            "cuda.spgemm": "not a row of a two-phase sparse-output assembly through a workspace (Gustavson's SpGEMM)"}


def test_spgemm_is_chosen_by_the_registry_and_explained_without_a_gpu():
    a = sp.random(300, 200, density=0.05, format="csr", random_state=0)
    k = sd.compile("C[i,j] = A[i,k] * B[k,j]", A="csr", B="csr", out_format="csr")
    fn, args = _step_args(k, A=a, B=a.T.tocsr())
    chosen = [st.template for st in cuda_render.rendered(fn, args).steps if st.kind == "parallel"]
    assert chosen == ["cuda.spgemm", "cuda.spgemm"]  # the count pass and the fill pass
    text = sd.explain(k, A=a, B=a.T.tocsr(), backend="cuda")  # no GPU on this machine: rendered, not run
    assert "(template cuda.spgemm)" in text and "stmt0_k2_spgemm" in text and "prefix sum (cupy.cumsum)" in text


def _edited(stmts, fn):
    """A copy of loop-IR statements with ``fn`` applied to every Assign/If (the others kept)."""
    from dataclasses import replace

    from sparsedsl.lang import loopir as L

    def visit(s):
        s = fn(s)
        if isinstance(s, L.For):
            return replace(s, body=[visit(x) for x in s.body])
        if isinstance(s, L.While):
            return replace(s, body=[visit(x) for x in s.body])
        if isinstance(s, L.If):
            return replace(s, then=[visit(x) for x in s.then], orelse=[visit(x) for x in s.orelse])
        return s
    return [visit(s) for s in stmts]


@pytest.mark.parametrize("fmt, change, reason", [
    # a bitmap level whose words became 64 bits wide: the template reads 32-bit words
    ("bitmap", {"bits": 64}, "bitmap: 64-bit mask words; the template reads 32-bit words"),
    # an N:M level with 4 bits of meta per slot: a group no longer fits the byte the template reads
    ("nm(2,4)", {"bits": 4}, "N:M: 2:4 with 4-bit in-group indices; the template needs N=2, M a multiple of 4"),
    # a level whose walk is not declared at all (a level written without an Iteration)
    ("bitmap", None, "bitmap: the column loop holds no walk of mask words (no bitmap_words iteration"),
])
def test_a_changed_level_loop_makes_the_template_say_why(fmt, change, reason):
    """The templates read the iteration a level declares on its loop, not the loop's text: a level
    that changes its walk changes the declaration, and the template says why it no longer applies."""
    from dataclasses import replace

    from sparsedsl.lang import loopir as L

    fn, args = _half_skinny(fmt)

    def edit(s):
        if not (isinstance(s, L.For) and s.iteration is not None and s.iteration.kind != "segment"):
            return s
        if change is None:
            return replace(s, iteration=None)
        return replace(s, iteration=replace(s.iteration, fields=tuple((k, change.get(k, v))
                                                                      for k, v in s.iteration.fields)))
    changed = replace(fn, body=_edited(fn.body, edit))
    assert not L.verify(L.Module([changed], changed.name))
    (step,) = [st for st in cuda_render.rendered(changed, args).steps if st.kind == "parallel"]
    assert step.template is None
    assert reason in dict(step.rejected)["cuda.skinny"]


def test_bitmap_generic_kernel_walks_mask_words_a_set_bit_at_a_time():
    a = sp.random(30, 70, density=0.3, format="csr", random_state=0)
    fn, args = _step_args(sd.compile("C[i,j] = A[i,j] * B[i,j]", A="bitmap", B="bitmap"),
                          A=sd.asformat(a, "bitmap"), B=sd.asformat(a, "bitmap"))
    src = cuda_render.render(fn, args)
    assert "const unsigned int* __restrict__ t_A1_mask" in src
    assert "sd_trailing_zeros(a0_1_b)" in src and "(a0_1_b & (a0_1_b - 1))" in src


def test_16_bit_loads_widen_and_stores_round():
    types = cexpr.Types({"a": ("float16", 1), "b": ("bfloat16", 1), "o": ("float16", 1)}, {"i": "int64"})
    c = cexpr.CExpr(types, {})
    assert c("a[i] * b[i]") == "(sd_h2f(a[i]) * sd_bf2f(b[i]))"
    stm = cexpr.CStmts(types, c)
    from sparsedsl.lang import loopir as L

    assert stm.assign(L.Assign("o[i]", "a[i]", "+")) == "o[i] = sd_f2h(sd_h2f(o[i]) + sd_h2f(a[i]));"


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("fmt", ["nm(2,4)", "nm(2,8)", "bitmap"])
@pytest.mark.parametrize("rows,cols,ncols", [(200, 512, 16), (64, 256, 32), (40, 128, 8), (33, 136, 16)])
def test_skinny_product_fp16_matches_float32(fmt, rows, cols, ncols):
    rng = np.random.default_rng(rows + cols)
    if fmt == "nm(2,8)" and cols % 8:
        cols += 4
    w = _pruned(rows, cols, fmt, rng)
    x = rng.standard_normal((cols, ncols)).astype(np.float32)
    w16, x16 = w.astype(np.float16), x.astype(np.float16)
    W = sd.asformat(w16.astype(np.float32), fmt).to("cuda").astype(np.float16)
    assert W.dtype == np.float16 and W.device == "cuda"
    kernel = sd.compile("Y[i,n] = W[i,j] * X[j,n]", W=fmt)
    with poisoned_allocations():  # Y starts as NaN: the template stores every element
        Y = kernel(W=W, X=cp.asarray(x16))
    assert isinstance(Y, cp.ndarray) and Y.dtype == np.float16
    want = w16.astype(np.float32) @ x16.astype(np.float32)
    np.testing.assert_allclose(cp.asnumpy(Y).astype(np.float32), want, rtol=2e-3, atol=2e-2)
    text = sd.explain(kernel, W=W, X=cp.asarray(x16))
    took = "skinny" in text.split("// ----")[0].split("last launch")[-1]
    from sparsedsl.backends.cuda.templates import skinny, skinny_kernel

    m = 4 if fmt == "nm(2,4)" else 8
    per_chunk = 4 * skinny.CONFIG.get(("nm", m), skinny.DEFAULT)[2] * m // 2 if fmt != "bitmap" \
        else skinny_kernel.BITMAP_CHUNK
    assert took == (ncols % 16 == 0 and cols % per_chunk == 0)


@gpu
@pytest.mark.gpu
def test_bfloat16_torch_operands_compute_in_float32():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    w = _pruned(64, 256, "nm(2,4)", rng)
    x = rng.standard_normal((256, 16)).astype(np.float32)
    wt, xt = torch.from_numpy(w).cuda().bfloat16(), torch.from_numpy(x).cuda().bfloat16()
    W = sd.asformat(wt, "nm(2,4)")
    assert W.device == "cuda" and device.storage(W) == "bfloat16"
    Y = sd.compute("Y[i,n] = W[i,j] * X[j,n]", W=W, X=xt)
    assert isinstance(Y, torch.Tensor) and Y.is_cuda and Y.dtype == torch.float32
    want = (wt.float() @ xt.float()).cpu().numpy()
    np.testing.assert_allclose(Y.cpu().numpy(), want, rtol=1e-4, atol=1e-3)
    # the generic path too (a CSR SpMV over bfloat16 values and vector)
    a = sp.random(300, 200, density=0.05, format="csr", random_state=1, dtype=np.float32)
    A = sd.asformat(a, "csr").to("cuda").astype("bfloat16")
    v = torch.from_numpy(rng.standard_normal(200).astype(np.float32)).cuda().bfloat16()
    y = sd.compute("y[i] = A[i,j] * x[j]", A=A, x=v)
    want = A.to("cpu").to_scipy() @ v.float().cpu().numpy()
    np.testing.assert_allclose(y.cpu().numpy(), want, rtol=1e-4, atol=1e-4)


@gpu
@pytest.mark.gpu
def test_float16_csr_spmv_and_cupy_operands():
    a = sp.random(500, 300, density=0.05, format="csr", random_state=2, dtype=np.float32)
    A = sd.asformat(a, "csr").to("cuda").astype(np.float16)
    x = cp.asarray(np.random.default_rng(3).standard_normal(300).astype(np.float16))
    y = sd.compute("y[i] = A[i,j] * x[j]", A=A, x=x)
    assert y.dtype == np.float16
    want = A.to("cpu").to_scipy().astype(np.float32) @ cp.asnumpy(x).astype(np.float32)
    np.testing.assert_allclose(cp.asnumpy(y).astype(np.float32), want, rtol=2e-3, atol=2e-3)


# ---- SDDMM: a count pass without dot products, lanes splitting the k reduction -------------------


def test_sddmm_count_pass_skips_the_dot_products_and_fill_pass_splits_k():
    s = sp.random(40, 30, density=0.2, format="csr", random_state=5, dtype=np.float32)
    rng = np.random.default_rng(5)
    kernel = sd.compile("C[i,j] = S[i,j] * U[i,k] * V[j,k]", S="csr", out_format="csr")
    fn, args = _step_args(kernel, S=sd.asformat(s, "csr"), U=rng.random((40, 64), dtype=np.float32),
                          V=rng.random((30, 64), dtype=np.float32))
    steps = plan.plan_steps(fn, [p for p, v in zip(fn.params, args) if np.ndim(v) == 0])
    par = [st for st in steps if st.kind == "parallel"]
    assert len(par) == 2
    count, fill = par
    assert not any(isinstance(x, cuda_render.L.Reduce) for x in plan._walk([count.loop]))
    assert count.nested is None and fill.nested is not None and fill.nested.op == "+"
    src = cuda_render.render(fn, args)
    assert "__shfl_xor_sync(sd_gmask" in src and "if (sd_lane == 0) out_v[oq]" in src
    # the rows of U and V along k: one 16-byte load per row and 4 iterations per lane
    assert "const float4 sd_v" in src and "*(const float4*)(&t_V[(v_j) * t_V_sh1 + v_k])" in src


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("rank", [1, 5, 8, 64, 100])
def test_sddmm_on_device_matches_dense(rank):
    rng = np.random.default_rng(rank)
    s = sp.random(300, 200, density=0.05, format="csr", random_state=rank, dtype=np.float32)
    u, v = rng.random((300, rank), dtype=np.float32), rng.random((200, rank), dtype=np.float32)
    kernel = sd.compile("C[i,j] = S[i,j] * U[i,k] * V[j,k]", S="csr", out_format="csr")
    C = kernel(S=sd.asformat(s, "csr").to("cuda"), U=cp.asarray(u), V=cp.asarray(v))
    assert C.device == "cuda" and C.nnz == s.nnz
    np.testing.assert_allclose(C.to_numpy(), s.toarray() * (u @ v.T), rtol=1e-5, atol=1e-5)
    # U's rows off a 16-byte boundary: the launch falls back to one iteration per lane
    shifted = cp.zeros(u.size + 1, dtype=np.float32)[1:].reshape(u.shape)
    shifted[...] = cp.asarray(u)
    C = kernel(S=sd.asformat(s, "csr").to("cuda"), U=shifted, V=cp.asarray(v))
    np.testing.assert_allclose(C.to_numpy(), s.toarray() * (u @ v.T), rtol=1e-5, atol=1e-5)


# ---- SpGEMM: a row's products in a hash table in shared memory (templates.spgemm) -------------------


def test_spgemm_renders_the_hash_table_schedule_for_both_passes():
    from sparsedsl.backends.cuda.templates import spgemm as cuda_spgemm

    a = sp.random(30, 30, density=0.2, format="csr", random_state=0, dtype=np.float32)
    kernel = sd.compile("C[i,j] = A[i,k] * B[k,j]", A="csr", B="csr", out_format="csr")
    fn, args = _step_args(kernel, A=a, B=a)
    spec = cuda_render.KernelSource(fn, cexpr.signature(dict(zip(fn.params, args))))
    count, fill = [st.spgemm for st in spec.steps if st.kind == "parallel"]
    assert count is not None and count.value is None and not count.stores and count.carried == {"cnt": 1}
    assert fill is not None and fill.value == "(t_A[a0_1_q] * t_B[a1_1_q])" and fill.stores
    assert fill.carried == {"oq": 1} and fill.same_rows(count)
    src = cuda_render.render(fn, args)
    for mode in ("warp", "block", "global"):
        assert src.count(f"_spgemm{mode}(") == 2
    assert "atomicCAS(&sd_tk[sd_s], 0xffffffffu, sd_key)" in src  # the shared-memory hash table
    assert "atomicAdd(&sd_tv[sd_s], sd_val);" in src and "atomicAdd(&sd_dv[sd_key], sd_val);" in src
    assert "sd_rank += (sd_q.x < sd_k)" in src  # the fill pass ranks each key: the row comes out sorted
    assert "if ((sd_a > sd_b) == ((sd_i & sd_k2) == 0))" in src  # the block kernel's bitonic sort
    assert "extern __shared__ __align__(16) unsigned char sd_dyn[];" in src  # block tables, global bitmap
    assert "atomicOr(&sd_bm[sd_off >> 5], 1u << (sd_off & 31));" in src
    assert f"if (sd_ub > {cuda_spgemm.WARP_UB})" in src and "counts[(v_i - 0)] = cnt;" in src
    assert "out_c1[oq] = ((int)(v_j));" in src and "out_v[oq] = sd_v;" in src
    # other sparse outputs keep the generic kernels
    s = sp.random(30, 30, density=0.2, format="csr", random_state=1)
    fn, args = _step_args(sd.compile("C[i,j] = A[i,j] * B[i,j]", A="csr", B="csr", out_format="csr"), A=s, B=s)
    assert "_spgemm" not in cuda_render.render(fn, args)


def _skewed(rows, cols, rng, long_rows=(), empty_rows=(), only_from=None):
    """A CSR matrix with Pareto-distributed row lengths, some rows of given lengths, some rows empty,
    and (``only_from``) columns drawn from a given set. Positive values: no product cancels, so
    scipy (which drops exact zeros) keeps the whole pattern."""
    lengths = np.minimum((rng.pareto(1.5, rows) * 2).astype(int) + 1, cols)
    for r, n in long_rows:
        lengths[r] = n
    lengths[list(empty_rows)] = 0
    pool = np.arange(cols) if only_from is None else np.asarray(only_from)
    indptr = np.concatenate([[0], np.cumsum(np.minimum(lengths, len(pool)))])
    indices = np.concatenate([np.sort(rng.choice(pool, min(n, len(pool)), replace=False)) for n in lengths]
                             + [np.zeros(0, int)])
    return sp.csr_matrix((rng.random(indptr[-1]) + 0.5, indices, indptr), shape=(rows, cols))


def _spgemm_matches_scipy(a, b, dtype, bins=None):
    a, b = a.astype(dtype), b.astype(dtype)
    kernel = sd.compile("C[i,j] = A[i,k] * B[k,j]", A="csr", B="csr", out_format="csr")
    A, B = sd.asformat(a, "csr").to("cuda"), sd.asformat(b, "csr").to("cuda")
    C = kernel(A=A, B=B)
    assert isinstance(C, sd.SparseTensor) and C.device == "cuda" and C.dtype == dtype
    want = (a @ b).tocsr()
    want.sort_indices()
    np.testing.assert_array_equal(cp.asnumpy(C.levels[1]["pos"]), want.indptr)
    np.testing.assert_array_equal(cp.asnumpy(C.levels[1]["crd"]), want.indices)  # sorted rows, as scipy's
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(cp.asnumpy(C.values), want.data, rtol=tol, atol=tol)
    text = sd.explain(kernel, A=A, B=B)
    assert "hash table in shared memory" in text
    if bins is not None:  # rows on (block, global) lists of both passes
        launched = [line for line in text.splitlines() if "last launch" in line and "on blocks" in line]
        assert len(launched) == 2
        for line in launched:
            got = line.split("last launch ")[1]
            on_blocks, on_global = int(got.split(", ")[1].split()[0]), int(got.split(", ")[2].split()[0])
            assert (on_blocks > 0, on_global > 0) == bins, line
    return C


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spgemm_random_matches_scipy(dtype):
    rng = np.random.default_rng(11)
    a = sp.random(700, 500, density=0.02, format="csr", random_state=rng)
    b = sp.random(500, 900, density=0.01, format="csr", random_state=rng)
    _spgemm_matches_scipy(a, b, dtype, bins=(False, False))  # upper bounds ~90: warps only
    sq = sp.random(2000, 2000, density=0.004, format="csr", random_state=rng)  # A A, as the benchmark
    _spgemm_matches_scipy(sq, sq, dtype)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_spgemm_power_law_rows_take_every_bin(dtype):
    rng = np.random.default_rng(12)
    # A rows of 40 / 150 / 600 entries have upper bounds 120 / 470 / 6059 (warp, block bins), 1500 entries
    # 12,903 (global, > BLOCK_UB); the Pareto tail puts more rows in the block bins
    b = _skewed(3000, 4000, rng, long_rows=[(5, 3000), (7, 2500)])
    a = _skewed(1200, 3000, rng, long_rows=[(0, 40), (1, 150), (2, 600), (3, 1500)])
    _spgemm_matches_scipy(a, b, dtype, bins=(True, True))
    _spgemm_matches_scipy(b[:, :3000], b[:3000], dtype, bins=(True, True))


@gpu
@pytest.mark.gpu
def test_spgemm_global_rows_in_several_windows_of_columns(monkeypatch):
    from sparsedsl.backends.cuda.templates import spgemm as cuda_spgemm

    monkeypatch.setattr(cuda_spgemm, "BITMAP_WORDS", 16)  # 512 columns a window: 8 windows of 4000
    rng = np.random.default_rng(12)
    b = _skewed(3000, 4000, rng, long_rows=[(5, 3000), (7, 2500)])
    a = _skewed(1200, 3000, rng, long_rows=[(0, 40), (1, 150), (2, 600), (3, 1500)])
    _spgemm_matches_scipy(a, b, np.float32, bins=(True, True))


@gpu
@pytest.mark.gpu
def test_spgemm_empty_rows_and_rows_whose_product_is_empty():
    rng = np.random.default_rng(13)
    empty_b = rng.choice(600, 200, replace=False)
    b = _skewed(600, 700, rng, long_rows=[(int(empty_b[0]) ^ 1, 400)], empty_rows=empty_b)
    # A's rows 0..99 only select empty B rows (their product is empty), rows 100..149 are empty
    a_dead = _skewed(100, 600, rng, only_from=empty_b)
    a_live = _skewed(300, 600, rng, long_rows=[(0, 100), (1, 5)], empty_rows=range(0, 50))
    a = sp.vstack([a_dead, a_live]).tocsr()
    C = _spgemm_matches_scipy(a, b, np.float32)
    counts = np.diff(cp.asnumpy(C.levels[1]["pos"]))
    assert not counts[:150].any() and counts[150:].any()
    # all of it empty, and no rows at all
    z = sp.csr_matrix((50, 60), dtype=np.float32)
    C = _spgemm_matches_scipy(z, sp.random(60, 40, density=0.1, format="csr", random_state=rng), np.float32)
    assert C.nnz == 0
    _spgemm_matches_scipy(sp.csr_matrix((0, 60)), sp.random(60, 40, density=0.1, format="csr", random_state=1),
                          np.float32)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("rows,per_row", [(300, 200), (4000, 3), (2000, 60)])
def test_spmm_added_into_its_target_takes_a_thread_per_row_and_column(rows, per_row):
    """A product added into a target an earlier term wrote (``Y = A·X - 2Z``: the rewrite writes
    -2Z, then adds A·X) runs like the plain product, a thread per (row, column) pair (each owns its
    element, so ``+=`` needs no atomics), not a thread per row."""
    rng = np.random.default_rng(rows)
    a = sp.random(rows, 5000, density=per_row / 5000, format="csr", random_state=rng, dtype=np.float32)
    X = cp.asarray(rng.standard_normal((5000, 64)).astype(np.float32))
    Z = cp.asarray(rng.standard_normal((rows, 64)).astype(np.float32))
    A = sd.asformat(a, "csr").to("cuda")
    for expr in ("Y[i,n] = A[i,j] * X[j,n]", "Y[i,n] = sum[j](A[i,j] * X[j,n]) - 2 * Z[i,n]"):
        kernel = sd.compile(expr, A="csr")
        ops = {"A": A, "X": X} if "Z" not in expr else {"A": A, "X": X, "Z": Z}
        Y = kernel(**ops)
        want = a @ cp.asnumpy(X) - (2 * cp.asnumpy(Z) if "Z" in expr else 0)
        np.testing.assert_allclose(cp.asnumpy(Y), want, rtol=1e-4, atol=1e-4)
        text = sd.explain(kernel, **ops)
        assert "one thread per (v_i, v_n) pair" in text and "lanes per iteration" not in text


@gpu
@pytest.mark.gpu
def test_repeated_calls_replay_launches_only_for_arguments_alike():
    """A call alike to an earlier one (shapes, dtypes, alignment, the same row weights) replays its
    launches; any difference that chose them takes the full path again, and every result is right."""
    rng = np.random.default_rng(11)
    a, b = (sp.random(500, 400, density=d, format="csr", random_state=rng, dtype=np.float32) for d in (0.01, 0.3))
    A, B = sd.asformat(a, "csr").to("cuda"), sd.asformat(b, "csr").to("cuda")
    kernel = sd.compile("y[i] = A[i,j] * x[j]", A="csr")
    xs = cp.asarray(rng.standard_normal((3, 401)).astype(np.float32))
    compiled = lambda: next(iter(kernel._plans.values())).steps[0][2]  # noqa: E731
    kernel(A=A, x=xs[0, :400])
    kernel(A=A, x=xs[0, :400])
    recorded = len(compiled().replays)
    for M, m in ((A, a), (A, a), (B, b), (A, a)):
        for x in (xs[0, :400], xs[1, :400], cp.ascontiguousarray(xs[2, :400]), xs[0, 1:]):  # xs[0, 1:]: 4 bytes off
            np.testing.assert_allclose(cp.asnumpy(kernel(A=M, x=x)), m @ cp.asnumpy(x), rtol=1e-4, atol=1e-5)
        if M is A:  # the same matrix, an aligned x again: replayed, nothing recorded
            n = len(compiled().replays)
            kernel(A=A, x=cp.ascontiguousarray(xs[1, :400]))
            assert len(compiled().replays) == n
    assert recorded == 1 and len(compiled().replays) <= 6, list(compiled().replays)  # (A or B) x alignments
    y = kernel(A=A, x=cp.zeros(400, np.float32))
    assert float(cp.abs(y).max()) == 0.0
    w16 = _pruned(64, 256, "nm(2,4)", rng).astype(np.float16)
    W = sd.asformat(w16.astype(np.float32), "nm(2,4)").to("cuda").astype(np.float16)
    skinny = sd.compile("Y[i,n] = W[i,j] * X[j,n]", W="nm(2,4)")
    for n in (16, 16, 32, 16):
        x = rng.standard_normal((256, n)).astype(np.float16)
        want = w16.astype(np.float32) @ x.astype(np.float32)
        np.testing.assert_allclose(cp.asnumpy(skinny(W=W, X=cp.asarray(x))).astype(np.float32), want,
                                   rtol=2e-3, atol=2e-2)


def test_fast_binding_keys_device_operands_under_cuda_and_sends_mixed_ones_to_bind(monkeypatch):
    """``Kernel._bind_ready`` without a GPU: a stand-in device array type (what ``cupy.ndarray`` is once
    cupy is imported) keys the plan under "cuda"; host and device operands together are not bound fast."""

    class DeviceArray(np.ndarray):  # a numpy subclass: shape, dtype and flags as a device array has them
        pass

    monkeypatch.setattr(device, "array_type", lambda: DeviceArray)
    kernel = sd.compile("y[i] = A[i,j] * x[j]", A="csr")
    A = sd.asformat(sp.random(6, 5, density=0.5, format="csr", random_state=0), "csr")
    x = np.ones(5)
    values, key = kernel._bind_ready((), {"A": A, "x": x})
    assert key[0] == "cpu" and values["x"] is x
    dx = x.view(DeviceArray)
    assert kernel._bind_ready((), {"A": A, "x": dx}) is None  # host A, device x: bind moves A
    device_A = sd.SparseTensor(A.format, A.shape, A.levels, A.values.view(DeviceArray), check=False)
    values, key = kernel._bind_ready((), {"A": device_A, "x": dx})
    assert key[0] == "cuda" and key[1:] == (("A", A.shape, A.dtype, A.format), ("x", (5,), x.dtype, False, None))
    assert kernel._bind_ready((), {"A": device_A, "x": dx[::-1]}) is None  # not C-contiguous: bind copies it


def test_32_bit_positions_are_widened_when_an_array_could_carry_them_past_int32_safe(monkeypatch):
    """cuda_render counts a lane-split loop in 32 bits over 32-bit positions; a tensor whose entries
    pass INT32_SAFE has every 32-bit array widened (its ``pos`` too, whose own size is small)."""
    monkeypatch.setattr(compiled, "INT32_SAFE", 10)
    pos, crd, vals, out = np.arange(4, dtype=np.int32), np.zeros(11, np.int32), np.ones(11), np.zeros(3, np.int32)
    small = {"pos": pos, "crd": crd[:10], "vals": vals[:10], "out": out}
    assert compiled.widen_positions(small, "out") is small
    wide = compiled.widen_positions({"pos": pos, "crd": crd, "vals": vals, "out": out}, "out")
    assert wide["pos"].dtype == wide["crd"].dtype == np.int64 and wide["vals"] is vals and wide["out"] is out


# ---- the CUDA plan reads the IR's nodes, not the lowering's names --------------------------------


def _renamed_function(fn, table: dict):
    """``fn`` with every variable in ``table`` renamed, in statements, iterations and its Output."""
    from dataclasses import replace

    from sparsedsl.lang import loopir as L

    def r(text):
        return L.renamed(text, table) if isinstance(text, str) else text

    def visit(s):
        if isinstance(s, L.For):
            it = s.iteration and replace(s.iteration, fields=tuple((k, r(v)) for k, v in s.iteration.fields))
            return [replace(s, var=table.get(s.var, s.var), start=r(s.start), stop=r(s.stop), weight=r(s.weight),
                            iteration=it)]  # (map_stmts has renamed its body and private statements)
        if isinstance(s, (L.While, L.If)):
            return [replace(s, cond=r(s.cond))]
        if isinstance(s, L.Assign):
            return [replace(s, target=r(s.target), value=r(s.value))]
        if isinstance(s, L.Alloc):
            return [replace(s, var=table.get(s.var, s.var), shape=r(s.shape))]
        if isinstance(s, L.SortRange):
            return [replace(s, array=table.get(s.array, s.array), start=r(s.start), stop=r(s.stop),
                            marks=table.get(s.marks, s.marks), stamp=r(s.stamp), universe=r(s.universe))]
        if isinstance(s, L.Emit):
            return [replace(s, coords=[r(c) for c in s.coords], value=r(s.value), into=into)]
        if isinstance(s, L.Return):
            return [replace(s, values=[table.get(v, v) for v in s.values])]
        return [s]

    def name(n):
        return table.get(n, n) if n else n

    out = fn.output
    into = out.entries and L.Entries(tuple(map(name, out.entries.coords)), name(out.entries.values),
                                     name(out.entries.count), name(out.entries.capacity))
    output = L.Output(name(out.array), into, name(out.offsets), tuple(map(name, out.coords)), name(out.values),
                      out.csr)
    return replace(fn, params=[name(p) for p in fn.params], body=L.map_stmts(fn.body, visit), output=output)


def _plan_shape(fn, args):
    spec = cuda_render.rendered(fn, args)
    return [(st.kind, getattr(st, "reduction", None) is not None, getattr(st, "nested", None) is not None,
             getattr(st, "collapse", None) is not None, getattr(st, "atomic", False), getattr(st, "template", None))
            for st in spec.steps]


RENAMES = {"acc": "sum_", "touched": "hit_", "out": "y_", "out_n": "k_", "out_cap": "cap_", "out_v": "vals_",
           "out_c0": "row_", "out_c1": "col_", "offs": "starts_", "oq": "at_", "cnt": "many_"}


@pytest.mark.parametrize("program, formats, out_format, reduction, nested, atomic, template", [
    ("y[i] = A[i,j] * x[j]", {"A": "csr", "x": "dense"}, None, True, False, False, None),  # lane-split SpMV
    ("y[j] = A[i,j] * x[i]", {"A": "csr", "x": "dense"}, None, False, False, True, None),  # atomic scatter
    ("C[i,j] = M[i,j] * U[i,k] * V[j,k]", {"M": "csr", "U": "dense", "V": "dense"}, "csr", False, True, False,
     None),  # SDDMM: the fill pass's nested split
    ("C[i,j] = A[i,k] * B[k,j]", {"A": "csr", "B": "csr"}, "csr", False, False, False, "cuda.spgemm"),
    ("C[i,j] = A[i,j] * B[i,j]", {"A": "coo", "B": "dense"}, "coo", False, False, False, None),  # entries
    ("Y[i,n] = W[i,j] * X[j,n]", {"W": "nm(2,4)", "X": "dense"}, None, None, None, False, "cuda.skinny"),
])
def test_the_cuda_plan_does_not_depend_on_the_lowerings_names(program, formats, out_format, reduction, nested,
                                                              atomic, template):
    """Every name the lowering chose (accumulator, flag, output, entry buffers, offsets) renamed: the
    CUDA plan finds the same reductions, templates and atomics (it reads Reduce/Touch/Emit nodes and
    the function's Output), and the source uses the new names."""
    from sparsedsl.lang import loopir as L

    rng = np.random.default_rng(0)
    ops = {}
    for name, fmt in formats.items():
        if fmt == "dense":
            ops[name] = rng.random({"x": 24, "B": (24, 24)}.get(name, (24, 16))).astype(np.float32)
        else:
            ops[name] = sd.asformat(_pruned(24, 24, fmt, rng).astype(np.float32), fmt)
    kernel = sd.compile(program, out_format=out_format, **{k: v for k, v in formats.items()})
    fn, args = _step_args(kernel, **ops)
    if template == "cuda.skinny":
        args = [a.astype(np.float16) if isinstance(a, np.ndarray) and a.dtype == np.float32 and p != "out" else a
                for p, a in zip(fn.params, args)]
    renamed = _renamed_function(fn, RENAMES)
    assert not L.verify(L.Module([renamed], renamed.name))
    shape = _plan_shape(fn, args)
    assert _plan_shape(renamed, args) == shape
    par = [s for s in shape if s[0] == "parallel"]  # (a coo row walk is a while loop: a serial step)
    if reduction is not None:
        assert any(s[1] for s in par) == reduction and any(s[2] for s in par) == nested
    assert any(s[4] for s in par) == atomic and (template is None or template in {s[5] for s in par})
    src = cuda_render.render(renamed, args)
    for old, new in RENAMES.items():
        if re.search(rf"\b{old}\b", cuda_render.render(fn, args)):
            assert re.search(rf"\b{new}\b", src) and not re.search(rf"\b{old}\b", src), (old, new)


@gpu
@pytest.mark.gpu
@pytest.mark.parametrize("source, formats, values", [
    # sign(nan) is nan (the CUDA sign gave 0)
    ("y[] = sign(sqrt(x[i]) / z[k])", {"x": "bitmap", "z": "dense"}, {"x": np.zeros(3), "z": np.zeros(2, np.int64)}),
    # bool * bool is an int in C: min's template arguments are cast (NVRTC refused the kernel)
    ("y[i] = min(x[i] * z[i], z[i]) + max(x[i] >= z[i], x[i] * z[i])", {"x": "dense", "z": "dense"},
     {"x": np.array([True, False, True]), "z": np.array([True, True, False])}),
    # a dense contraction with an index of one operand alone (tensordot gave the outer product)
    ("y[] = mask(x[i], z[j] * x[i])", {"x": "dense", "z": "dense"}, {"x": np.arange(3.0), "z": np.arange(4.0)}),
    ("let t[k] = sqrt(1 >= z[k])\ny[k] = t[k] * B[j,i]", {"z": "dense", "B": "dense"},
     {"z": np.array([0, 1, 2]), "B": np.ones((3, 2))}),
], ids=["sign-nan", "bool-min", "contraction-lone-index", "contraction-lone-pair"])
def test_cuda_fuzz_findings_match_the_interpreter(source, formats, values):
    # found by the differential fuzz on the GPU (python -m benchmarks.fuzz --backend cuda)
    from sparsedsl.testing import check_program

    assert check_program(source, formats, values, "dense", backend="cuda") == "ok"

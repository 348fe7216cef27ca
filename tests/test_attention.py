"""sparsedsl.stdlib.attention: every mask's attention equals dense attention restricted to the mask
(the peer: a float64 numpy softmax with -inf outside the mask; on the GPU also torch SDPA), each
builder's mask has the density/shape its paper describes, Scatterbrain is unbiased, the bitmap KV cache
meets Mustafar's size, and on the GPU the fused template equals the generated code (its oracle)."""

import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sparsedsl as sd
from sparsedsl import templates
from sparsedsl.stdlib import attention as A
from sparsedsl.stdlib.attention.kv_cache import BITMAP3, bitmap_3d, prune_per_token

HAVE_GPU = importlib.util.find_spec("cupy") is not None and __import__("cupy").is_available()
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _qkv(b=1, h=2, L=64, d=16, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((b, h, L, d)).astype(dtype) for _ in range(3)]


def _rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def _builders(q, k):
    n, L, d = q.shape[0] * q.shape[1], q.shape[2], q.shape[3]
    q3, k3 = q.reshape(n, L, d), k.reshape(n, L, d)
    return {
        "sliding_window": lambda: A.sliding_window(L, 8),
        "sliding_window_blocked": lambda: A.sliding_window(L, 8, block=16),
        "sliding_window_noncausal": lambda: A.sliding_window(L, 8, causal=False),
        "a_shape": lambda: A.a_shape(L, 4, 8),
        "a_shape_blocked": lambda: A.a_shape(L, 4, 8, block=(16, 16)),
        "vertical_slash": lambda: A.vertical_slash(q3, k3, n_vertical=4, n_slash=4, last_q=16),
        "block_sparse": lambda: A.block_sparse(q3, k3, block=16, top_k=2),
        "seer_gate": lambda: A.seer_gate(q3, k3, block=16, top_k=2),
        "seer_gate_threshold": lambda: A.seer_gate(q3, k3, block=16, threshold=0.3),
        "double_sparsity": lambda: A.double_sparsity(q3, k3, channels=A.calibrate_channels(q3, k3, 4), top_k=8),
        "routing": lambda: A.routing(q3, k3, n_clusters=4),
        "biformer": lambda: A.biformer(q3, k3, region=16, top_k=2),
        "hip": lambda: A.hip(q3, k3, top_k=8),
        "spark_top_k": lambda: A.spark_top_k(q3, k3, top_k=8),
        "sparsed": lambda: A.SparseDPatterns(lambda a, b: A.block_sparse(a, b, block=16, top_k=2)).mask(3, q3, k3),
    }


NAMES = list(_builders(*_qkv()[:2]))


@pytest.mark.parametrize("name", NAMES)
def test_each_variant_equals_dense_attention_restricted_to_its_mask(name):
    q, k, v = _qkv()
    mask = _builders(q, k)[name]()
    got = A.attention(q, k, v, mask)
    assert got.dtype == np.float32 and got.shape == q.shape
    assert _rel(got, A.dense_attention(q, k, v, mask)) <= 1e-5


@pytest.mark.parametrize("fmt", ["csr", "coo", "dcsr", "csc", "bitmap", "bsr(16,16)", "blocked_bitmap(16,16)"])
def test_a_mask_of_any_format(fmt):
    q, k, v = _qkv(b=2, h=1, L=32 if "16" not in fmt else 64)
    L = q.shape[2]
    dense = np.random.default_rng(1).random((L, L)) < 0.3
    mask = sd.asformat(dense, fmt)
    assert _rel(A.attention(q, k, v, mask), A.dense_attention(q, k, v, mask)) <= 1e-5
    assert _rel(A.attention(q, k, v, mask, causal=True), A.dense_attention(q, k, v, mask, causal=True)) <= 1e-5


@settings(max_examples=12, deadline=None)
@given(fmt=st.sampled_from(["csr", "coo", "bitmap", "bsr(8,8)", "(h, i, j) -> (h: dense, i: dense, j: compressed)"]),
       density=st.floats(0.0, 1.0), lq=st.sampled_from([8, 16]), seed=st.integers(0, 2**16))
def test_random_masks_in_random_formats(fmt, density, lq, seed):
    q, k, v = _qkv(b=1, h=2, L=16, d=4, seed=seed)
    q = q[:, :, :lq]
    rng = np.random.default_rng(seed)
    shape = (2, lq, 16) if fmt.startswith("(h") else (lq, 16)
    mask = sd.asformat(rng.random(shape) < density, fmt)
    for causal in (False, True):  # causal with Lq < Lk: the queries are the last Lq positions
        got = A.attention(q, k, v, mask, causal=causal)
        want = A.dense_attention(q, k, v, mask, causal=causal)
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())


def test_full_and_causal_attention_without_a_mask():
    q, k, v = _qkv(L=48, d=8)
    assert _rel(A.attention(q, k, v), A.dense_attention(q, k, v)) <= 1e-5
    assert _rel(A.attention(q, k, v, causal=True), A.dense_attention(q, k, v, causal=True)) <= 1e-5
    # the reference itself against a plain softmax (the peer of the peer)
    s = np.einsum("bhid,bhjd->bhij", q.astype(np.float64), k.astype(np.float64)) / np.sqrt(8)
    p = np.exp(s - s.max(-1, keepdims=True))
    assert _rel(A.dense_attention(q, k, v), (p / p.sum(-1, keepdims=True)) @ v) <= 1e-12


def test_a_row_without_keys_gives_zeros_and_per_head_masks():
    q, k, v = _qkv(b=1, h=2, L=16, d=4)
    m = np.zeros((2, 16, 16), bool)
    m[0, 3:, :3] = True
    m[1] = np.eye(16, dtype=bool)
    mask = sd.asformat(m, "(h, i, j) -> (h: dense, i: dense, j: compressed)")
    got = A.attention(q, k, v, mask)
    assert np.all(got[0, 0, :3] == 0)
    assert _rel(got, A.dense_attention(q, k, v, mask)) <= 1e-5
    assert np.allclose(got[0, 1], v[0, 1], atol=1e-6)  # the identity mask attends each key to itself


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")
@pytest.mark.parametrize("name", ["sliding_window_blocked", "block_sparse", "spark_top_k"])
def test_bfloat16_and_float16_torch_tensors(name):
    import torch

    q, k, v = _qkv()
    mask = _builders(q, k)[name]()
    for dt in (torch.bfloat16, torch.float16):
        tq, tk, tv = (torch.from_numpy(x).to(dt) for x in (q, k, v))
        got = A.attention(tq, tk, tv, mask)
        assert isinstance(got, torch.Tensor) and got.dtype == dt
        assert _rel(got.double().numpy(), A.dense_attention(tq, tk, tv, mask)) <= 2e-2


# ---- what each builder's mask must look like ---------------------------------------------------------


def _rows(mask, n=1):
    return A.dense_mask(mask, 1, n)[0]


def test_sliding_window_and_a_shape_semantics():
    L, w = 40, 6
    m = _rows(A.sliding_window(L, w))[0]
    i, j = np.indices((L, L))
    assert np.array_equal(m, (i - j >= 0) & (i - j < w))
    assert np.array_equal(_rows(A.sliding_window(L, w, block=8))[0], m)  # blocks store the window's edges as False
    assert np.array_equal(_rows(A.sliding_window(L, w, causal=False))[0], np.abs(i - j) < w)
    a = _rows(A.a_shape(L, 3, w, block=(8, 8)))[0]
    assert np.array_equal(a, (j <= i) & ((i - j < w) | (j < 3)))
    bm = A.sliding_window(64, 16, block=16)
    assert bm.format == sd.as_format("bsr(16,16)")
    assert len(bm.levels[1]["crd"]) == 1 + 3 * 2  # each block row: its diagonal block and the one before


def test_block_sparse_seer_and_biformer_keep_top_k_blocks_per_block_row():
    q, k, _ = _qkv(b=1, h=2, L=64, d=16)
    q3, k3 = q[0], k[0]
    for mask in (A.block_sparse(q3, k3, block=16, top_k=2), A.seer_gate(q3, k3, block=16, top_k=2)):
        pos = mask.levels[2]["pos"]
        assert np.array_equal(np.diff(pos), np.tile([1, 2, 2, 2], 2))  # causal: row 0 has only its diagonal
        blocks = _rows(mask, 2)[:, ::16, ::16]
        assert np.all(blocks[:, np.arange(4), np.arange(4)])  # the diagonal block always
    b = A.biformer(q3, k3, region=16, top_k=3)
    assert np.array_equal(np.diff(b.levels[2]["pos"]), np.full(8, 3)) and b.values.all()
    # routing follows the region affinity: a planted pair of matching regions is routed
    q2, k2 = q3.copy(), k3.copy()
    q2[0, 16:32] += 5
    k2[0, 48:64] += 5
    assert _rows(A.biformer(q2, k2, region=16, top_k=1), 2)[0, 16, 48]
    # the threshold gate keeps fewer blocks as the threshold rises
    counts = [A.seer_gate(q3, k3, block=16, threshold=t).nnz for t in (0.0, 0.3, 0.9)]
    assert counts[0] >= counts[1] >= counts[2] > 0


def test_vertical_slash_finds_planted_columns_and_diagonals():
    rng = np.random.default_rng(0)
    L, d = 96, 16
    q = rng.standard_normal((1, L, d)) * 0.1
    k = rng.standard_normal((1, L, d)) * 0.1
    u = np.ones(d)
    q[0] += u
    k[0, 5] += 4 * u  # a vertical: every query attends key 5
    r = rng.standard_normal((L, d))
    q[0, 3:] += 3 * r[3:]
    k[0, :-3] += 3 * r[3:]  # a slash: query i matches key i - 3
    m = _rows(A.vertical_slash(q, k, n_vertical=2, n_slash=3, last_q=32))[0]
    assert m[5:, 5].all() and np.all(np.diag(m, -3))
    assert np.all(np.diag(m)) and m.sum(1).max() <= 2 + 3
    assert not np.triu(m, 1).any()


def test_double_sparsity_calibration_and_top_k():
    q, k, _ = _qkv(b=1, h=2, L=48, d=16)
    q3, k3 = q[0].copy(), k[0].copy()
    q3[:, :, [3, 7]] *= 10  # outlier channels
    k3[:, :, [3, 7]] *= 10
    ch = A.calibrate_channels(q3, k3, 2)
    assert all(set(c) == {3, 7} for c in ch)
    m = _rows(A.double_sparsity(q3, k3, channels=ch, top_k=5), 2)
    assert np.array_equal(m.sum(-1), np.tile(np.minimum(np.arange(48) + 1, 5), (2, 1)))
    s = np.einsum("nid,njd->nij", q3[:, :, [3, 7]], k3[:, :, [3, 7]])  # the keys with the best partial scores
    i = 40
    assert set(np.flatnonzero(m[0, i])) == set(np.argsort(-s[0, i, : i + 1])[:5])


def test_hip_keeps_top_k_keys_per_query():
    q, k, _ = _qkv(b=1, h=1, L=64, d=8)
    m = _rows(A.hip(q[0], k[0], top_k=6))[0]
    assert np.array_equal(m.sum(1), np.minimum(np.arange(64) + 1, 6))
    assert not np.triu(m, 1).any()


def test_routing_attends_within_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 8) * 10
    z = rng.integers(0, 4, 48)
    x = centres[z] + 0.01 * rng.standard_normal((48, 8))
    m = _rows(A.routing(x[None], x[None], n_clusters=4))[0]
    assert np.array_equal(m, (z[:, None] == z[None, :]) & np.tril(np.ones((48, 48), bool)))


@settings(max_examples=15, deadline=None)
@given(n=st.sampled_from([2048, 8192, 32768]), frac=st.sampled_from([1 / 64, 1 / 16, 1 / 4]),
       seed=st.integers(0, 2**16))
def test_statistical_top_k_selects_k_within_ten_percent(n, frac, seed):
    x = np.random.default_rng(seed).standard_normal((8, n)) * 3 + 1
    k = int(n * frac)
    counts = A.statistical_top_k(x, k).sum(-1)
    assert abs(counts.mean() - k) <= 0.1 * k


def test_spark_top_k_attends_about_k_keys():
    q, k, _ = _qkv(b=1, h=2, L=128, d=32)
    m = _rows(A.spark_top_k(q[0], k[0], top_k=16), 2)
    late = m[:, 64:].sum(-1)  # rows with enough keys for statistics
    assert abs(late.mean() - 16) <= 0.2 * 16 + 1 and not np.triu(m[0], 1).any()


def test_sparsed_full_attention_early_then_one_pattern_reused():
    calls = []

    def build(q, k):
        calls.append(1)
        return A.block_sparse(q, k, block=16, top_k=2)
    q, k, _ = _qkv(b=1, h=2, L=64)
    pat = A.SparseDPatterns(build, full_steps=2)
    assert pat.mask(0, q[0], k[0]) is None and pat.mask(1, q[0], k[0]) is None
    first = pat.mask(2, q[0], k[0])
    assert pat.mask(9, q[0] + 1, k[0] - 1) is first and len(calls) == 1 and pat.computed_at_ == 2


def test_bad_input_says_what_to_do():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="must be 4-D"):
        A.attention(q[0], k, v)
    with pytest.raises(ValueError, match=r"shape \(Lq, Lk\)"):
        A.attention(q, k, v, A.sliding_window(32, 4))
    with pytest.raises(TypeError, match="SparseTensor"):
        A.attention(q, k, v, np.ones((64, 64)))
    with pytest.raises(ValueError, match="block must be"):
        A.sliding_window(64, 4, block=10)
    with pytest.raises(ValueError, match="exactly one of top_k and threshold"):
        A.seer_gate(q[0], k[0])
    with pytest.raises(ValueError, match="k must be"):
        A.statistical_top_k(np.ones((2, 10)), 10)


# ---- Scatterbrain -------------------------------------------------------------------------------------


def test_scatterbrain_one_bucket_is_exact_and_nothing_counted_twice():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((3, 48, 8)) * 0.5
    s = np.exp(q @ k.T / np.sqrt(8))
    exact = s @ v / s.sum(1, keepdims=True)
    got = A.scatterbrain(q, k, v, n_features=8, n_bits=0, random_state=0)  # every pair in the sparse part
    assert _rel(got, exact) <= 1e-10


def test_scatterbrain_is_unbiased_its_seed_average_converges():
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((3, 64, 8)) * 0.5
    s = np.exp(q @ k.T / np.sqrt(8))
    num_exact = s @ v
    acc, errs = np.zeros_like(num_exact), {}
    for t in range(1, 65):
        num, _ = A.scatterbrain(q, k, v, n_features=8, n_bits=2, random_state=t, return_unnormalized=True)
        acc += num
        if t in (1, 64):
            errs[t] = np.linalg.norm(acc / t - num_exact) / np.linalg.norm(num_exact)
    assert errs[64] < 0.3 * errs[1]  # Monte Carlo: about 1/sqrt(64) of one seed's error


# ---- Mustafar bitmap KV cache ---------------------------------------------------------------------------


def test_mustafar_cache_size_and_decode_on_the_compressed_cache():
    rng = np.random.default_rng(0)
    K, V = rng.standard_normal((2, 4, 256, 128)).astype(np.float32)
    cache = A.BitmapKVCache(0.7).fit(K, V)
    assert cache.nbytes_fp16() <= 0.45 * cache.dense_nbytes_fp16()
    assert np.all((cache.K_pruned_ != 0).sum(-1) == round(0.3 * 128))
    kept = np.abs(cache.K_pruned_[0, 0][cache.K_pruned_[0, 0] != 0]).min()
    assert kept >= np.sort(np.abs(K[0, 0]))[-38]  # the largest magnitudes of the token
    q = rng.standard_normal((4, 128)).astype(np.float32)
    got = A.decode_attention(q, cache)
    want = A.dense_attention(q[None, :, None], cache.K_pruned_[None], cache.V_pruned_[None])[0, :, 0]
    assert _rel(got, want) <= 1e-5


def test_bitmap_cache_is_built_as_asformat_would():
    x = prune_per_token(np.random.default_rng(3).standard_normal((2, 5, 40)), 0.6)
    a, b = bitmap_3d(x), sd.asformat(x, BITMAP3)
    assert all(np.array_equal(a.levels[2][key], b.levels[2][key]) for key in ("mask", "pos"))
    assert np.array_equal(a.to_numpy(), b.to_numpy())


# ---- the fused kernel as a template ----------------------------------------------------------------------


def test_the_fused_kernel_is_a_registered_program_template_of_the_attention_program():
    names = [t.name for t in templates.registered(stage="program", backend="cuda")]
    assert "attention.block_sparse_flash" in names
    t = {t.name: t for t in templates.registered(stage="program", backend="cuda")}["attention.block_sparse_flash"]
    assert t.pattern == A.ATTENTION_PROGRAM


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU or not HAVE_TORCH, reason="needs cupy, torch and an NVIDIA GPU")
@pytest.mark.parametrize("dtype, d", [("bfloat16", 128), ("float16", 64)])
def test_fused_template_equals_the_generated_code_and_dense_attention(dtype, d):
    import torch

    dt = getattr(torch, dtype)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 256, d, device="cuda", dtype=dt) for _ in range(3))
    q3, k3 = q.reshape(4, 256, d).float().cpu().numpy(), k.reshape(4, 256, d).float().cpu().numpy()
    masks = {"window": A.sliding_window(256, 100, block=64), "causal": None,
             "block_sparse_128x64": A.block_sparse(q3, k3, block=(128, 64), top_k=2),
             "biformer": A.biformer(q3, k3, region=64, top_k=2)}
    for name, mask in masks.items():
        fused = A.attention(q, k, v, mask, causal=name == "causal")
        generated = A.attention(q, k, v, mask, causal=name == "causal", schedule={"templates": False})
        dense = A.dense_attention(q, k, v, mask, causal=name == "causal")
        assert fused.dtype == dt and fused.is_cuda
        assert _rel(fused.double().cpu().numpy(), generated.double().cpu().numpy()) <= 1e-2, name
        assert _rel(fused.double().cpu().numpy(), dense) <= 2e-2, name
    m3 = A.mask_3d(A.sliding_window(256, 100, block=64), 4, 256, 256).to("cuda")
    kern = A.attention_kernel(m3.format)
    assert "template: attention.block_sparse_flash" in sd.explain(kern, M=m3, Q=q.reshape(4, 256, d),
                                                                  K=k.reshape(4, 256, d), V=v.reshape(4, 256, d),
                                                                  scale=0.125)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert _rel(A.attention(q, k, v, causal=True).double().cpu().numpy(), sdpa.double().cpu().numpy()) <= 2e-2


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU or not HAVE_TORCH, reason="needs cupy, torch and an NVIDIA GPU")
def test_float32_on_the_gpu_runs_the_generated_code_exactly():
    import torch

    q, k, v = _qkv(b=1, h=2, L=128, d=64)
    tq, tk, tv = (torch.from_numpy(x).cuda() for x in (q, k, v))
    for mask in (A.sliding_window(128, 20, block=64), A.spark_top_k(q[0], k[0], top_k=16)):
        got = A.attention(tq, tk, tv, mask)
        assert got.dtype == torch.float32 and _rel(got.cpu().numpy(), A.dense_attention(q, k, v, mask)) <= 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU or not HAVE_TORCH, reason="needs cupy, torch and an NVIDIA GPU")
def test_mustafar_decode_on_the_gpu():
    import torch

    rng = np.random.default_rng(0)
    K, V = rng.standard_normal((2, 4, 512, 128)).astype(np.float32)
    cache = A.BitmapKVCache(0.7, device="cuda").fit(K, V)
    q = rng.standard_normal((4, 128)).astype(np.float32)
    got = A.decode_attention(torch.from_numpy(q).cuda().half(), cache)
    kp, vp = (x.astype(np.float16).astype(np.float64) for x in (cache.K_pruned_, cache.V_pruned_))
    want = A.dense_attention(q.astype(np.float16)[None, :, None], kp[None], vp[None])[0, :, 0]
    assert _rel(got.double().cpu().numpy(), want) <= 2e-2


# ---- bitmap-KV decode: the fused template (attention.bitmap_decode) --------------------------------------


def test_bitmap_decode_is_a_registered_template_of_the_decode_program_and_says_why_not():
    from sparsedsl.stdlib.attention import _decode

    t = {t.name: t for t in templates.registered(stage="program", backend="cuda")}["attention.bitmap_decode"]
    assert t.pattern == A.kv_cache.DECODE_PROGRAM
    rng = np.random.default_rng(1)
    for d, used in ((128, True), (64, True), (80, False)):
        K, V = rng.standard_normal((2, 3, 40, d)).astype(np.float32)
        c = A.BitmapKVCache(0.7).fit(K, V)
        text = sd.explain(_decode.decode_kernel(), K=c.K_, V=c.V_, q=K[:, 0], scale=0.1, backend="cuda")
        assert ("template: attention.bitmap_decode" in text) == used, text[:400]
        if not used:
            assert "template attention.bitmap_decode not used: head dim 80" in text


def test_bitmap_decode_cache_options_are_validated():
    with pytest.raises(ValueError, match="dtype"):
        A.BitmapKVCache(0.7, dtype="float16")  # the CPU stores float32
    with pytest.raises(ValueError, match="sparsity"):
        A.BitmapKVCache(1.0)


@pytest.mark.skipif(not __import__("os").environ.get("SPARSEDSL_NVRTC"),
                    reason="set SPARSEDSL_NVRTC to a libnvrtc.so.12 to compile the decode kernels without a GPU")
def test_bitmap_decode_kernels_compile_with_nvrtc():
    # both variants ("walk" and "coop") of every head dim and type
    import os

    from sparsedsl.stdlib.attention import _decode

    for defs in _decode.variants():
        ok, log = _decode.nvrtc_compile(_decode.source(**defs), os.environ["SPARSEDSL_NVRTC"])
        assert ok, log


def _gpu_cache(n, L, d, dtype, seed=0, zeros=False):
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    K, V = (torch.randn(n, L, d, device="cuda", generator=g) for _ in range(2))
    if zeros:  # tokens with fewer nonzeros than the budget: only the nonzeros are stored
        K[:, ::7, 10:] = 0
        K[:, 1::11] = 0  # all-empty tokens (no stored value: score 0)
        V[:, 2::5] = 0
        K[:, 20:60], V[:, 40:80] = 0, 0  # whole tiles without values
    return K, V, A.BitmapKVCache(0.7, device="cuda", dtype=dtype).fit(K.to(getattr(torch, dtype)),
                                                                    V.to(getattr(torch, dtype)))


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU or not HAVE_TORCH, reason="needs cupy, torch and an NVIDIA GPU")
@pytest.mark.parametrize("variant", ["coop", "walk"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("batch, L", [(1, 2049), (8, 777), (8, 100)])
def test_bitmap_decode_template_equals_the_generated_code_and_dense_attention_on_the_pruned_cache(
        dtype, batch, L, variant, monkeypatch):
    import torch

    from sparsedsl.stdlib.attention import _decode

    monkeypatch.setattr(_decode, "DEFAULT_VARIANT", variant)
    H, d = 2, 128
    _, _, cache = _gpu_cache(batch * H, L, d, dtype, seed=batch + L, zeros=True)
    q = torch.randn(batch * H, d, device="cuda", dtype=getattr(torch, dtype))
    kp, vp = (x.astype(np.float64) for x in (cache.K_pruned_, cache.V_pruned_))
    want = A.dense_attention(q.double().cpu().numpy()[None, :, None], kp[None], vp[None])[0, :, 0]
    fused = A.decode_attention(q, cache)
    generated = A.decode_attention(q, cache, schedule={"templates": False})
    assert fused.dtype == q.dtype and fused.is_cuda and fused.shape == (batch * H, d)
    tol = 2e-3 if dtype == "float16" else 1e-5  # float16: the output's rounding
    assert _rel(fused.double().cpu().numpy(), want) <= tol
    assert _rel(fused.double().cpu().numpy(), generated.double().cpu().numpy()) <= tol
    exact = _decode.bitmap_decode(q, cache.K_, cache.V_, 1 / np.sqrt(d), variant=variant)  # float32 out
    assert _rel(exact.get(), want) <= 1e-5
    for tw in (32, 64, 512):  # many parts (the last CTA merges), and one
        got = _decode.bitmap_decode(q, cache.K_, cache.V_, 1 / np.sqrt(d), tokens_per_warp=tw, variant=variant)
        assert _rel(got.get(), want) <= 1e-5, tw
    # the prepared step (decode_attention's second call of a signature): new queries, a strided one,
    # a cupy one, and after a refit the new cache
    assert len(cache._steps) == 1 and next(iter(cache._steps.values()))[2] is not None
    for step in range(3):
        q2 = torch.randn(batch * H, 2 * d, device="cuda", dtype=getattr(torch, dtype))[:, ::2]
        w2 = A.dense_attention(q2.double().cpu().numpy()[None, :, None], kp[None], vp[None])[0, :, 0]
        assert _rel(A.decode_attention(q2, cache).double().cpu().numpy(), w2) <= tol, step
        got = A.decode_attention(_decode.device_query(q2.contiguous()), cache)
        assert got.dtype == np.dtype(dtype) and _rel(got.get().astype(np.float64), w2) <= tol, step
    text = sd.explain(_decode.decode_kernel(), K=cache.K_, V=cache.V_, q=q, scale=0.1)
    assert "template: attention.bitmap_decode" in text
    if dtype == "float16" and batch == 1:  # a bfloat16 query: the template says no, the generated code runs
        qb = q.bfloat16()
        assert "q is bfloat16" in sd.explain(_decode.decode_kernel(), K=cache.K_, V=cache.V_, q=qb, scale=0.1)
        wb = A.dense_attention(qb.double().cpu().numpy()[None, :, None], kp[None], vp[None])[0, :, 0]
        got = A.decode_attention(qb, cache)
        assert got.dtype == qb.dtype and _rel(got.double().cpu().numpy(), wb) <= 2e-2


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU or not HAVE_TORCH, reason="needs cupy, torch and an NVIDIA GPU")
@pytest.mark.parametrize("variant", ["coop", "walk"])
@pytest.mark.parametrize("d", [32, 64, 256])
def test_bitmap_decode_other_head_dims_and_repeated_steps(d, variant):
    import torch

    from sparsedsl.stdlib.attention import _decode

    for dtype in ("float16", "float32"):
        _, _, cache = _gpu_cache(6, 1501, d, dtype, seed=d, zeros=True)
        kp, vp = (x.astype(np.float64) for x in (cache.K_pruned_, cache.V_pruned_))
        for step in range(3):  # the merge's tickets are reset for the next launch
            q = torch.randn(6, d, device="cuda", dtype=torch.float32)
            want = A.dense_attention(q.double().cpu().numpy()[None, :, None], kp[None], vp[None])[0, :, 0]
            for tw in (32, None):
                got = _decode.bitmap_decode(q, cache.K_, cache.V_, 1 / np.sqrt(d), tokens_per_warp=tw, variant=variant)
                assert _rel(got.get(), want) <= 1e-5, (dtype, step, tw)


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU or not HAVE_TORCH, reason="needs cupy, torch and an NVIDIA GPU")
def test_bitmap_decode_variants_agree_and_the_prepared_step_follows_the_cache():
    import torch

    from sparsedsl.stdlib.attention import _decode

    _, _, cache = _gpu_cache(8, 4097, 128, "float16", seed=3, zeros=True)
    q = torch.randn(8, 128, device="cuda", dtype=torch.float16)
    a, b = (_decode.bitmap_decode(q, cache.K_, cache.V_, 0.1, variant=v).get() for v in ("coop", "walk"))
    assert _rel(a, b.astype(np.float64)) <= 1e-5
    with pytest.raises(ValueError, match="variant"):
        _decode.bitmap_decode(q, cache.K_, cache.V_, 0.1, variant="nope")
    first = A.decode_attention(q, cache, scale=0.1)
    K2, V2 = (torch.randn(8, 333, 128, device="cuda", dtype=torch.float16) for _ in range(2))
    cache.fit(K2, V2)  # a new cache in the same object: the prepared step is rebuilt
    kp, vp = (x.astype(np.float64) for x in (cache.K_pruned_, cache.V_pruned_))
    want = A.dense_attention(q.double().cpu().numpy()[None, :, None], kp[None], vp[None], scale=0.1)[0, :, 0]
    got = A.decode_attention(q, cache, scale=0.1)
    assert got.shape == first.shape and _rel(got.double().cpu().numpy(), want) <= 2e-3


@pytest.mark.gpu
@pytest.mark.skipif(not HAVE_GPU or not HAVE_TORCH, reason="needs cupy, torch and an NVIDIA GPU")
@pytest.mark.parametrize("d", [64, 128])
def test_the_gpu_cache_build_equals_the_host_build(d):

    from sparsedsl.stdlib.attention import _decode

    K, _, _ = _gpu_cache(3, 301, d, "float32", seed=5, zeros=True)
    host = bitmap_3d(prune_per_token(K.cpu().numpy(), 0.7))
    for dtype in ("float32", "float16"):  # float32 input: no ties, the same entries
        dev = _decode.bitmap_from_dense(K, 0.7, dtype)
        assert np.array_equal(dev.levels[2]["mask"].get(), host.levels[2]["mask"])
        assert np.array_equal(dev.levels[2]["pos"].get(), host.levels[2]["pos"])
        assert np.array_equal(dev.values.get(), host.values.astype(dtype))
        assert np.array_equal(_decode.bitmap_to_dense(dev).get(), host.to_numpy().astype(dtype))
    # float16 input has ties among magnitudes, which the two builds may break differently: the same
    # counts, and per token the same kept magnitudes
    x = K.half()
    dev, ref = _decode.bitmap_from_dense(x, 0.7, "float16"), bitmap_3d(prune_per_token(x.float().cpu().numpy(), 0.7))
    pos = ref.levels[2]["pos"]
    assert np.array_equal(dev.levels[2]["pos"].get(), pos)
    got, want = np.abs(dev.values.get().astype(np.float32)), np.abs(ref.values)
    assert all(np.array_equal(np.sort(got[a:b]), np.sort(want[a:b])) for a, b in zip(pos[:-1], pos[1:]))
    c = A.BitmapKVCache(0.7, device="cuda").fit(K, K)
    assert c.nbytes_fp16() <= 0.45 * c.dense_nbytes_fp16()

"""`python -m benchmarks.attention_kernel_sweep [--compile-only] [--configs a,b] [--out PATH]`: the fused
block-sparse flash-attention kernel's configurations (``sparsedsl.stdlib.attention._flash.CONFIGS``),
compiled, checked and timed (issue 18).

--compile-only (no GPU needed): compile every configuration for head dim 64 and 128, bfloat16 and
float16, with NVRTC through ctypes (libnvrtc.so.12 from $NVRTC_LIB, the nvidia-cuda-nvrtc-cu12 wheel
or the system) to an sm_90a cubin with ``--ptxas-options=-v``, and print each one's registers, spills
and shared memory.

On the GPU (cupy, torch with FlexAttention): for each configuration, correctness against a float32
reference on small random problems (causal and not, float16 and bfloat16, d = 64 and 128, partial
blocks, empty rows, Lq != Lk) and on the benchmark problem (against FlexAttention / SDPA's flash
backend), then its time on B=1, H=16, L=16384, d=128, bf16: the sliding window 1024 (128x64 blocks)
and the causal dense-block mask, with FlexAttention and SDPA flash timed in the same run. One line per
configuration with the ratios against issue 18's targets (≥ 1.5x FlexAttention; ≥ 0.9x SDPA flash).
A configuration that fails to compile or gives a wrong answer is reported and skipped; configs run in
``ORDER`` until ``--budget`` seconds have passed, and the JSON is rewritten after each. A few configs
are also timed on 128x128-block masks (FlexAttention's own block size; 128-key tiles for v3-wg2-n128).
The closing line names the fastest correct config: set ``_flash.CONFIG`` (the template's default) to it.

On the device: ``PYTHONPATH=. python3 -m benchmarks.attention_kernel_sweep --out $OUT/attention-sweep.json``.
"""

# ruff: noqa: B023 (the timed closures are called inside the loop iteration that defines them)
from __future__ import annotations

import argparse
import math
import re
import sys
import time
import traceback

import numpy as np

from sparsedsl.stdlib.attention import _flash

from .timing import cuda_event_median, write_json

PROBLEM = (1, 16, 16384, 128)  # B, H, L, d: issue 18's benchmark
QUICK_PROBLEM = (1, 16, 4096, 128)
SW_TARGET = 1.5   # × FlexAttention on the sliding window
CAUSAL_TARGET = 0.9  # × SDPA flash on the causal mask


# ---- compile only: NVRTC through ctypes (_flash.nvrtc_compile) -----------------------------------------


def _resources(log: str) -> str:
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    stack = re.search(r"(\d+) bytes stack frame", log)
    serial = "; WGMMA SERIALIZED (ptxas C7512)" if "wgmma.mma_async instructions are serialized" in log else ""
    return (f"{regs.group(1) if regs else '?'} regs, spills {spill.group(1) if spill else '?'}/"
            f"{spill.group(2) if spill else '?'} B (st/ld), stack {stack.group(1) if stack else '?'} B{serial}")


def compile_only(names) -> dict:
    out = {}
    for name in names:
        cfg = _flash.CONFIGS[name]
        for d in (64, 128):
            for bf16 in (True, False):
                key = f"{name} d{d} {'bf16' if bf16 else 'f16'}"
                t0 = time.perf_counter()
                ok, log, cubin = _flash.nvrtc_compile(cfg.source(d, bf16), cfg.kernel_name(d, bf16))
                res = _resources(log) if ok else "FAILED"
                print(f"{key:32s} {'ok ' if ok else 'ERR'} {res}; smem {cfg.smem(d)} B; "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
                if not ok or "warning" in log.lower() or "Performance Loss" in log:
                    print("   " + "\n   ".join(log.strip().splitlines()[-20:]), flush=True)
                out[key] = {"ok": ok, "resources": res, "log": log[-4000:], "cubin_bytes": len(cubin)}
    return out


# ---- on the GPU -------------------------------------------------------------------------------------------


_bench = cuda_event_median  # (benchmarks.timing)


def _errors(got, ref) -> dict:
    import torch

    got, ref = torch.as_tensor(got).float(), ref.float()
    rel = float(torch.linalg.norm(got - ref) / max(float(torch.linalg.norm(ref)), 1e-30))
    return {"rel": rel, "max_abs": float((got - ref).abs().max())}


def random_blocked_mask(n, lq, lk, block, seed):
    """A 3-D blocked mask with random stored blocks (some block rows with none), random entries in
    them, some rows of stored blocks empty and some blocks full: the kernel's corner cases."""
    from sparsedsl import SparseTensor
    from sparsedsl.stdlib.attention._core import blocked_format

    rng = np.random.default_rng(seed)
    r, c = block
    nI, nJ = lq // r, lk // c
    blocks = rng.random((n, nI, nJ)) < 0.6
    blocks[0, 0] = False  # a query block row with no stored block
    h, bi, bj = np.nonzero(blocks)
    vals = rng.random((len(h), r, c)) < 0.7
    vals[:, rng.random(r) < 0.2] = False  # empty rows
    vals[rng.random(len(h)) < 0.3] = True  # full blocks
    counts = np.bincount(h * nI + bi, minlength=n * nI)
    pos = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    levels = [{}, {}, {"pos": pos, "crd": bj.astype(np.int32)}, {}, {}]
    return SparseTensor(blocked_format(block), (n, lq, lk), levels, vals.reshape(-1))


def small_problems():
    """(name, n, lq, lk, 3-D host mask): small cases over every mask shape the kernel must handle."""
    from sparsedsl.stdlib import attention as A
    from sparsedsl.stdlib.attention._core import full_mask, mask_3d, restrict_causal

    n, L = 4, 256
    rng = np.random.default_rng(0)
    qk = rng.standard_normal((2, n, L, 64)).astype(np.float32)
    probs = [
        ("window-64x64", L, L, A.sliding_window(L, 100, block=64)),
        ("causal-64x64", L, L, full_mask(L, L, causal=True, block=(64, 64))),
        ("causal-128x64", L, L, full_mask(L, L, causal=True, block=(128, 64))),
        ("noncausal-full-128x128", L, L, full_mask(L, L, block=(128, 128))),
        ("causal-128x128", L, L, full_mask(L, L, causal=True, block=(128, 128))),
        ("window-128x128", 512, 512, A.sliding_window(512, 200, block=(128, 128))),
        ("block-sparse-128x64", L, L, A.block_sparse(qk[0], qk[1], block=(128, 64), top_k=2)),
        ("causal-Lq128-Lk384", 128, 384, restrict_causal(full_mask(128, 384, block=(64, 64)))),
        ("random-empty-rows-128x64-Lk384", L, 384, random_blocked_mask(n, L, 384, (128, 64), 1)),
        ("random-256x64", 512, 512, random_blocked_mask(n, 512, 512, (256, 64), 2)),
    ]
    return [(name, n, lq, lk, mask_3d(m, n, lq, lk)) for name, lq, lk, m in probs]


def reference(q, k, v, dense_mask, scale):
    """float32 masked softmax attention on the GPU (rows with no key: zeros)."""
    import torch

    s = torch.einsum("nid,njd->nij", q.float(), k.float()) * scale
    s = s.masked_fill(~dense_mask, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return torch.einsum("nij,njd->nid", p, v.float())


def small_cases(problems):
    """The small problems' inputs and float32 references on the GPU, for d = 64, 128 and both 16-bit
    types: a list of (key, q, k, v, device mask, scale, reference)."""
    import torch

    from sparsedsl.stdlib.attention import dense_mask

    torch.manual_seed(0)
    cases = []
    for pname, n, lq, lk, m3 in problems:
        dm = torch.from_numpy(np.ascontiguousarray(dense_mask(m3, 1, n)[0])).cuda()
        md = m3.to("cuda")
        for d in (64, 128):
            for dt in (torch.bfloat16, torch.float16):
                q = torch.randn(n, lq, d, device="cuda", dtype=dt)
                k, v = (torch.randn(n, lk, d, device="cuda", dtype=dt) for _ in range(2))
                scale = 1 / math.sqrt(d)
                cases.append((f"{pname} d{d} {str(dt)[6:]}", q, k, v, md, scale, reference(q, k, v, dm, scale)))
    return cases


def check_small(name, cases) -> dict:
    """One config against the small problems' references: ok when every relative error ≤ 2e-2
    (the 16-bit output too, for versions 2 and 3, at d = 128)."""
    import torch

    out = {"ok": True, "cases": {}}
    for key, q, k, v, md, scale, ref in cases:
        try:
            e = _errors(torch.from_dlpack(_flash.fused_attention(q, k, v, md, scale, config=name)), ref)
            if _flash.CONFIGS[name].version >= 2 and q.shape[-1] == 128:
                o16 = _flash.fused_attention(q, k, v, md, scale, config=name, out16=True)
                e["rel_out16"] = _errors(o16, ref)["rel"]
        except Exception as exc:  # noqa: BLE001 - reported, the sweep goes on
            out.update(ok=False, error=f"{key}: {exc!r}"[:2000])
            break
        out["cases"][key] = e
        if not max(e["rel"], e.get("rel_out16", 0)) <= 2e-2:
            out["ok"] = False
            out.setdefault("failed", []).append(key)
    if out["ok"]:
        _check_template(name, out)
    out["worst_rel"] = max((e["rel"] for e in out["cases"].values()), default=float("nan"))
    out["n_cases"] = len(out["cases"])
    return out


def _check_template(name, out):
    """``attention()`` end to end (the registered template, float16 written by the kernel) with
    ``name`` as the module's default config, float16 and bfloat16."""
    import torch

    from sparsedsl.stdlib import attention as A

    prev = _flash.CONFIG
    _flash.CONFIG = name
    try:
        mask = A.sliding_window(256, 100, block=64)
        dm = torch.from_numpy(np.ascontiguousarray(A.dense_mask(mask, 2, 2).reshape(4, 256, 256))).cuda()
        for dt in (torch.float16, torch.bfloat16):
            q, k, v = (torch.randn(2, 2, 256, 64, device="cuda", dtype=dt) for _ in range(3))
            got = A.attention(q, k, v, mask)
            ref = reference(*(x.reshape(4, 256, 64) for x in (q, k, v)), dm, 1 / 8)
            e = out["cases"][f"attention() {str(dt)[6:]}"] = _errors(got.reshape(4, 256, 64), ref)
            if not (got.dtype == dt and e["rel"] <= 2e-2):
                out["ok"] = False
                out.setdefault("failed", []).append(f"attention() {dt} (got {got.dtype})")
    except Exception as exc:  # noqa: BLE001
        out.update(ok=False, error=f"attention(): {exc!r}"[:2000])
    finally:
        _flash.CONFIG = prev


# the order of the sweep: the first kernel, FlashAttention-2's layout, the wgmma kernels, then variants
ORDER = ("v1-w4", "v2-w4-m2", "v3-wg2", "v3-wg2-ov", "v3-wg1", "v3-wg1-ov", "v3-wg2-q", "v3-wg1-q", "v3-wg2-n128",
         "v2-w4-m1", "v2-w4-m2-n32", "v2-w8-m1", "v2-w4-m2-n32-q", "v1-w8", "v2-w8-m2")
ALSO_128 = ("v2-w4-m2", "v3-wg2", "v3-wg2-n128")  # also timed on 128x128-block masks
BLOCKS = ((64, 64), (128, 64), (128, 128), (256, 64))  # the block shapes of the checks and benchmarks


def _warm_compile(names) -> dict:
    """Compile every config (and the fallbacks it takes for the checks' block shapes) for d = 64, 128
    and both 16-bit types, in threads; the first error of each config by name."""
    from concurrent.futures import ThreadPoolExecutor

    hopper = _flash._hopper()
    uses = {name: {_flash._choose(name, r, c, None, hopper) for r, c in BLOCKS} for name in names}
    jobs = [(cfg, d, bf16) for cfg in sorted(set().union(*uses.values()), key=repr) for d in (128, 64)
            for bf16 in (True, False)]

    def one(job):
        cfg, d, bf16 = job
        try:
            _flash._compiled(d, bf16, cfg)
            return None
        except Exception as exc:  # noqa: BLE001
            return f"{cfg} d{d} {'bf16' if bf16 else 'f16'}: {exc!r}"[:3000]

    with ThreadPoolExecutor(8) as pool:
        failed = {job[0]: err for job, err in zip(jobs, pool.map(one, jobs)) if err}
    errors = {}
    for name, cfgs in uses.items():
        for cfg in cfgs:
            if cfg in failed:
                errors.setdefault(name, failed[cfg])
    return errors


def gpu_sweep(names, quick=False, budget_s=125.0, out=None) -> dict:
    """Baselines, then config by config in ``ORDER``: small checks, the benchmark problem's check,
    timings. ``out``: JSON rewritten after each config (a kernel that faults the CUDA context spoils
    the configs after it, so the likeliest winners go first, the minor variants last)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sparsedsl.stdlib import attention as A
    from sparsedsl.stdlib.attention._core import full_mask

    t_start = time.perf_counter()
    names = sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))
    res = {"gpu": torch.cuda.get_device_name(), "configs": {}, "default_before": _flash.CONFIG}
    t0 = time.perf_counter()
    compile_errors = _warm_compile(names)
    res["compile_s"] = time.perf_counter() - t0
    res["compile_errors"] = compile_errors
    print(f"compiled {len(names)} configs in {res['compile_s']:.1f} s; failures: {sorted(compile_errors)}", flush=True)
    for name, e in compile_errors.items():
        print(f"  {name}: {e}", flush=True)

    t0 = time.perf_counter()
    cases = small_cases(small_problems())
    B, H, L, D = QUICK_PROBLEM if quick else PROBLEM
    W, blk = 1024, (128, 64)
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    q3, k3, v3 = (x.reshape(B * H, L, D) for x in (q, k, v))
    scale = 1 / math.sqrt(D)
    M = A.sliding_window(L, W, block=blk, heads=B * H).to("cuda")
    Mc = A.mask_3d(full_mask(L, L, causal=True, block=blk), B * H, L, L).to("cuda")
    res["setup_s"] = time.perf_counter() - t0
    base = res["baselines"] = {"B": B, "H": H, "L": L, "d": D, "window": W, "block": blk}
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        bm = create_block_mask(lambda b, h, qi, ki: (qi >= ki) & (qi - ki < W), B, H, L, L, device="cuda")
        flex = torch.compile(flex_attention)
        ref_sw = flex(q, k, v, block_mask=bm).reshape(B * H, L, D)
        base["flex_sliding_s"] = _bench(lambda: flex(q, k, v, block_mask=bm))
    except Exception as exc:  # noqa: BLE001
        base["flex_error"] = repr(exc)[:2000]
        ref_sw = reference(q3, k3, v3, _window_dense(L, W), scale) if quick else None
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            ref_c = F.scaled_dot_product_attention(q, k, v, is_causal=True).reshape(B * H, L, D)
            base["sdpa_flash_causal_s"] = _bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    except Exception as exc:  # noqa: BLE001 - then the default backend, so the kernels are still checked
        base["sdpa_flash_error"] = repr(exc)[:2000]
        ref_c = F.scaled_dot_product_attention(q, k, v, is_causal=True).reshape(B * H, L, D)
        base["sdpa_flash_causal_s"] = _bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    print(f"setup {res['setup_s']:.1f} s; baselines: {base}", flush=True)
    flex_s, sdpa_s = base.get("flex_sliding_s"), base["sdpa_flash_causal_s"]
    masks128 = {}

    def setup128():  # FlexAttention's own 128x128 blocks: 128-key tiles for bn = 128
        masks128.update(sw=A.sliding_window(L, W, block=(128, 128), heads=B * H).to("cuda"),
                        c=A.mask_3d(full_mask(L, L, causal=True, block=(128, 128)), B * H, L, L).to("cuda"))

    for name in names:
        row = res["configs"][name] = {"config": repr(_flash.CONFIGS[name])}
        if name in compile_errors:
            row["error"] = compile_errors[name]
            continue
        if time.perf_counter() - t_start > budget_s:
            row["skipped"] = "time budget"
            print(f"{name:18s} skipped (time budget)", flush=True)
            continue
        try:
            small = row["small"] = check_small(name, cases)
            used = _flash._choose(name, *blk, None, _flash._hopper())
            row["used"] = repr(used)
            same = [n for n, r in res["configs"].items() if r.get("used") == row["used"] and "causal_s" in r]
            if same and small["ok"]:  # a fallback already timed under another name (256-row tiles, 128-row blocks)
                row["same_as"] = same[0]
                print(f"{name:18s} runs as {same[0]} on {blk} blocks (its small checks passed)", flush=True)
                if name in ALSO_128:
                    _time_128(name, row, masks128, setup128, (q3, k3, v3, scale), ref_sw, ref_c)
                continue
            o = torch.from_dlpack(_flash.fused_attention(q3, k3, v3, M, scale, config=name))
            row["sliding_vs_flex"] = _errors(o, ref_sw) if ref_sw is not None else None
            o = torch.from_dlpack(_flash.fused_attention(q3, k3, v3, Mc, scale, config=name))
            row["causal_vs_sdpa"] = _errors(o, ref_c)
            del o
            ok = small["ok"] and row["causal_vs_sdpa"]["rel"] <= 2e-2 and (
                row["sliding_vs_flex"] is None or row["sliding_vs_flex"]["rel"] <= 2e-2)
            row["correct"] = ok
            if not ok:
                print(f"{name:18s} WRONG: small {str(small.get('failed', small.get('error')))[:300]} (worst rel "
                      f"{small['worst_rel']:.2e}); sliding {row['sliding_vs_flex']}; causal {row['causal_vs_sdpa']}",
                      flush=True)
                continue
            row["sliding_s"] = _bench(lambda: _flash.fused_attention(q3, k3, v3, M, scale, config=name))
            row["causal_s"] = _bench(lambda: _flash.fused_attention(q3, k3, v3, Mc, scale, config=name))
            if used.version >= 2:
                row["sliding_out16_s"] = _bench(
                    lambda: _flash.fused_attention(q3, k3, v3, M, scale, config=name, out16=True))
                row["causal_out16_s"] = _bench(
                    lambda: _flash.fused_attention(q3, k3, v3, Mc, scale, config=name, out16=True))
            if name in ALSO_128:
                _time_128(name, row, masks128, setup128, (q3, k3, v3, scale), ref_sw, ref_c)
            best_sw = min(row["sliding_s"], row.get("sliding_out16_s", math.inf))
            best_c = min(row["causal_s"], row.get("causal_out16_s", math.inf))
            row["sliding_x_flex"] = flex_s / best_sw if flex_s else None
            row["causal_x_sdpa"] = sdpa_s / best_c
            row["sliding_tflops"] = _sliding_flops(M, blk, D) / best_sw * 1e-12
            row["causal_tflops"] = 4 * B * H * D * L * L / 2 / best_c * 1e-12
            print(_line(name, row) + f" [{time.perf_counter() - t_start:.0f} s]", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported, the sweep goes on
            row["error"] = repr(exc)[:3000]
            print(f"{name:18s} ERROR {exc!r}"[:500], flush=True)
            traceback.print_exc()
        torch.cuda.empty_cache()
        if out:
            write_json(out, res)
    _summary(res["configs"], flex_s, sdpa_s)
    res["recommended"] = _recommend(res["configs"], flex_s, sdpa_s)
    print(f"recommended default (correct, best worse-of-two ratio to the targets, float32 output): "
          f"{res['recommended']}; set _flash.CONFIG / SPARSEDSL_FLASH_CONFIG", flush=True)
    res["total_s"] = time.perf_counter() - t_start
    return res


def _time_128(name, row, masks128, setup, qkv, ref_sw, ref_c):
    """The sliding-window and causal problems again on 128x128-block masks (built on first use)."""
    import torch

    q3, k3, v3, scale = qkv
    if not masks128:
        setup()
    for key, m, ref in (("sliding128", masks128["sw"], ref_sw), ("causal128", masks128["c"], ref_c)):
        o = torch.from_dlpack(_flash.fused_attention(q3, k3, v3, m, scale, config=name))
        err = row[f"{key}_err"] = _errors(o, ref) if ref is not None else None
        if err is None or err["rel"] <= 2e-2:
            row[f"{key}_s"] = _bench(lambda: _flash.fused_attention(q3, k3, v3, m, scale, config=name))
            row[f"{key}_out16_s"] = _bench(lambda: _flash.fused_attention(q3, k3, v3, m, scale, config=name,
                                                                          out16=True))
    print(f"{name:18s} 128x128 blocks: " + ", ".join(f"{k} {v * 1e3:.3f} ms" for k, v in row.items()
                                                     if k.endswith(("128_s", "128_out16_s")))
          + f"; errors {row['sliding128_err']}, {row['causal128_err']}", flush=True)


def _sliding_flops(M, blk, D):
    """4 d per (query, key) pair of the stored blocks (what a block-skipping kernel computes)."""
    return 4 * D * len(M.levels[2]["crd"]) * blk[0] * blk[1]


def _window_dense(L, W):
    import torch

    i = torch.arange(L, device="cuda")
    return ((i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < W))[None]


def _line(name, row):
    def t(key):
        return f"{row[key] * 1e3:.3f}" if key in row else "  -  "

    sw = f"{row['sliding_x_flex']:.2f}x flex (target {SW_TARGET})" if row.get("sliding_x_flex") else "no flex"
    return (f"{name:18s} sliding {t('sliding_s')} ms (out16 {t('sliding_out16_s')}) {sw}; causal {t('causal_s')} "
            f"ms (out16 {t('causal_out16_s')}) {row['causal_x_sdpa']:.2f}x sdpa (target {CAUSAL_TARGET}); "
            f"{row['sliding_tflops']:.0f} / {row['causal_tflops']:.0f} TFLOP/s; "
            f"small worst rel {row['small']['worst_rel']:.1e} over {row['small']['n_cases']}")


def _summary(rows, flex_s, sdpa_s):
    """One table, fastest sliding window first (best of float32 and 16-bit output)."""
    timed = [(n, r) for n, r in rows.items() if "sliding_s" in r]
    timed.sort(key=lambda nr: min(nr[1]["sliding_s"], nr[1].get("sliding_out16_s", math.inf)))
    print(f"\n{'config':18s} {'sliding ms':>10s} {'x flex':>7s} {'causal ms':>10s} {'x sdpa':>7s}  "
          "(best of float32 and 16-bit output)")
    for n, r in timed:
        sw = min(r["sliding_s"], r.get("sliding_out16_s", math.inf))
        c = min(r["causal_s"], r.get("causal_out16_s", math.inf))
        print(f"{n:18s} {sw * 1e3:10.3f} {flex_s / sw if flex_s else float('nan'):7.2f} {c * 1e3:10.3f} "
              f"{sdpa_s / c:7.2f}", flush=True)
    others = {n: r.get("error") or ("wrong" if r.get("correct") is False else r.get("same_as") or r.get("skipped"))
              for n, r in rows.items() if "sliding_s" not in r}
    if others:
        print("not timed: " + "; ".join(f"{n}: {str(v)[:120]}" for n, v in others.items()), flush=True)


def _recommend(rows, flex_s, sdpa_s):
    """The correct config whose worse ratio to the two targets is best (f32 output, as the template)."""
    score = {}
    for name, row in rows.items():
        if row.get("correct") and "sliding_s" in row:
            sw = (flex_s / row["sliding_s"] / SW_TARGET) if flex_s else math.inf
            score[name] = min(sw, sdpa_s / row["causal_s"] / CAUSAL_TARGET)
    return max(score, key=score.get) if score else None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compile-only", action="store_true", help="NVRTC compile check of every config (no GPU)")
    ap.add_argument("--configs", default=None, help="comma-separated config names (default: all)")
    ap.add_argument("--quick", action="store_true", help="L=4096 (checks that the script runs)")
    ap.add_argument("--budget", type=float, default=125.0, help="wall seconds before remaining configs are skipped")
    ap.add_argument("--out", default=None, help="JSON path")
    args = ap.parse_args(argv)
    names = args.configs.split(",") if args.configs else list(_flash.CONFIGS)
    unknown = [n for n in names if n not in _flash.CONFIGS]
    if unknown:
        sys.exit(f"unknown configs {unknown}; known: {sorted(_flash.CONFIGS)}")
    if args.compile_only:
        res = {"compile_only": compile_only(names)}
    else:
        import torch

        from .timing import machine_info

        res = {"machine": machine_info({"torch": torch.__version__}),
               **gpu_sweep(names, args.quick, args.budget, args.out)}
    if args.out:
        write_json(args.out, res)
        print("wrote", args.out)


if __name__ == "__main__":
    main()

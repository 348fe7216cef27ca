"""`python -m benchmarks.gpu [--quick] [--out PATH]`: the CUDA backend against cuSPARSE (through cupyx).

CSR SpMV float32 on a banded and a random-column matrix (16 entries per row), CSR SpMM with 64
dense columns, SDDMM (rank 64, against torch.sparse.sampled_addmm), SpGEMM A*A of a random-column and a power-law
matrix (against cuSPARSE through cupyx and torch), (U Vᵀ + S)·X kept factored (against the dense product),
fp16 weights in nm(2,4) / nm(2,8) / bitmap (70% sparse), 8192 x 8192, times 16 fp16 columns (against
dense cuBLAS fp16 through torch.matmul and torch's 2:4 semi-structured matmul; kernel-only and whole
call), device copy bandwidth, and NVRTC compile times (cold, and from the disk cache in a fresh process,
with and without the CUDA initialisation). Times are medians of batches timed with CUDA events; a batch
is `batch` back-to-back calls of the whole Python entry point (operand checks and launch included), so
the GPU stays busy when a call is longer than its host overhead. Results are checked against cuSPARSE
before timing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import sparsedsl as sd
from sparsedsl.tensor import SparseTensor


def gpu_time(fn, reps: int = 9, batch: int = 10) -> float:
    """Median seconds per call (CUDA events around batches of back-to-back calls)."""
    import cupy as cp

    fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(reps):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        for _ in range(batch):
            fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3 / batch)
    return statistics.median(times)


def banded(n: int, per_row: int, dtype):
    """CSR arrays on the device: row i holds columns start..start+per_row-1 around the diagonal."""
    import cupy as cp

    start = cp.clip(cp.arange(n, dtype=cp.int64) - per_row // 2, 0, n - per_row)
    crd = (start[:, None] + cp.arange(per_row)).ravel().astype(cp.int32)
    return _csr(n, per_row, crd, dtype)


def random_columns(n: int, per_row: int, dtype, seed=0):
    """Row i holds per_row distinct random columns: sorted draws r_k in [0, n - per_row], plus k."""
    import cupy as cp

    rs = cp.random.RandomState(seed)
    r = cp.sort(rs.randint(0, n - per_row + 1, size=(n, per_row), dtype=cp.int64), axis=1)
    crd = (r + cp.arange(per_row)).ravel().astype(cp.int32)
    return _csr(n, per_row, crd, dtype)


def _csr(n, per_row, crd, dtype):
    import cupy as cp

    pos = cp.arange(n + 1, dtype=cp.int32) * per_row
    vals = cp.random.RandomState(1).random_sample(n * per_row, dtype=cp.float64).astype(dtype)
    # built sorted and unique on the device; validating 10^8 entries on the host would dominate the run
    return SparseTensor("csr", (n, n), [{}, {"pos": pos, "crd": crd}], vals, check=False)


def cusparse(A: SparseTensor):
    import cupyx.scipy.sparse as csp

    return csp.csr_matrix((A.values, A.levels[1]["crd"], A.levels[1]["pos"]), shape=A.shape)


def copy_bandwidth(nbytes: int) -> float:
    import cupy as cp

    x = cp.ones(nbytes // 4, dtype=cp.float32)
    y = cp.empty_like(x)
    t = gpu_time(lambda: cp.copyto(y, x))
    return 2 * nbytes / t / 1e9


def spmv_case(name, A, results, batch):
    import cupy as cp

    n = A.shape[0]
    x = cp.random.RandomState(2).random_sample(n, dtype=cp.float64).astype(A.dtype)
    kernel = sd.compile("y[i] = A[i,j] * x[j]", A="csr")
    M = cusparse(A)
    y, want = kernel(A=A, x=x), M @ x
    err = float(cp.abs(y - want).max() / cp.abs(want).max())
    t_sd = gpu_time(lambda: kernel(A=A, x=x), batch=batch)
    t_cs = gpu_time(lambda: M @ x, batch=batch)
    nnz = A.nnz
    nbytes = nnz * (A.values.itemsize + 4) + (n + 1) * 4 + 2 * n * A.values.itemsize
    spec = next(iter(next(s for s in kernel._plans.values()).steps[0][2].specs.values()))
    lanes = next((s.launched[2] for s in spec.steps if hasattr(s, "launched")), None)
    results[name] = {"rows": n, "nnz": nnz, "dtype": str(A.dtype), "bytes": nbytes, "max_rel_err": err,
                     "threads_per_row": lanes,
                     "sparsedsl_s": t_sd, "cusparse_s": t_cs, "sparsedsl_GBps": nbytes / t_sd / 1e9,
                     "cusparse_GBps": nbytes / t_cs / 1e9, "speedup_vs_cusparse": t_cs / t_sd}
    print(f"{name:28s} sparsedsl {t_sd * 1e3:8.3f} ms {nbytes / t_sd / 1e9:7.0f} GB/s | cuSPARSE "
          f"{t_cs * 1e3:8.3f} ms {nbytes / t_cs / 1e9:7.0f} GB/s | x{t_cs / t_sd:5.2f} | {lanes} thr/row "
          f"| err {err:.1e}", flush=True)


def spmm_case(name, A, cols, results, batch):
    import cupy as cp

    n = A.shape[0]
    X = cp.random.RandomState(3).random_sample((n, cols), dtype=cp.float64).astype(A.dtype)
    kernel = sd.compile("Y[i,n] = A[i,j] * X[j,n]", A="csr")
    M = cusparse(A)
    Y, want = kernel(A=A, X=X), M @ X
    err = float(cp.abs(Y - want).max() / cp.abs(want).max())
    t_sd = gpu_time(lambda: kernel(A=A, X=X), reps=5, batch=batch)
    t_cs = gpu_time(lambda: M @ X, reps=5, batch=batch)
    flops = 2 * A.nnz * cols
    results[name] = {"rows": n, "nnz": A.nnz, "cols": cols, "max_rel_err": err, "sparsedsl_s": t_sd,
                     "cusparse_s": t_cs, "sparsedsl_GFLOPs": flops / t_sd / 1e9,
                     "cusparse_GFLOPs": flops / t_cs / 1e9, "speedup_vs_cusparse": t_cs / t_sd}
    print(f"{name:28s} sparsedsl {t_sd * 1e3:8.3f} ms {flops / t_sd / 1e9:7.0f} GFLOP/s | cuSPARSE "
          f"{t_cs * 1e3:8.3f} ms {flops / t_cs / 1e9:7.0f} GFLOP/s | x{t_cs / t_sd:5.2f} | err {err:.1e}", flush=True)


def composite_case(name, results, n=8192, rank=16, density=0.01, cols=64):
    """(U Vᵀ + S)·X kept factored, against the dense product A·X (cuBLAS, A materialised once): the
    GPU row of the composite benchmark (benchmarks/composite.py has the CPU one)."""
    import cupy as cp
    import scipy.sparse as sp

    rng = np.random.default_rng(7)
    U, V = (rng.standard_normal((n, rank)).astype(np.float32) for _ in range(2))
    S = sd.asformat(sp.random(n, n, density=density, random_state=8, format="csr", dtype=np.float32), "csr")
    A = (sd.lowrank(U, V) + S).to("cuda")
    X = cp.asarray(rng.standard_normal((n, cols)).astype(np.float32))
    dense = cp.asarray(U) @ cp.asarray(V).T + cp.asarray(S.to_numpy())
    kernel = sd.compile("Y[i,n] = A[i,j] * X[j,n]")
    Y, want = kernel(A=A, X=X), dense @ X
    err = float(cp.abs(Y - want).max() / cp.abs(want).max())
    t_sd = gpu_time(lambda: kernel(A=A, X=X), reps=7, batch=10)
    t_dense = gpu_time(lambda: dense @ X, reps=7, batch=10)
    results[name] = {"n": n, "rank": rank, "S_density": density, "cols": cols, "max_rel_err": err,
                     "sparsedsl_s": t_sd, "dense_cublas_s": t_dense, "speedup_vs_dense": t_dense / t_sd}
    print(f"{name:28s} sparsedsl {t_sd * 1e3:8.3f} ms | dense cuBLAS {t_dense * 1e3:8.3f} ms | "
          f"x{t_dense / t_sd:5.2f} | err {err:.1e}", flush=True)


def sddmm_case(name, S, rank, results):
    """C = S * (U V^T) on S's pattern, against torch.sparse.sampled_addmm (which skips the * S)."""
    import cupy as cp
    import torch

    n = S.shape[0]
    rs = cp.random.RandomState(4)
    U, V = (rs.random_sample((n, rank), dtype=cp.float64).astype(S.dtype) for _ in range(2))
    kernel = sd.compile("C[i,j] = S[i,j] * U[i,k] * V[j,k]", S="csr", out_format="csr")
    C = kernel(S=S, U=U, V=V)
    St = torch.sparse_csr_tensor(torch.from_dlpack(S.levels[1]["pos"]), torch.from_dlpack(S.levels[1]["crd"]),
                                 torch.from_dlpack(S.values), size=S.shape)
    Ut, Vt = torch.from_dlpack(U), torch.from_dlpack(V)
    peer = torch.sparse.sampled_addmm(St, Ut, Vt.T, beta=0.0)
    want = cp.from_dlpack(peer.values()) * S.values
    err = float(cp.abs(C.values - want).max() / cp.abs(want).max())
    t_sd = gpu_time(lambda: kernel(S=S, U=U, V=V), reps=3, batch=1)
    t_pe = gpu_time(lambda: torch.sparse.sampled_addmm(St, Ut, Vt.T, beta=0.0), reps=3, batch=1)
    results[name] = {"rows": n, "nnz": S.nnz, "rank": rank, "max_rel_err": err, "sparsedsl_s": t_sd,
                     "torch_sampled_addmm_s": t_pe, "speedup_vs_torch": t_pe / t_sd}
    print(f"{name:28s} sparsedsl {t_sd * 1e3:8.3f} ms | torch sampled_addmm {t_pe * 1e3:8.3f} ms | "
          f"x{t_pe / t_sd:5.2f} | err {err:.1e}", flush=True)


def spgemm_case(name, A, results):
    """C = A A (CSR output), against cuSPARSE SpGEMM through cupyx and through torch (CSR @ CSR)."""
    import cupy as cp

    kernel = sd.compile("C[i,j] = A[i,k] * B[k,j]", A="csr", B="csr", out_format="csr")
    M = cusparse(A)
    C, want = kernel(A=A, B=A), M @ M
    want.sort_indices()
    same = C.nnz == want.nnz and bool(cp.all(C.levels[1]["crd"] == want.indices))
    err = float(cp.abs(C.values - want.data).max() / cp.abs(want.data).max()) if same else float("nan")
    t_sd = gpu_time(lambda: kernel(A=A, B=A), reps=9, batch=5)
    t_cs = gpu_time(lambda: M @ M, reps=9, batch=5)
    row = {"rows": A.shape[0], "nnz": A.nnz, "nnz_out": int(want.nnz), "same_pattern": same,
           "max_rel_err": err, "sparsedsl_s": t_sd, "cusparse_s": t_cs, "speedup_vs_cusparse": t_cs / t_sd,
           "launch": sd.explain(kernel, A=A, B=A).split("// ----")[0].strip().splitlines()}
    try:
        import torch

        T = torch.sparse_csr_tensor(torch.from_dlpack(A.levels[1]["pos"].astype(cp.int64)),
                                    torch.from_dlpack(A.levels[1]["crd"].astype(cp.int64)),
                                    torch.from_dlpack(A.values), size=A.shape)
        row["torch_s"] = gpu_time(lambda: T @ T, reps=9, batch=5)
    except Exception as exc:  # noqa: BLE001 - torch missing or without CUDA CSR SpGEMM
        row["torch_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    best = min(t_cs, row.get("torch_s", np.inf))
    row["speedup_vs_best_peer"] = best / t_sd
    results[name] = row
    torch_txt = f" | torch {row['torch_s'] * 1e3:8.3f} ms" if "torch_s" in row else ""
    print(f"{name:28s} sparsedsl {t_sd * 1e3:8.3f} ms | cuSPARSE {t_cs * 1e3:8.3f} ms{torch_txt} | "
          f"x{best / t_sd:5.2f} best peer | pattern {'ok' if same else 'DIFFERS'} | err {err:.1e} | "
          f"{row['launch'][-1] if row['launch'] else ''}", flush=True)


def power_law(n: int, avg: float, dtype, seed=3):
    """A CSR matrix on the device whose row lengths and column popularities follow one Pareto weight
    per node (a Chung-Lu-like graph): rows of a few hundred to thousands of products beside short ones."""
    rng = np.random.default_rng(seed)
    w = rng.pareto(1.6, n) + 1.0
    lengths = np.minimum(np.maximum(1, (w / w.mean() * avg).astype(np.int64)), n // 4)
    rows = np.repeat(np.arange(n), lengths)
    cols = rng.choice(n, size=rows.size, p=w / w.sum())
    import scipy.sparse as sps

    m = sps.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    m.sum_duplicates()
    m.data = rng.random(m.nnz) + 0.5
    return sd.asformat(m.astype(dtype), "csr").to("cuda")


def pruned_weights(rows, cols, fmt, seed=5):
    """(dense fp16 cupy matrix with fmt's zeros, the same as a SparseTensor on the device), built on the
    GPU: packing 67M entries on the host would dominate the run. nm: the N largest of every M."""
    import cupy as cp

    rs = cp.random.RandomState(seed)
    w = rs.standard_normal((rows, cols), dtype=cp.float32).astype(cp.float16)
    if fmt == "bitmap":
        keep = rs.random_sample((rows, cols), dtype=cp.float32) < 0.3  # 70% sparsity
        dense = cp.where(keep, w, cp.float16(0))
        # one bit per column, LSB first, each row padded to whole 32-bit words (levels/bitmap.py)
        nw = (cols + 31) // 32
        padded = cp.zeros((rows, nw * 32), dtype=cp.uint32)
        padded[:, :cols] = keep
        mask = (padded.reshape(rows, nw, 32) << cp.arange(32, dtype=cp.uint32)).sum(axis=2, dtype=cp.uint32).ravel()
        pos = cp.zeros(rows + 1, dtype=cp.int64)
        pos[1:] = cp.cumsum(keep.sum(axis=1))
        idx = cp.int32 if int(pos[-1]) < 2**31 and rows * cols < 2**31 else cp.int64
        levels = [{}, {"mask": mask, "pos": pos.astype(idx)}]
        return dense, SparseTensor("bitmap", (rows, cols), levels, w[keep], check=False)
    n, m = (int(v) for v in fmt[3:-1].split(","))
    g = cp.abs(w).reshape(rows, cols // m, m)
    crd = cp.sort(cp.argsort(g, axis=2)[:, :, m - n:], axis=2).astype(cp.uint8)
    vals = cp.take_along_axis(w.reshape(rows, cols // m, m), crd.astype(cp.int64), axis=2)
    keep = (crd[:, :, :, None] == cp.arange(m, dtype=cp.uint8)).any(axis=2)
    dense = cp.where(keep, w.reshape(rows, cols // m, m), cp.float16(0))
    level = sd.lang.formats.as_format(fmt, 2).levels[1].type  # the group's indices packed in one word
    shifts = cp.arange(n, dtype=cp.uint64) * level.bits
    meta = (crd.astype(cp.uint64) << shifts).sum(axis=2, dtype=cp.uint64).astype(level.dtype)
    st = SparseTensor(fmt, (rows, cols), [{}, {"meta": meta.ravel()}], vals.ravel(), check=False)
    return dense.reshape(rows, cols), st


def skinny_case(name, fmt, results, rows=8192, cols=8192, ncols=16):
    """W (fp16, fmt) x X (fp16, ncols columns): the LLM decode product, against dense cuBLAS fp16
    (torch.matmul) on the same matrix with its zeros, and torch's 2:4 semi-structured path."""
    import cupy as cp
    import torch

    dense, W = pruned_weights(rows, cols, fmt)
    X = cp.random.RandomState(6).standard_normal((cols, ncols), dtype=cp.float32).astype(cp.float16)
    kernel = sd.compile("Y[i,n] = W[i,j] * X[j,n]", W=fmt)
    Y = kernel(W=W, X=X)
    Wt, Xt = torch.from_dlpack(dense), torch.from_dlpack(X)
    want = cp.from_dlpack(torch.matmul(Wt, Xt)).astype(cp.float32)
    err = float(cp.abs(Y.astype(cp.float32) - want).max() / cp.abs(want).max())
    spec = next(iter(next(iter(kernel._plans.values())).steps[0][2].specs.values()))
    launched = next((s.launched for s in spec.steps if hasattr(s, "launched")), None)
    t_call = gpu_time(lambda: kernel(W=W, X=X), batch=20)
    fn, grid, block, args = spec.last_launch if isinstance(launched[2], tuple) else (None,) * 4
    t_kernel = gpu_time(lambda: fn(grid, block, args), batch=20) if fn is not None else float("nan")
    t_dense = gpu_time(lambda: torch.matmul(Wt, Xt), batch=20)
    row = {"rows": rows, "cols": cols, "ncols": ncols, "format": fmt, "dtype": "float16", "max_rel_err": err,
           "schedule": str(launched), "bytes": W.nbytes + X.nbytes + Y.nbytes, "sparsedsl_call_s": t_call,
           "kernel_regs": spec.last_launch[0].attributes.get("num_regs") if fn is not None else None,
           "sparsedsl_kernel_s": t_kernel, "dense_cublas_s": t_dense,
           "speedup_vs_dense_call": t_dense / t_call, "speedup_vs_dense_kernel": t_dense / t_kernel,
           "sparsedsl_kernel_GBps": (W.nbytes + X.nbytes + Y.nbytes) / t_kernel / 1e9,
           "dense_GBps": (dense.nbytes + X.nbytes + 2 * rows * ncols) / t_dense / 1e9}
    semi = ""
    if fmt == "nm(2,4)":
        try:
            from torch.sparse import to_sparse_semi_structured

            Ws = to_sparse_semi_structured(Wt)
            got = cp.from_dlpack(torch.matmul(Ws, Xt)).astype(cp.float32)
            row["torch_semi_structured_err"] = float(cp.abs(got - want).max() / cp.abs(want).max())
            row["torch_semi_structured_s"] = gpu_time(lambda: torch.matmul(Ws, Xt), batch=20)
            row["speedup_vs_semi_structured_kernel"] = row["torch_semi_structured_s"] / t_kernel
            semi = f" | torch 2:4 {row['torch_semi_structured_s'] * 1e6:7.1f} us"
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            row["torch_semi_structured"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    results[name] = row
    print(f"{name:28s} sparsedsl kernel {t_kernel * 1e6:7.1f} us ({row['sparsedsl_kernel_GBps']:5.0f} GB/s), "
          f"call {t_call * 1e6:7.1f} us | cuBLAS dense fp16 {t_dense * 1e6:7.1f} us ({row['dense_GBps']:5.0f} GB/s)"
          f"{semi} | x{row['speedup_vs_dense_kernel']:5.2f} kernel, x{row['speedup_vs_dense_call']:5.2f} call "
          f"| {launched} | err {err:.1e}", flush=True)


def skinny_sweep(results, rows=8192, cols=8192, ncols=16):
    """Kernel time of the skinny template for each (m tiles per warp, min blocks per SM, slots per lane,
    warps per block) per format; the fastest becomes the template's choice for the rest of the run
    (skinny.CONFIG)."""
    import cupy as cp

    from sparsedsl.backends.cuda.templates import skinny

    sweep = {}
    for fmt, key in (("nm(2,4)", ("nm", 4)), ("nm(2,8)", ("nm", 8)), ("bitmap", ("bitmap", 0))):
        _, W = pruned_weights(rows, cols, fmt)
        X = cp.random.RandomState(6).standard_normal((cols, ncols), dtype=cp.float32).astype(cp.float16)
        best = None
        configs = {"nm(2,4)": ((1, 2, 16, None), (1, 3, 16, None), (1, 2, 16, 4), (1, 1, 32, None),
                               (2, 2, 16, None), (1, 2, 8, None)),
                   "nm(2,8)": ((2, 2, 8, None), (1, 2, 8, None), (2, 2, 8, 4), (1, 2, 16, None)),
                   "bitmap": ((1, 2, 16, None), (1, 2, 16, 4), (1, 1, 16, None), (1, 1, 16, 4))}[fmt]
        for cfg in configs:
            skinny.CONFIG[key] = cfg
            kernel = sd.compile("Y[i,n] = W[i,j] * X[j,n]", W=fmt)
            kernel(W=W, X=X)
            spec = next(iter(next(iter(kernel._plans.values())).steps[0][2].specs.values()))
            fn, grid, block, args = spec.last_launch
            t = gpu_time(lambda fn=fn, grid=grid, block=block, args=args: fn(grid, block, args), batch=20)
            attrs = {a: fn.attributes.get(a) for a in ("num_regs", "local_size_bytes")}
            name = f"{fmt} mtiles={cfg[0]} minblocks={cfg[1]} slots={cfg[2]} warps={block[0] // 32}"
            sweep[name] = {"kernel_s": t, **attrs}
            print(f"  sweep {name}: {t * 1e6:7.1f} us {attrs}", flush=True)
            if best is None or t < best[0]:
                best = (t, cfg)
        skinny.CONFIG[key] = best[1]
        results[f"skinny_best_{fmt}"] = {"config": list(best[1]), "kernel_s": best[0]}
    results["skinny_sweep"] = sweep


COMPILE_PROBE = """
import sys, time, numpy as np, scipy.sparse as sp, sparsedsl as sd
a = sd.asformat(sp.random(64, 64, density=0.2, format="csr", random_state=0, dtype=np.float32), "csr")
k = sd.compile("y[i] = A[i,j] * x[j] + b[i]", A="csr")
t = time.perf_counter()
if sys.argv[1] == "cuda-ready":  # the process has used the GPU already: cupy imported, a context made
    import cupy
    cupy.zeros(1)
    cupy.cuda.Device().synchronize()
t0 = time.perf_counter(); k(A=a, x=np.ones(64, np.float32), b=np.ones(64, np.float32), backend="cuda")
print(t0 - t, time.perf_counter() - t0)
"""


def compile_times() -> dict:
    """First call of a new kernel in a fresh process, with empty caches and then with the disk
    caches: the whole call (importing cupy and making the CUDA context included), and the call in a
    process that has used the GPU already (the kernel's own cost: lowering, rendering, loading the
    compiled module from the disk cache)."""
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, SPARSEDSL_CACHE_DIR=os.path.join(d, "sd"), CUPY_CACHE_DIR=os.path.join(d, "cupy"))
        runs = []
        for how in ("cold", "cold", "cuda-ready", "cuda-ready"):
            out = subprocess.run([sys.executable, "-c", COMPILE_PROBE, how], env=env, capture_output=True, text=True)
            if out.returncode:
                return {"error": out.stderr[-500:]}
            runs.append([float(v) for v in out.stdout.strip().splitlines()[-1].split()])
    return {"first_call_cold_s": runs[0][1], "first_call_disk_cache_s": runs[1][1],
            "cuda_init_s": runs[2][0], "first_call_disk_cache_cuda_ready_s": runs[2][1],
            "first_call_disk_cache_cuda_ready_again_s": runs[3][1]}


def main(argv=None):
    import cupy as cp

    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="1M rows instead of 8M")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "benchmarks/results"), "gpu.json"))
    ap.add_argument("--cases", default="", help="comma-separated case-name prefixes to run (default: all); "
                    "rows of --merge that are not rerun are kept")
    ap.add_argument("--merge", default="", help="an earlier result JSON whose other rows to keep")
    args = ap.parse_args(argv)
    want = [c for c in args.cases.split(",") if c]

    def wanted(case):
        return not want or any(case.startswith(w) for w in want)

    n = 1 << 20 if args.quick else 8 << 20
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    device = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    print(f"device: {device}, cupy {cp.__version__}, rows {n}", flush=True)
    results: dict = {}
    if args.merge and os.path.exists(args.merge):
        with open(args.merge) as f:
            results = json.load(f).get("results", {})
    results["copy_GBps"] = copy_bandwidth(1 << 30)
    print(f"device copy: {results['copy_GBps']:.0f} GB/s (bytes read + written)", flush=True)
    cases = [
        ("spmv_banded_f32", lambda c: spmv_case(c, banded(n, 16, np.float32), results, batch=20)),
        ("spmv_random_f32", lambda c: spmv_case(c, random_columns(n, 16, np.float32), results, batch=20)),
        ("spmm_banded_f32_64cols", lambda c: spmm_case(c, banded(n // 8, 16, np.float32), 64, results, batch=5)),
        ("sddmm_banded_f32_rank64", lambda c: sddmm_case(c, banded(n // 8, 16, np.float32), 64, results)),
        ("spgemm_random_f32", lambda c: spgemm_case(c, random_columns(n // 64, 8, np.float32), results)),
        ("spgemm_powerlaw_f32", lambda c: spgemm_case(c, power_law(n // 64, 8, np.float32), results)),
        ("composite_lowrank_sparse_8192", lambda c: composite_case(c, results)),
        ("skinny_sweep", lambda c: skinny_sweep(results)),
        ("skinny_nm24_fp16_8192x8192x16", lambda c: skinny_case(c, "nm(2,4)", results)),
        ("skinny_nm28_fp16_8192x8192x16", lambda c: skinny_case(c, "nm(2,8)", results)),
        ("skinny_bitmap70_fp16_8192x8192x16", lambda c: skinny_case(c, "bitmap", results)),
    ]
    for case, run in cases:
        if not wanted(case):
            continue
        try:
            run(case)
        except Exception as exc:  # noqa: BLE001 - a failing case is recorded, the others still run
            results[case] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(f"{case}: {results[case]['error']}", flush=True)
    for case in ("spmv_banded_f32", "spmv_random_f32"):
        if case in results and "sparsedsl_GBps" in results[case]:
            results[case]["fraction_of_copy_bw"] = results[case]["sparsedsl_GBps"] / results["copy_GBps"]
    if wanted("compile"):
        results["compile"] = compile_times()
        print(f"compile: {results['compile']}", flush=True)
    report = {"device": device, "cupy": cp.__version__, "python": platform.python_version(),
              "sparsedsl": sd.__version__, "quick": args.quick,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "method": __doc__.split("\n\n")[1].replace("\n", " "), "results": results}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

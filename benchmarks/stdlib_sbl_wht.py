"""`python -m benchmarks.stdlib_sbl_wht [--quick] [--out PATH]`: issue 16's done-when lines, measured.

Cases (peers timed in the same run, ratios printed, JSON written to benchmarks/results/):
- fwht at N = 2^20 (one vector) and 256 x 2^12 (a batch) against a plain numpy radix-2 butterfly and
  against a copy of the same array (one read + one write: the memory-bandwidth floor of any
  out-of-place transform); with cupy and a GPU, also on the GPU against cupy and torch butterflies,
  checked equal to the CPU's result.
- spright for N = 2^10 ... 2^20, K in {4, 16, 64}, noise at SNR 10 dB: exact-support rate over trials,
  samples / (K log2 N) for every N, and at N = 2^20, K = 16 its time against fwht of the full signal.
- sbl: 10-sparse x, n = 256, m = 80, SNR 20 dB: NMSE and whether the cost ever increased.
- turbo_vbi: clustered supports (three runs of 8), n = 256, m = 64, 20 dB: NMSE against plain sbl.
- kron_sbl on Kronecker-supported data with Phi1, Phi2 32x64: AM and SVD variants over 20 trials (NMSE,
  AM monotone), against plain SBL on the materialised 1024x4096 Phi (numpy/BLAS EM, and sparsedsl's
  sbl() per iteration).

--quick shrinks every size (for checking that the script runs on a busy machine); the full run takes
about 3-5 minutes on a quiet 2-core machine. On a loaded machine numba's parallel loops stall at their
barriers (fwht at 2^16 measured 63 ms with 2 threads at load 9 against 1.5 ms with one, numpy's
butterfly 6 ms), so for a stable comparison also run it single-threaded:
``NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 python -m benchmarks.stdlib_sbl_wht --out
benchmarks/results/stdlib-sbl-wht-1thread.json``. The GPU rows alone, on the GPU machine:
``python -m benchmarks.stdlib_sbl_wht --gpu-only``.
"""

# ruff: noqa: B023 (the timed closures are called inside the loop iteration that defines them)
from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np

import sparsedsl as sd
from sparsedsl.stdlib.sbl import kron_sbl, sbl
from sparsedsl.stdlib.turbo_vbi import turbo_vbi
from sparsedsl.stdlib.wht import fwht, spright

from .timing import fmt_time, interleaved, machine_info, write_json


def _median(fns: dict, reps: int) -> dict:
    res = interleaved(fns, reps)
    if res.pop("_errors"):
        raise RuntimeError(res)
    return {k: {"median_s": v["median"], "min_s": v["min"]} for k, v in res.items()}


def numpy_butterfly(x):
    """The plain radix-2 butterfly on the last axis, in numpy (n passes, in place on a copy)."""
    y = np.array(x, dtype=np.result_type(x, np.float64) if x.dtype.kind in "biu" else x.dtype, copy=True)
    N, h = y.shape[-1], 1
    while h < N:
        v = y.reshape(-1, N // (2 * h), 2, h)
        a = v[:, :, 0, :].copy()
        v[:, :, 0, :] += v[:, :, 1, :]
        v[:, :, 1, :] = a - v[:, :, 1, :]
        h *= 2
    return y


def fwht_cpu_case(reps, quick) -> list:
    rng = np.random.default_rng(0)
    out = []
    for shape in ([(1 << 16,), (16, 1 << 10)] if quick else [(1 << 20,), (256, 1 << 12)]):
        x = rng.standard_normal(shape)
        dst = np.empty_like(x)
        ok = bool(np.allclose(fwht(x), numpy_butterfly(x)))
        t = _median({"sparsedsl_fwht": lambda: fwht(x), "numpy_butterfly": lambda: numpy_butterfly(x),
                     "copy_same_bytes": lambda: np.copyto(dst, x)}, reps)
        n = int(math.log2(shape[-1]))
        ours, peer, copy = (t[k]["median_s"] for k in ("sparsedsl_fwht", "numpy_butterfly", "copy_same_bytes"))
        row = {"case": f"fwht {shape} float64", "equal": ok, "times": t,
               "speedup_vs_numpy_butterfly": peer / ours, "time_over_one_copy": ours / copy,
               "passes_over_memory": -(-n // 4),
               "effective_GBps": 2 * x.nbytes * -(-n // 4) / ours / 1e9, "copy_GBps": 2 * x.nbytes / copy / 1e9}
        print(f"{row['case']}: sparsedsl {fmt_time(ours)}, numpy butterfly {fmt_time(peer)} "
              f"({row['speedup_vs_numpy_butterfly']:.2f}x), one copy {fmt_time(copy)} (fwht = {ours / copy:.1f} "
              f"copies; {row['passes_over_memory']} passes at {row['effective_GBps']:.1f} GB/s vs copy "
              f"{row['copy_GBps']:.1f} GB/s); equal: {ok}")
        out.append(row)
    return out


def fwht_gpu_case(reps, quick) -> dict | None:
    try:
        import cupy
    except ImportError:
        cupy = None
    if cupy is None or not cupy.is_available():
        print("fwht on the GPU: skipped (no cupy or GPU)")
        return None

    def cupy_butterfly(x):
        y = x.copy()
        N, h = y.shape[-1], 1
        while h < N:
            v = y.reshape(-1, N // (2 * h), 2, h)
            a, b = v[:, :, 0, :].copy(), v[:, :, 1, :].copy()
            v[:, :, 0, :] = a + b
            v[:, :, 1, :] = a - b
            h *= 2
        return y

    def timed(fn):
        def run():
            fn()
            cupy.cuda.Device().synchronize()
        return run

    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    rows = []
    for shape in ([(1 << 16,)] if quick else [(1 << 20,), (1 << 24,), (256, 1 << 12)]):
        xh = np.random.default_rng(1).standard_normal(shape)
        x = cupy.asarray(xh)
        got = fwht(x)
        equal = bool(np.allclose(got.get(), fwht(xh)))
        fns = {"sparsedsl_fwht": timed(lambda: fwht(x)), "cupy_butterfly": timed(lambda: cupy_butterfly(x)),
               "copy_same_bytes": timed(lambda: x.copy())}
        try:
            import torch

            xt = torch.as_tensor(xh, device="cuda")

            def torch_butterfly():
                y, N, h = xt.clone(), xt.shape[-1], 1
                while h < N:
                    v = y.reshape(-1, N // (2 * h), 2, h)
                    y = torch.stack((v[:, :, 0] + v[:, :, 1], v[:, :, 0] - v[:, :, 1]), dim=2).reshape(xt.shape)
                    h *= 2
                torch.cuda.synchronize()
                return y
            fns["torch_butterfly"] = torch_butterfly
        except Exception:  # noqa: BLE001 - torch is optional
            pass
        for f in fns.values():
            f()
        t = _median(fns, reps)
        ours = t["sparsedsl_fwht"]["median_s"]
        row = {"case": f"fwht {shape} float64 on {name}", "equal_to_cpu": equal, "times": t,
               **{f"speedup_vs_{k}": v["median_s"] / ours for k, v in t.items() if k != "sparsedsl_fwht"}}
        print(f"{row['case']}: " + ", ".join(f"{k} {fmt_time(v['median_s'])}" for k, v in t.items())
              + f"; equal to CPU: {equal}")
        rows.append(row)
    return {"gpu": name, "rows": rows}


def spright_case(quick) -> dict:
    ns = [10, 12, 14] if quick else list(range(10, 21))
    trials = 4 if quick else 20
    rows = []
    for n in ns:
        N = 1 << n
        for K in (4, 16, 64):
            hits, samples, times = 0, [], []
            for trial in range(trials):
                rng = np.random.default_rng(1000 * n + 10 * K + trial)
                X = np.zeros(N)
                support = rng.choice(N, K, replace=False)
                X[support] = rng.choice([-1.0, 1.0], K)
                x = fwht(X) + rng.standard_normal(N) * math.sqrt(K / 10.0)  # SNR = ||X||^2 / sigma^2 = 10 dB
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    res = spright(x, n, K, snr_db=10, random_state=trial)
                hits += bool(np.array_equal(res.indices, np.sort(support)))
                samples.append(res.n_samples)
                times.append(res.time_s)
            row = {"n": n, "K": K, "trials": trials, "exact_support_rate": hits / trials,
                   "samples": int(np.median(samples)), "samples_over_K_log2N": float(np.median(samples)) / (K * n),
                   "median_time_s": float(np.median(times))}
            rows.append(row)
            print(f"spright N=2^{n:<2} K={K:<3} support exact {hits}/{trials}, samples {row['samples']} "
                  f"(= {row['samples_over_K_log2N']:.1f} K log2 N{', whole signal' if row['samples'] == N else ''}),"
                  f" {fmt_time(row['median_time_s'])}")
    n = ns[-1]
    N, K = 1 << n, 16
    rng = np.random.default_rng(7)
    X = np.zeros(N)
    X[rng.choice(N, K, replace=False)] = 1.0
    x = fwht(X) + rng.standard_normal(N) * math.sqrt(K / 10.0)
    t = _median({"spright": lambda: spright(x, n, K, snr_db=10, random_state=0), "fwht_full": lambda: fwht(x)},
                3 if quick else 9)
    speed = {"n": n, "K": K, "times": t, "speedup_vs_fwht": t["fwht_full"]["median_s"] / t["spright"]["median_s"]}
    print(f"spright vs fwht at N=2^{n}, K={K}: {fmt_time(t['spright']['median_s'])} vs "
          f"{fmt_time(t['fwht_full']['median_s'])}: {speed['speedup_vs_fwht']:.1f}x")
    return {"rows": rows, "speed": speed}


def _nmse_db(a, b):
    return float(10 * np.log10(np.sum((a - b) ** 2) / np.sum(b ** 2)))


def sbl_case(quick) -> dict:
    trials = 2 if quick else 10
    nmse, mono = [], True
    for trial in range(trials):
        rng = np.random.default_rng(trial)
        Phi = rng.standard_normal((80, 256)) / math.sqrt(80)
        x = np.zeros(256)
        x[rng.choice(256, 10, replace=False)] = rng.standard_normal(10)
        clean = Phi @ x
        y = clean + rng.standard_normal(80) * math.sqrt(np.mean(clean ** 2) / 100)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            res = sbl(Phi, y, max_iter=400, tol=1e-5)
        nmse.append(_nmse_db(res.mean, x))
        mono &= bool(np.all(np.diff(res.history) <= 1e-9 * np.abs(res.history[:-1])))
    print(f"sbl n=256 m=80 10-sparse 20 dB: NMSE mean {np.mean(nmse):.1f} dB, worst {max(nmse):.1f} dB over "
          f"{trials} trials; cost non-increasing: {mono}")
    return {"nmse_db": nmse, "mean_nmse_db": float(np.mean(nmse)), "worst_nmse_db": float(max(nmse)),
            "cost_nonincreasing": mono}


def turbo_case(quick) -> dict:
    """Turbo-VBI's clustered-support prior against plain SBL: n = 256, m = 64, three runs of 8 nonzeros at
    random positions, SNR 20 dB (not in the issue's done-when lines; the paper's claim)."""
    trials = 3 if quick else 20
    turbo, plain, t_turbo, t_plain = [], [], [], []
    for trial in range(trials):
        rng = np.random.default_rng(500 + trial)
        Phi = rng.standard_normal((64, 256)) / 8.0
        x = np.zeros(256)
        for start in rng.choice(16, 3, replace=False) * 16 + rng.integers(0, 8, 3):
            x[start:start + 8] = rng.standard_normal(8)
        clean = Phi @ x
        y = clean + rng.standard_normal(64) * math.sqrt(np.mean(clean ** 2) / 100)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            t0 = time.perf_counter()
            turbo.append(_nmse_db(turbo_vbi(Phi, y).mean, x))
            t1 = time.perf_counter()
            plain.append(_nmse_db(sbl(Phi, y, max_iter=500, tol=1e-5).mean, x))
            t2 = time.perf_counter()
        t_turbo.append(t1 - t0)
        t_plain.append(t2 - t1)
    print(f"turbo_vbi vs sbl, 3 runs of 8 in n=256, m=64, 20 dB, {trials} trials: NMSE {np.mean(turbo):.1f} dB vs "
          f"{np.mean(plain):.1f} dB; median time {fmt_time(np.median(t_turbo))} vs {fmt_time(np.median(t_plain))}")
    return {"trials": trials, "turbo_nmse_db": turbo, "sbl_nmse_db": plain, "turbo_mean_nmse_db": float(np.mean(turbo)),
            "sbl_mean_nmse_db": float(np.mean(plain)), "turbo_median_s": float(np.median(t_turbo)),
            "sbl_median_s": float(np.median(t_plain))}


def numpy_sbl(Phi, y, max_iter, tol):
    """Plain EM-SBL in numpy/BLAS on a dense Phi (the peer): the same updates as sparsedsl's sbl()."""
    m, n = Phi.shape
    gamma, sigma2 = np.ones(n), 0.1 * float(np.var(y)) + 1e-12
    for it in range(1, max_iter + 1):  # noqa: B007
        W = np.linalg.inv((Phi * gamma) @ Phi.T + sigma2 * np.eye(m))
        mu = gamma * (Phi.T @ (W @ y))
        d = np.einsum("ij,ij->j", Phi, W @ Phi)
        new = mu ** 2 + gamma - gamma ** 2 * d
        r = y - Phi @ mu
        sigma2 = (r @ r + sigma2 * (gamma @ d)) / m
        done = np.max(np.abs(new - gamma)) <= tol * np.max(new)
        gamma = new
        if done:
            break
    return mu, it


def kron_case(quick) -> dict:
    m1, n1 = (8, 16) if quick else (32, 64)
    trials = 2 if quick else 20
    max_iter = 200
    am_nmse, svd_nmse, am_mono, am_t, svd_t, am_it, svd_it = [], [], True, [], [], [], []
    data = []
    for trial in range(trials):
        rng = np.random.default_rng(100 + trial)
        P1, P2 = rng.standard_normal((m1, n1)) / math.sqrt(m1), rng.standard_normal((m1, n1)) / math.sqrt(m1)
        X = np.zeros((n1, n1))
        X[np.ix_(rng.choice(n1, 4, replace=False), rng.choice(n1, 4, replace=False))] = rng.standard_normal((4, 4))
        clean = (P1 @ X @ P2.T).ravel()
        y = clean + rng.standard_normal(clean.size) * math.sqrt(np.mean(clean ** 2) / 100)  # 20 dB
        data.append((P1, P2, y, X.ravel()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            t0 = time.perf_counter()
            am = kron_sbl(sd.kron(P1, P2), y, method="am", max_iter=max_iter, tol=1e-5)
            t1 = time.perf_counter()
            sv = kron_sbl(sd.kron(P1, P2), y, method="svd", max_iter=max_iter, tol=1e-5)
            t2 = time.perf_counter()
        am_t.append(t1 - t0)
        svd_t.append(t2 - t1)
        am_it.append(am.n_iter)
        svd_it.append(sv.n_iter)
        am_nmse.append(_nmse_db(am.mean, X.ravel()))
        svd_nmse.append(_nmse_db(sv.mean, X.ravel()))
        am_mono &= bool(np.all(np.diff(am.history) <= 1e-9 * np.abs(am.history[:-1])))
    print(f"kron_sbl {m1}x{n1} (x) {m1}x{n1}, {trials} trials: AM NMSE {np.mean(am_nmse):.1f} dB "
          f"({fmt_time(np.median(am_t))}, {np.median(am_it):.0f} it), SVD NMSE {np.mean(svd_nmse):.1f} dB "
          f"({fmt_time(np.median(svd_t))}, {np.median(svd_it):.0f} it); SVD at least as accurate on average: "
          f"{np.mean(svd_nmse) <= np.mean(am_nmse)}; AM cost non-increasing: {am_mono}")
    # plain SBL on the materialised dictionary, on trial 0's data
    P1, P2, y, x = data[0]
    Phi = np.kron(P1, P2)
    t0 = time.perf_counter()
    mu, plain_it = numpy_sbl(Phi, y, max_iter if quick else 100, 1e-5)
    plain_s = time.perf_counter() - t0
    plain_nmse = _nmse_db(mu, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sbl(Phi, y, max_iter=1)  # compile
        t0 = time.perf_counter()
        sbl(Phi, y, max_iter=2)
        ours_per_it = (time.perf_counter() - t0) / 2
    kron_s = min(am_t[0], svd_t[0])
    row = {"factors": [m1, n1], "trials": trials, "am_nmse_db": am_nmse, "svd_nmse_db": svd_nmse,
           "am_mean_nmse_db": float(np.mean(am_nmse)), "svd_mean_nmse_db": float(np.mean(svd_nmse)),
           "svd_at_least_as_accurate": bool(np.mean(svd_nmse) <= np.mean(am_nmse)), "am_cost_nonincreasing": am_mono,
           "am_median_s": float(np.median(am_t)), "svd_median_s": float(np.median(svd_t)),
           "plain_numpy_sbl": {"nmse_db": plain_nmse, "seconds": plain_s, "iterations": plain_it},
           "plain_sparsedsl_sbl_seconds_per_iteration": ours_per_it,
           "kron_trial0": {"am_nmse_db": am_nmse[0], "svd_nmse_db": svd_nmse[0], "am_s": am_t[0], "svd_s": svd_t[0]},
           "kron_lower_nmse_than_plain": bool(max(am_nmse[0], svd_nmse[0]) < plain_nmse),
           "speedup_vs_plain_numpy": plain_s / kron_s,
           "speedup_vs_plain_sparsedsl_at_equal_iterations": ours_per_it * plain_it / kron_s}
    print(f"plain SBL on the materialised {m1 * m1}x{n1 * n1} Phi (trial 0): numpy/BLAS {fmt_time(plain_s)} "
          f"({plain_it} it), NMSE {plain_nmse:.1f} dB; sparsedsl sbl() {fmt_time(ours_per_it)} per iteration. "
          f"kron_sbl on the same data: AM {am_nmse[0]:.1f} dB, SVD {svd_nmse[0]:.1f} dB in {fmt_time(kron_s)}: "
          f"{row['speedup_vs_plain_numpy']:.0f}x faster than the numpy peer, "
          f"{row['speedup_vs_plain_sparsedsl_at_equal_iterations']:.0f}x than sbl() for as many iterations")
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--gpu-only", action="store_true", help="only the GPU fwht rows (on the lent GPU machine)")
    args = ap.parse_args(argv)
    reps = args.reps or (3 if args.quick else 9)
    t0 = time.perf_counter()
    payload = {"machine": machine_info({}), "when_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
               "quick": args.quick}
    fwht(np.ones((2, 1 << 12)))
    fwht(np.ones(1 << 12))  # compile outside the timings
    if not args.gpu_only:
        payload["fwht_cpu"] = fwht_cpu_case(reps, args.quick)
    gpu = fwht_gpu_case(reps, args.quick)
    if gpu:
        payload["fwht_gpu"] = gpu
    if not args.gpu_only:
        payload["spright"] = spright_case(args.quick)
        payload["sbl"] = sbl_case(args.quick)
        payload["turbo_vbi"] = turbo_case(args.quick)
        payload["kron_sbl"] = kron_case(args.quick)
    payload["wall_s"] = time.perf_counter() - t0
    name = "stdlib-sbl-wht" + (f"-gpu-{gpu['gpu'].lower().replace(' ', '-')}" if gpu and args.gpu_only else "")
    out = args.out or os.path.join(os.path.dirname(__file__), "results", name + ("-quick" if args.quick else "")
                                   + ".json")
    write_json(out, payload)
    print(f"wrote {out} ({payload['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()

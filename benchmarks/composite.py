"""`python -m benchmarks.composite [--quick] [--out PATH]`: composite operands against dense products.

Cases (issue 5's done-when lines):
- kron(B, C)·x, dense 256×256 factors (n = 65,536): the materialised matrix would take 34 GB, so the
  dense matvec is timed at n = 4,096 (64×64 factors) and extrapolated by its flop count (×(65536/4096)²);
  the result is checked against B X Cᵀ (the same product, no materialisation).
- (U Vᵀ + S)·X, rank 16, S 1% dense, 8192×8192, X 8192×64, against numpy's dense product.
- monarch(L, R)·x, n = 4,096 (64 blocks of 64×64), against a dense matvec.

On a shared machine parallel kernels (numba's and BLAS's) are at the mercy of other jobs; for a
stable algorithmic comparison run single-threaded as well:
``OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python -m benchmarks.composite --out
benchmarks/results/composite-cpu-1thread.json``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.sparse as sp

import sparsedsl as sd

from .timing import fmt_time, interleaved, machine_info, write_json


def _time(fns: dict, reps: int, record: dict | None = None) -> dict:
    """Median seconds per impl (interleaved repetitions); the minimum goes into ``record`` too, since on a
    shared 2-core machine an occasional descheduled call (or BLAS threads spinning after a numpy call)
    can move a median of a sub-millisecond kernel."""
    res = interleaved(fns, reps)
    errors = res.pop("_errors")
    if errors:
        raise RuntimeError(errors)
    if record is not None:
        record.update({f"{k}_min_s": v["min"] for k, v in res.items()})
    return {k: v["median"] for k, v in res.items()}


def kron_case(rng, reps, quick) -> dict:
    n1 = 64 if quick else 256
    ns = 32 if quick else 64  # the size at which the dense matrix is materialised
    kernel = sd.compile("y[i] = K[i,j] * x[j]")
    B, C, x = rng.standard_normal((n1, n1)), rng.standard_normal((n1, n1)), rng.standard_normal(n1 * n1)
    K = sd.kron(B, C)
    y = kernel(K=K, x=x)  # compiles
    ok = bool(np.allclose(y.reshape(n1, n1), B @ x.reshape(n1, n1) @ C.T))
    Bs, Cs, xs = rng.standard_normal((ns, ns)), rng.standard_normal((ns, ns)), rng.standard_normal(ns * ns)
    Ks, dense = sd.kron(Bs, Cs), np.kron(Bs, Cs)
    ok_small = bool(np.allclose(kernel(K=Ks, x=xs), dense @ xs))
    mins: dict = {}
    t = _time({"sparsedsl": lambda: kernel(K=K, x=x), "sparsedsl_small": lambda: kernel(K=Ks, x=xs),
               "numpy_dense_small": lambda: dense @ xs}, reps, mins)
    n, nsmall = n1 * n1, ns * ns
    dense_large = t["numpy_dense_small"] * (n / nsmall) ** 2
    return {
        "case": f"kron({n1}x{n1}, {n1}x{n1}) · x, n={n}",
        "sparsedsl_s": t["sparsedsl"], "dense_matvec_s_at_n_small": t["numpy_dense_small"], "n_small": nsmall,
        "dense_matvec_s_extrapolated": dense_large, "speedup_vs_dense_extrapolated": dense_large / t["sparsedsl"],
        "speedup_at_n_small": t["numpy_dense_small"] / t["sparsedsl_small"],
        "flop_ratio_at_n": (2.0 * n * n) / (2.0 * n * (n1 + n1)),
        "equal_to_BXCt": ok, "equal_to_materialised_at_n_small": ok_small,
        "explain": sd.explain(kernel, K=K, x=x).splitlines()[0], **mins,
    }


def lowrank_case(rng, reps, quick) -> dict:
    n, r, k, dens = (2048 if quick else 8192), 16, 64, 0.01
    U, V = rng.standard_normal((n, r)), rng.standard_normal((n, r))
    S = sp.random(n, n, density=dens, format="csr", random_state=1)
    A = sd.lowrank(U, V) + sd.asformat(S, "csr")
    X = rng.standard_normal((n, k))
    kernel = sd.compile("Y[i,n] = A[i,j] * X[j,n]")
    Y = kernel(A=A, X=X)
    dense = A.to_numpy()
    ok = bool(np.allclose(Y, dense @ X))
    mins: dict = {}
    t = _time({"sparsedsl": lambda: kernel(A=A, X=X), "numpy_dense": lambda: dense @ X,
               "scipy_factored": lambda: U @ (V.T @ X) + S @ X}, reps, mins)
    return {
        "case": f"(U V^T + S) · X, {n}x{n}, rank {r}, S {dens:.0%}, X {n}x{k}",
        "sparsedsl_s": t["sparsedsl"], "numpy_dense_s": t["numpy_dense"], "scipy_factored_s": t["scipy_factored"],
        "speedup_vs_dense": t["numpy_dense"] / t["sparsedsl"],
        "flop_ratio": (n * n * k) / (2 * n * r * k + S.nnz * k), "equal_to_dense": ok,
        "explain": [ln for ln in sd.explain(kernel, A=A, X=X).splitlines() if "contraction order" in ln], **mins,
    }


def monarch_case(rng, reps, quick) -> dict:
    m = 16 if quick else 64
    M = sd.monarch(rng.standard_normal((m, m, m)), rng.standard_normal((m, m, m)))
    x = rng.standard_normal(m * m)
    kernel = sd.compile("y[i] = M[i,j] * x[j]")
    y = kernel(M=M, x=x)
    dense = M.to_numpy()
    ok = bool(np.allclose(y, dense @ x))
    mins: dict = {}
    t = _time({"sparsedsl": lambda: kernel(M=M, x=x), "numpy_dense": lambda: dense @ x}, reps * 5, mins)
    return {**mins, "case": f"monarch({m} blocks of {m}x{m}) · x, n={m * m}", "sparsedsl_s": t["sparsedsl"],
            "numpy_dense_s": t["numpy_dense"], "speedup_vs_dense": t["numpy_dense"] / t["sparsedsl"],
            "flop_ratio": (m * m) / (2.0 * m), "equal_to_dense": ok,
            "speedup_vs_dense_by_min": mins["numpy_dense_min_s"] / mins["sparsedsl_min_s"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    reps = args.reps or (3 if args.quick else 9)
    rng = np.random.default_rng(0)
    cases = []
    for fn in (kron_case, lowrank_case, monarch_case):
        t0 = time.perf_counter()
        c = fn(rng, reps, args.quick)
        c["wall_s"] = time.perf_counter() - t0
        cases.append(c)
        ratio = c.get("speedup_vs_dense_extrapolated", c.get("speedup_vs_dense"))
        print(f"{c['case']}: sparsedsl {fmt_time(c['sparsedsl_s'])}, {ratio:.1f}x faster than dense "
              f"(flop ratio {c.get('flop_ratio_at_n', c.get('flop_ratio')):.0f}x); equal: "
              f"{c.get('equal_to_dense', c.get('equal_to_BXCt'))}")
    out = args.out or os.path.join(os.path.dirname(__file__), "results",
                                   "composite-cpu" + ("-quick" if args.quick else "") + ".json")
    import numba

    threads = {"numba": numba.get_num_threads(),
               **{v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    write_json(out, {"machine": machine_info({}), "threads": threads, "cases": cases,
                     "when_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                     "note": "run once per change at the end of a session, on a 2-core machine shared with other "
                             "jobs; times are medians of interleaved repetitions (minimums in *_min_s)"})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

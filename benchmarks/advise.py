"""``sd.advise`` on the shared real matrices (SpMV and SpMM), and ``sd.bench``'s roofline figure for
banded CSR SpMV beside the benchmark suite's.

    python -m benchmarks.advise                 # writes benchmarks/results/advise-<cpu>-<cores>c.json
    python -m benchmarks.advise --quick         # fewer samples, a smaller banded matrix
    python -m benchmarks.advise --refresh-copy  # measure the copy bandwidth again (do it on a quiet machine)
    python -m benchmarks.advise --gpu           # the same on the CUDA backend (advise-gpu-<name>.json)

For each matrix and kernel it prints the advice table and checks the recommendation is within 10% of
the fastest candidate measured. The roofline part runs sd.bench on the suite's banded matrix (2,000,000
rows, 16 diagonals) and prints its fraction of copy bandwidth beside the figure in the suite's last
JSON (``benchmarks/results/cpu-amd-epyc-2c.json``, ``sparsedsl_bw_over_copy``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

import sparsedsl as sd
from sparsedsl import roofline

from .cases import banded
from .timing import machine_info, result_tag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
KERNELS = {"spmv": "y[i] = A[i,j] * x[j]", "spmm16": "Y[i,n] = A[i,j] * X[j,n]"}
SUITE_JSON = os.path.join(ROOT, "benchmarks", "results", "cpu-amd-epyc-2c.json")


def matrices() -> dict:
    """The shared real matrices (../shared/data), else the copy of 1138_bus shipped in the package."""
    paths = {}
    for name in ("1138_bus.mtx", "ani4.mtx"):
        for folder in (SHARED, os.path.join(ROOT, "sparsedsl", "data")):
            if os.path.exists(os.path.join(folder, name)):
                paths[name] = os.path.join(folder, name)
                break
    return paths


def advise_all(repeat: int, min_time: float, backend: str = "cpu") -> list[dict]:
    rows = []
    for name, path in matrices().items():
        A = sd.io.mmread(path)
        for kname, expr in KERNELS.items():
            other = np.ones(A.shape[1]) if kname == "spmv" else np.ones((A.shape[1], 16))
            adv = sd.advise(expr, A, other, repeat=repeat, min_time=min_time, backend=backend)
            print(f"\n{name}, {kname}:\n{adv!r}", flush=True)
            fastest = adv.measured[0]
            pick = next(c for c in adv.measured if c.format == adv.recommended)
            within = pick.median / fastest.median - 1
            print(f"check: {adv.recommended} is {within:.1%} slower than the fastest ({fastest.format}): "
                  f"{'within' if within <= 0.10 else 'NOT within'} 10%", flush=True)
            rows.append({"matrix": name, "kernel": kname, "expr": expr, "advice": adv.to_dict(),
                         "recommended_over_fastest": pick.median / fastest.median})
    return rows


def roofline_banded(n: int, repeat: int, backend: str = "cpu") -> dict:
    a = banded(n)
    x = np.random.default_rng(1).random(n)
    r = sd.bench(KERNELS["spmv"], A=sd.asformat(a, "csr"), x=x, repeat=repeat, backend=backend)
    print(f"\nbanded CSR SpMV, {n:,} rows, 16 per row:\n{r!r}", flush=True)
    row = {"n": n, "bench": r.to_dict(), "copy_fraction": r.copy_fraction}
    if backend == "cuda":
        return row  # the suite's CPU figure is no yardstick for the GPU
    try:
        with open(SUITE_JSON) as f:
            case = json.load(f)["cases"]["spmv_banded"]
        row["suite"] = {"json": os.path.relpath(SUITE_JSON, ROOT), "sparsedsl_bw_over_copy":
                        case.get("sparsedsl_bw_over_copy"), "bytes_moved": case.get("bytes_moved"),
                        "copy_bandwidth_gbs": case.get("copy_bandwidth_gbs")}
        print(f"the suite's last run: {case.get('sparsedsl_bw_over_copy'):.2f} of copy "
              f"({case.get('bytes_moved'):,} bytes, copy {case.get('copy_bandwidth_gbs'):.1f} GB/s); "
              f"sd.bench now: {r.copy_fraction:.2f} of copy ({r.bytes_moved:,} bytes, copy {r.copy_gbs:.1f} GB/s)")
    except (OSError, KeyError, ValueError, TypeError):
        pass
    return row


def _gpu_name() -> str:
    import cupy

    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.advise", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer samples, a 200,000-row banded matrix")
    ap.add_argument("--refresh-copy", action="store_true", help="measure the machine's copy bandwidth again")
    ap.add_argument("--gpu", action="store_true", help="on the CUDA backend (yardstick: a device copy)")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/advise-<machine>[-quick].json)")
    args = ap.parse_args(argv)
    backend = "cuda" if args.gpu else "cpu"
    copy = roofline.copy_bandwidth(backend, refresh=args.refresh_copy)
    print(f"copy bandwidth: {copy:.1f} GB/s (read + write, cached in {roofline._cache_path()})", flush=True)
    result = {"machine": machine_info({}), "backend": backend, "copy_gbs": copy,
              "advise": advise_all(7 if args.quick else 25, 0.2 if args.quick else 1.0, backend),
              "roofline_banded_spmv": roofline_banded(200_000 if args.quick else 2_000_000, 5 if args.quick else 15,
                                                      backend)}
    tag = "gpu-" + _gpu_name() if args.gpu else result_tag(result["machine"])
    name = f"advise-{tag}{'-quick' if args.quick else ''}.json"
    out = args.out or os.path.join(ROOT, "benchmarks", "results", name)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nwrote {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

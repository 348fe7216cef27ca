"""The differential fuzz at full size: random programs drawn from the grammar (``sparsedsl.testing.programs``),
each compiled and run on random operands and compared with the reference interpreter.

    python -m benchmarks.fuzz --cases 10000 --jobs 2

Prints and writes (``benchmarks/results/fuzz.json``; each job checkpoints to ``fuzz.json.jobN``)
how many cases agreed, how many programs the language refused with a DSLError/FormatError, how many
distinct programs were drawn, and every disagreement or crash with its program, formats and operand
dtypes. Exits non-zero on any. With ``--engine python`` a ZeroDivisionError is counted apart
(``python_engine_zero_division``): Python's ``/`` raises where the compiled code gives inf or nan.

Exact comparisons (``==``, ``!=``, ``<``) of float32 values computed by a sum can disagree in rare
cases: the compiled code accumulates a float32 sum in float64 and rounds once, numpy sums pairwise in
float32, so the two roundings may differ in the last bit and flip the comparison (seen once in
20,000 cases; the values themselves are compared with a float32 tolerance).
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path


def _job(args) -> dict:
    cases, seed, checkpoint, deadline, backend = args
    warnings.simplefilter("ignore")
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed

    from sparsedsl.testing import check_program, programs

    stats, programs_seen, failures = collections.Counter(), set(), []

    def save():  # every 100 cases, so a run stopped early still says what it checked
        Path(checkpoint).write_text(json.dumps({"stats": dict(stats), "programs": len(programs_seen),
                                                "failures": failures}))

    @fixed_seed(seed)
    @settings(max_examples=cases, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(programs())
    def run(case):
        source, formats, values, out_format = case
        programs_seen.add((source, tuple(sorted(formats.items())), out_format))
        if time.time() > deadline:
            return  # out of time: the rest are drawn but not run (and not counted)
        if sum(stats.values()) % 100 == 0:
            save()
        try:
            stats[check_program(*case, backend=backend)] += 1
        except AssertionError as exc:
            stats["disagree"] += 1
            failures.append(_describe(case, "disagree", exc))
        except Exception as exc:  # noqa: BLE001 - a crash is what the fuzz looks for
            if isinstance(exc, ZeroDivisionError) and os.environ.get("NUMBA_DISABLE_JIT") == "1":
                # Python's / raises where the compiled code (error_model="numpy") gives inf or nan, as
                # the interpreter does: a property of the Python engine, counted apart
                stats["python_engine_zero_division"] += 1
                return
            stats["crash"] += 1
            failures.append(_describe(case, f"crash: {type(exc).__name__}", exc))

    run()
    save()
    return {"stats": dict(stats), "programs": len(programs_seen), "failures": failures}


def _describe(case, what, exc) -> dict:
    source, formats, values, out_format = case
    dtypes = {n: str(getattr(v, "dtype", type(v).__name__)) for n, v in values.items()}
    return {"what": what, "source": source, "formats": formats, "out_format": out_format, "dtypes": dtypes,
            "message": str(exc).strip().splitlines()[-1][:400] if str(exc).strip() else ""}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON file (default benchmarks/results/fuzz-<commit>.json)")
    ap.add_argument("--opt", type=int, default=None,
                    help="numba optimisation level for the fuzz's kernels (NUMBA_OPT; 0 compiles ~2x faster), "
                         "with a kernel cache of their own so no benchmark loads them")
    ap.add_argument("--minutes", type=float, default=None, help="stop running cases after this long")
    ap.add_argument("--backend", choices=("cpu", "cuda"), default="cpu",
                    help="cuda: each program runs on the GPU (CUDA C through NVRTC) against the interpreter")
    ap.add_argument("--engine", choices=("numba", "python"), default="numba",
                    help="python: the generated kernels run as Python (NUMBA_DISABLE_JIT=1): every stage of "
                         "the pipeline but numba's own compilation, ~100x more programs an hour")
    args = ap.parse_args(argv)
    if args.engine == "python":
        os.environ["NUMBA_DISABLE_JIT"] = "1"
        os.environ["SPARSEDSL_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), "sparsedsl-fuzz-python")
    if args.opt is not None:  # read by the spawned jobs when they import numba
        os.environ["NUMBA_OPT"] = str(args.opt)
        os.environ["SPARSEDSL_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"sparsedsl-fuzz-opt{args.opt}")
    out = Path(args.out or Path(__file__).parent / "results" / "fuzz.json")
    deadline = time.time() + 60 * args.minutes if args.minutes else float("inf")
    per = [(args.cases // args.jobs + (k < args.cases % args.jobs), args.seed + k, f"{out}.job{k}", deadline,
            args.backend) for k in range(args.jobs)]
    start = time.time()
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        parts = pool.map(_job, per)
    stats = collections.Counter()
    for p in parts:
        stats.update(p["stats"])
    failures = [f for p in parts for f in p["failures"]]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"commit": commit, "cases": sum(stats.values()), "stats": dict(stats), "engine": args.engine,
              "backend": args.backend, "numba_opt": args.opt,
              "distinct_programs_per_job": [p["programs"] for p in parts], "seconds": round(time.time() - start),
              "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}",
              "failures": failures}
    out.write_text(json.dumps(result, indent=1))
    print(f"{result['cases']} cases in {result['seconds']} s: {dict(stats)}; distinct programs per job "
          f"{result['distinct_programs_per_job']}; written to {out}")
    for f in failures[:50]:
        print(f"{f['what']}: {f['source']!r} {f['formats']} -> {f['out_format']} {f['dtypes']}: {f['message']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

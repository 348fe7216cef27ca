"""`python -m benchmarks [--quick] [--cases a,b] [--reps N] [--out PATH]`."""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import numpy as np
import scipy.sparse as sp

from . import probes
from .cases import kernel_cases
from .peers import PEERS, storage_bytes
from .timing import err, fmt_time, interleaved, machine_info, print_case, result_tag, write_json

SPECIAL = ["compile_time", "peak_memory", "compute_overhead"]


def correct(result, expected) -> bool:
    """Dense: allclose. Sparse: same pattern (explicit zeros ignored) and allclose values."""
    if isinstance(expected, np.ndarray):
        r = np.asarray(result)
        return r.shape == expected.shape and bool(np.allclose(r, expected))
    r, e = sp.csr_array(result), sp.csr_array(expected)
    if r.shape != e.shape:
        return False
    for m in (r, e):
        m.sum_duplicates()
        m.eliminate_zeros()
    return (
        np.array_equal(r.indptr, e.indptr)
        and np.array_equal(r.indices, e.indices)
        and bool(np.allclose(r.data, e.data))
    )


def load_peers() -> tuple[dict, dict, dict]:
    loaded, load_err, versions = {}, {}, {}
    for p in PEERS:
        try:
            p.load()
            loaded[p.name] = p
            versions[p.name] = p.version()
        except Exception as e:  # noqa: BLE001
            load_err[p.name] = err(e)
            versions[p.name] = None
    return loaded, load_err, versions


def run_kernel_case(name, case, loaded, load_err, reps, slow_s) -> dict:
    op, data, expected = case["op"], case["data"], case["expected"]
    names = case.get("peers") or [p.name for p in PEERS]
    rec = {"name": name, "desc": case["desc"], "op": op, "impls": {}, "ratios": {}, "extra_lines": []}
    fns = {}
    for n in names:
        r = rec["impls"][n] = {}
        if n in load_err:
            r["error"] = f"unavailable: {load_err[n]}"
            continue
        try:
            run, to_result, r["note"] = loaded[n].prepare(op, **data)
            t0 = time.perf_counter()
            out = run()
            first = time.perf_counter() - t0
            r["correct"] = correct(to_result(out), expected)
            if first > slow_s and n != "sparsedsl":  # too slow to repeat: report the first call alone
                r.update(
                    times=[first],
                    median=first,
                    min=first,
                    note=f"{r['note']} first call only (slow; includes any JIT)".strip(),
                )
            else:
                fns[n] = run
        except NotImplementedError as e:
            r["error"] = f"unsupported: {e}" if str(e) else "unsupported"
        except Exception as e:  # noqa: BLE001
            r["error"] = err(e)
    t = interleaved(fns, reps, batch=case.get("batch", 1), slow_s=slow_s)
    for n, e in t.pop("_errors").items():
        rec["impls"][n]["error"] = f"during timing: {e}"
    for n, tm in t.items():
        rec["impls"][n].update(tm)
    sd_med = rec["impls"].get("sparsedsl", {}).get("median")
    for n, r in rec["impls"].items():
        if n != "sparsedsl" and sd_med and r.get("median"):
            rec["ratios"][n] = r["median"] / sd_med
    return rec


def spmv_bandwidth(rec, case, copy_bw) -> None:
    A, x = case["data"]["A"], case["data"]["x"]
    moved = A.data.nbytes + A.indices.nbytes + A.indptr.nbytes + 2 * x.nbytes
    rec["bytes_moved"], rec["copy_bandwidth_gbs"], rec["bandwidth_gbs"] = moved, copy_bw, {}
    rec["extra_lines"].append(
        f"numpy copy bandwidth: {copy_bw:.1f} GB/s (read+write); SpMV bytes moved {moved / 1e6:.0f} MB"
    )
    for n, r in rec["impls"].items():
        if r.get("median"):
            bw = rec["bandwidth_gbs"][n] = moved / r["median"] / 1e9
            rec["extra_lines"].append(f"  {n:<14} {bw:6.1f} GB/s = {bw / copy_bw:.2f} of copy")
    if "sparsedsl" in rec["bandwidth_gbs"]:
        rec["sparsedsl_bw_over_copy"] = rec["bandwidth_gbs"]["sparsedsl"] / copy_bw


def storage_report(rec, case, loaded) -> None:
    A, fmt = case["data"]["A"], case["data"]["fmt"]
    rec["csr_bytes"] = case["csr_bytes"]
    line = f"storage: CSR {case['csr_bytes'] / 1e6:.1f} MB"
    try:
        b = rec["sparsedsl_bytes"] = storage_bytes(loaded["sparsedsl"].sd.asformat(A, fmt))
        line += f", sparsedsl {fmt} {b / 1e6:.1f} MB ({b / case['csr_bytes']:.2f} of CSR)"
    except Exception as e:  # noqa: BLE001
        rec["sparsedsl_bytes_error"] = err(e)
        line += f", sparsedsl {fmt}: n/a ({err(e)})"
    rec["extra_lines"].append(line)


def run_compile_time() -> dict:
    res = probes.compile_time()
    rec = {
        "name": "compile_time",
        "desc": "sparsedsl compile + first call, fresh process, cold vs warm disk cache",
        "result": res,
        "extra_lines": [],
    }
    for k, v in res.items():
        rec["extra_lines"].append(
            f"{k:<11} "
            + (
                f"n/a ({v['error']})"
                if "error" in v
                else "  ".join(
                    f"{a}={fmt_time(v[a])}" for a in ("import_s", "compile_s", "first_call_s", "total_s")
                )
            )
        )
    return rec


def run_compute_overhead(quick) -> dict:
    """sd.compute's per-call cost on a 100x100 CSR SpMV against the same compiled kernel's call
    (issue: within 3x; it caches its kernel by expression, its plans by the operands)."""
    import timeit

    import numpy as np
    import scipy.sparse as sp

    import sparsedsl as sd

    A = sd.asformat(sp.random(100, 100, density=0.05, format="csr", random_state=0), "csr")
    x = np.ones(100)
    kernel = sd.compile("y[i] = A[i,j] * x[j]", A="csr")
    kernel(A=A, x=x), sd.compute("y[i] = A[i,j] * x[j]", A=A, x=x)
    n = 200 if quick else 5000
    times = {"kernel_call": lambda: kernel(A=A, x=x), "compute": lambda: sd.compute("y[i] = A[i,j] * x[j]", A=A, x=x)}
    res = {k: min(timeit.repeat(f, number=n, repeat=7)) / n for k, f in times.items()}
    res["ratio"] = res["compute"] / res["kernel_call"]
    return {"name": "compute_overhead", "desc": "sd.compute vs compiled kernel call, 100x100 CSR SpMV",
            "result": res, "extra_lines": [f"compute {res['compute'] * 1e6:.2f} us, kernel call "
                                           f"{res['kernel_call'] * 1e6:.2f} us: {res['ratio']:.2f}x"]}


def run_peak_memory(impls, quick) -> dict:
    res = probes.peak_memory(impls, quick)
    rec = {
        "name": "peak_memory",
        "desc": "RSS in a fresh process: operands, and call peak beyond output",
        "result": res,
        "extra_lines": [],
    }
    for k, v in res.items():
        rec["extra_lines"].append(
            f"{k:<22} n={v['n']:<9,} "
            + (
                f"n/a ({v['error']})"
                if "error" in v
                else f"operands {v['operands_bytes'] / 1e6:8.1f} MB  output {v['output_bytes'] / 1e6:7.1f} "
                f"MB  call peak {v['peak_call_bytes'] / 1e6:8.1f} MB  extra "
                f"{v['extra_bytes'] / 1e6:8.1f} MB"
            )
        )
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 2 reps (CI smoke run)")
    ap.add_argument("--cases", help="comma-separated case names")
    ap.add_argument("--reps", type=int, help="timing repetitions (default 2 quick, 7 full)")
    ap.add_argument("--out", help="JSON path (default benchmarks/results/cpu-<tag>[-quick].json)")
    args = ap.parse_args(argv)
    reps = args.reps or (2 if args.quick else 7)
    builders = kernel_cases(args.quick)
    all_names = list(builders) + SPECIAL
    names = args.cases.split(",") if args.cases else all_names
    unknown = [n for n in names if n not in all_names]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {all_names}")

    t_start = time.perf_counter()
    loaded, load_err, versions = load_peers()
    info = machine_info(versions)
    print(
        f"{info['cpu']}, {info['cores']} cores; python {info['python']}, numpy {info['numpy']}, "
        f"scipy {info['scipy']}, numba {info['numba']}; mode={'quick' if args.quick else 'full'}, reps={reps}"
    )
    print(
        "peers: "
        + ", ".join(f"{n} {versions[n]}" if n in loaded else f"{n} n/a ({load_err[n]})" for n in versions)
    )
    out = args.out or os.path.join(
        os.path.dirname(__file__), "results", result_tag(info) + ("-quick" if args.quick else "") + ".json"
    )
    copy_bw = None
    results = {}

    def save():  # after every case, so an interrupted run keeps what it measured
        write_json(
            out,
            {
                "machine": info,
                "mode": "quick" if args.quick else "full",
                "reps": reps,
                "peer_errors": load_err,
                "elapsed_s": time.perf_counter() - t_start,
                "cases": results,
            },
        )

    for name in names:
        if name == "compile_time":
            rec = run_compile_time()
        elif name == "compute_overhead":
            rec = run_compute_overhead(args.quick)
        elif name == "peak_memory":
            impls = ["sparsedsl"] + (
                ["scipy"] if args.quick else [n for n in loaded if n not in ("sparsedsl", "finch")]
            )
            rec = run_peak_memory(impls, args.quick)
        else:
            try:
                case = builders[name]()
            except Exception as e:  # noqa: BLE001
                rec = {"name": name, "error": f"building operands: {err(e)}"}
                print_case(rec)
                results[name] = rec
                save()
                continue
            rec = run_kernel_case(name, case, loaded, load_err, reps, 5.0 if args.quick else 10.0)
            if name in ("spmv_banded", "spmv_random"):
                copy_bw = copy_bw or probes.copy_bandwidth(2**26 if args.quick else 2**30)
                spmv_bandwidth(rec, case, copy_bw)
            if "fmt" in case["data"]:
                storage_report(rec, case, loaded)
            del case
            gc.collect()
        print_case(rec)
        sys.stdout.flush()
        results[name] = rec
        save()

    print(f"\nwrote {out} ({time.perf_counter() - t_start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

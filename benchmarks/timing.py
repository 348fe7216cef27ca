"""Interleaved timing, machine info, table printing and JSON output."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from importlib import metadata


def err(e: BaseException) -> str:
    """One-line error string."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0][:300] if msg else ''}"


def interleaved(fns: dict, reps: int, batch: int = 1, slow_s: float = 30.0) -> dict:
    """Round-robin timing: for each rep, call every fn once (or `batch` times; per-call seconds recorded).

    An impl whose single call exceeds `slow_s` stops being timed after that call.
    """
    times = {name: [] for name in fns}
    errors = {}
    for _ in range(reps):
        for name, fn in fns.items():
            if name in errors or (times[name] and times[name][-1] > slow_s):
                continue
            try:
                t0 = time.perf_counter()
                for _ in range(batch):
                    fn()
                times[name].append((time.perf_counter() - t0) / batch)
            except Exception as e:  # noqa: BLE001 - a failing impl is recorded, not fatal
                errors[name] = err(e)
    return {
        name: {"times": t, "median": statistics.median(t) if t else None, "min": min(t) if t else None}
        for name, t in times.items()
    } | {"_errors": errors}


def machine_info(peer_versions: dict) -> dict:
    cpu = "unknown"
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", open("/proc/cpuinfo").read(), re.M)
        cpu = m.group(1).strip() if m else platform.processor()
    except OSError:
        cpu = platform.processor()
    vers = {}
    for pkg in ("numpy", "scipy", "numba"):
        try:
            vers[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            vers[pkg] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **vers,
        "peers": peer_versions,
        "env": {k: os.environ.get(k) for k in ("OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")},
    }


def result_tag(info: dict) -> str:
    """Hostname-free file tag from the CPU model and core count."""
    slug = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-")
    return f"cpu-{slug}-{info['cores']}c"


def fmt_time(s) -> str:
    if s is None:
        return "-"
    for unit, f in (("s", 1), ("ms", 1e3), ("us", 1e6)):
        if s * f >= 1:
            return f"{s * f:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def print_case(case: dict) -> None:
    """Print one case's table: impl, median, min, ratio (peer/sparsedsl), correct, note."""
    print(f"\n== {case['name']}: {case.get('desc', '')}")
    if case.get("error"):
        print(f"   case error: {case['error']}")
    rows = case.get("impls", {})
    if rows:
        print(f"   {'impl':<16}{'median':>11}{'min':>11}{'ratio':>9}  {'correct':<8}note")
    for name, r in rows.items():
        ratio = case.get("ratios", {}).get(name)
        ok = {True: "yes", False: "WRONG", None: "-"}[r.get("correct")]
        note = f"n/a ({r['error']})" if r.get("error") else r.get("note", "")
        rs = f"{ratio:.2f}x" if ratio else "-"
        print(
            f"   {name:<16}{fmt_time(r.get('median')):>11}{fmt_time(r.get('min')):>11}{rs:>9}  {ok:<8}{note}"
        )
    for line in case.get("extra_lines", []):
        print(f"   {line}")


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)


def cuda_event_median(f, n: int = 20, warmup: int = 3) -> float:
    """Median seconds of ``f`` over ``n`` calls, each timed between two CUDA events and synchronised,
    after ``warmup`` calls (torch's events: the GPU benchmarks' timer)."""
    import torch

    for _ in range(warmup):
        f()
    torch.cuda.synchronize()
    st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(n):
        st.record()
        f()
        en.record()
        en.synchronize()
        ts.append(st.elapsed_time(en) * 1e-3)
    return float(statistics.median(ts))

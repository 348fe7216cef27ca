"""Machine copy bandwidth, and subprocess probes: sparsedsl compile time and peak memory of SpMV/SpMM."""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from .timing import err

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def copy_bandwidth(nbytes: int, reps: int = 3) -> float:
    """Best-of-reps np.copyto bandwidth in GB/s, counting read + write."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def _child(code: str, env: dict | None = None, timeout: float = 300) -> dict:
    """Run python code in a fresh process; its last stdout line is JSON."""
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if p.returncode != 0:
        lines = (p.stderr or p.stdout).strip().splitlines()
        return {"error": lines[-1][:300] if lines else f"exit code {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


COMPILE_CODE = """
import json, time
t0 = time.perf_counter()
import numpy as np, scipy.sparse as sp
import sparsedsl as sd
t1 = time.perf_counter()
k = sd.compile("y[i] = A[i,j] * x[j]", A="csr", x="dense")
t2 = time.perf_counter()
A = sd.asformat(sp.random_array((50, 50), density=0.1, format="csr", rng=0), "csr")
y = k(A=A, x=np.ones(50))
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "compile_s": t2 - t1, "first_call_s": t3 - t2, "total_s": t3 - t1}))
"""


def compile_time() -> dict:
    """Cold (empty SPARSEDSL_CACHE_DIR) and warm-disk-cache compile + first call, each in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="sparsedsl-cache-") as d:
        env = {"SPARSEDSL_CACHE_DIR": d}
        return {"cold": _child(COMPILE_CODE, env), "warm_cache": _child(COMPILE_CODE, env)}


def _vm(key: str) -> int:
    """VmRSS / VmHWM of this process in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _mem_operands(op: str, n: int) -> tuple[dict, int]:
    from .cases import dense, random_csr, vec

    A = random_csr(n, n, 16)
    if op == "spmv":
        return {"A": A, "x": vec(n)}, n * 8
    return {"A": A, "X": dense(n, 64)}, n * 64 * 8


def memory_child(impl: str, op: str, n: int) -> None:
    """In a fresh process: RSS before/after operands, and peak during one call (printed as JSON)."""
    from .peers import PEERS

    peer = next(p for p in PEERS if p.name == impl)
    peer.load()
    tiny, _ = _mem_operands(op, 64)
    peer.prepare(op, **tiny)[0]()  # JIT compile / lazy init outside the measurement
    del tiny
    gc.collect()
    rss0 = _vm("VmRSS")
    data, out_bytes = _mem_operands(op, n)
    run = peer.prepare(op, **data)[0]
    gc.collect()
    rss1 = _vm("VmRSS")
    exact = _reset_hwm()
    out = run()
    peak = _vm("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del out
    print(
        json.dumps(
            {
                "operands_bytes": rss1 - rss0,
                "output_bytes": out_bytes,
                "peak_call_bytes": peak - rss1,
                "extra_bytes": peak - rss1 - out_bytes,
                "hwm_reset": exact,
            }
        )
    )


def peak_memory(impls: list[str], quick: bool) -> dict:
    sizes = {"spmv": 20_000 if quick else 1_000_000, "spmm": 5_000 if quick else 100_000}
    res = {}
    for op, n in sizes.items():
        for impl in impls:
            code = f"from benchmarks.probes import memory_child; memory_child({impl!r}, {op!r}, {n})"
            try:
                res[f"{op}/{impl}"] = {"n": n, **_child(code)}
            except Exception as e:  # noqa: BLE001
                res[f"{op}/{impl}"] = {"n": n, "error": err(e)}
    return res

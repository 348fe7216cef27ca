"""The disk cache of compiled CPU kernels, exercised in fresh processes (issue #4).

Each child process compiles three kernels (a serial SpMV, the parallel build of the same SpMV,
and a SpGEMM with an assembled sparse output), checks them against scipy, and reports how many
of numba's cache lookups hit and missed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = """
import json
import numpy as np, scipy.sparse as sp
import sparsedsl as sd
from sparsedsl.backends.cpu import compile as cpu_compile

spmv = sd.compile("y[i] = A[i,j] * x[j]", A="csr", x="dense")
spgemm = sd.compile("C[i,j] = A[i,k] * B[k,j]", A="csr", B="csr", out_format="csr")
errors = []
for n, density in ((60, 0.1), (1500, 0.1)):  # the second is large enough for the parallel build
    a = sp.random_array((n, n), density=density, format="csr", rng=n)
    x = np.random.default_rng(n).standard_normal(n)
    errors.append(float(np.abs(spmv(A=sd.asformat(a, "csr"), x=x) - a @ x).max()))
a = sp.random_array((80, 80), density=0.05, format="csr", rng=1)
c = spgemm(A=sd.asformat(a, "csr"), B=sd.asformat(a, "csr")).to_numpy()
errors.append(float(np.abs(c - (a @ a).toarray()).max()))
stats = [d.stats for d in cpu_compile._loaded.values()]
print(json.dumps({"error": max(errors), "kernels": len(stats),
                  "hits": sum(sum(s.cache_hits.values()) for s in stats),
                  "misses": sum(sum(s.cache_misses.values()) for s in stats)}))
"""


def _env(cache: Path) -> dict:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "SPARSEDSL_CACHE_DIR": str(cache),
            "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def _child(cache: Path) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=_env(cache), timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _cold_then_warm(cache: Path) -> tuple[dict, dict]:
    cold, warm = _child(cache), _child(cache)
    for run in (cold, warm):
        assert run["error"] < 1e-9
        assert run["kernels"] == 3
    return cold, warm


def test_a_fresh_process_loads_every_kernel_from_the_cache(tmp_path):
    cold, warm = _cold_then_warm(tmp_path)
    assert cold["misses"] == 3 and cold["hits"] == 0
    assert warm["hits"] == 3 and warm["misses"] == 0


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])


def _flip_bytes(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    for i in range(40, len(blob), 61):
        blob[i] ^= 0x5A
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("damage, pattern", [
    (_truncate, "*.nbc"),     # machine code cut short, as by a crashed writer
    (_flip_bytes, "*.nbc"),   # machine code that still unpickles would be worst: the checksum stops it
    (_truncate, "*.nbi"),     # the index
    (_flip_bytes, "*.nbi"),
])
def test_a_damaged_entry_is_recompiled_not_loaded(tmp_path, damage, pattern):
    _cold_then_warm(tmp_path)
    files = sorted(tmp_path.rglob(pattern))
    assert files, f"no {pattern} in the cache"
    for f in files:
        damage(f)
    recompiled = _child(tmp_path)
    assert recompiled["error"] < 1e-9
    assert recompiled["misses"] == 3
    rewritten = _child(tmp_path)
    assert rewritten["hits"] == 3 and rewritten["misses"] == 0


def test_a_damaged_kernel_module_is_rewritten(tmp_path):
    # the module's name is the hash of its source, so the machine code cached beside it still
    # belongs to it once the text is restored
    _cold_then_warm(tmp_path)
    modules = sorted(tmp_path.glob("k_*.py"))
    texts = [m.read_text() for m in modules]
    for m in modules:
        _truncate(m)
    again = _child(tmp_path)
    assert again["error"] < 1e-9 and again["hits"] + again["misses"] == 3
    assert [m.read_text() for m in modules] == texts


def test_two_processes_compiling_the_same_kernels_at_once(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env(tmp_path)) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        assert json.loads(out.strip().splitlines()[-1])["error"] < 1e-9
    after = _child(tmp_path)
    assert after["hits"] == 3 and after["misses"] == 0 and after["error"] < 1e-9

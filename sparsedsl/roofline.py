"""``sd.bench``: how long a kernel takes, how many bytes it must move, and how close that comes to
this machine's memory bandwidth (a numpy copy, measured once per machine and cached on disk).

A sparse kernel such as SpMV does about one multiply-add per stored entry and reads every stored
entry once, so it is bound by memory, not arithmetic: the honest yardstick is the bandwidth of a
plain copy, not the peak FLOP rate. ``bench`` counts the bytes a kernel cannot avoid moving (every
array of every operand in the format it runs in, plus the output) and divides by the median time.
"""

from __future__ import annotations

import gc
import html
import json
import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

COPY_BYTES = 2**29  # per array (512 MiB): far past any last-level cache, so the copy runs at DRAM speed
CACHE_FILE = "machine.json"


# ---- the machine's copy bandwidth ---------------------------------------------------------------

def _cache_path() -> Path:
    # the kernel cache's directory (sparsedsl/backends/cache.py): $SPARSEDSL_CACHE_DIR or ~/.cache/sparsedsl
    root = os.environ.get("SPARSEDSL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sparsedsl")
    return Path(root) / CACHE_FILE


def _machine_key(device: str) -> str:
    """What the copy bandwidth belongs to: host, CPU model, cores (or the GPU's name)."""
    if device != "cpu":
        return device
    model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"cpu|{platform.node()}|{model}|{os.cpu_count()}"


def measure_copy_bandwidth(nbytes: int = COPY_BYTES, reps: int = 5) -> float:
    """Best-of-``reps`` ``np.copyto`` of an ``nbytes`` float64 array, in GB/s counting the bytes read
    and written (the benchmark suite's figure, ``benchmarks/probes.py``)."""
    src = np.ones(max(1, nbytes // 8))
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault both arrays in before timing
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2 * src.nbytes / best / 1e9


def _measure_device_bandwidth(nbytes: int = COPY_BYTES, reps: int = 5) -> float:
    import cupy

    src = cupy.ones(nbytes // 8)
    dst = cupy.empty_like(src)
    dst[...] = src
    cupy.cuda.Device().synchronize()
    best = math.inf
    for _ in range(reps):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        dst[...] = src
        stop.record()
        stop.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return 2 * src.nbytes / best / 1e9


def copy_bandwidth(device: str = "cpu", *, refresh: bool = False) -> float:
    """This machine's copy bandwidth in GB/s (read + write), measured at the first call on a machine
    and then read from ``machine.json`` in the kernel cache directory. ``refresh=True`` measures again
    (do it on a quiet machine: a busy one gives a low figure, and every fraction of copy then looks high)."""
    key = f"{_machine_key('cpu')}|cuda" if device == "cuda" else _machine_key("cpu")
    path = _cache_path()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    entry = known.get(key) if isinstance(known, dict) else None
    if entry and not refresh and isinstance(entry.get("gbs"), int | float):
        return float(entry["gbs"])
    gbs = _measure_device_bandwidth() if device == "cuda" else measure_copy_bandwidth()
    known = known if isinstance(known, dict) else {}
    known[key] = {"gbs": gbs, "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "bytes_per_array": COPY_BYTES}
    try:  # atomically, as the kernel cache writes: a temp file, then os.replace
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".machine-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(known, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        pass  # an unwritable cache costs a measurement per process, not the result
    return gbs


# ---- what a kernel moves and computes ------------------------------------------------------------

def nbytes_of(value) -> int:
    """Bytes of an operand or result: every level array and the values of a SparseTensor, an
    array's buffer, the sum over a tuple; 0 for a Python number."""
    if isinstance(value, tuple | list):
        return sum(nbytes_of(v) for v in value)
    n = getattr(value, "nbytes", None)
    return int(n) if isinstance(n, int | np.integer) else 0


def product_flops(kernel, bound: dict) -> int | None:
    """2·nnz·(extent of the indices the sparse operand does not index) for a kernel of one statement
    that is a sum of products of one sparse operand and dense ones (SpMV: 2·nnz; SpMM with k columns:
    2·nnz·k; SDDMM of rank r: 2·nnz·r). None for anything else (a max, a function, two sparse operands):
    there the count would be a guess."""
    program = kernel.program
    if len(program.statements) != 1:
        return None
    value = program.statements[0].value
    if type(value).__name__ == "Reduce":
        if value.op not in ("sum", "plus_times"):
            return None
        value = value.body
    accesses = []

    def collect(node) -> bool:
        kind = type(node).__name__
        if kind == "BinOp" and node.op == "*":
            return collect(node.left) and collect(node.right)
        if kind == "Access":
            accesses.append(node)
            return True
        return False

    if not collect(value):
        return None
    sparse = [a for a in accesses if _is_sparse(bound.get(a.tensor))]
    if len(sparse) != 1:
        return None
    S = bound[sparse[0].tensor]
    in_sparse = {ix.name for ix in sparse[0].indices}
    extents = {}
    for a in accesses:
        shape = np.shape(bound.get(a.tensor)) if not _is_sparse(bound.get(a.tensor)) else bound[a.tensor].shape
        for ix, n in zip(a.indices, shape):
            extents.setdefault(ix.name, int(n))
    return 2 * int(S.nnz) * math.prod(n for name, n in extents.items() if name not in in_sparse)


def _is_sparse(v) -> bool:
    fmt = getattr(v, "format", None)
    return fmt is not None and hasattr(v, "nnz") and not getattr(fmt, "is_dense", True)


# ---- timing ----------------------------------------------------------------------------------------

def _synchronizer(backend: str):
    if backend != "cuda":
        return lambda: None
    import cupy

    return cupy.cuda.Device().synchronize


def calls_per_sample(fn, sync, target_s: float = 2e-3) -> int:
    """How many back-to-back calls make one sample of about ``target_s`` (so a 5 µs kernel is not
    timed by one perf_counter pair, whose own cost is ~0.1 µs)."""
    t = time.perf_counter()
    fn()
    sync()
    one = time.perf_counter() - t
    return max(1, min(100_000, int(target_s / max(one, 1e-9))))


def time_sample(fn, sync, number: int) -> float:
    """Seconds per call over ``number`` back-to-back calls."""
    t = time.perf_counter()
    for _ in range(number):
        fn()
    sync()
    return (time.perf_counter() - t) / number


@dataclass
class BenchResult:
    """One kernel's timing and roofline figures (``sd.bench``). Times in seconds, bytes in bytes."""

    kernel: str
    backend: str
    times: list = field(repr=False)       # seconds per call, one per sample
    number: int                           # calls per sample
    bytes_in: dict                        # operand name -> bytes (in the format the kernel runs on)
    bytes_out: int                        # the output's bytes
    copy_gbs: float                       # this machine's copy bandwidth, GB/s (read + write)
    flops: int | None = None
    first_call: float | None = None       # seconds: plan + compile (or disk cache load) + one call
    formats: dict = field(default_factory=dict)  # operand name -> format (sparse operands)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def bytes_moved(self) -> int:
        return sum(self.bytes_in.values()) + self.bytes_out

    @property
    def gbs(self) -> float:
        """Achieved bandwidth at the median time, GB/s."""
        return self.bytes_moved / self.median / 1e9

    @property
    def copy_fraction(self) -> float:
        """Achieved bandwidth over this machine's copy bandwidth (1.0: as fast as a memcpy of the same bytes)."""
        return self.gbs / self.copy_gbs

    @property
    def gflops(self) -> float | None:
        return None if self.flops is None else self.flops / self.median / 1e9

    def rows(self) -> list[tuple[str, str]]:
        parts = [f"{name} {fmt_bytes(b)}" + (f" {self.formats[name]}" if name in self.formats else "")
                 for name, b in self.bytes_in.items() if b]
        rows = [("time", f"median {fmt_time(self.median)}, min {fmt_time(self.min)} "
                         f"({len(self.times)} samples x {self.number} calls)"),
                ("bytes moved", f"{fmt_bytes(self.bytes_moved)} "
                                f"({', '.join(parts + [f'out {fmt_bytes(self.bytes_out)}'])})"),
                ("bandwidth", f"{self.gbs:.2f} GB/s = {self.copy_fraction:.0%} of copy ({self.copy_gbs:.1f} GB/s); "
                              f"at the min time {self.bytes_moved / self.min / 1e9:.2f} GB/s = "
                              f"{self.bytes_moved / self.min / 1e9 / self.copy_gbs:.0%}")]
        if self.flops is not None:
            rows.append(("flops", f"{self.flops:,} -> {self.gflops:.2f} GFLOP/s"))
        if self.first_call is not None:
            rows.append(("first call", f"{fmt_time(self.first_call)} (plan, compile or load from disk, run)"))
        return rows

    def __repr__(self) -> str:
        head = f"bench {self.kernel} on {self.backend}"
        width = max(len(k) for k, _ in self.rows())
        return "\n".join([head] + [f"  {k:<{width}}  {v}" for k, v in self.rows()])

    def _repr_html_(self) -> str:
        body = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                       f"{html.escape(v)}</td></tr>" for k, v in self.rows())
        return f"<table><caption>bench {html.escape(self.kernel)} on {self.backend}</caption>{body}</table>"

    def to_dict(self) -> dict:
        return {"kernel": self.kernel, "backend": self.backend, "median_s": self.median, "min_s": self.min,
                "times_s": list(self.times), "calls_per_sample": self.number, "bytes_in": dict(self.bytes_in),
                "bytes_out": self.bytes_out, "bytes_moved": self.bytes_moved, "gbs": self.gbs,
                "copy_gbs": self.copy_gbs, "copy_fraction": self.copy_fraction, "flops": self.flops,
                "gflops": self.gflops, "first_call_s": self.first_call,
                "formats": {k: str(v) for k, v in self.formats.items()}}


def fmt_time(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} B"


# ---- the entry point -------------------------------------------------------------------------------

def prepare(kernel, operands: tuple, named: dict, backend: str | None):
    """(Kernel, backend, bound operands): an expression compiled, operands put into the formats the
    kernel declares once, so the timed calls convert nothing."""
    import sparsedsl as sd

    if isinstance(kernel, str):
        kernel = sd.compile(kernel)
    if not isinstance(kernel, sd.Kernel):
        raise TypeError(f"bench() takes a Kernel or an index-notation string, got {type(kernel).__name__}")
    if backend is None:
        on_gpu = any(hasattr(v, "__cuda_array_interface__") or getattr(v, "device", None) == "cuda"
                     for v in list(operands) + list(named.values()))
        backend = "cuda" if on_gpu else "cpu"
    if backend not in ("cpu", "cuda"):
        raise ValueError(f"backend must be 'cpu' or 'cuda', got {backend!r}")
    bound = kernel.bind(operands, named, backend)
    return kernel, backend, bound


def bench(kernel, /, *operands, backend: str | None = None, repeat: int | None = None, min_time: float = 0.2,
          flops: int | None = None, **named) -> BenchResult:
    """Time ``kernel`` on these operands and place it on the roofline.

    Operands go as a kernel takes them (by position in parameter order, or by name); they are put
    into the kernel's declared formats once, before timing. Each sample runs the kernel back to back
    for about 2 ms (at least one call); ``repeat`` samples are taken (by default as many as fit in
    ``min_time`` seconds, at least 7). Reported: median and minimum per call, the bytes the kernel
    must move (every operand array in its format, plus the output), the bandwidth that achieves and
    its fraction of this machine's copy bandwidth (``copy_bandwidth()``), and for a product of one
    sparse operand and dense ones, the flops (2·nnz·dense columns) and GFLOP/s.

    Parameters
    ----------
    kernel : Kernel or str
        A compiled kernel, or index notation as ``sd.compute`` takes it.
    backend : "cpu", "cuda" or None
        None: "cuda" when an operand is on the GPU, else "cpu".
    repeat : int, optional
        The number of samples.
    flops : int, optional
        The kernel's flop count when the automatic one (products only) does not apply.

    Returns
    -------
    BenchResult
        ``.median``, ``.min`` (seconds per call), ``.bytes_moved``, ``.gbs``, ``.copy_fraction``,
        ``.flops``, ``.gflops``; its repr is a table, ``_repr_html_`` an HTML one.

    >>> import numpy as np, sparsedsl as sd
    >>> A = sd.random((1000, 1000), 0.01, seed=0)
    >>> r = sd.bench("y[i] = A[i,j] * x[j]", A=A, x=np.ones(1000), repeat=3)
    >>> r.flops == 2 * A.nnz and r.bytes_moved == A.nbytes + 2 * 8000
    True
    """
    if repeat is not None and (not isinstance(repeat, int) or repeat < 1):
        raise ValueError(f"the 'repeat' parameter of bench() must be a positive int, got {repeat!r}")
    kernel, backend, bound = prepare(kernel, operands, named, backend)
    sync = _synchronizer(backend)
    fn = lambda: kernel(bound, backend=backend)  # noqa: E731 - the dict of operands: any name is an operand's
    t = time.perf_counter()
    out = fn()
    sync()
    first = time.perf_counter() - t
    number = calls_per_sample(fn, sync)
    times = []
    was_enabled = gc.isenabled()
    gc.disable()  # as timeit: a collection inside a sample is not the kernel's time
    try:
        start = time.perf_counter()
        while True:
            times.append(time_sample(fn, sync, number))
            if repeat is not None:
                if len(times) >= repeat:
                    break
            elif len(times) >= 7 and (time.perf_counter() - start >= min_time or len(times) >= 1000):
                break
    finally:
        if was_enabled:
            gc.enable()
    formats = {n: v.format for n, v in bound.items() if _is_sparse(v)}
    return BenchResult(kernel=kernel.name, backend=backend, times=times, number=number,
                       bytes_in={n: nbytes_of(v) for n, v in bound.items()}, bytes_out=nbytes_of(out),
                       copy_gbs=copy_bandwidth(backend), flops=flops if flops is not None else
                       product_flops(kernel, bound), first_call=first, formats=formats)

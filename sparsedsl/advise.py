"""``sd.advise``: which storage format runs a kernel fastest on *this* matrix, measured.

Each candidate format that can hold the matrix is built from it, the kernel is compiled for it,
and all candidates are timed in interleaved rounds (one sample of each per round, so a machine
that slows down for a while slows every candidate alike); medians decide. Formats that cannot hold
the matrix (nm(N,M) when some group of M holds more than N entries, bsr(r,c) when r, c do not
divide the shape) or would take many times CSR's memory are listed with the reason they were
skipped.
"""

from __future__ import annotations

import dataclasses
import gc
import html
import math
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from .roofline import (
    _synchronizer,
    bench,  # noqa: F401 - sd.bench is exported beside sd.advise (sparsedsl/__init__.py)
    calls_per_sample,
    copy_bandwidth,
    fmt_bytes,
    fmt_time,
    nbytes_of,
    prepare,
    time_sample,
)

BLOCK_SIZES = (2, 3, 4, 8)
NM_GROUPS = (4, 8)
MAX_BYTES_OVER_CSR = 8.0  # a candidate estimated at more than this multiple of csr's bytes is skipped unbuilt
TIE = 0.03  # medians within 3% of the fastest are a tie (below this VM's run-to-run noise)


@dataclass
class Candidate:
    format: str
    bytes: int | None = None          # the matrix in this format
    convert_s: float | None = None    # sd.asformat(A, format), once
    times: list = field(default_factory=list, repr=False)
    bytes_moved: int | None = None    # operands + output, as sd.bench counts them
    skipped: str | None = None        # why it was not measured

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def min(self) -> float | None:
        return min(self.times) if self.times else None


@dataclass
class Advice:
    """The measured candidates, fastest first, and the recommendation (``sd.advise``)."""

    kernel: str
    operand: str
    shape: tuple
    nnz: int
    backend: str
    copy_gbs: float
    candidates: list
    recommended: str | None
    reason: str

    @property
    def measured(self) -> list:
        return [c for c in self.candidates if c.median is not None]

    def _baseline(self) -> float | None:
        csr = next((c for c in self.measured if c.format == "csr"), None)
        return csr.median if csr else None

    def table(self) -> list[list[str]]:
        base = self._baseline()
        rows = [["format", "bytes", "median", "min", "GB/s", "% of copy", "vs csr", "convert"]]
        for c in self.candidates:
            if c.median is None:
                rows.append([c.format, fmt_bytes(c.bytes) if c.bytes else "-", f"skipped: {c.skipped}"])
                continue
            gbs = c.bytes_moved / c.median / 1e9
            rows.append([c.format, fmt_bytes(c.bytes), fmt_time(c.median), fmt_time(c.min), f"{gbs:.2f}",
                         f"{gbs / self.copy_gbs:.0%}", f"{base / c.median:.2f}x" if base else "-",
                         fmt_time(c.convert_s)])
        return rows

    def __repr__(self) -> str:
        rows = self.table()
        full = [r for r in rows if len(r) == len(rows[0])]
        widths = [max(len(r[k]) for r in full) for k in range(len(rows[0]))]
        lines = [f"advise {self.kernel}: {self.operand} {self.shape[0]}x{self.shape[1]}, nnz {self.nnz:,}, "
                 f"on {self.backend} (copy {self.copy_gbs:.1f} GB/s)"]
        for r in rows:
            if len(r) == len(rows[0]):
                lines.append("  " + "  ".join(v.ljust(w) if k == 0 else v.rjust(w)
                                              for k, (v, w) in enumerate(zip(r, widths))).rstrip())
            else:
                lines.append("  " + r[0].ljust(widths[0]) + "  " + r[1].rjust(widths[1]) + "  " + r[2])
        lines.append(f"recommended: {self.recommended} - {self.reason}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = self.table()
        head = "".join(f"<th>{html.escape(v)}</th>" for v in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) +
                       (f"<td colspan={len(rows[0]) - len(r)}></td>" if len(r) < len(rows[0]) else "") + "</tr>"
                       for r in rows[1:])
        cap = html.escape(f"advise {self.kernel}: {self.operand} {self.shape}, nnz {self.nnz:,}")
        return (f"<table><caption>{cap}</caption><tr>{head}</tr>{body}</table>"
                f"<p><b>recommended: {html.escape(str(self.recommended))}</b> - {html.escape(self.reason)}</p>")

    def to_dict(self) -> dict:
        base = self._baseline()
        return {"kernel": self.kernel, "operand": self.operand, "shape": list(self.shape), "nnz": self.nnz,
                "backend": self.backend, "copy_gbs": self.copy_gbs, "recommended": self.recommended,
                "reason": self.reason,
                "candidates": [{"format": c.format, "bytes": c.bytes, "convert_s": c.convert_s,
                                "median_s": c.median, "min_s": c.min, "times_s": list(c.times),
                                "bytes_moved": c.bytes_moved, "skipped": c.skipped,
                                "gbs": c.bytes_moved / c.median / 1e9 if c.median else None,
                                "speedup_over_csr": base / c.median if base and c.median else None}
                               for c in self.candidates]}


# ---- candidates ------------------------------------------------------------------------------------

def candidate_formats(coords: np.ndarray, shape: tuple) -> tuple[list[str], dict[str, str]]:
    """The default candidates for a matrix with these coordinates, and the skipped ones with reasons."""
    names = ["csr", "csc", "dcsr", "coo", "bitmap"]
    skipped = {}
    rows, cols = coords
    for m in NM_GROUPS:
        if shape[1] < m:
            skipped[f"nm(N,{m})"] = f"{shape[1]} columns are fewer than a group of {m}"
            continue
        group = rows * ((shape[1] + m - 1) // m) + cols // m
        most = int(np.bincount(group).max()) if group.size else 0
        if 0 < most < m:
            names.append(f"nm({most},{m})")
        else:
            skipped[f"nm(N,{m})"] = f"a group of {m} columns holds {most} entries: not N:M sparse for any N < {m}"
    divisors = [b for b in BLOCK_SIZES if shape[0] % b == 0 and shape[1] % b == 0]
    if not divisors:
        for kind in ("bsr", "blocked_bitmap"):
            skipped[f"{kind}(r,c)"] = f"no block size in {BLOCK_SIZES} divides the shape {tuple(shape)}"
    for b in divisors[:2]:
        names += [f"bsr({b},{b})", f"blocked_bitmap({b},{b})"]
    return names, skipped


def estimated_bytes(fmt: str, coords: np.ndarray, shape: tuple, itemsize: int) -> float | None:
    """Storage estimate for the formats that can be far larger than csr (padded bitmaps, blocks,
    N:M slots), computed from the coordinates before converting; None for the others."""
    rows, cols = coords
    nnz = rows.size
    if fmt == "bitmap":
        return shape[0] * math.ceil(shape[1] / 32) * 4 + nnz * itemsize
    if fmt.startswith("nm("):
        n, m = (int(v) for v in fmt[3:-1].split(","))
        return shape[0] * math.ceil(shape[1] / m) * n * (itemsize + 1)
    if fmt.startswith(("bsr(", "blocked_bitmap(")):
        r, c = (int(v) for v in fmt[fmt.index("(") + 1:-1].split(","))
        blocks = np.unique(rows // r * ((shape[1] + c - 1) // c) + cols // c).size
        return blocks * r * c * itemsize + blocks * 4
    return None


def _variant(kernel, param: str, fmt: str):
    """``kernel`` with operand ``param`` declared in ``fmt`` (the program rebuilt with that one
    parameter's format changed; its checks run again)."""
    import sparsedsl as sd

    program = kernel.program
    params = tuple(dataclasses.replace(p, format=sd.as_format(fmt, 2)) if p.name == param else p
                   for p in program.params)
    return sd.Kernel(dataclasses.replace(program, params=params), kernel.schedule)


# ---- the entry point -------------------------------------------------------------------------------

def advise(kernel, A, /, *others, formats=None, backend: str | None = None, repeat: int = 15,
           min_time: float = 0.5, operand: str | None = None, **named) -> Advice:
    """Measure ``kernel`` with its sparse operand ``A`` in each storage format that can hold it, and
    recommend one.

    ``A`` is the kernel's first operand (``operand=`` names another); ``others`` and keywords are the
    rest, as the kernel takes them. Candidates by default: csr, csc, dcsr, coo, bitmap, nm(N,M) for
    M = 4 and 8 with the smallest N that A complies with, bsr(b,b) and blocked_bitmap(b,b) for the
    two smallest b in (2, 3, 4, 8) dividing A's shape. Every candidate is converted once (timed
    separately: ``convert``), compiled, and timed in interleaved rounds of one sample each until each
    has ``repeat`` samples and ``min_time`` seconds have passed. The recommendation is the fastest
    median; candidates within 3% of it count as a tie, won by csr if it is among them (the
    common layout: no gain worth a conversion), else by the smallest storage.

    Parameters
    ----------
    kernel : Kernel or str
        A kernel (its declared format for ``A`` is replaced per candidate), or index notation.
    A : SparseTensor, scipy.sparse matrix or numpy array (2-D)
    formats : list of str, optional
        The candidates to try instead of the default list (csr is added as the baseline).
    backend : "cpu", "cuda" or None

    Returns
    -------
    Advice
        ``.candidates`` (fastest first, then the skipped ones with ``.skipped`` reasons),
        ``.recommended``, ``.reason``; a table as repr, ``_repr_html_``, ``to_dict()``.

    >>> import numpy as np, sparsedsl as sd
    >>> A = sd.random((64, 64), 0.05, seed=0)
    >>> adv = sd.advise("y[i] = A[i,j] * x[j]", A, np.ones(64), formats=["csr", "coo"], repeat=3, min_time=0)
    >>> adv.recommended in ("csr", "coo")
    True
    """
    import sparsedsl as sd

    if isinstance(kernel, str):
        kernel = sd.compile(kernel)
    if not isinstance(kernel, sd.Kernel):
        raise TypeError(f"advise() takes a Kernel or an index-notation string, got {type(kernel).__name__}")
    tensors = [p.name for p in kernel.program.params if p.kind == "tensor"]
    operand = operand or (tensors[0] if tensors else None)
    if operand not in tensors:
        raise ValueError(f"the 'operand' parameter of advise() must name a tensor operand of {kernel.name} "
                         f"({', '.join(tensors)}), got {operand!r}")
    rest = [p.name for p in kernel.program.params if p.name != operand]
    values = {**dict(zip(rest, others)), **named}
    base = sd.asformat(A, "csr")
    if base.ndim != 2:
        raise ValueError(f"advise() compares matrix formats; {operand} is {base.ndim}-D")
    coords, _ = base.coordinates()
    if formats is None:
        names, skipped = candidate_formats(coords, base.shape)
    else:
        names, skipped = list(dict.fromkeys(["csr", *formats])), {}
    candidates = [Candidate(name, skipped=why) for name, why in skipped.items()]
    runs = []  # (candidate, call, sync, calls per sample)
    for name in names:
        c = Candidate(name)
        candidates.append(c)
        est = estimated_bytes(name, coords, base.shape, base.dtype.itemsize)
        if est is not None and est > MAX_BYTES_OVER_CSR * base.nbytes:
            c.bytes, c.skipped = int(est), f"would take {est / base.nbytes:.0f}x csr's bytes"
            continue
        try:
            t = time.perf_counter()
            converted = sd.asformat(base, name)
            c.convert_s = time.perf_counter() - t
            k = _variant(kernel, operand, name)
            k2, be, bound = prepare(k, (), {**values, operand: converted}, backend)
            fn = lambda k2=k2, bound=bound, be=be: k2(bound, backend=be)  # noqa: E731
            out = fn()  # compile (or load from the disk cache) outside the timing
        except (sd.FormatError, sd.DSLError) as exc:
            c.skipped = str(exc).split("\n")[0]
            continue
        c.bytes = converted.nbytes
        c.bytes_moved = sum(nbytes_of(v) for v in bound.values()) + nbytes_of(out)
        sync = _synchronizer(be)
        runs.append((c, fn, sync, calls_per_sample(fn, sync)))
        backend = be
    backend = backend or "cpu"
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        while runs:
            for c, fn, sync, number in runs:
                c.times.append(time_sample(fn, sync, number))
            if len(runs[0][0].times) >= repeat and time.perf_counter() - start >= min_time:
                break
    finally:
        if was_enabled:
            gc.enable()
    measured = sorted((c for c in candidates if c.times), key=lambda c: c.median)
    recommended, reason = _recommend(measured)
    return Advice(kernel=kernel.name, operand=operand, shape=base.shape, nnz=base.nnz, backend=backend,
                  copy_gbs=copy_bandwidth(backend), candidates=measured + [c for c in candidates if not c.times],
                  recommended=recommended, reason=reason)


def _recommend(measured: list) -> tuple[str | None, str]:
    if not measured:
        return None, "no candidate format could hold the matrix"
    fastest = measured[0]
    tied = [c for c in measured if c.median <= fastest.median * (1 + TIE)]
    csr = next((c for c in measured if c.format == "csr"), None)
    # a tie goes to csr (scipy's own layout, converted without a copy), else to the smallest storage
    pick = csr if csr in tied else min(tied, key=lambda c: (c.bytes, c.median))
    vs = f"{csr.median / pick.median:.2f}x csr's speed, {pick.bytes / csr.bytes:.2f}x its bytes" \
        if csr and pick is not csr else ""
    if pick is fastest:
        why = f"the fastest median ({fmt_time(pick.median)})"
    else:
        why = (f"within {pick.median / fastest.median - 1:.1%} of the fastest ({fastest.format}, "
               f"{fmt_time(fastest.median)}), a tie at {TIE:.0%}: " +
               ("csr, the common layout, wins ties" if pick is csr else
                f"the smaller storage wins ({fmt_bytes(pick.bytes)} against {fmt_bytes(fastest.bytes)})"))
    return pick.format, why + (f"; {vs}" if vs else "")

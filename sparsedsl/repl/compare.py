"""``:bench``'s peer: the scipy.sparse operation that computes the same result, when there is one.

Which operation a kernel is, is decided by its result, not its text: each scipy candidate for the
operands' kinds (sparse @ dense, sparse @ sparse, +, -, elementwise *) is run once and kept only if
it gives the kernel's result on these very operands."""

from __future__ import annotations

import statistics

import numpy as np

from ..roofline import calls_per_sample, fmt_time, time_sample


def _candidates(named: dict) -> list[tuple[str, object]]:
    sparse = [(n, v.to_scipy()) for n, v in named.items()
              if hasattr(v, "to_scipy") and not v.format.is_dense and v.ndim == 2 and v.device == "cpu"]
    dense = [(n, v) for n, v in named.items() if isinstance(v, np.ndarray) and v.ndim in (1, 2)]
    out = []
    if len(sparse) == 1 and len(dense) == 1:
        (a, S), (x, d) = sparse[0], dense[0]
        out.append((f"{a} @ {x}", lambda S=S, d=d: S @ d))
        out.append((f"{a}.T @ {x}", lambda S=S, d=d: S.T @ d))
    if len(sparse) == 2 and not dense:
        (a, S), (b, T) = sparse
        out += [(f"{a} @ {b}", lambda: S @ T), (f"{a} + {b}", lambda: S + T), (f"{a} - {b}", lambda: S - T),
                (f"{a}.multiply({b})", lambda: S.multiply(T))]
    return out


def _same(ours, theirs) -> bool:
    if hasattr(ours, "to_scipy"):
        ours = ours.to_scipy()
    if hasattr(theirs, "toarray") and hasattr(ours, "toarray"):
        if ours.shape != theirs.shape:
            return False
        diff = abs(ours - theirs)
        scale = max(abs(theirs).max() if theirs.nnz else 0.0, 1.0)
        return (diff.max() if diff.nnz else 0.0) <= 1e-9 * scale
    if hasattr(theirs, "toarray"):
        theirs = theirs.toarray()
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    return ours.shape == theirs.shape and bool(np.allclose(ours, theirs, rtol=1e-9, atol=1e-12))


def scipy_peer(call, result) -> str | None:
    """A line comparing ``result`` (a BenchResult) with the scipy operation that matches, or None."""
    named = call.named()
    try:
        ours = call.kernel(*call.args, **call.kwargs)
    except Exception:  # noqa: BLE001 - no comparison then
        return None
    for text, fn in _candidates(named):
        try:
            if not _same(ours, fn()):
                continue
        except Exception:  # noqa: BLE001 - shapes that do not fit this candidate
            continue
        number = calls_per_sample(fn, lambda: None)
        times = [time_sample(fn, lambda: None, number) for _ in range(max(5, min(len(result.times), 25)))]
        med = statistics.median(times)
        ratio = med / result.median
        return (f"  scipy {text}: median {fmt_time(med)}, min {fmt_time(min(times))}; sparsedsl runs at "
                f"{ratio:.2f}x scipy's speed")
    return None

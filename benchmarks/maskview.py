"""`python -m benchmarks.maskview [--quick] [--no-browser] [--out PATH]`: issue 20's MaskView target, measured.

A 16,384 x 16,384 mask with 10^7 nonzeros (csr, exactly 10^7 distinct random positions) must render in under
one second. Measured:

- the binning kernel ``D[p,q] = R[p,i] * A[i,j] * C[j,q]`` (nonzeros per pixel of a 512 x 512 grid): its first
  call (compile, or load from the disk cache) and median/min of warm calls, alone and with the binning matrices
  built (what a zoom or slider move costs in Python);
- ``MaskView(A)`` in Python: the pattern, the stats panel (row/column counts, bsr block counts) and the grid;
- time to first paint in JupyterLab (headless Chromium; skipped with --no-browser or without chromium): a
  cell records ``time.time()`` and displays a fresh ``MaskView(A)``; the widget's front end stamps
  ``Date.now()`` when it first paints the canvas; the difference is everything a user waits for (Python,
  the 1 MiB grid over the kernel's websocket, the drawing). Median of 3 cells, each a new widget.

JSON: benchmarks/results/maskview-<cpu>.json (--quick: a 4,096^2 mask with 6*10^5 nonzeros, -quick.json).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from .timing import fmt_time, machine_info, result_tag, write_json

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 1.0


def _timed(fn, reps: int) -> dict:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def python_side(n: int, nnz: int, reps: int) -> tuple[dict, object]:
    import sparsedsl as sd
    from sparsedsl.widgets import MaskView, density

    t = time.perf_counter()
    A = sd.random((n, n), nnz / n**2, seed=0)
    build = time.perf_counter() - t
    assert A.nnz == nnz
    P = density.as_mask(A).pattern()
    view = (0, n, 0, n)
    t = time.perf_counter()
    grid = density.density_grid(P, view, 512)
    first = time.perf_counter() - t
    assert grid.shape == (512, 512) and grid.sum() == nnz
    R = density.bins(0, n, 512, n)
    C = density.bins(0, n, 512, n, transpose=True)
    kernel = density._kernel(density.BIN, P.format)
    out = {"shape": [n, n], "nnz": nnz, "build_mask_s": build, "kernel_first_call_s": first,
           "kernel": _timed(lambda: kernel(R=R, A=P, C=C), reps),
           "grid_with_bins": _timed(lambda: density.density_grid(P, view, 512), reps)}
    MaskView(A)  # warm: the stats kernels
    out["maskview_python"] = _timed(lambda: MaskView(A), max(3, reps // 2))
    v = MaskView(A)
    v.zoom((0, n // 8), (0, n // 8))
    shifts = iter(range(1, 10**6))  # a new view every call (setting the same view again changes nothing)
    out["zoom_python"] = _timed(lambda: v.zoom((next(shifts) % 64, n // 8), (0, n // 8)), reps)
    return out, A


NOTEBOOK_CELLS = [
    "import time, sparsedsl as sd\nfrom sparsedsl.widgets import MaskView\n"
    "A = sd.random(({n}, {n}), {nnz} / {n}**2, seed=0)\nassert A.nnz == {nnz}\nMaskView(A);  # warm, not displayed",
] + ["_t0 = time.time()\nprint(f'T0={{_t0 * 1000:.3f}}')\nMaskView(A)"] * 3

COLLECT = """() => Array.from(document.querySelectorAll('.jp-CodeCell')).map(cell => {
  const text = cell.querySelector('.jp-OutputArea') ? cell.querySelector('.jp-OutputArea').innerText : '';
  const m = text.match(/T0=([0-9.]+)/);
  const c = cell.querySelector('.sdsl-mask-canvas');
  return m && c ? {t0: parseFloat(m[1]), paint: parseFloat(c.dataset.firstPaintEpochMs || 'NaN'),
                   render_ms: parseFloat(c.dataset.firstPaintMs || 'NaN'), width: c.width, height: c.height} : null;
}).filter(x => x)"""


def browser_side(n: int, nnz: int) -> dict:
    import nbformat

    from sparsedsl.widgets import lab

    if lab.chromium() is None:
        return {"skipped": f"no Chromium: {lab.INSTALL_CHROMIUM}"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        root = work / "root"
        root.mkdir()
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
        nb.cells = [nbformat.v4.new_code_cell(c.format(n=n, nnz=nnz)) for c in NOTEBOOK_CELLS]
        nbformat.write(nb, root / "paint.ipynb")
        with lab.server(root, work, pythonpath=str(ROOT)) as url, lab.browser() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            lab.open_notebook(page, url, "paint.ipynb")
            lab.run_all(page)
            lab.wait_all_ran(page, timeout_ms=180_000)
            page.wait_for_function(f"() => document.querySelectorAll('.sdsl-mask-canvas[data-first-paint-epoch-ms]')"
                                   f".length >= {len(NOTEBOOK_CELLS) - 1}", timeout=60_000, polling=100)
            rows = page.evaluate(COLLECT)
    waits = [(r["paint"] - r["t0"]) / 1e3 for r in rows]
    return {"cells": rows, "time_to_first_paint_s": waits, "median_s": statistics.median(waits),
            "render_to_paint_ms": [r["render_ms"] for r in rows],
            "canvas": [rows[0]["height"], rows[0]["width"]]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a 4,096^2 mask with 6*10^5 nonzeros")
    ap.add_argument("--no-browser", action="store_true", help="skip the JupyterLab time-to-first-paint run")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--out", help="JSON path (default benchmarks/results/maskview-<cpu>[-quick].json)")
    args = ap.parse_args(argv)
    n, nnz = (4096, 600_000) if args.quick else (16384, 10_000_000)
    info = machine_info({})
    py, _ = python_side(n, nnz, args.reps)
    print(f"mask {n}^2, nnz {nnz:,} (csr; built in {fmt_time(py['build_mask_s'])})")
    print(f"  binning kernel, 512x512 grid: first call {fmt_time(py['kernel_first_call_s'])}, median "
          f"{fmt_time(py['kernel']['median_s'])}, min {fmt_time(py['kernel']['min_s'])}")
    print(f"  grid incl. binning matrices:  median {fmt_time(py['grid_with_bins']['median_s'])}")
    print(f"  MaskView(A) in Python:        median {fmt_time(py['maskview_python']['median_s'])} (grid, stats panel)")
    print(f"  zoom (new view) in Python:    median {fmt_time(py['zoom_python']['median_s'])}")
    br = {"skipped": "--no-browser"} if args.no_browser else browser_side(n, nnz)
    if "skipped" in br:
        print(f"  time to first paint: skipped ({br['skipped']})")
    else:
        print(f"  time to first paint in JupyterLab (cell start -> canvas painted): median "
              f"{fmt_time(br['median_s'])} of {[round(w, 3) for w in br['time_to_first_paint_s']]} s; "
              f"render() -> paint {statistics.median(br['render_to_paint_ms']):.0f} ms; canvas {br['canvas']}")
        print(f"  target < {TARGET_S:.0f} s: {'met' if br['median_s'] < TARGET_S else 'NOT met'}")
    out = args.out or str(RESULTS / f"maskview-{result_tag(info)}{'-quick' if args.quick else ''}.json")
    write_json(out, {"machine": info, "target_s": TARGET_S, "python": py, "browser": br,
                     "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    print(f"wrote {out}")
    return py, br


if __name__ == "__main__":
    main()

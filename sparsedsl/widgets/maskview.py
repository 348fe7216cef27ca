"""MaskView: a sparsity mask in a notebook, drawn on a canvas from per-pixel nonzero counts.

Whatever the mask's size, the front end receives one float32 count per pixel (at most ``size`` x ``size``),
computed by the binning kernel (``density.py``) over the current view; zooming, the block heat map, the N:M
overlay and a batch/head slider each recompute only that small grid. A 16,384^2 mask with 10^7 nonzeros
is binned in ~0.1 s on two cores (``python -m benchmarks.maskview``).
"""

from __future__ import annotations

import time

import anywidget
import numpy as np
import traitlets as t

from . import density
from ._frontend import CSS, ESM

BLOCK_SIZES = (4, 8, 16, 32, 64, 128, 256)
MAX_BLOCK_CELLS = 1 << 20   # the block heat map sends at most this many tiles; zoom in or pick larger blocks
BYTES_BLOCKS = (16, 64)     # block sizes whose bsr storage the stats panel estimates


class MaskView(anywidget.AnyWidget):
    """An interactive spy plot of a mask: density per pixel, zoom, hover readout, block-density heat map,
    N:M violations, row/column nonzero histograms and the bytes of each candidate format.

    Parameters
    ----------
    mask : SparseTensor (any format), scipy.sparse matrix, numpy array (boolean or numeric) or torch tensor
        2-D, or an attention mask (heads, L, L) / (batch, heads, L, L) with sliders for batch and head.
    size : int
        Pixels on the longer side of the image (the count grid has at most this many cells a side).
    block : int
        Tile size of the block heat map (one of 4, 8, ..., 256).
    nm : (int, int)
        N and M of the N:M compliance overlay (shown with ``show_nm=True`` or its checkbox).

    Examples
    --------
    >>> from sparsedsl.widgets import MaskView
    >>> MaskView(sd.random((16384, 16384), 1e-3))          # doctest: +SKIP
    """

    _esm = ESM
    _css = CSS

    mask_shape = t.List(t.Int()).tag(sync=True)
    view = t.List(t.Int()).tag(sync=True)
    size = t.Int(512).tag(sync=True)
    grid = t.Bytes(b"").tag(sync=True)
    grid_h = t.Int(0).tag(sync=True)
    grid_w = t.Int(0).tag(sync=True)
    mode = t.Unicode("density").tag(sync=True)
    block = t.Int(64).tag(sync=True)
    block_sizes = t.List(t.Int(), list(BLOCK_SIZES)).tag(sync=True)
    blocks_grid = t.Bytes(b"").tag(sync=True)
    blocks_h = t.Int(0).tag(sync=True)
    blocks_w = t.Int(0).tag(sync=True)
    blocks_origin = t.List(t.Int(), [0, 0]).tag(sync=True)
    block_stats = t.Dict().tag(sync=True)
    show_nm = t.Bool(False).tag(sync=True)
    nm_n = t.Int(2).tag(sync=True)
    nm_m = t.Int(4).tag(sync=True)
    nm_grid = t.Bytes(b"").tag(sync=True)
    nm_stats = t.Dict().tag(sync=True)
    batch = t.Int(0).tag(sync=True)
    head = t.Int(0).tag(sync=True)
    n_batch = t.Int(1).tag(sync=True)
    n_heads = t.Int(1).tag(sync=True)
    nnz_hist = t.Dict().tag(sync=True)
    stats = t.Dict().tag(sync=True)
    message = t.Unicode("").tag(sync=True)
    compute_s = t.Float(0.0).tag(sync=True)   # seconds the last grid took in Python (binning kernel included)

    def __init__(self, mask, *, size: int = 512, block: int = 64, nm=(2, 4), show_nm: bool = False, **kwargs):
        if not isinstance(size, int | np.integer) or not 16 <= size <= 4096:
            raise ValueError(f"size must be an int of pixels in [16, 4096], got {size!r}")
        self._check_block(block)
        n, m = self._check_nm(*nm)
        self._mask = density.as_mask(mask)
        super().__init__(size=int(size), block=int(block), nm_n=n, nm_m=m, show_nm=bool(show_nm), **kwargs)
        self._nm_cache: dict = {}
        self._load_slice()

    # ---- public ------------------------------------------------------------------------------------
    @property
    def density_grid(self) -> np.ndarray:
        """Nonzeros per pixel of the current view, (grid_h, grid_w) float32."""
        return np.frombuffer(self.grid, np.float32).reshape(self.grid_h, self.grid_w)

    @property
    def canvas_shape(self) -> tuple[int, int]:
        """(height, width) of the drawn image in pixels: the grid scaled so its longer side is ``size``."""
        s = self.size / max(self.grid_h, self.grid_w)
        return max(1, round(self.grid_h * s)), max(1, round(self.grid_w * s))

    def zoom(self, rows, cols):
        """Show rows [r0, r1) and columns [c0, c1) (what dragging a rectangle does)."""
        r0, r1 = rows
        c0, c1 = cols
        if not (0 <= r0 < r1 <= self._mask.rows and 0 <= c0 < c1 <= self._mask.cols):
            raise ValueError(f"zoom needs 0 <= r0 < r1 <= {self._mask.rows} and 0 <= c0 < c1 <= {self._mask.cols}; "
                             f"got rows={tuple(rows)}, cols={tuple(cols)}")
        self.view = [int(r0), int(r1), int(c0), int(c1)]

    def reset(self):
        self.view = [0, self._mask.rows, 0, self._mask.cols]

    def set_mask(self, mask):
        """Show another mask (kept zoom if it has the same shape)."""
        same = density.as_mask(mask)
        keep = (same.rows, same.cols) == (self._mask.rows, self._mask.cols)
        self._mask, self._nm_cache = same, {}
        self._load_slice(keep_view=keep)

    # ---- validation ---------------------------------------------------------------------------------
    @staticmethod
    def _check_block(block):
        if block not in BLOCK_SIZES:
            raise ValueError(f"block must be one of {BLOCK_SIZES}, got {block!r}")

    @staticmethod
    def _check_nm(n, m):
        if not (isinstance(n, int | np.integer) and isinstance(m, int | np.integer) and 1 <= n < m <= 64):
            raise ValueError(f"nm must be two ints with 1 <= N < M <= 64 (e.g. (2, 4)), got ({n!r}, {m!r})")
        return int(n), int(m)

    @t.validate("batch", "head")
    def _valid_slice(self, proposal):
        name, v = proposal["trait"].name, proposal["value"]
        count = self.n_batch if name == "batch" else self.n_heads
        if not 0 <= v < count:
            raise t.TraitError(f"{name} must be in [0, {count}), got {v}")
        return v

    @t.validate("view")
    def _valid_view(self, proposal):
        v = proposal["value"]
        rows, cols = self.mask_shape or (0, 0)
        if len(v) != 4 or not (0 <= v[0] < v[1] <= rows and 0 <= v[2] < v[3] <= cols):
            raise t.TraitError(f"view must be [r0, r1, c0, c1] inside {rows} x {cols}, got {v}")
        return list(v)

    @t.validate("block")
    def _valid_block(self, proposal):
        self._check_block(proposal["value"])
        return proposal["value"]

    @t.validate("nm_n", "nm_m")
    def _valid_nm(self, proposal):
        v = proposal["value"]
        if not 1 <= v <= 64:
            raise t.TraitError(f"N and M must be in [1, 64], got {v}")
        return v

    # ---- computing what is drawn ---------------------------------------------------------------------
    def _load_slice(self, keep_view=False):
        m = self._mask
        self._loading = True
        with self.hold_sync():
            self.n_batch, self.n_heads = m.n_batch, m.n_heads
            self.mask_shape = [m.rows, m.cols]
            self._pattern = m.pattern(min(self.batch, m.n_batch - 1), min(self.head, m.n_heads - 1))
            if not keep_view or not self.view:
                self.view = [0, m.rows, 0, m.cols]
            self._stats()
            self._loading = False
            self._draw()

    @t.observe("batch", "head")
    def _on_slice(self, change):
        if not getattr(self, "_loading", True):
            self._nm_cache = {}
            self._load_slice(keep_view=True)

    @t.observe("view", "size", "mode", "block", "show_nm", "nm_n", "nm_m")
    def _on_view(self, change):
        if not getattr(self, "_loading", True):
            self._draw()

    def _draw(self):
        t0 = time.perf_counter()
        view = self.view
        g = density.density_grid(self._pattern, view, self.size)
        with self.hold_sync():
            self.grid_h, self.grid_w = g.shape
            self.grid = g.astype("<f4").tobytes()
            self.message = ""
            if self.mode == "blocks":
                self._draw_blocks()
            if self.show_nm:
                self._draw_nm(g.shape)
            self.compute_s = time.perf_counter() - t0

    def _draw_blocks(self):
        b, (r0, r1, c0, c1) = self.block, self.view
        tiles = (-(-(r1 - r0) // b) + 1) * (-(-(c1 - c0) // b) + 1)
        if tiles > MAX_BLOCK_CELLS:
            self.message = (f"{b}x{b} blocks: about {tiles:,} tiles in view, more than {MAX_BLOCK_CELLS:,}; "
                            f"zoom in or choose a larger block")
            self.blocks_grid, self.blocks_h, self.blocks_w, self.block_stats = b"", 0, 0, {}
            return
        counts, origin = density.block_counts(self._pattern, self.view, b)
        self.blocks_h, self.blocks_w = counts.shape
        self.blocks_origin = list(origin)
        self.blocks_grid = counts.astype("<f4").tobytes()
        nonempty = int(np.count_nonzero(counts))
        self.block_stats = {"block": b, "nonempty": nonempty,
                            "fill": float(counts.sum() / (nonempty * b * b)) if nonempty else 0.0}

    def _draw_nm(self, shape):
        n, m = self.nm_n, self.nm_m
        if n >= m:
            self.message = f"N:M overlay needs N < M, got {n}:{m}"
            self.nm_grid, self.nm_stats = b"", {}
            return
        if (n, m) not in self._nm_cache:
            self._nm_cache[(n, m)] = density.nm_violations(self._pattern, n, m)
        bad, violating, groups = self._nm_cache[(n, m)]
        flagged = density.points_grid(bad, self._pattern.shape, self.view, shape) > 0
        self.nm_grid = flagged.astype(np.uint8).tobytes()
        self.nm_stats = {"n": n, "m": m, "violating": violating, "groups": groups}

    def _stats(self):
        P, m = self._pattern, self._mask
        rows, cols = density.row_col_counts(P)
        nnz = int(rows.sum())
        blocks = {}
        for b in BYTES_BLOCKS:
            if m.rows % b == 0 and m.cols % b == 0 and (m.rows // b) * (m.cols // b) <= MAX_BLOCK_CELLS * 4:
                counts, _ = density.block_counts(P, (0, m.rows, 0, m.cols), b)
                blocks[b] = int(np.count_nonzero(counts))
        self.stats = {"rows": m.rows, "cols": m.cols, "nnz": nnz, "density": nnz / (m.rows * m.cols),
                      "format": m.format, "kind": m.kind,
                      "bytes": density.format_bytes(m.rows, m.cols, nnz, row_nnz=rows, blocks=blocks)}
        self.nnz_hist = {name: [int(v) for v in h] for name, h in
                         (("rows", np.histogram(rows, bins=32)[0]), ("cols", np.histogram(cols, bins=32)[0]))}
        self.nnz_hist = {**self.nnz_hist, "row_edges": [float(rows.min()), float(rows.max())],
                         "col_edges": [float(cols.min()), float(cols.max())]}

"""PruneExplorer: prune a weight matrix live (unstructured, N:M, block, bitmap) and see the mask, the relative
error and a kernel's measured speed in each storage format (``sd.advise``)."""

from __future__ import annotations

import ipywidgets as w
import numpy as np

import sparsedsl as sd

from .. import display
from .maskview import MaskView

PATTERNS = ("unstructured", "N:M", "block", "bitmap")
NM_CHOICES = ("1:4", "2:4", "2:8", "4:8")
KERNELS = {"spmv": ("y[i] = W[i,j] * x[j]", 1), "spmm": ("Y[i,k] = W[i,j] * X[j,k]", 16)}


class PruneExplorer(w.VBox):
    """Sliders for sparsity and pattern that prune ``W`` live; shows the mask (a MaskView), the relative error
    ``||W - W_s|| / ||W||`` and, on "measure", the chosen kernel's speed in each format through ``sd.advise``.

    Parameters
    ----------
    W : 2-D numpy array (or anything ``np.asarray`` reads as one)
    pattern : "unstructured" (csr), "N:M", "block" (bsr) or "bitmap"
    sparsity : float in [0, 1), the share of entries removed (N:M fixes it to 1 - N/M)
    kernel : "spmv" (y = W x) or "spmm" (Y = W X, 16 columns)
    """

    def __init__(self, W, *, pattern: str = "unstructured", sparsity: float = 0.5, nm: str = "2:4", block: int = 4,
                 kernel: str = "spmv", size: int = 384, repeat: int = 7, min_time: float = 0.2):
        W = np.asarray(W)
        if W.ndim != 2 or W.size == 0 or not np.issubdtype(W.dtype, np.number):
            raise ValueError(f"PruneExplorer needs a non-empty 2-D numeric weight matrix, got shape {W.shape} and "
                             f"dtype {W.dtype}; pass e.g. layer.weight.detach().numpy()")
        _choice("pattern", pattern, PATTERNS)
        _choice("nm", nm, NM_CHOICES)
        _choice("kernel", kernel, tuple(KERNELS))
        if not 0.0 <= float(sparsity) < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
        blocks = [b for b in (2, 4, 8, 16, 32) if W.shape[0] % b == 0 and W.shape[1] % b == 0]
        if block not in blocks and pattern == "block":
            raise ValueError(f"block must be one of {blocks} (sizes dividing the shape {W.shape}), got {block!r}")
        self.W = W.astype(np.float64) if W.dtype.kind != "f" else W
        self.repeat, self.min_time = repeat, min_time
        self.pattern = w.Dropdown(options=PATTERNS, value=pattern, description="pattern")
        self.sparsity = w.FloatSlider(value=float(sparsity), min=0.0, max=0.99, step=0.01, description="sparsity",
                                      continuous_update=False, readout_format=".2f")
        self.nm = w.Dropdown(options=NM_CHOICES, value=nm, description="N:M")
        self.block = w.Dropdown(options=blocks or [1], value=block if block in blocks else (blocks or [1])[0],
                                description="block")
        self.kernel = w.Dropdown(options=list(KERNELS), value=kernel, description="kernel")
        self.measure_button = w.Button(description="measure formats", icon="clock")
        self.error_label = w.HTML()
        self.table = w.HTML("<i>press 'measure formats' to time the kernel in each format (sd.advise)</i>")
        self.pruned = self._prune()
        self.view = MaskView(self.pruned, size=size)
        self.advice = None
        self._show_error()
        for control in (self.pattern, self.sparsity, self.nm, self.block):
            control.observe(self._update, names="value")
        self.measure_button.on_click(lambda _: self.measure())
        super().__init__([w.HBox([self.pattern, self.sparsity]), w.HBox([self.nm, self.block]),
                          self.error_label, self.view, w.HBox([self.kernel, self.measure_button]), self.table])

    # ---- pruning -----------------------------------------------------------------------------------
    def _prune(self):
        p, s = self.pattern.value, self.sparsity.value
        self.nm.disabled, self.block.disabled = p != "N:M", p != "block"
        self.sparsity.disabled = p == "N:M"
        if p == "N:M":
            n, m = (int(v) for v in self.nm.value.split(":"))
            return sd.prune.nm(self.W, n, m)
        if p == "block":
            return sd.prune.block(self.W, (self.block.value, self.block.value), sparsity=s)
        return sd.prune.magnitude(self.W, sparsity=s, format="bitmap" if p == "bitmap" else "csr")

    @property
    def relative_error(self) -> float:
        """``||W - W_s||_F / ||W||_F`` of the current pruning."""
        return float(np.linalg.norm(self.W - self.pruned) / np.linalg.norm(self.W))

    def _show_error(self):
        kept = self.pruned.nnz / self.W.size
        self.error_label.value = (f"<b>{self.pattern.value}</b> in <code>{self.pruned.format}</code>: kept "
                                  f"{kept:.1%} of the entries, relative error ||W - W_s|| / ||W|| = "
                                  f"<b>{self.relative_error:.4f}</b>")

    def _update(self, change=None):
        self.pruned = self._prune()
        self.view.set_mask(self.pruned)
        self._show_error()

    # ---- measuring -----------------------------------------------------------------------------------
    def formats(self) -> list:
        """The formats measured: csr, coo, bitmap, and the pattern's own (nm(N,M) or bsr(b,b))."""
        out = ["csr", "coo", "bitmap"]
        if self.pattern.value == "N:M":
            out.append(f"nm({self.nm.value.replace(':', ',')})")
        elif self.pattern.value == "block":
            out.append(f"bsr({self.block.value},{self.block.value})")
        return out

    def measure(self):
        """Time the chosen kernel with the pruned matrix in each of ``formats()`` (``sd.advise``); the result is
        ``.advice`` and is shown as a table with a roofline bar per format."""
        expr, cols = KERNELS[self.kernel.value]
        n = self.W.shape[1]
        dense = np.random.default_rng(0).random(n if cols == 1 else (n, cols))
        name = "x" if cols == 1 else "X"
        self.table.value = "<i>measuring...</i>"
        kernel = sd.compile(expr, {"W": "csr", name: "dense"})
        self.advice = sd.advise(kernel, self.pruned, formats=self.formats(), repeat=self.repeat,
                                min_time=self.min_time, **{name: dense})
        self.table.value = display.advise_html(self.advice)
        return self.advice


def _choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")

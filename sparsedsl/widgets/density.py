"""What MaskView draws, computed without ipywidgets: masks of any kind reduced to 2-D patterns, and the
per-pixel density grid, block counts, N:M violations and row/column counts as sparsedsl kernels.

Binning is a product: with ``R[p,i] = 1`` when row ``i`` falls in pixel row ``p`` (and ``C[j,q]`` likewise
for columns), ``D[p,q] = R[p,i] * A[i,j] * C[j,q]`` counts the stored nonzeros of ``A`` per pixel. The
lowering walks R's row ``p``, A's rows in it, and each column's single bin: one pass over the nonzeros,
parallel over pixel rows, for any format of ``A`` (one compiled kernel per format). A zoomed view is the
same kernel with rows and columns outside the view left out of ``R`` and ``C``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

import sparsedsl as sd

BIN = "D[p,q] = R[p,i] * A[i,j] * C[j,q]"   # per-pixel (or per-block) nonzero counts
ROWS = "r[i] = A[i,j]"                      # nonzeros per row
COLS = "c[j] = A[i,j]"                      # nonzeros per column
GROUPS = "G[i,g] = A[i,j] * C[j,g]"         # nonzeros per (row, group of M columns), stored sparse
_kernels: dict = {}


def _kernel(expr: str, fmt, out_format=None):
    key = (expr, str(fmt), out_format)
    if key not in _kernels:
        formats = {"A": fmt, "R": "csr", "C": "csr"}
        names = [n for n in ("A", "R", "C") if f"{n}[" in expr]
        _kernels[key] = sd.compile(expr, {n: formats[n] for n in names}, out_format=out_format)
    return _kernels[key]


# ---- masks of any kind -> 2-D patterns --------------------------------------------------------------

@dataclass
class Mask:
    """A mask as MaskView sees it: ``n_batch`` x ``n_heads`` slices of ``rows`` x ``cols`` patterns."""

    source: object
    rows: int
    cols: int
    n_batch: int = 1
    n_heads: int = 1
    kind: str = ""
    format: str = "csr"

    def pattern(self, batch: int = 0, head: int = 0):
        """Slice (batch, head) as a 2-D SparseTensor whose values are 1.0 at the nonzeros (0.0 at stored zeros),
        in the source's own format where it is a 2-D SparseTensor."""
        if not (0 <= batch < self.n_batch and 0 <= head < self.n_heads):
            raise IndexError(f"slice (batch={batch}, head={head}) is outside this mask's "
                             f"{self.n_batch} batches x {self.n_heads} heads")
        return _pattern(self, batch, head)


def as_mask(x) -> Mask:
    """Read a SparseTensor (any format, 2-D, 3-D heads x L x L or 4-D batch x heads x L x L), a scipy sparse
    matrix, a numpy array (boolean or numeric: nonzeros count), a torch tensor (dense or sparse) or a cupy
    array/sparse matrix (copied to the host)."""
    if type(x).__module__.startswith("cupy"):  # cupy arrays and cupyx.scipy.sparse matrices: to the host
        return as_mask(x.get())
    if isinstance(x, sd.SparseTensor):
        if x.device != "cpu":
            x = x.to("cpu")
        kind, fmt = "SparseTensor", str(x.format)
        shape = x.shape
    elif sp.issparse(x):
        if x.ndim != 2:
            raise ValueError(f"MaskView needs a 2-D scipy matrix, got {x.ndim}-D")
        kind, fmt, shape = f"scipy {x.format}", "csr", x.shape
    elif _is_torch(x):
        x = _torch_to_host(x)
        return as_mask(x)
    elif isinstance(x, np.ndarray) or hasattr(x, "__array__"):
        x = np.asarray(x)
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise TypeError(f"MaskView needs a numeric or boolean array, got dtype {x.dtype}")
        kind, fmt, shape = f"numpy {x.dtype}", "dense", x.shape
    else:
        raise TypeError(f"MaskView takes a SparseTensor, a scipy.sparse matrix, a numpy array or a torch tensor; "
                        f"got {type(x).__name__}. Convert it first, e.g. sd.asformat(x, 'csr')")
    if len(shape) not in (2, 3, 4):
        raise ValueError(f"MaskView draws 2-D masks, (heads, L, L) or (batch, heads, L, L) attention masks; got "
                         f"shape {tuple(shape)}. Reshape it to one of these")
    if min(shape) == 0:
        raise ValueError(f"MaskView needs a non-empty mask, got shape {tuple(shape)}")
    lead = (1,) * (4 - len(shape)) + tuple(shape[:-2])
    return Mask(x, int(shape[-2]), int(shape[-1]), int(lead[-2]), int(lead[-1]), kind, fmt)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "layout")


def _torch_to_host(t):
    t = t.detach().cpu()
    if t.layout == __import__("torch").strided:
        return (t != 0).numpy()
    if t.dim() != 2:
        t = t.to_dense()  # batched sparse torch layouts: rare, densified slice by slice would be no cheaper
        return (t != 0).numpy()
    coo = t.to_sparse_coo().coalesce()
    idx = coo.indices().numpy()
    vals = (coo.values() != 0).numpy().astype(np.float32)
    return sp.csr_array((vals, (idx[0], idx[1])), shape=tuple(t.shape))


def _pattern(mask: Mask, batch: int, head: int):
    x = mask.source
    if isinstance(x, sd.SparseTensor):
        if x.ndim == 2:
            return sd.SparseTensor(x.format, x.shape, x.levels, (x.values != 0).astype(np.float32), check=False)
        coords, vals = x.coordinates()
        keep = (coords[-3] == head) & (coords[0] == batch if x.ndim == 4 else True) & (vals != 0)
        c = coords[-2:, keep]
        return sd.from_coordinates(c, np.ones(c.shape[1], np.float32), (mask.rows, mask.cols), "csr", presorted=False)
    if sp.issparse(x):
        m = sp.csr_array(x)
        m = sp.csr_array(((m.data != 0).astype(np.float32), m.indices, m.indptr), shape=m.shape)
        if not m.has_canonical_format:
            m.sum_duplicates()
        return sd.asformat(m, "csr")
    arr = np.asarray(x).reshape((-1, mask.n_heads, mask.rows, mask.cols))[batch, head]
    coords = np.array(np.nonzero(arr), dtype=np.int64).reshape(2, -1)  # row-major: already in csr order
    return sd.from_coordinates(coords, np.ones(coords.shape[1], np.float32), arr.shape, "csr", presorted=True)


# ---- the kernels ---------------------------------------------------------------------------------------

def bins(lo: int, hi: int, n_bins: int, extent: int, *, transpose=False, width: int | None = None):
    """The binning matrix of [lo, hi) into ``n_bins`` equal bins (or bins of ``width`` indices): (n_bins,
    extent) csr, one 1 per index in the range (``transpose``: (extent, n_bins), for the column side)."""
    i = np.arange(lo, min(hi, extent), dtype=np.int64)
    b = (i - lo) // width if width else (i - lo) * n_bins // max(hi - lo, 1)
    ones = np.ones(len(i), np.float32)
    m = sp.csr_array((ones, (i, b)), shape=(extent, n_bins)) if transpose else \
        sp.csr_array((ones, (b, i)), shape=(n_bins, extent))
    return sd.asformat(m, "csr")


def density_grid(P, view, size):
    """Nonzero counts of pattern ``P`` per pixel over ``view`` = (r0, r1, c0, c1), at most ``size`` pixels on
    the longer side (one pixel per entry when the view is smaller): a float32 (h, w) array."""
    r0, r1, c0, c1 = view
    h, w = grid_shape(r1 - r0, c1 - c0, size)
    return bin_counts(P, (r0, r1, c0, c1), (h, w))


def bin_counts(P, view, grid):
    r0, r1, c0, c1 = view
    h, w = grid
    R = bins(r0, r1, h, P.shape[0])
    C = bins(c0, c1, w, P.shape[1], transpose=True)
    return np.asarray(_kernel(BIN, P.format)(R=R, A=P, C=C), dtype=np.float32)


def block_counts(P, view, block: int):
    """Nonzeros per ``block`` x ``block`` tile of the tiles that meet ``view``: (float32 array, (row, col) of
    its first tile's corner)."""
    r0, r1, c0, c1 = view
    o_r, o_c = r0 // block * block, c0 // block * block
    h, w = -(-(r1 - o_r) // block), -(-(c1 - o_c) // block)
    R = bins(o_r, o_r + h * block, h, P.shape[0], width=block)
    C = bins(o_c, o_c + w * block, w, P.shape[1], transpose=True, width=block)
    return np.asarray(_kernel(BIN, P.format)(R=R, A=P, C=C), dtype=np.float32), (o_r, o_c)


def grid_shape(rows: int, cols: int, size: int) -> tuple[int, int]:
    """Pixels for a rows x cols region: the longer side gets min(size, its extent), the other in proportion."""
    scale = min(1.0, size / max(rows, cols))
    return max(1, min(rows, round(rows * scale))), max(1, min(cols, round(cols * scale)))


def row_col_counts(P) -> tuple[np.ndarray, np.ndarray]:
    """Nonzeros per row and per column (sum reductions in the language)."""
    return (np.asarray(_kernel(ROWS, P.format)(A=P)), np.asarray(_kernel(COLS, P.format)(A=P)))


def nm_violations(P, n: int, m: int) -> tuple[np.ndarray, int, int]:
    """The groups of ``m`` consecutive columns (per row) that hold more than ``n`` nonzeros: their (row,
    first column) coordinates (2, k), the count of violating groups and of non-empty groups."""
    groups = -(-P.shape[1] // m)
    j = np.arange(P.shape[1])
    Cm = sd.asformat(sp.csr_array((np.ones(len(j), np.float32), (j, j // m)), shape=(P.shape[1], groups)), "csr")
    G = _kernel(GROUPS, P.format, "csr")(A=P, C=Cm)
    coords, vals = G.coordinates()
    bad = coords[:, vals > n]
    bad[1] *= m
    return bad, int(bad.shape[1]), int(np.count_nonzero(vals))


def points_grid(coords: np.ndarray, shape, view, grid) -> np.ndarray:
    """Counts of the points ``coords`` (2, k) per pixel of ``view`` (the binning kernel on their pattern)."""
    r0, r1, c0, c1 = view
    keep = (coords[0] >= r0) & (coords[0] < r1) & (coords[1] >= c0) & (coords[1] < c1)
    pts = coords[:, keep]
    P = sd.asformat(sp.csr_array((np.ones(pts.shape[1], np.float32), (pts[0], pts[1])), shape=shape), "csr")
    return bin_counts(P, view, grid)


# ---- bytes in each candidate format --------------------------------------------------------------------

def format_bytes(rows: int, cols: int, nnz: int, *, row_nnz=None, blocks: dict | None = None,
                 itemsize: int = 4, index: int = 4) -> dict:
    """Storage of a rows x cols pattern with ``nnz`` nonzeros in each candidate format, in bytes (int32 indices
    as sparsedsl stores them, ``itemsize``-byte values). ``blocks`` maps a block size b to the count of
    non-empty b x b blocks (bsr); ``row_nnz`` gives dcsr's non-empty rows."""
    out = {"dense": rows * cols * itemsize,
           "csr": (rows + 1) * index + nnz * (index + itemsize),
           "csc": (cols + 1) * index + nnz * (index + itemsize),
           "coo": 2 * index + 2 * nnz * index + nnz * itemsize,
           "bitmap": rows * math.ceil(cols / 32) * 4 + (rows + 1) * index + nnz * itemsize}
    if row_nnz is not None:
        nonempty = int(np.count_nonzero(row_nnz))
        out["dcsr"] = 2 * index + nonempty * index + (nonempty + 1) * index + nnz * (index + itemsize)
    for b, count in (blocks or {}).items():
        if rows % b == 0 and cols % b == 0:
            out[f"bsr({b},{b})"] = (rows // b + 1) * index + count * index + count * b * b * itemsize
    return out

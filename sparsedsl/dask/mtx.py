"""A Matrix Market coordinate file as row blocks, read in byte ranges by the workers.

This process reads only the header (banner, comments, size line). Each read task parses one byte
range of the entries (from the first line that starts in it to the line that crosses its end), and
splits its entries by row block; each row block then packs the pieces from every range. No process
holds the whole file unless the file has a single range.
"""

from __future__ import annotations

import os

import dask
import numpy as np

import sparsedsl as sd

from . import blocks

CHUNK_BYTES = 64 << 20  # one read task per 64 MiB of entries
FIELDS = {"real": np.float64, "double": np.float64, "integer": np.int64, "pattern": None}
SYMMETRIES = ("general", "symmetric", "skew-symmetric")


def read(path, nparts=None, *, chunks=None, format="csr", chunk_bytes=CHUNK_BYTES):  # noqa: A002
    from .partitioned import PartitionedTensor

    path = os.fspath(path)
    header = _header(path)
    (nrows, ncols), field, symmetry, start = header
    if chunks is not None:
        if isinstance(chunks, tuple) and chunks and isinstance(chunks[0], (tuple, list)):
            chunks = chunks[0]  # columns stay whole: row blocks
        rows = blocks.sizes_to_splits(chunks, nrows, "chunks")
    else:
        rows = blocks.even_splits(nrows, nparts or 1)
    size = os.path.getsize(path)
    ranges = [(a, min(a + chunk_bytes, size)) for a in range(start, size, chunk_bytes)] or [(start, start)]
    pieces = [dask.delayed(_read_range, pure=True, nout=len(rows) - 1)(path, a, b, field, symmetry, rows, ncols)
              for a, b in ranges]
    fmt = sd.as_format(format, 2)
    dtype = np.dtype(FIELDS[field] or np.float64)
    cells = np.empty((len(rows) - 1, 1), dtype=object)
    for r in range(len(rows) - 1):
        cells[r, 0] = dask.delayed(_pack, pure=True)([p[r] for p in pieces], (rows[r + 1] - rows[r], ncols), fmt, dtype)
    return PartitionedTensor(cells, (rows, (0, ncols)), fmt, dtype)


def _header(path):
    """((rows, cols), field, symmetry, byte offset of the first entry), or a clear error."""
    with open(path, "rb") as f:
        banner = f.readline().decode("ascii", "replace").split()
        if len(banner) != 5 or banner[0].lower() != "%%matrixmarket":
            raise ValueError(f"{path} is not a Matrix Market file (its first line is not '%%MatrixMarket ...')")
        obj, layout, field, symmetry = (w.lower() for w in banner[1:])
        if obj != "matrix" or layout != "coordinate":
            raise ValueError(f"{path}: only 'matrix coordinate' files are read in chunks; this one is "
                             f"'{obj} {layout}'. Read it with sparsedsl.io.mmread and partition the tensor")
        if field not in FIELDS or symmetry not in SYMMETRIES:
            raise ValueError(f"{path}: field '{field}' / symmetry '{symmetry}' is not supported (fields "
                             f"{', '.join(FIELDS)}; symmetries {', '.join(SYMMETRIES)})")
        line = f.readline()
        while line.startswith(b"%") or not line.strip():
            line = f.readline()
        nrows, ncols, _ = (int(w) for w in line.split())
        return (nrows, ncols), field, symmetry, f.tell()


def _read_range(path, start, end, field, symmetry, rows, ncols):
    """The entries of the lines that start in [start, end), split by row block: one (coords, values)
    per block, coordinates relative to the block."""
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()  # the line that started before ``start`` belongs to the previous range
        text = f.read(max(0, end - f.tell()))
        if text and not text.endswith(b"\n"):
            text += f.readline()
    width = 2 if field == "pattern" else 3
    numbers = np.array(text.split(), dtype=np.float64) if text.strip() else np.zeros(0)
    if numbers.size % width:
        raise ValueError(f"{path}: bytes {start}-{end} hold {numbers.size} numbers, not {width} per entry")
    numbers = numbers.reshape(-1, width)
    r, c = numbers[:, 0].astype(np.int64) - 1, numbers[:, 1].astype(np.int64) - 1
    v = np.ones(len(r)) if field == "pattern" else numbers[:, 2].astype(FIELDS[field])
    if symmetry != "general":
        off = r != c
        sign = -1 if symmetry == "skew-symmetric" else 1
        r, c, v = np.concatenate([r, c[off]]), np.concatenate([c, r[off]]), np.concatenate([v, sign * v[off]])
    order = np.argsort(r, kind="stable")
    r, c, v = r[order], c[order], v[order]
    cuts = np.searchsorted(r, rows)
    return tuple((np.vstack([r[a:b] - rows[k], c[a:b]]), v[a:b]) for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])))


def _pack(pieces, shape, fmt, dtype):
    coords = np.concatenate([p[0] for p in pieces], axis=1)
    values = np.concatenate([p[1] for p in pieces]).astype(dtype)
    return sd.from_coordinates(coords, values, shape, fmt)

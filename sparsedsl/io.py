"""Reading and writing SparseTensors: Matrix Market (through scipy.io) and ``.npz``.

``save_npz`` stores a tensor exactly as it is held — the format, the shape, every level's arrays
with their dtypes and the values — so ``load_npz`` gives back the same storage, validated again
on load (a file is input like any other). ``load_npz`` also reads files written by
``scipy.sparse.save_npz``.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.io
import scipy.sparse as sp

from .errors import FormatError
from .lang.formats import as_format
from .tensor import SparseTensor, asformat

NPZ_VERSION = 1  # stored as "sparsedsl_npz"; bumped if the layout below changes


def mmread(path, *, format="csr") -> SparseTensor:  # noqa: A002
    """A Matrix Market file (``.mtx``, coordinate or array; gzip/bz2 too) as a SparseTensor, csr by
    default. Pattern files give float64 ones; complex files are refused (no complex dtype here)."""
    m = scipy.io.mmread(os.fspath(path))
    return asformat(m if sp.issparse(m) else np.asarray(m), format)


def mmwrite(path, A, *, comment: str = "") -> None:
    """Write a 2-D tensor (SparseTensor, scipy.sparse or numpy) as a Matrix Market coordinate file.
    Bool values are written as integers 0/1 (Matrix Market has no bool field)."""
    A = A if isinstance(A, SparseTensor) else asformat(A, "csr")
    if A.ndim != 2:
        raise FormatError(f"Matrix Market holds matrices; this tensor is {A.ndim}-D with shape {A.shape}")
    m = sp.coo_array(A.to("cpu").to_scipy())
    if m.dtype == np.bool_:
        m = m.astype(np.int64)
    scipy.io.mmwrite(os.fspath(path), m, comment=comment)


def save_npz(path, A: SparseTensor, *, compressed: bool = True) -> None:
    """Store ``A`` exactly (format, shape, level arrays, values) in a ``.npz`` file (numpy appends
    ``.npz`` to a name without it, as scipy.sparse.save_npz does)."""
    if not isinstance(A, SparseTensor):
        raise FormatError(f"save_npz() stores a SparseTensor, got {type(A).__name__}; convert it with "
                          f"sd.asformat(x, format) first")
    A = A.to("cpu")
    name = str(A.format)
    spelling = name if _parses_to(name, A.format) else A.format.spelling()
    arrays = {"sparsedsl_npz": np.array(NPZ_VERSION), "format": np.array(spelling),
              "shape": np.array(A.shape, dtype=np.int64), "values": A.values}
    for k, level in enumerate(A.levels):
        for key, arr in level.items():
            arrays[f"level{k}_{key}"] = arr
    (np.savez_compressed if compressed else np.savez)(path, **arrays)


def load_npz(path) -> SparseTensor:
    """A SparseTensor from a file of ``save_npz`` (or ``scipy.sparse.save_npz``), validated."""
    with np.load(path, allow_pickle=False) as f:
        files = dict(f.items())
    if "sparsedsl_npz" not in files:
        if {"format", "shape", "data"} <= files.keys():  # scipy.sparse.save_npz
            m = sp.load_npz(path)
            return asformat(m, "csr" if m.ndim == 2 else "sparse")
        raise FormatError(f"{os.fspath(path)} was not written by sparsedsl.io.save_npz or scipy.sparse.save_npz")
    version = int(files.pop("sparsedsl_npz"))
    if version != NPZ_VERSION:
        raise FormatError(f"{os.fspath(path)} has sparsedsl npz layout {version}; this version reads {NPZ_VERSION}")
    missing = {"format", "shape", "values"} - files.keys()
    if missing:
        raise FormatError(f"{os.fspath(path)} lacks the array(s) {', '.join(sorted(missing))}")
    shape = tuple(int(s) for s in files.pop("shape").reshape(-1))
    fmt = as_format(str(files.pop("format")), len(shape))
    values = files.pop("values")
    levels = [{} for _ in fmt.levels]
    for key, arr in files.items():
        head, _, name = key.partition("_")
        k = int(head[5:]) if head.startswith("level") and head[5:].isdigit() else -1
        if not 0 <= k < len(levels) or not name:
            raise FormatError(f"{os.fspath(path)}: unexpected array {key!r} for format {fmt} "
                              f"({len(levels)} levels)")
        levels[k][name] = arr
    try:
        return SparseTensor(fmt, shape, levels, values)  # validates: the file is input like any other
    except KeyError as exc:
        raise FormatError(f"{os.fspath(path)}: a level of format {fmt} lacks its array {exc}") from None


def _parses_to(text: str, fmt) -> bool:
    try:
        return as_format(text, fmt.ndim) == fmt
    except FormatError:
        return False

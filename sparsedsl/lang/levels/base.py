"""What every level type provides: properties, storage checks, packing, unpacking and code pieces.

A level stores one coordinate of a tensor below a parent position. The lowering never asks which
level type it has; it asks for capabilities (TACO's mode formats, Chou et al., "Format Abstraction
for Sparse Tensor Algebra Compilers", 2018):

- ``full``: every coordinate is present (the level can be located, no merge needed);
- ``unique``: a coordinate occurs at most once below a parent; a non-unique level hands its child
  a *segment* of positions that share a coordinate (COO);
- ``locate``: find a coordinate's position in O(1) (dense levels);
- iteration in two forms: a ``for`` loop (one operand drives) and a merge cursor (several operands
  co-iterate: init / valid / coord / pos / advance).

Code pieces are loop-IR statements (``sparsedsl.lang.loopir``) over expressions in a small
Python-syntax subset that every backend can render.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ...errors import FormatError


def array_module(a):
    """numpy, or cupy for a cupy array: ``pack`` runs where the entries are (a GPU kernel's sparse
    output is packed on the device). Found from the array, so the language imports no backend."""
    if type(a).__module__.split(".")[0] == "cupy":
        return sys.modules["cupy"]
    return np


@dataclass(frozen=True)
class Parent:
    """How a level is reached: one parent position ``pos``, or a segment ``[lo, hi)`` of equal ones."""

    pos: str | None = None
    lo: str | None = None
    hi: str | None = None

    @property
    def is_segment(self) -> bool:
        return self.pos is None


@dataclass(frozen=True)
class Cursor:
    """A merge cursor's code: statements to start, a validity test, the coordinate and position."""

    init: list
    valid: str
    coord: str
    pos: str
    advance: list
    child: Parent


class LevelType:
    """Base class of a level type; subclasses are frozen dataclasses (hashable, cache keys)."""

    full = False
    unique = True
    locatable = False
    takes_segment = False  # reached from a non-unique parent (singleton)
    bounded = False  # holds only some patterns (nm: at most N of every M), so cannot take any result
    array_names: tuple[str, ...] = ()

    # ---- storage --------------------------------------------------------------------------
    def npositions(self, arrays: dict, nparents: int, extent: int) -> int:
        raise NotImplementedError

    def validate(self, arrays: dict, nparents: int, extent: int, where: str) -> None:
        raise NotImplementedError

    def pack(self, parent: np.ndarray, coord: np.ndarray, nparents: int, extent: int):
        """Store entries sorted by (parent, coord); return (arrays, child position per entry, npositions).
        numpy or cupy arrays (``array_module``): the arrays returned live where the entries do."""
        raise NotImplementedError

    def unpack(self, parents: np.ndarray, arrays: dict, nparents: int, extent: int):
        """Expand the given parent positions; return (index into ``parents``, coord, child position)."""
        raise NotImplementedError

    def nbytes(self, arrays: dict) -> int:
        return sum(a.nbytes for a in arrays.values())

    # ---- code -----------------------------------------------------------------------------
    def child(self, pos: str) -> Parent:
        """How this level's child is reached from position ``pos`` (a segment when not unique)."""
        return Parent(pos=pos) if self.unique else Parent(lo=pos, hi=f"{pos}_end")

    def loop(self, names: dict, parent: Parent, extent: str, coord: str, pos: str, body: list) -> list:
        """A ``for``-style traversal of the coordinates below ``parent``."""
        raise NotImplementedError

    def cursor(self, names: dict, parent: Parent, extent: str, tag: str) -> Cursor:
        raise NotImplementedError

    def locate(self, names: dict, parent: Parent, extent: str, coord: str) -> str:
        raise NotImplementedError(f"{self} cannot locate a coordinate")

    def spelling(self) -> str:
        raise NotImplementedError


# ---- shared checks used by several level types ----------------------------------------------


def check_index_array(arrays: dict, key: str, where: str, length: int | None = None) -> np.ndarray:
    if key not in arrays:
        raise FormatError(f"{where}: the '{key}' array is missing")
    a = arrays[key]
    if not isinstance(a, np.ndarray) or a.ndim != 1:
        raise FormatError(f"{where}: '{key}' must be a 1-D numpy array, got {type(a).__name__}")
    if a.dtype.kind not in "iu":
        raise FormatError(f"{where}: '{key}' must hold integers, got dtype {a.dtype}")
    if length is not None and len(a) != length:
        raise FormatError(f"{where}: '{key}' must have length {length}, got {len(a)}")
    return a


def check_pos(pos: np.ndarray, nparents: int, where: str) -> None:
    if len(pos) != nparents + 1:
        raise FormatError(f"{where}: 'pos' must have length {nparents + 1} (parents + 1), got {len(pos)}")
    if pos[0] != 0:
        raise FormatError(f"{where}: pos[0] must be 0, got {pos[0]}")
    bad = np.flatnonzero(pos[1:] < pos[:-1])
    if len(bad):
        k = int(bad[0])
        raise FormatError(f"{where}: pos must not decrease; pos[{k + 1}] = {pos[k + 1]} < pos[{k}] = {pos[k]}")


def check_coords(crd: np.ndarray, extent: int, where: str, mask=None) -> None:
    sel = crd if mask is None else crd[mask]
    if len(sel) == 0:
        return
    bad = np.flatnonzero((sel < 0) | (sel >= extent))
    if len(bad):
        k = int(bad[0]) if mask is None else int(np.flatnonzero(mask)[bad[0]])
        raise FormatError(f"{where}: crd[{k}] = {crd[k]} is outside [0, {extent})")


def check_sorted(crd: np.ndarray, seg_start: np.ndarray, where: str, strict: bool) -> None:
    """Coordinates must increase within each segment (``seg_start`` marks each segment's first entry)."""
    if len(crd) < 2:
        return
    step = np.diff(crd.astype(np.int64))
    bad_step = (step <= 0) if strict else (step < 0)
    bad = np.flatnonzero(bad_step & ~seg_start[1:])
    if len(bad):
        k = int(bad[0]) + 1
        what = "strictly increase (sorted, no duplicates)" if strict else "not decrease (sorted)"
        raise FormatError(f"{where}: coordinates must {what} within a segment; crd[{k}] = {crd[k]} "
                          f"follows crd[{k - 1}] = {crd[k - 1]}")


def segment_starts(pos: np.ndarray, n: int) -> np.ndarray:
    starts = np.zeros(n, dtype=bool)
    if n:
        inner = pos[:-1][pos[:-1] < n]
        starts[inner] = True
        starts[0] = True
    return starts


def ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``range(s, s + c)`` for each pair; return (owner index, value) per element."""
    counts = counts.astype(np.int64)
    owner = np.repeat(np.arange(len(counts)), counts)
    offsets = np.cumsum(counts) - counts
    values = starts.astype(np.int64)[owner] + (np.arange(int(counts.sum()), dtype=np.int64) - offsets[owner])
    return owner, values


def index_dtype(n: int):
    return np.int32 if n < 2**31 - 1 else np.int64

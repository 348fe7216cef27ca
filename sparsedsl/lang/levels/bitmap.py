"""The bitmap level: one bit per coordinate below each parent says whether it is stored; values
are packed in position order (the bitmap format of Mustafar, "Mustafar: Promoting Unstructured
Sparsity for KV Cache Pruning in LLM Inference", 2025, and of Flash-LLM's "load compressed,
compute dense" kernels, 2023).

``mask`` is uint32: each parent's row is padded to ``W = ceil(extent / 32)`` words, and coordinate
``j`` of parent ``p`` is bit ``j % 32`` (least significant first) of word ``p * W + j // 32``; the
padding bits are zero. 32-bit words because a GPU lane reads, counts (``__popc``) and scans
(``__ffs``) one in one instruction each, and rows padded to whole words so that any row can be
walked alone. ``pos[p]`` is the packed offset of parent ``p``'s first value, so rows can be walked
independently (in parallel) without counting the bits of the rows before."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from ..loopir import Assign, For, Iteration, While
from .base import Cursor, LevelType, Parent, array_module, check_index_array, check_pos, index_dtype

BITS = 32  # coordinates per mask word


def words(extent: int) -> int:
    """Mask words per parent."""
    return (extent + BITS - 1) // BITS


def popcount(a: np.ndarray) -> np.ndarray:
    """Set bits of each uint32 word (int64)."""
    a = np.ascontiguousarray(a, dtype="<u4")
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(a).astype(np.int64)
    return np.unpackbits(a.view(np.uint8).reshape(-1, 4), axis=1).sum(axis=1, dtype=np.int64)


def expand(rows: np.ndarray, extent: int) -> np.ndarray:
    """(k, W) uint32 words -> (k, extent) bool, one per coordinate."""
    k, w = rows.shape
    raw = np.ascontiguousarray(rows, dtype="<u4").view(np.uint8).reshape(k, 4 * w)
    return np.unpackbits(raw, axis=1, bitorder="little")[:, :extent].astype(bool)


@dataclass(frozen=True)
class Bitmap(LevelType):
    array_names = ("mask", "pos")

    def npositions(self, arrays, nparents, extent):
        return int(arrays["pos"][-1]) if len(arrays["pos"]) else 0

    def validate(self, arrays, nparents, extent, where):
        mask, w = arrays.get("mask"), words(extent)
        if mask is None:
            raise FormatError(f"{where}: the 'mask' array is missing")
        if not isinstance(mask, np.ndarray) or mask.ndim != 1 or mask.dtype != np.uint32:
            isarray = isinstance(mask, np.ndarray)
            got = f"a {mask.ndim}-D array of {mask.dtype}" if isarray else type(mask).__name__
            old = isarray and mask.dtype in (np.uint8, np.bool_)  # the former layout, a byte per coordinate
            raise FormatError(f"{where}: 'mask' must be a 1-D numpy array of uint32 words (coordinate j is bit "
                              f"j % 32 of word j // 32 of its row), got {got}"
                              + ("; sparsedsl.asformat(array, 'bitmap') builds one" if old else ""))
        if len(mask) != nparents * w:
            raise FormatError(f"{where}: 'mask' must have {w} uint32 words per parent (ceil({extent} / 32)), "
                              f"{nparents} x {w} = {nparents * w}, got {len(mask)}")
        if extent % BITS and nparents:
            last = mask[w - 1::w]
            bad = np.flatnonzero(last >> np.uint32(extent % BITS))
            if len(bad):
                p = int(bad[0])
                k = p * w + w - 1
                extra = int(last[p]) >> (extent % BITS)
                c = (w - 1) * BITS + extent % BITS + ((extra & -extra).bit_length() - 1)
                raise FormatError(f"{where}: mask[{k}] = {hex(int(mask[k]))} (the last word of parent {p}) sets "
                                  f"the bit of coordinate {c}, beyond the level's size {extent}; the padding "
                                  f"bits must be zero")
        pos = check_index_array(arrays, "pos", where)
        check_pos(pos, nparents, where)
        counts = popcount(mask).reshape(nparents, w).sum(axis=1) if nparents else np.zeros(0, np.int64)
        bad = np.flatnonzero(np.diff(pos.astype(np.int64)) != counts)
        if len(bad):
            k = int(bad[0])
            raise FormatError(f"{where}: the mask of parent {k} holds {counts[k]} entries but pos gives it "
                              f"{pos[k + 1] - pos[k]} values; bitmap and value count disagree")

    def pack(self, parent, coord, nparents, extent):
        xp = array_module(coord)
        n, w = len(coord), words(extent)
        new = xp.ones(n, dtype=bool)
        if n:
            new[1:] = (parent[1:] != parent[:-1]) | (coord[1:] != coord[:-1])
        kept, c = parent[new].astype(np.int64), coord[new].astype(np.int64)
        # distinct coordinates: a word's bits add up to their OR (float64 sums of < 2^33 are exact)
        bits = xp.left_shift(xp.int64(1), c % BITS).astype(np.float64)
        mask = xp.bincount(kept * w + c // BITS, weights=bits, minlength=nparents * w).astype(np.uint32)
        pos = xp.zeros(nparents + 1, dtype=np.int64)
        pos[1:] = xp.cumsum(xp.bincount(kept, minlength=nparents))
        child = xp.cumsum(new) - 1
        return {"mask": mask, "pos": pos.astype(index_dtype(max(int(pos[-1]), len(mask))))}, child, int(new.sum())

    def unpack(self, parents, arrays, nparents, extent):
        rows = expand(arrays["mask"].reshape(nparents, words(extent))[parents], extent)
        owner, coord = np.nonzero(rows)
        packed = arrays["pos"][parents][owner].astype(np.int64)
        rank = np.cumsum(rows, axis=1, dtype=np.int64)[owner, coord] - 1 if len(owner) else owner
        return owner, coord.astype(np.int64), packed + rank

    def loop(self, names, parent, extent, coord, pos, body):
        # a word at a time, a set bit at a time: the cost follows the stored entries, and the one
        # data-dependent branch (the word's last bit) mispredicts once per word, not once per entry
        p, mask = parent.pos, names["mask"]
        nw = f"(({extent} + {BITS - 1}) // {BITS})"
        w, b = f"{pos}_w", f"{pos}_b"
        base = "" if p == "0" else f"{p} * {nw} + "
        walk = Iteration("bitmap_words", (("mask", mask), ("word0", base[:-3] if base else "0"),
                                           ("extent", str(extent)), ("bits", BITS), ("position", pos),
                                           ("coordinate", coord), ("values0", f"{names['pos']}[{p}]"),
                                           ("values1", f"{names['pos']}[{p} + 1]")), own=5)
        return [
            Assign(pos, f"{names['pos']}[{p}]"),
            For(w, "0", nw, [
                Assign(b, f"{mask}[{base}{w}]"),
                While(f"{b} != 0", [
                    Assign(coord, f"{w} * {BITS} + trailing_zeros({b})"),
                    *body,
                    Assign(pos, "1", "+"),
                    Assign(b, f"{b} & ({b} - 1)"),
                ]),
            ], iteration=walk),
        ]

    def cursor(self, names, parent, extent, tag):
        # the cursor holds its word's bits not yet visited; the coordinate is the lowest of them,
        # or ``extent`` once the row is exhausted
        p, mask = parent.pos, names["mask"]
        nw = f"(({extent} + {BITS - 1}) // {BITS})"
        c, q, base, w, b = f"{tag}_c", f"{tag}_q", f"{tag}_base", f"{tag}_w", f"{tag}_b"
        seek = [
            While(f"{b} == 0 and {w} + 1 < {nw}", [Assign(w, "1", "+"), Assign(b, f"{mask}[{base} + {w}]")]),
            Assign(c, f"{w} * {BITS} + trailing_zeros({b}) if {b} != 0 else {extent}"),
        ]
        init = [Assign(base, f"{p} * {nw}"), Assign(q, f"{names['pos']}[{p}]"), Assign(w, "-1"),
                Assign(b, "0"), *seek]
        return Cursor(init=init, valid=f"{b} != 0", coord=c, pos=q,
                      advance=[Assign(b, f"{b} & ({b} - 1)"), Assign(q, "1", "+"), *seek], child=Parent(pos=q))

    def spelling(self):
        return "bitmap"

"""The N:M level: the level's coordinates are cut into groups of M and each group keeps N slots
holding its stored entries' in-group indices, in increasing order. The indices are packed: one
unsigned word per group (``meta``, the narrowest of 8/16/32/64 bits that holds N fields of
``bits = M.bit_length()`` bits; slot s in bits [s·bits, (s+1)·bits)), an unused slot holding all
ones (>= M), the bits above the N fields zero. 2:4 and 2:8 take one byte per group, as the 2-bit
index pairs of 2:4 sparse tensor cores take half a byte. Values sit in every slot (zero in unused
ones), so a row of K coordinates always stores K / M * N values ("Learning N:M Fine-grained
Structured Sparse Neural Networks From Scratch", Zhou et al., 2021)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from ..loopir import Assign, For, If, Iteration, While
from .base import Cursor, LevelType, Parent, array_module, check_index_array


@dataclass(frozen=True)
class NM(LevelType):
    n: int = 2
    m: int = 4
    array_names = ("meta",)
    bounded = True

    def __post_init__(self):
        if not (isinstance(self.n, int) and isinstance(self.m, int) and 1 <= self.n <= self.m):
            raise FormatError(f"nm(n, m) needs integers 1 <= n <= m, got nm({self.n}, {self.m})")
        if self.n * self.m.bit_length() > 64:
            raise FormatError(f"nm({self.n},{self.m}): {self.n} in-group indices of {self.m.bit_length()} bits do "
                              f"not fit the 64-bit word a group keeps; use at most {64 // self.m.bit_length()} "
                              f"entries per group of {self.m}, or a bitmap level")

    @property
    def bits(self) -> int:
        """Bits of one slot's in-group index."""
        return self.m.bit_length()

    @property
    def empty(self) -> int:
        """The index an unused slot holds (all ones: never a valid index)."""
        return (1 << self.bits) - 1

    @property
    def dtype(self) -> np.dtype:
        """The word a group's indices are packed in."""
        words = [np.dtype(t) for t in (np.uint8, np.uint16, np.uint32, np.uint64)]
        return next(t for t in words if 8 * t.itemsize >= self.n * self.bits)

    def groups(self, extent, where="nm level"):
        if extent % self.m:
            raise FormatError(f"{where}: nm({self.n},{self.m}) needs the level's size ({extent}) to be a "
                              f"multiple of {self.m}; pad the tensor or choose another format")
        return extent // self.m

    def fields(self, meta: np.ndarray) -> np.ndarray:
        """The in-group indices of each group's slots: shape (len(meta), n)."""
        shifts = np.arange(self.n, dtype=np.uint64) * np.uint64(self.bits)
        return ((meta.astype(np.uint64)[:, None] >> shifts) & np.uint64(self.empty)).astype(np.int64)

    def npositions(self, arrays, nparents, extent):
        return nparents * self.groups(extent) * self.n

    def validate(self, arrays, nparents, extent, where):
        groups = self.groups(extent, where)
        meta = check_index_array(arrays, "meta", where, length=nparents * groups)
        if meta.dtype != self.dtype:
            raise FormatError(f"{where}: 'meta' of an nm({self.n},{self.m}) level must be {self.dtype} (one word per "
                              f"group, {self.n} indices of {self.bits} bits), got {meta.dtype}; build it with "
                              f"sparsedsl.asformat")
        width = self.n * self.bits
        if width < 64:
            high = np.flatnonzero(meta.astype(np.uint64) >> np.uint64(width))
            if len(high):
                raise FormatError(f"{where}: meta[{high[0]}] = {meta[high[0]]} has bits set above its {self.n} "
                                  f"fields of {self.bits} bits")
        grid = self.fields(meta)
        used = grid != self.empty
        bad = np.flatnonzero(used.ravel() & (grid.ravel() >= self.m))
        if len(bad):
            g, slot = divmod(int(bad[0]), self.n)
            raise FormatError(f"{where}: group {g} slot {slot} holds in-group index {grid[g, slot]}, not < {self.m} "
                              f"(nor {self.empty}, the empty slot)")
        if self.n > 1:
            # used slots first, strictly increasing
            after_empty = used[:, 1:] & ~used[:, :-1]
            disorder = used[:, 1:] & used[:, :-1] & (grid[:, 1:] <= grid[:, :-1])
            bad = np.flatnonzero((after_empty | disorder).ravel())
            if len(bad):
                g = int(bad[0]) // (self.n - 1)
                got = [int(v) for v in grid[g]]
                raise FormatError(f"{where}: group {g} has its in-group indices {got} out of order "
                                  f"(used slots must come first, strictly increasing)")

    def pack(self, parent, coord, nparents, extent):
        xp = array_module(coord)
        groups = self.groups(extent)
        n = len(coord)
        new = xp.ones(n, dtype=bool)
        if n:
            new[1:] = (parent[1:] != parent[:-1]) | (coord[1:] != coord[:-1])
        gid = parent.astype(np.int64) * groups + coord // self.m
        ug = gid[new]
        start = xp.searchsorted(ug, ug)  # sorted: each entry's group starts at its first occurrence
        rank = xp.arange(len(ug)) - start
        if len(rank) and int(rank.max()) >= self.n:
            k = int(xp.argmax(rank >= self.n))
            row, grp = divmod(int(ug[k]), groups)
            raise FormatError(f"nm({self.n},{self.m}): group {grp} (coordinates {grp * self.m}.."
                              f"{grp * self.m + self.m - 1}) below parent {row} holds more than {self.n} "
                              f"entries; keep at most {self.n} of every {self.m} (e.g. the largest magnitudes) first")
        grid = xp.full((nparents * groups, self.n), self.empty, dtype=np.uint64)
        grid[ug, rank] = (coord[new] % self.m).astype(np.uint64)
        meta = grid[:, 0].copy()
        for slot in range(1, self.n):  # a slot's index in its bits of the group's meta word
            meta |= grid[:, slot] << np.uint64(slot * self.bits)
        child = (ug * self.n + rank)[xp.cumsum(new) - 1]
        return {"meta": meta.astype(self.dtype)}, child, nparents * groups * self.n

    def unpack(self, parents, arrays, nparents, extent):
        groups, n = self.groups(extent), self.n
        owner = np.repeat(np.arange(len(parents)), groups)
        gid = parents.astype(np.int64)[owner] * groups + np.tile(np.arange(groups), len(parents))
        grid = self.fields(arrays["meta"][gid])
        keep = grid != self.empty
        owner = np.repeat(owner, n).reshape(-1, n)[keep]
        slot = (gid[:, None] * n + np.arange(n))[keep]
        coord = (gid % groups)[:, None] * self.m + grid
        return owner, coord[keep].astype(np.int64), slot

    def loop(self, names, parent, extent, coord, pos, body):
        p, meta = parent.pos, names["meta"]
        g, s, k = f"{pos}_g", f"{pos}_s", f"{pos}_k"
        groups = f"({extent} // {self.m})"
        first = "0" if p == "0" else f"{p} * {groups}"
        walk = Iteration("nm_groups", (("meta", meta), ("n", self.n), ("m", self.m), ("bits", self.bits),
                                        ("groups", groups), ("first", first), ("slot0", f"{first} * {self.n}"),
                                        ("position", pos), ("coordinate", coord)), own=5)
        return [For(g, "0", groups, [For(s, "0", str(self.n), [
            Assign(pos, f"({first} + {g}) * {self.n} + {s}"),
            Assign(k, f"({meta}[{first} + {g}] >> ({s} * {self.bits})) & {self.empty}"),
            If(f"{k} < {self.m}", [Assign(coord, f"{g} * {self.m} + {k}"), *body]),
        ])], iteration=walk)]

    def cursor(self, names, parent, extent, tag):
        q, end, meta = f"{tag}_q", f"{tag}_stop", names["meta"]
        per = f"({extent} // {self.m} * {self.n})"
        index = f"(({meta}[{q} // {self.n}] >> ({q} % {self.n} * {self.bits})) & {self.empty})"
        skip = While(f"{q} < {end} and {index} == {self.empty}", [Assign(q, "1", "+")])
        init = [Assign(q, f"{parent.pos} * {per}"), Assign(end, f"{q} + {per}"), skip]
        coord = f"(({q} - {end} + {per}) // {self.n} * {self.m} + {index})"
        return Cursor(init=init, valid=f"{q} < {end}", coord=coord, pos=q,
                      advance=[Assign(q, "1", "+"), skip], child=Parent(pos=q))

    def spelling(self):
        return f"nm({self.n},{self.m})"

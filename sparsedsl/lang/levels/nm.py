"""The N:M level: the level's coordinates are cut into groups of M and each group keeps N slots
holding its stored entries' in-group indices (uint8), in increasing order; an unused slot holds
255. Values sit in every slot (zero in unused ones), so a row of K coordinates always stores
K / M * N values: the layout of 2:4 sparse tensor cores ("Learning N:M Fine-grained Structured
Sparse Neural Networks From Scratch", Zhou et al., 2021)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from ..loopir import Assign, For, If, While
from .base import Cursor, LevelType, Parent, check_index_array

EMPTY = 255


@dataclass(frozen=True)
class NM(LevelType):
    n: int = 2
    m: int = 4
    array_names = ("crd",)

    def __post_init__(self):
        if not (isinstance(self.n, int) and isinstance(self.m, int) and 1 <= self.n <= self.m <= 254):
            raise FormatError(f"nm(n, m) needs integers 1 <= n <= m <= 254, got nm({self.n}, {self.m})")

    def groups(self, extent, where="nm level"):
        if extent % self.m:
            raise FormatError(f"{where}: nm({self.n},{self.m}) needs the level's size ({extent}) to be a "
                              f"multiple of {self.m}; pad the tensor or choose another format")
        return extent // self.m

    def npositions(self, arrays, nparents, extent):
        return nparents * self.groups(extent) * self.n

    def validate(self, arrays, nparents, extent, where):
        slots = self.groups(extent, where) * self.n
        crd = check_index_array(arrays, "crd", where, length=nparents * slots)
        if crd.dtype != np.uint8:
            raise FormatError(f"{where}: 'crd' of an nm level must be uint8, got {crd.dtype}")
        grid = crd.reshape(-1, self.n).astype(np.int16)
        used = grid != EMPTY
        bad = np.flatnonzero(used.ravel() & (grid.ravel() >= self.m))
        if len(bad):
            raise FormatError(f"{where}: crd[{bad[0]}] = {crd[bad[0]]} is not an in-group index < {self.m} "
                              f"(nor {EMPTY}, the empty slot)")
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
        groups = self.groups(extent)
        n = len(coord)
        new = np.ones(n, dtype=bool)
        if n:
            new[1:] = (parent[1:] != parent[:-1]) | (coord[1:] != coord[:-1])
        gid = parent.astype(np.int64) * groups + coord // self.m
        ug = gid[new]
        first = np.ones(len(ug), dtype=bool)
        if len(ug):
            first[1:] = ug[1:] != ug[:-1]
        start = np.maximum.accumulate(np.where(first, np.arange(len(ug)), 0)) if len(ug) else ug
        rank = np.arange(len(ug)) - start
        if len(rank) and rank.max() >= self.n:
            k = int(np.argmax(rank >= self.n))
            row, grp = divmod(int(ug[k]), groups)
            raise FormatError(f"nm({self.n},{self.m}): group {grp} (coordinates {grp * self.m}.."
                              f"{grp * self.m + self.m - 1}) below parent {row} holds more than {self.n} "
                              f"entries; keep at most {self.n} of every {self.m} (e.g. the largest magnitudes) first")
        slot = ug * self.n + rank
        crd = np.full(nparents * groups * self.n, EMPTY, dtype=np.uint8)
        crd[slot] = (coord[new] % self.m).astype(np.uint8)
        child = slot[np.cumsum(new) - 1]
        return {"crd": crd}, child, len(crd)

    def unpack(self, parents, arrays, nparents, extent):
        groups, n = self.groups(extent), self.n
        per = groups * n
        owner = np.repeat(np.arange(len(parents)), per)
        slot = parents.astype(np.int64)[owner] * per + np.tile(np.arange(per), len(parents))
        c = arrays["crd"][slot]
        keep = c != EMPTY
        slot, owner = slot[keep], owner[keep]
        coord = (slot % per) // n * self.m + c[keep]
        return owner, coord.astype(np.int64), slot

    def loop(self, names, parent, extent, coord, pos, body):
        p, crd = parent.pos, names["crd"]
        g, s, k = f"{pos}_g", f"{pos}_s", f"{pos}_k"
        groups = f"({extent} // {self.m})"
        first = "0" if p == "0" else f"{p} * {groups} * {self.n}"
        return [For(g, "0", groups, [For(s, "0", str(self.n), [
            Assign(pos, f"{first} + {g} * {self.n} + {s}"),
            Assign(k, f"{crd}[{pos}]"),
            If(f"{k} < {self.m}", [Assign(coord, f"{g} * {self.m} + {k}"), *body]),
        ])])]

    def cursor(self, names, parent, extent, tag):
        q, end, crd = f"{tag}_q", f"{tag}_stop", names["crd"]
        per = f"({extent} // {self.m} * {self.n})"
        skip = While(f"{q} < {end} and {crd}[{q}] == {EMPTY}", [Assign(q, "1", "+")])
        init = [Assign(q, f"{parent.pos} * {per}"), Assign(end, f"{q} + {per}"), skip]
        coord = f"(({q} - {end} + {per}) // {self.n} * {self.m} + {crd}[{q}])"
        return Cursor(init=init, valid=f"{q} < {end}", coord=coord, pos=q,
                      advance=[Assign(q, "1", "+"), skip], child=Parent(pos=q))

    def spelling(self):
        return f"nm({self.n},{self.m})"

"""The compressed level (CSR's column level): ``pos[p]:pos[p+1]`` delimits the entries below parent
``p`` and ``crd`` holds their sorted coordinates. A non-unique compressed level (COO's first level)
keeps one entry per stored element and hands its child a segment of equal coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..loopir import Assign, For, Iteration, While
from .base import (
    Cursor,
    LevelType,
    Parent,
    array_module,
    check_coords,
    check_index_array,
    check_pos,
    check_sorted,
    index_dtype,
    ranges,
    segment_starts,
)


@dataclass(frozen=True)
class Compressed(LevelType):
    unique: bool = True
    array_names = ("pos", "crd")

    def npositions(self, arrays, nparents, extent):
        return int(arrays["pos"][-1]) if len(arrays["pos"]) else 0

    def validate(self, arrays, nparents, extent, where):
        pos = check_index_array(arrays, "pos", where)
        check_pos(pos, nparents, where)
        crd = check_index_array(arrays, "crd", where, length=int(pos[-1]))
        check_coords(crd, extent, where)
        check_sorted(crd, segment_starts(pos, len(crd)), where, strict=self.unique)

    def pack(self, parent, coord, nparents, extent):
        xp = array_module(coord)
        n = len(coord)
        if self.unique:
            new = xp.ones(n, dtype=bool)
            if n:
                new[1:] = (parent[1:] != parent[:-1]) | (coord[1:] != coord[:-1])
            child = xp.cumsum(new) - 1
            kept_parent, crd = parent[new], coord[new]
        else:
            child = xp.arange(n, dtype=np.int64)
            kept_parent, crd = parent, coord
        pos = xp.zeros(nparents + 1, dtype=np.int64)
        pos[1:] = xp.cumsum(xp.bincount(kept_parent, minlength=nparents))
        idx = index_dtype(max(extent, len(crd)))
        return {"pos": pos.astype(idx), "crd": crd.astype(idx)}, child, len(crd)

    def unpack(self, parents, arrays, nparents, extent):
        pos = arrays["pos"]
        owner, child = ranges(pos[parents], pos[parents + 1] - pos[parents])
        return owner, arrays["crd"][child].astype(np.int64), child

    def loop(self, names, parent, extent, coord, pos, body):
        p = parent.pos
        if self.unique:
            walk = Iteration("segment", (("crd", names["crd"]), ("start", f"{names['pos']}[{p}]"),
                                         ("stop", f"{names['pos']}[{p} + 1]"), ("position", pos),
                                         ("coordinate", coord)), own=1)
            return [For(pos, f"{names['pos']}[{p}]", f"{names['pos']}[{p} + 1]",
                        [Assign(coord, f"{names['crd']}[{pos}]"), *body], iteration=walk)]
        # non-unique: walk segments of equal coordinates; the child sees [pos, pos_end)
        end, seg = f"{pos}_stop", f"{pos}_end"
        crd = names["crd"]
        return [
            Assign(pos, f"{names['pos']}[{p}]"),
            Assign(end, f"{names['pos']}[{p} + 1]"),
            While(f"{pos} < {end}", [
                Assign(coord, f"{crd}[{pos}]"),
                Assign(seg, f"{pos} + 1"),
                While(f"{seg} < {end} and {crd}[{seg}] == {coord}", [Assign(seg, "1", "+")]),
                *body,
                Assign(pos, seg),
            ]),
        ]

    def cursor(self, names, parent, extent, tag):
        q, end, crd = f"{tag}_q", f"{tag}_stop", names["crd"]
        seg = f"{q}_end"
        init = [Assign(q, f"{names['pos']}[{parent.pos}]"), Assign(end, f"{names['pos']}[{parent.pos} + 1]")]
        if self.unique:
            return Cursor(init=init, valid=f"{q} < {end}", coord=f"{crd}[{q}]", pos=q,
                          advance=[Assign(q, "1", "+")], child=Parent(pos=q))
        scan = [Assign(seg, f"{q} + 1"),
                While(f"{seg} < {end} and {crd}[{seg}] == {crd}[{q}]", [Assign(seg, "1", "+")])]
        return Cursor(init=init + scan, valid=f"{q} < {end}", coord=f"{crd}[{q}]", pos=q,
                      advance=[Assign(q, seg), *scan], child=Parent(lo=q, hi=seg))

    def spelling(self):
        return "compressed" if self.unique else "compressed(nonunique)"

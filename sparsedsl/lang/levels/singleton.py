"""The singleton level (COO's trailing levels): one coordinate per parent position, no ``pos``.

It is reached from a non-unique parent's segment ``[lo, hi)``; a non-unique singleton in turn
hands its child segments of equal coordinates (3-D COO's middle level)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from ..loopir import Assign, For, Iteration, While
from .base import Cursor, LevelType, Parent, array_module, check_coords, check_index_array, index_dtype


@dataclass(frozen=True)
class Singleton(LevelType):
    unique: bool = True
    takes_segment = True
    array_names = ("crd",)

    def npositions(self, arrays, nparents, extent):
        return nparents

    def validate(self, arrays, nparents, extent, where):
        crd = check_index_array(arrays, "crd", where, length=nparents)
        check_coords(crd, extent, where)
        # ordering within a parent segment is checked by the tensor, which knows the segments

    def pack(self, parent, coord, nparents, extent):
        xp = array_module(coord)
        if len(parent) != nparents or (len(parent) and bool(xp.any(parent != xp.arange(len(parent))))):
            raise FormatError("a singleton level must follow a non-unique level (one entry per parent "
                              "position), as in coo: (i: compressed(nonunique), j: singleton)")
        return {"crd": coord.astype(index_dtype(extent))}, xp.arange(len(coord), dtype=np.int64), nparents

    def unpack(self, parents, arrays, nparents, extent):
        return np.arange(len(parents)), arrays["crd"][parents].astype(np.int64), parents.astype(np.int64)

    def _segment(self, parent):
        return (parent.lo, parent.hi) if parent.is_segment else (parent.pos, f"{parent.pos} + 1")

    def loop(self, names, parent, extent, coord, pos, body):
        lo, hi = self._segment(parent)
        crd = names["crd"]
        if self.unique:
            walk = Iteration("segment", (("crd", crd), ("start", lo), ("stop", hi), ("position", pos),
                                         ("coordinate", coord)), own=1)
            return [For(pos, lo, hi, [Assign(coord, f"{crd}[{pos}]"), *body], iteration=walk)]
        seg = f"{pos}_end"
        return [
            Assign(pos, lo),
            While(f"{pos} < {hi}", [
                Assign(coord, f"{crd}[{pos}]"),
                Assign(seg, f"{pos} + 1"),
                While(f"{seg} < {hi} and {crd}[{seg}] == {coord}", [Assign(seg, "1", "+")]),
                *body,
                Assign(pos, seg),
            ]),
        ]

    def cursor(self, names, parent, extent, tag):
        lo, hi = self._segment(parent)
        q, end, crd = f"{tag}_q", f"{tag}_stop", names["crd"]
        seg = f"{q}_end"
        init = [Assign(q, lo), Assign(end, hi)]
        if self.unique:
            return Cursor(init=init, valid=f"{q} < {end}", coord=f"{crd}[{q}]", pos=q,
                          advance=[Assign(q, "1", "+")], child=Parent(pos=q))
        scan = [Assign(seg, f"{q} + 1"),
                While(f"{seg} < {end} and {crd}[{seg}] == {crd}[{q}]", [Assign(seg, "1", "+")])]
        return Cursor(init=init + scan, valid=f"{q} < {end}", coord=f"{crd}[{q}]", pos=q,
                      advance=[Assign(q, seg), *scan], child=Parent(lo=q, hi=seg))

    def spelling(self):
        return "singleton" if self.unique else "singleton(nonunique)"

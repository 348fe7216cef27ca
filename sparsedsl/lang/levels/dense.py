"""The dense level: every coordinate below a parent is stored; position = parent * extent + coord."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..loopir import Assign, For, Iteration
from .base import Cursor, LevelType, Parent


@dataclass(frozen=True)
class Dense(LevelType):
    full = True
    locatable = True

    def npositions(self, arrays, nparents, extent):
        return nparents * extent

    def validate(self, arrays, nparents, extent, where):
        pass

    def pack(self, parent, coord, nparents, extent):
        return {}, parent.astype(np.int64) * extent + coord, nparents * extent  # (numpy or cupy)

    def unpack(self, parents, arrays, nparents, extent):
        owner = np.repeat(np.arange(len(parents)), extent)
        coord = np.tile(np.arange(extent, dtype=np.int64), len(parents))
        return owner, coord, parents.astype(np.int64)[owner] * extent + coord

    def loop(self, names, parent, extent, coord, pos, body):
        walk = Iteration("range", (("extent", str(extent)), ("position", pos), ("coordinate", coord),
                                    ("located", self.locate(names, parent, extent, coord))), own=1)
        return [For(coord, "0", extent, [Assign(pos, self.locate(names, parent, extent, coord)), *body],
                    iteration=walk)]

    def cursor(self, names, parent, extent, tag):
        c = f"{tag}_c"
        return Cursor(init=[Assign(c, "0")], valid=f"{c} < {extent}", coord=c,
                      pos=self.locate(names, parent, extent, c), advance=[Assign(c, "1", "+")],
                      child=Parent(pos=self.locate(names, parent, extent, c)))

    def locate(self, names, parent, extent, coord):
        return coord if parent.pos == "0" else f"{parent.pos} * {extent} + {coord}"

    def spelling(self):
        return "dense"

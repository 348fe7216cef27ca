"""The bitmap level: one byte per coordinate below each parent says whether it is stored; values
are packed in position order (as the bitmap KV cache of Mustafar, "Mustafar: Promoting
Unstructured Sparsity for KV Cache Pruning in LLM Inference", 2025). ``pos[p]`` is the packed
offset of parent ``p``'s first entry, so rows can be walked independently (in parallel)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from ..loopir import Assign, For, If, While
from .base import Cursor, LevelType, Parent, check_index_array, check_pos, index_dtype


@dataclass(frozen=True)
class Bitmap(LevelType):
    array_names = ("mask", "pos")

    def npositions(self, arrays, nparents, extent):
        return int(arrays["pos"][-1]) if len(arrays["pos"]) else 0

    def validate(self, arrays, nparents, extent, where):
        mask = arrays.get("mask")
        if not isinstance(mask, np.ndarray) or mask.ndim != 1 or mask.dtype not in (np.uint8, np.bool_):
            raise FormatError(f"{where}: 'mask' must be a 1-D uint8 or bool numpy array")
        if len(mask) != nparents * extent:
            raise FormatError(f"{where}: 'mask' must have one byte per coordinate, {nparents} x {extent} = "
                              f"{nparents * extent}, got {len(mask)}")
        bad = np.flatnonzero(mask.view(np.uint8) > 1)
        if len(bad):
            raise FormatError(f"{where}: mask[{bad[0]}] = {mask[bad[0]]}; mask bytes must be 0 or 1")
        pos = check_index_array(arrays, "pos", where)
        check_pos(pos, nparents, where)
        counts = mask.reshape(nparents, extent).sum(axis=1, dtype=np.int64) if nparents else np.zeros(0)
        bad = np.flatnonzero(np.diff(pos) != counts)
        if len(bad):
            k = int(bad[0])
            raise FormatError(f"{where}: the mask of parent {k} holds {counts[k]} entries but pos gives it "
                              f"{pos[k + 1] - pos[k]} values; bitmap and value count disagree")

    def pack(self, parent, coord, nparents, extent):
        n = len(coord)
        new = np.ones(n, dtype=bool)
        if n:
            new[1:] = (parent[1:] != parent[:-1]) | (coord[1:] != coord[:-1])
        mask = np.zeros(nparents * extent, dtype=np.uint8)
        mask[parent[new].astype(np.int64) * extent + coord[new]] = 1
        pos = np.zeros(nparents + 1, dtype=np.int64)
        np.cumsum(np.bincount(parent[new], minlength=nparents), out=pos[1:])
        return {"mask": mask, "pos": pos.astype(index_dtype(len(mask)))}, np.cumsum(new) - 1, int(new.sum())

    def unpack(self, parents, arrays, nparents, extent):
        rows = arrays["mask"].reshape(nparents, extent)[parents]
        owner, coord = np.nonzero(rows)
        packed = arrays["pos"][parents][owner].astype(np.int64)
        rank = np.cumsum(rows, axis=1, dtype=np.int64)[owner, coord] - 1 if len(owner) else owner
        return owner, coord.astype(np.int64), packed + rank

    def loop(self, names, parent, extent, coord, pos, body):
        p = parent.pos
        base = "0" if p == "0" else f"{p} * {extent}"
        if len(body) == 1 and isinstance(body[0], Assign) and body[0].op == "+":
            # a sum over the stored entries: branch-free, since a half-full mask defeats branch
            # prediction; the value is read at a position clamped into the row, and the mask selects it
            s, run, end, m = body[0], f"{pos}_r", f"{pos}_e", f"{pos}_m"
            return [
                Assign(run, f"{names['pos']}[{p}]"),
                Assign(end, f"{names['pos']}[{p} + 1]"),
                If(f"{run} < {end}", [For(coord, "0", extent, [
                    Assign(m, f"{names['mask']}[{base} + {coord}]"),
                    Assign(pos, f"min({run}, {end} - 1)"),
                    Assign(f"{pos}_v", s.value),
                    Assign(s.target, f"{pos}_v if {m} != 0 else 0", "+"),
                    Assign(run, m, "+"),
                ])]),
            ]
        return [
            Assign(pos, f"{names['pos']}[{p}]"),
            For(coord, "0", extent, [
                If(f"{names['mask']}[{base} + {coord}] != 0", [*body, Assign(pos, "1", "+")]),
            ]),
        ]

    def cursor(self, names, parent, extent, tag):
        p = parent.pos
        c, q, base, mask = f"{tag}_c", f"{tag}_q", f"{tag}_base", names["mask"]
        skip = While(f"{c} < {extent} and {mask}[{base} + {c}] == 0", [Assign(c, "1", "+")])
        init = [Assign(base, f"{p} * {extent}"), Assign(q, f"{names['pos']}[{p}]"), Assign(c, "0"), skip]
        return Cursor(init=init, valid=f"{c} < {extent}", coord=c, pos=q,
                      advance=[Assign(c, "1", "+"), Assign(q, "1", "+"), skip], child=Parent(pos=q))

    def spelling(self):
        return "bitmap"

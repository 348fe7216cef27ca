"""Sparse-output assembly and row-wise workspaces, for the lowering (``lower._Lowering`` inherits them).

A statement whose output is sparse either emits entries in the order of its outer loop, assembled in
two passes over that loop (count the entries of each iteration, prefix-sum the counts into offsets,
fill; for CSR-shaped outputs the counts are the ``pos`` array), or, when a reduction index comes
before an output index (``C[i,j] = A[i,k]*B[k,j]``), gathers each outer iteration's entries in a
workspace over the later output indices (Gustavson's row-wise SpGEMM): dense with a touched list
(ordered by a bitset on the CPU) or a hash table when too wide, flushed in coordinate order.
"""

from __future__ import annotations

from dataclasses import replace

from .loopir import Alloc, Assign, Comment, Emit, Entries, For, Output, Return, SortRange, While, map_stmts

# A dense workspace holds one slot per coordinate of the output's inner dimensions, per worker;
# wider than this, a hash table sized by the entries actually touched is used instead.
DENSE_WORKSPACE_LIMIT = 1 << 22
HASH_START = 64
_HASH = "2654435761"  # Knuth's multiplicative hash (TAOCP 6.4), in int64 arithmetic


def hash_probe(stamp, keys, cap) -> list:
    """Find key ``w``'s slot ``h`` by linear probing; a slot is free unless stamped this pass."""
    return [Assign("h", f"((w * {_HASH}) >> 16) & ({cap} - 1)"),
            While(f"{stamp}[h] == ws_gen and {keys}[h] != w", [Assign("h", f"(h + 1) & ({cap} - 1)")])]


def hash_grow(dtype: str) -> list:
    """Double the hash table, re-inserting this pass's keys (listed in ws_l)."""
    return [
        Assign("ws_cap2", "ws_cap * 2"),
        Alloc("ws_v2", "ws_cap2", dtype, None), Alloc("ws_f2", "ws_cap2", "int64", "0"),
        Alloc("ws_k2", "ws_cap2", "int64", None), Alloc("ws_l2", "ws_cap2", "int64", None),
        For("t", "0", "ws_n", [
            Assign("w", "ws_l[t]"), Assign("ws_l2[t]", "w"), *hash_probe("ws_f", "ws_k", "ws_cap"),
            Assign("g", "h"), Assign("w", "ws_k[g]"), *hash_probe("ws_f2", "ws_k2", "ws_cap2"),
            Assign("ws_f2[h]", "ws_gen"), Assign("ws_k2[h]", "w"), Assign("ws_v2[h]", "ws_v[g]"),
        ]),
        Assign("ws_v", "ws_v2"), Assign("ws_f", "ws_f2"), Assign("ws_k", "ws_k2"), Assign("ws_l", "ws_l2"),
        Assign("ws_cap", "ws_cap2"),
        Comment("the new key's slot moved: find it again"),
        Assign("w", "ws_l[ws_n - 1]"), *hash_probe("ws_f", "ws_k", "ws_cap"),
    ]


def _count_pass(stmts) -> list:
    """The counting pass: each emitted entry adds one; values and orderings are not computed."""
    def count(s):
        if isinstance(s, Emit):
            return [Assign("cnt", "1", "+")]
        if isinstance(s, SortRange) or (isinstance(s, Assign) and s.target.startswith(("ws_v", "ws_b"))):
            return []
        if isinstance(s, Alloc) and s.var.startswith("ws_v"):
            return []
        return [s]
    return map_stmts(stmts, count)


def _fill_pass(stmts, coords) -> list:
    """The filling pass: each emitted entry is written at the next offset of its outer iteration."""
    def fill(s):
        if isinstance(s, Emit):
            return ([Assign(f"out_c{d}[oq]", s.coords[d]) for d in coords]
                    + [Assign("out_v[oq]", s.value), Assign("oq", "1", "+")])
        return [s]
    return map_stmts(stmts, fill)


class Assembly:
    """The lowering's assembly and workspace methods (state: ``out_type``, ``out_vars``, ``order``,
    ``ws_vars``, ``hashed``, ``bitset``, ``assembly``, ``notes``, ``c``, ``st``)."""

    def workspace(self, dt) -> list:
        """The private arrays of a row-wise workspace over ``self.ws_vars``: dense (values, stamps, the
        touched list, on the CPU a bitset ordering them) or, when wider than DENSE_WORKSPACE_LIMIT or asked
        for, a hash table that doubles when half full."""
        size = " * ".join(v.extent() for v in self.ws_vars)
        width = 1
        for v in self.ws_vars:
            width *= v.block if v.part == "i" else self.c.extents[v.index] // (v.block if v.part else 1)
        self.hashed = self.options.get("workspace") == "hash" or (
            self.options.get("workspace") != "dense" and width > DENSE_WORKSPACE_LIMIT)
        names = ", ".join(v.index + v.part for v in self.ws_vars)
        if self.hashed:
            private = [Alloc("ws_v", str(HASH_START), str(dt), None),
                       Alloc("ws_f", str(HASH_START), "int64", "0"),
                       Alloc("ws_k", str(HASH_START), "int64", None),
                       Alloc("ws_l", str(HASH_START), "int64", None),
                       Assign("ws_cap", str(HASH_START)), Assign("ws_gen", "0")]
            self.notes.append(f"workspace: hash table over {names} (open addressing, doubles when half "
                              f"full; row-wise, Gustavson)")
        else:
            private = [Alloc("ws_v", size, str(dt), None), Alloc("ws_f", size, "int64", "0"),
                       Alloc("ws_l", size, "int64", None), Assign("ws_gen", "0")]
            self.notes.append(f"workspace: dense over {names} (row-wise, Gustavson)")
            if self.bitset:
                private.append(Alloc("ws_b", f"({size}) // 64 + 1", "int64", "0"))
                self.notes.append("workspace order: a bitset of the touched coordinates, scanned between "
                                  "the least and greatest (no comparison sort)")
        return private

    def direct_csr(self, top: For) -> bool:
        """The output is CSR-shaped and rows come in order: counts per row are its ``pos``."""
        from .levels import Compressed, Dense

        lv = self.out_type.format.levels
        return (len(lv) == 2 and isinstance(lv[0].type, Dense) and isinstance(lv[1].type, Compressed)
                and lv[1].type.unique and not self.out_type.format.blocks and self.sorted_out()
                and top.var == f"v_{self.out_vars[lv[0].dim]}" and top.start == "0")

    def sorted_out(self) -> bool:
        fmt = self.out_type.format
        out_seq = [v.index for v in self.order if v.index in self.out_vars]
        in_order = [self.out_vars[lv.dim] for lv in fmt.levels]
        return not fmt.blocks and out_seq == in_order and all(v.part == "" for v in self.order
                                                              if v.index in self.out_vars)

    def growable(self, loops: list, dt) -> tuple[list, list]:
        """Sparse-output assembly by appending: the growable entry buffers (their allocations) and
        ``loops`` with every ``Emit`` writing into them; the driver packs the entries."""
        self.assembly = "growable"
        into = Entries(tuple(f"out_c{d}" for d in range(len(self.out_vars))), "out_v", "out_n", "out_cap")
        self.output = Output(entries=into)
        buffers = [Alloc(c, into.capacity, "int64", None) for c in into.coords]
        buffers += [Alloc(into.values, into.capacity, str(dt), None), Assign(into.count, "0")]
        return buffers, map_stmts(loops, lambda x: [replace(x, into=into) if isinstance(x, Emit) else x])

    def two_phase(self, loops: list, top: For, private: list) -> list:
        """Sparse-output assembly in two passes over the outer loop: count the entries of each outer
        iteration, prefix-sum the counts into offsets, then fill. Both passes may run in parallel;
        cursors started before the outer loop (a merge it drives) are started again for the fill."""
        dt = self.out_type.dtype
        skip = self.out_type.format.levels[0].dim if self.assembly == "csr" else None
        k = loops.index(top)
        n_outer = f"({top.stop}) - ({top.start})"
        rel = f"{top.var} - ({top.start})"
        counting = replace(top, body=[Assign("cnt", "0"), *_count_pass(top.body),
                                      Assign(f"counts[{rel}]", "cnt")], private=_count_pass(private))
        coords = [d for d in range(len(self.out_vars)) if d != skip]
        filling = replace(top, body=[Assign("oq", f"offs[{rel}]"), *_fill_pass(top.body, coords)],
                          private=private)
        offsets = [Alloc("offs", "n_outer + 1", "int64", "0"),
                   For("r_", "0", "n_outer", [Assign("offs[r_ + 1]", "offs[r_] + counts[r_]")])]
        small = all(self.c.extents[n] < 2**31 for n in self.out_vars)
        crd_type = "int32" if skip is not None and small else "int64"
        outputs = [Alloc(f"out_c{d}", "offs[n_outer]", crd_type, None, written=True) for d in coords]
        outputs.append(Alloc("out_v", "offs[n_outer]", str(dt), None, written=True))
        self.output = Output(offsets="offs", coords=tuple(f"out_c{d}" for d in coords), values="out_v",
                             csr=skip is not None)
        self.notes.append("assembly: two-phase (count entries per outer iteration, prefix sum, fill)"
                          + (", counts become the CSR pos array" if skip is not None else ""))
        return (loops[:k] + [Assign("n_outer", n_outer), Alloc("counts", "n_outer", "int64", "0"), counting]
                + offsets + outputs + loops[:k] + [filling] + loops[k + 1:]
                + [Return([self.output.offsets, *self.output.coords, self.output.values])])

    def workspace_reduction(self, depth, ops) -> list:
        body = self.gen_after_switch(depth, ops)
        coords = []
        decode = [Assign("w", "ws_l[t]")]
        if len(self.ws_vars) == 1:
            decode.append(Assign(self.ws_vars[0].name, "w"))
        else:
            for v in reversed(self.ws_vars):
                decode += [Assign(v.name, f"w % {v.extent()}"), Assign("w", f"w // {v.extent()}")]
        coords = [self.coord(n) for n in self.out_vars]
        size = " * ".join(v.extent() for v in self.ws_vars)
        if self.hashed:
            flush = [SortRange("ws_l", "0", "ws_n"),
                     For("t", "0", "ws_n", [*decode, Assign("w", "ws_l[t]"), *hash_probe("ws_f", "ws_k", "ws_cap"),
                                            Emit(coords, "ws_v[h]")])]
        else:
            flush = [SortRange("ws_l", "0", "ws_n", "ws_f", "ws_gen", size, "ws_b" if self.bitset else None),
                     For("t", "0", "ws_n", decode + [Emit(coords, "ws_v[ws_l[t]]")])]
        # entries of ws_f equal to ws_gen were touched in this pass: no clearing between passes
        return [Assign("ws_gen", "1", "+"), Assign("ws_n", "0")] + body + flush

"""Loop IR as CUDA C++: the renderer of the CUDA backend (``runtime`` runs it).

Expressions are parsed with ``ast`` and printed as C with inferred types (numpy promotion, Python
literals weak as in NEP 50, so float32 data accumulates in float32; float16 and bfloat16 are storage
only: loads widen to float32, stores round). A function's top-level statements become *steps*
(``plan.plan_steps``): host work (scalars, allocations, prefix sums) or kernels. A parallel
``For``, cleared of dead scalars, is one kernel, rendered in one of these shapes chosen from the loop:

- a scalar reduction (``acc op= ...`` in one inner loop, then a store): ``L`` lanes per outer
  iteration stride the inner loop and combine ``acc`` with ``__shfl_down_sync`` (CSR-vector SpMV);
- ``head; for v: ...`` with independent inner iterations (an output index): one thread per
  (outer, inner) pair, the inner index fastest (SpMM);
- a reduction loop nested in sequential code (SDDMM's fill pass): ``L`` lanes run the body alike,
  split that loop and all-reduce with ``__shfl_xor_sync``; lane 0 stores; where the loop reads rows
  of dense arrays along its index (``plan.vector_accesses``), each lane takes 2 or 4
  consecutive iterations with one 16-byte load per row (chosen at launch: alignment, trip count);
- weights in ``nm(2, M)`` / ``bitmap`` times a few dense columns: the tensor-core template of
  ``templates.skinny`` (chosen at launch when its run-time conditions hold);
- either pass of a sparse output assembled row by row through a workspace (SpGEMM): the hash-table
  kernels of ``templates.spgemm`` (a warp or a block per row, rows binned by their upper bound);
- otherwise one thread per iteration over a grid-stride loop.

A serial outer loop that only adds into the output becomes parallel with ``atomicAdd``; other
serial code is one thread. Scalars that cross steps live in a device array ``sd_state``. Nothing
here needs cupy or a GPU: ``render()`` prints the source for given arguments.
"""

from __future__ import annotations

import ast as pyast

import numpy as np

from ... import templates
from ...lang import loopir as L
from .cexpr import LDCS_TYPES, PREAMBLE, CExpr, CStmts, Types, combine, ctype, kernel_name, signature
from .plan import ATOMIC_DTYPES, BLOCK, _assigned, _names, _parse, _read, _walk, plan_steps, vector_accesses
from .templates import SKINNY, SPGEMM, LoopNest, skinny, spgemm
from .templates.skinny_kernel import render_skinny
from .templates.spgemm_kernel import render_spgemm


class KernelSource:
    """One function analysed for one signature of argument types, and the C++ of its kernels."""

    def __init__(self, fn: L.Function, sig: dict):
        self.fn, self.sig = fn, sig
        arrays = {n: (d, nd) for n, (kind, d, nd) in sig.items() if kind == "array"}
        scalars = {n: d for n, (kind, d, nd) in sig.items() if kind == "scalar"}
        self.types = Types(arrays, scalars, fn.output)
        self.types.infer(fn.body)
        off = fn.hints.get("passes_off", frozenset())  # passes a schedule turned off (PASSES)
        self.steps = plan_steps(fn, scalars, off)
        out_t = self.types.arrays.get(fn.output.array, (None,))[0]
        for st in self.steps:
            if st.kind == "parallel" and st.atomic and out_t not in ATOMIC_DTYPES:
                st.kind, st.body = "serial", [st.loop]  # no atomicAdd for this dtype: one thread
            if st.kind == "parallel":  # a registered loops template (templates/), chosen by the registry
                sel = templates.select_loops(LoopNest(st.loop, self.types.arrays, fn.output), "cuda",
                                             not st.atomic and "templates" not in off)
                shape = sel.template.build(sel.match) if sel.template else None
                st.template, st.rejected = sel.template and sel.template.name, sel.rejected
                st.skinny = shape if sel.template is SKINNY else None
                st.spgemm = shape if sel.template is SPGEMM else None
                st.vector = vector_accesses(st.nested.inner, self.types.arrays) \
                    if st.nested and "vector_loads" not in off else None
        allocs = [s.alloc for s in self.steps if s.kind == "alloc"]
        allocs += [a for s in self.steps if s.kind == "parallel" for a in s.loop.private if isinstance(a, L.Alloc)]
        self.allocs = list({a.var: a for a in reversed(allocs)}.values())[::-1]  # one parameter per name
        self.emits = any(isinstance(x, L.Emit) for x in _walk(fn.body))
        self.written = {_parse(x.target).value.id for x in _walk(fn.body) if isinstance(x, L.Assign)
                        and isinstance(_parse(x.target), pyast.Subscript)} | \
                       {x.array for x in _walk(fn.body) if isinstance(x, L.SortRange)} | \
                       ({*fn.output.entries.coords, fn.output.entries.values} if fn.output.entries else set())
        self.state = self.state_vars()
        shapes = {n: [f"{n}_sh{d}" for d in range(1, nd)] for n, (_, nd) in arrays.items() if nd > 1}
        self.cexpr = CExpr(self.types, shapes)
        self.sources: dict = {}  # (step, lanes) -> the source of a kernel rendered

    def describe(self) -> str:
        """Each step: what runs where, in which shape and launch configuration (``BLOCK`` threads a block
        unless a template says otherwise; after a call, the last launch's), the template the registry
        chose for a parallel loop and why the others did not fit; then the CUDA source of each kernel
        rendered (``self.sources``: after a call the variants it launched, render-only all of them)."""
        parts = []
        for k, step in enumerate(self.steps):
            if step.kind == "serial":
                parts.append(f"step {k}: serial kernel, 1 thread (slow on a GPU)")
            elif step.kind == "host":
                parts.append(f"step {k}: {step.assign.target} = {step.assign.value} on the host")
            elif step.kind == "parallel":
                trip = f"({step.loop.stop}) - ({step.loop.start})"
                how = "one thread per iteration, atomicAdd into the output" if step.atomic else \
                    "lanes per iteration split its inner reduction (xor shuffles; 16-byte loads of the rows it " \
                    "reads when aligned), lane 0 stores; 1..32 lanes chosen per call from the average work" if \
                    getattr(step, "nested", None) is not None else \
                    "1..32 threads per iteration chosen per call from the average work (shuffle reduction)" \
                    if step.reduction else \
                    f"one thread per ({step.loop.var}, {step.collapse.var}) pair" if step.collapse else \
                    "one thread per iteration (grid-stride)"
                if step.collapse is not None and step.reduction is None:
                    trip = f"{trip} * (({step.collapse.stop}) - ({step.collapse.start}))"
                config = f"{BLOCK} threads a block, ceil(trip * lanes / {BLOCK}) blocks for trip = {trip}"
                if getattr(step, "spgemm", None) is not None:
                    slots = spgemm.table_slots(spgemm.BLOCK_BINS - 1)
                    how = ("a row's products in a hash table in shared memory (template cuda.spgemm): a warp per row, "
                           f"a block per row for longer rows (tables of up to {slots:,} slots in dynamic shared "
                           "memory, read back in column order through a bitmap of the columns), for the longest "
                           "a bitmap of the columns in shared memory over dense values in global memory")
                    got = getattr(step, "launched", None)
                    config = (f"last launch {got[0]} rows, {got[1]} on blocks, {got[2]} on global workspaces "
                              f"({got[3]} blocks)" if got and len(got) == 4 else
                              f"{spgemm.WARPS} warps a block over the rows, then the block bins' and global kernels")
                elif getattr(step, "skinny", None) is not None:
                    mtiles, minblocks, slots, warps = skinny.config(step.skinny)
                    how += (f"; or the skinny {step.skinny.kind} template (cuda.skinny: tensor-core mma, a warp per "
                            f"{16 * mtiles} rows, {slots} slots a lane, split-K over up to {warps or 8} warps, at "
                            f"least {minblocks} blocks an SM) when the columns are 16..64 and aligned")
                got = getattr(step, "launched", None)
                if got and len(got) == 3:
                    config = f"last launch {got[0]} blocks x {got[1]} threads, {got[2]} per iteration"
                parts.append(f"step {k}: parallel loop over {step.loop.var}, {how}; {config}")
                parts += [f"  template {name} not used: {why}" for name, why in getattr(step, "rejected", ())]
            elif step.kind == "alloc":
                parts.append(f"step {k}: allocate {step.alloc.var}[{step.alloc.shape}] on the device")
            elif step.kind == "cumsum":
                parts.append(f"step {k}: prefix sum (cupy.cumsum)")
        for (k, lanes), src in sorted(self.sources.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            what = f"{lanes} thread(s) per iteration" if isinstance(lanes, int) else f"schedule {lanes}"
            parts.append(f"// ---- step {k}, {what}\n" + src.replace(PREAMBLE, ""))
        return "\n".join(parts)

    # -- which scalars cross steps
    def state_vars(self) -> list:
        uses = []
        for s in self.steps:
            if s.kind == "serial":
                uses.append((_assigned(s.body), _read(s.body)))
            elif s.kind == "parallel":
                lp = s.loop
                uses.append((set(), (_names(lp.start) | _names(lp.stop) | _read(lp.body) | _read(lp.private))
                             - _assigned(lp.body) - _assigned(lp.private) - {lp.var}))
            elif s.kind == "alloc":
                uses.append((set(), _names(s.alloc.shape)))
            elif s.kind == "host":
                uses.append(({s.assign.target}, _names(s.assign.value)))
            elif s.kind == "cumsum":
                uses.append((set(), _names(s.loop.stop)))
            elif s.kind == "return":
                uses.append((set(), set(s.values)))
        state = set()
        for k, (w, _) in enumerate(uses):
            for j, (_, r) in enumerate(uses):
                if j != k:
                    state |= w & r
        if self.fn.output.entries is not None:
            state.add(self.fn.output.entries.count)
        # the host writes a scalar it sets into sd_state only when a kernel reads it there
        self.kernel_reads = set().union(*(r for s, (_, r) in zip(self.steps, uses) if s.kind in ("serial", "parallel")))
        return sorted(v for v in state if v in self.types.scalars and v not in self.sig)

    # -- kernel parameters, the same for every kernel of the function
    def params(self) -> list:
        out = []
        for name in self.fn.params:
            kind, dt, nd = self.sig[name]
            if kind == "array":
                const = "" if name in self.written else "const "
                out.append(f"{const}{ctype(dt)}* __restrict__ {name}")
                out += [f"long long {name}_sh{d}" for d in range(1, nd)]
            else:
                out.append(f"{ctype(dt)} {name}")
        for a in self.allocs:
            out.append(f"{ctype(a.dtype)}* __restrict__ {a.var}")
        out.append("long long* __restrict__ sd_state")
        return out

    def render(self, k: int, lanes=1) -> str:
        """Kernel ``k``: ``lanes`` threads per iteration, ("vector", lanes, width) for a split loop that
        takes ``width`` iterations per lane, or ("skinny", column tiles, warps per block, ...)."""
        step = self.steps[k]
        if isinstance(lanes, tuple) and lanes[0] == "skinny":
            return render_skinny(self, k, step.skinny, *lanes[1:])
        if isinstance(lanes, tuple) and lanes[0] == "spgemm":
            return render_spgemm(self, k, step.spgemm, *lanes[1:])
        name = kernel_name(self.fn.name, k, lanes)
        lines = [f'extern "C" __global__ void {name}(' + ", ".join(self.params()) + ") {"]
        stm = CStmts(self.types, self.cexpr, atomic=getattr(step, "atomic", False))
        if step.kind == "serial":
            self.serial(step.body, stm, lines)
        elif step.reduction is not None:
            self.lanes(step, stm, lines, lanes)
        elif step.collapse is not None:
            self.collapsed(step.loop, step.collapse, stm, lines)
        elif isinstance(lanes, tuple):
            self.nested(step, stm, lines, lanes[1], lanes[2])
        elif getattr(step, "nested", None) is not None and lanes > 1:
            self.nested(step, stm, lines, lanes)
        else:
            self.grid_stride(step.loop, stm, lines)
        lines.append("}")
        return "\n".join(lines) + "\n"

    def declare(self, names, lines, pad, skip=()):
        for v in sorted(names):
            if v in skip or v in self.sig or v in self.types.arrays:
                continue
            lines.append(f"{pad}{ctype(self.types.scalars[v])} {v};")

    def load_state(self, names, lines, pad):
        for k, v in enumerate(self.state):
            if v in names:
                t = ctype(self.types.scalars[v])
                lines.append(f"{pad}{t} {v} = sd_load<{t}>(sd_state + {k});")

    def serial(self, body, stm, lines):
        lines.append("  if (blockIdx.x != 0 || threadIdx.x != 0) return;  // one thread: serial code")
        used = _assigned(body) | _read(body)
        self.load_state(used, lines, "  ")
        self.declare(_assigned(body), lines, "  ", skip=set(self.state))
        stm.put(body, 1, lines)
        for k, v in enumerate(self.state):
            if v in _assigned(body):
                lines.append(f"  sd_store<{ctype(self.types.scalars[v])}>(sd_state + {k}, {v});")

    def prologue(self, loop, lines, stm=None):
        used = _names(loop.start) | _names(loop.stop) | _read(loop.body) | _read(loop.private)
        self.load_state(used - _assigned(loop.body) - _assigned(loop.private), lines, "  ")
        lines.append("  const long long sd_nthreads = (long long)gridDim.x * blockDim.x;")
        lines.append("  const long long sd_tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;")
        lines.append(f"  const long long sd_start = {self.cexpr(loop.start)}, sd_stop = {self.cexpr(loop.stop)};")
        for a in loop.private:  # each thread's own slice of the workspace, and its own scalars
            if isinstance(a, L.Alloc):
                lines.append(f"  {a.var} += sd_tid * (long long)({self.cexpr(a.shape)});")
        if stm is not None and loop.private:
            self.declare(_assigned(loop.private), lines, "  ")
            stm.put([a for a in loop.private if not isinstance(a, L.Alloc)], 1, lines)

    def grid_stride(self, loop, stm, lines):
        self.prologue(loop, lines, stm)
        lines.append("  for (long long sd_it = sd_start + sd_tid; sd_it < sd_stop; sd_it += sd_nthreads) {")
        # a thread's private scalars (a workspace generation) carry from one of its iterations to the next
        self.declare((_assigned(loop.body) | {loop.var}) - _assigned(loop.private), lines, "    ")
        lines.append(f"    {loop.var} = sd_it;")
        stm.put(loop.body, 2, lines)
        lines.append("  }")

    def vector_width(self, step) -> int:
        """Iterations per lane of a split loop that reads rows along its index: 16 bytes of its
        narrowest array (1 when it reads none)."""
        if not getattr(step, "vector", None):
            return 1
        return min(16 // np.dtype(self.types.arrays[name][0]).itemsize for name, _ in step.vector)

    def nested(self, step, stm, lines, lanes, width=1):
        """``lanes`` threads per outer iteration run its body alike; they split the one reduction loop
        (``step.nested``, ``width`` consecutive iterations per lane) and all-reduce acc with xor
        shuffles; only lane 0 stores."""
        loop = step.loop
        self.prologue(loop, lines)
        lines.append(f"  const int sd_lane = threadIdx.x & {lanes - 1};")
        mask = "0xffffffffu" if lanes == 32 else f"((({hex((1 << lanes) - 1)}u) << (threadIdx.x & {32 - lanes})))"
        lines.append(f"  const unsigned sd_gmask = {mask};  // this group's lanes")
        lines.append(f"  const long long sd_ngroups = sd_nthreads / {lanes};")
        lines.append(f"  for (long long sd_it = sd_start + sd_tid / {lanes}; sd_it < sd_stop; sd_it += sd_ngroups) {{")
        self.declare(_assigned(loop.body) | {loop.var}, lines, "    ")
        lines.append(f"    {loop.var} = sd_it;")
        stm.split = (step.nested, lanes, width, step.vector if width > 1 else None)
        stm.put(loop.body, 2, lines)
        lines.append("  }")

    def collapsed(self, loop, inner, stm, lines):
        """One thread per (outer, inner) iteration pair, the inner index varying fastest."""
        self.prologue(loop, lines)
        lines.append(f"  const long long sd_istart = {self.cexpr(inner.start)};")
        lines.append(f"  const long long sd_inner = {self.cexpr(inner.stop)} - sd_istart;")
        lines.append("  const long long sd_total = (sd_stop - sd_start) * sd_inner;")
        lines.append("  for (long long sd_it = sd_tid; sd_it < sd_total; sd_it += sd_nthreads) {")
        self.declare(_assigned(loop.body) | {loop.var}, lines, "    ")
        lines.append(f"    {loop.var} = sd_start + sd_it / sd_inner;")
        stm.put(loop.body[:-1], 2, lines)
        lines.append(f"    {inner.var} = sd_istart + sd_it % sd_inner;")
        stm.put(inner.body, 2, lines)
        lines.append("  }")

    def lanes(self, step, stm, lines, lanes):
        """``lanes`` threads per outer iteration; they stride the inner loop and shuffle-reduce acc."""
        loop = step.loop
        red = step.reduction
        head, inner, tail, acc, touched = red.head, red.inner, red.tail, red.acc, red.touched
        self.prologue(loop, lines)
        acc_t = self.types.scalars[acc]
        lines.append(f"  const int sd_lane = threadIdx.x & {lanes - 1};")
        lines.append(f"  const long long sd_ngroups = sd_nthreads / {lanes};")
        lines.append(f"  const long long sd_wfirst = (sd_tid / 32) * {32 // lanes};  // the same in a whole warp")
        lines.append("  for (long long sd_base = sd_start + sd_wfirst; sd_base < sd_stop; sd_base += sd_ngroups) {")
        lines.append(f"    const long long sd_it = sd_base + (threadIdx.x & 31) / {lanes};")
        lines.append("    const bool sd_active = sd_it < sd_stop;")
        self.declare(_assigned(loop.body) | {loop.var}, lines, "    ")
        lines.append(f"    {acc} = {self.cexpr(red.init, acc_t)};")
        if touched:
            lines.append(f"    {touched} = false;")
        lines.append("    if (sd_active) {")
        lines.append(f"      {loop.var} = sd_it;")
        stm.put(head, 3, lines)
        i, stop = stm.fresh("i"), stm.fresh("stop")
        self.cexpr.replace = self.streamed(inner)
        if all(self.position32(t) for t in (inner.start, inner.stop)):
            # positions read from a 32-bit level array: a 32-bit counter, one wide multiply-add per
            # address (on an H100, against it, a 64-bit counter cost 4% on banded and 12% on
            # random-column SpMV, an unsigned one 165% and 56%, a counted loop 47% and 35%); four
            # iterations unrolled, so that their loads are in flight together. No sum overflows:
            # ``compiled.widen_positions`` widens them when an array passes INT32_SAFE entries
            lines.append(f"      {{ const int {stop} = {self.cexpr(inner.stop)};")
            lines.append("#pragma unroll 4")
            lines.append(f"      for (int {i} = {self.cexpr(inner.start)} + sd_lane; {i} < {stop}; {i} += {lanes}) {{")
        else:
            lines.append(f"      {{ const long long {stop} = {self.cexpr(inner.stop)};")
            lines.append(f"      for (long long {i} = {self.cexpr(inner.start)} + sd_lane; {i} < {stop}; "
                         f"{i} += {lanes}) {{")
        lines.append(f"        {inner.var} = {i};")
        stm.put(inner.body, 4, lines)
        self.cexpr.replace = {}
        lines.append("      } }")
        lines.append("    }")
        if lanes > 1:
            shfl_t = "int" if acc_t == "bool" else ctype(acc_t)
            lines.append(f"    for (int sd_off = {lanes // 2}; sd_off > 0; sd_off >>= 1) {{")
            lines.append(f"      {ctype(acc_t)} sd_o = ({ctype(acc_t)})__shfl_down_sync(0xffffffffu, "
                         f"({shfl_t}){acc}, sd_off, {lanes});")
            lines.append(f"      {acc} = {combine(red.op, acc, 'sd_o')};")
            if touched:
                lines.append(f"      {touched} = {touched} || (bool)__shfl_down_sync(0xffffffffu, (int){touched}, "
                             f"sd_off, {lanes});")
            lines.append("    }")
        lines.append("    if (sd_active && sd_lane == 0) {")
        stm.put(tail, 3, lines)
        lines.append("    }")
        lines.append("  }")


    def position32(self, text: str) -> bool:
        """Whether ``text`` is an element of a 32-bit integer array of a level (a position: >= 0)."""
        e = _parse(text)
        return isinstance(e, pyast.Subscript) and isinstance(e.value, pyast.Name) and \
            self.types.arrays.get(e.value.id, (None,))[0] == "int32"

    def streamed(self, inner: L.For) -> dict:
        """Reads of a lane-split loop that touch each element once per call (``a[q]`` of a read-only 1-D
        array, ``q`` the loop's position): loaded with ``__ldcs``, evict-first, so that the operand the
        loop gathers from keeps its place in L2 (H100, random-column SpMV of 8M rows: 1.75 -> 1.59 ms;
        banded unchanged)."""
        out = {}
        for x in _walk(inner.body):
            for text in (getattr(x, "value", None), getattr(x, "cond", None)):
                for e in pyast.walk(_parse(text)) if isinstance(text, str) else ():
                    if isinstance(e, pyast.Subscript) and isinstance(e.value, pyast.Name) and \
                            isinstance(e.slice, pyast.Name) and e.slice.id == inner.var:
                        name = e.value.id
                        dt, nd = self.types.arrays.get(name, (None, 0))
                        if nd == 1 and dt in LDCS_TYPES and name not in self.written:
                            out[pyast.unparse(e)] = f"__ldcs(&{name}[{inner.var}])"
        return out


# 32-bit positions up to this many entries: a 32-bit loop counter plus a stride of up to 32 lanes cannot overflow

def render(fn: L.Function, args: list) -> str:
    """Render-only (no cupy, no GPU): the CUDA source of every kernel of ``fn`` for these arguments
    (numpy arrays stand for device arrays), reductions with 1 and 32 threads per iteration."""
    return PREAMBLE + "\n" + "\n".join(rendered(fn, args).sources.values())


def rendered(fn: L.Function, args: list) -> KernelSource:
    """``fn`` analysed for these arguments' types, every kernel variant rendered into ``.sources``;
    ``.describe()`` prints the plan (steps, shapes, launch configuration, templates) and the sources."""
    named = dict(zip(fn.params, args))
    spec = KernelSource(fn, signature({n: (v[()] if isinstance(v, np.ndarray) and v.ndim == 0 else v)
                                       for n, v in named.items()}))
    for k, step in enumerate(spec.steps):
        variants = []
        if step.kind in ("serial", "parallel"):
            variants.append(1)
            if step.kind == "parallel" and (step.reduction is not None or getattr(step, "nested", None) is not None):
                variants.append(32)
                if getattr(step, "nested", None) is not None and spec.vector_width(step) > 1:
                    variants.append(("vector", 8, spec.vector_width(step)))
            if step.kind == "parallel" and step.skinny is not None:
                variants.append(("skinny", 1, 8, 1, 1, 8))
            if step.kind == "parallel" and step.spgemm is not None:
                variants += [("spgemm", mode) for mode in ("warp", "block", "global")]
        for lanes in variants:
            spec.sources[(k, lanes)] = spec.render(k, lanes)
    return spec

"""Running one rendered function on the GPU: its host steps, allocations, prefix sums and launches
(the lanes of a reduction chosen per call from its average work; the templates' launch conditions).
"""

from __future__ import annotations

import math

import numpy as np

from ...lang import loopir as L
from .cexpr import PREAMBLE, concrete, kernel_name
from .device import clusters, cupy, device_sms
from .nvrtc import WithSharedMemory, compile_kernel, dynamic_shared
from .plan import BLOCK, _assigned, _names, _parse
from .render import KernelSource
from .templates import skinny, skinny_kernel, spgemm, spgemm_kernel
from .templates.skinny import splitk_limit

_CODE: dict = {}


def _eval(text: str, ns: dict):
    """A host-side value of a generated expression (sizes, trip counts; never user text)."""
    code = _CODE.get(text)
    if code is None:
        code = _CODE[text] = compile(text, "<sparsedsl>", "eval")
    return eval(code, {"np": np}, ns)  # noqa: S307



class Specialised(KernelSource):
    """One function rendered and compiled for one signature of argument types, and run."""

    def __init__(self, fn: L.Function, sig: dict):
        super().__init__(fn, sig)
        self.sources: dict = {}  # (step index, lanes) -> source
        self.kernels: dict = {}
        self.lanes_cache: dict = {}
        self.state_buf = None
        self.known: dict = {}
        self.placeholders: dict = {}
        self.trace = None  # a list while a call's launches are recorded (Compiled's replay)

    # -- running
    def kernel(self, k: int, lanes: int = 1):
        key = (k, lanes)
        if key not in self.kernels:
            src = PREAMBLE + "\n" + self.render(k, lanes)
            self.sources[key] = src
            self.kernels[key] = compile_kernel(src, kernel_name(self.fn.name, k, lanes))
        return self.kernels[key]

    def run(self, args: dict):
        cp = cupy()
        for _ in range(2):  # a second time only when an Emit buffer overflowed (then with its exact size)
            env = dict(args)
            if self.state_buf is None:  # every state scalar is set before it is read: reused across calls
                self.state_buf = cp.zeros(max(1, len(self.state)), dtype=np.int64)
            state = self.state_buf
            result = self.run_once(env, state)
            if isinstance(result, tuple):  # a two-phase assembly's arrays (on the device; the driver packs
                return result                # them there: tensor.from_coordinates, or as CSR level arrays)
            entries = self.fn.output.entries
            if entries is None:
                return result
            n = self.host_state(state)[entries.count]
            if n <= int(args[entries.capacity]):
                break
            args = {**args, entries.capacity: np.int64(n)}
        if result is None:  # the entries, packed on the device by the driver (tensor.from_coordinates)
            result = tuple(env[buf][:n] for buf in (*entries.coords, entries.values))
        return result

    def host_state(self, state) -> dict:
        if all(v in self.known for v in self.state):
            return self.known
        raw = state.get()
        out = self.known
        for k, v in enumerate(self.state):
            if v in out:  # set on the host (its device slot may not have been written)
                continue
            t = concrete(self.types.scalars[v])
            out[v] = raw[k:k + 1].view(np.dtype(t))[0] if np.dtype(t).itemsize == 8 else \
                raw[k:k + 1].view(np.uint8)[:np.dtype(t).itemsize].view(np.dtype(t))[0]
        return out

    def host_eval(self, text: str, env: dict, state) -> int:
        names = _names(text)
        ns = {n: env[n] for n in names if n in env}
        if names & set(self.state):
            ns.update(self.known if names & set(self.state) <= set(self.known) else self.host_state(state))
        value = _eval(text, ns)
        return int(value)

    def launch_args(self, env, state):
        out = []
        for name in self.fn.params:
            kind, dt, nd = self.sig[name]
            v = env[name]
            if kind == "array":
                out.append(getattr(v, "bits", v))  # a BFloat16Array launches as its uint16 bits
                out += [np.int64(v.shape[d]) for d in range(1, nd)]
            else:
                out.append(np.dtype(concrete(dt)).type(v))
        for a in self.allocs:
            out.append(env[a.var] if a.var in env else self.unallocated(a.dtype))
        out.append(state)
        return tuple(out)

    def unallocated(self, dtype):
        """An empty device array standing for an allocation a later step makes (one per dtype)."""
        if dtype not in self.placeholders:
            self.placeholders[dtype] = cupy().empty(0, dtype=np.dtype(dtype))
        return self.placeholders[dtype]

    def run_once(self, env: dict, state):
        cp = cupy()
        sms = device_sms()
        self.known = {}  # state values the host holds (set by host steps, dropped by serial kernels)
        sizes: dict = {}  # sizes of the allocations since the last step that was not one
        for k, step in enumerate(self.steps):
            if step.kind != "alloc":
                sizes.clear()
            if step.kind == "host":
                a = step.assign
                ns = {n: env[n] for n in _names(a.value) if n in env}
                ns.update({n: self.known[n] for n in _names(a.value) if n in self.known})
                value = _eval(a.value, ns)
                if a.target in self.state:
                    t = np.dtype(concrete(self.types.scalars[a.target]))
                    self.known[a.target] = t.type(value)
                if a.target in self.state and a.target in self.kernel_reads:
                    slot = np.zeros(1, np.int64)
                    slot.view(np.uint8)[:t.itemsize] = np.array([value], dtype=t).view(np.uint8)
                    state[self.state.index(a.target):self.state.index(a.target) + 1] = cp.asarray(slot)
                env[a.target] = value
            elif step.kind == "alloc":
                a = step.alloc
                if a.shape not in sizes:  # a two-phase output's arrays share one size: one device read (a sync)
                    sizes[a.shape] = max(0, self.host_eval(a.shape, env, state))
                n = sizes[a.shape]
                env[a.var] = cp.empty(n, dtype=a.dtype) if a.fill is None else \
                    cp.full(n, _eval(a.fill, {}), dtype=a.dtype)
            elif step.kind == "cumsum":
                a = step.loop.body[0]
                t, v = _parse(a.target), _parse(a.value)
                n = self.host_eval(step.loop.stop, env, state)
                dst, src = env[t.value.id], env[v.right.value.id]
                if n > 0:  # in place: no temporary, no copy
                    cp.cumsum(src[:n], dtype=dst.dtype, out=dst[1:n + 1])
                    dst[1:n + 1] += dst[0:1]
            elif step.kind == "serial":
                self.kernel(k)((1,), (1,), self.launch_args(env, state))
                self.known = {v: x for v, x in self.known.items() if v not in _assigned(step.body)}
            elif step.kind == "parallel":
                self.launch_parallel(k, step, env, state, sms)
            elif step.kind == "return":
                return tuple(env[v] if v in env else self.host_state(state)[v] for v in step.values)
        return env.get(self.fn.output.array) if self.fn.output.array else None

    def skinny_launch(self, step, env, state, sms):
        """(grid, block, ("skinny", column tiles, warps per block)) when the skinny template's run-time
        conditions hold (templates.skinny), else None: the generic kernel runs."""
        sk = step.skinny
        try:
            cols = self.host_eval(sk.ncols, env, state)
            extent = self.host_eval(sk.extent, env, state)
            rows = self.host_eval(f"({step.loop.stop}) - ({step.loop.start})", env, state)
        except Exception:
            return None
        mtiles, minblocks, slots, warps = skinny.config(sk)
        slots = slots if sk.kind == "nm" and slots % 8 == 0 else 8
        per_chunk = 4 * slots * sk.m // sk.n if sk.kind == "nm" else skinny_kernel.BITMAP_CHUNK  # per 4 lanes
        ptr = {name: env[name].data.ptr if hasattr(env[name], "data") else env[name].bits.data.ptr
               for name in (sk.values, sk.dense, sk.crd or sk.mask)}
        if not (cols % 16 == 0 and 16 <= cols <= 64 and extent % per_chunk == 0 and extent > 0 and rows > 0
                and ptr[sk.dense] % 4 == 0 and ptr[sk.crd or sk.mask] % (8 if sk.kind == "nm" else 16) == 0
                and (sk.kind == "bitmap" or ptr[sk.values] % 16 == 0)):
            return None
        if sk.kind == "bitmap" and skinny_kernel.BITMAP_CLUSTER and ptr[sk.dense] % 16 == 0 and clusters():
            # row tiles per block, the columns split across a cluster of blocks (templates.skinny)
            warps, cluster, minblocks, persist = skinny_kernel.BITMAP_CLUSTER
            while cluster > 1 and extent % (per_chunk * cluster):
                cluster //= 2
            smem = skinny_kernel.cluster_smem(warps, cols // 16, extent // cluster)[1]
            if smem <= 200 << 10:
                nrb = math.ceil(rows / (16 * warps))
                return (min(nrb, persist or nrb) * cluster, 32 * warps,
                        ("skinny", cols // 16, warps, 1, minblocks, 8, cluster), smem)
        blocks = math.ceil(rows / (16 * mtiles))
        splitk = 1  # warps of a block splitting the columns: enough warps for the GPU, parts in shared memory
        while splitk * 2 <= min(warps or 8, splitk_limit(cols // 16, mtiles)) and \
                (warps or blocks * splitk * 2 <= sms * 64) and splitk * 2 <= extent // per_chunk:
            splitk *= 2
        return blocks, 32 * splitk, ("skinny", cols // 16, splitk, mtiles, minblocks, slots), 0

    def side_streams(self, n: int) -> list:
        """``n`` non-blocking streams of this device, made once (the SpGEMM bins run on them)."""
        cp = cupy()
        streams = self.__dict__.setdefault("sd_streams", {}).setdefault(cp.cuda.Device().id, [])
        while len(streams) < n:
            streams.append(cp.cuda.Stream(non_blocking=True))
        return streams[:n]

    def spgemm_values(self, size: int, vdt, zeroed_after: bool):
        """The global kernel's dense values, all zero: kept across calls when the kernel leaves them
        zero (the fill pass zeroes each value it reads), else new."""
        cp = cupy()
        if not zeroed_after:
            return cp.zeros(size, dtype=vdt)
        kept = self.__dict__.setdefault("sd_dval", {})
        key = (cp.cuda.Device().id, np.dtype(vdt).str)
        if key not in kept or kept[key].size < size:
            kept[key] = cp.zeros(size, dtype=vdt)
        return kept[key][:size]

    def spgemm_launch(self, k, step, env, state, sms) -> bool:
        """The SpGEMM schedule (templates.spgemm): the warp kernel over every row, which the count pass has
        put the longer rows on the block bins' and the global kernel's lists (their lengths read back
        here: one sync), then the block kernel over each block bin (its table in dynamic shared memory)
        and the global kernel over the last list. The fill pass reuses the lists. False (the generic
        kernel runs) when keys or rows do not fit 32-bit integers."""
        cp = cupy()
        sg = step.spgemm
        try:
            rows = self.host_eval(f"({sg.row.stop}) - ({sg.row.start})", env, state)
            wsize = self.host_eval(sg.wsize, env, state)
        except Exception:
            return False
        if rows >= 2**28 or wsize >= 2**31 - 1:
            return False
        vdt = self.types.arrays[sg.vals][0] if sg.vals else "int32"
        vsize = np.dtype(vdt).itemsize if sg.vals else 0
        args = self.launch_args(env, state)
        bins = env.get("sd_spgemm_bins")
        push = bins is None or not sg.same_rows(bins[0])
        if push:
            lst = cp.empty(spgemm.HEAD + spgemm.LISTS * max(0, rows), dtype=np.int32)
            lst[:spgemm.HEAD] = 0
        else:
            lst = bins[1]
        words = int(min(spgemm.BITMAP_WORDS, max(1, (wsize + 31) // 32)))
        tail = (np.int64(wsize), np.int64(rows), np.int32(words))
        none = self.unallocated(vdt)
        nbins = sum(spgemm.table_slots(b) * (4 + vsize) <= spgemm.TABLE_BYTES
                    for b in range(spgemm.BLOCK_BINS))  # the rest of the rows: the global kernel
        if rows > 0:
            blocks = min(math.ceil(rows / spgemm.WARPS), 2**31 - 1)
            self.kernel(k, ("spgemm", "warp"))((blocks,), (32 * spgemm.WARPS,),
                                                args + (lst, np.int32(push), np.int32(nbins), none) + tail)
        if push:
            counts = [int(v) for v in lst[:spgemm.LISTS].get()]
            env["sd_spgemm_bins"] = (sg, lst, counts)
        else:
            counts = bins[2]
        # the global kernel's and the bins' launches on side streams, longest rows first, so that the
        # bins' tails overlap; the current stream waits for them all
        launches = []
        n_big, nb = counts[spgemm.BLOCK_BINS], 0
        if n_big:  # a dense value workspace per block in global memory, 256 MiB of them at most
            nb = max(1, min(n_big, 8 * sms, (256 << 20) // max(1, wsize * vsize)))
            dval = self.spgemm_values(nb * wsize, vdt, sg.stores) if sg.vals else none
            threads = spgemm.GLOBAL_THREADS
            fn = dynamic_shared(self.kernel(k, spgemm_kernel.kernel_key("global", threads)), 4 * words)
            launches.append((fn, nb, threads, 4 * words, (lst, np.int32(0), np.int32(spgemm.BLOCK_BINS), dval)))
        for b in reversed(range(spgemm.BLOCK_BINS)):
            if counts[b]:
                smem, threads = spgemm.table_slots(b) * (4 + vsize), spgemm.BIN_THREADS[b]
                fn = dynamic_shared(self.kernel(k, spgemm_kernel.kernel_key("block", threads)), smem)
                per_sm = max(1, min(2048 // threads, (227 << 10) // smem))
                launches.append((fn, min(counts[b], sms * per_sm), threads, smem,
                                 (lst, np.int32(0), np.int32(b), none)))
        main = cp.cuda.get_current_stream()
        side = self.side_streams(len(launches)) if len(launches) > 1 else [main]
        if len(launches) > 1:
            start = cp.cuda.Event(disable_timing=True)
            start.record(main)
        for (fn, grid, threads, smem, own), stream in zip(launches, side):
            if stream is not main:
                stream.wait_event(start)
            with stream:
                fn((grid,), (threads,), args + own + tail, shared_mem=smem)
            if stream is not main:
                done = cp.cuda.Event(disable_timing=True)
                done.record(stream)
                main.wait_event(done)
        step.launched = (rows, sum(counts[:spgemm.BLOCK_BINS]), n_big, nb)
        return True

    def launch_parallel(self, k, step, env, state, sms):
        cp = cupy()
        loop = step.loop
        if getattr(step, "spgemm", None) is not None and self.spgemm_launch(k, step, env, state, sms):
            return
        got = self.skinny_launch(step, env, state, sms) if getattr(step, "skinny", None) is not None else None
        if got is not None:
            step.launched = got[:3]
            fn = self.kernel(k, got[2])
            if got[3]:  # dynamic shared memory
                fn = WithSharedMemory(dynamic_shared(fn, got[3]), got[3])
            self.last_launch = (fn, (got[0],), (got[1],), self.launch_args(env, state))
            self.launch(*self.last_launch)
            return
        lanes = self.choose_lanes(step, env, state) if step.reduction is not None else \
            self.nested_lanes(step, env, state) if getattr(step, "nested", None) is not None else 1
        width = self.vector_width_now(step, env, state) if lanes > 1 and getattr(step, "vector", None) else 1
        try:
            trip = self.host_eval(f"({loop.stop}) - ({loop.start})", env, state) if not \
                ((_names(loop.start) | _names(loop.stop)) & set(self.types.arrays)) else None
            if trip is not None and step.collapse is not None and step.reduction is None:
                trip *= max(1, self.host_eval(f"({step.collapse.stop}) - ({step.collapse.start})", env, state))
        except Exception:
            trip = None
        # one thread group per iteration when the trip count is known (the hardware balances blocks);
        # else a grid-stride loop over enough blocks to fill the GPU
        blocks = sms * 32 if trip is None else max(1, min(math.ceil(trip * lanes / BLOCK), 2**31 - 1))
        block = BLOCK
        if loop.private:  # each thread its own workspace: as many threads as 1 GiB of workspaces allows
            private = [a for a in loop.private if isinstance(a, L.Alloc)]
            per = sum(max(1, self.host_eval(a.shape, env, state)) * np.dtype(a.dtype).itemsize for a in private) or 1
            threads = max(32, min(blocks * BLOCK, (1 << 30) // per))
            block = min(BLOCK, threads)
            blocks = math.ceil(threads / block)
            for a in private:
                n = max(0, self.host_eval(a.shape, env, state)) * blocks * block
                env[a.var] = cp.empty(n, dtype=a.dtype) if a.fill is None else \
                    cp.full(n, _eval(a.fill, {}), dtype=a.dtype)
        step.launched = (blocks, block, lanes if width == 1 else ("vector", lanes, width))
        self.launch(self.kernel(k, step.launched[2]), (blocks,), (block,), self.launch_args(env, state))

    def launch(self, fn, grid, block, args):
        if self.trace is not None:
            self.trace.append((fn, grid, block))
        fn(grid, block, args)

    def replayable(self) -> bool:
        """Whether a call is its kernel launches alone, each with the arguments as passed (and the state
        array): no host steps, allocations, device-read sizes or growable outputs between them. Then
        ``Compiled`` can replay a call's launches for arguments alike in everything they were chosen by."""
        return not self.emits and not self.allocs and not self.state and all(
            s.kind == "parallel" and getattr(s, "spgemm", None) is None and not s.loop.private for s in self.steps)

    def identity(self) -> set:
        """Parameters whose contents (not only shape and alignment) a launch decision read: the row
        weights ``choose_lanes`` averages."""
        return {s.loop.weight for s in self.steps if s.kind == "parallel" and s.reduction is not None and s.loop.weight}

    def nested_lanes(self, step, env, state) -> int:
        """Lanes splitting a nested reduction loop: a power of two, about 8 of its iterations per lane (fewer
        shuffle rounds, more outer iterations in flight per warp: the entries' loads are a latency chain)."""
        inner = step.nested.inner
        try:
            trip = self.host_eval(f"({inner.stop}) - ({inner.start})", env, state)
        except Exception:  # bounds known only inside an iteration
            trip = 8
        lanes = 1
        while lanes * 2 <= min(32, trip / 8):
            lanes *= 2
        return lanes

    def vector_width_now(self, step, env, state) -> int:
        """The split loop's iterations per lane for these operands: ``vector_width`` when its trip count
        and start are multiples of it and every row it reads starts on a vector boundary, else 1."""
        width = self.vector_width(step)
        inner = step.nested.inner
        try:
            start, stop = self.host_eval(inner.start, env, state), self.host_eval(inner.stop, env, state)
        except Exception:  # bounds known only inside an iteration
            return 1
        for name in {name for name, _ in step.vector}:
            v = env.get(name)
            item = np.dtype(self.types.arrays[name][0]).itemsize
            if not hasattr(v, "data") or v.data.ptr % (width * item) or (v.ndim > 1 and v.shape[-1] % width):
                return 1
        return width if start % width == 0 and (stop - start) % width == 0 and stop > start else 1

    def choose_lanes(self, step, env, state) -> int:
        """Threads per outer iteration: a power of two, a quarter of the average inner trip count, <= 32."""
        loop, inner = step.loop, step.reduction.inner
        key = None
        try:
            if loop.weight and loop.weight in env:
                w = env[loop.weight]
                key = (loop.weight, w.data.ptr, w.size)
                if key in self.lanes_cache:
                    return self.lanes_cache[key]
                lo, hi = self.host_eval(loop.start, env, state), self.host_eval(loop.stop, env, state)
                avg = (int(w[hi]) - int(w[lo])) / max(1, hi - lo) if hi > lo else 1
            else:
                avg = self.host_eval(f"({inner.stop}) - ({inner.start})", env, state)
        except Exception:
            avg = 1
        # about 4 inner iterations per lane: on an H100, 16-entry rows ran fastest with 2-4 lanes
        # (banded: 2 lanes 0.39 ms, 4 lanes 0.40, 16 lanes 0.80; random columns: 4 and 16 lanes
        # within 3%), long rows want a whole warp
        lanes = 1
        while lanes * 2 <= min(32, avg / 4):
            lanes *= 2
        if key is not None:
            self.lanes_cache[key] = lanes
        return lanes

"""The CUDA backend: loop IR rendered as CUDA C++ (``cuda_render``), compiled with NVRTC through
cupy, run as a sequence of host steps:

- an ``Alloc`` is a device allocation (its size is evaluated on the host);
- a parallel ``For`` is one kernel launch (``cuda_render`` says in which shape); for a lane-split
  reduction the lanes per iteration (1..32) are chosen per call from the loop's average work;
- a pass of SpGEMM's row-by-row assembly (``cuda_spgemm``) is up to three launches (a warp per row,
  then a block per longer row, then a global workspace per longest row), the rows' bins read back once;
- a function that is one dense contraction (``cuda_plan.dense_contraction``: the factored
  products of composites, U·(Vᵀ·X)) is ``cupy.tensordot``, that is cuBLAS, for float32/float64;
- the prefix sum of a two-phase assembly (``offs[r + 1] = offs[r] + counts[r]``) is ``cupy.cumsum``;
- any other run of statements is a kernel of one thread (correct, slow: ``explain`` says so).

Operands: dense cupy arrays and torch CUDA tensors (DLPack) are used in place, SparseTensors moved
with ``.to("cuda")`` too; anything else is packed and validated on the host, then copied over.

Scalars assigned in one step and read in another live in a small device array (``sd_state``).
Kernels are specialised to the operands' dtypes at the first call (like numba). The generated
source is written to the sparsedsl cache next to the CPU kernels; cupy keeps the compiled binary
in its own on-disk kernel cache. Kernels do no bounds checks: every tensor was validated when it
was built (DESIGN.md).
"""

from __future__ import annotations

import math
import sys

import numpy as np

from ..lang import loopir as L
from . import cache, cuda_schedules, cuda_spgemm
from .cuda_plan import dense_contraction
from .cuda_render import (
    ATOMIC_DTYPES,  # noqa: F401 (re-exported)
    INT32_SAFE,
    PREAMBLE,
    KernelSource,
    _assigned,
    _names,
    _parse,
    _walk,
    concrete,
    kernel_name,
    render,  # noqa: F401 (the render-only entry, re-exported)
    signature,
)
from .cuda_schedules import splitk_limit

INSTALL_HINT = 'the CUDA backend needs cupy and an NVIDIA GPU: pip install "sparsedsl[cuda]"'


class CudaUnavailable(RuntimeError):
    """The CUDA backend was asked for, but cupy or a GPU is missing."""


_cp = None


def cupy():
    """The cupy module, imported on first use; raises CudaUnavailable with the install hint."""
    global _cp
    if _cp is None:
        try:
            import cupy as cp

            if cp.cuda.runtime.getDeviceCount() < 1:
                raise CudaUnavailable(f"no CUDA device is visible; {INSTALL_HINT}")
        except CudaUnavailable:
            raise
        except Exception as exc:  # ImportError, or a CUDA driver error when there is no GPU
            raise CudaUnavailable(f"{INSTALL_HINT} ({type(exc).__name__}: {exc})") from None
        _cp = cp
    return _cp


def available() -> bool:
    try:
        cupy()
        return True
    except CudaUnavailable:
        return False


# ---- operands on the device ------------------------------------------------------------------


def array_type():
    """``cupy.ndarray`` once cupy has been imported (by the user or this backend), else None."""
    cp = sys.modules.get("cupy")
    return getattr(cp, "ndarray", None)


def on_device(value) -> bool:
    """Whether ``value`` lives on a GPU (cupy / cupyx.scipy.sparse, a torch CUDA tensor, a SparseTensor
    or a composite moved with ``.to("cuda")``). Needs no cupy import."""
    mod = type(value).__module__
    if mod.startswith(("cupy", "cupyx")):
        return True
    if mod.startswith("torch"):
        return bool(getattr(value, "is_cuda", False))
    return getattr(value, "device", None) == "cuda" and (hasattr(value, "levels") or hasattr(value, "parts"))


def zeros(shape, dtype):
    return cupy().zeros(shape, dtype=dtype)


def empty(shape, dtype):
    return cupy().empty(shape, dtype=dtype)


class BFloat16Array:
    """bfloat16 values on the GPU. cupy has no bfloat16 dtype, so the bits live in a uint16 cupy array
    (``bits``) and kernels widen them on load (float32 arithmetic). To the compiler's type checks it
    is float32 (every bfloat16 is exactly a float32), so results come back as float32. Built from
    torch bfloat16 CUDA tensors (DLPack, no copy) or with ``SparseTensor.astype("bfloat16")``."""

    sd_storage = "bfloat16"
    dtype = np.dtype(np.float32)

    def __init__(self, bits):
        self.bits = bits

    shape = property(lambda self: self.bits.shape)
    ndim = property(lambda self: self.bits.ndim)
    size = property(lambda self: self.bits.size)
    flags = property(lambda self: self.bits.flags)
    __cuda_array_interface__ = property(lambda self: self.bits.__cuda_array_interface__)

    def __len__(self):
        return len(self.bits)

    def __getitem__(self, key):
        return BFloat16Array(self.bits[key])

    def reshape(self, *shape):
        return BFloat16Array(self.bits.reshape(*shape))

    def astype(self, dtype):
        return astype(self, dtype)

    def widen(self):
        """float32 cupy array of the same values (exact)."""
        return (self.bits.astype(np.uint32) << 16).view(np.float32)

    def get(self):
        return self.widen().get()

    def __repr__(self):
        return f"BFloat16Array(shape={self.shape})"


def storage(value):
    """"float16" or "bfloat16" when ``value`` (cupy, torch CUDA, a SparseTensor's values) holds 16-bit
    floats on the device, else None."""
    if hasattr(value, "levels"):
        value = value.values
    if getattr(value, "sd_storage", None) == "bfloat16":
        return "bfloat16"
    dt = str(getattr(value, "dtype", ""))
    return {"float16": "float16", "torch.float16": "float16", "torch.bfloat16": "bfloat16"}.get(dt)


def astype(values, dtype):
    """Device values as ``dtype``: a numpy dtype, or "bfloat16" (rounded to nearest even, uint16 bits)."""
    cp = cupy()
    if isinstance(values, BFloat16Array):
        values = values.widen()
    if str(dtype) != "bfloat16":
        return values.astype(dtype)
    u = cp.ascontiguousarray(values.astype(np.float32)).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return BFloat16Array(cp.where(nan, ((u >> 16) | np.uint32(0x40)).astype(np.uint16), rounded))


def to_device(a):
    cp = cupy()
    return cp.ascontiguousarray(cp.asarray(a))


def to_host(value):
    """A host copy of a device operand, as the CPU packing path understands it."""
    mod = type(value).__module__
    if mod.startswith("torch"):
        value = value.detach()
        return (value.float() if str(value.dtype) == "torch.bfloat16" else value).cpu()
    if hasattr(value, "levels"):
        return value.to("cpu")
    if hasattr(value, "get"):
        return value.get()  # cupy array -> numpy, cupyx sparse -> scipy sparse
    return value


def pack(value, param, host_pack):
    """Put an operand into its declared format on the device: dense cupy arrays and torch CUDA
    tensors are used in place (DLPack, no copy), SparseTensors already on the device in the
    declared format too; anything else is packed on the host (validated there) and copied over."""
    cp = cupy()
    mod = type(value).__module__
    if mod.startswith("torch") and getattr(value, "is_cuda", False) and value.layout == _torch_strided():
        if str(value.dtype) == "torch.bfloat16":  # no bfloat16 in cupy: its bits, as uint16
            import torch

            value = BFloat16Array(cp.from_dlpack(value.detach().contiguous().view(torch.int16)).view(np.uint16))
        else:
            value = cp.from_dlpack(value.detach())
    dense = param.kind != "scalar" and param.format in (None, "dense")
    if isinstance(value, BFloat16Array) and dense:
        return value if value.flags.c_contiguous else BFloat16Array(cp.ascontiguousarray(value.bits))
    if isinstance(value, cp.ndarray) and dense and value.dtype.kind in "biuf" and value.dtype.itemsize <= 8:
        return cp.ascontiguousarray(value)
    if hasattr(value, "levels") and getattr(value, "device", "cpu") == "cuda" and param.format is not None:
        from ..lang.formats import as_format

        if value.format == as_format(param.format, value.ndim):
            return value
    half = storage(value) if on_device(value) else None
    packed = host_pack(to_host(value) if on_device(value) else value, param)
    if hasattr(packed, "levels"):  # packed on the host (wider values there); 16-bit again on the device
        return packed.to("cuda") if half is None else packed.to("cuda").astype(half)
    if half is not None and isinstance(packed, np.ndarray):
        return astype(to_device(packed), half)
    if isinstance(packed, np.ndarray):
        return to_device(packed)
    return packed  # a scalar


def finish(outputs: list, inputs: list) -> list:
    """Results on the device, as the kind of object that was passed: torch in, torch out."""
    torch_in = any(type(v).__module__.startswith("torch") for v in inputs)
    done = []
    for o in outputs:
        if hasattr(o, "levels"):
            o = o.to("cuda")
        elif torch_in and type(o).__module__.startswith("cupy"):
            import torch

            o = torch.from_dlpack(o)
        done.append(o)
    return done


def _torch_strided():
    import torch

    return torch.strided




BLOCK = 256
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
            if isinstance(result, tuple):
                if self.csr_on_device():
                    return result
                return tuple(r.get() if hasattr(r, "get") else r for r in result)  # entries: packed on the host
            if not self.emits:
                return result
            n = self.host_state(state)["out_n"]
            if n <= int(args["out_cap"]):
                break
            args = {**args, "out_cap": np.int64(n)}
        if result is None:
            result = tuple(env[f"out_c{d}"][:n] for d in range(self.ncoords())) + (env["out_v"][:n],)
        return tuple(r.get() if hasattr(r, "get") else r for r in result)

    def csr_on_device(self) -> bool:
        """A two-phase output returned as (offs, out_c<d>, out_v) with d > 0 is the lowering's CSR
        assembly (a coordinate list returns every dimension's coordinates, so out_c0 too): offsets,
        column indices and values are already the output's level arrays, so they stay on the device."""
        ret = next((st.values for st in self.steps if st.kind == "return"), [])
        return len(ret) == 3 and ret[0] == "offs" and ret[1].startswith("out_c") and ret[1] != "out_c0" \
            and ret[2] == "out_v"

    def ncoords(self) -> int:
        return next(len(x.coords) for x in _walk(self.fn.body) if isinstance(x, L.Emit))

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
        return env["out"] if "out" in env and not self.emits else None

    def skinny_launch(self, step, env, state, sms):
        """(grid, block, ("skinny", column tiles, warps per block)) when the skinny template's run-time
        conditions hold (cuda_schedules), else None: the generic kernel runs."""
        sk = step.skinny
        try:
            cols = self.host_eval(sk.ncols, env, state)
            extent = self.host_eval(sk.extent, env, state)
            rows = self.host_eval(f"({step.loop.stop}) - ({step.loop.start})", env, state)
        except Exception:
            return None
        mtiles, minblocks, slots, warps = cuda_schedules.config(sk)
        slots = slots if sk.kind == "nm" and slots % 8 == 0 else 8
        per_chunk = 4 * slots * sk.m // sk.n if sk.kind == "nm" else cuda_schedules.BITMAP_CHUNK  # per 4 lanes
        ptr = {name: env[name].data.ptr if hasattr(env[name], "data") else env[name].bits.data.ptr
               for name in (sk.values, sk.dense, sk.crd or sk.mask)}
        if not (cols % 16 == 0 and 16 <= cols <= 64 and extent % per_chunk == 0 and extent > 0 and rows > 0
                and ptr[sk.dense] % 4 == 0 and ptr[sk.crd or sk.mask] % (8 if sk.kind == "nm" else 16) == 0
                and (sk.kind == "bitmap" or ptr[sk.values] % 16 == 0)):
            return None
        if sk.kind == "bitmap" and cuda_schedules.BITMAP_CLUSTER and ptr[sk.dense] % 16 == 0 and clusters():
            # row tiles per block, the columns split across a cluster of blocks (cuda_schedules)
            warps, cluster, minblocks, persist = cuda_schedules.BITMAP_CLUSTER
            while cluster > 1 and extent % (per_chunk * cluster):
                cluster //= 2
            smem = cuda_schedules.cluster_smem(warps, cols // 16, extent // cluster)[1]
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
        """The SpGEMM schedule (cuda_spgemm): the warp kernel over every row, which the count pass has
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
            lst = cp.empty(cuda_spgemm.HEAD + cuda_spgemm.LISTS * max(0, rows), dtype=np.int32)
            lst[:cuda_spgemm.HEAD] = 0
        else:
            lst = bins[1]
        words = int(min(cuda_spgemm.BITMAP_WORDS, max(1, (wsize + 31) // 32)))
        tail = (np.int64(wsize), np.int64(rows), np.int32(words))
        none = self.unallocated(vdt)
        nbins = sum(cuda_spgemm.table_slots(b) * (4 + vsize) <= cuda_spgemm.TABLE_BYTES
                    for b in range(cuda_spgemm.BLOCK_BINS))  # the rest of the rows: the global kernel
        if rows > 0:
            blocks = min(math.ceil(rows / cuda_spgemm.WARPS), 2**31 - 1)
            self.kernel(k, ("spgemm", "warp"))((blocks,), (32 * cuda_spgemm.WARPS,),
                                                args + (lst, np.int32(push), np.int32(nbins), none) + tail)
        if push:
            counts = [int(v) for v in lst[:cuda_spgemm.LISTS].get()]
            env["sd_spgemm_bins"] = (sg, lst, counts)
        else:
            counts = bins[2]
        # the global kernel's and the bins' launches on side streams, longest rows first, so that the
        # bins' tails overlap; the current stream waits for them all
        launches = []
        n_big, nb = counts[cuda_spgemm.BLOCK_BINS], 0
        if n_big:  # a dense value workspace per block in global memory, 256 MiB of them at most
            nb = max(1, min(n_big, 8 * sms, (256 << 20) // max(1, wsize * vsize)))
            dval = self.spgemm_values(nb * wsize, vdt, sg.stores) if sg.vals else none
            threads = cuda_spgemm.GLOBAL_THREADS
            fn = dynamic_shared(self.kernel(k, cuda_spgemm.kernel_key("global", threads)), 4 * words)
            launches.append((fn, nb, threads, 4 * words, (lst, np.int32(0), np.int32(cuda_spgemm.BLOCK_BINS), dval)))
        for b in reversed(range(cuda_spgemm.BLOCK_BINS)):
            if counts[b]:
                smem, threads = cuda_spgemm.table_slots(b) * (4 + vsize), cuda_spgemm.BIN_THREADS[b]
                fn = dynamic_shared(self.kernel(k, cuda_spgemm.kernel_key("block", threads)), smem)
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
        step.launched = (rows, sum(counts[:cuda_spgemm.BLOCK_BINS]), n_big, nb)
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
        inner = step.nested[0]
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
        inner = step.nested[0]
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
        loop, inner = step.loop, step.reduction[1]
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

    def describe(self) -> str:
        parts = []
        for k, step in enumerate(self.steps):
            if step.kind == "serial":
                parts.append(f"step {k}: serial kernel, 1 thread (slow on a GPU)")
            elif step.kind == "host":
                parts.append(f"step {k}: {step.assign.target} = {step.assign.value} on the host")
            elif step.kind == "parallel":
                how = "one thread per iteration, atomicAdd into the output" if step.atomic else \
                    "lanes per iteration split its inner reduction (xor shuffles; 16-byte loads of the rows it " \
                    "reads when aligned), lane 0 stores" if \
                    getattr(step, "nested", None) is not None else \
                    "threads per iteration chosen per call (shuffle reduction)" if step.reduction else \
                    f"one thread per ({step.loop.var}, {step.collapse.var}) pair" if step.collapse else \
                    "one thread per iteration (grid-stride)"
                if getattr(step, "spgemm", None) is not None:
                    slots = cuda_spgemm.table_slots(cuda_spgemm.BLOCK_BINS - 1)
                    how = ("a row's products in a hash table in shared memory (cuda_spgemm): a warp per row, "
                           f"a block per row for longer rows (tables of up to {slots:,} slots in dynamic shared "
                           "memory, read back in column order through a bitmap of the columns), for the longest "
                           "a bitmap of the columns in shared memory over dense values in global memory")
                    got = getattr(step, "launched", None)
                    parts.append(f"step {k}: parallel loop over {step.loop.var}, {how}" + (
                        f"; last launch {got[0]} rows, {got[1]} on blocks, {got[2]} on global workspaces "
                        f"({got[3]} blocks)" if got and len(got) == 4 else ""))
                    continue
                if getattr(step, "skinny", None) is not None:
                    how += (f"; or the skinny {step.skinny.kind} template (cuda_schedules: a warp per 16 rows, "
                            f"tensor-core mma) when the columns are 16..64")
                got = getattr(step, "launched", None)
                at = f"; last launch {got[0]} blocks x {got[1]} threads, {got[2]} per iteration" if got else ""
                parts.append(f"step {k}: parallel loop over {step.loop.var}, {how}{at}")
            elif step.kind == "alloc":
                parts.append(f"step {k}: allocate {step.alloc.var}[{step.alloc.shape}] on the device")
            elif step.kind == "cumsum":
                parts.append(f"step {k}: prefix sum (cupy.cumsum)")
        for (k, lanes), src in sorted(self.sources.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            what = f"{lanes} thread(s) per iteration" if isinstance(lanes, int) else f"schedule {lanes}"
            parts.append(f"// ---- step {k}, {what}\n" + src.replace(PREAMBLE, ""))
        return "\n".join(parts)


_devattr: dict = {}


def clusters() -> bool:
    """Whether this device runs thread-block clusters (compute capability 9.0 and later)."""
    cp = cupy()
    dev = ("cc", cp.cuda.Device().id)
    if dev not in _devattr:
        _devattr[dev] = int(cp.cuda.Device().compute_capability) >= 90
    return _devattr[dev]


def device_sms() -> int:
    cp = cupy()
    dev = cp.cuda.Device().id
    if dev not in _devattr:
        _devattr[dev] = cp.cuda.Device(dev).attributes["MultiProcessorCount"]
    return _devattr[dev]


_modules: dict = {}


class WithSharedMemory:
    """A kernel and its dynamic shared memory, called like the kernel: ``(grid, block, args)``."""

    def __init__(self, fn, nbytes: int):
        self.fn, self.nbytes = fn, nbytes

    @property
    def attributes(self):
        return self.fn.attributes

    def __call__(self, grid, block, args):
        return self.fn(grid, block, args, shared_mem=self.nbytes)


_opted_in: dict = {}  # id(kernel) -> (kernel, the dynamic shared memory it may use)


def dynamic_shared(fn, nbytes: int):
    """``fn`` allowed ``nbytes`` of dynamic shared memory: a kernel whose static and dynamic shared
    memory pass 48 KiB in all must opt in (once per kernel and size)."""
    got = _opted_in.get(id(fn))
    if got is None or got[1] < nbytes:
        if nbytes + fn.attributes["shared_size_bytes"] > 48 << 10:
            try:  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
                cupy().cuda.driver.funcSetAttribute(fn.ptr, 8, nbytes)
            except AttributeError:
                fn.max_dynamic_shared_size_bytes = nbytes
        _opted_in[id(fn)] = (fn, nbytes)
    return fn


def version() -> str:
    cp = cupy()
    try:
        nvrtc = cp.cuda.nvrtc.getVersion()
    except Exception:
        nvrtc = "?"
    return f"cupy-{cp.__version__}-nvrtc-{nvrtc}-py{sys.version_info[0]}.{sys.version_info[1]}"


def compile_kernel(source: str, name: str):
    """NVRTC through cupy; the source is kept in the sparsedsl cache, the binary in cupy's."""
    cp = cupy()
    k = cache.key(source, version())
    if k not in _modules:
        path = cache.cache_dir() / f"k_{k}.cu"
        if not path.exists():
            cache.write_atomic(path, source)
        _modules[k] = cp.RawModule(code=source, options=("-std=c++17",))
    return _modules[k].get_function(name)


# ---- the entry point ---------------------------------------------------------------------------


class Compiled:
    """A function compiled for the GPU, specialised to its arguments' dtypes at each new signature."""

    def __init__(self, fn: L.Function):
        self.fn = fn
        self.specs: dict = {}
        self.contraction = dense_contraction(fn)
        self.replays: dict = {}  # replay key -> (argument tuple builder, launches, index of out)
        self.replay_key = None  # args -> key, generated at the first recorded call

    def __call__(self, *args, work: int = 0):
        if self.replay_key is not None:  # a call alike to a recorded one: its launches again
            key = self.replay_key(args)
            try:
                got = self.replays.get(key) if key is not None else None
            except TypeError:  # an unhashable value where a scalar was: not alike
                got = None
            if got is not None:
                build, launches, out = got
                launch_args = build(*args)
                for fn, grid, block in launches:
                    fn(grid, block, launch_args)
                return args[out]
        return self._call(args)

    def _call(self, args):
        cp = cupy()
        named = {}
        for name, v in zip(self.fn.params, args):
            if name == "out" and isinstance(v, np.ndarray):  # (a driver that does not allocate on the device)
                v = cp.zeros(v.shape, dtype=v.dtype)  # the driver's host zeros: allocate on the device
            elif isinstance(v, np.ndarray) and v.ndim > 0:
                v = to_device(v)
            elif isinstance(v, np.ndarray):
                v = v[()]
            elif hasattr(v, "__cuda_array_interface__") and not v.flags.c_contiguous:
                v = BFloat16Array(cp.ascontiguousarray(v.bits)) if isinstance(v, BFloat16Array) else \
                    cp.ascontiguousarray(v)
            named[name] = v
        named = widen_positions(named)
        if "out_cap" in named:  # the first guess of a growable output's size: as large as the inputs
            named["out_cap"] = max(int(named["out_cap"]), sum(int(v.size) for v in named.values()
                                                             if hasattr(v, "__cuda_array_interface__")))
        if self.contraction is not None and _cublas_types(named, self.contraction):
            return _contract(named, self.contraction)
        sig = signature(named)
        key = tuple(sorted(sig.items()))
        spec = self.specs.get(key)
        if spec is None:
            spec = self.specs[key] = Specialised(self.fn, sig)
        as_passed = all(named[n] is a for n, a in zip(self.fn.params, args))
        if not (as_passed and spec.replayable() and len(self.replays) < 64):
            return spec.run(named)
        spec.trace = []
        try:
            result = spec.run(named)
            launches = spec.trace
        finally:
            spec.trace = None
        if "out" in named and result is named["out"]:
            self.record(args, spec, launches)
        return result

    def record(self, args, spec, launches):
        """Keep this call's launches for calls whose arguments match it in what chose them: each array's
        type, dtype, shape, C order and address modulo 16 (alignment), each scalar's type and value,
        and the address of an array whose contents a choice read (``Specialised.identity``)."""
        arrays = [i for i, a in enumerate(args) if hasattr(a, "__cuda_array_interface__")]
        if len({id(args[i]) for i in arrays}) < len(arrays):  # one array for two parameters: not replayed
            return
        if self.replay_key is None:
            ident = {self.fn.params.index(n) for n in spec.identity() if n in self.fn.params}
            parts = []
            for i, a in enumerate(args):
                if i in arrays:
                    ptr = f"a{i}.bits.data.ptr" if isinstance(a, BFloat16Array) else f"a{i}.data.ptr"
                    parts.append(f"type(a{i}), a{i}.dtype, a{i}.shape, a{i}.flags.c_contiguous, "
                                 f"{ptr}{'' if i in ident else ' & 15'}")
                else:
                    parts.append(f"type(a{i}), a{i}")
            names = ", ".join(f"a{i}" for i in range(len(args)))
            src = (f"def key(args):\n    if len(args) != {len(args)}:\n        return None\n"
                   f"    {names}, = args\n    try:\n        return (device(), {', '.join(parts)},)\n"
                   "    except AttributeError:\n        return None\n")
            ns: dict = {"device": cupy().cuda.runtime.getDevice}  # kernels are loaded per device
            exec(src, ns)  # noqa: S102 - generated from the parameter positions above
            self.replay_key = ns["key"]
        key = self.replay_key(args)
        if key is None:
            return
        # the launch arguments: the arrays of this call replaced by those of the next (dims and scalars
        # are fixed by the key, the state array by the signature)
        named = dict(zip(self.fn.params, args))
        template = spec.launch_args(named, spec.state_buf)
        ids = {id(getattr(a, "bits", a)): i for i, a in enumerate(args) if i in arrays}
        consts, items = {}, []
        for p, v in enumerate(template):
            i = ids.get(id(v)) if hasattr(v, "__cuda_array_interface__") else None
            if i is not None:
                items.append(f"a{i}.bits" if isinstance(args[i], BFloat16Array) else f"a{i}")
            else:
                consts[f"c{p}"] = v
                items.append(f"c{p}")
        src = f"def build({', '.join(f'a{i}' for i in range(len(args)))}):\n    return ({', '.join(items)},)\n"
        exec(src, consts)  # noqa: S102 - generated from the launch argument positions above
        self.replays[key] = (consts["build"], list(launches), self.fn.params.index("out"))

    def describe(self) -> str:
        if self.contraction is not None:
            c = self.contraction
            head = f"// {self.fn.name}: a dense contraction '{c.spec}' of {c.left} and {c.right} (cupy.tensordot) " \
                   f"{'added into' if c.accumulate else 'stored in'} out (cuBLAS) for float32/float64 operands"
            return "\n".join([head] + [s.describe() for s in self.specs.values()])
        if not self.specs:
            return f"// {self.fn.name}: CUDA source is rendered at the first call, for the operands' dtypes"
        return "\n".join(s.describe() for s in self.specs.values())

    def __str__(self):
        return self.describe()


def widen_positions(named: dict) -> dict:
    """The arguments with every 32-bit integer array widened to 64 bits when some array has more than
    INT32_SAFE entries: then a level's positions (its ``pos``, whose own size is small) may come within
    a stride of 2^31, where cuda_render's 32-bit loop counters would overflow."""
    if not any(getattr(v, "size", 0) > INT32_SAFE for v in named.values()):
        return named
    return {name: v.astype(np.int64) if getattr(v, "dtype", None) == np.int32 and name != "out" else v
            for name, v in named.items()}


def _cublas_types(named: dict, c) -> bool:
    """Whether cuBLAS computes this contraction as the kernel would: cupy arrays of one float32 or
    float64 dtype (16-bit operands keep the kernels, which accumulate in float32)."""
    cp = cupy()
    arrays = [named[c.left], named[c.right], named["out"]]
    return all(type(a) is cp.ndarray and a.dtype == arrays[2].dtype for a in arrays) and \
        arrays[2].dtype in (np.float32, np.float64)


def _contract(named: dict, c):
    """A dense contraction step (``cuda_plan.Contraction``) through cuBLAS: ``cupy.tensordot`` over
    the contracted indices (transposed operands are passed to cuBLAS as they are, not copied), then
    the result's axes in the output's order. ``cupy.einsum`` took 4x longer on the host."""
    cp = cupy()
    left, right = named[c.left], named[c.right]
    ins, out_ix = c.spec.split("->")
    lix, rix = ins.split(",")
    summed = [x for x in lix if x in rix and x not in out_ix]
    if any(x in lix and x in rix for x in out_ix):  # an index of both operands and the output: a batch
        product = cp.einsum(c.spec, left, right)
    else:
        product = cp.tensordot(left, right, axes=([lix.index(x) for x in summed], [rix.index(x) for x in summed]))
        kept = [x for x in lix if x not in summed] + [x for x in rix if x not in summed]
        product = product.transpose([kept.index(x) for x in out_ix])
    out = named["out"]
    if c.accumulate:
        out += product
    else:
        out[...] = product
    return out


def build(fn: L.Function):
    """The function as a GPU callable; returns (callable, its source description). Rendering and
    compilation happen at the first call, specialised to the argument dtypes."""
    compiled = Compiled(fn)
    return compiled, compiled

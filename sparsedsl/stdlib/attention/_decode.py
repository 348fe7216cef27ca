"""Decode attention on the bitmap KV cache for the GPU, registered as a program template, and the
cache's build on the GPU.

The template ``attention.bitmap_decode`` matches ``DECODE_PROGRAM`` (one query per (batch·head)
slice against K and V in ``BITMAP3``) when the head dim is 32, 64, 128 or 256 and K/V hold float16 or
float32 values; the plan then runs the kernel (``_decode_common.cuh`` and ``_decode_walk.cu`` or
``_decode_coop.cu``) in one launch instead of the generated kernels, which stay the fallback
(``schedule={"templates": False}``) and the oracle of its tests.

Why a hand-written kernel: decoding is memory-bound, and the generated code (``sd.explain`` with
``backend="cuda"`` shows it) runs five kernels with the (n, L) scores in global memory between them,
and its last statement, P·V, is a parallel loop over the slices only (the output's column is the
bitmap's coordinate): one thread per (batch·head) walks the whole context, 8 threads for 32k tokens
at batch 1 — 0.27 s on an H100 against SDPA's 69 µs. The kernel is flash-decoding (Dao et al.,
"Flash-Decoding for long-context inference", 2023) over the bitmap: the context is split over CTAs,
each tile of 32 tokens has its K and V values in one contiguous range that is prefetched into L2 a
tile ahead and staged into shared memory with 16-byte loads, the scores walk each token's set bits,
and V is expanded into a dense tile for P·V; the last CTA of a head merges the parts.
At 70% sparsity, d = 128, a token costs 96 bytes of K (16 of mask, 4 of offset, 76 of fp16 values)
instead of 256: the kernel's bytes are 0.375 of dense SDPA's.

Two variants (``VARIANTS``; ``DEFAULT_VARIANT``, set by ``SPARSEDSL_DECODE_VARIANT``, or ``variant=``):
"walk", the first kernel above (a lane per token walking its set bits; 0.63× SDPA at batch 1 and 0.82×
at batch 8 on an H100, 480 and 900 GB/s), and "coop", the default: each warp streams tiles of 16
tokens (masks, offsets, both value ranges) into three shared-memory stages with 16-byte cp.async, two
tiles in flight while one is computed, and expands them lane-per-dimension (lane l's mask bits and a
popcount prefix over the token's mask give the rank of its values: no per-bit loop); the K pass's 16
per-token partial dots are summed by one reduce-scatter (16 shuffles, not 80), the V pass needs no
reduction. Its grid fills one wave of resident CTAs (two of 110 KB per SM).

A decode step's host work (``DecodeStep``): the arguments are packed once per cache and query
signature and launched through ``cuLaunchKernel``; ``decode_attention`` asks the plan (the template
registry) once per signature and keeps the step.

``bitmap_from_dense`` builds the cache on the GPU (one warp per token: a radix select of the
largest magnitudes, the bits, then the packed values at the offsets a cumsum gives), with the host
build's result (``kv_cache.prune_per_token`` + ``bitmap_3d``) up to ties and fp16 rounding; the host
build (an argpartition per token, then a copy) took 16 s for batch 8 × 8 heads × 32k tokens.

``python -m benchmarks.stdlib_attention --compile-only --nvrtc PATH/libnvrtc.so.12`` compiles every
variant with NVRTC (no GPU, no cupy) and prints the logs (``compile_check``).

References
----------
Joo et al., "Mustafar: Promoting Unstructured Sparsity for KV Cache Pruning in LLM Inference", 2025;
Dao, Haziza, Massa, Sizov, "Flash-Decoding for long-context inference", 2023.
"""

from __future__ import annotations

import ctypes
import math
import os
import pathlib

import numpy as np

import sparsedsl as sd
from sparsedsl import templates
from sparsedsl.backends.cuda import device
from sparsedsl.lang.formats import as_format
from sparsedsl.lang.levels.base import index_dtype
from sparsedsl.tensor import SparseTensor

BITMAP3 = "(h, j, d) -> (h: dense, j: dense, d: bitmap)"

DECODE_PROGRAM = """
let s[h,j] = K[h,j,d] * q[h,d]
let m[h] = max[j](s[h,j])
let e[h,j] = exp(scale * (s[h,j] - m[h]))
let z[h] = e[h,j]
o[h,c] = e[h,j] * V[h,j,c] / z[h]
"""

NAME = "attention.bitmap_decode"
HEAD_DIMS = (32, 64, 128, 256)
# the kernel source: the part every kernel shares, then the file of the kernel the defines name
# (concatenated into one string for NVRTC: no #include, so no search path)
_COMMON = pathlib.Path(__file__).with_name("_decode_common.cuh")
_SOURCES = {k: pathlib.Path(__file__).with_name(f"_decode_{k}.cu") for k in ("walk", "coop", "build")}
# dynamic shared memory per CTA: two staging buffers of 32 tokens per warp; 68 KB lets three CTAs
# (12 warps at d = 128, fp16) share an H100's 228 KB, enough bytes in flight per SM to stream the cache
_SMEM_BUDGET = 69632
_STATIC_SMEM = 4096  # q, the warps' m and l, the parts' weights (MAX_PARTS floats), with slack
MAX_PARTS = 512
ROUNDS = 5
# the cooperative variant: STAGES stages of TT = 16 tokens per warp (a stage holds a full tile's K and V
# values, masks and offsets: 8.9 KB at d = 128, fp16); 110 KB per CTA lets two CTAs share an SM
COOP_TT = 16
# stages per warp, read when a launch is first configured (SPARSEDSL_DECODE_STAGES; the benchmark sweeps
# 2, 3, 4): 3 keeps two tiles in flight per warp with two CTAs per SM; 2, one tile with three CTAs
COOP_STAGES = int(os.environ.get("SPARSEDSL_DECODE_STAGES", "3"))
_COOP_SMEM_BUDGET = 110 * 1024
_COOP_STATIC_SMEM = 4608  # the warps' accumulators, p, m, l, the parts' weights (4400 B at d = 128)
VARIANTS = ("coop", "walk")
# the kernel decode_attention and bitmap_decode run unless told: "coop" (cooperative cp.async staging,
# lane-per-dimension expansion) or "walk" (the first kernel: a lane per token walks its set bits).
# SPARSEDSL_DECODE_VARIANT sets it at import; assign _decode.DEFAULT_VARIANT to change it later. "walk"
# measured faster on an H100 (benchmarks/results/stdlib-attention-gpu-h100.txt, context 32k, H=8, d=128,
# pipelined: B=1 64 us against coop's 80, B=8 401 us against 564; SDPA dense 53 / 345 us)
DEFAULT_VARIANT = os.environ.get("SPARSEDSL_DECODE_VARIANT", "walk")
if DEFAULT_VARIANT not in VARIANTS:
    raise ValueError(f"SPARSEDSL_DECODE_VARIANT must be one of {VARIANTS}; got {DEFAULT_VARIANT!r}")
_kernels: dict = {}
_programs: dict = {}
_workspaces: dict = {}
_launches: dict = {}
_prepared_cache: list = []


def decode_kernel(schedule: dict | None = None):
    """The compiled ``DECODE_PROGRAM`` with K and V declared ``BITMAP3``, one per schedule
    (``{"templates": False}``: the generated code, the fused kernel's oracle)."""
    key = tuple(sorted((schedule or {}).items()))
    if key not in _programs:
        _programs[key] = sd.compile(DECODE_PROGRAM, name="bitmap_decode_attention", schedule=schedule,
                                    K=BITMAP3, V=BITMAP3)
    return _programs[key]


def _config(head_dim: int, value_bytes: int) -> tuple[int, int]:
    """(warps per CTA, dynamic shared bytes) of the decode kernel."""
    per_warp = 2 * 32 * (head_dim + 8) * value_bytes
    nwarps = max(1, min(8, _SMEM_BUDGET // per_warp))
    return nwarps, nwarps * per_warp


def _coop_config(head_dim: int, value_bytes: int, pos_bytes: int, stages: int | None = None) -> tuple[int, int]:
    """(warps per CTA, dynamic shared bytes) of the cooperative kernel: up to 4 warps of ``stages``
    (default COOP_STAGES) stages within the budget."""
    stages = stages or COOP_STAGES
    words = head_dim // 32
    stage = 2 * (COOP_TT * head_dim * value_bytes + 16) + 2 * COOP_TT * words * 4 + 2 * COOP_TT * pos_bytes
    nwarps = 4
    while nwarps > 1 and nwarps * stages * stage > _COOP_SMEM_BUDGET:
        nwarps //= 2
    return nwarps, nwarps * stages * stage


def source(**defines) -> str:
    """The kernel source: ``defines`` (``HEAD_DIM``, ``V_HALF``, ...), ``_decode_common.cuh``, then the
    file of the kernel they name: ``_decode_build.cu`` (``PRUNE_NAME`` or ``PACK_NAME``, the cache's
    build), ``_decode_coop.cu`` (``COOP`` 1) or ``_decode_walk.cu``."""
    kind = "build" if "PRUNE_NAME" in defines or "PACK_NAME" in defines else "coop" if defines.get("COOP") else "walk"
    head = "".join(f"#define {k} {v}\n" for k, v in defines.items())
    return head + _COMMON.read_text() + _SOURCES[kind].read_text()


def _decode_defines(head_dim, v_half, q_half, out_half, pos64, nwarps, variant="walk", stages=None) -> dict:
    stages = stages or COOP_STAGES
    tag = f"coop{stages}" if variant == "coop" else variant
    name = f"sd_bitmap_decode_{tag}_d{head_dim}_v{16 if v_half else 32}_q{16 if q_half else 32}" \
           f"_o{16 if out_half else 32}_p{64 if pos64 else 32}_w{nwarps}"
    defs = {"HEAD_DIM": head_dim, "V_HALF": int(v_half), "Q_HALF": int(q_half), "OUT_HALF": int(out_half),
            "POS64": int(pos64), "NWARPS": nwarps, "MAX_PARTS": MAX_PARTS, "COOP": int(variant == "coop")}
    defs.update({"TT": COOP_TT, "STAGES": stages} if variant == "coop" else {"ROUNDS": ROUNDS})
    return {**defs, "KERNEL_NAME": name}


def _build_defines(step, head_dim, in_half, v_half, pos64) -> dict:
    name = f"sd_bitmap_{step}_d{head_dim}_i{16 if in_half else 32}_v{16 if v_half else 32}_p{64 if pos64 else 32}"
    return {"HEAD_DIM": head_dim, "IN_HALF": int(in_half), "V_HALF": int(v_half), "POS64": int(pos64),
            "NWARPS": 8, f"{step.upper()}_NAME": name}


def _kernel(defines: dict, name_key: str, dyn_smem: int = 0):
    cp = device.cupy()
    key = tuple(sorted(defines.items()))
    if key not in _kernels:
        kern = cp.RawKernel(source(**defines), defines[name_key], options=("-std=c++17",))
        if dyn_smem > 48 * 1024:
            kern.max_dynamic_shared_size_bytes = dyn_smem
        if defines.get("COOP"):  # all of L1 as shared memory: two 110 KB CTAs per SM (a hint to the driver)
            kern.preferred_shared_memory_carveout = 100
        _kernels[key] = kern
    return _kernels[key]


# ---- operands ----------------------------------------------------------------------------------------


def _cupy_array(x):
    """A cupy view of a cupy array or torch CUDA tensor (DLPack, no copy)."""
    cp = device.cupy()
    if type(x).__module__.startswith("torch"):
        return cp.from_dlpack(x.detach().contiguous())
    return cp.asarray(x)


def device_query(q):
    """q as the decode plan binds it (a C-contiguous float16/float32 cupy array, from cupy or a torch
    CUDA tensor without a copy), or None for anything else (bfloat16, other dtypes)."""
    cp = device.cupy()
    if type(q).__module__.startswith("torch"):
        if not q.is_cuda or str(q.dtype) not in ("torch.float16", "torch.float32"):
            return None
        q = cp.from_dlpack(q.detach())
    if not isinstance(q, cp.ndarray) or (q.dtype != cp.float16 and q.dtype != cp.float32):
        return None
    return q if q.flags.c_contiguous else cp.ascontiguousarray(q)


def _aligned(a):
    """``a`` contiguous with a 16-byte aligned start (the kernel's vector loads), copied if not."""
    cp = device.cupy()
    a = cp.ascontiguousarray(a)
    return a if a.data.ptr % 16 == 0 else a.copy()


def _prepared(K: SparseTensor, V: SparseTensor) -> tuple:
    """(K's mask, pos, values, V's mask, pos, values, pos64) as the kernel reads them: aligned, one
    offset type, one value type. Cached for the last two caches (by identity of their values), so
    that a decode step does no array work on the host."""
    for entry in _prepared_cache:
        if entry[0] is K.values and entry[1] is V.values:
            return entry[2]
    cp = device.cupy()
    pos64 = any(t.levels[2]["pos"].dtype == np.int64 for t in (K, V))
    arrays = []
    for t in (K, V):
        lv = t.levels[2]
        pos = lv["pos"].astype(np.int64 if pos64 else np.int32, copy=False)
        arrays += [_aligned(lv["mask"]), pos, _aligned(t.values)]
    if arrays[5].dtype != arrays[2].dtype:
        arrays[5] = arrays[5].astype(arrays[2].dtype)
    if arrays[2].dtype != cp.float16 and arrays[2].dtype != cp.float32:
        raise TypeError(f"bitmap_decode(): K/V values must be float16 or float32; got {arrays[2].dtype}")
    _prepared_cache.insert(0, (K.values, V.values, (*arrays, pos64)))
    del _prepared_cache[2:]
    return _prepared_cache[0][2]


def _workspace(nfloats: int, nheads: int):
    """(parts, tickets) of this device and stream, grown on demand; the tickets are zero between
    launches (the last CTA of each head resets its own)."""
    cp = device.cupy()
    key = (cp.cuda.Device().id, cp.cuda.get_current_stream().ptr)
    part, counter = _workspaces.get(key, (None, None))
    if part is None or part.size < nfloats:
        part = cp.empty(max(nfloats, 1), cp.float32)
    if counter is None or counter.size < nheads:
        counter = cp.zeros(nheads, cp.uint32)
    _workspaces[key] = (part, counter)
    return part, counter


def _tokens_per_warp(n: int, length: int, nwarps: int, dyn_smem: int) -> int:
    """Tokens per warp: about one wave of resident warps over the whole cache, 64 to 256 tokens
    (shorter leaves the parts' merge and each warp's first tile a larger share; longer, too few CTAs
    to balance the SMs at batch 8)."""
    cp = device.cupy()
    attrs = cp.cuda.Device().attributes
    per_sm = attrs.get("MaxSharedMemoryPerMultiprocessor", 228 * 1024)
    ctas = max(1, per_sm // (dyn_smem + _STATIC_SMEM + 1024))
    warps = device.device_sms() * ctas * nwarps
    tw = -(-n * length // warps)
    return int(min(256, max(64, -(-tw // 32) * 32)))


def _coop_tokens_per_warp(n: int, length: int, nwarps: int, dyn_smem: int) -> int:
    """Tokens per warp of the cooperative kernel: the parts per head chosen so that the n heads' CTAs
    fill one wave of resident CTAs (B = 1, 8 heads on 132 SMs × 2: 33 parts; B = 8: 4), at least
    four tiles per warp."""
    cp = device.cupy()
    attrs = cp.cuda.Device().attributes
    per_sm = attrs.get("MaxSharedMemoryPerMultiprocessor", 228 * 1024)
    slots = device.device_sms() * max(1, per_sm // (dyn_smem + _COOP_STATIC_SMEM + 1024))
    nparts = max(1, slots // max(n, 1))
    tw = -(-length // (nparts * nwarps))
    return int(max(4 * COOP_TT, -(-tw // COOP_TT) * COOP_TT))


def _variant(variant) -> str:
    variant = DEFAULT_VARIANT if variant is None else variant
    if variant not in VARIANTS:
        raise ValueError(f"bitmap_decode(): variant must be one of {VARIANTS}; got {variant!r}")
    return variant


def _launch(n, length, d, v_half, q_half, out_half, pos64, tokens_per_warp, variant=None):
    """(kernel, warps per CTA, dynamic shared bytes, tokens per warp, parts per head), cached per
    shape, types and variant: a decode step's host work is a dict lookup and one launch."""
    variant = _variant(variant)
    key = (device.cupy().cuda.runtime.getDevice(), n, length, d, v_half, q_half, out_half, pos64, tokens_per_warp,
           variant, COOP_STAGES)
    if key not in _launches:
        if variant == "coop":
            nwarps, dyn = _coop_config(d, 2 if v_half else 4, 8 if pos64 else 4)
            tw = tokens_per_warp or _coop_tokens_per_warp(n, length, nwarps, dyn)
        else:
            nwarps, dyn = _config(d, 2 if v_half else 4)
            tw = tokens_per_warp or _tokens_per_warp(n, length, nwarps, dyn)
        tw = max(32, -(-int(tw) // 32) * 32)
        while -(-length // (nwarps * tw)) > MAX_PARTS:
            tw *= 2
        nparts = max(1, -(-length // (nwarps * tw)))
        kern = _kernel(_decode_defines(d, v_half, q_half, out_half, pos64, nwarps, variant), "KERNEL_NAME", dyn)
        _launches[key] = (kern, nwarps, dyn, tw, nparts)
    return _launches[key]


# ---- decode -------------------------------------------------------------------------------------------


def bitmap_decode(q, K: SparseTensor, V: SparseTensor, scale: float, *, out_dtype=np.float32,
                  tokens_per_warp: int | None = None, variant: str | None = None):
    """o[h] = softmax_j(scale · K[h,j,:] · q[h]) V[h,j,:] for each slice h, on the GPU: q (n, d)
    float16/float32 (cupy or torch CUDA), K and V device SparseTensors in ``BITMAP3`` with float16 or
    float32 values. Returns a cupy (n, d) array of ``out_dtype`` (float16 or float32). ``variant``:
    "coop" or "walk" (``VARIANTS``; default ``DEFAULT_VARIANT``)."""
    cp = device.cupy()
    n, length, d = K.shape
    qa = q if type(q) is cp.ndarray else _cupy_array(q)
    if qa.dtype != cp.float16 and qa.dtype != cp.float32:
        qa = qa.astype(cp.float32)
    if not qa.flags.c_contiguous:
        qa = cp.ascontiguousarray(qa)
    kmask, kpos, kval, vmask, vpos, vval, pos64 = _prepared(K, V)
    half_out = np.dtype(out_dtype) == np.float16
    out = cp.empty((n, d), cp.float16 if half_out else cp.float32)
    if n == 0:
        return out
    kern, nwarps, dyn, tw, nparts = _launch(n, length, d, kval.dtype == cp.float16, qa.dtype == cp.float16,
                                            half_out, pos64, tokens_per_warp, variant)
    part, counter = _workspace(n * nparts * (d + 2), n)
    kern((n * nparts,), (32 * nwarps,),
         (qa, kmask, kpos, kval, np.int64(kval.size), vmask, vpos, vval, np.int64(vval.size),
          np.int32(length), np.int32(tw), np.int32(nparts), np.float32(scale * math.log2(math.e)),
          part, counter, out), shared_mem=dyn)
    return out


class DecodeStep:
    """One decode step's launch prepared once for a cache and a query signature: the kernel's
    function, grid, arguments (device pointers of the cache and the workspace, packed for
    ``cuLaunchKernel``) and stream are fixed, so that a step only writes the query's and the output's
    pointers and launches (``decode_attention`` keeps one per signature; a few µs of host time against
    ~40 through cupy's argument handling, more than the GPU time of a batch-1 step)."""

    def __init__(self, K: SparseTensor, V: SparseTensor, q_half: bool, out_half: bool, scale: float,
                 variant: str | None = None, tokens_per_warp: int | None = None):
        cp = device.cupy()
        n, length, d = K.shape
        kmask, kpos, kval, vmask, vpos, vval, pos64 = _prepared(K, V)
        kern, nwarps, dyn, tw, nparts = _launch(n, length, d, kval.dtype == cp.float16, q_half, out_half, pos64,
                                                tokens_per_warp, variant)
        self.launch_config = {"variant": _variant(variant), "warps_per_cta": nwarps, "dynamic_smem": dyn,
                              "tokens_per_warp": tw, "parts_per_head": nparts, "ctas": n * nparts}
        part, counter = _workspace(n * nparts * (d + 2), n)
        self.shape, self.out_dtype = (n, d), np.float16 if out_half else np.float32
        self.stream = cp.cuda.get_current_stream().ptr
        self.function = kern.kernel.ptr  # compiled and loaded on the current device now
        self.grid, self.block, self.smem = n * nparts, 32 * nwarps, dyn
        self._alive = (kmask, kpos, kval, vmask, vpos, vval, part, counter)
        ptr = ctypes.c_uint64
        self._args = [ptr(0), ptr(kmask.data.ptr), ptr(kpos.data.ptr), ptr(kval.data.ptr), ctypes.c_int64(kval.size),
                      ptr(vmask.data.ptr), ptr(vpos.data.ptr), ptr(vval.data.ptr), ctypes.c_int64(vval.size),
                      ctypes.c_int32(length), ctypes.c_int32(tw), ctypes.c_int32(nparts),
                      ctypes.c_float(scale * math.log2(math.e)), ptr(part.data.ptr), ptr(counter.data.ptr), ptr(0)]
        self._params = (ctypes.c_void_p * len(self._args))(*(ctypes.addressof(a) for a in self._args))
        self._params_ptr = ctypes.addressof(self._params)
        self._q, self._out = self._args[0], self._args[-1]
        self._launch = cp.cuda.driver.launchKernel

    def __call__(self, q_ptr: int, out_ptr: int) -> None:
        """Launch on the stream it was built for: q (n, d) at ``q_ptr``, C-contiguous in the dtype it
        was built for, the output (n, d) at ``out_ptr``."""
        self._q.value, self._out.value = q_ptr, out_ptr
        self._launch(self.function, self.grid, 1, 1, self.block, 1, 1, self.smem, self.stream, self._params_ptr, 0)


# ---- the cache, built and read back on the GPU ----------------------------------------------------------


def bitmap_from_dense(x, sparsity: float, dtype="float16") -> SparseTensor:
    """x (n, L, d) on the GPU (cupy or torch CUDA, d in ``HEAD_DIMS``), each token's vector pruned
    to its round((1 − sparsity)·d) largest magnitudes, as a device SparseTensor in ``BITMAP3`` with
    ``dtype`` (float16 or float32) values. Equals ``bitmap_3d(prune_per_token(x, sparsity))`` moved to
    the GPU, up to ties among equal magnitudes (kept here in dim order) and the values' rounding."""
    cp = device.cupy()
    xa = _cupy_array(x)
    n, length, d = xa.shape
    if d not in HEAD_DIMS:
        raise ValueError(f"bitmap_from_dense(): the GPU build takes d in {HEAD_DIMS}; got d = {d}")
    if xa.dtype not in (cp.float16, cp.float32):
        xa = xa.astype(cp.float32)
    xa = cp.ascontiguousarray(xa).reshape(n * length, d)
    rows, words = n * length, d // 32
    keep = min(d, int(round((1 - sparsity) * d)))
    in_half, v_half = xa.dtype == cp.float16, np.dtype(dtype) == np.float16
    mask = cp.empty(rows * words, cp.uint32)
    counts = cp.empty(max(rows, 1), cp.int32)
    grid = (-(-rows // 8),)
    if rows:
        prune = _kernel(_build_defines("prune", d, in_half, v_half, False), "PRUNE_NAME")
        prune(grid, (256,), (xa, np.int64(rows), np.int32(keep), mask, counts))
    pos = cp.zeros(rows + 1, cp.int64)
    if rows:
        cp.cumsum(counts[:rows], dtype=cp.int64, out=pos[1:])
    nnz = int(pos[-1])
    pos = pos.astype(index_dtype(max(nnz, rows * words)), copy=False)
    vals = cp.empty(nnz, cp.float16 if v_half else cp.float32)
    if nnz:
        pack = _kernel(_build_defines("pack", d, in_half, v_half, pos.dtype == cp.int64), "PACK_NAME")
        pack(grid, (256,), (xa, np.int64(rows), mask, pos, vals))
    return SparseTensor(BITMAP3, (n, length, d), [{}, {}, {"mask": mask, "pos": pos}], vals, check=False)


def bitmap_to_dense(t: SparseTensor):
    """The dense (n, L, d) cupy array of a device ``BITMAP3`` tensor (the pruned cache that decode
    attention must equal dense attention on), in its values' dtype."""
    cp = device.cupy()
    n, length, d = t.shape
    words = -(-d // 32)
    mask = t.levels[2]["mask"].reshape(n * length, words)
    bits = (mask[:, :, None] >> cp.arange(32, dtype=cp.uint32)) & cp.uint32(1)
    dense = cp.zeros((n * length, words * 32), t.values.dtype)
    dense.reshape(-1)[cp.flatnonzero(bits.reshape(-1))] = t.values  # row-major: the packing order
    return dense[:, :d].reshape(n, length, d)


# ---- the template ----------------------------------------------------------------------------------------


def _fits(m) -> str | None:
    K, V, q = m.type("K"), m.type("V"), m.type("q")
    want = as_format(BITMAP3, 3)
    if K.format != want or V.format != want:
        return f"K is {K.format} and V {V.format}; the kernel reads {BITMAP3}"
    if tuple(K.shape) != tuple(V.shape):
        return f"K {K.shape} and V {V.shape} differ in shape"
    n, length, d = K.shape
    if d not in HEAD_DIMS:
        return f"head dim {d}: the kernel takes {', '.join(map(str, HEAD_DIMS))}"
    if length == 0:
        return "the context is empty"
    kv = {np.dtype(K.dtype).name, np.dtype(V.dtype).name}
    if len(kv) != 1 or not kv <= {"float16", "float32"}:
        return f"K/V values are {', '.join(sorted(kv))}; the kernel takes float16 or float32 (the same for both)"
    qd = getattr(q, "storage", None) or np.dtype(q.dtype).name
    if qd not in ("float16", "float32"):
        return f"q is {qd}; the kernel takes float16 or float32"
    return None


def _ready(ops) -> bool:
    """Whether the operands are what the kernel reads (device cupy arrays; bfloat16 storage, which
    the plan's types cannot tell from float32, is not)."""
    cp = device.cupy()
    K, V, q = ops["K"], ops["V"], ops["q"]
    return all(isinstance(t.values, cp.ndarray) and t.values.dtype in (cp.float16, cp.float32) for t in (K, V)) \
        and isinstance(q, cp.ndarray) and q.dtype in (cp.float16, cp.float32)


def _build(m):
    out_dtype = np.dtype(m.type("o").dtype)

    def run(ops):
        if not _ready(ops):
            return {"o": decode_kernel({"templates": False})(K=ops["K"], V=ops["V"], q=ops["q"], scale=ops["scale"],
                                                             backend="cuda")}
        return {"o": bitmap_decode(ops["q"], ops["K"], ops["V"], float(ops["scale"]), out_dtype=out_dtype)}
    return run


TEMPLATE = templates.register(templates.Template(
    name=NAME, backend="cuda", stage="program", pattern=DECODE_PROGRAM, fits=_fits, build=_build,
    doc="flash-decoding over the bitmap KV cache: one launch, tiles of 32 tokens staged with 16-byte loads"))


# ---- compile check without a GPU -------------------------------------------------------------------------


def variants() -> list[dict]:
    """The defines of every kernel variant the launchers can ask for."""
    out = []
    for d in HEAD_DIMS:
        for v_half in (True, False):
            for q_half in (True, False):
                for out_half in (True, False):
                    for pos64 in (False, True):
                        nwarps, _ = _config(d, 2 if v_half else 4)
                        out.append(_decode_defines(d, v_half, q_half, out_half, pos64, nwarps, "walk"))
                        nwarps, _ = _coop_config(d, 2 if v_half else 4, 8 if pos64 else 4)
                        out.append(_decode_defines(d, v_half, q_half, out_half, pos64, nwarps, "coop"))
            for in_half in (True, False):
                for pos64 in (False, True):
                    out.append(_build_defines("pack", d, in_half, v_half, pos64))
                out.append(_build_defines("prune", d, in_half, v_half, False))
    for stages in (2, 4):  # the benchmark's sweep
        nwarps, _ = _coop_config(128, 2, 4, stages)
        out.append(_decode_defines(128, True, True, True, False, nwarps, "coop", stages))
    return out


def nvrtc_compile(src: str, lib: str, arch: str = "sm_90", options: tuple = ("-std=c++17",)) -> tuple[bool, str]:
    """(compiled?, log) of ``src`` through NVRTC loaded from ``lib`` (ctypes; no cupy, no GPU)."""
    import ctypes

    nv = ctypes.CDLL(lib)
    prog = ctypes.c_void_p()
    rc = nv.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"decode.cu", 0, None, None)
    if rc:
        return False, f"nvrtcCreateProgram: {rc}"
    opts = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in options)]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = nv.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nv.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nv.nvrtcGetProgramLog(prog, log)
    nv.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc == 0, log.value.decode(errors="replace")


def compile_check(lib: str, arch: str = "sm_90") -> bool:
    """Compile every variant with NVRTC from ``lib`` (no GPU, no cupy), print each log; True when all
    compiled (``python -m benchmarks.stdlib_attention --compile-only --nvrtc PATH`` runs it)."""
    failed = 0
    for defs in variants():
        name = next(v for k, v in defs.items() if k.endswith("_NAME"))
        ok, log = nvrtc_compile(source(**defs), lib, arch)
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}" + (f"\n{log.strip()}" if log.strip() else ""))
    print(f"{len(variants()) - failed} of {len(variants())} variants compiled")
    return not failed

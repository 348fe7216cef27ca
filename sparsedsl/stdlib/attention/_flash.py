"""The fused block-sparse flash-attention kernel for the GPU, registered as a program template.

It matches ``ATTENTION_PROGRAM`` (SDDMM over the mask → masked row softmax → SpMM with V) when the
mask is in the 3-D blocked format (r, c multiples of 64), q/k/v are 16-bit and the head dimension is
64 or 128; the plan then runs the kernel (``_flash_common.cuh`` and one version's file,
``_flash_v1.cu``, ``_flash_v2.cu`` or ``_flash_v3.cu``) instead of the five generated kernels, which
stay the fallback (``schedule={"templates": False}``) and the oracle of its tests.

The kernel: FlashAttention-2's online softmax over each query tile's stored mask blocks only (empty
blocks are never visited), the mask read only in partial blocks. Three versions, chosen by a named
``Config`` (``CONFIGS``; ``CONFIG`` or $SPARSEDSL_FLASH_CONFIG picks the default, the sweep
``benchmarks/attention_kernel_sweep.py`` measures them): 1, mma.sync with a warp per 16 query rows;
2, mma.sync with register blocking (a warp per 16·mt rows, FlashAttention-2's layout); 3, Hopper
wgmma (sm_90a, a warpgroup per 64 rows), compiled here by NVRTC since cupy does not target sm_90a.

References
----------
Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023;
Dong et al., "Flex Attention: A Programming Model for Generating Optimized Attention Kernels", 2024
(block masks with full and partial blocks).
"""

from __future__ import annotations

import math
import os
import pathlib
from dataclasses import dataclass, replace

import numpy as np

from sparsedsl import templates

from ._core import ATTENTION_PROGRAM, blocked_format

NAME = "attention.block_sparse_flash"
# the kernel source: the part every version shares, then one file per version (concatenated into one
# string for NVRTC: no #include, so the source does not depend on a search path)
_COMMON = pathlib.Path(__file__).with_name("_flash_common.cuh")
_VERSION_SOURCES = {v: pathlib.Path(__file__).with_name(f"_flash_v{v}.cu") for v in (1, 2, 3)}
_kernels: dict = {}
_mask_cache: list = []  # (values array, pos, crd, vals, full, bits): the last few masks' device metadata


def _fits(m) -> str | None:
    fmt = m.type("M").format
    blocks = fmt.blocks
    if fmt.ndim != 3 or set(blocks) != {1, 2} or fmt != blocked_format((blocks[1], blocks[2])):
        return f"the mask is {fmt}, not the 3-D blocked format (h: dense, i / r: dense, j / c: compressed, ...)"
    r, c = blocks[1], blocks[2]
    if r % 64 or c % 64:
        return f"the mask's blocks are {r}x{c}; the kernel needs multiples of 64"
    q, k, v = m.type("Q"), m.type("K"), m.type("V")
    dts = {x.storage or np.dtype(x.dtype).name for x in (q, k, v)}  # storage: bfloat16 on the device
    if len(dts) != 1 or dts.pop() not in ("float16", "bfloat16"):
        return f"q/k/v stored as {', '.join(sorted(dts))}: the kernel takes float16 or bfloat16 storage"
    d = q.shape[2]
    if d not in (64, 128) or v.shape[2] != d:
        return f"head dim {d} (v: {v.shape[2]}): the kernel takes 64 or 128, the same for q, k and v"
    return None


@dataclass(frozen=True)
class Config:
    """One compile-time configuration of the kernel (``_flash_v{version}.cu``). version 1: a warp per
    16 query rows (the first kernel); version 2: register blocking, a warp per ``16 * mt`` rows, so
    each K/V fragment read from shared memory feeds ``mt`` MMAs; version 3: wgmma, a warpgroup (4
    warps) per 64 rows. ``bn``: key/value tile rows (versions 2, 3); ``qreg``: Q held in registers
    (else re-read from shared memory each k-step); ``minblocks``: CTAs per SM promised to ptxas (a
    register cap)."""

    version: int
    nwarps: int
    mt: int = 1
    bn: int = 64
    qreg: bool = False
    minblocks: int = 1
    overlap: bool = False  # version 3: S of the next tile issued before this tile's softmax (3 stages)

    @property
    def bm(self) -> int:  # query rows per CTA
        return 64 * (self.nwarps // 4) if self.version == 3 else 16 * self.mt * self.nwarps

    def fits(self, r: int, c: int) -> bool:
        return r % self.bm == 0 and c % self.bn == 0

    def smem(self, head_dim: int) -> int:  # Q tile, K and V stages (version 3: unpadded rows)
        return (self.bm + 2 * (3 if self.overlap else 2) * self.bn) * (head_dim + (0 if self.version == 3 else 8)) * 2

    def kernel_name(self, head_dim: int, bf16: bool) -> str:
        return (f"sd_flash_v{self.version}_w{self.nwarps}_m{self.mt}_n{self.bn}{'_q' if self.qreg else ''}"
                f"{'_ov' if self.overlap else ''}_b{self.minblocks}_d{head_dim}_{'bf16' if bf16 else 'f16'}")

    def source(self, head_dim: int, bf16: bool) -> str:
        """The kernel's CUDA source: the defines, then ``_flash_common.cuh`` and ``_flash_v{version}.cu``."""
        defines = {"KERNEL_VERSION": self.version, "HEAD_DIM": head_dim, "IS_BF16": int(bf16),
                   "NWARPS": self.nwarps, "MT": self.mt, "BN": self.bn, "QREG": int(self.qreg),
                   "MINBLOCKS": self.minblocks, "OVERLAP": int(self.overlap),
                   "KERNEL_NAME": self.kernel_name(head_dim, bf16)}
        head = "".join(f"#define {k} {v}\n" for k, v in defines.items())
        if self.version == 3:
            head += _wgmma_wrappers(self.bn, head_dim, bf16)
        return head + _COMMON.read_text() + _VERSION_SOURCES[self.version].read_text()


def _wgmma(n: int, bf16: bool, a_regs: bool, trans_b: int) -> str:
    """A device function issuing one ``wgmma.mma_async`` m64{n}k16 (f32 accumulators ``d``, n / 2 per
    thread; A from shared memory by descriptor ``da`` or from registers ``a``; B by descriptor ``db``;
    ``scale_d`` 0 overwrites the accumulators)."""
    t = "bf16" if bf16 else "f16"
    nd = n // 2
    regs = ", ".join(f"%{i}" for i in range(nd))
    if a_regs:
        a_op, b, p = "{" + ", ".join(f"%{nd + i}" for i in range(4)) + "}", nd + 4, nd + 5
        imm, a_in, a_arg = f"1, 1, {trans_b}", [f'"r"(a[{i}])' for i in range(4)], "const unsigned int* a"
    else:
        a_op, b, p = f"%{nd}", nd + 1, nd + 2
        imm, a_in, a_arg = f"1, 1, 0, {trans_b}", ['"l"(da)'], "unsigned long long da"
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(nd))
    ins = ", ".join(a_in + ['"l"(db)', '"r"(scale_d)'])
    name = f"wgmma_{'rs' if a_regs else 'ss'}_n{n}_t{trans_b}"
    return (f"__device__ __forceinline__ void {name}(float* d, {a_arg}, unsigned long long db, int scale_d) {{\n"
            f'    asm volatile("{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{p}, 0;\\n"\n'
            f'                 "wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{t}.{t} {{{regs}}}, {a_op}, %{b}, p, '
            f'{imm};\\n}}\\n"\n'
            f"                 : {outs}\n                 : {ins});\n}}\n")


def _wgmma_wrappers(bn: int, head_dim: int, bf16: bool) -> str:
    """Version 3's wgmma calls: S = Q K^T (m64n{bn}, A from shared memory or registers) and O += P V
    (m64n{head_dim}, A from registers, B transposed)."""
    return (_wgmma(bn, bf16, False, 0) + _wgmma(bn, bf16, True, 0) + _wgmma(head_dim, bf16, True, 1)
            + f"#define WGMMA_S_SS wgmma_ss_n{bn}_t0\n#define WGMMA_S_RS wgmma_rs_n{bn}_t0\n"
            f"#define WGMMA_O_RS wgmma_rs_n{head_dim}_t1\n")


# The configurations the sweep (benchmarks/attention_kernel_sweep.py) measures. BM (query rows per CTA)
# must divide the mask's block rows and bn its block columns; otherwise ``_choose`` falls back.
CONFIGS = {
    "v1-w4": Config(1, 4),
    "v1-w8": Config(1, 8),
    "v2-w4-m1": Config(2, 4, 1),
    "v2-w4-m2": Config(2, 4, 2),            # FlashAttention-2's layout: 128 rows, 4 warps x 32
    "v2-w4-m2-n32": Config(2, 4, 2, bn=32),  # fewer S registers
    "v2-w4-m2-n32-q": Config(2, 4, 2, bn=32, qreg=True),  # Q in registers (d=128: ~100 B of spills)
    "v2-w8-m1": Config(2, 8, 1),
    "v2-w8-m2": Config(2, 8, 2),            # 256 rows: masks with 256-row blocks
    "v3-wg1": Config(3, 4),                 # wgmma: one warpgroup, 64 rows
    "v3-wg2": Config(3, 8),                 # two warpgroups, 128 rows, sharing K/V tiles
    "v3-wg2-q": Config(3, 8, qreg=True),    # Q in registers (S = Q K^T with A from registers)
    "v3-wg2-n128": Config(3, 8, bn=128),    # 128-key tiles where the blocks are 128 wide (else 64)
    "v3-wg1-q": Config(3, 4, qreg=True),
    "v3-wg1-ov": Config(3, 4, overlap=True),  # FlashAttention-3's intra-warpgroup overlap, 3 K/V stages
    "v3-wg2-ov": Config(3, 8, overlap=True),
}
# The configuration used, by name (SPARSEDSL_FLASH_CONFIG overrides it): the fastest correct one in the
# H100 sweep (benchmarks/results/attention-sweep-h100.txt: sliding window 0.644 ms, causal 3.48 ms,
# against 0.964 / 5.49 ms for v1-w4; the wgmma configs v3-* were correct but slower, 0.885 / 4.84 ms).
CONFIG = os.environ.get("SPARSEDSL_FLASH_CONFIG", "v2-w4-m2")


def _choose(name: str | None, r: int, c: int, nwarps: int | None = None, hopper: bool = True) -> Config:
    """The named configuration (``nwarps`` overriding its warp count), or the nearest that fits r x c
    blocks: 64-row key tiles, one m16 tile per warp, then 4 warps (r, c are multiples of 64).
    Without a Hopper GPU (``hopper``), a wgmma (version 3) configuration becomes FlashAttention-2's."""
    name = name or CONFIG
    if name not in CONFIGS:
        raise ValueError(f"flash attention config {name!r} is not one of {sorted(CONFIGS)}")
    cfg = CONFIGS[name]
    if cfg.version == 3 and not hopper:
        cfg = CONFIGS["v2-w4-m2"]
    if nwarps:
        if cfg.version == 3 and nwarps % 4:
            raise ValueError(f"nwarps={nwarps}: a wgmma config ({name!r}) takes whole warpgroups (4 or 8 warps)")
        cfg = replace(cfg, nwarps=nwarps)
    for cand in (cfg, replace(cfg, bn=64), replace(cfg, mt=1), replace(cfg, mt=1, bn=64),
                 replace(cfg, nwarps=4, mt=1, bn=64)):
        if cand.fits(r, c):
            return cand
    raise AssertionError("unreachable: 64 x 64 always fits")


def _hopper() -> bool:
    """Whether the current GPU is sm_90 (wgmma), remembered per device."""
    import cupy as cp

    dev = cp.cuda.Device().id
    if dev not in _hopper_cache:
        _hopper_cache[dev] = cp.cuda.Device(dev).compute_capability == "90"
    return _hopper_cache[dev]


_hopper_cache: dict = {}


def _compiled(head_dim: int, bf16: bool, cfg: Config):
    import cupy as cp

    key = (head_dim, bf16, cfg)
    if key not in _kernels:
        src, name = cfg.source(head_dim, bf16), cfg.kernel_name(head_dim, bf16)
        if cfg.version == 3:  # sm_90a, which cupy's compile does not target: NVRTC to a cubin here
            kern = cp.RawModule(path=_cubin(src, name)).get_function(name)
        else:
            kern = cp.RawKernel(src, name, options=("-std=c++17",))
        kern.max_dynamic_shared_size_bytes = cfg.smem(head_dim)
        _kernels[key] = kern
    return _kernels[key]


def _cubin(src: str, name: str) -> str:
    """Path of the sm_90a cubin of ``src``, compiled once into a cache folder (``SPARSEDSL_CACHE`` or
    ~/.cache/sparsedsl) under a hash of the source and NVRTC's version; written atomically."""
    import hashlib
    import tempfile

    folder = pathlib.Path(os.environ.get("SPARSEDSL_CACHE", pathlib.Path.home() / ".cache" / "sparsedsl")) / "flash"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home
        folder = pathlib.Path(tempfile.gettempdir()) / "sparsedsl-flash"
        folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{_nvrtc_version()} sm_90a\n{src}".encode()).hexdigest()[:16]
    path = folder / f"{name}-{key}.cubin"
    if not path.exists():
        ok, log, cubin = nvrtc_compile(src, name, "sm_90a")
        if not ok:
            raise RuntimeError(f"NVRTC failed to compile {name} for sm_90a:\n{log[-4000:]}")
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(cubin)
        os.replace(tmp, path)
    return str(path)


def _nvrtc():
    import ctypes
    import glob

    cands = [os.environ.get("NVRTC_LIB", "")]
    try:
        import nvidia.cuda_nvrtc as pkg  # the pip wheel (torch depends on it)

        cands += sorted(glob.glob(os.path.join(list(pkg.__path__)[0], "lib", "libnvrtc.so*")))
    except ImportError:
        pass
    cands += ["libnvrtc.so.12", "/usr/local/cuda/lib64/libnvrtc.so.12", "libnvrtc.so"]
    for path in cands:
        if path and "builtins" not in path and ".alt." not in path:
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    raise OSError("libnvrtc.so.12 not found (pip install nvidia-cuda-nvrtc-cu12, or set NVRTC_LIB)")


def _nvrtc_version() -> str:
    import ctypes

    major, minor = ctypes.c_int(), ctypes.c_int()
    _nvrtc().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"nvrtc {major.value}.{minor.value}"


def nvrtc_compile(src: str, name: str, arch: str = "sm_90a", extra=()) -> tuple[bool, str, bytes]:
    """(ok, log, cubin) of NVRTC (through ctypes) compiling ``src`` for ``arch`` with ptxas's
    resource report (registers, spills) in the log."""
    import ctypes

    lib = _nvrtc()
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), f"{name}.cu".encode(), 0, None, None)
    if rc:
        return False, f"nvrtcCreateProgram failed ({rc})", b""
    opts = [f"--gpu-architecture={arch}", "-std=c++17", "--ptxas-options=-v", *extra]
    rc = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts]))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    cubin = b""
    if rc == 0:
        lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetCUBIN(prog, buf)
        cubin = buf.raw
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc == 0, log.value.decode(errors="replace"), cubin


def _mask_arrays(M):
    """(pos int32, crd int32, values uint8, full uint8, bits uint64) on the device, cached per mask.
    bits: each block row's entries packed little-endian into 64-bit words (version 2 reads these)."""
    import cupy as cp

    for entry in _mask_cache:
        if entry[0] is M.values:
            return entry[1:]
    r, c = M.format.blocks[1], M.format.blocks[2]
    pos = cp.asarray(M.levels[2]["pos"]).astype(cp.int32, copy=False)
    crd = cp.asarray(M.levels[2]["crd"]).astype(cp.int32, copy=False)
    vals = cp.asarray(M.values)
    vals = vals.view(cp.uint8) if vals.dtype == cp.bool_ else (vals != 0).view(cp.uint8)
    if len(crd):
        full = vals.reshape(-1, r * c).all(axis=1).astype(cp.uint8)
        weights = (1 << cp.arange(8, dtype=cp.uint8)).astype(cp.uint8)
        bits = (vals.reshape(-1, 8) * weights).sum(axis=1, dtype=cp.uint8).view(cp.uint64)
    else:
        full, bits = cp.zeros(1, cp.uint8), cp.zeros(1, cp.uint64)
    _mask_cache.insert(0, (M.values, pos, crd, vals, full, bits))
    del _mask_cache[4:]
    return pos, crd, vals, full, bits


def _bits(x):
    """(uint16 cupy array, is_bf16) of a 16-bit operand, or None for float32 storage."""
    import cupy as cp

    if type(x).__module__.startswith("torch"):  # torch CUDA tensors (benchmarks call the kernel directly)
        import torch

        if x.dtype == torch.bfloat16:
            return cp.from_dlpack(x.detach().contiguous().view(torch.int16)).view(cp.uint16), True
        x = cp.from_dlpack(x.detach().contiguous())
    if getattr(x, "sd_storage", None) == "bfloat16":
        return cp.ascontiguousarray(x.bits), True
    if x.dtype == cp.float16:
        return cp.ascontiguousarray(x).view(cp.uint16), False
    return None


def _fallback(ops):
    """float32 storage (which the plan's types cannot tell from bfloat16): the generated code."""
    from ._core import attention_kernel

    kernel = attention_kernel(ops["M"].format, {"templates": False})
    return {"O": kernel(M=ops["M"], Q=ops["Q"], K=ops["K"], V=ops["V"], scale=ops["scale"], backend="cuda")}


def fused_attention(Q, K, V, M, scale: float, out_dtype=np.float32, nwarps: int | None = None,
                    config: str | None = None, out16: bool = False):
    """Run the kernel: Q (n, Lq, d), K/V (n, Lk, d) 16-bit device arrays, M a device SparseTensor in
    the 3-D blocked format. Returns O (n, Lq, d) as ``out_dtype`` (float32 accumulation).

    ``config`` names one of ``CONFIGS`` (default ``CONFIG``), ``nwarps`` overrides its warp count.
    ``out16``: the kernel writes O in the inputs' 16-bit type (versions 2 and 3) and this returns it as
    a torch tensor when Q is one, else a cupy float16 array (bfloat16: its uint16 bit patterns)."""
    import cupy as cp

    q, k, v = _bits(Q), _bits(K), _bits(V)
    if q is None or k is None or v is None or len({q[1], k[1], v[1]}) != 1:
        raise TypeError("fused_attention(): q, k and v must all be float16 or all bfloat16 on the GPU")
    n, lq, d = Q.shape
    lk = K.shape[1]
    r, c = M.format.blocks[1], M.format.blocks[2]
    cfg = _choose(config, r, c, nwarps, _hopper())
    if out16 and cfg.version == 1:
        raise ValueError(f"fused_attention(out16=True) needs a version-2 or 3 config; {config or CONFIG!r} "
                         "is version 1")
    half_out = np.dtype(out_dtype) == np.float16 and not q[1] and cfg.version >= 2  # written as float16
    pos, crd, vals, full, bits = _mask_arrays(M)
    out = cp.empty((n, lq, d), cp.uint16 if out16 or half_out else cp.float32)
    kern = _compiled(d, q[1], cfg)
    args = (q[0], k[0], v[0], pos, crd, vals if cfg.version == 1 else bits, full, out, np.int32(lq), np.int32(lk),
            np.int32(r), np.int32(c), np.int32(lq // r), np.float32(scale * math.log2(math.e)))
    if cfg.version >= 2:
        args += (np.int32(out16 or half_out),)
    grid = (lq // cfg.bm, n) if cfg.version == 1 else (n, lq // cfg.bm)  # versions 2, 3: heavy tiles first
    kern(grid, (32 * cfg.nwarps,), args, shared_mem=cfg.smem(d))
    if half_out and not out16:
        return out.view(cp.float16)
    if out16:
        if type(Q).__module__.startswith("torch"):
            import torch

            return torch.from_dlpack(out.view(cp.int16)).view(Q.dtype)
        return out if q[1] else out.view(cp.float16)
    return out if np.dtype(out_dtype) == np.float32 else out.astype(out_dtype)


def _build(m):
    out_dtype = m.type("O").dtype

    def run(ops):
        if _bits(ops["Q"]) is None:
            return _fallback(ops)
        return {"O": fused_attention(ops["Q"], ops["K"], ops["V"], ops["M"], float(ops["scale"]), out_dtype)}
    return run


TEMPLATE = templates.register(templates.Template(
    name=NAME, backend="cuda", stage="program", pattern=ATTENTION_PROGRAM, fits=_fits, build=_build,
    doc="FlashAttention-2-style block-sparse attention over a blocked mask's stored blocks (mma.sync, bf16/f16)"))

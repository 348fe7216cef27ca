"""The fused block-sparse flash-attention kernel for the GPU, registered as a program template.

It matches ``ATTENTION_PROGRAM`` (SDDMM over the mask → masked row softmax → SpMM with V) when the
mask is in the 3-D blocked format (r, c multiples of 64), q/k/v are 16-bit and the head dimension is
64 or 128; the plan then runs ``_flash_kernel.cu`` instead of the five generated kernels, which stay
the fallback (``schedule={"templates": False}``) and the oracle of its tests.

The kernel: FlashAttention-2's online softmax over each query tile's stored mask blocks only (empty
blocks are never visited), tensor cores through mma.sync, the mask's bytes read only in partial blocks.

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
_SOURCE = pathlib.Path(__file__).with_name("_flash_kernel.cu")
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
    """One compile-time configuration of ``_flash_kernel.cu``. version 1: a warp per 16 query rows
    (the first kernel); version 2: register blocking, a warp per ``16 * mt`` rows, so each K/V
    fragment read from shared memory feeds ``mt`` MMAs. ``bn``: key/value tile rows (version 2);
    ``qreg``: Q held in registers (else re-read from shared memory each k-step)."""

    version: int
    nwarps: int
    mt: int = 1
    bn: int = 64
    qreg: bool = False
    minblocks: int = 1

    @property
    def bm(self) -> int:  # query rows per CTA
        return 16 * self.mt * self.nwarps

    def fits(self, r: int, c: int) -> bool:
        return r % self.bm == 0 and c % self.bn == 0

    def smem(self, head_dim: int) -> int:  # Q tile, two K stages, two V stages (padded rows)
        return (self.bm + 4 * self.bn) * (head_dim + 8) * 2

    def kernel_name(self, head_dim: int, bf16: bool) -> str:
        return (f"sd_flash_v{self.version}_w{self.nwarps}_m{self.mt}_n{self.bn}{'_q' if self.qreg else ''}"
                f"_b{self.minblocks}_d{head_dim}_{'bf16' if bf16 else 'f16'}")

    def source(self, head_dim: int, bf16: bool) -> str:
        """The kernel's CUDA source: the defines, then ``_flash_kernel.cu``."""
        defines = {"KERNEL_VERSION": self.version, "HEAD_DIM": head_dim, "IS_BF16": int(bf16),
                   "NWARPS": self.nwarps, "MT": self.mt, "BN": self.bn, "QREG": int(self.qreg),
                   "MINBLOCKS": self.minblocks, "KERNEL_NAME": self.kernel_name(head_dim, bf16)}
        return "".join(f"#define {k} {v}\n" for k, v in defines.items()) + _SOURCE.read_text()


# The configurations the sweep (benchmarks/attention_kernel_sweep.py) measures. BM (query rows per CTA)
# must divide the mask's block rows and bn its block columns; otherwise ``_choose`` falls back.
CONFIGS = {
    "v1-w4": Config(1, 4),
    "v1-w8": Config(1, 8),
    "v2-w4-m1": Config(2, 4, 1),
    "v2-w4-m2": Config(2, 4, 2),            # FlashAttention-2's layout: 128 rows, 4 warps x 32
    "v2-w4-m2-n32": Config(2, 4, 2, bn=32),  # fewer S registers
    "v2-w4-m2-q": Config(2, 4, 2, qreg=True),
    "v2-w4-m2-n32-q": Config(2, 4, 2, bn=32, qreg=True),
    "v2-w8-m1": Config(2, 8, 1),
    "v2-w8-m2": Config(2, 8, 2),            # 256 rows: masks with 256-row blocks
}
# The configuration used, by name (set it, or SPARSEDSL_FLASH_CONFIG, from the sweep's numbers).
CONFIG = os.environ.get("SPARSEDSL_FLASH_CONFIG", "v2-w4-m2")


def _choose(name: str | None, r: int, c: int, nwarps: int | None = None) -> Config:
    """The named configuration (``nwarps`` overriding its warp count), or the nearest that fits r x c
    blocks: one m16 tile per warp, then 4 warps and 64-row key tiles (r, c are multiples of 64)."""
    name = name or CONFIG
    if name not in CONFIGS:
        raise ValueError(f"flash attention config {name!r} is not one of {sorted(CONFIGS)}")
    cfg = CONFIGS[name]
    if nwarps:
        cfg = replace(cfg, nwarps=nwarps)
    for cand in (cfg, replace(cfg, mt=1), replace(cfg, nwarps=4, mt=1, bn=64)):
        if cand.fits(r, c):
            return cand
    raise AssertionError("unreachable: 64 x 64 always fits")


def _compiled(head_dim: int, bf16: bool, cfg: Config):
    import cupy as cp

    key = (head_dim, bf16, cfg)
    if key not in _kernels:
        kern = cp.RawKernel(cfg.source(head_dim, bf16), cfg.kernel_name(head_dim, bf16), options=("-std=c++17",))
        kern.max_dynamic_shared_size_bytes = cfg.smem(head_dim)
        _kernels[key] = kern
    return _kernels[key]


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
    ``out16``: the kernel writes O in the inputs' 16-bit type (version 2 only) and this returns it as
    a torch tensor when Q is one, else a cupy float16 array (bfloat16: its uint16 bit patterns)."""
    import cupy as cp

    q, k, v = _bits(Q), _bits(K), _bits(V)
    if q is None or k is None or v is None or len({q[1], k[1], v[1]}) != 1:
        raise TypeError("fused_attention(): q, k and v must all be float16 or all bfloat16 on the GPU")
    n, lq, d = Q.shape
    lk = K.shape[1]
    r, c = M.format.blocks[1], M.format.blocks[2]
    cfg = _choose(config, r, c, nwarps)
    if out16 and cfg.version == 1:
        raise ValueError(f"fused_attention(out16=True) needs a version-2 config; {config or CONFIG!r} is version 1")
    pos, crd, vals, full, bits = _mask_arrays(M)
    out = cp.empty((n, lq, d), cp.uint16 if out16 else cp.float32)
    kern = _compiled(d, q[1], cfg)
    args = (q[0], k[0], v[0], pos, crd, vals if cfg.version == 1 else bits, full, out, np.int32(lq), np.int32(lk),
            np.int32(r), np.int32(c), np.int32(lq // r), np.float32(scale * math.log2(math.e)))
    if cfg.version == 2:
        args += (np.int32(out16),)
    kern((lq // cfg.bm, n), (32 * cfg.nwarps,), args, shared_mem=cfg.smem(d))
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

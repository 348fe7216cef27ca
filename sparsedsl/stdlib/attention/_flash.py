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
import pathlib

import numpy as np

from sparsedsl import templates

from ._core import ATTENTION_PROGRAM, blocked_format

NAME = "attention.block_sparse_flash"
_SOURCE = pathlib.Path(__file__).with_name("_flash_kernel.cu")
_kernels: dict = {}
_mask_cache: list = []  # (values array, pos, crd, full): the last few masks' device metadata


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


def _compiled(head_dim: int, bf16: bool, nwarps: int = 4):
    import cupy as cp

    key = (head_dim, bf16, nwarps)
    if key not in _kernels:
        name = f"sd_flash_bs_d{head_dim}_{'bf16' if bf16 else 'f16'}_w{nwarps}"
        src = (f"#define HEAD_DIM {head_dim}\n#define IS_BF16 {int(bf16)}\n#define NWARPS {nwarps}\n"
               f"#define KERNEL_NAME {name}\n" + _SOURCE.read_text())
        kern = cp.RawKernel(src, name, options=("-std=c++17",))
        kern.max_dynamic_shared_size_bytes = _smem(head_dim, nwarps)
        _kernels[key] = kern
    return _kernels[key]


def _smem(head_dim: int, nwarps: int) -> int:
    return (16 * nwarps + 4 * 64) * (head_dim + 8) * 2  # Q, two K stages, two V stages


def _mask_arrays(M):
    """(pos int32, crd int32, values uint8, full uint8) on the device, cached per mask."""
    import cupy as cp

    for entry in _mask_cache:
        if entry[0] is M.values:
            return entry[1:]
    r, c = M.format.blocks[1], M.format.blocks[2]
    pos = cp.asarray(M.levels[2]["pos"]).astype(cp.int32, copy=False)
    crd = cp.asarray(M.levels[2]["crd"]).astype(cp.int32, copy=False)
    vals = cp.asarray(M.values)
    vals = vals.view(cp.uint8) if vals.dtype == cp.bool_ else (vals != 0).view(cp.uint8)
    full = vals.reshape(-1, r * c).all(axis=1).astype(cp.uint8) if len(crd) else cp.zeros(1, cp.uint8)
    _mask_cache.insert(0, (M.values, pos, crd, vals, full))
    del _mask_cache[4:]
    return pos, crd, vals, full


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


# query rows per CTA: 4 warps (64 rows, the tested default) or 8 (128 rows: each K/V tile serves twice
# the queries; needs the mask's block rows to be multiples of 128)
NWARPS = 4


def fused_attention(Q, K, V, M, scale: float, out_dtype=np.float32, nwarps: int | None = None):
    """Run the kernel: Q (n, Lq, d), K/V (n, Lk, d) 16-bit device arrays, M a device SparseTensor in
    the 3-D blocked format. Returns O (n, Lq, d) as ``out_dtype`` (float32 accumulation)."""
    import cupy as cp

    q, k, v = _bits(Q), _bits(K), _bits(V)
    if q is None or k is None or v is None or len({q[1], k[1], v[1]}) != 1:
        raise TypeError("fused_attention(): q, k and v must all be float16 or all bfloat16 on the GPU")
    n, lq, d = Q.shape
    lk = K.shape[1]
    r, c = M.format.blocks[1], M.format.blocks[2]
    nwarps = nwarps or NWARPS
    if r % (16 * nwarps):
        nwarps = 4
    pos, crd, vals, full = _mask_arrays(M)
    out = cp.empty((n, lq, d), cp.float32)
    kern = _compiled(d, q[1], nwarps)
    kern((lq // (16 * nwarps), n), (32 * nwarps,),
         (q[0], k[0], v[0], pos, crd, vals, full, out, np.int32(lq), np.int32(lk), np.int32(r), np.int32(c),
          np.int32(lq // r), np.float32(scale * math.log2(math.e))), shared_mem=_smem(d, nwarps))
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

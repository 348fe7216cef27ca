"""A bitmap-compressed KV cache after Mustafar, and decode attention computed on it directly.

Keys and values are pruned per token (each token's d-vector keeps its largest magnitudes) to a target
sparsity and stored in the bit-packed bitmap format: one bit per entry (uint32 words per token), a
per-token offset, and the kept values packed (float16 on the GPU). Decode attention for one new query
per (batch, head) is a sparsedsl program over that storage, never a dense copy:

    s[h,j] = K[h,j,d] q[h,d];  o[h,c] = Σ_j softmax_j(scale · s[h,j]) V[h,j,c]

On the GPU the program template ``attention.bitmap_decode`` (``_decode.py``) runs it as one fused
flash-decoding kernel that reads the bitmap directly; the generated code is its fallback and oracle.
A cache for the GPU is also built there (``_decode.bitmap_from_dense``: no per-token host work).

References
----------
Joo et al., "Mustafar: Promoting Unstructured Sparsity for KV Cache Pruning in LLM Inference", 2025.
"""

from __future__ import annotations

import math

import numpy as np

from sparsedsl import SparseTensor
from sparsedsl.backends.cuda import device

from ._core import _back, _host64, _kind
from ._decode import (
    BITMAP3,
    DECODE_PROGRAM,
    HEAD_DIMS,
    DecodeStep,
    bitmap_decode,
    bitmap_from_dense,
    decode_kernel,
    device_query,
)
from ._decode import TEMPLATE as FUSED_DECODE


def prune_per_token(x, sparsity: float) -> np.ndarray:
    """Mustafar's per-token magnitude pruning: each token's vector (last axis) keeps its
    round((1 − sparsity)·d) largest |x|; the rest set to 0. Returns a float32 numpy array."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1); got {sparsity!r}")
    a = _host64(x).astype(np.float32)
    d = a.shape[-1]
    keep = int(round((1 - sparsity) * d))
    if keep >= d:
        return a
    drop = np.argpartition(np.abs(a), d - keep - 1, axis=-1)[..., : d - keep]
    out = a.copy()
    np.put_along_axis(out, drop, 0.0, axis=-1)
    return out


class BitmapKVCache:
    """Keys and values of shape (batch·heads, L, d), per-token magnitude pruned to ``sparsity`` and
    stored as bitmap SparseTensors (``K_``, ``V_``).

    Parameters
    ----------
    sparsity : fraction of each token's entries dropped (Mustafar: 0.7 without fine-tuning).
    device : "cpu" or "cuda". On the GPU the cache is built there (vectorised: one warp per token)
        when d is 32, 64, 128 or 256, else on the host and copied.
    dtype : the stored values: "float32" on the CPU; "float16" (default) or "float32" on the GPU.

    Attributes
    ----------
    K_, V_ : SparseTensor in ``(h, j, d) -> (h: dense, j: dense, d: bitmap)``, on ``device``.
    K_pruned_, V_pruned_ : the pruned dense caches as float32 numpy arrays, read back from ``K_`` and
        ``V_`` on access (the reference decode attention runs on).

    References
    ----------
    Joo et al., "Mustafar: Promoting Unstructured Sparsity for KV Cache Pruning in LLM Inference", 2025.
    """

    def __init__(self, sparsity: float = 0.7, *, device: str = "cpu", dtype: str | None = None):
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda'; got {device!r}")
        if not 0 <= sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1); got {sparsity!r}")
        dtype = ("float32" if device == "cpu" else "float16") if dtype is None else str(np.dtype(dtype))
        allowed = ("float32",) if device == "cpu" else ("float16", "float32")
        if dtype not in allowed:
            raise ValueError(f"dtype must be one of {allowed} on device {device!r}; got {dtype!r}")
        self.sparsity, self.device, self.dtype = float(sparsity), device, dtype

    def fit(self, K, V):
        if getattr(K, "ndim", None) != 3 or tuple(K.shape) != tuple(V.shape):
            raise ValueError(f"BitmapKVCache.fit(): K and V must be (batch*heads, L, d) of the same shape; "
                             f"got {getattr(K, 'shape', None)} and {getattr(V, 'shape', None)}")
        self._steps = {}  # decode_attention's prepared launches, per query signature
        if self.device == "cuda" and K.shape[-1] in HEAD_DIMS:
            self.K_, self.V_ = (bitmap_from_dense(x, self.sparsity, self.dtype) for x in (K, V))
            return self
        self.K_, self.V_ = (bitmap_3d(prune_per_token(x, self.sparsity)) for x in (K, V))
        if self.device == "cuda":
            self.K_, self.V_ = (t.to("cuda").astype(self.dtype) for t in (self.K_, self.V_))
        return self

    K_pruned_ = property(lambda self: _dense32(self.K_), doc="the pruned dense K cache (float32 numpy)")
    V_pruned_ = property(lambda self: _dense32(self.V_), doc="the pruned dense V cache (float32 numpy)")

    def nbytes_fp16(self) -> int:
        """Bytes of the compressed K and V with float16 values: bitmap words, per-token offsets and
        the packed values."""
        return sum(_bytes(t, 2) for t in (self.K_, self.V_))

    def dense_nbytes_fp16(self) -> int:
        """Bytes of the dense float16 K and V caches."""
        return 2 * 2 * int(np.prod(self.K_.shape))


def _dense32(t: SparseTensor) -> np.ndarray:
    return t.to("cpu").to_numpy().astype(np.float32)


def bitmap_3d(x: np.ndarray) -> SparseTensor:
    """x (n, L, d) in ``BITMAP3``, storing its nonzeros, built level by level (bits packed with
    numpy, no sort of coordinates: a 32k-token cache of 64 heads takes a second)."""
    n, L, d = x.shape
    nz = x != 0
    words = -(-d // 32)
    padded = np.zeros((n * L, words * 32), bool)
    padded[:, :d] = nz.reshape(n * L, d)
    bits = np.packbits(padded.reshape(n * L, words, 32), axis=-1, bitorder="little")  # 4 bytes per word
    mask = bits.reshape(-1).view("<u4").astype(np.uint32)
    pos = np.concatenate([[0], np.cumsum(nz.reshape(n * L, d).sum(1))]).astype(np.int32)
    values = np.ascontiguousarray(x[nz], dtype=np.float32)
    return SparseTensor(BITMAP3, (n, L, d), [{}, {}, {"mask": mask, "pos": pos}], values)


def _bytes(t: SparseTensor, value_bytes: int) -> int:
    index = sum(int(a.size) * a.dtype.itemsize for lv in t.levels for a in lv.values())
    return index + int(t.values.size) * value_bytes


def decode_attention(q, cache: BitmapKVCache, *, scale: float | None = None, schedule: dict | None = None):
    """Attention of one query per (batch·head) slice, q of shape (n, d), over the compressed cache,
    computed on the bitmap storage (numpy/torch on the CPU, cupy/torch CUDA on the GPU). Equals
    dense attention over the pruned cache (``cache.K_pruned_``, ``cache.V_pruned_``).

    On the GPU the fused kernel ``attention.bitmap_decode`` runs when it fits (``sd.explain`` says
    why not otherwise); ``schedule={"templates": False}`` runs the generated code instead. The plan's
    choice is made once per cache and query signature (dtype, device, scale, stream) and kept with a
    prepared launch (``_decode.DecodeStep``): later steps only allocate the output and launch.

    References
    ----------
    Joo et al., "Mustafar: Promoting Unstructured Sparsity for KV Cache Pruning in LLM Inference", 2025.

    >>> rng = np.random.default_rng(0)
    >>> K, V = rng.standard_normal((2, 3, 16, 8)).astype(np.float32)
    >>> c = BitmapKVCache(0.5).fit(K, V)
    >>> decode_attention(K[:, 0], c).shape
    (3, 8)
    """
    if not hasattr(cache, "K_"):
        raise ValueError("decode_attention(): the cache is not filled; call cache.fit(K, V) first")
    n, L, d = cache.K_.shape
    if tuple(q.shape) != (n, d):
        raise ValueError(f"decode_attention(): q must be (batch*heads, d) = {(n, d)}; got {tuple(q.shape)}")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not schedule and type(q).__module__.startswith(("torch", "cupy")):
        step = _step(q, cache, scale)
        if step is not None:
            return step
    k = decode_kernel(schedule)
    if _kind(q) in ("numpy", "torch"):
        K_, V_ = (t.to("cpu").astype(np.float32) if t.device != "cpu" else t for t in (cache.K_, cache.V_))
        out = k(K=K_, V=V_, q=_host64(q).astype(np.float32), scale=scale)
        return _back(np.asarray(out), q)
    K_, V_ = cache.K_.to("cuda"), cache.V_.to("cuda")
    qd = device_query(q)
    if qd is None:  # bfloat16 and other kinds: the compiler's own binding converts them
        return _back(k(K=K_, V=V_, q=q, scale=scale, backend="cuda"), q)
    # the operands are already what the plan takes (device bitmaps in the declared format, a contiguous
    # float16/float32 cupy query, a Python float), so the kernel's plan is asked for directly: binding
    # them again (a scalar operand leaves the call's fast path) cost ~50 µs a call on the 2-core dev
    # host against ~5 for the launch itself (kernel stubbed), more than the GPU time of a decode step
    # at batch 1. The plan's select pass decides: the fused template, launched here to write the
    # query's dtype itself (the program's output is float32: a cast would be one more launch), or the
    # generated code when the template does not fit
    bound = {"K": K_, "V": V_, "q": qd, "scale": scale}
    plan = k.plan(bound, "cuda")
    if plan.selection.template is FUSED_DECODE:
        return _back(bitmap_decode(qd, K_, V_, scale, out_dtype=qd.dtype), q)
    return _back(plan.run(bound)["o"], q)


def _step(q, cache, scale):
    """The decode step through the launch prepared for this cache and q's signature, or None (the
    compiler's path): the template registry's choice is asked once per signature and kept, so that a
    step costs a dict lookup, an output allocation and one launch."""
    steps = getattr(cache, "_steps", None)
    if steps is None:
        return None
    torch_q = type(q).__module__.startswith("torch")
    if torch_q:
        if not q.is_cuda:
            return None
        key = (True, q.dtype, q.device.index, scale, device.cupy().cuda.get_current_stream().ptr)
    else:
        key = (False, q.dtype, q.data.device_id, scale, device.cupy().cuda.get_current_stream().ptr)
    entry = steps.get(key)
    if entry is None or entry[0] is not cache.K_ or entry[1] is not cache.V_:
        entry = steps[key] = (cache.K_, cache.V_, _prepare_step(q, cache, scale))
    run = entry[2]
    if run is None:
        return None
    if torch_q:
        if not q.is_contiguous():
            q = q.contiguous()
        out = q.new_empty(run.shape)
        run(q.data_ptr(), out.data_ptr())
        return out
    if not q.flags.c_contiguous:
        q = device.cupy().ascontiguousarray(q)
    out = device.cupy().empty(run.shape, q.dtype)
    run(q.data.ptr, out.data.ptr)
    return out


def _prepare_step(q, cache, scale):
    """A DecodeStep when the plan selects the fused template for these operands (once per signature),
    else None."""
    qd = device_query(q)
    if qd is None or cache.K_.device != "cuda" or cache.V_.device != "cuda" or cache.K_.shape[0] == 0:
        return None
    bound = {"K": cache.K_, "V": cache.V_, "q": qd, "scale": scale}
    if decode_kernel(None).plan(bound, "cuda").selection.template is not FUSED_DECODE:
        return None
    return DecodeStep(cache.K_, cache.V_, qd.dtype == np.float16, qd.dtype == np.float16, scale)


__all__ = ["BITMAP3", "BitmapKVCache", "bitmap_3d", "DECODE_PROGRAM", "decode_attention", "decode_kernel",
           "prune_per_token"]

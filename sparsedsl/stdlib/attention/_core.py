"""Attention over a mask in the sparsedsl language: SDDMM over the mask, masked row softmax, SpMM with V.

One program (``ATTENTION_PROGRAM``) runs on the CPU (numba) and the GPU (CUDA C); on the GPU a blocked
mask in fp16/bf16 is run by the fused block-sparse kernel registered as a template (``_flash.py``),
with this program's generated code as its fallback and oracle.

Shapes: q (batch, heads, Lq, d), k and v (batch, heads, Lk, d); batch and heads are one index ``h`` of
the program (``h = b * heads + head``). A mask is a SparseTensor of shape (Lq, Lk), shared by every
batch and head, or (batch * heads, Lq, Lk) (also (heads, Lq, Lk) when batch is 1), in any format.
An entry the mask stores with a nonzero value is attended; an absent entry, or one stored as zero
(the masked part of a stored block), is not.
"""

from __future__ import annotations

import numpy as np

import sparsedsl as sd
from sparsedsl import SparseTensor, as_format, from_coordinates

# The masked-attention program. M's values weigh the exponentials (0 inside a stored block is
# masked); S and e take M's format, so nothing outside the mask is computed or stored. The row
# maximum runs over S's stored entries (a masked entry of a stored block counts as 0 there:
# softmax does not depend on the shift, only underflow would), and a row without attended
# entries gives 0 (z = 0, hence the max with a tiny number), as FlexAttention does.
ATTENTION_PROGRAM = """
let S[h,i,j] = M[h,i,j] * Q[h,i,d] * K[h,j,d]
let m[h,i] = max[j](S[h,i,j])
let e[h,i,j] = M[h,i,j] * exp(scale * (S[h,i,j] - m[h,i]))
let z[h,i] = e[h,i,j]
O[h,i,c] = e[h,i,j] * V[h,j,c] / max(z[h,i], 1e-30)
"""

_kernels: dict = {}


def attention_kernel(mask_format=None, schedule=None):
    """The compiled attention program, with the mask's format declared (so a mask already on the
    GPU in that format is used in place, never re-packed); one Kernel per (format, schedule)."""
    key = (mask_format, tuple(sorted((schedule or {}).items())))
    if key not in _kernels:
        fmt = {} if mask_format is None else {"M": mask_format}
        _kernels[key] = sd.compile(ATTENTION_PROGRAM, name="masked_attention", schedule=schedule, **fmt)
    return _kernels[key]


def blocked_format(block) -> object:
    """The 3-D blocked mask format: per (batch·head) a block-sparse matrix of dense r×c blocks
    (``bsr(r,c)`` with a leading dense ``h`` level), the format the fused GPU kernel takes."""
    r, c = block
    return as_format(f"(h, i, j) -> (h: dense, i / {r}: dense, j / {c}: compressed, i % {r}: dense, "
                     f"j % {c}: dense)", 3)


def csr3_format():
    """The 3-D element mask format: per (batch·head) a CSR matrix."""
    return as_format("(h, i, j) -> (h: dense, i: dense, j: compressed)", 3)


def _block_of(fmt) -> tuple[int, int] | None:
    """(r, c) when ``fmt`` is the 2-D ``bsr(r,c)`` or the 3-D blocked format, else None."""
    blocks = fmt.blocks
    if fmt.ndim == 2 and set(blocks) == {0, 1} and fmt == as_format(f"bsr({blocks[0]},{blocks[1]})", 2):
        return blocks[0], blocks[1]
    if fmt.ndim == 3 and set(blocks) == {1, 2} and fmt == blocked_format((blocks[1], blocks[2])):
        return blocks[1], blocks[2]
    return None


# ---- arrays: numpy, torch (CPU or CUDA), cupy ----------------------------------------------------


def _kind(x) -> str:
    mod = type(x).__module__
    if mod.startswith("torch"):
        return "torch-cuda" if x.is_cuda else "torch"
    if mod.startswith("cupy"):
        return "cupy"
    return "numpy"


def _dtype_name(x) -> str:
    return str(x.dtype).replace("torch.", "")


def _as_host_float(x) -> np.ndarray:
    """numpy float32/float64 of a CPU array (float16 and bfloat16 compute in float32)."""
    if _kind(x) == "torch":
        x = x.detach()
        return (x.float() if x.dtype.is_floating_point and x.element_size() < 4 else x).numpy()
    a = np.asarray(x)
    return a.astype(np.float32) if a.dtype == np.float16 else a


def _back(out, like):
    """``out`` (numpy, cupy or torch, float32) as the kind and dtype of ``like``."""
    kind, dt = _kind(like), _dtype_name(like)
    if kind == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(out)).to(getattr(torch, dt))
    if kind == "torch-cuda":
        import torch

        t = out if type(out).__module__.startswith("torch") else torch.from_dlpack(out)
        return t.to(getattr(torch, dt))
    if kind == "cupy":
        return out.astype(like.dtype, copy=False)
    return out.astype(like.dtype, copy=False)


def _check_qkv(q, k, v):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"attention(): {name} must be 4-D (batch, heads, length, head_dim); "
                             f"got shape {tuple(getattr(x, 'shape', ()))}")
        if _dtype_name(x) not in ("float16", "bfloat16", "float32", "float64"):
            raise ValueError(f"attention(): {name} must be float16, bfloat16, float32 or float64; got {x.dtype}")
    b, h, lq, d = q.shape
    if tuple(k.shape[:2]) != (b, h) or tuple(v.shape[:3]) != tuple(k.shape[:3]) or k.shape[3] != d:
        raise ValueError(f"attention(): q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} must be "
                         "(batch, heads, Lq, d), (batch, heads, Lk, d), (batch, heads, Lk, dv)")
    kinds = {_kind(q), _kind(k), _kind(v)}
    if len(kinds) > 1:
        raise ValueError(f"attention(): q, k and v must be the same kind of array; got {sorted(kinds)}")
    return b, h, lq, k.shape[2]


# ---- masks: broadcasting over batch·heads, causal restriction ----------------------------------


def mask_3d(mask: SparseTensor, n: int, lq: int, lk: int) -> SparseTensor:
    """``mask`` as a (n, lq, lk) SparseTensor: a 2-D mask repeated for each of the n (batch·head)
    slices (blocked masks keep their blocks, other formats become per-slice CSR)."""
    if not isinstance(mask, SparseTensor):
        raise TypeError(f"attention(): mask must be a sparsedsl SparseTensor (see the mask builders in "
                        f"sparsedsl.stdlib.attention); got {type(mask).__name__}")
    if mask.ndim == 3:
        if tuple(mask.shape) != (n, lq, lk):
            raise ValueError(f"attention(): a 3-D mask must have shape (batch*heads, Lq, Lk) = {(n, lq, lk)}; "
                             f"got {mask.shape}")
        return mask
    if mask.ndim != 2 or tuple(mask.shape) != (lq, lk):
        raise ValueError(f"attention(): mask must have shape (Lq, Lk) = {(lq, lk)} or (batch*heads, Lq, Lk); "
                         f"got {mask.shape}")
    block = _block_of(mask.format)
    if mask.device != "cpu":
        mask = mask.to("cpu")
    if block is not None:  # tile the block structure: no coordinates of single entries
        pos, crd = mask.levels[1]["pos"], mask.levels[1]["crd"]
        nb = len(crd)
        pos3 = (np.asarray(pos[:-1], np.int64)[None, :] + nb * np.arange(n)[:, None]).reshape(-1)
        pos3 = np.concatenate([pos3, [n * nb]]).astype(pos.dtype)
        levels = [{}, {}, {"pos": pos3, "crd": np.tile(crd, n)}, {}, {}]
        return SparseTensor(blocked_format(block), (n, lq, lk), levels, np.tile(mask.values, n), check=False)
    coords, vals = mask.coordinates()
    m = coords.shape[1]
    c3 = np.empty((3, n * m), np.int64)
    c3[0] = np.repeat(np.arange(n), m)
    c3[1:] = np.tile(coords, n)
    return from_coordinates(c3, np.tile(vals, n), (n, lq, lk), csr3_format())


def restrict_causal(mask: SparseTensor) -> SparseTensor:
    """``mask`` ∧ causal (key j ≤ query i + Lk − Lq): entries above the diagonal are dropped, or in a
    blocked format stored as False inside the diagonal blocks (whole blocks above it are dropped)."""
    if mask.device != "cpu":
        mask = mask.to("cpu")
    lq, lk = mask.shape[-2:]
    coords, vals = mask.coordinates()
    i, j = coords[-2], coords[-1]
    block = _block_of(mask.format)
    ok = j <= i + (lk - lq)
    if block is None:
        keep = ok
    else:
        r, c = block
        keep = (j // c) * c <= (i // r) * r + r - 1 + (lk - lq)
    vals = (vals != 0) & ok
    return from_coordinates(coords[:, keep], vals[keep], mask.shape, mask.format)


def full_mask(lq: int, lk: int, *, causal: bool = False, block=None) -> SparseTensor:
    """Every (query, key) pair (or the causal ones), blocked when ``block`` divides the lengths."""

    if block is None:
        b = 64 if lq % 64 == 0 and lk % 64 == 0 else None
        block = (b, b) if b else None
    if block is not None:
        return _blocked_mask(np.ones((1, lq // block[0], lk // block[1]), bool), block, (lq, lk),
                             causal=causal, squeeze=True)
    m = np.ones((lq, lk), bool)
    if causal:
        m = np.tril(m, lk - lq)
    i, j = np.nonzero(m)
    return from_coordinates(np.vstack([i, j]), np.ones(len(i), bool), (lq, lk), "csr")


# ---- the public functions --------------------------------------------------------------------------


def attention(q, k, v, mask=None, *, causal: bool = False, scale: float | None = None, schedule=None):
    r"""Softmax attention restricted to a mask: SDDMM over the mask, masked row softmax, SpMM with V.

    .. math:: O_{h,i} = \sum_{j \in M_{h,i}} \frac{\exp(s\,q_{h,i}\cdot k_{h,j})}
              {\sum_{j' \in M_{h,i}} \exp(s\,q_{h,i}\cdot k_{h,j'})}\, v_{h,j}

    The computation is the sparsedsl program ``ATTENTION_PROGRAM`` (one source for CPU and GPU).
    On the GPU, a blocked mask (``bsr(r,c)`` or its 3-D form, r in {64, 128}, c = 64) with float16 or
    bfloat16 q/k/v and head_dim 64 or 128 runs the fused block-sparse flash-attention template
    (``attention.block_sparse_flash``); ``sd.explain`` says which ran.

    Parameters
    ----------
    q, k, v : arrays of shape (batch, heads, L, d): numpy, torch (CPU or CUDA) or cupy;
        float16, bfloat16, float32 or float64.
    mask : SparseTensor of shape (Lq, Lk) (shared) or (batch*heads, Lq, Lk), any format; None for
        full attention (a blocked all-ones mask).
    causal : also restrict to keys j ≤ i + Lk − Lq.
    scale : the softmax scale; default 1/sqrt(d).
    schedule : passed to the kernel (``{"templates": False}`` runs the generated code).

    Returns
    -------
    Array of shape (batch, heads, Lq, dv), the kind and dtype of ``q``. A query with no attended key
    gives zeros.

    References
    ----------
    Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023
    (the online softmax of the fused kernel); Child et al., "Generating Long Sequences with Sparse
    Transformers", 2019 (attention over a fixed sparse mask).

    >>> import numpy as np
    >>> from sparsedsl.stdlib.attention import attention, dense_attention, sliding_window
    >>> q = k = v = np.random.default_rng(0).standard_normal((1, 2, 32, 8)).astype(np.float32)
    >>> m = sliding_window(32, 4)
    >>> bool(np.allclose(attention(q, k, v, m), dense_attention(q, k, v, m), atol=1e-5))
    True
    """
    b, h, lq, lk = _check_qkv(q, k, v)
    d = q.shape[3]
    scale = 1.0 / float(np.sqrt(d)) if scale is None else float(scale)
    if mask is None:
        mask = full_mask(lq, lk, causal=causal)
    elif causal:
        mask = restrict_causal(mask)
    m3 = mask_3d(mask, b * h, lq, lk)
    kind = _kind(q)
    kernel = attention_kernel(m3.format, schedule)
    if kind in ("numpy", "torch"):
        q3, k3, v3 = (_as_host_float(x).reshape(b * h, x.shape[2], x.shape[3]) for x in (q, k, v))
        if m3.device != "cpu":
            m3 = m3.to("cpu")
        out = kernel(M=m3, Q=q3, K=k3, V=v3, scale=scale)
        return _back(np.asarray(out).reshape(b, h, lq, v.shape[3]), q)
    q3, k3, v3 = (x.reshape(b * h, x.shape[2], x.shape[3]) for x in (q, k, v))
    if m3.device != "cuda":
        m3 = m3.to("cuda")
    out = kernel(M=m3, Q=q3, K=k3, V=v3, scale=scale, backend="cuda")
    return _back(out.reshape(b, h, lq, v.shape[3]), q)


def dense_attention(q, k, v, mask=None, causal: bool = False, scale: float | None = None):
    """The reference: full softmax attention with every entry outside the mask set to −inf, in
    float64 on the host (a row with no attended key gives zeros). Same arguments as :func:`attention`;
    returns a float64 numpy array of shape (batch, heads, Lq, dv).

    >>> import numpy as np
    >>> q = np.ones((1, 1, 2, 4)); v = np.arange(8.).reshape(1, 1, 2, 4)
    >>> dense_attention(q, q, v, causal=True)[0, 0, 0]
    array([0., 1., 2., 3.])
    """
    b, h, lq, lk = _check_qkv(q, k, v)
    qh, kh, vh = (_host64(x) for x in (q, k, v))
    scale = 1.0 / np.sqrt(qh.shape[3]) if scale is None else float(scale)
    s = np.einsum("bhid,bhjd->bhij", qh, kh) * scale
    allowed = np.ones((b, h, lq, lk), bool)
    if mask is not None:
        allowed &= dense_mask(mask, b, h)
    if causal:
        allowed &= np.tril(np.ones((lq, lk), bool), lk - lq)
    s = np.where(allowed, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    p = np.where(allowed, np.exp(s - np.where(np.isfinite(mx), mx, 0)), 0.0)
    z = p.sum(axis=-1, keepdims=True)
    return np.einsum("bhij,bhjd->bhid", p / np.where(z > 0, z, 1), vh)


def dense_mask(mask: SparseTensor, b: int, h: int) -> np.ndarray:
    """The mask as a dense boolean array of shape (b, h, Lq, Lk) (small masks only)."""
    arr = mask.to("cpu").to_numpy() if mask.device != "cpu" else mask.to_numpy()
    arr = arr != 0
    if arr.ndim == 2:
        return np.broadcast_to(arr, (b, h) + arr.shape)
    if arr.shape[0] != b * h:
        raise ValueError(f"a 3-D mask must have batch*heads = {b * h} slices; got {arr.shape[0]}")
    return arr.reshape((b, h) + arr.shape[1:])


def _host64(x) -> np.ndarray:
    kind = _kind(x)
    if kind.startswith("torch"):
        return x.detach().double().cpu().numpy()
    if kind == "cupy":
        return x.get().astype(np.float64)
    return np.asarray(x, dtype=np.float64)


def _blocked_mask(blocks: np.ndarray, block, shape, *, causal=False, window=None, sink=0, squeeze=False):
    """A blocked mask storing the blocks where ``blocks`` (n, nI, nJ) is True; values: the token-level
    causal / window / sink predicate inside each block. Blocks left without any attended entry are
    dropped. ``squeeze`` with n == 1 gives the 2-D ``bsr(r,c)``."""
    lq, lk = shape
    r, c = block
    n = blocks.shape[0]
    h, bi, bj = np.nonzero(blocks)  # row-major: the storage order of the format
    rows = bi[:, None, None] * r + np.arange(r)[None, :, None]
    cols = bj[:, None, None] * c + np.arange(c)[None, None, :]
    vals = _token_predicate(rows, cols, lq, lk, causal, window, sink)
    if vals is None:
        vals = np.ones((len(h), r, c), bool)
    else:
        vals = np.broadcast_to(vals, (len(h), r, c))
        live = vals.any(axis=(1, 2))
        h, bi, bj, vals = h[live], bi[live], bj[live], vals[live]
    nI = lq // r
    counts = np.bincount(h * nI + bi, minlength=n * nI)
    pos = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    levels = [{}, {}, {"pos": pos, "crd": bj.astype(np.int32)}, {}, {}]
    m = SparseTensor(blocked_format(block), (n, lq, lk), levels, np.ascontiguousarray(vals).reshape(-1))
    if squeeze and n == 1:
        return SparseTensor(f"bsr({r},{c})", (lq, lk), [{}, {"pos": pos, "crd": levels[2]["crd"]}, {}, {}],
                            m.values)
    return m


def _token_predicate(rows, cols, lq, lk, causal, window, sink):
    """Which (row, col) are attended under causal / sliding window / sink rules; None: all."""
    off = lk - lq  # queries are the last Lq positions of the keys
    ok = None
    if causal:
        ok = cols <= rows + off
    if window is not None:
        near = (rows + off - cols < window) & (cols - rows - off < (1 if causal else window))
        if sink:
            near = near | (cols < sink)
        ok = near if ok is None else ok & near
    return ok

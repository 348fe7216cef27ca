"""Mask builders: which (query, key) pairs each sparse-attention method attends.

Each builder returns a SparseTensor: (Lq, Lk) when the pattern is the same for every head, else
(n, Lq, Lk) with one slice per leading index of q/k (batch·heads flattened). Block-level methods
return the blocked format (``bsr(r,c)``, or its 3-D form ``_core.blocked_format``) whose stored
blocks the fused GPU kernel visits; token-level methods return CSR (3-D: a CSR matrix per slice).
A stored entry with a nonzero value is attended; in a blocked mask the values inside a stored block
say which of its entries are (causal and window edges).

Data-dependent builders take q and k of shape (..., L, d) (numpy, torch or cupy; read on the host)
and estimate scores with small dense products (pooled blocks, a few channels), as the papers do.
"""

from __future__ import annotations

import math

import numpy as np

from sparsedsl import SparseTensor, from_coordinates

from ._core import _blocked_mask, _host64, _token_predicate

__all__ = ["a_shape", "biformer", "block_sparse", "double_sparsity", "calibrate_channels", "hip", "routing",
           "seer_gate", "sliding_window", "spark_top_k", "statistical_top_k", "vertical_slash", "SparseDPatterns"]


# ---- assembling masks ------------------------------------------------------------------------------


def _check_block(block, lq, lk):
    if block is None:
        return None
    r, c = (block, block) if isinstance(block, int) else tuple(block)
    if r <= 0 or c <= 0 or lq % r or lk % c:
        raise ValueError(f"block must be one or two positive ints dividing the lengths ({lq}, {lk}); got {block!r}")
    return int(r), int(c)






def _token_mask(allowed: np.ndarray, squeeze: bool) -> SparseTensor:
    """A CSR mask (per slice for 3-D) storing exactly the True entries of ``allowed`` (n, Lq, Lk)."""
    n, lq, lk = allowed.shape
    idx = np.nonzero(allowed)
    if squeeze and n == 1:
        return from_coordinates(np.vstack(idx[1:]), np.ones(len(idx[0]), bool), (lq, lk), "csr")
    from ._core import csr3_format

    return from_coordinates(np.vstack(idx), np.ones(len(idx[0]), bool), (n, lq, lk), csr3_format())


def _qk(q, k, name):
    qh, kh = _host64(q), _host64(k)
    if qh.ndim < 2 or kh.ndim < 2 or qh.shape[:-2] != kh.shape[:-2] or qh.shape[-1] != kh.shape[-1]:
        raise ValueError(f"{name}(): q and k must be (..., L, d) with the same leading shape and d; "
                         f"got {qh.shape} and {kh.shape}")
    return qh.reshape(-1, *qh.shape[-2:]), kh.reshape(-1, *kh.shape[-2:])


def _causal(lq, lk):
    return np.tril(np.ones((lq, lk), bool), lk - lq)


def _top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the k largest entries of each row (−inf entries never chosen)."""
    k = min(int(k), scores.shape[-1])
    part = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    out = np.zeros(scores.shape, bool)
    np.put_along_axis(out, part, True, axis=-1)
    return out & (scores > -np.inf)


# ---- static patterns ---------------------------------------------------------------------------------


def sliding_window(L: int, window: int, *, causal: bool = True, block=None, heads: int | None = None):
    """Local attention: query i attends keys j with 0 ≤ i − j < ``window`` (causal), or
    |i − j| < ``window`` (non-causal). Each row attends at most ``window`` keys (2·window − 1).

    ``block=(r, c)`` stores the blocks the window touches (bsr; the window's edges as False inside
    them), the form the fused GPU kernel takes; ``heads`` repeats it to an (heads, L, L) mask.

    References
    ----------
    Beltagy, Peters, Cohan, "Longformer: The Long-Document Transformer", 2020; Child et al.,
    "Generating Long Sequences with Sparse Transformers", 2019.

    >>> int(sliding_window(8, 3).nnz)  # 1 + 2 + 3*6
    21
    """
    if window < 1:
        raise ValueError(f"sliding_window(): window must be a positive int; got {window!r}")
    return _static(L, block, heads, causal=causal, window=window, sink=0)


def a_shape(L: int, sink: int, window: int, *, block=None, heads: int | None = None):
    """MInference's A-shape (StreamingLLM's attention sinks plus a local window): query i attends
    the first ``sink`` keys and the ``window`` most recent ones, causally.

    References
    ----------
    Jiang et al., "MInference 1.0: Accelerating Pre-filling for Long-Context LLMs via Dynamic Sparse
    Attention", 2024; Xiao et al., "Efficient Streaming Language Models with Attention Sinks", 2023.

    >>> int(a_shape(8, 1, 2).nnz)  # row 0: 1; row 1: 2; rows 2..7: sink + 2
    21
    """
    if sink < 0 or window < 1:
        raise ValueError(f"a_shape(): sink must be >= 0 and window >= 1; got sink={sink!r}, window={window!r}")
    return _static(L, block, heads, causal=True, window=window, sink=sink)


def _static(L, block, heads, *, causal, window, sink):
    n = 1 if heads is None else int(heads)
    block = _check_block(block, L, L)
    if block is not None:
        r, c = block
        bi, bj = np.meshgrid(np.arange(L // r), np.arange(L // c), indexing="ij")
        # a block is stored when some entry of it is attended: test its corners' range
        lo_i, hi_i, lo_j, hi_j = bi * r, bi * r + r - 1, bj * c, bj * c + c - 1
        near = (lo_i - hi_j < window) & ((lo_j - hi_i < 1) if causal else (lo_j - hi_i < window))
        if sink:
            near |= lo_j < sink
        one = _blocked_mask(near[None], block, (L, L), causal=causal, window=window, sink=sink, squeeze=True)
        if heads is None:
            return one
        from ._core import mask_3d

        return mask_3d(one, n, L, L)
    i, j = np.nonzero(_token_predicate(np.arange(L)[:, None], np.arange(L)[None, :], L, L, causal, window, sink))
    one = from_coordinates(np.vstack([i, j]), np.ones(len(i), bool), (L, L), "csr")
    if heads is None:
        return one
    from ._core import mask_3d

    return mask_3d(one, n, L, L)


# ---- MInference: vertical-slash and dynamic block-sparse ----------------------------------------


def vertical_slash(q, k, *, n_vertical: int, n_slash: int, last_q: int = 64):
    """MInference's vertical-slash pattern, per head: attention of the last ``last_q`` queries to
    all keys estimates which key columns (verticals) and which diagonals i − j (slashes) matter;
    each query attends, causally, the ``n_vertical`` top columns and the keys on the ``n_slash`` top
    diagonals (the main diagonal always among them). Returns (n, L, L) CSR; a row holds at most
    n_vertical + n_slash keys.

    References
    ----------
    Jiang et al., "MInference 1.0: Accelerating Pre-filling for Long-Context LLMs via Dynamic Sparse
    Attention", 2024 (Algorithm 2).
    """
    qh, kh = _qk(q, k, "vertical_slash")
    n, L, d = qh.shape
    last = min(int(last_q), L)
    s = np.einsum("nid,njd->nij", qh[:, L - last:], kh) / math.sqrt(d)
    s = np.where(_causal(last, L)[None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    vertical = p.sum(1)  # (n, L) per key column
    diag = np.zeros((n, L))
    rows = np.arange(L - last, L)[:, None] - np.arange(L)[None, :]  # i - j of each estimated entry
    for h in range(n):
        np.add.at(diag[h], rows[rows >= 0], p[h][rows >= 0])
    diag[:, 0] = np.inf  # the main diagonal always (as MInference forces its local slashes)
    vcols = np.argsort(-vertical, axis=1)[:, :n_vertical]
    slashes = np.argsort(-diag, axis=1)[:, :n_slash]
    i = np.arange(L)[:, None]
    allowed = np.zeros((n, L, L), bool)
    for h in range(n):
        allowed[h][:, vcols[h]] = True
        for o in slashes[h]:
            r = np.arange(o, L)
            allowed[h, r, r - o] = True
    allowed &= (np.arange(L)[None, :] <= i)[None]
    return _token_mask(allowed, squeeze=False)


def _pool(x, size, how="mean"):
    n, L, d = x.shape
    t = x.reshape(n, L // size, size, d)
    return {"mean": t.mean(2), "max": t.max(2), "min": t.min(2)}[how]


def block_sparse(q, k, *, block=64, top_k: int, causal: bool = True):
    """MInference's dynamic block-sparse pattern: q and k mean-pooled over blocks, block scores
    softmax(pool(q) pool(k)ᵀ/√d), and each query block keeps its ``top_k`` key blocks (the diagonal
    block always, under ``causal``). Returns the blocked (n, L, L) mask with top_k blocks per block row.

    References
    ----------
    Jiang et al., "MInference 1.0: Accelerating Pre-filling for Long-Context LLMs via Dynamic Sparse
    Attention", 2024 (Algorithm 3).
    """
    qh, kh = _qk(q, k, "block_sparse")
    n, L, d = qh.shape
    r, c = _check_block(block, L, kh.shape[1])
    scores = np.einsum("nid,njd->nij", _pool(qh, r), _pool(kh, c)) / math.sqrt(d)
    return _top_blocks(scores, top_k, (r, c), (L, kh.shape[1]), causal)


def _top_blocks(scores, top_k, block, shape, causal):
    n, nI, nJ = scores.shape
    if causal:
        allowed, diag = _block_causal(block, shape)
        scores = np.where(allowed[None], scores, -np.inf)
        scores = np.where(diag[None], np.inf, scores)  # the diagonal block first
    keep = _top_k_rows(scores, top_k)
    return _blocked_mask(keep, block, shape, causal=causal)


def _block_causal(block, shape):
    """(blocks holding some causal entry, the block holding each block row's last diagonal entry)."""
    (r, c), (lq, lk) = block, shape
    last = np.arange(lq // r) * r + r - 1 + (lk - lq)  # each block row's last query, in key positions
    cols = np.arange(lk // c) * c
    allowed = cols[None, :] <= last[:, None]
    diag = np.zeros_like(allowed)
    diag[np.arange(len(last)), np.clip(last // c, 0, lk // c - 1)] = True
    return allowed, diag & allowed


def seer_gate(q, k, *, block=64, top_k: int | None = None, threshold: float | None = None, gate=None,
              causal: bool = True):
    """SeerAttention's block gate: q and k pooled per block (average, max and min pooling,
    concatenated), projected by the gate's weights (``gate=(Wq, Wk)``, each (3d, d_gate); without
    them the identity, i.e. the pooled features themselves), block scores softmax(q̂ k̂ᵀ/√d_gate) per
    block row; a block is kept when its gate score is ≥ ``threshold`` or among the ``top_k``.

    References
    ----------
    Gao et al., "SeerAttention: Learning Intrinsic Sparse Attention in Your LLMs", 2024.
    """
    if (top_k is None) == (threshold is None):
        raise ValueError("seer_gate(): give exactly one of top_k and threshold")
    qh, kh = _qk(q, k, "seer_gate")
    n, L, d = qh.shape
    r, c = _check_block(block, L, kh.shape[1])
    fq = np.concatenate([_pool(qh, r, h) for h in ("mean", "max", "min")], -1)
    fk = np.concatenate([_pool(kh, c, h) for h in ("mean", "max", "min")], -1)
    if gate is not None:
        fq, fk = fq @ np.asarray(gate[0], float), fk @ np.asarray(gate[1], float)
    s = np.einsum("nid,njd->nij", fq, fk) / math.sqrt(fq.shape[-1])
    nI, nJ = s.shape[1:]
    if causal:
        s = np.where(_block_causal((r, c), (L, kh.shape[1]))[0][None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    if top_k is not None:
        return _top_blocks(np.where(p > 0, p, -np.inf), top_k, (r, c), (L, kh.shape[1]), causal)
    keep = p >= threshold
    if causal:
        keep |= _block_causal((r, c), (L, kh.shape[1]))[1][None]
    return _blocked_mask(keep, (r, c), (L, kh.shape[1]), causal=causal)


# ---- token selection: Double Sparsity, HiP, Spark, Routing -------------------------------------


def calibrate_channels(q, k, r: int) -> np.ndarray:
    """Double Sparsity's offline calibration: per head, the ``r`` channels with the largest mean
    |q_c·k_c| contribution to the scores over calibration data. Returns (n, r) channel indices.

    References
    ----------
    Yang et al., "Post-Training Sparse Attention with Double Sparsity", 2024.
    """
    qh, kh = _qk(q, k, "calibrate_channels")
    contrib = np.abs(qh).mean(1) * np.abs(kh).mean(1)  # E|q_c| E|k_c|, the outlier channels
    return np.argsort(-contrib, axis=1)[:, :r]


def double_sparsity(q, k, *, channels, top_k: int, causal: bool = True):
    """Double Sparsity: approximate scores from the calibrated important channels only
    (q[:, C] k[:, C]ᵀ, ``channels`` (n, r) from :func:`calibrate_channels`), then each query attends
    its ``top_k`` keys by the approximate score. Returns (n, L, L) CSR with min(top_k, allowed) per row.

    References
    ----------
    Yang et al., "Post-Training Sparse Attention with Double Sparsity", 2024.
    """
    qh, kh = _qk(q, k, "double_sparsity")
    ch = np.asarray(channels)
    if ch.ndim != 2 or ch.shape[0] != qh.shape[0]:
        raise ValueError(f"double_sparsity(): channels must be (n, r) with n = {qh.shape[0]} slices; got {ch.shape}")
    qs = np.take_along_axis(qh, ch[:, None, :], 2)
    ks = np.take_along_axis(kh, ch[:, None, :], 2)
    s = np.einsum("nid,njd->nij", qs, ks)
    if causal:
        s = np.where(_causal(*s.shape[1:])[None], s, -np.inf)
    return _token_mask(_top_k_rows(s, top_k), squeeze=False)


def hip(q, k, *, top_k: int, block_q: int = 1, causal: bool = True):
    """HiP's hierarchical top-k: the keys are split into ``top_k`` chunks; each round splits every
    kept chunk in two, scores each half by its representative key (its first) against the query
    (block's max over ``block_q`` queries) and keeps the ``top_k`` best halves, until the chunks are
    single keys: O(L log L) scores per query instead of L, no full score matrix.

    References
    ----------
    Lee et al., "A Training-Free Sub-quadratic Cost Transformer Model Serving Framework with
    Hierarchically Pruned Attention" (HiP Attention), 2024.
    """
    qh, kh = _qk(q, k, "hip")
    n, L, d = qh.shape
    lk = kh.shape[1]
    allowed = np.zeros((n, L, lk), bool)
    for h in range(n):
        for i0 in range(0, L, block_q):
            rows = np.arange(i0, min(i0 + block_q, L))
            limit = rows[-1] + (lk - L) + 1 if causal else lk  # keys the block may see
            kk = min(top_k, limit)
            edges = np.linspace(0, limit, kk + 1).astype(int)
            chunks = [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
            while any(b - a > 1 for a, b in chunks):
                halves = []
                for a, b in chunks:
                    mid = (a + b + 1) // 2 if b - a > 1 else b
                    halves += [(a, mid)] + ([(mid, b)] if mid < b else [])
                reps = np.array([a for a, _ in halves])
                score = (qh[h, rows] @ kh[h, reps].T).max(0)
                best = np.argsort(-score, kind="stable")[:kk]
                chunks = [halves[t] for t in sorted(best)]
            cols = np.array([a for a, _ in chunks])
            allowed[h, rows[:, None], cols[None, :]] = True
    if causal:
        allowed &= _causal(L, lk)[None]
    return _token_mask(allowed, squeeze=False)


def statistical_top_k(scores, k: int, axis: int = -1):
    """Spark Transformer's statistical top-k: the threshold μ + σ·Φ⁻¹(1 − k/n) from the mean and
    standard deviation of each row (the entries taken as Gaussian), and a boolean mask of the entries
    at or above it: about ``k`` per row in linear time, no sort.

    References
    ----------
    You et al., "Spark Transformer: Reactivating Sparsity in FFN and Attention", 2025.

    >>> x = np.random.default_rng(0).standard_normal((4, 100_000))
    >>> bool(abs(statistical_top_k(x, 1000).sum(-1).mean() - 1000) < 100)
    True
    """
    s = np.asarray(scores)
    if s.dtype.kind != "f":
        s = s.astype(np.float64)
    n = s.shape[axis]
    if not 0 < k < n:
        raise ValueError(f"statistical_top_k(): k must be in (0, {n}); got {k!r}")
    z = _normal_quantile(1.0 - k / n)
    mu = s.mean(axis=axis, keepdims=True)
    sd = s.std(axis=axis, keepdims=True)
    return s >= mu + z * sd


def _normal_quantile(p: float) -> float:
    """Φ⁻¹(p), the standard normal quantile."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def spark_top_k(q, k, *, top_k: int, causal: bool = True):
    """Spark Transformer attention: each query attends the keys its statistical top-k
    (:func:`statistical_top_k`) selects from its scores, about ``top_k`` per row.

    References
    ----------
    You et al., "Spark Transformer: Reactivating Sparsity in FFN and Attention", 2025.
    """
    qh, kh = _qk(q, k, "spark_top_k")
    s = np.einsum("nid,njd->nij", qh, kh)
    L, lk = s.shape[1:]
    allowed = np.zeros(s.shape, bool)
    for i in range(L):  # row i sees (causally) i + 1 keys: its own statistics
        n_i = i + 1 + lk - L if causal else lk
        if n_i <= top_k:
            allowed[:, i, :n_i] = True
        else:
            allowed[:, i, :n_i] = statistical_top_k(s[:, i, :n_i], top_k)
    return _token_mask(allowed, squeeze=False)


def routing(q, k, *, n_clusters: int, n_iter: int = 10, causal: bool = True, random_state=0):
    """Routing Transformer: queries and keys (unit-normalised) are clustered by (mini-batch,
    online) spherical k-means with shared centroids; query i attends the keys of its cluster.
    Returns (n, L, L) CSR; a balanced clustering gives ~L/n_clusters keys per row.

    References
    ----------
    Roy, Saffar, Vaswani, Grangier, "Efficient Content-Based Sparse Attention with Routing
    Transformers", 2020.
    """
    qh, kh = _qk(q, k, "routing")
    rng = np.random.default_rng(random_state)
    n, L, d = qh.shape
    allowed = np.zeros((n, L, kh.shape[1]), bool)
    for h in range(n):
        x = np.concatenate([qh[h], kh[h]])
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        mu = _spread_init(x, n_clusters, rng)
        for _ in range(n_iter):  # online k-means: exponential moving average of assigned points
            a = np.argmax(x @ mu.T, axis=1)
            for c in range(n_clusters):
                if (a == c).any():
                    mu[c] = 0.5 * mu[c] + 0.5 * x[a == c].mean(0)
            mu /= np.maximum(np.linalg.norm(mu, axis=1, keepdims=True), 1e-12)
        a = np.argmax(x @ mu.T, axis=1)
        allowed[h] = a[:L, None] == a[None, L:]
    if causal:
        allowed &= _causal(L, kh.shape[1])[None]
        allowed |= np.eye(L, kh.shape[1], kh.shape[1] - L, dtype=bool)[None]  # a query always sees itself
    return _token_mask(allowed, squeeze=False)


def _spread_init(x, n_clusters, rng):
    """k-means++-style start (farthest point by cosine): one random point, then the least similar."""
    chosen = [int(rng.integers(len(x)))]
    best = x @ x[chosen[0]]
    for _ in range(1, n_clusters):
        chosen.append(int(np.argmin(best)))
        best = np.maximum(best, x @ x[chosen[-1]])
    return x[chosen].copy()


def biformer(q, k, *, region: int, top_k: int):
    """BiFormer's bi-level routing attention: q and k averaged per region (``region`` tokens),
    region affinity pool(q) pool(k)ᵀ, each query region routed to its ``top_k`` key regions, then
    token attention to every token of the routed regions (non-causal, as for images). Returns the
    blocked (n, L, L) mask: top_k blocks of region×region per block row, all attended.

    References
    ----------
    Zhu, Wang, Ke, Zhang, Lau, "BiFormer: Vision Transformer with Bi-Level Routing Attention", 2023.
    """
    qh, kh = _qk(q, k, "biformer")
    r, c = _check_block(region, qh.shape[1], kh.shape[1])
    affinity = np.einsum("nid,njd->nij", _pool(qh, r), _pool(kh, c))
    return _blocked_mask(_top_k_rows(affinity, top_k), (r, c), (qh.shape[1], kh.shape[1]))


# ---- SparseD: patterns computed once, reused across steps ------------------------------------


class SparseDPatterns:
    """SparseD's pattern reuse for diffusion language models: full attention for the first
    ``full_steps`` denoising steps, then per-head patterns computed once (at step ``full_steps``,
    by ``builder(q, k)``, e.g. ``lambda q, k: block_sparse(q, k, block=64, top_k=8, causal=False)``)
    and reused unchanged for every later step.

    ``mask(step, q, k)`` returns None (full attention) early, else the cached pattern.

    References
    ----------
    Wang et al., "SparseD: Sparse Attention for Diffusion Language Models", 2025.
    """

    def __init__(self, builder, *, full_steps: int = 1):
        if full_steps < 0:
            raise ValueError(f"SparseDPatterns: full_steps must be >= 0; got {full_steps!r}")
        self.builder, self.full_steps = builder, int(full_steps)
        self.pattern_ = None
        self.computed_at_ = None

    def mask(self, step: int, q, k):
        if step < self.full_steps:
            return None
        if self.pattern_ is None:
            self.pattern_, self.computed_at_ = self.builder(q, k), step
        return self.pattern_

"""A dyGRASS-style dynamic sparsifier: a graph and its sparsifier under edge insertions and deletions,
distances estimated by batched non-backtracking random walks (numpy, or cupy on the GPU)."""

from __future__ import annotations

import math

import numpy as np

from ._base import _Graph, _positive, _rng
from .sparsify import _OVERSAMPLING, spectral_sparsify

# ---- dyGRASS-style dynamic sparsifier ------------------------------------------------------------

def _csr_of(edges: dict, n: int):
    """CSR arrays (indptr, neighbours, weights, global cumulative weights) of an edge dict {(u, v): w}."""
    if edges:
        keys = np.fromiter((k for uv in edges for k in uv), np.int64, 2 * len(edges)).reshape(-1, 2)
        w = np.fromiter(edges.values(), np.float64, len(edges))
    else:
        keys, w = np.zeros((0, 2), np.int64), np.zeros(0)
    rows = np.concatenate([keys[:, 0], keys[:, 1]])
    cols = np.concatenate([keys[:, 1], keys[:, 0]])
    ww = np.concatenate([w, w])
    order = np.lexsort((cols, rows))
    rows, cols, ww = rows[order], cols[order], ww[order]
    indptr = np.zeros(n + 1, np.int64)
    indptr[1:] = np.cumsum(np.bincount(rows, minlength=n))
    return indptr, cols, ww, np.cumsum(ww)


def _walk(csr, sources, targets, n_walkers, length, rng, xp=np):
    """Batched non-backtracking random walks, weight-proportional steps, from each source for at most
    ``length`` steps; per query the smallest path resistance (sum of 1/w) of a walk that reached the
    target (inf if none did) and that walk's path as edge lists. One vectorised step moves all
    walkers of all queries, with array operations only (``xp`` = numpy, or cupy for walkers on the GPU:
    the CSR arrays go to the device, the best paths come back)."""
    indptr, nbr, wts, cum = (xp.asarray(a) for a in csr)
    nq = len(sources)
    if xp is np:
        uniform = rng.random
    else:  # a device stream seeded from the caller's generator (reproducible per seed, not equal to the CPU's)
        uniform = xp.random.RandomState(int(rng.integers(2 ** 31))).random_sample
    qid = xp.repeat(xp.arange(nq), n_walkers)
    pos = xp.repeat(xp.asarray(sources, dtype=xp.int64), n_walkers)
    tgt = xp.repeat(xp.asarray(targets, dtype=xp.int64), n_walkers)
    prev = xp.full(pos.shape, -1, dtype=xp.int64)
    res = xp.zeros(pos.shape)
    alive = xp.ones(pos.shape, dtype=bool)
    trail = xp.full((length, pos.size), -1, dtype=xp.int64)  # CSR slot of each step
    best = xp.full(nq, xp.inf)
    best_walker = xp.full(nq, -1, dtype=xp.int64)
    best_len = xp.zeros(nq, dtype=xp.int64)
    for step in range(length):
        idx = xp.flatnonzero(alive)
        if idx.size == 0:
            break
        lo_slot, hi_slot = indptr[pos[idx]], indptr[pos[idx] + 1]
        empty = lo_slot == hi_slot
        alive[idx[empty]] = False
        idx, lo_slot, hi_slot = idx[~empty], lo_slot[~empty], hi_slot[~empty]
        lo = xp.where(lo_slot > 0, cum[xp.maximum(lo_slot - 1, 0)], 0.0)
        hi = cum[hi_slot - 1]
        slot = xp.searchsorted(cum, lo + uniform(idx.size) * (hi - lo), side="right")
        slot = xp.clip(slot, lo_slot, hi_slot - 1)
        # Non-backtracking: a walker that drew its previous vertex redraws once among the others; at a
        # dead end (its previous vertex the only neighbour) it stops.
        deg = hi_slot - lo_slot
        back = nbr[slot] == prev[idx]
        stuck = back & (deg == 1)
        if bool(stuck.any()):
            alive[idx[stuck]] = False
            keep = ~stuck
            idx, lo_slot, slot, deg, back = idx[keep], lo_slot[keep], slot[keep], deg[keep], back[keep]
        shift = 1 + xp.floor(uniform(idx.size) * xp.maximum(deg - 1, 1)).astype(xp.int64)
        slot = xp.where(back, lo_slot + (slot - lo_slot + shift) % xp.maximum(deg, 1), slot)
        prev[idx] = pos[idx]
        pos[idx] = nbr[slot]
        res[idx] += 1.0 / wts[slot]
        trail[step, idx] = slot
        hit = idx[pos[idx] == tgt[idx]]
        if hit.size:
            alive[hit] = False
            # per query, its hit of least resistance this step (sort by query, then resistance)
            order = xp.lexsort(xp.stack([res[hit], qid[hit]]))
            h = hit[order]
            first = xp.concatenate([xp.ones(1, dtype=bool), qid[h][1:] != qid[h][:-1]])
            h = h[first]
            q = qid[h]
            better = res[h] < best[q]
            q, h = q[better], h[better]
            best[q], best_walker[q], best_len[q] = res[h], h, step + 1
    best, best_walker, best_len = (_to_host(a) for a in (best, best_walker, best_len))
    trail = _to_host(trail)
    paths = [trail[: best_len[q], best_walker[q]] if best_walker[q] >= 0 else None for q in range(nq)]
    return best, paths


def _to_host(a):
    return a.get() if hasattr(a, "get") else a


class DynamicSparsifier:
    r"""A spectral sparsifier kept up to date under edge insertions and deletions (after dyGRASS).

    .. math:: \text{insert } (p, q, w):\ \text{keep it in } H \text{ iff } w\, \hat R_H(p, q) > \tau

    ``fit(G)`` sparsifies G from scratch (:func:`spectral_sparsify`). ``insert`` adds edges to G and
    estimates each one's resistance distance in H by localised non-backtracking random walks from
    p (at most ``walk_length`` steps, ``n_walkers`` walkers; ``R̂`` is the smallest path
    resistance found, inf if no walker reached q): spectrally critical edges
    (``w R̂ > distortion``) join H; the others are represented by scaling the conductances of the
    path found by ``1 + w R̂`` (the path then conducts as path plus edge). ``delete`` removes edges
    from G, and from H where present, and then recovers p–q connectivity in H with the least
    resistive path that walks in G find. All walkers of one call move together (vectorised array
    operations; ``device="cuda"`` runs them on the GPU with cupy). A walker that reaches a dead end
    stops (the walks never backtrack).

    Parameters
    ----------
    epsilon : float, passed to :func:`spectral_sparsify`.
    walk_length, n_walkers : the walks' reach and count per edge.
    distortion : float, default ``epsilon**2 / (oversampling * ln n)``: the ``w R`` above which the
        from-scratch sampler keeps an edge almost surely.
    device : "cpu" or "cuda": where the walkers move (cuda: cupy arrays on the GPU; the graph and the
        sparsifier stay on the host, their CSR arrays go to the device at each call).
    random_state : None, int or numpy Generator.
    **sparsify_options : other options of :func:`spectral_sparsify` for ``fit``.

    Attributes
    ----------
    graph_, sparsifier_ : the current G and H, of the fitted input's kind.

    References
    ----------
    Cheng Chen et al., "dyGRASS: Dynamic Spectral Graph Sparsification via Localized Random Walks on
    GPUs", 2025; Spielman, Srivastava, "Graph Sparsification by Effective Resistances", 2008.

    >>> import networkx as nx
    >>> ds = DynamicSparsifier(0.3, random_state=0).fit(nx.grid_2d_graph(10, 10))
    >>> _ = ds.insert([((0, 0), (9, 9))]).delete([((0, 0), (0, 1))])
    >>> ds.graph_.number_of_edges(), ds.sparsifier_.has_edge((0, 0), (9, 9))
    (180, True)
    """

    def __init__(self, epsilon=0.3, *, walk_length=24, n_walkers=64, distortion=None, device="cpu",
                 random_state=None, **sparsify_options):
        _positive(epsilon, "epsilon", "DynamicSparsifier", upper=1)
        _positive(walk_length, "walk_length", "DynamicSparsifier", integer=True)
        _positive(n_walkers, "n_walkers", "DynamicSparsifier", integer=True)
        if distortion is not None:
            _positive(distortion, "distortion", "DynamicSparsifier")
        self.epsilon, self.walk_length, self.n_walkers = epsilon, walk_length, n_walkers
        if device not in ("cpu", "cuda"):
            raise ValueError(f"DynamicSparsifier: device must be 'cpu' or 'cuda'; got {device!r}")
        self.distortion, self.random_state, self.sparsify_options = distortion, random_state, sparsify_options
        self.device = device

    def fit(self, G):
        """Sparsify G from scratch; returns self."""
        self._rng = _rng(self.random_state)
        self._xp = np
        if self.device == "cuda":
            try:
                import cupy
            except ImportError:
                cupy = None
            if cupy is None or not cupy.is_available():
                raise RuntimeError("DynamicSparsifier(device='cuda') needs cupy and an NVIDIA GPU; use device='cpu'")
            self._xp = cupy
        g = _Graph(G, "DynamicSparsifier.fit")
        H = _Graph(spectral_sparsify(g.A, self.epsilon, random_state=self._rng, **self.sparsify_options), "fit")
        self._g, self.n_ = g, g.n
        self._index = {v: i for i, v in enumerate(g.nodes)} if g.nodes is not None else None
        u, v, w = g.edges()
        self._G = dict(zip(zip(u.tolist(), v.tolist()), w.tolist()))
        hu, hv, hw = H.edges()
        self._H = dict(zip(zip(hu.tolist(), hv.tolist()), hw.tolist()))
        over = self.sparsify_options.get("oversampling") or _OVERSAMPLING
        self.tau_ = self.distortion or self.epsilon ** 2 / (over * math.log(max(self.n_, 3)))
        return self

    def _pairs(self, edges, fn):
        if not hasattr(self, "_G"):
            raise RuntimeError(f"DynamicSparsifier.{fn}: call fit(G) first")
        out = []
        for e in edges:
            a, b = e
            if self._index is not None:
                if a not in self._index or b not in self._index:
                    raise ValueError(f"DynamicSparsifier.{fn}: edge {e!r} names a node not in the graph")
                a, b = self._index[a], self._index[b]
            elif not (0 <= a < self.n_ and 0 <= b < self.n_):
                raise ValueError(f"DynamicSparsifier.{fn}: edge {e!r} is out of range for {self.n_} nodes")
            if a == b:
                raise ValueError(f"DynamicSparsifier.{fn}: self-loop {e!r}")
            out.append((min(a, b), max(a, b)))
        return out

    def insert(self, edges, weights=None):
        """Insert edges (pairs of nodes) with ``weights`` (default 1); returns self."""
        pairs = self._pairs(edges, "insert")
        weights = np.ones(len(pairs)) if weights is None else np.asarray(weights, np.float64).ravel()
        if weights.shape != (len(pairs),) or (weights <= 0).any():
            raise ValueError(f"DynamicSparsifier.insert: weights must be {len(pairs)} positive numbers")
        for k, w in zip(pairs, weights.tolist()):
            self._G[k] = self._G.get(k, 0.0) + w
        csr = _csr_of(self._H, self.n_)
        src = [p for p, _ in pairs]
        dst = [q for _, q in pairs]
        R, paths = _walk(csr, src, dst, self.n_walkers, self.walk_length, self._rng, self._xp)
        nbr = csr[1]
        indptr = csr[0]
        for (k, w, r, path) in zip(pairs, weights.tolist(), R.tolist(), paths):
            if w * r > self.tau_ or path is None:
                self._H[k] = self._H.get(k, 0.0) + w
                continue
            scale = 1.0 + w * r
            owners = np.searchsorted(indptr, path, side="right") - 1
            for a, b in zip(owners.tolist(), nbr[path].tolist()):
                key = (min(a, b), max(a, b))
                self._H[key] *= scale
        return self

    def delete(self, edges):
        """Delete edges (pairs of nodes) from G, and from H where present; returns self."""
        pairs = self._pairs(edges, "delete")
        lost = []
        for k in pairs:
            if k not in self._G:
                raise ValueError(f"DynamicSparsifier.delete: {k!r} is not an edge of the graph")
            del self._G[k]
            if self._H.pop(k, None) is not None:
                lost.append(k)
        if lost:
            csr = _csr_of(self._G, self.n_)
            _, paths = _walk(csr, [p for p, _ in lost], [q for _, q in lost], self.n_walkers, self.walk_length,
                             self._rng, self._xp)
            indptr, nbr = csr[0], csr[1]
            for path in paths:
                if path is None:
                    continue
                owners = np.searchsorted(indptr, path, side="right") - 1
                for a, b in zip(owners.tolist(), nbr[path].tolist()):
                    key = (min(a, b), max(a, b))
                    if key not in self._H:
                        self._H[key] = self._G[key]
        return self

    def _out(self, edges):
        if edges:
            uv = np.array(list(edges.keys()), np.int64)
            return self._g.like(uv[:, 0], uv[:, 1], np.fromiter(edges.values(), np.float64, len(edges)))
        return self._g.like(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))

    @property
    def graph_(self):
        return self._out(self._G)

    @property
    def sparsifier_(self):
        return self._out(self._H)

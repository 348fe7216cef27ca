"""SSumM: sparse summarisation of a graph into a given number of bits (Lee, Jeon, Shin, KDD 2020).

A summary groups the nodes into supernodes and keeps weighted superedges between them; the graph it
stands for has ``Â[u, v] = E_AB / Π_AB`` for u in A, v in B (``E_AB`` edges of G between the two
supernodes, ``Π_AB`` node pairs) when the superedge (A, B) is kept, and 0 otherwise. SSumM merges
supernodes greedily under a minimum-description-length cost (bits of the summary plus bits of the
errors it leaves) and then drops superedges until the summary fits in ``k_bits``. The node shingles
that pick merge candidates (a min over each neighbourhood) and the superedge counts ``Pᵀ A P`` are
sparsedsl kernels; the merging itself is a sequential greedy walk over dict-of-dict counts.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp

import sparsedsl as sd

from .graph._base import _Graph, _rng

__all__ = ["GraphSummary", "ssumm"]

# Shingle of each node: the smallest random hash in its neighbourhood (min-hashing groups nodes with
# overlapping neighbourhoods, SWeG's and SSumM's candidate groups).
_neighbour_min = sd.compile("f[i] = min[j](A[i,j] * h[j])", A="csr", name="neighbour_min")
# Edges between supernodes: Pᵀ A P with P the n x |S| membership matrix (one 1 per row).
_block_counts = sd.compile("C[a,b] = Pt[a,i] * A[i,j] * P[j,b]", Pt="csr", A="csr", P="csr", C="csr",
                           name="block_counts")

_GROUP_MAX = 500  # candidate groups larger than this are split at random (the paper re-hashes them)


def _entropy_bits(e, pi):
    """Bits to encode which of ``pi`` pairs hold the ``e`` edges: pi * H(e / pi)."""
    if e <= 0 or e >= pi:
        return 0.0
    q = e / pi
    return -pi * (q * math.log2(q) + (1 - q) * math.log2(1 - q))


class _Costs:
    """The MDL cost of one supernode pair: a superedge (its two ends and weight, plus the entropy of
    the errors it leaves inside the block) or none (every edge of the block then an error, two node
    ids each), whichever is fewer bits."""

    def __init__(self, n_nodes):
        self.log_v = math.log2(max(n_nodes, 2))
        self.edge_bits = 0.0

    def reset(self, n_super, w_max):
        self.edge_bits = 2 * math.log2(max(n_super, 2)) + math.log2(max(w_max, 2))

    def pair(self, e, pi):
        if e <= 0:
            return 0.0
        return min(self.edge_bits + _entropy_bits(e, pi), 2 * e * self.log_v)


@dataclass(frozen=True)
class GraphSummary:
    """A graph summary: supernode labels, superedges with their edge counts, and what it costs.

    Attributes
    ----------
    labels : (n,) int array, the supernode of each node (0 .. n_supernodes - 1).
    supernode_sizes : (n_supernodes,) int array.
    superedges : (k, 3) int array of (A, B, E_AB) with A <= B: the kept superedges and the number of
        edges of G in each block (its weight).
    size_bits : float, ``|P| (2 log2 |S| + log2 w_max) + |V| log2 |S|`` (the paper's summary size).
    input_bits : float, the input graph's size as an edge list, ``2 |E| log2 |V|``.
    n_nodes : int.
    """

    labels: np.ndarray
    supernode_sizes: np.ndarray
    superedges: np.ndarray
    size_bits: float
    input_bits: float
    n_nodes: int
    _blocks: tuple  # (a, b, E_ab) of every block with an edge, a <= b: the error terms

    def density(self):
        """Weight ``E_AB / Π_AB`` of each superedge, in the order of :attr:`superedges`."""
        a, b, e = self.superedges.T
        return e / _pairs(self.supernode_sizes[a], self.supernode_sizes[b], a == b)

    def reconstruct(self):
        """The graph the summary stands for, ``Â``, as a scipy csr matrix (superedges expanded to every
        node pair they cover: O(sum of Π_AB) entries, meant for small graphs and tests)."""
        members = [np.flatnonzero(self.labels == s) for s in range(len(self.supernode_sizes))]
        rows, cols, vals = [], [], []
        for (a, b, _), w in zip(self.superedges.tolist(), self.density().tolist()):
            u, v = np.meshgrid(members[a], members[b], indexing="ij")
            u, v = u.ravel(), v.ravel()
            keep = u != v
            rows += [u[keep], v[keep]] if a != b else [u[keep]]
            cols += [v[keep], u[keep]] if a != b else [v[keep]]
            vals += [np.full(keep.sum(), w)] * (2 if a != b else 1)
        if not rows:
            return sp.csr_matrix((self.n_nodes, self.n_nodes))
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(self.n_nodes, self.n_nodes))

    def error(self, p=1):
        r"""Reconstruction error ``||A - Â||_p`` over all ordered node pairs (p = 1 or 2), in closed
        form from the block counts: a kept block of density ``w`` errs by ``2E(1 - w)`` (ℓ1) or
        ``E(1 - w)`` (ℓ2²), a dropped one by ``E``; each unordered pair counts twice."""
        if p not in (1, 2):
            raise ValueError(f"GraphSummary.error: p must be 1 or 2; got {p!r}")
        a, b, e = (np.asarray(x) for x in self._blocks)
        pi = _pairs(self.supernode_sizes[a], self.supernode_sizes[b], a == b)
        kept = np.zeros(len(a), bool)
        if len(self.superedges):
            key = a.astype(np.int64) * len(self.supernode_sizes) + b
            skey = self.superedges[:, 0].astype(np.int64) * len(self.supernode_sizes) + self.superedges[:, 1]
            kept = np.isin(key, skey)
        w = e / pi
        per_block = np.where(kept, (2 if p == 1 else 1) * e * (1 - w), e)
        total = 2 * per_block.sum()
        return float(total if p == 1 else math.sqrt(total))


def _pairs(sa, sb, same):
    sa, sb = np.asarray(sa, np.float64), np.asarray(sb, np.float64)
    return np.where(same, sa * (sa - 1) / 2, sa * sb)


class _Summariser:
    """Supernodes as dicts: size[A], nbr[A] = {B: E_AB} (A's own key holds its internal edges)."""

    def __init__(self, A, rng):
        self.A, self.n, self.rng = A, A.shape[0], rng
        self.size = {i: 1 for i in range(self.n)}
        self.nbr = {i: {} for i in range(self.n)}
        for i in range(self.n):
            row = A.indices[A.indptr[i]:A.indptr[i + 1]]
            self.nbr[i] = dict.fromkeys(row.tolist(), 1)
        self.members = {i: [i] for i in range(self.n)}
        self.costs = _Costs(self.n)
        self._cost = {}

    def _pi(self, a, b, sa=None, sb=None):
        sa = self.size[a] if sa is None else sa
        sb = self.size[b] if sb is None else sb
        return sa * (sa - 1) / 2 if a == b else sa * sb

    def cost(self, a):
        """Cost of A's pairs, cached until A or a neighbour merges or the round resets the costs."""
        c = self._cost.get(a)
        if c is None:
            pair = self.costs.pair
            c = self._cost[a] = sum(pair(e, self._pi(a, c)) for c, e in self.nbr[a].items())
        return c

    def merged_cost(self, a, b):
        """Cost of A ∪ B: its pairs with every other neighbour, plus its inside."""
        na, nb = self.nbr[a], self.nbr[b]
        s = self.size[a] + self.size[b]
        pair, size = self.costs.pair, self.size
        total = 0.0
        for c in na.keys() | nb.keys():
            if c != a and c != b:
                total += pair(na.get(c, 0) + nb.get(c, 0), s * size[c])
        inside = na.get(a, 0) + nb.get(b, 0) + na.get(b, 0)
        return total + pair(inside, s * (s - 1) / 2)

    def reduction(self, a, b, cost_a):
        """Relative drop in cost from merging A and B (the paper's selection criterion)."""
        before = cost_a + self.cost(b) - self.costs.pair(self.nbr[a].get(b, 0), self._pi(a, b))
        if before <= 0:
            return -math.inf
        return (before - self.merged_cost(a, b)) / before

    def merge(self, a, b):
        """B into A."""
        na, nb = self.nbr[a], self.nbr.pop(b)
        inside = na.pop(a, 0) + nb.pop(b, 0) + na.pop(b, 0)
        nb.pop(a, None)
        for c, e in nb.items():
            na[c] = na.get(c, 0) + e
            nc = self.nbr[c]
            nc[a] = nc.get(a, 0) + nc.pop(b)
        if inside:
            na[a] = inside
        self.size[a] += self.size.pop(b)
        self.members[a] += self.members.pop(b)
        for c in na:
            self._cost.pop(c, None)
        self._cost.pop(a, None)
        self._cost.pop(b, None)

    def groups(self):
        """Candidate groups: supernodes whose members' shingles have the same minimum."""
        h = self.rng.random(self.n)
        f = np.minimum(_neighbour_min(A=self.Apattern, h=h), h)  # closed neighbourhood
        keys = {}
        for s, mem in self.members.items():
            keys.setdefault(float(f[mem].min()), []).append(s)
        out = []
        for g in keys.values():
            self.rng.shuffle(g)
            out += [g[i:i + _GROUP_MAX] for i in range(0, len(g), _GROUP_MAX)]
        return [g for g in out if len(g) > 1]

    def run(self, k_bits, n_iter):
        self.Apattern = sd.asformat(self.A, "csr")
        for t in range(1, n_iter + 1):
            self.costs.reset(len(self.size), self._w_max())
            self._cost.clear()
            theta = 1.0 / (1 + t) if t < n_iter else 0.0
            for group in self.groups():
                self._merge_group(group, theta)
            if self.size_bits() <= k_bits:
                break

    def _merge_group(self, group, theta):
        """Pick a supernode at random, try log2 |group| random partners, merge with the best if its
        relative cost reduction reaches theta; otherwise drop it from the group."""
        rng = self.rng
        while len(group) > 1:
            a = group.pop(int(rng.integers(len(group))))
            tries = min(len(group), max(1, int(math.log2(len(group) + 1))))
            cost_a = self.cost(a)
            best, best_j = -math.inf, -1
            for j in rng.choice(len(group), tries, replace=False).tolist():
                r = self.reduction(a, group[j], cost_a)
                if r > best:
                    best, best_j = r, j
            if best >= theta and best > -math.inf:
                b = group[best_j]
                self.merge(b, a)

    def size_bits(self):
        """Size of the summary with a superedge on every block that holds an edge (the summary before
        sparsification; at the start, G itself)."""
        n_blocks = sum(1 for a, d in self.nbr.items() for c in d if c >= a)
        return _size_bits(n_blocks, len(self.size), self.n, self._w_max())

    def _w_max(self):
        return max((e for d in self.nbr.values() for e in d.values()), default=1)


def _size_bits(n_superedges, n_super, n_nodes, w_max):
    log_s = math.log2(max(n_super, 2))
    return n_superedges * (2 * log_s + math.log2(max(w_max, 2))) + n_nodes * log_s


def ssumm(G, k_bits=0.5, *, n_iter=20, norm=1, random_state=None):
    r"""Summarise a graph into at most ``k_bits`` bits (SSumM).

    .. math:: \min_{\bar G}\ \|A - \hat A\|_p \quad\text{s.t.}\quad
              |P|\,(2\log_2|S| + \log_2 \omega_{\max}) + |V| \log_2 |S| \le k

    Merging: ``n_iter`` rounds; in each, supernodes are grouped by min-hash shingles of their
    neighbourhoods, and within a group a random supernode is merged with the best of
    ``log2 |group|`` random partners when the relative drop of the MDL cost (bits of superedges plus
    bits of the errors they leave) reaches ``1 / (1 + t)`` (0 in the last round). Merging stops
    early once the summary fits. Sparsification: superedges are then dropped, the ones whose loss
    raises the ``norm`` error least first, until the size is at most ``k_bits``.

    Parameters
    ----------
    G : scipy.sparse matrix, networkx.Graph or SparseTensor: an undirected graph (weights ignored,
        SSumM summarises unweighted graphs).
    k_bits : int (bits) or float in (0, 1) (a fraction of the input's size as an edge list,
        ``2 |E| log2 |V|`` bits).
    n_iter : int, merging rounds (the paper's T, default 20).
    norm : 1 or 2, the error the sparsification step minimises.
    random_state : None, int or numpy Generator.

    Returns
    -------
    GraphSummary : labels, superedges with counts, ``size_bits``, ``error(p)``, ``reconstruct()``.

    References
    ----------
    Kyuhan Lee, Hyeonsoo Jo, Jihoon Ko, Sungsu Lim, Kijung Shin, "SSumM: Sparse Summarization of
    Massive Graphs", KDD 2020.

    >>> import networkx as nx
    >>> S = ssumm(nx.complete_graph(20), 0.2, random_state=0)
    >>> S.size_bits <= 0.2 * S.input_bits, len(S.supernode_sizes) < 20
    (True, True)
    """
    fn = "ssumm"
    g = _Graph(G, fn)
    A = g.A.copy()
    A.data[:] = 1.0
    n, m = g.n, A.nnz // 2
    input_bits = 2 * m * math.log2(max(n, 2))
    if isinstance(k_bits, Integral) and not isinstance(k_bits, bool) and k_bits > 0:
        k = float(k_bits)
    elif isinstance(k_bits, Real) and 0 < k_bits < 1:
        k = k_bits * input_bits
    else:
        raise ValueError(f"{fn}: k_bits must be a positive int (bits) or a fraction in (0, 1) of the input's "
                         f"{input_bits:.0f} bits; got {k_bits!r}")
    if not isinstance(n_iter, Integral) or n_iter < 1:
        raise ValueError(f"{fn}: n_iter must be a positive int; got {n_iter!r}")
    if norm not in (1, 2):
        raise ValueError(f"{fn}: norm must be 1 or 2; got {norm!r}")
    s = _Summariser(A, _rng(random_state))
    s.run(k, n_iter)
    return _sparsify_summary(A, s.members, k, norm, input_bits)


def _sparsify_summary(A, members, k, norm, input_bits):
    """Block counts by Pᵀ A P, then the superedges that save the most error, as many as k bits hold."""
    n = A.shape[0]
    labels = np.empty(n, np.int64)
    for sid, mem in enumerate(members.values()):
        labels[mem] = sid
    n_super = len(members)
    sizes = np.bincount(labels, minlength=n_super)
    P = sp.csr_matrix((np.ones(n), (np.arange(n), labels)), shape=(n, n_super))
    C = _block_counts(Pt=sd.asformat(P.T.tocsr(), "csr"), A=sd.asformat(A, "csr"), P=sd.asformat(P, "csr"))
    C = sp.triu(C.to_scipy(), format="coo")
    a, b = C.row.astype(np.int64), C.col.astype(np.int64)
    e = np.rint(np.where(a == b, C.data / 2, C.data)).astype(np.int64)  # the inside of A counts each edge twice
    pi = _pairs(sizes[a], sizes[b], a == b)
    w_max = int(e.max()) if len(e) else 1
    # Error a superedge saves by being kept (ℓ1: E - 2E(1 - w); ℓ2²: E - E(1 - w)); the least useful go
    # first, and under ℓ1 a block of density below 1/2 is better dropped whatever the budget.
    w = e / pi
    gain = e - (2 if norm == 1 else 1) * e * (1 - w)
    budget = (k - n * math.log2(max(n_super, 2))) / (2 * math.log2(max(n_super, 2)) + math.log2(max(w_max, 2)))
    n_keep = int(max(0, min(len(e), math.floor(budget))))
    order = np.argsort(-gain, kind="stable")[:n_keep]
    order = order[gain[order] > 0]
    order.sort()
    superedges = np.column_stack([a[order], b[order], e[order]]) if len(order) else np.zeros((0, 3), np.int64)
    size = _size_bits(len(order), n_super, n, int(e[order].max()) if len(order) else 1)
    if size > k:
        warnings.warn(f"ssumm: even without superedges the summary's {n_super} supernodes take {size:.0f} bits "
                      f"> k_bits = {k:.0f}; increase n_iter (more merging) or k_bits", UserWarning, stacklevel=3)
    return GraphSummary(labels=labels, supernode_sizes=sizes, superedges=superedges, size_bits=size,
                        input_bits=input_bits, n_nodes=n, _blocks=(a, b, e))

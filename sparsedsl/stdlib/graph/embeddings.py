"""TEDDY's one-shot edge sparsification and FastRP embeddings (degree-normalised transitive similarity
times a very sparse random projection, iterated without forming the similarity)."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

import sparsedsl as sd

from ._base import _aggregate, _Graph, _positive, _rng, _transition_mm

# ---- TEDDY ---------------------------------------------------------------------------------------

def teddy(G, keep=0.5):
    r"""One-shot edge sparsification by TEDDY's edge-degree score: keep the edges of largest score.

    .. math:: \hat g_i = \frac{1}{d_i} \sum_j \frac{A_{ij}}{\sqrt{d_j}},\qquad
              s_{uv} = \frac{\hat g_u}{d_u} \cdot \frac{\hat g_v}{d_v}

    Edges between low-degree nodes whose neighbours are also of low degree score highest (the
    paper's observation that low-degree edges carry the information flow of message passing).

    Parameters
    ----------
    G : scipy.sparse matrix, networkx.Graph or SparseTensor (undirected).
    keep : float in (0, 1] (fraction of edges kept) or int (number of edges kept).

    Returns
    -------
    H : the kept edges with their original weights, of the input's kind.

    References
    ----------
    Seo, Yun, Yang, "TEDDY: Trimming Edges with Degree-based Discrimination strategY", 2024.

    >>> import networkx as nx
    >>> H = teddy(nx.star_graph(4), keep=2)
    >>> H.number_of_edges()
    2
    """
    g = _Graph(G, "teddy")
    u, v, w = g.edges()
    m = len(u)
    if isinstance(keep, Integral) and not isinstance(keep, bool):
        if not 0 <= keep <= m:
            raise ValueError(f"teddy: an int keep is the number of edges kept, 0 <= keep <= {m}; got {keep}")
        k = int(keep)
    elif isinstance(keep, Real) and 0 < keep <= 1:
        k = int(round(keep * m))
    else:
        raise ValueError(f"teddy: keep must be a fraction in (0, 1] or an edge count; got {keep!r}")
    # Degrees count edges (the paper's unweighted degree); the score aggregates over neighbours.
    B = g.A.copy()
    B.data[:] = 1.0
    deg = np.asarray(B.sum(axis=1)).ravel()
    dinv = np.where(deg > 0, 1.0 / np.maximum(deg, 1), 0.0)
    ghat = _aggregate(A=sd.asformat(B, "csr"), w=dinv, s=np.sqrt(dinv))
    node = ghat * dinv
    score = node[u] * node[v]
    order = np.argsort(-score, kind="stable")[:k]
    order.sort()
    return g.like(u[order], v[order], w[order])


# ---- FastRP --------------------------------------------------------------------------------------

def very_sparse_projection(n, dim, *, random_state=None):
    """Very sparse random projection: entries ±sqrt(s/dim) with probability 1/(2s) each, 0 otherwise,
    s = sqrt(n).

    Parameters
    ----------
    n, dim : int
        Rows (nodes) and columns (embedding dimension).
    random_state : int, numpy Generator or None

    Returns
    -------
    R : ndarray of shape (n, dim)

    References
    ----------
    Li, Hastie, Church, "Very Sparse Random Projections", 2006; Achlioptas, "Database-friendly random
    projections", 2003.
    """
    rng = _rng(random_state)
    s = math.sqrt(n)
    r = rng.random((n, dim))
    R = np.zeros((n, dim))
    R[r < 1 / (2 * s)] = 1.0
    R[r > 1 - 1 / (2 * s)] = -1.0
    return R * math.sqrt(s / dim)


def fastrp(G, dim=128, *, weights=(1.0, 1.0, 1.0), beta=0.0, normalize=False, projection=None,
           random_state=None):
    r"""FastRP node embeddings: a very sparse random projection of a degree-normalised transitive
    similarity, computed by repeated transition products without forming the similarity.

    .. math:: N = \sum_{k=1}^{K} \alpha_k\, (D^{-1} A)^k\, L\, R,\qquad
              L = \mathrm{diag}\big((d_j / 2m)^{\beta}\big)

    Parameters
    ----------
    G : scipy.sparse matrix, networkx.Graph or SparseTensor (undirected, weighted degrees).
    dim : int, embedding dimension.
    weights : sequence of K floats ``alpha_1..alpha_K`` (the paper tunes them per data set).
    beta : float, the normalisation strength (the paper searches [-1, 0]).
    normalize : bool, l2-normalise the rows of each power's embedding before weighting (as the
        authors' code does optionally).
    projection : optional (n, dim) array R; default :func:`very_sparse_projection`.
    random_state : None, int or numpy Generator.

    Returns
    -------
    N : (n, dim) numpy array, rows in the order of the matrix (of ``list(G.nodes)`` for networkx).

    References
    ----------
    Chen, Sultan, Tian, Chen, Skiena, "Fast and Accurate Network Embeddings via Very Sparse Random
    Projection", 2019.

    >>> import networkx as nx
    >>> fastrp(nx.karate_club_graph(), 8, random_state=0).shape
    (34, 8)
    """
    fn = "fastrp"
    _positive(dim, "dim", fn, integer=True)
    weights = tuple(weights)
    if not weights or not all(isinstance(a, Real) for a in weights):
        raise ValueError(f"{fn}: weights must be a non-empty sequence of numbers; got {weights!r}")
    if not isinstance(beta, Real):
        raise ValueError(f"{fn}: beta must be a number; got {beta!r}")
    g = _Graph(G, fn)
    n = g.n
    d = np.asarray(g.A.sum(axis=1)).ravel()
    if projection is None:
        R = very_sparse_projection(n, dim, random_state=random_state)
    else:
        R = np.asarray(projection, dtype=np.float64)
        if R.shape != (n, dim):
            raise ValueError(f"{fn}: projection must have shape ({n}, {dim}); got {R.shape}")
    two_m = d.sum()
    lw = np.zeros(n)
    lw[d > 0] = (d[d > 0] / two_m) ** beta
    A = sd.asformat(g.A, "csr")
    w = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)
    cur = np.ascontiguousarray(lw[:, None] * R)
    out = np.zeros((n, dim))
    for alpha in weights:
        cur = _transition_mm(A=A, w=w, X=cur)
        part = cur
        if normalize:
            norms = np.linalg.norm(cur, axis=1, keepdims=True)
            part = cur / np.where(norms > 0, norms, 1.0)
        if alpha:
            out += alpha * part
    return out



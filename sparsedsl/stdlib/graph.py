"""Graph sparsification and embeddings written on sparsedsl kernels.

Every function takes an undirected weighted graph as the user holds it (a symmetric scipy.sparse
matrix, a networkx Graph with edge attribute ``weight``, or a SparseTensor) and returns the result
in the same kind. The sparse products (Laplacian times a block of vectors inside conjugate
gradient, the random-walk transition times a block, incidence products, degree aggregations) are
sparsedsl kernels compiled once below; O(n) and O(m) vector work is numpy.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp

import sparsedsl as sd

from .ot import ConvergenceWarning

__all__ = ["DynamicSparsifier", "effective_resistances", "fastrp", "jl_relative_error", "laplacian_quadratic_ratio",
           "sparsifier_bounds", "spectral_sparsify", "teddy", "very_sparse_projection"]

# ---- kernels -------------------------------------------------------------------------------------
# L X = D X - A X for a block X of vectors (one SpMM per conjugate-gradient iteration for all columns).
_laplacian_mm = sd.compile("Y[i,k] = d[i] * X[i,k] - A[i,j] * X[j,k]", A="csr", name="laplacian_mm")
# Random-walk transition D^-1 A times a block.
_transition_mm = sd.compile("Y[i,k] = w[i] * A[i,j] * X[j,k]", A="csr", name="transition_mm")
# Incidence-transpose times a block: B^T (sqrt(w) Q) as a product with the n x m signed incidence.
_incidence_mm = sd.compile("Y[i,k] = B[i,e] * Q[e,k]", B="csr", name="incidence_mm")
# Degree-weighted neighbour aggregation w_i * sum_j A_ij s_j (TEDDY's multi-level degree).
_aggregate = sd.compile("g[i] = w[i] * A[i,j] * s[j]", A="csr", name="aggregate")


# ---- inputs and outputs of the user's kind -------------------------------------------------------

class _Graph:
    """The graph as a symmetric csr adjacency without self-loops, plus what rebuilds the user's kind."""

    def __init__(self, G, fn: str, weight: str = "weight"):
        self.kind, self.template, self.nodes, self.chunks = None, G, None, None
        if type(G).__module__.startswith("sparsedsl.dask"):  # a PartitionedTensor: the solves run on its blocks
            self.chunks, G = G.chunks, G.compute()
            self.template = G
        if isinstance(G, sd.SparseTensor):
            self.kind, A = "sparsetensor", sp.csr_matrix(G.to_scipy())
        elif sp.issparse(G):
            self.kind, A = "scipy", sp.csr_matrix(G)
        elif type(G).__module__.split(".")[0] == "networkx":
            import networkx as nx

            if G.is_directed() or G.is_multigraph():
                raise ValueError(f"{fn}: G must be an undirected simple graph (networkx.Graph); got {type(G).__name__}")
            self.kind, self.nodes = "networkx", list(G.nodes)
            A = sp.csr_matrix(nx.to_scipy_sparse_array(G, nodelist=self.nodes, weight=weight, format="csr"))
        else:
            raise TypeError(f"{fn}: G must be a scipy.sparse matrix, a networkx.Graph or a SparseTensor; "
                            f"got {type(G).__name__}")
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"{fn}: the adjacency matrix must be square; got shape {A.shape}")
        A = A.astype(np.float64)
        A.setdiag(0)
        A.eliminate_zeros()
        A.sum_duplicates()
        A.sort_indices()
        if (abs(A - A.T) > 1e-12 * (abs(A).max() if A.nnz else 1)).nnz:
            raise ValueError(f"{fn}: G must be undirected (a symmetric adjacency matrix)")
        if A.nnz and A.data.min() < 0:
            raise ValueError(f"{fn}: edge weights must be positive")
        self.A, self.n = A, A.shape[0]

    def operator(self):
        """The adjacency for the Laplacian solves: csr, or cut like the user's partitioned graph."""
        if self.chunks is None:
            return sd.asformat(self.A, "csr")
        from ..dask import partition

        return partition(sd.asformat(self.A, "csr"), chunks=self.chunks)

    def edges(self):
        """(u, v, w) of each edge once, u < v."""
        U = sp.triu(self.A, k=1).tocoo()
        return U.row.astype(np.int64), U.col.astype(np.int64), U.data

    def like(self, u, v, w):
        """A graph of the user's kind on the same nodes with edges (u, v, w)."""
        A = sp.coo_matrix((np.concatenate([w, w]), (np.concatenate([u, v]), np.concatenate([v, u]))),
                          shape=(self.n, self.n)).tocsr()
        A.sum_duplicates()
        A.sort_indices()
        if self.kind == "scipy":
            out = A.asformat(self.template.format)
            return type(self.template)(out) if isinstance(self.template, sp.sparray) else out
        if self.kind == "sparsetensor":
            return sd.asformat(A, "csr")
        import networkx as nx

        H = nx.Graph()
        H.add_nodes_from(self.template.nodes(data=True))
        nodes = self.nodes
        H.add_weighted_edges_from((nodes[a], nodes[b], float(c)) for a, b, c in zip(u.tolist(), v.tolist(), w))
        return H


def _rng(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or isinstance(random_state, Integral):
        return np.random.default_rng(random_state)
    raise ValueError(f"random_state must be None, an int or a numpy Generator; got {random_state!r}")


def _positive(value, name, fn, *, integer=False, upper=None):
    kind = Integral if integer else Real
    if not isinstance(value, kind) or not value > 0 or (upper is not None and value > upper):
        what = "a positive int" if integer else "a positive number" + (f" <= {upper}" if upper else "")
        raise ValueError(f"{fn}: {name} must be {what}; got {value!r}")


# ---- Laplacian solves ----------------------------------------------------------------------------

def _laplacian_solve(A: sd.SparseTensor, d, Y, *, tol, max_iter, fn):
    """Block Jacobi-preconditioned CG for L X = Y, each column on its own (right-hand sides summing to
    zero on every component, so the singular L is consistent)."""
    dinv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), 0.0)[:, None]
    X = np.zeros_like(Y)
    R = Y.copy()
    Z = dinv * R
    P = Z.copy()
    rz = np.einsum("ij,ij->j", R, Z)
    stop = tol * np.linalg.norm(Y, axis=0)
    for _ in range(max_iter):
        AP = _laplacian_mm(A=A, d=d, X=P) if isinstance(A, sd.SparseTensor) else d[:, None] * P - np.asarray(A @ P)
        pap = np.einsum("ij,ij->j", P, AP)
        alpha = np.divide(rz, pap, out=np.zeros_like(rz), where=pap > 0)
        X += alpha * P
        R -= alpha * AP
        if np.all(np.linalg.norm(R, axis=0) <= stop):
            return X
        Z = dinv * R
        rz_new = np.einsum("ij,ij->j", R, Z)
        beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0)
        P = Z + beta * P
        rz = rz_new
    warnings.warn(f"{fn}: the Laplacian solves (conjugate gradient) did not reach tol={tol:g} in "
                  f"max_iter={max_iter} iterations; increase max_iter or pass preconditioner='pyamg'",
                  ConvergenceWarning, stacklevel=3)
    return X


def _pyamg_solve(Adj, Y, *, tol, max_iter):
    import pyamg

    L = sp.csgraph.laplacian(Adj).tocsr()
    ml = pyamg.smoothed_aggregation_solver(L, symmetry="symmetric")
    return np.column_stack([ml.solve(Y[:, k], tol=tol, maxiter=max_iter, accel="cg") for k in range(Y.shape[1])])


def jl_relative_error(n_projections, n_edges, failure_probability=1e-3):
    r"""Relative error that :func:`effective_resistances` stays within on every edge at once, except
    with probability ``failure_probability`` (Johnson–Lindenstrauss with ±1 projections).

    For one edge, ``P(|R̂ - R| > eta R) <= 2 exp(-k (eta^2/2 - eta^3/3) / 2)`` (Achlioptas 2003,
    the tail bound behind his Theorem 1.1); a union bound over ``m`` edges gives the ``eta`` solving

    .. math:: \frac{k}{2}\Big(\frac{\eta^2}{2} - \frac{\eta^3}{3}\Big) = \ln\frac{2m}{\delta},
              \qquad \eta \approx 2\sqrt{\ln(2m/\delta) / k}

    — the ``sqrt(log n / k)`` of Spielman–Srivastava's Theorem 2. A single estimate's typical
    (one standard deviation) error is ``sqrt(2 / k)``. The Laplacian solves add their relative
    residual ``tol`` on top.

    Parameters
    ----------
    n_projections : int, the ``k`` of :func:`effective_resistances`.
    n_edges : int, the number of edges estimated together.
    failure_probability : float in (0, 1).

    Returns
    -------
    eta : float, the bound (``inf`` when ``k`` is too small for any eta < 1).

    References
    ----------
    Achlioptas, "Database-friendly random projections: Johnson–Lindenstrauss with binary coins", 2003;
    Spielman, Srivastava, "Graph Sparsification by Effective Resistances", 2008.

    >>> round(jl_relative_error(1500, 690, 1e-6), 3)
    0.261
    """
    fn = "jl_relative_error"
    _positive(n_projections, "n_projections", fn, integer=True)
    _positive(n_edges, "n_edges", fn, integer=True)
    _positive(failure_probability, "failure_probability", fn, upper=1)
    target = 2.0 * math.log(2.0 * n_edges / failure_probability) / n_projections
    if target >= 1.0 / 6.0:  # eta^2/2 - eta^3/3 peaks at 1/6 (eta = 1)
        return math.inf
    lo, hi = 0.0, 1.0
    for _ in range(60):  # the left side increases on [0, 1]: bisection
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid * mid / 2 - mid ** 3 / 3 < target else (lo, mid)
    return hi


def effective_resistances(G, *, n_projections=48, tol=1e-4, max_iter=2000, preconditioner="jacobi",
                          random_state=None):
    r"""Approximate effective resistance of every edge by random projection (Spielman–Srivastava).

    .. math:: R_{uv} = (\chi_u - \chi_v)^T L^+ (\chi_u - \chi_v)
              \approx \| Z (\chi_u - \chi_v) \|^2,\quad Z = Q W^{1/2} B L^+

    with ``Q`` a random ±1/√k matrix of ``k = n_projections`` rows: k Laplacian solves (one block
    conjugate gradient, sparsedsl SpMM per iteration). Accuracy follows ``k`` alone (not the machine
    or thread count): each estimate is unbiased with relative standard deviation at most
    ``sqrt(2 / k)``, and all ``m`` of them are within :func:`jl_relative_error` ``(k, m, delta)``
    except with probability ``delta`` (at k = 48 and m = 10^5 that bound is ~1, so the sparsifier's
    default treats the estimates as rough leverages; ask for k in the thousands for accurate values).
    ``random_state`` alone fixes ``Q``: the same seed gives the same estimates on every machine, up to
    rounding in the solves.

    Returns
    -------
    (u, v, w, R) : arrays over the edges (u < v), their weights and estimated resistances.

    References
    ----------
    Spielman, Srivastava, "Graph Sparsification by Effective Resistances", 2008; Achlioptas,
    "Database-friendly random projections", 2003 (the ±1 projection and its tail bound).
    """
    g = G if isinstance(G, _Graph) else _Graph(G, "effective_resistances")
    _positive(n_projections, "n_projections", "effective_resistances", integer=True)
    rng = _rng(random_state)
    u, v, w = g.edges()
    m, k = len(u), n_projections
    # B^T (sqrt(w) Q^T): the n x m signed incidence matrix (csr) times an m x k block.
    e = np.arange(m)
    Bt = sp.csr_matrix((np.concatenate([np.ones(m), -np.ones(m)]), (np.concatenate([u, v]), np.concatenate([e, e]))),
                       shape=(g.n, m))
    Bt.sort_indices()
    Q = rng.choice([-1.0, 1.0], size=(m, k)) * (np.sqrt(w)[:, None] / math.sqrt(k))
    Y = _incidence_mm(B=sd.asformat(Bt, "csr"), Q=Q)
    if preconditioner == "jacobi":
        d = np.asarray(g.A.sum(axis=1)).ravel()
        Z = _laplacian_solve(g.operator(), d, Y, tol=tol, max_iter=max_iter, fn="effective_resistances")
    elif preconditioner == "pyamg":
        Z = _pyamg_solve(g.A, Y, tol=tol, max_iter=max_iter)
    else:
        raise ValueError(f"effective_resistances: preconditioner must be 'jacobi' or 'pyamg'; got {preconditioner!r}")
    D = Z[u] - Z[v]
    return u, v, w, np.einsum("ij,ij->i", D, D)


_OVERSAMPLING = 1.5  # the default C of spectral_sparsify (and of DynamicSparsifier's threshold)


def spectral_sparsify(G, epsilon=0.3, *, oversampling=None, n_samples=None, sampling="independent", keep_tree=True,
                      n_projections=48, tol=1e-4, max_iter=2000, preconditioner="jacobi", random_state=None):
    r"""Spectral sparsifier by effective-resistance sampling (Spielman–Srivastava).

    .. math:: (1-\varepsilon)\, x^T L_G x \le x^T L_H x \le (1+\varepsilon)\, x^T L_G x

    Each edge's leverage ``w_e R_e`` (``R_e`` from :func:`effective_resistances`; the leverages sum
    to n - 1) sets how often it is sampled. ``sampling="independent"`` (default) keeps edge e with
    probability ``p_e = min(1, C w_e R_e ln(n) / epsilon^2)`` and weight ``w_e / p_e``, independently
    of the others (the Bernoulli form of the theorem, Spielman–Teng 2011): an edge whose expected
    count reaches 1 is kept with its own weight instead of a random multiple of it.
    ``sampling="with_replacement"`` is the paper's scheme: ``q = C n ln(n) / epsilon^2`` draws with
    replacement, ``p_e ∝ w_e R_e``, weight ``w_e count_e / (q p_e)``. ``C`` is ``oversampling``; both
    schemes have ``E[L_H] = L_G``. With ``keep_tree`` a maximum-weight spanning forest is kept exactly
    and only the other edges are sampled, so H stays connected where G is.

    **The sample count.** By default it is the theorem's ``q = C n ln(n) / epsilon^2`` with
    ``C = 1.5`` (expected kept edges beyond the tree, for independent sampling). That default put
    every generalized eigenvalue of ``(L_H, L_G)`` inside ``[1 - epsilon, 1 + epsilon]`` at
    epsilon = 0.3 on complete graphs (n = 400: half the edges kept, eigenvalues within [0.81, 1.23]
    over 3 seeds, where C = 1 reached 1.32 and C = 0.7 1.35: a vertex's sampled degree varies by
    about ``1/sqrt(degree)``, so the ``ln n`` and a C near 1 are not slack) and on every graph of
    benchmarks/stdlib_graph_ot.py. That worst-case guarantee needs about ``2 n / epsilon^2`` edges
    even on the complete graph (Batson–Spielman–Srivastava) and ``C n ln(n) / epsilon^2`` by
    sampling, so only graphs of mean degree well above ``2 C ln(n) / epsilon^2`` (about 250 at
    n = 5,000) lose most of their edges; a grid or a mean-degree-10 graph keeps nearly all.
    ``n_samples`` (or a smaller ``oversampling``) sets the count directly, as practical codes do
    (Laplacians.jl's ``sparsify`` takes C = 4; simplifyNet's ``EffRSparse`` takes q): fewer samples
    keep fewer edges, and then ``x^T L_H x / x^T L_G x`` stays near 1 for a fixed or random x
    (the spectral-sketch property, error about ``sqrt(n / samples)`` times a small factor) while the
    worst x — the relative condition number — degrades. Measure both with
    :func:`laplacian_quadratic_ratio` and :func:`sparsifier_bounds`.

    Parameters
    ----------
    G : scipy.sparse matrix, networkx.Graph or SparseTensor (undirected, positive weights).
    epsilon : float in (0, 1): the target relative error.
    oversampling : float > 0, the constant C in the sample count (default 1.5 when n_samples is
        not given).
    n_samples : int > 0, the sample count itself: the expected number of sampled edges beyond the
        tree (independent sampling; at most the number of such edges) or the number of draws (with
        replacement). Give ``oversampling`` or ``n_samples``, not both.
    sampling : "independent" or "with_replacement".
    keep_tree : bool, keep a maximum-weight spanning forest exactly.
    n_projections : int, random projections of the resistance estimate (relative error about
        ``sqrt(2 / n_projections)`` per edge, see :func:`jl_relative_error`; an underestimated
        resistance undersamples its edge).
    tol, max_iter : relative residual and iteration cap of the Laplacian solves.
    preconditioner : "jacobi" (sparsedsl block CG) or "pyamg" (algebraic multigrid, needs pyamg).
    random_state : None, int or numpy Generator.

    Returns
    -------
    H : the sparsifier, a weighted graph of the input's kind on the same nodes.

    References
    ----------
    Spielman, Srivastava, "Graph Sparsification by Effective Resistances", 2008; Spielman, Teng,
    "Spectral Sparsification of Graphs", 2011; Batson, Spielman, Srivastava, "Twice-Ramanujan
    Sparsifiers", 2012 (the lower bound); Andoni, Chen, Krauthgamer, Qin, Woodruff, Zhang, "On
    Sketching Quadratic Forms", 2016 (the per-vector guarantee needs fewer edges than the for-all one).

    >>> import scipy.sparse as sp
    >>> G = sp.csr_matrix(np.ones((400, 400)) - np.eye(400))
    >>> H = spectral_sparsify(G, 0.5, random_state=0)
    >>> H.nnz < G.nnz / 2
    True
    """
    fn = "spectral_sparsify"
    _positive(epsilon, "epsilon", fn, upper=1)
    if oversampling is not None and n_samples is not None:
        raise ValueError(f"{fn}: give oversampling or n_samples, not both; got {oversampling!r} and {n_samples!r}")
    if n_samples is not None:
        _positive(n_samples, "n_samples", fn, integer=True)
    oversampling = _OVERSAMPLING if oversampling is None else oversampling
    _positive(oversampling, "oversampling", fn)
    if sampling not in ("independent", "with_replacement"):
        raise ValueError(f"{fn}: sampling must be 'independent' or 'with_replacement'; got {sampling!r}")
    g = _Graph(G, fn)
    rng = _rng(random_state)
    u, v, w, R = effective_resistances(g, n_projections=n_projections, tol=tol, max_iter=max_iter,
                                       preconditioner=preconditioner, random_state=rng)
    if len(u) == 0:
        return g.like(u, v, w)
    tree = _spanning_forest(g.n, u, v, w) if keep_tree else np.zeros(len(u), bool)
    score = np.where(tree, 0.0, w * R)
    rate = oversampling * math.log(max(g.n, 2)) / epsilon ** 2  # expected draws per unit of leverage
    if sampling == "independent":
        if n_samples is not None:
            rate = _rate_for(score, n_samples)
        p = np.minimum(1.0, rate * score)
        keep = rng.random(len(u)) < p
        new_w = np.where(tree, w, w / np.where(keep, p, 1.0))
    else:
        q = n_samples if n_samples is not None else max(1, int(math.ceil(rate * g.n)))
        if score.sum() > 0:
            p = score / score.sum()
            counts = rng.multinomial(q, p)
        else:
            p, counts = np.ones(len(u)), np.zeros(len(u), np.int64)
        keep = counts > 0
        new_w = np.where(tree, w, w * counts / (q * np.where(keep, p, 1.0)))
    keep |= tree
    return g.like(u[keep], v[keep], new_w[keep])


def _rate_for(score, n_samples):
    """The rate r with sum(min(1, r * score)) = n_samples (capped at the number of positive scores):
    with the j largest scores saturated, r = (n_samples - j) / (sum of the others); the first j whose
    r saturates exactly those j."""
    s = np.sort(score[score > 0])[::-1]
    if n_samples >= len(s):
        return 1.0 / s[-1] if len(s) else 0.0  # every positive score saturates
    tail = np.cumsum(s[::-1])[::-1]  # tail[j] = sum of s[j:]
    j = np.arange(len(s))
    r = (n_samples - j) / tail
    ok = (r * s < 1) & ((j == 0) | (r * np.concatenate([[np.inf], s[:-1]]) >= 1))
    return float(r[np.argmax(ok)])


def _spanning_forest(n, u, v, w):
    """Mask of the edges of a maximum-weight spanning forest (scipy's minimum spanning tree of 1/w)."""
    T = sp.csgraph.minimum_spanning_tree(sp.csr_matrix((1.0 / w, (u, v)), shape=(n, n))).tocoo()
    a, b = np.minimum(T.row, T.col), np.maximum(T.row, T.col)
    key = u * n + v
    return np.isin(key, a.astype(np.int64) * n + b)


def laplacian_quadratic_ratio(G, H, *, n_vectors=200, random_state=None):
    """``x^T L_H x / x^T L_G x`` for ``n_vectors`` random Gaussian ``x`` (sparsedsl Laplacian products):
    the empirical check of a spectral sparsifier's bound.

    Parameters
    ----------
    G, H : scipy.sparse matrix, networkx graph or SparseTensor
        The graph and its sparsifier, on the same nodes.
    n_vectors : int
        How many random vectors.
    random_state : int, numpy Generator or None

    Returns
    -------
    ratios : ndarray of shape (n_vectors,)

    References
    ----------
    Spielman, Srivastava, "Graph Sparsification by Effective Resistances", 2008 (the (1 ± ε) bound checked).
    """
    g, h = _Graph(G, "laplacian_quadratic_ratio"), _Graph(H, "laplacian_quadratic_ratio")
    X = _rng(random_state).standard_normal((g.n, n_vectors))
    quad = []
    for gr in (g, h):
        d = np.asarray(gr.A.sum(axis=1)).ravel()
        quad.append(np.einsum("ij,ij->j", X, _laplacian_mm(A=sd.asformat(gr.A, "csr"), d=d, X=X)))
    return quad[1] / quad[0]


def sparsifier_bounds(G, H, *, tol=1e-4, solve_tol=1e-8, max_iter=20000, random_state=None):
    r"""The extreme generalized eigenvalues of ``(L_H, L_G)``: the tightest ``lo, hi`` with

    .. math:: \mathrm{lo}\; x^T L_G x \le x^T L_H x \le \mathrm{hi}\; x^T L_G x \quad \forall x \perp \mathbf 1

    (G connected); ``hi / lo`` is the relative condition number, and H is a (1 ± epsilon) sparsifier
    exactly when ``[lo, hi]`` lies in ``[1 - epsilon, 1 + epsilon]``. Unlike random x (see
    :func:`laplacian_quadratic_ratio`), this finds the worst x. ``hi`` is the largest eigenvalue of
    ``L_G^+ L_H`` and ``1 / lo`` the largest of ``L_H^+ L_G``, each by Lanczos (ARPACK's ``eigsh``,
    generalized mode, in the inner product of the second Laplacian): both are well separated ends of
    their spectra, where Lanczos converges in tens of steps (asking one run for both ends took
    hundreds, the small end being clustered). Each step is one sparsedsl Laplacian product and one
    Laplacian solve: Jacobi-preconditioned conjugate gradient on sparsedsl products, or, for a graph
    of at most 4 edges a vertex (a sparsifier), a sparse LU of its grounded Laplacian. Ritz values lie
    inside the spectrum, so an unconverged estimate understates the spread, never overstates it.

    Parameters
    ----------
    G, H : scipy.sparse matrix, networkx graph or SparseTensor, on the same nodes; G connected.
    tol : relative accuracy of the two eigenvalues (ARPACK's tol).
    solve_tol, max_iter : relative residual and iteration cap of each conjugate-gradient solve.
    random_state : int, numpy Generator or None (the Lanczos start vectors).

    Returns
    -------
    (lo, hi) : floats (``lo = 0`` when H is disconnected).

    References
    ----------
    Spielman, Srivastava, "Graph Sparsification by Effective Resistances", 2008 (the bound);
    Lehoucq, Sorensen, Yang, "ARPACK Users' Guide", 1998 (the generalized symmetric mode).

    >>> import networkx as nx
    >>> G = nx.cycle_graph(6)
    >>> H = nx.cycle_graph(6)
    >>> H[0][1]["weight"] = 2.0
    >>> [round(b, 3) for b in sparsifier_bounds(G, H)]
    [1.0, 1.833]
    """
    fn = "sparsifier_bounds"
    g, h = _Graph(G, fn), _Graph(H, fn)
    if g.n != h.n:
        raise ValueError(f"{fn}: G and H must have the same nodes; got {g.n} and {h.n}")
    if not (g.A != h.A).nnz:
        return 1.0, 1.0
    if g.n < 8:  # ARPACK needs room for its Krylov space: dense eigenvalues of a tiny pencil
        lam = np.linalg.eigvalsh(_pencil_dense(g.A, h.A))
        return float(lam.min()), float(lam.max())
    if sp.csgraph.connected_components(h.A)[0] > 1:
        return 0.0, _pencil_max(h, g, tol, solve_tol, max_iter, _rng(random_state))
    rng = _rng(random_state)
    hi = _pencil_max(h, g, tol, solve_tol, max_iter, rng)
    return 1.0 / _pencil_max(g, h, tol, solve_tol, max_iter, rng), hi


def _pencil_max(top, bottom, tol, solve_tol, max_iter, rng):
    """Largest eigenvalue of (L_top, L_bottom) on the complement of the constants (bottom connected)."""
    import scipy.sparse.linalg as sla

    n = top.n
    dT, dB = (np.asarray(x.A.sum(axis=1)).ravel() for x in (top, bottom))
    AT, AB = sd.asformat(top.A, "csr"), sd.asformat(bottom.A, "csr")
    # ARPACK's generalized mode wants M definite: the constant vector gets eigenvalue c in L_B + c J and
    # mu c in L_T + mu c J (J = 11^T / n), mu a Rayleigh quotient of the pencil, so at most the largest
    # eigenvalue. (With the singular L_B itself Lanczos returned spurious values in the hundreds.)
    c = float(dB.mean())
    x = rng.standard_normal((n, 1))
    mu = float((x * _laplacian_mm(A=AT, d=dT, X=x)).sum() / (x * _laplacian_mm(A=AB, d=dB, X=x)).sum())

    def product(A, d, shift):
        def apply(v):
            X = np.ascontiguousarray(v.reshape(n, -1))
            return (_laplacian_mm(A=A, d=d, X=X) + shift * X.mean(axis=0)).reshape(v.shape)
        return apply

    if bottom.A.nnz <= 8 * n:
        # A sparsifier with a few edges a vertex (a spanning tree plus reweighted samples) is badly
        # conditioned: Jacobi-CG took thousands of iterations a solve (minutes at n = 20,000). Its
        # Laplacian grounded at vertex 0 factors with little fill (scipy's SuperLU).
        L = (sp.diags(dB) - bottom.A).tocsc()[1:, 1:]
        lu = sla.splu(L, permc_spec="MMD_AT_PLUS_A")

        def inverse(R):
            X = np.zeros_like(R)
            X[1:] = lu.solve(np.ascontiguousarray(R[1:]))
            return X
    else:
        def inverse(R):
            return _laplacian_solve(AB, dB, R, tol=solve_tol, max_iter=max_iter, fn="sparsifier_bounds")

    def solve(y):
        Y = y.reshape(n, -1)
        mean = Y.mean(axis=0)
        X = inverse(Y - mean)
        return (X - X.mean(axis=0) + mean / c).reshape(y.shape)

    LT, LB, LB_inv = (sla.LinearOperator((n, n), matvec=f, dtype=np.float64)
                      for f in (product(AT, dT, mu * c), product(AB, dB, c), solve))
    lam = sla.eigsh(LT, k=1, M=LB, Minv=LB_inv, which="LA", v0=rng.standard_normal(n), tol=tol,
                    return_eigenvectors=False)
    return float(lam.max())


def _pencil_dense(A, B):
    """Dense (L_A^{+1/2} L_B L_A^{+1/2}) on the complement of the constants (tiny graphs only)."""
    LA = np.diag(np.asarray(A.sum(axis=1)).ravel()) - A.toarray()
    LB = np.diag(np.asarray(B.sum(axis=1)).ravel()) - B.toarray()
    lam, V = np.linalg.eigh(LA)
    V = V[:, 1:] / np.sqrt(lam[1:])
    return V.T @ LB @ V


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

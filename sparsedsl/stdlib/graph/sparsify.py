"""Spectral sparsification by effective-resistance sampling (Spielman–Srivastava) and the measures of
a sparsifier's quality (the quadratic-form ratio on random vectors, the pencil's extreme eigenvalues)."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

import sparsedsl as sd

from ._base import _adjacency, _Graph, _incidence_mm, _laplacian_mm, _laplacian_solve, _positive, _pyamg_solve, _rng


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


def spectral_sparsify(G, epsilon=0.3, *, oversampling=None, n_samples=None, certify=False, sampling="independent",
                      keep_tree=True, n_projections=48, tol=1e-4, max_iter=2000, preconditioner="jacobi",
                      random_state=None, log=False):
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

    **Certified.** The theorem's count is a sufficient one; a given graph often needs fewer samples.
    ``certify=True`` searches for the fewest: it measures each candidate's pencil eigenvalues with
    :func:`sparsifier_bounds` and returns the sparsest candidate measured inside
    ``[1 - epsilon, 1 + epsilon]``. Candidates share one uniform draw per edge (edge e is kept at
    rate r when ``u_e < min(1, r w_e R_e)``), so a larger rate keeps a superset; the rate is doubled
    or halved from the starting count until the bound flips, then bisected to within 20%. Each
    candidate costs two Lanczos runs with Laplacian solves (seconds to a minute at n = 20,000); the
    graph must be connected. A graph none of whose edges may be dropped (a grid: every edge carries
    half a unit of leverage, and dropping 0.1% of them puts the smallest eigenvalue near 0.5) comes
    back whole.

    Parameters
    ----------
    G : scipy.sparse matrix, networkx.Graph or SparseTensor (undirected, positive weights).
    epsilon : float in (0, 1): the target relative error.
    oversampling : float > 0, the constant C in the sample count (default 1.5 when n_samples is
        not given).
    n_samples : int > 0, the sample count itself: the expected number of sampled edges beyond the
        tree (independent sampling; at most the number of such edges) or the number of draws (with
        replacement). Give ``oversampling`` or ``n_samples``, not both.
    certify : bool, search for the fewest samples whose measured eigenvalues lie within
        ``1 ± epsilon`` (independent sampling only; ``oversampling`` or ``n_samples`` is where the
        search starts).
    sampling : "independent" or "with_replacement".
    keep_tree : bool, keep a maximum-weight spanning forest exactly.
    n_projections : int, random projections of the resistance estimate (relative error about
        ``sqrt(2 / n_projections)`` per edge, see :func:`jl_relative_error`; an underestimated
        resistance undersamples its edge).
    tol, max_iter : relative residual and iteration cap of the Laplacian solves.
    preconditioner : "jacobi" (sparsedsl block CG) or "pyamg" (algebraic multigrid, needs pyamg).
    random_state : None, int or numpy Generator.

    log : bool, also return what the search measured.

    Returns
    -------
    H : the sparsifier, a weighted graph of the input's kind on the same nodes.
    log : dict, with ``log=True``: ``"rate"`` (the expected samples per unit of leverage used),
        ``"edge_fraction"``, and with ``certify`` ``"bounds"`` (H's measured ``(lo, hi)``) and
        ``"probes"`` (each candidate's rate, edge fraction and bounds, in the order tried).

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
    if certify and sampling != "independent":
        raise ValueError(f"{fn}: certify searches independent sampling's rate; got sampling={sampling!r}")
    g = _Graph(G, fn)
    if certify and g.n > 1 and sp.csgraph.connected_components(g.A)[0] > 1:
        raise ValueError(f"{fn}: certify needs a connected graph (its bounds are relative to G's "
                         f"Laplacian on one component); sparsify each connected component instead")
    rng = _rng(random_state)
    u, v, w, R = effective_resistances(g, n_projections=n_projections, tol=tol, max_iter=max_iter,
                                       preconditioner=preconditioner, random_state=rng)
    if len(u) == 0:
        return (g.like(u, v, w), {"rate": 0.0, "edge_fraction": 1.0}) if log else g.like(u, v, w)
    tree = _spanning_forest(g.n, u, v, w) if keep_tree else np.zeros(len(u), bool)
    score = np.where(tree, 0.0, w * R)
    rate = oversampling * math.log(max(g.n, 2)) / epsilon ** 2  # expected draws per unit of leverage
    info: dict = {}
    if sampling == "independent":
        if n_samples is not None:
            rate = _rate_for(score, n_samples)
        draw = rng.random(len(u))

        def sample(r):  # the kept edges at rate r and their weights
            p = np.minimum(1.0, r * score)
            keep = (draw < p) | tree
            return keep, np.where(tree, w, w / np.where(keep & ~tree, p, 1.0))

        if certify:
            def bounds(r):
                keep, new_w = sample(r)
                return sparsifier_bounds(g.A, _adjacency(g.n, u[keep], v[keep], new_w[keep]), random_state=0), \
                    int(keep.sum())

            positive = score[score > 0]
            rate, info = _certified_rate(bounds, epsilon, rate, 1.0 / positive.min() if len(positive) else rate,
                                         1.0 / positive.sum() if len(positive) else rate)
        keep, new_w = sample(rate)
        H = g.like(u[keep], v[keep], new_w[keep])
    else:
        q = n_samples if n_samples is not None else max(1, int(math.ceil(rate * g.n)))
        if score.sum() > 0:
            p = score / score.sum()
            counts = rng.multinomial(q, p)
        else:
            p, counts = np.ones(len(u)), np.zeros(len(u), np.int64)
        keep = (counts > 0) | tree
        H = g.like(u[keep], v[keep], np.where(tree, w, w * counts / (q * np.where(counts > 0, p, 1.0)))[keep])
    if not log:
        return H
    return H, {"rate": float(rate), "edge_fraction": _Graph(H, fn).A.nnz / max(g.A.nnz, 1), **info}


def _certified_rate(bounds, epsilon, rate, full_rate, min_rate):
    """The smallest sampling rate (within 20%) whose sparsifier's measured bounds lie in 1 ± epsilon:
    double or halve from ``rate`` until the answer flips, then bisect in log scale. ``bounds(r)`` gives
    ``((lo, hi), kept edges)``; at ``full_rate`` every edge is kept with its weight (H = G, bounds
    (1, 1)); below ``min_rate`` less than one edge beyond the tree is expected, and halving stops."""
    probes = []

    def ok(r):
        (lo, hi), kept = ((1.0, 1.0), None) if r >= full_rate else bounds(r)
        probes.append({"rate": float(r), "edges": kept, "bounds": (float(lo), float(hi))})
        return 1 - epsilon <= lo and hi <= 1 + epsilon

    rate = min(rate, full_rate)
    if ok(rate):
        good, bad = rate, rate / 2
        while bad >= min_rate and ok(bad):
            good, bad = bad, bad / 2
    else:
        bad, good = rate, min(2 * rate, full_rate)
        while not ok(good):
            bad, good = good, min(2 * good, full_rate)
    while good / bad > 1.2:
        mid = math.sqrt(good * bad)
        good, bad = (mid, bad) if ok(mid) else (good, mid)
    return good, {"bounds": next(p["bounds"] for p in reversed(probes) if p["rate"] == good), "probes": probes}


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



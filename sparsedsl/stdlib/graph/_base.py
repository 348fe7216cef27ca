"""What the graph functions share: the sparsedsl kernels, the graph in and out as the user holds it
(``_Graph``), argument checks and the Laplacian solves (conjugate gradient on sparsedsl SpMM)."""

from __future__ import annotations

import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp

import sparsedsl as sd

from ..ot import ConvergenceWarning

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
        from ...dask import partition

        return partition(sd.asformat(self.A, "csr"), chunks=self.chunks)

    def edges(self):
        """(u, v, w) of each edge once, u < v."""
        U = sp.triu(self.A, k=1).tocoo()
        return U.row.astype(np.int64), U.col.astype(np.int64), U.data

    def like(self, u, v, w):
        """A graph of the user's kind on the same nodes with edges (u, v, w)."""
        A = _adjacency(self.n, u, v, w)
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


def _adjacency(n, u, v, w):
    """The symmetric csr adjacency of edges (u, v, w) on n nodes."""
    A = sp.coo_matrix((np.concatenate([w, w]), (np.concatenate([u, v]), np.concatenate([v, u]))), shape=(n, n)).tocsr()
    A.sum_duplicates()
    A.sort_indices()
    return A


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



"""sparsedsl.stdlib.ssumm: the summary's size and error against their definitions evaluated densely
(numpy), and the paper's claims on planted-partition graphs (a k-bit summary is more accurate than a
k-bit subset of the edges; supernodes follow the communities)."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl.stdlib.ssumm import ssumm

nx = pytest.importorskip("networkx")


def _planted(groups=8, size=25, p_in=0.85, p_out=0.01, seed=0):
    G = nx.planted_partition_graph(groups, size, p_in, p_out, seed=seed)
    return nx.to_scipy_sparse_array(G, format="csr"), np.repeat(np.arange(groups), size)


@pytest.mark.parametrize("k", [0.4, 0.15])
def test_size_and_error_follow_their_definitions(k):
    A, _ = _planted()
    S = ssumm(A, k, random_state=0)
    n, m = A.shape[0], A.nnz // 2
    assert S.input_bits == pytest.approx(2 * m * math.log2(n))
    n_super = len(S.supernode_sizes)
    w_max = max(S.superedges[:, 2].max(), 2)
    size = len(S.superedges) * (2 * math.log2(n_super) + math.log2(w_max)) + n * math.log2(n_super)
    assert S.size_bits == pytest.approx(size) and S.size_bits <= k * S.input_bits
    assert np.array_equal(np.bincount(S.labels), S.supernode_sizes)
    # Â from its definition, densely: E_AB / Π_AB on the pairs of every kept superedge.
    Ad = A.toarray()
    Ahat = np.zeros(Ad.shape)
    for a, b, e in S.superedges:
        ia, ib = S.labels == a, S.labels == b
        assert e == (Ad[np.ix_(ia, ib)].sum() / (2 if a == b else 1))  # the superedge's weight is its edge count
        pairs = ia.sum() * (ia.sum() - 1) / 2 if a == b else ia.sum() * ib.sum()
        Ahat[np.ix_(ia, ib)] = Ahat[np.ix_(ib, ia)] = e / pairs
    np.fill_diagonal(Ahat, 0)
    np.testing.assert_allclose(S.reconstruct().toarray(), Ahat, atol=1e-12)
    assert S.error(1) == pytest.approx(np.abs(Ad - Ahat).sum())
    assert S.error(2) == pytest.approx(np.sqrt(((Ad - Ahat) ** 2).sum()))


@pytest.mark.parametrize("k", [0.3, 0.1])
def test_summary_beats_an_edge_subset_of_the_same_size(k):
    # At k bits a sparsified graph holds k / (2 log2 n) edges and misses the others (each an error on
    # two ordered pairs); the summary spends the same bits on supernodes and weighted superedges.
    A, _ = _planted(seed=1)
    S = ssumm(A, k, random_state=0)
    n, m = A.shape[0], A.nnz // 2
    edge_subset_error = 2 * (m - math.floor(k * S.input_bits / (2 * math.log2(n))))
    assert S.error(1) < 0.6 * edge_subset_error, (S.error(1), edge_subset_error)


def test_supernodes_follow_planted_communities():
    A, truth = _planted(seed=2)
    S = ssumm(A, 0.1, random_state=0)
    assert len(S.supernode_sizes) <= A.shape[0] // 4
    majority = np.zeros(A.shape[0], bool)
    for s in range(len(S.supernode_sizes)):
        mem = S.labels == s
        majority[mem] = truth[mem] == np.bincount(truth[mem]).argmax()
    assert majority.mean() >= 0.95


def test_inputs_of_every_kind_and_the_l2_sparsification():
    G = nx.planted_partition_graph(4, 15, 0.9, 0.02, seed=3)
    A = nx.to_scipy_sparse_array(G, format="csr")
    kinds = [ssumm(x, 0.3, random_state=4) for x in (G, A, sd.asformat(A, "csr"))]
    for other in kinds[1:]:
        assert np.array_equal(other.labels, kinds[0].labels)
        assert np.array_equal(other.superedges, kinds[0].superedges)
    S2 = ssumm(A, 0.3, norm=2, random_state=4)
    # Under ℓ2 every block with an edge is worth keeping (it lowers the error); under ℓ1 only dense ones.
    assert len(S2.superedges) >= len(kinds[0].superedges)
    assert (S2.density() > 0).all() and (kinds[0].density() > 0.5).all()


@pytest.mark.parametrize("kwargs, match", [
    ({"k_bits": 0}, "k_bits"), ({"k_bits": 1.5}, "k_bits"), ({"n_iter": 0}, "n_iter"), ({"norm": 3}, "norm"),
])
def test_bad_parameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ssumm(nx.path_graph(5), **({"k_bits": 0.5} | kwargs))
    with pytest.raises(ValueError, match="undirected"):
        ssumm(sp.csr_matrix(np.triu(np.ones((4, 4)), 1)))

"""MaskView, PruneExplorer and the notebook reprs, checked against numpy (counts per pixel, blocks, N:M
violations, bytes per format, relative errors) without a browser (tests/test_browser.py drives one)."""

import base64
import io
import re

import numpy as np
import pytest
import scipy.sparse as sp

import sparsedsl as sd
from sparsedsl import display
from sparsedsl.stdlib import attention
from sparsedsl.widgets import MaskView, PruneExplorer  # anywidget, ipywidgets: the dev and notebook extras


def _reference(dense: np.ndarray, view, grid) -> np.ndarray:
    """Nonzeros per pixel, the slow way: each entry of the view goes to bin (i - r0) * h // (r1 - r0)."""
    r0, r1, c0, c1 = view
    h, w = grid
    out = np.zeros(grid)
    rr, cc = np.nonzero(dense[r0:r1, c0:c1])
    np.add.at(out, (rr * h // (r1 - r0), cc * w // (c1 - c0)), 1)
    return out


@pytest.fixture(scope="module")
def matrix():
    A = sd.random((96, 160), 0.08, seed=3)
    return A, A.todense() != 0


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo", "dcsr", "bitmap", "bsr(4,4)", "blocked_bitmap(8,8)"])
def test_density_grid_counts_every_nonzero_once_in_any_format(matrix, fmt):
    A, dense = matrix
    view = MaskView(A.asformat(fmt), size=40)
    assert (view.grid_h, view.grid_w) == (24, 40)
    assert view.canvas_shape == (24, 40)
    np.testing.assert_array_equal(view.density_grid, _reference(dense, (0, 96, 0, 160), (24, 40)))
    assert view.stats["nnz"] == dense.sum() and view.stats["format"] == str(sd.as_format(fmt, 2))


def test_stored_zeros_of_blocked_and_nm_formats_are_not_counted():
    W = np.random.default_rng(0).standard_normal((32, 64))
    N = sd.prune.nm(W, 2, 4)
    view = MaskView(N, size=64)
    np.testing.assert_array_equal(view.density_grid, N.todense() != 0)
    mask = attention.sliding_window(256, 32, block=(32, 32))       # bsr with False inside blocks
    view = MaskView(mask, size=64)
    assert view.density_grid.sum() == np.count_nonzero(mask.todense()) < mask.nnz


@pytest.mark.parametrize("kind", ["scipy_coo", "numpy_bool", "numpy_float", "torch_dense", "torch_sparse"])
def test_other_mask_kinds(matrix, kind):
    A, dense = matrix
    x = {"scipy_coo": lambda: sp.coo_matrix(dense.astype(float)), "numpy_bool": lambda: dense,
         "numpy_float": lambda: dense * np.random.default_rng(1).random(dense.shape)}.get(kind)
    if kind.startswith("torch"):
        torch = pytest.importorskip("torch")
        x = (lambda: torch.tensor(dense)) if kind == "torch_dense" else (lambda: torch.tensor(dense * 1.0).to_sparse())
    view = MaskView(x(), size=80)
    np.testing.assert_array_equal(view.density_grid, _reference(dense, (0, 96, 0, 160), (48, 80)))


def test_zoom_recomputes_the_view_and_validates_it(matrix):
    A, dense = matrix
    view = MaskView(A, size=32)
    view.zoom((10, 50), (20, 140))
    assert view.view == [10, 50, 20, 140] and (view.grid_h, view.grid_w) == (11, 32)
    np.testing.assert_array_equal(view.density_grid, _reference(dense, (10, 50, 20, 140), (11, 32)))
    view.zoom((3, 9), (4, 12))                              # smaller than the canvas: one cell per entry
    np.testing.assert_array_equal(view.density_grid, dense[3:9, 4:12])
    assert view.canvas_shape == (24, 32)
    with pytest.raises(ValueError, match="zoom needs 0 <= r0 < r1 <= 96"):
        view.zoom((50, 10), (0, 5))
    view.reset()
    assert view.view == [0, 96, 0, 160]


def test_attention_masks_4d_and_3d_have_batch_and_head_sliders():
    rng = np.random.default_rng(0)
    m = rng.random((2, 3, 64, 48)) < 0.1
    view = MaskView(m, size=64)
    assert (view.n_batch, view.n_heads) == (2, 3)
    for b, h in [(0, 0), (1, 2), (0, 1)]:
        view.batch, view.head = b, h
        np.testing.assert_array_equal(view.density_grid, m[b, h])
        assert view.stats["nnz"] == m[b, h].sum()
    with pytest.raises(Exception, match=r"head must be in \[0, 3\)"):
        view.head = 3
    heads = attention.sliding_window(128, 16, heads=3)           # a 3-D SparseTensor (heads, L, L)
    view = MaskView(heads, size=128)
    assert (view.n_batch, view.n_heads) == (1, 3)
    view.head = 2
    np.testing.assert_array_equal(view.density_grid, heads.todense()[2] != 0)


def test_block_heat_map_counts_tiles(matrix):
    A, dense = matrix
    view = MaskView(A, size=64, block=16)
    view.mode = "blocks"
    ref = dense.reshape(6, 16, 10, 16).sum(axis=(1, 3))
    got = np.frombuffer(view.blocks_grid, np.float32).reshape(view.blocks_h, view.blocks_w)
    np.testing.assert_array_equal(got, ref)
    assert view.block_stats["nonempty"] == np.count_nonzero(ref)
    assert view.block_stats["fill"] == pytest.approx(dense.sum() / (np.count_nonzero(ref) * 256))
    view.zoom((20, 60), (33, 70))                            # tiles that meet the view, from tile (16, 32)
    assert view.blocks_origin == [16, 32]
    got = np.frombuffer(view.blocks_grid, np.float32).reshape(view.blocks_h, view.blocks_w)
    np.testing.assert_array_equal(got, dense[16:64, 32:80].reshape(3, 16, 3, 16).sum(axis=(1, 3)))
    with pytest.raises(Exception, match="block must be one of"):
        view.block = 5


def test_too_many_tiles_says_what_to_do():
    view = MaskView(sd.random((8192, 8192), 1e-5, seed=0), size=64, block=4)
    view.mode = "blocks"
    assert "zoom in or choose a larger block" in view.message and view.blocks_grid == b""


def test_nm_overlay_flags_the_violating_groups(matrix):
    A, dense = matrix
    view = MaskView(A, size=160, nm=(1, 4), show_nm=True)
    groups = dense.reshape(96, 40, 4).sum(axis=2)
    assert view.nm_stats == {"n": 1, "m": 4, "violating": int((groups > 1).sum()), "groups": int((groups > 0).sum())}
    flagged = np.frombuffer(view.nm_grid, np.uint8).reshape(view.grid_h, view.grid_w)
    expected = np.zeros((96, 160), bool)
    r, g = np.nonzero(groups > 1)
    expected[r, g * 4] = True                                # one point per violating group, at its first column
    np.testing.assert_array_equal(flagged > 0, expected)
    N = sd.prune.nm(np.random.default_rng(0).standard_normal((16, 32)), 2, 4)
    assert MaskView(N, show_nm=True).nm_stats["violating"] == 0
    with pytest.raises(ValueError, match="1 <= N < M"):
        MaskView(A, nm=(4, 4))


def test_stats_bytes_and_histograms(matrix):
    A, dense = matrix
    view = MaskView(A)
    by = view.stats["bytes"]
    A32 = A.astype(np.float32)                               # the stats assume 4-byte values
    for fmt in ("csr", "csc", "coo", "bitmap", "dcsr", "bsr(16,16)"):
        assert by[fmt] == A32.asformat(fmt).nbytes, fmt
    assert by["dense"] == 96 * 160 * 4
    hist = view.nnz_hist
    assert sum(hist["rows"]) == 96 and sum(hist["cols"]) == 160
    assert hist["row_edges"] == [dense.sum(1).min(), dense.sum(1).max()]


@pytest.mark.parametrize("bad, error, text", [
    ("mask", TypeError, "Convert it first"), (np.zeros(7), ValueError, "Reshape it"),
    (np.zeros((2, 2, 2, 2, 2)), ValueError, "Reshape it"), (np.zeros((0, 4)), ValueError, "non-empty"),
    (np.array([["a"]]), TypeError, "numeric or boolean"),
])
def test_bad_masks_raise_clear_errors(bad, error, text):
    with pytest.raises(error, match=text):
        MaskView(bad)


def test_bad_options_raise_clear_errors(matrix):
    A, _ = matrix
    with pytest.raises(ValueError, match=r"size must be an int of pixels in \[16, 4096\]"):
        MaskView(A, size=3)
    with pytest.raises(ValueError, match="block must be one of"):
        MaskView(A, block=7)
    view = MaskView(A)
    with pytest.raises(Exception, match="view must be"):
        view.view = [0, 500, 0, 10]


def test_maskview_16k_grid_is_exact_at_scale():
    # a 16,384^2 mask with 10^5 nonzeros: the grid must be 512 x 512 and hold every nonzero
    A = sd.random((16384, 16384), 1e5 / 16384**2, seed=1)
    view = MaskView(A)
    assert (view.grid_h, view.grid_w) == (512, 512) and view.density_grid.sum() == A.nnz
    coords, _ = A.coordinates()
    np.testing.assert_array_equal(view.density_grid, np.bincount(coords[0] // 32 * 512 + coords[1] // 32,
                                                                 minlength=512 * 512).reshape(512, 512))


# ---- notebook reprs -----------------------------------------------------------------------------------

def _png_of(html: str):
    from PIL import Image

    data = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html).group(1)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


def test_tensor_repr_html_is_a_spy_image_and_a_summary():
    A = sd.random((300, 150), 0.02, seed=0)
    html = A._repr_html_()
    img = _png_of(html)
    assert img.shape == (96, 48, 3)                          # 96 px on the longer side, in proportion
    assert (img < 250).any(axis=2).sum() > 500               # non-blank
    for text in ("300 x 150", "csr", "float64", "900", "0.02"):
        assert text in html
    diag = sd.eye(64, format="coo")._repr_html_()
    img = _png_of(diag)                                      # 64 px scaled up by 1: a diagonal line
    assert img.shape == (64, 64, 3) and ((img < 250).any(axis=2) == np.eye(64, dtype=bool)).all()


def test_kernel_repr_html_shows_signature_and_explain():
    k = sd.compile("y[i] = A[i,j] * x[j]", {"A": "bsr(4,4)", "x": "dense"})
    html = k._repr_html_()
    assert "kernel(A: bsr(4,4), x: dense)" in html and "y[i] = A[i,j] * x[j]" in html
    assert "loop order" in html and "def stmt0" in html


def test_bench_and_advise_html_have_a_roofline_bar():
    A = sd.random((400, 400), 0.01, seed=0)
    k = sd.compile("y[i] = A[i,j] * x[j]", {"A": "csr", "x": "dense"})
    x = np.ones(400)
    r = sd.bench(k, A, x, repeat=3, min_time=0.01)
    html = display.bench_html(r)
    assert "roofline" in html and f"{r.copy_fraction:.0%}" in html
    adv = sd.advise(k, A, x, formats=["csr", "coo"], repeat=3, min_time=0.02)
    html = display.advise_html(adv)
    assert html.count("background:#3a76b0") == 2 and "recommended" in html


def test_png_encoder_round_trips():
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(display.png(rgb)))), rgb)


# ---- PruneExplorer -------------------------------------------------------------------------------------

def test_prune_explorer_prunes_live_and_measures():
    W = np.random.default_rng(0).standard_normal((64, 128))
    e = PruneExplorer(W, sparsity=0.5, repeat=3, min_time=0.02)
    ref = W * (np.abs(W) >= np.quantile(np.abs(W), 0.5))
    assert e.relative_error == pytest.approx(np.linalg.norm(W - ref) / np.linalg.norm(W), rel=1e-6)
    e.sparsity.value = 0.9                                   # what the slider does
    assert e.pruned.nnz == round(0.1 * W.size) and e.view.density_grid.sum() == e.pruned.nnz
    assert f"{e.relative_error:.4f}" in e.error_label.value
    e.pattern.value = "N:M"
    assert str(e.pruned.format) == "nm(2,4)" and e.sparsity.disabled
    assert (e.view.density_grid.reshape(64, 32, 4).sum(axis=2) == 2).all()
    adv = e.measure()
    assert {c.format for c in adv.measured} == {"csr", "coo", "bitmap", "nm(2,4)"}
    assert "recommended" in e.table.value
    e.pattern.value, e.block.value = "block", 8
    assert str(e.pruned.format) == "bsr(8,8)"
    e.pattern.value = "bitmap"
    assert str(e.pruned.format) == "bitmap" and e.pruned.nnz == round(0.1 * W.size)


def test_prune_explorer_bad_input():
    with pytest.raises(ValueError, match="2-D numeric weight matrix"):
        PruneExplorer(np.zeros(5))
    with pytest.raises(ValueError, match="pattern must be one of"):
        PruneExplorer(np.ones((4, 4)), pattern="random")

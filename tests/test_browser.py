"""JupyterLab in headless Chromium: open notebooks/tour.ipynb, run every cell, check that the MaskView drew a
non-blank image of the right size and that dragging its head slider redraws it; screenshots of the widget and
the page are saved under the test's tmp_path.

Needs Debian's chromium (``apt-get install -y --no-install-recommends chromium``) driven by playwright's pip
package (no browser download), jupyterlab, ipywidgets and anywidget (the dev extra). A missing piece fails
the test with the command that installs it: CI must not skip it silently.
"""

import importlib
import re
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CANVAS_PIXELS = """(sel) => {
  const c = document.querySelector(sel);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let nonwhite = 0, hash = 0;
  for (let k = 0; k < d.length; k += 4) {
    if (d[k] < 250 || d[k + 1] < 250 || d[k + 2] < 250) nonwhite++;
    hash = (hash * 31 + d[k] + 7 * d[k + 1] + 13 * d[k + 2]) | 0;
  }
  return {width: c.width, height: c.height, nonwhite, hash, paints: parseInt(c.dataset.paints || '0')};
}"""


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"the browser test needs {module}: pip install \".[dev]\" (jupyterlab, ipywidgets, anywidget, "
                    f"playwright)", pytrace=False)


def test_tour_runs_in_jupyterlab_and_maskview_draws(tmp_path):
    for module in ("jupyterlab", "ipywidgets", "anywidget", "playwright.sync_api"):
        _require(module)
    lab = importlib.import_module("sparsedsl.widgets.lab")
    if lab.chromium() is None:
        pytest.fail(f"the browser test needs Chromium: {lab.INSTALL_CHROMIUM}", pytrace=False)
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "tour.ipynb", root / "tour.ipynb")
    start = time.monotonic()
    with lab.server(root, tmp_path, pythonpath=str(ROOT)) as url, lab.browser() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        lab.open_notebook(page, url, "tour.ipynb")
        lab.run_all(page)
        page.locator(".sdsl-mask-canvas").first.wait_for(state="attached", timeout=45_000)
        page.wait_for_function("() => parseInt(document.querySelector('.sdsl-mask-canvas').dataset.paints"
                               " || '0') >= 1", timeout=20_000, polling=100)
        widget = page.locator(".sdsl-maskview").first
        widget.evaluate("e => e.scrollIntoView({block: 'center'})")  # clear of the notebook's toolbar
        page.wait_for_timeout(300)
        first = page.evaluate(CANVAS_PIXELS, ".sdsl-mask-canvas")
        # the 512 x 512 mask drawn at size=512: one canvas pixel per entry, the head-0 window visible
        assert (first["width"], first["height"]) == (512, 512), first
        assert first["nonwhite"] > 5_000, first
        widget.screenshot(path=str(tmp_path / "maskview.png"))

        # drag the head slider's thumb with the mouse, as a person would: head 0 (window 16) -> head 2 (128)
        slider = page.locator(".sdsl-maskview .sdsl-head").first
        slider.evaluate("e => e.scrollIntoView({block: 'center'})")
        page.wait_for_timeout(200)
        box = slider.bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + 4, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
        page.mouse.move(box["x"] + box["width"] * 2 / 3, y, steps=5)
        page.mouse.up()
        assert slider.input_value() == "2", (box, slider.evaluate("e => [e.min, e.max, e.value]"))
        page.wait_for_function(f"() => document.querySelector('.sdsl-mask-canvas').dataset.paints > "
                               f"{first['paints']}", timeout=20_000, polling=100)
        page.wait_for_timeout(200)
        second = page.evaluate(CANVAS_PIXELS, ".sdsl-mask-canvas")
        assert (second["width"], second["height"]) == (512, 512), second
        assert second["hash"] != first["hash"]
        assert second["nonwhite"] > first["nonwhite"] * 2, (first, second)  # the window is 8x wider
        widget.screenshot(path=str(tmp_path / "maskview-head2.png"))

        # hover reads out the cell under the mouse; dragging a rectangle zooms into it
        canvas = page.locator(".sdsl-mask-canvas").first
        cbox = canvas.bounding_box()
        cell = cbox["width"] / 512                                         # one cell per entry at this size

        def hover(row, col):
            page.mouse.move(cbox["x"] + (col + 0.5) * cell, cbox["y"] + (row + 0.5) * cell)
            text = page.locator(".sdsl-maskview .sdsl-readout").first.inner_text()
            m = re.match(r"rows (\d+)\.\.(\d+), cols (\d+)\.\.(\d+): (\d+) nonzeros", text)
            assert m, text
            return [int(v) for v in m.groups()]

        assert hover(256, 256) == [256, 256, 256, 256, 1]                   # on head 2's diagonal
        assert hover(100, 300) == [100, 100, 300, 300, 0]                   # above it: nothing
        page.mouse.move(cbox["x"] + cbox["width"] * 0.25, cbox["y"] + cbox["height"] * 0.25)
        page.mouse.down()
        page.mouse.move(cbox["x"] + cbox["width"] * 0.5, cbox["y"] + cbox["height"] * 0.5, steps=5)
        page.mouse.up()
        page.wait_for_function(f"() => document.querySelector('.sdsl-mask-canvas').dataset.paints > "
                               f"{second['paints']}", timeout=20_000, polling=100)
        page.wait_for_timeout(200)
        cbox = canvas.bounding_box()
        r0, r1, c0, c1, _ = hover(0, 0)                                    # about rows/cols 128..256 now
        assert r0 == r1 and c0 == c1 and abs(r0 - 128) <= 1 and abs(c0 - 128) <= 1, (r0, c0)
        zoomed = page.evaluate(CANVAS_PIXELS, ".sdsl-mask-canvas")
        assert zoomed["hash"] != second["hash"] and (zoomed["width"], zoomed["height"]) == (512, 512)

        # the N:M overlay paints violating groups red; the block heat map redraws at tile resolution
        red = "() => { const c = document.querySelector('.sdsl-mask-canvas'); " \
              "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0; " \
              "for (let k = 0; k < d.length; k += 4) if (d[k] > 200 && d[k + 1] < 60 && d[k + 2] < 60) n++; return n; }"
        assert page.evaluate(red) == 0
        paints = zoomed["paints"]
        page.locator(".sdsl-maskview .sdsl-nm").first.check()
        page.wait_for_function(f"() => document.querySelector('.sdsl-mask-canvas').dataset.paints > {paints}",
                               timeout=20_000, polling=100)
        # the overlay's groups come from the kernel after the checkbox's own repaint: wait for them (a loaded
        # machine may paint twice first), then count
        page.wait_for_function(f"() => ({red})() > 1000", timeout=30_000, polling=200)
        assert page.evaluate(red) > 1000                                    # a 128-wide window breaks 2:4 often
        assert "non-empty groups violate" in page.locator(".sdsl-maskview .sdsl-stats").first.inner_text()
        paints = page.evaluate(CANVAS_PIXELS, ".sdsl-mask-canvas")["paints"]
        page.locator(".sdsl-maskview .sdsl-mode").first.select_option("blocks")
        page.wait_for_function(f"() => document.querySelector('.sdsl-mask-canvas').dataset.paints > {paints}",
                               timeout=20_000, polling=100)
        page.wait_for_timeout(300)
        assert "fill" in page.locator(".sdsl-maskview .sdsl-stats").first.inner_text()
        blocks = page.evaluate(CANVAS_PIXELS, ".sdsl-mask-canvas")
        assert blocks["nonwhite"] > 0 and blocks["hash"] != zoomed["hash"]
        widget.screenshot(path=str(tmp_path / "maskview-blocks.png"))

        # the rest of the tour ran too, without an error output
        lab.wait_all_ran(page, timeout_ms=40_000)
        errors = page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
        assert errors.count() == 0, errors.first.inner_text()
        # the PruneExplorer at the end drew its own MaskView (an anywidget inside an ipywidgets VBox)
        page.wait_for_function("() => document.querySelectorAll('.sdsl-mask-canvas').length === 2 && "
                               "parseInt(document.querySelectorAll('.sdsl-mask-canvas')[1].dataset.paints || '0') >= 1",
                               timeout=20_000, polling=100)
        assert "relative error" in page.locator(".jp-OutputArea-output").last.inner_text()
        page.screenshot(path=str(tmp_path / "jupyterlab.png"))
    print(f"screenshots in {tmp_path}; {time.monotonic() - start:.1f} s with JupyterLab")
    assert (tmp_path / "maskview.png").stat().st_size > 1000

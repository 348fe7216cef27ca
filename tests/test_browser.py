"""JupyterLab in headless Chromium: open notebooks/tour.ipynb, run every cell, check that the MaskView drew a
non-blank image of the right size and that moving its head slider redraws it; a screenshot of the widget is
saved under the test's tmp_path.

Needs Debian's chromium (``apt-get install -y --no-install-recommends chromium``) driven by playwright's pip
package (no browser download), jupyterlab, ipywidgets and anywidget (the dev extra). A missing piece fails
the test with the command that installs it: CI must not skip it silently.
"""

import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
SETTINGS = {  # what the test's JupyterLab user settings say (ECOSYSTEM.md: the "Select Kernel" dialog pitfall)
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}


def _chromium() -> str:
    for path in (os.environ.get("SPARSEDSL_CHROMIUM"), *CHROMIUM):
        if path and os.path.exists(path):
            return path
    pytest.fail("the browser test needs Debian's chromium: run `apt-get update && apt-get install -y "
                "--no-install-recommends chromium` (or set SPARSEDSL_CHROMIUM to a Chromium binary). Do not run "
                "`playwright install`: playwright drives the system browser", pytrace=False)


def _require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"the browser test needs {module}: pip install \".[dev]\" (jupyterlab, ipywidgets, anywidget, "
                    f"playwright)", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on localhost serving a copy of tour.ipynb, with its own settings and workspaces."""
    for module in ("jupyterlab", "ipywidgets", "anywidget"):
        _require(module)
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "tour.ipynb", root / "tour.ipynb")
    settings = tmp_path / "settings"
    for name, value in SETTINGS.items():
        (settings / Path(name).parent).mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), PYTHONPATH=os.pathsep.join(
                   [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    port = _free_port()
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ip", "127.0.0.1", "--port", str(port),
         "--ServerApp.port_retries=0", "--ServerApp.token=", "--ServerApp.password=",
         "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log.close()
                pytest.fail(f"JupyterLab did not start: {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
            time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


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

NOTEBOOK_READY = """() => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  const s = w && w.sessionContext;
  return !!(w && w.context && w.context.path === 'tour.ipynb' && s && s.session && s.session.kernel
            && s.session.kernel.connectionStatus === 'connected' && s.session.kernel.status === 'idle');
}"""

ALL_CELLS_RAN = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const cells = w.content.widgets.filter(c => c.model.type === 'code');
  return w.sessionContext.session.kernel.status === 'idle' && cells.every(c => c.model.executionCount !== null);
}"""


def test_tour_runs_in_jupyterlab_and_maskview_draws(lab, tmp_path):
    chromium = _chromium()
    sync_api = _require("playwright.sync_api")
    start = time.monotonic()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(f"{lab}/lab/tree/tour.ipynb?reset", timeout=30_000)
            page.wait_for_function(NOTEBOOK_READY, timeout=30_000, polling=200)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

            canvas = page.locator(".sdsl-mask-canvas").first
            canvas.wait_for(state="attached", timeout=45_000)
            page.wait_for_function("() => parseInt(document.querySelector('.sdsl-mask-canvas').dataset.paints"
                                   " || '0') >= 1", timeout=20_000, polling=100)
            widget = page.locator(".sdsl-maskview").first
            widget.evaluate("e => e.scrollIntoView({block: 'center'})")  # clear of the notebook's toolbar
            page.wait_for_timeout(300)
            first = page.evaluate(CANVAS_PIXELS, ".sdsl-mask-canvas")
            # the 512 x 512 mask drawn at size=512: one canvas pixel per entry, and most heads' windows visible
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
            assert slider.input_value() == "2", (box, slider.evaluate("e => [e.min, e.max, e.value, e.outerHTML]"))
            page.wait_for_function(f"() => document.querySelector('.sdsl-mask-canvas').dataset.paints > "
                                   f"{first['paints']}", timeout=20_000, polling=100)
            page.wait_for_timeout(200)
            second = page.evaluate(CANVAS_PIXELS, ".sdsl-mask-canvas")
            assert (second["width"], second["height"]) == (512, 512), second
            assert second["hash"] != first["hash"]
            assert second["nonwhite"] > first["nonwhite"] * 2, (first, second)  # the window is 8x wider
            widget.screenshot(path=str(tmp_path / "maskview-head2.png"))

            # the rest of the tour ran too, without an error output
            page.wait_for_function(ALL_CELLS_RAN, timeout=40_000, polling=250)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], "
                                  ".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
            assert errors.count() == 0, errors.first.inner_text()
            page.screenshot(path=str(tmp_path / "jupyterlab.png"))
        finally:
            browser.close()
    print(f"screenshots in {tmp_path}; {time.monotonic() - start:.1f} s in the browser")
    assert (tmp_path / "maskview.png").stat().st_size > 1000

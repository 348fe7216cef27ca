"""A throwaway JupyterLab for tests and benchmarks: a server on localhost with its own settings, workspaces and
runtime directories, and headless Chromium (the system's, driven by playwright: no browser download) on it.

Settings follow ECOSYSTEM.md's measured recipe: the default kernel starts without the "Select Kernel" dialog
(which blocked Run All in 2 of 6 runs), no news or update checks, no tabs restored from an earlier session.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = ("/usr/lib/chromium/chromium", "/usr/bin/chromium", "/usr/bin/chromium-browser")
INSTALL_CHROMIUM = ("apt-get update && apt-get install -y --no-install-recommends chromium (Debian's chromium; "
                    "or set SPARSEDSL_CHROMIUM to a Chromium binary). Do not run `playwright install`: playwright "
                    "drives the system browser")
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"autoStartDefaultKernel": True},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]

NOTEBOOK_READY = """(path) => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  const s = w && w.sessionContext;
  return !!(w && w.context && w.context.path === path && s && s.session && s.session.kernel
            && s.session.kernel.connectionStatus === 'connected' && s.session.kernel.status === 'idle');
}"""

ALL_CELLS_RAN = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const cells = w.content.widgets.filter(c => c.model.type === 'code');
  return w.sessionContext.session.kernel.status === 'idle' && cells.every(c => c.model.executionCount !== null);
}"""


def chromium() -> str | None:
    """The system Chromium binary, or None."""
    for path in (os.environ.get("SPARSEDSL_CHROMIUM"), *CHROMIUM):
        if path and os.path.exists(path):
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(root: Path, work: Path, *, timeout: float = 60.0, pythonpath: str | None = None):
    """Run JupyterLab on a free localhost port serving ``root``; state goes under ``work``. Yields its URL."""
    settings = work / "settings"
    for name, value in SETTINGS.items():
        (settings / Path(name).parent).mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"),
               JUPYTER_RUNTIME_DIR=str(work / "runtime"))
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                           if p])
    port = _free_port()
    log_path = work / "jupyterlab.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ip", "127.0.0.1", "--port",
             str(port), "--ServerApp.port_retries=0", "--ServerApp.token=", "--ServerApp.password=",
             "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root}",
             "--LabApp.expose_app_in_browser=True"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    urllib.request.urlopen(f"{url}/api/status", timeout=2).read()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"JupyterLab did not start within {timeout:.0f} s: "
                                           f"{log_path.read_text()[-2000:]}") from None
                    time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def browser(executable: str | None = None):
    """Headless Chromium through playwright's sync API; yields the Browser."""
    from playwright.sync_api import sync_playwright

    executable = executable or chromium()
    if executable is None:
        raise RuntimeError(f"no Chromium found: {INSTALL_CHROMIUM}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True, args=BROWSER_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_notebook(page, url: str, path: str, *, timeout_ms: int = 60_000) -> None:
    """Open ``path`` (relative to the server's root) and wait until its kernel is connected and idle."""
    page.goto(f"{url}/lab/tree/{path}?reset", timeout=timeout_ms)
    page.wait_for_function(NOTEBOOK_READY, arg=path, timeout=timeout_ms, polling=200)


def run_all(page) -> None:
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def wait_all_ran(page, *, timeout_ms: int = 60_000) -> None:
    page.wait_for_function(ALL_CELLS_RAN, timeout=timeout_ms, polling=250)

"""Where compiled kernels live on disk: one Python module per kernel, named by the hash of
everything that changes its code, written atomically (temp file, then ``os.replace``)."""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("SPARSEDSL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sparsedsl")
    return _usable(root)


@functools.cache
def _usable(root: str) -> Path:
    """``root``, created if needed, when files can be written there; else a temporary directory for
    this process, with a warning (a read-only home or a mistyped SPARSEDSL_CACHE_DIR should cost
    compile time, not the run)."""
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
        return path
    except OSError as exc:
        tmp = Path(tempfile.mkdtemp(prefix="sparsedsl-cache-"))
        atexit.register(shutil.rmtree, tmp, True)
        warnings.warn(f"sparsedsl cannot write its kernel cache at {root} ({exc.strerror or exc}); compiled "
                      f"kernels go to {tmp} for this process only. Set SPARSEDSL_CACHE_DIR to a writable "
                      f"directory to keep them.", RuntimeWarning, stacklevel=4)
        return tmp


def key(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)

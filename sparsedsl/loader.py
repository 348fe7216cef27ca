"""``sparsedsl.load("kernels.sdsl")``: a ``.sdsl`` file's kernels (and declared formats) as the
attributes of one module object, each kernel checked when the file is loaded."""

from __future__ import annotations

import difflib
import os
import types
from pathlib import Path

from .compiler import Kernel
from .errors import DSLError, Span
from .lang.syntax import parse_source


def load(path) -> types.ModuleType:
    """The kernels of a ``.sdsl`` file, as attributes: ``sd.load("attention.sdsl").softmax(S=S)``.

    Format declarations become attributes too (``Format`` values, usable with ``asformat``). Every
    kernel is parsed and type-checked here, so a bad program raises ``DSLError`` with the file's
    line and column now, not at the first call. A missing or unreadable file raises ``OSError``;
    a file that is not UTF-8 text raises ``DSLError`` at its first bad byte.
    """
    path = os.fspath(path)
    parsed = parse_source(read_source(path), file=path)
    module = types.ModuleType(Path(path).stem, f"sparsedsl kernels from {path}")
    module.__file__ = path
    for name, fmt in parsed["formats"].items():
        setattr(module, name, fmt)
    for name, program in parsed["kernels"].items():
        setattr(module, name, Kernel(program))  # checks the kernel: a located DSLError if it is wrong
    names = [*parsed["formats"], *parsed["kernels"]]

    def __getattr__(name):  # noqa: N807 - a module's own attribute hook (PEP 562)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise AttributeError(f"{path} defines no kernel or format {name!r}{hint} It defines "
                             f"{', '.join(names) or 'nothing'}")

    module.__getattr__ = __getattr__
    return module


def read_source(path) -> str:
    """The text of a ``.sdsl`` file. ``OSError`` when it cannot be read (missing, a directory, no
    permission); ``DSLError`` at the first byte that is not text (not UTF-8, or a NUL byte)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    bad = data.find(b"\0")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.start if bad < 0 else min(bad, exc.start)
    if bad < 0:
        return data.decode("utf-8")
    before = data[:bad]
    line, start = before.count(b"\n") + 1, before.rfind(b"\n") + 1
    text = data[start:data.find(b"\n", bad) if b"\n" in data[bad:] else len(data)]
    shown = text.decode("utf-8", "replace").replace("\0", "\ufffd")
    col = len(data[start:bad].decode("utf-8", "replace")) + 1
    what = "a NUL byte" if data[bad] == 0 else "not UTF-8 text"
    raise DSLError(f"{path} is not a text file: byte {bad} (0x{data[bad]:02x}) is {what}",
                   Span(path, line, col, shown if shown.isprintable() else ""))

"""The numba CPU backend: render loop IR as Python source, compile it with numba.

The source is written to the disk cache as a module and imported, so numba's own on-disk cache
(``cache=True``) keeps the machine code next to it and a fresh process skips compilation.
Kernels do no bounds checks: every tensor was validated when it was built (DESIGN.md), unless
``sparsedsl.config(check="bounds")`` asks for them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import sys

import numba
import numpy as np
from numba.core.caching import FunctionCache, IndexDataCacheFile
from numba.core.runtime import rtsys

from ... import settings
from ...lang import loopir as L
from .. import cache
from .render import PREAMBLE, VERSION, _walk, render

_loaded: dict[str, object] = {}

# Below this much work (stored entries + output size) a parallel loop costs more to start than it
# saves: numba's thread pool wakes in tens of microseconds.
PARALLEL_THRESHOLD = 200_000


class Compiled:
    """A kernel compiled serially, and (on the first large call) in parallel where the IR allows."""

    def __init__(self, fn: L.Function):
        self.fn = fn
        # bounds-checked kernels run serially: numba turns an IndexError raised in a parallel loop
        # into a SystemError (numba 0.68)
        self.parallel_ok = any(isinstance(s, L.For) and s.parallel for s in _walk(fn.body)) and \
            not settings.bounds_checked()
        self.source = render(fn, self.parallel_ok)
        self.serial = _load(render(fn, False), fn.name)
        self._parallel = None

    def __call__(self, *args, work: int = 0):
        if numba.config.DISABLE_JIT:  # Python engine: Python numbers typed as numba types them (int64,
            # float64), so numpy's promotion matches (an int32 coordinate times a Python-int extent
            # stayed int32, and a bitset's 1 << 35 was lost)
            args = tuple(np.int64(a) if type(a) is int else np.float64(a) if type(a) is float else a
                         for a in args)
        if self.parallel_ok and work >= PARALLEL_THRESHOLD:
            if self._parallel is None:
                self._parallel = _load(self.source, self.fn.name)
            return self._parallel(*args, numba.get_num_threads())
        return self.serial(*args)


def build(fn: L.Function) -> tuple[Compiled, str]:
    """Compile one function; returns (callable, its source). Cached in memory and on disk."""
    compiled = Compiled(fn)
    return compiled, compiled.source


def _load(body: str, name: str):
    source = PREAMBLE + "\n\n" + body
    k = cache.key(source, VERSION)
    if k in _loaded:
        return _loaded[k]
    path = cache.cache_dir() / f"k_{k}.py"
    if not path.exists() or path.read_text() != source:
        cache.write_atomic(path, source)
    spec = importlib.util.spec_from_file_location(f"sparsedsl_kernel_{k}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # numba's cache re-imports the module by name when loading
    spec.loader.exec_module(module)
    func = getattr(module, name)
    if hasattr(func, "py_func"):  # (with NUMBA_DISABLE_JIT it is the Python function itself)
        func._cache = _MachineCodeCache(func.py_func)
    _loaded[k] = func
    return func


class _MachineCodeCache(FunctionCache):
    """numba's on-disk cache, with two changes.

    - No registry refresh before loading. numba's ``load_overload`` first refreshes the target
      context, importing every numba implementation module (``numba.np.arraymath`` checks BLAS by
      importing ``scipy.linalg``): about 0.5 s of a fresh process's first kernel call. Cached
      machine code calls only the runtime (NRT), which is started here. Compiling a kernel that is
      not cached still refreshes everything, in numba's compiler.
    - Entries are checksummed (``_CheckedCacheFile``); one that is truncated, corrupt or unreadable
      is treated as missing, so the kernel is recompiled and the entry rewritten."""

    def __init__(self, py_func):
        super().__init__(py_func)
        self._cache_file = _CheckedCacheFile(self._cache_path, self._impl.filename_base,
                                             self._impl.locator.get_source_stamp())

    def load_overload(self, sig, target_context):
        rtsys.initialize(target_context)
        try:
            return self._load_overload(sig, target_context)
        except Exception:  # an entry from a crashed writer or another build: compile afresh
            return None


class _CheckedCacheFile(IndexDataCacheFile):
    """numba's index and data files, each payload preceded by its SHA-256."""

    def _load_index(self):
        try:
            with open(self._index_path, "rb") as f:
                version, data = f.readline(), _verified(f.read())
            if version != f"{self._version}\n".encode() or data is None:
                return {}  # another numba, another layout, or damaged: rewritten on the next save
            stamp, overloads = pickle.loads(data)
        except FileNotFoundError:
            return {}
        return overloads if stamp == self._source_stamp else {}

    def _save_index(self, overloads):
        data = self._dump((self._source_stamp, overloads))
        with self._open_for_write(self._index_path) as f:
            f.write(f"{self._version}\n".encode() + hashlib.sha256(data).digest() + data)

    def _load_data(self, name):
        with open(self._data_path(name), "rb") as f:
            data = _verified(f.read())
        if data is None:
            raise OSError(f"corrupt cache entry {name}")  # numba's load() reads OSError as a miss
        return pickle.loads(data)

    def _save_data(self, name, data):
        data = self._dump(data)
        with self._open_for_write(self._data_path(name)) as f:
            f.write(hashlib.sha256(data).digest() + data)


def _verified(blob: bytes) -> bytes | None:
    """The payload of ``digest + payload``, or None when the digest does not match."""
    digest, data = blob[:32], blob[32:]
    return data if len(digest) == 32 and hashlib.sha256(data).digest() == digest else None

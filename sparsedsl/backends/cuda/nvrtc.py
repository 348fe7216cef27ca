"""Compiling CUDA C with NVRTC through cupy: sources kept in the sparsedsl cache, binaries in cupy's,
and the dynamic shared memory a kernel may use.
"""

from __future__ import annotations

import sys

from .. import cache
from .device import cupy

_modules: dict = {}


class WithSharedMemory:
    """A kernel and its dynamic shared memory, called like the kernel: ``(grid, block, args)``."""

    def __init__(self, fn, nbytes: int):
        self.fn, self.nbytes = fn, nbytes

    @property
    def attributes(self):
        return self.fn.attributes

    def __call__(self, grid, block, args):
        return self.fn(grid, block, args, shared_mem=self.nbytes)


_opted_in: dict = {}  # id(kernel) -> (kernel, the dynamic shared memory it may use)


def dynamic_shared(fn, nbytes: int):
    """``fn`` allowed ``nbytes`` of dynamic shared memory: a kernel whose static and dynamic shared
    memory pass 48 KiB in all must opt in (once per kernel and size)."""
    got = _opted_in.get(id(fn))
    if got is None or got[1] < nbytes:
        if nbytes + fn.attributes["shared_size_bytes"] > 48 << 10:
            try:  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
                cupy().cuda.driver.funcSetAttribute(fn.ptr, 8, nbytes)
            except AttributeError:
                fn.max_dynamic_shared_size_bytes = nbytes
        _opted_in[id(fn)] = (fn, nbytes)
    return fn


def version() -> str:
    cp = cupy()
    try:
        nvrtc = cp.cuda.nvrtc.getVersion()
    except Exception:
        nvrtc = "?"
    return f"cupy-{cp.__version__}-nvrtc-{nvrtc}-py{sys.version_info[0]}.{sys.version_info[1]}"


def compile_kernel(source: str, name: str):
    """NVRTC through cupy; the source is kept in the sparsedsl cache, the binary in cupy's."""
    cp = cupy()
    k = cache.key(source, version())
    if k not in _modules:
        path = cache.cache_dir() / f"k_{k}.cu"
        if not path.exists():
            cache.write_atomic(path, source)
        _modules[k] = cp.RawModule(code=source, options=("-std=c++17",))
    return _modules[k].get_function(name)


# ---- the entry point ---------------------------------------------------------------------------

"""Process-wide options: ``sparsedsl.config(check="bounds")``, or the environment variable
``SPARSEDSL_CHECK=bounds`` read at import."""

from __future__ import annotations

import os
import warnings
import weakref

CHECKS = ("none", "bounds")

_options = {"check": "none"}
kernels: weakref.WeakSet = weakref.WeakSet()  # every Kernel, so that a change of options replans them


def config(*, check: str | None = None) -> dict:
    """Set process-wide options; returns the previous ones (``config(**old)`` restores them).

    Parameters
    ----------
    check : {"none", "bounds"}
        ``"bounds"`` compiles CPU kernels with bounds checks (numba's ``boundscheck``): an index
        outside an array raises ``IndexError`` instead of reading or writing out of bounds. Use it
        when the arrays a tensor shares with scipy or numpy may change after conversion (README,
        "Formats"); kernels run slower, and serially. ``"none"`` (the default): no checks, as every tensor was
        validated when it was built. Kernels compiled either way are cached separately.

    >>> import sparsedsl as sd
    >>> old = sd.config(check="bounds")
    >>> _ = sd.config(**old)
    """
    old = dict(_options)
    if check is not None:
        if check not in CHECKS:
            raise ValueError(f"check must be one of {', '.join(map(repr, CHECKS))}, got {check!r}")
        if check != _options["check"]:
            _options["check"] = check
            for k in list(kernels):
                k._plans.clear()  # compiled for the other mode: rebuilt (from the cache) at the next call
    return old


def bounds_checked() -> bool:
    return _options["check"] == "bounds"


_env = os.environ.get("SPARSEDSL_CHECK", "").strip().lower()
if _env in CHECKS:
    _options["check"] = _env
elif _env:
    warnings.warn(f"SPARSEDSL_CHECK={_env!r} is not one of {', '.join(CHECKS)}; kernels run without checks",
                  RuntimeWarning, stacklevel=2)

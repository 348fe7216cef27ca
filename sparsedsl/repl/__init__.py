"""The ``sparsedsl`` REPL and script runner: ``repl()`` (the interactive prompt), ``run_script(path)``
(``sparsedsl run FILE.sdsl``), ``Session`` (the state and statements both run on) and the pygments
lexer ``SparseDSLLexer``."""

from .lexer import SparseDSLLexer
from .session import Session

__all__ = ["Session", "SparseDSLLexer", "repl", "run_script"]


def repl(*args, **kwargs) -> int:
    from .app import repl as run

    return run(*args, **kwargs)


def run_script(path, out=print) -> int:
    from .app import run_script as run

    return run(path, out)

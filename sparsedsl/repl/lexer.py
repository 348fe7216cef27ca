"""A pygments lexer for the sparsedsl language and its REPL commands (``.sdsl`` files).

Used by the REPL for highlighting; Sphinx and Jupyter can use it too, by the alias ``sparsedsl``
once registered as a pygments entry point, or directly::

    from pygments import highlight
    from pygments.formatters import TerminalFormatter
    from sparsedsl.repl.lexer import SparseDSLLexer
    print(highlight(open("spmv.sdsl").read(), SparseDSLLexer(), TerminalFormatter()))
"""

from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

KEYWORDS = ("format", "kernel", "let")
LEVEL_TYPES = ("dense", "compressed", "singleton", "bitmap", "nonunique", "nm")
FORMAT_NAMES = ("dense", "csr", "csc", "dcsr", "coo", "csf", "bitmap", "nm", "bsr", "blocked_bitmap", "sparse",
                "scalar")
FUNCTIONS = ("exp", "log", "abs", "sqrt", "relu", "sign", "sin", "cos", "tanh", "sigmoid", "pow", "min", "max",
             "where", "mask")
REDUCERS = ("sum", "max", "min", "any", "all", "plus_times", "min_plus", "max_plus", "max_times", "min_times",
            "or_and")
CONSTANTS = ("true", "false")
# script statements (``let`` is a keyword already) and REPL commands (``:`` then a word)
STATEMENTS = ("run", "print")
COMMANDS = ("let", "run", "print", "show", "bench", "advise", "spy", "save", "load", "formats", "who", "help",
            "quit", "exit")
CONSTRUCTORS = ("random", "ones", "zeros", "eye", "range", "prune", "load", "as", "density", "seed", "dtype")


class SparseDSLLexer(RegexLexer):
    """sparsedsl: format declarations, kernels in index notation, and the REPL's ``:commands``."""

    name = "sparsedsl"
    aliases = ["sparsedsl", "sdsl"]
    filenames = ["*.sdsl"]
    mimetypes = ["text/x-sparsedsl"]

    tokens = {
        "root": [
            (r"[ \t\f\r]+", Whitespace),
            (r"\n", Whitespace),
            (r"#.*?$", Comment.Single),
            (r"(:)(" + "|".join(COMMANDS) + r")\b", bygroups(Punctuation, Keyword.Pseudo)),
            (r"--[A-Za-z][\w-]*", Name.Attribute),
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (r"^(\s*)(" + "|".join(STATEMENTS) + r")\b", bygroups(Whitespace, Keyword.Pseudo)),
            (words(CONSTANTS, suffix=r"\b"), Keyword.Constant),
            (r"(" + "|".join(REDUCERS) + r")(\s*)(\[)", bygroups(Name.Builtin, Whitespace, Punctuation)),
            (words(FUNCTIONS, suffix=r"(?=\s*\()"), Name.Function.Magic),
            (r"(:|->)(\s*)(" + "|".join(FORMAT_NAMES + LEVEL_TYPES) + r")\b",
             bygroups(Punctuation, Whitespace, Name.Class)),
            (r"(?<=\s)(" + "|".join(FORMAT_NAMES) + r")\b(?=\s+\d|\s*\()", Name.Class),
            (words(CONSTRUCTORS, suffix=r"\b"), Name.Builtin.Pseudo),
            (r"\d+x\d+(x\d+)*\b", Number.Integer),
            (r"(\d+\.\d*|\.\d+)([eE][-+]?\d+)?|\d+[eE][-+]?\d+", Number.Float),
            (r"\d+", Number.Integer),
            (r"\"[^\"\n]*\"|'[^'\n]*'", String),
            (r"->|<=|>=|==|!=|[-+*/%<>=]", Operator),
            (r"[\[\](){},;:.]", Punctuation),
            (r"[A-Za-z_]\w*", Name),
            (r".", Text),
        ],
    }

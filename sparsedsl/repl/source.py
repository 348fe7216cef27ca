"""Reading sparsedsl source the way the REPL and ``sparsedsl run`` see it: declarations (``format``,
``kernel``) apart from statements (``let``, ``run``, ``print`` and the ``:commands``), line numbers
kept; whether a REPL input is complete; and the tokens of one statement, each with its column."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import DSLError, Span

DECLARATION_WORDS = ("format", "kernel")
_OPEN, _CLOSE = "([{", ")]}"


def strip_comment(line: str) -> str:
    """The line without its ``#`` comment (the language has no strings that could hold a '#';
    a statement's quoted path may, so a '#' inside quotes is kept)."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return line[:k]
    return line


def first_word(line: str) -> str:
    m = re.match(r"\s*:?([A-Za-z_]\w*)", strip_comment(line))
    return m.group(1) if m else ""


def split_source(text: str) -> tuple[str, list[tuple[int, str]]]:
    """(declaration text, statements): the declarations keep their lines, every other line blank in
    it, so a parse error's line is the file's line; statements are (1-based line, text)."""
    lines = text.split("\n")
    decl = [""] * len(lines)
    statements = []
    k = 0
    while k < len(lines):
        line = lines[k]
        code = strip_comment(line).strip()
        if not code:
            k += 1
            continue
        if first_word(line) in DECLARATION_WORDS and not code.startswith(":"):
            end = block_end(lines, k) if first_word(line) == "kernel" else k
            decl[k:end + 1] = lines[k:end + 1]
            k = end + 1
            continue
        statements.append((k + 1, line))
        k += 1
    return "\n".join(decl), statements


def block_end(lines: list[str], start: int) -> int:
    """The index of the line that closes the body of the kernel starting at ``lines[start]`` (the last
    line when it is never closed: the parser then says what is missing)."""
    depth, opened = 0, False
    for k in range(start, len(lines)):
        body = strip_comment(lines[k])
        depth += body.count("{") - body.count("}")
        opened = opened or "{" in body
        if opened and depth <= 0:
            return k
    return len(lines) - 1


def is_complete(text: str) -> bool:
    """Whether a REPL input is ready to run: brackets closed, a kernel header followed by its body,
    no line ending in an operator or a backslash. Unbalanced closing brackets count as complete (the
    parser then says where the problem is)."""
    code = "\n".join(strip_comment(ln) for ln in text.split("\n"))
    depth = 0
    for ch in code:
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
    if depth > 0:
        return False
    if depth < 0:
        return True
    lines = [ln for ln in code.split("\n") if ln.strip()]
    if not lines:
        return True
    last = lines[-1].rstrip()
    if last.endswith(("\\", "=", "->", ",", "+", "-", "*", "/")) and not last.lstrip().startswith(":"):
        return False
    kernels = [k for k, ln in enumerate(lines) if first_word(ln) == "kernel" and not ln.lstrip().startswith(":")]
    return not kernels or "{" in "\n".join(lines[kernels[-1]:])


# ---- the tokens of one statement ------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<opt>--[A-Za-z][\w-]*)
  | (?P<str>"[^"\n]*"|'[^'\n]*')
  | (?P<shape>\d+(?:x\d+)+(?![\w.]))
  | (?P<num>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.]))
  | (?P<name>[A-Za-z_]\w*)
  | (?P<punct>[(),=:;\[\]])
  | (?P<other>[^\s(),=;:\[\]]+)
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str   # opt str shape num name punct other end
    text: str
    col: int    # 1-based column in the line


class Statement:
    """A cursor over one statement's tokens; ``error`` makes a DSLError with a caret under a token."""

    def __init__(self, text: str, file: str, line: int):
        self.text, self.file, self.line = text, file, line
        code = strip_comment(text).rstrip()
        self.tokens = [Token(m.lastgroup, m.group(), m.start() + 1) for m in _TOKEN.finditer(code)
                       if m.lastgroup != "ws"]
        self.tokens.append(Token("end", "", len(code) + 1))
        self.pos = 0

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.peek()
        self.pos = min(self.pos + 1, len(self.tokens) - 1)
        return tok

    def accept(self, text: str) -> Token | None:
        if self.peek().text == text and self.peek().kind in ("punct", "name", "opt"):
            return self.next()
        return None

    def expect(self, text: str, what: str | None = None) -> Token:
        tok = self.accept(text)
        if tok is None:
            raise self.error(f"expected {what or repr(text)}, got {self.describe(self.peek())}", self.peek())
        return tok

    def expect_kind(self, kind: str, what: str) -> Token:
        if self.peek().kind != kind:
            raise self.error(f"expected {what}, got {self.describe(self.peek())}", self.peek())
        return self.next()

    def at_end(self) -> bool:
        return self.peek().kind == "end"

    def finish(self):
        if not self.at_end():
            raise self.error(f"unexpected {self.describe(self.peek())} at the end of the statement", self.peek())

    def rest(self) -> tuple[str, int]:
        """The raw text from the current token to the end (a path), and its column; consumes it."""
        tok = self.peek()
        code = strip_comment(self.text).rstrip()
        self.pos = len(self.tokens) - 1
        return code[tok.col - 1:].strip(), tok.col

    def error(self, message: str, tok: Token | None = None, length: int | None = None) -> DSLError:
        tok = tok or self.peek()
        n = length or max(1, len(tok.text))
        return DSLError(message, Span(self.file, self.line, tok.col, self.text, n))

    @staticmethod
    def describe(tok: Token) -> str:
        return "the end of the line" if tok.kind == "end" else repr(tok.text)

"""The two errors a user sees: a bad tensor (`FormatError`) and a bad program (`DSLError`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """Where a piece of a program came from: file, 1-based line and column, and that line's text."""

    file: str
    line: int
    col: int
    text: str = ""
    length: int = 1

    def render(self) -> str:
        head = f"{self.file}:{self.line}:{self.col}"
        if not self.text:
            return head
        caret = " " * (self.col - 1) + "^" * max(1, min(self.length, len(self.text) - self.col + 1))
        return f"{head}\n    {self.text}\n    {caret}"


class FormatError(ValueError):
    """A tensor's storage does not match its format (names the level and the first bad position)."""


class DSLError(Exception):
    """A program is malformed or does not fit its operands; the message points at the source."""

    def __init__(self, message: str, span: Span | None = None):
        self.message = message
        self.span = span
        super().__init__(f"{message}\n  at {span.render()}" if span else message)

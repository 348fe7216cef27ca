"""A sparsedsl session: the formats, kernels and tensors defined so far, and how source runs on them.
The REPL and ``sparsedsl run FILE.sdsl`` both run source through ``Session.run``: declarations are
parsed and checked first (formats declared earlier stay visible, error lines stay the input's), then
each statement runs (``commands.py``); a line of index notation is computed over the session's tensors.
"""

from __future__ import annotations

import difflib
import os
import time

import numpy as np

import sparsedsl as sd

from ..errors import DSLError, FormatError, Span
from . import display
from .commands import COMMANDS, DTYPES, NAMED_FORMATS, RESERVED, Call, Commands, is_tensor, split_list
from .source import Statement, Token, block_end, first_word, split_source, strip_comment


def parse_declarations(text: str, file: str) -> dict:
    # The one place the REPL reads below the public API: sd.load takes a path, and a REPL input has
    # none. (A public ``sd.loads(text, file=...)`` would replace this import.)
    from ..loader import parse_source

    return parse_source(text, file=file)


class Session(Commands):
    """State and statements; ``out`` receives every line printed."""

    def __init__(self, out=print, base_dir: str | None = None):
        self.out = out
        self.base_dir = base_dir or os.getcwd()
        self.formats: dict = {}   # name -> Format
        self.kernels: dict = {}   # name -> Kernel
        self.tensors: dict = {}   # name -> SparseTensor, numpy array or number
        self.sources: dict = {}   # name -> the declaration's text (for :save)
        self.lets: list = []      # (name, statement text) of each successful let, in order (for :save)
        self.offsets: dict = {}   # file -> lines of session formats put before it when it was parsed
        self.last_call: dict = {}  # kernel name -> Call (for :show KERNEL without operands)
        self.seen: set = set()     # (kernel, operand signature) already run: a first call compiles

    # ---- running source ---------------------------------------------------------------------------
    def run(self, text: str, file: str, base_dir: str | None = None) -> list[str]:
        """Define the declarations of ``text``, then run its statements in order. Returns the names
        declared. Raises DSLError (located), FormatError, OSError, ValueError, or Quit."""
        decl, statements = split_source(text)
        declared = self.declare(decl, file) if decl.strip() else []
        base = base_dir or self.base_dir
        for line, stmt in statements:
            self.statement(Statement(stmt, file, line), base)
        return declared

    def declare(self, text: str, file: str) -> list[str]:
        """Parse and check declarations. Formats declared earlier in the session are visible: they are
        put before the text (and error lines moved back by as many lines)."""
        redeclared = {ln.split()[1] for ln in text.split("\n") if first_word(ln) == "format" and len(ln.split()) > 1}
        prefix = [f"format {name} = {fmt.spelling()}" for name, fmt in self.formats.items() if name not in redeclared]
        parsed = parse_declarations("\n".join(prefix + [text]), file) if prefix else parse_declarations(text, file)
        self.offsets[file] = len(prefix)
        names = []
        for name, fmt in parsed["formats"].items():
            if name in prefix_names(prefix):
                continue
            where = next((Span(file, k + 1 + len(prefix), ln.index(name) + 1, ln, len(name))
                          for k, ln in enumerate(text.split("\n"))
                          if ln.split()[:2] == ["format", name]), None)
            self._bind_name(name, "format", where)
            self.formats[name] = fmt
            names.append(name)
            self.sources[name] = f"format {name} = {fmt.spelling()}"
        lines = text.split("\n")
        for name, program in parsed["kernels"].items():
            kernel = sd.Kernel(program)  # checks it: a located DSLError now, not at the first call
            self._bind_name(name, "kernel", program.span)
            self.kernels[name] = kernel
            names.append(name)
            start = program.span.line - len(prefix) - 1
            self.sources[name] = "\n".join(lines[start:block_end(lines, start) + 1])
        return names

    def _bind_name(self, name: str, kind: str, where: Span | None):
        for other, table in (("format", self.formats), ("kernel", self.kernels), ("tensor", self.tensors)):
            if other != kind and name in table:
                raise DSLError(f"'{name}' is already a {other} in this session; give the {kind} another name",
                               where)

    def relocate(self, exc: DSLError) -> DSLError:
        """The error with its line as the user wrote it (session formats were put before the input)."""
        span = exc.span
        shift = self.offsets.get(span.file, 0) if span else 0
        if not shift or span.line <= shift:
            return exc
        return DSLError(exc.message, Span(span.file, span.line - shift, span.col, span.text, span.length))

    # ---- statements ------------------------------------------------------------------------------
    def statement(self, st: Statement, base: str):
        st.accept(":")
        tok = st.peek()
        if tok.kind != "name":
            raise st.error(f"expected a statement (let, run, print, :help for the list), got {st.describe(tok)}")
        word = tok.text
        handler = getattr(self, f"cmd_{word}", None)
        if handler is not None and word not in self.kernels and word not in self.tensors:
            st.next()
            return handler(st, base)
        if st.peek(1).text == "(":  # a bare call runs it
            return self.cmd_run(st, base)
        if st.peek(1).kind == "end" and (word in self.tensors or word in self.kernels or word in self.formats):
            return self.cmd_print(st, base)
        if st.peek(1).text == "[":  # index notation on the session's tensors: y[i] = A[i,j] * x[j]
            return self.compute(st)
        if st.peek(1).text == "=":
            raise st.error(f"a tensor is defined with :let {word} = ..., or computed with index notation: "
                           f"{word}[i] = ...", tok)
        close = difflib.get_close_matches(word, [*COMMANDS, *self.names()], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise st.error(f"unknown statement or name {word!r}{hint} (:help lists the statements)", tok)

    def compute(self, st: Statement):
        """``y[i] = A[i,j] * x[j] [--out csr]``: one statement of index notation over the session's
        tensors (``sd.compute``); the result is stored under the target's name."""
        code = st.text[st.peek().col - 1:]
        expr, _, out = code.partition("--out")
        target = st.peek()
        if target.text in self.kernels or target.text in self.formats or target.text in RESERVED:
            raise st.error(f"'{target.text}' names a kernel, a format or a statement; pick another name", target)
        out_tok = Token("name", out.strip(), st.peek().col + len(expr) + len("--out") + 1)
        out_format = self.resolve_format(out.strip(), None, st, out_tok) if out.strip() else None
        shift = target.col - 1
        try:
            kernel = sd.compile(strip_comment(expr).strip(), out_format=out_format, name=target.text)
        except DSLError as exc:
            raise self._moved(exc, st, shift) from None
        operands = {}
        for p in kernel.program.params:
            if p.name not in self.tensors:
                close = difflib.get_close_matches(p.name, list(self.tensors), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise self._moved(DSLError(f"unknown tensor {p.name!r}{hint}", p.span), st, shift)
            operands[p.name] = self.tensors[p.name]
        try:
            value = kernel(operands)
        except DSLError as exc:
            raise self._moved(exc, st, shift) from None
        self.tensors[target.text] = value
        self.out(f"{target.text} = {display.describe(value, self.format_names())}")

    @staticmethod
    def _moved(exc: DSLError, st: Statement, shift: int) -> DSLError:
        """An error located in an expression that starts at column ``shift + 1`` of the statement."""
        span = exc.span
        if span is None or span.line != 1:
            return DSLError(exc.message, Span(st.file, st.line, shift + 1, st.text))
        return DSLError(exc.message, Span(st.file, st.line, span.col + shift, st.text, span.length))

    def format_names(self) -> dict:
        """Format -> the name this session declared it by (so a tensor in it is described by that name)."""
        return {fmt: name for name, fmt in self.formats.items()}

    def names(self) -> list[str]:
        return [*self.formats, *self.kernels, *self.tensors]

    def format_text(self, st: Statement) -> str:
        tok = st.expect_kind("name", "a format (csr, csc, coo, dense, nm(2,4), bsr(4,4), ...)")
        text = tok.text
        if st.peek().text == "(":
            st.next()
            args = []
            while not st.accept(")"):
                a = st.next()
                if a.kind == "end":
                    raise st.error(f"unclosed '(' in the format {text}(", tok)
                if a.text != ",":
                    args.append(a.text)
            text += "(" + ",".join(args) + ")"
        return text

    def resolve_format(self, text: str, ndim: int, st: Statement, tok):
        if text in self.formats:
            return self.formats[text]
        try:
            return sd.as_format(text, ndim)
        except FormatError as exc:
            close = difflib.get_close_matches(text.split("(")[0], [*NAMED_FORMATS, *self.formats], n=1)
            hint = f"; did you mean {close[0]!r}?" if close and close[0] != text else ""
            raise st.error(f"{str(exc).splitlines()[0]}{hint}", tok, len(text)) from None

    def format_spec(self, st: Statement, ndim: int):
        tok = st.peek()
        return self.resolve_format(self.format_text(st), ndim, st, tok)

    def shape(self, st: Statement) -> tuple:
        tok = st.next()
        if tok.kind == "shape":
            return tuple(int(s) for s in tok.text.split("x"))
        if tok.kind == "num" and tok.text.isdigit():
            return (int(tok.text),)
        raise st.error(f"expected a shape such as 1000x1000 or 1000, got {st.describe(tok)}", tok)

    def options(self, st: Statement, allowed: dict) -> dict:
        opts = {}
        while st.peek().kind in ("name", "opt"):
            tok = st.next()
            key = tok.text.lstrip("-")
            if key not in allowed:
                raise st.error(f"unknown option {tok.text!r}; this statement takes "
                               f"{', '.join(allowed)}", tok)
            val = st.next()
            if val.kind == "end":
                raise st.error(f"{key} needs a value", val)
            if allowed[key] is list:  # a comma-separated list: csr,coo,bsr(2,2)
                text = val.text
                while st.peek().kind not in ("opt", "end"):
                    text += st.next().text
                opts[key] = split_list(text)
                continue
            try:
                opts[key] = allowed[key](val.text)
            except ValueError:
                raise st.error(f"{key} must be {allowed[key].__name__}, got {val.text!r}", val) from None
            if key == "backend" and val.text not in ("cpu", "cuda"):
                raise st.error(f"the backend is cpu or cuda, got {val.text!r}", val)
        st.finish()
        return opts

    def dtype(self, text: str, st: Statement):
        if text not in DTYPES:
            raise st.error(f"dtype must be one of {', '.join(DTYPES)}, got {text!r}")
        return np.dtype(text)

    def int_of(self, tok, st: Statement) -> int:
        if not tok.text.isdigit():
            raise st.error(f"expected a non-negative integer, got {tok.text!r}", tok)
        return int(tok.text)

    def call(self, st: Statement) -> Call:
        """KERNEL(arg, ..., name=arg): args are tensor names or numbers (scalars)."""
        start = st.peek()
        name_tok = st.expect_kind("name", "a kernel call such as spmv(A, x)")
        kernel = self.kernels.get(name_tok.text)
        if kernel is None:
            close = difflib.get_close_matches(name_tok.text, list(self.kernels), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            defined = f" Kernels: {', '.join(self.kernels)}" if self.kernels else " No kernel is defined yet."
            raise st.error(f"unknown kernel {name_tok.text!r}{hint}.{defined}", name_tok)
        st.expect("(", f"'(' and the operands of {name_tok.text}")
        call = Call(kernel, name_tok.text)
        params = [p.name for p in kernel.program.params]
        signature = f"{name_tok.text}({', '.join(params)})"
        while not st.accept(")"):
            if call.args or call.kwargs:
                st.expect(",", "',' or ')'")
            tok = st.next()
            key = None
            if tok.kind == "name" and st.peek().text == "=":
                st.next()
                key, tok = tok.text, st.next()
            if tok.kind == "num":
                value = float(tok.text) if any(c in tok.text for c in ".eE") else int(tok.text)
            elif tok.kind == "name" and tok.text in ("true", "false"):
                value = tok.text == "true"
            elif tok.kind == "name" and tok.text in self.tensors:
                value = self.tensors[tok.text]
            elif tok.kind == "name":
                close = difflib.get_close_matches(tok.text, list(self.tensors), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise st.error(f"unknown tensor {tok.text!r}{hint} (define it with :let {tok.text} = ...)", tok)
            else:
                raise st.error(f"expected an operand (a tensor name or a number), got {st.describe(tok)}", tok)
            if key is None:
                if call.kwargs:
                    raise st.error("a positional operand after a named one", tok)
                if len(call.args) == len(params):
                    raise st.error(f"{signature} takes {len(params)} operands; this is one more", tok)
                call.args.append(value)
            else:
                if key not in params or key in call.named():
                    problem = f"operand {key!r} is given twice" if key in params else f"no operand {key!r}"
                    raise st.error(f"{problem}: {signature}", st.tokens[st.pos - 3])
                call.kwargs[key] = value
        end = st.tokens[st.pos - 1]
        missing = [p for p in params if p not in call.named()]
        if missing:
            raise st.error(f"no operand for {missing[0]!r}: {signature}", end)
        call.text = st.text[start.col - 1:end.col]
        call.span = Span(st.file, st.line, start.col, st.text, len(call.text))
        return call

    def invoke(self, call: Call, backend: str | None = None):
        t = time.perf_counter()
        try:
            value = call.kernel(*call.args, backend=backend, **call.kwargs)
        except (FormatError, ValueError, TypeError) as exc:  # an operand the kernel cannot take: say where
            raise DSLError(f"{call.name}: {exc}", call.span) from None
        elapsed = time.perf_counter() - t
        self.last_call[call.name] = call
        sig = (call.name, backend, tuple((n, _signature(v)) for n, v in call.named().items()))
        first = sig not in self.seen
        self.seen.add(sig)
        return value, (elapsed, first)



def prefix_names(prefix: list[str]) -> set:
    return {line.split()[1] for line in prefix}


def _signature(v):
    if is_tensor(v):
        return (v.shape, str(v.dtype), v.format)
    if isinstance(v, np.ndarray):
        return (v.shape, str(v.dtype))
    return type(v).__name__

"""A sparsedsl session: the formats, kernels and tensors defined so far, and the statements that
act on them. The REPL and ``sparsedsl run FILE.sdsl`` both run source through ``Session.run``.

Only the sparsedsl language and the statements below are evaluated: there is no Python ``eval``,
and the only files read are the data files named by ``load`` (.mtx, .mtx.gz, .npz) and the scripts
named by ``:load`` (.sdsl). Files are written only by ``:save``.
"""

from __future__ import annotations

import difflib
import os
import re
import time
from dataclasses import dataclass, field

import numpy as np

import sparsedsl as sd

from ..errors import DSLError, FormatError, Span
from . import display
from .source import Statement, split_source, strip_comment

DATA_SUFFIXES = (".mtx", ".mtx.gz", ".mtx.bz2", ".npz")
NAMED_FORMATS = ("dense", "csr", "csc", "dcsr", "coo", "csf", "bitmap", "nm(2,4)", "bsr(4,4)",
                 "blocked_bitmap(4,4)", "sparse")
STAGES = ("parsed", "checked", "rewritten", "loops", "code", "cuda")
DTYPES = ("float64", "float32", "int64", "int32", "bool")
LET_WORDS = ("random", "ones", "zeros", "eye", "range", "prune", "load")
RESERVED = {"let", "run", "print", "show", "bench", "advise", "spy", "save", "load", "formats", "who", "help",
            "quit", "exit", "format", "kernel", "as", "ans", "true", "false", *LET_WORDS}


class Quit(Exception):
    """``:quit`` / ``:exit``."""


@dataclass
class Call:
    kernel: object
    name: str
    args: list = field(default_factory=list)     # values, positional
    kwargs: dict = field(default_factory=dict)   # values by operand name
    text: str = ""                               # as written: "spmv(A, x)"

    def named(self) -> dict:
        """Operand name -> value (positional ones by parameter order)."""
        return {**dict(zip((p.name for p in self.kernel.program.params), self.args)), **self.kwargs}


def parse_declarations(text: str, file: str) -> dict:
    # The one place the REPL reads below the public API: sd.load takes a path, and a REPL input has
    # none. (A public ``sd.loads(text, file=...)`` would replace this import.)
    from ..loader import parse_source

    return parse_source(text, file=file)


class Session:
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
        prefix = [f"format {name} = {fmt.spelling()}" for name, fmt in self.formats.items()]
        parsed = parse_declarations("\n".join(prefix + [text]), file) if prefix else parse_declarations(text, file)
        self.offsets[file] = len(prefix)
        names = []
        for name, fmt in parsed["formats"].items():
            if name in prefix_names(prefix):
                continue
            self._bind_name(name, "format", file)
            self.formats[name] = fmt
            names.append(name)
            self.sources[name] = f"format {name} = {fmt.spelling()}"
        lines = text.split("\n")
        for name, program in parsed["kernels"].items():
            kernel = sd.Kernel(program)  # checks it: a located DSLError now, not at the first call
            self._bind_name(name, "kernel", file)
            self.kernels[name] = kernel
            names.append(name)
            start = program.span.line - len(prefix) - 1
            end = start
            depth, opened = 0, False
            while end < len(lines):
                depth += lines[end].count("{") - lines[end].count("}")
                opened = opened or "{" in lines[end]
                if opened and depth <= 0:
                    break
                end += 1
            self.sources[name] = "\n".join(lines[start:end + 1])
        return names

    def _bind_name(self, name: str, kind: str, file: str):
        for other, table in (("format", self.formats), ("kernel", self.kernels), ("tensor", self.tensors)):
            if other != kind and name in table:
                raise DSLError(f"'{name}' is already a {other} in this session; give the {kind} another name",
                               Span(file, 1, 1))

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
        out_tok = st.tokens[-1].__class__("name", out.strip(), st.peek().col + len(expr) + len("--out") + 1)
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

    def cmd_let(self, st: Statement, base: str):
        """let NAME = random FMT SHAPE [density D] [seed S] [dtype T] | ones SHAPE | zeros SHAPE [FMT] |
        eye N [FMT] | range N | prune W nm(N,M) | load FILE | NAME as FMT | KERNEL(args) | NAME"""
        name_tok = st.expect_kind("name", "a name for the tensor")
        name = name_tok.text
        if name in RESERVED:
            raise st.error(f"'{name}' is a reserved word; pick another name", name_tok)
        for kind, table in (("kernel", self.kernels), ("format", self.formats)):
            if name in table:
                raise st.error(f"'{name}' is a {kind} in this session; pick another name for the tensor", name_tok)
        st.expect("=", "'=' after the name")
        value, path = self.expression(st, base)
        self.tensors[name] = value
        self.lets.append((name, st.text.strip().lstrip(":"), path))
        self.out(f"{name} = {display.describe(value, self.format_names())}")

    def expression(self, st: Statement, base: str):
        """The value of a let's right-hand side, and the absolute path it was loaded from (or None)."""
        tok = st.peek()
        if tok.kind != "name":
            raise st.error(f"expected random, ones, zeros, eye, load, a kernel call or a tensor name, got "
                           f"{st.describe(tok)}", tok)
        if tok.text in self.kernels and st.peek(1).text == "(":
            call = self.call(st)
            st.finish()
            value, _ = self.invoke(call)
            if isinstance(value, tuple):
                raise st.error(f"{call.name} returns {len(value)} outputs; a let takes one (use run to see them)", tok)
            return value, None
        if tok.text in self.tensors and st.peek(1).kind in ("end", "name"):
            st.next()
            value = self.tensors[tok.text]
            if st.accept("as"):
                fmt_tok = st.peek()
                fmt = self.format_spec(st, np.ndim(value) if not _is_tensor(value) else value.ndim)
                st.finish()
                try:
                    return _convert(value, fmt), None
                except FormatError as exc:
                    raise st.error(str(exc), fmt_tok) from None
            st.finish()
            return value, None
        st.next()
        if tok.text == "load":
            path, col = st.rest()
            return self.load_data(path, base, st, col)
        if tok.text == "random":
            fmt_tok = st.peek()
            fmt_text = self.format_text(st)
            shape = self.shape(st)
            opts = self.options(st, {"density": float, "seed": int, "dtype": str})
            fmt = self.resolve_format(fmt_text, len(shape), st, fmt_tok)
            dtype = self.dtype(opts.get("dtype", "float64"), st)
            if fmt.is_dense:
                rng = np.random.default_rng(opts.get("seed"))
                return (rng.random(shape) * 1).astype(dtype), None
            density = opts.get("density", 0.01)
            try:
                return sd.random(shape, density, format=fmt, dtype=dtype, seed=opts.get("seed")), None
            except FormatError as exc:
                raise st.error(str(exc), tok) from None
        if tok.text in ("ones", "zeros"):
            shape = self.shape(st)
            fmt = None
            if st.peek().kind == "name" and st.peek().text not in ("dtype",):
                fmt_tok = st.peek()
                fmt = self.resolve_format(self.format_text(st), len(shape), st, fmt_tok)
            opts = self.options(st, {"dtype": str})
            dtype = self.dtype(opts.get("dtype", "float64"), st)
            if tok.text == "ones" or fmt is None or fmt.is_dense:
                if tok.text == "ones" and fmt is not None and not fmt.is_dense:
                    raise st.error("ones gives a dense array (every entry stored); leave out the format", tok)
                return (np.ones if tok.text == "ones" else np.zeros)(shape, dtype=dtype), None
            return sd.zeros(shape, format=fmt, dtype=dtype), None
        if tok.text == "range":
            n_tok = st.expect_kind("num", "the length n")
            st.finish()
            return np.arange(self.int_of(n_tok, st), dtype=np.float64), None
        if tok.text == "prune":
            src = st.expect_kind("name", "the tensor to prune")
            if src.text not in self.tensors:
                raise st.error(f"unknown tensor {src.text!r}", src)
            fmt_tok = st.peek()
            text = self.format_text(st)
            st.finish()
            m = re.fullmatch(r"nm\((\d+),(\d+)\)", text)
            if not m:
                raise st.error("prune keeps the N largest |values| of every M: prune W nm(2,4)", fmt_tok, len(text))
            try:
                return sd.prune.nm(self.tensors[src.text], int(m.group(1)), int(m.group(2))), None
            except FormatError as exc:
                raise st.error(str(exc), fmt_tok, len(text)) from None
        if tok.text == "eye":
            n_tok = st.expect_kind("num", "the size n")
            fmt = "csr"
            if st.peek().kind == "name" and st.peek().text != "dtype":
                fmt_tok = st.peek()
                fmt = self.resolve_format(self.format_text(st), 2, st, fmt_tok)
            opts = self.options(st, {"dtype": str})
            return sd.eye(self.int_of(n_tok, st), format=fmt, dtype=self.dtype(opts.get("dtype", "float64"), st)), None
        close = difflib.get_close_matches(tok.text, [*LET_WORDS, *self.tensors,
                                                     *self.kernels], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise st.error(f"unknown name {tok.text!r}{hint}", tok)

    def load_data(self, path: str, base: str, st: Statement, col: int):
        if len(path) >= 2 and path[0] == path[-1] and path[0] in "\"'":
            path = path[1:-1]
        tok = st.tokens[0].__class__("other", path, col)
        if not path:
            raise st.error("load takes a file: load matrix.mtx (Matrix Market) or load tensor.npz", tok)
        if not path.lower().endswith(DATA_SUFFIXES):
            raise st.error(f"load reads Matrix Market (.mtx, .mtx.gz) and .npz files; {path!r} is neither "
                           f"(a .sdsl script is run with :load)", tok, len(path))
        full = os.path.abspath(os.path.join(base, os.path.expanduser(path)))
        try:
            value = sd.io.load_npz(full) if full.lower().endswith(".npz") else sd.io.mmread(full)
        except OSError as exc:
            raise st.error(f"cannot read {path}: {exc.strerror or exc}", tok, len(path)) from None
        except (ValueError, FormatError) as exc:
            raise st.error(f"{path} is not a readable {'npz' if full.endswith('.npz') else 'Matrix Market'} "
                           f"file: {str(exc).splitlines()[0]}", tok, len(path)) from None
        return value, full

    # ---- pieces of statements ---------------------------------------------------------------------------
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
                opts[key] = _split_top(text)
                continue
            try:
                opts[key] = allowed[key](val.text)
            except ValueError:
                raise st.error(f"{key} must be {allowed[key].__name__}, got {val.text!r}", val) from None
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
                call.args.append(value)
            else:
                call.kwargs[key] = value
        end = st.tokens[st.pos - 1]
        call.text = st.text[start.col - 1:end.col]
        self.last_call[call.name] = call  # :show KERNEL without operands uses these
        return call

    def invoke(self, call: Call, backend: str | None = None):
        t = time.perf_counter()
        value = call.kernel(*call.args, backend=backend, **call.kwargs)
        elapsed = time.perf_counter() - t
        self.last_call[call.name] = call
        sig = (call.name, backend, tuple((n, _signature(v)) for n, v in call.named().items()))
        first = sig not in self.seen
        self.seen.add(sig)
        return value, (elapsed, first)

    # ---- commands -------------------------------------------------------------------------------------
    def cmd_run(self, st: Statement, base: str):
        """run KERNEL(args) [--backend cpu|cuda]: run it, print a summary of the result (kept as ans)"""
        call = self.call(st)
        opts = self.options(st, {"backend": str})
        value, (elapsed, first) = self.invoke(call, opts.get("backend"))
        self.tensors["ans"] = value
        note = " (first call: includes planning and compiling or loading from the disk cache)" if first else ""
        self.out(f"{call.text} -> {display.show(value, names=self.format_names())}")
        self.out(f"  in {display.timing(elapsed)}{note}; kept as ans")

    def cmd_print(self, st: Statement, base: str):
        """print NAME: a tensor's summary and entries, a kernel's signature, a format's levels"""
        tok = st.expect_kind("name", "a name")
        st.finish()
        name = tok.text
        if name in self.tensors:
            self.out(display.show(self.tensors[name], entries=10, names=self.format_names()))
        elif name in self.kernels:
            self.out(f"{self.kernels[name]!r}\n{self.sources.get(name, '')}".rstrip())
        elif name in self.formats:
            self.out(f"format {name} = {self.formats[name].spelling()}")
        else:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise st.error(f"nothing is called {name!r}{hint}", tok)

    def cmd_show(self, st: Statement, base: str):
        """show parsed|checked|rewritten|loops|code|cuda KERNEL[(args)]: a pipeline stage"""
        tok = st.expect_kind("name", f"a stage: {', '.join(STAGES)}")
        if tok.text not in STAGES:
            close = difflib.get_close_matches(tok.text, STAGES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise st.error(f"unknown stage {tok.text!r}{hint}; stages are {', '.join(STAGES)}", tok)
        stage = tok.text
        ktok = st.peek()
        if st.peek(1).text == "(":
            call = self.call(st)
        else:
            st.expect_kind("name", "a kernel")
            if ktok.text not in self.kernels:
                raise st.error(f"unknown kernel {ktok.text!r}", ktok)
            call = self.last_call.get(ktok.text)
            if call is None and stage != "parsed":
                raise st.error(f"the {stage} stage depends on the operands' formats and shapes: give them, "
                               f":show {stage} {ktok.text}(A, x), or run the kernel first", ktok)
            call = call or Call(self.kernels[ktok.text], ktok.text)
        opts = self.options(st, {"backend": str})
        if stage == "parsed":
            prog = call.kernel.program
            self.out(repr(call.kernel))
            for s in prog.statements:
                self.out(f"  {'let ' if s.is_let else ''}{display.notation(s.target)} = "
                         f"{display._unparen(display.notation(s.value))}")
            return
        if stage == "cuda":
            try:
                self.out(sd.explain(call.kernel, *call.args, backend="cuda", **call.kwargs))
            except Exception as exc:  # noqa: BLE001 - no GPU or no cupy: say why, keep going
                self.out(f"no CUDA source: {str(exc).splitlines()[0]}")
            return
        stages = call.kernel.stages(*call.args, backend=opts.get("backend"), **call.kwargs)
        if stage in ("checked", "rewritten"):
            self.out(display.checked_listing(stages[stage]))
        elif stage == "loops":
            self.out(display.loops_listing(stages["loop_ir"], stages["statement_notes"]))
        else:
            self.out(sd.explain(call.kernel, *call.args, backend=opts.get("backend"), **call.kwargs))

    def cmd_bench(self, st: Statement, base: str):
        """bench KERNEL(args) [--backend cpu|cuda] [--repeat N]: time it, bytes, GB/s, % of copy, vs scipy"""
        from ..roofline import bench
        from .compare import scipy_peer

        call = self.call(st)
        opts = self.options(st, {"backend": str, "repeat": int})
        result = bench(call.kernel, *call.args, backend=opts.get("backend"), repeat=opts.get("repeat"),
                       **call.kwargs)
        self.out(repr(result))
        peer = scipy_peer(call, result)
        self.out(peer if peer else "  scipy: no scipy.sparse operation computes this kernel's result")

    def cmd_advise(self, st: Statement, base: str):
        """advise KERNEL(args) [--formats csr,coo,...] [--operand NAME] [--backend cpu|cuda]: measure formats"""
        call = self.call(st)
        opts = self.options(st, {"formats": list, "operand": str, "backend": str})
        named = call.named()
        tensors = [p.name for p in call.kernel.program.params if p.kind == "tensor"]
        operand = opts.get("operand") or next((n for n in tensors if _is_sparse(named.get(n))), tensors[0])
        if operand not in named:
            raise st.error(f"{call.name} has no operand {operand!r}; its operands are {', '.join(named)}")
        A = named.pop(operand)
        formats = opts.get("formats")
        self.out(repr(sd.advise(call.kernel, A, operand=operand, formats=formats, backend=opts.get("backend"),
                                **named)))

    def cmd_spy(self, st: Statement, base: str):
        """spy NAME [WIDTHxHEIGHT]: a terminal density plot of a matrix's stored entries"""
        tok = st.expect_kind("name", "a tensor")
        if tok.text not in self.tensors:
            raise st.error(f"unknown tensor {tok.text!r}", tok)
        size = (64, 24)
        if st.peek().kind == "shape":
            size = tuple(int(s) for s in st.next().text.split("x"))[:2]
        st.finish()
        self.out(display.spy(self.tensors[tok.text], *size))

    def cmd_save(self, st: Statement, base: str):
        """save FILE.sdsl (the session as a script) | save NAME FILE.mtx|FILE.npz (a tensor)"""
        if st.peek().kind == "name" and st.peek().text in self.tensors and st.peek(1).kind != "end":
            tok = st.next()
            path, col = st.rest()
            path = path.strip("\"'")
            full = os.path.abspath(os.path.join(base, os.path.expanduser(path)))
            value = self.tensors[tok.text]
            if full.lower().endswith(".npz"):
                sd.io.save_npz(full, value if _is_tensor(value) else sd.asformat(np.asarray(value), "dense"))
            elif full.lower().endswith(".mtx"):
                sd.io.mmwrite(full, value if _is_tensor(value) else np.atleast_2d(np.asarray(value)))
            else:
                raise st.error("a tensor is saved as .mtx (Matrix Market) or .npz", st.tokens[-1])
            self.out(f"saved {tok.text} to {path}")
            return
        path, full = self.script_path(st, base, "save FILE.sdsl writes the session; save NAME FILE.mtx|.npz "
                                                "writes a tensor")
        with open(full, "w") as f:
            f.write(self.script(os.path.dirname(full)))
        self.out(f"saved {len(self.sources)} declarations and {len(self.lets)} lets to {path}")

    @staticmethod
    def script_path(st: Statement, base: str, wrong: str) -> tuple[str, str]:
        """The .sdsl path that ends the statement, as written and made absolute (relative to ``base``)."""
        path = st.rest()[0].strip("\"'")
        if not path.endswith(".sdsl"):
            raise st.error(wrong, st.tokens[0])
        return path, os.path.abspath(os.path.join(base, os.path.expanduser(path)))

    def script(self, where: str) -> str:
        """The session as a .sdsl script: declarations, then the lets (load paths relative to ``where``)."""
        parts = ["# saved by the sparsedsl REPL"]
        parts += [text for text in self.sources.values()]
        for name, text, path in self.lets:
            parts.append(f'let {name} = load "{os.path.relpath(path, where)}"' if path else text)
        return "\n".join(parts) + "\n"

    def cmd_load(self, st: Statement, base: str):
        """load FILE.sdsl: run a script in this session (its declarations and statements)"""
        from ..loader import read_source

        path, full = self.script_path(st, base, ":load runs a .sdsl script; a matrix is read with "
                                                ":let A = load FILE.mtx")
        names = self.run(read_source(full), full, os.path.dirname(full))
        self.out(f"loaded {path}" + (f": {', '.join(names)}" if names else ""))

    def cmd_formats(self, st: Statement, base: str):
        """formats: the named formats and the session's, with their levels"""
        st.finish()
        for name in NAMED_FORMATS:
            ndim = 3 if name == "csf" else 1 if name == "sparse" else 2
            self.out(f"  {name:<20} {sd.as_format(name, ndim).spelling()}")
        for name, fmt in self.formats.items():
            self.out(f"  {name:<20} {fmt.spelling()}  (declared)")

    def cmd_who(self, st: Statement, base: str):
        """who: the formats, kernels and tensors defined in this session"""
        st.finish()
        for name, fmt in self.formats.items():
            self.out(f"  format {name} = {fmt.spelling()}")
        for k in self.kernels.values():
            self.out(f"  {k!r}")
        for name, v in self.tensors.items():
            self.out(f"  {name} = {display.describe(v, self.format_names())}")
        if not self.names():
            self.out("  nothing defined yet")

    def cmd_help(self, st: Statement, base: str):
        """help [COMMAND]: this list, or one command's form"""
        tok = st.peek()
        if tok.kind == "name":
            st.next()
            st.finish()
            doc = COMMANDS.get(tok.text)
            if doc is None:
                raise st.error(f"no command {tok.text!r}; commands: {', '.join(COMMANDS)}", tok)
            self.out(f":{doc}")
            return
        st.finish()
        self.out(HELP)

    def cmd_quit(self, st: Statement, base: str):
        """quit (or Ctrl-D): leave"""
        raise Quit

    cmd_exit = cmd_quit


def _split_top(text: str) -> list[str]:
    """'csr,bsr(2,2),coo' -> ['csr', 'bsr(2,2)', 'coo'] (commas inside parentheses kept)."""
    return [p.strip() for p in re.findall(r"[^,()]+(?:\([^)]*\))?", text) if p.strip()]


def prefix_names(prefix: list[str]) -> set:
    return {line.split()[1] for line in prefix}


def _is_tensor(value) -> bool:
    return hasattr(value, "format") and hasattr(value, "levels")


def _is_sparse(value) -> bool:
    return _is_tensor(value) and not value.format.is_dense


def _signature(v):
    if _is_tensor(v):
        return (v.shape, str(v.dtype), v.format)
    if isinstance(v, np.ndarray):
        return (v.shape, str(v.dtype))
    return type(v).__name__


def _convert(value, fmt):
    if fmt.is_dense:
        return value.todense() if _is_tensor(value) else np.asarray(value)
    return sd.asformat(value, fmt)


COMMANDS = {name[4:]: " ".join(getattr(Session, name).__doc__.split())
            for name in dir(Session) if name.startswith("cmd_") and name != "cmd_exit"}

HELP_ORDER = ("let", "run", "print", "show", "bench", "advise", "spy", "save", "load", "formats", "who", "help",
              "quit")
HELP = """Type format and kernel declarations as in a .sdsl file (Enter runs a complete input; an open
'{' continues on the next line; Esc then Enter runs it as it is). Statements (':' optional):
""" + "\n".join(f"  :{COMMANDS[c]}".replace(" | ", "\n        | " if c == "let" else " | ") for c in HELP_ORDER) + """
A bare KERNEL(args) runs it; a bare NAME prints it; y[i] = A[i,j] * x[j] [--out csr] computes one
statement of index notation over the session's tensors and keeps the result as y.
Tab completes names, keywords and formats; Up/Down walk the history (kept between sessions);
Ctrl-C drops the input; Ctrl-D leaves."""

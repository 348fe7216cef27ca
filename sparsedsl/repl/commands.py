"""The statements of a sparsedsl session (``let``, ``run``, ``print``, ``show``, ``bench``, ``advise``,
``spy``, ``save``, ``load``, ``formats``, ``who``, ``help``, ``quit``), as ``Commands.cmd_*`` methods that
``Session`` inherits; each one's docstring is its help line.

Only these statements and the sparsedsl language are evaluated: there is no Python ``eval``, and the
only files read are the data files named by ``load`` (.mtx, .mtx.gz, .npz) and the scripts named by
``:load`` (.sdsl). Files are written only by ``:save``.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field

import numpy as np

import sparsedsl as sd

from ..errors import FormatError
from . import display
from .source import Statement, Token

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
    span: object = None                          # where it is written (errors while it runs point there)

    def named(self) -> dict:
        """Operand name -> value (positional ones by parameter order)."""
        return {**dict(zip((p.name for p in self.kernel.program.params), self.args)), **self.kwargs}


class Commands:
    """The statements; ``Session`` supplies the state (``tensors``, ``kernels``, ``formats``), ``out``,
    ``run`` and the parsing helpers (``call``, ``format_text``, ``options``, ...)."""

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
                fmt = self.format_spec(st, np.ndim(value) if not is_tensor(value) else value.ndim)
                st.finish()
                try:
                    return _convert(value, fmt), None
                except FormatError as exc:
                    raise st.error(str(exc), fmt_tok) from None
            st.finish()
            return value, None
        maker = getattr(self, f"let_{tok.text}", None) if tok.text in LET_WORDS else None
        if maker is None:
            close = difflib.get_close_matches(tok.text, [*LET_WORDS, *self.tensors, *self.kernels], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise st.error(f"unknown name {tok.text!r}{hint}", tok)
        st.next()
        if tok.text == "load":
            return self.let_load(st, base)
        return maker(st, tok), None

    # ---- the right-hand sides of let: let_WORD(statement, WORD's token) -> value --------------------------
    def let_random(self, st: Statement, tok):
        fmt_tok = st.peek()
        fmt_text = self.format_text(st)
        shape = self.shape(st)
        opts = self.options(st, {"density": float, "seed": int, "dtype": str})
        fmt = self.resolve_format(fmt_text, len(shape), st, fmt_tok)
        dtype = self.dtype(opts.get("dtype", "float64"), st)
        if fmt.is_dense:
            return np.random.default_rng(opts.get("seed")).random(shape).astype(dtype)
        try:
            return sd.random(shape, opts.get("density", 0.01), format=fmt, dtype=dtype, seed=opts.get("seed"))
        except FormatError as exc:
            raise st.error(str(exc), tok) from None

    def let_ones(self, st: Statement, tok):
        shape = self.shape(st)
        fmt = None
        if st.peek().kind == "name" and st.peek().text != "dtype":
            fmt_tok = st.peek()
            fmt = self.resolve_format(self.format_text(st), len(shape), st, fmt_tok)
        dtype = self.dtype(self.options(st, {"dtype": str}).get("dtype", "float64"), st)
        if fmt is None or fmt.is_dense:
            return (np.ones if tok.text == "ones" else np.zeros)(shape, dtype=dtype)
        if tok.text == "ones":
            raise st.error("ones gives a dense array (every entry stored); leave out the format", tok)
        return sd.zeros(shape, format=fmt, dtype=dtype)

    let_zeros = let_ones

    def let_range(self, st: Statement, tok):
        n_tok = st.expect_kind("num", "the length n")
        st.finish()
        return np.arange(self.int_of(n_tok, st), dtype=np.float64)

    def let_eye(self, st: Statement, tok):
        n_tok = st.expect_kind("num", "the size n")
        fmt = "csr"
        if st.peek().kind == "name" and st.peek().text != "dtype":
            fmt_tok = st.peek()
            fmt = self.resolve_format(self.format_text(st), 2, st, fmt_tok)
        dtype = self.dtype(self.options(st, {"dtype": str}).get("dtype", "float64"), st)
        return sd.eye(self.int_of(n_tok, st), format=fmt, dtype=dtype)

    def let_prune(self, st: Statement, tok):
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
            return sd.prune.nm(self.tensors[src.text], int(m.group(1)), int(m.group(2)))
        except FormatError as exc:
            raise st.error(str(exc), fmt_tok, len(text)) from None

    def let_load(self, st: Statement, base: str):
        """The tensor in a data file and its absolute path."""
        path, col = st.rest()
        if len(path) >= 2 and path[0] == path[-1] and path[0] in "\"'":
            path = path[1:-1]
        tok = Token("other", path, col)
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

    # ---- the other statements ------------------------------------------------------------------------------
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
                         f"{display.unparen(display.notation(s.value))}")
            return
        if stage == "cuda":
            try:
                self.out(sd.explain(call.kernel, *call.args, backend="cuda", **call.kwargs))
            except Exception as exc:  # noqa: BLE001 - no GPU or no cupy: say why, keep going
                self.out(f"no CUDA source: {str(exc).splitlines()[0]}")
            return
        stages = call.kernel.stages(*call.args, backend=opts.get("backend"), **call.kwargs)
        self.last_call[call.name] = call
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
        self.last_call[call.name] = call
        self.out(repr(result))
        peer = scipy_peer(call, result)
        self.out(peer if peer else "  scipy: no scipy.sparse operation computes this kernel's result")

    def cmd_advise(self, st: Statement, base: str):
        """advise KERNEL(args) [--formats csr,coo,...] [--operand NAME] [--backend cpu|cuda]: measure formats"""
        call = self.call(st)
        opts = self.options(st, {"formats": list, "operand": str, "backend": str})
        named = call.named()
        tensors = [p.name for p in call.kernel.program.params if p.kind == "tensor"]
        operand = opts.get("operand") or next((n for n in tensors if is_sparse(named.get(n))), tensors[0])
        if operand not in named:
            raise st.error(f"{call.name} has no operand {operand!r}; its operands are {', '.join(named)}")
        A = named.pop(operand)
        formats = opts.get("formats")
        self.out(repr(sd.advise(call.kernel, A, operand=operand, formats=formats, backend=opts.get("backend"),
                                **named)))
        self.last_call[call.name] = call

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
                sd.io.save_npz(full, value if is_tensor(value) else sd.asformat(np.asarray(value), "dense"))
            elif full.lower().endswith(".mtx"):
                sd.io.mmwrite(full, value if is_tensor(value) else np.atleast_2d(np.asarray(value)))
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


def split_list(text: str) -> list[str]:
    """'csr,bsr(2,2),coo' -> ['csr', 'bsr(2,2)', 'coo'] (commas inside parentheses kept)."""
    return [p.strip() for p in re.findall(r"[^,()]+(?:\([^)]*\))?", text) if p.strip()]


def is_tensor(value) -> bool:
    return hasattr(value, "format") and hasattr(value, "levels")


def is_sparse(value) -> bool:
    return is_tensor(value) and not value.format.is_dense


def _convert(value, fmt):
    if fmt.is_dense:
        return value.todense() if is_tensor(value) else np.asarray(value)
    return sd.asformat(value, fmt)


COMMANDS = {name[4:]: " ".join(getattr(Commands, name).__doc__.split())
            for name in dir(Commands) if name.startswith("cmd_") and name != "cmd_exit"}

HELP_ORDER = ("let", "run", "print", "show", "bench", "advise", "spy", "save", "load", "formats", "who", "help",
              "quit")
HELP = """Type format and kernel declarations as in a .sdsl file (Enter runs a complete input; an open
'{' continues on the next line; Esc then Enter runs it as it is). Statements (':' optional):
""" + "\n".join(f"  :{COMMANDS[c]}".replace(" | ", "\n        | " if c == "let" else " | ") for c in HELP_ORDER) + """
A bare KERNEL(args) runs it; a bare NAME prints it; y[i] = A[i,j] * x[j] [--out csr] computes one
statement of index notation over the session's tensors and keeps the result as y.
Tab completes names, keywords and formats; Up/Down walk the history (kept between sessions);
Ctrl-C drops the input; Ctrl-D leaves."""

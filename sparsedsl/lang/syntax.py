"""The two front ends: ``.sdsl`` text (a lark grammar) and ``@sparse_kernel`` Python functions
(read with ``ast``, never executed). Both build the same AST (``sparsedsl.lang.ast``) with spans."""

from __future__ import annotations

import ast as pyast
import difflib
import inspect
import textwrap

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from ..errors import DSLError, FormatError, Span
from . import ast as A
from .formats import NAMED_FORMATS, Format, as_format, parse_format

GRAMMAR = r"""
start: (format_decl | kernel | _NL)+
statements: (stmt | _sep)*

format_decl: "format" NAME "=" FORMAT_SPELLING
kernel: "kernel" NAME "(" [param ("," param)*] ")" "->" output ("," output)* _NL* "{" statements "}"
param: NAME ":" fmtref
output: NAME ":" fmtref
fmtref: NAME ["(" fmtarg ("," fmtarg)* ")"]
fmtarg: INT | NAME "=" INT

stmt: [LET] access "=" expr
LET: "let"
access: NAME "[" [index ("," index)*] "]"
index: NAME

?expr: comparison
?comparison: sum (COMPOP sum)?
?sum: product | sum ADDOP product -> binop
?product: unary | product MULOP unary -> binop
?unary: atom | "-" unary -> neg
?atom: access
     | NUMBER -> number
     | NAME "[" index ("," index)* "]" "(" expr ")" -> reduce
     | NAME "(" expr ("," expr)* ")" -> call
     | NAME -> scalar
     | "(" expr ")"

_sep: ";" | _NL
COMPOP: "<=" | ">=" | "==" | "!=" | "<" | ">"
ADDOP: "+" | "-"
MULOP: "*" | "/"
FORMAT_SPELLING: /\([^)\n]*\)\s*->\s*\([^\n]*\)/
NAME: /[A-Za-z_][A-Za-z_0-9]*/
NUMBER: /\d+\.\d*([eE][-+]?\d+)?|\d+[eE][-+]?\d+|\.\d+([eE][-+]?\d+)?|\d+/
INT: /\d+/
COMMENT: /#[^\n]*/
_NL: /\n/
%ignore COMMENT
%ignore /[ \t\f\r]+/
%ignore /\\\n/
"""

_parser = Lark(GRAMMAR, start=["start", "statements"], parser="lalr", propagate_positions=True,
               maybe_placeholders=True)

REDUCERS = ("sum", "max", "min")


class _Build(Transformer):
    def __init__(self, file, lines):
        super().__init__()
        self.file, self.lines = file, lines

    def transform(self, tree):
        try:
            return super().transform(tree)
        except VisitError as exc:  # lark wraps what a rule raises; a DSLError is the user's to see
            if isinstance(exc.orig_exc, DSLError):
                raise exc.orig_exc from None
            raise

    def span(self, meta_or_tok, length=None):
        line = getattr(meta_or_tok, "line", None) or 1
        col = getattr(meta_or_tok, "column", None) or 1
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        end = getattr(meta_or_tok, "end_column", None)
        same_line = getattr(meta_or_tok, "end_line", line) == line
        n = length or ((end - col) if end and same_line else 1)
        return Span(self.file, line, col, text, max(1, n))

    @v_args(meta=True)
    def index(self, meta, c):
        return A.Index(self.span(c[0]), str(c[0]))

    @v_args(meta=True)
    def access(self, meta, c):
        return A.Access(self.span(meta), str(c[0]), tuple(i for i in c[1:] if i is not None))

    @v_args(meta=True)
    def number(self, meta, c):
        text = str(c[0])
        if any(ch in text for ch in ".eE"):
            return A.Literal(self.span(c[0]), float(text))  # 1e999 is inf, as in Python and numpy
        if len(text) > 40:  # no integer type holds it (and Python's int() refuses over 4300 digits)
            raise DSLError(f"the integer literal {text[:12]}... has {len(text)} digits, too many for any integer "
                           f"type; write it as a float, e.g. {text[0]}.{text[1:4]}e{len(text) - 1}", self.span(c[0]))
        return A.Literal(self.span(c[0]), int(text))

    @v_args(meta=True)
    def scalar(self, meta, c):
        name = str(c[0])
        if name in ("true", "false"):
            return A.Literal(self.span(c[0]), name == "true")
        return A.Scalar(self.span(c[0]), name)

    @v_args(meta=True)
    def binop(self, meta, c):
        return A.BinOp(self.span(c[1]), str(c[1]), c[0], c[2])

    @v_args(meta=True)
    def comparison(self, meta, c):
        return A.BinOp(self.span(c[1]), str(c[1]), c[0], c[2])

    @v_args(meta=True)
    def neg(self, meta, c):
        return A.Neg(self.span(meta), c[0])

    @v_args(meta=True)
    def call(self, meta, c):
        return A.Call(self.span(c[0]), str(c[0]), tuple(c[1:]))

    @v_args(meta=True)
    def reduce(self, meta, c):
        return A.Reduce(self.span(c[0]), str(c[0]), tuple(c[1:-1]), c[-1])

    @v_args(meta=True)
    def stmt(self, meta, c):
        is_let = c[0] is not None
        return A.Assign(self.span(meta), c[1], c[2], is_let)

    def statements(self, c):
        return [s for s in c if isinstance(s, A.Assign)]

    def fmtarg(self, c):
        return f"{c[0]}={c[1]}" if len(c) == 2 and isinstance(c[0], Token) and c[0].type == "NAME" else str(c[0])

    @v_args(meta=True)
    def fmtref(self, meta, c):
        args = [a for a in c[1:] if a is not None]
        return (str(c[0]) + (f"({','.join(args)})" if args else ""), self.span(meta))

    @v_args(meta=True)
    def param(self, meta, c):
        fmt, span = c[1]
        if fmt == "scalar":
            return A.Param(self.span(c[0]), str(c[0]), "scalar", None)
        return A.Param(self.span(c[0]), str(c[0]), "tensor", fmt)

    output = param

    @v_args(meta=True)
    def format_decl(self, meta, c):
        return ("format", str(c[0]), str(c[1]), self.span(c[1]))


def _syntax_error(exc: UnexpectedInput, file: str, lines: list[str]) -> DSLError:
    line, col = getattr(exc, "line", 1) or 1, getattr(exc, "column", 1) or 1
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    if isinstance(exc, UnexpectedToken):
        got = "end of input" if exc.token.type == "$END" else repr(str(exc.token))
        expected = sorted(_readable(t) for t in exc.expected)[:8]
        msg = f"syntax error: unexpected {got}; expected one of {', '.join(expected)}"
    elif isinstance(exc, UnexpectedCharacters):
        msg = f"syntax error: unexpected character {text[col - 1:col]!r}" if text else "syntax error"
    elif isinstance(exc, UnexpectedEOF):
        msg = "syntax error: the program ends too early"
    else:
        msg = "syntax error"
    return DSLError(msg, Span(file, line, col, text))


_TOKEN_NAMES = {"LSQB": "'['", "RSQB": "']'", "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "EQUAL": "'='",
                "NAME": "a name", "NUMBER": "a number", "_NL": "end of line", "SEMICOLON": "';'",
                "LBRACE": "'{'", "RBRACE": "'}'", "COLON": "':'", "MULOP": "'*'", "ADDOP": "'+'",
                "COMPOP": "a comparison", "MINUS": "'-'", "$END": "end of input", "INT": "an integer"}


def _readable(t):
    return _TOKEN_NAMES.get(t, t)


def parse_statements(text: str, file: str = "<expr>") -> list[A.Assign]:
    """Parse the body of a one-liner (``compute``/``compile``): statements separated by ``;``/newlines."""
    lines = text.split("\n")
    try:
        tree = _parser.parse(text, start="statements")
    except UnexpectedInput as exc:
        raise _syntax_error(exc, file, lines) from None
    stmts = _Build(file, lines).transform(tree)
    if not stmts:
        raise DSLError("the program has no statement; write e.g. 'y[i] = A[i,j] * x[j]'", Span(file, 1, 1, text))
    return stmts


def parse_source(text: str, file: str = "<sdsl>") -> dict:
    """Parse ``.sdsl`` text: returns ``{"formats": {name: Format}, "kernels": {name: Program}}``."""
    lines = text.split("\n")
    try:
        tree = _parser.parse(text, start="start")
    except UnexpectedInput as exc:
        raise _syntax_error(exc, file, lines) from None
    builder = _Build(file, lines)
    formats, kernels, defined = {}, {}, {}
    for item in tree.children:
        name, where = str(item.children[0]), builder.span(item.children[0])
        if name in defined:
            raise DSLError(f"'{name}' is defined twice: first as the {defined[name][0]} at line "
                           f"{defined[name][1].line}; give each kernel and format its own name", where)
        defined[name] = ("format" if item.data == "format_decl" else "kernel", where)
        if item.data == "format_decl":
            _, name, spelling, span = builder.transform(item)
            try:
                formats[name] = parse_format(spelling)
            except Exception as exc:
                raise DSLError(str(exc), span) from None
            continue
        name_tok = item.children[0]
        params, outputs = [], []
        for child in item.children[1:-1]:
            if child is None:
                continue
            p = builder.transform(child)
            (outputs if child.data == "output" else params).append(p)
        stmts = builder.transform(item.children[-1])
        params = [_resolve_param(p, formats) for p in params]
        outputs = [_resolve_param(p, formats) for p in outputs]
        for o in outputs:
            if any(p.name == o.name for p in params):
                raise DSLError(f"'{o.name}' is an input of the kernel and cannot also be its output: a kernel does "
                               f"not change its operands; give the result a new name", o.span)
        kernels[str(name_tok)] = A.Program(builder.span(name_tok), str(name_tok), tuple(params), tuple(outputs),
                                           tuple(stmts))
    return {"formats": formats, "kernels": kernels}


def _resolve_param(p: A.Param, formats: dict) -> A.Param:
    if p.kind == "scalar" or p.format is None:
        return p
    if p.format in formats:
        return A.Param(p.span, p.name, p.kind, formats[p.format])
    check_format(p.format, p.span, repr(p.name), declared=tuple(formats))
    return p


def check_format(fmt, span: Span, what: str, declared: tuple = ()):
    """``fmt`` when it is a format (a Format, a name such as "csr" or "bsr(4,4)", or a spelling),
    else a DSLError at ``span``: the format of ``what`` is checked where the kernel is defined, with
    a suggestion for a misspelt name."""
    if fmt is None or isinstance(fmt, Format) or fmt in declared:
        return fmt
    if not isinstance(fmt, str):
        raise DSLError(f"the format of {what} must be a name such as 'csr' or a Format, got an object of type "
                       f"{type(fmt).__name__}", span)
    try:
        as_format(fmt)
        return fmt
    except FormatError as exc:
        problem = str(exc)
    base = fmt.split("(")[0].strip()
    if base in NAMED_FORMATS and "(" not in fmt and base in ("bsr", "blocked_bitmap", "nm"):
        problem = f"{base} takes its block shape: write e.g. '{base}({'2,4' if base == 'nm' else '4,4'})'"
    elif base in NAMED_FORMATS or "->" in fmt:
        pass  # a known name with bad arguments, or a spelling: FormatError's message says what is wrong
    else:
        close = difflib.get_close_matches(base, [*NAMED_FORMATS, *declared, "scalar"], n=1, cutoff=0.6)
        problem = (f"unknown format {fmt!r} for {what}" + (f"; did you mean {close[0]!r}?" if close else "") +
                   f" Named formats are {', '.join(NAMED_FORMATS)}" +
                   (f"; this file declares {', '.join(declared)}" if declared else "") +
                   "; or declare one with 'format NAME = (i, j) -> (i: dense, j: compressed)'")
        raise DSLError(problem, span) from None
    raise DSLError(f"bad format {fmt!r} for {what}: {problem}", span) from None


# ---- Python front end ---------------------------------------------------------------------------


def parse_python(fn) -> A.Program:
    """Read a ``@sparse_kernel`` function: annotations give formats, the body is index notation."""
    if not inspect.isfunction(fn):
        raise DSLError(f"@sparse_kernel decorates a function ('def name(A: \"csr\", ...):'), got an object of "
                       f"type {type(fn).__name__}")
    try:
        lines, first = inspect.getsourcelines(fn)
        file = inspect.getsourcefile(fn) or "<python>"
    except (OSError, TypeError):
        raise DSLError(f"cannot read the source of {fn.__name__}; define it in a file or notebook cell") from None
    indent = len(lines[0]) - len(lines[0].lstrip())
    where = Span(file, first, indent + 1, lines[0].rstrip("\n"), len(lines[0].strip()))
    if fn.__name__ == "<lambda>":
        where = Span(file, first, lines[0].find("lambda") + 1, lines[0].rstrip("\n"), len("lambda"))
        raise DSLError("a lambda cannot be a sparse kernel: a kernel's body holds index-notation assignments "
                       "('y[i] = A[i, j] * x[j]'); write it as a def function", where)
    src = textwrap.dedent("".join(lines))
    try:
        tree = pyast.parse(src)
    except SyntaxError:
        raise DSLError(f"cannot read the source of {fn.__name__} as a function definition", where) from None
    fdef = next((n for n in tree.body if isinstance(n, (pyast.FunctionDef, pyast.AsyncFunctionDef))), None)
    if fdef is None:
        raise DSLError(f"cannot find the definition of {fn.__name__} in its source", where)
    conv = _PyConvert(file, src.split("\n"), first - 1, indent)
    if isinstance(fdef, pyast.AsyncFunctionDef):
        conv.fail(fdef, "a sparse kernel is a plain 'def' function, not 'async def'")
    params = conv.params(fdef.args)
    body = [s for s in fdef.body if not (isinstance(s, pyast.Expr) and isinstance(s.value, pyast.Constant))]
    if not body:
        conv.fail(fdef, f"the kernel {fdef.name} has no statement; its body holds index-notation assignments "
                        f"such as 'y[i] = A[i, j] * x[j]' and ends with 'return y'")
    ret = body[-1] if body and isinstance(body[-1], pyast.Return) else None
    stmts = [conv.stmt(s) for s in (body[:-1] if ret else body)]
    out_names = conv.return_names(ret) if ret else [stmts[-1].target.tensor] if stmts else []
    for name in out_names:
        if any(p.name == name for p in params):
            conv.fail(ret or fdef, f"'{name}' is an input of the kernel and cannot be its output: a kernel does not "
                                   f"change its operands; assign the result to a new name ('y[i] = ...', 'return y')")
    out_fmts = conv.return_formats(fdef.returns, len(out_names))
    outputs = tuple(A.Param(conv.span(ret or fdef), n, "tensor", f) for n, f in zip(out_names, out_fmts))
    stmts = [A.Assign(s.span, s.target, s.value, s.target.tensor not in out_names) for s in stmts]
    return A.Program(conv.span(fdef), fdef.name, tuple(params), outputs, tuple(stmts))


class _PyConvert:
    def __init__(self, file, lines, line_offset, indent):
        self.file, self.lines, self.line_offset, self.indent = file, lines, line_offset, indent

    def span(self, node) -> Span:
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0)
        end = getattr(node, "end_col_offset", None)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        same = getattr(node, "end_lineno", line) == line
        return Span(self.file, line + self.line_offset, col + 1 + self.indent, " " * self.indent + text,
                    max(1, (end - col) if end and same else 1))

    def fail(self, node, msg):
        raise DSLError(msg, self.span(node))

    def fmt_of(self, ann, what):
        if ann is None:
            return None
        if isinstance(ann, pyast.Constant) and isinstance(ann.value, str):
            return ann.value
        if isinstance(ann, pyast.Name):
            return ann.id
        self.fail(ann, f"the annotation of {what} must be a format name such as \"csr\" or 'scalar'")

    def params(self, args: pyast.arguments) -> list:
        if args.vararg or args.kwarg:
            self.fail(args.vararg or args.kwarg, "a sparse kernel's parameters are its named operands; "
                                                 "*args and **kwargs are not allowed")
        defaults = [d for d in args.defaults + args.kw_defaults if d is not None]
        if defaults:
            self.fail(defaults[0], "a sparse kernel's parameters have no default values: every operand is "
                                   "passed at the call")
        return [self.param(a) for a in args.posonlyargs + args.args + args.kwonlyargs]

    def param(self, arg):
        fmt = self.fmt_of(arg.annotation, arg.arg)
        if fmt in ("scalar", "float", "int"):
            return A.Param(self.span(arg), arg.arg, "scalar", None)
        check_format(fmt, self.span(arg.annotation) if arg.annotation else self.span(arg), repr(arg.arg))
        return A.Param(self.span(arg), arg.arg, "tensor", fmt)

    def return_names(self, ret):
        v = ret.value
        elts = v.elts if isinstance(v, pyast.Tuple) else [v]
        if not all(isinstance(e, pyast.Name) for e in elts):
            self.fail(ret, "a sparse kernel returns output names, e.g. 'return y'")
        return [e.id for e in elts]

    def return_formats(self, ann, n):
        if ann is None:
            return [None] * n
        anns = ann.elts if isinstance(ann, pyast.Tuple) else [ann] * n
        fmts = [self.fmt_of(e, "the output") for e in anns]
        for e, fmt in zip(anns, fmts):
            check_format(fmt, self.span(e), "the output")
        return fmts

    def stmt(self, s):
        if isinstance(s, pyast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], pyast.Subscript):
            return A.Assign(self.span(s), self.access(s.targets[0]), self.expr(s.value), False)
        self.fail(s, "a sparse kernel's body holds only index-notation assignments such as "
                     "'y[i] = A[i, j] * x[j]'")

    def indices(self, sl):
        elts = sl.elts if isinstance(sl, pyast.Tuple) else [sl]
        out = []
        for e in elts:
            if not isinstance(e, pyast.Name):
                self.fail(e, "an index must be a plain name such as i or j")
            out.append(A.Index(self.span(e), e.id))
        return tuple(out)

    def access(self, node):
        if not isinstance(node.value, pyast.Name):
            self.fail(node, "only named tensors can be indexed")
        return A.Access(self.span(node), node.value.id, self.indices(node.slice))

    _BIN = {pyast.Add: "+", pyast.Sub: "-", pyast.Mult: "*", pyast.Div: "/"}
    _CMP = {pyast.Lt: "<", pyast.LtE: "<=", pyast.Gt: ">", pyast.GtE: ">=", pyast.Eq: "==", pyast.NotEq: "!="}

    def expr(self, n):
        if isinstance(n, pyast.Subscript):
            return self.access(n)
        if isinstance(n, pyast.Constant) and isinstance(n.value, (int, float, bool)):
            return A.Literal(self.span(n), n.value)
        if isinstance(n, pyast.Name):
            if n.id in ("true", "false"):
                return A.Literal(self.span(n), n.id == "true")
            return A.Scalar(self.span(n), n.id)
        if isinstance(n, pyast.BinOp) and type(n.op) in self._BIN:
            return A.BinOp(self._op_span(n), self._BIN[type(n.op)], self.expr(n.left), self.expr(n.right))
        if isinstance(n, pyast.UnaryOp) and isinstance(n.op, pyast.USub):
            return A.Neg(self.span(n), self.expr(n.operand))
        if isinstance(n, pyast.Compare) and len(n.ops) == 1 and type(n.ops[0]) in self._CMP:
            return A.BinOp(self._op_span(n), self._CMP[type(n.ops[0])], self.expr(n.left),
                           self.expr(n.comparators[0]))
        if isinstance(n, pyast.Call) and not n.keywords:
            f = n.func
            if isinstance(f, pyast.Name):
                return A.Call(self.span(f), f.id, tuple(self.expr(a) for a in n.args))
            if isinstance(f, pyast.Subscript) and isinstance(f.value, pyast.Name) and len(n.args) == 1:
                return A.Reduce(self.span(f.value), f.value.id, self.indices(f.slice), self.expr(n.args[0]))
        self.fail(n, "this is not index notation: use tensor accesses A[i, j], numbers, scalars, + - * /, "
                     "comparisons, functions such as exp(...) and reductions such as max[j](...)")

    def _op_span(self, n):
        # point at the operator: the first non-space character after the left operand
        left = n.left
        line = self.lines[left.end_lineno - 1] if left.end_lineno <= len(self.lines) else ""
        col = left.end_col_offset
        while col < len(line) and line[col] in " )":
            col += 1
        fake = pyast.Constant(0, lineno=left.end_lineno, col_offset=col, end_lineno=left.end_lineno,
                              end_col_offset=col + 1)
        return self.span(fake)

"""C++ for loop-IR expressions and statements, with types inferred as numpy would (NEP 50: Python
literals are weak), and the kernel signatures: the vocabulary the CUDA renderer and its templates share.
"""

from __future__ import annotations

import ast as pyast
import functools

import numpy as np

from ...lang import loopir as L
from .plan import (  # noqa: F401 (re-exported: the IR helpers and the plan)
    ATOMIC_DTYPES,
    VECTOR_TYPES,
    Step,
    _assigned,
    _exprs,
    _names,
    _parse,
    _read,
    _walk,
    drop_dead,
    plan_steps,
    vector_accesses,
)

# ---- types -----------------------------------------------------------------------------------

CTYPES = {"float64": "double", "float32": "float", "int64": "long long", "int32": "int", "int16": "short",
          "int8": "signed char", "uint8": "unsigned char", "uint16": "unsigned short", "uint32": "unsigned int",
          "uint64": "unsigned long long", "bool": "bool",
          # 16-bit floats are storage only: the bits travel as unsigned short, a load widens them to
          # float (PTX cvt; no cuda_fp16.h / cuda_bf16.h needed under NVRTC), a store rounds to nearest
          "float16": "unsigned short", "bfloat16": "unsigned short"}
HALF = {"float16": ("sd_h2f", "sd_f2h"), "bfloat16": ("sd_bf2f", "sd_f2bf")}  # dtype -> (widen, narrow)
WEAK_INT, WEAK_FLOAT = "weak_int", "weak_float"  # Python literals: they take the other operand's type
FLOAT_FUNCS = {"exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid"}


def _kind(t):
    if t == WEAK_INT:
        return "i"
    if t == WEAK_FLOAT:
        return "f"
    return np.dtype(t).kind


def join(a, b):
    """The type of ``a op b`` (numpy's promotion, Python literals weak as in NEP 50)."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    weak = (WEAK_INT, WEAK_FLOAT)
    if a in weak and b not in weak:
        a, b = b, a
    if b == WEAK_INT:
        return WEAK_FLOAT if a == WEAK_FLOAT else ("int64" if a == "bool" else a)
    if b == WEAK_FLOAT:
        return a if _kind(a) == "f" else (WEAK_FLOAT if a == WEAK_INT else "float64")
    return np.result_type(a, b).name


def concrete(t) -> str:
    return {WEAK_INT: "int64", WEAK_FLOAT: "float64", None: "int64"}.get(t, t)


def ctype(t) -> str:
    t = concrete(t)
    if t not in CTYPES:
        raise NotImplementedError(f"the CUDA backend does not support dtype {t} yet (float16, bfloat16, "
                                  f"float32, float64, int8..int64, uint8..uint64 and bool are)")
    return CTYPES[t]


# ---- C source --------------------------------------------------------------------------------

PREAMBLE = r"""
#define SD_INF __longlong_as_double(0x7ff0000000000000LL)
#define SD_MATH(name, fname) \
  __device__ __forceinline__ float sd_##name(float x) { return fname(x); } \
  __device__ __forceinline__ double sd_##name(double x) { return name(x); }
SD_MATH(exp, expf) SD_MATH(log, logf) SD_MATH(sqrt, sqrtf) SD_MATH(sin, sinf) SD_MATH(cos, cosf)
SD_MATH(tanh, tanhf)
__device__ __forceinline__ float sd_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double sd_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ float sd_pow(float a, float b) { return powf(a, b); }
__device__ __forceinline__ double sd_pow(double a, double b) { return pow(a, b); }
template <class T> __device__ __forceinline__ T sd_pow(T a, T b) {
  T r = 1; if (b < 0) return 0; while (b > 0) { if (b & 1) r *= a; a *= a; b >>= 1; } return r; }
__device__ __forceinline__ int sd_trailing_zeros(int x) { return __ffs(x) - 1; }
__device__ __forceinline__ unsigned sd_trailing_zeros(unsigned x) { return __ffs(x) - 1; }
__device__ __forceinline__ long long sd_trailing_zeros(long long x) { return __ffsll(x) - 1; }
__device__ __forceinline__ unsigned long long sd_trailing_zeros(unsigned long long x) { return __ffsll(x) - 1; }
/* max/min as numpy's maximum/minimum: a NaN on either side is the result */
template <class T> __device__ __forceinline__ T sd_max(T a, T b) { return (b > a || b != b) ? b : a; }
template <class T> __device__ __forceinline__ T sd_min(T a, T b) { return (b < a || b != b) ? b : a; }
template <class T> __device__ __forceinline__ T sd_abs(T x) { return x < 0 ? -x : x; }
template <class T> __device__ __forceinline__ T sd_sign(T x) { return x != x ? x : (T)((x > 0) - (x < 0)); }
template <class T> __device__ __forceinline__ T sd_floordiv(T a, T b) {
  T q = a / b; if ((a % b != 0) && ((a < 0) != (b < 0))) q -= 1; return q; }
template <class T> __device__ __forceinline__ T sd_mod(T a, T b) {
  T r = a % b; if (r != 0 && ((r < 0) != (b < 0))) r += b; return r; }
__device__ __forceinline__ float sd_floordiv(float a, float b) { return floorf(a / b); }
__device__ __forceinline__ double sd_floordiv(double a, double b) { return floor(a / b); }
__device__ __forceinline__ float sd_mod(float a, float b) { return a - floorf(a / b) * b; }
__device__ __forceinline__ double sd_mod(double a, double b) { return a - floor(a / b) * b; }
template <class T> __device__ void sd_sift(T* a, long long root, long long n) {
  while (true) {
    long long c = 2 * root + 1;
    if (c >= n) return;
    if (c + 1 < n && a[c] < a[c + 1]) c++;
    if (!(a[root] < a[c])) return;
    T t = a[root]; a[root] = a[c]; a[c] = t; root = c;
  }
}
template <class T> __device__ void sd_sort(T* a, long long n) {  // heapsort: in place, O(n log n)
  for (long long s = n / 2 - 1; s >= 0; --s) sd_sift(a, s, n);
  for (long long e = n - 1; e > 0; --e) { T t = a[0]; a[0] = a[e]; a[e] = t; sd_sift(a, 0, e); }
}
__device__ __forceinline__ float sd_h2f(unsigned short h) {
  float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short sd_f2h(float f) {
  unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float sd_bf2f(unsigned short h) { return __uint_as_float(((unsigned)h) << 16); }
__device__ __forceinline__ unsigned short sd_f2bf(float f) {  // round to nearest even, NaN stays NaN
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40);
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); }
template <class T> __device__ __forceinline__ T sd_load(const long long* s) { return *(const T*)s; }
template <class T> __device__ __forceinline__ void sd_store(long long* s, T v) { *(T*)s = v; }
"""

_BINOPS = {pyast.Add: "+", pyast.Sub: "-", pyast.Mult: "*", pyast.Div: "/", pyast.FloorDiv: "//",
           pyast.Mod: "%", pyast.Pow: "**", pyast.BitAnd: "&", pyast.BitOr: "|", pyast.BitXor: "^",
           pyast.LShift: "<<", pyast.RShift: ">>"}
_CMPOPS = {pyast.Lt: "<", pyast.LtE: "<=", pyast.Gt: ">", pyast.GtE: ">=", pyast.Eq: "==", pyast.NotEq: "!="}


class Types:
    """Element types of arrays and types of scalars (parameters and inferred locals)."""

    def __init__(self, arrays: dict, scalars: dict, output: L.Output | None = None):
        self.arrays = dict(arrays)  # name -> (dtype, ndim)
        self.scalars = dict(scalars)  # name -> dtype or weak type
        self.output = output or L.Output()  # the function's result: its dense array or entry buffers

    def infer(self, body: list):
        """Locals take the join of every value assigned to them (iterated to a fixed point)."""
        for _ in range(20):
            before = dict(self.scalars)
            for s in _walk(body):
                if isinstance(s, L.Assign) and isinstance(_parse(s.target), pyast.Name):
                    t = self.of(_parse(s.value))
                    if s.target not in self.arrays:
                        self.scalars[s.target] = join(self.scalars.get(s.target), t)
                elif isinstance(s, L.For):
                    t = join(self.of(_parse(s.start)), self.of(_parse(s.stop)))
                    self.scalars[s.var] = join(self.scalars.get(s.var), t)
                elif isinstance(s, L.Alloc):
                    self.arrays[s.var] = (s.dtype, 1)
                elif isinstance(s, L.Emit):
                    self.scalars.setdefault(s.into.count, WEAK_INT)
            if self.scalars == before:
                break
        for name, t in self.scalars.items():
            if t is None or t in (WEAK_INT, WEAK_FLOAT) or _kind(t) in "iu":
                # integer locals are int64, as in numba: positions and sums never overflow int32
                self.scalars[name] = "float64" if t == WEAK_FLOAT else "int64"

    def of(self, e):
        if isinstance(e, pyast.Constant):
            if isinstance(e.value, bool):
                return "bool"
            return WEAK_INT if isinstance(e.value, int) else WEAK_FLOAT
        if isinstance(e, pyast.Name):
            if e.id in ("True", "False"):
                return "bool"
            return self.scalars.get(e.id)
        if isinstance(e, pyast.Attribute):
            return WEAK_FLOAT  # np.inf
        if isinstance(e, pyast.Subscript):
            t = self.arrays[e.value.id][0] if e.value.id in self.arrays else None
            return "float32" if t in HALF else t  # 16-bit floats widen on load: float32 arithmetic
        if isinstance(e, pyast.UnaryOp):
            return "bool" if isinstance(e.op, pyast.Not) else self.of(e.operand)
        if isinstance(e, (pyast.Compare, pyast.BoolOp)):
            if isinstance(e, pyast.BoolOp):
                t = None
                for v in e.values:
                    t = join(t, self.of(v))
                return t
            return "bool"
        if isinstance(e, pyast.IfExp):
            return join(self.of(e.body), self.of(e.orelse))
        if isinstance(e, pyast.BinOp):
            a, b = self.of(e.left), self.of(e.right)
            if a is None or b is None:
                return None
            t = join(a, b)
            if isinstance(e.op, pyast.Div) and _kind(t) in "biu":
                return "float64"
            return t
        if isinstance(e, pyast.Call):
            args = [self.of(a) for a in e.args]
            if any(a is None for a in args):
                return None
            t = None
            for a in args:
                t = join(t, a)
            if e.func.id in FLOAT_FUNCS:
                return t if _kind(t) == "f" else "float64"
            return t
        raise NotImplementedError(f"the CUDA backend cannot type the expression {pyast.unparse(e)!r}")


class CExpr:
    """Prints a Python-syntax expression as C, with the types of ``Types``."""

    def __init__(self, types: Types, shapes: dict):
        self.types = types
        self.shapes = shapes  # array name -> [C expressions of dims 1..ndim-1]
        self.replace: dict = {}  # subscript text -> C code that holds its value (a vector's component)

    def __call__(self, text: str, want=None) -> str:
        code, t = self.expr(_parse(text))
        return self.cast(code, t, want)

    def cast(self, code: str, t, want, strict: bool = False) -> str:
        """``code`` (of type ``t``) as a ``want``; ``strict`` also casts literals (template arguments
        and overloads must match exactly)."""
        # C promotes bool and the narrow integers to int in arithmetic (bool * bool is an int): a
        # template argument of such a type is cast even where the types say it already is one
        promoted = strict and want in ("bool", "int8", "uint8", "int16", "uint16")
        if want is None or t == want and not promoted:
            return code
        if want in HALF:  # a store into 16-bit float storage: compute in float32, round once
            return f"{HALF[want][1]}({self.cast(code, t, 'float32')})"
        want = concrete(want)
        if t == want and not promoted:
            return code
        if not strict and (t == WEAK_INT and _kind(want) in "iuf" or t == WEAK_FLOAT and want == "float64"):
            return code
        return f"(({ctype(want)})({code}))"

    def expr(self, e):
        t = self.types.of(e)
        if isinstance(e, pyast.Constant):
            if isinstance(e.value, bool):
                return ("true" if e.value else "false"), t
            if isinstance(e.value, int):
                return (f"{e.value}LL" if abs(e.value) >= 2**31 else str(e.value)), t
            return repr(float(e.value)), t
        if isinstance(e, pyast.Name):
            return {"True": "true", "False": "false"}.get(e.id, e.id), t
        if isinstance(e, pyast.Attribute):
            if e.attr == "inf":
                return "SD_INF", t
            raise NotImplementedError(f"np.{e.attr} in generated code")
        if isinstance(e, pyast.Subscript):
            if self.replace and pyast.unparse(e) in self.replace:
                return self.replace[pyast.unparse(e)], t
            stored = self.types.arrays.get(e.value.id, (None,))[0]
            return (f"{HALF[stored][0]}({self.subscript(e)})" if stored in HALF else self.subscript(e)), t
        if isinstance(e, pyast.UnaryOp):
            if isinstance(e.op, pyast.Not):
                return f"(!{self.expr(e.operand)[0]})", t
            if isinstance(e.op, pyast.USub) and isinstance(e.operand, pyast.Constant) and e.operand.value == 2**63:
                return "(-9223372036854775807LL - 1)", "int64"
            code, _ = self.expr(e.operand)
            return f"({'-' if isinstance(e.op, pyast.USub) else '+'}{code})", t
        if isinstance(e, pyast.BoolOp):
            op = " && " if isinstance(e.op, pyast.And) else " || "
            return "(" + op.join(self.expr(v)[0] for v in e.values) + ")", t
        if isinstance(e, pyast.Compare):
            parts, left = [], e.left
            for op, right in zip(e.ops, e.comparators):
                tt = join(self.types.of(left), self.types.of(right))
                a, b = self.operand(left, tt), self.operand(right, tt)
                parts.append(f"({a} {_CMPOPS[type(op)]} {b})")
                left = right
            return ("(" + " && ".join(parts) + ")") if len(parts) > 1 else parts[0], t
        if isinstance(e, pyast.IfExp):
            c = self.expr(e.test)[0]
            return f"({c} ? {self.operand(e.body, t)} : {self.operand(e.orelse, t)})", t
        if isinstance(e, pyast.BinOp):
            op = _BINOPS[type(e.op)]
            if op in ("&", "|", "^", "<<", ">>"):
                # C would do a shift in the left operand's own type (``1 << 40`` in int): both
                # operands in the result's concrete integer type, literals included
                t = concrete(t)
                if _kind(t) not in "iub":
                    raise NotImplementedError(f"bitwise {op} on {t} in {pyast.unparse(e)!r}")
                a, b = self.operand(e.left, t, True), self.operand(e.right, t, True)
                return f"({a} {op} {b})", t
            strict = op in ("/", "//", "%", "**")
            a, b = self.operand(e.left, t, strict), self.operand(e.right, t, strict)
            if op == "//":
                return f"sd_floordiv({a}, {b})", t
            if op == "%":
                return f"sd_mod({a}, {b})", t
            if op == "**":
                return f"sd_pow({a}, {b})", t
            return f"({a} {op} {b})", t
        if isinstance(e, pyast.Call):
            fn = e.func.id
            if fn not in L.FUNCTIONS and fn not in L.INTRINSICS:
                raise NotImplementedError(f"function {fn} in generated code")
            args = ", ".join(self.operand(a, t, strict=True) for a in e.args)
            return f"sd_{fn}({args})", t
        raise NotImplementedError(f"the CUDA backend cannot render {pyast.unparse(e)!r}")

    def operand(self, e, t, strict: bool = False) -> str:
        code, own = self.expr(e)
        return self.cast(code, own, t, strict)

    def subscript(self, e) -> str:
        name = e.value.id
        idx = e.slice.elts if isinstance(e.slice, pyast.Tuple) else [e.slice]
        codes = [self.expr(i)[0] for i in idx]
        if len(codes) == 1:
            return f"{name}[{codes[0]}]"
        dims = self.shapes[name]
        lin = codes[0]
        for d, c in zip(dims, codes[1:]):
            lin = f"({lin}) * {d} + {c}"
        return f"{name}[{lin}]"


def combine(op: str, a: str, b: str) -> str:
    """C for combining two partial results ``a`` and ``b`` of a reduction by ``op``."""
    return {"+": f"{a} + {b}", "max": f"sd_max({a}, {b})", "min": f"sd_min({a}, {b})",
            "or": f"{a} || {b}", "and": f"{a} && {b}"}[op]


class CStmts:
    """Prints loop-IR statements as C; ``Emit`` appends to its entry buffers while they have room."""

    def __init__(self, types: Types, cexpr: CExpr, atomic: bool = False):
        self.types, self.c = types, cexpr
        self.n = 0
        self.atomic = atomic  # out[..] += v becomes atomicAdd (iterations run in parallel)
        self.split = None  # (plan.Nested, lanes, width, vector reads): the loop lanes split (KernelSource.nested)

    def fresh(self, stem):
        self.n += 1
        return f"sd_{stem}{self.n}"

    def target_type(self, target: str):
        e = _parse(target)
        if isinstance(e, pyast.Name):
            return self.types.scalars[e.id]
        return self.types.arrays[e.value.id][0]

    def put(self, stmts, ind: int, lines: list):
        pad = "  " * ind
        for s in stmts:
            if isinstance(s, L.For) and self.split is not None and s is self.split[0].inner:
                self.split_loop(s, ind, lines)
            elif isinstance(s, L.For):
                if s.private:
                    raise NotImplementedError("private allocations below the top level")
                i, stop = self.fresh("i"), self.fresh("stop")
                lines.append(f"{pad}{{ const long long {stop} = {self.c(s.stop)};")
                lines.append(f"{pad}for (long long {i} = {self.c(s.start)}; {i} < {stop}; ++{i}) {{")
                lines.append(f"{pad}  {s.var} = {i};")
                self.put(s.body, ind + 1, lines)
                lines.append(f"{pad}}} }}")
            elif isinstance(s, L.While):
                lines.append(f"{pad}while ({self.c(s.cond)}) {{")
                self.put(s.body, ind + 1, lines)
                lines.append(f"{pad}}}")
            elif isinstance(s, L.If):
                lines.append(f"{pad}if ({self.c(s.cond)}) {{")
                self.put(s.then, ind + 1, lines)
                if s.orelse:
                    lines.append(f"{pad}}} else {{")
                    self.put(s.orelse, ind + 1, lines)
                lines.append(f"{pad}}}")
            elif isinstance(s, L.Assign):
                lines.append(pad + self.assign(s))
            elif isinstance(s, L.SortRange):
                lo = self.c(s.start)
                lines.append(f"{pad}sd_sort({s.array} + ({lo}), ({self.c(s.stop)}) - ({lo}));")
            elif isinstance(s, L.Emit):  # counted also past the capacity: the driver reruns with the count
                b = s.into
                lines.append(f"{pad}if ({b.count} < {b.capacity}) {{")
                for buf, c in zip(b.coords, s.coords):
                    lines.append(f"{pad}  {buf}[{b.count}] = {self.c(c, 'int64')};")
                lines.append(f"{pad}  {b.values}[{b.count}] = {self.c(s.value, self.types.arrays[b.values][0])};")
                lines.append(f"{pad}}}")
                lines.append(f"{pad}{b.count} += 1;")
            elif isinstance(s, L.Comment):
                lines.append(f"{pad}// {s.text}")
            else:
                raise NotImplementedError(f"{type(s).__name__} below the top level of a CUDA kernel")

    def split_loop(self, s: L.For, ind: int, lines: list):
        red, lanes, width, reads = self.split
        acc, touched = red.acc, red.touched
        pad = "  " * ind
        i, stop = self.fresh("i"), self.fresh("stop")
        lines.append(f"{pad}{{ const long long {stop} = {self.c(s.stop)};")
        lines.append(f"{pad}for (long long {i} = {self.c(s.start)} + {width} * sd_lane; {i} < {stop}; "
                     f"{i} += {width * lanes}) {{")
        lines.append(f"{pad}  {s.var} = {i};")
        if width == 1:
            self.put(s.body, ind + 1, lines)
        else:  # iterations i .. i + width - 1: one vector load per row read, then the body per component
            vec = {}
            for name, text in reads:
                vt = VECTOR_TYPES[(self.types.arrays[name][0], width)]
                v = vec[text] = self.fresh("v")
                lines.append(f"{pad}  const {vt} {v} = *(const {vt}*)(&{self.c(text)});")
            for c in range(width):
                if c:
                    lines.append(f"{pad}  {s.var} = {i} + {c};")
                self.c.replace = {text: f"{v}.{'xyzw'[c]}" for text, v in vec.items()}
                self.put(s.body, ind + 1, lines)
            self.c.replace = {}
        lines.append(f"{pad}}}")
        acc_t = self.types.scalars[acc]
        ct = ctype(acc_t)
        lines.append(f"{pad}for (int sd_off = {lanes // 2}; sd_off > 0; sd_off >>= 1) {{  // every lane gets the total")
        lines.append(f"{pad}  {ct} sd_o = ({ct})__shfl_xor_sync(sd_gmask, ({'int' if acc_t == 'bool' else ct}){acc}, "
                     f"sd_off, {lanes});")
        lines.append(f"{pad}  {acc} = {combine(red.op, acc, 'sd_o')};")
        if touched and not red.every:
            lines.append(f"{pad}  {touched} = {touched} || (bool)__shfl_xor_sync(sd_gmask, (int){touched}, sd_off, "
                         f"{lanes});")
        lines.append(f"{pad}}}")
        if touched and red.every:  # set by every iteration: it ran iff the loop was not empty, no shuffle needed
            lines.append(f"{pad}if ({self.c(s.start)} < {stop}) {touched} = true;")
        lines.append(f"{pad}}}")

    def assign(self, s: L.Assign) -> str:
        if self.split is not None and isinstance(_parse(s.target), pyast.Subscript):
            return "if (sd_lane == 0) " + self._assign(s)  # the lanes agree: one stores
        return self._assign(s)

    def _assign(self, s: L.Assign) -> str:
        t = self.target_type(s.target)
        if t in HALF:  # 16-bit float storage: read-modify-write through float32
            lv = self.c.subscript(_parse(s.target))
            if s.op is None:
                return f"{lv} = {self.c(s.value, t)};"
            old = f"{HALF[t][0]}({lv})"
            new = {"+": f"{old} + {{v}}", "-": f"{old} - {{v}}", "*": f"{old} * {{v}}",
                   "max": f"sd_max({old}, {{v}})", "min": f"sd_min({old}, {{v}})"}.get(s.op)
            if new is None:
                raise NotImplementedError(f"reduction {s.op!r} into a {t} array")
            return f"{lv} = {HALF[t][1]}({new.format(v=self.c(s.value, 'float32'))});"
        target = self.c(s.target)
        if s.op is None:
            return f"{target} = {self.c(s.value, t)};"
        if s.op == "+" and self.atomic and self.types.output.stores_into(s.target):
            if t in ("int64", "uint64"):  # two's complement: an unsigned add is the signed add
                return f"atomicAdd((unsigned long long*)&{target}, (unsigned long long)({self.c(s.value, t)}));"
            return f"atomicAdd(&{target}, {self.c(s.value, t)});"
        if s.op in ("+", "-", "*"):
            return f"{target} {s.op}= {self.c(s.value, t)};"
        if s.op in ("max", "min"):
            code, own = self.c.expr(_parse(s.value))
            return f"{target} = sd_{s.op}({target}, {self.c.cast(code, own, t, strict=True)});"
        if s.op in ("or", "and"):
            return f"{target} = {target} {'||' if s.op == 'or' else '&&'} {self.c(s.value)};"
        raise NotImplementedError(f"reduction {s.op!r} in the CUDA backend")



INT32_SAFE = 2**31 - 1 - 32

# element types ``__ldcs`` loads (CUDA's overloads; 8- and 16-bit types and 16-bit floats load plainly)
LDCS_TYPES = {"int32", "uint32", "int64", "uint64", "float32", "float64"}


def kernel_name(fn: str, k: int, lanes=1) -> str:
    if isinstance(lanes, tuple):
        return f"{fn}_k{k}_{lanes[0]}" + "x".join(str(v) for v in lanes[1:])
    return f"{fn}_k{k}" + (f"_l{lanes}" if lanes > 1 else "")


def signature(args: dict) -> dict:
    """(kind, dtype, ndim) of each argument: "array" or "scalar". On every call of a kernel, so the
    entry of each (dtype, ndim) / scalar type is computed once (numpy's dtype names are slow)."""
    sig = {}
    for name, v in args.items():
        if getattr(v, "sd_storage", None) == "bfloat16":  # device.BFloat16Array: uint16 bits
            sig[name] = ("array", "bfloat16", max(1, v.ndim))
        elif hasattr(v, "__cuda_array_interface__") or isinstance(v, np.ndarray) and v.ndim > 0:
            sig[name] = _array_entry(v.dtype, v.ndim)
        elif isinstance(v, (bool, int, float, np.bool_, np.integer, np.floating)):
            sig[name] = _scalar_entry(type(v))
        else:
            raise TypeError(f"argument {name}: cannot pass {type(v).__name__} to a CUDA kernel")
    return sig


@functools.cache
def _array_entry(dtype, ndim: int) -> tuple:
    if dtype.kind not in "biuf":
        raise NotImplementedError(f"the CUDA backend does not support dtype {dtype} yet")
    return "array", dtype.name, max(1, ndim)


@functools.cache
def _scalar_entry(tp: type) -> tuple:
    if issubclass(tp, (bool, np.bool_)):
        return "scalar", "bool", 0
    if tp is int:
        return "scalar", "int64", 0
    if tp is float:
        return "scalar", "float64", 0
    return "scalar", np.dtype(tp).name, 0

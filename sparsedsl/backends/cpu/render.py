"""Loop IR as Python source for numba: the generated module's preamble (prefetch, non-temporal
stores, sorting and chunking helpers, NaN-propagating max/min) and ``render`` of one function.
"""

from __future__ import annotations

import ast
import functools
import platform
import sys

import numba

from ... import settings
from ...lang import loopir as L

PREAMBLE = '''\
import numpy as np
from numba import njit, prange, uint64 as u8
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.core import cgutils, types
from numba.extending import intrinsic, overload
from llvmlite import ir

HUGE_PAGES = {huge_pages}
X86 = {x86}


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint that element ``idx`` of arr's data (flat, C order) will be read soon (llvm.prefetch: a
    read, kept in the outer caches)."""
    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        i8p = ir.IntType(8).as_pointer()
        ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
        fnty = ir.FunctionType(ir.VoidType(), [i8p] + [ir.IntType(32)] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr] + [ir.Constant(ir.IntType(32), v) for v in (0, 1, 1)])
        return context.get_dummy_value()
    return types.none(arr, idx), codegen


@intrinsic
def stream_store(typingctx, arr, idx, val):
    """arr[idx] = val as a non-temporal store: the line is written to memory without being read
    first (a dense output streamed out by a parallel loop saves the read of every line it writes)."""
    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        value = context.cast(builder, args[2], signature.args[2], signature.args[0].dtype)
        store = builder.store(value, builder.gep(ary.data, [args[1]]))
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()
    return types.none(arr, idx, val), codegen


@intrinsic
def store_fence(typingctx):
    """Order this thread's non-temporal stores before what follows (sfence on x86, a fence elsewhere)."""
    def codegen(context, builder, signature, args):
        if X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse.sfence")
            builder.call(fn, [])
        else:
            builder.fence("seq_cst")
        return context.get_dummy_value()
    return types.none(), codegen


@intrinsic
def madvise_hugepage(typingctx, start, length):
    """madvise(start, length, MADV_HUGEPAGE), called by symbol name so the machine code stays cacheable."""
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(8).as_pointer(), ir.IntType(64), ir.IntType(32)])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "madvise")
        ptr = builder.inttoptr(args[0], ir.IntType(8).as_pointer())
        return builder.call(fn, [ptr, args[1], ir.Constant(ir.IntType(32), 14)])
    return types.int32(types.uint64, types.uint64), codegen

exp, log, sqrt, sign = np.exp, np.log, np.sqrt, np.sign
sin, cos, tanh, pow = np.sin, np.cos, np.tanh, np.power


@njit(inline="always")
def prefetch_row(a, row):
    """Hint that row ``row`` of a C-contiguous 2-D array will be read soon, a cache line at a time."""
    n = a.shape[1]
    for k in range(0, n, max(64 // a.itemsize, 1)):
        prefetch(a, row * n + k)


@njit(inline="always")
def alloc_written(n, dtype):
    """np.empty(n, dtype) for an array that will be written in full, its pages faulted in here, by
    the one thread that allocates it, and from 4 MB up backed by transparent huge pages, as numpy
    does for its own arrays. Two threads faulting a fresh 156 MB SpGEMM output in a parallel fill
    stalled for 60-110 ms of system time in most interleaved benchmark runs; faulted here first the
    Poisson A*A measured 70-98 ms against scipy's 95-124 ms. Not for workspaces, touched sparsely."""
    a = np.empty(n, dtype)
    nbytes = a.size * a.itemsize
    if HUGE_PAGES and nbytes >= 1 << 22:
        p = np.uint64(a.ctypes.data)
        start = (p + np.uint64(4095)) & ~np.uint64(4095)
        madvise_hugepage(start, ((p + np.uint64(nbytes)) & ~np.uint64(4095)) - start)
    for k in range(0, a.size, max(4096 // a.itemsize, 1)):  # fault the pages in here, in one thread
        a[k] = 0
    return a


def floating(x):
    """x as a float: an integer or boolean as float64, a float as itself (Python engine)."""
    return x if isinstance(x, (float, np.floating)) else np.float64(x)


@overload(floating, inline="always")
def _floating(x):
    if isinstance(x, types.Float):
        return lambda x: x
    return lambda x: np.float64(x)


@njit(inline="always")
def sigmoid(x):
    # an integer is made floating before the negation: -x wraps for uint64 and for int64's minimum
    return 1.0 / (1.0 + np.exp(-floating(x)))


@njit
def sort_range(a, start, stop):
    """Sort a[start:stop] in place: insertion sort for the short runs of a workspace row."""
    if stop - start > 32:
        a[start:stop].sort()
        return
    for i in range(start + 1, stop):
        x = a[i]
        j = i - 1
        while j >= start and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


@njit
def sort_bits(a, start, stop, bits):
    """Sort a[start:stop], whose values have their bits set in ``bits``, and clear those bits: short
    lists by insertion, long ones by scanning the bitset words between their least and greatest."""
    if stop - start <= 32:
        sort_range(a, start, stop)
        for t in range(start, stop):
            bits[u8(a[u8(t)] >> 6)] = 0
        return
    lo, hi = a[u8(start)], a[u8(start)]
    for t in range(start + 1, stop):
        w = a[u8(t)]
        lo = min(lo, w)
        hi = max(hi, w)
    k = start
    for word in range(lo >> 6, (hi >> 6) + 1):
        b = bits[u8(word)]
        if b != 0:
            bits[u8(word)] = 0
            while b != 0:
                a[u8(k)] = (word << 6) + trailing_zeros(b)
                k += 1
                b &= b - 1


@njit
def sort_marked(a, start, stop, marks, stamp, universe):
    """Sort a[start:stop], whose values are the w < universe with marks[w] == stamp: by scanning
    the marks when the list is long against the universe (SpGEMM rows of hub vertices), else by
    sorting."""
    n = stop - start
    if n > 32 and n * 48 > universe:
        k = start
        for w in range(universe):
            if marks[u8(w)] == stamp:
                a[u8(k)] = w
                k += 1
    else:
        sort_range(a, start, stop)


@njit(inline="always")
def chunk_bound(weight, start, stop, chunk, nchunks):
    """Where chunk ``chunk`` of ``nchunks`` begins in [start, stop) when iteration x costs
    weight[x + 1] - weight[x] + 1 (entries plus the row itself)."""
    if chunk >= nchunks:
        return stop
    total = (weight[stop] - weight[start]) + (stop - start)
    target = total * chunk // nchunks
    lo, hi = start, stop
    while lo < hi:
        mid = (lo + hi) // 2
        if (weight[mid] - weight[start]) + (mid - start) < target:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(inline="always")
def max(a, b):  # noqa: A001 - numpy's maximum for the kernels below: a NaN on either side is the result
    return a if (a > b or a != a) else b


@njit(inline="always")
def min(a, b):  # noqa: A001 - numpy's minimum
    return a if (a < b or a != a) else b


from numba import config as _config

if _config.DISABLE_JIT:  # NUMBA_DISABLE_JIT=1: the kernels run as Python (the differential fuzz's fast mode)
    u8 = int

    def prefetch(a, i):
        pass

    def stream_store(a, i, v):
        a.reshape(-1)[i] = v

    def store_fence():
        pass

    def madvise_hugepage(start, length):
        return 0

    def trailing_zeros(b):
        b = int(b)
        return (b & -b).bit_length() - 1
'''

PREAMBLE = PREAMBLE.replace("{huge_pages}", str(sys.platform.startswith("linux")))  # Linux's MADV_HUGEPAGE
PREAMBLE = PREAMBLE.replace("{x86}", str(platform.machine().lower() in ("x86_64", "amd64")))

VERSION = f"numba-{numba.__version__}-py{sys.version_info[0]}.{sys.version_info[1]}"


def render(fn: L.Function, parallel: bool) -> str:
    """Python source of one loop-IR function, decorated for numba."""
    params = fn.params + (["n_threads_"] if parallel else [])  # a global call would defeat numba's cache
    fast = ", fastmath={'reassoc', 'contract'}" if fn.hints.get("reassociate") else ""
    checked = settings.bounds_checked()  # sparsedsl.config(check="bounds"): part of the source, so of the cache key
    lines = [f"@njit(cache=True, parallel={parallel}, error_model='numpy', boundscheck={checked}, nogil=True{fast})",
             f"def {fn.name}({', '.join(params)}):"]
    streamed: dict = {}  # id of a store rendered as stream_store -> the parallel loop's variable

    def put(stmts, ind):
        pad = "    " * ind
        for s in stmts:
            if isinstance(s, L.For) and s.parallel and parallel:
                # one chunk per thread, balanced by the loop's weight array when it has one
                lines.append(f"{pad}_lo0, _hi0 = {_x(s.start)}, {_x(s.stop)}")
                lines.append(f"{pad}_nch = min(n_threads_, max(_hi0 - _lo0, 1))")
                lines.append(f"{pad}for _ch in prange(_nch):")
                if s.weight:
                    lines.append(f"{pad}    _lo = chunk_bound({s.weight}, _lo0, _hi0, _ch, _nch)")
                    lines.append(f"{pad}    _hi = chunk_bound({s.weight}, _lo0, _hi0, _ch + 1, _nch)")
                else:
                    lines.append(f"{pad}    _lo = _lo0 + (_hi0 - _lo0) * _ch // _nch")
                    lines.append(f"{pad}    _hi = _lo0 + (_hi0 - _lo0) * (_ch + 1) // _nch")
                put(s.private, ind + 1)
                lines.append(f"{pad}    for {s.var} in range(_lo, _hi):")
                # a 1-D output written once per iteration (SpMV's out[i] = acc) is streamed out
                outs = [x for x in s.body if isinstance(x, L.Assign) and x.op is None and
                        fn.output.stores_into(x.target) and x.target == f"{fn.output.array}[{s.var}]"]
                streamed.update((id(x), s.var) for x in outs)
                put(s.body or [L.Comment("empty")], ind + 2)
                if outs:
                    lines.append(f"{pad}    store_fence()")
            elif isinstance(s, L.For):
                put(s.private, ind)
                lines.append(f"{pad}for {s.var} in range({_x(s.start)}, {_x(s.stop)}):")
                put(s.body or [L.Comment("empty")], ind + 1)
            elif isinstance(s, L.While):
                lines.append(f"{pad}while {_x(s.cond)}:")
                put(s.body, ind + 1)
            elif isinstance(s, L.If):
                lines.append(f"{pad}if {_x(s.cond)}:")
                put(s.then or [L.Comment("nothing")], ind + 1)
                if s.orelse:
                    lines.append(f"{pad}else:")
                    put(s.orelse, ind + 1)
            elif isinstance(s, L.Assign):
                target, value = _x(s.target), _x(s.value)
                if id(s) in streamed:
                    lines.append(f"{pad}stream_store({fn.output.array}, u8({streamed[id(s)]}), {value})")
                elif s.op is None:
                    lines.append(f"{pad}{target} = {value}")
                elif s.op == "+":
                    lines.append(f"{pad}{target} += {value}")
                elif s.op in ("max", "min"):
                    lines.append(f"{pad}{target} = {s.op}({target}, {value})")
                else:
                    lines.append(f"{pad}{target} = {target} {s.op} {value}")
            elif isinstance(s, L.Alloc):
                if s.written:
                    lines.append(f"{pad}{s.var} = alloc_written({_x(s.shape)}, np.{_np_name(s.dtype)})")
                else:
                    ctor = "np.empty" if s.fill is None else "np.full"
                    fill = "" if s.fill is None else f", {s.fill}"
                    lines.append(f"{pad}{s.var} = {ctor}({_x(s.shape)}{fill}, np.{_np_name(s.dtype)})")
            elif isinstance(s, L.SortRange) and s.bits:
                lines.append(f"{pad}sort_bits({s.array}, {_x(s.start)}, {_x(s.stop)}, {s.bits})")
            elif isinstance(s, L.SortRange) and s.marks:
                lines.append(f"{pad}sort_marked({s.array}, {_x(s.start)}, {_x(s.stop)}, {s.marks}, {s.stamp}, "
                             f"{_x(s.universe)})")
            elif isinstance(s, L.SortRange):
                lines.append(f"{pad}sort_range({s.array}, {_x(s.start)}, {_x(s.stop)})")
            elif isinstance(s, L.Emit):  # append to growable buffers, doubled when full
                b = s.into
                lines.append(f"{pad}if {b.count} == {b.capacity}:")
                lines.append(f"{pad}    {b.capacity} = {b.capacity} * 2 + 16")
                for buf in (*b.coords, b.values):  # a name per buffer: one type per numba variable
                    lines.append(f"{pad}    grown_{buf} = np.empty({b.capacity}, {buf}.dtype)")
                    lines.append(f"{pad}    grown_{buf}[:{b.count}] = {buf}[:{b.count}]")
                    lines.append(f"{pad}    {buf} = grown_{buf}")
                for buf, c in zip(b.coords, s.coords):
                    lines.append(f"{pad}{buf}[{b.count}] = {_x(c)}")
                lines.append(f"{pad}{b.values}[{b.count}] = {_x(s.value)}")
                lines.append(f"{pad}{b.count} += 1")
            elif isinstance(s, L.Prefetch):
                ahead = f"min({s.pos} + {s.distance}, {s.crd}.shape[0] - 1)"
                if s.when:  # loop-invariant: LLVM keeps a copy of the loop without the hint
                    lines.append(f"{pad}if {s.when}:")
                lines.append(f"{pad}{'    ' if s.when else ''}prefetch{'_row' if s.row else ''}({s.array}, "
                             f"{s.crd}[u8({ahead})])")
            elif isinstance(s, L.Comment):
                lines.append(f"{pad}pass  # {s.text}" if s.text in ("empty", "nothing") else f"{pad}# {s.text}")
            elif isinstance(s, L.Return):
                lines.append(f"{pad}return ({', '.join(s.values)},)")

    put(fn.body, 1)
    if fn.body and isinstance(fn.body[-1], L.Return):
        pass
    elif fn.output.entries is not None:
        b = fn.output.entries
        lines.append(f"    return ({''.join(f'{buf}[:{b.count}], ' for buf in (*b.coords, b.values))})")
    else:
        lines.append(f"    return {fn.output.array}")
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=4096)
def _x(expr: str) -> str:
    """``expr`` with every array subscript cast to uint64. Subscripts are never negative (tensors
    are validated when built), and an unsigned index spares numba its negative-index wraparound
    test, which otherwise halves the speed of gather loops such as SpMV's."""

    class Unsigned(ast.NodeTransformer):
        def visit_Subscript(self, node):
            self.generic_visit(node)
            parts = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            if any(isinstance(p, ast.Slice) for p in parts):
                return node
            wrapped = [ast.Call(ast.Name("u8", ast.Load()), [p], []) for p in parts]
            node.slice = ast.Tuple(wrapped, ast.Load()) if len(wrapped) > 1 else wrapped[0]
            return node

    return ast.unparse(Unsigned().visit(ast.parse(expr, mode="eval")))


def _np_name(dtype: str) -> str:
    return {"bool": "bool_"}.get(dtype, dtype)


_walk = L.walk  # (loopir's one walker)

"""Templates the CUDA renderer picks for loop-IR shapes that its generic kernels run badly.

``skinny_shape`` recognises a weight matrix in an ``nm(2, M)`` (M a multiple of 4) or ``bitmap`` level
times a few dense columns (``Y[i,n] = W[i,j] * X[j,n]``, the decode step of an LLM: Flash-LLM,
"Flash-LLM: Enabling Cost-Effective and Highly-Efficient Large Generative Model Inference with
Unstructured Sparsity", 2023; Mustafar, 2025) in the lowered loop nest of one parallel row loop::

    for i (parallel):  head                      # the row's position (a0_0_q = i)
      for n in [0, C):  acc = 0
        nm:      for g in [0, G): for s in [0, N): q = (first + g)*N + s; k = (meta[first + g] >> s*bits) & ones
                   if k < M: j = g*M + k; acc += W[q] * X[j, n]
        bitmap:  q = pos[p]; for w in [0, ceil(D / 32)): b = mask[base + w]
                   while b != 0: j = w*32 + trailing_zeros(b); acc += W[q] * X[j, n]; q += 1; b &= b - 1
      out[i, n] = acc

and renders it "load compressed, compute dense": a warp owns 16 or 32 rows (one or two m16 tiles, ``CONFIG``),
each lane loads one or two 16-byte vectors of values (8 slots each) and their in-group indices (or a
32-bit mask word, the values through a window in shared memory: ``_bitmap_main``) per row, a chunk ahead of
its use (register double buffering; a ``cp.async`` ring through shared memory measured 5-10% slower
on an H100), expands them into the dense
A fragment of a tensor-core ``mma.m16n8k16`` (float32 accumulation), and takes X's fragment from
L1/L2. The k order inside an mma is free, so lane ``t`` of a quad of lanes gives its four k slots
to four consecutive columns of the row (one 2:4 group): its values stay contiguous and load as one
16-byte vector. Warps of a block split the row's columns (split-K) and add their parts through
shared memory. Bitmap weights on a GPU with thread-block clusters (Hopper) take another split
(``render_bitmap_cluster``): the warps of a block take different rows and the same columns, X's rows
of those columns staged once in shared memory for all of them (``ldmatrix``), and the blocks of a
cluster split the columns and add their parts through distributed shared memory. Everything the
template needs (array names, N, M, the slot and row-offset expressions, the output store) is read
from the IR; the launch falls back to the generic kernel when a run-time condition (C a multiple of
16 up to 64, alignment, row length) does not hold.
"""

from __future__ import annotations

import ast as pyast
import random
from dataclasses import dataclass

from ....lang import loopir as L

HALF_MMA = {"float16": "f16", "bfloat16": "bf16"}


def _p(text):
    return pyast.parse(text, mode="eval").body


def _names(text) -> set:
    return {n.id for n in pyast.walk(_p(text)) if isinstance(n, pyast.Name)}


def _int(text):
    e = _p(text)
    return e.value if isinstance(e, pyast.Constant) and isinstance(e.value, int) else None


def _sub(text: str, values: dict) -> str:
    """``text`` with names replaced by expressions."""
    class T(pyast.NodeTransformer):
        def visit_Name(self, n):
            return _p(f"({values[n.id]})") if n.id in values else n
    return pyast.unparse(T().visit(_p(text)))


def _eval(text: str, env: dict):
    return eval(compile(text, "<sd>", "eval"), {"__builtins__": {}, "min": min, "max": max}, dict(env))  # noqa: S307


@dataclass
class Skinny:
    kind: str  # "nm" or "bitmap"
    row: str  # the row loop's variable
    head: list  # statements that give the row's position
    col: str  # the dense column loop's variable
    ncols: str  # its trip count (starts at 0)
    values: str  # W's values array
    dense: str  # X
    store: L.Assign  # out[row, col] = acc
    extent: str  # columns per row (nm: groups * M; bitmap: D)
    # nm
    crd: str = ""
    n: int = 0
    m: int = 0
    groups: str = ""
    slot0: str = ""  # the row's first slot (q at g = s = 0)
    # bitmap
    mask: str = ""
    mask0: str = ""  # the row's first mask word
    pos0: str = ""  # the row's first packed value
    pos1: str = ""  # one past its last


def _product(value: str, col: str, coord: str):
    """(W, q expression, X) for ``W[q] * X[coord, col]`` (either order), else None."""
    e = _p(value)
    if not (isinstance(e, pyast.BinOp) and isinstance(e.op, pyast.Mult)):
        return None
    for w, x in ((e.left, e.right), (e.right, e.left)):
        if isinstance(w, pyast.Subscript) and isinstance(x, pyast.Subscript) and isinstance(x.slice, pyast.Tuple) \
                and [pyast.unparse(i) for i in x.slice.elts] == [coord, col] and not isinstance(w.slice, pyast.Tuple):
            return w.value.id, pyast.unparse(w.slice), x.value.id
    return None


def skinny_shape(loop: L.For, arrays: dict):
    """The ``Skinny`` description of a parallel row loop in the shape above, else why not. ``arrays``:
    name -> (dtype, ndim) of the kernel's arrays (W and X must hold the same 16-bit float)."""
    if not loop.parallel or loop.private or not loop.body or not isinstance(loop.body[-1], L.For):
        return "not a parallel row loop (without private state) ending in a loop over the output's columns"
    head, cl = loop.body[:-1], loop.body[-1]
    if any(not (isinstance(s, L.Assign) and s.op is None and isinstance(_p(s.target), pyast.Name)) for s in head):
        return "the row loop's head is not plain scalar assignments"
    hv = {s.target for s in head} | {loop.var}
    if cl.start != "0" or cl.private or _names(cl.stop) & hv or len(cl.body) < 3:
        return 'the column loop does not start at 0, has private state, depends on the row, or has no reduction'
    init, store = cl.body[0], cl.body[-1]
    if not (isinstance(init, L.Assign) and init.target == "acc" and init.op is None and _p(init.value).__class__
            is pyast.Constant and float(_p(init.value).value) == 0.0):
        return 'the column loop does not start with a sum initialised to 0 (an explicit scalar reduction)'
    t = _p(store.target) if isinstance(store, L.Assign) else None
    if not (isinstance(t, pyast.Subscript) and t.value.id == "out" and store.op is None and store.value == "acc"
            and isinstance(t.slice, pyast.Tuple) and [pyast.unparse(i) for i in t.slice.elts] == [loop.var, cl.var]):
        return 'the column loop does not end by storing its sum at out[row, column]'
    nest = cl.body[1:-1]
    found = _nm(loop, head, cl, nest, store)
    if isinstance(found, str):
        bitmap = _bitmap(loop, head, cl, nest, store)
        found = bitmap if isinstance(bitmap, Skinny) else f"the weight level's loop is neither ({found}) nor ({bitmap})"
    if isinstance(found, str):
        return found
    w, x = arrays.get(found.values, (None, 0)), arrays.get(found.dense, (None, 0))
    if w[0] not in HALF_MMA or w[0] != x[0] or x[1] != 2 or found.values == "out":
        return (f"the weights ({w[0]}) and the dense columns ({x[0]}, {x[1]}-d) are not one 16-bit float type "
                f"with 2-d columns (the tensor cores' inputs)")
    return found


def _nm(loop, head, cl, nest, store):
    """The N:M level's sum (levels/nm.py): for each group g and slot s, the slot's value position q,
    its in-group index k unpacked from the group's word, and ``if k < M: acc += W[q] * X[g*M + k, n]``."""
    if len(nest) != 1 or not isinstance(nest[0], L.For) or nest[0].start != "0":
        return 'N:M: not a single group loop from 0 inside the column loop'
    gl = nest[0]
    if len(gl.body) != 1 or not isinstance(gl.body[0], L.For) or gl.body[0].start != "0":
        return 'N:M: the group loop does not hold one slot loop from 0'
    sl = gl.body[0]
    n = _int(sl.stop)
    b = sl.body
    if n is None or len(b) != 3 or not all(isinstance(x, L.Assign) and x.op is None for x in b[:2]) \
            or not isinstance(b[2], L.If) or b[2].orelse:
        return 'N:M: the slot loop is not (slot position, in-group index, guarded product)'
    q, k = b[0].target, b[1].target
    kv = _p(b[1].value)  # (meta[word] >> shift) & ones
    if not (isinstance(kv, pyast.BinOp) and isinstance(kv.op, pyast.BitAnd) and isinstance(kv.left, pyast.BinOp)
            and isinstance(kv.left.op, pyast.RShift) and isinstance(kv.left.left, pyast.Subscript)
            and isinstance(kv.left.left.value, pyast.Name)):
        return 'N:M: the in-group index is not unpacked from a meta word as (meta[word] >> shift) & ones'
    meta, word, shift, ones = (kv.left.left.value.id, pyast.unparse(kv.left.left.slice), pyast.unparse(kv.left.right),
                               _int(pyast.unparse(kv.right)))
    cond = _p(b[2].cond)
    if not (isinstance(cond, pyast.Compare) and pyast.unparse(cond.left) == k and isinstance(cond.ops[0], pyast.Lt)):
        return "N:M: the guard is not 'in-group index < M'"
    m = _int(pyast.unparse(cond.comparators[0]))
    then = b[2].then
    if m is None or m % 4 or n != 2 or len(then) != 2 or then[0].op is not None or then[1].target != "acc" \
            or then[1].op != "+" or ones != (1 << m.bit_length()) - 1 or n * m.bit_length() > 8:
        return ("N:M: not N=2 with M a multiple of 4 and a group's meta in one byte (the template reads a byte "
                "per group), or the product does not add into the sum")
    j = then[0].target
    prod = _product(then[1].value, cl.var, j)
    if prod is None or prod[1] != q:
        return 'N:M: the product is not W[slot] * X[coordinate, column]'
    # the slot is (first + g)*N + s, the group's word first + g, the field s*bits, the coordinate g*M + k,
    # every row's first slot a multiple of its slot count: checked at a few points (the lowering's
    # spelling is not relied on)
    names = (_names(b[0].value) | _names(word) | _names(gl.stop)) - {gl.var, sl.var}
    rng = random.Random(0)
    for _ in range(4):
        env = {v: rng.randrange(1, 40) * m * 8 for v in names}
        groups = _eval(gl.stop, env)
        g, s = rng.randrange(0, 50), rng.randrange(0, n)
        at = {**env, gl.var: g, sl.var: s}
        base = _eval(_sub(b[0].value, {gl.var: "0", sl.var: "0"}), env)
        if _eval(b[0].value, at) != base + g * n + s or (groups and base % (groups * n)) or \
                _eval(word, at) * n != base + g * n or _eval(shift, at) != s * m.bit_length():
            return 'N:M: the slot, word, shift or row offsets do not follow (first + g)*N + s, first + g, s*bits'
        if _eval(then[0].value, {gl.var: g, k: 3}) != g * m + 3:
            return 'N:M: the coordinate is not g*M + in-group index'
    return Skinny("nm", loop.var, head, cl.var, cl.stop, prod[0], prod[2], store, f"({gl.stop}) * {m}",
                  crd=meta, n=n, m=m, groups=gl.stop, slot0=_sub(b[0].value, {gl.var: "0", sl.var: "0"}))


def _bitmap(loop, head, cl, nest, store):
    """The bitmap level's sum, a mask word at a time and a set bit at a time (levels/bitmap.py)::

        q = pos[p]
        for w in [0, (D + 31) // 32):
          b = mask[base + w]
          while b != 0: j = w * 32 + trailing_zeros(b); acc += W[q] * X[j, n]; q += 1; b = b & (b - 1)
    """
    if len(nest) != 2 or not (isinstance(nest[0], L.Assign) and nest[0].op is None and isinstance(nest[1], L.For)):
        return 'bitmap: not (value position; loop over mask words) inside the column loop'
    pre, wl = nest
    q, pv, stop = pre.target, _p(pre.value), _p(wl.stop)
    if not (isinstance(pv, pyast.Subscript) and isinstance(pv.value, pyast.Name) and isinstance(_p(q), pyast.Name)):
        return 'bitmap: the value position is not read from a pos array'
    # the trip count (D + 31) // 32: the template needs D itself (X has D rows)
    if not (wl.start == "0" and not wl.private and isinstance(stop, pyast.BinOp) and isinstance(stop.op, pyast.FloorDiv)
            and _int(pyast.unparse(stop.right)) == 32 and isinstance(stop.left, pyast.BinOp)
            and isinstance(stop.left.op, pyast.Add) and _int(pyast.unparse(stop.left.right)) == 31):
        return "bitmap: the word loop's trip count is not (D + 31) // 32"
    extent, w = pyast.unparse(stop.left.left), wl.var
    if len(wl.body) != 2 or not isinstance(wl.body[0], L.Assign) or wl.body[0].op is not None \
            or not isinstance(wl.body[1], L.While):
        return 'bitmap: the word loop is not (load a mask word; loop over its set bits)'
    ld, loop_bits = wl.body
    b, mv = ld.target, _p(ld.value)
    if not (isinstance(mv, pyast.Subscript) and isinstance(mv.value, pyast.Name)):
        return 'bitmap: the mask word is not read as mask[base + w]'
    if isinstance(mv.slice, pyast.Name) and mv.slice.id == w:
        word0 = "0"
    elif isinstance(mv.slice, pyast.BinOp) and isinstance(mv.slice.op, pyast.Add) and \
            pyast.unparse(mv.slice.right) == w and w not in _names(pyast.unparse(mv.slice.left)):
        word0 = pyast.unparse(mv.slice.left)
    else:
        return 'bitmap: the set-bit loop is not (j = w*32 + trailing_zeros(b); sum += ...; q += 1; b &= b - 1)'
    body = loop_bits.body

    def same(x, text):
        return pyast.unparse(_p(x)) == pyast.unparse(_p(text))

    if not (same(loop_bits.cond, f"{b} != 0") and len(body) == 4 and all(isinstance(x, L.Assign) for x in body)):
        return 'bitmap: the set-bit loop is not (j = w*32 + trailing_zeros(b); sum += ...; q += 1; b &= b - 1)'
    sj, sacc, sq, sb = body
    if not (sj.op is None and same(sj.value, f"{w} * 32 + trailing_zeros({b})") and sacc.target == "acc"
            and sacc.op == "+" and sq.target == q and sq.op == "+" and sq.value == "1" and sb.target == b
            and sb.op is None and same(sb.value, f"{b} & ({b} - 1)")):
        return 'bitmap: the set-bit loop is not (j = w*32 + trailing_zeros(b); sum += ...; q += 1; b &= b - 1)'
    prod = _product(sacc.value, cl.var, sj.target)
    if prod is None or prod[1] != q or mv.value.id in (prod[0], prod[2]):
        return 'bitmap: the product is not W[q] * X[j, column]'
    # the row's values end where the next row's begin: pos[p + 1]
    pos_end = pyast.unparse(pyast.Subscript(pv.value, _p(f"({pyast.unparse(pv.slice)}) + 1")))
    return Skinny("bitmap", loop.var, head, cl.var, cl.stop, prod[0], prod[2], store, extent,
                  mask=mv.value.id, mask0=word0, pos0=pre.value, pos1=pos_end)



def _walk(stmts):
    return L.walk(stmts, private=False)


# ---- rendering --------------------------------------------------------------------------------

MMA = r"""
__device__ __forceinline__ void sd_mma_{T}(float* c, unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                          unsigned b0, unsigned b1) {{
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.{T}.{T}.f32 {{%0,%1,%2,%3}}, {{%4,%5,%6,%7}}, {{%8,%9}}, "
               "{{%0,%1,%2,%3}};" : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}}
"""


# ``prmt`` itself: ``__byte_perm`` masks its selector with 0x7777 first (one more instruction per
# permute; the bitmap expansion's selectors never set a nibble's top bit, sign replication).
PRMT = r"""
__device__ __forceinline__ unsigned sd_prmt(unsigned a, unsigned b, unsigned s) {
  unsigned d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(s));
  return d;
}
"""


# The template's knobs per (level kind, M; 0 for bitmap): m16 tiles per warp (they share X's fragments;
# more tiles, more registers), blocks per SM asked of the register allocator, N:M slots per lane and
# row in a chunk (bitmap: one 32-bit mask word, fixed), warps per block (None: as many as fill the GPU, <= 8).
# Chosen by the sweep of benchmarks/gpu.py on an H100 (benchmarks/results/gpu-h100.json, skinny_sweep).
CONFIG = {("nm", 4): (1, 2, 16, 4), ("nm", 8): (2, 2, 8, 4), ("bitmap", 0): (1, 2, 16, None)}
DEFAULT = (1, 2, 8, None)


def config(sk: Skinny) -> tuple:
    """(m tiles, min blocks, slots, warps per block or None) for this weight level; bitmap weights
    take one m16 tile per warp (their value windows fill the static shared memory)."""
    cfg = CONFIG.get((sk.kind, sk.m if sk.kind == "nm" else 0), DEFAULT)
    return cfg if sk.kind == "nm" else (1, *cfg[1:])


def splitk_limit(nt: int, mtiles: int) -> int:
    """Warps per block (<= 8) whose partial sums fit 48 KiB of static shared memory."""
    return max(1, min(8, 12288 // (16 * mtiles * (16 * nt + 1))))

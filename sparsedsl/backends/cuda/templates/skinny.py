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
template needs of the weights (array names, N, M, the slot and row-offset expressions) it reads from
the ``Iteration`` the level declared on its loop (``loopir.Iteration``: "nm_groups", "bitmap_words"),
not from the text of the level's loop; the launch falls back to the generic kernel when a run-time
condition (C a multiple of 16 up to 64, alignment, row length) does not hold.
"""

from __future__ import annotations

import ast as pyast
from dataclasses import dataclass

from ....lang import loopir as L

HALF_MMA = {"float16": "f16", "bfloat16": "bf16"}


def _p(text):
    return pyast.parse(text, mode="eval").body


def _names(text) -> set:
    return {n.id for n in pyast.walk(_p(text)) if isinstance(n, pyast.Name)}





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
    acc: str  # the column loop's accumulator (its Reduce statements' target)
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


def skinny_shape(loop: L.For, arrays: dict, output: L.Output):
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
    if not (isinstance(init, L.Reduce) and init.op is None and _p(init.value).__class__
            is pyast.Constant and float(_p(init.value).value) == 0.0):
        return 'the column loop does not start with a sum initialised to 0 (an explicit scalar reduction)'
    t = _p(store.target) if isinstance(store, L.Assign) else None
    if not (t is not None and output.stores_into(store.target) and store.op is None and store.value == init.target
            and isinstance(t.slice, pyast.Tuple) and [pyast.unparse(i) for i in t.slice.elts] == [loop.var, cl.var]):
        return 'the column loop does not end by storing its sum at out[row, column]'
    nest = cl.body[1:-1]
    found = _nm(loop, head, cl, nest, store, init.target)
    if isinstance(found, str):
        bitmap = _bitmap(loop, head, cl, nest, store, init.target)
        found = bitmap if isinstance(bitmap, Skinny) else f"the weight level's loop is neither ({found}) nor ({bitmap})"
    if isinstance(found, str):
        return found
    w, x = arrays.get(found.values, (None, 0)), arrays.get(found.dense, (None, 0))
    if w[0] not in HALF_MMA or w[0] != x[0] or x[1] != 2 or found.values == output.array:
        return (f"the weights ({w[0]}) and the dense columns ({x[0]}, {x[1]}-d) are not one 16-bit float type "
                f"with 2-d columns (the tensor cores' inputs)")
    return found


def _accumulation(walk: L.For, acc: str):
    """The one statement of a level's walk that is not the level's own (its ``Iteration.own``), when
    that is ``acc += product``; else why not."""
    inside = list(L.walk(walk.body))
    adds = [s for s in inside if isinstance(s, L.Reduce) and s.target == acc]
    if len(inside) != walk.iteration.own + 1 or len(adds) != 1 or adds[0].op != "+":
        return (f"{walk.iteration.kind}: the walk's body is not one sum (acc += W[q] * X[j, column]): it holds "
                f"{len(inside) - walk.iteration.own} statements of its own")
    return adds[0]


def _nm(loop, head, cl, nest, store, acc):
    """The N:M level's sum (levels/nm.py), as its ``nm_groups`` iteration declares it: for each group g
    and slot s, the slot's value position, its in-group index unpacked from the group's meta word, and
    ``if k < M: acc += W[q] * X[g*M + k, n]``."""
    walk = nest[0] if len(nest) == 1 and isinstance(nest[0], L.For) else None
    it = walk.iteration if walk is not None else None
    if it is None or it.kind != "nm_groups":
        return "N:M: the column loop holds no walk of N:M groups (no nm_groups iteration declared by a level)"
    n, m, bits = it.field("n"), it.field("m"), it.field("bits")
    if n != 2 or m % 4 or bits != m.bit_length() or n * bits > 8:  # it reads one byte of meta per group
        return (f"N:M: {n}:{m} with {bits}-bit in-group indices; the template needs N=2, M a multiple of 4, "
                f"{m.bit_length()}-bit indices and a group's meta in one byte")
    term = _accumulation(walk, acc)
    if isinstance(term, str):
        return term
    prod = _product(term.value, cl.var, it.field("coordinate"))
    if prod is None or prod[1] != it.field("position"):
        return "N:M: the product is not W[slot] * X[coordinate, column]"
    return Skinny("nm", loop.var, head, cl.var, cl.stop, prod[0], prod[2], store, acc,
                  f"({it.field('groups')}) * {m}",
                  crd=it.field("meta"), n=n, m=m, groups=it.field("groups"), slot0=it.field("slot0"))


def _bitmap(loop, head, cl, nest, store, acc):
    """The bitmap level's sum (levels/bitmap.py), as its ``bitmap_words`` iteration declares it: the
    row's values from ``pos[p]``, its mask words from ``word0``, a set bit at a time::

        q = pos[p]
        for w in [0, (D + 31) // 32): b = mask[word0 + w]
          while b != 0: j = w*32 + trailing_zeros(b); acc += W[q] * X[j, n]; q += 1; b &= b - 1
    """
    walk = nest[1] if len(nest) == 2 and isinstance(nest[1], L.For) else None
    it = walk.iteration if walk is not None else None
    if it is not None and not (isinstance(nest[0], L.Assign) and nest[0].target == it.field("position")
                               and nest[0].value == it.field("values0")):
        return "bitmap: the walk's value position is not set to the row's first value before it"
    if it is None or it.kind != "bitmap_words":
        return "bitmap: the column loop holds no walk of mask words (no bitmap_words iteration declared by a level)"
    if it.field("bits") != 32:
        return f"bitmap: {it.field('bits')}-bit mask words; the template reads 32-bit words"
    term = _accumulation(walk, acc)
    if isinstance(term, str):
        return term
    prod = _product(term.value, cl.var, it.field("coordinate"))
    if prod is None or prod[1] != it.field("position") or it.field("mask") in (prod[0], prod[2]):
        return "bitmap: the product is not W[q] * X[j, column]"
    return Skinny("bitmap", loop.var, head, cl.var, cl.stop, prod[0], prod[2], store, acc, it.field("extent"),
                  mask=it.field("mask"), mask0=it.field("word0"), pos0=it.field("values0"),
                  pos1=it.field("values1"))

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

"""The SpGEMM schedule of the CUDA backend: each output row assembled in a hash table in shared memory.

``spgemm_shape`` recognises the row loop of either pass of the two-phase sparse-output assembly that
the lowering writes for a product contracted through a workspace (Gustavson's row-by-row SpGEMM,
``C[i,j] = A[i,k] * B[k,j]`` with CSR A, B and C)::

    for i (parallel; private: flags F, list L, [values V], gen = 0):
      head                                  # cnt = 0 (count) / oq = offs[i] (fill); A's row position
      gen += 1; n = 0
      for pa in A's row:  a_pre             # k = A.crd[pa]; B's row position
        for pb in B's row k:  b_pre         # j = B.crd[pb]; w = j
          if F[w] != gen: F[w] = gen; L[n] = w; n += 1  [; V[w] = val]
          [else: V[w] += val]
      [sort L[0:n)]
      for t in [0, n):  tail                # count: cnt += 1; fill: out_c1[oq] = L[t]; out_v[oq] = V[L[t]]; oq += 1
      post                                  # count: counts[i] = cnt

and renders it as the GPU SpGEMM papers do (nsparse: Nagasaka et al., "High-performance and
Memory-saving Sparse General Matrix-Matrix Multiplication for NVIDIA Pascal GPU", ICPP 2017; spECK:
Parger et al., "spECK: Accelerating GPU Sparse Matrix-Matrix Multiplication through Lightweight
Analysis", PPoPP 2020): rows are binned by their upper bound ``ub`` (the sum of the lengths of the B
rows that A's row selects; it bounds the row's output entries), and

- ``warp``: a warp per row with ``ub <= WARP_UB`` (one launch over all rows; longer rows are put on
  two lists). The row's products are spread evenly over the lanes (a warp scan of the B row lengths
  of 32 A entries at a time, then a binary search per product), their keys ``w`` inserted into an
  open-addressing table (Fibonacci hash, linear probing, ``atomicCAS``) of the smallest power of
  two >= 2 ub slots, the values added with ``atomicAdd``;
- ``block``: a block per row with ``ub <= BLOCK_UB``, the same code over a table in dynamic shared
  memory, in four bins by ``ub`` (tables of 2048..16384 slots, at most ``TABLE_BYTES``; rows of a bin
  whose table does not fit go to the global kernel). The products are spread over the whole block
  (a block scan of the B row lengths of up to ``threads`` A entries at a time, a binary
  search per product): such rows often have a few A entries with long B rows, which a warp per 32 A
  entries left to one or two warps while the others waited at the barrier;
- ``global``: a block per longer row over a bitmap of the columns in shared memory (a window of
  ``BITMAP_WORDS`` words at a time, the products re-read per window when the columns do not fit) and
  the values dense in global memory (zeroed again as they are read), read back in column order.

The count pass counts the keys a row inserted. The fill pass ranks each key among the row's keys
(so the row comes out sorted: canonical CSR, like the CPU path and scipy) and runs the tail's body for
the entry of rank ``t``, with the tail's counters (``oq += 1``) advanced ``t`` times. Warp: the table
compacted, a key's rank by comparing it with the others. The block kernels of ``ORDER_BINS`` when the columns fit
``ORDER_WORDS`` words: no sort; the insertion also sets the key's bit in a bitmap of the columns in
static shared memory, and each warp walks its run of the bitmap a word a lane, ranks the set bits by
a scan of their counts and looks each value up in the hash table (stores of a warp land on a few
consecutive entries). Other block kernels: the table compacted and bitonic-sorted. Every piece of
code inside (bounds, positions, the key, the value, the stores) is the loop IR's, printed by the
renderer; the lists, the launch and the global workspace are the backend's
(``runtime.Specialised.spgemm_launch``). The sums are in a different order than on the CPU
(atomics), so float results agree to rounding.
"""

from __future__ import annotations

import ast as pyast
from dataclasses import dataclass

from ....lang import loopir as L
from ..plan import ATOMIC_DTYPES, _assigned, _exprs, _names, _parse, _walk

WARP_UB = 256  # rows whose products fit a warp's table (512 slots) at half load
BLOCK_UB = 8192  # rows whose products fit a block's table (16,384 slots, dynamic shared memory) at half load
BLOCK_BINS = 4  # block bins: upper bounds <= 1024 << b, tables of 2048 << b slots (b < BLOCK_BINS)
LISTS = BLOCK_BINS + 1  # the row lists the warp kernel fills: the block bins, then the global one
HEAD = 8  # ints before the lists in the list array (their lengths)
WARPS = 4  # warps (rows) per block of the warp kernel
BLOCK = 256  # threads of the block and global kernels (unless the launch names more)
BIN_THREADS = (256, 256, 512, 1024)  # threads of block bin b's kernel (bins 0 and 1 share one: 128 for bin 0
# was 2% slower on the H100 power-law product once its rows were ordered by the bitmap)
GLOBAL_THREADS = 1024  # threads of the global kernel: its few rows are the longest
BITMAP_WORDS = 32768  # the global kernel's window of columns: 2^20 bits of shared memory (128 KiB)
TABLE_BYTES = 128 << 10  # the largest block table (keys and values) in dynamic shared memory
ORDER_WORDS = 4096  # the block kernels' fill pass: a bit per column in static shared memory (2^17 columns)
ORDER_BINS = (0, 1, 2, 3)  # the block bins that have it (a kernel shared by two bins has it for both)


def table_slots(b: int) -> int:
    """The table size (slots) of block bin ``b``."""
    return 2048 << b


def order_threads() -> set:
    """The thread counts of the block kernels whose fill pass orders its rows by a bitmap."""
    return {BIN_THREADS[b] for b in ORDER_BINS}


@dataclass
class SpGEMM:
    row: L.For  # the parallel row loop
    head: list  # the row's own statements (the workspace's bookkeeping taken out)
    a_loop: L.For
    a_pre: list
    b_loop: L.For
    b_pre: list
    key: str  # the workspace index (a name)
    value: str | None  # the value added per product (None: the count pass)
    flags: str
    lst: str
    vals: str | None
    n: str
    tail: L.For
    carried: dict  # scalar -> its constant increment per tail iteration
    post: list
    stores: bool  # the tail stores per entry (the fill pass): needs the sorted entries
    wsize: str  # the workspace's size (the flags' allocation)

    def same_rows(self, other) -> bool:
        """Whether ``other`` walks the same rows and products (the count and fill passes): its bins
        can be reused."""
        def key(s):
            return (s.row.start, s.row.stop, s.a_loop.start, s.a_loop.stop, s.b_loop.start, s.b_loop.stop)
        return other is not None and key(self) == key(other)


def _plain(s) -> bool:
    return isinstance(s, L.Assign) and s.op is None and isinstance(_parse(s.target), pyast.Name)


def _sub(text):
    """(array, index text) of a subscript expression, else None."""
    e = _parse(text)
    if isinstance(e, pyast.Subscript) and isinstance(e.value, pyast.Name) and not isinstance(e.slice, pyast.Tuple):
        return e.value.id, pyast.unparse(e.slice)
    return None


def spgemm_shape(loop: L.For, arrays: dict):
    """The ``SpGEMM`` description of a parallel row loop in the shape above, else None. ``arrays``:
    name -> (dtype, ndim)."""
    if not loop.parallel or not loop.private:
        return None
    allocs = {a.var: a for a in loop.private if isinstance(a, L.Alloc)}
    pscal = [a for a in loop.private if not isinstance(a, L.Alloc)]
    if len(pscal) != 1 or not _plain(pscal[0]) or pscal[0].value != "0":
        return None
    gen = pscal[0].target
    fors = [k for k, s in enumerate(loop.body) if isinstance(s, L.For)]
    if len(fors) != 2:
        return None
    head, a_loop = loop.body[:fors[0]], loop.body[fors[0]]
    rest = loop.body[fors[0] + 1:]
    if a_loop.private or not a_loop.body or not isinstance(a_loop.body[-1], L.For):
        return None
    a_pre, b_loop = a_loop.body[:-1], a_loop.body[-1]
    if b_loop.private or not b_loop.body or not isinstance(b_loop.body[-1], L.If):
        return None
    b_pre, branch = b_loop.body[:-1], b_loop.body[-1]
    if not all(_plain(s) for s in a_pre + b_pre):
        return None
    # the insertion: if F[w] != gen: F[w] = gen; L[n] = w; n += 1; [V[w] = val] else [V[w] += val]
    cond = _parse(branch.cond)
    if not (isinstance(cond, pyast.Compare) and len(cond.ops) == 1 and isinstance(cond.ops[0], pyast.NotEq)
            and pyast.unparse(cond.comparators[0]) == gen and _sub(pyast.unparse(cond.left))):
        return None
    flags, key = _sub(pyast.unparse(cond.left))
    if flags not in allocs or not isinstance(_parse(key), pyast.Name):
        return None
    then = {s.target: s for s in branch.then if isinstance(s, L.Assign)}
    if len(then) != len(branch.then) or then.get(f"{flags}[{key}]") != L.Assign(f"{flags}[{key}]", gen):
        return None
    listed = [s for s in branch.then if _sub(s.target) and _sub(s.target)[1] != key]
    if len(listed) != 1 or listed[0].op is not None or listed[0].value != key:
        return None
    lst, n = _sub(listed[0].target)
    if lst not in allocs or then.get(n) != L.Assign(n, "1", "+"):
        return None
    others = [s for s in branch.then if s.target not in (f"{flags}[{key}]", listed[0].target, n)]
    vals = value = None
    if others or branch.orelse:
        if len(others) != 1 or len(branch.orelse) != 1:
            return None
        first, more = others[0], branch.orelse[0]
        if not (isinstance(more, L.Assign) and first.op is None and more.op == "+" and first.target == more.target
                and first.value == more.value and _sub(first.target) and _sub(first.target)[1] == key):
            return None
        vals, value = _sub(first.target)[0], first.value
        if vals not in allocs or arrays.get(vals, (allocs[vals].dtype,))[0] not in ATOMIC_DTYPES:
            return None
    # the workspace's bookkeeping in the head: gen += 1; n = 0
    book = [s for s in head if isinstance(s, L.Assign) and s.target in (gen, n)]
    if sorted((s.target, s.value, s.op) for s in book) != sorted([(gen, "1", "+"), (n, "0", None)]):
        return None
    head = [s for s in head if s not in book]
    if not all(_plain(s) or isinstance(s, L.Comment) for s in head):
        return None
    # [sort L[0:n)]; for t in [0, n): tail; post
    sort = bool(rest) and isinstance(rest[0], L.SortRange)
    if sort:
        srt = rest.pop(0)
        if srt.array != lst or srt.start != "0" or srt.stop != n:
            return None
    if not rest or not isinstance(rest[0], L.For) or rest[0].start != "0" or rest[0].stop != n or rest[0].private:
        return None
    tail, post = rest[0], rest[1:]
    got = _tail(tail, lst, vals, n)
    if got is None:
        return None
    carried, stores = got
    if stores and not sort:
        return None  # entries stored in the order they were found: no schedule reproduces that
    if any(not isinstance(s, (L.Assign, L.Comment)) for s in post) or \
            (_read_all(post) & ((_assigned(tail.body) - set(carried)) | {tail.var})):
        return None
    # the workspace appears nowhere else
    ws = {flags, lst, n, gen} | ({vals} if vals else set())
    outside = head + a_pre + b_pre + post + [L.Assign("sd_x", e) for e in
                                             (a_loop.start, a_loop.stop, b_loop.start, b_loop.stop, value or "0")]
    if _read_all(outside) & ws or (_assigned(head + a_pre + b_pre + post) & ws):
        return None
    if {key, a_loop.var, b_loop.var} & _assigned(head) or any(isinstance(x, (L.Emit, L.Alloc, L.Return, L.While))
                                                               for x in _walk(loop.body)):
        return None
    return SpGEMM(loop, head, a_loop, a_pre, b_loop, b_pre, key, value, flags, lst, vals, n, tail, carried, post,
                  stores, allocs[flags].shape)


def _read_all(stmts) -> set:
    out = set()
    for s in _walk(stmts):
        for e in _exprs(s):
            out |= _names(e)
    return out


def _tail(tail: L.For, lst: str, vals, n: str):
    """(carried counters, stores?) of the loop over the row's entries, when every iteration is
    independent apart from counters raised by constants, and it reads the workspace only as
    ``L[t]`` and ``V[L[t]]`` (or ``V[x]`` with ``x = L[t]``); else None."""
    body = tail.body
    if any(not isinstance(s, (L.Assign, L.Comment)) for s in body):
        return None
    plain = {s.target for s in body if _plain(s)}
    carried, stores = {}, False
    for s in body:
        if isinstance(s, L.Comment):
            continue
        if isinstance(_parse(s.target), pyast.Subscript):
            if s.op is not None or _sub(s.target) is None or _sub(s.target)[0] in (lst, vals):
                return None
            stores = True
        elif s.op is not None:
            c = _parse(s.value)
            if s.op != "+" or s.target in plain or s.target in carried or not (
                    isinstance(c, pyast.Constant) and type(c.value) is int):
                return None
            carried[s.target] = c.value
    at = f"{lst}[{tail.var}]"
    alias = {s.target for s in body if _plain(s) and s.value == at}
    if alias & {s.target for s in body if isinstance(s, L.Assign) and s.value != at and s.target in alias}:
        return None
    for s in body:
        for e in _exprs(s):
            for x in pyast.walk(_parse(e)):
                if isinstance(x, pyast.Name) and x.id == n:
                    return None
                if isinstance(x, pyast.Subscript) and isinstance(x.value, pyast.Name):
                    idx = pyast.unparse(x.slice)
                    if x.value.id == lst and idx != tail.var:
                        return None
                    if x.value.id == vals and idx != at and idx not in alias:
                        return None
    return carried, stores


# ---- rendering --------------------------------------------------------------------------------

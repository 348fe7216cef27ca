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
(``cuda_cupy.Specialised.spgemm_launch``). The sums are in a different order than on the CPU
(atomics), so float results agree to rounding.
"""

from __future__ import annotations

import ast as pyast
from dataclasses import dataclass

from ..lang import loopir as L
from .cuda_plan import ATOMIC_DTYPES, _assigned, _exprs, _names, _parse, _walk

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

ATOMIC_ADD = {"float32": "atomicAdd(&{p}, {v})", "float64": "atomicAdd(&{p}, {v})",
              "int32": "atomicAdd(&{p}, {v})", "uint32": "atomicAdd(&{p}, {v})",
              "int64": "atomicAdd((unsigned long long*)&{p}, (unsigned long long)({v}))",
              "uint64": "atomicAdd(&{p}, {v})"}


def kernel_params(ks, sg: SpGEMM) -> list:
    """The kernel's parameters: the function's, then the row lists, whether the warp kernel fills
    them, and the global workspace (stamps, values) with its size per block."""
    from .cuda_render import ctype

    vt = ctype(ks.types.arrays[sg.vals][0]) if sg.vals else "int"
    return ks.params() + ["int* __restrict__ sd_list", "int sd_push", "int sd_which",
                          f"{vt}* __restrict__ sd_dval", "long long sd_wsize", "long long sd_rows", "int sd_words"]


def kernel_key(mode: str, threads: int = BLOCK) -> tuple:
    """The ``lanes`` key (and the name's suffix) of the kernel of ``mode`` with ``threads`` a block."""
    return ("spgemm", mode) if mode == "warp" or threads == BLOCK else ("spgemm", mode, threads)


def render_spgemm(ks, k: int, sg: SpGEMM, mode: str, threads: int = BLOCK) -> str:
    """Kernel ``k`` of ``ks`` (a ``KernelSource``) in the SpGEMM schedule: ``mode`` is "warp", "block"
    or "global" (module docstring); ``threads``: a block's threads (a multiple of 32, <= 1024) for the
    block and global kernels."""
    from .cuda_render import CStmts, ctype, kernel_name

    c = ks.cexpr
    stm = CStmts(ks.types, c)
    vdt = ks.types.arrays[sg.vals][0] if sg.vals else None
    vt = ctype(vdt) if vdt else "int"
    agg = bool(vdt) and mode != "warp"  # a key's values summed over the warp before the atomic (block, global)
    group = 32 if mode == "warp" else threads
    sync = "__syncwarp()" if group == 32 else "__syncthreads()"
    table = 2 * WARP_UB if mode == "warp" else 2 * BLOCK_UB
    # the fill pass's entries in column order by a bitmap (the block kernels of ORDER_BINS)
    ordered = mode == "block" and sg.stores and threads in order_threads()
    name = kernel_name(ks.fn.name, k, kernel_key(mode, threads))
    threads = 32 * WARPS if mode == "warp" else threads
    lines = [f'extern "C" __global__ void __launch_bounds__({threads}) {name}('
             + ", ".join(kernel_params(ks, sg)) + ") {"]
    loop = sg.row
    used = _names(loop.start) | _names(loop.stop) | _read_all(loop.body)
    ks.load_state(used - _assigned(loop.body), lines, "  ")
    lines += [
        f"  const long long sd_start = {c(loop.start)}, sd_stop = {c(loop.stop)};",
        "  const int sd_lane = threadIdx.x & 31, sd_warp = threadIdx.x >> 5;",
        f"  const int sd_gt = threadIdx.x & {group - 1};  // the thread's place in its row's group",
        f"  __shared__ int sd_excl[{threads // 32}][32]; __shared__ long long sd_bs[{threads // 32}][32];",
    ]
    if group > 32:
        lines.append(f"  __shared__ long long sd_part[{group // 32}]; __shared__ int sd_cnt[{group // 32}];")
        # the chunk's scan over the block (flat), the warps' totals
        lines.append(f"  __shared__ int sd_wt[{group // 32}]; int* sd_ex = &sd_excl[0][0]; "
                     "long long* sd_bb = &sd_bs[0][0];")
    if mode == "warp":
        per = threads // group
        lines.append(f"  __shared__ __align__(16) unsigned sd_tk_all[{per}][{table}];")
        lines.append(f"  unsigned* sd_tk = sd_tk_all[threadIdx.x / {group}];")
        if vdt:
            lines.append(f"  __shared__ __align__(16) {vt} sd_tv_all[{per}][{table}];")
            lines.append(f"  {vt}* sd_tv = sd_tv_all[threadIdx.x / {group}];")
    elif mode == "block":  # the bin's table in dynamic shared memory: keys, then values
        lines.append("  extern __shared__ __align__(16) unsigned char sd_dyn[];")
        lines.append("  unsigned* sd_tk = (unsigned*)sd_dyn;")
        if vdt:
            lines.append(f"  {vt}* sd_tv = ({vt}*)(sd_dyn + 4 * ({table_slots(0)} << sd_which));")
        if ordered:
            lines += [f"  __shared__ __align__(16) unsigned sd_ob[{ORDER_WORDS}];  // the row's columns, a bit each",
                      f"  const bool sd_obm = sd_wsize <= {32 * ORDER_WORDS}LL;  // else the bitonic sort",
                      "  if (sd_obm) for (int sd_s = threadIdx.x; sd_s < (int)((sd_wsize + 31) >> 5); "
                      f"sd_s += {threads}) sd_ob[sd_s] = 0u;"]
    else:  # a bitmap of a window of columns in dynamic shared memory, the values dense in global memory
        lines.append("  extern __shared__ __align__(16) unsigned char sd_dyn[];")
        lines.append("  unsigned* sd_bm = (unsigned*)sd_dyn;")
        if vdt:
            lines.append(f"  {vt}* sd_dv = sd_dval + (long long)blockIdx.x * sd_wsize;")
    if mode == "warp":
        lines += [f"  for (long long sd_r = (long long)blockIdx.x * {WARPS} + sd_warp; sd_r < sd_stop - sd_start; "
                  f"sd_r += (long long)gridDim.x * {WARPS}) {{",
                  "    const long long sd_it = sd_start + sd_r;"]
    else:
        which = "sd_which" if mode == "block" else str(BLOCK_BINS)
        lines += [f"  const int sd_nlist = sd_list[{which}];",
                  "  for (int sd_j = blockIdx.x; sd_j < sd_nlist; sd_j += gridDim.x) {",
                  f"    const long long sd_it = sd_start + sd_list[{HEAD} + {which} * sd_rows + sd_j];"]
    ks.declare(_assigned(loop.body) | {loop.var}, lines, "    ")
    lines.append(f"    {loop.var} = sd_it;")
    stm.put(sg.head, 2, lines)
    for v in sorted(sg.carried):
        lines.append(f"    const {ctype(ks.types.scalars[v])} sd_0_{v} = {v};")
    a, b = sg.a_loop, sg.b_loop
    lines.append(f"    const long long sd_a0 = {c(a.start)}, sd_a1 = {c(a.stop)};")
    # the upper bound: the lengths of the B rows the A row selects
    lines += ["    long long sd_ub = 0;",
              f"    for (long long sd_p = sd_a0 + sd_gt; sd_p < sd_a1; sd_p += {group}) {{",
              f"      {a.var} = sd_p;"]
    stm.put(sg.a_pre, 3, lines)
    lines += [f"      sd_ub += ({c(b.stop)}) - ({c(b.start)});", "    }"]
    lines += _group_sum("sd_ub", group, sync)
    if mode == "warp":
        lines += [f"    if (sd_ub > {WARP_UB}) {{  // a longer row: onto a block bin's or the global kernel's list",
                  "      if (sd_push && sd_lane == 0) {",
                  "        // sd_which: the block bins whose tables fit in shared memory (fewer for wide values)",
                  "        int sd_w = 0;",
                  f"        while (sd_w < sd_which && ({BLOCK_UB >> (BLOCK_BINS - 1)}LL << sd_w) < sd_ub) ++sd_w;",
                  f"        if (sd_w == sd_which) sd_w = {BLOCK_BINS};",
                  "        const int sd_at = atomicAdd(&sd_list[sd_w], 1);",
                  f"        sd_list[{HEAD} + sd_w * sd_rows + sd_at] = (int)sd_r;",
                  "      }",
                  "      continue;",
                  "    }"]
    if mode != "global":
        lines += ["    int sd_lg = 5; while ((1LL << sd_lg) < 2 * sd_ub) ++sd_lg;  // 2 ub slots at least, >= 32",
                  "    const int sd_tsize = 1 << sd_lg; const unsigned sd_mask = sd_tsize - 1;",
                  f"    for (int sd_s = sd_gt; sd_s < sd_tsize; sd_s += {group}) {{ sd_tk[sd_s] = 0xffffffffu;"
                  + (" sd_tv[sd_s] = 0;" if vdt else "") + " }",
                  f"    {sync};"]
    lines.append("    int sd_new = 0;  // keys this thread inserted first (global: set bits it counted)")
    if mode == "global":  # the products once per window of columns (one window when the bitmap holds them all)
        lines += ["    int sd_done = 0;  // the row's entries in earlier windows (the same on every thread)",
                  "    for (long long sd_lo = 0; sd_lo < sd_wsize; sd_lo += 32LL * sd_words) {",
                  "    const int sd_nw = (int)min((long long)sd_words, (sd_wsize - sd_lo + 31) >> 5);",
                  f"    for (int sd_s = sd_gt; sd_s < sd_nw; sd_s += {group}) sd_bm[sd_s] = 0u;",
                  f"    {sync};"]
    # the products: per chunk of 32 A entries of a warp (or `group` of the block: SPREAD), a scan of
    # their B row lengths; then product p of the chunk goes to lane (thread) p % 32 (p % group), a
    # binary search finds its A entry. A block's rows often have fewer A entries than it has threads
    # but a few long B rows: spread over the block, no warp waits at the barrier for one that has them all
    spread = group > 32
    span = group if spread else 32
    ex, bs = ("sd_ex", "sd_bb") if spread else ("sd_excl[sd_warp]", "sd_bs[sd_warp]")
    me = "sd_gt" if spread else "sd_lane"
    if spread:
        lines += [f"    for (long long sd_c = sd_a0; sd_c < sd_a1; sd_c += {group}) {{"]
    else:
        lines += [f"    for (long long sd_c = sd_a0 + 32 * {'0' if group == 32 else 'sd_warp'}; sd_c < sd_a1; "
                  f"sd_c += {32 * (group // 32)}) {{"]
    lines += ["      long long sd_b0 = 0; int sd_len = 0;",
              f"      if (sd_c + {me} < sd_a1) {{",
              f"        {a.var} = sd_c + {me};"]
    stm.put(sg.a_pre, 4, lines)
    lines += [f"        sd_b0 = {c(b.start)}; sd_len = (int)(({c(b.stop)}) - sd_b0);",
              "      }",
              "      int sd_inc = sd_len;",
              "#pragma unroll",
              "      for (int sd_o = 1; sd_o < 32; sd_o <<= 1) {",
              "        const int sd_y = __shfl_up_sync(0xffffffffu, sd_inc, sd_o);",
              "        if (sd_lane >= sd_o) sd_inc += sd_y;",
              "      }"]
    if spread:
        lines += ["      if (sd_lane == 31) sd_wt[sd_warp] = sd_inc;",
                  "      __syncthreads();",
                  "      int sd_tot = 0;",
                  "#pragma unroll",
                  f"      for (int sd_x = 0; sd_x < {group // 32}; ++sd_x) {{ const int sd_y = sd_wt[sd_x]; "
                  "if (sd_x < sd_warp) sd_inc += sd_y; sd_tot += sd_y; }",
                  "      sd_ex[sd_gt] = sd_inc - sd_len; sd_bb[sd_gt] = sd_b0;",
                  "      __syncthreads();"]
    else:
        lines += ["      const int sd_tot = __shfl_sync(0xffffffffu, sd_inc, 31);",
                  "      sd_excl[sd_warp][sd_lane] = sd_inc - sd_len; sd_bs[sd_warp][sd_lane] = sd_b0;",
                  "      __syncwarp();"]
    lines += [f"      for (int sd_q = {me}; sd_q < sd_tot; sd_q += {span}) {{" if not agg else
              f"      for (int sd_q0 = 0; sd_q0 < sd_tot; sd_q0 += {span}) {{  // in step: a warp sums a key's values"]
    if agg:  # every lane steps together, so that the lanes holding one key can add up their values first
        lines += [f"        const int sd_q = sd_q0 + {me};",
                  f"        unsigned sd_key = 0xffffffffu, sd_s = 0; {vt} sd_val = 0; (void)sd_s;",
                  "        if (sd_q < sd_tot) {"]
    d = 5 if agg else 4  # the products' indent
    pad = "  " * d
    lines += [f"{pad}int sd_e = 0;",
              "#pragma unroll",
              f"{pad}for (int sd_h = {span // 2}; sd_h > 0; sd_h >>= 1)",
              f"{pad}  if ({ex}[sd_e + sd_h] <= sd_q) sd_e += sd_h;",
              f"{pad}{a.var} = sd_c + sd_e;"]
    stm.put(sg.a_pre, d, lines)
    lines.append(f"{pad}{b.var} = {bs}[sd_e] + (sd_q - {ex}[sd_e]);")
    stm.put(sg.b_pre, d, lines)
    if agg:
        lines.append(f"{pad}sd_key = (unsigned)({c(sg.key)}); sd_val = {c(sg.value, vdt)};")
    else:
        lines.append(f"{pad}const unsigned sd_key = (unsigned)({c(sg.key)});")
        if vdt:
            lines.append(f"{pad}const {vt} sd_val = {c(sg.value, vdt)};")
    if mode == "global":
        lines += [f"{pad}const long long sd_off = (long long)sd_key - sd_lo;",
                  f"{pad}if (sd_off >= 0 && sd_off < 32LL * sd_nw) {{",
                  f"{pad}  atomicOr(&sd_bm[sd_off >> 5], 1u << (sd_off & 31));"]
        if vdt and not agg:
            lines.append(f"{pad}  " + ATOMIC_ADD[vdt].format(p="sd_dv[sd_key]", v="sd_val") + ";")
        lines.append(f"{pad}}}" + (" else sd_key = 0xffffffffu;  // another window's" if agg else ""))
    else:
        decl = "" if agg else "unsigned "
        lines += [f"{pad}{decl}sd_s = (sd_key * 2654435769u) >> (32 - sd_lg);  // Fibonacci hashing",
                  f"{pad}while (true) {{",
                  f"{pad}  unsigned sd_old = sd_tk[sd_s];",
                  f"{pad}  if (sd_old == 0xffffffffu) {{",
                  f"{pad}    sd_old = atomicCAS(&sd_tk[sd_s], 0xffffffffu, sd_key);",
                  f"{pad}    if (sd_old == 0xffffffffu) {{ ++sd_new; "
                  + ("if (sd_obm) atomicOr(&sd_ob[sd_key >> 5], 1u << (sd_key & 31)); " if ordered else "")
                  + "break; }",
                  f"{pad}  }}",
                  f"{pad}  if (sd_old == sd_key) break;",
                  f"{pad}  sd_s = (sd_s + 1) & sd_mask;",
                  f"{pad}}}"]
    if vdt and not agg:
        lines.append(f"{pad}" + ATOMIC_ADD[vdt].format(p="sd_tv[sd_s]", v="sd_val") + ";")
    if agg:
        # the lanes of one key (one slot): the lowest adds the others' values (shuffles), then one atomic;
        # rows of a power-law matrix meet its popular columns in many products at once
        target = "sd_dv[sd_key]" if mode == "global" else "sd_tv[sd_s]"
        lines += ["        }",
                  "        const unsigned sd_peers = __match_any_sync(0xffffffffu, sd_key);",
                  "        const bool sd_lead = sd_key != 0xffffffffu && (sd_peers & ((1u << sd_lane) - 1u)) == 0u;",
                  "        unsigned sd_rem = sd_lead ? sd_peers & (sd_peers - 1u) : 0u;",
                  "        while (__any_sync(0xffffffffu, sd_rem != 0u)) {",
                  "          const int sd_src = sd_rem ? __ffs(sd_rem) - 1 : sd_lane;",
                  f"          const {vt} sd_t = __shfl_sync(0xffffffffu, sd_val, sd_src);",
                  "          if (sd_rem) { sd_val += sd_t; sd_rem &= sd_rem - 1u; }",
                  "        }",
                  "        if (sd_lead) " + ATOMIC_ADD[vdt].format(p=target, v="sd_val") + ";"]
    lines += ["      }", "      __syncthreads();  // the chunk's scan is rewritten next" if spread else
              "      __syncwarp();", "    }"]
    lines += [f"    {sync};"]
    if mode == "global":
        lines += _window(ks, sg, stm, group, sync, vt)
        lines += ["    }  // the windows"]
    lines += _group_sum("sd_new", group, sync)
    if sg.stores and mode != "global":
        lines += _emit(ks, sg, stm, mode, group, sync, vt)
    lines.append(f"    if (sd_gt == 0) {{  // the row's own statements after its entries: {len(sg.post)}")
    for v, inc in sorted(sg.carried.items()):
        lines.append(f"      {v} = sd_0_{v} + (long long)sd_new * {inc};")
    stm.put(sg.post, 3, lines)
    lines += ["    }", f"    {sync};  // the table is cleared for the next row", "  }", "}"]
    return "\n".join(lines) + "\n"


def _group_sum(var: str, group: int, sync: str) -> list:
    """``var`` summed over the row's group: xor shuffles in each warp, then shared memory."""
    out = ["#pragma unroll",
           f"    for (int sd_o = 16; sd_o > 0; sd_o >>= 1) {var} += __shfl_xor_sync(0xffffffffu, {var}, sd_o);"]
    if group > 32:
        out += [f"    if (sd_lane == 0) sd_part[sd_warp] = {var};", f"    {sync};",
                f"    {var} = 0; for (int sd_w = 0; sd_w < {group // 32}; ++sd_w) {var} += sd_part[sd_w];",
                f"    {sync};"]
    return out


def _emit(ks, sg, stm, mode, group, sync, vt) -> list:
    """The fill pass: each entry's rank among the row's keys, then the tail's body for it."""
    out = []
    # compact the table in place, a window of `group` slots at a time (a slot moves only down, to a
    # place this window or an earlier one has read already), then rank each key among the others
    out += ["    int sd_n = 0;",
            f"    for (int sd_s0 = 0; sd_s0 < sd_tsize; sd_s0 += {group}) {{",
            "      const int sd_s = sd_s0 + sd_gt;",
            "      const unsigned sd_k = sd_s < sd_tsize ? sd_tk[sd_s] : 0xffffffffu;",
            f"      const {vt} sd_v = sd_s < sd_tsize ? sd_tv[sd_s] : ({vt})0;" if sg.vals else
            "      const int sd_v = 0;",
            "      const bool sd_f = sd_k != 0xffffffffu;",
            "      const unsigned sd_bal = __ballot_sync(0xffffffffu, sd_f);",
            "      int sd_at = sd_n + __popc(sd_bal & ((1u << sd_lane) - 1u)), sd_all = __popc(sd_bal);"]
    if group > 32:
        out += ["      if (sd_lane == 0) sd_cnt[sd_warp] = sd_all;",
                "      __syncthreads();",
                f"      sd_all = 0; for (int sd_x = 0; sd_x < {group // 32}; ++sd_x) {{ const int sd_y = sd_cnt[sd_x]; "
                "sd_all += sd_y; if (sd_x < sd_warp) sd_at += sd_y; }"]
    out += [f"      {sync};",
            "      if (sd_f) { sd_tk[sd_at] = sd_k; " + ("sd_tv[sd_at] = sd_v; }" if sg.vals else "(void)sd_v; }"),
            "      sd_n += sd_all;",
            f"      {sync};",
            "    }",
            ]
    ordered = mode == "block" and group in order_threads()
    if ordered:
        out = _ordered(ks, sg, stm, group, vt) + ["    } else {"] + out
    if mode == "block":
        # a bitonic sort of the compacted (key, value) pairs, padded with empty keys to a power of two
        # (<= the table's size, >= 2 n): the entry at e has rank e
        swap_v = f" const {vt} sd_t = sd_tv[sd_i]; sd_tv[sd_i] = sd_tv[sd_l]; sd_tv[sd_l] = sd_t;" if sg.vals else ""
        out += ["    int sd_p = 1; while (sd_p < sd_n) sd_p <<= 1;",
                f"    for (int sd_s = sd_n + sd_gt; sd_s < sd_p; sd_s += {group}) sd_tk[sd_s] = 0xffffffffu;",
                f"    {sync};",
                "    for (int sd_k2 = 2; sd_k2 <= sd_p; sd_k2 <<= 1) {",
                "      for (int sd_j2 = sd_k2 >> 1; sd_j2 > 0; sd_j2 >>= 1) {",
                f"        for (int sd_x = sd_gt; sd_x < (sd_p >> 1); sd_x += {group}) {{",
                "          const int sd_i = ((sd_x & ~(sd_j2 - 1)) << 1) | (sd_x & (sd_j2 - 1)), sd_l = sd_i + sd_j2;",
                "          const unsigned sd_a = sd_tk[sd_i], sd_b = sd_tk[sd_l];",
                "          if ((sd_a > sd_b) == ((sd_i & sd_k2) == 0)) {",
                "            sd_tk[sd_i] = sd_b; sd_tk[sd_l] = sd_a;" + swap_v,
                "          }",
                "        }",
                f"        {sync};",
                "      }",
                "    }",
                f"    for (int sd_e = sd_gt; sd_e < sd_n; sd_e += {group}) {{",
                "      const unsigned sd_k = sd_tk[sd_e];",
                f"      const {vt} sd_v = sd_tv[sd_e];" if sg.vals else "      const int sd_v = 0; (void)sd_v;"]
        out += _entry(ks, sg, stm, "sd_e", 3)
        out += ["    }"]
        if ordered:
            out += ["    }  // the bitonic sort"]
        return out
    out += ["    if (sd_gt < 4) sd_tk[sd_n + sd_gt] = 0xffffffffu;  // pad to whole 16-byte vectors (never less)",
            f"    {sync};",
            f"    for (int sd_e = sd_gt; sd_e < sd_n; sd_e += {group}) {{",
            "      const unsigned sd_k = sd_tk[sd_e];",
            f"      const {vt} sd_v = sd_tv[sd_e];" if sg.vals else "      const int sd_v = 0; (void)sd_v;",
            "      int sd_rank = 0;",
            "      for (int sd_x = 0; sd_x < sd_n; sd_x += 4) {",
            "        const uint4 sd_q = *(const uint4*)(sd_tk + sd_x);",
            "        sd_rank += (sd_q.x < sd_k) + (sd_q.y < sd_k) + (sd_q.z < sd_k) + (sd_q.w < sd_k);",
            "      }"]
    out += _entry(ks, sg, stm, "sd_rank", 3)
    out += ["    }"]
    return out


def _ordered(ks, sg, stm, group, vt) -> list:
    """The block kernels' fill pass when the columns fit the bitmap ``sd_ob`` (the insertion set a bit
    per key): each warp walks its run of words 32 at a time (a word a lane), ranks the bits by a warp
    scan of their counts after the counts of the earlier warps' runs, and runs the tail's body for
    each in column order, the value looked up in the hash table; the words are cleared as they are
    read. No sort, and a warp's stores fall on a few consecutive entries."""
    nw = group // 32
    out = ["    if (sd_obm) {",
           "      const int sd_W = (int)((sd_wsize + 31) >> 5);",
           f"      const int sd_per = ((sd_W + {32 * nw - 1}) / {32 * nw}) * 32;  // words per warp, whole rounds",
           "      const int sd_x0 = min(sd_warp * sd_per, sd_W), sd_x1 = min(sd_x0 + sd_per, sd_W);",
           "      int sd_mine = 0;",
           "      for (int sd_x = sd_x0 + sd_lane; sd_x < sd_x1; sd_x += 32) sd_mine += __popc(sd_ob[sd_x]);",
           "#pragma unroll",
           "      for (int sd_o = 16; sd_o > 0; sd_o >>= 1) sd_mine += __shfl_xor_sync(0xffffffffu, sd_mine, sd_o);",
           "      if (sd_lane == 0) sd_cnt[sd_warp] = sd_mine;",
           "      __syncthreads();",
           "      int sd_rank = 0; for (int sd_x = 0; sd_x < sd_warp; ++sd_x) sd_rank += sd_cnt[sd_x];",
           *_walk_words("sd_ob", "32u * (unsigned)sd_x + (unsigned)(__ffs(sd_bits) - 1)", clear=True)]
    if sg.vals:
        out += ["          unsigned sd_s = (sd_k * 2654435769u) >> (32 - sd_lg);",
                "          while (sd_tk[sd_s] != sd_k) sd_s = (sd_s + 1) & sd_mask;",
                f"          const {vt} sd_v = sd_tv[sd_s];"]
    else:
        out += ["          const int sd_v = 0; (void)sd_v;"]
    out += _entry(ks, sg, stm, "sd_r", 5)
    out += ["          ++sd_r;", "        }", "      }"]
    return out


def _walk_words(words: str, key: str, clear: bool) -> list:
    """A warp's walk over its run ``[sd_x0, sd_x1)`` of a bitmap's words, a word a lane: each set bit's
    rank ``sd_r`` (from ``sd_rank``, the bits before the run; a warp scan of the words' counts) and
    column ``sd_k`` (``key``), in column order; ``clear`` zeroes the words read for the next row.
    Opens two loops (words, bits) that the caller's lines close."""
    return ["      for (int sd_xb = sd_x0; sd_xb < sd_x1; sd_xb += 32) {",
            "        const int sd_x = sd_xb + sd_lane;",
            f"        unsigned sd_bits = sd_x < sd_x1 ? {words}[sd_x] : 0u;",
            *([f"        if (sd_bits) {words}[sd_x] = 0u;  // clear for the next row"] if clear else []),
            "        const int sd_c = __popc(sd_bits);",
            "        int sd_inc = sd_c;",
            "#pragma unroll",
            "        for (int sd_o = 1; sd_o < 32; sd_o <<= 1) {",
            "          const int sd_y = __shfl_up_sync(0xffffffffu, sd_inc, sd_o);",
            "          if (sd_lane >= sd_o) sd_inc += sd_y;",
            "        }",
            "        int sd_r = sd_rank + sd_inc - sd_c;",
            "        sd_rank += __shfl_sync(0xffffffffu, sd_inc, 31);",
            "        while (sd_bits) {",
            f"          const unsigned sd_k = {key};",
            "          sd_bits &= sd_bits - 1u;"]


def _window(ks, sg, stm, group, sync, vt) -> list:
    """The global kernel after a window's products: its set bits counted and (fill pass) the tail's body
    run for each in column order: each warp walks its run of words a word a lane (as the ordered
    block kernels do: coalesced stores, no bank conflicts)."""
    out = ["    int sd_mine = 0;",
           f"    for (int sd_x = sd_gt; sd_x < sd_nw; sd_x += {group}) sd_mine += __popc(sd_bm[sd_x]);"]
    if not sg.stores:
        return out + ["    sd_new += sd_mine; (void)sd_done;",
                      f"    {sync};  // the bitmap is cleared for the next window"]
    nw = group // 32
    out = ["    {",
           f"      const int sd_per = ((sd_nw + {32 * nw - 1}) / {32 * nw}) * 32;  // words per warp",
           "      const int sd_x0 = min(sd_warp * sd_per, sd_nw), sd_x1 = min(sd_x0 + sd_per, sd_nw);",
           "      int sd_mine = 0;",
           "      for (int sd_x = sd_x0 + sd_lane; sd_x < sd_x1; sd_x += 32) sd_mine += __popc(sd_bm[sd_x]);",
           "#pragma unroll",
           "      for (int sd_o = 16; sd_o > 0; sd_o >>= 1)",
           "        sd_mine += __shfl_xor_sync(0xffffffffu, sd_mine, sd_o);",
           "      if (sd_lane == 0) sd_cnt[sd_warp] = sd_mine;",
           f"      {sync};",
           "      int sd_rank = sd_done, sd_tot = 0;",
           f"      for (int sd_x = 0; sd_x < {nw}; ++sd_x) {{ const int sd_y = sd_cnt[sd_x]; "
           "sd_tot += sd_y; if (sd_x < sd_warp) sd_rank += sd_y; }",
           *_walk_words("sd_bm", "(unsigned)(sd_lo + 32LL * sd_x + (__ffs(sd_bits) - 1))", clear=False),
           f"          const {vt} sd_v = sd_dv[sd_k]; sd_dv[sd_k] = 0;  // zero again for the next row"
           if sg.vals else "          const int sd_v = 0; (void)sd_v;"]
    out += _entry(ks, sg, stm, "sd_r", 5)
    out += ["          ++sd_r;", "        }", "      }",
            "      sd_done += sd_tot; if (sd_lane == 0) sd_new += sd_mine;",
            "    }",
            f"    {sync};  // the bitmap and the counts are reused"]
    return out



def _entry(ks, sg, stm, rank: str, ind: int) -> list:
    """The tail's body for the entry (key ``sd_k``, value ``sd_v``) of rank ``rank``."""
    from .cuda_render import ctype

    pad = "  " * ind
    lines = [f"{pad}{sg.tail.var} = {rank};"]
    for v, inc in sorted(sg.carried.items()):
        lines.append(f"{pad}{v} = sd_0_{v} + ({ctype(ks.types.scalars[v])}){rank} * {inc};")
    at = f"{sg.lst}[{sg.tail.var}]"
    alias = {s.target for s in sg.tail.body if _plain(s) and s.value == at}
    replace = {at: "((long long)sd_k)"}
    if sg.vals:
        for idx in [at, *alias]:
            replace[f"{sg.vals}[{idx}]"] = "sd_v"
    ks.cexpr.replace = replace
    try:
        stm.put(sg.tail.body, ind, lines)
    finally:
        ks.cexpr.replace = {}
    return lines

"""The CUDA C of the SpGEMM template (``spgemm``): the warp, block and global hash-table kernels.
"""

from __future__ import annotations

from ..cexpr import CStmts, ctype, kernel_name
from ..plan import _assigned, _names
from .spgemm import (
    BLOCK,
    BLOCK_BINS,
    BLOCK_UB,
    HEAD,
    ORDER_WORDS,
    WARP_UB,
    WARPS,
    SpGEMM,
    _plain,
    _read_all,
    order_threads,
    table_slots,
)

ATOMIC_ADD = {"float32": "atomicAdd(&{p}, {v})", "float64": "atomicAdd(&{p}, {v})",
              "int32": "atomicAdd(&{p}, {v})", "uint32": "atomicAdd(&{p}, {v})",
              "int64": "atomicAdd((unsigned long long*)&{p}, (unsigned long long)({v}))",
              "uint64": "atomicAdd(&{p}, {v})"}


def kernel_params(ks, sg: SpGEMM) -> list:
    """The kernel's parameters: the function's, then the row lists, whether the warp kernel fills
    them, and the global workspace (stamps, values) with its size per block."""

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

"""The CUDA C of the skinny template (``skinny``): tensor-core ``mma.m16n8k16`` products of N:M or
bitmap weights with a few dense columns, and the cluster variant for bitmap weights on Hopper.
"""

from __future__ import annotations

from ..cexpr import CStmts
from .skinny import HALF_MMA, MMA, PRMT, Skinny


def render_skinny(ks, k: int, sk: Skinny, nt: int, splitk: int, mtiles: int = 2, minblocks: int = 1,
                  slots: int = 8, cluster: int = 0) -> str:
    """The kernel of step ``k`` of ``ks`` (a ``KernelSource``) in the skinny schedule: ``nt`` tiles of
    16 columns, ``splitk`` warps per block splitting each row's columns, ``mtiles`` m16 tiles per warp
    (they share X's fragments), at least ``minblocks`` blocks per SM (a register cap), ``slots`` N:M
    slots per lane and row in a chunk (8 or 16: one or two 16-byte vectors of values)."""

    if cluster:
        return render_bitmap_cluster(ks, k, sk, nt, splitk, minblocks, cluster)
    loop = ks.steps[k].loop
    mma = HALF_MMA[ks.types.arrays[sk.values][0]]
    stm = CStmts(ks.types, ks.cexpr)
    c = ks.cexpr
    q = slots // sk.n * (sk.m // 4) if sk.kind == "nm" else BITMAP_CHUNK // 16  # column quads per lane and row
    lines = [MMA.format(T=mma), PRMT if sk.kind == "bitmap" else "",
             f'extern "C" __global__ void __launch_bounds__({32 * splitk}, {minblocks}) '
             f'{ks.fn.name}_k{k}_skinny{nt}x{splitk}x{mtiles}x{minblocks}x{slots}(' + ", ".join(ks.params()) + ") {"]
    ks.prologue(loop, lines)
    lines += [
        "  const int sd_warp = threadIdx.x >> 5, sd_lane = threadIdx.x & 31, sd_t = sd_lane & 3, sd_r = sd_lane >> 2;",
        f"  const long long sd_row0 = sd_start + (long long)blockIdx.x * {16 * mtiles};",
        f"  const unsigned short* __restrict__ sd_x = (const unsigned short*){sk.dense};",
        f"  const long long sd_ld = {sk.dense}_sh1;  // X's row length (the output's columns)",
        f"  const long long sd_nchunk = ({c(sk.extent)}) / {16 * q};  // per row: 4 lanes x {4 * q} columns",
        f"  const long long sd_per = (sd_nchunk + {splitk - 1}) / {splitk};",
        "  const long long sd_c0 = sd_warp * sd_per;",
        "  const long long sd_c1 = sd_c0 + sd_per < sd_nchunk ? sd_c0 + sd_per : sd_nchunk;",
    ]
    lines += _rows(ks, loop, sk, stm, nt, mtiles, "even / odd columns")
    mma_lines = _mma(q, nt, mtiles, mma)
    if sk.kind == "nm":
        lines += _nm_main(sk, q, mtiles, slots, mma_lines)
        lines.append(f"  __shared__ float sd_part[{splitk}][{16 * mtiles}][{16 * nt + 1}];")
    else:
        # the value windows of the main loop and the split-K parts after it share one buffer
        win = splitk * 16 * mtiles * WIN_STRIDE * 2
        part = splitk * 16 * mtiles * (16 * nt + 1) * 4
        lines += [f"  __shared__ __align__(16) unsigned char sd_smem[{max(win, part)}];",
                  f"  unsigned short (*sd_win)[{16 * mtiles}][{WIN_STRIDE}] = "
                  f"(unsigned short (*)[{16 * mtiles}][{WIN_STRIDE}])sd_smem;"]
        lines += _bitmap_offsets(sk, splitk, mtiles)
        lines += _bitmap_main(sk, mtiles, mma_lines)
        dims = f"[{16 * mtiles}][{16 * nt + 1}]"
        lines += ["  __syncthreads();  // every warp is done with its windows",
                  f"  float (*sd_part){dims} = (float (*){dims})sd_smem;"]
    lines += [
        # split-K: the warps' parts meet in shared memory
        "#pragma unroll",
        f"  for (int h = 0; h < {2 * mtiles}; ++h)",
        "#pragma unroll",
        f"    for (int a = 0; a < {nt}; ++a) {{",
        "      float* p = &sd_part[sd_warp][sd_r + 8 * h][16 * a + 4 * sd_t];",
        "      const float* e = sd_acc[h >> 1][a][0]; const float* o = sd_acc[h >> 1][a][1];",
        "      const int z = 2 * (h & 1);",
        "      p[0] = e[z]; p[1] = o[z]; p[2] = e[z + 1]; p[3] = o[z + 1];",
        "    }",
        "  __syncthreads();",
        f"  for (int i = threadIdx.x; i < {16 * mtiles * 16 * nt}; i += {32 * splitk}) {{",
        f"    const int rr = i / {16 * nt}, cc = i % {16 * nt};",
        "    float s = 0.f;",
        f"    for (int w = 0; w < {splitk}; ++w) s += sd_part[w][rr][cc];",
        "    if (sd_row0 + rr < sd_stop) {",
    ]
    ks.declare({loop.var, sk.col, sk.acc}, lines, "      ")
    lines.append(f"      {loop.var} = sd_row0 + rr; {sk.col} = cc; {sk.acc} = s;")
    stm.put([sk.store], 3, lines)
    lines += ["    }", "  }", "}"]
    return "\n".join(lines) + "\n"


def _rows(ks, loop, sk: Skinny, stm, nt: int, mtiles: int, halves: str) -> list:
    """The accumulators (``halves``: what their [2] axis holds), and where each of the lane's rows
    (sd_r + 8h) starts: its first N:M slot, or its first mask word and its values' range."""
    c, rows = ks.cexpr, 2 * mtiles
    lines = [
        f"  float sd_acc[{mtiles}][{nt}][2][4];  // [m tile][column tile][{halves}][mma C fragment]",
        "#pragma unroll",
        f"  for (int i = 0; i < {mtiles * nt * 8}; ++i) (&sd_acc[0][0][0][0])[i] = 0.f;",
        f"  // the lane's rows: sd_r + 8h, h < {rows} (m tile h / 2)",
        f"  long long sd_base[{rows}], sd_vbase[{rows}], sd_vend[{rows}]; bool sd_ok[{rows}];",
        "#pragma unroll",
        f"  for (int h = 0; h < {rows}; ++h) {{",
        "    const long long sd_it = sd_row0 + sd_r + 8 * h;",
        "    sd_ok[h] = sd_it < sd_stop; sd_base[h] = 0; sd_vbase[h] = 0; sd_vend[h] = 0;",
        "    if (sd_ok[h]) {",
    ]
    ks.declare({s.target for s in sk.head} | {loop.var}, lines, "      ")
    lines.append(f"      {loop.var} = sd_it;")
    stm.put(sk.head, 3, lines)
    lines.append(f"      sd_base[h] = {c(sk.slot0)};" if sk.kind == "nm" else
                 f"      sd_base[h] = {c(sk.mask0)}; sd_vbase[h] = {c(sk.pos0)}; sd_vend[h] = {c(sk.pos1)};")
    return lines + ["    }", "  }"]


def _mma(q: int, nt: int, mtiles: int, mma: str) -> list:
    """Chunk ``sd_c``'s products: X's fragments (from L1/L2) times the expanded ``sd_lo``/``sd_hi``."""
    return [
        f"    const long long sd_quad0 = (sd_c * 4 + sd_t) * {q};",
        "#pragma unroll",
        f"    for (int u = 0; u < {q}; ++u) {{",
        "      const unsigned short* sd_xr = sd_x + (sd_quad0 + u) * 4 * sd_ld + 2 * sd_r;",
        "#pragma unroll",
        f"      for (int a = 0; a < {nt}; ++a) {{",
        "        const unsigned w0 = __ldg((const unsigned*)(sd_xr + 16 * a));",
        "        const unsigned w1 = __ldg((const unsigned*)(sd_xr + sd_ld + 16 * a));",
        "        const unsigned w2 = __ldg((const unsigned*)(sd_xr + 2 * sd_ld + 16 * a));",
        "        const unsigned w3 = __ldg((const unsigned*)(sd_xr + 3 * sd_ld + 16 * a));",
        "        // even output columns in one mma, odd ones in the other: each lane's X word feeds both",
        "        const unsigned be0 = __byte_perm(w0, w1, 0x5410), be1 = __byte_perm(w2, w3, 0x5410);",
        "        const unsigned bo0 = __byte_perm(w0, w1, 0x7632), bo1 = __byte_perm(w2, w3, 0x7632);",
        "#pragma unroll",
        f"        for (int mt = 0; mt < {mtiles}; ++mt) {{",
        "          const unsigned a0 = sd_lo[2 * mt][u], a1 = sd_lo[2 * mt + 1][u];",
        "          const unsigned a2 = sd_hi[2 * mt][u], a3 = sd_hi[2 * mt + 1][u];",
        f"          sd_mma_{mma}(sd_acc[mt][a][0], a0, a1, a2, a3, be0, be1);",
        f"          sd_mma_{mma}(sd_acc[mt][a][1], a0, a1, a2, a3, bo0, bo1);",
        "        }",
        "      }",
        "    }",
    ]


def _nm_main(sk: Skinny, q: int, mtiles: int, slots: int, mma_lines: list) -> list:
    """The N:M main loop: each lane's values and in-group indices, a chunk ahead of their use
    (register double buffering), expanded through the byte-permute table."""
    rows = 2 * mtiles
    vec = slots // 8  # 16-byte vectors of values per lane and row (8 slots each)
    regs = f"uint4 v[{rows}][{vec}]; unsigned kk[{rows}][{vec}];"
    zero = "v[h][b] = make_uint4(0, 0, 0, 0); kk[h][b] = 0xffffffffu;"
    at = f"sd_base[h] + cc * {4 * slots} + sd_t * {slots} + 8 * b"
    load = [f"v[h][b] = __ldg((const uint4*)({sk.values} + {at}));"]  # 8 slots: 4 groups, 4 bytes of indices
    if vec == 2:  # both vectors' index words in one 8-byte load, after both were cleared
        first = at.replace("8 * b", "0")
        load.append(f"if (b == 1) {{ const uint2 k2 = __ldg((const uint2*)({sk.crd} + ({first}) / {sk.n})); "
                    "kk[h][0] = k2.x; kk[h][1] = k2.y; }")
    else:
        load.append(f"kk[h][b] = __ldg((const unsigned*)({sk.crd} + ({at}) / {sk.n}));")
    fetch = ["#pragma unroll", f"      for (int h = 0; h < {rows}; ++h)", "#pragma unroll",
             f"      for (int b = 0; b < {vec}; ++b) {{", f"        {zero}",
             "        if (sd_ok[h] && cc < sd_c1) {", *[f"          {x}" for x in load], "        }", "      }"]
    keep = [f"    for (int h = 0; h < {rows}; ++h) for (int b = 0; b < {vec}; ++b) sd_{n[0]}[h][b] = {n}[h][b];"
            for n in ("v", "kk")]
    return [
        *_nm_lut(sk),
        f"  {regs.replace('v[', 'sd_v[').replace('kk[', 'sd_k[')}",
        "  {",
        "    const long long cc = sd_c0;",
        f"    {regs}",
        *fetch,
        *keep,
        "  }",
        "  for (long long sd_c = sd_c0; sd_c < sd_c1; ++sd_c) {",
        "    const long long cc = sd_c + 1;",
        f"    {regs}",
        *fetch,
        f"    unsigned sd_lo[{rows}][{q}], sd_hi[{rows}][{q}];  // per row: {q} quads of dense 16-bit values",
        *_nm_lut_expand(sk, q, mtiles, slots),
        *keep,
        *mma_lines,
        "  }",
    ]


def _nm_lut(sk: Skinny) -> list:
    """N = 2: a group's two slots (one 32-bit word of values) become its M dense values through byte
    permutes; the selectors, one per output word, are looked up by the group's index byte itself
    (c0 in its low ``bits`` bits, c1 above; an index >= M is an empty slot)."""
    words, bits = sk.m // 2, sk.m.bit_length()
    entries, ones = 1 << (2 * bits), (1 << bits) - 1
    return [
        f"  __shared__ unsigned sd_lut[{entries}][{(words + 1) // 2}];",
        f"  for (int e = threadIdx.x; e < {entries}; e += blockDim.x) {{",
        f"    const int c0 = e & {ones}, c1 = e >> {bits};",
        f"    for (int w = 0; w < {words}; w += 2) {{",
        "      unsigned sel = 0;",
        "      for (int x = 0; x < 4; ++x) {  // output halves 2w .. 2w + 3: byte pairs 0-1 (c0), 2-3 (c1), or zero",
        "        const int p = 2 * w + x;",
        "        sel |= (unsigned)(c0 == p ? 0x10 : c1 == p ? 0x32 : 0x44) << (8 * x);",
        "      }",
        "      sd_lut[e][w / 2] = sel;",
        "    }",
        "  }",
        "  __syncthreads();",
    ]


def _nm_lut_expand(sk: Skinny, q: int, mtiles: int, slots: int) -> list:
    m, per_q = sk.m, sk.m // 4
    field = (1 << (2 * m.bit_length())) - 1  # the two indices of a group's byte
    return [
        "#pragma unroll",
        f"    for (int h = 0; h < {2 * mtiles}; ++h) {{",
        "#pragma unroll",
        f"      for (int g = 0; g < {slots // 2}; ++g) {{  // the lane's groups: 2 slots each, 4 per vector",
        "        const uint4 vv = sd_v[h][g >> 2];",
        "        const unsigned vw = (g & 3) == 0 ? vv.x : (g & 3) == 1 ? vv.y : (g & 3) == 2 ? vv.z : vv.w;",
        f"        const unsigned e = (sd_k[h][g >> 2] >> (8 * (g & 3))) & {field}u;  // the group's index byte",
        "#pragma unroll",
        f"        for (int qq = 0; qq < {per_q}; ++qq) {{",
        "          const unsigned sel = sd_lut[e][qq];",
        f"          sd_lo[h][g * {per_q} + qq] = __byte_perm(vw, 0u, sel);",
        f"          sd_hi[h][g * {per_q} + qq] = __byte_perm(vw, 0u, sel >> 16);",
        "        }",
        "      }",
        "    }",
    ]


# Columns per chunk of a row (4 lanes, one 32-bit mask word each) in the bitmap template.
BITMAP_CHUNK = 128
# A row's value window in shared memory: room for a chunk's values from the 16-byte boundary before
# the first (up to 7 + 128, in five 16-byte vectors per lane of its quad), and 16 bytes of padding so
# that the 8 rows of a warp's store start 20 banks apart. 43 KB for 8 warps of 16 rows: the template
# runs bitmap weights with one m16 tile per warp (``config``).
WIN_STRIDE = 168


def _bitmap_expand4() -> list:
    """Columns 4u..4u+3 of the lane's mask word ``m``: their values, the next packed halves from
    (x0, x1), moved to their columns and the others zeroed (``sd_lo``: columns 4u, 4u + 1; ``sd_hi``:
    4u + 2, 4u + 3), and ``p`` past them. Two bits of the mask pick a byte selector from an 8-byte
    table (itself a byte permute) that takes a column's value from the word's halves or zero from
    the second operand; the high pair's word starts past the low pair's values (a funnel shift).
    Selectors looked up in a table in shared memory (LDS.128 at random entries) made the L1 pipe the
    bottleneck on an H100 (bank conflicts); computed with popcounts and masks they ran within noise."""
    return [
        "        // per pair of columns: none, the first, the second, both: 0x4444, 0x4410, 0x1044, 0x3210",
        "        const unsigned il = (m >> (4 * u)) & 3u, ih = (m >> (4 * u + 2)) & 3u, r2 = il - (il >> 1);",
        "        sd_lo[h][u] = sd_prmt(x0, 0u, sd_prmt(0x44104444u, 0x32101044u, il * 0x22u + 0x10u));",
        "        sd_hi[h][u] = sd_prmt(__funnelshift_rc(x0, x1, 16u * r2), 0u,",
        "                              sd_prmt(0x44104444u, 0x32101044u, ih * 0x22u + 0x10u));",
        "        p += r2 + ih - (ih >> 1);  // set bits of a 2-bit number: x - (x >> 1)",
    ]


def _bitmap_offsets(sk: Skinny, splitk: int, mtiles: int) -> list:
    """Each warp's first packed value in each of its rows: the set bits of the mask words of the
    warps before it (a word per lane and chunk), counted by those warps and summed through shared
    memory."""
    return [
        f"  __shared__ long long sd_cnt[{splitk}][{16 * mtiles}];",
        "#pragma unroll",
        f"  for (int h = 0; h < {2 * mtiles}; ++h) {{",
        "    long long n = 0;",
        "    if (sd_ok[h])",
        "      for (long long cc = sd_c0; cc < sd_c1; ++cc)",
        f"        n += __popc(__ldg({sk.mask} + sd_base[h] + cc * 4 + sd_t));",
        "    n += __shfl_xor_sync(0xffffffffu, n, 1); n += __shfl_xor_sync(0xffffffffu, n, 2);",
        "    if (sd_t == 0) sd_cnt[sd_warp][sd_r + 8 * h] = n;",
        "  }",
        "  __syncthreads();",
        f"  for (int h = 0; h < {2 * mtiles}; ++h)",
        "    for (int w = 0; w < sd_warp; ++w) sd_vbase[h] += sd_cnt[w][sd_r + 8 * h];",
    ]


def _bitmap_expand(sk: Skinny, rows: int, mma_lines: list) -> list:
    """Every quad of the chunk expanded (``sd_lo``, ``sd_hi``: [row][quad]), then ``mma_lines``."""
    u16 = "(const unsigned short*)"
    return [
        f"    unsigned sd_lo[{rows}][8], sd_hi[{rows}][8];  // per row: 8 quads of dense 16-bit values",
        "#pragma unroll",
        f"    for (int h = 0; h < {rows}; ++h) {{",
        "      const unsigned m = sd_mc[h];",
        f"      const int mis = (int)(((unsigned long long)({u16}{sk.values} + sd_vbase[h]) & 15ull) >> 1);",
        "      const unsigned* wrow = (const unsigned*)&sd_win[sd_warp][sd_r + 8 * h][0];",
        "      int p = mis + sd_bc[h];  // the window position of the next value",
        "#pragma unroll",
        "      for (int u = 0; u < 8; ++u) {",
        "        const unsigned* wp = wrow + (p >> 1);",
        "        const unsigned s = (unsigned)(p & 1) << 4, w1 = wp[1];",
        "        const unsigned x0 = __funnelshift_r(wp[0], w1, s), x1 = __funnelshift_r(w1, wp[2], s);",
        *_bitmap_expand4(),
        "      }",
        "    }",
        *mma_lines,
    ]


def _bitmap_expand_each(sk: Skinny, rows: int, mma_u: list) -> list:
    """Quad ``u`` of every row expanded (``sd_lo``, ``sd_hi``: [row]) and multiplied (``mma_u``) in
    turn: fewer live registers than the whole chunk's 8 quads at once."""
    u16 = "(const unsigned short*)"
    body = [x.replace("sd_lo[h][u]", "sd_lo[h]").replace("sd_hi[h][u]", "sd_hi[h]") for x in _bitmap_expand4()]
    return [
        f"    int sd_p[{rows}];  // per row: the window position of the next value",
        "#pragma unroll",
        f"    for (int h = 0; h < {rows}; ++h)",
        f"      sd_p[h] = (int)(((unsigned long long)({u16}{sk.values} + sd_vbase[h]) & 15ull) >> 1) + sd_bc[h];",
        "#pragma unroll",
        "    for (int u = 0; u < 8; ++u) {",
        f"      unsigned sd_lo[{rows}], sd_hi[{rows}];",
        "#pragma unroll",
        f"      for (int h = 0; h < {rows}; ++h) {{",
        "        const unsigned m = sd_mc[h];",
        "        int& p = sd_p[h];",
        "        const unsigned* wp = (const unsigned*)&sd_win[sd_warp][sd_r + 8 * h][0] + (p >> 1);",
        "        const unsigned s = (unsigned)(p & 1) << 4, w1 = wp[1];",
        "        const unsigned x0 = __funnelshift_r(wp[0], w1, s), x1 = __funnelshift_r(w1, wp[2], s);",
        *body,
        "      }",
        *mma_u,
        "    }",
    ]


def _bitmap_main(sk: Skinny, mtiles: int, mma_lines: list | None, mma_u: list | None = None) -> list:
    """The bitmap main loop, a software pipeline over the warp's chunks (128 columns of each row; lane
    ``t`` of a row's quad owns columns 32t..32t+31, one mask word): while chunk ``c`` is expanded and
    multiplied, the window of chunk ``c + 1``'s values is in flight (its first value is known from the
    bits of the chunks before) and so is the mask word of chunk ``c + 2``.

    A row's values for a chunk are contiguous (about 38 of 128 at 70% sparsity): the quad loads them
    as 16-byte vectors from the 16-byte boundary at or before the first (two per lane: 64 values),
    stores them in the row's window in shared memory, and each lane expands its columns 4 at a time:
    the 3 words holding the next 4 packed values, a funnel shift to the first, and byte permutes picked
    by the 4 mask bits (``_bitmap_expand4``). A lane's first value follows the set bits of the lanes
    before it in the quad (a shuffle scan). A window of more than 64 values (a chunk more than about
    45% full) has the rest loaded when it is used (up to three more vectors per lane). The chunk's
    products: ``mma_lines`` after all 8 quads are expanded, or, given ``mma_u``, quad by quad."""
    rows, vals = 2 * mtiles, sk.values
    u16 = "(const unsigned short*)"

    def bits(h, chunk):  # the lane's mask word of a chunk; zero past the warp's chunks
        return f"(sd_ok[{h}] && {chunk} < sd_c1) ? __ldg({sk.mask} + sd_base[{h}] + ({chunk}) * 4 + sd_t) : 0u"

    def scan(m, before, total):  # exclusive prefix of the quad's set bits, and their total
        return [f"      {{ const int n = __popc({m}); int x = n, y = __shfl_up_sync(0xffffffffu, x, 1, 4);",
                "        if (sd_t >= 1) x += y; y = __shfl_up_sync(0xffffffffu, x, 2, 4); if (sd_t >= 2) x += y;",
                f"        {before} = x - n; {total} = __shfl_sync(0xffffffffu, x, 3, 4); }}"]

    def window(h, vb, total, dst):  # the quad's 16-byte vectors from the boundary at or before vb
        return [f"      {{ const unsigned long long a = (unsigned long long)({u16}{vals} + {vb});",
                "        const uint4* A = (const uint4*)(a & ~15ull) + sd_t;",
                f"        const unsigned long long e = (unsigned long long)({u16}{vals} + sd_vend[{h}]);",
                "        const int need = (int)((a & 15ull) >> 1) + " + total + ";",
                f"        {dst}[0] = make_uint4(0, 0, 0, 0); {dst}[1] = make_uint4(0, 0, 0, 0);",
                f"        if ({total} > 0 && (unsigned long long)A < e) {dst}[0] = __ldg(A);",
                f"        if (need > 32 && (unsigned long long)(A + 4) < e) {dst}[1] = __ldg(A + 4); }}"]

    return [
        f"  unsigned sd_mc[{rows}], sd_mn[{rows}];  // the lane's mask words of this chunk and the next",
        f"  int sd_bc[{rows}], sd_tc[{rows}];  // this chunk: values before the lane's in its quad, in the quad",
        f"  uint4 sd_wc[{rows}][2];  // this chunk's window (the quad's 16-byte vectors)",
        "#pragma unroll",
        f"  for (int h = 0; h < {rows}; ++h) {{",
        f"    sd_mc[h] = {bits('h', 'sd_c0')};",
        f"    sd_mn[h] = {bits('h', 'sd_c0 + 1')};",
        *scan("sd_mc[h]", "sd_bc[h]", "sd_tc[h]"),
        *window("h", "sd_vbase[h]", "sd_tc[h]", "sd_wc[h]"),
        "  }",
        "  for (long long sd_c = sd_c0; sd_c < sd_c1; ++sd_c) {",
        f"    unsigned sd_mnn[{rows}]; int sd_bn[{rows}], sd_tn[{rows}]; uint4 sd_wn[{rows}][2]; "
        f"long long sd_vn[{rows}];",
        "#pragma unroll",
        f"    for (int h = 0; h < {rows}; ++h) {{  // the next chunk's window, the mask word of the one after",
        "      sd_vn[h] = sd_vbase[h] + sd_tc[h];",
        *scan("sd_mn[h]", "sd_bn[h]", "sd_tn[h]"),
        *window("h", "sd_vn[h]", "sd_tn[h]", "sd_wn[h]"),
        f"      sd_mnn[h] = {bits('h', 'sd_c + 2')};",
        "    }",
        "    __syncwarp();  // the lanes are done reading the last chunk's windows",
        "#pragma unroll",
        f"    for (int h = 0; h < {rows}; ++h) {{",
        "      uint4* w = (uint4*)&sd_win[sd_warp][sd_r + 8 * h][0];",
        "      w[sd_t] = sd_wc[h][0]; w[4 + sd_t] = sd_wc[h][1];",
        f"      const unsigned long long a = (unsigned long long)({u16}{vals} + sd_vbase[h]);",
        "      const int need = (int)((a & 15ull) >> 1) + sd_tc[h];",
        "      if (need > 64) {  // a chunk more than about 45% full: the rest of its window, now",
        "        const uint4* A = (const uint4*)(a & ~15ull) + sd_t;",
        f"        const unsigned long long e = (unsigned long long)({u16}{vals} + sd_vend[h]);",
        "        for (int k = 2; k < 5; ++k)",
        "          if (need > 32 * k && (unsigned long long)(A + 4 * k) < e) w[4 * k + sd_t] = __ldg(A + 4 * k);",
        "      }",
        "    }",
        "    __syncwarp();",
        *(_bitmap_expand(sk, rows, mma_lines) if mma_u is None else _bitmap_expand_each(sk, rows, mma_u)),
        "#pragma unroll",
        f"    for (int h = 0; h < {rows}; ++h) {{",
        "      sd_vbase[h] = sd_vn[h]; sd_mc[h] = sd_mn[h]; sd_mn[h] = sd_mnn[h]; sd_bc[h] = sd_bn[h];",
        "      sd_tc[h] = sd_tn[h]; sd_wc[h][0] = sd_wn[h][0]; sd_wc[h][1] = sd_wn[h][1];",
        "    }",
        "  }",
    ]


# ---- bitmap weights: row tiles per block, the columns split across a thread-block cluster ----------

# (warps per block, blocks per cluster splitting the columns, min blocks per SM, clusters launched:
# 0 for one per block of rows) of the cluster kernel (``render_bitmap_cluster``); None: the
# split-K-in-a-block kernel above.
BITMAP_CLUSTER = (4, 8, 4, 0)

CLUSTER_PTX = r"""
__device__ __forceinline__ void sd_cluster_sync() {
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
__device__ __forceinline__ unsigned sd_mapa(const void* p, unsigned rank) {  // the same variable in block rank
  unsigned r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
               : "=r"(r) : "r"((unsigned)__cvta_generic_to_shared(p)), "r"(rank));
  return r;
}
__device__ __forceinline__ float sd_dsmem_f32(unsigned a) {
  float v; asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(a) : "memory"); return v;
}
__device__ __forceinline__ int sd_dsmem_s32(unsigned a) {
  int v; asm volatile("ld.shared::cluster.s32 %0, [%1];" : "=r"(v) : "r"(a) : "memory"); return v;
}
__device__ __forceinline__ void sd_ldsm_t(unsigned a, unsigned& d0, unsigned& d1, unsigned& d2, unsigned& d3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(d0), "=r"(d1), "=r"(d2), "=r"(d3) : "r"(a));
}
"""


def cluster_smem(warps: int, nt: int, xrows: int) -> tuple:
    """(bytes of the windows / split-K parts, bytes in all) of the cluster kernel's dynamic shared
    memory, X's ``xrows`` rows after the windows."""
    win = max(warps * 16 * WIN_STRIDE * 2, warps * 16 * (16 * nt + 1) * 4)
    win = (win + 127) // 128 * 128
    return win, win + xrows * 32 * nt


def render_bitmap_cluster(ks, k: int, sk: Skinny, nt: int, warps: int, minblocks: int, cluster: int) -> str:
    """Bitmap weights, a different split of the work: the ``warps`` warps of a block take 16 different
    rows each and the same columns (the block's ``1 / cluster`` share of them); the ``cluster`` blocks
    of a thread-block cluster (Hopper) take the same rows and the column shares in turn, and add their
    parts through distributed shared memory. X's rows of the block's columns are staged in shared
    memory once (read from L2 once per block, not once per warp) and its mma fragments are read with
    ``ldmatrix.trans`` (a 16-byte row per lane, swizzled: no bank conflicts) instead of four 4-byte
    loads through L1 per fragment. Each warp's first packed value of a row is the row's ``pos`` plus
    the set bits of the blocks before it in the cluster (each block counts its own and reads the
    others' counts through distributed shared memory). The value windows and their expansion are the
    split-K kernel's (``_bitmap_main``)."""

    loop = ks.steps[k].loop
    mma = HALF_MMA[ks.types.arrays[sk.values][0]]
    stm = CStmts(ks.types, ks.cexpr)
    c = ks.cexpr
    rows_blk = 16 * warps
    per_rank = rows_blk // cluster  # rows each block of the cluster sums and stores
    win, _ = cluster_smem(warps, nt, 0)
    lines = [MMA.format(T=mma), PRMT, CLUSTER_PTX,
             f'extern "C" __global__ void __cluster_dims__({cluster}, 1, 1) __launch_bounds__({32 * warps}, '
             f'{minblocks}) {ks.fn.name}_k{k}_skinny{nt}x{warps}x1x{minblocks}x8x{cluster}('
             + ", ".join(ks.params()) + ") {"]
    ks.prologue(loop, lines)
    lines += [
        "  extern __shared__ __align__(128) unsigned char sd_dyn[];",
        "  const int sd_warp = threadIdx.x >> 5, sd_lane = threadIdx.x & 31, sd_t = sd_lane & 3, sd_r = sd_lane >> 2;",
        f"  const int sd_rank = (int)(blockIdx.x % {cluster});  // the block's share of the columns",
        f"  const unsigned short* __restrict__ sd_x = (const unsigned short*){sk.dense};",
        f"  const long long sd_ld = {sk.dense}_sh1;  // X's row length (the output's columns)",
        f"  const long long sd_per = ({c(sk.extent)}) / {BITMAP_CHUNK * cluster};  // chunks of the block",
        "  const long long sd_c0 = sd_rank * sd_per, sd_c1 = sd_c0 + sd_per;",
        f"  const int sd_kr = (int)sd_per * {BITMAP_CHUNK};  // X's rows of the block's columns",
        f"  uint4* sd_xs = (uint4*)(sd_dyn + {win});",
        "  // X's rows in shared memory: 16-byte unit (x, nh) of column tile a at a * 2kr + 8(x / 4) +",
        "  // ((2(x % 4) + nh) ^ s(x / 32 % 4)): the 8 rows an ldmatrix reads (x = 32t + 4u + i) in 8 bank groups",
        f"  for (int i = threadIdx.x; i < sd_kr * {2 * nt}; i += {32 * warps}) {{",
        f"    const int x = i / {2 * nt}, a = (i % {2 * nt}) >> 1, nh = i & 1, t = (x >> 5) & 3;",
        f"    const uint4 v = __ldg((const uint4*)(sd_x + (sd_c0 * {BITMAP_CHUNK} + x) * sd_ld + 16 * a + 8 * nh));",
        "    sd_xs[a * 2 * sd_kr + 8 * (x >> 2) + ((2 * (x & 3) + nh) ^ ((t & 1) | ((t & 2) << 1)))] = v;",
        "  }",
        f"  const long long sd_nrb = (sd_stop - sd_start + {rows_blk - 1}) / {rows_blk};  // blocks of rows",
        "  // a cluster takes blocks of rows in turn (as many clusters as fit at once: X is staged once)",
        f"  for (long long sd_rb = blockIdx.x / {cluster}; sd_rb < sd_nrb; sd_rb += gridDim.x / {cluster}) {{",
        f"  const long long sd_blk0 = sd_start + sd_rb * {rows_blk};",
        "  const long long sd_row0 = sd_blk0 + 16 * sd_warp;",
    ]
    lines += _rows(ks, loop, sk, stm, nt, 1, "columns 0-7 / 8-15 of the tile")
    lines += [
        f"  __shared__ int sd_cnt[{rows_blk}];  // the set bits of each row in the block's columns",
        "#pragma unroll",
        "  for (int h = 0; h < 2; ++h) {",
        "    int n = 0;",
        "    if (sd_ok[h]) {",
        "#pragma unroll 2",
        "      for (long long cc = sd_c0 + sd_t; cc < sd_c1; cc += 4) {  // a chunk's 4 words per lane",
        f"        const uint4 w = __ldg((const uint4*)({sk.mask} + sd_base[h] + cc * 4));",
        "        n += __popc(w.x) + __popc(w.y) + __popc(w.z) + __popc(w.w);",
        "      }",
        "    }",
        "    n += __shfl_xor_sync(0xffffffffu, n, 1); n += __shfl_xor_sync(0xffffffffu, n, 2);",
        "    if (sd_t == 0) sd_cnt[16 * sd_warp + sd_r + 8 * h] = n;",
        "  }",
        "  sd_cluster_sync();  // X staged, every block's counts published",
        "#pragma unroll",
        "  for (int h = 0; h < 2; ++h)",
        "    for (int q = 0; q < sd_rank; ++q)",
        "      sd_vbase[h] += sd_dsmem_s32(sd_mapa(&sd_cnt[16 * sd_warp + sd_r + 8 * h], q));",
        f"  unsigned short (*sd_win)[16][{WIN_STRIDE}] = (unsigned short (*)[16][{WIN_STRIDE}])sd_dyn;",
        "  // the lane's ldmatrix row: matrix g = lane / 8 (k half g & 1, column half g >> 1), its row j = lane % 8",
        "  // is mma k slot 8(g & 1) + j: column 32(j / 2) + 4u + 2(g & 1) + j % 2 of the chunk (_mma's k order)",
        "  const int sd_g = sd_lane >> 3, sd_j = sd_lane & 7, sd_jt = sd_j >> 1;",
        "  const unsigned sd_xl = (unsigned)__cvta_generic_to_shared(sd_xs) + 16u * (64u * sd_jt",
        "      + ((2 * (2 * (sd_g & 1) + (sd_j & 1)) + (sd_g >> 1)) ^ ((sd_jt & 1) | ((sd_jt & 2) << 1))));",
    ]
    mma_u = [
        "      const unsigned sd_xu = sd_xl + (unsigned)(sd_c - sd_c0) * 4096u + 128u * u;",
        "#pragma unroll",
        f"      for (int a = 0; a < {nt}; ++a) {{",
        "        unsigned b0, b1, b2, b3;",
        "        sd_ldsm_t(sd_xu + (unsigned)(a * 32 * sd_kr), b0, b1, b2, b3);",
        f"        sd_mma_{mma}(sd_acc[0][a][0], sd_lo[0], sd_lo[1], sd_hi[0], sd_hi[1], b0, b1);",
        f"        sd_mma_{mma}(sd_acc[0][a][1], sd_lo[0], sd_lo[1], sd_hi[0], sd_hi[1], b2, b3);",
        "      }",
    ]
    lines += _bitmap_main(sk, 1, None, mma_u)
    dims = f"[{16 * nt + 1}]"
    lines += [
        "  __syncthreads();  // every warp is done with its window",
        f"  float (*sd_part){dims} = (float (*){dims})sd_dyn;  // [block row][column]",
        "#pragma unroll",
        f"  for (int a = 0; a < {nt}; ++a)",
        "#pragma unroll",
        "    for (int h = 0; h < 2; ++h) {",
        "      float* p = &sd_part[16 * sd_warp + sd_r + 8 * h][16 * a + 2 * sd_t];",
        "      p[0] = sd_acc[0][a][0][2 * h]; p[1] = sd_acc[0][a][0][2 * h + 1];",
        "      p[8] = sd_acc[0][a][1][2 * h]; p[9] = sd_acc[0][a][1][2 * h + 1];",
        "    }",
        "  sd_cluster_sync();  // every block's parts are in its shared memory",
        f"  for (int i = threadIdx.x; i < {per_rank * 16 * nt}; i += {32 * warps}) {{",
        f"    const int rr = sd_rank * {per_rank} + i / {16 * nt}, cc = i % {16 * nt};",
        "    float s = 0.f;",
        "#pragma unroll",
        f"    for (int q = 0; q < {cluster}; ++q) s += sd_dsmem_f32(sd_mapa(&sd_part[rr][cc], q));",
        "    if (sd_blk0 + rr < sd_stop) {",
    ]
    ks.declare({loop.var, sk.col, sk.acc}, lines, "      ")
    lines.append(f"      {loop.var} = sd_blk0 + rr; {sk.col} = cc; {sk.acc} = s;")
    stm.put([sk.store], 3, lines)
    lines += ["    }", "  }", "  sd_cluster_sync();  // no block reuses or frees its parts while the others read them",
              "  }", "}"]
    return "\n".join(lines) + "\n"

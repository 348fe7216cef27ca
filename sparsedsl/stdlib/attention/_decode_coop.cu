// Decode attention, the cooperative variant "coop" (COOP = 1; after _decode_common.cuh).
// Each warp streams its tokens in tiles of TT = 16 through STAGES shared-memory stages with cp.async:
// a tile's masks, token offsets and its two contiguous value ranges (K and V) are copied with 16-byte
// cp.async (no registers held, STAGES - 1 tiles in flight per warp while one is computed). The range
// bounds of a tile are pos[first token] and pos[first token of the next tile], loaded into registers a
// tile before they are needed. Then lane l owns dims [l*DPL, (l+1)*DPL): its DPL mask bits and a
// popcount prefix over the token's mask give the rank of its values in the token's packed run (no
// per-bit loop over the token): the K pass leaves 16 per-token partial dots per lane, summed by a
// reduce-scatter (8 + 4 + 2 + 1 + 1 shuffles for 16 tokens, lane pair (2t, 2t+1) ends with token t),
// online softmax (exp2), and the V pass accumulates lane-per-dimension (no reduction). The warps of a
// CTA merge through shared memory and the last CTA of a head merges the parts, as in the walk variant.
#ifndef TT
#define TT 16
#endif
#ifndef STAGES
#define STAGES 3
#endif
static_assert(TT == 16, "the reduce-scatter is written for 16 tokens per tile");
#define VCAP (TT * D * (int)sizeof(val_t) + 16)  // bytes of one value range: a full tile plus alignment
#define MCAP (TT * W * 4)
#define PCAP (TT * (int)sizeof(pos_t))
#define STAGE_BYTES (2 * VCAP + 2 * MCAP + 2 * PCAP)
static_assert(STAGE_BYTES % 16 == 0, "stages stay 16-byte aligned");

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
// 16 bytes, of which the first src_bytes are read (the rest zero-filled)
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(smem_addr(dst)), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" :: "r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async8(void* dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" :: "r"(smem_addr(dst)), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_async_wait_tile() { asm volatile("cp.async.wait_group %0;" :: "n"(STAGES - 1)); }

// the value range [beg, end) into dst from its 16-byte aligned start (zeros past the array's end)
__device__ __forceinline__ void stage_values(val_t* dst, const val_t* __restrict__ vals, long long beg, long long end,
                                             long long nvals, int lane) {
    const long long a0 = beg & ~(long long)(VPC - 1);
    const int nch = end > a0 ? (int)((end - a0 + VPC - 1) / VPC) : 0;
    for (int c = lane; c < nch; c += 32) {
        const long long idx = a0 + (long long)c * VPC;
        const long long left = nvals - idx;
        cp_async16(dst + c * VPC, vals + idx, left >= VPC ? 16 : (int)(left * (long long)sizeof(val_t)));
    }
}

struct Stage {
    val_t *k, *v;
    u32 *km, *vm;
    pos_t *kp, *vp;
};
__device__ __forceinline__ Stage stage_at(unsigned char* base) {
    Stage s;
    s.k = reinterpret_cast<val_t*>(base);
    s.v = reinterpret_cast<val_t*>(base + VCAP);
    s.km = reinterpret_cast<u32*>(base + 2 * VCAP);
    s.vm = s.km + TT * W;
    s.kp = reinterpret_cast<pos_t*>(base + 2 * VCAP + 2 * MCAP);
    s.vp = s.kp + TT;
    return s;
}

// one tile's masks, token offsets and value ranges into a stage (rows row0 .. row0 + cnt)
__device__ __forceinline__ void issue_tile(const Stage& s, long long row0, int cnt,
                                           const u32* __restrict__ kmask, const pos_t* __restrict__ kpos,
                                           const val_t* __restrict__ kval, long long knv,
                                           const u32* __restrict__ vmask, const pos_t* __restrict__ vpos,
                                           const val_t* __restrict__ vval, long long vnv,
                                           long long kb, long long ke, long long vb, long long ve, int lane) {
#if W % 4 == 0
    for (int c = lane; c < cnt * (W / 4); c += 32) {
        cp_async16(s.km + 4 * c, kmask + row0 * W + 4 * c, 16);
        cp_async16(s.vm + 4 * c, vmask + row0 * W + 4 * c, 16);
    }
#else
    for (int c = lane; c < cnt * W; c += 32) {
        cp_async4(s.km + c, kmask + row0 * W + c);
        cp_async4(s.vm + c, vmask + row0 * W + c);
    }
#endif
    if (lane < cnt) {
#if POS64
        cp_async8(s.kp + lane, kpos + row0 + lane);
        cp_async8(s.vp + lane, vpos + row0 + lane);
#else
        cp_async4(s.kp + lane, kpos + row0 + lane);
        cp_async4(s.vp + lane, vpos + row0 + lane);
#endif
    }
    stage_values(s.k, kval, kb, ke, knv, lane);
    stage_values(s.v, vval, vb, ve, vnv, lane);
}

// lane's DPL mask bits of a token and the rank of its first value in the token's run
__device__ __forceinline__ void lane_bits(const u32* __restrict__ m, int lane, u32& bits, int& rank) {
    const int wi = (lane * DPL) >> 5, sh = (lane * DPL) & 31;
    u32 mw[W];
#if W % 4 == 0
#pragma unroll
    for (int w = 0; w < W; w += 4) {
        const u32x4 v = *reinterpret_cast<const u32x4*>(m + w);
        mw[w] = v.x, mw[w + 1] = v.y, mw[w + 2] = v.z, mw[w + 3] = v.w;
    }
#else
#pragma unroll
    for (int w = 0; w < W; ++w) mw[w] = m[w];
#endif
    u32 mine = 0u;
    int pre = 0;
#pragma unroll
    for (int w = 0; w < W; ++w) {
        pre += w < wi ? __popc(mw[w]) : 0;
        mine = w == wi ? mw[w] : mine;
    }
    rank = pre + __popc(mine & ((1u << sh) - 1u));
    bits = (mine >> sh) & ((1u << DPL) - 1u);
}

// lane's DPL mask bits of token t of a stage (masks m, offsets p; none for t >= cnt) and the index of
// its first value in the stage's value range (a0: the range's 16-byte aligned start)
__device__ __forceinline__ void lane_values(const u32* m, const pos_t* p, int t, int cnt, long long a0, int lane,
                                            u32& bits, int& r) {
    lane_bits(m + t * W, lane, bits, r);
    if (t >= cnt) bits = 0u;
    r += (int)((long long)p[t] - a0);
}

// one step of the reduce-scatter of TT per-token partials over the warp: lanes that differ in bit
// (2 * HALF) swap halves, each keeping the half its bit selects, summed
template <int HALF>
__device__ __forceinline__ void reduce_scatter(float (&pd)[TT], int lane) {
    const bool upper = lane & (2 * HALF);
#pragma unroll
    for (int j = 0; j < HALF; ++j) {
        const float send = upper ? pd[j] : pd[j + HALF];
        const float keep = upper ? pd[j + HALF] : pd[j];
        pd[j] = keep + __shfl_xor_sync(FULL, send, 2 * HALF);
    }
}

extern "C" __global__ void __launch_bounds__(NT)
KERNEL_NAME(const void* __restrict__ qv,
            const u32* __restrict__ kmask, const pos_t* __restrict__ kpos, const val_t* __restrict__ kval,
            long long knv,
            const u32* __restrict__ vmask, const pos_t* __restrict__ vpos, const val_t* __restrict__ vval,
            long long vnv,
            int L, int tw, int nparts, float qscale,
            float* __restrict__ part, unsigned* __restrict__ counter, void* __restrict__ out) {
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ float s_acc[NWARPS][D];
    __shared__ float s_p[NWARPS][TT];
    __shared__ float s_m[NWARPS], s_l[NWARPS];
    __shared__ float s_wt[MAX_PARTS];
    __shared__ float s_inv;
    __shared__ int s_last;

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int h = blockIdx.x / nparts, pid = blockIdx.x % nparts;
    unsigned char* wbase = smem + (long long)warp * STAGES * STAGE_BYTES;

    float qr[DPL], acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
#if Q_HALF
        qr[i] = h2f(reinterpret_cast<const u16*>(qv)[(long long)h * D + lane * DPL + i]) * qscale;
#else
        qr[i] = reinterpret_cast<const float*>(qv)[(long long)h * D + lane * DPL + i] * qscale;
#endif
        acc[i] = 0.f;
    }
    const int t0 = pid * NWARPS * tw + warp * tw;
    const int t1 = min(t0 + tw, L);
    const int ntile = t0 < t1 ? (t1 - t0 + TT - 1) / TT : 0;
    const long long rb = (long long)h * L;
    float m = NEG_INF, lsum = 0.f;

    // P(b): the offset of tile b's first value (b = ntile: the end of the warp's tokens)
#define BROW(b) (rb + min(t0 + (b) * TT, t1))
    long long pk = kpos[BROW(0)], pv = vpos[BROW(0)];
#pragma unroll
    for (int j = 0; j < STAGES - 1; ++j) {
        const long long nk = kpos[BROW(j + 1)], nv = vpos[BROW(j + 1)];
        if (j < ntile)
            issue_tile(stage_at(wbase + j * STAGE_BYTES), rb + t0 + j * TT, min(TT, t1 - t0 - j * TT),
                       kmask, kpos, kval, knv, vmask, vpos, vval, vnv, pk, nk, pv, nv, lane);
        cp_async_commit();
        pk = nk, pv = nv;
    }
    long long qk = kpos[BROW(STAGES)], qvv = vpos[BROW(STAGES)];  // the next boundary, a tile ahead

    int cur = 0, nxt = STAGES - 1;  // the stage computed now, the stage filled now
    for (int i = 0; i < ntile; ++i) {
        const int j = i + STAGES - 1;
        if (j < ntile)
            issue_tile(stage_at(wbase + nxt * STAGE_BYTES), rb + t0 + j * TT, min(TT, t1 - t0 - j * TT),
                       kmask, kpos, kval, knv, vmask, vpos, vval, vnv, pk, qk, pv, qvv, lane);
        cp_async_commit();
        pk = qk, pv = qvv;
        qk = kpos[BROW(j + 2)], qvv = vpos[BROW(j + 2)];
        cp_async_wait_tile();  // tile i has landed (this lane's copies; the warp's after the sync)
        __syncwarp();

        const Stage s = stage_at(wbase + cur * STAGE_BYTES);
        const int cnt = min(TT, t1 - t0 - i * TT);
        const long long ka0 = (long long)s.kp[0] & ~(long long)(VPC - 1);
        const long long va0 = (long long)s.vp[0] & ~(long long)(VPC - 1);

        // K: lane l's partial dot of each token over its dims
        float pd[TT];
#pragma unroll
        for (int t = 0; t < TT; ++t) {
            u32 bits;
            int r;
            lane_values(s.km, s.kp, t, cnt, ka0, lane, bits, r);
            float a = 0.f;
#pragma unroll
            for (int k = 0; k < DPL; ++k) {
                if (bits >> k & 1u) a = fmaf(qr[k], as_f32(s.k[r++]), a);
            }
            pd[t] = a;
        }
        // reduce-scatter: after the step of width `half`, lane keeps tokens [sel*half, (sel+1)*half)
        // of its current block, sel = its bit (2 * half)
        reduce_scatter<8>(pd, lane);  // constant indices throughout: pd stays in registers
        reduce_scatter<4>(pd, lane);
        reduce_scatter<2>(pd, lane);
        reduce_scatter<1>(pd, lane);
        const int tok = lane >> 1;
        float sc = pd[0] + __shfl_xor_sync(FULL, pd[0], 1);  // token tok's score, times scale * log2 e
        const bool valid = tok < cnt;
        sc = valid ? sc : NEG_INF;
        const float mnew = fmaxf(m, warp_max(sc));  // finite: token 0 is valid
        const float corr = exp2f(m - mnew);        // 0 on the first tile
        const float p = valid ? exp2f(sc - mnew) : 0.f;
        lsum = fmaf(lsum, corr, (lane & 1) ? 0.f : p);
        if (!(lane & 1)) s_p[warp][tok] = p;
#pragma unroll
        for (int k = 0; k < DPL; ++k) acc[k] *= corr;
        m = mnew;
        __syncwarp();

        // V: lane l accumulates its dims over the tile's tokens
#pragma unroll
        for (int t = 0; t < TT; ++t) {
            u32 bits;
            int r;
            lane_values(s.vm, s.vp, t, cnt, va0, lane, bits, r);
            const float pt = s_p[warp][t];
#pragma unroll
            for (int k = 0; k < DPL; ++k) {
                if (bits >> k & 1u) acc[k] = fmaf(pt, as_f32(s.v[r++]), acc[k]);
            }
        }
        __syncwarp();  // the stage and s_p are written again
        cur = cur + 1 == STAGES ? 0 : cur + 1;
        nxt = nxt + 1 == STAGES ? 0 : nxt + 1;
    }
#undef BROW

    // the CTA's warps merged into one partial
    const float l = warp_sum(lsum);
#pragma unroll
    for (int k = 0; k < DPL; ++k) s_acc[warp][lane * DPL + k] = acc[k];
    if (lane == 0) s_m[warp] = m, s_l[warp] = l;
    __syncthreads();
    merge_and_store([&](int w, int c) { return s_acc[w][c]; }, s_m, s_l, s_wt, s_inv, s_last, part, counter, out, h,
                    pid, nparts, lane, warp);
}


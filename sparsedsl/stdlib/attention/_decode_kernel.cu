// Decode attention on the bitmap KV cache (flash-decoding over bit-packed K and V), and the cache's
// build on the GPU (per-token magnitude pruning into the bitmap). No headers: fp16 through PTX cvt.
//
// Storage (sparsedsl's bitmap level, one row = one token of one (batch, head) slice): HEAD_DIM / 32
// uint32 mask words per token (dim c is bit c % 32 of word c / 32), pos[token] the offset of the
// token's first packed value, the kept values packed in dim order (fp16 or fp32).
//
// KERNEL_NAME (decode), one CTA of NWARPS warps per (head, part); a warp walks its tokens_per_warp
// tokens in tiles of 32, one token per lane:
//   1. the tile's mask words and offsets (lane = token; loaded two tiles ahead);
//   2. the tile's K and V values are one contiguous range each ([pos[first], pos[last] + count)):
//      prefetched into L2 a tile ahead, then staged into shared memory with aligned 16-byte loads
//      (all of a round issued before any store);
//   3. scores: lane t walks its token's set bits (__ffs) and multiplies with q (shared, prescaled by
//      scale * log2 e); equal per-token counts make the lanes' value reads conflict-free (odd stride);
//   4. online softmax over the tile (warp max, exp2);
//   5. V: the tile is expanded into a dense 32 x HEAD_DIM tile in shared memory (zeroed, then each lane
//      scatters its token's values by their bits) and lane l accumulates dims [l*DPL, (l+1)*DPL) over
//      the tile's tokens (one vector load per token).
// The warps of a CTA merge through shared memory into one partial (o, m, l) per part; the last CTA
// of a head (an atomic ticket, reset by it for the next launch) merges the parts and writes the output:
// one launch per decode step.
//
// PRUNE_NAME / PACK_NAME: the cache build, one warp per token: the keep-th largest |x| by a radix
// select on the float bits (31 warp-wide counts), ties kept in dim order, zeros dropped (as the host
// build, which stores x != 0); then, once the host has the offsets (a cumsum of the counts), each
// lane writes its kept values at pos[token] + (set bits before it).
//
// Compile-time: HEAD_DIM (32, 64, 128 or 256), V_HALF (values fp16 or fp32), Q_HALF, OUT_HALF, IN_HALF
// (the build's input), POS64 (int64 offsets), NWARPS, ROUNDS (16-byte chunks per lane per staging round).

#define D HEAD_DIM
#define W (D / 32)    // mask words per token
#define DPL (D / 32)  // dims per lane (P V) and elements per lane (build)
#define LDT (D + 8)   // row stride of the dense V tile, in values: 16-byte aligned rows
#define NT (32 * NWARPS)
#define FULL 0xffffffffu
#define NEG_INF (-__int_as_float(0x7f800000))
#ifndef ROUNDS
#define ROUNDS 5
#endif
#ifndef MAX_PARTS
#define MAX_PARTS 512
#endif

typedef unsigned int u32;
typedef unsigned short u16;
struct __align__(16) u32x4 { u32 x, y, z, w; };
struct __align__(8) u32x2 { u32 x, y; };

#if V_HALF
typedef u16 val_t;
#define VPC 8  // values per 16-byte chunk
#else
typedef float val_t;
#define VPC 4
#endif
#if POS64
typedef long long pos_t;
#else
typedef int pos_t;
#endif
#define BUF (32 * LDT)  // values per staging buffer (also holds the dense tile)

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
__device__ __forceinline__ float as_f32(u16 h) { return h2f(h); }
__device__ __forceinline__ float as_f32(float f) { return f; }

__device__ __forceinline__ u32x4 ld_nc16(const void* p) {
    u32x4 r;
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
    return r;
}
__device__ __forceinline__ void prefetch_l2(const void* p) {
    asm volatile("prefetch.global.L2 [%0];" :: "l"(p));
}
__device__ __forceinline__ float ld_cg(const float* p) {  // L2 only: written by other CTAs this launch
    float r;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(r) : "l"(p));
    return r;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
    return v;
}
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}

#if defined(KERNEL_NAME) && !COOP

// 16 bytes of values starting at element idx (16-byte aligned); past the array's end: zeros
__device__ __forceinline__ u32x4 load_chunk(const val_t* vals, long long idx, long long nvals) {
    if (idx + VPC <= nvals) return ld_nc16(vals + idx);
    u32 r[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
#if V_HALF
        const u32 lo = idx + 2 * j < nvals ? vals[idx + 2 * j] : 0u;
        const u32 hi = idx + 2 * j + 1 < nvals ? vals[idx + 2 * j + 1] : 0u;
        r[j] = lo | (hi << 16);
#else
        r[j] = idx + j < nvals ? __float_as_uint(vals[idx + j]) : 0u;
#endif
    }
    u32x4 out = {r[0], r[1], r[2], r[3]};
    return out;
}

// a token's mask words and value offset (zeros for a lane past the warp's tokens)
__device__ __forceinline__ void load_meta(const u32* __restrict__ mask, const pos_t* __restrict__ pos,
                                          long long row, bool valid, u32 (&mw)[W], pos_t& p) {
    if (!valid) {
#pragma unroll
        for (int w = 0; w < W; ++w) mw[w] = 0u;
        p = 0;
        return;
    }
    const u32* m = mask + row * W;
#if W % 4 == 0
#pragma unroll
    for (int w = 0; w < W; w += 4) {
        const u32x4 v = ld_nc16(m + w);
        mw[w] = v.x, mw[w + 1] = v.y, mw[w + 2] = v.z, mw[w + 3] = v.w;
    }
#else
#pragma unroll
    for (int w = 0; w < W; ++w) mw[w] = m[w];
#endif
    p = pos[row];
}

// the next tile's values (one contiguous range) into L2, a 128-byte line per lane: issued a tile
// ahead, so that the tile's staging loads hit L2 instead of waiting on HBM
__device__ __forceinline__ void prefetch_tile(const val_t* vals, const u32 (&mw)[W], pos_t p, int nvalid, int lane) {
    int c = 0;
#pragma unroll
    for (int w = 0; w < W; ++w) c += __popc(mw[w]);
    const long long beg = __shfl_sync(FULL, (long long)p, 0);
    const long long end = __shfl_sync(FULL, (long long)p + c, nvalid - 1);
    const unsigned long long first = reinterpret_cast<unsigned long long>(vals + beg) & ~127ull;
    const unsigned long long last = reinterpret_cast<unsigned long long>(vals + end);
    for (unsigned long long a = first + 128ull * lane; a < last; a += 128ull * 32)
        prefetch_l2(reinterpret_cast<const void*>(a));
}

// DPL values of one dense-tile row, as float
__device__ __forceinline__ void load_row(const val_t* p, float (&v)[DPL]) {
#if V_HALF && DPL == 4
    const u32x2 r = *reinterpret_cast<const u32x2*>(p);
    v[0] = h2f((u16)(r.x & 0xffff)), v[1] = h2f((u16)(r.x >> 16));
    v[2] = h2f((u16)(r.y & 0xffff)), v[3] = h2f((u16)(r.y >> 16));
#elif V_HALF && DPL == 8
    const u32x4 r = *reinterpret_cast<const u32x4*>(p);
    const u32 a[4] = {r.x, r.y, r.z, r.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) v[2 * j] = h2f((u16)(a[j] & 0xffff)), v[2 * j + 1] = h2f((u16)(a[j] >> 16));
#elif V_HALF && DPL == 2
    const u32 r = *reinterpret_cast<const u32*>(p);
    v[0] = h2f((u16)(r & 0xffff)), v[1] = h2f((u16)(r >> 16));
#elif !V_HALF && DPL % 4 == 0
#pragma unroll
    for (int j = 0; j < DPL; j += 4) {
        const u32x4 r = *reinterpret_cast<const u32x4*>(p + j);
        v[j] = __uint_as_float(r.x), v[j + 1] = __uint_as_float(r.y);
        v[j + 2] = __uint_as_float(r.z), v[j + 3] = __uint_as_float(r.w);
    }
#else
#pragma unroll
    for (int j = 0; j < DPL; ++j) v[j] = as_f32(p[j]);
#endif
}

__device__ __forceinline__ void store_out(void* out, long long i, float v) {
#if OUT_HALF
    reinterpret_cast<u16*>(out)[i] = f2h(v);
#else
    reinterpret_cast<float*>(out)[i] = v;
#endif
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
    __shared__ float s_q[D];
    __shared__ float s_m[NWARPS], s_l[NWARPS];
    __shared__ float s_wt[MAX_PARTS];
    __shared__ float s_inv;
    __shared__ int s_last;

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int h = blockIdx.x / nparts, pid = blockIdx.x % nparts;
    val_t* bufK = reinterpret_cast<val_t*>(smem) + (long long)warp * 2 * BUF;
    val_t* bufV = bufK + BUF;

    for (int i = threadIdx.x; i < D; i += NT) {
#if Q_HALF
        s_q[i] = h2f(reinterpret_cast<const u16*>(qv)[(long long)h * D + i]) * qscale;
#else
        s_q[i] = reinterpret_cast<const float*>(qv)[(long long)h * D + i] * qscale;
#endif
    }
    __syncthreads();

    const int t0 = pid * NWARPS * tw + warp * tw;
    const int t1 = min(t0 + tw, L);
    const long long rb = (long long)h * L;
    float m = NEG_INF, lsum = 0.f, acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; ++i) acc[i] = 0.f;

    // masks and offsets of this tile (k*, v*) and the next (nk*, nv*)
    u32 km[W], vm[W], nkm[W], nvm[W];
    pos_t kp, vp, nkp, nvp;
    load_meta(kmask, kpos, rb + t0 + lane, t0 + lane < t1, km, kp);
    load_meta(vmask, vpos, rb + t0 + lane, t0 + lane < t1, vm, vp);
    load_meta(kmask, kpos, rb + t0 + 32 + lane, t0 + 32 + lane < t1, nkm, nkp);
    load_meta(vmask, vpos, rb + t0 + 32 + lane, t0 + 32 + lane < t1, nvm, nvp);

    for (int ts = t0; ts < t1; ts += 32) {
        const int nvalid = min(32, t1 - ts);
        const bool valid = lane < nvalid;
        // the masks and offsets two tiles ahead, and the next tile's values into L2, in flight while
        // this tile is computed
        u32 nnkm[W], nnvm[W];
        pos_t nnkp, nnvp;
        const bool nnv = ts + 64 + lane < t1;
        load_meta(kmask, kpos, rb + ts + 64 + lane, nnv, nnkm, nnkp);
        load_meta(vmask, vpos, rb + ts + 64 + lane, nnv, nnvm, nnvp);
        if (ts + 32 < t1) {
            prefetch_tile(kval, nkm, nkp, min(32, t1 - ts - 32), lane);
            prefetch_tile(vval, nvm, nvp, min(32, t1 - ts - 32), lane);
        }

        // this tile's K and V value ranges
        int kc = 0, vc = 0;
#pragma unroll
        for (int w = 0; w < W; ++w) kc += __popc(km[w]), vc += __popc(vm[w]);
        const long long kbeg = __shfl_sync(FULL, (long long)kp, 0);
        const long long kend = __shfl_sync(FULL, (long long)kp + kc, nvalid - 1);
        const long long vbeg = __shfl_sync(FULL, (long long)vp, 0);
        const long long vend = __shfl_sync(FULL, (long long)vp + vc, nvalid - 1);
        const long long ka0 = kbeg & ~(long long)(VPC - 1), va0 = vbeg & ~(long long)(VPC - 1);
        const int nck = (int)((kend - ka0 + VPC - 1) / VPC), ncv = (int)((vend - va0 + VPC - 1) / VPC);

        // stage both ranges into shared memory: a round's loads all issued before its stores
        const int nch = max(nck, ncv);
        for (int base = 0; base < nch; base += 32 * ROUNDS) {
            u32x4 rk[ROUNDS], rv[ROUNDS];
#pragma unroll
            for (int i = 0; i < ROUNDS; ++i) {
                const int c = base + i * 32 + lane;
                if (c < nck) rk[i] = load_chunk(kval, ka0 + (long long)c * VPC, knv);
                if (c < ncv) rv[i] = load_chunk(vval, va0 + (long long)c * VPC, vnv);
            }
#pragma unroll
            for (int i = 0; i < ROUNDS; ++i) {
                const int c = base + i * 32 + lane;
                if (c < nck) *reinterpret_cast<u32x4*>(bufK + c * VPC) = rk[i];
                if (c < ncv) *reinterpret_cast<u32x4*>(bufV + c * VPC) = rv[i];
            }
        }
        __syncwarp();

        // scores, one token per lane (already times scale * log2 e)
        float s = NEG_INF;
        if (valid) {
            s = 0.f;
            int off = (int)(kp - ka0);
#pragma unroll
            for (int w = 0; w < W; ++w) {
                u32 bits = km[w];
                while (bits) {
                    const int b = __ffs(bits) - 1;
                    bits &= bits - 1;
                    s = fmaf(s_q[w * 32 + b], as_f32(bufK[off++]), s);
                }
            }
        }
        const float mnew = fmaxf(m, warp_max(s));  // finite: lane 0 holds a token
        const float corr = exp2f(m - mnew);       // 0 on the first tile (m = -inf)
        const float p = valid ? exp2f(s - mnew) : 0.f;
        lsum = fmaf(lsum, corr, p);
#pragma unroll
        for (int i = 0; i < DPL; ++i) acc[i] *= corr;
        m = mnew;
        __syncwarp();  // bufK is free: it becomes the dense V tile

        {
            const u32x4 z = {0u, 0u, 0u, 0u};
            u32x4* t4 = reinterpret_cast<u32x4*>(bufK);
            const int n16 = nvalid * (int)(LDT * sizeof(val_t) / 16);
            for (int i = lane; i < n16; i += 32) t4[i] = z;
        }
        __syncwarp();
        if (valid) {
            int off = (int)(vp - va0);
            val_t* row = bufK + lane * LDT;
#pragma unroll
            for (int w = 0; w < W; ++w) {
                u32 bits = vm[w];
                while (bits) {
                    const int b = __ffs(bits) - 1;
                    bits &= bits - 1;
                    row[w * 32 + b] = bufV[off++];
                }
            }
        }
        __syncwarp();
#pragma unroll 4
        for (int t = 0; t < nvalid; ++t) {
            const float pt = __shfl_sync(FULL, p, t);
            float v[DPL];
            load_row(bufK + t * LDT + lane * DPL, v);
#pragma unroll
            for (int i = 0; i < DPL; ++i) acc[i] = fmaf(pt, v[i], acc[i]);
        }
        __syncwarp();  // the buffers are staged again by the next tile
#pragma unroll
        for (int w = 0; w < W; ++w) km[w] = nkm[w], vm[w] = nvm[w], nkm[w] = nnkm[w], nvm[w] = nnvm[w];
        kp = nkp, vp = nvp, nkp = nnkp, nvp = nnvp;
    }

    // the CTA's warps merged into one partial (each warp's accumulator through its own buffer)
    const float l = warp_sum(lsum);
    const float* s_acc = reinterpret_cast<const float*>(smem);  // warp w's D floats at w * warp_stride
    {
        float* mine = reinterpret_cast<float*>(bufK);  // this warp's buffer, free now
#pragma unroll
        for (int i = 0; i < DPL; ++i) mine[lane * DPL + i] = acc[i];
        if (lane == 0) s_m[warp] = m, s_l[warp] = l;
    }
    __syncthreads();
    float M = NEG_INF;
#pragma unroll
    for (int w = 0; w < NWARPS; ++w) M = fmaxf(M, s_m[w]);
    float Lc = 0.f, wt[NWARPS];
#pragma unroll
    for (int w = 0; w < NWARPS; ++w) {
        wt[w] = s_m[w] == NEG_INF ? 0.f : exp2f(s_m[w] - M);
        Lc = fmaf(s_l[w], wt[w], Lc);
    }
    const long long warp_stride = 2LL * BUF * (long long)sizeof(val_t) / 4;  // floats between warps' buffers
    if (nparts == 1) {  // the whole context in this CTA: the output directly
        for (int c = threadIdx.x; c < D; c += NT) {
            float o = 0.f;
#pragma unroll
            for (int w = 0; w < NWARPS; ++w) o = fmaf(s_acc[w * warp_stride + c], wt[w], o);
            store_out(out, (long long)h * D + c, o / Lc);
        }
        return;
    }
    float* mine = part + ((long long)h * nparts + pid) * (D + 2);
    for (int c = threadIdx.x; c < D; c += NT) {
        float o = 0.f;
#pragma unroll
        for (int w = 0; w < NWARPS; ++w) o = fmaf(s_acc[w * warp_stride + c], wt[w], o);
        mine[c] = o;
    }
    if (threadIdx.x == 0) mine[D] = M, mine[D + 1] = Lc;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(counter + h, 1u) == (unsigned)(nparts - 1);
    __syncthreads();
    if (!s_last) return;

    // the last CTA of head h: merge the parts
    __threadfence();
    const float* hp = part + (long long)h * nparts * (D + 2);
    if (warp == 0) {
        float mx = NEG_INF;
        for (int c = lane; c < nparts; c += 32) mx = fmaxf(mx, ld_cg(hp + (long long)c * (D + 2) + D));
        mx = warp_max(mx);
        float ls = 0.f;
        for (int c = lane; c < nparts; c += 32) {
            const float wgt = exp2f(ld_cg(hp + (long long)c * (D + 2) + D) - mx);
            s_wt[c] = wgt;
            ls = fmaf(wgt, ld_cg(hp + (long long)c * (D + 2) + D + 1), ls);
        }
        ls = warp_sum(ls);
        if (lane == 0) s_inv = 1.f / ls;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < D; c += NT) {
        float o = 0.f;
#pragma unroll 8
        for (int k = 0; k < nparts; ++k) o = fmaf(s_wt[k], ld_cg(hp + (long long)k * (D + 2) + c), o);
        store_out(out, (long long)h * D + c, o * s_inv);
    }
    if (threadIdx.x == 0) counter[h] = 0u;  // ready for the next launch
}

#endif  // KERNEL_NAME

#if defined(KERNEL_NAME) && COOP
// ---- the cooperative variant (COOP = 1) ---------------------------------------------------------------
// Each warp streams its tokens in tiles of TT = 16 through STAGES shared-memory stages with cp.async:
// a tile's masks, token offsets and its two contiguous value ranges (K and V) are copied with 16-byte
// cp.async (no registers held, STAGES - 1 tiles in flight per warp while one is computed). The range
// bounds of a tile are pos[first token] and pos[first token of the next tile], loaded into registers a
// tile before they are needed. Then lane l owns dims [l*DPL, (l+1)*DPL): its DPL mask bits and a
// popcount prefix over the token's mask give the rank of its values in the token's packed run (no
// per-bit loop over the token): the K pass leaves 16 per-token partial dots per lane, summed by a
// reduce-scatter (8 + 4 + 2 + 1 + 1 shuffles for 16 tokens, lane pair (2t, 2t+1) ends with token t),
// online softmax (exp2), and the V pass accumulates lane-per-dimension (no reduction). The warps of a
// CTA merge through shared memory and the last CTA of a head merges the parts, as the first variant.
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

// lane's DPL mask bits of token t and the rank of its first value in the token's run
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

__device__ __forceinline__ void store_out_c(void* out, long long i, float v) {
#if OUT_HALF
    reinterpret_cast<u16*>(out)[i] = f2h(v);
#else
    reinterpret_cast<float*>(out)[i] = v;
#endif
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
            lane_bits(s.km + t * W, lane, bits, r);
            if (t >= cnt) bits = 0u;
            r += (int)((long long)s.kp[t] - ka0);
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
            lane_bits(s.vm + t * W, lane, bits, r);
            if (t >= cnt) bits = 0u;
            r += (int)((long long)s.vp[t] - va0);
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
    float M = NEG_INF;
#pragma unroll
    for (int w = 0; w < NWARPS; ++w) M = fmaxf(M, s_m[w]);
    float Lc = 0.f, wt[NWARPS];
#pragma unroll
    for (int w = 0; w < NWARPS; ++w) {
        wt[w] = s_m[w] == NEG_INF ? 0.f : exp2f(s_m[w] - M);
        Lc = fmaf(s_l[w], wt[w], Lc);
    }
    if (nparts == 1) {
        for (int c = threadIdx.x; c < D; c += NT) {
            float o = 0.f;
#pragma unroll
            for (int w = 0; w < NWARPS; ++w) o = fmaf(s_acc[w][c], wt[w], o);
            store_out_c(out, (long long)h * D + c, o / Lc);
        }
        return;
    }
    float* mine = part + ((long long)h * nparts + pid) * (D + 2);
    for (int c = threadIdx.x; c < D; c += NT) {
        float o = 0.f;
#pragma unroll
        for (int w = 0; w < NWARPS; ++w) o = fmaf(s_acc[w][c], wt[w], o);
        mine[c] = o;
    }
    if (threadIdx.x == 0) mine[D] = M, mine[D + 1] = Lc;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(counter + h, 1u) == (unsigned)(nparts - 1);
    __syncthreads();
    if (!s_last) return;

    __threadfence();
    const float* hp = part + (long long)h * nparts * (D + 2);
    if (warp == 0) {
        float mx = NEG_INF;
        for (int c = lane; c < nparts; c += 32) mx = fmaxf(mx, ld_cg(hp + (long long)c * (D + 2) + D));
        mx = warp_max(mx);
        float ls = 0.f;
        for (int c = lane; c < nparts; c += 32) {
            const float mc = ld_cg(hp + (long long)c * (D + 2) + D);
            const float wgt = mc == NEG_INF ? 0.f : exp2f(mc - mx);
            s_wt[c] = wgt;
            ls = fmaf(wgt, ld_cg(hp + (long long)c * (D + 2) + D + 1), ls);
        }
        ls = warp_sum(ls);
        if (lane == 0) s_inv = 1.f / ls;
    }
    __syncthreads();
    for (int c = threadIdx.x; c < D; c += NT) {
        float o = 0.f;
#pragma unroll 8
        for (int k = 0; k < nparts; ++k) o = fmaf(s_wt[k], ld_cg(hp + (long long)k * (D + 2) + c), o);
        store_out_c(out, (long long)h * D + c, o * s_inv);
    }
    if (threadIdx.x == 0) counter[h] = 0u;  // ready for the next launch
}

#endif  // KERNEL_NAME && COOP

#if defined(PRUNE_NAME) || defined(PACK_NAME)

#if IN_HALF
typedef u16 in_t;
#else
typedef float in_t;
#endif

// lane's DPL consecutive elements of row r, as float
__device__ __forceinline__ void load_elems(const in_t* __restrict__ x, long long r, int lane, float (&v)[DPL]) {
#pragma unroll
    for (int i = 0; i < DPL; ++i) v[i] = as_f32(x[r * D + lane * DPL + i]);
}

#endif

#ifdef PRUNE_NAME

// mask words and kept count of each token: its `keep` largest |x| (ties in dim order), nonzeros only
extern "C" __global__ void __launch_bounds__(NT)
PRUNE_NAME(const in_t* __restrict__ x, long long R, int keep, u32* __restrict__ mask, int* __restrict__ counts) {
    const int lane = threadIdx.x & 31;
    const long long r = (long long)blockIdx.x * NWARPS + (threadIdx.x >> 5);
    if (r >= R) return;
    float v[DPL];
    load_elems(x, r, lane, v);
    u32 key[DPL];
#pragma unroll
    for (int i = 0; i < DPL; ++i) key[i] = __float_as_uint(v[i]) & 0x7fffffffu;
    // the largest t with #{key >= t} >= keep, a bit at a time from the top
    u32 t = 0u;
    for (int b = 30; b >= 0; --b) {
        const u32 c = t | (1u << b);
        int n = 0;
#pragma unroll
        for (int i = 0; i < DPL; ++i) n += key[i] >= c;
        if (__reduce_add_sync(FULL, (u32)n) >= (u32)keep) t = c;
    }
    int ngt = 0, before = 0;
    const u32 lower = (1u << lane) - 1u;
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
        ngt += key[i] > t;
        before += __popc(__ballot_sync(FULL, key[i] == t) & lower);
    }
    const int need = keep - (int)__reduce_add_sync(FULL, (u32)ngt);  // equal keys still to keep
    u32 bits = 0u;
#pragma unroll
    for (int i = 0; i < DPL; ++i) {
        bool k = key[i] > t;
        if (key[i] == t) k = before++ < need;
        if (k && v[i] != 0.f) bits |= 1u << i;
    }
    const int word = lane * DPL / 32, shift = lane * DPL % 32;
    u32 mine = 0u;
#pragma unroll
    for (int w = 0; w < W; ++w) {
        const u32 wv = __reduce_or_sync(FULL, word == w ? bits << shift : 0u);
        if (lane == w) mine = wv;
    }
    if (lane < W) mask[r * W + lane] = mine;
    const u32 total = __reduce_add_sync(FULL, (u32)__popc(bits));
    if (lane == 0) counts[r] = (int)total;
}

#endif  // PRUNE_NAME

#ifdef PACK_NAME

#if V_HALF
__device__ __forceinline__ val_t to_val(float f) { return f2h(f); }
#else
__device__ __forceinline__ val_t to_val(float f) { return f; }
#endif

// each token's kept values at pos[token] + (set bits before them)
extern "C" __global__ void __launch_bounds__(NT)
PACK_NAME(const in_t* __restrict__ x, long long R, const u32* __restrict__ mask, const pos_t* __restrict__ pos,
          val_t* __restrict__ vals) {
    const int lane = threadIdx.x & 31;
    const long long r = (long long)blockIdx.x * NWARPS + (threadIdx.x >> 5);
    if (r >= R) return;
    const int word = lane * DPL / 32, shift = lane * DPL % 32;
    int before = 0;
    u32 mw = 0u;
#pragma unroll
    for (int w = 0; w < W; ++w) {
        const u32 m = mask[r * W + w];
        if (w < word) before += __popc(m);
        if (w == word) mw = m;
    }
    before += __popc(mw & ((1u << shift) - 1u));
    const u32 bits = (mw >> shift) & ((1u << DPL) - 1u);
    if (!bits) return;
    float v[DPL];
    load_elems(x, r, lane, v);
    long long off = (long long)pos[r] + before;
#pragma unroll
    for (int i = 0; i < DPL; ++i)
        if (bits >> i & 1u) vals[off++] = to_val(v[i]);
}

#endif  // PACK_NAME

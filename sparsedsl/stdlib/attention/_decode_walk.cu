// Decode attention, the "walk" variant (after _decode_common.cuh). KERNEL_NAME, one CTA of NWARPS warps
// per (head, part); a warp walks its tokens_per_warp tokens in tiles of 32, one token per lane:
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
// one launch per decode step. Compile-time: ROUNDS (16-byte chunks per lane per staging round).

#define LDT (D + 8)     // row stride of the dense V tile, in values: 16-byte aligned rows
#define BUF (32 * LDT)  // values per staging buffer (also holds the dense tile)
#ifndef ROUNDS
#define ROUNDS 5
#endif

__device__ __forceinline__ void prefetch_l2(const void* p) {
    asm volatile("prefetch.global.L2 [%0];" :: "l"(p));
}

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
    const long long warp_stride = 2LL * BUF * (long long)sizeof(val_t) / 4;  // floats between warps' buffers
    merge_and_store([&](int w, int c) { return s_acc[w * warp_stride + c]; }, s_m, s_l, s_wt, s_inv, s_last, part,
                    counter, out, h, pid, nparts, lane, warp);
}


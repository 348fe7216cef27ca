// Block-sparse flash attention, version 2 (after _flash_common.cuh): register blocking as in
// FlashAttention-2: a warp owns MT m16 tiles (16 * MT query rows), so every K/V fragment loaded by
// ldmatrix feeds MT MMAs; BM = 16 * MT * NWARPS rows per CTA, key/value tiles of BN (32 or 64) rows; Q
// re-read from shared memory by ldmatrix per k-step (QREG 0) or held in registers (QREG 1); scale *
// log2(e) folded into one multiply before exp2; in a partial block the mask is read as one 64-bit row
// bitmask word per row (a full block reads nothing); the output is written as float32 or, when out16 is
// set, in the inputs' 16-bit type. Two K/V stages (cp.async double buffering). MINBLOCKS: CTAs per SM
// promised to ptxas.
#ifndef MT
#define MT 2
#endif
#ifndef BN
#define BN 64
#endif
#ifndef QREG
#define QREG 0
#endif
#ifndef MINBLOCKS
#define MINBLOCKS 1
#endif
#define WROWS (16 * MT)      // query rows per warp
#define BM (WROWS * NWARPS)  // query rows per CTA

// ROWS rows x HEAD_DIM halves from global (row stride HEAD_DIM) into shared (row stride LDS)
template <int ROWS>
__device__ __forceinline__ void load_tile(half_t* dst, const half_t* src, int tid) {
    constexpr int CHUNKS = HEAD_DIM / 8;  // 16-byte chunks per row
#pragma unroll
    for (int k = tid; k < ROWS * CHUNKS; k += NTHREADS) {
        int row = k / CHUNKS, ch = k % CHUNKS;
        cp_async16(dst + row * LDS + ch * 8, src + (size_t)row * HEAD_DIM + ch * 8);
    }
}

// bits: per stored block, r rows of c/64 little-endian 64-bit words (bit j of a word: column j of
// its 64), read only for partial blocks. O: float (out16 == 0) or the inputs' 16-bit type.
extern "C" __global__ void __launch_bounds__(NTHREADS, MINBLOCKS)
KERNEL_NAME(const half_t* __restrict__ Q, const half_t* __restrict__ K, const half_t* __restrict__ V,
            const int* __restrict__ pos, const int* __restrict__ crd,
            const unsigned long long* __restrict__ bits, const unsigned char* __restrict__ full,
            void* __restrict__ O, int Lq, int Lk, int r, int c, int nI, float scale_log2, int out16) {
    extern __shared__ __align__(16) half_t smem[];
    half_t* Qs = smem;
    half_t* Ks = Qs + BM * LDS;       // 2 stages
    half_t* Vs = Ks + 2 * BN * LDS;   // 2 stages

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t4 = lane & 3;
    // grid (slices, query tiles): CTAs start x-fastest, so every slice's heavy (late, causal) tile goes
    // first, then the next heaviest of each: longest first over the whole grid, a short tail
    const int h = blockIdx.x;
    const int qblock = gridDim.y - 1 - blockIdx.y;
    const int q0 = qblock * BM;
    const int I = q0 / r, ro = q0 % r;
    const int p0 = pos[h * nI + I], p1 = pos[h * nI + I + 1];
    const int sub = c / BN;
    const int T = (p1 - p0) * sub;
    const int words = c / 64;  // bitmask words per block row

    const half_t* Qh = Q + ((size_t)h * Lq + q0) * HEAD_DIM;
    const half_t* Kh = K + (size_t)h * Lk * HEAD_DIM;
    const half_t* Vh = V + (size_t)h * Lk * HEAD_DIM;

    float o[MT][HEAD_DIM / 8][4];
    float mrow[MT][2], lrow[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int n = 0; n < HEAD_DIM / 8; ++n) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.f;
        mrow[mt][0] = mrow[mt][1] = NEG_INF;
        lrow[mt][0] = lrow[mt][1] = 0.f;
    }

    if (T > 0) {
        load_tile<BM>(Qs, Qh, tid);
        {
            int kv0 = crd[p0] * c;
            load_tile<BN>(Ks, Kh + (size_t)kv0 * HEAD_DIM, tid);
            load_tile<BN>(Vs, Vh + (size_t)kv0 * HEAD_DIM, tid);
        }
        cp_commit();
        cp_wait_all();
        __syncthreads();

        // ldmatrix lane roles: A (Q, row-major 16x16): matrices (rows 0-7 | 8-15) x (cols 0-7 | 8-15);
        // B (K rows = keys, non-transposed): matrices (keys n*8 | n*8+8) x (d 0-7 | 8-15)
        const int mi = lane >> 3, rr = lane & 7;
        const half_t* qlane = Qs + (warp * WROWS + (mi & 1) * 8 + rr) * LDS + (mi >> 1) * 8;
        const int klane = ((mi >> 1) * 8 + rr) * LDS + (mi & 1) * 8;
        const int vlane = ((mi & 1) * 8 + rr) * LDS + (mi >> 1) * 8;
#if QREG
        u32 qf[MT][HEAD_DIM / 16][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int kk = 0; kk < HEAD_DIM / 16; ++kk) ldmatrix_x4(qf[mt][kk], qlane + mt * 16 * LDS + kk * 16);
#endif

        for (int it = 0; it < T; ++it) {
            const int stage = it & 1;
            const int p = p0 + it / sub, s_in = it % sub;
            if (it + 1 < T) {
                int pn = p0 + (it + 1) / sub, sn = (it + 1) % sub;
                int kv0n = crd[pn] * c + sn * BN;
                load_tile<BN>(Ks + (stage ^ 1) * BN * LDS, Kh + (size_t)kv0n * HEAD_DIM, tid);
                load_tile<BN>(Vs + (stage ^ 1) * BN * LDS, Vh + (size_t)kv0n * HEAD_DIM, tid);
                cp_commit();
            }
            const half_t* Kt = Ks + stage * BN * LDS;
            const half_t* Vt = Vs + stage * BN * LDS;

            // S = Q K^T: each K fragment pair feeds MT MMAs
            float s[MT][BN / 8][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < HEAD_DIM / 16; ++kk) {
#if QREG
#define QFRAG(mt) qf[mt][kk]
#else
                u32 qa[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) ldmatrix_x4(qa[mt], qlane + mt * 16 * LDS + kk * 16);
#define QFRAG(mt) qa[mt]
#endif
#pragma unroll
                for (int n = 0; n < BN / 8; n += 2) {
                    u32 b[4];
                    ldmatrix_x4(b, Kt + klane + n * 8 * LDS + kk * 16);
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma16816(s[mt][n], QFRAG(mt), b[0], b[1]);
                        mma16816(s[mt][n + 1], QFRAG(mt), b[2], b[3]);
                    }
                }
#undef QFRAG
            }
            // scale into the log2 domain; in a partial block, -inf where the mask's bit is clear
            if (full[p]) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int n = 0; n < BN / 8; ++n)
#pragma unroll
                        for (int e = 0; e < 4; ++e) s[mt][n][e] *= scale_log2;
            } else {
                const unsigned long long* wb = bits + (size_t)p * r * words + (s_in * BN) / 64;
                const int shift = (s_in * BN) % 64 + 2 * t4;  // a tile of <= 64 columns lies in one word
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
                    for (int hr = 0; hr < 2; ++hr) {
                        const int row = ro + warp * WROWS + mt * 16 + g + 8 * hr;
                        unsigned long long w[BN > 64 ? BN / 64 : 1];
#pragma unroll
                        for (int i = 0; i < (BN > 64 ? BN / 64 : 1); ++i) w[i] = wb[(size_t)row * words + i] >> shift;
#pragma unroll
                        for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
                            for (int e = 0; e < 2; ++e) {
                                const float v = s[mt][n][2 * hr + e] * scale_log2;
                                s[mt][n][2 * hr + e] = ((w[n / 8] >> ((n % 8) * 8 + e)) & 1ull) ? v : NEG_INF;
                            }
                        }
                    }
                }
            }
            // online softmax: per m tile, rows g (e = 0, 1) and g + 8 (e = 2, 3)
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
                for (int hr = 0; hr < 2; ++hr) {
                    float mx = mrow[mt][hr];
#pragma unroll
                    for (int n = 0; n < BN / 8; ++n) mx = fmaxf(mx, fmaxf(s[mt][n][2 * hr], s[mt][n][2 * hr + 1]));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
                    const float muse = (mx == NEG_INF) ? 0.f : mx;
                    const float alpha = exp2f(mrow[mt][hr] - muse);  // 0 when the old max is -inf
                    mrow[mt][hr] = mx;
                    float sum = 0.f;
#pragma unroll
                    for (int n = 0; n < BN / 8; ++n) {
                        const float a = exp2f(s[mt][n][2 * hr] - muse), b = exp2f(s[mt][n][2 * hr + 1] - muse);
                        s[mt][n][2 * hr] = a;
                        s[mt][n][2 * hr + 1] = b;
                        sum += a + b;
                    }
                    lrow[mt][hr] = lrow[mt][hr] * alpha + sum;
#pragma unroll
                    for (int n = 0; n < HEAD_DIM / 8; ++n) {
                        o[mt][n][2 * hr] *= alpha;
                        o[mt][n][2 * hr + 1] *= alpha;
                    }
                }
            }
            // O += P V, P from the S accumulators; each V fragment pair feeds MT MMAs
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) {
                u32 a[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    a[mt][0] = pack2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                    a[mt][1] = pack2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                    a[mt][2] = pack2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                    a[mt][3] = pack2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
                }
#pragma unroll
                for (int n = 0; n < HEAD_DIM / 8; n += 2) {
                    u32 b[4];
                    ldmatrix_x4_trans(b, Vt + vlane + kk * 16 * LDS + n * 8);
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma16816(o[mt][n], a[mt], b[0], b[1]);
                        mma16816(o[mt][n + 1], a[mt], b[2], b[3]);
                    }
                }
            }
            if (it + 1 < T) cp_wait_all();
            __syncthreads();
        }
    }
    // normalise and store
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
            float l = lrow[mt][hr];
            l += __shfl_xor_sync(0xffffffff, l, 1);
            l += __shfl_xor_sync(0xffffffff, l, 2);
            const float inv = l > 0.f ? 1.f / l : 0.f;
            const size_t row = (size_t)h * Lq + q0 + warp * WROWS + mt * 16 + g + 8 * hr;
            if (out16) {
                u32* orow = (u32*)((half_t*)O + row * HEAD_DIM + 2 * t4);
#pragma unroll
                for (int n = 0; n < HEAD_DIM / 8; ++n) orow[n * 4] = pack2(o[mt][n][2 * hr] * inv, o[mt][n][2 * hr + 1] * inv);
            } else {
                float* orow = (float*)O + row * HEAD_DIM + 2 * t4;
#pragma unroll
                for (int n = 0; n < HEAD_DIM / 8; ++n) {
                    float2 v;
                    v.x = o[mt][n][2 * hr] * inv;
                    v.y = o[mt][n][2 * hr + 1] * inv;
                    *(float2*)(orow + n * 8) = v;
                }
            }
        }
    }
}

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
        load_kv_tile<BN>(Ks, Vs, 0, Kh, Vh, crd[p0] * c, tid);
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
                const int pn = p0 + (it + 1) / sub, sn = (it + 1) % sub;
                const int kv0n = crd[pn] * c + sn * BN;
                load_kv_tile<BN>(Ks, Vs, (stage ^ 1) * BN * LDS, Kh, Vh, kv0n, tid);
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
                for (int mt = 0; mt < MT; ++mt) scale_scores(s[mt], scale_log2);
            } else {
                const unsigned long long* wb = bits + (size_t)p * r * words + (s_in * BN) / 64;
                const int shift = (s_in * BN) % 64 + 2 * t4;  // a tile of <= 64 columns lies in one word
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
                    mask_scores(s[mt], wb, words, shift, ro + warp * WROWS + mt * 16 + g, scale_log2);
            }
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) online_softmax(s[mt], o[mt], mrow[mt], lrow[mt]);
            // O += P V, P from the S accumulators; each V fragment pair feeds MT MMAs
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) {
                u32 a[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) p_frag(a[mt], s[mt], kk);
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
    for (int mt = 0; mt < MT; ++mt)
        store_o(O, (size_t)h * Lq + q0 + warp * WROWS + mt * 16 + g, o[mt], lrow[mt], t4, out16);
}

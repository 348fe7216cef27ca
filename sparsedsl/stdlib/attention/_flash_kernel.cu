// Block-sparse flash attention, forward (FlashAttention-2's online softmax over the stored blocks of
// a blocked mask), in two versions chosen at compile time by KERNEL_VERSION:
//
// 1: one warp per 16 query rows, BM = 16 * NWARPS rows per CTA, key/value tiles of 64 rows; every K/V
//    fragment read from shared memory feeds one m16n8k16 MMA (4 and 8 warps measured the same on the
//    H100: shared-memory bound), Q kept in registers, the mask's bytes read in partial blocks.
// 2: register blocking as in FlashAttention-2: a warp owns MT m16 tiles (16 * MT query rows), so every
//    K/V fragment loaded by ldmatrix feeds MT MMAs; BM = 16 * MT * NWARPS rows per CTA, key/value tiles
//    of BN (32 or 64) rows; Q re-read from shared memory by ldmatrix per k-step (QREG 0) or held in
//    registers (QREG 1); scale * log2(e) folded into one multiply before exp2; in a partial block the
//    mask is read as one 64-bit row bitmask word per row (a full block reads nothing); the output is
//    written as float32 or, when out16 is set, in the inputs' 16-bit type.
//
// Both: cp.async double buffering of the K/V tiles, S = Q K^T and O += P V on tensor cores (mma.sync
// m16n8k16, bf16 or f16 in, f32 accumulate), P kept in registers (the S accumulator layout is the A
// operand layout), a query tile's empty blocks never visited, heavy (late, causal) tiles launched first.
// Compile-time: HEAD_DIM (64 or 128), IS_BF16 (1: bfloat16, 0: float16), NWARPS; version 2 also MT, BN,
// QREG. BM must divide the mask's block rows and BN its block columns (the host picks a config that does).

#ifndef KERNEL_VERSION
#define KERNEL_VERSION 1
#endif
#define NTHREADS (32 * NWARPS)
#define LDS (HEAD_DIM + 8)  // padded row (halves): 16-byte aligned rows, conflict-free fragment loads
#define NEG_INF (-__int_as_float(0x7f800000))

typedef unsigned short half_t;
typedef unsigned int u32;

__device__ __forceinline__ u32 smem_u32(const void* p) {
    return static_cast<u32>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(smem_u32(dst)), "l"(src));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::); }

__device__ __forceinline__ void mma16816(float* c, const u32* a, u32 b0, u32 b1) {
#if IS_BF16
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ u32 pack2(float lo, float hi) {  // lo -> low 16 bits
    u32 r;
#if IS_BF16
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
#else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
#endif
    return r;
}

__device__ __forceinline__ void ldmatrix_x4_trans(u32* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}

__device__ __forceinline__ void ldmatrix_x4(u32* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(smem_u32(p)));
}

#if KERNEL_VERSION == 1
#define BM (16 * NWARPS)
#define BN 64

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

extern "C" __global__ void __launch_bounds__(NTHREADS)
KERNEL_NAME(const half_t* __restrict__ Q, const half_t* __restrict__ K, const half_t* __restrict__ V,
            const int* __restrict__ pos, const int* __restrict__ crd, const unsigned char* __restrict__ vals,
            const unsigned char* __restrict__ full, float* __restrict__ O,
            int Lq, int Lk, int r, int c, int nI, float scale_log2) {
    extern __shared__ __align__(16) half_t smem[];
    half_t* Qs = smem;
    half_t* Ks = Qs + BM * LDS;       // 2 stages
    half_t* Vs = Ks + 2 * BN * LDS;   // 2 stages

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t4 = lane & 3;
    const int h = blockIdx.y;
    const int qblock = gridDim.x - 1 - blockIdx.x;  // heavy (late, causal) rows first
    const int q0 = qblock * BM;
    const int I = q0 / r, ro = q0 % r;
    const int p0 = pos[h * nI + I], p1 = pos[h * nI + I + 1];
    const int sub = c / BN;
    const int T = (p1 - p0) * sub;

    const half_t* Qh = Q + ((size_t)h * Lq + q0) * HEAD_DIM;
    const half_t* Kh = K + (size_t)h * Lk * HEAD_DIM;
    const half_t* Vh = V + (size_t)h * Lk * HEAD_DIM;
    float* Oh = O + ((size_t)h * Lq + q0) * HEAD_DIM;

    float o[HEAD_DIM / 8][4];
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float mrow[2] = {NEG_INF, NEG_INF}, lrow[2] = {0.f, 0.f};

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

        u32 qf[HEAD_DIM / 16][4];
        const int qr = warp * 16 + g;
#pragma unroll
        for (int kk = 0; kk < HEAD_DIM / 16; ++kk) {
            const half_t* base = Qs + qr * LDS + kk * 16 + 2 * t4;
            qf[kk][0] = *(const u32*)(base);
            qf[kk][1] = *(const u32*)(base + 8 * LDS);
            qf[kk][2] = *(const u32*)(base + 8);
            qf[kk][3] = *(const u32*)(base + 8 * LDS + 8);
        }

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

            float s[BN / 8][4];
#pragma unroll
            for (int n = 0; n < BN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < HEAD_DIM / 16; ++kk) {
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) {
                    const half_t* kb = Kt + (n * 8 + g) * LDS + kk * 16 + 2 * t4;
                    mma16816(s[n], qf[kk], *(const u32*)kb, *(const u32*)(kb + 8));
                }
            }
            // scale (log2 domain), and the mask's entries in a partial block
            const bool is_full = full[p] != 0;
            const unsigned char* mb = vals + (size_t)p * r * c + (size_t)(ro + warp * 16 + g) * c + s_in * BN;
#pragma unroll
            for (int n = 0; n < BN / 8; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    float v = s[n][e] * scale_log2;
                    if (!is_full) {
                        int col = n * 8 + 2 * t4 + (e & 1);
                        int row8 = (e >> 1) * 8;
                        if (!mb[row8 * c + col]) v = NEG_INF;
                    }
                    s[n][e] = v;
                }
            }
            // online softmax: rows g (e = 0, 1) and g + 8 (e = 2, 3)
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
                float mx = mrow[hr];
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * hr], s[n][2 * hr + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
                const float muse = (mx == NEG_INF) ? 0.f : mx;
                const float alpha = exp2f(mrow[hr] - muse);  // 0 when the old max is -inf
                mrow[hr] = mx;
                float sum = 0.f;
#pragma unroll
                for (int n = 0; n < BN / 8; ++n) {
                    float a = exp2f(s[n][2 * hr] - muse), b = exp2f(s[n][2 * hr + 1] - muse);
                    s[n][2 * hr] = a;
                    s[n][2 * hr + 1] = b;
                    sum += a + b;
                }
                lrow[hr] = lrow[hr] * alpha + sum;
#pragma unroll
                for (int n = 0; n < HEAD_DIM / 8; ++n) {
                    o[n][2 * hr] *= alpha;
                    o[n][2 * hr + 1] *= alpha;
                }
            }
            // O += P V, P from the S accumulators
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) {
                u32 a[4];
                a[0] = pack2(s[2 * kk][0], s[2 * kk][1]);
                a[1] = pack2(s[2 * kk][2], s[2 * kk][3]);
                a[2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
                a[3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
                for (int n = 0; n < HEAD_DIM / 8; n += 2) {
                    const int mi = lane >> 3, rr = lane & 7;
                    const half_t* vb = Vt + (kk * 16 + rr + (mi & 1) * 8) * LDS + n * 8 + (mi >> 1) * 8;
                    u32 b[4];
                    ldmatrix_x4_trans(b, vb);
                    mma16816(o[n], a, b[0], b[1]);
                    mma16816(o[n + 1], a, b[2], b[3]);
                }
            }
            if (it + 1 < T) cp_wait_all();
            __syncthreads();
        }
    }
    // normalise and store (float32)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        float l = lrow[hr];
        l += __shfl_xor_sync(0xffffffff, l, 1);
        l += __shfl_xor_sync(0xffffffff, l, 2);
        const float inv = l > 0.f ? 1.f / l : 0.f;
        float* orow = Oh + (size_t)(warp * 16 + g + 8 * hr) * HEAD_DIM + 2 * t4;
#pragma unroll
        for (int n = 0; n < HEAD_DIM / 8; ++n) {
            float2 v;
            v.x = o[n][2 * hr] * inv;
            v.y = o[n][2 * hr + 1] * inv;
            *(float2*)(orow + n * 8) = v;
        }
    }
}

#elif KERNEL_VERSION == 2
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
#elif KERNEL_VERSION == 3
// Hopper wgmma (sm_90a): a warpgroup (4 warps) per 64 query rows, NWARPS / 4 warpgroups per CTA sharing
// the K/V tiles. S = Q K^T is wgmma m64nBNk16 with Q and K from shared memory (QREG 0) or Q from
// registers (QREG 1); O += P V is wgmma m64nHEAD_DIMk16 with P from registers and V from shared memory
// (transposed: V is MN-major). Tiles are stored without swizzle as 8x16-byte core matrices: row r,
// 16-byte chunk ch of a tile at (r / 8) * CORE_ROWS + ch * 128 + (r % 8) * 16 bytes, one layout for Q, K
// and V (K-major for Q and K: LBO 128, SBO CORE_ROWS; MN-major for V: LBO CORE_ROWS, SBO 128). The
// accumulator fragments of a warp are those of mma.sync m16n8 tiles, so the softmax is version 2's.
// OVERLAP 0: two K/V stages; per tile S, wait, softmax, P V, wait. OVERLAP 1 (FlashAttention-3's
// intra-warpgroup overlap): three K/V stages, and S of the next tile is issued before the softmax of
// this one, so the tensor cores run while the warpgroup computes exponentials.
// The wgmma_* wrappers (long operand lists) are generated by _flash.py and prepended to this file.
#ifndef BN
#define BN 64
#endif
#ifndef QREG
#define QREG 0
#endif
#ifndef MINBLOCKS
#define MINBLOCKS 1
#endif
#ifndef OVERLAP
#define OVERLAP 0
#endif
#define NWG (NWARPS / 4)
#define BM (64 * NWG)
#define CORE_ROWS (HEAD_DIM * 16)  // bytes per 8-row group: HEAD_DIM / 8 core matrices of 128 bytes
#define STAGES (OVERLAP ? 3 : 2)
#define KV_STAGE (BN * HEAD_DIM * 2)

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void cp_wait_1() { asm volatile("cp.async.wait_group 1;\n" ::); }
// keep the compiler from moving accumulator reads above wgmma_wait0 (the asm above does not name them)
// (and, for A fragments read from registers, from reusing those registers before it)
template <int N>
__device__ __forceinline__ void fence_regs(float* r) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void fence_regs(u32* r) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// shared-memory matrix descriptor, no swizzle: start address, leading and stride byte offsets (>> 4)
__device__ __forceinline__ unsigned long long sdesc(u32 addr, u32 lbo, u32 sbo) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
           ((unsigned long long)(sbo >> 4) << 32);
}

// ROWS rows x HEAD_DIM halves from global (row stride HEAD_DIM) into the core-matrix layout; eight
// consecutive threads fill one 128-byte core matrix (no bank conflicts)
template <int ROWS>
__device__ __forceinline__ void load_core(unsigned char* dst, const half_t* src, int tid) {
    constexpr int CH = HEAD_DIM / 8;
#pragma unroll
    for (int k = tid; k < ROWS * CH; k += NTHREADS) {
        const int r7 = k & 7, ch = (k >> 3) % CH, rg = k / (8 * CH);
        cp_async16(dst + rg * CORE_ROWS + ch * 128 + r7 * 16, src + (size_t)(rg * 8 + r7) * HEAD_DIM + ch * 8);
    }
}

// issue S = Q K^T for one key tile (the first k-step overwrites the accumulators); not committed
__device__ __forceinline__ void issue_s(float (&s)[BN / 8][4], u32 q_addr, const u32 (&qf)[HEAD_DIM / 16][4],
                                        u32 k_addr) {
#pragma unroll
    for (int kk = 0; kk < HEAD_DIM / 16; ++kk) {
        const unsigned long long db = sdesc(k_addr + kk * 256, 128, CORE_ROWS);
#if QREG
        WGMMA_S_RS(&s[0][0], qf[kk], db, kk > 0);
#else
        WGMMA_S_SS(&s[0][0], sdesc(q_addr + kk * 256, 128, CORE_ROWS), db, kk > 0);
#endif
    }
}

// scale into the log2 domain, -inf where a partial block's bit is clear; the online softmax (rows g and
// g + 8 of the warp's 16); rescale O; P as 16-bit A fragments
__device__ __forceinline__ void softmax_tile(float (&s)[BN / 8][4], float (&o)[HEAD_DIM / 8][4], float (&mrow)[2],
                                             float (&lrow)[2], u32 (&pa)[BN / 16][4], bool is_full,
                                             const unsigned long long* wb, int words, int shift, int row0,
                                             float scale_log2) {
    if (is_full) {
#pragma unroll
        for (int n = 0; n < BN / 8; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) s[n][e] *= scale_log2;
    } else {
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
            unsigned long long w[BN > 64 ? BN / 64 : 1];
#pragma unroll
            for (int i = 0; i < (BN > 64 ? BN / 64 : 1); ++i) w[i] = wb[(size_t)(row0 + 8 * hr) * words + i] >> shift;
#pragma unroll
            for (int n = 0; n < BN / 8; ++n)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const float v = s[n][2 * hr + e] * scale_log2;
                    s[n][2 * hr + e] = ((w[n / 8] >> ((n % 8) * 8 + e)) & 1ull) ? v : NEG_INF;
                }
        }
    }
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        float mx = mrow[hr];
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * hr], s[n][2 * hr + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
        const float muse = (mx == NEG_INF) ? 0.f : mx;
        const float alpha = exp2f(mrow[hr] - muse);  // 0 when the old max is -inf
        mrow[hr] = mx;
        float sum = 0.f;
#pragma unroll
        for (int n = 0; n < BN / 8; ++n) {
            const float a = exp2f(s[n][2 * hr] - muse), b = exp2f(s[n][2 * hr + 1] - muse);
            s[n][2 * hr] = a;
            s[n][2 * hr + 1] = b;
            sum += a + b;
        }
        lrow[hr] = lrow[hr] * alpha + sum;
#pragma unroll
        for (int n = 0; n < HEAD_DIM / 8; ++n) {
            o[n][2 * hr] *= alpha;
            o[n][2 * hr + 1] *= alpha;
        }
    }
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
        pa[kk][0] = pack2(s[2 * kk][0], s[2 * kk][1]);
        pa[kk][1] = pack2(s[2 * kk][2], s[2 * kk][3]);
        pa[kk][2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[kk][3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
}

// issue O += P V for one key tile (V transposed: MN-major); not committed
__device__ __forceinline__ void issue_pv(float (&o)[HEAD_DIM / 8][4], const u32 (&pa)[BN / 16][4], u32 v_addr) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
        WGMMA_O_RS(&o[0][0], pa[kk], sdesc(v_addr + kk * 2 * CORE_ROWS, CORE_ROWS, 128), 1);
}

extern "C" __global__ void __launch_bounds__(NTHREADS, MINBLOCKS)
KERNEL_NAME(const half_t* __restrict__ Q, const half_t* __restrict__ K, const half_t* __restrict__ V,
            const int* __restrict__ pos, const int* __restrict__ crd,
            const unsigned long long* __restrict__ bits, const unsigned char* __restrict__ full,
            void* __restrict__ O, int Lq, int Lk, int r, int c, int nI, float scale_log2, int out16) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    unsigned char* Qs = smem_raw;
    unsigned char* Ks = Qs + BM * HEAD_DIM * 2;    // STAGES stages
    unsigned char* Vs = Ks + STAGES * KV_STAGE;    // STAGES stages

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wg = warp >> 2, wl = warp & 3;  // warpgroup, warp within it
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
    const int words = c / 64;
    const int wrow = wg * 64 + wl * 16;  // this warp's first row in the tile
    const int row0 = ro + wrow + g;      // this thread's first row in the mask block
    const int shift = 2 * t4;            // + the tile's column offset in its bitmask word, below

    const half_t* Qh = Q + ((size_t)h * Lq + q0) * HEAD_DIM;
    const half_t* Kh = K + (size_t)h * Lk * HEAD_DIM;
    const half_t* Vh = V + (size_t)h * Lk * HEAD_DIM;

    float o[HEAD_DIM / 8][4];
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    float mrow[2] = {NEG_INF, NEG_INF}, lrow[2] = {0.f, 0.f};

    // key tile j: stored block p0 + j / sub, its columns (j % sub) * BN...; rows in K and V
    auto tile_rows = [&](int j) { return (size_t)(crd[p0 + j / sub] * c + (j % sub) * BN) * HEAD_DIM; };
    auto load_kv = [&](int j, int stage) {
        const size_t off = tile_rows(j);
        load_core<BN>(Ks + stage * KV_STAGE, Kh + off, tid);
        load_core<BN>(Vs + stage * KV_STAGE, Vh + off, tid);
    };
    auto mask_words = [&](int j) {
        return bits + (size_t)(p0 + j / sub) * r * words + ((j % sub) * BN) / 64;
    };

    if (T > 0) {
        load_core<BM>(Qs, Qh, tid);
        load_kv(0, 0);
        cp_commit();
#if OVERLAP
        if (T > 1) {
            load_kv(1, 1);
            cp_commit();
            cp_wait_1();
        } else {
            cp_wait_all();
        }
#else
        cp_wait_all();
#endif
        fence_proxy_async();
        __syncthreads();

        const u32 q_addr = smem_u32(Qs) + wg * 8 * CORE_ROWS;
        u32 qf[HEAD_DIM / 16][4];
#if QREG
        {
            const int mi = lane >> 3, row = wl * 16 + (mi & 1) * 8 + (lane & 7);
#pragma unroll
            for (int kk = 0; kk < HEAD_DIM / 16; ++kk)
                ldmatrix_x4(qf[kk], Qs + wg * 8 * CORE_ROWS + (row >> 3) * CORE_ROWS + (2 * kk + (mi >> 1)) * 128 +
                                        (row & 7) * 16);
        }
#endif
        float s[BN / 8][4];
        u32 pa[BN / 16][4];
#if OVERLAP
        // S of tile 0; then per tile j: [load tile j + 2], [issue S of tile j + 1], softmax of tile j,
        // issue P V of tile j, wait for both
        wgmma_fence();
        issue_s(s, q_addr, qf, smem_u32(Ks));
        wgmma_commit();
        wgmma_wait0();
        fence_regs<BN / 2>(&s[0][0]);
        for (int it = 0; it < T; ++it) {
            const int stage = it % 3;
            float sn[BN / 8][4];
            if (it + 1 < T) {
                if (it + 2 < T) {  // its stage, (it + 2) % 3, was last read by tile it - 1: done (barrier below)
                    load_kv(it + 2, (it + 2) % 3);
                    cp_commit();
                    cp_wait_1();  // tile it + 1 has landed (tile it + 2 may be in flight)
                } else {
                    cp_wait_all();
                }
                fence_proxy_async();
                __syncthreads();
                wgmma_fence();
                issue_s(sn, q_addr, qf, smem_u32(Ks + ((it + 1) % 3) * KV_STAGE));
                wgmma_commit();
            }
            softmax_tile(s, o, mrow, lrow, pa, full[p0 + it / sub] != 0, mask_words(it), words,
                         shift + ((it % sub) * BN) % 64, row0, scale_log2);
            wgmma_fence();
            issue_pv(o, pa, smem_u32(Vs + stage * KV_STAGE));
            wgmma_commit();
            wgmma_wait0();
            fence_regs<HEAD_DIM / 2>(&o[0][0]);
            fence_regs<BN / 4>(&pa[0][0]);
#if QREG
            fence_regs<HEAD_DIM / 4>(&qf[0][0]);
#endif
            if (it + 1 < T) {
                fence_regs<BN / 2>(&sn[0][0]);
#pragma unroll
                for (int n = 0; n < BN / 8; ++n)
#pragma unroll
                    for (int e = 0; e < 4; ++e) s[n][e] = sn[n][e];
            }
            __syncthreads();  // every warpgroup is done with this stage before tile it + 3 is loaded into it
        }
#else
        for (int it = 0; it < T; ++it) {
            const int stage = it & 1;
            if (it + 1 < T) {
                load_kv(it + 1, stage ^ 1);
                cp_commit();
            }
            wgmma_fence();
            issue_s(s, q_addr, qf, smem_u32(Ks + stage * KV_STAGE));
            wgmma_commit();
            wgmma_wait0();
            fence_regs<BN / 2>(&s[0][0]);
#if QREG
            fence_regs<HEAD_DIM / 4>(&qf[0][0]);
#endif
            softmax_tile(s, o, mrow, lrow, pa, full[p0 + it / sub] != 0, mask_words(it), words,
                         shift + ((it % sub) * BN) % 64, row0, scale_log2);
            wgmma_fence();
            issue_pv(o, pa, smem_u32(Vs + stage * KV_STAGE));
            wgmma_commit();
            wgmma_wait0();
            fence_regs<HEAD_DIM / 2>(&o[0][0]);
            fence_regs<BN / 4>(&pa[0][0]);
            if (it + 1 < T) {
                cp_wait_all();
                fence_proxy_async();
            }
            __syncthreads();
        }
#endif
    }
    // normalise and store
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        float l = lrow[hr];
        l += __shfl_xor_sync(0xffffffff, l, 1);
        l += __shfl_xor_sync(0xffffffff, l, 2);
        const float inv = l > 0.f ? 1.f / l : 0.f;
        const size_t row = (size_t)h * Lq + q0 + wrow + g + 8 * hr;
        if (out16) {
            u32* orow = (u32*)((half_t*)O + row * HEAD_DIM + 2 * t4);
#pragma unroll
            for (int n = 0; n < HEAD_DIM / 8; ++n) orow[n * 4] = pack2(o[n][2 * hr] * inv, o[n][2 * hr + 1] * inv);
        } else {
            float* orow = (float*)O + row * HEAD_DIM + 2 * t4;
#pragma unroll
            for (int n = 0; n < HEAD_DIM / 8; ++n) {
                float2 v;
                v.x = o[n][2 * hr] * inv;
                v.y = o[n][2 * hr + 1] * inv;
                *(float2*)(orow + n * 8) = v;
            }
        }
    }
}
#endif

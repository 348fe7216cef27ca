// Block-sparse flash attention, forward (FlashAttention-2's online softmax over the stored blocks of
// a blocked mask): what the three versions share. _flash.py concatenates the defines, this file and one
// version's file into one source for NVRTC (no #include: no search path):
//
// _flash_v1.cu: mma.sync, one warp per 16 query rows.
// _flash_v2.cu: mma.sync with register blocking (FlashAttention-2's layout), a warp per 16 * MT rows.
// _flash_v3.cu: Hopper wgmma (sm_90a), a warpgroup per 64 query rows.
//
// All: cp.async multi-buffering of the K/V tiles, S = Q K^T and O += P V on tensor cores (bf16 or f16
// in, f32 accumulate), P kept in registers (the S accumulator layout is the A operand layout), a query
// tile's empty blocks never visited, heavy (late, causal) tiles launched first.
// Compile-time: HEAD_DIM (64 or 128), IS_BF16 (1: bfloat16, 0: float16), NWARPS; each version's file
// names its own. BM must divide the mask's block rows and BN its block columns (the host picks a config
// that does).

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

// ROWS rows x HEAD_DIM halves from global (row stride HEAD_DIM) into shared (row stride LDS; versions 1, 2)
template <int ROWS>
__device__ __forceinline__ void load_tile(half_t* dst, const half_t* src, int tid) {
    constexpr int CHUNKS = HEAD_DIM / 8;  // 16-byte chunks per row
#pragma unroll
    for (int k = tid; k < ROWS * CHUNKS; k += NTHREADS) {
        int row = k / CHUNKS, ch = k % CHUNKS;
        cp_async16(dst + row * LDS + ch * 8, src + (size_t)row * HEAD_DIM + ch * 8);
    }
}

// ROWS rows of K and of V from key row kv0 into shared memory at Ks + at and Vs + at (versions 1, 2)
template <int ROWS>
__device__ __forceinline__ void load_kv_tile(half_t* Ks, half_t* Vs, int at, const half_t* Kh, const half_t* Vh,
                                             int kv0, int tid) {
    load_tile<ROWS>(Ks + at, Kh + (size_t)kv0 * HEAD_DIM, tid);
    load_tile<ROWS>(Vs + at, Vh + (size_t)kv0 * HEAD_DIM, tid);
}

// The per-tile math on a warp's m16 accumulator fragments (those of mma.sync m16n8 tiles, also what
// wgmma leaves in a warp): s[n][e] holds rows g (e = 0, 1) and g + 8 (e = 2, 3), columns n * 8 + 2 * t4
// + (e & 1); NB = key columns / 8, ND = HEAD_DIM / 8.

// a full block's scores into the log2 domain
template <int NB>
__device__ __forceinline__ void scale_scores(float (&s)[NB][4], float scale_log2) {
#pragma unroll
    for (int n = 0; n < NB; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[n][e] *= scale_log2;
}

// a partial block's scores into the log2 domain, -inf where the mask's bit is clear (versions 2, 3):
// wb, the tile's first bitmask word of the block's row 0 (words per row); row0, this thread's first
// row in the block; shift, the tile's column offset in its word + 2 * t4
template <int NB>
__device__ __forceinline__ void mask_scores(float (&s)[NB][4], const unsigned long long* wb, int words, int shift,
                                            int row0, float scale_log2) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        unsigned long long w[NB > 8 ? NB / 8 : 1];
#pragma unroll
        for (int i = 0; i < (NB > 8 ? NB / 8 : 1); ++i) w[i] = wb[(size_t)(row0 + 8 * hr) * words + i] >> shift;
#pragma unroll
        for (int n = 0; n < NB; ++n)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const float v = s[n][2 * hr + e] * scale_log2;
                s[n][2 * hr + e] = ((w[n / 8] >> ((n % 8) * 8 + e)) & 1ull) ? v : NEG_INF;
            }
    }
}

// the online softmax of one tile (scores in the log2 domain): the rows' running max and sum updated,
// O rescaled, the scores replaced by exp2(s - max)
template <int NB, int ND>
__device__ __forceinline__ void online_softmax(float (&s)[NB][4], float (&o)[ND][4], float (&mrow)[2],
                                               float (&lrow)[2]) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        float mx = mrow[hr];
#pragma unroll
        for (int n = 0; n < NB; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * hr], s[n][2 * hr + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffff, mx, 2));
        const float muse = (mx == NEG_INF) ? 0.f : mx;
        const float alpha = exp2f(mrow[hr] - muse);  // 0 when the old max is -inf
        mrow[hr] = mx;
        float sum = 0.f;
#pragma unroll
        for (int n = 0; n < NB; ++n) {
            const float a = exp2f(s[n][2 * hr] - muse), b = exp2f(s[n][2 * hr + 1] - muse);
            s[n][2 * hr] = a;
            s[n][2 * hr + 1] = b;
            sum += a + b;
        }
        lrow[hr] = lrow[hr] * alpha + sum;
#pragma unroll
        for (int n = 0; n < ND; ++n) {
            o[n][2 * hr] *= alpha;
            o[n][2 * hr + 1] *= alpha;
        }
    }
}

// P's A fragment (16-bit) for keys kk * 16 ... kk * 16 + 15, from the score accumulators
template <int NB>
__device__ __forceinline__ void p_frag(u32 (&a)[4], const float (&s)[NB][4], int kk) {
    a[0] = pack2(s[2 * kk][0], s[2 * kk][1]);
    a[1] = pack2(s[2 * kk][2], s[2 * kk][3]);
    a[2] = pack2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = pack2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

// 1 / a row's sum, from this thread's part of it (the row's quad of threads adds theirs); 0 for an empty row
__device__ __forceinline__ float row_inv(float l) {
    l += __shfl_xor_sync(0xffffffff, l, 1);
    l += __shfl_xor_sync(0xffffffff, l, 2);
    return l > 0.f ? 1.f / l : 0.f;
}

// row hr (0: g, 1: g + 8) of this thread's O fragments times inv, as float32 from orow (its column 2 * t4)
template <int ND>
__device__ __forceinline__ void store_row_f32(float* orow, const float (&o)[ND][4], int hr, float inv) {
#pragma unroll
    for (int n = 0; n < ND; ++n) {
        float2 v;
        v.x = o[n][2 * hr] * inv;
        v.y = o[n][2 * hr + 1] * inv;
        *(float2*)(orow + n * 8) = v;
    }
}

// O normalised by the rows' sums and stored at rows row0 and row0 + 8 of O (row stride HEAD_DIM): float32,
// or with out16 the inputs' 16-bit type (versions 2, 3)
template <int ND>
__device__ __forceinline__ void store_o(void* O, size_t row0, const float (&o)[ND][4], const float (&lrow)[2], int t4,
                                        int out16) {
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        const float inv = row_inv(lrow[hr]);
        const size_t row = row0 + 8 * hr;
        if (out16) {
            u32* orow = (u32*)((half_t*)O + row * HEAD_DIM + 2 * t4);
#pragma unroll
            for (int n = 0; n < ND; ++n) orow[n * 4] = pack2(o[n][2 * hr] * inv, o[n][2 * hr + 1] * inv);
        } else {
            store_row_f32((float*)O + row * HEAD_DIM + 2 * t4, o, hr, inv);
        }
    }
}

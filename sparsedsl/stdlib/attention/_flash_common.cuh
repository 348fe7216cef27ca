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

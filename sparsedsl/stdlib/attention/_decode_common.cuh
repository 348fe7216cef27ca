// Decode attention on the bitmap KV cache (flash-decoding over bit-packed K and V), and the cache's
// build on the GPU: what the kernels share. _decode.py concatenates the defines, this file and one
// kernel's file into one source for NVRTC (no #include: no search path). No headers: fp16 through PTX cvt.
//
// _decode_walk.cu: KERNEL_NAME, the "walk" variant (a lane per token walks its set bits).
// _decode_coop.cu: KERNEL_NAME, the "coop" variant (cp.async stages, lane-per-dimension expansion).
// _decode_build.cu: PRUNE_NAME / PACK_NAME, the cache's build (per-token magnitude pruning).
//
// Storage (sparsedsl's bitmap level, one row = one token of one (batch, head) slice): HEAD_DIM / 32
// uint32 mask words per token (dim c is bit c % 32 of word c / 32), pos[token] the offset of the
// token's first packed value, the kept values packed in dim order (fp16 or fp32).
//
// Compile-time: HEAD_DIM (32, 64, 128 or 256), V_HALF (values fp16 or fp32), Q_HALF, OUT_HALF, IN_HALF
// (the build's input), POS64 (int64 offsets), NWARPS; each kernel's file names its own.

#define D HEAD_DIM
#define W (D / 32)    // mask words per token
#define DPL (D / 32)  // dims per lane (P V) and elements per lane (build)
#define NT (32 * NWARPS)
#define FULL 0xffffffffu
#define NEG_INF (-__int_as_float(0x7f800000))
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

// output element i: float32, or fp16 with OUT_HALF
__device__ __forceinline__ void store_out(void* out, long long i, float v) {
#if OUT_HALF
    reinterpret_cast<u16*>(out)[i] = f2h(v);
#else
    reinterpret_cast<float*>(out)[i] = v;
#endif
}

// The end of both decode kernels, once each warp's partial is in shared memory (warp w's accumulator of
// dim c is acc(w, c); its max and sum of exp2, s_m[w] and s_l[w]): the warps merged into the CTA's
// partial (o, m, l); with one part per head that is the output, else it goes to `part`, and the last
// CTA of the head (an atomic ticket, reset by it for the next launch) merges the head's parts (a part
// without tokens, m = -inf, weighs 0) into the output. s_wt: MAX_PARTS floats of shared memory.
template <typename Acc>
__device__ __forceinline__ void merge_and_store(const Acc& acc, const float* s_m, const float* s_l, float* s_wt,
                                                float& s_inv, int& s_last, float* __restrict__ part,
                                                unsigned* __restrict__ counter, void* __restrict__ out, int h, int pid,
                                                int nparts, int lane, int warp) {
    float M = NEG_INF;
#pragma unroll
    for (int w = 0; w < NWARPS; ++w) M = fmaxf(M, s_m[w]);
    float Lc = 0.f, wt[NWARPS];
#pragma unroll
    for (int w = 0; w < NWARPS; ++w) {
        wt[w] = s_m[w] == NEG_INF ? 0.f : exp2f(s_m[w] - M);
        Lc = fmaf(s_l[w], wt[w], Lc);
    }
    if (nparts == 1) {  // the whole context in this CTA: the output directly
        for (int c = threadIdx.x; c < D; c += NT) {
            float o = 0.f;
#pragma unroll
            for (int w = 0; w < NWARPS; ++w) o = fmaf(acc(w, c), wt[w], o);
            store_out(out, (long long)h * D + c, o / Lc);
        }
        return;
    }
    float* mine = part + ((long long)h * nparts + pid) * (D + 2);
    for (int c = threadIdx.x; c < D; c += NT) {
        float o = 0.f;
#pragma unroll
        for (int w = 0; w < NWARPS; ++w) o = fmaf(acc(w, c), wt[w], o);
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
        store_out(out, (long long)h * D + c, o * s_inv);
    }
    if (threadIdx.x == 0) counter[h] = 0u;  // ready for the next launch
}

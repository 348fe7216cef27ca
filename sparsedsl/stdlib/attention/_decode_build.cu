// The bitmap KV cache's build on the GPU (after _decode_common.cuh): PRUNE_NAME / PACK_NAME (one of
// them per source), one warp per token: the keep-th largest |x| by a radix select on the float bits
// (31 warp-wide counts), ties kept in dim order, zeros dropped (as the host build, which stores
// x != 0); then, once the host has the offsets (a cumsum of the counts), each lane writes its kept
// values at pos[token] + (set bits before it). Compile-time: IN_HALF (the input fp16 or fp32).

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

// Block-sparse flash attention, version 1 (after _flash_common.cuh): one warp per 16 query rows,
// BM = 16 * NWARPS rows per CTA, key/value tiles of 64 rows; every K/V fragment read from shared memory
// feeds one m16n8k16 MMA (4 and 8 warps measured the same on the H100: shared-memory bound), Q kept in
// registers, the mask's bytes read in partial blocks, the output written as float32.
#define BM (16 * NWARPS)
#define BN 64

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
        load_kv_tile<BN>(Ks, Vs, 0, Kh, Vh, crd[p0] * c, tid);
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
                const int pn = p0 + (it + 1) / sub, sn = (it + 1) % sub;
                const int kv0n = crd[pn] * c + sn * BN;
                load_kv_tile<BN>(Ks, Vs, (stage ^ 1) * BN * LDS, Kh, Vh, kv0n, tid);
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
            online_softmax(s, o, mrow, lrow);
            // O += P V, P from the S accumulators
#pragma unroll
            for (int kk = 0; kk < BN / 16; ++kk) {
                u32 a[4];
                p_frag(a, s, kk);
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
        const float inv = row_inv(lrow[hr]);
        store_row_f32(Oh + (size_t)(warp * 16 + g + 8 * hr) * HEAD_DIM + 2 * t4, o, hr, inv);
    }
}


// The whole SW operator in ONE kernel and one pass over the input (appendix B.2-B.4).
//
// A block owns blockDim.y (b, c) planes (blockDim = (threads per plane, planes per block)). It stages
// each input plane with its zero halo in shared memory once, then for each kernel entry r of
// its channel (only active kernels with an in-map move, from harness/moves.py) it
//   1. computes y_j = conv(x, w_j) over the whole (H+2e) x (W+2e) plane into shared memory,
//      the k*k weights of j in registers, each thread an SW_RY x SW_RX register tile;
//   2. gathers from y_j every move of the three branches (h, v, identity) that j feeds: into
//      per-thread register accumulators for h and v (a thread owns SW_OUT outputs of one
//      column x), into the thread's own shared-memory slots for the identity branch (at most
//      E adds per output in all, so registers are kept for the E*nk-move branches).
// Each output is written once at the end; no atomics, and y never leaves shared memory.
//
// Compile-time (one build per configuration, see impls/cupy_onepass.py): SW_K (small kernel),
// SW_RX, SW_RY (conv register tile), SW_OUT (outputs per thread), and SW_THREADS, SW_MIN_BLOCKS
// (the launch bounds: the block size and the resident blocks per SM that registers must allow),
// SW_EXACT (the outputs per thread tile the map's rows exactly), and SW_MAP with SW_H, SW_W,
// SW_LANES (the map size and threads per plane as constants, for maps where a thread owns
// several outputs; small maps, one output per thread, share one build for all sizes). The defaults below are the
// SW-tiny stage-1 build, so the file also compiles as it stands.
//
// Table (C, R, 4 + 2E) int32, -1 padded: for entry r of channel c
//   [j, nh, nv, ni, shift_h[0..E-1], shift_v[0..E-1]]:
// kernel j, its nh in-map horizontal shifts, nv vertical shifts, ni identity picks.
// Dynamic shared memory: planes x [(H+2p) x (W+2p) input], planes x [(H+2e) x (W+2e) y],
// planes x [H x W identity sums] of T, then planes x R x (4 + 2E) ints of the table.

#ifndef SW_K
#define SW_K 3
#endif
#ifndef SW_RX
#define SW_RX 2
#endif
#ifndef SW_RY
#define SW_RY 2
#endif
#ifndef SW_OUT
#define SW_OUT 7
#endif
#ifndef SW_THREADS
#define SW_THREADS 512
#endif
#ifndef SW_MIN_BLOCKS
#define SW_MIN_BLOCKS 2
#endif

#ifndef SW_MAP
#define SW_MAP 1
#define SW_H 56
#define SW_W 56
#define SW_LANES 512
#endif
#ifndef SW_EXACT
#define SW_EXACT 0
#endif

#define SW_PAD (SW_K - 1)
// Row n of a thread's outputs is in the map: always so when SW_EXACT (the launch makes
// threads-per-plane / W * SW_OUT == H), so the guard compiles away.
// Also so for every thread when (n + 1) * step <= H (oy0 < step), known at compile time with SW_MAP.
#define SW_ROW_OK(n) (SW_EXACT || ((n) + 1) * step <= height || oy0 + (n) * step < height)
#define SW_E (SW_K / 2)

template <typename T>
__device__ __forceinline__ void onepass(const T* __restrict__ x, const T* __restrict__ weight, T* __restrict__ out_h,
                                        T* __restrict__ out_v, T* __restrict__ out_i, const int* __restrict__ table,
                                        int planes, int channels, int nk, int height_arg, int width_arg,
                                        int groups, int entries, unsigned char* shared) {
#if SW_MAP  // map and block shape compile-time: the gather's strides are immediates
    constexpr int height = SW_H, width = SW_W, lanes = SW_LANES;
#else
    const int height = height_arg, width = width_arg, lanes = blockDim.x;
#endif
    // In-plane sizes and offsets are 32-bit; only the plane base is 64-bit.
    const int wx = width + 2 * SW_PAD, hx = height + 2 * SW_PAD;
    const int wy = width + 2 * SW_E, hy = height + 2 * SW_E;
    const int plane_x = hx * wx, plane_y = hy * wy, entry = 4 + 2 * groups;
    const int lane = threadIdx.x, slot = threadIdx.y;
    const int tid = slot * lanes + lane, threads = lanes * blockDim.y;
    const int first = blockIdx.x * blockDim.y;  // first plane (b * channels + c) of the block

    T* xs_all = reinterpret_cast<T*>(shared);
    T* ys_all = xs_all + blockDim.y * plane_x;
    T* oi_all = ys_all + blockDim.y * plane_y;  // identity accumulators (at most E adds per output)
    int* tab_all = reinterpret_cast<int*>(oi_all + blockDim.y * height * width);

    // Stage the planes with their halo (zeros), and each plane's table (j = -1: nothing).
    for (int t = tid; t < (int)blockDim.y * plane_x; t += threads) {
        const int p = t / plane_x, in = t - p * plane_x;
        const int row = in / wx - SW_PAD, col = in % wx - SW_PAD;
        const long long bc = (long long)first + p;
        T value = T(0);
        if (bc < planes && (unsigned)row < (unsigned)height && (unsigned)col < (unsigned)width)
            value = x[bc * height * width + row * width + col];
        xs_all[t] = value;
    }
    for (int t = tid; t < (int)blockDim.y * height * width; t += threads) oi_all[t] = T(0);
    for (int t = tid; t < (int)blockDim.y * entries * entry; t += threads) {
        const int p = t / (entries * entry), in = t - p * entries * entry;
        const int bc = first + p;
        tab_all[t] = bc < planes ? table[(bc % channels) * entries * entry + in] : -1;
    }
    __syncthreads();

    const int bc = first + slot;
    const int c = bc % channels;
    const T* xs = xs_all + slot * plane_x;
    T* ys = ys_all + slot * plane_y;
    T* oi = oi_all + slot * height * width;
    const int* tab = tab_all + slot * entries * entry;

    // Conv mapping: lane -> (tile row gy0, tile column gx) of the (hy/RY) x (wy/RX) tile grid.
    const int gcols = wy / SW_RX, grows = hy / SW_RY;
    const int conv_rows = lanes / gcols;  // tile rows done per pass
    const int gx = lane % gcols, gy0 = lane / gcols;
    // Gather mapping: lane -> column ox and rows oy0, oy0 + step, ... (SW_OUT of them).
    const int step = lanes / width;
    const int ox = lane % width, oy0 = lane / width;
    const bool gathers = lane < step * width;

    T acc_h[SW_OUT], acc_v[SW_OUT];
#pragma unroll
    for (int n = 0; n < SW_OUT; ++n) acc_h[n] = acc_v[n] = T(0);

    for (int r = 0; r < entries; ++r) {
        const int* ent = tab + r * entry;
        const int j = ent[0];
        if (j >= 0) {
            const T* w = weight + ((long long)c * nk + j) * (SW_K * SW_K);
            T wr[SW_K * SW_K];
#pragma unroll
            for (int t = 0; t < SW_K * SW_K; ++t) wr[t] = __ldg(w + t);
            // y[a][q] = sum_{u,v} w[u][v] * xs[a + u][q + v]
            for (int gy = gy0; gy < grows && gy0 < conv_rows; gy += conv_rows) {
                const int a0 = gy * SW_RY, q0 = gx * SW_RX;
                const T* in = xs + a0 * wx + q0;
                T sum[SW_RY][SW_RX];
#pragma unroll
                for (int dy = 0; dy < SW_RY; ++dy)
#pragma unroll
                    for (int dx = 0; dx < SW_RX; ++dx) sum[dy][dx] = T(0);
#pragma unroll
                for (int row = 0; row < SW_RY + SW_K - 1; ++row) {
                    T line[SW_RX + SW_K - 1];
#pragma unroll
                    for (int col = 0; col < SW_RX + SW_K - 1; ++col) line[col] = in[row * wx + col];
#pragma unroll
                    for (int dy = 0; dy < SW_RY; ++dy) {
                        const int u = row - dy;
                        if (u < 0 || u >= SW_K) continue;  // resolved at compile time
#pragma unroll
                        for (int dx = 0; dx < SW_RX; ++dx)
#pragma unroll
                            for (int v = 0; v < SW_K; ++v) sum[dy][dx] += wr[u * SW_K + v] * line[dx + v];
                    }
                }
                T* out = ys + a0 * wy + q0;
#pragma unroll
                for (int dy = 0; dy < SW_RY; ++dy)
#pragma unroll
                    for (int dx = 0; dx < SW_RX; ++dx) out[dy * wy + dx] = sum[dy][dx];
            }
        }
        __syncthreads();
        if (j >= 0 && gathers) {
            const int nh = ent[1], nv = ent[2], ni = ent[3];
            // Oh[i, x] += y[i + e][x - s]: in range or not for the whole column x.
            for (int g = 0; g < nh; ++g) {
                const int q = ox - ent[4 + g];
                if ((unsigned)q >= (unsigned)wy) continue;
                const int at = (oy0 + SW_E) * wy + q;
#pragma unroll
                for (int n = 0; n < SW_OUT; ++n)
                    if (SW_ROW_OK(n)) acc_h[n] += ys[at + n * step * wy];
            }
            // Ov[i, x] += y[i - s][x + e]
            for (int g = 0; g < nv; ++g) {
                const int a = oy0 - ent[4 + groups + g];
#pragma unroll
                for (int n = 0; n < SW_OUT; ++n)
                    if ((unsigned)(a + n * step) < (unsigned)hy && SW_ROW_OK(n))
                        acc_v[n] += ys[(a + n * step) * wy + ox + SW_E];
            }
            // Oi[i, x] += y[i + e][x + e], once per group that picks j
            const int centre = (oy0 + SW_E) * wy + ox + SW_E, own = oy0 * width + ox;
            for (int g = 0; g < ni; ++g) {
#pragma unroll
                for (int n = 0; n < SW_OUT; ++n)
                    if (SW_ROW_OK(n)) oi[own + n * step * width] += ys[centre + n * step * wy];
            }
        }
        __syncthreads();
    }

    if (bc < planes && gathers) {
        const long long base = (long long)bc * height * width + oy0 * width + ox;
#pragma unroll
        for (int n = 0; n < SW_OUT; ++n) {
            if (SW_ROW_OK(n)) {
                const int at = n * step * width;
                out_h[base + at] = acc_h[n];
                out_v[base + at] = acc_v[n];
                out_i[base + at] = oi[oy0 * width + ox + at];
            }
        }
    }
}

extern "C" __global__ __launch_bounds__(SW_THREADS, SW_MIN_BLOCKS) void sw_onepass_f32(const float* x, const float* weight, float* out_h, float* out_v,
                                          float* out_i, const int* table, int planes, int channels, int nk,
                                          int height, int width, int groups, int entries) {
    extern __shared__ __align__(16) unsigned char shared[];
    onepass(x, weight, out_h, out_v, out_i, table, planes, channels, nk, height, width, groups, entries, shared);
}

// float64 (for checking): twice the registers per value, so no minimum of resident blocks.
extern "C" __global__ __launch_bounds__(SW_THREADS) void sw_onepass_f64(const double* x, const double* weight, double* out_h, double* out_v,
                                          double* out_i, const int* table, int planes, int channels, int nk,
                                          int height, int width, int groups, int entries) {
    extern __shared__ __align__(16) unsigned char shared[];
    onepass(x, weight, out_h, out_v, out_i, table, planes, channels, nk, height, width, groups, entries, shared);
}

// The whole SW operator in two kernels, small convolution fused with the shift-and-add
// (appendix B.4): the conv output y never goes to global memory.
//
// rows kernel: one block per output row (b, c, i). It stages in shared memory the k input rows
// that y's row i+e depends on (zero-padded), computes y's row i+e for every kernel of channel
// c that has an in-map horizontal move (pruned kernels and off-map slots are not in the move
// tables), keeps those rows in shared memory, and gathers each output's horizontal moves from
// there; the identity branch is computed from the same staged input. Writes Oh and Oi once.
//
// columns kernel: one block per tile of `tile` output columns (b, c, x0..). It stages the
// input columns the tile depends on over the full height, computes the needed kernels' y
// columns into shared memory, and gathers the vertical moves. Writes Ov once.
//
// The conv is thus computed once per strip branch (twice in all) instead of being written and
// read back. Tables (built on the host, see harness/moves.py), int32, -1 padded:
//   rows/columns (C, R): kernels j to stage; moves (C, M, 2): (staged index, shift);
//   identity (C, E): flat kernel c*nk + j of each group's identity pick, -1 if pruned.
// Shared memory is dynamic: the launcher sizes it (see impls/cupy_fused.py).

template <typename T>
__device__ __forceinline__ void fused_rows(const T* __restrict__ x, const T* __restrict__ weight,
                                           T* __restrict__ out_h, T* __restrict__ out_i,
                                           const int* __restrict__ rows, const int* __restrict__ moves,
                                           const int* __restrict__ identity, int staged_max, int moves_max,
                                           int channels, int height, int width, int nk, int k, int groups,
                                           unsigned char* shared) {
    const int p = k - 1, e = k / 2, wy = width + 2 * e, wx = width + 2 * p;
    const long long block = blockIdx.x;
    const int i = (int)(block % height);
    const long long bc = block / height;  // b * channels + c
    const int c = (int)(bc % channels);
    const T* plane = x + bc * height * (long long)width;

    // Layout: [k x wx input rows][staged_max x wy y rows][moves_max x 2 ints][staged_max ints]
    T* xs = reinterpret_cast<T*>(shared);
    T* ys = xs + k * wx;
    int* my_moves = reinterpret_cast<int*>(ys + staged_max * wy);
    int* my_rows = my_moves + 2 * moves_max;
    for (int m = threadIdx.x; m < 2 * moves_max; m += blockDim.x) my_moves[m] = moves[(long long)c * 2 * moves_max + m];
    for (int r = threadIdx.x; r < staged_max; r += blockDim.x) my_rows[r] = rows[(long long)c * staged_max + r];
    for (int t = threadIdx.x; t < k * wx; t += blockDim.x) {
        const int u = t / wx, col = t % wx - p, row = i - k / 2 + u;
        xs[t] = (row >= 0 && row < height && col >= 0 && col < width) ? plane[row * (long long)width + col] : T(0);
    }
    __syncthreads();

    // y[j][i + e][q] = sum_{u,v} w[j][u][v] * x[i - k/2 + u][q - p + v] = sum w * xs[u][q + v]
    int staged = 0;
    while (staged < staged_max && my_rows[staged] >= 0) ++staged;
    for (int t = threadIdx.x; t < staged * wy; t += blockDim.x) {
        const int r = t / wy, q = t % wy;
        const T* w = weight + ((long long)c * nk + my_rows[r]) * k * k;
        T sum = T(0);
        for (int u = 0; u < k; ++u)
            for (int v = 0; v < k; ++v) sum += w[u * k + v] * xs[u * wx + q + v];
        ys[r * wy + q] = sum;
    }
    __syncthreads();

    T* row_h = out_h + (bc * height + i) * (long long)width;
    T* row_i = out_i + (bc * height + i) * (long long)width;
    for (int col = threadIdx.x; col < width; col += blockDim.x) {
        T acc = T(0);
        for (int m = 0; m < moves_max && my_moves[2 * m] >= 0; ++m) {
            const int q = col - my_moves[2 * m + 1];  // Oh[i, x] reads y[i + e, x - s]
            if (q >= 0 && q < wy) acc += ys[my_moves[2 * m] * wy + q];
        }
        row_h[col] = acc;
        T ident = T(0);
        for (int g = 0; g < groups; ++g) {
            const int kernel = identity[c * groups + g];  // flat c*nk + j, or -1 (pruned)
            if (kernel < 0) continue;
            const T* w = weight + (long long)kernel * k * k;
            T sum = T(0);  // y[kernel][i + e][col + e]
            for (int u = 0; u < k; ++u)
                for (int v = 0; v < k; ++v) sum += w[u * k + v] * xs[u * wx + col + e + v];
            ident += sum;
        }
        row_i[col] = ident;
    }
}

template <typename T>
__device__ __forceinline__ void fused_columns(const T* __restrict__ x, const T* __restrict__ weight,
                                              T* __restrict__ out_v, const int* __restrict__ columns,
                                              const int* __restrict__ moves, int staged_max, int moves_max,
                                              int channels, int height, int width, int nk, int k, int tile,
                                              unsigned char* shared) {
    const int p = k - 1, e = k / 2, hy = height + 2 * e, hx = height + 2 * p, tx = tile + k - 1;
    const int tiles = (width + tile - 1) / tile;
    const long long block = blockIdx.x;
    const int x0 = (int)(block % tiles) * tile;
    const long long bc = block / tiles;
    const int c = (int)(bc % channels);
    const int span = min(tile, width - x0);
    const T* plane = x + bc * height * (long long)width;

    // Layout: [hx x tx input tile][staged_max x hy x tile y columns][moves_max x 2][staged_max]
    T* xs = reinterpret_cast<T*>(shared);
    T* ys = xs + hx * tx;
    int* my_moves = reinterpret_cast<int*>(ys + staged_max * hy * tile);
    int* my_columns = my_moves + 2 * moves_max;
    for (int m = threadIdx.x; m < 2 * moves_max; m += blockDim.x) my_moves[m] = moves[(long long)c * 2 * moves_max + m];
    for (int r = threadIdx.x; r < staged_max; r += blockDim.x) my_columns[r] = columns[(long long)c * staged_max + r];
    // xs[a'][t'] = x[a' - p][x0 - k/2 + t'] (zero outside the map)
    for (int t = threadIdx.x; t < hx * tx; t += blockDim.x) {
        const int row = t / tx - p, col = x0 - k / 2 + t % tx;
        xs[t] = (row >= 0 && row < height && col >= 0 && col < width) ? plane[row * (long long)width + col] : T(0);
    }
    __syncthreads();

    // y[j][a][x0 + t + e] = sum_{u,v} w[j][u][v] * x[a - p + u][x0 + t - k/2 + v] = sum w * xs[a + u][t + v]
    int staged = 0;
    while (staged < staged_max && my_columns[staged] >= 0) ++staged;
    for (int flat = threadIdx.x; flat < staged * hy * span; flat += blockDim.x) {
        const int r = flat / (hy * span), a = flat / span % hy, t = flat % span;
        const T* w = weight + ((long long)c * nk + my_columns[r]) * k * k;
        T sum = T(0);
        for (int u = 0; u < k; ++u)
            for (int v = 0; v < k; ++v) sum += w[u * k + v] * xs[(a + u) * tx + t + v];
        ys[(r * hy + a) * tile + t] = sum;
    }
    __syncthreads();

    for (int flat = threadIdx.x; flat < height * span; flat += blockDim.x) {
        const int i = flat / span, t = flat % span;
        T acc = T(0);
        for (int m = 0; m < moves_max && my_moves[2 * m] >= 0; ++m) {
            const int a = i - my_moves[2 * m + 1];  // Ov[i, x] reads y[i - s, x + e]
            if (a >= 0 && a < hy) acc += ys[(my_moves[2 * m] * hy + a) * tile + t];
        }
        out_v[(bc * height + i) * (long long)width + x0 + t] = acc;
    }
}

extern "C" __global__ void sw_fused_rows_f32(const float* x, const float* weight, float* out_h, float* out_i,
                                         const int* rows, const int* moves, const int* identity, int staged_max,
                                         int moves_max, int channels, int height, int width, int nk, int k,
                                         int groups) {
    extern __shared__ __align__(16) unsigned char shared[];
    fused_rows(x, weight, out_h, out_i, rows, moves, identity, staged_max, moves_max, channels, height, width, nk, k,
               groups, shared);
}

extern "C" __global__ void sw_fused_columns_f32(const float* x, const float* weight, float* out_v, const int* columns,
                                            const int* moves, int staged_max, int moves_max, int channels,
                                            int height, int width, int nk, int k, int tile) {
    extern __shared__ __align__(16) unsigned char shared[];
    fused_columns(x, weight, out_v, columns, moves, staged_max, moves_max, channels, height, width, nk, k, tile,
                  shared);
}

extern "C" __global__ void sw_fused_rows_f64(const double* x, const double* weight, double* out_h, double* out_i,
                                         const int* rows, const int* moves, const int* identity, int staged_max,
                                         int moves_max, int channels, int height, int width, int nk, int k,
                                         int groups) {
    extern __shared__ __align__(16) unsigned char shared[];
    fused_rows(x, weight, out_h, out_i, rows, moves, identity, staged_max, moves_max, channels, height, width, nk, k,
               groups, shared);
}

extern "C" __global__ void sw_fused_columns_f64(const double* x, const double* weight, double* out_v, const int* columns,
                                            const int* moves, int staged_max, int moves_max, int channels,
                                            int height, int width, int nk, int k, int tile) {
    extern __shared__ __align__(16) unsigned char shared[];
    fused_columns(x, weight, out_v, columns, moves, staged_max, moves_max, channels, height, width, nk, k, tile,
                  shared);
}

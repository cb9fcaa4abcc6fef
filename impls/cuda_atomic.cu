// The paper's SW kernel (appendix B.2): the scatter form of the shift-and-add.
//
// One thread per element of the small conv's output y (B, C*nk, H+2e, W+2e). A thread adds its
// element with atomicAdd into each output position it feeds: one per group in the horizontal
// branch, one per group in the vertical branch, and one per group that picks its kernel for
// the identity branch (at most 2E+1 moves). Outputs must be zeroed before the launch.
// Pruned kernels (active[kernel] == 0) do nothing. All indexing is 64-bit.
//
// Tables, as in the official code: pad_hv (C*nk, 2E) int32, column g the horizontal shift of
// kernel c*nk+j in group g, column E+g its vertical shift; idx_identit (C, E) int32 holding
// c*nk + the kernel of channel c picked by group g for the identity branch.
//
// The backward kernel is the adjoint gather: one thread per element of y sums the output
// gradients at the same positions the forward scatters to. No atomics, deterministic.

// The element of y (B, C*nk, H+2e, W+2e) this thread owns, 64-bit throughout.
struct YElement {
    long long index, q, a, kernel, c, plane, row, col;  // kernel = c*nk + j; (row, col): own output position
    bool valid, row_in, col_in;
    __device__ YElement(long long batch, int channels, int nk, int height, int width, int extra_pad) {
        const long long hy = height + 2 * extra_pad, wy = width + 2 * extra_pad;
        index = blockIdx.x * (long long)blockDim.x + threadIdx.x;
        valid = index < batch * channels * nk * hy * wy;
        q = index % wy;
        a = (index / wy) % hy;
        kernel = (index / (wy * hy)) % ((long long)channels * nk);
        c = kernel / nk;
        const long long b = index / (wy * hy * channels * nk);
        plane = (b * channels + c) * height * (long long)width;
        row = a - extra_pad;
        col = q - extra_pad;
        row_in = row >= 0 && row < height;
        col_in = col >= 0 && col < width;
    }
};

template <typename T>
__device__ __forceinline__ void scatter(const T* __restrict__ y, T* __restrict__ out_h, T* __restrict__ out_v,
                                        T* __restrict__ out_i, const int* __restrict__ pad_hv,
                                        const int* __restrict__ idx_identit, const unsigned char* __restrict__ active,
                                        long long batch, int channels, int nk, int groups, int height, int width,
                                        int extra_pad) {
    const YElement el(batch, channels, nk, height, width, extra_pad);
    if (!el.valid || !active[el.kernel]) return;
    const long long q = el.q, a = el.a, kernel = el.kernel, c = el.c, plane = el.plane, row = el.row, col = el.col;
    const bool row_in = el.row_in, col_in = el.col_in;
    const T value = y[el.index];
    const int* shifts = pad_hv + kernel * 2 * groups;
    for (int g = 0; g < groups; ++g) {
        const long long x = q + shifts[g];  // Oh[i, x] reads y[i + e, x - s]
        if (row_in && x >= 0 && x < width) atomicAdd(out_h + plane + row * width + x, value);
        const long long i = a + shifts[groups + g];  // Ov[i, x] reads y[i - s, x + e]
        if (col_in && i >= 0 && i < height) atomicAdd(out_v + plane + i * width + col, value);
        if (row_in && col_in && idx_identit[c * groups + g] == kernel) atomicAdd(out_i + plane + row * width + col, value);
    }
}

template <typename T>
__device__ __forceinline__ void gather_adjoint(const T* __restrict__ grad_h, const T* __restrict__ grad_v,
                                               const T* __restrict__ grad_i, T* __restrict__ grad_y,
                                               const int* __restrict__ pad_hv, const int* __restrict__ idx_identit,
                                               const unsigned char* __restrict__ active, long long batch,
                                               int channels, int nk, int groups, int height, int width,
                                               int extra_pad) {
    const YElement el(batch, channels, nk, height, width, extra_pad);
    if (!el.valid) return;
    T sum = 0;
    if (active[el.kernel]) {
        const long long q = el.q, a = el.a, kernel = el.kernel, c = el.c, plane = el.plane, row = el.row, col = el.col;
        const bool row_in = el.row_in, col_in = el.col_in;
        const int* shifts = pad_hv + kernel * 2 * groups;
        for (int g = 0; g < groups; ++g) {
            const long long x = q + shifts[g];
            if (row_in && x >= 0 && x < width) sum += grad_h[plane + row * width + x];
            const long long i = a + shifts[groups + g];
            if (col_in && i >= 0 && i < height) sum += grad_v[plane + i * width + col];
            if (row_in && col_in && idx_identit[c * groups + g] == kernel) sum += grad_i[plane + row * width + col];
        }
    }
    grad_y[el.index] = sum;
}

extern "C" __global__ void sw_scatter_f32(const float* y, float* out_h, float* out_v, float* out_i, const int* pad_hv,
                                          const int* idx_identit, const unsigned char* active, long long batch,
                                          int channels, int nk, int groups, int height, int width, int extra_pad) {
    scatter(y, out_h, out_v, out_i, pad_hv, idx_identit, active, batch, channels, nk, groups, height, width, extra_pad);
}

extern "C" __global__ void sw_scatter_f64(const double* y, double* out_h, double* out_v, double* out_i,
                                          const int* pad_hv, const int* idx_identit, const unsigned char* active,
                                          long long batch, int channels, int nk, int groups, int height, int width,
                                          int extra_pad) {
    scatter(y, out_h, out_v, out_i, pad_hv, idx_identit, active, batch, channels, nk, groups, height, width, extra_pad);
}

extern "C" __global__ void sw_gather_adjoint_f32(const float* grad_h, const float* grad_v, const float* grad_i,
                                                 float* grad_y, const int* pad_hv, const int* idx_identit,
                                                 const unsigned char* active, long long batch, int channels, int nk,
                                                 int groups, int height, int width, int extra_pad) {
    gather_adjoint(grad_h, grad_v, grad_i, grad_y, pad_hv, idx_identit, active, batch, channels, nk, groups, height,
                   width, extra_pad);
}

extern "C" __global__ void sw_gather_adjoint_f64(const double* grad_h, const double* grad_v, const double* grad_i,
                                                 double* grad_y, const int* pad_hv, const int* idx_identit,
                                                 const unsigned char* active, long long batch, int channels, int nk,
                                                 int groups, int height, int width, int extra_pad) {
    gather_adjoint(grad_h, grad_v, grad_i, grad_y, pad_hv, idx_identit, active, batch, channels, nk, groups, height,
                   width, extra_pad);
}

// The warp-synchronous reduction written against warpSize, without __syncwarp: the host
// emulation refuses it (it does not model warps), rather than run it wrongly.
extern "C" __global__ void warp_reduce_with_warp_size(const float* x, float* out) {
    __shared__ float partial[64];
    const unsigned t = threadIdx.x;
    partial[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    if (t < warpSize) {
        volatile float* v = partial;
        for (int offset = warpSize; offset > 0; offset /= 2) v[t] += v[t + offset];
    }
    if (t == 0) out[blockIdx.x] = partial[0];
}

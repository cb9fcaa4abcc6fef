// Known-bad kernels: each has a classic bug that a GPU would break on and that the fast host
// emulation (fibers in thread-index order) passes by luck. They are the checking modes' own
// tests (tests/test_sanitizers.py, tests/cuda/known_bad.py says how each is launched and what
// must catch it). Every one writes its result to `out`; with the bug fixed it would equal the
// reference computed in known_bad.py.

// Thread t reads what thread t-1 wrote to shared memory, without a barrier in between.
extern "C" __global__ void neighbour_without_barrier(const float* x, float* out) {
    __shared__ float tile[64];
    const unsigned t = threadIdx.x;
    tile[t] = x[blockIdx.x * blockDim.x + t];
    // missing: __syncthreads();
    out[blockIdx.x * blockDim.x + t] = t > 0 ? tile[t - 1] : 0.0f;
}

// A tiled loop with its first barrier but not its second: thread 0 sums each tile, and the
// next iteration's loads overwrite the tile while thread 0 may not have read it yet.
extern "C" __global__ void tile_loop_missing_second_barrier(const float* x, int tiles, float* out) {
    __shared__ float tile[32];
    const unsigned t = threadIdx.x;
    float sum = 0.0f;
    for (int i = 0; i < tiles; ++i) {
        tile[t] = x[(blockIdx.x * (long long)tiles + i) * blockDim.x + t];
        __syncthreads();
        if (t == 0)
            for (unsigned j = 0; j < blockDim.x; ++j) sum += tile[j];
        // missing: __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = sum;
}

// Every thread of a block adds into the same output without an atomic.
extern "C" __global__ void nonatomic_block_sum(const float* x, float* out) {
    out[blockIdx.x] += x[blockIdx.x * blockDim.x + threadIdx.x];
}

// Each thread writes its element and, off by one, the last thread one element past the end of
// the dynamic shared memory (the launch gives exactly blockDim.x floats).
extern "C" __global__ void dynamic_shared_one_past_end(const float* x, float* out) {
    extern __shared__ float staged[];
    const unsigned t = threadIdx.x;
    staged[t + 1] = x[blockIdx.x * blockDim.x + t];  // should be staged[t]
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = t > 0 ? staged[t] : 0.0f;
}

// The same off-by-one on a static __shared__ array.
extern "C" __global__ void static_shared_one_past_end(const float* x, float* out) {
    __shared__ float staged[32];
    const unsigned t = threadIdx.x;
    staged[t + 1] = x[blockIdx.x * blockDim.x + t];  // should be staged[t]
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = t > 0 ? staged[t] : 0.0f;
}

// The classic warp-synchronous tail of a block reduction: the last 32 partial sums are
// reduced by the first warp through volatile shared memory, without __syncwarp between the
// steps (the lanes of a warp are not in lockstep since Volta).
extern "C" __global__ void warp_reduce_without_syncwarp(const float* x, float* out) {
    __shared__ float partial[64];
    const unsigned t = threadIdx.x;
    partial[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    if (t < 32) {
        volatile float* v = partial;
        v[t] += v[t + 32];
        v[t] += v[t + 16];
        v[t] += v[t + 8];
        v[t] += v[t + 4];
        v[t] += v[t + 2];
        v[t] += v[t + 1];
    }
    if (t == 0) out[blockIdx.x] = partial[0];
}

// Small kernels that probe the host emulation's semantics (tests/test_cuda_host.py).

// Every thread of a 3-D grid of 3-D blocks writes its flat global id at its flat position.
extern "C" __global__ void write_ids(long long* out) {
    const long long block = blockIdx.x + gridDim.x * (blockIdx.y + (long long)gridDim.y * blockIdx.z);
    const long long thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const long long per_block = blockDim.x * blockDim.y * blockDim.z;
    out[block * per_block + thread] = block * per_block + thread;
}

// Histogram with global atomics, blocks running concurrently.
extern "C" __global__ void histogram(const int* values, long long n, int* bins, int nbins) {
    const long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) atomicAdd(bins + values[i] % nbins, 1);
}

// Block sum through shared memory: correct only if __syncthreads is a real barrier.
extern "C" __global__ void block_sums(const float* x, float* sums) {
    __shared__ float tile[256];
    const unsigned t = threadIdx.x;
    tile[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (t < stride) tile[t] += tile[t + stride];
        __syncthreads();
    }
    if (t == 0) sums[blockIdx.x] = tile[0];
}

// Invalid CUDA: thread 0 returns before a barrier the others wait at.
extern "C" __global__ void divergent_barrier(float* x) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    x[threadIdx.x] = 1.0f;
}

// Block sum through dynamic shared memory (size given at launch).
extern "C" __global__ void block_sums_dynamic(const double* x, double* sums) {
    extern __shared__ __align__(16) double tile[];
    const unsigned t = threadIdx.x;
    tile[t] = x[blockIdx.x * blockDim.x + t];
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (t < stride) tile[t] += tile[t + stride];
        __syncthreads();
    }
    if (t == 0) sums[blockIdx.x] = tile[0];
}

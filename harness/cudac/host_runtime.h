// Host execution of CUDA C kernels: just enough of CUDA's device-side language for a kernel
// source to compile with a C++20 host compiler and run on the CPU, for testing its results.
//
// What is modelled:
//   - threadIdx, blockIdx, blockDim, gridDim (per-thread values);
//   - __global__, __device__, __host__, __forceinline__, __restrict__, __launch_bounds__;
//   - __shared__ memory: one copy per kernel (static storage); blocks that use it run one at a
//     time, so each block sees its own (uninitialised, as on a GPU) contents;
//   - dynamic shared memory (extern __shared__ T name[] inside a kernel; the Python side rewrites
//     it to a pointer into a per-launch buffer, filled with 0xFF bytes so stale reads show up);
//   - __syncthreads(): a real barrier among the threads of a block, which run as real OS threads
//     (like Numba's CUDA simulator); a block whose threads reach different barriers (one returned
//     early while others wait) is reported as an error, not silently mis-synchronised;
//   - atomicAdd on float, double, int, unsigned, unsigned long long: a real atomic
//     read-modify-write (std::atomic_ref), so concurrent blocks may race as on a GPU.
//
// What is NOT modelled (the Python side refuses sources that use it, see harness/cudac/host.py):
//   warp-level primitives (__shfl*, __ballot*, __any/__all_sync, __activemask, __syncwarp,
//   warpSize), memory fences and ordering beyond __syncthreads (__threadfence*), cooperative
//   groups, extern __shared__ at file scope, inline PTX (asm), texture/surface memory, and
//   atomics other than atomicAdd. Kernels without __shared__/__syncthreads run their blocks
//   on a few worker threads and the threads of a block one after another, so a race between
//   threads of one block cannot show up here.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace swemu {

inline thread_local dim3 thread_idx, block_idx, block_dim, grid_dim;

// The current launch's dynamic shared memory (blocks using it run one at a time).
inline unsigned char* dynamic_shared = nullptr;

// Thrown through a kernel body to stop a launch whose block barriers diverged.
struct Divergence {};

// A reusable barrier for the threads of one block. Each arrival says what it is (a
// __syncthreads or the end of the block); a phase that mixes the two is a divergent block.
class BlockBarrier {
  public:
    enum Kind { SYNC = 0, BLOCK_END = 1 };

    explicit BlockBarrier(unsigned count) : count_(count) {}

    void arrive(Kind kind) {
        std::unique_lock<std::mutex> lock(mutex_);
        if (failed_) throw Divergence{};
        if (waiting_ == 0) {
            kind_ = kind;
        } else if (kind_ != kind) {
            failed_ = true;
            cv_.notify_all();
            throw Divergence{};
        }
        const unsigned long generation = generation_;
        if (++waiting_ == count_) {
            waiting_ = 0;
            ++generation_;
            cv_.notify_all();
            return;
        }
        cv_.wait(lock, [&] { return generation_ != generation || failed_; });
        if (failed_) throw Divergence{};
    }

    void fail() {
        std::lock_guard<std::mutex> lock(mutex_);
        failed_ = true;
        cv_.notify_all();
    }

    bool failed() {
        std::lock_guard<std::mutex> lock(mutex_);
        return failed_;
    }

  private:
    std::mutex mutex_;
    std::condition_variable cv_;
    unsigned count_, waiting_ = 0;
    unsigned long generation_ = 0;
    Kind kind_ = SYNC;
    bool failed_ = false;
};

inline thread_local BlockBarrier* block_barrier = nullptr;

inline void syncthreads() {
    if (block_barrier == nullptr) {
        // Unreachable for sources the Python side accepts: a source that mentions
        // __syncthreads always runs in block-threads mode.
        std::fprintf(stderr, "swemu: __syncthreads outside block-threads mode\n");
        std::abort();
    }
    block_barrier->arrive(BlockBarrier::SYNC);
}

inline dim3 unflatten(unsigned long long index, dim3 extent) {
    dim3 d;
    d.x = static_cast<unsigned>(index % extent.x);
    index /= extent.x;
    d.y = static_cast<unsigned>(index % extent.y);
    d.z = static_cast<unsigned>(index / extent.y);
    return d;
}

// Returns 0 on success; otherwise writes a message into `error` and returns non-zero.
inline int launch(const unsigned* grid_xyz, const unsigned* block_xyz, bool block_threads, size_t shared_bytes,
                  const std::function<void()>& body, char* error, size_t error_size) {
    // One launch at a time per process: __shared__ storage and dynamic_shared are global.
    static std::mutex launch_mutex;
    std::lock_guard<std::mutex> launch_lock(launch_mutex);
    // Filled with a NaN-like pattern: a kernel reading shared memory it never wrote shows up.
    std::vector<unsigned char> shared_buffer(shared_bytes + 16, 0xFF);
    dynamic_shared = reinterpret_cast<unsigned char*>(
        (reinterpret_cast<uintptr_t>(shared_buffer.data()) + 15) & ~static_cast<uintptr_t>(15));
    const dim3 grid{grid_xyz[0], grid_xyz[1], grid_xyz[2]};
    const dim3 block{block_xyz[0], block_xyz[1], block_xyz[2]};
    const unsigned long long blocks = 1ULL * grid.x * grid.y * grid.z;
    const unsigned threads = block.x * block.y * block.z;
    std::mutex error_mutex;
    std::string first_error;
    auto record = [&](const std::string& message) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (first_error.empty()) first_error = message;
    };

    if (block_threads) {
        // One OS thread per CUDA thread of a block; all blocks in order, a barrier between them.
        BlockBarrier barrier(threads);
        std::vector<std::thread> workers;
        workers.reserve(threads);
        for (unsigned t = 0; t < threads; ++t) {
            workers.emplace_back([&, t] {
                block_barrier = &barrier;
                thread_idx = unflatten(t, block);
                block_dim = block;
                grid_dim = grid;
                for (unsigned long long b = 0; b < blocks; ++b) {
                    block_idx = unflatten(b, grid);
                    try {
                        body();
                        barrier.arrive(BlockBarrier::BLOCK_END);
                    } catch (const Divergence&) {
                        record("divergent __syncthreads in block " + std::to_string(b) +
                               ": threads of one block reached different barriers (did a thread return before "
                               "a __syncthreads the others wait at?)");
                        barrier.fail();
                        return;
                    } catch (const std::exception& e) {
                        record(e.what());
                        barrier.fail();
                        return;
                    }
                }
            });
        }
        for (auto& worker : workers) worker.join();
    } else {
        // No shared memory, no barriers: blocks spread over workers, a block's threads in turn.
        const unsigned count = std::max(1u, std::min<unsigned>(std::thread::hardware_concurrency(), 64));
        std::atomic<unsigned long long> next{0};
        std::vector<std::thread> workers;
        for (unsigned w = 0; w < count; ++w) {
            workers.emplace_back([&] {
                block_dim = block;
                grid_dim = grid;
                try {
                    for (unsigned long long b = next++; b < blocks; b = next++) {
                        block_idx = unflatten(b, grid);
                        for (unsigned t = 0; t < threads; ++t) {
                            thread_idx = unflatten(t, block);
                            body();
                        }
                    }
                } catch (const std::exception& e) {
                    record(e.what());
                }
            });
        }
        for (auto& worker : workers) worker.join();
    }
    if (!first_error.empty()) {
        std::snprintf(error, error_size, "%s", first_error.c_str());
        return 1;
    }
    return 0;
}

template <typename T>
inline T atomic_add(T* address, T value) {
    return std::atomic_ref<T>(*address).fetch_add(value, std::memory_order_relaxed);
}

}  // namespace swemu

#define threadIdx (::swemu::thread_idx)
#define blockIdx (::swemu::block_idx)
#define blockDim (::swemu::block_dim)
#define gridDim (::swemu::grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

inline void __syncthreads() { ::swemu::syncthreads(); }
inline float atomicAdd(float* a, float v) { return ::swemu::atomic_add(a, v); }
inline double atomicAdd(double* a, double v) { return ::swemu::atomic_add(a, v); }
inline int atomicAdd(int* a, int v) { return ::swemu::atomic_add(a, v); }
inline unsigned atomicAdd(unsigned* a, unsigned v) { return ::swemu::atomic_add(a, v); }
inline unsigned long long atomicAdd(unsigned long long* a, unsigned long long v) { return ::swemu::atomic_add(a, v); }
template <typename T>
inline T __ldg(const T* p) { return *p; }
using std::max;
using std::min;

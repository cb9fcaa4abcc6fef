// Host execution of CUDA C kernels: just enough of CUDA's device-side language for a kernel
// source to compile with a C++20 host compiler and run on the CPU, for testing its results.
//
// Execution: blocks are spread over a few worker OS threads. Within a block:
//   - kernels without __shared__ / __syncthreads run their threads one after another;
//   - kernels with them run each CUDA thread as a fiber (ucontext) of the worker: a fiber runs
//     until it reaches __syncthreads or returns, then the next one runs; when every fiber
//     waits at a barrier they are all released. A block in which some threads returned while
//     others wait at a barrier (divergent __syncthreads) is reported as an error.
//
// What is modelled:
//   - threadIdx, blockIdx, blockDim, gridDim;
//   - __global__, __device__, __host__, __forceinline__, __noinline__, __restrict__,
//     __launch_bounds__, __align__;
//   - __shared__ memory: one copy per worker thread (static thread_local storage), so each block
//     has its own; like on a GPU its contents at block start are whatever was there;
//   - dynamic shared memory (extern __shared__ T name[] inside a kernel; the Python side rewrites
//     it to a pointer into a per-worker buffer, filled with 0xFF bytes at each launch so reads of
//     never-written shared memory show up as NaN);
//   - __syncthreads(): a barrier among the threads of a block;
//   - atomicAdd on float, double, int, unsigned, unsigned long long: a real atomic
//     read-modify-write (std::atomic_ref), as blocks on different workers run concurrently.
//
// What is NOT modelled (the Python side refuses sources that use it, see harness/cudac/host.py):
//   warp-level primitives (__shfl*, __ballot*, __any/__all_sync, __activemask, __syncwarp,
//   warpSize), memory fences and ordering beyond __syncthreads (__threadfence*), cooperative
//   groups, extern __shared__ at file scope, inline PTX (asm), texture/surface memory, and
//   atomics other than atomicAdd. The threads of one block never run concurrently here, so a
//   race between them (a missing __syncthreads) cannot show up.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace swemu {

// What a running CUDA thread sees; one per fiber (or one per worker in loop mode).
struct ThreadState {
    dim3 idx;
    enum State { RUNNING, WAITING, DONE } state = RUNNING;
    ucontext_t context;
};

inline thread_local ThreadState* current = nullptr;
inline thread_local dim3 block_idx, block_dim, grid_dim;
inline thread_local ucontext_t* scheduler = nullptr;
// This worker's dynamic shared memory.
inline thread_local unsigned char* dynamic_shared = nullptr;

inline void syncthreads() {
    if (scheduler == nullptr) {
        // Unreachable for sources the Python side accepts: a source that mentions
        // __syncthreads always runs in fiber mode.
        std::fprintf(stderr, "swemu: __syncthreads outside fiber mode\n");
        std::abort();
    }
    current->state = ThreadState::WAITING;
    swapcontext(&current->context, scheduler);
}

inline dim3 unflatten(unsigned long long index, dim3 extent) {
    dim3 d;
    d.x = static_cast<unsigned>(index % extent.x);
    index /= extent.x;
    d.y = static_cast<unsigned>(index % extent.y);
    d.z = static_cast<unsigned>(index / extent.y);
    return d;
}

struct FiberStart {
    const std::function<void()>* body;
    std::string* error;
};
inline thread_local FiberStart fiber_start;

inline void fiber_main() {
    try {
        (*fiber_start.body)();
    } catch (const std::exception& e) {
        if (fiber_start.error->empty()) *fiber_start.error = e.what();
    }
    current->state = ThreadState::DONE;
    swapcontext(&current->context, scheduler);  // never resumed
}

// Runs one block's threads as fibers; returns an error message, or "" on success.
inline std::string run_block_as_fibers(const std::function<void()>& body, dim3 block, unsigned threads,
                                       std::vector<ThreadState>& fibers, char* stacks, size_t stack_size) {
    std::string error;
    ucontext_t main_context;
    scheduler = &main_context;
    fiber_start = FiberStart{&body, &error};
    for (unsigned t = 0; t < threads; ++t) {
        ThreadState& fiber = fibers[t];
        fiber.idx = unflatten(t, block);
        fiber.state = ThreadState::RUNNING;
        getcontext(&fiber.context);
        fiber.context.uc_stack.ss_sp = stacks + t * stack_size;
        fiber.context.uc_stack.ss_size = stack_size;
        fiber.context.uc_link = nullptr;
        makecontext(&fiber.context, fiber_main, 0);
    }
    while (true) {
        unsigned waiting = 0, done = 0;
        for (unsigned t = 0; t < threads; ++t) {
            ThreadState& fiber = fibers[t];
            if (fiber.state == ThreadState::DONE) {
                ++done;
                continue;
            }
            fiber.state = ThreadState::RUNNING;
            current = &fiber;
            swapcontext(&main_context, &fiber.context);
            if (fiber.state == ThreadState::WAITING) ++waiting;
            else ++done;
        }
        if (!error.empty()) break;
        if (done == threads) break;
        if (waiting != threads) {
            error = "divergent __syncthreads: some threads of the block returned while others wait at a barrier";
            break;
        }
    }
    scheduler = nullptr;
    current = nullptr;
    return error;
}

// Returns 0 on success; otherwise writes a message into `error` and returns non-zero.
inline int launch(const unsigned* grid_xyz, const unsigned* block_xyz, bool fibers_mode, size_t shared_bytes,
                  const std::function<void()>& body, char* error, size_t error_size) {
    const dim3 grid{grid_xyz[0], grid_xyz[1], grid_xyz[2]};
    const dim3 block{block_xyz[0], block_xyz[1], block_xyz[2]};
    const unsigned long long blocks = 1ULL * grid.x * grid.y * grid.z;
    const unsigned threads = block.x * block.y * block.z;
    const unsigned workers = static_cast<unsigned>(
        std::max(1ULL, std::min<unsigned long long>({std::max(1u, std::thread::hardware_concurrency()), 64, blocks})));
    constexpr size_t stack_size = 128 * 1024;

    std::mutex error_mutex;
    std::string first_error;
    std::atomic<bool> failed{false};
    std::atomic<unsigned long long> next{0};
    auto record = [&](const std::string& message, unsigned long long b) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (first_error.empty()) first_error = "block " + std::to_string(b) + ": " + message;
        failed = true;
    };

    auto worker = [&] {
        block_dim = block;
        grid_dim = grid;
        std::vector<unsigned char> shared_buffer(shared_bytes + 16, 0xFF);
        dynamic_shared = reinterpret_cast<unsigned char*>(
            (reinterpret_cast<uintptr_t>(shared_buffer.data()) + 15) & ~static_cast<uintptr_t>(15));
        std::vector<ThreadState> fibers(fibers_mode ? threads : 1);
        std::unique_ptr<char[]> stacks(fibers_mode ? new char[threads * stack_size] : nullptr);
        for (unsigned long long b = next++; b < blocks && !failed; b = next++) {
            block_idx = unflatten(b, grid);
            if (fibers_mode) {
                const std::string message = run_block_as_fibers(body, block, threads, fibers, stacks.get(), stack_size);
                if (!message.empty()) record(message, b);
                continue;
            }
            try {
                current = &fibers[0];
                for (unsigned t = 0; t < threads; ++t) {
                    fibers[0].idx = unflatten(t, block);
                    body();
                }
            } catch (const std::exception& e) {
                record(e.what(), b);
            }
            current = nullptr;
        }
        dynamic_shared = nullptr;
    };
    std::vector<std::thread> pool;
    for (unsigned w = 0; w < workers; ++w) pool.emplace_back(worker);
    for (auto& thread : pool) thread.join();
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

#define threadIdx (::swemu::current->idx)
#define blockIdx (::swemu::block_idx)
#define blockDim (::swemu::block_dim)
#define gridDim (::swemu::grid_dim)
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static thread_local
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

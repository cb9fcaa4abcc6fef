// Host execution of CUDA C kernels: just enough of CUDA's device-side language for a kernel
// source to compile with a C++20 host compiler and run on the CPU, for testing its results.
//
// Execution of a launch, one of three modes (chosen by the Python side, harness/cudac/host.py):
//   LOOP    (kernels without __shared__ / __syncthreads): a block's threads run one after
//           another on a worker thread;
//   FIBERS  (kernels with them): each CUDA thread is a fiber (ucontext) of the worker: a fiber
//           runs until it reaches __syncthreads or returns, then the next one runs; when every
//           fiber waits at a barrier they are all released;
//   THREADS (the sanitizer builds, -fsanitize=thread / address): each CUDA thread of a block is
//           a real OS thread, the barrier one that ThreadSanitizer models exactly (every
//           access before a barrier happens-before every access after it, and nothing else
//           orders the threads, see BlockBarrier), so races between barriers are visible.
// In LOOP and FIBERS the threads of a block run in a *schedule*: thread-index order, reverse
// order (blocks in reverse too) or a seeded shuffle; comparing schedules (harness/cudac/
// schedules.py) exposes results that depend on an order a GPU does not promise.
// A block in which some threads returned while others wait at a barrier (divergent
// __syncthreads) is reported as an error in every mode, never hangs.
//
// Shared memory: every block gets its own allocations, each of exactly the declared size,
// filled with a poison byte (0xFF: NaN in float and double) rather than zeroed, between guard
// bytes (SWEMU_GUARD, checked after the block: a write just outside is reported; 0 in the
// AddressSanitizer build, which then reports any access one element past the end):
//   - static __shared__ declarations (rewritten by the Python side into shared_static<T>(tag)
//     calls): each declaration registers its size when the library loads; a block allocates
//     all of them before its threads start;
//   - dynamic shared memory (extern __shared__ T name[] inside a kernel, rewritten to a
//     pointer to dynamic_shared): one allocation of the launch's byte count per block.
//
// Also modelled: threadIdx, blockIdx, blockDim, gridDim; __global__, __device__, __host__,
// __forceinline__, __noinline__, __restrict__, __launch_bounds__, __align__; atomicAdd on
// float, double, int, unsigned, unsigned long long (std::atomic_ref, relaxed: blocks run
// concurrently on the workers).
//
// NOT modelled (the Python side refuses sources that use it): warp-level primitives, memory
// fences, cooperative groups, extern __shared__ at file scope, inline PTX, texture/surface
// memory, atomics other than atomicAdd.
#pragma once

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

namespace swemu {

enum Mode : int { LOOP = 0, FIBERS = 1, THREADS = 2 };
enum Schedule : int { FORWARD = 0, REVERSE = 1, SHUFFLE = 2 };

// What a running CUDA thread sees; one per fiber, per OS thread (THREADS), or per worker (LOOP).
struct ThreadState {
    dim3 idx;
    enum State { RUNNING, WAITING, DONE } state = RUNNING;
    ucontext_t context;
};

// ---- shared memory -------------------------------------------------------------------------

struct SlotInfo {
    size_t size, align;
};

// Every static __shared__ declaration of the library (filled while it loads, read-only after).
inline std::vector<SlotInfo>& slot_registry() {
    static std::vector<SlotInfo> registry;
    return registry;
}

inline size_t register_slot(size_t size, size_t align) {
    slot_registry().push_back({size, align});
    return slot_registry().size() - 1;
}

// One static __shared__ declaration (a type, an alignment and a unique lambda type per
// declaration and per instantiation of an enclosing template).
template <class A, size_t Align, class Tag>
struct SharedSlot {
    static inline const size_t index = register_slot(sizeof(A), std::max<size_t>(Align, alignof(A)));
};

// Bytes of poisoned guard before and after every shared allocation in the fast build: a write
// just outside a declaration lands there (not in the heap's own bookkeeping) and is reported
// after the block. The sanitizer builds use 0, so each allocation is of exactly the declared
// size and AddressSanitizer reports any access one element past the end, reads included.
#ifndef SWEMU_GUARD
#define SWEMU_GUARD 64
#endif

// The shared memory of one block: an exact-size allocation per static declaration and one
// for the dynamic shared memory, all poisoned. Allocated before the block's threads start and
// freed after they all finish (so the sanitizers see no access outside that span).
struct BlockMemory {
    std::vector<unsigned char*> slots;
    std::vector<size_t> sizes;
    unsigned char* dynamic = nullptr;
    unsigned char poison;

    unsigned char* allocate(size_t size, size_t align) {
        void* memory = nullptr;
        const size_t alignment = std::max<size_t>({align, sizeof(void*), SWEMU_GUARD ? 64 : 1});
        if (posix_memalign(&memory, alignment, size + 2 * SWEMU_GUARD) != 0 || !memory) throw std::bad_alloc();
        std::memset(memory, poison, size + 2 * SWEMU_GUARD);
        sizes.push_back(size);
        return static_cast<unsigned char*>(memory) + SWEMU_GUARD;
    }
    BlockMemory(size_t dynamic_bytes, unsigned char poison_byte) : poison(poison_byte) {
        const std::vector<SlotInfo>& registry = slot_registry();
        slots.reserve(registry.size());
        for (const SlotInfo& slot : registry) slots.push_back(allocate(slot.size, slot.align));
        dynamic = allocate(dynamic_bytes, 16);
    }
    // After the block: "" or which allocation was written outside its bounds (fast build).
    std::string overrun() const {
        for (size_t i = 0; i <= slots.size(); ++i) {
            const unsigned char* start = i < slots.size() ? slots[i] : dynamic;
            const size_t size = sizes[i];
            for (size_t g = 0; g < SWEMU_GUARD; ++g) {
                if (start[-1 - static_cast<long>(g)] != poison || start[size + g] != poison) {
                    const std::string what = i < slots.size()
                        ? "a static __shared__ array (declaration " + std::to_string(i) + ", " + std::to_string(size) + " bytes)"
                        : "dynamic shared memory (" + std::to_string(size) + " bytes)";
                    return "out-of-bounds shared memory: a write outside " + what;
                }
            }
        }
        return "";
    }
    ~BlockMemory() {
        for (unsigned char* slot : slots) std::free(slot - SWEMU_GUARD);
        std::free(dynamic - SWEMU_GUARD);
    }
    BlockMemory(const BlockMemory&) = delete;
    BlockMemory& operator=(const BlockMemory&) = delete;
};

// ---- per-thread state ----------------------------------------------------------------------

struct DivergentBarrier {};
inline constexpr const char* DIVERGENT =
    "divergent __syncthreads: some threads of the block returned while others wait at a barrier";

// The barrier of one block in THREADS mode, built for ThreadSanitizer: the only operations
// that order threads are the atomics below, and each thread *releases* only when it arrives
// and *acquires* only when it leaves, so everything before the barrier happens-before
// everything after it, and nothing else does. (A mutex + condition variable, like TSan's own
// pthread_barrier model, would also hand a late-waking thread the history of a fast one that
// has already run on to the next barrier, hiding the races between them.) Waiting is a futex
// on the generation word, a raw system call TSan does not see. A thread that returns is
// counted (relaxed: no ordering); when the threads that returned and those waiting make up
// the block, the barrier is divergent and every waiter is released with an error.
struct BlockBarrier {
    const unsigned threads;
    std::atomic<unsigned> arrived{0}, done{0}, generation{0};
    std::atomic<bool> broken{false};

    explicit BlockBarrier(unsigned n) : threads(n) {}
    void wake_all() {
        syscall(SYS_futex, reinterpret_cast<unsigned*>(&generation), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
    }
    bool divergent() {
        const unsigned returned = done.load(std::memory_order_relaxed);
        return returned > 0 && arrived.load(std::memory_order_relaxed) + returned >= threads;
    }
    void wait() {
        if (broken.load(std::memory_order_relaxed)) throw DivergentBarrier{};
        const unsigned mine = generation.load(std::memory_order_acquire);
        if (arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == threads) {
            arrived.store(0, std::memory_order_relaxed);
            generation.store(mine + 1, std::memory_order_release);
            wake_all();
            return;
        }
        while (generation.load(std::memory_order_acquire) == mine) {
            if (divergent()) {
                broken.store(true, std::memory_order_relaxed);
                wake_all();
            }
            if (broken.load(std::memory_order_relaxed)) throw DivergentBarrier{};
            timespec timeout{0, 2000000};  // re-check for divergence every 2 ms
            syscall(SYS_futex, reinterpret_cast<unsigned*>(&generation), FUTEX_WAIT_PRIVATE, mine, &timeout, nullptr, 0);
        }
    }
    // A thread returned (the team keeps its OS thread alive until the block is over, so
    // ThreadSanitizer never reuses a finished thread's slot for another thread of the block,
    // which would hide the races between the two).
    void exit() {
        done.fetch_add(1, std::memory_order_relaxed);
        wake_all();
    }
};

inline thread_local ThreadState* current = nullptr;
inline thread_local dim3 block_idx, block_dim, grid_dim;
inline thread_local ucontext_t* scheduler = nullptr;     // FIBERS: the worker's context
inline thread_local BlockBarrier* barrier = nullptr;     // THREADS: this block's barrier
inline thread_local BlockMemory* block_memory = nullptr;  // this block's shared memory
inline thread_local unsigned char* dynamic_shared = nullptr;

template <class A, size_t Align = 0, class Tag>
inline A& shared_static(Tag) {
    return *reinterpret_cast<A*>(block_memory->slots[SharedSlot<A, Align, Tag>::index]);
}

inline void syncthreads() {
    if (barrier != nullptr) {
        barrier->wait();
        return;
    }
    if (scheduler == nullptr) {
        // Unreachable for sources the Python side accepts: a source that mentions
        // __syncthreads runs in FIBERS or THREADS mode.
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

// The order a block's threads run in (LOOP, FIBERS).
inline std::vector<unsigned> thread_order(unsigned threads, int schedule, unsigned long long seed,
                                          unsigned long long block) {
    std::vector<unsigned> order(threads);
    std::iota(order.begin(), order.end(), 0u);
    if (schedule == REVERSE) std::reverse(order.begin(), order.end());
    if (schedule == SHUFFLE) {
        std::mt19937_64 random(seed * 0x9E3779B97F4A7C15ULL + block);
        std::shuffle(order.begin(), order.end(), random);
    }
    return order;
}

// ---- FIBERS ----------------------------------------------------------------------------------

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

// Runs one block's threads as fibers, in `order`; returns an error message, or "" on success.
inline std::string run_block_as_fibers(const std::function<void()>& body, dim3 block,
                                       const std::vector<unsigned>& order, std::vector<ThreadState>& fibers,
                                       char* stacks, size_t stack_size) {
    const unsigned threads = static_cast<unsigned>(order.size());
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
        for (unsigned t : order) {
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
            error = DIVERGENT;
            break;
        }
    }
    scheduler = nullptr;
    current = nullptr;
    return error;
}

// ---- THREADS ---------------------------------------------------------------------------------

// A worker's team of OS threads, one per CUDA thread of a block, started once per launch and
// reused for each block the worker runs (starting threads per block costs more than the
// blocks under the sanitizers). The worker hands a block to the team and waits for all of
// its threads; that hand-over orders consecutive blocks of one worker, which run one after
// the other anyway, and nothing else.
struct Team {
    std::mutex mutex;
    std::condition_variable start, finished;
    const std::function<void()>* body = nullptr;
    dim3 block, grid, block_index;
    BlockMemory* memory = nullptr;
    BlockBarrier* block_barrier = nullptr;
    BlockBarrier gate;  // every member waits here at the start of each block
    unsigned long long round = 0;
    unsigned finished_threads = 0;
    bool quit = false;
    std::vector<std::string> errors;
    std::vector<pthread_t> handles;
    struct Member {
        Team* team;
        unsigned index;
    };
    std::vector<Member> members;

    static void* member_main(void* argument) {
        const Member me = *static_cast<Member*>(argument);
        Team& team = *me.team;
        ThreadState state;
        unsigned long long seen = 0;
        while (true) {
            {
                std::unique_lock<std::mutex> lock(team.mutex);
                team.start.wait(lock, [&] { return team.quit || team.round != seen; });
                if (team.quit) break;
                seen = team.round;
            }
            // Start together: a thread that woke late must not acquire (through the team's
            // mutex) the history of one that already ran the block, which would hide races.
            team.gate.wait();
            state.idx = unflatten(me.index, team.block);
            current = &state;
            block_idx = team.block_index;
            block_dim = team.block;
            grid_dim = team.grid;
            barrier = team.block_barrier;
            block_memory = team.memory;
            dynamic_shared = team.memory->dynamic;
            std::string error;
            try {
                (*team.body)();
                team.block_barrier->exit();
            } catch (const DivergentBarrier&) {
                error = DIVERGENT;
            } catch (const std::exception& e) {
                error = e.what();
                team.block_barrier->exit();
            }
            current = nullptr;
            barrier = nullptr;
            block_memory = nullptr;
            dynamic_shared = nullptr;
            std::lock_guard<std::mutex> lock(team.mutex);
            team.errors[me.index] = error;
            if (++team.finished_threads == team.members.size()) team.finished.notify_one();
        }
        return nullptr;
    }

    Team(const std::function<void()>& kernel, dim3 block_dim_, dim3 grid_dim_, unsigned threads)
        : body(&kernel), block(block_dim_), grid(grid_dim_), gate(threads), errors(threads), handles(threads),
          members(threads) {
        pthread_attr_t attributes;
        pthread_attr_init(&attributes);
        pthread_attr_setstacksize(&attributes, 1 << 20);
        for (unsigned t = 0; t < threads; ++t) {
            members[t] = Member{this, t};
            if (pthread_create(&handles[t], &attributes, member_main, &members[t]) != 0) {
                handles.resize(t);
                break;
            }
        }
        pthread_attr_destroy(&attributes);
    }
    ~Team() {
        {
            std::lock_guard<std::mutex> lock(mutex);
            quit = true;
            start.notify_all();
        }
        for (pthread_t handle : handles) pthread_join(handle, nullptr);
    }

    // Runs block `index` on the team; returns an error message or "".
    std::string run(dim3 index, BlockMemory& block_memory_) {
        if (handles.size() < members.size()) return "could not start a thread per CUDA thread of the block";
        // (A team that could not start all its threads is never run: the gate would not open.)
        BlockBarrier block_barrier_(static_cast<unsigned>(members.size()));
        std::unique_lock<std::mutex> lock(mutex);
        block_index = index;
        memory = &block_memory_;
        block_barrier = &block_barrier_;
        finished_threads = 0;
        ++round;
        start.notify_all();
        finished.wait(lock, [&] { return finished_threads == members.size(); });
        for (const std::string& error : errors)
            if (!error.empty()) return error;
        return "";
    }
};

// ---- launch ----------------------------------------------------------------------------------

// Returns 0 on success; otherwise writes a message into `error` and returns non-zero.
inline int launch(const unsigned* grid_xyz, const unsigned* block_xyz, int mode, int schedule,
                  unsigned long long seed, int poison, size_t shared_bytes, const std::function<void()>& body,
                  char* error, size_t error_size) {
    const dim3 grid{grid_xyz[0], grid_xyz[1], grid_xyz[2]};
    const dim3 block{block_xyz[0], block_xyz[1], block_xyz[2]};
    const unsigned long long blocks = 1ULL * grid.x * grid.y * grid.z;
    const unsigned threads = block.x * block.y * block.z;
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    // THREADS: a few workers, each its own fixed share of the blocks (b % workers), so blocks
    // of different workers are unordered for ThreadSanitizer (no shared block counter).
    const unsigned workers = static_cast<unsigned>(std::max(
        1ULL, std::min<unsigned long long>({mode == THREADS ? std::min(cores, 4u) : std::min(cores, 64u), blocks})));
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

    auto worker = [&](unsigned w) {
        block_dim = block;
        grid_dim = grid;
        std::vector<ThreadState> fibers(mode == FIBERS ? threads : 1);
        std::unique_ptr<Team> team(mode == THREADS ? new Team(body, block, grid, threads) : nullptr);
        std::unique_ptr<char[]> stacks(mode == FIBERS ? new char[threads * stack_size] : nullptr);
        for (unsigned long long i = mode == THREADS ? w : next++; i < blocks && !failed.load(std::memory_order_relaxed);
             i = mode == THREADS ? i + workers : next++) {
            const unsigned long long b = schedule == FORWARD ? i : blocks - 1 - i;
            block_idx = unflatten(b, grid);
            try {
                BlockMemory memory(shared_bytes, static_cast<unsigned char>(poison));
                std::string message;
                if (mode == THREADS) {
                    message = team->run(block_idx, memory);
                } else {
                    block_memory = &memory;
                    dynamic_shared = memory.dynamic;
                    const std::vector<unsigned> order = thread_order(threads, schedule, seed, b);
                    if (mode == FIBERS) {
                        message = run_block_as_fibers(body, block, order, fibers, stacks.get(), stack_size);
                    } else {
                        current = &fibers[0];
                        for (unsigned t : order) {
                            fibers[0].idx = unflatten(t, block);
                            body();
                        }
                    }
                }
                if (message.empty()) message = memory.overrun();
                if (!message.empty()) record(message, b);
            } catch (const std::exception& e) {
                record(e.what(), b);
            }
            current = nullptr;
            block_memory = nullptr;
            dynamic_shared = nullptr;
        }
    };
    std::vector<std::thread> pool;
    for (unsigned w = 0; w < workers; ++w) pool.emplace_back(worker, w);
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

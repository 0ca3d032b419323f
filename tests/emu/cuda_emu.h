/* CUDA-on-CPU shim: compiles the project's .cuh kernels as host C++ (g++, no nvcc) and runs them.

   What it models
     - emu_launch(grid, block, smem_bytes, kernel, args...): blocks run one after another; the threads of a
       block run concurrently as OS threads (FREE) or interleaved in a chosen order (see below).
     - __syncthreads / __syncthreads_or: a barrier over the block's non-exited threads.
     - __shfl_down_sync: a real warp exchange (each lane deposits its value in a per-warp slot, the warp
       waits until all 32 lanes have arrived, lane l then reads lane l+delta's slot; l+delta > 31 returns
       the lane's own value, as on the GPU with width 32). __shfl_sync: lane l reads lane srcLane % 32's
       slot. Only the full mask is supported.
     - __shared__ arrays declared inside a kernel become function-static (one per kernel instantiation):
       shared by the block's threads; blocks run one at a time, so one copy suffices. They are NOT cleared
       between blocks or launches (on the GPU their contents are undefined anyway).
     - dynamic shared memory (SG_DYN_SMEM in the .cuh files): malloc of exactly the launch's byte count
       (which must be a multiple of 16: sg_smem_round in cuda/kernel_common.cuh),
       filled with 0xFF bytes (a NaN for float and double) before every block, so reading uninitialised
       shared memory propagates NaN, and reading or writing past the end is caught by ASan / valgrind.
     - atomicMin / atomicOr / atomicAdd on the types the kernels use (GCC __atomic builtins).
     - Deadlocks (a barrier that not every live thread reaches, a shuffle with an exited lane) abort with
       a message instead of hanging.

   Scheduling modes (emu::set_mode), so that a missing __syncthreads shows up as a wrong result:
     FREE     the block's threads are real OS threads (std::thread, created once per launch and reused for
              every block) running concurrently: races show up as nondeterminism;
     FORWARD  one thread at a time, and between two sync points the lowest-numbered runnable thread runs
              until its next sync point: every thread finishes a phase before a higher one starts it;
     REVERSE  the same, highest-numbered thread first;
     RANDOM   the same, a random runnable thread each time (emu::set_seed).
   The ordered modes run the block's threads as fibers (own stacks, annotated for ASan) on the
   calling thread: the order is the point there, and a fiber switch costs well under a microsecond where an
   OS-thread hand-off costs several (a 256-thread barrier is 256 hand-offs).
   A read of shared data written by another thread in the same phase (i.e. a missing barrier between a
   write and a read) returns the stale value under FORWARD when the reader has the lower index, under
   REVERSE when it has the higher one: running both covers every pair deterministically.

   Not modelled: the GPU memory model (fences, visibility without barriers, __threadfence), warp-synchronous
   code that relies on lockstep execution without __shfl/__syncwarp, bank conflicts, performance,
   occupancy, register limits, launch failures other than the block-size/shared-memory limits checked here.
   Only 1-D grids and blocks. */
#ifndef SG_CUDA_EMU_H
#define SG_CUDA_EMU_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

/* Fiber switch: on x86-64 a minimal callee-saved-register switch (ASan intercepts swapcontext and prints a
   "may produce false positives" warning, which the sanitizer stage would count as a report; the switches
   here are annotated with __sanitizer_{start,finish}_switch_fiber instead). Elsewhere: ucontext. */
#if defined(__x86_64__) && !defined(SG_EMU_UCONTEXT)
#define SG_EMU_ASM_SWITCH 1
extern "C" void sg_emu_switch(void **save_sp, void *new_sp);
__asm__(".text\n"
        ".weak sg_emu_switch\n"
        ".hidden sg_emu_switch\n"
        ".type sg_emu_switch,@function\n"
        "sg_emu_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size sg_emu_switch,.-sg_emu_switch\n");
#endif

/* ---- qualifiers -------------------------------------------------------------------------------- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(x) __attribute__((aligned(x)))
#define __shared__ static
/* __restrict__ is a GCC keyword already. */

#ifndef SG_EMU_TOOLKIT_DIM3 /* device_emu.h: the toolkit's vector_types.h has defined it */
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
#endif

inline thread_local dim3 threadIdx{0, 0, 0};
inline thread_local dim3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

namespace emu {

enum Mode { FREE = 0, FORWARD = 1, REVERSE = 2, RANDOM = 3 };
const unsigned SHFL_IDX = 1u << 31; /* shfl_impl: delta holds __shfl_sync's source lane */
inline const char *mode_name(Mode m)
{
    return m == FREE ? "free" : m == FORWARD ? "forward" : m == REVERSE ? "reverse" : "random";
}

/* H100/H200: 1024 threads per block, 227 KB of dynamic shared memory per block (opt-in). */
constexpr unsigned MAX_THREADS = 1024;
constexpr size_t MAX_DYN_SMEM = 232448;

[[noreturn]] inline void die(const char *what)
{
    fprintf(stderr, "cuda_emu: %s\n", what);
    fflush(stderr);
    abort();
}

struct Settings {
    Mode mode = FREE;
    uint64_t seed = 1;
    unsigned long long launches = 0;
};
inline Settings &settings()
{
    static Settings s;
    return s;
}
inline void set_mode(Mode m) { settings().mode = m; }
inline void set_seed(uint64_t s) { settings().seed = s; }

/* The launch's lock. Ordered modes run every emulated thread as a fiber on one OS thread: there it is
   switched off (bypass), since locking it was a fifth of a barrier's cost and nothing can contend. */
struct Mutex {
    std::mutex m;
    bool bypass = false;
    void lock()
    {
        if (!bypass) m.lock();
    }
    void unlock()
    {
        if (!bypass) m.unlock();
    }
};
typedef std::unique_lock<Mutex> Lk;

/* State of one launch: the block in flight and its threads. All fields under mu. */
struct Launch {
    enum St { RUNNABLE = 0, WAIT_BAR = 1, WAIT_WARP = 2, DONE = 3 };
    Mutex mu;
    Mode mode;
    std::mt19937_64 rng;
    unsigned nt = 0, nblocks = 0;
    unsigned block = 0;          /* index of the block in flight */
    unsigned long block_gen = 0; /* bumped when a block completes */
    unsigned live = 0, waiting = 0;
    unsigned bar_arrived = 0;
    int bar_or = 0;
    std::vector<unsigned> warp_arrived;
    std::vector<int> state;
    std::vector<int> ret_int;
    std::vector<uint64_t> slot, ret_val;
    std::vector<unsigned> delta;
    std::unique_ptr<std::condition_variable_any[]> cv;
    int current = -1; /* ordered modes: the thread that may run */
    /* FORWARD / REVERSE: no thread below lo (above hi) is runnable. A thread stops being runnable only while
       it runs, and in these modes the running one is the lowest (highest) runnable, so pick() resumes its
       scan there instead of rescanning every thread per switch (O(threads²) per barrier phase otherwise). */
    unsigned lo = 0;
    int hi = -1;
    void all_runnable()
    {
        for (unsigned t = 0; t < nt; t++) state[t] = RUNNABLE;
        lo = 0;
        hi = (int)nt - 1;
    }
    /* ordered modes: fibers on the launching thread */
    bool fibers = false;
#ifdef SG_EMU_ASM_SWITCH
    void *sched_sp = nullptr;
    std::vector<void *> fsp; /* saved stack pointer of each fiber */
#else
    ucontext_t sched_ctx;
    std::vector<ucontext_t> fctx;
#endif
    std::vector<void *> fake; /* ASan fake-stack handles */
    char *stacks = nullptr;
    size_t stack_bytes = 0;
    const void *sched_bottom = nullptr;
    size_t sched_size = 0;
    unsigned char *smem = nullptr;
    size_t smem_bytes = 0;

    void fill_smem()
    {
        if (smem_bytes) memset(smem, 0xff, smem_bytes);
    }

    /* Ordered modes: pick the next thread to run among the runnable ones (-1: none). */
    int pick()
    {
        int n = (int)nt, r = -1;
        if (mode == FORWARD) {
            for (int t = (int)lo; t < n && r < 0; t++)
                if (state[t] == RUNNABLE) r = t;
            lo = r < 0 ? nt : (unsigned)r;
        } else if (mode == REVERSE) {
            for (int t = hi < n ? hi : n - 1; t >= 0 && r < 0; t--)
                if (state[t] == RUNNABLE) r = t;
            hi = r;
        } else {
            int cnt = 0;
            for (int t = 0; t < n; t++) cnt += state[t] == RUNNABLE;
            if (cnt) {
                int k = (int)(rng() % (uint64_t)cnt);
                for (int t = 0; t < n; t++)
                    if (state[t] == RUNNABLE && k-- == 0) { r = t; break; }
            }
        }
        return r;
    }

    void release(int t)
    {
        state[t] = RUNNABLE;
        if ((unsigned)t < lo) lo = (unsigned)t;
        if (t > hi) hi = t;
        waiting--;
        if (mode == FREE) cv[t].notify_one();
    }

    /* Complete the block barrier and/or warp exchanges whose participants have all arrived. */
    void settle()
    {
        if (bar_arrived > 0 && bar_arrived == live) {
            const int r = bar_or;
            for (unsigned t = 0; t < nt; t++)
                if (state[t] == WAIT_BAR) {
                    ret_int[t] = r;
                    release((int)t);
                }
            bar_arrived = 0;
            bar_or = 0;
        }
        for (unsigned w = 0; w < warp_arrived.size(); w++) {
            const unsigned lo = w * 32, lanes = nt - lo < 32 ? nt - lo : 32;
            if (warp_arrived[w] == 0 || warp_arrived[w] < lanes) continue;
            for (unsigned l = 0; l < lanes; l++) {
                const unsigned d = delta[lo + l];
                const unsigned src = d & SHFL_IDX ? d & 31u : l + d; /* __shfl_sync: lane srcLane % 32 */
                if (src >= 32) {
                    ret_val[lo + l] = slot[lo + l];
                } else if (src >= lanes) {
                    die("__shfl_down_sync / __shfl_sync reads a lane that does not exist (partial warp): undefined on the GPU");
                } else {
                    ret_val[lo + l] = slot[lo + src];
                }
            }
            for (unsigned l = 0; l < lanes; l++) release((int)(lo + l));
            warp_arrived[w] = 0;
        }
        if (live > 0 && waiting == live) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "deadlock in block %u: all %u live threads wait (%u at __syncthreads), none can proceed "
                     "(divergent barrier, or a shuffle with an exited lane)",
                     block, live, bar_arrived);
            die(msg);
        }
    }

    /* Called by thread t with mu held after it changed its own state: hand on the token (ordered modes)
       and wait until t may run again. */
    void to_scheduler(int t, bool final);
    void yield_and_wait(Lk &lk, int t)
    {
        if (fibers) { /* one OS thread: never switch with the mutex held */
            lk.unlock();
            to_scheduler(t, false);
            lk.lock();
            return;
        }
        if (mode == FREE) {
            cv[t].wait(lk, [&] { return state[t] == RUNNABLE; });
            return;
        }
        if (current == t) {
            current = pick();
            if (current >= 0 && current != t) cv[current].notify_one();
        }
        cv[t].wait(lk, [&] { return current == t; });
    }
};

/* Fiber t hands control back to the scheduler (final: it has finished the block and is never resumed). */
inline void Launch::to_scheduler(int t, bool final)
{
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_start_switch_fiber(final ? nullptr : &fake[t], sched_bottom, sched_size);
#endif
#ifdef SG_EMU_ASM_SWITCH
    sg_emu_switch(&fsp[t], sched_sp);
#else
    swapcontext(&fctx[t], &sched_ctx);
#endif
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(fake[t], &sched_bottom, &sched_size);
#endif
}

inline Launch *&cur_launch()
{
    static thread_local Launch *l = nullptr;
    return l;
}

inline unsigned char *dyn_smem() { return cur_launch()->smem; }

inline int sync_impl(int pred)
{
    Launch &L = *cur_launch();
    const int t = (int)threadIdx.x;
    Lk lk(L.mu);
    L.state[t] = Launch::WAIT_BAR;
    L.waiting++;
    L.bar_arrived++;
    L.bar_or |= pred != 0;
    L.settle();
    L.yield_and_wait(lk, t);
    return L.ret_int[t];
}

/* delta: __shfl_down_sync's lane offset, or SHFL_IDX | srcLane for __shfl_sync */
inline uint64_t shfl_impl(unsigned mask, uint64_t v, unsigned delta)
{
    if (mask != 0xffffffffu) die("__shfl_down_sync / __shfl_sync: only the full mask is emulated");
    Launch &L = *cur_launch();
    const int t = (int)threadIdx.x;
    Lk lk(L.mu);
    L.slot[t] = v;
    L.delta[t] = delta;
    L.state[t] = Launch::WAIT_WARP;
    L.waiting++;
    L.warp_arrived[t / 32]++;
    L.settle();
    L.yield_and_wait(lk, t);
    return L.ret_val[t];
}

/* Body of one emulated thread: runs the kernel for every block in turn. */
template <class F> void thread_main(Launch *Lp, unsigned tid, dim3 grid, dim3 block, F &body)
{
    cur_launch() = Lp;
    Launch &L = *Lp;
    threadIdx = dim3(tid, 0, 0);
    blockDim = block;
    gridDim = grid;
    for (unsigned b = 0; b < L.nblocks; b++) {
        {
            Lk lk(L.mu);
            L.cv[tid].wait(lk, [&] { return L.block == b && (L.mode == FREE || L.current == (int)tid); });
        }
        blockIdx = dim3(b, 0, 0);
        body();
        Lk lk(L.mu);
        L.state[tid] = Launch::DONE;
        L.live--;
        if (L.live == 0) { /* block complete: set up the next one */
            L.fill_smem();
            L.block++;
            L.live = L.nt;
            L.waiting = 0;
            L.bar_arrived = 0;
            L.bar_or = 0;
            L.all_runnable();
            L.current = L.mode == FREE ? -1 : L.pick();
            for (unsigned t = 0; t < L.nt; t++) L.cv[t].notify_one();
        } else {
            L.settle(); /* exited threads no longer count at barriers */
            if (L.mode != FREE && L.current == (int)tid) {
                L.current = L.pick();
                if (L.current < 0) die("no runnable thread left in the block (internal)");
                L.cv[L.current].notify_one();
            }
        }
    }
}

/* Ordered modes: fiber entry (makecontext passes ints: the two halves of a pointer to this struct). */
struct FiberStart {
    Launch *L;
    void (*run)(void *);
    void *body;
    unsigned tid;
};
inline Launch *&cur_launch();
inline FiberStart *&starting_fiber()
{
    static thread_local FiberStart *f = nullptr;
    return f;
}
inline void fiber_entry(unsigned lo, unsigned hi)
{
#ifdef SG_EMU_ASM_SWITCH
    (void)lo, (void)hi;
    FiberStart *fs = starting_fiber();
#else
    FiberStart *fs = (FiberStart *)(((uintptr_t)hi << 32) | (uintptr_t)lo);
#endif
    Launch &L = *fs->L;
    const int t = (int)fs->tid;
#if defined(__SANITIZE_ADDRESS__)
    __sanitizer_finish_switch_fiber(nullptr, &L.sched_bottom, &L.sched_size);
#endif
    fs->run(fs->body);
    {
        Lk lk(L.mu); /* uncontended: keeps settle()'s contract */
        L.state[t] = Launch::DONE;
        L.live--;
        if (L.live > 0) L.settle();
    }
    L.to_scheduler(t, true);
    die("finished fiber resumed (internal)");
}

template <class F> void run_fibers(Launch &L, dim3 grid, dim3 block, F &body)
{
    const unsigned nt = block.x;
    L.fibers = true;
    L.mu.bypass = true;
#ifdef SG_EMU_ASM_SWITCH
    L.fsp.assign(nt, nullptr);
#else
    L.fctx.resize(nt);
#endif
    L.fake.assign(nt, nullptr);
    L.stack_bytes = 256 * 1024; /* untouched pages cost nothing (mmap) */
    /* one mapping per launching thread, kept for later launches (mapping and touching fresh stacks for every
       launch dominated short kernels); a nested launch gets its own */
    struct Stacks {
        char *p = nullptr;
        size_t bytes = 0;
        bool busy = false;
        ~Stacks()
        {
            if (p) munmap(p, bytes);
        }
    };
    static thread_local Stacks cache;
    const size_t need = L.stack_bytes * nt;
    const bool own = cache.busy;
    char *mem = cache.p;
    if (own || cache.bytes < need) {
        void *m = mmap(nullptr, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) die("mmap of fiber stacks failed");
        mem = (char *)m;
        if (!own) {
            if (cache.p) munmap(cache.p, cache.bytes);
            cache.p = mem;
            cache.bytes = need;
        }
    }
    if (!own) cache.busy = true;
    L.stacks = mem;
    std::vector<FiberStart> fs(nt);
    auto run = [](void *b) { (*(F *)b)(); };
    cur_launch() = &L;
    blockDim = block;
    gridDim = grid;
    for (unsigned b = 0; b < L.nblocks; b++) {
        L.block = b;
        blockIdx = dim3(b, 0, 0);
        L.live = nt;
        L.waiting = 0;
        L.bar_arrived = 0;
        L.bar_or = 0;
        for (unsigned t = 0; t < nt; t++) {
            char *stk = L.stacks + (size_t)t * L.stack_bytes;
#if defined(__SANITIZE_ADDRESS__)
            /* the frames a finished fiber abandons (fiber_entry, to_scheduler) sit at the top of its stack;
               deeper frames were popped (and unpoisoned) normally */
            ASAN_UNPOISON_MEMORY_REGION(stk + L.stack_bytes - 16384, 16384);
#endif
            L.state[t] = Launch::RUNNABLE;
            fs[t] = FiberStart{&L, run, (void *)&body, t};
#ifdef SG_EMU_ASM_SWITCH
            /* initial frame: six zero registers, then fiber_entry as the return address, then a zero slot
               (fiber_entry never returns); entry sees rsp ≡ 8 (mod 16) as after a call */
            uintptr_t top = ((uintptr_t)stk + L.stack_bytes) & ~(uintptr_t)15;
            void **sp = (void **)(top - 64);
            for (int q = 0; q < 6; q++) sp[q] = nullptr;
            sp[6] = (void *)(void (*)(unsigned, unsigned))fiber_entry;
            sp[7] = nullptr;
            L.fsp[t] = (void *)sp;
#else
            getcontext(&L.fctx[t]);
            L.fctx[t].uc_stack.ss_sp = stk;
            L.fctx[t].uc_stack.ss_size = L.stack_bytes;
            L.fctx[t].uc_link = nullptr;
            const uintptr_t p = (uintptr_t)&fs[t];
            makecontext(&L.fctx[t], (void (*)())fiber_entry, 2, (unsigned)(p & 0xffffffffu), (unsigned)(p >> 32));
#endif
        }
        L.lo = 0;
        L.hi = (int)nt - 1;
        if (b > 0) L.fill_smem();
        for (;;) {
            const int t = L.pick();
            if (t < 0) break;
            L.current = t;
            threadIdx = dim3((unsigned)t, 0, 0);
#if defined(__SANITIZE_ADDRESS__)
            void *fk = nullptr;
            __sanitizer_start_switch_fiber(&fk, L.stacks + (size_t)t * L.stack_bytes, L.stack_bytes);
#endif
#ifdef SG_EMU_ASM_SWITCH
            starting_fiber() = &fs[t];
            sg_emu_switch(&L.sched_sp, L.fsp[t]);
#else
            swapcontext(&L.sched_ctx, &L.fctx[t]);
#endif
#if defined(__SANITIZE_ADDRESS__)
            __sanitizer_finish_switch_fiber(fk, nullptr, nullptr);
#endif
        }
        if (L.live != 0) die("block ended with live threads and none runnable (internal)");
    }
    if (own) munmap(mem, need);
    else cache.busy = false;
}

} // namespace emu

/* ---- device intrinsics ---------------------------------------------------------------------------- */
inline void __syncthreads() { (void)emu::sync_impl(0); }
inline int __syncthreads_or(int pred) { return emu::sync_impl(pred); }

template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    if (width != 32) emu::die("__shfl_down_sync: only width 32 is emulated");
    uint64_t raw = 0;
    memcpy(&raw, &v, sizeof(T));
    raw = emu::shfl_impl(mask, raw, delta);
    T r;
    memcpy(&r, &raw, sizeof(T));
    return r;
}

template <class T> inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32)
{
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    if (width != 32) emu::die("__shfl_sync: only width 32 is emulated");
    uint64_t raw = 0;
    memcpy(&raw, &v, sizeof(T));
    raw = emu::shfl_impl(mask, raw, emu::SHFL_IDX | ((unsigned)src_lane & 31u));
    T r;
    memcpy(&r, &raw, sizeof(T));
    return r;
}

inline int atomicOr(int *p, int v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline unsigned atomicOr(unsigned *p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline int atomicAdd(int *p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline unsigned long long atomicAdd(unsigned long long *p, unsigned long long v)
{
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
template <class T> inline T emu_atomic_cas_op(T *p, T v, int op)
{
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    for (;;) {
        T nv = op == 0 ? (v < old ? v : old) : op == 1 ? (v > old ? v : old) : (T)(old + v);
        if (__atomic_compare_exchange_n(p, &old, nv, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) return old;
    }
}
template <class T> inline T emu_atomic_add_fp(T *p, T v) /* one lock per type: no CAS on floating point */
{
    static std::mutex m;
    std::lock_guard<std::mutex> g(m);
    T o = *p;
    *p = o + v;
    return o;
}
inline float atomicAdd(float *p, float v) { return emu_atomic_add_fp(p, v); }
inline double atomicAdd(double *p, double v) { return emu_atomic_add_fp(p, v); }
inline unsigned long long atomicMin(unsigned long long *p, unsigned long long v) { return emu_atomic_cas_op(p, v, 0); }
inline int atomicMin(int *p, int v) { return emu_atomic_cas_op(p, v, 0); }
inline int atomicMax(int *p, int v) { return emu_atomic_cas_op(p, v, 1); }

using std::fabs;
using std::fma;
using std::fmax;
using std::fmin;
using std::isfinite;
using std::isinf;
using std::isnan;
using std::sqrt;

/* Dynamic shared memory: a pointer to the launch's buffer (see the header comment). */
#define SG_DYN_SMEM(name) unsigned char *const name = emu::dyn_smem()

/* ---- launch ----------------------------------------------------------------------------------------- */
template <class... P, class... A>
void emu_launch(dim3 grid, dim3 block, size_t smem_bytes, void (*kernel)(P...), A &&...args)
{
    static_assert(sizeof...(P) == sizeof...(A), "argument count");
    if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1) emu::die("only 1-D launches are emulated");
    if (grid.x == 0 || block.x == 0 || block.x > emu::MAX_THREADS)
        emu::die("invalid launch configuration (grid or block size)");
    if (smem_bytes > emu::MAX_DYN_SMEM) emu::die("dynamic shared memory above the device limit (227 KB)");
    /* stricter than the hardware: ptxas may read up to 12 bytes past an array's end (sg_smem_round) */
    if (smem_bytes % 16) emu::die("dynamic shared memory not a multiple of 16 bytes (size it with sg_smem_round)");
    std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...); /* converted as the launch would */
    emu::Settings &S = emu::settings();
    emu::Launch L;
    L.mode = S.mode;
    L.rng.seed(S.seed * 0x9E3779B97F4A7C15ull + ++S.launches);
    L.nt = block.x;
    L.nblocks = grid.x;
    L.live = block.x;
    L.warp_arrived.assign((block.x + 31) / 32, 0);
    L.state.assign(block.x, emu::Launch::RUNNABLE);
    L.hi = (int)block.x - 1;
    L.ret_int.assign(block.x, 0);
    L.slot.assign(block.x, 0);
    L.ret_val.assign(block.x, 0);
    L.delta.assign(block.x, 0);
    L.cv.reset(new std::condition_variable_any[block.x]);
    L.smem_bytes = smem_bytes;
    L.smem = (unsigned char *)malloc(smem_bytes ? smem_bytes : 1);
    if (!L.smem) emu::die("out of memory (shared memory buffer)");
    L.fill_smem();
    L.current = L.mode == emu::FREE ? -1 : L.pick();
    auto body = [&params, kernel] {
        std::tuple<std::decay_t<P>...> mine = params; /* each thread gets its own copy of the parameters */
        std::apply(kernel, mine);
    };
    if (L.mode == emu::FREE) {
        std::vector<std::thread> th;
        th.reserve(block.x);
        for (unsigned t = 0; t < block.x; t++) th.emplace_back([&, t] { emu::thread_main(&L, t, grid, block, body); });
        for (auto &x : th) x.join();
    } else {
        emu::Launch *prev = emu::cur_launch();
        const dim3 ti = threadIdx, bi = blockIdx, bd = blockDim, gd = gridDim;
        emu::run_fibers(L, grid, block, body);
        emu::cur_launch() = prev;
        threadIdx = ti, blockIdx = bi, blockDim = bd, gridDim = gd;
    }
    free(L.smem);
}

#endif

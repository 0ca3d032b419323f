/* An emulated CUDA device on the CPU: the cudart, cuSOLVER and cuBLAS functions the backend (cuda/) calls,
   with the toolkit headers' own prototypes, so that the backend's host code (chunking, streaming through
   pinned buffers, the scratch pool, OOM fallback, info-array checks) runs in CI without a GPU. The kernels
   run through tests/emu/cuda_emu.h (device_emu.h launches them). Built as a shared library: the fault
   injection suites interpose on it exactly as they do on the real libraries (dlsym(RTLD_NEXT)).

   Modelled, so that the bugs a GPU would expose show up here too:
     - streams run nothing at enqueue time: work is queued per stream and runs when that stream is
       synchronised (or when a call that implies it runs), so a result read before its stream is synchronised
       is still the stale buffer. The NULL stream and streams created without cudaStreamNonBlocking share
       one queue (legacy default-stream ordering); non-blocking streams are independent of each other.
     - copies from pageable memory are staged at the call (as cudart does), copies to pageable memory wait
       for their stream; pinned memory is read and written when the copy runs.
     - device memory is malloc'ed exactly (ASan sees overruns), filled with 0xFF bytes (NaN) on allocation,
       freed in stream order by cudaFreeAsync; a kernel argument or solver operand that is not (live) device
       or pinned memory raises cudaErrorIllegalAddress, sticky, as on a GPU.
     - a capacity (SG_EMU_DEVICE_MB, default 2048 MB): cudaMalloc / pool growth beyond it fail with
       cudaErrorMemoryAllocation; memory pools keep freed blocks idle (reused only by requests that fit one
       block), release above the threshold at synchronisation, and cudaMemPoolTrimTo.
     - launches: block size, 1-D only, dynamic shared memory above 48 KB only after cudaFuncSetAttribute.
     - solvers: syevjBatched by cyclic Jacobi with its tolerance / max-sweeps rule (info n + 1 when not
       converged), XsyevBatched through LAPACK ?syevd, gesvdjBatched through ?gesvd (m, n ≤ 32 enforced;
       V returned, not Vᵀ; its tolerance and sweeps are not modelled). Workspace sizes are checked against
       the bufferSize answers; A is NaN where cuSOLVER documents it as destroyed; XsyevBatched's
       n·lda·batch ≤ INT32_MAX is enforced and its host workspace written when the work runs (freed too
       early: ASan reports it). NaN/Inf never reach LAPACK (the backend with the input check off):
       XsyevBatched answers NaN with info 0, gesvdjBatched non-convergence (k + 1), and the Jacobi
       syevjBatched does not converge on its own (n + 1), so both answers a real solver might give are met.
       The Jacobi fakes do not scale: outside the dtype's safe range (squares overflow or underflow) syevj
       stops after one sweep with wrong values and gesvdj reports non-convergence, again one answer each.
   Not modelled: timing, concurrency between streams (queues run one at a time on the calling thread), the
   memory model, managed memory, peer devices (one device), the real solvers' accuracy and failures. */
#include "fake_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cusolverDn.h>
#include <lapacke.h>

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

/* ---- state -------------------------------------------------------------------------------------------- */
struct CUstream_st {
    bool nonblocking;
    std::deque<std::pair<const char *, std::function<cudaError_t()>>> q;
};
struct CUmemPoolHandle_st {
    uint64_t threshold = 0;
    size_t used = 0;
    std::vector<size_t> idle;                   /* sizes of freed blocks kept reserved */
    size_t idle_bytes() const
    {
        size_t s = 0;
        for (size_t b : idle) s += b;
        return s;
    }
};
struct CUevent_st {
    CUstream_st *q = nullptr; /* the queue its last record went to */
    bool done = true;
    double ms = 0; /* host time when the record ran */
};
struct cusolverDnContext {
    cudaStream_t s = nullptr;
};
struct JacobiParams { /* syevjInfo_t / gesvdjInfo_t: the Jacobi solvers' settings */
    double tol = 0;
    int sweeps = 100, sort = 1;
};
struct syevjInfo : JacobiParams {};
struct gesvdjInfo : JacobiParams {};
struct cusolverDnParams {
    int unused = 0;
};
struct cublasContext {
    cudaStream_t s = nullptr;
    cublasPointerMode_t mode = CUBLAS_POINTER_MODE_HOST;
};

namespace {
enum Kind { DEVICE, PINNED };
struct Alloc {
    size_t size;
    Kind kind;
    CUmemPoolHandle_st *pool; /* pool allocations: the block size reserved for it */
    size_t block;
};
struct State {
    std::recursive_mutex mu;
    std::map<uintptr_t, Alloc> allocs; /* by base address */
    CUstream_st legacy{false, {}};
    std::vector<CUstream_st *> streams;
    std::vector<CUmemPoolHandle_st *> pools;
    std::map<const void *, size_t> smem_optin;
    size_t capacity = 0, malloc_bytes = 0; /* cudaMalloc'ed, outside pools */
    size_t pool_reserved = 0;             /* used + idle over all pools */
    unsigned long refusals = 0;           /* allocations refused for lack of capacity */
    std::map<std::string, unsigned long> calls; /* per entry point, for sg_emu_calls */
    cudaError_t last = cudaSuccess;       /* cudaGetLastError */
    cudaError_t sticky = cudaSuccess;     /* an asynchronous fault: every later call fails */
    int device = 0;
    State()
    {
        const char *e = getenv("SG_EMU_DEVICE_MB");
        capacity = (size_t)(e && atol(e) > 0 ? atol(e) : 2048) << 20;
    }
};
State &S()
{
    static State s;
    return s;
}
typedef std::lock_guard<std::recursive_mutex> Lock;

size_t avail() /* device memory not reserved (0 when the capacity was lowered below what is held) */
{
    const State &st = S();
    const size_t used = st.malloc_bytes + st.pool_reserved;
    return used >= st.capacity ? 0 : st.capacity - used;
}

CUstream_st *q_of(cudaStream_t s)
{
    if (!s || s == cudaStreamLegacy || s == cudaStreamPerThread) return &S().legacy;
    return s->nonblocking ? s : &S().legacy;
}

cudaError_t ret(cudaError_t e)
{
    if (e != cudaSuccess) S().last = e;
    return e;
}

/* Runs a queue to its end; the first fault becomes sticky (as an illegal address poisons a GPU context). */
cudaError_t drain(CUstream_st *q)
{
    State &st = S();
    while (!q->q.empty()) {
        auto w = std::move(q->q.front());
        q->q.pop_front();
        if (st.sticky != cudaSuccess) continue; /* a faulted context runs nothing more */
        cudaError_t e = w.second();
        if (e != cudaSuccess) {
            fprintf(stderr, "fake_cuda: asynchronous fault in %s: %s\n", w.first, cudaGetErrorString(e));
            st.sticky = e;
        }
    }
    return st.sticky;
}
void release_above_threshold();
cudaError_t drain_all()
{
    State &st = S();
    drain(&st.legacy);
    for (CUstream_st *s : st.streams) drain(s);
    release_above_threshold();
    return st.sticky;
}

const Alloc *find(const void *p, uintptr_t *base)
{
    State &st = S();
    auto it = st.allocs.upper_bound((uintptr_t)p);
    if (it == st.allocs.begin()) return nullptr;
    --it;
    if ((uintptr_t)p > it->first + it->second.size) return nullptr; /* one past the end still counts */
    if (base) *base = it->first;
    return &it->second;
}

void *new_block(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (p) memset(p, 0xff, bytes); /* NaN: reading memory nobody wrote shows up */
    return p;
}

void pool_release(CUmemPoolHandle_st *p, size_t keep)
{
    std::sort(p->idle.begin(), p->idle.end());
    while (!p->idle.empty() && p->idle_bytes() > keep) {
        S().pool_reserved -= p->idle.back();
        p->idle.pop_back();
    }
}
void release_above_threshold()
{
    for (CUmemPoolHandle_st *p : S().pools) pool_release(p, p->threshold);
}
} // namespace

/* ---- hooks for device_emu.h -------------------------------------------------------------------------- */
namespace sgemu {
void enqueue(cudaStream_t s, const char *what, std::function<cudaError_t()> fn)
{
    Lock l(S().mu);
    q_of(s)->q.emplace_back(what, std::move(fn));
}
void launch_error(cudaError_t e, const char *what, const char *detail)
{
    Lock l(S().mu);
    fprintf(stderr, "fake_cuda: launch of %s refused: %s\n", what, detail);
    S().last = e;
}
bool device_addressable(const void *p)
{
    Lock l(S().mu);
    return find(p, nullptr) != nullptr;
}
size_t dyn_smem_limit(const void *kernel)
{
    Lock l(S().mu);
    auto it = S().smem_optin.find(kernel);
    return it == S().smem_optin.end() ? 48 * 1024 : it->second;
}
} // namespace sgemu

#define STICKY()                                                                                              \
    do {                                                                                                      \
        if (S().sticky != cudaSuccess) return ret(S().sticky);                                                \
    } while (0)

/* ---- cudart --------------------------------------------------------------------------------------------- */
extern "C" {

void sg_emu_set_capacity(size_t bytes)
{
    Lock l(S().mu);
    S().capacity = bytes;
}
unsigned long sg_emu_oom_refusals(void) { return S().refusals; }
unsigned long sg_emu_calls(const char *api)
{
    Lock l(S().mu);
    auto it = S().calls.find(api);
    return it == S().calls.end() ? 0 : it->second;
}

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    default: return "cuda error (emulated device)";
    }
}
const char *cudaGetErrorName(cudaError_t e) { return cudaGetErrorString(e); }

cudaError_t cudaGetLastError(void)
{
    Lock l(S().mu);
    cudaError_t e = S().last;
    S().last = S().sticky;
    return e;
}
cudaError_t cudaPeekAtLastError(void) { return S().last; }

cudaError_t cudaGetDeviceCount(int *n)
{
    if (!n) return ret(cudaErrorInvalidValue);
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d)
{
    if (!d) return ret(cudaErrorInvalidValue);
    *d = S().device;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : ret(cudaErrorInvalidDevice); }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d)
{
    if (!p) return ret(cudaErrorInvalidValue);
    if (d != 0) return ret(cudaErrorInvalidDevice);
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "specgrad emulated device (CPU)");
    p->major = 9;
    p->minor = 0;
    p->multiProcessorCount = 4; /* few: grid-stride loops wrap, and the emulation stays fast */
    p->totalGlobalMem = S().capacity;
    p->sharedMemPerBlock = 48 * 1024;
    p->sharedMemPerBlockOptin = 232448;
    p->sharedMemPerMultiprocessor = 233472;
    p->maxThreadsPerBlock = 1024;
    p->maxThreadsPerMultiProcessor = 2048;
    p->warpSize = 32;
    p->maxGridSize[0] = INT_MAX;
    p->maxGridSize[1] = p->maxGridSize[2] = 65535;
    p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
    p->maxThreadsDim[2] = 64;
    p->unifiedAddressing = 1;
    p->l2CacheSize = 4 << 20;
    p->pageableMemoryAccess = 0;
    p->concurrentManagedAccess = 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d)
{
    if (!v) return ret(cudaErrorInvalidValue);
    if (d != 0) return ret(cudaErrorInvalidDevice);
    switch (a) {
    case cudaDevAttrMemoryPoolsSupported: *v = getenv("SG_EMU_NO_POOLS") ? 0 : 1; break;
    case cudaDevAttrPageableMemoryAccess: *v = 0; break;
    case cudaDevAttrMultiProcessorCount: *v = 4; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = 232448; break;
    default: *v = 0; break;
    }
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void)
{
    Lock l(S().mu);
    return ret(drain_all());
}

/* streams */
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags)
{
    Lock l(S().mu);
    STICKY();
    if (!s) return ret(cudaErrorInvalidValue);
    *s = new CUstream_st{(flags & cudaStreamNonBlocking) != 0, {}};
    S().streams.push_back(*s);
    return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    Lock l(S().mu);
    auto &v = S().streams;
    auto it = std::find(v.begin(), v.end(), s);
    if (!s || it == v.end()) return ret(cudaErrorInvalidResourceHandle);
    drain(q_of(s)); /* queued work completes before the stream goes */
    v.erase(it);
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    Lock l(S().mu);
    S().calls["cudaStreamSynchronize"]++;
    if (s && s != cudaStreamLegacy && s != cudaStreamPerThread &&
        std::find(S().streams.begin(), S().streams.end(), s) == S().streams.end())
        return ret(cudaErrorInvalidResourceHandle);
    cudaError_t e = drain(q_of(s));
    release_above_threshold();
    return ret(e);
}

cudaError_t cudaRuntimeGetVersion(int *v)
{
    if (!v) return ret(cudaErrorInvalidValue);
    *v = CUDART_VERSION;
    return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int *v) { return cudaRuntimeGetVersion(v); }

/* events: a record is queued work that notes the host clock when it runs (timings mean nothing here) */
cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    if (!e) return ret(cudaErrorInvalidValue);
    *e = new CUevent_st();
    return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned int flags)
{
    (void)flags;
    return cudaEventCreate(e);
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    Lock l(S().mu);
    STICKY();
    if (!e) return ret(cudaErrorInvalidResourceHandle);
    e->q = q_of(s);
    e->done = false;
    sgemu::enqueue(s, "cudaEventRecord", [e]() {
        e->ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
        e->done = true;
        return cudaSuccess;
    });
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    Lock l(S().mu);
    if (!e) return ret(cudaErrorInvalidResourceHandle);
    if (!e->done) drain(e->q);
    return ret(S().sticky);
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    Lock l(S().mu);
    if (!ms || !a || !b) return ret(cudaErrorInvalidValue);
    if (!a->done || !b->done) return ret(cudaErrorNotReady);
    *ms = (float)(b->ms - a->ms);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    Lock l(S().mu);
    if (!e) return ret(cudaErrorInvalidResourceHandle);
    if (!e->done) drain(e->q); /* its record must not run on a freed event */
    delete e;
    return cudaSuccess;
}

/* memory */
cudaError_t cudaMalloc(void **p, size_t bytes)
{
    Lock l(S().mu);
    STICKY();
    if (!p) return ret(cudaErrorInvalidValue);
    *p = nullptr;
    State &st = S();
    if (bytes > avail()) {
        st.refusals++;
        return ret(cudaErrorMemoryAllocation);
    }
    void *q = new_block(bytes);
    if (!q) return ret(cudaErrorMemoryAllocation);
    st.allocs[(uintptr_t)q] = Alloc{bytes, DEVICE, nullptr, 0};
    st.malloc_bytes += bytes;
    *p = q;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p)
{
    Lock l(S().mu);
    drain_all(); /* cudaFree synchronises the device */
    STICKY();
    if (!p) return cudaSuccess;
    auto it = S().allocs.find((uintptr_t)p);
    if (it == S().allocs.end() || it->second.kind != DEVICE) return ret(cudaErrorInvalidValue);
    if (it->second.pool) { /* stream-ordered memory may be freed this way too: the queues have run */
        cudaFreeAsync(p, nullptr);
        return ret(drain(&S().legacy));
    }
    S().malloc_bytes -= it->second.size;
    S().allocs.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaHostAlloc(void **p, size_t bytes, unsigned int flags)
{
    (void)flags;
    Lock l(S().mu);
    STICKY();
    if (!p) return ret(cudaErrorInvalidValue);
    *p = new_block(bytes);
    if (!*p) return ret(cudaErrorMemoryAllocation);
    S().allocs[(uintptr_t)*p] = Alloc{bytes, PINNED, nullptr, 0};
    return cudaSuccess;
}
cudaError_t cudaMallocHost(void **p, size_t bytes) { return cudaHostAlloc(p, bytes, 0); }
cudaError_t cudaFreeHost(void *p)
{
    Lock l(S().mu);
    drain_all();
    STICKY();
    if (!p) return cudaSuccess;
    auto it = S().allocs.find((uintptr_t)p);
    if (it == S().allocs.end() || it->second.kind != PINNED) return ret(cudaErrorInvalidValue);
    S().allocs.erase(it);
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *fr, size_t *tot)
{
    Lock l(S().mu);
    S().calls["cudaMemGetInfo"]++;
    STICKY();
    State &st = S();
    if (fr) *fr = avail();
    if (tot) *tot = st.capacity;
    return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p)
{
    Lock l(S().mu);
    if (!a) return ret(cudaErrorInvalidValue);
    memset(a, 0, sizeof *a);
    const Alloc *al = find(p, nullptr);
    a->device = al ? 0 : -2;
    if (!al) {
        a->type = cudaMemoryTypeUnregistered;
        a->hostPointer = (void *)p;
    } else if (al->kind == DEVICE) {
        a->type = cudaMemoryTypeDevice;
        a->devicePointer = (void *)p;
    } else {
        a->type = cudaMemoryTypeHost;
        a->devicePointer = a->hostPointer = (void *)p;
    }
    return cudaSuccess;
}

/* pools */
cudaError_t cudaMemPoolCreate(cudaMemPool_t *p, const cudaMemPoolProps *props)
{
    Lock l(S().mu);
    if (!p || !props || props->location.type != cudaMemLocationTypeDevice || props->location.id != 0)
        return ret(cudaErrorInvalidValue);
    *p = new CUmemPoolHandle_st();
    S().pools.push_back(*p);
    return cudaSuccess;
}
cudaError_t cudaMemPoolDestroy(cudaMemPool_t p)
{
    Lock l(S().mu);
    auto &v = S().pools;
    auto it = std::find(v.begin(), v.end(), p);
    if (it == v.end()) return ret(cudaErrorInvalidValue);
    drain_all(); /* "returns at once; released when nothing is outstanding": here, once the queues ran */
    pool_release(p, 0);
    if (p->used) { /* blocks still allocated: the pool lives on with them (never reused) */
        v.erase(it);
        return cudaSuccess;
    }
    v.erase(it);
    delete p;
    return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t p, cudaMemPoolAttr a, void *v)
{
    Lock l(S().mu);
    if (!p || !v || a != cudaMemPoolAttrReleaseThreshold) return ret(cudaErrorInvalidValue);
    p->threshold = *(uint64_t *)v;
    return cudaSuccess;
}
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t p, cudaMemPoolAttr a, void *v)
{
    Lock l(S().mu);
    if (!p || !v) return ret(cudaErrorInvalidValue);
    switch (a) {
    case cudaMemPoolAttrReleaseThreshold: *(uint64_t *)v = p->threshold; break;
    case cudaMemPoolAttrReservedMemCurrent: *(uint64_t *)v = p->used + p->idle_bytes(); break;
    case cudaMemPoolAttrUsedMemCurrent: *(uint64_t *)v = p->used; break;
    default: return ret(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t p, size_t keep)
{
    Lock l(S().mu);
    if (!p) return ret(cudaErrorInvalidValue);
    pool_release(p, keep);
    return cudaSuccess;
}
cudaError_t cudaMallocFromPoolAsync(void **p, size_t bytes, cudaMemPool_t pool, cudaStream_t s)
{
    (void)s;
    Lock l(S().mu);
    STICKY();
    if (!p || !pool) return ret(cudaErrorInvalidValue);
    *p = nullptr;
    State &st = S();
    /* the smallest idle block that holds the request; else a new reservation within the capacity */
    size_t block = 0;
    auto best = pool->idle.end();
    for (auto it = pool->idle.begin(); it != pool->idle.end(); ++it)
        if (*it >= bytes && (best == pool->idle.end() || *it < *best)) best = it;
    if (best != pool->idle.end()) {
        block = *best;
        pool->idle.erase(best);
    } else {
        if (bytes > avail()) {
            st.refusals++;
            return ret(cudaErrorMemoryAllocation);
        }
        block = bytes;
        st.pool_reserved += bytes;
    }
    void *q = new_block(bytes);
    if (!q) return ret(cudaErrorMemoryAllocation);
    pool->used += block;
    st.allocs[(uintptr_t)q] = Alloc{bytes, DEVICE, pool, block};
    *p = q;
    return cudaSuccess;
}
cudaError_t cudaFreeAsync(void *p, cudaStream_t s)
{
    Lock l(S().mu);
    STICKY();
    if (!p) return cudaSuccess;
    auto it = S().allocs.find((uintptr_t)p);
    if (it == S().allocs.end() || it->second.kind != DEVICE) return ret(cudaErrorInvalidValue);
    sgemu::enqueue(s, "cudaFreeAsync", [p]() {
        auto a = S().allocs.find((uintptr_t)p);
        if (a == S().allocs.end()) return cudaErrorInvalidValue; /* double free */
        CUmemPoolHandle_st *pool = a->second.pool;
        if (pool) {
            pool->used -= a->second.block;
            if (std::find(S().pools.begin(), S().pools.end(), pool) != S().pools.end()) {
                pool->idle.push_back(a->second.block);
            } else { /* destroyed pool: its memory goes as its blocks come back */
                S().pool_reserved -= a->second.block;
                if (!pool->used) delete pool;
            }
        } else {
            S().malloc_bytes -= a->second.size;
        }
        S().allocs.erase(a);
        free(p);
        return cudaSuccess;
    });
    return cudaSuccess;
}

/* copies */
static bool is_dev(const void *p) { return find(p, nullptr) != nullptr; }

/* A copy of `rows` rows of `width` bytes; pitches in bytes. Pageable sources are staged now; pageable
   destinations wait for the stream (as cudart does); everything else runs in stream order. */
static cudaError_t copy2d(void *dst, size_t dp, const void *src, size_t sp, size_t width, size_t rows,
                          cudaMemcpyKind kind, cudaStream_t s, const char *what)
{
    Lock l(S().mu);
    STICKY();
    if ((rows > 1 && (width > dp || width > sp)) || (width && rows && (!dst || !src))) return ret(cudaErrorInvalidValue);
    if (!width || !rows) return cudaSuccess;
    const bool dd = is_dev(dst), sd = is_dev(src);
    const uintptr_t dend = (uintptr_t)dst + dp * (rows - 1) + width, send = (uintptr_t)src + sp * (rows - 1) + width;
    if ((dd && !is_dev((void *)(dend - 1))) || (sd && !is_dev((void *)(send - 1)))) return ret(cudaErrorInvalidValue);
    switch (kind) { /* a device side given pageable host memory is refused (the GPU could not address it) */
    case cudaMemcpyHostToDevice: if (!dd) return ret(cudaErrorInvalidValue); break;
    case cudaMemcpyDeviceToHost: if (!sd) return ret(cudaErrorInvalidValue); break;
    case cudaMemcpyDeviceToDevice: if (!dd || !sd) return ret(cudaErrorInvalidValue); break;
    case cudaMemcpyHostToHost: case cudaMemcpyDefault: break;
    default: return ret(cudaErrorInvalidValue);
    }
    auto run = [=](const void *from) {
        for (size_t r = 0; r < rows; r++) memcpy((char *)dst + r * dp, (const char *)from + r * (src == from ? sp : width), width);
    };
    if (!dd) { /* to pageable memory: after the work queued before it, and done when the call returns */
        cudaError_t e = drain(q_of(s));
        if (e != cudaSuccess) return ret(e);
        run(src);
        return cudaSuccess;
    }
    if (!sd) { /* from pageable memory: staged at the call */
        std::shared_ptr<std::vector<char>> stage = std::make_shared<std::vector<char>>(width * rows);
        for (size_t r = 0; r < rows; r++) memcpy(stage->data() + r * width, (const char *)src + r * sp, width);
        sgemu::enqueue(s, what, [=]() {
            if (!is_dev(dst)) return cudaErrorIllegalAddress;
            run(stage->data());
            return cudaSuccess;
        });
        return cudaSuccess;
    }
    sgemu::enqueue(s, what, [=]() {
        if ((dd && !is_dev(dst)) || (sd && !is_dev(src))) return cudaErrorIllegalAddress; /* freed meanwhile */
        run(src);
        return cudaSuccess;
    });
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s)
{
    return copy2d(dst, n, src, n, n, 1, kind, s, "cudaMemcpyAsync");
}
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dp, const void *src, size_t sp, size_t w, size_t h, cudaMemcpyKind kind,
                              cudaStream_t s)
{
    return copy2d(dst, dp, src, sp, w, h, kind, s, "cudaMemcpy2DAsync");
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
    Lock l(S().mu);
    cudaError_t e = copy2d(dst, n, src, n, n, 1, kind, nullptr, "cudaMemcpy");
    if (e != cudaSuccess) return e;
    return ret(drain(&S().legacy)); /* synchronous with the host; ordered with the legacy stream only */
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s);
cudaError_t cudaMemset(void *p, int v, size_t n)
{
    Lock l(S().mu);
    cudaError_t e = cudaMemsetAsync(p, v, n, nullptr);
    return e != cudaSuccess ? e : ret(drain(&S().legacy));
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    Lock l(S().mu);
    STICKY();
    if (!n) return cudaSuccess;
    if (!is_dev(p) || !is_dev((char *)p + n - 1)) return ret(cudaErrorInvalidValue);
    sgemu::enqueue(s, "cudaMemsetAsync", [=]() {
        if (!is_dev(p)) return cudaErrorIllegalAddress;
        memset(p, v, n);
        return cudaSuccess;
    });
    return cudaSuccess;
}

/* kernels (the launches themselves are in device_emu.h) */
cudaError_t cudaFuncSetAttribute(const void *f, cudaFuncAttribute a, int v)
{
    Lock l(S().mu);
    S().calls["cudaFuncSetAttribute"]++;
    if (!f) return ret(cudaErrorInvalidDeviceFunction);
    if (a == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (v < 0 || v > 232448) return ret(cudaErrorInvalidValue);
        S().smem_optin[f] = (size_t)v;
    }
    return cudaSuccess;
}
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, const void *f)
{
    if (!a || !f) return ret(cudaErrorInvalidValue);
    memset(a, 0, sizeof *a);
    a->maxThreadsPerBlock = 1024;
    a->maxDynamicSharedSizeBytes = (int)sgemu::dyn_smem_limit(f);
    a->ptxVersion = a->binaryVersion = 90;
    return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *n, const void *f, int threads, size_t smem,
                                                                   unsigned int flags)
{
    (void)flags;
    {
        Lock l(S().mu);
        S().calls["cudaOccupancyMaxActiveBlocksPerMultiprocessor"]++;
        S().calls["occupancy threads=" + std::to_string(threads)]++; /* which block size was asked about */
    }
    if (!n || !f || threads <= 0 || threads > 1024) return ret(cudaErrorInvalidValue);
    int by_threads = 2048 / threads, by_smem = (int)(233472 / (smem + 1024));
    *n = std::max(0, std::min(std::min(by_threads, by_smem), 32));
    return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, const void *f, int threads, size_t smem)
{
    return cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(n, f, threads, smem, 0);
}

} /* extern "C" (cudart) */

/* ---- cuSOLVER ------------------------------------------------------------------------------------------- */
namespace {
/* Operands the solver reads or writes must be device memory (checked when the work runs). */
bool all_dev(std::initializer_list<const void *> ps)
{
    for (const void *p : ps)
        if (p && !is_dev(p)) return false;
    return true;
}
void nan_fill(float *p, size_t n) { std::fill(p, p + n, __builtin_nanf("")); }
void nan_fill(double *p, size_t n) { std::fill(p, p + n, __builtin_nan("")); }
lapack_int syevd(char jobz, char uplo, lapack_int n, float *a, lapack_int lda, float *w)
{ return LAPACKE_ssyevd(LAPACK_COL_MAJOR, jobz, uplo, n, a, lda, w); }
lapack_int syevd(char jobz, char uplo, lapack_int n, double *a, lapack_int lda, double *w)
{ return LAPACKE_dsyevd(LAPACK_COL_MAJOR, jobz, uplo, n, a, lda, w); }
lapack_int gesvd(char j, lapack_int m, lapack_int n, float *a, float *s, float *u, float *vt)
{
    std::vector<float> sup((size_t)std::max(1, std::min(m, n)));
    return LAPACKE_sgesvd(LAPACK_COL_MAJOR, j, j, m, n, a, m, s, u, m, vt, n, sup.data());
}
lapack_int gesvd(char j, lapack_int m, lapack_int n, double *a, double *s, double *u, double *vt)
{
    std::vector<double> sup((size_t)std::max(1, std::min(m, n)));
    return LAPACKE_dgesvd(LAPACK_COL_MAJOR, j, j, m, n, a, m, s, u, m, vt, n, sup.data());
}

/* Whether the m×n matrix at A (ld lda) is finite: LAPACK must not see NaN/Inf (?bdsqr can loop forever on
   one), so the fakes answer a non-finite matrix themselves (backend with the input check off). */
template <class T> bool finite_mat(const T *A, int64_t m, int64_t n, int64_t lda)
{
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < m; i++)
            if (!std::isfinite(A[i + j * lda])) return false;
    return true;
}

/* Batched eigh on nb matrices at A (ld lda, packed lda·n apart). info: 0, or n + 1 for non-convergence
   (syevjBatched's code). NOVECTOR leaves A destroyed. A matrix with NaN/Inf in the referenced triangle
   gets NaN values and vectors with info 0 (propagation; the other fakes report non-convergence, so
   the backend meets both answers). */
template <class T>
cudaError_t eigh_batch(bool vec, cublasFillMode_t uplo, int64_t n, T *A, int64_t lda, T *W, int *info, int64_t nb)
{
    if (!all_dev({A, W, info})) return cudaErrorIllegalAddress;
    std::vector<T> a((size_t)(n * n));
    for (int64_t b = 0; b < nb; b++) {
        T *Ab = A + b * lda * n;
        for (int64_t j = 0; j < n; j++) memcpy(&a[(size_t)(j * n)], Ab + j * lda, sizeof(T) * (size_t)n);
        bool fin = true;
        for (int64_t j = 0; j < n && fin; j++) /* the referenced triangle of column j */
            fin = uplo == CUBLAS_FILL_MODE_LOWER ? finite_mat(&a[(size_t)(j * n + j)], n - j, 1, n)
                                                 : finite_mat(&a[(size_t)(j * n)], j + 1, 1, n);
        lapack_int r = 0;
        if (fin) {
            r = syevd(vec ? 'V' : 'N', uplo == CUBLAS_FILL_MODE_LOWER ? 'L' : 'U', (lapack_int)n, a.data(),
                      (lapack_int)std::max<int64_t>(1, n), W + b * n);
        } else {
            nan_fill(W + b * n, (size_t)n);
            nan_fill(a.data(), a.size());
        }
        info[b] = r == 0 ? 0 : r > 0 ? (int)n + 1 : (int)r;
        for (int64_t j = 0; j < n; j++) {
            if (vec) memcpy(Ab + j * lda, &a[(size_t)(j * n)], sizeof(T) * (size_t)n);
            else nan_fill(Ab + j * lda, (size_t)n);
        }
    }
    return cudaSuccess;
}
/* syevjBatched: cyclic Jacobi with cuSOLVER's stopping rule, ‖off(A)‖_F ≤ tol·‖A‖_F checked after each
   sweep (tol 0: the dtype's eps), at most `sweeps` sweeps, else info = n + 1; eigenvalues ascending. So the
   sweep and tolerance settings decide convergence as they do on the GPU. The rotations run in double, but
   the two norms are sums of squares in the dtype, unscaled: the pessimistic model of a solver that does not
   scale (cuSOLVER documents none). Past 2^±64 (f32) or 2^±512 (f64) they overflow or underflow, the test
   passes after one sweep, and the eigenvalues are wrong: the backend's safe-range scaling
   (k_range_scale) must keep A away from there. */
template <class T>
cudaError_t jacobi_batch(bool vec, cublasFillMode_t uplo, int n, T *A, int lda, T *W, int *info, int nb, double tol,
                         int sweeps)
{
    if (!all_dev({A, W, info})) return cudaErrorIllegalAddress;
    const double eps = sizeof(T) == 4 ? 5.96e-8 : 1.11e-16, t = tol > 0 ? tol : eps;
    std::vector<double> a((size_t)n * n), v((size_t)n * n);
    std::vector<int> ord((size_t)n);
    for (int b = 0; b < nb; b++) {
        T *Ab = A + (int64_t)b * lda * n;
        for (int j = 0; j < n; j++)
            for (int i = 0; i < n; i++) { /* the referenced triangle, mirrored */
                const bool ref = uplo == CUBLAS_FILL_MODE_LOWER ? i >= j : i <= j;
                a[(size_t)i + (size_t)j * n] = ref ? (double)Ab[i + (int64_t)j * lda] : (double)Ab[j + (int64_t)i * lda];
                v[(size_t)i + (size_t)j * n] = i == j;
            }
        T fro2 = 0; /* in the dtype, unscaled (see above) */
        for (double x : a) fro2 += (T)x * (T)x;
        const double fro = sqrt((double)fro2);
        bool conv = n <= 1;
        for (int sw = 0; sw < sweeps && !conv; sw++) {
            for (int p = 0; p < n - 1; p++)
                for (int q = p + 1; q < n; q++) {
                    double apq = a[(size_t)p + (size_t)q * n];
                    if (apq == 0) continue;
                    double app = a[(size_t)p * (n + 1)], aqq = a[(size_t)q * (n + 1)];
                    double th = (aqq - app) / (2 * apq);
                    double tt = (th >= 0 ? 1 : -1) / (fabs(th) + sqrt(th * th + 1));
                    double c = 1 / sqrt(tt * tt + 1), s = tt * c;
                    for (int k = 0; k < n; k++) { /* A ← A J (columns p, q) */
                        double x = a[(size_t)k + (size_t)p * n], y = a[(size_t)k + (size_t)q * n];
                        a[(size_t)k + (size_t)p * n] = c * x - s * y;
                        a[(size_t)k + (size_t)q * n] = s * x + c * y;
                    }
                    for (int k = 0; k < n; k++) { /* A ← Jᵀ A (rows p, q) */
                        double x = a[(size_t)p + (size_t)k * n], y = a[(size_t)q + (size_t)k * n];
                        a[(size_t)p + (size_t)k * n] = c * x - s * y;
                        a[(size_t)q + (size_t)k * n] = s * x + c * y;
                    }
                    a[(size_t)p + (size_t)q * n] = a[(size_t)q + (size_t)p * n] = 0; /* annihilated exactly */
                    for (int k = 0; k < n; k++) {
                        double x = v[(size_t)k + (size_t)p * n], y = v[(size_t)k + (size_t)q * n];
                        v[(size_t)k + (size_t)p * n] = c * x - s * y;
                        v[(size_t)k + (size_t)q * n] = s * x + c * y;
                    }
                }
            T off = 0;
            for (int j = 0; j < n; j++)
                for (int i = 0; i < n; i++)
                    if (i != j) off += (T)a[(size_t)i + (size_t)j * n] * (T)a[(size_t)i + (size_t)j * n];
            conv = sqrt((double)off) <= t * fro;
        }
        info[b] = conv ? 0 : n + 1;
        for (int i = 0; i < n; i++) ord[(size_t)i] = i;
        std::stable_sort(ord.begin(), ord.end(), [&](int x, int y) { return a[(size_t)x * (n + 1)] < a[(size_t)y * (n + 1)]; });
        for (int i = 0; i < n; i++) W[(int64_t)b * n + i] = (T)a[(size_t)ord[(size_t)i] * (n + 1)];
        for (int j = 0; j < n; j++)
            for (int i = 0; i < n; i++)
                Ab[i + (int64_t)j * lda] = vec ? (T)v[(size_t)i + (size_t)ord[(size_t)j] * n] : (T)__builtin_nan("");
    }
    return cudaSuccess;
}

/* Workspace the fake asks for, in elements: the check that callers pass what the query returned. */
int64_t syevj_lwork(int n, int nb) { return (int64_t)(2 * n + 1) * nb + 7; }
int64_t gesvdj_lwork(int m, int n, int nb) { return (int64_t)(m + n + 1) * nb + 5; }

template <class T>
cusolverStatus_t syevj_batched(cusolverDnHandle_t h, cusolverEigMode_t jobz, cublasFillMode_t uplo, int n, T *A, int lda,
                               T *W, T *work, int lwork, int *info, syevjInfo_t p, int nb)
{
    if (!h || !p) return CUSOLVER_STATUS_NOT_INITIALIZED;
    if (n < 0 || lda < std::max(1, n) || nb < 0 || (jobz != CUSOLVER_EIG_MODE_VECTOR && jobz != CUSOLVER_EIG_MODE_NOVECTOR) ||
        (uplo != CUBLAS_FILL_MODE_LOWER && uplo != CUBLAS_FILL_MODE_UPPER))
        return CUSOLVER_STATUS_INVALID_VALUE;
    if (lwork < syevj_lwork(n, nb) || (n && nb && (!A || !W || !work || !info))) return CUSOLVER_STATUS_INVALID_VALUE;
    const double tol = p->tol;
    const int sweeps = p->sweeps;
    Lock l(S().mu);
    sgemu::enqueue(h->s, "syevjBatched", [=]() {
        if (!all_dev({work, work + lwork - 1})) return cudaErrorIllegalAddress;
        return jacobi_batch(jobz == CUSOLVER_EIG_MODE_VECTOR, uplo, n, A, lda, W, info, nb, tol, sweeps);
    });
    return CUSOLVER_STATUS_SUCCESS;
}

template <class T>
cusolverStatus_t gesvdj_batched(cusolverDnHandle_t h, cusolverEigMode_t jobz, int m, int n, T *A, int lda, T *S_,
                                T *U, int ldu, T *V, int ldv, T *work, int lwork, int *info, gesvdjInfo_t p, int nb)
{
    if (!h || !p) return CUSOLVER_STATUS_NOT_INITIALIZED;
    const bool vec = jobz == CUSOLVER_EIG_MODE_VECTOR;
    if (m < 0 || n < 0 || m > 32 || n > 32 || lda < std::max(1, m) || nb < 0 ||
        (vec && (ldu < std::max(1, m) || ldv < std::max(1, n))) || (!vec && jobz != CUSOLVER_EIG_MODE_NOVECTOR))
        return CUSOLVER_STATUS_INVALID_VALUE;
    if (lwork < gesvdj_lwork(m, n, nb)) return CUSOLVER_STATUS_INVALID_VALUE;
    Lock l(S().mu);
    sgemu::enqueue(h->s, "gesvdjBatched", [=]() {
        if (!all_dev({A, S_, work, work + lwork - 1, info}) || (vec && !all_dev({U, V}))) return cudaErrorIllegalAddress;
        const int k = std::min(m, n);
        std::vector<T> a((size_t)(m * n)), u((size_t)(m * m)), vt((size_t)(n * n));
        for (int b = 0; b < nb; b++) {
            T *Ab = A + (int64_t)b * lda * n;
            for (int j = 0; j < n; j++) memcpy(&a[(size_t)j * m], Ab + (int64_t)j * lda, sizeof(T) * (size_t)m);
            lapack_int r = 0;
            if (!finite_mat(a.data(), m, n, m)) { /* NaN/Inf: non-convergence (as the Jacobi fake), NaN outputs */
                nan_fill(S_ + (int64_t)b * k, (size_t)k);
                nan_fill(u.data(), u.size());
                nan_fill(vt.data(), vt.size());
                r = 1;
            } else if (m && n) {
                T fro2 = 0; /* unscaled sum of squares in the dtype, as the syevj fake's stopping rule */
                bool nonzero = false;
                for (T x : a) fro2 += x * x, nonzero |= x != 0;
                r = gesvd(vec ? 'A' : 'N', m, n, a.data(), S_ + (int64_t)b * k, u.data(), vt.data());
                if (!std::isfinite(fro2) || (nonzero && fro2 == 0)) r = 1; /* out of range: no convergence */
            }
            info[b] = r == 0 ? 0 : r > 0 ? k + 1 : (int)r;
            for (int j = 0; j < n; j++) nan_fill(Ab + (int64_t)j * lda, (size_t)m); /* destroyed */
            if (!vec) continue;
            T *Ub = U + (int64_t)b * ldu * m, *Vb = V + (int64_t)b * ldv * n;
            for (int j = 0; j < m; j++) memcpy(Ub + (int64_t)j * ldu, &u[(size_t)j * m], sizeof(T) * (size_t)m);
            for (int j = 0; j < n; j++)
                for (int i = 0; i < n; i++) Vb[i + (int64_t)j * ldv] = vt[(size_t)j + (size_t)i * n]; /* V, not Vᵀ */
        }
        return cudaSuccess;
    });
    return CUSOLVER_STATUS_SUCCESS;
}
template <class I> cusolverStatus_t jacobi_create(I **p)
{
    if (!p) return CUSOLVER_STATUS_INVALID_VALUE;
    *p = new I();
    return CUSOLVER_STATUS_SUCCESS;
}
template <class I> cusolverStatus_t jacobi_destroy(I *p)
{
    delete p;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t jacobi_tol(JacobiParams *p, double t)
{
    if (!p || !(t >= 0)) return CUSOLVER_STATUS_INVALID_VALUE;
    p->tol = t;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t jacobi_sweeps(JacobiParams *p, int s)
{
    if (!p || s <= 0) return CUSOLVER_STATUS_INVALID_VALUE;
    p->sweeps = s;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t jacobi_sort(JacobiParams *p, int s)
{
    if (!p) return CUSOLVER_STATUS_INVALID_VALUE;
    p->sort = s;
    return CUSOLVER_STATUS_SUCCESS;
}
} // namespace

extern "C" {
cusolverStatus_t cusolverDnCreate(cusolverDnHandle_t *h)
{
    if (!h) return CUSOLVER_STATUS_INVALID_VALUE;
    *h = new cusolverDnContext();
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDestroy(cusolverDnHandle_t h)
{
    if (!h) return CUSOLVER_STATUS_NOT_INITIALIZED;
    delete h;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnSetStream(cusolverDnHandle_t h, cudaStream_t s)
{
    if (!h) return CUSOLVER_STATUS_NOT_INITIALIZED;
    h->s = s;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnGetStream(cusolverDnHandle_t h, cudaStream_t *s)
{
    if (!h || !s) return CUSOLVER_STATUS_NOT_INITIALIZED;
    *s = h->s;
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnCreateSyevjInfo(syevjInfo_t *p) { return jacobi_create(p); }
cusolverStatus_t cusolverDnDestroySyevjInfo(syevjInfo_t p) { return jacobi_destroy(p); }
cusolverStatus_t cusolverDnXsyevjSetTolerance(syevjInfo_t p, double t) { return jacobi_tol(p, t); }
cusolverStatus_t cusolverDnXsyevjSetMaxSweeps(syevjInfo_t p, int s) { return jacobi_sweeps(p, s); }
cusolverStatus_t cusolverDnXsyevjSetSortEig(syevjInfo_t p, int s) { return jacobi_sort(p, s); }
cusolverStatus_t cusolverDnCreateGesvdjInfo(gesvdjInfo_t *p) { return jacobi_create(p); }
cusolverStatus_t cusolverDnDestroyGesvdjInfo(gesvdjInfo_t p) { return jacobi_destroy(p); }
cusolverStatus_t cusolverDnXgesvdjSetTolerance(gesvdjInfo_t p, double t) { return jacobi_tol(p, t); }
cusolverStatus_t cusolverDnXgesvdjSetMaxSweeps(gesvdjInfo_t p, int s) { return jacobi_sweeps(p, s); }
cusolverStatus_t cusolverDnXgesvdjSetSortEig(gesvdjInfo_t p, int s) { return jacobi_sort(p, s); }
cusolverStatus_t cusolverDnCreateParams(cusolverDnParams_t *p)
{
    if (!p) return CUSOLVER_STATUS_INVALID_VALUE;
    *p = new cusolverDnParams();
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnDestroyParams(cusolverDnParams_t p)
{
    delete p;
    return CUSOLVER_STATUS_SUCCESS;
}

#define SG_FAKE_SYEVJ(P, T)                                                                                      \
    cusolverStatus_t cusolverDn##P##syevjBatched_bufferSize(cusolverDnHandle_t h, cusolverEigMode_t jobz,        \
                                                             cublasFillMode_t uplo, int n, const T *A, int lda,   \
                                                             const T *W, int *lwork, syevjInfo_t p, int nb)       \
    {                                                                                                            \
        (void)jobz, (void)uplo, (void)A, (void)W;                                                                \
        if (!h || !p) return CUSOLVER_STATUS_NOT_INITIALIZED;                                                    \
        if (!lwork || n < 0 || lda < std::max(1, n) || nb < 0) return CUSOLVER_STATUS_INVALID_VALUE;             \
        *lwork = (int)syevj_lwork(n, nb); /* wraps past INT_MAX, as a 32-bit count would */                     \
        return CUSOLVER_STATUS_SUCCESS;                                                                          \
    }                                                                                                            \
    cusolverStatus_t cusolverDn##P##syevjBatched(cusolverDnHandle_t h, cusolverEigMode_t jobz, cublasFillMode_t uplo, \
                                                 int n, T *A, int lda, T *W, T *work, int lwork, int *info,      \
                                                 syevjInfo_t p, int nb)                                          \
    {                                                                                                            \
        return syevj_batched<T>(h, jobz, uplo, n, A, lda, W, work, lwork, info, p, nb);                          \
    }                                                                                                            \
    cusolverStatus_t cusolverDn##P##gesvdjBatched_bufferSize(cusolverDnHandle_t h, cusolverEigMode_t jobz, int m, \
                                                              int n, const T *A, int lda, const T *S_, const T *U, \
                                                              int ldu, const T *V, int ldv, int *lwork,          \
                                                              gesvdjInfo_t p, int nb)                            \
    {                                                                                                            \
        (void)jobz, (void)A, (void)S_, (void)U, (void)ldu, (void)V, (void)ldv;                                   \
        if (!h || !p) return CUSOLVER_STATUS_NOT_INITIALIZED;                                                    \
        if (!lwork || m < 0 || n < 0 || m > 32 || n > 32 || lda < std::max(1, m) || nb < 0)                      \
            return CUSOLVER_STATUS_INVALID_VALUE;                                                                \
        *lwork = (int)gesvdj_lwork(m, n, nb);                                                                    \
        return CUSOLVER_STATUS_SUCCESS;                                                                          \
    }                                                                                                            \
    cusolverStatus_t cusolverDn##P##gesvdjBatched(cusolverDnHandle_t h, cusolverEigMode_t jobz, int m, int n, T *A, \
                                                  int lda, T *S_, T *U, int ldu, T *V, int ldv, T *work, int lwork, \
                                                  int *info, gesvdjInfo_t p, int nb)                             \
    {                                                                                                            \
        return gesvdj_batched<T>(h, jobz, m, n, A, lda, S_, U, ldu, V, ldv, work, lwork, info, p, nb);           \
    }
SG_FAKE_SYEVJ(S, float)
SG_FAKE_SYEVJ(D, double)

static bool xsyev_args(cusolverDnHandle_t h, cusolverDnParams_t p, int64_t n, cudaDataType ta, int64_t lda,
                       cudaDataType tw, cudaDataType tc, int64_t nb)
{
    return h && p && n >= 0 && lda >= std::max<int64_t>(1, n) && nb >= 0 && ta == tw && ta == tc &&
           (ta == CUDA_R_32F || ta == CUDA_R_64F) && (double)n * (double)lda * (double)nb <= (double)INT32_MAX;
}
static size_t xsyev_dbytes(int64_t n, cudaDataType t, int64_t nb) { return (size_t)((2 * n + 3) * nb) * (t == CUDA_R_32F ? 4 : 8) + 64; }
/* non-zero and growing with the batch: callers must keep the host workspace alive until the work ran, also
   when a larger chunk needs a larger one */
static size_t xsyev_hbytes(int64_t nb) { return 96 + 8 * (size_t)nb; }

cusolverStatus_t cusolverDnXsyevBatched_bufferSize(cusolverDnHandle_t h, cusolverDnParams_t p, cusolverEigMode_t jobz,
                                                   cublasFillMode_t uplo, int64_t n, cudaDataType ta, const void *A,
                                                   int64_t lda, cudaDataType tw, const void *W, cudaDataType tc,
                                                   size_t *dbytes, size_t *hbytes, int64_t nb)
{
    (void)jobz, (void)uplo, (void)A, (void)W;
    if (!dbytes || !hbytes || !xsyev_args(h, p, n, ta, lda, tw, tc, nb)) return CUSOLVER_STATUS_INVALID_VALUE;
    *dbytes = xsyev_dbytes(n, ta, nb);
    *hbytes = xsyev_hbytes(nb);
    return CUSOLVER_STATUS_SUCCESS;
}
cusolverStatus_t cusolverDnXsyevBatched(cusolverDnHandle_t h, cusolverDnParams_t p, cusolverEigMode_t jobz,
                                        cublasFillMode_t uplo, int64_t n, cudaDataType ta, void *A, int64_t lda,
                                        cudaDataType tw, void *W, cudaDataType tc, void *dwork, size_t dbytes,
                                        void *hwork, size_t hbytes, int *info, int64_t nb)
{
    if (!xsyev_args(h, p, n, ta, lda, tw, tc, nb) || dbytes < xsyev_dbytes(n, ta, nb) || hbytes < xsyev_hbytes(nb) ||
        !hwork || (n && nb && (!A || !W || !info || !dwork)))
        return CUSOLVER_STATUS_INVALID_VALUE;
    Lock l(S().mu);
    sgemu::enqueue(h->s, "cusolverDnXsyevBatched", [=]() {
        memset(hwork, 0x5a, hbytes); /* the host workspace is used while the work runs */
        if (!all_dev({dwork, (char *)dwork + dbytes - 1})) return cudaErrorIllegalAddress;
        const bool vec = jobz == CUSOLVER_EIG_MODE_VECTOR;
        return ta == CUDA_R_32F ? eigh_batch(vec, uplo, n, (float *)A, lda, (float *)W, info, nb)
                                : eigh_batch(vec, uplo, n, (double *)A, lda, (double *)W, info, nb);
    });
    return CUSOLVER_STATUS_SUCCESS;
}
} /* extern "C" (cuSOLVER) */

/* ---- cuBLAS --------------------------------------------------------------------------------------------- */
namespace {
template <class T>
cublasStatus_t gemm_sb(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
                       const T *alpha, const T *A, int64_t lda, long long sA, const T *B, int64_t ldb, long long sB,
                       const T *beta, T *C, int64_t ldc, long long sC, int64_t cnt)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    const bool tA = ta == CUBLAS_OP_T, tB = tb == CUBLAS_OP_T;
    if ((ta != CUBLAS_OP_N && !tA) || (tb != CUBLAS_OP_N && !tB) || m < 0 || n < 0 || k < 0 || cnt < 0 ||
        lda < std::max<int64_t>(1, tA ? k : m) || ldb < std::max<int64_t>(1, tB ? n : k) || ldc < std::max<int64_t>(1, m))
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!alpha || !beta) return CUBLAS_STATUS_INVALID_VALUE;
    if (h->mode != CUBLAS_POINTER_MODE_HOST) return CUBLAS_STATUS_NOT_SUPPORTED; /* the backend uses host scalars */
    const T al = *alpha, be = *beta;
    Lock l(S().mu);
    sgemu::enqueue(h->s, "cublas?gemmStridedBatched_64", [=]() {
        if (!m || !n || !cnt) return cudaSuccess;
        if (!all_dev({C}) || (k && al != 0 && !all_dev({A, B}))) return cudaErrorIllegalAddress;
        for (int64_t b = 0; b < cnt; b++) {
            const T *Ab = A + b * sA, *Bb = B + b * sB;
            T *Cb = C + b * sC;
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < m; i++) {
                    T acc = 0;
                    if (al != 0)
                        for (int64_t p = 0; p < k; p++)
                            acc += (tA ? Ab[p + i * lda] : Ab[i + p * lda]) * (tB ? Bb[j + p * ldb] : Bb[p + j * ldb]);
                    T &c = Cb[i + j * ldc];
                    c = be == 0 ? al * acc : al * acc + be * c; /* beta = 0: C is not read */
                }
        }
        return cudaSuccess;
    });
    return CUBLAS_STATUS_SUCCESS;
}
} // namespace

extern "C" {
cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    if (!h) return CUBLAS_STATUS_INVALID_VALUE;
    *h = new cublasContext();
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete h;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->s = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetPointerMode(cublasHandle_t h, cublasPointerMode_t m)
{
    if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
    h->mode = m;
    return CUBLAS_STATUS_SUCCESS;
}
const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "cublas status (emulated device)";
    }
}
cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *B, int ldb, const float *beta,
                           float *C, int ldc)
{
    return gemm_sb(h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
cublasStatus_t cublasDgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const double *alpha, const double *A, int lda, const double *B, int ldb, const double *beta,
                           double *C, int ldc)
{
    return gemm_sb(h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}
cublasStatus_t cublasSgemmStridedBatched_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                                            int64_t n, int64_t k, const float *alpha, const float *A, int64_t lda,
                                            long long sA, const float *B, int64_t ldb, long long sB, const float *beta,
                                            float *C, int64_t ldc, long long sC, int64_t cnt)
{
    return gemm_sb(h, ta, tb, m, n, k, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, cnt);
}
cublasStatus_t cublasDgemmStridedBatched_64(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m,
                                            int64_t n, int64_t k, const double *alpha, const double *A, int64_t lda,
                                            long long sA, const double *B, int64_t ldb, long long sB,
                                            const double *beta, double *C, int64_t ldc, long long sC, int64_t cnt)
{
    return gemm_sb(h, ta, tb, m, n, k, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, cnt);
}
} /* extern "C" (cuBLAS) */

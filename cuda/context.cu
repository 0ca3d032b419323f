/* CUDA backend: device detection, handles, stream binding, the backend table. */
#include "cuda_internal.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" int sg_cuda_devices(char *why, size_t len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why && len)
            snprintf(why, len, "cudaGetDeviceCount: %s (error %d)%s", cudaGetErrorString(e), (int)e,
                     e == cudaErrorInitializationError && sg_fork_count()
                         ? "; this process is a forked child, where CUDA does not work once the parent used it: "
                           "start it with spawn"
                         : "");
        cudaGetLastError(); /* clear the sticky-free error so later calls start clean */
        return 0;
    }
    if (why && len) snprintf(why, len, "%s", n == 0 ? "no CUDA device found" : ""); /* always a string */
    return n;
}

static sg_status cuda_destroy_state(sg_cuda_state *st)
{
    if (!st) return SG_OK;
    sg_cuda_lanes_free(st);
    if (st->fin_d) cudaFree(st->fin_d);
    if (st->fin_h) cudaFreeHost(st->fin_h);
    if (st->pool) cudaMemPoolDestroy(st->pool); /* returns at once; released when nothing is outstanding */
    if (st->blas) cublasDestroy(st->blas);
    if (st->solver) cusolverDnDestroy(st->solver);
    free(st);
    return SG_OK;
}

/* The context's own pool, not the device's default one: its release threshold (ctx->cache_bytes) must not
   change how long other libraries' stream-ordered allocations stay mapped. Without pool support (or if
   creation fails) scratch falls back to cudaMalloc/cudaFree. The threshold is set here and by
   sg_set_cache_bytes (cuda_cache_apply), so allocations never need to look at it. */
static void pool_init(sg_ctx *ctx, sg_cuda_state *st)
{
    int ok = 0;
    if (cudaDeviceGetAttribute(&ok, cudaDevAttrMemoryPoolsSupported, st->device) != cudaSuccess || !ok) {
        (void)cudaGetLastError();
        return;
    }
    cudaMemPoolProps p;
    memset(&p, 0, sizeof p);
    p.allocType = cudaMemAllocationTypePinned;
    p.location.type = cudaMemLocationTypeDevice;
    p.location.id = st->device;
    uint64_t keep = ctx->cache_bytes;
    if (cudaMemPoolCreate(&st->pool, &p) != cudaSuccess ||
        cudaMemPoolSetAttribute(st->pool, cudaMemPoolAttrReleaseThreshold, &keep) != cudaSuccess) {
        (void)cudaGetLastError();
        if (st->pool) cudaMemPoolDestroy(st->pool);
        st->pool = NULL;
    }
}

static sg_status cuda_init(sg_ctx *ctx)
{
    char why[256];
    if (sg_cuda_devices(why, sizeof why) <= 0) return sg_fail(ctx, SG_ERR_NODEVICE, -1, "CUDA backend: %s", why);
    sg_cuda_state *st = (sg_cuda_state *)calloc(1, sizeof *st);
    if (!st) return sg_fail(ctx, SG_ERR_ALLOC, -1, "CUDA backend: out of host memory");
    ctx->cuda = st;
    sg_status s = SG_OK;
    cudaError_t e = cudaGetDevice(&st->device);
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&st->prop, st->device);
    if (e != cudaSuccess) {
        s = sg_fail(ctx, SG_ERR_CUDA, -1, "CUDA backend: %s", cudaGetErrorString(e));
    } else if ((e = sg_cuda_probe_kernels()) != cudaSuccess) {
        /* built for another architecture (CMAKE_CUDA_ARCHITECTURES): every launch would fail */
        s = sg_fail(ctx, SG_ERR_NODEVICE, -1, "CUDA backend: this build has no kernels for %s (sm_%d%d): %s", st->prop.name,
                    st->prop.major, st->prop.minor, cudaGetErrorString(e));
    } else if (cusolverDnCreate(&st->solver) != CUSOLVER_STATUS_SUCCESS) {
        st->solver = NULL;
        s = sg_fail(ctx, SG_ERR_CUSOLVER, -1, "CUDA backend: cusolverDnCreate failed");
    } else if (cublasCreate(&st->blas) != CUBLAS_STATUS_SUCCESS) {
        st->blas = NULL;
        s = sg_fail(ctx, SG_ERR_CUBLAS, -1, "CUDA backend: cublasCreate failed");
    }
    if (s == SG_OK) pool_init(ctx, st);
    if (s != SG_OK) {
        cuda_destroy_state(st);
        ctx->cuda = NULL;
    }
    return s;
}

static void cuda_destroy(sg_ctx *ctx)
{
    if (!ctx->cuda) return;
    if (ctx->forks != sg_fork_count()) { /* created before a fork: the runtime is gone, free the host side */
        sg_cuda_state *st = sg_cu(ctx);
        for (int k = 0; k < 3; k++) free(st->xsyev_hwork[k]);
        free(st);
        ctx->cuda = NULL;
        return;
    }
    SG_DEVICE_SCOPE(ctx); /* streams, handles and pinned buffers are released on their own device */
    cuda_destroy_state(sg_cu(ctx));
    ctx->cuda = NULL;
}

sg_status sg_cuda_bind_stream(sg_ctx *ctx)
{
    sg_cuda_state *st = sg_cu(ctx);
    cudaStream_t s = (cudaStream_t)ctx->stream;
    CUSOLVER_TRY(ctx, cusolverDnSetStream(st->solver, s));
    CUBLAS_TRY(ctx, cublasSetStream(st->blas, s));
    st->stream = s;
    return SG_OK;
}

cudaError_t sg_cuda_alloc(sg_ctx *ctx, void **p, size_t bytes, cudaStream_t s)
{
    const sg_cuda_state *st = sg_cu(ctx);
    *p = NULL;
    if (!bytes) bytes = 1;
    if (!st->pool) {
        cudaError_t e = cudaMalloc(p, bytes);
        if (e != cudaSuccess) *p = NULL;
        return e;
    }
    cudaError_t e = cudaMallocFromPoolAsync(p, bytes, st->pool, s);
    if (e == cudaErrorMemoryAllocation) {
        /* the idle cache may be mapped in pieces that do not fit: give it back, then try once more */
        (void)cudaGetLastError();
        e = cudaStreamSynchronize(s);
        if (e == cudaSuccess) e = cudaMemPoolTrimTo(st->pool, 0);
        if (e == cudaSuccess) e = cudaMallocFromPoolAsync(p, bytes, st->pool, s);
    }
    if (e != cudaSuccess) *p = NULL;
    return e;
}

void sg_cuda_free(sg_ctx *ctx, void *p, cudaStream_t s)
{
    if (!p) return;
    cudaError_t e;
    if (sg_cu(ctx)->pool) {
        e = cudaFreeAsync(p, s);
    } else { /* cudaFree does not promise to wait for work still queued on s */
        e = cudaStreamSynchronize(s);
        cudaError_t f = cudaFree(p);
        if (e == cudaSuccess) e = f;
    }
    if (e != cudaSuccess) (void)cudaGetLastError();
}

void sg_cuda_free_wait(sg_ctx *ctx, void *p, cudaStream_t s)
{
    if (!p) return;
    sg_cuda_free(ctx, p, s);
    if (cudaStreamSynchronize(s) != cudaSuccess) (void)cudaGetLastError();
}

void sg_cuda_trim(sg_ctx *ctx)
{
    const sg_cuda_state *st = sg_cu(ctx);
    if (st->pool && cudaMemPoolTrimTo(st->pool, ctx->cache_bytes) != cudaSuccess) (void)cudaGetLastError();
}

void sg_cuda_settle(sg_ctx *ctx, cudaStream_t s, bool waited)
{
    const sg_cuda_state *st = sg_cu(ctx);
    uint64_t held = 0;
    if (waited && st->pool) {
        if (cudaMemPoolGetAttribute(st->pool, cudaMemPoolAttrReservedMemCurrent, &held) != cudaSuccess)
            (void)cudaGetLastError();
        else if (held <= ctx->cache_bytes)
            return; /* only the frees are left on s, and the pool keeps that memory anyway */
    }
    if (cudaStreamSynchronize(s) != cudaSuccess) (void)cudaGetLastError();
    sg_cuda_trim(ctx);
}

/* sg_set_cache_bytes: the new threshold now, and what is idle above it released now, not at the next
   op's allocation (the sync: frees still in stream order are released too). */
static sg_status cuda_cache_apply(sg_ctx *ctx)
{
    SG_DEVICE_SCOPE(ctx);
    const sg_cuda_state *st = sg_cu(ctx);
    if (!st->pool) return SG_OK;
    uint64_t keep = ctx->cache_bytes;
    CU_TRY(ctx, cudaMemPoolSetAttribute(st->pool, cudaMemPoolAttrReleaseThreshold, &keep));
    CU_TRY(ctx, cudaStreamSynchronize(st->stream));
    CU_TRY(ctx, cudaMemPoolTrimTo(st->pool, ctx->cache_bytes));
    return SG_OK;
}

static sg_status cuda_cache_held(sg_ctx *ctx, size_t *bytes)
{
    SG_DEVICE_SCOPE(ctx);
    const sg_cuda_state *st = sg_cu(ctx);
    uint64_t held = 0;
    if (st->pool) CU_TRY(ctx, cudaMemPoolGetAttribute(st->pool, cudaMemPoolAttrReservedMemCurrent, &held));
    *bytes = (size_t)held;
    return SG_OK;
}

sg_status sg_cuda_free_bytes(sg_ctx *ctx, size_t *bytes)
{
    const sg_cuda_state *st = sg_cu(ctx);
    size_t fr = 0, tot = 0;
    CU_TRY(ctx, cudaMemGetInfo(&fr, &tot));
    if (st->pool) {
        uint64_t held = 0, used = 0;
        CU_TRY(ctx, cudaMemPoolGetAttribute(st->pool, cudaMemPoolAttrReservedMemCurrent, &held));
        CU_TRY(ctx, cudaMemPoolGetAttribute(st->pool, cudaMemPoolAttrUsedMemCurrent, &used));
        if (held > used) fr += (size_t)(held - used);
    }
    *bytes = fr;
    return SG_OK;
}

sg_status sg_cuda_budget(sg_ctx *ctx, size_t need, size_t num, size_t den, size_t *budget)
{
    *budget = need;
    if (need <= SG_SMALL_CALL_BYTES) return SG_OK;
    size_t fr = 0;
    const sg_status s = sg_cuda_free_bytes(ctx, &fr);
    if (s != SG_OK) return s;
    *budget = fr / den * num;
    sg_prof_mark("meminfo");
    return SG_OK;
}

sg_status sg_cuda_malloc(sg_ctx *ctx, void **p, size_t bytes, const char *what)
{
    cudaError_t e = sg_cuda_alloc(ctx, p, bytes, sg_cu(ctx)->stream);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return sg_fail(ctx, e == cudaErrorMemoryAllocation ? SG_ERR_DEVICE_OOM : SG_ERR_CUDA, -1,
                       "device allocation of %zu bytes for %s failed: %s (free %zu of %zu bytes)", bytes, what,
                       cudaGetErrorString(e), fr, tot);
    }
    return SG_OK;
}

/* Host arrays of a call (per-matrix tolerances) in either memory space: device memory would crash the
   front-end's read, so it is refused; host memory of any kind, managed memory, or a pointer the runtime
   cannot place (no verdict) pass. */
static sg_status cuda_check_host_ptr(sg_ctx *ctx, const void *p, const char *name)
{
    SG_DEVICE_SCOPE(ctx);
    cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError();
        return SG_OK;
    }
    if (a.type != cudaMemoryTypeDevice) return SG_OK;
    return sg_fail(ctx, SG_ERR_ARG, -1, "%s: device memory; it is read on the host (a host array, also in "
                   "device-memory mode)", name);
}

sg_status sg_cuda_check_ptr(sg_ctx *ctx, const void *p, const char *name)
{
    const sg_cuda_state *st = sg_cu(ctx);
    cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) { /* e.g. memory of a GPU whose context was never made current */
        cudaGetLastError();
        return sg_fail(ctx, SG_ERR_ARG, -1, "%s: not memory usable on GPU %d (cudaPointerGetAttributes: %s)", name,
                       st->device, cudaGetErrorString(e));
    }
    switch (a.type) {
    case cudaMemoryTypeManaged: return SG_OK;
    case cudaMemoryTypeDevice:
        if (a.device == st->device) return SG_OK;
        return sg_fail(ctx, SG_ERR_ARG, -1,
                       "%s: device memory of GPU %d, but this context runs on GPU %d (one context per device; "
                       "peer memory is refused too)", name,
                       a.device, st->device);
    case cudaMemoryTypeHost: /* pinned: usable in place only where its device address is the pointer itself
                                (not for a separate alias, e.g. registered memory without host page tables) */
        if (a.devicePointer == p) return SG_OK;
        break;
    default: /* unregistered host memory: usable only where the device can read pageable memory (HMM/ATS) */
        if (st->prop.pageableMemoryAccess) return SG_OK;
        break;
    }
    return sg_fail(ctx, SG_ERR_ARG, -1,
                   "%s: host memory passed in device-memory mode (use sg_set_memspace(ctx, SG_MEM_HOST) for host arrays)",
                   name);
}

extern "C" const sg_backend_ops sg_cuda_ops = {
    "cuda",
    cuda_init,
    cuda_destroy,
    sg_cuda_eigh,
    sg_cuda_svd,
    sg_cuda_rank,
    sg_cuda_nullspace,
    sg_cuda_project,
    sg_cuda_project_basis,
    sg_cuda_lstsq,
    sg_cuda_eigh_backward,
    sg_cuda_svd_backward,
    sg_cuda_matfunc,
    sg_cuda_matfunc_backward,
    sg_cuda_regularizer,
    cuda_check_host_ptr,
    cuda_cache_apply,
    cuda_cache_held,
};

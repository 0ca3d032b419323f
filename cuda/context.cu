/* CUDA backend: device detection, handles, stream binding, the backend table. */
#include "cuda_internal.h"
#include <stdio.h>
#include <stdlib.h>

extern "C" int sg_cuda_devices(char *why, size_t len)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why && len) snprintf(why, len, "cudaGetDeviceCount: %s (error %d)", cudaGetErrorString(e), (int)e);
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
    if (st->blas) cublasDestroy(st->blas);
    if (st->solver) cusolverDnDestroy(st->solver);
    free(st);
    return SG_OK;
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
    if (s != SG_OK) {
        cuda_destroy_state(st);
        ctx->cuda = NULL;
    }
    return s;
}

static void cuda_destroy(sg_ctx *ctx)
{
    if (!ctx->cuda) return;
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

sg_status sg_cuda_malloc(sg_ctx *ctx, void **p, size_t bytes, const char *what)
{
    *p = NULL;
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return sg_fail(ctx, e == cudaErrorMemoryAllocation ? SG_ERR_DEVICE_OOM : SG_ERR_CUDA, -1,
                       "cudaMalloc of %zu bytes for %s failed: %s (free %zu of %zu bytes)", bytes, what,
                       cudaGetErrorString(e), fr, tot);
    }
    return SG_OK;
}

sg_status sg_cuda_check_ptr(sg_ctx *ctx, const sg_mat *m, const char *name)
{
    const sg_cuda_state *st = sg_cu(ctx);
    cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, m->data);
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
        if (a.devicePointer == m->data) return SG_OK;
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
    sg_cuda_lstsq,
    sg_cuda_eigh_backward,
    sg_cuda_svd_backward,
    sg_cuda_matfunc,
    sg_cuda_matfunc_backward,
    sg_cuda_regularizer,
};

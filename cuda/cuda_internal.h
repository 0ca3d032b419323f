/* CUDA backend internals: checked-call macros, backend state, per-op entry points. */
#ifndef SG_CUDA_INTERNAL_H
#define SG_CUDA_INTERNAL_H

#include "internal.h"
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

enum { SG_FINITE_MAX = 8 }; /* operands per NaN/Inf scan (sg_cuda_finite_queue) */
typedef struct {
    int device;
    cudaDeviceProp prop;
    cusolverDnHandle_t solver;
    cublasHandle_t blas;
    cudaStream_t stream; /* the stream the handles are bound to (ctx->stream or the default stream) */
    /* host-memory streaming lanes (cuda/linalg.cu creates them lazily; sg_cuda_lanes_free releases) */
    cudaStream_t lane_stream[2];
    cusolverDnHandle_t lane_solver[2];
    void *lane_pinned[2]; /* grow-only pinned staging buffers */
    size_t lane_pinned_bytes[2];
    cudaMemPool_t pool; /* device scratch (NULL where pools are unsupported: plain cudaMalloc) */
    /* XsyevBatched's host workspace, grow-only, one per lane (0: the ctx stream, 1-2: the streaming lanes):
       kept between calls instead of malloc/free (and a synchronisation before the free) on every call */
    void *xsyev_hwork[3];
    size_t xsyev_hbytes[3];
    /* NaN/Inf scan of device inputs: one flag per input (its first non-finite element, ~0 = none) on the
       device and a pinned host copy, allocated once. A queued scan is pending until settled (copied back,
       reported) at the call's first read-back; fin_m/fin_names are the call's operands. */
    unsigned long long *fin_d, *fin_h;
    int fin_pending, fin_count;
    const sg_mat *fin_m[SG_FINITE_MAX];
    const char *fin_names[SG_FINITE_MAX];
} sg_cuda_state;

/* cuda/linalg.cu: frees the streaming lanes and the per-lane host workspaces (safe on a zeroed state). */
void sg_cuda_lanes_free(sg_cuda_state *st);
/* cuda/linalg.cu: cudaSuccess when this build holds machine code or PTX the current device can run. */
cudaError_t sg_cuda_probe_kernels(void);

static inline sg_cuda_state *sg_cu(sg_ctx *ctx) { return (sg_cuda_state *)ctx->cuda; }

/* cusolverStatus_t has no string function in the library. */
static inline const char *sg_cusolver_str(cusolverStatus_t e)
{
    switch (e) {
    case CUSOLVER_STATUS_NOT_INITIALIZED: return "CUSOLVER_STATUS_NOT_INITIALIZED";
    case CUSOLVER_STATUS_ALLOC_FAILED: return "CUSOLVER_STATUS_ALLOC_FAILED (device memory)";
    case CUSOLVER_STATUS_INVALID_VALUE: return "CUSOLVER_STATUS_INVALID_VALUE (a size or argument the solver rejects)";
    case CUSOLVER_STATUS_ARCH_MISMATCH: return "CUSOLVER_STATUS_ARCH_MISMATCH";
    case CUSOLVER_STATUS_EXECUTION_FAILED: return "CUSOLVER_STATUS_EXECUTION_FAILED";
    case CUSOLVER_STATUS_INTERNAL_ERROR: return "CUSOLVER_STATUS_INTERNAL_ERROR";
    case CUSOLVER_STATUS_NOT_SUPPORTED: return "CUSOLVER_STATUS_NOT_SUPPORTED";
    default: return "cusolver status (see cusolver_common.h)";
    }
}

/* Every CUDA / cuSOLVER / cuBLAS call is checked; failures name the call and the site. A failed runtime
   call's error is cleared so that the next launch check does not report it again. */
#define CU_TRY(ctx, call)                                                                              \
    do {                                                                                               \
        cudaError_t e_ = (call);                                                                       \
        if (e_ != cudaSuccess) {                                                                       \
            (void)cudaGetLastError();                                                                  \
            return sg_fail(ctx, e_ == cudaErrorMemoryAllocation ? SG_ERR_DEVICE_OOM : SG_ERR_CUDA, -1,    \
                           "%s failed: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, __LINE__);   \
        }                                                                                              \
    } while (0)
#define CUSOLVER_TRY(ctx, call)                                                                        \
    do {                                                                                               \
        cusolverStatus_t e_ = (call);                                                                  \
        if (e_ != CUSOLVER_STATUS_SUCCESS)                                                             \
            return sg_fail(ctx, SG_ERR_CUSOLVER, -1, "%s failed: %s (%s:%d)", #call, sg_cusolver_str(e_),  \
                           __FILE__, __LINE__);                                                        \
    } while (0)
#define CUBLAS_TRY(ctx, call)                                                                          \
    do {                                                                                               \
        cublasStatus_t e_ = (call);                                                                    \
        if (e_ != CUBLAS_STATUS_SUCCESS)                                                               \
            return sg_fail(ctx, SG_ERR_CUBLAS, -1, "%s failed: %s (%s:%d)", #call, cublasGetStatusString(e_), \
                           __FILE__, __LINE__);                                                        \
    } while (0)
/* After a kernel launch. */
#define CU_LAUNCH_CHECK(ctx) CU_TRY(ctx, cudaGetLastError())

/* A context belongs to the device current at sg_create (its handles, streams and pinned buffers): each
   entry point makes that device current and gives the caller's back on return. */
struct SgDeviceScope {
    int prev;
    explicit SgDeviceScope(sg_ctx *ctx) : prev(-1)
    {
        int want = sg_cu(ctx)->device;
        if (cudaGetDevice(&prev) != cudaSuccess) {
            (void)cudaGetLastError();
            prev = -1;
        } else if (prev == want) {
            prev = -1;
        } else if (cudaSetDevice(want) != cudaSuccess) {
            (void)cudaGetLastError();
            prev = -1;
        }
    }
    ~SgDeviceScope()
    {
        if (prev >= 0 && cudaSetDevice(prev) != cudaSuccess) (void)cudaGetLastError();
    }
};
#define SG_DEVICE_SCOPE(ctx) SgDeviceScope sg_device_scope_(ctx)

/* Binds the handles to ctx->stream (the user may change it between calls). */
sg_status sg_cuda_bind_stream(sg_ctx *ctx);

/* Contract between CUDA files: every sg_cuda_* op honours ctx->mem (host pointers are staged/streamed,
   device pointers used in place). Internal callers holding device buffers may set ctx->mem =
   SG_MEM_DEVICE around a call and restore it afterwards. Device inputs are scanned for NaN/Inf on the
   device when ctx->check_finite is on (host inputs were scanned by the front-end). */
/* All count operands (data on device) in one pass: one flag each, one synchronisation. The first operand in
   argument order with a NaN/Inf is reported (SG_ERR_NONFINITE, its first element). */
sg_status sg_cuda_check_finite_all(sg_ctx *ctx, const sg_mat *const *m, const char *const *names, int count);
/* The same scan in halves, for a caller whose kernels can skip their writes when a flag is set
   (FusedArgs::skip, k_copy): queue (count <= SG_FINITE_MAX; nothing waits), then settle at the first read-back (one
   synchronisation; SG_ERR_NONFINITE for the first operand with a NaN/Inf; a no-op when nothing is
   pending). A read-back of its own can share the synchronisation: fetch (queue the copy), its own copy,
   synchronise, report. sg_cuda_finite_drop forgets a scan whose call ended before settling it.
   fin_pending: 0 none, 1 queued, 2 copy queued. */
sg_status sg_cuda_finite_queue(sg_ctx *ctx, const sg_mat *const *m, const char *const *names, int count);
sg_status sg_cuda_finite_settle(sg_ctx *ctx);
sg_status sg_cuda_finite_fetch(sg_ctx *ctx);
sg_status sg_cuda_finite_report(sg_ctx *ctx); /* after the stream was synchronised */
static inline void sg_cuda_finite_drop(sg_ctx *ctx) { ((sg_cuda_state *)ctx->cuda)->fin_pending = 0; }
/* The pending scan's flags for a guarded kernel: *flags and their count, or NULL and 0 when none is pending
   (after the first read-back of a call, or with the check off: the kernel then runs unguarded). */
static inline int sg_cuda_finite_guard(sg_ctx *ctx, const unsigned long long **flags)
{
    const sg_cuda_state *cs = (const sg_cuda_state *)ctx->cuda;
    *flags = cs->fin_pending ? cs->fin_d : NULL;
    return cs->fin_pending ? cs->fin_count : 0;
}
/* Device-memory mode: m->data must be memory this context's device can use in place (its own device or
   managed memory, pinned host memory whose device address is the pointer itself, pageable memory only
   with HMM/ATS; memory of another GPU is refused even with peer access); else SG_ERR_ARG naming the
   argument, instead of an illegal-address fault that would poison the CUDA context. */
sg_status sg_cuda_check_ptr(sg_ctx *ctx, const void *p, const char *name);
/* Device scratch, stream-ordered on s from the context's pool (ctx->cache_bytes of it stays mapped between
   calls); plain cudaMalloc where the device has no memory pools. On OOM the pool's idle memory is handed
   back and the allocation tried once more. Returns the CUDA error; *p is NULL on failure. */
cudaError_t sg_cuda_alloc(sg_ctx *ctx, void **p, size_t bytes, cudaStream_t s);
/* Frees scratch from sg_cuda_alloc, ordered after the work queued on s (NULL p: nothing). */
void sg_cuda_free(sg_ctx *ctx, void *p, cudaStream_t s);
/* sg_cuda_free, then wait for s (errors cleared), so the memory is settled in the pool (NULL p: nothing). */
void sg_cuda_free_wait(sg_ctx *ctx, void *p, cudaStream_t s);
/* End of an op, once the streams that freed scratch are synchronised: the pool keeps at most
   ctx->cache_bytes idle (the release threshold alone would wait for some later synchronisation). */
void sg_cuda_trim(sg_ctx *ctx);
/* End of an op whose frees are queued on s: wait for s, then sg_cuda_trim. Skipped when the op already
   waited for its work (waited: its last synchronisation came after everything but the frees) and the pool
   holds at most ctx->cache_bytes: a synchronisation less per small call under the default cache. */
void sg_cuda_settle(sg_ctx *ctx, cudaStream_t s, bool waited);
/* sg_cuda_alloc on the context's stream with SG_ERR_DEVICE_OOM / SG_ERR_CUDA and a message naming what. */
sg_status sg_cuda_malloc(sg_ctx *ctx, void **p, size_t bytes, const char *what);
/* Device memory available to this context: free memory plus its pool's idle cache. */
sg_status sg_cuda_free_bytes(sg_ctx *ctx, size_t *bytes);
/* Device bytes a call that needs `need` may plan with: `need` itself when it is at most SG_SMALL_CALL_BYTES,
   else num/den of sg_cuda_free_bytes. Small calls do not ask: cudaMemGetInfo is a driver round trip (5-10 µs,
   more under virtualisation), a large part of a small call's fixed cost next to a batched solve of tens of
   µs; an allocation that fails takes the OOM fallback (halve the chunk) instead. */
#define SG_SMALL_CALL_BYTES ((size_t)64 << 20)
sg_status sg_cuda_budget(sg_ctx *ctx, size_t need, size_t num, size_t den, size_t *budget);

/* cuda/linalg.cu */
sg_status sg_cuda_eigh(sg_ctx *, const sg_mat *A, sg_mat *W, sg_mat *V);
sg_status sg_cuda_svd(sg_ctx *, const sg_mat *A, int full, sg_mat *S, sg_mat *U, sg_mat *V);
sg_status sg_cuda_rank(sg_ctx *, const sg_mat *A, const sg_tols *tol, int64_t *rank);
sg_status sg_cuda_nullspace(sg_ctx *, const sg_mat *A, const sg_tols *tol, sg_mat *N, int64_t *nullity);
sg_status sg_cuda_project(sg_ctx *, const sg_mat *A, const sg_mat *X, sg_proj which, const sg_tols *tol, sg_mat *Y);
sg_status sg_cuda_project_basis(sg_ctx *, const sg_mat *Q, const sg_mat *X, int complement, sg_mat *Y);
sg_status sg_cuda_lstsq(sg_ctx *, const sg_mat *A, const sg_mat *B, const sg_tols *tol, sg_mat *X,
                        int64_t *rank);
/* cuda/grad.cu */
sg_status sg_cuda_eigh_backward(sg_ctx *, const sg_mat *W, const sg_mat *V, const sg_mat *gW, const sg_mat *gV,
                                sg_degen mode, double param, sg_mat *gA);
sg_status sg_cuda_svd_backward(sg_ctx *, const sg_mat *U, const sg_mat *S, const sg_mat *V, const sg_mat *gU,
                               const sg_mat *gS, const sg_mat *gV, sg_degen mode, double param, sg_mat *gA);
sg_status sg_cuda_matfunc(sg_ctx *, const sg_mat *A, const sg_fn *fn, sg_mat *F, sg_mat *W, sg_mat *V);
sg_status sg_cuda_matfunc_backward(sg_ctx *, const sg_mat *W, const sg_mat *V, const sg_fn *fn, const sg_mat *gF,
                                   sg_mat *gA);
sg_status sg_cuda_regularizer(sg_ctx *, sg_reg kind, const sg_mat *A, const sg_fn *fn, sg_mat *loss, sg_mat *gA);
#endif

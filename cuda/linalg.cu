/* CUDA forward path: batched eigh / SVD through cuSOLVER, and custom kernels for rank, nullspace,
   projection and minimum-norm least squares. Design notes: docs/gpu.md.

   Layout of this file (llm.c style: each kernel sits next to the CPU semantics it reproduces):
     1. small kernels (pack/unpack, NaN scan, Jordan–Wielandt build/extract, Householder QR, rank, nullspace,
        project, lstsq)
     2. solver cores on packed device buffers (eigh_run, svd_run: safe-range scaling around gesvdj / QR first /
        Jordan–Wielandt) with a dry mode that only sizes workspace
     3. one generic chunk runner (run_job) that every op goes through: device memory in place, or host
        memory streamed through pinned buffers on two lanes (stream + cuSOLVER handle) with double buffering
     4. the sg_cuda_* entry points, each a table of operands plus a per-chunk compute callback. */
#include "cuda_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ================================================================================================
   1. kernels
   ================================================================================================ */
#include "linalg_kernels.cuh" /* SG_BLOCK and the kernels, each with the CPU semantics it reproduces */

/* ================================================================================================
   2. solver cores (packed device buffers, one chunk)
   ================================================================================================ */
struct Lane {
    cudaStream_t s;
    cusolverDnHandle_t h;
    int slot; /* 0: the ctx stream, 1-2: streaming lane 0-1 (per-lane host buffers in sg_cuda_state) */
};

/* Bump allocator over one device buffer; base == NULL counts bytes only (dry run = workspace sizing). */
struct Bump {
    char *base;
    size_t off;
    void *take(size_t bytes)
    {
        size_t o = (off + 255) & ~(size_t)255;
        off = o + bytes;
        return base ? base + o : NULL;
    }
};

template <class T> struct Sv;
template <> struct Sv<float> {
    static constexpr cudaDataType dt = CUDA_R_32F;
    static cusolverStatus_t syevj_buf(cusolverDnHandle_t h, cusolverEigMode_t j, cublasFillMode_t u, int n,
                                      const float *A, int lda, const float *W, int *lw, syevjInfo_t p, int nb)
    { return cusolverDnSsyevjBatched_bufferSize(h, j, u, n, A, lda, W, lw, p, nb); }
    static cusolverStatus_t syevj(cusolverDnHandle_t h, cusolverEigMode_t j, cublasFillMode_t u, int n, float *A,
                                  int lda, float *W, float *work, int lw, int *info, syevjInfo_t p, int nb)
    { return cusolverDnSsyevjBatched(h, j, u, n, A, lda, W, work, lw, info, p, nb); }
    static cusolverStatus_t gesvdj_buf(cusolverDnHandle_t h, cusolverEigMode_t j, int m, int n, const float *A,
                                       int lda, const float *S, const float *U, int ldu, const float *V, int ldv,
                                       int *lw, gesvdjInfo_t p, int nb)
    { return cusolverDnSgesvdjBatched_bufferSize(h, j, m, n, A, lda, S, U, ldu, V, ldv, lw, p, nb); }
    static cusolverStatus_t gesvdj(cusolverDnHandle_t h, cusolverEigMode_t j, int m, int n, float *A, int lda,
                                   float *S, float *U, int ldu, float *V, int ldv, float *work, int lw, int *info,
                                   gesvdjInfo_t p, int nb)
    { return cusolverDnSgesvdjBatched(h, j, m, n, A, lda, S, U, ldu, V, ldv, work, lw, info, p, nb); }
};
template <> struct Sv<double> {
    static constexpr cudaDataType dt = CUDA_R_64F;
    static cusolverStatus_t syevj_buf(cusolverDnHandle_t h, cusolverEigMode_t j, cublasFillMode_t u, int n,
                                      const double *A, int lda, const double *W, int *lw, syevjInfo_t p, int nb)
    { return cusolverDnDsyevjBatched_bufferSize(h, j, u, n, A, lda, W, lw, p, nb); }
    static cusolverStatus_t syevj(cusolverDnHandle_t h, cusolverEigMode_t j, cublasFillMode_t u, int n, double *A,
                                  int lda, double *W, double *work, int lw, int *info, syevjInfo_t p, int nb)
    { return cusolverDnDsyevjBatched(h, j, u, n, A, lda, W, work, lw, info, p, nb); }
    static cusolverStatus_t gesvdj_buf(cusolverDnHandle_t h, cusolverEigMode_t j, int m, int n, const double *A,
                                       int lda, const double *S, const double *U, int ldu, const double *V, int ldv,
                                       int *lw, gesvdjInfo_t p, int nb)
    { return cusolverDnDgesvdjBatched_bufferSize(h, j, m, n, A, lda, S, U, ldu, V, ldv, lw, p, nb); }
    static cusolverStatus_t gesvdj(cusolverDnHandle_t h, cusolverEigMode_t j, int m, int n, double *A, int lda,
                                   double *S, double *U, int ldu, double *V, int ldv, double *work, int lw, int *info,
                                   gesvdjInfo_t p, int nb)
    { return cusolverDnDgesvdjBatched(h, j, m, n, A, lda, S, U, ldu, V, ldv, work, lw, info, p, nb); }
};

/* In a dry run the buffers do not exist yet; bufferSize queries get a non-NULL, aligned, never-dereferenced
   address instead of NULL in case a library version rejects NULL. */
template <class T> static T *dry_ptr(T *p, bool dry) { return dry ? (T *)(uintptr_t)4096 : p; }

static int64_t grid_for(sg_ctx *ctx, int64_t total)
{
    return sg_grid_capped(total, SG_BLOCK, (int64_t)sg_cu(ctx)->prop.multiProcessorCount * 16);
}

#define SOLV(call)                                                                                                  \
    do {                                                                                                            \
        cusolverStatus_t e_ = (call);                                                                               \
        if (e_ != CUSOLVER_STATUS_SUCCESS) {                                                                        \
            s = sg_fail(ctx, e_ == CUSOLVER_STATUS_ALLOC_FAILED ? SG_ERR_DEVICE_OOM : SG_ERR_CUSOLVER, -1,           \
                        "%s failed: %s (%s:%d)", #call, sg_cusolver_str(e_), __FILE__, __LINE__);                    \
            goto out;                                                                                               \
        }                                                                                                           \
    } while (0)
#define CUDA(call)                                                                                                  \
    do {                                                                                                            \
        cudaError_t e_ = (call);                                                                                    \
        if (e_ != cudaSuccess) {                                                                                    \
            (void)cudaGetLastError(); /* else the next launch check reports this error */                         \
            s = sg_fail(ctx, e_ == cudaErrorMemoryAllocation ? SG_ERR_DEVICE_OOM : SG_ERR_CUDA, -1,                  \
                        "%s failed: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, __LINE__);                \
            goto out;                                                                                               \
        }                                                                                                           \
    } while (0)

/* Jacobi stopping tolerance: below the dtype's eps it cannot be met (every matrix would report
   non-convergence), so a tolerance chosen for f64 is raised to eps for f32. */
template <class T> static double jacobi_tol(const sg_ctx *ctx)
{
    double eps = sg_eps(sizeof(T) == 4 ? SG_F32 : SG_F64);
    return ctx->jacobi_tol > eps ? ctx->jacobi_tol : eps;
}
/* The Jacobi solvers report their workspace as a 32-bit element count for the whole batch. */
static sg_status lwork_overflow(sg_ctx *ctx, const char *solver, int64_t nb)
{
    return sg_fail(ctx, SG_ERR_UNSUPPORTED, -1,
                   "%s: workspace for a chunk of %lld matrices overflows its 32-bit size",
                   solver, (long long)nb);
}

/* XsyevBatched's host workspace for lane L, at least `bytes`. Reused across calls: the lane's previous solver
   call has finished by the time its next chunk starts (every chunk ends with a synchronisation of its lane),
   so nothing still reads the old buffer when it is replaced (the lane is synchronised first all the same). */
static sg_status host_workspace(sg_ctx *ctx, const Lane &L, size_t bytes, void **p)
{
    sg_cuda_state *st = sg_cu(ctx);
    const int k = L.slot;
    if (st->xsyev_hbytes[k] < bytes) {
        CU_TRY(ctx, cudaStreamSynchronize(L.s));
        free(st->xsyev_hwork[k]);
        st->xsyev_hbytes[k] = 0;
        if (!(st->xsyev_hwork[k] = malloc(bytes)))
            return sg_fail(ctx, SG_ERR_ALLOC, -1, "eigh: %zu bytes of host workspace", bytes);
        st->xsyev_hbytes[k] = bytes;
    }
    *p = st->xsyev_hwork[k];
    return SG_OK;
}

/* Symmetric eigendecomposition of nb packed n×n matrices in place (A becomes V when jobz = VECTOR),
   W packed n per matrix, info[nb] per-matrix status. n ≤ 32: Jacobi syevjBatched (ctx tolerance/sweeps,
   sorted ascending); n > 32: cusolverDnXsyevBatched (ascending). Caller keeps n·n·nb ≤ INT32_MAX.
   A must be in the solvers' safe range: callers go through eigh_run (or build H from a scaled A). */
template <class T>
static sg_status eigh_core(sg_ctx *ctx, const Lane &L, int64_t n, int64_t nb, cusolverEigMode_t jobz, T *A, T *W,
                           Bump &scr, int *info, bool dry)
{
    sg_status s = SG_OK;
    const cublasFillMode_t lo = CUBLAS_FILL_MODE_LOWER;
    syevjInfo_t pj = NULL;
    cusolverDnParams_t px = NULL;
    if (n <= 32) {
        int lwork = 0;
        SOLV(cusolverDnCreateSyevjInfo(&pj));
        if (ctx->jacobi_tol > 0) SOLV(cusolverDnXsyevjSetTolerance(pj, jacobi_tol<T>(ctx)));
        SOLV(cusolverDnXsyevjSetMaxSweeps(pj, ctx->jacobi_sweeps > 0 ? ctx->jacobi_sweeps : 100));
        SOLV(cusolverDnXsyevjSetSortEig(pj, 1));
        SOLV(Sv<T>::syevj_buf(L.h, jobz, lo, (int)n, dry_ptr(A, dry), (int)n, dry_ptr(W, dry), &lwork, pj, (int)nb));
        int lwork1 = lwork; /* one matrix's share: a wrapped batch total can be positive and too small */
        if (nb > 1) SOLV(Sv<T>::syevj_buf(L.h, jobz, lo, (int)n, dry_ptr(A, dry), (int)n, dry_ptr(W, dry), &lwork1, pj, 1));
        if (lwork < 0 || lwork1 < 0 || (int64_t)lwork1 * nb > INT32_MAX) {
            s = lwork_overflow(ctx, "syevjBatched", nb);
            goto out;
        }
        T *work = (T *)scr.take(sizeof(T) * (size_t)(lwork > 0 ? lwork : 1));
        if (!dry) SOLV(Sv<T>::syevj(L.h, jobz, lo, (int)n, A, (int)n, W, work, lwork, info, pj, (int)nb));
    } else {
        size_t dbytes = 0, hbytes = 0;
        SOLV(cusolverDnCreateParams(&px));
        SOLV(cusolverDnXsyevBatched_bufferSize(L.h, px, jobz, lo, n, Sv<T>::dt, dry_ptr(A, dry), n, Sv<T>::dt,
                                               dry_ptr(W, dry), Sv<T>::dt, &dbytes, &hbytes, nb));
        void *dwork = scr.take(dbytes ? dbytes : 1);
        if (!dry) {
            sg_prof_note("xsyev_dbytes", (long long)dbytes);
            sg_prof_note("xsyev_hbytes", (long long)hbytes);
            void *hwork = NULL;
            if (hbytes && (s = host_workspace(ctx, L, hbytes, &hwork)) != SG_OK) goto out;
            SOLV(cusolverDnXsyevBatched(L.h, px, jobz, lo, n, Sv<T>::dt, A, n, Sv<T>::dt, W, Sv<T>::dt, dwork, dbytes,
                                        hwork, hbytes, info, nb));
        }
    }
out:
    if (pj) cusolverDnDestroySyevjInfo(pj);
    if (px) cusolverDnDestroyParams(px);
    return s;
}

cudaError_t sg_cuda_probe_kernels(void)
{
    cudaFuncAttributes a;
    cudaError_t e = cudaFuncGetAttributes(&a, (const void *)k_copy<float>);
    if (e != cudaSuccess) (void)cudaGetLastError();
    return e;
}

/* Most matrices per chunk under the batched solvers' 32-bit limit n·lda·batch ≤ INT32_MAX; 0 when one
   matrix is already over it (n > 46340: the op fails with SG_ERR_UNSUPPORTED, see plan_chunks). Capped at
   2^20 matrices for the Jacobi solvers (n ≤ 32; larger chunks gain nothing) and at XSYEV_MAX_BATCH for
   cusolverDnXsyevBatched. (The Jacobi solvers' int workspace count is checked per chunk by eigh_run /
   gesvdj_run; plan_chunks halves the chunk when it would overflow.) */
/* XsyevBatched (CUDA 13.0, H200, 2026-11-30) returned CUSOLVER_STATUS_INTERNAL_ERROR for n = 64 at batch
   100000 (f32 and f64, raw calls too, although n·lda·batch = 4.1e8 is within its documented limit), and
   ran at n = 64 batch 10000 and n = 256 in chunks of 32767. Chunks stay at or below what was seen to run. */
static const int64_t XSYEV_MAX_BATCH = 32767;
static int64_t solver_max_nb(int64_t n_solver)
{
    int64_t per = n_solver * n_solver;
    if (per > INT32_MAX) return 0;
    int64_t lim = INT32_MAX / (per > 0 ? per : 1);
    const int64_t cap = n_solver <= 32 ? ((int64_t)1 << 20) : XSYEV_MAX_BATCH;
    return lim < cap ? lim : cap;
}

/* k_copy behind the pending NaN/Inf scan, if any (sg_cuda_finite_guard): zero = 1 for a solver's staged
   input, 0 for an output into user memory. */
template <class T>
static sg_status launch_copy(sg_ctx *ctx, const Lane &L, const T *src, int64_t sld, int64_t sst, T *dst, int64_t dld,
                             int64_t dst_st, int64_t rows, int64_t cols, int64_t nb, int zero = 0)
{
    const unsigned long long *skip;
    const int nskip = sg_cuda_finite_guard(ctx, &skip);
    k_copy<T><<<(unsigned)grid_for(ctx, rows * cols * nb), SG_BLOCK, 0, L.s>>>(src, sld, sst, dst, dld, dst_st, rows,
                                                                              cols, nb, skip, nskip, zero);
    CU_LAUNCH_CHECK(ctx);
    return SG_OK;
}

/* Raise a kernel's dynamic shared-memory limit when it needs more than the default 48 KB. */
static sg_status smem_fit(sg_ctx *ctx, const void *kernel, size_t bytes, const char *what)
{
    if (bytes <= 48 * 1024) return SG_OK;
    if (bytes > sg_cu(ctx)->prop.sharedMemPerBlockOptin)
        return sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "%s: needs %zu bytes of shared memory per block (device limit %zu)",
                       what, bytes, (size_t)sg_cu(ctx)->prop.sharedMemPerBlockOptin);
    CU_TRY(ctx, cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return SG_OK;
}

/* gesvdjBatched on nb packed m×n matrices (m, n ≤ 32; A destroyed): S, full U (m×m, ld m) and V (n×n, ld n)
   into the given buffers (referenced only for jobz = VECTOR). ctx Jacobi tolerance / sweeps, sorted. */
template <class T>
static sg_status gesvdj_run(sg_ctx *ctx, const Lane &L, int64_t m, int64_t n, int64_t nb, cusolverEigMode_t jobz, T *A,
                            T *S, T *Uf, T *Vf, Bump &scr, int *info, bool dry)
{
    sg_status s = SG_OK;
    gesvdjInfo_t p = NULL;
    int lwork = 0;
    SOLV(cusolverDnCreateGesvdjInfo(&p));
    if (ctx->jacobi_tol > 0) SOLV(cusolverDnXgesvdjSetTolerance(p, jacobi_tol<T>(ctx)));
    SOLV(cusolverDnXgesvdjSetMaxSweeps(p, ctx->jacobi_sweeps > 0 ? ctx->jacobi_sweeps : 100));
    SOLV(cusolverDnXgesvdjSetSortEig(p, 1));
    SOLV(Sv<T>::gesvdj_buf(L.h, jobz, (int)m, (int)n, dry_ptr(A, dry), (int)m, dry_ptr(S, dry), dry_ptr(Uf, dry),
                           (int)m, dry_ptr(Vf, dry), (int)n, &lwork, p, (int)nb));
    if (nb > 1) { /* one matrix's share: a wrapped batch total can be positive and too small */
        int lwork1 = 0;
        SOLV(Sv<T>::gesvdj_buf(L.h, jobz, (int)m, (int)n, dry_ptr(A, dry), (int)m, dry_ptr(S, dry), dry_ptr(Uf, dry),
                               (int)m, dry_ptr(Vf, dry), (int)n, &lwork1, p, 1));
        if (lwork1 < 0 || (int64_t)lwork1 * nb > INT32_MAX) lwork = -1;
    }
    if (lwork < 0) {
        s = lwork_overflow(ctx, "gesvdjBatched", nb);
        goto out;
    }
    {
        T *work = (T *)scr.take(sizeof(T) * (size_t)(lwork > 0 ? lwork : 1));
        if (!dry)
            SOLV(Sv<T>::gesvdj(L.h, jobz, (int)m, (int)n, A, (int)m, S, Uf, (int)m, Vf, (int)n, work, lwork, info, p,
                               (int)nb));
    }
out:
    if (p) cusolverDnDestroyGesvdjInfo(p);
    return s;
}

/* SG_SVD_JW=1 keeps the Jordan–Wielandt path for min(m,n) ≤ 32 < max(m,n) too (A/B against QR first on a
   device). Read once, like SG_GRAD_NO_FUSED. */
static bool svd_force_jw(void)
{
    static const bool jw = getenv("SG_SVD_JW") && atoi(getenv("SG_SVD_JW")) != 0;
    return jw;
}
/* Which SVD path a shape takes: both m, n ≤ 32 → gesvdj on A; min ≤ 32 < max → QR first (unless
   SG_SVD_JW=1); otherwise Jordan–Wielandt. svd_run and svd_max_nb must agree. */
static bool svd_qr_path(int64_t m, int64_t n)
{
    int64_t k = m < n ? m : n, d = m > n ? m : n;
    return k <= 32 && d > 32 && !svd_force_jw();
}

/* QR first, min(m,n) = k ≤ 32 < d = max(m,n). Tall (m > n): A = Q R (k_qr, Householder, in place in A),
   R = U_R Σ V_Rᵀ (gesvdjBatched, k×k), U = Q·[U_R; 0] (economy, k columns) or Q·[[U_R,0],[0,I]] (full, m
   columns) by k_qr_apply, V = V_R straight from gesvdj. Wide (m < n): the same on Aᵀ (k_qr reads A
   transposed into scratch), roles swapped: Aᵀ = Q U_R Σ V_Rᵀ, so U = V_R and V = Q·[U_R; 0 | …].
   Values only (rank): no vectors formed. Work O(d·k²) + the wanted output columns, instead of an
   eigenproblem of size (m+n)²; no shared memory grows with d; the batched solver sees k×k, hence
   svd_max_nb's k²·nb ≤ INT32_MAX. */
template <class T>
static sg_status svd_qr_run(sg_ctx *ctx, const Lane &L, int64_t m, int64_t n, int64_t nb, int64_t ucols, int64_t vcols,
                            T *A, T *S, T *U, T *V, Bump &scr, int *info, bool dry)
{
    const bool tall = m > n, vec = ucols > 0 || vcols > 0;
    const int64_t k = tall ? n : m, d = tall ? m : n;
    const int64_t bcols = tall ? ucols : vcols, scols = tall ? vcols : ucols; /* big: d rows (via Q); small: k */
    T *big = tall ? U : V, *small = tall ? V : U;
    T *Wq = tall ? A : (T *)scr.take(sizeof(T) * (size_t)(d * k * nb)); /* reflectors */
    T *tau = (T *)scr.take(sizeof(T) * (size_t)(k * nb));
    T *R = (T *)scr.take(sizeof(T) * (size_t)(k * k * nb));
    T *Ur = (T *)scr.take(sizeof(T) * (size_t)(k * k * nb));
    T *Vr = scols == k ? small : (T *)scr.take(sizeof(T) * (size_t)(k * k * nb));
    if (!dry) {
        k_qr<T><<<(unsigned)nb, qr_threads(), qr_smem<T>(), L.s>>>(A, tall ? 0 : 1, Wq, tau, R, d, k);
        CU_LAUNCH_CHECK(ctx);
    }
    sg_status s = gesvdj_run<T>(ctx, L, k, k, nb, vec ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR, R, S,
                                Ur, Vr, scr, info, dry);
    if (s != SG_OK || dry || bcols == 0) return s;
    k_qr_apply<T><<<(unsigned)nb, qr_threads(), qr_apply_smem<T>(), L.s>>>(Wq, tau, Ur, big, d, k, bcols);
    CU_LAUNCH_CHECK(ctx);
    return SG_OK;
}

/* SVD of nb packed m×n matrices (A is destroyed). S packed k, U packed m×ucols, V packed n×vcols with
   ucols ∈ {0, k, m}, vcols ∈ {0, k, n} (0: not wanted). m, n ≤ 32: gesvdjBatched (full U, V; economy
   copies the first k columns). min(m,n) ≤ 32 < max(m,n): QR first (svd_qr_run). Otherwise (and with
   SG_SVD_JW=1 for the QR-first shapes) Jordan–Wielandt: XsyevBatched on [[0,A],[Aᵀ,0]] and k_jw_extract.
   Callers go through svd_run (safe-range scaling). */
template <class T>
static sg_status svd_core(sg_ctx *ctx, const Lane &L, int64_t m, int64_t n, int64_t nb, int64_t ucols, int64_t vcols,
                          T *A, T *S, T *U, T *V, Bump &scr, int *info, bool dry)
{
    sg_status s = SG_OK;
    bool vec = ucols > 0 || vcols > 0;
    cusolverEigMode_t jobz = vec ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR;
    if (m <= 32 && n <= 32) {
        /* gesvdj always writes full U and V: use the caller's buffers when they are full, else scratch */
        T *Uf = ucols == m ? U : (T *)scr.take(sizeof(T) * (size_t)(m * m * nb));
        T *Vf = vcols == n ? V : (T *)scr.take(sizeof(T) * (size_t)(n * n * nb));
        if ((s = gesvdj_run<T>(ctx, L, m, n, nb, jobz, A, S, Uf, Vf, scr, info, dry)) != SG_OK || dry) return s;
        /* economy: the first k columns of a packed m×m matrix are its first m·k elements */
        if (ucols > 0 && ucols != m && (s = launch_copy(ctx, L, Uf, m, m * m, U, m, m * ucols, m, ucols, nb)))
            return s;
        if (vcols > 0 && vcols != n && (s = launch_copy(ctx, L, Vf, n, n * n, V, n, n * vcols, n, vcols, nb)))
            return s;
        return SG_OK;
    }
    if (svd_qr_path(m, n)) return svd_qr_run<T>(ctx, L, m, n, nb, ucols, vcols, A, S, U, V, scr, info, dry);
    int64_t N = m + n;
    T *H = (T *)scr.take(sizeof(T) * (size_t)(N * N * nb));
    T *Wv = (T *)scr.take(sizeof(T) * (size_t)(N * nb));
    size_t smem = jw_extract_smem<T>(m, n, vec); /* singular values alone need no staging */
    if (!dry) {
        k_jw_build<T><<<(unsigned)grid_for(ctx, N * N * nb), SG_BLOCK, 0, L.s>>>(A, m, n, H, nb);
        CU_LAUNCH_CHECK(ctx);
    }
    if ((s = eigh_core<T>(ctx, L, N, nb, jobz, H, Wv, scr, info, dry)) != SG_OK) return s; /* H in range */
    if (dry) return SG_OK;
    if (vec && (s = smem_fit(ctx, (const void *)k_jw_extract<T>, smem, "svd basis extraction")) != SG_OK) return s;
    k_jw_extract<T><<<(unsigned)nb, SG_BLOCK, smem, L.s>>>(H, Wv, m, n, S, U, ucols, V, vcols, info);
    CU_LAUNCH_CHECK(ctx);
    return SG_OK;
}

/* SG_RANGE_SCALE=0 skips k_range_scale / k_range_unscale (A/B of their cost, and of whether a cuSOLVER
   release needs the scaling, on a device; NaN/Inf then reach the solvers with the check off). Read once. */
static bool range_scale_on(void)
{
    static const bool on = !(getenv("SG_RANGE_SCALE") && atoi(getenv("SG_RANGE_SCALE")) == 0);
    return on;
}
/* k_range_scale on nb packed rows×cols matrices at A; *ex gets the per-matrix codes for range_unscale (NULL
   when the step is off). Same scratch in a dry run. */
template <class T>
static sg_status range_scale(sg_ctx *ctx, const Lane &L, T *A, int64_t rows, int64_t cols, int lower, int64_t nb,
                             Bump &scr, bool dry, int **ex)
{
    *ex = NULL;
    if (!range_scale_on()) return SG_OK;
    *ex = (int *)scr.take(sizeof(int) * (size_t)nb);
    if (dry || nb == 0) return SG_OK;
    k_range_scale<T><<<range_grid(nb), SG_RANGE_THREADS, 0, L.s>>>(A, rows, cols, nb, lower, *ex);
    CU_LAUNCH_CHECK(ctx);
    return SG_OK;
}
/* k_range_unscale: values W (k per matrix) back to scale; for a matrix that held NaN/Inf, info SG_RANGE_BAD
   (info_fail: "not attempted") and NaN into W, X1 and X2 (per1, per2 elements per matrix; NULL: none). */
template <class T>
static sg_status range_unscale(sg_ctx *ctx, const Lane &L, T *W, int64_t k, T *X1, int64_t per1, T *X2, int64_t per2,
                               int64_t nb, const int *ex, int *info, bool dry)
{
    if (!ex || dry || nb == 0) return SG_OK;
    k_range_unscale<T><<<range_grid(nb), SG_RANGE_THREADS, 0, L.s>>>(W, k, X1, per1, X2, per2, nb, ex, info);
    CU_LAUNCH_CHECK(ctx);
    return SG_OK;
}

/* The solver entry points: eigh_core / svd_core between range_scale and range_unscale. */
template <class T>
static sg_status eigh_run(sg_ctx *ctx, const Lane &L, int64_t n, int64_t nb, cusolverEigMode_t jobz, T *A, T *W,
                          Bump &scr, int *info, bool dry)
{
    int *ex;
    const bool vec = jobz == CUSOLVER_EIG_MODE_VECTOR;
    sg_status s = range_scale<T>(ctx, L, A, n, n, 1, nb, scr, dry, &ex);
    if (s == SG_OK) s = eigh_core<T>(ctx, L, n, nb, jobz, A, W, scr, info, dry);
    if (s == SG_OK) s = range_unscale<T>(ctx, L, W, n, vec ? A : NULL, n * n, NULL, 0, nb, ex, info, dry);
    return s;
}
template <class T>
static sg_status svd_run(sg_ctx *ctx, const Lane &L, int64_t m, int64_t n, int64_t nb, int64_t ucols, int64_t vcols,
                         T *A, T *S, T *U, T *V, Bump &scr, int *info, bool dry)
{
    int *ex;
    sg_status s = range_scale<T>(ctx, L, A, m, n, 0, nb, scr, dry, &ex);
    if (s == SG_OK) s = svd_core<T>(ctx, L, m, n, nb, ucols, vcols, A, S, U, V, scr, info, dry);
    if (s == SG_OK)
        s = range_unscale<T>(ctx, L, S, m < n ? m : n, ucols ? U : NULL, m * ucols, vcols ? V : NULL, n * vcols, nb,
                             ex, info, dry);
    return s;
}

/* Chunk limit of the batched solver each path calls: gesvdj on m×n, gesvdj on the k×k R (QR first), or
   XsyevBatched on (m+n)². The chunk's byte budget (plan_chunks' dry run) still counts the m×n data. */
static int64_t svd_max_nb(int64_t m, int64_t n)
{
    if (m <= 32 && n <= 32) return solver_max_nb(m > n ? m : n);
    if (svd_qr_path(m, n)) return solver_max_nb(m < n ? m : n);
    return solver_max_nb(m + n);
}

/* ================================================================================================
   3. the chunk runner
   ================================================================================================ */
enum { DIR_IN = 1, DIR_OUT = 2 };

struct Opnd {
    const sg_mat *m;  /* matrix operand, or */
    int64_t *iv;      /* int64 per-matrix output (rank, nullity); both NULL: absent */
    int dir;
    int clobber;      /* IN: compute overwrites its device copy, so it is always staged */
    int share;        /* OUT: this output lives in the device buffer of IN operand `share` (same shape); −1: own */
    int guarded;      /* OUT: written only by a kernel that reads the pending scan's flags and then writes nothing
                         (sg_scan_failed), so the deferred scan needs no staged copy of it */
    const char *name;
};

struct Job;
typedef sg_status (*compute_fn)(Job &J, const Lane &L, int64_t nb, void *const *d, Bump &scr, int *dinfo, bool dry);

struct Job {
    sg_ctx *ctx;
    sg_dtype dt;
    const char *name;
    int64_t batch, max_nb;
    int nop;
    Opnd op[5];
    compute_fn fn;
    /* op parameters */
    int64_t m, n;
    int full, which;
    sg_tols tol;  /* per-matrix arrays in the caller's host memory (spectral() uploads each chunk's slice) */
    int64_t b0;   /* first matrix of the chunk being computed (set before each J.fn) */
    /* device mode: the NaN/Inf scan is queued, not waited for (run_device_t). User memory is then written
       only by guarded copies or guarded kernels (Opnd::guarded), and the solvers work on guarded (zeroed when
       flagged) staged inputs. */
    bool defer;
};

static bool present(const Opnd &o) { return o.m || o.iv; }
static size_t esz(const Job &J, const Opnd &o) { return o.m ? sg_dtype_size(J.dt) : sizeof(int64_t); }
static int64_t elems(const Opnd &o) { return o.m ? o.m->rows * o.m->cols : 1; }
static size_t packed_bytes(const Job &J, const Opnd &o, int64_t nb) { return esz(J, o) * (size_t)(elems(o) * nb); }
static bool dense(const sg_mat *m) { return m->ld == m->rows && sg_stride_of(m) == m->rows * m->cols; }
static char *user_at(const Job &J, const Opnd &o, int64_t b0)
{
    return o.m ? (char *)o.m->data + esz(J, o) * (size_t)(b0 * sg_stride_of(o.m)) : (char *)(o.iv + b0);
}

/* Device mode: an IN that is staged into the memory of its OUT partner (eigh: A copied straight into a
   dense V, which the solver then overwrites with the eigenvectors). Returns the partner index or −1. */
static int direct_partner(const Job &J, int i)
{
    if (J.defer) return -1;
    for (int k = 0; k < J.nop; k++)
        if (J.op[k].dir == DIR_OUT && J.op[k].share == i && J.op[k].m && dense(J.op[k].m)) return k;
    return -1;
}

/* Which operands get a region in the chunk's device buffer. */
static bool needs_region(const Job &J, int i, bool host)
{
    const Opnd &o = J.op[i];
    if (!present(o)) return false;
    if (o.dir == DIR_OUT && o.share >= 0) return false;
    if (host) return true;
    if (J.defer && ((o.dir == DIR_OUT && !o.guarded) || o.clobber)) return true; /* see Job::defer */
    if (o.iv) return false; /* device int64 outputs are written in place */
    if (o.dir == DIR_IN) return o.clobber ? direct_partner(J, i) < 0 : !dense(o.m);
    return !dense(o.m);
}

/* Lays out one chunk (regions, info, scratch) over buffer base (NULL: sizing only). */
static sg_status layout(Job &J, const Lane &L, int64_t nb, bool host, char *base, void **reg, int **dinfo,
                        size_t *bytes)
{
    Bump B = {base, 0};
    for (int i = 0; i < J.nop; i++) reg[i] = needs_region(J, i, host) ? B.take(packed_bytes(J, J.op[i], nb)) : NULL;
    *dinfo = (int *)B.take(sizeof(int) * (size_t)nb);
    void *d[5] = {0};
    sg_status s = SG_OK;
    if (!base) s = J.fn(J, L, nb, d, B, *dinfo, true); /* dry: adds the solver/kernel scratch */
    *bytes = B.off;
    return s;
}

static size_t scratch_mark(Job &J, int64_t nb, bool host)
{
    /* bytes of layout() before the compute scratch starts: recomputed so the real run starts its scratch
       exactly where the dry run did */
    Bump B = {NULL, 0};
    for (int i = 0; i < J.nop; i++)
        if (needs_region(J, i, host)) B.take(packed_bytes(J, J.op[i], nb));
    B.take(sizeof(int) * (size_t)nb);
    return B.off;
}

static size_t chunk_bytes_for(Job &J, const Lane &L, int64_t nb, bool host, sg_status *s)
{
    void *reg[5];
    int *di;
    size_t b = 0;
    *s = layout(J, L, nb, host, NULL, reg, &di, &b);
    return b;
}

/* Picks the chunk size: the largest nb (halving from min(batch, max_nb)) whose buffer fits budget; returns
   the bytes to allocate (max over the full and the tail chunk). */
static sg_status plan_chunks(Job &J, const Lane &L, bool host, size_t budget, int64_t *nb_out, size_t *need)
{
    sg_status s = SG_OK;
    if (J.max_nb < 1)
        return sg_fail(J.ctx, SG_ERR_UNSUPPORTED, -1,
                       "%s: one matrix exceeds cuSOLVER's batched limit n*lda <= INT32_MAX (eigh n <= 46340; SVD-based "
                       "ops m+n <= 46340 when min(m,n) > 32 or SG_SVD_JW=1); use the CPU backend",
                       J.name);
    int64_t nb = J.batch < J.max_nb ? J.batch : J.max_nb;
    size_t b = chunk_bytes_for(J, L, nb, host, &s);
    /* halve while over budget, or while the dry run refuses the chunk size (a Jacobi workspace count that
       overflows int; a refusal that does not depend on nb repeats at nb = 1 and is reported then) */
    bool refused = false;
    while (nb > 1 && ((s == SG_OK && b > budget) || s == SG_ERR_UNSUPPORTED)) {
        refused |= s == SG_ERR_UNSUPPORTED;
        nb = (nb + 1) / 2;
        s = SG_OK;
        b = chunk_bytes_for(J, L, nb, host, &s);
    }
    if (s != SG_OK) return s;
    if (refused) sg_clear_error(J.ctx); /* a smaller chunk got past it: not this call's error */
    int64_t tail = J.batch % nb;
    if (tail) {
        size_t bt = chunk_bytes_for(J, L, tail, host, &s);
        if (s != SG_OK) return s;
        if (bt > b) b = bt;
    }
    *nb_out = nb;
    *need = b;
    return SG_OK;
}

static sg_status info_fail(Job &J, const int *hinfo, int64_t b0, int64_t nb)
{
    for (int64_t i = 0; i < nb; i++) {
        if (hinfo[i] == 0) continue;
        if (hinfo[i] == SG_RANGE_BAD) /* k_range_scale found NaN/Inf: the solver saw zeros instead */
            return sg_fail(J.ctx, SG_ERR_NOCONV, b0 + i,
                           "%s not attempted: matrix %lld has NaN/Inf entries (input check off)", J.name,
                           (long long)(b0 + i));
        const char *tname = J.dt == SG_F32 ? "float32" : "float64"; /* the overflows, as the CPU reports them */
        if (hinfo[i] == SG_RANGE_OVER)
            return sg_fail(J.ctx, SG_ERR_DOMAIN, b0 + i, "%s: the eigen/singular values of matrix %lld overflow %s",
                           J.name, (long long)(b0 + i), tname);
        if (hinfo[i] == SG_LSTSQ_OVER)
            return sg_fail(J.ctx, SG_ERR_DOMAIN, b0 + i, "%s: the solution of matrix %lld overflows %s", J.name,
                           (long long)(b0 + i), tname);
        if (hinfo[i] == SG_PROJ_OVER)
            return sg_fail(J.ctx, SG_ERR_DOMAIN, b0 + i, "%s: Y of matrix %lld overflows %s", J.name, (long long)(b0 + i),
                           tname);
        if (hinfo[i] > 0)
            return sg_fail(J.ctx, SG_ERR_NOCONV, b0 + i, "%s: solver did not converge on matrix %lld (info %d)", J.name,
                           (long long)(b0 + i), hinfo[i]);
        return sg_fail(J.ctx, SG_ERR_CUSOLVER, b0 + i, "%s: cuSOLVER rejected parameter %d (matrix %lld)", J.name,
                       -hinfo[i], (long long)(b0 + i));
    }
    return SG_OK;
}

/* ---- device memory: in place on ctx->stream ---------------------------------------------------- */
template <class T> static sg_status run_device_t(Job &J)
{
    sg_ctx *ctx = J.ctx;
    sg_cuda_state *st = sg_cu(ctx);
    sg_status s = sg_cuda_bind_stream(ctx);
    if (s != SG_OK) return s;
    Lane L = {st->stream, st->solver, 0};
    for (int i = 0; i < J.nop; i++) /* the int64 outputs (rank, nullity) too: the kernels write them in place */
        if (present(J.op[i]) &&
            (s = sg_cuda_check_ptr(ctx, J.op[i].m ? J.op[i].m->data : (const void *)J.op[i].iv, J.op[i].name)) != SG_OK)
            return s;
    sg_prof_mark("args");
    J.defer = ctx->check_finite != 0; /* the scan is queued once the buffers exist (Job::defer) */
    int64_t nb = 0;
    size_t need = 0;
    char *buf = NULL;
    int *hinfo = NULL;
    size_t budget = 0;
    if ((s = plan_chunks(J, L, false, (size_t)-1, &nb, &need)) != SG_OK) return s;
    if ((s = sg_cuda_budget(ctx, need, 9, 10, &budget)) != SG_OK) return s; /* 90 % of free memory */
    if (budget < need && (s = plan_chunks(J, L, false, budget, &nb, &need)) != SG_OK) return s;
    sg_prof_mark("plan");
    for (;;) { /* on OOM halve the chunk and retry */
        cudaError_t e = sg_cuda_alloc(ctx, (void **)&buf, need, L.s);
        if (e == cudaSuccess) break;
        cudaGetLastError();
        buf = NULL;
        if (e != cudaErrorMemoryAllocation || nb == 1)
            return sg_fail(ctx, e == cudaErrorMemoryAllocation ? SG_ERR_DEVICE_OOM : SG_ERR_CUDA, -1,
                           "%s: device allocation of %zu bytes for one matrix failed: %s", J.name, need,
                           cudaGetErrorString(e));
        int64_t half = (nb + 1) / 2;
        J.max_nb = half;
        if ((s = plan_chunks(J, L, false, (size_t)-1, &nb, &need)) != SG_OK) return s;
    }
    sg_prof_mark("alloc");
    if (!(hinfo = (int *)malloc(sizeof(int) * (size_t)nb))) {
        s = sg_fail(ctx, SG_ERR_ALLOC, -1, "%s: info array", J.name);
        goto out;
    }
    if (J.defer) { /* queued after every early return: nothing of this call runs on once it has returned */
        const sg_mat *ins[sizeof J.op / sizeof J.op[0]];
        const char *names[sizeof J.op / sizeof J.op[0]];
        int nin = 0;
        for (int i = 0; i < J.nop; i++)
            if (J.op[i].dir == DIR_IN && J.op[i].m) ins[nin] = J.op[i].m, names[nin++] = J.op[i].name;
        if ((s = sg_cuda_finite_queue(ctx, ins, names, nin)) != SG_OK) goto out;
    }
    for (int64_t b0 = 0; b0 < J.batch; b0 += nb) {
        int64_t cur = J.batch - b0 < nb ? J.batch - b0 : nb;
        void *reg[5], *d[5] = {0};
        bool mine[5] = {0}; /* d[i] is operand i's own user memory */
        int *dinfo;
        size_t dummy;
        layout(J, L, cur, false, buf, reg, &dinfo, &dummy);
        for (int i = 0; i < J.nop; i++) { /* inputs (listed before outputs) */
            const Opnd &o = J.op[i];
            if (o.dir != DIR_IN || !present(o)) continue;
            int p = o.clobber ? direct_partner(J, i) : -1;
            T *dst = reg[i] ? (T *)reg[i] : p >= 0 ? (T *)user_at(J, J.op[p], b0) : NULL;
            if (dst) {
                int64_t r = o.m->rows, c = o.m->cols;
                if ((s = launch_copy(ctx, L, (const T *)user_at(J, o, b0), o.m->ld, sg_stride_of(o.m), dst, r, r * c, r,
                                     c, cur, 1)) != SG_OK)
                    goto out;
                d[i] = dst;
            } else {
                d[i] = user_at(J, o, b0);
            }
        }
        for (int i = 0; i < J.nop; i++) {
            const Opnd &o = J.op[i];
            if (o.dir != DIR_OUT || !present(o)) continue;
            if (o.share >= 0) {
                d[i] = d[o.share];
                mine[i] = d[i] == (void *)user_at(J, o, b0);
            } else {
                d[i] = reg[i] ? reg[i] : user_at(J, o, b0);
                mine[i] = !reg[i];
            }
        }
        CUDA(cudaMemsetAsync(dinfo, 0, sizeof(int) * (size_t)cur, L.s));
        {
            Bump scr = {buf, scratch_mark(J, cur, false)};
            J.b0 = b0;
            if ((s = J.fn(J, L, cur, d, scr, dinfo, false)) != SG_OK) goto out;
        }
        for (int i = 0; i < J.nop; i++) { /* unpack outputs that were computed in scratch */
            const Opnd &o = J.op[i];
            if (o.dir != DIR_OUT || mine[i] || !present(o)) continue;
            if (!o.m) /* int64 outputs (in a region only with the deferred scan) */
                s = launch_copy(ctx, L, (const long long *)d[i], 1, 1, (long long *)user_at(J, o, b0), 1, 1, 1, 1, cur);
            else
                s = launch_copy(ctx, L, (const T *)d[i], o.m->rows, o.m->rows * o.m->cols, (T *)user_at(J, o, b0),
                                o.m->ld, sg_stride_of(o.m), o.m->rows, o.m->cols, cur);
            if (s != SG_OK) goto out;
        }
        sg_prof_mark("queue");
        if (J.defer && (s = sg_cuda_finite_fetch(ctx)) != SG_OK) goto out; /* one synchronisation for both */
        CUDA(cudaMemcpyAsync(hinfo, dinfo, sizeof(int) * (size_t)cur, cudaMemcpyDeviceToHost, L.s));
        CUDA(cudaStreamSynchronize(L.s));
        sg_prof_mark("wait");
        if ((s = sg_cuda_finite_report(ctx)) != SG_OK) goto out; /* a NaN/Inf outranks what the solver said */
        if ((s = info_fail(J, hinfo, b0, cur)) != SG_OK) goto out;
        sg_progress(ctx, (double)(b0 + cur) / (double)J.batch);
        if (sg_cancelled(ctx)) {
            s = SG_ERR_CANCELLED; /* the front-end words it */
            goto out;
        }
    }
out:
    if (buf) { /* an error path waits: nothing of this call is left running */
        sg_cuda_free(ctx, buf, L.s);
        sg_cuda_settle(ctx, L.s, s == SG_OK); /* SG_OK: every chunk ended with a synchronisation */
        sg_prof_mark("release");
    }
    sg_cuda_finite_drop(ctx); /* a scan left pending by an early error */
    free(hinfo);
    return s;
}

/* ---- host memory: streamed through pinned buffers on two lanes ---------------------------------- */
void sg_cuda_lanes_free(sg_cuda_state *st)
{
    for (int k = 0; k < 3; k++) { /* every op has synchronised its streams before returning */
        free(st->xsyev_hwork[k]);
        st->xsyev_hwork[k] = NULL;
        st->xsyev_hbytes[k] = 0;
    }
    for (int l = 0; l < 2; l++) {
        if (st->lane_pinned[l]) cudaFreeHost(st->lane_pinned[l]);
        if (st->lane_solver[l]) cusolverDnDestroy(st->lane_solver[l]);
        if (st->lane_stream[l]) cudaStreamDestroy(st->lane_stream[l]);
        st->lane_pinned[l] = NULL;
        st->lane_pinned_bytes[l] = 0;
        st->lane_solver[l] = NULL;
        st->lane_stream[l] = NULL;
    }
}

static sg_status lanes_ready(sg_ctx *ctx)
{
    sg_cuda_state *st = sg_cu(ctx);
    for (int l = 0; l < 2; l++) {
        if (st->lane_solver[l]) continue;
        if (!st->lane_stream[l]) CU_TRY(ctx, cudaStreamCreateWithFlags(&st->lane_stream[l], cudaStreamNonBlocking));
        CUSOLVER_TRY(ctx, cusolverDnCreate(&st->lane_solver[l]));
        if (cusolverDnSetStream(st->lane_solver[l], st->lane_stream[l]) != CUSOLVER_STATUS_SUCCESS) {
            cusolverDnDestroy(st->lane_solver[l]);
            st->lane_solver[l] = NULL;
            return sg_fail(ctx, SG_ERR_CUSOLVER, -1, "cusolverDnSetStream for a streaming lane failed");
        }
    }
    return SG_OK;
}

static size_t host_bytes(const Job &J, int64_t nb)
{
    size_t b = 0;
    for (int i = 0; i < J.nop; i++)
        if (present(J.op[i])) b += (packed_bytes(J, J.op[i], nb) + 255) & ~(size_t)255;
    return b + sizeof(int) * (size_t)nb;
}

/* Pinned regions: one per present operand, then the info array. */
static void host_layout(const Job &J, int64_t nb, char *base, char **hreg, int **hinfo)
{
    size_t off = 0;
    for (int i = 0; i < J.nop; i++) {
        hreg[i] = present(J.op[i]) ? base + off : NULL;
        if (present(J.op[i])) off += (packed_bytes(J, J.op[i], nb) + 255) & ~(size_t)255;
    }
    *hinfo = (int *)(base + off);
}

/* CPU side of staging: strided user matrices ↔ packed pinned buffer. */
static void host_pack(const Job &J, const Opnd &o, int64_t b0, int64_t nb, char *dst)
{
    if (o.iv || dense(o.m)) {
        memcpy(dst, user_at(J, o, b0), packed_bytes(J, o, nb));
        return;
    }
    size_t es = esz(J, o), col = es * (size_t)o.m->rows;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t j = 0; j < o.m->cols; j++)
            memcpy(dst + col * (size_t)(b * o.m->cols + j), user_at(J, o, b0 + b) + es * (size_t)(j * o.m->ld), col);
}

static void host_unpack(const Job &J, const Opnd &o, int64_t b0, int64_t nb, const char *src)
{
    if (o.iv || dense(o.m)) {
        memcpy(user_at(J, o, b0), src, packed_bytes(J, o, nb));
        return;
    }
    size_t es = esz(J, o), col = es * (size_t)o.m->rows;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t j = 0; j < o.m->cols; j++)
            memcpy(user_at(J, o, b0 + b) + es * (size_t)(j * o.m->ld), src + col * (size_t)(b * o.m->cols + j), col);
}

struct Flight {
    bool busy;
    int64_t b0, nb;
};

/* A chunk whose stream has finished: check its info, copy its outputs to the user. */
static sg_status retire(Job &J, char *pinned, const Flight &f, int64_t nb_alloc)
{
    char *hreg[5];
    int *hinfo;
    host_layout(J, nb_alloc, pinned, hreg, &hinfo);
    for (int i = 0; i < J.nop; i++)
        if (J.op[i].dir == DIR_OUT && present(J.op[i])) host_unpack(J, J.op[i], f.b0, f.nb, hreg[i]);
    return info_fail(J, hinfo, f.b0, f.nb);
}

static sg_status run_host(Job &J)
{
    sg_ctx *ctx = J.ctx;
    sg_cuda_state *st = sg_cu(ctx);
    sg_status s = lanes_ready(ctx), sr = SG_OK;
    if (s != SG_OK) return s;
    Lane lane[2] = {{st->lane_stream[0], st->lane_solver[0], 1}, {st->lane_stream[1], st->lane_solver[1], 2}};
    /* automatic chunk: 40% of free memory per lane (sg_cuda_budget), capped at 256 MiB so pinned host memory
       stays modest */
    int64_t nb = 0;
    size_t need = 0, budget = 0;
    char *dbuf[2] = {NULL, NULL};
    int nl = 1;
    Flight fl[2] = {{false, 0, 0}, {false, 0, 0}};
    if ((s = plan_chunks(J, lane[0], true, ctx->chunk_bytes ? ctx->chunk_bytes : (size_t)256 << 20, &nb, &need)) != SG_OK)
        return s;
    if (!ctx->chunk_bytes && (s = sg_cuda_budget(ctx, need, 2, 5, &budget)) == SG_OK && budget < need)
        s = plan_chunks(J, lane[0], true, budget, &nb, &need);
    if (s != SG_OK) return s;
    sg_prof_mark("plan");
    for (;;) { /* allocate both lanes; on OOM (device or pinned) halve the chunk and retry */
        nl = J.batch > nb ? 2 : 1;
        cudaError_t e = cudaSuccess;
        bool pinned = false; /* which allocation failed: device memory or page-locked host memory */
        size_t hb = host_bytes(J, nb);
        for (int l = 0; l < nl && e == cudaSuccess; l++) {
            e = sg_cuda_alloc(ctx, (void **)&dbuf[l], need, lane[l].s);
            if (e != cudaSuccess) break;
            if (st->lane_pinned_bytes[l] < hb) {
                if (st->lane_pinned[l]) cudaFreeHost(st->lane_pinned[l]);
                st->lane_pinned[l] = NULL;
                st->lane_pinned_bytes[l] = 0;
                e = cudaHostAlloc(&st->lane_pinned[l], hb, cudaHostAllocDefault);
                if (e == cudaSuccess) st->lane_pinned_bytes[l] = hb;
                else st->lane_pinned[l] = NULL, pinned = true;
            }
        }
        if (e == cudaSuccess) break;
        cudaGetLastError();
        for (int l = 0; l < 2; l++) { /* freed and settled, so the retry's OOM trim can hand them back */
            sg_cuda_free_wait(ctx, dbuf[l], lane[l].s);
            dbuf[l] = NULL;
        }
        if (e != cudaErrorMemoryAllocation || nb == 1)
            return sg_fail(ctx, e != cudaErrorMemoryAllocation ? SG_ERR_CUDA : pinned ? SG_ERR_ALLOC : SG_ERR_DEVICE_OOM, -1,
                           "%s: %s staging buffers for %lld matrices (%zu device, %zu pinned host bytes per lane) "
                           "failed: %s", J.name, pinned ? "pinned host" : "device", (long long)nb, need, hb,
                           cudaGetErrorString(e));
        J.max_nb = (nb + 1) / 2;
        if ((s = plan_chunks(J, lane[0], true, (size_t)-1, &nb, &need)) != SG_OK) return s;
    }
    sg_prof_mark("alloc");

    for (int64_t c = 0, b0 = 0; b0 < J.batch; c++, b0 += nb) {
        int l = (int)(c & 1);
        const Lane &L = lane[l];
        int64_t cur = J.batch - b0 < nb ? J.batch - b0 : nb;
        if (fl[l].busy) { /* chunk c−2 used this lane: finish it before its buffers are refilled */
            fl[l].busy = false;
            CUDA(cudaStreamSynchronize(L.s));
            if ((s = retire(J, (char *)st->lane_pinned[l], fl[l], nb)) != SG_OK) {
                sr = s; /* older than anything still in flight: this error wins */
                goto out;
            }
            sg_progress(ctx, (double)(fl[l].b0 + fl[l].nb) / (double)J.batch);
            if (sg_cancelled(ctx)) { /* start no further chunk; the drain retires the ones in flight */
                s = SG_ERR_CANCELLED;
                goto out;
            }
        }
        char *hreg[5];
        int *hinfo, *dinfo;
        void *reg[5], *d[5] = {0};
        size_t dummy;
        host_layout(J, nb, (char *)st->lane_pinned[l], hreg, &hinfo);
        layout(J, L, cur, true, dbuf[l], reg, &dinfo, &dummy);
        for (int i = 0; i < J.nop; i++) {
            const Opnd &o = J.op[i];
            if (!present(o)) continue;
            d[i] = o.dir == DIR_OUT && o.share >= 0 ? d[o.share] : reg[i];
            if (o.dir != DIR_IN) continue;
            host_pack(J, o, b0, cur, hreg[i]);
            CUDA(cudaMemcpyAsync(d[i], hreg[i], packed_bytes(J, o, cur), cudaMemcpyHostToDevice, L.s));
        }
        CUDA(cudaMemsetAsync(dinfo, 0, sizeof(int) * (size_t)cur, L.s));
        {
            Bump scr = {dbuf[l], scratch_mark(J, cur, true)};
            J.b0 = b0;
            if ((s = J.fn(J, L, cur, d, scr, dinfo, false)) != SG_OK) goto out;
        }
        for (int i = 0; i < J.nop; i++)
            if (J.op[i].dir == DIR_OUT && present(J.op[i]))
                CUDA(cudaMemcpyAsync(hreg[i], d[i], packed_bytes(J, J.op[i], cur), cudaMemcpyDeviceToHost, L.s));
        CUDA(cudaMemcpyAsync(hinfo, dinfo, sizeof(int) * (size_t)cur, cudaMemcpyDeviceToHost, L.s));
        fl[l].busy = true;
        fl[l].b0 = b0;
        fl[l].nb = cur;
    }
out:
    sg_prof_mark("stream"); /* every chunk but the last two retired */
    /* drain: oldest chunk first, so the lowest failing matrix is the one reported */
    {
        int order[2] = {0, 1};
        if (fl[1].busy && (!fl[0].busy || fl[1].b0 < fl[0].b0)) { order[0] = 1; order[1] = 0; }
        for (int q = 0; q < 2; q++) {
            int l = order[q];
            cudaError_t e = cudaStreamSynchronize(lane[l].s); /* also for a half-issued chunk */
            if (!fl[l].busy || sr != SG_OK) continue;
            fl[l].busy = false;
            sg_status r = e != cudaSuccess ? sg_fail(ctx, SG_ERR_CUDA, -1, "%s: %s", J.name, cudaGetErrorString(e))
                                           : retire(J, (char *)st->lane_pinned[l], fl[l], nb);
            if (r != SG_OK) sr = r;
        }
    }
    sg_prof_mark("drain");
    for (int l = 0; l < 2; l++) sg_cuda_free_wait(ctx, dbuf[l], lane[l].s);
    sg_cuda_trim(ctx);
    sg_prof_mark("release");
    if (sr != SG_OK) return sr;
    if (s != SG_OK && sg_last_error(ctx)[0] == 0) return sg_fail(ctx, s, -1, "%s failed", J.name);
    return s;
}

template <class T> static sg_status run_job_t(Job &J)
{
    sg_clear_error(J.ctx);
    return J.ctx->mem == SG_MEM_DEVICE ? run_device_t<T>(J) : run_host(J);
}
static sg_status run_job(Job &J) { return J.dt == SG_F32 ? run_job_t<float>(J) : run_job_t<double>(J); }

/* ================================================================================================
   4. ops: operand tables and per-chunk compute
   ================================================================================================ */
static Job job(sg_ctx *ctx, const char *name, const sg_mat *A)
{
    Job J;
    memset(&J, 0, sizeof J);
    J.ctx = ctx;
    J.name = name;
    J.dt = A->dtype;
    J.batch = A->batch;
    J.m = A->rows;
    J.n = A->cols;
    for (int i = 0; i < 5; i++) J.op[i].share = -1;
    return J;
}
static void add(Job &J, const sg_mat *m, int64_t *iv, int dir, int clobber, int share, const char *name)
{
    Opnd &o = J.op[J.nop++];
    o.m = m;
    o.iv = iv;
    o.dir = dir;
    o.clobber = clobber;
    o.share = share;
    o.guarded = 0;
    o.name = name;
}

/* eigh: op0 A (becomes V), op1 W, op2 V (shares A's buffer) */
template <class T>
static sg_status c_eigh(Job &J, const Lane &L, int64_t nb, void *const *d, Bump &scr, int *dinfo, bool dry)
{
    cusolverEigMode_t jobz = present(J.op[2]) ? CUSOLVER_EIG_MODE_VECTOR : CUSOLVER_EIG_MODE_NOVECTOR;
    return eigh_run<T>(J.ctx, L, J.n, nb, jobz, (T *)d[0], (T *)d[1], scr, dinfo, dry);
}

sg_status sg_cuda_eigh(sg_ctx *ctx, const sg_mat *A, sg_mat *W, sg_mat *V)
{
    SG_DEVICE_SCOPE(ctx);
    Job J = job(ctx, "eigh", A);
    add(J, A, NULL, DIR_IN, 1, -1, "A");
    add(J, W, NULL, DIR_OUT, 0, -1, "W");
    add(J, V, NULL, DIR_OUT, 0, 0, "V");
    J.max_nb = solver_max_nb(J.n);
    J.fn = J.dt == SG_F32 ? c_eigh<float> : c_eigh<double>;
    return run_job(J);
}

/* svd: op0 A, op1 S, op2 U, op3 V */
template <class T>
static sg_status c_svd(Job &J, const Lane &L, int64_t nb, void *const *d, Bump &scr, int *dinfo, bool dry)
{
    int64_t m = J.m, n = J.n, k = m < n ? m : n;
    bool vec = present(J.op[2]);
    return svd_run<T>(J.ctx, L, m, n, nb, vec ? (J.full ? m : k) : 0, vec ? (J.full ? n : k) : 0, (T *)d[0], (T *)d[1],
                      (T *)d[2], (T *)d[3], scr, dinfo, dry);
}

sg_status sg_cuda_svd(sg_ctx *ctx, const sg_mat *A, int full, sg_mat *S, sg_mat *U, sg_mat *V)
{
    SG_DEVICE_SCOPE(ctx);
    Job J = job(ctx, "svd", A);
    J.full = full;
    add(J, A, NULL, DIR_IN, 1, -1, "A");
    add(J, S, NULL, DIR_OUT, 0, -1, "S");
    add(J, U, NULL, DIR_OUT, 0, -1, "U");
    add(J, V, NULL, DIR_OUT, 0, -1, "V");
    J.max_nb = svd_max_nb(J.m, J.n);
    J.fn = J.dt == SG_F32 ? c_svd<float> : c_svd<double>;
    return run_job(J);
}

/* Shared by rank/nullspace/project/lstsq: SVD into scratch, then rank per matrix. */
template <class T> struct Spec {
    T *S, *U, *V;
    int64_t *rank;
};
template <class T>
static sg_status spectral(Job &J, const Lane &L, int64_t nb, T *A, int64_t ucols, int64_t vcols, Bump &scr, int *dinfo,
                          bool dry, Spec<T> *sp, int64_t *rank_out, int64_t *nullity_out)
{
    sg_ctx *ctx = J.ctx;
    int64_t m = J.m, n = J.n, k = m < n ? m : n;
    sp->S = (T *)scr.take(sizeof(T) * (size_t)(k * nb));
    sp->U = ucols ? (T *)scr.take(sizeof(T) * (size_t)(m * ucols * nb)) : NULL;
    sp->V = vcols ? (T *)scr.take(sizeof(T) * (size_t)(n * vcols * nb)) : NULL;
    sp->rank = (int64_t *)scr.take(sizeof(int64_t) * (size_t)nb);
    sg_tols t = J.tol;
    double *dtol = t.atols || t.rtols ? (double *)scr.take(2 * sizeof(double) * (size_t)nb) : NULL;
    /* per-matrix tolerances: this chunk's slice of the caller's host arrays (pageable: a few bytes per
       matrix, so no pinned staging), queued before the solver: a pageable copy may wait for the stream's
       earlier work, which is then only this chunk's input copies, not its SVD */
    if (t.atols && !dry) {
        CU_TRY(ctx, cudaMemcpyAsync(dtol, t.atols + J.b0, sizeof(double) * (size_t)nb, cudaMemcpyHostToDevice, L.s));
        t.atols = dtol;
    }
    if (t.rtols && !dry) {
        CU_TRY(ctx, cudaMemcpyAsync(dtol + nb, t.rtols + J.b0, sizeof(double) * (size_t)nb, cudaMemcpyHostToDevice, L.s));
        t.rtols = dtol + nb;
    }
    sg_status s = svd_run<T>(ctx, L, m, n, nb, ucols, vcols, A, sp->S, sp->U, sp->V, scr, dinfo, dry);
    if (s != SG_OK || dry) return s;
    k_rank<T><<<(unsigned)((nb + 127) / 128), 128, 0, L.s>>>(sp->S, k, nb, t, (long long)(m > n ? m : n), sg_eps(J.dt),
                                                            n, sp->rank, nullity_out);
    CU_LAUNCH_CHECK(ctx);
    if (rank_out) CU_TRY(ctx, cudaMemcpyAsync(rank_out, sp->rank, sizeof(int64_t) * (size_t)nb, cudaMemcpyDeviceToDevice, L.s));
    return SG_OK;
}

/* rank: op0 A, op1 rank (int64) */
template <class T>
static sg_status c_rank(Job &J, const Lane &L, int64_t nb, void *const *d, Bump &scr, int *dinfo, bool dry)
{
    Spec<T> sp;
    return spectral<T>(J, L, nb, (T *)d[0], 0, 0, scr, dinfo, dry, &sp, (int64_t *)d[1], NULL);
}

sg_status sg_cuda_rank(sg_ctx *ctx, const sg_mat *A, const sg_tols *tol, int64_t *rank)
{
    SG_DEVICE_SCOPE(ctx);
    Job J = job(ctx, "rank", A);
    J.tol = *tol;
    add(J, A, NULL, DIR_IN, 1, -1, "A");
    add(J, NULL, rank, DIR_OUT, 0, -1, "rank");
    J.max_nb = svd_max_nb(J.m, J.n);
    J.fn = J.dt == SG_F32 ? c_rank<float> : c_rank<double>;
    return run_job(J);
}

/* nullspace: op0 A, op1 N, op2 nullity (optional) */
template <class T>
static sg_status c_null(Job &J, const Lane &L, int64_t nb, void *const *d, Bump &scr, int *dinfo, bool dry)
{
    Spec<T> sp;
    sg_status s = spectral<T>(J, L, nb, (T *)d[0], 0, J.n, scr, dinfo, dry, &sp, NULL, (int64_t *)d[2]);
    if (s != SG_OK || dry) return s;
    k_null_gather<T><<<(unsigned)grid_for(J.ctx, J.n * J.n * nb), SG_BLOCK, 0, L.s>>>(sp.V, sp.rank, (T *)d[1], J.n, nb);
    CU_LAUNCH_CHECK(J.ctx);
    return SG_OK;
}

sg_status sg_cuda_nullspace(sg_ctx *ctx, const sg_mat *A, const sg_tols *tol, sg_mat *N, int64_t *nullity)
{
    SG_DEVICE_SCOPE(ctx);
    Job J = job(ctx, "nullspace", A);
    J.tol = *tol;
    add(J, A, NULL, DIR_IN, 1, -1, "A");
    add(J, N, NULL, DIR_OUT, 0, -1, "N");
    add(J, NULL, nullity, DIR_OUT, 0, -1, "nullity");
    J.max_nb = svd_max_nb(J.m, J.n);
    J.fn = J.dt == SG_F32 ? c_null<float> : c_null<double>;
    return run_job(J);
}

/* project: op0 A, op1 X, op2 Y */
template <class T>
static sg_status c_project(Job &J, const Lane &L, int64_t nb, void *const *d, Bump &scr, int *dinfo, bool dry)
{
    Spec<T> sp;
    sg_status s = spectral<T>(J, L, nb, (T *)d[0], 0, J.n, scr, dinfo, dry, &sp, NULL, NULL);
    if (s != SG_OK || dry) return s;
    size_t smem = project_smem<T>(J.n);
    if ((s = smem_fit(J.ctx, (const void *)k_project<T>, smem, "project")) != SG_OK) return s;
    k_project<T><<<(unsigned)nb, SG_BLOCK, smem, L.s>>>(sp.V, sp.rank, (const T *)d[1], (T *)d[2], J.n,
                                                        J.op[1].m->cols, J.which == SG_PROJ_ROW,
                                                        J.ctx->check_finite != 0, dinfo);
    CU_LAUNCH_CHECK(J.ctx);
    return SG_OK;
}

sg_status sg_cuda_project(sg_ctx *ctx, const sg_mat *A, const sg_mat *X, sg_proj which, const sg_tols *tol,
                          sg_mat *Y)
{
    SG_DEVICE_SCOPE(ctx);
    Job J = job(ctx, "project", A);
    J.tol = *tol;
    J.which = (int)which;
    add(J, A, NULL, DIR_IN, 1, -1, "A");
    add(J, X, NULL, DIR_IN, 0, -1, "X");
    add(J, Y, NULL, DIR_OUT, 0, -1, "Y");
    J.max_nb = svd_max_nb(J.m, J.n);
    J.fn = J.dt == SG_F32 ? c_project<float> : c_project<double>;
    return run_job(J);
}

/* project_basis: op0 Q, op1 X, op2 Y (no solver: info is only the kernels' SG_PROJ_OVER) */
template <class T>
static sg_status c_project_basis(Job &J, const Lane &L, int64_t nb, void *const *d, Bump &scr, int *dinfo, bool dry)
{
    (void)scr;
    int64_t n = J.m, q = J.n, kx = J.op[1].m->cols, g, kc;
    size_t smem;
    int tile = project_basis_plan<T>(n, q, kx, sg_cu(J.ctx)->prop.sharedMemPerBlockOptin, &g, &kc, &smem);
    const void *kern = tile ? (const void *)k_project_basis_tile<T> : (const void *)k_project_basis_one<T>;
    sg_status s = smem_fit(J.ctx, kern, smem, "project_basis");
    if (s != SG_OK || dry) return s;
    const T *Q = (const T *)d[0], *X = (const T *)d[1];
    T *Y = (T *)d[2];
    const unsigned long long *skip;
    const int nskip = sg_cuda_finite_guard(J.ctx, &skip); /* Y may be user memory (Opnd::guarded) */
    const int chk = J.ctx->check_finite != 0;
    if (tile)
        k_project_basis_tile<T><<<(unsigned)((nb + g - 1) / g), SG_BLOCK, smem, L.s>>>(Q, X, Y, n, q, kx, nb, g, kc,
                                                                                         J.which, skip, nskip, chk, dinfo);
    else
        k_project_basis_one<T><<<(unsigned)nb, SG_BLOCK, smem, L.s>>>(Q, X, Y, n, q, kx, J.which, skip, nskip, chk,
                                                                       dinfo);
    CU_LAUNCH_CHECK(J.ctx);
    return SG_OK;
}

sg_status sg_cuda_project_basis(sg_ctx *ctx, const sg_mat *Q, const sg_mat *X, int complement, sg_mat *Y)
{
    SG_DEVICE_SCOPE(ctx);
    Job J = job(ctx, "project_basis", Q);
    J.which = complement;
    add(J, Q, NULL, DIR_IN, 0, -1, "Q");
    add(J, X, NULL, DIR_IN, 0, -1, "X");
    add(J, Y, NULL, DIR_OUT, 0, -1, "Y");
    J.op[2].guarded = 1; /* a dense Y is written in place: one pass over HBM less than staging it */
    J.max_nb = (int64_t)1 << 30; /* grid size; memory decides the chunk */
    J.fn = J.dt == SG_F32 ? c_project_basis<float> : c_project_basis<double>;
    return run_job(J);
}

/* lstsq: op0 A, op1 B, op2 X, op3 rank (optional) */
template <class T>
static sg_status c_lstsq(Job &J, const Lane &L, int64_t nb, void *const *d, Bump &scr, int *dinfo, bool dry)
{
    Spec<T> sp;
    int64_t m = J.m, n = J.n, k = m < n ? m : n;
    sg_status s = spectral<T>(J, L, nb, (T *)d[0], k, k, scr, dinfo, dry, &sp, (int64_t *)d[3], NULL);
    if (s != SG_OK || dry) return s;
    size_t smem = lstsq_smem<T>(k);
    if ((s = smem_fit(J.ctx, (const void *)k_lstsq<T>, smem, "lstsq")) != SG_OK) return s;
    k_lstsq<T><<<(unsigned)nb, SG_BLOCK, smem, L.s>>>(sp.U, sp.S, sp.V, sp.rank, (const T *)d[1], (T *)d[2], m, n, k,
                                                      J.op[1].m->cols, J.ctx->check_finite != 0, dinfo);
    CU_LAUNCH_CHECK(J.ctx);
    return SG_OK;
}

sg_status sg_cuda_lstsq(sg_ctx *ctx, const sg_mat *A, const sg_mat *B, const sg_tols *tol, sg_mat *X,
                        int64_t *rank)
{
    SG_DEVICE_SCOPE(ctx);
    Job J = job(ctx, "lstsq", A);
    J.tol = *tol;
    add(J, A, NULL, DIR_IN, 1, -1, "A");
    add(J, B, NULL, DIR_IN, 0, -1, "B");
    add(J, X, NULL, DIR_OUT, 0, -1, "X");
    add(J, NULL, rank, DIR_OUT, 0, -1, "rank");
    J.max_nb = svd_max_nb(J.m, J.n);
    J.fn = J.dt == SG_F32 ? c_lstsq<float> : c_lstsq<double>;
    return run_job(J);
}

/* ---- NaN/Inf scan of device batches ------------------------------------------------------------ */
/* One flag per operand, one copy back and one synchronisation for all of them (the scans, one
   synchronisation each, were 62 % of eigh_backward at n = 8 on an H200). The first operand, in argument
   order, with a non-finite element is reported, at its first element. The flags live in the context
   (device and pinned host, 8 each, allocated at the first scan), so a scan allocates nothing. */
enum { FINITE_GROUP = SG_FINITE_MAX };
sg_status sg_cuda_finite_queue(sg_ctx *ctx, const sg_mat *const *m, const char *const *names, int count)
{
    sg_cuda_state *cs = sg_cu(ctx);
    sg_status s = sg_cuda_bind_stream(ctx);
    if (s != SG_OK) return s;
    if (count > FINITE_GROUP)
        return sg_fail(ctx, SG_ERR_ARG, -1, "finite check: %d operands (at most %d per scan)", count, FINITE_GROUP);
    if (!cs->fin_d) {
        CU_TRY(ctx, cudaMalloc((void **)&cs->fin_d, sizeof *cs->fin_d * FINITE_GROUP));
        if (cudaHostAlloc((void **)&cs->fin_h, sizeof *cs->fin_h * FINITE_GROUP, cudaHostAllocDefault) != cudaSuccess) {
            (void)cudaGetLastError();
            cudaFree(cs->fin_d);
            cs->fin_d = NULL, cs->fin_h = NULL;
            return sg_fail(ctx, SG_ERR_ALLOC, -1, "finite check: %zu bytes of pinned host memory",
                           sizeof *cs->fin_h * FINITE_GROUP);
        }
    }
    cudaStream_t st = cs->stream;
    CU_TRY(ctx, cudaMemsetAsync(cs->fin_d, 0xff, sizeof *cs->fin_d * (size_t)count, st));
    for (int k = 0; k < count; k++) {
        const sg_mat *x = m[k];
        int64_t total = x->rows * x->cols * x->batch;
        cs->fin_m[k] = x, cs->fin_names[k] = names[k];
        if (total == 0) continue;
        if (x->dtype == SG_F32)
            k_nonfinite<float><<<(unsigned)grid_for(ctx, total), SG_BLOCK, 0, st>>>((const float *)x->data, x->ld,
                                                                                   sg_stride_of(x), x->rows, x->cols,
                                                                                   x->batch, cs->fin_d + k);
        else
            k_nonfinite<double><<<(unsigned)grid_for(ctx, total), SG_BLOCK, 0, st>>>((const double *)x->data, x->ld,
                                                                                    sg_stride_of(x), x->rows, x->cols,
                                                                                    x->batch, cs->fin_d + k);
        CU_LAUNCH_CHECK(ctx);
    }
    cs->fin_count = count;
    cs->fin_pending = 1;
    sg_prof_mark("finite_queue");
    return SG_OK;
}

sg_status sg_cuda_finite_fetch(sg_ctx *ctx)
{
    sg_cuda_state *cs = sg_cu(ctx);
    if (cs->fin_pending == 1) {
        CU_TRY(ctx, cudaMemcpyAsync(cs->fin_h, cs->fin_d, sizeof *cs->fin_d * (size_t)cs->fin_count,
                                    cudaMemcpyDeviceToHost, cs->stream));
        cs->fin_pending = 2;
    }
    return SG_OK;
}

sg_status sg_cuda_finite_settle(sg_ctx *ctx)
{
    sg_cuda_state *cs = sg_cu(ctx);
    if (!cs->fin_pending) return SG_OK;
    sg_status s = sg_cuda_finite_fetch(ctx);
    if (s != SG_OK) return s;
    CU_TRY(ctx, cudaStreamSynchronize(cs->stream));
    sg_prof_mark("finite_wait");
    return sg_cuda_finite_report(ctx);
}

sg_status sg_cuda_finite_report(sg_ctx *ctx)
{
    sg_cuda_state *cs = sg_cu(ctx);
    if (cs->fin_pending != 2) return SG_OK;
    cs->fin_pending = 0;
    sg_status s = SG_OK;
    const int count = cs->fin_count;
    for (int k = 0; k < count; k++) {
        if (cs->fin_h[k] == ~0ull) continue;
        const sg_mat *x = cs->fin_m[k];
        int64_t per = x->rows * x->cols, e = (int64_t)cs->fin_h[k], b = e / per, j = (e % per) / x->rows, i = e % x->rows;
        size_t es = sg_dtype_size(x->dtype);
        double v = 0;
        unsigned char raw[8];
        /* read the element back only to say whether it is NaN or Inf, like the host check */
        CUDA(cudaMemcpy(raw, (const char *)x->data + es * (size_t)(b * sg_stride_of(x) + i + j * x->ld), es,
                        cudaMemcpyDeviceToHost));
        if (es == 4) {
            float f;
            memcpy(&f, raw, 4);
            v = f;
        } else {
            memcpy(&v, raw, 8);
        }
        return sg_fail(ctx, SG_ERR_NONFINITE, b, "%s: %s at element (%lld,%lld) (matrix %lld)", cs->fin_names[k],
                       isnan(v) ? "NaN" : "Inf", (long long)i, (long long)j, (long long)b); /* the front-end's wording */
    }
out:
    return s;
}

sg_status sg_cuda_check_finite_all(sg_ctx *ctx, const sg_mat *const *m, const char *const *names, int count)
{
    SG_DEVICE_SCOPE(ctx);
    for (int g = 0; g < count; g += FINITE_GROUP) {
        sg_status s = sg_cuda_finite_queue(ctx, m + g, names + g, count - g < FINITE_GROUP ? count - g : FINITE_GROUP);
        if (s == SG_OK) s = sg_cuda_finite_settle(ctx);
        if (s != SG_OK) {
            sg_cuda_finite_drop(ctx);
            return s;
        }
    }
    return SG_OK;
}

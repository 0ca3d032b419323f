/* CPU backend (LAPACKE + OpenBLAS, OpenMP over the batch): the reference for every op. */
#ifndef SG_CPU_H
#define SG_CPU_H
#include "internal.h"

#include <limits.h>
#include <omp.h>

/* Progress over one parallel batch loop (sg_set_progress): sg_tick first in the loop body. Only the calling
   thread (OpenMP's thread 0 of the loop's team) counts and reports: its own matrices begun before, times the
   team size, estimate the batch's (exact on one thread). No shared counter: the other threads would contend
   on it once per matrix, which costs more than a 3×3 eigh on many cores, and the Python binding sets a
   callback for every context. Large batches time-check every 16th matrix. Once the callback asks to stop,
   every thread skips its remaining matrices. A no-op without a callback. */
typedef struct {
    sg_ctx *ctx;
    int64_t n;
    _Alignas(64) int64_t begun0; /* thread 0's, on its own cache line: the others read ctx and n */
} sg_ticker;
#define SG_TICK_INIT(ctx_, n_) {(ctx_), (n_), 0}
/* Share of the call given to the decomposition when an op makes a second pass over the batch with it */
#define SG_DECOMP_SHARE 0.8
static inline int sg_tick(sg_ticker *t) /* 1: the call was cancelled, skip this matrix */
{
    if (!t->ctx->prog_fn) return 0;
    if (omp_get_thread_num() == 0) {
        const int64_t k = t->begun0++;
        if (t->n <= 4096 || (k & 15) == 0) {
            const double f = (double)k * omp_get_num_threads() / (double)t->n;
            sg_progress(t->ctx, f < 1 ? f : 1);
        }
    }
    return sg_cancelled(t->ctx);
}

/* BLAS and LAPACKE take int sizes and leading dimensions: v must fit, else SG_ERR_UNSUPPORTED naming it. */
static inline int sg_int_fits(sg_ctx *ctx, int64_t v, const char *what)
{
    if (v <= INT_MAX) return 1;
    sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "%s = %lld exceeds the 32-bit BLAS/LAPACK integer range", what, (long long)v);
    return 0;
}

/* OpenBLAS's own threads inside our parallel batch loop oversubscribe the cores, and for small matrices
   they cost more than they give even alone (2 cores, 2026-11-30: eigh backward f64 n = 128 ×1e3 536 ms with
   them vs 151 ms without; eigh f64 n = 8 ×1e4 on one thread 69 vs 49 ms). One BLAS thread while several
   matrices run at once (nt > 1), when the user asked for one thread, or for small matrices; else BLAS keeps
   its threads (one large matrix). Returns what to pass to sg_blas_single_end (-1: untouched). The setting
   is process-global: concurrent calls from several user threads share one single-thread section (saved by
   the first to enter, restored by the last to leave). (src/cpu_linalg.c) */
int sg_blas_single_begin(const sg_ctx *ctx, int nt, int small);
void sg_blas_single_end(int saved);

/* src/cpu_linalg.c */
sg_status sg_cpu_eigh(sg_ctx *, const sg_mat *A, sg_mat *W, sg_mat *V);
sg_status sg_cpu_svd(sg_ctx *, const sg_mat *A, int full, sg_mat *S, sg_mat *U, sg_mat *V);
sg_status sg_cpu_rank(sg_ctx *, const sg_mat *A, const sg_tols *tol, int64_t *rank);
sg_status sg_cpu_nullspace(sg_ctx *, const sg_mat *A, const sg_tols *tol, sg_mat *N, int64_t *nullity);
sg_status sg_cpu_project(sg_ctx *, const sg_mat *A, const sg_mat *X, sg_proj which, const sg_tols *tol, sg_mat *Y);
sg_status sg_cpu_project_basis(sg_ctx *, const sg_mat *Q, const sg_mat *X, int complement, sg_mat *Y);
sg_status sg_cpu_lstsq(sg_ctx *, const sg_mat *A, const sg_mat *B, const sg_tols *tol, sg_mat *X,
                       int64_t *rank);
/* src/cpu_grad.c */
sg_status sg_cpu_eigh_backward(sg_ctx *, const sg_mat *W, const sg_mat *V, const sg_mat *gW, const sg_mat *gV,
                               sg_degen mode, double param, sg_mat *gA);
sg_status sg_cpu_svd_backward(sg_ctx *, const sg_mat *U, const sg_mat *S, const sg_mat *V, const sg_mat *gU,
                              const sg_mat *gS, const sg_mat *gV, sg_degen mode, double param, sg_mat *gA);
sg_status sg_cpu_matfunc(sg_ctx *, const sg_mat *A, const sg_fn *fn, sg_mat *F, sg_mat *W, sg_mat *V);
sg_status sg_cpu_matfunc_backward(sg_ctx *, const sg_mat *W, const sg_mat *V, const sg_fn *fn, const sg_mat *gF,
                                  sg_mat *gA);
sg_status sg_cpu_regularizer(sg_ctx *, sg_reg kind, const sg_mat *A, const sg_fn *fn, sg_mat *loss, sg_mat *gA);
#endif

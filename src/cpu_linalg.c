/* CPU decompositions (LAPACKE + OpenBLAS, OpenMP over the batch): eigh, svd, rank, nullspace, project,
   lstsq. The reference every other backend and the gradients are tested against.
   Per call: one workspace query, one allocation of nthreads slices, then each thread copies its matrix
   into its slice (inputs are const, and LAPACK overwrites) and writes results through ld/stride. */
#include "cpu.h"

#include <cblas.h>
#include <float.h>
#include <lapacke.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* OpenBLAS thread control: sg_blas_single_begin (cpu.h says when and why). */
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);

static size_t sg_al(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

/* LAPACK returns lwork as a floating value; float can round it down, so add a margin. */
static lapack_int sg_lwork(double q)
{
    double l = q * (1 + 1e-6) + 1;
    return l > (double)INT_MAX ? INT_MAX : (lapack_int)l;
}

/* ---- batch parallelism ----------------------------------------------------------------------- */
/* The setting is process-global, so calls from several user threads share it: the first to enter saves
   the count and sets 1, the last to leave restores it. A save/restore per call let one call's restore land
   while another call was still in its batch loop, which then ran OpenBLAS's threads under its own
   (reliability::blas_thread_count_is_one_inside_concurrent_calls). */
static pthread_mutex_t sg_blas_mu = PTHREAD_MUTEX_INITIALIZER;
static int sg_blas_depth, sg_blas_saved;

/* ---- fork: GNU OpenMP keeps a thread's pool in the parent, so a team in a forked child waits forever for
   threads that do not exist there (multiprocessing's default start method). Whoever started the pool (we,
   torch, the user's own OpenMP: one libgomp per process) cannot be told from here, so every call in a
   forked child runs on one thread (OpenBLAS's own threads, fork-safe, still serve one large matrix). The
   BLAS section's mutex is held across fork(), so the child gets a consistent depth and saved count: a call
   of another thread cut by the fork leaves its count to restore (no BLAS call in a fork handler: the next
   call does it). */
static int sg_fork_serial, sg_blas_orphan; /* orphan > 0: the count a call cut by the fork never restored */

static void sg_fork_prepare(void) { pthread_mutex_lock(&sg_blas_mu); }
static void sg_fork_parent(void) { pthread_mutex_unlock(&sg_blas_mu); }
static void sg_fork_child(void)
{
    sg_fork_serial = 1;
    if (sg_blas_depth > 0) sg_blas_orphan = sg_blas_saved;
    sg_blas_depth = 0;
    pthread_mutex_unlock(&sg_blas_mu);
}

__attribute__((constructor)) static void sg_fork_register(void)
{
    pthread_atfork(sg_fork_prepare, sg_fork_parent, sg_fork_child);
}

int sg_cpu_threads(const sg_ctx *ctx, int64_t batch)
{
    if (sg_fork_serial) return 1;
    int nt = ctx->threads > 0 ? ctx->threads : omp_get_max_threads();
    if ((int64_t)nt > batch) nt = (int)batch;
    return nt < 1 ? 1 : nt;
}

int sg_blas_single_begin(const sg_ctx *ctx, int nt, int small)
{
    if (__atomic_load_n(&sg_blas_orphan, __ATOMIC_RELAXED)) { /* only in a forked child, once */
        pthread_mutex_lock(&sg_blas_mu);
        if (sg_blas_orphan > 1 && sg_blas_depth == 0) openblas_set_num_threads(sg_blas_orphan);
        if (sg_blas_depth == 0) __atomic_store_n(&sg_blas_orphan, 0, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&sg_blas_mu);
    }
    if (nt <= 1 && !small && ctx->threads != 1) return -1;
    pthread_mutex_lock(&sg_blas_mu);
    if (sg_blas_depth++ == 0) {
        sg_blas_saved = openblas_get_num_threads();
        if (sg_blas_saved != 1) openblas_set_num_threads(1);
    }
    pthread_mutex_unlock(&sg_blas_mu);
    return 1;
}

void sg_blas_single_end(int entered)
{
    if (entered < 0) return;
    pthread_mutex_lock(&sg_blas_mu);
    if (--sg_blas_depth == 0 && sg_blas_saved > 1) openblas_set_num_threads(sg_blas_saved);
    pthread_mutex_unlock(&sg_blas_mu);
}

typedef struct {
    int nt, chunk, blas_saved; /* blas_saved < 0: untouched */
    size_t per;
    char *ws;
} sg_par;

static sg_status sg_par_begin(sg_ctx *ctx, int64_t batch, size_t per, int small, sg_par *p)
{
    const int nt = sg_cpu_threads(ctx, batch);
    p->nt = nt;
    p->chunk = small ? 8 : 1; /* dynamic scheduling in small chunks: LAPACK time varies per matrix */
    p->per = sg_al(per);
    p->blas_saved = -1;
    p->ws = p->per && (size_t)nt <= SIZE_MAX / p->per ? malloc(p->per * (size_t)nt) : NULL;
    if (!p->ws)
        return sg_fail(ctx, SG_ERR_ALLOC, -1, "cpu: cannot allocate %d×%zu bytes of workspace", nt, p->per);
    p->blas_saved = sg_blas_single_begin(ctx, nt, small);
    return SG_OK;
}

static void sg_par_end(sg_par *p)
{
    sg_blas_single_end(p->blas_saved);
    free(p->ws);
    p->ws = NULL;
}

/* ---- failures: keep the lowest failing batch index, so the report is deterministic under OpenMP -- */
typedef struct {
    int64_t idx;
    sg_status st;
    char msg[256];
} sg_fail_rec;

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static void sg_rec_fail(sg_fail_rec *f, int64_t b, sg_status st, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
#pragma omp critical(sg_cpu_linalg_fail)
    if (f->idx < 0 || b < f->idx) {
        f->idx = b;
        f->st = st;
        memcpy(f->msg, buf, sizeof buf);
    }
}

static sg_status sg_fail_finish(sg_ctx *ctx, const sg_fail_rec *f)
{
    return f->idx < 0 ? SG_OK : sg_fail(ctx, f->st, f->idx, "%s", f->msg);
}

/* ---- the two dtypes -------------------------------------------------------------------------- */
/* What a NaN/Inf result of a successful LAPACK call on finite input says (src/cpu_linalg_impl.h). */
#define SG_BLAS_FAULT "a BLAS/LAPACK fault (a broken kernel for this CPU? with OpenBLAS, OPENBLAS_CORETYPE picks another)"

#define T float
#define FN(x) x##_s
#define LP(x) LAPACKE_s##x
#define CB(x) cblas_s##x
#define SG_T SG_F32
#define PFX "s"
#define SG_TNAME "float32"
#include "cpu_linalg_impl.h"
#undef T
#undef FN
#undef LP
#undef CB
#undef SG_T
#undef PFX
#undef SG_TNAME

#define T double
#define FN(x) x##_d
#define LP(x) LAPACKE_d##x
#define CB(x) cblas_d##x
#define SG_T SG_F64
#define PFX "d"
#define SG_TNAME "float64"
#include "cpu_linalg_impl.h"
#undef T
#undef FN
#undef LP
#undef CB
#undef SG_T
#undef PFX
#undef SG_TNAME

/* ---- entry points (arguments validated by the front-end) --------------------------------------- */
sg_status sg_cpu_eigh(sg_ctx *ctx, const sg_mat *A, sg_mat *W, sg_mat *V)
{
    return A->dtype == SG_F32 ? eigh_s(ctx, A, W, V) : eigh_d(ctx, A, W, V);
}

sg_status sg_cpu_svd(sg_ctx *ctx, const sg_mat *A, int full, sg_mat *S, sg_mat *U, sg_mat *V)
{
    return A->dtype == SG_F32 ? svd_s(ctx, A, full, S, U, V) : svd_d(ctx, A, full, S, U, V);
}

sg_status sg_cpu_rank(sg_ctx *ctx, const sg_mat *A, const sg_tols *tol, int64_t *rank)
{
    return A->dtype == SG_F32 ? rank_s(ctx, A, tol, rank) : rank_d(ctx, A, tol, rank);
}

sg_status sg_cpu_nullspace(sg_ctx *ctx, const sg_mat *A, const sg_tols *tol, sg_mat *N, int64_t *nullity)
{
    return A->dtype == SG_F32 ? nullspace_s(ctx, A, tol, N, nullity)
                              : nullspace_d(ctx, A, tol, N, nullity);
}

sg_status sg_cpu_project(sg_ctx *ctx, const sg_mat *A, const sg_mat *X, sg_proj which, const sg_tols *tol,
                         sg_mat *Y)
{
    return A->dtype == SG_F32 ? project_s(ctx, A, X, which, tol, Y) : project_d(ctx, A, X, which, tol, Y);
}

sg_status sg_cpu_project_basis(sg_ctx *ctx, const sg_mat *Q, const sg_mat *X, int complement, sg_mat *Y)
{
    return Q->dtype == SG_F32 ? project_basis_s(ctx, Q, X, complement, Y) : project_basis_d(ctx, Q, X, complement, Y);
}

sg_status sg_cpu_lstsq(sg_ctx *ctx, const sg_mat *A, const sg_mat *B, const sg_tols *tol, sg_mat *X,
                       int64_t *rank)
{
    return A->dtype == SG_F32 ? lstsq_s(ctx, A, B, tol, X, rank) : lstsq_d(ctx, A, B, tol, X, rank);
}

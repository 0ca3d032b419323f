/* CPU reference gradients (cblas + OpenMP over the batch): eigh/SVD backward with degeneracy modes,
   matrix functions f(A) = V f(Λ) Vᵀ and their Daleckii–Krein backward, spectral regularizers.
   The dtype-generic bodies live in cpu_grad_impl.h (included once per dtype); this file holds the
   dtype-free helpers and the dispatch. Formulas come from formulas.h so CUDA rounds the same way. */
#include "cpu.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- batch parallelism and failure recording ---------------------------------------------------
   Each op allocates one workspace slice per thread up front (so allocation failure is a clean
   SG_ERR_ALLOC before anything is written) and records the lowest failing batch index. */
typedef struct {
    int64_t index;
    sg_status st;
    char msg[400];
} gfail;

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static void gfail_rec(gfail *f, int64_t b, sg_status st, const char *fmt, ...)
{
#pragma omp critical(sg_cpu_grad_fail)
    if (f->index < 0 || b < f->index) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(f->msg, sizeof f->msg, fmt, ap);
        va_end(ap);
        f->index = b;
        f->st = st;
    }
}

static sg_status gfail_finish(sg_ctx *ctx, const gfail *f)
{
    return f->index < 0 ? SG_OK : sg_fail(ctx, f->st, f->index, "%s", f->msg);
}


static const char *mode_name(sg_degen m)
{
    static const char *nm[] = {"exact", "mask", "lorentz", "taylor"};
    return m >= SG_DEGEN_EXACT && m <= SG_DEGEN_TAYLOR ? nm[m] : "?";
}

/* ---- scalar functions: built-ins from formulas.h, or the user's callback (evaluated in double) --- */
static const char *fn_name(const sg_fn *fn)
{
    static const char *nm[] = {"sqrt", "log", "exp", "pow", "callback"};
    return fn->kind >= SG_FN_SQRT && fn->kind <= SG_FN_CALLBACK ? nm[fn->kind] : "?";
}

static double fn_val(const sg_fn *fn, double x)
{
    return fn->kind == SG_FN_CALLBACK ? fn->f(x, fn->user) : sg_fn_val((int)fn->kind, fn->p, x);
}

static double fn_der(const sg_fn *fn, double x)
{
    return fn->kind == SG_FN_CALLBACK ? fn->df(x, fn->user) : sg_fn_der((int)fn->kind, fn->p, x);
}

static int fn_dom(const sg_fn *fn, double x)
{
    return fn->kind == SG_FN_CALLBACK ? 1 : sg_fn_in_domain((int)fn->kind, fn->p, x);
}

/* sg_divdiff for any kind: the callback gets the same tie rule so both paths agree. */
static double fn_divdiff(const sg_fn *fn, double li, double lj)
{
    if (fn->kind != SG_FN_CALLBACK) return sg_divdiff((int)fn->kind, fn->p, li, lj, SG_DIVDIFF_REL);
    double d = li - lj, s = fmax(fabs(li), fabs(lj));
    if (fabs(d) <= SG_DIVDIFF_REL * (s > 0 ? s : 1.0)) return fn->df(0.5 * (li + lj), fn->user);
    return (fn->f(li, fn->user) - fn->f(lj, fn->user)) / d;
}

/* ---- one dtype at a time ---------------------------------------------------------------------- */
#define T float
#define FN(x) x##_s
#define CB(x) cblas_s##x
#define INVGAP sg_inv_gap_s
#define INVGAP_SQ sg_inv_gap_s_sq
#define SG_T SG_F32
#include "cpu_grad_impl.h"
#undef T
#undef FN
#undef CB
#undef INVGAP
#undef INVGAP_SQ
#undef SG_T

#define T double
#define FN(x) x##_d
#define CB(x) cblas_d##x
#define INVGAP sg_inv_gap_d
#define INVGAP_SQ sg_inv_gap_d_sq
#define SG_T SG_F64
#include "cpu_grad_impl.h"
#undef T
#undef FN
#undef CB
#undef INVGAP
#undef INVGAP_SQ
#undef SG_T

/* ---- dispatch: one BLAS thread around the batch loops (sg_blas_single_begin in cpu.h) ------------ */
#define WITH_BLAS1(batch, n, call)                                                                      \
    do {                                                                                                \
        int saved_ = sg_blas_single_begin(ctx, sg_cpu_threads(ctx, (batch)), (n) <= 32);                \
        sg_status s_ = (call);                                                                          \
        sg_blas_single_end(saved_);                                                                     \
        return s_;                                                                                      \
    } while (0)

sg_status sg_cpu_eigh_backward(sg_ctx *ctx, const sg_mat *W, const sg_mat *V, const sg_mat *gW, const sg_mat *gV,
                               sg_degen mode, double param, sg_mat *gA)
{
    WITH_BLAS1(V->batch, V->rows,
               V->dtype == SG_F32 ? eigh_bwd_s(ctx, W, V, gW, gV, mode, param, gA)
                                  : eigh_bwd_d(ctx, W, V, gW, gV, mode, param, gA));
}

sg_status sg_cpu_svd_backward(sg_ctx *ctx, const sg_mat *U, const sg_mat *S, const sg_mat *V, const sg_mat *gU,
                              const sg_mat *gS, const sg_mat *gV, sg_degen mode, double param, sg_mat *gA)
{
    WITH_BLAS1(gA->batch, gA->rows > gA->cols ? gA->rows : gA->cols,
               U->dtype == SG_F32 ? svd_bwd_s(ctx, U, S, V, gU, gS, gV, mode, param, gA)
                                  : svd_bwd_d(ctx, U, S, V, gU, gS, gV, mode, param, gA));
}

sg_status sg_cpu_matfunc(sg_ctx *ctx, const sg_mat *A, const sg_fn *fn, sg_mat *F, sg_mat *W, sg_mat *V)
{
    WITH_BLAS1(A->batch, A->rows, A->dtype == SG_F32 ? matfunc_s(ctx, A, fn, F, W, V) : matfunc_d(ctx, A, fn, F, W, V));
}

sg_status sg_cpu_matfunc_backward(sg_ctx *ctx, const sg_mat *W, const sg_mat *V, const sg_fn *fn, const sg_mat *gF,
                                  sg_mat *gA)
{
    WITH_BLAS1(V->batch, V->rows,
               V->dtype == SG_F32 ? matfunc_bwd_s(ctx, W, V, fn, gF, gA) : matfunc_bwd_d(ctx, W, V, fn, gF, gA));
}

sg_status sg_cpu_regularizer(sg_ctx *ctx, sg_reg kind, const sg_mat *A, const sg_fn *fn, sg_mat *loss, sg_mat *gA)
{
    WITH_BLAS1(A->batch, A->rows > A->cols ? A->rows : A->cols,
               A->dtype == SG_F32 ? reg_s(ctx, kind, A, fn, loss, gA) : reg_d(ctx, kind, A, fn, loss, gA));
}

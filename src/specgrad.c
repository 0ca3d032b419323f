/* Front-end: context, errors, argument validation, dispatch to the backend table. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int sg_version(void) { return SG_VERSION; }

/* ---- errors ---------------------------------------------------------------------------------- */
const char *sg_status_string(sg_status s)
{
    switch (s) {
    case SG_OK: return "ok";
    case SG_ERR_ARG: return "invalid argument";
    case SG_ERR_DTYPE: return "dtype mismatch";
    case SG_ERR_NONFINITE: return "NaN or Inf in input";
    case SG_ERR_NOCONV: return "solver did not converge";
    case SG_ERR_LAPACK: return "LAPACK error";
    case SG_ERR_ALLOC: return "host out of memory";
    case SG_ERR_NODEVICE: return "no usable CUDA device";
    case SG_ERR_CUDA: return "CUDA runtime error";
    case SG_ERR_CUSOLVER: return "cuSOLVER error";
    case SG_ERR_CUBLAS: return "cuBLAS error";
    case SG_ERR_DEVICE_OOM: return "device out of memory";
    case SG_ERR_UNSUPPORTED: return "unsupported on this backend";
    case SG_ERR_DEGENERATE: return "degenerate spectrum in exact gradient";
    case SG_ERR_DOMAIN: return "input outside the function's domain, or a result beyond the dtype's range";
    case SG_ERR_IO: return "I/O error";
    case SG_ERR_FORMAT: return "malformed file";
    case SG_ERR_CANCELLED: return "cancelled by the progress callback";
    }
    return "unknown status";
}

const char *sg_backend_name(sg_backend b)
{
    switch (b) {
    case SG_BACKEND_AUTO: return "auto";
    case SG_BACKEND_CPU: return "cpu";
    case SG_BACKEND_CUDA: return "cuda";
    }
    return "unknown";
}

sg_status sg_fail(sg_ctx *ctx, sg_status s, int64_t index, const char *fmt, ...)
{
    if (!ctx) return s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
    ctx->failed_index = index;
    return s;
}

void sg_clear_error(sg_ctx *ctx)
{
    ctx->err[0] = 0;
    ctx->failed_index = -1;
}

const char *sg_last_error(const sg_ctx *ctx) { return ctx ? ctx->err : "null context"; }
int64_t sg_failed_index(const sg_ctx *ctx) { return ctx ? ctx->failed_index : -1; }
sg_backend sg_get_backend(const sg_ctx *ctx) { return ctx ? ctx->backend : SG_BACKEND_AUTO; }

/* ---- context --------------------------------------------------------------------------------- */
/* Forks this process has been through (counted in each child). The CUDA runtime does not survive fork: a
   CUDA context created before one is refused in the child with a clear error instead of failing, or
   hanging, inside the driver, and its destruction there frees only its host-side state (cuda_destroy). */
static int sg_forks;
static void sg_count_fork(void) { sg_forks++; }
int sg_fork_count(void) { return sg_forks; }
__attribute__((constructor)) static void sg_fork_register(void) { pthread_atfork(NULL, NULL, sg_count_fork); }
static sg_status fork_check(sg_ctx *ctx) /* before anything that reaches the CUDA runtime */
{
    if (ctx->backend != SG_BACKEND_CUDA || ctx->forks == sg_forks) return SG_OK;
    return sg_fail(ctx, SG_ERR_CUDA, -1, "cuda: this context was created before fork() and CUDA does not survive "
                   "fork: use CUDA in a child started with spawn (multiprocessing's \"spawn\"), or the CPU backend");
}

sg_status sg_create(sg_ctx **out, sg_backend backend)
{
    if (!out) return SG_ERR_ARG;
    *out = NULL;
    if (backend != SG_BACKEND_AUTO && backend != SG_BACKEND_CPU && backend != SG_BACKEND_CUDA)
        return SG_ERR_ARG;
    sg_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return SG_ERR_ALLOC;
    ctx->check_finite = 1;
    ctx->cache_bytes = (size_t)1 << 30;
    ctx->failed_index = -1;
    ctx->forks = sg_forks;
    int is_auto = backend == SG_BACKEND_AUTO;
    if (is_auto) backend = sg_cuda_devices(NULL, 0) > 0 ? SG_BACKEND_CUDA : SG_BACKEND_CPU;
    ctx->backend = backend;
    ctx->ops = backend == SG_BACKEND_CUDA ? &sg_cuda_ops : &sg_cpu_ops;
    sg_status s = ctx->ops->init ? ctx->ops->init(ctx) : SG_OK;
    if (s != SG_OK && is_auto && backend == SG_BACKEND_CUDA) {
        /* AUTO promises a working context: a GPU this build cannot use (no kernels for its architecture,
           handle creation failed) falls back to the CPU */
        sg_clear_error(ctx);
        ctx->backend = SG_BACKEND_CPU;
        ctx->ops = &sg_cpu_ops;
        s = ctx->ops->init ? ctx->ops->init(ctx) : SG_OK;
    }
    if (s != SG_OK) {
        free(ctx);
        return s;
    }
    *out = ctx;
    return SG_OK;
}

void sg_destroy(sg_ctx *ctx)
{
    if (!ctx) return;
    if (ctx->ops && ctx->ops->destroy) ctx->ops->destroy(ctx); /* CUDA's knows about forks */
    free(ctx);
}

#define CTX_CHECK(ctx)                                                                                  \
    do {                                                                                                \
        if (!(ctx)) return SG_ERR_ARG;                                                                  \
        sg_clear_error(ctx);                                                                            \
    } while (0)

sg_status sg_set_memspace(sg_ctx *ctx, sg_memspace mem)
{
    CTX_CHECK(ctx);
    if (mem != SG_MEM_HOST && mem != SG_MEM_DEVICE) return sg_fail(ctx, SG_ERR_ARG, -1, "memspace: unknown value %d", (int)mem);
    if (mem == SG_MEM_DEVICE && ctx->backend != SG_BACKEND_CUDA)
        return sg_fail(ctx, SG_ERR_ARG, -1, "memspace: device pointers need the CUDA backend (context is %s)",
                       sg_backend_name(ctx->backend));
    ctx->mem = mem;
    return SG_OK;
}

sg_status sg_set_stream(sg_ctx *ctx, void *stream)
{
    CTX_CHECK(ctx);
    if (stream && ctx->backend != SG_BACKEND_CUDA)
        return sg_fail(ctx, SG_ERR_ARG, -1, "stream: a CUDA stream needs the CUDA backend");
    ctx->stream = stream;
    return SG_OK;
}

sg_status sg_set_jacobi(sg_ctx *ctx, double tol, int max_sweeps)
{
    CTX_CHECK(ctx);
    /* tol <= 0 (finite) selects the default; NaN and ±Inf are errors (+Inf would stop after 0 sweeps) */
    if (isnan(tol)) return sg_fail(ctx, SG_ERR_ARG, -1, "jacobi: tol is NaN (must be finite; tol <= 0 selects the default)");
    if (isinf(tol))
        return sg_fail(ctx, SG_ERR_ARG, -1, "jacobi: tol is %sInf (must be finite; tol <= 0 selects the default)",
                       tol < 0 ? "-" : "+");
    ctx->jacobi_tol = tol;
    ctx->jacobi_sweeps = max_sweeps;
    return SG_OK;
}

sg_status sg_set_threads(sg_ctx *ctx, int n)
{
    CTX_CHECK(ctx);
    ctx->threads = n;
    return SG_OK;
}

sg_status sg_set_check_finite(sg_ctx *ctx, int on)
{
    CTX_CHECK(ctx);
    ctx->check_finite = on != 0;
    return SG_OK;
}

sg_status sg_set_cache_bytes(sg_ctx *ctx, size_t bytes)
{
    CTX_CHECK(ctx);
    ctx->cache_bytes = bytes;
    if (fork_check(ctx) != SG_OK) return SG_ERR_CUDA;
    return ctx->ops->cache_apply ? ctx->ops->cache_apply(ctx) : SG_OK;
}

sg_status sg_cache_held(sg_ctx *ctx, size_t *bytes)
{
    CTX_CHECK(ctx);
    if (!bytes) return sg_fail(ctx, SG_ERR_ARG, -1, "sg_cache_held: bytes is NULL");
    *bytes = 0;
    if (fork_check(ctx) != SG_OK) return SG_ERR_CUDA;
    return ctx->ops->cache_held ? ctx->ops->cache_held(ctx, bytes) : SG_OK;
}

sg_status sg_set_chunk_bytes(sg_ctx *ctx, size_t bytes)
{
    CTX_CHECK(ctx);
    ctx->chunk_bytes = bytes;
    return SG_OK;
}

sg_status sg_set_progress(sg_ctx *ctx, sg_progress_fn fn, double every, void *user)
{
    CTX_CHECK(ctx);
    if (!(every >= 0)) return sg_fail(ctx, SG_ERR_ARG, -1, "sg_set_progress: every must be >= 0 seconds (got %g)", every);
    ctx->prog_fn = fn;
    ctx->prog_user = user;
    ctx->prog_every = every;
    return SG_OK;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void sg_progress(sg_ctx *ctx, double f)
{
    if (!ctx->prog_fn || ctx->prog_mute || ctx->prog_stop) return;
    double x = ctx->prog_lo + (ctx->prog_hi - ctx->prog_lo) * f;
    if (!(x > ctx->prog_last) || x >= 1) return; /* 1.0 is the front-end's, on success */
    double t = now_s();
    if (t - ctx->prog_last_t < ctx->prog_every) return;
    ctx->prog_last = x;
    ctx->prog_last_t = t;
    if (ctx->prog_fn(x, ctx->prog_user)) __atomic_store_n(&ctx->prog_stop, 1, __ATOMIC_RELAXED);
}

/* ---- validation ------------------------------------------------------------------------------ */
static int mul_ok(int64_t a, int64_t b, int64_t *r)
{
    if (a < 0 || b < 0) return 0;
    if (a && b > INT64_MAX / a) return 0;
    *r = a * b;
    return 1;
}

sg_status sg_check_mat(sg_ctx *ctx, const sg_mat *m, const char *name, sg_dtype dtype, int64_t batch,
                       int64_t rows, int64_t cols)
{
    if (!m) return sg_fail(ctx, SG_ERR_ARG, -1, "%s: null matrix descriptor", name);
    if (!m->data) return sg_fail(ctx, SG_ERR_ARG, -1, "%s: null data pointer", name);
    if (m->dtype != SG_F32 && m->dtype != SG_F64)
        return sg_fail(ctx, SG_ERR_DTYPE, -1, "%s: unknown dtype %d", name, (int)m->dtype);
    if (m->dtype != dtype)
        return sg_fail(ctx, SG_ERR_DTYPE, -1, "%s: dtype %s, expected %s", name, m->dtype == SG_F32 ? "f32" : "f64",
                       dtype == SG_F32 ? "f32" : "f64");
    if (m->batch <= 0 || m->rows <= 0 || m->cols <= 0)
        return sg_fail(ctx, SG_ERR_ARG, -1, "%s: sizes must be positive (batch %lld, %lld×%lld)", name,
                       (long long)m->batch, (long long)m->rows, (long long)m->cols);
    if (batch >= 0 && m->batch != batch)
        return sg_fail(ctx, SG_ERR_ARG, -1, "%s: batch %lld, expected %lld", name, (long long)m->batch, (long long)batch);
    if ((rows >= 0 && m->rows != rows) || (cols >= 0 && m->cols != cols))
        return sg_fail(ctx, SG_ERR_ARG, -1, "%s: shape %lld×%lld, expected %lld×%lld", name, (long long)m->rows,
                       (long long)m->cols, (long long)(rows >= 0 ? rows : m->rows),
                       (long long)(cols >= 0 ? cols : m->cols));
    if (m->ld < m->rows)
        return sg_fail(ctx, SG_ERR_ARG, -1, "%s: ld %lld < rows %lld", name, (long long)m->ld, (long long)m->rows);
    int64_t span, total, bytes;
    if (!mul_ok(m->ld, m->cols, &span))
        return sg_fail(ctx, SG_ERR_ARG, -1, "%s: ld·cols overflows", name);
    if (m->stride != 0 && m->stride < span)
        return sg_fail(ctx, SG_ERR_ARG, -1, "%s: batch stride %lld < ld·cols %lld (matrices would overlap)", name,
                       (long long)m->stride, (long long)span);
    if (!mul_ok(sg_stride_of(m), m->batch, &total) || !mul_ok(total, (int64_t)sg_dtype_size(m->dtype), &bytes))
        return sg_fail(ctx, SG_ERR_ARG, -1, "%s: batch·stride·sizeof overflows", name);
    return SG_OK;
}

/* Whether matrix b holds only finite values: a branch-free pass per column (omp simd: vectorized whatever
   the compiler's cost model; |x| <= max is false for NaN and ±Inf). */
static int mat_finite(const sg_mat *m, int64_t b)
{
    const int64_t st = sg_stride_of(m);
    int bad = 0;
    for (int64_t j = 0; j < m->cols; j++) {
        if (m->dtype == SG_F32) {
            const float *c = (const float *)m->data + b * st + j * m->ld;
#pragma omp simd reduction(| : bad)
            for (int64_t i = 0; i < m->rows; i++) bad |= !(fabsf(c[i]) <= FLT_MAX);
        } else {
            const double *c = (const double *)m->data + b * st + j * m->ld;
#pragma omp simd reduction(| : bad)
            for (int64_t i = 0; i < m->rows; i++) bad |= !(fabs(c[i]) <= DBL_MAX);
        }
    }
    return !bad;
}

/* The batch is scanned on the context's CPU threads (large batches: the compute after it runs on all of
   them, and a serial scan was up to a sixth of a small backward on one); the lowest failing matrix is then
   searched for its first bad element, so the report does not depend on the threads. */
sg_status sg_check_finite_host(sg_ctx *ctx, const sg_mat *m, const char *name)
{
    int64_t st = sg_stride_of(m), first = m->batch;
    const int nt = m->rows * m->cols * m->batch < ((int64_t)1 << 16) ? 1 : sg_cpu_threads(ctx, m->batch);
#pragma omp parallel for num_threads(nt) schedule(static) reduction(min : first)
    for (int64_t b = 0; b < m->batch; b++)
        if (b < first && !mat_finite(m, b)) first = b;
    const int64_t b = first;
    for (int64_t j = 0; b < m->batch && j < m->cols; j++)
        for (int64_t i = 0; i < m->rows; i++) {
            int64_t k = b * st + i + j * m->ld;
            double v = m->dtype == SG_F32 ? (double)((const float *)m->data)[k] : ((const double *)m->data)[k];
            if (!isfinite(v))
                return sg_fail(ctx, SG_ERR_NONFINITE, b, "%s: %s at element (%lld,%lld) (matrix %lld)", name,
                               isnan(v) ? "NaN" : "Inf", (long long)i, (long long)j, (long long)b);
        }
    return SG_OK;
}

/* Every op validates all of its descriptors and options first (sg_check_mat, option checks) and only then
   scans its host inputs for NaN/Inf: a mislabelled descriptor (wrong dtype, shape or ld) is reported as
   such before any element is read through it. */
static sg_status finite_in(sg_ctx *ctx, const sg_mat *m, const char *name)
{
    if (!m || !ctx->check_finite || ctx->mem != SG_MEM_HOST) return SG_OK; /* device data: backend checks */
    return sg_check_finite_host(ctx, m, name);
}

#define TRY(x)                                                                                          \
    do {                                                                                                \
        sg_status s_ = (x);                                                                             \
        if (s_ != SG_OK) return s_;                                                                     \
    } while (0)

static sg_status head(sg_ctx *ctx, const sg_mat *first, const char *name)
{
    if (!ctx) return SG_ERR_ARG;
    sg_clear_error(ctx);
    if (fork_check(ctx) != SG_OK) return SG_ERR_CUDA;
    if (!first) return sg_fail(ctx, SG_ERR_ARG, -1, "%s: null matrix descriptor", name);
    return SG_OK;
}

/* any rtol < 0 (also -inf) selects the default */
static int tol_ok(double atol, double rtol) { return !(isnan(atol) || isnan(rtol) || atol < 0 || isinf(atol) || (isinf(rtol) && rtol > 0)); }

/* The scalar pair, then each per-matrix element (A's batch of them), naming the first bad one. */
static sg_status check_tols(sg_ctx *ctx, const sg_tols *t, int64_t batch)
{
    if (ctx->ops->check_host_ptr) { /* read below: a device pointer would crash here */
        if (t->atols) TRY(ctx->ops->check_host_ptr(ctx, t->atols, "atol"));
        if (t->rtols) TRY(ctx->ops->check_host_ptr(ctx, t->rtols, "rtol"));
    }
    if (!tol_ok(t->atol, t->rtol))
        return sg_fail(ctx, SG_ERR_ARG, -1, "tolerance: atol must be finite and >= 0, rtol finite or < 0 (got %g, %g)",
                       t->atol, t->rtol);
    for (int64_t b = 0; (t->atols || t->rtols) && b < batch; b++) {
        double a = t->atols ? t->atols[b] : t->atol, r = t->rtols ? t->rtols[b] : t->rtol;
        if (!tol_ok(a, r))
            return sg_fail(ctx, SG_ERR_ARG, b,
                           "tolerance of matrix %lld: atol must be finite and >= 0, rtol finite or < 0 (got %g, %g)",
                           (long long)b, a, r);
    }
    return SG_OK;
}

static sg_status check_mode(sg_ctx *ctx, sg_degen mode, double param)
{
    if (mode < SG_DEGEN_EXACT || mode > SG_DEGEN_TAYLOR)
        return sg_fail(ctx, SG_ERR_ARG, -1, "degeneracy mode: unknown value %d", (int)mode);
    if (isnan(param) || isinf(param)) return sg_fail(ctx, SG_ERR_ARG, -1, "degeneracy param must be finite");
    return SG_OK;
}

static sg_status check_fn(sg_ctx *ctx, const sg_fn *fn)
{
    if (!fn) return sg_fail(ctx, SG_ERR_ARG, -1, "fn: null function descriptor");
    if (fn->kind < SG_FN_SQRT || fn->kind > SG_FN_CALLBACK)
        return sg_fail(ctx, SG_ERR_ARG, -1, "fn: unknown kind %d", (int)fn->kind);
    if (fn->kind == SG_FN_CALLBACK && (!fn->f || !fn->df))
        return sg_fail(ctx, SG_ERR_ARG, -1, "fn: callback needs both f and df");
    if (fn->kind == SG_FN_POW && !isfinite(fn->p)) return sg_fail(ctx, SG_ERR_ARG, -1, "fn: power p must be finite");
    return SG_OK;
}

/* ---- aliasing --------------------------------------------------------------------------------
   Outputs must not overlap one another or an input: the backends read inputs while writing outputs (the
   GPU's kernels read user memory in place), so an overlap gives backend- and schedule-dependent results.
   The exception is an op that works in place, where one output may be one input itself: the same data,
   ld, stride and shape. Overlap is decided per matrix (the bytes from its first to its last element), so
   interleaved records (matrix b of V followed by vector b of W) are fine. */
typedef struct {
    const char *name;
    const sg_mat *m;       /* a matrix operand (validated), or */
    const int64_t *iv;     /* 8-byte elements, nv of them: an int64 output (rank, nullity), double tolerances */
    int64_t nv;
    int in_place;          /* outputs: index of the input this one may be, −1: none */
} sg_arg;

typedef struct { uintptr_t base, step, len; int64_t count; } run_t; /* count intervals [base + i·step, +len) */

static run_t run_of(const sg_arg *a)
{
    run_t r;
    if (!a->m) {
        r.base = (uintptr_t)a->iv, r.step = 0, r.len = sizeof(int64_t) * (size_t)a->nv, r.count = 1;
        return r;
    }
    size_t e = sg_dtype_size(a->m->dtype);
    r.base = (uintptr_t)a->m->data, r.step = e * (size_t)sg_stride_of(a->m);
    r.len = e * (size_t)((a->m->cols - 1) * a->m->ld + a->m->rows), r.count = a->m->batch;
    return r;
}
static uintptr_t run_end(const run_t *r) { return r->base + (uintptr_t)(r->count - 1) * r->step + r->len; }

/* First index i ≥ i0 of r whose interval ends after address a. */
static int64_t past(const run_t *r, int64_t i0, uintptr_t a)
{
    if (r->base + (uintptr_t)i0 * r->step + r->len > a) return i0;
    if (r->count == 1) return 1;
    int64_t i = (int64_t)((a - r->base - r->len) / r->step) + 1; /* step > 0: count > 1 here */
    return i > i0 ? i : i0 + 1;
}

/* Some byte lies in an interval of both runs: sweep the two sorted runs, skipping ahead. */
static int runs_overlap(run_t x, run_t y)
{
    if (!(x.base < run_end(&y) && y.base < run_end(&x))) return 0;
    int64_t i = 0, j = 0;
    while (i < x.count && j < y.count) {
        uintptr_t xl = x.base + (uintptr_t)i * x.step, yl = y.base + (uintptr_t)j * y.step;
        if (xl < yl + y.len && yl < xl + x.len) return 1;
        if (xl + x.len <= yl) i = past(&x, i, yl);
        else j = past(&y, j, xl);
    }
    return 0;
}

static int same_layout(const sg_mat *a, const sg_mat *b)
{
    return a->data == b->data && a->dtype == b->dtype && a->batch == b->batch && a->rows == b->rows &&
           a->cols == b->cols && a->ld == b->ld && sg_stride_of(a) == sg_stride_of(b);
}

/* The arguments present (m or iv non-NULL) of one call, validated. */
static sg_status check_alias(sg_ctx *ctx, const char *op, const sg_arg *in, int nin, const sg_arg *out, int nout)
{
    for (int o = 0; o < nout; o++) {
        if (!out[o].m && !out[o].iv) continue;
        run_t ro = run_of(&out[o]);
        for (int k = 0; k < o; k++)
            if ((out[k].m || out[k].iv) && runs_overlap(ro, run_of(&out[k])))
                return sg_fail(ctx, SG_ERR_ARG, -1, "%s: outputs %s and %s overlap", op, out[k].name, out[o].name);
        for (int i = 0; i < nin; i++) {
            if ((!in[i].m && !in[i].iv) || !runs_overlap(ro, run_of(&in[i]))) continue;
            const int may = out[o].in_place;
            if (may == i && out[o].m && same_layout(out[o].m, in[i].m)) continue;
            if (may == i)
                return sg_fail(ctx, SG_ERR_ARG, -1,
                               "%s: %s overlaps %s without being %s itself (in place needs the same data, ld and stride)",
                               op, out[o].name, in[i].name, in[i].name);
            if (may >= 0)
                return sg_fail(ctx, SG_ERR_ARG, -1, "%s: %s overlaps %s (in place, %s may be %s itself; nothing else)", op,
                               out[o].name, in[i].name, out[o].name, in[may].name);
            return sg_fail(ctx, SG_ERR_ARG, -1, "%s: output %s overlaps input %s (outputs must not overlap inputs)", op,
                           out[o].name, in[i].name);
        }
    }
    return SG_OK;
}
#define ARG_M(nm, M) {nm, M, NULL, 0, -1}
#define ARG_IP(nm, M, i) {nm, M, NULL, 0, i}
#define ARG_IV(nm, P, N) {nm, NULL, P, N, -1}
#define ARG_TOL(nm, P, N) {nm, NULL, (const int64_t *)(const void *)(P), N, -1} /* host doubles */
#define ALIAS(op, ins, outs)                                                                            \
    do {                                                                                                \
        const sg_arg in_[] = ins, out_[] = outs;                                                        \
        TRY(check_alias(ctx, op, in_, (int)(sizeof in_ / sizeof in_[0]), out_, (int)(sizeof out_ / sizeof out_[0]))); \
    } while (0)
#define ARGS(...) {__VA_ARGS__}

/* ---- ops ------------------------------------------------------------------------------------- */
/* The backend call, timed by phase under SG_PROFILE=1 (src/prof.c). */
#define DISPATCH(op, M, call)                                                                           \
    do {                                                                                                \
        sg_prof prof_;                                                                                  \
        sg_prof_begin(&prof_, ctx, op, M);                                                              \
        prog_begin(ctx);                                                                                \
        return prog_end(ctx, op, sg_prof_end(&prof_, call));                                                \
    } while (0)

static void prog_begin(sg_ctx *ctx)
{
    sg_progress_phase(ctx, 0, 1);
    ctx->prog_last = 0;
    ctx->prog_last_t = ctx->prog_fn ? now_s() : 0; /* the first report waits `every` too */
    ctx->prog_mute = 0;
    ctx->prog_stop = 0;
}

/* A stop request outranks whatever the backend returned: the skipped matrices were not computed. */
static sg_status prog_end(sg_ctx *ctx, const char *op, sg_status s)
{
    if (ctx->prog_stop)
        return sg_fail(ctx, SG_ERR_CANCELLED, -1, "%s: cancelled by the progress callback at %.0f%%", op,
                       100 * ctx->prog_last);
    if (s == SG_OK && ctx->prog_fn) (void)ctx->prog_fn(1.0, ctx->prog_user); /* too late to stop */
    return s;
}

sg_status sg_eigh(sg_ctx *ctx, const sg_mat *A, sg_mat *W, sg_mat *V)
{
    TRY(head(ctx, A, "A"));
    TRY(sg_check_mat(ctx, A, "A", A->dtype, -1, A->rows, A->rows));
    int64_t n = A->rows, b = A->batch;
    TRY(sg_check_mat(ctx, W, "W", A->dtype, b, n, 1));
    if (V) TRY(sg_check_mat(ctx, V, "V", A->dtype, b, n, n));
    ALIAS("eigh", ARGS(ARG_M("A", A)), ARGS(ARG_M("W", W), ARG_IP("V", V, 0)));
    TRY(finite_in(ctx, A, "A"));
    DISPATCH("eigh", A, ctx->ops->eigh(ctx, A, W, V));
}

sg_status sg_svd(sg_ctx *ctx, const sg_mat *A, int full, sg_mat *S, sg_mat *U, sg_mat *V)
{
    TRY(head(ctx, A, "A"));
    TRY(sg_check_mat(ctx, A, "A", A->dtype, -1, -1, -1));
    int64_t m = A->rows, n = A->cols, k = m < n ? m : n, b = A->batch;
    TRY(sg_check_mat(ctx, S, "S", A->dtype, b, k, 1));
    if ((U == NULL) != (V == NULL)) return sg_fail(ctx, SG_ERR_ARG, -1, "svd: U and V must both be given or both NULL");
    if (U) {
        TRY(sg_check_mat(ctx, U, "U", A->dtype, b, m, full ? m : k));
        TRY(sg_check_mat(ctx, V, "V", A->dtype, b, n, full ? n : k));
    }
    ALIAS("svd", ARGS(ARG_M("A", A)), ARGS(ARG_M("S", S), ARG_M("U", U), ARG_M("V", V)));
    TRY(finite_in(ctx, A, "A"));
    DISPATCH("svd", A, ctx->ops->svd(ctx, A, full != 0, S, U, V));
}

/* The pair of a scalar entry point, and of a _tols one (NULL array: the scalar default for every matrix). */
static sg_tols tols1(double atol, double rtol) { sg_tols t = {atol, rtol, NULL, NULL}; return t; }
static sg_tols tolsv(const double *atol, const double *rtol) { sg_tols t = {0.0, -1.0, atol, rtol}; return t; }
#define TOL_ARGS(t, A) ARG_TOL("atol", (t)->atols, (t)->atols ? (A)->batch : 0), \
                       ARG_TOL("rtol", (t)->rtols, (t)->rtols ? (A)->batch : 0)

static sg_status rank_t(sg_ctx *ctx, const sg_mat *A, const sg_tols *t, int64_t *rank)
{
    TRY(head(ctx, A, "A"));
    TRY(sg_check_mat(ctx, A, "A", A->dtype, -1, -1, -1));
    TRY(check_tols(ctx, t, A->batch));
    if (!rank) return sg_fail(ctx, SG_ERR_ARG, -1, "rank: null output pointer");
    ALIAS("rank", ARGS(ARG_M("A", A), TOL_ARGS(t, A)), ARGS(ARG_IV("rank", rank, A->batch)));
    TRY(finite_in(ctx, A, "A"));
    DISPATCH("rank", A, ctx->ops->rank(ctx, A, t, rank));
}
sg_status sg_rank(sg_ctx *ctx, const sg_mat *A, double atol, double rtol, int64_t *rank)
{
    sg_tols t = tols1(atol, rtol);
    return rank_t(ctx, A, &t, rank);
}
sg_status sg_rank_tols(sg_ctx *ctx, const sg_mat *A, const double *atol, const double *rtol, int64_t *rank)
{
    sg_tols t = tolsv(atol, rtol);
    return rank_t(ctx, A, &t, rank);
}

static sg_status nullspace_t(sg_ctx *ctx, const sg_mat *A, const sg_tols *t, sg_mat *N, int64_t *nullity)
{
    TRY(head(ctx, A, "A"));
    TRY(sg_check_mat(ctx, A, "A", A->dtype, -1, -1, -1));
    TRY(check_tols(ctx, t, A->batch));
    TRY(sg_check_mat(ctx, N, "N", A->dtype, A->batch, A->cols, A->cols));
    ALIAS("nullspace", ARGS(ARG_M("A", A), TOL_ARGS(t, A)),
          ARGS(ARG_M("N", N), ARG_IV("nullity", nullity, A->batch)));
    TRY(finite_in(ctx, A, "A"));
    DISPATCH("nullspace", A, ctx->ops->nullspace(ctx, A, t, N, nullity));
}
sg_status sg_nullspace(sg_ctx *ctx, const sg_mat *A, double atol, double rtol, sg_mat *N, int64_t *nullity)
{
    sg_tols t = tols1(atol, rtol);
    return nullspace_t(ctx, A, &t, N, nullity);
}
sg_status sg_nullspace_tols(sg_ctx *ctx, const sg_mat *A, const double *atol, const double *rtol, sg_mat *N,
                            int64_t *nullity)
{
    sg_tols t = tolsv(atol, rtol);
    return nullspace_t(ctx, A, &t, N, nullity);
}

static sg_status project_t(sg_ctx *ctx, const sg_mat *A, const sg_mat *X, sg_proj which, const sg_tols *t, sg_mat *Y)
{
    TRY(head(ctx, A, "A"));
    TRY(sg_check_mat(ctx, A, "A", A->dtype, -1, -1, -1));
    TRY(check_tols(ctx, t, A->batch));
    if (which != SG_PROJ_NULL && which != SG_PROJ_ROW)
        return sg_fail(ctx, SG_ERR_ARG, -1, "project: unknown subspace %d", (int)which);
    TRY(sg_check_mat(ctx, X, "X", A->dtype, A->batch, A->cols, -1));
    TRY(sg_check_mat(ctx, Y, "Y", A->dtype, A->batch, A->cols, X->cols));
    ALIAS("project", ARGS(ARG_M("A", A), ARG_M("X", X), TOL_ARGS(t, A)), ARGS(ARG_IP("Y", Y, 1)));
    TRY(finite_in(ctx, A, "A"));
    TRY(finite_in(ctx, X, "X"));
    DISPATCH("project", A, ctx->ops->project(ctx, A, X, which, t, Y));
}
sg_status sg_project(sg_ctx *ctx, const sg_mat *A, const sg_mat *X, sg_proj which, double atol, double rtol,
                     sg_mat *Y)
{
    sg_tols t = tols1(atol, rtol);
    return project_t(ctx, A, X, which, &t, Y);
}
sg_status sg_project_tols(sg_ctx *ctx, const sg_mat *A, const sg_mat *X, sg_proj which, const double *atol,
                          const double *rtol, sg_mat *Y)
{
    sg_tols t = tolsv(atol, rtol);
    return project_t(ctx, A, X, which, &t, Y);
}

sg_status sg_project_basis(sg_ctx *ctx, const sg_mat *Q, const sg_mat *X, int complement, sg_mat *Y)
{
    TRY(head(ctx, Q, "Q"));
    TRY(sg_check_mat(ctx, Q, "Q", Q->dtype, -1, -1, -1));
    if (Q->cols > Q->rows)
        return sg_fail(ctx, SG_ERR_ARG, -1, "project_basis: Q is %lld×%lld; a basis of R^%lld has at most %lld columns",
                       (long long)Q->rows, (long long)Q->cols, (long long)Q->rows, (long long)Q->rows);
    TRY(sg_check_mat(ctx, X, "X", Q->dtype, Q->batch, Q->rows, -1));
    TRY(sg_check_mat(ctx, Y, "Y", Q->dtype, Q->batch, Q->rows, X->cols));
    /* the GPU reads Q while writing Y (one kernel re-reads it per column of X) */
    ALIAS("project_basis", ARGS(ARG_M("Q", Q), ARG_M("X", X)), ARGS(ARG_IP("Y", Y, 1)));
    TRY(finite_in(ctx, Q, "Q"));
    TRY(finite_in(ctx, X, "X"));
    DISPATCH("project_basis", Q, ctx->ops->project_basis(ctx, Q, X, complement != 0, Y));
}

static sg_status lstsq_t(sg_ctx *ctx, const sg_mat *A, const sg_mat *B, const sg_tols *t, sg_mat *X, int64_t *rank)
{
    TRY(head(ctx, A, "A"));
    TRY(sg_check_mat(ctx, A, "A", A->dtype, -1, -1, -1));
    TRY(check_tols(ctx, t, A->batch));
    TRY(sg_check_mat(ctx, B, "B", A->dtype, A->batch, A->rows, -1));
    TRY(sg_check_mat(ctx, X, "X", A->dtype, A->batch, A->cols, B->cols));
    ALIAS("lstsq", ARGS(ARG_M("A", A), ARG_M("B", B), TOL_ARGS(t, A)),
          ARGS(ARG_IP("X", X, 1), ARG_IV("rank", rank, A->batch)));
    TRY(finite_in(ctx, A, "A"));
    TRY(finite_in(ctx, B, "B"));
    DISPATCH("lstsq", A, ctx->ops->lstsq(ctx, A, B, t, X, rank));
}
sg_status sg_lstsq(sg_ctx *ctx, const sg_mat *A, const sg_mat *B, double atol, double rtol, sg_mat *X,
                   int64_t *rank)
{
    sg_tols t = tols1(atol, rtol);
    return lstsq_t(ctx, A, B, &t, X, rank);
}
sg_status sg_lstsq_tols(sg_ctx *ctx, const sg_mat *A, const sg_mat *B, const double *atol, const double *rtol,
                        sg_mat *X, int64_t *rank)
{
    sg_tols t = tolsv(atol, rtol);
    return lstsq_t(ctx, A, B, &t, X, rank);
}

sg_status sg_eigh_backward(sg_ctx *ctx, const sg_mat *W, const sg_mat *V, const sg_mat *gW, const sg_mat *gV,
                           sg_degen mode, double param, sg_mat *gA)
{
    TRY(head(ctx, V, "V"));
    int64_t n = V->rows, b = V->batch;
    TRY(sg_check_mat(ctx, V, "V", V->dtype, -1, n, n));
    TRY(sg_check_mat(ctx, W, "W", V->dtype, b, n, 1));
    if (gW) TRY(sg_check_mat(ctx, gW, "gW", V->dtype, b, n, 1));
    if (gV) TRY(sg_check_mat(ctx, gV, "gV", V->dtype, b, n, n));
    TRY(check_mode(ctx, mode, param));
    TRY(sg_check_mat(ctx, gA, "gA", V->dtype, b, n, n));
    ALIAS("eigh_backward", ARGS(ARG_M("W", W), ARG_M("V", V), ARG_M("gW", gW), ARG_M("gV", gV)), ARGS(ARG_M("gA", gA)));
    TRY(finite_in(ctx, V, "V"));
    TRY(finite_in(ctx, W, "W"));
    TRY(finite_in(ctx, gW, "gW"));
    TRY(finite_in(ctx, gV, "gV"));
    DISPATCH("eigh_backward", V, ctx->ops->eigh_backward(ctx, W, V, gW, gV, mode, param, gA));
}

sg_status sg_svd_backward(sg_ctx *ctx, const sg_mat *U, const sg_mat *S, const sg_mat *V, const sg_mat *gU,
                          const sg_mat *gS, const sg_mat *gV, sg_degen mode, double param, sg_mat *gA)
{
    TRY(head(ctx, U, "U"));
    if (!V) return sg_fail(ctx, SG_ERR_ARG, -1, "V: null matrix descriptor");
    int64_t m = U->rows, n = V->rows, k = m < n ? m : n, b = U->batch;
    TRY(sg_check_mat(ctx, U, "U", U->dtype, -1, -1, -1));
    TRY(sg_check_mat(ctx, V, "V", U->dtype, b, -1, -1));
    int fullU = U->cols == m && m != k, fullV = V->cols == n && n != k;
    if ((U->cols != k && U->cols != m) || (V->cols != k && V->cols != n) || (fullU && V->cols != n) ||
        (fullV && U->cols != m))
        return sg_fail(ctx, SG_ERR_ARG, -1,
                       "svd_backward: U %lld×%lld and V %lld×%lld are neither economy (k=%lld) nor full_matrices",
                       (long long)U->rows, (long long)U->cols, (long long)V->rows, (long long)V->cols, (long long)k);
    TRY(sg_check_mat(ctx, S, "S", U->dtype, b, k, 1));
    if (gU) TRY(sg_check_mat(ctx, gU, "gU", U->dtype, b, m, U->cols));
    if (gS) TRY(sg_check_mat(ctx, gS, "gS", U->dtype, b, k, 1));
    if (gV) TRY(sg_check_mat(ctx, gV, "gV", U->dtype, b, n, V->cols));
    TRY(check_mode(ctx, mode, param));
    TRY(sg_check_mat(ctx, gA, "gA", U->dtype, b, m, n));
    ALIAS("svd_backward",
          ARGS(ARG_M("U", U), ARG_M("S", S), ARG_M("V", V), ARG_M("gU", gU), ARG_M("gS", gS), ARG_M("gV", gV)),
          ARGS(ARG_M("gA", gA)));
    TRY(finite_in(ctx, U, "U"));
    TRY(finite_in(ctx, V, "V"));
    TRY(finite_in(ctx, S, "S"));
    TRY(finite_in(ctx, gU, "gU"));
    TRY(finite_in(ctx, gS, "gS"));
    TRY(finite_in(ctx, gV, "gV"));
    DISPATCH("svd_backward", U, ctx->ops->svd_backward(ctx, U, S, V, gU, gS, gV, mode, param, gA));
}

sg_status sg_matfunc(sg_ctx *ctx, const sg_mat *A, const sg_fn *fn, sg_mat *F, sg_mat *W, sg_mat *V)
{
    TRY(head(ctx, A, "A"));
    TRY(sg_check_mat(ctx, A, "A", A->dtype, -1, A->rows, A->rows));
    TRY(check_fn(ctx, fn));
    TRY(sg_check_mat(ctx, F, "F", A->dtype, A->batch, A->rows, A->rows));
    if (W) TRY(sg_check_mat(ctx, W, "W", A->dtype, A->batch, A->rows, 1));
    if (V) TRY(sg_check_mat(ctx, V, "V", A->dtype, A->batch, A->rows, A->rows));
    /* all three are written at the end, from the same temporaries (A is read before any of them) */
    ALIAS("matfunc", ARGS(ARG_M("A", A)), ARGS(ARG_IP("F", F, 0), ARG_M("W", W), ARG_IP("V", V, 0)));
    TRY(finite_in(ctx, A, "A"));
    DISPATCH("matfunc", A, ctx->ops->matfunc(ctx, A, fn, F, W, V));
}

sg_status sg_matfunc_backward(sg_ctx *ctx, const sg_mat *W, const sg_mat *V, const sg_fn *fn, const sg_mat *gF,
                              sg_mat *gA)
{
    TRY(head(ctx, V, "V"));
    int64_t n = V->rows, b = V->batch;
    TRY(sg_check_mat(ctx, V, "V", V->dtype, -1, n, n));
    TRY(sg_check_mat(ctx, W, "W", V->dtype, b, n, 1));
    TRY(check_fn(ctx, fn));
    TRY(sg_check_mat(ctx, gF, "gF", V->dtype, b, n, n));
    TRY(sg_check_mat(ctx, gA, "gA", V->dtype, b, n, n));
    ALIAS("matfunc_backward", ARGS(ARG_M("W", W), ARG_M("V", V), ARG_M("gF", gF)), ARGS(ARG_M("gA", gA)));
    TRY(finite_in(ctx, V, "V"));
    TRY(finite_in(ctx, W, "W"));
    TRY(finite_in(ctx, gF, "gF"));
    DISPATCH("matfunc_backward", V, ctx->ops->matfunc_backward(ctx, W, V, fn, gF, gA));
}

sg_status sg_regularizer(sg_ctx *ctx, sg_reg kind, const sg_mat *A, const sg_fn *fn, sg_mat *loss, sg_mat *gA)
{
    TRY(head(ctx, A, "A"));
    if (kind < SG_REG_SPECTRAL || kind > SG_REG_EIGSUM)
        return sg_fail(ctx, SG_ERR_ARG, -1, "regularizer: unknown kind %d", (int)kind);
    int square = kind == SG_REG_LOGDET || kind == SG_REG_EIGSUM;
    TRY(sg_check_mat(ctx, A, "A", A->dtype, -1, -1, square ? A->rows : -1));
    if (kind == SG_REG_EIGSUM) TRY(check_fn(ctx, fn));
    TRY(sg_check_mat(ctx, loss, "loss", A->dtype, A->batch, 1, 1));
    if (gA) TRY(sg_check_mat(ctx, gA, "gA", A->dtype, A->batch, A->rows, A->cols));
    ALIAS("regularizer", ARGS(ARG_M("A", A)), ARGS(ARG_M("loss", loss), ARG_M("gA", gA)));
    TRY(finite_in(ctx, A, "A"));
    DISPATCH("regularizer", A, ctx->ops->regularizer(ctx, kind, A, fn, loss, gA));
}

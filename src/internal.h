/* Internal: context layout, error helpers, argument validation and the backend table (ggml-style split).
   Front-end (src/specgrad.c) validates every argument, then calls ctx->ops->X; backends may assume
   shapes, dtypes and pointers are valid and must check what only they can see (LAPACK / CUDA status,
   info arrays, device-side NaN checks when memory is on the device). */
#ifndef SG_INTERNAL_H
#define SG_INTERNAL_H

#include "specgrad.h"
#include "formulas.h"
#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sg_backend_ops sg_backend_ops;

struct sg_ctx {
    sg_backend backend;
    sg_memspace mem;
    void *stream;          /* cudaStream_t */
    double jacobi_tol;     /* <= 0: default */
    int jacobi_sweeps;     /* <= 0: default */
    int threads;           /* <= 0: all */
    int forks;             /* the process's fork count at creation (CUDA: unusable after one) */
    int check_finite;
    size_t chunk_bytes;    /* 0: automatic */
    size_t cache_bytes;    /* idle device scratch kept between calls (CUDA pool release threshold) */
    int64_t failed_index;
    char err[512];
    const sg_backend_ops *ops;
    void *cuda;            /* backend state owned by cuda/ (handles, workspaces, pinned buffers) */
    /* sg_set_progress; per call: the current phase maps [0, 1] onto [lo, hi] of the call, last = the
       fraction and time of the last report, mute > 0 inside a backend's nested call of another op */
    sg_progress_fn prog_fn;
    void *prog_user;
    double prog_every, prog_lo, prog_hi, prog_last, prog_last_t;
    int prog_mute, prog_stop; /* prog_stop: fn asked to stop (read by every batch thread) */
};

/* How many forks this process has been through (0: not a forked child). (src/specgrad.c) */
int sg_fork_count(void);

/* CPU threads for a loop over batch items: the context's setting (<= 0: all), at most one per item, and one
   in a forked child (src/cpu_linalg.c says why). */
int sg_cpu_threads(const sg_ctx *ctx, int64_t batch);

/* Each backend implements every op; arguments are already validated. */
struct sg_backend_ops {
    const char *name;
    sg_status (*init)(sg_ctx *ctx);
    void (*destroy)(sg_ctx *ctx);
    sg_status (*eigh)(sg_ctx *, const sg_mat *A, sg_mat *W, sg_mat *V);
    sg_status (*svd)(sg_ctx *, const sg_mat *A, int full, sg_mat *S, sg_mat *U, sg_mat *V);
    sg_status (*rank)(sg_ctx *, const sg_mat *A, const sg_tols *tol, int64_t *rank);
    sg_status (*nullspace)(sg_ctx *, const sg_mat *A, const sg_tols *tol, sg_mat *N, int64_t *nullity);
    sg_status (*project)(sg_ctx *, const sg_mat *A, const sg_mat *X, sg_proj which, const sg_tols *tol, sg_mat *Y);
    sg_status (*project_basis)(sg_ctx *, const sg_mat *Q, const sg_mat *X, int complement, sg_mat *Y);
    sg_status (*lstsq)(sg_ctx *, const sg_mat *A, const sg_mat *B, const sg_tols *tol, sg_mat *X, int64_t *rank);
    sg_status (*eigh_backward)(sg_ctx *, const sg_mat *W, const sg_mat *V, const sg_mat *gW, const sg_mat *gV,
                               sg_degen mode, double param, sg_mat *gA);
    sg_status (*svd_backward)(sg_ctx *, const sg_mat *U, const sg_mat *S, const sg_mat *V, const sg_mat *gU,
                              const sg_mat *gS, const sg_mat *gV, sg_degen mode, double param, sg_mat *gA);
    sg_status (*matfunc)(sg_ctx *, const sg_mat *A, const sg_fn *fn, sg_mat *F, sg_mat *W, sg_mat *V);
    sg_status (*matfunc_backward)(sg_ctx *, const sg_mat *W, const sg_mat *V, const sg_fn *fn, const sg_mat *gF,
                                  sg_mat *gA);
    sg_status (*regularizer)(sg_ctx *, sg_reg kind, const sg_mat *A, const sg_fn *fn, sg_mat *loss, sg_mat *gA);
    /* optional (NULL: every pointer is host memory): SG_ERR_ARG naming p when the CPU cannot read it */
    sg_status (*check_host_ptr)(sg_ctx *, const void *p, const char *name);
    /* optional (NULL: nothing cached): apply ctx->cache_bytes now; bytes the scratch pool holds */
    sg_status (*cache_apply)(sg_ctx *);
    sg_status (*cache_held)(sg_ctx *, size_t *bytes);
};

extern const sg_backend_ops sg_cpu_ops;
/* Provided by cuda/ when built with CUDA, else by src/cuda_stub.c (reports SG_ERR_NODEVICE). */
extern const sg_backend_ops sg_cuda_ops;

/* Record an error (printf-style message) and the failing batch index (-1 if none); returns s. */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
sg_status sg_fail(sg_ctx *ctx, sg_status s, int64_t index, const char *fmt, ...);
void sg_clear_error(sg_ctx *ctx);

static inline int64_t sg_stride_of(const sg_mat *m) { return m->stride ? m->stride : m->ld * m->cols; }
static inline size_t sg_dtype_size(sg_dtype t) { return t == SG_F32 ? 4 : 8; }
static inline double sg_eps(sg_dtype t) { return t == SG_F32 ? 1.1920928955078125e-07 : 2.220446049250313e-16; }

static inline double sg_tol(const sg_tols *tol, int64_t b, double smax, int64_t m, int64_t n, sg_dtype t)
{
    return sg_tols_cut(*tol, b, smax, m > n ? m : n, sg_eps(t));
}

/* Validation used by the front-end (and reusable by tools). rows/cols/batch < 0 mean "any".
   Checks: non-NULL mat and data, dtype, batch > 0, rows/cols > 0, ld >= rows, stride >= ld*cols,
   no int64 overflow of the addressed extent. */
sg_status sg_check_mat(sg_ctx *ctx, const sg_mat *m, const char *name, sg_dtype dtype, int64_t batch,
                       int64_t rows, int64_t cols);
/* NaN/Inf scan of a host batch; reports the first offending matrix. */
sg_status sg_check_finite_host(sg_ctx *ctx, const sg_mat *m, const char *name);

/* Progress (sg_set_progress), calling thread only. A backend reports fraction f of the current phase;
   an op made of several passes over the batch names each pass's share of the call first. */
void sg_progress(sg_ctx *ctx, double f);
/* The callback asked this call to stop: start no further matrix or chunk (the front-end reports it). */
static inline int sg_cancelled(const sg_ctx *ctx) { return __atomic_load_n(&ctx->prog_stop, __ATOMIC_RELAXED); }
static inline void sg_progress_phase(sg_ctx *ctx, double lo, double hi)
{
    ctx->prog_lo = lo;
    ctx->prog_hi = hi;
}

/* SG_PROFILE=1 (src/prof.c): per-op stderr line of host µs between phases. The front-end brackets each
   dispatch with begin/end; backends call sg_prof_mark("phase") at phase ends (a no-op when off). */
typedef struct sg_prof {
    int on;
    double t0, t;
    struct sg_prof *outer;
    size_t len;
    char line[768];
} sg_prof;
int sg_prof_enabled(void);
void sg_prof_begin(sg_prof *p, const sg_ctx *ctx, const char *op, const sg_mat *A);
void sg_prof_mark(const char *phase);
void sg_prof_note(const char *key, long long value); /* a size worth seeing next to the times */
sg_status sg_prof_end(sg_prof *p, sg_status s);

#ifdef __cplusplus
}
#endif
#endif

/* Device and pinned-memory exhaustion on the CUDA backend, injected: this executable defines
   cudaMallocFromPoolAsync, cudaMalloc and cudaHostAlloc (an executable's definition comes first in the
   dynamic symbol lookup, so libspecgrad's calls land here), forwards to libcudart through
   dlsym(RTLD_NEXT) and refuses any request above a threshold the test sets. Checked: the chunk is halved
   until the work fits and the result equals an unconstrained run's (device memory, host streaming, the
   gradients' staging); with nothing allowed the call fails with SG_ERR_DEVICE_OOM / SG_ERR_ALLOC, a message
   saying what could not be allocated, and its outputs untouched. Counters prove refusals happened.
   Without a GPU every test is skipped with the reason printed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "gpu_suite.h"

TestSuite(gpu_oom, .init = gpu_suite_setup, .fini = gpu_suite_teardown, .timeout = 600);

#ifdef SG_HAVE_CUDA

/* The NaN scan's 8-byte flag must get through: the limits below stay above this. */
#define SMALL 64
static size_t dev_limit = SIZE_MAX, host_limit = SIZE_MAX; /* requests above are refused */
static size_t dev_max_seen;                                 /* largest device request since reset */
static int n_refused;

static cudaError_t dev_gate(size_t size)
{
    if (size > dev_max_seen) dev_max_seen = size;
    if (size <= dev_limit) return cudaSuccess;
    n_refused++;
    return cudaErrorMemoryAllocation;
}

cudaError_t cudaMallocFromPoolAsync(void **p, size_t size, cudaMemPool_t pool, cudaStream_t s)
{
    typedef cudaError_t (*fn)(void **, size_t, cudaMemPool_t, cudaStream_t);
    static fn f;
    if (!f) f = (fn)tu_next_symbol("cudaMallocFromPoolAsync");
    cudaError_t e = dev_gate(size);
    return e != cudaSuccess ? e : f(p, size, pool, s);
}

cudaError_t cudaMalloc(void **p, size_t size)
{
    typedef cudaError_t (*fn)(void **, size_t);
    static fn f;
    if (!f) f = (fn)tu_next_symbol("cudaMalloc");
    cudaError_t e = dev_gate(size);
    return e != cudaSuccess ? e : f(p, size);
}

cudaError_t cudaHostAlloc(void **p, size_t size, unsigned int flags)
{
    typedef cudaError_t (*fn)(void **, size_t, unsigned int);
    static fn f;
    if (!f) f = (fn)tu_next_symbol("cudaHostAlloc");
    if (size > host_limit) {
        n_refused++;
        return cudaErrorMemoryAllocation;
    }
    return f(p, size, flags);
}

static void limits(size_t dev, size_t host)
{
    dev_limit = dev;
    host_limit = host;
    dev_max_seen = 0;
}

static double max_diff(const double *x, const double *y, int64_t len)
{
    double e = 0;
    for (int64_t i = 0; i < len; i++) e = isfinite(x[i]) && isfinite(y[i]) ? fmax(e, fabs(x[i] - y[i])) : INFINITY;
    return e;
}

/* eigh values of B matrices: an unconstrained run, then one where no request above a third of the
   unconstrained run's largest may succeed; dev selects device memory or host streaming. */
static void eigh_under_oom(int dev, int64_t n, sg_dtype t)
{
    const int64_t B = 300;
    double *A = tu_sym_batch(B, n, 900 + (uint64_t)n), *w0 = malloc(sizeof(double) * (size_t)(B * n)),
           *w1 = malloc(sizeof(double) * (size_t)(B * n));
    cr_assert_eq(sg_set_memspace(gpu, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
    cr_assert_eq(sg_set_cache_bytes(gpu, 0), SG_OK); /* nothing cached: every call allocates */
    buf a = bnew(t, B, n, n, 0, dev), w = bnew(t, B, n, 1, 0, dev);
    bset(&a, A);
    limits(SIZE_MAX, SIZE_MAX);
    cr_assert_eq(sg_eigh(gpu, bm(&a), bm(&w), NULL), SG_OK, "%s", sg_last_error(gpu));
    bget(&w, w0);
    const size_t biggest = dev_max_seen;
    cr_assert_gt(biggest, 3 * SMALL, "no device allocation seen (%zu): the interposer is not in the call path", biggest);
    const int before = n_refused;
    limits(biggest / 3, SIZE_MAX);
    sg_status s = sg_eigh(gpu, bm(&a), bm(&w), NULL);
    limits(SIZE_MAX, SIZE_MAX);
    cr_assert_eq(s, SG_OK, "%s n=%lld %s: %s", dev ? "device" : "host", (long long)n, t == SG_F32 ? "f32" : "f64",
                 sg_last_error(gpu));
    cr_expect_str_eq(sg_last_error(gpu), "", "an OOM that a smaller chunk got past is not the call's error");
    cr_expect_gt(n_refused - before, 0, "nothing was refused: the halving path did not run");
    bget(&w, w1);
    double e = max_diff(w0, w1, B * n);
    cr_expect_leq(e, t == SG_F32 ? 1e-5 : 1e-12, "chunked under OOM differs from the unconstrained run by %g", e);
    bfree(&a), bfree(&w);
    free(A), free(w0), free(w1);
}
#endif

Test(gpu_oom, eigh_halves_the_chunk_until_it_fits)
{
    NEED_GPU();
#ifdef SG_HAVE_CUDA
    for (int dev = 0; dev <= 1; dev++)
        for (int k = 0; k < 2; k++) {
            eigh_under_oom(dev, 16, k ? SG_F64 : SG_F32);  /* syevjBatched */
            eigh_under_oom(dev, 40, k ? SG_F64 : SG_F32);  /* XsyevBatched */
        }
#endif
}

/* Not even one matrix's scratch can be had: a clear error, and the outputs are not touched. */
static void expect_untouched(buf *b, const char *what)
{
    const int64_t len = b->h.rows * b->h.cols * b->h.batch;
    double *x = malloc(sizeof(double) * (size_t)len);
    bget(b, x);
    for (int64_t i = 0; i < len; i++)
        if (!isnan(x[i])) {
            cr_expect(0, "%s: element %lld written (%g) by a failed call", what, (long long)i, x[i]);
            break;
        }
    free(x);
}

Test(gpu_oom, nothing_allocatable_is_a_clear_error_with_outputs_untouched)
{
    NEED_GPU();
#ifdef SG_HAVE_CUDA
    const int64_t B = 8, n = 12;
    double *A = tu_sym_batch(B, n, 77);
    for (int dev = 0; dev <= 1; dev++) {
        const char *where = dev ? "device" : "host";
        cr_assert_eq(sg_set_memspace(gpu, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
        cr_assert_eq(sg_set_cache_bytes(gpu, 0), SG_OK);
        buf a = bnew(SG_F64, B, n, n, 0, dev), w = bnew(SG_F64, B, n, 1, 0, dev), v = bnew(SG_F64, B, n, n, 0, dev),
            g = bnew(SG_F64, B, n, n, 0, dev), g2 = bnew(SG_F64, B, n, n, 0, dev);
        bset(&a, A);
        int before = n_refused;
        limits(SMALL, SIZE_MAX);
        sg_status s = sg_eigh(gpu, bm(&a), bm(&w), bm(&v));
        limits(SIZE_MAX, SIZE_MAX);
        cr_expect_eq(s, SG_ERR_DEVICE_OOM, "eigh %s: %s (%s)", where, sg_status_string(s), sg_last_error(gpu));
        cr_expect(strstr(sg_last_error(gpu), dev ? "one matrix" : "staging buffers") != NULL,
                  "the message says what could not be had: %s", sg_last_error(gpu));
        cr_expect_gt(n_refused - before, 0);
        expect_untouched(&v, "eigh V");
        expect_untouched(&w, "eigh W");

        /* gradients: the staging / scratch allocation fails the same way (if the op allocates at all) */
        cr_assert_eq(sg_eigh(gpu, bm(&a), bm(&w), bm(&v)), SG_OK, "%s", sg_last_error(gpu));
        dev_max_seen = 0;
        cr_assert_eq(sg_eigh_backward(gpu, bm(&w), bm(&v), NULL, bm(&a), SG_DEGEN_MASK, 0, bm(&g2)), SG_OK, "%s",
                     sg_last_error(gpu));
        cr_assert_gt(dev_max_seen, SMALL, "eigh_backward %s allocated nothing to refuse (%zu bytes)", where, dev_max_seen);
        {
            before = n_refused;
            limits(SMALL, SIZE_MAX);
            s = sg_eigh_backward(gpu, bm(&w), bm(&v), NULL, bm(&a), SG_DEGEN_MASK, 0, bm(&g));
            limits(SIZE_MAX, SIZE_MAX);
            cr_expect_eq(s, SG_ERR_DEVICE_OOM, "eigh_backward %s: %s (%s)", where, sg_status_string(s), sg_last_error(gpu));
            cr_expect(strstr(sg_last_error(gpu), "device allocation") != NULL, "%s", sg_last_error(gpu));
            cr_expect_gt(n_refused - before, 0);
            expect_untouched(&g, "eigh_backward gA");
        }
        bfree(&a), bfree(&w), bfree(&v), bfree(&g), bfree(&g2);
    }
    free(A);
#endif
}

/* The gradients' chunk loop halves on OOM too; the result equals the unconstrained one. n = 80: the
   cuBLAS path with its scratch; n = 24: the fused kernel. */
Test(gpu_oom, eigh_backward_halves_the_chunk_until_it_fits)
{
    NEED_GPU();
#ifdef SG_HAVE_CUDA
    const int64_t B = 200;
    for (int dev = 0; dev <= 1; dev++)
        for (int64_t n = 24; n <= 80; n += 56) {
            double *A = tu_sym_batch(B, n, 500 + (uint64_t)n), *G = malloc(sizeof(double) * (size_t)(B * n * n));
            tu_rng r = tu_seed(600);
            tu_fill_normal(&r, G, B * n * n);
            cr_assert_eq(sg_set_memspace(gpu, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
            cr_assert_eq(sg_set_cache_bytes(gpu, 0), SG_OK);
            cr_assert_eq(sg_set_chunk_bytes(gpu, 0), SG_OK);
            buf a = bnew(SG_F64, B, n, n, 0, dev), w = bnew(SG_F64, B, n, 1, 0, dev), v = bnew(SG_F64, B, n, n, 0, dev),
                g = bnew(SG_F64, B, n, n, 0, dev), gv = bnew(SG_F64, B, n, n, 0, dev);
            bset(&a, A);
            bset(&gv, G);
            limits(SIZE_MAX, SIZE_MAX);
            cr_assert_eq(sg_eigh(gpu, bm(&a), bm(&w), bm(&v)), SG_OK, "%s", sg_last_error(gpu));
            dev_max_seen = 0;
            cr_assert_eq(sg_eigh_backward(gpu, bm(&w), bm(&v), NULL, bm(&gv), SG_DEGEN_MASK, 0, bm(&g)), SG_OK, "%s",
                         sg_last_error(gpu));
            const size_t biggest = dev_max_seen;
            double *g0 = malloc(sizeof(double) * (size_t)(B * n * n)), *g1 = malloc(sizeof(double) * (size_t)(B * n * n));
            bget(&g, g0);
            const int before = n_refused;
            cr_assert_gt(biggest, 3 * SMALL, "n=%lld %s: the backward allocated nothing to constrain (%zu bytes)",
                         (long long)n, dev ? "device" : "host", biggest);
            {
                limits(biggest / 3, SIZE_MAX);
                sg_status s = sg_eigh_backward(gpu, bm(&w), bm(&v), NULL, bm(&gv), SG_DEGEN_MASK, 0, bm(&g));
                limits(SIZE_MAX, SIZE_MAX);
                cr_expect_eq(s, SG_OK, "n=%lld %s: %s", (long long)n, dev ? "device" : "host", sg_last_error(gpu));
                cr_expect_str_eq(sg_last_error(gpu), "");
                cr_expect_gt(n_refused - before, 0, "n=%lld %s: nothing refused", (long long)n, dev ? "device" : "host");
                bget(&g, g1);
                double e = max_diff(g0, g1, B * n * n);
                cr_expect_leq(e, 1e-12 * (1 + tu_max_abs(g0, B * n * n)), "n=%lld %s: differs by %g", (long long)n,
                              dev ? "device" : "host", e);
            }
            bfree(&a), bfree(&w), bfree(&v), bfree(&g), bfree(&gv);
            free(A), free(G), free(g0), free(g1);
        }
#endif
}

/* Host streaming when pinned host memory cannot be had: SG_ERR_ALLOC naming pinned memory, on a fresh
   context (a used one keeps its grow-only pinned buffers and would not ask again). */
Test(gpu_oom, pinned_memory_refused_is_a_host_alloc_error)
{
    NEED_GPU();
#ifdef SG_HAVE_CUDA
    sg_ctx *fresh = NULL;
    cr_assert_eq(sg_create(&fresh, SG_BACKEND_CUDA), SG_OK);
    const int64_t B = 6, n = 10;
    double *A = tu_sym_batch(B, n, 31);
    sg_mat a = tu_alloc_mat(SG_F64, B, n, n), w = tu_alloc_mat(SG_F64, B, n, 1);
    tu_to_mat(A, &a);
    const int before = n_refused;
    limits(SIZE_MAX, 0);
    sg_status s = sg_eigh(fresh, &a, &w, NULL);
    limits(SIZE_MAX, SIZE_MAX);
    cr_expect_eq(s, SG_ERR_ALLOC, "%s (%s)", sg_status_string(s), sg_last_error(fresh));
    cr_expect(strstr(sg_last_error(fresh), "pinned") != NULL, "%s", sg_last_error(fresh));
    cr_expect_gt(n_refused - before, 0);
    cr_expect_eq(sg_eigh(fresh, &a, &w, NULL), SG_OK, "the context works once memory is back: %s", sg_last_error(fresh));
    sg_destroy(fresh);
    tu_free_mat(&a), tu_free_mat(&w);
    free(A);
#endif
}

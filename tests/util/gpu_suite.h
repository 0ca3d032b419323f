/* Scaffolding shared by the GPU parity suites (test_gpu_*.c): a CPU and a CUDA context per test, a skip
   with the printed reason when no GPU is usable, and host buffers (optionally padded, NaN-poisoned)
   mirrored on the device. Header-only, static: the suites link cudart, the util library does not. */
#ifndef SG_GPU_SUITE_H
#define SG_GPU_SUITE_H
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "specgrad.h"
#include "testutil.h"
#ifdef SG_HAVE_CUDA
#include <cuda_runtime.h>
#endif

static sg_ctx *cpu, *gpu;
static char why[256] = "specgrad built without CUDA";

static void gpu_suite_setup(void)
{
    cpu = gpu = NULL;
    cr_assert_eq(sg_create(&cpu, SG_BACKEND_CPU), SG_OK);
#ifdef SG_HAVE_CUDA
    if (tu_gpu_available(why, sizeof why)) cr_assert_eq(sg_create(&gpu, SG_BACKEND_CUDA), SG_OK, "CUDA context: %s", why);
#endif
}
static void gpu_suite_teardown(void)
{
    sg_destroy(gpu);
    sg_destroy(cpu);
}

#define NEED_GPU()                                                                                      \
    do {                                                                                                \
        if (!gpu) cr_skip_test("GPU test skipped: %s", why);                                            \
    } while (0)

/* ---- buffers: host storage (optionally padded, poisoned with NaN) mirrored on the device ------------ */
typedef struct {
    sg_mat h, d;
    int dev;
} buf;

static size_t bytes_of(const sg_mat *m)
{
    int64_t st = m->stride ? m->stride : m->ld * m->cols;
    return (size_t)(st * m->batch) * (m->dtype == SG_F32 ? 4 : 8);
}

static buf bnew(sg_dtype t, int64_t batch, int64_t rows, int64_t cols, int pad, int dev)
{
    buf b;
    memset(&b, 0, sizeof b);
    b.h = sg_mat_dense(NULL, t, batch, rows, cols);
    if (pad) {
        b.h.ld = rows + pad;
        b.h.stride = b.h.ld * cols + 3 * pad;
    }
    size_t n = bytes_of(&b.h);
    b.h.data = malloc(n);
    cr_assert_not_null(b.h.data);
    memset(b.h.data, 0xff, n); /* NaN everywhere: unwritten outputs and stray padding reads show up */
    b.dev = dev;
#ifdef SG_HAVE_CUDA
    if (dev) {
        b.d = b.h;
        cr_assert_eq(cudaMalloc(&b.d.data, n), cudaSuccess);
        cr_assert_eq(cudaMemcpy(b.d.data, b.h.data, n, cudaMemcpyHostToDevice), cudaSuccess);
    }
#endif
    return b;
}
static void bset(buf *b, const double *x) /* dense doubles → storage (and device) */
{
    tu_to_mat(x, &b->h);
#ifdef SG_HAVE_CUDA
    if (b->dev) cr_assert_eq(cudaMemcpy(b->d.data, b->h.data, bytes_of(&b->h), cudaMemcpyHostToDevice), cudaSuccess);
#endif
}
static void bget(buf *b, double *x) /* storage (after a device → host copy) → dense doubles */
{
#ifdef SG_HAVE_CUDA
    if (b->dev) cr_assert_eq(cudaMemcpy(b->h.data, b->d.data, bytes_of(&b->h), cudaMemcpyDeviceToHost), cudaSuccess);
#endif
    tu_from_mat(&b->h, x);
}
static sg_mat *bm(buf *b) { return b->dev ? &b->d : &b->h; } /* the operand in the GPU context's memory */
static void bfree(buf *b)
{
#ifdef SG_HAVE_CUDA
    if (b->dev) cudaFree(b->d.data);
#endif
    free(b->h.data);
}
#endif

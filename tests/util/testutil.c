#define _GNU_SOURCE /* RTLD_NEXT */
#include "testutil.h"
#include <dlfcn.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

tu_rng tu_seed(uint64_t seed) { tu_rng r = {seed * 0x9E3779B97F4A7C15ull + 1}; return r; }

static uint64_t next64(tu_rng *r) /* splitmix64 */
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double tu_uniform(tu_rng *r) { return (double)(next64(r) >> 11) * 0x1.0p-53; }

double tu_normal(tu_rng *r)
{
    double u = tu_uniform(r), v = tu_uniform(r);
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

void tu_fill_normal(tu_rng *r, double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = tu_normal(r);
}

void tu_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const double *A, const double *B, double *C)
{
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < m; i++) {
            double s = 0;
            for (int64_t l = 0; l < k; l++) {
                double a = ta ? A[l + i * k] : A[i + l * m];
                double b = tb ? B[j + l * n] : B[l + j * k];
                s += a * b;
            }
            C[i + j * m] = s;
        }
}

void tu_orthogonal(tu_rng *r, int64_t n, double *Q)
{
    double *tau = malloc(sizeof(double) * (size_t)n);
    tu_fill_normal(r, Q, n * n);
    LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (lapack_int)n, (lapack_int)n, Q, (lapack_int)n, tau);
    double *d = malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) d[i] = Q[i + i * n] < 0 ? -1.0 : 1.0;
    LAPACKE_dorgqr(LAPACK_COL_MAJOR, (lapack_int)n, (lapack_int)n, (lapack_int)n, Q, (lapack_int)n, tau);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < n; i++) Q[i + j * n] *= d[j];
    free(d);
    free(tau);
}

void tu_sym_with_spectrum(tu_rng *r, int64_t n, const double *w, double *A)
{
    double *Q = malloc(sizeof(double) * (size_t)(n * n));
    tu_orthogonal(r, n, Q);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i <= j; i++) {
            double s = 0;
            for (int64_t l = 0; l < n; l++) s += Q[i + l * n] * w[l] * Q[j + l * n];
            A[i + j * n] = A[j + i * n] = s;
        }
    free(Q);
}

void tu_mat_with_singular_values(tu_rng *r, int64_t m, int64_t n, const double *s, double *A)
{
    int64_t k = m < n ? m : n;
    double *U = malloc(sizeof(double) * (size_t)(m * m)), *V = malloc(sizeof(double) * (size_t)(n * n));
    tu_orthogonal(r, m, U);
    tu_orthogonal(r, n, V);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < m; i++) {
            double acc = 0;
            for (int64_t l = 0; l < k; l++) acc += U[i + l * m] * s[l] * V[j + l * n];
            A[i + j * m] = acc;
        }
    free(U);
    free(V);
}

double tu_norm(const double *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i] * x[i];
    return sqrt(s);
}

double tu_diff_norm(const double *x, const double *y, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (x[i] - y[i]) * (x[i] - y[i]);
    return sqrt(s);
}

double tu_max_abs(const double *x, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

void tu_to_mat(const double *src, sg_mat *dst)
{
    int64_t st = dst->stride ? dst->stride : dst->ld * dst->cols;
    for (int64_t b = 0; b < dst->batch; b++)
        for (int64_t j = 0; j < dst->cols; j++)
            for (int64_t i = 0; i < dst->rows; i++) {
                double v = src[b * dst->rows * dst->cols + i + j * dst->rows];
                int64_t k = b * st + i + j * dst->ld;
                if (dst->dtype == SG_F32) ((float *)dst->data)[k] = (float)v;
                else ((double *)dst->data)[k] = v;
            }
}

void tu_from_mat(const sg_mat *src, double *dst)
{
    int64_t st = src->stride ? src->stride : src->ld * src->cols;
    for (int64_t b = 0; b < src->batch; b++)
        for (int64_t j = 0; j < src->cols; j++)
            for (int64_t i = 0; i < src->rows; i++) {
                int64_t k = b * st + i + j * src->ld;
                dst[b * src->rows * src->cols + i + j * src->rows] =
                    src->dtype == SG_F32 ? (double)((float *)src->data)[k] : ((double *)src->data)[k];
            }
}

sg_mat tu_alloc_mat(sg_dtype t, int64_t batch, int64_t rows, int64_t cols)
{
    size_t es = t == SG_F32 ? 4 : 8;
    void *p = calloc((size_t)(batch * rows * cols), es);
    if (!p) {
        fprintf(stderr, "tu_alloc_mat: out of memory\n");
        abort();
    }
    return sg_mat_dense(p, t, batch, rows, cols);
}

void tu_free_mat(sg_mat *m)
{
    free(m->data);
    m->data = NULL;
}

double tu_subspace_dist(int64_t n, const double *A, int64_t ka, const double *B, int64_t kb)
{
    double s = 0;
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < n; i++) {
            double pa = 0, pb = 0;
            for (int64_t l = 0; l < ka; l++) pa += A[i + l * n] * A[j + l * n];
            for (int64_t l = 0; l < kb; l++) pb += B[i + l * n] * B[j + l * n];
            s += (pa - pb) * (pa - pb);
        }
    return sqrt(s);
}

int tu_gpu_available(char *why, size_t len)
{
    char buf[256];
    if (!why || !len) {
        why = buf;
        len = sizeof buf;
    }
    int n = sg_cuda_devices(why, len);
    if (n > 0) return 1;
    fprintf(stderr, "GPU test skipped: %s\n", why);
    return 0;
}

double *tu_sym_batch(int64_t B, int64_t n, uint64_t seed)
{
    tu_rng r = tu_seed(seed);
    double *A = malloc(sizeof(double) * (size_t)(B * n * n)), *w = malloc(sizeof(double) * (size_t)n);
    if (!A || !w) abort();
    for (int64_t b = 0; b < B; b++) {
        for (int64_t i = 0; i < n; i++) w[i] = 4 * tu_uniform(&r) - 2;
        tu_sym_with_spectrum(&r, n, w, A + b * n * n);
    }
    free(w);
    return A;
}

/* This file is in a static library, so it is part of the executable: RTLD_NEXT searches after it. */
void *tu_next_symbol(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f) {
        fprintf(stderr, "tu_next_symbol: dlsym(RTLD_NEXT, %s) failed: %s\n", name, dlerror());
        abort();
    }
    return f;
}

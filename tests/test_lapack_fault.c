/* LAPACK failures the CPU backend must handle, injected: this executable defines the LAPACKE_?gesdd_work,
   ?gesvd_work, ?syevd_work, ?steqr_work and ?sterf_work that libspecgrad calls (an executable's definition comes first in the
   dynamic symbol lookup), forwards to the real ones through dlsym(RTLD_NEXT) and fails on a marker value
   in A(0,0) of the matrix LAPACK is handed:
     MK_GESDD_FAIL   gesdd reports non-convergence (info 1); the gesvd fallback runs and must give a valid SVD
     MK_BOTH_FAIL    gesdd and gesvd both report non-convergence: SG_ERR_NOCONV naming that matrix
     MK_GESDD_NAN    gesdd "succeeds" with a NaN singular value: SG_ERR_LAPACK naming that matrix
     MK_SYEVD_FAIL   syevd (n > 32) / sterf (n <= 32) reports non-convergence: SG_ERR_NOCONV naming that matrix
     MK_SYEVD_NAN    syevd / steqr "succeeds" with a NaN eigenvector entry (what Debian's OpenBLAS 0.3.21 ssyevd
                     did on the H200 host): SG_ERR_LAPACK naming that matrix
   Counters prove that each injected path was taken (else the assertions would pass vacuously). */
#include <criterion/criterion.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "specgrad.h"
#include "testutil.h"

#define MK_GESDD_FAIL 7001.0
#define MK_BOTH_FAIL 7002.0
#define MK_GESDD_NAN 7003.0
#define MK_SYEVD_FAIL 7004.0
#define MK_SYEVD_NAN 7005.0

static int n_gesvd_marked, n_injected; /* atomics: the backend runs matrices on several threads */
static void bump(int *c) { __atomic_fetch_add(c, 1, __ATOMIC_RELAXED); }
static int get(int *c) { return __atomic_load_n(c, __ATOMIC_RELAXED); }

/* gesdd / gesvd / syevd for one type: T, prefix P (s or d). lwork == -1 is a workspace query: forwarded. */
#define INTERPOSE(T, P)                                                                                        \
    lapack_int LAPACKE_##P##gesdd_work(int lay, char jobz, lapack_int m, lapack_int n, T *a, lapack_int lda, T *s, \
                                       T *u, lapack_int ldu, T *vt, lapack_int ldvt, T *work, lapack_int lwork, \
                                       lapack_int *iwork)                                                      \
    {                                                                                                          \
        typedef lapack_int (*fn)(int, char, lapack_int, lapack_int, T *, lapack_int, T *, T *, lapack_int, T *, \
                                 lapack_int, T *, lapack_int, lapack_int *);                                   \
        static fn f;                                                                                           \
        if (!f) f = (fn)tu_next_symbol("LAPACKE_" #P "gesdd_work");                                                       \
        const double mark = lwork == -1 ? 0 : (double)a[0];                                                    \
        if (mark == MK_GESDD_FAIL || mark == MK_BOTH_FAIL) {                                                   \
            bump(&n_injected);                                                                                 \
            return 1;                                                                                          \
        }                                                                                                      \
        lapack_int info = f(lay, jobz, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork, iwork);                 \
        if (mark == MK_GESDD_NAN && info == 0) {                                                               \
            bump(&n_injected);                                                                                 \
            s[0] = (T)NAN;                                                                                     \
        }                                                                                                      \
        return info;                                                                                           \
    }                                                                                                          \
    lapack_int LAPACKE_##P##gesvd_work(int lay, char ju, char jvt, lapack_int m, lapack_int n, T *a, lapack_int lda, \
                                       T *s, T *u, lapack_int ldu, T *vt, lapack_int ldvt, T *work,             \
                                       lapack_int lwork)                                                       \
    {                                                                                                          \
        typedef lapack_int (*fn)(int, char, char, lapack_int, lapack_int, T *, lapack_int, T *, T *, lapack_int, \
                                 T *, lapack_int, T *, lapack_int);                                            \
        static fn f;                                                                                           \
        if (!f) f = (fn)tu_next_symbol("LAPACKE_" #P "gesvd_work");                                                       \
        const double mark = lwork == -1 ? 0 : (double)a[0];                                                    \
        if (mark == MK_GESDD_FAIL) bump(&n_gesvd_marked);                                                      \
        if (mark == MK_BOTH_FAIL) {                                                                            \
            bump(&n_injected);                                                                                 \
            return 1;                                                                                          \
        }                                                                                                      \
        return f(lay, ju, jvt, m, n, a, lda, s, u, ldu, vt, ldvt, work, lwork);                                \
    }                                                                                                          \
    lapack_int LAPACKE_##P##syevd_work(int lay, char jobz, char uplo, lapack_int n, T *a, lapack_int lda, T *w,  \
                                       T *work, lapack_int lwork, lapack_int *iwork, lapack_int liwork)         \
    {                                                                                                          \
        typedef lapack_int (*fn)(int, char, char, lapack_int, T *, lapack_int, T *, T *, lapack_int, lapack_int *, \
                                 lapack_int);                                                                  \
        static fn f;                                                                                           \
        if (!f) f = (fn)tu_next_symbol("LAPACKE_" #P "syevd_work");                                                       \
        const double mark = lwork == -1 ? 0 : (double)a[0];                                                    \
        if (mark == MK_SYEVD_FAIL) {                                                                           \
            bump(&n_injected);                                                                                 \
            return 2;                                                                                          \
        }                                                                                                      \
        lapack_int info = f(lay, jobz, uplo, n, a, lda, w, work, lwork, iwork, liwork);                        \
        if (mark == MK_SYEVD_NAN && info == 0) {                                                               \
            bump(&n_injected);                                                                                 \
            a[n > 1 ? 1 : 0] = (T)NAN; /* an eigenvector entry (jobz V) */                                     \
        }                                                                                                      \
        return info;                                                                                           \
    }                                                                                                          \
    /* n <= 32: ?sytd2 (ours), then ?steqr (vectors) or ?sterf (values); A(0,0) is d[0] there */               \
    lapack_int LAPACKE_##P##steqr_work(int lay, char compz, lapack_int n, T *d, T *e, T *z, lapack_int ldz, T *work) \
    {                                                                                                          \
        typedef lapack_int (*fn)(int, char, lapack_int, T *, T *, T *, lapack_int, T *);                       \
        static fn f;                                                                                           \
        if (!f) f = (fn)tu_next_symbol("LAPACKE_" #P "steqr_work");                                           \
        const double mark = (double)d[0];                                                                      \
        if (mark == MK_SYEVD_FAIL) {                                                                           \
            bump(&n_injected);                                                                                 \
            return 2;                                                                                          \
        }                                                                                                      \
        lapack_int info = f(lay, compz, n, d, e, z, ldz, work);                                                \
        if (mark == MK_SYEVD_NAN && info == 0) {                                                               \
            bump(&n_injected);                                                                                 \
            z[n > 1 ? 1 : 0] = (T)NAN;                                                                         \
        }                                                                                                      \
        return info;                                                                                           \
    }                                                                                                          \
    lapack_int LAPACKE_##P##sterf_work(lapack_int n, T *d, T *e)                                               \
    {                                                                                                          \
        typedef lapack_int (*fn)(lapack_int, T *, T *);                                                        \
        static fn f;                                                                                           \
        if (!f) f = (fn)tu_next_symbol("LAPACKE_" #P "sterf_work");                                           \
        if ((double)d[0] == MK_SYEVD_FAIL) {                                                                   \
            bump(&n_injected);                                                                                 \
            return 2;                                                                                          \
        }                                                                                                      \
        return f(n, d, e);                                                                                     \
    }

INTERPOSE(float, s)
INTERPOSE(double, d)

static sg_ctx *ctx;
static void setup(void)
{
    cr_assert_eq(sg_create(&ctx, SG_BACKEND_CPU), SG_OK);
    cr_assert_eq(sg_set_threads(ctx, 3), SG_OK); /* several threads over the batch: the lowest index must win */
}
static void teardown(void) { sg_destroy(ctx); }
TestSuite(lapack_fault, .init = setup, .fini = teardown);

static const sg_dtype DT[2] = {SG_F32, SG_F64};
static double eps_of(sg_dtype t) { return t == SG_F32 ? 1.1920928955078125e-07 : 2.220446049250313e-16; }

/* B random m×n matrices with A(0,0) of matrix b set to marks[b] (0: untouched). */
static double *batch_with_marks(int64_t B, int64_t m, int64_t n, const double *marks, uint64_t seed)
{
    tu_rng r = tu_seed(seed);
    double *A = malloc(sizeof(double) * (size_t)(B * m * n));
    tu_fill_normal(&r, A, B * m * n);
    for (int64_t b = 0; b < B; b++)
        if (marks[b] != 0) A[b * m * n] = marks[b];
    return A;
}

/* ‖U diag(S) Vᵀ − A‖ / ‖A‖ of matrix b (economy factors). */
static double svd_residual(const double *A, const double *S, const double *U, const double *V, int64_t m, int64_t n)
{
    int64_t k = m < n ? m : n;
    double *US = malloc(sizeof(double) * (size_t)(m * k)), *R = malloc(sizeof(double) * (size_t)(m * n));
    for (int64_t j = 0; j < k; j++)
        for (int64_t i = 0; i < m; i++) US[i + j * m] = U[i + j * m] * S[j];
    tu_gemm(0, 1, m, n, k, US, V, R);
    double e = tu_diff_norm(R, A, m * n) / tu_norm(A, m * n);
    free(US);
    free(R);
    return e;
}

/* gesdd fails on matrices 1 and 4; the gesvd fallback solves them: SG_OK and a valid SVD everywhere. */
Test(lapack_fault, gesdd_failure_falls_back_to_gesvd)
{
    const int64_t B = 6, shapes[][2] = {{5, 5}, {7, 4}, {3, 6}};
    const double marks[6] = {0, MK_GESDD_FAIL, 0, 0, MK_GESDD_FAIL, 0};
    for (int d = 0; d < 2; d++)
        for (int si = 0; si < 3; si++) {
            const int64_t m = shapes[si][0], n = shapes[si][1], k = m < n ? m : n;
            double *A = batch_with_marks(B, m, n, marks, 10 + si);
            sg_mat a = tu_alloc_mat(DT[d], B, m, n), S = tu_alloc_mat(DT[d], B, k, 1), U = tu_alloc_mat(DT[d], B, m, k),
                   V = tu_alloc_mat(DT[d], B, n, k);
            tu_to_mat(A, &a);
            const int before = get(&n_gesvd_marked);
            cr_assert_eq(sg_svd(ctx, &a, 0, &S, &U, &V), SG_OK, "%s", sg_last_error(ctx));
            cr_expect_geq(get(&n_gesvd_marked) - before, 2, "the gesvd fallback did not run on both marked matrices");
            double *s = malloc(sizeof(double) * (size_t)(B * k)), *u = malloc(sizeof(double) * (size_t)(B * m * k)),
                   *v = malloc(sizeof(double) * (size_t)(B * n * k)), *a2 = malloc(sizeof(double) * (size_t)(B * m * n));
            tu_from_mat(&S, s), tu_from_mat(&U, u), tu_from_mat(&V, v), tu_from_mat(&a, a2); /* a2: A as stored */
            for (int64_t b = 0; b < B; b++) {
                double e = svd_residual(a2 + b * m * n, s + b * k, u + b * m * k, v + b * n * k, m, n);
                cr_expect_leq(e, 50 * eps_of(DT[d]) * (double)(m + n), "%lld×%lld matrix %lld: residual %g", (long long)m,
                              (long long)n, (long long)b, e);
                for (int64_t i = 1; i < k; i++)
                    cr_expect_geq(s[b * k + i - 1], s[b * k + i], "matrix %lld: σ not descending", (long long)b);
            }
            free(A), free(s), free(u), free(v), free(a2);
            tu_free_mat(&a), tu_free_mat(&S), tu_free_mat(&U), tu_free_mat(&V);
        }
}

/* gesdd and gesvd both fail on matrices 3 and 5 (gesdd alone on 1): SG_ERR_NOCONV naming matrix 3, for
   every op that runs an SVD on the CPU. */
Test(lapack_fault, gesdd_and_gesvd_failure_names_the_lowest_matrix)
{
    const int64_t B = 6, m = 6, n = 4;
    const double marks[6] = {0, MK_GESDD_FAIL, 0, MK_BOTH_FAIL, 0, MK_BOTH_FAIL};
    for (int d = 0; d < 2; d++) {
        double *A = batch_with_marks(B, m, n, marks, 20 + d);
        sg_mat a = tu_alloc_mat(DT[d], B, m, n), S = tu_alloc_mat(DT[d], B, n, 1), N = tu_alloc_mat(DT[d], B, n, n),
               X = tu_alloc_mat(DT[d], B, m, 2), Y = tu_alloc_mat(DT[d], B, n, 2);
        tu_to_mat(A, &a);
        int64_t rk[6], nul[6];
        const int before = get(&n_injected);
        sg_status st[4]; /* in this order: the report checked below is lstsq's */
        st[0] = sg_svd(ctx, &a, 0, &S, NULL, NULL);
        st[1] = sg_rank(ctx, &a, 0, -1, rk);
        st[2] = sg_nullspace(ctx, &a, 0, -1, &N, nul);
        st[3] = sg_lstsq(ctx, &a, &X, 0, -1, &Y, rk);
        const char *names[4] = {"svd", "rank", "nullspace", "lstsq"};
        for (int o = 0; o < 4; o++)
            cr_expect_eq(st[o], SG_ERR_NOCONV, "%s %s: status %s", d ? "f64" : "f32", names[o], sg_status_string(st[o]));
        /* the last call's report (lstsq): the lowest failing matrix, by its index, in status and text */
        cr_expect_eq(sg_failed_index(ctx), 3, "%s", sg_last_error(ctx));
        cr_expect(strstr(sg_last_error(ctx), "matrix 3") && strstr(sg_last_error(ctx), "gesvd"), "%s", sg_last_error(ctx));
        cr_expect_geq(get(&n_injected) - before, 8, "injected failures: %d", get(&n_injected) - before);
        free(A);
        tu_free_mat(&a), tu_free_mat(&S), tu_free_mat(&N), tu_free_mat(&X), tu_free_mat(&Y);
    }
}

/* A "successful" gesdd / syevd with a NaN in its output (finite input): SG_ERR_LAPACK naming the matrix, not
   SG_OK with junk; with the input check off the output is not checked either (documented propagation). */
Test(lapack_fault, nan_output_of_a_successful_call_is_reported)
{
    const int64_t B = 5, n = 4;
    for (int d = 0; d < 2; d++) {
        const double svd_marks[5] = {0, 0, MK_GESDD_NAN, 0, MK_GESDD_NAN};
        double *A = batch_with_marks(B, n, n, svd_marks, 30 + d);
        sg_mat a = tu_alloc_mat(DT[d], B, n, n), S = tu_alloc_mat(DT[d], B, n, 1), V = tu_alloc_mat(DT[d], B, n, n);
        tu_to_mat(A, &a);
        int before = get(&n_injected);
        cr_expect_eq(sg_svd(ctx, &a, 0, &S, NULL, NULL), SG_ERR_LAPACK, "%s", sg_last_error(ctx));
        cr_expect_eq(sg_failed_index(ctx), 2, "%s", sg_last_error(ctx));
        cr_expect(strstr(sg_last_error(ctx), "NaN/Inf") && strstr(sg_last_error(ctx), "matrix 2"), "%s", sg_last_error(ctx));
        cr_expect_geq(get(&n_injected) - before, 2);

        free(A);
        tu_free_mat(&a), tu_free_mat(&S), tu_free_mat(&V);

        /* eigh: symmetric inputs, marked on the diagonal; n = 4 runs ?sytd2 + ?steqr, n = 40 ?syevd */
        for (int64_t ne = 4; ne <= 40; ne += 36) {
            tu_rng r = tu_seed(40 + d);
            double *w = malloc(sizeof(double) * (size_t)ne), *E = malloc(sizeof(double) * (size_t)(B * ne * ne));
            for (int64_t i = 0; i < ne; i++) w[i] = -1 + 0.5 * (double)i;
            for (int64_t b = 0; b < B; b++) tu_sym_with_spectrum(&r, ne, w, E + b * ne * ne);
            E[1 * ne * ne] = MK_SYEVD_NAN;
            E[3 * ne * ne] = MK_SYEVD_NAN;
            sg_mat e = tu_alloc_mat(DT[d], B, ne, ne), W = tu_alloc_mat(DT[d], B, ne, 1), Ve = tu_alloc_mat(DT[d], B, ne, ne);
            tu_to_mat(E, &e);
            const char *solver = ne <= 32 ? "steqr" : "syevd";
            before = get(&n_injected);
            cr_expect_eq(sg_eigh(ctx, &e, &W, &Ve), SG_ERR_LAPACK, "%s", sg_last_error(ctx));
            cr_expect_eq(sg_failed_index(ctx), 1, "%s", sg_last_error(ctx));
            cr_expect(strstr(sg_last_error(ctx), solver) && strstr(sg_last_error(ctx), "matrix 1"), "n = %lld: %s",
                      (long long)ne, sg_last_error(ctx));
            cr_expect_geq(get(&n_injected) - before, 2, "n = %lld: the %s interposer was not reached", (long long)ne,
                          solver);
            cr_assert_eq(sg_set_check_finite(ctx, 0), SG_OK);
            cr_expect_eq(sg_eigh(ctx, &e, &W, &Ve), SG_OK, "unchecked: the NaN propagates (%s)", sg_last_error(ctx));
            cr_assert_eq(sg_set_check_finite(ctx, 1), SG_OK);
            free(w), free(E);
            tu_free_mat(&e), tu_free_mat(&W), tu_free_mat(&Ve);
        }
    }
}

/* eigh non-convergence (values only: ?sterf at n = 5, ?syevd at n = 40): SG_ERR_NOCONV naming the lowest
   failing matrix; the others are still solved. */
Test(lapack_fault, syevd_failure_names_the_lowest_matrix)
{
    const int64_t B = 7;
    for (int64_t n = 5; n <= 40; n += 35)
    for (int d = 0; d < 2; d++) {
        double *w = malloc(sizeof(double) * (size_t)n);
        for (int64_t i = 0; i < n; i++) w[i] = -2 + (double)i;
        tu_rng r = tu_seed(50 + d);
        double *A = malloc(sizeof(double) * (size_t)(B * n * n));
        for (int64_t b = 0; b < B; b++) tu_sym_with_spectrum(&r, n, w, A + b * n * n);
        A[4 * n * n] = MK_SYEVD_FAIL;
        A[6 * n * n] = MK_SYEVD_FAIL;
        sg_mat a = tu_alloc_mat(DT[d], B, n, n), W = tu_alloc_mat(DT[d], B, n, 1);
        tu_to_mat(A, &a);
        const int before = get(&n_injected);
        cr_expect_eq(sg_eigh(ctx, &a, &W, NULL), SG_ERR_NOCONV, "%s", sg_last_error(ctx));
        cr_expect_eq(sg_failed_index(ctx), 4, "%s", sg_last_error(ctx));
        cr_expect(strstr(sg_last_error(ctx), "did not converge") && strstr(sg_last_error(ctx), "matrix 4"), "%s",
                  sg_last_error(ctx));
        cr_expect_geq(get(&n_injected) - before, 2);
        double *Wo = malloc(sizeof(double) * (size_t)(B * n));
        tu_from_mat(&W, Wo);
        for (int64_t i = 0; i < n; i++)
            cr_expect_leq(fabs(Wo[i] - w[i]), 100 * eps_of(DT[d]) * fmax(2, (double)n), "healthy matrix 0 not solved: λ%lld = %g",
                          (long long)i, Wo[i]);
        free(A), free(Wo), free(w);
        tu_free_mat(&a), tu_free_mat(&W);
    }
}

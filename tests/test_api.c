/* Context, status strings and front-end validation: every bad argument gets a status and a message,
   and no output is touched. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "specgrad.h"
#include "opcases.h"
#include "testutil.h"

static sg_ctx *ctx;
static void setup(void) { cr_assert_eq(sg_create(&ctx, SG_BACKEND_CPU), SG_OK); }
static void teardown(void) { sg_destroy(ctx); }
TestSuite(api, .init = setup, .fini = teardown);

Test(api, status_strings_are_distinct)
{
    for (int a = SG_OK; a <= SG_ERR_CANCELLED; a++)
        for (int b = a + 1; b <= SG_ERR_CANCELLED; b++)
            cr_expect_str_neq(sg_status_string((sg_status)a), sg_status_string((sg_status)b));
    cr_expect_str_eq(sg_backend_name(sg_get_backend(ctx)), "cpu");
}

Test(api, create_rejects_bad_args)
{
    cr_expect_eq(sg_create(NULL, SG_BACKEND_CPU), SG_ERR_ARG);
    sg_ctx *c = (sg_ctx *)0x1;
    cr_expect_eq(sg_create(&c, (sg_backend)42), SG_ERR_ARG);
    cr_expect_null(c);
}

Test(api, cuda_backend_without_device_says_why)
{
    char why[256] = "";
    if (sg_cuda_devices(why, sizeof why) > 0) cr_skip_test("a GPU exists: this test covers the no-GPU path");
    cr_expect_gt(strlen(why), 0);
    sg_ctx *c = NULL;
    cr_expect_eq(sg_create(&c, SG_BACKEND_CUDA), SG_ERR_NODEVICE);
    cr_expect_null(c);
    cr_expect_eq(sg_create(&c, SG_BACKEND_AUTO), SG_OK);
    cr_expect_eq(sg_get_backend(c), SG_BACKEND_CPU);
    cr_expect_eq(sg_set_memspace(c, SG_MEM_DEVICE), SG_ERR_ARG, "device memory on the CPU backend must fail");
    cr_expect(strstr(sg_last_error(c), "CUDA") != NULL, "message: %s", sg_last_error(c));
    sg_destroy(c);
}

Test(api, shape_and_pointer_errors_leave_outputs_untouched)
{
    double A[9] = {2, 1, 0, 1, 2, 0, 0, 0, 3}, W[3] = {7, 7, 7}, V[9];
    for (int i = 0; i < 9; i++) V[i] = 7;
    sg_mat a = sg_mat_dense(A, SG_F64, 1, 3, 3), w = sg_mat_dense(W, SG_F64, 1, 3, 1), v = sg_mat_dense(V, SG_F64, 1, 3, 3);

    cr_expect_eq(sg_eigh(NULL, &a, &w, &v), SG_ERR_ARG);
    cr_expect_eq(sg_eigh(ctx, NULL, &w, &v), SG_ERR_ARG);
    cr_expect_neq(strlen(sg_last_error(ctx)), 0);

    sg_mat bad = a;
    bad.data = NULL;
    cr_expect_eq(sg_eigh(ctx, &bad, &w, &v), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "null") != NULL, "%s", sg_last_error(ctx));

    bad = a;
    bad.cols = 2; /* not square */
    cr_expect_eq(sg_eigh(ctx, &bad, &w, &v), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "shape") != NULL, "%s", sg_last_error(ctx));

    bad = a;
    bad.ld = 2; /* ld < rows */
    cr_expect_eq(sg_eigh(ctx, &bad, &w, &v), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "ld") != NULL, "%s", sg_last_error(ctx));

    bad = a;
    bad.rows = bad.cols = 0;
    cr_expect_eq(sg_eigh(ctx, &bad, &w, &v), SG_ERR_ARG);
    bad = a;
    bad.batch = -1;
    cr_expect_eq(sg_eigh(ctx, &bad, &w, &v), SG_ERR_ARG);

    bad = a;
    bad.batch = INT64_MAX / 2; /* batch·stride·8 overflows */
    sg_mat wbig = w;
    wbig.batch = bad.batch;
    cr_expect_eq(sg_eigh(ctx, &bad, &wbig, NULL), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "overflow") != NULL, "%s", sg_last_error(ctx));

    bad = a;
    bad.stride = 4; /* matrices overlap */
    bad.batch = 2;
    cr_expect_eq(sg_eigh(ctx, &bad, &w, &v), SG_ERR_ARG);

    sg_mat wf = w;
    wf.dtype = SG_F32;
    cr_expect_eq(sg_eigh(ctx, &a, &wf, &v), SG_ERR_DTYPE);

    sg_mat wshort = w;
    wshort.rows = 2;
    cr_expect_eq(sg_eigh(ctx, &a, &wshort, &v), SG_ERR_ARG);

    for (int i = 0; i < 3; i++) cr_expect_eq(W[i], 7.0);
    for (int i = 0; i < 9; i++) cr_expect_eq(V[i], 7.0);
}

Test(api, nonfinite_input_names_matrix_and_element)
{
    double A[18];
    for (int i = 0; i < 18; i++) A[i] = i == 9 + 4 ? NAN : 1.0; /* matrix 1, element (1,1) */
    double W[6] = {0};
    sg_mat a = sg_mat_dense(A, SG_F64, 2, 3, 3), w = sg_mat_dense(W, SG_F64, 2, 3, 1);
    cr_expect_eq(sg_eigh(ctx, &a, &w, NULL), SG_ERR_NONFINITE);
    cr_expect_eq(sg_failed_index(ctx), 1);
    cr_expect(strstr(sg_last_error(ctx), "NaN") != NULL, "%s", sg_last_error(ctx));
    A[13] = INFINITY;
    cr_expect_eq(sg_rank(ctx, &a, 0, -1, (int64_t[2]){0}), SG_ERR_NONFINITE);
    cr_expect(strstr(sg_last_error(ctx), "Inf") != NULL, "%s", sg_last_error(ctx));
}

static int64_t sg_stride_of_test(const sg_mat *m) { return m->stride ? m->stride : m->ld * m->cols; }

/* sg_*_tols: a bad element is SG_ERR_ARG naming its matrix, before anything is written, in every entry
   point; -inf rtol is the default as for the scalar pair; the arrays are inputs (an output over them is
   an overlap); NULL arrays are the scalar defaults. */
Test(api, per_matrix_tolerance_errors)
{
    double A[12] = {1, 0, 0, 1, 2, 0, 0, 0, 3, 0, 0, 1e-20}, X[6] = {1, 1, 1, 1, 1, 1}, Y[6], N[12];
    int64_t r[3], q[3];
    sg_mat a = sg_mat_dense(A, SG_F64, 3, 2, 2), x = sg_mat_dense(X, SG_F64, 3, 2, 1), y = sg_mat_dense(Y, SG_F64, 3, 2, 1),
           n = sg_mat_dense(N, SG_F64, 3, 2, 2);
    const double good[3] = {0, 0.5, 0}, neg[3] = {0, 0, -1}, nan1[3] = {0, NAN, 0}, pinf[3] = {0, 0, INFINITY},
                 minf[3] = {-INFINITY, -1, 0.1};
    for (int op = 0; op < 4; op++)
        for (int bad = 0; bad < 3; bad++) {
            const double *at = bad == 0 ? neg : good, *rt = bad == 1 ? nan1 : bad == 2 ? pinf : NULL;
            int64_t want = bad == 0 ? 2 : bad == 1 ? 1 : 2;
            for (int i = 0; i < 6; i++) Y[i] = 7;
            for (int i = 0; i < 3; i++) r[i] = q[i] = -5;
            sg_status s = op == 0   ? sg_rank_tols(ctx, &a, at, rt, r)
                          : op == 1 ? sg_nullspace_tols(ctx, &a, at, rt, &n, q)
                          : op == 2 ? sg_project_tols(ctx, &a, &x, SG_PROJ_NULL, at, rt, &y)
                                    : sg_lstsq_tols(ctx, &a, &x, at, rt, &y, r);
            cr_expect_eq(s, SG_ERR_ARG, "op %d case %d", op, bad);
            cr_expect_eq(sg_failed_index(ctx), want, "op %d case %d: index %lld", op, bad, (long long)sg_failed_index(ctx));
            char msg[32];
            snprintf(msg, sizeof msg, "matrix %lld", (long long)want);
            cr_expect(strstr(sg_last_error(ctx), msg) != NULL, "%s", sg_last_error(ctx));
            cr_expect(Y[0] == 7 && Y[5] == 7 && r[0] == -5 && r[2] == -5 && q[1] == -5, "op %d: output written on error", op);
        }
    /* -inf rtol selects the default, as the scalar pair's; σ: (1, 1), (2, 0), (3, 1e-20); cutoffs: the default,
       atol 0.5, rtol 0.1 */
    cr_expect_eq(sg_rank_tols(ctx, &a, good, minf, r), SG_OK, "%s", sg_last_error(ctx));
    cr_expect(r[0] == 2 && r[1] == 1 && r[2] == 1, "ranks %lld %lld %lld", (long long)r[0], (long long)r[1], (long long)r[2]);
    const double big[3] = {0, 2.5, 0};
    cr_expect_eq(sg_rank_tols(ctx, &a, big, NULL, r), SG_OK);
    cr_expect(r[0] == 2 && r[1] == 0 && r[2] == 1, "atol 2.5 cuts σ = 2 of matrix 1 only: %lld %lld %lld", (long long)r[0],
              (long long)r[1], (long long)r[2]);
    int64_t r0[3];
    cr_expect_eq(sg_rank_tols(ctx, &a, NULL, NULL, r), SG_OK);
    cr_expect_eq(sg_rank(ctx, &a, 0, -1, r0), SG_OK);
    cr_expect(memcmp(r, r0, sizeof r) == 0, "NULL arrays: the scalar default");
    /* an output over a tolerance array */
    double tb[6] = {0, 0, 0, 0, 0, 0};
    cr_expect_eq(sg_rank_tols(ctx, &a, tb, NULL, (int64_t *)(void *)tb), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "overlaps input atol") != NULL, "%s", sg_last_error(ctx));
    sg_mat yt = sg_mat_dense(tb, SG_F64, 3, 2, 1);
    cr_expect_eq(sg_lstsq_tols(ctx, &a, &x, NULL, tb + 2, &yt, NULL), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "X overlaps rtol") != NULL, "%s", sg_last_error(ctx));
}

/* The NaN/Inf scan of a large batch runs on several threads: the lowest bad matrix and its first bad
   element are reported whichever thread finds what, in both dtypes and with padded layouts. */
Test(api, parallel_nonfinite_scan_reports_the_lowest_matrix)
{
    enum { B = 6000, N = 4 };
    cr_assert_eq(sg_set_threads(ctx, 4), SG_OK);
    for (int t = SG_F32; t <= SG_F64; t++)
        for (int pad = 0; pad <= 1; pad++) {
            sg_mat a = tu_alloc_mat((sg_dtype)t, B, N, N);
            if (pad) { /* ld 5, stride 23: the padding holds NaN, which must not count */
                free(a.data);
                a.ld = N + 1, a.stride = a.ld * N + 3;
                a.data = malloc((size_t)(a.stride * B) * (t == SG_F32 ? 4 : 8));
                for (int64_t e = 0; e < a.stride * B; e++)
                    if (t == SG_F32) ((float *)a.data)[e] = NAN;
                    else ((double *)a.data)[e] = NAN;
            }
            const int64_t bad[][3] = {{5900, 3, 0}, {4100, 2, 1}, {4100, 0, 3}, {2999, 1, 2}};
            for (int64_t b = 0; b < B; b++)
                for (int j = 0; j < N; j++)
                    for (int i = 0; i < N; i++) {
                        int64_t k = b * sg_stride_of_test(&a) + i + j * a.ld;
                        if (t == SG_F32) ((float *)a.data)[k] = 1;
                        else ((double *)a.data)[k] = 1;
                    }
            for (int q = 0; q < 4; q++) {
                int64_t k = bad[q][0] * sg_stride_of_test(&a) + bad[q][1] + bad[q][2] * a.ld;
                double v = q == 3 ? INFINITY : NAN;
                if (t == SG_F32) ((float *)a.data)[k] = (float)v;
                else ((double *)a.data)[k] = v;
                int64_t r[B];
                cr_expect_eq(sg_rank(ctx, &a, 0, -1, r), SG_ERR_NONFINITE);
                const int64_t want = q < 3 ? (q == 0 ? 5900 : 4100) : 2999;
                cr_expect_eq(sg_failed_index(ctx), want, "dtype %d pad %d step %d: index %lld", t, pad, q,
                             (long long)sg_failed_index(ctx));
                char msg[96];
                const int64_t *e = bad[q == 2 ? 1 : q]; /* (0,3) of matrix 4100 comes after its (2,1) in column order */
                snprintf(msg, sizeof msg, "%s at element (%lld,%lld) (matrix %lld)", q == 3 ? "Inf" : "NaN", (long long)e[1],
                         (long long)e[2], (long long)want);
                cr_expect(strstr(sg_last_error(ctx), msg) != NULL, "%s (want %s)", sg_last_error(ctx), msg);
            }
            free(a.data);
        }
    cr_assert_eq(sg_set_threads(ctx, 0), SG_OK);
}

Test(api, option_errors)
{
    double A[4] = {1, 0, 0, 1}, X[2] = {1, 1}, Y[2];
    int64_t r;
    sg_mat a = sg_mat_dense(A, SG_F64, 1, 2, 2), x = sg_mat_dense(X, SG_F64, 1, 2, 1), y = sg_mat_dense(Y, SG_F64, 1, 2, 1);
    cr_expect_eq(sg_rank(ctx, &a, -1.0, -1, &r), SG_ERR_ARG);
    cr_expect_eq(sg_rank(ctx, &a, NAN, -1, &r), SG_ERR_ARG);
    cr_expect_eq(sg_rank(ctx, &a, 0, -1, NULL), SG_ERR_ARG);
    cr_expect_eq(sg_project(ctx, &a, &x, (sg_proj)5, 0, -1, &y), SG_ERR_ARG);
    /* a basis of R² with three columns */
    double Q3[6] = {1, 0, 0, 1, 0, 0};
    sg_mat q3 = sg_mat_dense(Q3, SG_F64, 1, 2, 3);
    Y[0] = Y[1] = 7;
    cr_expect_eq(sg_project_basis(ctx, &q3, &x, 0, &y), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "at most 2 columns") != NULL, "%s", sg_last_error(ctx));
    cr_expect(Y[0] == 7 && Y[1] == 7, "output written on error");
    /* Y may be X but not Q: Q 2×1 is the first column of a, Y 2×1 its second (disjoint) or its first */
    sg_mat q1 = sg_mat_dense(A, SG_F64, 1, 2, 1), y2 = sg_mat_dense(A + 2, SG_F64, 1, 2, 1);
    cr_expect_eq(sg_project_basis(ctx, &q1, &x, 0, &y2), SG_OK, "%s", sg_last_error(ctx));
    A[2] = 0, A[3] = 1;
    cr_expect_eq(sg_project_basis(ctx, &q1, &x, 0, &q1), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "overlaps Q") != NULL, "%s", sg_last_error(ctx));
    cr_expect(A[0] == 1 && A[1] == 0, "Q written on error");
    cr_expect_eq(sg_eigh_backward(ctx, &x, &a, NULL, NULL, (sg_degen)9, 0, &a), SG_ERR_ARG);
    sg_fn fn = {SG_FN_CALLBACK, 0, NULL, NULL, NULL};
    cr_expect_eq(sg_matfunc(ctx, &a, &fn, &a, NULL, NULL), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "callback") != NULL, "%s", sg_last_error(ctx));
    cr_expect_eq(sg_regularizer(ctx, (sg_reg)99, &a, NULL, &x, NULL), SG_ERR_ARG);
    sg_mat rect = sg_mat_dense(A, SG_F64, 1, 2, 1);
    double l;
    sg_mat loss = sg_mat_dense(&l, SG_F64, 1, 1, 1);
    cr_expect_eq(sg_regularizer(ctx, SG_REG_LOGDET, &rect, NULL, &loss, NULL), SG_ERR_ARG);
}

Test(api, negative_infinite_rtol_selects_default)
{
    /* diag(1, 1e-17): the default rtol (2·eps) drops the small value; rtol = -inf must do the same. */
    double A[4] = {1, 0, 0, 1e-17};
    int64_t r1 = -1, r2 = -1;
    sg_mat a = sg_mat_dense(A, SG_F64, 1, 2, 2);
    cr_assert_eq(sg_rank(ctx, &a, 0, -1, &r1), SG_OK, "%s", sg_last_error(ctx));
    cr_assert_eq(sg_rank(ctx, &a, 0, -INFINITY, &r2), SG_OK, "%s", sg_last_error(ctx));
    cr_expect_eq(r1, 1);
    cr_expect_eq(r2, r1);
    cr_expect_eq(sg_rank(ctx, &a, 0, INFINITY, &r2), SG_ERR_ARG);
}

/* Outputs must not overlap each other or an input: each overlap below is SG_ERR_ARG naming both
   arguments, with nothing written. In place (an output that is an input itself: same data, ld and stride)
   is allowed where the op says so (eigh V = A, matfunc F or V = A, project(_basis) Y = X, lstsq X = B)
   and gives the out-of-place result; the same data with another layout is refused. Interleaved records (V and W of
   matrix b next to each other) do not overlap. */
Test(api, overlapping_arguments)
{
    enum { n = 4, B = 3, NN = n * n * B };
    double *A = tu_sym_batch(B, n, 7), *buf = calloc(4 * NN, sizeof(double)), *ref = calloc(2 * NN, sizeof(double));
    cr_assert(A && buf && ref);
    double keep[4 * NN];
    sg_fn sq = {SG_FN_EXP, 0, NULL, NULL, NULL};
#define REFUSED(call, want)                                                                             \
    do {                                                                                                \
        for (int i_ = 0; i_ < 4 * NN; i_++) buf[i_] = 1234.5 + i_;                                     \
        memcpy(keep, buf, sizeof keep);                                                                 \
        cr_expect_eq(call, SG_ERR_ARG, "%s: %s", #call, sg_last_error(ctx));                            \
        cr_expect(strstr(sg_last_error(ctx), want) != NULL, "%s: '%s' wanted in '%s'", #call, want,    \
                  sg_last_error(ctx));                                                                  \
        cr_expect(memcmp(keep, buf, sizeof keep) == 0, "%s wrote on an argument error", #call);          \
    } while (0)
    sg_mat a = sg_mat_dense(A, SG_F64, B, n, n);
    /* out/out: W inside V; N's nullity array inside N; lstsq's rank inside X; loss inside gA */
    sg_mat V = sg_mat_dense(buf, SG_F64, B, n, n), Win = sg_mat_dense(buf + 5, SG_F64, B, n, 1);
    REFUSED(sg_eigh(ctx, &a, &Win, &V), "outputs W and V overlap");
    REFUSED(sg_nullspace(ctx, &a, 0, -1, &V, (int64_t *)(buf + NN - 2)), "outputs N and nullity overlap");
    sg_mat X = sg_mat_dense(buf + NN, SG_F64, B, n, n), Bm = sg_mat_dense(buf + 2 * NN, SG_F64, B, n, n);
    REFUSED(sg_lstsq(ctx, &a, &Bm, 0, -1, &X, (int64_t *)(buf + NN + 1)), "outputs X and rank overlap");
    sg_mat loss = sg_mat_dense(buf + 3, SG_F64, B, 1, 1);
    REFUSED(sg_regularizer(ctx, SG_REG_NUCLEAR, &Bm, NULL, &loss, &Bm), "output gA overlaps input A");
    REFUSED(sg_regularizer(ctx, SG_REG_NUCLEAR, &a, NULL, &loss, &V), "outputs loss and gA overlap");
    /* out/in where the op has no in-place form */
    sg_mat S = sg_mat_dense(buf + 3 * NN, SG_F64, B, n, 1);
    REFUSED(sg_svd(ctx, &V, 0, &S, &V, &X), "output U overlaps input A");
    sg_mat Bshift = sg_mat_dense(buf + 2 * NN + 1, SG_F64, B, n, n);
    REFUSED(sg_lstsq(ctx, &a, &Bm, 0, -1, &Bshift, NULL), "X overlaps B without being B itself");
    REFUSED(sg_lstsq(ctx, &Bm, &X, 0, -1, &Bm, NULL), "X overlaps A (in place, X may be B itself");
    REFUSED(sg_rank(ctx, &V, 0, -1, (int64_t *)(buf + 2)), "output rank overlaps input A");
    REFUSED(sg_nullspace(ctx, &V, 0, -1, &V, NULL), "output N overlaps input A");
    sg_mat w = sg_mat_dense(buf + 3 * NN, SG_F64, B, n, 1);
    REFUSED(sg_eigh_backward(ctx, &w, &V, NULL, &X, SG_DEGEN_EXACT, 0, &X), "output gA overlaps input gV");
    REFUSED(sg_matfunc_backward(ctx, &w, &V, &sq, &X, &V), "output gA overlaps input V");
    sg_mat s2 = sg_mat_dense(buf + 3 * NN, SG_F64, B, n, 1);
    REFUSED(sg_svd_backward(ctx, &V, &s2, &X, NULL, &s2, NULL, SG_DEGEN_EXACT, 0, &X), "output gA overlaps input V");
    /* an in-place pair with another input, or with the same data but another layout */
    REFUSED(sg_project(ctx, &V, &X, SG_PROJ_NULL, 0, -1, &V), "Y overlaps A (in place, Y may be X itself");
    sg_mat Vpad = V;
    Vpad.ld = n + 1, Vpad.stride = (n + 1) * n;
    REFUSED(sg_eigh(ctx, &V, &S, &Vpad), "V overlaps A without being A itself");
    sg_mat Vshift = sg_mat_dense(buf + n, SG_F64, B, n, n);
    REFUSED(sg_matfunc(ctx, &V, &sq, &Vshift, NULL, NULL), "F overlaps A without being A itself");
    REFUSED(sg_matfunc(ctx, &a, &sq, &X, &Win, &V), "outputs W and V overlap");

    /* in place where allowed: the out-of-place bytes */
    double w0[B * n], w1[B * n];
    sg_mat W0 = sg_mat_dense(w0, SG_F64, B, n, 1), W1 = sg_mat_dense(w1, SG_F64, B, n, 1),
           R = sg_mat_dense(ref, SG_F64, B, n, n);
    memcpy(buf, A, sizeof(double) * NN);
    cr_assert_eq(sg_eigh(ctx, &a, &W0, &R), SG_OK, "%s", sg_last_error(ctx));
    cr_assert_eq(sg_eigh(ctx, &V, &W1, &V), SG_OK, "eigh V = A: %s", sg_last_error(ctx));
    cr_expect(memcmp(w0, w1, sizeof w0) == 0 && memcmp(ref, buf, sizeof(double) * NN) == 0, "eigh in place differs");
    memcpy(buf, A, sizeof(double) * NN);
    cr_assert_eq(sg_matfunc(ctx, &a, &sq, &R, NULL, NULL), SG_OK, "%s", sg_last_error(ctx));
    cr_assert_eq(sg_matfunc(ctx, &V, &sq, &V, NULL, NULL), SG_OK, "matfunc F = A: %s", sg_last_error(ctx));
    cr_expect(memcmp(ref, buf, sizeof(double) * NN) == 0, "matfunc in place differs");
    memcpy(buf, A, sizeof(double) * NN); /* lstsq X = B with square A: B's bytes are A's here */
    cr_assert_eq(sg_lstsq(ctx, &a, &a, 0, -1, &R, NULL), SG_OK, "%s", sg_last_error(ctx));
    cr_assert_eq(sg_lstsq(ctx, &a, &V, 0, -1, &V, NULL), SG_OK, "lstsq X = B: %s", sg_last_error(ctx));
    cr_expect(memcmp(ref, buf, sizeof(double) * NN) == 0, "lstsq in place differs");

    /* interleaved records: matrix b's V (n×n) then its W (n), stride n·n + n */
    sg_mat Vi = sg_mat_dense(buf, SG_F64, B, n, n), Wi = sg_mat_dense(buf + n * n, SG_F64, B, n, 1);
    Vi.stride = Wi.stride = n * n + n;
    cr_assert_eq(sg_eigh(ctx, &a, &W0, &R), SG_OK, "%s", sg_last_error(ctx));
    cr_expect_eq(sg_eigh(ctx, &a, &Wi, &Vi), SG_OK, "interleaved W and V: %s", sg_last_error(ctx));
    for (int b = 0; b < B; b++) {
        cr_expect(memcmp(w0 + b * n, buf + b * (n * n + n) + n * n, sizeof(double) * n) == 0, "W of matrix %d", b);
        cr_expect(memcmp(ref + b * n * n, buf + b * (n * n + n), sizeof(double) * n * n) == 0, "V of matrix %d", b);
    }
    /* ... and W one element too far back into V is refused */
    Wi.data = buf + n * n - 1;
    REFUSED(sg_eigh(ctx, &a, &Wi, &Vi), "outputs W and V overlap");
#undef REFUSED
    free(A), free(buf), free(ref);
}

/* sg_set_progress on every op: one thread and every = 0 gives a report per matrix (all but the first
   begun), several threads keep the contract, a long `every` leaves only the final 1.0, an error no 1.0. */
Test(api, progress_reports_every_op)
{
    enum { B = 48 };
    tu_rng r = tu_seed(7);
    tu_prog p;
    cr_expect_eq(sg_set_progress(ctx, tu_prog_cb, -1, &p), SG_ERR_ARG);
    cr_expect_eq(sg_set_progress(ctx, tu_prog_cb, NAN, &p), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "every"), "%s", sg_last_error(ctx));
    for (int o = 0; o < tu_nops; o++) {
        const tu_op *op = &tu_ops[o];
        tu_op_args a;
        tu_op_make(op, ctx, B, &r, &a);
        const int threads[] = {1, 4};
        for (int t = 0; t < 2; t++) {
            sg_set_threads(ctx, threads[t]);
            tu_prog_start(&p);
            cr_assert_eq(sg_set_progress(ctx, tu_prog_cb, 0, &p), SG_OK);
            sg_status st = op->call(&a);
            cr_expect_eq(st, SG_OK, "%s: %s", op->name, sg_last_error(ctx));
            const char *bad = tu_prog_bad(&p, st == SG_OK);
            cr_expect_null(bad, "%s, %d thread(s): %s", op->name, threads[t], bad);
            if (threads[t] == 1)
                cr_expect_geq(p.steps, B - 1, "%s: %d reports for %d matrices on one thread", op->name, p.steps, B);
        }
        tu_prog_start(&p);
        sg_set_progress(ctx, tu_prog_cb, 3600, &p);
        cr_expect_eq(op->call(&a), SG_OK, "%s: %s", op->name, sg_last_error(ctx));
        cr_expect(p.calls == 1 && p.ones == 1, "%s, every = 1 h: %d calls, %d of 1.0", op->name, p.calls, p.ones);
        /* stop at the first report: on one thread matrix 0 is done and the rest never start */
        for (int t = 0; t < 2; t++) {
            sg_set_threads(ctx, threads[t]);
            tu_op_fill_outputs(&a, 777);
            tu_prog_start(&p);
            p.stop_after = 1;
            sg_set_progress(ctx, tu_prog_cb, 0, &p);
            sg_status st = op->call(&a);
            const char *bad = tu_prog_bad(&p, st == SG_OK);
            cr_expect_null(bad, "%s, stopped: %s", op->name, bad);
            if (threads[t] > 1 && p.steps == 0) { /* the other threads finished before thread 0 reported */
                cr_expect_eq(st, SG_OK, "%s, no report: %s", op->name, sg_last_error(ctx));
                continue;
            }
            cr_expect_eq(st, SG_ERR_CANCELLED, "%s, %d thread(s), stopped: %s (%s)", op->name, threads[t],
                         sg_status_string(st), sg_last_error(ctx));
            cr_expect(strstr(sg_last_error(ctx), "cancelled by the progress callback"), "%s", sg_last_error(ctx));
            if (threads[t] > 1) continue;
            cr_expect_eq(p.calls, 1, "%s: %d reports after the stop request", op->name, p.calls);
            cr_expect(!tu_op_touched(&a, B - 1, B, 777), "%s: the last matrix was computed after the stop", op->name);
        }
        sg_set_progress(ctx, NULL, 0, NULL);
        cr_expect_eq(op->call(&a), SG_OK, "%s after a stop: %s", op->name, sg_last_error(ctx));
        tu_op_free(&a);
    }
    /* an error after the loop ran: tied eigenvalues, EXACT mode (gA written, SG_ERR_DEGENERATE) */
    sg_set_threads(ctx, 1);
    sg_mat W = tu_alloc_mat(SG_F64, B, 3, 1), V = tu_alloc_mat(SG_F64, B, 3, 3), gV = tu_alloc_mat(SG_F64, B, 3, 3),
           gA = tu_alloc_mat(SG_F64, B, 3, 3);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < 3; i++) {
            ((double *)W.data)[3 * b + i] = i == 2 ? 2 : 1;
            ((double *)V.data)[9 * b + 4 * i] = 1;
            for (int j = 0; j < 3; j++) ((double *)gV.data)[9 * b + 3 * i + j] = i + 2 * j;
        }
    tu_prog_start(&p);
    sg_set_progress(ctx, tu_prog_cb, 0, &p);
    cr_expect_eq(sg_eigh_backward(ctx, &W, &V, NULL, &gV, SG_DEGEN_EXACT, 0, &gA), SG_ERR_DEGENERATE);
    const char *bad = tu_prog_bad(&p, 0);
    cr_expect_null(bad, "failed call: %s", bad);
    cr_expect_geq(p.steps, B - 1, "failed call: %d reports", p.steps);
    /* off again: nothing more is recorded */
    cr_expect_eq(sg_set_progress(ctx, NULL, 0, NULL), SG_OK);
    int before = p.calls;
    cr_expect_eq(sg_eigh_backward(ctx, &W, &V, NULL, &gV, SG_DEGEN_MASK, 0, &gA), SG_OK, "%s", sg_last_error(ctx));
    cr_expect_eq(p.calls, before);
    tu_free_mat(&W), tu_free_mat(&V), tu_free_mat(&gV), tu_free_mat(&gA);
}

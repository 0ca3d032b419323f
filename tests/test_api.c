/* Context, status strings and front-end validation: every bad argument gets a status and a message,
   and no output is touched. */
#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

#include "specgrad.h"
#include "testutil.h"

static sg_ctx *ctx;
static void setup(void) { cr_assert_eq(sg_create(&ctx, SG_BACKEND_CPU), SG_OK); }
static void teardown(void) { sg_destroy(ctx); }
TestSuite(api, .init = setup, .fini = teardown);

Test(api, status_strings_are_distinct)
{
    for (int a = SG_OK; a <= SG_ERR_FORMAT; a++)
        for (int b = a + 1; b <= SG_ERR_FORMAT; b++)
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

#include "opcases.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { n = TU_OP_N, m = TU_OP_M };
static sg_fn fexp = {SG_FN_EXP, 0, NULL, NULL, NULL};
static sg_status c_eigh(tu_op_args *a) { return sg_eigh(a->ctx, &a->in[0], &a->out[0], &a->out[1]); }
static sg_status c_svd(tu_op_args *a) { return sg_svd(a->ctx, &a->in[1], 0, &a->out[0], &a->out[1], &a->out[2]); }
static sg_status c_svd_full(tu_op_args *a) { return sg_svd(a->ctx, &a->in[1], 1, &a->out[0], &a->out[1], &a->out[2]); }
static sg_status c_rank(tu_op_args *a) { return sg_rank(a->ctx, &a->in[1], 0, -1, a->iv); }
static sg_status c_null(tu_op_args *a) { return sg_nullspace(a->ctx, &a->in[1], 0, -1, &a->out[0], a->iv); }
static sg_status c_proj(tu_op_args *a) { return sg_project(a->ctx, &a->in[1], &a->in[2], SG_PROJ_NULL, 0, -1, &a->out[0]); }
static sg_status c_projb(tu_op_args *a) { return sg_project_basis(a->ctx, &a->in[3], &a->in[2], 1, &a->out[0]); }
static sg_status c_lstsq(tu_op_args *a) { return sg_lstsq(a->ctx, &a->in[1], &a->in[3], 0, -1, &a->out[0], a->iv); }
static sg_status c_eighb(tu_op_args *a)
{
    return sg_eigh_backward(a->ctx, &a->in[2], &a->in[0], NULL, &a->in[0], SG_DEGEN_MASK, 0, &a->out[0]);
}
static sg_status c_svdb(tu_op_args *a)
{
    return sg_svd_backward(a->ctx, &a->in[1], &a->in[2], &a->in[3], &a->in[1], NULL, &a->in[3], SG_DEGEN_MASK, 0,
                           &a->out[0]);
}
static sg_status c_mf(tu_op_args *a) { return sg_matfunc(a->ctx, &a->in[0], &fexp, &a->out[0], &a->out[1], &a->out[2]); }
static sg_status c_mfb(tu_op_args *a) { return sg_matfunc_backward(a->ctx, &a->in[2], &a->in[1], &fexp, &a->in[0], &a->out[0]); }
static sg_status c_reg_spec(tu_op_args *a) { return sg_regularizer(a->ctx, SG_REG_SPECTRAL, &a->in[1], NULL, &a->out[0], &a->out[1]); }
static sg_status c_reg_nuc(tu_op_args *a) { return sg_regularizer(a->ctx, SG_REG_NUCLEAR, &a->in[1], NULL, &a->out[0], &a->out[1]); }
static sg_status c_reg_ld(tu_op_args *a) { return sg_regularizer(a->ctx, SG_REG_LOGDET, &a->in[0], NULL, &a->out[0], &a->out[1]); }
static sg_status c_reg_es(tu_op_args *a) { return sg_regularizer(a->ctx, SG_REG_EIGSUM, &a->in[0], &fexp, &a->out[0], &a->out[1]); }

/* in[0] n×n symmetric positive definite, in[1] n×m, in[2] and in[3] as each op needs; a V from eigh or an
   orthonormal basis is not needed for these calls to run. */
const tu_op tu_ops[] = {
    {"eigh", c_eigh, {{n, n}}, {{n, 1}, {n, n}}},
    {"svd", c_svd, {{n, n}, {n, m}}, {{m, 1}, {n, m}, {m, m}}},
    {"svd full", c_svd_full, {{n, n}, {n, m}}, {{m, 1}, {n, n}, {m, m}}},
    {"rank", c_rank, {{n, n}, {n, m}}, {{0, 0}}},
    {"nullspace", c_null, {{n, n}, {m, n}}, {{n, n}}},
    {"project", c_proj, {{n, n}, {m, n}, {n, 3}}, {{n, 3}}},
    {"project_basis", c_projb, {{n, n}, {n, m}, {n, 3}, {n, 2}}, {{n, 3}}},
    {"lstsq", c_lstsq, {{n, n}, {n, m}, {n, n}, {n, 2}}, {{m, 2}}},
    {"eigh_backward", c_eighb, {{n, n}, {n, m}, {n, 1}}, {{n, n}}},
    {"svd_backward", c_svdb, {{n, n}, {n, m}, {m, 1}, {m, m}}, {{n, m}}},
    {"matfunc", c_mf, {{n, n}}, {{n, n}, {n, 1}, {n, n}}},
    {"matfunc_backward", c_mfb, {{n, n}, {n, n}, {n, 1}}, {{n, n}}},
    {"regularizer spectral", c_reg_spec, {{n, n}, {n, m}}, {{1, 1}, {n, m}}},
    {"regularizer nuclear", c_reg_nuc, {{n, n}, {n, m}}, {{1, 1}, {n, m}}},
    {"regularizer logdet", c_reg_ld, {{n, n}}, {{1, 1}, {n, n}}},
    {"regularizer eigsum", c_reg_es, {{n, n}}, {{1, 1}, {n, n}}},
};
const int tu_nops = (int)(sizeof tu_ops / sizeof tu_ops[0]);

static double *dense(const sg_mat *mm) { return mm->data; }

static void outputs(const tu_op *op, tu_op_args *a)
{
    a->nout = 0;
    for (int i = 0; i < TU_OP_IO && op->out[i][0]; i++, a->nout++)
        a->out[i] = tu_alloc_mat(SG_F64, a->B, op->out[i][0], op->out[i][1]);
    a->iv = malloc(sizeof(int64_t) * (size_t)a->B);
    tu_op_fill_outputs(a, 777);
}

void tu_op_make(const tu_op *op, sg_ctx *ctx, int64_t B, tu_rng *r, tu_op_args *a)
{
    memset(a, 0, sizeof *a);
    a->ctx = ctx;
    a->B = B;
    for (int i = 0; i < TU_OP_IO; i++) {
        if (!op->in[i][0]) continue;
        a->in[i] = tu_alloc_mat(SG_F64, B, op->in[i][0], op->in[i][1]);
        tu_fill_normal(r, dense(&a->in[i]), B * op->in[i][0] * op->in[i][1]);
    }
    double *s = dense(&a->in[0]), t[n * n];
    for (int64_t b = 0; b < B; b++) {
        double *x = s + b * n * n;
        tu_gemm(1, 0, n, n, n, x, x, t);
        for (int i = 0; i < n * n; i++) x[i] = t[i] / n + (i % (n + 1) == 0 ? 1 : 0);
    }
    if (op->in[2][0] == n && op->in[2][1] == 1)
        for (int64_t i = 0; i < B * n; i++) dense(&a->in[2])[i] = (double)(i % n) + 0.5;
    if (op->in[2][0] == m && op->in[2][1] == 1)
        for (int64_t i = 0; i < B * m; i++) dense(&a->in[2])[i] = (double)(m - i % m) + 0.5;
    outputs(op, a);
}

void tu_op_clone(const tu_op *op, const tu_op_args *src, tu_op_args *dst)
{
    *dst = *src;
    outputs(op, dst);
}

void tu_op_fill_outputs(tu_op_args *a, double v)
{
    for (int i = 0; i < a->nout; i++)
        for (int64_t e = 0; e < a->B * a->out[i].rows * a->out[i].cols; e++) dense(&a->out[i])[e] = v;
    for (int64_t i = 0; i < a->B; i++) a->iv[i] = (int64_t)v;
}

int tu_op_touched(const tu_op_args *a, int64_t b0, int64_t b1, double v)
{
    int t = 0;
    for (int64_t b = b0; b < b1; b++) {
        t |= a->iv[b] != (int64_t)v;
        for (int i = 0; i < a->nout; i++) {
            const int64_t sz = a->out[i].rows * a->out[i].cols;
            for (int64_t e = 0; e < sz; e++) t |= dense(&a->out[i])[b * sz + e] != v;
        }
    }
    return t;
}

void tu_op_free_outputs(tu_op_args *a)
{
    for (int i = 0; i < a->nout; i++) tu_free_mat(&a->out[i]);
    free(a->iv);
    a->iv = NULL;
    a->nout = 0;
}

void tu_op_free(tu_op_args *a)
{
    for (int i = 0; i < TU_OP_IO; i++)
        if (a->in[i].data) tu_free_mat(&a->in[i]);
    tu_op_free_outputs(a);
}

void tu_prog_start(tu_prog *p)
{
    memset(p, 0, sizeof *p);
    p->caller = (unsigned long)pthread_self();
}

int tu_prog_cb(double f, void *user)
{
    tu_prog *p = user;
    p->calls++;
    if (!pthread_equal((pthread_t)p->caller, pthread_self())) p->off_thread++;
    if (p->ones) p->after_one++;
    if (f == 1.0) {
        p->ones++;
    } else {
        p->steps++;
        if (!(f > 0 && f < 1)) p->out_of_range++;
        if (!(f > p->last)) p->not_increasing++;
    }
    p->last = f;
    return p->stop_after > 0 && p->steps >= p->stop_after;
}

const char *tu_prog_bad(const tu_prog *p, int succeeded)
{
    if (p->off_thread) return "called on another thread";
    if (p->out_of_range) return "a fraction outside (0, 1)";
    if (p->not_increasing) return "fractions not strictly increasing";
    if (p->after_one) return "called after 1.0";
    if (succeeded && p->ones != 1) return "a successful call did not end with exactly one 1.0";
    if (!succeeded && p->ones) return "1.0 after a failed call";
    return NULL;
}

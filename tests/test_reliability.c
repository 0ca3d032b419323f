/* Reliability (issue 6): every public entry point, every bad argument.
 *
 * Table-driven: for each op, each of its matrix arguments ("slots") gets each mutation (null descriptor,
 * null data, zero/negative sizes, ld < rows, overflowing ld/stride, overlapping stride, dtype mismatch,
 * unknown dtype, wrong shape/batch, NaN/Inf in inputs), in f64 and f32, with dense and padded layouts.
 * Every case must return the right status with a non-empty message naming the argument, report the
 * failing batch index for NaN/Inf (else -1), and leave every buffer (outputs, inputs and the padding
 * between columns/matrices) byte-for-byte untouched. Option errors (tolerances, enums, sg_fn) and
 * setters are tables too. Numerical-failure reporting (SG_ERR_DOMAIN / SG_ERR_DEGENERATE with the
 * failing batch index) and "eigh reads only the lower triangle" need the CPU ops: those tests skip
 * while an op still reports SG_ERR_UNSUPPORTED. */
#include <criterion/criterion.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "specgrad.h"
#include "testutil.h"

static sg_ctx *ctx;
static void setup(void) { cr_assert_eq(sg_create(&ctx, SG_BACKEND_CPU), SG_OK); }
static void teardown(void) { sg_destroy(ctx); }
TestSuite(reliability, .init = setup, .fini = teardown);

/* ---- sizes and fills --------------------------------------------------------------------------- */
enum { BATCH = 3, DM = 4, DN = 3, DK = 3, DQ = 2 }; /* m×n with k = min(m,n); q right-hand sides */
#define SENTINEL 4242.0
#define ISENTINEL ((int64_t)-77)

typedef enum { IN, OPT_IN, OUT, OPT_OUT } role_t;
typedef enum { F_SPD, F_ORTH, F_ASC, F_DESC, F_RAND } fill_t;
enum { FREE_ROWS = 1, FREE_COLS = 2, FREE_BATCH = 4 }; /* changing it alone is still a valid call */

typedef struct {
    const char *name;
    char r, c; /* 'm', 'n', 'k', 'q' or '1' */
    role_t role;
    fill_t fill;
    int free;
} slot_t;

/* Options read by the call wrappers; option cases mutate them. */
typedef struct {
    double atol, rtol, param;
    int full;
    sg_proj which;
    sg_degen mode;
    sg_reg reg;
    sg_fn fn;
    int fn_null;
} opts_t;

static double cb_f(double x, void *u) { (void)u; return x * x; }
static double cb_df(double x, void *u) { (void)u; return 2 * x; }

static opts_t default_opts(void)
{
    opts_t o = {0};
    o.atol = 0; o.rtol = -1; o.param = 0; o.full = 0;
    o.which = SG_PROJ_NULL; o.mode = SG_DEGEN_MASK; o.reg = SG_REG_SPECTRAL;
    o.fn.kind = SG_FN_SQRT; o.fn.p = 0.5;
    return o;
}

typedef sg_status (*call_t)(sg_ctx *, sg_mat *const *p, int64_t *iout, const opts_t *o);
enum { IO_NONE, IO_REQ, IO_OPT };
enum { O_TOL = 1, O_PROJ = 2, O_DEGEN = 4, O_FN = 8, O_REG = 16 };

typedef struct {
    const char *name;
    call_t call;
    int primary; /* slot passed first to the front-end (defines dtype and batch) */
    int iout;    /* int64 output: rank / nullity */
    int optgroups;
    opts_t (*opts)(void);
    slot_t s[8];
    int ns;
} op_t;

#define FN(o) ((o)->fn_null ? NULL : &(o)->fn)
static sg_status c_eigh(sg_ctx *c, sg_mat *const *p, int64_t *r, const opts_t *o) { (void)r; (void)o; return sg_eigh(c, p[0], p[1], p[2]); }
static sg_status c_svd(sg_ctx *c, sg_mat *const *p, int64_t *r, const opts_t *o) { (void)r; return sg_svd(c, p[0], o->full, p[1], p[2], p[3]); }
static sg_status c_rank(sg_ctx *c, sg_mat *const *p, int64_t *r, const opts_t *o) { return sg_rank(c, p[0], o->atol, o->rtol, r); }
static sg_status c_null(sg_ctx *c, sg_mat *const *p, int64_t *r, const opts_t *o) { return sg_nullspace(c, p[0], o->atol, o->rtol, p[1], r); }
static sg_status c_proj(sg_ctx *c, sg_mat *const *p, int64_t *r, const opts_t *o) { (void)r; return sg_project(c, p[0], p[1], o->which, o->atol, o->rtol, p[2]); }
static sg_status c_projb(sg_ctx *c, sg_mat *const *p, int64_t *r, const opts_t *o) { (void)r; return sg_project_basis(c, p[0], p[1], o->which == SG_PROJ_ROW, p[2]); }
static sg_status c_lstsq(sg_ctx *c, sg_mat *const *p, int64_t *r, const opts_t *o) { return sg_lstsq(c, p[0], p[1], o->atol, o->rtol, p[2], r); }
static sg_status c_eighb(sg_ctx *c, sg_mat *const *p, int64_t *r, const opts_t *o) { (void)r; return sg_eigh_backward(c, p[0], p[1], p[2], p[3], o->mode, o->param, p[4]); }
static sg_status c_svdb(sg_ctx *c, sg_mat *const *p, int64_t *r, const opts_t *o) { (void)r; return sg_svd_backward(c, p[0], p[1], p[2], p[3], p[4], p[5], o->mode, o->param, p[6]); }
static sg_status c_mf(sg_ctx *c, sg_mat *const *p, int64_t *r, const opts_t *o) { (void)r; return sg_matfunc(c, p[0], FN(o), p[1], NULL, NULL); }
static sg_status c_mfb(sg_ctx *c, sg_mat *const *p, int64_t *r, const opts_t *o) { (void)r; return sg_matfunc_backward(c, p[0], p[1], FN(o), p[2], p[3]); }
static sg_status c_reg(sg_ctx *c, sg_mat *const *p, int64_t *r, const opts_t *o) { (void)r; return sg_regularizer(c, o->reg, p[0], FN(o), p[1], p[2]); }

static opts_t o_full(void) { opts_t o = default_opts(); o.full = 1; return o; }
static opts_t o_nuclear(void) { opts_t o = default_opts(); o.reg = SG_REG_NUCLEAR; return o; }
static opts_t o_ortho(void) { opts_t o = default_opts(); o.reg = SG_REG_ORTHO; return o; }
static opts_t o_logdet(void) { opts_t o = default_opts(); o.reg = SG_REG_LOGDET; return o; }
static opts_t o_eigsum(void) { opts_t o = default_opts(); o.reg = SG_REG_EIGSUM; o.fn.kind = SG_FN_EXP; return o; }
static opts_t o_callback(void) { opts_t o = default_opts(); o.fn.kind = SG_FN_CALLBACK; o.fn.f = cb_f; o.fn.df = cb_df; return o; }

static const op_t OPS[] = {
    {"eigh", c_eigh, 0, IO_NONE, 0, NULL, {{"A", 'n', 'n', IN, F_SPD, 0}, {"W", 'n', '1', OUT, F_SPD, 0}, {"V", 'n', 'n', OPT_OUT, F_SPD, 0}}, 3},
    {"svd", c_svd, 0, IO_NONE, 0, NULL, {{"A", 'm', 'n', IN, F_RAND, 0}, {"S", 'k', '1', OUT, 0, 0}, {"U", 'm', 'k', OUT, 0, 0}, {"V", 'n', 'k', OUT, 0, 0}}, 4},
    {"svd_full", c_svd, 0, IO_NONE, 0, o_full, {{"A", 'm', 'n', IN, F_RAND, 0}, {"S", 'k', '1', OUT, 0, 0}, {"U", 'm', 'm', OUT, 0, 0}, {"V", 'n', 'n', OUT, 0, 0}}, 4},
    {"rank", c_rank, 0, IO_REQ, O_TOL, NULL, {{"A", 'm', 'n', IN, F_RAND, FREE_ROWS | FREE_COLS | FREE_BATCH}}, 1},
    {"nullspace", c_null, 0, IO_OPT, O_TOL, NULL, {{"A", 'm', 'n', IN, F_RAND, FREE_ROWS}, {"N", 'n', 'n', OUT, 0, 0}}, 2},
    {"project", c_proj, 0, IO_NONE, O_TOL | O_PROJ, NULL, {{"A", 'm', 'n', IN, F_RAND, FREE_ROWS}, {"X", 'n', 'q', IN, F_RAND, 0}, {"Y", 'n', 'q', OUT, 0, 0}}, 3},
    {"project_basis", c_projb, 0, IO_NONE, 0, NULL, {{"Q", 'n', 'q', IN, F_ORTH, FREE_COLS}, {"X", 'n', 'q', IN, F_RAND, 0}, {"Y", 'n', 'q', OUT, 0, 0}}, 3},
    {"lstsq", c_lstsq, 0, IO_OPT, O_TOL, NULL, {{"A", 'm', 'n', IN, F_RAND, 0}, {"B", 'm', 'q', IN, F_RAND, 0}, {"X", 'n', 'q', OUT, 0, 0}}, 3},
    {"eigh_backward", c_eighb, 1, IO_NONE, O_DEGEN, NULL,
     {{"W", 'n', '1', IN, F_ASC, 0}, {"V", 'n', 'n', IN, F_ORTH, 0}, {"gW", 'n', '1', OPT_IN, F_RAND, 0}, {"gV", 'n', 'n', OPT_IN, F_RAND, 0}, {"gA", 'n', 'n', OUT, 0, 0}}, 5},
    {"svd_backward", c_svdb, 0, IO_NONE, O_DEGEN, NULL,
     {{"U", 'm', 'k', IN, F_ORTH, 0}, {"S", 'k', '1', IN, F_DESC, 0}, {"V", 'n', 'k', IN, F_ORTH, 0}, {"gU", 'm', 'k', OPT_IN, F_RAND, 0},
      {"gS", 'k', '1', OPT_IN, F_RAND, 0}, {"gV", 'n', 'k', OPT_IN, F_RAND, 0}, {"gA", 'm', 'n', OUT, 0, 0}}, 7},
    {"matfunc", c_mf, 0, IO_NONE, O_FN, NULL, {{"A", 'n', 'n', IN, F_SPD, 0}, {"F", 'n', 'n', OUT, 0, 0}}, 2},
    {"matfunc_callback", c_mf, 0, IO_NONE, O_FN, o_callback, {{"A", 'n', 'n', IN, F_SPD, 0}, {"F", 'n', 'n', OUT, 0, 0}}, 2},
    {"matfunc_backward", c_mfb, 1, IO_NONE, O_FN, NULL,
     {{"W", 'n', '1', IN, F_ASC, 0}, {"V", 'n', 'n', IN, F_ORTH, 0}, {"gF", 'n', 'n', IN, F_RAND, 0}, {"gA", 'n', 'n', OUT, 0, 0}}, 4},
    {"reg_spectral", c_reg, 0, IO_NONE, O_REG, NULL, {{"A", 'm', 'n', IN, F_RAND, 0}, {"loss", '1', '1', OUT, 0, 0}, {"gA", 'm', 'n', OPT_OUT, 0, 0}}, 3},
    {"reg_nuclear", c_reg, 0, IO_NONE, O_REG, o_nuclear, {{"A", 'm', 'n', IN, F_RAND, 0}, {"loss", '1', '1', OUT, 0, 0}, {"gA", 'm', 'n', OPT_OUT, 0, 0}}, 3},
    {"reg_ortho", c_reg, 0, IO_NONE, O_REG, o_ortho, {{"A", 'm', 'n', IN, F_RAND, 0}, {"loss", '1', '1', OUT, 0, 0}, {"gA", 'm', 'n', OPT_OUT, 0, 0}}, 3},
    {"reg_logdet", c_reg, 0, IO_NONE, O_REG, o_logdet, {{"A", 'n', 'n', IN, F_SPD, 0}, {"loss", '1', '1', OUT, 0, 0}, {"gA", 'n', 'n', OPT_OUT, 0, 0}}, 3},
    {"reg_eigsum", c_reg, 0, IO_NONE, O_REG | O_FN, o_eigsum, {{"A", 'n', 'n', IN, F_SPD, 0}, {"loss", '1', '1', OUT, 0, 0}, {"gA", 'n', 'n', OPT_OUT, 0, 0}}, 3},
};
#define NOPS ((int)(sizeof OPS / sizeof OPS[0]))

static int64_t dim(char c) { return c == 'm' ? DM : c == 'n' ? DN : c == 'k' ? DK : c == 'q' ? DQ : 1; }

static double fill_value(fill_t f, int64_t b, int64_t i, int64_t j, int64_t rows)
{
    switch (f) {
    case F_SPD: return i == j ? 2.0 + (double)i + 0.5 * (double)b : 0.1 / (double)(1 + i + j);
    case F_ORTH: return i == j ? 1.0 : 0.0;
    case F_ASC: return (double)(i + 1) + 0.25 * (double)b;
    case F_DESC: return (double)(rows - i) + 0.25 * (double)b;
    case F_RAND: return sin(1.0 + 7.0 * (double)i + 13.0 * (double)j + 17.0 * (double)b);
    }
    return 0;
}

/* ---- fixture ----------------------------------------------------------------------------------- */
typedef struct {
    const op_t *op;
    sg_mat m[8];
    sg_mat *p[8];
    size_t bytes[8];
    void *buf[8]; /* the allocations (mutations may change m[s].data) */
    unsigned char *snap[8];
    int64_t iout[BATCH], isnap[BATCH];
    opts_t o;
} fixture;

static size_t esize(sg_dtype t) { return t == SG_F32 ? 4 : 8; }

static void set_elem(sg_mat *m, int64_t k, double v)
{
    if (m->dtype == SG_F32) ((float *)m->data)[k] = (float)v;
    else ((double *)m->data)[k] = v;
}

static void fx_init(fixture *f, const op_t *op, sg_dtype t, int padded)
{
    memset(f, 0, sizeof *f);
    f->op = op;
    f->o = op->opts ? op->opts() : default_opts();
    for (int i = 0; i < BATCH; i++) f->iout[i] = ISENTINEL;
    for (int s = 0; s < op->ns; s++) {
        const slot_t *sl = &op->s[s];
        int64_t r = dim(sl->r), c = dim(sl->c);
        sg_mat *m = &f->m[s];
        m->dtype = t; m->batch = BATCH; m->rows = r; m->cols = c;
        m->ld = padded ? r + 2 : r;
        m->stride = padded ? m->ld * c + 3 : 0;
        int64_t st = m->stride ? m->stride : m->ld * c;
        f->bytes[s] = (size_t)(st * BATCH) * esize(t);
        m->data = f->buf[s] = malloc(f->bytes[s]);
        f->snap[s] = malloc(f->bytes[s]);
        cr_assert(m->data && f->snap[s]);
        for (int64_t k = 0; k < st * BATCH; k++) set_elem(m, k, SENTINEL); /* padding stays sentinel */
        if (sl->role == IN || sl->role == OPT_IN)
            for (int64_t b = 0; b < BATCH; b++)
                for (int64_t j = 0; j < c; j++)
                    for (int64_t i = 0; i < r; i++) set_elem(m, b * st + i + j * m->ld, fill_value(sl->fill, b, i, j, r));
        f->p[s] = m;
    }
}

static void fx_free(fixture *f)
{
    for (int s = 0; s < f->op->ns; s++) {
        free(f->buf[s]);
        free(f->snap[s]);
    }
}

static void fx_snapshot(fixture *f)
{
    for (int s = 0; s < f->op->ns; s++) memcpy(f->snap[s], f->buf[s], f->bytes[s]);
    memcpy(f->isnap, f->iout, sizeof f->iout);
}

/* 1 when no buffer changed since fx_snapshot. */
static int fx_untouched(const fixture *f, const char *what)
{
    int ok = 1;
    for (int s = 0; s < f->op->ns; s++)
        if (memcmp(f->snap[s], f->buf[s], f->bytes[s]) != 0) {
            cr_expect(0, "%s: buffer %s was written on an argument error", what, f->op->s[s].name);
            ok = 0;
        }
    if (memcmp(f->isnap, f->iout, sizeof f->iout) != 0) {
        cr_expect(0, "%s: int64 output written on an argument error", what);
        ok = 0;
    }
    return ok;
}

static int64_t *fx_iout(fixture *f) { return f->op->iout == IO_NONE ? NULL : f->iout; }

static int has_ci(const char *s, const char *sub) /* case-insensitive strstr */
{
    size_t n = strlen(sub);
    for (; *s; s++)
        if (!strncasecmp(s, sub, n)) return 1;
    return 0;
}

/* Checks status, message, failed index and untouched buffers of a call that must fail validation. */
static void expect_error(fixture *f, sg_status got, sg_status want, const char *msg_has, const char *name_has,
                         int64_t want_index, const char *what)
{
    const char *msg = sg_last_error(ctx);
    cr_expect_eq(got, want, "%s: status %d (%s), expected %d (%s); message: %s", what, (int)got, sg_status_string(got),
                 (int)want, sg_status_string(want), msg);
    cr_expect(msg && msg[0], "%s: empty error message", what);
    if (msg_has) cr_expect(has_ci(msg, msg_has), "%s: message '%s' lacks '%s'", what, msg, msg_has);
    if (name_has) cr_expect(strstr(msg, name_has) != NULL, "%s: message '%s' does not name '%s'", what, msg, name_has);
    cr_expect_eq(sg_failed_index(ctx), want_index, "%s: failed index %lld, expected %lld", what,
                 (long long)sg_failed_index(ctx), (long long)want_index);
    fx_untouched(f, what);
}

/* ---- the mutation table ------------------------------------------------------------------------ */
typedef enum {
    M_NULLDESC, M_NULLDATA, M_ROWS0, M_COLSNEG, M_BATCH0, M_BATCHNEG, M_LD_LT_ROWS, M_LD_OVF, M_STRIDE_OVF,
    M_STRIDE_OVERLAP, M_DTYPE_OTHER, M_DTYPE_BAD, M_ROWS_M1, M_COLS_M1, M_BATCH_M1, M_NAN, M_INF, M_COUNT
} mut_t;

static const struct {
    const char *name;
    sg_status want;
    const char *msg;  /* substring of the message */
    int names_slot;   /* the message names the mutated argument */
} MUT[M_COUNT] = {
    [M_NULLDESC] = {"null descriptor", SG_ERR_ARG, "null", 1},
    [M_NULLDATA] = {"null data", SG_ERR_ARG, "null", 1},
    [M_ROWS0] = {"rows = 0", SG_ERR_ARG, "positive", 1},
    [M_COLSNEG] = {"cols < 0", SG_ERR_ARG, "positive", 1},
    [M_BATCH0] = {"batch = 0", SG_ERR_ARG, "positive", 1},
    [M_BATCHNEG] = {"batch < 0", SG_ERR_ARG, "positive", 1},
    [M_LD_LT_ROWS] = {"ld < rows", SG_ERR_ARG, "ld", 1},
    [M_LD_OVF] = {"ld overflow", SG_ERR_ARG, "overflow", 1},
    [M_STRIDE_OVF] = {"stride overflow", SG_ERR_ARG, "overflow", 1},
    [M_STRIDE_OVERLAP] = {"overlapping stride", SG_ERR_ARG, "overlap", 1},
    [M_DTYPE_OTHER] = {"dtype mismatch", SG_ERR_DTYPE, "dtype", 0},
    [M_DTYPE_BAD] = {"unknown dtype", SG_ERR_DTYPE, "dtype", 1},
    [M_ROWS_M1] = {"wrong rows", SG_ERR_ARG, NULL, 0},
    [M_COLS_M1] = {"wrong cols", SG_ERR_ARG, NULL, 0},
    [M_BATCH_M1] = {"wrong batch", SG_ERR_ARG, NULL, 0},
    [M_NAN] = {"NaN input", SG_ERR_NONFINITE, "NaN", 1},
    [M_INF] = {"Inf input", SG_ERR_NONFINITE, "Inf", 1},
};

/* Applies mutation mu to slot s; returns 0 when it does not apply (then nothing is called). */
static int mutate(fixture *f, int s, mut_t mu, int64_t *want_index)
{
    const slot_t *sl = &f->op->s[s];
    sg_mat *m = &f->m[s];
    int in = sl->role == IN || sl->role == OPT_IN;
    int64_t st = m->stride ? m->stride : m->ld * m->cols;
    *want_index = -1;
    switch (mu) {
    case M_NULLDESC: if (sl->role == OPT_IN || sl->role == OPT_OUT) return 0; f->p[s] = NULL; return 1;
    case M_NULLDATA: m->data = NULL; return 1;
    case M_ROWS0: m->rows = 0; return 1;
    case M_COLSNEG: m->cols = -3; return 1;
    case M_BATCH0: m->batch = 0; return 1;
    case M_BATCHNEG: m->batch = -2; return 1;
    case M_LD_LT_ROWS: m->ld = m->rows - 1; return 1;
    case M_LD_OVF: m->ld = INT64_MAX / 2; m->stride = 0; return 1;
    case M_STRIDE_OVF: m->stride = INT64_MAX / 2; return 1;
    case M_STRIDE_OVERLAP: if (m->ld * m->cols <= 1) return 0; m->stride = m->ld * m->cols - 1; return 1;
    case M_DTYPE_OTHER: if (f->op->ns == 1) return 0; /* nothing to disagree with */
        m->dtype = m->dtype == SG_F32 ? SG_F64 : SG_F32; return 1;
    case M_DTYPE_BAD: m->dtype = (sg_dtype)7; return 1;
    case M_ROWS_M1: if (sl->free & FREE_ROWS) return 0; m->rows -= 1; return 1;
    case M_COLS_M1: if (sl->free & FREE_COLS) return 0; m->cols -= 1; return 1;
    case M_BATCH_M1: if (sl->free & FREE_BATCH) return 0; m->batch -= 1; return 1;
    case M_NAN:
    case M_INF: {
        if (!in) return 0;
        int64_t b = mu == M_NAN ? 2 : 1;                  /* a batch item other than the first */
        set_elem(m, b * st + (m->rows - 1), mu == M_NAN ? NAN : -INFINITY); /* (rows-1, 0): lower triangle */
        *want_index = b;
        return 1;
    }
    default: return 0;
    }
}

static int run_table(const op_t *op, sg_dtype t, int padded)
{
    int n = 0;
    char what[256];
    for (int s = 0; s < op->ns; s++)
        for (int mu = 0; mu < M_COUNT; mu++) {
            fixture f;
            fx_init(&f, op, t, padded);
            int64_t want_index;
            if (!mutate(&f, s, (mut_t)mu, &want_index)) {
                fx_free(&f);
                continue;
            }
            snprintf(what, sizeof what, "%s[%s,%s] %s: %s", op->name, t == SG_F32 ? "f32" : "f64",
                     padded ? "padded" : "dense", op->s[s].name, MUT[mu].name);
            /* The first argument's dtype is the call's dtype: flipping it is detected at the next argument,
               before any NaN scan reads the mislabelled buffer (the check stays on). */
            fx_snapshot(&f);
            sg_status st = op->call(ctx, f.p, fx_iout(&f), &f.o);
            expect_error(&f, st, MUT[mu].want, MUT[mu].msg, MUT[mu].names_slot ? op->s[s].name : NULL, want_index, what);
            fx_free(&f);
            n++;
        }
    return n;
}

/* Null context, null required int64 output, and the valid baseline (must pass validation). */
static void run_extras(const op_t *op, sg_dtype t, int padded)
{
    fixture f;
    char what[128];
    snprintf(what, sizeof what, "%s[%s,%s]", op->name, t == SG_F32 ? "f32" : "f64", padded ? "padded" : "dense");

    fx_init(&f, op, t, padded);
    fx_snapshot(&f);
    cr_expect_eq(op->call(NULL, f.p, fx_iout(&f), &f.o), SG_ERR_ARG, "%s: null context", what);
    fx_untouched(&f, what);
    if (op->iout == IO_REQ) {
        sg_status st = op->call(ctx, f.p, NULL, &f.o);
        expect_error(&f, st, SG_ERR_ARG, "null", NULL, -1, what);
    }
    /* Baseline: the unmutated call passes validation (any later status is the backend's). */
    sg_status st = op->call(ctx, f.p, fx_iout(&f), &f.o);
    cr_expect(st != SG_ERR_ARG && st != SG_ERR_DTYPE && st != SG_ERR_NONFINITE,
              "%s: valid call rejected: %s (%s)", what, sg_status_string(st), sg_last_error(ctx));
    if (st == SG_OK) cr_expect_str_eq(sg_last_error(ctx), "", "%s: message left after success", what);
    fx_free(&f);
}

/* ---- option errors ----------------------------------------------------------------------------- */
typedef struct {
    int group;
    const char *name;
    void (*set)(opts_t *);
    const char *msg;
} optcase_t;

static void ot_atol_neg(opts_t *o) { o->atol = -1; }
static void ot_atol_nan(opts_t *o) { o->atol = NAN; }
static void ot_atol_inf(opts_t *o) { o->atol = INFINITY; }
static void ot_rtol_nan(opts_t *o) { o->rtol = NAN; }
static void ot_rtol_inf(opts_t *o) { o->rtol = INFINITY; }
static void ot_proj_big(opts_t *o) { o->which = (sg_proj)2; }
static void ot_proj_neg(opts_t *o) { o->which = (sg_proj)-1; }
static void ot_mode_neg(opts_t *o) { o->mode = (sg_degen)-1; }
static void ot_mode_big(opts_t *o) { o->mode = (sg_degen)4; }
static void ot_param_nan(opts_t *o) { o->param = NAN; }
static void ot_param_inf(opts_t *o) { o->param = -INFINITY; }
static void ot_fn_null(opts_t *o) { o->fn_null = 1; }
static void ot_fn_kind_neg(opts_t *o) { o->fn.kind = (sg_fn_kind)-1; }
static void ot_fn_kind_big(opts_t *o) { o->fn.kind = (sg_fn_kind)5; }
static void ot_fn_cb_nof(opts_t *o) { o->fn.kind = SG_FN_CALLBACK; o->fn.f = NULL; o->fn.df = cb_df; }
static void ot_fn_cb_nodf(opts_t *o) { o->fn.kind = SG_FN_CALLBACK; o->fn.f = cb_f; o->fn.df = NULL; }
static void ot_fn_pow_nan(opts_t *o) { o->fn.kind = SG_FN_POW; o->fn.p = NAN; }
static void ot_fn_pow_inf(opts_t *o) { o->fn.kind = SG_FN_POW; o->fn.p = INFINITY; }
static void ot_reg_neg(opts_t *o) { o->reg = (sg_reg)-1; }
static void ot_reg_big(opts_t *o) { o->reg = (sg_reg)5; }

static const optcase_t OPTCASES[] = {
    {O_TOL, "atol < 0", ot_atol_neg, "tol"},        {O_TOL, "atol NaN", ot_atol_nan, "tol"},
    {O_TOL, "atol Inf", ot_atol_inf, "tol"},        {O_TOL, "rtol NaN", ot_rtol_nan, "tol"},
    {O_TOL, "rtol Inf", ot_rtol_inf, "tol"},        {O_PROJ, "which = 2", ot_proj_big, "unknown"},
    {O_PROJ, "which = -1", ot_proj_neg, "unknown"}, {O_DEGEN, "mode = -1", ot_mode_neg, "unknown"},
    {O_DEGEN, "mode = 4", ot_mode_big, "unknown"},  {O_DEGEN, "param NaN", ot_param_nan, "param"},
    {O_DEGEN, "param -Inf", ot_param_inf, "param"}, {O_FN, "fn NULL", ot_fn_null, "fn"},
    {O_FN, "fn kind -1", ot_fn_kind_neg, "kind"},   {O_FN, "fn kind 5", ot_fn_kind_big, "kind"},
    {O_FN, "callback f NULL", ot_fn_cb_nof, "callback"}, {O_FN, "callback df NULL", ot_fn_cb_nodf, "callback"},
    {O_FN, "pow p NaN", ot_fn_pow_nan, "finite"},   {O_FN, "pow p Inf", ot_fn_pow_inf, "finite"},
    {O_REG, "kind -1", ot_reg_neg, "unknown"},      {O_REG, "kind 5", ot_reg_big, "unknown"},
};

static int run_options(const op_t *op, sg_dtype t)
{
    int n = 0;
    char what[256];
    for (size_t c = 0; c < sizeof OPTCASES / sizeof OPTCASES[0]; c++) {
        if (!(op->optgroups & OPTCASES[c].group)) continue;
        fixture f;
        fx_init(&f, op, t, 0);
        OPTCASES[c].set(&f.o);
        snprintf(what, sizeof what, "%s[%s] option %s", op->name, t == SG_F32 ? "f32" : "f64", OPTCASES[c].name);
        fx_snapshot(&f);
        sg_status st = op->call(ctx, f.p, fx_iout(&f), &f.o);
        expect_error(&f, st, SG_ERR_ARG, OPTCASES[c].msg, NULL, -1, what);
        fx_free(&f);
        n++;
    }
    return n;
}

static void run_op(const char *name)
{
    const op_t *op = NULL;
    for (int i = 0; i < NOPS; i++)
        if (!strcmp(OPS[i].name, name)) op = &OPS[i];
    cr_assert(op, "no op %s in the table", name);
    int n = 0;
    for (int t = 0; t < 2; t++)
        for (int padded = 0; padded < 2; padded++) {
            n += run_table(op, (sg_dtype)t, padded);
            run_extras(op, (sg_dtype)t, padded);
        }
    for (int t = 0; t < 2; t++) n += run_options(op, (sg_dtype)t);
    cr_expect_gt(n, 20, "%s: only %d cases ran", name, n);
}

Test(reliability, eigh) { run_op("eigh"); }
Test(reliability, svd) { run_op("svd"); }
Test(reliability, svd_full) { run_op("svd_full"); }
Test(reliability, rank) { run_op("rank"); }
Test(reliability, nullspace) { run_op("nullspace"); }
Test(reliability, project) { run_op("project"); }
Test(reliability, project_basis) { run_op("project_basis"); }
Test(reliability, lstsq) { run_op("lstsq"); }
Test(reliability, eigh_backward) { run_op("eigh_backward"); }
Test(reliability, svd_backward) { run_op("svd_backward"); }
Test(reliability, matfunc) { run_op("matfunc"); }
Test(reliability, matfunc_callback) { run_op("matfunc_callback"); }
Test(reliability, matfunc_backward) { run_op("matfunc_backward"); }
Test(reliability, regularizer_spectral) { run_op("reg_spectral"); }
Test(reliability, regularizer_nuclear) { run_op("reg_nuclear"); }
Test(reliability, regularizer_ortho) { run_op("reg_ortho"); }
Test(reliability, regularizer_logdet) { run_op("reg_logdet"); }
Test(reliability, regularizer_eigsum) { run_op("reg_eigsum"); }

/* Every descriptor and option is validated before any input is scanned for NaN/Inf: with a NaN in one
   input and a bad later (or earlier) argument, the argument error is reported (naming that argument),
   not SG_ERR_NONFINITE, and nothing is written. */
static const optcase_t *optcase(int group)
{
    for (size_t c = 0; c < sizeof OPTCASES / sizeof OPTCASES[0]; c++)
        if (OPTCASES[c].group & group) return &OPTCASES[c];
    return NULL;
}

Test(reliability, argument_errors_win_over_nan_inputs)
{
    static const mut_t bad[] = {M_NULLDATA, M_LD_LT_ROWS};
    char what[256];
    int n = 0;
    for (int o = 0; o < NOPS; o++) {
        const op_t *op = &OPS[o];
        for (int t = 0; t < 2; t++)
            for (int ns = 0; ns < op->ns; ns++) {
                if (op->s[ns].role != IN && op->s[ns].role != OPT_IN) continue;
                int64_t idx;
                /* a bad descriptor elsewhere */
                for (int s = 0; s < op->ns; s++)
                    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
                        if (s == ns) continue;
                        fixture f;
                        fx_init(&f, op, (sg_dtype)t, 0);
                        cr_assert(mutate(&f, ns, M_NAN, &idx));
                        if (!mutate(&f, s, bad[k], &idx)) {
                            fx_free(&f);
                            continue;
                        }
                        snprintf(what, sizeof what, "%s[%s] NaN in %s, %s: %s", op->name, t ? "f64" : "f32",
                                 op->s[ns].name, op->s[s].name, MUT[bad[k]].name);
                        fx_snapshot(&f);
                        sg_status st = op->call(ctx, f.p, fx_iout(&f), &f.o);
                        expect_error(&f, st, SG_ERR_ARG, MUT[bad[k]].msg, op->s[s].name, -1, what);
                        fx_free(&f);
                        n++;
                    }
                /* a bad option of each group the op has */
                for (int g = 1; g <= O_REG; g <<= 1) {
                    const optcase_t *oc = optcase(g);
                    if (!(op->optgroups & g) || !oc) continue;
                    fixture f;
                    fx_init(&f, op, (sg_dtype)t, 0);
                    cr_assert(mutate(&f, ns, M_NAN, &idx));
                    oc->set(&f.o);
                    snprintf(what, sizeof what, "%s[%s] NaN in %s, option %s", op->name, t ? "f64" : "f32",
                             op->s[ns].name, oc->name);
                    fx_snapshot(&f);
                    sg_status st = op->call(ctx, f.p, fx_iout(&f), &f.o);
                    expect_error(&f, st, SG_ERR_ARG, oc->msg, NULL, -1, what);
                    fx_free(&f);
                    n++;
                }
                /* a missing required int64 output */
                if (op->iout == IO_REQ) {
                    fixture f;
                    fx_init(&f, op, (sg_dtype)t, 0);
                    cr_assert(mutate(&f, ns, M_NAN, &idx));
                    snprintf(what, sizeof what, "%s[%s] NaN in %s, null int64 output", op->name, t ? "f64" : "f32",
                             op->s[ns].name);
                    fx_snapshot(&f);
                    sg_status st = op->call(ctx, f.p, NULL, &f.o);
                    expect_error(&f, st, SG_ERR_ARG, "null", NULL, -1, what);
                    fx_free(&f);
                    n++;
                }
            }
    }
    cr_expect_gt(n, 200, "only %d cases ran", n);
}

/* CPU gradients hand leading dimensions to 32-bit BLAS: an ld beyond INT32_MAX is SG_ERR_UNSUPPORTED
   (never truncated). The descriptors are 1×1 (batch 1): valid for the front-end without a huge buffer,
   since only element (0,0) is ever addressed (the NaN scan included). */
Test(reliability, gradient_ld_beyond_int32_is_unsupported)
{
    const int64_t BIG = (int64_t)INT32_MAX + 1;
    for (int t = 0; t < 2; t++) {
        double buf[8][2] = {{0}}; /* f32 uses 4 of each row's 16 bytes: memcmp reads them all */
        sg_mat m[8];
        for (int i = 0; i < 8; i++) {
            m[i] = sg_mat_dense(buf[i], (sg_dtype)t, 1, 1, 1);
            set_elem(&m[i], 0, i == 7 ? SENTINEL : 1.0 + 0.5 * i);
        }
        sg_mat *W = &m[0], *V = &m[1], *gW = &m[2], *gV = &m[3], *S = &m[4], *gS = &m[5], *U = &m[6], *gA = &m[7];
        sg_fn fn = {SG_FN_EXP, 0, NULL, NULL, NULL};
        double loss_d[2];
        sg_mat loss = sg_mat_dense(loss_d, (sg_dtype)t, 1, 1, 1);
        static const char *names[] = {"eigh_backward V", "eigh_backward gV", "svd_backward U", "svd_backward V",
                                      "svd_backward gU", "svd_backward gV", "svd_backward gA", "matfunc_backward V",
                                      "ortho A", "ortho gA", "nuclear gA"};
        for (int c = 0; c < 11; c++) {
            sg_mat *which[] = {V, gV, U, V, gW, gV, gA, V, W, gA, gA};
            unsigned char before[8][16];
            memcpy(before, buf, sizeof before);
            which[c]->ld = BIG;
            sg_status st;
            switch (c) {
            case 0:
            case 1: st = sg_eigh_backward(ctx, W, V, gW, gV, SG_DEGEN_MASK, 0, gA); break;
            case 2: case 3: case 4: case 5: case 6:
                st = sg_svd_backward(ctx, U, S, V, gW, gS, gV, SG_DEGEN_MASK, 0, gA); break;
            case 7: st = sg_matfunc_backward(ctx, W, V, &fn, gV, gA); break;
            case 8: case 9: st = sg_regularizer(ctx, SG_REG_ORTHO, W, NULL, &loss, gA); break;
            default: st = sg_regularizer(ctx, SG_REG_NUCLEAR, W, NULL, &loss, gA); break;
            }
            which[c]->ld = 1;
            const char *msg = sg_last_error(ctx);
            cr_expect_eq(st, SG_ERR_UNSUPPORTED, "%s (dtype %d): %s (%s)", names[c], t, sg_status_string(st), msg);
            cr_expect(strstr(msg, "ld") && strstr(msg, "2147483648"), "%s: message '%s'", names[c], msg);
            cr_expect_eq(sg_failed_index(ctx), -1);
            cr_expect_eq(memcmp(before, buf, sizeof before), 0, "%s: a buffer was written", names[c]);
        }
    }
}

/* ---- context and setters ----------------------------------------------------------------------- */
Test(reliability, setters_and_context)
{
    /* Null context: every setter and getter answers without crashing. */
    cr_expect_eq(sg_set_memspace(NULL, SG_MEM_HOST), SG_ERR_ARG);
    cr_expect_eq(sg_set_stream(NULL, NULL), SG_ERR_ARG);
    cr_expect_eq(sg_set_jacobi(NULL, 0, 0), SG_ERR_ARG);
    cr_expect_eq(sg_set_threads(NULL, 1), SG_ERR_ARG);
    cr_expect_eq(sg_set_check_finite(NULL, 1), SG_ERR_ARG);
    cr_expect_eq(sg_set_chunk_bytes(NULL, 0), SG_ERR_ARG);
    cr_expect_eq(sg_set_cache_bytes(NULL, 0), SG_ERR_ARG);
    size_t held = 7;
    cr_expect_eq(sg_cache_held(NULL, &held), SG_ERR_ARG);
    cr_expect(sg_last_error(NULL) != NULL && sg_last_error(NULL)[0], "sg_last_error(NULL) must say something");
    cr_expect_eq(sg_failed_index(NULL), -1);
    cr_expect_eq(sg_get_backend(NULL), SG_BACKEND_AUTO);
    sg_destroy(NULL);
    cr_expect_str_eq(sg_status_string((sg_status)99), "unknown status");
    cr_expect_str_eq(sg_status_string((sg_status)-1), "unknown status");
    char tiny[1] = {'x'};
    (void)sg_cuda_devices(tiny, sizeof tiny); /* truncates, NUL-terminates, no overflow (ASan) */
    cr_expect_eq(tiny[0], '\0');
    (void)sg_cuda_devices(NULL, 0);
    cr_expect_eq(sg_create(NULL, SG_BACKEND_CPU), SG_ERR_ARG);
    for (int b = -1; b <= 3; b += 4) {
        sg_ctx *c = (sg_ctx *)0x1;
        cr_expect_eq(sg_create(&c, (sg_backend)b), SG_ERR_ARG, "backend %d", b);
        cr_expect_null(c);
    }

    /* Bad values: status + message; the context keeps working; success clears the message. */
    cr_expect_eq(sg_set_memspace(ctx, (sg_memspace)2), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "unknown") != NULL, "%s", sg_last_error(ctx));
    cr_expect_eq(sg_set_memspace(ctx, (sg_memspace)-1), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "unknown") != NULL, "%s", sg_last_error(ctx));
    cr_expect_eq(sg_set_memspace(ctx, SG_MEM_DEVICE), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "CUDA") != NULL, "%s", sg_last_error(ctx));
    cr_expect_eq(sg_set_stream(ctx, (void *)0x1234), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "CUDA") != NULL, "%s", sg_last_error(ctx));
    cr_expect_eq(sg_set_jacobi(ctx, NAN, 10), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "NaN") != NULL, "%s", sg_last_error(ctx));
    cr_expect_eq(sg_failed_index(ctx), -1);
    cr_expect_eq(sg_set_jacobi(ctx, INFINITY, 10), SG_ERR_ARG, "+Inf tol would end every Jacobi solve at once");
    cr_expect(strstr(sg_last_error(ctx), "Inf") != NULL, "%s", sg_last_error(ctx));
    cr_expect_eq(sg_set_jacobi(ctx, -INFINITY, 10), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "finite") != NULL, "%s", sg_last_error(ctx));
    /* backend names: the three enum values, "unknown" for anything else */
    cr_expect_str_eq(sg_backend_name(SG_BACKEND_AUTO), "auto");
    cr_expect_str_eq(sg_backend_name(SG_BACKEND_CPU), "cpu");
    cr_expect_str_eq(sg_backend_name(SG_BACKEND_CUDA), "cuda");
    cr_expect_str_eq(sg_backend_name((sg_backend)3), "unknown");
    cr_expect_str_eq(sg_backend_name((sg_backend)-1), "unknown");

    cr_expect_eq(sg_set_memspace(ctx, SG_MEM_HOST), SG_OK);
    cr_expect_str_eq(sg_last_error(ctx), "");
    cr_expect_eq(sg_set_stream(ctx, NULL), SG_OK);
    cr_expect_eq(sg_set_jacobi(ctx, -1, -1), SG_OK); /* <= 0 selects defaults */
    cr_expect_eq(sg_set_jacobi(ctx, 1e-10, 50), SG_OK);
    cr_expect_eq(sg_set_threads(ctx, -5), SG_OK);    /* <= 0 = all */
    cr_expect_eq(sg_set_check_finite(ctx, 7), SG_OK);
    cr_expect_eq(sg_set_chunk_bytes(ctx, (size_t)-1), SG_OK);
    cr_expect_eq(sg_set_cache_bytes(ctx, 0), SG_OK); /* CPU backend: accepted, nothing to cache */
    cr_expect_eq(sg_set_cache_bytes(ctx, (size_t)-1), SG_OK);
    cr_expect_eq(sg_cache_held(ctx, &held), SG_OK);
    cr_expect_eq(held, 0, "the CPU backend holds no device memory");
    cr_expect_eq(sg_cache_held(ctx, NULL), SG_ERR_ARG);
    cr_expect(strstr(sg_last_error(ctx), "NULL") != NULL, "%s", sg_last_error(ctx));
    cr_expect_eq(sg_set_cache_bytes(ctx, 0), SG_OK);
    cr_expect_str_eq(sg_last_error(ctx), "");
}

/* The check can be turned off; turning it back on works, and the error of one call does not leak into
   the next. */
Test(reliability, check_finite_toggle)
{
    double A[9] = {2, 0, 0, 0, 2, 0, 0, 0, 2}, W[3] = {SENTINEL, SENTINEL, SENTINEL};
    sg_mat a = sg_mat_dense(A, SG_F64, 1, 3, 3), w = sg_mat_dense(W, SG_F64, 1, 3, 1);
    A[1] = NAN;
    cr_expect_eq(sg_eigh(ctx, &a, &w, NULL), SG_ERR_NONFINITE);
    cr_expect_eq(sg_failed_index(ctx), 0);
    cr_expect_eq(sg_set_check_finite(ctx, 0), SG_OK);
    sg_status st = sg_eigh(ctx, &a, &w, NULL); /* no front-end check: must not crash or hang */
    cr_expect_neq(st, SG_ERR_NONFINITE, "check_finite off still reports NaN: %s", sg_last_error(ctx));
    cr_expect_eq(sg_set_check_finite(ctx, 1), SG_OK);
    cr_expect_eq(sg_eigh(ctx, &a, &w, NULL), SG_ERR_NONFINITE);
    A[1] = 0;
    st = sg_eigh(ctx, &a, &w, NULL);
    cr_expect_neq(st, SG_ERR_NONFINITE);
    if (st == SG_OK) cr_expect_eq(sg_failed_index(ctx), -1);
}

/* ---- numerical failures (need the CPU ops) ----------------------------------------------------- */
#define SKIP_IF_MISSING(st, what)                                                                          \
    do {                                                                                                    \
        if ((st) == SG_ERR_UNSUPPORTED) cr_skip_test("%s not implemented yet: %s", what, sg_last_error(ctx)); \
    } while (0)

/* Batch of 4 symmetric matrices, item bad_item has eigenvalues {-1, 2, 3}, the others are SPD. */
static void batch_with_bad_item(double *A, int64_t n, int64_t batch, int64_t bad_item, double neg)
{
    tu_rng r = tu_seed(66);
    for (int64_t b = 0; b < batch; b++) {
        double w[8];
        for (int64_t i = 0; i < n; i++) w[i] = 1.0 + (double)i + 0.1 * (double)b;
        if (b == bad_item) w[0] = neg;
        tu_sym_with_spectrum(&r, n, w, A + b * n * n);
    }
}

/* Input check off and a NaN/Inf in matrix 1 of 2: every decomposition reports that matrix as not attempted
   (SG_ERR_NOCONV, index 1) instead of handing it to LAPACK, whose ?bdsqr (in ?gesdd/?gesvd) can loop
   forever on it: sgesdd never returned on a 3×3 with one Inf (found by tests/fuzz/fuzz_api.c). */
Test(reliability, check_finite_off_nonfinite_matrix_is_not_decomposed, .timeout = 30) /* a hang is the failure */
{
    enum { B = 2, N = 3, NN = N * N };
    cr_assert_eq(sg_set_check_finite(ctx, 0), SG_OK);
    const double bad[2] = {INFINITY, NAN};
    for (int t = 0; t < 4; t++) {
        const double v = bad[t & 1];
        const int big = t >> 1; /* n = 40: ?syevd's divide and conquer instead of the n <= 25 path */
        const int n = big ? 40 : N, nn = n * n;
        double *A = calloc((size_t)B * nn, sizeof *A), *X = calloc((size_t)B * n, sizeof *X),
               *O = malloc(sizeof *O * (size_t)B * nn), *W = malloc(sizeof *W * (size_t)B * n);
        int64_t r[B];
        for (int b = 0; b < B; b++)
            for (int i = 0; i < n; i++) A[b * nn + i + i * n] = 1 + i, X[b * n + i] = 1;
        A[nn + 1] = v; /* matrix 1, lower triangle (eigh reads it) */
        sg_mat a = sg_mat_dense(A, SG_F64, B, n, n), x = sg_mat_dense(X, SG_F64, B, n, 1),
               y = sg_mat_dense(O, SG_F64, B, n, 1), s = sg_mat_dense(W, SG_F64, B, n, 1),
               u = sg_mat_dense(O, SG_F64, B, n, n);
        static const char *names[] = {"svd", "rank", "nullspace", "project", "lstsq", "eigh"};
        for (int k = 0; k < 6; k++) {
            sg_status st = k == 0 ? sg_svd(ctx, &a, 0, &s, NULL, NULL)
                         : k == 1 ? sg_rank(ctx, &a, 0, -1, r)
                         : k == 2 ? sg_nullspace(ctx, &a, 0, -1, &u, r)
                         : k == 3 ? sg_project(ctx, &a, &x, SG_PROJ_NULL, 0, -1, &y)
                         : k == 4 ? sg_lstsq(ctx, &a, &x, 0, -1, &y, r)
                                  : sg_eigh(ctx, &a, &s, &u);
            cr_expect_eq(st, SG_ERR_NOCONV, "%s (n=%d, %g): %s", names[k], n, v, sg_status_string(st));
            cr_expect_eq(sg_failed_index(ctx), 1, "%s", names[k]);
            cr_expect(strstr(sg_last_error(ctx), "not attempted") != NULL, "%s: %s", names[k], sg_last_error(ctx));
        }
        free(A), free(X), free(O), free(W);
    }
    cr_assert_eq(sg_set_check_finite(ctx, 1), SG_OK);
}

/* Input check off and a NaN/Inf only in the upper triangle, which eigh never reads (and the matrix functions
   built on it): the matrix is decomposed from its lower triangle, as if the upper one were its mirror. */
Test(reliability, check_finite_off_eigh_ignores_the_unread_upper_triangle, .timeout = 30)
{
    for (int big = 0; big < 2; big++) {
        const int n = big ? 40 : 3, nn = n * n;
        double *A = calloc((size_t)nn, sizeof *A), *W0 = malloc(sizeof *W0 * (size_t)n),
               *W1 = malloc(sizeof *W1 * (size_t)n), *F = malloc(sizeof *F * (size_t)nn);
        for (int i = 0; i < n; i++) A[i + i * n] = 1 + i, A[i + 1 < n ? i + 1 + i * n : 0] += 0.5;
        sg_mat a = sg_mat_dense(A, SG_F64, 1, n, n), w0 = sg_mat_dense(W0, SG_F64, 1, n, 1),
               w1 = sg_mat_dense(W1, SG_F64, 1, n, 1), f = sg_mat_dense(F, SG_F64, 1, n, n);
        cr_assert_eq(sg_eigh(ctx, &a, &w0, NULL), SG_OK, "%s", sg_last_error(ctx));
        A[(n - 1) * n] = NAN; /* (0, n−1): upper triangle */
        cr_assert_eq(sg_eigh(ctx, &a, &w1, NULL), SG_ERR_NONFINITE, "the check on covers the whole matrix");
        cr_assert_eq(sg_set_check_finite(ctx, 0), SG_OK);
        cr_expect_eq(sg_eigh(ctx, &a, &w1, NULL), SG_OK, "n=%d: %s", n, sg_last_error(ctx));
        for (int i = 0; i < n; i++) cr_expect_eq(W1[i], W0[i], "n=%d: eigenvalue %d", n, i);
        sg_fn fn = {SG_FN_SQRT, 0, NULL, NULL, NULL};
        cr_expect_eq(sg_matfunc(ctx, &a, &fn, &f, NULL, NULL), SG_OK, "matfunc n=%d: %s", n, sg_last_error(ctx));
        A[n - 1] = NAN; /* (n−1, 0): lower triangle */
        cr_expect_eq(sg_eigh(ctx, &a, &w1, NULL), SG_ERR_NOCONV, "n=%d, NaN in the lower triangle", n);
        cr_assert_eq(sg_set_check_finite(ctx, 1), SG_OK);
        free(A), free(W0), free(W1), free(F);
    }
}

Test(reliability, matfunc_domain_error_names_the_batch_item)
{
    enum { n = 3, nb = 4 };
    static const struct { sg_fn_kind kind; double p; double neg; } fns[] = {
        {SG_FN_LOG, 0, -1.0}, {SG_FN_SQRT, 0, -1.0}, {SG_FN_POW, 0.5, -1.0}, {SG_FN_LOG, 0, -1e-3}};
    for (size_t c = 0; c < sizeof fns / sizeof fns[0]; c++)
        for (int t = 0; t < 2; t++) {
            double Ad[nb * n * n];
            batch_with_bad_item(Ad, n, nb, 2, fns[c].neg);
            sg_mat a = tu_alloc_mat((sg_dtype)t, nb, n, n), F = tu_alloc_mat((sg_dtype)t, nb, n, n);
            tu_to_mat(Ad, &a);
            sg_fn fn = {fns[c].kind, fns[c].p, NULL, NULL, NULL};
            sg_status st = sg_matfunc(ctx, &a, &fn, &F, NULL, NULL);
            SKIP_IF_MISSING(st, "sg_matfunc");
            cr_expect_eq(st, SG_ERR_DOMAIN, "fn %d (eigenvalue %g) dtype %d: %s (%s)", (int)fns[c].kind, fns[c].neg, t,
                         sg_status_string(st), sg_last_error(ctx));
            cr_expect_eq(sg_failed_index(ctx), 2, "failed index %lld", (long long)sg_failed_index(ctx));
            cr_expect(sg_last_error(ctx)[0], "empty message");
            tu_free_mat(&a);
            tu_free_mat(&F);
        }
}

Test(reliability, logdet_of_indefinite_matrix_is_a_domain_error)
{
    enum { n = 3, nb = 4 };
    double Ad[nb * n * n], l[nb];
    batch_with_bad_item(Ad, n, nb, 2, -1.0);
    sg_mat a = sg_mat_dense(Ad, SG_F64, nb, n, n), loss = sg_mat_dense(l, SG_F64, nb, 1, 1);
    sg_status st = sg_regularizer(ctx, SG_REG_LOGDET, &a, NULL, &loss, NULL);
    SKIP_IF_MISSING(st, "SG_REG_LOGDET");
    cr_expect_eq(st, SG_ERR_DOMAIN, "%s (%s)", sg_status_string(st), sg_last_error(ctx));
    cr_expect_eq(sg_failed_index(ctx), 2);
}

Test(reliability, exact_mode_reports_tied_eigenvalues)
{
    enum { n = 3, nb = 3 };
    double W[nb * n] = {1, 2, 3, 1, 2, 2, 1, 5, 9}; /* item 1 has a tie */
    double V[nb * n * n] = {0}, gV[nb * n * n], gA[nb * n * n];
    tu_rng r = tu_seed(7);
    for (int b = 0; b < nb; b++) tu_orthogonal(&r, n, V + b * n * n);
    tu_fill_normal(&r, gV, nb * n * n);
    sg_mat w = sg_mat_dense(W, SG_F64, nb, n, 1), v = sg_mat_dense(V, SG_F64, nb, n, n),
           gv = sg_mat_dense(gV, SG_F64, nb, n, n), ga = sg_mat_dense(gA, SG_F64, nb, n, n);
    sg_status st = sg_eigh_backward(ctx, &w, &v, NULL, &gv, SG_DEGEN_EXACT, 0, &ga);
    SKIP_IF_MISSING(st, "sg_eigh_backward");
    cr_expect_eq(st, SG_ERR_DEGENERATE, "%s (%s)", sg_status_string(st), sg_last_error(ctx));
    cr_expect_eq(sg_failed_index(ctx), 1);
    /* Every other mode is finite on the same input. */
    for (int mode = SG_DEGEN_MASK; mode <= SG_DEGEN_LORENTZ; mode++) {
        st = sg_eigh_backward(ctx, &w, &v, NULL, &gv, (sg_degen)mode, 0, &ga);
        cr_expect_eq(st, SG_OK, "mode %d: %s (%s)", mode, sg_status_string(st), sg_last_error(ctx));
        for (int i = 0; i < nb * n * n; i++) cr_expect(isfinite(gA[i]), "mode %d: gA[%d] = %g", mode, i, gA[i]);
    }
}

/* Documented: eigh reads the lower triangle. Garbage above the diagonal must not change anything. */
Test(reliability, eigh_reads_only_the_lower_triangle)
{
    enum { n = 5, nb = 2 };
    for (int t = 0; t < 2; t++) {
        double Ad[nb * n * n], w0[n] = {-2, -0.5, 1, 3, 4};
        tu_rng r = tu_seed(11);
        for (int b = 0; b < nb; b++) tu_sym_with_spectrum(&r, n, w0, Ad + b * n * n);
        sg_mat a = tu_alloc_mat((sg_dtype)t, nb, n, n), W1 = tu_alloc_mat((sg_dtype)t, nb, n, 1),
               V1 = tu_alloc_mat((sg_dtype)t, nb, n, n), W2 = tu_alloc_mat((sg_dtype)t, nb, n, 1),
               V2 = tu_alloc_mat((sg_dtype)t, nb, n, n);
        tu_to_mat(Ad, &a);
        sg_status st = sg_eigh(ctx, &a, &W1, &V1);
        SKIP_IF_MISSING(st, "sg_eigh");
        cr_assert_eq(st, SG_OK, "%s", sg_last_error(ctx));
        for (int b = 0; b < nb; b++)
            for (int j = 0; j < n; j++)
                for (int i = 0; i < j; i++) Ad[b * n * n + i + j * n] = 1e3 * tu_normal(&r); /* strict upper */
        tu_to_mat(Ad, &a);
        cr_assert_eq(sg_eigh(ctx, &a, &W2, &V2), SG_OK, "%s", sg_last_error(ctx));
        double w1[nb * n], w2[nb * n], v1[nb * n * n], v2[nb * n * n];
        tu_from_mat(&W1, w1); tu_from_mat(&W2, w2); tu_from_mat(&V1, v1); tu_from_mat(&V2, v2);
        double tol = t == SG_F32 ? 1e-5 : 1e-12;
        cr_expect_leq(tu_diff_norm(w1, w2, nb * n), tol * tu_norm(w1, nb * n), "dtype %d: eigenvalues changed", t);
        for (int b = 0; b < nb; b++)
            cr_expect_leq(tu_subspace_dist(n, v1 + b * n * n, 1, v2 + b * n * n, 1), 1e3 * tol,
                          "dtype %d item %d: eigenvectors changed", t, b);
        for (int b = 0; b < nb; b++) /* and they match the lower triangle's spectrum */
            for (int i = 0; i < n; i++) cr_expect_leq(fabs(w1[b * n + i] - w0[i]), 1e3 * tol, "w[%d] = %g", i, w1[b * n + i]);
        tu_free_mat(&a); tu_free_mat(&W1); tu_free_mat(&V1); tu_free_mat(&W2); tu_free_mat(&V2);
    }
}

/* ---- .npy I/O ---------------------------------------------------------------------------------- */
static size_t npy_image(unsigned char *buf, int version, const char *header, const void *data, size_t dbytes)
{
    size_t pre = version == 1 ? 10 : 12, hl = strlen(header);
    size_t total = (pre + hl + 1 + 63) / 64 * 64; /* header padded with spaces, ends in \n */
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)version;
    buf[7] = 0;
    size_t h = total - pre;
    if (version == 1) { buf[8] = (unsigned char)(h & 0xff); buf[9] = (unsigned char)(h >> 8); }
    else for (int i = 0; i < 4; i++) buf[8 + i] = (unsigned char)(h >> (8 * i));
    memcpy(buf + pre, header, hl);
    memset(buf + pre + hl, ' ', h - hl - 1);
    buf[total - 1] = '\n';
    if (data) memcpy(buf + total, data, dbytes);
    return total + dbytes;
}

/* Weak: this file links (and skips the .npy test) while src/npy.c has not landed. */
#pragma weak sg_npy_parse
#pragma weak sg_npy_read
#pragma weak sg_npy_write
#pragma weak sg_array_free

Test(reliability, npy_bad_inputs)
{
    if (!sg_npy_parse || !sg_npy_read || !sg_npy_write || !sg_array_free) cr_skip_test("src/npy.c not built yet");
    char err[256];
    sg_array a;
    double d[6] = {1, 2, 3, 4, 5, 6};
    unsigned char buf[512];
    size_t n = npy_image(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", d, sizeof d);

    /* The valid image parses (sanity for the mutations below). */
    cr_assert_eq(sg_npy_parse(buf, n, &a, err, sizeof err), SG_OK, "%s", err);
    cr_expect_eq(a.ndim, 2);
    sg_array_free(&a);
    sg_array_free(&a); /* idempotent after free */
    sg_array_free(NULL);

    err[0] = 0;
    cr_expect_eq(sg_npy_parse(NULL, 10, &a, err, sizeof err), SG_ERR_ARG);
    cr_expect(err[0], "no message");
    cr_expect_eq(sg_npy_parse(buf, n, NULL, err, sizeof err), SG_ERR_ARG);
    cr_expect_eq(sg_npy_read(NULL, &a, err, sizeof err), SG_ERR_ARG);
    cr_expect_eq(sg_npy_read("/nonexistent/dir/x.npy", &a, err, sizeof err), SG_ERR_IO);
    cr_expect(strlen(err) > 0);
    cr_expect_null(a.data);
    cr_expect_eq(sg_npy_write(NULL, &a, err, sizeof err), SG_ERR_ARG);

    /* Every truncation of a valid image is a format error with a message, never a crash, and leaves
       out empty (sg_array_free is safe on it). The err buffer may be NULL or tiny. */
    for (size_t len = 0; len < n; len++) {
        memset(&a, 0x5a, sizeof a);
        err[0] = 0;
        sg_status st = sg_npy_parse(buf, len, &a, err, sizeof err);
        cr_expect_eq(st, SG_ERR_FORMAT, "truncated to %zu: %s", len, sg_status_string(st));
        cr_expect(err[0], "truncated to %zu: no message", len);
        cr_expect_null(a.data, "truncated to %zu: data not NULL", len);
        sg_array_free(&a);
    }
    char tiny[4];
    cr_expect_eq(sg_npy_parse(buf, 20, &a, tiny, sizeof tiny), SG_ERR_FORMAT);
    cr_expect_lt(strlen(tiny), sizeof tiny);
    cr_expect_eq(sg_npy_parse(buf, 20, &a, NULL, 0), SG_ERR_FORMAT);

    static const char *bad_headers[] = {
        "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }",    /* int dtype */
        "{'descr': '<c16', 'fortran_order': False, 'shape': (2, 3), }",   /* complex */
        "{'descr': '|O', 'fortran_order': False, 'shape': (2, 3), }",     /* object */
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2, -3), }",   /* negative dim */
        "{'descr': '<f8', 'fortran_order': False, 'shape': (9223372036854775807, 2), }", /* overflow */
        "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999999, ), }",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", /* ndim 9 > 8 */
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 4), }",    /* more data than present */
        "{'descr': '<f8', 'fortran_order': maybe, 'shape': (2, 3), }",
        "{'descr': '<f8', 'fortran_order': False, }",                    /* no shape */
        "{'fortran_order': False, 'shape': (2, 3), }",                   /* no descr */
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3",        /* unterminated */
        "",
        "\"descr\"",
    };
    for (size_t c = 0; c < sizeof bad_headers / sizeof bad_headers[0]; c++) {
        unsigned char b2[512];
        size_t n2 = npy_image(b2, 1 + (int)(c % 2), bad_headers[c], d, sizeof d);
        err[0] = 0;
        memset(&a, 0x5a, sizeof a);
        sg_status st = sg_npy_parse(b2, n2, &a, err, sizeof err);
        cr_expect_eq(st, SG_ERR_FORMAT, "header %s: %s", bad_headers[c], sg_status_string(st));
        cr_expect(err[0], "header %s: no message", bad_headers[c]);
        cr_expect_null(a.data);
    }
    unsigned char b3[512];
    memcpy(b3, buf, n);
    b3[0] = 'X'; /* bad magic */
    cr_expect_eq(sg_npy_parse(b3, n, &a, err, sizeof err), SG_ERR_FORMAT);
    memcpy(b3, buf, n);
    b3[6] = 9; /* unknown version */
    cr_expect_eq(sg_npy_parse(b3, n, &a, err, sizeof err), SG_ERR_FORMAT);
    memcpy(b3, buf, n);
    b3[8] = 0xff; b3[9] = 0xff; /* header length past the end */
    cr_expect_eq(sg_npy_parse(b3, n, &a, err, sizeof err), SG_ERR_FORMAT);

    /* Writing: bad descriptors are argument errors; an unwritable path is an I/O error. */
    sg_array w = {SG_F64, 2, {2, 3}, d};
    sg_array bad = w;
    bad.dtype = (sg_dtype)7;
    cr_expect_neq(sg_npy_write("/tmp/sg_rel_never.npy", &bad, err, sizeof err), SG_OK);
    bad = w;
    bad.ndim = 9;
    cr_expect_eq(sg_npy_write("/tmp/sg_rel_never.npy", &bad, err, sizeof err), SG_ERR_ARG);
    bad = w;
    bad.ndim = -1;
    cr_expect_eq(sg_npy_write("/tmp/sg_rel_never.npy", &bad, err, sizeof err), SG_ERR_ARG);
    bad = w;
    bad.shape[1] = -3;
    cr_expect_eq(sg_npy_write("/tmp/sg_rel_never.npy", &bad, err, sizeof err), SG_ERR_ARG);
    bad = w;
    bad.data = NULL;
    cr_expect_eq(sg_npy_write("/tmp/sg_rel_never.npy", &bad, err, sizeof err), SG_ERR_ARG);
    cr_expect_eq(sg_npy_write("/nonexistent/dir/x.npy", &w, err, sizeof err), SG_ERR_IO);
    cr_expect(err[0]);
}


/* Finite float32 input whose eigen/singular values overflow (3×3 of FLT_MAX/2: λ, σ = 1.5·FLT_MAX): every
   decomposition-based op reports SG_ERR_DOMAIN "overflow" for that matrix, not a LAPACK fault, and not
   the rank 0 an infinite σmax would give. A lstsq whose solution overflows (σ = 1e-5 kept, b = 1e36) too,
   with the input check on; with it off the solution is not inspected (SG_OK, as documented). */
Test(reliability, overflowing_results_are_domain_errors)
{
    float A[2 * 9], W[6], S[6], N[18], X[6], Bv[6], Y[18];
    int64_t r[2];
    for (int i = 0; i < 9; i++) A[i] = (float)(i % 4 == 0 ? 1 : 0), A[9 + i] = 1.7e38f;
    sg_mat Am = sg_mat_dense(A, SG_F32, 2, 3, 3), Wm = sg_mat_dense(W, SG_F32, 2, 3, 1),
           Sm = sg_mat_dense(S, SG_F32, 2, 3, 1), Nm = sg_mat_dense(N, SG_F32, 2, 3, 3),
           Xm = sg_mat_dense(X, SG_F32, 2, 3, 1), Bm = sg_mat_dense(Bv, SG_F32, 2, 3, 1),
           Ym = sg_mat_dense(Y, SG_F32, 2, 3, 3);
    for (int i = 0; i < 6; i++) Bv[i] = 1;
    for (int i = 0; i < 18; i++) Y[i] = 1;
    const char *names[] = {"eigh", "svd", "rank", "nullspace", "project", "lstsq"};
    for (int op = 0; op < 6; op++) {
        sg_status s = op == 0   ? sg_eigh(ctx, &Am, &Wm, NULL)
                      : op == 1 ? sg_svd(ctx, &Am, 0, &Sm, NULL, NULL)
                      : op == 2 ? sg_rank(ctx, &Am, 0, -1, r)
                      : op == 3 ? sg_nullspace(ctx, &Am, 0, -1, &Nm, r)
                      : op == 4 ? sg_project(ctx, &Am, &Ym, SG_PROJ_NULL, 0, -1, &Ym)
                                : sg_lstsq(ctx, &Am, &Bm, 0, -1, &Xm, r);
        cr_expect(s == SG_ERR_DOMAIN && sg_failed_index(ctx) == 1 && strstr(sg_last_error(ctx), "overflow"),
                  "%s: %s, index %lld: %s", names[op], sg_status_string(s), (long long)sg_failed_index(ctx),
                  sg_last_error(ctx));
    }
    /* lstsq: diag(1, 1, 1e-5) is solved with all three σ; b = 1e36 over σ = 1e-5 is beyond FLT_MAX */
    for (int i = 0; i < 9; i++) A[9 + i] = (float)(i % 4 == 0 ? 1 : 0);
    A[17] = 1e-5f, Bv[5] = 1e36f;
    cr_expect_eq(sg_lstsq(ctx, &Am, &Bm, 0, -1, &Xm, r), SG_ERR_DOMAIN, "%s", sg_last_error(ctx));
    cr_expect(sg_failed_index(ctx) == 1 && strstr(sg_last_error(ctx), "solution of matrix 1 overflows"), "%s",
              sg_last_error(ctx));
    cr_expect(r[1] == 3 && isinf(X[5]) && X[0] == 1, "rank %lld, X %g %g: written as computed", (long long)r[1],
              (double)X[5], (double)X[0]);
    /* project / project_basis onto span{(1,1,1)/√3}: for x = 3e38·(1,1,1), Px = x is finite but the
       coefficient vᵀx = 5.2e38 is not; matrix 0's X is small. Y is written as computed */
    float Q[2 * 3], ones[2 * 3];
    sg_mat Qm = sg_mat_dense(Q, SG_F32, 2, 3, 1), Om = sg_mat_dense(ones, SG_F32, 2, 1, 3),
           Y1 = sg_mat_dense(Y, SG_F32, 2, 3, 1);
    for (int i = 0; i < 6; i++) Q[i] = 0.57735027f, ones[i] = 1, Bv[i] = i < 3 ? 1 : 3e38f;
    for (int proj = 0; proj < 2; proj++) {
        for (int i = 0; i < 6; i++) Y[i] = 7;
        sg_status s = proj ? sg_project_basis(ctx, &Qm, &Bm, 0, &Y1) : sg_project(ctx, &Om, &Bm, SG_PROJ_ROW, 0, -1, &Y1);
        cr_expect_eq(s, SG_ERR_DOMAIN, "%s: %s", proj ? "project_basis" : "project", sg_last_error(ctx));
        cr_expect(sg_failed_index(ctx) == 1 && strstr(sg_last_error(ctx), "Y of matrix 1 overflows float32"), "%s",
                  sg_last_error(ctx));
        cr_expect(fabsf(Y[0] - 1) < 1e-5f && !isfinite(Y[3] + Y[4] + Y[5]), "Y written as computed: %g %g", (double)Y[0],
                  (double)Y[3]);
    }
    cr_assert_eq(sg_set_check_finite(ctx, 0), SG_OK);
    cr_expect_eq(sg_project_basis(ctx, &Qm, &Bm, 0, &Y1), SG_OK, "check off: %s", sg_last_error(ctx));
    for (int i = 0; i < 6; i++) Bv[i] = 1;
    Bv[5] = 1e36f;
    cr_expect_eq(sg_lstsq(ctx, &Am, &Bm, 0, -1, &Xm, r), SG_OK, "check off: %s", sg_last_error(ctx));
    cr_assert_eq(sg_set_check_finite(ctx, 1), SG_OK);
}

/* OpenBLAS's thread count is process-global and the CPU backend sets it to 1 around its batch loops (its
   own threads there oversubscribe the cores). Four user threads, each with its own context, call matfunc at
   once with a callback that reads the count from inside the loop: it must be 1 every time, and the count
   from before must be back afterwards. A save/restore per call let one call's restore (3) land while
   another call was still in its loop. */
int openblas_get_num_threads(void);
void openblas_set_num_threads(int);
static int blas_seen_max; /* a count other than 1 that a callback saw (0: none) */
static double cb_sq(double x, void *u)
{
    (void)u;
    const int t = openblas_get_num_threads();
    if (t != 1) __atomic_store_n(&blas_seen_max, t, __ATOMIC_RELAXED);
    return x * x;
}
static double cb_dsq(double x, void *u) { (void)u; return 2 * x; }
static void *blas_caller(void *arg)
{
    (void)arg;
    sg_ctx *c;
    if (sg_create(&c, SG_BACKEND_CPU) != SG_OK) return (void *)1;
    double A[4 * 9], F[4 * 9];
    for (int i = 0; i < 36; i++) A[i] = (double)((i * 7) % 5) - 2;
    sg_mat Am = sg_mat_dense(A, SG_F64, 4, 3, 3), Fm = sg_mat_dense(F, SG_F64, 4, 3, 3);
    const sg_fn fn = {SG_FN_CALLBACK, 0, cb_sq, cb_dsq, NULL};
    intptr_t bad = 0;
    for (int it = 0; it < 2000; it++) bad |= sg_matfunc(c, &Am, &fn, &Fm, NULL, NULL) != SG_OK;
    sg_destroy(c);
    return (void *)bad;
}
Test(reliability, blas_thread_count_is_one_inside_concurrent_calls)
{
    const int before = openblas_get_num_threads();
    openblas_set_num_threads(3); /* a count the backend must restore (more than the 1 it sets) */
    const int want = openblas_get_num_threads();
    blas_seen_max = 0;
    pthread_t th[4];
    for (int i = 0; i < 4; i++) cr_assert_eq(pthread_create(&th[i], NULL, blas_caller, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *r;
        cr_assert_eq(pthread_join(th[i], &r), 0);
        cr_expect(r == NULL, "thread %d: a call failed", i);
    }
    const int after = openblas_get_num_threads();
    openblas_set_num_threads(before);
    cr_expect_eq(blas_seen_max, 0, "a batch loop ran with %d OpenBLAS threads", blas_seen_max);
    cr_expect_eq(after, want, "OpenBLAS threads %d after concurrent calls, %d before", after, want);
}

/* GNU OpenMP keeps its thread pool in the parent: a thread team in a forked child waits forever for
   threads that do not exist there (multiprocessing's default start method, DataLoader workers). After the
   parent ran batched calls on two threads, the child's calls run on one (the finite scan of a large batch,
   a decomposition, a backward) and give the parent's results. A hang is the failure: the child has an alarm. */
static int fork_child_calls(sg_ctx *ctx, const sg_mat *A, const double *Wp, const double *gAp)
{
    sg_mat W = tu_alloc_mat(SG_F64, A->batch, A->rows, 1), V = tu_alloc_mat(SG_F64, A->batch, A->rows, A->rows),
           gA = tu_alloc_mat(SG_F64, A->batch, A->rows, A->rows);
    int bad = sg_eigh(ctx, A, &W, &V) != SG_OK ? 10 : 0;
    if (!bad && sg_eigh_backward(ctx, &W, &V, &W, NULL, SG_DEGEN_LORENTZ, 0, &gA) != SG_OK) bad = 11;
    if (!bad && memcmp(W.data, Wp, (size_t)A->batch * A->rows * sizeof(double))) bad = 12;
    if (!bad && memcmp(gA.data, gAp, (size_t)A->batch * A->rows * A->rows * sizeof(double))) bad = 13;
    tu_free_mat(&W), tu_free_mat(&V), tu_free_mat(&gA);
    return bad;
}

Test(reliability, forked_child_runs_its_calls_on_one_thread, .timeout = 60)
{
    const int64_t B = 1024, n = 8; /* 65536 elements: the finite scan runs on the threads too */
    double *a = tu_sym_batch(B, n, 77);
    sg_mat A = sg_mat_dense(a, SG_F64, B, n, n), W = tu_alloc_mat(SG_F64, B, n, 1), V = tu_alloc_mat(SG_F64, B, n, n),
           gA = tu_alloc_mat(SG_F64, B, n, n);
    sg_ctx *pc;
    cr_assert_eq(sg_create(&pc, SG_BACKEND_CPU), SG_OK);
    cr_assert_eq(sg_set_threads(pc, 2), SG_OK); /* a team of two even on one core */
    cr_assert_eq(sg_eigh(pc, &A, &W, &V), SG_OK, "%s", sg_last_error(pc));
    cr_assert_eq(sg_eigh_backward(pc, &W, &V, &W, NULL, SG_DEGEN_LORENTZ, 0, &gA), SG_OK, "%s", sg_last_error(pc));
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        alarm(20);
        int bad = fork_child_calls(pc, &A, W.data, gA.data); /* the parent's context, then a new one */
        sg_ctx *c2 = NULL;
        if (!bad && (sg_create(&c2, SG_BACKEND_CPU) != SG_OK || sg_set_threads(c2, 4) != SG_OK)) bad = 20;
        if (!bad) bad = fork_child_calls(c2, &A, W.data, gA.data);
        sg_destroy(c2);
        _exit(bad);
    }
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_expect(!(WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM), "the forked child hung in its first batched call");
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %d (10/11: a call failed, 12/13: results differ)",
              WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
    sg_destroy(pc);
    free(a), tu_free_mat(&W), tu_free_mat(&V), tu_free_mat(&gA);
}

/* The same when the parent's team was not started by specgrad (the user's own OpenMP, or torch: one
   libgomp per process, whoever started its pool): the child's calls still run, on one thread. */
Test(reliability, forked_child_after_another_librarys_thread_team, .timeout = 60)
{
    int seen = 0;
#pragma omp parallel num_threads(2) reduction(+ : seen)
    seen += 1;
    cr_assert_eq(seen, 2, "the test's own team has %d threads", seen);
    double a[64 * 16], w[64 * 4];
    for (int i = 0; i < 64 * 16; i++) a[i] = (double)((i * 7) % 5) - 2;
    sg_mat A = sg_mat_dense(a, SG_F64, 64, 4, 4), W = sg_mat_dense(w, SG_F64, 64, 4, 1);
    sg_ctx *pc;
    cr_assert_eq(sg_create(&pc, SG_BACKEND_CPU), SG_OK);
    cr_assert_eq(sg_set_threads(pc, 2), SG_OK);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        alarm(20);
        _exit(sg_eigh(pc, &A, &W, NULL) == SG_OK ? 0 : 10);
    }
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %d (-14: hung, 10: the call failed)",
              WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
    sg_destroy(pc);
}

/* A fork from another thread while a call is in its batch loop: the child has no thread to end the call's
   single-BLAS-thread section, so the child's next call, even one that enters no such section, restores
   the count from before (the section's depth is reset in the child), instead of leaving OpenBLAS on one
   thread for the child's life. */
static sem_t fk_in_loop, fk_forked;
static int fk_progress(double f, void *u)
{
    int *once = u;
    if (f < 1 && !*once) *once = 1, sem_post(&fk_in_loop), sem_wait(&fk_forked);
    return 0;
}
static void *fk_caller(void *arg)
{
    sg_ctx *c = arg;
    double a[64 * 9];
    for (int i = 0; i < 64 * 9; i++) a[i] = (double)((i * 7) % 5) - 2;
    sg_mat A = sg_mat_dense(a, SG_F64, 64, 3, 3), W = tu_alloc_mat(SG_F64, 64, 3, 1), V = tu_alloc_mat(SG_F64, 64, 3, 3);
    intptr_t bad = sg_eigh(c, &A, &W, &V) != SG_OK;
    tu_free_mat(&W), tu_free_mat(&V);
    return (void *)bad;
}

Test(reliability, fork_during_a_call_restores_the_blas_threads_in_the_child, .timeout = 60)
{
    const int before = openblas_get_num_threads();
    openblas_set_num_threads(3);
    sg_ctx *pc;
    int once = 0;
    cr_assert_eq(sg_create(&pc, SG_BACKEND_CPU), SG_OK);
    cr_assert_eq(sg_set_threads(pc, 1), SG_OK); /* its loop runs on the calling thread: it reports inside */
    cr_assert_eq(sg_set_progress(pc, fk_progress, 0, &once), SG_OK);
    cr_assert_eq(sem_init(&fk_in_loop, 0, 0), 0);
    cr_assert_eq(sem_init(&fk_forked, 0, 0), 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, fk_caller, pc), 0);
    sem_wait(&fk_in_loop); /* the call is in its batch loop, OpenBLAS set to 1 */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(20);
        int inside = openblas_get_num_threads();
        sg_ctx *c; /* one 40×40 matrix: no single-thread section (BLAS keeps its threads), the count comes back */
        double *a = tu_sym_batch(1, 40, 5), w[40];
        sg_mat A = sg_mat_dense(a, SG_F64, 1, 40, 40), W = sg_mat_dense(w, SG_F64, 1, 40, 1);
        if (sg_create(&c, SG_BACKEND_CPU) != SG_OK || sg_eigh(c, &A, &W, NULL) != SG_OK) _exit(10);
        sg_destroy(c), free(a);
        _exit(inside != 1 ? 11 : openblas_get_num_threads() == 3 ? 0 : 12);
    }
    sem_post(&fk_forked);
    void *r;
    cr_assert_eq(pthread_join(th, &r), 0);
    int st = 0;
    cr_assert(pid > 0 && waitpid(pid, &st, 0) == pid, "fork failed");
    const int after = openblas_get_num_threads();
    openblas_set_num_threads(before);
    cr_expect(r == NULL, "the parent's call failed");
    cr_expect_eq(after, 3, "parent: OpenBLAS threads %d after its call", after);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "child: status %d (10: a call failed, 11: not inside the section at the fork, 12: OpenBLAS left on %s)",
              WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st), "one thread");
    sem_destroy(&fk_in_loop), sem_destroy(&fk_forked);
    sg_destroy(pc);
}

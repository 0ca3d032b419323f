/* libFuzzer harness over the public ops on the CPU backend (issue 6: "every entry point validates ...,
 * never a crash, outputs untouched on error"). Each input is one call: an op, a dtype, sizes, options,
 * and for every matrix argument a descriptor that is right or mutated (null descriptor or data, zero,
 * negative or huge sizes, ld < rows, overlapping or overflowing strides, the other dtype, wrong shape or
 * batch), padded layouts (ld > rows, stride > ld·cols), and NaN/Inf in an input.
 * Built by scripts/fuzz (clang -fsanitize=fuzzer,address,undefined, the library compiled in). Every buffer
 * is allocated to exactly the extent its descriptor addresses, so a read or write past it is an ASan
 * report; a descriptor whose extent does not fit in int64 bytes gets a 64-byte buffer and must be refused.
 * Contract checked on every input:
 *  - a status from the enum; not SG_OK ⇒ non-empty sg_last_error; sg_failed_index in [-1, batch);
 *  - SG_OK ⇒ every descriptor passed was valid (batch, rows, cols >= 1, ld >= rows, stride 0 or
 *    >= ld·cols when batch > 1, data not NULL);
 *  - inputs are never written; output elements outside the descriptor (ld and stride padding) never;
 *  - SG_ERR_ARG / SG_ERR_DTYPE / SG_ERR_NONFINITE (host scan) ⇒ no output byte written, int64 ones too. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "specgrad.h"

#ifndef FZ_FAIL
#define FZ_FAIL() abort() /* libFuzzer: a crash with the input saved */
#endif
#define CHECK(c, ...)                                                                                   \
    do {                                                                                                \
        if (!(c)) {                                                                                     \
            fprintf(stderr, "fuzz_api: contract violated: %s (%s:%d): ", #c, __FILE__, __LINE__);       \
            fprintf(stderr, __VA_ARGS__);                                                               \
            fputc('\n', stderr);                                                                        \
            FZ_FAIL();                                                                                  \
        }                                                                                               \
    } while (0)

/* Where the call's buffers live: host malloc (libFuzzer), or device memory through these callbacks
   (tests/test_gpu_api_random.c: cudaMalloc + cudaMemcpy). Comparisons read buffers back with get. */
typedef struct {
    void *(*alloc)(size_t bytes);
    void (*release)(void *p);
    void (*put)(void *dst, const void *src, size_t bytes); /* host → buffer */
    void (*get)(void *dst, const void *src, size_t bytes); /* buffer → host */
} fz_mem;
static void *fz_host_alloc(size_t n) { return malloc(n); }
static void fz_host_copy(void *d, const void *s, size_t n) { memcpy(d, s, n); }
static const fz_mem FZ_HOST = {fz_host_alloc, free, fz_host_copy, fz_host_copy};

/* ---- input bytes ---- */
typedef struct { const uint8_t *p; size_t n, i; } rd_t;
static unsigned get(rd_t *r) { return r->i < r->n ? r->p[r->i++] : 0; }

/* ---- ops ---- */
typedef enum { IN, OPT_IN, OUT, OPT_OUT } role_t;
typedef struct { char r, c; role_t role; } slot_t;
typedef struct {
    double atol, rtol, param;
    int full, which, complement, mode, reg;
    sg_fn fn;
    int fn_null;
    const double *atv, *rtv; /* per-matrix tolerances (host): the _tols entry points when either is set */
} opts_t;
typedef sg_status (*call_t)(sg_ctx *, sg_mat **p, int64_t *iout, const opts_t *o);

#define FNP(o) ((o)->fn_null ? NULL : &(o)->fn)
static sg_status c_eigh(sg_ctx *c, sg_mat **p, int64_t *r, const opts_t *o) { (void)r, (void)o; return sg_eigh(c, p[0], p[1], p[2]); }
static sg_status c_svd(sg_ctx *c, sg_mat **p, int64_t *r, const opts_t *o) { (void)r; return sg_svd(c, p[0], o->full, p[1], p[2], p[3]); }
#define TOLV(o) ((o)->atv || (o)->rtv)
static sg_status c_rank(sg_ctx *c, sg_mat **p, int64_t *r, const opts_t *o)
{
    return TOLV(o) ? sg_rank_tols(c, p[0], o->atv, o->rtv, r) : sg_rank(c, p[0], o->atol, o->rtol, r);
}
static sg_status c_null(sg_ctx *c, sg_mat **p, int64_t *r, const opts_t *o)
{
    return TOLV(o) ? sg_nullspace_tols(c, p[0], o->atv, o->rtv, p[1], r) : sg_nullspace(c, p[0], o->atol, o->rtol, p[1], r);
}
static sg_status c_proj(sg_ctx *c, sg_mat **p, int64_t *r, const opts_t *o)
{
    (void)r;
    return TOLV(o) ? sg_project_tols(c, p[0], p[1], (sg_proj)o->which, o->atv, o->rtv, p[2])
                   : sg_project(c, p[0], p[1], (sg_proj)o->which, o->atol, o->rtol, p[2]);
}
static sg_status c_projb(sg_ctx *c, sg_mat **p, int64_t *r, const opts_t *o) { (void)r; return sg_project_basis(c, p[0], p[1], o->complement, p[2]); }
static sg_status c_lstsq(sg_ctx *c, sg_mat **p, int64_t *r, const opts_t *o)
{
    return TOLV(o) ? sg_lstsq_tols(c, p[0], p[1], o->atv, o->rtv, p[2], r) : sg_lstsq(c, p[0], p[1], o->atol, o->rtol, p[2], r);
}
static sg_status c_eighb(sg_ctx *c, sg_mat **p, int64_t *r, const opts_t *o) { (void)r; return sg_eigh_backward(c, p[0], p[1], p[2], p[3], (sg_degen)o->mode, o->param, p[4]); }
static sg_status c_svdb(sg_ctx *c, sg_mat **p, int64_t *r, const opts_t *o) { (void)r; return sg_svd_backward(c, p[0], p[1], p[2], p[3], p[4], p[5], (sg_degen)o->mode, o->param, p[6]); }
static sg_status c_mf(sg_ctx *c, sg_mat **p, int64_t *r, const opts_t *o) { (void)r; return sg_matfunc(c, p[0], FNP(o), p[1], p[2], p[3]); }
static sg_status c_mfb(sg_ctx *c, sg_mat **p, int64_t *r, const opts_t *o) { (void)r; return sg_matfunc_backward(c, p[0], p[1], FNP(o), p[2], p[3]); }
static sg_status c_reg(sg_ctx *c, sg_mat **p, int64_t *r, const opts_t *o) { (void)r; return sg_regularizer(c, (sg_reg)o->reg, p[0], FNP(o), p[1], p[2]); }

enum { IO_NONE, IO_REQ, IO_OPT };
typedef struct {
    const char *name;
    call_t call;
    int iout, ns;
    slot_t s[7];
} op_t;

/* 'm', 'n', 'q' from the input; 'k' = min(m, n); 'M'/'N': m or n when full_matrices, else k; '1'.
   'R' and 'C': the rows and columns of the regularizer's A (n×n for LOGDET/EIGSUM). */
static const op_t OPS[] = {
    {"eigh", c_eigh, IO_NONE, 3, {{'n', 'n', IN}, {'n', '1', OUT}, {'n', 'n', OPT_OUT}}},
    {"svd", c_svd, IO_NONE, 4, {{'m', 'n', IN}, {'k', '1', OUT}, {'m', 'M', OPT_OUT}, {'n', 'N', OPT_OUT}}},
    {"rank", c_rank, IO_REQ, 1, {{'m', 'n', IN}}},
    {"nullspace", c_null, IO_OPT, 2, {{'m', 'n', IN}, {'n', 'n', OUT}}},
    {"project", c_proj, IO_NONE, 3, {{'m', 'n', IN}, {'n', 'q', IN}, {'n', 'q', OUT}}},
    {"project_basis", c_projb, IO_NONE, 3, {{'n', 'k', IN}, {'n', 'q', IN}, {'n', 'q', OUT}}},
    {"lstsq", c_lstsq, IO_OPT, 3, {{'m', 'n', IN}, {'m', 'q', IN}, {'n', 'q', OUT}}},
    {"eigh_backward", c_eighb, IO_NONE, 5, {{'n', '1', IN}, {'n', 'n', IN}, {'n', '1', OPT_IN}, {'n', 'n', OPT_IN}, {'n', 'n', OUT}}},
    {"svd_backward", c_svdb, IO_NONE, 7,
     {{'m', 'M', IN}, {'k', '1', IN}, {'n', 'N', IN}, {'m', 'M', OPT_IN}, {'k', '1', OPT_IN}, {'n', 'N', OPT_IN}, {'m', 'n', OUT}}},
    {"matfunc", c_mf, IO_NONE, 4, {{'n', 'n', IN}, {'n', 'n', OUT}, {'n', '1', OPT_OUT}, {'n', 'n', OPT_OUT}}},
    {"matfunc_backward", c_mfb, IO_NONE, 4, {{'n', '1', IN}, {'n', 'n', IN}, {'n', 'n', IN}, {'n', 'n', OUT}}},
    {"regularizer", c_reg, IO_NONE, 3, {{'R', 'C', IN}, {'1', '1', OUT}, {'R', 'C', OPT_OUT}}},
};
enum { NOPS = sizeof OPS / sizeof OPS[0] };

/* ---- one argument ---- */
typedef struct {
    sg_mat m;
    int present, null_desc;
    unsigned char *buf, *orig, *now; /* the call's buffer (host or device), its initial bytes, a readback */
    size_t bytes;
    int valid; /* the descriptor obeys the API's rules */
} arg_t;

static const int64_t ODD[] = {-1, 0, 1, 2, 3, 5, 7, INT64_MAX / 3, INT64_MAX, (int64_t)1 << 40, (int64_t)INT32_MAX + 1,
                              (int64_t)1 << 62};
enum { CAP = 1 << 15 }; /* elements: larger (valid) extents are skipped, not allocated */

static double dbl_bits(unsigned v) { return ((int)v - 128) / 37.0; }

/* Allocate the exact extent and fill: inputs with values from the input bytes, outputs with a pattern. */
static int alloc_arg(arg_t *a, int is_out, rd_t *r, const fz_mem *mem)
{
    const sg_mat *m = &a->m;
    size_t isz = m->dtype == SG_F32 ? 4 : 8; /* an unknown dtype is sized like f64 */
    if (m->batch < 1 || m->rows < 1 || m->cols < 1 || m->ld < 1) {
        a->bytes = 64;
    } else {
        __int128 st = m->stride ? (__int128)m->stride : (__int128)m->ld * m->cols;
        if (m->stride < 0) st = 0;
        __int128 ext = (__int128)(m->batch - 1) * st + (__int128)(m->cols - 1) * m->ld + m->rows;
        if (m->stride < 0 || ext * (__int128)isz > (__int128)INT64_MAX) { /* extent past int64 bytes: must be refused */
            a->bytes = 64;
            a->valid = 0;
        }
        else if (ext > CAP) return 0;                                                 /* valid but too big to test */
        else a->bytes = (size_t)ext * isz;
    }
    a->buf = mem->alloc(a->bytes);
    a->orig = malloc(a->bytes);
    a->now = malloc(a->bytes);
    if (!a->buf || !a->orig || !a->now) return 0;
    if (is_out) {
        memset(a->orig, 0xA5, a->bytes);
    } else if (m->dtype == SG_F32) {
        for (size_t i = 0; i < a->bytes / 4; i++) ((float *)a->orig)[i] = (float)dbl_bits(get(r));
    } else {
        for (size_t i = 0; i < a->bytes / 8; i++) ((double *)a->orig)[i] = dbl_bits(get(r));
    }
    mem->put(a->buf, a->orig, a->bytes);
    if (!a->null_desc && a->m.data != NULL) a->m.data = a->buf;
    return 1;
}

/* Element e of an output buffer lies inside the descriptor (valid descriptors only). */
static int addressed(const sg_mat *m, int64_t e)
{
    int64_t st = m->stride ? m->stride : m->ld * m->cols;
    int64_t b = m->batch > 1 ? e / st : 0, o = e - b * st;
    if (b >= m->batch) return 0;
    int64_t j = o / m->ld, i = o - j * m->ld;
    return j < m->cols && i < m->rows;
}

static long fz_stats[16], fz_ok_by_op[NOPS], fz_inplace_runs; /* calls per status, successes per op */

/* In place, as the API allows: project / project_basis with Y = X, matfunc with F = A (sel bit 1 clear) or
   V = A, eigh with V = A, lstsq with X = B (square A). The call again on a copy of the input, written over it (other outputs fresh), must give the same
   bytes as the out-of-place call that just succeeded, and leave the input's padding alone. */
static void fz_inplace(sg_ctx *ctx, const fz_mem *mem, const op_t *op, arg_t *a, sg_mat **p, const opts_t *o,
                       unsigned sel)
{
    int src, dst;
    if (op->call == c_proj || op->call == c_projb) src = 1, dst = 2;
    else if (op->call == c_mf) src = 0, dst = (sel & 2) ? 3 : 1;
    else if (op->call == c_eigh) src = 0, dst = 2;
    else if (op->call == c_lstsq) src = 1, dst = 2; /* square A: X is m×q like B */
    else return;
    arg_t *in = &a[src], *out = &a[dst];
    if (!in->present || in->null_desc || !in->valid || !out->present || out->null_desc || !out->valid) return;
    if (in->m.rows != out->m.rows || in->m.cols != out->m.cols || in->m.batch != out->m.batch ||
        in->m.dtype != out->m.dtype)
        return;
    size_t isz = in->m.dtype == SG_F32 ? 4 : 8;
    sg_mat io = in->m, other[7];
    sg_mat *q[7];
    unsigned char *fresh[7] = {0}, *now = malloc(in->bytes);
    io.data = mem->alloc(in->bytes);
    CHECK(io.data && now, "out of memory");
    mem->put(io.data, in->orig, in->bytes);
    for (int s = 0; s < op->ns; s++) {
        q[s] = p[s];
        int is_out = op->s[s].role == OUT || op->s[s].role == OPT_OUT;
        if (s == src || s == dst) q[s] = &io;
        else if (is_out && p[s]) { /* a fresh buffer like the first call's */
            other[s] = a[s].m;
            other[s].data = fresh[s] = mem->alloc(a[s].bytes);
            CHECK(fresh[s] != NULL, "out of memory");
            mem->put(fresh[s], a[s].orig, a[s].bytes);
            q[s] = &other[s];
        }
    }
    sg_status st = op->call(ctx, q, NULL, o);
    CHECK(st == SG_OK, "%s in place (argument %d over %d): %s: %s", op->name, dst, src, sg_status_string(st),
          sg_last_error(ctx));
    fz_inplace_runs++;
    mem->get(now, io.data, in->bytes);
    for (int64_t e = 0; e < (int64_t)(in->bytes / isz); e++) {
        if (!addressed(&io, e)) { /* the input's padding */
            CHECK(memcmp(now + e * isz, in->orig + e * isz, isz) == 0, "%s in place: padding element %lld written",
                  op->name, (long long)e);
            continue;
        }
        int64_t st_in = io.stride ? io.stride : io.ld * io.cols, b = io.batch > 1 ? e / st_in : 0,
                j = (e - b * st_in) / io.ld, i = e - b * st_in - j * io.ld,
                st_out = out->m.stride ? out->m.stride : out->m.ld * out->m.cols, f = b * st_out + i + j * out->m.ld;
        CHECK(memcmp(now + e * isz, out->now + f * isz, isz) == 0,
              "%s in place: element (%lld, %lld) of matrix %lld differs from the out-of-place result", op->name,
              (long long)i, (long long)j, (long long)b);
    }
    for (int s = 0; s < op->ns; s++) {
        if (!fresh[s]) continue;
        unsigned char *t = malloc(a[s].bytes);
        CHECK(t != NULL, "out of memory");
        mem->get(t, fresh[s], a[s].bytes);
        CHECK(memcmp(t, a[s].now, a[s].bytes) == 0, "%s in place: output %d differs from the out-of-place call", op->name, s);
        free(t);
        mem->release(fresh[s]);
    }
    mem->release(io.data);
    free(now);
}
/* One call from the input bytes on ctx (its backend and memory space as set), checked against the contract. */
static void fz_call(sg_ctx *ctx, const fz_mem *mem, const uint8_t *data, size_t size)
{
    rd_t r = {data, size, 0};
    const op_t *op = &OPS[get(&r) % NOPS];
    unsigned g = get(&r);
    sg_dtype dt = (g & 1) ? SG_F64 : SG_F32;
    int big = (g >> 1) & 1; /* sizes past LAPACK's small-matrix paths (?syevd divides and conquers above 25) */
    int64_t m = 1 + get(&r) % (big ? 40 : 6), n = 1 + get(&r) % (big ? 40 : 6), q = 1 + get(&r) % 4,
            B = 1 + get(&r) % 4;
    int64_t k = m < n ? m : n;
    opts_t o = {0};
    static const double TOL[] = {0, 1e-3, -1, NAN, INFINITY, 0.5};
    unsigned ob = get(&r);
    o.atol = TOL[ob % 6];
    o.rtol = (double[]){-1, 0, 1e-2, NAN, 1.0, INFINITY}[(ob >> 3) % 6];
    ob = get(&r);
    o.full = ob & 1;
    o.which = (ob >> 1) % 3; /* 2: invalid */
    o.complement = (ob >> 3) & 1;
    o.mode = (ob >> 4) % 5; /* 4: invalid */
    o.param = (double[]){0, 0.1, -1, NAN}[(ob >> 6) & 3];
    ob = get(&r);
    o.reg = ob % 6; /* 5: invalid */
    o.fn.kind = (sg_fn_kind)((ob >> 3) % 6); /* 5: invalid; CALLBACK has no callbacks (must be refused) */
    o.fn.p = (double[]){0.5, 2, -1, NAN}[(ob >> 6) & 3];
    o.fn_null = get(&r) % 7 == 0;
    sg_set_check_finite(ctx, get(&r) % 5 != 0);
    int64_t R = (o.reg == SG_REG_LOGDET || o.reg == SG_REG_EIGSUM) ? n : m, Cc = n;

    arg_t a[7] = {0};
    sg_mat *p[7] = {0};
    int ok = 1;
    for (int s = 0; s < op->ns && ok; s++) {
        const slot_t *sl = &op->s[s];
        int64_t dim[2];
        for (int t = 0; t < 2; t++) {
            char c = t ? sl->c : sl->r;
            dim[t] = c == 'm' ? m : c == 'n' ? n : c == 'q' ? q : c == 'k' ? k : c == 'M' ? (o.full ? m : k)
                   : c == 'N' ? (o.full ? n : k) : c == 'R' ? R : c == 'C' ? Cc : 1;
        }
        arg_t *x = &a[s];
        unsigned u = get(&r), v = get(&r), w = get(&r);
        int optional = sl->role == OPT_IN || sl->role == OPT_OUT;
        x->present = !(optional && (u & 3) == 0);
        if (!x->present) continue;
        x->m.dtype = dt;
        x->m.batch = B;
        x->m.rows = dim[0];
        x->m.cols = dim[1];
        x->m.ld = dim[0] + (v & 3);
        x->m.stride = (v >> 2) & 1 ? x->m.ld * dim[1] + ((v >> 3) & 7) : 0;
        x->m.data = (void *)1; /* replaced by the buffer unless mutated to NULL */
        if (u & 0x80) { /* mutate one thing */
            int64_t val = ODD[w % (sizeof ODD / sizeof ODD[0])];
            switch ((u >> 2) % 9) {
            case 0: x->m.rows = val; break;
            case 1: x->m.cols = val; break;
            case 2: x->m.batch = val; break;
            case 3: x->m.ld = val; break;
            case 4: x->m.stride = val; break;
            case 5: x->m.data = NULL; break;
            case 6: x->null_desc = 1; break;
            case 7: x->m.dtype = (sg_dtype)(dt == SG_F32 ? SG_F64 : (w & 1) ? SG_F32 : 7); break;
            case 8: x->m.rows += 1 + (w & 1); break;
            }
        }
        const sg_mat *d = &x->m;
        x->valid = !x->null_desc && d->data != NULL && d->batch >= 1 && d->rows >= 1 && d->cols >= 1 &&
                   d->ld >= d->rows && d->stride >= 0 &&
                   (d->batch == 1 || d->stride == 0 || (__int128)d->stride >= (__int128)d->ld * d->cols) &&
                   (d->dtype == SG_F32 || d->dtype == SG_F64);
        int is_out = sl->role == OUT || sl->role == OPT_OUT;
        if (!alloc_arg(x, is_out, &r, mem)) ok = 0;
        p[s] = x->null_desc ? NULL : &x->m;
    }
    /* NaN/Inf in an input */
    unsigned nb = get(&r);
    if (ok && nb % 4 == 0) {
        arg_t *x = &a[(nb >> 2) % op->ns];
        int role = op->s[x - a].role;
        if (x->present && (role == IN || role == OPT_IN) && x->bytes >= 8) {
            size_t e = (get(&r) * 31u) % (x->bytes / (x->m.dtype == SG_F32 ? 4 : 8));
            if (x->m.dtype == SG_F32) ((float *)x->orig)[e] = (nb & 0x80) ? NAN : INFINITY;
            else ((double *)x->orig)[e] = (nb & 0x80) ? NAN : -INFINITY;
            mem->put(x->buf, x->orig, x->bytes);
        }
    }
    int64_t *iout = NULL, ni = 0; /* int64 output: one per matrix of the first argument (rank, nullity) */
    unsigned char iorig[8 * 8], inow[8 * 8];
    if (ok && (op->iout == IO_REQ || (op->iout == IO_OPT && get(&r) % 3))) {
        ni = a[0].present && !a[0].null_desc && a[0].m.batch >= 1 && a[0].m.batch <= 8 ? a[0].m.batch : B;
        iout = mem->alloc(sizeof(int64_t) * (size_t)ni);
        memset(iorig, 0x5A, sizeof iorig);
        if (iout) mem->put(iout, iorig, sizeof(int64_t) * (size_t)ni);
        else ok = 0;
    }
    /* per-matrix tolerances for the ops that take them: host arrays of exactly the first argument's batch
       (ASan sees a read past it), elements mostly valid, some not (refused, naming the matrix) */
    double *tv[2] = {NULL, NULL}, tv_orig[2][8];
    int64_t nt = 0;
    if (ok && (op->call == c_rank || op->call == c_null || op->call == c_proj || op->call == c_lstsq)) {
        unsigned tb = get(&r);
        nt = a[0].present && !a[0].null_desc && a[0].m.batch >= 1 && a[0].m.batch <= 8 ? a[0].m.batch : B;
        static const double AV[8] = {0, 1e-3, 0.5, 0, 0.25, 2, -1, NAN}, RV[8] = {-1, 0, 1e-2, 0.5, -INFINITY, 1, INFINITY, NAN};
        for (int t = 0; t < 2 && (tb & 3); t++) {
            if (!(tb & (1u << t))) continue;
            tv[t] = malloc(sizeof(double) * (size_t)nt);
            CHECK(tv[t] != NULL, "out of memory");
            for (int64_t i = 0; i < nt; i++) tv[t][i] = tv_orig[t][i] = (t ? RV : AV)[get(&r) % 8];
        }
        o.atv = tv[0], o.rtv = tv[1];
    }

    if (ok && getenv("FUZZ_API_VERBOSE")) { /* replaying a finding: what the call is */
        fprintf(stderr, "fuzz_api: %s %s m=%lld n=%lld q=%lld batch=%lld atol=%g rtol=%g full=%d which=%d complement=%d "
                "mode=%d param=%g reg=%d fn=%d p=%g fn_null=%d\n", op->name, dt == SG_F32 ? "f32" : "f64", (long long)m,
                (long long)n, (long long)q, (long long)B, o.atol, o.rtol, o.full, o.which, o.complement, o.mode, o.param,
                o.reg, (int)o.fn.kind, o.fn.p, o.fn_null);
        for (int s = 0; s < op->ns; s++) {
            const arg_t *x = &a[s];
            if (!x->present) { fprintf(stderr, "  arg %d: absent\n", s); continue; }
            fprintf(stderr, "  arg %d: %s rows %lld cols %lld batch %lld ld %lld stride %lld dtype %d data %s, %zu bytes:",
                    s, x->null_desc ? "NULL descriptor" : "", (long long)x->m.rows, (long long)x->m.cols,
                    (long long)x->m.batch, (long long)x->m.ld, (long long)x->m.stride, (int)x->m.dtype,
                    x->m.data ? "set" : "NULL", x->bytes);
            for (size_t e = 0; e < x->bytes / 4 && e < 16; e++)
                fprintf(stderr, " %g", x->m.dtype == SG_F32 ? ((float *)x->orig)[e] : e < x->bytes / 8 ? ((double *)x->orig)[e] : 0.0);
            fputc('\n', stderr);
        }
    }
    if (ok) {
        sg_status st = op->call(ctx, p, iout, &o);
        const char *msg = sg_last_error(ctx);
        int64_t fi = sg_failed_index(ctx);
        if (getenv("FUZZ_API_VERBOSE")) fprintf(stderr, "fuzz_api: -> %s %s\n", sg_status_string(st), msg ? msg : "");
        fz_stats[st < 16 ? st : 15]++;
        if (st == SG_OK) fz_ok_by_op[op - OPS]++;
        CHECK(st >= SG_OK && st <= SG_ERR_FORMAT, "%s: status %d", op->name, (int)st);
        CHECK(st == SG_OK || (msg && msg[0]), "%s: %s without a message", op->name, sg_status_string(st));
        int64_t bmax = B; /* the call's batch is its arguments' (mutated ones included) */
        for (int s = 0; s < op->ns; s++)
            if (a[s].present && !a[s].null_desc && a[s].m.batch > bmax) bmax = a[s].m.batch;
        CHECK(fi >= -1 && fi < bmax, "%s: failed index %lld of batch %lld", op->name, (long long)fi, (long long)bmax);
        int untouched = st == SG_ERR_ARG || st == SG_ERR_DTYPE || st == SG_ERR_NONFINITE;
        for (int s = 0; s < op->ns; s++) {
            arg_t *x = &a[s];
            if (!x->present) continue;
            mem->get(x->now, x->buf, x->bytes);
            int is_out = op->s[s].role == OUT || op->s[s].role == OPT_OUT;
            int optional = op->s[s].role == OPT_IN || op->s[s].role == OPT_OUT;
            if (st == SG_OK && !(optional && x->null_desc)) /* a NULL optional argument is an absent one */
                CHECK(x->valid, "%s: SG_OK with an invalid argument %d (rows %lld cols %lld batch %lld ld %lld stride %lld "
                      "dtype %d data %p)", op->name, s, (long long)x->m.rows, (long long)x->m.cols, (long long)x->m.batch,
                      (long long)x->m.ld, (long long)x->m.stride, (int)x->m.dtype, x->m.data);
            if (!is_out || untouched || !x->valid) {
                CHECK(memcmp(x->now, x->orig, x->bytes) == 0, "%s: %s %s (%s) written", op->name,
                      is_out ? "output" : "input", is_out ? "" : "", sg_status_string(st));
                continue;
            }
            size_t isz = x->m.dtype == SG_F32 ? 4 : 8;
            for (int64_t e = 0; e < (int64_t)(x->bytes / isz); e++)
                if (!addressed(&x->m, e))
                    CHECK(memcmp(x->now + e * isz, x->orig + e * isz, isz) == 0,
                          "%s: output %d written at padding element %lld (ld %lld stride %lld)", op->name, s,
                          (long long)e, (long long)x->m.ld, (long long)x->m.stride);
        }
        for (int t = 0; t < 2; t++)
            CHECK(!tv[t] || memcmp(tv[t], tv_orig[t], sizeof(double) * (size_t)nt) == 0, "%s: tolerance array written", op->name);
        if (iout && untouched) {
            mem->get(inow, iout, sizeof(int64_t) * (size_t)ni);
            CHECK(memcmp(inow, iorig, sizeof(int64_t) * (size_t)ni) == 0, "%s: int64 output written (%s)", op->name,
                  sg_status_string(st));
        }
        unsigned sel = get(&r); /* last byte: in-place variant (absent in most inputs: 0 = none) */
        if (st == SG_OK && (sel & 1)) fz_inplace(ctx, mem, op, a, p, &o, sel);
    }
    for (int s = 0; s < op->ns; s++) {
        if (a[s].buf) mem->release(a[s].buf);
        free(a[s].orig), free(a[s].now);
    }
    if (iout) mem->release(iout);
    free(tv[0]), free(tv[1]);
}

#ifndef FZ_NO_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static sg_ctx *ctx;
    if (!ctx) {
        if (sg_create(&ctx, SG_BACKEND_CPU) != SG_OK) abort();
        sg_set_threads(ctx, 1);
    }
    fz_call(ctx, &FZ_HOST, data, size);
    return 0;
}
#endif

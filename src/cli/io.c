/* .npy (numpy C-order, batch shape (..., m, n)) ↔ column-major sg_mat batches, output naming, errors. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_err(const cli_opts *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "specgrad: %s: ", o->op);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

/* 1 when msg already says "matrix <i>" (the library's messages usually do): no second "(matrix i)". */
static int names_matrix(const char *msg, int64_t i)
{
    char tok[40];
    int n = snprintf(tok, sizeof tok, "matrix %lld", (long long)i);
    for (const char *p = strstr(msg, tok); p; p = strstr(p + 1, tok))
        if (p[n] < '0' || p[n] > '9') return 1;
    return 0;
}

static const char *signame(void) { return cli_signal == SIGINT ? "SIGINT" : cli_signal == SIGTERM ? "SIGTERM" : "a signal"; }

int cli_lib_err(const cli_opts *o, sg_status s)
{
    if (o->prog.shown && o->prog.tty) fputc('\n', stderr); /* end the progress line */
    if (s == SG_ERR_CANCELLED && cli_signal) /* outputs are written after the last call: none yet */
        return cli_err(o, "interrupted (%s) at %.0f%%; no output written", signame(), 100 * o->prog.frac);
    const char *msg = o->ctx ? sg_last_error(o->ctx) : "";
    int64_t i = o->ctx ? sg_failed_index(o->ctx) : -1;
    if (!msg[0]) msg = sg_status_string(s);
    const size_t k = strlen(o->op); /* "specgrad: eigh: …", not "specgrad: eigh: eigh: …" */
    if (!strncmp(msg, o->op, k) && msg[k] == ':' && msg[k + 1] == ' ') msg += k + 2;
    if (i >= 0 && !names_matrix(msg, i)) return cli_err(o, "%s (matrix %lld)", msg, (long long)i);
    return cli_err(o, "%s", msg);
}

int cli_read(cli_opts *o, int n, const char *const *paths, sg_array *arrs)
{
    int any64 = 0, any = 0;
    for (int i = 0; i < n; i++) memset(&arrs[i], 0, sizeof arrs[i]);
    for (int i = 0; i < n; i++) {
        if (!paths[i] || !strcmp(paths[i], "-")) continue;
        char err[600];
        sg_status s = sg_npy_read(paths[i], &arrs[i], err, sizeof err);
        if (s != SG_OK || cli_signal) { /* a large input can take seconds: stop before computing */
            for (int j = 0; j < i + (s == SG_OK); j++) sg_array_free(&arrs[j]);
            if (s == SG_OK) return cli_err(o, "interrupted (%s) while reading the inputs; no output written", signame());
            return cli_err(o, "%s", err);
        }
        any = 1;
        any64 |= arrs[i].dtype == SG_F64;
    }
    o->dt = o->dtype >= 0 ? (sg_dtype)o->dtype : (any && !any64) ? SG_F32 : SG_F64;
    return 0;
}

void cli_fmt_shape(char *buf, size_t len, int nd, const int64_t *sh)
{
    size_t k = (size_t)snprintf(buf, len, "(");
    for (int d = 0; d < nd && k < len; d++)
        k += (size_t)snprintf(buf + k, len - k, "%lld%s", (long long)sh[d], nd == 1 ? "," : d + 1 < nd ? ", " : "");
    if (k < len) snprintf(buf + k, len - k, ")");
}

/* Copy/convert one r×c matrix. to_cm: src is C-order r×c, dst column-major (ld = r). Else a plain copy.
   Returns the source index (C order within the matrix) of the first finite value that overflows to ±Inf
   in the destination type (float64 → float32 beyond FLT_MAX), or -1. */
#define CONV(TD, TS)                                                                                    \
    do {                                                                                                \
        const TS *s_ = (const TS *)src;                                                                 \
        TD *d_ = (TD *)dst;                                                                             \
        for (int64_t i = 0; i < r; i++)                                                                 \
            for (int64_t j = 0; j < c; j++) {                                                           \
                TS x_ = s_[i * c + j];                                                                  \
                TD y_ = (TD)x_;                                                                         \
                d_[to_cm ? i + j * r : i * c + j] = y_;                                                 \
                if (bad < 0 && isinf(y_) && isfinite(x_)) bad = i * c + j;                              \
            }                                                                                           \
    } while (0)

static int64_t conv(void *dst, sg_dtype td, const void *src, sg_dtype ts, int64_t r, int64_t c, int to_cm)
{
    int64_t bad = -1;
    if (td == SG_F64 && ts == SG_F64) CONV(double, double);
    else if (td == SG_F64) CONV(double, float);
    else if (ts == SG_F64) CONV(float, double);
    else CONV(float, float);
    return bad;
}

int cli_to_mat(const cli_opts *o, const char *name, sg_array *a, cli_kind k, cli_mat *out)
{
    memset(out, 0, sizeof *out);
    int tail = k == K_SCALAR ? 0 : k == K_VEC ? 1 : 2;
    if (a->ndim < tail)
        return cli_err(o, "%s: has %d dimension(s), needs at least %d (%s)", name, a->ndim, tail,
                       tail == 2 ? "a batch of matrices (..., m, n)" : "a batch of vectors (..., n)");
    out->nb = a->ndim - tail;
    int64_t batch = 1;
    for (int d = 0; d < out->nb; d++) batch *= out->bshape[d] = a->shape[d]; /* product bounded: read checked it */
    int64_t r = tail >= 1 ? a->shape[out->nb] : 1, c = tail == 2 ? a->shape[out->nb + 1] : 1;
    if (k == K_MATT) { /* disk (..., c, r) */
        int64_t t = r;
        r = c;
        c = t;
    }
    if (batch == 0 || r == 0 || c == 0) {
        char sh[200];
        cli_fmt_shape(sh, sizeof sh, a->ndim, a->shape);
        return cli_err(o, "%s: shape %s is empty: nothing to compute", name, sh);
    }
    size_t isz = o->dt == SG_F32 ? 4 : 8, sisz = a->dtype == SG_F32 ? 4 : 8;
    void *data = malloc((size_t)(batch * r * c) * isz);
    if (!data) return cli_err(o, "%s: out of memory", name);
    for (int64_t b = 0; b < batch; b++) { /* MAT: disk r×c C-order → column-major; others: same memory */
        int64_t bad = conv((char *)data + (size_t)(b * r * c) * isz, o->dt,
                           (const char *)a->data + (size_t)(b * r * c) * sisz, a->dtype, r, c, k == K_MAT);
        if (bad >= 0) { /* report the element as it is on disk (C order within the file's matrix) */
            double v = ((const double *)a->data)[b * r * c + bad]; /* only float64 → float32 can overflow */
            int64_t dc = k == K_MAT ? c : r;                        /* columns of one matrix on disk */
            free(data);
            if (tail == 2)
                return cli_err(o, "%s: value %g at element (%lld,%lld) (matrix %lld) overflows float32 (use --dtype f64)",
                               name, v, (long long)(bad / dc), (long long)(bad % dc), (long long)b);
            return cli_err(o, "%s: value %g at element %lld (item %lld) overflows float32 (use --dtype f64)", name, v,
                           (long long)bad, (long long)b);
        }
    }
    out->m = sg_mat_dense(data, o->dt, batch, r, c);
    return 0;
}

int cli_same_batch(const cli_opts *o, const char *na, const cli_mat *a, const char *nb, const cli_mat *b)
{
    int same = a->nb == b->nb;
    for (int d = 0; same && d < a->nb; d++) same = a->bshape[d] == b->bshape[d];
    if (same) return 0;
    char sa[200], sb[200];
    cli_fmt_shape(sa, sizeof sa, a->nb, a->bshape);
    cli_fmt_shape(sb, sizeof sb, b->nb, b->bshape);
    return cli_err(o, "%s: batch shape %s differs from %s's %s (no broadcasting)", nb, sb, na, sa);
}

int cli_alloc(const cli_opts *o, const cli_mat *like, int64_t r, int64_t c, cli_mat *out)
{
    memset(out, 0, sizeof *out);
    out->nb = like->nb;
    memcpy(out->bshape, like->bshape, sizeof out->bshape);
    int64_t batch = like->m.batch;
    void *data = calloc((size_t)(batch * r * c), o->dt == SG_F32 ? 4 : 8);
    if (!data) return cli_err(o, "out of memory for a %lld×%lld×%lld output", (long long)batch, (long long)r,
                              (long long)c);
    out->m = sg_mat_dense(data, o->dt, batch, r, c);
    return 0;
}

void cli_free(cli_mat *m)
{
    if (!m) return;
    free(m->m.data);
    m->m.data = NULL;
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* -o FILE.npy (single-output ops), -o PREFIX (PREFIX + name + .npy), default: <first input stem>_<name>.npy. */
static int out_path(const cli_opts *o, const char *name, int nout, char *buf, size_t len)
{
    const char *pre = o->out;
    char def[1024];
    if (pre && ends_with(pre, ".npy")) {
        if (nout != 1) return cli_err(o, "-o %s names one file, but %s writes %d outputs: give a prefix", pre, o->op, nout);
        snprintf(buf, len, "%s", pre);
        return 0;
    }
    if (!pre) {
        const char *in = o->npos > 0 ? o->pos[0] : "out";
        size_t n = strlen(in);
        if (ends_with(in, ".npy")) n -= 4;
        snprintf(def, sizeof def, "%.*s_", (int)(n < 1000 ? n : 1000), in);
        pre = def;
    }
    if ((size_t)snprintf(buf, len, "%s%s.npy", pre, name) >= len) return cli_err(o, "output path too long");
    return 0;
}

int cli_save(const cli_opts *o, const char *name, int nout, const cli_mat *cm, cli_kind k)
{
    char path[1100], err[600];
    if (out_path(o, name, nout, path, sizeof path)) return 1;
    /* Once the first output is being written the set is finished, so that a fresh W never sits beside a V
       of an earlier run; before it, a signal stops the run here. (A second Ctrl-C kills at once.) */
    static int writing;
    if (cli_signal && !writing) return cli_err(o, "interrupted (%s) before writing %s", signame(), path);
    writing = 1;
    const sg_mat *m = &cm->m;
    int tail = k == K_SCALAR ? 0 : k == K_VEC ? 1 : 2;
    sg_array a = {.dtype = m->dtype, .ndim = cm->nb + tail};
    memcpy(a.shape, cm->bshape, sizeof cm->bshape);
    int64_t r = m->rows, c = m->cols;
    if (k == K_MAT) a.shape[cm->nb] = r, a.shape[cm->nb + 1] = c;
    if (k == K_MATT) a.shape[cm->nb] = c, a.shape[cm->nb + 1] = r;
    if (k == K_VEC) a.shape[cm->nb] = r;
    size_t isz = m->dtype == SG_F32 ? 4 : 8;
    a.data = malloc((size_t)(m->batch * r * c) * isz + 1);
    if (!a.data) return cli_err(o, "%s: out of memory", path);
    int64_t st = m->stride ? m->stride : m->ld * m->cols;
    for (int64_t b = 0; b < m->batch; b++)
        for (int64_t j = 0; j < c; j++)
            for (int64_t i = 0; i < r; i++) {
                /* MAT: C-order (i, j) at i*c + j; others keep column-major order (i + j*r) */
                int64_t d = k == K_MAT ? i * c + j : i + j * r;
                memcpy((char *)a.data + (size_t)(b * r * c + d) * isz,
                       (const char *)m->data + (size_t)(b * st + i + j * m->ld) * isz, isz);
            }
    sg_status s = sg_npy_write(path, &a, err, sizeof err);
    free(a.data);
    if (s != SG_OK) return cli_err(o, "%s", err);
    char sh[200];
    cli_fmt_shape(sh, sizeof sh, a.ndim, a.shape);
    printf("wrote %s %s %s\n", path, sh, m->dtype == SG_F32 ? "float32" : "float64");
    return 0;
}

int cli_save_ints(const cli_opts *o, const char *name, int nout, const cli_mat *like, const int64_t *v)
{
    cli_mat t = {.nb = like->nb};
    memcpy(t.bshape, like->bshape, sizeof t.bshape);
    double *d = malloc(sizeof(double) * (size_t)like->m.batch);
    if (!d) return cli_err(o, "out of memory");
    for (int64_t i = 0; i < like->m.batch; i++) d[i] = (double)v[i];
    t.m = sg_mat_dense(d, SG_F64, like->m.batch, 1, 1);
    int r = cli_save(o, name, nout, &t, K_SCALAR);
    free(d);
    return r;
}

void cli_print_ints(const char *label, const int64_t *v, int64_t n)
{
    printf("%s:", label);
    for (int64_t i = 0; i < n; i++) printf(" %lld", (long long)v[i]);
    printf("\n");
}

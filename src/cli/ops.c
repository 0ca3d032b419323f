/* The matrix subcommands: read .npy inputs, call the library, write .npy outputs. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <stdlib.h>
#include <string.h>

typedef int (*op_fn)(cli_opts *o);

typedef struct {
    const char *name;
    int nmin, nmax; /* positional inputs */
    op_fn fn;
    const char *usage, *help;
} op_def;

/* Inputs of one run: arrays as read, then converted. Freed in one place. */
typedef struct {
    sg_array a[CLI_MAXPOS];
    cli_mat in[CLI_MAXPOS], out[4];
} run_buf;

static void run_free(run_buf *r)
{
    for (int i = 0; i < CLI_MAXPOS; i++) sg_array_free(&r->a[i]), cli_free(&r->in[i]);
    for (int i = 0; i < 4; i++) cli_free(&r->out[i]);
}

static int has(const cli_opts *o, int i) { return i < o->npos && strcmp(o->pos[i], "-") != 0; }

/* Read all positional inputs, then convert input i with kind k[i] (names for messages). */
static int load(cli_opts *o, run_buf *r, int req, const cli_kind *k, const char *const *names)
{
    for (int i = 0; i < req; i++)
        if (!has(o, i)) return cli_err(o, "%s is required ('-' stands only for an optional input)", names[i]);
    if (cli_read(o, o->npos, o->pos, r->a)) return 1;
    for (int i = 0; i < o->npos; i++) {
        if (!has(o, i)) continue;
        if (cli_to_mat(o, names[i], &r->a[i], k[i], &r->in[i])) return 1;
        sg_array_free(&r->a[i]);
        if (i > 0 && cli_same_batch(o, names[0], &r->in[0], names[i], &r->in[i])) return 1;
    }
    return 0;
}

static int need(const cli_opts *o, const char *name, const sg_mat *m, int64_t r, int64_t c)
{
    if (m->rows == r && m->cols == c) return 0;
    return cli_err(o, "%s: matrices are %lld×%lld, expected %lld×%lld", name, (long long)m->rows, (long long)m->cols,
                   (long long)r, (long long)c);
}

/* A is (..., m, n): when the second input has one dimension fewer it is a batch of vectors (numpy lstsq's b). */
static cli_kind rhs_kind(const run_buf *r, int i) { return r->a[i].ndim == r->a[0].ndim - 1 ? K_VEC : K_MAT; }

static int op_eigh(cli_opts *o)
{
    run_buf r = {0};
    int rc = 1;
    if (load(o, &r, 1, (cli_kind[]){K_MAT}, (const char *[]){"A"})) goto done;
    sg_mat *A = &r.in[0].m;
    if (need(o, "A", A, A->rows, A->rows)) goto done;
    if (cli_alloc(o, &r.in[0], A->rows, 1, &r.out[0]) || cli_alloc(o, &r.in[0], A->rows, A->rows, &r.out[1])) goto done;
    sg_status s = sg_eigh(o->ctx, A, &r.out[0].m, &r.out[1].m);
    if (s != SG_OK) {
        rc = cli_lib_err(o, s);
        goto done;
    }
    rc = cli_save(o, "W", 2, &r.out[0], K_VEC) || cli_save(o, "V", 2, &r.out[1], K_MAT);
done:
    run_free(&r);
    return rc;
}

static int op_svd(cli_opts *o)
{
    run_buf r = {0};
    int rc = 1;
    if (load(o, &r, 1, (cli_kind[]){K_MAT}, (const char *[]){"A"})) goto done;
    sg_mat *A = &r.in[0].m;
    int64_t m = A->rows, n = A->cols, k = m < n ? m : n;
    if (cli_alloc(o, &r.in[0], k, 1, &r.out[0]) || cli_alloc(o, &r.in[0], m, o->full ? m : k, &r.out[1]) ||
        cli_alloc(o, &r.in[0], n, o->full ? n : k, &r.out[2]))
        goto done;
    sg_status s = sg_svd(o->ctx, A, o->full, &r.out[0].m, &r.out[1].m, &r.out[2].m);
    if (s != SG_OK) {
        rc = cli_lib_err(o, s);
        goto done;
    }
    /* V (n×kv, column-major) has exactly the memory of numpy's Vh (kv×n, C order) */
    rc = cli_save(o, "S", 3, &r.out[0], K_VEC) || cli_save(o, "U", 3, &r.out[1], K_MAT) ||
         cli_save(o, "Vh", 3, &r.out[2], K_MATT);
done:
    run_free(&r);
    return rc;
}

/* --atol / --rtol FILE.npy: one value per matrix of A (an array of A's batch shape, any float dtype, read
   as float64), for the library's _tols entry points; with either given, the other option becomes an array
   of its number. tv[0], tv[1] stay NULL with numbers only. Nonzero on error (printed). The library checks
   the values and names a bad one's matrix. */
static int load_tols(cli_opts *o, const cli_mat *A, double **tv)
{
    const char *path[2] = {o->atol_file, o->rtol_file}, *nm[2] = {"--atol", "--rtol"};
    const double num[2] = {o->atol, o->rtol};
    const int64_t b = A->m.batch;
    tv[0] = tv[1] = NULL;
    if (!path[0] && !path[1]) return 0;
    for (int t = 0; t < 2; t++) {
        if (!(tv[t] = malloc(sizeof(double) * (size_t)b))) return cli_err(o, "out of memory");
        if (!path[t]) {
            for (int64_t i = 0; i < b; i++) tv[t][i] = num[t];
            continue;
        }
        sg_array a;
        char err[256], sa[128], sb[128];
        if (sg_npy_read(path[t], &a, err, sizeof err) != SG_OK) return cli_err(o, "%s %s: %s", nm[t], path[t], err);
        int same = a.ndim == A->nb;
        for (int d = 0; same && d < a.ndim; d++) same = a.shape[d] == A->bshape[d];
        if (!same) {
            cli_fmt_shape(sa, sizeof sa, a.ndim, a.shape);
            cli_fmt_shape(sb, sizeof sb, A->nb, A->bshape);
            sg_array_free(&a);
            return cli_err(o, "%s %s: shape %s, but the batch shape of the first input is %s (one value per matrix)",
                           nm[t], path[t], sa, sb);
        }
        for (int64_t i = 0; i < b; i++) /* C order = the batch order of the matrices */
            tv[t][i] = a.dtype == SG_F32 ? (double)((const float *)a.data)[i] : ((const double *)a.data)[i];
        sg_array_free(&a);
    }
    return 0;
}

static int op_rank(cli_opts *o)
{
    run_buf r = {0};
    int rc = 1;
    int64_t *rk = NULL;
    double *tv[2] = {NULL, NULL};
    if (load(o, &r, 1, (cli_kind[]){K_MAT}, (const char *[]){"A"}) || load_tols(o, &r.in[0], tv)) goto done;
    rk = calloc((size_t)r.in[0].m.batch, sizeof *rk);
    if (!rk) {
        rc = cli_err(o, "out of memory");
        goto done;
    }
    sg_status s = tv[0] ? sg_rank_tols(o->ctx, &r.in[0].m, tv[0], tv[1], rk) : sg_rank(o->ctx, &r.in[0].m, o->atol, o->rtol, rk);
    if (s != SG_OK) {
        rc = cli_lib_err(o, s);
        goto done;
    }
    cli_print_ints("rank", rk, r.in[0].m.batch);
    rc = o->out ? cli_save_ints(o, "rank", 1, &r.in[0], rk) : 0;
done:
    free(tv[0]), free(tv[1]);
    free(rk);
    run_free(&r);
    return rc;
}

static int op_nullspace(cli_opts *o)
{
    run_buf r = {0};
    int rc = 1;
    int64_t *nul = NULL;
    double *tv[2] = {NULL, NULL};
    if (load(o, &r, 1, (cli_kind[]){K_MAT}, (const char *[]){"A"}) || load_tols(o, &r.in[0], tv)) goto done;
    int64_t n = r.in[0].m.cols, b = r.in[0].m.batch;
    nul = calloc((size_t)b, sizeof *nul);
    if (!nul || cli_alloc(o, &r.in[0], n, n, &r.out[0])) {
        rc = nul ? 1 : cli_err(o, "out of memory");
        goto done;
    }
    sg_status s = tv[0] ? sg_nullspace_tols(o->ctx, &r.in[0].m, tv[0], tv[1], &r.out[0].m, nul)
                        : sg_nullspace(o->ctx, &r.in[0].m, o->atol, o->rtol, &r.out[0].m, nul);
    if (s != SG_OK) {
        rc = cli_lib_err(o, s);
        goto done;
    }
    cli_print_ints("nullity", nul, b);
    int same = 1;
    for (int64_t i = 1; i < b; i++) same &= nul[i] == nul[0];
    cli_mat N = r.out[0];
    if (same) { /* (..., n, nullity): the first nullity columns of each n×n */
        N.m.cols = nul[0];
        N.m.stride = n * n;
    } else {
        printf("nullity varies over the batch: N is (..., %lld, %lld), columns beyond each nullity are zero\n",
               (long long)n, (long long)n);
    }
    rc = cli_save(o, "N", 1, &N, K_MAT);
done:
    free(tv[0]), free(tv[1]);
    free(nul);
    run_free(&r);
    return rc;
}

/* project / project-basis: loads (first, X), X (..., n, k) or (..., n) with n = the rows (by_rows) or the
   columns of the first, and allocates Y like X. Nonzero on error (printed). */
/* One A (or Q) for a batch of right-hand sides: A's batch shape is () or all ones, X (..., rows, k) has its
   own. X's batch, packed column-major, is the rows × (B·k) matrix of its columns side by side, so one call
   decomposes A once (as the Python binding does); the outputs unfold the same way. */
static int folds(const cli_mat *a, cli_kind xk) { return a->m.batch == 1 && xk == K_MAT; }
static sg_mat folded(const sg_mat *m)
{
    sg_mat f = *m;
    f.cols = m->cols * m->batch;
    f.batch = 1;
    f.ld = m->rows;
    f.stride = 0;
    return f;
}
/* After a failed folded call: which item a column of the one call belongs to. */
static int fold_err(const cli_opts *o, sg_status s, const char *xn, const cli_mat *x)
{
    int rc = cli_lib_err(o, s);
    if (x->m.batch > 1)
        fprintf(stderr, "specgrad: %s: (%s's %lld matrices went in as one matrix of their columns: column c is column "
                        "c %% %lld of item c / %lld)\n", o->op, xn, (long long)x->m.batch, (long long)x->m.cols,
                (long long)x->m.cols);
    return rc;
}

static int load_proj(cli_opts *o, run_buf *r, const char *an, int by_rows, cli_kind *xk)
{
    if (!has(o, 0) || !has(o, 1)) return cli_err(o, "%s and X are both required", an);
    if (cli_read(o, 2, o->pos, r->a)) return 1;
    *xk = rhs_kind(r, 1);
    if (cli_to_mat(o, an, &r->a[0], K_MAT, &r->in[0]) || cli_to_mat(o, "X", &r->a[1], *xk, &r->in[1]) ||
        (!folds(&r->in[0], *xk) && cli_same_batch(o, an, &r->in[0], "X", &r->in[1])))
        return 1;
    int64_t n = by_rows ? r->in[0].m.rows : r->in[0].m.cols;
    if (r->in[1].m.rows != n)
        return cli_err(o, "X: has %lld rows, %s has %lld %s (X must be (..., n, k) or (..., n))",
                       (long long)r->in[1].m.rows, an, (long long)n, by_rows ? "rows" : "columns");
    return cli_alloc(o, &r->in[1], n, r->in[1].m.cols, &r->out[0]);
}

static int op_project(cli_opts *o)
{
    run_buf r = {0};
    cli_kind xk;
    double *tv[2] = {NULL, NULL};
    int rc = load_proj(o, &r, "A", 0, &xk) || load_tols(o, &r.in[0], tv);
    if (!rc) {
        const int f = folds(&r.in[0], xk);
        sg_mat X = f ? folded(&r.in[1].m) : r.in[1].m, Y = f ? folded(&r.out[0].m) : r.out[0].m;
        sg_status s = tv[0] ? sg_project_tols(o->ctx, &r.in[0].m, &X, (sg_proj)o->which, tv[0], tv[1], &Y)
                            : sg_project(o->ctx, &r.in[0].m, &X, (sg_proj)o->which, o->atol, o->rtol, &Y);
        rc = s != SG_OK ? fold_err(o, s, "X", &r.in[1]) : cli_save(o, "Y", 1, &r.out[0], xk);
    }
    free(tv[0]), free(tv[1]);
    run_free(&r);
    return rc;
}

static int op_project_basis(cli_opts *o)
{
    run_buf r = {0};
    cli_kind xk;
    int rc = load_proj(o, &r, "Q", 1, &xk);
    if (!rc) {
        const int f = folds(&r.in[0], xk);
        sg_mat X = f ? folded(&r.in[1].m) : r.in[1].m, Y = f ? folded(&r.out[0].m) : r.out[0].m;
        sg_status s = sg_project_basis(o->ctx, &r.in[0].m, &X, o->complement, &Y);
        rc = s != SG_OK ? fold_err(o, s, "X", &r.in[1]) : cli_save(o, "Y", 1, &r.out[0], xk);
    }
    run_free(&r);
    return rc;
}

static int op_lstsq(cli_opts *o)
{
    run_buf r = {0};
    int rc = 1;
    if (!has(o, 0) || !has(o, 1)) return cli_err(o, "A and B are both required");
    int64_t *rk = NULL;
    double *tv[2] = {NULL, NULL};
    if (cli_read(o, 2, o->pos, r.a)) goto done;
    cli_kind bk = rhs_kind(&r, 1);
    if (cli_to_mat(o, "A", &r.a[0], K_MAT, &r.in[0]) || cli_to_mat(o, "B", &r.a[1], bk, &r.in[1]) ||
        (!folds(&r.in[0], bk) && cli_same_batch(o, "A", &r.in[0], "B", &r.in[1])) || load_tols(o, &r.in[0], tv))
        goto done;
    const int f = folds(&r.in[0], bk);
    sg_mat *A = &r.in[0].m, *B = &r.in[1].m;
    if (B->rows != A->rows) {
        rc = cli_err(o, "B: has %lld rows, A has %lld (B must be (..., m, k) or (..., m))", (long long)B->rows,
                     (long long)A->rows);
        goto done;
    }
    rk = calloc((size_t)A->batch, sizeof *rk);
    if (!rk) {
        rc = cli_err(o, "out of memory");
        goto done;
    }
    if (cli_alloc(o, &r.in[1], A->cols, B->cols, &r.out[0])) goto done;
    sg_mat Bf = f ? folded(B) : *B, X = f ? folded(&r.out[0].m) : r.out[0].m;
    sg_status s = tv[0] ? sg_lstsq_tols(o->ctx, A, &Bf, tv[0], tv[1], &X, rk) : sg_lstsq(o->ctx, A, &Bf, o->atol, o->rtol, &X, rk);
    if (s != SG_OK) {
        rc = fold_err(o, s, "B", &r.in[1]);
        goto done;
    }
    cli_print_ints("rank", rk, A->batch);
    rc = cli_save(o, "X", 1, &r.out[0], bk);
done:
    free(tv[0]), free(tv[1]);
    free(rk);
    run_free(&r);
    return rc;
}

/* DEGENERATE still writes gA (with inf/NaN): save it, then report the failure. */
static int finish_grad(cli_opts *o, sg_status s, cli_mat *gA)
{
    if (s != SG_OK && s != SG_ERR_DEGENERATE) return cli_lib_err(o, s);
    int rc = cli_save(o, "gA", 1, gA, K_MAT);
    if (s == SG_ERR_DEGENERATE) {
        cli_lib_err(o, s);
        fprintf(stderr, "specgrad: %s: gA was written but holds inf/NaN; try --mode mask or lorentz\n", o->op);
        return 1;
    }
    return rc;
}

static int op_eigh_backward(cli_opts *o)
{
    run_buf r = {0};
    int rc = 1;
    if (load(o, &r, 2, (cli_kind[]){K_VEC, K_MAT, K_VEC, K_MAT}, (const char *[]){"W", "V", "gW", "gV"})) goto done;
    int64_t n = r.in[0].m.rows;
    if (need(o, "V", &r.in[1].m, n, n) || (has(o, 2) && need(o, "gW", &r.in[2].m, n, 1)) ||
        (has(o, 3) && need(o, "gV", &r.in[3].m, n, n)) || cli_alloc(o, &r.in[0], n, n, &r.out[0]))
        goto done;
    sg_status s = sg_eigh_backward(o->ctx, &r.in[0].m, &r.in[1].m, has(o, 2) ? &r.in[2].m : NULL,
                                   has(o, 3) ? &r.in[3].m : NULL, o->mode, o->param, &r.out[0].m);
    rc = finish_grad(o, s, &r.out[0]);
done:
    run_free(&r);
    return rc;
}

static int op_svd_backward(cli_opts *o)
{
    run_buf r = {0};
    int rc = 1;
    if (load(o, &r, 3, (cli_kind[]){K_MAT, K_VEC, K_MATT, K_MAT, K_VEC, K_MATT},
             (const char *[]){"U", "S", "Vh", "gU", "gS", "gVh"}))
        goto done;
    sg_mat *U = &r.in[0].m, *V = &r.in[2].m;
    if ((has(o, 3) && need(o, "gU", &r.in[3].m, U->rows, U->cols)) ||
        (has(o, 4) && need(o, "gS", &r.in[4].m, r.in[1].m.rows, 1)) ||
        (has(o, 5) && need(o, "gVh", &r.in[5].m, V->rows, V->cols)) || cli_alloc(o, &r.in[0], U->rows, V->rows, &r.out[0]))
        goto done;
    sg_status s = sg_svd_backward(o->ctx, U, &r.in[1].m, V, has(o, 3) ? &r.in[3].m : NULL,
                                  has(o, 4) ? &r.in[4].m : NULL, has(o, 5) ? &r.in[5].m : NULL, o->mode, o->param,
                                  &r.out[0].m);
    rc = finish_grad(o, s, &r.out[0]);
done:
    run_free(&r);
    return rc;
}

static int need_fn(const cli_opts *o)
{
    if (o->has_fn) return 0;
    return cli_err(o, "--fn sqrt|log|exp|pow is required");
}

static int op_matfunc(cli_opts *o)
{
    run_buf r = {0};
    int rc = 1;
    if (need_fn(o) || load(o, &r, 1, (cli_kind[]){K_MAT}, (const char *[]){"A"})) goto done;
    sg_mat *A = &r.in[0].m;
    const int64_t n = A->rows;
    if (need(o, "A", A, n, n) || cli_alloc(o, &r.in[0], n, n, &r.out[0])) goto done;
    /* --eig: also the eigendecomposition F was built from, for `matfunc-backward W.npy V.npy gF.npy` */
    if (o->eig && (cli_alloc(o, &r.in[0], n, 1, &r.out[1]) || cli_alloc(o, &r.in[0], n, n, &r.out[2]))) goto done;
    sg_status s = sg_matfunc(o->ctx, A, &o->fn, &r.out[0].m, o->eig ? &r.out[1].m : NULL, o->eig ? &r.out[2].m : NULL);
    if (s != SG_OK) {
        rc = cli_lib_err(o, s);
        goto done;
    }
    const int nout = o->eig ? 3 : 1;
    rc = cli_save(o, "F", nout, &r.out[0], K_MAT) ||
         (o->eig && (cli_save(o, "W", nout, &r.out[1], K_VEC) || cli_save(o, "V", nout, &r.out[2], K_MAT)));
done:
    run_free(&r);
    return rc;
}

/* matfunc-backward A gF (eigh computed here) or W V gF (from a previous `specgrad eigh`). */
static int op_matfunc_backward(cli_opts *o)
{
    run_buf r = {0};
    int rc = 1;
    int two = o->npos == 2;
    if (need_fn(o)) goto done;
    if (two ? load(o, &r, 2, (cli_kind[]){K_MAT, K_MAT}, (const char *[]){"A", "gF"})
            : load(o, &r, 3, (cli_kind[]){K_VEC, K_MAT, K_MAT}, (const char *[]){"W", "V", "gF"}))
        goto done;
    cli_mat *W = &r.in[0], *V = &r.in[1], *gF = &r.in[two ? 1 : 2];
    int64_t n = r.in[0].m.rows;
    sg_status s;
    if (two) {
        if (need(o, "A", &r.in[0].m, n, n) || cli_alloc(o, &r.in[0], n, 1, &r.out[1]) ||
            cli_alloc(o, &r.in[0], n, n, &r.out[2]))
            goto done;
        if ((s = sg_eigh(o->ctx, &r.in[0].m, &r.out[1].m, &r.out[2].m)) != SG_OK) {
            rc = cli_lib_err(o, s);
            goto done;
        }
        W = &r.out[1];
        V = &r.out[2];
    }
    if (need(o, "V", &V->m, n, n) || need(o, "gF", &gF->m, n, n) || cli_alloc(o, W, n, n, &r.out[0])) goto done;
    s = sg_matfunc_backward(o->ctx, &W->m, &V->m, &o->fn, &gF->m, &r.out[0].m);
    rc = finish_grad(o, s, &r.out[0]);
done:
    run_free(&r);
    return rc;
}

static int op_reg(cli_opts *o)
{
    run_buf r = {0};
    int rc = 1;
    if (!o->has_kind) return cli_err(o, "--kind spectral|nuclear|ortho|logdet|eigsum is required");
    if (o->kind == SG_REG_EIGSUM && need_fn(o)) return 1;
    if (load(o, &r, 1, (cli_kind[]){K_MAT}, (const char *[]){"A"})) goto done;
    sg_mat *A = &r.in[0].m;
    if (cli_alloc(o, &r.in[0], 1, 1, &r.out[0]) || (!o->nograd && cli_alloc(o, &r.in[0], A->rows, A->cols, &r.out[1])))
        goto done;
    sg_status s = sg_regularizer(o->ctx, o->kind, A, o->has_fn ? &o->fn : NULL, &r.out[0].m,
                                 o->nograd ? NULL : &r.out[1].m);
    if (s != SG_OK) {
        rc = cli_lib_err(o, s);
        goto done;
    }
    int nout = o->nograd ? 1 : 2;
    rc = cli_save(o, "loss", nout, &r.out[0], K_SCALAR) || (!o->nograd && cli_save(o, "gA", nout, &r.out[1], K_MAT));
done:
    run_free(&r);
    return rc;
}

static const op_def ops[] = {
    {"eigh", 1, 1, op_eigh, "eigh A.npy [-o PREFIX]",
     "Symmetric eigendecomposition of A (..., n, n) (lower triangle read).\n"
     "Writes W (..., n) ascending and V (..., n, n) with eigenvectors in columns (numpy.linalg.eigh)."},
    {"svd", 1, 1, op_svd, "svd A.npy [--full] [-o PREFIX]",
     "SVD of A (..., m, n), k = min(m, n). Writes S (..., k) descending, U (..., m, k) and Vh (..., k, n)\n"
     "like numpy.linalg.svd(full_matrices=False); with --full U is (..., m, m) and Vh (..., n, n)."},
    {"rank", 1, 1, op_rank, "rank A.npy [--atol T|FILE.npy] [--rtol R|FILE.npy] [-o FILE.npy]",
     "Numerical rank per matrix: count of σ > max(atol, rtol·σmax); default rtol = max(m,n)·eps when atol = 0.\n"
     "--atol / --rtol FILE.npy: one value per matrix (an array of A's batch shape; also nullspace, project, lstsq).\n"
     "Prints the ranks; with -o also writes them (float64, batch shape)."},
    {"nullspace", 1, 1, op_nullspace, "nullspace A.npy [--atol T|FILE.npy] [--rtol R|FILE.npy] [-o PREFIX]",
     "Orthonormal nullspace basis of A (..., m, n), like scipy.linalg.null_space. Prints the nullities.\n"
     "Writes N (..., n, nullity) when the nullity is the same for every matrix; otherwise N (..., n, n)\n"
     "with the basis in the leading columns and zero columns after each matrix's nullity."},
    {"project", 2, 2, op_project, "project A.npy X.npy [--null | --row] [--atol T|FILE.npy] [--rtol R|FILE.npy] [-o PREFIX]",
     "Projects X (..., n, k) or (..., n) onto the nullspace (default) or the row space of A (..., m, n).\n"
     "Writes Y with the shape of X. A single A (m, n) applies to every matrix of a batch X (one SVD)."},
    {"project-basis", 2, 2, op_project_basis, "project-basis Q.npy X.npy [--complement] [-o PREFIX]",
     "Y = Q Qᵀ X (or X − Q Qᵀ X with --complement) for a given basis Q (..., n, q), q <= n, with orthonormal\n"
     "columns (e.g. N from `specgrad nullspace`: then it is `project --null` without the SVD). X (..., n, k) or\n"
     "(..., n); writes Y with the shape of X. A single Q (n, q) applies to every matrix of a batch X."},
    {"lstsq", 2, 2, op_lstsq, "lstsq A.npy B.npy [--atol T|FILE.npy] [--rtol R|FILE.npy] [-o PREFIX]",
     "Minimum-norm least squares X = pinv(A) B for A (..., m, n), B (..., m, k) or (..., m), also when A is\n"
     "rank-deficient (numpy.linalg.lstsq). Prints the ranks; writes X (..., n, k) or (..., n). A single A\n"
     "(m, n) applies to every matrix of a batch B (..., m, k) (one SVD, one rank)."},
    {"eigh-backward", 2, 4, op_eigh_backward,
     "eigh-backward W.npy V.npy [gW.npy|-] [gV.npy|-] [--mode exact|mask|lorentz|taylor] [--param P] [-o PREFIX]",
     "Gradient gA (..., n, n) of a loss through eigh, from W, V (as written by `specgrad eigh`) and the loss's\n"
     "gradients gW (..., n), gV (..., n, n); '-' or omitted = zero. --mode treats tied eigenvalues (exact\n"
     "gives inf/NaN and exit status 1 at ties; mask, lorentz and taylor stay finite)."},
    {"svd-backward", 3, 6, op_svd_backward,
     "svd-backward U.npy S.npy Vh.npy [gU|-] [gS|-] [gVh|-] [--mode M] [--param P] [-o PREFIX]",
     "Gradient gA (..., m, n) of a loss through svd, from U, S, Vh (as written by `specgrad svd`, economy\n"
     "or --full) and the loss's gradients with respect to U, S and Vh; '-' or omitted = zero."},
    {"matfunc", 1, 1, op_matfunc, "matfunc A.npy --fn sqrt|log|exp|pow [--p P] [--eig] [-o PREFIX]",
     "Matrix function F = V f(Λ) Vᵀ of symmetric A (..., n, n); pow needs --p (F = A^p). Writes F; with\n"
     "--eig also W, V (the eigendecomposition used: `matfunc-backward W.npy V.npy gF.npy` reuses it)."},
    {"matfunc-backward", 2, 3, op_matfunc_backward,
     "matfunc-backward (A.npy | W.npy V.npy) gF.npy --fn sqrt|log|exp|pow [--p P] [-o PREFIX]",
     "Gradient gA of a loss through F = f(A) given gF = dLoss/dF (Daleckii–Krein, finite at ties).\n"
     "Give A (eigh is computed) or W, V from `specgrad eigh`. pow needs --p."},
    {"reg", 1, 1, op_reg, "reg A.npy --kind spectral|nuclear|ortho|logdet|eigsum [--fn F --p P] [--no-grad] [-o PREFIX]",
     "Spectral regularizer per matrix: spectral σmax², nuclear Σσ, ortho ||AᵀA − I||², logdet (SPD A),\n"
     "eigsum Σ f(λ) (needs --fn; pow also --p). Writes loss (batch shape) and, unless --no-grad, gA (shape of A)."},
};
#define NOPS (int)(sizeof ops / sizeof *ops)

static const op_def *find(const char *name)
{
    for (int i = 0; i < NOPS; i++)
        if (!strcmp(ops[i].name, name)) return &ops[i];
    return NULL;
}

int cli_op_known(const char *op) { return find(op) != NULL; }

int cli_option_applies(const char *op, const char *name)
{
    static const char *common[] = {"--backend", "--dtype", "--threads", "-o", "--out"};
    for (size_t i = 0; i < sizeof common / sizeof *common; i++)
        if (!strcmp(name, common[i])) return 1;
    const op_def *d = find(op);
    if (!d) return 0; /* demo: the common options only (unknown commands fail before) */
    if (!strcmp(name, "--progress")) return 1; /* every matrix command */
    size_t n = strlen(name);
    for (const char *u = strstr(d->usage, name); u; u = strstr(u + 1, name)) {
        char before = u == d->usage ? ' ' : u[-1], after = u[n]; /* a whole word: "--p" is not "--param" */
        if ((before == ' ' || before == '[' || before == '|' || before == '(') &&
            (after == 0 || after == ' ' || after == ']' || after == '|' || after == ')'))
            return 1;
    }
    return 0;
}

void cli_op_help(FILE *f, const char *op)
{
    const op_def *d = find(op);
    if (!d) return;
    fprintf(f, "usage: specgrad %s\n\n%s\n\n", d->usage, d->help);
    fprintf(f, "common options:\n"
               "  --backend cpu|cuda|auto  (default auto: CUDA when a GPU is usable, else CPU)\n"
               "  --dtype f32|f64          compute dtype (default: float64 if any input is float64, else float32)\n"
               "  --threads N              CPU threads over the batch (default: all)\n"
               "  --progress               progress lines on stderr (percent, elapsed, time left) and 'done' after\n"
               "                           each call; on a terminal shown anyway once a run passes 1 s\n"
               "  -o PREFIX                outputs go to PREFIX<name>.npy (default: <first input>_<name>.npy);\n"
               "                           for a single output, -o FILE.npy names the file itself\n"
               "Arrays are numpy C- or Fortran-order float32/float64 .npy files with batch shape (..., m, n).\n");
}

void cli_ops_list(FILE *f)
{
    for (int i = 0; i < NOPS; i++) fprintf(f, "  specgrad %s\n", ops[i].usage);
}

int cli_run_op(cli_opts *o)
{
    const op_def *d = find(o->op);
    if (!d) return cli_err(o, "unknown command");
    if (o->npos < d->nmin || o->npos > d->nmax) {
        if (d->nmin == d->nmax) cli_err(o, "expected %d input file(s), got %d", d->nmin, o->npos);
        else cli_err(o, "expected %d to %d input files, got %d", d->nmin, d->nmax, o->npos);
        fprintf(stderr, "usage: specgrad %s\n", d->usage);
        return 2;
    }
    return d->fn(o);
}

/* The `specgrad` executable: demo self-check and its printed numbers, op round trips on .npy files in numpy's
   C-order (..., m, n) convention (results checked numerically, not against stored outputs), and error paths
   (exit status and message). The CLI is found next to this test executable, or via $SPECGRAD_CLI. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "specgrad.h"
#include "testutil.h"

static char cli[4096], dir[256];
static char out[1 << 16];

static void setup(void)
{
    const char *env = getenv("SPECGRAD_CLI");
    if (env) snprintf(cli, sizeof cli, "%s", env);
    else {
        char self[4000];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        cr_assert_gt(n, 0, "cannot resolve /proc/self/exe");
        self[n] = 0;
        snprintf(cli, sizeof cli, "%s/specgrad", dirname(self));
    }
    cr_assert_eq(access(cli, X_OK), 0, "specgrad CLI not found at %s (build target specgrad-cli or set SPECGRAD_CLI)", cli);
    snprintf(dir, sizeof dir, "/tmp/sg_cli_XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}
static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}
TestSuite(cli, .init = setup, .fini = teardown);

/* Runs `specgrad <args>` in the temp dir (stdout+stderr into out); returns the exit status. */
static int run(const char *fmt, ...)
{
    char args[2048], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s 2>&1", dir, cli, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    cr_assert(WIFEXITED(st), "specgrad %s did not exit normally (signal?)\n%s", args, out);
    return WEXITSTATUS(st);
}

static void path(char *buf, const char *name) { snprintf(buf, 512, "%s/%s", dir, name); }

/* Write a C-order array from doubles. */
static void wr(const char *name, sg_dtype t, int nd, const int64_t *shape, const double *x)
{
    sg_array a = {.dtype = t, .ndim = nd};
    int64_t c = 1;
    for (int d = 0; d < nd; d++) c *= a.shape[d] = shape[d];
    a.data = malloc((size_t)c * 8);
    for (int64_t i = 0; i < c; i++) {
        if (t == SG_F64) ((double *)a.data)[i] = x[i];
        else ((float *)a.data)[i] = (float)x[i];
    }
    char p[512], err[512];
    path(p, name);
    cr_assert_eq(sg_npy_write(p, &a, err, sizeof err), SG_OK, "%s", err);
    sg_array_free(&a);
}

/* Read an array (any float dtype) into doubles; checks dtype and shape. Caller frees. */
static double *rd(const char *name, sg_dtype t, int nd, const int64_t *shape)
{
    char p[512], err[512];
    path(p, name);
    sg_array a;
    cr_assert_eq(sg_npy_read(p, &a, err, sizeof err), SG_OK, "%s", err);
    cr_expect_eq(a.dtype, t, "%s: dtype", name);
    cr_assert_eq(a.ndim, nd, "%s: ndim %d, expected %d", name, a.ndim, nd);
    int64_t c = 1;
    for (int d = 0; d < nd; d++) {
        cr_assert_eq(a.shape[d], shape[d], "%s: dim %d is %lld, expected %lld", name, d, (long long)a.shape[d],
                     (long long)shape[d]);
        c *= shape[d];
    }
    double *x = malloc((size_t)(c ? c : 1) * 8);
    for (int64_t i = 0; i < c; i++) x[i] = t == SG_F64 ? ((double *)a.data)[i] : ((float *)a.data)[i];
    sg_array_free(&a);
    return x;
}

/* ---- demo -------------------------------------------------------------------------------------------- */
/* Value printed at the end of the first line that starts with `label` after `section`. */
static double num_after(const char *section, const char *label)
{
    const char *s = strstr(out, section);
    cr_assert_not_null(s, "section '%s' missing:\n%s", section, out);
    const char *l = strstr(s, label);
    cr_assert_not_null(l, "label '%s' missing in %s:\n%s", label, section, out);
    const char *eol = strchr(l, '\n');
    cr_assert_not_null(eol);
    /* the number is the first numeric token after the label's run of padding */
    const char *p = l + strlen(label);
    while (p < eol && !(*p == ' ' && p[1] == ' ')) p++;
    double v;
    cr_assert_eq(sscanf(p, "%lf", &v), 1, "no number after '%s': %.*s", label, (int)(eol - l), l);
    return v;
}

Test(cli, demo_passes_and_prints_seed_000_numbers, .timeout = 60)
{
    int rc = run("demo");
    cr_assert_eq(rc, 0, "demo failed (rc %d):\n%s", rc, out);
    cr_expect(strstr(out, "backend: ") != NULL, "%s", out);
    cr_expect(strstr(out, "all checks passed") != NULL, "%s", out);
    const char *secs[] = {"== float64 ==", "== float32 =="};
    for (int k = 0; k < 2; k++) {
        double smin = num_after(secs[k], "σmin (smallest singular value"), bug = num_after(secs[k], "buggy ||X(w0+10z)"),
               ten = num_after(secs[k], "10·σmin"), fix = num_after(secs[k], "fixed ||X(w0+10z)"),
               rank = num_after(secs[k], "rank(X)"), nul = num_after(secs[k], "nullity"),
               xn = num_after(secs[k], "nullspace basis: max_j ||X N_j||");
        double tol = k == 0 ? 1e-10 : 1e-4;
        cr_expect_eq(rank, 6);
        cr_expect_eq(nul, 6);
        cr_expect_gt(smin, 0);
        cr_expect(fabs(ten - 10 * smin) <= 1e-5 * ten, "10·σmin line %g vs σmin %g", ten, smin);
        cr_expect(fabs(bug / ten - 1) < 0.01, "%s buggy %g vs 10σmin %g", secs[k], bug, ten);
        cr_expect(fix < tol, "%s fixed %g", secs[k], fix);
        cr_expect(xn < tol, "%s ||X N|| %g", secs[k], xn);
    }
}

/* ---- op round trips ---------------------------------------------------------------------------------- */
Test(cli, eigh_round_trip_both_dtypes)
{
    enum { B0 = 2, B1 = 3, N = 5 };
    double A[B0 * B1 * N * N];
    tu_rng r = tu_seed(11);
    for (int b = 0; b < B0 * B1; b++) {
        double w[N];
        for (int i = 0; i < N; i++) w[i] = (double)i - 1.5 + 0.1 * b;
        tu_sym_with_spectrum(&r, N, w, A + b * N * N); /* symmetric: C and column-major agree */
    }
    int64_t sh[4] = {B0, B1, N, N};
    for (int t = 0; t < 2; t++) {
        sg_dtype dt = t ? SG_F64 : SG_F32;
        double tol = t ? 1e-12 : 1e-4;
        wr("A.npy", dt, 4, sh, A);
        int rc = run("eigh A.npy -o e_ --backend cpu");
        cr_assert_eq(rc, 0, "%s", out);
        double *W = rd("e_W.npy", dt, 3, sh), *V = rd("e_V.npy", dt, 4, sh);
        for (int b = 0; b < B0 * B1; b++) {
            const double *a = A + b * N * N, *v = V + b * N * N, *w = W + b * N;
            for (int j = 0; j < N; j++) {
                cr_expect(fabs(w[j] - ((double)j - 1.5 + 0.1 * b)) < tol, "eigenvalue %d of %d: %g", j, b, w[j]);
                for (int i = 0; i < N; i++) { /* (A V)[i][j] = w[j] V[i][j]; V[i][j] = component i of vector j */
                    double av = 0, vv = 0;
                    for (int k = 0; k < N; k++) av += a[i * N + k] * v[k * N + j], vv += v[k * N + i] * v[k * N + j];
                    cr_expect(fabs(av - w[j] * v[i * N + j]) < 10 * tol, "residual (%d,%d) of %d", i, j, b);
                    cr_expect(fabs(vv - (i == j)) < 10 * tol, "VᵀV (%d,%d) of %d", i, j, b);
                }
            }
        }
        free(W);
        free(V);
    }
}

/* U diag(S) Vh == A in numpy's layout, economy and full, and Fortran-order input gives the same S. */
Test(cli, svd_writes_numpy_style_vh)
{
    enum { B = 2, M = 4, N = 6, K = 4 };
    double A[B * M * N];
    tu_rng r = tu_seed(5);
    tu_fill_normal(&r, A, B * M * N);
    wr("A.npy", SG_F64, 3, (int64_t[]){B, M, N}, A);
    for (int full = 0; full < 2; full++) {
        cr_assert_eq(run("svd A.npy %s -o s_", full ? "--full" : ""), 0, "%s", out);
        int64_t ku = full ? M : K, kv = full ? N : K;
        double *S = rd("s_S.npy", SG_F64, 2, (int64_t[]){B, K}), *U = rd("s_U.npy", SG_F64, 3, (int64_t[]){B, M, ku}),
               *Vh = rd("s_Vh.npy", SG_F64, 3, (int64_t[]){B, kv, N});
        for (int b = 0; b < B; b++) {
            for (int i = 0; i < M; i++)
                for (int j = 0; j < N; j++) {
                    double x = 0;
                    for (int k = 0; k < K; k++) x += U[(b * M + i) * ku + k] * S[b * K + k] * Vh[(b * kv + k) * N + j];
                    cr_expect(fabs(x - A[(b * M + i) * N + j]) < 1e-12, "reconstruction (%d,%d) of %d", i, j, b);
                }
            for (int p = 0; p < kv; p++) /* rows of Vh orthonormal */
                for (int q = 0; q < kv; q++) {
                    double d = 0;
                    for (int j = 0; j < N; j++) d += Vh[(b * kv + p) * N + j] * Vh[(b * kv + q) * N + j];
                    cr_expect(fabs(d - (p == q)) < 1e-12, "Vh VhT (%d,%d)", p, q);
                }
        }
        free(S);
        free(U);
        free(Vh);
    }
    /* Fortran-order copy of A: same singular values */
    double F[B * M * N];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) F[b + B * (i + M * j)] = A[(b * M + i) * N + j];
    char hdr[128], p[512];
    int hl = snprintf(hdr, sizeof hdr, "{'descr': '<f8', 'fortran_order': True, 'shape': (%d, %d, %d), }\n", B, M, N);
    path(p, "F.npy");
    FILE *f = fopen(p, "wb");
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)hl, 0};
    fwrite(pre, 1, 10, f);
    fwrite(hdr, 1, (size_t)hl, f);
    fwrite(F, 8, B * M * N, f);
    fclose(f);
    cr_assert_eq(run("svd F.npy -o f_"), 0, "%s", out);
    cr_assert_eq(run("svd A.npy -o s_"), 0, "%s", out);
    double *S1 = rd("f_S.npy", SG_F64, 2, (int64_t[]){B, K}), *S2 = rd("s_S.npy", SG_F64, 2, (int64_t[]){B, K});
    for (int i = 0; i < B * K; i++) cr_expect(fabs(S1[i] - S2[i]) < 1e-13, "S[%d] %g vs %g", i, S1[i], S2[i]);
    free(S1);
    free(S2);
}

/* Rank-deficient batch: nullspace (..., n, nullity), lstsq with a vector right-hand side is min-norm. */
Test(cli, nullspace_and_lstsq_vectors)
{
    enum { B = 2, M = 4, N = 6 };
    double A[B * M * N], y[B * M];
    tu_rng r = tu_seed(9);
    for (int b = 0; b < B; b++) { /* rank 3: the last row repeats the first */
        tu_fill_normal(&r, A + b * M * N, (M - 1) * N);
        memcpy(A + b * M * N + (M - 1) * N, A + b * M * N, N * sizeof(double));
    }
    tu_fill_normal(&r, y, B * M);
    for (int b = 0; b < B; b++) y[b * M + M - 1] = y[b * M]; /* consistent system */
    wr("A.npy", SG_F64, 3, (int64_t[]){B, M, N}, A);
    wr("y.npy", SG_F64, 2, (int64_t[]){B, M}, y);
    cr_assert_eq(run("nullspace A.npy -o n_"), 0, "%s", out);
    cr_expect(strstr(out, "nullity: 3 3") != NULL, "%s", out);
    double *Nb = rd("n_N.npy", SG_F64, 3, (int64_t[]){B, N, 3});
    cr_assert_eq(run("lstsq A.npy y.npy -o l_"), 0, "%s", out);
    cr_expect(strstr(out, "rank: 3 3") != NULL, "%s", out);
    double *x = rd("l_X.npy", SG_F64, 2, (int64_t[]){B, N});
    for (int b = 0; b < B; b++) {
        const double *a = A + b * M * N, *nb = Nb + b * N * 3, *xb = x + b * N;
        for (int i = 0; i < M; i++) {
            double ax = 0;
            for (int j = 0; j < N; j++) ax += a[i * N + j] * xb[j];
            cr_expect(fabs(ax - y[b * M + i]) < 1e-12, "A x = y row %d of %d", i, b);
        }
        for (int c = 0; c < 3; c++) {
            double dot = 0, nn = 0;
            for (int j = 0; j < N; j++) dot += nb[j * 3 + c] * xb[j], nn += nb[j * 3 + c] * nb[j * 3 + c];
            cr_expect(fabs(dot) < 1e-12, "x not orthogonal to N column %d of %d", c, b);
            cr_expect(fabs(nn - 1) < 1e-12);
            for (int i = 0; i < M; i++) {
                double an = 0;
                for (int j = 0; j < N; j++) an += a[i * N + j] * nb[j * 3 + c];
                cr_expect(fabs(an) < 1e-12, "A N (%d,%d) of %d", i, c, b);
            }
        }
    }
    free(Nb);
    free(x);
    /* the projections onto the nullspace and the row space add up to the input */
    double X[B * N * 2];
    tu_fill_normal(&r, X, B * N * 2);
    wr("X.npy", SG_F64, 3, (int64_t[]){B, N, 2}, X);
    cr_assert_eq(run("project A.npy X.npy --null -o pn.npy"), 0, "%s", out);
    cr_assert_eq(run("project A.npy X.npy --row -o pr.npy"), 0, "%s", out);
    double *pn = rd("pn.npy", SG_F64, 3, (int64_t[]){B, N, 2}), *pr = rd("pr.npy", SG_F64, 3, (int64_t[]){B, N, 2});
    for (int i = 0; i < B * N * 2; i++) cr_expect(fabs(pn[i] + pr[i] - X[i]) < 1e-12, "P_null + P_row != I at %d", i);
    /* the same two projections from the nullspace basis written above, without an SVD */
    cr_assert_eq(run("project-basis n_N.npy X.npy -o bn.npy"), 0, "%s", out);
    cr_assert_eq(run("project-basis n_N.npy X.npy --complement -o br.npy"), 0, "%s", out);
    double *bn = rd("bn.npy", SG_F64, 3, (int64_t[]){B, N, 2}), *br = rd("br.npy", SG_F64, 3, (int64_t[]){B, N, 2});
    for (int i = 0; i < B * N * 2; i++) {
        cr_expect(fabs(bn[i] - pn[i]) < 1e-12, "project-basis vs project --null at %d: %g vs %g", i, bn[i], pn[i]);
        cr_expect(fabs(br[i] - pr[i]) < 1e-12, "project-basis --complement vs project --row at %d", i);
    }
    cr_expect_neq(run("project-basis n_N.npy y.npy"), 0, "Q (.., 6, 3) and y (.., 4): rows differ");
    cr_expect(strstr(out, "X: has 4 rows, Q has 6") != NULL, "%s", out);
    free(bn);
    free(br);
    free(pn);
    free(pr);
}

/* svd-backward through files (gU, gVh in numpy layout) against central differences of the gauge-invariant
   loss L(A) = Σ G ∘ (U Vh), evaluated with the library's SVD. */
/* --atol / --rtol FILE.npy: one value per matrix; matrix b gets the rank its own cutoff gives, in rank, nullspace
   and lstsq (σ_i = 2^-i, cutoffs a factor 4/3 or more from a σ), the other option's number applies to every
   matrix; a file of the wrong shape, a bad value (named by matrix) and a missing file fail cleanly. */
Test(cli, per_matrix_tolerance_files)
{
    enum { B = 3, M = 5, N = 4 };
    double A[B * M * N], s[N], y[B * M];
    tu_rng r = tu_seed(31);
    for (int i = 0; i < N; i++) s[i] = ldexp(1, -i);
    for (int b = 0; b < B; b++) {
        double Ab[M * N];
        tu_mat_with_singular_values(&r, M, N, s, Ab); /* column-major; the file is C order */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) A[b * M * N + i * N + j] = Ab[i + j * M];
    }
    tu_fill_normal(&r, y, B * M);
    wr("A.npy", SG_F64, 3, (int64_t[]){B, M, N}, A);
    wr("y.npy", SG_F64, 2, (int64_t[]){B, M}, y);
    wr("at.npy", SG_F32, 1, (int64_t[]){B}, (double[]){0.0, 0.3, 0.6});
    cr_assert_eq(run("rank A.npy --atol at.npy"), 0, "%s", out);
    cr_expect(strstr(out, "rank: 4 2 1") != NULL, "%s", out);
    cr_assert_eq(run("nullspace A.npy --atol at.npy -o n_"), 0, "%s", out);
    cr_expect(strstr(out, "nullity: 0 2 3") != NULL, "%s", out);
    cr_assert_eq(run("lstsq A.npy y.npy --atol at.npy -o l_"), 0, "%s", out);
    cr_expect(strstr(out, "rank: 4 2 1") != NULL, "%s", out);
    wr("rt.npy", SG_F64, 1, (int64_t[]){B}, (double[]){-1.0, 0.2, 0.7});
    cr_assert_eq(run("rank A.npy --atol 0.4 --rtol rt.npy"), 0, "%s", out); /* max(0.4, rtol): 0.4, 0.4, 0.7 */
    cr_expect(strstr(out, "rank: 2 2 1") != NULL, "%s", out);
    wr("bad.npy", SG_F64, 1, (int64_t[]){2}, (double[]){0.1, 0.2});
    cr_expect_eq(run("rank A.npy --atol bad.npy"), 1);
    cr_expect(strstr(out, "shape (2,), but the batch shape of the first input is (3,)") != NULL, "%s", out);
    wr("neg.npy", SG_F64, 1, (int64_t[]){B}, (double[]){0.1, 0.2, -1.0});
    cr_expect_eq(run("rank A.npy --atol neg.npy"), 1);
    cr_expect(strstr(out, "matrix 2") != NULL, "%s", out);
    cr_expect_eq(run("rank A.npy --atol missing.npy"), 1);
    cr_expect(strstr(out, "missing.npy") != NULL, "%s", out);
}

Test(cli, svd_backward_matches_finite_differences)
{
    enum { M = 3, N = 5, K = 3 };
    double A[M * N], G[M * N];
    tu_rng r = tu_seed(21);
    tu_fill_normal(&r, A, M * N);
    tu_fill_normal(&r, G, M * N);
    wr("A.npy", SG_F64, 2, (int64_t[]){M, N}, A);
    cr_assert_eq(run("svd A.npy -o s_"), 0, "%s", out);
    double *U = rd("s_U.npy", SG_F64, 2, (int64_t[]){M, K}), *Vh = rd("s_Vh.npy", SG_F64, 2, (int64_t[]){K, N});
    double gU[M * K] = {0}, gVh[K * N] = {0}; /* dL/dU = G Vhᵀ, dL/dVh = Uᵀ G (C order) */
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++)
            for (int j = 0; j < N; j++) gU[i * K + k] += G[i * N + j] * Vh[k * N + j];
    for (int k = 0; k < K; k++)
        for (int j = 0; j < N; j++)
            for (int i = 0; i < M; i++) gVh[k * N + j] += U[i * K + k] * G[i * N + j];
    wr("gU.npy", SG_F64, 2, (int64_t[]){M, K}, gU);
    wr("gVh.npy", SG_F64, 2, (int64_t[]){K, N}, gVh);
    cr_assert_eq(run("svd-backward s_U.npy s_S.npy s_Vh.npy gU.npy - gVh.npy -o g.npy"), 0, "%s", out);
    double *gA = rd("g.npy", SG_F64, 2, (int64_t[]){M, N});

    sg_ctx *ctx;
    cr_assert_eq(sg_create(&ctx, SG_BACKEND_CPU), SG_OK);
    double Ac[M * N], S[K], Uc[M * K], Vc[N * K];
    sg_mat am = sg_mat_dense(Ac, SG_F64, 1, M, N), sm = sg_mat_dense(S, SG_F64, 1, K, 1),
           um = sg_mat_dense(Uc, SG_F64, 1, M, K), vm = sg_mat_dense(Vc, SG_F64, 1, N, K);
    const double h = 1e-6;
    for (int p = 0; p < M; p++)
        for (int q = 0; q < N; q++) {
            double L[2];
            for (int sgn = 0; sgn < 2; sgn++) {
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) Ac[i + j * M] = A[i * N + j] + (i == p && j == q ? (sgn ? -h : h) : 0);
                cr_assert_eq(sg_svd(ctx, &am, 0, &sm, &um, &vm), SG_OK, "%s", sg_last_error(ctx));
                double l = 0; /* (U Vᵀ)(i,j) column-major */
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        double uv = 0;
                        for (int k = 0; k < K; k++) uv += Uc[i + k * M] * Vc[j + k * N];
                        l += G[i * N + j] * uv;
                    }
                L[sgn] = l;
            }
            double fd = (L[0] - L[1]) / (2 * h);
            cr_expect(fabs(fd - gA[p * N + q]) < 1e-6 * fmax(1, fabs(fd)), "gA(%d,%d) %g vs FD %g", p, q, gA[p * N + q], fd);
        }
    sg_destroy(ctx);
    free(U);
    free(Vh);
    free(gA);
}

/* eigh-backward with gW only is V diag(gW) Vᵀ; reg writes a batch-shaped loss. */
Test(cli, eigh_backward_and_reg_shapes)
{
    enum { B = 3, N = 4 };
    double A[B * N * N], gW[B * N];
    tu_rng r = tu_seed(3);
    for (int b = 0; b < B; b++) {
        double w[N] = {0.5, 1, 2, 4};
        tu_sym_with_spectrum(&r, N, w, A + b * N * N);
    }
    tu_fill_normal(&r, gW, B * N);
    wr("A.npy", SG_F64, 3, (int64_t[]){B, N, N}, A);
    wr("gW.npy", SG_F64, 2, (int64_t[]){B, N}, gW);
    cr_assert_eq(run("eigh A.npy"), 0, "%s", out); /* default names: A_W.npy, A_V.npy */
    cr_assert_eq(run("eigh-backward A_W.npy A_V.npy gW.npy -o gA.npy --mode mask"), 0, "%s", out);
    double *V = rd("A_V.npy", SG_F64, 3, (int64_t[]){B, N, N}), *gA = rd("gA.npy", SG_F64, 3, (int64_t[]){B, N, N});
    for (int b = 0; b < B; b++)
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                double e = 0;
                for (int k = 0; k < N; k++) e += V[(b * N + i) * N + k] * gW[b * N + k] * V[(b * N + j) * N + k];
                cr_expect(fabs(e - gA[(b * N + i) * N + j]) < 1e-12, "gA (%d,%d) of %d", i, j, b);
            }
    cr_assert_eq(run("reg A.npy --kind logdet -o r_"), 0, "%s", out);
    double *loss = rd("r_loss.npy", SG_F64, 1, (int64_t[]){B});
    for (int b = 0; b < B; b++) cr_expect(fabs(loss[b] - log(0.5 * 1 * 2 * 4)) < 1e-12, "logdet %g", loss[b]);
    free(V);
    free(gA);
    free(loss);
}

/* ---- gradient ops run end to end ------------------------------------------------------------------- */
/* C-order helpers for the known answers below (row-major n×n). */
static void mm(int n, const double *a, const double *b, double *c)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < n; k++) s += a[i * n + k] * b[k * n + j];
            c[i * n + j] = s;
        }
}

static double maxdiff(const double *a, const double *b, int len)
{
    double d = 0;
    for (int i = 0; i < len; i++) d = fmax(d, fabs(a[i] - b[i]));
    return d;
}

/* matfunc-backward, both input forms, against closed forms: d<G, A²>/dA = S A + A S (S = sym(G)) and
   d tr exp(A)/dA = exp(A) (series); and against the library for log with a general gF. */
Test(cli, matfunc_backward_known_answers)
{
    enum { B = 2, N = 4 };
    double A[B * N * N], G[B * N * N], I[B * N * N] = {0};
    tu_rng r = tu_seed(17);
    for (int b = 0; b < B; b++) {
        double w[N] = {0.3, 0.8 + 0.1 * b, 1.5, 2.2};
        tu_sym_with_spectrum(&r, N, w, A + b * N * N);
        for (int i = 0; i < N; i++) I[b * N * N + i * N + i] = 1;
    }
    tu_fill_normal(&r, G, B * N * N); /* not symmetric: the backward uses sym(G) */
    int64_t sh[3] = {B, N, N};
    wr("A.npy", SG_F64, 3, sh, A);
    wr("G.npy", SG_F64, 3, sh, G);
    wr("I.npy", SG_F64, 3, sh, I);
    cr_assert_eq(run("matfunc-backward A.npy G.npy --fn pow --p 2 -o g2.npy --backend cpu"), 0, "%s", out);
    double *g2 = rd("g2.npy", SG_F64, 3, sh);
    cr_assert_eq(run("eigh A.npy -o e_ --backend cpu"), 0, "%s", out);
    cr_assert_eq(run("matfunc-backward e_W.npy e_V.npy I.npy --fn exp -o ge.npy --backend cpu"), 0, "%s", out);
    double *ge = rd("ge.npy", SG_F64, 3, sh);
    cr_assert_eq(run("matfunc-backward e_W.npy e_V.npy G.npy --fn log -o gl.npy --backend cpu"), 0, "%s", out);
    double *gl = rd("gl.npy", SG_F64, 3, sh);
    sg_ctx *ctx;
    cr_assert_eq(sg_create(&ctx, SG_BACKEND_CPU), SG_OK);
    for (int b = 0; b < B; b++) {
        const double *a = A + b * N * N, *g = G + b * N * N;
        double S[N * N], SA[N * N], AS[N * N], want[N * N], E[N * N], T[N * N], Tn[N * N];
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) S[i * N + j] = 0.5 * (g[i * N + j] + g[j * N + i]);
        mm(N, S, a, SA), mm(N, a, S, AS);
        for (int i = 0; i < N * N; i++) want[i] = SA[i] + AS[i];
        double d = maxdiff(g2 + b * N * N, want, N * N);
        cr_expect_lt(d, 1e-12, "pow 2, matrix %d: max |gA − (SA + AS)| = %g", b, d);
        /* exp(A) = Σ A^k/k! (||A|| ≤ 2.2: 60 terms are exact to rounding) */
        for (int i = 0; i < N * N; i++) E[i] = T[i] = (i % (N + 1) == 0);
        for (int k = 1; k < 60; k++) {
            mm(N, T, a, Tn);
            for (int i = 0; i < N * N; i++) T[i] = Tn[i] / k, E[i] += T[i];
        }
        d = maxdiff(ge + b * N * N, E, N * N);
        cr_expect_lt(d, 1e-11, "exp, gF = I, matrix %d: max |gA − exp(A)| = %g", b, d);
        /* log with a general gF: the library on the same A (column-major = C-order for symmetric A) */
        double Wl[N], Vl[N * N], gAl[N * N], gc[N * N];
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) gc[i + j * N] = g[i * N + j];
        sg_mat am = sg_mat_dense((double *)a, SG_F64, 1, N, N), wm = sg_mat_dense(Wl, SG_F64, 1, N, 1),
               vm = sg_mat_dense(Vl, SG_F64, 1, N, N), gm = sg_mat_dense(gc, SG_F64, 1, N, N),
               om = sg_mat_dense(gAl, SG_F64, 1, N, N);
        sg_fn lg = {SG_FN_LOG, 0, NULL, NULL, NULL};
        cr_assert_eq(sg_eigh(ctx, &am, &wm, &vm), SG_OK);
        cr_assert_eq(sg_matfunc_backward(ctx, &wm, &vm, &lg, &gm, &om), SG_OK, "%s", sg_last_error(ctx));
        d = maxdiff(gl + b * N * N, gAl, N * N); /* gA is symmetric: layouts agree */
        cr_expect_lt(d, 1e-12, "log, matrix %d: CLI vs library %g", b, d);
    }
    sg_destroy(ctx);
    free(g2), free(ge), free(gl);
}

/* matfunc --eig writes W, V next to F: exactly eigh's output, F = V f(W) Vᵀ, and `matfunc-backward W V gF`
   on them equals the form that recomputes eigh from A. -o with one file name is refused (three outputs). */
Test(cli, matfunc_eig_writes_the_decomposition_used)
{
    enum { B = 2, N = 4 };
    double A[B * N * N], G[B * N * N];
    tu_rng r = tu_seed(23);
    for (int b = 0; b < B; b++) {
        double w[N] = {0.2, 0.7 + 0.1 * b, 1.4, 3.0};
        tu_sym_with_spectrum(&r, N, w, A + b * N * N);
    }
    tu_fill_normal(&r, G, B * N * N);
    int64_t sh[3] = {B, N, N}, shw[2] = {B, N};
    wr("A.npy", SG_F64, 3, sh, A);
    wr("G.npy", SG_F64, 3, sh, G);
    cr_assert_eq(run("matfunc A.npy --fn sqrt --eig -o m_ --backend cpu"), 0, "%s", out);
    cr_assert_eq(run("eigh A.npy -o e_ --backend cpu"), 0, "%s", out);
    double *F = rd("m_F.npy", SG_F64, 3, sh), *W = rd("m_W.npy", SG_F64, 2, shw), *V = rd("m_V.npy", SG_F64, 3, sh),
           *We = rd("e_W.npy", SG_F64, 2, shw), *Ve = rd("e_V.npy", SG_F64, 3, sh);
    cr_expect_eq(maxdiff(W, We, B * N), 0.0, "W differs from eigh's");
    cr_expect_eq(maxdiff(V, Ve, B * N * N), 0.0, "V differs from eigh's");
    for (int b = 0; b < B; b++) { /* F (C order) = V diag(√w) Vᵀ, V C order: V[i*N + k] = v_ik */
        double want[N * N];
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                double acc = 0;
                for (int k = 0; k < N; k++) acc += V[b * N * N + i * N + k] * sqrt(W[b * N + k]) * V[b * N * N + j * N + k];
                want[i * N + j] = acc;
            }
        double d = maxdiff(F + b * N * N, want, N * N);
        cr_expect_lt(d, 1e-12, "matrix %d: max |F − V √W Vᵀ| = %g", b, d);
    }
    cr_assert_eq(run("matfunc-backward m_W.npy m_V.npy G.npy --fn sqrt -o g1.npy --backend cpu"), 0, "%s", out);
    cr_assert_eq(run("matfunc-backward A.npy G.npy --fn sqrt -o g2.npy --backend cpu"), 0, "%s", out);
    double *g1 = rd("g1.npy", SG_F64, 3, sh), *g2 = rd("g2.npy", SG_F64, 3, sh);
    cr_expect_eq(maxdiff(g1, g2, B * N * N), 0.0, "backward from --eig's W, V differs from the one from A");
    cr_expect_neq(run("matfunc A.npy --fn sqrt --eig -o one.npy --backend cpu"), 0, "%s", out);
    cr_expect(strstr(out, "writes 3 outputs") != NULL, "%s", out);
    char p1[512];
    path(p1, "one.npy");
    cr_expect_neq(access(p1, F_OK), 0, "one.npy written although -o names one file for three outputs");
    free(F), free(W), free(V), free(We), free(Ve), free(g1), free(g2);
}

/* An option a command does not take is a usage error naming it, not silently ignored (--full on eigh used to
   run eigh). Each command's usage line is the list; "--p" must not match "--param". */
Test(cli, option_that_does_not_apply_is_a_usage_error)
{
    double A[9] = {2, 1, 0, 1, 2, 0, 0, 0, 3};
    wr("A.npy", SG_F64, 2, (int64_t[]){3, 3}, A);
    const char *bad[][2] = {{"eigh A.npy --full -o x_", "--full"},    {"rank A.npy --eig -o x_", "--eig"},
                            {"lstsq A.npy A.npy --row -o x_", "--row"}, {"matfunc A.npy --fn exp --mode mask -o x_", "--mode"},
                            {"svd A.npy --p 2 -o x_", "--p"},          {"demo --complement", "--complement"},
                            {"eigh-backward A.npy A.npy --p=1 -o x_", "--p"}};
    for (size_t c = 0; c < sizeof bad / sizeof *bad; c++) {
        cr_expect_eq(run("%s", bad[c][0]), 2, "%s: %s", bad[c][0], out);
        char want[64];
        snprintf(want, sizeof want, "%s does not apply to", bad[c][1]);
        cr_expect(strstr(out, want) != NULL, "%s: %s", bad[c][0], out);
    }
    char p[512];
    path(p, "x_W.npy");
    cr_expect_neq(access(p, F_OK), 0, "nothing may be written on a usage error");
    const char *ok[] = {"svd A.npy --full -o s_ --backend cpu --threads 1", "nullspace A.npy --atol=0 --rtol 1e-3 -o n_",
                        "matfunc A.npy --fn exp --eig -o m_ --dtype f32"};
    for (size_t c = 0; c < sizeof ok / sizeof *ok; c++) cr_expect_eq(run("%s", ok[c]), 0, "%s: %s", ok[c], out);
}

/* `--fn pow` has no default exponent: without --p it is a usage error (it used to run with p = 0). */
Test(cli, pow_requires_p)
{
    double A[9] = {2, 1, 0, 1, 2, 0, 0, 0, 3}, A2[9];
    wr("A.npy", SG_F64, 2, (int64_t[]){3, 3}, A);
    const char *cmds[] = {"matfunc A.npy --fn pow", "matfunc-backward A.npy A.npy --fn pow",
                          "reg A.npy --kind eigsum --fn pow", "matfunc A.npy --fn=pow -o F.npy"};
    for (int c = 0; c < 4; c++) {
        cr_expect_eq(run("%s", cmds[c]), 2, "%s: %s", cmds[c], out);
        cr_expect(strstr(out, "--fn pow needs its exponent: --p P") != NULL, "%s: %s", cmds[c], out);
    }
    char p[512];
    path(p, "F.npy");
    cr_expect_neq(access(p, F_OK), 0, "nothing may be written on a usage error");
    /* with --p (before or after --fn): F = A² */
    mm(3, A, A, A2);
    const char *ok[] = {"matfunc A.npy --fn pow --p 2 -o F.npy", "matfunc A.npy --p=2 --fn pow -o F.npy"};
    for (int c = 0; c < 2; c++) {
        cr_assert_eq(run("%s", ok[c]), 0, "%s: %s", ok[c], out);
        double *F = rd("F.npy", SG_F64, 2, (int64_t[]){3, 3});
        cr_expect_lt(maxdiff(F, A2, 9), 1e-12, "%s: F != A²", ok[c]);
        free(F);
    }
    cr_expect_eq(run("matfunc A.npy --fn sqrt -o S.npy"), 0, "other functions need no --p: %s", out);
}

/* eigh-backward with a gV input and a non-default mode (and parameter), against the library on the same
   W, V; the parameter must reach the library (lorentz 0.5 is visibly biased). */
Test(cli, eigh_backward_gv_nondefault_mode)
{
    enum { B = 2, N = 4 };
    double A[B * N * N], gW[B * N], gV[B * N * N];
    tu_rng r = tu_seed(19);
    for (int b = 0; b < B; b++) {
        double w[N] = {-1.0, 0.5 + 0.2 * b, 1.0 + 0.2 * b, 2.5};
        tu_sym_with_spectrum(&r, N, w, A + b * N * N);
    }
    tu_fill_normal(&r, gW, B * N);
    tu_fill_normal(&r, gV, B * N * N);
    int64_t sh[3] = {B, N, N};
    wr("A.npy", SG_F64, 3, sh, A);
    wr("gW.npy", SG_F64, 2, (int64_t[]){B, N}, gW);
    wr("gV.npy", SG_F64, 3, sh, gV);
    cr_assert_eq(run("eigh A.npy -o e_ --backend cpu"), 0, "%s", out);
    cr_assert_eq(run("eigh-backward e_W.npy e_V.npy gW.npy gV.npy --mode lorentz --param 0.5 -o gl.npy --backend cpu"),
                 0, "%s", out);
    cr_assert_eq(run("eigh-backward e_W.npy e_V.npy - gV.npy --mode=mask -o gm.npy --backend cpu"), 0, "%s", out);
    cr_assert_eq(run("eigh-backward e_W.npy e_V.npy gW.npy gV.npy -o gx.npy --backend cpu"), 0, "%s", out);
    double *W = rd("e_W.npy", SG_F64, 2, (int64_t[]){B, N}), *V = rd("e_V.npy", SG_F64, 3, sh),
           *gl = rd("gl.npy", SG_F64, 3, sh), *gm = rd("gm.npy", SG_F64, 3, sh), *gx = rd("gx.npy", SG_F64, 3, sh);
    sg_ctx *ctx;
    cr_assert_eq(sg_create(&ctx, SG_BACKEND_CPU), SG_OK);
    for (int b = 0; b < B; b++) {
        double Vc[N * N], gVc[N * N], want[3][N * N];
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) Vc[i + j * N] = V[b * N * N + i * N + j], gVc[i + j * N] = gV[b * N * N + i * N + j];
        sg_mat wm = sg_mat_dense(W + b * N, SG_F64, 1, N, 1), vm = sg_mat_dense(Vc, SG_F64, 1, N, N),
               gwm = sg_mat_dense(gW + b * N, SG_F64, 1, N, 1), gvm = sg_mat_dense(gVc, SG_F64, 1, N, N);
        struct { const sg_mat *gw; sg_degen m; double prm; } c[3] = {
            {&gwm, SG_DEGEN_LORENTZ, 0.5}, {NULL, SG_DEGEN_MASK, 0}, {&gwm, SG_DEGEN_EXACT, 0}};
        for (int k = 0; k < 3; k++) {
            sg_mat om = sg_mat_dense(want[k], SG_F64, 1, N, N);
            cr_assert_eq(sg_eigh_backward(ctx, &wm, &vm, c[k].gw, &gvm, c[k].m, c[k].prm, &om), SG_OK);
        }
        const double *got[3] = {gl + b * N * N, gm + b * N * N, gx + b * N * N}; /* symmetric: layouts agree */
        for (int k = 0; k < 3; k++)
            cr_expect_lt(maxdiff(got[k], want[k], N * N), 1e-12, "case %d matrix %d: CLI vs library %g", k, b,
                         maxdiff(got[k], want[k], N * N));
        cr_expect_gt(maxdiff(gl + b * N * N, gx + b * N * N, N * N), 1e-2, "--param 0.5 must reach the library");
    }
    sg_destroy(ctx);
    free(W), free(V), free(gl), free(gm), free(gx);
}

/* reg with every kind: losses and gradients against closed forms (C-order on disk). */
Test(cli, reg_every_kind_known_answers)
{
    enum { B = 2, M = 5, K = 3, N = 4 };
    double Ar[B * M * K], As[B * N * N];
    const double sv[K] = {2, 1, 0.5}, ev[N] = {0.5, 1, 2, 4};
    tu_rng r = tu_seed(23);
    for (int b = 0; b < B; b++) {
        double cm[M * K];
        tu_mat_with_singular_values(&r, M, K, sv, cm); /* column-major → C order */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < K; j++) Ar[b * M * K + i * K + j] = cm[i + j * M];
        tu_sym_with_spectrum(&r, N, ev, As + b * N * N);
    }
    int64_t shr[3] = {B, M, K}, shs[3] = {B, N, N};
    wr("R.npy", SG_F64, 3, shr, Ar);
    wr("S.npy", SG_F64, 3, shs, As);
    const char *kinds[] = {"spectral", "nuclear", "ortho", "logdet", "eigsum --fn exp", "eigsum --fn pow --p 2"};
    for (int c = 0; c < 6; c++) {
        int sym = c >= 3, m = sym ? N : M, n = sym ? N : K;
        cr_assert_eq(run("reg %s --kind %s -o r%d_ --backend cpu", sym ? "S.npy" : "R.npy", kinds[c], c), 0, "%s: %s",
                     kinds[c], out);
        char ln[32], gn[32];
        snprintf(ln, sizeof ln, "r%d_loss.npy", c), snprintf(gn, sizeof gn, "r%d_gA.npy", c);
        double *loss = rd(ln, SG_F64, 1, (int64_t[]){B}), *gA = rd(gn, SG_F64, 3, sym ? shs : shr);
        for (int b = 0; b < B; b++) {
            const double *a = (sym ? As : Ar) + b * m * n, *g = gA + b * m * n;
            double want = 0, ga = 0, gg = 0, d = 0;
            for (int i = 0; i < m * n; i++) ga += g[i] * a[i], gg += g[i] * g[i];
            if (c == 0) { /* σ1², 2σ1 u1 v1ᵀ */
                want = sv[0] * sv[0];
                d = fmax(fabs(sqrt(gg) - 2 * sv[0]), fabs(ga - 2 * sv[0] * sv[0]));
            } else if (c == 1) { /* Σσ, U Vᵀ: orthonormal columns and <gA, A> = Σσ */
                want = sv[0] + sv[1] + sv[2];
                d = fabs(ga - want);
                for (int p = 0; p < K; p++)
                    for (int q = 0; q < K; q++) {
                        double x = 0;
                        for (int i = 0; i < M; i++) x += g[i * K + p] * g[i * K + q];
                        d = fmax(d, fabs(x - (p == q)));
                    }
            } else if (c == 2) { /* ||AᵀA − I||², 4A(AᵀA − I) */
                double C[K * K];
                for (int p = 0; p < K; p++)
                    for (int q = 0; q < K; q++) {
                        double x = 0;
                        for (int i = 0; i < M; i++) x += a[i * K + p] * a[i * K + q];
                        C[p * K + q] = x - (p == q);
                        want += C[p * K + q] * C[p * K + q];
                    }
                for (int i = 0; i < M; i++)
                    for (int q = 0; q < K; q++) {
                        double x = 0;
                        for (int p = 0; p < K; p++) x += 4 * a[i * K + p] * C[p * K + q];
                        d = fmax(d, fabs(g[i * K + q] - x));
                    }
            } else if (c == 3) { /* log det, A⁻¹: gA A = I */
                want = log(0.5 * 1 * 2 * 4);
                double P[N * N];
                mm(N, g, a, P);
                for (int i = 0; i < N * N; i++) d = fmax(d, fabs(P[i] - (i % (N + 1) == 0)));
            } else if (c == 4) { /* Σ e^λ, exp(A): commutes with A, trace Σ e^λ, <gA, A> = Σ λ e^λ */
                double P[N * N], Q[N * N], tr = 0, lel = 0;
                for (int i = 0; i < N; i++) want += exp(ev[i]), lel += ev[i] * exp(ev[i]), tr += g[i * N + i];
                mm(N, g, a, P), mm(N, a, g, Q);
                d = fmax(fmax(maxdiff(P, Q, N * N), fabs(tr - want)), fabs(ga - lel)) / want;
            } else { /* Σλ² = ||A||², 2A */
                for (int i = 0; i < N; i++) want += ev[i] * ev[i];
                for (int i = 0; i < N * N; i++) d = fmax(d, fabs(g[i] - 2 * a[i]));
            }
            cr_expect_lt(fabs(loss[b] - want), 1e-12 * (1 + fabs(want)), "%s matrix %d: loss %.17g vs %.17g", kinds[c], b,
                         loss[b], want);
            cr_expect_lt(d, 1e-12, "%s matrix %d: gradient off by %g", kinds[c], b, d);
        }
        free(loss), free(gA);
    }
}

/* ---- errors ------------------------------------------------------------------------------------------ */
Test(cli, bad_files_and_arguments_fail_cleanly)
{
    double A[9] = {2, 1, 0, 1, 2, 0, 0, 0, 3};
    wr("A.npy", SG_F64, 2, (int64_t[]){3, 3}, A);
    char p[512];
    path(p, "A.npy");
    FILE *f = fopen(p, "rb");
    unsigned char buf[512];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    path(p, "trunc.npy");
    f = fopen(p, "wb");
    fwrite(buf, 1, n - 5, f); /* payload cut short */
    fclose(f);

    int rc = run("eigh trunc.npy");
    cr_expect_eq(rc, 1, "%s", out);
    cr_expect(strstr(out, "specgrad: eigh: trunc.npy: npy: shape and dtype need 72 data bytes, file has 67") != NULL,
              "%s", out);
    cr_expect_eq(run("eigh missing.npy"), 1);
    cr_expect(strstr(out, "cannot open") != NULL, "%s", out);
    path(p, "i.npy");
    f = fopen(p, "wb");
    const char *h = "{'descr': '<i8', 'fortran_order': False, 'shape': (1, 1), }\n";
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)strlen(h), 0};
    fwrite(pre, 1, 10, f);
    fwrite(h, 1, strlen(h), f);
    fwrite("\1\0\0\0\0\0\0\0", 1, 8, f);
    fclose(f);
    cr_expect_eq(run("eigh i.npy"), 1);
    cr_expect(strstr(out, "dtype '<i8' not supported (float32/float64 only)") != NULL, "%s", out);

    double R[6] = {1, 2, 3, 4, 5, 6};
    wr("R.npy", SG_F64, 2, (int64_t[]){2, 3}, R);
    cr_expect_eq(run("eigh R.npy"), 1);
    cr_expect(strstr(out, "expected 2×2") != NULL, "%s", out);
    wr("v.npy", SG_F64, 1, (int64_t[]){3}, R);
    cr_expect_eq(run("svd v.npy"), 1);
    cr_expect(strstr(out, "needs at least 2") != NULL, "%s", out);
    wr("B.npy", SG_F64, 3, (int64_t[]){2, 1, 3}, R);
    wr("c.npy", SG_F64, 3, (int64_t[]){3, 1, 1}, R);
    cr_expect_eq(run("lstsq B.npy c.npy"), 1);
    cr_expect(strstr(out, "batch shape") != NULL, "%s", out);
    double nanA[4] = {1, NAN, NAN, 1};
    wr("nan.npy", SG_F64, 3, (int64_t[]){1, 2, 2}, nanA);
    cr_expect_eq(run("eigh nan.npy"), 1);
    cr_expect(strstr(out, "NaN") != NULL && strstr(out, "(matrix 0)") != NULL, "%s", out);

    cr_expect_eq(run("eigh A.npy --bogus"), 2);
    cr_expect(strstr(out, "unknown option '--bogus'") != NULL, "%s", out);
    cr_expect_eq(run("eigh A.npy --atol nope"), 2);
    cr_expect_eq(run("eigh A.npy --threads 1e20"), 2, "an int cast of 1e20 is undefined behaviour: refuse");
    cr_expect(strstr(out, "--threads must be a whole number") != NULL, "%s", out);
    cr_expect_eq(run("eigh A.npy --threads 0.5"), 2);
    cr_expect_eq(run("eigh A.npy --threads 2 -o t_"), 0, "%s", out);
    cr_expect_eq(run("eigh"), 2);
    cr_expect_eq(run("frobnicate"), 2);
    cr_expect_eq(run("eigh A.npy -o one.npy"), 1, "two outputs into one file must be refused");
    cr_expect(strstr(out, "give a prefix") != NULL, "%s", out);
    cr_expect_eq(run("matfunc A.npy"), 1);
    cr_expect(strstr(out, "--fn") != NULL, "%s", out);

    char why[256];
    if (sg_cuda_devices(why, sizeof why) == 0) {
        cr_expect_eq(run("eigh A.npy --backend cuda"), 1);
        cr_expect(strstr(out, why) != NULL, "no reason given: %s", out);
    } else {
        cr_expect_eq(run("eigh A.npy --backend cuda -o c_"), 0, "%s", out);
    }
}

Test(cli, help_and_info)
{
    cr_expect_eq(run("--help"), 0);
    cr_expect(strstr(out, "specgrad demo") != NULL, "%s", out);
    const char *ops[] = {"eigh", "svd", "rank", "nullspace", "project", "project-basis", "lstsq", "eigh-backward", "svd-backward",
                         "matfunc", "matfunc-backward", "reg", "demo"};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        cr_expect_eq(run("%s --help", ops[i]), 0, "%s", ops[i]);
        char want[64];
        snprintf(want, sizeof want, "usage: specgrad %s", ops[i]);
        cr_expect(strstr(out, want) != NULL, "%s", out);
    }
    cr_expect_eq(run("info"), 0, "%s", out);
    cr_expect(strstr(out, "backend auto") != NULL, "%s", out);
    char ver[64];
    snprintf(ver, sizeof ver, "specgrad %d.%d\n", SG_VERSION_MAJOR, SG_VERSION_MINOR);
    cr_expect_eq(run("--version"), 0, "%s", out);
    cr_expect_str_eq(out, ver);
    cr_expect_eq(sg_version(), SG_VERSION, "the library loaded is not the header's version");
}

/* Varying nullity over the batch: N is (..., n, n) with each basis in the leading columns, zeros after. */
Test(cli, nullspace_varying_nullity_is_padded)
{
    enum { M = 2, N = 4 };
    /* matrix 0 has rank 2 (nullity 2), matrix 1 rank 1 (second row is twice the first: nullity 3) */
    double A[2 * M * N] = {1, 2, 0, 1, 0, 1, 3, 1, 1, -1, 2, 0, 2, -2, 4, 0};
    wr("A.npy", SG_F64, 3, (int64_t[]){2, M, N}, A);
    cr_assert_eq(run("nullspace A.npy -o v_"), 0, "%s", out);
    cr_expect(strstr(out, "nullity: 2 3") != NULL, "%s", out);
    cr_expect(strstr(out, "nullity varies") != NULL, "%s", out);
    double *Nb = rd("v_N.npy", SG_F64, 3, (int64_t[]){2, N, N});
    const int nul[2] = {2, 3};
    for (int b = 0; b < 2; b++)
        for (int c = 0; c < N; c++) {
            double nn = 0;
            for (int j = 0; j < N; j++) nn += Nb[(b * N + j) * N + c] * Nb[(b * N + j) * N + c];
            cr_expect(fabs(nn - (c < nul[b])) < 1e-12, "column %d of %d: norm² %g", c, b, nn);
            for (int i = 0; c < nul[b] && i < M; i++) {
                double an = 0;
                for (int j = 0; j < N; j++) an += A[(b * M + i) * N + j] * Nb[(b * N + j) * N + c];
                cr_expect(fabs(an) < 1e-12, "A N (%d,%d) of %d", i, c, b);
            }
        }
    free(Nb);
}

/* The two message defects the reliability audit found (src/cli/io.c): a finite f64 beyond FLT_MAX read
   with --dtype f32 is an overflow, not "Inf in the input"; a NaN names its matrix once, not again as a
   suffix. */
Test(cli, messages_overflow_and_matrix_index)
{
    double A[8] = {1, 0, 0, 1, 2, 0, 0, 1e300}; /* batch 2 of 2×2; matrix 1, element (1,1) */
    wr("big.npy", SG_F64, 3, (int64_t[]){2, 2, 2}, A);
    cr_expect_eq(run("eigh big.npy --backend cpu --dtype f32"), 1, "%s", out);
    cr_expect(strstr(out, "overflows float32") && strstr(out, "1e+300") && strstr(out, "element (1,1) (matrix 1)"),
              "%s", out);
    cr_expect(!strstr(out, "Inf"), "a finite file reported as Inf: %s", out);
    cr_expect_eq(run("eigh big.npy --backend cpu"), 0, "float64 is fine: %s", out);
    A[7] = NAN;
    wr("nan.npy", SG_F64, 3, (int64_t[]){2, 2, 2}, A);
    cr_expect_eq(run("eigh nan.npy --backend cpu"), 1, "%s", out);
    cr_expect(strstr(out, "NaN") && strstr(out, "(matrix 1)"), "%s", out);
    const char *first = strstr(out, "matrix 1");
    cr_expect(first && !strstr(first + 1, "matrix 1"), "matrix index repeated: %s", out);
    /* a float32 matrix whose eigenvalues pass FLT_MAX: SG_ERR_DOMAIN, the op named once */
    double C[9];
    for (int i = 0; i < 9; i++) C[i] = 1.7e38;
    wr("huge.npy", SG_F32, 3, (int64_t[]){1, 3, 3}, C);
    cr_expect_eq(run("eigh huge.npy --backend cpu"), 1, "%s", out);
    cr_expect(strstr(out, "specgrad: eigh: the eigenvalues of matrix 0 overflow float32") && !strstr(out, "eigh: eigh"),
              "%s", out);
}

/* --progress: a 'done' line per library call on stderr (the redirected stream is not a terminal, so the
   periodic lines depend on time and are not asserted); none without the flag, none after a failure, and
   the option is not one of demo's. */
Test(cli, progress_lines)
{
    enum { B = 4, N = 3 };
    double A[B * N * N];
    tu_rng r = tu_seed(5);
    for (int b = 0; b < B; b++) tu_sym_with_spectrum(&r, N, (double[]){1, 2, 3}, A + b * N * N);
    wr("A.npy", SG_F64, 3, (int64_t[]){B, N, N}, A);
    cr_assert_eq(run("eigh A.npy --backend cpu"), 0, "%s", out);
    cr_expect_null(strstr(out, "specgrad eigh:"), "progress without --progress on a pipe:\n%s", out);
    cr_assert_eq(run("eigh A.npy --backend cpu --progress"), 0, "%s", out);
    cr_expect_not_null(strstr(out, "specgrad eigh: done, "), "%s", out);
    /* matfunc-backward from A: two library calls (eigh, then the backward), two 'done' lines */
    cr_assert_eq(run("matfunc-backward A.npy A.npy --fn exp --progress -o g.npy --backend cpu"), 0, "%s", out);
    const char *d1 = strstr(out, "specgrad matfunc-backward: done, ");
    cr_expect(d1 && strstr(d1 + 1, "specgrad matfunc-backward: done, "), "%s", out);
    A[2 * N * N] = 0, A[2 * N * N + 4] = -1; /* matrix 2 indefinite: logdet fails in the library */
    wr("A.npy", SG_F64, 3, (int64_t[]){B, N, N}, A);
    cr_expect_eq(run("reg A.npy --kind logdet --progress --backend cpu"), 1, "%s", out);
    cr_expect_not_null(strstr(out, "matrix 2"), "%s", out);
    cr_expect_null(strstr(out, "done"), "'done' after a failed call:\n%s", out);
    cr_expect_eq(run("demo --progress"), 2, "%s", out);
    cr_expect_not_null(strstr(out, "--progress does not apply to demo"), "%s", out);
}

/* One A (or Q) for a batch of X: the batch goes in as one call and matches each item run alone; A with
   batch dims of 1 too; other batch mismatches stay errors; a failure names the column's item. */
Test(cli, single_first_operand_applies_to_a_batch)
{
    enum { B = 6, M = 3, N = 5, K = 2 };
    tu_rng r = tu_seed(9);
    double A[M * N], X[B * N * K], Bm[B * M * K], Q[N * 2];
    tu_fill_normal(&r, A, M * N);
    tu_fill_normal(&r, X, B * N * K);
    tu_fill_normal(&r, Bm, B * M * K);
    double G[N * N];
    tu_orthogonal(&r, N, G);
    for (int i = 0; i < N; i++) Q[i * 2] = G[i * N], Q[i * 2 + 1] = G[i * N + 1]; /* C-order n×2, orthonormal */
    wr("A.npy", SG_F64, 2, (int64_t[]){M, N}, A);
    wr("A1.npy", SG_F64, 4, (int64_t[]){1, 1, M, N}, A);
    wr("Q.npy", SG_F64, 2, (int64_t[]){N, 2}, Q);
    wr("X.npy", SG_F64, 4, (int64_t[]){2, 3, N, K}, X);
    wr("B.npy", SG_F64, 4, (int64_t[]){2, 3, M, K}, Bm);
    const struct { const char *cmd, *first, *single, *rhs; int rows_in, rows_out; } cases[] = {
        {"project", "A.npy", "A.npy", "X", N, N},
        {"project --row", "A1.npy", "A.npy", "X", N, N},
        {"project-basis", "Q.npy", "Q.npy", "X", N, N},
        {"project-basis --complement", "Q.npy", "Q.npy", "X", N, N},
        {"lstsq", "A.npy", "A.npy", "B", M, N},
        {"lstsq", "A1.npy", "A.npy", "B", M, N}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        cr_assert_eq(run("%s %s %s.npy -o all.npy --backend cpu", cases[c].cmd, cases[c].first, cases[c].rhs), 0,
                     "%s: %s", cases[c].cmd, out);
        double *all = rd("all.npy", SG_F64, 4, (int64_t[]){2, 3, cases[c].rows_out, K});
        const double *rhs = cases[c].rhs[0] == 'X' ? X : Bm;
        for (int b = 0; b < B; b++) {
            wr("one.npy", SG_F64, 2, (int64_t[]){cases[c].rows_in, K}, rhs + b * cases[c].rows_in * K);
            cr_assert_eq(run("%s %s one.npy -o y1.npy --backend cpu", cases[c].cmd, cases[c].single), 0, "%s", out);
            double *one = rd("y1.npy", SG_F64, 2, (int64_t[]){cases[c].rows_out, K});
            double d = 0;
            for (int i = 0; i < cases[c].rows_out * K; i++) d = fmax(d, fabs(one[i] - all[b * cases[c].rows_out * K + i]));
            cr_expect_lt(d, 1e-12, "%s %s, item %d: %g from the item alone", cases[c].cmd, cases[c].first, b, d);
            free(one);
        }
        free(all);
    }
    cr_expect_eq(run("lstsq A.npy B.npy --backend cpu -o x.npy"), 0);
    cr_expect_not_null(strstr(out, "rank"), "%s", out);
    /* A with a batch of its own must match X's */
    wr("A2.npy", SG_F64, 3, (int64_t[]){2, M, N}, (double[2 * M * N]){0});
    cr_expect_eq(run("project A2.npy X.npy --backend cpu"), 1, "%s", out);
    cr_expect_not_null(strstr(out, "batch shape"), "%s", out);
    /* NaN in item 4, column 1: the note says how the one call's columns map back */
    X[4 * N * K + 1] = NAN;
    wr("X.npy", SG_F64, 4, (int64_t[]){2, 3, N, K}, X);
    cr_expect_eq(run("project-basis Q.npy X.npy --backend cpu"), 1, "%s", out);
    cr_expect_not_null(strstr(out, "NaN"), "%s", out);
    cr_expect_not_null(strstr(out, "column c is column c % 2 of item c / 2"), "%s", out);
}

/* TIMED: these tests guard against a hang with alarm() (the worker dies by SIGALRM and Criterion reports it),
   not .timeout: Criterion's runner leaks 48 bytes when two tests with .timeout run at once (-j2), which
   LeakSanitizer reports in CI's sanitizer stage. */

/* Starts `specgrad <argv...>` in the temp dir, stdout and stderr into a pipe returned as *outp, SIGINT and
   SIGTERM at their defaults as from a terminal (CI may run us with SIGINT ignored), and no other inherited
   fd (Criterion's IPC, the test's own). */
static pid_t spawn(FILE **outp, const char *const *argv)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        dup2(fds[1], 1), dup2(fds[1], 2), closefrom(3);
        signal(SIGINT, SIG_DFL), signal(SIGTERM, SIG_DFL);
        if (chdir(dir) != 0) _exit(126);
        char *args[16] = {cli};
        for (int i = 0; argv[i] && i < 14; i++) args[i + 1] = (char *)argv[i];
        execv(cli, args);
        _exit(127);
    }
    close(fds[1]);
    *outp = fdopen(fds[0], "r");
    cr_assert_not_null(*outp);
    return pid;
}

/* The rest of the spawned CLI's output into out from offset n, then its exit; returns the wait status. */
static int reap(pid_t pid, FILE *e, size_t n)
{
    n += fread(out + n, 1, sizeof out - 1 - n, e);
    out[n] = 0;
    fclose(e);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    return st;
}

/* Ctrl-C (SIGINT) or SIGTERM during a long call: the call stops at its next progress report, the CLI says
   where, writes no output and exits 128 + signal. The signal is sent once the first progress line shows the
   call running; the whole run takes seconds on one thread, so it cannot end first. */
Test(cli, signal_stops_the_call_and_writes_nothing)
{
    alarm(120); /* TIMED (above) */
    enum { B = 400, N = 192 }; /* about 1.4 s of eigh on one thread here */
    double *A = malloc(sizeof(double) * B * N * N);
    cr_assert_not_null(A);
    tu_rng r = tu_seed(11);
    tu_fill_normal(&r, A, (int64_t)B * N * N); /* the lower triangle is read: symmetric enough */
    wr("A.npy", SG_F64, 3, (int64_t[]){B, N, N}, A);
    free(A);
    const int sigs[2] = {SIGINT, SIGTERM};
    for (int k = 0; k < 2; k++) {
        FILE *e;
        pid_t pid = spawn(&e, (const char *[]){"eigh", "A.npy", "--backend", "cpu", "--threads", "1", "--progress", NULL});
        char line[512];
        size_t n = 0;
        int sent = 0;
        out[0] = 0;
        while (fgets(line, sizeof line, e)) {
            n += (size_t)snprintf(out + n, sizeof out - n, "%s", line);
            if (!sent && strstr(line, "specgrad eigh: ") && strstr(line, "%,")) kill(pid, sigs[k]), sent = 1;
        }
        int st = reap(pid, e, n);
        cr_assert(sent, "no progress line before the run ended:\n%s", out);
        cr_assert(WIFEXITED(st), "killed by the signal instead of stopping:\n%s", out);
        cr_expect_eq(WEXITSTATUS(st), 128 + sigs[k], "%s", out);
        const char *m = strstr(out, k ? "interrupted (SIGTERM) at " : "interrupted (SIGINT) at ");
        cr_expect_not_null(m, "%s", out);
        const char *pl = strstr(out, "specgrad eigh: ");
        double shown = pl ? atof(pl + 15) : -1, stop = m ? atof(strstr(m, " at ") + 4) : -1;
        cr_expect_geq(stop, shown, "stopped at %g%%, before the %g%% already shown:\n%s", stop, shown, out);
        cr_expect_not_null(strstr(out, "no output written"), "%s", out);
        cr_expect_null(strstr(out, "done"), "%s", out);
        char p[512];
        path(p, "A_W.npy");
        cr_expect_neq(access(p, F_OK), 0, "A_W.npy written after the interrupt:\n%s", out);
        path(p, "A_V.npy");
        cr_expect_neq(access(p, F_OK), 0, "A_V.npy written after the interrupt");
    }
}

/* A signal while an input is still being read (a large file, or here a FIFO fed in two halves) stops before
   the computation: the message says so and nothing is written. The FIFO's writer opens only once the CLI
   reads it, so the handler is in place when the signal comes. */
Test(cli, signal_while_reading_stops_before_computing)
{
    alarm(60); /* TIMED: a FIFO nobody opens would block */
    enum { B = 4, N = 8 };
    double A[B * N * N];
    tu_rng r = tu_seed(12);
    tu_fill_normal(&r, A, B * N * N);
    wr("img.npy", SG_F64, 3, (int64_t[]){B, N, N}, A);
    char img[512], fifo[512];
    path(img, "img.npy");
    path(fifo, "A.npy");
    FILE *f = fopen(img, "rb");
    cr_assert_not_null(f);
    static unsigned char buf[B * N * N * 8 + 256];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    FILE *e;
    pid_t pid = spawn(&e, (const char *[]){"eigh", "A.npy", "--backend", "cpu", NULL});
    FILE *w = fopen(fifo, "wb"); /* blocks until the CLI opens it */
    cr_assert_not_null(w);
    cr_assert_eq(fwrite(buf, 1, len / 2, w), len / 2);
    fflush(w);
    kill(pid, SIGINT); /* pending while the CLI waits for the rest: its handler runs before the read ends */
    cr_assert_eq(fwrite(buf + len / 2, 1, len - len / 2, w), len - len / 2);
    fclose(w);
    int st = reap(pid, e, 0);
    cr_assert(WIFEXITED(st), "killed by the signal:\n%s", out);
    cr_expect_eq(WEXITSTATUS(st), 130, "%s", out);
    cr_expect_not_null(strstr(out, "interrupted (SIGINT) while reading the inputs; no output written"), "%s", out);
    char p[512];
    path(p, "A_W.npy");
    cr_expect_neq(access(p, F_OK), 0, "A_W.npy written:\n%s", out);
}

/* A signal that comes while the outputs are being written lets the CLI finish the set (W and V of one run
   together; stopping between them would leave a fresh W beside an old V). W goes to a FIFO larger than the
   pipe's buffer, so the CLI is blocked writing W when the signal comes; V must be written after it. */
Test(cli, signal_during_the_outputs_finishes_the_set)
{
    alarm(60); /* TIMED */
    enum { B = 20000, N = 2 }; /* W: 320 KB of payload */
    double *A = malloc(sizeof(double) * B * N * N);
    cr_assert_not_null(A);
    for (int b = 0; b < B; b++) A[b * 4] = 1, A[b * 4 + 1] = A[b * 4 + 2] = 0.5, A[b * 4 + 3] = 2;
    wr("A.npy", SG_F64, 3, (int64_t[]){B, N, N}, A);
    free(A);
    char fifo[512], vpath[512];
    path(fifo, "A_W.npy");
    path(vpath, "A_V.npy");
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    int rd = open(fifo, O_RDONLY | O_NONBLOCK); /* a reader exists: the CLI's open does not wait */
    cr_assert_geq(rd, 0);
    FILE *e;
    pid_t pid = spawn(&e, (const char *[]){"eigh", "A.npy", "--backend", "cpu", NULL});
    struct pollfd pf = {.fd = rd, .events = POLLIN};
    cr_assert_eq(poll(&pf, 1, 30000), 1, "the CLI never wrote W"); /* it has begun W */
    kill(pid, SIGINT);
    fcntl(rd, F_SETFL, 0);
    static char sink[1 << 16];
    size_t got = 0;
    for (ssize_t k; (k = read(rd, sink, sizeof sink)) != 0;) {
        if (k < 0 && errno == EINTR) continue;
        cr_assert_gt(k, 0, "reading the FIFO: %s", strerror(errno));
        got += (size_t)k;
    }
    close(rd);
    int st = reap(pid, e, 0);
    cr_assert(WIFEXITED(st), "killed by the signal:\n%s", out);
    cr_expect_eq(WEXITSTATUS(st), 0, "%s", out);
    cr_expect_eq(got, (size_t)(128 + B * N * 8), "W through the FIFO: %zu bytes", got);
    cr_expect_eq(access(vpath, F_OK), 0, "V not written after W:\n%s", out);
}

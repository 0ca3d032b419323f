/* `specgrad demo`: seed 000. With d > n the least-squares solutions are w0 + N(X); a nullspace direction
   must come from the full SVD (V[:, rank:]), the economy SVD's last column is the smallest row-space
   direction and moves predictions by exactly 10·σmin. The demo prints both and checks the numbers, so it
   exits non-zero when the library is wrong.
   Data: numpy's default_rng(1071) stream cannot be reproduced in C; X and w_true come from our own seeded
   generator (splitmix64 + Box–Muller), same shapes and distribution as the seed. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { N_EX = 6, D_FEAT = 12 };

static uint64_t sm64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double normal(uint64_t *s)
{
    double u = (double)(sm64(s) >> 11) * 0x1.0p-53, v = (double)(sm64(s) >> 11) * 0x1.0p-53;
    return sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v);
}

/* Dense column-major batch-1 matrix of either dtype, accessed as double. */
static sg_mat mk(sg_dtype t, int64_t r, int64_t c)
{
    return sg_mat_dense(calloc((size_t)(r * c), t == SG_F32 ? 4 : 8), t, 1, r, c);
}
static double g(const sg_mat *m, int64_t i, int64_t j)
{
    int64_t k = i + j * m->ld;
    return m->dtype == SG_F32 ? ((float *)m->data)[k] : ((double *)m->data)[k];
}
static void s(sg_mat *m, int64_t i, int64_t j, double v)
{
    int64_t k = i + j * m->ld;
    if (m->dtype == SG_F32) ((float *)m->data)[k] = (float)v;
    else ((double *)m->data)[k] = v;
}

/* ||X w1 − X w0|| computed as numpy does (two products, then the difference), in double. */
static double dpred(const sg_mat *X, const double *w0, const double *w1)
{
    double acc = 0;
    for (int i = 0; i < N_EX; i++) {
        double p0 = 0, p1 = 0;
        for (int j = 0; j < D_FEAT; j++) p0 += g(X, i, j) * w0[j], p1 += g(X, i, j) * w1[j];
        acc += (p1 - p0) * (p1 - p0);
    }
    return sqrt(acc);
}

/* z = column col of V, normalised; returns ||X(w0 + 10z) − Xw0||. */
static double shift_test(const sg_mat *X, const sg_mat *V, int64_t col, const double *w0)
{
    double z[D_FEAT], nz = 0, w1[D_FEAT];
    for (int j = 0; j < D_FEAT; j++) nz += g(V, j, col) * g(V, j, col);
    for (int j = 0; j < D_FEAT; j++) z[j] = g(V, j, col) / sqrt(nz), w1[j] = w0[j] + 10.0 * z[j];
    return dpred(X, w0, w1);
}

/* Left-aligned label padded by display width (UTF-8 continuation bytes take no column). */
static void label(const char *l)
{
    int w = 0;
    for (const char *p = l; *p; p++) w += ((unsigned char)*p & 0xC0) != 0x80;
    printf("  %s%*s", l, w < 48 ? 50 - w : 2, ""); /* >= 2 spaces: test_cli parses on them */
}
#define ROW(l, fmt, ...) (label(l), printf(fmt "\n", __VA_ARGS__))

static int check(int ok, const char *what, int *fails)
{
    if (!ok) {
        printf("  CHECK FAILED: %s\n", what);
        (*fails)++;
    }
    return ok;
}

/* One table; returns the number of failed checks, or -1 after a library error (already reported). */
static int run(cli_opts *o, sg_dtype t)
{
    sg_ctx *ctx = o->ctx;
    uint64_t seed = 1071;
    sg_mat X = mk(t, N_EX, D_FEAT), y = mk(t, N_EX, 1), w0m = mk(t, D_FEAT, 1), Se = mk(t, N_EX, 1),
           Ue = mk(t, N_EX, N_EX), Ve = mk(t, D_FEAT, N_EX), Sf = mk(t, N_EX, 1), Uf = mk(t, N_EX, N_EX),
           Vf = mk(t, D_FEAT, D_FEAT), Nm = mk(t, D_FEAT, D_FEAT);
    sg_mat *all[] = {&X, &y, &w0m, &Se, &Ue, &Ve, &Sf, &Uf, &Vf, &Nm};
    int fails = -1;
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (!all[i]->data) {
            cli_err(o, "out of memory");
            goto done;
        }
    /* same draw order as the seed: X row by row, then w_true */
    double wt[D_FEAT];
    for (int i = 0; i < N_EX; i++)
        for (int j = 0; j < D_FEAT; j++) s(&X, i, j, normal(&seed));
    for (int j = 0; j < D_FEAT; j++) wt[j] = normal(&seed);
    double ny = 0;
    for (int i = 0; i < N_EX; i++) {
        double v = 0;
        for (int j = 0; j < D_FEAT; j++) v += g(&X, i, j) * wt[j];
        s(&y, i, 0, v);
        ny += g(&y, i, 0) * g(&y, i, 0);
    }
    ny = sqrt(ny);

    int64_t lrank = 0, rank = 0, nul = 0;
    sg_status st;
    const char *step;
    if ((st = sg_lstsq(ctx, &X, &y, 0, -1, &w0m, &lrank)) != SG_OK) { step = "lstsq"; goto fail; }
    if ((st = sg_svd(ctx, &X, 0, &Se, &Ue, &Ve)) != SG_OK) { step = "svd (economy)"; goto fail; }
    if ((st = sg_svd(ctx, &X, 1, &Sf, &Uf, &Vf)) != SG_OK) { step = "svd (full_matrices)"; goto fail; }
    if ((st = sg_rank(ctx, &X, 0, -1, &rank)) != SG_OK) { step = "rank"; goto fail; }
    if ((st = sg_nullspace(ctx, &X, 0, -1, &Nm, &nul)) != SG_OK) { step = "nullspace"; goto fail; }

    double w0[D_FEAT], nw0 = 0, res = 0;
    for (int j = 0; j < D_FEAT; j++) w0[j] = g(&w0m, j, 0), nw0 += w0[j] * w0[j];
    nw0 = sqrt(nw0);
    for (int i = 0; i < N_EX; i++) {
        double p = 0;
        for (int j = 0; j < D_FEAT; j++) p += g(&X, i, j) * w0[j];
        res += (p - g(&y, i, 0)) * (p - g(&y, i, 0));
    }
    res = sqrt(res);
    double smin = g(&Se, N_EX - 1, 0);
    double bug = shift_test(&X, &Ve, N_EX - 1, w0);                         /* numpy: Vt[-1] of economy SVD */
    double fix = rank < D_FEAT ? shift_test(&X, &Vf, rank, w0) : NAN;      /* numpy: Vt_full[rank] */
    double xn = 0, wn = 0;
    for (int64_t c = 0; c < nul; c++) {
        double a = 0, dot = 0;
        for (int i = 0; i < N_EX; i++) {
            double p = 0;
            for (int j = 0; j < D_FEAT; j++) p += g(&X, i, j) * g(&Nm, j, c);
            a += p * p;
        }
        for (int j = 0; j < D_FEAT; j++) dot += g(&Nm, j, c) * w0[j];
        xn = fmax(xn, sqrt(a));
        wn = fmax(wn, fabs(dot));
    }

    /* f64 fix is at rounding level (~1e-15); f32 rounds z to ~1e-7, so ~1e-6 after the ×10 */
    double tol = t == SG_F64 ? 1e-10 : 1e-4;
    printf("\n== %s ==\n", t == SG_F64 ? "float64" : "float32");
    ROW("rank(X)", "%lld", (long long)rank);
    ROW("nullity = d - rank (sg_nullspace)", "%lld", (long long)nul);
    ROW("σmin (smallest singular value, economy SVD)", "%.6e", smin);
    ROW("||w0|| (min-norm lstsq)", "%.6e  (rank %lld)", nw0, (long long)lrank);
    ROW("||X w0 - y||", "%.3e", res);
    ROW("buggy ||X(w0+10z) - Xw0||, z = Vh[-1] (economy)", "%.6e", bug);
    ROW("      10·σmin", "%.6e  (ratio %.6f)", 10 * smin, bug / (10 * smin));
    ROW("fixed ||X(w0+10z) - Xw0||, z = Vh_full[rank]", "%.3e", fix);
    ROW("nullspace basis: max_j ||X N_j||", "%.3e", xn);
    ROW("w0 ⟂ N(X): max_j |N_j · w0|", "%.3e", wn);
    fails = 0;
    check(rank == N_EX && lrank == N_EX, "rank(X) == 6 (lstsq and rank agree)", &fails);
    check(nul == D_FEAT - N_EX, "nullity == 6", &fails);
    check(res <= tol * fmax(1, ny), "||X w0 - y|| ≈ 0 (y is in the range of X)", &fails);
    check(fabs(bug / (10 * smin) - 1) < 0.01, "buggy shift within 1% of 10·σmin", &fails);
    check(fix <= tol, "fixed shift at machine precision", &fails);
    check(xn <= tol, "max ||X N_j|| at machine precision", &fails);
    check(wn <= tol * fmax(1, nw0), "w0 orthogonal to N(X)", &fails);
    if (!fails) printf("  checks: ok\n");
    goto done;
fail:
    cli_err(o, "%s (%s): %s", step, t == SG_F64 ? "float64" : "float32",
            sg_last_error(ctx)[0] ? sg_last_error(ctx) : sg_status_string(st));
    fails = -1;
done:
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]->data);
    return fails;
}

int cli_demo(cli_opts *o, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    if (o->npos) return cli_err(o, "takes no input files (see specgrad demo --help)");
    char why[512] = "";
    sg_cuda_devices(why, sizeof why);
    sg_backend b = sg_get_backend(o->ctx);
    printf("seed 000: X is %d×%d (n examples × d features, d > n), y = X w_true, w0 = min-norm lstsq\n", N_EX, D_FEAT);
    printf("data: specgrad's own seeded generator (splitmix64 + Box-Muller, seed 1071); numpy's rng stream is not "
           "reproduced\n");
    int autocpu = o->backend == SG_BACKEND_AUTO && b == SG_BACKEND_CPU;
    printf("backend: %s (%s%s%s)\n", sg_backend_name(b), o->backend == SG_BACKEND_AUTO ? "auto" : "requested",
           autocpu ? "; no GPU: " : "", autocpu ? why : "");
    int total = 0;
    sg_dtype ts[2] = {SG_F64, SG_F32};
    for (int i = 0; i < 2; i++) {
        if (o->dtype >= 0 && ts[i] != (sg_dtype)o->dtype) continue;
        int f = run(o, ts[i]);
        if (f < 0) return 1;
        total += f;
    }
    if (total) {
        printf("\ndemo: %d check(s) FAILED\n", total);
        return 1;
    }
    printf("\ndemo: all checks passed — economy-SVD z moves predictions by 10·σmin; full-SVD z does not\n");
    return 0;
}

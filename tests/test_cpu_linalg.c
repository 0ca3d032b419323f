/* CPU decompositions against known constructions: eigh, svd, rank, nullspace, project, lstsq.
   Both dtypes (tolerances scale with the dtype's eps), padded layouts (ld > rows, stride > ld·cols) whose
   padding must stay untouched, batches > 1, n = 1 and both rectangular orientations. */
#include <criterion/criterion.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "specgrad.h"
#include "testutil.h"

static sg_ctx *ctx;
static void setup(void) { cr_assert_eq(sg_create(&ctx, SG_BACKEND_CPU), SG_OK); }
static void teardown(void) { sg_destroy(ctx); }
TestSuite(cpu_linalg, .init = setup, .fini = teardown);

#define SENT 1234.5
static const sg_dtype DT[2] = {SG_F32, SG_F64};
static double eps_of(sg_dtype t) { return t == SG_F32 ? 1.1920928955078125e-07 : 2.220446049250313e-16; }
static const char *dn(sg_dtype t) { return t == SG_F32 ? "f32" : "f64"; }

/* A batch with ld = rows + 3 and stride = ld·cols + 5 when pad, every element set to SENT. */
static sg_mat mk(sg_dtype t, int64_t batch, int64_t rows, int64_t cols, int pad)
{
    sg_mat m = sg_mat_dense(NULL, t, batch, rows, cols);
    if (pad) {
        m.ld = rows + 3;
        m.stride = m.ld * cols + 5;
    }
    int64_t st = m.stride ? m.stride : m.ld * cols, tot = st * batch;
    m.data = malloc((size_t)tot * (t == SG_F32 ? 4 : 8));
    cr_assert_not_null(m.data);
    for (int64_t i = 0; i < tot; i++) {
        if (t == SG_F32) ((float *)m.data)[i] = (float)SENT;
        else ((double *)m.data)[i] = SENT;
    }
    return m;
}

/* The padding of a batch must still hold SENT: outputs honour ld and stride. */
static void check_pad(const sg_mat *m, const char *what)
{
    int64_t st = m->stride ? m->stride : m->ld * m->cols;
    for (int64_t b = 0; b < m->batch; b++)
        for (int64_t e = 0; e < st; e++) {
            int64_t i = e % m->ld, j = e / m->ld;
            if (i < m->rows && j < m->cols) continue;
            double v = m->dtype == SG_F32 ? ((float *)m->data)[b * st + e] : ((double *)m->data)[b * st + e];
            cr_assert_eq(v, SENT, "%s: padding element %lld of matrix %lld overwritten", what, (long long)e,
                         (long long)b);
        }
}

static double *dalloc(int64_t n)
{
    double *p = calloc((size_t)(n > 0 ? n : 1), sizeof(double));
    cr_assert_not_null(p);
    return p;
}

/* ||QᵀQ − I||_F for Q n×k */
static double orth_err(const double *Q, int64_t n, int64_t k)
{
    double *G = dalloc(k * k);
    tu_gemm(1, 0, k, k, n, Q, Q, G);
    for (int64_t i = 0; i < k; i++) G[i + i * k] -= 1;
    double e = tu_norm(G, k * k);
    free(G);
    return e;
}

/* A = U diag(s) Vᵀ with U m×m and V n×n returned (random orthogonal), k = min(m,n) values s. */
static void build(tu_rng *r, int64_t m, int64_t n, const double *s, double *A, double *U, double *V)
{
    int64_t k = m < n ? m : n;
    tu_orthogonal(r, m, U);
    tu_orthogonal(r, n, V);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < m; i++) {
            double acc = 0;
            for (int64_t l = 0; l < k; l++) acc += U[i + l * m] * s[l] * V[j + l * n];
            A[i + j * m] = acc;
        }
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- eigh ------------------------------------------------------------------------------------ */
Test(cpu_linalg, eigh_known_spectrum_residual_orthogonality)
{
    const int64_t sizes[] = {1, 2, 5, 17}, B = 3;
    for (int d = 0; d < 2; d++)
        for (int si = 0; si < 4; si++) {
            sg_dtype t = DT[d];
            int64_t n = sizes[si];
            tu_rng r = tu_seed(100 + si);
            double *A = dalloc(B * n * n), *w = dalloc(B * n), *Wo = dalloc(B * n), *Vo = dalloc(B * n * n);
            for (int64_t b = 0; b < B; b++) {
                for (int64_t i = 0; i < n; i++) w[b * n + i] = 3.0 * tu_normal(&r); /* unsorted */
                tu_sym_with_spectrum(&r, n, w + b * n, A + b * n * n);
                qsort(w + b * n, (size_t)n, sizeof(double), cmp_d);
            }
            sg_mat a = mk(t, B, n, n, 1), W = mk(t, B, n, 1, 1), V = mk(t, B, n, n, 1), W2 = mk(t, B, n, 1, 0);
            tu_to_mat(A, &a);
            /* the upper triangle is documented as unread: poison it */
            for (int64_t b = 0; b < B; b++)
                for (int64_t j = 1; j < n; j++)
                    for (int64_t i = 0; i < j; i++) {
                        int64_t e = b * a.stride + i + j * a.ld;
                        if (t == SG_F32) ((float *)a.data)[e] = 99.f;
                        else ((double *)a.data)[e] = 99.0;
                    }
            cr_assert_eq(sg_eigh(ctx, &a, &W, &V), SG_OK, "%s", sg_last_error(ctx));
            cr_assert_eq(sg_eigh(ctx, &a, &W2, NULL), SG_OK, "%s", sg_last_error(ctx));
            check_pad(&W, "W");
            check_pad(&V, "V");
            tu_from_mat(&W, Wo);
            tu_from_mat(&V, Vo);
            double e = eps_of(t), *R = dalloc(n * n), *W2o = dalloc(B * n);
            tu_from_mat(&W2, W2o);
            for (int64_t b = 0; b < B; b++) {
                double *Ab = A + b * n * n, *Vb = Vo + b * n * n, *Wb = Wo + b * n;
                double an = tu_norm(Ab, n * n), scale = tu_max_abs(w + b * n, n);
                for (int64_t i = 0; i + 1 < n; i++) cr_expect_leq(Wb[i], Wb[i + 1], "%s n=%lld: not ascending", dn(t), (long long)n);
                cr_expect_leq(tu_diff_norm(Wb, w + b * n, n), 20 * n * e * scale, "%s n=%lld eigenvalues off by %g",
                              dn(t), (long long)n, tu_diff_norm(Wb, w + b * n, n));
                cr_expect_leq(tu_diff_norm(Wb, W2o + b * n, n), 20 * n * e * scale, "values-only differs");
                tu_gemm(0, 0, n, n, n, Ab, Vb, R); /* AV − VΛ */
                for (int64_t j = 0; j < n; j++)
                    for (int64_t i = 0; i < n; i++) R[i + j * n] -= Vb[i + j * n] * Wb[j];
                cr_expect_leq(tu_norm(R, n * n), 20 * n * e * an, "%s n=%lld residual %g", dn(t), (long long)n,
                              tu_norm(R, n * n));
                cr_expect_leq(orth_err(Vb, n, n), 20 * n * e, "%s n=%lld ||VᵀV−I|| %g", dn(t), (long long)n,
                              orth_err(Vb, n, n));
            }
            free(A), free(w), free(Wo), free(Vo), free(R), free(W2o);
            tu_free_mat(&a), tu_free_mat(&W), tu_free_mat(&V), tu_free_mat(&W2);
        }
}

/* ---- svd ------------------------------------------------------------------------------------- */
Test(cpu_linalg, svd_economy_and_full)
{
    const int64_t shapes[][2] = {{1, 1}, {1, 4}, {4, 1}, {6, 3}, {3, 6}, {7, 7}}, B = 2;
    for (int d = 0; d < 2; d++)
        for (int si = 0; si < 6; si++)
            for (int full = 0; full < 2; full++) {
                sg_dtype t = DT[d];
                int64_t m = shapes[si][0], n = shapes[si][1], k = m < n ? m : n;
                int64_t uc = full ? m : k, vc = full ? n : k;
                tu_rng r = tu_seed(200 + si);
                double *A = dalloc(B * m * n), *s = dalloc(B * k), *Ut = dalloc(m * m), *Vt = dalloc(n * n);
                for (int64_t b = 0; b < B; b++) {
                    for (int64_t i = 0; i < k; i++) s[b * k + i] = (5.0 + b) / (1.0 + 1.3 * (double)i);
                    build(&r, m, n, s + b * k, A + b * m * n, Ut, Vt);
                }
                sg_mat a = mk(t, B, m, n, 1), S = mk(t, B, k, 1, 1), U = mk(t, B, m, uc, 1), V = mk(t, B, n, vc, 1);
                sg_mat S2 = mk(t, B, k, 1, 0);
                tu_to_mat(A, &a);
                cr_assert_eq(sg_svd(ctx, &a, full, &S, &U, &V), SG_OK, "%s", sg_last_error(ctx));
                cr_assert_eq(sg_svd(ctx, &a, full, &S2, NULL, NULL), SG_OK, "%s", sg_last_error(ctx));
                check_pad(&S, "S"), check_pad(&U, "U"), check_pad(&V, "V");
                double *So = dalloc(B * k), *S2o = dalloc(B * k), *Uo = dalloc(B * m * uc), *Vo = dalloc(B * n * vc);
                double *R = dalloc(m * n), *US = dalloc(m * k);
                tu_from_mat(&S, So), tu_from_mat(&S2, S2o), tu_from_mat(&U, Uo), tu_from_mat(&V, Vo);
                double e = eps_of(t);
                for (int64_t b = 0; b < B; b++) {
                    double *Ub = Uo + b * m * uc, *Vb = Vo + b * n * vc, *Sb = So + b * k, *Ab = A + b * m * n;
                    for (int64_t i = 0; i + 1 < k; i++) cr_expect_geq(Sb[i], Sb[i + 1], "S not descending");
                    cr_expect_leq(tu_diff_norm(Sb, s + b * k, k), 20 * (m + n) * e * s[b * k], "%s %lldx%lld S off",
                                  dn(t), (long long)m, (long long)n);
                    cr_expect_leq(tu_diff_norm(Sb, S2o + b * k, k), 20 * (m + n) * e * s[b * k], "values-only S");
                    for (int64_t j = 0; j < k; j++) /* U[:, :k] diag(S) V[:, :k]ᵀ */
                        for (int64_t i = 0; i < m; i++) US[i + j * m] = Ub[i + j * m] * Sb[j];
                    for (int64_t j = 0; j < n; j++)
                        for (int64_t i = 0; i < m; i++) {
                            double acc = 0;
                            for (int64_t l = 0; l < k; l++) acc += US[i + l * m] * Vb[j + l * n];
                            R[i + j * m] = acc - Ab[i + j * m];
                        }
                    cr_expect_leq(tu_norm(R, m * n), 20 * (m + n) * e * tu_norm(Ab, m * n),
                                  "%s %lldx%lld full=%d reconstruction %g", dn(t), (long long)m, (long long)n, full,
                                  tu_norm(R, m * n));
                    cr_expect_leq(orth_err(Ub, m, uc), 20 * (m + n) * e, "UᵀU ≠ I (full=%d)", full);
                    cr_expect_leq(orth_err(Vb, n, vc), 20 * (m + n) * e, "VᵀV ≠ I (full=%d)", full);
                }
                free(A), free(s), free(Ut), free(Vt), free(So), free(S2o), free(Uo), free(Vo), free(R), free(US);
                tu_free_mat(&a), tu_free_mat(&S), tu_free_mat(&U), tu_free_mat(&V), tu_free_mat(&S2);
            }
}

/* ---- rank ------------------------------------------------------------------------------------ */
static int64_t rank_of(sg_dtype t, int64_t m, int64_t n, const double *A, double atol, double rtol)
{
    sg_mat a = mk(t, 1, m, n, 0);
    tu_to_mat(A, &a);
    int64_t r = -1;
    cr_assert_eq(sg_rank(ctx, &a, atol, rtol, &r), SG_OK, "%s", sg_last_error(ctx));
    tu_free_mat(&a);
    return r;
}

Test(cpu_linalg, rank_of_rank_deficient_batch)
{
    const int64_t shapes[][2] = {{5, 8}, {8, 5}, {6, 6}, {1, 3}}, B = 4;
    for (int d = 0; d < 2; d++)
        for (int si = 0; si < 4; si++) {
            sg_dtype t = DT[d];
            int64_t m = shapes[si][0], n = shapes[si][1], k = m < n ? m : n, expect[4];
            tu_rng r = tu_seed(300 + si);
            double *A = dalloc(B * m * n), *s = dalloc(k);
            for (int64_t b = 0; b < B; b++) {
                expect[b] = (b + 1) % (k + 1); /* ranks 1,2,3,0... within k */
                for (int64_t i = 0; i < k; i++) s[i] = i < expect[b] ? 4.0 / (1 + (double)i) : 0.0;
                tu_mat_with_singular_values(&r, m, n, s, A + b * m * n);
            }
            sg_mat a = mk(t, B, m, n, 1);
            tu_to_mat(A, &a);
            int64_t got[4] = {-1, -1, -1, -1};
            cr_assert_eq(sg_rank(ctx, &a, 0, -1, got), SG_OK, "%s", sg_last_error(ctx));
            for (int64_t b = 0; b < B; b++)
                cr_expect_eq(got[b], expect[b], "%s %lldx%lld matrix %lld: rank %lld, expected %lld", dn(t),
                             (long long)m, (long long)n, (long long)b, (long long)got[b], (long long)expect[b]);
            free(A), free(s);
            tu_free_mat(&a);
        }
}

Test(cpu_linalg, rank_tolerance_rules)
{
    tu_rng r = tu_seed(7);
    const int64_t m = 6, n = 6;
    double s[6] = {1, 0.5, 1e-3, 1e-5, 1e-13, 0}, A[36], U[36], V[36];
    build(&r, m, n, s, A, U, V);
    /* default: tol = 6·eps·σmax ≈ 1.3e-15 (f64); the exact zero lands at rounding level ~1e-16 */
    cr_expect_eq(rank_of(SG_F64, m, n, A, 0, -1), 5);
    /* f32: tol = 6·1.2e-7 ≈ 7e-7, so 1e-5 counts and 1e-13 does not */
    cr_expect_eq(rank_of(SG_F32, m, n, A, 0, -1), 4);
    /* atol given → rtol defaults to 0 (torch): only atol cuts */
    cr_expect_eq(rank_of(SG_F64, m, n, A, 1e-4, -1), 3);
    cr_expect_eq(rank_of(SG_F64, m, n, A, 1e-2, -1), 2);
    cr_expect_eq(rank_of(SG_F64, m, n, A, 1e-9, -1), 4, "atol alone must not add the eps·max(m,n) default");
    /* explicit rtol, and max(atol, rtol·σmax) */
    cr_expect_eq(rank_of(SG_F64, m, n, A, 0, 1e-4), 3);
    cr_expect_eq(rank_of(SG_F64, m, n, A, 1e-6, 1e-2), 2);
    cr_expect_eq(rank_of(SG_F64, m, n, A, 1e-2, 1e-6), 2);
    cr_expect_eq(rank_of(SG_F64, m, n, A, 0, 0), 6, "tol 0 counts every σ > 0, rounding noise included");

    /* right at the cutoff: σ counts iff σ > tol (strict), checked on the computed σ3 */
    sg_mat a = sg_mat_dense(A, SG_F64, 1, m, n);
    double S[6];
    sg_mat sm = sg_mat_dense(S, SG_F64, 1, 6, 1);
    cr_assert_eq(sg_svd(ctx, &a, 0, &sm, NULL, NULL), SG_OK);
    cr_expect_eq(rank_of(SG_F64, m, n, A, nextafter(S[2], 0), -1), 3, "atol just below σ3");
    cr_expect_eq(rank_of(SG_F64, m, n, A, S[2], -1), 2, "atol == σ3 excludes it");
    cr_expect_eq(rank_of(SG_F64, m, n, A, 0, S[2] / S[0] * (1 - 1e-9)), 3, "rtol just below σ3/σ1");
    cr_expect_eq(rank_of(SG_F64, m, n, A, 0, S[2] / S[0] * (1 + 1e-9)), 2, "rtol just above σ3/σ1");
}

/* Per-matrix tolerances (sg_*_tols): matrix b gets the rank its own pair gives (known from the σ it was
   built with: σ_i = 2^-i, every cutoff at least a factor 4/3 from a σ), and every output equals a call on
   that matrix alone with the pair as scalars. Arrays given for atol only, rtol only, both, neither. */
Test(cpu_linalg, per_matrix_tolerances_match_one_call_per_matrix)
{
    const int64_t shapes[][2] = {{6, 4}, {4, 7}, {5, 5}}, B = 7, kx = 2;
    const double at[7] = {0, 0.75, 0.375, 0, 0.1, 1.5, 0.6}, rt[7] = {-1, -1, 0.3, 0.7, 0, -1, 0.1};
    for (int d = 0; d < 2; d++)
        for (int si = 0; si < 3; si++)
            for (int which = 0; which < 4; which++) {
                sg_dtype t = DT[d];
                int64_t m = shapes[si][0], n = shapes[si][1], k = m < n ? m : n;
                const double *pa = which & 1 ? at : NULL, *pr = which & 2 ? rt : NULL;
                double tolc = t == SG_F32 ? 1e-5 : 1e-12, sv[8];
                tu_rng r = tu_seed(900 + si);
                double *A = dalloc(B * m * n), *X = dalloc(B * n * kx), *Bv = dalloc(B * m * kx);
                for (int64_t i = 0; i < k; i++) sv[i] = ldexp(1, -(int)i);
                for (int64_t b = 0; b < B; b++) tu_mat_with_singular_values(&r, m, n, sv, A + b * m * n);
                tu_fill_normal(&r, X, B * n * kx);
                tu_fill_normal(&r, Bv, B * m * kx);
                sg_mat a = mk(t, B, m, n, 1), x = mk(t, B, n, kx, 1), bb = mk(t, B, m, kx, 1);
                tu_to_mat(A, &a), tu_to_mat(X, &x), tu_to_mat(Bv, &bb);
                sg_mat nn = mk(t, B, n, n, 0), y = mk(t, B, n, kx, 0), xs = mk(t, B, n, kx, 0);
                int64_t rk[7], nl[7], rk2[7];
                cr_assert_eq(sg_rank_tols(ctx, &a, pa, pr, rk), SG_OK, "%s", sg_last_error(ctx));
                cr_assert_eq(sg_nullspace_tols(ctx, &a, pa, pr, &nn, nl), SG_OK, "%s", sg_last_error(ctx));
                cr_assert_eq(sg_project_tols(ctx, &a, &x, SG_PROJ_NULL, pa, pr, &y), SG_OK, "%s", sg_last_error(ctx));
                cr_assert_eq(sg_lstsq_tols(ctx, &a, &bb, pa, pr, &xs, rk2), SG_OK, "%s", sg_last_error(ctx));
                double *N = dalloc(B * n * n), *Y = dalloc(B * n * kx), *XS = dalloc(B * n * kx);
                tu_from_mat(&nn, N), tu_from_mat(&y, Y), tu_from_mat(&xs, XS);
                for (int64_t b = 0; b < B; b++) {
                    double a1 = pa ? pa[b] : 0, r1 = pr ? pr[b] : -1, rr = r1 < 0 ? (a1 > 0 ? 0 : (m > n ? m : n) * eps_of(t)) : r1;
                    double cut = fmax(a1, rr); /* σmax = 1 */
                    int64_t want = 0;
                    while (want < k && sv[want] > cut) want++;
                    cr_expect_eq(rk[b], want, "%s %lldx%lld arrays %d matrix %lld: rank %lld, expected %lld", dn(t),
                                 (long long)m, (long long)n, which, (long long)b, (long long)rk[b], (long long)want);
                    cr_expect_eq(nl[b], n - want, "nullity of matrix %lld", (long long)b);
                    cr_expect_eq(rk2[b], want, "lstsq rank of matrix %lld", (long long)b);
                    /* the same matrix alone, scalar pair */
                    sg_mat a1m = mk(t, 1, m, n, 0), x1 = mk(t, 1, n, kx, 0), b1 = mk(t, 1, m, kx, 0);
                    sg_mat n1 = mk(t, 1, n, n, 0), y1 = mk(t, 1, n, kx, 0), s1 = mk(t, 1, n, kx, 0);
                    tu_to_mat(A + b * m * n, &a1m), tu_to_mat(X + b * n * kx, &x1), tu_to_mat(Bv + b * m * kx, &b1);
                    int64_t q = -1;
                    cr_assert_eq(sg_nullspace(ctx, &a1m, a1, r1, &n1, &q), SG_OK);
                    cr_assert_eq(sg_project(ctx, &a1m, &x1, SG_PROJ_NULL, a1, r1, &y1), SG_OK);
                    cr_assert_eq(sg_lstsq(ctx, &a1m, &b1, a1, r1, &s1, NULL), SG_OK);
                    double *N1 = dalloc(n * n), *Y1 = dalloc(n * kx), *S1 = dalloc(n * kx);
                    tu_from_mat(&n1, N1), tu_from_mat(&y1, Y1), tu_from_mat(&s1, S1);
                    cr_expect_eq(q, nl[b]);
                    if (q > 0 && q == nl[b])
                        cr_expect_leq(tu_subspace_dist(n, N + b * n * n, q, N1, q), tolc * 10, "null space of matrix %lld",
                                      (long long)b);
                    cr_expect_leq(tu_diff_norm(Y + b * n * kx, Y1, n * kx), tolc * 10 * fmax(1, tu_norm(Y1, n * kx)),
                                  "project of matrix %lld", (long long)b);
                    cr_expect_leq(tu_diff_norm(XS + b * n * kx, S1, n * kx), tolc * 1e3 * fmax(1, tu_norm(S1, n * kx)),
                                  "lstsq of matrix %lld", (long long)b);
                    free(N1), free(Y1), free(S1);
                    tu_free_mat(&a1m), tu_free_mat(&x1), tu_free_mat(&b1), tu_free_mat(&n1), tu_free_mat(&y1), tu_free_mat(&s1);
                }
                free(A), free(X), free(Bv), free(N), free(Y), free(XS);
                tu_free_mat(&a), tu_free_mat(&x), tu_free_mat(&bb), tu_free_mat(&nn), tu_free_mat(&y), tu_free_mat(&xs);
            }
}

/* ---- nullspace ------------------------------------------------------------------------------- */
Test(cpu_linalg, nullspace_known_subspace)
{
    /* m, n, rank */
    const int64_t cases[][3] = {{6, 12, 6}, {5, 8, 3}, {8, 5, 2}, {4, 4, 4}, {1, 1, 0}, {1, 1, 1}, {3, 1, 0}};
    const int64_t B = 2;
    for (int d = 0; d < 2; d++)
        for (int ci = 0; ci < 7; ci++) {
            sg_dtype t = DT[d];
            int64_t m = cases[ci][0], n = cases[ci][1], rk = cases[ci][2], k = m < n ? m : n;
            tu_rng r = tu_seed(400 + ci);
            double *A = dalloc(B * m * n), *Vs = dalloc(B * n * n), *U = dalloc(m * m), *s = dalloc(k);
            for (int64_t i = 0; i < k; i++) s[i] = i < rk ? 2.0 + (double)(k - i) : 0.0;
            for (int64_t b = 0; b < B; b++) build(&r, m, n, s, A + b * m * n, U, Vs + b * n * n);
            sg_mat a = mk(t, B, m, n, 1), N = mk(t, B, n, n, 1);
            tu_to_mat(A, &a);
            int64_t nul[2] = {-1, -1};
            cr_assert_eq(sg_nullspace(ctx, &a, 0, -1, &N, nul), SG_OK, "%s", sg_last_error(ctx));
            check_pad(&N, "N");
            double *No = dalloc(B * n * n), *AN = dalloc(m * n), e = eps_of(t);
            tu_from_mat(&N, No);
            for (int64_t b = 0; b < B; b++) {
                int64_t z = n - rk;
                double *Nb = No + b * n * n;
                cr_expect_eq(nul[b], z, "%s %lldx%lld rank %lld: nullity %lld", dn(t), (long long)m, (long long)n,
                             (long long)rk, (long long)nul[b]);
                cr_expect_leq(tu_max_abs(Nb + z * n, n * (n - z)), 0.0, "columns beyond the nullity must be 0");
                tu_gemm(0, 0, m, z, n, A + b * m * n, Nb, AN);
                cr_expect_leq(tu_norm(AN, m * z), 30 * (m + n) * e * tu_norm(A + b * m * n, m * n), "||AN|| %g",
                              tu_norm(AN, m * z));
                cr_expect_leq(orth_err(Nb, n, z), 30 * n * e, "N not orthonormal");
                double dist = tu_subspace_dist(n, Nb, z, Vs + b * n * n + rk * n, z);
                cr_expect_leq(dist, 100 * n * e, "%s subspace distance %g", dn(t), dist);
            }
            /* nullity pointer is optional */
            cr_expect_eq(sg_nullspace(ctx, &a, 0, -1, &N, NULL), SG_OK);
            free(A), free(Vs), free(U), free(s), free(No), free(AN);
            tu_free_mat(&a), tu_free_mat(&N);
        }
}

/* ---- project --------------------------------------------------------------------------------- */
Test(cpu_linalg, project_null_and_row)
{
    const int64_t cases[][4] = {{4, 7, 3, 5}, {7, 4, 4, 2}, {3, 6, 3, 1}, {1, 1, 1, 1}}; /* m, n, rank, kx */
    const int64_t B = 3;
    for (int d = 0; d < 2; d++)
        for (int ci = 0; ci < 4; ci++) {
            sg_dtype t = DT[d];
            int64_t m = cases[ci][0], n = cases[ci][1], rk = cases[ci][2], kx = cases[ci][3], k = m < n ? m : n;
            tu_rng r = tu_seed(500 + ci);
            double *A = dalloc(B * m * n), *Vs = dalloc(B * n * n), *U = dalloc(m * m), *s = dalloc(k);
            double *X = dalloc(B * n * kx);
            for (int64_t i = 0; i < k; i++) s[i] = i < rk ? 1.0 + (double)(k - i) : 0.0;
            for (int64_t b = 0; b < B; b++) build(&r, m, n, s, A + b * m * n, U, Vs + b * n * n);
            tu_fill_normal(&r, X, B * n * kx);
            sg_mat a = mk(t, B, m, n, 1), x = mk(t, B, n, kx, 1), yn = mk(t, B, n, kx, 1), yr = mk(t, B, n, kx, 0);
            sg_mat y2 = mk(t, B, n, kx, 0);
            tu_to_mat(A, &a), tu_to_mat(X, &x);
            cr_assert_eq(sg_project(ctx, &a, &x, SG_PROJ_NULL, 0, -1, &yn), SG_OK, "%s", sg_last_error(ctx));
            cr_assert_eq(sg_project(ctx, &a, &x, SG_PROJ_ROW, 0, -1, &yr), SG_OK, "%s", sg_last_error(ctx));
            cr_assert_eq(sg_project(ctx, &a, &yn, SG_PROJ_NULL, 0, -1, &y2), SG_OK, "%s", sg_last_error(ctx));
            check_pad(&yn, "Y");
            double e = eps_of(t), *Yn = dalloc(B * n * kx), *Yr = dalloc(B * n * kx), *Y2 = dalloc(B * n * kx);
            double *AY = dalloc(m * kx), *P = dalloc(n * kx), *Xr = dalloc(B * n * kx);
            tu_from_mat(&yn, Yn), tu_from_mat(&yr, Yr), tu_from_mat(&y2, Y2), tu_from_mat(&x, Xr);
            for (int64_t b = 0; b < B; b++) {
                int64_t o = b * n * kx;
                double xn = tu_norm(Xr + o, n * kx), c = 30 * (m + n) * e * xn;
                for (int64_t i = 0; i < n * kx; i++) P[i] = Yn[o + i] + Yr[o + i];
                cr_expect_leq(tu_diff_norm(P, Xr + o, n * kx), c, "P_null + P_row ≠ I");
                cr_expect_leq(tu_diff_norm(Y2 + o, Yn + o, n * kx), c, "P_null² ≠ P_null");
                tu_gemm(0, 0, m, kx, n, A + b * m * n, Yn + o, AY);
                cr_expect_leq(tu_norm(AY, m * kx), c * tu_norm(A + b * m * n, m * n), "A·P_null X ≠ 0");
                /* row projection against V_r V_rᵀ X from the construction */
                double *Vr = Vs + b * n * n, *T = dalloc(rk * kx);
                tu_gemm(1, 0, rk, kx, n, Vr, Xr + o, T);
                tu_gemm(0, 0, n, kx, rk, Vr, T, P);
                cr_expect_leq(tu_diff_norm(P, Yr + o, n * kx), c, "%s P_row X differs from V_r V_rᵀ X by %g", dn(t),
                              tu_diff_norm(P, Yr + o, n * kx));
                free(T);
            }
            /* in place: Y is X itself */
            cr_assert_eq(sg_project(ctx, &a, &x, SG_PROJ_NULL, 0, -1, &x), SG_OK, "%s", sg_last_error(ctx));
            check_pad(&x, "X in place");
            tu_from_mat(&x, Y2);
            cr_expect_leq(tu_diff_norm(Y2, Yn, B * n * kx), 4 * e * tu_norm(Yn, B * n * kx) + 1e-300,
                          "in-place result differs");
            free(A), free(Vs), free(U), free(s), free(X), free(Yn), free(Yr), free(Y2), free(AY), free(P), free(Xr);
            tu_free_mat(&a), tu_free_mat(&x), tu_free_mat(&yn), tu_free_mat(&yr), tu_free_mat(&y2);
        }
}

/* project_basis with a known Q (first q columns of a random orthogonal matrix, padded layouts) against
   Q Qᵀ X formed in double; with sg_nullspace's N (zero columns included) it is sg_project. */
Test(cpu_linalg, project_basis_known_basis_and_nullspace)
{
    const int64_t cases[][3] = {{6, 2, 3}, {5, 5, 1}, {9, 1, 4}, {1, 1, 2}}; /* n, q, kx */
    const int64_t B = 3;
    for (int d = 0; d < 2; d++)
        for (int ci = 0; ci < 4; ci++) {
            sg_dtype t = DT[d];
            int64_t n = cases[ci][0], q = cases[ci][1], kx = cases[ci][2];
            tu_rng r = tu_seed(560 + ci);
            double *O = dalloc(n * n), *Qd = dalloc(B * n * q), *X = dalloc(B * n * kx), *T = dalloc(q * kx);
            double *P = dalloc(B * n * kx), *Y = dalloc(B * n * kx), *Yc = dalloc(B * n * kx);
            for (int64_t b = 0; b < B; b++) {
                tu_orthogonal(&r, n, O);
                memcpy(Qd + b * n * q, O, sizeof(double) * (size_t)(n * q));
            }
            tu_fill_normal(&r, X, B * n * kx);
            sg_mat qm = mk(t, B, n, q, 1), x = mk(t, B, n, kx, 1), y = mk(t, B, n, kx, 1), yc = mk(t, B, n, kx, 0);
            tu_to_mat(Qd, &qm), tu_to_mat(X, &x);
            tu_from_mat(&qm, Qd), tu_from_mat(&x, X); /* the values as the dtype holds them */
            cr_assert_eq(sg_project_basis(ctx, &qm, &x, 0, &y), SG_OK, "%s", sg_last_error(ctx));
            cr_assert_eq(sg_project_basis(ctx, &qm, &x, 1, &yc), SG_OK, "%s", sg_last_error(ctx));
            check_pad(&y, "Y");
            tu_from_mat(&y, Y), tu_from_mat(&yc, Yc);
            for (int64_t b = 0; b < B; b++) {
                int64_t o = b * n * kx;
                tu_gemm(1, 0, q, kx, n, Qd + b * n * q, X + o, T);
                tu_gemm(0, 0, n, kx, q, Qd + b * n * q, T, P + o);
                double c = 10 * n * eps_of(t) * tu_norm(X + o, n * kx);
                cr_expect_leq(tu_diff_norm(Y + o, P + o, n * kx), c, "%s n=%lld q=%lld: Y ≠ Q Qᵀ X (%g)", dn(t),
                              (long long)n, (long long)q, tu_diff_norm(Y + o, P + o, n * kx));
                for (int64_t i = 0; i < n * kx; i++) P[o + i] = X[o + i] - P[o + i];
                cr_expect_leq(tu_diff_norm(Yc + o, P + o, n * kx), c, "%s n=%lld q=%lld: complement ≠ X − Q Qᵀ X",
                              dn(t), (long long)n, (long long)q);
            }
            /* in place: Y is X itself */
            cr_assert_eq(sg_project_basis(ctx, &qm, &x, 1, &x), SG_OK, "%s", sg_last_error(ctx));
            check_pad(&x, "X in place");
            tu_from_mat(&x, Y);
            cr_expect_leq(tu_diff_norm(Y, Yc, B * n * kx), 4 * eps_of(t) * tu_norm(Yc, B * n * kx) + 1e-300,
                          "in-place result differs");
            free(O), free(Qd), free(X), free(T), free(P), free(Y), free(Yc);
            tu_free_mat(&qm), tu_free_mat(&x), tu_free_mat(&y), tu_free_mat(&yc);
        }
    /* N from sg_nullspace (nullity columns, the rest zero): the same projections as sg_project */
    for (int d = 0; d < 2; d++) {
        sg_dtype t = DT[d];
        int64_t m = 3, n = 7, kx = 2;
        tu_rng r = tu_seed(570);
        double *A = dalloc(B * m * n), *X = dalloc(B * n * kx), *Y1 = dalloc(B * n * kx), *Y2 = dalloc(B * n * kx);
        tu_fill_normal(&r, A, B * m * n);
        tu_fill_normal(&r, X, B * n * kx);
        sg_mat a = mk(t, B, m, n, 0), x = mk(t, B, n, kx, 0), N = mk(t, B, n, n, 1), y1 = mk(t, B, n, kx, 0),
               y2 = mk(t, B, n, kx, 0);
        tu_to_mat(A, &a), tu_to_mat(X, &x);
        cr_assert_eq(sg_nullspace(ctx, &a, 0, -1, &N, NULL), SG_OK, "%s", sg_last_error(ctx));
        for (int c = 0; c < 2; c++) {
            cr_assert_eq(sg_project(ctx, &a, &x, c ? SG_PROJ_ROW : SG_PROJ_NULL, 0, -1, &y1), SG_OK);
            cr_assert_eq(sg_project_basis(ctx, &N, &x, c, &y2), SG_OK, "%s", sg_last_error(ctx));
            tu_from_mat(&y1, Y1), tu_from_mat(&y2, Y2);
            cr_expect_leq(tu_diff_norm(Y1, Y2, B * n * kx), 50 * n * eps_of(t) * tu_norm(X, B * n * kx),
                          "%s complement=%d: basis projection ≠ sg_project", dn(t), c);
        }
        free(A), free(X), free(Y1), free(Y2);
        tu_free_mat(&a), tu_free_mat(&x), tu_free_mat(&N), tu_free_mat(&y1), tu_free_mat(&y2);
    }
}

/* ---- eigh at extreme scales ------------------------------------------------------------------ */
/* Entries near overflow or underflow: the small path (n <= 25) scales like ?syevd does (without it ?larfg
   overflowed at 1e308 and lost accuracy near 1e-310). Eigenvalues against LAPACKE ?syevd on the same stored
   matrix (n = 30 runs ?syevd itself: the control). */
Test(cpu_linalg, eigh_extreme_scales_match_syevd)
{
    static const double scales[2][3] = {{1e36, 1e-36, 1e-40}, {1e300, 1e-300, 1e-310}};
    static const int64_t ns[3] = {3, 8, 30};
    for (int d = 0; d < 2; d++)
        for (int si = 0; si < 3; si++)
            for (int ni = 0; ni < 3; ni++) {
                sg_dtype t = DT[d];
                const int64_t n = ns[ni], B = 2;
                const double sc = scales[d][si];
                tu_rng r = tu_seed(900 + ni);
                double *A = dalloc(B * n * n), *w = dalloc(n), *Wg = dalloc(B * n), *Wr = dalloc(n);
                for (int64_t i = 0; i < n; i++) w[i] = -1 + 3.0 * (double)i / (double)n;
                for (int64_t b = 0; b < B; b++) tu_sym_with_spectrum(&r, n, w, A + b * n * n);
                for (int64_t i = 0; i < B * n * n; i++) A[i] *= sc;
                sg_mat a = mk(t, B, n, n, 0), W = mk(t, B, n, 1, 0), V = mk(t, B, n, n, 0);
                tu_to_mat(A, &a);
                cr_assert_eq(sg_eigh(ctx, &a, &W, &V), SG_OK, "%s n=%lld scale %g: %s", dn(t), (long long)n, sc,
                             sg_last_error(ctx));
                tu_from_mat(&W, Wg);
                for (int64_t b = 0; b < B; b++) {
                    double wmax = 0, err = 0;
                    if (t == SG_F64) {
                        double *c = dalloc(n * n);
                        memcpy(c, (double *)a.data + b * n * n, sizeof(double) * (size_t)(n * n));
                        cr_assert_eq(LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'N', 'L', (lapack_int)n, c, (lapack_int)n, Wr), 0);
                        free(c);
                    } else {
                        float *c = malloc(sizeof(float) * (size_t)(n * n)), *wf = malloc(sizeof(float) * (size_t)n);
                        cr_assert(c && wf);
                        memcpy(c, (float *)a.data + b * n * n, sizeof(float) * (size_t)(n * n));
                        cr_assert_eq(LAPACKE_ssyevd(LAPACK_COL_MAJOR, 'N', 'L', (lapack_int)n, c, (lapack_int)n, wf), 0);
                        for (int64_t i = 0; i < n; i++) Wr[i] = wf[i];
                        free(c), free(wf);
                    }
                    for (int64_t i = 0; i < n; i++) {
                        wmax = fmax(wmax, fabs(Wr[i]));
                        err = fmax(err, fabs(Wg[b * n + i] - Wr[i]));
                    }
                    cr_expect(wmax > 0 && err <= 100 * (double)n * eps_of(t) * wmax,
                              "%s n=%lld scale %g matrix %lld: max |Δλ| %g of max |λ| %g", dn(t), (long long)n, sc,
                              (long long)b, err, wmax);
                }
                free(A), free(w), free(Wg), free(Wr);
                tu_free_mat(&a), tu_free_mat(&W), tu_free_mat(&V);
            }
    /* entries at 1e308 (f64) and 2e38 (f32): eigenvalues ±√2·x and 0, as ?syevd gives */
    for (int d = 0; d < 2; d++) {
        const double x = d ? 1e308 : 2e38, A[9] = {0, x, x, x, 0, 0, x, 0, 0};
        sg_mat a = mk(DT[d], 1, 3, 3, 0), W = mk(DT[d], 1, 3, 1, 0), V = mk(DT[d], 1, 3, 3, 0);
        double Wo[3];
        tu_to_mat(A, &a);
        cr_assert_eq(sg_eigh(ctx, &a, &W, &V), SG_OK, "%s at %g: %s", dn(DT[d]), x, sg_last_error(ctx));
        tu_from_mat(&W, Wo);
        cr_expect(fabs(Wo[0] + sqrt(2.0) * x) <= 1e-5 * x && fabs(Wo[1]) <= 1e-5 * x &&
                      fabs(Wo[2] - sqrt(2.0) * x) <= 1e-5 * x,
                  "%s: %g %g %g", dn(DT[d]), Wo[0], Wo[1], Wo[2]);
        cr_assert_eq(sg_eigh(ctx, &a, &W, NULL), SG_OK, "values only: %s", sg_last_error(ctx));
        tu_free_mat(&a), tu_free_mat(&W), tu_free_mat(&V);
    }
}

/* ---- lstsq ----------------------------------------------------------------------------------- */
/* X for one matrix via the library (batch 1, padded layout). */
static void lstsq1(sg_dtype t, int64_t m, int64_t n, int64_t kb, const double *A, const double *Bv, double atol,
                   double rtol, double *X, int64_t *rank)
{
    sg_mat a = mk(t, 1, m, n, 1), b = mk(t, 1, m, kb, 1), x = mk(t, 1, n, kb, 1);
    tu_to_mat(A, &a), tu_to_mat(Bv, &b);
    cr_assert_eq(sg_lstsq(ctx, &a, &b, atol, rtol, &x, rank), SG_OK, "%s", sg_last_error(ctx));
    check_pad(&x, "X");
    tu_from_mat(&x, X);
    tu_free_mat(&a), tu_free_mat(&b), tu_free_mat(&x);
}

Test(cpu_linalg, lstsq_overdetermined_vs_normal_equations)
{
    const int64_t m = 9, n = 4, kb = 2;
    tu_rng r = tu_seed(600);
    double s[4] = {2, 1.7, 1.3, 1}, A[36], U[81], V[16], Bv[18], X[8], G[16], Z[8];
    build(&r, m, n, s, A, U, V);
    tu_fill_normal(&r, Bv, m * kb);
    tu_gemm(1, 0, n, n, m, A, A, G); /* (AᵀA) Z = AᵀB, Cholesky */
    tu_gemm(1, 0, n, kb, m, A, Bv, Z);
    cr_assert_eq(LAPACKE_dposv(LAPACK_COL_MAJOR, 'L', n, kb, G, n, Z, n), 0);
    for (int d = 0; d < 2; d++) {
        int64_t rk = -1;
        lstsq1(DT[d], m, n, kb, A, Bv, 0, -1, X, &rk);
        cr_expect_eq(rk, n);
        cr_expect_leq(tu_diff_norm(X, Z, n * kb), 100 * eps_of(DT[d]) * tu_norm(Z, n * kb), "%s lstsq vs normal eq %g",
                      dn(DT[d]), tu_diff_norm(X, Z, n * kb));
    }
}

Test(cpu_linalg, lstsq_underdetermined_min_norm)
{
    const int64_t m = 4, n = 9, kb = 3;
    tu_rng r = tu_seed(601);
    double s[4] = {3, 2, 1.5, 0.7}, A[36], U[16], V[81], Bv[12], X[27], R[12], W[27];
    build(&r, m, n, s, A, U, V);
    tu_fill_normal(&r, Bv, m * kb);
    for (int d = 0; d < 2; d++) {
        double e = eps_of(DT[d]);
        lstsq1(DT[d], m, n, kb, A, Bv, 0, -1, X, NULL);
        tu_gemm(0, 0, m, kb, n, A, X, R);
        cr_expect_leq(tu_diff_norm(R, Bv, m * kb), 100 * e * tu_norm(Bv, m * kb), "AX ≠ B");
        /* in the row space: the null-space directions V[:, m:] see nothing of X */
        double *T = dalloc((n - m) * kb);
        tu_gemm(1, 0, n - m, kb, n, V + m * n, X, T);
        cr_expect_leq(tu_norm(T, (n - m) * kb), 100 * e * tu_norm(X, n * kb), "X has a null-space component");
        free(T);
        /* any other solution X + z (z in the null space) is longer */
        for (int64_t i = 0; i < n * kb; i++) W[i] = X[i] + 0.1 * V[m * n + i % n];
        tu_gemm(0, 0, m, kb, n, A, W, R);
        cr_expect_leq(tu_diff_norm(R, Bv, m * kb), 100 * e * tu_norm(Bv, m * kb), "X + z is also a solution");
        cr_expect_gt(tu_norm(W, n * kb), tu_norm(X, n * kb));
    }
}

/* A⁺ B from the construction's factors, with the first r singular values kept. */
static void pinv_solve(int64_t m, int64_t n, int64_t r, const double *U, const double *s, const double *V,
                       const double *Bv, int64_t kb, double *X)
{
    double *T = dalloc(r * kb);
    tu_gemm(1, 0, r, kb, m, U, Bv, T);
    for (int64_t j = 0; j < kb; j++)
        for (int64_t i = 0; i < r; i++) T[i + j * r] /= s[i];
    tu_gemm(0, 0, n, kb, r, V, T, X);
    free(T);
}

Test(cpu_linalg, lstsq_rank_deficient_vs_pinv_batch)
{
    const int64_t cases[][3] = {{7, 5, 3}, {5, 7, 2}, {1, 1, 0}, {1, 1, 1}}; /* m, n, rank */
    const int64_t B = 3, kb = 2;
    for (int d = 0; d < 2; d++)
        for (int ci = 0; ci < 4; ci++) {
            sg_dtype t = DT[d];
            int64_t m = cases[ci][0], n = cases[ci][1], rk = cases[ci][2], k = m < n ? m : n;
            tu_rng r = tu_seed(610 + ci);
            double *A = dalloc(B * m * n), *Us = dalloc(B * m * m), *Vs = dalloc(B * n * n), *s = dalloc(k);
            double *Bv = dalloc(B * m * kb), *Xe = dalloc(B * n * kb), *Xo = dalloc(B * n * kb);
            for (int64_t i = 0; i < k; i++) s[i] = i < rk ? 1.0 + (double)(k - i) : 0.0;
            tu_fill_normal(&r, Bv, B * m * kb);
            for (int64_t b = 0; b < B; b++) {
                build(&r, m, n, s, A + b * m * n, Us + b * m * m, Vs + b * n * n);
                pinv_solve(m, n, rk, Us + b * m * m, s, Vs + b * n * n, Bv + b * m * kb, kb, Xe + b * n * kb);
            }
            sg_mat a = mk(t, B, m, n, 1), bm = mk(t, B, m, kb, 1), x = mk(t, B, n, kb, 1);
            tu_to_mat(A, &a), tu_to_mat(Bv, &bm);
            int64_t rks[3] = {-1, -1, -1};
            cr_assert_eq(sg_lstsq(ctx, &a, &bm, 0, -1, &x, rks), SG_OK, "%s", sg_last_error(ctx));
            check_pad(&x, "X");
            tu_from_mat(&x, Xo);
            for (int64_t b = 0; b < B; b++) {
                cr_expect_eq(rks[b], rk);
                double ref = tu_norm(Xe + b * n * kb, n * kb), nb = tu_norm(Bv + b * m * kb, m * kb);
                cr_expect_leq(tu_diff_norm(Xo + b * n * kb, Xe + b * n * kb, n * kb), 100 * (m + n) * eps_of(t) * (ref + nb),
                              "%s %lldx%lld rank %lld: X vs pinv %g", dn(t), (long long)m, (long long)n, (long long)rk,
                              tu_diff_norm(Xo + b * n * kb, Xe + b * n * kb, n * kb));
            }
            free(A), free(Us), free(Vs), free(s), free(Bv), free(Xe), free(Xo);
            tu_free_mat(&a), tu_free_mat(&bm), tu_free_mat(&x);
        }
}

Test(cpu_linalg, lstsq_ill_conditioned_f64)
{
    const int64_t n = 6;
    tu_rng r = tu_seed(620);
    double s[6] = {1, 0.3, 1e-2, 1e-4, 1e-7, 1e-10}, A[36], U[36], V[36], xt[6], b[6], x[6], Ax[6], xe[6];
    build(&r, n, n, s, A, U, V);
    tu_fill_normal(&r, xt, n);
    tu_gemm(0, 0, n, 1, n, A, xt, b);
    int64_t rk = -1;
    /* default tol 6·eps keeps σ = 1e-10: the solution is exact up to cond·eps */
    lstsq1(SG_F64, n, n, 1, A, b, 0, -1, x, &rk);
    cr_expect_eq(rk, 6);
    tu_gemm(0, 0, n, 1, n, A, x, Ax);
    cr_expect_leq(tu_diff_norm(Ax, b, n), 100 * 2.2e-16 * tu_norm(x, n), "residual %g", tu_diff_norm(Ax, b, n));
    cr_expect_leq(tu_diff_norm(x, xt, n), 100 * 1e10 * 2.2e-16 * tu_norm(xt, n), "error %g vs cond·eps",
                  tu_diff_norm(x, xt, n));
    /* rtol 1e-8 drops σ = 1e-10: the truncated pinv solution, bounded */
    lstsq1(SG_F64, n, n, 1, A, b, 0, 1e-8, x, &rk);
    cr_expect_eq(rk, 5);
    pinv_solve(n, n, 5, U, s, V, b, 1, xe);
    cr_expect_leq(tu_diff_norm(x, xe, n), 1e-6 * tu_norm(xe, n), "truncated solution off by %g", tu_diff_norm(x, xe, n));
}

/* ---- seed 000: underdetermined regression, null-space direction from full vs economy SVD --------- */
Test(cpu_linalg, seed000_full_matrices_nullspace)
{
    const int64_t n = 6, d = 12;
    tu_rng r = tu_seed(1071);
    double X[72], wt[12], y[6], w0[12], S[6], U[36], Vf[144], Ue[36], Ve[72], z[12], p0[6], p1[6], w1[12];
    tu_fill_normal(&r, X, n * d);
    tu_fill_normal(&r, wt, d);
    tu_gemm(0, 0, n, 1, d, X, wt, y);
    int64_t rk = -1;
    lstsq1(SG_F64, n, d, 1, X, y, 0, -1, w0, &rk);
    cr_assert_eq(rk, 6);
    sg_mat x = sg_mat_dense(X, SG_F64, 1, n, d), sm = sg_mat_dense(S, SG_F64, 1, n, 1);
    sg_mat u = sg_mat_dense(U, SG_F64, 1, n, n), vf = sg_mat_dense(Vf, SG_F64, 1, d, d);
    sg_mat ue = sg_mat_dense(Ue, SG_F64, 1, n, n), ve = sg_mat_dense(Ve, SG_F64, 1, d, n);
    cr_assert_eq(sg_svd(ctx, &x, 1, &sm, &u, &vf), SG_OK, "%s", sg_last_error(ctx));
    cr_assert_eq(sg_svd(ctx, &x, 0, &sm, &ue, &ve), SG_OK, "%s", sg_last_error(ctx));
    tu_gemm(0, 0, n, 1, d, X, w0, p0);
    /* full_matrices: column r of V is in the null space → predictions unchanged */
    for (int64_t i = 0; i < d; i++) w1[i] = w0[i] + 10.0 * Vf[i + rk * d];
    tu_gemm(0, 0, n, 1, d, X, w1, p1);
    double full = tu_diff_norm(p1, p0, n);
    cr_expect_leq(full, 1e-13, "full-matrices ||Δpred|| = %g", full);
    double dot = 0;
    for (int64_t i = 0; i < d; i++) dot += w0[i] * Vf[i + rk * d];
    cr_expect_leq(fabs(dot), 1e-13 * tu_norm(w0, d), "w0 not orthogonal to the null space");
    /* economy: the last column is σmin's row-space vector → ||Δpred|| = 10·σmin */
    for (int64_t i = 0; i < d; i++) z[i] = Ve[i + (n - 1) * d];
    for (int64_t i = 0; i < d; i++) w1[i] = w0[i] + 10.0 * z[i] / tu_norm(z, d);
    tu_gemm(0, 0, n, 1, d, X, w1, p1);
    double econ = tu_diff_norm(p1, p0, n);
    cr_expect_gt(S[n - 1], 0.01, "σmin unexpectedly tiny");
    cr_expect_leq(fabs(econ - 10 * S[n - 1]), 1e-10 * econ, "economy ||Δpred|| %g vs 10σmin %g", econ, 10 * S[n - 1]);
}

/* ---- threads and failures ------------------------------------------------------------------------ */
Test(cpu_linalg, threads_do_not_change_results)
{
    const int64_t m = 5, n = 4, B = 9;
    tu_rng r = tu_seed(700);
    double *A = dalloc(B * m * n);
    tu_fill_normal(&r, A, B * m * n);
    sg_mat a = mk(SG_F64, B, m, n, 1), s1 = mk(SG_F64, B, n, 1, 0), s2 = mk(SG_F64, B, n, 1, 0);
    tu_to_mat(A, &a);
    cr_assert_eq(sg_set_threads(ctx, 1), SG_OK);
    cr_assert_eq(sg_svd(ctx, &a, 0, &s1, NULL, NULL), SG_OK);
    cr_assert_eq(sg_set_threads(ctx, 3), SG_OK);
    cr_assert_eq(sg_svd(ctx, &a, 0, &s2, NULL, NULL), SG_OK);
    cr_expect_eq(memcmp(s1.data, s2.data, sizeof(double) * B * n), 0, "results depend on the thread count");
    free(A);
    tu_free_mat(&a), tu_free_mat(&s1), tu_free_mat(&s2);
    /* the gradients and projections too, on both sides of the small-product limit (n = 8, 10: our loops;
       n = 12: ?gemm) and of the small eigh path (n = 25, 26) */
    const int64_t ns[] = {3, 8, 10, 12, 25, 26};
    for (int i = 0; i < 6; i++) {
        const int64_t k = ns[i];
        double *S = dalloc(B * k * k), *G = dalloc(B * k * k), *w = dalloc(k), *out[2][3];
        for (int64_t j = 0; j < k; j++) w[j] = 1 + (double)j;
        for (int64_t b = 0; b < B; b++) tu_sym_with_spectrum(&r, k, w, S + b * k * k);
        tu_fill_normal(&r, G, B * k * k);
        sg_mat sa = mk(SG_F64, B, k, k, 0), ga = mk(SG_F64, B, k, k, 0), W = mk(SG_F64, B, k, 1, 0),
               V = mk(SG_F64, B, k, k, 0), o = mk(SG_F64, B, k, k, 0);
        tu_to_mat(S, &sa), tu_to_mat(G, &ga);
        for (int t = 0; t < 2; t++) {
            cr_assert_eq(sg_set_threads(ctx, t ? 3 : 1), SG_OK);
            for (int q = 0; q < 3; q++) out[t][q] = dalloc(B * k * k);
            cr_assert_eq(sg_eigh(ctx, &sa, &W, &V), SG_OK, "%s", sg_last_error(ctx));
            tu_from_mat(&V, out[t][0]);
            cr_assert_eq(sg_eigh_backward(ctx, &W, &V, NULL, &ga, SG_DEGEN_EXACT, 0, &o), SG_OK, "%s", sg_last_error(ctx));
            tu_from_mat(&o, out[t][1]);
            cr_assert_eq(sg_project_basis(ctx, &V, &ga, 1, &o), SG_OK, "%s", sg_last_error(ctx));
            tu_from_mat(&o, out[t][2]);
        }
        for (int q = 0; q < 3; q++)
            cr_expect_eq(memcmp(out[0][q], out[1][q], sizeof(double) * (size_t)(B * k * k)), 0,
                         "n = %lld: %s depends on the thread count", (long long)k,
                         q == 0 ? "eigh" : q == 1 ? "eigh_backward" : "project_basis");
        for (int t = 0; t < 2; t++)
            for (int q = 0; q < 3; q++) free(out[t][q]);
        free(S), free(G), free(w);
        tu_free_mat(&sa), tu_free_mat(&ga), tu_free_mat(&W), tu_free_mat(&V), tu_free_mat(&o);
    }
    cr_assert_eq(sg_set_threads(ctx, 0), SG_OK);
}

/* With the finite check off, a NaN reaches LAPACK: gesdd rejects it (info < 0), syevd does not
   converge (info > 0). Matrices 2 and 4 fail; the report names the lowest, 2. */
Test(cpu_linalg, lapack_failure_reports_lowest_index)
{
    for (int d = 0; d < 2; d++) {
        sg_dtype t = DT[d];
        const int64_t n = 4, B = 5;
        tu_rng r = tu_seed(800);
        double *A = dalloc(B * n * n), w[4] = {1, 2, 3, 4};
        for (int64_t b = 0; b < B; b++) tu_sym_with_spectrum(&r, n, w, A + b * n * n);
        A[2 * n * n + 5] = NAN;
        A[4 * n * n + 6] = NAN;
        sg_mat a = mk(t, B, n, n, 0), S = mk(t, B, n, 1, 0), V = mk(t, B, n, n, 0);
        tu_to_mat(A, &a);
        int64_t rk[5];
        cr_expect_eq(sg_svd(ctx, &a, 0, &S, NULL, NULL), SG_ERR_NONFINITE, "front-end check is on by default");
        cr_assert_eq(sg_set_check_finite(ctx, 0), SG_OK);
        sg_status st = sg_svd(ctx, &a, 0, &S, NULL, NULL);
        cr_expect(st == SG_ERR_LAPACK || st == SG_ERR_NOCONV, "svd status %s", sg_status_string(st));
        cr_expect_eq(sg_failed_index(ctx), 2, "%s", sg_last_error(ctx));
        cr_expect(strstr(sg_last_error(ctx), "matrix 2") != NULL, "%s", sg_last_error(ctx));
        cr_expect(strstr(sg_last_error(ctx), "gesdd") != NULL, "%s", sg_last_error(ctx));
        st = sg_rank(ctx, &a, 0, -1, rk);
        cr_expect(st == SG_ERR_LAPACK || st == SG_ERR_NOCONV);
        cr_expect_eq(sg_failed_index(ctx), 2);
        st = sg_eigh(ctx, &a, &S, &V);
        cr_expect(st == SG_ERR_NOCONV || st == SG_ERR_LAPACK, "eigh status %s", sg_status_string(st));
        cr_expect_eq(sg_failed_index(ctx), 2, "%s", sg_last_error(ctx));
        cr_expect(strstr(sg_last_error(ctx), "steqr") != NULL, "n = 4 goes through ?steqr: %s", sg_last_error(ctx));
        /* the healthy matrices were still solved */
        double So[20];
        tu_from_mat(&S, So);
        for (int64_t i = 0; i < n; i++) cr_expect_leq(fabs(So[i] - w[i]), 100 * eps_of(t) * 4, "matrix 0 not solved");
        cr_assert_eq(sg_set_check_finite(ctx, 1), SG_OK);
        free(A);
        tu_free_mat(&a), tu_free_mat(&S), tu_free_mat(&V);
    }
}

Test(cpu_linalg, sizes_beyond_lapack_int_are_refused)
{
    double buf[4] = {0};
    sg_mat a = sg_mat_dense(buf, SG_F64, 1, (int64_t)3 << 30, 1); /* never read: refused before LAPACK */
    int64_t rk = -1;
    cr_assert_eq(sg_set_check_finite(ctx, 0), SG_OK);
    cr_expect_eq(sg_rank(ctx, &a, 0, -1, &rk), SG_ERR_UNSUPPORTED);
    cr_expect(strstr(sg_last_error(ctx), "32-bit") != NULL, "%s", sg_last_error(ctx));
    cr_expect_eq(rk, -1);
}

/* Invariant: for finite input, SG_OK comes with finite outputs; a LAPACK call that "succeeds" with NaN/Inf
   is SG_ERR_LAPACK naming the matrix. The inputs are the ones that broke: float32 ssyevd of tied spectra at
   n = 64 returned NaN vectors with SG_OK (Debian's OpenBLAS 0.3.21 on the H200 machine's Intel Xeon,
   2026-11-30). On a sound BLAS every call here is SG_OK; on a broken one this fails without the check. */
Test(cpu_linalg, ok_status_never_comes_with_nan_outputs)
{
    tu_rng r = tu_seed(99);
    const int64_t B = 3;
    for (int ti = 0; ti < 2; ti++)
        for (int64_t n = 32; n <= 64; n += 32) {
            double *A = malloc(sizeof(double) * (size_t)(B * n * n)), *w = malloc(sizeof(double) * (size_t)n);
            for (int64_t b = 0; b < B; b++) {
                for (int64_t i = 0; i < n; i++) w[i] = -1.0 + 2.0 * (double)(i / 2) / (double)(n / 2); /* pairs tied */
                tu_sym_with_spectrum(&r, n, w, A + b * n * n);
            }
            sg_mat Am = mk(DT[ti], B, n, n, 0), W = mk(DT[ti], B, n, 1, 0), V = mk(DT[ti], B, n, n, 0),
                   S = mk(DT[ti], B, n, 1, 0), U = mk(DT[ti], B, n, n, 0), Vs = mk(DT[ti], B, n, n, 0);
            tu_to_mat(A, &Am);
            sg_status st[2] = {sg_eigh(ctx, &Am, &W, &V), SG_OK};
            char msg[2][512];
            snprintf(msg[0], sizeof msg[0], "%s", sg_last_error(ctx));
            st[1] = sg_svd(ctx, &Am, 0, &S, &U, &Vs);
            snprintf(msg[1], sizeof msg[1], "%s", sg_last_error(ctx));
            sg_mat *outs[2][2] = {{&W, &V}, {&S, &U}};
            for (int op = 0; op < 2; op++) {
                if (st[op] != SG_OK) {
                    cr_expect(st[op] == SG_ERR_LAPACK || st[op] == SG_ERR_NOCONV, "%s n=%lld op %d: %s", dn(DT[ti]),
                              (long long)n, op, msg[op]);
                    cr_expect(strstr(msg[op], "matrix") != NULL, "%s", msg[op]);
                    continue;
                }
                for (int o = 0; o < 2; o++) {
                    const sg_mat *m = outs[op][o];
                    int64_t len = m->rows * m->cols * B, bad = -1;
                    double *x = malloc(sizeof(double) * (size_t)len);
                    tu_from_mat(m, x);
                    for (int64_t i = 0; i < len && bad < 0; i++)
                        if (!isfinite(x[i])) bad = i;
                    cr_expect(bad < 0, "%s n=%lld %s: SG_OK with a non-finite output at %lld", dn(DT[ti]), (long long)n,
                              op ? "svd" : "eigh", (long long)bad);
                    free(x);
                }
            }
            free(A), free(w);
            free(Am.data), free(W.data), free(V.data), free(S.data), free(U.data), free(Vs.data);
        }
}

/* The backend runs BLAS single-threaded inside its batch loops (cpu.h: sg_blas_single_begin) and gives the
   process its OpenBLAS thread count back afterwards, on every path: several threads, one thread, one large
   matrix, gradients, and a failing call. */
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
Test(cpu_linalg, blas_thread_count_is_restored)
{
    openblas_set_num_threads(3);
    if (openblas_get_num_threads() != 3) cr_skip_test("this OpenBLAS was built single-threaded (get = %d)", openblas_get_num_threads());
    const int64_t n = 40, B = 3;
    tu_rng r = tu_seed(5);
    double *A = dalloc(B * n * n), w[40];
    for (int64_t i = 0; i < n; i++) w[i] = (double)i - 7.5;
    for (int64_t b = 0; b < B; b++) tu_sym_with_spectrum(&r, n, w, A + b * n * n);
    sg_mat a = mk(SG_F64, B, n, n, 0), W = mk(SG_F64, B, n, 1, 0), V = mk(SG_F64, B, n, n, 0), G = mk(SG_F64, B, n, n, 0);
    tu_to_mat(A, &a);
    for (int t = 0; t <= 1; t++) {
        cr_assert_eq(sg_set_threads(ctx, t ? 1 : 2), SG_OK);
        cr_expect_eq(sg_eigh(ctx, &a, &W, &V), SG_OK, "%s", sg_last_error(ctx));
        cr_expect_eq(openblas_get_num_threads(), 3, "after eigh (threads %d)", t ? 1 : 2);
        cr_expect_eq(sg_eigh_backward(ctx, &W, &V, NULL, &a, SG_DEGEN_MASK, 0, &G), SG_OK, "%s", sg_last_error(ctx));
        cr_expect_eq(openblas_get_num_threads(), 3, "after eigh_backward (threads %d)", t ? 1 : 2);
        sg_mat one = a, w1 = W;
        one.batch = w1.batch = 1; /* one larger matrix, all threads: BLAS keeps its own threads, and the count */
        cr_assert_eq(sg_set_threads(ctx, 0), SG_OK);
        cr_expect_eq(sg_eigh(ctx, &one, &w1, NULL), SG_OK, "%s", sg_last_error(ctx));
        cr_expect_eq(openblas_get_num_threads(), 3, "after a one-matrix eigh");
    }
    A[0] = NAN; /* a failing call restores it too */
    tu_to_mat(A, &a);
    cr_assert_eq(sg_set_check_finite(ctx, 0), SG_OK);
    (void)sg_eigh(ctx, &a, &W, &V);
    cr_expect_eq(openblas_get_num_threads(), 3, "after a failing eigh");
    cr_assert_eq(sg_set_check_finite(ctx, 1), SG_OK);
    free(A);
    tu_free_mat(&a), tu_free_mat(&W), tu_free_mat(&V), tu_free_mat(&G);
}

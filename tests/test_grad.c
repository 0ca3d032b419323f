/* CPU gradients vs central finite differences in float64.
   Every loss below is recomputed from an independent forward (LAPACKE dsyevd / dgesdd called here, not
   the library), is invariant to the sign (gauge) of each eigen/singular vector, and is probed along
   random unit directions D (symmetric for symmetric inputs): <gA, D> against (L(A+hD) − L(A−hD))/2h,
   error relative to ||gA||_F (so a zero or wrong gradient cannot pass). */
#include <criterion/criterion.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "specgrad.h"
#include "testutil.h"

#define NMAX 8
#define NN (NMAX * NMAX)

static sg_ctx *ctx;
static void setup(void) { cr_assert_eq(sg_create(&ctx, SG_BACKEND_CPU), SG_OK); }
static void teardown(void) { sg_destroy(ctx); }
TestSuite(grad, .init = setup, .fini = teardown);

/* ---- independent forward references ---------------------------------------------------------- */
static void ref_eigh(int n, const double *A, double *w, double *V)
{
    memcpy(V, A, sizeof(double) * n * n);
    cr_assert_eq(LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', n, V, n, w), 0);
}

/* A = U diag(s) Vᵀ; full: U m×m, V n×n, else m×k, n×k (V, not Vᵀ). */
static void ref_svd(int m, int n, const double *A, int full, double *s, double *U, double *V)
{
    int k = m < n ? m : n, vr = full ? n : k;
    double a[NN], vt[NN];
    memcpy(a, A, sizeof(double) * m * n);
    cr_assert_eq(LAPACKE_dgesdd(LAPACK_COL_MAJOR, full ? 'A' : 'S', m, n, a, m, s, U, m, vt, vr), 0);
    for (int i = 0; i < vr; i++)
        for (int j = 0; j < n; j++) V[j + i * n] = vt[i + j * vr];
}

static double dot(const double *x, const double *y, int len)
{
    double s = 0;
    for (int i = 0; i < len; i++) s += x[i] * y[i];
    return s;
}

static int all_finite(const double *x, int len)
{
    for (int i = 0; i < len; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* ---- finite differences ---------------------------------------------------------------------- */
typedef double (*lossfn)(const double *A, const void *p);

static void rand_dir(tu_rng *r, int m, int n, int sym, double *D)
{
    tu_fill_normal(r, D, m * n);
    if (sym)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < j; i++) D[i + j * n] = D[j + i * n] = 0.5 * (D[i + j * n] + D[j + i * n]);
    double s = tu_norm(D, m * n);
    for (int i = 0; i < m * n; i++) D[i] /= s;
}

/* Worst |<gA,D> − FD| / ||gA|| over four random unit directions. */
static double fd_err(lossfn L, const void *p, const double *A, const double *gA, int m, int n, int sym, double h,
                     tu_rng *r)
{
    double worst = 0, D[NN], Ap[NN], Am[NN];
    for (int t = 0; t < 4; t++) {
        rand_dir(r, m, n, sym, D);
        for (int i = 0; i < m * n; i++) Ap[i] = A[i] + h * D[i], Am[i] = A[i] - h * D[i];
        double fd = (L(Ap, p) - L(Am, p)) / (2 * h), an = dot(gA, D, m * n);
        double e = fabs(an - fd) / (tu_norm(gA, m * n) + 1e-300);
        worst = e > worst ? e : worst;
    }
    return worst;
}

/* ---- matrices --------------------------------------------------------------------------------- */
static sg_mat mk(sg_dtype t, int b, int r, int c, const double *src)
{
    sg_mat m = tu_alloc_mat(t, b, r, c);
    if (src) tu_to_mat(src, &m);
    return m;
}

/* Q diag(w) Qᵀ with Q returned (exact eigenpairs, up to the rounding of A itself). */
static void sym_from(tu_rng *r, int n, const double *w, double *A, double *Q)
{
    tu_orthogonal(r, n, Q);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int l = 0; l < n; l++) s += Q[i + l * n] * w[l] * Q[j + l * n];
            A[i + j * n] = s;
        }
}

/* ---- eigh losses: L = Σ c_i λ_i + Σ d_i v_iᵀ B v_i + Σ e_i (v_iᵀ x)⁴ (each term sign-invariant;
   with c, d equal and e = 0 on a tied cluster it depends on the cluster only through its projector). */
typedef struct {
    int n;
    double c[NMAX], d[NMAX], e[NMAX], B[NN], x[NMAX];
} eloss;

static void rand_eloss(tu_rng *r, int n, eloss *p)
{
    p->n = n;
    tu_fill_normal(r, p->c, n);
    tu_fill_normal(r, p->d, n);
    tu_fill_normal(r, p->e, n);
    tu_fill_normal(r, p->B, n * n); /* not symmetric on purpose: only sym(B) matters */
    tu_fill_normal(r, p->x, n);
}

static double eloss_wv(const eloss *p, const double *w, const double *V)
{
    int n = p->n;
    double L = 0, Bv[NMAX];
    for (int i = 0; i < n; i++) {
        const double *v = V + i * n;
        tu_gemm(0, 0, n, 1, n, p->B, v, Bv);
        double t = dot(v, p->x, n);
        L += p->c[i] * w[i] + p->d[i] * dot(v, Bv, n) + p->e[i] * t * t * t * t;
    }
    return L;
}

static double eloss_A(const double *A, const void *vp)
{
    const eloss *p = vp;
    double w[NMAX], V[NN];
    ref_eigh(p->n, A, w, V);
    return eloss_wv(p, w, V);
}

static void eloss_grad(const eloss *p, const double *V, double *gW, double *gV)
{
    int n = p->n;
    for (int i = 0; i < n; i++) {
        const double *v = V + i * n;
        double t = dot(v, p->x, n);
        gW[i] = p->c[i];
        for (int a = 0; a < n; a++) {
            double s = 0;
            for (int b = 0; b < n; b++) s += (p->B[a + b * n] + p->B[b + a * n]) * v[b];
            gV[a + i * n] = p->d[i] * s + 4 * p->e[i] * t * t * t * p->x[a];
        }
    }
}

static sg_status eigh_bwd(sg_dtype t, int b, int n, const double *w, const double *V, const double *gW,
                          const double *gV, sg_degen mode, double param, double *gA)
{
    sg_mat W = mk(t, b, n, 1, w), Vm = mk(t, b, n, n, V), GW = mk(t, b, n, 1, gW), GV = mk(t, b, n, n, gV),
           GA = mk(t, b, n, n, NULL);
    sg_status s = sg_eigh_backward(ctx, &W, &Vm, gW ? &GW : NULL, gV ? &GV : NULL, mode, param, &GA);
    tu_from_mat(&GA, gA);
    tu_free_mat(&W), tu_free_mat(&Vm), tu_free_mat(&GW), tu_free_mat(&GV), tu_free_mat(&GA);
    return s;
}

/* gA of an eloss at A (forward by dsyevd), then the FD error. */
static double eigh_check(const eloss *p, const double *A, sg_degen mode, double param, double h, tu_rng *r,
                         int use_gw, int use_gv)
{
    int n = p->n;
    double w[NMAX], V[NN], gW[NMAX], gV[NN], gA[NN];
    ref_eigh(n, A, w, V);
    eloss_grad(p, V, gW, gV);
    cr_assert_eq(eigh_bwd(SG_F64, 1, n, w, V, use_gw ? gW : NULL, use_gv ? gV : NULL, mode, param, gA), SG_OK, "%s",
                 sg_last_error(ctx));
    cr_assert(all_finite(gA, n * n));
    for (int j = 0; j < n; j++)
        for (int i = 0; i < n; i++) cr_assert_eq(gA[i + j * n], gA[j + i * n], "gA must be symmetric");
    return fd_err(eloss_A, p, A, gA, n, n, 1, h, r);
}

Test(grad, eigh_random_spectra_every_mode)
{
    tu_rng r = tu_seed(11);
    for (int rep = 0; rep < 3; rep++) {
        int n = 4 + rep;
        double A[NN], Q[NN], w[NMAX];
        for (int i = 0; i < n; i++) w[i] = -2.0 + 1.1 * i + 0.3 * tu_uniform(&r); /* gaps ≥ 0.8 */
        sym_from(&r, n, w, A, Q);
        eloss p;
        rand_eloss(&r, n, &p);
        sg_degen modes[] = {SG_DEGEN_EXACT, SG_DEGEN_MASK, SG_DEGEN_LORENTZ};
        for (int m = 0; m < 3; m++) {
            double e = eigh_check(&p, A, modes[m], 0, 1e-6, &r, 1, 1);
            cr_expect_lt(e, 1e-6, "n=%d mode %d: rel err %g", n, (int)modes[m], e);
        }
        /* NULL gW / gV mean zero: losses without that term */
        eloss q = p;
        memset(q.c, 0, sizeof q.c);
        cr_expect_lt(eigh_check(&q, A, SG_DEGEN_EXACT, 0, 1e-6, &r, 0, 1), 1e-6, "gW = NULL");
        q = p;
        memset(q.d, 0, sizeof q.d), memset(q.e, 0, sizeof q.e);
        cr_expect_lt(eigh_check(&q, A, SG_DEGEN_EXACT, 0, 1e-6, &r, 1, 0), 1e-6, "gV = NULL");
    }
}

Test(grad, eigh_taylor_positive_spectra)
{
    tu_rng r = tu_seed(12);
    int n = 5;
    double A[NN], Q[NN], w2[] = {1, 2, 4, 8, 16}, w10[] = {0.01, 0.1, 1, 10, 100};
    eloss p;
    rand_eloss(&r, n, &p);
    sym_from(&r, n, w2, A, Q);
    double e40 = eigh_check(&p, A, SG_DEGEN_TAYLOR, 40, 1e-6, &r, 1, 1); /* ratio ≤ 1/2: 2^-40 */
    double e3 = eigh_check(&p, A, SG_DEGEN_TAYLOR, 3, 1e-6, &r, 1, 1);   /* (1/2)^3: visibly truncated */
    cr_expect_lt(e40, 1e-6, "K=40: %g", e40);
    cr_expect_gt(e3, 1e-3, "K=3 must be a visible approximation (param honoured): %g", e3);
    sym_from(&r, n, w10, A, Q);
    double e9 = eigh_check(&p, A, SG_DEGEN_TAYLOR, 0, 1e-6, &r, 1, 1); /* default K = 9, ratio ≤ 0.1 */
    cr_expect_lt(e9, 1e-6, "default K: %g", e9);
}

/* TAYLOR on spectra that are not positive: a same-sign pair expands in the ratio of the smaller to the larger
   magnitude (negative-definite spectra mirror positive ones), an opposite-sign pair, never near a tie, takes
   1/E. Until 2026-12-02 the series ran in (smaller value)/(larger value): for λ = −8, −4 the ratio was 2 and
   the sum grew like 2^K, for −1, 2 it was −1/2 (slow, and wrong at −1, 1), and a non-positive pair divided
   by 0 or a negative "big". */
Test(grad, eigh_taylor_indefinite_and_negative_spectra)
{
    tu_rng r = tu_seed(14);
    int n = 5;
    double A[NN], Q[NN];
    const double spectra[3][5] = {{-8, -4, -1, 2, 16}, {-16, -8, -4, -2, -1}, {-3, -1e-3, 0, 1, 4}};
    eloss p;
    rand_eloss(&r, n, &p);
    for (int k = 0; k < 3; k++) {
        sym_from(&r, n, spectra[k], A, Q);
        double e = eigh_check(&p, A, SG_DEGEN_TAYLOR, 60, 1e-6, &r, 1, 1); /* same-sign ratios <= 1/2 (or 0) */
        cr_expect_lt(e, 1e-6, "spectrum %d, K=60: rel err %g", k, e);
    }
}

Test(grad, eigh_near_degenerate_gap_1e4_exact)
{
    tu_rng r = tu_seed(13);
    int n = 5;
    double A[NN], Q[NN], w[] = {0.5, 1, 1 + 1e-4, 2, 3};
    sym_from(&r, n, w, A, Q);
    eloss p;
    rand_eloss(&r, n, &p);
    /* gradient ~1/gap = 1e4, third derivative ~1e12: h = 1e-7 keeps the FD error ~1e-7 relative */
    double e = eigh_check(&p, A, SG_DEGEN_EXACT, 0, 1e-7, &r, 1, 1);
    cr_expect_lt(e, 1e-5, "rel err %g", e);
    /* the mask's relative tolerance (1e3·eps) must not touch a 1e-4 gap */
    double em = eigh_check(&p, A, SG_DEGEN_MASK, 0, 1e-7, &r, 1, 1);
    cr_expect_lt(em, 1e-5, "mask rel err %g", em);
    /* LORENTZ with param ≪ E² = 1e-8: bias param/E² = 1e-12 */
    double el = eigh_check(&p, A, SG_DEGEN_LORENTZ, 1e-20, 1e-7, &r, 1, 1);
    cr_expect_lt(el, 1e-5, "lorentz 1e-20 rel err %g", el);
    /* TAYLOR is a deliberate approximation near ties, so no FD check: with K terms and ratio
       r = λ/(λ + E) ≈ 1 − 1e-4, F = (1/λbig) Σ_{k<K} r^k ≈ K/λ (≈ 9 for the default K) instead of
       1/E = 1e4; it only has to stay finite (eigh_check asserts that, and symmetry). */
    (void)eigh_check(&p, A, SG_DEGEN_TAYLOR, 0, 1e-7, &r, 1, 1);
}

/* Exact ties: EXACT writes inf/NaN and names the matrix; the others stay finite. */
Test(grad, eigh_exact_ties_report_degenerate)
{
    tu_rng r = tu_seed(14);
    int n = 5;
    double w[3 * NMAX], V[3 * NN], A[NN], gW[3 * NMAX], gV[3 * NN], gA[3 * NN];
    double ws[] = {-1, 0.5, 2, 3, 5}, wt[] = {1, 2, 2, 3, 5};
    eloss p;
    rand_eloss(&r, n, &p);
    for (int b = 0; b < 3; b++) {
        memcpy(w + b * n, b == 1 ? wt : ws, sizeof(double) * n);
        sym_from(&r, n, w + b * n, A, V + b * n * n); /* V = Q: exact eigenvectors of an exact tie */
        eloss_grad(&p, V + b * n * n, gW + b * n, gV + b * n * n);
    }
    cr_assert_eq(eigh_bwd(SG_F64, 3, n, w, V, gW, gV, SG_DEGEN_EXACT, 0, gA), SG_ERR_DEGENERATE);
    cr_expect_eq(sg_failed_index(ctx), 1);
    cr_expect(strstr(sg_last_error(ctx), "tied") != NULL, "%s", sg_last_error(ctx));
    cr_expect(!all_finite(gA + n * n, n * n), "tied matrix must carry inf/NaN in exact mode");
    /* 1/E is +inf both ways at the tie and skew(VᵀgV) flips sign, so G holds +inf and -inf there and the
       symmetrized V G Vᵀ of a dense V is NaN everywhere, as the CUDA kernel's full sweep gives (a G mirrored
       from one triangle would give ±inf instead) */
    for (int e = 0; e < n * n; e++)
        cr_expect(isnan(gA[n * n + e]), "tied matrix, element %d: %g (NaN expected)", e, gA[n * n + e]);
    cr_expect(all_finite(gA, n * n) && all_finite(gA + 2 * n * n, n * n), "other matrices are written and finite");
    /* each non-tied matrix equals its own single-matrix result */
    double g1[NN];
    cr_assert_eq(eigh_bwd(SG_F64, 1, n, w + 2 * n, V + 2 * n * n, gW + 2 * n, gV + 2 * n * n, SG_DEGEN_EXACT, 0, g1),
                 SG_OK);
    cr_expect_lt(tu_diff_norm(g1, gA + 2 * n * n, n * n), 1e-13 * tu_norm(g1, n * n));
    /* no gV: the off-diagonal is skipped, ties are harmless */
    cr_expect_eq(eigh_bwd(SG_F64, 3, n, w, V, gW, NULL, SG_DEGEN_EXACT, 0, gA), SG_OK);
    cr_expect(all_finite(gA, 3 * n * n));
    for (sg_degen m = SG_DEGEN_MASK; m <= SG_DEGEN_LORENTZ; m++) {
        cr_expect_eq(eigh_bwd(SG_F64, 3, n, w, V, gW, gV, m, 0, gA), SG_OK, "mode %d: %s", (int)m, sg_last_error(ctx));
        cr_expect(all_finite(gA, 3 * n * n));
    }
}

/* A loss that sees a tied cluster only through its projector (tr(P B), Σλ over the cluster) has an
   exact, finite gradient; MASK (and LORENTZ, TAYLOR with positive spectra) must give it. */
Test(grad, eigh_tied_cluster_projector_loss_matches_fd)
{
    tu_rng r = tu_seed(15);
    int n = 5;
    double A[NN], Q[NN], wt[] = {1, 2, 2, 4, 8};
    sym_from(&r, n, wt, A, Q);
    eloss p;
    rand_eloss(&r, n, &p);
    p.c[2] = p.c[1], p.d[2] = p.d[1], p.e[1] = p.e[2] = 0;
    struct { sg_degen m; double prm; } cases[] = {{SG_DEGEN_MASK, 0}, {SG_DEGEN_LORENTZ, 0}, {SG_DEGEN_TAYLOR, 60}};
    for (int c = 0; c < 3; c++) {
        /* eigenpairs by dsyevd (tie broken at 1e-16) ... */
        double e = eigh_check(&p, A, cases[c].m, cases[c].prm, 1e-6, &r, 1, 1);
        cr_expect_lt(e, 1e-6, "mode %d: rel err %g", (int)cases[c].m, e);
        /* ... and the exact tie (W exactly equal, V = Q) */
        double gW[NMAX], gV[NN], gA[NN];
        eloss_grad(&p, Q, gW, gV);
        cr_assert_eq(eigh_bwd(SG_F64, 1, n, wt, Q, gW, gV, cases[c].m, cases[c].prm, gA), SG_OK, "%s",
                     sg_last_error(ctx));
        cr_assert(all_finite(gA, n * n));
        e = fd_err(eloss_A, &p, A, gA, n, n, 1, 1e-6, &r);
        cr_expect_lt(e, 1e-6, "exact tie, mode %d: rel err %g", (int)cases[c].m, e);
    }
}

/* Seed 001 (a blog) backpropagates through eigenvectors with
       M = Aᵀ − diag(λ);  dV_dA = solve(M, gVᵀ V)ᵀ;  gA = −gV · dV_dA.
   It is wrong: differentiating A v_i = λ_i v_i gives, per eigenpair, (A − λ_i I) dv_i = (dλ_i − dA) v_i, a
   different singular system for each column; A − diag(λ) subtracts λ_i from the diagonal entry i, which
   is none of them. It also ignores normalisation/gauge (the adjoint must project gV through
   skew(VᵀgV)) and never pairs the solve with Vᵀ(·)V. The correct adjoint is V (skew(VᵀgV) ⊘ E) Vᵀ. The
   blog's own check perturbs A by εI, which moves no eigenvector, so it cannot detect the error. */
Test(grad, seed001_blog_formula_disagrees_with_fd)
{
    tu_rng r = tu_seed(16);
    int n = 4;
    double A[NN], Q[NN], w0[] = {-1.3, 0.2, 1.1, 2.7};
    sym_from(&r, n, w0, A, Q);
    eloss p;
    rand_eloss(&r, n, &p);
    memset(p.c, 0, sizeof p.c); /* an eigenvector-only loss, like the blog's */
    double w[NMAX], V[NN], gW[NMAX], gV[NN], gA[NN];
    ref_eigh(n, A, w, V);
    eloss_grad(&p, V, gW, gV);
    cr_assert_eq(eigh_bwd(SG_F64, 1, n, w, V, NULL, gV, SG_DEGEN_EXACT, 0, gA), SG_OK);
    double ours = fd_err(eloss_A, &p, A, gA, n, n, 1, 1e-6, &r);

    double M[NN], Bm[NN], X[NN], Xt[NN], gblog[NN];
    lapack_int piv[NMAX];
    for (int j = 0; j < n; j++)
        for (int i = 0; i < n; i++) M[i + j * n] = A[j + i * n] - (i == j ? w[i] : 0);
    tu_gemm(1, 0, n, n, n, gV, V, Bm); /* b = gVᵀ V */
    memcpy(X, Bm, sizeof X);
    cr_assert_eq(LAPACKE_dgesv(LAPACK_COL_MAJOR, n, n, M, n, piv, X, n), 0);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < n; i++) Xt[i + j * n] = X[j + i * n];
    tu_gemm(0, 0, n, n, n, gV, Xt, gblog);
    for (int i = 0; i < n * n; i++) gblog[i] = -gblog[i];
    double blog = fd_err(eloss_A, &p, A, gblog, n, n, 1, 1e-6, &r);
    cr_expect_lt(ours, 1e-6, "ours: %g", ours);
    cr_expect_gt(blog, 0.1, "the blog formula must disagree with FD (rel err %g)", blog);
}

/* ---- SVD: L = Σ c_j σ_j + Σ d_j u_jᵀ B v_j + Σ e_j u_jᵀ C u_j + Σ f_j v_jᵀ Dn v_j (joint-sign invariant;
   with equal coefficients on a tied cluster, invariant to joint rotations within it). */
typedef struct {
    int m, n, k;
    double c[NMAX], d[NMAX], e[NMAX], f[NMAX], B[NN], C[NN], Dn[NN];
} sloss;

static void rand_sloss(tu_rng *r, int m, int n, sloss *p)
{
    p->m = m, p->n = n, p->k = m < n ? m : n;
    tu_fill_normal(r, p->c, p->k);
    tu_fill_normal(r, p->d, p->k);
    tu_fill_normal(r, p->e, p->k);
    tu_fill_normal(r, p->f, p->k);
    tu_fill_normal(r, p->B, m * n);
    tu_fill_normal(r, p->C, m * m);
    tu_fill_normal(r, p->Dn, n * n);
}

static double sloss_usv(const sloss *p, const double *s, const double *U, const double *V)
{
    int m = p->m, n = p->n;
    double L = 0, t[NMAX], t2[NMAX];
    for (int j = 0; j < p->k; j++) {
        const double *u = U + j * m, *v = V + j * n;
        tu_gemm(0, 0, m, 1, n, p->B, v, t);
        tu_gemm(0, 0, m, 1, m, p->C, u, t2);
        L += p->c[j] * s[j] + p->d[j] * dot(u, t, m) + p->e[j] * dot(u, t2, m);
        tu_gemm(0, 0, n, 1, n, p->Dn, v, t);
        L += p->f[j] * dot(v, t, n);
    }
    return L;
}

static double sloss_A(const double *A, const void *vp)
{
    const sloss *p = vp;
    double s[NMAX], U[NN], V[NN];
    ref_svd(p->m, p->n, A, 0, s, U, V);
    return sloss_usv(p, s, U, V);
}

/* sloss + tr(M W⊥W⊥ᵀ), W⊥ the complement of U_k (m > n) or V_k (m < n), from the projector I − W_kW_kᵀ:
   the loss a user of full_matrices' extra columns can have (it does not depend on the basis chosen). */
typedef struct {
    const sloss *p;
    double M[NN];
} closs;

static double closs_A(const double *A, const void *vp)
{
    const closs *q = vp;
    const sloss *p = q->p;
    int m = p->m, n = p->n, k = p->k, c = m > n ? m : n;
    double s[NMAX], U[NN], V[NN], L;
    ref_svd(m, n, A, 0, s, U, V);
    L = sloss_usv(p, s, U, V);
    if (m == n) return L;
    const double *W = m > n ? U : V;
    for (int a = 0; a < c; a++) { /* tr(M (I − W Wᵀ)) = Σ_a M_aa − Σ_ab M_ab (W Wᵀ)_ba */
        L += q->M[a + a * c];
        for (int b = 0; b < c; b++) {
            double wb = 0;
            for (int j = 0; j < k; j++) wb += W[b + j * c] * W[a + j * c];
            L -= q->M[a + b * c] * wb;
        }
    }
    return L;
}

/* gU: m×k, gV: n×k (ld m, n: the first k columns of full factors). */
static void sloss_grad(const sloss *p, const double *U, const double *V, double *gS, double *gU, double *gV)
{
    int m = p->m, n = p->n;
    for (int j = 0; j < p->k; j++) {
        const double *u = U + j * m, *v = V + j * n;
        gS[j] = p->c[j];
        for (int a = 0; a < m; a++) {
            double bv = 0, cu = 0;
            for (int b = 0; b < n; b++) bv += p->B[a + b * m] * v[b];
            for (int b = 0; b < m; b++) cu += (p->C[a + b * m] + p->C[b + a * m]) * u[b];
            gU[a + j * m] = p->d[j] * bv + p->e[j] * cu;
        }
        for (int a = 0; a < n; a++) {
            double bu = 0, dv = 0;
            for (int b = 0; b < m; b++) bu += p->B[b + a * m] * u[b];
            for (int b = 0; b < n; b++) dv += (p->Dn[a + b * n] + p->Dn[b + a * n]) * v[b];
            gV[a + j * n] = p->d[j] * bu + p->f[j] * dv;
        }
    }
}

static sg_status svd_bwd(sg_dtype t, int m, int n, int full, const double *U, const double *s, const double *V,
                         const double *gU, const double *gS, const double *gV, sg_degen mode, double param,
                         double *gA)
{
    int k = m < n ? m : n, uc = full ? m : k, vc = full ? n : k;
    sg_mat Um = mk(t, 1, m, uc, U), Sm = mk(t, 1, k, 1, s), Vm = mk(t, 1, n, vc, V), GU = mk(t, 1, m, uc, gU),
           GS = mk(t, 1, k, 1, gS), GV = mk(t, 1, n, vc, gV), GA = mk(t, 1, m, n, NULL);
    sg_status st = sg_svd_backward(ctx, &Um, &Sm, &Vm, gU ? &GU : NULL, gS ? &GS : NULL, gV ? &GV : NULL, mode,
                                   param, &GA);
    tu_from_mat(&GA, gA);
    tu_free_mat(&Um), tu_free_mat(&Sm), tu_free_mat(&Vm), tu_free_mat(&GU), tu_free_mat(&GS), tu_free_mat(&GV),
        tu_free_mat(&GA);
    return st;
}

static const double svals[] = {3.1, 2.2, 1.4, 0.8, 0.3, 0.1};

Test(grad, svd_backward_shapes_economy_full)
{
    tu_rng r = tu_seed(21);
    int shapes[][2] = {{5, 5}, {7, 4}, {4, 7}, {6, 1}, {1, 5}};
    for (int sh = 0; sh < 5; sh++) {
        int m = shapes[sh][0], n = shapes[sh][1], k = m < n ? m : n;
        double A[NN], s[NMAX], U[NN], V[NN], gS[NMAX], gU[NN], gV[NN], gA[NN], gAf[NN];
        tu_mat_with_singular_values(&r, m, n, svals, A);
        sloss p;
        rand_sloss(&r, m, n, &p);
        ref_svd(m, n, A, 0, s, U, V);
        sloss_grad(&p, U, V, gS, gU, gV);
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U, s, V, gU, gS, gV, SG_DEGEN_EXACT, 0, gA), SG_OK, "%s",
                     sg_last_error(ctx));
        double e = fd_err(sloss_A, &p, A, gA, m, n, 0, 1e-6, &r);
        cr_expect_lt(e, 1e-6, "%d×%d economy: rel err %g", m, n, e);
        double gm[NN];
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U, s, V, gU, gS, gV, SG_DEGEN_MASK, 0, gm), SG_OK);
        cr_expect_lt(tu_diff_norm(gm, gA, m * n), 1e-13 * tu_norm(gA, m * n), "mask = exact on distinct σ");
        /* LORENTZ (default param: bias param/E² ≤ 2e-8 here) and TAYLOR with 80 terms (ratios of squared σ's
           ≤ (2.2/3.1)² = 0.51, so the truncation 0.51^80 ≈ 1e-23 is invisible) on the economy path */
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U, s, V, gU, gS, gV, SG_DEGEN_LORENTZ, 0, gm), SG_OK, "%s",
                     sg_last_error(ctx));
        e = fd_err(sloss_A, &p, A, gm, m, n, 0, 1e-6, &r);
        cr_expect_lt(e, 1e-6, "%d×%d economy, lorentz: rel err %g", m, n, e);
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U, s, V, gU, gS, gV, SG_DEGEN_TAYLOR, 80, gm), SG_OK, "%s",
                     sg_last_error(ctx));
        e = fd_err(sloss_A, &p, A, gm, m, n, 0, 1e-6, &r);
        cr_expect_lt(e, 1e-6, "%d×%d economy, taylor 80: rel err %g", m, n, e);

        /* full_matrices: L + tr(M U⊥U⊥ᵀ) (tall) or + tr(M V⊥V⊥ᵀ) (wide), a loss of the extra columns that
           does not depend on which basis of the complement they are; the old code (PyTorch's rule) dropped
           their cotangent (M + Mᵀ)U⊥: rel err 0.3–0.55 here */
        double Uf[NN], Vf[NN], sf[NMAX], gUf[NN], gVf[NN];
        ref_svd(m, n, A, 1, sf, Uf, Vf);
        sloss_grad(&p, Uf, Vf, gS, gUf, gVf); /* fills the first k columns */
        closs cl = {&p, {0}};
        int tall = m > n, c = tall ? m : n;
        tu_fill_normal(&r, cl.M, c * c);
        const double *W = tall ? Uf : Vf;
        double *gW = tall ? gUf : gVf;
        for (int j = k; j < c; j++) /* g(W⊥) = (M + Mᵀ) W⊥ (the other factor is square: no extra columns) */
            for (int a = 0; a < c; a++) {
                double acc = 0;
                for (int b = 0; b < c; b++) acc += (cl.M[a + b * c] + cl.M[b + a * c]) * W[b + j * c];
                gW[a + j * c] = acc;
            }
        cr_assert_eq(svd_bwd(SG_F64, m, n, 1, Uf, sf, Vf, gUf, gS, gVf, SG_DEGEN_EXACT, 0, gAf), SG_OK, "%s",
                     sg_last_error(ctx));
        e = fd_err(closs_A, &cl, A, gAf, m, n, 0, 1e-6, &r);
        cr_expect_lt(e, 1e-6, "%d×%d full: rel err %g", m, n, e);
        if (m != n) { /* and the complement term alone */
            sloss z = p;
            memset(z.c, 0, sizeof z.c), memset(z.d, 0, sizeof z.d), memset(z.e, 0, sizeof z.e), memset(z.f, 0, sizeof z.f);
            closs zl = cl;
            zl.p = &z;
            for (int j = 0; j < k; j++) memset(gW + j * c, 0, sizeof(double) * c);
            cr_assert_eq(svd_bwd(SG_F64, m, n, 1, Uf, sf, Vf, tall ? gUf : NULL, NULL, tall ? NULL : gVf,
                                 SG_DEGEN_EXACT, 0, gAf), SG_OK, "%s", sg_last_error(ctx));
            e = fd_err(closs_A, &zl, A, gAf, m, n, 0, 1e-6, &r);
            cr_expect_lt(e, 1e-6, "%d×%d full, complement only: rel err %g", m, n, e);
        }

        /* one cotangent at a time (each rectangular branch alone) */
        sloss q = p;
        memset(q.d, 0, sizeof q.d), memset(q.e, 0, sizeof q.e), memset(q.f, 0, sizeof q.f);
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U, s, V, NULL, gS, NULL, SG_DEGEN_EXACT, 0, gA), SG_OK);
        cr_expect_lt(fd_err(sloss_A, &q, A, gA, m, n, 0, 1e-6, &r), 1e-6, "%d×%d gS only", m, n);
        q = p;
        memset(q.c, 0, sizeof q.c), memset(q.d, 0, sizeof q.d), memset(q.f, 0, sizeof q.f);
        sloss_grad(&q, U, V, gS, gU, gV);
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U, s, V, gU, NULL, NULL, SG_DEGEN_EXACT, 0, gA), SG_OK);
        cr_expect_lt(fd_err(sloss_A, &q, A, gA, m, n, 0, 1e-6, &r), 1e-6, "%d×%d gU only", m, n);
        q = p;
        memset(q.c, 0, sizeof q.c), memset(q.d, 0, sizeof q.d), memset(q.e, 0, sizeof q.e);
        sloss_grad(&q, U, V, gS, gU, gV);
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U, s, V, NULL, NULL, gV, SG_DEGEN_EXACT, 0, gA), SG_OK);
        cr_expect_lt(fd_err(sloss_A, &q, A, gA, m, n, 0, 1e-6, &r), 1e-6, "%d×%d gV only", m, n);
    }
}

/* σ² of 1e200 overflows and of 1e-200 underflows to a fake tie; the scaled E must not care.
   L(tA) = L(A) for losses of U, V only, so gA(tA) = gA(A)/t. */
Test(grad, svd_backward_huge_and_tiny_sigma)
{
    tu_rng r = tu_seed(22);
    int m = 5, n = 4;
    double A[NN], s[NMAX], U[NN], V[NN], gS[NMAX], gU[NN], gV[NN], g1[NN];
    tu_mat_with_singular_values(&r, m, n, svals, A);
    sloss p;
    rand_sloss(&r, m, n, &p);
    memset(p.c, 0, sizeof p.c);
    ref_svd(m, n, A, 0, s, U, V);
    sloss_grad(&p, U, V, gS, gU, gV);
    cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U, s, V, gU, NULL, gV, SG_DEGEN_EXACT, 0, g1), SG_OK);
    /* 5e307: σ1 + σ2 = 2.65e308 overflows, so sums must be of scaled σ's */
    double ts[] = {1e200, 1e-200, 5e307};
    for (int i = 0; i < 3; i++) {
        double st[NMAX], gt[NN];
        for (int j = 0; j < n; j++) st[j] = s[j] * ts[i];
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U, st, V, gU, NULL, gV, SG_DEGEN_EXACT, 0, gt), SG_OK, "t=%g: %s", ts[i],
                     sg_last_error(ctx));
        for (int j = 0; j < m * n; j++) gt[j] *= ts[i];
        cr_expect_lt(tu_diff_norm(gt, g1, m * n), 1e-12 * tu_norm(g1, m * n), "t = %g", ts[i]);
    }
    /* float32 near FLT_MAX (σ1 + σ2 = 5.3e38 > 3.4e38): finite and equal to the unscaled result / t */
    double g32[NN], g32t[NN], st[NMAX];
    cr_assert_eq(svd_bwd(SG_F32, m, n, 0, U, s, V, gU, NULL, gV, SG_DEGEN_EXACT, 0, g32), SG_OK);
    for (int j = 0; j < n; j++) st[j] = s[j] * 1e38;
    cr_assert_eq(svd_bwd(SG_F32, m, n, 0, U, st, V, gU, NULL, gV, SG_DEGEN_EXACT, 0, g32t), SG_OK, "%s",
                 sg_last_error(ctx));
    for (int j = 0; j < m * n; j++) g32t[j] *= 1e38;
    cr_expect_lt(tu_diff_norm(g32t, g32, m * n), 1e-3 * tu_norm(g32, m * n), "f32, t = 1e38");
}

/* Exactly tied σ: EXACT reports; MASK gives the exact gradient of a loss invariant to joint rotations
   of the tied pairs (this needs the mode on the singular part ½(a+d)/(σk−σj) only). */
Test(grad, svd_backward_ties)
{
    tu_rng r = tu_seed(23);
    int shapes[][2] = {{4, 4}, {6, 4}, {4, 6}};
    for (int sh = 0; sh < 3; sh++) {
        int m = shapes[sh][0], n = shapes[sh][1], k = 4;
        double s[] = {3, 2, 2, 1}, Qm[NN], Qn[NN], A[NN], gS[NMAX], gU[NN], gV[NN], gA[NN];
        tu_orthogonal(&r, m, Qm), tu_orthogonal(&r, n, Qn);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double a = 0;
                for (int l = 0; l < k; l++) a += Qm[i + l * m] * s[l] * Qn[j + l * n];
                A[i + j * m] = a;
            }
        sloss p;
        rand_sloss(&r, m, n, &p);
        p.c[2] = p.c[1], p.d[2] = p.d[1], p.e[2] = p.e[1], p.f[2] = p.f[1];
        sloss_grad(&p, Qm, Qn, gS, gU, gV); /* exact factors: U = Qm[:, :k], V = Qn[:, :k] */
        cr_expect_eq(svd_bwd(SG_F64, m, n, 0, Qm, s, Qn, gU, gS, gV, SG_DEGEN_EXACT, 0, gA), SG_ERR_DEGENERATE);
        cr_expect(strstr(sg_last_error(ctx), "tied") != NULL, "%s", sg_last_error(ctx));
        cr_expect_eq(sg_failed_index(ctx), 0);
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, Qm, s, Qn, gU, gS, gV, SG_DEGEN_MASK, 0, gA), SG_OK, "%s",
                     sg_last_error(ctx));
        double e = fd_err(sloss_A, &p, A, gA, m, n, 0, 1e-6, &r);
        cr_expect_lt(e, 1e-6, "%d×%d mask, exact tie: rel err %g", m, n, e);
        /* LORENTZ: E/(E² + param) is exactly 0 at the tie (like MASK) and ≈ 1/E elsewhere (bias ≤ 1e-10 for
           these gaps), so it gives the same exact gradient. TAYLOR: at the tie F = K/σ² (finite, not 1/E),
           but it multiplies ½(a+d), which this loss makes 0 up to rounding; with K = 80 the other pairs
           (ratios ≤ 4/9) are exact too. The default K = 9 leaves (4/9)^9 ≈ 7e-4 on them: finite only. */
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, Qm, s, Qn, gU, gS, gV, SG_DEGEN_LORENTZ, 0, gA), SG_OK, "%s",
                     sg_last_error(ctx));
        cr_assert(all_finite(gA, m * n));
        e = fd_err(sloss_A, &p, A, gA, m, n, 0, 1e-6, &r);
        cr_expect_lt(e, 1e-6, "%d×%d lorentz, exact tie: rel err %g", m, n, e);
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, Qm, s, Qn, gU, gS, gV, SG_DEGEN_TAYLOR, 80, gA), SG_OK, "%s",
                     sg_last_error(ctx));
        cr_assert(all_finite(gA, m * n));
        e = fd_err(sloss_A, &p, A, gA, m, n, 0, 1e-6, &r);
        cr_expect_lt(e, 1e-6, "%d×%d taylor 80, exact tie: rel err %g", m, n, e);
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, Qm, s, Qn, gU, gS, gV, SG_DEGEN_TAYLOR, 0, gA), SG_OK, "%s",
                     sg_last_error(ctx));
        cr_expect(all_finite(gA, m * n), "%d×%d taylor (default K), exact tie: must stay finite", m, n);
        /* dgesdd factors (tie broken at rounding level) */
        double s2[NMAX], U2[NN], V2[NN];
        ref_svd(m, n, A, 0, s2, U2, V2);
        sloss_grad(&p, U2, V2, gS, gU, gV);
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U2, s2, V2, gU, gS, gV, SG_DEGEN_MASK, 0, gA), SG_OK);
        e = fd_err(sloss_A, &p, A, gA, m, n, 0, 1e-6, &r);
        cr_expect_lt(e, 1e-6, "%d×%d mask, dgesdd factors: rel err %g", m, n, e);
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U2, s2, V2, gU, gS, gV, SG_DEGEN_LORENTZ, 0, gA), SG_OK);
        e = fd_err(sloss_A, &p, A, gA, m, n, 0, 1e-6, &r);
        cr_expect_lt(e, 1e-6, "%d×%d lorentz, dgesdd factors: rel err %g", m, n, e);
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U2, s2, V2, gU, gS, gV, SG_DEGEN_TAYLOR, 0, gA), SG_OK);
        cr_expect(all_finite(gA, m * n), "%d×%d taylor, dgesdd factors: must stay finite", m, n);
    }
}

/* A = Qm[:, :k] diag(s) Qn[:, :k]ᵀ (column-major m×n). */
static void usv(int m, int n, int k, const double *Qm, const double *s, const double *Qn, double *A)
{
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double a = 0;
            for (int l = 0; l < k; l++) a += Qm[i + l * m] * s[l] * Qn[j + l * n];
            A[i + j * m] = a;
        }
}

/* svd_backward's formula (m >= n, economy factors as given) in long double: G_rc = (a σc + σr d) /
   ((σc − σr)(σc + σr)), a = skew(UᵀgU)_rc, d = skew(VᵀgV)_rc, skew(X) = X − Xᵀ, G_rr = gS_r;
   gA = U G Vᵀ + (I − UUᵀ) gU Σ⁻¹ Vᵀ. σc − σr of two doubles is exact here. */
static void svd_bwd_ref_ld(int m, int n, const double *U, const double *s, const double *V, const double *gU,
                           const double *gS, const double *gV, double *gA)
{
    int k = n;
    long double P[NN], Q[NN], G[NN], X[NN], R[NN];
    for (int c = 0; c < k; c++)
        for (int r = 0; r < k; r++) {
            long double p = 0, q = 0;
            for (int i = 0; i < m; i++) p += (long double)U[i + r * m] * gU[i + c * m];
            for (int i = 0; i < n; i++) q += (long double)V[i + r * n] * gV[i + c * n];
            P[r + c * k] = p, Q[r + c * k] = q;
        }
    for (int c = 0; c < k; c++)
        for (int r = 0; r < k; r++) {
            long double a = P[r + c * k] - P[c + r * k], d = Q[r + c * k] - Q[c + r * k], sr = s[r], sc = s[c];
            G[r + c * k] = r == c ? (long double)gS[r] : (a * sc + sr * d) / ((sc - sr) * (sc + sr));
        }
    /* X = U G + (I − UUᵀ) gU Σ⁻¹ (m×k), then gA = X Vᵀ */
    for (int c = 0; c < k; c++) {
        long double ug[NMAX];
        for (int l = 0; l < k; l++) {
            long double t = 0;
            for (int i = 0; i < m; i++) t += (long double)U[i + l * m] * gU[i + c * m];
            ug[l] = t / s[c];
        }
        for (int i = 0; i < m; i++) {
            long double t = 0, pr = 0;
            for (int l = 0; l < k; l++) t += (long double)U[i + l * m] * G[l + c * k], pr += U[i + l * m] * ug[l];
            X[i + c * m] = t + (m > n ? (long double)gU[i + c * m] / s[c] - pr : 0);
        }
    }
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            long double t = 0;
            for (int l = 0; l < k; l++) t += X[i + l * m] * V[j + l * n];
            R[i + j * m] = t;
        }
    for (int i = 0; i < m * n; i++) gA[i] = (double)R[i];
}

/* The pre-fix library formula, kept here as the counterexample: σ's divided by σmax and squared
   before the difference, so E = scc² − sr² keeps only eps·σ²/E of its relative accuracy. Square input. */
static void svd_bwd_old_squared_first(int n, const double *U, const double *s, const double *V, const double *gU,
                                      const double *gS, const double *gV, double *gA)
{
    double P[NN], Q[NN], G[NN], X[NN], sc = s[0];
    tu_gemm(1, 0, n, n, n, U, gU, P);
    tu_gemm(1, 0, n, n, n, V, gV, Q);
    for (int c = 0; c < n; c++)
        for (int r = 0; r < n; r++) {
            double sr = s[r] / sc, scc = s[c] / sc, a = P[r + c * n] - P[c + r * n], d = Q[r + c * n] - Q[c + r * n];
            double F = 1 / (scc * scc - sr * sr), sum = sr + scc;
            G[r + c * n] = r == c ? gS[r] : ((a + d) * 0.5 * sum * F + (a - d) * 0.5 / sum) / sc;
        }
    tu_gemm(0, 0, n, n, n, U, G, X);
    tu_gemm(0, 1, n, n, n, X, V, gA);
}

/* σ2 − σ3 = 1e-12 (relative gap 1.4e-12), exact mode: the backward must keep full relative accuracy
   (it forms E = ((σc−σr)/σmax)(σc/σmax + σr/σmax), difference first). The old squared-first E lost
   eps/(relative gap) of it (2.2e-5 in gA here); that formula is evaluated here too and must be visibly off, so the
   test separates the two. */
Test(grad, svd_backward_near_tie_precision)
{
    tu_rng r = tu_seed(24);
    const double s[] = {3.1, 0.7 + 1e-12, 0.7, 0.2};
    int shapes[][2] = {{4, 4}, {6, 4}};
    for (int sh = 0; sh < 2; sh++) {
        int m = shapes[sh][0], n = shapes[sh][1], k = 4;
        double Qm[NN], Qn[NN], gU[NN], gV[NN], gS[NMAX], gA[NN], ref[NN];
        tu_orthogonal(&r, m, Qm), tu_orthogonal(&r, n, Qn); /* U = Qm[:, :k], V = Qn */
        tu_fill_normal(&r, gU, m * k), tu_fill_normal(&r, gV, n * k), tu_fill_normal(&r, gS, k);
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, Qm, s, Qn, gU, gS, gV, SG_DEGEN_EXACT, 0, gA), SG_OK, "%s",
                     sg_last_error(ctx));
        cr_assert(all_finite(gA, m * n));
        svd_bwd_ref_ld(m, n, Qm, s, Qn, gU, gS, gV, ref);
        double nr = tu_norm(ref, m * n), e = tu_diff_norm(gA, ref, m * n) / nr;
        cr_expect_gt(nr, 1e10, "the near-tie pair must dominate (||gA|| %g)", nr);
        cr_expect_lt(e, 1e-10, "%d×%d: rel err %g vs long double", m, n, e);
        if (m == n) {
            double old[NN];
            svd_bwd_old_squared_first(n, Qm, s, Qn, gU, gS, gV, old);
            double eo = tu_diff_norm(old, ref, m * n) / nr;
            cr_expect_gt(eo, 1e-6, "the old squared-first formula should be visibly off here: %g", eo);
            cr_log_info("svd near tie %d×%d: rel err %.3g (old squared-first formula: %.3g)", m, n, e, eo);
        } else
            cr_log_info("svd near tie %d×%d: rel err %.3g", m, n, e);
    }
}

/* Relative gap 1e-4 (not a tie): EXACT is exact; MASK's tolerance (1e3·eps·σmax²) must not touch it;
   LORENTZ with param 1e-24 ≪ E² ≈ 4e-10 (E in units of σmax²) is exact to 1e-14, while the default 1e-12 is
   visibly biased at this gap. Gradient ~1e4: h = 1e-7 as for eigh. */
Test(grad, svd_backward_near_degenerate_gap_1e4)
{
    tu_rng r = tu_seed(25);
    int shapes[][2] = {{4, 4}, {6, 4}, {4, 6}};
    for (int sh = 0; sh < 3; sh++) {
        int m = shapes[sh][0], n = shapes[sh][1], k = 4;
        double s0[] = {3.1, 1 + 1e-4, 1, 0.4}, Qm[NN], Qn[NN], A[NN], s[NMAX], U[NN], V[NN], gS[NMAX], gU[NN], gV[NN],
               gA[NN];
        tu_orthogonal(&r, m, Qm), tu_orthogonal(&r, n, Qn);
        usv(m, n, k, Qm, s0, Qn, A);
        sloss p;
        rand_sloss(&r, m, n, &p);
        ref_svd(m, n, A, 0, s, U, V);
        sloss_grad(&p, U, V, gS, gU, gV);
        struct { sg_degen m; double prm; } cases[] = {{SG_DEGEN_EXACT, 0}, {SG_DEGEN_MASK, 0}, {SG_DEGEN_LORENTZ, 1e-24}};
        for (int c = 0; c < 3; c++) {
            cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U, s, V, gU, gS, gV, cases[c].m, cases[c].prm, gA), SG_OK, "%s",
                         sg_last_error(ctx));
            cr_assert(all_finite(gA, m * n));
            double e = fd_err(sloss_A, &p, A, gA, m, n, 0, 1e-7, &r);
            cr_expect_lt(e, 1e-5, "%d×%d mode %d: rel err %g", m, n, (int)cases[c].m, e);
        }
        cr_assert_eq(svd_bwd(SG_F64, m, n, 0, U, s, V, gU, gS, gV, SG_DEGEN_LORENTZ, 0, gA), SG_OK);
        double e = fd_err(sloss_A, &p, A, gA, m, n, 0, 1e-7, &r);
        cr_expect_gt(e, 1e-4, "%d×%d lorentz default param must be visibly biased at gap 1e-4: %g", m, n, e);
    }
}

/* ---- matrix functions ------------------------------------------------------------------------- */
static double cb_f(double x, void *u) { return *(double *)u * x * x * x + sin(x); }
static double cb_df(double x, void *u) { return 3 * *(double *)u * x * x + cos(x); }
static double cb_a = 0.25;

static double fscalar(const sg_fn *fn, double x)
{
    switch (fn->kind) {
    case SG_FN_SQRT: return sqrt(x);
    case SG_FN_LOG: return log(x);
    case SG_FN_EXP: return exp(x);
    case SG_FN_POW: return pow(x, fn->p);
    default: return fn->f(x, fn->user);
    }
}

/* f and f' in long double (references only) */
static long double fval_ld(const sg_fn *fn, long double x)
{
    switch (fn->kind) {
    case SG_FN_SQRT: return sqrtl(x);
    case SG_FN_LOG: return logl(x);
    case SG_FN_EXP: return expl(x);
    case SG_FN_POW: return powl(x, fn->p);
    default: return *(double *)fn->user * x * x * x + sinl(x);
    }
}

static long double fder_ld(const sg_fn *fn, long double x)
{
    switch (fn->kind) {
    case SG_FN_SQRT: return 0.5L / sqrtl(x);
    case SG_FN_LOG: return 1 / x;
    case SG_FN_EXP: return expl(x);
    case SG_FN_POW: return fn->p * powl(x, fn->p - 1);
    default: return 3 * *(double *)fn->user * x * x + cosl(x);
    }
}

typedef struct {
    int n;
    const sg_fn *fn;
    double G[NN];
} mloss; /* L = <G, f(A)>, f(A) = V f(Λ) Vᵀ by dsyevd */

static void fA_ref(int n, const sg_fn *fn, const double *w, const double *Q, double *F)
{
    for (int j = 0; j < n; j++)
        for (int i = 0; i < n; i++) {
            double s = 0;
            for (int l = 0; l < n; l++) s += Q[i + l * n] * fscalar(fn, w[l]) * Q[j + l * n];
            F[i + j * n] = s;
        }
}

static double mloss_A(const double *A, const void *vp)
{
    const mloss *p = vp;
    double w[NMAX], V[NN], F[NN];
    ref_eigh(p->n, A, w, V);
    fA_ref(p->n, p->fn, w, V, F);
    return dot(p->G, F, p->n * p->n);
}

static sg_status matfunc_bwd(sg_dtype t, int n, const double *w, const double *V, const sg_fn *fn,
                             const double *gF, double *gA)
{
    sg_mat W = mk(t, 1, n, 1, w), Vm = mk(t, 1, n, n, V), GF = mk(t, 1, n, n, gF), GA = mk(t, 1, n, n, NULL);
    sg_status s = sg_matfunc_backward(ctx, &W, &Vm, fn, &GF, &GA);
    tu_from_mat(&GA, gA);
    tu_free_mat(&W), tu_free_mat(&Vm), tu_free_mat(&GF), tu_free_mat(&GA);
    return s;
}

static const sg_fn fns[] = {
    {SG_FN_SQRT, 0, NULL, NULL, NULL}, {SG_FN_LOG, 0, NULL, NULL, NULL},     {SG_FN_EXP, 0, NULL, NULL, NULL},
    {SG_FN_POW, 1.5, NULL, NULL, NULL}, {SG_FN_POW, -0.5, NULL, NULL, NULL}, {SG_FN_POW, 3, NULL, NULL, NULL},
    {SG_FN_CALLBACK, 0, cb_f, cb_df, &cb_a},
};
#define NFNS 7
static int positive_only(const sg_fn *fn) { return fn->kind <= SG_FN_LOG || (fn->kind == SG_FN_POW && fn->p != 3); }

Test(grad, matfunc_forward_vs_construction)
{
    tu_rng r = tu_seed(31);
    int n = 5, nb = 2;
    for (int f = 0; f < NFNS; f++) {
        double A[2 * NN], Q[2 * NN], F[2 * NN], Fr[NN];
        double wp[] = {0.3, 0.9, 1.7, 2.2, 4.0}, wm[] = {-1.5, -0.2, 0.4, 1.1, 2.0};
        const double *w = positive_only(&fns[f]) ? wp : wm;
        for (int b = 0; b < nb; b++) sym_from(&r, n, w, A + b * n * n, Q + b * n * n);
        sg_mat Am = mk(SG_F64, nb, n, n, A), Fm = mk(SG_F64, nb, n, n, NULL);
        cr_assert_eq(sg_matfunc(ctx, &Am, &fns[f], &Fm, NULL, NULL), SG_OK, "fn %d: %s", f, sg_last_error(ctx));
        tu_from_mat(&Fm, F);
        for (int b = 0; b < nb; b++) {
            fA_ref(n, &fns[f], w, Q + b * n * n, Fr);
            cr_expect_lt(tu_diff_norm(F + b * n * n, Fr, n * n), 1e-12 * tu_norm(Fr, n * n), "fn %d matrix %d", f, b);
        }
        tu_free_mat(&Am), tu_free_mat(&Fm);
    }
}

/* Daleckii–Krein vs FD of <G, f(A)>, on distinct and on exactly tied spectra (f(A) is smooth at ties:
   the gradient must be finite and match). */
Test(grad, matfunc_backward_fd_distinct_and_tied)
{
    tu_rng r = tu_seed(32);
    int n = 5;
    double wdp[] = {0.3, 0.9, 1.7, 2.2, 4.0}, wdm[] = {-1.5, -0.2, 0.4, 1.1, 2.0};
    double wtp[] = {0.5, 1.5, 1.5, 1.5, 3.0}, wtm[] = {-1.0, 0.5, 0.5, 2.0, 2.0};
    for (int f = 0; f < NFNS; f++)
        for (int tied = 0; tied < 2; tied++) {
            int pos = positive_only(&fns[f]);
            const double *w0 = tied ? (pos ? wtp : wtm) : (pos ? wdp : wdm);
            double A[NN], Q[NN], w[NMAX], V[NN], gA[NN];
            sym_from(&r, n, w0, A, Q);
            mloss p = {n, &fns[f], {0}};
            tu_fill_normal(&r, p.G, n * n); /* not symmetric: the backward symmetrizes */
            ref_eigh(n, A, w, V);
            cr_assert_eq(matfunc_bwd(SG_F64, n, w, V, &fns[f], p.G, gA), SG_OK, "fn %d: %s", f, sg_last_error(ctx));
            cr_assert(all_finite(gA, n * n));
            double e = fd_err(mloss_A, &p, A, gA, n, n, 1, 1e-6, &r);
            cr_expect_lt(e, 1e-6, "fn %d tied %d: rel err %g", f, tied, e);
            if (tied) { /* exactly equal eigenvalues (W given as constructed, V = Q) */
                cr_assert_eq(matfunc_bwd(SG_F64, n, w0, Q, &fns[f], p.G, gA), SG_OK);
                cr_assert(all_finite(gA, n * n));
                e = fd_err(mloss_A, &p, A, gA, n, n, 1, 1e-6, &r);
                cr_expect_lt(e, 1e-6, "fn %d exact tie: rel err %g", f, e);
            }
        }
}

/* Near-degenerate spectra: gaps 1e-5·λ (quotient), 1e-7·λ (midpoint derivative) and 9.9e-6·λ (quotient) straddle
   SG_DIVDIFF_REL = 6e-6, so both branches of the divided difference and the switch between them are used.
   FD of <G, f(A)> (f(A) stays smooth however close the eigenvalues), and a long double Daleckii–Krein
   reference on the exact eigenpairs (W, Q as constructed): both branches keep ~1e-10 relative accuracy. */
Test(grad, matfunc_backward_near_degenerate)
{
    tu_rng r = tu_seed(34);
    int n = 5;
    const double wp[] = {0.4, 1, 1 + 1e-5, 1 + 1e-7, 2.5}, wm[] = {-1.6, -1, -1 + 1e-5, -1 + 1e-7, 0.5};
    for (int f = 0; f < NFNS; f++) {
        const double *w0 = positive_only(&fns[f]) ? wp : wm;
        double A[NN], Q[NN], w[NMAX], V[NN], gA[NN];
        sym_from(&r, n, w0, A, Q);
        mloss p = {n, &fns[f], {0}};
        tu_fill_normal(&r, p.G, n * n);
        ref_eigh(n, A, w, V);
        cr_assert_eq(matfunc_bwd(SG_F64, n, w, V, &fns[f], p.G, gA), SG_OK, "fn %d: %s", f, sg_last_error(ctx));
        cr_assert(all_finite(gA, n * n));
        double e = fd_err(mloss_A, &p, A, gA, n, n, 1, 1e-6, &r);
        cr_expect_lt(e, 1e-6, "fn %d: FD rel err %g", f, e);
        /* reference: V (L ∘ Vᵀ sym(G) V) Vᵀ with plain divided differences in long double (eps 1e-19: the
           quotient loses 1e-19/1e-7 = 1e-12 at most) */
        cr_assert_eq(matfunc_bwd(SG_F64, n, w0, Q, &fns[f], p.G, gA), SG_OK);
        long double S[NN], X[NN];
        for (int j = 0; j < n; j++)
            for (int i = 0; i < n; i++) {
                long double t = 0;
                for (int a = 0; a < n; a++)
                    for (int b = 0; b < n; b++)
                        t += (long double)Q[a + i * n] * (0.5L * ((long double)p.G[a + b * n] + p.G[b + a * n])) *
                             Q[b + j * n];
                long double li = w0[i], lj = w0[j];
                S[i + j * n] = t * (i == j ? fder_ld(&fns[f], li) : (fval_ld(&fns[f], li) - fval_ld(&fns[f], lj)) / (li - lj));
            }
        for (int j = 0; j < n; j++) /* X = Q S Qᵀ */
            for (int i = 0; i < n; i++) {
                long double t = 0;
                for (int a = 0; a < n; a++)
                    for (int b = 0; b < n; b++) t += (long double)Q[i + a * n] * S[a + b * n] * Q[j + b * n];
                X[i + j * n] = t;
            }
        double ref[NN];
        for (int i = 0; i < n * n; i++) ref[i] = (double)X[i];
        double er = tu_diff_norm(gA, ref, n * n) / tu_norm(ref, n * n);
        cr_expect_lt(er, 1e-9, "fn %d: rel err %g vs long double Daleckii–Krein", f, er);
        cr_log_info("matfunc near-degenerate fn %d: FD %.3g, long double ref %.3g", f, e, er);
    }
}

Test(grad, matfunc_domain_errors_name_the_matrix)
{
    tu_rng r = tu_seed(33);
    int n = 3;
    double A[3 * 9], Q[9], pos[] = {0.5, 1, 2}, neg[] = {-1, 1, 2}, big[] = {0, 1, 1000};
    for (int b = 0; b < 3; b++) sym_from(&r, n, b == 1 ? neg : pos, A + 9 * b, Q);
    sg_mat Am = mk(SG_F64, 3, n, n, A), Fm = mk(SG_F64, 3, n, n, NULL);
    double *F = Fm.data;
    for (int i = 0; i < 27; i++) F[i] = 7;
    sg_fn bad[] = {{SG_FN_SQRT, 0, 0, 0, 0}, {SG_FN_LOG, 0, 0, 0, 0}, {SG_FN_POW, -0.5, 0, 0, 0}, {SG_FN_POW, 0.5, 0, 0, 0}};
    for (int f = 0; f < 4; f++) {
        cr_expect_eq(sg_matfunc(ctx, &Am, &bad[f], &Fm, NULL, NULL), SG_ERR_DOMAIN, "fn %d", f);
        cr_expect_eq(sg_failed_index(ctx), 1);
        cr_expect(strstr(sg_last_error(ctx), "domain") != NULL, "%s", sg_last_error(ctx));
    }
    for (int i = 0; i < 27; i++) cr_expect_eq(F[i], 7, "F must not be written on a domain error");
    sg_fn cube = {SG_FN_POW, 3, 0, 0, 0}, ex = {SG_FN_EXP, 0, 0, 0, 0};
    cr_expect_eq(sg_matfunc(ctx, &Am, &cube, &Fm, NULL, NULL), SG_OK, "integer powers of negative eigenvalues are fine");
    sym_from(&r, n, big, A + 9 * 2, Q);
    tu_to_mat(A, &Am);
    cr_expect_eq(sg_matfunc(ctx, &Am, &ex, &Fm, NULL, NULL), SG_ERR_DOMAIN, "exp(1000) overflows");
    cr_expect_eq(sg_failed_index(ctx), 2);
    /* backward: W outside the domain, and sqrt'(0) = inf */
    double w[] = {1, 2, 3, -1, 2, 3}, V[18] = {0}, g[18] = {0}, ga[18];
    for (int b = 0; b < 2; b++)
        for (int i = 0; i < 3; i++) V[9 * b + i * 4] = 1;
    sg_mat W = mk(SG_F64, 2, 3, 1, w), Vm = mk(SG_F64, 2, 3, 3, V), G = mk(SG_F64, 2, 3, 3, g), GA = mk(SG_F64, 2, 3, 3, ga);
    cr_expect_eq(sg_matfunc_backward(ctx, &W, &Vm, &bad[0], &G, &GA), SG_ERR_DOMAIN);
    cr_expect_eq(sg_failed_index(ctx), 1);
    w[3] = 0;
    tu_to_mat(w, &W);
    cr_expect_eq(sg_matfunc_backward(ctx, &W, &Vm, &bad[0], &G, &GA), SG_ERR_DOMAIN, "sqrt'(0) is not finite");
    cr_expect_eq(sg_matfunc_backward(ctx, &W, &Vm, &bad[1], &G, &GA), SG_ERR_DOMAIN, "log(0)");
    w[3] = 0.5;
    tu_to_mat(w, &W);
    cr_expect_eq(sg_matfunc_backward(ctx, &W, &Vm, &bad[1], &G, &GA), SG_OK, "%s", sg_last_error(ctx));
    tu_free_mat(&Am), tu_free_mat(&Fm), tu_free_mat(&W), tu_free_mat(&Vm), tu_free_mat(&G), tu_free_mat(&GA);
}

/* ---- regularizers ----------------------------------------------------------------------------- */
typedef struct {
    sg_reg kind;
    const sg_fn *fn;
    int m, n;
} rloss;

static sg_status reg_call(sg_dtype t, sg_reg kind, int b, int m, int n, const double *A, const sg_fn *fn,
                          double *loss, double *gA)
{
    sg_mat Am = mk(t, b, m, n, A), L = mk(t, b, 1, 1, NULL), G = mk(t, b, m, n, NULL);
    sg_status s = sg_regularizer(ctx, kind, &Am, fn, &L, gA ? &G : NULL);
    tu_from_mat(&L, loss);
    if (gA) tu_from_mat(&G, gA);
    tu_free_mat(&Am), tu_free_mat(&L), tu_free_mat(&G);
    return s;
}

static double rloss_A(const double *A, const void *vp)
{
    const rloss *p = vp;
    double l;
    cr_assert_eq(reg_call(SG_F64, p->kind, 1, p->m, p->n, A, p->fn, &l, NULL), SG_OK, "%s", sg_last_error(ctx));
    return l;
}

/* Independent value: from dgesdd σ's, Cholesky, or the constructed spectrum. */
static double reg_ref(sg_reg kind, int m, int n, const double *A, const double *w, const sg_fn *fn)
{
    double s[NMAX], U[NN], V[NN], C[NN], L = 0;
    int k = m < n ? m : n;
    switch (kind) {
    case SG_REG_SPECTRAL: ref_svd(m, n, A, 0, s, U, V); return s[0] * s[0];
    case SG_REG_NUCLEAR:
        ref_svd(m, n, A, 0, s, U, V);
        for (int j = 0; j < k; j++) L += s[j];
        return L;
    case SG_REG_ORTHO:
        tu_gemm(1, 0, n, n, m, A, A, C);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < n; i++) L += pow(C[i + j * n] - (i == j), 2);
        return L;
    case SG_REG_LOGDET:
        memcpy(C, A, sizeof(double) * n * n);
        cr_assert_eq(LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', n, C, n), 0);
        for (int i = 0; i < n; i++) L += 2 * log(C[i + i * n]);
        return L;
    case SG_REG_EIGSUM:
        for (int i = 0; i < n; i++) L += fscalar(fn, w[i]);
        return L;
    }
    return NAN;
}

Test(grad, regularizers_value_and_gradient)
{
    tu_rng r = tu_seed(41);
    sg_fn ex = {SG_FN_EXP, 0, 0, 0, 0}, sq = {SG_FN_SQRT, 0, 0, 0, 0};
    struct { sg_reg kind; int m, n; const sg_fn *fn; } cases[] = {
        {SG_REG_SPECTRAL, 5, 3, 0}, {SG_REG_SPECTRAL, 3, 5, 0}, {SG_REG_NUCLEAR, 5, 3, 0}, {SG_REG_NUCLEAR, 4, 4, 0},
        {SG_REG_ORTHO, 5, 3, 0},    {SG_REG_ORTHO, 3, 5, 0},    {SG_REG_LOGDET, 4, 4, 0}, {SG_REG_EIGSUM, 4, 4, &ex},
        {SG_REG_EIGSUM, 4, 4, &sq},
    };
    for (int c = 0; c < 9; c++) {
        int m = cases[c].m, n = cases[c].n, nb = 2, sym = cases[c].kind >= SG_REG_LOGDET;
        double A[2 * NN], Q[NN], w[2][NMAX], loss[2], gA[2 * NN];
        for (int b = 0; b < nb; b++) {
            if (sym) {
                for (int i = 0; i < n; i++) w[b][i] = 0.4 + 0.7 * i + 0.2 * tu_uniform(&r);
                sym_from(&r, n, w[b], A + b * m * n, Q);
            } else
                tu_mat_with_singular_values(&r, m, n, svals + b, A + b * m * n);
        }
        cr_assert_eq(reg_call(SG_F64, cases[c].kind, nb, m, n, A, cases[c].fn, loss, gA), SG_OK, "case %d: %s", c,
                     sg_last_error(ctx));
        rloss p = {cases[c].kind, cases[c].fn, m, n};
        for (int b = 0; b < nb; b++) {
            double ref = reg_ref(cases[c].kind, m, n, A + b * m * n, w[b], cases[c].fn);
            cr_expect_lt(fabs(loss[b] - ref), 1e-12 * (1 + fabs(ref)), "case %d matrix %d: %g vs %g", c, b, loss[b], ref);
            double e = fd_err(rloss_A, &p, A + b * m * n, gA + b * m * n, m, n, sym, 1e-6, &r);
            cr_expect_lt(e, 1e-6, "case %d matrix %d: rel err %g", c, b, e);
        }
        double l2[2];
        cr_expect_eq(reg_call(SG_F64, cases[c].kind, nb, m, n, A, cases[c].fn, l2, NULL), SG_OK, "loss only");
        /* values-only takes LAPACK's jobz='N' path: equal to rounding, not bitwise */
        cr_expect_lt(fabs(l2[0] - loss[0]), 1e-13 * (1 + fabs(loss[0])), "case %d", c);
    }
}

/* Tied spectra. Σσ (all σ > 0), log det and Σ exp(λ) are differentiable at ties (their gradients U Vᵀ,
   A⁻¹, exp(A) do not depend on the basis chosen inside a tied subspace): FD must match. σ1² at σ1 = σ2 is
   a max of two smooth branches, not differentiable; the returned 2σ1 u vᵀ (u, v the pair LAPACK picked in
   the tied subspace) must be a subgradient: rank one, ||gA||_F = 2σ1, <gA, A> = 2σ1², and (σ1² is
   convex) L(A + tD) ≥ L(A) + t<gA, D> along random directions. */
Test(grad, regularizers_at_ties)
{
    tu_rng r = tu_seed(43);
    sg_fn ex = {SG_FN_EXP, 0, 0, 0, 0};
    static const double s53[] = {2, 1, 1}, s44[] = {3, 1.5, 1.5, 0.5}, wl[] = {0.5, 1, 1, 3}, we[] = {-0.5, 1, 1, 2};
    struct { sg_reg kind; int m, n; const double *sp; const sg_fn *fn; } cases[] = {
        {SG_REG_NUCLEAR, 5, 3, s53, 0}, {SG_REG_NUCLEAR, 4, 4, s44, 0}, {SG_REG_LOGDET, 4, 4, wl, 0},
        {SG_REG_EIGSUM, 4, 4, we, &ex},
    };
    for (int c = 0; c < 4; c++) {
        int m = cases[c].m, n = cases[c].n, sym = cases[c].kind >= SG_REG_LOGDET;
        double A[NN], Q[NN], loss, gA[NN];
        if (sym) sym_from(&r, n, cases[c].sp, A, Q);
        else tu_mat_with_singular_values(&r, m, n, cases[c].sp, A);
        cr_assert_eq(reg_call(SG_F64, cases[c].kind, 1, m, n, A, cases[c].fn, &loss, gA), SG_OK, "case %d: %s", c,
                     sg_last_error(ctx));
        cr_assert(all_finite(gA, m * n));
        double ref = reg_ref(cases[c].kind, m, n, A, cases[c].sp, cases[c].fn);
        cr_expect_lt(fabs(loss - ref), 1e-12 * (1 + fabs(ref)), "case %d: %g vs %g", c, loss, ref);
        rloss p = {cases[c].kind, cases[c].fn, m, n};
        double e = fd_err(rloss_A, &p, A, gA, m, n, sym, 1e-6, &r);
        cr_expect_lt(e, 1e-6, "case %d (kind %d, tied): rel err %g", c, (int)cases[c].kind, e);
    }
    static const double t53[] = {2, 2, 1}, t44[] = {3, 3, 1, 0.5};
    int shapes[][2] = {{5, 3}, {4, 4}};
    for (int sh = 0; sh < 2; sh++) {
        int m = shapes[sh][0], n = shapes[sh][1];
        const double s1 = sh ? t44[0] : t53[0];
        double A[NN], loss, gA[NN], G2[NN], G3[NN], D[NN], Ap[NN];
        tu_mat_with_singular_values(&r, m, n, sh ? t44 : t53, A);
        cr_assert_eq(reg_call(SG_F64, SG_REG_SPECTRAL, 1, m, n, A, NULL, &loss, gA), SG_OK, "%s", sg_last_error(ctx));
        cr_expect_lt(fabs(loss - s1 * s1), 1e-12 * s1 * s1);
        double ng = tu_norm(gA, m * n), ga = dot(gA, A, m * n);
        cr_expect_lt(fabs(ng - 2 * s1), 1e-12 * s1, "%d×%d: ||gA|| = %.17g, 2σ1 = %g", m, n, ng, 2 * s1);
        cr_expect_lt(fabs(ga - 2 * s1 * s1), 1e-12 * s1 * s1, "%d×%d: <gA, A> = %.17g, 2σ1² = %g", m, n, ga, 2 * s1 * s1);
        tu_gemm(0, 1, m, m, n, gA, gA, G2); /* rank one with ||gA||_2 = ||gA||_F: gA gAᵀ gA = ||gA||² gA */
        tu_gemm(0, 0, m, n, m, G2, gA, G3);
        for (int i = 0; i < m * n; i++) G3[i] -= ng * ng * gA[i];
        cr_expect_lt(tu_norm(G3, m * n), 1e-12 * ng * ng * ng, "%d×%d: gA must be rank one", m, n);
        for (int t = 0; t < 8; t++) {
            double h = t < 4 ? 1e-3 : 1e-1;
            rand_dir(&r, m, n, 0, D);
            for (int i = 0; i < m * n; i++) Ap[i] = A[i] + h * D[i];
            double gap = reg_ref(SG_REG_SPECTRAL, m, n, Ap, NULL, NULL) - (s1 * s1 + h * dot(gA, D, m * n));
            cr_expect_geq(gap, -1e-12, "%d×%d: subgradient inequality fails by %g (h = %g)", m, n, gap, h);
        }
    }
}

Test(grad, regularizer_domain_errors)
{
    tu_rng r = tu_seed(42);
    int n = 3;
    double A[2 * 9], Q[9], pd[] = {0.5, 1, 2}, indef[] = {-0.5, 1, 2}, loss[2], gA[18];
    sym_from(&r, n, pd, A, Q);
    sym_from(&r, n, indef, A + 9, Q);
    cr_expect_eq(reg_call(SG_F64, SG_REG_LOGDET, 2, n, n, A, NULL, loss, gA), SG_ERR_DOMAIN);
    cr_expect_eq(sg_failed_index(ctx), 1);
    cr_expect(strstr(sg_last_error(ctx), "positive definite") != NULL, "%s", sg_last_error(ctx));
    cr_expect_eq(reg_call(SG_F64, SG_REG_LOGDET, 2, n, n, A, NULL, loss, NULL), SG_ERR_DOMAIN, "value only too");
    sg_fn lg = {SG_FN_LOG, 0, 0, 0, 0};
    cr_expect_eq(reg_call(SG_F64, SG_REG_EIGSUM, 2, n, n, A, &lg, loss, gA), SG_ERR_DOMAIN);
    cr_expect_eq(sg_failed_index(ctx), 1);
    cr_expect_eq(reg_call(SG_F64, SG_REG_EIGSUM, 2, n, n, A, NULL, loss, gA), SG_ERR_ARG, "EIGSUM needs fn");
}

/* A loss that overflows float32 (σ1² of σ1 = 1e20; Σσ of four 1e38; ‖AᵀA − I‖² of entries 1e10, whose gA
   4A(AᵀA − I) ~ 1e31 stays finite) is SG_ERR_DOMAIN naming the matrix, like EIGSUM's, and every matrix's
   loss and gA are written: the others' equal a call on them alone. */
Test(grad, regularizer_overflow_names_the_matrix)
{
    tu_rng r = tu_seed(43);
    const int B = 3, bad = 1, m = 5, n = 4, mn = m * n;
    static const sg_reg kinds[] = {SG_REG_SPECTRAL, SG_REG_NUCLEAR, SG_REG_ORTHO};
    static const char *names[] = {"spectral", "nuclear", "ortho"};
    for (int ki = 0; ki < 3; ki++)
        for (int grad = 0; grad < 2; grad++) {
            double A[3 * 20], s[4], loss[3], gA[3 * 20], l1, g1[20];
            for (int b = 0; b < B; b++) {
                for (int i = 0; i < n; i++) s[i] = 2.0 - 0.3 * i;
                if (b == bad && kinds[ki] != SG_REG_ORTHO)
                    for (int i = 0; i < n; i++) s[i] = kinds[ki] == SG_REG_SPECTRAL ? 1e20 / (1 + i) : 1e38;
                tu_mat_with_singular_values(&r, m, n, s, A + b * mn);
                if (b == bad && kinds[ki] == SG_REG_ORTHO)
                    for (int i = 0; i < mn; i++) A[b * mn + i] *= 1e10;
            }
            for (int i = 0; i < B; i++) loss[i] = 0;
            const sg_status st = reg_call(SG_F32, kinds[ki], B, m, n, A, NULL, loss, grad ? gA : NULL);
            cr_expect_eq(st, SG_ERR_DOMAIN, "%s grad %d: %s", names[ki], grad, sg_status_string(st));
            cr_expect_eq(sg_failed_index(ctx), bad);
            cr_expect(strstr(sg_last_error(ctx), "loss overflows in matrix 1") && strstr(sg_last_error(ctx), names[ki]),
                      "%s", sg_last_error(ctx));
            cr_expect(isinf(loss[bad]), "%s: loss %g", names[ki], loss[bad]);
            for (int b = 0; b < B; b++) {
                if (b == bad) continue;
                cr_assert_eq(reg_call(SG_F32, kinds[ki], 1, m, n, A + b * mn, NULL, &l1, grad ? g1 : NULL), SG_OK);
                cr_expect_eq(loss[b], l1, "%s: matrix %d's loss %g, alone %g", names[ki], b, loss[b], l1);
                if (grad) cr_expect_lt(tu_diff_norm(gA + b * mn, g1, mn) / tu_norm(g1, mn), 1e-6, "%s: matrix %d's gA", names[ki], b);
            }
            if (grad && kinds[ki] != SG_REG_NUCLEAR) /* finite gA (NUCLEAR's is U Vᵀ): written, not NaN-filled */
                cr_expect(isfinite(gA[bad * mn]) && isfinite(gA[bad * mn + mn - 1]), "%s: gA of matrix 1", names[ki]);
        }
    /* float64: σ1 = 1e160 overflows σ1², 1e150 does not */
    double A[20], s[4] = {1e160, 1e159, 1, 0.5}, l, g[20];
    tu_mat_with_singular_values(&r, m, n, s, A);
    cr_expect_eq(reg_call(SG_F64, SG_REG_SPECTRAL, 1, m, n, A, NULL, &l, g), SG_ERR_DOMAIN);
    cr_expect(strstr(sg_last_error(ctx), "spectral: loss overflows in matrix 0"), "%s", sg_last_error(ctx));
    for (int i = 0; i < 20; i++) A[i] *= 1e-10;
    cr_expect_eq(reg_call(SG_F64, SG_REG_SPECTRAL, 1, m, n, A, NULL, &l, g), SG_OK, "σ1 = 1e150: %s", sg_last_error(ctx));
}

/* MASK's tolerance is relative to max|λ|, as the SVD's is to σmax²: a float32 spectrum in [1e-3, 2e-3]
   (gaps ~6e-5, relative gaps of a few %) is resolved, so MASK equals EXACT there (in float64, to float32
   rounding), and scaling A by 1e3 scales the eigenvector part of gA by 1e-3 in both. The old absolute floor
   (param·max(1, max|λ|) = 1.2e-4 here) masked most pairs: gA 97 % off. Exact ties at that scale are still
   masked (finite) where EXACT reports SG_ERR_DEGENERATE. */
Test(grad, mask_tolerance_is_relative_to_the_spectrum)
{
    tu_rng r = tu_seed(77);
    const int n = 16;
    double w[16], A[256], Q[256], W[16], V[256], gV[256], gx[256], gm[256], gm3[256], W3[16];
    for (int i = 0; i < n; i++) w[i] = 1e-3 * (1 + (double)i / (n - 1));
    sym_from(&r, n, w, A, Q);
    ref_eigh(n, A, W, V);
    tu_fill_normal(&r, gV, n * n);
    cr_assert_eq(eigh_bwd(SG_F64, 1, n, W, V, NULL, gV, SG_DEGEN_EXACT, 0, gx), SG_OK);
    cr_assert_eq(eigh_bwd(SG_F32, 1, n, W, V, NULL, gV, SG_DEGEN_MASK, 0, gm), SG_OK, "%s", sg_last_error(ctx));
    cr_expect_lt(tu_diff_norm(gm, gx, n * n) / tu_norm(gx, n * n), 1e-4, "f32 MASK vs EXACT at max|λ| = 2e-3: %g",
                 tu_diff_norm(gm, gx, n * n) / tu_norm(gx, n * n));
    for (int i = 0; i < n; i++) W3[i] = W[i] * 1e3;
    cr_assert_eq(eigh_bwd(SG_F32, 1, n, W3, V, NULL, gV, SG_DEGEN_MASK, 0, gm3), SG_OK);
    for (int i = 0; i < n * n; i++) gm3[i] *= 1e3;
    cr_expect_lt(tu_diff_norm(gm3, gm, n * n) / tu_norm(gm, n * n), 1e-5, "MASK is not scale-invariant");
    W[1] = W[0]; /* an exact tie */
    cr_expect_eq(eigh_bwd(SG_F64, 1, n, W, V, NULL, gV, SG_DEGEN_EXACT, 0, gx), SG_ERR_DEGENERATE);
    cr_expect_eq(eigh_bwd(SG_F32, 1, n, W, V, NULL, gV, SG_DEGEN_MASK, 0, gm), SG_OK, "%s", sg_last_error(ctx));
    cr_expect(all_finite(gm, n * n), "MASK at an exact tie: finite");
}

static double rel(const double *a, const double *b, int len) { return tu_diff_norm(a, b, len) / tu_norm(b, len); }

/* Every degeneracy mode is scale-invariant: gA(cλ, V, gW, c·gV) = gA(λ, V, gW, gV) (1/E, MASK's tolerance,
   LORENTZ's width and TAYLOR's 1/λbig all scale with λ). Until 2026-12-02 LORENTZ's width was absolute
   (E/(E² + param)): in f32 (param 1e-6) a covariance-like spectrum in [1e-3, 2e-3], gaps ~7e-5, got
   F ≈ E/1e-6 instead of 1/E, a gA about 100 % off EXACT's; relative, its bias is param/(E/max|λ|)² ~ 1e-3. */
Test(grad, every_degeneracy_mode_is_scale_invariant)
{
    tu_rng r = tu_seed(78);
    const int n = 16;
    double w[16], A[256], Q[256], W[16], V[256], gW[16], gV[256], Wc[16], gVc[256], g1[256], gc[256], gx[256];
    for (int i = 0; i < n; i++) w[i] = 1e-3 * (1 + (double)i / (n - 1));
    sym_from(&r, n, w, A, Q);
    ref_eigh(n, A, W, V);
    tu_fill_normal(&r, gW, n), tu_fill_normal(&r, gV, n * n);
    for (int ti = 0; ti < 2; ti++) {
        const sg_dtype t = ti ? SG_F32 : SG_F64;
        const double tol = ti ? 2e-5 : 1e-12;
        cr_assert_eq(eigh_bwd(t, 1, n, W, V, gW, gV, SG_DEGEN_EXACT, 0, gx), SG_OK);
        for (sg_degen m = SG_DEGEN_EXACT; m <= SG_DEGEN_TAYLOR; m++) {
            const double prm = m == SG_DEGEN_TAYLOR ? 400 : 0;
            cr_assert_eq(eigh_bwd(t, 1, n, W, V, gW, gV, m, prm, g1), SG_OK, "%s", sg_last_error(ctx));
            for (double c = 1e-3; c < 1e4; c *= 1e6) { /* c = 1e-3 and 1e3 */
                for (int i = 0; i < n; i++) Wc[i] = W[i] * c;
                for (int i = 0; i < n * n; i++) gVc[i] = gV[i] * c;
                cr_assert_eq(eigh_bwd(t, 1, n, Wc, V, gW, gVc, m, prm, gc), SG_OK, "%s", sg_last_error(ctx));
                cr_expect_lt(rel(gc, g1, n * n), tol, "%s mode %d: gA at λ·%g differs from gA at λ by %g",
                             ti ? "f32" : "f64", (int)m, c, rel(gc, g1, n * n));
            }
            if (m == SG_DEGEN_LORENTZ) /* default width: a small bias, not a different gradient */
                cr_expect_lt(rel(g1, gx, n * n), 1e-2, "%s LORENTZ vs EXACT at max|λ| = 2e-3: %g", ti ? "f32" : "f64",
                             rel(g1, gx, n * n));
        }
    }
}

/* ---- float32 against float64 ------------------------------------------------------------------ */

Test(grad, float32_matches_float64)
{
    tu_rng r = tu_seed(51);
    int n = 5;
    double A[NN], Q[NN], w0[] = {0.3, 0.9, 1.7, 2.4, 4.0}, w[NMAX], V[NN], gW[NMAX], gV[NN], g64[NN], g32[NN];
    sym_from(&r, n, w0, A, Q);
    ref_eigh(n, A, w, V);
    eloss p;
    rand_eloss(&r, n, &p);
    eloss_grad(&p, V, gW, gV);
    for (sg_degen m = SG_DEGEN_EXACT; m <= SG_DEGEN_TAYLOR; m++) {
        /* one LORENTZ width for both: the defaults differ by dtype (1e-6 in f32 is a 4e-5 bias here) */
        double prm = m == SG_DEGEN_TAYLOR ? 200 : m == SG_DEGEN_LORENTZ ? 1e-12 : 0;
        cr_assert_eq(eigh_bwd(SG_F64, 1, n, w, V, gW, gV, m, prm, g64), SG_OK);
        cr_assert_eq(eigh_bwd(SG_F32, 1, n, w, V, gW, gV, m, prm, g32), SG_OK, "%s", sg_last_error(ctx));
        cr_expect_lt(rel(g32, g64, n * n), 2e-5, "eigh_backward mode %d: %g", (int)m, rel(g32, g64, n * n));
    }
    for (int f = 0; f < NFNS; f++) {
        cr_assert_eq(matfunc_bwd(SG_F64, n, w, V, &fns[f], gV, g64), SG_OK);
        cr_assert_eq(matfunc_bwd(SG_F32, n, w, V, &fns[f], gV, g32), SG_OK);
        cr_expect_lt(rel(g32, g64, n * n), 2e-5, "matfunc_backward fn %d: %g", f, rel(g32, g64, n * n));
        double F64[NN], F32[NN];
        sg_mat a64 = mk(SG_F64, 1, n, n, A), a32 = mk(SG_F32, 1, n, n, A), f64 = mk(SG_F64, 1, n, n, NULL),
               f32 = mk(SG_F32, 1, n, n, NULL);
        cr_assert_eq(sg_matfunc(ctx, &a64, &fns[f], &f64, NULL, NULL), SG_OK);
        cr_assert_eq(sg_matfunc(ctx, &a32, &fns[f], &f32, NULL, NULL), SG_OK, "%s", sg_last_error(ctx));
        tu_from_mat(&f64, F64), tu_from_mat(&f32, F32);
        cr_expect_lt(rel(F32, F64, n * n), 1e-5, "matfunc fn %d: %g", f, rel(F32, F64, n * n));
        tu_free_mat(&a64), tu_free_mat(&a32), tu_free_mat(&f64), tu_free_mat(&f32);
    }
    int m = 6, k = 4;
    double B[NN], s[NMAX], U[NN], Vs[NN], gS[NMAX], gU[NN], gVs[NN];
    tu_mat_with_singular_values(&r, m, k, svals, B);
    ref_svd(m, k, B, 0, s, U, Vs);
    sloss q;
    rand_sloss(&r, m, k, &q);
    sloss_grad(&q, U, Vs, gS, gU, gVs);
    cr_assert_eq(svd_bwd(SG_F64, m, k, 0, U, s, Vs, gU, gS, gVs, SG_DEGEN_EXACT, 0, g64), SG_OK);
    cr_assert_eq(svd_bwd(SG_F32, m, k, 0, U, s, Vs, gU, gS, gVs, SG_DEGEN_EXACT, 0, g32), SG_OK);
    cr_expect_lt(rel(g32, g64, m * k), 2e-5, "svd_backward: %g", rel(g32, g64, m * k));
    for (sg_reg kind = SG_REG_SPECTRAL; kind <= SG_REG_EIGSUM; kind++) {
        int sq = kind >= SG_REG_LOGDET, rr = sq ? n : m, cc = sq ? n : k;
        const double *X = sq ? A : B;
        double l64, l32;
        cr_assert_eq(reg_call(SG_F64, kind, 1, rr, cc, X, &fns[2], &l64, g64), SG_OK);
        cr_assert_eq(reg_call(SG_F32, kind, 1, rr, cc, X, &fns[2], &l32, g32), SG_OK, "%s", sg_last_error(ctx));
        cr_expect_lt(fabs(l32 - l64), 1e-5 * (1 + fabs(l64)), "reg %d loss", (int)kind);
        cr_expect_lt(rel(g32, g64, rr * cc), 1e-5, "reg %d grad: %g", (int)kind, rel(g32, g64, rr * cc));
    }
}

Test(grad, bad_arguments)
{
    double w[3] = {1, 2, 3}, V[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1}, g[9] = {0}, ga[9];
    sg_mat W = sg_mat_dense(w, SG_F64, 1, 3, 1), Vm = sg_mat_dense(V, SG_F64, 1, 3, 3), G = sg_mat_dense(g, SG_F64, 1, 3, 3),
           GA = sg_mat_dense(ga, SG_F64, 1, 3, 3);
    cr_expect_eq(sg_eigh_backward(ctx, &W, &Vm, NULL, &G, (sg_degen)9, 0, &GA), SG_ERR_ARG);
    cr_expect_eq(sg_eigh_backward(ctx, &W, &Vm, NULL, &G, SG_DEGEN_LORENTZ, NAN, &GA), SG_ERR_ARG);
    sg_mat bad = G;
    bad.rows = 2;
    cr_expect_eq(sg_eigh_backward(ctx, &W, &Vm, NULL, &bad, SG_DEGEN_EXACT, 0, &GA), SG_ERR_ARG);
    g[4] = NAN;
    cr_expect_eq(sg_eigh_backward(ctx, &W, &Vm, NULL, &G, SG_DEGEN_EXACT, 0, &GA), SG_ERR_NONFINITE);
    sg_fn cbad = {SG_FN_CALLBACK, 0, cb_f, NULL, NULL};
    g[4] = 0;
    cr_expect_eq(sg_matfunc_backward(ctx, &W, &Vm, &cbad, &G, &GA), SG_ERR_ARG);
}

/* ---- layouts: ld > rows and stride > ld·cols, batch over threads -------------------------------- */
static sg_mat mk_pad(sg_dtype t, int b, int r, int c, const double *src)
{
    sg_mat m = sg_mat_dense(NULL, t, b, r, c);
    m.ld = r + 2, m.stride = m.ld * c + 3;
    size_t es = t == SG_F32 ? 4 : 8, cnt = (size_t)(m.stride * b);
    m.data = malloc(es * cnt);
    for (size_t i = 0; i < cnt; i++) /* sentinel 7 in the padding */
        if (t == SG_F32) ((float *)m.data)[i] = 7;
        else ((double *)m.data)[i] = 7;
    if (src) tu_to_mat(src, &m);
    return m;
}

static int padding_intact(const sg_mat *m)
{
    for (int64_t i = 0; i < m->stride * m->batch; i++) {
        int64_t o = i % m->stride, row = o % m->ld, col = o / m->ld;
        if (col < m->cols && row < m->rows) continue;
        double v = m->dtype == SG_F32 ? ((float *)m->data)[i] : ((double *)m->data)[i];
        if (v != 7) return 0;
    }
    return 1;
}

/* sg_matfunc's optional W, V: the decomposition F was built from, the same as sg_eigh's, in padded
   layouts; untouched on a domain error; refused when they overlap F. */
Test(grad, matfunc_returns_its_eigendecomposition)
{
    tu_rng r = tu_seed(62);
    enum { B = 3, n = 5 };
    double A[B * NN], Q[NN], w0[] = {0.2, 0.7, 1.1, 2.5, 3.0}, neg[] = {-0.5, 0.7, 1.1, 2.5, 3.0};
    double we[B * NMAX], Ve[B * NN], wg[B * NMAX], Vg[B * NN];
    for (int b = 0; b < B; b++) sym_from(&r, n, b == 2 ? neg : w0, A + b * n * n, Q);
    sg_fn sq = {SG_FN_SQRT, 0, 0, 0, 0}, ex = {SG_FN_EXP, 0, 0, 0, 0};
    for (int t = 0; t < 2; t++) {
        sg_dtype dt = t ? SG_F32 : SG_F64;
        sg_mat Am = mk_pad(dt, B, n, n, A), Fm = mk_pad(dt, B, n, n, NULL), W = mk_pad(dt, B, n, 1, NULL),
               V = mk_pad(dt, B, n, n, NULL), We = mk(dt, B, n, 1, NULL), Vm = mk(dt, B, n, n, NULL);
        cr_expect_eq(sg_matfunc(ctx, &Am, &sq, &Fm, &W, &V), SG_ERR_DOMAIN, "sqrt of matrix 2's -0.5");
        cr_expect(padding_intact(&W) && padding_intact(&V), "padding");
        tu_from_mat(&W, wg);
        for (int i = 0; i < B * n; i++) cr_expect_eq(wg[i], 7, "W written on a domain error (element %d)", i);
        cr_assert_eq(sg_matfunc(ctx, &Am, &ex, &Fm, &W, &V), SG_OK, "%s", sg_last_error(ctx));
        cr_assert_eq(sg_eigh(ctx, &Am, &We, &Vm), SG_OK, "%s", sg_last_error(ctx));
        cr_expect(padding_intact(&W) && padding_intact(&V) && padding_intact(&Fm), "padding");
        tu_from_mat(&W, wg), tu_from_mat(&V, Vg), tu_from_mat(&We, we), tu_from_mat(&Vm, Ve);
        cr_expect_eq(tu_diff_norm(wg, we, B * n), 0, "W differs from sg_eigh's (dtype %d)", t);
        cr_expect_eq(tu_diff_norm(Vg, Ve, B * n * n), 0, "V differs from sg_eigh's (dtype %d)", t);
        /* F overlapping V (V = F), and W inside F */
        cr_expect_eq(sg_matfunc(ctx, &Am, &ex, &Fm, NULL, &Fm), SG_ERR_ARG);
        sg_mat Win = sg_mat_dense(Fm.data, dt, B, n, 1);
        Win.stride = Fm.stride;
        cr_expect_eq(sg_matfunc(ctx, &Am, &ex, &Fm, &Win, NULL), SG_ERR_ARG);
        cr_expect(strstr(sg_last_error(ctx), "overlap") != NULL, "%s", sg_last_error(ctx));
        /* in place: V may be A itself */
        cr_assert_eq(sg_matfunc(ctx, &Am, &ex, &Fm, NULL, &Am), SG_OK, "%s", sg_last_error(ctx));
        tu_from_mat(&Am, Vg);
        cr_expect_eq(tu_diff_norm(Vg, Ve, B * n * n), 0, "V written over A differs from sg_eigh's (dtype %d)", t);
        tu_to_mat(A, &Am);
                /* shapes: W must be n×1, V n×n, both the batch of A */
        cr_expect_eq(sg_matfunc(ctx, &Am, &ex, &Fm, &Vm, NULL), SG_ERR_ARG, "an n×n W");
        cr_expect_eq(sg_matfunc(ctx, &Am, &ex, &Fm, NULL, &We), SG_ERR_ARG, "an n×1 V");
        tu_free_mat(&Am), tu_free_mat(&Fm), tu_free_mat(&W), tu_free_mat(&V), tu_free_mat(&We), tu_free_mat(&Vm);
    }
}

Test(grad, strided_batches_match_dense)
{
    tu_rng r = tu_seed(61);
    enum { B = 5, n = 4, m = 6 };
    double A[B * NN], Q[NN], w[B * NMAX], V[B * NN], gW[B * NMAX], gV[B * NN], gd[B * NN], gp[B * NN];
    for (int b = 0; b < B; b++) {
        double w0[] = {0.1 + b * 0.05, 0.5, 1.7, 3.0}; /* PD: LOGDET below */
        sym_from(&r, n, w0, A + b * n * n, Q);
        ref_eigh(n, A + b * n * n, w + b * n, V + b * n * n);
    }
    tu_fill_normal(&r, gW, B * n), tu_fill_normal(&r, gV, B * n * n);
    for (int t = 0; t < 2; t++) {
        sg_dtype dt = t ? SG_F32 : SG_F64;
        double tol = t ? 1e-6 : 1e-14;
        /* eigh backward */
        cr_assert_eq(eigh_bwd(dt, B, n, w, V, gW, gV, SG_DEGEN_MASK, 0, gd), SG_OK);
        sg_mat W = mk_pad(dt, B, n, 1, w), Vm = mk_pad(dt, B, n, n, V), GW = mk_pad(dt, B, n, 1, gW),
               GV = mk_pad(dt, B, n, n, gV), GA = mk_pad(dt, B, n, n, NULL);
        cr_assert_eq(sg_set_threads(ctx, 1), SG_OK);
        cr_assert_eq(sg_eigh_backward(ctx, &W, &Vm, &GW, &GV, SG_DEGEN_MASK, 0, &GA), SG_OK);
        cr_assert_eq(sg_set_threads(ctx, 0), SG_OK);
        tu_from_mat(&GA, gp);
        cr_expect_lt(rel(gp, gd, B * n * n), tol, "eigh_backward dtype %d", t);
        cr_expect(padding_intact(&GA), "eigh_backward wrote into the padding");
        /* matfunc backward and forward */
        sg_fn ex = {SG_FN_EXP, 0, 0, 0, 0};
        sg_mat GF = mk_pad(dt, B, n, n, gV);
        cr_assert_eq(sg_matfunc_backward(ctx, &W, &Vm, &ex, &GF, &GA), SG_OK);
        tu_from_mat(&GA, gp);
        for (int b = 0; b < B; b++) {
            cr_assert_eq(matfunc_bwd(dt, n, w + b * n, V + b * n * n, &ex, gV + b * n * n, gd + b * n * n), SG_OK);
        }
        cr_expect_lt(rel(gp, gd, B * n * n), tol, "matfunc_backward dtype %d", t);
        cr_expect(padding_intact(&GA));
        sg_mat Am = mk_pad(dt, B, n, n, A);
        cr_assert_eq(sg_matfunc(ctx, &Am, &ex, &GA, NULL, NULL), SG_OK, "%s", sg_last_error(ctx));
        cr_expect(padding_intact(&GA));
        /* regularizer with padded loss and gradient */
        sg_mat L = mk_pad(dt, B, 1, 1, NULL);
        cr_assert_eq(sg_regularizer(ctx, SG_REG_LOGDET, &Am, NULL, &L, &GA), SG_OK, "%s", sg_last_error(ctx));
        cr_expect(padding_intact(&L) && padding_intact(&GA));
        tu_free_mat(&W), tu_free_mat(&Vm), tu_free_mat(&GW), tu_free_mat(&GV), tu_free_mat(&GA), tu_free_mat(&GF),
            tu_free_mat(&Am), tu_free_mat(&L);
    }
    /* svd backward, tall, full_matrices, padded */
    double Ad[B * NN], s[B * NMAX], U[B * NN], Vs[B * NN], gU[B * NN], gS[B * NMAX], gVs[B * NN], g1[NN];
    for (int b = 0; b < B; b++) {
        tu_mat_with_singular_values(&r, m, n, svals, Ad + b * m * n);
        ref_svd(m, n, Ad + b * m * n, 1, s + b * n, U + b * m * m, Vs + b * n * n);
    }
    tu_fill_normal(&r, gU, B * m * m), tu_fill_normal(&r, gS, B * n), tu_fill_normal(&r, gVs, B * n * n);
    sg_mat Um = mk_pad(SG_F64, B, m, m, U), Sm = mk_pad(SG_F64, B, n, 1, s), Vm = mk_pad(SG_F64, B, n, n, Vs),
           GU = mk_pad(SG_F64, B, m, m, gU), GS = mk_pad(SG_F64, B, n, 1, gS), GV = mk_pad(SG_F64, B, n, n, gVs),
           GA = mk_pad(SG_F64, B, m, n, NULL);
    cr_assert_eq(sg_svd_backward(ctx, &Um, &Sm, &Vm, &GU, &GS, &GV, SG_DEGEN_EXACT, 0, &GA), SG_OK, "%s",
                 sg_last_error(ctx));
    cr_expect(padding_intact(&GA));
    tu_from_mat(&GA, gp);
    for (int b = 0; b < B; b++) {
        cr_assert_eq(svd_bwd(SG_F64, m, n, 1, U + b * m * m, s + b * n, Vs + b * n * n, gU + b * m * m, gS + b * n,
                             gVs + b * n * n, SG_DEGEN_EXACT, 0, g1), SG_OK);
        cr_expect_lt(rel(gp + b * m * n, g1, m * n), 1e-14, "svd_backward matrix %d", b);
    }
    tu_free_mat(&Um), tu_free_mat(&Sm), tu_free_mat(&Vm), tu_free_mat(&GU), tu_free_mat(&GS), tu_free_mat(&GV),
        tu_free_mat(&GA);
}

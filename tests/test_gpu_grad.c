/* CPU vs CUDA parity for the spectral gradients (eigh/SVD backward in every degeneracy mode, matrix
   functions and their backward, regularizers): both dtypes, n across the fused/cuBLAS switch at 64,
   host and device memory, ld/stride padding, chunked host batches, exactly degenerate spectra, domain
   errors, and a float64 central-difference check of the GPU eigh backward with the GPU forward.
   Without a GPU every test is skipped with the reason printed. */
#include <math.h>
#include <stdio.h>

#include "gpu_suite.h"

TestSuite(gpu_grad, .init = gpu_suite_setup, .fini = gpu_suite_teardown, .timeout = 900);

static const int64_t SIZES[] = {1, 2, 8, 32, 33, 64, 65, 128}; /* fused ≤ 64 (1×1, 2×2, 4×4 tiles), cuBLAS > 64 */
#define NSIZES ((int)(sizeof SIZES / sizeof SIZES[0]))
static const sg_dtype DTYPES[] = {SG_F32, SG_F64};
static const char *dn(sg_dtype t) { return t == SG_F32 ? "f32" : "f64"; }
static double tol_of(sg_dtype t) { return t == SG_F32 ? 2e-4 : 1e-10; }

/* Relative error; a non-finite entry is an infinite error (NaN must not slip through a <= check). */
static double rel_err(const double *x, const double *ref, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]) || !isfinite(ref[i])) return INFINITY;
    double r = tu_norm(ref, n);
    return tu_diff_norm(x, ref, n) / (r > 1e-300 ? r : 1.0);
}
static int all_finite(const double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}
static double *dalloc(int64_t n)
{
    double *p = calloc((size_t)(n > 0 ? n : 1), sizeof *p);
    cr_assert_not_null(p);
    return p;
}

/* A batch of synthetic eigen-pairs: V orthogonal, W ascending in [1, 2+n] with gaps >= 0.5 (positive: each
   Taylor pair is a series); tie_b >= 0 makes λ0 = λ1 exactly in that matrix. */
static void make_eig(tu_rng *r, int64_t batch, int64_t n, int64_t tie_b, double *W, double *V)
{
    for (int64_t b = 0; b < batch; b++) {
        tu_orthogonal(r, n, V + b * n * n);
        double x = 1.0 + tu_uniform(r);
        for (int64_t i = 0; i < n; i++) {
            W[b * n + i] = x;
            x += 0.5 + tu_uniform(r);
        }
        if (b == tie_b && n > 1) W[b * n + 1] = W[b * n];
    }
}

/* ---- eigh backward ---------------------------------------------------------------------------- */
/* Runs eigh_backward on ctx (device memory on the GPU when dev), returns status, gA in out. */
static sg_status run_eigh_bw(sg_ctx *c, int dev, int pad, sg_dtype t, int64_t batch, int64_t n, const double *W,
                             const double *V, const double *gW, const double *gV, sg_degen mode, double *out,
                             int64_t *failed)
{
    if (c == gpu) cr_assert_eq(sg_set_memspace(c, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
    int d = c == gpu && dev;
    buf w = bnew(t, batch, n, 1, pad, d), v = bnew(t, batch, n, n, pad, d), gw = bnew(t, batch, n, 1, pad, d),
        gv = bnew(t, batch, n, n, pad, d), ga = bnew(t, batch, n, n, pad, d);
    bset(&w, W), bset(&v, V);
    if (gW) bset(&gw, gW);
    if (gV) bset(&gv, gV);
    sg_status s = sg_eigh_backward(c, bm(&w), bm(&v), gW ? bm(&gw) : NULL, gV ? bm(&gv) : NULL, mode, 0, bm(&ga));
    *failed = sg_failed_index(c);
    if (s == SG_OK || s == SG_ERR_DEGENERATE) bget(&ga, out);
    bfree(&w), bfree(&v), bfree(&gw), bfree(&gv), bfree(&ga);
    if (c == gpu) sg_set_memspace(c, SG_MEM_HOST);
    return s;
}

Test(gpu_grad, eigh_backward_parity_all_modes_sizes_memspaces)
{
    NEED_GPU();
    tu_rng r = tu_seed(11);
    const int64_t batch = 3;
    for (int ti = 0; ti < 2; ti++)
        for (int si = 0; si < NSIZES; si++) {
            sg_dtype t = DTYPES[ti];
            int64_t n = SIZES[si], nn = n * n;
            double *W = dalloc(batch * n), *V = dalloc(batch * nn), *gW = dalloc(batch * n), *gV = dalloc(batch * nn),
                   *ref = dalloc(batch * nn), *out = dalloc(batch * nn);
            make_eig(&r, batch, n, -1, W, V);
            tu_fill_normal(&r, gW, batch * n);
            tu_fill_normal(&r, gV, batch * nn);
            for (int mode = SG_DEGEN_EXACT; mode <= SG_DEGEN_TAYLOR; mode++)
                for (int dev = 0; dev < 2; dev++) {
                    int pad = (si + dev + mode) % 2;
                    int64_t f1, f2;
                    cr_assert_eq(run_eigh_bw(cpu, 0, pad, t, batch, n, W, V, gW, gV, (sg_degen)mode, ref, &f1), SG_OK,
                                 "cpu %s n=%lld mode %d: %s", dn(t), (long long)n, mode, sg_last_error(cpu));
                    sg_status s = run_eigh_bw(gpu, dev, pad, t, batch, n, W, V, gW, gV, (sg_degen)mode, out, &f2);
                    cr_assert_eq(s, SG_OK, "gpu %s n=%lld mode %d dev %d: %s", dn(t), (long long)n, mode, dev,
                                 sg_last_error(gpu));
                    double e = rel_err(out, ref, batch * nn);
                    cr_expect_leq(e, tol_of(t), "eigh_backward %s n=%lld mode %d dev %d pad %d: rel err %.3g", dn(t),
                                  (long long)n, mode, dev, pad, e);
                }
            /* gV = NULL and gW = NULL paths */
            int64_t f;
            cr_assert_eq(run_eigh_bw(cpu, 0, 0, t, batch, n, W, V, gW, NULL, SG_DEGEN_EXACT, ref, &f), SG_OK);
            cr_assert_eq(run_eigh_bw(gpu, 1, 0, t, batch, n, W, V, gW, NULL, SG_DEGEN_EXACT, out, &f), SG_OK, "%s",
                         sg_last_error(gpu));
            cr_expect_leq(rel_err(out, ref, batch * nn), tol_of(t), "gV = NULL, %s n=%lld", dn(t), (long long)n);
            cr_assert_eq(run_eigh_bw(cpu, 0, 0, t, batch, n, W, V, NULL, gV, SG_DEGEN_MASK, ref, &f), SG_OK);
            cr_assert_eq(run_eigh_bw(gpu, 0, 1, t, batch, n, W, V, NULL, gV, SG_DEGEN_MASK, out, &f), SG_OK, "%s",
                         sg_last_error(gpu));
            cr_expect_leq(rel_err(out, ref, batch * nn), tol_of(t), "gW = NULL, %s n=%lld", dn(t), (long long)n);
            free(W), free(V), free(gW), free(gV), free(ref), free(out);
        }
}

Test(gpu_grad, eigh_backward_exact_ties_degenerate_mask_finite)
{
    NEED_GPU();
    tu_rng r = tu_seed(12);
    const int64_t batch = 3, sizes[] = {2, 8, 33, 64, 65, 128};
    for (int ti = 0; ti < 2; ti++)
        for (int si = 0; si < 6; si++) {
            sg_dtype t = DTYPES[ti];
            int64_t n = sizes[si], nn = n * n, f1, f2;
            double *W = dalloc(batch * n), *V = dalloc(batch * nn), *gW = dalloc(batch * n), *gV = dalloc(batch * nn),
                   *ref = dalloc(batch * nn), *out = dalloc(batch * nn);
            make_eig(&r, batch, n, 1, W, V); /* tie in matrix 1 */
            tu_fill_normal(&r, gW, batch * n);
            tu_fill_normal(&r, gV, batch * nn);
            for (int dev = 0; dev < 2; dev++) {
                cr_expect_eq(run_eigh_bw(cpu, 0, 0, t, batch, n, W, V, gW, gV, SG_DEGEN_EXACT, ref, &f1), SG_ERR_DEGENERATE);
                cr_expect_eq(run_eigh_bw(gpu, dev, 0, t, batch, n, W, V, gW, gV, SG_DEGEN_EXACT, out, &f2),
                             SG_ERR_DEGENERATE, "%s n=%lld dev %d: %s", dn(t), (long long)n, dev, sg_last_error(gpu));
                cr_expect_eq(f1, 1);
                cr_expect_eq(f2, 1, "gpu failed index %lld", (long long)f2);
                /* gA is still written: the untied matrices agree */
                cr_expect_leq(rel_err(out, ref, nn), tol_of(t));
                cr_expect_leq(rel_err(out + 2 * nn, ref + 2 * nn, nn), tol_of(t));
                cr_assert_eq(run_eigh_bw(cpu, 0, 1, t, batch, n, W, V, gW, gV, SG_DEGEN_MASK, ref, &f1), SG_OK);
                cr_assert_eq(run_eigh_bw(gpu, dev, 1, t, batch, n, W, V, gW, gV, SG_DEGEN_MASK, out, &f2), SG_OK, "%s",
                             sg_last_error(gpu));
                cr_expect(all_finite(out, batch * nn));
                cr_expect_leq(rel_err(out, ref, batch * nn), tol_of(t), "mask %s n=%lld dev %d", dn(t), (long long)n, dev);
            }
            free(W), free(V), free(gW), free(gV), free(ref), free(out);
        }
}

Test(gpu_grad, host_batch_streamed_in_chunks)
{
    NEED_GPU();
    tu_rng r = tu_seed(13);
    const int64_t batch = 37, n = 40, nn = n * n;
    double *W = dalloc(batch * n), *V = dalloc(batch * nn), *gW = dalloc(batch * n), *gV = dalloc(batch * nn),
           *ref = dalloc(batch * nn), *out = dalloc(batch * nn);
    make_eig(&r, batch, n, 29, W, V); /* tie in matrix 29: in a later chunk */
    tu_fill_normal(&r, gW, batch * n);
    tu_fill_normal(&r, gV, batch * nn);
    int64_t f1, f2;
    cr_assert_eq(sg_set_chunk_bytes(gpu, 5 * (size_t)nn * 8 * 3), SG_OK); /* a handful of matrices per chunk */
    for (int pad = 0; pad < 2; pad++) {
        cr_expect_eq(run_eigh_bw(cpu, 0, pad, SG_F64, batch, n, W, V, gW, gV, SG_DEGEN_EXACT, ref, &f1), SG_ERR_DEGENERATE);
        cr_expect_eq(run_eigh_bw(gpu, 0, pad, SG_F64, batch, n, W, V, gW, gV, SG_DEGEN_EXACT, out, &f2), SG_ERR_DEGENERATE,
                     "%s", sg_last_error(gpu));
        cr_expect_eq(f1, 29);
        cr_expect_eq(f2, 29, "failed index %lld: %s", (long long)f2, sg_last_error(gpu));
        cr_expect_leq(rel_err(out, ref, 29 * nn), 1e-10); /* every other chunk was written */
        cr_expect_leq(rel_err(out + 30 * nn, ref + 30 * nn, 7 * nn), 1e-10);
    }
    cr_assert_eq(sg_set_chunk_bytes(gpu, 0), SG_OK);
    free(W), free(V), free(gW), free(gV), free(ref), free(out);
}

/* Central differences of a gauge-invariant loss L = Σ c_i λ_i + ⟨H, V diag(e) Vᵀ⟩ (H symmetric), with
   the GPU forward; gradient from the GPU backward with gW = c, gV = 2 H V diag(e). */
static double fd_loss(int64_t n, const double *A, const double *c, const double *e, const double *H)
{
    buf a = bnew(SG_F64, 1, n, n, 0, 0), w = bnew(SG_F64, 1, n, 1, 0, 0), v = bnew(SG_F64, 1, n, n, 0, 0);
    bset(&a, A);
    cr_assert_eq(sg_eigh(gpu, &a.h, &w.h, &v.h), SG_OK, "%s", sg_last_error(gpu));
    double *W = dalloc(n), *V = dalloc(n * n), L = 0;
    bget(&w, W), bget(&v, V);
    for (int64_t i = 0; i < n; i++) L += c[i] * W[i];
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < n; i++) {
            double p = 0;
            for (int64_t k = 0; k < n; k++) p += V[i + k * n] * e[k] * V[j + k * n];
            L += H[i + j * n] * p;
        }
    free(W), free(V), bfree(&a), bfree(&w), bfree(&v);
    return L;
}

Test(gpu_grad, eigh_backward_matches_central_differences_f64)
{
    NEED_GPU();
    tu_rng r = tu_seed(14);
    const int64_t n = 6, nn = n * n;
    double w0[6] = {0.5, 1.3, 2.0, 2.9, 4.1, 5.0}, A[36], dA[36], Ap[36], Am[36], c[6], e[6], H[36], Hs[36];
    tu_sym_with_spectrum(&r, n, w0, A);
    tu_fill_normal(&r, c, n), tu_fill_normal(&r, e, n), tu_fill_normal(&r, H, nn), tu_fill_normal(&r, dA, nn);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < n; i++) Hs[i + j * n] = 0.5 * (H[i + j * n] + H[j + i * n]);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < j; i++) dA[i + j * n] = dA[j + i * n]; /* symmetric direction */
    /* analytic: forward on the GPU, then backward on the GPU */
    buf a = bnew(SG_F64, 1, n, n, 0, 0), w = bnew(SG_F64, 1, n, 1, 0, 0), v = bnew(SG_F64, 1, n, n, 0, 0);
    bset(&a, A);
    cr_assert_eq(sg_eigh(gpu, &a.h, &w.h, &v.h), SG_OK, "%s", sg_last_error(gpu));
    double W[6], V[36], gV[36], VE[36], gA[36];
    bget(&w, W), bget(&v, V);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < n; i++) VE[i + j * n] = V[i + j * n] * e[j];
    tu_gemm(0, 0, n, n, n, Hs, VE, gV);
    for (int64_t i = 0; i < nn; i++) gV[i] *= 2;
    int64_t f;
    cr_assert_eq(run_eigh_bw(gpu, 0, 0, SG_F64, 1, n, W, V, c, gV, SG_DEGEN_EXACT, gA, &f), SG_OK, "%s", sg_last_error(gpu));
    double an = 0;
    for (int64_t i = 0; i < nn; i++) an += gA[i] * dA[i];
    const double h = 1e-6;
    for (int64_t i = 0; i < nn; i++) Ap[i] = A[i] + h * dA[i], Am[i] = A[i] - h * dA[i];
    double fd = (fd_loss(n, Ap, c, e, Hs) - fd_loss(n, Am, c, e, Hs)) / (2 * h);
    cr_expect_leq(fabs(fd - an), 1e-6 * (1 + fabs(an)), "central difference %.12g vs backward %.12g", fd, an);
    bfree(&a), bfree(&w), bfree(&v);
}

/* ---- SVD backward ----------------------------------------------------------------------------- */
static sg_status run_svd_bw(sg_ctx *c, int dev, int pad, sg_dtype t, int64_t batch, int64_t m, int64_t n, int full,
                            const double *U, const double *S, const double *V, const double *gU, const double *gS,
                            const double *gV, sg_degen mode, double *out, int64_t *failed)
{
    int64_t k = m < n ? m : n, uc = full ? m : k, vc = full ? n : k;
    if (c == gpu) cr_assert_eq(sg_set_memspace(c, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
    int d = c == gpu && dev;
    buf u = bnew(t, batch, m, uc, pad, d), s = bnew(t, batch, k, 1, pad, d), v = bnew(t, batch, n, vc, pad, d),
        gu = bnew(t, batch, m, uc, pad, d), gs = bnew(t, batch, k, 1, pad, d), gv = bnew(t, batch, n, vc, pad, d),
        ga = bnew(t, batch, m, n, pad, d);
    bset(&u, U), bset(&s, S), bset(&v, V);
    if (gU) bset(&gu, gU);
    if (gS) bset(&gs, gS);
    if (gV) bset(&gv, gV);
    sg_status st = sg_svd_backward(c, bm(&u), bm(&s), bm(&v), gU ? bm(&gu) : NULL, gS ? bm(&gs) : NULL,
                                   gV ? bm(&gv) : NULL, mode, 0, bm(&ga));
    *failed = sg_failed_index(c);
    if (st == SG_OK || st == SG_ERR_DEGENERATE) bget(&ga, out);
    bfree(&u), bfree(&s), bfree(&v), bfree(&gu), bfree(&gs), bfree(&gv), bfree(&ga);
    if (c == gpu) sg_set_memspace(c, SG_MEM_HOST);
    return st;
}

/* U (m×uc), V (n×vc) orthonormal columns; S descending positive with gaps, tie in matrix tie_b. */
static void make_svd(tu_rng *r, int64_t batch, int64_t m, int64_t n, int full, int64_t tie_b, double *U, double *S,
                     double *V)
{
    int64_t k = m < n ? m : n, uc = full ? m : k, vc = full ? n : k;
    double *Qm = dalloc(m * m), *Qn = dalloc(n * n);
    for (int64_t b = 0; b < batch; b++) {
        tu_orthogonal(r, m, Qm), tu_orthogonal(r, n, Qn);
        memcpy(U + b * m * uc, Qm, sizeof(double) * m * uc);
        memcpy(V + b * n * vc, Qn, sizeof(double) * n * vc);
        double x = 1.0 + tu_uniform(r);
        for (int64_t i = k - 1; i >= 0; i--) {
            S[b * k + i] = x;
            x += 0.5 + tu_uniform(r);
        }
        if (b == tie_b && k > 1) S[b * k + 1] = S[b * k];
    }
    free(Qm), free(Qn);
}

Test(gpu_grad, svd_backward_parity_shapes_modes_memspaces)
{
    NEED_GPU();
    tu_rng r = tu_seed(21);
    const int64_t batch = 2, shapes[][2] = {{1, 1}, {8, 8}, {33, 20}, {20, 33}, {64, 64}, {65, 40}, {5, 1}, {1, 5}, {128, 100}};
    for (int ti = 0; ti < 2; ti++)
        for (int si = 0; si < 9; si++)
            for (int full = 0; full < 2; full++) {
                sg_dtype t = DTYPES[ti];
                int64_t m = shapes[si][0], n = shapes[si][1], k = m < n ? m : n, uc = full ? m : k, vc = full ? n : k;
                double *U = dalloc(batch * m * uc), *S = dalloc(batch * k), *V = dalloc(batch * n * vc),
                       *gU = dalloc(batch * m * uc), *gS = dalloc(batch * k), *gV = dalloc(batch * n * vc),
                       *ref = dalloc(batch * m * n), *out = dalloc(batch * m * n);
                make_svd(&r, batch, m, n, full, -1, U, S, V);
                tu_fill_normal(&r, gU, batch * m * uc), tu_fill_normal(&r, gS, batch * k), tu_fill_normal(&r, gV, batch * n * vc);
                for (int mode = SG_DEGEN_EXACT; mode <= SG_DEGEN_TAYLOR; mode++)
                    for (int which = 0; which < 4; which++) { /* all, gU only, gV only, gS only */
                        const double *pu = which == 0 || which == 1 ? gU : NULL, *pv = which == 0 || which == 2 ? gV : NULL,
                                     *ps = which == 0 || which == 3 ? gS : NULL;
                        int dev = (which + mode) % 2, pad = (si + which) % 2;
                        int64_t f;
                        cr_assert_eq(run_svd_bw(cpu, 0, pad, t, batch, m, n, full, U, S, V, pu, ps, pv, (sg_degen)mode, ref, &f),
                                     SG_OK, "cpu: %s", sg_last_error(cpu));
                        sg_status s = run_svd_bw(gpu, dev, pad, t, batch, m, n, full, U, S, V, pu, ps, pv, (sg_degen)mode, out, &f);
                        cr_assert_eq(s, SG_OK, "gpu %s %lldx%lld full %d mode %d which %d: %s", dn(t), (long long)m,
                                     (long long)n, full, mode, which, sg_last_error(gpu));
                        double e = rel_err(out, ref, batch * m * n);
                        cr_expect_leq(e, tol_of(t), "svd_backward %s %lldx%lld full %d mode %d which %d dev %d: %.3g", dn(t),
                                      (long long)m, (long long)n, full, mode, which, dev, e);
                    }
                free(U), free(S), free(V), free(gU), free(gS), free(gV), free(ref), free(out);
            }
}

Test(gpu_grad, svd_backward_exact_ties_degenerate_mask_finite)
{
    NEED_GPU();
    tu_rng r = tu_seed(22);
    const int64_t batch = 3, m = 40, n = 30, k = 30;
    double *U = dalloc(batch * m * k), *S = dalloc(batch * k), *V = dalloc(batch * n * k), *gU = dalloc(batch * m * k),
           *gV = dalloc(batch * n * k), *ref = dalloc(batch * m * n), *out = dalloc(batch * m * n);
    make_svd(&r, batch, m, n, 0, 2, U, S, V);
    tu_fill_normal(&r, gU, batch * m * k), tu_fill_normal(&r, gV, batch * n * k);
    for (int ti = 0; ti < 2; ti++) {
        int64_t f1, f2;
        sg_dtype t = DTYPES[ti];
        cr_expect_eq(run_svd_bw(cpu, 0, 0, t, batch, m, n, 0, U, S, V, gU, NULL, gV, SG_DEGEN_EXACT, ref, &f1), SG_ERR_DEGENERATE);
        cr_expect_eq(run_svd_bw(gpu, 1, 0, t, batch, m, n, 0, U, S, V, gU, NULL, gV, SG_DEGEN_EXACT, out, &f2),
                     SG_ERR_DEGENERATE, "%s", sg_last_error(gpu));
        cr_expect_eq(f1, 2);
        cr_expect_eq(f2, 2);
        cr_expect_leq(rel_err(out, ref, 2 * m * n), tol_of(t));
        cr_assert_eq(run_svd_bw(cpu, 0, 0, t, batch, m, n, 0, U, S, V, gU, NULL, gV, SG_DEGEN_MASK, ref, &f1), SG_OK);
        cr_assert_eq(run_svd_bw(gpu, 0, 1, t, batch, m, n, 0, U, S, V, gU, NULL, gV, SG_DEGEN_MASK, out, &f2), SG_OK, "%s",
                     sg_last_error(gpu));
        cr_expect(all_finite(out, batch * m * n));
        cr_expect_leq(rel_err(out, ref, batch * m * n), tol_of(t));
    }
    free(U), free(S), free(V), free(gU), free(gV), free(ref), free(out);
}

/* ---- NaN/Inf in device-resident inputs ---------------------------------------------------------- */
/* Operand k of eigh_backward (W, V, gW, gV), svd_backward (U, S, V, gU, gS, gV; square n×n) or
   matfunc_backward (W, V, gF) gets a NaN or -Inf at the last element of matrix 2: SG_ERR_NONFINITE (before
   matfunc's domain check), index 2, the message names the operand and the kind, and gA (filled with 7) is
   untouched, on the fused (n = 8) and cuBLAS (n = 65) paths. */
Test(gpu_grad, nonfinite_device_inputs_name_the_operand_and_leave_gA)
{
    NEED_GPU();
    tu_rng r = tu_seed(71);
    const int64_t batch = 3, sizes[] = {8, 65};
    for (int ti = 0; ti < 2; ti++)
        for (int si = 0; si < 2; si++) {
            sg_dtype t = DTYPES[ti];
            const int64_t n = sizes[si], nn = n * n;
            double *W = dalloc(batch * n), *V = dalloc(batch * nn), *gW = dalloc(batch * n), *gV = dalloc(batch * nn);
            double *U = dalloc(batch * nn), *S = dalloc(batch * n), *Vs = dalloc(batch * nn), *gU = dalloc(batch * nn),
                   *gS = dalloc(batch * n), *gVs = dalloc(batch * nn), *seven = dalloc(batch * nn), *out = dalloc(batch * nn);
            make_eig(&r, batch, n, -1, W, V);
            make_svd(&r, batch, n, n, 0, -1, U, S, Vs);
            tu_fill_normal(&r, gW, batch * n), tu_fill_normal(&r, gV, batch * nn), tu_fill_normal(&r, gU, batch * nn);
            tu_fill_normal(&r, gS, batch * n), tu_fill_normal(&r, gVs, batch * nn);
            for (int64_t i = 0; i < batch * nn; i++) seven[i] = 7;
            cr_assert_eq(sg_set_memspace(gpu, SG_MEM_DEVICE), SG_OK);
            static const char *opn[3] = {"eigh", "svd", "matfunc"};
            const sg_fn sq = {SG_FN_SQRT, 0, NULL, NULL, NULL};
            for (int op = 0; op < 3; op++) {
                const int nop = op == 1 ? 6 : op ? 3 : 4;
                double *x[6] = {W, V, gW, gV}, *sv[6] = {U, S, Vs, gU, gS, gVs}, *mv[6] = {W, V, gV};
                static const char *en[6] = {"W", "V", "gW", "gV"}, *sn[6] = {"U", "S", "V", "gU", "gS", "gV"},
                                  *mn[6] = {"W", "V", "gF"};
                const int64_t ecols[6] = {1, n, 1, n}, scols[6] = {n, 1, n, n, 1, n}, mcols[6] = {1, n, n};
                for (int k = 0; k < nop; k++)
                    for (int inf = 0; inf < 2; inf++) {
                        buf b[6], ga = bnew(t, batch, n, n, 0, 1);
                        double **src = op == 1 ? sv : op ? mv : x;
                        const int64_t *cols = op == 1 ? scols : op ? mcols : ecols, at = (2 + 1) * n * cols[k] - 1;
                        const char *name = (op == 1 ? sn : op ? mn : en)[k], *kind = inf ? "Inf" : "NaN";
                        const double keep = src[k][at];
                        src[k][at] = inf ? -INFINITY : NAN;
                        for (int i = 0; i < nop; i++) {
                            b[i] = bnew(t, batch, n, cols[i], 0, 1);
                            bset(&b[i], src[i]);
                        }
                        src[k][at] = keep;
                        bset(&ga, seven);
                        sg_status st =
                            op == 1 ? sg_svd_backward(gpu, bm(&b[0]), bm(&b[1]), bm(&b[2]), bm(&b[3]), bm(&b[4]),
                                                      bm(&b[5]), SG_DEGEN_MASK, 0, bm(&ga))
                            : op ? sg_matfunc_backward(gpu, bm(&b[0]), bm(&b[1]), &sq, bm(&b[2]), bm(&ga))
                                 : sg_eigh_backward(gpu, bm(&b[0]), bm(&b[1]), bm(&b[2]), bm(&b[3]), SG_DEGEN_MASK, 0,
                                                    bm(&ga));
                        const char *err = sg_last_error(gpu);
                        size_t ln = strlen(name);
                        cr_expect_eq(st, SG_ERR_NONFINITE, "%s_backward %s n=%lld, %s in %s: status %d (%s)", opn[op],
                                     dn(t), (long long)n, kind, name, (int)st, err);
                        cr_expect_eq(sg_failed_index(gpu), 2, "%s in %s: index", kind, name);
                        cr_expect(strncmp(err, name, ln) == 0 && err[ln] == ':' && strstr(err, kind) != NULL,
                                  "%s in %s: message \"%s\"", kind, name, err);
                        bget(&ga, out);
                        int64_t touched = 0;
                        for (int64_t i = 0; i < batch * nn; i++) touched += out[i] != 7;
                        cr_expect_eq(touched, 0, "%s_backward %s n=%lld, %s in %s: %lld elements of gA written",
                                     opn[op], dn(t), (long long)n, kind, name, (long long)touched);
                        for (int i = 0; i < nop; i++) bfree(&b[i]);
                        bfree(&ga);
                    }
            }
            sg_set_memspace(gpu, SG_MEM_HOST);
            free(W), free(V), free(gW), free(gV), free(U), free(S), free(Vs), free(gU), free(gS), free(gVs), free(seven),
                free(out);
        }
}

/* ---- matrix functions ------------------------------------------------------------------------- */
static const sg_fn FNS[] = {{SG_FN_SQRT, 0, NULL, NULL, NULL},
                            {SG_FN_LOG, 0, NULL, NULL, NULL},
                            {SG_FN_EXP, 0, NULL, NULL, NULL},
                            {SG_FN_POW, 1.5, NULL, NULL, NULL}};

/* Symmetric A_b = Q diag(w) Qᵀ with positive spectrum; neg_b >= 0 gets a negative eigenvalue. */
static void make_sym(tu_rng *r, int64_t batch, int64_t n, int64_t neg_b, double *A)
{
    double *w = dalloc(n);
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t i = 0; i < n; i++) w[i] = 0.5 + 0.1 * (double)i + 0.05 * tu_uniform(r);
        if (b == neg_b) w[0] = -1.0;
        tu_sym_with_spectrum(r, n, w, A + b * n * n);
    }
    free(w);
}

/* wout, vout (optional): also ask for the decomposition; read back whatever the call left there
   (NaN-poisoned when unwritten). */
static sg_status run_matfunc(sg_ctx *c, int dev, int pad, sg_dtype t, int64_t batch, int64_t n, const double *A,
                             const sg_fn *fn, double *out, int64_t *failed, double *wout, double *vout)
{
    if (c == gpu) cr_assert_eq(sg_set_memspace(c, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
    int d = c == gpu && dev;
    buf a = bnew(t, batch, n, n, pad, d), f = bnew(t, batch, n, n, pad, d), w = bnew(t, batch, n, 1, pad, d),
        v = bnew(t, batch, n, n, pad, d);
    bset(&a, A);
    sg_status s = sg_matfunc(c, bm(&a), fn, bm(&f), wout ? bm(&w) : NULL, vout ? bm(&v) : NULL);
    *failed = sg_failed_index(c);
    if (s == SG_OK) bget(&f, out);
    if (wout) bget(&w, wout);
    if (vout) bget(&v, vout);
    bfree(&a), bfree(&f), bfree(&w), bfree(&v);
    if (c == gpu) sg_set_memspace(c, SG_MEM_HOST);
    return s;
}

Test(gpu_grad, matfunc_parity_and_domain)
{
    NEED_GPU();
    tu_rng r = tu_seed(31);
    const int64_t batch = 3;
    for (int ti = 0; ti < 2; ti++)
        for (int si = 0; si < NSIZES; si++) {
            sg_dtype t = DTYPES[ti];
            int64_t n = SIZES[si], nn = n * n, f;
            double *A = dalloc(batch * nn), *ref = dalloc(batch * nn), *out = dalloc(batch * nn);
            double *wc = dalloc(batch * n), *wg = dalloc(batch * n), *vg = dalloc(batch * nn), *rec = dalloc(batch * nn);
            make_sym(&r, batch, n, -1, A);
            for (int k = 0; k < 4; k++) {
                int dev = (k + si) % 2, pad = k % 2;
                cr_assert_eq(run_matfunc(cpu, 0, pad, t, batch, n, A, &FNS[k], ref, &f, wc, NULL), SG_OK, "%s",
                             sg_last_error(cpu));
                cr_assert_eq(run_matfunc(gpu, dev, pad, t, batch, n, A, &FNS[k], out, &f, wg, vg), SG_OK,
                             "gpu %s n=%lld fn %d: %s", dn(t), (long long)n, k, sg_last_error(gpu));
                /* the forward goes through two different eigensolvers: eigenvector accuracy bounds this */
                double e = rel_err(out, ref, batch * nn);
                cr_expect_leq(e, t == SG_F32 ? 1e-3 : 1e-8, "matfunc %s n=%lld fn %d: %.3g", dn(t), (long long)n, k, e);
                /* the decomposition it returns: the CPU's eigenvalues, and V diag(W) Vᵀ = A (gauge-free) */
                e = rel_err(wg, wc, batch * n);
                cr_expect_leq(e, t == SG_F32 ? 1e-4 : 1e-11, "matfunc W %s n=%lld fn %d: %.3g", dn(t), (long long)n, k, e);
                for (int64_t b = 0; b < batch; b++)
                    for (int64_t j = 0; j < n; j++)
                        for (int64_t i = 0; i < n; i++) {
                            double x = 0;
                            for (int64_t l = 0; l < n; l++)
                                x += vg[b * nn + l * n + i] * wg[b * n + l] * vg[b * nn + l * n + j];
                            rec[b * nn + j * n + i] = x;
                        }
                e = rel_err(rec, A, batch * nn);
                cr_expect_leq(e, t == SG_F32 ? 1e-4 : 1e-11, "matfunc V diag(W) Vᵀ vs A %s n=%lld fn %d: %.3g", dn(t),
                              (long long)n, k, e);
            }
            make_sym(&r, batch, n, 1, A); /* log of a negative eigenvalue in matrix 1 */
            cr_expect_eq(run_matfunc(cpu, 0, 0, t, batch, n, A, &FNS[1], ref, &f, NULL, NULL), SG_ERR_DOMAIN);
            cr_expect_eq(f, 1);
            cr_expect_eq(run_matfunc(gpu, 1, 0, t, batch, n, A, &FNS[1], out, &f, wg, vg), SG_ERR_DOMAIN, "%s",
                         sg_last_error(gpu));
            cr_expect_eq(f, 1);
            int written = 0;
            for (int64_t i = 0; i < batch * n; i++) written += !isnan(wg[i]);
            for (int64_t i = 0; i < batch * nn; i++) written += !isnan(vg[i]);
            cr_expect_eq(written, 0, "matfunc %s n=%lld: W/V written on a domain error", dn(t), (long long)n);
            free(A), free(ref), free(out), free(wc), free(wg), free(vg), free(rec);
        }
}

static double cb_f(double x, void *u) { (void)u; return x * x; }
static double cb_df(double x, void *u) { (void)u; return 2 * x; }

Test(gpu_grad, callbacks_are_cpu_only)
{
    NEED_GPU();
    double A[4] = {2, 0, 0, 3}, F[4], W[2] = {2, 3}, V[4] = {1, 0, 0, 1}, G[4] = {1, 0, 0, 1}, L[1];
    sg_fn cb = {SG_FN_CALLBACK, 0, cb_f, cb_df, NULL};
    sg_mat a = sg_mat_dense(A, SG_F64, 1, 2, 2), f = sg_mat_dense(F, SG_F64, 1, 2, 2), w = sg_mat_dense(W, SG_F64, 1, 2, 1),
           v = sg_mat_dense(V, SG_F64, 1, 2, 2), g = sg_mat_dense(G, SG_F64, 1, 2, 2), l = sg_mat_dense(L, SG_F64, 1, 1, 1);
    cr_expect_eq(sg_matfunc(gpu, &a, &cb, &f, NULL, NULL), SG_ERR_UNSUPPORTED);
    cr_expect(strstr(sg_last_error(gpu), "CPU") != NULL, "%s", sg_last_error(gpu));
    cr_expect_eq(sg_matfunc_backward(gpu, &w, &v, &cb, &g, &f), SG_ERR_UNSUPPORTED);
    cr_expect_eq(sg_regularizer(gpu, SG_REG_EIGSUM, &a, &cb, &l, &f), SG_ERR_UNSUPPORTED);
}

static sg_status run_matfunc_bw(sg_ctx *c, int dev, int pad, sg_dtype t, int64_t batch, int64_t n, const double *W,
                                const double *V, const sg_fn *fn, const double *gF, double *out, int64_t *failed)
{
    if (c == gpu) cr_assert_eq(sg_set_memspace(c, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
    int d = c == gpu && dev;
    buf w = bnew(t, batch, n, 1, pad, d), v = bnew(t, batch, n, n, pad, d), g = bnew(t, batch, n, n, pad, d),
        ga = bnew(t, batch, n, n, pad, d);
    bset(&w, W), bset(&v, V), bset(&g, gF);
    sg_status s = sg_matfunc_backward(c, bm(&w), bm(&v), fn, bm(&g), bm(&ga));
    *failed = sg_failed_index(c);
    if (s == SG_OK || s == SG_ERR_DOMAIN) bget(&ga, out); /* DOMAIN: also after gA (non-finite gradient) */
    bfree(&w), bfree(&v), bfree(&g), bfree(&ga);
    if (c == gpu) sg_set_memspace(c, SG_MEM_HOST);
    return s;
}

/* Input check off (sg_set_check_finite 0), a NaN or Inf in one matrix of a gradient input (W: every E_ij of
   that row; gV / gF: one element). The GPU does what the CPU reference does: the same status (a non-finite
   gradient is SG_ERR_DEGENERATE / SG_ERR_DOMAIN naming that matrix, gA written), that matrix's gA
   non-finite on both or neither, every other matrix as on the CPU. Fused (n = 8) and cuBLAS (n = 65)
   paths, host and device memory. */
Test(gpu_grad, check_off_nonfinite_propagates_within_its_matrix)
{
    NEED_GPU();
    tu_rng r = tu_seed(72);
    const int64_t batch = 4, bad = 2, sizes[] = {8, 65};
    static const char *opn[3] = {"eigh_backward", "svd_backward", "matfunc_backward"};
    const sg_fn ex = {SG_FN_EXP, 0, NULL, NULL, NULL};
    cr_assert_eq(sg_set_check_finite(cpu, 0), SG_OK);
    cr_assert_eq(sg_set_check_finite(gpu, 0), SG_OK);
    for (int ti = 0; ti < 2; ti++)
        for (int si = 0; si < 2; si++)
            for (int dev = 0; dev < 2; dev++)
                for (int op = 0; op < 3; op++)
                    for (int in = 0; in < 2; in++) { /* 0: the values (W, S), 1: the cotangent (gV, gF) */
                        const sg_dtype t = DTYPES[ti];
                        const int64_t n = sizes[si], nn = n * n;
                        double *W = dalloc(batch * n), *V = dalloc(batch * nn), *U = dalloc(batch * nn),
                               *gW = dalloc(batch * n), *gV = dalloc(batch * nn), *gU = dalloc(batch * nn),
                               *og = dalloc(batch * nn), *oc = dalloc(batch * nn);
                        if (op == 1) make_svd(&r, batch, n, n, 0, -1, U, W, V);
                        else make_eig(&r, batch, n, -1, W, V);
                        tu_fill_normal(&r, gW, batch * n), tu_fill_normal(&r, gV, batch * nn);
                        tu_fill_normal(&r, gU, batch * nn);
                        const double nf = (in + si + ti) & 1 ? NAN : INFINITY;
                        if (in) gV[bad * nn + n + 1] = nf;
                        else W[bad * n + n / 2] = nf;
                        int64_t fg, fc;
                        sg_status sg, sc;
                        if (op == 0) {
                            sg = run_eigh_bw(gpu, dev, 0, t, batch, n, W, V, gW, gV, SG_DEGEN_MASK, og, &fg);
                            sc = run_eigh_bw(cpu, 0, 0, t, batch, n, W, V, gW, gV, SG_DEGEN_MASK, oc, &fc);
                        } else if (op == 1) {
                            sg = run_svd_bw(gpu, dev, 0, t, batch, n, n, 0, U, W, V, gU, gW, gV, SG_DEGEN_MASK, og, &fg);
                            sc = run_svd_bw(cpu, 0, 0, t, batch, n, n, 0, U, W, V, gU, gW, gV, SG_DEGEN_MASK, oc, &fc);
                        } else {
                            sg = run_matfunc_bw(gpu, dev, 0, t, batch, n, W, V, &ex, gV, og, &fg);
                            sc = run_matfunc_bw(cpu, 0, 0, t, batch, n, W, V, &ex, gV, oc, &fc);
                        }
                        const char *where = opn[op];
                        cr_expect_eq(sg, sc, "%s %s n=%lld %s memory, %g in %s of matrix %lld: %s (%s), CPU %s (%s)",
                                     where, dn(t), (long long)n, dev ? "device" : "host", nf, in ? "gV" : "W",
                                     (long long)bad, sg_status_string(sg), sg_last_error(gpu), sg_status_string(sc),
                                     sg_last_error(cpu));
                        if (sc != SG_OK) {
                            cr_expect(sc == SG_ERR_DEGENERATE || sc == SG_ERR_DOMAIN, "CPU %s: %s", where,
                                      sg_last_error(cpu));
                            cr_expect_eq(fc, bad, "CPU %s: failed index %lld", where, (long long)fc);
                        }
                        if (sg != SG_OK) cr_expect_eq(fg, bad, "%s: failed index %lld", where, (long long)fg);
                        /* matfunc_backward: a NaN/Inf eigenvalue is outside f's domain (found before gA is
                           written), and a non-finite gradient is SG_ERR_DOMAIN too, after which gA "may have been
                           written" (specgrad.h; CUDA with host memory does not copy back the failing chunk).
                           DEGENERATE promises gA: compared. */
                        if (op == 2) {
                            cr_expect_eq(sc, SG_ERR_DOMAIN, "CPU %s, %g in %s: %s", where, nf,
                                         in ? "gF" : "W", sg_status_string(sc));
                            goto next;
                        }
                        if (sg != sc) goto next;
                        /* the matrix with the NaN/Inf: its gA carries it, on both backends (an Inf eigenvalue
                           used to be swallowed by the mask, whose tolerance scales with max|λ|) */
                        cr_expect(!all_finite(og + bad * nn, nn) && !all_finite(oc + bad * nn, nn),
                                  "%s %s n=%lld: %g in %s of matrix %lld: gA finite on the %s", where, dn(t),
                                  (long long)n, nf, in ? "gV" : "W", (long long)bad,
                                  all_finite(og + bad * nn, nn) ? "GPU" : "CPU");
                        for (int64_t b = 0; b < batch; b++)
                            if (b != bad)
                                cr_expect_leq(rel_err(og + b * nn, oc + b * nn, nn), tol_of(t),
                                              "%s %s n=%lld %s memory: matrix %lld differs from the CPU with %g in "
                                              "matrix %lld", where, dn(t), (long long)n, dev ? "device" : "host",
                                              (long long)b, nf, (long long)bad);
                    next:
                        free(W), free(V), free(U), free(gW), free(gV), free(gU), free(og), free(oc);
                    }
    cr_assert_eq(sg_set_check_finite(cpu, 1), SG_OK);
    cr_assert_eq(sg_set_check_finite(gpu, 1), SG_OK);
}

Test(gpu_grad, matfunc_backward_parity_including_exact_ties)
{
    NEED_GPU();
    tu_rng r = tu_seed(32);
    const int64_t batch = 3;
    for (int ti = 0; ti < 2; ti++)
        for (int si = 0; si < NSIZES; si++) {
            sg_dtype t = DTYPES[ti];
            int64_t n = SIZES[si], nn = n * n, f;
            double *W = dalloc(batch * n), *V = dalloc(batch * nn), *gF = dalloc(batch * nn), *ref = dalloc(batch * nn),
                   *out = dalloc(batch * nn);
            make_eig(&r, batch, n, 1, W, V); /* exact tie in matrix 1: divided differences stay finite */
            /* exp: the spectrum (1 .. ~n) scaled into [0, 20]: exp(λ) of λ ≈ 90 at n = 128 overflows float32 */
            double *We = dalloc(batch * n), wmax = 0;
            for (int64_t i = 0; i < batch * n; i++) wmax = W[i] > wmax ? W[i] : wmax;
            for (int64_t i = 0; i < batch * n; i++) We[i] = W[i] * (20.0 / wmax);
            tu_fill_normal(&r, gF, batch * nn);
            for (int k = 0; k < 4; k++) {
                int dev = (k + si) % 2, pad = (k + 1) % 2;
                const double *Wk = FNS[k].kind == SG_FN_EXP ? We : W;
                cr_assert_eq(run_matfunc_bw(cpu, 0, pad, t, batch, n, Wk, V, &FNS[k], gF, ref, &f), SG_OK,
                             "cpu %s n=%lld fn %d: %s", dn(t), (long long)n, k, sg_last_error(cpu));
                cr_assert_eq(run_matfunc_bw(gpu, dev, pad, t, batch, n, Wk, V, &FNS[k], gF, out, &f), SG_OK,
                             "gpu %s n=%lld fn %d: %s", dn(t), (long long)n, k, sg_last_error(gpu));
                int64_t bad = -1;
                for (int64_t i = 0; i < batch * nn && bad < 0; i++)
                    if (!isfinite(out[i])) bad = i;
                cr_expect(bad < 0, "matfunc_backward %s n=%lld fn %d %s pad %d: status OK but non-finite gA at matrix %lld "
                          "element (%lld,%lld) = %g", dn(t), (long long)n, k, dev ? "device" : "host", pad,
                          (long long)(bad / nn), (long long)(bad % nn % n), (long long)(bad % nn / n), bad >= 0 ? out[bad] : 0.0);
                double e = rel_err(out, ref, batch * nn);
                cr_expect_leq(e, tol_of(t), "matfunc_backward %s n=%lld fn %d: %.3g", dn(t), (long long)n, k, e);
            }
            W[2 * n] = -1; /* matrix 2: log outside its domain */
            cr_expect_eq(run_matfunc_bw(cpu, 0, 0, t, batch, n, W, V, &FNS[1], gF, ref, &f), SG_ERR_DOMAIN);
            cr_expect_eq(f, 2);
            cr_expect_eq(run_matfunc_bw(gpu, 1, 0, t, batch, n, W, V, &FNS[1], gF, out, &f), SG_ERR_DOMAIN, "%s",
                         sg_last_error(gpu));
            cr_expect_eq(f, 2);
            free(W), free(We), free(V), free(gF), free(ref), free(out);
        }
}

/* ---- regularizers ----------------------------------------------------------------------------- */
static char reg_msg[512]; /* run_reg's last error message (sg_set_memspace after the call clears it) */
static sg_status run_reg(sg_ctx *c, int dev, int pad, sg_dtype t, sg_reg kind, int64_t batch, int64_t m, int64_t n,
                         const double *A, const sg_fn *fn, double *loss, double *gA, int64_t *failed)
{
    if (c == gpu) cr_assert_eq(sg_set_memspace(c, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
    int d = c == gpu && dev;
    buf a = bnew(t, batch, m, n, pad, d), l = bnew(t, batch, 1, 1, pad, d), g = bnew(t, batch, m, n, pad, d);
    bset(&a, A);
    sg_status s = sg_regularizer(c, kind, bm(&a), fn, bm(&l), gA ? bm(&g) : NULL);
    *failed = sg_failed_index(c);
    snprintf(reg_msg, sizeof reg_msg, "%s", sg_last_error(c));
    if (s == SG_OK || s == SG_ERR_DOMAIN) { /* DOMAIN: what was written (unwritten reads back as NaN) */
        bget(&l, loss);
        if (gA) bget(&g, gA);
    }
    bfree(&a), bfree(&l), bfree(&g);
    if (c == gpu) sg_set_memspace(c, SG_MEM_HOST);
    return s;
}

Test(gpu_grad, regularizers_parity_and_domain)
{
    NEED_GPU();
    tu_rng r = tu_seed(41);
    const int64_t batch = 3, shapes[][2] = {{1, 1}, {8, 8}, {33, 20}, {20, 33}, {64, 64}, {65, 65}, {128, 128}};
    for (int ti = 0; ti < 2; ti++)
        for (int si = 0; si < 7; si++)
            for (int kind = SG_REG_SPECTRAL; kind <= SG_REG_EIGSUM; kind++) {
                sg_dtype t = DTYPES[ti];
                int square = kind == SG_REG_LOGDET || kind == SG_REG_EIGSUM;
                int64_t m = shapes[si][0], n = square ? m : shapes[si][1], k = m < n ? m : n, f;
                double *A = dalloc(batch * m * n), *l1 = dalloc(batch), *l2 = dalloc(batch), *g1 = dalloc(batch * m * n),
                       *g2 = dalloc(batch * m * n), *s = dalloc(k);
                if (square) make_sym(&r, batch, m, -1, A);
                else
                    for (int64_t b = 0; b < batch; b++) { /* distinct singular values: σ1 > σ2 for the spectral norm */
                        for (int64_t i = 0; i < k; i++) s[i] = 3.0 - 2.0 * (double)i / (double)(k > 1 ? k : 2);
                        tu_mat_with_singular_values(&r, m, n, s, A + b * m * n);
                    }
                const sg_fn *fn = kind == SG_REG_EIGSUM ? &FNS[(si + ti) % 4] : NULL;
                int dev = (si + kind) % 2, pad = (si + kind + ti) % 2;
                for (int grad = 0; grad < 2; grad++) {
                    cr_assert_eq(run_reg(cpu, 0, pad, t, (sg_reg)kind, batch, m, n, A, fn, l1, grad ? g1 : NULL, &f), SG_OK,
                                 "cpu: %s", sg_last_error(cpu));
                    cr_assert_eq(run_reg(gpu, dev, pad, t, (sg_reg)kind, batch, m, n, A, fn, l2, grad ? g2 : NULL, &f), SG_OK,
                                 "gpu %s kind %d %lldx%lld: %s", dn(t), kind, (long long)m, (long long)n, sg_last_error(gpu));
                    double tl = kind == SG_REG_ORTHO ? tol_of(t) : (t == SG_F32 ? 1e-3 : 1e-8);
                    cr_expect_leq(rel_err(l2, l1, batch), tl, "loss %s kind %d %lldx%lld", dn(t), kind, (long long)m,
                                  (long long)n);
                    if (grad)
                        cr_expect_leq(rel_err(g2, g1, batch * m * n), tl, "grad %s kind %d %lldx%lld: %.3g", dn(t), kind,
                                      (long long)m, (long long)n, rel_err(g2, g1, batch * m * n));
                }
                if (kind == SG_REG_LOGDET) {
                    make_sym(&r, batch, m, 2, A);
                    cr_expect_eq(run_reg(cpu, 0, 0, t, SG_REG_LOGDET, batch, m, m, A, NULL, l1, g1, &f), SG_ERR_DOMAIN);
                    cr_expect_eq(f, 2);
                    cr_expect_eq(run_reg(gpu, dev, 0, t, SG_REG_LOGDET, batch, m, m, A, NULL, l2, g2, &f), SG_ERR_DOMAIN,
                                 "%s", sg_last_error(gpu));
                    cr_expect_eq(f, 2);
                }
                free(A), free(l1), free(l2), free(g1), free(g2), free(s);
            }
}

/* Spectra near the ends of the range: λ (σ) scaled by sc = 1e±30 (f32) or 1e±250 (f64), gV (gU, gV) by sc
   as well, so that every term of gA stays O(1): E_ij ~ sc, VᵀgV ~ sc (SVD: 1/(σj² − σi²) ~ sc⁻², formed
   as ((σj − σi)/σmax)(σj/σmax + σi/σmax) in src/formulas.h, times S·UᵀgU ~ sc²). That gA is scale-invariant
   in every mode (MASK's tolerance and LORENTZ's width are relative to max|λ| / σmax², TAYLOR's F scales with
   1/λ): the CPU reference at sc must equal the CPU at scale 1 (squares formed naively would overflow or
   underflow in f32 at 1e±20), and the GPU (fused at n ≤ 64, cuBLAS beyond) must equal the CPU. */
Test(gpu_grad, extreme_scales_match_cpu)
{
    NEED_GPU();
    tu_rng r = tu_seed(41);
    const int64_t batch = 2, NS[] = {8, 33, 65}, SH[][2] = {{8, 8}, {33, 20}, {20, 33}, {65, 40}};
    static const double SC[2][2] = {{1e30, 1e-30}, {1e250, 1e-250}};
    for (int ti = 0; ti < 2; ti++)
        for (int si = 0; si < 2; si++) {
            const sg_dtype t = DTYPES[ti];
            const double sc = SC[ti][si];
            for (int ni = 0; ni < 3; ni++) { /* eigh_backward */
                const int64_t n = NS[ni], nn = n * n;
                double *W = dalloc(batch * n), *V = dalloc(batch * nn), *gW = dalloc(batch * n), *gV = dalloc(batch * nn),
                       *Ws = dalloc(batch * n), *gVs = dalloc(batch * nn), *ref1 = dalloc(batch * nn),
                       *ref = dalloc(batch * nn), *out = dalloc(batch * nn);
                make_eig(&r, batch, n, -1, W, V);
                tu_fill_normal(&r, gW, batch * n), tu_fill_normal(&r, gV, batch * nn);
                for (int64_t i = 0; i < batch * n; i++) Ws[i] = W[i] * sc;
                for (int64_t i = 0; i < batch * nn; i++) gVs[i] = gV[i] * sc;
                for (int mode = SG_DEGEN_EXACT; mode <= SG_DEGEN_TAYLOR; mode++) {
                    const int dev = (mode + ni) % 2;
                    int64_t f;
                    cr_assert_eq(run_eigh_bw(cpu, 0, 0, t, batch, n, Ws, V, gW, gVs, (sg_degen)mode, ref, &f), SG_OK,
                                 "cpu eigh_backward %s n=%lld sc %g mode %d: %s", dn(t), (long long)n, sc, mode,
                                 sg_last_error(cpu));
                    {
                        cr_assert_eq(run_eigh_bw(cpu, 0, 0, t, batch, n, W, V, gW, gV, (sg_degen)mode, ref1, &f), SG_OK);
                        const double e1 = rel_err(ref, ref1, batch * nn);
                        cr_expect_leq(e1, tol_of(t), "cpu eigh_backward %s n=%lld mode %d: sc %g against sc 1: %.3g",
                                      dn(t), (long long)n, mode, sc, e1);
                    }
                    cr_assert_eq(run_eigh_bw(gpu, dev, 0, t, batch, n, Ws, V, gW, gVs, (sg_degen)mode, out, &f), SG_OK,
                                 "gpu eigh_backward %s n=%lld sc %g mode %d dev %d: %s", dn(t), (long long)n, sc, mode,
                                 dev, sg_last_error(gpu));
                    const double e = rel_err(out, ref, batch * nn);
                    cr_expect_leq(e, tol_of(t), "eigh_backward %s n=%lld sc %g mode %d dev %d: %.3g", dn(t),
                                  (long long)n, sc, mode, dev, e);
                }
                free(W), free(V), free(gW), free(gV), free(Ws), free(gVs), free(ref1), free(ref), free(out);
            }
            for (int hi = 0; hi < 4; hi++) { /* svd_backward, economy */
                const int64_t m = SH[hi][0], n = SH[hi][1], k = m < n ? m : n, mn = m * n;
                double *U = dalloc(batch * m * k), *S = dalloc(batch * k), *V = dalloc(batch * n * k),
                       *gU = dalloc(batch * m * k), *gS = dalloc(batch * k), *gV = dalloc(batch * n * k),
                       *Ss = dalloc(batch * k), *gUs = dalloc(batch * m * k), *gVs = dalloc(batch * n * k),
                       *ref1 = dalloc(batch * mn), *ref = dalloc(batch * mn), *out = dalloc(batch * mn);
                make_svd(&r, batch, m, n, 0, -1, U, S, V);
                tu_fill_normal(&r, gU, batch * m * k), tu_fill_normal(&r, gS, batch * k), tu_fill_normal(&r, gV, batch * n * k);
                for (int64_t i = 0; i < batch * k; i++) Ss[i] = S[i] * sc;
                for (int64_t i = 0; i < batch * m * k; i++) gUs[i] = gU[i] * sc;
                for (int64_t i = 0; i < batch * n * k; i++) gVs[i] = gV[i] * sc;
                for (int mode = SG_DEGEN_EXACT; mode <= SG_DEGEN_TAYLOR; mode++) {
                    const int dev = (mode + hi) % 2;
                    int64_t f;
                    cr_assert_eq(run_svd_bw(cpu, 0, 0, t, batch, m, n, 0, U, Ss, V, gUs, gS, gVs, (sg_degen)mode, ref, &f),
                                 SG_OK, "cpu svd_backward %s %lldx%lld sc %g mode %d: %s", dn(t), (long long)m,
                                 (long long)n, sc, mode, sg_last_error(cpu));
                    {
                        cr_assert_eq(run_svd_bw(cpu, 0, 0, t, batch, m, n, 0, U, S, V, gU, gS, gV, (sg_degen)mode, ref1, &f),
                                     SG_OK);
                        const double e1 = rel_err(ref, ref1, batch * mn);
                        cr_expect_leq(e1, tol_of(t), "cpu svd_backward %s %lldx%lld mode %d: sc %g against sc 1: %.3g",
                                      dn(t), (long long)m, (long long)n, mode, sc, e1);
                    }
                    cr_assert_eq(run_svd_bw(gpu, dev, 0, t, batch, m, n, 0, U, Ss, V, gUs, gS, gVs, (sg_degen)mode, out, &f),
                                 SG_OK, "gpu svd_backward %s %lldx%lld sc %g mode %d dev %d: %s", dn(t), (long long)m,
                                 (long long)n, sc, mode, dev, sg_last_error(gpu));
                    const double e = rel_err(out, ref, batch * mn);
                    cr_expect_leq(e, tol_of(t), "svd_backward %s %lldx%lld sc %g mode %d dev %d: %.3g", dn(t),
                                  (long long)m, (long long)n, sc, mode, dev, e);
                }
                free(U), free(S), free(V), free(gU), free(gS), free(gV), free(Ss), free(gUs), free(gVs), free(ref1),
                    free(ref), free(out);
            }
        }
}

/* An overflow found after the outputs are written (the loss of Σ exp(λ) with three λ = 88 in f32; gA of
   matfunc_backward for log at a tiny λ) is SG_ERR_DOMAIN naming the matrix, and every matrix's outputs are
   written, as on the CPU, which records the first failure and carries on: with one chunk (device memory)
   and with one matrix per chunk (host memory, sg_set_chunk_bytes tiny). n = 4 (fused), 65 (cuBLAS). */
Test(gpu_grad, overflow_is_reported_after_every_matrix_is_written)
{
    NEED_GPU();
    const int64_t B = 4, bad = 1;
    static const int64_t NS[] = {4, 65};
    for (int ni = 0; ni < 2; ni++)
        for (int mode = 0; mode < 2; mode++) { /* 0: device memory, one chunk; 1: host memory, one matrix each */
            const int64_t n = NS[ni], nn = n * n;
            tu_rng r = tu_seed(61 + ni);
            double *A = dalloc(B * nn), *w = dalloc(n), *lc = dalloc(B), *lg = dalloc(B), *gc = dalloc(B * nn),
                   *gg = dalloc(B * nn), *W = dalloc(B * n), *V = dalloc(B * nn), *gF = dalloc(B * nn);
            for (int64_t b = 0; b < B; b++) {
                for (int64_t i = 0; i < n; i++) w[i] = b == bad && i < 3 ? 88.0 : 0.5 + 0.01 * (double)i;
                tu_sym_with_spectrum(&r, n, w, A + b * nn);
            }
            cr_assert_eq(sg_set_chunk_bytes(gpu, mode ? 1 : 0), SG_OK);
            /* Σ exp(λ), f32: exp(88) ≈ 1.65e38 is finite, three of them are not */
            const sg_fn ex = {SG_FN_EXP, 0, NULL, NULL, NULL};
            int64_t fc, fg;
            const sg_status sc = run_reg(cpu, 0, 0, SG_F32, SG_REG_EIGSUM, B, n, n, A, &ex, lc, gc, &fc);
            const sg_status sgs = run_reg(gpu, !mode, 0, SG_F32, SG_REG_EIGSUM, B, n, n, A, &ex, lg, gg, &fg);
            cr_expect_eq(sc, SG_ERR_DOMAIN, "cpu eigsum n=%lld: %s", (long long)n, sg_status_string(sc));
            cr_expect_eq(sgs, sc, "gpu eigsum n=%lld mode %d: %s (%s)", (long long)n, mode, sg_status_string(sgs),
                         sg_last_error(gpu));
            cr_expect_eq(fc, bad);
            cr_expect_eq(fg, bad, "gpu eigsum n=%lld mode %d: failed index %lld", (long long)n, mode, (long long)fg);
            for (int64_t b = 0; b < B; b++) {
                cr_expect(b == bad ? !isfinite(lg[b]) : fabs(lg[b] - lc[b]) <= 1e-4 * fabs(lc[b]),
                          "eigsum n=%lld mode %d: loss %lld = %g, cpu %g", (long long)n, mode, (long long)b, lg[b], lc[b]);
                double e = 0, m = 0;
                for (int64_t i = 0; i < nn; i++)
                    e = fmax(e, fabs(gg[b * nn + i] - gc[b * nn + i])), m = fmax(m, fabs(gc[b * nn + i]));
                cr_expect(all_finite(gc + b * nn, nn) && e <= 2e-4 * m, "eigsum n=%lld mode %d: gA of matrix %lld "
                          "differs from the CPU's by %g of %g (unwritten?)", (long long)n, mode, (long long)b, e, m);
            }
            /* matfunc_backward (log): matrix `bad` has λ0 tiny, so log'(λ0) = 1/λ0 is finite (the domain check
               passes) but 1/λ0 · (VᵀgFV)_00 with gF = 100 I overflows in gA; the others' gA are written */
            for (int t = SG_F32; t <= SG_F64; t++) {
                make_eig(&r, B, n, -1, W, V);
                tu_fill_normal(&r, gF, B * nn);
                W[bad * n] = t == SG_F32 ? 2e-38 : 2e-307;
                for (int64_t i = 0; i < nn; i++) gF[bad * nn + i] = i % (n + 1) == 0 ? 100.0 : 0.0;
                const sg_fn sq = {SG_FN_LOG, 0, NULL, NULL, NULL};
                const sg_status c2 = run_matfunc_bw(cpu, 0, 0, (sg_dtype)t, B, n, W, V, &sq, gF, gc, &fc);
                const sg_status g2 = run_matfunc_bw(gpu, !mode, 0, (sg_dtype)t, B, n, W, V, &sq, gF, gg, &fg);
                cr_expect_eq(c2, SG_ERR_DOMAIN, "cpu matfunc_backward %s n=%lld: %s", dn((sg_dtype)t), (long long)n,
                             sg_status_string(c2));
                cr_expect_eq(g2, c2, "gpu matfunc_backward %s n=%lld mode %d: %s (%s)", dn((sg_dtype)t), (long long)n,
                             mode, sg_status_string(g2), sg_last_error(gpu));
                cr_expect_eq(fg, fc, "gpu matfunc_backward %s n=%lld mode %d: failed index %lld, cpu %lld",
                             dn((sg_dtype)t), (long long)n, mode, (long long)fg, (long long)fc);
                for (int64_t b = 0; b < B; b++) {
                    if (b == bad) {
                        cr_expect(!all_finite(gg + b * nn, nn), "matfunc_backward: matrix %lld's gA finite", (long long)b);
                        continue;
                    }
                    const double e = rel_err(gg + b * nn, gc + b * nn, nn);
                    cr_expect_leq(e, tol_of((sg_dtype)t), "matfunc_backward %s n=%lld mode %d: matrix %lld %g "
                                  "(unwritten?)", dn((sg_dtype)t), (long long)n, mode, (long long)b, e);
                }
            }
            cr_assert_eq(sg_set_chunk_bytes(gpu, 0), SG_OK);
            free(A), free(w), free(lc), free(lg), free(gc), free(gg), free(W), free(V), free(gF);
        }
}

/* SPECTRAL, NUCLEAR and ORTHO with a loss that overflows float32 in matrix 1 (σ1 = 1e20, four σ = 1e38,
   entries 1e10): SG_ERR_DOMAIN "loss overflows" naming it, as on the CPU, with every matrix's loss and gA
   written (the failing one's gA is finite). One chunk (device memory) and one matrix per chunk (host). */
Test(gpu_grad, regularizer_loss_overflow_matches_cpu)
{
    NEED_GPU();
    const int64_t B = 4, bad = 1;
    static const int64_t SH[][2] = {{5, 4}, {40, 33}};
    static const sg_reg kinds[] = {SG_REG_SPECTRAL, SG_REG_NUCLEAR, SG_REG_ORTHO};
    for (int si = 0; si < 2; si++)
        for (int ki = 0; ki < 3; ki++)
            for (int mode = 0; mode < 2; mode++) { /* 0: device memory, one chunk; 1: host memory, one matrix each */
                const int64_t m = SH[si][0], n = SH[si][1], mn = m * n;
                tu_rng r = tu_seed(71 + si);
                double *A = dalloc(B * mn), *s = dalloc(n), *lc = dalloc(B), *lg = dalloc(B), *gc = dalloc(B * mn),
                       *gg = dalloc(B * mn);
                for (int64_t b = 0; b < B; b++) {
                    for (int64_t i = 0; i < n; i++)
                        s[i] = b != bad || kinds[ki] == SG_REG_ORTHO ? 2.0 - 1.5 * (double)i / (double)n
                               : kinds[ki] == SG_REG_SPECTRAL        ? 1e20 / (double)(1 + i)
                                                                     : 1e38;
                    tu_mat_with_singular_values(&r, m, n, s, A + b * mn);
                    if (b == bad && kinds[ki] == SG_REG_ORTHO)
                        for (int64_t i = 0; i < mn; i++) A[b * mn + i] *= 1e10;
                }
                cr_assert_eq(sg_set_chunk_bytes(gpu, mode ? 1 : 0), SG_OK);
                int64_t fc, fg;
                const sg_status sc = run_reg(cpu, 0, 0, SG_F32, kinds[ki], B, m, n, A, NULL, lc, gc, &fc);
                const sg_status sgs = run_reg(gpu, !mode, mode, SG_F32, kinds[ki], B, m, n, A, NULL, lg, gg, &fg);
                cr_expect_eq(sc, SG_ERR_DOMAIN, "cpu reg %d %lldx%lld: %s", (int)kinds[ki], (long long)m, (long long)n,
                             sg_status_string(sc));
                cr_expect_eq(sgs, sc, "gpu reg %d %lldx%lld mode %d: %s (%s)", (int)kinds[ki], (long long)m,
                             (long long)n, mode, sg_status_string(sgs), reg_msg);
                cr_expect_eq(fg, fc, "gpu reg %d mode %d: failed index %lld, cpu %lld", (int)kinds[ki], mode,
                             (long long)fg, (long long)fc);
                cr_expect(strstr(reg_msg, "loss overflows in matrix 1") != NULL, "%s", reg_msg);
                for (int64_t b = 0; b < B; b++) {
                    cr_expect(b == bad ? isinf(lg[b]) : fabs(lg[b] - lc[b]) <= 1e-4 * fabs(lc[b]),
                              "reg %d mode %d: loss %lld = %g, cpu %g", (int)kinds[ki], mode, (long long)b, lg[b], lc[b]);
                    const double e = rel_err(gg + b * mn, gc + b * mn, mn);
                    cr_expect(all_finite(gc + b * mn, mn) && e <= tol_of(SG_F32),
                              "reg %d %lldx%lld mode %d: gA of matrix %lld differs from the CPU's by %g (unwritten?)",
                              (int)kinds[ki], (long long)m, (long long)n, mode, (long long)b, e);
                }
                cr_assert_eq(sg_set_chunk_bytes(gpu, 0), SG_OK);
                free(A), free(s), free(lc), free(lg), free(gc), free(gg);
            }
}

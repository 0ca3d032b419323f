/* The small / elementwise kernels of cuda/grad_kernels.cuh (the cuBLAS path of eigh and matfunc backward
   for n > 64, SVD backward, matrix functions and regularizers) executed on the CPU through
   tests/emu/cuda_emu.h: k_scale, k_middle, k_sym_store, k_flag_nonfinite, k_spectral_fn, k_svd_inner,
   k_div_sigma, k_spectral_grad, k_vec_loss, k_ortho, k_scale_cols, and fused_svd_backward (next to the
   cuBLAS chain it replaces for max(m,n) <= 64; the other fused kernels are in tests/test_kernel_emu.cpp).

   Every launch uses the grid / block / shared memory of its launch site in cuda/grad.cu (grid_1d mirrored
   below) and that site's argument conventions (dense scratch, strides, flag bits, what/der/fkind codes).
   Expected values come from the formula each kernel implements, written as a direct loop in the CPU
   reference's order of operations (src/cpu_grad_impl.h) with the shared per-element formulas of
   src/formulas.h (sg_inv_gap_*, sg_divdiff, sg_fn_*); comparisons are f64 1e-12 / f32 1e-5 relative, and
   non-finite entries must sit at the same places. The end-to-end tests chain the kernels exactly as
   grad.cu's cuBLAS path does (GEMMs as plain loops here) and compare with sg_eigh_backward /
   sg_matfunc_backward / sg_svd_backward on the CPU backend, statuses against flag bits included. */
#include <criterion/criterion.h>

#include "emu_test.h" /* cuda_emu.h, the CPU reference context, schedules */

#include "grad_kernels.cuh"

#include "specgrad.h"
extern "C" {
#include "testutil.h"
}

#include <algorithm>
#include <vector>

using std::vector;
using namespace sggrad;

/* ---- launch shapes as cuda/grad.cu sets them ------------------------------------------------------------
   grid_1d(work, threads): sg_grid_capped at 32 blocks per SM (H100/H200: 132 SMs), as in grad.cu. Setting
   grid_cap small exercises the grid-stride loops (and k_scale / k_ortho's block-per-matrix loops). */
static const int64_t SMS = 132;
static int64_t grid_cap = SMS * 32;
static unsigned grid_1d(int64_t work, int threads) { return sg_grid_capped(work, threads, grid_cap); }

/* ---- helpers ------------------------------------------------------------------------------------------ */
TestSuite(emu_grad, .init = emu_suite_setup, .fini = emu_suite_teardown);

template <class T> constexpr double tol() { return sizeof(T) == 4 ? 1e-5 : 1e-12; }
template <class T> static vector<T> normal(tu_rng *r, int64_t count, double scale = 1.0)
{
    vector<double> x((size_t)count);
    tu_fill_normal(r, x.data(), count);
    for (double &v : x) v *= scale;
    return to<T>(x);
}

/* Compares got with want: non-finite entries at the same places (both NaN, or the same infinity), the
   finite ones within tol · max(1, max|want|). Returns false (after cr_assert) on mismatch. */
template <class T> static void expect_close(const vector<T> &got, const vector<T> &want, double tl, const char *what)
{
    cr_assert_eq(got.size(), want.size(), "%s: size", what);
    double m = 1, d = 0;
    for (size_t i = 0; i < want.size(); i++)
        if (std::isfinite(want[i])) m = std::max(m, std::fabs((double)want[i]));
    for (size_t i = 0; i < want.size(); i++) {
        const T g = got[i], w = want[i];
        if (!std::isfinite(w)) {
            cr_assert(std::isnan(w) ? std::isnan(g) : g == w, "%s: element %zu is %g, want %g", what, i, (double)g,
                      (double)w);
            continue;
        }
        cr_assert(std::isfinite(g), "%s: element %zu is %g, want %g", what, i, (double)g, (double)w);
        d = std::max(d, std::fabs((double)g - (double)w));
    }
    cr_assert(d <= tl * m, "%s: max abs err %g (scale %g, tol %g)", what, d, m, tl);
}

/* All schedules must agree bitwise (emu_schedules). FREE (256 real OS threads per block) only when asked:
   a few small configurations per test, it costs 256 wake-ups per block. forward_only: the degeneracy
   sweeps of the barrier-free k_middle / k_svd_inner at n >= 65 run under one schedule after the first
   case of each size (their threads share nothing but the flags' atomicOr). */
#if defined(__SANITIZE_ADDRESS__)
static const bool FREE_OK = false; /* ASan stage: OS-thread creation is slow there */
#else
static const bool FREE_OK = true;
#endif
static bool forward_only = false; /* large sweeps of barrier-free kernels: one schedule (time budget) */
template <class F> static vector<unsigned char> all_modes(const char *what, F launch, bool with_free = false)
{
    return emu_schedules(what, launch, with_free && FREE_OK, forward_only);
}

static const int64_t SIZES[] = {1, 2, 31, 32, 33, 65, 100, 129};
/* Every element of a strided batch outside the rows×cols matrices still equals fill. */
template <class T>
static void padding_untouched(const vector<T> &y, int64_t nb, int64_t rows, int64_t cols, int64_t ld, int64_t st,
                              T fill, const char *what)
{
    for (int64_t b = 0; b < nb; b++)
        for (int64_t e = 0; e < st; e++)
            if (e % ld >= rows || e >= ld * cols)
                cr_assert(y[b * st + e] == fill, "%s: padding element %lld of matrix %lld written", what, (long long)e,
                          (long long)b);
}
static const double QNAN = NAN;

/* ======================================================================================================
   k_scale (sym_backward, n > 64: sigma 0, eigenvalues; svd_backward: sigma 1, singular values).
   grid_1d(cnt·256, 256) × 256: one block per matrix, a 256-slot shared max-reduction.
   ====================================================================================================== */
template <class T> static void scale_all()
{
    tu_rng r = tu_seed(31);
    const int64_t ns[] = {1, 2, 31, 32, 33, 65, 100, 129, 255, 257, 300, 513};
    int cfg = 0;
    for (int sigma : {0, 1})
        for (int64_t n : ns)
            for (int capped : {0, 1}) {
                if (capped && n != 33 && n != 300) continue;
                const int64_t nb = capped ? 7 : 5, sx = n + 3;
                vector<T> x = normal<T>(&r, sx * nb, 3.0);
                for (int64_t b = 0; b < nb; b++) {
                    for (int64_t i = n; i < sx; i++) x[b * sx + i] = (T)1e30; /* padding: never read */
                    for (int64_t i = 0; i < n; i++) {
                        T &v = x[b * sx + i];
                        if (sigma) v = std::fabs(v);        /* singular values */
                        if (b == 1) v = T(0);               /* all zero: σ scale 1, λ scale 0 */
                        if (b == 2) v *= T(0.1);            /* |λ| < 1: no floor of 1 (relative mask) */
                    }
                    if (b == 3) x[b * sx + n - 1] = sigma ? T(50) : T(-50); /* the maximum in the last slot */
                }
                vector<T> want((size_t)nb);
                for (int64_t b = 0; b < nb; b++) { /* src/cpu_grad_impl.h: eigh_bwd's scale, svd_bwd's sc */
                    T m = T(0);
                    for (int64_t i = 0; i < n; i++) {
                        const T v = sigma ? x[b * sx + i] : (T)std::fabs(x[b * sx + i]);
                        m = v > m ? v : m;
                    }
                    want[(size_t)b] = sigma ? (m > 0 ? m : T(1)) : m;
                }
                vector<T> out;
                grid_cap = capped ? 2 : SMS * 32;
                all_modes("k_scale", [&] {
                    out.assign((size_t)nb, T(-7));
                    emu_launch(grid_1d(nb * 256, 256), 256, 0, k_scale<T>, (const T *)x.data(), sx, (int)n, nb, sigma,
                               out.data());
                    return bytes(out);
                }, cfg++ % 14 == 0);
                grid_cap = SMS * 32;
                cr_assert(out == want, "k_scale sigma=%d n=%lld capped=%d: got %g want %g (matrix 0)", sigma,
                          (long long)n, capped, (double)out[0], (double)want[0]);
            }
}
Test(emu_grad, k_scale_f32) { scale_all<float>(); }
Test(emu_grad, k_scale_f64) { scale_all<double>(); }

/* ======================================================================================================
   k_middle (sym_backward's cuBLAS path: grid_1d(n²·cnt, 256) × 256), in place on dense M.
   ====================================================================================================== */
/* Eigenvalues per spectrum kind (ascending, as sg_eigh returns them), matrix b:
   0 distinct; 1 exact ties (pairs); 2 near ties: pairs ½·tol·scale apart (tol the mask's param), 2·tol apart
   (masked only where scale = max|λ| > 2: matrices 1 and 2), and one ulp apart; 3 positive distinct;
   4 positive with exact ties; 5 non-negative with a tied pair of zeros (Taylor's 0/0); 6 distinct with one
   NaN in the last matrix (FLAG_TIE there, unless n = 1). */
template <class T> static vector<T> eig_spectrum(int kind, int64_t n, int64_t nb, int64_t sW)
{
    vector<T> W((size_t)(sW * nb), (T)QNAN); /* padding NaN: must never be read */
    const T mtol = (T)sg_degen_param(SG_DM_MASK, 0, sizeof(T) == 4);
    for (int64_t b = 0; b < nb; b++) {
        const double f = kind == 2 ? 1.0 + 1.5 * (double)b : 1.0 + 0.25 * (double)b; /* kind 2: scale 1, 2.5, 4 */
        T *w = W.data() + b * sW;
        for (int64_t i = 0; i < n; i++) {
            const double x = (double)i / (double)std::max<int64_t>(1, n - 1), h = (double)(i / 2) / (double)std::max<int64_t>(1, n / 2);
            switch (kind) {
            case 0: w[i] = (T)((-1.0 + 2.5 * x) * f); break;
            case 1: w[i] = (T)((-1.0 + 2.0 * h) * f); break;
            case 2: w[i] = (T)((-1.0 + 2.0 * h) * f); break;
            case 3: w[i] = (T)((0.5 + 1.5 * x) * f); break;
            case 4: w[i] = (T)((0.5 + h) * f); break;
            case 6: w[i] = (T)((-1.0 + 2.5 * x) * f); break;
            default: w[i] = i < 2 ? T(0) : (T)(x * f); break;
            }
        }
        if (kind == 6 && b == nb - 1) w[n / 2] = (T)QNAN; /* device inputs are not scanned unless asked */
        if (kind == 2) {
            T scale = 1;
            for (int64_t i = 0; i < n; i++) scale = std::max(scale, (T)std::fabs(w[i]));
            for (int64_t i = 1; i < n; i += 2) {
                const int64_t p = i / 2;
                w[i] = p % 3 == 0 ? w[i - 1] + (T)0.5 * mtol * scale
                     : p % 3 == 1 ? w[i - 1] + (T)2 * mtol /* masked iff scale > 2: the mask is relative */
                                  : std::nextafter(w[i - 1], (T)1e30);
            }
        }
    }
    return W;
}

template <class T>
static void middle_eigh_case(tu_rng *r, int64_t n, int64_t nb, int kind, int mode, bool hasM, bool hasGW, bool with_free)
{
    const int64_t nn = n * n, sW = n + 2, sgW = n + 1;
    const vector<T> W = eig_spectrum<T>(kind, n, nb, sW);
    vector<T> gW = normal<T>(r, sgW * nb);
    for (int64_t b = 0; b < nb; b++) gW[b * sgW + n] = (T)QNAN;
    const vector<T> M0 = hasM ? normal<T>(r, nn * nb) : vector<T>((size_t)(nn * nb), (T)QNAN); /* no gV: unread */
    const T param = (T)sg_degen_param(mode, 0.0, sizeof(T) == 4);
    vector<T> scale((size_t)nb);
    for (int64_t b = 0; b < nb; b++) { /* k_scale's sigma = 0 value, as eigh_bwd forms it */
        T s = 1;
        for (int64_t i = 0; i < n; i++) s = std::fabs(W[b * sW + i]) > s ? (T)std::fabs(W[b * sW + i]) : s;
        scale[(size_t)b] = s;
    }
    /* expected: src/cpu_grad_impl.h eigh_bwd's middle matrix G and its tie detection */
    vector<T> want((size_t)(nn * nb));
    vector<int> wflags((size_t)nb, 0);
    int64_t zeroed = 0;
    for (int64_t b = 0; b < nb; b++) {
        const T *w = W.data() + b * sW, *M = M0.data() + b * nn;
        if (b == nb - 1) wflags[(size_t)b] = FLAG_NONFINITE; /* preset: bits are only or'ed in */
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < n; i++) {
                T g = 0;
                if (i == j) g = hasGW ? gW[b * sgW + i] : T(0);
                else if (hasM) {
                    const T F = inv_gap(w[i], w[j], i < j, mode, param, scale[(size_t)b]);
                    if (!std::isfinite(F)) wflags[(size_t)b] |= FLAG_TIE;
                    zeroed += F == T(0);
                    g = (M[i + j * n] - M[j + i * n]) * (T)0.5 * F;
                }
                want[(size_t)(b * nn + i + j * n)] = g;
            }
    }
    if (mode == SG_DM_MASK && kind == 2 && n >= 4) cr_assert(zeroed > 0, "near-tie case without a masked pair");
    vector<T> M;
    vector<int> flags;
    all_modes("k_middle<eigh>", [&] {
        M = M0;
        flags.assign((size_t)nb, 0);
        flags[(size_t)(nb - 1)] = FLAG_NONFINITE;
        emu_launch(grid_1d(nn * nb, 256), 256, 0, k_middle<T, FUSED_EIGH>, M.data(), (int)n, nb, W.data(), sW,
                   hasGW ? gW.data() : nullptr, hasGW ? sgW : 0, (int)hasM, mode, param, (const T *)scale.data(), 0, 0.0,
                   SG_DIVDIFF_REL, flags.data());
        return bytes2(M, flags);
    }, with_free);
    char what[160];
    snprintf(what, sizeof what, "k_middle<eigh> n=%lld nb=%lld spectrum %d mode %d gV %d gW %d", (long long)n,
             (long long)nb, kind, mode, hasM, hasGW);
    expect_close(M, want, tol<T>(), what);
    for (int64_t b = 0; b < nb; b++)
        cr_assert_eq(flags[(size_t)b], wflags[(size_t)b], "%s: matrix %lld flags %d, want %d", what, (long long)b,
                     flags[(size_t)b], wflags[(size_t)b]);
    /* exact ties in exact mode must be flagged, as the CPU reference reports them */
    if (mode == SG_DM_EXACT && hasM && kind == 1 && n >= 2)
        for (int64_t b = 0; b < nb; b++) cr_assert(flags[(size_t)b] & FLAG_TIE, "%s: tie not flagged", what);
    if (kind == 6 && hasM && n >= 2) cr_assert(flags[(size_t)(nb - 1)] & FLAG_TIE, "%s: NaN λ not flagged", what);
}

template <class T> static void middle_eigh_all()
{
    tu_rng r = tu_seed(32);
    for (int64_t n : SIZES) {
        const int64_t nb = n >= 65 ? 2 : 3;
        const bool fr = n == 2 || n == 33;
        middle_eigh_case<T>(&r, n, nb, 0, SG_DM_EXACT, true, true, fr);
        forward_only = n >= 65;
        middle_eigh_case<T>(&r, n, nb, 1, SG_DM_EXACT, true, true, false); /* FLAG_TIE */
        middle_eigh_case<T>(&r, n, nb, 2, SG_DM_EXACT, true, true, false); /* near ties: large but finite */
        middle_eigh_case<T>(&r, n, nb, 1, SG_DM_MASK, true, true, false);
        middle_eigh_case<T>(&r, n, nb, 2, SG_DM_MASK, true, false, false);
        middle_eigh_case<T>(&r, n, nb, 1, SG_DM_LORENTZ, true, true, false);
        middle_eigh_case<T>(&r, n, nb, 2, SG_DM_LORENTZ, true, true, false);
        middle_eigh_case<T>(&r, n, nb, 3, SG_DM_TAYLOR, true, true, false);
        middle_eigh_case<T>(&r, n, nb, 4, SG_DM_TAYLOR, true, true, false); /* exact ties: finite in Taylor */
        middle_eigh_case<T>(&r, n, nb, 5, SG_DM_TAYLOR, true, true, false); /* 0 = 0: FLAG_TIE */
        middle_eigh_case<T>(&r, n, nb, 1, SG_DM_EXACT, false, true, false); /* gW only: no gaps, no flag */
        middle_eigh_case<T>(&r, n, nb, 6, SG_DM_MASK, true, true, false);   /* NaN λ: FLAG_TIE */
        forward_only = false;
    }
    grid_cap = 3; /* grid-stride loop: 3 blocks over 100²·3 elements */
    middle_eigh_case<T>(&r, 100, 3, 1, SG_DM_EXACT, true, true, false);
    middle_eigh_case<T>(&r, 33, 3, 2, SG_DM_MASK, true, true, false);
    grid_cap = SMS * 32;
}
Test(emu_grad, k_middle_eigh_f32) { middle_eigh_all<float>(); }
Test(emu_grad, k_middle_eigh_f64) { middle_eigh_all<double>(); }

/* matfunc: M'_ij = sym(M)_ij · L_ij with the divided differences of src/formulas.h (f' at and near ties);
   k_middle<MATFUNC> gets scale = NULL and must never touch the flags. */
template <class T> static void middle_matfunc_case(tu_rng *r, int64_t n, int64_t nb, int kind, int fk, double fp)
{
    const int64_t nn = n * n, sW = n + 1;
    vector<T> W = eig_spectrum<T>(kind, n, nb, sW);
    if (kind == 4) /* a few one-ulp and sub-threshold gaps: the divided difference's f' branch off the tie */
        for (int64_t b = 0; b < nb; b++)
            for (int64_t i = 3; i < n; i += 4) W[b * sW + i] = std::nextafter(W[b * sW + i - 1], (T)1e30);
    const vector<T> M0 = normal<T>(r, nn * nb);
    vector<T> want((size_t)(nn * nb));
    for (int64_t b = 0; b < nb; b++)
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < n; i++) {
                const T L = (T)sg_divdiff(fk, fp, (double)W[b * sW + i], (double)W[b * sW + j], SG_DIVDIFF_REL);
                const T *M = M0.data() + b * nn;
                want[(size_t)(b * nn + i + j * n)] = (M[i + j * n] + M[j + i * n]) * (T)0.5 * L;
            }
    vector<T> M;
    vector<int> flags;
    all_modes("k_middle<matfunc>", [&] {
        M = M0;
        flags.assign((size_t)nb, 0);
        emu_launch(grid_1d(nn * nb, 256), 256, 0, k_middle<T, FUSED_MATFUNC>, M.data(), (int)n, nb, W.data(), sW,
                   (const T *)nullptr, (int64_t)0, 1, (int)SG_DM_EXACT, T(0), (const T *)nullptr, fk, fp,
                   SG_DIVDIFF_REL, flags.data());
        return bytes2(M, flags);
    });
    char what[128];
    snprintf(what, sizeof what, "k_middle<matfunc> n=%lld spectrum %d fn %d p %g", (long long)n, kind, fk, fp);
    expect_close(M, want, tol<T>(), what);
    for (int f : flags) cr_assert_eq(f, 0, "%s: flags written", what);
}
template <class T> static void middle_matfunc_all()
{
    tu_rng r = tu_seed(33);
    for (int64_t n : SIZES) {
        const int64_t nb = 2;
        middle_matfunc_case<T>(&r, n, nb, 3, SG_FK_SQRT, 0);
        middle_matfunc_case<T>(&r, n, nb, 4, SG_FK_LOG, 0);
        middle_matfunc_case<T>(&r, n, nb, 4, SG_FK_EXP, 0);
        middle_matfunc_case<T>(&r, n, nb, 4, SG_FK_POW, 1.5);
        middle_matfunc_case<T>(&r, n, nb, 3, SG_FK_POW, -0.5);
    }
}
Test(emu_grad, k_middle_matfunc_f32) { middle_matfunc_all<float>(); }
Test(emu_grad, k_middle_matfunc_f64) { middle_matfunc_all<double>(); }

/* ======================================================================================================
   k_sym_store (sym_backward, vdvt: grid_1d(n²·cnt, 256) × 256): out = (X + Xᵀ)/2 with (ld, stride), non-finite
   outputs or'ed into flags as FLAG_NONFINITE (flags may be NULL).
   ====================================================================================================== */
template <class T> static void sym_store_all()
{
    tu_rng r = tu_seed(34);
    int cfg = 0;
    for (int64_t n : SIZES)
        for (int with_flags : {1, 0}) {
            const int64_t nb = 4, nn = n * n, ld = n + 2, so = ld * n + 5;
            vector<T> X = normal<T>(&r, nn * nb);
            X[(size_t)(1 * nn + nn - 1)] = (T)QNAN;                 /* matrix 1: NaN at (n−1, n−1) */
            X[(size_t)(2 * nn + 0)] = (T)INFINITY;                  /* matrix 2: +inf on the diagonal */
            if (n > 1) {                                            /* matrix 3: +inf and −inf mirrored: NaN */
                X[(size_t)(3 * nn + 1)] = (T)INFINITY;
                X[(size_t)(3 * nn + n)] = -(T)INFINITY;
            } else {
                X[(size_t)(3 * nn)] = -(T)INFINITY;
            }
            vector<T> want((size_t)(nn * nb));
            for (int64_t b = 0; b < nb; b++) /* sym_out of src/cpu_grad_impl.h */
                for (int64_t j = 0; j < n; j++)
                    for (int64_t i = 0; i < n; i++)
                        want[(size_t)(b * nn + i + j * n)] = (X[b * nn + i + j * n] + X[b * nn + j + i * n]) * (T)0.5;
            const vector<int> wflags = {FLAG_TIE, FLAG_NONFINITE, FLAG_NONFINITE, FLAG_NONFINITE};
            vector<T> out;
            vector<int> flags;
            all_modes("k_sym_store", [&] {
                out.assign((size_t)(so * nb), T(-9));
                flags.assign((size_t)nb, 0);
                flags[0] = FLAG_TIE; /* set by k_middle before: kept */
                emu_launch(grid_1d(nn * nb, 256), 256, 0, k_sym_store<T>, (const T *)X.data(), (int)n, nb, out.data(),
                           ld, so, with_flags ? flags.data() : nullptr);
                return bytes2(out, flags);
            }, cfg++ % 8 == 0);
            char what[96];
            snprintf(what, sizeof what, "k_sym_store n=%lld flags %d", (long long)n, with_flags);
            padding_untouched(out, nb, n, n, ld, so, T(-9), what);
            expect_close(unpad(out, nb, n, n, ld, so), want, 0.0, what); /* bitwise */
            if (with_flags) cr_assert(flags == wflags, "%s: flags %d %d %d %d", what, flags[0], flags[1], flags[2], flags[3]);
        }
}
Test(emu_grad, k_sym_store_f32) { sym_store_all<float>(); }
Test(emu_grad, k_sym_store_f64) { sym_store_all<double>(); }

/* ======================================================================================================
   k_flag_nonfinite (svd_backward on gA: grid_1d(m·n·cnt, 256) × 256), rows×cols with (ld, stride).
   ====================================================================================================== */
template <class T> static void flag_nonfinite_all()
{
    tu_rng r = tu_seed(35);
    int cfg = 0;
    for (int64_t n : SIZES)
        for (int shape = 0; shape < 3; shape++) {
            const int64_t rows = shape == 0 ? n : shape == 1 ? n + 3 : std::max<int64_t>(1, n / 2), cols = n;
            const int64_t nb = 6, ld = rows + 1, st = ld * cols + 2, rc = rows * cols;
            vector<T> X = pad(normal<T>(&r, rc * nb), nb, rows, cols, ld, st, (T)QNAN); /* NaN padding: ignored */
            auto at = [&](int64_t b, int64_t e) -> T & { return X[(size_t)(b * st + e % rows + e / rows * ld)]; };
            at(1, rc - 1) = (T)QNAN;
            at(2, 0) = (T)INFINITY;
            at(3, rc / 2) = -(T)INFINITY;
            at(5, (int64_t)(tu_uniform(&r) * (double)rc)) = (T)QNAN;
            const vector<int> want = {0, FLAG_NONFINITE, FLAG_NONFINITE, FLAG_NONFINITE, FLAG_TIE,
                                      FLAG_TIE | FLAG_NONFINITE};
            vector<int> flags;
            grid_cap = n == 100 ? 2 : SMS * 32;
            all_modes("k_flag_nonfinite", [&] {
                flags.assign((size_t)nb, 0);
                flags[4] = flags[5] = FLAG_TIE; /* from k_svd_inner: kept */
                emu_launch(grid_1d(rc * nb, 256), 256, 0, k_flag_nonfinite<T>, (const T *)X.data(), ld, st, (int)rows,
                           (int)cols, nb, flags.data());
                return bytes(flags);
            }, cfg++ % 12 == 0);
            grid_cap = SMS * 32;
            for (int64_t b = 0; b < nb; b++)
                cr_assert_eq(flags[(size_t)b], want[(size_t)b], "k_flag_nonfinite %lldx%lld: matrix %lld flags %d, want %d",
                             (long long)rows, (long long)cols, (long long)b, flags[(size_t)b], want[(size_t)b]);
        }
}
Test(emu_grad, k_flag_nonfinite_f32) { flag_nonfinite_all<float>(); }
Test(emu_grad, k_flag_nonfinite_f64) { flag_nonfinite_all<double>(); }

/* ======================================================================================================
   k_scale_cols (vdvt, n > 64: grid_1d(n²·cnt, 256) × 256): Y (dense) = V diag(d), V with (ld, stride).
   ====================================================================================================== */
template <class T> static void scale_cols_all()
{
    tu_rng r = tu_seed(36);
    for (int64_t n : SIZES) {
        const int64_t nb = 3, ld = n + 1, sV = ld * n + 4, nn = n * n;
        const vector<T> V = pad(normal<T>(&r, nn * nb), nb, n, n, ld, sV, (T)QNAN);
        const vector<T> d = normal<T>(&r, n * nb);
        vector<T> want((size_t)(nn * nb));
        for (int64_t b = 0; b < nb; b++) /* vdv of src/cpu_grad_impl.h: X = V diag(d) */
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < n; i++) want[(size_t)(b * nn + i + j * n)] = V[b * sV + i + j * ld] * d[b * n + j];
        vector<T> Y;
        grid_cap = n == 129 ? 5 : SMS * 32;
        all_modes("k_scale_cols", [&] {
            Y.assign((size_t)(nn * nb), T(-9));
            emu_launch(grid_1d(nn * nb, 256), 256, 0, k_scale_cols<T>, (const T *)V.data(), ld, sV, (const T *)d.data(),
                       Y.data(), (int)n, nb);
            return bytes(Y);
        }, n == 33);
        grid_cap = SMS * 32;
        cr_assert(Y == want, "k_scale_cols n=%lld", (long long)n);
    }
}
Test(emu_grad, k_scale_cols_f32) { scale_cols_all<float>(); }
Test(emu_grad, k_scale_cols_f64) { scale_cols_all<double>(); }

/* ======================================================================================================
   k_spectral_fn (grid_1d(cnt, 128) × 128, one thread per matrix) at its three launch sites:
   sym_backward<matfunc>   SPF_CHECK, der 1, no d, no loss        (domain of f and f')
   eig_spectral matfunc    SPF_FVAL,  der 0, d = f(λ), no loss
   eig_spectral eigsum     SPF_FDER,  der 1 with gA (d = f'(λ)) / der 0 loss only (d = NULL), loss Σ f(λ)
   Expected flags: check_dom of src/cpu_grad_impl.h (FLAG_DOMAIN), then FLAG_NONFINITE for a loss that
   overflows T (reg_eig's "loss overflows"); the loss is written only for matrices without a domain error.
   ====================================================================================================== */
struct SpfSite { int what, der; bool d, loss; };
static const SpfSite SPF_SITES[] = {
    {SPF_CHECK, 1, false, false}, {SPF_FVAL, 0, true, false}, {SPF_FDER, 1, true, true}, {SPF_FDER, 0, false, true}};

template <class T> static void spectral_fn_case(tu_rng *r, int64_t n, int64_t nb, int fk, double fp, bool with_free)
{
    const bool f32 = sizeof(T) == 4;
    const int64_t sW = n + 1, sloss = 2;
    /* matrix b % 8: 0 positive; 1 one negative λ; 2 one λ = 0; 3 one λ = 100 (exp: overflows f32 only);
       4 every λ = 88 / 709 (exp finite in T, Σ overflows T when n ≥ 3); 5 one NaN; 6 one λ = 1e-300
       (f32: rounds to 0); 7 positive, tiny and huge mixed. */
    vector<T> W((size_t)(sW * nb), (T)QNAN);
    for (int64_t b = 0; b < nb; b++) {
        T *w = W.data() + b * sW;
        for (int64_t i = 0; i < n; i++) w[i] = (T)(0.25 + 2.0 * tu_uniform(r));
        const int64_t k = (int64_t)(tu_uniform(r) * (double)n);
        switch (b % 8) {
        case 1: w[k] = T(-0.5); break;
        case 2: w[k] = T(0); break;
        case 3: w[k] = T(100); break;
        case 4: for (int64_t i = 0; i < n; i++) w[i] = f32 ? T(88) : T(709); break;
        case 5: w[k] = (T)QNAN; break;
        case 6: w[k] = (T)1e-300; break;
        case 7: w[0] = (T)1e-30; w[n - 1] = (T)1e30; break;
        default: break;
        }
    }
    for (const SpfSite &s : SPF_SITES) {
        vector<T> wd((size_t)(n * nb), T(-9)), wl((size_t)(sloss * nb), T(-9));
        vector<int> wf((size_t)nb, 0);
        for (int64_t b = 0; b < nb; b++) { /* check_dom + reg_eig / matfunc of src/cpu_grad_impl.h */
            double acc = 0;
            int bad = 0;
            for (int64_t i = 0; i < n; i++) {
                const double l = (double)W[b * sW + i], fv = sg_fn_val(fk, fp, l), fd = sg_fn_der(fk, fp, l);
                if (!sg_fn_in_domain(fk, fp, l) || !std::isfinite((T)fv) || (s.der && !std::isfinite((T)fd)))
                    bad = FLAG_DOMAIN;
                acc += fv;
                wd[(size_t)(b * n + i)] = (T)(s.what == SPF_FVAL ? fv : fd);
            }
            if (s.loss && !bad) {
                wl[(size_t)(b * sloss)] = (T)acc;
                if (!std::isfinite((T)acc)) bad = FLAG_NONFINITE;
            }
            wf[(size_t)b] = bad;
        }
        vector<T> d, loss;
        vector<int> flags;
        all_modes("k_spectral_fn", [&] {
            d.assign((size_t)(n * nb), T(-9));
            loss.assign((size_t)(sloss * nb), T(-9));
            flags.assign((size_t)nb, -1); /* always written */
            emu_launch(grid_1d(nb, 128), 128, 0, k_spectral_fn<T>, (const T *)W.data(), sW, (int)n, nb, s.what, s.der,
                       fk, fp, s.d ? d.data() : nullptr, s.loss ? loss.data() : nullptr, s.loss ? sloss : 0,
                       flags.data());
            return bytes2(bytes2(d, loss), flags);
        }, with_free && s.what == SPF_FDER && s.der);
        char what[128];
        snprintf(what, sizeof what, "k_spectral_fn n=%lld nb=%lld fn %d p %g what %d der %d", (long long)n,
                 (long long)nb, fk, fp, s.what, s.der);
        for (int64_t b = 0; b < nb; b++)
            cr_assert_eq(flags[(size_t)b], wf[(size_t)b], "%s: matrix %lld flags %d, want %d", what, (long long)b,
                         flags[(size_t)b], wf[(size_t)b]);
        if (s.d) expect_close(d, wd, 0.0, what);
        else cr_assert(d == vector<T>((size_t)(n * nb), T(-9)), "%s: d written", what);
        if (s.loss) expect_close(loss, wl, 0.0, what);
        else cr_assert(loss == vector<T>((size_t)(sloss * nb), T(-9)), "%s: loss written", what);
    }
    /* the interesting flags must actually occur (guards the inputs above) */
    if (fk == SG_FK_LOG && nb >= 8 && n >= 3) {
        vector<int> flags((size_t)nb, -1);
        emu_launch(grid_1d(nb, 128), 128, 0, k_spectral_fn<T>, (const T *)W.data(), sW, (int)n, nb, (int)SPF_FDER, 0, fk,
                   fp, (T *)nullptr, (T *)nullptr, (int64_t)0, flags.data());
        cr_assert(flags[0] == 0 && flags[1] == FLAG_DOMAIN && flags[2] == FLAG_DOMAIN && flags[5] == FLAG_DOMAIN,
                  "k_spectral_fn log: flags %d %d %d %d", flags[0], flags[1], flags[2], flags[5]);
    }
}
template <class T> static void spectral_fn_all()
{
    tu_rng r = tu_seed(37);
    const struct { int fk; double p; } fns[] = {{SG_FK_SQRT, 0}, {SG_FK_LOG, 0}, {SG_FK_EXP, 0}, {SG_FK_POW, 1.5},
                                                {SG_FK_POW, -0.5}, {SG_FK_POW, 3}};
    for (auto f : fns) {
        for (int64_t n : {1, 2, 3, 33, 65, 129}) spectral_fn_case<T>(&r, n, 8, f.fk, f.p, n == 3 && f.fk == SG_FK_EXP);
        spectral_fn_case<T>(&r, 5, 300, f.fk, f.p, false); /* 3 blocks of 128 threads, a partial last one */
        grid_cap = 1;                                      /* grid-stride: one block over 300 matrices */
        spectral_fn_case<T>(&r, 4, 300, f.fk, f.p, false);
        grid_cap = SMS * 32;
    }
    /* exp overflow of the loss only (each f(λ) finite in T): FLAG_NONFINITE with der 0 and 1 */
    for (int der : {0, 1}) {
        const int64_t n = 3;
        const T big = sizeof(T) == 4 ? T(88) : T(709);
        vector<T> W = {big, big, big}, loss = {T(-9)};
        vector<int> flags = {-1};
        emu_launch(1u, 128, 0, k_spectral_fn<T>, (const T *)W.data(), n, (int)n, (int64_t)1, (int)SPF_FDER, der,
                   (int)SG_FK_EXP, 0.0, (T *)nullptr, loss.data(), (int64_t)1, flags.data());
        cr_assert(flags[0] == FLAG_NONFINITE && std::isinf(loss[0]), "k_spectral_fn loss overflow: flag %d loss %g",
                  flags[0], (double)loss[0]);
    }
}
Test(emu_grad, k_spectral_fn_f32) { spectral_fn_all<float>(); }
Test(emu_grad, k_spectral_fn_f64) { spectral_fn_all<double>(); }

/* ======================================================================================================
   k_svd_inner (svd_backward: grid_1d(k²·cnt, 256) × 256): dense P = UᵀgU, Q = VᵀgV (either may be NULL),
   S and gS with strides, scale from k_scale(sigma 1), rect corrections.
   ====================================================================================================== */
/* Singular values (descending) per kind, matrix b: 0 distinct; 1 exact ties (pairs); 2 near ties (pairs one
   ulp and ½·mask-tol apart); 3 distinct with the last two zero (a tie at 0: ½(a−d)/0 in exact mode);
   4 all zero (scale 1). */
template <class T> static vector<T> sv_spectrum(int kind, int64_t k, int64_t nb, int64_t sS)
{
    vector<T> S((size_t)(sS * nb), (T)QNAN);
    const T mtol = (T)sg_degen_param(SG_DM_MASK, 0, sizeof(T) == 4);
    for (int64_t b = 0; b < nb; b++) {
        T *s = S.data() + b * sS;
        const double f = 1.0 + 0.5 * (double)b;
        for (int64_t i = 0; i < k; i++) {
            const int64_t q = kind == 1 || kind == 2 ? i / 2 * 2 : i;
            s[i] = kind == 4 ? T(0) : (T)(f * (3.0 - 2.5 * (double)q / (double)std::max<int64_t>(1, k)));
        }
        if (kind == 2) /* s_i² vs s_{i-1}²: relative gap ≈ 2·δ/s */
            for (int64_t i = 1; i < k; i += 2)
                s[i] = (i / 2) % 2 ? std::nextafter(s[i - 1], T(0)) : s[i - 1] * (T(1) - (T)0.25 * mtol);
        if (kind == 3 && k >= 2) s[k - 1] = s[k - 2] = 0;
    }
    return S;
}

template <class T>
static void svd_inner_case(tu_rng *r, int64_t k, int64_t nb, int kind, int mode, bool hasP, bool hasQ, bool hasGS,
                           int rect, bool with_free)
{
    const int64_t kk = k * k, sS = k + 1, sgS = k + 3;
    const vector<T> S = sv_spectrum<T>(kind, k, nb, sS);
    vector<T> gS = normal<T>(r, sgS * nb);
    const vector<T> P = normal<T>(r, kk * nb), Q = normal<T>(r, kk * nb);
    const T param = (T)sg_degen_param(mode, 0.0, sizeof(T) == 4);
    vector<T> scale((size_t)nb);
    for (int64_t b = 0; b < nb; b++) { /* svd_bwd's sc (k_scale sigma 1) */
        T smax = 0;
        for (int64_t j = 0; j < k; j++) smax = S[b * sS + j] > smax ? S[b * sS + j] : smax;
        scale[(size_t)b] = smax > 0 ? smax : 1;
    }
    /* expected: svd_bwd's G loop (src/cpu_grad_impl.h), then the rectangular terms as k_svd_inner folds them
       in: tall  (U G + (I − UUᵀ) gU Σ⁻¹) Vᵀ = (U (G − P Σ⁻¹) + gU Σ⁻¹) Vᵀ;
       wide  U (G Vᵀ + Σ⁻¹ gVᵀ (I − VVᵀ)) = U ((G − Σ⁻¹ Qᵀ) Vᵀ + Σ⁻¹ gVᵀ). */
    vector<T> want((size_t)(kk * nb));
    vector<int> wflags((size_t)nb, 0);
    for (int64_t b = 0; b < nb; b++) {
        const T *s = S.data() + b * sS, *Pb = P.data() + b * kk, *Qb = Q.data() + b * kk, sc = scale[(size_t)b];
        for (int64_t c = 0; c < k; c++)
            for (int64_t rr = 0; rr < k; rr++) {
                T g = 0;
                if (rr == c) g = hasGS ? gS[b * sgS + rr] : T(0);
                else if (hasP || hasQ) {
                    T a = hasP ? Pb[rr + c * k] - Pb[c + rr * k] : T(0), d = hasQ ? Qb[rr + c * k] - Qb[c + rr * k] : T(0);
                    T F = inv_gap_sq(s[rr], s[c], sc, rr < c, mode, param);
                    if (!std::isfinite(F)) wflags[(size_t)b] |= FLAG_TIE;
                    T sum = s[rr] / sc + s[c] / sc, h = (a - d) * (T)0.5;
                    T g2 = sum > 0 ? h / sum : (mode == SG_DM_EXACT ? h / sum : (T)0);
                    g = ((a + d) * (T)0.5 * sum * F + g2) / sc;
                }
                if (rect == RECT_TALL) g -= Pb[rr + c * k] / s[c];
                if (rect == RECT_WIDE) g -= Qb[c + rr * k] / s[rr];
                want[(size_t)(b * kk + rr + c * k)] = g;
            }
    }
    vector<T> I;
    vector<int> flags;
    all_modes("k_svd_inner", [&] {
        I.assign((size_t)(kk * nb), T(-9));
        flags.assign((size_t)nb, 0);
        emu_launch(grid_1d(kk * nb, 256), 256, 0, k_svd_inner<T>, hasP ? P.data() : nullptr, hasQ ? Q.data() : nullptr,
                   S.data(), sS, hasGS ? gS.data() : nullptr, hasGS ? sgS : 0, I.data(), (int)k, nb, mode, param,
                   (const T *)scale.data(), rect, flags.data());
        return bytes2(I, flags);
    }, with_free);
    char what[160];
    snprintf(what, sizeof what, "k_svd_inner k=%lld nb=%lld spectrum %d mode %d P %d Q %d gS %d rect %d", (long long)k,
             (long long)nb, kind, mode, hasP, hasQ, hasGS, rect);
    expect_close(I, want, tol<T>(), what);
    for (int64_t b = 0; b < nb; b++)
        cr_assert_eq(flags[(size_t)b], wflags[(size_t)b], "%s: matrix %lld flags %d, want %d", what, (long long)b,
                     flags[(size_t)b], wflags[(size_t)b]);
    if (mode == SG_DM_EXACT && kind == 1 && k >= 2 && (hasP || hasQ))
        for (int64_t b = 0; b < nb; b++) cr_assert(flags[(size_t)b] & FLAG_TIE, "%s: tie not flagged", what);
}
template <class T> static void svd_inner_all()
{
    tu_rng r = tu_seed(38);
    for (int64_t k : SIZES) {
        const int64_t nb = k >= 65 ? 2 : 3;
        const bool fr = k == 33;
        svd_inner_case<T>(&r, k, nb, 0, SG_DM_EXACT, true, true, true, RECT_NONE, fr);
        forward_only = k >= 65;
        svd_inner_case<T>(&r, k, nb, 1, SG_DM_EXACT, true, true, true, RECT_NONE, false); /* FLAG_TIE */
        svd_inner_case<T>(&r, k, nb, 2, SG_DM_EXACT, true, false, true, RECT_TALL, false);
        svd_inner_case<T>(&r, k, nb, 1, SG_DM_MASK, true, true, false, RECT_NONE, false);
        svd_inner_case<T>(&r, k, nb, 2, SG_DM_MASK, false, true, true, RECT_WIDE, false);
        svd_inner_case<T>(&r, k, nb, 3, SG_DM_MASK, true, true, true, RECT_NONE, false); /* tie at 0: finite */
        svd_inner_case<T>(&r, k, nb, 3, SG_DM_EXACT, true, true, true, RECT_NONE, false); /* 0/0: NaN + FLAG_TIE */
        svd_inner_case<T>(&r, k, nb, 1, SG_DM_LORENTZ, true, true, true, RECT_TALL, false);
        svd_inner_case<T>(&r, k, nb, 2, SG_DM_LORENTZ, true, true, true, RECT_WIDE, false);
        svd_inner_case<T>(&r, k, nb, 0, SG_DM_TAYLOR, true, true, true, RECT_NONE, false);
        svd_inner_case<T>(&r, k, nb, 1, SG_DM_TAYLOR, false, true, true, RECT_NONE, false);
        svd_inner_case<T>(&r, k, nb, 4, SG_DM_MASK, true, true, true, RECT_NONE, false); /* σ = 0: scale 1 */
        svd_inner_case<T>(&r, k, nb, 1, SG_DM_EXACT, false, false, true, RECT_NONE, false); /* gS only */
        forward_only = false;
    }
    grid_cap = 2;
    svd_inner_case<T>(&r, 100, 3, 1, SG_DM_MASK, true, true, true, RECT_TALL, false);
    grid_cap = SMS * 32;
}
Test(emu_grad, k_svd_inner_f32) { svd_inner_all<float>(); }
Test(emu_grad, k_svd_inner_f64) { svd_inner_all<double>(); }

/* ======================================================================================================
   k_div_sigma (svd_backward: trans 0, Y (m×k) = gU Σ⁻¹, grid_1d(m·k·cnt); trans 1, Y (k×n) = Σ⁻¹ gVᵀ,
   grid_1d(k·n·cnt); × 256). X with (ld, stride), S with a stride, Y dense.
   ====================================================================================================== */
template <class T> static void div_sigma_all()
{
    tu_rng r = tu_seed(39);
    for (int64_t n : SIZES)
        for (int trans : {0, 1}) {
            const int64_t k = std::max<int64_t>(1, n / 2 + (trans ? 0 : 1)), nb = 3, sS = k + 2;
            const int64_t xr = n, ldX = xr + 3, sX = ldX * k + 1; /* X: gU (n×k) or gV (n×k) */
            const vector<T> X = pad(normal<T>(&r, xr * k * nb), nb, xr, k, ldX, sX, (T)QNAN);
            vector<T> S((size_t)(sS * nb), (T)QNAN);
            for (int64_t b = 0; b < nb; b++)
                for (int64_t i = 0; i < k; i++) S[b * sS + i] = (T)(0.5 + tu_uniform(&r));
            if (k >= 2) S[sS + k - 1] = 0; /* σ = 0: inf/NaN, as on the CPU */
            const int64_t rows = trans ? k : xr, cols = trans ? xr : k, rc = rows * cols;
            vector<T> want((size_t)(rc * nb));
            for (int64_t b = 0; b < nb; b++) /* svd_bwd: X = gU Σ⁻¹ / Y = gV Σ⁻¹ (here transposed) */
                for (int64_t c = 0; c < k; c++)
                    for (int64_t i = 0; i < xr; i++) {
                        const T v = X[b * sX + i + c * ldX] / S[b * sS + c];
                        want[(size_t)(b * rc + (trans ? c + i * k : i + c * xr))] = v;
                    }
            vector<T> Y;
            grid_cap = n == 129 ? 3 : SMS * 32;
            all_modes("k_div_sigma", [&] {
                Y.assign((size_t)(rc * nb), T(-9));
                emu_launch(grid_1d(rc * nb, 256), 256, 0, k_div_sigma<T>, (const T *)X.data(), ldX, sX,
                           (const T *)S.data(), sS, Y.data(), (int)rows, (int)cols, nb, trans);
                return bytes(Y);
            }, n == 31);
            grid_cap = SMS * 32;
            char what[80];
            snprintf(what, sizeof what, "k_div_sigma n=%lld k=%lld trans %d", (long long)n, (long long)k, trans);
            expect_close(Y, want, 0.0, what);
        }
}
Test(emu_grad, k_div_sigma_f32) { div_sigma_all<float>(); }
Test(emu_grad, k_div_sigma_f64) { div_sigma_all<double>(); }

/* ======================================================================================================
   k_spectral_grad (reg_svd SPECTRAL: grid_1d(m·n·cnt, 256) × 256): gA = 2 σ1 u1 v1ᵀ; k_vec_loss (reg_svd:
   grid_1d(cnt, 128) × 128): Σσ or σ1², double accumulation, loss with a stride.
   ====================================================================================================== */
template <class T> static void spectral_grad_all()
{
    tu_rng r = tu_seed(40);
    for (int64_t n : SIZES)
        for (int shape = 0; shape < 3; shape++) {
            const int64_t m = shape == 0 ? n : shape == 1 ? n + 5 : std::max<int64_t>(1, n / 3), k = std::min(m, n);
            const int64_t nb = 3, sS = k + 1, sU = m * k + 2, sV = n * k + 3, ldA = m + 2, sA = ldA * n + 1;
            /* the launch passes U (ld m, stride m·k) and V (ld n, stride n·k): only column 0 is read */
            const vector<T> U = normal<T>(&r, sU * nb), V = normal<T>(&r, sV * nb), S = normal<T>(&r, sS * nb);
            vector<T> want((size_t)(m * n * nb));
            for (int64_t b = 0; b < nb; b++) /* reg_svd of src/cpu_grad_impl.h */
                for (int64_t j = 0; j < n; j++)
                    for (int64_t i = 0; i < m; i++)
                        want[(size_t)(b * m * n + i + j * m)] = 2 * S[b * sS] * U[b * sU + i] * V[b * sV + j];
            vector<T> gA;
            all_modes("k_spectral_grad", [&] {
                gA.assign((size_t)(sA * nb), T(-9));
                emu_launch(grid_1d(m * n * nb, 256), 256, 0, k_spectral_grad<T>, (const T *)S.data(), sS,
                           (const T *)U.data(), m, sU, (const T *)V.data(), n, sV, gA.data(), ldA, sA, (int)m, (int)n, nb);
                return bytes(gA);
            }, n == 32 && shape == 1);
            char what[80];
            snprintf(what, sizeof what, "k_spectral_grad %lldx%lld", (long long)m, (long long)n);
            padding_untouched(gA, nb, m, n, ldA, sA, T(-9), what);
            cr_assert(unpad(gA, nb, m, n, ldA, sA) == want, "%s", what);
        }
}
Test(emu_grad, k_spectral_grad_f32) { spectral_grad_all<float>(); }
Test(emu_grad, k_spectral_grad_f64) { spectral_grad_all<double>(); }

template <class T> static void vec_loss_all()
{
    tu_rng r = tu_seed(41);
    for (int64_t k : SIZES)
        for (int64_t nb : {5, 300})
            for (int what : {VL_SUM, VL_FIRST_SQ}) {
                const int64_t sS = k + 2, sl = 3;
                vector<T> S = normal<T>(&r, sS * nb, 10.0);
                /* matrix 2's loss overflows T (σ1² of √max·2, or a sum of k maxima when k > 1) */
                for (int64_t j = 0; j < k; j++) S[2 * sS + j] = std::numeric_limits<T>::max();
                if (what == VL_FIRST_SQ) S[2 * sS] = T(2) * std::sqrt(std::numeric_limits<T>::max());
                if (what == VL_SUM && k == 1) S[2 * sS] = T(1); /* one σ cannot overflow its own sum */
                vector<T> want((size_t)(sl * nb), T(-9));
                for (int64_t b = 0; b < nb; b++) { /* reg_svd's loss */
                    double l = 0;
                    if (what == VL_FIRST_SQ) l = (double)S[b * sS] * (double)S[b * sS];
                    else
                        for (int64_t j = 0; j < k; j++) l += (double)S[b * sS + j];
                    want[(size_t)(b * sl)] = (T)l;
                }
                vector<T> loss;
                vector<int> flags;
                grid_cap = nb == 300 && k == 31 ? 1 : SMS * 32;
                all_modes("k_vec_loss", [&] {
                    loss.assign((size_t)(sl * nb), T(-9));
                    flags.assign((size_t)nb, -1);
                    emu_launch(grid_1d(nb, 128), 128, 0, k_vec_loss<T>, (const T *)S.data(), sS, (int)k, nb, what,
                               loss.data(), sl, flags.data());
                    return bytes2(loss, flags);
                }, k == 2 && nb == 5);
                grid_cap = SMS * 32;
                cr_assert(loss == want, "k_vec_loss k=%lld nb=%lld what %d", (long long)k, (long long)nb, what);
                for (int64_t b = 0; b < nb; b++)
                    cr_assert_eq(flags[(size_t)b], std::isfinite(want[(size_t)(b * sl)]) ? 0 : FLAG_NONFINITE,
                                 "k_vec_loss k=%lld what %d: matrix %lld's flag", (long long)k, what, (long long)b);
                cr_assert(k == 1 && what == VL_SUM ? std::isfinite(want[2 * sl]) : !std::isfinite(want[2 * sl]),
                          "the test's overflow case (k=%lld what %d)", (long long)k, what);
            }
}
Test(emu_grad, k_vec_loss_f32) { vec_loss_all<float>(); }
Test(emu_grad, k_vec_loss_f64) { vec_loss_all<double>(); }

/* ======================================================================================================
   k_ortho (reg_ortho: grid_1d(cnt·256, 256) × 256, one block per matrix, 256-slot double reduction):
   G (dense, = AᵀA) → D = G − I in place, loss Σ D² with a stride.
   ====================================================================================================== */
template <class T> static void ortho_all()
{
    tu_rng r = tu_seed(42);
    int cfg = 0;
    for (int64_t n : {1, 2, 15, 16, 17, 31, 32, 33, 65, 100, 129})
        for (int capped : {0, 1}) {
            if (capped && n != 17 && n != 100) continue;
            const int64_t nn = n * n, nb = capped ? 5 : 3, sl = 2;
            vector<T> G0 = normal<T>(&r, nn * nb);
            G0[nn] = std::numeric_limits<T>::max(); /* matrix 1's loss overflows: FLAG_NONFINITE */
            vector<T> wD = G0, wl((size_t)(sl * nb), T(-9));
            for (int64_t b = 0; b < nb; b++) { /* reg_ortho of src/cpu_grad_impl.h */
                T *C = wD.data() + b * nn;
                double l = 0;
                for (int64_t i = 0; i < n; i++) C[i + i * n] -= 1;
                for (int64_t i = 0; i < nn; i++) l += (double)C[i] * (double)C[i];
                wl[(size_t)(b * sl)] = (T)l;
            }
            vector<T> G, loss;
            vector<int> flags;
            grid_cap = capped ? 2 : SMS * 32;
            all_modes("k_ortho", [&] {
                G = G0;
                loss.assign((size_t)(sl * nb), T(-9));
                flags.assign((size_t)nb, -1);
                emu_launch(grid_1d(nb * 256, 256), 256, 0, k_ortho<T>, G.data(), (int)n, nb, loss.data(), sl,
                           flags.data());
                return bytes2(bytes2(G, loss), flags);
            }, cfg++ % 7 == 0);
            grid_cap = SMS * 32;
            char what[64];
            snprintf(what, sizeof what, "k_ortho n=%lld nb=%lld", (long long)n, (long long)nb);
            cr_assert(G == wD, "%s: D = G − I", what);
            /* the loss is a tree sum in double, the CPU's a sequential one: equal up to double rounding then T */
            expect_close(loss, wl, sizeof(T) == 4 ? 1e-6 : 1e-13, what);
            for (int64_t b = 0; b < nb; b++)
                cr_assert_eq(flags[(size_t)b], b == 1 ? FLAG_NONFINITE : 0, "%s: matrix %lld's flag", what, (long long)b);
        }
}
Test(emu_grad, k_ortho_f32) { ortho_all<float>(); }
Test(emu_grad, k_ortho_f64) { ortho_all<double>(); }

/* ======================================================================================================
   End to end: the kernels chained as grad.cu's cuBLAS path chains them, the cuBLAS products replaced by
   plain loops (double accumulation), against the CPU backend (statuses against flag bits included).
   ====================================================================================================== */
/* C = α op(A) op(B) + β C (column-major; β = 0 ignores C, as cuBLAS does). */
template <class T>
static void gemm_loop(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T *A, int64_t lda, const T *B,
                      int64_t ldb, T beta, T *C, int64_t ldc)
{
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < m; i++) {
            double s = 0;
            for (int64_t p = 0; p < k; p++)
                s += (double)(ta ? A[p + i * lda] : A[i + p * lda]) * (double)(tb ? B[j + p * ldb] : B[p + j * ldb]);
            C[i + j * ldc] = (T)((double)alpha * s + (beta != T(0) ? (double)beta * (double)C[i + j * ldc] : 0.0));
        }
}
/* strided-batched version */
template <class T>
static void gemm_b(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T *A, int64_t lda, int64_t sA,
                   const T *B, int64_t ldb, int64_t sB, T beta, T *C, int64_t ldc, int64_t sC, int64_t cnt)
{
    for (int64_t b = 0; b < cnt; b++)
        gemm_loop(ta, tb, m, n, k, alpha, A + b * sA, lda, B + b * sB, ldb, beta, C + b * sC, ldc);
}
/* A strided view of a vector, for the CPU library. */
template <class T> static sg_mat smat(vector<T> &v, int64_t nb, int64_t rows, int64_t cols, int64_t ld, int64_t st)
{
    sg_mat m = sg_mat_dense(v.data(), dt<T>(), nb, rows, cols);
    m.ld = ld;
    m.stride = st;
    return m;
}
static int first_flag(const vector<int> &f)
{
    for (size_t i = 0; i < f.size(); i++)
        if (f[i]) return (int)i;
    return -1;
}

/* The chain (or fused kernel) flags first the matrix the CPU reference reports (cidx, -1 when SG_OK). */
static int expect_first_flag(const char *what, const vector<int> &flags, sg_status cs, int64_t cidx)
{
    const int ff = first_flag(flags);
    cr_assert_eq((int64_t)ff, cidx, "%s: first flagged matrix %d (bits %d), CPU status %d at %lld: %s", what, ff,
                 ff >= 0 ? flags[(size_t)ff] : 0, (int)cs, (long long)cidx, sg_last_error(cpu));
    return ff;
}

/* gA's padding untouched and, when the CPU reference succeeded, gA close to it (f32 2e-4, f64 1e-10). */
template <class T>
static void expect_chain_gA(const char *what, const vector<T> &gA, const vector<T> &want, int64_t nb, int64_t rows,
                            int64_t cols, int64_t ld, int64_t st, sg_status cs)
{
    padding_untouched(gA, nb, rows, cols, ld, st, T(-9), what);
    if (cs != SG_OK) return;
    expect_close(unpad(gA, nb, rows, cols, ld, st), unpad(want, nb, rows, cols, ld, st), sizeof(T) == 4 ? 2e-4 : 1e-10,
                 what);
}

/* eigh inputs (emu_test.h's eig_inputs: W ascending, exact ties for kinds 1 and 3) with V padded to ld, st. */
template <class T> static void eig_inputs(tu_rng *r, int64_t n, int64_t nb, int kind, int64_t ld, int64_t st,
                                          vector<T> &W, vector<T> &V)
{
    vector<T> Vd;
    eig_inputs<T>(r, n, nb, kind, W, Vd);
    V = pad(Vd, nb, n, n, ld, st, (T)QNAN);
}

/* sym_backward<T, KIND> for n > 64 (grad.cu): eigh (gW, gV per `which`: 0 both, 1 gV only, 2 gW only) or
   matfunc (fk, fp; which 1: one eigenvalue outside f's domain in the last matrix) against sg_eigh_backward / sg_matfunc_backward. */
template <class T, int KIND>
static void sym_chain_case(tu_rng *r, int64_t n, int64_t nb, int kind, int mode, int which, int fk, double fp)
{
    const bool eigh = KIND == FUSED_EIGH, f32 = sizeof(T) == 4;
    const int64_t nn = n * n, ld = n + 1, st = ld * n + 2;
    vector<T> W, V;
    eig_inputs<T>(r, n, nb, kind, ld, st, W, V);
    if (!eigh && which == 1) W[(size_t)(n * (nb - 1))] = T(-0.25); /* outside f's domain in the last matrix */
    vector<T> G = pad(normal<T>(r, nn * nb), nb, n, n, ld, st, (T)QNAN), gW = normal<T>(r, n * nb);
    const bool hasW = eigh && which != 1, hasG = !eigh || which != 2;
    /* CPU reference */
    vector<T> want((size_t)(st * nb), T(-9));
    sg_mat Wm = mat(W, nb, n, 1), Vm = smat(V, nb, n, n, ld, st), Gm = smat(G, nb, n, n, ld, st), gWm = mat(gW, nb, n, 1),
           gAm = smat(want, nb, n, n, ld, st);
    sg_fn fn = {(sg_fn_kind)fk, fp, nullptr, nullptr, nullptr};
    const sg_status cs = eigh ? sg_eigh_backward(cpu, &Wm, &Vm, hasW ? &gWm : nullptr, hasG ? &Gm : nullptr,
                                                 (sg_degen)mode, 0.0, &gAm)
                              : sg_matfunc_backward(cpu, &Wm, &Vm, &fn, &Gm, &gAm);
    cr_assert(cs == SG_OK || cs == SG_ERR_DEGENERATE || cs == SG_ERR_DOMAIN, "%s", sg_last_error(cpu));
    const int64_t cidx = cs == SG_OK ? -1 : sg_failed_index(cpu);
    /* the kernel chain of sym_backward's body (fused = false) */
    const T p = (T)sg_degen_param(mode, 0.0, f32);
    vector<T> M((size_t)(nn * nb), (T)QNAN), Tb((size_t)(nn * nb), (T)QNAN), scale((size_t)nb, (T)QNAN),
        gA((size_t)(st * nb), T(-9));
    vector<int> flags((size_t)nb, -1);
    const T *vd = V.data(), *gd = hasG ? G.data() : nullptr, *gwd = hasW ? gW.data() : nullptr;
    const unsigned gr = grid_1d(nn * nb, 256);
    bool stopped = false;
    if (!eigh) {
        emu_launch(grid_1d(nb, 128), 128, 0, k_spectral_fn<T>, (const T *)W.data(), n, (int)n, nb, (int)SPF_CHECK, 1, fk,
                   fp, (T *)nullptr, (T *)nullptr, (int64_t)0, flags.data());
        stopped = first_flag(flags) >= 0; /* SG_ERR_DOMAIN before gA is written */
    }
    if (!stopped) {
        if (eigh) {
            std::fill(flags.begin(), flags.end(), 0);
            emu_launch(grid_1d(nb * 256, 256), 256, 0, k_scale<T>, (const T *)W.data(), n, (int)n, nb, 0, scale.data());
            if (gd) gemm_b(true, false, n, n, n, T(1), vd, ld, st, gd, ld, st, T(0), M.data(), n, nn, nb);
        } else {
            gemm_b(true, false, n, n, n, T(1), vd, ld, st, gd, ld, st, T(0), Tb.data(), n, nn, nb);
            gemm_b(false, false, n, n, n, T(1), Tb.data(), n, nn, vd, ld, st, T(0), M.data(), n, nn, nb);
        }
        emu_launch(gr, 256, 0, k_middle<T, KIND>, M.data(), (int)n, nb, (const T *)W.data(), n, gwd, gwd ? n : 0,
                   (int)(gd != nullptr), mode, p, eigh ? (const T *)scale.data() : (const T *)nullptr, fk, fp,
                   SG_DIVDIFF_REL, flags.data());
        gemm_b(false, true, n, n, n, T(1), M.data(), n, nn, vd, ld, st, T(0), Tb.data(), n, nn, nb);
        gemm_b(false, false, n, n, n, T(1), vd, ld, st, Tb.data(), n, nn, T(0), M.data(), n, nn, nb);
        emu_launch(gr, 256, 0, k_sym_store<T>, (const T *)M.data(), (int)n, nb, gA.data(), ld, st, flags.data());
    }
    char what[160];
    snprintf(what, sizeof what, "%s chain n=%lld nb=%lld spectrum %d mode %d grads %d fn %d", eigh ? "eigh" : "matfunc",
             (long long)n, (long long)nb, kind, mode, which, fk);
    const int ff = expect_first_flag(what, flags, cs, cidx);
    if (cs == SG_ERR_DOMAIN && !eigh && stopped) {
        cr_assert(flags[(size_t)ff] == FLAG_DOMAIN, "%s: flag %d", what, flags[(size_t)ff]);
        return;
    }
    if (cs == SG_ERR_DEGENERATE && mode == SG_DM_EXACT)
        cr_assert(flags[(size_t)ff] & FLAG_TIE, "%s: CPU reports a tie, flags %d", what, flags[(size_t)ff]);
    expect_chain_gA(what, gA, want, nb, n, n, ld, st, cs);
}
template <class T> static void eigh_chain_all()
{
    tu_rng r = tu_seed(43);
    for (int64_t n : {65, 100}) {
        sym_chain_case<T, FUSED_EIGH>(&r, n, 2, 0, SG_DM_EXACT, 0, 0, 0);
        sym_chain_case<T, FUSED_EIGH>(&r, n, 2, 1, SG_DM_EXACT, 0, 0, 0); /* DEGENERATE ↔ FLAG_TIE */
        sym_chain_case<T, FUSED_EIGH>(&r, n, 2, 1, SG_DM_MASK, 0, 0, 0);
        sym_chain_case<T, FUSED_EIGH>(&r, n, 2, 1, SG_DM_LORENTZ, 1, 0, 0);
        sym_chain_case<T, FUSED_EIGH>(&r, n, 2, 2, SG_DM_TAYLOR, 0, 0, 0);
        sym_chain_case<T, FUSED_EIGH>(&r, n, 2, 0, SG_DM_TAYLOR, 0, 0, 0); /* negative spectrum: CPU and kernels agree */
        sym_chain_case<T, FUSED_EIGH>(&r, n, 2, 1, SG_DM_EXACT, 2, 0, 0); /* gW only: ties harmless */
    }
}
Test(emu_grad, eigh_backward_chain_f32) { eigh_chain_all<float>(); }
Test(emu_grad, eigh_backward_chain_f64) { eigh_chain_all<double>(); }

template <class T> static void matfunc_chain_all()
{
    tu_rng r = tu_seed(44);
    for (int64_t n : {65, 100}) {
        sym_chain_case<T, FUSED_MATFUNC>(&r, n, 2, 3, SG_DM_EXACT, 0, SG_FK_SQRT, 0); /* ties: f' */
        sym_chain_case<T, FUSED_MATFUNC>(&r, n, 2, 2, SG_DM_EXACT, 0, SG_FK_LOG, 0);
        sym_chain_case<T, FUSED_MATFUNC>(&r, n, 2, 3, SG_DM_EXACT, 0, SG_FK_POW, 1.5);
    }
    sym_chain_case<T, FUSED_MATFUNC>(&r, 70, 3, 2, SG_DM_EXACT, 1, SG_FK_SQRT, 0); /* DOMAIN in matrix 2 */
}
Test(emu_grad, matfunc_backward_chain_f32) { matfunc_chain_all<float>(); }
Test(emu_grad, matfunc_backward_chain_f64) { matfunc_chain_all<double>(); }

/* launch_fused_svd of cuda/grad.cu: TM by N = max(m, n), fused_threads, fused_svd_smem, persistent grid
   (occupancy × SMs, at most one block per matrix; fused_blocks caps it to exercise the loop). */
static int64_t fused_blocks = SMS * 2;
template <class T> static void launch_fused_svd_emu(const FusedSvdArgs<T> &a)
{
    const int N = std::max(a.m, a.n);
    const unsigned g = (unsigned)std::min<int64_t>(a.batch, fused_blocks);
    if (N <= 16)
        emu_launch(g, fused_threads<1>(N), fused_svd_smem<T, 1>(a.m, a.n), fused_svd_backward<T, 1>, a);
    else if (N <= 32)
        emu_launch(g, fused_threads<2>(N), fused_svd_smem<T, 2>(a.m, a.n), fused_svd_backward<T, 2>, a);
    else
        emu_launch(g, fused_threads<4>(N), fused_svd_smem<T, 4>(a.m, a.n), fused_svd_backward<T, 4>, a);
}

/* svd_backward (grad.cu) against sg_svd_backward: the cuBLAS path's kernel chain (fused = false) or
   fused_svd_backward (max(m,n) <= 64) under every schedule. grads: bit 0 gU, 1 gS, 2 gV.
   kind: 0 distinct, 1 exact ties (pairs), 2 rank deficient (last σ = 0). */
template <class T>
static void svd_chain_case(tu_rng *r, int64_t m, int64_t n, int64_t nb, int kind, int mode, int grads, bool fused = false)
{
    const bool f32 = sizeof(T) == 4;
    const int64_t k = std::min(m, n), kk = k * k;
    const int64_t ldU = m + 1, sU = ldU * k + 1, ldV = n + 2, sV = ldV * k, ldA = m + 1, sA = ldA * n + 3;
    /* inputs from the CPU SVD */
    vector<double> A((size_t)(m * n * nb)), s((size_t)k);
    for (int64_t b = 0; b < nb; b++) {
        for (int64_t i = 0; i < k; i++) {
            const int64_t q = kind == 1 ? i / 2 * 2 : i;
            s[(size_t)i] = (1.0 + 0.2 * (double)b) * (3.0 - 2.0 * (double)q / (double)k);
        }
        tu_mat_with_singular_values(r, m, n, s.data(), A.data() + b * m * n);
    }
    vector<T> a = to<T>(A), S((size_t)(k * nb)), Ud((size_t)(m * k * nb)), Vd((size_t)(n * k * nb));
    sg_mat Am = mat(a, nb, m, n), Sm = mat(S, nb, k, 1), Um0 = mat(Ud, nb, m, k), Vm0 = mat(Vd, nb, n, k);
    cr_assert_eq(sg_svd(cpu, &Am, 0, &Sm, &Um0, &Vm0), SG_OK, "%s", sg_last_error(cpu));
    for (int64_t b = 0; b < nb; b++) {
        if (kind == 1)
            for (int64_t i = 1; i < k; i += 2) S[b * k + i] = S[b * k + i - 1];
        if (kind == 2) S[b * k + k - 1] = 0;
    }
    vector<T> U = pad(Ud, nb, m, k, ldU, sU, (T)QNAN), V = pad(Vd, nb, n, k, ldV, sV, (T)QNAN);
    vector<T> gU = pad(normal<T>(r, m * k * nb), nb, m, k, ldU, sU, (T)QNAN), gS = normal<T>(r, k * nb),
              gV = pad(normal<T>(r, n * k * nb), nb, n, k, ldV, sV, (T)QNAN);
    const bool hU = grads & 1, hS = grads & 2, hV = grads & 4;
    vector<T> want((size_t)(sA * nb), T(-9));
    sg_mat Um = smat(U, nb, m, k, ldU, sU), Vm = smat(V, nb, n, k, ldV, sV), gUm = smat(gU, nb, m, k, ldU, sU),
           gVm = smat(gV, nb, n, k, ldV, sV), gSm = mat(gS, nb, k, 1), Sm2 = mat(S, nb, k, 1),
           gAm = smat(want, nb, m, n, ldA, sA);
    const sg_status cs = sg_svd_backward(cpu, &Um, &Sm2, &Vm, hU ? &gUm : nullptr, hS ? &gSm : nullptr,
                                         hV ? &gVm : nullptr, (sg_degen)mode, 0.0, &gAm);
    cr_assert(cs == SG_OK || cs == SG_ERR_DEGENERATE, "%s", sg_last_error(cpu));
    const int64_t cidx = cs == SG_OK ? -1 : sg_failed_index(cpu);
    /* the kernel chain of svd_backward's body */
    const T p = (T)sg_degen_param(mode, 0.0, f32);
    const int rect = m > n && hU ? RECT_TALL : m < n && hV ? RECT_WIDE : RECT_NONE;
    const int64_t ysize = rect == RECT_TALL ? m * k : k * n;
    vector<T> P((size_t)(kk * nb), (T)QNAN), Q = P, I = P, Y((size_t)(ysize * nb), (T)QNAN), scale((size_t)nb, (T)QNAN),
              gA((size_t)(sA * nb), T(-9));
    const T *ud = U.data(), *vd = V.data(), *gud = hU ? gU.data() : nullptr, *gvd = hV ? gV.data() : nullptr,
            *gsd = hS ? gS.data() : nullptr, *sd = S.data();
    if (gud) gemm_b(true, false, k, k, m, T(1), ud, ldU, sU, gud, ldU, sU, T(0), P.data(), k, kk, nb);
    if (gvd) gemm_b(true, false, k, k, n, T(1), vd, ldV, sV, gvd, ldV, sV, T(0), Q.data(), k, kk, nb);
    vector<int> flags((size_t)nb, 0);
    if (fused) {
        FusedSvdArgs<T> fa;
        fa.U = ud; fa.ldU = ldU; fa.sU = sU;
        fa.S = sd; fa.sS = k;
        fa.V = vd; fa.ldV = ldV; fa.sV = sV;
        fa.gU = gud; fa.ldgU = ldU; fa.sgU = sU;
        fa.gS = gsd; fa.sgS = k;
        fa.gV = gvd; fa.ldgV = ldV; fa.sgV = sV;
        fa.ldA = ldA; fa.sA = sA;
        fa.m = (int)m; fa.n = (int)n; fa.batch = nb;
        fa.mode = mode; fa.param = p;
        all_modes("fused_svd_backward", [&] {
            gA.assign((size_t)(sA * nb), T(-9));
            flags.assign((size_t)nb, -1); /* always written */
            fa.gA = gA.data();
            fa.flags = flags.data();
            launch_fused_svd_emu<T>(fa);
            return bytes2(gA, flags);
        });
    } else {
    emu_launch(grid_1d(nb * 256, 256), 256, 0, k_scale<T>, sd, k, (int)k, nb, 1, scale.data());
    emu_launch(grid_1d(kk * nb, 256), 256, 0, k_svd_inner<T>, gud ? (const T *)P.data() : nullptr,
               gvd ? (const T *)Q.data() : nullptr, sd, k, gsd, gsd ? k : 0, I.data(), (int)k, nb, mode, p,
               (const T *)scale.data(), rect, flags.data());
    if (rect == RECT_TALL) {
        emu_launch(grid_1d(m * k * nb, 256), 256, 0, k_div_sigma<T>, gud, ldU, sU, sd, k, Y.data(), (int)m, (int)k, nb, 0);
        gemm_b(false, false, m, k, k, T(1), ud, ldU, sU, I.data(), k, kk, T(1), Y.data(), m, ysize, nb);
        gemm_b(false, true, m, n, k, T(1), Y.data(), m, ysize, vd, ldV, sV, T(0), gA.data(), ldA, sA, nb);
    } else {
        T beta = T(0);
        if (rect == RECT_WIDE) {
            emu_launch(grid_1d(k * n * nb, 256), 256, 0, k_div_sigma<T>, gvd, ldV, sV, sd, k, Y.data(), (int)k, (int)n, nb, 1);
            beta = T(1);
        }
        gemm_b(false, true, k, n, k, T(1), I.data(), k, kk, vd, ldV, sV, beta, Y.data(), k, ysize, nb);
        gemm_b(false, false, m, n, k, T(1), ud, ldU, sU, Y.data(), k, ysize, T(0), gA.data(), ldA, sA, nb);
    }
    emu_launch(grid_1d(m * n * nb, 256), 256, 0, k_flag_nonfinite<T>, (const T *)gA.data(), ldA, sA, (int)m, (int)n, nb,
               flags.data());
    }
    char what[160];
    snprintf(what, sizeof what, "svd %s %lldx%lld nb=%lld spectrum %d mode %d grads %d", fused ? "fused" : "chain", (long long)m, (long long)n,
             (long long)nb, kind, mode, grads);
    const int ff = expect_first_flag(what, flags, cs, cidx);
    if (cs == SG_ERR_DEGENERATE && mode == SG_DM_EXACT && kind == 1)
        cr_assert(flags[(size_t)ff] & FLAG_TIE, "%s: CPU reports a tie, flags %d", what, flags[(size_t)ff]);
    expect_chain_gA(what, gA, want, nb, m, n, ldA, sA, cs);
}
template <class T> static void svd_chain_all()
{
    tu_rng r = tu_seed(45);
    const int64_t shapes[][2] = {{1, 1}, {2, 3}, {33, 31}, {70, 70}, {100, 65}, {65, 100}};
    for (auto sh : shapes) {
        const int64_t m = sh[0], n = sh[1];
        svd_chain_case<T>(&r, m, n, 2, 0, SG_DM_EXACT, 7);
        svd_chain_case<T>(&r, m, n, 2, 1, SG_DM_EXACT, 7); /* DEGENERATE ↔ FLAG_TIE (k ≥ 2) */
        svd_chain_case<T>(&r, m, n, 2, 1, SG_DM_MASK, 7);
        svd_chain_case<T>(&r, m, n, 2, 1, SG_DM_LORENTZ, 1);
        svd_chain_case<T>(&r, m, n, 2, 0, SG_DM_TAYLOR, 5);
        svd_chain_case<T>(&r, m, n, 2, 2, SG_DM_MASK, 7); /* σ = 0: Σ⁻¹ of a rectangular input → FLAG_NONFINITE */
        svd_chain_case<T>(&r, m, n, 2, 1, SG_DM_EXACT, 2); /* gS only */
    }
}
Test(emu_grad, svd_backward_chain_f32) { svd_chain_all<float>(); }
Test(emu_grad, svd_backward_chain_f64) { svd_chain_all<double>(); }

template <class T> static void svd_fused_all()
{
    tu_rng r = tu_seed(46);
    const int64_t shapes[][2] = {{1, 1}, {2, 3}, {7, 4}, {4, 7}, {6, 1}, {1, 5}, {16, 16}, {17, 5},
                                 {33, 31}, {20, 64}, {64, 20}, {64, 64}};
    for (auto sh : shapes) {
        const int64_t m = sh[0], n = sh[1];
        svd_chain_case<T>(&r, m, n, 2, 0, SG_DM_EXACT, 7, true);
        svd_chain_case<T>(&r, m, n, 2, 1, SG_DM_EXACT, 7, true); /* DEGENERATE ↔ FLAG_TIE (k ≥ 2) */
        svd_chain_case<T>(&r, m, n, 2, 1, SG_DM_MASK, 7, true);
        svd_chain_case<T>(&r, m, n, 2, 1, SG_DM_LORENTZ, 1, true);
        svd_chain_case<T>(&r, m, n, 2, 0, SG_DM_TAYLOR, 5, true);
        svd_chain_case<T>(&r, m, n, 2, 2, SG_DM_MASK, 7, true); /* σ = 0 with a Σ⁻¹ term → FLAG_NONFINITE */
        svd_chain_case<T>(&r, m, n, 2, 0, SG_DM_EXACT, 2, true); /* gS only */
        svd_chain_case<T>(&r, m, n, 2, 0, SG_DM_EXACT, 4, true); /* gV only */
    }
    fused_blocks = 1; /* persistent grid: one block loops over the batch, tiles reused across shapes of work */
    svd_chain_case<T>(&r, 9, 5, 4, 0, SG_DM_EXACT, 7, true);
    svd_chain_case<T>(&r, 5, 9, 4, 1, SG_DM_MASK, 5, true);
    fused_blocks = SMS * 2;
}
Test(emu_grad, svd_backward_fused_f32) { svd_fused_all<float>(); }
Test(emu_grad, svd_backward_fused_f64) { svd_fused_all<double>(); }

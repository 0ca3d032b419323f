/* The project's CUDA kernels (cuda/linalg_kernels.cuh, cuda/grad_kernels.cuh) executed on the CPU through
   tests/emu/cuda_emu.h and compared with the CPU reference (libspecgrad on SG_BACKEND_CPU, LAPACKE, or a
   direct loop). Needs no GPU and no CUDA toolkit: g++ compiles the kernels as host C++.

   Every launch uses the grid / block / dynamic shared memory the host code in cuda/linalg.cu and
   cuda/grad.cu uses (mirrored below where the host code computes it inline; fused_smem, fused_vdvt_smem and
   fused_threads are shared with cuda/grad.cu). Each configuration runs under several schedules (free
   threads, forward, reverse, random order: see cuda_emu.h) and the results must be bitwise identical
   across them (a race or a missing __syncthreads shows up as a difference) and match the reference:
   f64 ~1e-10, f32 ~1e-4 relative. */
#include <criterion/criterion.h>
#include <lapacke.h>

#include "emu_test.h" /* cuda_emu.h, the CPU reference context, schedules */

#include "grad_kernels.cuh"
#include "linalg_kernels.cuh"

#include "specgrad.h"
extern "C" {
#include "testutil.h"
}

#include <algorithm>
#include <chrono>
#include <limits>
#include <string>
#include <vector>

using std::vector;

/* ---- launch shapes, as the host code sets them -----------------------------------------------------
   Shared with cuda/linalg.cu: sg_grid_capped (grid_for: 16 blocks per SM), jw_extract_smem, project_smem,
   qr_threads, qr_smem, qr_apply_smem, lstsq_smem. Mirrored: one block per matrix for the block kernels,
   k_rank ceil(nb/128) × 128.
   cuda/grad.cu's fused launches share fused_threads / fused_smem / fused_vdvt_smem with this test.
   H100/H200 have 132 SMs; cap_sms = 1 exercises the grid-stride / persistent loops with a tiny grid. */
static const int64_t SMS = 132;
static int64_t cap_sms = SMS;
static unsigned grid_for(int64_t total) { return sg_grid_capped(total, SG_BLOCK, cap_sms * 16); }
/* Fused kernels: occupancy × SMs blocks, at most one per matrix (persistent grid). */
static unsigned fused_grid(int64_t batch) { return (unsigned)std::min<int64_t>(batch, cap_sms * 2); }

/* ---- helpers ------------------------------------------------------------------------------------------ */
TestSuite(emu, .init = emu_suite_setup, .fini = emu_suite_teardown);

template <class T> constexpr double tol() { return sizeof(T) == 4 ? 1e-4 : 1e-10; }
template <class T> constexpr double eps() { return sizeof(T) == 4 ? 1.1920928955078125e-07 : 2.220446049250313e-16; }

template <class T> static vector<double> dbl(const vector<T> &x) { return vector<double>(x.begin(), x.end()); }


static double max_abs(const vector<double> &x)
{
    double m = 0;
    for (double v : x) m = std::max(m, std::fabs(v));
    return m;
}
/* max |a − b| / max(1, max |b|) over the whole array */
static double rel_err(const vector<double> &a, const vector<double> &b)
{
    double d = 0;
    for (size_t i = 0; i < a.size(); i++) d = std::max(d, std::fabs(a[i] - b[i]));
    return d / std::max(1.0, max_abs(b));
}

/* All schedules must agree bitwise (emu_schedules). The fiber schedules run for every configuration; FREE
   (256 real OS threads per block: every barrier is 256 kernel wake-ups) for every FREE_EVERY-th
   configuration of a test, the first included, to stay within the CI time budget. */
#if defined(__SANITIZE_ADDRESS__)
static const int FREE_EVERY = 1 << 30; /* ASan stage: thread creation is slow there; FREE for the first only */
#else
static const int FREE_EVERY = 4;
#endif
static int configs_run = 0;
template <class F> static vector<unsigned char> all_modes(const char *what, F launch, bool free_ok = true)
{
    return emu_schedules(what, launch, free_ok && configs_run++ % FREE_EVERY == 0, false);
}

/* Batch of m×n matrices with the given singular values per matrix (sv(b, i)), packed column-major. */
template <class SV> static vector<double> batch_with_sv(tu_rng *r, int64_t nb, int64_t m, int64_t n, SV sv)
{
    const int64_t k = std::min(m, n);
    vector<double> A((size_t)(nb * m * n)), s((size_t)k);
    for (int64_t b = 0; b < nb; b++) {
        for (int64_t i = 0; i < k; i++) s[(size_t)i] = sv(b, i);
        tu_mat_with_singular_values(r, m, n, s.data(), A.data() + b * m * n);
    }
    return A;
}
/* Matrix b of a batch: b % 3 == 0 full rank, 1 rank ≈ k/2, 2 rank 1 (or 0 for the last of 3+). */
static double sv_mixed(int64_t nb, int64_t k, int64_t b, int64_t i)
{
    const int64_t r = b % 3 == 0 ? k : b % 3 == 1 ? (k + 1) / 2 : (b == nb - 1 && nb >= 3 ? 0 : 1);
    return i < r ? 1.0 + 2.0 * (double)(k - i) / (double)k : 0.0;
}

/* CPU SVD through the library: S (k), U (m×ucols), V (n×vcols) in T. */
template <class T>
static void cpu_svd(const vector<T> &A, int64_t nb, int64_t m, int64_t n, bool full, vector<T> &S, vector<T> &U,
                    vector<T> &V)
{
    const int64_t k = std::min(m, n), uc = full ? m : k, vc = full ? n : k;
    vector<T> a = A;
    S.assign((size_t)(nb * k), 0);
    U.assign((size_t)(nb * m * uc), 0);
    V.assign((size_t)(nb * n * vc), 0);
    sg_mat Am = mat(a, nb, m, n), Sm = mat(S, nb, k, 1), Um = mat(U, nb, m, uc), Vm = mat(V, nb, n, vc);
    cr_assert_eq(sg_svd(cpu, &Am, full, &Sm, &Um, &Vm), SG_OK, "%s", sg_last_error(cpu));
}

/* rank per matrix by the CPU rule (k_rank's input and reference) */
template <class T> static vector<int64_t> cpu_rank(const vector<T> &A, int64_t nb, int64_t m, int64_t n)
{
    vector<T> a = A;
    vector<int64_t> r((size_t)nb);
    sg_mat Am = mat(a, nb, m, n);
    cr_assert_eq(sg_rank(cpu, &Am, 0, -1, r.data()), SG_OK, "%s", sg_last_error(cpu));
    return r;
}

/* nb random m×n matrices with sv_mixed singular values (some rank-deficient) and their CPU SVD and rank:
   the inputs of the rank, nullspace, projection and lstsq kernels. */
template <class T> struct SvdCase {
    vector<T> A, S, U, V;
    vector<int64_t> rk;
};
template <class T> static SvdCase<T> svd_case(tu_rng *r, int64_t nb, int64_t m, int64_t n, bool full)
{
    const int64_t k = std::min(m, n);
    SvdCase<T> c;
    c.A = to<T>(batch_with_sv(r, nb, m, n, [&](int64_t b, int64_t i) { return sv_mixed(nb, k, b, i); }));
    cpu_svd(c.A, nb, m, n, full, c.S, c.U, c.V);
    c.rk = cpu_rank(c.A, nb, m, n);
    return c;
}

static const int64_t SIZES[] = {1, 2, 7, 31, 32, 33, 64, 100};

/* ======================================================================================================
   linalg_kernels.cuh
   ====================================================================================================== */

/* k_copy: strided → packed and packed → strided (launch_copy: grid_for(rows·cols·nb) × SG_BLOCK). */
template <class T> static void copy_case(tu_rng *r, int64_t rows, int64_t cols, int64_t nb)
{
    const int64_t sld = rows + 3, sst = sld * cols + 5;
    vector<double> src0((size_t)(sst * nb));
    tu_fill_normal(r, src0.data(), (int64_t)src0.size());
    vector<T> src = to<T>(src0);
    vector<T> ref((size_t)(rows * cols * nb));
    for (int64_t b = 0; b < nb; b++)
        for (int64_t j = 0; j < cols; j++)
            for (int64_t i = 0; i < rows; i++) ref[b * rows * cols + i + j * rows] = src[b * sst + i + j * sld];
    vector<T> dst;
    all_modes("k_copy", [&] {
        dst.assign(ref.size(), T(-7));
        emu_launch(grid_for(rows * cols * nb), SG_BLOCK, 0, k_copy<T>, src.data(), sld, sst, dst.data(), rows,
                   rows * cols, rows, cols, nb, nullptr, 0, 0);
        return bytes(dst);
    });
    cr_assert(dst == ref, "k_copy %lldx%lld nb=%lld", (long long)rows, (long long)cols, (long long)nb);
    /* back, into a strided destination whose padding must stay untouched */
    vector<T> back((size_t)(sst * nb), T(-7)), want = back;
    for (int64_t b = 0; b < nb; b++)
        for (int64_t j = 0; j < cols; j++)
            for (int64_t i = 0; i < rows; i++) want[b * sst + i + j * sld] = ref[b * rows * cols + i + j * rows];
    emu_launch(grid_for(rows * cols * nb), SG_BLOCK, 0, k_copy<T>, dst.data(), rows, rows * cols, back.data(), sld, sst,
               rows, cols, nb, nullptr, 0, 0);
    cr_assert(back == want, "k_copy back %lldx%lld", (long long)rows, (long long)cols);
    /* packed → packed (the flat path: no index arithmetic), and the guards: a set scan flag makes the
       destination zeros (zero = 1) or leaves it alone (zero = 0) */
    vector<T> flat(ref.size(), T(-7));
    emu_launch(grid_for(rows * cols * nb), SG_BLOCK, 0, k_copy<T>, ref.data(), rows, rows * cols, flat.data(), rows,
               rows * cols, rows, cols, nb, nullptr, 0, 0);
    cr_assert(flat == ref, "k_copy packed %lldx%lld", (long long)rows, (long long)cols);
    /* padding between matrices only (ld = rows): not flat */
    vector<T> gap((size_t)((rows * cols + 5) * nb), T(-3)), fromgap(ref.size(), T(-7));
    for (int64_t b = 0; b < nb; b++)
        std::copy(ref.begin() + b * rows * cols, ref.begin() + (b + 1) * rows * cols, gap.begin() + b * (rows * cols + 5));
    emu_launch(grid_for(rows * cols * nb), SG_BLOCK, 0, k_copy<T>, gap.data(), rows, rows * cols + 5, fromgap.data(),
               rows, rows * cols, rows, cols, nb, nullptr, 0, 0);
    cr_assert(fromgap == ref, "k_copy from stride-padded %lldx%lld nb=%lld", (long long)rows, (long long)cols,
              (long long)nb);
    const unsigned long long flags[2] = {~0ull, 5};
    for (int zero : {0, 1}) {
        vector<T> d2(ref.size(), T(-7));
        emu_launch(grid_for(rows * cols * nb), SG_BLOCK, 0, k_copy<T>, ref.data(), rows, rows * cols, d2.data(), rows,
                   rows * cols, rows, cols, nb, flags, 2, zero);
        cr_assert(std::all_of(d2.begin(), d2.end(), [&](T v) { return v == (zero ? T(0) : T(-7)); }), "k_copy behind a failed scan, zero = %d", zero);
        vector<T> d3(ref.size(), T(-7));
        emu_launch(grid_for(rows * cols * nb), SG_BLOCK, 0, k_copy<T>, ref.data(), rows, rows * cols, d3.data(), rows,
                   rows * cols, rows, cols, nb, flags, 1, zero); /* only the clean flag */
        cr_assert(d3 == ref, "k_copy behind a clean scan, zero = %d", zero);
    }
}

template <class T> static void copy_all()
{
    tu_rng r = tu_seed(11);
    for (int64_t rows : {1, 7, 33, 100})
        for (int64_t cols : {1, 32, 33})
            for (int64_t nb : {1, 3}) copy_case<T>(&r, rows, cols, nb);
    cap_sms = 1; /* 16 blocks for 100·33·3 elements: grid-stride loop */
    copy_case<T>(&r, 100, 33, 3);
    cap_sms = SMS;
}
/* sg_split3 (the element kernels' index split) with 32-bit and 64-bit divisions, and SgWalk (the tile
   kernel's division-free walk) against division, for the step sizes and shapes the kernels use. */
Test(emu, index_split_and_walk)
{
    tu_rng r = tu_seed(10);
    for (int t = 0; t < 20000; t++) {
        const int64_t rows = 1 + (int64_t)(tu_uniform(&r) * 300), cols = 1 + (int64_t)(tu_uniform(&r) * 300),
                      per = rows * cols, nb = 1 + (int64_t)(tu_uniform(&r) * 1e6), total = per * nb;
        const int64_t e = (int64_t)(tu_uniform(&r) * (double)total);
        int64_t b[2], j[2], i[2];
        for (int narrow : {0, 1}) {
            if (narrow && !SG_NARROW(total)) continue;
            sg_split3(e, rows, per, narrow, &b[narrow], &j[narrow], &i[narrow]);
            cr_assert(b[narrow] == e / per && j[narrow] == e % per / rows && i[narrow] == e % rows,
                      "sg_split3(%lld, %lld, %lld, narrow %d)", (long long)e, (long long)rows, (long long)per, narrow);
        }
    }
    int64_t b, j, i; /* beyond 2³²: only the 64-bit path is right (what SG_NARROW decides) */
    const int64_t big = ((int64_t)1 << 33) + 12345;
    cr_assert(!SG_NARROW(big) && SG_NARROW((int64_t)UINT32_MAX));
    sg_split3(big, 1000, 1000 * 1000, false, &b, &j, &i);
    cr_assert(b == big / 1000000 && j == big % 1000000 / 1000 && i == big % 1000);
    for (int rows : {1, 2, 3, 7, 8, 33, 64, 300})
        for (int cols : {1, 2, 5, 32, 65})
            for (int step : {1, 32, 128, 256, 1024})
                for (int start : {0, 1, step - 1}) {
                    SgWalk w(start, step, rows, cols);
                    for (int e = start; e < 3 * rows * cols + 2 * step; e += step, w.next())
                        cr_assert(w.mt == e / (rows * cols) && w.c == e % (rows * cols) / rows && w.i == e % rows,
                                  "SgWalk rows %d cols %d step %d at %d: (%d, %d, %d)", rows, cols, step, e, w.mt, w.c, w.i);
                }
}

Test(emu, k_copy_f32) { copy_all<float>(); }
Test(emu, k_copy_f64) { copy_all<double>(); }

/* k_nonfinite (sg_cuda_check_finite_all: grid_for(total) × SG_BLOCK, *first preset to ~0). */
template <class T> static void nonfinite_all()
{
    tu_rng r = tu_seed(12);
    for (int64_t rows : {1, 7, 33})
        for (int64_t cols : {1, 31, 64})
            for (int64_t nb : {1, 4})
                for (int64_t pad : {0, 1}) { /* packed (no index arithmetic) and padded layouts */
                    const int64_t ld = rows + pad, st = ld * cols, per = rows * cols, total = per * nb;
                    vector<double> x0((size_t)(st * nb));
                    tu_fill_normal(&r, x0.data(), (int64_t)x0.size());
                    vector<T> x = to<T>(x0);
                    if (pad)
                        for (int64_t b = 0; b < nb; b++) x[b * st + rows] = NAN; /* padding: must be ignored */
                    unsigned long long want = ~0ull; /* bad elements accumulate over the trials */
                    for (int trial = 0; trial < 3; trial++) {
                        if (trial > 0) { /* 1: one bad element; 2: several, the first must win */
                            for (int q = 0; q < trial * 3; q++) {
                                int64_t e = (int64_t)(tu_uniform(&r) * (double)total);
                                int64_t b = e / per, rr = e % per, j = rr / rows, i = rr % rows;
                                x[b * st + i + j * ld] = q % 2 ? (T)INFINITY : (T)NAN;
                                want = std::min(want, (unsigned long long)e);
                            }
                        }
                        unsigned long long first = 0;
                        all_modes("k_nonfinite", [&] {
                            first = ~0ull;
                            emu_launch(grid_for(total), SG_BLOCK, 0, k_nonfinite<T>, x.data(), ld, st, rows, cols, nb,
                                       &first);
                            return bytes(vector<unsigned long long>{first});
                        });
                        cr_assert_eq(first, want, "k_nonfinite %lldx%lld nb=%lld pad %lld trial %d", (long long)rows,
                                     (long long)cols, (long long)nb, (long long)pad, trial);
                    }
                }
}
Test(emu, k_nonfinite_f32) { nonfinite_all<float>(); }
Test(emu, k_nonfinite_f64) { nonfinite_all<double>(); }

/* ---- safe range and non-finite guard (k_range_scale / k_range_unscale around the solvers) ----------------
   Per matrix kind: in range (untouched, ex 0), huge and tiny (scaled by 2^−e, e = ilogb(max|a|), max in
   [1, 2)), subnormal max (e below the normal range: scalbn, not a factor 2^−e that would overflow), zero
   (untouched), NaN and Inf (ex SG_RANGE_BAD, zeroed), and, in lower mode, a huge upper triangle or a NaN in
   it over an in-range lower one (untouched: eigh never reads it). Scaled entries round-trip bitwise. The
   unscale puts values back by 2^e, marks a BAD matrix's info and fills its values and both vector sets with
   NaN, and leaves every other matrix's info and vectors alone, except that a value of the BIG matrix set to
   overflow when scaled back marks it SG_RANGE_OVER where the solver left info 0. */
template <class T> static void range_scale_all()
{
    const double big = sizeof(T) == 4 ? 1e30 : 1e250, tiny = 1 / big, sub = sizeof(T) == 4 ? 1e-40 : 1e-310;
    const int EXP = SgRange<T>::EXP;
    enum { NORMAL, BIG, TINY, SUB, ZERO, NANK, INFK, UPPER, UPPER_NAN, KINDS };
    tu_rng r = tu_seed(14);
    for (auto sh : {std::make_pair<int64_t, int64_t>(1, 1), {5, 5}, {33, 33}, {40, 5}})
        for (int lower = 0; lower <= (sh.first == sh.second); lower++) {
            const int64_t rows = sh.first, cols = sh.second, per = rows * cols, nb = KINDS, k = 3;
            vector<double> a0((size_t)(per * nb));
            tu_fill_normal(&r, a0.data(), (int64_t)a0.size());
            for (int64_t b = 0; b < nb; b++)
                for (int64_t e = 0; e < per; e++) {
                    double &x = a0[(size_t)(b * per + e)];
                    const bool upper = e % rows < e / rows;
                    x = b == BIG ? x * big : b == TINY ? x * tiny : b == SUB ? x * sub : b == ZERO ? 0
                        : b == UPPER && upper ? x * big : b == UPPER_NAN && upper ? NAN : x;
                }
            a0[(size_t)(NANK * per + per / 2)] = NAN, a0[(size_t)(NANK * per)] *= big;
            a0[(size_t)(INFK * per + per - 1)] = -INFINITY; /* the last element: on the diagonal or below */
            const vector<T> A0 = to<T>(a0);
            vector<T> A;
            vector<int> ex;
            const unsigned grid = range_grid(nb); /* nb = 9: the last block part idle */
            all_modes("k_range_scale", [&] {
                A = A0, ex.assign((size_t)nb, -7);
                emu_launch(grid, SG_RANGE_THREADS, 0, k_range_scale<T>, A.data(), rows, cols, nb, lower, ex.data());
                return bytes2(A, ex);
            });
            for (int64_t b = 0; b < nb; b++) {
                T mx = 0;
                bool fin = true;
                for (int64_t e = 0; e < per; e++)
                    if (!lower || e % rows >= e / rows) {
                        const T x = A0[(size_t)(b * per + e)];
                        fin &= std::isfinite(x), mx = std::max(mx, std::fabs(x));
                    }
                const int want = !fin ? SG_RANGE_BAD : mx > 0 && std::abs(std::ilogb(mx)) > EXP ? std::ilogb(mx) : 0;
                const bool upper_counts = !lower && per > 1 && rows > 1;
                const int meant = b == NANK || b == INFK || (b == UPPER_NAN && upper_counts) ? SG_RANGE_BAD
                                  : b == BIG || b == TINY || b == SUB || (b == UPPER && upper_counts) ? 1 : 0;
                cr_assert_eq(ex[(size_t)b], want, "k_range_scale %lldx%lld lower %d kind %lld: ex %d, want %d",
                             (long long)rows, (long long)cols, lower, (long long)b, ex[(size_t)b], want);
                cr_assert_eq(want == SG_RANGE_BAD ? 2 : want != 0, meant == SG_RANGE_BAD ? 2 : meant,
                             "kind %lld: the test's own input is not what it means", (long long)b);
                T amax = 0;
                for (int64_t e = 0; e < per; e++) {
                    const T x0 = A0[(size_t)(b * per + e)], x = A[(size_t)(b * per + e)];
                    const T w = want == SG_RANGE_BAD ? T(0) : want ? std::scalbn(x0, -want) : x0;
                    cr_assert(std::memcmp(&x, &w, sizeof(T)) == 0, "k_range_scale kind %lld element %lld: %g, want %g",
                              (long long)b, (long long)e, (double)x, (double)w);
                    if (want && want != SG_RANGE_BAD && b != SUB) /* no entry underflowed: the round trip is exact */
                        cr_assert(std::scalbn(x, want) == x0, "kind %lld element %lld: round trip", (long long)b,
                                  (long long)e);
                    if (!lower || e % rows >= e / rows) amax = std::max(amax, std::fabs(x));
                }
                if (want && want != SG_RANGE_BAD)
                    cr_assert(amax >= T(1) && amax < T(2), "kind %lld: scaled max %g not in [1, 2)", (long long)b,
                              (double)amax);
            }
            const int64_t p1 = per, p2 = 2;
            vector<double> w0((size_t)(k * nb)), x10((size_t)(p1 * nb)), x20((size_t)(p2 * nb));
            tu_fill_normal(&r, w0.data(), (int64_t)w0.size());
            tu_fill_normal(&r, x10.data(), (int64_t)x10.size());
            tu_fill_normal(&r, x20.data(), (int64_t)x20.size());
            vector<T> W0 = to<T>(w0);
            const vector<T> X10 = to<T>(x10), X20 = to<T>(x20);
            /* BIG's last value: 2^(max_exponent − e), which 2^e takes to infinity */
            W0[(size_t)(BIG * k + k - 1)] = std::scalbn(T(1), std::numeric_limits<T>::max_exponent - ex[BIG]);
            for (int two = 0; two < 4; two++) { /* X2 absent, then present; info 5 (a solver's), then 0 */
                const int info0 = two < 2 ? 5 : 0;
                vector<T> W, X1, X2;
                vector<int> info;
                all_modes("k_range_unscale", [&] {
                    W = W0, X1 = X10, X2 = X20, info.assign((size_t)nb, info0);
                    emu_launch(grid, SG_RANGE_THREADS, 0, k_range_unscale<T>, W.data(), k, X1.data(), p1,
                               two % 2 ? X2.data() : (T *)nullptr, p2, nb, (const int *)ex.data(), info.data());
                    return bytes2(bytes2(W, info), bytes2(X1, X2));
                });
                for (int64_t b = 0; b < nb; b++) {
                    const bool bad = ex[(size_t)b] == SG_RANGE_BAD;
                    const int want = bad ? SG_RANGE_BAD : b == BIG && info0 == 0 ? SG_RANGE_OVER : info0;
                    cr_assert_eq(info[(size_t)b], want, "k_range_unscale info %lld: %d, want %d", (long long)b,
                                 info[(size_t)b], want);
                    for (int64_t i = 0; i < k; i++) {
                        const T x = W[(size_t)(b * k + i)], x0 = W0[(size_t)(b * k + i)];
                        cr_assert(bad ? std::isnan(x) : x == std::scalbn(x0, ex[(size_t)b]), "k_range_unscale W %lld %lld",
                                  (long long)b, (long long)i);
                    }
                    for (int64_t i = 0; i < p1; i++)
                        cr_assert(bad ? std::isnan(X1[(size_t)(b * p1 + i)]) : X1[(size_t)(b * p1 + i)] == X10[(size_t)(b * p1 + i)],
                                  "k_range_unscale X1 %lld %lld", (long long)b, (long long)i);
                    for (int64_t i = 0; i < p2; i++)
                        cr_assert(bad && two % 2 ? std::isnan(X2[(size_t)(b * p2 + i)]) : X2[(size_t)(b * p2 + i)] == X20[(size_t)(b * p2 + i)],
                                  "k_range_unscale X2 %lld %lld", (long long)b, (long long)i);
                }
            }
        }
}
Test(emu, k_range_scale_f32) { range_scale_all<float>(); }
Test(emu, k_range_scale_f64) { range_scale_all<double>(); }

/* k_jw_build (svd_run: grid_for(N²·nb) × SG_BLOCK). */
template <class T> static vector<T> jw_ref(const vector<T> &A, int64_t m, int64_t n, int64_t nb)
{
    const int64_t N = m + n;
    vector<T> H((size_t)(N * N * nb), T(0));
    for (int64_t b = 0; b < nb; b++)
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                const T a = A[b * m * n + i + j * m];
                H[b * N * N + i + (m + j) * N] = a;
                H[b * N * N + (m + j) + i * N] = a;
            }
    return H;
}
template <class T> static void jw_build_all()
{
    tu_rng r = tu_seed(13);
    for (int64_t m : {1, 2, 7, 33, 64})
        for (int64_t n : {1, 31, 40})
            for (int64_t nb : {1, 3}) {
                vector<double> a0((size_t)(m * n * nb));
                tu_fill_normal(&r, a0.data(), (int64_t)a0.size());
                vector<T> A = to<T>(a0), H;
                const int64_t N = m + n;
                all_modes("k_jw_build", [&] {
                    H.assign((size_t)(N * N * nb), T(-7));
                    emu_launch(grid_for(N * N * nb), SG_BLOCK, 0, k_jw_build<T>, A.data(), m, n, H.data(), nb);
                    return bytes(H);
                });
                cr_assert(H == jw_ref(A, m, n, nb), "k_jw_build %lldx%lld", (long long)m, (long long)n);
            }
}
Test(emu, k_jw_build_f32) { jw_build_all<float>(); }
Test(emu, k_jw_build_f64) { jw_build_all<double>(); }

/* Ascending eigendecomposition of packed symmetric N×N matrices (the XsyevBatched step of svd_run). */
static void lapack_syev(vector<float> &Z, vector<float> &W, int64_t N, int64_t nb)
{
    W.assign((size_t)(N * nb), 0);
    for (int64_t b = 0; b < nb; b++)
        cr_assert_eq(LAPACKE_ssyevd(LAPACK_COL_MAJOR, 'V', 'L', (int)N, Z.data() + b * N * N, (int)N, W.data() + b * N), 0);
}
static void lapack_syev(vector<double> &Z, vector<double> &W, int64_t N, int64_t nb)
{
    W.assign((size_t)(N * nb), 0);
    for (int64_t b = 0; b < nb; b++)
        cr_assert_eq(LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', (int)N, Z.data() + b * N * N, (int)N, W.data() + b * N), 0);
}

/* ||QᵀQ − I||_max for d×t Q */
template <class T> static double orth_err(const T *Q, int64_t d, int64_t t)
{
    double e = 0;
    for (int64_t a = 0; a < t; a++)
        for (int64_t c = 0; c < t; c++) {
            double s = 0;
            for (int64_t i = 0; i < d; i++) s += (double)Q[i + a * d] * (double)Q[i + c * d];
            e = std::max(e, std::fabs(s - (a == c ? 1.0 : 0.0)));
        }
    return e;
}

/* k_jw_extract (svd_run: nb blocks × SG_BLOCK, smem jw_extract_smem) on the eigenvectors of H. Checks:
   S against the CPU SVD, U and V orthonormal, A = U_k diag(S) V_kᵀ, and span(V[:, r:]) = CPU null space. */
template <class T> static void jw_extract_case(tu_rng *r, int64_t m, int64_t n, int64_t nb, int64_t ucols, int64_t vcols)
{
    const bool free_ok = m + n <= 9; /* FREE: 256 OS-thread wake-ups per barrier, ~10 barriers per candidate */
    const int64_t k = std::min(m, n), N = m + n;
    vector<T> A = to<T>(batch_with_sv(r, nb, m, n, [&](int64_t b, int64_t i) { return sv_mixed(nb, k, b, i); }));
    vector<T> Z = jw_ref(A, m, n, nb), Wv;
    lapack_syev(Z, Wv, N, nb);
    vector<T> S, U, V;
    vector<int> info;
    const size_t smem = jw_extract_smem<T>(m, n, ucols > 0 || vcols > 0); /* as svd_run: none without a basis */
    all_modes("k_jw_extract", [&] {
        S.assign((size_t)(k * nb), T(-7));
        U.assign((size_t)std::max<int64_t>(1, m * ucols * nb), T(-7));
        V.assign((size_t)std::max<int64_t>(1, n * vcols * nb), T(-7));
        info.assign((size_t)nb, 0);
        emu_launch((unsigned)nb, SG_BLOCK, smem, k_jw_extract<T>, Z.data(), Wv.data(), m, n, S.data(),
                   ucols ? U.data() : nullptr, ucols, vcols ? V.data() : nullptr, vcols, info.data());
        vector<unsigned char> out = bytes2(S, U);
        vector<unsigned char> v = bytes2(V, info);
        out.insert(out.end(), v.begin(), v.end());
        return out;
    }, free_ok);
    vector<T> Sc, Uc, Vc;
    cpu_svd(A, nb, m, n, true, Sc, Uc, Vc);
    vector<int64_t> rk = cpu_rank(A, nb, m, n);
    const double tl = sizeof(T) == 4 ? 1e-4 : 1e-10;
    char where[160];
    snprintf(where, sizeof where, "k_jw_extract m=%lld n=%lld nb=%lld ucols=%lld vcols=%lld", (long long)m,
             (long long)n, (long long)nb, (long long)ucols, (long long)vcols);
    for (int64_t b = 0; b < nb; b++) {
        cr_assert_eq(info[b], 0, "%s: info[%lld] = %d", where, (long long)b, info[b]);
        const T *Sb = S.data() + b * k, *Ub = U.data() + b * m * ucols, *Vb = V.data() + b * n * vcols;
        double smax = std::max<double>(1, Sc[b * k]);
        for (int64_t i = 0; i < k; i++)
            cr_assert(std::fabs((double)Sb[i] - (double)Sc[b * k + i]) <= tl * smax, "%s: S[%lld][%lld] %g vs %g",
                      where, (long long)b, (long long)i, (double)Sb[i], (double)Sc[b * k + i]);
        if (ucols) cr_assert(orth_err(Ub, m, ucols) <= tl, "%s: U not orthonormal (%g)", where, orth_err(Ub, m, ucols));
        if (vcols) cr_assert(orth_err(Vb, n, vcols) <= tl, "%s: V not orthonormal (%g)", where, orth_err(Vb, n, vcols));
        if (ucols >= k && vcols >= k) {
            double e = 0;
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < n; j++) {
                    double s = 0;
                    for (int64_t c = 0; c < k; c++) s += (double)Ub[i + c * m] * (double)Sb[c] * (double)Vb[j + c * n];
                    e = std::max(e, std::fabs(s - (double)A[b * m * n + i + j * m]));
                }
            cr_assert(e <= tl * smax * 10, "%s: |A − U S Vᵀ| = %g (matrix %lld)", where, e, (long long)b);
        }
        if (vcols == n && rk[b] < n) { /* null space: trailing n − r columns */
            vector<double> a(Vb + rk[b] * n, Vb + n * n), c(Vc.begin() + b * n * n + rk[b] * n, Vc.begin() + (b + 1) * n * n);
            double e = tu_subspace_dist(n, a.data(), n - rk[b], c.data(), n - rk[b]);
            cr_assert(e <= tl * 100, "%s: null space distance %g (matrix %lld, rank %lld)", where, e, (long long)b,
                      (long long)rk[b]);
        }
    }
}
template <class T> static void jw_extract_all()
{
    tu_rng r = tu_seed(14);
    /* the host uses the Jordan–Wielandt path when m or n > 32; small shapes check the indexing too */
    const int64_t shapes[][2] = {{1, 1}, {2, 7}, {7, 2}, {33, 2}, {2, 33}, {36, 33}};
    for (auto &s : shapes) {
        const int64_t m = s[0], n = s[1], k = std::min(m, n);
        const bool big = m + n > 40; /* ~1 s per launch set: fewer variants */
        jw_extract_case<T>(&r, m, n, big ? 2 : 3, 0, n); /* nullspace / project */
        jw_extract_case<T>(&r, m, n, big ? 1 : 2, k, k); /* lstsq, economy svd */
        if (!big) jw_extract_case<T>(&r, m, n, 1, m, n); /* full svd */
        if (!big) jw_extract_case<T>(&r, m, n, 1, 0, 0); /* values only (rank) */
    }
}
/* values only: a NaN eigenvalue (CUDA, input check off) stays NaN in S instead of the clamp's 0; a
   negative one (rounding around σ = 0) is clamped to 0 */
template <class T> static void jw_extract_nan()
{
    const T nan = std::numeric_limits<T>::quiet_NaN();
    const vector<T> Z(18, T(0)), Wv = {-1, 0, nan, /* */ -2, 0, T(-1e-3)};
    vector<T> S(2, T(-7));
    vector<int> info(2, 0);
    emu_launch(2u, SG_BLOCK, 0, k_jw_extract<T>, Z.data(), Wv.data(), (int64_t)2, (int64_t)1, S.data(), (T *)nullptr,
               (int64_t)0, (T *)nullptr, (int64_t)0, info.data());
    cr_assert(std::isnan(S[0]) && S[1] == T(0), "k_jw_extract: S = %g %g (want NaN 0)", (double)S[0], (double)S[1]);
}
Test(emu, k_jw_extract_f32) { jw_extract_all<float>(); jw_extract_nan<float>(); }
Test(emu, k_jw_extract_f64) { jw_extract_all<double>(); jw_extract_nan<double>(); }

/* ---- QR first (svd_qr_run): k_qr, k_qr_apply ----------------------------------------------------------
   Launched as svd_qr_run does: nb blocks × qr_threads(), qr_smem / qr_apply_smem (shared functions of
   linalg_kernels.cuh). The tall d×k matrix Aₜ is A itself (m > n, QR in place) or Aᵀ of a wide k×d A that
   k_qr reads transposed. Checks per matrix: R upper triangular (exact zeros below), tau ∈ {0} ∪ [1, 2],
   ‖Aₜ − Q R‖/‖Aₜ‖ and QᵀQ = I for Q's first k columns (k_qr_apply with C = I, oc = k); then, with U_R Σ V_Rᵀ = R from
   the CPU library (sg_svd on SG_BACKEND_CPU), Σ against the CPU SVD of A, B = Q[U_R; 0] (economy, oc = k)
   and Q[[U_R,0],[0,I]] (full, oc = d: all d columns of Q are involved) orthonormal, the full one's first k
   columns bitwise equal to the economy ones, and ‖Aₜ − B Σ V_Rᵀ‖/‖Aₜ‖ (tall: A = U Σ Vᵀ with U = B, V = V_R; wide: U = V_R, V = B). */
struct QrStats {
    double qr = 0, orthq = 0, s = 0, orthu = 0, rec = 0;
};

/* d×k with the given singular values: U (d×k, economy QR of a Gaussian) · diag(s) · Vᵀ (k×k orthogonal) */
static void tall_with_sv(tu_rng *r, int64_t d, int64_t k, const double *s, double *A)
{
    vector<double> U((size_t)(d * k)), tau((size_t)k), V((size_t)(k * k));
    tu_fill_normal(r, U.data(), d * k);
    cr_assert_eq(LAPACKE_dgeqrf(LAPACK_COL_MAJOR, (int)d, (int)k, U.data(), (int)d, tau.data()), 0);
    cr_assert_eq(LAPACKE_dorgqr(LAPACK_COL_MAJOR, (int)d, (int)k, (int)k, U.data(), (int)d, tau.data()), 0);
    tu_orthogonal(r, k, V.data());
    for (int64_t j = 0; j < k; j++)
        for (int64_t i = 0; i < d; i++) {
            double acc = 0;
            for (int64_t l = 0; l < k; l++) acc += U[i + l * d] * s[l] * V[j + l * k];
            A[i + j * d] = acc;
        }
}

/* max |q_aᵀ q_c − δ_ac| over a ∈ cols (a subset) and every c < t (d×t Q) */
template <class T> static double orth_err_cols(const T *Q, int64_t d, int64_t t, const vector<int64_t> &cols)
{
    double e = 0;
    for (int64_t a : cols)
        for (int64_t c = 0; c < t; c++) {
            double s = 0;
            for (int64_t i = 0; i < d; i++) s += (double)Q[i + a * d] * (double)Q[i + c * d];
            e = std::max(e, std::fabs(s - (a == c ? 1.0 : 0.0)));
        }
    return e;
}

/* nb packed k×k identity matrices: k_qr_apply's C when Q itself is wanted */
template <class T> static vector<T> eye_batch(int64_t k, int64_t nb)
{
    vector<T> I((size_t)(k * k * nb), T(0));
    for (int64_t b = 0; b < nb; b++)
        for (int64_t i = 0; i < k; i++) I[(size_t)(b * k * k + i + i * k)] = T(1);
    return I;
}

/* kind: 0 mixed ranks (sv_mixed), 1 duplicate columns of Aₜ (odd columns = column 0), 2 a zero column of Aₜ
   (k = 1: A = 0), 3 column scales 1e±30 (f32) / 1e±200 (f64): squares that overflow or underflow unscaled. */
template <class T> static void qr_case(tu_rng *r, int64_t m, int64_t n, int64_t nb, int kind, QrStats &st)
{
    const bool tall = m > n;
    const int64_t k = std::min(m, n), d = std::max(m, n);
    const bool free_ok = d * k <= 40; /* FREE: 256 OS-thread wake-ups per barrier, hundreds of barriers here */
    const double big = sizeof(T) == 4 ? 1e30 : 1e200;
    vector<double> at((size_t)(nb * d * k)), sv((size_t)k);
    for (int64_t b = 0; b < nb; b++) {
        double *X = at.data() + b * d * k;
        for (int64_t i = 0; i < k; i++) sv[(size_t)i] = sv_mixed(nb, k, b, i);
        tall_with_sv(r, d, k, sv.data(), X);
        if (kind == 1)
            for (int64_t j = 1; j < k; j += 2) std::copy(X, X + d, X + j * d);
        if (kind == 2)
            for (int64_t i = 0; i < d; i++) X[i + (k / 2) * d] = 0;
        if (kind == 3)
            for (int64_t i = 0; i < d; i++) {
                if (k == 1) X[i] *= b % 2 ? 1 / big : big;
                else X[i] *= big, X[i + (k - 1) * d] /= big;
            }
    }
    vector<T> At = to<T>(at), A = At; /* A: the m×n input (tall: Aₜ; wide: Aₜᵀ, k×d) */
    if (!tall)
        for (int64_t b = 0; b < nb; b++)
            for (int64_t j = 0; j < k; j++)
                for (int64_t i = 0; i < d; i++) A[b * d * k + j + i * k] = At[b * d * k + i + j * d];
    char where[160];
    snprintf(where, sizeof where, "QR path %s m=%lld n=%lld nb=%lld kind %d", sizeof(T) == 4 ? "f32" : "f64",
             (long long)m, (long long)n, (long long)nb, kind);

    vector<T> Wq, tau, R;
    all_modes("k_qr", [&] {
        tau.assign((size_t)(k * nb), T(-7));
        R.assign((size_t)(k * k * nb), T(-7));
        if (tall) Wq = A; /* in place, as svd_qr_run */
        else Wq.assign((size_t)(d * k * nb), T(-7));
        emu_launch((unsigned)nb, qr_threads(), qr_smem<T>(), k_qr<T>, tall ? Wq.data() : A.data(), tall ? 0 : 1,
                   Wq.data(), tau.data(), R.data(), d, k);
        vector<unsigned char> o = bytes2(Wq, tau), rb = bytes(R);
        o.insert(o.end(), rb.begin(), rb.end());
        return o;
    }, free_ok);
    auto apply = [&](const vector<T> &C, int64_t oc, const char *what) {
        vector<T> O;
        all_modes(what, [&] {
            O.assign((size_t)(d * oc * nb), T(-7));
            emu_launch((unsigned)nb, qr_threads(), qr_apply_smem<T>(), k_qr_apply<T>, Wq.data(), tau.data(), C.data(),
                       O.data(), d, k, oc);
            return bytes(O);
        }, free_ok);
        return O;
    };
    vector<T> Q = apply(eye_batch<T>(k, nb), k, "k_qr_apply(Q)"); /* Q's first k columns; all d: via the full U below */
    vector<T> SR, UR, VR, Sc, Uc, Vc;
    cpu_svd(R, nb, k, k, false, SR, UR, VR);
    cpu_svd(A, nb, m, n, false, Sc, Uc, Vc);
    vector<T> Ue = apply(UR, k, "k_qr_apply(economy)"), Uf = apply(UR, d, "k_qr_apply(full)");

    const double tl = sizeof(T) == 4 ? 1e-5 : 1e-12;
    vector<int64_t> sub; /* columns whose orthogonality against all d is checked (all when d is modest) */
    for (int64_t c = 0; c < d; c++)
        if (d <= 300 || c < k + 2 || c == d / 2 || c == d - 1) sub.push_back(c);
    for (int64_t b = 0; b < nb; b++) {
        const T *Ab = At.data() + b * d * k, *Rb = R.data() + b * k * k, *Qb = Q.data() + b * d * k;
        double sc = 0, na = 0; /* norms scaled by max|Aₜ| (kind 3 squares overflow in f64) */
        for (int64_t e = 0; e < d * k; e++) sc = std::max(sc, std::fabs((double)Ab[e]));
        sc = sc > 0 ? sc : 1;
        for (int64_t e = 0; e < d * k; e++) na += ((double)Ab[e] / sc) * ((double)Ab[e] / sc);
        na = std::max(std::sqrt(na), 1e-300);
        for (int64_t j = 0; j < k; j++) {
            const double t = (double)tau[b * k + j];
            cr_assert(t == 0 || (t >= 1 - 1e-6 && t <= 2 + 1e-6), "%s: tau[%lld] = %g", where, (long long)j, t);
            for (int64_t i = j + 1; i < k; i++) cr_assert(Rb[i + j * k] == T(0), "%s: R not upper triangular", where);
        }
        double eq = 0, er = 0; /* Frobenius ‖Aₜ − Q R‖, ‖Aₜ − B Σ V_Rᵀ‖ */
        const T *Ub = Ue.data() + b * d * k, *Sb = SR.data() + b * k, *Vb = VR.data() + b * k * k;
        for (int64_t j = 0; j < k; j++)
            for (int64_t i = 0; i < d; i++) {
                double s = 0, u = 0;
                for (int64_t l = 0; l <= j; l++) s += (double)Qb[i + l * d] * (double)Rb[l + j * k];
                for (int64_t l = 0; l < k; l++) u += (double)Ub[i + l * d] * (double)Sb[l] * (double)Vb[j + l * k];
                const double dq = (s - (double)Ab[i + j * d]) / sc, du = (u - (double)Ab[i + j * d]) / sc;
                eq += dq * dq;
                er += du * du;
            }
        eq = std::sqrt(eq) / na;
        er = std::sqrt(er) / na;
        /* Q's formed columns; the full Q[[U_R,0],[0,I]] is orthogonal iff Q is (U_R is, to CPU rounding) */
        const double oq = orth_err(Qb, d, k), oe = orth_err(Ub, d, k),
                     of = orth_err_cols(Uf.data() + b * d * d, d, d, sub);
        double es = 0, smax = std::max<double>((double)Sc[b * k], 1e-300);
        for (int64_t i = 0; i < k; i++) es = std::max(es, std::fabs((double)Sb[i] - (double)Sc[b * k + i]) / smax);
        cr_assert(std::equal(Ub, Ub + d * k, Uf.data() + b * d * d), "%s: full U's first k columns differ from economy",
                  where);
        cr_assert(eq <= tl, "%s: |A - QR|/|A| = %g (matrix %lld)", where, eq, (long long)b);
        cr_assert(oq <= tl, "%s: |QᵀQ - I| = %g (matrix %lld)", where, oq, (long long)b);
        cr_assert(es <= tl * 10, "%s: σ vs CPU SVD of A: %g relative to σmax (matrix %lld)", where, es, (long long)b);
        cr_assert(oe <= tl && of <= tl, "%s: U orthonormality economy %g full %g (matrix %lld)", where, oe, of,
                  (long long)b);
        cr_assert(er <= tl * 10, "%s: |A - U S Vᵀ|/|A| = %g (matrix %lld)", where, er, (long long)b);
        st.qr = std::max(st.qr, eq);
        st.orthq = std::max(st.orthq, oq);
        st.s = std::max(st.s, es);
        st.orthu = std::max({st.orthu, oe, of});
        st.rec = std::max(st.rec, er);
    }
}
template <class T> static void qr_all()
{
    tu_rng r = tu_seed(19);
    QrStats st;
    /* m, n, nb, kind, heavy (skipped in the ASan stage: the same code paths run in the lighter cases) */
    const int64_t shapes[][5] = {{33, 1, 3, 0, 0},   {40, 7, 3, 0, 0},  {100, 32, 1, 0, 1}, {257, 5, 2, 0, 1},
                                 {1000, 3, 2, 0, 1}, {7, 40, 3, 0, 0},  {3, 100, 2, 0, 0},  {31, 120, 1, 0, 1},
                                 {40, 7, 2, 1, 0},   {100, 32, 1, 1, 0}, {40, 7, 2, 2, 0},  {33, 1, 2, 2, 0},
                                 {7, 40, 2, 2, 0},   {257, 5, 2, 3, 0}, {33, 1, 2, 3, 0},   {3, 100, 2, 1, 0}};
#if defined(__SANITIZE_ADDRESS__)
    const bool asan = true;
#else
    const bool asan = false;
#endif
    for (auto &s : shapes) {
        if (asan && s[4]) continue;
        auto t0 = std::chrono::steady_clock::now();
        qr_case<T>(&r, s[0], s[1], s[2], (int)s[3], st);
        if (getenv("SG_EMU_TIME"))
            fprintf(stderr, "%lldx%lld kind %lld: %.2fs\n", (long long)s[0], (long long)s[1], (long long)s[3],
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    cap_sms = SMS;
    fprintf(stderr, "QR path %s max errors: |A-QR|/|A| %.2e, |Q'Q-I| %.2e, sigma %.2e, |U'U-I| %.2e, |A-USV'|/|A| %.2e\n",
            sizeof(T) == 4 ? "f32" : "f64", st.qr, st.orthq, st.s, st.orthu, st.rec);
}
/* A NaN or Inf in column 2 of matrix 0 (CUDA, input check off): tau and R_22 NaN, so R from column 2 on and
   every column of Q carry NaN instead of the column being skipped as exhausted; the reflectors before it
   are finite, and matrix 1 (finite) gets the bytes it gets alone. */
template <class T> static void qr_nonfinite(T bad)
{
    const int64_t d = 40, k = 5;
    tu_rng r = tu_seed(23);
    vector<double> a((size_t)(2 * d * k));
    tu_fill_normal(&r, a.data(), 2 * d * k);
    vector<T> A = to<T>(a);
    A[(size_t)(7 + 2 * d)] = bad;
    auto run = [&](const T *in, int64_t nb, vector<T> &Wq, vector<T> &tau, vector<T> &R, vector<T> &Q) {
        Wq.assign(in, in + d * k * nb), tau.assign((size_t)(k * nb), T(-7)), R.assign((size_t)(k * k * nb), T(-7));
        emu_launch((unsigned)nb, qr_threads(), qr_smem<T>(), k_qr<T>, Wq.data(), 0, Wq.data(), tau.data(), R.data(), d, k);
        const vector<T> I = eye_batch<T>(k, nb);
        Q.assign((size_t)(d * k * nb), T(-7));
        emu_launch((unsigned)nb, qr_threads(), qr_apply_smem<T>(), k_qr_apply<T>, Wq.data(), tau.data(), I.data(),
                   Q.data(), d, k, k);
    };
    vector<T> Wq, tau, R, Q, Wq1, tau1, R1, Q1;
    run(A.data(), 2, Wq, tau, R, Q);
    run(A.data() + d * k, 1, Wq1, tau1, R1, Q1);
    const char *what = std::isnan((double)bad) ? "NaN" : "Inf";
    cr_assert(std::isfinite((double)tau[0]) && std::isfinite((double)tau[1]) && std::isnan((double)tau[2]),
              "k_qr, %s in column 2: tau %g %g %g", what, (double)tau[0], (double)tau[1], (double)tau[2]);
    for (int64_t j = 2; j < k; j++)
        cr_assert(std::isnan((double)R[(size_t)(j + j * k)]), "k_qr, %s in column 2: R[%lld][%lld] = %g", what,
                  (long long)j, (long long)j, (double)R[(size_t)(j + j * k)]);
    for (int64_t c = 0; c < k; c++)
        cr_assert(std::isnan((double)Q[(size_t)(c * d)]), "k_qr_apply, %s in column 2: Q[0][%lld] = %g", what,
                  (long long)c, (double)Q[(size_t)(c * d)]);
    cr_assert(std::equal(R1.begin(), R1.end(), R.begin() + k * k) && std::equal(Q1.begin(), Q1.end(), Q.begin() + d * k),
              "k_qr, %s in matrix 0: matrix 1 differs from its run alone", what);
}
Test(emu, k_qr_f32) { qr_all<float>(); qr_nonfinite<float>(NAN); qr_nonfinite<float>(-INFINITY); }
Test(emu, k_qr_f64) { qr_all<double>(); qr_nonfinite<double>(NAN); qr_nonfinite<double>(INFINITY); }

/* k_rank (spectral: ceil(nb/128) blocks × 128 threads) against sg_rank, nullity = n − rank. */
template <class T> static void rank_all()
{
    tu_rng r = tu_seed(15);
    for (int64_t n : {1, 7, 33})
        for (int64_t m : {n, n + 2})
            for (int64_t nb : {1, 5, 130}) {
                const int64_t k = std::min(m, n);
                SvdCase<T> c = svd_case<T>(&r, nb, m, n, false);
                const vector<T> &A = c.A, &S = c.S;
                vector<int64_t> want = c.rk, rank, nullity;
                all_modes("k_rank", [&] {
                    rank.assign((size_t)nb, -1);
                    nullity.assign((size_t)nb, -1);
                    emu_launch((unsigned)((nb + 127) / 128), 128, 0, k_rank<T>, S.data(), k, nb, sg_tols{0.0, -1.0, nullptr, nullptr},
                               (long long)std::max(m, n), eps<T>(), n, rank.data(), nullity.data());
                    return bytes2(rank, nullity);
                });
                for (int64_t b = 0; b < nb; b++) {
                    cr_assert_eq(rank[b], want[b], "k_rank %lldx%lld nb=%lld b=%lld", (long long)m, (long long)n,
                                 (long long)nb, (long long)b);
                    cr_assert_eq(nullity[b], n - want[b]);
                }
                /* rank only (nullity NULL), with an absolute tolerance */
                emu_launch((unsigned)((nb + 127) / 128), 128, 0, k_rank<T>, S.data(), k, nb, sg_tols{1.5, -1.0, nullptr, nullptr},
                           (long long)std::max(m, n), eps<T>(), n, rank.data(), (int64_t *)nullptr);
                vector<int64_t> want2((size_t)nb);
                {
                    vector<T> a = A;
                    sg_mat Am = mat(a, nb, m, n);
                    cr_assert_eq(sg_rank(cpu, &Am, 1.5, -1, want2.data()), SG_OK);
                }
                cr_assert(rank == want2, "k_rank atol=1.5 %lldx%lld", (long long)m, (long long)n);
                /* per-matrix pairs (sg_rank_tols): matrix b's own cutoff, against sg_rank on it alone */
                vector<double> at((size_t)nb), rt((size_t)nb);
                for (int64_t b = 0; b < nb; b++) at[b] = b % 3 == 0 ? 0.0 : 0.5 * (double)(b % 5), rt[b] = b % 2 ? 0.3 : -1.0;
                emu_launch((unsigned)((nb + 127) / 128), 128, 0, k_rank<T>, S.data(), k, nb,
                           sg_tols{0.0, -1.0, at.data(), rt.data()}, (long long)std::max(m, n), eps<T>(), n,
                           rank.data(), nullity.data());
                for (int64_t b = 0; b < nb; b++) {
                    vector<T> a(A.begin() + b * m * n, A.begin() + (b + 1) * m * n);
                    sg_mat Am = mat(a, 1, m, n);
                    int64_t one = -1;
                    cr_assert_eq(sg_rank(cpu, &Am, at[b], rt[b], &one), SG_OK);
                    cr_assert(rank[b] == one && nullity[b] == n - one, "k_rank per-matrix tols %lldx%lld b=%lld: %lld, want %lld",
                              (long long)m, (long long)n, (long long)b, (long long)rank[b], (long long)one);
                }
            }
    /* NaN σ (CUDA, input check off): counted (sg_sv_counts), so it reaches the projection or solution
       instead of passing as rank 0. σmax NaN: tol NaN, every σ counts; a NaN below σmax counts too. */
    const T nan = std::numeric_limits<T>::quiet_NaN();
    const vector<T> S = {nan, 2, 1e-30f, 0, /* */ 3, nan, 0, 0, /* */ 3, 2, 1, 0};
    vector<int64_t> rank(3, -1);
    emu_launch(1u, 128, 0, k_rank<T>, S.data(), (int64_t)4, (int64_t)3, sg_tols{0.0, -1.0, nullptr, nullptr}, 4LL, eps<T>(), (int64_t)4,
               rank.data(), (int64_t *)nullptr);
    cr_assert(rank == (vector<int64_t>{4, 2, 3}), "k_rank with NaN σ: %lld %lld %lld", (long long)rank[0],
              (long long)rank[1], (long long)rank[2]);
}
Test(emu, k_rank_f32) { rank_all<float>(); }
Test(emu, k_rank_f64) { rank_all<double>(); }

/* k_null_gather (c_null: grid_for(n²·nb) × SG_BLOCK) against a direct loop and sg_nullspace. */
template <class T> static void null_gather_all()
{
    tu_rng r = tu_seed(16);
    for (int64_t n : SIZES)
        for (int64_t nb : {1, 4}) {
            const int64_t m = n % 2 ? n : n / 2 + 1;
            SvdCase<T> c = svd_case<T>(&r, nb, m, n, true);
            const vector<T> &A = c.A, &V = c.V;
            const vector<int64_t> &rk = c.rk;
            vector<T> Nout, want((size_t)(n * n * nb), T(0));
            for (int64_t b = 0; b < nb; b++)
                for (int64_t j = 0; j < n - rk[b]; j++)
                    for (int64_t i = 0; i < n; i++) want[b * n * n + i + j * n] = V[b * n * n + i + (rk[b] + j) * n];
            all_modes("k_null_gather", [&] {
                Nout.assign((size_t)(n * n * nb), T(-7));
                emu_launch(grid_for(n * n * nb), SG_BLOCK, 0, k_null_gather<T>, V.data(), rk.data(), Nout.data(), n, nb);
                return bytes(Nout);
            });
            cr_assert(Nout == want, "k_null_gather n=%lld nb=%lld", (long long)n, (long long)nb);
            /* the library's nullspace spans the same subspace */
            vector<T> a = A, Nc((size_t)(n * n * nb));
            vector<int64_t> nul((size_t)nb);
            sg_mat Am = mat(a, nb, m, n), Nm = mat(Nc, nb, n, n);
            cr_assert_eq(sg_nullspace(cpu, &Am, 0, -1, &Nm, nul.data()), SG_OK);
            for (int64_t b = 0; b < nb; b++) {
                cr_assert_eq(nul[b], n - rk[b]);
                vector<double> x = dbl(vector<T>(Nout.begin() + b * n * n, Nout.begin() + (b + 1) * n * n));
                vector<double> y = dbl(vector<T>(Nc.begin() + b * n * n, Nc.begin() + (b + 1) * n * n));
                double e = tu_subspace_dist(n, x.data(), nul[b], y.data(), nul[b]);
                cr_assert(e <= tol<T>() * 10, "k_null_gather vs sg_nullspace n=%lld: %g", (long long)n, e);
            }
        }
}
Test(emu, k_null_gather_f32) { null_gather_all<float>(); }
Test(emu, k_null_gather_f64) { null_gather_all<double>(); }

/* Matrix nb−1 of X at 0.9·max(T): with the check (chk) info marks exactly the matrices whose Y came out
   non-finite (SG_PROJ_OVER), without it nothing; counts the overflows seen (the caller's sweep needs one). */
static int proj_overflows;
template <class T, class F>
static void proj_overflow(const char *what, const vector<T> &X, int64_t n, int64_t kx, int64_t nb, F launch)
{
    vector<T> Xb = X, Y((size_t)(n * kx * nb));
    for (int64_t e = (nb - 1) * n * kx; e < nb * n * kx; e++) Xb[(size_t)e] = T(0.9) * std::numeric_limits<T>::max();
    for (int chk : {0, 1}) {
        vector<int> info((size_t)nb, 0);
        launch(Xb.data(), Y.data(), chk, info.data());
        for (int64_t b = 0; b < nb; b++) {
            bool bad = false;
            for (int64_t e = b * n * kx; e < (b + 1) * n * kx; e++) bad |= !std::isfinite((double)Y[(size_t)e]);
            proj_overflows += bad && chk;
            cr_assert_eq(info[(size_t)b], chk && bad ? SG_PROJ_OVER : 0, "%s n=%lld kx=%lld matrix %lld chk %d: info %d, Y %s",
                         what, (long long)n, (long long)kx, (long long)b, chk, info[(size_t)b], bad ? "not finite" : "finite");
        }
    }
}

/* k_project (c_project: nb blocks × SG_BLOCK, smem project_smem) on V (full, n×n) and rank from the CPU
   SVD, against sg_project (both projectors; once in place, Y = X). */
template <class T> static void project_all()
{
    tu_rng r = tu_seed(17);
    proj_overflows = 0;
    for (int64_t n : SIZES)
        for (int64_t kx : {1, 3}) {
            const int64_t nb = n >= 64 ? 2 : 4, m = n % 2 ? n + 1 : std::max<int64_t>(1, n / 2);
            SvdCase<T> c = svd_case<T>(&r, nb, m, n, true);
            const vector<T> &A = c.A, &V = c.V;
            const vector<int64_t> &rk = c.rk;
            vector<double> x0((size_t)(n * kx * nb));
            tu_fill_normal(&r, x0.data(), (int64_t)x0.size());
            vector<T> X = to<T>(x0);
            const size_t smem = project_smem<T>(n);
            for (int row : {0, 1}) {
                vector<T> Y, want((size_t)(n * kx * nb)), a = A, x = X;
                sg_mat Am = mat(a, nb, m, n), Xm = mat(x, nb, n, kx), Ym = mat(want, nb, n, kx);
                cr_assert_eq(sg_project(cpu, &Am, &Xm, row ? SG_PROJ_ROW : SG_PROJ_NULL, 0, -1, &Ym), SG_OK);
                vector<int> info((size_t)nb);
                all_modes("k_project", [&] {
                    Y.assign((size_t)(n * kx * nb), T(-7));
                    info.assign((size_t)nb, 0);
                    emu_launch((unsigned)nb, SG_BLOCK, smem, k_project<T>, V.data(), rk.data(), X.data(), Y.data(), n,
                               kx, row, 1, info.data());
                    return bytes(Y);
                });
                cr_assert(std::all_of(info.begin(), info.end(), [](int v) { return v == 0; }), "k_project flagged a finite Y");
                proj_overflow<T>("k_project", X, n, kx, nb, [&](const T *xin, T *yout, int chk, int *inf) {
                    emu_launch((unsigned)nb, SG_BLOCK, smem, k_project<T>, V.data(), rk.data(), xin, yout, n, kx, row,
                               chk, inf);
                });
                double e = rel_err(dbl(Y), dbl(want));
                cr_assert(e <= tol<T>(), "k_project n=%lld kx=%lld row=%d: rel err %g", (long long)n, (long long)kx,
                          row, e);
                if (kx == 3) { /* in place */
                    vector<T> Z = X;
                    emu_launch((unsigned)nb, SG_BLOCK, smem, k_project<T>, V.data(), rk.data(), Z.data(), Z.data(), n,
                               kx, row, 1, info.data());
                    cr_assert(Z == Y, "k_project in place n=%lld row=%d", (long long)n, row);
                }
            }
        }
    cr_assert_gt(proj_overflows, 0, "no overflowing projection in the sweep: SG_PROJ_OVER untested");
}
Test(emu, k_project_f32) { project_all<float>(); }
Test(emu, k_project_f64) { project_all<double>(); }

/* sg_project_basis's kernels with the launch c_project_basis makes (project_basis_plan with H100/H200's 227 KB
   opt-in limit: tile kernel with g matrices per block or one matrix in column chunks, else one block per
   matrix), against the CPU backend. The shapes cover, per dtype, g > 1 with a partial last tile, chunked
   columns with a short last chunk, and the fallback; q < n, zero basis columns, and Y = X in place. */
template <class T> static void project_basis_all()
{
    tu_rng r = tu_seed(23);
    proj_overflows = 0;
    const int64_t cases[][4] = {{1, 1, 1, 5},    {3, 2, 1, 7},     {8, 4, 8, 50},     {16, 16, 16, 10},
                                {64, 32, 32, 3}, {96, 40, 3, 2},   {33, 33, 2, 9},    {128, 64, 41, 2},
                                {160, 100, 40, 2}, {200, 130, 2, 2}, {5, 3, 7, 41},   {12, 7, 5, 30}}; /* n, q, kx, nb */
    int multi = 0, chunked = 0, fallback = 0;
    for (const auto &cs : cases) {
        const int64_t n = cs[0], q = cs[1], kx = cs[2], nb = cs[3];
        vector<double> q0((size_t)(n * q * nb)), o((size_t)(n * n)), x0((size_t)(n * kx * nb));
        for (int64_t b = 0; b < nb; b++) {
            tu_orthogonal(&r, n, o.data());
            for (int64_t e = 0; e < n * q; e++)
                q0[(size_t)(b * n * q + e)] = q == n && e >= n * (n / 2) ? 0.0 : o[(size_t)e]; /* zero tail (nullspace-like) */
        }
        tu_fill_normal(&r, x0.data(), (int64_t)x0.size());
        vector<T> Q = to<T>(q0), X = to<T>(x0);
        int64_t g, kc;
        size_t smem;
        const int tile = project_basis_plan<T>(n, q, kx, emu::MAX_DYN_SMEM, &g, &kc, &smem);
        multi |= tile && g > 1 && (nb % g) != 0;
        chunked |= tile && kc < kx && (kx % kc) != 0;
        fallback |= !tile;
        const unsigned long long *skip = nullptr;
        int nskip = 0;
        for (int sub : {0, 1}) {
            vector<T> Y, want((size_t)(n * kx * nb)), qq = Q, x = X;
            sg_mat Qm = mat(qq, nb, n, q), Xm = mat(x, nb, n, kx), Wm = mat(want, nb, n, kx);
            cr_assert_eq(sg_project_basis(cpu, &Qm, &Xm, sub, &Wm), SG_OK, "%s", sg_last_error(cpu));
            vector<int> info((size_t)nb, 0);
            auto launch_chk = [&](const T *xin, T *yout, int chk, int *inf) {
                if (tile)
                    emu_launch((unsigned)((nb + g - 1) / g), SG_BLOCK, smem, k_project_basis_tile<T>, Q.data(), xin,
                               yout, n, q, kx, nb, g, kc, sub, skip, nskip, chk, inf);
                else
                    emu_launch((unsigned)nb, SG_BLOCK, smem, k_project_basis_one<T>, Q.data(), xin, yout, n, q, kx, sub,
                               skip, nskip, chk, inf);
            };
            auto launch = [&](const T *xin, T *yout) { launch_chk(xin, yout, 1, info.data()); };
            all_modes(tile ? "k_project_basis_tile" : "k_project_basis_one", [&] {
                Y.assign((size_t)(n * kx * nb), T(-7));
                launch(X.data(), Y.data());
                return bytes(Y);
            });
            double e = rel_err(dbl(Y), dbl(want));
            cr_assert(e <= tol<T>(), "project_basis (%s g=%lld kc=%lld) n=%lld q=%lld kx=%lld sub=%d: rel err %g",
                      tile ? "tile" : "one", (long long)g, (long long)kc, (long long)n, (long long)q, (long long)kx,
                      sub, e);
            vector<T> Z = X; /* in place */
            launch(Z.data(), Z.data());
            cr_assert(Z == Y, "project_basis in place n=%lld sub=%d", (long long)n, sub);
            const unsigned long long bad[2] = {~0ull, 3}; /* a failed scan flag: Y (user memory) untouched */
            skip = bad, nskip = 2;
            vector<T> U((size_t)(n * kx * nb), T(-7));
            launch(X.data(), U.data());
            cr_assert(std::all_of(U.begin(), U.end(), [](T v) { return v == T(-7); }), "project_basis wrote Y behind a failed scan n=%lld", (long long)n);
            skip = bad, nskip = 1; /* only the clean flag */
            launch(X.data(), U.data());
            cr_assert(U == Y, "project_basis behind a clean scan n=%lld sub=%d", (long long)n, sub);
            skip = nullptr, nskip = 0;
            cr_assert(std::all_of(info.begin(), info.end(), [](int v) { return v == 0; }), "project_basis flagged a finite Y");
            proj_overflow<T>(tile ? "k_project_basis_tile" : "k_project_basis_one", X, n, kx, nb, launch_chk);
        }
    }
    cr_assert_gt(proj_overflows, 0, "no overflowing projection in the sweep: SG_PROJ_OVER untested");
    cr_assert(multi && chunked && fallback, "every plan must be exercised: g > 1 with a partial tile %d, chunked "
              "columns with a short chunk %d, one block per matrix %d", multi, chunked, fallback);
}
Test(emu, k_project_basis_f32) { project_basis_all<float>(); }
Test(emu, k_project_basis_f64) { project_basis_all<double>(); }

/* k_lstsq (c_lstsq: nb blocks × SG_BLOCK, smem lstsq_smem(k)) on the economy CPU SVD, against sg_lstsq;
   in place (X = B) when m == n. Then matrix 1 with σ1 tiny and B huge: X overflows, info SG_LSTSQ_OVER for
   it alone with chk, where info was 0; none without chk. */
template <class T> static void lstsq_all()
{
    tu_rng r = tu_seed(18);
    for (int64_t n : SIZES)
        for (int shape = 0; shape < 3; shape++) {
            const int64_t m = shape == 0 ? n : shape == 1 ? n + 3 : std::max<int64_t>(1, n / 2), k = std::min(m, n);
            const int64_t nb = n >= 64 ? 2 : 3, kb = shape == 1 ? 1 : 2;
            SvdCase<T> c = svd_case<T>(&r, nb, m, n, false);
            const vector<T> &A = c.A, &S = c.S, &U = c.U, &V = c.V;
            const vector<int64_t> &rk = c.rk;
            vector<double> b0((size_t)(m * kb * nb));
            tu_fill_normal(&r, b0.data(), (int64_t)b0.size());
            vector<T> B = to<T>(b0);
            vector<T> X, want((size_t)(n * kb * nb)), a = A, bb = B;
            sg_mat Am = mat(a, nb, m, n), Bm = mat(bb, nb, m, kb), Xm = mat(want, nb, n, kb);
            cr_assert_eq(sg_lstsq(cpu, &Am, &Bm, 0, -1, &Xm, nullptr), SG_OK, "%s", sg_last_error(cpu));
            const size_t smem = lstsq_smem<T>(k);
            vector<int> info;
            all_modes("k_lstsq", [&] {
                X.assign((size_t)(n * kb * nb), T(-7));
                info.assign((size_t)nb, 0);
                emu_launch((unsigned)nb, SG_BLOCK, smem, k_lstsq<T>, U.data(), S.data(), V.data(), rk.data(), B.data(),
                           X.data(), m, n, k, kb, 1, info.data());
                return bytes2(X, info);
            });
            double e = rel_err(dbl(X), dbl(want));
            cr_assert(e <= tol<T>() * 10, "k_lstsq m=%lld n=%lld kb=%lld: rel err %g", (long long)m, (long long)n,
                      (long long)kb, e);
            cr_assert(info == vector<int>((size_t)nb, 0), "k_lstsq m=%lld n=%lld: info set", (long long)m, (long long)n);
            if (m == n) {
                vector<T> Z = B;
                emu_launch((unsigned)nb, SG_BLOCK, smem, k_lstsq<T>, U.data(), S.data(), V.data(), rk.data(), Z.data(),
                           Z.data(), m, n, k, kb, 1, info.data());
                cr_assert(Z == X, "k_lstsq in place n=%lld", (long long)n);
            }
            if (rk[1] == 0) continue;
            vector<T> S1 = S, B1 = B;
            const T huge = sizeof(T) == 4 ? T(1e30) : T(1e300);
            S1[(size_t)k] = 1 / huge;
            for (int64_t i = 0; i < m * kb; i++) B1[(size_t)(m * kb + i)] *= huge;
            for (int chk = 0; chk < 2; chk++)
                for (int info0 : {0, 3}) {
                    info.assign((size_t)nb, info0);
                    emu_launch((unsigned)nb, SG_BLOCK, smem, k_lstsq<T>, U.data(), S1.data(), V.data(), rk.data(),
                               B1.data(), X.data(), m, n, k, kb, chk, info.data());
                    for (int64_t b = 0; b < nb; b++)
                        cr_assert_eq(info[(size_t)b], b == 1 && chk && info0 == 0 ? SG_LSTSQ_OVER : info0,
                                     "k_lstsq overflow m=%lld n=%lld chk %d: matrix %lld info %d", (long long)m,
                                     (long long)n, chk, (long long)b, info[(size_t)b]);
                }
        }
}
Test(emu, k_lstsq_f32) { lstsq_all<float>(); }
Test(emu, k_lstsq_f64) { lstsq_all<double>(); }

/* ======================================================================================================
   grad_kernels.cuh
   ====================================================================================================== */
using namespace sggrad;


/* launch_fused / launch_fused_tm of cuda/grad.cu: TM by n, fused_threads, fused_smem, persistent grid. */
template <class T, int KIND> static void launch_fused_emu(const FusedArgs<T> &a)
{
    if (a.n <= 16)
        emu_launch(fused_grid(a.batch), fused_threads<1>(a.n), fused_smem<T, 1>(a.n), fused_backward<T, 1, KIND>, a);
    else if (a.n <= 32)
        emu_launch(fused_grid(a.batch), fused_threads<2>(a.n), fused_smem<T, 2>(a.n), fused_backward<T, 2, KIND>, a);
    else
        emu_launch(fused_grid(a.batch), fused_threads<4>(a.n), fused_smem<T, 4>(a.n), fused_backward<T, 4, KIND>, a);
}

/* fused_backward<T, TM, FUSED_EIGH> against sg_eigh_backward (CPU) for every degeneracy mode. */
template <class T> static void fused_eigh_case(tu_rng *r, int64_t n, int64_t nb, int kind, int mode, int which)
{
    vector<T> W, V;
    eig_inputs<T>(r, n, nb, kind, W, V);
    vector<double> g0((size_t)(n * n * nb)), gw0((size_t)(n * nb));
    tu_fill_normal(r, g0.data(), (int64_t)g0.size());
    tu_fill_normal(r, gw0.data(), (int64_t)gw0.size());
    vector<T> gV = to<T>(g0), gW = to<T>(gw0);
    const bool hasW = which != 1, hasV = which != 2; /* 0 both, 1 gV only, 2 gW only */
    /* CPU reference */
    vector<T> want((size_t)(n * n * nb));
    sg_mat Wm = mat(W, nb, n, 1), Vm = mat(V, nb, n, n), gWm = mat(gW, nb, n, 1), gVm = mat(gV, nb, n, n),
           gAm = mat(want, nb, n, n);
    const sg_status st = sg_eigh_backward(cpu, &Wm, &Vm, hasW ? &gWm : nullptr, hasV ? &gVm : nullptr,
                                          (sg_degen)mode, 0.0, &gAm);
    cr_assert(st == SG_OK || st == SG_ERR_DEGENERATE, "CPU reference n=%lld spectrum %d mode %d grads %d: %s: %s",
              (long long)n, kind, mode, which, sg_status_string(st), sg_last_error(cpu));
    /* device layout: V, gV, gA with padding (ld n+1, stride + 3) */
    const int64_t ld = n + 1, sst = ld * n + 3;
    vector<T> Vp = pad(V, nb, n, n, ld, sst, T(-9)), gVp = pad(gV, nb, n, n, ld, sst, T(-9)), gAp;
    vector<int> flags;
    FusedArgs<T> a;
    a.W = W.data(); a.sW = n;
    a.V = Vp.data(); a.ldV = ld; a.sV = sst;
    a.gW = hasW ? gW.data() : nullptr; a.sgW = hasW ? n : 0;
    a.G = hasV ? gVp.data() : nullptr; a.ldG = hasV ? ld : 0; a.sG = hasV ? sst : 0;
    a.ldA = ld; a.sA = sst;
    a.n = (int)n; a.batch = nb;
    a.mode = mode; a.param = (T)sg_degen_param(mode, 0.0, sizeof(T) == 4);
    a.fkind = 0; a.fp = 0; a.rel = SG_DIVDIFF_REL;
    all_modes("fused_backward<eigh>", [&] {
        gAp.assign((size_t)(sst * nb), T(-9));
        flags.assign((size_t)nb, -1);
        a.gA = gAp.data();
        a.flags = flags.data();
        launch_fused_emu<T, FUSED_EIGH>(a);
        return bytes2(gAp, flags);
    });
    char where[160];
    snprintf(where, sizeof where, "fused_backward<eigh> n=%lld nb=%lld spectrum %d mode %d grads %d", (long long)n,
             (long long)nb, kind, mode, which);
    for (int64_t b = 0; b < nb; b++) /* padding untouched */
        for (int64_t e = 0; e < sst; e++)
            if (e % ld >= n || e >= ld * n) cr_assert(gAp[b * sst + e] == T(-9), "%s: padding written", where);
    vector<T> got = unpad(gAp, nb, n, n, ld, sst);
    int anyflag = 0;
    for (int f : flags) {
        cr_assert(f == 0 || f == FLAG_TIE || f == FLAG_NONFINITE || f == (FLAG_TIE | FLAG_NONFINITE), "%s: flag %d", where, f);
        anyflag |= f;
    }
    if (st == SG_ERR_DEGENERATE) {
        cr_assert(anyflag != 0, "%s: CPU says degenerate, kernel flags nothing", where);
        return;
    }
    cr_assert_eq(anyflag, 0, "%s: flags %d where the CPU reference is fine", where, anyflag);
    const double e = rel_err(dbl(got), dbl(want));
    cr_assert(e <= tol<T>() * (sizeof(T) == 4 ? 10 : 1), "%s: rel err %g", where, e);
}

static const int64_t FUSED_SIZES[] = {1, 2, 7, 16, 17, 31, 32, 33, 64};

template <class T> static void fused_eigh_all()
{
    tu_rng r = tu_seed(21);
    for (int64_t n : FUSED_SIZES) {
        const int64_t nb = n >= 33 ? 2 : 3;
        fused_eigh_case<T>(&r, n, nb, 0, SG_DM_EXACT, 0);
        fused_eigh_case<T>(&r, n, nb, 1, SG_DM_EXACT, 0); /* ties: DEGENERATE / FLAG_TIE (n > 1) */
        fused_eigh_case<T>(&r, n, nb, 1, SG_DM_MASK, 0);
        fused_eigh_case<T>(&r, n, nb, 1, SG_DM_LORENTZ, 1);
        fused_eigh_case<T>(&r, n, nb, 2, SG_DM_TAYLOR, 0);
        fused_eigh_case<T>(&r, n, nb, 1, SG_DM_EXACT, 2); /* gW only: no gaps involved, ties harmless */
    }
    cap_sms = 1; /* persistent grid: 2 blocks loop over 5 matrices */
    fused_eigh_case<T>(&r, 7, 5, 0, SG_DM_EXACT, 0);
    fused_eigh_case<T>(&r, 33, 5, 1, SG_DM_MASK, 0);
    cap_sms = SMS;
}
Test(emu, fused_backward_eigh_f32) { fused_eigh_all<float>(); }
Test(emu, fused_backward_eigh_f64) { fused_eigh_all<double>(); }

/* fused_backward<T, TM, FUSED_MATFUNC> against sg_matfunc_backward (CPU). */
template <class T> static void fused_matfunc_case(tu_rng *r, int64_t n, int64_t nb, int kind, sg_fn_kind fk, double p)
{
    vector<T> W, V;
    eig_inputs<T>(r, n, nb, kind, W, V);
    vector<double> g0((size_t)(n * n * nb));
    tu_fill_normal(r, g0.data(), (int64_t)g0.size());
    vector<T> gF = to<T>(g0), want((size_t)(n * n * nb));
    sg_fn fn = {fk, p, nullptr, nullptr, nullptr};
    sg_mat Wm = mat(W, nb, n, 1), Vm = mat(V, nb, n, n), gFm = mat(gF, nb, n, n), gAm = mat(want, nb, n, n);
    cr_assert_eq(sg_matfunc_backward(cpu, &Wm, &Vm, &fn, &gFm, &gAm), SG_OK, "%s", sg_last_error(cpu));
    vector<T> gA;
    vector<int> flags;
    FusedArgs<T> a;
    a.W = W.data(); a.sW = n;
    a.V = V.data(); a.ldV = n; a.sV = n * n;
    a.gW = nullptr; a.sgW = 0;
    a.G = gF.data(); a.ldG = n; a.sG = n * n;
    a.ldA = n; a.sA = n * n;
    a.n = (int)n; a.batch = nb;
    a.mode = 0; a.param = T(0);
    a.fkind = (int)fk; a.fp = p; a.rel = SG_DIVDIFF_REL;
    all_modes("fused_backward<matfunc>", [&] {
        gA.assign((size_t)(n * n * nb), T(-9));
        flags.assign((size_t)nb, -1);
        a.gA = gA.data();
        a.flags = flags.data();
        launch_fused_emu<T, FUSED_MATFUNC>(a);
        return bytes2(gA, flags);
    });
    for (int f : flags) cr_assert_eq(f, 0, "fused_backward<matfunc> n=%lld fn %d: flag %d", (long long)n, (int)fk, f);
    const double e = rel_err(dbl(gA), dbl(want));
    cr_assert(e <= tol<T>() * (sizeof(T) == 4 ? 10 : 1), "fused_backward<matfunc> n=%lld spectrum %d fn %d: rel err %g",
              (long long)n, kind, (int)fk, e);
}
template <class T> static void fused_matfunc_all()
{
    tu_rng r = tu_seed(22);
    for (int64_t n : FUSED_SIZES) {
        const int64_t nb = n >= 33 ? 2 : 3;
        fused_matfunc_case<T>(&r, n, nb, 2, SG_FN_SQRT, 0);
        fused_matfunc_case<T>(&r, n, nb, 3, SG_FN_LOG, 0);
        fused_matfunc_case<T>(&r, n, nb, 2, SG_FN_EXP, 0);
        fused_matfunc_case<T>(&r, n, nb, 3, SG_FN_POW, 1.5);
    }
    cap_sms = 1;
    fused_matfunc_case<T>(&r, 17, 5, 3, SG_FN_SQRT, 0);
    cap_sms = SMS;
}
Test(emu, fused_backward_matfunc_f32) { fused_matfunc_all<float>(); }
Test(emu, fused_backward_matfunc_f64) { fused_matfunc_all<double>(); }

/* fused_vdvt (launch_vdvt_tm: fused_threads, fused_vdvt_smem, persistent grid) against a direct loop. */
template <class T> static void vdvt_all()
{
    tu_rng r = tu_seed(23);
    for (int64_t n : FUSED_SIZES) {
        const int64_t nb = 3;
        vector<T> W, V;
        eig_inputs<T>(&r, n, nb, 0, W, V);
        vector<double> want((size_t)(n * n * nb), 0.0);
        for (int64_t b = 0; b < nb; b++)
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < n; i++) {
                    double s = 0;
                    for (int64_t k = 0; k < n; k++)
                        s += (double)W[b * n + k] * (double)V[b * n * n + i + k * n] * (double)V[b * n * n + j + k * n];
                    want[b * n * n + i + j * n] = s;
                }
        vector<T> X;
        vector<int> flags;
        all_modes("fused_vdvt", [&] {
            X.assign((size_t)(n * n * nb), T(-9));
            flags.assign((size_t)nb, 0);
            const int ni = (int)n;
            if (n <= 16)
                emu_launch(fused_grid(nb), fused_threads<1>(ni), fused_vdvt_smem<T, 1>(ni), fused_vdvt<T, 1>, V.data(), n,
                           n * n, W.data(), n, X.data(), n, n * n, ni, nb, flags.data());
            else if (n <= 32)
                emu_launch(fused_grid(nb), fused_threads<2>(ni), fused_vdvt_smem<T, 2>(ni), fused_vdvt<T, 2>, V.data(), n,
                           n * n, W.data(), n, X.data(), n, n * n, ni, nb, flags.data());
            else
                emu_launch(fused_grid(nb), fused_threads<4>(ni), fused_vdvt_smem<T, 4>(ni), fused_vdvt<T, 4>, V.data(), n,
                           n * n, W.data(), n, X.data(), n, n * n, ni, nb, flags.data());
            return bytes2(X, flags);
        });
        for (int f : flags) cr_assert_eq(f, 0);
        const double e = rel_err(dbl(X), want);
        cr_assert(e <= tol<T>(), "fused_vdvt n=%lld: rel err %g", (long long)n, e);
        for (int64_t b = 0; b < nb; b++) /* exactly symmetric */
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < n; i++) cr_assert(X[b * n * n + i + j * n] == X[b * n * n + j + i * n]);
    }
}
Test(emu, fused_vdvt_f32) { vdvt_all<float>(); }
Test(emu, fused_vdvt_f64) { vdvt_all<double>(); }

/* Helpers shared by the emulator tests (test_kernel_emu*.cpp): a CPU reference context, dtype and
   buffer conversions, eigh test inputs (spectrum kinds, W and V from the CPU eigh), and the schedule
   runner that launches a kernel under several thread orders and requires bitwise-identical results.
   Header-only (each test is one translation unit). */
#ifndef SG_EMU_TEST_H
#define SG_EMU_TEST_H
#include <criterion/criterion.h>

#include "cuda_emu.h"

#include "specgrad.h"
extern "C" {
#include "testutil.h"
}

#include <algorithm>
#include <vector>

/* The CPU backend computes the references; one thread so that results do not depend on the pool. */
static sg_ctx *cpu;
static void emu_suite_setup(void)
{
    cr_assert_eq(sg_create(&cpu, SG_BACKEND_CPU), SG_OK);
    sg_set_threads(cpu, 1);
    emu::set_mode(emu::FORWARD);
}
static void emu_suite_teardown(void) { sg_destroy(cpu); }

template <class T> constexpr sg_dtype dt() { return sizeof(T) == 4 ? SG_F32 : SG_F64; }
template <class T> static std::vector<T> to(const std::vector<double> &x) { return std::vector<T>(x.begin(), x.end()); }
template <class T> static sg_mat mat(std::vector<T> &v, int64_t batch, int64_t rows, int64_t cols)
{
    return sg_mat_dense(v.data(), dt<T>(), batch, rows, cols);
}

template <class T> static std::vector<unsigned char> bytes(const std::vector<T> &x)
{
    const unsigned char *p = (const unsigned char *)x.data();
    return std::vector<unsigned char>(p, p + x.size() * sizeof(T));
}
template <class T, class U> static std::vector<unsigned char> bytes2(const std::vector<T> &x, const std::vector<U> &y)
{
    std::vector<unsigned char> a = bytes(x), b = bytes(y);
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

/* Strided batch: element (i, j) of matrix b at b*st + i + j*ld; padding holds `fill`. unpad: back to dense. */
template <class T>
static std::vector<T> pad(const std::vector<T> &x, int64_t nb, int64_t rows, int64_t cols, int64_t ld, int64_t st, T fill)
{
    std::vector<T> y((size_t)(st * nb), fill);
    for (int64_t b = 0; b < nb; b++)
        for (int64_t j = 0; j < cols; j++)
            for (int64_t i = 0; i < rows; i++) y[b * st + i + j * ld] = x[b * rows * cols + i + j * rows];
    return y;
}
template <class T>
static std::vector<T> unpad(const std::vector<T> &y, int64_t nb, int64_t rows, int64_t cols, int64_t ld, int64_t st)
{
    std::vector<T> x((size_t)(rows * cols * nb));
    for (int64_t b = 0; b < nb; b++)
        for (int64_t j = 0; j < cols; j++)
            for (int64_t i = 0; i < rows; i++) x[b * rows * cols + i + j * rows] = y[b * st + i + j * ld];
    return x;
}

/* Spectra per case: 0 distinct, 1 with ties (pairs), 2 positive distinct (Taylor, matrix functions),
   3 positive with ties (matrix functions: divided differences at ties). */
static double spectrum(int kind, int64_t n, int64_t i)
{
    const double x = (double)i / (double)std::max<int64_t>(1, n - 1);
    switch (kind) {
    case 0: return -1.0 + 2.5 * x;
    case 1: return -1.0 + 2.0 * (double)(i / 2) / (double)std::max<int64_t>(1, n / 2);
    case 2: return 0.5 + 1.5 * x;
    default: return 0.5 + (double)(i / 2) / (double)std::max<int64_t>(1, n / 2);
    }
}

/* W, V of nb random symmetric matrices with the given spectrum kind, from the CPU eigh in float64, then
   rounded to T. (A float32 ssyevd of these tied spectra gave NaN vectors, or info > 0 with one OpenBLAS
   thread, with Debian's OpenBLAS 0.3.21 on the H200 machine's Intel Xeon, 2026-11-30; dsyevd was fine.) */
template <class T> static void eig_inputs(tu_rng *r, int64_t n, int64_t nb, int kind, std::vector<T> &W, std::vector<T> &V)
{
    std::vector<double> A((size_t)(n * n * nb)), w((size_t)n);
    for (int64_t b = 0; b < nb; b++) {
        for (int64_t i = 0; i < n; i++) w[(size_t)i] = spectrum(kind, n, i) * (1.0 + 0.1 * (double)b);
        tu_sym_with_spectrum(r, n, w.data(), A.data() + b * n * n);
    }
    std::vector<double> Wd((size_t)(n * nb)), Vd((size_t)(n * n * nb));
    sg_mat Am = mat(A, nb, n, n), Wm = mat(Wd, nb, n, 1), Vm = mat(Vd, nb, n, n);
    cr_assert_eq(sg_eigh(cpu, &Am, &Wm, &Vm), SG_OK, "%s", sg_last_error(cpu));
    W = std::vector<T>(Wd.begin(), Wd.end());
    V = std::vector<T>(Vd.begin(), Vd.end());
    if (kind == 1 || kind == 3) /* exact ties in W (the eigensolver returns them only approximately) */
        for (int64_t b = 0; b < nb; b++)
            for (int64_t i = 1; i < n; i += 2) W[b * n + i] = W[b * n + i - 1];
}

/* Runs launch() (which resets its outputs itself and returns them as bytes) under the fiber schedules
   (forward, reverse, random; only forward when forward_only) and, when with_free, with the block's threads
   as real OS threads; all results must agree bitwise (a difference is a race or a missing barrier).
   Returns the first result and leaves the emulator in FORWARD for single launches. */
template <class F>
static std::vector<unsigned char> emu_schedules(const char *what, F launch, bool with_free, bool forward_only)
{
    static const emu::Mode modes[] = {emu::FREE, emu::FORWARD, emu::REVERSE, emu::RANDOM};
    std::vector<unsigned char> first;
    bool have = false;
    for (emu::Mode m : modes) {
        if (m == emu::FREE && !with_free) continue;
        if (forward_only && m != emu::FORWARD) continue;
        emu::set_mode(m);
        std::vector<unsigned char> r = launch();
        if (!have) {
            first = r;
            have = true;
        } else {
            cr_assert(r == first, "%s: result under the %s schedule differs from the first run (race or missing barrier)",
                      what, emu::mode_name(m));
        }
    }
    emu::set_mode(emu::FORWARD);
    return first;
}
#endif

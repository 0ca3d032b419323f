/* Helpers shared by the emulator tests (test_kernel_emu*.cpp): a CPU reference context, dtype and
   buffer conversions, and the schedule runner that launches a kernel under several thread orders and
   requires bitwise-identical results. Header-only (each test is one translation unit). */
#ifndef SG_EMU_TEST_H
#define SG_EMU_TEST_H
#include <criterion/criterion.h>

#include "cuda_emu.h"

#include "specgrad.h"
extern "C" {
#include "testutil.h"
}

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

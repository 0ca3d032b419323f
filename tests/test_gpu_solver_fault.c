/* cuSOLVER failures on the CUDA backend, injected: this executable defines cusolverDn{S,D}syevjBatched and
   cusolverDnXsyevBatched (libspecgrad's calls resolve to them first), forwards to libcusolver through
   dlsym(RTLD_NEXT) and then either returns an error status without solving, or lets the solve run and
   overwrites one matrix's info entry on the handle's stream. Checked: a per-matrix info is reported with
   the matrix's index in the whole batch (also from a later chunk of a streamed host batch), positive info
   as SG_ERR_NOCONV and negative as SG_ERR_CUSOLVER; an error status names the call and the status
   (ALLOC_FAILED as SG_ERR_DEVICE_OOM); the context works afterwards. Counters prove the injection ran.
   Without a GPU every test is skipped with the reason printed. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>

#include "gpu_suite.h"

TestSuite(gpu_solver_fault, .init = gpu_suite_setup, .fini = gpu_suite_teardown, .timeout = 600);

#ifdef SG_HAVE_CUDA
#include <cusolverDn.h>

static cusolverStatus_t fail_status = CUSOLVER_STATUS_SUCCESS; /* returned without solving when set */
static int64_t info_target = -1; /* matrix index in the whole sequence of solver calls since reset */
static int info_value, n_injected;
static int64_t seen; /* matrices passed to the solver since reset */

static void reset(cusolverStatus_t st, int64_t target, int value)
{
    fail_status = st;
    info_target = target;
    info_value = value;
    seen = 0;
}

/* After the real solve of nb matrices: overwrite the target's info if it is in this call. */
static cusolverStatus_t after(cusolverDnHandle_t h, cusolverStatus_t st, int *info, int64_t nb)
{
    if (st == CUSOLVER_STATUS_SUCCESS && info_target >= seen && info_target < seen + nb) {
        static int v; /* pageable source: staged before cudaMemcpyAsync returns, static anyway */
        cudaStream_t s = NULL;
        v = info_value;
        if (cusolverDnGetStream(h, &s) != CUSOLVER_STATUS_SUCCESS ||
            cudaMemcpyAsync(info + (info_target - seen), &v, sizeof v, cudaMemcpyHostToDevice, s) != cudaSuccess)
            abort();
        n_injected++;
    }
    seen += nb;
    return st;
}

#define SYEVJ(T, P)                                                                                              \
    cusolverStatus_t cusolverDn##P##syevjBatched(cusolverDnHandle_t h, cusolverEigMode_t jobz, cublasFillMode_t uplo, \
                                                 int n, T *A, int lda, T *W, T *work, int lwork, int *info,       \
                                                 syevjInfo_t params, int nb)                                      \
    {                                                                                                            \
        typedef cusolverStatus_t (*fn)(cusolverDnHandle_t, cusolverEigMode_t, cublasFillMode_t, int, T *, int, T *, \
                                       T *, int, int *, syevjInfo_t, int);                                        \
        static fn f;                                                                                             \
        if (!f) f = (fn)tu_next_symbol("cusolverDn" #P "syevjBatched");                                                     \
        if (fail_status != CUSOLVER_STATUS_SUCCESS) {                                                            \
            n_injected++;                                                                                        \
            return fail_status;                                                                                  \
        }                                                                                                        \
        return after(h, f(h, jobz, uplo, n, A, lda, W, work, lwork, info, params, nb), info, nb);                \
    }
SYEVJ(float, S)
SYEVJ(double, D)

cusolverStatus_t cusolverDnXsyevBatched(cusolverDnHandle_t h, cusolverDnParams_t params, cusolverEigMode_t jobz,
                                        cublasFillMode_t uplo, int64_t n, cudaDataType ta, void *A, int64_t lda,
                                        cudaDataType tw, void *W, cudaDataType tc, void *dwork, size_t dbytes,
                                        void *hwork, size_t hbytes, int *info, int64_t nb)
{
    typedef cusolverStatus_t (*fn)(cusolverDnHandle_t, cusolverDnParams_t, cusolverEigMode_t, cublasFillMode_t, int64_t,
                                   cudaDataType, void *, int64_t, cudaDataType, void *, cudaDataType, void *, size_t,
                                   void *, size_t, int *, int64_t);
    static fn f;
    if (!f) f = (fn)tu_next_symbol("cusolverDnXsyevBatched");
    if (fail_status != CUSOLVER_STATUS_SUCCESS) {
        n_injected++;
        return fail_status;
    }
    return after(h, f(h, params, jobz, uplo, n, ta, A, lda, tw, W, tc, dwork, dbytes, hwork, hbytes, info, nb), info, nb);
}

#endif

/* info > 0 for matrix 17 of 23 (host: in a later chunk of a few matrices; device: one chunk) is
   SG_ERR_NOCONV naming matrix 17; info < 0 is SG_ERR_CUSOLVER naming it. n = 12: syevjBatched; n = 40:
   XsyevBatched. */
Test(gpu_solver_fault, info_names_the_matrix_in_the_whole_batch)
{
    NEED_GPU();
#ifdef SG_HAVE_CUDA
    const int64_t B = 23, target = 17;
    static const int64_t sizes[2] = {12, 40};
    for (int dev = 0; dev <= 1; dev++)
        for (int si = 0; si < 2; si++)
            for (int t = 0; t < 2; t++)
                for (int sign = 1; sign >= -1; sign -= 2) {
                    const int64_t n = sizes[si];
                    const sg_dtype dt = t ? SG_F64 : SG_F32;
                    double *A = tu_sym_batch(B, n, 70 + (uint64_t)n);
                    cr_assert_eq(sg_set_memspace(gpu, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
                    /* host: about four matrices per chunk (A, W and V staged, plus the solver's workspace) */
                    cr_assert_eq(sg_set_chunk_bytes(gpu, dev ? 0 : (size_t)(4 * n * (2 * n + 1) * (t ? 8 : 4))), SG_OK);
                    buf a = bnew(dt, B, n, n, 0, dev), w = bnew(dt, B, n, 1, 0, dev), v = bnew(dt, B, n, n, 0, dev);
                    bset(&a, A);
                    const int before = n_injected;
                    reset(CUSOLVER_STATUS_SUCCESS, target, sign * 7);
                    sg_status s = sg_eigh(gpu, bm(&a), bm(&w), bm(&v));
                    reset(CUSOLVER_STATUS_SUCCESS, -1, 0);
                    const char *what = dev ? "device" : "host";
                    cr_expect_eq(n_injected - before, 1, "%s n=%lld: info injected %d times", what, (long long)n,
                                 n_injected - before);
                    cr_expect_eq(s, sign > 0 ? SG_ERR_NOCONV : SG_ERR_CUSOLVER, "%s n=%lld info %d: %s (%s)", what,
                                 (long long)n, sign * 7, sg_status_string(s), sg_last_error(gpu));
                    cr_expect_eq(sg_failed_index(gpu), target, "%s n=%lld: failed index %lld (%s)", what, (long long)n,
                                 (long long)sg_failed_index(gpu), sg_last_error(gpu));
                    cr_expect(strstr(sg_last_error(gpu), "matrix 17") != NULL, "%s", sg_last_error(gpu));
                    /* the context is fine afterwards */
                    cr_expect_eq(sg_eigh(gpu, bm(&a), bm(&w), bm(&v)), SG_OK, "%s", sg_last_error(gpu));
                    bfree(&a), bfree(&w), bfree(&v);
                    free(A);
                }
    cr_assert_eq(sg_set_chunk_bytes(gpu, 0), SG_OK);
#endif
}

/* An error status from the solver call: SG_ERR_CUSOLVER naming the call and the status, ALLOC_FAILED as
   SG_ERR_DEVICE_OOM; nothing is left running and the next call works. */
Test(gpu_solver_fault, solver_status_names_the_call)
{
    NEED_GPU();
#ifdef SG_HAVE_CUDA
    const int64_t B = 5;
    static const int64_t sizes[2] = {12, 40};
    static const char *call[2] = {"syevj", "cusolverDnXsyevBatched"};
    for (int dev = 0; dev <= 1; dev++)
        for (int si = 0; si < 2; si++) {
            const int64_t n = sizes[si];
            double *A = tu_sym_batch(B, n, 90 + (uint64_t)n);
            cr_assert_eq(sg_set_memspace(gpu, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
            buf a = bnew(SG_F64, B, n, n, 0, dev), w = bnew(SG_F64, B, n, 1, 0, dev);
            bset(&a, A);
            const int before = n_injected;
            reset(CUSOLVER_STATUS_INTERNAL_ERROR, -1, 0);
            sg_status s = sg_eigh(gpu, bm(&a), bm(&w), NULL);
            reset(CUSOLVER_STATUS_ALLOC_FAILED, -1, 0);
            sg_status s2 = sg_eigh(gpu, bm(&a), bm(&w), NULL);
            char msg2[512];
            snprintf(msg2, sizeof msg2, "%s", sg_last_error(gpu));
            reset(CUSOLVER_STATUS_SUCCESS, -1, 0);
            cr_expect_geq(n_injected - before, 2);
            cr_expect_eq(s, SG_ERR_CUSOLVER, "%s n=%lld: %s", dev ? "device" : "host", (long long)n, sg_status_string(s));
            cr_expect_eq(s2, SG_ERR_DEVICE_OOM, "ALLOC_FAILED: %s (%s)", sg_status_string(s2), msg2);
            cr_expect(strstr(msg2, call[si]) != NULL && strstr(msg2, "ALLOC_FAILED") != NULL, "%s", msg2);
            cr_expect_eq(sg_eigh(gpu, bm(&a), bm(&w), NULL), SG_OK, "after the faults: %s", sg_last_error(gpu));
            bfree(&a), bfree(&w);
            free(A);
        }
#endif
}

/* The INTERNAL_ERROR message names the call: checked on its own so the text is the call's, not a later one's. */
Test(gpu_solver_fault, internal_error_message)
{
    NEED_GPU();
#ifdef SG_HAVE_CUDA
    const int64_t B = 3, n = 40;
    double *A = tu_sym_batch(B, n, 5);
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_DEVICE), SG_OK);
    buf a = bnew(SG_F64, B, n, n, 0, 1), w = bnew(SG_F64, B, n, 1, 0, 1);
    bset(&a, A);
    reset(CUSOLVER_STATUS_INTERNAL_ERROR, -1, 0);
    sg_status s = sg_eigh(gpu, bm(&a), bm(&w), NULL);
    reset(CUSOLVER_STATUS_SUCCESS, -1, 0);
    cr_expect_eq(s, SG_ERR_CUSOLVER);
    cr_expect(strstr(sg_last_error(gpu), "cusolverDnXsyevBatched") && strstr(sg_last_error(gpu), "INTERNAL_ERROR"), "%s",
              sg_last_error(gpu));
    bfree(&a), bfree(&w);
    free(A);
#endif
}

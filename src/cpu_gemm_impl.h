/* C = al·op(A)·op(B) + be·C for one dtype (column-major; ta/tb: transpose), included by cpu_linalg_impl.h
   and cpu_grad_impl.h with their T, FN, CB. Small products are computed here instead of by ?gemm:
   OpenBLAS's ?gemm takes a process-wide lock around its buffer allocation on every call (OpenBLAS issue
   #5589), and each batch thread calls it once or more per matrix. Measured (OpenBLAS 0.3.21, 2-core VM,
   f64, bench/probe/blaslock.c): 8×8×8 ?gemm 94 ns per call on one thread, 410–440 ns each with two threads
   calling at once (?ger, no lock: 34 ns both ways); the loops
   below 80–110 ns either way (3×3×3: 67 vs 37 ns; 10×10×10: 15–30 % slower than ?gemm on one thread).
   eigh_backward n = 8, batch 1e4, two threads: 7.3 → 2.9 ms (n = 3: 7.0 → 1.4 ms; it took 2.5 ms on one
   thread). The choice depends on the sizes only, not on the thread count, so results do not either.
   Up to 16×16×16, compiled for x86-64-v3 (AVX2, FMA) too and picked at load time, two columns of C per
   pass: gradients at n = 12-16 with two threads 7-31 % faster, one thread 0.83-1.29×; at 24×24×24 the
   loops lost to ?gemm on both (bench/results/cpu-gemm-2026-11-30.md). */
#ifndef SG_GEMM_SMALL
#define SG_GEMM_SMALL 4096 /* m·n·k at most: 16×16×16 */
#define SG_GEMM_AT 1024     /* op(A) = Aᵀ is copied: m·k at most */
#endif
#if defined(__GNUC__) && defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
static void FN(gemm)(int ta, int tb, int m, int n, int k, T al, const T *A, int lda, const T *B, int ldb, T be, T *C,
                     int ldc)
{
    if ((int64_t)m * n * k > SG_GEMM_SMALL || (ta && (int64_t)m * k > SG_GEMM_AT)) {
        CB(gemm)(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, al, A, lda, B,
                 ldb, be, C, ldc);
        return;
    }
    if (m <= 0 || n <= 0) return;
    if (al == 0 || k <= 0) { /* BLAS: A and B are not read (an Inf there must not turn C into NaN) */
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) C[i + (size_t)j * ldc] = be == 0 ? (T)0 : be * C[i + (size_t)j * ldc];
        return;
    }
    T At[SG_GEMM_AT]; /* op(A) = Aᵀ, m×k: the loops below want op(A)'s columns contiguous */
    if (ta) {
        for (int l = 0; l < k; l++)
            for (int i = 0; i < m; i++) At[i + l * m] = A[l + (size_t)i * lda];
        A = At;
        lda = m;
    }
#define SG_OPB(l, j) (al * (tb ? B[(j) + (size_t)(l) * ldb] : B[(l) + (size_t)(j) * ldb]))
    /* c_j = be·c_j + Σ_l op(A)(:, l)·al·op(B)(l, j), four l at a time, two columns j per pass (each
       a-column load serves both); every c_j sees the same operations in the same order either way */
    int j = 0;
    for (; j + 2 <= n; j += 2) {
        T *c = C + (size_t)j * ldc, *d = c + ldc;
        for (int i = 0; i < m; i++) { /* be = 0: C is not read (BLAS) */
            c[i] = be == 0 ? (T)0 : be * c[i];
            d[i] = be == 0 ? (T)0 : be * d[i];
        }
        int l = 0;
        for (; l + 4 <= k; l += 4) {
            const T b0 = SG_OPB(l, j), b1 = SG_OPB(l + 1, j), b2 = SG_OPB(l + 2, j), b3 = SG_OPB(l + 3, j);
            const T e0 = SG_OPB(l, j + 1), e1 = SG_OPB(l + 1, j + 1), e2 = SG_OPB(l + 2, j + 1), e3 = SG_OPB(l + 3, j + 1);
            const T *a0 = A + (size_t)l * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
#pragma omp simd
            for (int i = 0; i < m; i++) {
                c[i] += a0[i] * b0 + a1[i] * b1 + a2[i] * b2 + a3[i] * b3;
                d[i] += a0[i] * e0 + a1[i] * e1 + a2[i] * e2 + a3[i] * e3;
            }
        }
        for (; l < k; l++) {
            const T b = SG_OPB(l, j), e = SG_OPB(l, j + 1), *a = A + (size_t)l * lda;
#pragma omp simd
            for (int i = 0; i < m; i++) {
                c[i] += a[i] * b;
                d[i] += a[i] * e;
            }
        }
    }
    for (; j < n; j++) {
        T *c = C + (size_t)j * ldc;
        for (int i = 0; i < m; i++) c[i] = be == 0 ? (T)0 : be * c[i];
        int l = 0;
        for (; l + 4 <= k; l += 4) {
            const T b0 = SG_OPB(l, j), b1 = SG_OPB(l + 1, j), b2 = SG_OPB(l + 2, j), b3 = SG_OPB(l + 3, j);
            const T *a0 = A + (size_t)l * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
#pragma omp simd
            for (int i = 0; i < m; i++) c[i] += a0[i] * b0 + a1[i] * b1 + a2[i] * b2 + a3[i] * b3;
        }
        for (; l < k; l++) {
            const T b = SG_OPB(l, j), *a = A + (size_t)l * lda;
#pragma omp simd
            for (int i = 0; i < m; i++) c[i] += a[i] * b;
        }
    }
#undef SG_OPB
}

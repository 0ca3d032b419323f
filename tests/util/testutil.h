/* Shared test helpers: deterministic random matrices, dense column-major products, norms, GPU skip.
   All helpers work in double on densely packed column-major storage. */
#ifndef SG_TESTUTIL_H
#define SG_TESTUTIL_H
#include "specgrad.h"
#include <stddef.h>
#include <stdint.h>

typedef struct { uint64_t s; } tu_rng;
tu_rng tu_seed(uint64_t seed);
double tu_uniform(tu_rng *r);            /* [0,1) */
double tu_normal(tu_rng *r);             /* N(0,1) */
void tu_fill_normal(tu_rng *r, double *x, int64_t n);

/* C = op(A)·op(B), A m×k (ta: A is stored k×m and transposed), column-major, dense. */
void tu_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const double *A, const double *B, double *C);
/* Random orthogonal n×n (QR of a Gaussian matrix, sign-fixed). */
void tu_orthogonal(tu_rng *r, int64_t n, double *Q);
/* Symmetric n×n A = Q diag(w) Qᵀ with the given spectrum. */
void tu_sym_with_spectrum(tu_rng *r, int64_t n, const double *w, double *A);
/* B symmetric n×n matrices (dense, one after another) with spectra uniform in [-2, 2]; malloc'ed. */
double *tu_sym_batch(int64_t B, int64_t n, uint64_t seed);
/* The definition of name that follows this executable's (dlsym RTLD_NEXT): the real function behind a
   test's interposer (test_lapack_fault, test_gpu_oom, test_gpu_solver_fault). Aborts if there is none. */
void *tu_next_symbol(const char *name);
/* m×n A = U diag(s) Vᵀ with k = min(m,n) singular values s (zeros give rank deficiency). */
void tu_mat_with_singular_values(tu_rng *r, int64_t m, int64_t n, const double *s, double *A);

double tu_norm(const double *x, int64_t n);                   /* Frobenius / 2-norm */
double tu_diff_norm(const double *x, const double *y, int64_t n);
double tu_max_abs(const double *x, int64_t n);

/* Copy between a dense double array and an sg_mat's storage of either dtype (honours ld/stride). */
void tu_to_mat(const double *src, sg_mat *dst);
void tu_from_mat(const sg_mat *src, double *dst);
/* Allocate a dense sg_mat (calloc'ed data); free with tu_free_mat. */
sg_mat tu_alloc_mat(sg_dtype t, int64_t batch, int64_t rows, int64_t cols);
void tu_free_mat(sg_mat *m);

/* || P_a − P_b ||_F for the projectors onto the column spans of A (n×ka) and B (n×kb), orthonormal
   columns: a gauge-invariant (sign, rotation within a subspace) comparison of subspaces. */
double tu_subspace_dist(int64_t n, const double *A, int64_t ka, const double *B, int64_t kb);

/* Returns 1 when a CUDA device is usable. Otherwise prints "GPU test skipped: <reason>" to stderr and
   returns 0 (callers then cr_skip_test with the same reason). why receives the reason. */
int tu_gpu_available(char *why, size_t len);

#endif

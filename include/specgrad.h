/* specgrad — batched spectral linear algebra and its gradients, CPU (LAPACK) and CUDA (cuSOLVER).
 *
 * Conventions (cuSOLVER/LAPACKE style):
 *  - Every op takes a context (backend, stream, memory space, workspace, last error) and returns a status.
 *  - Matrices are batches of column-major matrices described by sg_mat: element (i,j) of matrix b is
 *    data[b*stride + i + j*ld]. Vectors are rows×1 matrices; per-matrix scalars are 1×1 matrices.
 *  - float32 and float64; all sg_mat arguments of one call must share the dtype.
 *  - Integer outputs (ranks, nullities) are int64_t arrays of length batch.
 *  - All pointers of a call live in the context's memory space (host unless sg_set_memspace says device).
 *  - A context is used by one thread at a time (it holds the last error, settings and, on CUDA, its streams,
 *    pinned buffers and scratch pool): one context per thread, or calls serialised by the caller (the
 *    Python binding locks). Distinct contexts may run concurrently, on either backend.
 *  - Outputs must not overlap one another or any input (SG_ERR_ARG naming both), except in place where an
 *    op allows it: an output that is an input itself, with the same data, ld and stride (eigh's V = A,
 *    matfunc's F or V = A, project's and project_basis's Y = X, lstsq's X = B). Overlap is per matrix (its first to last
 *    element), so interleaved records, e.g. matrix b's V followed by its W, are fine.
 *  - Argument errors (SG_ERR_ARG, SG_ERR_DTYPE, SG_ERR_NONFINITE on host inputs): every descriptor and
 *    option of a call is validated first, then host inputs are scanned for NaN/Inf, all before anything
 *    is written, so outputs are left untouched. A bad descriptor is reported as such (SG_ERR_ARG/DTYPE
 *    naming it) even when an earlier input holds NaN: no element is read through an unvalidated descriptor.
 *    Per-matrix numerical failures are found while computing, so outputs of other matrices (and
 *    of the failing one) may have been written: SG_ERR_NOCONV / SG_ERR_LAPACK / SG_ERR_CUSOLVER,
 *    SG_ERR_DEGENERATE (gA is written, with inf/NaN in the failing matrix), SG_ERR_DOMAIN when the
 *    eigen/singular values of a finite matrix overflow the dtype (its norm beyond the largest value; every
 *    op built on eigh or the SVD) or a lstsq solution or a projection's Y does (input check on; Y is
 *    written), and SG_ERR_DOMAIN when f(A), a loss or a gradient overflows (every matrix's F / loss / gA
 *    is written, the failing one's with inf/NaN, on both backends; matfunc's W and V are then not
 *    written, except, on CUDA, those of chunks before the failing matrix's). SG_ERR_DOMAIN for an
 *    eigenvalue outside f's domain (matfunc, matfunc_backward, LOGDET/EIGSUM) is found before
 *    F/gA/loss are written: on the CPU for the whole batch (nothing written); on CUDA per chunk of the
 *    batch (host data streamed in chunks: outputs of earlier chunks may have been written). With
 *    device memory, NaN/Inf are found by the backend.
 *    sg_last_error() says what failed and sg_failed_index() which matrix of the batch (-1 if none).
 *  - Symmetric inputs (eigh, matfunc, LOGDET/EIGSUM regularizers) are read from the lower triangle only;
 *    the NaN/Inf check still covers the whole matrix (a NaN anywhere in an input is reported).
 *  - Tolerances follow numpy/torch: tol = max(atol, rtol·σmax). rtol < 0 selects the default:
 *    max(m,n)·eps(dtype) when atol == 0, else 0. A singular value counts when σ > tol. The _tols entry
 *    points take one pair per matrix instead (numpy's array tol, torch's tensor atol/rtol).
 */
#ifndef SPECGRAD_H
#define SPECGRAD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SG_VERSION_MAJOR 0
#define SG_VERSION_MINOR 1
#define SG_VERSION (SG_VERSION_MAJOR * 1000 + SG_VERSION_MINOR)

/* Only the functions declared here are exported; the build hides everything else (-fvisibility=hidden). */
#if defined(__GNUC__)
#define SG_API __attribute__((visibility("default")))
#else
#define SG_API
#endif

typedef enum {
    SG_OK = 0,
    SG_ERR_ARG,         /* null pointer, bad size, ld < rows, size overflow, bad option */
    SG_ERR_DTYPE,       /* tensors of one call disagree on dtype */
    SG_ERR_NONFINITE,   /* NaN or Inf in an input */
    SG_ERR_NOCONV,      /* an iterative solver did not converge */
    SG_ERR_LAPACK,      /* LAPACK reported an error */
    SG_ERR_ALLOC,       /* host memory allocation failed */
    SG_ERR_NODEVICE,    /* CUDA backend asked for, but no usable GPU / CUDA support not built */
    SG_ERR_CUDA,        /* CUDA runtime error */
    SG_ERR_CUSOLVER,    /* cuSOLVER error (status or info) */
    SG_ERR_CUBLAS,      /* cuBLAS error */
    SG_ERR_DEVICE_OOM,  /* device memory exhausted even after chunking */
    SG_ERR_UNSUPPORTED, /* option not available on this backend */
    SG_ERR_DEGENERATE,  /* exact gradient mode met tied eigen/singular values: result has inf/NaN */
    SG_ERR_DOMAIN,      /* outside f's domain (log of a non-positive eigenvalue, ...), or a result that overflows */
    SG_ERR_IO,          /* file could not be opened/read/written */
    SG_ERR_FORMAT,      /* malformed file (.npy) */
    SG_ERR_CANCELLED    /* the progress callback asked the call to stop (sg_set_progress) */
} sg_status;

typedef enum { SG_F32 = 0, SG_F64 = 1 } sg_dtype;
typedef enum { SG_BACKEND_AUTO = 0, SG_BACKEND_CPU = 1, SG_BACKEND_CUDA = 2 } sg_backend;
typedef enum { SG_MEM_HOST = 0, SG_MEM_DEVICE = 1 } sg_memspace;

typedef struct {
    void *data;
    sg_dtype dtype;
    int64_t batch, rows, cols;
    int64_t ld;     /* leading dimension, >= max(1, rows) */
    int64_t stride; /* elements between consecutive matrices, >= ld*cols; 0 means ld*cols */
} sg_mat;

/* A densely packed batch (ld = rows, stride = rows*cols). */
static inline sg_mat sg_mat_dense(void *data, sg_dtype dtype, int64_t batch, int64_t rows, int64_t cols)
{
    sg_mat m;
    m.data = data; m.dtype = dtype; m.batch = batch; m.rows = rows; m.cols = cols;
    m.ld = rows > 0 ? rows : 1; m.stride = 0;
    return m;
}

/* ---- context ---------------------------------------------------------------------------------- */
typedef struct sg_ctx sg_ctx;

/* AUTO picks CUDA when a usable GPU exists (and falls back to CPU when it cannot be used, e.g. no kernels
   for its architecture in this build), else CPU. CUDA without a usable GPU fails with SG_ERR_NODEVICE.
   A CUDA context belongs to the device current at sg_create: each call makes it current for its duration
   and gives the caller's current device back (device pointers must live on that device). CUDA does not
   survive fork(): in a forked child, a CUDA context created before the fork fails every call with
   SG_ERR_CUDA (without reaching the driver), and sg_destroy there frees only its malloc'd host state (its
   pinned buffers and device memory belong to the parent). */
SG_API sg_status sg_create(sg_ctx **ctx, sg_backend backend);
SG_API void sg_destroy(sg_ctx *ctx);
SG_API sg_backend sg_get_backend(const sg_ctx *ctx);
SG_API const char *sg_last_error(const sg_ctx *ctx); /* "" after a successful call */
SG_API int64_t sg_failed_index(const sg_ctx *ctx);   /* batch index of the failing matrix, -1 if none */
SG_API const char *sg_status_string(sg_status s);
SG_API const char *sg_backend_name(sg_backend b);    /* "auto", "cpu", "cuda"; "unknown" for any other value */
/* SG_VERSION of the library loaded at run time: a program (or binding) can tell that it found the
   libspecgrad it was built for (0.x: the same minor version, as the soname libspecgrad.so.MAJOR.MINOR says). */
SG_API int sg_version(void);

/* Number of usable CUDA devices; 0 with the reason written to why (may be NULL). Never fails hard. */
SG_API int sg_cuda_devices(char *why, size_t why_len);

SG_API sg_status sg_set_memspace(sg_ctx *ctx, sg_memspace mem); /* SG_MEM_DEVICE needs the CUDA backend */
SG_API sg_status sg_set_stream(sg_ctx *ctx, void *cuda_stream); /* cudaStream_t; NULL = default stream */
/* Jacobi solver controls (CUDA syevj/gesvdj): tol <= 0 → machine eps, max_sweeps <= 0 → 100; a tol
   below the dtype's eps is raised to it (f32 cannot meet 1e-14). NaN or ±Inf tol: SG_ERR_ARG. */
SG_API sg_status sg_set_jacobi(sg_ctx *ctx, double tol, int max_sweeps);
/* CPU threads over the batch; <= 0 = all. In a forked child every call runs on one (GNU OpenMP's thread
   pool does not survive fork, and whether the parent started one, through specgrad, torch or its own
   OpenMP, cannot be told: a team there would wait forever); OpenBLAS keeps its own threads for one large
   matrix. For parallel workers, start them with spawn (Python: multiprocessing's "spawn", DataLoader's
   multiprocessing_context="spawn"). fork() inside a progress callback of a call on several threads is not
   supported: the child would wait at the end of the parallel loop for threads that are not there. */
SG_API sg_status sg_set_threads(sg_ctx *ctx, int nthreads);
/* NaN/Inf input check (default on). Off: inputs are not scanned. A decomposition (eigh, SVD and the ops
   built on them) still reports a matrix holding NaN/Inf in what it reads (eigh: the lower triangle) as
   SG_ERR_NOCONV ("not attempted") with its index, on both backends, instead of giving it to the solver
   (LAPACK's ?bdsqr can loop forever on one; cuSOLVER documents no answer): on the CPU before the LAPACK
   call, on CUDA while the matrix is read for the solvers' range scaling (the solver gets zeros; that matrix's
   values and vectors are NaN). The other matrices of the batch are computed as usual. Gradients propagate
   NaN/Inf: a non-finite gA is SG_ERR_DEGENERATE (SG_ERR_DOMAIN for matfunc) naming the matrix, as for ties.
   lstsq's solution is not inspected with the check off (B's NaN/Inf propagate into X). */
SG_API sg_status sg_set_check_finite(sg_ctx *ctx, int on);
/* Host batches on the CUDA backend are streamed in chunks of at most this many bytes of device memory
   per lane, two lanes (so up to twice this, plus as much pinned host memory, kept until sg_destroy);
   0 = automatic, from free device memory. */
SG_API sg_status sg_set_chunk_bytes(sg_ctx *ctx, size_t bytes);
/* CUDA backend: device scratch (workspaces, staging) comes from the context's own stream-ordered pool,
   which keeps up to this many idle bytes mapped between calls, so a loop calling the same op does not map
   and unmap device memory every step. Default 1 GiB; 0 returns everything at the end of each call. Takes
   effect at once (idle memory above it is released now). What the pool holds counts as used for
   cudaMemGetInfo, other contexts and other libraries, until released or sg_destroy. CPU backend: no-op. */
SG_API sg_status sg_set_cache_bytes(sg_ctx *ctx, size_t bytes);
/* Device bytes the context's scratch pool holds now (idle cache; between calls nothing is in use).
   0 on the CPU backend and on devices without memory pools. */
SG_API sg_status sg_cache_held(sg_ctx *ctx, size_t *bytes);

/* Progress of long calls (a CLI bar, a log line). fn(fraction, user) runs on the calling thread, inside a
   call of this context, with strictly increasing fractions below 1 as matrices finish (CPU: with several
   threads estimated from the calling thread's share; in batches over 4096 at every 16th matrix) or chunks
   do (CUDA; with device memory only per chunk that the call waits for, so often none), at most once per
   `every` seconds (0: at every step), and once with exactly 1.0 when the call succeeds (never after an
   error). fn returning nonzero (below 1) stops the call: no further matrix (CPU) or chunk (CUDA) is
   started, the ones under way finish, and the call returns SG_ERR_CANCELLED; outputs of the finished
   matrices are written, the others untouched (an op with a second pass, e.g. matfunc, may leave all
   untouched). fn must not call specgrad with this context. fn = NULL turns it off (the default);
   every < 0 or NaN: SG_ERR_ARG. */
typedef int (*sg_progress_fn)(double fraction, void *user);
SG_API sg_status sg_set_progress(sg_ctx *ctx, sg_progress_fn fn, double every, void *user);

/* ---- decompositions --------------------------------------------------------------------------- */
/* Symmetric eigendecomposition. A: n×n (lower triangle read). W: n×1, ascending. V: n×n orthonormal
   eigenvectors in columns (NULL: values only); V may be A itself (in place, as LAPACK's ?syev). */
SG_API sg_status sg_eigh(sg_ctx *ctx, const sg_mat *A, sg_mat *W, sg_mat *V);

/* SVD A = U diag(S) Vᵀ. A: m×n, k = min(m,n). S: k×1, descending. full_matrices: U m×m, V n×n;
   else U m×k, V n×k. Returns V, not Vᵀ (cuSOLVER convention). U and V may both be NULL. */
SG_API sg_status sg_svd(sg_ctx *ctx, const sg_mat *A, int full_matrices, sg_mat *S, sg_mat *U, sg_mat *V);

/* ---- rank, subspaces, least squares (tolerance rule in the header comment) ------------------- */
SG_API sg_status sg_rank(sg_ctx *ctx, const sg_mat *A, double atol, double rtol, int64_t *rank);

/* Orthonormal basis of the nullspace of A (m×n). N: n×n; columns [0, nullity) hold the basis,
   the remaining columns are zero. nullity may be NULL. */
SG_API sg_status sg_nullspace(sg_ctx *ctx, const sg_mat *A, double atol, double rtol, sg_mat *N, int64_t *nullity);

typedef enum { SG_PROJ_NULL = 0, SG_PROJ_ROW = 1 } sg_proj;
/* Y = P X with P the orthogonal projector onto the nullspace (I − V_r V_rᵀ) or the row space (V_r V_rᵀ)
   of A (m×n). X, Y: n×k. Y may be X itself (same data and layout) for an in-place update. A Y that
   overflows (X's columns with ‖x‖ near the largest value; below half of it they cannot) is SG_ERR_DOMAIN
   naming the matrix, with Y written as computed (input check on; here and in sg_project_basis). */
SG_API sg_status sg_project(sg_ctx *ctx, const sg_mat *A, const sg_mat *X, sg_proj which,
                     double atol, double rtol, sg_mat *Y);

/* Y = Q Qᵀ X (complement = 0) or X − Q Qᵀ X (complement != 0) for a given basis Q: n×q, q <= n, whose columns
   are orthonormal or zero (not checked), e.g. sg_nullspace's N: then Y = N Nᵀ X is the nullspace projection
   and the complement the row-space one. For a basis computed once and applied every step (GPM /
   Adam-NSCL-style projected updates): reads Q and X once, writes Y once. X, Y: n×k; Y may be X, and must
   not overlap Q (SG_ERR_ARG). */
SG_API sg_status sg_project_basis(sg_ctx *ctx, const sg_mat *Q, const sg_mat *X, int complement, sg_mat *Y);

/* Minimum-norm least squares X = A⁺B with the rank cutoff above (also rank-deficient).
   A: m×n, B: m×k, X: n×k; X may be B itself when m = n (in place, as LAPACK's ?gelsd). rank may be NULL. A solution beyond the dtype's range (a large B over a small σ
   that the cutoff keeps) is SG_ERR_DOMAIN naming the matrix, with X written as computed (input check on). */
SG_API sg_status sg_lstsq(sg_ctx *ctx, const sg_mat *A, const sg_mat *B, double atol, double rtol,
                   sg_mat *X, int64_t *rank);

/* The four ops above with a tolerance pair per matrix: atol and rtol are arrays of A->batch doubles in
   host memory, whatever the memory space (NULL: 0, resp. the default, for every matrix; device memory is
   SG_ERR_ARG on the CUDA backend). Each element
   obeys the scalar rule; a bad one is SG_ERR_ARG naming its matrix (sg_failed_index), before anything
   is written. They are inputs: an output must not overlap them. */
SG_API sg_status sg_rank_tols(sg_ctx *ctx, const sg_mat *A, const double *atol, const double *rtol, int64_t *rank);
SG_API sg_status sg_nullspace_tols(sg_ctx *ctx, const sg_mat *A, const double *atol, const double *rtol, sg_mat *N,
                                   int64_t *nullity);
SG_API sg_status sg_project_tols(sg_ctx *ctx, const sg_mat *A, const sg_mat *X, sg_proj which, const double *atol,
                                 const double *rtol, sg_mat *Y);
SG_API sg_status sg_lstsq_tols(sg_ctx *ctx, const sg_mat *A, const sg_mat *B, const double *atol, const double *rtol,
                               sg_mat *X, int64_t *rank);

/* ---- gradients -------------------------------------------------------------------------------- */
/* How 1/(λj − λi) is formed when eigenvalues (or σ²) tie. param's meaning depends on the mode.
   Every mode acts on each pair (i, j) separately, from E_ij alone. */
typedef enum {
    SG_DEGEN_EXACT = 0,   /* 1/E; ties give inf/NaN and SG_ERR_DEGENERATE (gA is still written) */
    SG_DEGEN_MASK = 1,    /* pairwise: 0 for each pair with |E_ij| <= param·max|λ| (param <= 0: 1e3·eps;
                             SVD: |E_ij| <= param with E in units of σmax²), 1/E_ij otherwise. A relative
                             tolerance per pair, not a clustering: in a chain λ1 ≈ λ2 ≈ λ3 the close pairs are
                             masked one by one, and a pair of the chain farther apart than the tolerance keeps
                             1/E. Exact for losses invariant to rotations within each group of masked pairs */
    SG_DEGEN_LORENTZ = 2, /* E/(E² + param·(max|λ|)²) (SVD: E in units of σmax², as for MASK): relative,
                             so the bias does not depend on the units of A; param <= 0: 1e-12 (f64) /
                             1e-6 (f32) */
    SG_DEGEN_TAYLOR = 3   /* 1/(λi−λj) ≈ (1/λi)Σ_{k<K}(λj/λi)^k for |λi| > |λj| of one sign (made for
                             positive spectra: covariances, Gram matrices; negative ones mirror them); a pair
                             of opposite signs, never near a tie, gets 1/E. K = (int)param, param <= 0: 9 */
} sg_degen;

/* eigh backward (symmetric adjoint, PyTorch's convention):
   gA = V (diag(gW) + skew(VᵀgV) ⊘ E) Vᵀ, skew(M) = (M − Mᵀ)/2, E_ij = λj − λi.
   W: n×1, V: n×n (from sg_eigh), gW: n×1 or NULL, gV: n×n or NULL (NULL = zero). gA: n×n, symmetric.
   Pass NULL, not zeros, for an output the loss does not use: zeros still meet 1/E (NaN at a tie in EXACT). */
SG_API sg_status sg_eigh_backward(sg_ctx *ctx, const sg_mat *W, const sg_mat *V, const sg_mat *gW,
                           const sg_mat *gV, sg_degen mode, double param, sg_mat *gA);

/* SVD backward (PyTorch's svd_backward). U, S, V as returned by sg_svd (economy or full_matrices);
   A is m×n with m = U->rows, n = V->rows. gU, gS, gV may be NULL (NULL, not zeros, for an unused output:
   zeros still meet 1/E and, rectangular, Σ⁻¹, so σ = 0 gives NaN). With full_matrices the columns beyond k
   (a tall A's U⊥, a wide A's V⊥) are one basis of a complement A fixes only as a subspace: their
   cotangent enters through it (exact for losses that do not depend on the basis; PyTorch drops it).
   Ties between σ's use mode/param on E_jk = σk² − σj². gA: m×n. */
SG_API sg_status sg_svd_backward(sg_ctx *ctx, const sg_mat *U, const sg_mat *S, const sg_mat *V,
                          const sg_mat *gU, const sg_mat *gS, const sg_mat *gV,
                          sg_degen mode, double param, sg_mat *gA);

/* Scalar functions for f(A) = V f(Λ) Vᵀ on symmetric A. */
typedef enum { SG_FN_SQRT = 0, SG_FN_LOG, SG_FN_EXP, SG_FN_POW, SG_FN_CALLBACK } sg_fn_kind;
typedef struct {
    sg_fn_kind kind;
    double p;                           /* exponent for SG_FN_POW */
    double (*f)(double x, void *user);  /* SG_FN_CALLBACK only (CPU backend only) */
    double (*df)(double x, void *user); /* its derivative */
    void *user;
} sg_fn;

/* F = f(A). A, F: n×n. Domain errors (sqrt/log/pow of negative eigenvalues) give SG_ERR_DOMAIN.
   W (n×1) and V (n×n), each optional (NULL), receive the eigendecomposition F was built from: the inputs
   of sg_matfunc_backward, without a second sg_eigh. Written with F. F, W, V must not overlap each other;
   F or V may be A itself (in place). */
SG_API sg_status sg_matfunc(sg_ctx *ctx, const sg_mat *A, const sg_fn *fn, sg_mat *F, sg_mat *W, sg_mat *V);

/* Backward of F = f(A) (Daleckii–Krein): gA = V (L ∘ (Vᵀ sym(gF) V)) Vᵀ with
   L_ij = (f(λi) − f(λj))/(λi − λj), L_ii = f'(λi); at (near-)ties L_ij = f'((λi+λj)/2): finite. */
SG_API sg_status sg_matfunc_backward(sg_ctx *ctx, const sg_mat *W, const sg_mat *V, const sg_fn *fn,
                              const sg_mat *gF, sg_mat *gA);

typedef enum {
    SG_REG_SPECTRAL = 0, /* σmax(A)²                      grad 2σ u vᵀ          A: m×n
                            (σ1 = σ2: not differentiable; 2σ1 u vᵀ for the pair LAPACK returns, a subgradient) */
    SG_REG_NUCLEAR,      /* Σσ                            grad U Vᵀ             A: m×n */
    SG_REG_ORTHO,        /* ||AᵀA − I||_F²                grad 4A(AᵀA − I)       A: m×n */
    SG_REG_LOGDET,       /* log det A, A symmetric PD     grad A⁻¹              A: n×n */
    SG_REG_EIGSUM        /* Σ f(λ), A symmetric           grad V diag(f'(λ)) Vᵀ  A: n×n, needs fn */
} sg_reg;

/* Per-matrix loss (1×1 per batch item) and, when gA is not NULL, its gradient (shape of A). A loss or gA
   that overflows the dtype is SG_ERR_DOMAIN for the first such matrix, for every kind (see the top). */
SG_API sg_status sg_regularizer(sg_ctx *ctx, sg_reg kind, const sg_mat *A, const sg_fn *fn, sg_mat *loss,
                         sg_mat *gA);

/* ---- .npy I/O (host memory) ------------------------------------------------------------------- */
/* An n-d array of float32/float64. data is malloc'ed, always in C (row-major) order. */
typedef struct {
    sg_dtype dtype;
    int ndim;
    int64_t shape[8];
    void *data;
} sg_array;

SG_API sg_status sg_npy_read(const char *path, sg_array *out, char *err, size_t err_len);
/* Parses an in-memory .npy image (used by the reader and the fuzzer). */
SG_API sg_status sg_npy_parse(const void *buf, size_t len, sg_array *out, char *err, size_t err_len);
/* Writes a C-order .npy 1.0 in the host's byte order. A regular file (or a new one) is written to a temporary file
   beside it and renamed over it when complete, keeping its permission bits: on any failure (SG_ERR_IO) path
   is as it was. A symlink, FIFO or device path is written in place. */
SG_API sg_status sg_npy_write(const char *path, const sg_array *a, char *err, size_t err_len);
SG_API void sg_array_free(sg_array *a);

#ifdef __cplusplus
}
#endif
#endif /* SPECGRAD_H */

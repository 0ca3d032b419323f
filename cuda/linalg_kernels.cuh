/* Device code of the forward path (included by cuda/linalg.cu only; also compiled as host C++ by the
   CUDA-on-CPU emulation test, tests/test_kernel_emu.cpp through tests/emu/cuda_emu.h).
   Each kernel sits next to the CPU semantics it reproduces. Matrices are packed column-major unless a
   kernel says otherwise. Launch shapes (grid, block, dynamic shared memory) are set by the host code in
   cuda/linalg.cu through the sizing functions here (and sg_grid_capped), which the emulation test calls too. */
#ifndef SG_LINALG_KERNELS_CUH
#define SG_LINALG_KERNELS_CUH

#include "formulas.h" /* sg_tol_rule */
#include <stdint.h>

#include "kernel_common.cuh" /* SG_DYN_SMEM, sg_grid_capped */

#define SG_BLOCK 256

template <class T> __device__ __forceinline__ T warp_sum(T v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v; /* lane 0 holds the sum */
}

/* Sum over the block, result returned to every thread. red: 32 shared slots. */
template <class T> __device__ T block_sum(T v, T *red)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* red may still be read by the previous call */
    if (lane == 0) red[w] = v;
    __syncthreads();
    if (w == 0) {
        v = lane < (int)(blockDim.x >> 5) ? red[lane] : (T)0;
        v = warp_sum(v);
        if (lane == 0) red[0] = v;
    }
    __syncthreads();
    return red[0];
}

/* Maximum over the block of non-negative values, result returned to every thread; a NaN wins (a NaN
   column must not pass for a finite one). red: 32 shared slots. */
template <class T> __device__ __forceinline__ T nan_max(T u, T v) { return u > v || u != u ? u : v; }
template <class T> __device__ __forceinline__ T warp_max(T v)
{
    for (int o = 16; o > 0; o >>= 1) v = nan_max(__shfl_down_sync(0xffffffffu, v, o), v);
    return v; /* lane 0 holds the maximum (NaN wins) */
}
template <class T> __device__ T block_max(T v, T *red)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    v = warp_max(v);
    __syncthreads(); /* red may still be read by the previous call */
    if (lane == 0) red[w] = v;
    __syncthreads();
    if (w == 0) {
        v = lane < (int)(blockDim.x >> 5) ? red[lane] : (T)0;
        v = warp_max(v);
        if (lane == 0) red[0] = v;
    }
    __syncthreads();
    return red[0];
}

/* Copy a batch of rows×cols matrices between two strided column-major layouts (pack / unpack).
   CPU equivalent: for b, j, i: dst[b*dst_st + i + j*dld] = src[b*sst + i + j*sld]. src may equal dst
   with the same layout (each thread reads its element before writing it), hence no __restrict__.
   Behind a pending NaN/Inf scan (skip, nskip; sg_scan_failed) a failed scan makes the destination zeros
   (zero = 1: a solver's staged input, kept finite) or leaves it alone (zero = 0: a user output). */
template <class T>
__global__ void k_copy(const T *src, int64_t sld, int64_t sst, T *dst, int64_t dld, int64_t dst_st, int64_t rows,
                       int64_t cols, int64_t nb, const unsigned long long *skip, int nskip, int zero)
{
    const bool bad = sg_scan_failed(skip, nskip);
    if (bad && !zero) return;
    const int64_t per = rows * cols, total = per * nb;
    const bool flat = sld == rows && sst == per && dld == rows && dst_st == per, narrow = SG_NARROW(total);
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t so = e, de = e; /* both packed (staging into / out of the chunk buffer): no index arithmetic */
        if (!flat) {
            int64_t b, j, i;
            sg_split3(e, rows, per, narrow, &b, &j, &i);
            so = b * sst + i + j * sld, de = b * dst_st + i + j * dld;
        }
        dst[de] = bad ? T(0) : src[so];
    }
}

/* NaN/Inf scan: *first = smallest packed index b*rows*cols + j*rows + i of a non-finite element
   (CPU: sg_check_finite_host, which reports the first offending matrix). */
template <class T>
__global__ void k_nonfinite(const T *x, int64_t ld, int64_t st, int64_t rows, int64_t cols, int64_t nb,
                            unsigned long long *first)
{
    int64_t per = rows * cols, total = per * nb;
    const bool packed = ld == rows && st == per, narrow = SG_NARROW(total); /* packed: no index arithmetic */
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t off = e;
        if (!packed) {
            int64_t b, j, i;
            sg_split3(e, rows, per, narrow, &b, &j, &i);
            off = b * st + i + j * ld;
        }
        if (!isfinite(x[off])) atomicMin(first, (unsigned long long)e);
    }
}

/* ---- Safe range and non-finite guard around the batched solvers (eigh_run / svd_run in cuda/linalg.cu) ----
   k_range_scale reads each matrix once (eigh: the lower triangle it reads, lower = 1) and sets ex[b]:
   - max|a| with a binary exponent outside ±SG_RANGE_EXP: ex = e = ilogb(max|a|), A scaled by 2^−e (max|a|
     lands in [1, 2)). LAPACK's ?syev/?gesdd scale by max|a| outside [rmin, 1/rmin], rmin = √(safmin/eps)
     (≈ 1e−146 f64, 3e−16 f32), because beyond it the squares in norms, rotation angles and convergence
     tests overflow or underflow; cuSOLVER documents no such step for syevj/gesvdj/XsyevBatched. A power of
     two is exact except for entries that fall below the underflow threshold, as in LAPACK.
   - NaN/Inf (only with the input check off): ex = SG_RANGE_BAD, A zeroed, so the solver sees a zero matrix
     (no solver-specific answer to NaN: an error, NaN, finite garbage or a hang); k_range_unscale then sets
     that matrix's info to SG_RANGE_BAD (reported as SG_ERR_NOCONV, "not attempted", as the CPU backend
     does) and fills its values and vectors with NaN rather than leave the zero matrix's.
   - otherwise (in range, or zero) ex = 0 and A is not touched: ordinary inputs give bit-identical results.
   k_range_unscale: values ×2^e (vectors are scale-free), or the NaN fill. A value that is finite scaled and
   not after (the norm of A is beyond T's largest value: only a scaled matrix can get there) sets info
   SG_RANGE_OVER (SG_ERR_DOMAIN, as the CPU backend reports an overflowing eigen/singular value), where the
   solver left info 0: rank, nullspace, projections and lstsq would otherwise go on from an infinite σmax.
   CPU equivalent: LAPACK's own scaling; the CPU backend reports a non-finite matrix as SG_ERR_NOCONV
   instead of calling LAPACK.
   Both: one warp per matrix (a max and a flag per matrix do not need a block; at n = 8 a block per
   matrix was 10⁴ tiny blocks per call), SG_RANGE_MATS matrices per block of 32·SG_RANGE_MATS threads. */
#define SG_RANGE_MATS 4
#define SG_RANGE_THREADS (32 * SG_RANGE_MATS)
inline unsigned range_grid(int64_t nb) { return (unsigned)((nb + SG_RANGE_MATS - 1) / SG_RANGE_MATS); } /* + the test */
#define SG_RANGE_BAD 0x40000000
#define SG_RANGE_OVER 0x40000001 /* info: values overflow T once scaled back */
#define SG_LSTSQ_OVER 0x40000002 /* info: lstsq's solution overflows T (k_lstsq) */
#define SG_PROJ_OVER 0x40000003  /* info: a projection's Y overflows T (k_project, k_project_basis_*) */
template <class T> struct SgRange;
template <> struct SgRange<float> { enum { EXP = 50 }; };   /* 2^±50 ≈ 1e±15: rmin 2^−51.5 */
template <> struct SgRange<double> { enum { EXP = 484 }; }; /* 2^±484 ≈ 1e±146: rmin 2^−485 */
__device__ inline int sg_ilogb(float x) { return ilogbf(x); }
__device__ inline int sg_ilogb(double x) { return ilogb(x); }
__device__ inline float sg_scalbn(float x, int e) { return scalbnf(x, e); }
__device__ inline double sg_scalbn(double x, int e) { return scalbn(x, e); }
__device__ inline float sg_nan(float) { return nanf(""); }
__device__ inline double sg_nan(double) { return nan(""); }

template <class T> __global__ void k_range_scale(T *A, int64_t rows, int64_t cols, int64_t nb, int lower, int *ex)
{
    const int lane = threadIdx.x & 31;
    const int64_t b = (int64_t)blockIdx.x * SG_RANGE_MATS + (threadIdx.x >> 5), per = rows * cols;
    if (b >= nb) return; /* a whole warp: no block barrier below */
    T *a = A + b * per;
    const bool narrow = SG_NARROW(per);
    T mx = 0;
    for (int64_t e = lane; e < per; e += 32) {
        bool in = true;
        if (lower) {
            const int64_t j = narrow ? (int64_t)((uint32_t)e / (uint32_t)rows) : e / rows;
            in = e - j * rows >= j;
        }
        if (in) mx = nan_max(fabs(a[e]), mx);
    }
    mx = __shfl_sync(0xffffffffu, warp_max(mx), 0);
    int sh = 0;
    if (!isfinite(mx)) {
        sh = SG_RANGE_BAD;
    } else if (mx > 0) {
        const int e = sg_ilogb(mx);
        if (e > (int)SgRange<T>::EXP || e < -(int)SgRange<T>::EXP) sh = e;
    }
    if (lane == 0) ex[b] = sh;
    if (sh)
        for (int64_t e = lane; e < per; e += 32) a[e] = sh == SG_RANGE_BAD ? T(0) : sg_scalbn(a[e], -sh);
}

/* After the solver, matrix b (one warp): values W (k per matrix) ×2^ex[b]; for ex[b] = SG_RANGE_BAD,
   info[b] = SG_RANGE_BAD and NaN into W and into the vectors X1 (per1 elements per matrix) and X2 (per2;
   either may be NULL); a value that overflows: info[b] = SG_RANGE_OVER unless the solver set it. */
template <class T>
__global__ void k_range_unscale(T *W, int64_t k, T *X1, int64_t per1, T *X2, int64_t per2, int64_t nb, const int *ex,
                                int *info)
{
    const int lane = threadIdx.x & 31;
    const int64_t b = (int64_t)blockIdx.x * SG_RANGE_MATS + (threadIdx.x >> 5);
    if (b >= nb) return;
    const int e = ex[b];
    if (e == 0) return;
    const bool bad = e == SG_RANGE_BAD;
    if (bad && lane == 0) info[b] = SG_RANGE_BAD;
    const T nan = sg_nan(T(0));
    T over = 0; /* 1 where a finite value became infinite */
    for (int64_t i = lane; i < k; i += 32) {
        const T w = W[b * k + i], u = bad ? nan : sg_scalbn(w, e);
        W[b * k + i] = u;
        if (!bad && isfinite(w) && !isfinite(u)) over = 1;
    }
    if (!bad) {
        over = warp_max(over);
        if (lane == 0 && over > 0 && info[b] == 0) info[b] = SG_RANGE_OVER;
        return;
    }
    if (X1)
        for (int64_t i = lane; i < per1; i += 32) X1[b * per1 + i] = nan;
    if (X2)
        for (int64_t i = lane; i < per2; i += 32) X2[b * per2 + i] = nan;
}

/* Jordan–Wielandt matrix H = [[0, A], [Aᵀ, 0]] (N = m+n, packed N×N) from packed m×n A.
   Eigenpairs of H: ±σ_i with [u_i; ±v_i]/√2, plus |m−n| zeros. Both triangles are filled. */
template <class T> __global__ void k_jw_build(const T *A, int64_t m, int64_t n, T *H, int64_t nb)
{
    const int64_t N = m + n, per = N * N, total = per * nb;
    const bool narrow = SG_NARROW(total);
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t b, j, i;
        sg_split3(e, N, per, narrow, &b, &j, &i);
        const T *a = A + b * m * n;
        T v = 0;
        if (i < m && j >= m) v = a[i + (j - m) * m];       /* top right: A(i, j−m) */
        else if (i >= m && j < m) v = a[j + (i - m) * m];  /* bottom left: Aᵀ(i−m, j) = A(j, i−m) */
        H[e] = v;
    }
}

/* Orthonormal basis Q (d×t, ld d) from candidate vectors: rows [off, off+d) of the eigenvector columns of
   Z (N×N), taken in descending-eigenvalue order, classical Gram–Schmidt twice, a candidate kept when its
   residual² exceeds 1/(2N). Why this completes: any d rows of an orthogonal Z are orthonormal rows, so the
   residual² of all N candidates against a accepted vectors sums to d − a ≥ 1; the rejected ones contribute
   at most N·1/(2N) = ½, so some candidate still exceeds the threshold until a = d.
   For well separated σ the first candidates are [u;v]/√2 and are kept in order (column i ↔ σ_i);
   near-zero σ give mixed vectors, and the completion is the orthogonal complement of the accurate part,
   which is exactly the (numerical) null space. Returns the number of columns produced. */
template <class T>
__device__ int64_t jw_basis(const T *Z, int64_t N, int64_t off, int64_t d, int64_t t, T *Q, T *w, T *h, T *red)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const T thr = (T)0.5 / (T)N;
    int64_t a = 0;
    for (int64_t c = 0; c < N && a < t; c++) {
        const T *z = Z + (N - 1 - c) * N + off;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) w[i] = z[i];
        __syncthreads();
        for (int pass = 0; pass < 2 && a > 0; pass++) {
            for (int64_t j = warp; j < a; j += nw) { /* h = Qᵀw, one warp per column: coalesced */
                T acc = 0;
                for (int64_t i = lane; i < d; i += 32) acc += Q[i + j * d] * w[i];
                acc = warp_sum(acc);
                if (lane == 0) h[j] = acc;
            }
            __syncthreads();
            for (int64_t i = threadIdx.x; i < d; i += blockDim.x) { /* w −= Q h, one thread per row */
                T acc = 0;
                for (int64_t j = 0; j < a; j++) acc += Q[i + j * d] * h[j];
                w[i] -= acc;
            }
            __syncthreads();
        }
        T part = 0;
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) part += w[i] * w[i];
        T nrm2 = block_sum(part, red);
        if (nrm2 > thr) {
            T inv = (T)1 / sqrt(nrm2);
            for (int64_t i = threadIdx.x; i < d; i += blockDim.x) Q[i + a * d] = w[i] * inv;
            a++;
        }
        __syncthreads(); /* Q column visible, w free */
    }
    for (int64_t j = a; j < t; j++) /* only on failure: leave no garbage */
        for (int64_t i = threadIdx.x; i < d; i += blockDim.x) Q[i + j * d] = 0;
    return a;
}

/* Dynamic shared memory of k_jw_extract (staging w, h: d = max(m,n) each, red: 32); 0 when no basis is
   wanted. Shared with the emulator test. */
template <class T> inline size_t jw_extract_smem(int64_t m, int64_t n, bool basis)
{
    return basis ? sg_smem_round(sizeof(T) * (size_t)(2 * (m > n ? m : n) + 32)) : 0;
}

/* One block per matrix: S (descending, clamped at 0, NaN kept) from the top k eigenvalues of H, U (m×tU) and
   V (n×tV) from its eigenvectors (tU, tV = 0: not wanted). Basis failure → info = N+1 (reported as non-convergence)
   unless the eigensolver already failed on this matrix. */
template <class T>
__global__ void k_jw_extract(const T *Z, const T *Wv, int64_t m, int64_t n, T *S, T *U, int64_t tU, T *V,
                             int64_t tV, int *info)
{
    SG_DYN_SMEM(smem_raw);
    int64_t b = blockIdx.x, N = m + n, k = m < n ? m : n, d = m > n ? m : n;
    T *w = (T *)smem_raw, *h = w + d, *red = h + d;
    const T *Zb = Z + b * N * N, *Wb = Wv + b * N;
    for (int64_t i = threadIdx.x; i < k; i += blockDim.x) {
        T s = Wb[N - 1 - i];
        S[b * k + i] = s < (T)0 ? (T)0 : s; /* a NaN stays NaN (input check off) */
    }
    int ok = 1;
    if (tV > 0) ok &= jw_basis(Zb, N, m, n, tV, V + b * n * tV, w, h, red) == tV;
    if (tU > 0) ok &= jw_basis(Zb, N, 0, m, tU, U + b * m * tU, w, h, red) == tU;
    if (!ok && threadIdx.x == 0 && info[b] == 0) info[b] = (int)(N + 1);
}

/* ---- QR first: the SVD path for min(m,n) ≤ 32 < max(m,n) (svd_qr_run in cuda/linalg.cu) ------------------
   The tall d×k matrix (A, or Aᵀ for wide A; k ≤ 32 < d) is factored by Householder QR, the k×k R goes to
   gesvdjBatched, and k_qr_apply forms Q·[[C,0],[0,I]] (C = U_R) for the output columns wanted.
   Launch shapes (shared with tests/test_kernel_emu.cpp): nb blocks (one per matrix) × qr_threads(), dynamic
   shared memory qr_smem / qr_apply_smem, none of it depending on d. */
#define SG_QR_MAXK 32 /* most columns k_qr handles (w[] below) */
#define SG_QR_TILE 32 /* output columns per pass of k_qr_apply */
inline unsigned qr_threads() { return SG_BLOCK; }
template <class T> inline size_t qr_smem() { return sg_smem_round(sizeof(T) * (size_t)(32 + SG_QR_MAXK)); } /* red, w */
template <class T> inline size_t qr_apply_smem() { return sg_smem_round(sizeof(T) * (size_t)SG_QR_TILE); } /* w */

/* Y[j:, 0:nc] −= tau·v (vᵀ Y[j:, 0:nc]) for nc columns of Y (ld d), v = [1; x[j+1:d]] (LAPACK dlarf, the
   1 implied). Dots one warp per column into w[0:nc], then the update one thread per row. Ends with a
   barrier: the next reflector reads rows other threads updated, and w is free again. Callers skip
   tau = 0 uniformly over the block. */
template <class T>
__device__ void householder_left(const T *x, T tj, int64_t j, int64_t d, T *Y, int64_t nc, T *w)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int64_t c = warp; c < nc; c += nw) {
        const T *y = Y + c * d;
        T acc = 0;
        for (int64_t i = j + lane; i < d; i += 32) acc += (i == j ? (T)1 : x[i]) * y[i];
        acc = warp_sum(acc);
        if (lane == 0) w[c] = tj * acc;
    }
    __syncthreads();
    for (int64_t i = j + threadIdx.x; i < d; i += blockDim.x) {
        const T vi = i == j ? (T)1 : x[i];
        for (int64_t c = 0; c < nc; c++) Y[i + c * d] -= w[c] * vi;
    }
    __syncthreads();
}

/* One block per matrix: Householder QR of the packed d×k matrix W (k ≤ SG_QR_MAXK), LAPACK dgeqr2 layout:
   R on and above the diagonal, reflector j's v below it (v_j = 1 implicit), H_j = I − tau_j v vᵀ,
   Q = H_0 H_1 … H_{k−1}. The input is A (packed d×k) or, trans = 1, Aᵀ of a packed k×d A; A may be W
   when trans = 0 (in place). Also writes R packed k×k with zeros below the diagonal (gesvdj's input).
   Reflectors as dlarfg: x = W[j:, j], alpha = x_0; the norm is scaled by max|x| (no overflow or underflow
   of the squares, f32 included); x below alpha all zero (zero or exhausted column: rank deficiency) →
   tau = 0, H = I, R_jj = alpha; else beta = −sign(alpha)·‖x‖, tau = (beta − alpha)/beta ∈ [1, 2],
   v = x/(alpha − beta) (|v_i| ≤ 1), R_jj = beta, all computed in units of max|x| (dlarfg rescales tiny
   columns for the same reason: a denormal beta would leave tau and v inconsistent, H not orthogonal); a NaN
   or Inf in x → tau = R_jj = NaN, which the rest of R and Q then carry. Column j: two block reductions (max,
   sum of squares), then householder_left on the trailing columns (w_c = tau·vᵀW[j:, c] one warp per column,
   the rank-1 update one thread per row). CPU equivalent: LAPACKE_dgeqrf (same R up to rounding, same signs
   convention). */
template <class T> __global__ void k_qr(const T *A, int trans, T *Wq, T *tau, T *R, int64_t d, int64_t k)
{
    SG_DYN_SMEM(smem_raw);
    T *red = (T *)smem_raw, *w = red + 32;
    const int64_t b = blockIdx.x;
    T *W = Wq + b * d * k;
    const T *Ab = A + b * d * k;
    if (trans || Ab != W) {
        for (int64_t e = threadIdx.x; e < d * k; e += blockDim.x) {
            int64_t j = e / d, i = e - j * d;
            W[e] = trans ? Ab[j + i * k] : Ab[e]; /* Aᵀ(i, j) = A(j, i), A k×d */
        }
        __syncthreads();
    }
    for (int64_t j = 0; j < k; j++) {
        T *x = W + j * d;
        const T alpha = x[j]; /* read by every thread before the barriers of block_max; written after them */
        T part = 0;
        for (int64_t i = j + threadIdx.x; i < d; i += blockDim.x) part = nan_max(fabs(x[i]), part);
        const T scale = block_max(part, red);
        T ssq = 0;
        if (scale > (T)0) { /* uniform over the block */
            part = 0;
            for (int64_t i = j + 1 + threadIdx.x; i < d; i += blockDim.x) {
                T t = x[i] / scale;
                part += t * t;
            }
            ssq = block_sum(part, red);
        }
        T tj = 0, beta = alpha;
        if (!isfinite(scale)) {
            /* NaN/Inf in the column (CUDA with the input check off): NaN for R_jj and tau, so the trailing
               columns, R and Q carry it, instead of skipping the column as exhausted (ssq is NaN) */
            tj = beta = scale - scale;
        } else if (ssq > (T)0) {
            /* in units of scale (normal range even when x is denormal, as in an exhausted column): beta·scale
               alone may round to a denormal with few bits; tau and v from it would make H non-orthogonal */
            const T a = alpha / scale, nrm = sqrt(a * a + ssq), bs = a >= (T)0 ? -nrm : nrm;
            tj = (bs - a) / bs;
            const T den = a - bs; /* |den| ≥ |bs| ≥ 1 ≥ |x_i|/scale: v is bounded by 1 */
            for (int64_t i = j + 1 + threadIdx.x; i < d; i += blockDim.x) x[i] = x[i] / scale / den;
            beta = bs * scale;
        }
        if (threadIdx.x == 0) {
            x[j] = beta;
            tau[b * k + j] = tj;
        }
        __syncthreads(); /* v, R_jj visible */
        if (tj != (T)0) /* the trailing columns: W[j:, j+1:k] (w slots stay indexed by column); NaN too */
            householder_left(W + j * d, tj, j, d, W + (j + 1) * d, k - j - 1, w + j + 1);
    }
    T *Rb = R + b * k * k;
    for (int64_t e = threadIdx.x; e < k * k; e += blockDim.x) {
        int64_t j = e / k, i = e - j * k;
        Rb[e] = i <= j ? W[i + j * d] : (T)0;
    }
}

/* One block per matrix: Out (packed d×oc, oc ≤ d) = Q·[[C, 0], [0, I]][:, 0:oc], Q = H_0 … H_{k−1} from
   k_qr (Wq d×k reflectors, tau k), C packed k×k (ld k). Column c of the initial matrix is C[:, c] padded
   with zeros for c < k, else e_c; the reflectors are applied last to first (LAPACK dorm2r / dorg2r order),
   SG_QR_TILE output columns per pass, so shared memory does not grow with d or oc. Tall A: U = Q[U_R; 0]
   (oc = k) or the full m×m U (oc = m); wide A: the same for V. CPU equivalent: LAPACKE_dormqr('L','N'). */
template <class T>
__global__ void k_qr_apply(const T *Wq, const T *tau, const T *C, T *Out, int64_t d, int64_t k, int64_t oc)
{
    SG_DYN_SMEM(smem_raw);
    T *w = (T *)smem_raw;
    const int64_t b = blockIdx.x;
    const T *W = Wq + b * d * k, *tb = tau + b * k, *Cb = C + b * k * k;
    T *O = Out + b * d * oc;
    for (int64_t c0 = 0; c0 < oc; c0 += SG_QR_TILE) {
        const int64_t nc = oc - c0 < SG_QR_TILE ? oc - c0 : SG_QR_TILE;
        for (int64_t c = c0; c < c0 + nc; c++)
            for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
                O[i + c * d] = c < k ? (i < k ? Cb[i + c * k] : (T)0) : (i == c ? (T)1 : (T)0);
        __syncthreads();
        for (int64_t j = k - 1; j >= 0; j--) {
            const T tj = tb[j];
            if (tj == (T)0) continue; /* H_j = I (uniform over the block) */
            householder_left(W + j * d, tj, j, d, O + c0 * d, nc, w);
        }
    }
}

/* rank = #{σ > tol} (sg_sv_counts: a NaN σ counts), tol = sg_tols_cut(t, b, σ_0, max(m,n), eps) (S
   descending: σ_0 = σmax, as the CPU path; t's arrays, if any, hold this chunk's slice). Writes rank and/or
   ncols − rank (nullity). */
template <class T>
__global__ void k_rank(const T *S, int64_t k, int64_t nb, sg_tols t, long long maxmn, double eps, int64_t ncols,
                       int64_t *rank, int64_t *nullity)
{
    int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (b >= nb) return;
    const T *s = S + b * k;
    double tol = sg_tols_cut(t, b, (double)s[0], maxmn, eps);
    int64_t r = 0;
    while (r < k && sg_sv_counts((double)s[r], tol)) r++;
    if (rank) rank[b] = r;
    if (nullity) nullity[b] = ncols - r;
}

/* N[:, 0:n−r] = V[:, r:n], remaining columns 0 (CPU: nullspace). V, N packed n×n. */
template <class T> __global__ void k_null_gather(const T *V, const int64_t *rank, T *Nout, int64_t n, int64_t nb)
{
    const int64_t per = n * n, total = per * nb;
    const bool narrow = SG_NARROW(total);
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t b, j, i;
        sg_split3(e, n, per, narrow, &b, &j, &i);
        const int64_t r = rank[b];
        Nout[e] = j < n - r ? V[b * per + i + (r + j) * n] : (T)0;
    }
}

/* Dynamic shared memory of k_project: one column of X and its coefficients (n each). Shared with the test. */
template <class T> inline size_t project_smem(int64_t n) { return sg_smem_round(sizeof(T) * (size_t)(2 * n)); }

/* chk (inputs known finite): a non-finite y is an overflow (X near the largest value; P is orthogonal), so
   *info = SG_PROJ_OVER where no solver status is there. Every writer stores the same value. */
template <class T> __device__ inline T proj_out(T y, int chk, int *info)
{
    if (chk && !isfinite(y) && *info == 0) *info = SG_PROJ_OVER;
    return y;
}

/* Block-wide Y = B Bᵀ X (sub: X − B Bᵀ X) for one matrix, B n×nc with column stride n, X/Y n×kx packed.
   Shared memory xs, h: n each (nc <= n). Each column of X is read into shared memory before its Y column is
   written, so Y may be X. chk, info: proj_out. */
template <class T>
__device__ void project_cols(const T *B, int64_t nc, bool sub, const T *Xb, T *Yb, int64_t n, int64_t kx, T *xs, T *h,
                             int chk, int *info)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int64_t c = 0; c < kx; c++) {
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) xs[i] = Xb[i + c * n];
        __syncthreads();
        for (int64_t j = warp; j < nc; j += nw) {
            T acc = 0;
            for (int64_t i = lane; i < n; i += 32) acc += B[i + j * n] * xs[i];
            acc = warp_sum(acc);
            if (lane == 0) h[j] = acc;
        }
        __syncthreads();
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            T acc = 0;
            for (int64_t j = 0; j < nc; j++) acc += B[i + j * n] * h[j];
            Yb[i + c * n] = proj_out(sub ? xs[i] - acc : acc, chk, info);
        }
        __syncthreads();
    }
}

/* One block per matrix: Y = P X, P onto the row space (V_r V_rᵀ) or null space (I − V_r V_rᵀ), V packed
   n×n orthonormal. Uses whichever of V_r (r columns) or V_null (n−r) is smaller: P_row = I − P_null. */
template <class T>
__global__ void k_project(const T *V, const int64_t *rank, const T *X, T *Y, int64_t n, int64_t kx, int row, int chk,
                          int *info)
{
    SG_DYN_SMEM(smem_raw);
    T *xs = (T *)smem_raw;
    int64_t b = blockIdx.x, r = rank[b];
    bool use_r = r <= n - r;
    bool sub = (row != 0) != use_r; /* y = x − P_basis x, else y = P_basis x */
    project_cols<T>(V + b * n * n + (use_r ? 0 : r) * n, use_r ? r : n - r, sub, X + b * n * kx, Y + b * n * kx, n,
                    kx, xs, xs + n, chk, info + b);
}

/* sg_project_basis, Y = Q Qᵀ X or X − Q Qᵀ X with Q n×q packed. k_project_basis_tile stages whole matrices
   in shared memory, so every element of Q, X and Y moves once between HBM and the SM (the bandwidth-bound
   case): g matrices per block when one matrix's Q, X and H = QᵀX fit in SG_PB_TILE_SMEM; else one matrix
   per block with Q staged once and X, H in chunks of kc columns (contiguous in the packed layout), while Q
   and one column fit in SG_PB_BIG_SMEM (and the device's limit). Beyond that k_project_basis_one runs
   project_cols, one block per matrix, Q read from global (L2) once per column of X.
   Both kernels write Y (user memory) only when no pending NaN/Inf scan flag is set (skip, nskip), so the
   device path needs no staged copy of Y (sg_scan_failed). */
#define SG_PB_TILE_SMEM (24 * 1024) /* g > 1: several blocks per SM */
#define SG_PB_BIG_SMEM (96 * 1024)  /* g = 1: two blocks per SM on H100/H200 (227 KB) */
#define SG_PB_TILE_OUT 2048         /* outputs per block g aims for (8 per thread at SG_BLOCK = 256) */
/* Each thread of the tile kernel accumulates SG_PB_TR × SG_PB_TC outputs of a product, reading TR + TC
   shared values per TR·TC multiply-adds. One output per thread read 2 per multiply-add and was bound by
   shared-memory bandwidth at 1/8 of the FMA rate (5.2 TFLOP/s f32 at n = 64 on an H200, 10 % of the
   bandwidth floor). A tile's rows are strided (row t + u·tiles), so a warp's lanes take consecutive rows:
   conflict-free shared reads with the odd leading dimensions below, coalesced stores of Y. */
#define SG_PB_TR 4
#define SG_PB_TC 2
/* Leading dimension of Q, X (n rows) and H (q rows) in shared memory: odd, so the threads of a warp that read
   different columns at the same row hit different banks (a stride of 8, 16, 32 would serialise them). */
__host__ __device__ inline int64_t project_basis_ld(int64_t rows) { return rows | 1; }
/* Plan shared with linalg.cu and the test: returns 1 for the tile kernel (g matrices per block, kc columns
   of X per step; g > 1 only with kc = kx), 0 for one matrix per block; *smem = dynamic shared memory bytes
   of the launch; max_smem = the device's per-block opt-in limit. */
template <class T>
inline int project_basis_plan(int64_t n, int64_t q, int64_t kx, size_t max_smem, int64_t *g, int64_t *kc, size_t *smem)
{
    const int64_t ld = project_basis_ld(n), lh = project_basis_ld(q);
    const size_t s = sizeof(T), per = sg_smem_round(s * (size_t)(ld * q + ld * kx + lh * kx));
    *g = 1;
    *kc = kx;
    max_smem &= ~(size_t)15; /* sizes are multiples of 16 (sg_smem_round) */
    if (per <= SG_PB_TILE_SMEM && per <= max_smem) {
        int64_t by_smem = (int64_t)(SG_PB_TILE_SMEM / per), by_out = (SG_PB_TILE_OUT + n * kx - 1) / (n * kx);
        *g = by_smem < by_out ? by_smem : by_out;
        if (*g < 1) *g = 1;
        *smem = per * (size_t)*g;
        return 1;
    }
    const size_t cap = max_smem < SG_PB_BIG_SMEM ? max_smem : SG_PB_BIG_SMEM, qb = s * (size_t)(ld * q),
                 col = s * (size_t)(ld + lh);
    if (qb + col <= cap) {
        int64_t c = (int64_t)((cap - qb) / col);
        *kc = c < kx ? c : kx;
        *smem = sg_smem_round(qb + col * (size_t)*kc); /* ≤ cap: cap is a multiple of 16 */
        return 1;
    }
    *smem = sg_smem_round(s * (size_t)(2 * n));
    return 0;
}

/* acc[u][v] += Σ_k A[ao[u] + k·as] · B[bo[v] + k·bs], k < len: one thread's tile of a product, operands in
   shared memory. */
template <class T>
__device__ inline void pb_tile_mac(const T *A, const int *ao, int as, const T *B, const int *bo, int bs, int len,
                                   T (&acc)[SG_PB_TR][SG_PB_TC])
{
    for (int k = 0; k < len; k++) {
        T a[SG_PB_TR], b[SG_PB_TC];
        for (int u = 0; u < SG_PB_TR; u++) a[u] = A[ao[u] + k * as];
        for (int v = 0; v < SG_PB_TC; v++) b[v] = B[bo[v] + k * bs];
        for (int u = 0; u < SG_PB_TR; u++)
            for (int v = 0; v < SG_PB_TC; v++) acc[u][v] += a[u] * b[v];
    }
}

template <class T>
__global__ void k_project_basis_tile(const T *Q, const T *X, T *Y, int64_t n_, int64_t q_, int64_t kx, int64_t nb,
                                     int64_t g, int64_t kc_, int sub, const unsigned long long *skip, int nskip,
                                     int chk, int *info)
{
    if (sg_scan_failed(skip, nskip)) return;
    SG_DYN_SMEM(smem_raw);
    /* what a block stages fits in its shared memory: 32-bit indices inside it, and no divisions per element
       (SgWalk); offsets into the batch stay 64-bit. */
    const int64_t b0 = blockIdx.x * g, nx = n_ * kx;
    const int n = (int)n_, q = (int)q_, kc = (int)kc_, ld = (int)project_basis_ld(n_), lh = (int)project_basis_ld(q_);
    const int nq = n * q, sq = ld * q, sx = ld * kc, sh = lh * kc; /* per-matrix strides of Qs, Xs, Hs */
    const int gm = (int)(nb - b0 < g ? nb - b0 : g), tq = (q + SG_PB_TR - 1) / SG_PB_TR, tn = (n + SG_PB_TR - 1) / SG_PB_TR;
    T *Qs = (T *)smem_raw, *Xs = Qs + g * sq, *Hs = Xs + g * sx;
    const T *Qg = Q + b0 * nq;
    SgWalk lq(threadIdx.x, blockDim.x, n, q); /* coalesced read, padded store */
    for (int e = threadIdx.x; e < gm * nq; e += blockDim.x, lq.next()) Qs[lq.mt * sq + lq.c * ld + lq.i] = Qg[e];
    for (int64_t c0 = 0; c0 < kx; c0 += kc) {
        const int w = (int)(kx - c0 < kc ? kx - c0 : kc), tw = (w + SG_PB_TC - 1) / SG_PB_TC;
        const T *Xg = X + b0 * nx + c0 * n_;
        T *Yg = Y + b0 * nx + c0 * n_;
        SgWalk lx(threadIdx.x, blockDim.x, n, w);
        for (int e = threadIdx.x; e < gm * n * w; e += blockDim.x, lx.next())
            Xs[lx.mt * sx + lx.c * ld + lx.i] = Xg[lx.mt * nx + lx.c * n + lx.i];
        __syncthreads(); /* this chunk of X is in shared memory before any of its Y is written: Y may be X */
        SgWalk th(threadIdx.x, blockDim.x, tq, tw); /* H = Qᵀ X, q×w per matrix: rows j, columns c */
        for (int e = threadIdx.x; e < gm * tq * tw; e += blockDim.x, th.next()) {
            const T *qs = Qs + th.mt * sq, *xs = Xs + th.mt * sx;
            int jo[SG_PB_TR], co[SG_PB_TC]; /* offsets of the tile's rows of Qᵀ, columns of X (clamped: reads stay
                                               inside the matrix; out-of-range results are not stored) */
            for (int u = 0; u < SG_PB_TR; u++) jo[u] = sg_imin(th.i + u * tq, q - 1) * ld;
            for (int v = 0; v < SG_PB_TC; v++) co[v] = sg_imin(th.c + v * tw, w - 1) * ld;
            T acc[SG_PB_TR][SG_PB_TC] = {};
            pb_tile_mac(qs, jo, 1, xs, co, 1, n, acc);
            T *hs = Hs + th.mt * sh;
            for (int u = 0; u < SG_PB_TR; u++)
                for (int v = 0; v < SG_PB_TC; v++) {
                    const int j = th.i + u * tq, c = th.c + v * tw;
                    if (j < q && c < w) hs[c * lh + j] = acc[u][v];
                }
        }
        __syncthreads();
        SgWalk ty(threadIdx.x, blockDim.x, tn, tw); /* Y = Q H (± X), n×w per matrix: rows i, columns c */
        for (int e = threadIdx.x; e < gm * tn * tw; e += blockDim.x, ty.next()) {
            const T *qs = Qs + ty.mt * sq, *hs = Hs + ty.mt * sh, *xs = Xs + ty.mt * sx;
            int io[SG_PB_TR], ho[SG_PB_TC];
            for (int u = 0; u < SG_PB_TR; u++) io[u] = sg_imin(ty.i + u * tn, n - 1);
            for (int v = 0; v < SG_PB_TC; v++) ho[v] = sg_imin(ty.c + v * tw, w - 1) * lh;
            T acc[SG_PB_TR][SG_PB_TC] = {};
            pb_tile_mac(qs, io, ld, hs, ho, 1, q, acc);
            T *yg = Yg + ty.mt * nx;
            for (int v = 0; v < SG_PB_TC; v++)
                for (int u = 0; u < SG_PB_TR; u++) {
                    const int i = ty.i + u * tn, c = ty.c + v * tw;
                    if (i < n && c < w)
                        yg[c * n + i] = proj_out(sub ? xs[c * ld + i] - acc[u][v] : acc[u][v], chk, info + b0 + ty.mt);
                }
        }
        __syncthreads(); /* the next chunk rewrites Xs and Hs */
    }
}

template <class T>
__global__ void k_project_basis_one(const T *Q, const T *X, T *Y, int64_t n, int64_t q, int64_t kx, int sub,
                                    const unsigned long long *skip, int nskip, int chk, int *info)
{
    if (sg_scan_failed(skip, nskip)) return;
    SG_DYN_SMEM(smem_raw);
    T *xs = (T *)smem_raw;
    int64_t b = blockIdx.x;
    project_cols<T>(Q + b * n * q, q, sub != 0, X + b * n * kx, Y + b * n * kx, n, kx, xs, xs + n, chk, info + b);
}

/* One block per matrix: X = V_r Σ_r⁻¹ U_rᵀ B (minimum-norm least squares). U packed m×k, V packed n×k,
   S k, B m×kb, X n×kb. Shared memory: h (k elements) only, so m is not limited by it. X may alias B when
   m == n: column c of X is column c of B, read completely (h = U_rᵀ b_c) before the barrier that precedes
   its writes, and later columns of B are other memory. chk (inputs known finite): a non-finite X is an
   overflow (a large B over a small σ above the tolerance), info[b] = SG_LSTSQ_OVER where it is 0; the
   CPU's lstsq checks the same. */
template <class T> inline size_t lstsq_smem(int64_t k) { return sg_smem_round(sizeof(T) * (size_t)k); } /* shared with the test */
template <class T>
__global__ void k_lstsq(const T *U, const T *S, const T *V, const int64_t *rank, const T *B, T *X, int64_t m,
                        int64_t n, int64_t k, int64_t kb, int chk, int *info)
{
    SG_DYN_SMEM(smem_raw);
    T *h = (T *)smem_raw;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int64_t b = blockIdx.x, r = rank[b];
    const T *Ub = U + b * m * k, *Vb = V + b * n * k, *Sb = S + b * k, *Bb = B + b * m * kb;
    T *Xb = X + b * n * kb;
    int over = 0;
    for (int64_t c = 0; c < kb; c++) {
        const T *bc = Bb + c * m;
        for (int64_t j = warp; j < r; j += nw) {
            T acc = 0;
            for (int64_t i = lane; i < m; i += 32) acc += Ub[i + j * m] * bc[i];
            acc = warp_sum(acc);
            if (lane == 0) h[j] = acc / Sb[j];
        }
        __syncthreads();
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            T acc = 0;
            for (int64_t j = 0; j < r; j++) acc += Vb[i + j * n] * h[j];
            Xb[i + c * n] = acc;
            over |= !isfinite(acc);
        }
        __syncthreads();
    }
    if (__syncthreads_or(chk && over) && threadIdx.x == 0 && info[b] == 0) info[b] = SG_LSTSQ_OVER;
}

#endif

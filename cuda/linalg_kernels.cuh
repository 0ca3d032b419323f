/* Device code of the forward path (included by cuda/linalg.cu only; also compiled as host C++ by the
   CUDA-on-CPU emulation test, tests/test_kernel_emu.cpp through tests/emu/cuda_emu.h).
   Each kernel sits next to the CPU semantics it reproduces. Matrices are packed column-major unless a
   kernel says otherwise. Launch shapes (grid, block, dynamic shared memory) are set by the host code in
   cuda/linalg.cu; the emulation test mirrors them. */
#ifndef SG_LINALG_KERNELS_CUH
#define SG_LINALG_KERNELS_CUH

#include "formulas.h" /* sg_tol_rule */
#include <stdint.h>

/* Dynamic shared memory of a kernel: on the GPU exactly `extern __shared__ __align__(16) unsigned char
   name[]`. The CUDA-on-CPU emulation (tests/emu/cuda_emu.h) defines it first, binding name to a buffer of
   exactly the launch's byte count, so that reads past it are caught by ASan/valgrind (an extern array
   declaration cannot be bound to a per-launch allocation). */
#ifndef SG_DYN_SMEM
#define SG_DYN_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

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

/* Copy a batch of rows×cols matrices between two strided column-major layouts (pack / unpack).
   CPU equivalent: for b, j, i: dst[b*dst_st + i + j*dld] = src[b*sst + i + j*sld]. src may equal dst
   with the same layout (each thread reads its element before writing it), hence no __restrict__. */
template <class T>
__global__ void k_copy(const T *src, int64_t sld, int64_t sst, T *dst, int64_t dld, int64_t dst_st, int64_t rows,
                       int64_t cols, int64_t nb)
{
    int64_t per = rows * cols, total = per * nb;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t b = e / per, r = e - b * per, j = r / rows, i = r - j * rows;
        dst[b * dst_st + i + j * dld] = src[b * sst + i + j * sld];
    }
}

/* NaN/Inf scan: *first = smallest packed index b*rows*cols + j*rows + i of a non-finite element
   (CPU: sg_check_finite_host, which reports the first offending matrix). */
template <class T>
__global__ void k_nonfinite(const T *x, int64_t ld, int64_t st, int64_t rows, int64_t cols, int64_t nb,
                            unsigned long long *first)
{
    int64_t per = rows * cols, total = per * nb;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t b = e / per, r = e - b * per, j = r / rows, i = r - j * rows;
        if (!isfinite(x[b * st + i + j * ld])) atomicMin(first, (unsigned long long)e);
    }
}

/* Jordan–Wielandt matrix H = [[0, A], [Aᵀ, 0]] (N = m+n, packed N×N) from packed m×n A.
   Eigenpairs of H: ±σ_i with [u_i; ±v_i]/√2, plus |m−n| zeros. Both triangles are filled. */
template <class T> __global__ void k_jw_build(const T *A, int64_t m, int64_t n, T *H, int64_t nb)
{
    int64_t N = m + n, per = N * N, total = per * nb;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t b = e / per, r = e - b * per, j = r / N, i = r - j * N;
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

/* One block per matrix: S (descending, clamped at 0) from the top k eigenvalues of H, U (m×tU) and V (n×tV)
   from its eigenvectors (tU, tV = 0: not wanted). Basis failure → info = N+1 (reported as non-convergence)
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
        S[b * k + i] = s > (T)0 ? s : (T)0;
    }
    int ok = 1;
    if (tV > 0) ok &= jw_basis(Zb, N, m, n, tV, V + b * n * tV, w, h, red) == tV;
    if (tU > 0) ok &= jw_basis(Zb, N, 0, m, tU, U + b * m * tU, w, h, red) == tU;
    if (!ok && threadIdx.x == 0 && info[b] == 0) info[b] = (int)(N + 1);
}

/* rank = #{σ > tol}, tol = sg_tol_rule(atol, rtol, σ_0, max(m,n), eps) (S descending: σ_0 = σmax, as the
   CPU path). Writes rank and/or ncols − rank (nullity). */
template <class T>
__global__ void k_rank(const T *S, int64_t k, int64_t nb, double atol, double rtol, long long maxmn, double eps,
                       int64_t ncols, int64_t *rank, int64_t *nullity)
{
    int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    if (b >= nb) return;
    const T *s = S + b * k;
    double tol = sg_tol_rule(atol, rtol, (double)s[0], maxmn, eps);
    int64_t r = 0;
    while (r < k && (double)s[r] > tol) r++;
    if (rank) rank[b] = r;
    if (nullity) nullity[b] = ncols - r;
}

/* N[:, 0:n−r] = V[:, r:n], remaining columns 0 (CPU: nullspace). V, N packed n×n. */
template <class T> __global__ void k_null_gather(const T *V, const int64_t *rank, T *Nout, int64_t n, int64_t nb)
{
    int64_t per = n * n, total = per * nb;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t b = e / per, rr = e - b * per, j = rr / n, i = rr - j * n, r = rank[b];
        Nout[e] = j < n - r ? V[b * per + i + (r + j) * n] : (T)0;
    }
}

/* One block per matrix: Y = P X, P onto the row space (V_r V_rᵀ) or null space (I − V_r V_rᵀ), V packed
   n×n orthonormal. Uses whichever of V_r (r columns) or V_null (n−r) is smaller: P_row = I − P_null.
   Each column of X is read into shared memory before its Y column is written, so Y may be X. */
template <class T>
__global__ void k_project(const T *V, const int64_t *rank, const T *X, T *Y, int64_t n, int64_t kx, int row)
{
    SG_DYN_SMEM(smem_raw);
    T *xs = (T *)smem_raw, *h = xs + n;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int64_t b = blockIdx.x, r = rank[b];
    const T *Vb = V + b * n * n, *Xb = X + b * n * kx;
    T *Yb = Y + b * n * kx;
    bool use_r = r <= n - r;
    int64_t c0 = use_r ? 0 : r, nc = use_r ? r : n - r;
    bool sub = (row != 0) != use_r; /* y = x − P_basis x, else y = P_basis x */
    for (int64_t c = 0; c < kx; c++) {
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) xs[i] = Xb[i + c * n];
        __syncthreads();
        for (int64_t j = warp; j < nc; j += nw) {
            T acc = 0;
            for (int64_t i = lane; i < n; i += 32) acc += Vb[i + (c0 + j) * n] * xs[i];
            acc = warp_sum(acc);
            if (lane == 0) h[j] = acc;
        }
        __syncthreads();
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            T acc = 0;
            for (int64_t j = 0; j < nc; j++) acc += Vb[i + (c0 + j) * n] * h[j];
            Yb[i + c * n] = sub ? xs[i] - acc : acc;
        }
        __syncthreads();
    }
}

/* One block per matrix: X = V_r Σ_r⁻¹ U_rᵀ B (minimum-norm least squares). U packed m×k, V packed n×k,
   S k, B m×kb, X n×kb. B's column is staged in shared memory first, so X may alias B when m == n. */
template <class T>
__global__ void k_lstsq(const T *U, const T *S, const T *V, const int64_t *rank, const T *B, T *X, int64_t m,
                        int64_t n, int64_t k, int64_t kb)
{
    SG_DYN_SMEM(smem_raw);
    T *bs = (T *)smem_raw, *h = bs + m;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    int64_t b = blockIdx.x, r = rank[b];
    const T *Ub = U + b * m * k, *Vb = V + b * n * k, *Sb = S + b * k, *Bb = B + b * m * kb;
    T *Xb = X + b * n * kb;
    for (int64_t c = 0; c < kb; c++) {
        for (int64_t i = threadIdx.x; i < m; i += blockDim.x) bs[i] = Bb[i + c * m];
        __syncthreads();
        for (int64_t j = warp; j < r; j += nw) {
            T acc = 0;
            for (int64_t i = lane; i < m; i += 32) acc += Ub[i + j * m] * bs[i];
            acc = warp_sum(acc);
            if (lane == 0) h[j] = acc / Sb[j];
        }
        __syncthreads();
        for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
            T acc = 0;
            for (int64_t j = 0; j < r; j++) acc += Vb[i + j * n] * h[j];
            Xb[i + c * n] = acc;
        }
        __syncthreads();
    }
}

#endif

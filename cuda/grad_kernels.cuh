/* Device code of the spectral gradients (included by cuda/grad.cu only).
   Layout conventions: user matrices are column-major with (ld, batch stride); scratch matrices are dense
   (ld = rows, stride = rows*cols). Per-element formulas come from src/formulas.h so that CPU and GPU agree. */
#ifndef SG_GRAD_KERNELS_CUH
#define SG_GRAD_KERNELS_CUH

/* Only the shared formulas: this header is also compiled as host C++ by the CUDA-on-CPU emulation test
   (tests/test_kernel_emu.cpp through tests/emu/cuda_emu.h), which has no CUDA toolkit headers. */
#include "formulas.h" /* sg_inv_gap_*, sg_divdiff, sg_fn_*, SG_DM_* */
#include <stddef.h>
#include <stdint.h>

#include "kernel_common.cuh" /* SG_DYN_SMEM, sg_grid_capped */

namespace sggrad {

/* ---- per-element formulas, dispatched on the dtype ----------------------------------------------- */
__device__ __forceinline__ float inv_gap(float li, float lj, int lt, int mode, float param, float scale)
{
    return sg_inv_gap_s(li, lj, lt, mode, param, scale);
}
__device__ __forceinline__ double inv_gap(double li, double lj, int lt, int mode, double param, double scale)
{
    return sg_inv_gap_d(li, lj, lt, mode, param, scale);
}
/* 1/(xj² − xi²) with the difference formed first (σ's of the SVD backward). */
__device__ __forceinline__ float inv_gap_sq(float si, float sj, float sc, int lt, int mode, float param)
{
    return sg_inv_gap_s_sq(si, sj, sc, lt, mode, param);
}
__device__ __forceinline__ double inv_gap_sq(double si, double sj, double sc, int lt, int mode, double param)
{
    return sg_inv_gap_d_sq(si, sj, sc, lt, mode, param);
}

/* What a spectral-function kernel computes per eigenvalue (src/cpu_grad_impl.h: check_dom, matfunc, reg_eig). */
enum { SPF_CHECK = 0, /* domain only (matfunc backward pre-check, f and f')  */
       SPF_FVAL = 1,  /* d = f(λ)                  (matfunc forward)         */
       SPF_FDER = 2   /* d = f'(λ), loss Σ f(λ)    (Σ f(λ), log det = Σ log λ) */ };

/* Flag bits per matrix: a non-finite gap factor, an eigenvalue outside f's domain (or f, f' not finite
   in T), a non-finite output (F, gA, a loss). */
enum { FLAG_TIE = 1, FLAG_DOMAIN = 2, FLAG_NONFINITE = 4 };

/* ---- fused eigh / matfunc backward (n <= 64, one block per matrix, persistent grid) --------------- */
enum { FUSED_EIGH = 0, FUSED_MATFUNC = 1 };

template <typename T> struct FusedArgs {
    const T *W; int64_t sW;             /* eigenvalues: λ_i of matrix b at W[b*sW + i] */
    const T *V; int64_t ldV, sV;
    const T *gW; int64_t sgW;           /* eigh only, may be NULL (zero) */
    const T *G; int64_t ldG, sG;        /* gV (eigh, may be NULL) or gF (matfunc) */
    T *gA; int64_t ldA, sA;
    int n; int64_t batch;
    int mode; T param;                  /* eigh: degeneracy mode, defaulted param */
    int fkind; double fp, rel;          /* matfunc: function, exponent, divided-difference threshold
                                           (its domain was checked by k_spectral_fn beforehand) */
    int *flags;                         /* per matrix (always written), or NULL */
    const unsigned long long *skip = nullptr; /* a pending NaN/Inf scan's flags (sg_scan_failed: the kernel
                                                 writes neither outputs nor flags), or NULL */
    int nskip = 0;
};

/* C = op(A)·op(B) on P-strided shared tiles (element (i,k) of a stored matrix at X[i + k*P]).
   Thread t owns the TM×TM outputs (ti + r*Tn, tj + c*Tn), r,c < TM, with ti = t % Tn, tj = t / Tn:
   strided rather than contiguous rows so that a warp reads consecutive (or P-strided, P odd) words,
   free of bank conflicts. Rows/cols in [n, TM*Tn) are zero padding: read, never written. No barrier. */
template <typename T, int TM, bool TA, bool TB>
__device__ __forceinline__ void tile_mm(const T *__restrict__ A, const T *__restrict__ B, T *__restrict__ C,
                                        int n, int P, int Tn)
{
    const int t = threadIdx.x;
    if (t >= Tn * Tn) return;
    const int ti = t % Tn, tj = t / Tn;
    T acc[TM][TM];
#pragma unroll
    for (int r = 0; r < TM; r++)
#pragma unroll
        for (int c = 0; c < TM; c++) acc[r][c] = T(0);
    for (int k = 0; k < n; k++) {
        T a[TM], b[TM];
#pragma unroll
        for (int r = 0; r < TM; r++) {
            const int i = ti + r * Tn;
            a[r] = TA ? A[k + i * P] : A[i + k * P];
        }
#pragma unroll
        for (int c = 0; c < TM; c++) {
            const int j = tj + c * Tn;
            b[c] = TB ? B[j + k * P] : B[k + j * P];
        }
#pragma unroll
        for (int r = 0; r < TM; r++)
#pragma unroll
            for (int c = 0; c < TM; c++) acc[r][c] = fma(a[r], b[c], acc[r][c]);
    }
#pragma unroll
    for (int r = 0; r < TM; r++)
#pragma unroll
        for (int c = 0; c < TM; c++) {
            const int i = ti + r * Tn, j = tj + c * Tn;
            if (i < n && j < n) C[i + j * P] = acc[r][c];
        }
}

/* Shared-memory footprint of the fused kernel: three Np×P tiles and two length-Np vectors. */
template <int TM> __host__ __device__ inline int fused_tn(int n) { return (n + TM - 1) / TM; }
__host__ __device__ inline int fused_pitch(int np) { return np | 1; } /* odd pitch: conflict-free */
template <typename T, int TM> inline size_t fused_smem(int n)
{
    const int np = TM * fused_tn<TM>(n), P = fused_pitch(np);
    return sg_smem_round((3 * (size_t)np * P + 2 * (size_t)np) * sizeof(T));
}
/* fused_vdvt: one Np×P tile and one length-Np vector. */
template <typename T, int TM> inline size_t fused_vdvt_smem(int n)
{
    const int np = TM * fused_tn<TM>(n), P = fused_pitch(np);
    return sg_smem_round(((size_t)np * P + np) * sizeof(T));
}
/* Block size of both fused kernels: Tn² threads (one per micro-tile), rounded up to whole warps. */
template <int TM> inline int fused_threads(int n)
{
    const int Tn = fused_tn<TM>(n);
    return ((Tn * Tn + 31) / 32) * 32;
}

/* eigh:    M = VᵀgV;  M' = diag(gW) + skew(M)·F;           gA = sym(V M' Vᵀ)
   matfunc: M = VᵀgF V; M' = sym(M)·L (= L ∘ Vᵀ sym(gF) V);  gA = sym(V M' Vᵀ)
   Vᵀ sym(X) V = sym(VᵀXV), so gF is symmetrised after the products (one pass less).
   The final sym(·) makes gA exactly symmetric; it changes the result only by rounding. */
template <typename T, int TM, int KIND>
__global__ void __launch_bounds__(256) fused_backward(const FusedArgs<T> a)
{
    SG_DYN_SMEM(smem_raw);
    if (sg_scan_failed(a.skip, a.nskip)) return; /* uniform over the block, before any barrier */
    const int n = a.n, Tn = fused_tn<TM>(n), np = TM * Tn, P = fused_pitch(np), nn = n * n;
    const int tid = threadIdx.x, nt = blockDim.x;
    T *sV = reinterpret_cast<T *>(smem_raw), *sG = sV + np * P, *sT = sG + np * P;
    T *sW = sT + np * P, *sgW = sW + np;

    /* Zero everything once: the padding rows/cols are read by tile_mm and must be finite. */
    for (int i = tid; i < 3 * np * P + 2 * np; i += nt) sV[i] = T(0);
    __syncthreads();

    const bool hasG = a.G != nullptr;
    for (int64_t b = blockIdx.x; b < a.batch; b += gridDim.x) {
        const T *V = a.V + b * a.sV;
        const T *G = hasG ? a.G + b * a.sG : nullptr;
        /* Column-major loads: consecutive threads take consecutive rows of one column (coalesced). */
        for (int idx = tid; idx < nn; idx += nt) {
            const int j = idx / n, i = idx - j * n;
            sV[i + j * P] = V[i + j * a.ldV];
            if (hasG) sG[i + j * P] = G[i + j * a.ldG];
        }
        for (int i = tid; i < n; i += nt) {
            sW[i] = a.W[b * a.sW + i];
            if (KIND == FUSED_EIGH) sgW[i] = a.gW ? a.gW[b * a.sgW + i] : T(0);
        }
        __syncthreads();

        int bad = 0;
        T *Mp, *Other; /* after the middle step: M' and the free tile */
        if (KIND == FUSED_EIGH) {
            T scale = T(0); /* max|λ| (MASK's tolerance, LORENTZ's width) */
            for (int k = 0; k < n; k++) scale = fmax(scale, fabs(sW[k]));
            if (hasG) tile_mm<T, TM, true, false>(sV, sG, sT, n, P, Tn); /* sT = Vᵀ gV */
            __syncthreads();
            for (int idx = tid; idx < nn; idx += nt) {
                const int j = idx / n, i = idx - j * n;
                T v;
                if (i == j) {
                    v = sgW[i];
                } else if (hasG) {
                    const T F = inv_gap(sW[i], sW[j], i < j, a.mode, a.param, scale);
                    bad |= !isfinite(F);
                    v = (sT[i + j * P] - sT[j + i * P]) * T(0.5) * F;
                } else {
                    v = T(0); /* gV = 0: no eigenvector term, hence no division by gaps */
                }
                sG[i + j * P] = v;
            }
            Mp = sG;
            Other = sT;
        } else {
            tile_mm<T, TM, true, false>(sV, sG, sT, n, P, Tn); /* sT = Vᵀ gF */
            __syncthreads();
            tile_mm<T, TM, false, false>(sT, sV, sG, n, P, Tn); /* sG = Vᵀ gF V */
            __syncthreads();
            for (int idx = tid; idx < nn; idx += nt) {
                const int j = idx / n, i = idx - j * n;
                const T L = (T)sg_divdiff(a.fkind, a.fp, (double)sW[i], (double)sW[j], a.rel);
                sT[i + j * P] = (sG[i + j * P] + sG[j + i * P]) * T(0.5) * L;
            }
            Mp = sT;
            Other = sG;
        }
        __syncthreads();
        tile_mm<T, TM, false, true>(Mp, sV, Other, n, P, Tn); /* Other = M' Vᵀ */
        __syncthreads();
        tile_mm<T, TM, false, false>(sV, Other, Mp, n, P, Tn); /* Mp = V M' Vᵀ */
        __syncthreads();
        T *gA = a.gA + b * a.sA;
        int nonfinite = 0;
        for (int idx = tid; idx < nn; idx += nt) {
            const int j = idx / n, i = idx - j * n;
            const T x = (Mp[i + j * P] + Mp[j + i * P]) * T(0.5);
            nonfinite |= !isfinite(x);
            gA[i + j * a.ldA] = x;
        }
        /* These are also the barrier that protects the shared tiles before the next matrix is loaded. */
        bad = __syncthreads_or(bad);
        nonfinite = __syncthreads_or(nonfinite);
        if (a.flags && tid == 0) a.flags[b] = (bad ? FLAG_TIE : 0) | (nonfinite ? FLAG_NONFINITE : 0);
    }
}

/* ---- X = V diag(d) Vᵀ, fused for n <= 64 ------------------------------------------------------------
   X_ij = Σ_k d_k (V_ik V_jk): the product V_ik·V_jk commutes exactly, so X is exactly symmetric
   without a symmetrisation pass. Two tiles + one vector of shared memory. */
template <typename T, int TM>
__global__ void __launch_bounds__(256) fused_vdvt(const T *V, int64_t ldV, int64_t sV, const T *d, int64_t sd,
                                                  T *X, int64_t ldX, int64_t sX, int n, int64_t batch, int *flags)
{
    SG_DYN_SMEM(smem_raw);
    const int Tn = fused_tn<TM>(n), np = TM * Tn, P = fused_pitch(np), nn = n * n;
    const int tid = threadIdx.x, nt = blockDim.x;
    T *sVt = reinterpret_cast<T *>(smem_raw), *sd_ = sVt + np * P;
    for (int i = tid; i < np * P + np; i += nt) sVt[i] = T(0);
    __syncthreads();
    for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
        for (int idx = tid; idx < nn; idx += nt) {
            const int j = idx / n, i = idx - j * n;
            sVt[i + j * P] = V[b * sV + i + j * ldV];
        }
        for (int i = tid; i < n; i += nt) sd_[i] = d[b * sd + i];
        __syncthreads();
        int nonfinite = 0;
        if (tid < Tn * Tn) {
            const int ti = tid % Tn, tj = tid / Tn;
            T acc[TM][TM];
#pragma unroll
            for (int r = 0; r < TM; r++)
#pragma unroll
                for (int c = 0; c < TM; c++) acc[r][c] = T(0);
            for (int k = 0; k < n; k++) {
                T x[TM], y[TM];
                const T dk = sd_[k];
#pragma unroll
                for (int r = 0; r < TM; r++) x[r] = sVt[ti + r * Tn + k * P];
#pragma unroll
                for (int c = 0; c < TM; c++) y[c] = sVt[tj + c * Tn + k * P];
#pragma unroll
                for (int r = 0; r < TM; r++)
#pragma unroll
                    for (int c = 0; c < TM; c++) acc[r][c] = fma(dk, x[r] * y[c], acc[r][c]);
            }
#pragma unroll
            for (int r = 0; r < TM; r++)
#pragma unroll
                for (int c = 0; c < TM; c++) {
                    const int i = ti + r * Tn, j = tj + c * Tn;
                    if (i < n && j < n) {
                        X[b * sX + i + j * ldX] = acc[r][c];
                        nonfinite |= !isfinite(acc[r][c]);
                    }
                }
        }
        nonfinite = __syncthreads_or(nonfinite); /* also: tiles are reloaded for the next matrix */
        if (flags && tid == 0) flags[b] |= nonfinite ? FLAG_NONFINITE : 0;
    }
}

/* ---- elementwise kernels for the cuBLAS path (n > 64) and the regularizers --------------------- */

/* Per-matrix scale, one block per matrix (grid-stride), as the CPU reference forms it:
   sigma = 0: max_i |λ_i| (eigh mask);  sigma = 1: max_i σ_i, or 1 if that is 0 (SVD σ scaling). */
template <typename T>
__global__ void k_scale(const T *x, int64_t sx, int n, int64_t batch, int sigma, T *out)
{
    __shared__ T red[256];
    for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
        T m = T(0);
        for (int i = threadIdx.x; i < n; i += blockDim.x) m = fmax(m, sigma ? x[b * sx + i] : fabs(x[b * sx + i]));
        red[threadIdx.x] = m;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) red[threadIdx.x] = fmax(red[threadIdx.x], red[threadIdx.x + s]);
            __syncthreads();
        }
        if (threadIdx.x == 0) out[b] = sigma ? (red[0] > T(0) ? red[0] : T(1)) : red[0];
        __syncthreads();
    }
}

/* In place on dense n×n M (per matrix stride n*n): thread (i <= j) rewrites the pair (i,j),(j,i).
   eigh:    M'_ij = diag(gW) + (M_ij − M_ji)/2 · F_ij           (hasM = 0: M treated as zero)
   matfunc: M'_ij = (M_ij + M_ji)/2 · L_ij
   Same expressions as the fused kernel. flags (eigh) must be zeroed before; bits are only set. */
template <typename T, int KIND>
__global__ void k_middle(T *M, int n, int64_t batch, const T *W, int64_t sW, const T *gW, int64_t sgW, int hasM,
                         int mode, T param, const T *scale, int fkind, double fp, double rel, int *flags)
{
    const int64_t nn = (int64_t)n * n, total = nn * batch;
    const bool narrow = SG_NARROW(total);
    for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < total; g += (int64_t)gridDim.x * blockDim.x) {
        int64_t b, j_, i_;
        sg_split3(g, n, nn, narrow, &b, &j_, &i_);
        const int j = (int)j_, i = (int)i_;
        if (i > j) continue;
        T *Mb = M + b * nn;
        const T li = W[b * sW + i], lj = W[b * sW + j];
        if (KIND == FUSED_EIGH) {
            if (i == j) {
                Mb[i + (int64_t)i * n] = gW ? gW[b * sgW + i] : T(0);
                continue;
            }
            if (!hasM) {
                Mb[i + (int64_t)j * n] = T(0);
                Mb[j + (int64_t)i * n] = T(0);
                continue;
            }
            const T sc = scale[b];
            const T Fij = inv_gap(li, lj, 1, mode, param, sc), Fji = inv_gap(lj, li, 0, mode, param, sc);
            if (flags && (!isfinite(Fij) || !isfinite(Fji))) atomicOr(flags + b, FLAG_TIE);
            const T mij = Mb[i + (int64_t)j * n], mji = Mb[j + (int64_t)i * n];
            Mb[i + (int64_t)j * n] = (mij - mji) * T(0.5) * Fij;
            Mb[j + (int64_t)i * n] = (mji - mij) * T(0.5) * Fji;
        } else {
            const T Lij = (T)sg_divdiff(fkind, fp, (double)li, (double)lj, rel);
            const T Lji = (T)sg_divdiff(fkind, fp, (double)lj, (double)li, rel);
            const T mij = Mb[i + (int64_t)j * n], mji = Mb[j + (int64_t)i * n];
            Mb[i + (int64_t)j * n] = (mij + mji) * T(0.5) * Lij;
            if (i != j) Mb[j + (int64_t)i * n] = (mji + mij) * T(0.5) * Lji;
        }
    }
}

/* out_ij = (X_ij + X_ji)/2, X dense n×n, out with (ld, stride); non-finite outputs flagged. */
template <typename T>
__global__ void k_sym_store(const T *X, int n, int64_t batch, T *out, int64_t ld, int64_t so, int *flags)
{
    const int64_t nn = (int64_t)n * n, total = nn * batch;
    const bool narrow = SG_NARROW(total);
    for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < total; g += (int64_t)gridDim.x * blockDim.x) {
        int64_t b, j_, i_;
        sg_split3(g, n, nn, narrow, &b, &j_, &i_);
        const int j = (int)j_, i = (int)i_;
        const T *Xb = X + b * nn;
        const T x = (Xb[i + (int64_t)j * n] + Xb[j + (int64_t)i * n]) * T(0.5);
        out[b * so + i + (int64_t)j * ld] = x;
        if (flags && !isfinite(x)) atomicOr(flags + b, FLAG_NONFINITE);
    }
}

/* Flags matrices of X (rows×cols, ld, stride) holding inf/NaN. */
template <typename T>
__global__ void k_flag_nonfinite(const T *X, int64_t ld, int64_t sX, int rows, int cols, int64_t batch, int *flags)
{
    const int64_t rc = (int64_t)rows * cols, total = rc * batch;
    const bool narrow = SG_NARROW(total);
    for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < total; g += (int64_t)gridDim.x * blockDim.x) {
        int64_t b, j, i;
        sg_split3(g, rows, rc, narrow, &b, &j, &i);
        if (!isfinite(X[b * sX + i + j * ld])) atomicOr(flags + b, FLAG_NONFINITE);
    }
}

/* Per-eigenvalue function values d (dense n per matrix), optional per-matrix loss, flags (always written).
   Domain as in the CPU reference's check_dom: λ in f's domain, f(λ) finite in T, and f'(λ) too when der.
   One thread per matrix: the loss is summed in order, in double, like the CPU loop; it is written only
   for matrices without a domain error (FLAG_NONFINITE if it overflows T). */
template <typename T>
__global__ void k_spectral_fn(const T *W, int64_t sW, int n, int64_t batch, int what, int der, int fkind, double fp,
                              T *d, T *loss, int64_t sloss, int *flags)
{
    for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < batch; b += (int64_t)gridDim.x * blockDim.x) {
        double acc = 0;
        int bad = 0;
        for (int i = 0; i < n; i++) {
            const double l = (double)W[b * sW + i], fv = sg_fn_val(fkind, fp, l);
            const double fd = der || what == SPF_FDER ? sg_fn_der(fkind, fp, l) : 0.0;
            if (!sg_fn_in_domain(fkind, fp, l) || !isfinite((T)fv) || (der && !isfinite((T)fd))) bad = FLAG_DOMAIN;
            acc += fv;
            if (d) d[b * (int64_t)n + i] = (T)(what == SPF_FVAL ? fv : fd);
        }
        if (loss && !bad) {
            loss[b * sloss] = (T)acc;
            if (!isfinite((T)acc)) bad = FLAG_NONFINITE;
        }
        flags[b] = bad;
    }
}

/* SVD backward core (dense k×k P = UᵀgU, Q = VᵀgV, output I), the CPU reference's formula:
   with s = σ/sc (sc = max σ, or 1), a = skew(P)_jl, d = skew(Q)_jl (skew without ½),
   I_jl = (½(a+d)(s_j+s_l)·F(s_j², s_l²) + ½(a−d)/(s_j+s_l)) / sc   (j ≠ l),  I_jj = gS_j,
   F's gap formed as ((σ_l−σ_j)/sc)(σ_l/sc + σ_j/sc), the difference first (inv_gap_sq):
   a σ_l + σ_j d = ½(a+d)(σ_l+σ_j) + ½(a−d)(σ_l−σ_j), and only the first part is singular at a tie, so
   the degeneracy mode acts on it alone. Then the rectangular corrections folded in:
   tall with gU: I −= P Σ⁻¹ (since Uᵀ(gU Σ⁻¹) = P Σ⁻¹); wide with gV: I −= Σ⁻¹ Qᵀ. */
enum { RECT_NONE = 0, RECT_TALL = 1, RECT_WIDE = 2 };

/* I_jl (j ≠ l) before the rectangular terms, from a = skew(P)_jl, d = skew(Q)_jl and σ_j, σ_l; sets *bad
   when the gap factor is not finite. Shared by k_svd_inner and fused_svd_backward. */
template <typename T>
__device__ __forceinline__ T svd_offdiag(T a, T d, T sj, T sl, T sc, int j_lt_l, int mode, T param, int *bad)
{
    const T F = inv_gap_sq(sj, sl, sc, j_lt_l, mode, param);
    if (!isfinite(F)) *bad = 1;
    const T sum = sj / sc + sl / sc, h = (a - d) * T(0.5);
    const T g2 = sum > T(0) ? h / sum : (mode == SG_DM_EXACT ? h / sum : T(0));
    return ((a + d) * T(0.5) * sum * F + g2) / sc;
}

template <typename T>
__global__ void k_svd_inner(const T *P, const T *Q, const T *S, int64_t sS, const T *gS, int64_t sgS, T *I, int k,
                            int64_t batch, int mode, T param, const T *scale, int rect, int *flags)
{
    const int64_t kk = (int64_t)k * k, total = kk * batch;
    const bool narrow = SG_NARROW(total);
    for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < total; g += (int64_t)gridDim.x * blockDim.x) {
        int64_t b, l_, j_;
        sg_split3(g, k, kk, narrow, &b, &l_, &j_);
        const int l = (int)l_, j = (int)j_;
        const T *Pb = P ? P + b * kk : nullptr, *Qb = Q ? Q + b * kk : nullptr;
        const T sj = S[b * sS + j], sl = S[b * sS + l];
        T v = T(0);
        if (j == l) {
            v = gS ? gS[b * sgS + j] : T(0);
        } else if (Pb || Qb) {
            const T a = Pb ? Pb[j + (int64_t)l * k] - Pb[l + (int64_t)j * k] : T(0);
            const T d = Qb ? Qb[j + (int64_t)l * k] - Qb[l + (int64_t)j * k] : T(0);
            int bad = 0;
            v = svd_offdiag(a, d, sj, sl, scale[b], j < l, mode, param, &bad);
            if (flags && bad) atomicOr(flags + b, FLAG_TIE);
        }
        if (rect == RECT_TALL) v -= Pb[j + (int64_t)l * k] / sl;
        if (rect == RECT_WIDE) v -= Qb[l + (int64_t)j * k] / sj;
        I[b * kk + j + (int64_t)l * k] = v;
    }
}

/* ---- fused SVD backward (max(m,n) <= 64, one block per matrix, persistent grid) ---------------------
   The cuBLAS path's steps on zero-padded N×N shared tiles, N = max(m,n), nothing in global memory:
   P = U_kᵀgU, Q = V_kᵀgV, then I (k×k, k_svd_inner's formula, rectangular term folded in) in place of P:
     tall (m > n, gU):  gA = (U_k I + gU Σ⁻¹) V_kᵀ
     wide (m < n, gV):  gA = U_k (I V_kᵀ + Σ⁻¹ gVᵀ)
     otherwise:         gA = U_k I V_kᵀ
   Six tiles (U, V, gU, gV, P, Q; the output reuses gU's or gV's) and two vectors (σ, gS). Each tile is
   rewritten in full for every matrix (zeros outside its valid block), so what tile_mm reads beyond the
   valid blocks is zero and the products stay zero there. */
template <typename T> struct FusedSvdArgs {
    const T *U; int64_t ldU, sU;        /* m×k used (full_matrices: the first k columns) */
    const T *S; int64_t sS;
    const T *V; int64_t ldV, sV;        /* n×k used */
    const T *gU; int64_t ldgU, sgU;     /* may be NULL (zero) */
    const T *gS; int64_t sgS;           /* may be NULL */
    const T *gV; int64_t ldgV, sgV;     /* may be NULL */
    T *gA; int64_t ldA, sA;
    int m, n; int64_t batch;
    int mode; T param;                  /* degeneracy mode, defaulted param */
    int *flags;                         /* per matrix (always written), or NULL */
    const unsigned long long *skip = nullptr; /* as in FusedArgs */
    int nskip = 0;
};

template <typename T, int TM> inline size_t fused_svd_smem(int m, int n)
{
    const int np = TM * fused_tn<TM>(m > n ? m : n), P = fused_pitch(np);
    return sg_smem_round((6 * (size_t)np * P + 2 * (size_t)np) * sizeof(T));
}

template <typename T, int TM>
__global__ void __launch_bounds__(256) fused_svd_backward(const FusedSvdArgs<T> a)
{
    SG_DYN_SMEM(smem_raw);
    if (sg_scan_failed(a.skip, a.nskip)) return; /* uniform over the block, before any barrier */
    const int m = a.m, n = a.n, k = m < n ? m : n, N = m > n ? m : n;
    const int Tn = fused_tn<TM>(N), np = TM * Tn, P = fused_pitch(np), NN = N * N;
    const int tid = threadIdx.x, nt = blockDim.x;
    T *sU = reinterpret_cast<T *>(smem_raw), *sV = sU + np * P, *sX = sV + np * P, *sY = sX + np * P;
    T *sP = sY + np * P, *sQ = sP + np * P, *sS = sQ + np * P, *sgS = sS + np;
    const bool hasU = a.gU != nullptr, hasV = a.gV != nullptr;
    const int rect = m > n && hasU ? RECT_TALL : m < n && hasV ? RECT_WIDE : RECT_NONE;

    /* Zero once: rows/cols in [N, np) are read by tile_mm and never written. */
    for (int i = tid; i < 6 * np * P + 2 * np; i += nt) sU[i] = T(0);
    __syncthreads();
    for (int64_t b = blockIdx.x; b < a.batch; b += gridDim.x) {
        /* Column-major loads, consecutive threads on consecutive rows (coalesced). */
        for (int idx = tid; idx < NN; idx += nt) {
            const int j = idx / N, i = idx - j * N, e = i + j * P;
            const bool inU = i < m && j < k, inV = i < n && j < k;
            sU[e] = inU ? a.U[b * a.sU + i + (int64_t)j * a.ldU] : T(0);
            sV[e] = inV ? a.V[b * a.sV + i + (int64_t)j * a.ldV] : T(0);
            sX[e] = hasU && inU ? a.gU[b * a.sgU + i + (int64_t)j * a.ldgU] : T(0);
            sY[e] = hasV && inV ? a.gV[b * a.sgV + i + (int64_t)j * a.ldgV] : T(0);
        }
        for (int i = tid; i < k; i += nt) {
            sS[i] = a.S[b * a.sS + i];
            sgS[i] = a.gS ? a.gS[b * a.sgS + i] : T(0);
        }
        __syncthreads();
        T smax = T(0); /* k_scale(sigma = 1): max σ, or 1 if that is 0 */
        for (int j = 0; j < k; j++) smax = fmax(smax, sS[j]);
        const T sc = smax > T(0) ? smax : T(1);
        if (hasU) tile_mm<T, TM, true, false>(sU, sX, sP, N, P, Tn); /* P = U_kᵀ gU */
        if (hasV) tile_mm<T, TM, true, false>(sV, sY, sQ, N, P, Tn); /* Q = V_kᵀ gV */
        __syncthreads();
        /* I in place of P: the thread of pair (j <= l) reads P_jl, P_lj, Q_jl, Q_lj and writes I_jl, I_lj. */
        int bad = 0;
        for (int idx = tid; idx < NN; idx += nt) {
            const int l = idx / N, j = idx - l * N;
            if (j > l) continue;
            T ijl = T(0), ilj = T(0);
            if (l < k) {
                const T pjl = hasU ? sP[j + l * P] : T(0), plj = hasU ? sP[l + j * P] : T(0);
                const T qjl = hasV ? sQ[j + l * P] : T(0), qlj = hasV ? sQ[l + j * P] : T(0);
                const T sj = sS[j], sl = sS[l];
                if (j == l) {
                    ijl = sgS[j];
                } else if (hasU || hasV) {
                    ijl = svd_offdiag(pjl - plj, qjl - qlj, sj, sl, sc, 1, a.mode, a.param, &bad);
                    ilj = svd_offdiag(plj - pjl, qlj - qjl, sl, sj, sc, 0, a.mode, a.param, &bad);
                }
                if (rect == RECT_TALL) ijl -= pjl / sl, ilj -= plj / sj;
                if (rect == RECT_WIDE) ijl -= qlj / sj, ilj -= qjl / sl;
            }
            sP[j + l * P] = ijl;
            if (j != l) sP[l + j * P] = ilj;
        }
        __syncthreads();
        T *out;
        if (rect == RECT_WIDE) {
            tile_mm<T, TM, false, true>(sP, sV, sQ, N, P, Tn); /* Q := I V_kᵀ (k×n) */
            __syncthreads();
            for (int idx = tid; idx < NN; idx += nt) {
                const int j = idx / N, c = idx - j * N;
                if (c < k && j < n) sQ[c + j * P] += sY[j + c * P] / sS[c]; /* + Σ⁻¹ gVᵀ */
            }
            __syncthreads();
            tile_mm<T, TM, false, false>(sU, sQ, sY, N, P, Tn); /* gA = U_k Q */
            out = sY;
        } else {
            tile_mm<T, TM, false, false>(sU, sP, sQ, N, P, Tn); /* Q := U_k I (m×k) */
            __syncthreads();
            if (rect == RECT_TALL) {
                for (int idx = tid; idx < NN; idx += nt) {
                    const int c = idx / N, i = idx - c * N;
                    if (i < m && c < k) sQ[i + c * P] += sX[i + c * P] / sS[c]; /* + gU Σ⁻¹ */
                }
                __syncthreads();
            }
            tile_mm<T, TM, false, true>(sQ, sV, sX, N, P, Tn); /* gA = Q V_kᵀ */
            out = sX;
        }
        __syncthreads();
        T *gA = a.gA + b * a.sA;
        int nonfinite = 0;
        for (int idx = tid; idx < m * n; idx += nt) {
            const int j = idx / m, i = idx - j * m;
            const T x = out[i + j * P];
            nonfinite |= !isfinite(x);
            gA[i + (int64_t)j * a.ldA] = x;
        }
        /* Also the barrier that protects the tiles before the next matrix is loaded. */
        bad = __syncthreads_or(bad);
        nonfinite = __syncthreads_or(nonfinite);
        if (a.flags && tid == 0) a.flags[b] = (bad ? FLAG_TIE : 0) | (nonfinite ? FLAG_NONFINITE : 0);
    }
}

/* Y (dense rows×k) = X Σ⁻¹ (trans = 0: X rows×k, Y_ic = X_ic/σ_c) or Σ⁻¹ Xᵀ (trans = 1: X is cols×k
   with cols = Y's column count, Y_jc = X_cj/σ_j). X has (ld, stride). */
template <typename T>
__global__ void k_div_sigma(const T *X, int64_t ldX, int64_t sX, const T *S, int64_t sS, T *Y, int rows, int cols,
                            int64_t batch, int trans)
{
    const int64_t rc = (int64_t)rows * cols, total = rc * batch;
    const bool narrow = SG_NARROW(total);
    for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < total; g += (int64_t)gridDim.x * blockDim.x) {
        int64_t b, c, i;
        sg_split3(g, rows, rc, narrow, &b, &c, &i);
        const T x = trans ? X[b * sX + c + (int64_t)i * ldX] : X[b * sX + i + (int64_t)c * ldX];
        Y[g] = x / S[b * sS + (trans ? i : c)];
    }
}

/* gA_ij = 2 σ_1 u_i1 v_j1 (spectral norm) and loss = σ_1²; U: m×k, V: n×k with (ld, stride). */
template <typename T>
__global__ void k_spectral_grad(const T *S, int64_t sS, const T *U, int64_t ldU, int64_t sU, const T *V,
                                int64_t ldV, int64_t sV, T *gA, int64_t ldA, int64_t sA, int m, int n, int64_t batch)
{
    const int64_t mn = (int64_t)m * n, total = mn * batch;
    const bool narrow = SG_NARROW(total);
    for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < total; g += (int64_t)gridDim.x * blockDim.x) {
        int64_t b, j_, i_;
        sg_split3(g, m, mn, narrow, &b, &j_, &i_);
        const int j = (int)j_, i = (int)i_;
        gA[b * sA + i + (int64_t)j * ldA] = T(2) * S[b * sS] * U[b * sU + i] * V[b * sV + j];
    }
}

/* Per-matrix loss from a vector: Σσ (NUCLEAR), σ_1² (SPECTRAL, from the descending S). One thread per matrix.
   flags (optional): set to FLAG_NONFINITE where the loss overflows T, else 0. */
enum { VL_SUM = 0, VL_FIRST_SQ = 1 };
template <typename T>
__global__ void k_vec_loss(const T *S, int64_t sS, int k, int64_t batch, int what, T *loss, int64_t sloss, int *flags)
{
    for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < batch; b += (int64_t)gridDim.x * blockDim.x) {
        double acc = 0;
        if (what == VL_FIRST_SQ) {
            acc = (double)S[b * sS] * (double)S[b * sS];
        } else {
            for (int i = 0; i < k; i++) acc += (double)S[b * sS + i];
        }
        const T l = (T)acc;
        loss[b * sloss] = l;
        if (flags) flags[b] = isfinite(l) ? 0 : FLAG_NONFINITE;
    }
}

/* ORTHO: D = G − I in place on dense n×n G, loss = Σ D_ij² (double accumulation). One block per matrix.
   flags (optional): set to FLAG_NONFINITE where the loss overflows T, else 0. */
template <typename T>
__global__ void k_ortho(T *G, int n, int64_t batch, T *loss, int64_t sloss, int *flags)
{
    __shared__ double red[256];
    const int64_t nn = (int64_t)n * n;
    for (int64_t b = blockIdx.x; b < batch; b += gridDim.x) {
        T *Gb = G + b * nn;
        double acc = 0;
        for (int64_t r = threadIdx.x; r < nn; r += blockDim.x) {
            const int64_t j = r / n, i = r - j * n;
            const T v = Gb[r] - (i == j ? T(1) : T(0));
            Gb[r] = v;
            acc += (double)v * (double)v;
        }
        red[threadIdx.x] = acc;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            const T l = (T)red[0];
            loss[b * sloss] = l;
            if (flags) flags[b] = isfinite(l) ? 0 : FLAG_NONFINITE;
        }
        __syncthreads();
    }
}

/* Y (dense n×n) = V diag(d): the cuBLAS path of V diag(d) Vᵀ. */
template <typename T>
__global__ void k_scale_cols(const T *V, int64_t ldV, int64_t sV, const T *d, T *Y, int n, int64_t batch)
{
    const int64_t nn = (int64_t)n * n, total = nn * batch;
    const bool narrow = SG_NARROW(total);
    for (int64_t g = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g < total; g += (int64_t)gridDim.x * blockDim.x) {
        int64_t b, j_, i_;
        sg_split3(g, n, nn, narrow, &b, &j_, &i_);
        const int j = (int)j_, i = (int)i_;
        Y[g] = V[b * sV + i + (int64_t)j * ldV] * d[b * (int64_t)n + j];
    }
}

} // namespace sggrad
#endif

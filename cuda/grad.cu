/* CUDA spectral gradients: eigh / SVD backward, matrix functions and their backward, regularizers.
   Fused one-block-per-matrix kernels for n <= 64 (eigh, matfunc and SVD backward; cuda/grad_kernels.cuh),
   cuBLAS strided-batched products plus elementwise kernels beyond. Host batches are staged through device
   buffers in chunks (ctx->chunk_bytes or half of free device memory, halved on OOM). Design notes and napkin math: docs/kernels.md. */
#include "cuda_internal.h"
#include "grad_kernels.cuh"

#include <initializer_list>
#include <limits.h>
#include <map>
#include <mutex>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utility>
#include <vector>

using namespace sggrad;

namespace {

constexpr int FUSED_MAX_N = 64;
/* n·n and per-matrix offsets are int inside the kernels. */
constexpr int64_t MAX_N = 46340;

#define SGTRY(...)                                                                                      \
    do {                                                                                                \
        sg_status s_ = (__VA_ARGS__);                                                                   \
        if (s_ != SG_OK) return s_;                                                                     \
    } while (0)

/* Scratch from the context's pool, freed in order on the context's stream. */
struct DevBuf {
    void *p = nullptr;
    sg_ctx *ctx = nullptr;
    DevBuf() = default;
    DevBuf(const DevBuf &) = delete;
    DevBuf &operator=(const DevBuf &) = delete;
    ~DevBuf() { reset(); }
    sg_status alloc(sg_ctx *c, size_t bytes, const char *what)
    {
        reset();
        ctx = c;
        return sg_cuda_malloc(c, &p, bytes, what);
    }
    void reset()
    {
        if (p) sg_cuda_free(ctx, p, sg_cu(ctx)->stream);
        p = nullptr;
    }
};

struct HostBuf {
    void *p = nullptr;
    HostBuf() = default;
    HostBuf(const HostBuf &) = delete;
    HostBuf &operator=(const HostBuf &) = delete;
    ~HostBuf() { free(p); }
};

/* Restores the memory space and the finite check after an internal call on device scratch. */
struct CtxRestore { /* also mutes the nested op's progress: the outer chunk loop reports */
    sg_ctx *c;
    sg_memspace mem;
    int cf;
    explicit CtxRestore(sg_ctx *ctx) : c(ctx), mem(ctx->mem), cf(ctx->check_finite) { c->prog_mute++; }
    ~CtxRestore()
    {
        c->mem = mem;
        c->check_finite = cf;
        c->prog_mute--;
    }
};

/* Carves 256-byte aligned pieces out of one scratch allocation; with base == NULL it only measures. */
struct Bump {
    char *base;
    size_t off = 0;
    explicit Bump(void *b) : base((char *)b) {}
    template <class X> X *take(int64_t count)
    {
        X *r = base ? (X *)(base + off) : nullptr;
        off += ((size_t)count * sizeof(X) + 255) & ~(size_t)255;
        return r;
    }
};

inline cudaStream_t stream_of(sg_ctx *ctx) { return sg_cu(ctx)->stream; }

inline unsigned grid_1d(sg_ctx *ctx, int64_t work, int threads)
{
    return sg_grid_capped(work, threads, (int64_t)sg_cu(ctx)->prop.multiProcessorCount * 32);
}

/* ---- cuBLAS strided-batched products (64-bit API: any ld, batch) -------------------------------- */
inline cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
                           int64_t k, float alpha, const float *A, int64_t lda, long long sA, const float *B,
                           int64_t ldb, long long sB, float beta, float *C, int64_t ldc, long long sC, int64_t cnt)
{
    return cublasSgemmStridedBatched_64(h, ta, tb, m, n, k, &alpha, A, lda, sA, B, ldb, sB, &beta, C, ldc, sC, cnt);
}
inline cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n,
                           int64_t k, double alpha, const double *A, int64_t lda, long long sA, const double *B,
                           int64_t ldb, long long sB, double beta, double *C, int64_t ldc, long long sC, int64_t cnt)
{
    return cublasDgemmStridedBatched_64(h, ta, tb, m, n, k, &alpha, A, lda, sA, B, ldb, sB, &beta, C, ldc, sC, cnt);
}
const cublasOperation_t NT = CUBLAS_OP_N, TR = CUBLAS_OP_T;

/* ---- staging of host batches ---------------------------------------------------------------------- */
/* One matrix argument: the caller's view (data NULL = absent; stride explicit, cols possibly narrowed
   to the first k columns) and the device view of the current chunk. */
struct Arg {
    sg_mat user{};
    bool in = false, out = false;
    const char *name = "";
    sg_mat dev{};
    DevBuf buf;
    bool present() const { return user.data != nullptr; }
    void set(const sg_mat *m, int64_t cols, bool is_in, bool is_out, const char *nm)
    {
        in = is_in;
        out = is_out;
        name = nm;
        if (!m) return;
        user = *m;
        user.stride = sg_stride_of(m); /* before narrowing cols: the stride is the caller's */
        user.cols = cols;
    }
    size_t bytes_per_matrix() const { return (size_t)(user.rows * user.cols) * sg_dtype_size(user.dtype); }
};

sg_status copy2d(sg_ctx *ctx, char *dst, int64_t dld, int64_t dstride, const char *src, int64_t sld,
                 int64_t sstride, int64_t rows, int64_t cols, int64_t cnt, size_t es, cudaMemcpyKind kind)
{
    cudaStream_t st = stream_of(ctx);
    if (sstride == sld * cols && dstride == dld * cols) { /* the chunk is one pitched 2-D block */
        CU_TRY(ctx, cudaMemcpy2DAsync(dst, dld * es, src, sld * es, rows * es, (size_t)(cols * cnt), kind, st));
        return SG_OK;
    }
    for (int64_t b = 0; b < cnt; b++)
        CU_TRY(ctx, cudaMemcpy2DAsync(dst + b * dstride * es, dld * es, src + b * sstride * es, sld * es, rows * es,
                                      (size_t)cols, kind, st));
    return SG_OK;
}

/* Device mode: every pointer usable on this device (inputs and outputs), then the inputs scanned for
   NaN/Inf (host inputs were scanned by the front-end). NULL entries are absent arguments. defer: the scan
   is only queued; the caller's kernels skip their writes while it is pending (FusedArgs::skip) and the
   first read-back settles it (first_flagged, chunked), so the host does not wait for it first. */
using MatList = std::initializer_list<std::pair<const sg_mat *, const char *>>;
sg_status check_device_args(sg_ctx *ctx, MatList in, MatList out, bool defer = false)
{
    if (ctx->mem != SG_MEM_DEVICE) return SG_OK;
    for (MatList l : {in, out})
        for (auto &p : l)
            if (p.first) SGTRY(sg_cuda_check_ptr(ctx, p.first->data, p.second));
    sg_prof_mark("args");
    if (!ctx->check_finite) return SG_OK;
    /* fixed arrays, not std::vector: a failed allocation would throw through the C API */
    const sg_mat *ms[SG_FINITE_MAX];
    const char *names[SG_FINITE_MAX];
    int k = 0;
    for (auto &p : in)
        if (p.first) {
            if (k == SG_FINITE_MAX) return sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "more than %d inputs to scan", (int)SG_FINITE_MAX);
            ms[k] = p.first, names[k++] = p.second;
        }
    if (defer) return sg_cuda_finite_queue(ctx, ms, names, k);
    SGTRY(sg_cuda_check_finite_all(ctx, ms, names, k));
    sg_prof_mark("finite");
    return SG_OK;
}

/* Runs body(b0, cnt, scratch) over chunks of the batch. Host mode: inputs are copied into dense device
   buffers before and outputs copied back after each chunk. Device mode: the views are offset in place.
   scratch(cnt) gives the scratch bytes for cnt matrices (measuring Bump). SG_ERR_DEGENERATE from a
   chunk does not stop the loop (gA is still written); neither does SG_ERR_DOMAIN when the body set *soft
   (an overflow found after the chunk's outputs were written, as the CPU reference records and carries on);
   the first one is reported at the end. */
template <class Scratch, class Body>
sg_status chunked(sg_ctx *ctx, Arg *args, int na, int64_t batch, Scratch scratch, Body body, bool *soft = nullptr)
{
    /* a deferred scan still pending at any exit (an early error): wait for it, so that nothing of this call
       runs on after it returns, and forget it */
    struct ScanDrain {
        sg_ctx *c;
        ~ScanDrain()
        {
            if (!sg_cu(c)->fin_pending) return;
            if (cudaStreamSynchronize(stream_of(c)) != cudaSuccess) (void)cudaGetLastError();
            sg_cuda_finite_drop(c);
        }
    } drain{ctx};
    const bool host = ctx->mem == SG_MEM_HOST;
    size_t per = (scratch((int64_t)1024) + 1023) / 1024;
    if (host)
        for (int i = 0; i < na; i++)
            if (args[i].present()) per += args[i].bytes_per_matrix();
    size_t budget = ctx->chunk_bytes;
    if (!budget) { /* half of free memory (sg_cuda_budget); the whole batch's bytes saturate */
        const size_t whole = per && (size_t)batch > SIZE_MAX / per ? SIZE_MAX : per * (size_t)batch;
        SGTRY(sg_cuda_budget(ctx, whole, 1, 2, &budget));
    }
    int64_t nb = per ? (int64_t)(budget / per) : batch;
    if (nb > batch) nb = batch;
    if (nb < 1) nb = 1;

    /* On device OOM halve the chunk and retry; at one matrix per chunk the OOM is reported. */
    DevBuf scr;
    bool retried = false;
    for (;;) {
        sg_status s = SG_OK;
        if (host)
            for (int i = 0; i < na && s == SG_OK; i++)
                if (args[i].present()) s = args[i].buf.alloc(ctx, args[i].bytes_per_matrix() * nb, args[i].name);
        const size_t sb = scratch(nb);
        if (s == SG_OK && sb) s = scr.alloc(ctx, sb, "gradient scratch");
        if (s == SG_OK) break;
        for (int i = 0; i < na; i++) args[i].buf.reset();
        scr.reset();
        if (s != SG_ERR_DEVICE_OOM || nb == 1) return s;
        nb = (nb + 1) / 2;
        retried = true;
    }
    if (retried) sg_clear_error(ctx); /* the OOM that a smaller chunk got past is not this call's error */
    sg_prof_mark("alloc");
    /* On every exit: free the buffers in stream order, then wait for the stream and trim the pool to the
       cache size (sg_cuda_settle: not needed after the normal exit's own wait when the pool is within the
       cache). Declared after scr, so it runs first. */
    struct Release {
        sg_ctx *ctx;
        Arg *args;
        int na;
        DevBuf &scr;
        bool waited;
        ~Release()
        {
            for (int i = 0; i < na; i++) args[i].buf.reset();
            scr.reset();
            sg_cuda_settle(ctx, stream_of(ctx), waited);
            sg_prof_mark("release");
        }
    } release{ctx, args, na, scr, false};

    sg_status deg = SG_OK;
    char deg_msg[sizeof ctx->err];
    int64_t deg_idx = -1;
    for (int64_t b0 = 0; b0 < batch; b0 += nb) {
        const int64_t cnt = batch - b0 < nb ? batch - b0 : nb;
        for (int i = 0; i < na; i++) {
            Arg &a = args[i];
            if (!a.present()) continue;
            const size_t es = sg_dtype_size(a.user.dtype);
            a.dev = a.user;
            a.dev.batch = cnt;
            if (host) {
                a.dev.data = a.buf.p;
                a.dev.ld = a.user.rows;
                a.dev.stride = a.user.rows * a.user.cols;
                if (a.in)
                    SGTRY(copy2d(ctx, (char *)a.dev.data, a.dev.ld, a.dev.stride,
                                 (const char *)a.user.data + b0 * a.user.stride * es, a.user.ld, a.user.stride,
                                 a.user.rows, a.user.cols, cnt, es, cudaMemcpyHostToDevice));
            } else {
                a.dev.data = (char *)a.user.data + b0 * a.user.stride * es;
            }
        }
        if (soft) *soft = false;
        sg_status s = body(b0, cnt, scr.p);
        const bool carry_on = s == SG_ERR_DEGENERATE || (s == SG_ERR_DOMAIN && soft && *soft);
        if (s == SG_OK || carry_on) { /* a deferred NaN/Inf scan outranks what the chunk found */
            const sg_status f = sg_cuda_finite_settle(ctx);
            if (f != SG_OK) return f;
        }
        sg_prof_mark("body");
        if (s != SG_OK && !carry_on) return s;
        if (s != SG_OK && deg == SG_OK) {
            deg = s;
            memcpy(deg_msg, ctx->err, sizeof deg_msg);
            deg_idx = ctx->failed_index;
        }
        if (host) {
            for (int i = 0; i < na; i++) {
                Arg &a = args[i];
                if (!a.present() || !a.out) continue;
                const size_t es = sg_dtype_size(a.user.dtype);
                SGTRY(copy2d(ctx, (char *)a.user.data + b0 * a.user.stride * es, a.user.ld, a.user.stride,
                             (const char *)a.dev.data, a.dev.ld, a.dev.stride, a.user.rows, a.user.cols, cnt, es,
                             cudaMemcpyDeviceToHost));
            }
            CU_TRY(ctx, cudaStreamSynchronize(stream_of(ctx)));
            sg_progress(ctx, (double)(b0 + cnt) / (double)batch);
            if (sg_cancelled(ctx)) return SG_ERR_CANCELLED; /* the front-end words it */
        }
    }
    /* Device mode: the call is complete on return, like host mode (and errors surface here). */
    if (!host) CU_TRY(ctx, cudaStreamSynchronize(stream_of(ctx)));
    release.waited = true; /* host mode: each chunk ended with one */
    sg_prof_mark("wait");
    if (deg != SG_OK) {
        memcpy(ctx->err, deg_msg, sizeof deg_msg);
        ctx->failed_index = deg_idx;
    }
    return deg;
}

/* First matrix of the chunk whose flag is set, or -1. Synchronises the stream. A pending NaN/Inf scan is
   settled first: with it set the kernels wrote neither outputs nor flags. */
sg_status first_flagged(sg_ctx *ctx, const int *dflags, int64_t cnt, int64_t *first, int *bits)
{
    *first = -1;
    *bits = 0;
    HostBuf h;
    h.p = malloc((size_t)cnt * sizeof(int));
    if (!h.p) return sg_fail(ctx, SG_ERR_ALLOC, -1, "host allocation of %lld flags failed", (long long)cnt);
    SGTRY(sg_cuda_finite_fetch(ctx)); /* one synchronisation for both copies */
    CU_TRY(ctx, cudaMemcpyAsync(h.p, dflags, (size_t)cnt * sizeof(int), cudaMemcpyDeviceToHost, stream_of(ctx)));
    CU_TRY(ctx, cudaStreamSynchronize(stream_of(ctx)));
    sg_prof_mark("flags");
    SGTRY(sg_cuda_finite_report(ctx));
    const int *f = (const int *)h.p;
    for (int64_t i = 0; i < cnt; i++)
        if (f[i]) {
            *first = i;
            *bits = f[i];
            break;
        }
    return SG_OK;
}

/* A nested sg_cuda_* call on a chunk reports chunk-local indices: shift to the caller's batch. */
sg_status nested(sg_ctx *ctx, sg_status s, int64_t b0)
{
    if (s != SG_OK && b0 > 0 && ctx->failed_index >= 0) {
        ctx->failed_index += b0;
        size_t l = strlen(ctx->err);
        snprintf(ctx->err + l, sizeof ctx->err - l, " [index within the chunk that starts at matrix %lld]",
                 (long long)b0);
    }
    return s;
}

sg_mat dense_view(void *p, sg_dtype t, int64_t cnt, int64_t rows, int64_t cols)
{
    sg_mat m = sg_mat_dense(p, t, cnt, rows, cols);
    m.stride = rows * cols;
    return m;
}

template <typename T> constexpr sg_dtype dtype_of() { return sizeof(T) == 4 ? SG_F32 : SG_F64; }

const char *fn_name(const sg_fn *fn)
{
    switch (fn->kind) {
    case SG_FN_SQRT: return "sqrt";
    case SG_FN_LOG: return "log";
    case SG_FN_EXP: return "exp";
    case SG_FN_POW: return "pow";
    default: return "callback";
    }
}

sg_status no_callback(sg_ctx *ctx, const sg_fn *fn, const char *op)
{
    if (fn && fn->kind == SG_FN_CALLBACK)
        return sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "%s: host callbacks run on the CPU backend only", op);
    return SG_OK;
}

sg_status size_ok(sg_ctx *ctx, int64_t n, const char *op)
{
    if (n > MAX_N)
        return sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "%s: n = %lld exceeds the CUDA gradient limit %lld", op,
                       (long long)n, (long long)MAX_N);
    return SG_OK;
}

/* ---- fused launches ------------------------------------------------------------------------------- */
/* SG_GRAD_NO_FUSED=1 forces the cuBLAS paths (to compare both at one size on the device). */
bool no_fused()
{
    static const bool v = getenv("SG_GRAD_NO_FUSED") && atoi(getenv("SG_GRAD_NO_FUSED")) != 0;
    return v;
}

/* Blocks per SM for a persistent launch, with the kernel's dynamic shared-memory limit raised first. Both
   are driver calls that gave the same answer on every call: they are made once per (kernel, device,
   threads, smem) and kept for the process (a cudaDeviceReset by the application would lose the raised
   limit; launches would then fail with a reported error). The limit is a per-function setting shared by
   every host thread: it is always raised to limit, the most any launch of this instantiation needs, so
   concurrent launches never lower it under each other. */
static sg_status blocks_per_sm(sg_ctx *ctx, const void *kern, int threads, size_t smem, size_t limit, int *per_sm)
{
    struct Key {
        const void *k;
        int dev, threads;
        size_t smem;
        bool operator<(const Key &o) const
        {
            return k != o.k ? std::less<const void *>()(k, o.k)
                   : dev != o.dev ? dev < o.dev
                   : threads != o.threads ? threads < o.threads
                                          : smem < o.smem;
        }
    };
    static std::mutex mu;
    static std::map<Key, int> known;
    const Key key{kern, sg_cu(ctx)->device, threads, smem};
    {
        std::lock_guard<std::mutex> l(mu);
        auto it = known.find(key);
        if (it != known.end()) {
            *per_sm = it->second;
            return SG_OK;
        }
    }
    CU_TRY(ctx, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)limit));
    CU_TRY(ctx, cudaOccupancyMaxActiveBlocksPerMultiprocessor(per_sm, kern, threads, smem));
    std::lock_guard<std::mutex> l(mu);
    try {
        known[key] = *per_sm;
    } catch (...) { /* out of host memory: not kept, asked again next time; nothing throws through the C API */
    }
    return SG_OK;
}

/* Persistent launch: occupancy × SMs blocks for smem bytes, at most one per matrix (each block loops over
   matrices). smem_cap: the most any launch of this instantiation needs (capped at the device's opt-in
   maximum; callers keep smem <= that). */
template <class... P, class... A>
static sg_status launch_persistent(sg_ctx *ctx, void (*kern)(P...), int threads, size_t smem, size_t smem_cap,
                                   int64_t cnt, A &&...args)
{
    const size_t optin = sg_cu(ctx)->prop.sharedMemPerBlockOptin, cap = smem_cap < optin ? smem_cap : optin;
    int per_sm = 0;
    SGTRY(blocks_per_sm(ctx, (const void *)kern, threads, smem, cap > smem ? cap : smem, &per_sm));
    const int64_t g = (int64_t)(per_sm > 0 ? per_sm : 1) * sg_cu(ctx)->prop.multiProcessorCount;
    sg_prof_mark("attr");
    kern<<<(unsigned)(g < cnt ? g : cnt), threads, smem, stream_of(ctx)>>>(std::forward<A>(args)...);
    CU_LAUNCH_CHECK(ctx);
    return SG_OK;
}

/* Micro-tile per thread by size: N <= 16 → 1×1, N <= 32 → 2×2, N <= 64 → 4×4 (at most 16×16 = 256
   threads), for fused_backward (N = n), fused_vdvt (N = n) and fused_svd_backward (N = max(m, n)).
   Each TM serves N up to 16·TM: that N's footprint is the instantiation's smem_cap.
   SG_FUSED_TM=2 or 4 (read once) takes that tile wherever it serves N (TM ≥ N/16): a larger tile reads
   2/TM shared words per multiply-add instead of 2 at N ≤ 16 or 1 at N ≤ 32, with fewer threads per block.
   An A/B for the device (scripts/gpu-focus): the H200 has not yet said which wins. */
static int fused_tm(int N)
{
    static const int o = [] {
        const char *e = getenv("SG_FUSED_TM");
        const int v = e ? atoi(e) : 0;
        return v == 2 || v == 4 ? v : 0;
    }();
    if (o && 16 * o >= N) return o;
    return N <= 16 ? 1 : N <= 32 ? 2 : 4;
}
template <typename T, int TM, int KIND> sg_status launch_fused_tm(sg_ctx *ctx, const FusedArgs<T> &a)
{
    return launch_persistent(ctx, fused_backward<T, TM, KIND>, fused_threads<TM>(a.n), fused_smem<T, TM>(a.n),
                             fused_smem<T, TM>(16 * TM), a.batch, a);
}
template <typename T, int KIND> sg_status launch_fused(sg_ctx *ctx, const FusedArgs<T> &a)
{
    const int tm = fused_tm(a.n);
    if (tm == 1) return launch_fused_tm<T, 1, KIND>(ctx, a);
    if (tm == 2) return launch_fused_tm<T, 2, KIND>(ctx, a);
    return launch_fused_tm<T, 4, KIND>(ctx, a);
}

template <typename T> size_t fused_svd_smem_for(int m, int n)
{
    const int tm = fused_tm(m > n ? m : n);
    return tm == 1 ? fused_svd_smem<T, 1>(m, n) : tm == 2 ? fused_svd_smem<T, 2>(m, n) : fused_svd_smem<T, 4>(m, n);
}
template <typename T, int TM> sg_status launch_fused_svd_tm(sg_ctx *ctx, const FusedSvdArgs<T> &a)
{
    return launch_persistent(ctx, fused_svd_backward<T, TM>, fused_threads<TM>(a.m > a.n ? a.m : a.n),
                             fused_svd_smem<T, TM>(a.m, a.n), fused_svd_smem<T, TM>(16 * TM, 16 * TM), a.batch, a);
}
template <typename T> sg_status launch_fused_svd(sg_ctx *ctx, const FusedSvdArgs<T> &a)
{
    const int tm = fused_tm(a.m > a.n ? a.m : a.n);
    if (tm == 1) return launch_fused_svd_tm<T, 1>(ctx, a);
    if (tm == 2) return launch_fused_svd_tm<T, 2>(ctx, a);
    return launch_fused_svd_tm<T, 4>(ctx, a);
}

template <typename T, int TM>
sg_status launch_vdvt_tm(sg_ctx *ctx, const T *V, int64_t ldV, int64_t sV, const T *d, T *X, int64_t ldX,
                         int64_t sX, int n, int64_t cnt, int *flags)
{
    return launch_persistent(ctx, fused_vdvt<T, TM>, fused_threads<TM>(n), fused_vdvt_smem<T, TM>(n),
                             fused_vdvt_smem<T, TM>(16 * TM), cnt, V, ldV, sV, d, (int64_t)n, X, ldX, sX, n, cnt, flags);
}

/* X = V diag(d) Vᵀ; d dense (n per matrix). Y, Z: dense n×n scratch for n > 64 (unused otherwise).
   Matrices with a non-finite output get FLAG_NONFINITE or'ed into flags. */
template <typename T>
sg_status vdvt(sg_ctx *ctx, const sg_mat &V, const T *d, const sg_mat &X, T *Y, T *Z, int *flags)
{
    const int n = (int)V.rows;
    const int64_t cnt = V.batch, nn = (int64_t)n * n;
    const T *v = (const T *)V.data;
    T *x = (T *)X.data;
    const int tm = n <= FUSED_MAX_N ? fused_tm(n) : 0;
    if (tm == 1) return launch_vdvt_tm<T, 1>(ctx, v, V.ld, V.stride, d, x, X.ld, X.stride, n, cnt, flags);
    if (tm == 2) return launch_vdvt_tm<T, 2>(ctx, v, V.ld, V.stride, d, x, X.ld, X.stride, n, cnt, flags);
    if (tm == 4) return launch_vdvt_tm<T, 4>(ctx, v, V.ld, V.stride, d, x, X.ld, X.stride, n, cnt, flags);
    k_scale_cols<T><<<grid_1d(ctx, nn * cnt, 256), 256, 0, stream_of(ctx)>>>(v, V.ld, V.stride, d, Y, n, cnt);
    CU_LAUNCH_CHECK(ctx);
    CUBLAS_TRY(ctx, gemm(sg_cu(ctx)->blas, NT, TR, n, n, n, T(1), Y, n, nn, v, V.ld, V.stride, T(0), Z, n, nn, cnt));
    k_sym_store<T><<<grid_1d(ctx, nn * cnt, 256), 256, 0, stream_of(ctx)>>>(Z, n, cnt, x, X.ld, X.stride, flags);
    CU_LAUNCH_CHECK(ctx);
    return SG_OK;
}

/* ---- eigh backward and matfunc backward (same skeleton: V (M' ∘ …) Vᵀ) ------------------------- */
/* G is gV (eigh, may be NULL) or gF (matfunc). Status rules follow the CPU reference:
   eigh: a non-finite gap factor (with gV) or a non-finite gA → SG_ERR_DEGENERATE ("tied" in exact mode);
   matfunc: eigenvalues outside f's domain → SG_ERR_DOMAIN before gA is written; non-finite gA → DOMAIN. */
template <typename T, int KIND>
sg_status sym_backward(sg_ctx *ctx, const sg_mat *W, const sg_mat *V, const sg_mat *gW, const sg_mat *G,
                       sg_degen mode, double param, const sg_fn *fn, sg_mat *gA)
{
    const bool eigh = KIND == FUSED_EIGH;
    const char *op = eigh ? "eigh_backward" : "matfunc_backward";
    const int64_t n = V->rows, batch = V->batch, nn = n * n;
    SGTRY(size_ok(ctx, n, op));
    const bool f32 = sizeof(T) == 4, fused = n <= FUSED_MAX_N && !no_fused();
    /* the fused kernel skips its writes while a deferred scan is pending; the cuBLAS path cannot */
    SGTRY(check_device_args(ctx, {{W, "W"}, {V, "V"}, {gW, "gW"}, {G, eigh ? "gV" : "gF"}}, {{gA, "gA"}}, fused));
    const T p = (T)sg_degen_param(mode, param, f32);
    const int fk = fn ? (int)fn->kind : 0;
    const double fp = fn ? fn->p : 0;

    Arg args[5];
    args[0].set(W, 1, true, false, "W staging");
    args[1].set(V, n, true, false, "V staging");
    args[2].set(gW, 1, true, false, "gW staging");
    args[3].set(G, n, true, false, eigh ? "gV staging" : "gF staging");
    args[4].set(gA, n, false, true, "gA staging");

    auto carve = [&](Bump &bp, int64_t cnt, int **flags, T **M, T **Tb, T **scale) {
        *flags = bp.take<int>(cnt);
        *M = fused ? nullptr : bp.take<T>(cnt * nn);
        *Tb = fused ? nullptr : bp.take<T>(cnt * nn);
        *scale = fused || !eigh ? nullptr : bp.take<T>(cnt);
    };
    auto scratch = [&](int64_t cnt) {
        Bump bp(nullptr);
        int *f;
        T *a, *b, *c;
        carve(bp, cnt, &f, &a, &b, &c);
        return bp.off;
    };
    bool soft = false; /* chunked: this chunk's SG_ERR_DOMAIN came after gA was written */
    auto body = [&](int64_t b0, int64_t cnt, void *scr) -> sg_status {
        Bump bp(scr);
        int *flags;
        T *M, *Tb, *scale;
        carve(bp, cnt, &flags, &M, &Tb, &scale);
        const sg_mat &w = args[0].dev, &v = args[1].dev, &gw = args[2].dev, &g = args[3].dev, &ga = args[4].dev;
        const T *vd = (const T *)v.data, *gd = args[3].present() ? (const T *)g.data : nullptr;
        const T *gwd = args[2].present() ? (const T *)gw.data : nullptr;
        cudaStream_t st = stream_of(ctx);
        int64_t first;
        int bits;
        if (!eigh) { /* domain of f and f' first: nothing is written for a bad chunk (flags end up zero otherwise) */
            k_spectral_fn<T><<<grid_1d(ctx, cnt, 128), 128, 0, st>>>((const T *)w.data, w.stride, (int)n, cnt, SPF_CHECK,
                                                                   1, fk, fp, nullptr, nullptr, 0, flags);
            CU_LAUNCH_CHECK(ctx);
            SGTRY(first_flagged(ctx, flags, cnt, &first, &bits));
            if (first >= 0)
                return sg_fail(ctx, SG_ERR_DOMAIN, b0 + first,
                               "matfunc_backward: an eigenvalue of matrix %lld is outside the domain of %s (or %s or its "
                               "derivative is not finite there)",
                               (long long)(b0 + first), fn_name(fn), fn_name(fn));
        }
        if (fused) {
            FusedArgs<T> a;
            a.W = (const T *)w.data; a.sW = w.stride;
            a.V = vd; a.ldV = v.ld; a.sV = v.stride;
            a.gW = gwd; a.sgW = gwd ? gw.stride : 0;
            a.G = gd; a.ldG = gd ? g.ld : 0; a.sG = gd ? g.stride : 0;
            a.gA = (T *)ga.data; a.ldA = ga.ld; a.sA = ga.stride;
            a.n = (int)n; a.batch = cnt;
            a.mode = (int)mode; a.param = p;
            a.fkind = fk; a.fp = fp; a.rel = SG_DIVDIFF_REL;
            a.flags = flags;
            a.nskip = sg_cuda_finite_guard(ctx, &a.skip);
            SGTRY(launch_fused<T, KIND>(ctx, a));
        } else {
            cublasHandle_t h = sg_cu(ctx)->blas;
            const int gr = grid_1d(ctx, nn * cnt, 256);
            if (eigh) {
                CU_TRY(ctx, cudaMemsetAsync(flags, 0, (size_t)cnt * sizeof(int), st));
                k_scale<T><<<grid_1d(ctx, cnt * 256, 256), 256, 0, st>>>((const T *)w.data, w.stride, (int)n, cnt, 0, scale);
                CU_LAUNCH_CHECK(ctx);
                if (gd) /* M = Vᵀ gV */
                    CUBLAS_TRY(ctx, gemm(h, TR, NT, n, n, n, T(1), vd, v.ld, v.stride, gd, g.ld, g.stride, T(0), M, n, nn, cnt));
            } else { /* M = (Vᵀ gF) V */
                CUBLAS_TRY(ctx, gemm(h, TR, NT, n, n, n, T(1), vd, v.ld, v.stride, gd, g.ld, g.stride, T(0), Tb, n, nn, cnt));
                CUBLAS_TRY(ctx, gemm(h, NT, NT, n, n, n, T(1), Tb, n, nn, vd, v.ld, v.stride, T(0), M, n, nn, cnt));
            }
            k_middle<T, KIND><<<gr, 256, 0, st>>>(M, (int)n, cnt, (const T *)w.data, w.stride, gwd, gwd ? gw.stride : 0,
                                                  gd != nullptr, (int)mode, p, scale, fk, fp, SG_DIVDIFF_REL, flags);
            CU_LAUNCH_CHECK(ctx);
            /* gA = sym(V (M' Vᵀ)) */
            CUBLAS_TRY(ctx, gemm(h, NT, TR, n, n, n, T(1), M, n, nn, vd, v.ld, v.stride, T(0), Tb, n, nn, cnt));
            CUBLAS_TRY(ctx, gemm(h, NT, NT, n, n, n, T(1), vd, v.ld, v.stride, Tb, n, nn, T(0), M, n, nn, cnt));
            k_sym_store<T><<<gr, 256, 0, st>>>(M, (int)n, cnt, (T *)ga.data, ga.ld, ga.stride, flags);
            CU_LAUNCH_CHECK(ctx);
        }
        SGTRY(first_flagged(ctx, flags, cnt, &first, &bits));
        if (first < 0) return SG_OK;
        const long long bi = (long long)(b0 + first);
        if (!eigh) {
            soft = true; /* gA is written: the next chunks are computed too, as on the CPU */
            return sg_fail(ctx, SG_ERR_DOMAIN, b0 + first, "matfunc_backward: non-finite gradient in matrix %lld (%s)", bi,
                           fn_name(fn));
        }
        if ((bits & FLAG_TIE) && mode == SG_DEGEN_EXACT)
            return sg_fail(ctx, SG_ERR_DEGENERATE, b0 + first,
                           "eigh_backward: tied eigenvalues in matrix %lld give inf/NaN in exact mode "
                           "(use SG_DEGEN_MASK for gauge-invariant losses, or LORENTZ)", bi);
        static const char *names[] = {"exact", "mask", "lorentz", "taylor"};
        return sg_fail(ctx, SG_ERR_DEGENERATE, b0 + first, "eigh_backward: non-finite gradient in matrix %lld (%s mode%s)",
                       bi, names[(int)mode & 3], mode == SG_DEGEN_TAYLOR ? ": Taylor is infinite at a tie at 0 or for |λ| near underflow" : "");
    };
    return chunked(ctx, args, 5, batch, scratch, body, &soft);
}

/* ---- SVD backward (fused for max(m,n) <= 64, cuBLAS strided-batched beyond) ---------------------- */
template <typename T>
sg_status svd_backward(sg_ctx *ctx, const sg_mat *U, const sg_mat *S, const sg_mat *V, const sg_mat *gU,
                       const sg_mat *gS, const sg_mat *gV, sg_degen mode, double param, sg_mat *gA)
{
    const int64_t m = U->rows, n = V->rows, k = m < n ? m : n, batch = U->batch, kk = k * k;
    SGTRY(size_ok(ctx, m > n ? m : n, "svd_backward"));
    const T p = (T)sg_degen_param(mode, param, sizeof(T) == 4);
    const int rect = m > n && gU ? RECT_TALL : m < n && gV ? RECT_WIDE : RECT_NONE;
    const int64_t ysize = rect == RECT_TALL ? m * k : k * n; /* Y (m×k) or H (k×n) */
    /* 6 tiles of 64×65 f64 = 200 KB: within sm_90's opt-in shared memory, not every GPU's. f64 above 32
       takes the cuBLAS path: on an H200 (2026-11-30, batch 10000) fused vs cuBLAS was 4.57 vs 3.86 ms at
       n = 64 in f64 (one 200 KB block per SM), while f64 n = 32 (0.91 vs 1.13) and f32 n = 32 (0.78 vs
       1.15) and n = 64 (2.72 vs 2.76) favour or tie the fused kernel. SG_GRAD_NO_FUSED=1 forces cuBLAS. */
    const int64_t fused_max = sizeof(T) == 8 ? 32 : FUSED_MAX_N;
    const bool fused = (m > n ? m : n) <= fused_max && !no_fused() &&
                       fused_svd_smem_for<T>((int)m, (int)n) <= (size_t)sg_cu(ctx)->prop.sharedMemPerBlockOptin;
    /* the fused kernel skips its writes while a deferred scan is pending; the cuBLAS path cannot */
    SGTRY(check_device_args(ctx, {{U, "U"}, {S, "S"}, {V, "V"}, {gU, "gU"}, {gS, "gS"}, {gV, "gV"}}, {{gA, "gA"}},
                            fused));

    /* full_matrices: the first k columns of U, V, gU, gV take part; a tall A's U⊥ (a wide A's V⊥) with a
       cotangent is folded into gU_k (gV_k) first, as on the CPU (src/cpu_grad_impl.h): G = gW_k − W⊥(gW⊥ᵀW_k)
       into scratch, two strided-batched products (PyTorch instead narrows the cotangent to k columns). */
    const int64_t foldU = m > n && gU && U->cols == m ? m - k : 0, foldV = m < n && gV && V->cols == n ? n - k : 0;
    const int64_t fold = foldU + foldV, frows = foldU ? m : n; /* at most one is nonzero */
    Arg args[7];
    args[0].set(U, foldU ? m : k, true, false, "U staging");
    args[1].set(S, 1, true, false, "S staging");
    args[2].set(V, foldV ? n : k, true, false, "V staging");
    args[3].set(gU, foldU ? m : k, true, false, "gU staging");
    args[4].set(gS, 1, true, false, "gS staging");
    args[5].set(gV, foldV ? n : k, true, false, "gV staging");
    args[6].set(gA, n, false, true, "gA staging");

    auto carve = [&](Bump &bp, int64_t cnt, T **P, T **Q, T **I, T **Y, T **scale, T **Gf, T **Ft, int **flags) {
        *P = gU && !fused ? bp.take<T>(cnt * kk) : nullptr;
        *Q = gV && !fused ? bp.take<T>(cnt * kk) : nullptr;
        *I = fused ? nullptr : bp.take<T>(cnt * kk);
        *Y = fused ? nullptr : bp.take<T>(cnt * ysize);
        *scale = fused ? nullptr : bp.take<T>(cnt);
        *Gf = fold ? bp.take<T>(cnt * frows * k) : nullptr;
        *Ft = fold ? bp.take<T>(cnt * fold * k) : nullptr;
        *flags = bp.take<int>(cnt);
    };
    auto scratch = [&](int64_t cnt) {
        Bump bp(nullptr);
        T *a, *b, *c, *d, *e, *g, *t;
        int *f;
        carve(bp, cnt, &a, &b, &c, &d, &e, &g, &t, &f);
        return bp.off;
    };
    auto body = [&](int64_t b0, int64_t cnt, void *scr) -> sg_status {
        Bump bp(scr);
        T *P, *Q, *I, *Y, *scale, *Gf, *Ft;
        int *flags;
        carve(bp, cnt, &P, &Q, &I, &Y, &scale, &Gf, &Ft, &flags);
        const sg_mat &u = args[0].dev, &s = args[1].dev, &v = args[2].dev, &gs = args[4].dev, &ga = args[6].dev;
        sg_mat gu = args[3].dev, gv = args[5].dev; /* the folded one is replaced by Gf */
        const T *ud = (const T *)u.data, *sd = (const T *)s.data, *vd = (const T *)v.data;
        const T *gsd = gS ? (const T *)gs.data : nullptr;
        cublasHandle_t h = sg_cu(ctx)->blas;
        cudaStream_t st = stream_of(ctx);
        if (fold) { /* reads unscanned inputs when the scan is deferred: writes only scratch */
            const sg_mat &w = foldU ? u : v;
            sg_mat &g = foldU ? gu : gv;
            const T *wd = (const T *)w.data, *gd = (const T *)g.data;
            CUBLAS_TRY(ctx, gemm(h, TR, NT, fold, k, frows, T(1), gd + k * g.ld, g.ld, g.stride, wd, w.ld, w.stride, T(0),
                                 Ft, fold, fold * k, cnt)); /* Ft = gW⊥ᵀ W_k */
            SGTRY(copy2d(ctx, (char *)Gf, frows, frows * k, (const char *)gd, g.ld, g.stride, frows, k, cnt, sizeof(T),
                         cudaMemcpyDeviceToDevice));
            CUBLAS_TRY(ctx, gemm(h, NT, NT, frows, k, fold, T(-1), wd + k * w.ld, w.ld, w.stride, Ft, fold, fold * k, T(1),
                                 Gf, frows, frows * k, cnt)); /* Gf = gW_k − W⊥ Ft */
            g.data = Gf, g.ld = frows, g.stride = frows * k, g.cols = k;
        }
        const T *gud = gU ? (const T *)gu.data : nullptr, *gvd = gV ? (const T *)gv.data : nullptr;
        if (fused) {
            FusedSvdArgs<T> a;
            a.U = ud; a.ldU = u.ld; a.sU = u.stride;
            a.S = sd; a.sS = s.stride;
            a.V = vd; a.ldV = v.ld; a.sV = v.stride;
            a.gU = gud; a.ldgU = gud ? gu.ld : 0; a.sgU = gud ? gu.stride : 0;
            a.gS = gsd; a.sgS = gsd ? gs.stride : 0;
            a.gV = gvd; a.ldgV = gvd ? gv.ld : 0; a.sgV = gvd ? gv.stride : 0;
            a.gA = (T *)ga.data; a.ldA = ga.ld; a.sA = ga.stride;
            a.m = (int)m; a.n = (int)n; a.batch = cnt;
            a.mode = (int)mode; a.param = p;
            a.flags = flags;
            a.nskip = sg_cuda_finite_guard(ctx, &a.skip);
            SGTRY(launch_fused_svd<T>(ctx, a));
        } else {
        if (gud) CUBLAS_TRY(ctx, gemm(h, TR, NT, k, k, m, T(1), ud, u.ld, u.stride, gud, gu.ld, gu.stride, T(0), P, k, kk, cnt));
        if (gvd) CUBLAS_TRY(ctx, gemm(h, TR, NT, k, k, n, T(1), vd, v.ld, v.stride, gvd, gv.ld, gv.stride, T(0), Q, k, kk, cnt));
        CU_TRY(ctx, cudaMemsetAsync(flags, 0, (size_t)cnt * sizeof(int), st));
        k_scale<T><<<grid_1d(ctx, cnt * 256, 256), 256, 0, st>>>(sd, s.stride, (int)k, cnt, 1, scale); /* σ scaling */
        CU_LAUNCH_CHECK(ctx);
        k_svd_inner<T><<<grid_1d(ctx, kk * cnt, 256), 256, 0, st>>>(P, Q, sd, s.stride, gsd, gsd ? gs.stride : 0, I,
                                                                    (int)k, cnt, (int)mode, p, scale, rect, flags);
        CU_LAUNCH_CHECK(ctx);
        if (rect == RECT_TALL) { /* gA = (U I' + gU Σ⁻¹) Vᵀ */
            k_div_sigma<T><<<grid_1d(ctx, m * k * cnt, 256), 256, 0, st>>>(gud, gu.ld, gu.stride, sd, s.stride, Y,
                                                                          (int)m, (int)k, cnt, 0);
            CU_LAUNCH_CHECK(ctx);
            CUBLAS_TRY(ctx, gemm(h, NT, NT, m, k, k, T(1), ud, u.ld, u.stride, I, k, kk, T(1), Y, m, ysize, cnt));
            CUBLAS_TRY(ctx, gemm(h, NT, TR, m, n, k, T(1), Y, m, ysize, vd, v.ld, v.stride, T(0), (T *)ga.data, ga.ld,
                                 ga.stride, cnt));
        } else { /* gA = U (I' Vᵀ + [wide] Σ⁻¹ gVᵀ) */
            T beta = T(0);
            if (rect == RECT_WIDE) {
                k_div_sigma<T><<<grid_1d(ctx, k * n * cnt, 256), 256, 0, st>>>(gvd, gv.ld, gv.stride, sd, s.stride, Y,
                                                                              (int)k, (int)n, cnt, 1);
                CU_LAUNCH_CHECK(ctx);
                beta = T(1);
            }
            CUBLAS_TRY(ctx, gemm(h, NT, TR, k, n, k, T(1), I, k, kk, vd, v.ld, v.stride, beta, Y, k, ysize, cnt));
            CUBLAS_TRY(ctx, gemm(h, NT, NT, m, n, k, T(1), ud, u.ld, u.stride, Y, k, ysize, T(0), (T *)ga.data, ga.ld,
                                 ga.stride, cnt));
        }
        k_flag_nonfinite<T><<<grid_1d(ctx, m * n * cnt, 256), 256, 0, st>>>((const T *)ga.data, ga.ld, ga.stride, (int)m,
                                                                            (int)n, cnt, flags);
        CU_LAUNCH_CHECK(ctx);
        }
        int64_t first;
        int bits;
        SGTRY(first_flagged(ctx, flags, cnt, &first, &bits));
        if (first < 0) return SG_OK;
        const long long bi = (long long)(b0 + first);
        if ((bits & FLAG_TIE) && mode == SG_DEGEN_EXACT)
            return sg_fail(ctx, SG_ERR_DEGENERATE, b0 + first,
                           "svd_backward: tied singular values in matrix %lld give inf/NaN in exact mode "
                           "(use SG_DEGEN_MASK for gauge-invariant losses, or LORENTZ)", bi);
        return sg_fail(ctx, SG_ERR_DEGENERATE, b0 + first,
                       "svd_backward: non-finite gradient in matrix %lld: a tie, or σ = 0 with a gU/gV term of a "
                       "rectangular input (Σ⁻¹)", bi);
    };
    return chunked(ctx, args, 7, batch, scratch, body);
}

/* ---- eigh-based forward ops: matfunc, Σ f(λ) (log det = Σ log λ) ------------------------------- */
/* what = SPF_FVAL: F = V f(Λ) Vᵀ into out.  SPF_FDER: loss Σ f(λ), gradient V f'(Λ) Vᵀ into out if given.
   Domain (and finiteness of f, f' in T) is checked before out is written → SG_ERR_DOMAIN, which stops the
   call; a non-finite loss or output is SG_ERR_DOMAIN too, found after they are written, and the remaining
   chunks are computed (as on the CPU, which records the first and carries on). Wout, Vout (optional; need
   out): the chunk's eigendecomposition, copied once its out is known to be good and no earlier chunk's
   overflowed (the CPU writes them only when every F is good). */
template <typename T>
sg_status eig_spectral(sg_ctx *ctx, const sg_mat *A, int what, const sg_fn *fn, sg_mat *loss, sg_mat *out,
                       const char *op, sg_mat *Wout = nullptr, sg_mat *Vout = nullptr)
{
    const int64_t n = A->rows, batch = A->batch, nn = n * n;
    SGTRY(size_ok(ctx, n, op));
    const bool need_v = out != nullptr, big = n > FUSED_MAX_N;
    const int fk = (int)fn->kind, der = what == SPF_FDER && need_v;
    const double fp = fn->p;
    const sg_dtype dt = dtype_of<T>();

    Arg args[5];
    args[0].set(A, n, true, false, "A staging");
    args[1].set(loss, 1, false, true, "loss staging");
    args[2].set(out, n, false, true, what == SPF_FVAL ? "F staging" : "gA staging");
    args[3].set(Wout, 1, false, true, "W staging");
    args[4].set(Vout, n, false, true, "V staging");

    auto carve = [&](Bump &bp, int64_t cnt, T **W, T **V, T **d, int **flags, T **Y, T **Z) {
        *W = bp.take<T>(cnt * n);
        *V = need_v ? bp.take<T>(cnt * nn) : nullptr;
        *d = need_v ? bp.take<T>(cnt * n) : nullptr;
        *flags = bp.take<int>(cnt);
        *Y = need_v && big ? bp.take<T>(cnt * nn) : nullptr;
        *Z = need_v && big ? bp.take<T>(cnt * nn) : nullptr;
    };
    auto scratch = [&](int64_t cnt) {
        Bump bp(nullptr);
        T *a, *b, *c, *e, *f;
        int *g;
        carve(bp, cnt, &a, &b, &c, &g, &e, &f);
        return bp.off;
    };
    bool soft = false, spoilt = false; /* soft: see chunked; spoilt: an earlier chunk overflowed */
    auto body = [&](int64_t b0, int64_t cnt, void *scr) -> sg_status {
        Bump bp(scr);
        T *W, *V, *d, *Y, *Z;
        int *flags;
        carve(bp, cnt, &W, &V, &d, &flags, &Y, &Z);
        sg_mat wm = dense_view(W, dt, cnt, n, 1), vm = dense_view(V, dt, cnt, n, n);
        sg_status s;
        {
            /* eigh on device buffers; A was scanned already (host: the front-end; device: the entry point's
               check_device_args, over the whole batch). */
            CtxRestore keep(ctx);
            ctx->check_finite = 0;
            ctx->mem = SG_MEM_DEVICE;
            s = sg_cuda_eigh(ctx, &args[0].dev, &wm, need_v ? &vm : nullptr);
        }
        if (s != SG_OK) return nested(ctx, s, b0);
        SGTRY(sg_cuda_bind_stream(ctx));
        const sg_mat *lm = args[1].present() ? &args[1].dev : nullptr;
        k_spectral_fn<T><<<grid_1d(ctx, cnt, 128), 128, 0, stream_of(ctx)>>>(
            W, n, (int)n, cnt, what, der, fk, fp, d, lm ? (T *)lm->data : nullptr, lm ? lm->stride : 0, flags);
        CU_LAUNCH_CHECK(ctx);
        int64_t first, lfirst = -1; /* lfirst: the first matrix whose loss overflows */
        int bits;
        SGTRY(first_flagged(ctx, flags, cnt, &first, &bits));
        if (first >= 0) {
            if (bits & FLAG_DOMAIN) /* out not written (the loss only for this chunk's matrices in the domain) */
                return sg_fail(ctx, SG_ERR_DOMAIN, b0 + first,
                               "%s: an eigenvalue of matrix %lld is outside the domain of %s (or %s%s is not finite there)",
                               op, (long long)(b0 + first), fn_name(fn), fn_name(fn), der ? " or its derivative" : "");
            lfirst = first; /* the loss is written: carry on to the gradient, as the CPU does */
            CU_TRY(ctx, cudaMemsetAsync(flags, 0, sizeof(int) * (size_t)cnt, stream_of(ctx)));
        }
        first = -1;
        if (need_v) {
            SGTRY(vdvt<T>(ctx, vm, d, args[2].dev, Y, Z, flags));
            SGTRY(first_flagged(ctx, flags, cnt, &first, &bits));
        }
        if (lfirst >= 0 || first >= 0) { /* out is written: the next chunks are computed too (chunked's soft) */
            soft = true;
            spoilt = true;
            if (lfirst >= 0 && (first < 0 || lfirst <= first))
                return sg_fail(ctx, SG_ERR_DOMAIN, b0 + lfirst, "%s: loss overflows in matrix %lld", op,
                               (long long)(b0 + lfirst));
            return sg_fail(ctx, SG_ERR_DOMAIN, b0 + first, "%s: %s overflows in matrix %lld", op,
                           what == SPF_FVAL ? "f(A)" : "the gradient", (long long)(b0 + first));
        }
        if (!need_v || spoilt) return SG_OK; /* W, V: not once an F has overflowed (the CPU writes none then) */
        const size_t es = sizeof(T);
        if (args[3].present())
            SGTRY(copy2d(ctx, (char *)args[3].dev.data, args[3].dev.ld, args[3].dev.stride, (const char *)W, n, n, n,
                         1, cnt, es, cudaMemcpyDeviceToDevice));
        if (args[4].present())
            SGTRY(copy2d(ctx, (char *)args[4].dev.data, args[4].dev.ld, args[4].dev.stride, (const char *)V, n, nn, n,
                         n, cnt, es, cudaMemcpyDeviceToDevice));
        return SG_OK;
    };
    return chunked(ctx, args, 5, batch, scratch, body, &soft);
}

/* ---- SVD- and Gram-based regularizers ----------------------------------------------------------- */
/* A loss that overflows T (FLAG_NONFINITE), found after the chunk's outputs are written: SG_ERR_DOMAIN for the
   first such matrix, the next chunks computed too (chunked's soft), as reg_svd / reg_ortho of
   src/cpu_grad_impl.h record it. Their gA is finite whenever the loss is (see there): not scanned. */
sg_status reg_overflow(sg_ctx *ctx, const int *flags, int64_t b0, int64_t cnt, const char *op, bool *soft)
{
    int64_t first;
    int bits;
    SGTRY(first_flagged(ctx, flags, cnt, &first, &bits));
    if (first < 0) return SG_OK;
    *soft = true;
    return sg_fail(ctx, SG_ERR_DOMAIN, b0 + first, "%s: loss overflows in matrix %lld", op, (long long)(b0 + first));
}

template <typename T> sg_status reg_svd(sg_ctx *ctx, sg_reg kind, const sg_mat *A, sg_mat *loss, sg_mat *gA)
{
    const int64_t m = A->rows, n = A->cols, k = m < n ? m : n, batch = A->batch;
    SGTRY(size_ok(ctx, m > n ? m : n, "regularizer"));
    const sg_dtype dt = dtype_of<T>();
    const bool vecs = gA != nullptr;
    Arg args[3];
    args[0].set(A, n, true, false, "A staging");
    args[1].set(loss, 1, false, true, "loss staging");
    args[2].set(gA, n, false, true, "gA staging");
    auto carve = [&](Bump &bp, int64_t cnt, T **S, T **U, T **V, int **flags) {
        *S = bp.take<T>(cnt * k);
        *U = vecs ? bp.take<T>(cnt * m * k) : nullptr;
        *V = vecs ? bp.take<T>(cnt * n * k) : nullptr;
        *flags = bp.take<int>(cnt);
    };
    auto scratch = [&](int64_t cnt) {
        Bump bp(nullptr);
        T *a, *b, *c;
        int *f;
        carve(bp, cnt, &a, &b, &c, &f);
        return bp.off;
    };
    const char *op = kind == SG_REG_SPECTRAL ? "spectral" : "nuclear";
    bool soft = false;
    auto body = [&](int64_t b0, int64_t cnt, void *scr) -> sg_status {
        Bump bp(scr);
        T *S, *U, *V;
        int *flags;
        carve(bp, cnt, &S, &U, &V, &flags);
        sg_mat sm = dense_view(S, dt, cnt, k, 1), um = dense_view(U, dt, cnt, m, k), vm = dense_view(V, dt, cnt, n, k);
        sg_status s;
        {
            CtxRestore keep(ctx);
            ctx->check_finite = 0; /* A scanned already (front-end or check_device_args) */
            ctx->mem = SG_MEM_DEVICE;
            s = sg_cuda_svd(ctx, &args[0].dev, 0, &sm, vecs ? &um : nullptr, vecs ? &vm : nullptr);
        }
        if (s != SG_OK) return nested(ctx, s, b0);
        SGTRY(sg_cuda_bind_stream(ctx));
        cudaStream_t st = stream_of(ctx);
        const sg_mat &lm = args[1].dev;
        k_vec_loss<T><<<grid_1d(ctx, cnt, 128), 128, 0, st>>>(S, k, (int)k, cnt,
                                                             kind == SG_REG_SPECTRAL ? VL_FIRST_SQ : VL_SUM,
                                                             (T *)lm.data, lm.stride, flags);
        CU_LAUNCH_CHECK(ctx);
        if (vecs) {
            const sg_mat &ga = args[2].dev;
            if (kind == SG_REG_SPECTRAL) {
                k_spectral_grad<T><<<grid_1d(ctx, m * n * cnt, 256), 256, 0, st>>>(
                    S, k, U, m, m * k, V, n, n * k, (T *)ga.data, ga.ld, ga.stride, (int)m, (int)n, cnt);
                CU_LAUNCH_CHECK(ctx);
            } else { /* NUCLEAR: U Vᵀ */
                CUBLAS_TRY(ctx, gemm(sg_cu(ctx)->blas, NT, TR, m, n, k, T(1), U, m, m * k, V, n, n * k, T(0),
                                     (T *)ga.data, ga.ld, ga.stride, cnt));
            }
        }
        return reg_overflow(ctx, flags, b0, cnt, op, &soft);
    };
    return chunked(ctx, args, 3, batch, scratch, body, &soft);
}

template <typename T> sg_status reg_ortho(sg_ctx *ctx, const sg_mat *A, sg_mat *loss, sg_mat *gA)
{
    const int64_t m = A->rows, n = A->cols, batch = A->batch, nn = n * n;
    SGTRY(size_ok(ctx, m > n ? m : n, "regularizer"));
    Arg args[3];
    args[0].set(A, n, true, false, "A staging");
    args[1].set(loss, 1, false, true, "loss staging");
    args[2].set(gA, n, false, true, "gA staging");
    auto scratch = [&](int64_t cnt) {
        Bump bp(nullptr);
        bp.take<T>(cnt * nn);
        bp.take<int>(cnt);
        return bp.off;
    };
    bool soft = false;
    auto body = [&](int64_t b0, int64_t cnt, void *scr) -> sg_status {
        Bump bp(scr);
        T *G = bp.take<T>(cnt * nn);
        int *flags = bp.take<int>(cnt);
        const sg_mat &a = args[0].dev, &lm = args[1].dev;
        const T *ad = (const T *)a.data;
        cudaStream_t st = stream_of(ctx);
        cublasHandle_t h = sg_cu(ctx)->blas;
        CUBLAS_TRY(ctx, gemm(h, TR, NT, n, n, m, T(1), ad, a.ld, a.stride, ad, a.ld, a.stride, T(0), G, n, nn, cnt));
        k_ortho<T><<<grid_1d(ctx, cnt * 256, 256), 256, 0, st>>>(G, (int)n, cnt, (T *)lm.data, lm.stride, flags);
        CU_LAUNCH_CHECK(ctx);
        if (args[2].present()) { /* 4 A (AᵀA − I) */
            const sg_mat &ga = args[2].dev;
            CUBLAS_TRY(ctx, gemm(h, NT, NT, m, n, n, T(4), ad, a.ld, a.stride, G, n, nn, T(0), (T *)ga.data, ga.ld,
                                 ga.stride, cnt));
        }
        return reg_overflow(ctx, flags, b0, cnt, "ortho", &soft);
    };
    return chunked(ctx, args, 3, batch, scratch, body, &soft);
}

/* Common entry: bind the stream, host pointer mode for the α/β scalars. */
sg_status enter(sg_ctx *ctx)
{
    SGTRY(sg_cuda_bind_stream(ctx));
    CUBLAS_TRY(ctx, cublasSetPointerMode(sg_cu(ctx)->blas, CUBLAS_POINTER_MODE_HOST));
    return SG_OK;
}

} // namespace

/* ---- backend entry points ------------------------------------------------------------------------ */
sg_status sg_cuda_eigh_backward(sg_ctx *ctx, const sg_mat *W, const sg_mat *V, const sg_mat *gW, const sg_mat *gV,
                                sg_degen mode, double param, sg_mat *gA)
{
    SG_DEVICE_SCOPE(ctx);
    SGTRY(enter(ctx));
    return V->dtype == SG_F32 ? sym_backward<float, FUSED_EIGH>(ctx, W, V, gW, gV, mode, param, nullptr, gA)
                              : sym_backward<double, FUSED_EIGH>(ctx, W, V, gW, gV, mode, param, nullptr, gA);
}

sg_status sg_cuda_matfunc_backward(sg_ctx *ctx, const sg_mat *W, const sg_mat *V, const sg_fn *fn, const sg_mat *gF,
                                   sg_mat *gA)
{
    SG_DEVICE_SCOPE(ctx);
    SGTRY(no_callback(ctx, fn, "matfunc_backward"));
    SGTRY(enter(ctx));
    return V->dtype == SG_F32
               ? sym_backward<float, FUSED_MATFUNC>(ctx, W, V, nullptr, gF, SG_DEGEN_EXACT, 0, fn, gA)
               : sym_backward<double, FUSED_MATFUNC>(ctx, W, V, nullptr, gF, SG_DEGEN_EXACT, 0, fn, gA);
}

sg_status sg_cuda_svd_backward(sg_ctx *ctx, const sg_mat *U, const sg_mat *S, const sg_mat *V, const sg_mat *gU,
                               const sg_mat *gS, const sg_mat *gV, sg_degen mode, double param, sg_mat *gA)
{
    SG_DEVICE_SCOPE(ctx);
    SGTRY(enter(ctx));
    return U->dtype == SG_F32 ? svd_backward<float>(ctx, U, S, V, gU, gS, gV, mode, param, gA)
                              : svd_backward<double>(ctx, U, S, V, gU, gS, gV, mode, param, gA);
}

sg_status sg_cuda_matfunc(sg_ctx *ctx, const sg_mat *A, const sg_fn *fn, sg_mat *F, sg_mat *W, sg_mat *V)
{
    SG_DEVICE_SCOPE(ctx);
    SGTRY(no_callback(ctx, fn, "matfunc"));
    SGTRY(enter(ctx));
    /* the whole batch before any chunk of F is written */
    SGTRY(check_device_args(ctx, {{A, "A"}}, {{F, "F"}, {W, "W"}, {V, "V"}}));
    return A->dtype == SG_F32 ? eig_spectral<float>(ctx, A, SPF_FVAL, fn, nullptr, F, "matfunc", W, V)
                              : eig_spectral<double>(ctx, A, SPF_FVAL, fn, nullptr, F, "matfunc", W, V);
}

sg_status sg_cuda_regularizer(sg_ctx *ctx, sg_reg kind, const sg_mat *A, const sg_fn *fn, sg_mat *loss, sg_mat *gA)
{
    SG_DEVICE_SCOPE(ctx);
    if (kind == SG_REG_EIGSUM) SGTRY(no_callback(ctx, fn, "regularizer"));
    SGTRY(enter(ctx));
    SGTRY(check_device_args(ctx, {{A, "A"}}, {{loss, "loss"}, {gA, "gA"}}));
    const bool f32 = A->dtype == SG_F32;
    switch (kind) {
    case SG_REG_SPECTRAL:
    case SG_REG_NUCLEAR: return f32 ? reg_svd<float>(ctx, kind, A, loss, gA) : reg_svd<double>(ctx, kind, A, loss, gA);
    case SG_REG_ORTHO: return f32 ? reg_ortho<float>(ctx, A, loss, gA) : reg_ortho<double>(ctx, A, loss, gA);
    case SG_REG_LOGDET: {
        static const sg_fn logf_ = {SG_FN_LOG, 0, nullptr, nullptr, nullptr};
        const char *op = "logdet (A must be symmetric positive definite)";
        return f32 ? eig_spectral<float>(ctx, A, SPF_FDER, &logf_, loss, gA, op)
                   : eig_spectral<double>(ctx, A, SPF_FDER, &logf_, loss, gA, op);
    }
    case SG_REG_EIGSUM:
        return f32 ? eig_spectral<float>(ctx, A, SPF_FDER, fn, loss, gA, "eigsum")
                   : eig_spectral<double>(ctx, A, SPF_FDER, fn, loss, gA, "eigsum");
    }
    return sg_fail(ctx, SG_ERR_ARG, -1, "regularizer: unknown kind %d", (int)kind);
}

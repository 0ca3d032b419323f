/* specgrad-bench: device side — info, measured roofline (D2D copy, cuBLAS gemm), device buffers, event
   timing with an L2 flush, and the raw cuSOLVER vendor baselines. Every CUDA / cuBLAS / cuSOLVER call is
   checked; a failure becomes a message (the row is marked ERROR), never a silent number.
   Without SG_HAVE_CUDA everything here reports "built without CUDA". */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef SG_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#define CK(call)                                                                                             \
    do {                                                                                                     \
        cudaError_t e_ = (call);                                                                             \
        if (e_ != cudaSuccess) {                                                                             \
            snprintf(why, len, "%s: %s (%s:%d)", #call, cudaGetErrorString(e_), __FILE__, __LINE__);          \
            cudaGetLastError();                                                                              \
            goto fail;                                                                                       \
        }                                                                                                    \
    } while (0)
#define CKS(call)                                                                                            \
    do {                                                                                                     \
        cusolverStatus_t e_ = (call);                                                                        \
        if (e_ != CUSOLVER_STATUS_SUCCESS) {                                                                 \
            snprintf(why, len, "%s: cusolver status %d (%s:%d)", #call, (int)e_, __FILE__, __LINE__);          \
            goto fail;                                                                                       \
        }                                                                                                    \
    } while (0)
#define CKB(call)                                                                                            \
    do {                                                                                                     \
        cublasStatus_t e_ = (call);                                                                          \
        if (e_ != CUBLAS_STATUS_SUCCESS) {                                                                   \
            snprintf(why, len, "%s: cublas status %d (%s:%d)", #call, (int)e_, __FILE__, __LINE__);            \
            goto fail;                                                                                       \
        }                                                                                                    \
    } while (0)

int gpu_probe(device_info *d)
{
    memset(d, 0, sizeof *d);
    char *why = d->why;
    size_t len = sizeof d->why;
    int count = 0;
    struct cudaDeviceProp p;
    CK(cudaGetDeviceCount(&count));
    if (count <= 0) { snprintf(why, len, "no CUDA device"); return 0; }
    int dev = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaGetDeviceProperties(&p, dev));
    snprintf(d->name, sizeof d->name, "%s", p.name);
    d->sms = p.multiProcessorCount;
    d->cc_major = p.major;
    d->cc_minor = p.minor;
    d->mem_total = p.totalGlobalMem;
    d->l2_bytes = (size_t)p.l2CacheSize;
    CK(cudaDriverGetVersion(&d->driver));
    CK(cudaRuntimeGetVersion(&d->runtime));
    d->present = 1;
    return 1;
fail:
    d->present = 0;
    return 0;
}

size_t gpu_free_bytes(void)
{
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) { cudaGetLastError(); return 0; }
    return fr;
}

int gpu_sync(char *why, size_t len)
{
    CK(cudaDeviceSynchronize());
    return 1;
fail:
    return 0;
}

void *gpu_stream_create(void)
{
    cudaStream_t s = NULL;
    if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) { cudaGetLastError(); return NULL; }
    return s;
}
void gpu_stream_destroy(void *s)
{
    if (s) cudaStreamDestroy((cudaStream_t)s);
}

/* ---- timer -------------------------------------------------------------------------------------------- */
struct gpu_timer {
    cudaStream_t s;
    cudaEvent_t a, b;
    void *flush;
    size_t flush_bytes;
    int iter;
};

gpu_timer *gpu_timer_create(void *stream, size_t l2_bytes, char *why, size_t len)
{
    gpu_timer *t = calloc(1, sizeof *t);
    if (!t) { snprintf(why, len, "host allocation failed"); return NULL; }
    t->s = (cudaStream_t)stream;
    t->flush_bytes = 2 * (l2_bytes ? l2_bytes : ((size_t)64 << 20));
    CK(cudaEventCreate(&t->a));
    CK(cudaEventCreate(&t->b));
    CK(cudaMalloc(&t->flush, t->flush_bytes));
    return t;
fail:
    gpu_timer_destroy(t);
    return NULL;
}

void gpu_timer_destroy(gpu_timer *t)
{
    if (!t) return;
    if (t->a) cudaEventDestroy(t->a);
    if (t->b) cudaEventDestroy(t->b);
    if (t->flush) cudaFree(t->flush);
    free(t);
}

/* Overwrites 2× the L2 size so the timed call starts with a cold cache (not timed). */
int gpu_flush_l2(gpu_timer *t)
{
    char why[256];
    size_t len = sizeof why;
    CK(cudaMemsetAsync(t->flush, (t->iter++ & 0x7f) + 1, t->flush_bytes, t->s));
    return 1;
fail:
    return 0;
}
int gpu_timer_start(gpu_timer *t)
{
    return cudaEventRecord(t->a, t->s) == cudaSuccess;
}
int gpu_timer_stop(gpu_timer *t, double *ms)
{
    float f = 0;
    if (cudaEventRecord(t->b, t->s) != cudaSuccess || cudaEventSynchronize(t->b) != cudaSuccess ||
        cudaEventElapsedTime(&f, t->a, t->b) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    *ms = f;
    return 1;
}

/* ---- roofline ----------------------------------------------------------------------------------------- */
int gpu_measure_roofline(device_info *d)
{
    char *why = d->roofline_note;
    size_t len = sizeof d->roofline_note;
    void *a = NULL, *b = NULL, *hbuf = NULL, *A = NULL, *B = NULL, *C = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    cublasHandle_t h = NULL;
    double t[16];
    float f;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    /* Copy: 1 GiB (or a quarter of free memory), bytes read + written. */
    size_t cb = (size_t)1 << 30, fr = gpu_free_bytes();
    if (cb > fr / 4) cb = fr / 4;
    CK(cudaMalloc(&a, cb));
    CK(cudaMalloc(&b, cb));
    CK(cudaMemset(a, 0x3f, cb));
    for (int r = 0; r < 12; r++) {
        CK(cudaEventRecord(e0, 0));
        CK(cudaMemcpyAsync(b, a, cb, cudaMemcpyDeviceToDevice, 0));
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        CK(cudaEventElapsedTime(&f, e0, e1));
        if (r >= 2) t[r - 2] = f;
    }
    d->copy_gbps = 2.0 * (double)cb / (median_of(t, 10) * 1e-3) / 1e9;
    CK(cudaFree(a)); a = NULL;
    CK(cudaFree(b)); b = NULL;

    /* GEMM: N×N×N, random (not zero) operands, default math mode (no TF32). */
    CKB(cublasCreate(&h));
    for (int dt = 0; dt < 2; dt++) {
        int N = 8192;
        size_t es = dt == SG_F32 ? 4 : 8, mb = (size_t)N * N * es;
        while (N > 1024 && 3 * mb > gpu_free_bytes() / 2) { N /= 2; mb = (size_t)N * N * es; }
        hbuf = malloc(mb);
        if (!hbuf) { snprintf(why, len, "host allocation failed"); goto fail; }
        uint64_t x = 88172645463325252ULL;
        for (size_t i = 0; i < (size_t)N * N; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            double v = (double)(x >> 11) / 9007199254740992.0 - 0.5;
            if (dt == SG_F32) ((float *)hbuf)[i] = (float)v; else ((double *)hbuf)[i] = v;
        }
        CK(cudaMalloc(&A, mb));
        CK(cudaMalloc(&B, mb));
        CK(cudaMalloc(&C, mb));
        CK(cudaMemcpy(A, hbuf, mb, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(B, hbuf, mb, cudaMemcpyHostToDevice));
        free(hbuf); hbuf = NULL;
        const double one = 1, zero = 0;
        const float onef = 1, zerof = 0;
        for (int r = 0; r < 7; r++) {
            CK(cudaEventRecord(e0, 0));
            if (dt == SG_F32)
                CKB(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, N, N, N, &onef, A, N, B, N, &zerof, C, N));
            else
                CKB(cublasDgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, N, N, N, &one, A, N, B, N, &zero, C, N));
            CK(cudaEventRecord(e1, 0));
            CK(cudaEventSynchronize(e1));
            CK(cudaEventElapsedTime(&f, e0, e1));
            if (r >= 2) t[r - 2] = f;
        }
        d->gemm_gflops[dt] = 2.0 * (double)N * N * N / (median_of(t, 5) * 1e-3) / 1e9;
        cudaFree(A); cudaFree(B); cudaFree(C);
        A = B = C = NULL;
    }
    cublasDestroy(h);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    snprintf(why, len, "copy: cudaMemcpy D2D %zu MiB, median of 10; gemm: cublas{S,D}gemm square, median of 5",
             cb >> 20);
    return 1;
fail:
    if (a) cudaFree(a);
    if (b) cudaFree(b);
    if (A) cudaFree(A);
    if (B) cudaFree(B);
    if (C) cudaFree(C);
    free(hbuf);
    if (h) cublasDestroy(h);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    return 0;
}

/* ---- device sets -------------------------------------------------------------------------------------- */
int gpu_set_alloc(buf_set *s, const op_layout *L, sg_dtype dt, int64_t batch, char *why, size_t len)
{
    memset(s, 0, sizeof *s);
    s->ntens = L->ntens;
    s->on_device = 1;
    size_t es = dt == SG_F32 ? 4 : 8;
    for (int i = 0; i < L->ntens; i++) {
        const tensor_spec *t = &L->t[i];
        s->bytes[i] = (size_t)batch * (t->is_int64 ? 8 : (size_t)(t->rows * t->cols) * es);
        s->m[i] = sg_mat_dense(NULL, dt, batch, t->rows, t->cols);
        CK(cudaMalloc(&s->m[i].data, s->bytes[i]));
    }
    return 1;
fail:
    gpu_set_free(s);
    return 0;
}

void gpu_set_free(buf_set *s)
{
    for (int i = 0; i < s->ntens; i++)
        if (s->m[i].data) { cudaFree(s->m[i].data); s->m[i].data = NULL; }
    s->ntens = 0;
}

int gpu_set_upload(buf_set *d, const buf_set *h, int64_t nb, char *why, size_t len)
{
    for (int i = 0; i < h->ntens; i++) {
        size_t per = h->bytes[i] / (size_t)h->m[i].batch;
        CK(cudaMemcpy(d->m[i].data, h->m[i].data, per * (size_t)nb, cudaMemcpyHostToDevice));
    }
    return 1;
fail:
    return 0;
}

int gpu_set_download(buf_set *h, const buf_set *d, int64_t nb, char *why, size_t len)
{
    for (int i = 0; i < h->ntens; i++) {
        size_t per = h->bytes[i] / (size_t)h->m[i].batch;
        CK(cudaMemcpy(h->m[i].data, d->m[i].data, per * (size_t)nb, cudaMemcpyDeviceToHost));
    }
    return 1;
fail:
    return 0;
}

/* ---- raw cuSOLVER baselines ------------------------------------------------------------------------- */
enum { CS_SYEVJ = 0, CS_XSYEV, CS_GESVDJ };

struct cusolver_bench {
    int kind;
    sg_dtype dt;
    int64_t n, batch, chunk;
    cudaStream_t stream;
    cusolverDnHandle_t h;
    syevjInfo_t sj;
    gesvdjInfo_t gj;
    cusolverDnParams_t params;
    void *A, *W, *U, *V, *dwork, *hwork;
    size_t dbytes, hbytes;
    int lwork;
    int *info;
};

int cusolver_has_baseline(op_id op, int64_t n, char *why, size_t len)
{
    if (op == OP_EIGH) return 1;
    if (op == OP_SVD && n <= 32) return 1;
    if (op == OP_SVD) snprintf(why, len, "no batched cuSOLVER SVD for n > 32 (gesvdjBatched is n ≤ 32)");
    else snprintf(why, len, "no raw cuSOLVER equivalent");
    return 0;
}

cusolver_bench *cusolver_bench_create(op_id op, sg_dtype dt, int64_t n, int64_t batch, void *stream, char *why,
                                      size_t len)
{
    cusolver_bench *c = calloc(1, sizeof *c);
    if (!c) { snprintf(why, len, "host allocation failed"); return NULL; }
    size_t es = dt == SG_F32 ? 4 : 8;
    cudaDataType cdt = dt == SG_F32 ? CUDA_R_32F : CUDA_R_64F;
    c->dt = dt; c->n = n; c->batch = batch; c->stream = (cudaStream_t)stream; c->chunk = batch;
    c->kind = op == OP_SVD ? CS_GESVDJ : n <= 32 ? CS_SYEVJ : CS_XSYEV;
    if (batch > INT32_MAX) { snprintf(why, len, "batch exceeds int range"); goto fail; }
    CKS(cusolverDnCreate(&c->h));
    CKS(cusolverDnSetStream(c->h, c->stream));
    CK(cudaMalloc(&c->A, (size_t)(n * n * batch) * es));
    CK(cudaMalloc(&c->W, (size_t)(n * batch) * es));
    CK(cudaMalloc((void **)&c->info, sizeof(int) * (size_t)batch));
    if (c->kind == CS_SYEVJ) {
        CKS(cusolverDnCreateSyevjInfo(&c->sj));
        if (dt == SG_F32)
            CKS(cusolverDnSsyevjBatched_bufferSize(c->h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, (int)n,
                                                   (const float *)c->A, (int)n, (const float *)c->W, &c->lwork, c->sj,
                                                   (int)batch));
        else
            CKS(cusolverDnDsyevjBatched_bufferSize(c->h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, (int)n,
                                                   (const double *)c->A, (int)n, (const double *)c->W, &c->lwork,
                                                   c->sj, (int)batch));
        CK(cudaMalloc(&c->dwork, (size_t)c->lwork * es));
    } else if (c->kind == CS_XSYEV) {
        /* n·lda·batch ≤ INT32_MAX per call: chunk the batch; and at most 32767 matrices per call, as in
           cuda/linalg.cu (XSYEV_MAX_BATCH: batch 100000 at n = 64 gave CUSOLVER_STATUS_INTERNAL_ERROR on an
           H200, 2026-11-30). */
        int64_t lim = (int64_t)INT32_MAX / (n * n);
        if (lim > 32767) lim = 32767;
        if (c->chunk > lim) c->chunk = lim;
        CKS(cusolverDnCreateParams(&c->params));
        CKS(cusolverDnXsyevBatched_bufferSize(c->h, c->params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n,
                                              cdt, c->A, n, cdt, c->W, cdt, &c->dbytes, &c->hbytes, c->chunk));
        CK(cudaMalloc(&c->dwork, c->dbytes ? c->dbytes : 1));
        c->hwork = malloc(c->hbytes ? c->hbytes : 1);
        if (!c->hwork) { snprintf(why, len, "host workspace allocation failed"); goto fail; }
    } else {
        CKS(cusolverDnCreateGesvdjInfo(&c->gj));
        CK(cudaMalloc(&c->U, (size_t)(n * n * batch) * es));
        CK(cudaMalloc(&c->V, (size_t)(n * n * batch) * es));
        if (dt == SG_F32)
            CKS(cusolverDnSgesvdjBatched_bufferSize(c->h, CUSOLVER_EIG_MODE_VECTOR, (int)n, (int)n,
                                                    (const float *)c->A, (int)n, (const float *)c->W,
                                                    (const float *)c->U, (int)n, (const float *)c->V, (int)n,
                                                    &c->lwork, c->gj, (int)batch));
        else
            CKS(cusolverDnDgesvdjBatched_bufferSize(c->h, CUSOLVER_EIG_MODE_VECTOR, (int)n, (int)n,
                                                    (const double *)c->A, (int)n, (const double *)c->W,
                                                    (const double *)c->U, (int)n, (const double *)c->V, (int)n,
                                                    &c->lwork, c->gj, (int)batch));
        CK(cudaMalloc(&c->dwork, (size_t)c->lwork * es));
    }
    return c;
fail:
    cusolver_bench_destroy(c);
    return NULL;
}

void cusolver_bench_destroy(cusolver_bench *c)
{
    if (!c) return;
    if (c->sj) cusolverDnDestroySyevjInfo(c->sj);
    if (c->gj) cusolverDnDestroyGesvdjInfo(c->gj);
    if (c->params) cusolverDnDestroyParams(c->params);
    if (c->h) cusolverDnDestroy(c->h);
    if (c->A) cudaFree(c->A);
    if (c->W) cudaFree(c->W);
    if (c->U) cudaFree(c->U);
    if (c->V) cudaFree(c->V);
    if (c->dwork) cudaFree(c->dwork);
    if (c->info) cudaFree(c->info);
    free(c->hwork);
    free(c);
}

int cusolver_bench_prepare(cusolver_bench *c, const buf_set *d, char *why, size_t len)
{
    size_t es = c->dt == SG_F32 ? 4 : 8;
    CK(cudaMemcpyAsync(c->A, d->m[0].data, (size_t)(c->n * c->n * c->batch) * es, cudaMemcpyDeviceToDevice,
                       c->stream));
    return 1;
fail:
    return 0;
}

int cusolver_bench_call(cusolver_bench *c, char *why, size_t len)
{
    int n = (int)c->n, b = (int)c->batch;
    size_t es = c->dt == SG_F32 ? 4 : 8;
    cudaDataType cdt = c->dt == SG_F32 ? CUDA_R_32F : CUDA_R_64F;
    if (c->kind == CS_SYEVJ) {
        if (c->dt == SG_F32)
            CKS(cusolverDnSsyevjBatched(c->h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, (float *)c->A, n,
                                        (float *)c->W, (float *)c->dwork, c->lwork, c->info, c->sj, b));
        else
            CKS(cusolverDnDsyevjBatched(c->h, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n, (double *)c->A, n,
                                        (double *)c->W, (double *)c->dwork, c->lwork, c->info, c->sj, b));
    } else if (c->kind == CS_XSYEV) {
        for (int64_t off = 0; off < c->batch; off += c->chunk) {
            int64_t nb = c->batch - off < c->chunk ? c->batch - off : c->chunk;
            char *A = (char *)c->A + (size_t)(off * c->n * c->n) * es;
            char *W = (char *)c->W + (size_t)(off * c->n) * es;
            CKS(cusolverDnXsyevBatched(c->h, c->params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, c->n, cdt, A,
                                       c->n, cdt, W, cdt, c->dwork, c->dbytes, c->hwork, c->hbytes, c->info + off,
                                       nb));
        }
    } else {
        if (c->dt == SG_F32)
            CKS(cusolverDnSgesvdjBatched(c->h, CUSOLVER_EIG_MODE_VECTOR, n, n, (float *)c->A, n, (float *)c->W,
                                         (float *)c->U, n, (float *)c->V, n, (float *)c->dwork, c->lwork, c->info,
                                         c->gj, b));
        else
            CKS(cusolverDnDgesvdjBatched(c->h, CUSOLVER_EIG_MODE_VECTOR, n, n, (double *)c->A, n, (double *)c->W,
                                         (double *)c->U, n, (double *)c->V, n, (double *)c->dwork, c->lwork,
                                         c->info, c->gj, b));
    }
    CK(cudaGetLastError());
    return 1;
fail:
    return 0;
}

int cusolver_bench_finish(cusolver_bench *c, buf_set *h, int64_t nb, char *why, size_t len)
{
    size_t es = c->dt == SG_F32 ? 4 : 8, nn = (size_t)(c->n * c->n);
    int *info = malloc(sizeof(int) * (size_t)c->batch);
    if (!info) { snprintf(why, len, "host allocation failed"); return 0; }
    CK(cudaStreamSynchronize(c->stream));
    CK(cudaMemcpy(info, c->info, sizeof(int) * (size_t)c->batch, cudaMemcpyDeviceToHost));
    for (int64_t i = 0; i < c->batch; i++)
        if (info[i] != 0) {
            snprintf(why, len, "cuSOLVER info[%lld] = %d", (long long)i, info[i]);
            goto fail;
        }
    if (h && nb > 0) {
        CK(cudaMemcpy(h->m[1].data, c->W, (size_t)(nb * c->n) * es, cudaMemcpyDeviceToHost));
        if (c->kind == CS_GESVDJ) {
            CK(cudaMemcpy(h->m[2].data, c->U, nn * (size_t)nb * es, cudaMemcpyDeviceToHost));
            CK(cudaMemcpy(h->m[3].data, c->V, nn * (size_t)nb * es, cudaMemcpyDeviceToHost));
        } else {
            CK(cudaMemcpy(h->m[2].data, c->A, nn * (size_t)nb * es, cudaMemcpyDeviceToHost));
        }
    }
    free(info);
    return 1;
fail:
    free(info);
    return 0;
}

#else /* !SG_HAVE_CUDA ------------------------------------------------------------------------------------ */

#define NOCUDA(why, len) snprintf(why, len, "specgrad-bench built without CUDA (SG_CUDA=OFF)")
int gpu_probe(device_info *d)
{
    memset(d, 0, sizeof *d);
    NOCUDA(d->why, sizeof d->why);
    return 0;
}
int gpu_measure_roofline(device_info *d) { NOCUDA(d->roofline_note, sizeof d->roofline_note); return 0; }
size_t gpu_free_bytes(void) { return 0; }
int gpu_sync(char *why, size_t len) { NOCUDA(why, len); return 0; }
void *gpu_stream_create(void) { return NULL; }
void gpu_stream_destroy(void *s) { (void)s; }
gpu_timer *gpu_timer_create(void *s, size_t l2, char *why, size_t len) { (void)s; (void)l2; NOCUDA(why, len); return NULL; }
void gpu_timer_destroy(gpu_timer *t) { (void)t; }
int gpu_flush_l2(gpu_timer *t) { (void)t; return 0; }
int gpu_timer_start(gpu_timer *t) { (void)t; return 0; }
int gpu_timer_stop(gpu_timer *t, double *ms) { (void)t; (void)ms; return 0; }
int gpu_set_alloc(buf_set *s, const op_layout *L, sg_dtype dt, int64_t b, char *why, size_t len)
{ (void)s; (void)L; (void)dt; (void)b; NOCUDA(why, len); return 0; }
void gpu_set_free(buf_set *s) { (void)s; }
int gpu_set_upload(buf_set *d, const buf_set *h, int64_t nb, char *why, size_t len)
{ (void)d; (void)h; (void)nb; NOCUDA(why, len); return 0; }
int gpu_set_download(buf_set *h, const buf_set *d, int64_t nb, char *why, size_t len)
{ (void)d; (void)h; (void)nb; NOCUDA(why, len); return 0; }
int cusolver_has_baseline(op_id op, int64_t n, char *why, size_t len) { (void)op; (void)n; NOCUDA(why, len); return 0; }
cusolver_bench *cusolver_bench_create(op_id op, sg_dtype dt, int64_t n, int64_t b, void *s, char *why, size_t len)
{ (void)op; (void)dt; (void)n; (void)b; (void)s; NOCUDA(why, len); return NULL; }
void cusolver_bench_destroy(cusolver_bench *c) { (void)c; }
int cusolver_bench_prepare(cusolver_bench *c, const buf_set *d, char *why, size_t len) { (void)c; (void)d; NOCUDA(why, len); return 0; }
int cusolver_bench_call(cusolver_bench *c, char *why, size_t len) { (void)c; NOCUDA(why, len); return 0; }
int cusolver_bench_finish(cusolver_bench *c, buf_set *h, int64_t nb, char *why, size_t len)
{ (void)c; (void)h; (void)nb; NOCUDA(why, len); return 0; }
#endif

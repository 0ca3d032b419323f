/* The emulated device itself (tests/emu/fake_cuda.cpp), and the backend paths only it can drive on purpose.
   1. The model: queued work runs when its stream is synchronised, not before. The *_emu suites count on
      this to expose a missing synchronisation (a result read from a buffer the queue has not written yet).
   2. The scratch pool's OOM path (cuda/context.cu, sg_cuda_alloc): when the pool's idle cache holds memory
      in blocks too small for a request and the device has no room for a new one, the cache is handed back
      and the allocation retried. Setting that up needs a device of known capacity: the emulated one.
   3. What a repeated device-resident call costs in host API calls: synchronisations, launch settings. */
#include <criterion/criterion.h>
#include <cuda_runtime_api.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "specgrad.h"
#include "testutil.h"

void sg_emu_set_capacity(size_t bytes);
unsigned long sg_emu_oom_refusals(void);
unsigned long sg_emu_calls(const char *api);

Test(emu_device, work_waits_for_its_stream)
{
    cudaStream_t s;
    int *d, *pinned, pageable[4];
    cr_assert_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    cr_assert_eq(cudaMalloc((void **)&d, sizeof pageable), cudaSuccess);
    cr_assert_eq(cudaHostAlloc((void **)&pinned, sizeof pageable, cudaHostAllocDefault), cudaSuccess);
    memset(pinned, 7, sizeof pageable);
    cr_assert_eq(cudaMemsetAsync(d, 0, sizeof pageable, s), cudaSuccess);
    cr_assert_eq(cudaMemcpyAsync(pinned, d, sizeof pageable, cudaMemcpyDeviceToHost, s), cudaSuccess);
    cr_expect_eq(pinned[0], 0x07070707, "queued copy into pinned memory ran before its stream was synchronised");
    cr_assert_eq(cudaStreamSynchronize(s), cudaSuccess);
    cr_expect_eq(pinned[0], 0, "synchronised stream: the copy has run");
    /* into pageable memory the copy returns once done (cudart's rule), after the work queued before it */
    cr_assert_eq(cudaMemsetAsync(d, 0x11, sizeof pageable, s), cudaSuccess);
    cr_assert_eq(cudaMemcpyAsync(pageable, d, sizeof pageable, cudaMemcpyDeviceToHost, s), cudaSuccess);
    cr_expect_eq(pageable[3], 0x11111111);
    cr_assert_eq(cudaFreeHost(pinned), cudaSuccess);
    cr_assert_eq(cudaFree(d), cudaSuccess);
    cr_assert_eq(cudaStreamDestroy(s), cudaSuccess);
}

/* eigh of B random symmetric n×n matrices in host memory: staged through the context's device scratch */
static void eigh_host(sg_ctx *ctx, int64_t B, int64_t n, uint64_t seed)
{
    double *A = tu_sym_batch(B, n, seed);
    sg_mat a = sg_mat_dense(A, SG_F64, B, n, n), w = tu_alloc_mat(SG_F64, B, n, 1), v = tu_alloc_mat(SG_F64, B, n, n);
    cr_expect_eq(sg_eigh(ctx, &a, &w, &v), SG_OK, "eigh %lld × %lld: %s", (long long)B, (long long)n, sg_last_error(ctx));
    free(A), free(w.data), free(v.data);
}

Test(emu_device, idle_cache_is_handed_back_when_a_request_does_not_fit)
{
    sg_ctx *ctx;
    cr_assert_eq(sg_create(&ctx, SG_BACKEND_CUDA), SG_OK);
    cr_assert_eq(sg_set_cache_bytes(ctx, (size_t)1 << 30), SG_OK);
    size_t big = 0, small = 0, fr = 0, tot = 0;
    eigh_host(ctx, 1, 96, 1); /* one matrix: a chunk that cannot be halved */
    cr_assert_eq(sg_cache_held(ctx, &big), SG_OK);
    cr_assert_eq(sg_set_cache_bytes(ctx, 0), SG_OK);
    cr_assert_eq(sg_set_cache_bytes(ctx, (size_t)1 << 30), SG_OK);
    eigh_host(ctx, 16, 8, 2);
    cr_assert_eq(sg_cache_held(ctx, &small), SG_OK);
    cr_assert(small > 0 && 4 * small < big, "idle cache %zu bytes, the large call's scratch %zu", small, big);

    /* room for the large call's scratch less half the idle cache: it fits only once the cache (in blocks
       too small for it) is handed back */
    cr_assert_eq(cudaMemGetInfo(&fr, &tot), cudaSuccess);
    sg_emu_set_capacity(tot - fr + big - small / 2);
    const unsigned long before = sg_emu_oom_refusals();
    eigh_host(ctx, 1, 96, 3);
    cr_expect_gt(sg_emu_oom_refusals(), before, "no allocation was refused: the test did not reach the OOM path");
    sg_destroy(ctx);
}

/* 3. The fixed per-call cost of device-resident ops: each synchronisation is a GPU round trip, and the
      launch settings of the fused kernels are driver calls (issue 5's n = 8 rows are mostly this cost).
      A second call with the same shapes makes no cudaFuncSetAttribute or occupancy query (kept per kernel,
      device, threads and shared memory); eigh synchronises once: for the info array, with its NaN/Inf
      scan (outputs are written by copies that skip while a flag is set); the fused eigh_backward twice:
      its scan is settled with its flags (the kernel skips its writes while the scan is pending), then the
      end. The release of the scratch (freed in stream order) waits only when the pool then holds more than
      the cache keeps (sg_cuda_settle); neither call asks for free memory (SG_SMALL_CALL_BYTES). */
static void *to_device(const sg_mat *h)
{
    size_t bytes = sizeof(double) * (size_t)(h->rows * h->cols * h->batch);
    void *d = NULL;
    cr_assert_eq(cudaMalloc(&d, bytes), cudaSuccess);
    cr_assert_eq(cudaMemcpy(d, h->data, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return d;
}

/* A CUDA context in device-memory mode with device-resident operands of eigh and eigh_backward: B symmetric
   n×n f64 matrices A, a cotangent gV, and V, gA, W. */
typedef struct {
    sg_ctx *ctx;
    double *A, *G; /* host copies */
    sg_mat a, gv, v, ga, w;
} dev_eig;
static dev_eig dev_eig_make(int64_t B, int64_t n, uint64_t seed)
{
    dev_eig e;
    cr_assert_eq(sg_create(&e.ctx, SG_BACKEND_CUDA), SG_OK);
    cr_assert_eq(sg_set_memspace(e.ctx, SG_MEM_DEVICE), SG_OK);
    e.A = tu_sym_batch(B, n, seed), e.G = tu_sym_batch(B, n, seed + 1);
    sg_mat ha = sg_mat_dense(e.A, SG_F64, B, n, n), hg = sg_mat_dense(e.G, SG_F64, B, n, n);
    e.a = e.v = e.ga = ha, e.gv = hg;
    e.a.data = to_device(&ha);
    e.gv.data = to_device(&hg);
    e.v.data = to_device(&ha);
    e.ga.data = to_device(&ha);
    e.w = sg_mat_dense(NULL, SG_F64, B, n, 1);
    cr_assert_eq(cudaMalloc(&e.w.data, sizeof(double) * (size_t)(B * n)), cudaSuccess);
    return e;
}
static void dev_eig_free(dev_eig *e)
{
    void *dev[5] = {e->a.data, e->gv.data, e->v.data, e->ga.data, e->w.data};
    for (int k = 0; k < 5; k++) cudaFree(dev[k]);
    free(e->A), free(e->G);
    sg_destroy(e->ctx);
}

Test(emu_device, repeated_device_calls_reuse_launch_settings)
{
    enum { B = 4, N = 8 };
    dev_eig e = dev_eig_make(B, N, 11);
    sg_ctx *ctx = e.ctx;
    sg_mat a = e.a, gv = e.gv, w = e.w, v = e.v, ga = e.ga;

    cr_assert_eq(sg_eigh(ctx, &a, &w, &v), SG_OK, "%s", sg_last_error(ctx));
    const unsigned long mi0 = sg_emu_calls("cudaMemGetInfo");
    unsigned long s0 = sg_emu_calls("cudaStreamSynchronize");
    cr_assert_eq(sg_eigh(ctx, &a, &w, &v), SG_OK, "%s", sg_last_error(ctx));
    unsigned long syncs = sg_emu_calls("cudaStreamSynchronize") - s0;
    cr_expect_leq(syncs, 1, "device eigh synchronised %lu times (NaN scan with the info array: 1; the release "
                  "waits only when the pool holds more than the cache)", syncs);

    const char *q[2] = {"cudaFuncSetAttribute", "cudaOccupancyMaxActiveBlocksPerMultiprocessor"};
    unsigned long c0[2], c1[2], c2[2];
    for (int k = 0; k < 2; k++) c0[k] = sg_emu_calls(q[k]);
    cr_assert_eq(sg_eigh_backward(ctx, &w, &v, NULL, &gv, SG_DEGEN_LORENTZ, 1e-12, &ga), SG_OK, "%s", sg_last_error(ctx));
    for (int k = 0; k < 2; k++) c1[k] = sg_emu_calls(q[k]);
    s0 = sg_emu_calls("cudaStreamSynchronize");
    cr_assert_eq(sg_eigh_backward(ctx, &w, &v, NULL, &gv, SG_DEGEN_LORENTZ, 1e-12, &ga), SG_OK, "%s", sg_last_error(ctx));
    syncs = sg_emu_calls("cudaStreamSynchronize") - s0;
    cr_expect_leq(syncs, 2, "device eigh_backward synchronised %lu times (scan and flags together, end: 2)", syncs);
    cr_expect_eq(sg_emu_calls("cudaMemGetInfo"), mi0, "small device calls (%d of %dx%d) asked the driver for free memory "
                 "(SG_SMALL_CALL_BYTES)", B, N, N);
    for (int k = 0; k < 2; k++) {
        c2[k] = sg_emu_calls(q[k]);
        cr_expect_gt(c1[k], c0[k], "the first fused launch made no %s call: not the path under test", q[k]);
        cr_expect_eq(c2[k], c1[k], "a repeated eigh_backward called %s again (%lu times)", q[k], c2[k] - c1[k]);
    }
    dev_eig_free(&e);
}

/* Free memory is asked for (cudaMemGetInfo) only when a call's device buffer exceeds SG_SMALL_CALL_BYTES
   (64 MiB): a small host-memory call does not ask, one of about 72 MiB (project_basis f64, n = 64, 1100
   matrices staged) does, and both give the CPU's result. */
Test(emu_device, free_memory_is_asked_for_only_by_large_calls)
{
    sg_ctx *ctx, *cpu;
    cr_assert_eq(sg_create(&ctx, SG_BACKEND_CUDA), SG_OK);
    cr_assert_eq(sg_create(&cpu, SG_BACKEND_CPU), SG_OK);
    const int64_t n = 64, q = 1, k = 64;
    const int64_t batches[2] = {3, 1100};
    for (int t = 0; t < 2; t++) {
        const int64_t B = batches[t];
        sg_mat Q = tu_alloc_mat(SG_F64, B, n, q), X = tu_alloc_mat(SG_F64, B, n, k), Y = tu_alloc_mat(SG_F64, B, n, k),
               R = tu_alloc_mat(SG_F64, B, n, k);
        double *qd = (double *)Q.data;
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < n; i++) qd[b * n + i] = i == b % n ? 1.0 : 0.0;
        tu_rng r = tu_seed(77);
        tu_fill_normal(&r, (double *)X.data, B * n * k);
        const unsigned long m0 = sg_emu_calls("cudaMemGetInfo");
        cr_assert_eq(sg_project_basis(ctx, &Q, &X, 1, &Y), SG_OK, "%s", sg_last_error(ctx));
        const unsigned long asked = sg_emu_calls("cudaMemGetInfo") - m0;
        cr_assert_eq(sg_project_basis(cpu, &Q, &X, 1, &R), SG_OK, "%s", sg_last_error(cpu));
        cr_assert_eq(memcmp(Y.data, R.data, sizeof(double) * (size_t)(B * n * k)), 0, "batch %lld: GPU != CPU",
                     (long long)B);
        if (B == 3) cr_expect_eq(asked, 0, "a %lld-matrix call asked for free memory %lu times", (long long)B, asked);
        else cr_expect_geq(asked, 1, "a %lld-matrix call (72 MiB) never asked for free memory", (long long)B);
        tu_free_mat(&Q), tu_free_mat(&X), tu_free_mat(&Y), tu_free_mat(&R);
    }
    sg_destroy(ctx);
    sg_destroy(cpu);
}

/* The release after a device call that skipped its wait (sg_cuda_settle) must still honour the cache: with
   sg_set_cache_bytes(0) nothing stays held after device eigh / eigh_backward, with the default the scratch is
   kept for the next call. */
Test(emu_device, skipped_release_wait_still_honours_the_cache)
{
    enum { B = 4, N = 8 };
    dev_eig e = dev_eig_make(B, N, 21);
    sg_ctx *ctx = e.ctx;
    sg_mat a = e.a, gv = e.gv, w = e.w, v = e.v, ga = e.ga;
    for (int k = 0; k < 2; k++) {
        const size_t keep = k ? (size_t)1 << 30 : 0;
        cr_assert_eq(sg_set_cache_bytes(ctx, keep), SG_OK);
        for (int op = 0; op < 2; op++) {
            if (op == 0) cr_assert_eq(sg_eigh(ctx, &a, &w, &v), SG_OK, "%s", sg_last_error(ctx));
            else
                cr_assert_eq(sg_eigh_backward(ctx, &w, &v, NULL, &gv, SG_DEGEN_LORENTZ, 1e-12, &ga), SG_OK, "%s",
                             sg_last_error(ctx));
            size_t held = 0;
            cr_assert_eq(sg_cache_held(ctx, &held), SG_OK);
            if (keep) cr_expect_gt(held, 0, "%s, cache 1 GiB: no scratch kept", op ? "eigh_backward" : "eigh");
            else cr_expect_eq(held, 0, "%s, cache 0: %zu bytes still held", op ? "eigh_backward" : "eigh", held);
        }
    }
    dev_eig_free(&e);
}

/* SG_FUSED_TM (the device A/B of the fused kernels' micro-tile, read once per process: Criterion runs each
   test in its own) takes effect: at n = 8 the default 1×1 tile launches 64 threads (8×8), TM = 4 32 (2×2
   tiles, one warp), and the gradient still equals the CPU's. */
Test(emu_device, fused_tile_override_is_used_and_exact)
{
    enum { B = 3, N = 8 };
    cr_assert_eq(setenv("SG_FUSED_TM", "4", 1), 0);
    dev_eig e = dev_eig_make(B, N, 31);
    sg_ctx *cpu;
    cr_assert_eq(sg_create(&cpu, SG_BACKEND_CPU), SG_OK);
    double W[B * N], V[B * N * N], gA[B * N * N], ref[B * N * N];
    sg_mat hw = sg_mat_dense(W, SG_F64, B, N, 1), hv = sg_mat_dense(V, SG_F64, B, N, N),
           hgv = sg_mat_dense(e.G, SG_F64, B, N, N), hga = sg_mat_dense(gA, SG_F64, B, N, N),
           href = sg_mat_dense(ref, SG_F64, B, N, N), ha = sg_mat_dense(e.A, SG_F64, B, N, N);
    cr_assert_eq(sg_eigh(cpu, &ha, &hw, &hv), SG_OK, "%s", sg_last_error(cpu));
    cr_assert_eq(cudaMemcpy(e.w.data, W, sizeof W, cudaMemcpyHostToDevice), cudaSuccess);
    cr_assert_eq(cudaMemcpy(e.v.data, V, sizeof V, cudaMemcpyHostToDevice), cudaSuccess);
    const unsigned long t32 = sg_emu_calls("occupancy threads=32"), t64 = sg_emu_calls("occupancy threads=64");
    cr_assert_eq(sg_eigh_backward(e.ctx, &e.w, &e.v, NULL, &e.gv, SG_DEGEN_LORENTZ, 1e-12, &e.ga), SG_OK, "%s",
                 sg_last_error(e.ctx));
    cr_expect_gt(sg_emu_calls("occupancy threads=32"), t32, "SG_FUSED_TM=4: no 32-thread fused launch at n = 8");
    cr_expect_eq(sg_emu_calls("occupancy threads=64"), t64, "SG_FUSED_TM=4: the default 64-thread launch ran");
    cr_assert_eq(sg_eigh_backward(cpu, &hw, &hv, NULL, &hgv, SG_DEGEN_LORENTZ, 1e-12, &href), SG_OK, "%s",
                 sg_last_error(cpu));
    cr_assert_eq(cudaMemcpy(gA, e.ga.data, sizeof gA, cudaMemcpyDeviceToHost), cudaSuccess);
    double err = 0, mx = 0;
    for (int i = 0; i < B * N * N; i++) {
        err = fmax(err, fabs(gA[i] - ref[i]));
        mx = fmax(mx, fabs(ref[i]));
    }
    cr_expect_leq(err, 1e-12 * fmax(1, mx), "SG_FUSED_TM=4: |gA - CPU| = %g", err);
    sg_destroy(cpu);
    dev_eig_free(&e);
}

/* The fuzz_api contract (tests/fuzz/fuzz_api.c) as a deterministic test on every backend and memory space:
 * the committed seeds of tests/fuzz/corpus-api/, each mutated at a few random bytes (sizes, options,
 * descriptors, NaN/Inf), thousands of calls per case. CPU; CUDA with host memory (chunked streaming through
 * pinned buffers); CUDA with device memory (buffers from cudaMalloc, read back with cudaMemcpy). Built
 * against the real backend and, as test_gpu_api_random_emu, against the emulated device, so the CUDA backend's
 * argument checks, NaN/Inf scan and output guards run in CI (ASan stage included); on a GPU machine
 * (scripts/gpu-check) the device cases run on the GPU. The GPU cases skip with the reason when no
 * device is usable. One call in five runs with the input check off, on every backend: NaN/Inf then reach
 * the solvers (the emulated ones answer them without LAPACK, tests/emu/fake_cuda.cpp). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>

#define FZ_NO_MAIN
#define FZ_FAIL() cr_assert_fail("fuzz_api contract violated (message above, on stderr)")
#include "../tests/fuzz/fuzz_api.c"
#include "gpu_suite.h" /* cpu and gpu contexts per test; NEED_GPU skips with the reason */

#ifndef SG_SOURCE_DIR
#define SG_SOURCE_DIR "."
#endif

typedef struct {
    uint8_t *data[64];
    size_t len[64];
    int n;
} seeds_t;

/* The seeds: $SG_FUZZ_CORPUS, else the source tree's, else ./tests/fuzz/corpus-api (scripts/gpu-check runs
   from a copy of the tree at another path). */
static seeds_t load_seeds(void)
{
    seeds_t s = {0};
    const char *dirs[] = {getenv("SG_FUZZ_CORPUS"), SG_SOURCE_DIR "/tests/fuzz/corpus-api", "tests/fuzz/corpus-api"};
    for (int d = 0; d < 3 && s.n == 0; d++) {
        if (!dirs[d]) continue;
        DIR *dir = opendir(dirs[d]);
        if (!dir) continue;
        struct dirent *e;
        while ((e = readdir(dir)) && s.n < 64) {
            if (e->d_name[0] == '.') continue;
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", dirs[d], e->d_name);
            FILE *f = fopen(path, "rb");
            if (!f) continue;
            uint8_t *buf = malloc(65536);
            size_t n = buf ? fread(buf, 1, 65536, f) : 0;
            fclose(f);
            if (n == 0) { free(buf); continue; }
            s.data[s.n] = buf, s.len[s.n++] = n;
        }
        closedir(dir);
    }
    cr_assert_gt(s.n, 0, "no seeds found (tests/fuzz/corpus-api; set SG_FUZZ_CORPUS)");
    return s;
}

/* iters calls: seed i % n with 1–4 bytes of its first 48 (sizes, options, descriptors) and, one time in
   four, one byte anywhere replaced; every seed also runs unmodified. */
static void run(sg_ctx *ctx, const fz_mem *mem, int iters, uint64_t seed)
{
    const char *sc = getenv("SG_API_RANDOM_SCALE"); /* fewer calls under compute-sanitizer (scripts/gpu-check) */
    if (sc && atof(sc) > 0) iters = (int)(iters * atof(sc));
    seeds_t s = load_seeds();
    tu_rng r = tu_seed(seed);
    uint8_t *buf = malloc(65536);
    cr_assert_not_null(buf);
    for (int i = 0; i < s.n; i++) fz_call(ctx, mem, s.data[i], s.len[i]);
    for (int it = 0; it < iters; it++) {
        int k = it % s.n;
        size_t n = s.len[k];
        memcpy(buf, s.data[k], n);
        int muts = 1 + (int)(tu_uniform(&r) * 4);
        for (int j = 0; j < muts; j++) buf[(size_t)(tu_uniform(&r) * (n < 48 ? n : 48))] = (uint8_t)(tu_uniform(&r) * 256);
        if (tu_uniform(&r) < 0.25) buf[(size_t)(tu_uniform(&r) * n)] = (uint8_t)(tu_uniform(&r) * 256);
        fz_call(ctx, mem, buf, n);
    }
    free(buf);
    for (int i = 0; i < s.n; i++) free(s.data[i]);
    /* what ran: statuses, and successful calls per op (each op must have some, else only the argument
       checks were tested) */
    long total = 0;
    for (int k = 0; k < 16; k++) total += fz_stats[k];
    fprintf(stderr, "gpu_api_random: %ld calls:", total);
    for (int k = 0; k < 16; k++)
        if (fz_stats[k]) fprintf(stderr, " %s %ld", sg_status_string((sg_status)k), fz_stats[k]);
    fprintf(stderr, "; %ld in-place reruns\n", fz_inplace_runs);
    cr_expect_gt(fz_inplace_runs, 0, "no in-place call ran");
    for (int o = 0; o < NOPS; o++) cr_expect_gt(fz_ok_by_op[o], 0, "no successful %s call", OPS[o].name);
    cr_expect_gt(fz_stats[SG_OK], total / 10, "only %ld of %ld calls succeeded", fz_stats[SG_OK], total);
}

TestSuite(gpu_api_random, .init = gpu_suite_setup, .fini = gpu_suite_teardown);

Test(gpu_api_random, cpu, .timeout = 300) /* a hang (LAPACK on NaN) is a failure, not a stuck CI */
{
    sg_set_threads(cpu, 1);
    run(cpu, &FZ_HOST, 100000, 1);
}

#ifdef SG_HAVE_CUDA
static void *dev_alloc(size_t n)
{
    void *p = NULL;
    return cudaMalloc(&p, n) == cudaSuccess ? p : NULL;
}
static void dev_free(void *p) { cr_assert_eq(cudaFree(p), cudaSuccess); }
static void dev_put(void *d, const void *s, size_t n) { cr_assert_eq(cudaMemcpy(d, s, n, cudaMemcpyHostToDevice), cudaSuccess); }
static void dev_get(void *d, const void *s, size_t n) { cr_assert_eq(cudaMemcpy(d, s, n, cudaMemcpyDeviceToHost), cudaSuccess); }
static const fz_mem FZ_DEVICE = {dev_alloc, dev_free, dev_put, dev_get};
#endif

Test(gpu_api_random, cuda_host_memory, .timeout = 300)
{
    NEED_GPU();
#ifdef SG_HAVE_CUDA
    run(gpu, &FZ_HOST, 20000, 2);
#endif
}

Test(gpu_api_random, cuda_device_memory, .timeout = 300)
{
    NEED_GPU();
#ifdef SG_HAVE_CUDA
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_DEVICE), SG_OK);
    run(gpu, &FZ_DEVICE, 20000, 3);
#endif
}

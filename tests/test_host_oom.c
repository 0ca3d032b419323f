/* Host out-of-memory on the CPU backend, injected: this executable defines malloc, calloc and realloc
   (an executable's definition comes first in the dynamic symbol lookup), forwards to glibc's and, while
   armed, fails the k-th allocation that libspecgrad itself makes (the caller's return address lies in
   libspecgrad: OpenBLAS, libgomp and Criterion are left alone). For every op, k = 1, 2, … until a call
   runs with no allocation failed: each failure must be SG_ERR_ALLOC with a message, never a crash, with
   nothing written; the context works afterwards and the last call matches an unarmed reference.
   Not under AddressSanitizer, which owns malloc (the test skips with that reason). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "specgrad.h"
#include "opcases.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define SG_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SG_ASAN 1
#endif
#endif

static int armed, fail_at, seen; /* atomics: the backend allocates on several threads */
static const void *lib_base;       /* libspecgrad's load address */
static __thread int inside;        /* dladdr must not recurse into the count */

#ifndef SG_ASAN
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

/* 1: this allocation (called from ret) is the one to fail. */
static int inject(const void *ret)
{
    if (!__atomic_load_n(&armed, __ATOMIC_ACQUIRE) || inside) return 0;
    inside = 1;
    Dl_info di;
    int ours = dladdr(ret, &di) && di.dli_fbase == lib_base;
    inside = 0;
    return ours && __atomic_add_fetch(&seen, 1, __ATOMIC_RELAXED) == fail_at;
}
void *malloc(size_t n) { return inject(__builtin_return_address(0)) ? NULL : __libc_malloc(n); }
void *calloc(size_t c, size_t n) { return inject(__builtin_return_address(0)) ? NULL : __libc_calloc(c, n); }
void *realloc(void *p, size_t n) { return inject(__builtin_return_address(0)) ? NULL : __libc_realloc(p, n); }
#endif

static void arm(int k)
{
    fail_at = k;
    __atomic_store_n(&seen, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&armed, 1, __ATOMIC_RELEASE);
}
static int disarm(void) /* how many of libspecgrad's allocations the call made */
{
    __atomic_store_n(&armed, 0, __ATOMIC_RELEASE);
    return __atomic_load_n(&seen, __ATOMIC_RELAXED);
}

enum { B = 5 };

static sg_ctx *ctx;
static int live; /* our malloc sees libspecgrad's allocations (not so under valgrind, which replaces it) */
static void setup(void)
{
    Dl_info di;
    cr_assert(dladdr((const void *)sg_eigh, &di) && di.dli_fbase, "dladdr(sg_eigh) failed");
    lib_base = di.dli_fbase;
    arm(0); /* counts without failing */
    cr_assert_eq(sg_create(&ctx, SG_BACKEND_CPU), SG_OK);
    live = disarm() > 0;
    cr_assert_eq(sg_set_threads(ctx, 2), SG_OK); /* allocations on the batch threads too */
}
#define NEED_INTERPOSED()                                                                               \
    do {                                                                                                \
        if (!live)                                                                                      \
            cr_skip_test("host OOM injection skipped: malloc is not interposed in this process (valgrind " \
                         "or a preloaded allocator replaces it)");                                      \
    } while (0)
static void teardown(void) { sg_destroy(ctx); }
TestSuite(host_oom, .init = setup, .fini = teardown);

Test(host_oom, every_allocation_failure_is_a_clean_error)
{
#ifdef SG_ASAN
    cr_skip_test("host OOM injection skipped: AddressSanitizer owns malloc in this build");
#else
    NEED_INTERPOSED();
    tu_rng r = tu_seed(41);
    for (int o = 0; o < tu_nops; o++) {
        const tu_op *op = &tu_ops[o];
        tu_op_args a, ref;
        tu_op_make(op, ctx, B, &r, &a);
        tu_op_clone(op, &a, &ref);
        sg_status want = op->call(&ref);
        cr_assert_eq(want, SG_OK, "%s reference: %s", op->name, sg_last_error(ctx));
        int k = 1, made = 0;
        for (; k <= 200; k++) {
            tu_op_fill_outputs(&a, 777);
            arm(k);
            sg_status st = op->call(&a);
            made = disarm();
            if (made < k) { /* nothing failed: the op ran whole */
                cr_expect_eq(st, SG_OK, "%s with %d allocations: %s", op->name, made, sg_last_error(ctx));
                break;
            }
            cr_expect_eq(st, SG_ERR_ALLOC, "%s, allocation %d of %d failed: %s (%s)", op->name, k, made,
                         sg_status_string(st), sg_last_error(ctx));
            cr_expect_gt(strlen(sg_last_error(ctx)), 0, "%s, allocation %d: no message", op->name, k);
            cr_expect(!tu_op_touched(&a, 0, B, 777), "%s, allocation %d failed: outputs written (%s)", op->name, k, sg_last_error(ctx));
        }
        cr_expect_gt(k, 1, "%s made no allocation to fail: nothing was tested", op->name);
        cr_expect_lt(k, 200, "%s: still allocating after 200 failures", op->name);
        for (int i = 0; i < a.nout; i++)
            cr_expect(memcmp(a.out[i].data, ref.out[i].data, sizeof(double) * (size_t)(B * a.out[i].rows * a.out[i].cols)) == 0,
                      "%s: output %d after the failures differs from the reference", op->name, i);
        cr_expect(memcmp(a.iv, ref.iv, sizeof(int64_t) * B) == 0, "%s: int64 output differs from the reference", op->name);
        fprintf(stderr, "host_oom: %-22s %d allocation(s), each failed in turn: SG_ERR_ALLOC, nothing written\n",
                op->name, k - 1);
        tu_op_free_outputs(&ref);
        tu_op_free(&a);
    }
#endif
}

/* sg_create itself: the context allocation failing is SG_ERR_ALLOC with *ctx NULL. */
Test(host_oom, create_fails_cleanly)
{
#ifdef SG_ASAN
    cr_skip_test("host OOM injection skipped: AddressSanitizer owns malloc in this build");
#else
    NEED_INTERPOSED();
    sg_ctx *c = (sg_ctx *)0x1;
    arm(1);
    sg_status st = sg_create(&c, SG_BACKEND_CPU);
    int made = disarm();
    cr_expect_geq(made, 1, "sg_create made no allocation");
    cr_expect_eq(st, SG_ERR_ALLOC, "%s", sg_status_string(st));
    cr_expect_null(c);
#endif
}

/* The .npy reader and writer: each allocation failing in turn is SG_ERR_ALLOC with a message, out left
   empty; a Fortran-order file (the reader reorders it into a second buffer) takes the most allocations. */
Test(host_oom, npy_read_and_write_fail_cleanly)
{
#ifdef SG_ASAN
    cr_skip_test("host OOM injection skipped: AddressSanitizer owns malloc in this build");
#else
    NEED_INTERPOSED();
    char path[] = "/tmp/sg_host_oom_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    for (int fortran = 0; fortran < 2; fortran++) {
        double x[6] = {1, 2, 3, 4, 5, 6};
        sg_array a = {SG_F64, 2, {2, 3}, x}, b;
        char err[256];
        cr_assert_eq(sg_npy_write(path, &a, err, sizeof err), SG_OK, "%s", err);
        if (fortran) { /* rewrite the header's order flag: same length, the reader must transpose */
            FILE *f = fopen(path, "r+b");
            cr_assert_not_null(f);
            char hdr[128];
            size_t got = fread(hdr, 1, sizeof hdr, f);
            char *p = memmem(hdr, got, "'fortran_order': False", 22);
            cr_assert_not_null(p, "header without fortran_order");
            memcpy(p, "'fortran_order': True ", 22);
            fseek(f, 0, SEEK_SET);
            fwrite(hdr, 1, got, f);
            fclose(f);
        }
        int k = 1, made = 0;
        for (; k <= 50; k++) {
            memset(&b, 0x5a, sizeof b);
            err[0] = 0;
            arm(k);
            sg_status st = sg_npy_read(path, &b, err, sizeof err);
            made = disarm();
            if (made < k) {
                cr_expect_eq(st, SG_OK, "read with %d allocations: %s", made, err);
                break;
            }
            cr_expect_eq(st, SG_ERR_ALLOC, "read, allocation %d of %d failed: %s (%s)", k, made, sg_status_string(st), err);
            cr_expect_gt(strlen(err), 0, "read, allocation %d: no message", k);
            cr_expect_null(b.data, "read, allocation %d failed: out.data not cleared", k);
        }
        cr_expect_gt(k, 1, "the reader made no allocation to fail");
        cr_assert_eq(b.ndim, 2);
        for (int i = 0; i < 6; i++) /* C order holds x; Fortran order reads x as the columns of a 2×3 */
            cr_expect_eq(((double *)b.data)[i], fortran ? x[(i % 3) * 2 + i / 3] : x[i], "element %d", i);
        sg_array_free(&b);
        /* the writer */
        for (k = 1; k <= 50; k++) {
            err[0] = 0;
            arm(k);
            sg_status st = sg_npy_write(path, &a, err, sizeof err);
            made = disarm();
            if (made < k) {
                cr_expect_eq(st, SG_OK, "write with %d allocations: %s", made, err);
                break;
            }
            cr_expect_eq(st, SG_ERR_ALLOC, "write, allocation %d failed: %s (%s)", k, sg_status_string(st), err);
        }
    }
    unlink(path);
#endif
}

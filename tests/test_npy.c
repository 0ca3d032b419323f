/* .npy I/O: round trips, header variants, Fortran order, byte order, numpy-written fixtures, and malformed
   images (each must give SG_ERR_FORMAT and a message, never a crash: run under SG_SANITIZE=ON too). */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "specgrad.h"

static char tmpdir[256];
static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sg_npy_XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}
static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}
TestSuite(npy, .init = setup, .fini = teardown);

/* In-memory .npy image: preamble for version major.0, then the header text verbatim, then the payload. */
static size_t mk(unsigned char *buf, int major, const char *hdr, const void *payload, size_t plen)
{
    size_t h = strlen(hdr), pre = major == 1 ? 10 : 12;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    buf[8] = (unsigned char)(h & 0xff);
    buf[9] = (unsigned char)(h >> 8);
    if (major != 1) buf[10] = buf[11] = 0;
    memcpy(buf + pre, hdr, h);
    if (plen) memcpy(buf + pre + h, payload, plen);
    return pre + h + plen;
}

static double at(const sg_array *a, int64_t i)
{
    return a->dtype == SG_F32 ? ((const float *)a->data)[i] : ((const double *)a->data)[i];
}

Test(npy, round_trip_dtypes_and_ndims)
{
    for (int t = 0; t < 2; t++)
        for (int nd = 0; nd <= 4; nd++) {
            sg_array a = {.dtype = t ? SG_F64 : SG_F32, .ndim = nd};
            int64_t count = 1;
            for (int d = 0; d < nd; d++) count *= a.shape[d] = 2 + d;
            size_t isz = t ? 8 : 4;
            a.data = malloc((size_t)count * isz);
            for (int64_t i = 0; i < count; i++) {
                double v = (double)i * 0.37 - 1.0 / 3.0;
                if (t) ((double *)a.data)[i] = v;
                else ((float *)a.data)[i] = (float)v;
            }
            char path[300], err[256];
            snprintf(path, sizeof path, "%s/rt_%d_%d.npy", tmpdir, t, nd);
            cr_assert_eq(sg_npy_write(path, &a, err, sizeof err), SG_OK, "%s", err);
            sg_array b;
            cr_assert_eq(sg_npy_read(path, &b, err, sizeof err), SG_OK, "%s", err);
            cr_expect_eq(b.dtype, a.dtype);
            cr_assert_eq(b.ndim, nd);
            for (int d = 0; d < nd; d++) cr_expect_eq(b.shape[d], a.shape[d]);
            cr_expect_eq(memcmp(a.data, b.data, (size_t)count * isz), 0, "payload differs (dtype %d, ndim %d)", t, nd);
            sg_array_free(&a);
            sg_array_free(&b);
            cr_expect_null(b.data);
        }
}

Test(npy, written_header_is_numpy_style_and_aligned)
{
    double x[6] = {0};
    sg_array a = {.dtype = SG_F64, .ndim = 2, .shape = {2, 3}, .data = x};
    char path[300], err[256];
    snprintf(path, sizeof path, "%s/h.npy", tmpdir);
    cr_assert_eq(sg_npy_write(path, &a, err, sizeof err), SG_OK, "%s", err);
    FILE *f = fopen(path, "rb");
    unsigned char buf[256];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    size_t hlen = buf[8] | (size_t)buf[9] << 8;
    cr_expect_eq((10 + hlen) % 64, 0, "payload not 64-byte aligned");
    cr_expect_eq(n, 10 + hlen + sizeof x);
    cr_expect_eq(buf[10 + hlen - 1], '\n');
    cr_expect(memmem(buf, n, "'shape': (2, 3)", 15) != NULL);
    cr_expect(memmem(buf, n, "'descr': '<f8'", 14) != NULL);
}

Test(npy, header_variants_parse)
{
    /* key order, quotes, spacing, trailing comma, Python 2 'L' suffix, '|' and '=' byte orders */
    const char *hdrs[] = {
        "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }",
        "{'shape':(2,3),'descr':'<f8','fortran_order':False}",
        "{ \"fortran_order\" : False , \"shape\" : ( 2 , 3 , ) , \"descr\" : \"<f8\" }\n",
        "{'descr': '=f8', 'fortran_order': False, 'shape': (2L, 3L)}      \n",
        "{'descr': '|f8', 'fortran_order': False, 'shape': (2, 3)}\n\0\0",
    };
    double x[6] = {1, 2, 3, 4, 5, 6};
    for (size_t k = 0; k < sizeof hdrs / sizeof *hdrs; k++) {
        unsigned char buf[512];
        size_t hl = strlen(hdrs[k]) + (k == 4 ? 2 : 0); /* last one carries NUL padding */
        size_t pre = 10;
        memcpy(buf, "\x93NUMPY\x01\x00", 8);
        buf[8] = (unsigned char)hl;
        buf[9] = 0;
        memcpy(buf + pre, hdrs[k], hl);
        memcpy(buf + pre + hl, x, sizeof x);
        sg_array a;
        char err[256];
        cr_assert_eq(sg_npy_parse(buf, pre + hl + sizeof x, &a, err, sizeof err), SG_OK, "header %zu: %s", k, err);
        cr_expect_eq(a.ndim, 2);
        cr_expect_eq(a.shape[0], 2);
        cr_expect_eq(a.shape[1], 3);
        cr_expect_eq(memcmp(a.data, x, sizeof x), 0);
        sg_array_free(&a);
    }
}

Test(npy, versions_2_and_3)
{
    float x[3] = {1.5f, -2.5f, 4.0f};
    for (int major = 2; major <= 3; major++) {
        unsigned char buf[256];
        size_t n = mk(buf, major, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n", x, sizeof x);
        sg_array a;
        char err[256];
        cr_assert_eq(sg_npy_parse(buf, n, &a, err, sizeof err), SG_OK, "v%d: %s", major, err);
        cr_expect_eq(a.dtype, SG_F32);
        cr_expect_eq(a.ndim, 1);
        cr_expect_eq(memcmp(a.data, x, sizeof x), 0);
        sg_array_free(&a);
    }
}

Test(npy, fortran_order_becomes_c_order)
{
    /* shape (2,3,2): C value of (i,j,k) = 100i+10j+k, stored with i fastest */
    int64_t sh[3] = {2, 3, 2};
    double f[12];
    for (int k = 0; k < 2; k++)
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 2; i++) f[i + 2 * (j + 3 * k)] = 100 * i + 10 * j + k;
    unsigned char buf[512];
    size_t n = mk(buf, 1, "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3, 2), }", f, sizeof f);
    sg_array a;
    char err[256];
    cr_assert_eq(sg_npy_parse(buf, n, &a, err, sizeof err), SG_OK, "%s", err);
    for (int i = 0; i < sh[0]; i++)
        for (int j = 0; j < sh[1]; j++)
            for (int k = 0; k < sh[2]; k++)
                cr_expect_eq(at(&a, (i * 3 + j) * 2 + k), 100 * i + 10 * j + k, "(%d,%d,%d)", i, j, k);
    sg_array_free(&a);
}

Test(npy, big_endian_is_byte_swapped)
{
    /* 1.0 and -2.0 as big-endian float64 */
    unsigned char be[16] = {0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0xc0, 0, 0, 0, 0, 0, 0, 0};
    unsigned char buf[256];
    size_t n = mk(buf, 1, "{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }", be, sizeof be);
    sg_array a;
    char err[256];
    cr_assert_eq(sg_npy_parse(buf, n, &a, err, sizeof err), SG_OK, "%s", err);
    cr_expect_eq(at(&a, 0), 1.0);
    cr_expect_eq(at(&a, 1), -2.0);
    sg_array_free(&a);
}

/* Each case: header (v1) and payload byte count → SG_ERR_FORMAT with a message containing `want`. */
Test(npy, malformed_headers_are_format_errors)
{
    static const struct {
        const char *hdr;
        size_t plen;
        const char *want;
    } cases[] = {
        {"{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 16, "dtype '<i8' not supported (float32/float64 only)"},
        {"{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }", 16, "not supported"},
        {"{'descr': '|O', 'fortran_order': False, 'shape': (1,), }", 8, "not supported"},
        {"{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,), }", 8, "structured"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", 16, "need 24 data bytes"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", 16, "need 8 data bytes"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }", 0, "overflow"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (1152921504606846976,), }", 0, "overflow"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999999999,), }", 0, "int64"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }", 0, "negative"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", 8, "more than 8"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2.5,), }", 8, "shape"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': [2], }", 16, "tuple"},
        {"{'descr': '<f8', 'fortran_order': 0, 'shape': (2,), }", 16, "True or False"},
        {"{'descr': '<f8', 'shape': (2,), }", 16, "missing key 'fortran_order'"},
        {"{'fortran_order': False, 'shape': (2,), }", 16, "missing key 'descr'"},
        {"{'descr': '<f8', 'fortran_order': False}", 16, "missing key 'shape'"},
        {"{'descr': '<f8', 'descr': '<f8', 'fortran_order': False, 'shape': (2,)}", 16, "duplicate"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2,), 'x': 1}", 16, "unexpected key 'x'"},
        {"{'descr': '<f8' 'fortran_order': False, 'shape': (2,)}", 16, "expected ','"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2,)", 16, "expected ','"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2,)} junk", 16, "trailing"},
        {"{'descr: '<f8', 'fortran_order': False, 'shape': (2,)}", 16, "npy header"},
        {"['descr', '<f8']", 16, "dict"},
        {"", 16, "dict"},
        {"{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", 0, "need 16 data bytes"},
    };
    unsigned char payload[64] = {0}, buf[512];
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        size_t n = mk(buf, 1, cases[k].hdr, payload, cases[k].plen);
        sg_array a = {.data = (void *)1};
        char err[256] = "unset";
        cr_expect_eq(sg_npy_parse(buf, n, &a, err, sizeof err), SG_ERR_FORMAT, "case %zu (%s): %s", k, cases[k].hdr, err);
        cr_expect(strstr(err, cases[k].want) != NULL, "case %zu: message '%s' lacks '%s'", k, err, cases[k].want);
        cr_expect_null(a.data, "case %zu: output not reset", k);
    }
}

Test(npy, malformed_preambles)
{
    unsigned char buf[256];
    char err[256];
    sg_array a;
    size_t n = mk(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", "\0\0\0\0\0\0\0\0", 8);

    unsigned char bad[256];
    memcpy(bad, buf, n);
    bad[1] = 'X';
    cr_expect_eq(sg_npy_parse(bad, n, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "magic") != NULL, "%s", err);

    memcpy(bad, buf, n);
    bad[6] = 4;
    cr_expect_eq(sg_npy_parse(bad, n, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "version 4.0") != NULL, "%s", err);

    memcpy(bad, buf, n);
    bad[8] = 0xff; /* header length beyond the buffer */
    bad[9] = 0x7f;
    cr_expect_eq(sg_npy_parse(bad, n, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "header length") != NULL, "%s", err);

    unsigned char v2[12];
    memcpy(v2, "\x93NUMPY\x02\x00\xff\xff\xff\xff", 12); /* v2: 4 GiB header in a 12-byte file */
    cr_expect_eq(sg_npy_parse(v2, 12, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "header length") != NULL, "%s", err);
    cr_expect_eq(sg_npy_parse(v2, 11, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "truncated") != NULL, "%s", err);

    cr_expect_eq(sg_npy_parse(buf, 3, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "truncated") != NULL, "%s", err);
    cr_expect_eq(sg_npy_parse(NULL, 0, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect_eq(sg_npy_parse(buf, n, NULL, err, sizeof err), SG_ERR_ARG);
    /* err may be NULL */
    cr_expect_eq(sg_npy_parse(buf, 3, &a, NULL, 0), SG_ERR_FORMAT);
}

/* Every truncation and every single-byte corruption of a valid image: OK or FORMAT, never a crash
   (a cheap deterministic companion to the libFuzzer target; meaningful under ASan). */
Test(npy, truncations_and_byte_flips_never_crash)
{
    float x[6] = {1, 2, 3, 4, 5, 6};
    unsigned char buf[256], m[256];
    size_t n = mk(buf, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", x, sizeof x);
    char err[256];
    sg_array a;
    for (size_t l = 0; l < n; l++) {
        memcpy(m, buf, l);
        cr_expect_eq(sg_npy_parse(m, l, &a, err, sizeof err), SG_ERR_FORMAT, "prefix %zu parsed", l);
        cr_expect_neq(err[0], 0);
    }
    const unsigned char vals[] = {0, ' ', '\'', ',', '(', ')', '{', '}', '9', 0xff};
    for (size_t i = 0; i < n; i++)
        for (size_t v = 0; v < sizeof vals; v++) {
            memcpy(m, buf, n);
            m[i] = vals[v];
            sg_status s = sg_npy_parse(m, n, &a, err, sizeof err);
            cr_expect(s == SG_OK || s == SG_ERR_FORMAT, "byte %zu := %u gave status %d", i, vals[v], (int)s);
            if (s == SG_OK) sg_array_free(&a);
            else cr_expect_neq(err[0], 0);
        }
}

Test(npy, missing_file_is_io_error)
{
    char path[300], err[512];
    snprintf(path, sizeof path, "%s/does_not_exist.npy", tmpdir);
    sg_array a;
    cr_expect_eq(sg_npy_read(path, &a, err, sizeof err), SG_ERR_IO);
    cr_expect(strstr(err, path) != NULL, "%s", err);
    cr_expect_null(a.data);
    double x = 1;
    sg_array w = {.dtype = SG_F64, .ndim = 0, .data = &x};
    snprintf(path, sizeof path, "%s/no/such/dir/x.npy", tmpdir);
    cr_expect_eq(sg_npy_write(path, &w, err, sizeof err), SG_ERR_IO);
}

Test(npy, write_rejects_bad_arrays)
{
    char err[256], path[300];
    snprintf(path, sizeof path, "%s/bad.npy", tmpdir);
    double x = 0;
    sg_array a = {.dtype = SG_F64, .ndim = 9, .data = &x};
    cr_expect_eq(sg_npy_write(path, &a, err, sizeof err), SG_ERR_ARG);
    a.ndim = 1;
    a.shape[0] = -2;
    cr_expect_eq(sg_npy_write(path, &a, err, sizeof err), SG_ERR_ARG);
    a.shape[0] = 1;
    a.data = NULL;
    cr_expect_eq(sg_npy_write(path, &a, err, sizeof err), SG_ERR_ARG);
    a.data = &x;
    a.dtype = (sg_dtype)7;
    cr_expect_eq(sg_npy_write(path, &a, err, sizeof err), SG_ERR_ARG);
    cr_expect_neq(access(path, F_OK), 0, "nothing may be written on an argument error");
}

/* ---- fixtures written by numpy (tests/data/make_fixtures.py): v = 100i + 10j + k + 0.25 ---------------- */
static void fixture(const char *name, char *path, size_t len)
{
    const char *env = getenv("SG_TEST_DATA");
    if (env) {
        snprintf(path, len, "%s/%s", env, name);
        return;
    }
    const char *src = __FILE__, *slash = strrchr(src, '/');
    snprintf(path, len, "%.*s/data/%s", slash ? (int)(slash - src) : 1, slash ? src : ".", name);
}

static void check_idx(const char *name, sg_dtype t, int nd, const int64_t *shape)
{
    char path[1024], err[512];
    fixture(name, path, sizeof path);
    sg_array a;
    cr_assert_eq(sg_npy_read(path, &a, err, sizeof err), SG_OK, "%s: %s", name, err);
    cr_expect_eq(a.dtype, t, "%s", name);
    cr_assert_eq(a.ndim, nd, "%s", name);
    int64_t count = 1;
    for (int d = 0; d < nd; d++) {
        cr_expect_eq(a.shape[d], shape[d], "%s dim %d", name, d);
        count *= shape[d];
    }
    for (int64_t c = 0; c < count; c++) {
        double v = 0.25, p = 1;
        int64_t r = c;
        for (int d = nd - 1; d >= 0; d--, p *= 10) {
            v += (double)(r % shape[d]) * p;
            r /= shape[d];
        }
        cr_expect_eq(at(&a, c), v, "%s element %lld", name, (long long)c);
    }
    sg_array_free(&a);
}

Test(npy, numpy_written_fixtures)
{
    check_idx("c_f8_2x3.npy", SG_F64, 2, (int64_t[]){2, 3});
    check_idx("f_f4_3x2x4.npy", SG_F32, 3, (int64_t[]){3, 2, 4});
    check_idx("be_f8_2x2.npy", SG_F64, 2, (int64_t[]){2, 2});
    check_idx("be_f4_fortran_2x3.npy", SG_F32, 2, (int64_t[]){2, 3});
    check_idx("v2_f8_3.npy", SG_F64, 1, (int64_t[]){3});
    check_idx("v3_f4_2x2.npy", SG_F32, 2, (int64_t[]){2, 2});
    check_idx("empty_f4_0x3.npy", SG_F32, 2, (int64_t[]){0, 3});
    char path[1024], err[512];
    sg_array a;
    fixture("scalar_f8.npy", path, sizeof path);
    cr_assert_eq(sg_npy_read(path, &a, err, sizeof err), SG_OK, "%s", err);
    cr_expect_eq(a.ndim, 0);
    cr_expect_eq(at(&a, 0), 3.25);
    sg_array_free(&a);
    fixture("i8_2.npy", path, sizeof path);
    cr_expect_eq(sg_npy_read(path, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "dtype '<i8' not supported (float32/float64 only)") != NULL, "%s", err);
    fixture("c16_2.npy", path, sizeof path);
    cr_expect_eq(sg_npy_read(path, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "'<c16' not supported") != NULL, "%s", err);
}

/* ---- sg_npy_read streams: magic first, header next, then exactly the payload the shape needs ---------- */
static void put_file(const char *path, const void *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "%s", path);
    cr_assert_eq(fwrite(buf, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* Caps this test process's address space a little above what it already maps (a reader that slurps an
   endless input then fails fast with SG_ERR_ALLOC instead of exhausting the machine). Not under ASan,
   which reserves terabytes of shadow memory. */
static void cap_memory(size_t extra)
{
#if !defined(__SANITIZE_ADDRESS__)
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1) pages = 0;
        fclose(f);
    }
    if (!pages) return;
    rlim_t lim = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + extra;
    struct rlimit rl = {lim, lim};
    setrlimit(RLIMIT_AS, &rl);
#else
    (void)extra;
#endif
}

Test(npy, read_of_an_endless_non_npy_input_stops_at_the_magic, .timeout = 30)
{
    cap_memory((size_t)512 << 20);
    sg_array a;
    char err[512];
    memset(&a, 0x5a, sizeof a);
    sg_status st = sg_npy_read("/dev/zero", &a, err, sizeof err);
    cr_expect_eq(st, SG_ERR_FORMAT, "%s: %s", sg_status_string(st), err);
    cr_expect(strstr(err, "/dev/zero") && strstr(err, "magic"), "%s", err);
    cr_expect_null(a.data);
}

/* A valid header followed by an endless stream (a FIFO fed by a child): the payload is read, then the
   trailing data is reported, without reading on. */
Test(npy, read_of_a_valid_header_with_endless_data_reports_trailing_data, .timeout = 30)
{
    cap_memory((size_t)512 << 20);
    char fifo[300], err[512];
    snprintf(fifo, sizeof fifo, "%s/pipe.npy", tmpdir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        signal(SIGPIPE, SIG_IGN);
        unsigned char buf[4096] = {0};
        double x[2] = {1, 2};
        size_t n = mk(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n", x, sizeof x);
        FILE *f = fopen(fifo, "wb");
        if (!f) _exit(1);
        if (fwrite(buf, 1, n, f) != n) _exit(1);
        memset(buf, 0, sizeof buf);
        for (;;)
            if (fwrite(buf, 1, sizeof buf, f) != sizeof buf) _exit(0); /* reader closed: EPIPE */
    }
    sg_array a;
    sg_status st = sg_npy_read(fifo, &a, err, sizeof err);
    kill(pid, SIGKILL); /* it ends on EPIPE by itself; make sure */
    waitpid(pid, NULL, 0);
    cr_expect_eq(st, SG_ERR_FORMAT, "%s: %s", sg_status_string(st), err);
    cr_expect(strstr(err, "trailing") != NULL, "%s", err);
    cr_expect_null(a.data);
}

Test(npy, read_checks_header_and_payload_sizes)
{
    char path[300], err[512];
    snprintf(path, sizeof path, "%s/f.npy", tmpdir);
    double x[6] = {1, 2, 3, 4, 5, 6}, c_order[6] = {1, 3, 5, 2, 4, 6};
    unsigned char buf[512];
    sg_array a;

    /* valid v2 Fortran-order file: read from disk like sg_npy_parse of the same bytes */
    size_t n = mk(buf, 2, "{'descr': '<f8', 'fortran_order': True, 'shape': (2, 3), }\n", x, sizeof x);
    put_file(path, buf, n);
    cr_assert_eq(sg_npy_read(path, &a, err, sizeof err), SG_OK, "%s", err);
    cr_expect_eq(a.ndim, 2);
    cr_expect_eq(a.shape[0], 2);
    cr_expect_eq(a.shape[1], 3);
    cr_expect_eq(memcmp(a.data, c_order, sizeof c_order), 0);
    sg_array_free(&a);

    /* short payload */
    put_file(path, buf, n - 8);
    cr_expect_eq(sg_npy_read(path, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "need 48 data bytes, file has 40") != NULL, "%s", err);
    cr_expect_null(a.data);

    /* trailing bytes after the payload */
    unsigned char big[600];
    memcpy(big, buf, n);
    memset(big + n, 7, 3);
    put_file(path, big, n + 3);
    cr_expect_eq(sg_npy_read(path, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "trailing") != NULL, "%s", err);
    cr_expect_null(a.data);

    /* a header that promises 8 TB of data in a small file: format error, no 8 TB allocation */
    n = mk(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }\n", x, sizeof x);
    put_file(path, buf, n);
    cr_expect_eq(sg_npy_read(path, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "need 8000000000000 data bytes, file has 48") != NULL, "%s", err);

    /* v2 header length of 4 GiB − 1: refused from the preamble, by the reader and the parser alike */
    memcpy(buf, "\x93NUMPY\x02\x00\xff\xff\xff\xff{}", 14);
    put_file(path, buf, 14);
    cr_expect_eq(sg_npy_read(path, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "header length") != NULL, "%s", err);
    cr_expect_eq(sg_npy_parse(buf, 14, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "header length") != NULL, "%s", err);

    /* header length past the end of the file; truncated preambles (v1 and v2); empty file */
    n = mk(buf, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }\n", x, sizeof x);
    put_file(path, buf, 30);
    cr_expect_eq(sg_npy_read(path, &a, err, sizeof err), SG_ERR_FORMAT);
    cr_expect(strstr(err, "header length") != NULL, "%s", err);
    for (size_t len = 0; len < 12; len++) {
        mk(buf, 1 + (int)(len % 2), "{}", NULL, 0);
        put_file(path, buf, len);
        cr_expect_eq(sg_npy_read(path, &a, err, sizeof err), SG_ERR_FORMAT, "length %zu", len);
        cr_expect(err[0], "length %zu: no message", len);
        cr_expect_null(a.data);
    }
}

/* A write that fails part-way (here RLIMIT_FSIZE; disk full or Ctrl-C in practice) leaves the old file whole
   and no temporary beside it; the old writer truncated it first. */
static int files_in(const char *d)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", d);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p && fscanf(p, "%d", &n) != 1) n = -1;
    if (p) pclose(p);
    return n;
}

Test(npy, failed_write_leaves_the_old_file)
{
    char path[300], err[512];
    snprintf(path, sizeof path, "%s/x.npy", tmpdir);
    double small[3] = {1, 2, 3};
    sg_array a = {.dtype = SG_F64, .ndim = 1, .shape = {3}, .data = small};
    cr_assert_eq(sg_npy_write(path, &a, err, sizeof err), SG_OK, "%s", err);
    enum { N = 4096 };
    double *big = calloc(N, sizeof(double));
    cr_assert_not_null(big);
    sg_array b = {.dtype = SG_F64, .ndim = 1, .shape = {N}, .data = big};
    signal(SIGXFSZ, SIG_IGN); /* the write then fails with EFBIG instead of killing the process */
    struct rlimit old, lim;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    lim.rlim_cur = 8192; /* header + half of big */
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    sg_status s = sg_npy_write(path, &b, err, sizeof err);
    setrlimit(RLIMIT_FSIZE, &old);
    free(big);
    cr_assert_eq(s, SG_ERR_IO, "a write past RLIMIT_FSIZE must fail (got %d)", s);
    cr_expect(strstr(err, path) && strstr(err, "unchanged"), "%s", err);
    sg_array r;
    cr_assert_eq(sg_npy_read(path, &r, err, sizeof err), SG_OK, "the old file was damaged: %s", err);
    cr_expect_eq(r.shape[0], 3);
    cr_expect(r.shape[0] == 3 && ((double *)r.data)[2] == 3);
    sg_array_free(&r);
    cr_expect_eq(files_in(tmpdir), 1, "a temporary file was left beside x.npy");
}

/* Replacing a file keeps its permission bits; a symlink is written through (the link stays); a FIFO (like
   /dev/stdout or a device) is written in place, never renamed over. */
Test(npy, write_keeps_mode_links_and_devices)
{
    char path[300], link[300], err[512];
    snprintf(path, sizeof path, "%s/m.npy", tmpdir);
    snprintf(link, sizeof link, "%s/l.npy", tmpdir);
    double x[2] = {5, 6};
    sg_array a = {.dtype = SG_F64, .ndim = 1, .shape = {2}, .data = x};
    cr_assert_eq(sg_npy_write(path, &a, err, sizeof err), SG_OK, "%s", err);
    cr_assert_eq(chmod(path, 0604), 0);
    x[1] = 7;
    cr_assert_eq(sg_npy_write(path, &a, err, sizeof err), SG_OK, "%s", err);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_expect_eq(st.st_mode & 07777, 0604, "mode %o", (unsigned)(st.st_mode & 07777));
    cr_assert_eq(symlink("m.npy", link), 0);
    x[1] = 8;
    cr_assert_eq(sg_npy_write(link, &a, err, sizeof err), SG_OK, "%s", err);
    cr_assert_eq(lstat(link, &st), 0);
    cr_expect(S_ISLNK(st.st_mode), "the symlink was replaced by a file");
    sg_array r;
    cr_assert_eq(sg_npy_read(path, &r, err, sizeof err), SG_OK, "%s", err);
    cr_expect_eq(((double *)r.data)[1], 8, "not written through the link");
    sg_array_free(&r);
    char fifo[300];
    snprintf(fifo, sizeof fifo, "%s/f.npy", tmpdir);
    cr_assert_eq(mkfifo(fifo, 0600), 0);
    pid_t rd = fork();
    cr_assert_neq(rd, -1);
    if (rd == 0) { /* the reader a FIFO needs before a writer can open it */
        FILE *f = fopen(fifo, "rb");
        char buf[256];
        while (f && fread(buf, 1, sizeof buf, f) > 0) {}
        _exit(0);
    }
    sg_status s = sg_npy_write(fifo, &a, err, sizeof err);
    kill(rd, SIGKILL);
    waitpid(rd, NULL, 0);
    cr_expect_eq(s, SG_OK, "%s", err);
    cr_assert_eq(lstat(fifo, &st), 0);
    cr_expect(S_ISFIFO(st.st_mode), "the FIFO was replaced by a file");
    cr_expect_eq(files_in(tmpdir), 3);
}

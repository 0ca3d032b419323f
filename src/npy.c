/* .npy reader/writer (format versions 1.0, 2.0, 3.0; float32/float64; C or Fortran order; either byte order).
   sg_npy_parse is fuzzed: every read is bounds-checked against len, every size product is overflow-checked,
   and every failure frees what it allocated and says what was wrong in err. */
#define _POSIX_C_SOURCE 200809L
#include "specgrad.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPY_MAXDIM 8

static sg_status fail(char *err, size_t len, sg_status s, const char *fmt, ...)
{
    if (err && len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, len, fmt, ap);
        va_end(ap);
    }
    return s;
}

static int host_little(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

/* n·m without overflow of int64 (both >= 0). */
static int mul_ok(int64_t a, int64_t b, int64_t *r)
{
    if (a < 0 || b < 0 || (a && b > INT64_MAX / a)) return 0;
    *r = a * b;
    return 1;
}

/* ---- header dict: {'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), } ------------------------ */
typedef struct {
    const char *p, *end;
} cur;

static void ws(cur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int eat(cur *c, char ch)
{
    ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A Python string literal without escapes; copies at most cap-1 bytes. Returns 0 on malformed input. */
static int str_lit(cur *c, char *out, size_t cap)
{
    ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return 0;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || *c->p == '\n') return 0;
        if (n + 1 < cap) out[n++] = *c->p;
        else return 0; /* longer than any key or dtype we know: reject rather than truncate */
        c->p++;
    }
    if (c->p >= c->end) return 0;
    c->p++;
    out[n] = 0;
    return 1;
}

static int word(cur *c, const char *w)
{
    ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0) return 0;
    c->p += n;
    return 1;
}

/* Non-negative decimal integer (optionally with Python 2's 'L' suffix). -1: no digits, -2: overflow. */
static int int_lit(cur *c, int64_t *v)
{
    ws(c);
    int64_t x = 0;
    int nd = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        int d = *c->p - '0';
        if (x > (INT64_MAX - d) / 10) return -2;
        x = x * 10 + d;
        c->p++;
        nd++;
    }
    if (!nd) return -1;
    if (c->p < c->end && *c->p == 'L') c->p++;
    *v = x;
    return 0;
}

typedef struct {
    char descr[16];
    int fortran;
    int ndim;
    int64_t shape[NPY_MAXDIM];
    unsigned seen; /* bit 0 descr, 1 fortran_order, 2 shape */
} npy_hdr;

static sg_status parse_shape(cur *c, npy_hdr *h, char *err, size_t elen)
{
    if (!eat(c, '(')) return fail(err, elen, SG_ERR_FORMAT, "npy header: 'shape' must be a tuple like (2, 3)");
    h->ndim = 0;
    for (;;) {
        if (eat(c, ')')) return SG_OK;
        int64_t v;
        int r = int_lit(c, &v);
        if (r == -2) return fail(err, elen, SG_ERR_FORMAT, "npy header: shape dimension does not fit in int64");
        if (r < 0) {
            ws(c);
            if (c->p < c->end && *c->p == '-')
                return fail(err, elen, SG_ERR_FORMAT, "npy header: negative shape dimension");
            return fail(err, elen, SG_ERR_FORMAT, "npy header: shape must hold non-negative integers");
        }
        if (h->ndim == NPY_MAXDIM)
            return fail(err, elen, SG_ERR_FORMAT, "npy header: more than %d dimensions", NPY_MAXDIM);
        h->shape[h->ndim++] = v;
        if (eat(c, ',')) continue;
        if (eat(c, ')')) return SG_OK;
        return fail(err, elen, SG_ERR_FORMAT, "npy header: expected ',' or ')' in shape");
    }
}

static sg_status parse_header(const char *s, size_t n, npy_hdr *h, char *err, size_t elen)
{
    cur c = {s, s + n};
    memset(h, 0, sizeof *h);
    if (!eat(&c, '{')) return fail(err, elen, SG_ERR_FORMAT, "npy header: expected a dict starting with '{'");
    for (;;) {
        if (eat(&c, '}')) break;
        char key[32];
        if (!str_lit(&c, key, sizeof key)) return fail(err, elen, SG_ERR_FORMAT, "npy header: expected a quoted key or '}'");
        if (!eat(&c, ':')) return fail(err, elen, SG_ERR_FORMAT, "npy header: expected ':' after key '%s'", key);
        unsigned bit;
        if (!strcmp(key, "descr")) {
            bit = 1;
            ws(&c);
            if (c.p < c.end && *c.p == '[')
                return fail(err, elen, SG_ERR_FORMAT, "structured dtype not supported (float32/float64 only)");
            if (!str_lit(&c, h->descr, sizeof h->descr))
                return fail(err, elen, SG_ERR_FORMAT, "npy header: 'descr' must be a short quoted dtype string");
        } else if (!strcmp(key, "fortran_order")) {
            bit = 2;
            if (word(&c, "True")) h->fortran = 1;
            else if (word(&c, "False")) h->fortran = 0;
            else return fail(err, elen, SG_ERR_FORMAT, "npy header: 'fortran_order' must be True or False");
        } else if (!strcmp(key, "shape")) {
            bit = 4;
            sg_status st = parse_shape(&c, h, err, elen);
            if (st != SG_OK) return st;
        } else {
            return fail(err, elen, SG_ERR_FORMAT, "npy header: unexpected key '%s'", key);
        }
        if (h->seen & bit) return fail(err, elen, SG_ERR_FORMAT, "npy header: duplicate key '%s'", key);
        h->seen |= bit;
        if (eat(&c, ',')) continue;
        if (eat(&c, '}')) break;
        return fail(err, elen, SG_ERR_FORMAT, "npy header: expected ',' or '}' after '%s'", key);
    }
    ws(&c);
    while (c.p < c.end && *c.p == 0) c.p++; /* some writers pad with NULs */
    if (c.p != c.end) return fail(err, elen, SG_ERR_FORMAT, "npy header: trailing characters after the dict");
    if (h->seen != 7)
        return fail(err, elen, SG_ERR_FORMAT, "npy header: missing key '%s'",
                    !(h->seen & 1) ? "descr" : !(h->seen & 2) ? "fortran_order" : "shape");
    return SG_OK;
}

/* descr → dtype and whether the payload is big-endian. '|' and '=' mean native. */
static sg_status parse_descr(const char *d, sg_dtype *t, int *big, char *err, size_t elen)
{
    const char *k = d;
    *big = !host_little();
    if (*k == '<') *big = 0, k++;
    else if (*k == '>') *big = 1, k++;
    else if (*k == '|' || *k == '=') k++;
    if (!strcmp(k, "f4")) *t = SG_F32;
    else if (!strcmp(k, "f8")) *t = SG_F64;
    else return fail(err, elen, SG_ERR_FORMAT, "dtype '%s' not supported (float32/float64 only)", d);
    return SG_OK;
}

static void swap_bytes(unsigned char *p, int64_t count, size_t size)
{
    for (int64_t i = 0; i < count; i++, p += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}

/* Fortran (column-major) n-d layout → C order. dst[c-index of (i0..ik)] = src[i0 + d0·(i1 + d1·(...))]. */
static void f_to_c(const unsigned char *src, unsigned char *dst, int ndim, const int64_t *shape, int64_t count,
                   size_t size)
{
    int64_t idx[NPY_MAXDIM] = {0}, fstr[NPY_MAXDIM];
    int64_t s = 1;
    for (int d = 0; d < ndim; d++) fstr[d] = s, s *= shape[d];
    int64_t off = 0; /* Fortran offset of idx, updated incrementally as the C index advances */
    for (int64_t i = 0; i < count; i++) {
        memcpy(dst + (size_t)i * size, src + (size_t)off * size, size);
        for (int d = ndim - 1; d >= 0; d--) { /* odometer: last index fastest */
            if (++idx[d] < shape[d]) {
                off += fstr[d];
                break;
            }
            off -= fstr[d] * (shape[d] - 1);
            idx[d] = 0;
        }
    }
}

void sg_array_free(sg_array *a)
{
    if (!a) return;
    free(a->data);
    a->data = NULL;
}

sg_status sg_npy_parse(const void *buf, size_t len, sg_array *out, char *err, size_t elen)
{
    if (err && elen) err[0] = 0;
    if (!out) return fail(err, elen, SG_ERR_ARG, "npy: null output array");
    memset(out, 0, sizeof *out);
    if (!buf && len) return fail(err, elen, SG_ERR_ARG, "npy: null buffer");
    const unsigned char *b = buf;
    if (len >= 6 && memcmp(b, "\x93NUMPY", 6) != 0)
        return fail(err, elen, SG_ERR_FORMAT, "npy: bad magic string (not a .npy file)");
    if (len < 10) return fail(err, elen, SG_ERR_FORMAT, "npy: file truncated: %zu bytes, preamble needs 10", len);
    int major = b[6], minor = b[7];
    size_t pre, hlen;
    if (major == 1 && minor == 0) {
        pre = 10;
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
    } else if ((major == 2 || major == 3) && minor == 0) {
        if (len < 12) return fail(err, elen, SG_ERR_FORMAT, "npy: file truncated inside the v%d header length", major);
        pre = 12;
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    } else {
        return fail(err, elen, SG_ERR_FORMAT, "npy: unsupported format version %d.%d (1.0, 2.0, 3.0 known)", major, minor);
    }
    if (hlen > len - pre)
        return fail(err, elen, SG_ERR_FORMAT, "npy: header length %zu exceeds the %zu bytes after the preamble", hlen,
                    len - pre);
    npy_hdr h;
    sg_status st = parse_header((const char *)b + pre, hlen, &h, err, elen);
    if (st != SG_OK) return st;
    sg_dtype t = SG_F64;
    int big;
    st = parse_descr(h.descr, &t, &big, err, elen);
    if (st != SG_OK) return st;
    size_t isz = t == SG_F32 ? 4 : 8;
    int64_t count = 1, bytes;
    for (int d = 0; d < h.ndim; d++)
        if (!mul_ok(count, h.shape[d], &count))
            return fail(err, elen, SG_ERR_FORMAT, "npy: shape's element count overflows int64");
    if (!mul_ok(count, (int64_t)isz, &bytes) || (uint64_t)bytes > (uint64_t)SIZE_MAX)
        return fail(err, elen, SG_ERR_FORMAT, "npy: shape's byte size overflows");
    size_t have = len - pre - hlen;
    if ((uint64_t)bytes != (uint64_t)have)
        return fail(err, elen, SG_ERR_FORMAT, "npy: shape and dtype need %lld data bytes, file has %zu", (long long)bytes,
                    have);
    void *data = malloc(bytes ? (size_t)bytes : 1);
    if (!data) return fail(err, elen, SG_ERR_ALLOC, "npy: cannot allocate %lld bytes", (long long)bytes);
    const unsigned char *payload = b + pre + hlen;
    if (h.fortran && h.ndim > 1) f_to_c(payload, data, h.ndim, h.shape, count, isz);
    else if (bytes) memcpy(data, payload, (size_t)bytes);
    if (big == host_little()) swap_bytes(data, count, isz);
    out->dtype = t;
    out->ndim = h.ndim;
    memcpy(out->shape, h.shape, sizeof h.shape);
    out->data = data;
    return SG_OK;
}

sg_status sg_npy_read(const char *path, sg_array *out, char *err, size_t elen)
{
    if (err && elen) err[0] = 0;
    if (!out) return fail(err, elen, SG_ERR_ARG, "npy: null output array");
    memset(out, 0, sizeof *out);
    if (!path) return fail(err, elen, SG_ERR_ARG, "npy: null path");
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, elen, SG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    /* Read in growing chunks: works for pipes and files alike, no reliance on ftell. */
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    sg_status st = SG_OK;
    while (buf) {
        if (n == cap) {
            unsigned char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                st = fail(err, elen, SG_ERR_ALLOC, "%s: out of memory reading the file", path);
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) st = fail(err, elen, SG_ERR_IO, "%s: read error: %s", path, strerror(errno));
            break;
        }
    }
    if (!buf) st = fail(err, elen, SG_ERR_ALLOC, "%s: out of memory reading the file", path);
    fclose(f);
    if (st == SG_OK) {
        char e2[400] = "";
        st = sg_npy_parse(buf, n, out, e2, sizeof e2);
        if (st != SG_OK) fail(err, elen, st, "%s: %s", path, e2);
    }
    free(buf);
    return st;
}

sg_status sg_npy_write(const char *path, const sg_array *a, char *err, size_t elen)
{
    if (err && elen) err[0] = 0;
    if (!path || !a) return fail(err, elen, SG_ERR_ARG, "npy: null path or array");
    if (a->dtype != SG_F32 && a->dtype != SG_F64) return fail(err, elen, SG_ERR_ARG, "npy: unknown dtype %d", (int)a->dtype);
    if (a->ndim < 0 || a->ndim > NPY_MAXDIM)
        return fail(err, elen, SG_ERR_ARG, "npy: ndim %d outside 0..%d", a->ndim, NPY_MAXDIM);
    size_t isz = a->dtype == SG_F32 ? 4 : 8;
    int64_t count = 1, bytes;
    for (int d = 0; d < a->ndim; d++)
        if (!mul_ok(count, a->shape[d], &count))
            return fail(err, elen, SG_ERR_ARG, "npy: negative or overflowing shape in dimension %d", d);
    if (!mul_ok(count, (int64_t)isz, &bytes) || (uint64_t)bytes > (uint64_t)SIZE_MAX)
        return fail(err, elen, SG_ERR_ARG, "npy: array byte size overflows");
    if (bytes && !a->data) return fail(err, elen, SG_ERR_ARG, "npy: null data");

    char dict[400];
    int k = snprintf(dict, sizeof dict, "{'descr': '%c%s', 'fortran_order': False, 'shape': (", host_little() ? '<' : '>',
                     a->dtype == SG_F32 ? "f4" : "f8");
    for (int d = 0; d < a->ndim; d++)
        k += snprintf(dict + k, sizeof dict - (size_t)k, "%lld,%s", (long long)a->shape[d],
                      d + 1 < a->ndim ? " " : "");
    if (a->ndim > 1) k--; /* numpy writes (2, 3) but (3,) */
    k += snprintf(dict + k, sizeof dict - (size_t)k, "), }");
    /* Pad with spaces and end with '\n' so the payload starts 64-byte aligned, as numpy does. */
    size_t pre = 10, total = pre + (size_t)k + 1;
    size_t hlen = (total + 63) / 64 * 64 - pre;
    unsigned char head[512];
    memcpy(head, "\x93NUMPY\x01\x00", 8);
    head[8] = (unsigned char)(hlen & 0xff);
    head[9] = (unsigned char)(hlen >> 8);
    memcpy(head + pre, dict, (size_t)k);
    memset(head + pre + k, ' ', hlen - (size_t)k - 1);
    head[pre + hlen - 1] = '\n';

    FILE *f = fopen(path, "wb");
    if (!f) return fail(err, elen, SG_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    int ok = fwrite(head, 1, pre + hlen, f) == pre + hlen;
    if (ok && bytes) ok = fwrite(a->data, 1, (size_t)bytes, f) == (size_t)bytes;
    if (fclose(f) != 0) ok = 0;
    if (!ok) return fail(err, elen, SG_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return SG_OK;
}

/* .npy reader/writer (format versions 1.0, 2.0, 3.0; float32/float64; C or Fortran order; either byte order).
   sg_npy_parse is fuzzed: every read is bounds-checked against len, every size product is overflow-checked,
   and every failure frees what it allocated and says what was wrong in err. */
#define _POSIX_C_SOURCE 200809L
#include "specgrad.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* A header needs at most a few hundred bytes (ndim <= 8); numpy's own reader refuses headers over 10000 bytes
   by default. Anything beyond this bound is not a header we could accept, so the reader stops there instead
   of reading (say) 4 GiB of a v2 header length. */
#define NPY_MAX_HEADER (1u << 20)

/* What the preamble and header say. */
typedef struct {
    size_t pre, hlen; /* preamble bytes (10 or 12), header bytes after it */
    npy_hdr h;
    sg_dtype t;
    int big;
    size_t isz;
    int64_t count, bytes; /* elements, payload bytes */
} npy_meta;

/* Preamble of the first len bytes (magic, version, header length). */
static sg_status parse_preamble(const unsigned char *b, size_t len, npy_meta *m, char *err, size_t elen)
{
    if (len >= 6 && memcmp(b, "\x93NUMPY", 6) != 0)
        return fail(err, elen, SG_ERR_FORMAT, "npy: bad magic string (not a .npy file)");
    if (len < 10) return fail(err, elen, SG_ERR_FORMAT, "npy: file truncated: %zu bytes, preamble needs 10", len);
    int major = b[6], minor = b[7];
    if (major == 1 && minor == 0) {
        m->pre = 10;
        m->hlen = (size_t)b[8] | (size_t)b[9] << 8;
    } else if ((major == 2 || major == 3) && minor == 0) {
        if (len < 12) return fail(err, elen, SG_ERR_FORMAT, "npy: file truncated inside the v%d header length", major);
        m->pre = 12;
        m->hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    } else {
        return fail(err, elen, SG_ERR_FORMAT, "npy: unsupported format version %d.%d (1.0, 2.0, 3.0 known)", major, minor);
    }
    if (m->hlen > NPY_MAX_HEADER)
        return fail(err, elen, SG_ERR_FORMAT, "npy: header length %zu exceeds the %u bytes any valid header needs", m->hlen,
                    NPY_MAX_HEADER);
    return SG_OK;
}

/* Header text (m->hlen bytes) → dtype, shape and payload size. */
static sg_status parse_meta(const char *hdr, npy_meta *m, char *err, size_t elen)
{
    sg_status st = parse_header(hdr, m->hlen, &m->h, err, elen);
    if (st != SG_OK) return st;
    m->t = SG_F64;
    st = parse_descr(m->h.descr, &m->t, &m->big, err, elen);
    if (st != SG_OK) return st;
    m->isz = m->t == SG_F32 ? 4 : 8;
    m->count = 1;
    for (int d = 0; d < m->h.ndim; d++)
        if (!mul_ok(m->count, m->h.shape[d], &m->count))
            return fail(err, elen, SG_ERR_FORMAT, "npy: shape's element count overflows int64");
    if (!mul_ok(m->count, (int64_t)m->isz, &m->bytes) || (uint64_t)m->bytes > (uint64_t)SIZE_MAX)
        return fail(err, elen, SG_ERR_FORMAT, "npy: shape's byte size overflows");
    return SG_OK;
}

/* Payload (exactly m->bytes, already checked) → out, C order and host byte order. Takes ownership of raw
   (a malloc'ed buffer) when adopt is set and no reordering is needed. */
static sg_status finish(const npy_meta *m, const unsigned char *payload, unsigned char *raw, int adopt, sg_array *out,
                        char *err, size_t elen)
{
    void *data;
    if (adopt && !(m->h.fortran && m->h.ndim > 1)) {
        data = raw;
    } else {
        data = malloc(m->bytes ? (size_t)m->bytes : 1);
        if (!data) {
            if (adopt) free(raw);
            return fail(err, elen, SG_ERR_ALLOC, "npy: cannot allocate %lld bytes", (long long)m->bytes);
        }
        if (m->h.fortran && m->h.ndim > 1) f_to_c(payload, data, m->h.ndim, m->h.shape, m->count, m->isz);
        else if (m->bytes) memcpy(data, payload, (size_t)m->bytes);
        if (adopt) free(raw);
    }
    if (m->big == host_little()) swap_bytes(data, m->count, m->isz);
    out->dtype = m->t;
    out->ndim = m->h.ndim;
    memcpy(out->shape, m->h.shape, sizeof m->h.shape);
    out->data = data;
    return SG_OK;
}

sg_status sg_npy_parse(const void *buf, size_t len, sg_array *out, char *err, size_t elen)
{
    if (err && elen) err[0] = 0;
    if (!out) return fail(err, elen, SG_ERR_ARG, "npy: null output array");
    memset(out, 0, sizeof *out);
    if (!buf && len) return fail(err, elen, SG_ERR_ARG, "npy: null buffer");
    const unsigned char *b = buf;
    npy_meta m;
    sg_status st = parse_preamble(b, len, &m, err, elen);
    if (st != SG_OK) return st;
    if (m.hlen > len - m.pre)
        return fail(err, elen, SG_ERR_FORMAT, "npy: header length %zu exceeds the %zu bytes after the preamble", m.hlen,
                    len - m.pre);
    st = parse_meta((const char *)b + m.pre, &m, err, elen);
    if (st != SG_OK) return st;
    size_t have = len - m.pre - m.hlen;
    if ((uint64_t)m.bytes != (uint64_t)have)
        return fail(err, elen, SG_ERR_FORMAT, "npy: shape and dtype need %lld data bytes, file has %zu",
                    (long long)m.bytes, have);
    return finish(&m, b + m.pre + m.hlen, NULL, 0, out, err, elen);
}

/* Reads up to want bytes into buf + *n; returns 0 on a read error (EOF is not an error). */
static int read_some(FILE *f, unsigned char *buf, size_t *n, size_t want)
{
    while (*n < want) {
        size_t r = fread(buf + *n, 1, want - *n, f);
        *n += r;
        if (r == 0) return !ferror(f);
    }
    return 1;
}

/* Streams the file: preamble (magic checked at once), then the header it announces, then exactly the payload
   the header's shape needs, never more (a non-.npy or endless input such as /dev/zero fails after a few
   bytes; a header that promises more data than the file has fails at EOF, with memory bounded by what was
   actually read). Same checks and messages as sg_npy_parse on the whole file. */
sg_status sg_npy_read(const char *path, sg_array *out, char *err, size_t elen)
{
    if (err && elen) err[0] = 0;
    if (!out) return fail(err, elen, SG_ERR_ARG, "npy: null output array");
    memset(out, 0, sizeof *out);
    if (!path) return fail(err, elen, SG_ERR_ARG, "npy: null path");
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, elen, SG_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char e2[400] = "";
    sg_status st = SG_OK;
    unsigned char pre[12], *hdr = NULL, *data = NULL;
    size_t n = 0;
    npy_meta m;
    if (!read_some(f, pre, &n, 10)) goto io_error;
    if (n == 10 && !memcmp(pre, "\x93NUMPY", 6) && (pre[6] == 2 || pre[6] == 3) && pre[7] == 0 &&
        !read_some(f, pre, &n, 12)) /* v2/v3: 4-byte header length */
        goto io_error;
    if ((st = parse_preamble(pre, n, &m, e2, sizeof e2)) != SG_OK) goto parse_error;
    if (!(hdr = malloc(m.hlen + 1))) {
        st = fail(e2, sizeof e2, SG_ERR_ALLOC, "npy: cannot allocate the %zu-byte header", m.hlen);
        goto parse_error;
    }
    size_t hn = 0;
    if (!read_some(f, hdr, &hn, m.hlen)) goto io_error;
    if (hn < m.hlen) {
        st = fail(e2, sizeof e2, SG_ERR_FORMAT, "npy: header length %zu exceeds the %zu bytes after the preamble", m.hlen, hn);
        goto parse_error;
    }
    if ((st = parse_meta((const char *)hdr, &m, e2, sizeof e2)) != SG_OK) goto parse_error;
    /* Payload: grow with what arrives, up to exactly m.bytes. */
    size_t want = (size_t)m.bytes, cap = want < ((size_t)1 << 20) ? want : (size_t)1 << 20, dn = 0;
    data = malloc(cap ? cap : 1);
    for (;;) {
        if (!data) {
            st = fail(e2, sizeof e2, SG_ERR_ALLOC, "npy: cannot allocate %lld bytes", (long long)m.bytes);
            goto parse_error;
        }
        if (!read_some(f, data, &dn, cap)) goto io_error;
        if (dn < cap || dn == want) break; /* EOF, or all of it */
        size_t ncap = cap > want / 2 ? want : cap * 2;
        unsigned char *nd = realloc(data, ncap);
        if (!nd) free(data);
        data = nd;
        cap = ncap;
    }
    if (dn == want) { /* anything after the payload makes the file malformed, as in sg_npy_parse */
        unsigned char extra[4096];
        size_t en = fread(extra, 1, sizeof extra, f);
        if (en == 0 && ferror(f)) goto io_error;
        if (en) {
            st = fail(e2, sizeof e2, SG_ERR_FORMAT, "npy: shape and dtype need %lld data bytes, file has more (trailing data)",
                      (long long)m.bytes);
            goto parse_error;
        }
    } else {
        st = fail(e2, sizeof e2, SG_ERR_FORMAT, "npy: shape and dtype need %lld data bytes, file has %zu",
                  (long long)m.bytes, dn);
        goto parse_error;
    }
    fclose(f);
    free(hdr);
    st = finish(&m, data, data, 1, out, e2, sizeof e2);
    if (st != SG_OK) fail(err, elen, st, "%s: %s", path, e2);
    return st;

io_error:
    st = fail(err, elen, SG_ERR_IO, "%s: read error: %s", path, strerror(errno));
    goto done;
parse_error:
    fail(err, elen, st, "%s: %s", path, e2);
done:
    fclose(f);
    free(hdr);
    free(data);
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

    /* Into a new file beside path, renamed over it once complete: a failed or interrupted write (disk full,
       a size limit, Ctrl-C) leaves path as it was, never a truncated .npy. A symlink, a device or a FIFO
       (/dev/stdout) is written in place as before; rename would replace it. */
    struct stat st;
    const int exists = lstat(path, &st) == 0;
    char *tmp = NULL;
    int fd = -1;
    if (exists ? S_ISREG(st.st_mode) : errno == ENOENT) {
        size_t tl = strlen(path) + 48;
        static unsigned seq;
        if (!(tmp = malloc(tl))) return fail(err, elen, SG_ERR_ALLOC, "%s: out of memory", path);
        snprintf(tmp, tl, "%s.%ld.%u.tmp", path, (long)getpid(), __atomic_fetch_add(&seq, 1, __ATOMIC_RELAXED));
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666); /* umask applies, as with fopen */
        if (fd >= 0 && exists && fchmod(fd, st.st_mode & 07777) != 0) { /* keep the old file's mode */
            close(fd);
            unlink(tmp);
            fd = -1;
        }
        if (fd < 0) { /* e.g. a writable file in a read-only directory: write it in place */
            free(tmp);
            tmp = NULL;
        }
    }
    FILE *f = tmp ? fdopen(fd, "wb") : fopen(path, "wb");
    if (!f) {
        int e = errno;
        if (tmp) close(fd), unlink(tmp), free(tmp);
        return fail(err, elen, SG_ERR_IO, "%s: cannot create: %s", path, strerror(e));
    }
    int ok = fwrite(head, 1, pre + hlen, f) == pre + hlen;
    if (ok && bytes) ok = fwrite(a->data, 1, (size_t)bytes, f) == (size_t)bytes;
    int e = errno;
    if (fclose(f) != 0 && ok) ok = 0, e = errno;
    if (ok && tmp && rename(tmp, path) != 0) ok = 0, e = errno;
    const int beside = tmp != NULL;
    if (beside && !ok) unlink(tmp);
    free(tmp);
    if (!ok)
        return fail(err, elen, SG_ERR_IO, "%s: write failed: %s%s", path, strerror(e), beside ? " (path unchanged)" : "");
    return SG_OK;
}

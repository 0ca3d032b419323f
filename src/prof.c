/* SG_PROFILE=1: where a call's fixed cost goes. One stderr line per op, with the host time in µs between
   the marks its backend sets (the lent GPU machines have no nsys; scripts/prof-summary takes medians).
   A phase that ends with a synchronisation includes the GPU work queued before it. */
#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static _Thread_local sg_prof *cur; /* the op this thread is in (nested internal calls stack) */

int sg_prof_enabled(void)
{
    static atomic_int on = -1; /* read once (threads that race compute the same value) */
    int v = atomic_load_explicit(&on, memory_order_relaxed);
    if (v < 0) {
        const char *e = getenv("SG_PROFILE");
        v = e && atoi(e) != 0;
        atomic_store_explicit(&on, v, memory_order_relaxed);
    }
    return v;
}

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

static void put(sg_prof *p, const char *fmt, ...)
{
    if (p->len >= sizeof p->line) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(p->line + p->len, sizeof p->line - p->len, fmt, ap);
    va_end(ap);
    p->len = k < 0 ? sizeof p->line : p->len + (size_t)k;
}

void sg_prof_begin(sg_prof *p, const sg_ctx *ctx, const char *op, const sg_mat *A)
{
    p->on = sg_prof_enabled();
    if (!p->on) return;
    p->len = 0;
    p->outer = cur;
    cur = p;
    put(p, "sg-profile%s op=%s backend=%s mem=%s", p->outer ? " nested" : "", op, sg_backend_name(ctx->backend),
        ctx->mem == SG_MEM_DEVICE ? "device" : "host");
    if (A)
        put(p, " dtype=%s shape=%lldx%lld batch=%lld", A->dtype == SG_F32 ? "f32" : "f64", (long long)A->rows,
            (long long)A->cols, (long long)A->batch);
    p->t0 = p->t = now_us();
}

void sg_prof_mark(const char *phase)
{
    sg_prof *p = cur;
    if (!p) return;
    double t = now_us();
    put(p, " %s=%.1f", phase, t - p->t);
    p->t = t;
}

void sg_prof_note(const char *key, long long value)
{
    if (cur) put(cur, " #%s=%lld", key, value);
}

sg_status sg_prof_end(sg_prof *p, sg_status s)
{
    if (!p->on) return s;
    double t = now_us();
    put(p, " rest=%.1f total=%.1f status=%s", t - p->t, t - p->t0, s == SG_OK ? "ok" : "error");
    cur = p->outer;
    fprintf(stderr, "%s\n", p->line);
    return s;
}

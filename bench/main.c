/* specgrad-bench: driver. For each (op, dtype, n, batch): a CPU reference on a small sub-batch (checked
   against an independent double-precision host reference), then each requested implementation is
   validated against it and, only if it passes, timed (warm-up, median of repeats, per-variant budget).
   See bench/README.md for the columns and the napkin math. */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

#include <math.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    int ops[OP_COUNT], nops;
    int64_t n[32], batch[32];
    int nn, nbatch;
    int dtypes[2], ndt;
    int impl_on[IMPL_COUNT];
    double budget_ms;
    int warmup, max_reps, quick, threads, roofline;
    double host_mem_gb;
    double cache_bytes; /* < 0: the library's default */
    int no_check_finite, progress;
    const char *json, *csv;
} options;

static int no_report(double fraction, void *user)
{
    (void)fraction, (void)user;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: specgrad-bench [options]\n"
            "  --quick            CPU-only small configuration (seconds; for CI)\n"
            "  --ops LIST         comma list of: eigh,svd,nullspace,project,project_basis,lstsq,eigh_backward,svd_backward,\n"
            "                     matfunc_backward,regularizer (default: all)\n"
            "  --n LIST           matrix sizes (default 3,8,16,32,64,128,256)\n"
            "  --batch LIST       batch sizes, 1e4 notation ok (default 1e2,1e4,1e5)\n"
            "  --dtype LIST       f32,f64 (default both)\n"
            "  --backend LIST     cpu,cuda (= cuda-dev,cuda-host),cuda-dev,cuda-host,cusolver,all (default all)\n"
            "  --budget-ms MS     time budget per timed variant and config (default 3000); configs whose one\n"
            "                     call is estimated over it are skipped and say so\n"
            "  --warmup K         warm-up calls before timing (default 2)\n"
            "  --reps K           maximum timed repeats (default 25; at least 3 unless one call > budget)\n"
            "  --threads T        CPU threads for the CPU path (default: all cores)\n"
            "  --host-mem-gb G    host memory limit for buffers (default: 40%% of MemAvailable)\n"
            "  --no-roofline      skip measuring copy bandwidth / GEMM rate on the device\n"
            "  --cache-bytes B    sg_set_cache_bytes for the GPU contexts (default: the library's, 1 GiB;\n"
            "                     0 maps and unmaps device scratch on every call: an A/B of the cache)\n"
            "  --no-check-finite  sg_set_check_finite(0) on the GPU contexts: what the NaN/Inf input scan costs\n"
            "  --progress         a no-op sg_set_progress callback (every 0.25 s, as the Python binding sets) on\n"
            "                     every context: what progress reporting costs (A/B against a run without)\n"
            "  --json FILE        write all rows as JSON (schema specgrad-bench/1)\n"
            "  --csv FILE         write all rows as CSV\n"
            "  --help\n"
            "Table on stdout, progress on stderr. Timing is reported, never asserted.\n");
}

static int parse_list(const char *s, int64_t *out, int max)
{
    int k = 0;
    char *dup = strdup(s), *save = NULL;
    for (char *t = strtok_r(dup, ",", &save); t && k < max; t = strtok_r(NULL, ",", &save)) {
        char *end;
        double v = strtod(t, &end);
        if (*end || v < 1 || v > 1e9) { free(dup); return -1; }
        out[k++] = (int64_t)llround(v);
    }
    free(dup);
    return k;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    static const int64_t dn[] = {3, 8, 16, 32, 64, 128, 256}, db[] = {100, 10000, 100000};
    for (int i = 0; i < OP_COUNT; i++) o->ops[o->nops++] = i;
    for (int i = 0; i < 7; i++) o->n[o->nn++] = dn[i];
    for (int i = 0; i < 3; i++) o->batch[o->nbatch++] = db[i];
    o->dtypes[0] = SG_F32; o->dtypes[1] = SG_F64; o->ndt = 2;
    for (int i = 0; i < IMPL_COUNT; i++) o->impl_on[i] = 1;
    o->budget_ms = 3000; o->warmup = 2; o->max_reps = 25; o->roofline = 1; o->cache_bytes = -1;
    int set_ops = 0, set_n = 0, set_b = 0, set_be = 0, set_budget = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV() do { if (!v) { fprintf(stderr, "%s needs a value\n", a); return -1; } i++; } while (0)
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); exit(0); }
        else if (!strcmp(a, "--quick")) o->quick = 1;
        else if (!strcmp(a, "--no-roofline")) o->roofline = 0;
        else if (!strcmp(a, "--no-check-finite")) o->no_check_finite = 1;
        else if (!strcmp(a, "--progress")) o->progress = 1;
        else if (!strcmp(a, "--ops")) {
            NEEDV();
            o->nops = 0; set_ops = 1;
            char *dup = strdup(v), *save = NULL;
            for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                int id = op_from_name(t);
                if (id < 0) { fprintf(stderr, "unknown op '%s'\n", t); free(dup); return -1; }
                if (o->nops < OP_COUNT) o->ops[o->nops++] = id;
            }
            free(dup);
        } else if (!strcmp(a, "--n")) {
            NEEDV(); set_n = 1;
            if ((o->nn = parse_list(v, o->n, 32)) <= 0) { fprintf(stderr, "bad --n '%s'\n", v); return -1; }
        } else if (!strcmp(a, "--batch")) {
            NEEDV(); set_b = 1;
            if ((o->nbatch = parse_list(v, o->batch, 32)) <= 0) { fprintf(stderr, "bad --batch '%s'\n", v); return -1; }
        } else if (!strcmp(a, "--dtype")) {
            NEEDV(); o->ndt = 0;
            char *dup = strdup(v), *save = NULL;
            for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (!strcmp(t, "f32") || !strcmp(t, "float32")) o->dtypes[o->ndt++ & 1] = SG_F32;
                else if (!strcmp(t, "f64") || !strcmp(t, "float64")) o->dtypes[o->ndt++ & 1] = SG_F64;
                else { fprintf(stderr, "unknown dtype '%s'\n", t); free(dup); return -1; }
            }
            free(dup);
            if (o->ndt > 2) o->ndt = 2;
        } else if (!strcmp(a, "--backend")) {
            NEEDV(); set_be = 1;
            memset(o->impl_on, 0, sizeof o->impl_on);
            char *dup = strdup(v), *save = NULL;
            for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (!strcmp(t, "cpu")) o->impl_on[IMPL_CPU] = 1;
                else if (!strcmp(t, "cuda")) o->impl_on[IMPL_GPU_DEV] = o->impl_on[IMPL_GPU_HOST] = 1;
                else if (!strcmp(t, "cuda-dev")) o->impl_on[IMPL_GPU_DEV] = 1;
                else if (!strcmp(t, "cuda-host")) o->impl_on[IMPL_GPU_HOST] = 1;
                else if (!strcmp(t, "cusolver")) o->impl_on[IMPL_CUSOLVER] = 1;
                else if (!strcmp(t, "all")) for (int k = 0; k < IMPL_COUNT; k++) o->impl_on[k] = 1;
                else { fprintf(stderr, "unknown backend '%s'\n", t); free(dup); return -1; }
            }
            free(dup);
        } else if (!strcmp(a, "--budget-ms")) { NEEDV(); o->budget_ms = atof(v); set_budget = 1; }
        else if (!strcmp(a, "--warmup")) { NEEDV(); o->warmup = atoi(v); }
        else if (!strcmp(a, "--reps")) { NEEDV(); o->max_reps = atoi(v); }
        else if (!strcmp(a, "--threads")) { NEEDV(); o->threads = atoi(v); }
        else if (!strcmp(a, "--host-mem-gb")) { NEEDV(); o->host_mem_gb = atof(v); }
        else if (!strcmp(a, "--cache-bytes")) {
            NEEDV();
            char *end;
            o->cache_bytes = strtod(v, &end);
            if (*end || !(o->cache_bytes >= 0 && o->cache_bytes < 1e18)) { fprintf(stderr, "bad --cache-bytes '%s'\n", v); return -1; }
        }
        else if (!strcmp(a, "--json")) { NEEDV(); o->json = v; }
        else if (!strcmp(a, "--csv")) { NEEDV(); o->csv = v; }
        else { fprintf(stderr, "unknown option '%s' (see --help)\n", a); return -1; }
#undef NEEDV
    }
    if (o->quick) { /* CPU only, tiny: the CI smoke configuration */
        if (!set_n) { o->nn = 3; o->n[0] = 3; o->n[1] = 8; o->n[2] = 16; }
        if (!set_b) { o->nbatch = 1; o->batch[0] = 100; }

        if (!set_be) { memset(o->impl_on, 0, sizeof o->impl_on); o->impl_on[IMPL_CPU] = 1; }
        if (!set_budget) o->budget_ms = 100;
        if (o->max_reps > 5) o->max_reps = 5;
        o->warmup = o->warmup > 1 ? 1 : o->warmup;
        o->roofline = 0;
    }
    (void)set_ops;
    if (o->max_reps > 256) o->max_reps = 256;
    if (o->budget_ms <= 0 || o->max_reps < 1 || o->warmup < 0) { fprintf(stderr, "bad budget/reps/warmup\n"); return -1; }
    return 0;
}

static double mem_available_gb(void)
{
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    double kb = 0;
    if (!f) return 8;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1) break;
    fclose(f);
    return kb > 0 ? kb / 1048576.0 : 8;
}

static void cpu_model(char *out, size_t len)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(out, len, "unknown");
    if (!f) return;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            if (p) {
                p++;
                while (*p == ' ') p++;
                p[strcspn(p, "\n")] = 0;
                snprintf(out, len, "%s", p);
            }
            break;
        }
    fclose(f);
}

static void setr(impl_result *r, row_status st, const char *fmt, ...)
{
    r->status = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof r->reason, fmt, ap);
    va_end(ap);
}

static int reps_for(double t_ms, const options *o)
{
    if (t_ms > o->budget_ms) return 0; /* the warm-up call is over budget: report it alone */
    int k = t_ms > 0 ? (int)(o->budget_ms / t_ms) : o->max_reps;
    if (k < 3) k = 3;
    if (k > o->max_reps) k = o->max_reps;
    return k;
}

static void finish_times(impl_result *r, double *t, int k)
{
    double mn = t[0], mx = t[0];
    for (int i = 1; i < k; i++) { if (t[i] < mn) mn = t[i]; if (t[i] > mx) mx = t[i]; }
    r->ms_min = mn; r->ms_max = mx; r->reps = k;
    r->ms_median = median_of(t, k);
    r->status = ST_OK;
}

/* Validation verdict: err within tol passes; err < 0 = could not check (reported, not failed). */
static int verdict(impl_result *r, double err, double tol, const char *what)
{
    r->err = err; r->tol = tol;
    if (err < 0) { snprintf(r->reason, sizeof r->reason, "unchecked: %s", what); return 1; }
    if (!(err <= tol)) {
        setr(r, ST_FAILED, "validation FAILED: %s: err %.3g > tol %.3g", what, err, tol);
        return 0;
    }
    snprintf(r->reason, sizeof r->reason, "ok: %s: err %.2g ≤ %.2g", what, err, tol);
    return 1;
}

typedef struct {
    sg_ctx *cpu, *dev, *host;
    void *stream;
    gpu_timer *timer;
    char gpu_why[512];
    device_info *d;
} env;

static void progress(const bench_row *row, const char *what)
{
    fprintf(stderr, "[bench] %-16s %s n=%-4lld batch=%-7lld %s\n", op_name(row->op), row->dtype == SG_F32 ? "f32" : "f64",
            (long long)row->n, (long long)row->batch, what);
    fflush(stderr);
}

static void run_config(const options *o, env *E, bench_row *row)
{
    op_layout L;
    op_layout_of(row->op, row->n, &L);
    sg_dtype dt = row->dtype;
    int64_t n = row->n, batch = row->batch;
    int64_t vb = (int64_t)(4e7 / ((double)n * n * n));
    if (vb < 2) vb = 2;
    if (vb > 64) vb = 64;
    if (vb > batch) vb = batch;
    size_t setb = op_set_bytes(&L, dt, batch);
    double host_lim = o->host_mem_gb * 1073741824.0;
    char msg[256], why[512];
    for (int i = 0; i < IMPL_COUNT; i++) { row->r[i].status = ST_NONE; row->r[i].err = -1; }

    /* 1. CPU reference on the validation sub-batch, checked against an independent host reference. */
    buf_set vin, ref, test;
    int have_v = set_alloc_host(&vin, &L, dt, vb), have_r = set_alloc_host(&ref, &L, dt, vb),
        have_t = set_alloc_host(&test, &L, dt, vb);
    if (!have_v || !have_r || !have_t) {
        for (int i = 0; i < IMPL_COUNT; i++)
            if (o->impl_on[i]) setr(&row->r[i], ST_ERROR, "host allocation of the validation sets failed");
        goto out;
    }
    set_fill_inputs(&vin, &L, 0x5eed0000u + (uint64_t)n * 131 + (uint64_t)row->op);
    set_copy_prefix(&ref, &vin, &L, vb);
    double t0 = now_ms();
    sg_status st = op_run(E->cpu, row->op, &ref);
    double t_pilot = now_ms() - t0;
    if (st == SG_OK) { /* a second, warm pilot: the first pays thread start-up and cold caches */
        set_poison_outputs(&test, &L);
        set_copy_prefix(&test, &vin, &L, vb);
        t0 = now_ms();
        if (op_run(E->cpu, row->op, &test) == SG_OK && now_ms() - t0 < t_pilot) t_pilot = now_ms() - t0;
    }
    int ref_ok = st == SG_OK;
    double ref_err = -1, ref_tol = op_tolerance(row->op, dt, n, 1);
    char ref_msg[160] = "";
    if (ref_ok) {
        ref_err = op_self_check(row->op, &ref, &L, vb, ref_msg, sizeof ref_msg);
        if (ref_err >= 0 && !(ref_err <= ref_tol)) ref_ok = 0;
    }

    /* 2. Host set for the full batch (CPU timing, host-streamed timing, device staging). */
    buf_set H;
    int have_h = 0;
    int need_host = o->impl_on[IMPL_CPU] || o->impl_on[IMPL_GPU_HOST] || o->impl_on[IMPL_GPU_DEV] ||
                    o->impl_on[IMPL_CUSOLVER];
    if (need_host && (double)setb > host_lim) {
        for (int i = 0; i < IMPL_COUNT; i++)
            if (o->impl_on[i])
                setr(&row->r[i], ST_SKIPPED, "needs %.1f GB host buffers > limit %.1f GB (--host-mem-gb)", setb / 1e9,
                     o->host_mem_gb * 1.073741824);
        goto out;
    }
    if (need_host) {
        have_h = set_alloc_host(&H, &L, dt, batch);
        if (!have_h) {
            for (int i = 0; i < IMPL_COUNT; i++)
                if (o->impl_on[i]) setr(&row->r[i], ST_ERROR, "host allocation of %.1f GB failed", setb / 1e9);
            goto out;
        }
        set_fill_inputs(&H, &L, 0xb0000u + (uint64_t)n);
    }

    /* 3. CPU, all cores. */
    if (o->impl_on[IMPL_CPU]) {
        impl_result *r = &row->r[IMPL_CPU];
        if (st != SG_OK) {
            setr(r, ST_ERROR, "%s: %s", sg_status_string(st), sg_last_error(E->cpu));
        } else if (!verdict(r, ref_err, ref_tol, ref_msg)) {
            /* FAILED, not timed */
        } else {
            double est = t_pilot / (double)vb * (double)batch;
            /* --quick configs are tiny by construction: a loaded CI machine must not turn them into skips */
            if (est > (o->quick ? 10000 : o->budget_ms)) {
                setr(r, ST_SKIPPED, "estimated %.0f ms per call (from a %lld-matrix pilot) > budget %.0f ms", est,
                     (long long)vb, o->budget_ms);
            } else {
                progress(row, "cpu");
                double t[256], tw = 0;
                int okc = 1;
                for (int w = 0; w < (o->warmup > 0 ? o->warmup : 1) && okc; w++) {
                    t0 = now_ms();
                    okc = op_run(E->cpu, row->op, &H) == SG_OK;
                    tw = now_ms() - t0;
                }
                int k = okc ? reps_for(tw, o) : 0;
                for (int i = 0; i < k && okc; i++) {
                    t0 = now_ms();
                    okc = op_run(E->cpu, row->op, &H) == SG_OK;
                    t[i] = now_ms() - t0;
                }
                char keep[256];
                snprintf(keep, sizeof keep, "%s", r->reason);
                if (!okc) setr(r, ST_ERROR, "%s", sg_last_error(E->cpu));
                else if (k == 0) { t[0] = tw; finish_times(r, t, 1); snprintf(r->reason, sizeof r->reason, "one call %.0f ms > budget: single measurement; %s", tw, keep); }
                else finish_times(r, t, k);
            }
        }
    }

    /* GPU variants need a context; they are validated against the CPU reference (or, without a valid
       one, against the independent host reference). */
    int gpu_any = o->impl_on[IMPL_GPU_DEV] || o->impl_on[IMPL_GPU_HOST] || o->impl_on[IMPL_CUSOLVER];
    if (gpu_any && !E->d->present) {
        for (int i = IMPL_GPU_DEV; i < IMPL_COUNT; i++)
            if (o->impl_on[i]) setr(&row->r[i], ST_SKIPPED, "no GPU: %s", E->d->why);
        goto out;
    }
#define VALIDATE_TEST(r)                                                                                        \
    do {                                                                                                        \
        double e_;                                                                                              \
        if (ref_ok) e_ = op_compare(row->op, &test, &ref, &L, vb, msg, sizeof msg);                             \
        else e_ = op_self_check(row->op, &test, &L, vb, msg, sizeof msg);                                       \
        double tol_ = op_tolerance(row->op, dt, n, !ref_ok);                                                    \
        if (!verdict(r, e_, tol_, msg)) valid = 0;                                                              \
    } while (0)

    /* 4. GPU, host-streamed (SG_MEM_HOST): pageable host buffers, wall clock around call + sync. */
    if (o->impl_on[IMPL_GPU_HOST]) {
        impl_result *r = &row->r[IMPL_GPU_HOST];
        int valid = 1;
        if (!E->host) setr(r, ST_SKIPPED, "%s", E->gpu_why);
        else {
            set_copy_prefix(&test, &vin, &L, vb);
            set_poison_outputs(&test, &L);
            sg_status s2 = op_run(E->host, row->op, &test);
            if (s2 != SG_OK) setr(r, ST_ERROR, "%s: %s", sg_status_string(s2), sg_last_error(E->host));
            else {
                VALIDATE_TEST(r);
                if (valid) {
                    progress(row, "cuda-host");
                    double t[256], tw = 0;
                    int okc = 1;
                    for (int w = 0; w < (o->warmup > 0 ? o->warmup : 1) && okc; w++) {
                        t0 = now_ms();
                        okc = op_run(E->host, row->op, &H) == SG_OK && gpu_sync(why, sizeof why);
                        tw = now_ms() - t0;
                    }
                    int k = okc ? reps_for(tw, o) : 0;
                    for (int i = 0; i < k && okc; i++) {
                        t0 = now_ms();
                        okc = op_run(E->host, row->op, &H) == SG_OK && gpu_sync(why, sizeof why);
                        t[i] = now_ms() - t0;
                    }
                    if (!okc) setr(r, ST_ERROR, "%s", sg_last_error(E->host));
                    else if (k == 0) { t[0] = tw; finish_times(r, t, 1); }
                    else finish_times(r, t, k);
                }
            }
        }
    }

    /* 5. GPU, device-resident (SG_MEM_DEVICE): rotating input sets (total > 2× L2 when memory allows),
          L2 flushed before every timed call, cudaEvents on the context's stream. */
    buf_set D[4];
    int nD = 0;
    if (o->impl_on[IMPL_GPU_DEV] || o->impl_on[IMPL_CUSOLVER]) {
        size_t fr = gpu_free_bytes(), l2 = E->d->l2_bytes ? E->d->l2_bytes : ((size_t)50 << 20);
        int want = (int)((2 * l2 + setb - 1) / (setb ? setb : 1));
        if (want < 1) want = 1;
        if (want > 4) want = 4;
        /* keep ~40% of free memory for the library's / cuSOLVER's own workspace and the validation sets */
        while (want > 1 && (double)want * setb > 0.6 * fr) want--;
        if ((double)setb > 0.6 * fr) {
            for (int i = IMPL_GPU_DEV; i < IMPL_COUNT; i++)
                if (o->impl_on[i] && i != IMPL_GPU_HOST)
                    setr(&row->r[i], ST_SKIPPED, "needs %.1f GB device buffers > 60%% of free %.1f GB", setb / 1e9,
                         fr / 1e9);
        } else {
            for (nD = 0; nD < want; nD++) {
                if (!gpu_set_alloc(&D[nD], &L, dt, batch, why, sizeof why)) break;
                if (nD > 0) set_fill_inputs(&H, &L, 0xd0000u + (uint64_t)nD * 977 + (uint64_t)n);
                if (!gpu_set_upload(&D[nD], &H, batch, why, sizeof why)) { gpu_set_free(&D[nD]); break; }
            }
            if (nD == 0)
                for (int i = IMPL_GPU_DEV; i < IMPL_COUNT; i++)
                    if (o->impl_on[i] && i != IMPL_GPU_HOST) setr(&row->r[i], ST_ERROR, "device sets: %s", why);
        }
    }
    if (o->impl_on[IMPL_GPU_DEV] && nD > 0) {
        impl_result *r = &row->r[IMPL_GPU_DEV];
        int valid = 1;
        buf_set dv;
        if (!E->dev) setr(r, ST_SKIPPED, "%s", E->gpu_why);
        else if (!gpu_set_alloc(&dv, &L, dt, vb, why, sizeof why)) setr(r, ST_ERROR, "%s", why);
        else {
            set_copy_prefix(&test, &vin, &L, vb);
            set_poison_outputs(&test, &L);
            sg_status s2 = SG_OK;
            if (!gpu_set_upload(&dv, &test, vb, why, sizeof why)) setr(r, ST_ERROR, "%s", why);
            else if ((s2 = op_run(E->dev, row->op, &dv)) != SG_OK)
                setr(r, ST_ERROR, "%s: %s", sg_status_string(s2), sg_last_error(E->dev));
            else if (!gpu_sync(why, sizeof why) || !gpu_set_download(&test, &dv, vb, why, sizeof why))
                setr(r, ST_ERROR, "%s", why);
            else {
                VALIDATE_TEST(r);
                if (valid) {
                    progress(row, "cuda-dev");
                    double t[256], tw = 0;
                    int okc = 1;
                    for (int w = 0; w < (o->warmup > 0 ? o->warmup : 1) && okc; w++) {
                        okc = gpu_flush_l2(E->timer) && gpu_timer_start(E->timer) &&
                              op_run(E->dev, row->op, &D[w % nD]) == SG_OK && gpu_timer_stop(E->timer, &tw);
                    }
                    int k = okc ? reps_for(tw, o) : 0;
                    for (int i = 0; i < k && okc; i++)
                        okc = gpu_flush_l2(E->timer) && gpu_timer_start(E->timer) &&
                              op_run(E->dev, row->op, &D[i % nD]) == SG_OK && gpu_timer_stop(E->timer, &t[i]);
                    if (!okc) setr(r, ST_ERROR, "timed call: %s", sg_last_error(E->dev)[0] ? sg_last_error(E->dev) : "CUDA event/flush failed");
                    else if (k == 0) { t[0] = tw; finish_times(r, t, 1); }
                    else finish_times(r, t, k);
                    if (okc) snprintf(r->reason + strlen(r->reason), sizeof r->reason - strlen(r->reason),
                                      "; %d rotating set(s) of %.0f MB", nD, setb / 1e6);
                }
            }
            gpu_set_free(&dv);
        }
    }

    /* 6. Raw cuSOLVER (vendor baseline), device-resident like 5; input copy restored untimed. */
    if (o->impl_on[IMPL_CUSOLVER] && nD > 0) {
        impl_result *r = &row->r[IMPL_CUSOLVER];
        int valid = 1;
        if (!cusolver_has_baseline(row->op, n, why, sizeof why)) setr(r, ST_SKIPPED, "%s", why);
        else {
            buf_set dv;
            cusolver_bench *cv = NULL, *cb = NULL;
            if (!gpu_set_alloc(&dv, &L, dt, vb, why, sizeof why)) { setr(r, ST_ERROR, "%s", why); goto cs_done; }
            set_copy_prefix(&test, &vin, &L, vb);
            set_poison_outputs(&test, &L);
            if (!gpu_set_upload(&dv, &test, vb, why, sizeof why) ||
                !(cv = cusolver_bench_create(row->op, dt, n, vb, E->stream, why, sizeof why)) ||
                !cusolver_bench_prepare(cv, &dv, why, sizeof why) || !cusolver_bench_call(cv, why, sizeof why) ||
                !cusolver_bench_finish(cv, &test, vb, why, sizeof why)) {
                setr(r, ST_ERROR, "validation run: %s", why);
                goto cs_done;
            }
            VALIDATE_TEST(r);
            if (!valid) goto cs_done;
            if (!(cb = cusolver_bench_create(row->op, dt, n, batch, E->stream, why, sizeof why))) {
                setr(r, ST_SKIPPED, "%s", why);
                goto cs_done;
            }
            progress(row, "cusolver");
            double t[256], tw = 0;
            int okc = 1;
            for (int w = 0; w < (o->warmup > 0 ? o->warmup : 1) && okc; w++)
                okc = cusolver_bench_prepare(cb, &D[w % nD], why, sizeof why) && gpu_flush_l2(E->timer) &&
                      gpu_timer_start(E->timer) && cusolver_bench_call(cb, why, sizeof why) &&
                      gpu_timer_stop(E->timer, &tw);
            int k = okc ? reps_for(tw, o) : 0;
            for (int i = 0; i < k && okc; i++)
                okc = cusolver_bench_prepare(cb, &D[i % nD], why, sizeof why) && gpu_flush_l2(E->timer) &&
                      gpu_timer_start(E->timer) && cusolver_bench_call(cb, why, sizeof why) &&
                      gpu_timer_stop(E->timer, &t[i]);
            if (okc) okc = cusolver_bench_finish(cb, NULL, 0, why, sizeof why);
            if (!okc) setr(r, ST_ERROR, "timed call: %s", why);
            else if (k == 0) { t[0] = tw; finish_times(r, t, 1); }
            else finish_times(r, t, k);
            if (okc) {
                const char *which = row->op == OP_SVD ? "gesvdjBatched" : n <= 32 ? "syevjBatched" : "XsyevBatched";
                snprintf(r->reason + strlen(r->reason), sizeof r->reason - strlen(r->reason), "; %s", which);
            }
        cs_done:
            cusolver_bench_destroy(cv);
            cusolver_bench_destroy(cb);
            if (dv.ntens) gpu_set_free(&dv);
        }
    }
    for (int i = 0; i < nD; i++) gpu_set_free(&D[i]);

out:
    if (have_v) set_free_host(&vin);
    if (have_r) set_free_host(&ref);
    if (have_t) set_free_host(&test);
    if (have_h) set_free_host(&H);
}

/* The JSON with the rows so far, through a temporary file and rename: rewritten after every row, so a run
   cut short (gpu-check's deadline) keeps what it timed, and a kill mid-write leaves the previous version. */
static int json_checkpoint(const char *path, const run_info *ri, const device_info *d, const bench_row *rows, int n)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return 0;
    if (!report_json(tmp, ri, d, rows, n)) return 0;
    return rename(tmp, path) == 0;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o) != 0) { usage(stderr); return 2; }
    if (o.host_mem_gb <= 0) o.host_mem_gb = 0.4 * mem_available_gb();

    /* run info */
    char date[64], cmd[1024] = "", cpu[256];
    time_t now = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    for (int i = 0; i < argc; i++) {
        strncat(cmd, argv[i], sizeof cmd - strlen(cmd) - 2);
        if (i + 1 < argc) strncat(cmd, " ", sizeof cmd - strlen(cmd) - 1);
    }
    cpu_model(cpu, sizeof cpu);
    char load[128] = "unknown";
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (fgets(load, sizeof load, lf)) load[strcspn(load, "\n")] = 0;
        fclose(lf);
    }
    run_info ri = {date, cmd, cpu, load, o.threads > 0 ? o.threads : omp_get_max_threads(), o.quick, o.budget_ms,
                   !o.no_check_finite};

    /* contexts */
    device_info dev;
    env E;
    memset(&E, 0, sizeof E);
    E.d = &dev;
    int want_gpu = o.impl_on[IMPL_GPU_DEV] || o.impl_on[IMPL_GPU_HOST] || o.impl_on[IMPL_CUSOLVER];
    if (want_gpu) gpu_probe(&dev);
    else { memset(&dev, 0, sizeof dev); snprintf(dev.why, sizeof dev.why, "GPU variants not requested"); }
    if (sg_create(&E.cpu, SG_BACKEND_CPU) != SG_OK) { fprintf(stderr, "cannot create the CPU context\n"); return 1; }
    sg_set_threads(E.cpu, o.threads);
    if (o.progress) sg_set_progress(E.cpu, no_report, 0.25, NULL);
    if (dev.present) {
        E.stream = gpu_stream_create();
        char why[256];
        sg_status s1 = sg_create(&E.dev, SG_BACKEND_CUDA), s2 = SG_OK;
        if (s1 == SG_OK) {
            s2 = sg_set_memspace(E.dev, SG_MEM_DEVICE);
            if (s2 == SG_OK) s2 = sg_set_stream(E.dev, E.stream);
        }
        if (s1 != SG_OK || s2 != SG_OK) {
            snprintf(E.gpu_why, sizeof E.gpu_why, "CUDA context: %s", sg_status_string(s1 != SG_OK ? s1 : s2));
            if (E.dev) sg_destroy(E.dev);
            E.dev = NULL;
        }
        if (sg_create(&E.host, SG_BACKEND_CUDA) != SG_OK || sg_set_stream(E.host, E.stream) != SG_OK) {
            snprintf(E.gpu_why, sizeof E.gpu_why, "CUDA context for host memory could not be created");
            if (E.host) sg_destroy(E.host);
            E.host = NULL;
        }
        for (int k = 0; k < 2; k++) {
            sg_ctx *c = k ? E.host : E.dev;
            if (!c) continue;
            if (o.cache_bytes >= 0) sg_set_cache_bytes(c, (size_t)o.cache_bytes);
            if (o.no_check_finite) sg_set_check_finite(c, 0);
            if (o.progress) sg_set_progress(c, no_report, 0.25, NULL);
        }
        E.timer = gpu_timer_create(E.stream, dev.l2_bytes, why, sizeof why);
        if (!E.timer || !E.stream) {
            fprintf(stderr, "GPU timer/stream: %s — GPU variants disabled\n", E.stream ? why : "stream creation failed");
            dev.present = 0;
            snprintf(dev.why, sizeof dev.why, "timer/stream setup failed");
        }
        if (dev.present && o.roofline) {
            fprintf(stderr, "[bench] measuring device copy bandwidth and GEMM rate...\n");
            if (!gpu_measure_roofline(&dev)) fprintf(stderr, "[bench] roofline: %s\n", dev.roofline_note);
        }
    }

    report_header(stdout, &ri, &dev);
    report_table_head(stdout);
    int total = o.nops * o.ndt * o.nn * o.nbatch;
    bench_row *rows = calloc((size_t)total, sizeof *rows);
    if (!rows) return 1;
    int nr = 0;
    for (int a = 0; a < o.nops; a++)
        for (int d = 0; d < o.ndt; d++)
            for (int i = 0; i < o.nn; i++)
                for (int j = 0; j < o.nbatch; j++) {
                    bench_row *row = &rows[nr++];
                    row->op = (op_id)o.ops[a];
                    row->dtype = (sg_dtype)o.dtypes[d];
                    row->n = o.n[i];
                    row->batch = o.batch[j];
                    row->flops = op_flops(row->op, row->n);
                    row->bytes = op_bytes(row->op, row->n, row->dtype);
                    fprintf(stderr, "[bench] %d/%d %s %s n=%lld batch=%lld\n", nr, total, op_name(row->op),
                            row->dtype == SG_F32 ? "f32" : "f64", (long long)row->n, (long long)row->batch);
                    run_config(&o, &E, row);
                    report_table_row(stdout, row, &dev);
                    fflush(stdout);
                    if (o.json) json_checkpoint(o.json, &ri, &dev, rows, nr);
                }
    report_summary(stdout, &ri, rows, nr, &dev);
    int rc = 0;
    if (o.json && !json_checkpoint(o.json, &ri, &dev, rows, nr)) { fprintf(stderr, "cannot write %s\n", o.json); rc = 1; }
    if (o.csv && !report_csv(o.csv, &ri, &dev, rows, nr)) { fprintf(stderr, "cannot write %s\n", o.csv); rc = 1; }

    gpu_timer_destroy(E.timer);
    if (E.dev) sg_destroy(E.dev);
    if (E.host) sg_destroy(E.host);
    gpu_stream_destroy(E.stream);
    sg_destroy(E.cpu);
    free(rows);
    return rc;
}

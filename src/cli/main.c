/* specgrad — command-line front-end: option parsing, `info`, help, dispatch to ops.c and demo.c. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f, "specgrad %d.%d — batched spectral linear algebra and gradients on .npy files\n\n"
               "usage:\n"
               "  specgrad demo [--backend B]      seed 000: nullspace vectors need full_matrices SVD\n"
               "  specgrad info                    backends and CUDA devices\n"
               "  specgrad --version               prints specgrad MAJOR.MINOR\n",
            SG_VERSION_MAJOR, SG_VERSION_MINOR);
    cli_ops_list(f);
    fprintf(f, "\n`specgrad <command> --help` describes a command. Exit status: 0 ok, 1 error, 2 usage error, 130 interrupted (Ctrl-C).\n");
}

static int parse_num(const cli_opts *o, const char *opt, const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno == ERANGE || !isfinite(x))
        return cli_err(o, "%s: '%s' is not a finite number", opt, v);
    *out = x;
    return 0;
}

static int parse_fn(const cli_opts *o, const char *v, sg_fn *fn)
{
    static const char *names[] = {"sqrt", "log", "exp", "pow"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(v, names[i])) {
            fn->kind = (sg_fn_kind)i;
            return 0;
        }
    return cli_err(o, "--fn: unknown function '%s' (sqrt, log, exp, pow)", v);
}

static int pick(const cli_opts *o, const char *opt, const char *v, const char *const *names, int n, int *out)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i])) {
            *out = i;
            return 0;
        }
    fprintf(stderr, "specgrad: %s: %s: unknown value '%s' (", o->op, opt, v);
    for (int i = 0; i < n; i++) fprintf(stderr, "%s%s", names[i], i + 1 < n ? ", " : ")\n");
    return 1;
}

/* Options may appear anywhere after the command; --opt=value and --opt value both work.
   *has_p says whether --p was given (fn.p has no "unset" value: pow must not default to p = 0). */
static int parse(cli_opts *o, int argc, char **argv, int *help, int *has_p)
{
    static const char *backends[] = {"auto", "cpu", "cuda"}, *dtypes[] = {"f32", "f64"},
                      *modes[] = {"exact", "mask", "lorentz", "taylor"},
                      *kinds[] = {"spectral", "nuclear", "ortho", "logdet", "eigsum"};
    for (int i = 0; i < argc; i++) {
        char *a = argv[i], name[64];
        const char *val = NULL;
        if (a[0] != '-' || !strcmp(a, "-")) {
            if (o->npos == CLI_MAXPOS) return cli_err(o, "too many arguments");
            o->pos[o->npos++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof name) return cli_err(o, "unknown option '%s'", a);
        memcpy(name, a, nl);
        name[nl] = 0;
        if (eq) val = eq + 1;
        if (!strcmp(name, "-h") || !strcmp(name, "--help")) {
            *help = 1;
            continue;
        }
        const struct { const char *name; int *field, value; } flags[] = {
            {"--full", &o->full, 1},         {"--row", &o->which, SG_PROJ_ROW},      {"--null", &o->which, SG_PROJ_NULL},
            {"--no-grad", &o->nograd, 1},    {"--complement", &o->complement, 1},  {"--eig", &o->eig, 1},
            {"--progress", &o->progress, 1}};
        static const char *valued[] = {"--backend", "--dtype", "-o", "--out", "--atol", "--rtol", "--mode",
                                       "--param", "--fn", "--p", "--kind", "--threads"};
        int flag = -1, known = 0;
        for (int q = 0; q < (int)(sizeof flags / sizeof *flags); q++)
            if (!strcmp(name, flags[q].name)) flag = q;
        for (size_t q = 0; q < sizeof valued / sizeof *valued; q++) known |= !strcmp(name, valued[q]);
        if (flag < 0 && !known) return cli_err(o, "unknown option '%s' (see specgrad %s --help)", name, o->op);
        if (!cli_option_applies(o->op, name)) /* silently ignoring it would hide a mistake */
            return cli_err(o, "%s does not apply to %s (see specgrad %s --help)", name, o->op, o->op);
        if (flag >= 0) {
            if (val) return cli_err(o, "%s takes no value", name);
            *flags[flag].field = flags[flag].value;
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) return cli_err(o, "%s needs a value", name);
            val = argv[++i];
        }
        int k;
        double x;
        if (!strcmp(name, "--backend")) {
            if (pick(o, name, val, backends, 3, &k)) return 1;
            o->backend = (sg_backend)k; /* enum order: AUTO, CPU, CUDA */
        } else if (!strcmp(name, "--dtype")) {
            if (pick(o, name, val, dtypes, 2, &o->dtype)) return 1;
        } else if (!strcmp(name, "-o") || !strcmp(name, "--out")) {
            o->out = val;
        } else if ((!strcmp(name, "--atol") || !strcmp(name, "--rtol")) && strlen(val) > 4 &&
                   !strcmp(val + strlen(val) - 4, ".npy")) { /* one value per matrix (ops.c: load_tols) */
            *(name[2] == 'a' ? &o->atol_file : &o->rtol_file) = val;
        } else if (!strcmp(name, "--atol")) {
            if (parse_num(o, name, val, &o->atol)) return 1;
            if (o->atol < 0) return cli_err(o, "--atol must be >= 0");
            o->atol_file = NULL;
        } else if (!strcmp(name, "--rtol")) {
            if (parse_num(o, name, val, &o->rtol)) return 1;
            o->rtol_file = NULL;
        } else if (!strcmp(name, "--mode")) {
            if (pick(o, name, val, modes, 4, &k)) return 1;
            o->mode = (sg_degen)k;
        } else if (!strcmp(name, "--param")) {
            if (parse_num(o, name, val, &o->param)) return 1;
        } else if (!strcmp(name, "--fn")) {
            if (parse_fn(o, val, &o->fn)) return 1;
            o->has_fn = 1;
        } else if (!strcmp(name, "--p")) {
            if (parse_num(o, name, val, &o->fn.p)) return 1;
            *has_p = 1;
        } else if (!strcmp(name, "--kind")) {
            if (pick(o, name, val, kinds, 5, &k)) return 1;
            o->kind = (sg_reg)k;
            o->has_kind = 1;
        } else if (!strcmp(name, "--threads")) {
            if (parse_num(o, name, val, &x)) return 1;
            if (!(x >= 1 && x <= 4096) || x != (double)(int)x)
                return cli_err(o, "--threads must be a whole number in 1..4096 (got %s)", val);
            o->threads = (int)x;
        } else {
            return cli_err(o, "unknown option '%s' (see specgrad %s --help)", name, o->op);
        }
    }
    return 0;
}

static double mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

volatile sig_atomic_t cli_signal;
static void on_signal(int sig) { cli_signal = sig; }

/* sg_set_progress callback: "specgrad eigh: 42%, 3.1 s, about 4 s left" on stderr, redrawn in place on a
   terminal. The ETA extrapolates from the call's first report, so reading and converting inputs does not
   count; elapsed time is since the start. After SIGINT/SIGTERM it stops the call. */
static int progress(double f, void *user)
{
    cli_opts *o = user;
    cli_prog *p = &o->prog;
    if (f < 1) p->frac = f; /* where a signal stopped it */
    if (cli_signal) return 1;
    if (!p->mode) return 0;
    double t = mono_s();
    if (f >= 1) {
        if (p->shown || p->mode == 2)
            fprintf(stderr, "%sspecgrad %s: done, %.1f s\n", p->tty ? "\r\033[K" : "", o->op, t - p->t0);
        p->shown = 0;
        p->fref = -1;
        p->last = 0;
        return 0;
    }
    if (p->fref < 0 || f < p->last) p->fref = f, p->tref = t;
    p->last = f;
    if ((p->mode == 1 && t - p->t0 < 1) || t - p->tprint < p->every) return 0;
    p->tprint = t;
    char eta[64] = "";
    if (f > p->fref && t > p->tref)
        snprintf(eta, sizeof eta, ", about %.0f s left", (t - p->tref) / (f - p->fref) * (1 - f));
    fprintf(stderr, p->tty ? "\r\033[Kspecgrad %s: %.0f%%, %.1f s%s" : "specgrad %s: %.0f%%, %.1f s%s\n", o->op,
            100 * f, t - p->t0, eta);
    p->shown = 1;
    return 0;
}

static int info(void)
{
    char why[512] = "";
    int n = sg_cuda_devices(why, sizeof why);
    printf("specgrad %d.%d\n", SG_VERSION_MAJOR, SG_VERSION_MINOR);
#ifdef SG_HAVE_CUDA
    printf("CUDA support: built in\n");
#else
    printf("CUDA support: not built (configure with -DSG_CUDA=ON and nvcc on PATH)\n");
#endif
    printf("CUDA devices: %d%s%s\n", n, n ? "" : " — ", n ? "" : why);
    sg_ctx *ctx = NULL;
    sg_status s = sg_create(&ctx, SG_BACKEND_AUTO);
    if (s != SG_OK) {
        fprintf(stderr, "specgrad: info: cannot create a context: %s\n", sg_status_string(s));
        return 1;
    }
    printf("backend auto → %s\n", sg_backend_name(sg_get_backend(ctx)));
    sg_destroy(ctx);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("specgrad %d.%d\n", SG_VERSION_MAJOR, SG_VERSION_MINOR);
        return 0;
    }
    cli_opts o = {.op = argv[1], .backend = SG_BACKEND_AUTO, .dtype = -1, .rtol = -1, .which = SG_PROJ_NULL,
                  .mode = SG_DEGEN_EXACT};
    if (!strcmp(o.op, "info")) return info();
    int isdemo = !strcmp(o.op, "demo");
    if (!isdemo && !cli_op_known(o.op)) {
        fprintf(stderr, "specgrad: unknown command '%s'\n\n", o.op);
        usage(stderr);
        return 2;
    }
    int help = 0, has_p = 0;
    if (parse(&o, argc - 2, argv + 2, &help, &has_p)) return 2;
    if (help) {
        if (isdemo)
            printf("usage: specgrad demo [--backend cpu|cuda|auto]\n\n"
                   "Reproduces seed 000: X (6×12), min-norm lstsq w0, then a 'nullspace' vector z from the economy SVD\n"
                   "(the bug: ||X(w0+10z) − Xw0|| = 10·σmin) and from the full SVD (the fix: machine precision),\n"
                   "plus the sg_nullspace basis check, in float64 and float32. Exits 1 if a number is off.\n");
        else cli_op_help(stdout, o.op);
        return 0;
    }
    if (o.has_fn && o.fn.kind == SG_FN_POW && !has_p) {
        cli_err(&o, "--fn pow needs its exponent: --p P (e.g. --fn pow --p 0.5)");
        return 2;
    }
    sg_status s = sg_create(&o.ctx, o.backend);
    if (s != SG_OK) {
        char why[512] = "";
        sg_cuda_devices(why, sizeof why);
        return cli_err(&o, "cannot create a %s context: %s%s%s", sg_backend_name(o.backend), sg_status_string(s),
                       s == SG_ERR_NODEVICE ? " — " : "", s == SG_ERR_NODEVICE ? why : "");
    }
    if (o.threads) sg_set_threads(o.ctx, o.threads);
    o.prog.tty = isatty(STDERR_FILENO);
    o.prog.mode = o.progress ? 2 : o.prog.tty && !isdemo ? 1 : 0;
    if (!isdemo) { /* the callback also carries Ctrl-C into the library, so it is set without --progress too */
        struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESETHAND | SA_RESTART}, old;
        sigemptyset(&sa.sa_mask);
        const int sigs[2] = {SIGINT, SIGTERM};
        for (int k = 0; k < 2; k++) /* one ignored at startup (a background job's SIGINT) stays ignored */
            if (sigaction(sigs[k], NULL, &old) == 0 && old.sa_handler != SIG_IGN) sigaction(sigs[k], &sa, NULL);
        o.prog.t0 = mono_s();
        o.prog.fref = -1;
        o.prog.every = o.prog.tty ? 0.2 : 2.0;
        sg_set_progress(o.ctx, progress, 0.1, &o); /* reports every 0.1 s: how soon a signal stops a call */
    }
    int rc = isdemo ? cli_demo(&o, argc, argv) : cli_run_op(&o);
    sg_destroy(o.ctx);
    if (cli_signal && rc != 0) rc = 128 + cli_signal;
    return rc;
}

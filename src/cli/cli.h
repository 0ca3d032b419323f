/* specgrad CLI: shared options, .npy ↔ sg_mat conversion, output naming, error reporting. */
#ifndef SG_CLI_H
#define SG_CLI_H
#include "specgrad.h"
#include <signal.h>
#include <stdio.h>

#define CLI_MAXPOS 8

/* --progress (main.c): mode 0 off, 1 auto (stderr is a terminal: shown once a run passes 1 s), 2 forced
   (a line per report, and "done" after each library call) */
typedef struct {
    int mode, tty, shown;
    double t0, tref, fref, last; /* fref, tref: first report of the current call (the ETA's base) */
    double every, tprint;        /* seconds between printed lines; when the last one was printed */
    double frac;                 /* the library's last fraction (even when nothing is printed) */
} cli_prog;

/* SIGINT or SIGTERM received (main.c): the running library call stops at its next progress report
   (SG_ERR_CANCELLED), or the run after the input being read or before its first output (cli_save: once
   writing has begun the set is finished), and the exit status is 128 + the signal. A second one kills as
   usual. */
extern volatile sig_atomic_t cli_signal;

typedef struct {
    const char *op;
    const char *pos[CLI_MAXPOS];
    int npos;
    sg_backend backend;
    int dtype; /* -1: from the inputs (float64 if any input is float64) */
    const char *out;
    double atol, rtol;
    const char *atol_file, *rtol_file; /* --atol / --rtol FILE.npy: one value per matrix of the first input */
    int full, which, nograd, threads, complement, eig, progress;
    sg_degen mode;
    double param;
    int has_fn;
    sg_fn fn;
    int has_kind;
    sg_reg kind;
    sg_dtype dt;  /* resolved dtype of this run */
    sg_ctx *ctx;
    cli_prog prog;
} cli_opts;

/* How an array on disk maps to a column-major batch.
   MAT:  C-order (..., r, c) ↔ r×c (transposed per matrix).
   MATT: C-order (..., c, r) ↔ r×c raw (the memory of a column-major r×c is a C-order c×r: V ↔ Vh).
   VEC:  (..., r) ↔ r×1.   SCALAR: (...) ↔ 1×1. */
typedef enum { K_MAT, K_MATT, K_VEC, K_SCALAR } cli_kind;

typedef struct {
    int nb;              /* batch dims */
    int64_t bshape[8];
    sg_mat m;            /* owns m.data (malloc) */
} cli_mat;

int cli_err(const cli_opts *o, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Report a library failure: "specgrad: <op>: <last error> (matrix i)", or where a signal stopped it; returns 1. */
int cli_lib_err(const cli_opts *o, sg_status s);

/* Read the named inputs (NULL or "-" entries are skipped) and resolve o->dt. Returns 0 or prints and 1. */
int cli_read(cli_opts *o, int n, const char *const *paths, sg_array *arrs);
/* Convert a read array into a batch of the given kind and o->dt; name is used in messages. */
int cli_to_mat(const cli_opts *o, const char *name, sg_array *a, cli_kind k, cli_mat *out);
/* Batch shapes of two inputs must agree. */
void cli_fmt_shape(char *buf, size_t len, int nd, const int64_t *sh);
int cli_same_batch(const cli_opts *o, const char *na, const cli_mat *a, const char *nb, const cli_mat *b);
/* Allocate an output batch r×c with a's batch shape. */
int cli_alloc(const cli_opts *o, const cli_mat *like, int64_t r, int64_t c, cli_mat *out);
void cli_free(cli_mat *m);
/* Write m (kind k) to the output named `name`; nout = number of outputs of the op (for -o rules). */
int cli_save(const cli_opts *o, const char *name, int nout, const cli_mat *m, cli_kind k);
/* Write a per-matrix int64 result (rank, nullity) as a float64 array with the batch shape. */
int cli_save_ints(const cli_opts *o, const char *name, int nout, const cli_mat *like, const int64_t *v);
void cli_print_ints(const char *label, const int64_t *v, int64_t n);

int cli_demo(cli_opts *o, int argc, char **argv);
int cli_run_op(cli_opts *o);     /* dispatch the matrix ops (ops.c) */
int cli_op_known(const char *op);
/* Whether option `name` (e.g. "--full") belongs to command op: its usage line names it, or it is common
   (--backend, --dtype, --threads, -o/--out). The usage line is the one list of each command's options. */
int cli_option_applies(const char *op, const char *name);
void cli_op_help(FILE *f, const char *op);
void cli_ops_list(FILE *f);

#endif

/* Every op of the API once, on inputs each accepts: 16 calls (svd economy and full, the four regularizer
   kinds with a decomposition), float64, a batch of B matrices of TU_OP_N×TU_OP_M-sized operands. For
   tests that treat every op alike (host allocation failures, progress). */
#ifndef TU_OPCASES_H
#define TU_OPCASES_H
#include "specgrad.h"
#include "testutil.h"

enum { TU_OP_N = 6, TU_OP_M = 5, TU_OP_IO = 4 };
typedef struct {
    sg_ctx *ctx;
    int64_t B;
    int nout;
    sg_mat in[TU_OP_IO], out[TU_OP_IO];
    int64_t *iv; /* B entries: rank, nullity (777 where the op writes none) */
} tu_op_args;
typedef struct {
    const char *name;
    sg_status (*call)(tu_op_args *a);
    int in[TU_OP_IO][2]; /* rows, cols of each input ({0,0}: unused) */
    int out[TU_OP_IO][2];
} tu_op;
extern const tu_op tu_ops[];
extern const int tu_nops;

/* Allocates and fills the inputs (in[0] symmetric positive definite, so log-det and exp are in their
   domains; eigenvalue inputs of the backwards distinct), outputs filled with 777, iv with 777. */
void tu_op_make(const tu_op *op, sg_ctx *ctx, int64_t B, tu_rng *r, tu_op_args *a);
/* dst = src's inputs with outputs and iv of its own (777). */
void tu_op_clone(const tu_op *op, const tu_op_args *src, tu_op_args *dst);
void tu_op_fill_outputs(tu_op_args *a, double v);
/* Whether any output (iv included) of matrices [b0, b1) differs from v. */
int tu_op_touched(const tu_op_args *a, int64_t b0, int64_t b1, double v);
void tu_op_free_outputs(tu_op_args *a);
void tu_op_free(tu_op_args *a); /* inputs and outputs */

/* A recorder for sg_set_progress: tu_prog_start(&p), sg_set_progress(ctx, tu_prog_cb, every, &p), call,
   then tu_prog_bad says what broke the contract (NULL when kept): fractions strictly increasing in
   (0, 1), then exactly one 1.0 as the last call iff the call succeeded, all on the starting thread. */
typedef struct {
    int calls, steps, ones, after_one, not_increasing, out_of_range, off_thread;
    int stop_after; /* > 0: ask the call to stop at this report (the callback's return value) */
    double last;
    unsigned long caller; /* pthread_self of the thread that called tu_prog_start */
} tu_prog;
void tu_prog_start(tu_prog *p);
int tu_prog_cb(double fraction, void *user);
const char *tu_prog_bad(const tu_prog *p, int succeeded);
#endif

/* specgrad-bench: shared declarations (see bench/README.md).
   Files: main.c (options, driver loop), ops.c (per-op buffers, inputs, calls, checks, napkin math),
   gpu.c (device info, roofline, events, raw cuSOLVER baselines; stubs without SG_HAVE_CUDA),
   report.c (stdout table, JSON, CSV). */
#ifndef SG_BENCH_H
#define SG_BENCH_H

#include "specgrad.h"
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- ops ------------------------------------------------------------------------------------------ */
typedef enum {
    OP_EIGH = 0, OP_SVD, OP_NULLSPACE, OP_PROJECT, OP_PROJECT_BASIS, OP_LSTSQ, OP_EIGH_BWD, OP_SVD_BWD, OP_MATFUNC_BWD, OP_REG,
    OP_COUNT
} op_id;

#define MAX_TENSORS 8
typedef struct {
    const char *name;
    int64_t rows, cols;
    int is_input;
    int is_int64; /* int64_t per matrix (rank / nullity), rows = cols = 1 */
} tensor_spec;

typedef struct {
    op_id op;
    int ntens;
    tensor_spec t[MAX_TENSORS];
} op_layout;

/* One set of buffers for one op: every tensor of the layout, for `batch` matrices, in one memory space. */
typedef struct {
    int ntens;
    sg_mat m[MAX_TENSORS]; /* int64 tensors: data points to int64_t[batch], other fields unused */
    size_t bytes[MAX_TENSORS];
    int on_device;
} buf_set;

const char *op_name(op_id op);
int op_from_name(const char *s);        /* -1 if unknown */
const char *op_detail(op_id op);        /* shapes / options used, one line */
void op_layout_of(op_id op, int64_t n, op_layout *L);
size_t op_set_bytes(const op_layout *L, sg_dtype dt, int64_t batch);
double op_flops(op_id op, int64_t n);   /* napkin flops per matrix */
double op_bytes(op_id op, int64_t n, sg_dtype dt); /* napkin bytes per matrix (inputs read + outputs written once) */

/* Host buffers: malloc'ed (returns 0 on failure). */
int set_alloc_host(buf_set *s, const op_layout *L, sg_dtype dt, int64_t batch);
void set_free_host(buf_set *s);
/* Fill the inputs with random (not zero) data; outputs poisoned with NaN / -7. Deterministic in seed. */
void set_fill_inputs(buf_set *s, const op_layout *L, uint64_t seed);
void set_poison_outputs(buf_set *s, const op_layout *L);
/* Copy the first nb matrices of every tensor from src to dst (both host). */
void set_copy_prefix(buf_set *dst, const buf_set *src, const op_layout *L, int64_t nb);

/* Run the op through the public API on a set (memory space must match the context's). */
sg_status op_run(sg_ctx *ctx, op_id op, buf_set *s);

/* Checks on host sets of nb matrices. Both return a normalised error (0 = exact) and write a one-line
   description; a negative return means "could not check". */
double op_self_check(op_id op, const buf_set *s, const op_layout *L, int64_t nb, char *msg, size_t len);
double op_compare(op_id op, const buf_set *test, const buf_set *ref, const op_layout *L, int64_t nb, char *msg,
                  size_t len);
double op_tolerance(op_id op, sg_dtype dt, int64_t n, int self); /* pass threshold for the errors above */

/* ---- timing ----------------------------------------------------------------------------------------- */
double now_ms(void);                      /* CLOCK_MONOTONIC */
double median_of(double *v, int n);       /* sorts v */

/* ---- results ---------------------------------------------------------------------------------------- */
typedef enum { IMPL_CPU = 0, IMPL_GPU_DEV, IMPL_GPU_HOST, IMPL_CUSOLVER, IMPL_COUNT } impl_id;
const char *impl_name(impl_id i);

typedef enum { ST_NONE = 0, ST_OK, ST_FAILED, ST_SKIPPED, ST_ERROR } row_status;

typedef struct {
    row_status status;
    double ms_median, ms_min, ms_max;
    int reps;
    double err;          /* validation error (max over checks), < 0 if not checked */
    double tol;
    char reason[256];    /* skip / failure reason or validation summary */
} impl_result;

typedef struct {
    op_id op;
    sg_dtype dtype;
    int64_t n, batch;
    double flops, bytes;  /* per matrix */
    impl_result r[IMPL_COUNT];
} bench_row;

/* ---- device ----------------------------------------------------------------------------------------- */
typedef struct {
    int present;
    char why[256];          /* why absent */
    char name[256];
    int sms, cc_major, cc_minor, driver, runtime;
    size_t mem_total, l2_bytes;
    double copy_gbps;       /* measured D2D copy, bytes read + written */
    double gemm_gflops[2];  /* measured cuBLAS gemm rate, [SG_F32], [SG_F64] */
    char roofline_note[256];
} device_info;

int gpu_probe(device_info *d);            /* fills name etc.; returns 1 if a usable GPU is there */
int gpu_measure_roofline(device_info *d); /* copy bandwidth + gemm rates; 0 on failure (note says why) */

/* Device buffers mirroring a host layout. Return 0 and write why on failure. */
int gpu_set_alloc(buf_set *d, const op_layout *L, sg_dtype dt, int64_t batch, char *why, size_t len);
void gpu_set_free(buf_set *d);
int gpu_set_upload(buf_set *d, const buf_set *h, int64_t nb, char *why, size_t len);   /* first nb matrices */
int gpu_set_download(buf_set *h, const buf_set *d, int64_t nb, char *why, size_t len);
size_t gpu_free_bytes(void);

/* Event timer on a stream + L2 flush. */
typedef struct gpu_timer gpu_timer;
gpu_timer *gpu_timer_create(void *stream, size_t l2_bytes, char *why, size_t len);
void gpu_timer_destroy(gpu_timer *t);
int gpu_flush_l2(gpu_timer *t);
int gpu_timer_start(gpu_timer *t);
int gpu_timer_stop(gpu_timer *t, double *ms); /* synchronises */
void *gpu_stream_create(void);
void gpu_stream_destroy(void *s);
int gpu_sync(char *why, size_t len);

/* Raw cuSOLVER vendor baseline for an op (eigh: syevjBatched n<=32 else XsyevBatched; svd: gesvdjBatched
   n<=32). Returns 0 with a reason when there is none for this op/size. */
int cusolver_has_baseline(op_id op, int64_t n, char *why, size_t len);
typedef struct cusolver_bench cusolver_bench;
/* Prepares handles, workspace and a working copy for `batch` matrices (device set d holds pristine inputs). */
cusolver_bench *cusolver_bench_create(op_id op, sg_dtype dt, int64_t n, int64_t batch, void *stream, char *why,
                                      size_t len);
void cusolver_bench_destroy(cusolver_bench *c);
/* Restores the working copy from d's inputs (not timed). */
int cusolver_bench_prepare(cusolver_bench *c, const buf_set *d, char *why, size_t len);
/* The timed part: the cuSOLVER call(s) on the working copy. Checks statuses (not info: see _finish). */
int cusolver_bench_call(cusolver_bench *c, char *why, size_t len);
/* Checks info, writes the outputs of the first nb matrices into the host set h (layout of the op). */
int cusolver_bench_finish(cusolver_bench *c, buf_set *h, int64_t nb, char *why, size_t len);

/* ---- reporting -------------------------------------------------------------------------------------- */
typedef struct {
    const char *date, *command, *host_cpu, *loadavg; /* loadavg: /proc/loadavg at start (CPU noise) */
    int host_threads;
    int quick;
    double budget_ms;
    int check_finite; /* the GPU contexts scan device inputs for NaN/Inf (off: --no-check-finite) */
} run_info;

void report_header(FILE *f, const run_info *ri, const device_info *d);
void report_table_head(FILE *f);
void report_table_row(FILE *f, const bench_row *row, const device_info *d);
void report_summary(FILE *f, const run_info *ri, const bench_row *rows, int nrows, const device_info *d);
int report_json(const char *path, const run_info *ri, const device_info *d, const bench_row *rows, int nrows);
int report_csv(const char *path, const run_info *ri, const device_info *d, const bench_row *rows, int nrows);
/* Floor time (ms) for a row on the device: max(bytes/bw, flops/gemm); < 0 if unknown. */
double row_floor_ms(const bench_row *row, const device_info *d);

#endif

/* PLACEHOLDER — to be replaced by the real CPU decompositions. */
#include "cpu.h"
#define NI(ctx) sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "%s: not implemented yet", __func__)
sg_status sg_cpu_eigh(sg_ctx *c, const sg_mat *A, sg_mat *W, sg_mat *V) { (void)A; (void)W; (void)V; return NI(c); }
sg_status sg_cpu_svd(sg_ctx *c, const sg_mat *A, int f, sg_mat *S, sg_mat *U, sg_mat *V) { (void)A; (void)f; (void)S; (void)U; (void)V; return NI(c); }
sg_status sg_cpu_rank(sg_ctx *c, const sg_mat *A, double a, double r, int64_t *k) { (void)A; (void)a; (void)r; (void)k; return NI(c); }
sg_status sg_cpu_nullspace(sg_ctx *c, const sg_mat *A, double a, double r, sg_mat *N, int64_t *k) { (void)A; (void)a; (void)r; (void)N; (void)k; return NI(c); }
sg_status sg_cpu_project(sg_ctx *c, const sg_mat *A, const sg_mat *X, sg_proj w, double a, double r, sg_mat *Y) { (void)A; (void)X; (void)w; (void)a; (void)r; (void)Y; return NI(c); }
sg_status sg_cpu_lstsq(sg_ctx *c, const sg_mat *A, const sg_mat *B, double a, double r, sg_mat *X, int64_t *k) { (void)A; (void)B; (void)a; (void)r; (void)X; (void)k; return NI(c); }

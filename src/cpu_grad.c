/* PLACEHOLDER — to be replaced by the real CPU gradients. */
#include "cpu.h"
#define NI(ctx) sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "%s: not implemented yet", __func__)
sg_status sg_cpu_eigh_backward(sg_ctx *c, const sg_mat *W, const sg_mat *V, const sg_mat *gW, const sg_mat *gV, sg_degen m, double p, sg_mat *gA) { (void)W; (void)V; (void)gW; (void)gV; (void)m; (void)p; (void)gA; return NI(c); }
sg_status sg_cpu_svd_backward(sg_ctx *c, const sg_mat *U, const sg_mat *S, const sg_mat *V, const sg_mat *gU, const sg_mat *gS, const sg_mat *gV, sg_degen m, double p, sg_mat *gA) { (void)U; (void)S; (void)V; (void)gU; (void)gS; (void)gV; (void)m; (void)p; (void)gA; return NI(c); }
sg_status sg_cpu_matfunc(sg_ctx *c, const sg_mat *A, const sg_fn *f, sg_mat *F) { (void)A; (void)f; (void)F; return NI(c); }
sg_status sg_cpu_matfunc_backward(sg_ctx *c, const sg_mat *W, const sg_mat *V, const sg_fn *f, const sg_mat *gF, sg_mat *gA) { (void)W; (void)V; (void)f; (void)gF; (void)gA; return NI(c); }
sg_status sg_cpu_regularizer(sg_ctx *c, sg_reg k, const sg_mat *A, const sg_fn *f, sg_mat *l, sg_mat *gA) { (void)k; (void)A; (void)f; (void)l; (void)gA; return NI(c); }

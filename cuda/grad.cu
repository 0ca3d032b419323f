/* PLACEHOLDER — to be replaced by the fused backward kernels. */
#include "cuda_internal.h"
#define NI(ctx) sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "%s: not implemented yet on CUDA", __func__)
sg_status sg_cuda_eigh_backward(sg_ctx *c, const sg_mat *, const sg_mat *, const sg_mat *, const sg_mat *, sg_degen, double, sg_mat *) { return NI(c); }
sg_status sg_cuda_svd_backward(sg_ctx *c, const sg_mat *, const sg_mat *, const sg_mat *, const sg_mat *, const sg_mat *, const sg_mat *, sg_degen, double, sg_mat *) { return NI(c); }
sg_status sg_cuda_matfunc(sg_ctx *c, const sg_mat *, const sg_fn *, sg_mat *) { return NI(c); }
sg_status sg_cuda_matfunc_backward(sg_ctx *c, const sg_mat *, const sg_mat *, const sg_fn *, const sg_mat *, sg_mat *) { return NI(c); }
sg_status sg_cuda_regularizer(sg_ctx *c, sg_reg, const sg_mat *, const sg_fn *, sg_mat *, sg_mat *) { return NI(c); }

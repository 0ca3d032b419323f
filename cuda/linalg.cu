/* PLACEHOLDER — to be replaced by the cuSOLVER forward path. */
#include "cuda_internal.h"
#define NI(ctx) sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "%s: not implemented yet on CUDA", __func__)
sg_status sg_cuda_eigh(sg_ctx *c, const sg_mat *, sg_mat *, sg_mat *) { return NI(c); }
sg_status sg_cuda_svd(sg_ctx *c, const sg_mat *, int, sg_mat *, sg_mat *, sg_mat *) { return NI(c); }
sg_status sg_cuda_rank(sg_ctx *c, const sg_mat *, double, double, int64_t *) { return NI(c); }
sg_status sg_cuda_nullspace(sg_ctx *c, const sg_mat *, double, double, sg_mat *, int64_t *) { return NI(c); }
sg_status sg_cuda_project(sg_ctx *c, const sg_mat *, const sg_mat *, sg_proj, double, double, sg_mat *) { return NI(c); }
sg_status sg_cuda_lstsq(sg_ctx *c, const sg_mat *, const sg_mat *, double, double, sg_mat *, int64_t *) { return NI(c); }
sg_status sg_cuda_check_finite(sg_ctx *c, const sg_mat *, const char *) { return NI(c); }

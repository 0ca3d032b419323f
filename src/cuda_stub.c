/* Built only without CUDA support: the CUDA backend reports why it is missing. */
#include "internal.h"
#include <stdio.h>

int sg_cuda_devices(char *why, size_t len)
{
    if (why && len) snprintf(why, len, "specgrad was built without CUDA support");
    return 0;
}

static sg_status no_cuda(sg_ctx *ctx)
{
    return sg_fail(ctx, SG_ERR_NODEVICE, -1, "CUDA backend: specgrad was built without CUDA support");
}

const sg_backend_ops sg_cuda_ops = {.name = "cuda", .init = no_cuda};

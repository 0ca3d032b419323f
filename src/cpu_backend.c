#include "cpu.h"

const sg_backend_ops sg_cpu_ops = {
    .name = "cpu",
    .eigh = sg_cpu_eigh,
    .svd = sg_cpu_svd,
    .rank = sg_cpu_rank,
    .nullspace = sg_cpu_nullspace,
    .project = sg_cpu_project,
    .project_basis = sg_cpu_project_basis,
    .lstsq = sg_cpu_lstsq,
    .eigh_backward = sg_cpu_eigh_backward,
    .svd_backward = sg_cpu_svd_backward,
    .matfunc = sg_cpu_matfunc,
    .matfunc_backward = sg_cpu_matfunc_backward,
    .regularizer = sg_cpu_regularizer,
};

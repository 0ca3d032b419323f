/* A program built against an installed specgrad (scripts/test-install): through find_package(specgrad) or
   pkg-config, it sees the one public header and the library, nothing of the build tree. */
#include <math.h>
#include <stdio.h>
#include <specgrad.h>

#if SG_VERSION_MAJOR != EXPECT_MAJOR || SG_VERSION_MINOR != EXPECT_MINOR
#error "the installed header's version differs from the package's (CMake config / specgrad.pc)"
#endif
#ifdef SG_HAVE_CUDA
#error "SG_HAVE_CUDA is the library's own build flag; it must not reach users"
#endif

int main(void)
{
    sg_ctx *ctx = NULL;
    if (sg_create(&ctx, SG_BACKEND_CPU) != SG_OK) {
        fprintf(stderr, "consumer: sg_create failed\n");
        return 1;
    }
    double a[4] = {2, 1, 1, 2}, w[2], v[4]; /* eigenvalues 1 and 3 */
    sg_mat A = sg_mat_dense(a, SG_F64, 1, 2, 2), W = sg_mat_dense(w, SG_F64, 1, 2, 1),
           V = sg_mat_dense(v, SG_F64, 1, 2, 2);
    sg_status s = sg_eigh(ctx, &A, &W, &V);
    if (s != SG_OK) {
        fprintf(stderr, "consumer: sg_eigh: %s\n", sg_last_error(ctx));
        sg_destroy(ctx);
        return 1;
    }
    /* a bad call reports through the installed library's error path too */
    int bad = sg_eigh(ctx, NULL, &W, &V) == SG_ERR_ARG;
    sg_destroy(ctx);
    if (fabs(w[0] - 1) > 1e-12 || fabs(w[1] - 3) > 1e-12 || !bad || sg_version() != SG_VERSION) {
        fprintf(stderr, "consumer: eigenvalues %.17g %.17g (want 1, 3), null A rejected: %d, sg_version() %d (header %d)\n",
                w[0], w[1], bad, sg_version(), SG_VERSION);
        return 1;
    }
    printf("consumer: specgrad %d.%d ok\n", SG_VERSION_MAJOR, SG_VERSION_MINOR);
    return 0;
}

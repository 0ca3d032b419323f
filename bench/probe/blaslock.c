/* sg-blaslock: what one small OpenBLAS call costs while other threads make the same call. OpenBLAS's ?symv
   and ?gemm take a process-wide lock around their buffer allocation on every call (OpenBLAS issue #5589),
   which is why the CPU backend does small products and small eigh reductions without them
   (src/cpu_gemm_impl.h, src/cpu_linalg_impl.h). Prints ns per call per thread for dsymv (n = 7, what ?sytd2
   calls at n = 8), dgemm 8×8×8, and dger (no lock, the control), at 1, 2, 4, ... threads up to the cores.
     usage: sg-blaslock [max_threads]      (seconds; ~30 s at 16 threads if each locked call takes ~5 µs) */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

void dsymv_(const char *, const int *, const double *, const double *, const int *, const double *, const int *,
            const double *, double *, const int *);
void dgemm_(const char *, const char *, const int *, const int *, const int *, const double *, const double *,
            const int *, const double *, const int *, const double *, double *, const int *);
void dger_(const int *, const int *, const double *, const double *, const int *, const double *, const int *,
           double *, const int *);
void openblas_set_num_threads(int);

int main(int argc, char **argv)
{
    int maxt = argc > 1 ? atoi(argv[1]) : omp_get_num_procs();
    if (maxt < 1) maxt = 1;
    openblas_set_num_threads(1); /* as the CPU backend does inside its batch threads */
    const char *names[3] = {"dsymv n=7", "dgemm 8x8x8", "dger 7x7 (no lock)"};
    const long reps = 1000000;
    printf("ns per call per thread (OpenBLAS single-threaded, %ld calls per thread)\nthreads", reps);
    for (int f = 0; f < 3; f++) printf(" | %18s", names[f]);
    printf("\n");
    for (int nt = 1;; nt = nt * 2 > maxt && nt < maxt ? maxt : nt * 2) {
        printf("%7d", nt);
        for (int f = 0; f < 3; f++) {
            double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nt)
            {
                double A[64], B[64], C[64], x[8], y[8];
                for (int i = 0; i < 64; i++) A[i] = 1e-3 * i, B[i] = 1, C[i] = 0;
                for (int i = 0; i < 8; i++) x[i] = 1e-9, y[i] = 0;
                const int n7 = 7, n8 = 8, one = 1;
                const double al = 1e-12, be = 0;
                for (long r = 0; r < reps; r++) {
                    if (f == 0) dsymv_("L", &n7, &al, A, &n8, x, &one, &be, y, &one);
                    else if (f == 1) dgemm_("N", "N", &n8, &n8, &n8, &al, A, &n8, B, &n8, &be, C, &n8);
                    else dger_(&n7, &n7, &al, x, &one, y, &one, A, &n8);
                }
                if (y[0] + C[0] + A[0] == 12345.678) printf("!"); /* keep the results live */
            }
            printf(" | %18.1f", (omp_get_wtime() - t0) * 1e9 / reps);
            fflush(stdout); /* a run cut by a deadline keeps what it measured */
        }
        printf("\n");
        if (nt >= maxt) break;
    }
    return 0;
}

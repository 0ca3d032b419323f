/* Finiteness of a rows×cols column-major block with leading dimension ld, one dtype: included by
   cpu_linalg_impl.h and cpu_grad_impl.h (each included once per T; FN names the instance). */
static int FN(all_finite)(const T *x, int64_t rows, int64_t cols, int64_t ld)
{
    for (int64_t j = 0; j < cols; j++)
        for (int64_t i = 0; i < rows; i++)
            if (!isfinite(x[i + j * ld])) return 0;
    return 1;
}
/* The lower triangle of an n×n matrix (ld n) is finite: what ?syevd reads with uplo 'L'. */
static inline int FN(lower_finite)(const T *x, int64_t n) /* inline: cpu_grad_impl.h does not use it */
{
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = j; i < n; i++)
            if (!isfinite(x[i + j * n])) return 0;
    return 1;
}

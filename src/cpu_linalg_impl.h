/* CPU decompositions, one dtype: included twice by cpu_linalg.c with
   T (float/double), FN(x) (x##_s / x##_d), LP(x) (LAPACKE_s##x / LAPACKE_d##x), CB(x) (cblas_s##x / ...),
   SG_T (SG_F32 / SG_F64), PFX ("s" / "d"). Every per-matrix buffer is a dense column-major copy in the
   calling thread's slice of the workspace; inputs are never written. */

static void FN(copy_in)(const sg_mat *M, int64_t b, T *dst) /* dst: rows×cols, ld = rows */
{
    const T *src = (const T *)M->data + b * sg_stride_of(M);
    for (int64_t j = 0; j < M->cols; j++) memcpy(dst + j * M->rows, src + j * M->ld, sizeof(T) * (size_t)M->rows);
}

static void FN(copy_out)(const T *src, int64_t lds, sg_mat *M, int64_t b) /* src: rows×cols, ld = lds */
{
    T *dst = (T *)M->data + b * sg_stride_of(M);
    for (int64_t j = 0; j < M->cols; j++) memcpy(dst + j * M->ld, src + j * lds, sizeof(T) * (size_t)M->rows);
}

static void FN(vec_out)(const T *src, sg_mat *M, int64_t b)
{
    memcpy((T *)M->data + b * sg_stride_of(M), src, sizeof(T) * (size_t)M->rows);
}

/* Non-finite outputs from finite inputs are checked after every LAPACK call that reports success. */
#include "cpu_finite_impl.h"
#include "cpu_gemm_impl.h"

/* Whether matrix b of A (finite) can have an eigen/singular value beyond T's largest: |λ|, σ ≤ ‖A‖₂ ≤ ‖A‖_F,
   formed as max|a|·√Σ(a/max|a|)² so it does not overflow itself; above half the largest value (rounding
   near it) a non-finite result is an overflow of the dtype (SG_ERR_DOMAIN), below it a LAPACK/BLAS fault.
   lower: the symmetric matrix of the lower triangle (eigh). CUDA: k_range_unscale's SG_RANGE_OVER. */
static int FN(may_overflow)(const sg_mat *A, int64_t b, int lower)
{
    const T *a = (const T *)A->data + b * sg_stride_of(A);
    double mx = 0, s = 0;
    for (int64_t j = 0; j < A->cols; j++)
        for (int64_t i = lower ? j : 0; i < A->rows; i++) mx = fmax(mx, fabs((double)a[i + j * A->ld]));
    if (mx == 0) return 0;
    for (int64_t j = 0; j < A->cols; j++)
        for (int64_t i = lower ? j : 0; i < A->rows; i++) {
            const double t = fabs((double)a[i + j * A->ld]) / mx;
            s += (lower && i != j ? 2 : 1) * t * t;
        }
    const double big = sizeof(T) == sizeof(float) ? (double)FLT_MAX : DBL_MAX;
    return sqrt(s) > big / 2 / mx;
}

/* A LAPACK call that "succeeded" on finite matrix b gave NaN/Inf: an overflow of the dtype when its norm allows
   one (SG_ERR_DOMAIN, op: what, values: which), else, when the inputs were scanned (check), a LAPACK/BLAS
   fault (SG_ERR_LAPACK, naming solver; seen: float32 ssyevd with Debian's OpenBLAS 0.3.21 on an Intel Xeon,
   2026-11-30). Returns 1 when it recorded a failure. */
static int FN(bad_result)(const sg_mat *A, int64_t b, int lower, int check, const char *op, const char *values,
                          const char *solver, sg_fail_rec *f)
{
    if (FN(may_overflow)(A, b, lower)) {
        sg_rec_fail(f, b, SG_ERR_DOMAIN, "%s: the %s of matrix %lld overflow " SG_TNAME
                    " (its norm is beyond the dtype's largest value)", op, values, (long long)b);
        return 1;
    }
    if (!check) return 0;
    sg_rec_fail(f, b, SG_ERR_LAPACK, "%s returned NaN/Inf for finite matrix %lld: " SG_BLAS_FAULT, solver, (long long)b);
    return 1;
}

/* ---- eigh: ?syevd, lower triangle; n <= SG_EIGH_SMALL: ?syevd's own steps, without ?symv -----------
   OpenBLAS's ?symv (and small ?gemm) take a process-wide lock around their buffer allocation on every call
   (OpenBLAS issue #5589, open), and ?sytrd is ?sytd2 for n <= 32: one ?symv per column. Measured with
   OpenBLAS 0.3.21 at n = 8 (bench/probe/blaslock.c): 56 ns per ?symv on one thread, 240–420 ns each with two
   threads calling at once, while ?ger (no lock) stays at 34 ns; the batch threads serialise on that lock
   (the likely cause of the H200 host's slow CPU eigh at 16 threads). For n <= 25, ?syevd is ?sytrd (= ?sytd2) + ?steqr (its ?stedc hands n <= SMLSIZ = 25 to ?steqr)
   + ?ormtr; below, ?sytd2 has the mat-vec and the level-1/2 updates written out (same reflectors, stored as
   ?sytrd stores them) and the rest is LAPACK's: ?larfg, ?steqr / ?sterf and the unblocked ?ormtr (?larf:
   ?gemv, ?ger) take no lock. Above 25 ?syevd divides and conquers (faster there, measured at n = 32). */
#define SG_EIGH_SMALL 25
static void FN(sytd2_lower)(lapack_int n, T *a, T *d, T *e, T *tau)
{
    for (lapack_int i = 0; i + 1 < n; i++) {
        const lapack_int m = n - 1 - i; /* reflector length: rows i+1 .. n-1 */
        T *v = a + (i + 1) + (size_t)i * n, *A22 = a + (i + 1) + (size_t)(i + 1) * n, *x = tau + i, taui;
        LP(larfg_work)(m, v, m > 1 ? v + 1 : v, 1, &taui);
        e[i] = v[0];
        if (taui != 0) {
            v[0] = 1;
            for (lapack_int r = 0; r < m; r++) x[r] = 0;
            for (lapack_int c = 0; c < m; c++) { /* x = taui · A22 v, A22 symmetric from its lower triangle */
                const T vc = v[c];
                T acc = A22[c + (size_t)c * n] * vc;
                for (lapack_int r = c + 1; r < m; r++) {
                    const T arc = A22[r + (size_t)c * n];
                    x[r] += arc * vc;
                    acc += arc * v[r];
                }
                x[c] += acc;
            }
            T dot = 0;
            for (lapack_int r = 0; r < m; r++) dot += (x[r] *= taui) * v[r];
            const T alpha = (T)-0.5 * taui * dot;
            for (lapack_int r = 0; r < m; r++) x[r] += alpha * v[r];
            for (lapack_int c = 0; c < m; c++) /* A22 −= v xᵀ + x vᵀ, lower triangle */
                for (lapack_int r = c; r < m; r++) A22[r + (size_t)c * n] -= v[r] * x[c] + x[r] * v[c];
            v[0] = e[i];
        }
        d[i] = a[i + (size_t)i * n];
        tau[i] = taui;
    }
    d[n - 1] = a[(n - 1) + (size_t)(n - 1) * n];
}

/* One small eigh (n <= SG_EIGH_SMALL) in a: eigenvalues ascending into w, eigenvectors into z (n×n) when z.
   work: 3n + max(1, 2n−2) (e, tau, ?ormtr's n, ?steqr's). Returns LAPACK's info. Like ?syevd, a matrix whose
   largest entry is outside [√(safmin/eps), √(eps/safmin)] is scaled into it first (else ?larfg overflows
   near 1e308 and loses accuracy near the underflow threshold), and the eigenvalues are scaled back. */
static lapack_int FN(eigh_small)(lapack_int n, T *a, T *w, T *z, T *work)
{
    T *e = work, *tau = e + n, *ow = tau + n, *sw = ow + n;
    const T rmin = (T)sqrt((double)LP(lamch)('S') / (double)LP(lamch)('P')), rmax = (T)1 / rmin;
    T anrm = 0, sigma = 1;
    for (lapack_int j = 0; j < n; j++)
        for (lapack_int i = j; i < n; i++) {
            const T v = (T)fabs((double)a[i + (size_t)j * n]);
            if (v > anrm) anrm = v;
        }
    if (anrm > 0 && anrm < rmin) sigma = rmin / anrm;
    else if (anrm > rmax) sigma = rmax / anrm;
    if (sigma != 1)
        for (lapack_int j = 0; j < n; j++)
            for (lapack_int i = j; i < n; i++) a[i + (size_t)j * n] *= sigma;
    FN(sytd2_lower)(n, a, w, e, tau);
    lapack_int info = z ? LP(steqr_work)(LAPACK_COL_MAJOR, 'I', n, w, e, z, n, sw) : LP(sterf_work)(n, w, e);
    /* lwork = n: ?ormqr's blocked path needs more, so it runs unblocked (?orm2r: ?larf, no lock) */
    if (info == 0 && z) info = LP(ormtr_work)(LAPACK_COL_MAJOR, 'L', 'L', 'N', n, n, a, n, tau, z, n, ow, n);
    if (info == 0 && sigma != 1)
        for (lapack_int i = 0; i < n; i++) w[i] /= sigma;
    return info;
}

static sg_status FN(eigh)(sg_ctx *ctx, const sg_mat *A, sg_mat *W, sg_mat *V)
{
    if (!sg_int_fits(ctx, A->rows, "n")) return SG_ERR_UNSUPPORTED;
    lapack_int n = (lapack_int)A->rows, liwork = 1, info;
    char jobz = V ? 'V' : 'N';
    const int small = n <= SG_EIGH_SMALL;
    const char *solver = !small ? PFX "syevd" : V ? PFX "sytd2/" PFX "steqr" : PFX "sytd2/" PFX "sterf";
    T q = 0, dummy = 0;
    if (small) {
        q = (T)(n * n + 3 * n + (2 * n > 3 ? 2 * n - 2 : 1)); /* z, then eigh_small's work */
    } else {
        info = LP(syevd_work)(LAPACK_COL_MAJOR, jobz, 'L', n, &dummy, n, &dummy, &q, -1, &liwork, -1);
        if (info != 0) return sg_fail(ctx, SG_ERR_LAPACK, -1, "LAPACKE_" PFX "syevd workspace query: info %d", (int)info);
    }
    lapack_int lwork = sg_lwork((double)q);
    size_t per = sg_al(sizeof(T) * ((size_t)n * (size_t)n + (size_t)n + (size_t)lwork)) +
                 sg_al(sizeof(lapack_int) * (size_t)liwork);
    sg_par p;
    sg_status st;
    if ((st = sg_par_begin(ctx, A->batch, per, n <= 32, &p)) != SG_OK) return st;
    sg_fail_rec f = {-1, SG_OK, ""};
    sg_ticker tk_ = SG_TICK_INIT(ctx, A->batch);
#pragma omp parallel num_threads(p.nt)
    {
        char *ws = p.ws + (size_t)omp_get_thread_num() * p.per;
        T *a = (T *)ws, *w = a + (size_t)n * n, *work = w + n;
        lapack_int *iwork = (lapack_int *)(ws + sg_al(sizeof(T) * ((size_t)n * n + n + (size_t)lwork)));
#pragma omp for schedule(dynamic, p.chunk)
        for (int64_t b = 0; b < A->batch; b++) {
            if (sg_tick(&tk_)) continue;
            FN(copy_in)(A, b, a);
            if (!ctx->check_finite && !FN(lower_finite)(a, n)) { /* as in svd_one: not attempted (what LAPACK reads) */
                sg_rec_fail(&f, b, SG_ERR_NOCONV, "%s not attempted: matrix %lld has NaN/Inf entries (input check off)",
                            solver, (long long)b);
                continue;
            }
            T *vec = a; /* where the eigenvectors end up */
            lapack_int inf;
            if (small) {
                vec = work;
                inf = FN(eigh_small)(n, a, w, V ? work : NULL, work + (size_t)n * n);
            } else {
                inf = LP(syevd_work)(LAPACK_COL_MAJOR, jobz, 'L', n, a, n, w, work, lwork, iwork, liwork);
            }
            if (inf < 0) { sg_rec_fail(&f, b, SG_ERR_LAPACK, "%s: LAPACKE argument %d illegal (matrix %lld)", solver, (int)-inf, (long long)b); continue; }
            if (inf > 0) { sg_rec_fail(&f, b, SG_ERR_NOCONV, "%s did not converge (info %d, matrix %lld)", solver, (int)inf, (long long)b); continue; }
            if (!(FN(all_finite)(w, n, 1, n) && (!V || FN(all_finite)(vec, n, n, n))) && /* A is finite here */
                FN(bad_result)(A, b, 1, ctx->check_finite, "eigh", "eigenvalues", solver, &f))
                continue;
            FN(vec_out)(w, W, b);
            if (V) FN(copy_out)(vec, n, V, b);
        }
    }
    sg_par_end(&p);
    return sg_fail_finish(ctx, &f);
}

/* ---- one SVD with the gesdd → gesvd fallback ---------------------------------------------------
   jobz 'A': U m×m, VT n×n; 'S': U m×k, VT k×n; 'N': values only. U has ld m, VT has ld vtr. */
typedef struct {
    lapack_int m, n, k, ucols, vtr, lwork;
    char jobz;
    int check_out; /* inputs were scanned: a non-finite output is a LAPACK/BLAS fault */
} FN(svdplan);

static sg_status FN(svd_plan)(sg_ctx *ctx, int64_t m, int64_t n, char jobz, FN(svdplan) *pl)
{
    if (!sg_int_fits(ctx, m, "rows") || !sg_int_fits(ctx, n, "cols")) return SG_ERR_UNSUPPORTED;
    pl->m = (lapack_int)m;
    pl->n = (lapack_int)n;
    pl->k = pl->m < pl->n ? pl->m : pl->n;
    pl->jobz = jobz;
    pl->check_out = ctx->check_finite;
    pl->ucols = jobz == 'A' ? pl->m : jobz == 'S' ? pl->k : 1;
    pl->vtr = jobz == 'A' ? pl->n : jobz == 'S' ? pl->k : 1;
    T q1, q2, d = 0;
    lapack_int iw = 0;
    lapack_int i1 = LP(gesdd_work)(LAPACK_COL_MAJOR, jobz, pl->m, pl->n, &d, pl->m, &d, &d, pl->m, &d, pl->vtr,
                                   &q1, -1, &iw);
    lapack_int i2 = LP(gesvd_work)(LAPACK_COL_MAJOR, jobz, jobz, pl->m, pl->n, &d, pl->m, &d, &d, pl->m, &d,
                                   pl->vtr, &q2, -1);
    if (i1 != 0 || i2 != 0)
        return sg_fail(ctx, SG_ERR_LAPACK, -1, "LAPACKE_" PFX "gesdd/gesvd workspace query: info %d/%d", (int)i1,
                       (int)i2);
    double q = (double)q1 > (double)q2 ? (double)q1 : (double)q2;
    pl->lwork = sg_lwork(q);
    return SG_OK;
}

/* Workspace layout of one SVD: a (m·n), s (k), u (m·ucols), vt (vtr·n), work (lwork); iwork (8k). */
static size_t FN(svd_bytes)(const FN(svdplan) *pl)
{
    size_t m = (size_t)pl->m, n = (size_t)pl->n, k = (size_t)pl->k;
    return sg_al(sizeof(T) * (m * n + k + m * (size_t)pl->ucols + (size_t)pl->vtr * n + (size_t)pl->lwork)) +
           sg_al(sizeof(lapack_int) * 8 * k);
}

typedef struct {
    T *a, *s, *u, *vt, *work;
    lapack_int *iwork;
} FN(svdws);

static FN(svdws) FN(svd_ws)(const FN(svdplan) *pl, char *ws)
{
    size_t m = (size_t)pl->m, n = (size_t)pl->n, k = (size_t)pl->k;
    FN(svdws) w;
    w.a = (T *)ws;
    w.s = w.a + m * n;
    w.u = w.s + k;
    w.vt = w.u + m * (size_t)pl->ucols;
    w.work = w.vt + (size_t)pl->vtr * n;
    w.iwork = (lapack_int *)(ws + sg_al(sizeof(T) * (m * n + k + m * (size_t)pl->ucols + (size_t)pl->vtr * n +
                                                     (size_t)pl->lwork)));
    return w;
}

/* NaN/Inf in a "successful" SVD of finite matrix b (svd_one checked A): bad_result. Nonzero if recorded. */
static int FN(svd_out_bad)(const FN(svdplan) *pl, const sg_mat *A, int64_t b, const FN(svdws) *w, sg_fail_rec *f)
{
    int ok = FN(all_finite)(w->s, pl->k, 1, pl->k);
    if (ok && pl->jobz != 'N')
        ok = FN(all_finite)(w->u, pl->m, pl->ucols, pl->m) && FN(all_finite)(w->vt, pl->vtr, pl->n, pl->vtr);
    return !ok && FN(bad_result)(A, b, 0, pl->check_out, "svd", "singular values", PFX "gesdd/gesvd", f);
}

/* SVD of matrix b of A into w; on failure records it in f and returns nonzero. */
static int FN(svd_one)(const FN(svdplan) *pl, const sg_mat *A, int64_t b, FN(svdws) *w, sg_fail_rec *f)
{
    FN(copy_in)(A, b, w->a);
    /* Input check off: a NaN/Inf can get here, and ?bdsqr (inside ?gesdd and ?gesvd) may loop forever on
       it (tests/fuzz/fuzz_api.c: sgesdd never returned on a 3×3 with one Inf). Reported, not attempted. */
    if (!pl->check_out && !FN(all_finite)(w->a, pl->m, pl->n, pl->m)) {
        sg_rec_fail(f, b, SG_ERR_NOCONV, PFX "gesdd not attempted: matrix %lld has NaN/Inf entries (input check off)",
                    (long long)b);
        return 1;
    }
    lapack_int info = LP(gesdd_work)(LAPACK_COL_MAJOR, pl->jobz, pl->m, pl->n, w->a, pl->m, w->s, w->u, pl->m,
                                     w->vt, pl->vtr, w->work, pl->lwork, w->iwork);
    if (info < 0) {
        /* LAPACK >= 3.10 rejects a NaN matrix as an illegal A (LAPACKE argument 5) */
        sg_rec_fail(f, b, SG_ERR_LAPACK, PFX "gesdd: LAPACKE argument %d illegal%s (matrix %lld)", (int)-info,
                    info == -5 ? " (NaN in A?)" : "", (long long)b);
        return 1;
    }
    if (info == 0) return FN(svd_out_bad)(pl, A, b, w, f);
    /* gesdd's divide and conquer failed: the slower QR-iteration gesvd often still converges. */
    FN(copy_in)(A, b, w->a);
    lapack_int i2 = LP(gesvd_work)(LAPACK_COL_MAJOR, pl->jobz, pl->jobz, pl->m, pl->n, w->a, pl->m, w->s, w->u,
                                   pl->m, w->vt, pl->vtr, w->work, pl->lwork);
    if (i2 < 0) {
        sg_rec_fail(f, b, SG_ERR_LAPACK, PFX "gesvd (fallback after " PFX "gesdd info %d): LAPACKE argument %d illegal (matrix %lld)",
                    (int)info, (int)-i2, (long long)b);
        return 1;
    }
    if (i2 > 0) {
        sg_rec_fail(f, b, SG_ERR_NOCONV, PFX "gesdd (info %d) and " PFX "gesvd (info %d) did not converge (matrix %lld)",
                    (int)info, (int)i2, (long long)b);
        return 1;
    }
    return FN(svd_out_bad)(pl, A, b, w, f);
}

static lapack_int FN(count)(const T *s, lapack_int k, const sg_tols *tols, int64_t b, int64_t m, int64_t n)
{
    double tol = sg_tol(tols, b, (double)s[0], m, n, SG_T);
    lapack_int r = 0;
    while (r < k && sg_sv_counts((double)s[r], tol)) r++; /* s is descending */
    return r;
}

/* ---- svd ------------------------------------------------------------------------------------- */
static sg_status FN(svd)(sg_ctx *ctx, const sg_mat *A, int full, sg_mat *S, sg_mat *U, sg_mat *V)
{
    FN(svdplan) pl;
    sg_status st = FN(svd_plan)(ctx, A->rows, A->cols, U ? (full ? 'A' : 'S') : 'N', &pl);
    if (st != SG_OK) return st;
    sg_par p;
    if ((st = sg_par_begin(ctx, A->batch, FN(svd_bytes)(&pl), (int64_t)pl.m * pl.n <= 1024, &p)) != SG_OK) return st;
    sg_fail_rec f = {-1, SG_OK, ""};
    sg_ticker tk_ = SG_TICK_INIT(ctx, A->batch);
#pragma omp parallel num_threads(p.nt)
    {
        FN(svdws) w = FN(svd_ws)(&pl, p.ws + (size_t)omp_get_thread_num() * p.per);
#pragma omp for schedule(dynamic, p.chunk)
        for (int64_t b = 0; b < A->batch; b++) {
            if (sg_tick(&tk_)) continue;
            if (FN(svd_one)(&pl, A, b, &w, &f)) continue;
            FN(vec_out)(w.s, S, b);
            if (!U) continue;
            FN(copy_out)(w.u, pl.m, U, b);
            /* V = VTᵀ (cuSOLVER convention) */
            T *v = (T *)V->data + b * sg_stride_of(V);
            for (int64_t j = 0; j < V->cols; j++)
                for (int64_t i = 0; i < V->rows; i++) v[i + j * V->ld] = w.vt[j + i * (int64_t)pl.vtr];
        }
    }
    sg_par_end(&p);
    return sg_fail_finish(ctx, &f);
}

/* ---- rank ------------------------------------------------------------------------------------ */
static sg_status FN(rank)(sg_ctx *ctx, const sg_mat *A, const sg_tols *tol, int64_t *rank)
{
    FN(svdplan) pl;
    sg_status st = FN(svd_plan)(ctx, A->rows, A->cols, 'N', &pl);
    if (st != SG_OK) return st;
    sg_par p;
    if ((st = sg_par_begin(ctx, A->batch, FN(svd_bytes)(&pl), (int64_t)pl.m * pl.n <= 1024, &p)) != SG_OK) return st;
    sg_fail_rec f = {-1, SG_OK, ""};
    sg_ticker tk_ = SG_TICK_INIT(ctx, A->batch);
#pragma omp parallel num_threads(p.nt)
    {
        FN(svdws) w = FN(svd_ws)(&pl, p.ws + (size_t)omp_get_thread_num() * p.per);
#pragma omp for schedule(dynamic, p.chunk)
        for (int64_t b = 0; b < A->batch; b++) {
            if (sg_tick(&tk_)) continue;
            if (FN(svd_one)(&pl, A, b, &w, &f)) continue;
            rank[b] = FN(count)(w.s, pl.k, tol, b, A->rows, A->cols);
        }
    }
    sg_par_end(&p);
    return sg_fail_finish(ctx, &f);
}

/* ---- nullspace: N[:, 0:n−r] = V[:, r:n], rest 0 ------------------------------------------------
   Full V is needed only when m < n (k = m); otherwise the economy SVD already has all n columns. */
static sg_status FN(nullspace)(sg_ctx *ctx, const sg_mat *A, const sg_tols *tol, sg_mat *N, int64_t *nullity)
{
    FN(svdplan) pl;
    sg_status st = FN(svd_plan)(ctx, A->rows, A->cols, A->rows < A->cols ? 'A' : 'S', &pl);
    if (st != SG_OK) return st;
    sg_par p;
    if ((st = sg_par_begin(ctx, A->batch, FN(svd_bytes)(&pl), (int64_t)pl.m * pl.n <= 1024, &p)) != SG_OK) return st;
    sg_fail_rec f = {-1, SG_OK, ""};
    sg_ticker tk_ = SG_TICK_INIT(ctx, A->batch);
#pragma omp parallel num_threads(p.nt)
    {
        FN(svdws) w = FN(svd_ws)(&pl, p.ws + (size_t)omp_get_thread_num() * p.per);
#pragma omp for schedule(dynamic, p.chunk)
        for (int64_t b = 0; b < A->batch; b++) {
            if (sg_tick(&tk_)) continue;
            if (FN(svd_one)(&pl, A, b, &w, &f)) continue;
            int64_t n = pl.n, r = FN(count)(w.s, pl.k, tol, b, A->rows, A->cols);
            T *out = (T *)N->data + b * sg_stride_of(N);
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < n; i++)
                    out[i + j * N->ld] = j < n - r ? w.vt[(r + j) + i * (int64_t)pl.vtr] : (T)0;
            if (nullity) nullity[b] = n - r;
        }
    }
    sg_par_end(&p);
    return sg_fail_finish(ctx, &f);
}

/* Inputs known finite (check on): a non-finite Y is an overflow (‖x‖ beyond the largest value; P is
   orthogonal, so X near it), reported with Y written as computed. CUDA: the kernels' SG_PROJ_OVER. */
static void FN(proj_over)(sg_ctx *ctx, const char *op, const T *y, int n, int k, int64_t b, sg_fail_rec *f)
{
    if (ctx->check_finite && !FN(all_finite)(y, n, k, n))
        sg_rec_fail(f, b, SG_ERR_DOMAIN, "%s: Y of matrix %lld overflows " SG_TNAME, op, (long long)b);
}

/* ---- project: Y = V_r (V_rᵀ X) or X − V_r (V_rᵀ X) -------------------------------------------- */
static sg_status FN(project)(sg_ctx *ctx, const sg_mat *A, const sg_mat *X, sg_proj which,
                             const sg_tols *tol, sg_mat *Y)
{
    FN(svdplan) pl;
    sg_status st = FN(svd_plan)(ctx, A->rows, A->cols, 'S', &pl);
    if (st != SG_OK) return st;
    if (!sg_int_fits(ctx, X->cols, "X cols") || !sg_int_fits(ctx, X->ld, "X ld")) return SG_ERR_UNSUPPORTED;
    size_t kx = (size_t)X->cols, n = (size_t)pl.n, k = (size_t)pl.k;
    size_t svdb = FN(svd_bytes)(&pl), per = svdb + sg_al(sizeof(T) * (k * kx + n * kx));
    sg_par p;
    if ((st = sg_par_begin(ctx, A->batch, per, (int64_t)pl.m * pl.n <= 1024, &p)) != SG_OK) return st;
    sg_fail_rec f = {-1, SG_OK, ""};
    sg_ticker tk_ = SG_TICK_INIT(ctx, A->batch);
#pragma omp parallel num_threads(p.nt)
    {
        char *ws = p.ws + (size_t)omp_get_thread_num() * p.per;
        FN(svdws) w = FN(svd_ws)(&pl, ws);
        T *t = (T *)(ws + svdb), *y = t + k * kx;
        int ldx = (int)X->ld, nn = (int)n, kk = (int)kx, ldvt = (int)pl.vtr;
#pragma omp for schedule(dynamic, p.chunk)
        for (int64_t b = 0; b < A->batch; b++) {
            if (sg_tick(&tk_)) continue;
            if (FN(svd_one)(&pl, A, b, &w, &f)) continue;
            int r = (int)FN(count)(w.s, pl.k, tol, b, A->rows, A->cols);
            const T *x = (const T *)X->data + b * sg_stride_of(X);
            /* y is a workspace copy, so Y may alias X */
            if (which == SG_PROJ_NULL) FN(copy_in)(X, b, y);
            else memset(y, 0, sizeof(T) * n * kx);
            if (r > 0) {
                /* t = V_rᵀ x (r×kx) with V_rᵀ = first r rows of VT; then y ±= V_r t */
                FN(gemm)(0, 0, r, kk, nn, (T)1, w.vt, ldvt, x, ldx, (T)0, t, r);
                FN(gemm)(1, 0, nn, kk, r, which == SG_PROJ_NULL ? (T)-1 : (T)1,
                         w.vt, ldvt, t, r, (T)1, y, nn);
            }
            FN(copy_out)(y, nn, Y, b);
            FN(proj_over)(ctx, "project", y, nn, kk, b, &f);
        }
    }
    sg_par_end(&p);
    return sg_fail_finish(ctx, &f);
}

/* ---- project_basis: Y = Q (Qᵀ X) or X − Q (Qᵀ X) for a given basis ------------------------------- */
static sg_status FN(project_basis)(sg_ctx *ctx, const sg_mat *Q, const sg_mat *X, int complement, sg_mat *Y)
{
    if (!sg_int_fits(ctx, Q->rows, "Q rows") || !sg_int_fits(ctx, Q->ld, "Q ld") || !sg_int_fits(ctx, X->cols, "X cols") ||
        !sg_int_fits(ctx, X->ld, "X ld"))
        return SG_ERR_UNSUPPORTED;
    size_t n = (size_t)Q->rows, q = (size_t)Q->cols, kx = (size_t)X->cols;
    sg_par p;
    sg_status st = sg_par_begin(ctx, Q->batch, sizeof(T) * (q * kx + n * kx), n * q <= 1024, &p);
    if (st != SG_OK) return st;
    sg_fail_rec f = {-1, SG_OK, ""};
    sg_ticker tk_ = SG_TICK_INIT(ctx, Q->batch);
#pragma omp parallel num_threads(p.nt)
    {
        T *t = (T *)(p.ws + (size_t)omp_get_thread_num() * p.per), *y = t + q * kx;
        int nn = (int)n, qq = (int)q, kk = (int)kx, ldq = (int)Q->ld, ldx = (int)X->ld;
#pragma omp for schedule(dynamic, p.chunk)
        for (int64_t b = 0; b < Q->batch; b++) {
            if (sg_tick(&tk_)) continue;
            const T *qb = (const T *)Q->data + b * sg_stride_of(Q), *x = (const T *)X->data + b * sg_stride_of(X);
            /* t = Qᵀx (q×k), then y = ±Q t (+ x); y is a workspace copy, so Y may alias X */
            FN(gemm)(1, 0, qq, kk, nn, (T)1, qb, ldq, x, ldx, (T)0, t, qq);
            if (complement) FN(copy_in)(X, b, y);
            FN(gemm)(0, 0, nn, kk, qq, complement ? (T)-1 : (T)1, qb, ldq, t, qq,
                     complement ? (T)1 : (T)0, y, nn);
            FN(copy_out)(y, nn, Y, b);
            FN(proj_over)(ctx, "project_basis", y, nn, kk, b, &f);
        }
    }
    sg_par_end(&p);
    return sg_fail_finish(ctx, &f);
}

/* ---- lstsq: X = V_r diag(1/σ_r) U_rᵀ B (minimum norm, pinv semantics) ------------------------- */
static sg_status FN(lstsq)(sg_ctx *ctx, const sg_mat *A, const sg_mat *B, const sg_tols *tol, sg_mat *X,
                           int64_t *rank)
{
    FN(svdplan) pl;
    sg_status st = FN(svd_plan)(ctx, A->rows, A->cols, 'S', &pl);
    if (st != SG_OK) return st;
    if (!sg_int_fits(ctx, B->cols, "B cols") || !sg_int_fits(ctx, B->ld, "B ld")) return SG_ERR_UNSUPPORTED;
    size_t kb = (size_t)B->cols, n = (size_t)pl.n, k = (size_t)pl.k;
    size_t svdb = FN(svd_bytes)(&pl), per = svdb + sg_al(sizeof(T) * (k * kb + n * kb));
    sg_par p;
    if ((st = sg_par_begin(ctx, A->batch, per, (int64_t)pl.m * pl.n <= 1024, &p)) != SG_OK) return st;
    sg_fail_rec f = {-1, SG_OK, ""};
    sg_ticker tk_ = SG_TICK_INIT(ctx, A->batch);
#pragma omp parallel num_threads(p.nt)
    {
        char *ws = p.ws + (size_t)omp_get_thread_num() * p.per;
        FN(svdws) w = FN(svd_ws)(&pl, ws);
        T *t = (T *)(ws + svdb), *x = t + k * kb;
        int ldb = (int)B->ld, m = (int)pl.m, nn = (int)n, kk = (int)kb, ldvt = (int)pl.vtr;
#pragma omp for schedule(dynamic, p.chunk)
        for (int64_t b = 0; b < A->batch; b++) {
            if (sg_tick(&tk_)) continue;
            if (FN(svd_one)(&pl, A, b, &w, &f)) continue;
            int r = (int)FN(count)(w.s, pl.k, tol, b, A->rows, A->cols);
            const T *bb = (const T *)B->data + b * sg_stride_of(B);
            memset(x, 0, sizeof(T) * n * kb);
            if (r > 0) {
                FN(gemm)(1, 0, r, kk, m, (T)1, w.u, m, bb, ldb, (T)0, t, r);
                for (size_t j = 0; j < kb; j++)
                    for (int i = 0; i < r; i++) t[(size_t)i + j * (size_t)r] /= w.s[i];
                FN(gemm)(1, 0, nn, kk, r, (T)1, w.vt, ldvt, t, r, (T)0, x, nn);
            }
            FN(copy_out)(x, nn, X, b);
            if (rank) rank[b] = r;
            /* inputs known finite (check on): a non-finite X is an overflow, a large B over a small σ kept by
               the tolerance (CUDA: k_lstsq's SG_LSTSQ_OVER); check off: B's NaN/Inf propagate, not reported */
            if (ctx->check_finite && !FN(all_finite)(x, nn, kk, nn))
                sg_rec_fail(&f, b, SG_ERR_DOMAIN, "lstsq: the solution of matrix %lld overflows " SG_TNAME, (long long)b);
        }
    }
    sg_par_end(&p);
    return sg_fail_finish(ctx, &f);
}

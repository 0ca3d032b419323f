/* specgrad-bench: per-op buffers, random inputs, API calls, napkin math and independent checks.
   Checks run in double on the host (cblas / LAPACKE), on a small sub-batch. */
#define _POSIX_C_SOURCE 200809L
#include "bench.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- names, layouts, napkin math ------------------------------------------------------------------ */
static const char *const OP_NAMES[OP_COUNT] = {"eigh",          "svd",          "nullspace",
                                                "project",       "project_basis", "lstsq",        "eigh_backward",
                                                "svd_backward",  "matfunc_backward", "regularizer"};

const char *op_name(op_id op) { return op >= 0 && op < OP_COUNT ? OP_NAMES[op] : "?"; }

int op_from_name(const char *s)
{
    for (int i = 0; i < OP_COUNT; i++)
        if (!strcmp(s, OP_NAMES[i])) return i;
    return -1;
}

const char *op_detail(op_id op)
{
    switch (op) {
    case OP_EIGH: return "A n×n symmetric → W, V";
    case OP_SVD: return "A n×n → S, U, V (economy)";
    case OP_NULLSPACE: return "A (n/2)×n → N n×n, nullity (default tol)";
    case OP_PROJECT: return "A (n/2)×n, X n×n → Y = (I − V_r V_rᵀ) X (SG_PROJ_NULL)";
    case OP_PROJECT_BASIS: return "Q n×(n/2) orthonormal, X n×n → Y = X − Q Qᵀ X (complement; no SVD)";
    case OP_LSTSQ: return "A n×n, B n×1 → X = A⁺B, rank";
    case OP_EIGH_BWD: return "W, V, gW, gV → gA (SG_DEGEN_EXACT)";
    case OP_SVD_BWD: return "U, S, V, gU, gS, gV (n×n economy) → gA (SG_DEGEN_EXACT)";
    case OP_MATFUNC_BWD: return "f = sqrt: W>0, V, gF → gA";
    case OP_REG: return "nuclear norm Σσ of A n×n → loss, gA = U Vᵀ";
    default: return "";
    }
}

static void T(op_layout *L, const char *name, int64_t r, int64_t c, int in)
{
    tensor_spec *t = &L->t[L->ntens++];
    t->name = name; t->rows = r; t->cols = c; t->is_input = in; t->is_int64 = 0;
}
static void TI(op_layout *L, const char *name)
{
    T(L, name, 1, 1, 0);
    L->t[L->ntens - 1].is_int64 = 1;
}

static int64_t half(int64_t n) { return n / 2 > 0 ? n / 2 : 1; }

void op_layout_of(op_id op, int64_t n, op_layout *L)
{
    memset(L, 0, sizeof *L);
    L->op = op;
    int64_t m = half(n);
    switch (op) {
    case OP_EIGH: T(L, "A", n, n, 1); T(L, "W", n, 1, 0); T(L, "V", n, n, 0); break;
    case OP_SVD: T(L, "A", n, n, 1); T(L, "S", n, 1, 0); T(L, "U", n, n, 0); T(L, "V", n, n, 0); break;
    case OP_NULLSPACE: T(L, "A", m, n, 1); T(L, "N", n, n, 0); TI(L, "nullity"); break;
    case OP_PROJECT: T(L, "A", m, n, 1); T(L, "X", n, n, 1); T(L, "Y", n, n, 0); break;
    case OP_PROJECT_BASIS: T(L, "Q", n, m, 1); T(L, "X", n, n, 1); T(L, "Y", n, n, 0); break;
    case OP_LSTSQ: T(L, "A", n, n, 1); T(L, "B", n, 1, 1); T(L, "X", n, 1, 0); TI(L, "rank"); break;
    case OP_EIGH_BWD:
        T(L, "W", n, 1, 1); T(L, "V", n, n, 1); T(L, "gW", n, 1, 1); T(L, "gV", n, n, 1); T(L, "gA", n, n, 0);
        break;
    case OP_SVD_BWD:
        T(L, "U", n, n, 1); T(L, "S", n, 1, 1); T(L, "V", n, n, 1);
        T(L, "gU", n, n, 1); T(L, "gS", n, 1, 1); T(L, "gV", n, n, 1); T(L, "gA", n, n, 0);
        break;
    case OP_MATFUNC_BWD: T(L, "W", n, 1, 1); T(L, "V", n, n, 1); T(L, "gF", n, n, 1); T(L, "gA", n, n, 0); break;
    case OP_REG: T(L, "A", n, n, 1); T(L, "loss", 1, 1, 0); T(L, "gA", n, n, 0); break;
    default: break;
    }
}

size_t op_set_bytes(const op_layout *L, sg_dtype dt, int64_t batch)
{
    size_t b = 0, es = dt == SG_F32 ? 4 : 8;
    for (int i = 0; i < L->ntens; i++)
        b += (size_t)batch * (L->t[i].is_int64 ? 8 : (size_t)(L->t[i].rows * L->t[i].cols) * es);
    return b;
}

/* Golub & Van Loan operation counts for the dense algorithms (m ≥ n: "U,Σ,V" 4m²n + 8mn² + 9n³). */
static double svd_full_flops(double m, double n)
{
    if (m < n) { double t = m; m = n; n = t; }
    return 4 * m * m * n + 8 * m * n * n + 9 * n * n * n;
}

double op_flops(op_id op, int64_t n_)
{
    double n = (double)n_, m = (double)half(n_);
    switch (op) {
    case OP_EIGH: return 9 * n * n * n;                                /* symmetric QR with vectors */
    case OP_SVD: return svd_full_flops(n, n);                          /* 21 n³ */
    case OP_NULLSPACE: return svd_full_flops(m, n);                    /* full V of a wide matrix */
    case OP_PROJECT: return svd_full_flops(m, n) + 4 * n * m * n;      /* + V_rᵀX and V_r(V_rᵀX) */
    case OP_PROJECT_BASIS: return 4 * n * m * n;                       /* QᵀX and Q(QᵀX) */
    case OP_LSTSQ: return svd_full_flops(n, n) + 4 * n * n;            /* SVD + two mat-vecs */
    case OP_EIGH_BWD: return 6 * n * n * n;                            /* VᵀgV, V·M, (VM)·Vᵀ */
    case OP_SVD_BWD: return 8 * n * n * n;                             /* UᵀgU, VᵀgV, U·M, (UM)·Vᵀ */
    case OP_MATFUNC_BWD: return 8 * n * n * n;                         /* Vᵀ G V, V (L∘·) Vᵀ */
    case OP_REG: return svd_full_flops(n, n) + 2 * n * n * n;          /* SVD + U Vᵀ */
    default: return 0;
    }
}

double op_bytes(op_id op, int64_t n_, sg_dtype dt)
{
    op_layout L;
    op_layout_of(op, n_, &L);
    return (double)op_set_bytes(&L, dt, 1);
}

/* ---- host buffers and inputs ---------------------------------------------------------------------- */
int set_alloc_host(buf_set *s, const op_layout *L, sg_dtype dt, int64_t batch)
{
    memset(s, 0, sizeof *s);
    s->ntens = L->ntens;
    size_t es = dt == SG_F32 ? 4 : 8;
    for (int i = 0; i < L->ntens; i++) {
        const tensor_spec *t = &L->t[i];
        s->bytes[i] = (size_t)batch * (t->is_int64 ? 8 : (size_t)(t->rows * t->cols) * es);
        s->m[i] = sg_mat_dense(NULL, dt, batch, t->rows, t->cols);
        s->m[i].data = malloc(s->bytes[i] ? s->bytes[i] : 1);
        if (!s->m[i].data) { set_free_host(s); return 0; }
    }
    return 1;
}

void set_free_host(buf_set *s)
{
    for (int i = 0; i < s->ntens; i++) { free(s->m[i].data); s->m[i].data = NULL; }
    s->ntens = 0;
}

/* splitmix64 + Box–Muller: fast, deterministic per (seed, matrix, tensor). */
typedef struct { uint64_t s; } rng;
static uint64_t rnext(rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static double runif(rng *r) { return ((rnext(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
static double rnorm(rng *r)
{
    double u = runif(r), v = runif(r);
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

static void put(const sg_mat *m, int64_t b, int64_t i, int64_t j, double v)
{
    int64_t k = b * m->rows * m->cols + i + j * m->rows;
    if (m->dtype == SG_F32) ((float *)m->data)[k] = (float)v;
    else ((double *)m->data)[k] = v;
}
static double get(const sg_mat *m, int64_t b, int64_t i, int64_t j)
{
    int64_t k = b * m->rows * m->cols + i + j * m->rows;
    return m->dtype == SG_F32 ? (double)((const float *)m->data)[k] : ((const double *)m->data)[k];
}

/* Dense orthogonal Q = (I − 2uuᵀ)(I − 2wwᵀ), O(n²): cheap enough for 1e5 matrices (its first m->cols columns). */
static void fill_orthogonal(const sg_mat *m, int64_t b, rng *r, double *tmp /* 2n */)
{
    int64_t n = m->rows;
    double *u = tmp, *w = tmp + n, nu = 0, nw = 0, uw = 0;
    for (int64_t i = 0; i < n; i++) { u[i] = rnorm(r); w[i] = rnorm(r); nu += u[i] * u[i]; nw += w[i] * w[i]; }
    nu = sqrt(nu); nw = sqrt(nw);
    for (int64_t i = 0; i < n; i++) { u[i] /= nu; w[i] /= nw; uw += u[i] * w[i]; }
    for (int64_t j = 0; j < m->cols; j++) /* cols < n: the first columns (an orthonormal basis) */
        for (int64_t i = 0; i < n; i++)
            put(m, b, i, j, (i == j) - 2 * u[i] * u[j] - 2 * w[i] * w[j] + 4 * uw * u[i] * w[j]);
}

static void fill_tensor(const sg_mat *m, const char *name, op_id op, uint64_t seed, int ti)
{
    int64_t n = m->rows;
    int orth = ((!strcmp(name, "V") || !strcmp(name, "U")) && m->cols == m->rows) || !strcmp(name, "Q");
    int spectrum = (!strcmp(name, "W") || !strcmp(name, "S")) && m->cols == 1;
    int sym = op == OP_EIGH && !strcmp(name, "A");
#pragma omp parallel
    {
        double *tmp = malloc(sizeof(double) * 2 * (size_t)(n > 1 ? n : 1));
#pragma omp for schedule(static)
        for (int64_t b = 0; b < m->batch; b++) {
            rng r = {seed * 0x100000001b3ULL + (uint64_t)b * 0x9e3779b97f4a7c15ULL + (uint64_t)ti * 7919};
            if (orth && tmp) {
                fill_orthogonal(m, b, &r, tmp);
            } else if (spectrum) {
                /* Distinct values, gaps ≥ 0.5/n: the backward ops stay well conditioned. */
                for (int64_t i = 0; i < n; i++) {
                    double x = (i + 0.25 + 0.5 * runif(&r)) / (double)n;
                    double v = op == OP_EIGH_BWD ? x - 0.5               /* ascending, signed */
                             : op == OP_MATFUNC_BWD ? x + 0.1            /* ascending, positive (sqrt) */
                                                    : (1.0 - x) + 0.1;   /* S: descending, positive */
                    put(m, b, i, 0, v);
                }
            } else if (sym) {
                for (int64_t j = 0; j < n; j++)
                    for (int64_t i = j; i < n; i++) {
                        double v = rnorm(&r);
                        put(m, b, i, j, v);
                        put(m, b, j, i, v);
                    }
            } else {
                for (int64_t j = 0; j < m->cols; j++)
                    for (int64_t i = 0; i < m->rows; i++) put(m, b, i, j, rnorm(&r));
            }
        }
        free(tmp);
    }
}

void set_fill_inputs(buf_set *s, const op_layout *L, uint64_t seed)
{
    for (int i = 0; i < L->ntens; i++)
        if (L->t[i].is_input) fill_tensor(&s->m[i], L->t[i].name, L->op, seed, i);
    set_poison_outputs(s, L);
}

void set_poison_outputs(buf_set *s, const op_layout *L)
{
    for (int i = 0; i < L->ntens; i++) {
        if (L->t[i].is_input) continue;
        sg_mat *m = &s->m[i];
        if (L->t[i].is_int64) {
            for (int64_t b = 0; b < m->batch; b++) ((int64_t *)m->data)[b] = -7;
        } else {
            int64_t cnt = m->batch * m->rows * m->cols;
            if (m->dtype == SG_F32)
                for (int64_t k = 0; k < cnt; k++) ((float *)m->data)[k] = NAN;
            else
                for (int64_t k = 0; k < cnt; k++) ((double *)m->data)[k] = NAN;
        }
    }
}

void set_copy_prefix(buf_set *dst, const buf_set *src, const op_layout *L, int64_t nb)
{
    for (int i = 0; i < L->ntens; i++) {
        size_t per = src->bytes[i] / (size_t)src->m[i].batch;
        memcpy(dst->m[i].data, src->m[i].data, per * (size_t)nb);
    }
}

/* ---- running ----------------------------------------------------------------------------------------- */
sg_status op_run(sg_ctx *ctx, op_id op, buf_set *s)
{
    sg_mat *m = s->m;
    switch (op) {
    case OP_EIGH: return sg_eigh(ctx, &m[0], &m[1], &m[2]);
    case OP_SVD: return sg_svd(ctx, &m[0], 0, &m[1], &m[2], &m[3]);
    case OP_NULLSPACE: return sg_nullspace(ctx, &m[0], 0.0, -1.0, &m[1], (int64_t *)m[2].data);
    case OP_PROJECT: return sg_project(ctx, &m[0], &m[1], SG_PROJ_NULL, 0.0, -1.0, &m[2]);
    case OP_PROJECT_BASIS: return sg_project_basis(ctx, &m[0], &m[1], 1, &m[2]);
    case OP_LSTSQ: return sg_lstsq(ctx, &m[0], &m[1], 0.0, -1.0, &m[2], (int64_t *)m[3].data);
    case OP_EIGH_BWD: return sg_eigh_backward(ctx, &m[0], &m[1], &m[2], &m[3], SG_DEGEN_EXACT, 0.0, &m[4]);
    case OP_SVD_BWD:
        return sg_svd_backward(ctx, &m[0], &m[1], &m[2], &m[3], &m[4], &m[5], SG_DEGEN_EXACT, 0.0, &m[6]);
    case OP_MATFUNC_BWD: {
        sg_fn fn = {SG_FN_SQRT, 0, NULL, NULL, NULL};
        return sg_matfunc_backward(ctx, &m[0], &m[1], &fn, &m[2], &m[3]);
    }
    case OP_REG: return sg_regularizer(ctx, SG_REG_NUCLEAR, &m[0], NULL, &m[1], &m[2]);
    default: return SG_ERR_ARG;
    }
}

/* ---- checks ------------------------------------------------------------------------------------------ */
/* Matrix b of m as a dense double array (rows×cols). */
static double *dmat(const sg_mat *m, int64_t b)
{
    double *d = malloc(sizeof(double) * (size_t)(m->rows * m->cols));
    if (!d) return NULL;
    for (int64_t j = 0; j < m->cols; j++)
        for (int64_t i = 0; i < m->rows; i++) d[i + j * m->rows] = get(m, b, i, j);
    return d;
}
static double fro(const double *x, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i] * x[i];
    return sqrt(s);
}
static double fro_diff(const double *x, const double *y, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (x[i] - y[i]) * (x[i] - y[i]);
    return sqrt(s);
}
static double tiny_guard(double x) { return x > 1e-300 ? x : 1e-300; }
/* C (m×n) = op(A)·op(B), column-major dense. */
static void mm(int ta, int tb, int64_t m, int64_t n, int64_t k, const double *A, const double *B, double *C)
{
    cblas_dgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k,
                1.0, A, ta ? (int)k : (int)m, B, tb ? (int)n : (int)k, 0.0, C, (int)m);
}
/* ‖QᵀQ − I‖_F / √k for the first k columns of Q (n×k). */
static double orth_err(const double *Q, int64_t n, int64_t k)
{
    if (k <= 0) return 0;
    double *G = malloc(sizeof(double) * (size_t)(k * k));
    if (!G) return INFINITY;
    mm(1, 0, k, k, n, Q, Q, G);
    for (int64_t i = 0; i < k; i++) G[i + i * k] -= 1;
    double e = fro(G, k * k) / sqrt((double)k);
    free(G);
    return e;
}
static int any_nan(const double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (x[i] != x[i]) return 1;
    return 0;
}
#define MAXE(e, v) do { double v_ = (v); if (!(v_ <= (e))) (e) = v_; } while (0) /* NaN propagates */

/* Double-precision SVD reference of an m×n matrix: S (min), U m×m, Vt n×n (NULL to skip). */
static int ref_svd(const double *A, int64_t m, int64_t n, double *S, double *U, double *Vt)
{
    int64_t k = m < n ? m : n;
    double *a = malloc(sizeof(double) * (size_t)(m * n)), *sup = malloc(sizeof(double) * (size_t)(k > 1 ? k : 1));
    if (!a || !sup) { free(a); free(sup); return -1; }
    memcpy(a, A, sizeof(double) * (size_t)(m * n));
    lapack_int info = LAPACKE_dgesvd(LAPACK_COL_MAJOR, U ? 'A' : 'N', Vt ? 'A' : 'N', (lapack_int)m, (lapack_int)n, a,
                                     (lapack_int)m, S, U, (lapack_int)m, Vt, (lapack_int)n, sup);
    free(a); free(sup);
    return (int)info;
}

/* eigh backward in double, straight from the header formula. */
static void ref_eigh_bwd(int64_t n, const double *W, const double *V, const double *gW, const double *gV, double *gA)
{
    double *M = malloc(sizeof(double) * (size_t)(n * n)), *T = malloc(sizeof(double) * (size_t)(n * n));
    mm(1, 0, n, n, n, V, gV, M);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < n; i++)
            T[i + j * n] = i == j ? gW[i] : 0.5 * (M[i + j * n] - M[j + i * n]) / (W[j] - W[i]);
    mm(0, 0, n, n, n, V, T, M);
    mm(0, 1, n, n, n, M, V, gA);
    free(M); free(T);
}

/* matfunc backward for f = sqrt in double: L_ij = 1/(√λi + √λj) (the divided difference, stable form). */
static void ref_sqrt_bwd(int64_t n, const double *W, const double *V, const double *gF, double *gA)
{
    double *G = malloc(sizeof(double) * (size_t)(n * n)), *T = malloc(sizeof(double) * (size_t)(n * n));
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < n; i++) G[i + j * n] = 0.5 * (gF[i + j * n] + gF[j + i * n]);
    mm(1, 0, n, n, n, V, G, T);
    mm(0, 0, n, n, n, T, V, G); /* G = Vᵀ sym(gF) V */
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < n; i++) G[i + j * n] /= sqrt(W[i]) + sqrt(W[j]);
    mm(0, 0, n, n, n, V, G, T);
    mm(0, 1, n, n, n, T, V, gA);
    free(G); free(T);
}

double op_tolerance(op_id op, sg_dtype dt, int64_t n, int self)
{
    double eps = dt == SG_F32 ? 1.1920928955078125e-07 : 2.220446049250313e-16;
    (void)self;
    switch (op) {
    case OP_EIGH: case OP_SVD: case OP_NULLSPACE: case OP_LSTSQ: return 100.0 * (double)n * eps;
    case OP_REG: return dt == SG_F32 ? 1e-2 : 1e-7; /* gA = U Vᵀ: conditioned by the smallest σ's */
    default: return dt == SG_F32 ? 2e-3 : 1e-8;
    }
}

#define ALLOC_OR_FAIL(...)                                                                                   \
    do {                                                                                                     \
        void *ps_[] = {__VA_ARGS__};                                                                         \
        for (size_t i_ = 0; i_ < sizeof ps_ / sizeof ps_[0]; i_++)                                           \
            if (!ps_[i_]) { snprintf(msg, len, "host allocation failed in check"); err = -1; goto done; }    \
    } while (0)

double op_self_check(op_id op, const buf_set *s, const op_layout *L, int64_t nb, char *msg, size_t len)
{
    const sg_mat *m = s->m;
    int64_t n = 0; /* the op's n: the largest dimension of any tensor */
    for (int i = 0; i < L->ntens; i++) {
        if (L->t[i].rows > n) n = L->t[i].rows;
        if (L->t[i].cols > n) n = L->t[i].cols;
    }
    double err = 0;
    snprintf(msg, len, "-");
    for (int64_t b = 0; b < nb && err >= 0; b++) {
        double *A = NULL, *X1 = NULL, *X2 = NULL, *X3 = NULL, *X4 = NULL, *R = NULL, *R2 = NULL;
        switch (op) {
        case OP_EIGH: { /* ‖AV − VΛ‖/‖A‖, ‖VᵀV − I‖, ascending */
            A = dmat(&m[0], b); X1 = dmat(&m[1], b); X2 = dmat(&m[2], b); R = malloc(sizeof(double) * n * n);
            ALLOC_OR_FAIL(A, X1, X2, R);
            mm(0, 0, n, n, n, A, X2, R);
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < n; i++) R[i + j * n] -= X2[i + j * n] * X1[j];
            MAXE(err, fro(R, n * n) / tiny_guard(fro(A, n * n)));
            MAXE(err, orth_err(X2, n, n));
            for (int64_t i = 1; i < n; i++)
                if (X1[i] < X1[i - 1]) MAXE(err, 1.0);
            snprintf(msg, len, "residual ‖AV−VΛ‖/‖A‖ and ‖VᵀV−I‖");
            break;
        }
        case OP_SVD: { /* ‖AV − US‖/‖A‖, orthonormality, descending ≥ 0 */
            A = dmat(&m[0], b); X1 = dmat(&m[1], b); X2 = dmat(&m[2], b); X3 = dmat(&m[3], b);
            R = malloc(sizeof(double) * n * n);
            ALLOC_OR_FAIL(A, X1, X2, X3, R);
            mm(0, 0, n, n, n, A, X3, R);
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < n; i++) R[i + j * n] -= X2[i + j * n] * X1[j];
            MAXE(err, fro(R, n * n) / tiny_guard(fro(A, n * n)));
            MAXE(err, orth_err(X2, n, n));
            MAXE(err, orth_err(X3, n, n));
            for (int64_t i = 0; i < n; i++)
                if (X1[i] < 0 || (i && X1[i] > X1[i - 1])) MAXE(err, 1.0);
            snprintf(msg, len, "residual ‖AV−US‖/‖A‖ and orthonormality");
            break;
        }
        case OP_NULLSPACE: { /* nullity = n − m for a random full-row-rank A; ‖A N‖/‖A‖; orthonormal; zero rest */
            int64_t mr = L->t[0].rows;
            int64_t k = ((const int64_t *)m[2].data)[b];
            A = dmat(&m[0], b); X1 = dmat(&m[1], b); R = malloc(sizeof(double) * (size_t)(mr * n));
            ALLOC_OR_FAIL(A, X1, R);
            if (k != n - mr || any_nan(X1, n * n)) { MAXE(err, 1.0); snprintf(msg, len, "nullity %lld, expected %lld",
                                                                                (long long)k, (long long)(n - mr)); break; }
            if (k > 0) {
                mm(0, 0, mr, k, n, A, X1, R);
                MAXE(err, fro(R, mr * k) / tiny_guard(fro(A, mr * n)));
                MAXE(err, orth_err(X1, n, k));
            }
            MAXE(err, fro(X1 + k * n, (n - k) * n));
            snprintf(msg, len, "nullity, ‖AN‖/‖A‖, ‖NᵀN−I‖");
            break;
        }
        case OP_PROJECT: { /* Y vs X − V_r V_rᵀ X from a double SVD of A */
            int64_t mr = L->t[0].rows, r = 0;
            A = dmat(&m[0], b); X1 = dmat(&m[1], b); X2 = dmat(&m[2], b);
            X3 = malloc(sizeof(double) * (size_t)(n * n)); X4 = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
            R = malloc(sizeof(double) * (size_t)(n * n)); R2 = malloc(sizeof(double) * (size_t)(n * n));
            ALLOC_OR_FAIL(A, X1, X2, X3, X4, R, R2);
            if (ref_svd(A, mr, n, X4, NULL, X3) != 0) { err = -1; snprintf(msg, len, "reference dgesvd failed"); break; }
            double tol = (double)n * (m[0].dtype == SG_F32 ? 1.1920928955078125e-07 : 2.220446049250313e-16) * X4[0];
            while (r < mr && X4[r] > tol) r++;
            /* X3 = Vᵀ (n×n): rows 0..r-1 span the row space. R = V_rᵀ X (r×n), R2 = V_r R. */
            double *Vr = malloc(sizeof(double) * (size_t)(n * (r > 0 ? r : 1)));
            if (!Vr) { err = -1; break; }
            for (int64_t j = 0; j < r; j++)
                for (int64_t i = 0; i < n; i++) Vr[i + j * n] = X3[j + i * n];
            memcpy(R2, X1, sizeof(double) * (size_t)(n * n));
            if (r > 0) {
                mm(1, 0, r, n, n, Vr, X1, R);
                cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)r, -1.0, Vr, (int)n, R,
                            (int)r, 1.0, R2, (int)n);
            }
            free(Vr);
            MAXE(err, fro_diff(X2, R2, n * n) / tiny_guard(fro(X1, n * n)));
            snprintf(msg, len, "‖Y − (I−V_rV_rᵀ)X‖/‖X‖ vs double dgesvd");
            break;
        }
        case OP_PROJECT_BASIS: { /* Y vs X − Q QᵀX in double */
            int64_t q = L->t[0].cols;
            A = dmat(&m[0], b); X1 = dmat(&m[1], b); X2 = dmat(&m[2], b);
            R = malloc(sizeof(double) * (size_t)(q * n)); R2 = malloc(sizeof(double) * (size_t)(n * n));
            ALLOC_OR_FAIL(A, X1, X2, R, R2);
            mm(1, 0, q, n, n, A, X1, R);
            memcpy(R2, X1, sizeof(double) * (size_t)(n * n));
            cblas_dgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)q, -1.0, A, (int)n, R, (int)q,
                        1.0, R2, (int)n);
            MAXE(err, fro_diff(X2, R2, n * n) / tiny_guard(fro(X1, n * n)));
            MAXE(err, orth_err(A, n, q));
            snprintf(msg, len, "‖Y − (X − QQᵀX)‖/‖X‖ in double, ‖QᵀQ−I‖");
            break;
        }
        case OP_LSTSQ: { /* normal-equation residual ‖Aᵀ(AX − B)‖ / (‖A‖²‖X‖ + ‖A‖‖B‖), backward-stable */
            int64_t rk = ((const int64_t *)m[3].data)[b];
            A = dmat(&m[0], b); X1 = dmat(&m[1], b); X2 = dmat(&m[2], b);
            R = malloc(sizeof(double) * n); R2 = malloc(sizeof(double) * n);
            ALLOC_OR_FAIL(A, X1, X2, R, R2);
            if (rk < 1 || rk > n) { MAXE(err, 1.0); snprintf(msg, len, "rank %lld out of range", (long long)rk); break; }
            mm(0, 0, n, 1, n, A, X2, R);
            for (int64_t i = 0; i < n; i++) R[i] -= X1[i];
            mm(1, 0, n, 1, n, A, R, R2);
            double na = fro(A, n * n);
            MAXE(err, fro(R2, n) / tiny_guard(na * na * fro(X2, n) + na * fro(X1, n)));
            snprintf(msg, len, "normal-equation residual");
            break;
        }
        case OP_EIGH_BWD: {
            X1 = dmat(&m[0], b); X2 = dmat(&m[1], b); X3 = dmat(&m[2], b); X4 = dmat(&m[3], b);
            A = dmat(&m[4], b); R = malloc(sizeof(double) * n * n);
            ALLOC_OR_FAIL(X1, X2, X3, X4, A, R);
            ref_eigh_bwd(n, X1, X2, X3, X4, R);
            MAXE(err, fro_diff(A, R, n * n) / tiny_guard(fro(R, n * n)));
            snprintf(msg, len, "vs double V(diag(gW)+skew(VᵀgV)⊘E)Vᵀ");
            break;
        }
        case OP_MATFUNC_BWD: {
            X1 = dmat(&m[0], b); X2 = dmat(&m[1], b); X3 = dmat(&m[2], b); A = dmat(&m[3], b);
            R = malloc(sizeof(double) * n * n);
            ALLOC_OR_FAIL(X1, X2, X3, A, R);
            ref_sqrt_bwd(n, X1, X2, X3, R);
            MAXE(err, fro_diff(A, R, n * n) / tiny_guard(fro(R, n * n)));
            snprintf(msg, len, "vs double Daleckii–Krein (sqrt)");
            break;
        }
        case OP_REG: { /* loss = Σσ, gA = U Vᵀ from a double SVD */
            A = dmat(&m[0], b); X1 = dmat(&m[2], b);
            X2 = malloc(sizeof(double) * n); X3 = malloc(sizeof(double) * n * n); X4 = malloc(sizeof(double) * n * n);
            R = malloc(sizeof(double) * n * n);
            ALLOC_OR_FAIL(A, X1, X2, X3, X4, R);
            if (ref_svd(A, n, n, X2, X3, X4) != 0) { err = -1; snprintf(msg, len, "reference dgesvd failed"); break; }
            double loss = 0;
            for (int64_t i = 0; i < n; i++) loss += X2[i];
            mm(0, 0, n, n, n, X3, X4, R); /* U·Vᵀ (X4 holds Vᵀ) */
            MAXE(err, fabs(get(&m[1], b, 0, 0) - loss) / tiny_guard(loss));
            MAXE(err, fro_diff(X1, R, n * n) / tiny_guard(fro(R, n * n)));
            snprintf(msg, len, "loss Σσ and U·Vᵀ vs double dgesvd");
            break;
        }
        case OP_SVD_BWD:
        default:
            err = -1;
            snprintf(msg, len, "no independent host reference (compared with the CPU backend only)");
            break;
        }
    done:
        free(A); free(X1); free(X2); free(X3); free(X4); free(R); free(R2);
    }
    return err;
}

static double rel_diff_tensor(const sg_mat *a, const sg_mat *b, int64_t nb)
{
    double d = 0, r = 0;
    for (int64_t k = 0; k < nb; k++)
        for (int64_t j = 0; j < a->cols; j++)
            for (int64_t i = 0; i < a->rows; i++) {
                double x = get(a, k, i, j), y = get(b, k, i, j);
                d += (x - y) * (x - y);
                r += y * y;
            }
    return sqrt(d) / tiny_guard(sqrt(r));
}
static double max_rel_vec(const sg_mat *a, const sg_mat *b, int64_t nb)
{
    double e = 0;
    for (int64_t k = 0; k < nb; k++) {
        double mx = 0, d = 0;
        for (int64_t i = 0; i < a->rows; i++) {
            double y = fabs(get(b, k, i, 0)), x = fabs(get(a, k, i, 0) - get(b, k, i, 0));
            if (y > mx) mx = y;
            if (!(x <= d)) d = x;
        }
        MAXE(e, d / tiny_guard(mx));
    }
    return e;
}

double op_compare(op_id op, const buf_set *test, const buf_set *ref, const op_layout *L, int64_t nb, char *msg,
                  size_t len)
{
    double err = 0;
    char sub[160];
    switch (op) {
    case OP_EIGH:
    case OP_SVD:
        MAXE(err, max_rel_vec(&test->m[1], &ref->m[1], nb));
        MAXE(err, op_self_check(op, test, L, nb, sub, sizeof sub));
        snprintf(msg, len, "%s vs CPU + %s", op == OP_EIGH ? "eigenvalues" : "singular values", sub);
        break;
    case OP_NULLSPACE: {
        int64_t n = L->t[1].rows;
        for (int64_t b = 0; b < nb; b++) {
            int64_t kt = ((const int64_t *)test->m[2].data)[b], kr = ((const int64_t *)ref->m[2].data)[b];
            if (kt != kr) { MAXE(err, 1.0); continue; }
            double *N1 = dmat(&test->m[1], b), *N2 = dmat(&ref->m[1], b);
            double *P1 = malloc(sizeof(double) * n * n), *P2 = malloc(sizeof(double) * n * n);
            if (N1 && N2 && P1 && P2 && kt > 0) {
                mm(0, 1, n, n, kt, N1, N1, P1);
                mm(0, 1, n, n, kt, N2, N2, P2);
                MAXE(err, fro_diff(P1, P2, n * n) / sqrt((double)kt));
            }
            free(N1); free(N2); free(P1); free(P2);
        }
        MAXE(err, op_self_check(op, test, L, nb, sub, sizeof sub));
        snprintf(msg, len, "nullity and projector ‖NNᵀ−N₀N₀ᵀ‖ vs CPU + %s", sub);
        break;
    }
    case OP_LSTSQ:
        for (int64_t b = 0; b < nb; b++)
            if (((const int64_t *)test->m[3].data)[b] != ((const int64_t *)ref->m[3].data)[b]) MAXE(err, 1.0);
        MAXE(err, op_self_check(op, test, L, nb, sub, sizeof sub));
        snprintf(msg, len, "rank vs CPU + %s", sub);
        break;
    default: /* deterministic outputs: relative Frobenius difference of every output */
        for (int i = 0; i < L->ntens; i++)
            if (!L->t[i].is_input && !L->t[i].is_int64) MAXE(err, rel_diff_tensor(&test->m[i], &ref->m[i], nb));
        snprintf(msg, len, "‖out − CPU‖/‖CPU‖ over every output");
        break;
    }
    return err;
}

/* ---- timing helpers ---------------------------------------------------------------------------------- */
double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
double median_of(double *v, int n)
{
    if (n <= 0) return NAN;
    qsort(v, (size_t)n, sizeof *v, cmpd);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* CPU vs CUDA parity for the forward ops (eigh, svd, rank, nullspace, project, project_basis, lstsq): both dtypes,
   sizes 1..256 across the solver switch at 32, rectangular shapes, host and device memory, a host batch
   streamed in many chunks, ld/stride padding, NaN on the device (and with the input check off), and
   inputs near the ends of the floating-point range. Comparisons are gauge invariant
   (values, reconstructions, orthonormality, projectors, subspace distances), never raw vectors.
   Without a GPU every test is skipped with the reason printed. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gpu_suite.h"
#include "opcases.h"

TestSuite(gpu_parity, .init = gpu_suite_setup, .fini = gpu_suite_teardown, .timeout = 600);

static double tol_of(sg_dtype t) { return t == SG_F32 ? 2e-3 : 1e-9; }
static const char *dn(sg_dtype t) { return t == SG_F32 ? "f32" : "f64"; }

/* int64 outputs in the GPU context's memory space */
typedef struct {
    int64_t *h, *d;
    int64_t n;
    int dev;
} ibuf;
static ibuf inew(int64_t n, int dev)
{
    ibuf b = {calloc((size_t)n, 8), NULL, n, dev};
    for (int64_t i = 0; i < n; i++) b.h[i] = -7;
#ifdef SG_HAVE_CUDA
    if (dev) {
        cr_assert_eq(cudaMalloc((void **)&b.d, (size_t)n * 8), cudaSuccess);
        cr_assert_eq(cudaMemcpy(b.d, b.h, (size_t)n * 8, cudaMemcpyHostToDevice), cudaSuccess);
    }
#endif
    return b;
}
static int64_t *IG(ibuf *b) { return b->dev ? b->d : b->h; }
static void iget(ibuf *b)
{
#ifdef SG_HAVE_CUDA
    if (b->dev) cr_assert_eq(cudaMemcpy(b->h, b->d, (size_t)b->n * 8, cudaMemcpyDeviceToHost), cudaSuccess);
#endif
}
static void ifree(ibuf *b)
{
#ifdef SG_HAVE_CUDA
    if (b->dev) cudaFree(b->d);
#endif
    free(b->h);
}

/* ---- checks --------------------------------------------------------------------------------------- */
/* ‖QᵀQ − I‖_max for n×c orthonormal columns */
static double orth_err(const double *Q, int64_t n, int64_t c)
{
    double *G2 = malloc(sizeof(double) * (size_t)(c * c)), e = 0;
    tu_gemm(1, 0, c, c, n, Q, Q, G2);
    for (int64_t j = 0; j < c; j++)
        for (int64_t i = 0; i < c; i++) e = fmax(e, fabs(G2[i + j * c] - (i == j)));
    free(G2);
    return e;
}

/* ‖A − U diag(s) Vᵀ‖ / ‖A‖ using the first k columns of U (m×cu) and V (n×cv) */
static double recon_err(const double *A, const double *U, const double *s, const double *V, int64_t m, int64_t n,
                        int64_t k)
{
    double *US = malloc(sizeof(double) * (size_t)(m * k)), *R = malloc(sizeof(double) * (size_t)(m * n));
    for (int64_t j = 0; j < k; j++)
        for (int64_t i = 0; i < m; i++) US[i + j * m] = U[i + j * m] * s[j];
    tu_gemm(0, 1, m, n, k, US, V, R);
    double e = tu_diff_norm(R, A, m * n) / fmax(tu_norm(A, m * n), 1e-300);
    free(US);
    free(R);
    return e;
}

/* Random batch with singular values in [1,2] and, on odd matrices, rank k/2 (clear gap for every rtol). */
static void gen_rect(tu_rng *r, int64_t batch, int64_t m, int64_t n, double *A)
{
    int64_t k = m < n ? m : n;
    double *s = malloc(sizeof(double) * (size_t)k);
    for (int64_t b = 0; b < batch; b++) {
        int64_t rk = (b & 1) && k > 1 ? k / 2 : k;
        for (int64_t i = 0; i < k; i++) s[i] = i < rk ? 1 + tu_uniform(r) : 0;
        tu_mat_with_singular_values(r, m, n, s, A + b * m * n);
    }
    free(s);
}

/* Rank deficient by structure, exactly: the tall orientation Aₜ (A, or Aᵀ for wide A: the d×k matrix the
   QR-first path factors) has kd distinct columns with singular values in [1,2], copies of them, and a zero
   last column (k = 1: A = 0 on odd matrices). Aₜ = B S with S a 0/1 selection with disjoint rows, so the
   nonzero σ lie in [1, 2√k]: a clear gap for every tolerance, and lstsq stays well conditioned. */
static void gen_defect(tu_rng *r, int64_t batch, int64_t m, int64_t n, double *A)
{
    int64_t k = m < n ? m : n, d = m < n ? n : m;
    double *B = malloc(sizeof(double) * (size_t)(d * k)), *s = malloc(sizeof(double) * (size_t)k);
    for (int64_t b = 0; b < batch; b++) {
        int64_t kd = k == 1 ? (b & 1 ? 0 : 1) : (b & 1) ? (k / 2 > 1 ? k / 2 : 1) : k - 1 - k / 4;
        for (int64_t i = 0; i < kd; i++) s[i] = 1 + tu_uniform(r);
        if (kd > 0) tu_mat_with_singular_values(r, d, kd, s, B);
        double *Ab = A + b * m * n;
        for (int64_t j = 0; j < k; j++) {
            int64_t col = j < kd ? j : j < k - 1 ? (j - kd) % kd : -1;
            for (int64_t i = 0; i < d; i++) {
                double v = col >= 0 ? B[i + col * d] : 0;
                if (m >= n) Ab[i + j * m] = v; /* Aₜ(i, j) = A(i, j) */
                else Ab[j + i * m] = v;        /* Aₜ(i, j) = A(j, i) */
            }
        }
    }
    free(B);
    free(s);
}

typedef struct {
    sg_dtype t;
    int64_t m, n, batch;
    int dev, pad;
    size_t chunk; /* GPU ctx chunk_bytes (host streaming) */
    int defect;   /* 1: gen_defect (duplicate / zero columns of Aₜ) instead of gen_rect */
} cfg;

static void set_mem(const cfg *c)
{
    cr_assert_eq(sg_set_memspace(gpu, c->dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
    cr_assert_eq(sg_set_chunk_bytes(gpu, c->chunk), SG_OK);
}

/* SVD (economy and full), rank, nullspace, project (row/null, in place), lstsq: GPU vs CPU. */
static void check_rect(const cfg *c, uint64_t seed)
{
    int64_t m = c->m, n = c->n, k = m < n ? m : n, B = c->batch, kx = 3;
    double tol = tol_of(c->t);
    tu_rng r = tu_seed(seed);
    double *A = malloc(sizeof(double) * (size_t)(B * m * n));
    if (c->defect) gen_defect(&r, B, m, n, A);
    else gen_rect(&r, B, m, n, A);
    set_mem(c);
    cr_log_info("rect %s %lld×%lld batch %lld dev %d pad %d chunk %zu defect %d", dn(c->t), (long long)m,
                (long long)n, (long long)B, c->dev, c->pad, c->chunk, c->defect);
    buf a = bnew(c->t, B, m, n, c->pad, c->dev);
    bset(&a, A);

    /* CPU reference on dense copies */
    sg_mat ac = tu_alloc_mat(c->t, B, m, n);
    tu_to_mat(A, &ac);
    sg_mat sc = tu_alloc_mat(c->t, B, k, 1);
    cr_assert_eq(sg_svd(cpu, &ac, 0, &sc, NULL, NULL), SG_OK, "%s", sg_last_error(cpu));
    double *s_ref = malloc(sizeof(double) * (size_t)(B * k));
    tu_from_mat(&sc, s_ref);

    for (int full = 0; full <= 1; full++) {
        int64_t cu = full ? m : k, cv = full ? n : k;
        buf s = bnew(c->t, B, k, 1, c->pad, c->dev), u = bnew(c->t, B, m, cu, c->pad, c->dev),
            v = bnew(c->t, B, n, cv, c->pad, c->dev);
        cr_assert_eq(sg_svd(gpu, bm(&a), full, bm(&s), bm(&u), bm(&v)), SG_OK, "svd: %s", sg_last_error(gpu));
        double *S = malloc(sizeof(double) * (size_t)(B * k)), *U = malloc(sizeof(double) * (size_t)(B * m * cu)),
               *V = malloc(sizeof(double) * (size_t)(B * n * cv));
        bget(&s, S);
        bget(&u, U);
        bget(&v, V);
        for (int64_t b = 0; b < B; b++) {
            double smax = fmax(s_ref[b * k], 1e-300);
            for (int64_t i = 0; i < k; i++)
                cr_expect_leq(fabs(S[b * k + i] - s_ref[b * k + i]), tol * smax, "σ[%lld] of matrix %lld: %g vs %g",
                              (long long)i, (long long)b, S[b * k + i], s_ref[b * k + i]);
            cr_expect_leq(orth_err(U + b * m * cu, m, cu), tol, "U orthonormal (matrix %lld, full %d)", (long long)b, full);
            cr_expect_leq(orth_err(V + b * n * cv, n, cv), tol, "V orthonormal (matrix %lld, full %d)", (long long)b, full);
            cr_expect_leq(recon_err(A + b * m * n, U + b * m * cu, S + b * k, V + b * n * cv, m, n, k), tol,
                          "A = U S Vᵀ (matrix %lld, full %d)", (long long)b, full);
        }
        free(S);
        free(U);
        free(V);
        bfree(&s);
        bfree(&u);
        bfree(&v);
    }

    /* rank */
    int64_t *rk_ref = malloc(sizeof(int64_t) * (size_t)B);
    cr_assert_eq(sg_rank(cpu, &ac, 0, -1, rk_ref), SG_OK);
    ibuf rk = inew(B, c->dev);
    cr_assert_eq(sg_rank(gpu, bm(&a), 0, -1, IG(&rk)), SG_OK, "rank: %s", sg_last_error(gpu));
    iget(&rk);
    for (int64_t b = 0; b < B; b++) cr_expect_eq(rk.h[b], rk_ref[b], "rank of matrix %lld", (long long)b);

    /* nullspace */
    sg_mat nc = tu_alloc_mat(c->t, B, n, n);
    int64_t *nl_ref = malloc(sizeof(int64_t) * (size_t)B);
    cr_assert_eq(sg_nullspace(cpu, &ac, 0, -1, &nc, nl_ref), SG_OK);
    buf nn = bnew(c->t, B, n, n, c->pad, c->dev);
    ibuf nl = inew(B, c->dev);
    cr_assert_eq(sg_nullspace(gpu, bm(&a), 0, -1, bm(&nn), IG(&nl)), SG_OK, "nullspace: %s", sg_last_error(gpu));
    iget(&nl);
    double *Nr = malloc(sizeof(double) * (size_t)(B * n * n)), *Ng = malloc(sizeof(double) * (size_t)(B * n * n));
    tu_from_mat(&nc, Nr);
    bget(&nn, Ng);
    for (int64_t b = 0; b < B; b++) {
        cr_expect_eq(nl.h[b], nl_ref[b], "nullity of matrix %lld", (long long)b);
        int64_t q = nl_ref[b];
        if (q > 0)
            cr_expect_leq(tu_subspace_dist(n, Nr + b * n * n, q, Ng + b * n * n, q), tol, "null space of matrix %lld",
                          (long long)b);
        cr_expect_eq(tu_max_abs(Ng + b * n * n + q * n, (n - q) * n), 0.0, "zero fill of matrix %lld", (long long)b);
    }

    /* project (null then row, the row one in place: Y = X) */
    double *X = malloc(sizeof(double) * (size_t)(B * n * kx)), *Yr = malloc(sizeof(double) * (size_t)(B * n * kx)),
           *Yg = malloc(sizeof(double) * (size_t)(B * n * kx));
    tu_fill_normal(&r, X, B * n * kx);
    for (int which = SG_PROJ_NULL; which <= SG_PROJ_ROW; which++) {
        sg_mat xc = tu_alloc_mat(c->t, B, n, kx), yc = tu_alloc_mat(c->t, B, n, kx);
        tu_to_mat(X, &xc);
        cr_assert_eq(sg_project(cpu, &ac, &xc, (sg_proj)which, 0, -1, &yc), SG_OK);
        tu_from_mat(&yc, Yr);
        buf x = bnew(c->t, B, n, kx, c->pad, c->dev), y = bnew(c->t, B, n, kx, c->pad, c->dev);
        bset(&x, X);
        buf *out = which == SG_PROJ_ROW ? &x : &y;
        cr_assert_eq(sg_project(gpu, bm(&a), bm(&x), (sg_proj)which, 0, -1, bm(out)), SG_OK, "project: %s",
                     sg_last_error(gpu));
        bget(out, Yg);
        for (int64_t b = 0; b < B; b++)
            cr_expect_leq(tu_diff_norm(Yg + b * n * kx, Yr + b * n * kx, n * kx),
                          tol * fmax(1, tu_norm(X + b * n * kx, n * kx)), "project %d of matrix %lld", which, (long long)b);
        bfree(&x);
        bfree(&y);
        tu_free_mat(&xc);
        tu_free_mat(&yc);
    }

    /* project_basis with the CPU's nullspace basis N (n×n, zero columns past the nullity): GPU vs CPU,
       the complement one in place */
    for (int comp = 0; comp <= 1; comp++) {
        sg_mat xc = tu_alloc_mat(c->t, B, n, kx), yc = tu_alloc_mat(c->t, B, n, kx);
        tu_to_mat(X, &xc);
        cr_assert_eq(sg_project_basis(cpu, &nc, &xc, comp, &yc), SG_OK, "%s", sg_last_error(cpu));
        tu_from_mat(&yc, Yr);
        buf q = bnew(c->t, B, n, n, c->pad, c->dev), x = bnew(c->t, B, n, kx, c->pad, c->dev),
            y = bnew(c->t, B, n, kx, c->pad, c->dev);
        bset(&q, Nr);
        bset(&x, X);
        buf *out = comp ? &x : &y;
        cr_assert_eq(sg_project_basis(gpu, bm(&q), bm(&x), comp, bm(out)), SG_OK, "project_basis: %s",
                     sg_last_error(gpu));
        bget(out, Yg);
        for (int64_t b = 0; b < B; b++)
            cr_expect_leq(tu_diff_norm(Yg + b * n * kx, Yr + b * n * kx, n * kx),
                          tol * fmax(1, tu_norm(X + b * n * kx, n * kx)), "project_basis %d of matrix %lld", comp,
                          (long long)b);
        bfree(&q);
        bfree(&x);
        bfree(&y);
        tu_free_mat(&xc);
        tu_free_mat(&yc);
    }

    /* lstsq (rank deficient on odd matrices) */
    double *Bm = malloc(sizeof(double) * (size_t)(B * m * kx)), *Xr = malloc(sizeof(double) * (size_t)(B * n * kx)),
           *Xg = malloc(sizeof(double) * (size_t)(B * n * kx));
    tu_fill_normal(&r, Bm, B * m * kx);
    sg_mat bc = tu_alloc_mat(c->t, B, m, kx), xc = tu_alloc_mat(c->t, B, n, kx);
    tu_to_mat(Bm, &bc);
    cr_assert_eq(sg_lstsq(cpu, &ac, &bc, 0, -1, &xc, rk_ref), SG_OK);
    tu_from_mat(&xc, Xr);
    buf bb = bnew(c->t, B, m, kx, c->pad, c->dev), xx = bnew(c->t, B, n, kx, c->pad, c->dev);
    bset(&bb, Bm);
    ibuf rk2 = inew(B, c->dev);
    cr_assert_eq(sg_lstsq(gpu, bm(&a), bm(&bb), 0, -1, bm(&xx), IG(&rk2)), SG_OK, "lstsq: %s", sg_last_error(gpu));
    bget(&xx, Xg);
    iget(&rk2);
    for (int64_t b = 0; b < B; b++) {
        cr_expect_eq(rk2.h[b], rk_ref[b], "lstsq rank of matrix %lld", (long long)b);
        cr_expect_leq(tu_diff_norm(Xg + b * n * kx, Xr + b * n * kx, n * kx),
                      tol * fmax(1, tu_norm(Xr + b * n * kx, n * kx)), "lstsq of matrix %lld", (long long)b);
    }

    free(Bm); free(Xr); free(Xg); tu_free_mat(&bc); tu_free_mat(&xc); bfree(&bb); bfree(&xx); ifree(&rk2);
    free(X); free(Yr); free(Yg);
    free(Nr); free(Ng); bfree(&nn); ifree(&nl); free(nl_ref); tu_free_mat(&nc);
    ifree(&rk); free(rk_ref);
    free(s_ref); tu_free_mat(&sc); tu_free_mat(&ac); bfree(&a); free(A);
}

/* eigh: values vs CPU, A V = V Λ, VᵀV = I. Odd matrices get a doubly repeated eigenvalue. */
static void check_eigh(const cfg *c, uint64_t seed)
{
    int64_t n = c->n, B = c->batch;
    double tol = tol_of(c->t);
    tu_rng r = tu_seed(seed);
    double *A = malloc(sizeof(double) * (size_t)(B * n * n)), *w = malloc(sizeof(double) * (size_t)n);
    for (int64_t b = 0; b < B; b++) {
        for (int64_t i = 0; i < n; i++) w[i] = 4 * tu_uniform(&r) - 2;
        if ((b & 1) && n > 1) w[1] = w[0];
        tu_sym_with_spectrum(&r, n, w, A + b * n * n);
    }
    set_mem(c);
    cr_log_info("eigh %s n %lld batch %lld dev %d pad %d chunk %zu", dn(c->t), (long long)n, (long long)B, c->dev,
                c->pad, c->chunk);
    sg_mat ac = tu_alloc_mat(c->t, B, n, n), wc = tu_alloc_mat(c->t, B, n, 1);
    tu_to_mat(A, &ac);
    cr_assert_eq(sg_eigh(cpu, &ac, &wc, NULL), SG_OK, "%s", sg_last_error(cpu));
    double *Wr = malloc(sizeof(double) * (size_t)(B * n)), *Wg = malloc(sizeof(double) * (size_t)(B * n)),
           *Vg = malloc(sizeof(double) * (size_t)(B * n * n)), *AV = malloc(sizeof(double) * (size_t)(n * n));
    tu_from_mat(&wc, Wr);
    buf a = bnew(c->t, B, n, n, c->pad, c->dev), ww = bnew(c->t, B, n, 1, c->pad, c->dev),
        vv = bnew(c->t, B, n, n, c->pad, c->dev), w2 = bnew(c->t, B, n, 1, c->pad, c->dev);
    bset(&a, A);
    cr_assert_eq(sg_eigh(gpu, bm(&a), bm(&ww), bm(&vv)), SG_OK, "eigh: %s", sg_last_error(gpu));
    cr_assert_eq(sg_eigh(gpu, bm(&a), bm(&w2), NULL), SG_OK, "eigh values only: %s", sg_last_error(gpu));
    bget(&ww, Wg);
    bget(&vv, Vg);
    double *W2 = malloc(sizeof(double) * (size_t)(B * n));
    bget(&w2, W2);
    for (int64_t b = 0; b < B; b++) {
        const double *Ab = A + b * n * n, *V = Vg + b * n * n, *L = Wg + b * n;
        double scale = fmax(1, tu_max_abs(Wr + b * n, n));
        for (int64_t i = 0; i < n; i++) {
            cr_expect_leq(fabs(L[i] - Wr[b * n + i]), tol * scale, "λ[%lld] of matrix %lld", (long long)i, (long long)b);
            cr_expect_leq(fabs(W2[b * n + i] - Wr[b * n + i]), tol * scale, "values-only λ[%lld] of matrix %lld",
                          (long long)i, (long long)b);
        }
        tu_gemm(0, 0, n, n, n, Ab, V, AV);
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < n; i++) AV[i + j * n] -= V[i + j * n] * L[j];
        cr_expect_leq(tu_norm(AV, n * n), tol * scale * sqrt((double)n), "A V − V Λ of matrix %lld", (long long)b);
        cr_expect_leq(orth_err(V, n, n), tol, "VᵀV = I for matrix %lld", (long long)b);
    }
    free(W2); bfree(&w2);
    free(Wr); free(Wg); free(Vg); free(AV); bfree(&a); bfree(&ww); bfree(&vv);
    tu_free_mat(&ac); tu_free_mat(&wc); free(A); free(w);
}

static const int64_t SIZES[] = {1, 2, 3, 8, 16, 31, 32, 33, 64, 128, 256};
#define NSIZES (int)(sizeof SIZES / sizeof SIZES[0])
static int64_t batch_for(int64_t n) { return n <= 32 ? 5 : n <= 64 ? 3 : 2; }

Test(gpu_parity, eigh_sizes_host)
{
    NEED_GPU();
    for (int t = SG_F32; t <= SG_F64; t++)
        for (int i = 0; i < NSIZES; i++) {
            cfg c = {(sg_dtype)t, SIZES[i], SIZES[i], batch_for(SIZES[i]), 0, 0, 0};
            check_eigh(&c, 100 + i);
        }
}

Test(gpu_parity, square_ops_sizes_host)
{
    NEED_GPU();
    for (int t = SG_F32; t <= SG_F64; t++)
        for (int i = 0; i < NSIZES; i++) {
            cfg c = {(sg_dtype)t, SIZES[i], SIZES[i], batch_for(SIZES[i]), 0, 0, 0};
            check_rect(&c, 200 + i);
        }
}

Test(gpu_parity, rectangular_host)
{
    NEED_GPU();
    /* m, n ≤ 32: gesvdj; min ≤ 32 < max: QR first (64×8 … 257×31, 33×32); min > 32: Jordan–Wielandt */
    static const int64_t shp[][2] = {{5, 3},   {3, 5},   {32, 7},   {7, 32},   {40, 33},  {33, 40},
                                     {64, 8},  {8, 64},  {1, 40},   {40, 1},   {130, 70}, {70, 130},
                                     {100, 3}, {3, 100}, {257, 31}, {31, 257}, {33, 32},  {32, 33}};
    for (int t = SG_F32; t <= SG_F64; t++)
        for (int i = 0; i < (int)(sizeof shp / sizeof shp[0]); i++) {
            cfg c = {(sg_dtype)t, shp[i][0], shp[i][1], 3, 0, 0, 0};
            check_rect(&c, 300 + i);
        }
}

/* QR-first shapes (min ≤ 32 < max) with exact rank deficiency (zero and duplicate columns of Aₜ), every
   op, host and device memory; 1000×3 is the common lstsq shape. */
Test(gpu_parity, qr_first_rank_deficient)
{
    NEED_GPU();
    static const int64_t shp[][2] = {{100, 3}, {3, 100}, {40, 7}, {7, 40}, {257, 31}, {31, 257}, {33, 1}, {1, 33},
                                     {1000, 3}};
    for (int dev = 0; dev <= 1; dev++)
        for (int t = SG_F32; t <= SG_F64; t++)
            for (int i = 0; i < (int)(sizeof shp / sizeof shp[0]); i++) {
                cfg c = {(sg_dtype)t, shp[i][0], shp[i][1], 4, dev, 0, 0, 1};
                check_rect(&c, 700 + i);
            }
}

Test(gpu_parity, device_memory)
{
    NEED_GPU();
    static const int64_t shp[][2] = {{3, 3}, {32, 32}, {33, 33}, {64, 64}, {40, 20}, {20, 40}, {6, 4}, {100, 3}, {3, 100}};
    for (int t = SG_F32; t <= SG_F64; t++) {
        for (int i = 0; i < (int)(sizeof shp / sizeof shp[0]); i++) {
            cfg c = {(sg_dtype)t, shp[i][0], shp[i][1], 4, 1, 0, 0};
            check_rect(&c, 400 + i);
            if (shp[i][0] == shp[i][1]) check_eigh(&c, 450 + i);
        }
    }
}

Test(gpu_parity, padded_layouts_host_and_device)
{
    NEED_GPU();
    static const int64_t shp[][2] = {{8, 8}, {33, 33}, {5, 40}, {40, 5}};
    for (int dev = 0; dev <= 1; dev++)
        for (int t = SG_F32; t <= SG_F64; t++)
            for (int i = 0; i < (int)(sizeof shp / sizeof shp[0]); i++) {
                cfg c = {(sg_dtype)t, shp[i][0], shp[i][1], 3, dev, 2, 0};
                check_rect(&c, 500 + i);
                if (shp[i][0] == shp[i][1]) check_eigh(&c, 550 + i);
            }
}

Test(gpu_parity, host_batch_streams_in_many_chunks)
{
    NEED_GPU();
    /* chunk_bytes = 1: one matrix per chunk, so 37 chunks alternate between the two lanes */
    static const int64_t shp[][2] = {{8, 8}, {33, 20}, {40, 40}};
    for (int t = SG_F32; t <= SG_F64; t++)
        for (int i = 0; i < 3; i++) {
            cfg c = {(sg_dtype)t, shp[i][0], shp[i][1], 37, 0, 0, 1};
            check_rect(&c, 600 + i);
            if (shp[i][0] == shp[i][1]) check_eigh(&c, 650 + i);
            cfg c2 = c;
            c2.chunk = 4096; /* a few matrices per chunk, with a tail chunk */
            if (shp[i][0] == shp[i][1]) check_eigh(&c2, 660 + i);
        }
    cr_assert_eq(sg_set_chunk_bytes(gpu, 0), SG_OK);
}

/* Per-matrix tolerances (sg_*_tols; arrays in host memory whatever the memory space): GPU vs CPU for rank,
   nullspace, project and lstsq, host-streamed one matrix per chunk, a few per chunk with a tail, in one
   chunk, and device-resident, so each chunk must read its own slice. σ_i = 2^-i, every cutoff at least a
   factor 4/3 from a σ, so both backends see one rank per matrix, and that rank is checked too. */
Test(gpu_parity, per_matrix_tolerances_match_cpu)
{
    NEED_GPU();
    static const int64_t shp[][2] = {{6, 4}, {4, 7}, {5, 5}};
    enum { B = 9, KX = 2 };
    const double at[B] = {0, 0.75, 0.375, 0, 0.1, 1.5, 0.6, 0, 0.2}, rt[B] = {-1, -1, 0.3, 0.7, 0, -1, 0.1, 0.15, -1};
    static const size_t chunks[] = {1, 2048, 0};
    for (int t = SG_F32; t <= SG_F64; t++)
        for (int i = 0; i < 3; i++)
            for (int mode = 0; mode < 4; mode++) { /* 0-2: host with chunks[mode]; 3: device */
                int64_t m = shp[i][0], n = shp[i][1], k = m < n ? m : n;
                cfg c = {(sg_dtype)t, m, n, B, mode == 3, 0, mode < 3 ? chunks[mode] : 0};
                const double *pa = (mode + i) % 3 != 2 ? at : NULL, *pr = (mode + i) % 3 != 1 ? rt : NULL;
                double tol = tol_of(c.t), sv[8];
                tu_rng r = tu_seed(1500 + (uint64_t)i);
                double *A = malloc(sizeof(double) * B * (size_t)(m * n)), *X = malloc(sizeof(double) * B * (size_t)(n * KX)),
                       *Bv = malloc(sizeof(double) * B * (size_t)(m * KX));
                for (int64_t j = 0; j < k; j++) sv[j] = ldexp(1, -(int)j);
                for (int64_t b = 0; b < B; b++) tu_mat_with_singular_values(&r, m, n, sv, A + b * m * n);
                tu_fill_normal(&r, X, B * n * KX);
                tu_fill_normal(&r, Bv, B * m * KX);
                set_mem(&c);
                /* CPU */
                sg_mat ac = tu_alloc_mat(c.t, B, m, n), xc = tu_alloc_mat(c.t, B, n, KX), bc = tu_alloc_mat(c.t, B, m, KX),
                       nc = tu_alloc_mat(c.t, B, n, n), yc = tu_alloc_mat(c.t, B, n, KX), sc = tu_alloc_mat(c.t, B, n, KX);
                tu_to_mat(A, &ac), tu_to_mat(X, &xc), tu_to_mat(Bv, &bc);
                int64_t rk[B], nl[B], rk2[B];
                cr_assert_eq(sg_rank_tols(cpu, &ac, pa, pr, rk), SG_OK, "%s", sg_last_error(cpu));
                cr_assert_eq(sg_nullspace_tols(cpu, &ac, pa, pr, &nc, nl), SG_OK, "%s", sg_last_error(cpu));
                cr_assert_eq(sg_project_tols(cpu, &ac, &xc, SG_PROJ_NULL, pa, pr, &yc), SG_OK, "%s", sg_last_error(cpu));
                cr_assert_eq(sg_lstsq_tols(cpu, &ac, &bc, pa, pr, &sc, rk2), SG_OK, "%s", sg_last_error(cpu));
                /* GPU */
                buf a = bnew(c.t, B, m, n, 0, c.dev), x = bnew(c.t, B, n, KX, 0, c.dev), bb = bnew(c.t, B, m, KX, 0, c.dev),
                    nn = bnew(c.t, B, n, n, 0, c.dev), y = bnew(c.t, B, n, KX, 0, c.dev), ss = bnew(c.t, B, n, KX, 0, c.dev);
                bset(&a, A), bset(&x, X), bset(&bb, Bv);
                ibuf grk = inew(B, c.dev), gnl = inew(B, c.dev), grk2 = inew(B, c.dev);
                cr_assert_eq(sg_rank_tols(gpu, bm(&a), pa, pr, IG(&grk)), SG_OK, "%s", sg_last_error(gpu));
                cr_assert_eq(sg_nullspace_tols(gpu, bm(&a), pa, pr, bm(&nn), IG(&gnl)), SG_OK, "%s", sg_last_error(gpu));
                cr_assert_eq(sg_project_tols(gpu, bm(&a), bm(&x), SG_PROJ_NULL, pa, pr, bm(&y)), SG_OK, "%s",
                             sg_last_error(gpu));
                cr_assert_eq(sg_lstsq_tols(gpu, bm(&a), bm(&bb), pa, pr, bm(&ss), IG(&grk2)), SG_OK, "%s", sg_last_error(gpu));
                iget(&grk), iget(&gnl), iget(&grk2);
                double *Nr = malloc(sizeof(double) * B * (size_t)(n * n)), *Ng = malloc(sizeof(double) * B * (size_t)(n * n)),
                       *Yr = malloc(sizeof(double) * B * (size_t)(n * KX)), *Yg = malloc(sizeof(double) * B * (size_t)(n * KX)),
                       *Sr = malloc(sizeof(double) * B * (size_t)(n * KX)), *Sg = malloc(sizeof(double) * B * (size_t)(n * KX));
                tu_from_mat(&nc, Nr), tu_from_mat(&yc, Yr), tu_from_mat(&sc, Sr);
                bget(&nn, Ng), bget(&y, Yg), bget(&ss, Sg);
                for (int64_t b = 0; b < B; b++) {
                    double a1 = pa ? pa[b] : 0, r1 = pr ? pr[b] : -1;
                    double cut = fmax(a1, r1 < 0 ? (a1 > 0 ? 0 : (double)(m > n ? m : n) * (t == SG_F32 ? 1.2e-7 : 2.3e-16)) : r1);
                    int64_t want = 0;
                    while (want < k && sv[want] > cut) want++;
                    cr_expect(rk[b] == want && grk.h[b] == want && rk2[b] == want && grk2.h[b] == want,
                              "%s %lldx%lld mode %d matrix %lld: ranks cpu %lld gpu %lld, lstsq cpu %lld gpu %lld, want %lld",
                              dn(c.t), (long long)m, (long long)n, mode, (long long)b, (long long)rk[b], (long long)grk.h[b],
                              (long long)rk2[b], (long long)grk2.h[b], (long long)want);
                    cr_expect_eq(gnl.h[b], nl[b], "nullity of matrix %lld (mode %d)", (long long)b, mode);
                    int64_t q = nl[b];
                    if (q > 0 && gnl.h[b] == q)
                        cr_expect_leq(tu_subspace_dist(n, Nr + b * n * n, q, Ng + b * n * n, q), tol,
                                      "null space of matrix %lld (mode %d)", (long long)b, mode);
                    cr_expect_leq(tu_diff_norm(Yg + b * n * KX, Yr + b * n * KX, n * KX), tol * fmax(1, tu_norm(X + b * n * KX, n * KX)),
                                  "project of matrix %lld (mode %d)", (long long)b, mode);
                    cr_expect_leq(tu_diff_norm(Sg + b * n * KX, Sr + b * n * KX, n * KX),
                                  tol * 1e2 * fmax(1, tu_norm(Sr + b * n * KX, n * KX)), "lstsq of matrix %lld (mode %d)",
                                  (long long)b, mode);
                }
                free(Nr), free(Ng), free(Yr), free(Yg), free(Sr), free(Sg);
                ifree(&grk), ifree(&gnl), ifree(&grk2);
                bfree(&a), bfree(&x), bfree(&bb), bfree(&nn), bfree(&y), bfree(&ss);
                tu_free_mat(&ac), tu_free_mat(&xc), tu_free_mat(&bc), tu_free_mat(&nc), tu_free_mat(&yc), tu_free_mat(&sc);
                free(A), free(X), free(Bv);
            }
#ifdef SG_HAVE_CUDA
    /* tolerance arrays are read on the host in either memory space: a device array is an argument error
       naming it, not a crash */
    double *dt = NULL;
    cr_assert_eq(cudaMalloc((void **)&dt, sizeof(double) * B), cudaSuccess);
    cr_assert_eq(cudaMemcpy(dt, at, sizeof(double) * B, cudaMemcpyHostToDevice), cudaSuccess);
    for (int dev = 0; dev <= 1; dev++) {
        cr_assert_eq(sg_set_memspace(gpu, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
        buf a = bnew(SG_F64, B, 3, 3, 0, dev);
        ibuf rk = inew(B, dev);
        cr_expect_eq(sg_rank_tols(gpu, bm(&a), NULL, dt, IG(&rk)), SG_ERR_ARG);
        cr_expect(strstr(sg_last_error(gpu), "rtol: device memory") != NULL, "%s", sg_last_error(gpu));
        iget(&rk);
        cr_expect_eq(rk.h[0], -7, "rank written on error");
        ifree(&rk);
        bfree(&a);
    }
    cudaFree(dt);
#endif
    cr_assert_eq(sg_set_chunk_bytes(gpu, 0), SG_OK);
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
}

/* Per-matrix tolerances over many chunks in both memory spaces: 360 matrices 12×10 with σ_i = 2^-i and atol
   cycling through cutoffs between them, so matrix b's rank is known. Host memory streams one matrix per
   chunk; device memory runs in chunks when device memory is short, which CTest arranges on the emulated
   device (test_gpu_emu_smalldev: a 1 MiB device) and which a GPU never needs here (one chunk: still a valid
   check). Each chunk must read its own slice of the arrays. */
Test(gpu_parity, per_matrix_tolerances_over_many_chunks)
{
    NEED_GPU();
    enum { NB = 360, M = 12, N = 10 };
    double sv[N], *A = malloc(sizeof(double) * NB * M * N), *at = malloc(sizeof(double) * NB);
    tu_rng r = tu_seed(1600);
    for (int j = 0; j < N; j++) sv[j] = ldexp(1, -j);
    for (int64_t b = 0; b < NB; b++) {
        tu_mat_with_singular_values(&r, M, N, sv, A + b * M * N);
        at[b] = b % 11 == 10 ? 0 : 0.75 * ldexp(1, -(int)(b % 11)); /* rank b % 11 + 1, or N (atol 0) */
    }
    for (int t = SG_F32; t <= SG_F64; t++)
        for (int dev = 0; dev <= 1; dev++) {
            cfg c = {(sg_dtype)t, M, N, NB, dev, 0, dev ? 0 : 1};
            set_mem(&c);
            buf a = bnew(c.t, NB, M, N, 0, dev), nn = bnew(c.t, NB, N, N, 0, dev);
            bset(&a, A);
            ibuf rk = inew(NB, dev), nl = inew(NB, dev);
            cr_assert_eq(sg_rank_tols(gpu, bm(&a), at, NULL, IG(&rk)), SG_OK, "%s", sg_last_error(gpu));
            cr_assert_eq(sg_nullspace_tols(gpu, bm(&a), at, NULL, bm(&nn), IG(&nl)), SG_OK, "%s", sg_last_error(gpu));
            iget(&rk), iget(&nl);
            int bad = 0;
            for (int64_t b = 0; b < NB; b++) {
                int64_t want = b % 11 == 10 ? N : b % 11 + 1;
                if (rk.h[b] != want || nl.h[b] != N - want) {
                    if (bad++ < 5)
                        cr_log_error("%s dev %d matrix %lld: rank %lld nullity %lld, want rank %lld", dn(c.t), dev,
                                     (long long)b, (long long)rk.h[b], (long long)nl.h[b], (long long)want);
                }
            }
            cr_expect_eq(bad, 0, "%s dev %d: %d of %d matrices with the wrong rank", dn(c.t), dev, bad, NB);
            ifree(&rk), ifree(&nl);
            bfree(&a), bfree(&nn);
        }
    cr_assert_eq(sg_set_chunk_bytes(gpu, 0), SG_OK);
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
    free(A), free(at);
}

/* project_basis over large batches, host-streamed and device-resident, GPU vs CPU: many blocks of the tile
   kernel with a partial last tile (n ≤ 32), one matrix per block in column chunks (n = 128, f64: 20 + 20 + 8
   columns), and the one-block-per-matrix fallback (n = 200). */
Test(gpu_parity, project_basis_large_batch)
{
    NEED_GPU();
    static const int64_t shp[][4] = {{8, 4, 8, 10007}, {3, 1, 1, 4099}, {32, 16, 5, 1001}, {128, 64, 48, 37},
                                     {200, 130, 3, 5}};
    for (int dev = 0; dev <= 1; dev++)
        for (int t = SG_F32; t <= SG_F64; t++)
            for (int i = 0; i < 5; i++) {
                int64_t n = shp[i][0], q = shp[i][1], kx = shp[i][2], B = shp[i][3];
                cfg c = {(sg_dtype)t, n, n, B, dev, 0, 0};
                set_mem(&c);
                tu_rng r = tu_seed(800 + i);
                double *Q = malloc(sizeof(double) * (size_t)(B * n * q)), *O = malloc(sizeof(double) * (size_t)(n * n));
                double *X = malloc(sizeof(double) * (size_t)(B * n * kx)), *Yr = malloc(sizeof(double) * (size_t)(B * n * kx)),
                       *Yg = malloc(sizeof(double) * (size_t)(B * n * kx));
                cr_assert(Q && O && X && Yr && Yg);
                for (int64_t b = 0; b < B; b++) {
                    tu_orthogonal(&r, n, O);
                    memcpy(Q + b * n * q, O, sizeof(double) * (size_t)(n * q));
                }
                tu_fill_normal(&r, X, B * n * kx);
                sg_mat qc = tu_alloc_mat(c.t, B, n, q), xc = tu_alloc_mat(c.t, B, n, kx), yc = tu_alloc_mat(c.t, B, n, kx);
                tu_to_mat(Q, &qc);
                tu_to_mat(X, &xc);
                buf qg = bnew(c.t, B, n, q, 0, dev), xg = bnew(c.t, B, n, kx, 0, dev), yg = bnew(c.t, B, n, kx, 0, dev);
                bset(&qg, Q);
                bset(&xg, X);
                for (int comp = 0; comp <= 1; comp++) {
                    cr_assert_eq(sg_project_basis(cpu, &qc, &xc, comp, &yc), SG_OK);
                    cr_assert_eq(sg_project_basis(gpu, bm(&qg), bm(&xg), comp, bm(&yg)), SG_OK, "%s", sg_last_error(gpu));
                    tu_from_mat(&yc, Yr);
                    bget(&yg, Yg);
                    double e = tu_diff_norm(Yg, Yr, B * n * kx), ref = tu_norm(X, B * n * kx);
                    cr_expect_leq(e, tol_of(c.t) * ref, "project_basis %s n=%lld q=%lld kx=%lld batch=%lld dev=%d comp=%d: "
                                  "‖Δ‖ %g of ‖X‖ %g", dn(c.t), (long long)n, (long long)q, (long long)kx, (long long)B, dev,
                                  comp, e, ref);
                }
                bfree(&qg); bfree(&xg); bfree(&yg);
                tu_free_mat(&qc); tu_free_mat(&xc); tu_free_mat(&yc);
                free(Q); free(O); free(X); free(Yr); free(Yg);
            }
}

/* Device scratch comes from the context's pool. Results stay right while its blocks are reused across
   shapes, dtypes and memory spaces, whatever the cache keeps; what a call maps is handed back at its end
   with a cache of 0 and kept with a cache that covers it (the point: no map/unmap per call). Measured with
   the pool's own counter (sg_cache_held): cudaMemGetInfo is device-wide and the suite runs -j4. */
static size_t held_after_eigh(sg_mat *a, sg_mat *w, sg_mat *v)
{
    cr_assert_eq(sg_eigh(gpu, a, w, v), SG_OK, "%s", sg_last_error(gpu));
    size_t held = 0;
    cr_assert_eq(sg_cache_held(gpu, &held), SG_OK, "%s", sg_last_error(gpu));
    return held;
}

Test(gpu_parity, scratch_pool_reuse_and_release)
{
    NEED_GPU();
    static const size_t keep[] = {0, 4096, (size_t)1 << 30};
    static const int64_t shp[][2] = {{8, 8}, {64, 64}, {40, 20}, {33, 33}, {8, 8}};
    for (int k = 0; k < 3; k++) {
        cr_assert_eq(sg_set_cache_bytes(gpu, keep[k]), SG_OK);
        for (int i = 0; i < 5; i++) {
            cfg c = {(k + i) & 1 ? SG_F32 : SG_F64, shp[i][0], shp[i][1], 6, i & 1, 0, 0};
            check_rect(&c, 800 + 10 * k + i);
            if (shp[i][0] == shp[i][1]) check_eigh(&c, 850 + 10 * k + i);
        }
    }

    /* host-memory eigh, n = 64 (XsyevBatched), 4000 f64 matrices: 131 MB of A staged on the device */
    const int64_t n = 64, B = 4000;
    const size_t MB = (size_t)1 << 20;
    sg_mat a = tu_alloc_mat(SG_F64, B, n, n), w = tu_alloc_mat(SG_F64, B, n, 1), v = tu_alloc_mat(SG_F64, B, n, n);
    double *A = (double *)a.data;
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < n; i++) A[b * n * n + i + j * n] = i == j ? (double)(i + b % 7) : 1.0 / (double)(1 + i + j);
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
    cr_assert_eq(sg_set_chunk_bytes(gpu, 0), SG_OK);
    cr_assert_eq(sg_set_cache_bytes(gpu, 0), SG_OK);
    size_t h = held_after_eigh(&a, &w, &v);
    cr_expect_eq(h, 0, "cache 0: %zu bytes still held after the call", h);
    cr_assert_eq(sg_set_cache_bytes(gpu, (size_t)1 << 30), SG_OK);
    h = held_after_eigh(&a, &w, &v);
    int pools = 1;
#ifdef SG_HAVE_CUDA
    int dev = 0;
    cr_assert_eq(cudaGetDevice(&dev), cudaSuccess);
    cr_assert_eq(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, dev), cudaSuccess);
#endif
    if (!pools)
        cr_log_info("no memory pools on this device: scratch is cudaMalloc'd per call, nothing is kept (held %zu)", h);
    else
        cr_expect(h >= 100 * MB && h <= ((size_t)1 << 30), "1 GiB cache: %zu MB kept of a call that stages 131 MB", h / MB);
    cr_assert_eq(sg_set_cache_bytes(gpu, 0), SG_OK); /* lowered: released at once, not at the next call */
    cr_assert_eq(sg_cache_held(gpu, &h), SG_OK);
    cr_expect_eq(h, 0, "cache lowered to 0: %zu bytes still held", h);
    h = held_after_eigh(&a, &w, &v);
    cr_expect_eq(h, 0, "cache 0 again: %zu bytes held after the call", h);
    /* and the values are right: the eigenvalues sum to the trace */
    const double *W = (const double *)w.data;
    for (int64_t b = 0; b < B; b += 997) {
        double tr = 0, sw = 0;
        for (int64_t i = 0; i < n; i++) tr += A[b * n * n + i * (n + 1)], sw += W[b * n + i];
        cr_expect(fabs(tr - sw) <= 1e-9 * fabs(tr), "matrix %lld: sum of eigenvalues %.17g, trace %.17g", (long long)b, sw, tr);
    }
    tu_free_mat(&a);
    tu_free_mat(&w);
    tu_free_mat(&v);
}

Test(gpu_parity, nan_on_device_is_reported_with_index)
{
    NEED_GPU();
    int64_t n = 4, B = 5;
    double *A = calloc((size_t)(B * n * n), sizeof(double));
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < n; i++) A[b * n * n + i * (n + 1)] = 1 + (double)i;
    A[3 * n * n + 2 + 1 * n] = NAN; /* matrix 3, element (2,1) */
    A[4 * n * n + 0] = INFINITY;
    for (int t = SG_F32; t <= SG_F64; t++) {
        cfg c = {(sg_dtype)t, n, n, B, 1, 0, 0};
        set_mem(&c);
        buf a = bnew(c.t, B, n, n, 0, 1), w = bnew(c.t, B, n, 1, 0, 1), v = bnew(c.t, B, n, n, 0, 1);
        bset(&a, A);
        cr_expect_eq(sg_eigh(gpu, bm(&a), bm(&w), bm(&v)), SG_ERR_NONFINITE);
        cr_expect_eq(sg_failed_index(gpu), 3, "failed index %lld", (long long)sg_failed_index(gpu));
        cr_expect(strstr(sg_last_error(gpu), "NaN") != NULL, "%s", sg_last_error(gpu));
        ibuf rk = inew(B, 1);
        cr_expect_eq(sg_rank(gpu, bm(&a), 0, -1, IG(&rk)), SG_ERR_NONFINITE);
        cr_expect_eq(sg_failed_index(gpu), 3);
        /* with the check off the call is made (result unspecified, but no crash and a status) */
        cr_assert_eq(sg_set_check_finite(gpu, 0), SG_OK);
        sg_status s = sg_rank(gpu, bm(&a), 0, -1, IG(&rk));
        cr_expect(s == SG_OK || s == SG_ERR_NOCONV || s == SG_ERR_CUSOLVER, "status %d", (int)s);
        cr_assert_eq(sg_set_check_finite(gpu, 1), SG_OK);
        /* several inputs scanned together: the first operand in argument order is named, at its first
           bad element */
        double *Bv = malloc(sizeof(double) * (size_t)(B * n)), *A2 = malloc(sizeof(double) * (size_t)(B * n * n));
        for (int64_t e = 0; e < B * n; e++) Bv[e] = 1;
        Bv[1 * n + 2] = INFINITY; /* matrix 1, element (2,0) */
        Bv[4 * n + 0] = NAN;
        for (int64_t e = 0; e < B * n * n; e++) A2[e] = isfinite(A[e]) ? A[e] : 0;
        buf a2 = bnew(c.t, B, n, n, 0, 1), bb = bnew(c.t, B, n, 1, 0, 1), xx = bnew(c.t, B, n, 1, 0, 1);
        bset(&a2, A2);
        bset(&bb, Bv);
        cr_expect_eq(sg_lstsq(gpu, bm(&a2), bm(&bb), 0, -1, bm(&xx), NULL), SG_ERR_NONFINITE, "%s", sg_last_error(gpu));
        cr_expect_eq(sg_failed_index(gpu), 1, "failed index %lld", (long long)sg_failed_index(gpu));
        cr_expect(strstr(sg_last_error(gpu), "B: Inf at element (2,0)") != NULL, "%s", sg_last_error(gpu));
        cr_expect_eq(sg_lstsq(gpu, bm(&a), bm(&bb), 0, -1, bm(&xx), NULL), SG_ERR_NONFINITE, "%s", sg_last_error(gpu));
        cr_expect_eq(sg_failed_index(gpu), 3, "failed index %lld", (long long)sg_failed_index(gpu));
        cr_expect(strstr(sg_last_error(gpu), "A: NaN at element (2,1)") != NULL, "%s", sg_last_error(gpu));
        bfree(&a2);
        bfree(&bb);
        bfree(&xx);
        free(Bv);
        free(A2);
        ifree(&rk);
        bfree(&a);
        bfree(&w);
        bfree(&v);
    }
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
    free(A);
}

Test(gpu_parity, skip_reason_is_printed_without_gpu)
{
    if (gpu) cr_skip_test("a GPU exists: this test covers the no-GPU path");
    cr_expect_gt(strlen(why), 0, "a skip must say why");
}

/* A host array passed while the context expects device memory is an argument error naming the argument
   (not an illegal-address fault that would poison the CUDA context), unless the device reads pageable
   memory (HMM/ATS), where the call is valid. The context keeps working afterwards. */
Test(gpu_parity, host_pointer_in_device_mode_is_an_argument_error)
{
    NEED_GPU();
#ifdef SG_HAVE_CUDA
    int dev = 0, pageable = 0;
    cr_assert_eq(cudaGetDevice(&dev), cudaSuccess);
    cr_assert_eq(cudaDeviceGetAttribute(&pageable, cudaDevAttrPageableMemoryAccess, dev), cudaSuccess);
    int64_t n = 4;
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_DEVICE), SG_OK);
    buf a = bnew(SG_F64, 1, n, n, 0, 1), w = bnew(SG_F64, 1, n, 1, 0, 1), v = bnew(SG_F64, 1, n, n, 0, 1);
    double A[16] = {0};
    for (int i = 0; i < 4; i++) A[i * 5] = 1 + i;
    bset(&a, A);
    sg_mat hostA = sg_mat_dense(A, SG_F64, 1, n, n); /* malloc'd-style host memory (stack) */
    sg_status s = sg_eigh(gpu, &hostA, bm(&w), bm(&v));
    if (pageable)
        cr_expect_eq(s, SG_OK, "pageable memory access: %s", sg_last_error(gpu));
    else {
        cr_expect_eq(s, SG_ERR_ARG, "%s", sg_last_error(gpu));
        cr_expect(strstr(sg_last_error(gpu), "A: host memory") != NULL, "%s", sg_last_error(gpu));
        double gA[16];
        sg_mat hostG = sg_mat_dense(gA, SG_F64, 1, n, n);
        cr_expect_eq(sg_eigh_backward(gpu, bm(&w), bm(&v), NULL, bm(&v), SG_DEGEN_EXACT, 0, &hostG), SG_ERR_ARG, "%s",
                     sg_last_error(gpu));
        cr_expect(strstr(sg_last_error(gpu), "gA: host memory") != NULL, "%s", sg_last_error(gpu));
        /* the int64 outputs too: k_rank writes them in place */
        int64_t hr[1] = {-7};
        buf nb = bnew(SG_F64, 1, n, n, 0, 1), b = bnew(SG_F64, 1, n, 1, 0, 1), x = bnew(SG_F64, 1, n, 1, 0, 1);
        bset(&b, A);
        const char *what[3] = {"rank", "nullity", "rank"};
        for (int op = 0; op < 3; op++) {
            s = op == 0   ? sg_rank(gpu, bm(&a), 0, -1, hr)
                : op == 1 ? sg_nullspace(gpu, bm(&a), 0, -1, bm(&nb), hr)
                          : sg_lstsq(gpu, bm(&a), bm(&b), 0, -1, bm(&x), hr);
            cr_expect_eq(s, SG_ERR_ARG, "op %d: %s", op, sg_last_error(gpu));
            char want[32];
            snprintf(want, sizeof want, "%s: host memory", what[op]);
            cr_expect(strstr(sg_last_error(gpu), want) != NULL, "op %d: %s", op, sg_last_error(gpu));
            cr_expect_eq(hr[0], -7, "op %d wrote the host array", op);
        }
        bfree(&nb), bfree(&b), bfree(&x);
    }
    cr_expect_eq(sg_eigh(gpu, bm(&a), bm(&w), bm(&v)), SG_OK, "the context still works: %s", sg_last_error(gpu));
    bfree(&a), bfree(&w), bfree(&v);
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
#endif
}

/* Jacobi non-convergence is SG_ERR_NOCONV naming the matrix, in a streamed host batch and in device
   memory, and the sweep limit is what decides it. Seen on H200s (CUDA 13.0, 2026-11-30): at n = 16,
   syevjBatched with max_sweeps = 1 flagged every matrix, diagonal ones included (info n+1); at n = 32 it
   reported all 8 random matrices converged with max_sweeps = 1 (and with 3). So the test runs at n = 16:
   1 sweep → NOCONV at matrix 0, named; the default (100 sweeps) → OK. Which later matrix it names when only
   some fail is not pinned down by this. */
Test(gpu_parity, jacobi_nonconvergence_names_the_matrix)
{
    NEED_GPU();
    const int64_t n = 16, B = 8;
    tu_rng r = tu_seed(701);
    double *A = calloc((size_t)(B * n * n), sizeof(double)), w[16];
    for (int64_t b = 0; b < B; b++) {
        for (int64_t i = 0; i < n; i++) w[i] = 1.0 + (double)i;
        tu_sym_with_spectrum(&r, n, w, A + b * n * n);
    }
    for (int dev = 0; dev < 2; dev++) {
        cr_assert_eq(sg_set_memspace(gpu, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
        cr_assert_eq(sg_set_chunk_bytes(gpu, dev ? 0 : 3 * n * n * 8), SG_OK); /* host: ~2 matrices per chunk */
        buf a = bnew(SG_F64, B, n, n, 0, dev), wv = bnew(SG_F64, B, n, 1, 0, dev), v = bnew(SG_F64, B, n, n, 0, dev);
        bset(&a, A);
        cr_assert_eq(sg_set_jacobi(gpu, 1e-300, 1), SG_OK, "%s", sg_last_error(gpu)); /* tol raised to eps */
        sg_status s = sg_eigh(gpu, bm(&a), bm(&wv), bm(&v));
        cr_expect_eq(s, SG_ERR_NOCONV, "%s memory: %s (%s)", dev ? "device" : "host", sg_status_string(s),
                     sg_last_error(gpu));
        cr_expect_eq(sg_failed_index(gpu), 0, "%s memory: failed index %lld: %s", dev ? "device" : "host",
                     (long long)sg_failed_index(gpu), sg_last_error(gpu));
        cr_expect(strstr(sg_last_error(gpu), "did not converge on matrix 0") != NULL, "%s", sg_last_error(gpu));
        cr_assert_eq(sg_set_jacobi(gpu, 0, 0), SG_OK);
        bset(&a, A);
        s = sg_eigh(gpu, bm(&a), bm(&wv), bm(&v));
        cr_expect_eq(s, SG_OK, "%s memory, default sweeps: %s", dev ? "device" : "host", sg_last_error(gpu));
        bfree(&a), bfree(&wv), bfree(&v);
    }
    cr_assert_eq(sg_set_chunk_bytes(gpu, 0), SG_OK);
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
    free(A);
}

/* Every forward op with a NaN or -Inf in one device-resident input (last element of matrix 2):
   SG_ERR_NONFINITE at index 2, the operand named, and every output untouched (matrices filled with 7, int64
   outputs -7). The scan runs before anything is written (issue 6: outputs untouched on error). */
enum { NF_EIGH, NF_SVD, NF_RANK, NF_NULL, NF_PROJ, NF_PBASIS, NF_LSTSQ, NF_MATFUNC, NF_REG, NF_OPS };
Test(gpu_parity, nonfinite_device_inputs_leave_outputs_untouched)
{
    NEED_GPU();
    const int64_t n = 5, B = 3, k = 2, nn = n * n;
    static const char *opn[NF_OPS] = {"eigh", "svd", "rank", "nullspace", "project", "project_basis", "lstsq",
                                      "matfunc", "regularizer"};
    double *A = tu_sym_batch(B, n, 5), *X = malloc(sizeof(double) * (size_t)(B * n * k)),
           *seven = malloc(sizeof(double) * (size_t)(B * nn)), *out = malloc(sizeof(double) * (size_t)(B * nn));
    tu_rng r = tu_seed(6);
    tu_fill_normal(&r, X, B * n * k);
    for (int64_t i = 0; i < B * nn; i++) seven[i] = 7;
    const sg_fn ex = {SG_FN_EXP, 0, NULL, NULL, NULL};
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_DEVICE), SG_OK);
    for (int t = SG_F32; t <= SG_F64; t++)
        for (int op = 0; op < NF_OPS; op++) {
            const int two = op == NF_PROJ || op == NF_PBASIS || op == NF_LSTSQ; /* a second input X / B */
            for (int in = 0; in <= two; in++)
                for (int inf = 0; inf < 2; inf++) {
                    double *src = in ? X : A;
                    const int64_t at = in ? 3 * n * k - 1 : 3 * nn - 1;
                    const double keep = src[at];
                    src[at] = inf ? -INFINITY : NAN;
                    buf a = bnew((sg_dtype)t, B, n, n, 0, 1), x = bnew((sg_dtype)t, B, n, k, 0, 1);
                    bset(&a, A), bset(&x, X);
                    src[at] = keep;
                    /* outputs: up to three matrices (n×n, n×n or n×k, n×1) and one int64 per matrix */
                    const int64_t oc[NF_OPS][3] = {{1, n, 0}, {1, n, n}, {0, 0, 0}, {n, 0, 0}, {k, 0, 0},
                                                   {k, 0, 0},  {k, 0, 0}, {n, 1, n}, {1, n, 0}};
                    buf o[3];
                    for (int j = 0; j < 3; j++) {
                        o[j] = bnew((sg_dtype)t, B, op == NF_REG && j == 0 ? 1 : n, oc[op][j] ? oc[op][j] : 1, 0, 1);
                        bset(&o[j], seven);
                    }
                    ibuf iv = inew(B, 1);
                    sg_mat *m0 = bm(&o[0]), *m1 = bm(&o[1]), *m2 = bm(&o[2]);
                    sg_status s = SG_OK;
                    switch (op) {
                    case NF_EIGH: s = sg_eigh(gpu, bm(&a), m0, m1); break;
                    case NF_SVD: s = sg_svd(gpu, bm(&a), 0, m0, m1, m2); break;
                    case NF_RANK: s = sg_rank(gpu, bm(&a), 0, -1, IG(&iv)); break;
                    case NF_NULL: s = sg_nullspace(gpu, bm(&a), 0, -1, m0, IG(&iv)); break;
                    case NF_PROJ: s = sg_project(gpu, bm(&a), bm(&x), SG_PROJ_NULL, 0, -1, m0); break;
                    case NF_PBASIS: s = sg_project_basis(gpu, bm(&a), bm(&x), 0, m0); break;
                    case NF_LSTSQ: s = sg_lstsq(gpu, bm(&a), bm(&x), 0, -1, m0, IG(&iv)); break;
                    case NF_MATFUNC: s = sg_matfunc(gpu, bm(&a), &ex, m0, m1, m2); break;
                    case NF_REG: s = sg_regularizer(gpu, SG_REG_SPECTRAL, bm(&a), NULL, m0, m1); break;
                    }
                    const char *err = sg_last_error(gpu);
                    const char *name = in ? (op == NF_LSTSQ ? "B" : "X") : op == NF_PBASIS ? "Q" : "A";
                    const size_t ln = strlen(name);
                    cr_expect_eq(s, SG_ERR_NONFINITE, "%s f%d, %s in %s: status %d (%s)", opn[op], t ? 64 : 32,
                                 inf ? "Inf" : "NaN", name, (int)s, err);
                    cr_expect_eq(sg_failed_index(gpu), 2, "%s: index %lld", opn[op], (long long)sg_failed_index(gpu));
                    cr_expect(strncmp(err, name, ln) == 0 && err[ln] == ':', "%s: message \"%s\"", opn[op], err);
                    int64_t touched = 0;
                    for (int j = 0; j < 3; j++) {
                        if (!oc[op][j]) continue;
                        bget(&o[j], out);
                        const int64_t cnt = B * (op == NF_REG && j == 0 ? 1 : n) * oc[op][j];
                        for (int64_t e = 0; e < cnt; e++) touched += out[e] != 7;
                    }
                    iget(&iv);
                    for (int64_t e = 0; e < B; e++) touched += iv.h[e] != -7;
                    cr_expect_eq(touched, 0, "%s f%d, %s in %s: %lld output elements written", opn[op],
                                 t ? 64 : 32, inf ? "Inf" : "NaN", name, (long long)touched);
                    for (int j = 0; j < 3; j++) bfree(&o[j]);
                    ifree(&iv);
                    bfree(&a), bfree(&x);
                }
        }
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
    free(A), free(X), free(seven), free(out);
}

/* With the input check off, NaN/Inf reach the solvers (specgrad.h, sg_set_check_finite). Contract: a status
   and no hang; an error names the matrix that holds the NaN/Inf; on success that matrix's floating outputs
   (λ, σ, projections, solutions) hold NaN/Inf rather than a plausible number, and every other matrix of the
   batch equals the CPU's result on the same matrices. Sizes on both sides of the solver switch at 32. */
enum { CO_EIGH, CO_SVD, CO_RANK, CO_NULL, CO_PROJ, CO_LSTSQ, CO_MATFUNC, CO_LOGDET, CO_EIGSUM, CO_NUCLEAR,
       CO_SPECTRAL, CO_OPS };
static const char *CO_NAME[CO_OPS] = {"eigh",   "svd",          "rank",         "nullspace",
                                      "project", "lstsq",       "matfunc (exp)", "logdet",
                                      "eigsum (exp)", "nuclear norm", "spectral norm²"};
static int co_square(int op) { return op == CO_EIGH || op == CO_MATFUNC || op == CO_LOGDET || op == CO_EIGSUM; }

/* Floating outputs per matrix of op (0: rank only), and their columns: W, S, losses n×1 / k×1 / 1×1;
   N, F n×n; Y, X n×kx. */
static int64_t co_cols(int op, int64_t n, int64_t kx)
{
    return op == CO_NULL || op == CO_MATFUNC ? n : op == CO_PROJ || op == CO_LSTSQ ? kx : 1;
}
static int64_t co_per(int op, int64_t n, int64_t k, int64_t kx)
{
    switch (op) {
    case CO_EIGH: return n;
    case CO_SVD: return k;
    case CO_RANK: return 0;
    case CO_NULL:
    case CO_MATFUNC: return n * n;
    case CO_PROJ:
    case CO_LSTSQ: return n * kx;
    default: return 1; /* a loss */
    }
}

/* Runs op on ctx (GPU: memory space as set); floating output (W, S, N, Y, X, F, loss) into out, int64
   (rank, nullity) into iout. Returns the status. */
static sg_status co_run(sg_ctx *ctx, int op, sg_dtype t, int dev, int64_t B, int64_t m, int64_t n, int64_t kx,
                        const double *A, const double *X, double *out, int64_t *iout)
{
    const int64_t k = m < n ? m : n, per = co_per(op, n, k, kx);
    const sg_fn ex = {SG_FN_EXP, 0, NULL, NULL, NULL};
    const int d = ctx == gpu && dev;
    buf a = bnew(t, B, m, n, 0, d), x = bnew(t, B, op == CO_LSTSQ ? m : n, kx, 0, d),
        o = bnew(t, B, per ? per / co_cols(op, n, kx) : 1, co_cols(op, n, kx), 0, d);
    ibuf ib = inew(B, d);
    bset(&a, A);
    bset(&x, X);
    sg_mat *pa = ctx == gpu ? bm(&a) : &a.h, *px = ctx == gpu ? bm(&x) : &x.h, *po = ctx == gpu ? bm(&o) : &o.h;
    int64_t *pi = ctx == gpu ? IG(&ib) : ib.h;
    sg_status s = SG_OK;
    switch (op) {
    case CO_EIGH: s = sg_eigh(ctx, pa, po, NULL); break;
    case CO_SVD: s = sg_svd(ctx, pa, 0, po, NULL, NULL); break;
    case CO_RANK: s = sg_rank(ctx, pa, 0, -1, pi); break;
    case CO_NULL: s = sg_nullspace(ctx, pa, 0, -1, po, pi); break;
    case CO_PROJ: s = sg_project(ctx, pa, px, SG_PROJ_NULL, 0, -1, po); break;
    case CO_LSTSQ: s = sg_lstsq(ctx, pa, px, 0, -1, po, pi); break;
    case CO_MATFUNC: s = sg_matfunc(ctx, pa, &ex, po, NULL, NULL); break;
    case CO_LOGDET: s = sg_regularizer(ctx, SG_REG_LOGDET, pa, NULL, po, NULL); break;
    case CO_EIGSUM: s = sg_regularizer(ctx, SG_REG_EIGSUM, pa, &ex, po, NULL); break;
    case CO_NUCLEAR: s = sg_regularizer(ctx, SG_REG_NUCLEAR, pa, NULL, po, NULL); break;
    case CO_SPECTRAL: s = sg_regularizer(ctx, SG_REG_SPECTRAL, pa, NULL, po, NULL); break;
    }
    if (ctx == gpu) iget(&ib);
    bget(&o, out);
    memcpy(iout, ib.h, sizeof(int64_t) * (size_t)B);
    bfree(&a), bfree(&x), bfree(&o), ifree(&ib);
    return s;
}

/* " (rank r vs CPU c)" for the ops with an int64 output, else "" */
static const char *co_rank_note(int op, const int64_t *ig, const int64_t *ic, int64_t b, char *buf, size_t len)
{
    buf[0] = 0;
    if (op == CO_RANK || op == CO_NULL || op == CO_LSTSQ)
        snprintf(buf, len, " (%s %lld vs CPU %lld)", op == CO_NULL ? "nullity" : "rank", (long long)ig[b],
                 (long long)ic[b]);
    return buf;
}

/* Matrix b of a GPU result against the CPU's: INFINITY when the rank / nullity differs; the subspace
   distance for nullspace; else ‖g − c‖ / max(floor, ‖c‖), the norms taken in units of max|c| so that
   values near the ends of the range do not overflow or underflow. Projections: floor 1 (Y is relative
   to X, which is O(1), and a full-rank nullspace projection is 0 up to rounding). */
static double co_err(int op, int64_t n, int64_t per, const double *og, const double *oc, const int64_t *ig,
                     const int64_t *ic, int64_t b, double floor)
{
    if ((op == CO_RANK || op == CO_NULL || op == CO_LSTSQ) && ig[b] != ic[b]) return INFINITY;
    if (!per) return 0;
    const double *g = og + b * per, *c = oc + b * per;
    if (op == CO_NULL) return tu_subspace_dist(n, g, ic[b], c, ic[b]);
    if (op == CO_PROJ) floor = fmax(floor, 1);
    double u = 0, dd = 0, cc = 0;
    for (int64_t i = 0; i < per; i++) u = fmax(u, fabs(c[i]));
    if (!(u > 0)) u = 1;
    for (int64_t i = 0; i < per; i++) {
        dd += ((g[i] - c[i]) / u) * ((g[i] - c[i]) / u);
        cc += (c[i] / u) * (c[i] / u);
    }
    return sqrt(dd) / fmax(floor / u, sqrt(cc));
}

/* Inputs of the co_* tests: B random m×n A (gen_rect: odd ones rank-deficient), B symmetric n×n As with
   spectrum in [wlo, wlo + wspan), B right-hand sides X (max(m,n)×kx), and n×n output buffers og (GPU), oc (CPU). */
typedef struct {
    double *A, *As, *X, *og, *oc;
} co_in;
static co_in co_make(tu_rng *r, int64_t B, int64_t m, int64_t n, int64_t kx, double wlo, double wspan)
{
    const size_t d = sizeof(double);
    const int64_t mx = m > n ? m : n;
    co_in c = {malloc(d * (size_t)(B * m * n)), malloc(d * (size_t)(B * n * n)), malloc(d * (size_t)(B * mx * kx)),
               malloc(d * (size_t)(B * n * n)), malloc(d * (size_t)(B * n * n))};
    double *w = malloc(d * (size_t)n);
    cr_assert(c.A && c.As && c.X && c.og && c.oc && w);
    gen_rect(r, B, m, n, c.A);
    for (int64_t b = 0; b < B; b++) {
        for (int64_t i = 0; i < n; i++) w[i] = wlo + wspan * tu_uniform(r);
        tu_sym_with_spectrum(r, n, w, c.As + b * n * n);
    }
    tu_fill_normal(r, c.X, B * mx * kx);
    free(w);
    return c;
}
static void co_free(co_in *c) { free(c->A), free(c->As), free(c->X), free(c->og), free(c->oc); }

/* op on the CPU and the GPU (memory space as set) for a finite batch: SG_OK on both, every matrix within
   tol_of(t) (co_err with floor). what: the case, for messages; names (may be NULL): a label per matrix. */
static void co_parity(int op, sg_dtype t, int dev, int64_t B, int64_t m, int64_t n, int64_t kx, const co_in *c,
                      double floor, const char *what, const char *const *names)
{
    if (co_square(op) && m != n) return;
    const int64_t rows = co_square(op) ? n : m, per = co_per(op, n, m < n ? m : n, kx);
    const double *src = co_square(op) ? c->As : c->A;
    int64_t *ig = malloc(sizeof(int64_t) * (size_t)B), *ic = malloc(sizeof(int64_t) * (size_t)B);
    cr_assert(ig && ic);
    cr_assert_eq(co_run(cpu, op, t, 0, B, rows, n, kx, src, c->X, c->oc, ic), SG_OK, "CPU %s %s %s: %s", CO_NAME[op],
                 dn(t), what, sg_last_error(cpu));
    const sg_status sg = co_run(gpu, op, t, dev, B, rows, n, kx, src, c->X, c->og, ig);
    cr_expect_eq(sg, SG_OK, "%s %s %lld×%lld %s: %s (%s)", CO_NAME[op], dn(t), (long long)rows, (long long)n, what,
                 sg_status_string(sg), sg_last_error(gpu));
    for (int64_t b = 0; sg == SG_OK && b < B; b++) {
        const double e = co_err(op, n, per, c->og, c->oc, ig, ic, b, floor);
        char note[64], idx[32];
        snprintf(idx, sizeof idx, "matrix %lld", (long long)b);
        cr_expect_leq(e, tol_of(t), "%s %s %lld×%lld %s, %s: differs from the CPU by %g%s", CO_NAME[op], dn(t),
                      (long long)rows, (long long)n, what, names ? names[b] : idx, e,
                      co_rank_note(op, ig, ic, b, note, sizeof note));
    }
    free(ig), free(ic);
}

Test(gpu_parity, check_off_nonfinite_stays_in_its_matrix)
{
    NEED_GPU();
    static const int64_t SH[][2] = {{6, 6}, {7, 4}, {4, 7}, {40, 40}, {45, 36}, {40, 5}, {5, 40}}; /* QR first: 40×5 */
    const int64_t B = 4, bad = 2, kx = 2;
    const int guarded = !getenv("SG_RANGE_SCALE") || atoi(getenv("SG_RANGE_SCALE")) != 0;
    for (int t = SG_F32; t <= SG_F64; t++)
        for (int dev = 0; dev < 2; dev++)
            for (size_t sh = 0; sh < sizeof SH / sizeof SH[0]; sh++) {
                const int64_t m = SH[sh][0], n = SH[sh][1];
                tu_rng r = tu_seed(900 + sh);
                co_in c = co_make(&r, B, m, n, kx, 0.5, 2); /* positive spectra: logdet */
                double *A = c.A, *As = c.As, *X = c.X, *og = c.og, *oc = c.oc;
                int64_t ig[4], ic[4];
                const double nf = (t == SG_F32) == (sh & 1) ? NAN : -INFINITY;
                cr_assert_eq(sg_set_memspace(gpu, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
                for (int op = 0; op < CO_OPS; op++) {
                    if (co_square(op) && m != n) continue;
                    const int64_t rows = co_square(op) ? n : m, k = m < n ? m : n;
                    double *src = co_square(op) ? As : A;
                    /* CPU reference on the finite batch (the check on), then the NaN/Inf in the lower
                       triangle of matrix `bad` (eigh reads that one) */
                    cr_assert_eq(co_run(cpu, op, (sg_dtype)t, 0, B, rows, n, kx, src, X, oc, ic), SG_OK, "%s",
                                 sg_last_error(cpu));
                    const double keep = src[bad * rows * n + rows - 1];
                    src[bad * rows * n + rows - 1] = nf;
                    cr_assert_eq(sg_set_check_finite(gpu, 0), SG_OK);
                    sg_status s = co_run(gpu, op, (sg_dtype)t, dev, B, rows, n, kx, src, X, og, ig);
                    const int64_t fidx = sg_failed_index(gpu);
                    char err[512];
                    snprintf(err, sizeof err, "%s", sg_last_error(gpu));
                    cr_assert_eq(sg_set_check_finite(gpu, 1), SG_OK);
                    src[bad * rows * n + rows - 1] = keep;
                    const char *where = CO_NAME[op];
                    cr_log_info("check off: %s %s %lld×%lld %s memory, %g in matrix %lld: %s", where, dn((sg_dtype)t),
                                (long long)rows, (long long)n, dev ? "device" : "host", nf, (long long)bad,
                                sg_status_string(s));
                    /* The backend's range step (k_range_scale) finds the matrix before any solver sees it and
                       reports it as the CPU does; without it (SG_RANGE_SCALE=0, an A/B knob) the solvers get
                       the NaN/Inf and may answer with an error or with NaN. */
                    cr_expect(!guarded || (s == SG_ERR_NOCONV && strstr(err, "not attempted")),
                              "%s %s %lld×%lld %s memory: status %s (%s), want SG_ERR_NOCONV \"not attempted\"",
                              where, dn((sg_dtype)t), (long long)rows, (long long)n, dev ? "device" : "host",
                              sg_status_string(s), err);
                    if (s != SG_OK) {
                        const int ok = s == SG_ERR_NOCONV || s == SG_ERR_CUSOLVER ||
                                       (op >= CO_MATFUNC && s == SG_ERR_DOMAIN); /* f(A), a loss: overflow */
                        cr_expect(ok, "%s %s %lld×%lld: status %s (%s)", where, dn((sg_dtype)t), (long long)rows,
                                  (long long)n, sg_status_string(s), err);
                        cr_expect_eq(fidx, bad, "%s %s %lld×%lld: failed index %lld (%s)", where, dn((sg_dtype)t),
                                     (long long)rows, (long long)n, (long long)fidx, err);
                        continue;
                    }
                    const int64_t per = co_per(op, n, k, kx);
                    if (per && op != CO_NULL) { /* nullspace: a NaN matrix's rank, so its N, is unspecified */
                        int fin = 1;
                        for (int64_t i = 0; i < per; i++) fin &= isfinite(og[bad * per + i]) != 0;
                        cr_expect(!fin, "%s %s %lld×%lld %s memory: SG_OK, and matrix %lld holding %g has finite "
                                  "outputs (a silent result)", where, dn((sg_dtype)t), (long long)rows, (long long)n,
                                  dev ? "device" : "host", (long long)bad, nf);
                    }
                    for (int64_t b = 0; b < B; b++) {
                        if (b == bad) continue;
                        const double e = co_err(op, n, per, og, oc, ig, ic, b, 1);
                        char note[64];
                        cr_expect_leq(e, tol_of((sg_dtype)t), "%s %s %lld×%lld %s memory: matrix %lld differs from "
                                      "the CPU by %g%s with a NaN/Inf in matrix %lld", where, dn((sg_dtype)t),
                                      (long long)rows, (long long)n, dev ? "device" : "host", (long long)b, e,
                                      co_rank_note(op, ig, ic, b, note, sizeof note), (long long)bad);
                    }
                }
                co_free(&c);
            }
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
}

/* Input check off and a NaN/Inf only in eigh's unread upper triangle: both backends decompose the matrix
   from its lower triangle (SG_OK, the values of the clean matrix), the CUDA range step included (its max
   covers what the solver reads). Jacobi (n = 6) and XsyevBatched (n = 40), host and device memory. */
Test(gpu_parity, check_off_eigh_ignores_the_unread_upper_triangle)
{
    NEED_GPU();
    const int64_t B = 2;
    for (int t = SG_F32; t <= SG_F64; t++)
        for (int big = 0; big < 2; big++)
            for (int dev = 0; dev < 2; dev++) {
                const int64_t n = big ? 40 : 6, nn = n * n;
                tu_rng r = tu_seed(990 + big);
                double *A = malloc(sizeof(double) * (size_t)(B * nn)), *wc = malloc(sizeof(double) * (size_t)(B * n)),
                       *wg = malloc(sizeof(double) * (size_t)(B * n));
                cr_assert(A && wc && wg);
                tu_fill_normal(&r, A, B * nn);
                for (int64_t b = 0; b < B; b++) /* symmetric: the mirror of its lower triangle */
                    for (int64_t j = 0; j < n; j++)
                        for (int64_t i = 0; i < j; i++) A[b * nn + i + j * n] = A[b * nn + j + i * n];
                cr_assert_eq(sg_set_memspace(gpu, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
                for (int pass = 0; pass < 2; pass++) { /* clean, then Inf / NaN at (0, n−1) of matrix 1 */
                    if (pass) A[nn + (n - 1) * n] = t == SG_F32 ? INFINITY : NAN;
                    buf ac = bnew((sg_dtype)t, B, n, n, 0, 0), wcb = bnew((sg_dtype)t, B, n, 1, 0, 0),
                        ag = bnew((sg_dtype)t, B, n, n, 0, dev), wgb = bnew((sg_dtype)t, B, n, 1, 0, dev);
                    bset(&ac, A), bset(&ag, A);
                    cr_assert_eq(sg_set_check_finite(cpu, !pass), SG_OK);
                    cr_assert_eq(sg_set_check_finite(gpu, !pass), SG_OK);
                    const sg_status sc = sg_eigh(cpu, bm(&ac), bm(&wcb), NULL), sgs = sg_eigh(gpu, bm(&ag), bm(&wgb), NULL);
                    cr_assert_eq(sg_set_check_finite(cpu, 1), SG_OK);
                    cr_assert_eq(sg_set_check_finite(gpu, 1), SG_OK);
                    cr_expect_eq(sc, SG_OK, "cpu %s n=%lld pass %d: %s", dn((sg_dtype)t), (long long)n, pass, sg_last_error(cpu));
                    cr_expect_eq(sgs, SG_OK, "gpu %s n=%lld %s pass %d: %s", dn((sg_dtype)t), (long long)n,
                                 dev ? "device" : "host", pass, sg_last_error(gpu));
                    if (sc == SG_OK && sgs == SG_OK) {
                        bget(&wcb, wc), bget(&wgb, wg);
                        double e = 0, m = 0;
                        for (int64_t i = 0; i < B * n; i++) e = fmax(e, fabs(wg[i] - wc[i])), m = fmax(m, fabs(wc[i]));
                        cr_expect_leq(e, tol_of((sg_dtype)t) * fmax(1, m), "eigh %s n=%lld %s pass %d: %g from the CPU",
                                      dn((sg_dtype)t), (long long)n, dev ? "device" : "host", pass, e);
                    }
                    bfree(&ac), bfree(&wcb), bfree(&ag), bfree(&wgb);
                }
                free(A), free(wc), free(wg);
            }
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
}

/* Finite inputs near the ends of the range: A scaled by 1e±30 (f32: squares overflow / underflow) or
   1e±250 (f64). The CPU reference handles these (cpu_linalg::eigh_extreme_scales_match_syevd); the GPU
   must give its answer: the solvers, the QR-first path's Householder scaling, the rank cutoff, 1/σ in
   lstsq (X ~ 1/scale, representable). Every op with a scale-free or scaling result. */
Test(gpu_parity, extreme_scales_match_cpu)
{
    NEED_GPU();
    static const int64_t SH[][2] = {{6, 6}, {40, 40}, {40, 5}, {5, 40}};
    static const double SC[2][2] = {{1e30, 1e-30}, {1e250, 1e-250}};
    static const int OPS[] = {CO_EIGH, CO_SVD, CO_RANK, CO_NULL, CO_PROJ, CO_LSTSQ, CO_NUCLEAR};
    const int64_t B = 3, kx = 2;
    for (int t = SG_F32; t <= SG_F64; t++)
        for (int si = 0; si < 2; si++)
            for (size_t sh = 0; sh < sizeof SH / sizeof SH[0]; sh++) {
                const int64_t m = SH[sh][0], n = SH[sh][1];
                const double sc = SC[t][si];
                tu_rng r = tu_seed(950 + sh);
                co_in c = co_make(&r, B, m, n, kx, -2, 4);
                for (int64_t i = 0; i < B * m * n; i++) c.A[i] *= sc;
                for (int64_t i = 0; i < B * n * n; i++) c.As[i] *= sc;
                char what[32];
                snprintf(what, sizeof what, "scale %g", sc);
                cr_assert_eq(sg_set_memspace(gpu, (sh & 1) ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
                for (size_t oi = 0; oi < sizeof OPS / sizeof OPS[0]; oi++)
                    co_parity(OPS[oi], (sg_dtype)t, sh & 1, B, m, n, kx, &c, 1e-300, what, NULL);
                co_free(&c);
            }
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
}

/* Structured inputs where solvers and the custom kernels take their special branches: the zero matrix
   (σ = 0: rank 0, tol 0), the identity (all σ tied), a diagonal with repeated and zero entries (already
   converged Jacobi, exhausted Householder columns), rank one (u vᵀ), and a matrix with a zero column and
   duplicated columns. Every forward op against the CPU, in each solver regime, host and device memory. */
Test(gpu_parity, structured_inputs_match_cpu)
{
    NEED_GPU();
    static const int64_t SH[][2] = {{6, 6}, {7, 4}, {40, 40}, {40, 5}, {5, 40}};
    static const int OPS[] = {CO_EIGH, CO_SVD, CO_RANK, CO_NULL, CO_PROJ, CO_LSTSQ, CO_NUCLEAR};
    enum { ZERO, EYE, DIAG, RANK1, COLS, KINDS };
    static const char *KN[KINDS] = {"zero", "identity", "diagonal with ties", "rank one",
                                    "zero and duplicate columns"};
    const int64_t kx = 2, B = KINDS;
    for (int t = SG_F32; t <= SG_F64; t++)
        for (size_t sh = 0; sh < sizeof SH / sizeof SH[0]; sh++) {
            const int64_t m = SH[sh][0], n = SH[sh][1], mx = m > n ? m : n;
            tu_rng r = tu_seed(970 + sh);
            co_in c = co_make(&r, B, m, n, kx, 0, 1); /* A, As overwritten below; X kept */
            double *u = malloc(sizeof(double) * (size_t)mx), *v = malloc(sizeof(double) * (size_t)mx);
            cr_assert(u && v);
            for (int kind = 0; kind < KINDS; kind++) { /* matrix `kind`: A (m×n) and As (n×n, symmetric) */
                double *a = c.A + kind * m * n, *s = c.As + kind * n * n;
                tu_fill_normal(&r, u, mx), tu_fill_normal(&r, v, mx);
                for (int64_t j = 0; j < n; j++)
                    for (int64_t i = 0; i < mx; i++) {
                        /* diagonal: 1 for the identity, 2, 1, 0, 2, 1, 0, ... for DIAG */
                        const double dg = i != j ? 0 : kind == EYE ? 1 : kind == DIAG ? (double)(2 - (i % 3)) : 0;
                        if (i < m) a[i + j * m] = kind == RANK1 ? u[i] * v[j] : dg;
                        if (i < n) s[i + j * n] = kind == RANK1 ? u[i] * u[j] : dg;
                    }
                if (kind == COLS) { /* A: random columns, column 1 zero, every third a copy of column 0 */
                    tu_fill_normal(&r, a, m * n);
                    for (int64_t j = 0; j < n; j++)
                        for (int64_t i = 0; i < m; i++) a[i + j * m] = j == 1 ? 0 : j % 3 == 2 ? a[i] : a[i + j * m];
                    for (int64_t j = 0; j < n; j++) /* As: the Gram matrix of A's columns (same defects) */
                        for (int64_t i = 0; i < n; i++) {
                            double g = 0;
                            for (int64_t l = 0; l < m; l++) g += a[l + i * m] * a[l + j * m];
                            s[i + j * n] = g;
                        }
                }
            }
            cr_assert_eq(sg_set_memspace(gpu, (sh & 1) ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
            for (size_t oi = 0; oi < sizeof OPS / sizeof OPS[0]; oi++)
                co_parity(OPS[oi], (sg_dtype)t, sh & 1, B, m, n, kx, &c, 1, "structured", KN);
            co_free(&c);
            free(u), free(v);
        }
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
}

/* Finite inputs whose eigen/singular values do not fit the dtype (matrix 1 = c·ones with c = max/2: ‖A‖ =
   c·√(mn) or c·n), and a lstsq whose solution does not (σ_min 1e-5 / 1e-10 kept by the tolerance, B 1e36 /
   1e300): SG_ERR_DOMAIN naming matrix 1 and saying "overflow", on the CPU and the GPU alike. Before, the
   CPU called the first a LAPACK fault and the GPU went on from σmax = inf (rank 0, a full nullspace), and
   both returned the overflowed solution as NaN with SG_OK. With the input check off the lstsq solution is
   not inspected (B's NaN/Inf propagate): SG_OK on both. */
Test(gpu_parity, overflowing_results_are_domain_errors)
{
    NEED_GPU();
    static const int64_t SH[][2] = {{6, 6}, {40, 40}, {40, 5}};
    static const int OPS[] = {CO_EIGH, CO_SVD, CO_RANK, CO_NULL, CO_PROJ, CO_LSTSQ};
    const int64_t B = 3, bad = 1, kx = 2;
    for (int t = SG_F32; t <= SG_F64; t++)
        for (size_t sh = 0; sh < sizeof SH / sizeof SH[0]; sh++) {
            const int64_t m = SH[sh][0], n = SH[sh][1], k = m < n ? m : n, mx = m > n ? m : n;
            const double c = (t == SG_F32 ? 3.4028234663852886e38 : 1.7976931348623157e308) / 2;
            tu_rng r = tu_seed(970 + sh);
            co_in in = co_make(&r, B, m, n, kx, -2, 4);
            for (int64_t i = 0; i < m * n; i++) in.A[bad * m * n + i] = c;
            for (int64_t i = 0; i < n * n; i++) in.As[bad * n * n + i] = c;
            const int dev = (int)(sh & 1);
            cr_assert_eq(sg_set_memspace(gpu, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
            int64_t *ig = malloc(sizeof(int64_t) * (size_t)B), *ic = malloc(sizeof(int64_t) * (size_t)B);
            cr_assert(ig && ic);
            for (size_t oi = 0; oi < sizeof OPS / sizeof OPS[0]; oi++) {
                const int op = OPS[oi];
                if (co_square(op) && m != n) continue;
                const int64_t rows = co_square(op) ? n : m;
                const double *src = co_square(op) ? in.As : in.A;
                const sg_status sc = co_run(cpu, op, (sg_dtype)t, 0, B, rows, n, kx, src, in.X, in.oc, ic);
                const int64_t fc = sg_failed_index(cpu);
                cr_expect(sc == SG_ERR_DOMAIN && fc == bad && strstr(sg_last_error(cpu), "overflow"),
                          "CPU %s %s %lld×%lld: %s, index %lld (%s)", CO_NAME[op], dn((sg_dtype)t), (long long)rows,
                          (long long)n, sg_status_string(sc), (long long)fc, sg_last_error(cpu));
                const sg_status sg = co_run(gpu, op, (sg_dtype)t, dev, B, rows, n, kx, src, in.X, in.og, ig);
                const int64_t fg = sg_failed_index(gpu);
                cr_expect(sg == SG_ERR_DOMAIN && fg == bad && strstr(sg_last_error(gpu), "overflow"),
                          "GPU %s %s %lld×%lld dev %d: %s, index %lld (%s)", CO_NAME[op], dn((sg_dtype)t),
                          (long long)rows, (long long)n, dev, sg_status_string(sg), (long long)fg, sg_last_error(gpu));
            }
            /* lstsq: matrix 1 well inside the range, its solution not */
            double *s = malloc(sizeof(double) * (size_t)k);
            cr_assert(s);
            for (int64_t i = 0; i < k; i++) s[i] = i + 1 < k ? 1.0 : t == SG_F32 ? 1e-5 : 1e-10; /* tol ≤ 40·eps */
            tu_mat_with_singular_values(&r, m, n, s, in.A + bad * m * n);
            for (int64_t i = 0; i < mx * kx; i++) in.X[bad * mx * kx + i] = t == SG_F32 ? 1e36 : 1e300;
            for (int chk = 1; chk >= 0; chk--) {
                cr_assert_eq(sg_set_check_finite(cpu, chk), SG_OK);
                cr_assert_eq(sg_set_check_finite(gpu, chk), SG_OK);
                const sg_status sc = co_run(cpu, CO_LSTSQ, (sg_dtype)t, 0, B, m, n, kx, in.A, in.X, in.oc, ic);
                const int64_t fc = sg_failed_index(cpu);
                const sg_status sg = co_run(gpu, CO_LSTSQ, (sg_dtype)t, dev, B, m, n, kx, in.A, in.X, in.og, ig);
                const int64_t fg = sg_failed_index(gpu);
                const sg_status want = chk ? SG_ERR_DOMAIN : SG_OK;
                cr_expect(sc == want && (!chk || (fc == bad && strstr(sg_last_error(cpu), "solution"))),
                          "CPU lstsq %s %lld×%lld check %d: %s, index %lld (%s)", dn((sg_dtype)t), (long long)m,
                          (long long)n, chk, sg_status_string(sc), (long long)fc, sg_last_error(cpu));
                cr_expect(sg == want && (!chk || (fg == bad && strstr(sg_last_error(gpu), "solution"))),
                          "GPU lstsq %s %lld×%lld dev %d check %d: %s, index %lld (%s)", dn((sg_dtype)t),
                          (long long)m, (long long)n, dev, chk, sg_status_string(sg), (long long)fg, sg_last_error(gpu));
                cr_expect(ic[bad] == k && ig[bad] == k, "lstsq %s: rank %lld (GPU %lld), want %lld: σ_min is kept",
                          dn((sg_dtype)t), (long long)ic[bad], (long long)ig[bad], (long long)k);
                for (int64_t b = 0; b < B; b++) /* the others are solved and written, as on success */
                    if (b != bad)
                        cr_expect_leq(co_err(CO_LSTSQ, n, n * kx, in.og, in.oc, ig, ic, b, 1e-300), tol_of((sg_dtype)t),
                                      "lstsq %s check %d: matrix %lld differs from the CPU", dn((sg_dtype)t), chk,
                                      (long long)b);
            }
            cr_assert_eq(sg_set_check_finite(cpu, 1), SG_OK);
            cr_assert_eq(sg_set_check_finite(gpu, 1), SG_OK);
            free(s), free(ig), free(ic);
            co_free(&in);
        }
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
}

/* In place on the GPU gives the out-of-place bytes: eigh V = A (Jacobi and XsyevBatched sizes), lstsq
   X = B (k_lstsq reads column c of B before writing column c of X), project and project_basis Y = X; host
   and device memory, dense and padded, with the input check on (outputs staged behind the deferred scan)
   and off (kernels write user memory directly). */
Test(gpu_parity, in_place_matches_out_of_place)
{
    NEED_GPU();
    const int64_t B = 3, kx = 3;
    for (int dev = 0; dev <= 1; dev++)
        for (int pad = 0; pad <= 2; pad += 2)
            for (int chk = 0; chk <= 1; chk++)
                for (int64_t n = 8; n <= 40; n += 32) {
                    cr_assert_eq(sg_set_memspace(gpu, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
                    cr_assert_eq(sg_set_check_finite(gpu, chk), SG_OK);
                    double *a = tu_sym_batch(B, n, 900 + n), *x = malloc(sizeof(double) * (size_t)(B * n * kx)),
                           *got = malloc(sizeof(double) * (size_t)(B * n * n)),
                           *want = malloc(sizeof(double) * (size_t)(B * n * n));
                    tu_rng r = tu_seed(901);
                    tu_fill_normal(&r, x, B * n * kx);
                    const char *what = "";
                    for (int op = 0; op < 4; op++) {
                        const int64_t cols = op == 0 ? n : kx;
                        buf A = bnew(SG_F64, B, n, n, pad, dev), io = bnew(SG_F64, B, n, cols, pad, dev),
                            out = bnew(SG_F64, B, n, cols, pad, dev), w = bnew(SG_F64, B, n, 1, 0, dev),
                            Q = bnew(SG_F64, B, n, 2, pad, dev);
                        bset(&A, a);
                        bset(&io, op == 0 ? a : x);
                        double *q = malloc(sizeof(double) * (size_t)(B * n * 2));
                        for (int64_t b = 0; b < B; b++) /* Q: the first two unit vectors */
                            for (int64_t e = 0; e < n * 2; e++) q[b * n * 2 + e] = e == 0 || e == n + 1;
                        bset(&Q, q);
                        sg_status s1, s2;
                        if (op == 0) {
                            what = "eigh V = A";
                            s1 = sg_eigh(gpu, bm(&A), bm(&w), bm(&out));
                            s2 = sg_eigh(gpu, bm(&io), bm(&w), bm(&io));
                        } else if (op == 1) {
                            what = "lstsq X = B";
                            s1 = sg_lstsq(gpu, bm(&A), bm(&io), 0, -1, bm(&out), NULL);
                            s2 = sg_lstsq(gpu, bm(&A), bm(&io), 0, -1, bm(&io), NULL);
                        } else if (op == 2) {
                            what = "project Y = X";
                            s1 = sg_project(gpu, bm(&A), bm(&io), SG_PROJ_ROW, 0, 1e-3, bm(&out));
                            s2 = sg_project(gpu, bm(&A), bm(&io), SG_PROJ_ROW, 0, 1e-3, bm(&io));
                        } else {
                            what = "project_basis Y = X";
                            s1 = sg_project_basis(gpu, bm(&Q), bm(&io), 1, bm(&out));
                            s2 = sg_project_basis(gpu, bm(&Q), bm(&io), 1, bm(&io));
                        }
                        cr_expect_eq(s1, SG_OK, "%s out of place: %s", what, sg_last_error(gpu));
                        cr_expect_eq(s2, SG_OK, "%s: %s", what, sg_last_error(gpu));
                        bget(&out, want);
                        bget(&io, got);
                        cr_expect(memcmp(got, want, sizeof(double) * (size_t)(B * n * cols)) == 0,
                                  "%s differs from out of place (n %lld, %s memory, pad %d, check %d)", what,
                                  (long long)n, dev ? "device" : "host", pad, chk);
                        free(q);
                        bfree(&A), bfree(&io), bfree(&out), bfree(&w), bfree(&Q);
                    }
                    free(a), free(x), free(got), free(want);
                }
    cr_assert_eq(sg_set_check_finite(gpu, 1), SG_OK);
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
}

/* Contexts are independent: four threads, each with its own CUDA context (streams, pinned lanes, scratch
   pool, cuSOLVER handle), stream host batches through small chunks (both lanes busy) and run on device
   memory at once; every result matches a context of the same settings run alone (to 1e-12: a shared
   buffer or handle would mix matrices of different threads, far beyond that). */
typedef struct {
    const double *a, *want_w, *want_x;
    int64_t n, B;
    int dev, fails;
    char msg[256];
} ctx_job;
static void ctx_job_run(sg_ctx *c, const double *a, int64_t n, int64_t B, int dev, double *w, double *x)
{
    buf A = bnew(SG_F64, B, n, n, 0, dev), W = bnew(SG_F64, B, n, 1, 0, dev), X = bnew(SG_F64, B, n, 2, 0, dev),
        Bm = bnew(SG_F64, B, n, 2, 0, dev);
    bset(&A, a);
    bset(&Bm, a); /* the first two columns of each A */
    sg_set_memspace(c, dev ? SG_MEM_DEVICE : SG_MEM_HOST);
    if (sg_eigh(c, bm(&A), bm(&W), NULL) != SG_OK || sg_lstsq(c, bm(&A), bm(&Bm), 0, -1, bm(&X), NULL) != SG_OK)
        fprintf(stderr, "ctx_job: %s\n", sg_last_error(c)), w[0] = x[0] = NAN;
    else
        bget(&W, w), bget(&X, x);
    sg_set_memspace(c, SG_MEM_HOST);
    bfree(&A), bfree(&W), bfree(&X), bfree(&Bm);
}
static void *ctx_thread(void *p)
{
    ctx_job *j = p;
    sg_ctx *c;
    if (sg_create(&c, SG_BACKEND_CUDA) != SG_OK) {
        snprintf(j->msg, sizeof j->msg, "sg_create failed");
        j->fails++;
        return NULL;
    }
    sg_set_chunk_bytes(c, 32 << 10);
    double *w = malloc(sizeof(double) * (size_t)(j->B * j->n)), *x = malloc(sizeof(double) * (size_t)(j->B * j->n * 2));
    for (int it = 0; it < 3; it++) {
        ctx_job_run(c, j->a, j->n, j->B, (it + j->dev) & 1, w, x);
        double ew = 0, ex = 0;
        for (int64_t e = 0; e < j->B * j->n; e++) ew = fmax(ew, fabs(w[e] - j->want_w[e]));
        for (int64_t e = 0; e < j->B * j->n * 2; e++) ex = fmax(ex, fabs(x[e] - j->want_x[e]));
        if (!(ew <= 1e-12 && ex <= 1e-12)) {
            snprintf(j->msg, sizeof j->msg, "iteration %d (%s memory): eigenvalues off by %.3g, lstsq by %.3g", it,
                     ((it + j->dev) & 1) ? "device" : "host", ew, ex);
            j->fails++;
        }
    }
    free(w), free(x);
    sg_destroy(c);
    return NULL;
}
Test(gpu_parity, contexts_on_threads_are_independent)
{
    NEED_GPU();
    enum { NT = 4 };
    const int64_t B = 12;
    ctx_job jobs[NT];
    double *mem[NT][3];
    sg_ctx *ref;
    cr_assert_eq(sg_create(&ref, SG_BACKEND_CUDA), SG_OK);
    cr_assert_eq(sg_set_chunk_bytes(ref, 32 << 10), SG_OK);
    for (int t = 0; t < NT; t++) {
        const int64_t n = t % 2 ? 40 : 8; /* syevjBatched and XsyevBatched */
        mem[t][0] = tu_sym_batch(B, n, 1200 + t);
        for (int64_t b = 0; b < B; b++) /* well conditioned for lstsq: shift the spectrum to [3, 7] */
            for (int64_t i = 0; i < n; i++) mem[t][0][b * n * n + i * (n + 1)] += 5;
        mem[t][1] = malloc(sizeof(double) * (size_t)(B * n));
        mem[t][2] = malloc(sizeof(double) * (size_t)(B * n * 2));
        ctx_job_run(ref, mem[t][0], n, B, 0, mem[t][1], mem[t][2]);
        cr_assert(!isnan(mem[t][1][0]), "reference run failed");
        jobs[t] = (ctx_job){mem[t][0], mem[t][1], mem[t][2], n, B, t & 1, 0, ""};
    }
    sg_destroy(ref);
    pthread_t th[NT];
    for (int t = 0; t < NT; t++) cr_assert_eq(pthread_create(&th[t], NULL, ctx_thread, &jobs[t]), 0);
    for (int t = 0; t < NT; t++) cr_assert_eq(pthread_join(th[t], NULL), 0);
    for (int t = 0; t < NT; t++) {
        cr_expect_eq(jobs[t].fails, 0, "thread %d (n %lld): %d failures, last: %s", t, (long long)jobs[t].n, jobs[t].fails,
                     jobs[t].msg);
        free(mem[t][0]), free(mem[t][1]), free(mem[t][2]);
    }
}

/* A projection whose Y overflows (X near the largest value: the coefficient vᵀx = √n·x_i is beyond it) is
   SG_ERR_DOMAIN naming the matrix on both backends with the input check on (the kernels' SG_PROJ_OVER), and
   SG_OK with it off; project (A = a row of ones: V_r = (1,…,1)/√n) and project_basis (Q's first column
   that vector, its second zero) on the tile and the chunked plans, host and device memory. */
Test(gpu_parity, projection_overflow_is_a_domain_error)
{
    NEED_GPU();
    const int64_t B = 3, bad = 1, kx = 2;
    for (int t = SG_F32; t <= SG_F64; t++)
        for (int64_t n = 6; n <= 40; n += 34)
            for (int dev = 0; dev <= 1; dev++)
                for (int chk = 1; chk >= 0; chk--) {
                    const double c = (t == SG_F32 ? 3.4028234663852886e38 : 1.7976931348623157e308) / 2;
                    double *a = malloc(sizeof(double) * (size_t)(B * n)), *q = calloc((size_t)(B * n * 2), sizeof(double)),
                           *x = malloc(sizeof(double) * (size_t)(B * n * kx));
                    for (int64_t b = 0; b < B; b++)
                        for (int64_t i = 0; i < n; i++) {
                            a[b * n + i] = 1, q[b * n * 2 + i] = 1 / sqrt((double)n);
                            for (int64_t j = 0; j < kx; j++) x[b * n * kx + i + j * n] = b == bad ? c : 0.5 + i - j;
                        }
                    for (int p = 0; p < 2; p++) {
                        sg_status st[2];
                        int64_t fi[2];
                        for (int g = 0; g < 2; g++) {
                            sg_ctx *cx = g ? gpu : cpu;
                            const int d = g && dev;
                            cr_assert_eq(sg_set_check_finite(cx, chk), SG_OK);
                            if (g) cr_assert_eq(sg_set_memspace(gpu, dev ? SG_MEM_DEVICE : SG_MEM_HOST), SG_OK);
                            buf A = bnew((sg_dtype)t, B, 1, n, 0, d), Q = bnew((sg_dtype)t, B, n, 2, 0, d),
                                X = bnew((sg_dtype)t, B, n, kx, 0, d), Y = bnew((sg_dtype)t, B, n, kx, 0, d);
                            bset(&A, a), bset(&Q, q), bset(&X, x);
                            st[g] = p ? sg_project_basis(cx, bm(&Q), bm(&X), 0, bm(&Y))
                                      : sg_project(cx, bm(&A), bm(&X), SG_PROJ_ROW, 0, -1, bm(&Y));
                            fi[g] = sg_failed_index(cx);
                            const char *want = chk ? "Y of matrix 1 overflows" : "";
                            cr_expect(st[g] == (chk ? SG_ERR_DOMAIN : SG_OK) && (!chk || fi[g] == bad) &&
                                          strstr(sg_last_error(cx), want),
                                      "%s %s %s n=%lld dev %d check %d: %s, index %lld (%s)", g ? "GPU" : "CPU",
                                      p ? "project_basis" : "project", dn((sg_dtype)t), (long long)n, d, chk,
                                      sg_status_string(st[g]), (long long)fi[g], sg_last_error(cx));
                            bfree(&A), bfree(&Q), bfree(&X), bfree(&Y);
                        }
                    }
                    free(a), free(q), free(x);
                }
    cr_assert_eq(sg_set_check_finite(cpu, 1), SG_OK);
    cr_assert_eq(sg_set_check_finite(gpu, 1), SG_OK);
    cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
}

#ifdef SG_HAVE_CUDA
/* Device copies of an op's operands (same layout), for the op table in device-memory mode. */
static void op_to_device(const tu_op_args *h, tu_op_args *d)
{
    *d = *h;
    for (int i = 0; i < 2 * TU_OP_IO; i++) {
        const sg_mat *src = i < TU_OP_IO ? &h->in[i] : &h->out[i - TU_OP_IO];
        sg_mat *dst = i < TU_OP_IO ? &d->in[i] : &d->out[i - TU_OP_IO];
        if (!src->data) continue;
        size_t bytes = sizeof(double) * (size_t)(h->B * src->rows * src->cols);
        cr_assert_eq(cudaMalloc(&dst->data, bytes), cudaSuccess);
        cr_assert_eq(cudaMemcpy(dst->data, src->data, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    }
    cr_assert_eq(cudaMalloc((void **)&d->iv, sizeof(int64_t) * (size_t)h->B), cudaSuccess);
}
static void op_free_device(tu_op_args *d)
{
    for (int i = 0; i < TU_OP_IO; i++) cudaFree(d->in[i].data), cudaFree(d->out[i].data);
    cudaFree(d->iv);
}
#endif

/* sg_set_progress on the CUDA backend, every op: host batches in one-matrix chunks report as chunks
   retire (both lanes, nested solver calls of the gradient ops muted), device memory keeps the contract
   (reports only where the call waits), a failed call ends without 1.0, and the results are the bytes
   of a call without progress. */
Test(gpu_parity, progress_reports_every_op)
{
    NEED_GPU();
    enum { B = 12 };
    tu_rng r = tu_seed(8);
    tu_prog p;
    for (int o = 0; o < tu_nops; o++) {
        const tu_op *op = &tu_ops[o];
        tu_op_args a, ref, d;
        tu_op_make(op, gpu, B, &r, &a);
        tu_op_clone(op, &a, &ref);
        cr_assert_eq(sg_set_progress(gpu, NULL, 0, NULL), SG_OK);
        cr_assert_eq(sg_set_chunk_bytes(gpu, 1), SG_OK);
        cr_assert_eq(op->call(&ref), SG_OK, "%s: %s", op->name, sg_last_error(gpu));
        tu_prog_start(&p);
        cr_assert_eq(sg_set_progress(gpu, tu_prog_cb, 0, &p), SG_OK);
        sg_status st = op->call(&a);
        cr_expect_eq(st, SG_OK, "%s: %s", op->name, sg_last_error(gpu));
        const char *bad = tu_prog_bad(&p, st == SG_OK);
        cr_expect_null(bad, "%s, host memory: %s", op->name, bad);
        cr_expect_geq(p.steps, B / 2, "%s, host memory in %d chunks: %d reports", op->name, B, p.steps);
        for (int i = 0; i < a.nout; i++)
            cr_expect(memcmp(a.out[i].data, ref.out[i].data, sizeof(double) * (size_t)(B * a.out[i].rows * a.out[i].cols)) == 0,
                      "%s: output %d with progress differs", op->name, i);
        cr_expect(memcmp(a.iv, ref.iv, sizeof(int64_t) * B) == 0, "%s: int64 output with progress differs", op->name);
        /* stop at the first report (a chunk has retired): no further chunk starts, those in flight finish */
        tu_op_fill_outputs(&a, 777);
        tu_prog_start(&p);
        p.stop_after = 1;
        st = op->call(&a);
        cr_expect_eq(st, SG_ERR_CANCELLED, "%s, stopped: %s (%s)", op->name, sg_status_string(st), sg_last_error(gpu));
        bad = tu_prog_bad(&p, 0);
        cr_expect_null(bad, "%s, stopped: %s", op->name, bad);
        cr_expect_eq(p.calls, 1, "%s: %d reports after the stop request", op->name, p.calls);
        cr_expect(!tu_op_touched(&a, B - 1, B, 777), "%s: the last chunk ran after the stop", op->name);
        tu_prog_start(&p);
        cr_expect_eq(op->call(&a), SG_OK, "%s after a stop: %s", op->name, sg_last_error(gpu));
        for (int i = 0; i < a.nout; i++)
            cr_expect(memcmp(a.out[i].data, ref.out[i].data, sizeof(double) * (size_t)(B * a.out[i].rows * a.out[i].cols)) == 0,
                      "%s: output %d after a stop differs", op->name, i);
#ifdef SG_HAVE_CUDA
        op_to_device(&a, &d);
        cr_assert_eq(sg_set_memspace(gpu, SG_MEM_DEVICE), SG_OK);
        tu_prog_start(&p);
        st = op->call(&d);
        cr_expect_eq(st, SG_OK, "%s, device memory: %s", op->name, sg_last_error(gpu));
        bad = tu_prog_bad(&p, st == SG_OK);
        cr_expect_null(bad, "%s, device memory: %s", op->name, bad);
        cr_assert_eq(sg_set_memspace(gpu, SG_MEM_HOST), SG_OK);
        op_free_device(&d);
#else
        (void)d;
#endif
        tu_op_free_outputs(&ref);
        tu_op_free(&a);
    }
    /* a failure in the middle of the batch: matrix 7 holds a NaN (input check off: the solver reports it) */
    tu_op_args a;
    tu_op_make(&tu_ops[0], gpu, B, &r, &a);
    ((double *)a.in[0].data)[7 * TU_OP_N * TU_OP_N] = NAN;
    cr_assert_eq(sg_set_check_finite(gpu, 0), SG_OK);
    tu_prog_start(&p);
    cr_expect_eq(tu_ops[0].call(&a), SG_ERR_NOCONV, "%s", sg_last_error(gpu));
    cr_expect_eq(sg_failed_index(gpu), 7);
    const char *bad = tu_prog_bad(&p, 0);
    cr_expect_null(bad, "failed eigh: %s", bad);
    cr_expect_geq(p.steps, 4, "failed eigh: %d reports before matrix 7's chunk", p.steps);
    tu_op_free(&a);
    sg_set_check_finite(gpu, 1);
    sg_set_progress(gpu, NULL, 0, NULL);
    sg_set_chunk_bytes(gpu, 0);
}

/* The CUDA runtime does not survive fork. A forked child that uses its parent's CUDA context gets a clear
   SG_ERR_CUDA from every call that would reach the runtime, before it does (it could fail or hang in the
   driver); destroying the context there frees only host memory; the CPU backend works in the child. */
Test(gpu_parity, cuda_context_from_before_fork_is_refused_in_the_child)
{
    NEED_GPU();
    double a[4 * 9], w[4 * 3];
    for (int i = 0; i < 36; i++) a[i] = (double)((i * 5) % 7) - 3;
    sg_mat A = sg_mat_dense(a, SG_F64, 4, 3, 3), W = sg_mat_dense(w, SG_F64, 4, 3, 1);
    cr_assert_eq(sg_eigh(gpu, &A, &W, NULL), SG_OK, "%s", sg_last_error(gpu));
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork failed");
    if (pid == 0) {
        alarm(30);
        size_t held = 1;
        int bad = sg_eigh(gpu, &A, &W, NULL) != SG_ERR_CUDA ? 10
                  : !strstr(sg_last_error(gpu), "created before fork()") ? 11
                  : sg_cache_held(gpu, &held) != SG_ERR_CUDA || held != 0 ? 12
                  : sg_set_cache_bytes(gpu, 0) != SG_ERR_CUDA ? 13
                  : sg_eigh(cpu, &A, &W, NULL) != SG_OK ? 14 : 0;
        sg_destroy(gpu);
        _exit(bad);
    }
    int st = 0;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "child: status %d (10: eigh not refused, 11: message, 12/13: cache calls, 14: CPU eigh; -14: hung)",
              WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
    cr_expect_eq(sg_eigh(gpu, &A, &W, NULL), SG_OK, "the parent's context still works: %s", sg_last_error(gpu));
}

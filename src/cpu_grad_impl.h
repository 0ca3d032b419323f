/* CPU gradients, one dtype: included twice by cpu_grad.c with T (float/double), FN(x) (x##_s / x##_d),
   CB(x) (cblas_s##x / cblas_d##x), INVGAP (sg_inv_gap_s / _d), INVGAP_SQ (sg_inv_gap_s_sq / _d_sq), SG_T (SG_F32 / SG_F64).
   Arithmetic is in T (as on the GPU); scalar functions f are evaluated in double and rounded to T.
   Scratch is dense column-major in the calling thread's slice of one workspace; inputs are never written. */

#define AT(M, b) ((T *)(M)->data + (int64_t)(b) * sg_stride_of(M))
#include "cpu_gemm_impl.h"
#define GEMM(ta, tb, m, n, k, al, a, lda, b_, ldb, be, c, ldc)                                          \
    FN(gemm)(ta, tb, (int)(m), (int)(n), (int)(k), (T)(al), a, (int)(lda), b_, (int)(ldb), (T)(be), c, (int)(ldc))

#ifndef SG_GRAD_LD_FITS
#define SG_GRAD_LD_FITS
/* Every ld that GEMM sees must fit BLAS's int (checked before any work, like the sizes; m may be NULL for
   an absent optional argument). */
static int ld_fits(sg_ctx *ctx, const char *op, const sg_mat *m, const char *name)
{
    char what[96];
    if (!m) return 1;
    snprintf(what, sizeof what, "%s: %s ld", op, name);
    return sg_int_fits(ctx, m->ld, what);
}
#endif

/* Workspace of nt slices of per elements; NULL after recording SG_ERR_ALLOC. */
static T *FN(ws_alloc)(sg_ctx *ctx, const char *op, size_t per, int nt)
{
    T *ws = malloc(sizeof(T) * per * (size_t)nt);
    if (!ws) sg_fail(ctx, SG_ERR_ALLOC, -1, "%s: cannot allocate %zu bytes of workspace", op, sizeof(T) * per * nt);
    return ws;
}

/* out = (X + Xᵀ)/2: gradients of symmetric inputs are symmetric to the last bit. Returns 0 on inf/NaN. */
static int FN(sym_out)(const T *X, int64_t n, T *out, int64_t ldo)
{
    int ok = 1;
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < n; i++) {
            T x = (X[i + j * n] + X[j + i * n]) * (T)0.5;
            out[i + j * ldo] = x;
            ok &= isfinite(x) != 0;
        }
    return ok;
}

#include "cpu_finite_impl.h"

/* out = V diag(d) Vᵀ, symmetrized. X, Y: n×n scratch. */
static int FN(vdv)(int64_t n, const T *v, int64_t ldv, const T *d, T *X, T *Y, T *out, int64_t ldo)
{
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < n; i++) X[i + j * n] = v[i + j * ldv] * d[j];
    GEMM(0, 1, n, n, n, 1, X, n, v, ldv, 0, Y, n);
    return FN(sym_out)(Y, n, out, ldo);
}

/* Every eigenvalue must be in f's domain with f (and f' when der) finite in T; reports the first
   offending matrix. Runs before any output is written. */
static sg_status FN(check_dom)(sg_ctx *ctx, const char *op, const sg_fn *fn, const sg_mat *W, int der)
{
    for (int64_t b = 0; b < W->batch; b++) {
        const T *w = AT(W, b);
        for (int64_t i = 0; i < W->rows; i++) {
            double x = (double)w[i];
            if (!fn_dom(fn, x))
                return sg_fail(ctx, SG_ERR_DOMAIN, b, "%s: eigenvalue λ%lld = %g of matrix %lld is outside the domain of %s",
                               op, (long long)i, x, (long long)b, fn_name(fn));
            if (!isfinite((T)fn_val(fn, x)) || (der && !isfinite((T)fn_der(fn, x))))
                return sg_fail(ctx, SG_ERR_DOMAIN, b, "%s: %s%s is not finite at eigenvalue λ%lld = %g of matrix %lld", op,
                               fn_name(fn), der ? " or its derivative" : "", (long long)i, x, (long long)b);
        }
    }
    return SG_OK;
}

/* ---- eigh backward ---------------------------------------------------------------------------
   gA = V (diag(gW) + skew(VᵀgV) ∘ F) Vᵀ, F_ij ≈ 1/(λj − λi) per the degeneracy mode. */
static sg_status FN(eigh_bwd)(sg_ctx *ctx, const sg_mat *W, const sg_mat *V, const sg_mat *gW, const sg_mat *gV,
                              sg_degen mode, double param, sg_mat *gA)
{
    const int64_t n = V->rows, nb = V->batch;
    if (n > INT32_MAX) return sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "eigh_backward: n = %lld exceeds BLAS int", (long long)n);
    if (!ld_fits(ctx, "eigh_backward", V, "V") || !ld_fits(ctx, "eigh_backward", gV, "gV")) return SG_ERR_UNSUPPORTED;
    const T prm = (T)sg_degen_param((int)mode, param, SG_T == SG_F32);
    const int nt = sg_cpu_threads(ctx, nb);
    const size_t per = 2 * (size_t)n * (size_t)n;
    T *ws = FN(ws_alloc)(ctx, "eigh_backward", per, nt);
    if (!ws) return SG_ERR_ALLOC;
    gfail f = {-1, SG_OK, ""};
    sg_ticker tk_ = SG_TICK_INIT(ctx, nb);
#pragma omp parallel num_threads(nt)
    {
        T *M = ws + per * (size_t)omp_get_thread_num(), *G = M + n * n;
#pragma omp for schedule(dynamic)
        for (int64_t b = 0; b < nb; b++) {
            if (sg_tick(&tk_)) continue;
            const T *w = AT(W, b), *v = AT(V, b);
            if (gV) GEMM(1, 0, n, n, n, 1, v, V->ld, AT(gV, b), gV->ld, 0, M, n); /* M = VᵀgV */
            T scale = 0; /* max|λ|: MASK's tolerance and LORENTZ's width are relative (scale-invariant) */
            for (int64_t i = 0; i < n; i++) scale = fabs(w[i]) > scale ? (T)fabs(w[i]) : scale;
            int64_t ti = -1, tj = -1;
            /* G is symmetric wherever F is finite: there F is antisymmetric to the bit (formulas.h), and so is
               skew(M), so the lower triangle is formed (half the F evaluations) and mirrored. A non-finite F (an
               exact tie in EXACT mode: +inf both ways) gets its mirror from its own F, as the full sweep (and the
               CUDA kernel) did. The first tie found is the one the full column-major sweep would find. */
            for (int64_t j = 0; j < n; j++) {
                G[j + j * n] = gW ? AT(gW, b)[j] : 0;
                for (int64_t i = j + 1; i < n; i++) {
                    T g = 0, gm = 0;
                    if (gV) { /* without gV the off-diagonal is exactly 0: no 0·inf at ties */
                        T F = INVGAP(w[i], w[j], 0, (int)mode, prm, scale);
                        g = gm = (M[i + j * n] - M[j + i * n]) * (T)0.5 * F;
                        if (!isfinite(F)) {
                            if (ti < 0) ti = i, tj = j;
                            gm = (M[j + i * n] - M[i + j * n]) * (T)0.5 * INVGAP(w[j], w[i], 1, (int)mode, prm, scale);
                        }
                    }
                    G[i + j * n] = g;
                    G[j + i * n] = gm;
                }
            }
            GEMM(0, 0, n, n, n, 1, v, V->ld, G, n, 0, M, n); /* M = V G */
            GEMM(0, 1, n, n, n, 1, M, n, v, V->ld, 0, G, n); /* G = V G Vᵀ */
            int ok = FN(sym_out)(G, n, AT(gA, b), gA->ld);
            if (ti >= 0 && mode == SG_DEGEN_EXACT)
                gfail_rec(&f, b, SG_ERR_DEGENERATE,
                          "eigh_backward: tied eigenvalues λ%lld = λ%lld = %g in matrix %lld give inf/NaN in exact mode "
                          "(use SG_DEGEN_MASK for gauge-invariant losses, or LORENTZ)",
                          (long long)ti, (long long)tj, (double)w[ti], (long long)b);
            else if (ti >= 0 || !ok)
                gfail_rec(&f, b, SG_ERR_DEGENERATE, "eigh_backward: non-finite gradient in matrix %lld (%s mode%s)",
                          (long long)b, mode_name(mode),
                          mode == SG_DEGEN_TAYLOR ? ": Taylor is infinite at a tie at 0 or for |λ| near underflow" : "");
        }
    }
    free(ws);
    return gfail_finish(ctx, &f);
}

/* X (r×k) = g_k Σ⁻¹ for the tall (W = U, r = m) or wide (W = V, r = n) term; with fold extra columns of a
   full W with cotangent g⊥, g_k − W⊥(g⊥ᵀW_k) first (F: fold×k scratch). */
static void FN(fold_div)(int64_t r, int64_t k, int64_t fold, const T *w, int64_t ldw, const T *g, int64_t ldg,
                         const T *s, T *F, T *X)
{
    for (int64_t c = 0; c < k; c++)
        for (int64_t i = 0; i < r; i++) X[i + c * r] = g[i + c * ldg];
    if (fold) {
        GEMM(1, 0, fold, k, r, 1, g + k * ldg, ldg, w, ldw, 0, F, fold);
        GEMM(0, 0, r, k, fold, -1, w + k * ldw, ldw, F, fold, 1, X, r);
    }
    for (int64_t c = 0; c < k; c++)
        for (int64_t i = 0; i < r; i++) X[i + c * r] /= s[c];
}

/* ---- SVD backward (PyTorch's svd_backward, real case, V instead of Vh) -------------------------
   Thin factors U_k, V_k. full_matrices: a tall A's extra columns U⊥ (a wide A's V⊥) are any basis of the
   complement, which A determines only through U⊥U⊥ᵀ = I − U_kU_kᵀ; their cotangent is folded into gU_k as
   −U⊥ gU⊥ᵀ U_k (Ionescu et al. 2015, prop. 2), the gradient of every loss invariant to that basis's choice
   (PyTorch drops gU⊥ instead, so a loss of the left nullspace U⊥ gets no gradient from it).
   G_jk = (a σk + σj d) / (σk² − σj²), a = skew(U_kᵀgU)_jk, d = skew(V_kᵀgV)_jk, skew(X) = X − Xᵀ,
   G_jj = gS_j. E = σk² − σj² is formed as ((σk−σj)/σmax)(σk/σmax + σj/σmax): no overflow for huge σ, and no
   cancellation near a tie (INVGAP_SQ). The mode acts on it through the singular part only (see below).
   gA = U_k G V_kᵀ + (I − U_kU_kᵀ) gU Σ⁻¹ V_kᵀ (m > n) or + U_k Σ⁻¹ gVᵀ (I − V_kV_kᵀ) (m < n). */
static sg_status FN(svd_bwd)(sg_ctx *ctx, const sg_mat *U, const sg_mat *S, const sg_mat *V, const sg_mat *gU,
                             const sg_mat *gS, const sg_mat *gV, sg_degen mode, double param, sg_mat *gA)
{
    const int64_t m = U->rows, n = V->rows, k = m < n ? m : n, nb = U->batch;
    if (m > INT32_MAX || n > INT32_MAX)
        return sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "svd_backward: %lld×%lld exceeds BLAS int", (long long)m, (long long)n);
    if (!ld_fits(ctx, "svd_backward", U, "U") || !ld_fits(ctx, "svd_backward", V, "V") ||
        !ld_fits(ctx, "svd_backward", gU, "gU") || !ld_fits(ctx, "svd_backward", gV, "gV") ||
        !ld_fits(ctx, "svd_backward", gA, "gA"))
        return SG_ERR_UNSUPPORTED;
    const T prm = (T)sg_degen_param((int)mode, param, SG_T == SG_F32);
    const int nt = sg_cpu_threads(ctx, nb);
    /* the fold: the complement's columns of a full U (tall) or V (wide) with a cotangent */
    const int64_t fold = m > n && gU && U->cols == m ? m - k : m < n && gV && V->cols == n ? n - k : 0;
    const size_t per = 3 * (size_t)k * k + (size_t)m * k + 2 * (size_t)n * k + (size_t)fold * k;
    T *ws = FN(ws_alloc)(ctx, "svd_backward", per, nt);
    if (!ws) return SG_ERR_ALLOC;
    gfail f = {-1, SG_OK, ""};
    sg_ticker tk_ = SG_TICK_INIT(ctx, nb);
#pragma omp parallel num_threads(nt)
    {
        T *P = ws + per * (size_t)omp_get_thread_num(), *Q = P + k * k, *G = Q + k * k, *X = G + k * k, *Y = X + m * k,
          *Z = Y + n * k, *F = Z + n * k;
#pragma omp for schedule(dynamic)
        for (int64_t b = 0; b < nb; b++) {
            if (sg_tick(&tk_)) continue;
            const T *u = AT(U, b), *v = AT(V, b), *s = AT(S, b);
            T *ga = AT(gA, b);
            if (gU) GEMM(1, 0, k, k, m, 1, u, U->ld, AT(gU, b), gU->ld, 0, P, k); /* P = U_kᵀ gU_k */
            if (gV) GEMM(1, 0, k, k, n, 1, v, V->ld, AT(gV, b), gV->ld, 0, Q, k); /* Q = V_kᵀ gV_k */
            T smax = 0;
            for (int64_t j = 0; j < k; j++) smax = s[j] > smax ? s[j] : smax;
            const T sc = smax > 0 ? smax : 1;
            int64_t tj = -1, tk = -1;
            for (int64_t c = 0; c < k; c++)
                for (int64_t r = 0; r < k; r++) {
                    T g = 0;
                    if (r == c) g = gS ? AT(gS, b)[r] : 0;
                    else if (gU || gV) {
                        T a = gU ? P[r + c * k] - P[c + r * k] : 0, d = gV ? Q[r + c * k] - Q[c + r * k] : 0;
                        T F = INVGAP_SQ(s[r], s[c], sc, r < c, (int)mode, prm); /* ≈ σmax²/(σc² − σr²), difference first */
                        if (!isfinite(F) && tj < 0) tj = r, tk = c;
                        /* a σc + σr d = ½(a+d)(σc+σr) + ½(a−d)(σc−σr): only the first part is singular at a
                           tie (and vanishes for losses invariant to joint rotations of tied pairs), so the
                           mode acts on it alone; the second is exactly ½(a−d)/(σr+σc), finite unless both 0. */
                        T sum = s[r] / sc + s[c] / sc, h = (a - d) * (T)0.5; /* scaled first: no overflow */
                        T g2 = sum > 0 ? h / sum : (mode == SG_DEGEN_EXACT ? h / sum : (T)0);
                        g = ((a + d) * (T)0.5 * sum * F + g2) / sc;
                    }
                    G[r + c * k] = g;
                }
            if (m > n && gU) {
                FN(fold_div)(m, k, fold, u, U->ld, AT(gU, b), gU->ld, s, F, X); /* X = gU Σ⁻¹ */
                GEMM(1, 0, k, k, m, 1, u, U->ld, X, m, 0, P, k);  /* P = U_kᵀ X */
                GEMM(0, 0, m, k, k, -1, u, U->ld, P, k, 1, X, m); /* X = (I − U_kU_kᵀ) gU Σ⁻¹ */
                GEMM(0, 0, m, k, k, 1, u, U->ld, G, k, 1, X, m);  /* X += U_k G */
                GEMM(0, 1, m, n, k, 1, X, m, v, V->ld, 0, ga, gA->ld);
            } else if (m < n && gV) {
                FN(fold_div)(n, k, fold, v, V->ld, AT(gV, b), gV->ld, s, F, Y); /* Y = gV Σ⁻¹ */
                GEMM(1, 0, k, k, n, 1, v, V->ld, Y, n, 0, Q, k);  /* Q = V_kᵀ Y */
                GEMM(0, 0, n, k, k, -1, v, V->ld, Q, k, 1, Y, n); /* Y = (I − V_kV_kᵀ) gV Σ⁻¹ */
                GEMM(0, 1, k, n, k, 1, G, k, v, V->ld, 0, Z, k);  /* Z = G V_kᵀ */
                for (int64_t r = 0; r < n; r++)
                    for (int64_t c = 0; c < k; c++) Z[c + r * k] += Y[r + c * n];
                GEMM(0, 0, m, n, k, 1, u, U->ld, Z, k, 0, ga, gA->ld);
            } else {
                GEMM(0, 0, m, k, k, 1, u, U->ld, G, k, 0, X, m); /* X = U_k G */
                GEMM(0, 1, m, n, k, 1, X, m, v, V->ld, 0, ga, gA->ld);
            }
            int ok = FN(all_finite)(ga, m, n, gA->ld);
            if (tj >= 0 && mode == SG_DEGEN_EXACT)
                gfail_rec(&f, b, SG_ERR_DEGENERATE,
                          "svd_backward: tied singular values σ%lld = σ%lld = %g in matrix %lld give inf/NaN in exact mode "
                          "(use SG_DEGEN_MASK for gauge-invariant losses, or LORENTZ)",
                          (long long)tj, (long long)tk, (double)s[tj], (long long)b);
            else if (tj >= 0 || !ok)
                gfail_rec(&f, b, SG_ERR_DEGENERATE,
                          "svd_backward: non-finite gradient in matrix %lld (%s mode): a tie, or σ = 0 with a "
                          "gU/gV term of a rectangular input (Σ⁻¹)",
                          (long long)b, mode_name(mode));
        }
    }
    free(ws);
    return gfail_finish(ctx, &f);
}

/* ---- matrix functions ------------------------------------------------------------------------- */
/* Eigendecomposition of the whole batch into dense temporaries (V optional). */
static sg_status FN(eig_tmp)(sg_ctx *ctx, const sg_mat *A, int want_v, T **Wt, T **Vt, sg_mat *wm, sg_mat *vm)
{
    const int64_t n = A->rows, nb = A->batch;
    *Wt = malloc(sizeof(T) * (size_t)(nb * n));
    *Vt = want_v ? malloc(sizeof(T) * (size_t)(nb * n * n)) : NULL;
    if (!*Wt || (want_v && !*Vt)) {
        free(*Wt), free(*Vt);
        *Wt = *Vt = NULL;
        return sg_fail(ctx, SG_ERR_ALLOC, -1, "eigendecomposition temporaries for %lld matrices of %lld×%lld",
                       (long long)nb, (long long)n, (long long)n);
    }
    *wm = sg_mat_dense(*Wt, SG_T, nb, n, 1);
    if (want_v) *vm = sg_mat_dense(*Vt, SG_T, nb, n, n);
    return sg_cpu_eigh(ctx, A, wm, want_v ? vm : NULL);
}

/* F = V f(Λ) Vᵀ. The domain is checked for the whole batch before F is written; W, V (optional) get the
   decomposition once every F is. */
static sg_status FN(matfunc)(sg_ctx *ctx, const sg_mat *A, const sg_fn *fn, sg_mat *F, sg_mat *W, sg_mat *V)
{
    const int64_t n = A->rows, nb = A->batch;
    if (n > INT32_MAX) return sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "matfunc: n exceeds BLAS int");
    T *Wt, *Vt, *ws = NULL;
    sg_mat wm, vm;
    sg_progress_phase(ctx, 0, SG_DECOMP_SHARE);
    sg_status st = FN(eig_tmp)(ctx, A, 1, &Wt, &Vt, &wm, &vm);
    if (st == SG_OK && sg_cancelled(ctx)) st = SG_ERR_CANCELLED; /* Wt, Vt are partly unset */
    if (st == SG_OK) st = FN(check_dom)(ctx, "matfunc", fn, &wm, 0);
    const int nt = sg_cpu_threads(ctx, nb);
    const size_t per = 2 * (size_t)n * n + (size_t)n;
    if (st == SG_OK && !(ws = FN(ws_alloc)(ctx, "matfunc", per, nt))) st = SG_ERR_ALLOC;
    if (st != SG_OK) {
        free(Wt), free(Vt);
        return st;
    }
    gfail f = {-1, SG_OK, ""};
    sg_progress_phase(ctx, SG_DECOMP_SHARE, 1);
    sg_ticker tk_ = SG_TICK_INIT(ctx, nb);
#pragma omp parallel num_threads(nt)
    {
        T *X = ws + per * (size_t)omp_get_thread_num(), *Y = X + n * n, *d = Y + n * n;
#pragma omp for schedule(dynamic)
        for (int64_t b = 0; b < nb; b++) {
            if (sg_tick(&tk_)) continue;
            const T *w = Wt + b * n;
            for (int64_t i = 0; i < n; i++) d[i] = (T)fn_val(fn, (double)w[i]);
            if (!FN(vdv)(n, Vt + b * n * n, n, d, X, Y, AT(F, b), F->ld))
                gfail_rec(&f, b, SG_ERR_DOMAIN, "matfunc: %s(A) overflows in matrix %lld", fn_name(fn), (long long)b);
        }
    }
    free(ws);
    if (f.st == SG_OK)
        for (int64_t b = 0; b < nb; b++) {
            if (W) memcpy(AT(W, b), Wt + b * n, sizeof(T) * (size_t)n);
            for (int64_t j = 0; V && j < n; j++)
                memcpy(AT(V, b) + j * V->ld, Vt + (b * n + j) * n, sizeof(T) * (size_t)n);
        }
    free(Wt), free(Vt);
    return gfail_finish(ctx, &f);
}

/* Daleckii–Krein: gA = V (L ∘ (Vᵀ sym(gF) V)) Vᵀ, L_ij = divided difference of f (f' on the diagonal
   and at ties, so exactly tied eigenvalues give the finite, exact gradient). */
static sg_status FN(matfunc_bwd)(sg_ctx *ctx, const sg_mat *W, const sg_mat *V, const sg_fn *fn, const sg_mat *gF,
                                 sg_mat *gA)
{
    const int64_t n = V->rows, nb = V->batch;
    if (n > INT32_MAX) return sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "matfunc_backward: n exceeds BLAS int");
    if (!ld_fits(ctx, "matfunc_backward", V, "V")) return SG_ERR_UNSUPPORTED;
    sg_status st = FN(check_dom)(ctx, "matfunc_backward", fn, W, 1);
    if (st != SG_OK) return st;
    const int nt = sg_cpu_threads(ctx, nb);
    const size_t per = 2 * (size_t)n * n;
    T *ws = FN(ws_alloc)(ctx, "matfunc_backward", per, nt);
    if (!ws) return SG_ERR_ALLOC;
    gfail f = {-1, SG_OK, ""};
    sg_ticker tk_ = SG_TICK_INIT(ctx, nb);
#pragma omp parallel num_threads(nt)
    {
        T *S = ws + per * (size_t)omp_get_thread_num(), *X = S + n * n;
#pragma omp for schedule(dynamic)
        for (int64_t b = 0; b < nb; b++) {
            if (sg_tick(&tk_)) continue;
            const T *w = AT(W, b), *v = AT(V, b), *g = AT(gF, b);
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < n; i++) S[i + j * n] = (g[i + j * gF->ld] + g[j + i * gF->ld]) * (T)0.5;
            GEMM(1, 0, n, n, n, 1, v, V->ld, S, n, 0, X, n); /* X = Vᵀ S */
            GEMM(0, 0, n, n, n, 1, X, n, v, V->ld, 0, S, n); /* S = Vᵀ S V */
            for (int64_t j = 0; j < n; j++)
                for (int64_t i = 0; i < n; i++) S[i + j * n] *= (T)fn_divdiff(fn, (double)w[i], (double)w[j]);
            GEMM(0, 0, n, n, n, 1, v, V->ld, S, n, 0, X, n); /* X = V S */
            GEMM(0, 1, n, n, n, 1, X, n, v, V->ld, 0, S, n); /* S = V S Vᵀ */
            if (!FN(sym_out)(S, n, AT(gA, b), gA->ld))
                gfail_rec(&f, b, SG_ERR_DOMAIN, "matfunc_backward: non-finite gradient in matrix %lld (%s)",
                          (long long)b, fn_name(fn));
        }
    }
    free(ws);
    return gfail_finish(ctx, &f);
}

/* ---- regularizers ----------------------------------------------------------------------------- */
/* SPECTRAL σ1² (grad 2σ1 u1 v1ᵀ) and NUCLEAR Σσ (grad U_k V_kᵀ, a subgradient when rank-deficient). A loss
   that overflows T is SG_ERR_DOMAIN for the first such matrix, every matrix written. gA is finite whenever
   the loss is (|2σ1 u v| ≤ 2σ1; U_k V_kᵀ within [−1, 1]), so it is not checked. */
static sg_status FN(reg_svd)(sg_ctx *ctx, sg_reg kind, const sg_mat *A, sg_mat *loss, sg_mat *gA)
{
    const int64_t m = A->rows, n = A->cols, k = m < n ? m : n, nb = A->batch;
    T *St = malloc(sizeof(T) * (size_t)(nb * k)), *Ut = NULL, *Vt = NULL;
    if (gA) Ut = malloc(sizeof(T) * (size_t)(nb * m * k)), Vt = malloc(sizeof(T) * (size_t)(nb * n * k));
    if (!St || (gA && (!Ut || !Vt))) {
        free(St), free(Ut), free(Vt);
        return sg_fail(ctx, SG_ERR_ALLOC, -1, "regularizer: SVD temporaries for %lld matrices", (long long)nb);
    }
    sg_mat sm = sg_mat_dense(St, SG_T, nb, k, 1), um = sg_mat_dense(Ut, SG_T, nb, m, k),
           vm = sg_mat_dense(Vt, SG_T, nb, n, k);
    sg_progress_phase(ctx, 0, SG_DECOMP_SHARE);
    sg_status st = sg_cpu_svd(ctx, A, 0, &sm, gA ? &um : NULL, gA ? &vm : NULL);
    if (st == SG_OK && sg_cancelled(ctx)) st = SG_ERR_CANCELLED; /* St, Ut, Vt are partly unset */
    const char *op = kind == SG_REG_SPECTRAL ? "spectral" : "nuclear";
    gfail f = {-1, SG_OK, ""};
    if (st == SG_OK) {
        sg_progress_phase(ctx, SG_DECOMP_SHARE, 1);
        sg_ticker tk_ = SG_TICK_INIT(ctx, nb);
#pragma omp parallel for num_threads(sg_cpu_threads(ctx, nb)) schedule(dynamic)
        for (int64_t b = 0; b < nb; b++) {
            if (sg_tick(&tk_)) continue;
            const T *s = St + b * k;
            double l = 0;
            if (kind == SG_REG_SPECTRAL) l = (double)s[0] * (double)s[0];
            else
                for (int64_t j = 0; j < k; j++) l += (double)s[j];
            AT(loss, b)[0] = (T)l;
            if (!isfinite((T)l)) gfail_rec(&f, b, SG_ERR_DOMAIN, "%s: loss overflows in matrix %lld", op, (long long)b);
            if (!gA) continue;
            const T *u = Ut + b * m * k, *v = Vt + b * n * k;
            T *ga = AT(gA, b);
            if (kind == SG_REG_SPECTRAL)
                for (int64_t j = 0; j < n; j++)
                    for (int64_t i = 0; i < m; i++) ga[i + j * gA->ld] = 2 * s[0] * u[i] * v[j];
            else
                GEMM(0, 1, m, n, k, 1, u, m, v, n, 0, ga, gA->ld);
        }
    }
    free(St), free(Ut), free(Vt);
    return st != SG_OK ? st : gfail_finish(ctx, &f);
}

/* ORTHO ||AᵀA − I||_F², grad 4A(AᵀA − I). No decomposition. A loss that overflows: as reg_svd. gA is finite
   whenever the loss is: ‖D‖ = ‖AᵀA − I‖ ≤ √max bounds ‖A‖² ≤ ‖D‖ + 1, so ‖4AD‖ ≤ 4·max^(3/4). */
static sg_status FN(reg_ortho)(sg_ctx *ctx, const sg_mat *A, sg_mat *loss, sg_mat *gA)
{
    const int64_t m = A->rows, n = A->cols, nb = A->batch;
    const int nt = sg_cpu_threads(ctx, nb);
    const size_t per = (size_t)n * n;
    T *ws = FN(ws_alloc)(ctx, "regularizer", per, nt);
    if (!ws) return SG_ERR_ALLOC;
    gfail f = {-1, SG_OK, ""};
    sg_ticker tk_ = SG_TICK_INIT(ctx, nb);
#pragma omp parallel num_threads(nt)
    {
        T *C = ws + per * (size_t)omp_get_thread_num();
#pragma omp for schedule(dynamic)
        for (int64_t b = 0; b < nb; b++) {
            if (sg_tick(&tk_)) continue;
            const T *a = AT(A, b);
            GEMM(1, 0, n, n, m, 1, a, A->ld, a, A->ld, 0, C, n);
            double l = 0;
            for (int64_t i = 0; i < n; i++) C[i + i * n] -= 1;
            for (int64_t i = 0; i < n * n; i++) l += (double)C[i] * (double)C[i];
            AT(loss, b)[0] = (T)l;
            if (!isfinite((T)l)) gfail_rec(&f, b, SG_ERR_DOMAIN, "ortho: loss overflows in matrix %lld", (long long)b);
            if (gA) GEMM(0, 0, m, n, n, 4, a, A->ld, C, n, 0, AT(gA, b), gA->ld);
        }
    }
    free(ws);
    return gfail_finish(ctx, &f);
}

/* Σ f(λ), grad V diag(f'(λ)) Vᵀ (LOGDET is f = log: grad A⁻¹). */
static sg_status FN(reg_eig)(sg_ctx *ctx, const char *op, const sg_mat *A, const sg_fn *fn, sg_mat *loss, sg_mat *gA)
{
    const int64_t n = A->rows, nb = A->batch;
    T *Wt, *Vt, *ws = NULL;
    sg_mat wm, vm;
    sg_progress_phase(ctx, 0, SG_DECOMP_SHARE);
    sg_status st = FN(eig_tmp)(ctx, A, gA != NULL, &Wt, &Vt, &wm, &vm);
    if (st == SG_OK && sg_cancelled(ctx)) st = SG_ERR_CANCELLED; /* Wt, Vt are partly unset */
    if (st == SG_OK) st = FN(check_dom)(ctx, op, fn, &wm, gA != NULL);
    const int nt = sg_cpu_threads(ctx, nb);
    const size_t per = 2 * (size_t)n * n + (size_t)n;
    if (st == SG_OK && gA && !(ws = FN(ws_alloc)(ctx, op, per, nt))) st = SG_ERR_ALLOC;
    if (st != SG_OK) {
        free(Wt), free(Vt);
        return st;
    }
    gfail f = {-1, SG_OK, ""};
    sg_progress_phase(ctx, SG_DECOMP_SHARE, 1);
    sg_ticker tk_ = SG_TICK_INIT(ctx, nb);
#pragma omp parallel num_threads(nt)
    {
        T *X = ws ? ws + per * (size_t)omp_get_thread_num() : NULL, *Y = X ? X + n * n : NULL, *d = Y ? Y + n * n : NULL;
#pragma omp for schedule(dynamic)
        for (int64_t b = 0; b < nb; b++) {
            if (sg_tick(&tk_)) continue;
            const T *w = Wt + b * n;
            double l = 0;
            for (int64_t i = 0; i < n; i++) l += fn_val(fn, (double)w[i]);
            AT(loss, b)[0] = (T)l;
            if (!isfinite((T)l))
                gfail_rec(&f, b, SG_ERR_DOMAIN, "%s: loss overflows in matrix %lld", op, (long long)b);
            if (!gA) continue;
            for (int64_t i = 0; i < n; i++) d[i] = (T)fn_der(fn, (double)w[i]);
            if (!FN(vdv)(n, Vt + b * n * n, n, d, X, Y, AT(gA, b), gA->ld))
                gfail_rec(&f, b, SG_ERR_DOMAIN, "%s: gradient overflows in matrix %lld", op, (long long)b);
        }
    }
    free(ws), free(Wt), free(Vt);
    return gfail_finish(ctx, &f);
}

static sg_status FN(reg)(sg_ctx *ctx, sg_reg kind, const sg_mat *A, const sg_fn *fn, sg_mat *loss, sg_mat *gA)
{
    if (A->rows > INT32_MAX || A->cols > INT32_MAX)
        return sg_fail(ctx, SG_ERR_UNSUPPORTED, -1, "regularizer: matrix exceeds BLAS int");
    /* GEMM sees A's ld (ORTHO) and gA's (NUCLEAR, ORTHO); the other kinds index them in int64 */
    if ((kind == SG_REG_ORTHO && !ld_fits(ctx, "regularizer", A, "A")) ||
        ((kind == SG_REG_ORTHO || kind == SG_REG_NUCLEAR) && !ld_fits(ctx, "regularizer", gA, "gA")))
        return SG_ERR_UNSUPPORTED;
    static const sg_fn logf_ = {SG_FN_LOG, 0, NULL, NULL, NULL};
    switch (kind) {
    case SG_REG_SPECTRAL:
    case SG_REG_NUCLEAR: return FN(reg_svd)(ctx, kind, A, loss, gA);
    case SG_REG_ORTHO: return FN(reg_ortho)(ctx, A, loss, gA);
    case SG_REG_LOGDET: return FN(reg_eig)(ctx, "logdet (A must be symmetric positive definite)", A, &logf_, loss, gA);
    case SG_REG_EIGSUM: return FN(reg_eig)(ctx, "eigsum", A, fn, loss, gA);
    }
    return sg_fail(ctx, SG_ERR_ARG, -1, "regularizer: unknown kind %d", (int)kind);
}

#undef AT
#undef GEMM

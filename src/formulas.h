/* Formulas shared by the CPU reference and the CUDA kernels (host/device, plain C or CUDA C++).
   One definition each, so both backends round the same way. */
#ifndef SG_FORMULAS_H
#define SG_FORMULAS_H

#include <math.h>

#ifdef __CUDACC__
#define SG_HD static __host__ __device__ __forceinline__
#else
#define SG_HD static inline
#endif

/* Singular-value cutoff (numpy/torch): tol = max(atol, rtol·σmax); rtol < 0 → max(m,n)·eps if atol == 0. */
SG_HD double sg_tol_rule(double atol, double rtol, double smax, long long maxmn, double eps)
{
    if (rtol < 0) rtol = atol > 0 ? 0.0 : (double)maxmn * eps;
    double r = rtol * smax;
    return atol > r ? atol : r;
}

/* The tolerances of one call: one pair for the whole batch, or per matrix (atols/rtols of length batch;
   either NULL: the scalar for every matrix). On CUDA the pointers are device copies of one chunk's slice. */
typedef struct {
    double atol, rtol;
    const double *atols, *rtols;
} sg_tols;

/* The cutoff of matrix b of the call. */
SG_HD double sg_tols_cut(sg_tols t, long long b, double smax, long long maxmn, double eps)
{
    return sg_tol_rule(t.atols ? t.atols[b] : t.atol, t.rtols ? t.rtols[b] : t.rtol, smax, maxmn, eps);
}

/* Whether singular value σ counts towards the rank: unless σ <= tol, so a NaN σ (or a NaN tol from a NaN
   σmax) counts. NaN only gets this far on CUDA with the input check off; counted, it reaches the outputs
   (projection, solution) instead of passing as rank 0 with finite, plausible results. */
SG_HD int sg_sv_counts(double s, double tol) { return !(s <= tol); }

/* Degeneracy modes (values of sg_degen). */
#define SG_DM_EXACT 0
#define SG_DM_MASK 1
#define SG_DM_LORENTZ 2
#define SG_DM_TAYLOR 3

/* F_ij standing for 1/E_ij, E_ij = lj − li (i ≠ j), antisymmetric in (i,j) in every mode, to the bit, except
   at an exact tie, where E = +0 both ways: 1/E = +inf both ways in EXACT, +0 in MASK and LORENTZ.
   i_lt_j breaks exact ties for Taylor. scale = max|λ|: the mask's tolerance and Lorentz's width are relative
   to it, so every mode is scale-invariant (F(cλ) = F(λ)/c, as 1/E and Taylor are); an Inf λ makes it Inf,
   and both then give NaN rather than masking or flattening every pair (input check off).
   param has been defaulted by the caller (sg_degen_param). NAME_e takes E already formed.
   NAME_sq (SVD backward) takes σi, σj and a scale sc (σmax) and stands for 1/((σj² − σi²)/sc²), with E
   formed as ((σj − σi)/sc)(σj/sc + σi/sc): the difference of the inputs is exact near a tie, where
   dividing or squaring first would leave only eps·σ²/E of it; the sum is of scaled terms (σj + σi itself
   can overflow). */
#define SG_DEF_INV_GAP(T, NAME)                                                                         \
    SG_HD T NAME##_e(T e, T li, T lj, int i_lt_j, int mode, T param, T scale)                           \
    {                                                                                                   \
        if (mode == SG_DM_MASK)                                                                         \
            return isinf((double)scale) ? scale - scale /* an Inf λ: NaN */                             \
                   : fabs((double)e) <= (double)(param * scale) ? (T)0 : (T)1 / e;                      \
        if (mode == SG_DM_LORENTZ) { /* E/(E² + param·scale²), in units of scale: no overflow of E² */  \
            if (isinf((double)scale)) return scale - scale;                                             \
            const T s = scale > (T)0 ? scale : (T)1, er = e / s;                                        \
            return er / (er * er + param) / s;                                                          \
        }                                                                                               \
        if (mode == SG_DM_TAYLOR) { /* series in λs/λb, λb the larger magnitude (the larger λ if > 0) */ \
            if ((li < (T)0 && lj > (T)0) || (li > (T)0 && lj < (T)0))                                   \
                return (T)1 / e; /* opposite signs: |E| >= max(|λi|, |λj|), never near a tie */         \
            const T d = li > (T)0 || lj > (T)0 ? e : -e; /* sign of |λj| − |λi|, from the exact E */      \
            int up = d > 0 || (d == 0 && i_lt_j);         /* lj is the larger in magnitude */           \
            T big = up ? lj : li, small = up ? li : lj, r = small / big, term = (T)1, acc = (T)0;       \
            for (int k = 0; k < (int)param; k++) { acc += term; term *= r; }                            \
            return (up ? (T)1 : (T)-1) * acc / big;                                                     \
        }                                                                                               \
        return (T)1 / e;                                                                                \
    }                                                                                                   \
    SG_HD T NAME(T li, T lj, int i_lt_j, int mode, T param, T scale)                                    \
    {                                                                                                   \
        return NAME##_e(lj - li, li, lj, i_lt_j, mode, param, scale); /* difference first */            \
    }                                                                                                   \
    SG_HD T NAME##_sq(T si, T sj, T sc, int i_lt_j, int mode, T param)                                  \
    {                                                                                                   \
        T xi = si / sc, xj = sj / sc;                                                                   \
        return NAME##_e(((sj - si) / sc) * (xj + xi), xi * xi, xj * xj, i_lt_j, mode, param, (T)1);    \
    }
SG_DEF_INV_GAP(double, sg_inv_gap_d)
SG_DEF_INV_GAP(float, sg_inv_gap_s)

/* Mode parameter defaults (param <= 0). */
SG_HD double sg_degen_param(int mode, double param, int is_f32)
{
    if (param > 0) return param;
    if (mode == SG_DM_MASK) return 1e3 * (is_f32 ? 1.1920928955078125e-07 : 2.220446049250313e-16);
    if (mode == SG_DM_LORENTZ) return is_f32 ? 1e-6 : 1e-12;
    if (mode == SG_DM_TAYLOR) return 9;
    return 0;
}

/* Scalar functions (values of sg_fn_kind, callback excluded) and their derivatives. */
#define SG_FK_SQRT 0
#define SG_FK_LOG 1
#define SG_FK_EXP 2
#define SG_FK_POW 3

SG_HD double sg_fn_val(int kind, double p, double x)
{
    switch (kind) {
    case SG_FK_SQRT: return sqrt(x);
    case SG_FK_LOG: return log(x);
    case SG_FK_EXP: return exp(x);
    default: return pow(x, p);
    }
}

SG_HD double sg_fn_der(int kind, double p, double x)
{
    switch (kind) {
    case SG_FK_SQRT: return 0.5 / sqrt(x);
    case SG_FK_LOG: return 1.0 / x;
    case SG_FK_EXP: return exp(x);
    default: return p * pow(x, p - 1.0);
    }
}

/* Domain: sqrt needs λ >= 0, log λ > 0, non-integer powers λ >= 0 (negative powers λ > 0). */
SG_HD int sg_fn_in_domain(int kind, double p, double x)
{
    switch (kind) {
    case SG_FK_SQRT: return x >= 0;
    case SG_FK_LOG: return x > 0;
    case SG_FK_EXP: return 1;
    default: return p < 0 ? x > 0 : (p == floor(p) ? 1 : x >= 0);
    }
}

/* Divided difference (f(li) − f(lj))/(li − lj), → f'((li+lj)/2) when the gap is below
   rel·max(|li|,|lj|,tiny): finite at ties, and the usual formula elsewhere. */
/* rel used by both backends: ≈ eps64^(1/3) balances the midpoint rule's O(d²) error against the
   O(eps/d) cancellation of the quotient (f is evaluated in double for both dtypes). */
#define SG_DIVDIFF_REL 6e-6
SG_HD double sg_divdiff(int kind, double p, double li, double lj, double rel)
{
    double d = li - lj, s = fmax(fabs(li), fabs(lj));
    if (fabs(d) <= rel * (s > 0 ? s : 1.0)) return sg_fn_der(kind, p, 0.5 * (li + lj));
    return (sg_fn_val(kind, p, li) - sg_fn_val(kind, p, lj)) / d;
}

#endif

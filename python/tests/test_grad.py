"""Gradients against jax (jax.grad through jnp.linalg.eigh / svd, jax.scipy.linalg.expm), scipy
(expm_frechet, sqrtm, logm) and finite differences; degenerate spectra where the references give NaN."""
import numpy as np
import pytest
import scipy.linalg as sla

import specgrad as sg
from conftest import BATCH_SHAPES, DTYPES, random_spd, sym_with_spectrum, tol

jax = pytest.importorskip("jax", reason="jax not installed (scripts/test-python installs it)")
import jax.numpy as jnp  # noqa: E402

assert jax.config.read("jax_enable_x64"), "conftest enables float64 jax"


def jax_batched_grad(loss, A, *consts):
    """grad of Σ_batch loss(A_b, consts_b) for a batch of matrices (float64)."""
    shp = A.shape
    Af = jnp.asarray(A.reshape((-1,) + shp[-2:]), dtype=jnp.float64)
    cf = [jnp.asarray(np.reshape(c, (-1,) + np.shape(c)[len(shp) - 2:])) for c in consts]
    g = jax.grad(lambda X: jnp.sum(jax.vmap(loss)(X, *cf)))(Af)
    return np.asarray(g).reshape(shp)


def sym(X):
    return (X + X.swapaxes(-1, -2)) / 2


# ---- eigh backward -----------------------------------------------------------------------------
def eig_loss_jax(A, c, d, B):
    w, V = jnp.linalg.eigh(A)  # symmetrizes its input, so the gradient is symmetric
    return jnp.dot(c, w) + jnp.sum(d * jnp.einsum("ik,ij,jk->k", V, B, V))  # v_kᵀBv_k: sign-invariant


@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["exact", "mask"])
def test_eigh_backward_matches_jax(rng, bshape, dtype, mode):
    n = 5
    A = sym_with_spectrum(rng, [-2.0, -0.5, 1.0, 2.5, 4.0], bshape)
    c = rng.standard_normal(bshape + (n,))
    d = rng.standard_normal(bshape + (n,))
    B = sym(rng.standard_normal(bshape + (n, n)))
    ref = jax_batched_grad(eig_loss_jax, A, c, d, B)
    w, V = sg.eigh(A.astype(dtype))
    Vd = V.astype(np.float64)
    gV = 2 * (B @ Vd) * d[..., None, :]
    gA = sg.eigh_backward(w, V, c.astype(dtype), gV.astype(dtype), mode=mode)
    assert gA.shape == A.shape and gA.dtype == dtype
    np.testing.assert_allclose(gA, ref, atol=tol(dtype, 1e-9, 5e-3) * np.abs(ref).max())
    # only-values and only-vectors paths
    np.testing.assert_allclose(sg.eigh_backward(w, V, gw=c.astype(dtype)), (Vd * c[..., None, :]) @ Vd.swapaxes(-1, -2),
                               atol=tol(dtype, 1e-10, 1e-4) * 10)
    ref_v = jax_batched_grad(eig_loss_jax, A, np.zeros_like(c), d, B)
    np.testing.assert_allclose(sg.eigh_backward(w, V, gV=gV.astype(dtype), mode=mode), ref_v,
                               atol=tol(dtype, 1e-9, 5e-3) * np.abs(ref_v).max())


def test_eigh_backward_degenerate_mask_is_finite_and_right_where_jax_is_nan(rng):
    """Exactly tied eigenvalues (1, 1): jax returns NaN; MASK gives the gradient of the (well-defined)
    projector onto the tied eigenspace, checked by central differences through numpy.linalg.eigh."""
    n = 4
    A = np.diag([1.0, 1.0, 2.0, 3.5])
    B = sym(rng.standard_normal((n, n)))
    c = np.array([0.7, 0.7, -0.3, 1.1])  # equal weights inside the cluster: Σ c w is differentiable
    d = np.array([1.0, 1.0, 0.0, 0.0])  # tr(P_cluster B), P = v0v0ᵀ + v1v1ᵀ: rotation invariant

    def loss_np(X):
        w, V = np.linalg.eigh(X)
        return c @ w + np.sum(d * np.einsum("ik,ij,jk->k", V, B, V))

    ref = jax_batched_grad(eig_loss_jax, A[None], c[None], d[None], B[None])[0]
    assert not np.all(np.isfinite(ref)), "premise: jax gives NaN/inf at an exact tie"

    w, V = sg.eigh(A)
    assert w[0] == w[1], "premise: the tie is exact in our eigh too"
    gV = 2 * (B @ V) * d
    gA = sg.eigh_backward(w, V, c, gV, mode="mask")
    assert np.all(np.isfinite(gA))
    h = 1e-6
    fd = np.zeros((n, n))
    for i in range(n):
        for j in range(i, n):
            E = np.zeros((n, n))
            E[i, j] = E[j, i] = 1.0
            dl = (loss_np(A + h * E) - loss_np(A - h * E)) / (2 * h)
            if i == j:
                fd[i, i] = dl
            else:
                fd[i, j] = fd[j, i] = dl / 2  # <gA, E> = 2 gA_ij for symmetric gA
    np.testing.assert_allclose(gA, fd, atol=1e-7)
    with pytest.raises(sg.DegenerateError) as e:
        sg.eigh_backward(w, V, c, gV, mode="exact")
    assert e.value.result is not None and not np.all(np.isfinite(e.value.result))
    # Lorentzian broadening is also finite (not exact: it only approximates 1/E)
    assert np.all(np.isfinite(sg.eigh_backward(w, V, c, gV, mode="lorentz")))


# ---- svd backward ------------------------------------------------------------------------------
def svd_loss_jax(A, c, d, P, Q, M):
    U, S, Vh = jnp.linalg.svd(A, full_matrices=False)
    V = Vh.T
    return (jnp.dot(c, S) + jnp.sum(d * jnp.einsum("ik,ij,jk->k", U, M, V))
            + jnp.sum(jnp.einsum("ik,ij,jk->k", U, P, U)) + jnp.sum(jnp.einsum("ik,ij,jk->k", V, Q, V)))


@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mn", [(6, 4), (4, 6), (5, 5)])
def test_svd_backward_matches_jax(rng, bshape, dtype, mn):
    m, n = mn
    k = min(m, n)
    A = rng.standard_normal(bshape + mn)
    c = rng.standard_normal(bshape + (k,))
    d = rng.standard_normal(bshape + (k,))
    P = sym(rng.standard_normal(bshape + (m, m)))
    Q = sym(rng.standard_normal(bshape + (n, n)))
    M = rng.standard_normal(bshape + (m, n))
    ref = jax_batched_grad(svd_loss_jax, A, c, d, P, Q, M)
    U, S, Vh = sg.svd(A.astype(dtype), full_matrices=False)
    Ud, Vd = U.astype(np.float64), Vh.astype(np.float64).swapaxes(-1, -2)
    gU = (M @ Vd) * d[..., None, :] + 2 * P @ Ud
    gV = (M.swapaxes(-1, -2) @ Ud) * d[..., None, :] + 2 * Q @ Vd
    gA = sg.svd_backward(U, S, Vh, gU.astype(dtype), c.astype(dtype), gV.swapaxes(-1, -2).astype(dtype))
    assert gA.shape == A.shape and gA.dtype == dtype
    np.testing.assert_allclose(gA, ref, atol=tol(dtype, 1e-8, 2e-2) * np.abs(ref).max())
    # singular values only: gA = U diag(c) Vᵀ
    np.testing.assert_allclose(sg.svd_backward(U, S, Vh, gS=c.astype(dtype)), (Ud * c[..., None, :]) @ Vd.swapaxes(-1, -2),
                               atol=tol(dtype, 1e-10, 1e-4) * 10)


@pytest.mark.parametrize("shape", [(6, 3), (3, 6), (5, 1), (1, 4)])
def test_svd_backward_full_matrices_extra_columns_get_their_gradient(rng, shape):
    """full_matrices: a loss of the extra columns (a tall A's left nullspace U⊥, a wide A's nullspace V⊥) that
    does not depend on which basis of the complement they are, here tr(M W⊥W⊥ᵀ), gets its gradient through
    them (PyTorch drops their cotangent; before 2026-12-02 so did specgrad): central differences."""
    m, n = shape
    tall = m > n
    A = rng.standard_normal(shape)
    M = rng.standard_normal((max(m, n),) * 2)

    def loss(X):  # W⊥W⊥ᵀ = I − W_kW_kᵀ from the economy factors, plus a loss of S and the first columns
        U, S, Vh = np.linalg.svd(X, full_matrices=False)
        W = U if tall else Vh.T
        return np.trace(M @ (np.eye(len(W)) - W @ W.T)) + S.sum() + (U[:, 0] ** 2 * np.arange(m)).sum()

    U, S, Vh = sg.svd(A, full_matrices=True)
    k = min(m, n)
    gU = np.zeros_like(U)
    gU[:, 0] = 2 * U[:, 0] * np.arange(m)
    gVh = np.zeros_like(Vh)
    if tall:
        gU[:, k:] = (M + M.T) @ U[:, k:]
    else:
        gVh[k:, :] = ((M + M.T) @ Vh[k:, :].T).T
    gA = sg.svd_backward(U, S, Vh, gU=gU, gS=np.ones(k), gVh=gVh, mode="exact")
    h, fd = 1e-6, np.zeros_like(A)
    for i in np.ndindex(*shape):
        E = np.zeros_like(A)
        E[i] = h
        fd[i] = (loss(A + E) - loss(A - E)) / (2 * h)
    np.testing.assert_allclose(gA, fd, atol=1e-7 * np.abs(fd).max())
    # without a cotangent on the extra columns, full and economy factors give the same gradient
    Ue, Se, Vhe = sg.svd(A, full_matrices=False)
    c = rng.standard_normal(k)
    np.testing.assert_allclose(sg.svd_backward(U, S, Vh, gS=c), sg.svd_backward(Ue, Se, Vhe, gS=c), atol=1e-12)


def test_svd_backward_degenerate_mask_matches_differences(rng):
    """Tied singular values (2, 2, 1): MASK is finite and equals central differences of a loss that only
    sees the tied singular subspace through its projector. jax is no reference here: depending on how
    rounding splits the tie it gives NaN, a finite but wrong gradient (split by an ulp), or the right one
    (it zeroes exactly-zero gaps), so it is not compared."""
    Q1, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    Q2, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    s = np.array([2.0, 2.0, 1.0])
    A = (Q1[:, :3] * s) @ Q2.T
    P = sym(rng.standard_normal((4, 4)))
    c = np.array([0.5, 0.5, -1.0])

    def loss_np(X):
        U, S, Vh = np.linalg.svd(X, full_matrices=False)
        return c @ S + np.trace(U[:, :2].T @ P @ U[:, :2])

    U, S, Vh = sg.svd(A, full_matrices=False)
    if abs(S[0] - S[1]) > 1e-12:
        pytest.skip(f"rounding split the tie by {abs(S[0] - S[1]):.1e}; the premise needs an exact tie")  # pragma: no cover
    gU = np.zeros_like(U)
    gU[:, :2] = 2 * P @ U[:, :2]
    gA = sg.svd_backward(U, S, Vh, gU=gU, gS=c, mode="mask")
    assert np.all(np.isfinite(gA))
    h = 1e-6
    fd = np.zeros_like(A)
    for idx in np.ndindex(*A.shape):
        E = np.zeros_like(A)
        E[idx] = h
        fd[idx] = (loss_np(A + E) - loss_np(A - E)) / (2 * h)
    np.testing.assert_allclose(gA, fd, atol=1e-6)


# ---- matrix functions --------------------------------------------------------------------------
FNS = [("sqrt", None, np.sqrt), ("log", None, np.log), ("exp", None, np.exp), ("pow", 1.5, lambda x: x ** 1.5)]


def scipy_matfunc(name, p, A):
    return {"sqrt": sla.sqrtm, "log": sla.logm, "exp": sla.expm,
            "pow": lambda X: sla.fractional_matrix_power(X, p)}[name](A).real


@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn,p,f", FNS)
def test_matfunc_and_backward_match_references(rng, bshape, dtype, fn, p, f):
    n = 5
    A = random_spd(rng, n, bshape)
    G = rng.standard_normal(bshape + (n, n))
    F = sg.matfunc(A.astype(dtype), fn, p)
    assert F.shape == A.shape and F.dtype == dtype
    for idx in np.ndindex(*bshape):
        ref = scipy_matfunc(fn, p, A[idx])
        np.testing.assert_allclose(F[idx], ref, atol=tol(dtype, 1e-9, 1e-4) * np.abs(ref).max() * 10)

    def loss(X, G_):
        w, V = jnp.linalg.eigh(X)
        fw = {"sqrt": jnp.sqrt, "log": jnp.log, "exp": jnp.exp, "pow": lambda x: x ** 1.5}[fn](w)
        return jnp.sum(G_ * ((V * fw) @ V.T))

    ref = jax_batched_grad(loss, A, G)
    w, V = sg.eigh(A.astype(dtype))
    gA = sg.matfunc_backward(w, V, G.astype(dtype), fn, p)
    assert gA.shape == A.shape and gA.dtype == dtype
    np.testing.assert_allclose(gA, ref, atol=tol(dtype, 1e-9, 5e-3) * np.abs(ref).max())
    if fn == "exp":  # an exact reference: scipy's Fréchet derivative, <gA, E> = <G, L_exp(A, E)>
        for idx in list(np.ndindex(*bshape))[:2]:
            E = sym(rng.standard_normal((n, n)))
            L = sla.expm_frechet(A[idx], E, compute_expm=False)
            np.testing.assert_allclose(np.sum(gA[idx] * E), np.sum(G[idx] * L),
                                       rtol=tol(dtype, 1e-9, 2e-3), atol=tol(dtype, 1e-9, 2e-3))


@pytest.mark.parametrize("uplo", ["L", "U"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matfunc_return_eig_is_eigh(rng, dtype, uplo):
    """return_eig=True: the (w, V) F was built from are eigh's (same triangle, same layout), so the
    backward needs no second eigendecomposition; a domain error raises before anything is returned."""
    A = random_spd(rng, 5, (2, 3)).astype(dtype)
    junk = A.copy()
    tri = np.triu_indices(5, 1) if uplo == "L" else np.tril_indices(5, -1)
    junk[..., tri[0], tri[1]] = 1e3  # the triangle not read
    F, w, V = sg.matfunc(junk, "log", uplo=uplo, return_eig=True)
    we, Ve = sg.eigh(junk, uplo=uplo)
    np.testing.assert_array_equal(F, sg.matfunc(junk, "log", uplo=uplo))
    np.testing.assert_array_equal(w, we)
    np.testing.assert_array_equal(V, Ve)
    assert V.flags.c_contiguous == Ve.flags.c_contiguous
    A[1, 2] -= 10 * np.eye(5, dtype=dtype)  # an eigenvalue below 0 in matrix (1, 2)
    with pytest.raises(sg.DomainError):
        sg.matfunc(A, "log", return_eig=True)


@pytest.mark.parametrize("fn,p,f", FNS)
def test_matfunc_backward_at_exact_ties_is_finite_where_jax_is_nan(rng, fn, p, f):
    """A = diag(1, 1, 4, 4): eigenvalue ties. Divided differences L_ij → f'(λ) keep the gradient finite;
    jax through eigh gives NaN. Reference: central differences of scipy's sqrtm/logm/expm/
    fractional_matrix_power along symmetric directions (smooth: A is positive definite)."""
    n = 4
    A = np.diag([1.0, 1.0, 4.0, 4.0])
    G = rng.standard_normal((n, n))

    def loss_jax(X, G_):
        w, V = jnp.linalg.eigh(X)
        fw = {"sqrt": jnp.sqrt, "log": jnp.log, "exp": jnp.exp, "pow": lambda x: x ** 1.5}[fn](w)
        return jnp.sum(G_ * ((V * fw) @ V.T))

    ref = jax_batched_grad(loss_jax, A[None], G[None])[0]
    assert not np.all(np.isfinite(ref)), "premise: jax gives NaN at exact ties"
    w, V = sg.eigh(A)
    gA = sg.matfunc_backward(w, V, G, fn, p)
    assert np.all(np.isfinite(gA))
    h = 1e-5
    for _ in range(4):
        E = sym(rng.standard_normal((n, n)))
        fd = np.sum(G * (scipy_matfunc(fn, p, A + h * E) - scipy_matfunc(fn, p, A - h * E))) / (2 * h)
        np.testing.assert_allclose(np.sum(gA * E), fd, rtol=1e-6, atol=1e-6)


def test_matfunc_closed_forms_at_identity(rng):
    n = 5
    I = np.eye(n)
    G = rng.standard_normal((n, n))
    w, V = sg.eigh(I)
    np.testing.assert_allclose(sg.matfunc_backward(w, V, G, "sqrt"), sym(G) / 2, atol=1e-12)
    np.testing.assert_allclose(sg.matfunc_backward(w, V, G, "log"), sym(G), atol=1e-12)
    np.testing.assert_allclose(sg.matfunc_backward(2 * w, V, G, "exp"), np.e ** 2 * sym(G), atol=1e-11)


def test_matfunc_domain_and_callback(rng):
    A = sym_with_spectrum(rng, [-1.0, 2.0, 3.0], (2, 2))
    A[0] = random_spd(rng, 3)
    with pytest.raises(sg.DomainError) as e:
        sg.matfunc(A, "log")
    assert e.value.batch_index == (1, 0)
    with pytest.raises(ValueError, match="exponent"):
        sg.matfunc(A, "pow")
    with pytest.raises(ValueError, match="fn must be"):
        sg.matfunc(A, "cos")
    S = random_spd(rng, 4, (3,))
    Fc = sg.matfunc(S, (np.cbrt, lambda x: np.cbrt(x) / (3 * x)))
    np.testing.assert_allclose(Fc, sg.matfunc(S, "pow", 1 / 3), atol=1e-12)


class _Boom(Exception):
    pass


def _raise(x):
    raise _Boom(f"callback failed at {x}")


@pytest.mark.parametrize("which", ["f", "df"])
def test_callback_exception_is_reraised_not_swallowed(rng, which):
    """An exception in a Python (f, df) callback used to be printed ("Exception ignored") while the
    library got a junk double: matfunc returned garbage. Now it is re-raised, chained to the library's
    DomainError (the wrapper hands the library NaN)."""
    S = random_spd(rng, 3, (2,))
    good = (np.exp, np.exp)
    bad = (_raise, np.exp) if which == "f" else (np.exp, _raise)
    if which == "f":
        with pytest.raises(_Boom) as e:
            sg.matfunc(np.eye(3), bad)
        assert isinstance(e.value.__context__, sg.DomainError)
        assert any("specgrad.matfunc" in n for n in getattr(e.value, "__notes__", []))
    with pytest.raises(_Boom) as e:
        sg.regularizer(S, "eigsum", bad)
    assert isinstance(e.value.__context__, sg.DomainError)
    w, V = sg.eigh(S)
    with pytest.raises(_Boom):
        sg.matfunc_backward(w, V, np.ones_like(S), bad)
    # the context is usable afterwards and the same callbacks work when they do not raise
    np.testing.assert_allclose(sg.matfunc(S, good), sg.matfunc(S, "exp"), atol=1e-12)
    with pytest.raises(ZeroDivisionError):
        sg.matfunc(np.eye(3), (lambda x: 1 / 0, lambda x: 0.0))


def test_zero_sized_gradients_and_regularizers():
    """0×0 (and m×0 / 0×n) matrices: empty gradients, empty-sum losses instead of a library error."""
    w, V = sg.eigh(np.zeros((2, 0, 0)))
    assert w.shape == (2, 0) and V.shape == (2, 0, 0)
    assert sg.eigh_backward(w, V, gw=w).shape == (2, 0, 0)
    assert sg.matfunc(np.zeros((0, 0)), "log").shape == (0, 0)
    assert sg.matfunc_backward(w, V, V, "sqrt").shape == (2, 0, 0)
    U, S, Vh = sg.svd(np.zeros((3, 0)), full_matrices=False)
    assert sg.svd_backward(U, S, Vh, gU=U).shape == (3, 0)
    for kind, A, ref in [("spectral", np.zeros((3, 0)), 0.0), ("nuclear", np.zeros((0, 2)), 0.0),
                         ("ortho", np.zeros((0, 2)), 2.0), ("ortho", np.zeros((3, 0)), 0.0),
                         ("logdet", np.zeros((0, 0)), np.linalg.slogdet(np.zeros((0, 0)))[1])]:
        loss, g = sg.regularizer(A, kind)
        assert loss == ref and g.shape == A.shape, kind
    loss, g = sg.regularizer(np.zeros((4, 0, 0)), "eigsum", "log")
    np.testing.assert_array_equal(loss, np.zeros(4))


# ---- regularizers ------------------------------------------------------------------------------
REGS = {
    "spectral": lambda A: jnp.linalg.norm(A, 2) ** 2,
    "nuclear": lambda A: jnp.sum(jnp.linalg.svd(A, compute_uv=False)),
    "ortho": lambda A: jnp.sum((A.T @ A - jnp.eye(A.shape[1])) ** 2),
    "logdet": lambda A: jnp.linalg.slogdet(A)[1],
    "eigsum": lambda A: jnp.sum(jnp.log(jnp.linalg.eigvalsh(A))),
}


@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,mn", [(k, mn) for k in sorted(REGS) for mn in [(6, 4), (4, 6), (5, 5)]
                                     if k not in ("logdet", "eigsum") or mn[0] == mn[1]])
def test_regularizers_match_jax(rng, bshape, dtype, kind, mn):
    A = random_spd(rng, mn[0], bshape) if kind in ("logdet", "eigsum") else rng.standard_normal(bshape + mn) / 2
    fn = "log" if kind == "eigsum" else None
    loss, gA = sg.regularizer(A.astype(dtype), kind, fn)
    assert np.shape(loss) == bshape and gA.shape == A.shape and gA.dtype == dtype
    f = REGS[kind]
    Af = A.reshape((-1,) + mn)
    ref_l = np.array([float(f(jnp.asarray(a))) for a in Af]).reshape(bshape)
    ref_g = np.stack([np.asarray(jax.grad(f)(jnp.asarray(a))) for a in Af]).reshape(A.shape)
    t = tol(dtype, 1e-9, 2e-3)
    np.testing.assert_allclose(loss, ref_l, rtol=t, atol=t)
    np.testing.assert_allclose(gA, ref_g, atol=t * max(1, np.abs(ref_g).max()))
    np.testing.assert_allclose(sg.regularizer(A.astype(dtype), kind, fn, grad=False), loss, rtol=t, atol=t)


def test_regularizer_bad_input(rng):
    with pytest.raises(ValueError, match="kind"):
        sg.regularizer(np.eye(3), "frobenius")
    with pytest.raises(sg.SpecgradArgumentError):
        sg.regularizer(np.ones((3, 4)), "logdet")
    with pytest.raises(ValueError, match="fn"):
        sg.regularizer(np.eye(3), "spectral", "log")
    with pytest.raises(ValueError, match="fn must be"):
        sg.regularizer(np.eye(3), "eigsum")  # needs fn
    for A in (np.ones((3, 4)), np.ones((0, 3, 4))):  # empty batches are checked too
        with pytest.raises(sg.SpecgradArgumentError, match="square"):
            sg.regularizer(A, "eigsum", "log")


@pytest.mark.parametrize("kind", ["spectral", "nuclear", "ortho"])
def test_regularizer_loss_overflow_is_a_domain_error(rng, kind):
    """A float32 loss that overflows (σ1² of 1e20, Σσ of 1e38's, ‖AᵀA − I‖² of entries 1e10) raises
    DomainError naming the matrix, like eigsum's, instead of returning inf."""
    A = rng.standard_normal((3, 5, 4))
    if kind == "nuclear":  # four σ = 1e38
        A[1] = 1e38 * np.linalg.qr(A[1])[0]
    else:
        A[1] *= {"spectral": 1e20, "ortho": 1e10}[kind] / np.linalg.norm(A[1], 2)
    with pytest.raises(sg.DomainError, match="loss overflows in matrix 1") as e:
        sg.regularizer(A.astype(np.float32), kind)
    assert e.value.batch_index == (1,)
    loss = sg.regularizer(A, kind, grad=False)  # float64: finite
    assert np.isfinite(loss).all()


def test_overflowing_values_and_solutions_are_domain_errors():
    """float32 values beyond the dtype (3×3 of FLT_MAX/2: λ = σ = 1.5·FLT_MAX) and a lstsq solution beyond
    it raise DomainError naming the matrix, on both backends, instead of a LAPACK fault, rank 0 or NaN."""
    A = np.stack([np.eye(3), np.full((3, 3), 1.7e38)]).astype(np.float32)
    for f in (sg.eigvalsh, sg.svdvals, sg.matrix_rank, sg.null_space):
        with pytest.raises(sg.DomainError, match="overflow") as e:
            f(A)
        assert e.value.batch_index == (1,)
    A = np.stack([np.eye(3), np.diag([1, 1, 1e-5])]).astype(np.float32)
    B = np.ones((2, 3, 1), np.float32)
    B[1, 2] = 1e36
    with pytest.raises(sg.DomainError, match="solution of matrix 1 overflows"):
        sg.lstsq(A, B)


def test_gradient_shape_checks_hold_for_empty_batches():
    """Mismatched core shapes raise also when the batch is empty (the library is not called then)."""
    for b in ((2,), (0,)):
        w, V = np.zeros(b + (3,)), np.zeros(b + (3, 3))
        with pytest.raises(sg.SpecgradArgumentError, match="square"):
            sg.eigh_backward(np.zeros(b + (3,)), np.zeros(b + (3, 4)), gw=np.zeros(b + (3,)))
        with pytest.raises(sg.SpecgradArgumentError, match="gw"):
            sg.eigh_backward(w, V, gw=np.zeros(b + (4,)))
        with pytest.raises(sg.SpecgradArgumentError, match="gV"):
            sg.eigh_backward(w, V, gV=np.zeros(b + (3, 2)))
        with pytest.raises(sg.SpecgradArgumentError, match="gF"):
            sg.matfunc_backward(w, V, np.zeros(b + (2, 2)))
        with pytest.raises(sg.SpecgradArgumentError, match="square"):
            sg.matfunc(np.zeros(b + (3, 2)))
        U, S, Vh = np.zeros(b + (5, 3)), np.zeros(b + (3,)), np.zeros(b + (3, 3))
        with pytest.raises(sg.SpecgradArgumentError, match="economy"):
            sg.svd_backward(np.zeros(b + (5, 4)), S, Vh, gS=S)
        with pytest.raises(sg.SpecgradArgumentError, match="S: shape 2, expected 3"):
            sg.svd_backward(U, np.zeros(b + (2,)), Vh, gS=np.zeros(b + (2,)))
        with pytest.raises(sg.SpecgradArgumentError, match="gU"):
            sg.svd_backward(U, S, Vh, gU=np.zeros(b + (5, 2)))


def test_symmetric_ops_read_the_requested_triangle(rng):
    """matfunc / logdet read only the uplo triangle (default 'L', like numpy): garbage in the other one
    must not change the result; checked against scipy.linalg.sqrtm and numpy slogdet/inv."""
    A = random_spd(rng, 4, (3,))
    ref_sqrt = np.stack([sla.sqrtm(a).real for a in A])
    il, iu = np.tril_indices(4, -1), np.triu_indices(4, 1)
    lower_junk, upper_junk = A.copy(), A.copy()
    lower_junk[:, il[0], il[1]] = 5.0
    upper_junk[:, iu[0], iu[1]] = 5.0
    np.testing.assert_allclose(sg.matfunc(upper_junk, "sqrt"), ref_sqrt, atol=1e-12)
    np.testing.assert_allclose(sg.matfunc(lower_junk, "sqrt", uplo="U"), ref_sqrt, atol=1e-12)
    for J, uplo in ((upper_junk, "L"), (lower_junk, "U")):
        loss, g = sg.regularizer(J, "logdet", uplo=uplo)
        np.testing.assert_allclose(loss, np.linalg.slogdet(A)[1], atol=1e-12)
        np.testing.assert_allclose(g, np.linalg.inv(A), atol=1e-12)
    with pytest.raises(sg.DomainError):  # the junk triangle is really read when asked for: not PD
        sg.matfunc(upper_junk, "sqrt", uplo="U")

"""Decompositions, rank, subspaces, least squares against numpy.linalg and scipy.linalg."""
import os

import numpy as np
import pytest
import scipy.linalg as sla

import specgrad as sg
from specgrad import _core
from conftest import BATCH_SHAPES, DTYPES, low_rank, projector, sym_with_spectrum, tol


def per_matrix(A):
    """Iterate the matrices of a batch (..., m, n) in C order of the batch."""
    return A.reshape((-1,) + A.shape[-2:])


# ---- eigh --------------------------------------------------------------------------------------
@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_eigh_matches_numpy(rng, bshape, dtype):
    n = 6
    A = sym_with_spectrum(rng, np.arange(1.0, n + 1) * 1.5 - 4, bshape).astype(dtype)
    w, V = sg.eigh(A)
    assert w.shape == bshape + (n,) and V.shape == bshape + (n, n)
    assert w.dtype == dtype and V.dtype == dtype
    wr, Vr = np.linalg.eigh(A.astype(np.float64))
    t = tol(dtype)
    np.testing.assert_allclose(w, wr, atol=t * 10, rtol=0)
    assert np.all(np.diff(w, axis=-1) > 0), "ascending"
    # sign-invariant eigenvector comparison: |<v_k, v_k_ref>| = 1 (spectrum is simple)
    overlap = np.abs(np.einsum("...ik,...ik->...k", V.astype(np.float64), Vr))
    np.testing.assert_allclose(overlap, 1.0, atol=t * 10)
    # orthonormal and reconstructs A
    I = np.eye(n)
    np.testing.assert_allclose(V.swapaxes(-1, -2) @ V, np.broadcast_to(I, V.shape), atol=t * 10)
    np.testing.assert_allclose((V * w[..., None, :]) @ V.swapaxes(-1, -2), A, atol=t * 40)


def clusters(values, tol):
    """Index groups of (sorted or not) values that tie within tol, as lists of positions."""
    order = np.argsort(values)
    groups, cur = [], [order[0]]
    for a, b in zip(order[:-1], order[1:]):
        if values[b] - values[a] <= tol:
            cur.append(b)
        else:
            groups.append(cur)
            cur = [b]
    return groups + [cur]


@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("spectrum", [[-1.0, -1.0, 2.0, 2.0, 2.0, 5.0], [3.0] * 5 + [-2.0], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]])
def test_eigh_tied_spectrum_matches_numpy(rng, bshape, dtype, spectrum):
    """Exactly tied eigenvalues: the eigenvectors of a cluster are only defined up to a rotation, so
    compare the cluster projectors V_c V_cᵀ (gauge-invariant) and the values with numpy."""
    n = len(spectrum)
    A = sym_with_spectrum(rng, spectrum, bshape).astype(dtype)
    w, V = sg.eigh(A)
    wr, Vr = np.linalg.eigh(A.astype(np.float64))
    t = tol(dtype)
    np.testing.assert_allclose(w, wr, atol=t * 10 * max(1, np.abs(spectrum).max()))
    np.testing.assert_allclose(w, np.broadcast_to(np.sort(spectrum), w.shape), atol=t * 10 * max(1, np.abs(spectrum).max()))
    for g in clusters(np.sort(spectrum), 1e-12):
        P = projector(V[..., :, g].astype(np.float64))
        np.testing.assert_allclose(P, projector(Vr[..., :, g]), atol=t * 30)
    np.testing.assert_allclose(V.swapaxes(-1, -2) @ V, np.broadcast_to(np.eye(n), V.shape), atol=t * 10)
    np.testing.assert_allclose((V * w[..., None, :]) @ V.swapaxes(-1, -2), A, atol=t * 40)


def test_eigh_reads_the_requested_triangle(rng):
    A = sym_with_spectrum(rng, [1.0, 2.0, 4.0, 8.0], (2,))
    junk = A.copy()
    iu = np.triu_indices(4, 1)
    junk[:, iu[0], iu[1]] = 99.0  # upper triangle garbage: numpy's default UPLO='L' ignores it
    np.testing.assert_allclose(sg.eigvalsh(junk), np.linalg.eigvalsh(junk), atol=1e-10)
    jl = A.copy()
    il = np.tril_indices(4, -1)
    jl[:, il[0], il[1]] = -7.0
    np.testing.assert_allclose(sg.eigvalsh(jl, uplo="U"), np.linalg.eigvalsh(jl, UPLO="U"), atol=1e-10)
    # the garbage really changes the answer for the other triangle (this test can fail)
    assert np.max(np.abs(sg.eigvalsh(junk, uplo="U") - np.linalg.eigvalsh(A))) > 1


@pytest.mark.parametrize("layout", ["C", "F", "transposed_view", "sliced_batch", "ld_gt_rows", "broadcast"])
def test_eigh_and_svd_layouts(rng, layout):
    n = 5
    base = sym_with_spectrum(rng, np.arange(1.0, n + 1), (4,))
    if layout == "C":
        A = base
    elif layout == "F":
        A = np.asfortranarray(base)  # whole-array Fortran order: per-matrix row stride = batch → copied
    elif layout == "transposed_view":
        A = base.swapaxes(-1, -2)
    elif layout == "sliced_batch":
        A = np.stack([base, np.full_like(base, 1e9)], axis=1)[:, 0]  # stride 2 matrices, view
        assert not A.flags.c_contiguous
    elif layout == "ld_gt_rows":
        pad = np.zeros((4, n, n + 3))
        pad[..., :n] = base
        A = pad[..., :n]  # each row padded: col-major view of Aᵀ has ld = n + 3
    else:
        A = np.broadcast_to(base[0], (3, n, n))
    w, V = sg.eigh(A)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(A), atol=1e-10)
    U, S, Vh = sg.svd(A[..., :, :4], full_matrices=False)
    np.testing.assert_allclose(S, np.linalg.svd(A[..., :, :4], compute_uv=False), atol=1e-10)
    np.testing.assert_allclose((U * S[..., None, :]) @ Vh, A[..., :, :4], atol=1e-10)


def test_zero_copy_descriptions():
    """C-contiguous (..., m, n) is described in place as the column-major batch of its transposes, also
    with ld > rows and strided batches; other layouts are copied."""
    A = np.zeros((2, 3, 4, 5))
    keep = []
    m = _core._desc(_core._NP, A.swapaxes(-1, -2), keep)
    assert not keep and (m.batch, m.rows, m.cols, m.ld, m.stride) == (6, 5, 4, 5, 20)
    assert m.data == A.ctypes.data
    P = np.zeros((4, 7, 9))[:, :, :6]  # logical (6×7) transposed view with ld 9
    m = _core._desc(_core._NP, P.swapaxes(-1, -2), keep)
    assert not keep and (m.rows, m.cols, m.ld, m.stride) == (6, 7, 9, 63)
    m = _core._desc(_core._NP, A, keep)  # C order, logical m×n: needs a copy
    assert len(keep) == 1 and (m.ld, m.stride) == (4, 20)


def test_eigh_nonfinite_reports_matrix_index(rng):
    A = sym_with_spectrum(rng, [1.0, 2.0, 3.0], (2, 3))
    A[1, 2, 0, 0] = np.nan
    with pytest.raises(sg.NonFiniteError) as e:
        sg.eigh(A)
    assert e.value.index == 5 and e.value.batch_index == (1, 2)
    assert "NaN" in e.value.message and isinstance(e.value, ValueError)


@pytest.mark.parametrize("dtype", ["f4", "f8", "f2", "i4"])
def test_non_native_byte_order_is_accepted(rng, dtype):
    """Arrays in the other byte order (as np.load gives for a '>f8' file on x86) work as numpy's do."""
    A = sym_with_spectrum(rng, [1.0, 2.0, 3.0], (2,)).astype(dtype)
    other = ">" if np.little_endian else "<"
    Ab = A.astype(other + dtype)
    assert not Ab.dtype.isnative
    w, V = sg.eigh(Ab)
    w0, V0 = sg.eigh(A)
    assert w.dtype.isnative and w.dtype == w0.dtype and np.array_equal(w, w0) and np.array_equal(V, V0)
    X = rng.standard_normal((2, 3, 2)).astype(other + "f8")
    assert np.array_equal(sg.lstsq(Ab, X)[0], sg.lstsq(A, X.astype("f8"))[0])


def test_bad_inputs_raise(rng):
    with pytest.raises(sg.SpecgradArgumentError, match="shape"):
        sg.eigh(np.zeros((3, 4)))
    with pytest.raises(TypeError, match="complex"):
        sg.eigh(np.eye(3, dtype=complex))
    with pytest.raises(ValueError, match="uplo"):
        sg.eigh(np.eye(3), uplo="X")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        sg.svd(np.ones(3))
    with pytest.raises(ValueError, match="batch shape"):
        sg.lstsq(np.ones((2, 3, 3)), np.ones((3, 3, 1)))
    with pytest.raises(sg.SpecgradArgumentError, match="tolerance"):
        sg.matrix_rank(np.eye(3), atol=-1.0)
    for b in ((), (0,), (2, 0)):  # empty batches are checked too (the library is not called for them)
        with pytest.raises(sg.SpecgradArgumentError, match="square"):
            sg.eigh(np.zeros(b + (3, 4)))
        with pytest.raises(sg.SpecgradArgumentError, match="X: shape"):
            sg.project(np.zeros(b + (3, 4)), np.zeros(b + (3, 2)))
        with pytest.raises(sg.SpecgradArgumentError, match="X: shape"):
            sg.project(np.zeros(b + (3, 4)), np.zeros(b + (3,)))
        with pytest.raises(sg.SpecgradArgumentError, match="B: shape"):
            sg.lstsq(np.zeros(b + (3, 4)), np.zeros(b + (4, 2)))
        with pytest.raises(sg.SpecgradArgumentError, match="tolerance"):
            sg.pinv(np.zeros(b + (3, 4)), rtol=np.nan)
    with pytest.raises(sg.NoDeviceError if sg.cuda_devices()[0] == 0 else ValueError):
        if sg.cuda_devices()[0] == 0:
            sg.Context("cuda")
        else:
            raise ValueError("skip: a GPU exists")
    ctx = sg.Context("cpu")
    ctx.close()
    with pytest.raises(ValueError, match="closed"):
        ctx.eigh(np.eye(2))


def test_integer_input_promotes_and_empty_batch():
    w = sg.eigvalsh(np.array([[2, 1], [1, 2]]))
    assert w.dtype == np.float64
    np.testing.assert_allclose(w, [1.0, 3.0], atol=1e-12)
    w, V = sg.eigh(np.zeros((0, 3, 3)))
    assert w.shape == (0, 3) and V.shape == (0, 3, 3)


def test_eigh_vectors_are_c_contiguous_like_numpy(rng):
    A = sym_with_spectrum(rng, [1.0, 2.0, 3.0, 4.0], (2,))
    w, V = sg.eigh(A)
    assert V.flags.c_contiguous == np.linalg.eigh(A)[1].flags.c_contiguous == True  # noqa: E712
    np.testing.assert_allclose(sg.eigh_backward(w, V, gw=np.ones_like(w)), np.broadcast_to(np.eye(4), A.shape), atol=1e-12)


ZERO_SHAPES = [(0, 0), (3, 0), (0, 3)]


@pytest.mark.parametrize("bshape", [(), (2,)])
@pytest.mark.parametrize("mn", ZERO_SHAPES)
def test_zero_sized_matrices_follow_numpy(bshape, mn):
    """0×0, m×0 and 0×n matrices give numpy's (shaped, possibly empty) results instead of a library
    'null data pointer' error."""
    m, n = mn
    A = np.zeros(bshape + mn)
    for full in (True, False):
        got, ref = sg.svd(A, full_matrices=full), np.linalg.svd(A, full_matrices=full)
        for g, r in zip(got, ref):
            assert g.shape == r.shape
            np.testing.assert_array_equal(g, r)
    assert sg.svdvals(A).shape == np.linalg.svd(A, compute_uv=False).shape
    np.testing.assert_array_equal(sg.matrix_rank(A), np.linalg.matrix_rank(A))
    P = sg.pinv(A)
    assert P.shape == np.linalg.pinv(A).shape
    for B in (np.ones(bshape + (m, 2)), np.ones(bshape + (m,))):
        X, r = sg.lstsq(A, B, return_rank=True)
        for idx in np.ndindex(*bshape):
            xr, _, rr, _ = np.linalg.lstsq(A[idx], B[idx], rcond=None)
            np.testing.assert_array_equal(X[idx], xr)
            assert np.reshape(r, -1)[np.ravel_multi_index(idx, bshape) if bshape else 0] == rr
    N, nul = sg.null_space(A)
    ref = sla.null_space(np.zeros(mn))
    np.testing.assert_array_equal(nul, np.full(bshape, ref.shape[1]))
    for Nt in ([sg.trim_null_space(N, nul)] if bshape == () else sg.trim_null_space(N, nul)):
        np.testing.assert_array_equal(Nt, ref)
    X = np.arange(float(n * 2)).reshape(n, 2) + np.zeros(bshape + (n, 2))
    np.testing.assert_array_equal(sg.project(A, X, "null"), X)  # A = 0: everything is in the nullspace
    np.testing.assert_array_equal(sg.project(A, X, "row"), 0 * X)
    if m == n:
        w, V = sg.eigh(A)
        wr, Vr = np.linalg.eigh(A)
        assert w.shape == wr.shape and V.shape == Vr.shape


def test_zero_columns_rhs_and_rank_atol_none(rng):
    A = low_rank(rng, 5, 4, 2)
    X, r = sg.lstsq(A, np.zeros((5, 0)), return_rank=True)
    xr, _, rr, _ = np.linalg.lstsq(A, np.zeros((5, 0)), rcond=None)
    assert X.shape == xr.shape and r == rr == 2
    assert sg.project(A, np.zeros((4, 0))).shape == (4, 0)
    # atol=None: like numpy's tol=None (the default rule), not a TypeError
    assert sg.matrix_rank(A, atol=None) == np.linalg.matrix_rank(A, tol=None) == 2
    assert sg.matrix_rank(A, None, 0.5) == np.linalg.matrix_rank(A, rtol=0.5)
    assert sg.null_space(A, atol=None)[1] == 2


# ---- svd ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mn", [(6, 4), (4, 6), (5, 5)])
@pytest.mark.parametrize("full", [False, True])
def test_svd_matches_numpy(rng, bshape, dtype, mn, full):
    m, n = mn
    k = min(m, n)
    A = rng.standard_normal(bshape + mn).astype(dtype)
    U, S, Vh = sg.svd(A, full_matrices=full)
    kU, kV = (m, n) if full else (k, k)
    assert U.shape == bshape + (m, kU) and S.shape == bshape + (k,) and Vh.shape == bshape + (kV, n)
    Ur, Sr, Vhr = np.linalg.svd(A.astype(np.float64), full_matrices=full)
    t = tol(dtype)
    np.testing.assert_allclose(S, Sr, atol=t * 10 * Sr.max())
    # gauge-invariant: u_k v_kᵀ for each k (joint sign flips cancel)
    outer = np.einsum("...ik,...kj->...kij", U[..., :k].astype(np.float64), Vh[..., :k, :])
    outer_r = np.einsum("...ik,...kj->...kij", Ur[..., :k], Vhr[..., :k, :])
    np.testing.assert_allclose(outer, outer_r, atol=t * 30)
    np.testing.assert_allclose((U[..., :k] * S[..., None, :]) @ Vh[..., :k, :], A, atol=t * 30)
    np.testing.assert_allclose(U.swapaxes(-1, -2) @ U, np.broadcast_to(np.eye(kU), bshape + (kU, kU)), atol=t * 10)
    np.testing.assert_allclose(Vh @ Vh.swapaxes(-1, -2), np.broadcast_to(np.eye(kV), bshape + (kV, kV)), atol=t * 10)
    if full:  # extra columns span the orthogonal complement of the range: compare projectors
        np.testing.assert_allclose(projector(U[..., k:]), projector(Ur[..., k:]), atol=t * 30)
    S2 = sg.svdvals(A)
    np.testing.assert_allclose(S2, S, atol=t * 10 * Sr.max())


@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mn,s", [((6, 5), [3.0, 3.0, 3.0, 1.0, 1.0]), ((4, 7), [2.0, 2.0, 2.0, 2.0]),
                                  ((5, 5), [4.0, 1.5, 1.5, 1.5, 0.5])])
def test_svd_tied_singular_values_match_numpy(rng, bshape, dtype, mn, s):
    """Exactly tied singular values: singular vectors of a cluster are defined up to a common rotation;
    compare the left and right cluster projectors and Σ_c u_k v_kᵀ (all gauge-invariant) with numpy."""
    m, n = mn
    k = min(m, n)
    Q1 = np.linalg.qr(rng.standard_normal(bshape + (m, m)))[0][..., :k]
    Q2 = np.linalg.qr(rng.standard_normal(bshape + (n, n)))[0][..., :k]
    A = ((Q1 * np.asarray(s)) @ Q2.swapaxes(-1, -2)).astype(dtype)
    U, S, Vh = sg.svd(A, full_matrices=False)
    Ur, Sr, Vhr = np.linalg.svd(A.astype(np.float64), full_matrices=False)
    t = tol(dtype)
    np.testing.assert_allclose(S, Sr, atol=t * 10 * max(s))
    np.testing.assert_allclose(S, np.broadcast_to(sorted(s, reverse=True), S.shape), atol=t * 10 * max(s))
    for g in clusters(-np.array(sorted(s, reverse=True)), 1e-12):
        Uc, Vc = U[..., :, g].astype(np.float64), Vh[..., g, :].astype(np.float64)
        np.testing.assert_allclose(projector(Uc), projector(Ur[..., :, g]), atol=t * 30)
        np.testing.assert_allclose(projector(Vc.swapaxes(-1, -2)), projector(Vhr[..., g, :].swapaxes(-1, -2)), atol=t * 30)
        np.testing.assert_allclose(Uc @ Vc, Ur[..., :, g] @ Vhr[..., g, :], atol=t * 30)
    np.testing.assert_allclose((U * S[..., None, :]) @ Vh, A, atol=t * 30 * max(s))
    np.testing.assert_allclose(U.swapaxes(-1, -2) @ U, np.broadcast_to(np.eye(k), bshape + (k, k)), atol=t * 10)


# ---- rank / nullspace / project / lstsq / pinv ----------------------------------------------------
@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matrix_rank_matches_numpy(rng, bshape, dtype):
    ranks = rng.integers(0, 5, size=bshape)
    A = np.empty(bshape + (6, 5))
    for idx in np.ndindex(*bshape):
        A[idx] = low_rank(rng, 6, 5, int(ranks[idx])) if ranks[idx] else 0.0
    A = A.astype(dtype)
    r = sg.matrix_rank(A)
    np.testing.assert_array_equal(r, np.linalg.matrix_rank(A))
    np.testing.assert_array_equal(r, ranks)
    if bshape == ():
        assert isinstance(r, np.integer)


def test_rank_tolerances_follow_numpy_torch_rule(rng):
    s = np.array([10.0, 1.0, 1e-3, 1e-9])
    U, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    V, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    A = (U * s) @ V.T
    assert sg.matrix_rank(A) == 4 == np.linalg.matrix_rank(A)
    assert sg.matrix_rank(A, atol=1e-2) == 2
    assert sg.matrix_rank(A, rtol=1e-5) == 3 == np.linalg.matrix_rank(A, tol=1e-5 * 10)
    assert sg.matrix_rank(A, atol=0.5, rtol=0.2) == 1  # max(atol, rtol·σmax) = 2


@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mn", [(4, 7), (7, 5)])
def test_null_space_matches_scipy(rng, bshape, dtype, mn):
    m, n = mn
    A = low_rank(rng, m, n, 3, bshape).astype(dtype)
    N, nul = sg.null_space(A)
    assert N.shape == bshape + (n, n) and np.shape(nul) == bshape
    t = tol(dtype)
    for a, Nb, kb, Nt in zip(per_matrix(A), per_matrix(N), np.reshape(nul, -1),
                             [sg.trim_null_space(N, nul)] if bshape == () else sg.trim_null_space(N, nul)):
        ref = sla.null_space(a.astype(np.float64), rcond=np.finfo(dtype).eps * max(m, n))
        assert kb == ref.shape[1] == n - 3
        np.testing.assert_allclose(projector(Nt.astype(np.float64)), projector(ref), atol=t * 50)
        np.testing.assert_array_equal(Nb[:, kb:], 0.0)
        np.testing.assert_allclose(a.astype(np.float64) @ Nt, 0.0, atol=t * 50 * np.abs(a).max())


@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("vector", [False, True])
def test_project_matches_scipy_projectors(rng, bshape, dtype, vector):
    m, n, k = 4, 6, 3
    A = low_rank(rng, m, n, 2, bshape).astype(dtype)
    X = rng.standard_normal(bshape + ((n,) if vector else (n, k))).astype(dtype)
    Yn = sg.project(A, X, "null")
    Yr = sg.project(A, X, "row")
    assert Yn.shape == X.shape and Yn.dtype == dtype
    t = tol(dtype)
    Xm = X[..., None] if vector else X
    Pn = np.empty(bshape + (n, n))
    for idx in np.ndindex(*bshape):
        Pn[idx] = projector(sla.null_space(A[idx].astype(np.float64)))
    refn = Pn @ Xm
    refr = Xm - refn
    if vector:
        refn, refr = refn[..., 0], refr[..., 0]
    np.testing.assert_allclose(Yn, refn, atol=t * 50)
    np.testing.assert_allclose(Yr, refr, atol=t * 50)
    with pytest.raises(ValueError, match="which"):
        sg.project(A, X, "col")


@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("vector", [False, True])
def test_project_basis_matches_numpy_and_project(rng, bshape, dtype, vector):
    n, q, k = 6, 2, 3
    Q = np.linalg.qr(rng.standard_normal(bshape + (n, n)))[0][..., :q].astype(dtype)
    X = rng.standard_normal(bshape + ((n,) if vector else (n, k))).astype(dtype)
    Y = sg.project_basis(Q, X)
    Yc = sg.project_basis(Q, X, complement=True)
    assert Y.shape == X.shape and Y.dtype == dtype and Yc.shape == X.shape
    Qd, Xm = Q.astype(np.float64), (X[..., None] if vector else X).astype(np.float64)
    ref = Qd @ (np.swapaxes(Qd, -1, -2) @ Xm)
    if vector:
        ref = ref[..., 0]
    t = tol(dtype)
    np.testing.assert_allclose(Y, ref, atol=t * 50)
    np.testing.assert_allclose(Yc, X.astype(np.float64) - ref, atol=t * 50)
    # with null_space's padded basis it is project() without the SVD
    A = low_rank(rng, 4, n, 2, bshape).astype(dtype)
    N, _ = sg.null_space(A)
    np.testing.assert_allclose(sg.project_basis(N, X), sg.project(A, X, "null"), atol=t * 50)
    np.testing.assert_allclose(sg.project_basis(N, X, True), sg.project(A, X, "row"), atol=t * 50)


@pytest.mark.parametrize("dtype", DTYPES)
def test_project_and_project_basis_broadcast_batches(rng, dtype):
    """numpy broadcasting of the batch dimensions: against the per-item result (np.matmul broadcasts)."""
    n, q, k = 5, 2, 3
    t = tol(dtype)
    # batch of Q, batch of X (X with exactly one dimension fewer than Q is a batch of vectors, so a
    # matrix X broadcast against a Q with more batch dimensions spells out the leading 1s)
    cases = [((), (2, 3)), ((2, 1), (1, 3)), ((1, 4), (2, 1)), ((2, 3), (2, 1, 1, 1))]
    for bq, bx in cases:
        Q = np.linalg.qr(rng.standard_normal(bq + (n, n)))[0][..., :q].astype(dtype)
        X = rng.standard_normal(bx + (n, k)).astype(dtype)
        Y = sg.project_basis(Q, X)
        bs = np.broadcast_shapes(bq, bx)
        assert Y.shape == bs + (n, k)
        Qd = Q.astype(np.float64)
        ref = Qd @ (np.swapaxes(Qd, -1, -2) @ X.astype(np.float64))
        np.testing.assert_allclose(Y, ref, atol=t * 50)
        np.testing.assert_allclose(sg.project_basis(Q, X, complement=True), X - ref, atol=t * 50)
    # vectors with a shared basis: Q (1, n, q), X (B, n)
    Q = np.linalg.qr(rng.standard_normal((1, n, n)))[0][..., :q].astype(dtype)
    X = rng.standard_normal((4, n)).astype(dtype)
    Y = sg.project_basis(Q, X)
    assert Y.shape == (4, n)
    np.testing.assert_allclose(Y, (Q[0] @ (Q[0].T @ X.T)).T, atol=t * 50)
    # project with one A for a batch of X, and its agreement with project_basis on null_space's basis
    A = low_rank(rng, 4, n, 2, ()).astype(dtype)
    X = rng.standard_normal((3, n, k)).astype(dtype)
    N, _ = sg.null_space(A)
    P = sg.project(A, X, "null")
    assert P.shape == X.shape
    np.testing.assert_allclose(P, sg.project_basis(N, X), atol=t * 50)
    np.testing.assert_allclose(P, np.stack([sg.project(A, x, "null") for x in X]), atol=t * 50)
    with pytest.raises(ValueError, match="do not broadcast"):
        sg.project_basis(np.zeros((2, n, q), dtype), np.zeros((3, n, k), dtype))
    # a matrix meant for the whole batch but one dimension short is read as vectors: the error says so
    hint = r"\(. has one dimension fewer than .*read as a batch of vectors.*leading batch dimension of 1\)"
    with pytest.raises(ValueError, match="do not broadcast " + hint):  # batch (n,) of X against (3,) of Q
        sg.project_basis(np.zeros((3, n, q), dtype), np.zeros((n, k), dtype))
    with pytest.raises(ValueError, match="expected 5 " + hint):  # batch (n,) = (5,): X's length k ≠ n
        sg.project(np.zeros((n, 4, n), dtype), np.zeros((n, k), dtype))
    with pytest.raises(ValueError, match="expected 6 " + hint):
        sg.lstsq(np.zeros((6, 6, 4), dtype), np.zeros((6, 2), dtype))
    with pytest.raises(ValueError, match=r"B: shape 5×1, expected 6×\*$"):  # read as a matrix: no hint
        sg.lstsq(np.zeros((6, 4), dtype), np.zeros((5, 1), dtype))
    # lstsq: one A for a batch of right-hand sides, like torch.linalg.lstsq
    A = low_rank(rng, 6, 4, 2, ()).astype(dtype)
    Bm = rng.standard_normal((3, 6, 2)).astype(dtype)
    x, r = sg.lstsq(A, Bm, return_rank=True)
    assert x.shape == (3, 4, 2) and r.shape == (3,) and np.all(r == 2)
    np.testing.assert_allclose(x, np.linalg.pinv(A.astype(np.float64)) @ Bm, atol=t * 100)


def _record_broadcasts(monkeypatch):
    """The ops that take the per-item broadcast path (Context._broadcast), in call order."""
    calls = []
    real = _core.Context._broadcast
    monkeypatch.setattr(_core.Context, "_broadcast", staticmethod(lambda *a: calls.append(a[0]) or real(*a)))
    return calls


@pytest.mark.parametrize("dtype", DTYPES)
def test_shared_operand_is_folded_into_one_call(rng, dtype, monkeypatch):
    """CPU backend: one A (or Q) for a batch of X is one library call with the batch folded into columns,
    never the per-item broadcast (which decomposed A once per item). Results match the per-item ones in
    every layout of X; a failing item is still reported with its batch index."""
    ctx = sg.Context("cpu")
    calls = _record_broadcasts(monkeypatch)
    m, n, k = 4, 6, 3
    t = tol(dtype)
    A = low_rank(rng, m, n, 2, ()).astype(dtype)
    N, nul = ctx.null_space(A)
    Q = np.ascontiguousarray(N[:, :nul])
    Ad, Qd = A.astype(np.float64), Q.astype(np.float64)
    Pd = Qd @ Qd.T  # projector onto null(A)
    base = rng.standard_normal((2, 3, n, 2 * k)).astype(dtype)
    layouts = {"C": np.ascontiguousarray(base[..., :k]), "F per matrix": np.asfortranarray(base[..., :k]),
               "strided": base[..., ::2], "transposed": np.ascontiguousarray(base[..., :k].swapaxes(-1, -2)).swapaxes(-1, -2)}
    for name, X in layouts.items():
        Xd = X.astype(np.float64)
        for lead in [(), (1, 1)]:  # A (m, n) and A (1, 1, m, n): the same shared matrix
            Al, Ql = A.reshape(lead + A.shape), Q.reshape(lead + Q.shape)
            np.testing.assert_allclose(ctx.project(Al, X), Pd @ Xd, atol=t * 50, err_msg=name)
            np.testing.assert_allclose(ctx.project(Al, X, "row"), Xd - Pd @ Xd, atol=t * 50, err_msg=name)
            np.testing.assert_allclose(ctx.project_basis(Ql, X), Pd @ Xd, atol=t * 50, err_msg=name)
            np.testing.assert_allclose(ctx.project_basis(Ql, X, True), Xd - Pd @ Xd, atol=t * 50, err_msg=name)
        Bm = np.ascontiguousarray(np.moveaxis(np.moveaxis(X, -2, 0)[:m], 0, -2))  # (2, 3, m, k)
        x, r = ctx.lstsq(A, Bm, return_rank=True)
        assert x.shape == (2, 3, n, k) and r.shape == (2, 3) and r.dtype == np.int64 and np.all(r == 2)
        np.testing.assert_allclose(x, np.linalg.pinv(Ad) @ Bm.astype(np.float64), atol=t * 100, err_msg=name)
    # vectors: X with one dimension fewer than A (1, m, n)
    v = rng.standard_normal((5, n)).astype(dtype)
    np.testing.assert_allclose(ctx.project(A[None], v), v.astype(np.float64) @ Pd, atol=t * 50)
    np.testing.assert_allclose(ctx.project_basis(Q[None], v), v.astype(np.float64) @ Pd, atol=t * 50)
    b = rng.standard_normal((5, m)).astype(dtype)
    x, r = ctx.lstsq(A[None], b, return_rank=True)
    assert x.shape == (5, n) and r.shape == (5,)
    np.testing.assert_allclose(x, b.astype(np.float64) @ np.linalg.pinv(Ad).T, atol=t * 100)
    assert calls == [], f"per-item broadcast used for a shared operand: {calls}"
    # a NaN in item (1, 2): the folded call fails, the per-item rerun names the item
    X = np.ascontiguousarray(base[..., :k])
    X[1, 2, 0, 0] = np.nan
    for f in (lambda: ctx.project(A, X), lambda: ctx.project_basis(Q, X), lambda: ctx.lstsq(A, X[..., :m, :])):
        with pytest.raises(sg.NonFiniteError) as e:
            f()
        assert e.value.batch_index == (1, 2)
    # rows of X that do not match A: the usual shape error
    with pytest.raises(sg.SpecgradArgumentError, match="X"):
        ctx.project(A, np.zeros((3, n + 1, k), dtype))


def _cuda_shared_case(rng, dtype, monkeypatch, m, n):
    """A CUDA context (skip without one), the per-item broadcast recorder, the tolerance, and a rank-2 m×n A
    to share across a batch."""
    try:
        ctx = sg.Context("cuda")
    except sg.SpecgradError as e:
        pytest.skip(f"no CUDA backend here: {e}")
    return ctx, _record_broadcasts(monkeypatch), tol(dtype), low_rank(rng, m, n, 2, ()).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_project_with_shared_A_on_cuda_uses_its_basis(rng, dtype, monkeypatch):
    """CUDA backend: project with one A for a batch of X is null_space(A) once and project_basis over the
    batch, never the per-item project (which decomposed A for every item). Runs on a GPU and, in CI, on
    the emulated device (scripts/test-python's second pass)."""
    m, n, k = 4, 6, 3
    ctx, calls, t, A = _cuda_shared_case(rng, dtype, monkeypatch, m, n)
    Ad = A.astype(np.float64)
    _, s, Vh = np.linalg.svd(Ad)
    Pd = Vh[2:].T @ Vh[2:]  # projector onto null(A) (rank 2)
    X = rng.standard_normal((2, 3, n, k)).astype(dtype)
    Xd = X.astype(np.float64)
    for lead in [(), (1, 1)]:
        Al = A.reshape(lead + A.shape)
        np.testing.assert_allclose(ctx.project(Al, X), Pd @ Xd, atol=t * 50)
        np.testing.assert_allclose(ctx.project(Al, X, "row"), Xd - Pd @ Xd, atol=t * 50)
    v = rng.standard_normal((5, n)).astype(dtype)
    np.testing.assert_allclose(ctx.project(A[None], v), v.astype(np.float64) @ Pd, atol=t * 50)
    assert "project" not in calls and "project_basis" in calls, calls
    # a NaN in item (1, 2): reported by project, with that item's index (the per-item path)
    Xn = X.copy()
    Xn[1, 2, 0, 0] = np.nan
    with pytest.raises(sg.NonFiniteError) as e:
        ctx.project(A, Xn)
    assert e.value.op == "project" and e.value.batch_index == (1, 2)
    # nullity 0: nothing to project, but X is still checked (the per-item path)
    calls.clear()
    F = rng.standard_normal((n + 1, n)).astype(dtype)
    np.testing.assert_allclose(ctx.project(F, X), 0, atol=t * 50)
    np.testing.assert_allclose(ctx.project(F, X, "row"), X, atol=t * 50)
    assert "project" in calls


@pytest.mark.parametrize("dtype", DTYPES)
def test_lstsq_with_shared_A_on_cuda_factors_it_once(rng, dtype, monkeypatch):
    """CUDA backend: lstsq with one A for a batch of B is A⁺ = lstsq(A, I) once, applied by matmul, never the
    per-item call (which decomposed A for every item); the rank is repeated over the batch shape. Runs on a
    GPU and, in CI, on the emulated device (scripts/test-python's second pass)."""
    m, n, k = 6, 4, 3
    ctx, calls, t, A = _cuda_shared_case(rng, dtype, monkeypatch, m, n)
    Pd = np.linalg.pinv(A.astype(np.float64))
    B = rng.standard_normal((2, 3, m, k)).astype(dtype)
    for lead in [(), (1, 1)]:
        x, r = ctx.lstsq(A.reshape(lead + A.shape), B, return_rank=True)
        assert x.shape == (2, 3, n, k) and r.shape == (2, 3) and r.dtype == np.int64 and np.all(r == 2)
        np.testing.assert_allclose(x, Pd @ B.astype(np.float64), atol=t * 100)
    b = rng.standard_normal((5, m)).astype(dtype)
    x, r = ctx.lstsq(A[None], b, return_rank=True)
    assert x.shape == (5, n) and r.shape == (5,) and np.all(r == 2)
    np.testing.assert_allclose(x, b.astype(np.float64) @ Pd.T, atol=t * 100)
    assert calls == [], f"per-item broadcast used for a shared A: {calls}"
    # a NaN in item (1, 2): the per-item path names it; with the check off it stays in that item
    Bn = B.copy()
    Bn[1, 2, 0, 0] = np.nan
    with pytest.raises(sg.NonFiniteError) as e:
        ctx.lstsq(A, Bn)
    assert e.value.op == "lstsq" and e.value.batch_index == (1, 2)
    ctx.set_check_finite(False)
    x = ctx.lstsq(A, Bn)
    assert not np.isfinite(x[1, 2]).all()
    keep = np.ones((2, 3), bool)
    keep[1, 2] = False
    np.testing.assert_allclose(x[keep], (Pd @ B.astype(np.float64))[keep], atol=t * 100)


def test_project_basis_rejects_bad_shapes(rng):
    X = rng.standard_normal((4, 2))
    with pytest.raises(sg.SpecgradArgumentError, match="at most 4 columns"):
        sg.project_basis(rng.standard_normal((4, 5)), X)
    with pytest.raises(sg.SpecgradArgumentError, match="X"):
        sg.project_basis(rng.standard_normal((3, 2)), X)
    with pytest.raises(ValueError, match="batch"):
        sg.project_basis(rng.standard_normal((2, 4, 2)), rng.standard_normal((3, 4, 2)))
    # an empty basis: projection 0, complement the identity
    E = np.zeros((4, 0))
    np.testing.assert_array_equal(sg.project_basis(E, X), 0.0)
    np.testing.assert_array_equal(sg.project_basis(E, X, complement=True), X)


@pytest.mark.parametrize("dtype,scale", [(np.float64, 1e250), (np.float64, 1e-250), (np.float32, 1e30),
                                         (np.float32, 1e-30)])
@pytest.mark.parametrize("n", [6, 40])
def test_extreme_scales_match_numpy(rng, dtype, scale, n):
    """Entries near the ends of the range (squares overflow or underflow in the dtype): LAPACK scales
    inside the call, the CUDA backend before its solvers (k_range_scale). Values relative to the scale,
    vectors, rank and the minimum-norm solution must be those of the unscaled problem."""
    A0 = sym_with_spectrum(rng, np.linspace(-2.0, 3.0, n) + 0.1 * rng.random(n), (2,))
    A = (A0 * scale).astype(dtype)
    w, V = sg.eigh(A)
    wr, Vr = np.linalg.eigh(A0)
    t = tol(dtype)
    np.testing.assert_allclose(w / dtype(scale), wr, atol=t * 10 * np.abs(wr).max(), rtol=0)
    overlap = np.abs(np.einsum("...ik,...ik->...k", V.astype(np.float64), Vr))
    np.testing.assert_allclose(overlap, 1.0, atol=t * 100)
    B0 = rng.standard_normal((2, n + 3, n // 2))  # tall: the QR-first path on CUDA at n = 40
    for M0 in (B0, B0.swapaxes(-1, -2), A0):
        M = (M0 * scale).astype(dtype)
        S = sg.svdvals(M)
        Sr = np.linalg.svd(M0, compute_uv=False)
        np.testing.assert_allclose(S / dtype(scale), Sr, atol=t * 10 * Sr.max(), rtol=0)
        np.testing.assert_array_equal(sg.matrix_rank(M), np.linalg.matrix_rank(M0))
    b = rng.standard_normal((2, n + 3))
    x = sg.lstsq((B0 * scale).astype(dtype), b.astype(dtype))
    xr = np.stack([np.linalg.lstsq(B0[i], b[i], rcond=None)[0] for i in range(2)])
    np.testing.assert_allclose(x.astype(np.float64) * scale, xr, atol=t * 100 * np.abs(xr).max())


@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["tall", "wide", "rank_deficient", "vector"])
def test_lstsq_matches_numpy(rng, bshape, dtype, case):
    m, n, k = {"tall": (7, 4, 2), "wide": (3, 6, 2), "rank_deficient": (6, 5, 3), "vector": (6, 4, 1)}[case]
    A = low_rank(rng, m, n, 2, bshape) if case == "rank_deficient" else rng.standard_normal(bshape + (m, n))
    B = rng.standard_normal(bshape + ((m,) if case == "vector" else (m, k)))
    A, B = A.astype(dtype), B.astype(dtype)
    X, r = sg.lstsq(A, B, return_rank=True)
    assert X.shape == bshape + ((n,) if case == "vector" else (n, k))
    t = tol(dtype, f64=1e-8, f32=5e-3)
    for idx in np.ndindex(*bshape):
        xr, _, rr, _ = np.linalg.lstsq(A[idx].astype(np.float64), B[idx].astype(np.float64), rcond=None)
        np.testing.assert_allclose(X[idx], xr, atol=t * max(1, np.abs(xr).max()))
        assert np.reshape(r, -1)[np.ravel_multi_index(idx, bshape) if bshape else 0] == rr
    # batched reference: pinv
    Bm = B[..., None] if case == "vector" else B
    ref = np.linalg.pinv(A.astype(np.float64)) @ Bm
    np.testing.assert_allclose(X.reshape(ref.shape), ref, atol=t * max(1, np.abs(ref).max()))


@pytest.mark.parametrize("bshape", BATCH_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mn", [(5, 3), (3, 5)])
def test_pinv_matches_numpy(rng, bshape, dtype, mn):
    A = low_rank(rng, *mn, 2, bshape).astype(dtype)
    P = sg.pinv(A)
    ref = np.linalg.pinv(A.astype(np.float64))
    np.testing.assert_allclose(P, ref, atol=tol(dtype, 1e-9, 5e-3) * np.abs(ref).max())
    Pf = sg.pinv(np.asfortranarray(A[..., :, :]).swapaxes(-1, -2).copy().swapaxes(-1, -2))  # F-per-matrix path
    np.testing.assert_allclose(Pf, ref, atol=tol(dtype, 1e-9, 5e-3) * np.abs(ref).max())


def test_contexts_and_threads(rng):
    A = sym_with_spectrum(rng, [1.0, 2.0, 3.0, 5.0], (16,))
    with sg.Context("cpu", threads=1) as c1, sg.Context("auto", threads=2) as c2:
        assert c1.backend == "cpu" and c2.backend in ("cpu", "cuda")
        c1w = c1.eigvalsh(A)
        np.testing.assert_allclose(c1w, c2.eigvalsh(A), atol=1e-10)
    with sg.Context("cpu", cache_bytes=0) as c0:  # the device cache knob: accepted, nothing to cache on the CPU
        c0.set_cache_bytes(1 << 30)
        assert c0.cache_held == 0
        np.testing.assert_allclose(c0.eigvalsh(A), c1w, atol=0)
    for bad in (dict(cache_bytes=-1), dict(chunk_bytes=-5)):
        with pytest.raises(ValueError, match="bytes"):
            sg.Context("cpu", **bad)
    c = sg.Context("cpu", check_finite=False)
    A[3, 0, 0] = np.inf  # unchecked: must not raise NonFiniteError (LAPACK may still fail, or return junk)
    try:
        c.eigvalsh(A)
    except sg.NonFiniteError:  # pragma: no cover
        pytest.fail("check_finite=False still checked")
    except sg.SpecgradError:
        pass


@pytest.mark.parametrize("dtype", DTYPES)
def test_check_finite_off_keeps_nonfinite_in_its_matrix(rng, dtype):
    """check_finite=False on the suite's backend ($SPECGRAD_BACKEND: the CPU, and the (emulated) CUDA device
    in scripts/test-python's second pass): the matrix holding NaN/Inf is named by the error, or its own
    outputs carry NaN; every other matrix gets what it gets in a finite batch."""
    backend = os.environ.get("SPECGRAD_BACKEND", "cpu")
    B, bad = 4, 2
    for n in (6, 40):  # CUDA: Jacobi / XsyevBatched, gesvdj / Jordan–Wielandt
        A = rng.standard_normal((B, n, n)).astype(dtype)
        S = ((A + A.swapaxes(-1, -2)) / 2).astype(dtype)
        X = rng.standard_normal((B, n, 2)).astype(dtype)
        with sg.Context(backend) as ref, sg.Context(backend, check_finite=False) as c:
            for name, f, args in (("eigvalsh", "eigvalsh", (S,)), ("svdvals", "svdvals", (A,)),
                                  ("project", "project", (A, X)), ("lstsq", "lstsq", (A, X))):
                want = getattr(ref, f)(*args)
                bad_args = [a.copy() for a in args]
                bad_args[0][bad, n - 1, 0] = np.nan if n == 6 else np.inf
                try:
                    got = getattr(c, f)(*bad_args)
                except sg.NonFiniteError:  # pragma: no cover
                    pytest.fail(f"{name}: check_finite=False still checked")
                except sg.SpecgradError as e:
                    assert e.index == bad, f"{name} n={n}: {e}"
                    continue
                assert not np.isfinite(got[bad]).all(), f"{name} n={n}: matrix {bad} holds NaN/Inf, finite result"
                keep = [b for b in range(B) if b != bad]
                np.testing.assert_allclose(got[keep], want[keep], rtol=tol(dtype, 1e-9, 1e-3), atol=tol(dtype, 1e-9, 1e-3),
                                           err_msg=f"{name} n={n} ({backend})")


def _no_gpu_reason():
    n, why = sg.cuda_devices()
    return None if n > 0 else f"no usable CUDA device: {why}"


@pytest.mark.skipif(_no_gpu_reason() is not None, reason=str(_no_gpu_reason()))
def test_cuda_context_on_host_arrays_matches_cpu(rng):
    """numpy arrays on a CUDA context (host batches streamed to the device) agree with the CPU path."""
    cpu, gpu = sg.Context("cpu"), sg.Context("cuda")
    A = sym_with_spectrum(rng, np.linspace(-2, 3, 40), (64,))
    wc, Vc = cpu.eigh(A)
    wg, Vg = gpu.eigh(A)
    np.testing.assert_allclose(wg, wc, atol=1e-9)
    np.testing.assert_allclose(projector(Vg[..., :5]), projector(Vc[..., :5]), atol=1e-8)
    R = rng.standard_normal((64, 20, 12))
    np.testing.assert_allclose(gpu.svdvals(R), cpu.svdvals(R), atol=1e-9)
    L = low_rank(rng, 9, 7, 3, (32,))
    np.testing.assert_array_equal(gpu.matrix_rank(L), cpu.matrix_rank(L))
    G = rng.standard_normal(A.shape)
    np.testing.assert_allclose(gpu.eigh_backward(wc, Vc, gV=G), cpu.eigh_backward(wc, Vc, gV=G), atol=1e-8)
    Q = np.linalg.qr(rng.standard_normal((500, 8, 8)))[0][..., :3]
    X = rng.standard_normal((500, 8, 5))
    np.testing.assert_allclose(gpu.project_basis(Q, X, True), cpu.project_basis(Q, X, True), atol=1e-12)
    gpu.set_cache_bytes(0)  # scratch mapped and unmapped per call: same results, nothing held after
    np.testing.assert_allclose(gpu.eigh(A)[0], wc, atol=1e-9)
    assert gpu.cache_held == 0


def _outcome(f):
    """'ok' (every output finite), 'OK-NONFINITE' (a status of success with inf/NaN out) or the error's status."""
    try:
        r = f()
    except sg.SpecgradError as e:
        return e.status_name
    rs = r if isinstance(r, tuple) else (r,)
    return "ok" if all(np.isfinite(np.asarray(x, dtype=np.float64)).all() for x in rs) else "OK-NONFINITE"


@pytest.mark.skipif(_no_gpu_reason() is not None, reason=str(_no_gpu_reason()))
def test_backends_agree_across_the_range(rng):
    """Every forward op, the regularizers and eigh_backward on finite inputs from 1e-30 to max/4, on both
    backends: the same outcome (success or the same error status), and never success with inf/NaN in an
    output. Found three disagreements before 2026-12-01 (an overflowing σmax: a LAPACK fault on the CPU,
    rank 0 on CUDA; an overflowing lstsq solution or regularizer loss: NaN/inf with SG_OK on both)."""
    cpu, gpu = sg.Context("cpu"), sg.Context("cuda")
    for dt in (np.float32, np.float64):
        big = float(np.finfo(dt).max) / 4
        for sc in (1e-30, 1.0, 1e30, big):
            for m, n in ((3, 3), (5, 3), (40, 40)):
                # |a| <= sc: at max/4 the 40×40 norms (σmax, λmax) pass the largest value; B/A ~ 1e10 (at
                # scale 1e-30, 1e40: a float32 lstsq solution that overflows)
                A = (rng.uniform(-1, 1, (2, m, n)) * sc).astype(dt)
                S = rng.uniform(-1, 1, (2, n, n))
                S = ((S + np.swapaxes(S, -1, -2)) * (sc / 2)).astype(dt)
                X = rng.standard_normal((2, n, 2)).astype(dt)
                B = (rng.uniform(-1, 1, (2, m, 2)) * min(max(1.0, sc) * 1e10, big)).astype(dt)
                w, V = np.linalg.eigh(rng.standard_normal((2, n, n)) + np.eye(n))
                w, V = (w * (sc / (4 * n))).astype(dt), V.astype(dt)  # |w| < 2√n + 1: finite
                G = rng.standard_normal((2, n, n)).astype(dt)
                ops = {"eigh": lambda c: c.eigh(S), "svd": lambda c: c.svd(A), "rank": lambda c: c.matrix_rank(A),
                       "nullspace": lambda c: c.null_space(A), "project": lambda c: c.project(A, X),
                       "lstsq": lambda c: c.lstsq(A, B), "spectral": lambda c: c.regularizer(A, "spectral"),
                       "nuclear": lambda c: c.regularizer(A, "nuclear"), "ortho": lambda c: c.regularizer(A, "ortho"),
                       "eigh_backward exact": lambda c: c.eigh_backward(w, V, gV=G, mode="exact"),
                       "eigh_backward mask": lambda c: c.eigh_backward(w, V, gV=G, mode="mask")}
                for name, op in ops.items():
                    oc, og = _outcome(lambda: op(cpu)), _outcome(lambda: op(gpu))
                    where = f"{name} {np.dtype(dt).name} {m}x{n} scale {sc:g}"
                    assert "OK-NONFINITE" not in (oc, og), f"{where}: CPU {oc}, CUDA {og}"
                    assert oc == og, f"{where}: CPU {oc}, CUDA {og}"


def geometric(rng, shape, m, n):
    """Matrices with σ_i = 2^-i: every cutoff used below is a factor 4/3 or more from a σ (one rank per
    matrix on every backend and dtype)."""
    k = min(m, n)
    U, _ = np.linalg.qr(rng.standard_normal(shape + (m, m)))
    V, _ = np.linalg.qr(rng.standard_normal(shape + (n, n)))
    return (U[..., :k] * 2.0 ** -np.arange(k)) @ V[..., :k].swapaxes(-1, -2)


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_matrix_tolerances_match_one_call_per_matrix(rng, dtype):
    """atol / rtol arrays broadcast to the batch shape (numpy 2's array tol, torch's tensor atol): each
    matrix gets its own pair, in matrix_rank, null_space, project, lstsq and pinv, the same as a call on that
    matrix alone with the pair as numbers; a scalar partner applies to every matrix."""
    m, n = 5, 4
    A = geometric(rng, (2, 3), m, n).astype(dtype)
    at = np.array([[0.0, 0.75, 0.375], [0.1, 1.5, 0.6]])
    rt = np.array([0.3, -1.0, 0.15])  # broadcasts over the first batch dimension
    X, B = rng.standard_normal((2, 3, n, 2)).astype(dtype), rng.standard_normal((2, 3, m, 2)).astype(dtype)
    t = tol(dtype)
    for kw in ({"atol": at}, {"rtol": rt}, {"atol": at, "rtol": rt}, {"atol": at, "rtol": 0.2},
               {"atol": 0.3, "rtol": rt}, {"atol": at.tolist()}):
        r = sg.matrix_rank(A, **kw)
        N, nul = sg.null_space(A, **kw)
        Y = sg.project(A, X, "row", **kw)
        Xs, r2 = sg.lstsq(A, B, return_rank=True, **kw)
        P = sg.pinv(A, **kw)
        assert r.shape == (2, 3) and ("atol" not in kw or np.ndim(kw["atol"]) == 0 or len(set(np.reshape(r, -1))) > 1), (kw, r)
        for i in np.ndindex(2, 3):
            one = {k: (np.broadcast_to(v, (2, 3))[i] if np.ndim(v) else v) for k, v in kw.items()}
            a = A[i]
            assert r[i] == sg.matrix_rank(a, **one) == r2[i] == n - nul[i], (kw, i)
            want = sum(2.0 ** -j > max(one.get("atol", 0.0), (one.get("rtol", -1.0) if one.get("rtol", -1.0) >= 0 else
                                                                (0.0 if one.get("atol", 0.0) > 0 else max(m, n) * np.finfo(dtype).eps)))
                       for j in range(min(m, n)))
            assert r[i] == want, (kw, i, r[i], want)
            N1, q = sg.null_space(a, **one)
            np.testing.assert_allclose(projector(N[i][:, :q].astype(np.float64)), projector(N1[:, :q].astype(np.float64)),
                                       atol=t * 10)
            np.testing.assert_allclose(Y[i], sg.project(a, X[i], "row", **one), atol=t * 10)
            np.testing.assert_allclose(Xs[i], sg.lstsq(a, B[i], **one), atol=t * 100)
            np.testing.assert_allclose(P[i], sg.pinv(a, **one), atol=t * 100)
    # numpy's pinv with an rcond array (relative cutoff) agrees
    rc = np.array([[0.3, 0.1, 0.6], [0.2, 0.7, 0.05]])
    np.testing.assert_allclose(sg.pinv(A, rtol=rc), np.linalg.pinv(A.astype(np.float64), rcond=rc), atol=t * 100)


def test_per_matrix_tolerances_with_a_shared_matrix(rng):
    """One A for a batch of right-hand sides with a tolerance per item: each item has its own rank (the
    shared-A shortcuts, one decomposition for the batch, would give them all one), also for vectors."""
    A = geometric(rng, (), 5, 4)
    at = np.array([0.0, 0.3, 0.6, 0.9])
    B, X = rng.standard_normal((4, 5, 2)), rng.standard_normal((4, 4))
    Xs, r = sg.lstsq(A, B, atol=at, return_rank=True)
    assert list(r) == [4, 2, 1, 1]
    Y = sg.project(A[None], X, atol=at)  # X: 4 vectors (one dimension fewer than A)
    assert Y.shape == (4, 4)
    for i in range(4):
        np.testing.assert_allclose(Xs[i], sg.lstsq(A, B[i], atol=at[i]), atol=1e-12)
        np.testing.assert_allclose(Y[i], sg.project(A, X[i], atol=at[i]), atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_tolerance_keywords_match_numpy(rng, dtype):
    """numpy's own keywords give numpy's results: matrix_rank(tol=) (absolute, also tol=0 and arrays),
    pinv(rcond=) and lstsq(rcond=) (relative); with atol / rtol as well they are refused as ambiguous."""
    A = geometric(rng, (2, 3), 6, 5).astype(dtype)
    A[0, 0] = 0.0
    b = rng.standard_normal((6,)).astype(dtype)
    t = tol(dtype)
    for tl in (0.3, 0.0, np.array([[0.1, 0.6, 0.0], [0.2, 1.5, 0.05]])):
        np.testing.assert_array_equal(sg.matrix_rank(A, tol=tl), np.linalg.matrix_rank(A, tol=tl))
    for rc in (0.1, np.array([[0.3, 0.1, 0.6], [0.2, 0.7, 0.05]])):
        np.testing.assert_allclose(sg.pinv(A, rcond=rc), np.linalg.pinv(A, rcond=rc), atol=t * 100)
    for rc in (None, 0.3, 1e-3):
        x, *_, = np.linalg.lstsq(A[1, 1], b, rcond=rc)
        np.testing.assert_allclose(sg.lstsq(A[1, 1], b, rcond=rc), x, atol=t * 100)
    assert np.linalg.matrix_rank(A[0, 0], tol=0.0) == sg.matrix_rank(A[0, 0], tol=0.0) == 0
    with pytest.raises(ValueError, match="give numpy's tol or atol / rtol, not both"):
        sg.matrix_rank(A, atol=0.1, tol=0.2)
    with pytest.raises(ValueError, match="give numpy's rcond or atol / rtol, not both"):
        sg.pinv(A, rtol=0.1, rcond=0.2)
    with pytest.raises(sg.SpecgradArgumentError, match="not both"):
        sg.matrix_rank(A, atol=[0.0, 0.1], tol=0.2)
    # a zero atol of any numeric type is the default, not a second tolerance
    np.testing.assert_array_equal(sg.matrix_rank(A, atol=np.float32(0), tol=0.3), np.linalg.matrix_rank(A, tol=0.3))
    # numpy gives negative and non-finite values meanings of their own: refused, not reinterpreted
    for kw in ({"tol": -1.0}, {"tol": np.nan}, {"tol": np.array([[0.1, -1, 0], [0, 0, 0]])}):
        with pytest.raises(sg.SpecgradArgumentError, match="must be finite and >= 0"):
            sg.matrix_rank(A, **kw)
    with pytest.raises(sg.SpecgradArgumentError, match="must be finite and >= 0"):
        sg.lstsq(A[0, 0], b, rcond=-1)


def _fresh_interpreter(code, what):
    """Runs code in a new interpreter that imports this checkout's specgrad; fails on a hang or nonzero exit."""
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(sg.__file__))] +
                                                       [p for p in [os.environ.get("PYTHONPATH")] if p]))
    try:
        r = subprocess.run([sys.executable, "-c", code], env=env, timeout=120, capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        pytest.fail(what)
    assert r.returncode == 0, r.stdout + r.stderr


def test_fork_workers_after_batched_calls():
    """The DataLoader / multiprocessing pattern: batched calls on two threads in the parent, then forked
    workers make their own. GNU OpenMP's pool does not survive fork (a team in the child waits for ever), so
    the library runs the children's calls on one thread: same results, no hang."""
    _fresh_interpreter("""
import multiprocessing as mp, numpy as np, specgrad as sg
A = np.random.default_rng(0).standard_normal((4, 512, 8, 8)); A = A + A.swapaxes(-1, -2)
ctx = sg.Context("cpu", threads=2)
ref = [ctx.eigh(a)[0] for a in A]
cpu = sg.get_context("cpu")  # the shared one too (a CUDA context would not survive fork: other test)
cpu.eigh(A[0])
def work(i):
    return cpu.eigh(A[i])[0], ctx.eigh(A[i])[0], sg.Context("cpu", threads=4).eigh(A[i])[0]
with mp.get_context("fork").Pool(2) as pool:
    res = pool.map_async(work, range(4)).get(timeout=60)
for i, r in enumerate(res):
    for w in r:
        np.testing.assert_array_equal(w, ref[i])
""", "forked workers hung after the parent's batched calls")


def test_fork_while_another_thread_is_in_a_call():
    """A fork while another thread is inside a call on a context: in the child that thread does not exist,
    so the context's lock it held is replaced, and the library's single-BLAS-thread section it had entered is
    reset; the child's calls on the same context (and the default one) run."""
    _fresh_interpreter("""
import os, signal, threading, numpy as np, specgrad as sg
A = np.random.default_rng(1).standard_normal((64, 6, 6)); A = A + A.swapaxes(-1, -2)
ctx = sg.Context("cpu", threads=1)
inside, release = threading.Event(), threading.Event()
def prog(f):
    if f < 1 and not inside.is_set():
        inside.set(); release.wait(60)
ctx.set_progress(prog, every=0)
t = threading.Thread(target=ctx.eigh, args=(A,)); t.start()
assert inside.wait(60)
pid = os.fork()
if pid == 0:
    signal.alarm(30)
    ctx.set_progress(None)
    ok = np.array_equal(ctx.eigh(A[:4])[0], sg.get_context("cpu").eigh(A[:4])[0])
    os._exit(0 if ok else 3)
release.set(); t.join()
_, st = os.waitpid(pid, 0)
raise SystemExit(f"child: {st}" if st else 0)
""", "the forked child hung on the context another thread was using")


def test_fork_during_a_main_thread_call_keeps_ctrl_c_in_the_child():
    """A long call on the main thread swaps in its own SIGINT handler (Ctrl-C stops it at the next step).
    A fork from another thread during it leaves a child where that call does not exist: the default
    handler is put back, so Ctrl-C raises KeyboardInterrupt there (it was swallowed for good)."""
    _fresh_interpreter("""
import os, signal, threading, time, numpy as np, specgrad as sg
A = np.random.default_rng(0).standard_normal((200, 16, 16)); A = A + A.swapaxes(-1, -2)  # large enough to arm
ctx = sg.Context("cpu", threads=1)
inside, forked, res = threading.Event(), threading.Event(), {}
def prog(f):
    if f < 1 and not inside.is_set():
        inside.set(); forked.wait(60)
ctx.set_progress(prog, every=0)
def forker():
    inside.wait(60)
    pid = os.fork()
    if pid == 0:
        signal.alarm(20)
        try:
            os.kill(os.getpid(), signal.SIGINT); time.sleep(2)
        except KeyboardInterrupt:
            os._exit(0)
        os._exit(4)
    res["pid"] = pid; forked.set()
t = threading.Thread(target=forker); t.start()
ctx.eigh(A)
t.join()
_, st = os.waitpid(res["pid"], 0)
raise SystemExit(f"child: {st}" if st else 0)
""", "the forked child hung")


def test_cuda_context_from_before_fork_in_the_child():
    """CUDA does not survive fork: in a forked child the parent's CUDA contexts (an explicit one, the shared
    default) raise SG_ERR_CUDA naming the fork, before reaching the driver; the shared default is dropped, so
    the child's next default use creates its own context (which a real GPU may refuse, with the reason)."""
    if os.environ.get("SPECGRAD_BACKEND", "cpu") != "cuda":
        pytest.skip("needs SPECGRAD_BACKEND=cuda (CI's second pass on the emulated device, or a GPU)")
    _fresh_interpreter("""
import os, signal, numpy as np, specgrad as sg
A = np.eye(3)[None].repeat(4, 0)
ctx = sg.Context("cuda"); ctx.eigh(A); sg.eigh(A)
shared = sg.get_context("cuda")
pid = os.fork()
if pid == 0:
    signal.alarm(30)
    codes = []
    for c in (ctx, shared):
        try:
            c.eigh(A); codes.append(4)
        except sg.SpecgradError as e:
            codes.append(0 if e.status_name == "SG_ERR_CUDA" and "created before fork()" in e.message else 5)
    try:
        codes.append(6 if sg.get_context("cuda") is shared else 0)
    except sg.SpecgradError as e:  # a real GPU: the parent's CUDA use rules the child out
        codes.append(0 if "forked child" in str(e) else 7)
    codes.append(0 if np.array_equal(sg.Context("cpu").eigh(A)[0], np.ones((4, 3))) else 8)
    os._exit(max(codes))
_, st = os.waitpid(pid, 0)
ctx.eigh(A)  # the parent's contexts still work
raise SystemExit(f"child: {st}" if st else 0)
""", "the forked child hung on its parent's CUDA context")


def test_per_matrix_tolerance_errors():
    """Arrays that do not broadcast to the batch shape, bad elements (named by index) and non-numbers are
    argument errors, also for empty batches (no library call); 0-d and one-element arrays are numbers."""
    A = np.eye(3)[None].repeat(2, 0)
    with pytest.raises(sg.SpecgradArgumentError, match=r"atol of shape \(3,\) does not broadcast to the batch shape \(2,\)"):
        sg.matrix_rank(A, atol=np.ones(3))
    with pytest.raises(sg.SpecgradArgumentError, match="does not broadcast"):
        sg.matrix_rank(np.zeros((0, 3, 3)), rtol=np.ones(2))
    with pytest.raises(sg.SpecgradArgumentError, match=r"rtol\[1\] = nan"):
        sg.pinv(A, rtol=[0.1, np.nan])
    with pytest.raises(sg.SpecgradArgumentError, match=r"atol\[0, 1\] = -1"):
        sg.lstsq(A, A, atol=[[0.0, -1.0]])
    with pytest.raises(sg.SpecgradArgumentError, match="must be a number or an array of numbers"):
        sg.matrix_rank(A, atol="x")
    with pytest.raises(sg.SpecgradArgumentError, match="complex"):
        sg.matrix_rank(A, rtol=np.array([0.1, 0.2j]))
    assert list(sg.matrix_rank(A, atol=np.float32(0.5))) == [3, 3]
    assert list(sg.matrix_rank(A, rtol=np.array([2.0]))) == [0, 0]
    assert list(sg.matrix_rank(A, rtol=[-np.inf, 2.0])) == [3, 0]  # -inf: the default, as for a number


def test_progress_callback(rng):
    """Context.set_progress: increasing fractions then 1.0 per call, on the calling thread; True from the
    callback stops the call (SG_ERR_CANCELLED), an exception stops it and is raised, the context stays
    usable; None turns it off."""
    import threading

    A = sym_with_spectrum(rng, [1.0, 2.0, 3.0, 4.0, 5.0], (40,))
    with sg.Context("cpu", threads=1) as ctx:
        seen, threads = [], set()

        def record(f):
            seen.append(f)
            threads.add(threading.get_ident())

        ctx.set_progress(record, every=0)
        w, V = ctx.eigh(A)
        assert seen[-1] == 1.0 and seen.count(1.0) == 1 and len(seen) >= 40
        assert all(0 < a < b for a, b in zip(seen, seen[1:])) and threads == {threading.get_ident()}
        np.testing.assert_allclose(w, np.linalg.eigvalsh(A), atol=1e-12)  # results as without progress

        calls = []

        def boom(f):
            calls.append(f)
            raise KeyError("stop")

        ctx.set_progress(boom, every=0)
        with pytest.raises(KeyError, match="stop"):
            ctx.eigh(A)
        assert len(calls) == 1  # not called again during that call
        stops = []
        ctx.set_progress(lambda f: stops.append(f) or True, every=0)  # True: stop the call
        with pytest.raises(sg.SpecgradError) as e:
            ctx.eigh(A)
        assert e.value.status_name == "SG_ERR_CANCELLED" and "cancelled" in e.value.message and len(stops) == 1
        ctx.set_progress(None)
        w2, _ = ctx.eigh(A)
        assert np.array_equal(w, w2) and len(calls) == 1
        with pytest.raises(sg.SpecgradArgumentError, match="every"):
            ctx.set_progress(record, every=-1)
        with pytest.raises(TypeError, match="callable"):
            ctx.set_progress(3)


def test_ctrl_c_stops_a_long_call():
    """Ctrl-C (SIGINT) during a long call stops it at the library's next step, with no progress callback
    set (and after set_progress(None)): KeyboardInterrupt, and the C call itself returned SG_ERR_CANCELLED
    (last_error says so). Without the internal callback the whole batch ran and the interrupt came after it,
    with an empty last_error. The call takes seconds on one thread; the signal comes after 0.1 s."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run on the main thread only")
    # per-matrix column-major already: no copy before the C call for the signal to land in
    A = np.random.default_rng(3).standard_normal((1500, 128, 128)).transpose(0, 2, 1)
    # Python's own handler, as in an interactive session (a job started in the background, CI's for one,
    # inherits SIGINT ignored, and Python then installs none)
    prev = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _ctrl_c_case(A)
    finally:
        signal.signal(signal.SIGINT, prev)


def _ctrl_c_case(A):
    import signal
    import threading

    with sg.Context("cpu", threads=1) as ctx:
        for k in range(2):
            if k:
                ctx.set_progress(lambda f: None, every=0)
                ctx.set_progress(None)
            t = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT))
            t.start()
            try:
                with pytest.raises(KeyboardInterrupt):
                    ctx.eigh(A)
            finally:
                t.cancel()
            assert "cancelled" in ctx.last_error, ctx.last_error
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back after the call
        w = ctx.eigvalsh(A[:2])  # usable afterwards
        np.testing.assert_allclose(w, np.linalg.eigvalsh(A[:2]), atol=1e-10)

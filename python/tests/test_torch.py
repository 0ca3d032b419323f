"""torch wrappers: autograd Functions (gradcheck in float64), CPU tensors via numpy, CUDA tensors
zero-copy. Skips with a printed reason (-rs) when torch or a GPU is missing."""
import numpy as np
import pytest

import specgrad as sg
from specgrad import _core
from conftest import random_spd, sym_with_spectrum

torch = pytest.importorskip("torch", reason="torch not installed (scripts/test-python installs it with SG_TEST_TORCH=1; too big for CI)")
import specgrad.autograd as sga  # noqa: E402


def _sym(X):
    return (X + X.transpose(-1, -2)) / 2


def _fix_sign(V):
    # locally constant sign normalization: makes eigenvector outputs gauge-free for gradcheck
    return V * torch.sign(V[..., :1, :]).detach()


def test_cpu_tensors_roundtrip(rng):
    A = torch.from_numpy(sym_with_spectrum(rng, [1.0, 2.0, 3.0], (2,)))
    w, V = sg.eigh(A)
    assert isinstance(w, torch.Tensor) and w.dtype == torch.float64
    np.testing.assert_allclose(w.numpy(), np.linalg.eigvalsh(A.numpy()), atol=1e-12)
    r = sg.matrix_rank(torch.ones(3, 4, 4))
    assert torch.equal(r, torch.ones(3, dtype=torch.int64))


def test_gradcheck_eigh(rng):
    X = torch.tensor(sym_with_spectrum(rng, [-1.0, 0.5, 2.0, 3.5], (2,)), requires_grad=True)
    f = lambda X: (lambda w, V: (w, _fix_sign(V)))(*sga.eigh(_sym(X)))  # noqa: E731
    assert torch.autograd.gradcheck(f, (X,))


def test_gradcheck_svd(rng):
    X = torch.tensor(rng.standard_normal((2, 5, 3)), requires_grad=True)

    def f(X):
        U, S, Vh = sga.svd(X)
        s = torch.sign(U[..., :1, :]).detach()
        return U * s, S, Vh * s.transpose(-1, -2)

    assert torch.autograd.gradcheck(f, (X,))


@pytest.mark.parametrize("shape", [(2, 6, 3), (2, 3, 6)])
def test_gradcheck_svd_full_matrices_complement(rng, shape):
    """full_matrices=True: the left nullspace U⊥ of a tall A (the nullspace V⊥ of a wide one) through its
    projector W⊥W⊥ᵀ, a loss that does not depend on the basis chosen. gradcheck passes; torch's own
    svd_backward drops the extra columns' cotangent, so its gradient misses this term."""
    X = torch.tensor(rng.standard_normal(shape), requires_grad=True)
    tall = shape[-2] > shape[-1]
    k = min(shape[-2:])

    def f(X, svd):
        U, S, Vh = svd(X)
        W = U[..., :, k:] if tall else Vh[..., k:, :].mT
        return W @ W.mT, S

    assert torch.autograd.gradcheck(lambda X: f(X, lambda A: sga.svd(A, full_matrices=True)), (X,))
    g = torch.randn(shape[:-2] + (max(shape[-2:]),) * 2, dtype=X.dtype)
    ours = torch.autograd.grad((f(X, lambda A: sga.svd(A, full_matrices=True))[0] * g).sum(), X)[0]
    theirs = torch.autograd.grad((f(X, lambda A: torch.linalg.svd(A, full_matrices=True))[0] * g).sum(), X)[0]
    assert (ours - theirs).abs().max() > 0.1 * ours.abs().max()  # the term torch leaves out


@pytest.mark.parametrize("mode", ["exact", "mask"])
def test_unused_outputs_add_no_term(mode):
    """A loss of the eigenvalues (singular values) only: the eigenvector terms are left out, as torch does,
    so exact ties (mode='exact') and a zero σ of a tall A (any mode) give torch's finite gradient. Before,
    autograd handed the backward zeros for the unused outputs and 0·(1/E) or 0/σ made it NaN."""
    A = torch.eye(3, dtype=torch.float64, requires_grad=True)
    R = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    cases = [(A, lambda X: sga.eigh(X, mode=mode)[0], lambda X: torch.linalg.eigh(X)[0]),
             (A, lambda X: sga.svd(X, mode=mode)[1], lambda X: torch.linalg.svdvals(X)),
             (R, lambda X: sga.svd(X, mode=mode)[1], lambda X: torch.linalg.svdvals(X))]
    for X, ours, theirs in cases:
        c = torch.arange(1.0, 1.0 + ours(X).shape[-1], dtype=torch.float64)
        g = torch.autograd.grad((ours(X) * c).sum(), X)[0]
        ref = torch.autograd.grad((theirs(X) * c).sum(), X)[0]
        torch.testing.assert_close(g, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize("fn,p", [("sqrt", None), ("log", None), ("exp", None), ("pow", 0.7)])
def test_gradcheck_matfunc(rng, fn, p):
    X = torch.tensor(random_spd(rng, 4, (2,)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda X: sga.matfunc(_sym(X), fn, p), (X,))


@pytest.mark.parametrize("kind", ["spectral", "nuclear", "ortho"])
def test_gradcheck_regularizer(rng, kind):
    X = torch.tensor(rng.standard_normal((3, 4, 3)) / 2, requires_grad=True)
    assert torch.autograd.gradcheck(lambda X: sga.regularizer(X, kind), (X,))


@pytest.mark.parametrize("kind,fn,p", [("logdet", None, None), ("eigsum", "log", None), ("eigsum", "pow", 1.5),
                                       pytest.param("eigsum", (lambda x: x ** 3, lambda x: 3 * x ** 2), None,
                                                    id="eigsum-callback")])  # CPU only: -k "not callback"
def test_gradcheck_symmetric_regularizers(rng, kind, fn, p):
    """logdet and eigsum take symmetric (PD) input: gradcheck through (X + Xᵀ)/2 like eigh/matfunc."""
    X = torch.tensor(random_spd(rng, 4, (3,)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda X: sga.regularizer(_sym(X), kind, fn, p), (X,))


@pytest.mark.parametrize("complement", [False, True])
@pytest.mark.parametrize("vec", [False, True])
def test_gradcheck_project_basis(rng, complement, vec):
    """Both inputs: Q (not orthonormalised: the formula's derivative in Q as a free matrix) and X, a batch
    of matrices or of vectors; against torch's own autograd of the same formula too."""
    Q = torch.tensor(rng.standard_normal((3, 6, 2)), requires_grad=True)
    X = torch.tensor(rng.standard_normal((3, 6) if vec else (3, 6, 4)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda Q, X: sga.project_basis(Q, X, complement), (Q, X))
    Xm = X[..., None] if vec else X
    ref = Q @ (Q.mT @ Xm)
    ref = (Xm - ref if complement else ref).reshape(X.shape)
    G = torch.randn_like(ref)
    g_ours = torch.autograd.grad((sga.project_basis(Q, X, complement) * G).sum(), (Q, X))
    g_ref = torch.autograd.grad((ref * G).sum(), (Q, X))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_gradcheck_project_basis_broadcast(rng):
    """A shared basis Q (n, q) over a batch of X: Q's gradient is summed over the batch (torch reduces a
    gradient of the broadcast shape to the input's)."""
    Q = torch.tensor(rng.standard_normal((6, 2)), requires_grad=True)
    X = torch.tensor(rng.standard_normal((3, 6, 4)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda Q, X: sga.project_basis(Q, X), (Q, X))
    assert torch.autograd.gradcheck(lambda Q, X: sga.project_basis(Q, X, True), (Q, X))


def _double_backward_cases(rng):
    S = torch.tensor(sym_with_spectrum(rng, [0.5, 1.0, 2.0], (2,)), requires_grad=True)
    R = torch.tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)
    return [
        ("eigh", S, lambda X: (sga.eigh(X)[0] ** 2).sum()),
        ("svd", R, lambda X: (sga.svd(X)[1] ** 2).sum()),
        ("matfunc", S, lambda X: (sga.matfunc(X, "sqrt") ** 2).sum()),
        ("regularizer", R, lambda X: (sga.regularizer(X, "spectral") ** 2).sum()),
        ("project_basis", R, lambda X: (sga.project_basis(X, X[..., :1]) ** 2).sum()),  # through gX (the library)
        ("lstsq", R, lambda X: (sga.lstsq(X, X[..., :1].detach()) ** 2).sum()),
        ("pinv", R, lambda X: (sga.pinv(X) ** 2).sum()),
        ("project", R, lambda X: (sga.project(X.mT, X[..., 0].detach(), "row") ** 2).sum()),
        ("null_space", R, lambda X: (sga.null_space(X.mT)[0][..., :1] ** 2).sum()),
    ]


def test_double_backward_raises(rng):
    """The library backwards are not differentiable by autograd: with create_graph=True the first
    gradient used to carry a graph that only saw its dependence through the incoming gradient (a wrong
    second derivative, silently). once_differentiable makes differentiating it again raise."""
    for name, X, loss in _double_backward_cases(rng):
        (g,) = torch.autograd.grad(loss(X), X, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable"):
            g.sum().backward()
        (g1,) = torch.autograd.grad(loss(X), X)  # plain backward still works
        assert torch.isfinite(g1).all(), name


def test_project_basis_second_derivative_in_q(rng):
    """gQ is torch matmuls of Q, X and gY, so its own derivative in Q is autograd's and exact (gradgradcheck);
    through X the library's gX is differentiated, which raises (test_double_backward_raises)."""
    Q = torch.tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)
    X = torch.tensor(rng.standard_normal((2, 4, 2)))
    for complement in (False, True):
        assert torch.autograd.gradgradcheck(lambda Q: sga.project_basis(Q, X, complement), (Q,))


class _SpyCtx:
    """Records whether Regularizer.forward asked the library for the gradient."""

    def __init__(self):
        self.grads = []

    def regularizer(self, A, kind, fn=None, p=None, *, grad=True):
        self.grads.append(grad)
        return sg.get_context("cpu").regularizer(A, kind, fn, p, grad=grad)


def test_regularizer_skips_the_gradient_when_not_needed(rng):
    A = torch.tensor(rng.standard_normal((3, 4, 3)))
    spy = _SpyCtx()
    ref = sga.regularizer(A, "nuclear", ctx=spy)                    # no requires_grad
    with torch.no_grad():
        Ar = A.clone().requires_grad_(True)
        l2 = sga.regularizer(Ar, "nuclear", ctx=spy)                 # no_grad
    with torch.inference_mode():
        sga.regularizer(Ar, "nuclear", ctx=spy)
    l3 = sga.regularizer(Ar, "nuclear", ctx=spy)                     # needed
    assert spy.grads == [False, False, False, True]
    torch.testing.assert_close(ref, l2)
    l3.sum().backward()
    _, gA = sg.regularizer(A, "nuclear")
    torch.testing.assert_close(Ar.grad, gA)


def test_cpu_tensors_of_mixed_dtypes_raise_like_cuda():
    """numpy arrays are promoted like numpy does; torch tensors (CPU or CUDA) must share a dtype."""
    A32, X64 = torch.ones(3, 4, dtype=torch.float32), torch.ones(4, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="share a dtype"):
        sg.project(A32, X64)
    with pytest.raises(TypeError, match="share a dtype"):
        sg.lstsq(A32, torch.ones(3, dtype=torch.float64))
    w, V = sg.eigh(torch.eye(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="share a dtype"):
        sg.eigh_backward(w, V, gw=torch.ones(3, dtype=torch.float32))
    assert sg.project(A32.numpy(), X64.numpy()).dtype == np.float64  # numpy: still promoted


# ---- multi-GPU routing, with stand-in tensors (no GPU needed) ------------------------------------
class _FakeCudaTensor:
    __module__ = "torch.fake"  # the binding recognizes torch tensors by their type's module
    is_cuda = True
    dtype = torch.float32

    def __init__(self, index):
        self.device = torch.device("cuda", index)

    def detach(self):
        return self


def test_default_cuda_context_per_device(monkeypatch):
    made = []

    class FakeContext:
        def __init__(self, backend, device=None):
            made.append((backend, device))

    monkeypatch.setattr(_core, "Context", FakeContext)
    monkeypatch.setattr(_core, "_DEFAULT", {})
    c1 = sg._ctx_for(None, _FakeCudaTensor(1))
    assert made == [("cuda", 1)] and sg._ctx_for(None, None, _FakeCudaTensor(1)) is c1
    c0 = sg._ctx_for(None, _FakeCudaTensor(0))
    assert c0 is not c1 and made == [("cuda", 1), ("cuda", 0)]
    explicit = object()
    assert sg._ctx_for(explicit, _FakeCudaTensor(1)) is explicit


def test_context_refuses_tensors_of_another_device():
    ctx = sg.Context("cpu")
    ctx.backend, ctx.device = "cuda", 0  # stand-in for a CUDA context created on cuda:0
    with pytest.raises(ValueError, match="cuda:1.*belongs to cuda:0"):
        ctx._adapter([_FakeCudaTensor(1)])
    with pytest.raises(ValueError, match="different devices"):
        ctx._adapter([_FakeCudaTensor(0), _FakeCudaTensor(1)])
    ad, _, _ = ctx._adapter([_FakeCudaTensor(0), None])
    assert ad.device == torch.device("cuda", 0)
    ctx.device = 1
    ad, _, _ = ctx._adapter([_FakeCudaTensor(1)])
    assert ad.device.index == 1
    with pytest.raises(ValueError, match="device="):
        sg.Context("cpu", device=1)


def test_backward_through_loss_matches_torch_linalg(rng):
    A = torch.tensor(sym_with_spectrum(rng, [1.0, 2.0, 4.0], (3,)), requires_grad=True)
    w, V = sga.eigh(A)
    (w[..., -1].sum() + (V[..., 0, :] ** 2).sum()).backward()
    B = A.detach().clone().requires_grad_(True)
    w2, V2 = torch.linalg.eigh(B)
    (w2[..., -1].sum() + (V2[..., 0, :] ** 2).sum()).backward()
    torch.testing.assert_close(A.grad, _sym(B.grad), atol=1e-10, rtol=1e-8)


def _gpu_reason():
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    n, why = sg.cuda_devices()
    return None if n > 0 else f"specgrad has no CUDA device: {why}"


@pytest.mark.skipif(_gpu_reason() is not None, reason=str(_gpu_reason()))
def test_cuda_tensors_zero_copy_and_autograd(rng):
    A = torch.tensor(sym_with_spectrum(rng, [1.0, 2.0, 3.0, 5.0], (8,)), device="cuda")
    w, V = sg.eigh(A)
    assert w.is_cuda and V.is_cuda
    np.testing.assert_allclose(w.cpu().numpy(), np.linalg.eigvalsh(A.cpu().numpy()), atol=1e-10)
    U, S, Vh = sg.svd(A[..., :3])
    np.testing.assert_allclose(S.cpu().numpy(), np.linalg.svd(A[..., :3].cpu().numpy(), compute_uv=False), atol=1e-10)
    X = A.clone().requires_grad_(True)
    loss = sga.regularizer(X, "spectral").sum()
    loss.backward()
    Xc = A.cpu().clone().requires_grad_(True)
    sga.regularizer(Xc, "spectral").sum().backward()
    torch.testing.assert_close(X.grad.cpu(), Xc.grad, atol=1e-9, rtol=1e-7)
    Xg = torch.tensor(random_spd(rng, 4, (2,)), device="cuda", requires_grad=True)
    assert torch.autograd.gradcheck(lambda X: sga.matfunc(_sym(X), "sqrt"), (Xg,))
    Q = torch.linalg.qr(torch.randn(16, 6, 6, dtype=torch.float64, device="cuda"))[0][..., :2]
    Xp = torch.randn(16, 6, 3, dtype=torch.float64, device="cuda")
    Yp = sg.project_basis(Q, Xp, complement=True)
    assert Yp.is_cuda
    torch.testing.assert_close(Yp, Xp - Q @ (Q.mT @ Xp))
    Qg, Xg = Q.clone().requires_grad_(True), Xp.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda Q, X: sga.project_basis(Q, X, True), (Qg[:2], Xg[:2]))
    # one A shared by a batch of B: A⁺ once, applied by torch.matmul on the device (_via_pinv)
    As = torch.randn(6, 4, dtype=torch.float64, device="cuda")
    Bs = torch.randn(5, 6, 2, dtype=torch.float64, device="cuda")
    x, r = sg.lstsq(As, Bs, return_rank=True)
    assert x.is_cuda and r.is_cuda and x.shape == (5, 4, 2) and r.shape == (5,) and bool((r == 4).all())
    torch.testing.assert_close(x, torch.linalg.pinv(As) @ Bs)


def test_plain_functions_refuse_inputs_that_require_grad(rng):
    """specgrad.eigh etc. detach their inputs: on a tensor that requires grad (grad mode on) they raise
    and name specgrad.autograd (or say there is no autograd rule) instead of returning a result that the
    gradient silently does not reach, as torch refuses .numpy() there. Under no_grad, on .detach(), for
    matrix_rank (integer output) and through specgrad.autograd they run."""
    A = torch.tensor(sym_with_spectrum(rng, [1.0, 2.0, 3.0], (2,)), requires_grad=True)
    B = torch.ones(2, 3, 1, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="use specgrad.autograd.eigh"):
        sg.eigh(A)
    with pytest.raises(RuntimeError, match="use specgrad.autograd.svd"):
        sg.svdvals(A)
    with pytest.raises(RuntimeError, match="use specgrad.autograd.lstsq"):
        sg.lstsq(A, B)
    with pytest.raises(RuntimeError, match="use specgrad.autograd.lstsq"):
        sg.lstsq(A.detach(), B.requires_grad_(True))
    with pytest.raises(RuntimeError, match="use specgrad.autograd.project"):
        sg.project(A, B)
    with pytest.raises(RuntimeError, match="use specgrad.autograd.null_space"):
        sg.null_space(A)
    with pytest.raises(RuntimeError, match="no autograd rule for eigh_backward"):
        sg.eigh_backward(A[..., 0], A)
    B.requires_grad_(False)
    with torch.no_grad():
        w, _ = sg.eigh(A)
    np.testing.assert_allclose(w.numpy(), [[1, 2, 3]] * 2, atol=1e-12)
    assert sg.lstsq(A.detach(), B).shape == (2, 3, 1)
    assert torch.equal(sg.matrix_rank(A), torch.full((2,), 3, dtype=torch.int64))
    w2, _ = sga.eigh(A)
    w2.sum().backward()
    np.testing.assert_allclose(A.grad.numpy(), np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-12)


@pytest.mark.parametrize("m,n,vec", [(5, 3, False), (3, 5, False), (4, 4, True), (6, 2, True)])
def test_gradcheck_lstsq(rng, m, n, vec):
    """Full rank (tall, wide, square; matrix and vector right-hand sides): gradients to A and B."""
    A = torch.tensor(rng.standard_normal((2, m, n)), requires_grad=True)
    B = torch.tensor(rng.standard_normal((2, m) if vec else (2, m, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda A, B: sga.lstsq(A, B), (A, B))


def test_gradcheck_lstsq_broadcast_and_pinv(rng):
    """One A for a batch of B and one B for a batch of A (the broadcast operand's gradient is summed back),
    and pinv."""
    A = torch.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    B = torch.tensor(rng.standard_normal((2, 4, 2)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda A, B: sga.lstsq(A, B), (A, B))
    A3 = torch.tensor(rng.standard_normal((2, 1, 4, 3)), requires_grad=True)
    B2 = torch.tensor(rng.standard_normal((1, 3, 4, 2)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda A, B: sga.lstsq(A, B), (A3, B2))
    W = torch.tensor(rng.standard_normal((2, 3, 5)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda W: sga.pinv(W), (W,))


def test_lstsq_gradient_rank_deficient_matches_torch_pinv(rng):
    """Rank 2 of 4 (finite differences would cross the cutoff): the constant-rank gradient equals torch's
    own autograd of pinv(A, rtol) @ B with the same cutoff, for A and B; X is the minimum-norm solution."""
    U = np.linalg.qr(rng.standard_normal((3, 6, 6)))[0][..., :4]
    V = np.linalg.qr(rng.standard_normal((3, 4, 4)))[0]
    s = np.array([3.0, 1.0, 0.0, 0.0])
    A0 = torch.tensor((U * s) @ V.swapaxes(-1, -2))
    B0 = torch.tensor(rng.standard_normal((3, 6, 2)))
    G = torch.tensor(rng.standard_normal((3, 4, 2)))
    A, B = A0.clone().requires_grad_(True), B0.clone().requires_grad_(True)
    X = sga.lstsq(A, B, rtol=1e-8)
    (X * G).sum().backward()
    A2, B2 = A0.clone().requires_grad_(True), B0.clone().requires_grad_(True)
    X2 = torch.linalg.pinv(A2, rtol=1e-8) @ B2
    (X2 * G).sum().backward()
    np.testing.assert_allclose(X.detach().numpy(), X2.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(A.grad.numpy(), A2.grad.numpy(), atol=1e-9)
    np.testing.assert_allclose(B.grad.numpy(), B2.grad.numpy(), atol=1e-9)


def test_per_matrix_tolerance_tensors_match_torch(rng):
    """Tensor atol / rtol (one per matrix, broadcast to the batch) as torch.linalg takes them: matrix_rank
    and pinv equal torch's with the same tensors, and gradients of lstsq / project with a shared A and a
    tolerance per item equal torch's autograd of pinv with those tolerances (lstsq; each item its own rank)
    or the item-by-item calls (project)."""
    U = np.linalg.qr(rng.standard_normal((2, 3, 6, 6)))[0][..., :4]
    V = np.linalg.qr(rng.standard_normal((2, 3, 4, 4)))[0]
    A0 = torch.tensor((U * np.array([3.0, 1.0, 0.25, 0.0])) @ V.swapaxes(-1, -2))
    at = torch.tensor([[0.0, 0.5, 2.0], [0.1, 0.3, 1.5]])
    rt = torch.tensor([0.2, 0.0, 0.05])
    r = sg.matrix_rank(A0, atol=at, rtol=rt)
    assert torch.equal(r, torch.linalg.matrix_rank(A0, atol=at, rtol=rt)) and len(set(r.flatten().tolist())) > 1
    np.testing.assert_allclose(sg.pinv(A0, atol=at).numpy(), torch.linalg.pinv(A0, atol=at).numpy(), atol=1e-10)
    # one A shared by a batch of B / X, a tolerance per item
    A1 = A0[0, 0]
    ai = torch.tensor([0.1, 0.5, 2.0])
    B0, G = torch.tensor(rng.standard_normal((3, 6, 2))), torch.tensor(rng.standard_normal((3, 4, 2)))
    A, B = A1.clone().requires_grad_(True), B0.clone().requires_grad_(True)
    (sga.lstsq(A, B, atol=ai) * G).sum().backward()
    A2, B2 = A1.clone().requires_grad_(True), B0.clone().requires_grad_(True)
    ((torch.linalg.pinv(A2.expand(3, 6, 4), atol=ai) @ B2) * G).sum().backward()
    np.testing.assert_allclose(A.grad.numpy(), A2.grad.numpy(), atol=1e-9)
    np.testing.assert_allclose(B.grad.numpy(), B2.grad.numpy(), atol=1e-9)
    X0, GY = torch.tensor(rng.standard_normal((3, 4, 2))), torch.tensor(rng.standard_normal((3, 4, 2)))
    A, X = A1.clone().requires_grad_(True), X0.clone().requires_grad_(True)
    (sga.project(A, X, "row", atol=ai) * GY).sum().backward()
    # (a cutoff between nonzero σ makes pinv(A) A differ from the projector's constant-rank rule, so the
    # reference is the item-by-item calls, each with its tolerance as a number)
    A2, X2 = A1.clone().requires_grad_(True), X0.clone().requires_grad_(True)
    sum((sga.project(A2, X2[i], "row", atol=float(ai[i])) * GY[i]).sum() for i in range(3)).backward()
    np.testing.assert_allclose(A.grad.numpy(), A2.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(X.grad.numpy(), X2.grad.numpy(), atol=1e-12)
    # under vmap a tolerance tensor of the whole call broadcasts as before; a vmapped one is refused clearly
    f = lambda A: sga.pinv(A, atol=ai).sum()  # noqa: E731
    g = torch.func.vmap(torch.func.grad(f))(A0)  # per sample (3, 6, 4), one tolerance per matrix
    np.testing.assert_allclose(g.numpy(), torch.stack([torch.func.grad(f)(a) for a in A0]).numpy(), atol=1e-9)
    with pytest.raises(NotImplementedError, match="vmap over a tolerance tensor"):
        torch.func.vmap(lambda A, t: sga.pinv(A, atol=t))(A0[0], ai)
    # an array that does not fit the per-sample batch is refused as without vmap, not paired with the samples
    t2 = torch.tensor([0.0, 100.0])
    for f in (lambda a: sga.pinv(a, atol=t2), lambda a: sga.null_space(a.mT, atol=t2)[0],
              lambda a: sga.lstsq(a, a[:, :1], atol=t2), lambda a: sga.project(a, a.mT, "row", atol=t2)):
        with pytest.raises(sg.SpecgradArgumentError, match="does not broadcast to the batch shape"):
            f(A0[0, 0])
        with pytest.raises(sg.SpecgradArgumentError, match="does not broadcast to the batch shape"):
            torch.func.vmap(f)(A0[0, :2])
    # a list of tolerances works under vmap too (torch.func would take a list for a pytree of inputs)
    fl = lambda A: sga.pinv(A, atol=[0.1, 0.5, 2.0]).sum()  # noqa: E731
    np.testing.assert_allclose(torch.func.vmap(torch.func.grad(fl))(A0).numpy(), g.numpy(), atol=1e-12)
    # bfloat16 and float32 tensors are numbers like any other; complex ones are refused
    assert torch.equal(sg.matrix_rank(A0, atol=at.to(torch.bfloat16)), torch.linalg.matrix_rank(A0, atol=at.to(torch.bfloat16)))
    with pytest.raises(sg.SpecgradArgumentError, match="complex"):
        sg.matrix_rank(A0, atol=at.to(torch.complex64))


def test_gradcheck_per_matrix_tolerances(rng):
    """Central finite differences (gradcheck, float64) through per-matrix tolerances: three matrices of exact
    ranks 2, 3, 1 (zero singular values elsewhere), each with its own atol inside its gap, so a perturbation
    cannot cross a cutoff (matrix 0's atol would cut matrix 1's σ = 0.2); lstsq, pinv, project and null_space."""
    U = np.linalg.qr(rng.standard_normal((3, 5, 5)))[0][..., :4]
    V = np.linalg.qr(rng.standard_normal((3, 4, 4)))[0]
    s = np.array([[2.0, 1.0, 0, 0], [2.0, 1.0, 0.2, 0], [2.0, 0, 0, 0]])
    A0 = (U * s[:, None, :]) @ V.swapaxes(-1, -2)
    at = np.array([0.3, 0.1, 0.8])
    A = torch.tensor(A0, requires_grad=True)
    B = torch.tensor(rng.standard_normal((3, 5, 2)), requires_grad=True)
    X = torch.tensor(rng.standard_normal((3, 4, 2)), requires_grad=True)
    assert sg.matrix_rank(A0, atol=at).tolist() == [2, 3, 1]
    assert torch.autograd.gradcheck(lambda A, B: sga.lstsq(A, B, atol=at), (A, B))
    assert torch.autograd.gradcheck(lambda A: sga.pinv(A, atol=torch.tensor(at)), (A,))
    assert torch.autograd.gradcheck(lambda A, X: sga.project(A, X, "null", atol=list(at)), (A, X))
    assert torch.autograd.gradcheck(lambda A: (lambda N: N @ N.mT)(sga.null_space(A, atol=at)[0]), (A,))


@pytest.mark.parametrize("which", ["null", "row"])
@pytest.mark.parametrize("m,n,vec", [(2, 5, False), (3, 4, True), (5, 3, False)])
def test_gradcheck_project(rng, which, m, n, vec):
    """Nullspace / row-space projection: gradients to A (full rank, so constant rank under perturbation)
    and X; wide, square-ish and tall A (a tall full-rank A has an empty nullspace: Y = 0, gradient 0)."""
    A = torch.tensor(rng.standard_normal((2, m, n)), requires_grad=True)
    X = torch.tensor(rng.standard_normal((2, n) if vec else (2, n, 3)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda A, X: sga.project(A, X, which), (A, X))


def test_project_gradient_rank_deficient_matches_torch(rng):
    """Rank 2 of a 4×6 A (one A for a batch of X): the constant-rank gradient equals torch's autograd of
    (I − pinv(A) A) X with the same cutoff."""
    U = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    V = np.linalg.qr(rng.standard_normal((6, 6)))[0][:, :4]
    A0 = torch.tensor((U * np.array([2.0, 0.5, 0.0, 0.0])) @ V.T)
    X0 = torch.tensor(rng.standard_normal((3, 6, 2)))
    G = torch.tensor(rng.standard_normal((3, 6, 2)))
    A, X = A0.clone().requires_grad_(True), X0.clone().requires_grad_(True)
    (sga.project(A, X, "null", rtol=1e-8) * G).sum().backward()
    A2, X2 = A0.clone().requires_grad_(True), X0.clone().requires_grad_(True)
    Y2 = X2 - torch.linalg.pinv(A2, rtol=1e-8) @ (A2 @ X2)
    (Y2 * G).sum().backward()
    np.testing.assert_allclose(A.grad.numpy(), A2.grad.numpy(), atol=1e-9)
    np.testing.assert_allclose(X.grad.numpy(), X2.grad.numpy(), atol=1e-9)


@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 4, 4), (2, 5, 3)])
def test_gradcheck_null_space(rng, shape):
    """Losses of the nullspace as a subspace (N Nᵀ, and ‖Nᵀx‖² through the padded N): gradcheck at full
    rank (wide: nullity 2; square: 0 so N = 0 and the gradient is 0; tall: 0), and at rank 2 of a 4×4
    whose zero σ's stay under atol when perturbed (constant rank: nullity 2)."""
    X = torch.tensor(rng.standard_normal(shape), requires_grad=True)

    def f(X, **kw):
        N, r = sga.null_space(X, **kw)
        x = torch.linspace(-1, 2, X.shape[-1], dtype=X.dtype)
        return N @ N.mT, ((N.mT @ x) ** 2).sum(-1)

    assert torch.autograd.gradcheck(f, (X,))
    N, r = sga.null_space(X)
    assert not r.requires_grad and r.tolist() == [max(shape[2] - shape[1], 0)] * 2
    bases = sg.trim_null_space(N, r)  # slices: the gradient flows through them
    assert [tuple(b.shape) for b in bases] == [(shape[2], r[0].item())] * 2
    if r[0] > 0:
        g = torch.autograd.grad(sum((b @ b.mT)[0, 0] for b in bases), X, retain_graph=True)[0]
        g2 = torch.autograd.grad((N @ N.mT)[:, 0, 0].sum(), X)[0]
        torch.testing.assert_close(g, g2)
    U = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    V = np.linalg.qr(rng.standard_normal((4, 4)))[0]
    R = torch.tensor(np.stack([(U * np.array([3.0, 1.0, 0.0, 0.0])) @ V.T] * 2), requires_grad=True)
    assert sga.null_space(R, atol=1e-3)[1].tolist() == [2, 2]
    assert torch.autograd.gradcheck(lambda X: f(X, atol=1e-3), (R,))


def test_null_space_gradient_matches_the_projection(rng):
    """N Nᵀ X is project(A, X, "null"): the two autograd rules (derived separately) give one gradient."""
    A = torch.tensor(rng.standard_normal((3, 2, 5)), requires_grad=True)
    X = torch.tensor(rng.standard_normal((3, 5, 2)))
    G = torch.tensor(rng.standard_normal((3, 5, 2)))
    N, _ = sga.null_space(A)
    g1 = torch.autograd.grad(((N @ (N.mT @ X)) * G).sum(), A)[0]
    g2 = torch.autograd.grad((sga.project(A, X, "null") * G).sum(), A)[0]
    torch.testing.assert_close(g1, g2, atol=1e-11, rtol=1e-9)


def test_every_op_named_in_the_requires_grad_error_exists():
    """The plain functions' error points to specgrad.autograd.<op> for these: each must exist there."""
    for op in _core._AUTOGRAD_OPS:
        assert callable(getattr(sga, op, None)), f"specgrad.autograd.{op} is named but missing"


def test_autograd_lstsq_pinv_project_bad_input(rng):
    """Bad input to the new autograd wrappers (lstsq, pinv, project, null_space) gets the library's errors:
    wrong rows, NaN, an integer tensor, a bad tolerance, an unknown projection, too few dimensions."""
    A = torch.tensor(rng.standard_normal((2, 4, 3)), requires_grad=True)
    with pytest.raises(sg.SpecgradArgumentError, match="B"):
        sga.lstsq(A, torch.ones(2, 5, 1, dtype=torch.float64))
    An = A.detach().clone()
    An[1, 2, 0] = float("nan")
    with pytest.raises(sg.NonFiniteError, match="NaN"):
        sga.lstsq(An.requires_grad_(True), torch.ones(2, 4, 1, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        sga.pinv(torch.ones(2, 3, 3, dtype=torch.int64))
    with pytest.raises(sg.SpecgradArgumentError, match="tolerance"):
        sga.pinv(A, atol=-1.0)
    with pytest.raises(sg.SpecgradArgumentError, match="X"):
        sga.project(A, torch.ones(2, 4, 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="which"):
        sga.project(A, torch.ones(2, 3, 1, dtype=torch.float64), "column")
    with pytest.raises(sg.NonFiniteError, match="NaN"):
        sga.null_space(An.requires_grad_(True))
    with pytest.raises(TypeError, match="dtype"):
        sga.null_space(torch.ones(2, 3, 3, dtype=torch.int64))
    with pytest.raises(sg.SpecgradArgumentError, match="tolerance"):
        sga.null_space(A, rtol=float("nan"))
    with pytest.raises(ValueError, match="dimensions"):
        sga.null_space(torch.ones(3, dtype=torch.float64, requires_grad=True))


# ---- torch.func: grad / vmap / jacrev over every wrapper ---------------------------------------------
def _func_cases(rng):
    """(name, input, loss through specgrad, the same loss through torch.linalg): gauge-free losses of
    matrices with distinct spectra, float64."""
    S = torch.tensor(sym_with_spectrum(rng, [-1.0, 0.5, 2.0, 3.5], (3,)))
    P = torch.tensor(random_spd(rng, 4, (3,)))
    R = torch.tensor(rng.standard_normal((3, 5, 3)))
    Wt = torch.tensor(rng.standard_normal((4, 4)))  # shared across the vmapped batch (in_dims None below)
    # (1, 5, 2): a matrix with a batch dimension; a (5, 2) B would be read as five vectors (like torch's solve)
    B, Xs, M = (torch.tensor(rng.standard_normal(s)) for s in ((1, 5, 2), (1, 5, 2), (5, 5)))

    def eig_loss(eigh):
        def f(A):
            w, V = eigh(A)
            return (w ** 3).sum() + ((V.mT @ Wt @ V) ** 2 * torch.eye(4, dtype=A.dtype)).sum()
        return f

    def svd_loss(svd):
        def f(A):
            U, S_, Vh = svd(A)
            return (S_ ** 2).sum() + (U[..., :, :2] @ U[..., :, :2].mT).diagonal(dim1=-2, dim2=-1).pow(2).sum()
        return f

    def sqrtm_torch(A):
        w, V = torch.linalg.eigh(A)
        return (V * w.sqrt()[..., None, :]) @ V.mT

    return [
        ("eigh", S, eig_loss(sga.eigh), eig_loss(torch.linalg.eigh)),
        ("svd", R, svd_loss(sga.svd), svd_loss(lambda A: torch.linalg.svd(A, full_matrices=False))),
        ("matfunc", P, lambda A: (sga.matfunc(A, "sqrt") @ Wt).pow(2).sum(), lambda A: (sqrtm_torch(A) @ Wt).pow(2).sum()),
        ("regularizer", R, lambda A: sga.regularizer(A, "nuclear").pow(2).sum(),
         lambda A: torch.linalg.svdvals(A).sum(-1).pow(2).sum()),
        # full-rank A: torch.linalg.pinv is the reference; B, X, M are shared by the batch (not vmapped)
        ("lstsq", R, lambda A: sga.lstsq(A, B).pow(3).sum(), lambda A: (torch.linalg.pinv(A) @ B).pow(3).sum()),
        ("pinv", R, lambda A: (sga.pinv(A) @ B).pow(2).sum(), lambda A: (torch.linalg.pinv(A) @ B).pow(2).sum()),
        ("project", R, lambda A: sga.project(A.mT, Xs, "row").pow(3).sum(),
         lambda A: (torch.linalg.pinv(A.mT) @ A.mT @ Xs).pow(3).sum()),
        ("null_space", R, lambda A: (sga.null_space(A.mT)[0] @ sga.null_space(A.mT)[0].mT * M).sum(),
         lambda A: ((torch.eye(5, dtype=A.dtype) - torch.linalg.pinv(A.mT) @ A.mT) * M).sum()),
        ("project_basis", R, lambda A: sga.project_basis(A, Xs, True).pow(3).sum(),
         lambda A: (Xs - A @ (A.mT @ Xs)).pow(3).sum()),
    ]


def test_func_grad_and_per_sample_grad_match_torch(rng):
    """torch.func.grad over the whole batch, and vmap(grad) for per-sample gradients (the vmapped
    cotangents meet a shared Wt: the backward's vmap rule expands what is not vmapped)."""
    for name, X, loss, ref in _func_cases(rng):
        g, g_ref = torch.func.grad(loss)(X), torch.func.grad(ref)(X)
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-10, msg=name)
        ps, ps_ref = torch.vmap(torch.func.grad(loss))(X), torch.vmap(torch.func.grad(ref))(X)
        torch.testing.assert_close(ps, ps_ref, rtol=1e-9, atol=1e-10, msg=name)


def test_vmap_any_dimension_and_nested(rng):
    A = torch.tensor(sym_with_spectrum(rng, [0.5, 1.0, 2.0], (2, 4)))  # (2, 4, 3, 3)
    w, V = sga.eigh(A)
    for d in (0, 1):
        wv, Vv = torch.vmap(sga.eigh, in_dims=d)(A.movedim(0, d) if d else A)
        torch.testing.assert_close(wv, w)
        torch.testing.assert_close(Vv, V)
    wn, Vn = torch.vmap(torch.vmap(sga.eigh))(A)
    torch.testing.assert_close(wn, w)
    torch.testing.assert_close(Vn, V)
    R = torch.tensor(rng.standard_normal((3, 4, 2)))
    S = torch.vmap(lambda X: sga.svd(X)[1], in_dims=2)(R.permute(1, 2, 0))  # R[b] is (4, 2): vmapped over b
    torch.testing.assert_close(S, torch.linalg.svdvals(R))
    loss = torch.vmap(lambda X: sga.regularizer(X, "spectral"), in_dims=1)(R.transpose(0, 1))
    torch.testing.assert_close(loss, torch.linalg.svdvals(R)[:, 0] ** 2)
    # two vmapped arguments, or one, with per-sample batch dimensions that broadcast, and vectors
    A, Bv = torch.tensor(rng.standard_normal((3, 2, 5, 4))), torch.tensor(rng.standard_normal((3, 5)))
    torch.testing.assert_close(torch.vmap(sga.lstsq)(A, Bv[:, None].expand(3, 2, 5)), sga.lstsq(A, Bv[:, None]))
    torch.testing.assert_close(torch.vmap(sga.lstsq, in_dims=(0, None))(A[:, 0], Bv[0]),
                               sga.lstsq(A[:, 0], Bv[0].expand(3, 5)))
    torch.testing.assert_close(torch.vmap(sga.lstsq, in_dims=(None, 0))(A[0, 0], Bv), sga.lstsq(A[0, 0], Bv[..., None])[..., 0])
    Q = torch.linalg.qr(torch.tensor(rng.standard_normal((3, 5, 2))))[0]
    Xb = torch.tensor(rng.standard_normal((3, 2, 5)))   # per sample: a batch of 2 vectors for one Q
    torch.testing.assert_close(torch.vmap(sga.project_basis)(Q[:, None], Xb), sga.project_basis(Q[:, None], Xb))
    torch.testing.assert_close(torch.vmap(sga.project_basis)(Q, Xb[:, 0]), sga.project_basis(Q, Xb[:, 0]))
    torch.testing.assert_close(torch.vmap(sga.project)(A.mT, Xb[..., None]), sga.project(A.mT, Xb[..., None]))
    torch.testing.assert_close(torch.vmap(sga.project, in_dims=(0, None))(A.mT[:, 0], Xb[0, 0]),
                               sga.project(A.mT[:, 0], Xb[0, 0].expand(3, 5)))
    N, nullity = torch.vmap(sga.null_space, in_dims=1)(A.mT.transpose(0, 1))
    N2, nullity2 = sga.null_space(A.mT)
    torch.testing.assert_close(N @ N.mT, N2 @ N2.mT)
    assert torch.equal(nullity, nullity2)


def test_jacrev_matches_torch(rng):
    """jacrev: vmap over the vjp, i.e. the backward's vmap rule with batched cotangents."""
    A = torch.tensor(sym_with_spectrum(rng, [-1.0, 0.5, 2.0], ()))
    J = torch.func.jacrev(lambda X: sga.eigh(X)[0])(A)
    J_ref = torch.func.jacrev(lambda X: torch.linalg.eigh(X)[0])(A)
    torch.testing.assert_close(J, J_ref, rtol=1e-9, atol=1e-12)
    R = torch.tensor(rng.standard_normal((4, 3)))
    J = torch.func.jacrev(lambda X: sga.svd(X)[1])(R)
    torch.testing.assert_close(J, torch.func.jacrev(torch.linalg.svdvals)(R), rtol=1e-9, atol=1e-12)


def test_func_second_order_raises_clearly(rng):
    """Reverse over reverse reaches the library backward's own backward, forward over reverse
    (torch.func.hessian) its jvp: neither is implemented, and both say so in our words."""
    A = torch.tensor(sym_with_spectrum(rng, [0.5, 1.0, 2.0], ()))
    f = lambda X: sga.eigh(X)[0].pow(3).sum()  # noqa: E731
    with pytest.raises(RuntimeError, match="once_differentiable"):
        torch.func.jacrev(torch.func.grad(f))(A)
    with pytest.raises(RuntimeError, match="once_differentiable.*forward over reverse"):
        torch.func.hessian(f)(A)


@pytest.mark.parametrize("op", ["eigh", "svd_tall", "svd_wide", "svd_square", "sqrt", "log", "exp", "pow"])
def test_gradcheck_forward_mode(rng, op):
    """Forward mode (the jvp rules) against central finite differences in float64 (gradcheck with
    check_forward_ad), next to the backward, on gauge-fixed outputs."""
    if op == "eigh":
        X = torch.tensor(sym_with_spectrum(rng, [-1.0, 0.5, 2.0, 3.5], (2,)), requires_grad=True)
        f = lambda X: (lambda w, V: (w, _fix_sign(V)))(*sga.eigh(_sym(X)))  # noqa: E731
    elif op.startswith("svd"):
        X = torch.tensor(rng.standard_normal({"svd_tall": (2, 5, 3), "svd_wide": (2, 3, 5), "svd_square": (2, 4, 4)}[op]),
                         requires_grad=True)

        def f(X):
            U, S, Vh = sga.svd(X)
            s = torch.sign(U[..., :1, :]).detach()
            return U * s, S, Vh * s.mT
    else:
        X = torch.tensor(random_spd(rng, 4, (2,)), requires_grad=True)
        f = lambda X: sga.matfunc(_sym(X), op, 0.7 if op == "pow" else None)  # noqa: E731
    assert torch.autograd.gradcheck(f, (X,), check_forward_ad=True)


def _inner(xs, ys):
    return sum((x * y).sum() for x, y in zip(xs, ys) if x is not None and y is not None)


@pytest.mark.parametrize("mode", ["exact", "mask", "lorentz", "taylor"])
def test_jvp_is_the_adjoint_of_the_backward_in_every_mode(rng, mode):
    """<gOut, J dA> = <Jᵀ gOut, dA> for random symmetric tangents and cotangents of every output, at spectra
    with a near tie (and, except in mode='exact', an exact tie): the jvp uses the backward's
    own degeneracy coefficients, so each mode changes both alike (a jvp with the plain 1/E fails here)."""
    eig_w = [1.0, 1.0 + 1e-9, 2.0, 3.0] if mode != "exact" else [1.0, 1.0 + 1e-3, 2.0, 3.0]
    cases = [("eigh", torch.tensor(sym_with_spectrum(rng, eig_w, (2,))), lambda A: sga.eigh(A, mode=mode))]
    if mode != "exact":
        cases.append(("eigh tie", torch.tensor(sym_with_spectrum(rng, [1.0, 1.0, 2.0, 3.0], ())),
                      lambda A: sga.eigh(A, mode=mode)))
    for shape, gap in (((5, 3), 1e-9), ((3, 5), 1e-9), ((4, 4), 1e-9), ((5, 3), 0.0), ((4, 4), 0.0)):
        if mode == "exact":
            gap = 1e-3  # a finite result needs a gap
        k = min(shape)
        s = torch.tensor([3.0, 1.0 + gap, 1.0, 0.5][:k], dtype=torch.float64)
        U = torch.linalg.qr(torch.tensor(rng.standard_normal((shape[0], k))))[0]
        V = torch.linalg.qr(torch.tensor(rng.standard_normal((shape[1], k))))[0]
        cases.append((f"svd {shape} gap {gap}", U @ torch.diag(s) @ V.mT, lambda A: sga.svd(A, mode=mode)))
    for name, A, f in cases:
        dA = torch.tensor(rng.standard_normal(A.shape))
        if name.startswith("eigh"):
            dA = _sym(dA)
        out, tangent = torch.func.jvp(f, (A,), (dA,))
        g = tuple(torch.tensor(rng.standard_normal(o.shape)) for o in out)
        _, vjp_fn = torch.func.vjp(f, A)
        lhs, rhs = _inner(g, tangent), (vjp_fn(g)[0] * dA).sum()
        assert torch.isfinite(lhs), name
        torch.testing.assert_close(lhs, rhs, rtol=1e-9, atol=1e-9 * float(abs(rhs)) + 1e-12, msg=name)


def test_jvp_matches_torch_and_jacfwd_matches_jacrev(rng):
    """Symmetric tangents give torch's jvp of torch.linalg.eigh / svd (gauge-aligned); jacfwd (vmap over
    the jvp) equals our jacrev, also in directions that are not symmetric (both symmetrize); the dual-tensor
    API (torch.autograd.forward_ad) reaches the same rule; full_matrices=True is refused clearly."""
    A = torch.tensor(sym_with_spectrum(rng, [-1.0, 0.5, 2.0, 3.5], (3,)))
    dA = _sym(torch.tensor(rng.standard_normal(A.shape)))
    (w, V), (dw, dV) = torch.func.jvp(sga.eigh, (A,), (dA,))
    _, (dw_t, dV_t) = torch.func.jvp(torch.linalg.eigh, (A,), (dA,))
    sign = torch.sign((V * torch.linalg.eigh(A)[1]).sum(-2, keepdim=True))
    torch.testing.assert_close(dw, dw_t, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dV, dV_t * sign, rtol=1e-9, atol=1e-11)
    for shape in ((2, 6, 4), (2, 4, 6)):
        R = torch.tensor(rng.standard_normal(shape))
        dR = torch.tensor(rng.standard_normal(shape))
        (U, S, Vh), (dU, dS, dVh) = torch.func.jvp(sga.svd, (R,), (dR,))
        Ut = torch.linalg.svd(R, full_matrices=False)[0]
        _, (dU_t, dS_t, dVh_t) = torch.func.jvp(lambda X: torch.linalg.svd(X, full_matrices=False), (R,), (dR,))
        sign = torch.sign((U * Ut).sum(-2, keepdim=True))
        torch.testing.assert_close(dS, dS_t, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(dU, dU_t * sign, rtol=1e-9, atol=1e-11)
        torch.testing.assert_close(dVh, dVh_t * sign.mT, rtol=1e-9, atol=1e-11)
    P = torch.tensor(random_spd(rng, 4, ()))
    R = torch.tensor(rng.standard_normal((5, 3)))
    for fn, X in ((lambda X: sga.eigh(X)[1].pow(2), A[0]), (lambda X: sga.svd(X)[0].pow(2), R),
                  (lambda X: sga.svd(X.mT)[2].pow(2), R), (lambda X: sga.matfunc(X, "log"), P)):
        torch.testing.assert_close(torch.func.jacfwd(fn)(X), torch.func.jacrev(fn)(X), rtol=1e-9, atol=1e-11)
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        w2, _ = sga.eigh(fwAD.make_dual(A, dA))
        torch.testing.assert_close(fwAD.unpack_dual(w2).tangent, dw, rtol=0, atol=0)
    with pytest.raises(NotImplementedError, match="full_matrices=True"):
        torch.func.jvp(lambda X: sga.svd(X, full_matrices=True), (R,), (R,))
    bad = dA.clone()
    bad[1, 0, 0] = float("nan")
    for f, X in ((sga.eigh, A), (sga.svd, A), (lambda X: sga.matfunc(X, "exp"), A)):
        with pytest.raises(sg.NonFiniteError) as e:
            torch.func.jvp(f, (X,), (bad,))
        assert "the tangent dA holds NaN or Inf" in "".join(getattr(e.value, "__notes__", []))
    with pytest.raises(RuntimeError, match="once_differentiable.*over forward"):
        torch.func.jacfwd(torch.func.jacfwd(lambda X: sga.eigh(X)[0]))(A[0])


def test_torch_compile_breaks_the_graph_and_keeps_gradients(rng):
    """torch.compile cannot trace the ctypes calls: it breaks the graph around each wrapper and runs it
    eagerly; the gradients must be the eager ones. backend='aot_eager': dynamo and AOT autograd as with the
    default, without inductor's C++ code generation (a compiler the GPU machine's image may lack)."""
    R = torch.tensor(rng.standard_normal((3, 5, 3)))
    B = torch.tensor(rng.standard_normal((3, 5, 2)))
    for f in (lambda A: sga.eigh(A.mT @ A)[0].pow(2).sum() + sga.lstsq(A, B).pow(2).sum(),
              lambda A: sga.regularizer(A, "nuclear").sum() + sga.null_space(A.mT)[0].pow(2).sum()):
        X1, X2 = R.clone().requires_grad_(), R.clone().requires_grad_()
        (g1,) = torch.autograd.grad(f(X1), X1)
        (g2,) = torch.autograd.grad(torch.compile(f, backend="aot_eager")(X2), X2)
        torch.testing.assert_close(g2, g1)

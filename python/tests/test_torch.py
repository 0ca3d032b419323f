"""torch wrappers: autograd Functions (gradcheck in float64), CPU tensors via numpy, CUDA tensors
zero-copy. Skips with a printed reason (-rs) when torch or a GPU is missing."""
import numpy as np
import pytest

import specgrad as sg
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


@pytest.mark.parametrize("fn,p", [("sqrt", None), ("log", None), ("exp", None), ("pow", 0.7)])
def test_gradcheck_matfunc(rng, fn, p):
    X = torch.tensor(random_spd(rng, 4, (2,)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda X: sga.matfunc(_sym(X), fn, p), (X,))


@pytest.mark.parametrize("kind", ["spectral", "nuclear", "ortho"])
def test_gradcheck_regularizer(rng, kind):
    X = torch.tensor(rng.standard_normal((3, 4, 3)) / 2, requires_grad=True)
    assert torch.autograd.gradcheck(lambda X: sga.regularizer(X, kind), (X,))


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

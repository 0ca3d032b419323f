"""torch.autograd.Function wrappers whose backward calls specgrad's backward ops.

    import torch, specgrad.autograd as sga
    w, V = sga.eigh(A)                      # A (..., n, n) symmetric; gradient is symmetric
    U, S, Vh = sga.svd(A)                   # economy by default; full_matrices=True: U⊥ gets gradients (torch: none)
    F = sga.matfunc(A, "sqrt")              # f(A) = V f(Λ) Vᵀ
    loss = sga.regularizer(W, "spectral")   # per-matrix loss, batch shape
    Y = sga.project_basis(Q, X)             # Q Qᵀ X (complement=True: X − Q Qᵀ X); gradients to Q and X
    X = sga.lstsq(A, B); P = sga.pinv(A)    # minimum norm, also rank-deficient; gradients at constant rank
    Y = sga.project(A, X, "null")           # nullspace ("row": row-space) projection; gradients to A and X
    N, nullity = sga.null_space(A)          # padded bases; gradients to A for losses of the subspace
    loss.sum().backward()

CUDA tensors run on the shared CUDA context of their device (zero-copy, current stream); CPU tensors on
the 'cpu' context through numpy views. Pass ctx= to choose. Degeneracy handling: mode='mask' by default
(finite at exact ties; exact for losses invariant to rotations inside a tied cluster), 'exact' like
torch/jax. The backwards are computed by the library, outside autograd: they are once_differentiable,
so double backward (create_graph=True, then differentiating the gradient) raises instead of silently
returning a gradient that ignores the backward's own dependence on A.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from ._core import _ctx_for
from ._lib import DegenerateError


def _ctx(ctx, x):
    return _ctx_for(ctx, x)


class Eigh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A, mode="mask", param=0.0, sgctx=None):
        c = _ctx(sgctx, A)
        w, V = c.eigh(A.detach())
        ctx.save_for_backward(w, V)
        ctx.opts = (mode, param, c)
        ctx.set_materialize_grads(False)  # an unused V gets gV = None: no V term (finite at ties, as torch)
        return w, V

    @staticmethod
    @once_differentiable
    def backward(ctx, gw, gV):
        w, V = ctx.saved_tensors
        mode, param, c = ctx.opts
        if gw is None and gV is None:
            return None, None, None, None
        try:
            gA = c.eigh_backward(w, V, gw, gV, mode=mode, param=param)
        except DegenerateError as e:  # mode='exact' at a tie: inf/NaN like torch and jax
            gA = e.result
        return gA, None, None, None


class Svd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, A, full_matrices=False, mode="mask", param=0.0, sgctx=None):
        c = _ctx(sgctx, A)
        U, S, Vh = c.svd(A.detach(), full_matrices=full_matrices)
        ctx.save_for_backward(U, S, Vh)
        ctx.opts = (mode, param, c)
        ctx.set_materialize_grads(False)  # unused U / Vh: None, no term (zeros would meet 1/E, Σ⁻¹ at ties, σ = 0)
        return U, S, Vh

    @staticmethod
    @once_differentiable
    def backward(ctx, gU, gS, gVh):
        U, S, Vh = ctx.saved_tensors
        mode, param, c = ctx.opts
        if gU is None and gS is None and gVh is None:
            return None, None, None, None, None
        try:
            gA = c.svd_backward(U, S, Vh, gU, gS, gVh, mode=mode, param=param)
        except DegenerateError as e:
            gA = e.result
        return gA, None, None, None, None


class MatFunc(torch.autograd.Function):
    """F = f(A); forward is one matfunc call (domain checks, one eigendecomposition), which also returns
    the (w, V) it used: saved for the backward."""

    @staticmethod
    def forward(ctx, A, fn="sqrt", p=None, sgctx=None):
        c = _ctx(sgctx, A)
        F, w, V = c.matfunc(A.detach(), fn, p, return_eig=True)
        ctx.save_for_backward(w, V)
        ctx.opts = (fn, p, c)
        return F

    @staticmethod
    @once_differentiable
    def backward(ctx, gF):
        w, V = ctx.saved_tensors
        fn, p, c = ctx.opts
        return c.matfunc_backward(w, V, gF, fn, p), None, None, None


class Regularizer(torch.autograd.Function):
    """Per-matrix loss (batch shape); the gradient comes from the same library call as the loss, and is
    only computed when it can be needed: need_grad=None means A.requires_grad (inside forward grad mode
    is always off, so the `regularizer` function below decides it, also under torch.no_grad)."""

    @staticmethod
    def forward(ctx, A, kind="spectral", fn=None, p=None, sgctx=None, need_grad=None):
        c = _ctx(sgctx, A)
        if need_grad is None:
            need_grad = ctx.needs_input_grad[0]
        if need_grad:
            loss, ctx.gA = c.regularizer(A.detach(), kind, fn, p)
        else:
            loss, ctx.gA = c.regularizer(A.detach(), kind, fn, p, grad=False), None
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, gloss):
        if ctx.gA is None:
            raise RuntimeError("specgrad.autograd.Regularizer: the gradient was not computed in forward "
                               "(need_grad=False / torch.no_grad)")
        return ctx.gA * gloss[..., None, None], None, None, None, None, None


class ProjectBasis(torch.autograd.Function):
    """Y = Q Qᵀ X (or X − Q Qᵀ X). gX is the same projection of gY (P = Q Qᵀ is symmetric), by the
    library; gQ = ±(gY Xᵀ + X gYᵀ) Q, the derivative of the formula in Q as a free matrix (no
    orthonormality constraint), in torch. X may be a batch of vectors (..., n)."""

    @staticmethod
    def forward(ctx, Q, X, complement=False, sgctx=None):
        c = _ctx(sgctx, Q)
        Y = c.project_basis(Q.detach(), X.detach(), complement)
        ctx.save_for_backward(Q, X)
        ctx.opts = (complement, c)
        return Y

    @staticmethod
    @once_differentiable
    def backward(ctx, gY):
        Q, X = ctx.saved_tensors
        complement, c = ctx.opts
        gQ = gX = None
        if ctx.needs_input_grad[1]:
            gX = c.project_basis(Q, gY, complement)
        if ctx.needs_input_grad[0]:
            G, Xm = (gY[..., None], X[..., None]) if X.dim() == Q.dim() - 1 else (gY, X)
            gQ = G @ (Xm.mT @ Q) + Xm @ (G.mT @ Q)
            if complement:
                gQ = -gQ
        return gQ, gX, None, None


class Lstsq(torch.autograd.Function):
    """X = A⁺B (minimum norm, the library's rank cutoff). A⁺ is differentiable where the rank is constant
    (Golub & Pereyra 1973; torch's pinv_backward): with A⁺ from the library (same cutoff, so the same rank),
    gB = A⁺ᵀ gX and gA = −gB Xᵀ + (B − AX)(A⁺gB)ᵀ + (A⁺ᵀX)(gX − A⁺A gX)ᵀ, in torch matmuls. Batch dimensions
    broadcast (the library factors a shared A once); the gradients are summed back to each input's shape."""

    @staticmethod
    def forward(ctx, A, B, atol=0.0, rtol=None, sgctx=None):
        c = _ctx(sgctx, A)
        X = c.lstsq(A.detach(), B.detach(), atol, rtol)
        ctx.save_for_backward(A, B, X)
        ctx.opts = (atol, rtol, c)
        return X

    @staticmethod
    @once_differentiable
    def backward(ctx, gX):
        A, B, X = ctx.saved_tensors
        atol, rtol, c = ctx.opts
        Ap = c.pinv(A, atol, rtol)  # n×m
        gB = Ap.mT @ gX
        gA = None
        if ctx.needs_input_grad[0]:
            gA = -gB @ X.mT + (B - A @ X) @ (Ap @ gB).mT + (Ap.mT @ X) @ (gX - Ap @ (A @ gX)).mT
            gA = gA.sum_to_size(A.shape)
        gB = gB.sum_to_size(B.shape) if ctx.needs_input_grad[1] else None
        return gA, gB, None, None, None


class Project(torch.autograd.Function):
    """Y = P X (row space) or (I − P) X (nullspace), P = A⁺A. gX is the same projection of gY (P symmetric),
    by the library. gA from dP = A⁺ dA (I − P) + (I − P) dAᵀ A⁺ᵀ (constant rank; Golub & Pereyra 1973):
    gA = ±A⁺ᵀ (X gYᵀ + gY Xᵀ)(I − P), + for the row space, with A⁺ from the library (same cutoff). Batch
    dimensions broadcast; the gradients are summed back to each input's shape."""

    @staticmethod
    def forward(ctx, A, X, which="null", atol=0.0, rtol=None, sgctx=None):
        c = _ctx(sgctx, A)
        Y = c.project(A.detach(), X.detach(), which, atol, rtol)
        ctx.save_for_backward(A, X)
        ctx.opts = (which, atol, rtol, c)
        return Y

    @staticmethod
    @once_differentiable
    def backward(ctx, gY):
        A, X = ctx.saved_tensors
        which, atol, rtol, c = ctx.opts
        gA = gX = None
        if ctx.needs_input_grad[1]:
            gX = c.project(A, gY, which, atol, rtol).sum_to_size(X.shape)
        if ctx.needs_input_grad[0]:
            Ap = c.pinv(A, atol, rtol)  # n×m
            M = X @ gY.mT + gY @ X.mT   # n×n, symmetric
            gA = (Ap.mT @ (M - (M @ Ap) @ A)).sum_to_size(A.shape)
            if which == "null":
                gA = -gA
        return gA, gX, None, None, None, None


class NullSpace(torch.autograd.Function):
    """(N, nullity) = null_space(A), N padded (..., n, n). A determines null(A) as a subspace, not its basis:
    for a loss that does not depend on the basis chosen, dN = −A⁺ dA N at constant rank (from N Nᵀ = I − A⁺A
    and A⁺ᵀN = 0), so gA = −A⁺ᵀ gN Nᵀ, with A⁺ from the library (same cutoff). The zero padding columns of N
    drop out of gN Nᵀ. For a loss that depends on the basis, the gradient of its basis-free part."""

    @staticmethod
    def forward(ctx, A, atol=0.0, rtol=None, sgctx=None):
        c = _ctx(sgctx, A)
        N, nullity = c.null_space(A.detach(), atol, rtol)
        ctx.save_for_backward(A, N)
        ctx.opts = (atol, rtol, c)
        ctx.mark_non_differentiable(nullity)  # backward runs only when N gets a gradient
        return N, nullity

    @staticmethod
    @once_differentiable
    def backward(ctx, gN, gnullity):
        A, N = ctx.saved_tensors
        atol, rtol, c = ctx.opts
        Ap = c.pinv(A, atol, rtol)  # n×m
        return -(Ap.mT @ (gN @ N.mT)), None, None, None


def null_space(A, atol=0.0, rtol=None, ctx=None):
    """Padded nullspace bases (N (..., n, n), nullity) with gradients to A at constant rank (see NullSpace)."""
    return NullSpace.apply(A, atol, rtol, ctx)


def project(A, X, which="null", atol=0.0, rtol=None, ctx=None):
    """Nullspace / row-space projection of X with gradients to A (constant rank) and X. X (..., n, k) or a
    batch of vectors (..., n); batch dimensions broadcast."""
    vec = X.dim() == A.dim() - 1
    Y = Project.apply(A, X[..., None] if vec else X, which, atol, rtol, ctx)
    return Y[..., 0] if vec else Y


def lstsq(A, B, atol=0.0, rtol=None, ctx=None):
    """Minimum-norm least squares with gradients to A and B (constant rank; see Lstsq). B (..., m, k) or a
    batch of vectors (..., m); batch dimensions broadcast like torch.linalg.lstsq's."""
    vec = B.dim() == A.dim() - 1
    X = Lstsq.apply(A, B[..., None] if vec else B, atol, rtol, ctx)
    return X[..., 0] if vec else X


def pinv(A, atol=0.0, rtol=None, ctx=None):
    """Pseudo-inverse (..., n, m) with its gradient: lstsq(A, I)."""
    m = A.shape[-2]
    I = torch.eye(m, dtype=A.dtype, device=A.device).reshape((1,) * (A.dim() - 2) + (m, m))  # a matrix per item
    return Lstsq.apply(A, I, atol, rtol, ctx)


def project_basis(Q, X, complement=False, ctx=None):
    return ProjectBasis.apply(Q, X, complement, ctx)


def eigh(A, mode="mask", param=0.0, ctx=None):
    return Eigh.apply(A, mode, param, ctx)


def svd(A, full_matrices=False, mode="mask", param=0.0, ctx=None):
    return Svd.apply(A, full_matrices, mode, param, ctx)


def matfunc(A, fn="sqrt", p=None, ctx=None):
    return MatFunc.apply(A, fn, p, ctx)


def regularizer(A, kind="spectral", fn=None, p=None, ctx=None):
    need_grad = torch.is_grad_enabled() and A.requires_grad
    return Regularizer.apply(A, kind, fn, p, ctx, need_grad)

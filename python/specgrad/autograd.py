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

Every wrapper also supports torch.func (grad, vjp, jacrev, vmap: per-sample gradients with
vmap(grad(loss))): forward + setup_context, a vmap rule, and a backward made of torch ops and Functions
that call the library (EighBackward, _Pinv, ...) with vmap rules. Forward mode (torch.func.jvp, jacfwd,
torch.autograd.forward_ad) for eigh, svd (economy) and matfunc: the adjoints of their backwards, so the
same degeneracy mode applies both ways. No Hessians: the backwards are once_differentiable.
"""
from __future__ import annotations

import numpy as np
import torch

from ._core import _ctx_for
from ._lib import DegenerateError, NonFiniteError


def _ctx(ctx, x):
    return _ctx_for(ctx, x)


def _front(x, d, size):
    """x with its vmapped dimension d moved to the front; expanded to the batch when x is not vmapped."""
    if x is None:
        return None
    return x.movedim(d, 0) if d is not None else x.expand(size, *x.shape)


def _vmap_fronted(fn, info, in_dims, tensors, *args):
    """vmap rule of a library backward op: every tensor argument with the vmapped dimension in front (one
    more batch dimension), then one call."""
    return fn.apply(*(_front(x, d, info.batch_size) for x, d in zip(tensors, in_dims)), *args), 0


class _LibOp(torch.autograd.Function):
    """A library op called by a backward (eigh_backward, pinv, a projection, ...) as a Function of its
    own, so that backwards are made of Functions and torch ops: what torch.func's grad, vjp and jacrev
    need, and vmap over them (per-sample gradients) uses its vmap rule (the library ops are batched: the
    vmapped dimension becomes one more batch dimension). Its own backward is not implemented, so
    differentiating a gradient through it raises instead of silently missing its dependence on A."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("specgrad: the library's backward ops are once_differentiable: differentiating a "
                           "gradient (double backward, Hessians) is not supported")

    @staticmethod
    def jvp(ctx, *tangents):  # forward over reverse (torch.func.hessian) or over forward (jacfwd of a jvp)
        raise RuntimeError("specgrad: the library's backward ops are once_differentiable: differentiating a "
                           "gradient or a tangent (double backward, Hessians, forward over reverse or over "
                           "forward) is not supported")


def _vmap_broadcast(in_dims, xs):
    """vmap rule of an op whose matrix arguments' batch dimensions broadcast: each vmapped x gets the
    vmapped dimension in front, padded with size-1 dimensions to the largest per-sample batch rank so that
    it leads the broadcast batch; the others get leading size-1 dimensions to the same rank (equal ranks:
    the binding's rule that an X one dimension short is a batch of vectors cannot misread a matrix)."""
    rank = max(x.dim() - 2 - (d is not None) for x, d in zip(xs, in_dims))
    out = []
    for x, d in zip(xs, in_dims):
        if d is not None:
            x = x.movedim(d, 0)
            x = x.reshape(x.shape[:1] + (1,) * (rank + 3 - x.dim()) + x.shape[1:])
        else:
            x = x.reshape((1,) * (rank + 3 - x.dim()) + x.shape)
        out.append(x)
    return out


def _vmap_tols(op, dims, *tols):
    """Tolerances as a vmap rule passes them on. A vmapped tolerance tensor is refused. An array of the whole
    call gets a leading size-1 dimension: the rule puts the vmapped dimension in front of the batch, where an
    array would otherwise pair its values with the samples; this way it broadcasts to the per-sample batch
    exactly as without vmap (and one that does not is refused as without vmap)."""
    if any(d is not None for d in dims):
        raise NotImplementedError(f"specgrad.autograd.{op}: vmap over a tolerance tensor is not supported; pass "
                                  f"per-matrix tolerances as an array that broadcasts to the batch shape instead")
    out = []
    for t in tols:
        if isinstance(t, torch.Tensor):
            t = t if t.dim() == 0 else t.unsqueeze(0)
        elif t is not None and not isinstance(t, (int, float)):
            t = np.asarray(t)
            t = t if t.ndim == 0 else t[None]
        out.append(t)
    return out


def _per_matrix(*tols):
    """Whether a tolerance is an array of several values (one per matrix), not one number."""
    return any(t is not None and (t.numel() if hasattr(t, "numel") else np.size(t)) > 1 for t in tols)


def _pinv_for(A, bs, atol, rtol, c):
    """A⁺ for a backward: of A as it is, or, with per-matrix tolerances, of A expanded to the call's batch
    shape bs (a shared A has one rank per batch item then)."""
    if _per_matrix(atol, rtol):
        A = A.expand(tuple(bs) + A.shape[-2:])
    return _Pinv.apply(A, atol, rtol, c)


class _Pinv(_LibOp):
    @staticmethod
    def forward(A, atol, rtol, c):
        return c.pinv(A, atol, rtol)

    @staticmethod
    def vmap(info, in_dims, A, atol, rtol, c):
        return _vmapped(_Pinv, info, A, in_dims[0], 1, *_vmap_tols("pinv", in_dims[1:3], atol, rtol), c)


class _ProjectOp(_LibOp):
    @staticmethod
    def forward(A, X, which, atol, rtol, c):
        return c.project(A, X, which, atol, rtol)

    @staticmethod
    def vmap(info, in_dims, A, X, which, atol, rtol, c):
        return _ProjectOp.apply(*_vmap_broadcast(in_dims[:2], (A, X)), which,
                                *_vmap_tols("project", in_dims[3:5], atol, rtol), c), 0


class _ProjectBasisOp(_LibOp):
    @staticmethod
    def forward(Q, X, complement, c):
        return c.project_basis(Q, X, complement)

    @staticmethod
    def vmap(info, in_dims, Q, X, complement, c):
        return _ProjectBasisOp.apply(*_vmap_broadcast(in_dims[:2], (Q, X)), complement, c), 0


def _tie_result(fn, *args, **kw):
    """fn(...), or its inf/NaN result at a tie in mode='exact' (DegenerateError.result), like torch and jax."""
    try:
        return fn(*args, **kw)
    except DegenerateError as e:
        return e.result


class EighBackward(_LibOp):
    @staticmethod
    def forward(w, V, gw, gV, mode, param, c):
        return _tie_result(c.eigh_backward, w, V, gw, gV, mode=mode, param=param)

    @staticmethod
    def vmap(info, in_dims, w, V, gw, gV, mode, param, c):
        return _vmap_fronted(EighBackward, info, in_dims, (w, V, gw, gV), mode, param, c)


class SvdBackward(_LibOp):
    @staticmethod
    def forward(U, S, Vh, gU, gS, gVh, mode, param, c):
        return _tie_result(c.svd_backward, U, S, Vh, gU, gS, gVh, mode=mode, param=param)

    @staticmethod
    def vmap(info, in_dims, U, S, Vh, gU, gS, gVh, mode, param, c):
        return _vmap_fronted(SvdBackward, info, in_dims, (U, S, Vh, gU, gS, gVh), mode, param, c)


class MatFuncBackward(_LibOp):
    @staticmethod
    def forward(w, V, gF, fn, p, c):
        return c.matfunc_backward(w, V, gF, fn, p)

    @staticmethod
    def vmap(info, in_dims, w, V, gF, fn, p, c):
        return _vmap_fronted(MatFuncBackward, info, in_dims, (w, V, gF), fn, p, c)


def _jvp_call(op, fn, *args):
    """fn.apply(*args) inside op's jvp: a NaN/Inf in the tangent is reported by the backward op it feeds
    (the library checks its inputs, as for cotangents); say where it came from."""
    try:
        return fn.apply(*args)
    except NonFiniteError as e:
        e.add_note(f"(in the forward-mode rule of specgrad.autograd.{op}: the tangent dA holds NaN or Inf)")
        raise


def _eye_like(M):
    """The identity of M's matrix size, expanded to M's batch shape (the binding copies it for the call)."""
    return torch.eye(M.shape[-1], dtype=M.dtype, device=M.device).expand(M.shape)


def _vmapped(fn, info, A, d, nout, *args):
    """vmap rule of a forward whose only tensor input is A: the vmapped dimension is one more batch dimension."""
    return fn.apply(A.movedim(d, 0), *args), (0,) * nout if nout > 1 else 0


class Eigh(torch.autograd.Function):
    @staticmethod
    def forward(A, mode="mask", param=0.0, sgctx=None):
        return _ctx(sgctx, A).eigh(A.detach())

    @staticmethod
    def setup_context(ctx, inputs, output):
        A, mode, param, sgctx = inputs
        ctx.save_for_backward(*output)
        ctx.save_for_forward(*output)
        ctx.opts = (mode, param, _ctx(sgctx, A))
        ctx.set_materialize_grads(False)  # an unused V gets gV = None: no V term (finite at ties, as torch)

    @staticmethod
    def jvp(ctx, dA, *_):
        """dw = diag(X), dV = V (X ∘ F), X = Vᵀ sym(dA) V: the adjoint of the backward, with the backward's
        own F (degeneracy mode included) read off the library: for K antisymmetric, eigh_backward at V = I
        gives skew(K) ∘ F = K ∘ F; K = X above the diagonal and −X below it gives X ∘ F up to those signs."""
        w, V = ctx.saved_tensors
        X = V.mT @ ((dA + dA.mT) / 2) @ V
        up = X.triu(1)
        FK = _jvp_call("eigh", EighBackward, w, _eye_like(V), None, up - up.mT, *ctx.opts)
        return X.diagonal(dim1=-2, dim2=-1), V @ (FK.triu(1) - FK.tril(-1))

    @staticmethod
    def backward(ctx, gw, gV):
        if gw is None and gV is None:
            return None, None, None, None
        w, V = ctx.saved_tensors
        return EighBackward.apply(w, V, gw, gV, *ctx.opts), None, None, None

    @staticmethod
    def vmap(info, in_dims, A, mode, param, sgctx):
        return _vmapped(Eigh, info, A, in_dims[0], 2, mode, param, sgctx)


class Svd(torch.autograd.Function):
    @staticmethod
    def forward(A, full_matrices=False, mode="mask", param=0.0, sgctx=None):
        return _ctx(sgctx, A).svd(A.detach(), full_matrices=full_matrices)

    @staticmethod
    def setup_context(ctx, inputs, output):
        A, full_matrices, mode, param, sgctx = inputs
        ctx.save_for_backward(*output)
        ctx.save_for_forward(*output)
        ctx.full_matrices = full_matrices
        ctx.opts = (mode, param, _ctx(sgctx, A))
        ctx.set_materialize_grads(False)  # unused U / Vh: None, no term (zeros would meet 1/E, Σ⁻¹ at ties, σ = 0)

    @staticmethod
    def jvp(ctx, dA, *_):
        """The adjoint of the backward (docs/gradients.md), with its own coefficients read off the library.
        With P = Uᵀ dA V, the backward's off-diagonal G = c₊ ∘ a + c₋ ∘ d (a = skew(UᵀgU), d = skew(VᵀgV);
        c₊, c₋ hold the degeneracy mode), so dS = diag(P), dU = U skew(c₊ ∘ P) + (I − UUᵀ) dA V Σ⁻¹ and
        dV = V skew(c₋ ∘ P) + (I − VVᵀ) dAᵀ U Σ⁻¹. svd_backward at U = V = I with an antisymmetric gU = K
        (a = 2K) gives 2 c₊ ∘ K; one K from P's upper triangle and one from its lower give c₊ ∘ P (c₋: gV)."""
        if ctx.full_matrices:
            raise NotImplementedError("specgrad.autograd.svd: forward-mode AD (jvp, jacfwd) with full_matrices=True "
                                      "is not supported (the complement's tangent is not unique); use "
                                      "full_matrices=False")
        U, S, Vh = ctx.saved_tensors
        V = Vh.mT
        P = U.mT @ dA @ V
        up, lo = P.triu(1), P.tril(-1)
        K = torch.stack((up - up.mT, lo - lo.mT))  # the two probes as one more batch dimension
        I2 = _eye_like(P).expand(K.shape)
        S2 = S.expand((2,) + S.shape)
        Gu = _jvp_call("svd", SvdBackward, I2, S2, I2, K, None, None, *ctx.opts)
        Gv = _jvp_call("svd", SvdBackward, I2, S2, I2, None, None, -K, *ctx.opts)  # gVh = gVᵀ = Kᵀ
        cu = (Gu[0].triu(1) + Gu[1].tril(-1)) / 2
        cv = (Gv[0].triu(1) + Gv[1].tril(-1)) / 2
        dU = U @ (cu - cu.mT)
        dV = V @ (cv - cv.mT)
        Sinv = 1 / S[..., None, :]
        if U.shape[-2] > U.shape[-1]:
            dU = dU + (dA @ V - U @ P) * Sinv
        if V.shape[-2] > V.shape[-1]:
            dV = dV + (dA.mT @ U - V @ P.mT) * Sinv
        return dU, P.diagonal(dim1=-2, dim2=-1), dV.mT

    @staticmethod
    def backward(ctx, gU, gS, gVh):
        if gU is None and gS is None and gVh is None:
            return None, None, None, None, None
        U, S, Vh = ctx.saved_tensors
        return SvdBackward.apply(U, S, Vh, gU, gS, gVh, *ctx.opts), None, None, None, None

    @staticmethod
    def vmap(info, in_dims, A, full_matrices, mode, param, sgctx):
        return _vmapped(Svd, info, A, in_dims[0], 3, full_matrices, mode, param, sgctx)


class MatFunc(torch.autograd.Function):
    """(F, w, V) with F = f(A); forward is one matfunc call (domain checks, one eigendecomposition), which
    also returns the (w, V) it used: outputs (not differentiable) so that setup_context can save them."""

    @staticmethod
    def forward(A, fn="sqrt", p=None, sgctx=None):
        return _ctx(sgctx, A).matfunc(A.detach(), fn, p, return_eig=True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        A, fn, p, sgctx = inputs
        F, w, V = output
        ctx.save_for_backward(w, V)
        ctx.save_for_forward(w, V)
        ctx.mark_non_differentiable(w, V)
        ctx.opts = (fn, p, _ctx(sgctx, A))

    @staticmethod
    def jvp(ctx, dA, *_):
        """dF = V (L ∘ (Vᵀ sym(dA) V)) Vᵀ: L is symmetric, so the map is its own adjoint, the backward."""
        w, V = ctx.saved_tensors
        return _jvp_call("matfunc", MatFuncBackward, w, V, dA, *ctx.opts), None, None

    @staticmethod
    def backward(ctx, gF, gw, gV):
        w, V = ctx.saved_tensors
        return MatFuncBackward.apply(w, V, gF, *ctx.opts), None, None, None

    @staticmethod
    def vmap(info, in_dims, A, fn, p, sgctx):
        return _vmapped(MatFunc, info, A, in_dims[0], 3, fn, p, sgctx)


class RegularizerGrad(_LibOp):
    """gA · gloss per matrix, with gA from the forward's library call (torch ops: vmap rule generated)."""
    generate_vmap_rule = True

    @staticmethod
    def forward(gA, gloss):
        return gA * gloss[..., None, None]


class Regularizer(torch.autograd.Function):
    """Per-matrix loss (batch shape) and, from the same library call, its gradient gA as a second
    (non-differentiable) output, only when it can be needed: need_grad (the `regularizer` function below
    decides it from grad mode and A.requires_grad, which forward cannot see)."""

    @staticmethod
    def forward(A, kind="spectral", fn=None, p=None, sgctx=None, need_grad=False):
        c = _ctx(sgctx, A)
        if need_grad:
            return tuple(c.regularizer(A.detach(), kind, fn, p))
        return c.regularizer(A.detach(), kind, fn, p, grad=False)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.has_grad = isinstance(output, tuple)
        if ctx.has_grad:
            ctx.mark_non_differentiable(output[1])
            ctx.save_for_backward(output[1])

    @staticmethod
    def backward(ctx, gloss, *unused):
        if not ctx.has_grad:
            raise RuntimeError("specgrad.autograd.Regularizer: the gradient was not computed in forward "
                               "(need_grad=False / torch.no_grad)")
        (gA,) = ctx.saved_tensors
        return RegularizerGrad.apply(gA, gloss), None, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, A, kind, fn, p, sgctx, need_grad):
        return _vmapped(Regularizer, info, A, in_dims[0], 2 if need_grad else 1, kind, fn, p, sgctx, need_grad)


class ProjectBasis(torch.autograd.Function):
    """Y = Q Qᵀ X (or X − Q Qᵀ X), X (..., n, k) (the function below makes vectors columns). gX is the same
    projection of gY (P = Q Qᵀ is symmetric), by the library; gQ = ±(gY Xᵀ + X gYᵀ) Q, the derivative of
    the formula in Q as a free matrix (no orthonormality constraint), in torch. Batch dimensions
    broadcast; the gradients are summed back to each input's shape."""

    @staticmethod
    def forward(Q, X, complement=False, sgctx=None):
        return _ctx(sgctx, Q).project_basis(Q.detach(), X.detach(), complement)

    @staticmethod
    def setup_context(ctx, inputs, output):
        Q, X, complement, sgctx = inputs
        ctx.save_for_backward(Q, X)
        ctx.opts = (complement, _ctx(sgctx, Q))

    @staticmethod
    def backward(ctx, gY):
        Q, X = ctx.saved_tensors
        complement, c = ctx.opts
        gQ = gX = None
        if ctx.needs_input_grad[1]:
            gX = _ProjectBasisOp.apply(Q, gY, complement, c).sum_to_size(X.shape)
        if ctx.needs_input_grad[0]:
            gQ = (gY @ (X.mT @ Q) + X @ (gY.mT @ Q)).sum_to_size(Q.shape)
            if complement:
                gQ = -gQ
        return gQ, gX, None, None

    @staticmethod
    def vmap(info, in_dims, Q, X, complement, sgctx):
        return ProjectBasis.apply(*_vmap_broadcast(in_dims[:2], (Q, X)), complement, sgctx), 0


class Lstsq(torch.autograd.Function):
    """X = A⁺B (minimum norm, the library's rank cutoff). A⁺ is differentiable where the rank is constant
    (Golub & Pereyra 1973; torch's pinv_backward): with A⁺ from the library (same cutoff, so the same rank),
    gB = A⁺ᵀ gX and gA = −gB Xᵀ + (B − AX)(A⁺gB)ᵀ + (A⁺ᵀX)(gX − A⁺A gX)ᵀ, in torch matmuls. Batch dimensions
    broadcast (the library factors a shared A once); the gradients are summed back to each input's shape."""

    @staticmethod
    def forward(A, B, atol=0.0, rtol=None, sgctx=None):
        return _ctx(sgctx, A).lstsq(A.detach(), B.detach(), atol, rtol)

    @staticmethod
    def setup_context(ctx, inputs, output):
        A, B, atol, rtol, sgctx = inputs
        ctx.save_for_backward(A, B, output)
        ctx.opts = (atol, rtol, _ctx(sgctx, A))

    @staticmethod
    def backward(ctx, gX):
        A, B, X = ctx.saved_tensors
        Ap = _pinv_for(A, X.shape[:-2], *ctx.opts)  # n×m
        gB = Ap.mT @ gX
        gA = None
        if ctx.needs_input_grad[0]:
            gA = -gB @ X.mT + (B - A @ X) @ (Ap @ gB).mT + (Ap.mT @ X) @ (gX - Ap @ (A @ gX)).mT
            gA = gA.sum_to_size(A.shape)
        gB = gB.sum_to_size(B.shape) if ctx.needs_input_grad[1] else None
        return gA, gB, None, None, None

    @staticmethod
    def vmap(info, in_dims, A, B, atol, rtol, sgctx):
        return Lstsq.apply(*_vmap_broadcast(in_dims[:2], (A, B)), *_vmap_tols("lstsq", in_dims[2:4], atol, rtol),
                           sgctx), 0


class Project(torch.autograd.Function):
    """Y = P X (row space) or (I − P) X (nullspace), P = A⁺A. gX is the same projection of gY (P symmetric),
    by the library. gA from dP = A⁺ dA (I − P) + (I − P) dAᵀ A⁺ᵀ (constant rank; Golub & Pereyra 1973):
    gA = ±A⁺ᵀ (X gYᵀ + gY Xᵀ)(I − P), + for the row space, with A⁺ from the library (same cutoff). Batch
    dimensions broadcast; the gradients are summed back to each input's shape."""

    @staticmethod
    def forward(A, X, which="null", atol=0.0, rtol=None, sgctx=None):
        return _ctx(sgctx, A).project(A.detach(), X.detach(), which, atol, rtol)

    @staticmethod
    def setup_context(ctx, inputs, output):
        A, X, which, atol, rtol, sgctx = inputs
        ctx.save_for_backward(A, X)
        ctx.opts = (which, atol, rtol, _ctx(sgctx, A))

    @staticmethod
    def backward(ctx, gY):
        A, X = ctx.saved_tensors
        which, atol, rtol, c = ctx.opts
        gA = gX = None
        if ctx.needs_input_grad[1]:
            gX = _ProjectOp.apply(A, gY, which, atol, rtol, c).sum_to_size(X.shape)
        if ctx.needs_input_grad[0]:
            Ap = _pinv_for(A, gY.shape[:-2], atol, rtol, c)  # n×m
            M = X @ gY.mT + gY @ X.mT   # n×n, symmetric
            gA = (Ap.mT @ (M - (M @ Ap) @ A)).sum_to_size(A.shape)
            if which == "null":
                gA = -gA
        return gA, gX, None, None, None, None

    @staticmethod
    def vmap(info, in_dims, A, X, which, atol, rtol, sgctx):
        return Project.apply(*_vmap_broadcast(in_dims[:2], (A, X)), which,
                             *_vmap_tols("project", in_dims[3:5], atol, rtol), sgctx), 0


class NullSpace(torch.autograd.Function):
    """(N, nullity) = null_space(A), N padded (..., n, n). A determines null(A) as a subspace, not its basis:
    for a loss that does not depend on the basis chosen, dN = −A⁺ dA N at constant rank (from N Nᵀ = I − A⁺A
    and A⁺ᵀN = 0), so gA = −A⁺ᵀ gN Nᵀ, with A⁺ from the library (same cutoff). The zero padding columns of N
    drop out of gN Nᵀ. For a loss that depends on the basis, the gradient of its basis-free part."""

    @staticmethod
    def forward(A, atol=0.0, rtol=None, sgctx=None):
        return tuple(_ctx(sgctx, A).null_space(A.detach(), atol, rtol))

    @staticmethod
    def setup_context(ctx, inputs, output):
        A, atol, rtol, sgctx = inputs
        ctx.save_for_backward(A, output[0])
        ctx.opts = (atol, rtol, _ctx(sgctx, A))
        ctx.mark_non_differentiable(output[1])  # backward runs only when N gets a gradient

    @staticmethod
    def backward(ctx, gN, gnullity):
        A, N = ctx.saved_tensors
        Ap = _Pinv.apply(A, *ctx.opts)  # n×m
        return -(Ap.mT @ (gN @ N.mT)), None, None, None

    @staticmethod
    def vmap(info, in_dims, A, atol, rtol, sgctx):
        return _vmapped(NullSpace, info, A, in_dims[0], 2, *_vmap_tols("null_space", in_dims[1:3], atol, rtol), sgctx)


def _tol_arg(t):
    """A list or tuple of per-matrix tolerances as an array: torch.func would read it as a pytree of
    arguments (and vmap would then take it for a batched input)."""
    return np.asarray(t, dtype=np.float64) if isinstance(t, (list, tuple)) else t


def null_space(A, atol=0.0, rtol=None, ctx=None):
    """Padded nullspace bases (N (..., n, n), nullity) with gradients to A at constant rank (see NullSpace)."""
    return NullSpace.apply(A, _tol_arg(atol), _tol_arg(rtol), ctx)


def project(A, X, which="null", atol=0.0, rtol=None, ctx=None):
    """Nullspace / row-space projection of X with gradients to A (constant rank) and X. X (..., n, k) or a
    batch of vectors (..., n); batch dimensions broadcast."""
    vec = X.dim() == A.dim() - 1
    Y = Project.apply(A, X[..., None] if vec else X, which, _tol_arg(atol), _tol_arg(rtol), ctx)
    return Y[..., 0] if vec else Y


def lstsq(A, B, atol=0.0, rtol=None, ctx=None):
    """Minimum-norm least squares with gradients to A and B (constant rank; see Lstsq). B (..., m, k) or a
    batch of vectors (..., m); batch dimensions broadcast like torch.linalg.lstsq's."""
    vec = B.dim() == A.dim() - 1
    X = Lstsq.apply(A, B[..., None] if vec else B, _tol_arg(atol), _tol_arg(rtol), ctx)
    return X[..., 0] if vec else X


def pinv(A, atol=0.0, rtol=None, ctx=None):
    """Pseudo-inverse (..., n, m) with its gradient: lstsq(A, I)."""
    m = A.shape[-2]
    I = torch.eye(m, dtype=A.dtype, device=A.device).reshape((1,) * (A.dim() - 2) + (m, m))  # a matrix per item
    return Lstsq.apply(A, I, _tol_arg(atol), _tol_arg(rtol), ctx)


def project_basis(Q, X, complement=False, ctx=None):
    """Q Qᵀ X (complement: X − Q Qᵀ X) with gradients to Q and X. X (..., n, k) or a batch of vectors
    (..., n); batch dimensions broadcast."""
    vec = X.dim() == Q.dim() - 1
    Y = ProjectBasis.apply(Q, X[..., None] if vec else X, complement, ctx)
    return Y[..., 0] if vec else Y


def eigh(A, mode="mask", param=0.0, ctx=None):
    return Eigh.apply(A, mode, param, ctx)


def svd(A, full_matrices=False, mode="mask", param=0.0, ctx=None):
    return Svd.apply(A, full_matrices, mode, param, ctx)


def matfunc(A, fn="sqrt", p=None, ctx=None):
    return MatFunc.apply(A, fn, p, ctx)[0]


def regularizer(A, kind="spectral", fn=None, p=None, ctx=None):
    need_grad = torch.is_grad_enabled() and A.requires_grad
    out = Regularizer.apply(A, kind, fn, p, ctx, need_grad)
    return out[0] if need_grad else out

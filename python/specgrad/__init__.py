"""specgrad — batched spectral linear algebra and its gradients (ctypes binding over libspecgrad.so).

numpy arrays (float32/float64, any batch shape (..., m, n)) and torch tensors (CUDA tensors zero-copy on
a CUDA context; CPU tensors through numpy). Output conventions follow numpy.linalg. Every function takes
ctx=None: numpy input uses the shared context of $SPECGRAD_BACKEND (default 'cpu'), CUDA tensors the
shared CUDA context of their device (one per GPU). Autograd wrappers for torch live in specgrad.autograd.
"""
from ._lib import VERSION as _VERSION
from ._lib import (DegenerateError, DomainError, NoDeviceError, NonFiniteError, NotConvergedError,
                   SpecgradArgumentError, SpecgradError, cuda_devices, lib)
from ._core import Context, get_context, trim_null_space, _ctx_for

__all__ = [
    "Context", "get_context", "cuda_devices", "SpecgradError", "SpecgradArgumentError", "NonFiniteError",
    "DomainError", "DegenerateError", "NoDeviceError", "NotConvergedError", "eigh", "eigvalsh", "svd",
    "svdvals", "matrix_rank", "null_space", "trim_null_space", "project", "project_basis", "lstsq", "pinv", "eigh_backward",
    "svd_backward", "matfunc", "matfunc_backward", "regularizer",
]

lib()  # fail at import with a clear message when the shared library is missing or of another version
__version__ = f"{_VERSION[0]}.{_VERSION[1]}"


def eigh(A, uplo="L", *, ctx=None):
    return _ctx_for(ctx, A).eigh(A, uplo)


def eigvalsh(A, uplo="L", *, ctx=None):
    return _ctx_for(ctx, A).eigvalsh(A, uplo)


def svd(A, full_matrices=True, compute_uv=True, *, ctx=None):
    return _ctx_for(ctx, A).svd(A, full_matrices, compute_uv)


def svdvals(A, *, ctx=None):
    return _ctx_for(ctx, A).svdvals(A)


def matrix_rank(A, atol=0.0, rtol=None, *, tol=None, ctx=None):
    return _ctx_for(ctx, A).matrix_rank(A, atol, rtol, tol=tol)


def null_space(A, atol=0.0, rtol=None, *, ctx=None):
    return _ctx_for(ctx, A).null_space(A, atol, rtol)


def project(A, X, which="null", atol=0.0, rtol=None, *, ctx=None):
    return _ctx_for(ctx, A, X).project(A, X, which, atol, rtol)


def project_basis(Q, X, complement=False, *, ctx=None):
    return _ctx_for(ctx, Q, X).project_basis(Q, X, complement)


def lstsq(A, B, atol=0.0, rtol=None, *, rcond=None, return_rank=False, ctx=None):
    return _ctx_for(ctx, A, B).lstsq(A, B, atol, rtol, rcond=rcond, return_rank=return_rank)


def pinv(A, atol=0.0, rtol=None, *, rcond=None, ctx=None):
    return _ctx_for(ctx, A).pinv(A, atol, rtol, rcond=rcond)


def eigh_backward(w, V, gw=None, gV=None, mode="mask", param=0.0, *, ctx=None):
    return _ctx_for(ctx, V).eigh_backward(w, V, gw, gV, mode, param)


def svd_backward(U, S, Vh, gU=None, gS=None, gVh=None, mode="mask", param=0.0, *, ctx=None):
    return _ctx_for(ctx, U).svd_backward(U, S, Vh, gU, gS, gVh, mode, param)


def matfunc(A, fn="sqrt", p=None, uplo="L", *, return_eig=False, ctx=None):
    return _ctx_for(ctx, A).matfunc(A, fn, p, uplo, return_eig=return_eig)


def matfunc_backward(w, V, gF, fn="sqrt", p=None, *, ctx=None):
    return _ctx_for(ctx, V).matfunc_backward(w, V, gF, fn, p)


def regularizer(A, kind, fn=None, p=None, *, grad=True, uplo="L", ctx=None):
    return _ctx_for(ctx, A).regularizer(A, kind, fn, p, grad=grad, uplo=uplo)


for _f in (eigh, eigvalsh, svd, svdvals, matrix_rank, null_space, project, project_basis, lstsq, pinv, eigh_backward,
           svd_backward, matfunc, matfunc_backward, regularizer):
    _f.__doc__ = getattr(Context, _f.__name__).__doc__
del _f

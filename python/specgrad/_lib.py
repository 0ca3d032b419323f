"""ctypes declarations for libspecgrad.so (include/specgrad.h) and the exception types."""
from __future__ import annotations

import ctypes as C
import os
import sys
from pathlib import Path

# ---- enums (values from include/specgrad.h) -------------------------------------------------------
SG_OK = 0
SG_ERR_ARG = 1
STATUS_NAMES = [
    "SG_OK", "SG_ERR_ARG", "SG_ERR_DTYPE", "SG_ERR_NONFINITE", "SG_ERR_NOCONV", "SG_ERR_LAPACK",
    "SG_ERR_ALLOC", "SG_ERR_NODEVICE", "SG_ERR_CUDA", "SG_ERR_CUSOLVER", "SG_ERR_CUBLAS",
    "SG_ERR_DEVICE_OOM", "SG_ERR_UNSUPPORTED", "SG_ERR_DEGENERATE", "SG_ERR_DOMAIN", "SG_ERR_IO",
    "SG_ERR_FORMAT", "SG_ERR_CANCELLED",
]
SG_F32, SG_F64 = 0, 1
BACKENDS = {"auto": 0, "cpu": 1, "cuda": 2}
BACKEND_NAMES = {v: k for k, v in BACKENDS.items()}
SG_MEM_HOST, SG_MEM_DEVICE = 0, 1
PROJ = {"null": 0, "row": 1}
DEGEN = {"exact": 0, "mask": 1, "lorentz": 2, "taylor": 3}
FN = {"sqrt": 0, "log": 1, "exp": 2, "pow": 3, "callback": 4}
REG = {"spectral": 0, "nuclear": 1, "ortho": 2, "logdet": 3, "eigsum": 4}


class sg_mat(C.Structure):
    _fields_ = [
        ("data", C.c_void_p),
        ("dtype", C.c_int),
        ("batch", C.c_int64),
        ("rows", C.c_int64),
        ("cols", C.c_int64),
        ("ld", C.c_int64),
        ("stride", C.c_int64),
    ]


FN_CB = C.CFUNCTYPE(C.c_double, C.c_double, C.c_void_p)
PROGRESS_CB = C.CFUNCTYPE(C.c_int, C.c_double, C.c_void_p)


class sg_fn(C.Structure):
    _fields_ = [
        ("kind", C.c_int),
        ("p", C.c_double),
        ("f", FN_CB),
        ("df", FN_CB),
        ("user", C.c_void_p),
    ]


# ---- exceptions -----------------------------------------------------------------------------------
class SpecgradError(RuntimeError):
    """A libspecgrad call failed. Attributes: status (int), status_name ('SG_ERR_...'), message
    (sg_last_error), op, index (flat batch index of the failing matrix or -1) and batch_index (the
    same as a tuple over the caller's batch shape, or None)."""

    def __init__(self, op, status, message, index=-1, batch_index=None, result=None):
        self.op = op
        self.status = status
        self.status_name = STATUS_NAMES[status] if 0 <= status < len(STATUS_NAMES) else f"status {status}"
        self.message = message
        self.index = index
        self.batch_index = batch_index
        self.result = result  # partial result where the C API still writes one (SG_ERR_DEGENERATE)
        where = ""
        if index is not None and index >= 0:
            where = f" [failing matrix: batch index {batch_index if batch_index is not None else index}]"
        super().__init__(f"specgrad.{op}: {self.status_name}: {message}{where}")


class SpecgradArgumentError(SpecgradError, ValueError):
    """Bad shape, dtype, option or tolerance (SG_ERR_ARG / SG_ERR_DTYPE)."""


class NonFiniteError(SpecgradError, ValueError):
    """NaN or Inf in an input (SG_ERR_NONFINITE)."""


class DomainError(SpecgradError, ValueError):
    """Input outside a matrix function's domain, e.g. log of a non-positive eigenvalue, or a result that
    overflows the dtype: f(A), a loss, a gradient, eigen/singular values, a lstsq solution (SG_ERR_DOMAIN)."""


class DegenerateError(SpecgradError, ArithmeticError):
    """mode='exact' met tied eigen/singular values; .result holds the (inf/NaN) gradient."""


class NoDeviceError(SpecgradError):
    """CUDA backend asked for without a usable GPU or without CUDA support (SG_ERR_NODEVICE)."""


class NotConvergedError(SpecgradError, ArithmeticError):
    """An iterative solver did not converge (SG_ERR_NOCONV / LAPACK info)."""


_ERR_CLASS = {1: SpecgradArgumentError, 2: SpecgradArgumentError, 3: NonFiniteError, 4: NotConvergedError,
              5: NotConvergedError, 7: NoDeviceError, 13: DegenerateError, 14: DomainError}


def error_class(status):
    return _ERR_CLASS.get(status, SpecgradError)


# The library version this binding's declarations are for (SG_VERSION_MAJOR/MINOR of include/specgrad.h;
# 0.x: another minor version may change a signature, so it must match exactly).
VERSION = (0, 1)

# ---- loading --------------------------------------------------------------------------------------
SONAME = f"libspecgrad.so.{VERSION[0]}.{VERSION[1]}"


def _candidates():
    """Files to try, in order: $SPECGRAD_LIB (only that one when set); the package's directories (a wheel
    from `pip install .`, or -e); <repo>/build (a source checkout). lib() then asks the loader for SONAME
    (LD_LIBRARY_PATH, the loader cache: `cmake --install` to a prefix it knows)."""
    env = os.environ.get("SPECGRAD_LIB")
    if env:
        return [Path(env)], True
    here = Path(__file__).resolve().parent
    # every directory of the package: an editable install (pip install -e .) keeps the library in
    # site-packages/specgrad and the modules in python/specgrad, both on the package's __path__
    pkg = sys.modules.get(__package__) if __package__ else None
    dirs = [Path(d) for d in getattr(pkg, "__path__", None) or [here]]
    return [d / "libspecgrad.so" for d in dirs] + [here.parents[1] / "build" / "libspecgrad.so"], False


def _load(what, name, missing=None):
    """name loaded and declared, checked to be VERSION; what names it in errors. missing: the error when
    dlopen finds nothing (None: report dlopen's reason)."""
    try:
        dll = C.CDLL(name)
    except OSError as e:
        if missing:
            raise ImportError(missing) from None
        raise ImportError(f"specgrad: could not load {what}: {e}") from e
    try:
        handle = _declare(dll)
    except AttributeError as e:
        raise ImportError(f"specgrad: {what} lacks a symbol of include/specgrad.h ({e}); rebuild the library") from e
    v = handle.sg_version()
    if (v // 1000, v % 1000) != VERSION:
        raise ImportError(f"specgrad: {what} is libspecgrad {v // 1000}.{v % 1000}; this Python package is for "
                          f"{VERSION[0]}.{VERSION[1]} (rebuild the library, or point SPECGRAD_LIB at the "
                          "matching one)")
    return handle


def _declare(lib):
    P = C.POINTER
    M = P(sg_mat)
    I64P = C.c_void_p  # int64 outputs: host or device pointer, passed as an address
    DP = C.c_void_p  # per-matrix tolerances: host float64 arrays (None: NULL)
    st = C.c_int
    sig = {
        "sg_create": (st, [P(C.c_void_p), C.c_int]),
        "sg_destroy": (None, [C.c_void_p]),
        "sg_get_backend": (C.c_int, [C.c_void_p]),
        "sg_last_error": (C.c_char_p, [C.c_void_p]),
        "sg_failed_index": (C.c_int64, [C.c_void_p]),
        "sg_status_string": (C.c_char_p, [C.c_int]),
        "sg_version": (C.c_int, []),
        "sg_cuda_devices": (C.c_int, [C.c_char_p, C.c_size_t]),
        "sg_set_memspace": (st, [C.c_void_p, C.c_int]),
        "sg_set_stream": (st, [C.c_void_p, C.c_void_p]),
        "sg_set_jacobi": (st, [C.c_void_p, C.c_double, C.c_int]),
        "sg_set_threads": (st, [C.c_void_p, C.c_int]),
        "sg_set_check_finite": (st, [C.c_void_p, C.c_int]),
        "sg_set_chunk_bytes": (st, [C.c_void_p, C.c_size_t]),
        "sg_set_cache_bytes": (st, [C.c_void_p, C.c_size_t]),
        "sg_cache_held": (st, [C.c_void_p, C.POINTER(C.c_size_t)]),
        "sg_set_progress": (st, [C.c_void_p, PROGRESS_CB, C.c_double, C.c_void_p]),
        "sg_eigh": (st, [C.c_void_p, M, M, M]),
        "sg_svd": (st, [C.c_void_p, M, C.c_int, M, M, M]),
        "sg_rank": (st, [C.c_void_p, M, C.c_double, C.c_double, I64P]),
        "sg_nullspace": (st, [C.c_void_p, M, C.c_double, C.c_double, M, I64P]),
        "sg_project": (st, [C.c_void_p, M, M, C.c_int, C.c_double, C.c_double, M]),
        "sg_project_basis": (st, [C.c_void_p, M, M, C.c_int, M]),
        "sg_lstsq": (st, [C.c_void_p, M, M, C.c_double, C.c_double, M, I64P]),
        "sg_rank_tols": (st, [C.c_void_p, M, DP, DP, I64P]),
        "sg_nullspace_tols": (st, [C.c_void_p, M, DP, DP, M, I64P]),
        "sg_project_tols": (st, [C.c_void_p, M, M, C.c_int, DP, DP, M]),
        "sg_lstsq_tols": (st, [C.c_void_p, M, M, DP, DP, M, I64P]),
        "sg_eigh_backward": (st, [C.c_void_p, M, M, M, M, C.c_int, C.c_double, M]),
        "sg_svd_backward": (st, [C.c_void_p, M, M, M, M, M, M, C.c_int, C.c_double, M]),
        "sg_matfunc": (st, [C.c_void_p, M, P(sg_fn), M, M, M]),
        "sg_matfunc_backward": (st, [C.c_void_p, M, M, P(sg_fn), M, M]),
        "sg_regularizer": (st, [C.c_void_p, C.c_int, M, P(sg_fn), M, M]),
    }
    for name, (res, args) in sig.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args
    return lib


_LIB = None


def lib():
    """The loaded libspecgrad: the first of _candidates() that exists, else SONAME from the loader."""
    global _LIB
    if _LIB is None:
        paths, from_env = _candidates()
        for p in paths:
            if p.is_file():  # an absolute path: dlopen would search the library path for a bare name
                _LIB = _load(p, str(p.resolve()))
                return _LIB
        if from_env:
            raise ImportError(
                f"specgrad: SPECGRAD_LIB points to {paths[0]}, which does not exist. Build the C library "
                "(bash scripts/build) or unset SPECGRAD_LIB")
        # the loader's own search, no subprocess (ctypes.util.find_library runs ldconfig and gcc)
        _LIB = _load(f"{SONAME} (system library path)", SONAME, missing=(
            f"specgrad: libspecgrad.so not found (looked in {', '.join(str(p) for p in paths)}, and for "
            f"{SONAME} on the system's library path). Install the package with the library (pip install "
            ". in the repository), build it (bash scripts/build), or set SPECGRAD_LIB=/path/to/libspecgrad.so"))
    return _LIB


def cuda_devices():
    """(count, reason): number of usable CUDA devices and, when 0, why."""
    buf = C.create_string_buffer(256)
    n = lib().sg_cuda_devices(buf, 256)
    return n, buf.value.decode(errors="replace")

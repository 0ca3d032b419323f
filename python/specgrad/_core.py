"""Context and the ops, written once over two array "adapters": numpy (host memory) and torch CUDA tensors
(device memory, zero-copy). torch CPU tensors go through numpy (zero-copy views both ways).

Layout. The C API wants batches of column-major matrices: element (i, j) of matrix b at
data[b*stride + i + j*ld]. A C-contiguous numpy array X of shape (..., r, c) therefore *is*, without any
copy, the column-major batch of the c×r matrices Xᵀ. Every op below says which logical matrix the library
must see; `_desc` describes it in place when its memory already has that layout (also for strided
batches/ld > rows) and copies it otherwise. Where the math allows it the ops feed the transpose instead
(SVD of Aᵀ swaps U and V; rank/pinv/spectral/nuclear are transpose-invariant; eigh/matfunc of a symmetric
matrix only differ in which triangle is read), so C-contiguous input is not copied. The copies that remain
are listed in python/README.md.
"""
from __future__ import annotations

import ctypes as C
import math
import os
import signal
import sys
import threading
import weakref

import numpy as np

from . import _lib as L

# ---- adapters -------------------------------------------------------------------------------------


_AUTOGRAD_OPS = ("eigh", "svd", "matfunc", "regularizer", "project", "project_basis", "lstsq", "pinv", "null_space")  # autograd.py


class _NumpyAdapter:
    memspace = L.SG_MEM_HOST
    device = None

    @staticmethod
    def is_array(x):
        return isinstance(x, np.ndarray)

    @staticmethod
    def T(x):
        return x.swapaxes(-1, -2)

    @staticmethod
    def shape(x):
        return tuple(x.shape)

    @staticmethod
    def estrides(x):
        isz = x.itemsize
        if any(s % isz for s in x.strides):
            return None
        return tuple(s // isz for s in x.strides)

    @staticmethod
    def usable(x):
        return x.flags.aligned

    @staticmethod
    def ptr(x):
        return x.ctypes.data

    @staticmethod
    def dtype_code(x):
        return L.SG_F32 if x.dtype == np.float32 else L.SG_F64

    @staticmethod
    def copy_c(x):
        return np.ascontiguousarray(x)

    @staticmethod
    def empty(shape, code):
        return np.empty(shape, dtype=np.float32 if code == L.SG_F32 else np.float64)

    @staticmethod
    def zeros(shape, code):
        return np.zeros(shape, dtype=np.float32 if code == L.SG_F32 else np.float64)

    @staticmethod
    def empty_i64(shape):
        return np.empty(shape, dtype=np.int64)

    @staticmethod
    def eye(n, code):
        return np.eye(n, dtype=np.float32 if code == L.SG_F32 else np.float64)

    @staticmethod
    def reshape(x, shape):
        return x.reshape(shape)

    @staticmethod
    def broadcast_to(x, shape):
        return np.broadcast_to(x, shape)

    @staticmethod
    def matmul(a, b):
        return np.matmul(a, b)

    @staticmethod
    def all_finite(x):
        return bool(np.isfinite(x).all())

    @staticmethod
    def stream_ptr():
        return None


def _prep_numpy(x, name):
    """numpy input → float32/float64 ndarray (ints → float64, float16 → float32; complex refused).
    Non-native byte order (e.g. '>f8' from a file) is converted, as numpy.linalg does."""
    a = np.asarray(x)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype in (np.float32, np.float64):
        return a
    if np.iscomplexobj(a):
        raise TypeError(f"specgrad: {name} is complex ({a.dtype}); only float32/float64 are supported")
    if a.dtype == np.float16:
        return a.astype(np.float32)
    if a.dtype.kind in "biu" or a.dtype == np.longdouble:
        return a.astype(np.float64)
    raise TypeError(f"specgrad: {name} has unsupported dtype {a.dtype}; use float32 or float64")


class _TorchCudaAdapter:
    """torch tensors on a CUDA device, passed zero-copy with SG_MEM_DEVICE and the current stream."""

    memspace = L.SG_MEM_DEVICE

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device

    @staticmethod
    def T(x):
        return x.transpose(-1, -2)

    @staticmethod
    def shape(x):
        return tuple(x.shape)

    @staticmethod
    def estrides(x):
        return tuple(x.stride())

    @staticmethod
    def usable(x):
        return x.data_ptr() % x.element_size() == 0

    @staticmethod
    def ptr(x):
        return x.data_ptr()

    def dtype_code(self, x):
        return L.SG_F32 if x.dtype == self.torch.float32 else L.SG_F64

    @staticmethod
    def copy_c(x):
        return x.contiguous()

    def _dt(self, code):
        return self.torch.float32 if code == L.SG_F32 else self.torch.float64

    def empty(self, shape, code):
        return self.torch.empty(shape, dtype=self._dt(code), device=self.device)

    def zeros(self, shape, code):
        return self.torch.zeros(shape, dtype=self._dt(code), device=self.device)

    def empty_i64(self, shape):
        return self.torch.empty(shape, dtype=self.torch.int64, device=self.device)

    def eye(self, n, code):
        return self.torch.eye(n, dtype=self._dt(code), device=self.device)

    @staticmethod
    def reshape(x, shape):
        return x.reshape(shape)

    @staticmethod
    def broadcast_to(x, shape):
        return x.expand(shape)

    def matmul(self, a, b):
        return self.torch.matmul(a, b)

    def all_finite(self, x):
        return bool(self.torch.isfinite(x).all())

    def stream_ptr(self):
        return self.torch.cuda.current_stream(self.device).cuda_stream


class _TorchCpuAdapter(_NumpyAdapter):
    """torch CPU tensors, handled as their numpy views; unlike plain numpy, mixed dtypes are refused
    (as for CUDA tensors) instead of promoted."""


_NP = _NumpyAdapter()
_NP_TORCH = _TorchCpuAdapter()


def _desc(ad, x, keep):
    """sg_mat describing the logical batch x (..., r, c) as column-major matrices; copies x only when its
    memory does not have that layout. keep: list that keeps copies alive for the call."""
    shape = ad.shape(x)
    r, c = shape[-2], shape[-1]
    B = math.prod(shape[:-2])
    m = L.sg_mat()
    m.dtype = ad.dtype_code(x)
    m.batch, m.rows, m.cols = B, r, c
    if B == 0 or r == 0 or c == 0:  # nothing to address; the library rejects r or c == 0 itself
        m.data, m.ld, m.stride = None, max(1, r), 0
        return m
    st = ad.estrides(x) if ad.usable(x) else None
    ld = bstride = None
    if st is not None:
        sr, sc = st[-2], st[-1]
        ok = r == 1 or sr == 1
        ld = r if c == 1 else sc
        ok = ok and ld >= max(1, r)
        # batch dims collapsible into one stride
        bdims = [(n, s) for n, s in zip(shape[:-2], st[:-2]) if n != 1]
        if ok and bdims:
            for (n0, s0), (n1, s1) in zip(bdims[:-1], bdims[1:]):
                if s0 != s1 * n1:
                    ok = False
                    break
            bstride = bdims[-1][1]
            ok = ok and bstride >= ld * c
        else:
            bstride = 0
        if not ok:
            st = None
    if st is None:
        x = ad.T(ad.copy_c(ad.T(x)))  # per-matrix Fortran order, dense batch
        ld, bstride = max(1, r), r * c
        keep.append(x)
    m.data = ad.ptr(x)
    m.ld, m.stride = ld, (bstride if B > 1 else 0)
    return m


def _describable(ad, x):
    keep = []
    _desc(ad, x, keep)
    return not keep


def _out(ad, bshape, r, c, code, *, c_order=False):
    """Output batch (..., r, c). Default: logical r×c column-major = swapaxes view of a C (..., c, r)
    array. c_order=True: the array returned is C-contiguous (..., r, c) and the library is given its
    transpose (use when the op computes the transposed result)."""
    if c_order:
        return ad.empty(bshape + (r, c), code)
    return ad.T(ad.empty(bshape + (c, r), code))


def _vec_in(ad, v):
    """(..., n) vector batch → logical (..., n, 1)."""
    return ad.reshape(v, ad.shape(v) + (1,))


class _Fn:
    """Keeps an sg_fn and its ctypes callbacks alive.

    An exception raised by a Python callback cannot cross the C call: the ctypes wrapper catches it,
    keeps the first one in .error and returns NaN (the library then fails with SG_ERR_DOMAIN, and the
    remaining callbacks return NaN without calling the user's function); Context._run re-raises it."""

    def __init__(self, fn, p):
        self.s = L.sg_fn()
        self._cb = None
        self.error = None
        if callable(fn) or (isinstance(fn, tuple) and len(fn) == 2 and all(callable(g) for g in fn)):
            if not isinstance(fn, tuple):
                raise TypeError("specgrad: a custom function is given as a pair (f, df) of callables")
            self._cb = tuple(L.FN_CB(self._guard(g)) for g in fn)
            self.s.kind = L.FN["callback"]
            self.s.f, self.s.df = self._cb
            self.name = "callback"
            return
        if fn not in ("sqrt", "log", "exp", "pow"):
            raise ValueError(f"specgrad: fn must be 'sqrt', 'log', 'exp', 'pow' or (f, df), got {fn!r}")
        if fn == "pow":
            if p is None:
                raise ValueError("specgrad: fn='pow' needs the exponent p")
            self.s.p = float(p)
        self.s.kind = L.FN[fn]
        self.name = fn

    def _guard(self, g):
        def cb(x, user):
            if self.error is not None:
                return math.nan
            try:
                return float(g(x))
            except BaseException as e:  # noqa: BLE001 - re-raised by Context._run after the C call
                self.error = e
                return math.nan

        return cb


def _check_signals():
    """Python's pending signal handlers, now; raises what they raise. A no-op off the main thread."""
    C.pythonapi.PyErr_CheckSignals()


_MAIN_THREAD = threading.main_thread().ident
_SIGINT_MIN_WORK = 2e6  # ~ms of work: below it the two sigaction calls (7 µs) are not worth it


class _Interruptible:
    """Around one C call on the main thread: while Python's default SIGINT handler is installed, Ctrl-C only
    sets `hit`, which the progress callback turns into stopping the call (then KeyboardInterrupt). The
    default handler would raise KeyboardInterrupt at the callback's first line, before any try can catch it,
    and ctypes drops exceptions that escape a callback: the Ctrl-C would be lost. A custom handler is left
    in place (it runs after the call, as before), and so is the default one for short calls (`arm`)."""

    def __init__(self):
        self.hit, self.prev, self.work = False, None, 0

    def _handler(self, signum, frame):
        self.hit = True

    def arm(self, args):
        """Rough size of the coming call: batch·rows·cols·min(rows, cols) of its largest matrix argument."""
        w = 0
        for a in args:
            m = getattr(a, "_obj", None)  # C.byref(sg_mat)
            if isinstance(m, L.sg_mat):
                w = max(w, m.batch * m.rows * m.cols * min(m.rows, m.cols))
        self.work = w
        return self

    def __enter__(self):
        self.hit, self.prev = False, None
        if (
            self.work >= _SIGINT_MIN_WORK
            and threading.get_ident() == _MAIN_THREAD
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self.prev = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGINT, self.prev)
            self.prev = None
        return False


def _raise_callback_error(op, fn):
    """Re-raises the exception a Python callback of fn raised during the library call."""
    err, fn.error = fn.error, None
    err.add_note(f"(raised in a Python callback of specgrad.{op}; the library was given NaN)")
    raise err


def _mode(mode):
    try:
        return L.DEGEN[mode]
    except KeyError:
        raise ValueError(f"specgrad: mode must be one of {sorted(L.DEGEN)}, got {mode!r}") from None


class _Tols:
    """atol / rtol of one call, checked like the library does (also when no call is made: empty batches,
    zero-sized matrices). atol=None means 0 (numpy's tol=None), rtol=None the default. Either may be an
    array (numpy, torch, a list) of per-matrix values that broadcasts to the batch shape (numpy 2's array
    tol, torch's tensor atol / rtol); a one-element array is one number."""

    def __init__(self, op, atol, rtol):
        self.op = op
        self.a, self.av = self._one("atol", atol, 0.0)
        self.r, self.rv = self._one("rtol", rtol, -1.0)
        a, r = self.a, self.r
        if math.isnan(a) or math.isnan(r) or a < 0 or math.isinf(a) or (math.isinf(r) and r > 0):
            raise _arg_error(op, f"tolerance: atol must be finite and >= 0, rtol finite or None (got {atol}, {rtol})")
        for name, v, bad in (("atol", self.av, lambda x: ~np.isfinite(x) | (x < 0)),
                             ("rtol", self.rv, lambda x: np.isnan(x) | (x == np.inf))):
            if v is not None and bad(v).any():
                i = tuple(int(j) for j in np.argwhere(bad(v))[0])
                raise _arg_error(op, f"tolerance: {name}{list(i)} = {v[i]}; atol must be finite and >= 0, rtol "
                                     f"finite or < 0 (the default)")

    def _one(self, name, v, default):
        """(scalar, None) or (unused scalar, float64 array)."""
        if v is None:
            return default, None
        if hasattr(v, "detach"):  # torch: the library reads host float64 arrays (bfloat16 has no numpy type)
            if v.is_complex():
                raise _arg_error(self.op, f"tolerance: {name} is complex")
            import torch

            v = v.detach().to(device="cpu", dtype=torch.float64).numpy()
        elif np.iscomplexobj(v):
            raise _arg_error(self.op, f"tolerance: {name} is complex")
        try:
            x = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise _arg_error(self.op, f"tolerance: {name} must be a number or an array of numbers, got "
                                      f"{type(v).__name__}") from None
        return (float(x.reshape(())), None) if x.size == 1 else (default, x)

    @property
    def per_matrix(self):
        return self.av is not None or self.rv is not None

    def bind(self, lib, name, bs, keep):
        """(library function, its atol and rtol arguments) for a batch of shape bs: sg_<name> with the
        scalars, or sg_<name>_tols with arrays of one pair per matrix (a scalar partner is repeated, the
        default passed as NULL). Arrays that do not broadcast to bs raise."""
        if not self.per_matrix:
            return getattr(lib, f"sg_{name}"), (self.a, self.r)
        args = []
        for nm, v, x, dflt in (("atol", self.av, self.a, 0.0), ("rtol", self.rv, self.r, -1.0)):
            if v is None and x == dflt:
                args.append(None)
                continue
            try:
                arr = np.ascontiguousarray(np.broadcast_to(np.float64(x) if v is None else v, bs), dtype=np.float64)
            except ValueError:
                raise _arg_error(self.op, f"tolerance: {nm} of shape {v.shape} does not broadcast to the batch "
                                          f"shape {tuple(bs)} (one value per matrix)") from None
            keep.append(arr)
            args.append(arr.ctypes.data if arr.size else None)
        return getattr(lib, f"sg_{name}_tols"), tuple(args)


def _numpy_names(op, atol, rtol, tol=None, rcond=None):
    """numpy's tolerance keywords as (atol, rtol): matrix_rank's tol is absolute (σ > tol, so rtol = 0: a tol
    of 0 counts every σ > 0), pinv's and lstsq's rcond relative (rcond·σmax); negative or non-finite values
    (numpy: no cutoff, or machine precision in lstsq) are refused. Either with atol or rtol is ambiguous
    (numpy refuses rcond with rtol too); a zero atol of any numeric type counts as not given."""
    if tol is None and rcond is None:
        return atol, rtol
    name, v = ("tol", tol) if tol is not None else ("rcond", rcond)
    default_atol = atol is None or (getattr(atol, "ndim", np.ndim(atol)) == 0 and float(atol) == 0)
    if rtol is not None or not default_atol:
        raise _arg_error(op, f"give numpy's {name} or atol / rtol, not both")
    try:
        x = np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=np.float64)
    except (TypeError, ValueError):
        x = None  # not numbers: _Tols says so
    if x is not None and not (np.isfinite(x) & (x >= 0)).all():
        raise _arg_error(op, f"{name} must be finite and >= 0 (numpy gives negative values meanings of its own: "
                             f"no cutoff, or machine precision in lstsq; pass atol / rtol instead)")
    return (tol, 0.0) if tol is not None else (0.0, rcond)


def _arg_error(op, msg):
    """The error the library gives for a bad argument, raised from Python (shape checks that must also
    hold for empty batches and zero-sized matrices, where the library is not called)."""
    return L.SpecgradArgumentError(op, L.SG_ERR_ARG, msg)


def _expect(op, name, got, want, hint=""):
    """Check the core (trailing) shape of an argument; want may contain None for "any"."""
    if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
        fmt = lambda t: "×".join("*" if v is None else str(v) for v in t)  # noqa: E731
        raise _arg_error(op, f"{name}: shape {fmt(got)}, expected {fmt(want)}{hint}")


def _vec_hint(xn, an, vec):
    """Why a right-hand side was read as vectors (one dimension fewer than the matrix: numpy's and torch's
    rule), for errors that a matrix meant for the whole batch runs into."""
    if not vec:
        return ""
    return (f" ({xn} has one dimension fewer than {an}, so it is read as a batch of vectors; a matrix "
            f"shared by the batch needs a leading batch dimension of 1)")


def _square(op, ad, x, name):
    r, c = ad.shape(x)[-2:]
    if r != c:
        raise _arg_error(op, f"{name}: shape {r}×{c}, expected a square matrix")
    return r


def _work(bshape, *dims):
    """True when the library has something to do: a non-empty batch of non-empty matrices (it rejects
    zero sizes; those results are filled in by the binding)."""
    return math.prod(bshape) > 0 and all(d > 0 for d in dims)


def _scalarize(x, bshape):
    if bshape == ():
        return x[()] if isinstance(x, np.ndarray) else x.reshape(())
    return x


# ---- context --------------------------------------------------------------------------------------


def _nbytes(name, v):
    """A byte count for a size_t setter (ctypes would wrap a negative one to a huge value)."""
    v = int(v)
    if v < 0:
        raise ValueError(f"specgrad: {name} must be >= 0 bytes, got {v}")
    return v


class Context:
    """A libspecgrad context (sg_ctx): backend ('cpu', 'cuda' or 'auto'), settings, last error.

    Calls on one Context are serialized by a lock (the C context holds the last error and settings).
    The same context accepts numpy arrays (host memory) and, on the CUDA backend, torch CUDA tensors
    (device memory, the tensor's current stream); it switches sg_set_memspace per call.

    A CUDA context belongs to one GPU: the one current when it is created (device=k creates it under
    torch.cuda.device(k)). `device` is that index when known (given, or read from torch when torch was
    imported), else None; tensors on another GPU are refused."""

    def __init__(self, backend="auto", *, device=None, threads=None, check_finite=True, jacobi_tol=None,
                 jacobi_max_sweeps=None, chunk_bytes=None, cache_bytes=None):
        if backend not in L.BACKENDS:
            raise ValueError(f"specgrad: backend must be 'cpu', 'cuda' or 'auto', got {backend!r}")
        if device is not None and backend == "cpu":
            raise ValueError("specgrad: device= only applies to the 'cuda' (or 'auto') backend")
        self._lib = L.lib()
        self._h = C.c_void_p()
        self._lock = threading.RLock()
        _CONTEXTS.add(self)  # for the lock's reset in a forked child
        self.device = None
        if device is not None:
            import torch

            d = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
            if d.type != "cuda" or d.index is None:
                raise ValueError(f"specgrad: device= needs a CUDA device index (e.g. 1 or 'cuda:1'), got {device!r}")
            device = d.index
            with torch.cuda.device(device):  # sg_create binds the context to the current device
                s = self._lib.sg_create(C.byref(self._h), L.BACKENDS[backend])
        else:
            device = _current_cuda_device() if backend != "cpu" else None
            s = self._lib.sg_create(C.byref(self._h), L.BACKENDS[backend])
        if s != L.SG_OK:
            why = ""
            if backend == "cuda":
                _, why = L.cuda_devices()
            msg = self._lib.sg_status_string(s).decode()
            raise L.error_class(s)("Context", s, f"sg_create({backend}) failed: {msg}" + (f" ({why})" if why else ""))
        self._mem = L.SG_MEM_HOST
        self._check_finite = True
        self._prog_cb, self._prog_error = None, None
        self._sigint = _Interruptible()
        self.set_progress(None)  # Ctrl-C stops long calls
        self.backend = L.BACKEND_NAMES[self._lib.sg_get_backend(self._h)]
        if self.backend == "cuda":
            self.device = device
        if threads is not None:
            self.set_threads(threads)
        if not check_finite:
            self.set_check_finite(False)
        if jacobi_tol is not None or jacobi_max_sweeps is not None:
            self.set_jacobi(jacobi_tol or 0.0, jacobi_max_sweeps or 0)
        if chunk_bytes is not None:
            self.set_chunk_bytes(chunk_bytes)
        if cache_bytes is not None:
            self.set_cache_bytes(cache_bytes)

    # -- lifecycle
    def close(self):
        h, self._h = getattr(self, "_h", None), None
        if h and h.value:
            self._lib.sg_destroy(h)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        dev = f", device={self.device}" if self.device is not None else ""
        return f"specgrad.Context(backend={self.backend!r}{dev})"

    # -- settings
    def _set(self, op, fn, *args):
        with self._lock:
            self._check(op, fn(self._h, *args))

    def set_threads(self, n):
        """CPU threads over the batch (<= 0: all)."""
        self._set("set_threads", self._lib.sg_set_threads, int(n))

    def set_check_finite(self, on):
        """NaN/Inf input check (on by default). Off, inputs are not scanned (sg_set_check_finite): a matrix
        holding NaN/Inf is reported by index (decompositions, on both backends: "not attempted"; the loss)
        or carries NaN into its own outputs (gradients), never into the other matrices of the batch."""
        self._set("set_check_finite", self._lib.sg_set_check_finite, 1 if on else 0)
        self._check_finite = bool(on)

    def set_jacobi(self, tol=0.0, max_sweeps=0):
        """CUDA Jacobi solver controls (tol <= 0: eps; max_sweeps <= 0: 100)."""
        self._set("set_jacobi", self._lib.sg_set_jacobi, float(tol), int(max_sweeps))

    def set_chunk_bytes(self, nbytes):
        """Device bytes per chunk when streaming host batches on the CUDA backend (0: automatic)."""
        self._set("set_chunk_bytes", self._lib.sg_set_chunk_bytes, _nbytes("chunk_bytes", nbytes))

    def set_cache_bytes(self, nbytes):
        """Idle device scratch the CUDA backend keeps mapped between calls (default 1 GiB; 0: none)."""
        self._set("set_cache_bytes", self._lib.sg_set_cache_bytes, _nbytes("cache_bytes", nbytes))

    def set_progress(self, fn, every=0.5):
        """fn(fraction) during each call of this context (sg_set_progress): strictly increasing fractions
        below 1 at most every `every` seconds as matrices (CPU) or chunks (CUDA) finish, then 1.0 when the
        call succeeds; fn=None: no reports. fn runs on the calling thread and must not use this Context.
        fn returning True stops the call (SpecgradError SG_ERR_CANCELLED; no result). An exception fn
        raises stops it too and is raised in its place.
        Ctrl-C stops a long call with or without fn: on the main thread, each report (with fn=None an
        internal one every 0.25 s) runs Python's pending signal handlers, so KeyboardInterrupt is raised
        at the next step of the batch instead of after the whole call."""
        if fn is not None and not callable(fn):
            raise TypeError(f"specgrad: set_progress needs a callable or None, got {type(fn).__name__}")

        def cb_py(fraction, _user):
            if self._prog_error is not None:
                return 1
            try:
                _check_signals()  # runs _Interruptible's SIGINT handler if Ctrl-C is pending
                if self._sigint.hit:
                    raise KeyboardInterrupt
                return 1 if fn is not None and fn(fraction) is True else 0
            except BaseException as e:  # raised after the call (ctypes would print and drop it)
                self._prog_error = e
                return 1

        cb = L.PROGRESS_CB(cb_py)
        self._set("set_progress", self._lib.sg_set_progress, cb, float(every) if fn is not None else 0.25, None)
        self._prog_cb = cb  # the C side keeps the pointer: keep the thunk alive

    @property
    def cache_held(self):
        """Device bytes this context's scratch pool holds now (0 on the CPU backend)."""
        v = C.c_size_t(0)
        with self._lock:
            self._check("cache_held", self._lib.sg_cache_held(self._h, C.byref(v)))
        return v.value

    @property
    def last_error(self):
        return self._lib.sg_last_error(self._h).decode(errors="replace")

    # -- plumbing
    def _check(self, op, status, bshape=None, result=None):
        if status == L.SG_OK:
            return
        msg = self._lib.sg_last_error(self._h).decode(errors="replace")
        if not msg:
            msg = self._lib.sg_status_string(status).decode()
        idx = int(self._lib.sg_failed_index(self._h))
        bidx = None
        if idx >= 0 and bshape is not None:
            bidx = tuple(int(i) for i in np.unravel_index(idx, bshape)) if bshape else ()
        raise L.error_class(status)(op, status, msg, idx, bidx, result)

    def _run(self, op, ad, cfn, args, bshape, result=None, fn=None):
        """One library call. fn: the _Fn of the call, whose Python callbacks' exception (if any) is
        re-raised here, chained to the library's error (the callback returned NaN to the library)."""
        if self._h is None or not self._h.value:
            raise ValueError("specgrad: this Context has been closed")
        if fn is None or fn._cb is None:
            return self._call(op, ad, cfn, args, bshape, result)
        fn.error = None
        try:
            self._call(op, ad, cfn, args, bshape, result)
        except L.SpecgradError:
            if fn.error is None:
                raise
            _raise_callback_error(op, fn)  # inside except: chained to the library's error
        if fn.error is not None:  # the library did not use the NaN (still a failed call)
            _raise_callback_error(op, fn)

    def _call(self, op, ad, cfn, args, bshape, result):
        with self._lock:
            if ad.memspace != self._mem:
                self._check("set_memspace", self._lib.sg_set_memspace(self._h, ad.memspace))
                self._mem = ad.memspace
            if ad.memspace == L.SG_MEM_DEVICE:
                self._check("set_stream", self._lib.sg_set_stream(self._h, C.c_void_p(ad.stream_ptr())))
                import torch

                with torch.cuda.device(ad.device), self._sigint.arm(args):
                    st = cfn(self._h, *args)
            else:
                with self._sigint.arm(args):
                    st = cfn(self._h, *args)
            err, self._prog_error = self._prog_error, None
            if err is not None:
                raise err
            if self._sigint.hit:  # after the last report: raised now, as Python would have
                raise KeyboardInterrupt
            self._check(op, st, bshape, result)

    def _adapter(self, xs, op=None):
        """Pick the adapter for the inputs; returns (adapter, converted inputs, torch-cpu flag). op: the
        calling op, for the requires-grad check (None: integer output, nothing to differentiate)."""
        tor = [x for x in xs if x is not None and type(x).__module__.startswith("torch")]
        if not tor:
            return _NP, [None if x is None else _prep_numpy(x, f"argument {i}") for i, x in enumerate(xs)], False
        import torch

        if op is not None and torch.is_grad_enabled() and any(x.requires_grad for x in tor):
            # the tensors are detached below: say so rather than return a result the gradient cannot reach
            # (torch refuses .numpy() on such a tensor for the same reason)
            hint = (f"use specgrad.autograd.{op}" if op in _AUTOGRAD_OPS
                    else f"specgrad has no autograd rule for {op}")
            raise RuntimeError(f"specgrad.{op}: an input requires grad, and this function does not record "
                               f"gradients ({hint}); pass .detach() or call it under torch.no_grad() to drop "
                               f"the gradient on purpose")

        if len(tor) != len([x for x in xs if x is not None]):
            raise TypeError("specgrad: do not mix torch tensors and numpy arrays in one call")
        devs = {x.device for x in tor}
        if len(devs) != 1:
            raise ValueError(f"specgrad: tensors on different devices: {sorted(map(str, devs))}")
        for x in tor:
            if x.dtype not in (torch.float32, torch.float64):
                raise TypeError(f"specgrad: tensor dtype {x.dtype} unsupported; use float32 or float64")
        dev = tor[0].device
        if dev.type == "cuda":
            if self.backend != "cuda":
                raise ValueError(f"specgrad: CUDA tensors need a context with the cuda backend (this one is {self.backend})")
            if self.device is not None and dev.index != self.device:
                raise ValueError(f"specgrad: tensors on {dev}, but this Context belongs to cuda:{self.device}; "
                                 f"use ctx=None (one default context per GPU) or Context('cuda', device={dev.index})")
            return _TorchCudaAdapter(dev), [None if x is None else x.detach() for x in xs], False
        if dev.type != "cpu":
            raise ValueError(f"specgrad: tensors on {dev} are not supported")
        return _NP_TORCH, [None if x is None else x.detach().numpy() for x in xs], True

    @staticmethod
    def _wrap(res, torch_cpu):
        if not torch_cpu:
            return res
        import torch

        def conv(v):
            if isinstance(v, np.ndarray):
                return torch.from_numpy(v)
            if isinstance(v, np.generic):
                return torch.tensor(v)
            if isinstance(v, (list, tuple)):
                return type(v)(conv(u) for u in v)
            return v

        return conv(res)

    @staticmethod
    def _common(ad, xs, names):
        codes = {ad.dtype_code(x) for x in xs if x is not None}
        if len(codes) > 1:
            if ad is _NP:  # numpy: promote like numpy does (torch tensors, CPU or CUDA: refused)
                xs = [None if x is None else x.astype(np.float64, copy=False) for x in xs]
                return xs, L.SG_F64
            raise TypeError(f"specgrad: {', '.join(names)} must share a dtype (float32 or float64)")
        return xs, codes.pop()

    @staticmethod
    def _bshape(ad, x, core, name):
        s = ad.shape(x)
        if len(s) < core:
            raise ValueError(f"specgrad: {name} must have at least {core} dimensions, got shape {s}")
        return s[: len(s) - core]

    @staticmethod
    def _same_batch(bshape, other, name):
        if other != bshape:
            raise ValueError(f"specgrad: {name} has batch shape {other}, expected {bshape} (no broadcasting)")

    # ---- decompositions ----------------------------------------------------------------------------
    def eigh(self, A, uplo="L", *, eigvals_only=False):
        """Symmetric eigendecomposition of A (..., n, n) → (w (..., n) ascending, V (..., n, n)), like
        numpy.linalg.eigh: only the `uplo` triangle of A is read. V's columns are eigenvectors; for numpy
        input V is C-contiguous like numpy's (one n² copy of the library's column-major result), for
        torch tensors it is the column-major view torch.linalg.eigh also returns. uplo='U' is zero-copy
        for C-contiguous A, 'L' copies it (one n² pass)."""
        if uplo not in ("L", "U"):
            raise ValueError(f"specgrad: uplo must be 'L' or 'U', got {uplo!r}")
        ad, (A,), tc = self._adapter([A], "eigh")
        bs = self._bshape(ad, A, 2, "A")
        n = _square("eigh", ad, A, "A")
        code = ad.dtype_code(A)
        keep = []
        mA = _desc(ad, A if uplo == "L" else ad.T(A), keep)
        w = ad.empty(bs + (n,), code)
        mW = _desc(ad, _vec_in(ad, w), keep)
        V = None if eigvals_only else _out(ad, bs, n, n, code)
        mV = _desc(ad, V, keep) if V is not None else None
        if _work(bs, n):
            self._run("eigh", ad, self._lib.sg_eigh, (C.byref(mA), C.byref(mW), C.byref(mV) if mV is not None else None), bs)
        if V is not None and ad is _NP:
            V = np.ascontiguousarray(V)
        return self._wrap(w if eigvals_only else (w, V), tc)

    def eigvalsh(self, A, uplo="L"):
        return self.eigh(A, uplo, eigvals_only=True)

    def svd(self, A, full_matrices=True, compute_uv=True):
        """SVD like numpy.linalg.svd: A (..., m, n) → (U, S, Vh), S descending. For C-contiguous A the
        library factors Aᵀ = V S Uᵀ in place (no copy): Vh comes back C-contiguous, U as a view.
        Zero-sized A (m or n = 0) gives numpy's results (empty S; U, Vh identities with full_matrices)."""
        ad, (A,), tc = self._adapter([A], "svd")
        bs = self._bshape(ad, A, 2, "A")
        m, n = ad.shape(A)[-2:]
        k = min(m, n)
        code = ad.dtype_code(A)
        keep = []
        direct = _describable(ad, A)
        kU, kV = (m, n) if full_matrices else (k, k)
        S = ad.empty(bs + (k,), code)
        mS = _desc(ad, _vec_in(ad, S), keep)
        U = Vh = None
        if direct:
            mA = _desc(ad, A, keep)
            if compute_uv:
                U = _out(ad, bs, m, kU, code)               # library U (m×kU), view
                Vh = ad.empty(bs + (kV, n), code)            # library V (n×kV) = Vhᵀ, C-contiguous Vh
                mU, mV = _desc(ad, U, keep), _desc(ad, ad.T(Vh), keep)
        else:
            mA = _desc(ad, ad.T(A), keep)                    # Aᵀ = V S Uᵀ
            if compute_uv:
                Vh = ad.empty(bs + (kV, n), code)
                U = _out(ad, bs, m, kU, code)
                mU, mV = _desc(ad, ad.T(Vh), keep), _desc(ad, U, keep)  # library U = V, library V = U
        if _work(bs, m, n):
            args = (C.byref(mA), 1 if full_matrices else 0, C.byref(mS),
                    C.byref(mU) if compute_uv else None, C.byref(mV) if compute_uv else None)
            self._run("svd", ad, self._lib.sg_svd, args, bs)
        elif k == 0 and compute_uv and full_matrices:  # numpy: U = I_m, Vh = I_n
            U[...] = ad.eye(m, code)
            Vh[...] = ad.eye(n, code)
        return self._wrap((U, S, Vh) if compute_uv else S, tc)

    def svdvals(self, A):
        return self.svd(A, full_matrices=False, compute_uv=False)

    # ---- rank, subspaces, least squares --------------------------------------------------------------
    def _pick_T(self, ad, A):
        """Transpose-invariant ops: give the library whichever orientation needs no copy."""
        return ad.T(A) if not _describable(ad, A) and _describable(ad, ad.T(A)) else A

    def matrix_rank(self, A, atol=0.0, rtol=None, *, tol=None):
        """Rank with tol = max(atol, rtol·σmax); rtol=None: max(m,n)·eps when atol == 0 (numpy's default),
        else 0; atol=None means 0. atol / rtol may be arrays of one value per matrix (broadcast to the batch
        shape; also in null_space, project, lstsq, pinv). tol= is numpy's absolute cutoff (σ > tol: rtol = 0;
        also an array). Returns int64 (batch shape; a numpy scalar for one matrix); 0 for
        zero-sized matrices."""
        tl = _Tols("matrix_rank", *_numpy_names("matrix_rank", atol, rtol, tol=tol))
        ad, (A,), tc = self._adapter([A])
        bs = self._bshape(ad, A, 2, "A")
        m, n = ad.shape(A)[-2:]
        keep = []
        mA = _desc(ad, self._pick_T(ad, A), keep)
        r = ad.empty_i64(bs)
        cfn, ta = tl.bind(self._lib, "rank", bs, keep)
        if _work(bs, m, n):
            self._run("matrix_rank", ad, cfn, (C.byref(mA), *ta, C.c_void_p(ad.ptr(r))), bs)
        else:
            r[...] = 0
        return self._wrap(_scalarize(r, bs), tc)

    def null_space(self, A, atol=0.0, rtol=None):
        """Orthonormal nullspace bases, padded: returns (N, nullity) with N (..., n, n) whose first
        nullity[b] columns span null(A[b]) and the rest are zero, nullity int64 of the batch shape.
        `trim_null_space(N, nullity)` gives scipy.linalg.null_space-shaped (n, nullity) arrays.
        Copies C-contiguous A (the nullspace of Aᵀ is a different space). A with 0 rows: N = I."""
        tl = _Tols("null_space", atol, rtol)
        ad, (A,), tc = self._adapter([A], "null_space")
        bs = self._bshape(ad, A, 2, "A")
        m, n = ad.shape(A)[-2:]
        code = ad.dtype_code(A)
        keep = []
        mA = _desc(ad, A, keep)
        N = _out(ad, bs, n, n, code)
        mN = _desc(ad, N, keep)
        nul = ad.empty_i64(bs)
        cfn, ta = tl.bind(self._lib, "nullspace", bs, keep)
        if _work(bs, m, n):
            self._run("null_space", ad, cfn, (C.byref(mA), *ta, C.byref(mN), C.c_void_p(ad.ptr(nul))), bs)
        else:  # m == 0: everything is null (scipy: the identity); n == 0: nothing to span
            N[...] = ad.eye(n, code)
            nul[...] = n
        return self._wrap((N, _scalarize(nul, bs)), tc)

    @staticmethod
    def _broadcast(op, ad, A, an, X, xn):
        """numpy broadcasting of the batch dimensions of A (..., r, c) and X (..., n, k), or (..., n) when X
        has one dimension fewer than A (vectors) → (A, X, batch shape). A broadcast operand is copied
        (_desc cannot describe a zero batch stride), and each batch item is computed on its own (one shared
        A on the CPU backend takes _folded instead)."""
        sa, sx = ad.shape(A), ad.shape(X)
        if len(sa) < 2 or len(sx) < 1:
            return A, X, sa[:-2]  # the shape checks that follow say what is wrong
        core = 1 if len(sx) == len(sa) - 1 else 2
        ba, bx = sa[:-2], sx[: len(sx) - core]
        if ba == bx:
            return A, X, ba
        try:
            bs = tuple(np.broadcast_shapes(ba, bx))
        except ValueError:
            raise ValueError(f"specgrad: {op}: batch shapes {ba} of {an} and {bx} of {xn} do not broadcast"
                             f"{_vec_hint(xn, an, core == 1)}") from None
        return ad.broadcast_to(A, bs + sa[-2:]), ad.broadcast_to(X, bs + sx[len(sx) - core:]), bs

    def _proj_rhs(self, op, ad, X, nd, bs, n, code, keep):
        """X (..., n, k) or (..., n) (one dimension fewer than the nd of the first operand) for project /
        project_basis: (descriptor of X, k, Y shaped like X, descriptor of Y)."""
        vec = len(ad.shape(X)) == nd - 1
        Xl = _vec_in(ad, X) if vec else X
        self._same_batch(bs, self._bshape(ad, Xl, 2, "X"), "X")
        _expect(op, "X", ad.shape(X)[-1:] if vec else ad.shape(X)[-2:], (n,) if vec else (n, None),
                _vec_hint("X", "A" if op == "project" else "Q", vec))
        k = ad.shape(Xl)[-1]
        Y = ad.empty(bs + (n,), code) if vec else _out(ad, bs, n, k, code)
        return _desc(ad, Xl, keep), k, Y, _desc(ad, _vec_in(ad, Y) if vec else Y, keep)

    @staticmethod
    def _shared(ad, A, X):
        """(batch shape, vectors?) when A is one matrix shared by a batch of X, else None. project,
        project_basis and lstsq act on X column by column. On the CPU backend that batch is therefore
        folded into the columns of a single call (_folded), so A is decomposed once instead of once per
        batch item. CUDA kernels give each matrix of a batch its own thread block, so there project goes
        through A's nullspace basis instead (_via_basis), and lstsq through A⁺ (_via_pinv)."""
        sa, sx = ad.shape(A), ad.shape(X)
        if len(sa) < 2 or math.prod(sa[:-2]) != 1:
            return None
        core = 1 if len(sx) == len(sa) - 1 else 2
        if len(sx) < core:
            return None
        try:
            bs = tuple(np.broadcast_shapes(sa[:-2], sx[: len(sx) - core]))
        except ValueError:
            return None
        if math.prod(bs) < 2 or 0 in sa[-2:] + sx[len(sx) - core:]:
            return None
        return bs, core == 1

    def _folded(self, op, ad, A, X, sh, rin, rout, code, cfn, args):
        """One call on A (batch 1) with the batch of X folded into columns: X (..., rin, k) becomes the
        rin × (B·k) matrix whose column b·k+j is X[b][:, j] (vectors: rin × B, no copy when contiguous);
        the rout × (B·k) result is unfolded the same way. Returns (Y, rank array of length 1), or None when
        X has the wrong rows or the call fails: the caller then runs per batch item, which reports the
        failing item (and the shape error) as for any batch."""
        bs, vec = sh
        B = math.prod(bs)
        sx = ad.shape(X)
        if (sx[-1] if vec else sx[-2]) != rin:
            return None
        k = 1 if vec else sx[-1]
        if vec:
            Xf = ad.T(ad.reshape(X, (B, rin)))
            Ybuf = ad.empty((B, rout), code)
            Y = ad.reshape(Ybuf, bs + (rout,))
        else:  # (B, k, rin) C-contiguous = column-major rin × (B·k)
            Xt = ad.copy_c(ad.T(ad.reshape(X, (B, rin, k))))
            Xf = ad.T(ad.reshape(Xt, (B * k, rin)))
            Ybuf = ad.empty((B * k, rout), code)
            Y = ad.T(ad.reshape(Ybuf, bs + (k, rout)))
        keep = []
        mA = _desc(ad, ad.reshape(A, ad.shape(A)[-2:]), keep)
        mX, mY = _desc(ad, Xf, keep), _desc(ad, ad.T(Ybuf), keep)
        r = ad.empty_i64((1,))
        try:
            self._run(op, ad, cfn, args(mA, mX, mY, r), ())
        except L.SpecgradError:
            return None
        return Y, r

    def _via_basis(self, ad, A, X, sh, which, atol, rtol):
        """project on CUDA with one A shared by a batch of X: null_space(A) once, then project_basis over
        the batch. Its kernels run the batch in parallel, and only the n×q basis is copied per item, where
        the per-item path decomposes A for every item. Returns None, and the caller takes the per-item
        path, when X has the wrong rows, the nullspace is {0} (nothing to project, but X must still be
        scanned for NaN), or a call fails: that path then reports as for any batch, op and index included."""
        vec = sh[1]
        m, n = ad.shape(A)[-2:]
        if ad.shape(X)[-1 if vec else -2] != n:
            return None
        try:
            N, nul = self.null_space(ad.reshape(A, (m, n)), atol, rtol)
            q = int(nul)
            if q == 0:
                return None
            Q = ad.reshape(N[:, :q], ad.shape(A)[:-2] + (n, q))
            return self.project_basis(Q, X, complement=which == "row")
        except L.SpecgradError:
            return None

    def _via_pinv(self, ad, A, B, sh, atol, rtol, code):
        """lstsq on CUDA with one A shared by a batch of B: P = A⁺ = lstsq(A, I) once (one SVD, its rank
        cutoff), then x = P b for every item by the array library's matmul (numpy on the host, torch on the
        tensor's device), where the per-item path decomposes A for every item. Returns (x, rank over the
        batch shape), or None, and the caller takes the per-item path, when B has the wrong rows, holds
        NaN/Inf with the check on (that path names the item), or a call fails (reported as for any batch)."""
        bs, vec = sh
        m, n = ad.shape(A)[-2:]
        if ad.shape(B)[-1 if vec else -2] != m or (self._check_finite and not ad.all_finite(B)):
            return None
        keep = []
        P, r = _out(ad, (), n, m, code), ad.empty_i64((1,))
        mA, mI, mP = _desc(ad, ad.reshape(A, (m, n)), keep), _desc(ad, ad.eye(m, code), keep), _desc(ad, P, keep)
        try:
            self._run("lstsq", ad, self._lib.sg_lstsq,
                      (C.byref(mA), C.byref(mI), atol, rtol, C.byref(mP), C.c_void_p(ad.ptr(r))), ())
        except L.SpecgradError:
            return None
        X = ad.matmul(B, ad.T(P)) if vec else ad.matmul(P, B)  # (..., m) @ (m, n); (n, m) @ (..., m, k)
        rank = ad.empty_i64(bs)
        rank[...] = r[0]
        return X, rank

    def project(self, A, X, which="null", atol=0.0, rtol=None):
        """Y = P X with P the orthogonal projector onto the nullspace ('null') or row space ('row') of A
        (..., m, n). X: (..., n, k) or (..., n). Copies C-contiguous A and matrix X. Batch dimensions
        broadcast like numpy's. One A shared by a batch of X is decomposed once: on the CPU backend the
        batch becomes columns of one call; on CUDA it is null_space(A) once and project_basis over the
        batch (for a fixed A across calls, keep that basis and call project_basis yourself). With per-matrix
        tolerance arrays each item is decomposed on its own (each has its own rank)."""
        if which not in L.PROJ:
            raise ValueError(f"specgrad: which must be 'null' or 'row', got {which!r}")
        tl = _Tols("project", atol, rtol)
        atol, rtol = tl.a, tl.r
        ad, (A, X), tc = self._adapter([A, X], "project")
        (A, X), code = self._common(ad, [A, X], ["A", "X"])
        sh = None if tl.per_matrix else self._shared(ad, A, X)  # one tolerance per item: one rank per item
        if sh is not None and self.backend != "cpu":
            Y = self._via_basis(ad, A, X, sh, which, atol, rtol)
            if Y is not None:
                return self._wrap(Y, tc)
        elif sh is not None:
            n = ad.shape(A)[-1]
            f = self._folded("project", ad, A, X, sh, n, n, code, self._lib.sg_project,
                             lambda mA, mX, mY, r: (C.byref(mA), C.byref(mX), L.PROJ[which], atol, rtol, C.byref(mY)))
            if f is not None:
                return self._wrap(f[0], tc)
        A, X, _ = self._broadcast("project", ad, A, "A", X, "X")
        bs = self._bshape(ad, A, 2, "A")
        m, n = ad.shape(A)[-2:]
        keep = []
        mX, k, Y, mY = self._proj_rhs("project", ad, X, len(ad.shape(A)), bs, n, code, keep)
        mA = _desc(ad, A, keep)
        cfn, ta = tl.bind(self._lib, "project", bs, keep)
        if _work(bs, m, n, k):
            self._run("project", ad, cfn, (C.byref(mA), C.byref(mX), L.PROJ[which], *ta, C.byref(mY)), bs)
        elif m == 0:  # A = 0 (no rows): the nullspace is everything
            Y[...] = X if which == "null" else 0
        return self._wrap(Y, tc)

    def project_basis(self, Q, X, complement=False):
        """Y = Q Qᵀ X, or X − Q Qᵀ X with complement=True, for a given basis Q (..., n, q), q <= n, with
        orthonormal or zero columns (not checked; e.g. null_space's output: then it is project(A, X, 'null')
        without the SVD). X: (..., n, k) or (..., n). For a basis computed once and applied every step.
        Batch dimensions broadcast like numpy's (a shared Q (n, q) over X (B, n, k)); X with exactly one
        dimension fewer than Q is a batch of vectors (with a shared basis: Q (1, n, q), X (B, n)). On the
        CPU backend one Q shared by a batch of X is one product over all its columns; otherwise a broadcast
        operand is copied per batch item."""
        ad, (Q, X), tc = self._adapter([Q, X], "project_basis")
        (Q, X), code = self._common(ad, [Q, X], ["Q", "X"])
        if len(ad.shape(Q)) >= 2 and ad.shape(Q)[-1] > ad.shape(Q)[-2]:
            n, q = ad.shape(Q)[-2:]
            raise _arg_error("project_basis", f"Q: shape {n}×{q}; a basis of R^{n} has at most {n} columns")
        sh = self._shared(ad, Q, X) if self.backend == "cpu" else None
        if sh is not None:
            n = ad.shape(Q)[-2]
            f = self._folded("project_basis", ad, Q, X, sh, n, n, code, self._lib.sg_project_basis,
                             lambda mQ, mX, mY, r: (C.byref(mQ), C.byref(mX), 1 if complement else 0, C.byref(mY)))
            if f is not None:
                return self._wrap(f[0], tc)
        Q, X, _ = self._broadcast("project_basis", ad, Q, "Q", X, "X")
        bs = self._bshape(ad, Q, 2, "Q")
        n, q = ad.shape(Q)[-2:]
        keep = []
        mX, k, Y, mY = self._proj_rhs("project_basis", ad, X, len(ad.shape(Q)), bs, n, code, keep)
        mQ = _desc(ad, Q, keep)
        if _work(bs, n, q, k):
            self._run("project_basis", ad, self._lib.sg_project_basis,
                      (C.byref(mQ), C.byref(mX), 1 if complement else 0, C.byref(mY)), bs)
        elif q == 0:  # an empty basis: projects to 0, its complement is the identity
            Y[...] = X if complement else 0
        return self._wrap(Y, tc)

    def lstsq(self, A, B, atol=0.0, rtol=None, *, rcond=None, return_rank=False):
        """Minimum-norm least squares x = A⁺B (also rank-deficient), A (..., m, n), B (..., m, k) or
        (..., m). Returns x (and the rank with return_rank=True). Copies C-contiguous A and matrix B.
        Zero-sized A: x = 0 and rank 0, like numpy. Batch dimensions broadcast like torch.linalg.lstsq's
        (B with exactly one dimension fewer than A is a batch of vectors). One A shared by a batch of B is
        factored once, its rank repeated over the batch shape: on the CPU backend the batch becomes columns of
        one call; on CUDA x = A⁺b with A⁺ = lstsq(A, I) computed once and applied by matmul. With per-matrix
        tolerance arrays each item is factored on its own (each has its own rank). rcond= is numpy's relative
        cutoff (rtol)."""
        tl = _Tols("lstsq", *_numpy_names("lstsq", atol, rtol, rcond=rcond))
        atol, rtol = tl.a, tl.r
        ad, (A, B), tc = self._adapter([A, B], "lstsq")
        (A, B), code = self._common(ad, [A, B], ["A", "B"])
        sh = None if tl.per_matrix else self._shared(ad, A, B)  # one tolerance per item: one rank per item
        if sh is not None and self.backend != "cpu":
            f = self._via_pinv(ad, A, B, sh, atol, rtol, code)
            if f is not None:
                X, r = self._wrap(f[0], tc), self._wrap(f[1], tc)
                return (X, r) if return_rank else X
        elif sh is not None:
            m, n = ad.shape(A)[-2:]
            f = self._folded("lstsq", ad, A, B, sh, m, n, code, self._lib.sg_lstsq,
                             lambda mA, mB, mX, r: (C.byref(mA), C.byref(mB), atol, rtol, C.byref(mX),
                                                    C.c_void_p(ad.ptr(r))))
            if f is not None:
                X, r1 = f
                r = ad.empty_i64(sh[0])
                r[...] = r1[0]
                X = self._wrap(X, tc)
                return (X, self._wrap(r, tc)) if return_rank else X
        A, B, _ = self._broadcast("lstsq", ad, A, "A", B, "B")
        bs = self._bshape(ad, A, 2, "A")
        m, n = ad.shape(A)[-2:]
        vec = len(ad.shape(B)) == len(ad.shape(A)) - 1
        Bl = _vec_in(ad, B) if vec else B
        self._same_batch(bs, self._bshape(ad, Bl, 2, "B"), "B")
        _expect("lstsq", "B", ad.shape(B)[-1:] if vec else ad.shape(B)[-2:], (m,) if vec else (m, None),
                _vec_hint("B", "A", vec))
        k = ad.shape(Bl)[-1]
        keep = []
        mA, mB = _desc(ad, A, keep), _desc(ad, Bl, keep)
        X = ad.empty(bs + (n,), code) if vec else _out(ad, bs, n, k, code)
        mX = _desc(ad, _vec_in(ad, X) if vec else X, keep)
        r = ad.empty_i64(bs)
        cfn, ta = tl.bind(self._lib, "lstsq", bs, keep)
        if _work(bs, m, n, k):
            self._run("lstsq", ad, cfn, (C.byref(mA), C.byref(mB), *ta, C.byref(mX), C.c_void_p(ad.ptr(r))), bs)
        elif _work(bs, m, n):  # k == 0: empty x, but A still has a rank
            cfn, ta = tl.bind(self._lib, "rank", bs, keep)
            self._run("lstsq", ad, cfn, (C.byref(mA), *ta, C.c_void_p(ad.ptr(r))), bs)
        else:
            X[...] = 0
            r[...] = 0
        X = self._wrap(X, tc)
        return (X, self._wrap(_scalarize(r, bs), tc)) if return_rank else X

    def pinv(self, A, atol=0.0, rtol=None, *, rcond=None):
        """Pseudo-inverse (..., n, m) through lstsq. pinv(A)ᵀ = pinv(Aᵀ), so C-contiguous A is not copied;
        the identity right-hand side is materialized per matrix. Zero-sized A: empty (n, m), like numpy."""
        tl = _Tols("pinv", *_numpy_names("pinv", atol, rtol, rcond=rcond))
        ad, (A,), tc = self._adapter([A], "pinv")
        bs = self._bshape(ad, A, 2, "A")
        m, n = ad.shape(A)[-2:]
        code = ad.dtype_code(A)
        keep = []
        cfn, ta = tl.bind(self._lib, "lstsq", bs, keep)
        if not _work(bs, m, n):
            return self._wrap(ad.zeros(bs + (n, m), code), tc)
        At = ad.T(A)  # n×m
        if _describable(ad, At):
            mA = _desc(ad, At, keep)
            I = ad.zeros(bs + (n, n), code)
            I[...] = ad.eye(n, code)
            X = ad.empty(bs + (n, m), code)          # library X = pinv(Aᵀ) (m×n) col-major = C (n, m)
            mX = _desc(ad, ad.T(X), keep)
        else:
            mA = _desc(ad, A, keep)
            I = ad.zeros(bs + (m, m), code)
            I[...] = ad.eye(m, code)
            X = _out(ad, bs, n, m, code)
            mX = _desc(ad, X, keep)
        mI = _desc(ad, I, keep)
        r = ad.empty_i64(bs)
        self._run("pinv", ad, cfn, (C.byref(mA), C.byref(mI), *ta, C.byref(mX), C.c_void_p(ad.ptr(r))), bs)
        return self._wrap(X, tc)

    # ---- gradients ---------------------------------------------------------------------------------
    def eigh_backward(self, w, V, gw=None, gV=None, mode="mask", param=0.0):
        """Gradient w.r.t. symmetric A of a loss of (w, V) = eigh(A), given gw = dL/dw and gV = dL/dV
        (None = zero). gA = V (diag(gw) + skew(VᵀgV) ⊘ E) Vᵀ, E_ij = λj − λi. mode: 'exact' (ties → inf/NaN,
        raises DegenerateError with .result), 'mask' (default: zero inside tied clusters, exact for
        losses invariant to rotations within a cluster), 'lorentz' E/(E²+param·max|λ|²), 'taylor' (series in same-sign λ ratios, K = param; for SPD).
        Zero-copy for a column-major V (torch eigh's); numpy eigh's C-contiguous V and a C-contiguous gV
        are copied (n² passes). For an output the loss does not use pass None, not zeros: zeros still meet
        1/E, so mode='exact' at a tie gives NaN where None gives the finite V diag(gw) Vᵀ."""
        mcode = _mode(mode)
        ad, (w, V, gw, gV), tc = self._adapter([w, V, gw, gV], "eigh_backward")
        (w, V, gw, gV), code = self._common(ad, [w, V, gw, gV], ["w", "V", "gw", "gV"])
        bs = self._bshape(ad, V, 2, "V")
        n = _square("eigh_backward", ad, V, "V")
        for x, nm in ((w, "w"), (gw, "gw")):
            if x is not None:
                self._same_batch(bs, self._bshape(ad, x, 1, nm), nm)
                _expect("eigh_backward", nm, ad.shape(x)[-1:], (n,))
        if gV is not None:
            self._same_batch(bs, self._bshape(ad, gV, 2, "gV"), "gV")
            _expect("eigh_backward", "gV", ad.shape(gV)[-2:], (n, n))
        keep = []
        mW, mV = _desc(ad, _vec_in(ad, w), keep), _desc(ad, V, keep)
        mgW = _desc(ad, _vec_in(ad, gw), keep) if gw is not None else None
        mgV = _desc(ad, gV, keep) if gV is not None else None
        gA = _out(ad, bs, n, n, code)
        mgA = _desc(ad, gA, keep)
        if _work(bs, n):
            self._run("eigh_backward", ad, self._lib.sg_eigh_backward,
                      (C.byref(mW), C.byref(mV), C.byref(mgW) if mgW is not None else None, C.byref(mgV) if mgV is not None else None,
                       mcode, float(param), C.byref(mgA)), bs, result=self._wrap(gA, tc))
        return self._wrap(gA, tc)

    def svd_backward(self, U, S, Vh, gU=None, gS=None, gVh=None, mode="mask", param=0.0):
        """Gradient w.r.t. A (..., m, n) of a loss of (U, S, Vh) = svd(A) (economy or full_matrices). With
        full_matrices the extra columns (a tall A's U[..., k:], a wide A's Vh[..., k:, :]) are one basis of
        a complement that A determines only as a subspace: their cotangent enters through that subspace,
        which is exact for losses that do not depend on the basis chosen (torch drops it). numpy convention
        (Vh, gVh). The library differentiates Aᵀ = V S Uᵀ so that svd's outputs and a C-contiguous gVh are
        used in place; a C-contiguous gU is copied. For an output the loss does not use pass None, not
        zeros: zeros still meet 1/E at ties and 1/σ in the rectangular terms (σ = 0 gives NaN)."""
        mcode = _mode(mode)
        ad, (U, S, Vh, gU, gS, gVh), tc = self._adapter([U, S, Vh, gU, gS, gVh], "svd_backward")
        (U, S, Vh, gU, gS, gVh), code = self._common(ad, [U, S, Vh, gU, gS, gVh], ["U", "S", "Vh", "gU", "gS", "gVh"])
        bs = self._bshape(ad, U, 2, "U")
        for x, nm, core in ((S, "S", 1), (Vh, "Vh", 2), (gU, "gU", 2), (gS, "gS", 1), (gVh, "gVh", 2)):
            if x is not None:
                self._same_batch(bs, self._bshape(ad, x, core, nm), nm)
        (m, kU), (kV, n) = ad.shape(U)[-2:], ad.shape(Vh)[-2:]
        k = min(m, n)
        fullU, fullV = kU == m != k, kV == n != k
        if kU not in (k, m) or kV not in (k, n) or (fullU and kV != n) or (fullV and kU != m):
            raise _arg_error("svd_backward", f"U {m}×{kU} and Vh {kV}×{n} are neither economy (k={k}) nor full_matrices")
        _expect("svd_backward", "S", ad.shape(S)[-1:], (k,))
        for x, nm, want in ((gU, "gU", (m, kU)), (gS, "gS", (k,)), (gVh, "gVh", (kV, n))):
            if x is not None:
                _expect("svd_backward", nm, ad.shape(x)[-len(want):], want)
        keep = []
        mU_l, mV_l = _desc(ad, ad.T(Vh), keep), _desc(ad, U, keep)
        mS = _desc(ad, _vec_in(ad, S), keep)
        mgU_l = _desc(ad, ad.T(gVh), keep) if gVh is not None else None
        mgV_l = _desc(ad, gU, keep) if gU is not None else None
        mgS = _desc(ad, _vec_in(ad, gS), keep) if gS is not None else None
        gA = ad.empty(bs + (m, n), code)                 # library g(Aᵀ) (n×m) col-major = C (m, n)
        mgA = _desc(ad, ad.T(gA), keep)
        if _work(bs, m, n):
            self._run("svd_backward", ad, self._lib.sg_svd_backward,
                      (C.byref(mU_l), C.byref(mS), C.byref(mV_l), C.byref(mgU_l) if mgU_l is not None else None,
                       C.byref(mgS) if mgS is not None else None, C.byref(mgV_l) if mgV_l is not None else None, mcode, float(param),
                       C.byref(mgA)), bs, result=self._wrap(gA, tc))
        return self._wrap(gA, tc)

    def matfunc(self, A, fn="sqrt", p=None, uplo="L", *, return_eig=False):
        """F = f(A) = V f(Λ) Vᵀ for symmetric A (..., n, n); fn 'sqrt', 'log', 'exp', 'pow' (exponent p) or a
        pair (f, df) of Python callables (CPU backend only; an exception they raise is re-raised here).
        Domain errors raise DomainError. The `uplo` triangle is read ('U' zero-copy for C-contiguous A,
        'L' copies it). return_eig=True gives (F, w, V): the decomposition F was built from, as eigh
        returns it, for matfunc_backward without a second eigh."""
        f = _Fn(fn, p)
        ad, (A,), tc = self._adapter([A], "matfunc")
        bs = self._bshape(ad, A, 2, "A")
        n = _square("matfunc", ad, A, "A")
        keep = []
        Al = A if uplo == "L" else ad.T(A)
        mA = _desc(ad, Al, keep)
        if uplo == "L":
            F = _out(ad, bs, n, n, ad.dtype_code(A))
            mF = _desc(ad, F, keep)
        else:  # library computes f(Aᵀ) = f(A)ᵀ
            F = ad.empty(bs + (n, n), ad.dtype_code(A))
            mF = _desc(ad, ad.T(F), keep)
        w = V = None
        mW = mV = None
        if return_eig:
            w = ad.empty(bs + (n,), ad.dtype_code(A))
            mW = _desc(ad, _vec_in(ad, w), keep)
            V = _out(ad, bs, n, n, ad.dtype_code(A))
            mV = _desc(ad, V, keep)
        if _work(bs, n):
            self._run("matfunc", ad, self._lib.sg_matfunc,
                      (C.byref(mA), C.byref(f.s), C.byref(mF), C.byref(mW) if mW is not None else None,
                       C.byref(mV) if mV is not None else None), bs, fn=f)
        if not return_eig:
            return self._wrap(F, tc)
        if ad is _NP:
            V = np.ascontiguousarray(V)
        return self._wrap((F, w, V), tc)

    def matfunc_backward(self, w, V, gF, fn="sqrt", p=None):
        """Gradient w.r.t. symmetric A of a loss of F = f(A), given (w, V) = eigh(A) and gF = dL/dF:
        gA = V (L ∘ (Vᵀ sym(gF) V)) Vᵀ with divided differences L (finite at ties: f'). Since only sym(gF)
        enters, gF is passed in whichever orientation needs no copy."""
        f = _Fn(fn, p)
        ad, (w, V, gF), tc = self._adapter([w, V, gF], "matfunc_backward")
        (w, V, gF), code = self._common(ad, [w, V, gF], ["w", "V", "gF"])
        bs = self._bshape(ad, V, 2, "V")
        n = _square("matfunc_backward", ad, V, "V")
        self._same_batch(bs, self._bshape(ad, w, 1, "w"), "w")
        self._same_batch(bs, self._bshape(ad, gF, 2, "gF"), "gF")
        _expect("matfunc_backward", "w", ad.shape(w)[-1:], (n,))
        _expect("matfunc_backward", "gF", ad.shape(gF)[-2:], (n, n))
        keep = []
        mW, mV = _desc(ad, _vec_in(ad, w), keep), _desc(ad, V, keep)
        mgF = _desc(ad, self._pick_T(ad, gF), keep)
        gA = _out(ad, bs, n, n, code)
        mgA = _desc(ad, gA, keep)
        if _work(bs, n):
            self._run("matfunc_backward", ad, self._lib.sg_matfunc_backward,
                      (C.byref(mW), C.byref(mV), C.byref(f.s), C.byref(mgF), C.byref(mgA)), bs, fn=f)
        return self._wrap(gA, tc)

    def regularizer(self, A, kind, fn=None, p=None, *, grad=True, uplo="L"):
        """Per-matrix spectral regularizer and its gradient → (loss (batch shape), gA (..., m, n)) or just
        loss with grad=False. kind: 'spectral' σmax², 'nuclear' Σσ, 'ortho' ||AᵀA − I||_F², 'logdet'
        log det A (symmetric PD), 'eigsum' Σ f(λ) (needs fn/p as in matfunc). Transpose-invariant kinds
        (spectral, nuclear, square ortho) use A in place; 'ortho' of a non-square C-contiguous A and the
        symmetric kinds with uplo='L' copy it. Zero-sized A: loss 0 (ortho with m = 0: n), empty gA."""
        if kind not in L.REG:
            raise ValueError(f"specgrad: kind must be one of {sorted(L.REG)}, got {kind!r}")
        f = _Fn(fn, p) if kind == "eigsum" else None
        if kind != "eigsum" and fn is not None:
            raise ValueError(f"specgrad: fn only applies to kind='eigsum'")
        ad, (A,), tc = self._adapter([A], "regularizer")
        bs = self._bshape(ad, A, 2, "A")
        m, n = ad.shape(A)[-2:]
        if kind in ("logdet", "eigsum"):
            _square("regularizer", ad, A, "A")
        code = ad.dtype_code(A)
        if kind in ("spectral", "nuclear") or (kind == "ortho" and m == n):
            Al = self._pick_T(ad, A)
        elif kind == "ortho":
            Al = A
        else:
            Al = A if uplo == "L" else ad.T(A)
        transposed = Al is not A
        keep = []
        mA = _desc(ad, Al, keep)
        loss = ad.empty(bs, code)
        mL = _desc(ad, ad.reshape(loss, bs + (1, 1)), keep)
        gA = mG = None
        if grad:
            if transposed:
                gA = ad.empty(bs + (m, n), code)
                mG = _desc(ad, ad.T(gA), keep)
            else:
                gA = _out(ad, bs, m, n, code)
                mG = _desc(ad, gA, keep)
        if _work(bs, m, n):
            self._run("regularizer", ad, self._lib.sg_regularizer,
                      (L.REG[kind], C.byref(mA), C.byref(f.s) if f else None, C.byref(mL),
                       C.byref(mG) if grad else None), bs, fn=f)
        else:  # empty sums; ||0_{n×n} − I||² = n for A with no rows; gA has no elements
            loss[...] = n if kind == "ortho" and m == 0 else 0
        loss = _scalarize(loss, bs)
        return self._wrap((loss, gA) if grad else loss, tc)


def trim_null_space(N, nullity):
    """Padded (N, nullity) from null_space → list of (n, nullity_b) arrays over the flattened batch
    (a single array for one matrix), shaped like scipy.linalg.null_space. Slices of N (torch: autograd
    flows through them); nullity may be on a GPU (read with .tolist())."""
    nul = np.asarray(nullity.tolist() if hasattr(nullity, "tolist") else nullity)
    if nul.ndim == 0:
        return N[:, : int(nul)]
    n = N.shape[-1]
    Nf = N.reshape((nul.size, n, n))
    return [Nf[b, :, : int(k)] for b, k in enumerate(nul.reshape(-1))]


# ---- default contexts -------------------------------------------------------------------------------
_DEFAULT = {}
_DEFAULT_LOCK = threading.Lock()
_CONTEXTS = weakref.WeakSet()


def _after_fork_in_child():
    """A call under way in another thread of the parent does not exist in the child: the lock it held
    would stay held for ever (every such context gets a fresh one), and the SIGINT handler it had set for
    Ctrl-C would never be put back (it is, so Ctrl-C raises KeyboardInterrupt again). The shared CUDA
    contexts are dropped: CUDA does not survive fork (the library refuses a context from before it, with a
    clear error), so a CUDA call in the child gets a context of its own, or the error at its creation."""
    global _DEFAULT_LOCK, _MAIN_THREAD
    _DEFAULT_LOCK = threading.Lock()
    _MAIN_THREAD = threading.get_ident()  # the forking thread is the child's main thread (Ctrl-C handling)
    for c in list(_CONTEXTS):
        if c._lock._is_owned():  # a fork in this thread's own progress callback: its call goes on
            continue
        c._lock = threading.RLock()
        if c._sigint.prev is not None:
            signal.signal(signal.SIGINT, c._sigint.prev)
            c._sigint.prev = None
    for k in [k for k, c in _DEFAULT.items() if c.backend == "cuda"]:
        del _DEFAULT[k]


os.register_at_fork(after_in_child=_after_fork_in_child)


def _current_cuda_device():
    """torch's current CUDA device (= the CUDA runtime's, which sg_create binds to) when torch is already
    imported and sees a GPU; else None (unknown: device 0 unless something called cudaSetDevice)."""
    torch = sys.modules.get("torch")
    try:
        return torch.cuda.current_device() if torch is not None and torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA setup: the context creation reports it
        return None


def get_context(backend=None, device=None):
    """Shared default context per backend (and, for CUDA, per device index: a CUDA context belongs to the
    GPU it was created on). backend=None: $SPECGRAD_BACKEND, else 'cpu'. device: CUDA device index
    (None: the context created on the device current at first use, for host arrays)."""
    if backend is None:
        backend = os.environ.get("SPECGRAD_BACKEND", "cpu")
    key = backend if device is None else (backend, int(device))
    with _DEFAULT_LOCK:
        ctx = _DEFAULT.get(key)
        if ctx is None:
            ctx = _DEFAULT[key] = Context(backend) if device is None else Context(backend, device=int(device))
        return ctx


def _ctx_for(ctx, *xs):
    """The explicit ctx, else the default context for the first CUDA tensor's device, else the default
    host context. (Tensors on different devices are refused by Context._adapter.)"""
    if ctx is not None:
        return ctx
    for x in xs:
        if x is not None and type(x).__module__.startswith("torch") and getattr(x, "is_cuda", False):
            return get_context("cuda", device=x.device.index)
    return get_context()

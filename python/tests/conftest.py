"""Test setup: import the in-tree package, float64 jax, shared helpers."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

try:
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
except ImportError:  # the jax tests importorskip and print why
    pass

BATCH_SHAPES = [(), (3,), (2, 3)]
DTYPES = [np.float64, np.float32]


def tol(dtype, f64=1e-9, f32=2e-3):
    return f64 if np.dtype(dtype) == np.float64 else f32


def sym_with_spectrum(rng, w, bshape=()):
    """Batch of symmetric matrices Q diag(w) Qᵀ (Q random orthogonal), float64."""
    n = len(w)
    G = rng.standard_normal(bshape + (n, n))
    Q, _ = np.linalg.qr(G)
    A = (Q * np.asarray(w)) @ Q.swapaxes(-1, -2)
    return (A + A.swapaxes(-1, -2)) / 2


def random_spd(rng, n, bshape=(), lo=0.5, hi=3.0):
    w = np.linspace(lo, hi, n) + 0.05 * rng.random(n)
    return sym_with_spectrum(rng, w, bshape)


def low_rank(rng, m, n, r, bshape=()):
    """Rank-r batch with small-integer factors: exactly representable in float32 too, so the rank is
    the same in both dtypes (a float64 product rounded to float32 would be full rank at ~eps)."""
    X = rng.integers(-3, 4, size=bshape + (m, r)).astype(np.float64)
    Y = rng.integers(-3, 4, size=bshape + (r, n)).astype(np.float64)
    X[..., :r, :] += 5 * np.eye(r)[: min(m, r)]  # keep the factors full rank
    Y[..., :, :r] += 5 * np.eye(r)[:, : min(n, r)]
    return X @ Y


def projector(Q):
    """Orthogonal projector onto the column span of Q (orthonormal columns) — gauge invariant."""
    return Q @ Q.swapaxes(-1, -2)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

"""One A (or basis Q) shared by a batch of X: the CPU backend's folded call (the batch becomes columns of
one library call, A decomposed once) against the per-item path (the same A materialised per batch item
with np.broadcast_to, which the binding computes item by item). Both in one run, alternating, medians of
--reps calls; every folded result is checked against the per-item one.

  SPECGRAD_LIB=build/libspecgrad.so python bench/python/shared_operand.py [--threads T] [--json F]
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import specgrad as sg  # noqa: E402

CASES = [  # m, n, batch, k (0: vectors)
    (6, 8, 10_000, 1), (8, 16, 100_000, 0), (32, 64, 10_000, 4), (64, 128, 1_000, 8)]


def timed(f, reps):
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    ctx = sg.Context("cpu", threads=a.threads)
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'op':14s} {'dtype':7s} {'m':>4s} {'n':>4s} {'batch':>7s} {'k':>3s} | {'per-item ms':>11s} {'folded ms':>10s} {'speedup':>8s}")
    for dt in (np.float32, np.float64):
        for m, n, B, k in CASES:
            A = rng.standard_normal((1, m, n) if k == 0 else (m, n)).astype(dt)
            A[..., -1, :] = A[..., 0, :]  # rank-deficient: rank m - 1
            X = rng.standard_normal((B, n) if k == 0 else (B, n, k)).astype(dt)
            Bm = rng.standard_normal((B, m) if k == 0 else (B, m, k)).astype(dt)
            N, nul = ctx.null_space(A)
            Q = np.ascontiguousarray(N[..., : int(np.max(nul))])
            bsh = (B,) + A.shape[-2:]
            ops = {
                "project": (lambda A_: ctx.project(A_, X), A),
                "project_basis": (lambda Q_: ctx.project_basis(Q_, X), Q),
                "lstsq": (lambda A_: ctx.lstsq(A_, Bm), A),
            }
            for op, (f, S) in ops.items():
                Sb = np.broadcast_to(S.reshape(S.shape[-2:]), (B,) + S.shape[-2:])  # batch of B: no folding
                yf, yp = f(S), f(Sb)
                err = float(np.max(np.abs(yf.astype(np.float64) - yp)) / max(1.0, float(np.max(np.abs(yp)))))
                lim = 1e-4 if dt == np.float32 else 1e-10
                if not err <= lim:
                    sys.exit(f"{op} {np.dtype(dt).name} m={m} n={n}: folded differs from per-item by {err:.3g}")
                tp = tf = float("inf")
                for _ in range(2):  # alternate, keep the smaller median of each
                    tp = min(tp, timed(lambda: f(Sb), a.reps))
                    tf = min(tf, timed(lambda: f(S), a.reps))
                rows.append(dict(op=op, dtype=np.dtype(dt).name, m=m, n=n, batch=B, k=k, per_item_ms=tp,
                                 folded_ms=tf, speedup=tp / tf, max_rel_diff=err))
                print(f"{op:14s} {np.dtype(dt).name:7s} {m:4d} {n:4d} {B:7d} {k:3d} | {tp:11.2f} {tf:10.2f} {tp / tf:7.1f}×",
                      flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(dict(machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                           threads=a.threads, numpy=np.__version__, rows=rows), fh, indent=1)


if __name__ == "__main__":
    main()

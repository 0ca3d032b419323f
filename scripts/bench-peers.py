#!/usr/bin/env python3
"""Peer benchmark for specgrad (issue 5): times torch / cupy / jax on the sizes and batches of
specgrad-bench, in the same run on the same GPU, and writes JSON in specgrad-bench's schema
(schema "specgrad-bench/1", one record per (op, dtype, n, batch, impl)).

  scripts/bench-peers.py --json peers.json [--ops eigh,eigh_backward] [--n 3,8,...] [--batch 1e2,1e4]
                         [--dtype f32,f64] [--peers torch,cupy,jax] [--budget-ms 3000]

Each peer is optional: one that is not importable (or sees no GPU) is skipped with a printed reason.
--cpu-smoke runs torch and jax on the CPU instead (cupy is skipped) and exits 1 unless every record is ok:
a check of this script itself, for CI (scripts/test-python), so a broken peer path is found before a GPU
lease is spent on it. Its timings mean nothing; its JSON names the device "cpu-smoke (timings mean nothing)".
Timing: warm-up calls, then a median over repeats; torch/cupy with CUDA events, jax with
block_until_ready around a jit-compiled function; input sets rotate (total > 2x L2 where memory allows)
and a 2x-L2 buffer is overwritten before every timed call (as in specgrad-bench). Shapes follow
specgrad-bench (see its JSON "ops"): nullspace/project use A of (n/2) x n, lstsq B is n x 1.
Implementations:
  torch            forward ops (eigh, svd, lstsq = torch.linalg.lstsq: 'gels' on CUDA, full-rank only)
  torch-pinv       lstsq as pinv(A) @ B (minimum-norm, rank-revealing, like sg_lstsq)
  torch-composite  nullspace / project built from torch.linalg.svd + matmuls
                   (project_basis, Q given: "torch", X - Q @ (Q.mT @ X))
  torch-autograd   backward only: autograd.grad through eigh / svd / V f(W) V^T, graph built untimed
                   (regularizer: nuclear norm forward + backward, like sg_regularizer)
  cupy             cupy.linalg.eigh / svd
  jax              jax.numpy.linalg.eigh / svd (jit)
  jax-grad         jax.vjp of eigh / svd, forward + backward (jit; jax cannot run the backward alone)
A peer result is validated on a small sub-batch where a cheap check exists (eigh / svd residuals in
float64 on the host); a failed check marks the record FAILED and it is not timed.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

OPS = ["eigh", "svd", "nullspace", "project", "project_basis", "lstsq", "eigh_backward", "svd_backward", "matfunc_backward",
       "regularizer"]


def parse_list(s, conv):
    return [conv(float(x)) if conv is int else conv(x) for x in s.split(",") if x]


def napkin(op, n, dtype):
    """Same napkin flops / bytes per matrix as bench/ops.c."""
    es = 4 if dtype == "f32" else 8
    m = max(1, n // 2)

    def svdf(a, b):
        a, b = max(a, b), min(a, b)
        return 4 * a * a * b + 8 * a * b * b + 9 * b ** 3
    fl = {"eigh": 9 * n ** 3, "svd": svdf(n, n), "nullspace": svdf(m, n), "project": svdf(m, n) + 4 * n * m * n,
          "project_basis": 4 * n * m * n,
          "lstsq": svdf(n, n) + 4 * n * n, "eigh_backward": 6 * n ** 3, "svd_backward": 8 * n ** 3,
          "matfunc_backward": 8 * n ** 3, "regularizer": svdf(n, n) + 2 * n ** 3}[op]
    el = {"eigh": n * n + n + n * n, "svd": n * n + n + 2 * n * n, "nullspace": m * n + n * n + 1,
          "project": m * n + 2 * n * n, "project_basis": n * m + 2 * n * n, "lstsq": n * n + 2 * n + 1, "eigh_backward": 2 * n + 3 * n * n,
          "svd_backward": 5 * n * n + 2 * n, "matfunc_backward": n + 3 * n * n, "regularizer": 2 * n * n + 1}[op]
    return float(fl), float(el * es)


class Skip(Exception):
    pass


class Failed(Exception):
    pass


def med_record(times):
    return {"ms_median": statistics.median(times), "ms_min": min(times), "ms_max": max(times), "reps": len(times)}


_seen = set()


def warmups(args, key):
    """Warm-up calls before timing: --warmup, plus one for the first row of each (impl, op, dtype), whose first
    call also pays one-time set-up (a cuBLAS context made a first torch autograd call take 2 s on an H200)."""
    extra = 0 if key in _seen else 1
    _seen.add(key)
    return max(1, args.warmup) + extra


def reps_for(t_ms, args):
    if t_ms > args.budget_ms:
        return 0
    return max(3, min(args.reps, int(args.budget_ms / max(t_ms, 1e-6))))


# ---------------------------------------------------------------------------------------------- torch
def torch_peer(args, emit):
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        print(f"[peers] torch skipped: not importable ({e})", file=sys.stderr)
        return None
    gpu = torch.cuda.is_available() and not args.cpu_smoke
    if not gpu and not args.cpu_smoke:
        print("[peers] torch skipped: torch.cuda.is_available() is False", file=sys.stderr)
        return None
    dev = torch.device("cuda" if gpu else "cpu")
    if gpu:
        props = torch.cuda.get_device_properties(0)
        l2 = getattr(props, "L2_cache_size", 50 << 20) or (50 << 20)
        info = {"name": props.name, "sms": props.multi_processor_count, "mem_bytes": props.total_memory,
                "l2_bytes": l2, "torch": torch.__version__, "cuda": torch.version.cuda}
        emit.meta["device"] = info  # in the JSON from the first record on (a run cut short keeps it)
    else:
        l2, info = 1 << 20, None
    flush = torch.empty(2 * l2, dtype=torch.uint8, device=dev)

    def tdt(d):
        return torch.float32 if d == "f32" else torch.float64

    def sets_for(make, set_bytes):
        k = int(max(1, min(4, -(-2 * l2 // max(set_bytes, 1)))))  # napkin bytes are floats
        return [make(i) for i in range(k)]

    def time_fn(fn, sets, key):
        if gpu:
            ev0, ev1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def one(i):
            flush.fill_(i & 0x7F)
            if not gpu:
                t0 = time.perf_counter()
                fn(sets[i % len(sets)])
                return (time.perf_counter() - t0) * 1e3
            ev0.record()
            fn(sets[i % len(sets)])
            ev1.record()
            ev1.synchronize()
            return ev0.elapsed_time(ev1)
        t = 0.0
        for w in range(warmups(args, key)):
            t = one(w)
        k = reps_for(t, args)
        if k == 0:
            return {**med_record([t]), "note": "one call over budget: single measurement"}
        return med_record([one(i) for i in range(k)])

    def gen(op, n, b, d, seed):
        g = torch.Generator(device=dev)
        g.manual_seed(seed)
        r = lambda *s: torch.randn(*s, generator=g, device=dev, dtype=tdt(d))  # noqa: E731
        m = max(1, n // 2)
        if op in ("eigh", "eigh_backward", "matfunc_backward"):
            A = r(b, n, n)
            A = (A + A.mT) / 2
            if op == "matfunc_backward":
                A = A @ A.mT / n + 0.1 * torch.eye(n, device=dev, dtype=tdt(d))  # SPD for sqrt
            return {"A": A, "gW": r(b, n), "gV": r(b, n, n)}
        if op in ("nullspace", "project"):
            return {"A": r(b, m, n), "X": r(b, n, n)}
        if op == "lstsq":
            return {"A": r(b, n, n), "B": r(b, n, 1)}
        if op == "project_basis":
            return {"A": torch.linalg.qr(r(b, n, n))[0][..., :m].contiguous(), "X": r(b, n, n)}
        return {"A": r(b, n, n), "gU": r(b, n, n), "gS": r(b, n), "gV": r(b, n, n)}

    def check(op, s, out, d):
        """float64 residuals on the first 4 matrices; raises Failed."""
        eps = 1.2e-7 if d == "f32" else 2.2e-16
        A = s["A"][:4].double()
        n = A.shape[-1]
        if op == "eigh":
            W, V = out[0][:4].double(), out[1][:4].double()
            err = float(torch.linalg.matrix_norm(A @ V - V * W.unsqueeze(-2)).max() / torch.linalg.matrix_norm(A).max())
        elif op == "svd":
            U, S, Vh = (x[:4].double() for x in out)
            err = float(torch.linalg.matrix_norm(A - (U * S.unsqueeze(-2)) @ Vh).max() / torch.linalg.matrix_norm(A).max())
        else:
            return None
        if not err <= 100 * n * eps:
            raise Failed(f"residual {err:.3g} > {100 * n * eps:.3g}")
        return err

    for op in args.ops:
        for d in args.dtype:
            for n in args.n:
                for b in args.batch:
                    fl, by = napkin(op, n, d)
                    plans = []
                    if op == "eigh":
                        plans.append(("torch", None, lambda s: torch.linalg.eigh(s["A"])))
                    elif op == "svd":
                        plans.append(("torch", None, lambda s: torch.linalg.svd(s["A"], full_matrices=False)))
                    elif op == "lstsq":
                        plans.append(("torch", None, lambda s: torch.linalg.lstsq(s["A"], s["B"]).solution))
                        plans.append(("torch-pinv", None, lambda s: torch.linalg.pinv(s["A"]) @ s["B"]))
                    elif op == "nullspace":
                        def ns(s):
                            _, S, Vh = torch.linalg.svd(s["A"], full_matrices=True)
                            return Vh.mT  # columns beyond rank(A) = nullspace (rank decided on the host side)
                        plans.append(("torch-composite", None, ns))
                    elif op == "project":
                        def pj(s):
                            _, S, Vh = torch.linalg.svd(s["A"], full_matrices=False)
                            tol = S[..., :1] * max(s["A"].shape[-2:]) * torch.finfo(S.dtype).eps
                            Vr = Vh.mT * (S > tol).unsqueeze(-2)
                            return s["X"] - Vr @ (Vr.mT @ s["X"])
                        plans.append(("torch-composite", None, pj))
                    elif op == "project_basis":  # two batched matmuls (cuBLAS), Q given
                        plans.append(("torch", None, lambda s: s["X"] - s["A"] @ (s["A"].mT @ s["X"])))
                    elif op in ("eigh_backward", "svd_backward", "matfunc_backward"):
                        def prep(s, op=op):
                            A = s["A"].clone().requires_grad_(True)
                            if op == "eigh_backward":
                                W, V = torch.linalg.eigh(A)
                                return A, (W, V), (s["gW"], s["gV"])
                            if op == "svd_backward":
                                U, S, Vh = torch.linalg.svd(A, full_matrices=False)
                                return A, (U, S, Vh), (s["gU"], s["gS"], s["gV"])
                            W, V = torch.linalg.eigh(A)
                            F = (V * W.clamp_min(0).sqrt().unsqueeze(-2)) @ V.mT
                            return A, (F,), (s["gV"],)
                        plans.append(("torch-autograd", prep,
                                      lambda g: torch.autograd.grad(g[1], g[0], g[2], retain_graph=True)))
                    elif op == "regularizer":
                        def reg(s):
                            A = s["A"].clone().requires_grad_(True)
                            loss = torch.linalg.matrix_norm(A, "nuc")
                            return torch.autograd.grad(loss.sum(), A)
                        plans.append(("torch-autograd", None, reg))
                    for impl, prep, fn in plans:
                        rec = {"op": op, "dtype": d, "n": n, "batch": b, "impl": impl,
                               "flops_per_matrix": fl, "bytes_per_matrix": by}
                        print(f"[peers] {impl} {op} {d} n={n} batch={b}", file=sys.stderr, flush=True)
                        try:
                            need = 3 * b * (by + 8 * n * n)
                            if gpu and need > 0.6 * torch.cuda.mem_get_info()[0]:
                                raise Skip(f"needs ~{need / 1e9:.1f} GB device memory")
                            one_bytes = b * by
                            sets = sets_for(lambda i: gen(op, n, b, d, 1000 + i), one_bytes)
                            if prep:
                                sets = [prep(s) for s in sets]
                            else:
                                err = check(op, sets[0], fn(sets[0]), d)
                                if err is not None:
                                    rec["valid_err"] = err
                            rec.update(time_fn(fn, sets, (impl, op, d)))
                            rec["status"] = "ok"
                        except Skip as e:
                            rec.update(status="skipped", note=str(e))
                        except Failed as e:
                            rec.update(status="FAILED", note=str(e))
                        except torch.cuda.OutOfMemoryError as e:
                            rec.update(status="skipped", note=f"out of memory: {str(e)[:120]}")
                        except Exception as e:  # noqa: BLE001 - a peer error is a result, not a crash
                            rec.update(status="error", note=f"{type(e).__name__}: {str(e)[:200]}")
                        finally:
                            sets = None
                            if gpu:
                                torch.cuda.empty_cache()
                        emit(rec)
    return info


# ---------------------------------------------------------------------------------------------- cupy
def cupy_peer(args, emit):
    if args.cpu_smoke:
        print("[peers] cupy skipped: --cpu-smoke (cupy has no CPU device)", file=sys.stderr)
        return
    try:
        import cupy as cp
    except Exception as e:  # noqa: BLE001
        print(f"[peers] cupy skipped: not importable ({e})", file=sys.stderr)
        return
    try:
        cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001
        print(f"[peers] cupy skipped: no device ({e})", file=sys.stderr)
        return
    flush = cp.empty(100 << 20, dtype=cp.uint8)
    for op in args.ops:
        if op not in ("eigh", "svd"):
            continue
        for d in args.dtype:
            for n in args.n:
                for b in args.batch:
                    fl, by = napkin(op, n, d)
                    rec = {"op": op, "dtype": d, "n": n, "batch": b, "impl": "cupy", "flops_per_matrix": fl,
                           "bytes_per_matrix": by}
                    print(f"[peers] cupy {op} {d} n={n} batch={b}", file=sys.stderr, flush=True)
                    try:
                        rs = cp.random.RandomState(7)
                        dt = cp.float32 if d == "f32" else cp.float64
                        sets = []
                        for _ in range(int(max(1, min(4, -(-(100 << 20) // max(b * by, 1)))))):
                            A = rs.standard_normal((b, n, n)).astype(dt)
                            sets.append((A + A.transpose(0, 2, 1)) / 2 if op == "eigh" else A)
                        fn = (lambda A: cp.linalg.eigh(A)) if op == "eigh" else (
                            lambda A: cp.linalg.svd(A, full_matrices=False))
                        e0, e1 = cp.cuda.Event(), cp.cuda.Event()

                        def one(i):
                            flush.fill(i & 0x7F)
                            e0.record()
                            fn(sets[i % len(sets)])
                            e1.record()
                            e1.synchronize()
                            return cp.cuda.get_elapsed_time(e0, e1)
                        t = 0.0
                        for w in range(warmups(args, ("cupy", op, d))):
                            t = one(w)
                        k = reps_for(t, args)
                        rec.update(med_record([t] if k == 0 else [one(i) for i in range(k)]))
                        if k == 0:
                            rec["note"] = "one call over budget: single measurement"
                        rec["status"] = "ok"
                    except Exception as e:  # noqa: BLE001
                        rec.update(status="error", note=f"{type(e).__name__}: {str(e)[:200]}")
                    emit(rec)
                    sets = None
                    cp.get_default_memory_pool().free_all_blocks()


# ---------------------------------------------------------------------------------------------- jax
def jax_peer(args, emit):
    if args.cpu_smoke:
        os.environ["JAX_PLATFORMS"] = "cpu"  # before the import: the smoke checks the script, not a GPU
    try:
        import jax
        import jax.numpy as jnp
    except Exception as e:  # noqa: BLE001
        print(f"[peers] jax skipped: not importable ({e})", file=sys.stderr)
        return
    if not args.cpu_smoke and not any(dv.platform == "gpu" for dv in jax.devices()):
        print(f"[peers] jax skipped: no GPU device ({jax.devices()})", file=sys.stderr)
        return
    if "f64" in args.dtype:
        jax.config.update("jax_enable_x64", True)

    def vjp_of(f, A, cot):
        # the cotangent must have the output's pytree type (EighResult / SVDResult namedtuples, not a tuple)
        out, back = jax.vjp(f, A)
        return back(type(out)(*cot))
    fns = {
        ("eigh", "jax"): jax.jit(lambda A: jnp.linalg.eigh(A)),
        ("svd", "jax"): jax.jit(lambda A: jnp.linalg.svd(A, full_matrices=False)),
        ("eigh_backward", "jax-grad"): jax.jit(lambda A, gW, gV: vjp_of(jnp.linalg.eigh, A, (gW, gV))),
        ("svd_backward", "jax-grad"): jax.jit(
            lambda A, gU, gS, gV: vjp_of(lambda X: jnp.linalg.svd(X, full_matrices=False), A,
                                         (gU, gS, jnp.swapaxes(gV, -1, -2)))),
    }
    for op in args.ops:
        for (fop, impl), fn in fns.items():
            if fop != op:
                continue
            for d in args.dtype:
                for n in args.n:
                    for b in args.batch:
                        fl, by = napkin(op, n, d)
                        rec = {"op": op, "dtype": d, "n": n, "batch": b, "impl": impl, "flops_per_matrix": fl,
                               "bytes_per_matrix": by}
                        if impl == "jax-grad":
                            rec["note"] = "forward + backward (jax.vjp)"
                        print(f"[peers] {impl} {op} {d} n={n} batch={b}", file=sys.stderr, flush=True)
                        try:
                            dt = jnp.float32 if d == "f32" else jnp.float64
                            key = jax.random.PRNGKey(3)
                            k1, k2, k3, k4 = jax.random.split(key, 4)
                            A = jax.random.normal(k1, (b, n, n), dt)
                            A = (A + jnp.swapaxes(A, -1, -2)) / 2
                            if op == "eigh_backward":
                                xs = (A, jax.random.normal(k2, (b, n), dt), jax.random.normal(k3, (b, n, n), dt))
                            elif op == "svd_backward":
                                xs = (A, jax.random.normal(k2, (b, n, n), dt), jax.random.normal(k3, (b, n), dt),
                                      jax.random.normal(k4, (b, n, n), dt))
                            else:
                                xs = (A,)

                            def one():
                                t0 = time.perf_counter()
                                jax.block_until_ready(fn(*xs))
                                return (time.perf_counter() - t0) * 1e3
                            t = 0.0
                            for _ in range(max(warmups(args, (impl, op, d)), 2)):  # first call compiles
                                t = one()
                            k = reps_for(t, args)
                            rec.update(med_record([t] if k == 0 else [one() for _ in range(k)]))
                            rec["status"] = "ok"
                        except Exception as e:  # noqa: BLE001
                            rec.update(status="error", note=f"{type(e).__name__}: {str(e)[:200]}")
                        emit(rec)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", required=True)
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--n", default="3,8,16,32,64,128,256")
    ap.add_argument("--batch", default="1e2,1e4,1e5")
    ap.add_argument("--dtype", default="f32,f64")
    ap.add_argument("--peers", default="torch,cupy,jax")
    ap.add_argument("--budget-ms", type=float, default=3000)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="run torch/jax on the CPU to check this script (CI); exit 1 unless every record is ok")
    args = ap.parse_args()
    args.ops = parse_list(args.ops, str)
    bad = [o for o in args.ops if o not in OPS]
    if bad:
        ap.error(f"unknown ops {bad}")
    args.n = parse_list(args.n, int)
    args.batch = parse_list(args.batch, int)
    args.dtype = parse_list(args.dtype, str)
    peers = parse_list(args.peers, str)

    rows = []
    meta = {"device": {"name": "cpu-smoke (timings mean nothing)"} if args.cpu_smoke else None}

    def write_json():
        """The whole file, rewritten after every record: a run cut by gpu-check's deadline keeps what it
        measured (written to a temporary name first, so a kill mid-write leaves the previous version)."""
        out = {
            "schema": "specgrad-bench/1", "tool": "bench-peers",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": " ".join(sys.argv), "quick": False, "budget_ms": args.budget_ms,
            "host": {"cpu": platform.processor() or platform.machine(), "threads": os.cpu_count()},
            "device": meta["device"], "roofline": None, "rows": rows,
        }
        with open(args.json + ".tmp", "w") as f:
            json.dump(out, f, indent=1)
        os.replace(args.json + ".tmp", args.json)

    def emit(rec):
        rec.setdefault("note", "")
        rec.setdefault("status", "error")
        if rec.get("status") == "ok":
            s = rec["ms_median"] * 1e-3
            rec["matrices_per_s"] = rec["batch"] / s
            rec["gflops"] = rec["flops_per_matrix"] * rec["batch"] / s / 1e9
            rec["gbps"] = rec["bytes_per_matrix"] * rec["batch"] / s / 1e9
        print(f"{rec['impl']:16s} {rec['op']:16s} {rec['dtype']} n={rec['n']:<4d} batch={rec['batch']:<7d} "
              f"{rec['status']:8s} {rec.get('ms_median', float('nan')):10.3f} ms  {rec['note']}", flush=True)
        rows.append(rec)
        write_json()

    emit.meta = meta
    if "torch" in peers:
        torch_peer(args, emit)
    if "cupy" in peers:
        cupy_peer(args, emit)
    if "jax" in peers:
        jax_peer(args, emit)
    write_json()
    print(f"[peers] wrote {len(rows)} records to {args.json}", file=sys.stderr)
    if args.cpu_smoke:
        bad = [r for r in rows if r["status"] != "ok"]
        for r in bad:
            print(f"[peers] cpu smoke: {r['impl']} {r['op']} {r['dtype']} n={r['n']}: {r['status']} {r['note']}",
                  file=sys.stderr)
        if bad or not rows:
            print(f"[peers] cpu smoke FAILED: {len(bad)} of {len(rows)} records not ok", file=sys.stderr)
            sys.exit(1)
        print(f"[peers] cpu smoke: all {len(rows)} records ok", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Plots and target summary from specgrad-bench / bench-peers JSON files (schema specgrad-bench/1).

  scripts/plot-bench.py [--out DIR] [--summary] FILE.json [FILE.json ...]

Writes to DIR (default bench/plots):
  throughput-<op>-<dtype>.png   matrices/s vs n, one line per (impl, batch); log-log
  speedup-cpu-<dtype>.png       specgrad-cuda-dev time / ... : CPU ms / GPU-dev ms vs n, per op (largest batch)
  speedup-peers-<dtype>.png     peer ms / specgrad-cuda-dev ms vs n, per (op, peer) (largest common batch)
Plots only what the files hold: with a CPU-only file you get CPU throughput and no speedup plots.
--summary prints the issue-5 targets that need peers (>= 20x torch.linalg.eigh for n > 32, fused eigh
backward >= 3x torch autograd) plus the forward-vs-cuSOLVER and projection-bandwidth targets.
"""
import argparse
import collections
import json
import os
import sys


def load(paths):
    rows, meta = [], []
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        if d.get("schema") != "specgrad-bench/1":
            sys.exit(f"{p}: not a specgrad-bench/1 file (schema {d.get('schema')!r})")
        dev = d.get("device") or {}
        meta.append(f"{d.get('tool')} {d.get('date')} on {dev.get('name', 'CPU only: ' + str(d.get('host', {}).get('cpu')))}")
        bw = (d.get("roofline") or {}).get("copy_GBps")
        # files before 2026-12-01 have no check_finite field: their command line says it
        scan = d.get("check_finite", "--no-check-finite" not in (d.get("command") or ""))
        for r in d["rows"]:
            r["scan"] = "on" if scan else "off"
            if r.get("status") == "ok" and r.get("ms_median"):
                if bw and r.get("gbps"):
                    r["frac_bw"] = r["gbps"] / bw  # fraction of this file's measured copy bandwidth
                rows.append(r)
    return rows, meta


def index(rows):
    """(op, dtype, n, batch, impl) -> ms"""
    return {(r["op"], r["dtype"], r["n"], r["batch"], r["impl"]): r["ms_median"] for r in rows}


def speedups(idx, ours, theirs, op=None):
    """[(op, dtype, n, batch, theirs_ms / ours_ms)] over keys both hold."""
    out = []
    for (o, d, n, b, i), ms in idx.items():
        if i != ours or (op and o != op):
            continue
        t = idx.get((o, d, n, b, theirs))
        if t:
            out.append((o, d, n, b, t / ms))
    return sorted(out)


def summary(rows, meta):
    idx = index(rows)
    print("sources:\n  " + "\n  ".join(meta))
    print("targets (issue 5; reported, not asserted):")

    def report(title, pairs, goal, better="ge"):
        if not pairs:
            print(f"  {title}: no data (needs both timings in the given files)")
            return
        met = [p for p in pairs if (p[4] >= goal if better == "ge" else p[4] <= goal)]
        worst = min(pairs, key=lambda p: p[4]) if better == "ge" else max(pairs, key=lambda p: p[4])
        print(f"  {title}: {len(met)}/{len(pairs)} rows meet it; worst {worst[4]:.2f} "
              f"({worst[0]} {worst[1]} n={worst[2]} batch={worst[3]})")
    sp = [p for p in speedups(idx, "specgrad-cuda-dev", "torch", "eigh") if p[2] > 32]
    report(">= 20x torch.linalg.eigh for n > 32 (torch ms / ours)", sp, 20)
    report(">= 3x torch autograd, eigh backward (torch ms / ours)",
           speedups(idx, "specgrad-cuda-dev", "torch-autograd", "eigh_backward"), 3)
    fw = [(o, d, n, b, idx[(o, d, n, b, "specgrad-cuda-dev")] / ms) for (o, d, n, b, i), ms in idx.items()
          if i == "cusolver" and o in ("eigh", "svd") and (o, d, n, b, "specgrad-cuda-dev") in idx]
    report("forward within 5% of raw cuSOLVER (ours ms / cuSOLVER ms)", sorted(fw), 1.05, better="le")
    for op, what in (("project", "SVD + apply"), ("project_basis", "apply a given basis")):
        for scan in ("on", "off"):  # the NaN/Inf scan reads the inputs once more (project_basis: <= 62 %)
            pj = [(r["op"], r["dtype"], r["n"], r["batch"], r["frac_bw"]) for r in rows
                  if r["op"] == op and r["impl"] == "specgrad-cuda-dev" and r.get("frac_bw") is not None
                  and r["scan"] == scan]
            if pj or scan == "on":
                report(f"projections >= 70% of measured bandwidth, {op} ({what}; NaN/Inf scan {scan}; fraction)",
                       pj, 0.7)


def plots(rows, meta, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    os.makedirs(out, exist_ok=True)
    written = []
    foot = "; ".join(meta)
    by = collections.defaultdict(list)
    for r in rows:
        by[(r["op"], r["dtype"])].append(r)
    for (op, dt), rs in sorted(by.items()):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        lines = collections.defaultdict(list)
        for r in rs:
            lines[(r["impl"], r["batch"])].append((r["n"], r["batch"] / (r["ms_median"] * 1e-3)))
        for (impl, b), pts in sorted(lines.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{impl}, batch {b:g}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("n (matrix size)")
        ax.set_ylabel("matrices / s")
        ax.set_title(f"{op} ({dt}): throughput")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.text(0.01, 0.005, foot, fontsize=6, alpha=0.7)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        p = os.path.join(out, f"throughput-{op}-{dt}.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    idx = index(rows)
    for dt in sorted({r["dtype"] for r in rows}):
        for kind, others in (("cpu", ["specgrad-cpu"]),
                             ("peers", sorted({r["impl"] for r in rows if not r["impl"].startswith("specgrad")
                                               and r["impl"] != "cusolver"}) + ["cusolver"])):
            series = collections.defaultdict(dict)
            for other in others:
                for (o, d, n, b, s) in speedups(idx, "specgrad-cuda-dev", other):
                    if d != dt:
                        continue
                    key = (o, other)
                    if n not in series[key] or b > series[key][n][0]:
                        series[key][n] = (b, s)  # keep the largest batch per n
            if not series:
                continue
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for (o, other), pts in sorted(series.items()):
                ns = sorted(pts)
                ax.plot(ns, [pts[n][1] for n in ns], marker="o", label=f"{o} vs {other}")
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("n (largest batch measured per n)")
            ax.set_ylabel("speedup (their ms / specgrad-cuda-dev ms)")
            ax.set_title(f"specgrad GPU speedup vs {kind} ({dt})")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
            fig.text(0.01, 0.005, foot, fontsize=6, alpha=0.7)
            fig.tight_layout(rect=(0, 0.03, 1, 1))
            p = os.path.join(out, f"speedup-{kind}-{dt}.png")
            fig.savefig(p, dpi=110)
            plt.close(fig)
            written.append(p)
    return written


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--out", default="bench/plots")
    ap.add_argument("--summary", action="store_true", help="print the issue-5 targets instead of only plotting")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args()
    rows, meta = load(args.files)
    if args.summary:
        summary(rows, meta)
    if not args.no_plots:
        for p in plots(rows, meta, args.out):
            print(p)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_api into tests/fuzz/corpus-api/ (deterministic, standard library only).

One valid call per op and dtype (the fuzzer mutates from calls that succeed), large-size variants of the
decompositions, and regression inputs for fixed findings. The byte layout is fuzz_api.c's reading order:
  op, flags (bit 0 f64, bit 1 sizes up to 40), m, n, q, batch, tolerances, options, fn, fn_null, check_finite,
  then per argument: mutation byte (bit 7 mutates; low bits 0 = absent if optional), layout, mutation value,
  one byte per element of an input; then the NaN/Inf byte, its element, the optional int64 output's byte
  (nullspace, lstsq), and the in-place byte.
Re-run after changing fuzz_api.c's reading order: python3 tests/fuzz/make_api_corpus.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus-api")

# name, slots (rows, cols, is_input) with m, n, q, k = min(m, n); order = fuzz_api.c's OPS[]
OPS = [
    ("eigh", [("n", "n", 1), ("n", "1", 0), ("n", "n", 0)]),
    ("svd", [("m", "n", 1), ("k", "1", 0), ("m", "k", 0), ("n", "k", 0)]),
    ("rank", [("m", "n", 1)]),
    ("nullspace", [("m", "n", 1), ("n", "n", 0)]),
    ("project", [("m", "n", 1), ("n", "q", 1), ("n", "q", 0)]),
    ("project_basis", [("n", "k", 1), ("n", "q", 1), ("n", "q", 0)]),
    ("lstsq", [("m", "n", 1), ("m", "q", 1), ("n", "q", 0)]),
    ("eigh_backward", [("n", "1", 1), ("n", "n", 1), ("n", "1", 1), ("n", "n", 1), ("n", "n", 0)]),
    ("svd_backward", [("m", "k", 1), ("k", "1", 1), ("n", "k", 1), ("m", "k", 1), ("k", "1", 1), ("n", "k", 1), ("m", "n", 0)]),
    ("matfunc", [("n", "n", 1), ("n", "n", 0), ("n", "1", 0), ("n", "n", 0)]),
    ("matfunc_backward", [("n", "1", 1), ("n", "n", 1), ("n", "n", 1), ("n", "n", 0)]),
    ("regularizer", [("m", "n", 1), ("1", "1", 0), ("m", "n", 0)]),
]


def call(op, f64, m, n, q, batch, big=False, check_finite=True, nonfinite=None, fill=None, inplace=0):
    """Bytes for one valid call; nonfinite=(arg, element) puts an Inf there; fill(i) gives element bytes."""
    name, slots = OPS[op]
    dims = {"m": m, "n": n, "q": q, "k": min(m, n), "1": 1}
    b = [op, (1 if f64 else 0) | (2 if big else 0), m - 1, n - 1, q - 1, batch - 1,
         0,     # atol 0, rtol default
         0x12,  # full 0, which null, complement 0, mode mask, param 0 (fuzz_api.c decodes overlapping bits)
         0x10 if name.startswith("matfunc") else 0,  # fn exp for matfunc (any spectrum), else sqrt; regularizer spectral
         1,     # fn given
         1 if check_finite else 0]
    i = 0
    for r, c, is_in in slots:
        b += [1, 0, 0]  # present, dense, no mutation
        if is_in:
            for _ in range(batch * dims[r] * dims[c]):
                b.append(fill(i) if fill else (i * 67 + 11) % 256)
                i += 1
    if nonfinite:
        arg, e = nonfinite
        b += [arg << 2, e]  # low bits 0: inject; bit 7 clear: Inf (f32) / -Inf (f64)
    else:
        b += [1, 0]
    if name in ("nullspace", "lstsq"):
        b.append(1)  # the optional int64 output present (rank's is required: no byte)
    b.append(inplace)  # in-place variant: 1 = Y over X / F over A, 3 = V over A (matfunc)
    return bytes(b)


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {}
    for op, (name, _) in enumerate(OPS):
        for f64 in (0, 1):
            seeds[f"{name}_{'f64' if f64 else 'f32'}"] = call(op, f64, 3, 4 if name != "eigh" else 3, 2, 2)
    for op, sel in ((4, 1), (5, 1), (9, 1), (9, 3)):  # in place: Y = X, F = A, V = A
        for f64 in (0, 1):
            seeds[f"{OPS[op][0]}_inplace{sel}_{'f64' if f64 else 'f32'}"] = call(op, f64, 3, 4 if op != 9 else 3, 2, 2,
                                                                               inplace=sel)
    for op in (0, 1, 3):  # eigh (?syevd above 25), svd, nullspace at 30
        seeds[f"{OPS[op][0]}_n30"] = call(op, 1, 30, 30, 1, 1, big=True)
    # regression: project, f32 3×3, constant -3.46 with one Inf, input check off: sgesdd never returned
    seeds["regress_gesdd_inf_check_off"] = call(4, 0, 3, 3, 1, 1, check_finite=False, nonfinite=(0, 0),
                                                fill=lambda i: 0)
    for k, v in seeds.items():
        with open(os.path.join(OUT, k), "wb") as fh:
            fh.write(v)
    print(f"wrote {len(seeds)} seeds to {OUT}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the seed corpus for fuzz_npy into tests/fuzz/corpus/ (deterministic, standard library only).

Valid files: format v1/v2/v3, f4/f8, little/big endian, C and Fortran order, 0-d, empty and 3-d shapes.
Tricky ones: each is a small step away from a valid file (truncated payload, bad magic, header length past
the end, huge or negative dims, unterminated dict, duplicate keys, no trailing newline, ...). The parser must
reject or accept each one cleanly; test_npy / test_reliability check the verdicts, the fuzzer starts here.
Re-run after changing it: python3 tests/fuzz/make_corpus.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")


def header(descr, fortran, shape, raw=None):
    if raw is not None:
        return raw
    if len(shape) == 1:
        s = "(%d,)" % shape[0]
    else:
        s = "(" + ", ".join(str(d) for d in shape) + ")"
    return "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, "True" if fortran else "False", s)


def npy(descr="<f8", fortran=False, shape=(2, 3), version=1, raw_header=None, payload=None, pad=True):
    h = header(descr, fortran, shape, raw_header).encode("latin1")
    pre = 10 if version == 1 else 12
    if pad:
        total = (pre + len(h) + 1 + 63) // 64 * 64
        h = h + b" " * (total - pre - len(h) - 1) + b"\n"
    magic = b"\x93NUMPY" + bytes([version, 0])
    hl = struct.pack("<H", len(h)) if version == 1 else struct.pack("<I", len(h))
    if payload is None:
        count = 1
        for d in shape:
            count *= max(d, 0)
        fmt = descr[0].replace("|", "<").replace("=", "<") + ("f" if descr[-1] == "4" else "d")
        payload = b"".join(struct.pack(fmt, 0.5 * i - 1.0) for i in range(count))
    return magic + hl + h + payload


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {
        # valid
        "v1_f8_c_2x3.npy": npy(),
        "v1_f4_c_2x3.npy": npy("<f4"),
        "v1_f8_f_2x3.npy": npy(fortran=True),
        "v1_f4_f_3x2x2.npy": npy("<f4", True, (3, 2, 2)),
        "v2_f8_c_4.npy": npy(shape=(4,), version=2),
        "v2_f4_f_2x2.npy": npy("<f4", True, (2, 2), version=2),
        "v3_f8_c_1x1.npy": npy(shape=(1, 1), version=3),
        "v1_be_f8_2x2.npy": npy(">f8", False, (2, 2)),
        "v1_be_f4_f_2x3.npy": npy(">f4", True, (2, 3)),
        "v1_scalar_f8.npy": npy(shape=()),
        "v1_empty_f4_0x3.npy": npy("<f4", False, (0, 3)),
        "v1_f8_8d.npy": npy(shape=(1, 2, 1, 1, 2, 1, 1, 1)),
        "v1_nopad.npy": npy(pad=False),
        "v1_dq_keys.npy": npy(raw_header='{"descr": "<f8", "shape": (2,), "fortran_order": False}', shape=(2,)),
        # invalid
        "bad_magic.npy": b"\x93NUMPX" + npy()[6:],
        "bad_version.npy": npy()[:6] + b"\x09\x00" + npy()[8:],
        "trunc_payload.npy": npy()[:-5],
        "trunc_header.npy": npy()[:40],
        "hlen_past_end.npy": npy()[:8] + b"\xff\xff" + npy()[10:],
        "v2_hlen_huge.npy": npy(version=2)[:8] + b"\xff\xff\xff\x7f" + npy(version=2)[12:],
        "int_dtype.npy": npy(descr="<i8", payload=b"\0" * 48),
        "complex_dtype.npy": npy(descr="<c16", payload=b"\0" * 96),
        "neg_dim.npy": npy(raw_header="{'descr': '<f8', 'fortran_order': False, 'shape': (2, -3), }", payload=b""),
        "huge_dims.npy": npy(raw_header="{'descr': '<f8', 'fortran_order': False, 'shape': (9223372036854775807, 9223372036854775807), }", payload=b""),
        "dim_digits.npy": npy(raw_header="{'descr': '<f8', 'fortran_order': False, 'shape': (184467440737095516160,), }", payload=b""),
        "ndim9.npy": npy(raw_header="{'descr': '<f8', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", payload=b"\0" * 8),
        "unterminated.npy": npy(raw_header="{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3", payload=b""),
        "dup_keys.npy": npy(raw_header="{'descr': '<f8', 'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", payload=b"\0" * 16),
        "missing_shape.npy": npy(raw_header="{'descr': '<f8', 'fortran_order': False, }", payload=b""),
        "bool_junk.npy": npy(raw_header="{'descr': '<f8', 'fortran_order': Maybe, 'shape': (2,), }", payload=b"\0" * 16),
        "long_descr.npy": npy(raw_header="{'descr': '" + "<" * 200 + "f8', 'fortran_order': False, 'shape': (1,), }", payload=b"\0" * 8),
        "nul_in_header.npy": npy(raw_header="{'descr': '<f8\0', 'fortran_order': False, 'shape': (1,), }", payload=b"\0" * 8),
        "empty.npy": b"",
        "magic_only.npy": b"\x93NUMPY",
    }
    for name, data in sorted(seeds.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(seeds), OUT))


if __name__ == "__main__":
    main()

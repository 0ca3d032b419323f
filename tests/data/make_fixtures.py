"""Writes the .npy interop fixtures read by tests/test_npy.c (run once; the outputs are committed).
Values follow v = 100*i + 10*j + k + 0.25 over the multi-index so the C test can derive them."""
import os
import numpy as np
from numpy.lib import format as npf

here = os.path.dirname(os.path.abspath(__file__))

def idx_array(shape, dtype):
    a = np.zeros(shape, dtype=dtype)
    for ix in np.ndindex(*shape):
        v = 0.25
        for d, i in enumerate(reversed(ix)):
            v += i * 10 ** d
        a[ix] = v
    return a

def save(name, a, version=None):
    with open(os.path.join(here, name), "wb") as f:
        npf.write_array(f, a, version=version)

save("c_f8_2x3.npy", idx_array((2, 3), "<f8"))
save("f_f4_3x2x4.npy", np.asfortranarray(idx_array((3, 2, 4), "<f4")))
save("be_f8_2x2.npy", idx_array((2, 2), ">f8"))
save("be_f4_fortran_2x3.npy", np.asfortranarray(idx_array((2, 3), ">f4")))
save("v2_f8_3.npy", idx_array((3,), "<f8"), version=(2, 0))
save("v3_f4_2x2.npy", idx_array((2, 2), "<f4"), version=(3, 0))
save("scalar_f8.npy", np.array(3.25))
save("empty_f4_0x3.npy", np.zeros((0, 3), "<f4"))
save("i8_2.npy", np.array([1, 2], "<i8"))
save("c16_2.npy", np.array([1 + 2j, 3], "<c16"))

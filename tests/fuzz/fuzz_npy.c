/* libFuzzer harness over sg_npy_parse (the in-memory .npy parser behind sg_npy_read and the CLI).
 * Built by scripts/fuzz (clang -fsanitize=fuzzer,address,undefined); seeds in tests/fuzz/corpus/.
 * Besides "no crash, no sanitizer report", it checks the parser's contract on every input:
 *  - success: 0 <= ndim <= 8, every dim >= 0, known dtype, and data holds prod(shape)·itemsize bytes
 *    (every byte is read, so a short allocation is an ASan report);
 *  - failure: a non-empty, NUL-terminated message and out->data == NULL (nothing leaks: LeakSanitizer);
 *  - the result does not depend on the error buffer (NULL, 1 byte or large). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "specgrad.h"

#define CHECK(c)                                                                                        \
    do {                                                                                                \
        if (!(c)) {                                                                                     \
            fprintf(stderr, "fuzz_npy: contract violated: %s (%s:%d)\n", #c, __FILE__, __LINE__);       \
            abort();                                                                                    \
        }                                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sg_array a;
    char err[160];
    memset(err, 'x', sizeof err);
    sg_status st = sg_npy_parse(data, size, &a, err, sizeof err);
    if (st == SG_OK) {
        CHECK(a.ndim >= 0 && a.ndim <= 8);
        CHECK(a.dtype == SG_F32 || a.dtype == SG_F64);
        size_t count = 1;
        for (int d = 0; d < a.ndim; d++) {
            CHECK(a.shape[d] >= 0);
            count *= (size_t)a.shape[d];
        }
        size_t bytes = count * (a.dtype == SG_F32 ? 4 : 8);
        CHECK(bytes <= size); /* the payload came from the input */
        CHECK(a.data != NULL);
        volatile unsigned char sink = 0;
        for (size_t i = 0; i < bytes; i++) sink ^= ((const unsigned char *)a.data)[i];
        (void)sink;
    } else {
        CHECK(memchr(err, 0, sizeof err) != NULL);
        CHECK(err[0] != 0);
        CHECK(a.data == NULL);
    }
    sg_array_free(&a);

    /* Same verdict with no error buffer and with a 1-byte one (truncation path). */
    sg_array b;
    char tiny[1] = {'x'};
    CHECK(sg_npy_parse(data, size, &b, NULL, 0) == st);
    sg_array_free(&b);
    CHECK(sg_npy_parse(data, size, &b, tiny, sizeof tiny) == st);
    CHECK(tiny[0] == 0);
    sg_array_free(&b);
    return 0;
}

/* Pieces shared by the kernel headers (linalg_kernels.cuh, grad_kernels.cuh), which are also compiled
   as host C++ by the CUDA-on-CPU emulation test (tests/emu/cuda_emu.h): keep it free of toolkit headers. */
#ifndef SG_KERNEL_COMMON_CUH
#define SG_KERNEL_COMMON_CUH
#include <stdint.h>

/* Dynamic shared memory of a kernel: on the GPU exactly `extern __shared__ __align__(16) unsigned char
   name[]`. The CUDA-on-CPU emulation (tests/emu/cuda_emu.h) defines it first, binding name to a buffer of
   exactly the launch's byte count, so that reads past it are caught by ASan/valgrind (an extern array
   declaration cannot be bound to a per-launch allocation). */
#ifndef SG_DYN_SMEM
#define SG_DYN_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

/* Every dynamic shared-memory size is rounded up to 16 bytes. ptxas may merge an array's last scalar loads
   into one 16-byte LDS that reads past the last element used: in k_lstsq at k = 33 floats, an LDS.128 at
   h[32] read 12 bytes past the allocation, and compute-sanitizer memcheck aborted the launch (H200, CUDA
   13.0, 2026-11-30). Harmless on the hardware, but the sizes must make it legal. (The emulator refuses
   other sizes.) */
__host__ __device__ constexpr size_t sg_smem_round(size_t bytes) { return (bytes + 15) & ~(size_t)15; }

/* A deferred NaN/Inf scan (sg_cuda_finite_queue) queued before the launch found a non-finite input (one of
   its nskip flags is not ~0): guarded kernels write nothing to user memory (k_copy: zeros into a solver's
   staged input, nothing into an output; the fused backward kernels: nothing at all). */
__host__ __device__ inline bool sg_scan_failed(const unsigned long long *skip, int nskip)
{
    for (int i = 0; i < nskip; i++)
        if (skip[i] != ~0ull) return true;
    return false;
}

/* Packed index e of a batch of rows×cols matrices (per = rows·cols) → matrix b, column j, row i. A 64-bit
   division is a subroutine of ~70 instructions on the GPU, two per element dominated the copy and scan kernels
   (they are memory-bound with a budget of a few dozen instructions per element); 32-bit divisions are a few.
   narrow: every index of the launch is below 2³² (decided once per launch: total ≤ UINT32_MAX). */
__host__ __device__ inline void sg_split3(int64_t e, int64_t rows, int64_t per, bool narrow, int64_t *b, int64_t *j,
                                          int64_t *i)
{
    if (narrow) {
        const uint32_t ue = (uint32_t)e, up = (uint32_t)per, ur = (uint32_t)rows, ub = ue / up, r = ue - ub * up,
                       uj = r / ur;
        *b = ub, *j = uj, *i = r - uj * ur;
    } else {
        const int64_t bb = e / per, r = e - bb * per, jj = r / rows;
        *b = bb, *j = jj, *i = r - jj * rows;
    }
}
#define SG_NARROW(total) ((total) <= (int64_t)UINT32_MAX)
__host__ __device__ inline int sg_imin(int a, int b) { return a < b ? a : b; }

/* Walks e = t, t + s, t + 2s, ... over the packed index space of a batch of rows×cols items, keeping
   (i, c, mt) = (row, column, item) of e without a division per step: the step s is split once into
   (dm, dc, di) and each step adds it with one carry per digit (di < rows, dc < cols, so one suffices). */
struct SgWalk {
    int i, c, mt, di, dc, dm, rows, cols;
    __host__ __device__ SgWalk(int e, int s, int rows_, int cols_) : rows(rows_), cols(cols_)
    {
        const int rc = rows * cols;
        mt = e / rc, c = (e - mt * rc) / rows, i = e - mt * rc - c * rows;
        dm = s / rc, dc = (s - dm * rc) / rows, di = s - dm * rc - dc * rows;
    }
    __host__ __device__ void next()
    {
        i += di;
        if (i >= rows) i -= rows, c++;
        c += dc;
        if (c >= cols) c -= cols, mt++;
        mt += dm;
    }
};

/* Grid for a grid-stride loop over `work` items: ceil(work / threads) blocks, at least 1, at most
   max_blocks (a multiple of the SM count; the host code and the emulator test both size launches here). */
inline unsigned sg_grid_capped(int64_t work, int threads, int64_t max_blocks)
{
    int64_t g = (work + threads - 1) / threads;
    if (max_blocks < 1) max_blocks = 1;
    return (unsigned)(g < 1 ? 1 : g > max_blocks ? max_blocks : g);
}
#endif

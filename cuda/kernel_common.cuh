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

/* Grid for a grid-stride loop over `work` items: ceil(work / threads) blocks, at least 1, at most
   max_blocks (a multiple of the SM count; the host code and the emulator test both size launches here). */
inline unsigned sg_grid_capped(int64_t work, int threads, int64_t max_blocks)
{
    int64_t g = (work + threads - 1) / threads;
    if (max_blocks < 1) max_blocks = 1;
    return (unsigned)(g < 1 ? 1 : g > max_blocks ? max_blocks : g);
}
#endif

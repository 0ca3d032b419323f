/* Prelude under which g++ compiles the cuda/ sources for the emulated device (forced with -include; the launches
   K<<<grid, block, smem, stream>>>(args) are first rewritten by tests/emu/rewrite_launches.pl into
   sg_emu_cfg(grid, block, smem, stream).go("K", K, args)). The toolkit's headers give the real types and
   prototypes (implemented by tests/emu/fake_cuda.cpp); cuda_emu.h runs the kernels on the CPU. A launch is
   checked as the GPU checks it (configuration, dynamic shared memory against the kernel's limit), then
   queued on its stream; when it runs, every pointer argument must be device-addressable memory, else the
   launch faults with cudaErrorIllegalAddress instead of reading host memory a GPU could not reach. */
#ifndef SG_DEVICE_EMU_H
#define SG_DEVICE_EMU_H
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __align__
#undef __shared__
#define SG_EMU_TOOLKIT_DIM3 1
#include "cuda_emu.h"
#include "fake_cuda.h"

#include <stdlib.h>
#include <string.h>

#include <type_traits>

/* The toolkit declares these kernel-pointer overloads for nvcc only. */
template <class... P> cudaError_t cudaFuncSetAttribute(void (*k)(P...), cudaFuncAttribute a, int v)
{
    return cudaFuncSetAttribute((const void *)k, a, v);
}
template <class... P>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, void (*k)(P...), int threads, size_t smem)
{
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, (const void *)k, threads, smem);
}

/* Kernel schedule (cuda_emu.h): SG_EMU_MODE=forward (default) | reverse | random | free. */
inline void sg_emu_set_mode_once()
{
    static bool done = false;
    if (done) return;
    done = true;
    const char *m = getenv("SG_EMU_MODE");
    emu::set_mode(!m || !strcmp(m, "forward") ? emu::FORWARD
                  : !strcmp(m, "reverse")     ? emu::REVERSE
                  : !strcmp(m, "random")      ? emu::RANDOM
                                              : emu::FREE);
}

template <class E> inline bool sg_emu_arg_ok(const E &x)
{
    if constexpr (std::is_pointer_v<E>) return !x || sgemu::device_addressable((const void *)x);
    else return true;
}

struct sg_emu_cfg {
    dim3 grid, block;
    size_t smem;
    cudaStream_t s;
    sg_emu_cfg(dim3 g, dim3 b, size_t sm = 0, cudaStream_t st = 0) : grid(g), block(b), smem(sm), s(st) {}

    template <class... P, class... A> void go(const char *name, void (*k)(P...), A &&...args)
    {
        sg_emu_set_mode_once();
        char why[160];
        if (grid.x == 0 || block.x == 0 || block.x > 1024 || grid.y != 1 || grid.z != 1 || block.y != 1 ||
            block.z != 1) {
            snprintf(why, sizeof why, "grid %u×%u×%u, block %u×%u×%u", grid.x, grid.y, grid.z, block.x, block.y, block.z);
            sgemu::launch_error(cudaErrorInvalidConfiguration, name, why);
            return;
        }
        const size_t lim = sgemu::dyn_smem_limit((const void *)k);
        if (smem > lim) {
            snprintf(why, sizeof why, "%zu bytes of dynamic shared memory, the kernel's limit is %zu", smem, lim);
            sgemu::launch_error(cudaErrorInvalidValue, name, why);
            return;
        }
        auto params = std::make_shared<std::tuple<std::decay_t<P>...>>(std::forward<A>(args)...);
        const dim3 g = grid, b = block;
        const size_t sm = smem;
        sgemu::enqueue(s, name, [params, g, b, sm, k, name]() -> cudaError_t {
            const bool ok = std::apply([](const auto &...x) { return (sg_emu_arg_ok(x) && ... && true); }, *params);
            if (!ok) {
                fprintf(stderr, "fake_cuda: %s: a pointer argument is not device memory\n", name);
                return cudaErrorIllegalAddress;
            }
            std::apply([&](const auto &...x) { emu_launch(g, b, sm, k, x...); }, *params);
            return cudaSuccess;
        });
    }
};
#endif

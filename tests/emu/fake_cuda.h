/* The emulated device's hooks, shared by tests/emu/fake_cuda.cpp (a CPU stand-in for the parts of cudart,
   cuSOLVER and cuBLAS the backend calls) and tests/emu/device_emu.h (the prelude under which g++ compiles
   the cuda/ sources). See fake_cuda.cpp for what is modelled. */
#ifndef SG_FAKE_CUDA_H
#define SG_FAKE_CUDA_H
#include <cuda_runtime_api.h>

#include <functional>

/* For tests of the emulated device itself (tests/emu/test_emu_device.c; C linkage). */
extern "C" {
void sg_emu_set_capacity(size_t bytes);   /* device memory capacity from now on */
unsigned long sg_emu_oom_refusals(void); /* allocations refused for lack of capacity so far */
unsigned long sg_emu_calls(const char *api); /* calls so far of cudaStreamSynchronize, cudaMemGetInfo,
                                                cudaFuncSetAttribute, cudaOccupancyMaxActiveBlocksPerMultiprocessor */
}

namespace sgemu {
/* Queue fn on stream s (in order; run when s is synchronised, or earlier by a call that implies it).
   what names the work in error messages. fn returns the asynchronous error the work raises (sticky). */
void enqueue(cudaStream_t s, const char *what, std::function<cudaError_t()> fn);
/* A launch-time error (bad configuration): returned by the next cudaGetLastError. */
void launch_error(cudaError_t e, const char *what, const char *detail);
/* p (non-NULL) lies in memory a kernel may address: device, managed or pinned host memory, alive. */
bool device_addressable(const void *p);
/* Dynamic shared memory a launch of this kernel may use (48 KB unless raised by cudaFuncSetAttribute). */
size_t dyn_smem_limit(const void *kernel);
} // namespace sgemu
#endif

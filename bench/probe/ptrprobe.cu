// Device facts behind sg_cuda_check_ptr (cuda/context.cu) and the fused kernels' shared-memory use: what
// cudaPointerGetAttributes reports for each allocation kind frameworks hand us (cudaMalloc, stream-ordered
// pools, VMM as in torch's expandable segments, managed, pinned, registered, pageable), and what the
// library does with it: sg_rank on a 1×1 matrix there in device-memory mode (accepted and run, or refused
// with SG_ERR_ARG). Run by scripts/gpu-check; prints a table, exit 0 unless no device.
#include <cuda.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "specgrad.h"

static int dev = 0;
static sg_ctx *ctx;
static int64_t *d_rank;

/* what the library makes of p: a zeroed 1×1 float matrix there, sg_rank in device-memory mode */
static const char *verdict(void *p, bool pageable)
{
    static char buf[256];
    if (pageable) memset(p, 0, sizeof(float));
    else if (cudaMemset(p, 0, sizeof(float)) != cudaSuccess) {
        cudaGetLastError();
        return "(could not zero it)";
    }
    sg_mat A = sg_mat_dense(p, SG_F32, 1, 1, 1);
    sg_status s = sg_rank(ctx, &A, 0, -1, d_rank);
    if (s == SG_OK) return "accepted (ran)";
    snprintf(buf, sizeof buf, "%s: %s", sg_status_string(s), sg_last_error(ctx));
    return buf;
}

static void show(const char *what, void *p)
{
    cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) {
        cudaGetLastError();
        printf("| %-30s | error: %s | | not probed |\n", what, cudaGetErrorString(e));
        return;
    }
    printf("| %-30s | type %d, device %d | devicePointer %s | %s |\n", what, (int)a.type, a.device,
           a.devicePointer == p ? "== p" : (a.devicePointer ? "alias" : "null"),
           verdict(p, a.type == cudaMemoryTypeUnregistered));
}

int main()
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        printf("ptrprobe: no device\n");
        return 2;
    }
    cudaSetDevice(dev);
    cudaFree(0);
    cudaDeviceProp pr;
    cudaGetDeviceProperties(&pr, dev);
    int canhp = 0;
    cudaDeviceGetAttribute(&canhp, cudaDevAttrCanUseHostPointerForRegisteredMem, dev);
    if (sg_create(&ctx, SG_BACKEND_CUDA) != SG_OK || sg_set_memspace(ctx, SG_MEM_DEVICE) != SG_OK ||
        cudaMalloc((void **)&d_rank, sizeof(int64_t)) != cudaSuccess) {
        printf("ptrprobe: no CUDA context: %s\n", ctx ? sg_last_error(ctx) : "sg_create failed");
        return 1;
    }
    printf("%s: sm_%d%d, %d SMs, shared memory opt-in %zu B/block, %zu B/SM; pageableMemoryAccess %d, "
           "canUseHostPointerForRegisteredMem %d\n\n",
           pr.name, pr.major, pr.minor, pr.multiProcessorCount, pr.sharedMemPerBlockOptin, pr.sharedMemPerMultiprocessor,
           pr.pageableMemoryAccess, canhp);
    printf("| allocation | cudaPointerGetAttributes | devicePointer | sg_rank there (device mode) |\n|---|---|---|---|\n");
    void *d = nullptr;
    cudaMalloc(&d, 1 << 20);
    show("cudaMalloc", d);
    show("cudaMalloc + 4096", (char *)d + 4096);
    cudaStream_t s;
    cudaStreamCreate(&s);
    void *da = nullptr;
    if (cudaMallocAsync(&da, 1 << 20, s) == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess) {
        show("cudaMallocAsync (default pool)", da);
        show("cudaMallocAsync + 8", (char *)da + 8);
    }
    cudaMemPool_t pool;
    cudaMemPoolProps pp = {};
    pp.allocType = cudaMemAllocationTypePinned;
    pp.location.type = cudaMemLocationTypeDevice;
    pp.location.id = dev;
    void *dp = nullptr;
    if (cudaMemPoolCreate(&pool, &pp) == cudaSuccess && cudaMallocFromPoolAsync(&dp, 1 << 20, pool, s) == cudaSuccess &&
        cudaStreamSynchronize(s) == cudaSuccess)
        show("cudaMallocFromPoolAsync", dp);
    CUmemAllocationProp vp = {};
    vp.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    vp.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    vp.location.id = dev;
    size_t gran = 0;
    CUmemGenericAllocationHandle h;
    CUdeviceptr va = 0;
    if (cuMemGetAllocationGranularity(&gran, &vp, CU_MEM_ALLOC_GRANULARITY_MINIMUM) == CUDA_SUCCESS &&
        cuMemCreate(&h, gran, &vp, 0) == CUDA_SUCCESS && cuMemAddressReserve(&va, gran, 0, 0, 0) == CUDA_SUCCESS &&
        cuMemMap(va, gran, 0, h, 0) == CUDA_SUCCESS) {
        CUmemAccessDesc ad = {};
        ad.location = vp.location;
        ad.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        cuMemSetAccess(va, gran, &ad, 1);
        show("cuMemCreate + cuMemMap (VMM)", (void *)va);
        show("VMM + 256", (void *)(va + 256));
    } else
        printf("| VMM | setup failed | | |\n");
    void *m = nullptr, *ph = nullptr, *wc = nullptr;
    cudaMallocManaged(&m, 4096);
    show("cudaMallocManaged", m);
    cudaMallocHost(&ph, 4096);
    show("cudaMallocHost", ph);
    cudaHostAlloc(&wc, 4096, cudaHostAllocWriteCombined);
    show("cudaHostAlloc(WriteCombined)", wc);
    void *hr = aligned_alloc(4096, 8192);
    cudaHostRegister(hr, 8192, cudaHostRegisterDefault);
    show("cudaHostRegister", hr);
    void *pm = malloc(4096);
    show("malloc", pm);
    double st[4];
    show("stack", st);
    sg_destroy(ctx);
    return 0;
}

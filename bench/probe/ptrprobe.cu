// Device facts behind sg_cuda_check_ptr (cuda/context.cu) and the fused kernels' shared-memory use: what
// cudaPointerGetAttributes reports for each allocation kind frameworks hand us (cudaMalloc, stream-ordered
// pools, VMM as in torch's expandable segments, managed, pinned, registered, pageable), and whether
// sg_cuda_check_ptr's rule accepts it. Run by scripts/gpu-check; prints a table, exit 0 unless no device.
#include <cuda.h>
#include <cuda_runtime.h>
#include <cstdio>
#include <cstdlib>

static int dev = 0, pageable = 0;

/* sg_cuda_check_ptr's rule, restated (keep in step with cuda/context.cu) */
static const char *verdict(const cudaPointerAttributes &a, const void *p)
{
    switch (a.type) {
    case cudaMemoryTypeManaged: return "accept";
    case cudaMemoryTypeDevice: return a.device == dev ? "accept" : "refuse (other GPU)";
    case cudaMemoryTypeHost: return a.devicePointer == p ? "accept" : "refuse (aliased pinned)";
    default: return pageable ? "accept (pageable access)" : "refuse (host)";
    }
}

static void show(const char *what, const void *p)
{
    cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) {
        printf("| %-30s | error: %s | | refuse |\n", what, cudaGetErrorString(e));
        cudaGetLastError();
        return;
    }
    printf("| %-30s | type %d, device %d | devicePointer %s | %s |\n", what, (int)a.type, a.device,
           a.devicePointer == p ? "== p" : (a.devicePointer ? "alias" : "null"), verdict(a, p));
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
    pageable = pr.pageableMemoryAccess;
    printf("%s: sm_%d%d, %d SMs, shared memory opt-in %zu B/block, %zu B/SM; pageableMemoryAccess %d, "
           "canUseHostPointerForRegisteredMem %d\n\n",
           pr.name, pr.major, pr.minor, pr.multiProcessorCount, pr.sharedMemPerBlockOptin, pr.sharedMemPerMultiprocessor,
           pr.pageableMemoryAccess, canhp);
    printf("| allocation | cudaPointerGetAttributes | devicePointer | sg_cuda_check_ptr |\n|---|---|---|---|\n");
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
    return 0;
}

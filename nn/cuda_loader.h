// The CUDA driver API and cuBLAS entry points nn uses, resolved with dlsym
// from libraries opened at run time, so nothing links against CUDA and a
// machine without it runs the same binary. The types are declared here
// (ABI-compatible with cuda.h and cublas_api.h) so no CUDA headers are needed.
#ifndef RS_CUDA_LOADER_H
#define RS_CUDA_LOADER_H

#include <stddef.h>

typedef int CUresult;
typedef int CUdevice;
typedef void* CUcontext;
typedef void* CUmodule;
typedef void* CUfunction;
typedef void* CUstream;
typedef unsigned long long CUdeviceptr;
typedef void* cublasHandle_t;

typedef struct rs_cuda {
	void* driver;
	void* blas;
	char blas_path[256];
	CUresult (*cuInit)(unsigned);
	CUresult (*cuDriverGetVersion)(int*);
	CUresult (*cuDeviceGetCount)(int*);
	CUresult (*cuDeviceGet)(CUdevice*, int);
	CUresult (*cuDeviceGetName)(char*, int, CUdevice);
	CUresult (*cuDeviceTotalMem_v2)(size_t*, CUdevice);
	CUresult (*cuDeviceGetAttribute)(int*, int, CUdevice);
	CUresult (*cuDeviceGetPCIBusId)(char*, int, CUdevice);
	CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice);
	CUresult (*cuDevicePrimaryCtxRelease_v2)(CUdevice);
	CUresult (*cuCtxSetCurrent)(CUcontext);
	CUresult (*cuCtxSynchronize)(void);
	CUresult (*cuMemGetInfo_v2)(size_t*, size_t*);
	CUresult (*cuModuleLoadData)(CUmodule*, const void*);
	CUresult (*cuModuleUnload)(CUmodule);
	CUresult (*cuModuleGetFunction)(CUfunction*, CUmodule, const char*);
	CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void**, void**);
	CUresult (*cuMemAlloc_v2)(CUdeviceptr*, size_t);
	CUresult (*cuMemFree_v2)(CUdeviceptr);
	CUresult (*cuMemAllocHost_v2)(void**, size_t);
	CUresult (*cuMemFreeHost)(void*);
	CUresult (*cuMemcpyHtoDAsync_v2)(CUdeviceptr, const void*, size_t, CUstream);
	CUresult (*cuMemcpyDtoHAsync_v2)(void*, CUdeviceptr, size_t, CUstream);
	CUresult (*cuMemcpyDtoDAsync_v2)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
	CUresult (*cuMemsetD32Async)(CUdeviceptr, unsigned, size_t, CUstream);
	CUresult (*cuStreamCreate)(CUstream*, unsigned);
	CUresult (*cuStreamDestroy_v2)(CUstream);
	CUresult (*cuStreamSynchronize)(CUstream);
	CUresult (*cuGetErrorName)(CUresult, const char**);
	CUresult (*cuGetErrorString)(CUresult, const char**);
	int (*cublasCreate_v2)(cublasHandle_t*);
	int (*cublasDestroy_v2)(cublasHandle_t);
	int (*cublasSetStream_v2)(cublasHandle_t, CUstream);
	int (*cublasSetMathMode)(cublasHandle_t, int);
	int (*cublasGetVersion_v2)(cublasHandle_t, int*);
	int (*cublasSgemm_v2)(cublasHandle_t, int, int, int, int, int, const float*, const float*, int, const float*, int, const float*, float*, int);
	int (*cublasSgemmStridedBatched)(cublasHandle_t, int, int, int, int, int, const float*, const float*, int, long long, const float*, int, long long, const float*, float*, int, long long, int);
	// Mixed-precision products (bf16 operands, fp32 output and accumulation):
	// cublasGemmEx and its strided-batched form, with cudaDataType and
	// cublasComputeType_t as ints.
	int (*cublasGemmEx)(cublasHandle_t, int, int, int, int, int, const void*, const void*, int, int, const void*, int, int, const void*, void*, int, int, int, int);
	int (*cublasGemmStridedBatchedEx)(cublasHandle_t, int, int, int, int, int, const void*, const void*, int, int, long long, const void*, int, int, long long, const void*, void*, int, int, long long, int, int, int);
} rs_cuda;

// rs_cuda_open loads the driver library, then the first of the cuBLAS
// libraries that opens; NULL with a message in err when either fails.
rs_cuda* rs_cuda_open(const char* driver, const char* const* blas, int nblas, char* err, int errlen);
void rs_cuda_close(rs_cuda* c);
const char* rs_cuda_error_name(rs_cuda* c, CUresult r);

// rs_cuda_launch launches a one-dimensional grid; args holds each
// parameter's value in an 8-byte slot (little-endian, so 4-byte ints and
// floats sit in the slot's first bytes).
CUresult rs_cuda_launch(rs_cuda* c, CUfunction f, unsigned grid, unsigned block, CUstream s, int nargs, const unsigned long long* args);

// Callable wrappers: cgo cannot call through C function pointers.
static inline CUresult rs_cuInit(rs_cuda* c, unsigned a0) { return c->cuInit(a0); }
static inline CUresult rs_cuDriverGetVersion(rs_cuda* c, int* a0) { return c->cuDriverGetVersion(a0); }
static inline CUresult rs_cuDeviceGetCount(rs_cuda* c, int* a0) { return c->cuDeviceGetCount(a0); }
static inline CUresult rs_cuDeviceGet(rs_cuda* c, CUdevice* a0, int a1) { return c->cuDeviceGet(a0, a1); }
static inline CUresult rs_cuDeviceGetName(rs_cuda* c, char* a0, int a1, CUdevice a2) { return c->cuDeviceGetName(a0, a1, a2); }
static inline CUresult rs_cuDeviceTotalMem_v2(rs_cuda* c, size_t* a0, CUdevice a1) { return c->cuDeviceTotalMem_v2(a0, a1); }
static inline CUresult rs_cuDeviceGetPCIBusId(rs_cuda* c, char* a0, int a1, CUdevice a2) { return c->cuDeviceGetPCIBusId(a0, a1, a2); }
static inline CUresult rs_cuDeviceGetAttribute(rs_cuda* c, int* a0, int a1, CUdevice a2) { return c->cuDeviceGetAttribute(a0, a1, a2); }
static inline CUresult rs_cuDevicePrimaryCtxRetain(rs_cuda* c, CUcontext* a0, CUdevice a1) { return c->cuDevicePrimaryCtxRetain(a0, a1); }
static inline CUresult rs_cuDevicePrimaryCtxRelease_v2(rs_cuda* c, CUdevice a0) { return c->cuDevicePrimaryCtxRelease_v2(a0); }
static inline CUresult rs_cuCtxSetCurrent(rs_cuda* c, CUcontext a0) { return c->cuCtxSetCurrent(a0); }
static inline CUresult rs_cuCtxSynchronize(rs_cuda* c) { return c->cuCtxSynchronize(); }
static inline CUresult rs_cuMemGetInfo_v2(rs_cuda* c, size_t* a0, size_t* a1) { return c->cuMemGetInfo_v2(a0, a1); }
static inline CUresult rs_cuModuleLoadData(rs_cuda* c, CUmodule* a0, const void* a1) { return c->cuModuleLoadData(a0, a1); }
static inline CUresult rs_cuModuleUnload(rs_cuda* c, CUmodule a0) { return c->cuModuleUnload(a0); }
static inline CUresult rs_cuModuleGetFunction(rs_cuda* c, CUfunction* a0, CUmodule a1, const char* a2) { return c->cuModuleGetFunction(a0, a1, a2); }
static inline CUresult rs_cuLaunchKernel(rs_cuda* c, CUfunction a0, unsigned a1, unsigned a2, unsigned a3, unsigned a4, unsigned a5, unsigned a6, unsigned a7, CUstream a8, void** a9, void** a10) { return c->cuLaunchKernel(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10); }
static inline CUresult rs_cuMemAlloc_v2(rs_cuda* c, CUdeviceptr* a0, size_t a1) { return c->cuMemAlloc_v2(a0, a1); }
static inline CUresult rs_cuMemFree_v2(rs_cuda* c, CUdeviceptr a0) { return c->cuMemFree_v2(a0); }
static inline CUresult rs_cuMemAllocHost_v2(rs_cuda* c, void** a0, size_t a1) { return c->cuMemAllocHost_v2(a0, a1); }
static inline CUresult rs_cuMemFreeHost(rs_cuda* c, void* a0) { return c->cuMemFreeHost(a0); }
static inline CUresult rs_cuMemcpyHtoDAsync_v2(rs_cuda* c, CUdeviceptr a0, const void* a1, size_t a2, CUstream a3) { return c->cuMemcpyHtoDAsync_v2(a0, a1, a2, a3); }
static inline CUresult rs_cuMemcpyDtoHAsync_v2(rs_cuda* c, void* a0, CUdeviceptr a1, size_t a2, CUstream a3) { return c->cuMemcpyDtoHAsync_v2(a0, a1, a2, a3); }
static inline CUresult rs_cuMemcpyDtoDAsync_v2(rs_cuda* c, CUdeviceptr a0, CUdeviceptr a1, size_t a2, CUstream a3) { return c->cuMemcpyDtoDAsync_v2(a0, a1, a2, a3); }
static inline CUresult rs_cuMemsetD32Async(rs_cuda* c, CUdeviceptr a0, unsigned a1, size_t a2, CUstream a3) { return c->cuMemsetD32Async(a0, a1, a2, a3); }
static inline CUresult rs_cuStreamCreate(rs_cuda* c, CUstream* a0, unsigned a1) { return c->cuStreamCreate(a0, a1); }
static inline CUresult rs_cuStreamDestroy_v2(rs_cuda* c, CUstream a0) { return c->cuStreamDestroy_v2(a0); }
static inline CUresult rs_cuStreamSynchronize(rs_cuda* c, CUstream a0) { return c->cuStreamSynchronize(a0); }
static inline CUresult rs_cuGetErrorName(rs_cuda* c, CUresult a0, const char** a1) { return c->cuGetErrorName(a0, a1); }
static inline CUresult rs_cuGetErrorString(rs_cuda* c, CUresult a0, const char** a1) { return c->cuGetErrorString(a0, a1); }
static inline int rs_cublasCreate_v2(rs_cuda* c, cublasHandle_t* a0) { return c->cublasCreate_v2(a0); }
static inline int rs_cublasDestroy_v2(rs_cuda* c, cublasHandle_t a0) { return c->cublasDestroy_v2(a0); }
static inline int rs_cublasSetStream_v2(rs_cuda* c, cublasHandle_t a0, CUstream a1) { return c->cublasSetStream_v2(a0, a1); }
static inline int rs_cublasSetMathMode(rs_cuda* c, cublasHandle_t a0, int a1) { return c->cublasSetMathMode(a0, a1); }
static inline int rs_cublasGetVersion_v2(rs_cuda* c, cublasHandle_t a0, int* a1) { return c->cublasGetVersion_v2(a0, a1); }
static inline int rs_cublasSgemm_v2(rs_cuda* c, cublasHandle_t a0, int a1, int a2, int a3, int a4, int a5, const float* a6, const float* a7, int a8, const float* a9, int a10, const float* a11, float* a12, int a13) { return c->cublasSgemm_v2(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13); }
static inline int rs_cublasSgemmStridedBatched(rs_cuda* c, cublasHandle_t a0, int a1, int a2, int a3, int a4, int a5, const float* a6, const float* a7, int a8, long long a9, const float* a10, int a11, long long a12, const float* a13, float* a14, int a15, long long a16, int a17) { return c->cublasSgemmStridedBatched(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17); }

#endif

//go:build cgo && linux

#include "cuda_loader.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RS_MAX_ARGS 24

static int resolve(void* lib, const char* name, void** dst, char* err, int errlen, const char* libname) {
	*dst = dlsym(lib, name);
	if (*dst == NULL) {
		snprintf(err, errlen, "%s has no symbol %s", libname, name);
		return 0;
	}
	return 1;
}

#define RS_SYM(lib, libname, field) \
	if (!resolve(lib, #field, (void**)&c->field, err, errlen, libname)) goto fail

rs_cuda* rs_cuda_open(const char* driver, const char* const* blas, int nblas, char* err, int errlen) {
	rs_cuda* c = calloc(1, sizeof *c);
	if (c == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->driver = dlopen(driver, RTLD_NOW | RTLD_LOCAL);
	if (c->driver == NULL) {
		snprintf(err, errlen, "%s", dlerror());
		goto fail;
	}
	RS_SYM(c->driver, driver, cuInit);
	RS_SYM(c->driver, driver, cuDriverGetVersion);
	RS_SYM(c->driver, driver, cuDeviceGetCount);
	RS_SYM(c->driver, driver, cuDeviceGet);
	RS_SYM(c->driver, driver, cuDeviceGetName);
	RS_SYM(c->driver, driver, cuDeviceTotalMem_v2);
	RS_SYM(c->driver, driver, cuDeviceGetAttribute);
	RS_SYM(c->driver, driver, cuDeviceGetPCIBusId);
	RS_SYM(c->driver, driver, cuDevicePrimaryCtxRetain);
	RS_SYM(c->driver, driver, cuDevicePrimaryCtxRelease_v2);
	RS_SYM(c->driver, driver, cuCtxSetCurrent);
	RS_SYM(c->driver, driver, cuCtxSynchronize);
	RS_SYM(c->driver, driver, cuMemGetInfo_v2);
	RS_SYM(c->driver, driver, cuModuleLoadData);
	RS_SYM(c->driver, driver, cuModuleUnload);
	RS_SYM(c->driver, driver, cuModuleGetFunction);
	RS_SYM(c->driver, driver, cuLaunchKernel);
	RS_SYM(c->driver, driver, cuMemAlloc_v2);
	RS_SYM(c->driver, driver, cuMemFree_v2);
	RS_SYM(c->driver, driver, cuMemAllocHost_v2);
	RS_SYM(c->driver, driver, cuMemFreeHost);
	RS_SYM(c->driver, driver, cuMemcpyHtoDAsync_v2);
	RS_SYM(c->driver, driver, cuMemcpyDtoHAsync_v2);
	RS_SYM(c->driver, driver, cuMemcpyDtoDAsync_v2);
	RS_SYM(c->driver, driver, cuMemsetD32Async);
	RS_SYM(c->driver, driver, cuStreamCreate);
	RS_SYM(c->driver, driver, cuStreamDestroy_v2);
	RS_SYM(c->driver, driver, cuStreamSynchronize);
	RS_SYM(c->driver, driver, cuGetErrorName);
	RS_SYM(c->driver, driver, cuGetErrorString);
	{
		char tried[512] = "";
		for (int i = 0; i < nblas && c->blas == NULL; i++) {
			c->blas = dlopen(blas[i], RTLD_NOW | RTLD_LOCAL);
			if (c->blas != NULL) {
				snprintf(c->blas_path, sizeof c->blas_path, "%s", blas[i]);
			} else {
				size_t n = strlen(tried);
				snprintf(tried + n, sizeof tried - n, "%s%s", n ? "; " : "", dlerror());
			}
		}
		if (c->blas == NULL) {
			snprintf(err, errlen, "no cuBLAS library opens: %s", tried);
			goto fail;
		}
	}
	RS_SYM(c->blas, c->blas_path, cublasCreate_v2);
	RS_SYM(c->blas, c->blas_path, cublasDestroy_v2);
	RS_SYM(c->blas, c->blas_path, cublasSetStream_v2);
	RS_SYM(c->blas, c->blas_path, cublasSetMathMode);
	RS_SYM(c->blas, c->blas_path, cublasGetVersion_v2);
	RS_SYM(c->blas, c->blas_path, cublasSgemm_v2);
	RS_SYM(c->blas, c->blas_path, cublasSgemmStridedBatched);
	RS_SYM(c->blas, c->blas_path, cublasGemmEx);
	RS_SYM(c->blas, c->blas_path, cublasGemmStridedBatchedEx);
	return c;
fail:
	rs_cuda_close(c);
	return NULL;
}

void rs_cuda_close(rs_cuda* c) {
	if (c == NULL) return;
	// The libraries stay loaded: unloading the driver under live contexts
	// is undefined, and a process opens it at most a few times.
	free(c);
}

const char* rs_cuda_error_name(rs_cuda* c, CUresult r) {
	const char* name = NULL;
	if (c->cuGetErrorName(r, &name) != 0 || name == NULL) return "unknown CUDA error";
	return name;
}

CUresult rs_cuda_launch(rs_cuda* c, CUfunction f, unsigned grid, unsigned block, CUstream s, int nargs, const unsigned long long* args) {
	unsigned long long vals[RS_MAX_ARGS];
	void* ptrs[RS_MAX_ARGS];
	if (nargs > RS_MAX_ARGS) return 1; /* CUDA_ERROR_INVALID_VALUE */
	for (int i = 0; i < nargs; i++) {
		vals[i] = args[i];
		ptrs[i] = &vals[i];
	}
	return c->cuLaunchKernel(f, grid, 1, 1, block, 1, 1, 0, s, ptrs, NULL);
}

// A CPU stand-in for libcuda.so.1 and libcublas.so: the subset of the
// driver API and cuBLAS that nn's CUDA backend calls, with the kernels
// compiled from the same .cu files by g++. Device memory is host memory.
// A module's functions are the .entry names found in the PTX it is given,
// so a kernel missing from the committed PTX fails here as on a GPU.
// RS_EMU_DEVICES=0 in the environment makes it report no GPU;
// RS_EMU_MAX_BLOCK caps the threads per block (see cuLaunchKernel).
#include <pthread.h>

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "emu.h"

thread_local dim3 threadIdx;
thread_local dim3 blockIdx;
dim3 blockDim;
dim3 gridDim;

static pthread_barrier_t barrier;

void rs_emu_syncthreads() { pthread_barrier_wait(&barrier); }

#include "../elementwise.cu"
#include "../embedding.cu"
#include "../norm.cu"
#include "../optim.cu"
#include "../rnn.cu"
#include "../softmax.cu"

template <typename... A, size_t... I>
static void invoke(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<A*>(p[I])...);
}

template <typename... A>
static void (*trampoline(void (*)(A...)))(void*, void**) {
    return [](void* f, void** p) { invoke(reinterpret_cast<void (*)(A...)>(f), p, std::index_sequence_for<A...>{}); };
}

struct Kernel {
    void* fn;
    void (*call)(void*, void**);
};

#define K(name) {#name, {reinterpret_cast<void*>(name), trampoline(name)}}
static const std::map<std::string, Kernel> kernels = {
    K(relu_forward), K(relu_backward), K(gelu_forward), K(gelu_backward), K(gated_gelu_forward), K(gated_gelu_backward),
    K(sigmoid_forward), K(sigmoid_backward), K(tanh_forward), K(tanh_backward),
    K(add_forward), K(add_scaled), K(accumulate), K(accumulate_columns), K(column_partial), K(rmsnorm_dw_partial), K(copy_block), K(mean_heads),
    K(gate_mix_forward), K(gate_mix_backward), K(gate_mix_alpha), K(fill), K(mul_forward), K(mul_backward), K(mul_row_forward), K(mul_row_backward),
    K(scale_forward), K(scale_backward), K(dropout_mask), K(dropout_apply), K(to_bf16),
    K(embedding_forward), K(embedding_backward), K(position_bias_forward), K(position_bias_backward),
    K(rmsnorm_forward), K(rmsnorm_backward_x), K(add_rmsnorm_forward), K(add_rmsnorm_backward_x),
    K(adamw_chunks), K(sum_squares_chunks), K(scale_chunks),
    K(gru_gate_forward), K(gru_gate_backward), K(lstm_gate_forward), K(lstm_gate_backward),
    K(attention_softmax), K(attention_softmax_backward), K(split_heads), K(merge_heads), K(cross_entropy_forward), K(cross_entropy_mean), K(cross_entropy_backward),
};
#undef K

struct Module {
    std::set<std::string> entries;
};

static bool noDevice() {
    const char* v = getenv("RS_EMU_DEVICES");
    return v && std::string(v) == "0";
}

// Host-to-device copies are queued, as a GPU's are, and run at the next
// call that touches the stream: a caller that rewrites the host bytes of a
// copy before then, as a GPU could still be reading them, gets the new
// bytes on the device and fails its checks, where copying at once would
// hide the race.
struct PendingCopy {
    void* dst;
    const void* src;
    size_t n;
};
static std::mutex copiesMu;
static std::vector<PendingCopy> pendingCopies;

static void runCopies() {
    std::lock_guard<std::mutex> l(copiesMu);
    for (const auto& c : pendingCopies) memcpy(c.dst, c.src, c.n);
    pendingCopies.clear();
}

static std::mutex allocMu;
static std::map<uint64_t, size_t> allocations;

extern "C" {

typedef unsigned long long CUdeviceptr;

int cuInit(unsigned) { return noDevice() ? 100 : 0; }  // CUDA_ERROR_NO_DEVICE
int cuDriverGetVersion(int* v) { *v = 13000; return 0; }
int cuDeviceGetCount(int* n) { *n = noDevice() ? 0 : 1; return 0; }
int cuDeviceGet(int* d, int ordinal) { if (ordinal != 0) return 101; *d = 0; return 0; }  // CUDA_ERROR_INVALID_DEVICE
int cuDeviceGetName(char* name, int len, int) { snprintf(name, len, "CPU emulator"); return 0; }
int cuDeviceTotalMem_v2(size_t* b, int) { *b = size_t(1) << 32; return 0; }
int cuDeviceGetAttribute(int* v, int attr, int) {
    switch (attr) {
    case 75: *v = 9; return 0;  // compute capability major
    case 76: *v = 0; return 0;  // minor
    case 16: *v = 132; return 0;  // multiprocessors
    }
    *v = 0;
    return 0;
}
int cuDeviceGetPCIBusId(char* id, int len, int) { snprintf(id, len, "00000000:00:00.0"); return 0; }
// Handles are addresses of real objects: Go's collector checks pointer
// slots, and a small integer there is an invalid pointer.
static int contextObject, streamObject, blasObject;

int cuDevicePrimaryCtxRetain(void** ctx, int) { *ctx = &contextObject; return 0; }
int cuDevicePrimaryCtxRelease_v2(int) { return 0; }
int cuCtxSetCurrent(void*) { return 0; }
int cuCtxSynchronize() { runCopies(); return 0; }
int cuMemGetInfo_v2(size_t* free, size_t* total) { *free = *total = size_t(1) << 32; return 0; }

int cuModuleLoadData(void** mod, const void* image) {
    auto* m = new Module;
    std::string ptx(static_cast<const char*>(image));
    const std::string tag = ".entry ";
    for (size_t at = ptx.find(tag); at != std::string::npos; at = ptx.find(tag, at + 1)) {
        size_t start = at + tag.size(), end = ptx.find_first_of("( \t\n", start);
        m->entries.insert(ptx.substr(start, end - start));
    }
    if (m->entries.empty()) { delete m; return 218; }  // CUDA_ERROR_INVALID_PTX
    *mod = m;
    return 0;
}
int cuModuleUnload(void* mod) { delete static_cast<Module*>(mod); return 0; }
int cuModuleGetFunction(void** fn, void* mod, const char* name) {
    auto* m = static_cast<Module*>(mod);
    auto k = kernels.find(name);
    if (!m->entries.count(name) || k == kernels.end()) return 500;  // CUDA_ERROR_NOT_FOUND
    *fn = const_cast<Kernel*>(&k->second);
    return 0;
}

// A pool of threads serves every launch: thread t runs thread t of each
// block in turn, and the threads meet at a barrier after each block, so a
// block's threads are together (function-static "shared" memory belongs
// to one block at a time). Kernels return early only block-uniformly or
// after their last __syncthreads, so every thread reaches the barrier.
struct Pool {
    std::mutex mu;
    std::condition_variable start, finished;
    std::vector<std::thread> threads;
    unsigned long long generation = 0;
    unsigned active = 0;   // threads taking part in this launch
    unsigned running = 0;  // of those, still working
    Kernel* k = nullptr;
    void** params = nullptr;

    void grow(unsigned n) {
        while (threads.size() < n) {
            unsigned t = threads.size();
            threads.emplace_back([this, t] { work(t); });
            threads.back().detach();
        }
    }

    void work(unsigned t) {
        unsigned long long seen = 0;
        for (;;) {
            Kernel* kk;
            void** pp;
            {
                std::unique_lock<std::mutex> l(mu);
                start.wait(l, [&] { return generation != seen && t < active; });
                seen = generation;
                kk = k;
                pp = params;
            }
            threadIdx = {t, 0, 0};
            for (unsigned b = 0; b < gridDim.x; b++) {
                blockIdx = {b, 0, 0};
                kk->call(kk->fn, pp);
                pthread_barrier_wait(&barrier);
            }
            std::lock_guard<std::mutex> l(mu);
            if (--running == 0) finished.notify_all();
        }
    }
};

static Pool pool;

int cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned shmem, void*, void** params, void**) {
    if (gy != 1 || gz != 1 || by != 1 || bz != 1 || bx == 0 || bx > 1024 || gx == 0 || shmem != 0)
        return 1;  // CUDA_ERROR_INVALID_VALUE: the kernels are one-dimensional
    runCopies();
    // RS_EMU_MAX_BLOCK=n runs at most n threads per block. The kernels
    // stride by blockDim, so any block size computes the same; large
    // tests cap it for speed, the op tests run the sizes the host chose.
    if (const char* cap = getenv("RS_EMU_MAX_BLOCK")) {
        unsigned c = unsigned(atoi(cap));
        if (c > 0 && bx > c) bx = c;
    }
    std::unique_lock<std::mutex> l(pool.mu);
    pool.grow(bx);
    gridDim = {gx, 1, 1};
    blockDim = {bx, 1, 1};
    pthread_barrier_init(&barrier, nullptr, bx);
    pool.k = static_cast<Kernel*>(f);
    pool.params = params;
    pool.active = bx;
    pool.running = bx;
    pool.generation++;
    pool.start.notify_all();
    pool.finished.wait(l, [] { return pool.running == 0; });
    pool.active = 0;
    pthread_barrier_destroy(&barrier);
    return 0;
}

int cuMemAlloc_v2(CUdeviceptr* p, size_t n) {
    void* m = malloc(n ? n : 1);
    if (!m) return 2;  // CUDA_ERROR_OUT_OF_MEMORY
    std::lock_guard<std::mutex> l(allocMu);
    allocations[reinterpret_cast<uint64_t>(m)] = n;
    *p = reinterpret_cast<CUdeviceptr>(m);
    return 0;
}
int cuMemFree_v2(CUdeviceptr p) {
    runCopies();
    std::lock_guard<std::mutex> l(allocMu);
    if (!allocations.erase(p)) return 1;
    free(reinterpret_cast<void*>(p));
    return 0;
}
int cuMemAllocHost_v2(void** p, size_t n) { *p = malloc(n ? n : 1); return *p ? 0 : 2; }
int cuMemFreeHost(void* p) { runCopies(); free(p); return 0; }
int cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* h, size_t n, void*) {
    std::lock_guard<std::mutex> l(copiesMu);
    pendingCopies.push_back({reinterpret_cast<void*>(d), h, n});
    return 0;
}
int cuMemcpyDtoHAsync_v2(void* h, CUdeviceptr d, size_t n, void*) { runCopies(); memcpy(h, reinterpret_cast<void*>(d), n); return 0; }
int cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr s, size_t n, void*) { runCopies(); memmove(reinterpret_cast<void*>(d), reinterpret_cast<void*>(s), n); return 0; }
int cuMemsetD32Async(CUdeviceptr d, unsigned v, size_t n, void*) {
    runCopies();
    auto* p = reinterpret_cast<unsigned*>(d);
    for (size_t i = 0; i < n; i++) p[i] = v;
    return 0;
}
int cuStreamCreate(void** s, unsigned) { *s = &streamObject; return 0; }
int cuStreamDestroy_v2(void*) { return 0; }
int cuStreamSynchronize(void*) { runCopies(); return 0; }
int cuGetErrorName(int e, const char** s) { *s = e == 100 ? "CUDA_ERROR_NO_DEVICE" : "CUDA_ERROR_EMULATED"; return 0; }
int cuGetErrorString(int e, const char** s) { *s = e == 100 ? "no CUDA-capable device is detected" : "emulated error"; return 0; }

// cuBLAS: column-major, as the library defines it, written from the
// definition so that nn's row-major translation is checked against it.
int cublasCreate_v2(void** h) { *h = &blasObject; return 0; }
int cublasDestroy_v2(void*) { return 0; }
int cublasSetStream_v2(void*, void*) { return 0; }
// CUBLAS_DEFAULT_MATH (0) reads fp32 operands in full; CUBLAS_TF32_TENSOR_OP_MATH
// (3) at TF32, emulated as operands rounded to 10 significand bits, to
// nearest even (nn.Precision.Round). Other modes are refused.
static int mathMode = 0;
int cublasSetMathMode(void*, int mode) {
    if (mode != 0 && mode != 3) return 7;
    mathMode = mode;
    return 0;
}
int cublasGetVersion_v2(void*, int* v) { *v = 130100; return 0; }

static float roundTF32(float x) {
    unsigned int b = __float_as_uint(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return x;
    b = (b + 0xfffu + ((b >> 13) & 1u)) & ~0x1fffu;
    float r;
    memcpy(&r, &b, sizeof r);
    return r;
}

static float fromBF16(unsigned short h) {
    unsigned int b = (unsigned int)h << 16;
    float r;
    memcpy(&r, &b, sizeof r);
    return r;
}

// An operand in one of the types cublasGemmEx takes here: CUDA_R_32F (0)
// or CUDA_R_16BF (14).
struct Operand {
    const void* p;
    int type;
    float at(long long i) const {
        if (type == 14) return fromBF16(static_cast<const unsigned short*>(p)[i]);
        float x = static_cast<const float*>(p)[i];
        return mathMode == 3 ? roundTF32(x) : x;
    }
};

// RS_EMU_NO_PRODUCTS=1 skips the products' sums (C = beta·C): the
// launches, copies and allocations stay those of the real run, so that
// device calls and peak memory can be measured at a GPU's shapes, where the
// naive products would take hours. The numbers computed are meaningless.
static bool noProducts() {
    static const bool skip = [] {
        const char* v = getenv("RS_EMU_NO_PRODUCTS");
        return v && std::string(v) == "1";
    }();
    return skip;
}

static void gemm(int opA, int opB, int m, int n, int k, float alpha, Operand A, int lda, Operand B, int ldb,
                 float beta, float* C, int ldc) {
    runCopies();
    if (noProducts()) k = 0;
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            double s = 0;
            for (int l = 0; l < k; l++) {
                float a = opA ? A.at(l + (long long)i * lda) : A.at(i + (long long)l * lda);
                float b = opB ? B.at(j + (long long)l * ldb) : B.at(l + (long long)j * ldb);
                s += double(a) * double(b);
            }
            float* c = &C[i + (long long)j * ldc];
            *c = float(alpha * s) + (beta == 0 ? 0.0f : beta * *c);  // beta 0: C is not read (it may hold NaN)
        }
}

int cublasSgemm_v2(void*, int opA, int opB, int m, int n, int k, const float* alpha, const float* A, int lda,
                   const float* B, int ldb, const float* beta, float* C, int ldc) {
    // k = 0 is refused: cuBLAS's documentation leaves an empty inner
    // dimension open, so nn must handle it before asking (gemmZeroK).
    if (k == 0 || lda < (opA ? k : m) || ldb < (opB ? n : k) || ldc < m) return 7;  // CUBLAS_STATUS_INVALID_VALUE
    gemm(opA, opB, m, n, k, *alpha, {A, 0}, lda, {B, 0}, ldb, *beta, C, ldc);
    return 0;
}

int cublasSgemmStridedBatched(void*, int opA, int opB, int m, int n, int k, const float* alpha, const float* A,
                              int lda, long long sA, const float* B, int ldb, long long sB, const float* beta,
                              float* C, int ldc, long long sC, int batch) {
    if (k == 0 || lda < (opA ? k : m) || ldb < (opB ? n : k) || ldc < m) return 7;
    for (int b = 0; b < batch; b++) gemm(opA, opB, m, n, k, *alpha, {A + b * sA, 0}, lda, {B + b * sB, 0}, ldb, *beta, C + b * sC, ldc);
    return 0;
}

// Operands of type 0 (fp32) or 14 (bf16), C fp32 (0), compute CUBLAS_COMPUTE_32F (68).
static bool exTypes(int aType, int bType, int cType, int compute) {
    return (aType == 0 || aType == 14) && (bType == 0 || bType == 14) && cType == 0 && compute == 68;
}

static const void* offset(const void* p, int type, long long n) {
    return static_cast<const char*>(p) + n * (type == 14 ? 2 : 4);
}

int cublasGemmEx(void*, int opA, int opB, int m, int n, int k, const void* alpha, const void* A, int aType, int lda,
                 const void* B, int bType, int ldb, const void* beta, void* C, int cType, int ldc, int compute, int) {
    if (k == 0 || lda < (opA ? k : m) || ldb < (opB ? n : k) || ldc < m) return 7;
    if (!exTypes(aType, bType, cType, compute)) return 15;  // CUBLAS_STATUS_NOT_SUPPORTED
    gemm(opA, opB, m, n, k, *static_cast<const float*>(alpha), {A, aType}, lda, {B, bType}, ldb,
         *static_cast<const float*>(beta), static_cast<float*>(C), ldc);
    return 0;
}

int cublasGemmStridedBatchedEx(void*, int opA, int opB, int m, int n, int k, const void* alpha, const void* A, int aType,
                               int lda, long long sA, const void* B, int bType, int ldb, long long sB, const void* beta,
                               void* C, int cType, int ldc, long long sC, int batch, int compute, int) {
    if (k == 0 || lda < (opA ? k : m) || ldb < (opB ? n : k) || ldc < m) return 7;
    if (!exTypes(aType, bType, cType, compute)) return 15;
    for (int b = 0; b < batch; b++)
        gemm(opA, opB, m, n, k, *static_cast<const float*>(alpha), {offset(A, aType, b * sA), aType}, lda,
             {offset(B, bType, b * sB), bType}, ldb, *static_cast<const float*>(beta), static_cast<float*>(C) + b * sC, ldc);
    return 0;
}

}  // extern "C"

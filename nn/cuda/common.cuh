// Shared by every kernel file. Compiled by nvcc to PTX (go generate), or,
// with RS_EMULATE, by g++ into the CPU emulator the tests use (emu/), where
// each block runs as blockDim threads and blocks run one after another.
#ifndef RS_COMMON_CUH
#define RS_COMMON_CUH

#ifdef RS_EMULATE
#include "emu/emu.h"
#else
#define RS_EXTERN extern "C"
#endif

// Threads per block for row-wise reductions; a power of two.
#define RS_BLOCK 256

// blockReduce combines v over the block with op and returns the result in
// every thread. buf holds RS_BLOCK values of shared memory; the tree order
// is fixed, so results do not depend on scheduling.
template <typename T, typename Op>
__device__ inline T blockReduce(T v, T* buf, Op op) {
    buf[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) buf[threadIdx.x] = op(buf[threadIdx.x], buf[threadIdx.x + s]);
        __syncthreads();
    }
    T r = buf[0];
    __syncthreads();
    return r;
}

struct RsAdd {
    template <typename T>
    __device__ T operator()(T a, T b) const { return a + b; }
};

struct RsMax {
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

__device__ inline float blockSum(float v, float* buf) { return blockReduce(v, buf, RsAdd()); }
__device__ inline double blockSumDouble(double v, double* buf) { return blockReduce(v, buf, RsAdd()); }
__device__ inline float blockMax(float v, float* buf) { return blockReduce(v, buf, RsMax()); }

// A grid-stride loop over n elements.
#define RS_FOR(i, n) for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (long long)(n); i += (long long)blockDim.x * gridDim.x)

__device__ inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// splitmix64 of (seed, stream, i): a counter-based generator, so each
// element's draw does not depend on the launch shape.
__device__ inline unsigned long long rs_mix(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// RsDropout gives element i's inverted-dropout scale for the op keyed by
// (seed, stream): 0 with probability p, else 1/(1−p). A backward draws
// the forward's mask again from the keys instead of storing it, which
// PyTorch keeps as a byte per element and we kept as a float.
struct RsDropout {
    unsigned long long key;
    float p, scale;
    __device__ RsDropout(unsigned long long seed, unsigned long long stream, float p)
        : key(rs_mix(seed ^ rs_mix(stream))), p(p), scale(1.0f / (1.0f - p)) {}
    __device__ float operator()(long long i) const {
        float u = (float)(rs_mix(key + (unsigned long long)i) >> 40) * (1.0f / 16777216.0f);
        return u >= p ? scale : 0.0f;
    }
};

#endif

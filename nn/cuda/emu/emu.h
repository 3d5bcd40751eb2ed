// CPU emulation of the CUDA C subset the kernels use, for tests: each
// block runs as blockDim.x threads that meet at __syncthreads, blocks run
// one after another, so function-static storage serves as shared memory.
#ifndef RS_EMU_H
#define RS_EMU_H

#include <math.h>

#include <cmath>
#include <cstring>

struct dim3 {
    unsigned x, y, z;
};

extern thread_local dim3 threadIdx;
extern thread_local dim3 blockIdx;
extern dim3 blockDim;
extern dim3 gridDim;

void rs_emu_syncthreads();

#define RS_EXTERN extern "C"
#define __global__
#define __device__
#define __shared__ static
#define __syncthreads() rs_emu_syncthreads()

using std::exp;
using std::isinf;
using std::log;
using std::sqrt;
using std::tanh;

inline unsigned int __float_as_uint(float f) {
    unsigned int i;
    std::memcpy(&i, &f, sizeof i);
    return i;
}

// x86-64's baseline g++ does not contract a·b + c, so a product rounds
// on its own, as __fmul_rn makes nvcc's.
inline float __fmul_rn(float a, float b) { return a * b; }

inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}

#endif

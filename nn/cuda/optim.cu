// AdamW, PyTorch's update in float32.
#include "common.cuh"

// The whole-model optimiser kernels below walk many tensors in one launch,
// as torch's foreach and fused optimisers do: a trainable model has
// hundreds of tensors, and one launch (and, for the norm, one host sync)
// per tensor costs more host time than the update itself. The host splits
// every tensor into chunks of at most RS_CHUNK elements and uploads the
// table once; each block takes one chunk.
#define RS_CHUNK 65536

// One chunk: up to four arrays of the same n elements (unused ones are 0).
struct RsChunk {
    unsigned long long a, b, c, d;
    long long n;
};

// adamw_chunks is adamw_step over a table of (p, g, m, v) chunks, with
// torch's float32 constants: c1 = 1 − β₁, c2 = 1 − β₂ and bc2Sqrt = √(1 −
// β₂ᵗ) rounded from double on the host, the update in torch's order.
RS_EXTERN __global__ void adamw_chunks(const RsChunk* chunks, float b1, float c1, float b2, float c2, float eps, float decay, float stepSize, float bc2Sqrt) {
    RsChunk ch = chunks[blockIdx.x];
    float* p = (float*)ch.a;
    const float* g = (const float*)ch.b;
    float* m = (float*)ch.c;
    float* v = (float*)ch.d;
    for (long long i = threadIdx.x; i < ch.n; i += blockDim.x) {
        float gi = g[i];
        float mi = m[i] * b1 + c1 * gi;
        float vi = v[i] * b2 + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = (float)sqrt((double)vi) / bc2Sqrt + eps;
        p[i] = p[i] * decay - stepSize * (mi / denom);
    }
}

// sums[blockIdx] = Σ a² over chunk blockIdx, in double; the host adds the
// chunks' sums in order (the gradient norm of a whole model, one launch).
RS_EXTERN __global__ void sum_squares_chunks(double* sums, const RsChunk* chunks) {
    __shared__ double buf[RS_BLOCK];
    RsChunk ch = chunks[blockIdx.x];
    const float* x = (const float*)ch.a;
    double s = 0.0;
    for (long long i = threadIdx.x; i < ch.n; i += blockDim.x) s += (double)x[i] * (double)x[i];
    s = blockSumDouble(s, buf);
    if (threadIdx.x == 0) sums[blockIdx.x] = s;
}

// a ← a·s over every chunk (gradient clipping's rescale).
RS_EXTERN __global__ void scale_chunks(const RsChunk* chunks, float s) {
    RsChunk ch = chunks[blockIdx.x];
    float* x = (float*)ch.a;
    for (long long i = threadIdx.x; i < ch.n; i += blockDim.x) x[i] *= s;
}

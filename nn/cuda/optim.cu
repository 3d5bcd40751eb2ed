// AdamW, PyTorch's update in float32.
#include "common.cuh"

// p ← p·decay − stepSize·m / (√v·invBC2 + eps) after the moment updates.
RS_EXTERN __global__ void adamw_step(float* p, const float* g, float* m, float* v, long long n, float b1, float b2, float eps, float decay, float stepSize, float invBC2) {
    RS_FOR(i, n) {
        float gi = g[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - stepSize * mi / ((float)sqrt((double)vi) * invBC2 + eps);
    }
}

// sums[blockIdx] = Σ x² over a grid-stride share, in double; the host adds
// the per-block sums (gradient-norm clipping).
RS_EXTERN __global__ void sum_squares(double* sums, const float* x, long long n) {
    __shared__ double buf[RS_BLOCK];
    double s = 0.0;
    RS_FOR(i, n) s += (double)x[i] * (double)x[i];
    s = blockSumDouble(s, buf);
    if (threadIdx.x == 0) sums[blockIdx.x] = s;
}

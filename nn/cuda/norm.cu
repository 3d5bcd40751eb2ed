// T5LayerNorm: root-mean-square normalisation with a scale, no bias.
#include "common.cuh"

// One block of RS_BLOCK threads per row; the mean of squares in double.
RS_EXTERN __global__ void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, int N, int D, float eps) {
    __shared__ double buf[RS_BLOCK];
    int n = blockIdx.x;
    if (n >= N) return;
    const float* row = x + (long long)n * D;
    double ss = 0.0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ss += (double)row[i] * (double)row[i];
    ss = blockSumDouble(ss, buf);
    float r = (float)(1.0 / sqrt((double)((float)(ss / D) + eps)));
    if (threadIdx.x == 0) rstd[n] = r;
    float* o = out + (long long)n * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) o[i] = w[i] * (row[i] * r);
}

// dx += r·(g·w − x·r·mean(g·w·x·r)); one block per row.
RS_EXTERN __global__ void rmsnorm_backward_x(float* dx, const float* dout, const float* x, const float* w, const float* rstd, int N, int D) {
    __shared__ double buf[RS_BLOCK];
    int n = blockIdx.x;
    if (n >= N) return;
    const float* row = x + (long long)n * D;
    const float* g = dout + (long long)n * D;
    float r = rstd[n];
    double dot = 0.0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) dot += (double)(g[i] * w[i]) * (double)(row[i] * r);
    dot = blockSumDouble(dot, buf);
    float mean = (float)(dot / D);
    float* d = dx + (long long)n * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) d[i] += r * (g[i] * w[i] - row[i] * r * mean);
}

// dw[i] += Σ_n dout[n,i]·x[n,i]·rstd[n]; one thread per column, rows in order.
RS_EXTERN __global__ void rmsnorm_backward_w(float* dw, const float* dout, const float* x, const float* rstd, int N, int D) {
    RS_FOR(i, D) {
        float s = 0.0f;
        for (int n = 0; n < N; n++) s += dout[(long long)n * D + i] * x[(long long)n * D + i] * rstd[n];
        dw[i] += s;
    }
}

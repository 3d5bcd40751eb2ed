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

// partial[k·D + i] = Σ_{n in chunk k} dout[n,i]·x[n,i]·rstd[n]: the first
// pass of the weight gradient, a column sum (elementwise.cu) finishes it.
RS_EXTERN __global__ void rmsnorm_dw_partial(float* partial, const float* dout, const float* x, const float* rstd, long long N, long long D, long long chunk) {
    long long chunks = (N + chunk - 1) / chunk;
    RS_FOR(y, chunks * D) {
        long long k = y / D, i = y % D;
        long long end = (k + 1) * chunk < N ? (k + 1) * chunk : N;
        float s = 0.0f;
        for (long long n = k * chunk; n < end; n++) s += dout[n * D + i] * x[n * D + i] * rstd[n];
        partial[y] = s;
    }
}

// add_rmsnorm_forward is a residual add and the RMSNorm that reads its
// sum, in one pass (T5 normalises the residual stream right after each
// sub-layer adds to it): sum = x + y, out = rmsnorm(sum)·w, as add_forward
// then rmsnorm_forward give them. One block per row.
RS_EXTERN __global__ void add_rmsnorm_forward(float* sum, float* out, float* rstd, const float* x, const float* y, const float* w, int N, int D, float eps) {
    __shared__ double buf[RS_BLOCK];
    int n = blockIdx.x;
    if (n >= N) return;
    long long base = (long long)n * D;
    double ss = 0.0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float s = x[base + i] + y[base + i];
        sum[base + i] = s;
        ss += (double)s * (double)s;
    }
    ss = blockSumDouble(ss, buf);
    float r = (float)(1.0 / sqrt((double)((float)(ss / D) + eps)));
    if (threadIdx.x == 0) rstd[n] = r;
    for (int i = threadIdx.x; i < D; i += blockDim.x) out[base + i] = w[i] * (sum[base + i] * r);
}

// add_rmsnorm_backward_x: the sum's whole gradient, t = dsum + the norm's
// (rmsnorm_backward_x's term; dsum may be null when nothing else read the
// sum), added into dx and dy (either may be null), as the unfused ops'
// accumulations give it. One block per row.
RS_EXTERN __global__ void add_rmsnorm_backward_x(float* dx, float* dy, const float* dsum, const float* dout, const float* sum, const float* w, const float* rstd, int N, int D) {
    __shared__ double buf[RS_BLOCK];
    int n = blockIdx.x;
    if (n >= N) return;
    long long base = (long long)n * D;
    const float* row = sum + base;
    const float* g = dout + base;
    float r = rstd[n];
    double dot = 0.0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) dot += (double)(g[i] * w[i]) * (double)(row[i] * r);
    dot = blockSumDouble(dot, buf);
    float mean = (float)(dot / D);
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float t = r * (g[i] * w[i] - row[i] * r * mean);
        if (dsum) t = dsum[base + i] + t;
        if (dx) dx[base + i] += t;
        if (dy) dy[base + i] += t;
    }
}

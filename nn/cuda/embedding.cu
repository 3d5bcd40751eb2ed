// Embedding gather and its gradient, T5's relative position bias.
#include "common.cuh"

// out[n] = table[ids[n]]; table (V, D), out (N, D). One block per row.
RS_EXTERN __global__ void embedding_forward(float* out, const float* table, const int* ids, int N, int D) {
    int n = blockIdx.x;
    if (n >= N) return;
    const float* src = table + (long long)ids[n] * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) out[(long long)n * D + i] = src[i];
}

// dtable[v] += Σ_{n: ids[n]=v} dout[n], summed in n order. One thread per
// (column, vocabulary row) pair would waste the vocabulary; instead a thread
// owns column i of every row and walks the ids in order, so rows repeated
// in a batch add up deterministically without atomics.
RS_EXTERN __global__ void embedding_backward(float* dtable, const float* dout, const int* ids, int N, int D) {
    RS_FOR(i, D) {
        for (int n = 0; n < N; n++) dtable[(long long)ids[n] * D + i] += dout[(long long)n * D + i];
    }
}

// out[h, ij] = table[buckets[ij], h]; table (numBuckets, H), out (H, Tq·Tk)
RS_EXTERN __global__ void position_bias_forward(float* out, const float* table, const int* buckets, int H, int TqTk) {
    RS_FOR(x, (long long)H * TqTk) {
        int h = (int)(x / TqTk), ij = (int)(x % TqTk);
        out[x] = table[buckets[ij] * H + h];
    }
}

// dtable[b, h] += Σ_{ij: buckets[ij]=b} dout[h, ij]: one thread per table
// entry scanning the buckets, deterministic and cheap (tables are tiny).
RS_EXTERN __global__ void position_bias_backward(float* dtable, const float* dout, const int* buckets, int numBuckets, int H, int TqTk) {
    RS_FOR(x, (long long)numBuckets * H) {
        int b = (int)(x / H), h = (int)(x % H);
        float s = 0.0f;
        for (int ij = 0; ij < TqTk; ij++)
            if (buckets[ij] == b) s += dout[(long long)h * TqTk + ij];
        dtable[x] += s;
    }
}

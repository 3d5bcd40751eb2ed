// Attention softmax (masks, relative position bias, dropout) and fused
// softmax cross-entropy. Rows are reduced by one block each.
#include "common.cuh"

#define RS_NEG_INF (-__int_as_float(0x7f800000))

// scores (B, H, Tq, Tk) hold q·kᵀ and become softmax(scores + bias + mask)
// in place. bias (H, Tq, Tk) or null; keyMask (B, Tk), 0 for padding, or
// null; causal masks keys j > qOffset + i. The sum runs in double.
RS_EXTERN __global__ void attention_softmax(float* scores, const float* bias, const unsigned char* keyMask, int causal, int qOffset, int B, int H, int Tq, int Tk) {
    __shared__ float fbuf[RS_BLOCK];
    __shared__ double dbuf[RS_BLOCK];
    long long rowIdx = blockIdx.x;
    if (rowIdx >= (long long)B * H * Tq) return;
    int i = (int)(rowIdx % Tq);
    int h = (int)((rowIdx / Tq) % H);
    int b = (int)(rowIdx / ((long long)Tq * H));
    float* row = scores + rowIdx * Tk;
    float mx = RS_NEG_INF;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) {
        if ((keyMask && !keyMask[(long long)b * Tk + j]) || (causal && j > qOffset + i)) {
            row[j] = RS_NEG_INF;
            continue;
        }
        if (bias) row[j] += bias[((long long)h * Tq + i) * Tk + j];
        mx = fmaxf(mx, row[j]);
    }
    mx = blockMax(mx, fbuf);
    double sum = 0.0;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) {
        float s = row[j];
        float e = isinf(s) && s < 0 ? 0.0f : (float)exp((double)(s - mx));
        row[j] = e;
        sum += (double)e;
    }
    sum = blockSumDouble(sum, dbuf);
    float inv = (float)(1.0 / sum);
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) row[j] *= inv;
}

// ds (B, H, Tq, Tk) holds d(dropped probs) and becomes d(scores):
// ds ← p ⊙ (ds⊙drop − Σ p·ds⊙drop), drop the mask the forward drew for
// (seed, stream) with probability dropP (none when dropP is 0).
RS_EXTERN __global__ void attention_softmax_backward(float* ds, const float* probs, unsigned long long seed, unsigned long long stream, float dropP, long long rows, int Tk) {
    __shared__ float buf[RS_BLOCK];
    long long r = blockIdx.x;
    if (r >= rows) return;
    float* d = ds + r * Tk;
    const float* p = probs + r * Tk;
    RsDropout drop(seed, stream, dropP);
    float dot = 0.0f;
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) {
        if (dropP > 0.0f) d[j] *= drop(r * Tk + j);
        dot += p[j] * d[j];
    }
    dot = blockSum(dot, buf);
    for (int j = threadIdx.x; j < Tk; j += blockDim.x) d[j] = p[j] * (d[j] - dot);
}

// Per row n: probs = softmax(logits), losses[n] = −log probs[target] in
// double (0 where targets[n] == ignore).
RS_EXTERN __global__ void cross_entropy_forward(float* probs, double* losses, const float* logits, const int* targets, int N, int V, int ignore) {
    __shared__ float fbuf[RS_BLOCK];
    __shared__ double dbuf[RS_BLOCK];
    int n = blockIdx.x;
    if (n >= N) return;
    const float* row = logits + (long long)n * V;
    float* p = probs + (long long)n * V;
    float mx = RS_NEG_INF;
    for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, row[i]);
    mx = blockMax(mx, fbuf);
    double sum = 0.0;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        double e = exp((double)(row[i] - mx));
        p[i] = (float)e;
        sum += e;
    }
    sum = blockSumDouble(sum, dbuf);
    double inv = 1.0 / sum;
    for (int i = threadIdx.x; i < V; i += blockDim.x) p[i] = (float)((double)p[i] * inv);
    if (threadIdx.x == 0) {
        int t = targets[n];
        losses[n] = t == ignore ? 0.0 : log(sum) - (double)(row[t] - mx);
    }
}

// loss[0] = the mean of losses over the rows whose target is not ignore
// (0 when none), summed in order in double as meanLoss does on the host,
// so that the loss stays on the device until someone reads it. One thread.
RS_EXTERN __global__ void cross_entropy_mean(float* loss, const double* losses, const int* targets, int N, int ignore) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double total = 0.0;
    int count = 0;
    for (int n = 0; n < N; n++) {
        if (targets[n] != ignore) {
            total += losses[n];
            count++;
        }
    }
    loss[0] = count == 0 ? 0.0f : (float)(total / (double)count);
}

// dlogits += (softmax − onehot)·dloss[0]/count on rows not ignored; the
// loss's gradient is read on the device, not copied back first.
RS_EXTERN __global__ void cross_entropy_backward(float* dlogits, const float* probs, const int* targets, int N, int V, int ignore, const float* dloss, int count) {
    int n = blockIdx.x;
    if (n >= N) return;
    float scale = dloss[0] / (float)count;
    int t = targets[n];
    if (t == ignore) return;
    float* d = dlogits + (long long)n * V;
    const float* p = probs + (long long)n * V;
    for (int i = threadIdx.x; i < V; i += blockDim.x) d[i] += p[i] * scale - (i == t ? scale : 0.0f);
}

// out_j (B, H, T, K) = x_j (B, T, H·K) with its heads made the outer axis,
// so that attention's products over every batch row and head run as one
// strided batch of B·H; up to four tensors of one shape (q, k and v, say)
// in one launch, j < count.
RS_EXTERN __global__ void split_heads(float* out0, const float* x0, float* out1, const float* x1, float* out2, const float* x2,
                                      float* out3, const float* x3, int count, long long B, long long T, long long H, long long K) {
    long long n = B * H * T * K;
    RS_FOR(j, count * n) {
        long long w = j / n, i = j % n;
        float* out = w == 0 ? out0 : w == 1 ? out1 : w == 2 ? out2 : out3;
        const float* x = w == 0 ? x0 : w == 1 ? x1 : w == 2 ? x2 : x3;
        long long k = i % K, t = (i / K) % T, h = (i / (K * T)) % H, b = i / (K * T * H);
        out[i] = x[((b * T + t) * H + h) * K + k];
    }
}

// out_j (B, T, H·K) = x_j (B, H, T, K) back in the model's layout, or +=
// when accumulate (gradients add into what other ops gave); up to three
// tensors of one shape in one launch, j < count.
RS_EXTERN __global__ void merge_heads(float* out0, const float* x0, float* out1, const float* x1, float* out2, const float* x2,
                                      int count, long long B, long long T, long long H, long long K, int adds) {
    long long n = B * T * H * K;
    RS_FOR(j, count * n) {
        long long w = j / n, i = j % n;
        float* out = w == 0 ? out0 : w == 1 ? out1 : out2;
        const float* x = w == 0 ? x0 : w == 1 ? x1 : x2;
        long long k = i % K, h = (i / K) % H, t = (i / (K * H)) % T, b = i / (K * H * T);
        float v = x[((b * H + h) * T + t) * K + k];
        out[i] = (adds >> w) & 1 ? out[i] + v : v;  // bit w: out w is added to, else set
    }
}

// Elementwise ops: activations, sums, products, scaling, dropout.
#include "common.cuh"

// out = max(x, 0), NaN passed on as the CPU's max and torch.relu pass it
// (fmaxf would give 0).
RS_EXTERN __global__ void relu_forward(float* out, const float* x, long long n) {
    RS_FOR(i, n) {
        float v = x[i];
        out[i] = v > 0.0f || v != v ? v : 0.0f;
    }
}

// dx += dout where x > 0
RS_EXTERN __global__ void relu_backward(float* dx, const float* dout, const float* x, long long n) {
    RS_FOR(i, n) if (x[i] > 0.0f) dx[i] += dout[i];
}

#define RS_GELU_C 0.7978845608028654

// HF's gelu_new, evaluated in double like the CPU kernel.
RS_EXTERN __global__ void gelu_forward(float* out, const float* x, long long n) {
    RS_FOR(i, n) {
        double v = x[i];
        out[i] = (float)(0.5 * v * (1.0 + tanh(RS_GELU_C * (v + 0.044715 * v * v * v))));
    }
}

RS_EXTERN __global__ void gelu_backward(float* dx, const float* dout, const float* x, long long n) {
    RS_FOR(i, n) {
        double v = x[i];
        double t = tanh(RS_GELU_C * (v + 0.044715 * v * v * v));
        double d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * RS_GELU_C * (1.0 + 3.0 * 0.044715 * v * v);
        dx[i] += (float)d * dout[i];
    }
}

// gated_gelu_forward: out = gelu_new(a)·b, T5 v1.1's gated feed-forward,
// as gelu_forward then mul_forward give it, without storing gelu_new(a).
RS_EXTERN __global__ void gated_gelu_forward(float* out, const float* a, const float* b, long long n) {
    RS_FOR(i, n) {
        double v = a[i];
        float ga = (float)(0.5 * v * (1.0 + tanh(RS_GELU_C * (v + 0.044715 * v * v * v))));
        out[i] = ga * b[i];
    }
}

// gated_gelu_backward adds into da and db (either may be null) what
// mul_backward then gelu_backward would.
RS_EXTERN __global__ void gated_gelu_backward(float* da, float* db, const float* dout, const float* a, const float* b, long long n) {
    RS_FOR(i, n) {
        double v = a[i];
        double t = tanh(RS_GELU_C * (v + 0.044715 * v * v * v));
        if (da) {
            double d = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * RS_GELU_C * (1.0 + 3.0 * 0.044715 * v * v);
            da[i] += (float)d * (dout[i] * b[i]);
        }
        if (db) db[i] += dout[i] * (float)(0.5 * v * (1.0 + t));
    }
}

RS_EXTERN __global__ void sigmoid_forward(float* out, const float* x, long long n) {
    RS_FOR(i, n) out[i] = (float)(1.0 / (1.0 + exp(-(double)x[i])));
}

// dx += dout·y·(1−y), y the forward output
RS_EXTERN __global__ void sigmoid_backward(float* dx, const float* dout, const float* y, long long n) {
    RS_FOR(i, n) dx[i] += dout[i] * y[i] * (1.0f - y[i]);
}

RS_EXTERN __global__ void tanh_forward(float* out, const float* x, long long n) {
    RS_FOR(i, n) out[i] = (float)tanh((double)x[i]);
}

RS_EXTERN __global__ void tanh_backward(float* dx, const float* dout, const float* y, long long n) {
    RS_FOR(i, n) dx[i] += dout[i] * (1.0f - y[i] * y[i]);
}

// out = a + b, b broadcast over a's leading rows when nb < n (nb divides n)
RS_EXTERN __global__ void add_forward(float* out, const float* a, const float* b, long long n, long long nb) {
    RS_FOR(i, n) out[i] = a[i] + b[i % nb];
}

// out = y + s·out, the product rounded before the sum (no fused
// multiply-add), as Scale then Add round it: AddLinear's second half.
RS_EXTERN __global__ void add_scaled(float* out, const float* y, float s, long long n) {
    RS_FOR(i, n) out[i] = y[i] + __fmul_rn(s, out[i]);
}

// dst += src
RS_EXTERN __global__ void accumulate(float* dst, const float* src, long long n) {
    RS_FOR(i, n) dst[i] += src[i];
}

// partial[k·cols + j] = Σ_{r in chunk k} src[r·stride + j]: the first pass
// of a column sum over many rows (chunks of `chunk` rows, in order).
RS_EXTERN __global__ void column_partial(float* partial, const float* src, long long rows, long long cols, long long stride, long long chunk) {
    long long chunks = (rows + chunk - 1) / chunk;
    RS_FOR(x, chunks * cols) {
        long long k = x / cols, j = x % cols;
        long long end = (k + 1) * chunk < rows ? (k + 1) * chunk : rows;
        float s = 0.0f;
        for (long long r = k * chunk; r < end; r++) s += src[r * stride + j];
        partial[x] = s;
    }
}

// dst[j] += Σ_r src[r·stride + j]: a column sum, one thread per column, so
// the order of the sum is fixed (bias gradients, broadcast backward).
RS_EXTERN __global__ void accumulate_columns(float* dst, const float* src, long long rows, long long cols, long long stride) {
    RS_FOR(j, cols) {
        float s = 0.0f;
        for (long long r = 0; r < rows; r++) s += src[r * stride + j];
        dst[j] += s;
    }
}

// dst[r·dstStride + dstOff + c] = (or +=) src[r·srcStride + srcOff + c] for
// r < rows, c < cols: concatenation, slicing and prepending along rows.
// srcStride 0 repeats one source row.
RS_EXTERN __global__ void copy_block(float* dst, long long dstStride, long long dstOff, const float* src, long long srcStride,
                                     long long srcOff, long long rows, long long cols, int accumulate) {
    RS_FOR(x, rows * cols) {
        long long r = x / cols, c = x % cols;
        float v = src[r * srcStride + srcOff + c];
        float* d = &dst[r * dstStride + dstOff + c];
        if (accumulate) *d += v; else *d = v;
    }
}

// out[b, ij] = mean over h of p[b, h, ij], heads summed in order.
RS_EXTERN __global__ void mean_heads(float* out, const float* p, int B, int H, long long TqTk) {
    float inv = 1.0f / (float)H;
    RS_FOR(x, (long long)B * TqTk) {
        long long b = x / TqTk, ij = x % TqTk;
        float s = 0.0f;
        for (int h = 0; h < H; h++) s += p[(b * H + h) * TqTk + ij] * inv;
        out[x] = s;
    }
}

// LST's ladder gate: out = σ(α/temp)·a + (1 − σ(α/temp))·b, α = alpha[0].
__device__ inline float rs_gate(const float* alpha, float temp) {
    return (float)(1.0 / (1.0 + exp(-(double)(alpha[0] / temp))));
}

RS_EXTERN __global__ void gate_mix_forward(float* out, const float* a, const float* b, const float* alpha, float temp, long long n) {
    float g = rs_gate(alpha, temp);
    RS_FOR(i, n) out[i] = g * a[i] + (1.0f - g) * b[i];
}

// da += g·d, db += (1−g)·d (either may be null); partial[block] = Σ d·(a−b)
// over the block's share, in double, for the gate's own gradient.
RS_EXTERN __global__ void gate_mix_backward(float* da, float* db, double* partial, const float* dout, const float* a, const float* b,
                                            const float* alpha, float temp, long long n) {
    __shared__ double buf[RS_BLOCK];
    float g = rs_gate(alpha, temp);
    double s = 0.0;
    RS_FOR(i, n) {
        float d = dout[i];
        if (da) da[i] += g * d;
        if (db) db[i] += (1.0f - g) * d;
        s += (double)d * (double)(a[i] - b[i]);
    }
    s = blockSumDouble(s, buf);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// dalpha += Σ partial · g(1−g)/temp, one thread, blocks in order.
RS_EXTERN __global__ void gate_mix_alpha(float* dalpha, const double* partial, int blocks, const float* alpha, float temp) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    double s = 0.0;
    for (int i = 0; i < blocks; i++) s += partial[i];
    float g = rs_gate(alpha, temp);
    dalpha[0] += (float)s * g * (1.0f - g) / temp;
}

// x[i] = v
RS_EXTERN __global__ void fill(float* x, float v, long long n) {
    RS_FOR(i, n) x[i] = v;
}

// out = a ⊙ b (the gated FFN's product)
RS_EXTERN __global__ void mul_forward(float* out, const float* a, const float* b, long long n) {
    RS_FOR(i, n) out[i] = a[i] * b[i];
}

// out = x ⊙ b with b (nb values) repeated over x's rows: a learned
// rescaling of every feature (IA³)
RS_EXTERN __global__ void mul_row_forward(float* out, const float* x, const float* b, long long n, long long nb) {
    RS_FOR(i, n) out[i] = x[i] * b[i % nb];
}

// dx += dout ⊙ b, b repeated over the rows
RS_EXTERN __global__ void mul_row_backward(float* dx, const float* dout, const float* b, long long n, long long nb) {
    RS_FOR(i, n) dx[i] += dout[i] * b[i % nb];
}

// da += dout ⊙ b, db += dout ⊙ a; either may be null
RS_EXTERN __global__ void mul_backward(float* da, float* db, const float* dout, const float* a, const float* b, long long n) {
    RS_FOR(i, n) {
        if (da) da[i] += dout[i] * b[i];
        if (db) db[i] += dout[i] * a[i];
    }
}

// out = s·x
RS_EXTERN __global__ void scale_forward(float* out, const float* x, float s, long long n) {
    RS_FOR(i, n) out[i] = s * x[i];
}

// dx += s·dout
RS_EXTERN __global__ void scale_backward(float* dx, const float* dout, float s, long long n) {
    RS_FOR(i, n) dx[i] += s * dout[i];
}

// mask[i] = 0 with probability p, else 1/(1−p): inverted dropout scales,
// as dropout_apply and attention's kernels draw them.
RS_EXTERN __global__ void dropout_mask(float* mask, unsigned long long seed, unsigned long long stream, float p, long long n) {
    RsDropout drop(seed, stream, p);
    RS_FOR(i, n) mask[i] = drop(i);
}

// out = x ⊙ mask, the mask dropout_mask draws for (seed, stream), or with
// accumulate out += x ⊙ mask: dropout's forward on its input and its
// backward on the output's gradient, neither storing the mask.
RS_EXTERN __global__ void dropout_apply(float* out, const float* x, unsigned long long seed, unsigned long long stream, float p, long long n, int accumulate) {
    RsDropout drop(seed, stream, p);
    if (accumulate) {
        RS_FOR(i, n) out[i] += x[i] * drop(i);
    } else {
        RS_FOR(i, n) out[i] = x[i] * drop(i);
    }
}

// out[i] = x[i] as bfloat16 bits, rounded to nearest, ties to even (NaN
// stays NaN): the operands of a product at bf16 precision, as
// torch.autocast converts them (nn.Precision.Round).
RS_EXTERN __global__ void to_bf16(unsigned short* out, const float* x, long long n) {
    RS_FOR(i, n) {
        unsigned int b = __float_as_uint(x[i]);
        if ((b & 0x7fffffffu) > 0x7f800000u) out[i] = (unsigned short)((b >> 16) | 0x40u);
        else out[i] = (unsigned short)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
    }
}

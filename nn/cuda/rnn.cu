// Pointwise parts of the GRU, LSTM and tanh-RNN cells (PyTorch's gate
// order); the projections are GEMMs.
#include "common.cuh"

// gi, gh (N, 3R); h, out (N, R); gates (N, 3R) saves r, z, n.
RS_EXTERN __global__ void gru_gate_forward(float* out, float* gates, const float* gi, const float* gh, const float* h, int N, int R) {
    RS_FOR(x, (long long)N * R) {
        long long n = x / R, j = x % R;
        long long a = n * 3 * R;
        float r = sigmoidf(gi[a + j] + gh[a + j]);
        float z = sigmoidf(gi[a + R + j] + gh[a + R + j]);
        float c = (float)tanh((double)(gi[a + 2 * R + j] + r * gh[a + 2 * R + j]));
        gates[a + j] = r;
        gates[a + R + j] = z;
        gates[a + 2 * R + j] = c;
        out[x] = (1.0f - z) * c + z * h[x];
    }
}

// Adds into dgi, dgh, dh (any may be null).
RS_EXTERN __global__ void gru_gate_backward(float* dgi, float* dgh, float* dh, const float* dout, const float* gates, const float* gh, const float* h, int N, int R) {
    RS_FOR(x, (long long)N * R) {
        long long n = x / R, j = x % R;
        long long a = n * 3 * R;
        float r = gates[a + j], z = gates[a + R + j], c = gates[a + 2 * R + j];
        float d = dout[x];
        float dc = d * (1.0f - z) * (1.0f - c * c);
        float dz = d * (h[x] - c) * z * (1.0f - z);
        float dr = dc * gh[a + 2 * R + j] * r * (1.0f - r);
        if (dgi) {
            dgi[a + j] += dr;
            dgi[a + R + j] += dz;
            dgi[a + 2 * R + j] += dc;
        }
        if (dgh) {
            dgh[a + j] += dr;
            dgh[a + R + j] += dz;
            dgh[a + 2 * R + j] += dc * r;
        }
        if (dh) dh[x] += d * z;
    }
}

// g (N, 4R) = summed projections (i, f, g, o); c, cOut, hOut, tc (N, R);
// acts (N, 4R) saves the activated gates, tc saves tanh(c').
RS_EXTERN __global__ void lstm_gate_forward(float* hOut, float* cOut, float* acts, float* tc, const float* g, const float* c, int N, int R) {
    RS_FOR(x, (long long)N * R) {
        long long n = x / R, j = x % R;
        long long a = n * 4 * R;
        float i = sigmoidf(g[a + j]);
        float f = sigmoidf(g[a + R + j]);
        float gg = (float)tanh((double)g[a + 2 * R + j]);
        float o = sigmoidf(g[a + 3 * R + j]);
        acts[a + j] = i;
        acts[a + R + j] = f;
        acts[a + 2 * R + j] = gg;
        acts[a + 3 * R + j] = o;
        float cn = f * c[x] + i * gg;
        cOut[x] = cn;
        float t = (float)tanh((double)cn);
        tc[x] = t;
        hOut[x] = o * t;
    }
}

// Adds into dg and dc (either may be null); dcOut may be null.
RS_EXTERN __global__ void lstm_gate_backward(float* dg, float* dc, const float* dhOut, const float* dcOut, const float* acts, const float* tc, const float* c, int N, int R) {
    RS_FOR(x, (long long)N * R) {
        long long n = x / R, j = x % R;
        long long a = n * 4 * R;
        float i = acts[a + j], f = acts[a + R + j], gg = acts[a + 2 * R + j], o = acts[a + 3 * R + j];
        float t = tc[x];
        float dcn = dhOut[x] * o * (1.0f - t * t);
        if (dcOut) dcn += dcOut[x];
        if (dg) {
            dg[a + j] += dcn * gg * i * (1.0f - i);
            dg[a + R + j] += dcn * c[x] * f * (1.0f - f);
            dg[a + 2 * R + j] += dcn * i * (1.0f - gg * gg);
            dg[a + 3 * R + j] += dhOut[x] * t * o * (1.0f - o);
        }
        if (dc) dc[x] += dcn * f;
    }
}

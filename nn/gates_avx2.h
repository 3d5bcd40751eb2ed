#include <stdint.h>

int rs_have_avx2(void);
void rs_gru_gate_forward(float* out, float* gates, const float* gi, const float* gh, const float* h, int64_t lo, int64_t hi,
		int64_t R);
void rs_lstm_gate_forward(float* hOut, float* cOut, float* acts, float* tc, const float* g, const float* c, int64_t lo,
		int64_t hi, int64_t R);
void rs_gru_gate_backward(float* dgi, float* dgh, float* dh, const float* dout, const float* gates, const float* gh,
		const float* h, int64_t lo, int64_t hi, int64_t R);
void rs_adamw_rows(float* p, const float* g, float* m, float* v, int64_t lo, int64_t hi, float b1, float c1, float b2,
		float c2, float bc2Sqrt, float eps, float decay, float stepSize);
void rs_softmax_rows(float* out, const float* in, int64_t rows, int64_t cols, double* sums, float* maxes);
void rs_gelu_forward(float* out, const float* x, int64_t lo, int64_t hi);
void rs_gelu_backward(float* dx, const float* dout, const float* x, int64_t lo, int64_t hi);

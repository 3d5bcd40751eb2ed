//go:build cgo && amd64

// The GRU gate kernel eight lanes at a time. Every lane performs the same
// IEEE float32 operations, in the same order, as fastmath.go's expf,
// sigmoid and tanhf and kernels.go's GRUGateForward, so the results are
// bit for bit those of the Go code (no FMA is enabled, so nothing is
// contracted); only the arithmetic's throughput changes.

#include <immintrin.h>
#include <stdint.h>

#include "gates_avx2.h"
#include "lanes_avx2.h"

int rs_have_avx2(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2");
}

#define AVX2 __attribute__((target("avx2")))

static AVX2 inline __m256 rs_pow2i(__m256i k) {
	return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(127)), 23));
}

// fastmath.go's expf.
static AVX2 inline __m256 rs_expf8(__m256 x) {
	__m256 v = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _mm256_set1_ps(0.5f));
	__m256i k = _mm256_cvttps_epi32(v);
	// floor: one less where truncation went up (v < k)
	__m256 below = _mm256_cmp_ps(v, _mm256_cvtepi32_ps(k), _CMP_LT_OQ);
	k = _mm256_add_epi32(k, _mm256_castps_si256(below)); // −1 where below
	__m256 n = _mm256_cvtepi32_ps(k);
	__m256 r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
	r = _mm256_add_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(2.12194440e-4f)));
	__m256 z = _mm256_mul_ps(r, r);
	__m256 y = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(1.9875691500e-4f), r), _mm256_set1_ps(1.3981999507e-3f));
	y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(8.3334519073e-3f));
	y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(4.1665795894e-2f));
	y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(1.6666665459e-1f));
	y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(5.0000001201e-1f));
	y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(y, z), r), _mm256_set1_ps(1.0f));
	// y·2^k, with k = 128 as y·2^127·2 and k < −126 as y·2^(k+126)·2^−126.
	__m256i lo = _mm256_set1_epi32(-126), hi = _mm256_set1_epi32(127);
	__m256 normal = _mm256_mul_ps(y, rs_pow2i(_mm256_max_epi32(_mm256_min_epi32(k, hi), lo)));
	__m256 over = _mm256_mul_ps(_mm256_mul_ps(y, rs_pow2i(hi)), _mm256_set1_ps(2.0f));
	__m256i ksub = _mm256_max_epi32(_mm256_add_epi32(k, _mm256_set1_epi32(126)), lo);
	__m256 under = _mm256_mul_ps(_mm256_mul_ps(y, rs_pow2i(ksub)), rs_pow2i(lo));
	__m256 out = normal;
	out = _mm256_blendv_ps(out, over, _mm256_castsi256_ps(_mm256_cmpgt_epi32(k, hi)));
	out = _mm256_blendv_ps(out, under, _mm256_castsi256_ps(_mm256_cmpgt_epi32(lo, k)));
	// The limits, then NaN kept (comparisons with NaN are false).
	out = _mm256_blendv_ps(out, _mm256_set1_ps(__builtin_inff()), _mm256_cmp_ps(x, _mm256_set1_ps(88.72283f), _CMP_GT_OQ));
	out = _mm256_blendv_ps(out, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(-103.97208f), _CMP_LT_OQ));
	return _mm256_blendv_ps(out, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

// fastmath.go's sigmoid.
static AVX2 inline __m256 rs_sigmoid8(__m256 x) {
	__m256 neg = _mm256_xor_ps(x, _mm256_set1_ps(-0.0f));
	return _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), rs_expf8(neg)));
}

// fastmath.go's tanhf.
static AVX2 inline __m256 rs_tanhf8(__m256 x) {
	__m256 sign = _mm256_set1_ps(-0.0f);
	__m256 ax = _mm256_andnot_ps(sign, x);
	__m256 z = _mm256_mul_ps(x, x);
	__m256 p = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(-5.70498872745e-3f), z), _mm256_set1_ps(2.06390887954e-2f));
	p = _mm256_sub_ps(_mm256_mul_ps(p, z), _mm256_set1_ps(5.37397155531e-2f));
	p = _mm256_add_ps(_mm256_mul_ps(p, z), _mm256_set1_ps(1.33314422036e-1f));
	p = _mm256_sub_ps(_mm256_mul_ps(p, z), _mm256_set1_ps(3.33332819422e-1f));
	p = _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, z), x), x);
	__m256 e = rs_expf8(_mm256_mul_ps(_mm256_set1_ps(2.0f), ax));
	__m256 t = _mm256_sub_ps(_mm256_set1_ps(1.0f), _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, _mm256_set1_ps(1.0f))));
	t = _mm256_blendv_ps(t, _mm256_xor_ps(t, sign), _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
	__m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(x, sign));
	__m256 out = _mm256_blendv_ps(t, one, _mm256_cmp_ps(ax, _mm256_set1_ps(9.01091f), _CMP_GT_OQ));
	return _mm256_blendv_ps(out, p, _mm256_cmp_ps(ax, _mm256_set1_ps(0.625f), _CMP_LT_OQ));
}

AVX2 void rs_gru_gate_forward(float* out, float* gates, const float* gi, const float* gh, const float* h, int64_t lo,
		int64_t hi, int64_t R) {
	__m256 one = _mm256_set1_ps(1.0f);
	for (int64_t n = lo; n < hi; n++) {
		int64_t a = n * 3 * R, b = n * R;
		for (int64_t j = 0; j < R; j += 8) {
			__m256 r = rs_sigmoid8(_mm256_add_ps(_mm256_loadu_ps(gi + a + j), _mm256_loadu_ps(gh + a + j)));
			__m256 z = rs_sigmoid8(_mm256_add_ps(_mm256_loadu_ps(gi + a + R + j), _mm256_loadu_ps(gh + a + R + j)));
			__m256 c = rs_tanhf8(_mm256_add_ps(_mm256_loadu_ps(gi + a + 2 * R + j), _mm256_mul_ps(r, _mm256_loadu_ps(gh + a + 2 * R + j))));
			_mm256_storeu_ps(gates + a + j, r);
			_mm256_storeu_ps(gates + a + R + j, z);
			_mm256_storeu_ps(gates + a + 2 * R + j, c);
			__m256 h8 = _mm256_loadu_ps(h + b + j);
			_mm256_storeu_ps(out + b + j, _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(one, z), c), _mm256_mul_ps(z, h8)));
		}
	}
}

AVX2 void rs_lstm_gate_forward(float* hOut, float* cOut, float* acts, float* tc, const float* g, const float* c, int64_t lo,
		int64_t hi, int64_t R) {
	for (int64_t n = lo; n < hi; n++) {
		int64_t a = n * 4 * R, b = n * R;
		for (int64_t j = 0; j < R; j += 8) {
			__m256 i = rs_sigmoid8(_mm256_loadu_ps(g + a + j));
			__m256 f = rs_sigmoid8(_mm256_loadu_ps(g + a + R + j));
			__m256 gg = rs_tanhf8(_mm256_loadu_ps(g + a + 2 * R + j));
			__m256 o = rs_sigmoid8(_mm256_loadu_ps(g + a + 3 * R + j));
			_mm256_storeu_ps(acts + a + j, i);
			_mm256_storeu_ps(acts + a + R + j, f);
			_mm256_storeu_ps(acts + a + 2 * R + j, gg);
			_mm256_storeu_ps(acts + a + 3 * R + j, o);
			__m256 cn = _mm256_add_ps(_mm256_mul_ps(f, _mm256_loadu_ps(c + b + j)), _mm256_mul_ps(i, gg));
			_mm256_storeu_ps(cOut + b + j, cn);
			__m256 t = rs_tanhf8(cn);
			_mm256_storeu_ps(tc + b + j, t);
			_mm256_storeu_ps(hOut + b + j, _mm256_mul_ps(o, t));
		}
	}
}

// kernels.go's GRUGateBackward; dgi, dgh and dh may be NULL.
AVX2 void rs_gru_gate_backward(float* dgi, float* dgh, float* dh, const float* dout, const float* gates, const float* gh,
		const float* h, int64_t lo, int64_t hi, int64_t R) {
	__m256 one = _mm256_set1_ps(1.0f);
	for (int64_t n = lo; n < hi; n++) {
		int64_t a = n * 3 * R, b = n * R;
		for (int64_t j = 0; j < R; j += 8) {
			__m256 r = _mm256_loadu_ps(gates + a + j), z = _mm256_loadu_ps(gates + a + R + j);
			__m256 c = _mm256_loadu_ps(gates + a + 2 * R + j), d = _mm256_loadu_ps(dout + b + j);
			__m256 dc = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_sub_ps(one, z)), _mm256_sub_ps(one, _mm256_mul_ps(c, c)));
			__m256 dz = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(d, _mm256_sub_ps(_mm256_loadu_ps(h + b + j), c)), z), _mm256_sub_ps(one, z));
			__m256 dr = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(dc, _mm256_loadu_ps(gh + a + 2 * R + j)), r), _mm256_sub_ps(one, r));
			if (dgi != NULL) {
				_mm256_storeu_ps(dgi + a + j, _mm256_add_ps(_mm256_loadu_ps(dgi + a + j), dr));
				_mm256_storeu_ps(dgi + a + R + j, _mm256_add_ps(_mm256_loadu_ps(dgi + a + R + j), dz));
				_mm256_storeu_ps(dgi + a + 2 * R + j, _mm256_add_ps(_mm256_loadu_ps(dgi + a + 2 * R + j), dc));
			}
			if (dgh != NULL) {
				_mm256_storeu_ps(dgh + a + j, _mm256_add_ps(_mm256_loadu_ps(dgh + a + j), dr));
				_mm256_storeu_ps(dgh + a + R + j, _mm256_add_ps(_mm256_loadu_ps(dgh + a + R + j), dz));
				_mm256_storeu_ps(dgh + a + 2 * R + j, _mm256_add_ps(_mm256_loadu_ps(dgh + a + 2 * R + j), _mm256_mul_ps(dc, r)));
			}
			if (dh != NULL) {
				_mm256_storeu_ps(dh + b + j, _mm256_add_ps(_mm256_loadu_ps(dh + b + j), _mm256_mul_ps(d, z)));
			}
		}
	}
}

// optim.go's AdamW update of elements lo to hi, the same operations in the
// same order (sqrt and division are correctly rounded in both).
AVX2 void rs_adamw_rows(float* p, const float* g, float* m, float* v, int64_t lo, int64_t hi, float b1, float c1, float b2,
		float c2, float bc2Sqrt, float eps, float decay, float stepSize) {
	__m256 vb1 = _mm256_set1_ps(b1), vc1 = _mm256_set1_ps(c1), vb2 = _mm256_set1_ps(b2), vc2 = _mm256_set1_ps(c2);
	__m256 vbc = _mm256_set1_ps(bc2Sqrt), veps = _mm256_set1_ps(eps), vdecay = _mm256_set1_ps(decay), vstep = _mm256_set1_ps(stepSize);
	int64_t i = lo;
	for (; i + 8 <= hi; i += 8) {
		__m256 gi = _mm256_loadu_ps(g + i);
		__m256 mi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(m + i), vb1), _mm256_mul_ps(vc1, gi));
		__m256 vi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), vb2), _mm256_mul_ps(_mm256_mul_ps(vc2, gi), gi));
		_mm256_storeu_ps(m + i, mi);
		_mm256_storeu_ps(v + i, vi);
		__m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), vbc), veps);
		__m256 pi = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i), vdecay), _mm256_mul_ps(vstep, _mm256_div_ps(mi, denom)));
		_mm256_storeu_ps(p + i, pi);
	}
	for (; i < hi; i++) {
		float gi = g[i];
		float mi = m[i] * b1 + c1 * gi;
		float vi = v[i] * b2 + c2 * gi * gi;
		m[i] = mi;
		v[i] = vi;
		float denom = _mm_cvtss_f32(_mm_sqrt_ss(_mm_set_ss(vi))) / bc2Sqrt + eps;
		p[i] = p[i] * decay - stepSize * (mi / denom);
	}
}

// kernels.go's softmaxRowsGo, the same operations in the same order: per
// row of in, its largest score, e = expf(s − max) (0 where s is −∞) into
// out, their float64 sum from the left, then each e times (float)(1/sum);
// the sum and max to sums and maxes unless NULL. (A NaN score may not
// become the row's max here as it does in Go's max, but its e is NaN
// either way, and so, through the sum, is every value of its row; and a
// zero max may be −0 where Go's is +0, which changes no s − max.) A
// row's last cols mod 8 scores go through masked loads and stores.
AVX2 void rs_softmax_rows(float* out, const float* in, int64_t rows, int64_t cols, double* sums, float* maxes) {
	__m256 ninf = _mm256_set1_ps(-__builtin_inff());
	__m256i all = _mm256_set1_epi32(-1);
	__m256i tail = rs_mask8(cols % 8);
	float lanes[8];
	for (int64_t i = 0; i < rows; i++) {
		const float* row = in + i * cols;
		float* o = out + i * cols;
		__m256 vmax = ninf;
		for (int64_t j = 0; j < cols; j += 8) {
			__m256i mask = cols - j >= 8 ? all : tail;
			__m256 s = _mm256_blendv_ps(ninf, _mm256_maskload_ps(row + j, mask), _mm256_castsi256_ps(mask));
			vmax = _mm256_max_ps(vmax, s);
		}
		_mm256_storeu_ps(lanes, vmax);
		float mx = lanes[0];
		for (int l = 1; l < 8; l++) {
			mx = lanes[l] > mx ? lanes[l] : mx;
		}
		__m256 m = _mm256_set1_ps(mx);
		double sum = 0;
		for (int64_t j = 0; j < cols; j += 8) {
			int64_t n = cols - j < 8 ? cols - j : 8;
			__m256i mask = n == 8 ? all : tail;
			__m256 s = _mm256_maskload_ps(row + j, mask);
			__m256 e = rs_expf8(_mm256_sub_ps(s, m));
			e = _mm256_blendv_ps(e, _mm256_setzero_ps(), _mm256_cmp_ps(s, ninf, _CMP_EQ_OQ));
			_mm256_maskstore_ps(o + j, mask, e);
			_mm256_storeu_ps(lanes, e);
			for (int64_t l = 0; l < n; l++) {
				sum += (double)lanes[l];
			}
		}
		__m256 inv = _mm256_set1_ps((float)(1.0 / sum));
		for (int64_t j = 0; j < cols; j += 8) {
			__m256i mask = cols - j >= 8 ? all : tail;
			_mm256_maskstore_ps(o + j, mask, _mm256_mul_ps(_mm256_maskload_ps(o + j, mask), inv));
		}
		if (sums != NULL) {
			sums[i] = sum;
			maxes[i] = mx;
		}
	}
}

// kernels.go's geluTanh.
static AVX2 inline __m256 rs_gelu_tanh8(__m256 v) {
	__m256 cube = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), v), v), v);
	return rs_tanhf8(_mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f), _mm256_add_ps(v, cube)));
}

// kernels.go's geluForwardGo and geluBackwardGo on elements lo to hi, the
// same float32 operations in the same order; the last (hi − lo) mod 8
// through masked loads and stores.
AVX2 void rs_gelu_forward(float* out, const float* x, int64_t lo, int64_t hi) {
	for (int64_t i = lo; i < hi; i += 8) {
		__m256i mask = rs_mask8(hi - i);
		__m256 v = _mm256_maskload_ps(x + i, mask);
		__m256 t = rs_gelu_tanh8(v);
		__m256 o = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v), _mm256_add_ps(_mm256_set1_ps(1.0f), t));
		_mm256_maskstore_ps(out + i, mask, o);
	}
}

AVX2 void rs_gelu_backward(float* dx, const float* dout, const float* x, int64_t lo, int64_t hi) {
	__m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
	for (int64_t i = lo; i < hi; i += 8) {
		__m256i mask = rs_mask8(hi - i);
		__m256 v = _mm256_maskload_ps(x + i, mask);
		__m256 t = rs_gelu_tanh8(v);
		__m256 slope = _mm256_add_ps(one, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.134145f), v), v));
		__m256 rest = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_sub_ps(one, _mm256_mul_ps(t, t))),
				_mm256_set1_ps(0.7978845608028654f)), slope);
		__m256 d = _mm256_add_ps(_mm256_mul_ps(half, _mm256_add_ps(one, t)), rest);
		__m256 g = _mm256_add_ps(_mm256_maskload_ps(dx + i, mask), _mm256_mul_ps(d, _mm256_maskload_ps(dout + i, mask)));
		_mm256_maskstore_ps(dx + i, mask, g);
	}
}

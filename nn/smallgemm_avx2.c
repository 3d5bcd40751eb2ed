//go:build cgo && amd64

// A small product C = op(A)·op(B) (+ C), for attention's per-head products.
// It exists because of what a call into OpenBLAS costs, not what it
// computes: attention makes a product per batch row and head, thousands a
// step for a narrow side network, from every core at once, and OpenBLAS
// locks one pool to lend each call its buffers, so the calls queue on each
// other (`go test -bench HeadGemm ./nn`, 20×20×8 on 2 goroutines: 0.17 µs a
// product here, OpenBLAS 0.26 to 0.72 as often as the calls collide). B's rows are read sixteen (or
// eight) columns at a time, four rows of C at once; a transposed B is first packed on the
// stack, or, for a row or three of A, each element is a dot product along
// k. Each element sums over k in order by fused multiply-adds (the dot
// products eight lanes at a time, then across them), then is added to C
// once.

#include <immintrin.h>
#include <stdint.h>

#include "lanes_avx2.h"
#include "smallgemm_avx2.h"

int rs_have_fma(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#define FMA __attribute__((target("avx2,fma")))

// RS_SMALL_PACKED bounds k·n (n rounded up to 8) where op(B) is packed on the
// stack.
#define RS_SMALL_PACKED 8192

// rs_put8 writes a row's columns j0 to j0+cols of C (cols ≤ 8).
static FMA inline void rs_put8(float* out, __m256 v, __m256i mask, int64_t cols, int accumulate) {
	if (accumulate) {
		v = _mm256_add_ps(_mm256_maskload_ps(out, mask), v);
	}
	if (cols == 8) {
		_mm256_storeu_ps(out, v);
	} else {
		_mm256_maskstore_ps(out, mask, v);
	}
}

// rs_rows4 is rows i0 to i0+4 of C at columns j0 to j0+8, reading op(B)'s
// row p at b + p·ldb + j0 (loads past n are masked).
static FMA inline void rs_rows4(int transA, int64_t i0, int64_t j0, int64_t n, int64_t k, const float* a, int64_t lda,
		const float* b, int64_t ldb, int accumulate, float* c, int64_t ldc) {
	const int64_t cols = n - j0 < 8 ? n - j0 : 8;
	const __m256i mask = rs_mask8(cols);
	// op(A)'s element (i0+r, p) is at a0 + r·rs + p·ps.
	const float* a0 = transA ? a + i0 : a + i0 * lda;
	const int64_t rs = transA ? 1 : lda, ps = transA ? lda : 1;
	__m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps(), c2 = _mm256_setzero_ps(), c3 = _mm256_setzero_ps();
	for (int64_t p = 0; p < k; p++) {
		const __m256 bv = cols == 8 ? _mm256_loadu_ps(b + p * ldb + j0) : _mm256_maskload_ps(b + p * ldb + j0, mask);
		const float* ap = a0 + p * ps;
		c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(ap), bv, c0);
		c1 = _mm256_fmadd_ps(_mm256_broadcast_ss(ap + rs), bv, c1);
		c2 = _mm256_fmadd_ps(_mm256_broadcast_ss(ap + 2 * rs), bv, c2);
		c3 = _mm256_fmadd_ps(_mm256_broadcast_ss(ap + 3 * rs), bv, c3);
	}
	rs_put8(c + i0 * ldc + j0, c0, mask, cols, accumulate);
	rs_put8(c + (i0 + 1) * ldc + j0, c1, mask, cols, accumulate);
	rs_put8(c + (i0 + 2) * ldc + j0, c2, mask, cols, accumulate);
	rs_put8(c + (i0 + 3) * ldc + j0, c3, mask, cols, accumulate);
}

// rs_rows4x16 is rs_rows4 for sixteen columns, all before n: two loads of B
// feed eight products.
static FMA inline void rs_rows4x16(int transA, int64_t i0, int64_t j0, int64_t k, const float* a, int64_t lda,
		const float* b, int64_t ldb, int accumulate, float* c, int64_t ldc) {
	const __m256i all = _mm256_set1_epi32(-1);
	const float* a0 = transA ? a + i0 : a + i0 * lda;
	const int64_t rs = transA ? 1 : lda, ps = transA ? lda : 1;
	__m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
	__m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
	for (int64_t p = 0; p < k; p++) {
		const __m256 b0 = _mm256_loadu_ps(b + p * ldb + j0), b1 = _mm256_loadu_ps(b + p * ldb + j0 + 8);
		const float* ap = a0 + p * ps;
		__m256 av = _mm256_broadcast_ss(ap);
		c00 = _mm256_fmadd_ps(av, b0, c00);
		c01 = _mm256_fmadd_ps(av, b1, c01);
		av = _mm256_broadcast_ss(ap + rs);
		c10 = _mm256_fmadd_ps(av, b0, c10);
		c11 = _mm256_fmadd_ps(av, b1, c11);
		av = _mm256_broadcast_ss(ap + 2 * rs);
		c20 = _mm256_fmadd_ps(av, b0, c20);
		c21 = _mm256_fmadd_ps(av, b1, c21);
		av = _mm256_broadcast_ss(ap + 3 * rs);
		c30 = _mm256_fmadd_ps(av, b0, c30);
		c31 = _mm256_fmadd_ps(av, b1, c31);
	}
	float* out = c + i0 * ldc + j0;
	rs_put8(out, c00, all, 8, accumulate);
	rs_put8(out + 8, c01, all, 8, accumulate);
	rs_put8(out + ldc, c10, all, 8, accumulate);
	rs_put8(out + ldc + 8, c11, all, 8, accumulate);
	rs_put8(out + 2 * ldc, c20, all, 8, accumulate);
	rs_put8(out + 2 * ldc + 8, c21, all, 8, accumulate);
	rs_put8(out + 3 * ldc, c30, all, 8, accumulate);
	rs_put8(out + 3 * ldc + 8, c31, all, 8, accumulate);
}

// rs_rows1 is rs_rows4 for row i0 alone.
static FMA inline void rs_rows1(int transA, int64_t i0, int64_t j0, int64_t n, int64_t k, const float* a, int64_t lda,
		const float* b, int64_t ldb, int accumulate, float* c, int64_t ldc) {
	const int64_t cols = n - j0 < 8 ? n - j0 : 8;
	const __m256i mask = rs_mask8(cols);
	const float* a0 = transA ? a + i0 : a + i0 * lda;
	const int64_t ps = transA ? lda : 1;
	__m256 c0 = _mm256_setzero_ps();
	for (int64_t p = 0; p < k; p++) {
		const __m256 bv = cols == 8 ? _mm256_loadu_ps(b + p * ldb + j0) : _mm256_maskload_ps(b + p * ldb + j0, mask);
		c0 = _mm256_fmadd_ps(_mm256_broadcast_ss(a0 + p * ps), bv, c0);
	}
	rs_put8(c + i0 * ldc + j0, c0, mask, cols, accumulate);
}

// rs_byrows is C (+)= op(A)·B for B stored k rows of n at stride ldb.
static FMA void rs_byrows(int transA, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
		int64_t ldb, int accumulate, float* c, int64_t ldc) {
	int64_t j0 = 0;
	for (; j0 + 16 <= n; j0 += 16) {
		int64_t i0 = 0;
		for (; i0 + 4 <= m; i0 += 4) {
			rs_rows4x16(transA, i0, j0, k, a, lda, b, ldb, accumulate, c, ldc);
		}
		for (; i0 < m; i0++) {
			rs_rows1(transA, i0, j0, n, k, a, lda, b, ldb, accumulate, c, ldc);
			rs_rows1(transA, i0, j0 + 8, n, k, a, lda, b, ldb, accumulate, c, ldc);
		}
	}
	for (; j0 < n; j0 += 8) {
		int64_t i0 = 0;
		for (; i0 + 4 <= m; i0 += 4) {
			rs_rows4(transA, i0, j0, n, k, a, lda, b, ldb, accumulate, c, ldc);
		}
		for (; i0 < m; i0++) {
			rs_rows1(transA, i0, j0, n, k, a, lda, b, ldb, accumulate, c, ldc);
		}
	}
}

// rs_hsum is the sum of v's lanes.
static FMA inline float rs_hsum(__m256 v) {
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

// rs_dots is C (+)= A·Bᵀ for A's rows (m few) and B's rows both along k: each
// element a dot product eight k at a time.
static FMA void rs_dots(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
		int accumulate, float* c, int64_t ldc) {
	const __m256i tail = rs_mask8(k % 8);
	for (int64_t i = 0; i < m; i++) {
		const float* ar = a + i * lda;
		for (int64_t j = 0; j < n; j++) {
			const float* br = b + j * ldb;
			__m256 acc = _mm256_setzero_ps();
			int64_t p = 0;
			for (; p + 8 <= k; p += 8) {
				acc = _mm256_fmadd_ps(_mm256_loadu_ps(ar + p), _mm256_loadu_ps(br + p), acc);
			}
			if (p < k) {
				acc = _mm256_fmadd_ps(_mm256_maskload_ps(ar + p, tail), _mm256_maskload_ps(br + p, tail), acc);
			}
			const float v = rs_hsum(acc);
			c[i * ldc + j] = accumulate ? c[i * ldc + j] + v : v;
		}
	}
}

void rs_sgemm_small(int transA, int transB, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
		const float* b, int64_t ldb, int accumulate, float* c, int64_t ldc) {
	if (!transB) {
		rs_byrows(transA, m, n, k, a, lda, b, ldb, accumulate, c, ldc);
		return;
	}
	if (m < 4 && !transA) {
		// A row or three against B's rows: packing Bᵀ would cost more than
		// the product.
		rs_dots(m, n, k, a, lda, b, ldb, accumulate, c, ldc);
		return;
	}
	const int64_t n8 = (n + 7) & ~(int64_t)7;
	float packed[RS_SMALL_PACKED] __attribute__((aligned(32)));
	for (int64_t p = 0; p < k; p++) {
		for (int64_t j = 0; j < n; j++) {
			packed[p * n8 + j] = b[j * ldb + p];
		}
	}
	rs_byrows(transA, m, n, k, a, lda, packed, n8, accumulate, c, ldc);
}

// The lane mask the AVX2 kernels (gates_avx2.c, smallgemm_avx2.c) load and
// store a row's last values through.

#include <immintrin.h>
#include <stdint.h>

// rs_mask8 has lanes 0 to min(n, 8) − 1 set.
static __attribute__((target("avx2"))) inline __m256i rs_mask8(int64_t n) {
	return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? n : 8)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

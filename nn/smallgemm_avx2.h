#include <stdint.h>

int rs_have_fma(void);
void rs_sgemm_small(int transA, int transB, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
		int64_t ldb, int accumulate, float* c, int64_t ldc);

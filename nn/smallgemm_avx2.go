//go:build cgo && amd64

package nn

// #include "smallgemm_avx2.h"
import "C"

// haveFMA is whether this CPU runs smallgemm_avx2.c's kernel.
var haveFMA = C.rs_have_fma() != 0

// smallGemmPacked is smallgemm_avx2.c's RS_SMALL_PACKED.
const smallGemmPacked = 8192

// smallGemm is c = op(a)·op(b) (+ c when accumulate) in smallgemm_avx2.c
// where the CPU has AVX2 and FMA and op(b) fits its buffer (k·n, n
// rounded up to 8, at most smallGemmPacked); it reports false, doing
// nothing, otherwise. Shapes that do not fit their slices panic, as the
// backends' Sgemm does, before C reads any.
func smallGemm(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, accumulate bool, c []float32, ldc int) bool {
	if !haveFMA || m == 0 || n == 0 || k == 0 || k*((n+7)&^7) > smallGemmPacked {
		return false
	}
	checkGemm(transA, transB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc)
	C.rs_sgemm_small(cBool(transA), cBool(transB), C.int64_t(m), C.int64_t(n), C.int64_t(k), cFloats(a), C.int64_t(lda),
		cFloats(b), C.int64_t(ldb), cBool(accumulate), cFloats(c), C.int64_t(ldc))
	return true
}

func cBool(v bool) C.int {
	if v {
		return 1
	}
	return 0
}

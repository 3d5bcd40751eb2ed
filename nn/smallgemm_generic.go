//go:build !cgo || !amd64

package nn

// smallGemm has no kernel here: attention's products go to the backend.
func smallGemm(transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, accumulate bool, c []float32, ldc int) bool {
	return false
}

// haveFMA: no kernel to run.
const haveFMA = false

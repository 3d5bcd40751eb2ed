package nn

import "fmt"

// checkGemm panics when a row-major product would read or write outside its
// slices (cgo BLAS would corrupt memory instead).
func checkGemm(transA, transB bool, m, n, k, la, lda, lb, ldb, lc, ldc int) {
	rows := func(trans bool, r, c int) (int, int) {
		if trans {
			return c, r
		}
		return r, c
	}
	ar, ac := rows(transA, m, k)
	br, bc := rows(transB, k, n)
	need := func(name string, r, c, l, ld int) {
		if r > 0 && (ld < c || (r-1)*ld+c > l) {
			panic(fmt.Sprintf("nn: Sgemm: %s is %d×%d with ld %d but has %d elements", name, r, c, ld, l))
		}
	}
	need("a", ar, ac, la, lda)
	need("b", br, bc, lb, ldb)
	need("c", m, n, lc, ldc)
}

func mustLen(op, name string, got, want int) {
	if got != want {
		panic(fmt.Sprintf("nn: %s: len(%s)=%d, want %d", op, name, got, want))
	}
}

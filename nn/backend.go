package nn

import (
	"runtime"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// Backend computes matrix products. Everything else is plain Go.
type Backend interface {
	// Sgemm computes c = alpha·op(a)·op(b) + beta·c for row-major
	// matrices: op(a) is m×k, op(b) is k×n, c is m×n, with leading
	// dimensions lda, ldb, ldc.
	Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int)
	Name() string
}

// Gonum is the pure-Go backend.
type Gonum struct{}

func (Gonum) Name() string { return "gonum" }

func (Gonum) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	ta, tb := blas.NoTrans, blas.NoTrans
	if transA {
		ta = blas.Trans
	}
	if transB {
		tb = blas.Trans
	}
	gonum.Implementation{}.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// parallelFor runs fn over [0, n) in contiguous chunks on up to GOMAXPROCS
// goroutines; grain is the least work worth a goroutine.
func parallelFor(n, grain int, fn func(lo, hi int)) {
	parallelParts(n, grain, runtime.GOMAXPROCS(0), func(_, lo, hi int) { fn(lo, hi) })
}

// parallelParts is parallelFor on at most parts goroutines, telling fn
// which part (0, 1, …) it runs, so that each part can have its own working
// memory. The cut depends on n, grain, parts and GOMAXPROCS alone.
func parallelParts(n, grain, parts int, fn func(part, lo, hi int)) {
	workers := min(parts, runtime.GOMAXPROCS(0))
	if grain < 1 {
		grain = 1
	}
	if w := n / grain; w < workers {
		workers = w
	}
	if workers <= 1 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	chunk := (n + workers - 1) / workers
	for part, lo := 0, 0; lo < n; part, lo = part+1, lo+chunk {
		hi := min(lo+chunk, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(part, lo, hi)
		}()
	}
	wg.Wait()
}

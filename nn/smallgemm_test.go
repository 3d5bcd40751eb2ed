package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
)

// TestSmallGemm holds smallGemm to a float64 product on every transpose
// pair, padded leading dimensions, both overwrite and accumulate, and
// shapes around its 4-row and 8-column blocks, its packed and
// dot-product paths and k not a multiple of 8; it must leave C's columns
// past n alone, decline what its buffer cannot hold, and decline
// everything on a CPU without AVX2 and FMA.
func TestSmallGemm(t *testing.T) {
	if !haveFMA {
		if smallGemm(false, false, 1, 1, 1, []float32{1}, 1, []float32{1}, 1, false, []float32{0}, 1) {
			t.Fatal("smallGemm ran on a CPU without AVX2 and FMA")
		}
		t.Logf("no AVX2/FMA: attention's products go to the backend")
		return
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, size := range [][3]int{{1, 1, 1}, {1, 22, 64}, {2, 9, 13}, {3, 3, 8}, {4, 16, 8}, {5, 17, 3}, {20, 20, 8}, {20, 8, 20}, {9, 33, 64}, {64, 64, 8}, {7, 100, 72}} {
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				for _, acc := range []bool{false, true} {
					m, n, k := size[0], size[1], size[2]
					a, lda, b, ldb, c0, ldc := gemmOperands(rng, ta, tb, m, n, k)
					c := append([]float32(nil), c0...)
					if !smallGemm(ta, tb, m, n, k, a, lda, b, ldb, acc, c, ldc) {
						t.Fatalf("%v: smallGemm declined", size)
					}
					for i := 0; i < m; i++ {
						for j := 0; j < n; j++ {
							var want, scale float64
							for p := 0; p < k; p++ {
								var x, y float32
								if ta {
									x = a[p*lda+i]
								} else {
									x = a[i*lda+p]
								}
								if tb {
									y = b[j*ldb+p]
								} else {
									y = b[p*ldb+j]
								}
								want += float64(x) * float64(y)
								scale += math.Abs(float64(x) * float64(y))
							}
							if acc {
								want += float64(c0[i*ldc+j])
								scale += math.Abs(float64(c0[i*ldc+j]))
							}
							if got := float64(c[i*ldc+j]); math.Abs(got-want) > 1e-6*(scale+1) {
								t.Fatalf("%v ta=%v tb=%v acc=%v: c[%d,%d] = %g, want %g", size, ta, tb, acc, i, j, got, want)
							}
						}
						// Columns past n are the caller's.
						for j := n; j < ldc; j++ {
							if c[i*ldc+j] != c0[i*ldc+j] {
								t.Fatalf("%v: wrote c[%d,%d] past n", size, i, j)
							}
						}
					}
				}
			}
		}
	}
	// k·n beyond its buffer (80 × 104 floats) goes to the backend.
	if smallGemm(false, false, 7, 100, 80, make([]float32, 7*80), 80, make([]float32, 80*100), 100, false, make([]float32, 700), 100) {
		t.Fatal("smallGemm took a product whose op(b) does not fit its buffer")
	}
}

// BenchmarkHeadGemm times attention's per-head products, 20×20×8 (a narrow
// side network's head) to 1×22×64 and 20×20×64 (t5-small's with short
// inputs) and 64×64×64 (t5-small's and t5-base's at 64 tokens), in the
// three transpose pairs attention uses (NT: q·kᵀ, dout·vᵀ; NN: probs·v,
// ds·k; TN: probsᵀ·dout, dsᵀ·q), on smallGemm and on the default backend,
// one goroutine and one per core at once (as attention calls them); the
// ns/op are per product.
func BenchmarkHeadGemm(b *testing.B) {
	be := DefaultBackend()
	for _, size := range [][3]int{{20, 20, 8}, {20, 8, 20}, {64, 64, 8}, {1, 22, 64}, {20, 20, 64}, {20, 64, 20}, {64, 64, 64}} {
		m, n, k := size[0], size[1], size[2]
		for _, op := range []string{"NT", "NN", "TN"} {
			ta, tb := op[0] == 'T', op[1] == 'T'
			for _, kernel := range []string{"small", be.Name()} {
				for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
					b.Run(fmt.Sprintf("%dx%dx%d/%s/%s/goroutines=%d", m, n, k, op, kernel, workers), func(b *testing.B) {
						rng := rand.New(rand.NewPCG(1, 1))
						x, lda, y, ldb, _, ldc := gemmOperands(rng, ta, tb, m, n, k)
						var wg sync.WaitGroup
						per := b.N/workers + 1
						b.ResetTimer()
						for w := 0; w < workers; w++ {
							wg.Add(1)
							go func() {
								defer wg.Done()
								c := make([]float32, m*ldc)
								for range per {
									if kernel != "small" || !smallGemm(ta, tb, m, n, k, x, lda, y, ldb, false, c, ldc) {
										be.Sgemm(ta, tb, m, n, k, 1, x, lda, y, ldb, 0, c, ldc)
									}
								}
							}()
						}
						wg.Wait()
						b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(per*workers), "ns/product")
					})
				}
			}
		}
	}
}

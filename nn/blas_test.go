package nn

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"
)

// TestDefaultBackendIsWhatOpens checks the run-time choice: OpenBLAS where
// a library opens (required where the environment says one is installed,
// as CI does), else gonum with the reason naming what was tried.
func TestDefaultBackendIsWhatOpens(t *testing.T) {
	o, err := LoadOpenBLAS()
	be := DefaultBackend()
	if os.Getenv("READSWEEP_EXPECT_BLAS") == "openblas" && err != nil {
		t.Fatalf("READSWEEP_EXPECT_BLAS=openblas but %v", err)
	}
	if os.Getenv("READSWEEP_EXPECT_BLAS") == "gonum" && err == nil {
		t.Fatalf("READSWEEP_EXPECT_BLAS=gonum but OpenBLAS opened: %s", o.Info())
	}
	if err != nil {
		if be.Name() != "gonum" {
			t.Fatalf("OpenBLAS failed (%v) but the default backend is %s", err, be.Name())
		}
		if canDlopen && os.Getenv(EnvOpenBLAS) != "off" && !strings.Contains(err.Error(), "libopenblas.so.0") {
			t.Fatalf("the reason does not name the libraries tried: %v", err)
		}
		return
	}
	if be.Name() != "openblas" || o.Info().Path == "" {
		t.Fatalf("OpenBLAS opened but the default backend is %s (info %+v)", be.Name(), o.Info())
	}
	if !strings.Contains(BLASDescription(), o.Info().Path) {
		t.Fatalf("BLASDescription %q does not name %s", BLASDescription(), o.Info().Path)
	}
	t.Logf("OpenBLAS: %s", o.Info())
}

// TestOpenBLASProducts compares every transpose pair, padded leading
// dimensions and alpha/beta against gonum, on whatever library opened: a
// small product, and large ones that OpenBLAS cuts into parts by rows
// (m ≥ n) and by columns, with sizes that leave a short last part.
func TestOpenBLASProducts(t *testing.T) {
	be := DefaultBackend()
	if info, ok := be.(interface{ Info() BLASInfo }); ok {
		t.Logf("%s", info.Info())
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range [][3]int{{7, 5, 9}, {203, 37, 61}, {5, 301, 199}} {
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				m, n, k := size[0], size[1], size[2]
				a, lda, b, ldb, c, ldc := gemmOperands(rng, ta, tb, m, n, k)
				want := append([]float32(nil), c...)
				be.Sgemm(ta, tb, m, n, k, 0.7, a, lda, b, ldb, 0.3, c, ldc)
				Gonum{}.Sgemm(ta, tb, m, n, k, 0.7, a, lda, b, ldb, 0.3, want, ldc)
				for i := range c {
					if math.Abs(float64(c[i]-want[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
						t.Fatalf("%s %v ta=%v tb=%v: c[%d] = %g, gonum %g", be.Name(), size, ta, tb, i, c[i], want[i])
					}
				}
			}
		}
	}
}

// gemmOperands makes random a, b and c for an m×n×k product with the
// given transposes, each with a leading dimension past its width.
func gemmOperands(rng *rand.Rand, ta, tb bool, m, n, k int) (a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	lda, ldb, ldc = k+2, n+1, n+3
	rowsA, rowsB := m, k
	if ta {
		lda, rowsA = m+2, k
	}
	if tb {
		ldb, rowsB = k+1, n
	}
	return randSlice(rng, rowsA*lda), lda, randSlice(rng, rowsB*ldb), ldb, randSlice(rng, m*ldc), ldc
}

func randSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64())
	}
	return s
}

// TestOpenBLASBadLibraries: what a mistyped $READSWEEP_OPENBLAS or a
// library that is not a CBLAS gives: an error naming it, never a crash.
func TestOpenBLASBadLibraries(t *testing.T) {
	_, err := openOpenBLAS([]string{"/nonexistent/libopenblas.so"})
	if !canDlopen {
		if err == nil || !strings.Contains(err.Error(), "without cgo") {
			t.Fatalf("a build without cgo: %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/libopenblas.so") {
		t.Fatalf("missing file: %v", err)
	}
	_, err = openOpenBLAS([]string{"libm.so.6"})
	if err == nil || !strings.Contains(err.Error(), "has no cblas_sgemm") {
		t.Fatalf("a library without cblas_sgemm: %v", err)
	}
}

func TestGonumNotice(t *testing.T) {
	var buf bytes.Buffer
	writeGonumNotice(&buf, errors.New("no OpenBLAS opens (libopenblas.so.0: cannot open shared object file)"))
	wants := []string{"gonum", "libopenblas.so.0: cannot open", "apt install libopenblas0-pthread", EnvOpenBLAS, "faster"}
	if !canDlopen {
		wants = []string{"gonum", "libopenblas.so.0: cannot open", "CGO_ENABLED=1", "faster"}
	}
	for _, want := range wants {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("notice lacks %q:\n%s", want, buf.String())
		}
	}
}

// BenchmarkSgemmT5Small times one set of t5-small's products (batch 8 × 64
// tokens: projections, feed-forward, per-head attention) on the default
// backend and on gonum in the same run and reports gonum's time over it:
// the speed-up writeGonumNotice quotes.
func BenchmarkSgemmT5Small(b *testing.B) {
	rows, d, ff, dh, t := 512, 512, 2048, 64, 64
	rng := rand.New(rand.NewPCG(3, 4))
	x, w, h := randSlice(rng, rows*ff), randSlice(rng, d*ff), randSlice(rng, rows*ff)
	step := func(be Backend) {
		be.Sgemm(false, true, rows, d, d, 1, x, d, w, d, 0, h, d)    // a projection, y = x·Wᵀ
		be.Sgemm(false, true, rows, ff, d, 1, x, d, w, d, 0, h, ff)  // feed-forward in
		be.Sgemm(true, false, d, ff, rows, 1, x, d, h, ff, 0, w, ff) // its weight gradient
		for range 8 * 8 {                                            // scores of 8 sequences × 8 heads
			be.Sgemm(false, true, t, t, dh, 1, x, dh, h, dh, 0, w, t)
		}
	}
	def := DefaultBackend()
	var ours, gonum time.Duration
	for range b.N {
		s := time.Now()
		step(def)
		ours += time.Since(s)
		s = time.Now()
		step(Gonum{})
		gonum += time.Since(s)
	}
	b.ReportMetric(float64(ours.Microseconds())/float64(b.N), def.Name()+"-µs/set")
	b.ReportMetric(float64(gonum.Microseconds())/float64(b.N), "gonum-µs/set")
	b.ReportMetric(float64(gonum)/float64(ours), "gonum/"+def.Name())
	b.Logf("%s; OPENBLAS_CORETYPE=%q", BLASDescription(), os.Getenv("OPENBLAS_CORETYPE"))
}

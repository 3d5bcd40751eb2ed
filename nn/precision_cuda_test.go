//go:build cgo && linux

package nn

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/nn/cudatest"
)

// TestGPUPrecisionIsTheCPUs: on the emulated GPU, tf32 (cuBLAS's math
// mode) and bf16 (operands converted by to_bf16, multiplied by
// cublasGemmEx and its strided-batched form) give the products the CPU's
// rounded operands give, for every transpose, plain and batched.
func TestGPUPrecisionIsTheCPUs(t *testing.T) {
	c := openEmulated(t)
	r := rand.New(rand.NewPCG(5, 6))
	const m, n, k, pad, batch = 6, 4, 19, 2, 3
	for _, p := range []Precision{TF32, BF16, FP32} {
		if err := c.SetPrecision(p); err != nil {
			t.Fatal(err)
		}
		cpu, _ := WithPrecision(Gonum{}, p)
		for _, transA := range []bool{false, true} {
			for _, transB := range []bool{false, true} {
				aRows, aCols := storedShape(transA, m, k)
				bRows, bCols := storedShape(transB, k, n)
				lda, ldb := aCols+pad, bCols+pad
				sa, sb, sc := aRows*lda+1, bRows*ldb+3, m*n
				a, b := make([]float32, batch*sa), make([]float32, batch*sb)
				for i := range a {
					a[i] = float32(r.NormFloat64())
				}
				for i := range b {
					b[i] = float32(r.NormFloat64())
				}
				want := make([]float32, batch*sc)
				for i := range batch {
					cpu.Sgemm(transA, transB, m, n, k, 1, a[i*sa:], lda, b[i*sb:], ldb, 0, want[i*sc:], n)
				}
				da, db, dc := c.Upload(a), c.Upload(b), c.Alloc(batch*sc)
				d1 := c.Alloc(sc)
				c.do(func() {
					c.gemmBatched(transA, transB, m, n, k, 1, da, lda, sa, db, ldb, sb, 0, dc, n, sc, batch)
					c.gemm(transA, transB, m, n, k, 1, da, lda, db, ldb, 0, d1, n)
				})
				got, one := make([]float32, batch*sc), make([]float32, sc)
				if err := c.Download(got, dc); err != nil {
					t.Fatal(err)
				}
				if err := c.Download(one, d1); err != nil {
					t.Fatal(err)
				}
				c.Free(da, db, dc, d1)
				for i := range want {
					tol := 1e-5 * (1 + math.Abs(float64(want[i])))
					if math.Abs(float64(got[i]-want[i])) > tol || i < sc && math.Abs(float64(one[i]-want[i])) > tol {
						t.Fatalf("%s transA=%v transB=%v: element %d: GPU %g (single %g), CPU %g", p, transA, transB, i, got[i], one[i], want[i])
					}
				}
			}
		}
	}
}

// TestBF16BackwardConvertsEachOperandOnce: a product's backward at bf16
// converts the output's gradient once for both of its products (three
// conversions, not four), and its gradients are the CPU's with rounded
// operands.
func TestBF16BackwardConvertsEachOperandOnce(t *testing.T) {
	c := openEmulated(t)
	if err := c.SetPrecision(BF16); err != nil {
		t.Fatal(err)
	}
	defer c.SetPrecision(FP32)
	rng := rand.New(rand.NewPCG(7, 8))
	const N, C, OC = 5, 7, 3
	x, w := randTensor(rng, true, N, C), randTensor(rng, true, OC, C)
	G := make([]float32, N*OC)
	for i := range G {
		G[i] = float32(rng.NormFloat64())
	}
	cpuBE, _ := WithPrecision(Gonum{}, BF16)
	cpu := NewGraph(cpuBE)
	backwardFrom(cpu, cpu.Linear(x, w, nil), G)
	wantX, wantW := clone(x.Grad), clone(w.Grad)
	clear(x.Grad)
	clear(w.Grad)

	dx, dw, dout := c.Upload(make([]float32, N*C)), c.Upload(make([]float32, OC*C)), c.Upload(G)
	before := c.Calls()
	c.MatmulBackward(dx, dw, Buffer{}, dout, c.Upload(x.Data), c.Upload(w.Data), N, C, OC)
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	if k := c.Calls().Kernels - before.Kernels; k != 3 {
		t.Errorf("a bf16 product's backward launched %d conversions, want 3 (the output's gradient once)", k)
	}
	h := &gpuCheck{t: t, c: c}
	h.expect("dx", dx, wantX, 1e-6)
	h.expect("dw", dw, wantW, 1e-6)
}

// TestBF16ConversionFailureIsAnError: an operand too short for its
// product fails the conversion, and the device's sticky error says so;
// cuBLAS is not handed the nil operand (it crashed the process).
func TestBF16ConversionFailureIsAnError(t *testing.T) {
	lib := cudatest.Emulator(t)
	c, err := OpenCUDA(CUDAOptions{Driver: lib, BLAS: []string{lib}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() // it reports the failure again
	if err := c.SetPrecision(BF16); err != nil {
		t.Fatal(err)
	}
	const N, C, OC = 2, 3, 4
	c.MatmulBackward(c.Alloc(N*C), c.Alloc(OC*C), Buffer{}, c.Alloc(3), c.Alloc(N*C), c.Alloc(OC*C), N, C, OC)
	if err := c.Sync(); err == nil || !strings.Contains(err.Error(), "bf16") {
		t.Errorf("a 3-value output gradient for a 2 × 4 product: %v, want an error naming the bf16 product", err)
	}
}

package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// roundReference rounds x to a significand of bits bits (the implicit one
// included) in float64: nearest, ties to even.
func roundReference(x float32, bits int) float32 {
	frac, exp := math.Frexp(float64(x)) // x = frac·2^exp, |frac| in [0.5, 1)
	q := math.RoundToEven(math.Ldexp(frac, bits))
	return float32(math.Ldexp(q, exp-bits))
}

// TestPrecisionRound: bf16 keeps 8 significant bits, tf32 11, each to
// nearest with ties to even, over random normal numbers and the edges.
func TestPrecisionRound(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200000 {
		x := float32(math.Ldexp(r.Float64()*2-1, r.IntN(200)-100))
		if i%7 == 0 { // exact halfway cases
			x = roundReference(x, 12) // 12 bits: halfway for tf32 when bit 12 is set
		}
		for _, c := range []struct {
			p    Precision
			bits int
		}{{BF16, 8}, {TF32, 11}, {FP32, 24}} {
			if got, want := c.p.Round(x), roundReference(x, c.bits); got != want {
				t.Fatalf("%s.Round(%b) = %b, want %b", c.p, x, got, want)
			}
		}
	}
	for _, c := range []struct {
		x, want float32
	}{
		{1 + 1.0/256, 1},                                 // halfway, to the even 1
		{1 + 3.0/256, 1 + 4.0/256},                       // halfway, to the even 1+2⁻⁶
		{float32(math.MaxFloat32), float32(math.Inf(1))}, // rounds past the largest bf16
		{float32(math.Inf(-1)), float32(math.Inf(-1))},
		{0, 0},
	} {
		if got := BF16.Round(c.x); got != c.want {
			t.Errorf("BF16.Round(%g) = %g, want %g", c.x, got, c.want)
		}
	}
	if nan := BF16.Round(float32(math.NaN())); nan == nan {
		t.Error("NaN rounded to a number")
	}
}

// TestRoundedProductIsItsReference: a product at bf16 or tf32 equals the
// float64 product of the rounded operands (within float32 accumulation),
// for every transpose and leading dimension, and differs from the fp32
// product.
func TestRoundedProductIsItsReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const m, n, k, pad = 7, 5, 33, 3
	for _, p := range []Precision{BF16, TF32} {
		be, err := WithPrecision(Gonum{}, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, transA := range []bool{false, true} {
			for _, transB := range []bool{false, true} {
				aRows, aCols := storedShape(transA, m, k)
				bRows, bCols := storedShape(transB, k, n)
				lda, ldb := aCols+pad, bCols+pad
				a, b := make([]float32, aRows*lda), make([]float32, bRows*ldb)
				for i := range a {
					a[i] = float32(r.NormFloat64())
				}
				for i := range b {
					b[i] = float32(r.NormFloat64())
				}
				at := func(i, l int) float32 { // op(a)[i][l]
					if transA {
						return a[l*lda+i]
					}
					return a[i*lda+l]
				}
				bt := func(l, j int) float32 {
					if transB {
						return b[j*ldb+l]
					}
					return b[l*ldb+j]
				}
				c := make([]float32, m*n)
				full := make([]float32, m*n)
				be.Sgemm(transA, transB, m, n, k, 1, a, lda, b, ldb, 0, c, n)
				Gonum{}.Sgemm(transA, transB, m, n, k, 1, a, lda, b, ldb, 0, full, n)
				moved := false
				for i := range m {
					for j := range n {
						var want, scale float64
						for l := range k {
							term := float64(p.Round(at(i, l))) * float64(p.Round(bt(l, j)))
							want += term
							scale += math.Abs(term)
						}
						if math.Abs(float64(c[i*n+j])-want) > 1e-6*scale {
							t.Fatalf("%s transA=%v transB=%v: c[%d][%d] = %g, rounded-operand reference %g", p, transA, transB, i, j, c[i*n+j], want)
						}
						moved = moved || c[i*n+j] != full[i*n+j]
					}
				}
				if !moved {
					t.Errorf("%s transA=%v transB=%v: the product equals fp32's: no operand was rounded", p, transA, transB)
				}
			}
		}
	}
	if be, _ := WithPrecision(Gonum{}, FP32); be != (Backend(Gonum{})) {
		t.Errorf("fp32 wraps the backend: %T", be)
	}
}

// TestAttentionRoundsBehindAWrapper: attention's small per-head products
// (smallGemm on an fp32 backend) round their operands too when the rounded
// backend sits behind another, as `sweep bench t5` counts it.
func TestAttentionRoundsBehindAWrapper(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const B, Tq, Tk, H, K = 2, 5, 6, 2, 8
	q, k, v := make([]float32, B*Tq*H*K), make([]float32, B*Tk*H*K), make([]float32, B*Tk*H*K)
	for _, x := range [][]float32{q, k, v} {
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
	}
	run := func(be Backend) []float32 {
		out, probs := make([]float32, B*Tq*H*K), make([]float32, B*H*Tq*Tk)
		AttentionForward(be, out, probs, nil, nil, q, k, v, nil, nil, false, 0, B, Tq, Tk, H, K)
		return out
	}
	bf16, _ := WithPrecision(Gonum{}, BF16)
	direct, wrapped, fp32 := run(bf16), run(wrapper{bf16}), run(Gonum{})
	same, moved := true, false
	for i := range direct {
		same = same && direct[i] == wrapped[i]
		moved = moved || direct[i] != fp32[i]
	}
	if !same || !moved {
		t.Errorf("bf16 attention behind a wrapper equals the unwrapped one: %v; differs from fp32: %v", same, moved)
	}
}

// wrapper passes products through, as a counting backend does.
type wrapper struct{ Backend }

func (w wrapper) ProductPrecision() Precision { return ProductPrecision(w.Backend) }

package nn

import (
	"fmt"
	"math"
	"sync"
)

// Precision is the precision matrix products read their operands at,
// the training setting `precision`. Everything else (norms, softmax, the
// loss, the optimiser and its state, the master weights) stays float32, as
// under PyTorch's torch.autocast, and products accumulate in float32.
type Precision int

const (
	// FP32 reads operands in full: PyTorch with TF32 off
	// (torch.backends.cuda.matmul.allow_tf32 = False).
	FP32 Precision = iota
	// TF32 reads them with a 10-bit significand, as tensor cores do
	// under cuBLAS's TF32 math mode (allow_tf32 = True).
	TF32
	// BF16 reads them as bfloat16 (an 8-bit significand), as products do
	// under torch.autocast(dtype=torch.bfloat16).
	BF16
)

// ParsePrecision reads fp32, tf32 or bf16.
func ParsePrecision(s string) (Precision, error) {
	switch s {
	case "fp32":
		return FP32, nil
	case "tf32":
		return TF32, nil
	case "bf16":
		return BF16, nil
	}
	return FP32, fmt.Errorf("precision %q: want fp32, tf32 or bf16", s)
}

func (p Precision) String() string {
	switch p {
	case TF32:
		return "tf32"
	case BF16:
		return "bf16"
	}
	return "fp32"
}

// Round returns x as a product reads it at p: its significand cut to p's
// width, rounded to nearest, ties to even (PyTorch's float-to-bfloat16
// rounding; NaN stays NaN, and a value that rounds past the largest
// finite one becomes infinite, as in the conversion).
func (p Precision) Round(x float32) float32 {
	var drop uint32 // significand bits dropped
	switch p {
	case TF32:
		drop = 13
	case BF16:
		drop = 16
	default:
		return x
	}
	bits := math.Float32bits(x)
	if x != x {
		return math.Float32frombits(bits | 1<<22) // quiet, whatever it rounds to
	}
	half := uint32(1)<<(drop-1) - 1 + (bits>>drop)&1
	return math.Float32frombits((bits + half) &^ (1<<drop - 1))
}

// WithPrecision returns a backend whose products read their operands at p.
// On the CPU it wraps be: each product rounds copies of its operands, then
// runs on be at float32 (so CPU runs test the numerics a GPU's reduced
// precision gives). A GPU sets its own math mode.
func WithPrecision(be Backend, p Precision) (Backend, error) {
	if g, ok := be.(interface{ SetPrecision(Precision) error }); ok {
		return be, g.SetPrecision(p)
	}
	if p == FP32 {
		return be, nil
	}
	return roundedBackend{be, p, &sync.Pool{New: func() any { return new([]float32) }}}, nil
}

// roundedBackend runs be's products on operands rounded to p.
type roundedBackend struct {
	Backend
	p       Precision
	scratch *sync.Pool // rounded copies of operands, kept between products
}

func (r roundedBackend) Name() string { return r.Backend.Name() + ", " + r.p.String() + " products" }

// ProductPrecision is what be's products read their operands at. A backend
// that wraps another (to count or time its products) passes it on by
// having the same method.
func ProductPrecision(be Backend) Precision {
	if r, ok := be.(interface{ ProductPrecision() Precision }); ok {
		return r.ProductPrecision()
	}
	return FP32
}

func (r roundedBackend) ProductPrecision() Precision { return r.p }

func (r roundedBackend) Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 || k == 0 {
		r.Backend.Sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	aRows, aCols := storedShape(transA, m, k)
	bRows, bCols := storedShape(transB, k, n)
	ab := r.scratch.Get().(*[]float32)
	bb := r.scratch.Get().(*[]float32)
	ra := r.roundInto(ab, a, aRows, aCols, lda)
	rb := r.roundInto(bb, b, bRows, bCols, ldb)
	r.Backend.Sgemm(transA, transB, m, n, k, alpha, ra, aCols, rb, bCols, beta, c, ldc)
	r.scratch.Put(ab)
	r.scratch.Put(bb)
}

// roundInto copies the rows×cols matrix at src (leading dimension ld) into
// *buf, packed, each element rounded.
func (r roundedBackend) roundInto(buf *[]float32, src []float32, rows, cols, ld int) []float32 {
	if cap(*buf) < rows*cols {
		*buf = make([]float32, rows*cols)
	}
	dst := (*buf)[:rows*cols]
	parallelFor(rows, max(1, 16384/max(cols, 1)), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := src[i*ld : i*ld+cols]
			out := dst[i*cols : (i+1)*cols]
			for j, x := range row {
				out[j] = r.p.Round(x)
			}
		}
	})
	return dst
}

// storedShape is the rows and columns an operand is stored with when the
// product reads it as op(x), rows×cols: transposed, it is cols rows of rows.
func storedShape(trans bool, rows, cols int) (int, int) {
	if trans {
		return cols, rows
	}
	return rows, cols
}

package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

func backends() []Backend {
	if DefaultBackend().Name() == "gonum" {
		return []Backend{Gonum{}}
	}
	return []Backend{DefaultBackend(), Gonum{}}
}

func randTensor(rng *rand.Rand, grad bool, shape ...int) *Tensor {
	t := &Tensor{Shape: shape, Data: make([]float32, numel(shape))}
	for i := range t.Data {
		t.Data[i] = float32(rng.NormFloat64())
	}
	if grad {
		t.Grad = make([]float32, len(t.Data))
	}
	return t
}

// awayFromZero pushes values out of (−m, m), for ops with a kink at 0.
func awayFromZero(t *Tensor, m float32) *Tensor {
	for i, v := range t.Data {
		if v >= 0 && v < m {
			t.Data[i] = v + m
		} else if v < 0 && v > -m {
			t.Data[i] = v - m
		}
	}
	return t
}

// backwardFrom runs g's tape in reverse from the output gradient G of
// out (on the host or in out's device gradient), as Backward does from a
// loss's 1.
func backwardFrom(g *Graph, out *Tensor, G []float32) {
	if g.gpu != nil {
		out.dev.dev.Write(g.gpu.gradBuffer(out), G)
	} else {
		copy(out.Grad, G)
	}
	for i := len(g.tape) - 1; i >= 0; i-- {
		g.tape[i]()
	}
}

// checkGrad compares the tape's gradients of Σ out⊙G (G fixed random)
// with central differences for every input with a Grad, and fails with
// the ∞-norm of the error.
func checkGrad(t *testing.T, be Backend, inputs []*Tensor, eps float64, f func(g *Graph) *Tensor) {
	t.Helper()
	if _, ok := be.(graphDevice); ok {
		checkOnDevice(t, be, inputs, eps, f)
		return
	}
	rng := rand.New(rand.NewPCG(9, 9))
	g := NewGraph(be)
	out := f(g)
	G := make([]float32, out.Len())
	for i := range G {
		G[i] = float32(rng.NormFloat64())
	}
	if out.Grad == nil {
		t.Fatal("output has no gradient")
	}
	backwardFrom(g, out, G)
	objective := func() float64 {
		h := NewGraph(be)
		h.NoGrad = true
		o := f(h)
		var s float64
		for i, v := range o.Values() {
			s += float64(v) * float64(G[i])
		}
		return s
	}
	for ti, in := range inputs {
		if in.Grad == nil {
			continue
		}
		var worst, scale float64
		for _, v := range in.Grad {
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		for i := range in.Data {
			orig := in.Data[i]
			in.Data[i] = orig + float32(eps)
			up := objective()
			in.Data[i] = orig - float32(eps)
			down := objective()
			in.Data[i] = orig
			num := (up - down) / (2 * eps)
			worst = math.Max(worst, math.Abs(num-float64(in.Grad[i])))
		}
		if tol := 2e-3 + 2e-2*scale; worst > tol {
			t.Errorf("input %d %v: ‖analytic − numeric‖∞ = %.3g > %.3g (max |grad| %.3g)", ti, in.Shape, worst, tol, scale)
		}
	}
}

// opCase builds inputs and checks one op (or a composition) with checkGrad.
type opCase struct {
	name string
	run  func(t *testing.T, be Backend, rng *rand.Rand)
}

func TestOpGradients(t *testing.T) {
	for _, be := range backends() {
		for i, c := range opCases() {
			t.Run(fmt.Sprintf("%s/%s", be.Name(), c.name), func(t *testing.T) {
				c.run(t, be, rand.New(rand.NewPCG(uint64(i), 1)))
			})
		}
	}
}

func opCases() []opCase {
	return []opCase{
		{"linear", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, w, b := randTensor(rng, true, 2, 3, 5), randTensor(rng, true, 4, 5), randTensor(rng, true, 4)
			checkGrad(t, be, []*Tensor{x, w, b}, 1e-2, func(g *Graph) *Tensor { return g.Linear(x, w, b) })
		}},
		{"linear without bias", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, w := randTensor(rng, true, 7, 6), randTensor(rng, true, 3, 6)
			checkGrad(t, be, []*Tensor{x, w}, 1e-2, func(g *Graph) *Tensor { return g.Linear(x, w, nil) })
		}},
		{"embedding", func(t *testing.T, be Backend, rng *rand.Rand) {
			table := randTensor(rng, true, 6, 4)
			ids := []int32{1, 5, 1, 0, 3}
			checkGrad(t, be, []*Tensor{table}, 1e-2, func(g *Graph) *Tensor { return g.Embedding(table, ids) })
		}},
		{"rmsnorm", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, w := randTensor(rng, true, 3, 2, 8), randTensor(rng, true, 8)
			checkGrad(t, be, []*Tensor{x, w}, 1e-2, func(g *Graph) *Tensor { return g.RMSNorm(x, w, 1e-6) })
		}},
		{"gated gelu", func(t *testing.T, be Backend, rng *rand.Rand) {
			a, b := randTensor(rng, true, 3, 2, 8), randTensor(rng, true, 3, 2, 8)
			checkGrad(t, be, []*Tensor{a, b}, 1e-2, func(g *Graph) *Tensor { return g.GatedGelu(a, b) })
		}},
		{"gated gelu, the gate frozen", func(t *testing.T, be Backend, rng *rand.Rand) {
			a, b := randTensor(rng, true, 5, 8), randTensor(rng, false, 5, 8)
			checkGrad(t, be, []*Tensor{a, b}, 1e-2, func(g *Graph) *Tensor { return g.GatedGelu(a, b) })
		}},
		{"residual add and rmsnorm, both read", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, y, w := randTensor(rng, true, 3, 2, 8), randTensor(rng, true, 3, 2, 8), randTensor(rng, true, 8)
			checkGrad(t, be, []*Tensor{x, y, w}, 1e-2, func(g *Graph) *Tensor {
				sum, normed := g.AddRMSNorm(x, y, w, 1e-6)
				return g.Add(g.Scale(sum, 0.5), normed)
			})
		}},
		{"residual add and rmsnorm, the norm read, x frozen", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, y, w := randTensor(rng, false, 5, 8), randTensor(rng, true, 5, 8), randTensor(rng, true, 8)
			checkGrad(t, be, []*Tensor{x, y, w}, 1e-2, func(g *Graph) *Tensor {
				_, normed := g.AddRMSNorm(x, y, w, 1e-6)
				return normed
			})
		}},
		{"attention with bias, padding and causal mask", func(t *testing.T, be Backend, rng *rand.Rand) {
			B, T, H, K := 2, 4, 2, 3
			q, k, v := randTensor(rng, true, B, T, H*K), randTensor(rng, true, B, T, H*K), randTensor(rng, true, B, T, H*K)
			bias := randTensor(rng, true, H, T, T)
			mask := []bool{true, true, true, true, true, true, false, false}
			checkGrad(t, be, []*Tensor{q, k, v, bias}, 1e-2, func(g *Graph) *Tensor {
				out, _ := g.Attention(q, k, v, bias, AttentionOpts{Heads: H, KeyMask: mask, Causal: true})
				return out
			})
		}},
		{"attention with dropout on the probabilities", func(t *testing.T, be Backend, rng *rand.Rand) {
			B, T, H, K := 2, 4, 2, 3
			q, k, v := randTensor(rng, true, B, T, H*K), randTensor(rng, true, B, T, H*K), randTensor(rng, true, B, T, H*K)
			checkGrad(t, be, []*Tensor{q, k, v}, 1e-2, func(g *Graph) *Tensor {
				g.Train, g.Seed = true, 3
				out, _ := g.Attention(q, k, v, nil, AttentionOpts{Heads: H, Dropout: 0.3})
				return out
			})
		}},
		{"cross attention", func(t *testing.T, be Backend, rng *rand.Rand) {
			B, Tq, Tk, H, K := 2, 3, 5, 2, 2
			q, k, v := randTensor(rng, true, B, Tq, H*K), randTensor(rng, true, B, Tk, H*K), randTensor(rng, true, B, Tk, H*K)
			mask := []bool{true, true, true, false, false, true, true, true, true, true}
			checkGrad(t, be, []*Tensor{q, k, v}, 1e-2, func(g *Graph) *Tensor {
				out, _ := g.Attention(q, k, v, nil, AttentionOpts{Heads: H, KeyMask: mask})
				return out
			})
		}},
		{"position bias", func(t *testing.T, be Backend, rng *rand.Rand) {
			table := randTensor(rng, true, 8, 3)
			checkGrad(t, be, []*Tensor{table}, 1e-2, func(g *Graph) *Tensor { return g.PositionBias(table, 5, 7, 0, true, 20) })
		}},
		{"relu", func(t *testing.T, be Backend, rng *rand.Rand) {
			x := awayFromZero(randTensor(rng, true, 4, 5), 0.05)
			checkGrad(t, be, []*Tensor{x}, 1e-3, func(g *Graph) *Tensor { return g.ReLU(x) })
		}},
		{"gelu_new", func(t *testing.T, be Backend, rng *rand.Rand) {
			x := randTensor(rng, true, 4, 5)
			checkGrad(t, be, []*Tensor{x}, 1e-2, func(g *Graph) *Tensor { return g.GeluNew(x) })
		}},
		{"gated ffn", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, w0, w1, wo := randTensor(rng, true, 3, 4), randTensor(rng, true, 6, 4), randTensor(rng, true, 6, 4), randTensor(rng, true, 4, 6)
			checkGrad(t, be, []*Tensor{x, w0, w1, wo}, 1e-2, func(g *Graph) *Tensor {
				return g.Linear(g.Mul(g.GeluNew(g.Linear(x, w0, nil)), g.Linear(x, w1, nil)), wo, nil)
			})
		}},
		{"sigmoid, tanh, scale, add", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, y := randTensor(rng, true, 3, 4), randTensor(rng, true, 3, 4)
			checkGrad(t, be, []*Tensor{x, y}, 1e-2, func(g *Graph) *Tensor { return g.Add(g.Scale(g.Sigmoid(x), 1.5), g.Tanh(g.Add(x, y))) })
		}},
		{"concat and slice", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, y := randTensor(rng, true, 3, 2), randTensor(rng, true, 3, 4)
			checkGrad(t, be, []*Tensor{x, y}, 1e-2, func(g *Graph) *Tensor { return g.Slice(g.Concat(x, y, x), 1, 7) })
		}},
		{"bias rows and prepended prompt", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, b, p := randTensor(rng, true, 2, 3, 4), randTensor(rng, true, 4), randTensor(rng, true, 2, 4)
			checkGrad(t, be, []*Tensor{x, b, p}, 1e-2, func(g *Graph) *Tensor { return g.Prepend(p, g.AddRow(x, b)) })
		}},
		{"row scaling (IA³)", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, b := randTensor(rng, true, 2, 3, 4), randTensor(rng, true, 4)
			checkGrad(t, be, []*Tensor{x, b}, 1e-2, func(g *Graph) *Tensor { return g.MulRow(g.Tanh(x), b) })
			// A frozen input and more rows than one pass of the GPU's
			// column sum takes (128).
			frozen, c := randTensor(rng, false, 2, 80, 4), randTensor(rng, true, 4)
			checkGrad(t, be, []*Tensor{c}, 1e-2, func(g *Graph) *Tensor { return g.MulRow(frozen, c) })
		}},
		{"gate mix", func(t *testing.T, be Backend, rng *rand.Rand) {
			a, b, alpha := randTensor(rng, true, 3, 4), randTensor(rng, true, 3, 4), randTensor(rng, true, 1)
			alpha.Data[0] *= 0.1
			checkGrad(t, be, []*Tensor{a, b, alpha}, 1e-3, func(g *Graph) *Tensor { return g.GateMix(a, b, alpha, 0.1) })
		}},
		{"batch matmul", func(t *testing.T, be Backend, rng *rand.Rand) {
			a, b := randTensor(rng, true, 2, 3, 4), randTensor(rng, true, 2, 4, 5)
			checkGrad(t, be, []*Tensor{a, b}, 1e-2, func(g *Graph) *Tensor { return g.BatchMatmul(a, b) })
		}},
		{"cross entropy with ignored rows", func(t *testing.T, be Backend, rng *rand.Rand) {
			logits := randTensor(rng, true, 2, 3, 7)
			targets := []int32{3, -100, 0, 6, -100, 2}
			checkGrad(t, be, []*Tensor{logits}, 1e-2, func(g *Graph) *Tensor { return g.CrossEntropy(logits, targets) })
		}},
		{"norm linear over a frozen input", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, nw, w, b := randTensor(rng, false, 2, 3, 6), randTensor(rng, true, 6), randTensor(rng, true, 5, 6), randTensor(rng, true, 5)
			checkGrad(t, be, []*Tensor{nw, w, b}, 1e-2, func(g *Graph) *Tensor { return g.NormLinear(x, nw, w, b, 1e-6) })
		}},
		{"norm linear, input with gradient", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, nw, w := randTensor(rng, true, 4, 6), randTensor(rng, true, 6), randTensor(rng, true, 5, 6)
			checkGrad(t, be, []*Tensor{x, nw, w}, 1e-2, func(g *Graph) *Tensor { return g.NormLinear(x, nw, w, nil, 1e-6) })
		}},
		{"gru cell", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, h := randTensor(rng, true, 3, 4), randTensor(rng, true, 3, 5)
			wih, whh, bih, bhh := randTensor(rng, true, 15, 4), randTensor(rng, true, 15, 5), randTensor(rng, true, 15), randTensor(rng, true, 15)
			checkGrad(t, be, []*Tensor{x, h, wih, whh, bih, bhh}, 1e-2, func(g *Graph) *Tensor { return g.GRUCell(x, h, wih, whh, bih, bhh) })
		}},
		{"lstm cell, two steps", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, h, c := randTensor(rng, true, 2, 3), randTensor(rng, true, 2, 4), randTensor(rng, true, 2, 4)
			wih, whh, bih, bhh := randTensor(rng, true, 16, 3), randTensor(rng, true, 16, 4), randTensor(rng, true, 16), randTensor(rng, true, 16)
			checkGrad(t, be, []*Tensor{x, h, c, wih, whh, bih, bhh}, 1e-2, func(g *Graph) *Tensor {
				h1, c1 := g.LSTMCell(x, h, c, wih, whh, bih, bhh)
				h2, c2 := g.LSTMCell(x, h1, c1, wih, whh, bih, bhh)
				return g.Concat(h2, c2)
			})
		}},
		{"rnn cell", func(t *testing.T, be Backend, rng *rand.Rand) {
			x, h := randTensor(rng, true, 3, 4), randTensor(rng, true, 3, 2)
			wih, whh := randTensor(rng, true, 2, 4), randTensor(rng, true, 2, 2)
			checkGrad(t, be, []*Tensor{x, h, wih, whh}, 1e-2, func(g *Graph) *Tensor { return g.RNNCell(x, h, wih, whh, nil, nil) })
		}},
	}
}

// TestNormLinearMatchesComposition: over an input without gradient,
// NormLinear's one-product backward gives the gradients of RMSNorm then
// Linear to float32 rounding, and the same values bit for bit.
func TestNormLinearMatchesComposition(t *testing.T) {
	for _, be := range backends() {
		rng := rand.New(rand.NewPCG(5, 5))
		N, C, OC := 37, 150, 40 // C over two of NormLinearBackward's column parts
		x := randTensor(rng, false, N, C)
		nw, w, b := randTensor(rng, true, C), randTensor(rng, true, OC, C), randTensor(rng, true, OC)
		dout := randTensor(rng, false, N, OC)
		run := func(fused bool) (out []float32, grads [][]float32) {
			for _, p := range []*Tensor{nw, w, b} {
				clear(p.Grad)
			}
			g := NewGraph(be)
			var y *Tensor
			if fused {
				y = g.NormLinear(x, nw, w, b, 1e-6)
			} else {
				y = g.Linear(g.RMSNorm(x, nw, 1e-6), w, b)
			}
			copy(y.Grad, dout.Data)
			for i := len(g.tape) - 1; i >= 0; i-- {
				g.tape[i]()
			}
			return slices.Clone(y.Data), [][]float32{slices.Clone(nw.Grad), slices.Clone(w.Grad), slices.Clone(b.Grad)}
		}
		fusedOut, fused := run(true)
		composedOut, composed := run(false)
		if !slices.Equal(fusedOut, composedOut) {
			t.Errorf("%s: NormLinear's values differ from RMSNorm then Linear", be.Name())
		}
		for i, name := range []string{"norm weight", "weight", "bias"} {
			var worst, scale float64
			for j, v := range composed[i] {
				worst = math.Max(worst, math.Abs(float64(fused[i][j]-v)))
				scale = math.Max(scale, math.Abs(float64(v)))
			}
			if worst > 1e-5*scale {
				t.Errorf("%s: %s gradient differs by %.3g (largest %.3g)", be.Name(), name, worst, scale)
			}
		}
	}
}

// TestDropout checks the keep rate, the 1/(1−p) scaling, that the mask is
// a function of the seed, and that backward uses the same mask.
func TestDropout(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	x := randTensor(rng, true, 100, 100)
	g := NewGraph(Gonum{})
	g.Train, g.Seed = true, 5
	out := g.Dropout(x, 0.1)
	kept := 0
	for i, v := range out.Data {
		if v != 0 {
			kept++
			if math.Abs(float64(v-x.Data[i]/0.9)) > 1e-6 {
				t.Fatalf("kept value %v, want %v/0.9", v, x.Data[i])
			}
		}
	}
	if rate := float64(kept) / 10000; math.Abs(rate-0.9) > 0.01 {
		t.Errorf("kept %.3f, want 0.9", rate)
	}
	h := NewGraph(Gonum{})
	h.Train, h.Seed = true, 5
	again := h.Dropout(x, 0.1)
	for i := range again.Data {
		if again.Data[i] != out.Data[i] {
			t.Fatal("same seed, different mask")
		}
	}
	checkGrad(t, Gonum{}, []*Tensor{x}, 1e-2, func(g *Graph) *Tensor {
		g.Train, g.Seed = true, 5
		return g.Dropout(x, 0.3)
	})
	e := NewGraph(Gonum{})
	if e.Dropout(x, 0.5) != x {
		t.Error("dropout is not the identity in eval mode")
	}
	// A training loop resets its graph every step: the next step's mask
	// is a new one (it was the first step's again, every step).
	h.Reset()
	first := slices.Clone(h.Dropout(x, 0.1).Data)
	h.Reset()
	next := h.Dropout(x, 0.1).Data
	if slices.Equal(first, next) {
		t.Error("after Reset the graph drew the same dropout mask again")
	}
}

func TestRelativeBucket(t *testing.T) {
	// Boundaries from shared/reference/t5-text-to-text.md §3.1 (32 buckets, distance 128).
	enc := map[int]int{0: 0, 7: 7, 8: 8, 11: 8, 12: 9, 16: 10, 23: 11, 32: 12, 46: 13, 64: 14, 90: 14, 91: 15, 500: 15}
	for a, want := range enc {
		if got := RelativeBucket(-a, true, 32, 128); got != want {
			t.Errorf("encoder a=%d (key before query): bucket %d, want %d", a, got, want)
		}
		if a > 0 {
			if got := RelativeBucket(a, true, 32, 128); got != want+16 {
				t.Errorf("encoder a=%d (key after query): bucket %d, want %d", a, got, want+16)
			}
		}
	}
	dec := map[int]int{0: 0, 15: 15, 16: 16, 18: 16, 19: 17, 21: 18, 27: 20, 35: 22, 46: 24, 59: 26, 77: 28, 99: 30, 112: 30, 113: 31, 1000: 31}
	for a, want := range dec {
		if got := RelativeBucket(-a, false, 32, 128); got != want {
			t.Errorf("decoder a=%d: bucket %d, want %d", a, got, want)
		}
	}
	if got := RelativeBucket(5, false, 32, 128); got != 0 {
		t.Errorf("decoder future key: bucket %d, want 0", got)
	}
}

func TestBackendsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	a, b := randTensor(rng, false, 37, 53), randTensor(rng, false, 29, 53)
	var ref []float32
	for _, be := range backends() {
		c := make([]float32, 37*29)
		MatmulForward(be, c, a.Data, b.Data, nil, 37, 53, 29)
		if ref == nil {
			ref = c
			continue
		}
		for i := range c {
			if math.Abs(float64(c[i]-ref[i])) > 1e-4 {
				t.Fatalf("%s differs from %s at %d: %v vs %v", be.Name(), backends()[0].Name(), i, c[i], ref[i])
			}
		}
	}
}

func TestAdamWMatchesTorch(t *testing.T) {
	// torch.optim.AdamW(lr=0.1, weight_decay=0.01) on p=[1,-2] with grads
	// [0.5,-1] for step 1 and [0.2,0.4] for step 2 gives these values.
	p := &Tensor{Shape: []int{2}, Data: []float32{1, -2}, Grad: []float32{0.5, -1}}
	o := NewAdamW(0.1)
	o.Step([]*Tensor{p})
	want1 := []float64{1*(1-0.001) - 0.1, -2*(1-0.001) + 0.1}
	for i := range want1 {
		if math.Abs(float64(p.Data[i])-want1[i]) > 1e-6 {
			t.Errorf("step 1: p[%d] = %v, want %v", i, p.Data[i], want1[i])
		}
	}
	p.Grad = []float32{0.2, 0.4}
	o.Step([]*Tensor{p})
	// Step 2 by the formula in float64.
	m := []float64{0.9*0.05 + 0.1*0.2, 0.9*-0.1 + 0.1*0.4}
	v := []float64{0.999*0.00025 + 0.001*0.04, 0.999*0.001 + 0.001*0.16}
	for i := range m {
		pi := want1[i] * (1 - 0.001)
		pi -= 0.1 * (m[i] / (1 - 0.81)) / (math.Sqrt(v[i])/math.Sqrt(1-0.998001) + 1e-8)
		if math.Abs(float64(p.Data[i])-pi) > 1e-5 {
			t.Errorf("step 2: p[%d] = %v, want %v", i, p.Data[i], pi)
		}
	}
}

func TestClipGradNorm(t *testing.T) {
	a := &Tensor{Data: []float32{3, 0}, Grad: []float32{3, 0}}
	b := &Tensor{Data: []float32{0}, Grad: []float32{4}}
	if n := ClipGradNorm([]*Tensor{a, b}, 1); math.Abs(n-5) > 1e-9 {
		t.Errorf("norm %v, want 5", n)
	}
	if math.Abs(float64(a.Grad[0])-0.6) > 1e-5 || math.Abs(float64(b.Grad[0])-0.8) > 1e-5 {
		t.Errorf("clipped grads %v %v", a.Grad, b.Grad)
	}
}

func TestKeepReleasesTapeFreeWork(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	w := randTensor(rng, false, 8, 8)
	g := NewGraph(Gonum{})
	x := g.Linear(randTensor(rng, false, 4, 8), w, nil)
	m := g.Mark()
	h := g.ReLU(g.Linear(g.Linear(x, w, nil), w, nil))
	want := append([]float32(nil), h.Data...)
	before := g.arena.pos.used
	g.Keep(m, nil, h, nil) // nil entries are skipped
	if g.arena.pos.used != m.host.used+h.Len() || g.arena.pos.used >= before {
		t.Errorf("arena holds %d after Keep, want %d", g.arena.pos.used, m.host.used+h.Len())
	}
	for i := range want {
		if h.Data[i] != want[i] {
			t.Fatal("Keep changed the kept values")
		}
	}
	// With a gradient on the tape nothing is released.
	wg := randTensor(rng, true, 8, 8)
	m = g.Mark()
	y := g.Linear(x, wg, nil)
	used := g.arena.pos.used
	g.Keep(m, y)
	if g.arena.pos.used != used {
		t.Error("Keep released memory a recorded backward still needs")
	}
}

// checkOnDevice is checkGrad for a GPU graph: its output and every input
// gradient must equal the CPU graph's on the same inputs. Where the
// function draws dropout masks (the two backends' generators differ), the
// GPU's gradients are checked by central differences on the GPU instead.
func checkOnDevice(t *testing.T, be Backend, inputs []*Tensor, eps float64, f func(g *Graph) *Tensor) {
	t.Helper()
	checkOnDeviceWith(t, DefaultBackend(), be, inputs, eps, f)
}

// checkOnDeviceWith is checkOnDevice against the CPU backend cpuBE (one
// that rounds products' operands as the GPU's precision does, say).
func checkOnDeviceWith(t *testing.T, cpuBE, be Backend, inputs []*Tensor, eps float64, f func(g *Graph) *Tensor) {
	t.Helper()
	rng := rand.New(rand.NewPCG(9, 9))
	// The CPU reference, on copies made before the GPU mirrors the inputs.
	cpu := NewGraph(cpuBE)
	out := f(cpu)
	G := make([]float32, out.Len())
	for i := range G {
		G[i] = float32(rng.NormFloat64())
	}
	backwardFrom(cpu, out, G)
	wantOut := clone(out.Data)
	wantGrads := make([][]float32, len(inputs))
	for i, in := range inputs {
		wantGrads[i] = clone(in.Grad)
		clear(in.Grad)
	}

	g := NewGraph(be)
	dout := f(g)
	if !dout.OnDevice() || !dout.takesGrad() {
		t.Fatal("GPU output is not on the device or has no gradient")
	}
	backwardFrom(g, dout, G)
	compare := func(name string, got, want []float32, tol float64) {
		t.Helper()
		scale := 0.0
		for _, w := range want {
			scale = math.Max(scale, math.Abs(float64(w)))
		}
		for i := range want {
			if d := math.Abs(float64(got[i]) - float64(want[i])); !(d <= tol*(1+scale)) {
				t.Errorf("%s[%d] = %v, want %v", name, i, got[i], want[i])
				return
			}
		}
	}
	if g.DropoutStreams == 0 {
		compare("output", dout.Values(), wantOut, 1e-5)
		for i, in := range inputs {
			if in.Grad != nil {
				compare(fmt.Sprintf("input %d gradient", i), in.GradValues(), wantGrads[i], 1e-5)
			}
		}
		return
	}
	objective := func() float64 {
		h := NewGraph(be)
		h.NoGrad = true
		var s float64
		for i, v := range f(h).Values() {
			s += float64(v) * float64(G[i])
		}
		return s
	}
	for ti, in := range inputs {
		if in.Grad == nil {
			continue
		}
		grad := clone(in.GradValues())
		vals := clone(in.Values())
		var worst, scale float64
		for _, v := range grad {
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		// Eight probes per input: each is two GPU graphs on the emulator.
		for i := 0; i < len(vals); i += max(1, len(vals)/8) {
			orig := vals[i]
			vals[i] = orig + float32(eps)
			in.SetValues(vals)
			up := objective()
			vals[i] = orig - float32(eps)
			in.SetValues(vals)
			down := objective()
			vals[i] = orig
			in.SetValues(vals)
			worst = math.Max(worst, math.Abs((up-down)/(2*eps)-float64(grad[i])))
		}
		if tol := 2e-3 + 2e-2*scale; worst > tol {
			t.Errorf("input %d %v: ‖analytic − numeric‖∞ = %.3g > %.3g", ti, in.Shape, worst, tol)
		}
	}
}
func clone(x []float32) []float32 { return append([]float32(nil), x...) }

// TestAttentionPartsMatchSerial: the attention kernels cut (b, h) pairs,
// and for backward heads, across goroutines, each with its own working
// memory; the results equal one goroutine's bit for bit, with and without
// dropout, bias, key mask and causal mask.
func TestAttentionPartsMatchSerial(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	const B, Tq, Tk, H, K = 3, 24, 24, 4, 32
	for _, be := range backends() {
		rng := rand.New(rand.NewPCG(11, 12))
		q, k, v := randSlice(rng, B*Tq*H*K), randSlice(rng, B*Tk*H*K), randSlice(rng, B*Tk*H*K)
		bias, dout := randSlice(rng, H*Tq*Tk), randSlice(rng, B*Tq*H*K)
		mask := make([]bool, B*Tk)
		for i := range mask {
			mask[i] = i%Tk < Tk-3*(i/Tk) // each batch row pads a few more keys
		}
		drop := make([]float32, B*H*Tq*Tk)
		for i := range drop {
			if rng.Float32() >= 0.1 {
				drop[i] = 1 / 0.9
			}
		}
		ones := make([]float32, len(drop))
		for i := range ones {
			ones[i] = 1
		}
		type result struct{ out, probs, dq, dk, dv, dbias []float32 }
		run := func(parts int, drop []float32, causal bool) result {
			r := result{out: make([]float32, B*Tq*H*K), probs: make([]float32, B*H*Tq*Tk),
				dq: make([]float32, len(q)), dk: make([]float32, len(k)), dv: make([]float32, len(v)), dbias: make([]float32, len(bias))}
			AttentionForward(be, r.out, r.probs, drop, make([]float32, parts*Tq*Tk), q, k, v, bias, mask, causal, 0, B, Tq, Tk, H, K)
			AttentionBackward(be, r.dq, r.dk, r.dv, r.dbias, make([]float32, parts*2*Tq*Tk), dout, r.probs, drop, q, k, v, B, Tq, Tk, H, K)
			return r
		}
		for _, causal := range []bool{false, true} {
			for _, tc := range []struct {
				name        string
				drop, alone []float32 // alone: the serial run's scales (ones stand for none: same products)
			}{{"dropout", drop, drop}, {"no dropout", nil, ones}} {
				serial, split := run(1, tc.alone, causal), run(4, tc.drop, causal)
				for name, pair := range map[string][2][]float32{"out": {serial.out, split.out}, "probs": {serial.probs, split.probs},
					"dq": {serial.dq, split.dq}, "dk": {serial.dk, split.dk}, "dv": {serial.dv, split.dv}, "dbias": {serial.dbias, split.dbias}} {
					if !slices.Equal(pair[0], pair[1]) {
						t.Errorf("%s, %s, causal %v: %s differs between one goroutine and four", be.Name(), tc.name, causal, name)
					}
				}
			}
		}
	}
}

// TestAddLinearIsAddScaleLinear: AddLinear's values and gradients are
// those of Add(y, Scale(Linear(x, w), s)), bit for bit, for a y and an x
// that take gradients and for ones that do not.
func TestAddLinearIsAddScaleLinear(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 11))
	const N, C, OC, s = 6, 5, 4, float32(0.37)
	for _, grads := range []bool{true, false} {
		x, w, y := randTensor(rng, grads, 2, N/2, C), randTensor(rng, true, OC, C), randTensor(rng, grads, 2, N/2, OC)
		G := make([]float32, N*OC)
		for i := range G {
			G[i] = float32(rng.NormFloat64())
		}
		run := func(f func(g *Graph) *Tensor) (out []float32, grads [][]float32) {
			g := NewGraph(DefaultBackend())
			o := f(g)
			backwardFrom(g, o, G)
			for _, in := range []*Tensor{x, w, y} {
				grads = append(grads, clone(in.Grad))
				clear(in.Grad)
			}
			return clone(o.Data), grads
		}
		want, wantGrads := run(func(g *Graph) *Tensor { return g.Add(y, g.Scale(g.Linear(x, w, nil), s)) })
		got, gotGrads := run(func(g *Graph) *Tensor { return g.AddLinear(y, x, w, s) })
		if !slices.Equal(got, want) {
			t.Fatalf("grads %v: AddLinear %v, want %v", grads, got, want)
		}
		for i, name := range []string{"x", "w", "y"} {
			if !slices.Equal(gotGrads[i], wantGrads[i]) {
				t.Errorf("grads %v: %s's gradient %v, want %v", grads, name, gotGrads[i], wantGrads[i])
			}
		}
	}
}

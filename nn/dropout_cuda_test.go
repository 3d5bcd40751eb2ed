//go:build cgo && linux

package nn

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestDropoutOnEmulatedGPU: the device graph's dropout keeps and scales as
// the CPU's does, and its backward passes the output's gradient through
// the same mask (out/x where x ≠ 0). The masks differ from the CPU's (the
// generators do), so this holds the GPU to its own forward, not to the CPU.
func TestDropoutOnEmulatedGPU(t *testing.T) {
	c := openEmulated(t)
	rng := rand.New(rand.NewPCG(4, 4))
	x := randTensor(rng, true, 40, 50)
	ToDevice(c, x)
	g := NewGraph(c)
	defer g.Release()
	g.Train, g.Seed = true, 3
	out := g.Dropout(x, 0.3)
	G := make([]float32, out.Len())
	for i := range G {
		G[i] = float32(rng.NormFloat64())
	}
	backwardFrom(g, out, G)
	xs, ys, gx := x.Values(), out.Values(), x.GradValues()
	kept := 0
	for i := range xs {
		mask := ys[i] / xs[i]
		if ys[i] != 0 {
			kept++
			if math.Abs(float64(mask)-1/0.7) > 1e-5 {
				t.Fatalf("kept element %d scaled by %v, want 1/0.7", i, mask)
			}
		}
		if want := G[i] * mask; math.Abs(float64(gx[i]-want)) > 1e-5*(1+math.Abs(float64(want))) {
			t.Fatalf("gradient %d = %v, want %v (output gradient %v through mask %v)", i, gx[i], want, G[i], mask)
		}
	}
	if rate := float64(kept) / float64(len(xs)); math.Abs(rate-0.7) > 0.05 {
		t.Errorf("kept %.3f, want 0.7", rate)
	}
}

// TestAttentionDropoutOnEmulatedGPU holds attention with dropout on the
// probabilities to finite differences of the device graph itself (the
// same seed draws the same mask in every graph).
func TestAttentionDropoutOnEmulatedGPU(t *testing.T) {
	c := openEmulated(t)
	rng := rand.New(rand.NewPCG(5, 5))
	B, T, H, K := 2, 4, 2, 3
	q, k, v := randTensor(rng, true, B, T, H*K), randTensor(rng, true, B, T, H*K), randTensor(rng, true, B, T, H*K)
	bias := randTensor(rng, true, H, T, T)
	inputs := []*Tensor{q, k, v, bias}
	ToDevice(c, inputs...)
	var gradOut []float32
	run := func(record bool, G []float32) (float64, *Graph) {
		g := NewGraph(c)
		g.Train, g.Seed, g.NoGrad = true, 11, !record
		out, _ := g.Attention(q, k, v, bias, AttentionOpts{Heads: H, Dropout: 0.4})
		var s float64
		if G != nil {
			for i, y := range out.Values() {
				s += float64(y) * float64(G[i])
			}
		}
		if record {
			G = make([]float32, out.Len())
			for i := range G {
				G[i] = float32(rng.NormFloat64())
			}
			backwardFrom(g, out, G)
			gradOut = G
		}
		return s, g
	}
	_, g := run(true, nil)
	defer g.Release()
	const eps = 1e-2
	for ti, in := range inputs {
		grad, vals := in.GradValues(), in.Values()
		var worst, scale float64
		for _, x := range grad {
			scale = math.Max(scale, math.Abs(float64(x)))
		}
		for i := 0; i < len(vals); i += 3 { // a third of the elements: each costs two graphs
			orig := vals[i]
			vals[i] = orig + eps
			in.SetValues(vals)
			up, ug := run(false, gradOut)
			vals[i] = orig - eps
			in.SetValues(vals)
			down, dg := run(false, gradOut)
			vals[i] = orig
			in.SetValues(vals)
			ug.Release()
			dg.Release()
			worst = math.Max(worst, math.Abs((up-down)/(2*eps)-float64(grad[i])))
		}
		if tol := 2e-3 + 2e-2*scale; worst > tol {
			t.Errorf("input %d %v: ‖analytic − numeric‖∞ = %.3g > %.3g", ti, in.Shape, worst, tol)
		}
	}
}

// TestDropoutStoresNoMask: on a GPU, dropout and attention's dropout hold
// no mask for their backwards (which draw it again from the keys): a
// graph's memory is the same with dropout as without, but for dropout's
// own output. The masks were floats held to the end of the step, as large
// as the activations they dropped.
func TestDropoutStoresNoMask(t *testing.T) {
	c := openEmulated(t)
	rng := rand.New(rand.NewPCG(6, 6))
	B, T, H, K := 2, 16, 2, 8
	q, k, v := randTensor(rng, true, B, T, H*K), randTensor(rng, true, B, T, H*K), randTensor(rng, true, B, T, H*K)
	ToDevice(c, q, k, v)
	peak := func(p float32) int64 {
		g := NewGraph(c)
		defer g.Release()
		g.Train, g.Seed = true, 3
		out, _ := g.Attention(q, k, v, nil, AttentionOpts{Heads: H, Dropout: p})
		g.Dropout(out, p)
		return g.PeakBytes()
	}
	without, with := peak(0), peak(0.1)
	if extra := with - without; extra != 4*int64(B*T*H*K) {
		t.Errorf("a graph with dropout held %d bytes more than one without, want %d (dropout's output alone)", extra, 4*B*T*H*K)
	}
}

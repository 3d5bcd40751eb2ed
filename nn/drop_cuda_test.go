//go:build cgo && linux

package nn

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestDropGivesBackUnsavedTensors: Drop frees tensors no backward reads
// (a product only a residual add consumed, ReLU's input), leaves the ones a backward
// reads, parameters and views alone, the gradients stay the CPU's, and
// reading a dropped tensor panics instead of reading freed memory.
func TestDropGivesBackUnsavedTensors(t *testing.T) {
	c := openEmulated(t)
	rng := rand.New(rand.NewPCG(7, 7))
	const N, C = 64, 96
	build := func(g *Graph, x, w, r *Tensor) (sum, prod, hidden, pre *Tensor) {
		pre = g.Linear(x, w, nil)
		hidden = g.ReLU(pre)            // ReLU's backward reads its output, not pre
		prod = g.Linear(hidden, w, nil) // read by the add only: unsaved
		return g.Add(prod, r), prod, hidden, pre
	}
	x, w, r := randTensor(rng, true, N, C), randTensor(rng, true, C, C), randTensor(rng, true, N, C)
	cpu := NewGraph(DefaultBackend())
	want, _, _, _ := build(cpu, x, w, r)
	G := make([]float32, want.Len())
	for i := range G {
		G[i] = float32(rng.NormFloat64())
	}
	backwardFrom(cpu, want, G)
	wantW := clone(w.Grad)
	clear(w.Grad)
	clear(x.Grad)
	clear(r.Grad)

	ToDevice(c, x, w, r)
	g := NewGraph(c)
	defer g.Release()
	sum, prod, hidden, pre := build(g, x, w, r)
	live := g.gpu.(*cudaGraph).arena.live
	g.Drop(prod, hidden, pre, w, sum.View(C, N))
	if freed := live - g.gpu.(*cudaGraph).arena.live; freed != 2*N*C {
		t.Errorf("Drop gave back %d elements, want %d (the unsaved product and ReLU's input)", freed, 2*N*C)
	}
	backwardFrom(g, sum, G)
	got := w.GradValues()
	for i := range wantW {
		if d := got[i] - wantW[i]; d > 1e-3 || d < -1e-3 {
			t.Fatalf("w's gradient [%d] = %v after Drop, want %v", i, got[i], wantW[i])
		}
	}
	hidden.Values() // kept: a backward read it
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "Graph.Drop") {
			t.Errorf("reading a dropped tensor: recovered %v, want a panic naming Graph.Drop", r)
		}
	}()
	prod.Values()
}

// TestFreeSavedDuringBackward: with FreeSaved, Backward gives every
// activation back once the last backward reading it has run (all of them
// by the end, here, with the logits dropped as a trial drops them), the
// gradients stay the CPU's, reading one afterwards panics, and so does a
// second Backward until Reset.
func TestFreeSavedDuringBackward(t *testing.T) {
	c := openEmulated(t)
	rng := rand.New(rand.NewPCG(8, 8))
	const N, C = 32, 48
	x, w1, w2, nw := randTensor(rng, false, N, C), randTensor(rng, true, C, C), randTensor(rng, true, C, C), randTensor(rng, true, C)
	targets := make([]int32, N)
	for i := range targets {
		targets[i] = int32(i % C)
	}
	build := func(g *Graph) (loss, hidden *Tensor) {
		hidden = g.RMSNorm(g.Linear(x, w1, nil), nw, 1e-6)
		logits := g.Linear(g.Mul(g.Tanh(hidden), hidden), w2, nil) // Tanh saves its output, Mul hidden
		loss = g.CrossEntropy(logits, targets)
		g.Drop(logits)
		return loss, hidden
	}
	cpu := NewGraph(DefaultBackend())
	cpuLoss, _ := build(cpu)
	cpu.Backward(cpuLoss)
	want := [][]float32{clone(w1.Grad), clone(w2.Grad), clone(nw.Grad)}
	for _, p := range []*Tensor{w1, w2, nw} {
		clear(p.Grad)
	}

	ToDevice(c, x, w1, w2, nw)
	g := NewGraph(c)
	defer g.Release()
	g.FreeSaved = true
	loss, hidden := build(g)
	arena := g.gpu.(*cudaGraph).arena
	before := arena.live
	g.Backward(loss)
	if arena.live != 1 {
		t.Errorf("live tensor elements %d before Backward, %d after: want the loss's 1 alone", before, arena.live)
	}
	for i, p := range []*Tensor{w1, w2, nw} {
		got := p.GradValues()
		for j := range got {
			if d := got[j] - want[i][j]; d > 1e-4 || d < -1e-4 {
				t.Fatalf("gradient %d [%d] = %v with FreeSaved, want %v", i, j, got[j], want[i][j])
			}
		}
	}
	if got, want := loss.Values()[0], cpuLoss.Data[0]; got-want > 1e-5 || want-got > 1e-5 {
		t.Errorf("loss %v, want %v", got, want)
	}
	mustPanic := func(what string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", what)
			}
		}()
		f()
	}
	mustPanic("reading a freed activation", func() { hidden.Values() })
	mustPanic("a second Backward", func() { g.Backward(loss) })
	g.Reset()
	again, _ := build(g)
	g.Backward(again) // after Reset, a new step
}

// TestDropOfAnEarlierStep: a tensor whose block Reset or Keep gave back
// does not free the block its slot now holds when dropped (it once freed
// a live tensor silently), and reading it panics.
func TestDropOfAnEarlierStep(t *testing.T) {
	c := openEmulated(t)
	g := NewGraph(c)
	defer g.Release()
	const n = 1000
	ones := make([]float32, n)
	for i := range ones {
		ones[i] = 1
	}
	check := func(what string, cur *Tensor) {
		t.Helper()
		g.Zeros(n).SetValues(make([]float32, n)) // would take a freed block
		if v := cur.Values()[0]; v != 1 {
			t.Errorf("%s: the live tensor reads %v, want 1", what, v)
		}
	}
	old := g.Zeros(n)
	g.Reset()
	cur := g.Zeros(n)
	cur.SetValues(ones)
	g.Drop(old)
	check("drop after Reset", cur)

	g.Reset()
	m := g.Mark()
	tmp := g.Zeros(n)
	kept := g.Zeros(n)
	kept.SetValues(ones)
	g.Keep(m, kept)
	g.Drop(tmp)
	check("drop after Keep", kept)

	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "Reset or Keep") {
			t.Errorf("reading a tensor Reset gave back: recovered %v, want a panic naming Reset or Keep", r)
		}
	}()
	g.Reset()
	kept.Values()
}

// TestKeyMaskUploadedOncePerStep: every attention of a step reads the
// same mask from one upload (each upload waits for the stream).
func TestKeyMaskUploadedOncePerStep(t *testing.T) {
	c := openEmulated(t)
	rng := rand.New(rand.NewPCG(9, 9))
	B, T, H, K := 2, 3, 2, 2
	q := randTensor(rng, false, B, T, H*K)
	mask := []bool{true, true, false, true, false, false}
	g := NewGraph(c)
	defer g.Release()
	for range 3 {
		g.Attention(q, q, q, nil, AttentionOpts{Heads: H, KeyMask: mask})
	}
	if n := len(g.gpu.(*cudaGraph).arena.masks); n != 1 {
		t.Errorf("%d mask uploads for three attentions over one mask, want 1", n)
	}
	g.Reset()
	if n := len(g.gpu.(*cudaGraph).arena.masks); n != 0 {
		t.Errorf("%d masks held after Reset, want 0", n)
	}
}

// TestZeroGradGivesGradientsBack: on a GPU, ZeroGrad gives a parameter's
// gradient back to the device (set_to_none), reading it then gives zeros,
// the next backward allocates it zeroed (its gradient is that step's
// alone, not added to the last), and AdamW steps a parameter the backward
// did not reach on a zero gradient, as the CPU does.
func TestZeroGradGivesGradientsBack(t *testing.T) {
	c := openEmulated(t)
	rng := rand.New(rand.NewPCG(9, 9))
	const N, C = 16, 64
	x := randTensor(rng, false, N, C)
	w, unused := randTensor(rng, true, C, C), randTensor(rng, true, C)
	cpuW, cpuUnused := &Tensor{Shape: w.Shape, Data: clone(w.Data), Grad: make([]float32, w.Len())}, &Tensor{Shape: unused.Shape, Data: clone(unused.Data), Grad: make([]float32, unused.Len())}
	G := make([]float32, N*C)
	for i := range G {
		G[i] = float32(rng.NormFloat64())
	}
	cpu := NewGraph(DefaultBackend())
	backwardFrom(cpu, cpu.Linear(x, cpuW, nil), G)
	want := clone(cpuW.Grad)

	ToDevice(c, w, unused)
	inUse := func() int64 {
		if err := c.Sync(); err != nil { // frees are queued behind the stream's work
			t.Fatal(err)
		}
		c.mem.mu.Lock()
		defer c.mem.mu.Unlock()
		return c.mem.inUse
	}
	g := NewGraph(c)
	defer g.Release()
	opt, cpuOpt := NewAdamW(1e-2), NewAdamW(1e-2)
	for step := range 2 {
		g.Reset()
		backwardFrom(g, g.Linear(x, w, nil), G)
		got := w.GradValues()
		for i := range want {
			if d := got[i] - want[i]; d > 1e-4 || d < -1e-4 {
				t.Fatalf("step %d: gradient [%d] = %v, want %v (one step's)", step, i, got[i], want[i])
			}
		}
		opt.Step([]*Tensor{w, unused})
		cpuOpt.Step([]*Tensor{cpuW, cpuUnused})
		before := inUse()
		ZeroGrad([]*Tensor{w, unused})
		if freed := before - inUse(); freed != int64(4*(w.Len()+unused.Len())) {
			t.Errorf("step %d: ZeroGrad gave back %d bytes, want the two gradients' %d", step, freed, 4*(w.Len()+unused.Len()))
		}
		for i, v := range w.GradValues() {
			if v != 0 {
				t.Fatalf("step %d: gradient [%d] = %v after ZeroGrad, want 0", step, i, v)
			}
		}
		ZeroGrad([]*Tensor{cpuW, cpuUnused})
	}
	for i, v := range unused.Values() {
		if d := v - cpuUnused.Data[i]; d > 1e-6 || d < -1e-6 {
			t.Fatalf("the parameter no backward reached: [%d] = %v after two steps, want the CPU's %v", i, v, cpuUnused.Data[i])
		}
	}
}

// TestAddLinearOnDevice: AddLinear on the GPU gives the CPU's values and
// gradients with one product and one kernel forward, and a backward of
// two products and the base gradient's accumulation.
func TestAddLinearOnDevice(t *testing.T) {
	c := openEmulated(t)
	rng := rand.New(rand.NewPCG(12, 12))
	x, w, y := randTensor(rng, true, 2, 3, 5), randTensor(rng, true, 4, 5), randTensor(rng, true, 2, 3, 4)
	checkOnDevice(t, c, []*Tensor{x, w, y}, 1e-5, func(g *Graph) *Tensor { return g.AddLinear(y, x, w, 0.37) })

	g := NewGraph(c)
	defer g.Release()
	before := c.Calls()
	out := g.AddLinear(y, x, w, 0.37)
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	mid := c.Calls()
	backwardFrom(g, out, make([]float32, out.Len()))
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	after := c.Calls()
	if k, b := mid.Kernels-before.Kernels, mid.BLAS-before.BLAS; k != 1 || b != 1 {
		t.Errorf("forward: %d kernels and %d cuBLAS calls, want 1 and 1", k, b)
	}
	if k, b := after.Kernels-mid.Kernels, after.BLAS-mid.BLAS; k != 2 || b != 2 {
		t.Errorf("backward: %d kernels and %d cuBLAS calls, want 2 (y's gradient, s·dout) and 2", k, b)
	}
	// At tf32 and bf16 too the products read s·dout rounded first, as on
	// the CPU; scaling in cuBLAS would round dout before s was applied,
	// 1e-3 apart at bf16 for an s that is not a power of two.
	for _, p := range []Precision{TF32, BF16} {
		if err := c.SetPrecision(p); err != nil {
			t.Fatal(err)
		}
		x, w, y := randTensor(rng, true, 6, 64), randTensor(rng, true, 48, 64), randTensor(rng, true, 6, 48)
		cpu, _ := WithPrecision(DefaultBackend(), p)
		checkOnDeviceWith(t, cpu, c, []*Tensor{x, w, y}, 1e-5, func(g *Graph) *Tensor { return g.AddLinear(y, x, w, 7.0/3) })
	}
	if err := c.SetPrecision(FP32); err != nil {
		t.Fatal(err)
	}
}

// TestEnableGradFollowsOnTheMirror: EnableGrad on a tensor already on the
// GPU turns its gradient on there too, across ZeroGrad and AdamW steps,
// and off again: a frozen mirror gets no gradient from later backwards
// (LST freezes the backbone after its Fisher pass ran on the GPU).
func TestEnableGradFollowsOnTheMirror(t *testing.T) {
	c := openEmulated(t)
	rng := rand.New(rand.NewPCG(13, 13))
	const N, C = 4, 8
	x := randTensor(rng, false, N, C)
	p := NewParams([]string{"w"}, [][]int{{C, C}})
	w := p.Tensors[0]
	copy(w.Data, randTensor(rng, false, C, C).Data)
	G := make([]float32, N*C)
	for i := range G {
		G[i] = float32(rng.NormFloat64())
	}
	ToDevice(c, w)
	train := p.EnableGrad(func(string) bool { return true })
	g := NewGraph(c)
	defer g.Release()
	opt := NewAdamW(1e-2)
	var first []float32
	for step := range 2 {
		g.Reset()
		backwardFrom(g, g.Linear(x, w, nil), G)
		got := clone(w.GradValues())
		if step == 0 {
			first = got
		}
		if !slices.Equal(got, first) || slices.Equal(got, make([]float32, len(got))) {
			t.Fatalf("step %d: gradient %v, want %v again (and not zeros)", step, got, first)
		}
		opt.Step(train)
		ZeroGrad(train)
	}
	p.EnableGrad(func(string) bool { return false })
	g.Reset()
	if g.Linear(x, w, nil).takesGrad() {
		t.Error("a product of a frozen mirror and a constant takes a gradient")
	}
	// Reached from an input that takes one, the frozen mirror still gets none.
	g.Reset()
	backwardFrom(g, g.Linear(randTensor(rng, true, N, C), w, nil), G)
	if !w.dev.grad.IsNil() {
		t.Error("a frozen mirror was given a gradient by a backward that passed through it")
	}
}

//go:build cgo && linux

package nn

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// TestDropGivesBackUnsavedTensors: Drop frees a tensor no backward reads
// (a product only a residual add consumed), leaves the ones a backward
// reads, parameters and views alone, the gradients stay the CPU's, and
// reading a dropped tensor panics instead of reading freed memory.
func TestDropGivesBackUnsavedTensors(t *testing.T) {
	c := openEmulated(t)
	rng := rand.New(rand.NewPCG(7, 7))
	const N, C = 64, 96
	build := func(g *Graph, x, w, r *Tensor) (sum, prod, hidden *Tensor) {
		hidden = g.ReLU(g.Linear(x, w, nil)) // ReLU's input is saved; its output is Linear's input, saved
		prod = g.Linear(hidden, w, nil)      // read by the add only: unsaved
		return g.Add(prod, r), prod, hidden
	}
	x, w, r := randTensor(rng, true, N, C), randTensor(rng, true, C, C), randTensor(rng, true, N, C)
	cpu := NewGraph(DefaultBackend())
	want, _, _ := build(cpu, x, w, r)
	G := make([]float32, want.Len())
	for i := range G {
		G[i] = float32(rng.NormFloat64())
	}
	copy(want.Grad, G)
	for i := len(cpu.tape) - 1; i >= 0; i-- {
		cpu.tape[i]()
	}
	wantW := clone(w.Grad)
	clear(w.Grad)
	clear(x.Grad)
	clear(r.Grad)

	ToDevice(c, x, w, r)
	g := NewGraph(c)
	defer g.Release()
	sum, prod, hidden := build(g, x, w, r)
	live := g.gpu.(*cudaGraph).arena.live
	g.Drop(prod, hidden, w, sum.View(C, N))
	if freed := live - g.gpu.(*cudaGraph).arena.live; freed != N*C {
		t.Errorf("Drop gave back %d elements, want %d (the unsaved product alone)", freed, N*C)
	}
	c.Write(g.gpu.gradBuffer(sum), G)
	for i := len(g.tape) - 1; i >= 0; i-- {
		g.tape[i]()
	}
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

package nn

import (
	"slices"
	"testing"
)

// TestAdamWStateResumes: an optimiser set to another's state (a
// checkpoint's) takes the same next steps, bit for bit.
func TestAdamWStateResumes(t *testing.T) {
	newTensors := func() []*Tensor {
		a := &Tensor{Shape: []int{3}, Data: []float32{1, -2, 3}, Grad: make([]float32, 3)}
		b := &Tensor{Shape: []int{2}, Data: []float32{0.5, 4}, Grad: make([]float32, 2)}
		return []*Tensor{a, b}
	}
	grads := func(ts []*Tensor, k int) {
		for i, t := range ts {
			for j := range t.Grad {
				t.Grad[j] = float32((i+1)*(j+2)*(k+1)%7) - 3
			}
		}
	}
	ta, tb := newTensors(), newTensors()
	oa, ob := NewAdamW(1e-2), NewAdamW(1e-2)
	for k := range 3 {
		grads(ta, k)
		oa.Step(ta)
	}
	s, err := oa.State()
	if err != nil {
		t.Fatal(err)
	}
	for i := range tb {
		tb[i].SetValues(ta[i].Values())
	}
	if err := ob.SetState(AdamWState{Steps: s.Steps, M: slices.Clone(s.M), V: slices.Clone(s.V)}, tb); err != nil {
		t.Fatal(err)
	}
	for k := 3; k < 6; k++ {
		grads(ta, k)
		grads(tb, k)
		oa.Step(ta)
		ob.Step(tb)
	}
	for i := range ta {
		if !slices.Equal(ta[i].Data, tb[i].Data) {
			t.Errorf("tensor %d: %v resumed, %v straight", i, tb[i].Data, ta[i].Data)
		}
	}
	if err := ob.SetState(AdamWState{Steps: 1, M: []float32{1}, V: []float32{1}}, tb); err == nil {
		t.Error("moments of the wrong size were taken")
	}
}

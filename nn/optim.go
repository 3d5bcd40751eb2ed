package nn

import (
	"errors"
	"fmt"
	"math"
)

// Params is a named set of parameter tensors whose values share one
// allocation, as llm.c's ParameterTensors do; gradients, when enabled,
// share another, in the same order.
type Params struct {
	Names   []string
	Tensors []*Tensor
	data    []float32
	index   map[string]int
}

// NewParams allocates zeroed tensors of the given shapes in one block.
func NewParams(names []string, shapes [][]int) *Params {
	p := &Params{Names: names, data: make([]float32, CountShapes(shapes)), index: map[string]int{}}
	off := 0
	for i, s := range shapes {
		n := numel(s)
		p.Tensors = append(p.Tensors, &Tensor{Shape: append([]int(nil), s...), Data: p.data[off : off+n : off+n]})
		p.index[names[i]] = i
		off += n
	}
	return p
}

// Get returns the tensor called name, or nil.
func (p *Params) Get(name string) *Tensor {
	i, ok := p.index[name]
	if !ok {
		return nil
	}
	return p.Tensors[i]
}

// Count returns the number of parameter values.
func (p *Params) Count() int {
	n := 0
	for _, t := range p.Tensors {
		n += t.Len()
	}
	return n
}

// JoinParams returns one named set over the tensors of several, each name
// prefixed; the tensors are shared, not copied.
func JoinParams(prefixes []string, parts []*Params) *Params {
	j := &Params{index: map[string]int{}}
	for k, p := range parts {
		for i, t := range p.Tensors {
			j.index[prefixes[k]+p.Names[i]] = len(j.Names)
			j.Names = append(j.Names, prefixes[k]+p.Names[i])
			j.Tensors = append(j.Tensors, t)
		}
	}
	return j
}

// EnableGrad gives every tensor whose name passes keep a gradient, all in
// one zeroed block, and removes the gradients of the others. It returns
// the trainable tensors in order.
func (p *Params) EnableGrad(keep func(name string) bool) []*Tensor {
	total := 0
	for i, t := range p.Tensors {
		if keep(p.Names[i]) {
			total += t.Len()
		}
	}
	block := make([]float32, total)
	var out []*Tensor
	off := 0
	for i, t := range p.Tensors {
		t.Grad = nil
		if keep(p.Names[i]) {
			t.Grad = block[off : off+t.Len() : off+t.Len()]
			off += t.Len()
			out = append(out, t)
		}
		if t.dev != nil {
			// A GPU mirror follows: with a gradient, the next backward
			// allocates it zeroed (as after ZeroGrad); without, none is
			// allocated or computed again.
			t.dev.paramGrad = t.Grad != nil
			t.dev.freeGrad()
		}
	}
	return out
}

// ZeroGrad clears the gradients of ts. On a GPU it gives them back to the
// device instead, as PyTorch's zero_grad(set_to_none=True): the next
// backward allocates each, zeroed, when it first reaches the tensor, so
// that gradients grow while that backward frees activations rather than
// sitting beside them at the forward's peak (at t5-base, 0.9 GB).
func ZeroGrad(ts []*Tensor) {
	for _, t := range ts {
		if t.dev == nil {
			clear(t.Grad)
		} else {
			t.dev.freeGrad()
		}
	}
}

// deviceGrads groups the device gradients of ts by device, devices in the
// order first met.
func deviceGrads(ts []*Tensor) (map[tensorDevice][]Buffer, []tensorDevice) {
	devices := map[tensorDevice][]Buffer{}
	var order []tensorDevice
	for _, t := range ts {
		if t.dev != nil && !t.dev.grad.IsNil() {
			d := t.dev.dev
			if _, ok := devices[d]; !ok {
				order = append(order, d)
			}
			devices[d] = append(devices[d], t.dev.grad)
		}
	}
	return devices, order
}

// ClipGradNorm scales the gradients of ts so that their global L2 norm is
// at most maxNorm, as torch.nn.utils.clip_grad_norm_ does, and returns the
// norm before clipping. The sum of squares is accumulated in float64.
func ClipGradNorm(ts []*Tensor, maxNorm float64) float64 {
	var ss float64
	devices, order := deviceGrads(ts)
	for _, t := range ts {
		if t.dev != nil {
			continue // on the device, or none there yet (zeros)
		}
		for _, g := range t.Grad {
			ss += float64(g) * float64(g)
		}
	}
	for _, d := range order {
		s, err := d.SumSquares(devices[d])
		if err != nil {
			panic(fmt.Sprintf("nn: ClipGradNorm: %v", err))
		}
		ss += s
	}
	norm := math.Sqrt(ss)
	if coef := maxNorm / (norm + 1e-6); coef < 1 {
		c := float32(coef)
		for _, d := range order {
			d.ScaleAll(devices[d], c)
		}
		for _, t := range ts {
			if t.dev != nil {
				continue
			}
			for i := range t.Grad {
				t.Grad[i] *= c
			}
		}
	}
	return norm
}

// AdamW is Adam with decoupled weight decay and bias correction, as
// torch.optim.AdamW. The hyperparameters are float64, as torch's Python
// floats are: its constants (1 − β₁, 1 − β₂, 1 − lr·wd, lr/bc₁, √bc₂) are
// computed in double and rounded once to float32 (adamwScalars); 1 −
// float32(0.999) instead would be 1.3e-5 off 0.001 and bias every update.
type AdamW struct {
	LR, Beta1, Beta2, Eps, WeightDecay float64

	m, v []float32
	t    int

	// On a GPU the moments live there, one pair of buffers per tensor.
	dm, dv []Buffer
	dev    tensorDevice
}

// NewAdamW returns AdamW with PyTorch's defaults (betas 0.9, 0.999, eps
// 1e-8, weight decay 0.01).
func NewAdamW(lr float64) *AdamW {
	return &AdamW{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
}

// adamwScalars are the float32 constants of one step of torch's
// single-tensor AdamW.
type adamwScalars struct {
	b1, c1, b2, c2, eps float32 // β₁, 1 − β₁, β₂, 1 − β₂, ε
	decay               float32 // 1 − lr·wd
	stepSize            float32 // lr / (1 − β₁ᵗ)
	bc2Sqrt             float32 // √(1 − β₂ᵗ)
}

func (o *AdamW) scalars(step int) adamwScalars {
	bc1 := 1 - math.Pow(o.Beta1, float64(step))
	bc2 := 1 - math.Pow(o.Beta2, float64(step))
	return adamwScalars{b1: float32(o.Beta1), c1: float32(1 - o.Beta1), b2: float32(o.Beta2), c2: float32(1 - o.Beta2),
		eps: float32(o.Eps), decay: float32(1 - o.LR*o.WeightDecay), stepSize: float32(o.LR / bc1), bc2Sqrt: float32(math.Sqrt(bc2))}
}

// Step updates ts from their gradients; ts must be the same tensors, in the
// same order, at every step.
func (o *AdamW) Step(ts []*Tensor) {
	if len(ts) > 0 && ts[0].dev != nil {
		o.stepDevice(ts)
		return
	}
	total := 0
	for _, t := range ts {
		total += t.Len()
	}
	if o.m == nil {
		o.m, o.v = make([]float32, total), make([]float32, total)
	}
	mustLen("AdamW.Step", "moments", len(o.m), total)
	o.t++
	s := o.scalars(o.t)
	off := 0
	for _, t := range ts {
		m, v, p, g := o.m[off:off+t.Len()], o.v[off:off+t.Len()], t.Data, t.Grad
		parallelFor(len(p), 1<<15, func(lo, hi int) {
			if !adamwRows(p, g, m, v, lo, hi, s) {
				adamwRowsGo(p, g, m, v, lo, hi, s)
			}
		})
		off += t.Len()
	}
}

// adamwRowsGo updates elements lo to hi of p and its moments m, v from
// the gradient g.
func adamwRowsGo(p, g, m, v []float32, lo, hi int, s adamwScalars) {
	for i := lo; i < hi; i++ {
		// torch's order: p·(1 − lr·wd); m·β₁ + (1 − β₁)·g; v·β₂ + (1 − β₂)·g·g;
		// p − step·(m / (√v/√bc₂ + ε)).
		gi := g[i]
		mi := m[i]*s.b1 + s.c1*gi
		vi := v[i]*s.b2 + s.c2*gi*gi
		m[i], v[i] = mi, vi
		denom := float32(math.Sqrt(float64(vi)))/s.bc2Sqrt + s.eps
		p[i] = p[i]*s.decay - s.stepSize*(mi/denom)
	}
}

// stepDevice is Step for tensors mirrored on a GPU (ToDevice): the update
// runs there, with moments allocated there on the first step.
func (o *AdamW) stepDevice(ts []*Tensor) {
	if o.dm == nil {
		for _, t := range ts {
			if t.dev == nil || !t.dev.paramGrad {
				panic("nn: AdamW.Step: a mix of GPU and host tensors, or a tensor without a gradient")
			}
			m, v := t.dev.dev.Alloc(t.Len()), t.dev.dev.Alloc(t.Len())
			t.dev.dev.Zero(m)
			t.dev.dev.Zero(v)
			o.dm, o.dv = append(o.dm, m), append(o.dv, v)
		}
		o.dev = ts[0].dev.dev
	}
	mustLen("AdamW.Step", "moments", len(o.dm), len(ts))
	o.t++
	p, g := make([]Buffer, len(ts)), make([]Buffer, len(ts))
	for i, t := range ts {
		switch {
		case t.dev == nil || t.dev.dev != o.dev:
			panic("nn: AdamW.Step: tensors on more than one device, or on the host")
		case !t.dev.paramGrad:
			panic(fmt.Sprintf("nn: AdamW.Step: tensor %d %v has no gradient on the GPU", i, t.Shape))
		case t.Len() != o.dm[i].Len():
			panic(fmt.Sprintf("nn: AdamW.Step: tensor %d has %d values, its moments %d: not the tensors of the first step", i, t.Len(), o.dm[i].Len()))
		}
		// A tensor the backward did not reach steps on a zero gradient, as
		// it did when gradients stayed allocated (torch skips it).
		p[i], g[i] = t.dev.data, t.dev.gradOrZero(t.Len())
	}
	o.dev.AdamWStep(o, o.t, p, g, o.dm, o.dv)
}

// AdamWState is an optimiser's position: the steps taken and the first
// and second moments of every tensor, concatenated in Step's order (nil
// before the first step). A checkpoint keeps it so that a resumed run
// takes the same steps as one never stopped.
type AdamWState struct {
	Steps int
	M, V  []float32
}

// State returns the optimiser's position, copied from the GPU when the
// moments live there; on the host it shares their memory until the next
// Step.
func (o *AdamW) State() (AdamWState, error) {
	s := AdamWState{Steps: o.t}
	switch {
	case o.dm != nil:
		total := 0
		for _, b := range o.dm {
			total += b.Len()
		}
		s.M, s.V = make([]float32, total), make([]float32, total)
		off := 0
		for i := range o.dm {
			n := o.dm[i].Len()
			if err := o.dev.Download(s.M[off:off+n], o.dm[i]); err != nil {
				return s, fmt.Errorf("nn: copying AdamW's moments from the GPU: %w", err)
			}
			if err := o.dev.Download(s.V[off:off+n], o.dv[i]); err != nil {
				return s, fmt.Errorf("nn: copying AdamW's moments from the GPU: %w", err)
			}
			off += n
		}
	case o.m != nil:
		s.M, s.V = o.m, o.v
	}
	return s, nil
}

// SetState puts the optimiser where State found it, for the tensors ts
// it steps (on the GPU when they live there). On the host it keeps s's
// moments as its own. It returns an error when they do not fit ts.
func (o *AdamW) SetState(s AdamWState, ts []*Tensor) error {
	total := 0
	for _, t := range ts {
		total += t.Len()
	}
	if s.M == nil && s.V == nil {
		o.t, o.m, o.v, o.dm, o.dv = s.Steps, nil, nil, nil, nil
		return nil
	}
	if len(s.M) != total || len(s.V) != total {
		return fmt.Errorf("nn: AdamW state holds %d and %d moments for tensors of %d values", len(s.M), len(s.V), total)
	}
	o.t = s.Steps
	if len(ts) == 0 || ts[0].dev == nil {
		o.m, o.v = s.M, s.V
		return nil
	}
	o.dm, o.dv, o.dev = nil, nil, ts[0].dev.dev
	off := 0
	for _, t := range ts {
		if t.dev == nil {
			return errors.New("nn: AdamW state: a mix of GPU and host tensors")
		}
		m, v := t.dev.dev.Alloc(t.Len()), t.dev.dev.Alloc(t.Len())
		t.dev.dev.Write(m, s.M[off:off+t.Len()])
		t.dev.dev.Write(v, s.V[off:off+t.Len()])
		o.dm, o.dv = append(o.dm, m), append(o.dv, v)
		off += t.Len()
	}
	return nil
}

package baselines

import (
	"fmt"
	"strings"

	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// ia3Shapes lists IA³'s vectors: one over the output of every attention's
// key and value projection (self and cross), one over the input of every
// feed-forward's output projection (after its nonlinearity), named after
// the projection as peft names them (".ia3_l").
func ia3Shapes(c t5.Config) ([]string, [][]int) {
	var names []string
	var shapes [][]int
	lin, out, in := linearNames(c)
	for i, n := range lin {
		switch {
		case strings.HasSuffix(n, ".k"), strings.HasSuffix(n, ".v"):
			names, shapes = append(names, n+".ia3_l"), append(shapes, []int{out[i]})
		case strings.HasSuffix(n, ".wo"):
			names, shapes = append(names, n+".ia3_l"), append(shapes, []int{in[i]})
		}
	}
	return names, shapes
}

// newIA3 rescales keys, values and the feed-forward's inner activation
// by learned vectors, all ones at the start, so training begins at the
// backbone itself (Liu et al. 2022, "Few-Shot Parameter-Efficient
// Fine-Tuning is Better and Cheaper than In-Context Learning"). Where and
// how is peft's IA³ for T5: target modules k, v and wo, wo a feed-forward
// module whose input is scaled, the others' output.
// reference: peft tuners/ia3/layer.py.
func newIA3(m *t5.Model, _ *methods.Settings, _ uint64) (methods.Method, error) {
	freeze(m)
	o := newOwn(ia3Shapes(m.Config))
	for _, t := range o.params.Tensors {
		for i := range t.Data {
			t.Data[i] = 1
		}
	}
	o.hooks = &t5.Hooks{Linear: func(g *nn.Graph, name string, x, w *nn.Tensor) *nn.Tensor {
		l := o.params.Get(name + ".ia3_l")
		switch {
		case l == nil:
			return g.Linear(x, w, nil)
		case strings.HasSuffix(name, ".wo"):
			return g.Linear(g.MulRow(x, l), w, nil)
		default:
			return g.MulRow(g.Linear(x, w, nil), l)
		}
	}}
	return &ia3{o}, nil
}

// ia3 is IA³'s vectors; merging folds them into the projections.
type ia3 struct{ *own }

// Merge scales each key and value projection's rows (its outputs) and
// each feed-forward output projection's columns (its inputs) by the
// learned vectors, as peft's IA³ merge does.
func (l *ia3) Merge(m *t5.Model) error {
	for i, name := range l.params.Names {
		target := strings.TrimSuffix(name, ".ia3_l")
		w := m.Params.Get(target + ".weight")
		if w == nil {
			return fmt.Errorf("ia3: the model has no %s.weight to merge into", target)
		}
		s, wv := l.params.Tensors[i].Values(), w.Values()
		out, in := w.Dim(0), w.Dim(1)
		for o := range out {
			for j := range in {
				if strings.HasSuffix(target, ".wo") {
					wv[o*in+j] *= s[j]
				} else {
					wv[o*in+j] *= s[o]
				}
			}
		}
		w.SetValues(wv)
	}
	return nil
}

package baselines

import (
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
	return o, nil
}

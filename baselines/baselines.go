// Package baselines implements the READ paper's baselines on the methods
// interface: full fine-tuning, BitFit, LoRA, adapters, prompt tuning and
// Ladder Side-Tuning (lst.go).
//
// # Defaults
//
// Each default reproduces the trainable-parameter count the paper reports
// (shared/reference/methods.md §0): LoRA on q and v of the decoder's
// self-attention (0.48 % at rank 32 on t5-base), one adapter per block
// output (0.96 % at bottleneck 64), BitFit biases on the decoder's linear
// layers and norms (0.06 %), 20 prompt vectors (0.01 %). The textbook
// variants are settings: lora targets: all_qv, adapter placement: houlsby,
// bitfit scope: all.
package baselines

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// Register adds the baselines to r.
func Register(r methods.Registry) {
	// Order: the paper's Table 1 rows.
	r["full"] = methods.Entry{New: newFull, Display: "Full-tuning", Order: 0}
	r["adapter"] = methods.Entry{New: newAdapter, Display: "Adapter", Order: 1}
	r["lora"] = methods.Entry{New: newLoRA, Display: "LoRA", Order: 2}
	r["bitfit"] = methods.Entry{New: newBitFit, Display: "BitFit", Order: 3}
	r["prompt"] = methods.Entry{New: newPrompt, Display: "Prompt-tuning", Order: 4}
	r["lst"] = methods.Entry{New: newLST, Display: "LST", Order: 5}
	// Not in the paper (READ takes 6): users comparing PEFT methods ask for it.
	r["ia3"] = methods.Entry{New: newIA3, Display: "IA³", Order: 7}
}

// own is a method's own tensors with every one trainable.
type own struct {
	params *nn.Params
	train  []*nn.Tensor
	hooks  *t5.Hooks
}

func (o *own) Trainable() []*nn.Tensor { return o.train }
func (o *own) Hooks() *t5.Hooks        { return o.hooks }
func (o *own) Weights() *nn.Params     { return o.params }

func newOwn(names []string, shapes [][]int) *own {
	p := nn.NewParams(names, shapes)
	return &own{params: p, train: p.EnableGrad(func(string) bool { return true })}
}

// freeze takes the backbone's gradients away, so it runs tape-free.
func freeze(m *t5.Model) { m.Params.EnableGrad(func(string) bool { return false }) }

// linearNames lists the backbone's projections (names without ".weight")
// with their output and input sizes, in Hugging Face order.
func linearNames(c t5.Config) (names []string, out, in []int) {
	all, shapes := t5.ParamShapes(c, false)
	for i, name := range all {
		if strings.Contains(name, "layer_norm") || strings.Contains(name, "relative_attention_bias") || name == "shared.weight" {
			continue
		}
		s := shapes[i]
		names = append(names, strings.TrimSuffix(name, ".weight"))
		out, in = append(out, s[0]), append(in, s[1])
	}
	return names, out, in
}

// normNames lists the backbone's RMSNorms (names without ".weight").
func normNames(c t5.Config) []string {
	var names []string
	all, _ := t5.ParamShapes(c, false)
	for _, name := range all {
		if strings.HasSuffix(name, "layer_norm.weight") {
			names = append(names, strings.TrimSuffix(name, ".weight"))
		}
	}
	return names
}

// ---- full fine-tuning ----------------------------------------------------

type full struct {
	m     *t5.Model
	train []*nn.Tensor
}

func newFull(m *t5.Model, s *methods.Settings, _ uint64) (methods.Method, error) {
	return &full{m: m, train: m.Params.EnableGrad(func(string) bool { return true })}, nil
}

func (f *full) Trainable() []*nn.Tensor { return f.train }
func (f *full) Hooks() *t5.Hooks        { return &t5.Hooks{} }
func (f *full) Weights() *nn.Params     { return f.m.Params }
func (f *full) WeightDecay() bool       { return true }
func (f *full) BackboneDropout() bool   { return true }

// ---- BitFit --------------------------------------------------------------

// bitfitShapes lists the zero-initialised biases BitFit adds: one per
// projection (its output size) and per RMSNorm (d_model), in the decoder
// or, with scope all, everywhere and on the LM head too (the LST code's
// BitFit: 282,496 on t5-base).
func bitfitShapes(c t5.Config, scope string) ([]string, [][]int) {
	var names []string
	var shapes [][]int
	keep := func(n string) bool { return scope == "all" || strings.HasPrefix(n, "decoder.") }
	lin, out, _ := linearNames(c)
	for i, n := range lin {
		if keep(n) {
			names, shapes = append(names, n+".bias"), append(shapes, []int{out[i]})
		}
	}
	for _, n := range normNames(c) {
		if keep(n) {
			names, shapes = append(names, n+".bias"), append(shapes, []int{c.DModel})
		}
	}
	if scope == "all" {
		names, shapes = append(names, "lm_head.bias"), append(shapes, []int{c.VocabSize})
	}
	return names, shapes
}

func newBitFit(m *t5.Model, s *methods.Settings, _ uint64) (methods.Method, error) {
	scope, err := s.Choice("scope", "decoder", "all")
	if err != nil {
		return nil, err
	}
	freeze(m)
	o := newOwn(bitfitShapes(m.Config, scope))
	eps := float32(m.Config.LayerNormEps)
	o.hooks = &t5.Hooks{
		Linear: func(g *nn.Graph, name string, x, w *nn.Tensor) *nn.Tensor {
			return g.Linear(x, w, o.params.Get(name+".bias"))
		},
		Norm: func(g *nn.Graph, name string, x, w *nn.Tensor) *nn.Tensor {
			y := g.RMSNorm(x, w, eps)
			if b := o.params.Get(name + ".bias"); b != nil {
				y = g.AddRow(y, b)
			}
			return y
		},
	}
	return o, nil
}

// ---- LoRA ----------------------------------------------------------------

// loraTargets returns the projections LoRA wraps: q and v of the decoder's
// self-attention, or of every attention (peft's default for T5).
func loraTargets(c t5.Config, targets string) (names []string, out, in []int) {
	lin, o, i := linearNames(c)
	for k, n := range lin {
		isQV := strings.HasSuffix(n, ".q") || strings.HasSuffix(n, ".v")
		if !isQV || (targets == "decoder_self_qv" && !(strings.HasPrefix(n, "decoder.") && strings.Contains(n, "SelfAttention"))) {
			continue
		}
		names, out, in = append(names, n), append(out, o[k]), append(in, i[k])
	}
	return names, out, in
}

func loraShapes(c t5.Config, targets string, r int) ([]string, [][]int) {
	var names []string
	var shapes [][]int
	tn, out, in := loraTargets(c, targets)
	for i, n := range tn {
		names = append(names, n+".lora_A", n+".lora_B")
		shapes = append(shapes, []int{r, in[i]}, []int{out[i], r})
	}
	return names, shapes
}

// newLoRA adds W₀x + (α/r)·B·A·x on its targets: A Kaiming-uniform (a = √5,
// i.e. U(±1/√d_in)) as peft, B = 0, α = r unless set.
// reference: peft tuners/lora/layer.py.
func newLoRA(m *t5.Model, s *methods.Settings, seed uint64) (methods.Method, error) {
	r, err := s.Int("rank", 32, 1)
	if err != nil {
		return nil, err
	}
	alpha, err := s.Float("alpha", float64(r))
	if err != nil {
		return nil, err
	}
	targets, err := s.Choice("targets", "decoder_self_qv", "all_qv")
	if err != nil {
		return nil, err
	}
	freeze(m)
	o := newOwn(loraShapes(m.Config, targets, r))
	rng := rand.New(rand.NewPCG(seed, 0x10)) // LoRA's stream
	for i, name := range o.params.Names {
		if strings.HasSuffix(name, ".lora_A") {
			t := o.params.Tensors[i]
			bound := 1 / math.Sqrt(float64(t.Dim(1)))
			for j := range t.Data {
				t.Data[j] = float32((2*rng.Float64() - 1) * bound)
			}
		}
	}
	scale := float32(alpha / float64(r))
	o.hooks = &t5.Hooks{Linear: func(g *nn.Graph, name string, x, w *nn.Tensor) *nn.Tensor {
		y := g.Linear(x, w, nil)
		a := o.params.Get(name + ".lora_A")
		if a == nil {
			return y
		}
		out := g.AddLinear(y, g.Linear(x, a, nil), o.params.Get(name+".lora_B"), scale)
		// No backward reads the base product: on a GPU it would otherwise
		// stay to the end of the step (peft's is freed as soon as Python
		// drops it).
		g.Drop(y)
		return out
	}}
	return &lora{own: o, scale: float64(alpha) / float64(r)}, nil
}

// lora is LoRA's tensors and its scale α/r, which merging needs.
type lora struct {
	*own
	scale float64
}

// Merge adds (α/r)·B·A to each target's weight, as peft's merge does
// (get_delta_weight), with sums in float64.
func (l *lora) Merge(m *t5.Model) error {
	for i, name := range l.params.Names {
		target, ok := strings.CutSuffix(name, ".lora_A")
		if !ok {
			continue
		}
		a, b, w := l.params.Tensors[i].Values(), l.params.Get(target+".lora_B").Values(), m.Params.Get(target+".weight")
		if w == nil {
			return fmt.Errorf("lora: the model has no %s.weight to merge into", target)
		}
		r := l.params.Tensors[i].Dim(0)
		out, in := w.Dim(0), w.Dim(1)
		wv := w.Values()
		for o := range out {
			for j := range in {
				var sum float64
				for k := range r {
					sum += float64(b[o*r+k]) * float64(a[k*in+j])
				}
				wv[o*in+j] = float32(float64(wv[o*in+j]) + l.scale*sum)
			}
		}
		w.SetValues(wv)
	}
	return nil
}

// ---- adapters ------------------------------------------------------------

// adapterSites returns where adapters go: every block output (one per
// block, encoder and decoder) or, Houlsby's placement, the self-attention
// and feed-forward sub-layer outputs (two per block; none on
// cross-attention).
func adapterSites(c t5.Config, placement string) []string {
	var sites []string
	for _, stack := range []struct {
		name   string
		layers int
	}{{"encoder", c.NumLayers}, {"decoder", c.NumDecoderLayers}} {
		for i := range stack.layers {
			p := fmt.Sprintf("%s.block.%d", stack.name, i)
			if placement == "block" {
				sites = append(sites, p)
				continue
			}
			ff := 1
			if stack.name == "decoder" {
				ff = 2
			}
			sites = append(sites, fmt.Sprintf("%s.layer.0", p), fmt.Sprintf("%s.layer.%d", p, ff))
		}
	}
	return sites
}

func adapterShapes(c t5.Config, placement string, k int) ([]string, [][]int) {
	var names []string
	var shapes [][]int
	for _, site := range adapterSites(c, placement) {
		a := site + ".adapter."
		names = append(names, a+"down.weight", a+"down.bias", a+"up.weight", a+"up.bias")
		shapes = append(shapes, []int{k, c.DModel}, []int{k}, []int{c.DModel, k}, []int{c.DModel})
	}
	return names, shapes
}

// newAdapter adds x + up(relu(down(x))) at its sites, weights N(0, 0.01²)
// and biases 0 (the LST code's init: close to the identity).
func newAdapter(m *t5.Model, s *methods.Settings, seed uint64) (methods.Method, error) {
	k, err := s.Int("bottleneck", 64, 1)
	if err != nil {
		return nil, err
	}
	placement, err := s.Choice("placement", "block", "houlsby")
	if err != nil {
		return nil, err
	}
	freeze(m)
	o := newOwn(adapterShapes(m.Config, placement, k))
	rng := rand.New(rand.NewPCG(seed, 0xad))
	for i, name := range o.params.Names {
		if strings.HasSuffix(name, ".weight") {
			for j := range o.params.Tensors[i].Data {
				o.params.Tensors[i].Data[j] = float32(rng.NormFloat64() * 0.01)
			}
		}
	}
	apply := func(g *nn.Graph, site string, x *nn.Tensor) *nn.Tensor {
		a := site + ".adapter."
		down := o.params.Get(a + "down.weight")
		if down == nil {
			return x
		}
		h := g.ReLU(g.Linear(x, down, o.params.Get(a+"down.bias")))
		return g.Add(x, g.Linear(h, o.params.Get(a+"up.weight"), o.params.Get(a+"up.bias")))
	}
	o.hooks = &t5.Hooks{}
	if placement == "block" {
		o.hooks.Block = func(g *nn.Graph, stack string, i int, x *nn.Tensor) *nn.Tensor {
			return apply(g, fmt.Sprintf("%s.block.%d", stack, i), x)
		}
	} else {
		o.hooks.SubLayer = func(g *nn.Graph, name string, y *nn.Tensor) *nn.Tensor {
			return apply(g, strings.TrimSuffix(name, "."), y)
		}
	}
	return o, nil
}

// ---- prompt tuning -------------------------------------------------------

// newPrompt prepends P trainable vectors to the encoder's input embeddings
// and extends the attention mask with P ones (Lester et al.; peft's prompt
// tuning). They start as rows of the embedding table drawn without
// replacement from the first 5,000 (init: vocab), or U(−0.5, 0.5)
// (init: random).
func newPrompt(m *t5.Model, s *methods.Settings, seed uint64) (methods.Method, error) {
	P, err := s.Int("prompts", 20, 1)
	if err != nil {
		return nil, err
	}
	init, err := s.Choice("init", "vocab", "random")
	if err != nil {
		return nil, err
	}
	freeze(m)
	D := m.Config.DModel
	o := newOwn([]string{"prompt.embedding"}, [][]int{{P, D}})
	emb := o.params.Tensors[0]
	rng := rand.New(rand.NewPCG(seed, 0x9f))
	if init == "vocab" {
		pool := min(5000, m.Config.VocabSize)
		if P > pool {
			return nil, s.Err("prompts", "%d prompts need %d distinct vocabulary rows, the model has %d", P, P, pool)
		}
		for i, row := range rng.Perm(pool)[:P] {
			copy(emb.Data[i*D:(i+1)*D], m.Shared.Data[row*D:(row+1)*D])
		}
	} else {
		for i := range emb.Data {
			emb.Data[i] = float32(rng.Float64() - 0.5)
		}
	}
	o.hooks = &t5.Hooks{InputEmbeds: func(g *nn.Graph, x *nn.Tensor, mask []bool) (*nn.Tensor, []bool) {
		B, S := x.Dim(0), x.Dim(1)
		out := make([]bool, B*(P+S))
		for b := 0; b < B; b++ {
			for i := 0; i < P; i++ {
				out[b*(P+S)+i] = true
			}
			for j := 0; j < S; j++ {
				out[b*(P+S)+P+j] = mask == nil || mask[b*S+j]
			}
		}
		return g.Prepend(emb, x), out
	}}
	return o, nil
}

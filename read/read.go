// Package read implements READ (REcurrent ADaptation, arXiv 2305.15348):
// a small recurrent network that runs over the depth of a frozen T5 and
// corrects its output, trained without any gradient entering the
// backbone.
//
// # Variant A (default, the paper's Algorithm 1)
//
// The encoder cell consumes every encoder block output (B·S positions,
// depth as time, shared input RMSNorm, h₀ = 0). The decoder cell consumes
// each decoder block output plus ψ_j = σ̄_j · Ψ(c^E), where σ̄_j is layer j's
// cross-attention averaged over heads and c^E the encoder cell's final
// state. The projection P(c^D) of the decoder cell's result is added to
// the decoder's normalised output (merge: post_norm) or to its last block
// output before the final norm (merge: pre_norm), then the LM head runs.
//
// # Variant B (the public code's dataflow)
//
// The encoder correction Ψ(c^E) is added to the encoder output before the
// decoder reads it, so the encoder cell's gradient flows through the frozen
// decoder; the decoder cell sees block outputs only.
//
// # Settings
//
// cell: gru|lstm|rnn, hidden: 256, agg: last|mean, merge: post_norm|pre_norm,
// variant: A|B, recurrence: true|false. Without recurrence (Table 2's
// ablation, "one untied cell per layer") every layer has its own norm,
// cell and projection; the state still runs over depth, and the layers'
// projected states are summed, so every unit is used: 12× the parameters
// on t5-base, the paper's 9.6 %. The paper does not say how its untied
// variant combines layers; this is our reading. Every setting is recorded
// with the trial.
package read

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// Register adds READ to r.
func Register(r methods.Registry) {
	r["read"] = methods.Entry{New: New, Display: "READ", Order: 6} // the paper's last row
}

// Options are READ's architecture settings.
type Options struct {
	Cell       string // gru, lstm or rnn
	Hidden     int    // R
	Agg        string // last or mean
	Merge      string // post_norm or pre_norm
	Variant    string // A or B
	Recurrence bool   // false: one cell per layer
}

func parseOptions(s *methods.Settings) (Options, error) {
	var o Options
	var err error
	if o.Cell, err = s.Choice("cell", "gru", "lstm", "rnn"); err != nil {
		return o, err
	}
	if o.Hidden, err = s.Int("hidden", 256, 1); err != nil {
		return o, err
	}
	if o.Agg, err = s.Choice("agg", "last", "mean"); err != nil {
		return o, err
	}
	if o.Merge, err = s.Choice("merge", "post_norm", "pre_norm"); err != nil {
		return o, err
	}
	if o.Variant, err = s.Choice("variant", "A", "B"); err != nil {
		return o, err
	}
	o.Recurrence, err = s.Bool("recurrence", true)
	return o, err
}

func gates(cell string) int {
	switch cell {
	case "gru":
		return 3
	case "lstm":
		return 4
	}
	return 1
}

// Shapes lists READ's tensors for a backbone config. Per side (encoder,
// decoder): an input RMSNorm, one cell with PyTorch's weight_ih,
// weight_hh, bias_ih, bias_hh, and a projection R → D with bias (psi: Ψ in
// variant A, the encoder's output projection in B; out: P). Without
// recurrence every layer has all three of its own (Table 2: 12× on t5-base).
func Shapes(c t5.Config, o Options) ([]string, [][]int) {
	D, R, G := c.DModel, o.Hidden, gates(o.Cell)
	var names []string
	var shapes [][]int
	add := func(name string, shape ...int) {
		names, shapes = append(names, name), append(shapes, shape)
	}
	for _, side := range []struct {
		name, proj string
		layers     int
	}{{"encoder", "psi", c.NumLayers}, {"decoder", "out", c.NumDecoderLayers}} {
		units := 1
		if !o.Recurrence {
			units = side.layers
		}
		for k := range units {
			p, q := unitNames(side.name, side.proj, k, o.Recurrence)
			add(p+"norm.weight", D)
			add(p+"cell.weight_ih", G*R, D)
			add(p+"cell.weight_hh", G*R, R)
			add(p+"cell.bias_ih", G*R)
			add(p+"cell.bias_hh", G*R)
			add(q+"weight", D, R)
			add(q+"bias", D)
		}
	}
	return names, shapes
}

// unitNames returns the prefixes of one side's norm+cell and projection:
// "encoder." and "psi." with recurrence, "encoder.3." and "psi.3." per
// layer without.
func unitNames(side, proj string, layer int, recurrence bool) (string, string) {
	if recurrence {
		return side + ".", proj + "."
	}
	return fmt.Sprintf("%s.%d.", side, layer), fmt.Sprintf("%s.%d.", proj, layer)
}

// Read is READ attached to one backbone.
type Read struct {
	opts   Options
	m      *t5.Model
	params *nn.Params
	train  []*nn.Tensor
	hooks  *t5.Hooks
}

// New attaches READ to m; the backbone is frozen.
func New(m *t5.Model, s *methods.Settings, seed uint64) (methods.Method, error) {
	o, err := parseOptions(s)
	if err != nil {
		return nil, err
	}
	m.Params.EnableGrad(func(string) bool { return false })
	r := &Read{opts: o, m: m, params: nn.NewParams(Shapes(m.Config, o))}
	r.train = r.params.EnableGrad(func(string) bool { return true })
	r.init(seed)
	r.hooks = &t5.Hooks{DecoderOutput: r.decoderOutput, LeanEncoder: true}
	if o.Variant == "B" {
		r.hooks.EncoderOutput = r.encoderOutput
	}
	return r, nil
}

// init follows PyTorch: norms 1; cell tensors U(±1/√R); the projections'
// weight and bias U(±1/√fan_in), fan_in = R as well.
func (r *Read) init(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x4ead))
	bound := 1 / math.Sqrt(float64(r.opts.Hidden))
	for i, name := range r.params.Names {
		t := r.params.Tensors[i]
		if strings.HasSuffix(name, "norm.weight") {
			for j := range t.Data {
				t.Data[j] = 1
			}
			continue
		}
		for j := range t.Data {
			t.Data[j] = float32((2*rng.Float64() - 1) * bound)
		}
	}
}

func (r *Read) Trainable() []*nn.Tensor { return r.train }
func (r *Read) Hooks() *t5.Hooks        { return r.hooks }
func (r *Read) Weights() *nn.Params     { return r.params }

// TrainsFromStates reports whether training can read cached backbone
// states: in variant A nothing READ learns changes the backbone's states;
// in variant B the decoder reads the corrected encoder output.
func (r *Read) TrainsFromStates() bool { return r.opts.Variant == "A" }

// Options returns the settings READ runs with.
func (r *Read) Options() Options { return r.opts }

// side runs one side's network over the block outputs xs (each
// (B, T, D)) and returns its projected correction (B·T, D). The state runs
// over depth from h₀ = 0. With recurrence one shared cell does every step
// and the aggregate state (last or mean) is projected; without, layer i
// has its own norm, cell and projection, and the projected states of all
// layers are summed.
func (r *Read) side(g *nn.Graph, side, proj string, xs []*nn.Tensor) *nn.Tensor {
	B, T, D := xs[0].Dim(0), xs[0].Dim(1), xs[0].Dim(2)
	N := B * T
	R := r.opts.Hidden
	eps := float32(r.m.Config.LayerNormEps)
	h := g.Zeros(N, R)
	var c *nn.Tensor
	if r.opts.Cell == "lstm" {
		c = g.Zeros(N, R)
	}
	var sum *nn.Tensor
	accumulate := func(t *nn.Tensor) {
		if sum == nil {
			sum = t
		} else {
			sum = g.Add(sum, t)
		}
	}
	for i, x := range xs {
		p, q := unitNames(side, proj, i, r.opts.Recurrence)
		// The cell's input projection of its normed input, in one op: the
		// encoder side's inputs are the frozen backbone's states, and
		// NormLinear then spares the backward a product (see nn.NormLinear).
		gi := g.NormLinear(x.View(N, D), r.params.Get(p+"norm.weight"), r.params.Get(p+"cell.weight_ih"), r.params.Get(p+"cell.bias_ih"), eps)
		whh, bhh := r.params.Get(p+"cell.weight_hh"), r.params.Get(p+"cell.bias_hh")
		var gh *nn.Tensor
		if i == 0 {
			// h₀ = 0: its projection is the bias alone, without a product
			// (forward) or a weight gradient of zeros (backward).
			gh = g.AddRow(g.Zeros(N, gi.Dim(1)), bhh)
		} else {
			gh = g.Linear(h, whh, bhh)
		}
		switch r.opts.Cell {
		case "gru":
			h = g.GRUGates(gi, gh, h)
		case "lstm":
			h, c = g.LSTMGates(gi, gh, c)
		default:
			h = g.RNNGates(gi, gh)
		}
		switch {
		case !r.opts.Recurrence:
			accumulate(g.Linear(h, r.params.Get(q+"weight"), r.params.Get(q+"bias")))
		case r.opts.Agg == "mean":
			accumulate(h)
		}
	}
	if !r.opts.Recurrence {
		return sum
	}
	if r.opts.Agg == "mean" {
		h = g.Scale(sum, 1/float32(len(xs)))
	}
	return g.Linear(h, r.params.Get(proj+".weight"), r.params.Get(proj+".bias"))
}

// encoderCorrection is Ψ(c^E) as (B, S, D).
func (r *Read) encoderCorrection(g *nn.Graph, out *t5.Output) *nn.Tensor {
	enc := out.EncBlockOut
	return r.side(g, "encoder", "psi", enc).View(enc[0].Shape...)
}

// encoderCorrectionOnce is encoderCorrection, computed once per greedy
// decoding call rather than at every step: the encoder side reads the
// encoder's states alone, which do not change while decoding.
func (r *Read) encoderCorrectionOnce(g *nn.Graph, out *t5.Output) *nn.Tensor {
	return out.Once(g, "read.psiE", func() *nn.Tensor { return r.encoderCorrection(g, out) })
}

// merge adds a correction to a stack's output: after its final norm
// (post_norm: to normed) or before it (pre_norm: to the last block output,
// then the norm).
func (r *Read) merge(g *nn.Graph, normed, last, corr, finalNorm *nn.Tensor) *nn.Tensor {
	if r.opts.Merge == "pre_norm" {
		return g.RMSNorm(g.Add(last, corr), finalNorm, float32(r.m.Config.LayerNormEps))
	}
	return g.Add(normed, corr)
}

// encoderOutput is variant B's encoder merge.
func (r *Read) encoderOutput(g *nn.Graph, out *t5.Output) *nn.Tensor {
	corr := r.encoderCorrection(g, out)
	return r.merge(g, out.EncOut, out.EncBlockOut[len(out.EncBlockOut)-1], corr, r.m.EncFinal)
}

// decoderOutput runs the decoder side and returns the corrected output
// (B, T, D) that the LM head reads.
func (r *Read) decoderOutput(g *nn.Graph, out *t5.Output) *nn.Tensor {
	dec := out.DecBlockOut
	xs := dec
	if r.opts.Variant == "A" {
		psiE := r.encoderCorrectionOnce(g, out) // (B, S, D)
		xs = make([]*nn.Tensor, len(dec))
		for j, x := range dec {
			// ψ_j = mean over heads of layer j's cross-attention · Ψ(c^E)
			xs[j] = g.Add(x, g.BatchMatmul(g.MeanHeads(out.CrossAttn[j]), psiE))
		}
	}
	corr := r.side(g, "decoder", "out", xs).View(dec[0].Shape...)
	return r.merge(g, out.DecOut, dec[len(dec)-1], corr, r.m.DecFinal)
}

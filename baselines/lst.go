package baselines

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"

	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// Ladder Side-Tuning (LST, arXiv 2206.06522) as the LST code builds it for
// T5 (shared/reference/methods.md §7): a side network of T5 blocks at width
// d_s = sidenet_dim (d_kv and d_ff scaled alike, heads unchanged), one per
// backbone block. Its encoder starts from a down-projection of the
// embeddings; before side block i it mixes in a down-projection of backbone
// block i's output through a learned gate σ(α_i/0.1) (α_i = 0 at first);
// its decoder cross-attends to the side encoder's output. An up-projection
// of the side decoder's normalised output feeds the frozen LM head. The
// backbone runs frozen and tape-free.
//
// Side blocks start as a structured pruning of the backbone's blocks
// (init: fisher, ranking channels by the empirical Fisher information of
// init_examples training examples; init: magnitude, by |W|, no data) or at
// random (init: random). The side network runs without dropout.

// lstGateTemp is the LST code's gate temperature T.
const lstGateTemp = 0.1

// lstSideConfig is the backbone config narrowed to the side width.
func lstSideConfig(c t5.Config, ds int) (t5.Config, error) {
	if ds < 1 || ds > c.DModel {
		return c, fmt.Errorf("sidenet_dim %d must be in 1..%d (d_model)", ds, c.DModel)
	}
	s := c
	s.DModel = ds
	s.DKV = c.DKV * ds / c.DModel
	s.DFF = c.DFF * ds / c.DModel
	s.DropoutRate = 0
	if s.DKV < 1 || s.DFF < 1 {
		return c, fmt.Errorf("sidenet_dim %d is too narrow for %d heads of d_kv %d", ds, c.NumHeads, c.DKV)
	}
	return s, nil
}

// lstOwnShapes lists the ladder's own tensors: down-projections of the
// embeddings and of every backbone block output, the gates, and the
// up-projection.
func lstOwnShapes(c t5.Config, ds int) ([]string, [][]int) {
	var names []string
	var shapes [][]int
	add := func(name string, shape ...int) {
		names, shapes = append(names, name), append(shapes, shape)
	}
	for _, side := range []struct {
		name   string
		layers int
	}{{"encoder", c.NumLayers}, {"decoder", c.NumDecoderLayers}} {
		add("down."+side.name+".embed.weight", ds, c.DModel)
		add("down."+side.name+".embed.bias", ds)
		for i := range side.layers {
			p := fmt.Sprintf("down.%s.%d.", side.name, i)
			add(p+"weight", ds, c.DModel)
			add(p+"bias", ds)
			add(fmt.Sprintf("gate.%s.%d", side.name, i), 1)
		}
	}
	add("up.weight", c.DModel, ds)
	add("up.bias", c.DModel)
	return names, shapes
}

type lst struct {
	m       *t5.Model
	side    *t5.Model
	own     *nn.Params
	train   []*nn.Tensor
	weights *nn.Params
	hooks   *t5.Hooks
	init    string
	seed    uint64
}

func newLST(m *t5.Model, s *methods.Settings, seed uint64) (methods.Method, error) {
	ds, err := s.Int("sidenet_dim", max(m.Config.DModel/8, 1), 1)
	if err != nil {
		return nil, err
	}
	init, err := s.Choice("init", "fisher", "magnitude", "random")
	if err != nil {
		return nil, err
	}
	sc, err := lstSideConfig(m.Config, ds)
	if err != nil {
		return nil, s.Err("sidenet_dim", "%v", err)
	}
	freeze(m)
	l := &lst{m: m, side: t5.NewStacks(sc), own: nn.NewParams(lstOwnShapes(m.Config, ds)), init: init, seed: seed}
	l.train = append(l.side.Params.EnableGrad(func(string) bool { return true }), l.own.EnableGrad(func(string) bool { return true })...)
	l.weights = nn.JoinParams([]string{"side.", ""}, []*nn.Params{l.side.Params, l.own})
	rng := rand.New(rand.NewPCG(seed, 0x157))
	for i, name := range l.own.Names {
		t := l.own.Tensors[i]
		if strings.HasPrefix(name, "gate.") {
			continue // α = 0: both paths weigh 0.5
		}
		bound := 1 / math.Sqrt(float64(t.Dim(-1)))
		if strings.HasSuffix(name, ".bias") {
			w := l.own.Get(strings.TrimSuffix(name, "bias") + "weight")
			bound = 1 / math.Sqrt(float64(w.Dim(1)))
		}
		for j := range t.Data {
			t.Data[j] = float32((2*rng.Float64() - 1) * bound)
		}
	}
	switch init {
	case "random":
		l.side.Init(seed)
	case "magnitude", "fisher":
		// Fisher pruning waits for InitFrom; until then the side
		// network is pruned by magnitude, so it is usable without data.
		l.prune(magnitude(m))
	}
	l.hooks = &t5.Hooks{DecoderOutput: l.decoderOutput, LeanEncoder: true}
	return l, nil
}

func (l *lst) Trainable() []*nn.Tensor { return l.train }
func (l *lst) Hooks() *t5.Hooks        { return l.hooks }
func (l *lst) Weights() *nn.Params     { return l.weights }

// TrainsFromStates: the ladder reads the frozen backbone's embeddings and
// block outputs and changes none of them, so its trials train from the
// state cache and can be packed.
func (l *lst) TrainsFromStates() bool { return true }

// decoderOutput runs the side network and returns Up(side decoder output),
// which replaces the backbone's decoder output before the LM head. In
// incremental decoding it runs the side decoder for the step's position
// alone, with its self-attention keys and values of earlier positions
// kept in the call's Memo, as the backbone's decoder does: so LST decodes
// with the backbone's cached greedy decoding, packed trials sharing it.
func (l *lst) decoderOutput(g *nn.Graph, out *t5.Output) *nn.Tensor {
	sc := l.side.Config
	eps := float32(sc.LayerNormEps)
	none := &t5.Hooks{}
	p := l.own.Get
	// The side encoder reads the encoder's side alone: once per decoding call.
	enc := out.Once(g, "lst.sideEnc", func() *nn.Tensor { return l.sideEncoder(g, out) })
	demb := out.DecHidden[0]
	T := demb.Dim(1)
	d := g.Linear(demb, p("down.decoder.embed.weight"), p("down.decoder.embed.bias"))
	var dbias *nn.Tensor
	if out.Incremental {
		dbias = g.PositionBias(l.side.DecRelBias, 1, out.Pos+1, out.Pos, false, sc.RelMaxDistance)
	} else {
		dbias = g.PositionBias(l.side.DecRelBias, T, T, 0, false, sc.RelMaxDistance)
	}
	for j := range l.side.Dec {
		ladder := g.Linear(out.DecBlockOut[j], p(fmt.Sprintf("down.decoder.%d.weight", j)), p(fmt.Sprintf("down.decoder.%d.bias", j)))
		d = g.GateMix(d, ladder, p(fmt.Sprintf("gate.decoder.%d", j)), lstGateTemp)
		if !out.Incremental {
			d, _, _ = l.side.DecoderLayer(g, none, j, d, dbias, enc, out.Mask)
			continue
		}
		layer := "lst.dec." + strconv.Itoa(j)
		blk := l.side.Dec[j]
		ck := out.Once(g, layer+".crossK", func() *nn.Tensor { return g.Linear(enc, blk.CK, nil) })
		cv := out.Once(g, layer+".crossV", func() *nn.Tensor { return g.Linear(enc, blk.CV, nil) })
		past := func(k, v *nn.Tensor) (*nn.Tensor, *nn.Tensor) {
			return out.Grow(layer+".selfK", k), out.Grow(layer+".selfV", v)
		}
		d, _ = l.side.DecoderLayerStep(g, none, j, d, dbias, out.Pos, past, ck, cv, out.Mask)
	}
	return g.Linear(g.RMSNorm(d, l.side.DecFinal, eps), p("up.weight"), p("up.bias"))
}

// sideEncoder runs the side encoder over the backbone encoder's
// embeddings and block outputs.
func (l *lst) sideEncoder(g *nn.Graph, out *t5.Output) *nn.Tensor {
	sc := l.side.Config
	none := &t5.Hooks{}
	p := l.own.Get
	emb := out.EncHidden[0]
	S := emb.Dim(1)
	s := g.Linear(emb, p("down.encoder.embed.weight"), p("down.encoder.embed.bias"))
	bias := g.PositionBias(l.side.EncRelBias, S, S, 0, true, sc.RelMaxDistance)
	for i := range l.side.Enc {
		ladder := g.Linear(out.EncBlockOut[i], p(fmt.Sprintf("down.encoder.%d.weight", i)), p(fmt.Sprintf("down.encoder.%d.bias", i)))
		s = g.GateMix(s, ladder, p(fmt.Sprintf("gate.encoder.%d", i)), lstGateTemp)
		s, _ = l.side.EncoderLayer(g, none, i, s, bias, out.Mask)
	}
	return g.RMSNorm(s, l.side.EncFinal, float32(sc.LayerNormEps))
}

// importance gives a backbone tensor's per-element scores, by name;
// pruning ranks channels by their absolute values. It reads only the kept
// input columns of each matrix, a small part of it, but the embedding's
// whole table.
type importance func(name string) []float32

// magnitude ranks by |W|: the backbone's weights themselves, read where
// pruning asks (materialising |W| for the whole backbone cost each trial
// of a pack of LST trials ~0.3 s, about a tenth of it).
func magnitude(m *t5.Model) importance {
	return func(name string) []float32 { return m.Params.Get(name).Values() }
}

// ImportanceWanted: only init: fisher looks at data.
func (l *lst) ImportanceWanted() bool { return l.init == "fisher" }

// Importance is the empirical Fisher information (the squared gradient of
// the task loss, summed over single examples) by which the LST code's
// fisher-v2 initialisation ranks channels; nil without examples.
func (l *lst) Importance(be nn.Backend, batches []t5.Batch) (methods.Importance, error) {
	if len(batches) == 0 {
		return nil, nil
	}
	m := l.m
	grads := m.Params.EnableGrad(func(string) bool { return true })
	defer freeze(m) // a GPU mirror loses its gradient too
	imp := methods.Importance{}
	for i, name := range m.Params.Names {
		imp[name] = make([]float32, m.Params.Tensors[i].Len())
	}
	g := nn.NewGraph(be)
	defer g.Release()
	for _, bt := range batches {
		g.Reset()
		out, err := m.Forward(g, bt, nil)
		if err != nil {
			return nil, err
		}
		g.Backward(out.Loss)
		for i, t := range grads {
			acc := imp[m.Params.Names[i]]
			for j, v := range t.GradValues() {
				acc[j] += v * v
			}
		}
		nn.ZeroGrad(grads)
	}
	return imp, nil
}

// InitFrom prunes the side network by the Fisher information.
func (l *lst) InitFrom(imp methods.Importance) {
	if imp != nil {
		l.prune(func(name string) []float32 { return imp[name] })
	}
}

// prune sets the side blocks to sub-matrices of the backbone's, keeping
// the channels that matter most, as the LST code's
// pruning_without_residual (version 2) does. Walking the tensors in order,
// a group (q, k, v; wi or wi_0, wi_1) first keeps the input columns the
// previous step kept, then keeps the output rows with the largest L1 norm
// of the element-wise product of its importance matrices; a norm keeps the
// previous selection; the hidden selection restarts after every sub-layer
// ("without residual"). The position-bias tables are copied.
func (l *lst) prune(imp importance) {
	m, side := l.m, l.side
	bc, sc := m.Config, side.Config
	get := func(p *nn.Params, name string) *nn.Tensor { return p.Get(name) }
	// The embedding's columns seed the hidden selection.
	shared := imp("shared.weight")
	colScore := make([]float64, bc.DModel)
	for r := 0; r < bc.VocabSize; r++ {
		for c, v := range shared[r*bc.DModel : (r+1)*bc.DModel] {
			colScore[c] += math.Abs(float64(v))
		}
	}
	hidden := topK(colScore, sc.DModel)
	// group keeps rows of a [out, in] group restricted to the columns in.
	group := func(names []string, in []int, keep int) []int {
		w := get(m.Params, names[0])
		out := w.Dim(0)
		cols := w.Dim(1)
		mats := make([][]float32, len(names))
		for i, n := range names {
			mats[i] = imp(n)
		}
		score := make([]float64, out)
		for r := 0; r < out; r++ {
			for _, c := range in {
				prod := 1.0
				for _, a := range mats {
					prod *= float64(a[r*cols+c])
				}
				// |∏a| = ∏|a|: the signs of the raw weights drop out here.
				score[r] += math.Abs(prod)
			}
		}
		return topK(score, keep)
	}
	copySub := func(dst, src string, rows, cols []int) {
		s, d := get(m.Params, src), get(side.Params, dst)
		n := s.Dim(1)
		for i, r := range rows {
			for j, c := range cols {
				d.Data[i*len(cols)+j] = s.Data[r*n+c]
			}
		}
	}
	copyNorm := func(name string, sel []int) {
		s, d := get(m.Params, name), get(side.Params, name)
		for i, c := range sel {
			d.Data[i] = s.Data[c]
		}
	}
	attention := func(prefix string, in []int) []int {
		qkv := []string{prefix + "q.weight", prefix + "k.weight", prefix + "v.weight"}
		inner := group(qkv, in, sc.Inner())
		for _, n := range qkv {
			copySub(n, n, inner, in)
		}
		out := group([]string{prefix + "o.weight"}, inner, sc.DModel)
		copySub(prefix+"o.weight", prefix+"o.weight", out, inner)
		return out
	}
	ffn := func(prefix string, in []int) []int {
		wi := []string{prefix + "wi.weight"}
		if bc.Gated {
			wi = []string{prefix + "wi_0.weight", prefix + "wi_1.weight"}
		}
		mid := group(wi, in, sc.DFF)
		for _, n := range wi {
			copySub(n, n, mid, in)
		}
		out := group([]string{prefix + "wo.weight"}, mid, sc.DModel)
		copySub(prefix+"wo.weight", prefix+"wo.weight", out, mid)
		return out
	}
	for _, stack := range []struct {
		name   string
		layers int
	}{{"encoder", bc.NumLayers}, {"decoder", bc.NumDecoderLayers}} {
		sel := hidden
		for i := range stack.layers {
			p := fmt.Sprintf("%s.block.%d.layer.", stack.name, i)
			copyNorm(p+"0.layer_norm.weight", sel)
			sel = attention(p+"0.SelfAttention.", sel)
			ff := "1."
			if stack.name == "decoder" {
				copyNorm(p+"1.layer_norm.weight", sel)
				sel = attention(p+"1.EncDecAttention.", sel)
				ff = "2."
			}
			copyNorm(p+ff+"layer_norm.weight", sel)
			sel = ffn(p+ff+"DenseReluDense.", sel)
		}
		copyNorm(stack.name+".final_layer_norm.weight", sel)
	}
	copy(side.EncRelBias.Data, m.EncRelBias.Data)
	copy(side.DecRelBias.Data, m.DecRelBias.Data)
}

// topK returns the indices of the k largest scores, in increasing order.
func topK(score []float64, k int) []int {
	idx := make([]int, len(score))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return score[idx[a]] > score[idx[b]] })
	idx = idx[:min(k, len(idx))]
	sort.Ints(idx)
	return idx
}

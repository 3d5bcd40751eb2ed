package t5

import (
	"strconv"

	"github.com/readsweep/readsweep/nn"
)

// Generate decodes greedily: starting from decoder_start_token_id it
// appends, per row, the most likely next token (the first on ties, as
// torch.argmax) until every row has produced eos_token_id or maxNew tokens
// were added; finished rows are padded with pad_token_id. The result rows
// begin with the start token, as Hugging Face's generate returns them.
//
// Self-attention keys and values are cached per layer and the
// cross-attention keys and values are computed once, so each step costs
// one token's work. Every hook applies; DecoderOutput sees one target
// position per step.
func (m *Model) Generate(be nn.Backend, ids []int32, mask []bool, B, S, maxNew int, h *Hooks) [][]int32 {
	e := m.EncodeForDecoding(be, ids, mask, B, S, h)
	defer e.Release()
	return m.GenerateFrom(be, e, maxNew, h)
}

// Encoded is what greedy decoding needs from the encoder: its output and
// mask, its block outputs (for hooks that read them) and every decoder
// layer's cross-attention keys and values. It holds them on a graph of its
// own until Release, so a caller may decode from it many times: with
// hooks for which EncoderUnchanged holds, every such method decodes a
// batch from the same Encoded.
type Encoded struct {
	B, S   int
	enc    *nn.Tensor
	mask   []bool
	out    *Output
	ck, cv []*nn.Tensor
	g      *nn.Graph
}

// Floats is the number of float32 values e holds.
func (e *Encoded) Floats() int {
	n := e.enc.Len()
	for _, set := range [][]*nn.Tensor{e.out.EncBlockOut, e.ck, e.cv} {
		for _, t := range set {
			n += t.Len()
		}
	}
	return n
}

// Release frees e's tensors.
func (e *Encoded) Release() { e.g.Release() }

// EncoderUnchanged reports whether h leaves the encoder and the
// cross-attention keys and values as the plain backbone computes them
// (only DecoderOutput and LeanEncoder set): then one Encoded of a batch
// serves every method with such hooks.
func (h *Hooks) EncoderUnchanged() bool {
	return h == nil || (h.InputEmbeds == nil && h.EncoderOutput == nil && h.Linear == nil && h.Norm == nil &&
		h.SubLayer == nil && h.Block == nil)
}

// EncodeForDecoding runs the encoder and the cross-attention key and
// value projections for greedy decoding.
func (m *Model) EncodeForDecoding(be nn.Backend, ids []int32, mask []bool, B, S int, h *Hooks) *Encoded {
	if h == nil {
		h = &Hooks{}
	}
	ge := nn.NewGraph(be)
	ge.NoGrad = true
	enc, encMask, encOut := m.Encode(ge, ids, mask, B, S, h)
	L := len(m.Dec)
	e := &Encoded{B: B, S: enc.Dim(1), enc: enc, mask: encMask, out: encOut, ck: make([]*nn.Tensor, L), cv: make([]*nn.Tensor, L), g: ge}
	for l, blk := range m.Dec {
		name := decoderName(l) + "1.EncDecAttention."
		e.ck[l] = m.linear(ge, h, name+"k", enc, blk.CK)
		e.cv[l] = m.linear(ge, h, name+"v", enc, blk.CV)
	}
	return e
}

// GenerateFrom decodes greedily from an encoded batch (see Generate).
func (m *Model) GenerateFrom(be nn.Backend, e *Encoded, maxNew int, h *Hooks) [][]int32 {
	if h == nil {
		h = &Hooks{}
	}
	c := m.Config
	D, HK := c.DModel, c.Inner()
	B, enc, encMask, encOut, ck, cv := e.B, e.enc, e.mask, e.out, e.ck, e.cv
	L := len(m.Dec)
	// selfK[l] and selfV[l] hold (B, t, H·K) for the t tokens so far.
	selfK, selfV := make([][]float32, L), make([][]float32, L)
	memo := map[string]*nn.Tensor{}
	out, done, g := m.startDecoding(be, B)
	defer g.Release()
	for t := 0; t < maxNew; t++ {
		g.Reset()
		tok := make([]int32, B)
		for b := range tok {
			tok[b] = out[b][t]
		}
		x := g.Embedding(m.Shared, tok).View(B, 1, D)
		bias := g.PositionBias(m.DecRelBias, 1, t+1, t, false, c.RelMaxDistance)
		step := &Output{EncOut: enc, EncBlockOut: encOut.EncBlockOut, EncHidden: encOut.EncHidden, EncAttn: encOut.EncAttn, Memo: memo}
		for l, blk := range m.Dec {
			name := decoderName(l)
			hn := m.norm(g, h, name+"0.layer_norm", x, blk.SelfNorm)
			q := m.linear(g, h, name+"0.SelfAttention.q", hn, blk.Q)
			k := m.linear(g, h, name+"0.SelfAttention.k", hn, blk.K)
			v := m.linear(g, h, name+"0.SelfAttention.v", hn, blk.V)
			selfK[l] = appendStep(selfK[l], k.Values(), B, t, HK)
			selfV[l] = appendStep(selfV[l], v.Values(), B, t, HK)
			K := &nn.Tensor{Shape: []int{B, t + 1, HK}, Data: selfK[l]}
			V := &nn.Tensor{Shape: []int{B, t + 1, HK}, Data: selfV[l]}
			a, _ := g.Attention(q, K, V, bias, nn.AttentionOpts{Heads: c.NumHeads, Causal: true, QOffset: t})
			x = g.Add(x, m.sub(g, h, name+"0", m.linear(g, h, name+"0.SelfAttention.o", a, blk.O)))
			cq := m.linear(g, h, name+"1.EncDecAttention.q", m.norm(g, h, name+"1.layer_norm", x, blk.CrossNorm), blk.CQ)
			ca, cprobs := g.Attention(cq, ck[l], cv[l], nil, nn.AttentionOpts{Heads: c.NumHeads, KeyMask: encMask})
			x = g.Add(x, m.linear(g, h, name+"1.EncDecAttention.o", ca, blk.CO))
			x = g.Add(x, m.sub(g, h, name+"2", m.ffn(g, h, name+"2.DenseReluDense.", blk, m.norm(g, h, name+"2.layer_norm", x, blk.FFNorm))))
			x = m.blockOut(g, h, "decoder", l, x)
			step.DecBlockOut = append(step.DecBlockOut, x)
			step.CrossAttn = append(step.CrossAttn, cprobs)
		}
		final := m.norm(g, h, "decoder.final_layer_norm", x, m.DecFinal)
		if h.DecoderOutput != nil {
			step.DecOut = final
			final = h.DecoderOutput(g, step)
		}
		logits := m.lmHead(g, h, final)
		V := c.VocabSize
		lv := logits.Values()
		if m.pickNext(out, done, func(b int) []float32 { return lv[b*V : (b+1)*V] }) {
			break
		}
	}
	return out
}

// startDecoding returns B sequences holding the decoder start token, none
// ended, and a gradient-free graph for the steps.
func (m *Model) startDecoding(be nn.Backend, B int) (out [][]int32, done []bool, g *nn.Graph) {
	out, done = make([][]int32, B), make([]bool, B)
	for b := range out {
		out[b] = []int32{int32(m.Config.DecoderStartTokenID)}
	}
	g = nn.NewGraph(be)
	g.NoGrad = true
	return out, done, g
}

// pickNext appends to each row its most likely next token (the first on
// ties, as torch.argmax), or the pad id once the row has produced </s>, and
// reports whether every row has ended. row(b) gives row b's logits.
func (m *Model) pickNext(out [][]int32, done []bool, row func(b int) []float32) bool {
	all := true
	for b := range out {
		next := int32(m.Config.PadTokenID)
		if !done[b] {
			r := row(b)
			best := 0
			for i, v := range r {
				if v > r[best] {
					best = i
				}
			}
			next = int32(best)
			done[b] = next == int32(m.Config.EOSTokenID)
		}
		out[b] = append(out[b], next)
		all = all && done[b]
	}
	return all
}

func decoderName(l int) string { return "decoder.block." + strconv.Itoa(l) + ".layer." }

// appendStep grows a (B, t, W) cache to (B, t+1, W) with one step's rows
// (B, W).
func appendStep(cache, step []float32, B, t, W int) []float32 {
	out := make([]float32, B*(t+1)*W)
	for b := 0; b < B; b++ {
		copy(out[b*(t+1)*W:], cache[b*t*W:(b+1)*t*W])
		copy(out[(b*(t+1)+t)*W:], step[b*W:(b+1)*W])
	}
	return out
}

package t5

import (
	"fmt"
	"slices"
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
	out    *Output // EncOut, Mask and the block outputs
	ck, cv []*nn.Tensor
	g      *nn.Graph
}

// Floats is the number of float32 values e holds.
func (e *Encoded) Floats() int {
	n := e.out.EncOut.Len()
	for _, set := range [][]*nn.Tensor{e.out.EncBlockOut, e.ck, e.cv} {
		for _, t := range set {
			n += t.Len()
		}
	}
	return n
}

// Release frees e's tensors (those on its graph; a restored Encoded's
// belong to whoever mapped them).
func (e *Encoded) Release() {
	if e.g != nil {
		e.g.Release()
	}
}

// Tensor names of an Encoded in a cache file (EncodedTensors).
func encodedName(kind string, i int) string { return kind + "." + strconv.Itoa(i) }

// EncodedTensors returns e's tensors by name, for a file that
// RestoreEncoded reads back: the encoder's output, embeddings and block
// outputs and the decoder's cross-attention keys and values. ok is false
// when e holds attention probabilities too (encoded without LeanEncoder),
// which the file does not keep.
func (e *Encoded) EncodedTensors() (named map[string]*nn.Tensor, ok bool) {
	o := e.out
	if len(o.EncAttn) > 0 || len(o.EncHidden) != len(o.EncBlockOut)+1 {
		return nil, false
	}
	named = map[string]*nn.Tensor{"enc_out": o.EncOut, "enc_embed": o.EncHidden[0]}
	for i, t := range o.EncBlockOut {
		named[encodedName("enc_block", i)] = t
	}
	for l := range e.ck {
		named[encodedName("cross_k", l)], named[encodedName("cross_v", l)] = e.ck[l], e.cv[l]
	}
	return named, true
}

// RestoreEncoded rebuilds the Encoded of a batch of B rows with padding
// mask `mask` from the tensors EncodedTensors named (tensor returns nil
// for a missing one). The tensors are used in place, without copies (a
// mapped file's); their shapes are checked against the model.
func (m *Model) RestoreEncoded(mask []bool, B int, tensor func(name string) *nn.Tensor) (*Encoded, error) {
	c := m.Config
	if B <= 0 || len(mask)%B != 0 {
		return nil, fmt.Errorf("t5: RestoreEncoded: a mask of %d for %d rows", len(mask), B)
	}
	S := len(mask) / B
	get := func(name string, width int) (*nn.Tensor, error) {
		t := tensor(name)
		if t == nil {
			return nil, fmt.Errorf("no tensor %s", name)
		}
		if want := []int{B, S, width}; !slices.Equal(t.Shape, want) || len(t.Data) != B*S*width {
			return nil, fmt.Errorf("tensor %s has shape %v, want %v", name, t.Shape, want)
		}
		return t, nil
	}
	o := &Output{Mask: mask}
	var err error
	if o.EncOut, err = get("enc_out", c.DModel); err != nil {
		return nil, err
	}
	embed, err := get("enc_embed", c.DModel)
	if err != nil {
		return nil, err
	}
	o.EncHidden = []*nn.Tensor{embed}
	for i := range m.Enc {
		t, err := get(encodedName("enc_block", i), c.DModel)
		if err != nil {
			return nil, err
		}
		o.EncBlockOut = append(o.EncBlockOut, t)
		if i < len(m.Enc)-1 {
			o.EncHidden = append(o.EncHidden, t)
		}
	}
	o.EncHidden = append(o.EncHidden, o.EncOut)
	L := len(m.Dec)
	e := &Encoded{B: B, S: S, out: o, ck: make([]*nn.Tensor, L), cv: make([]*nn.Tensor, L)}
	for l := range L {
		if e.ck[l], err = get(encodedName("cross_k", l), c.Inner()); err != nil {
			return nil, err
		}
		if e.cv[l], err = get(encodedName("cross_v", l), c.Inner()); err != nil {
			return nil, err
		}
	}
	return e, nil
}

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
	ge := nn.NewGraph(be)
	ge.NoGrad = true
	return m.encodeForDecoding(ge, ids, mask, B, S, h)
}

// encodeForDecoding is EncodeForDecoding on graph ge, which the Encoded
// then owns.
func (m *Model) encodeForDecoding(ge *nn.Graph, ids []int32, mask []bool, B, S int, h *Hooks) *Encoded {
	if h == nil {
		h = &Hooks{}
	}
	enc, _, encOut := m.Encode(ge, ids, mask, B, S, h)
	L := len(m.Dec)
	e := &Encoded{B: B, S: enc.Dim(1), out: encOut, ck: make([]*nn.Tensor, L), cv: make([]*nn.Tensor, L), g: ge}
	for l, blk := range m.Dec {
		name := decoderName(l) + "1.EncDecAttention."
		e.ck[l] = m.linear(ge, h, name+"k", enc, blk.CK)
		e.cv[l] = m.linear(ge, h, name+"v", enc, blk.CV)
	}
	return e
}

// GenerateFrom decodes greedily from an encoded batch (see Generate).
func (m *Model) GenerateFrom(be nn.Backend, e *Encoded, maxNew int, h *Hooks) [][]int32 {
	return m.GenerateShared(be, e, maxNew, []*Hooks{h})[0]
}

// GenerateShared decodes the encoded batch greedily once per hook set (a
// pack's methods) and shares the backbone's work between them: rows of
// different methods that hold the same tokens so far are one row of the
// backbone decoder, whose block outputs, cross-attention and final output
// each method's DecoderOutput hook then reads. Only methods whose hooks
// touch nothing but the decoder's output can share (EncoderUnchanged);
// one hook set may be anything. Each method's rows come out as Generate
// returns them: with a single hook set the arithmetic is Generate's.
func (m *Model) GenerateShared(be nn.Backend, e *Encoded, maxNew int, hooks []*Hooks) [][][]int32 {
	d := m.NewDecoder(be)
	defer d.Release()
	return d.GenerateShared(e, maxNew, hooks, nil)
}

// Decoder keeps greedy decoding's working memory between calls: a trial
// that decodes every epoch reuses it instead of allocating (and zeroing)
// it afresh each time.
type Decoder struct {
	m         *Model
	g, gk, ge *nn.Graph
	rowSteps  int // backbone rows decoded, summed over steps (what sharing and dropping save)
	// selfK and selfV are each decoder layer's self-attention cache.
	selfK, selfV []selfCache
}

// NewDecoder returns a decoder for m on be; Release frees it.
func (m *Model) NewDecoder(be nn.Backend) *Decoder {
	d := &Decoder{m: m, g: nn.NewGraph(be), gk: nn.NewGraph(be), ge: nn.NewGraph(be)}
	d.g.NoGrad, d.gk.NoGrad, d.ge.NoGrad = true, true, true
	return d
}

// Release frees the decoder's memory.
func (d *Decoder) Release() {
	d.g.Release()
	d.gk.Release()
	d.ge.Release()
	d.selfK, d.selfV = nil, nil
}

// Generate is Model.Generate in d's memory, the encoder's included: a
// trial timing decoding at batch 1 measures the arithmetic, not fresh
// memory (which cost a pack of 8 READ trials, with a larger heap, 40 %
// more per example than a lone trial).
func (d *Decoder) Generate(ids []int32, mask []bool, B, S, maxNew int, h *Hooks, viable Viable) [][]int32 {
	d.ge.Reset()
	e := d.m.encodeForDecoding(d.ge, ids, mask, B, S, h)
	return d.GenerateShared(e, maxNew, []*Hooks{h}, viable)[0]
}

// GenerateShared is Model.GenerateShared in d's memory, ending rows that
// viable rejects (nil: none).
func (d *Decoder) GenerateShared(e *Encoded, maxNew int, hooks []*Hooks, viable Viable) [][][]int32 {
	m, g, gk := d.m, d.g, d.gk
	gk.Reset()
	c := m.Config
	D, HK, H, S := c.DModel, c.Inner(), c.NumHeads, e.S
	B, encOut, ck, cv := e.B, e.out, e.ck, e.cv
	K := len(hooks)
	hb := &Hooks{} // the backbone's hooks: the method's own when alone
	hooks = append([]*Hooks(nil), hooks...)
	for j, h := range hooks {
		if h == nil {
			hooks[j] = hb
		}
	}
	if K == 1 {
		hb = hooks[0]
	}
	L := len(m.Dec)
	outs, dones, memos := make([][][]int32, K), make([][]bool, K), make([]map[string]*nn.Tensor, K)
	for j := range outs {
		outs[j], dones[j] = m.startRows(B)
		memos[j] = map[string]*nn.Tensor{}
	}
	// The backbone decodes G groups, one per distinct (row, tokens so
	// far); group[j][b] is method j's row b's group, groupRow[i] the batch
	// row group i continues. At the start each batch row is one group.
	group := make([][]int32, K)
	groupRow := make([]int32, B)
	for b := range groupRow {
		groupRow[b] = int32(b)
	}
	for j := range group {
		group[j] = append([]int32(nil), groupRow...)
	}
	// selfK[l] and selfV[l] hold (G, t, H·K) for the t tokens so far.
	if len(d.selfK) != L {
		d.selfK, d.selfV = make([]selfCache, L), make([]selfCache, L)
	}
	selfK, selfV := d.selfK, d.selfV
	for l := range L {
		selfK[l].rows, selfV[l].rows = selfK[l].rows[:0], selfV[l].rows[:0]
	}
	// gk holds the encoder's keys and values in group order once groups
	// split; g each step's work.
	gck, gcv, gmask := ck, cv, encOut.Mask
	gather := func(g *nn.Graph, x *nn.Tensor, ids []int32, shape ...int) *nn.Tensor {
		return g.Embedding(x.View(x.Dim(0), x.Len()/x.Dim(0)), ids).View(shape...)
	}
	for t := 0; t < maxNew; t++ {
		g.Reset()
		G := len(groupRow)
		d.rowSteps += G
		tok := make([]int32, G)
		for j := range group {
			for b, gi := range group[j] {
				if gi >= 0 {
					tok[gi] = outs[j][b][t]
				}
			}
		}
		x := g.Embedding(m.Shared, tok).View(G, 1, D)
		bias := g.PositionBias(m.DecRelBias, 1, t+1, t, false, c.RelMaxDistance)
		var blockOut, crossAttn []*nn.Tensor
		embeds := x
		for l := range m.Dec {
			past := func(k, v *nn.Tensor) (*nn.Tensor, *nn.Tensor) {
				selfK[l].appendStep(k.Values(), G, t, HK, G*maxNew*HK)
				selfV[l].appendStep(v.Values(), G, t, HK, G*maxNew*HK)
				return &nn.Tensor{Shape: []int{G, t + 1, HK}, Data: selfK[l].rows}, &nn.Tensor{Shape: []int{G, t + 1, HK}, Data: selfV[l].rows}
			}
			var cprobs *nn.Tensor
			x, cprobs = m.DecoderLayerStep(g, hb, l, x, bias, t, past, gck[l], gcv[l], gmask)
			blockOut = append(blockOut, x)
			crossAttn = append(crossAttn, cprobs)
		}
		decOut := m.norm(g, hb, "decoder.final_layer_norm", x, m.DecFinal)
		all := true
		for j, h := range hooks {
			if !slices.Contains(dones[j], false) {
				// Every row of method j has finished: its pick is padding,
				// and its side of the step (hooks, LM head) is not run.
				m.pickNext(outs[j], dones[j], viable, nil)
				continue
			}
			// Method j's rows are the backbone's rows, or gathered from them.
			own := G == B && sequential(group[j])
			ids := group[j]
			if !own && slices.Contains(ids, -1) {
				// A finished row reads any group: its pick is padding.
				ids = slices.Clone(ids)
				for b, gi := range ids {
					ids[b] = max(gi, 0)
				}
			}
			final := decOut
			if h.DecoderOutput != nil {
				step := &Output{EncOut: encOut.EncOut, EncBlockOut: encOut.EncBlockOut, EncHidden: encOut.EncHidden, EncAttn: encOut.EncAttn,
					Mask: encOut.Mask, DecOut: decOut, DecBlockOut: blockOut, CrossAttn: crossAttn, Memo: memos[j], Incremental: true, Pos: t}
				stepEmbeds := embeds
				if !own {
					step.DecOut = gather(g, decOut, ids, B, 1, D)
					stepEmbeds = gather(g, embeds, ids, B, 1, D)
					step.DecBlockOut, step.CrossAttn = make([]*nn.Tensor, L), make([]*nn.Tensor, L)
					for l := range L {
						step.DecBlockOut[l] = gather(g, blockOut[l], ids, B, 1, D)
						step.CrossAttn[l] = gather(g, crossAttn[l], ids, B, H, 1, S)
					}
				}
				step.DecHidden = append(append([]*nn.Tensor{stepEmbeds}, step.DecBlockOut[:L-1]...), step.DecOut)
				final = h.DecoderOutput(g, step)
			} else if !own {
				final = gather(g, decOut, ids, B, 1, D)
			}
			lv := m.lmHead(g, h, final).Values()
			V := c.VocabSize
			all = m.pickNext(outs[j], dones[j], viable, func(b int) []float32 { return lv[b*V : (b+1)*V] }) && all
		}
		if all {
			break
		}
		// Regroup: rows that stay together keep sharing; a group whose
		// rows picked different tokens splits, its keys and values copied.
		// A group whose rows have all finished needs no more decoding: it
		// is dropped (its rows' group becomes −1) when the groups change
		// anyway, or when that saves a quarter of them, since dropping
		// copies the encoder's keys and values too.
		picked := make([]int32, G)
		live := make([]bool, G)
		for gi := range picked {
			picked[gi] = -1
		}
		split := false
		for j := range group {
			for b, gi := range group[j] {
				if gi < 0 {
					continue
				}
				next := outs[j][b][t+1]
				if picked[gi] < 0 {
					picked[gi] = next
				}
				split = split || picked[gi] != next
				live[gi] = live[gi] || !dones[j][b]
			}
		}
		if !split && 4*(G-countTrue(live)) < G {
			continue
		}
		next := map[[2]int32]int32{}
		var parents []int32
		for j := range group {
			for b, gi := range group[j] {
				if gi < 0 || dones[j][b] {
					group[j][b] = -1
					continue
				}
				key := [2]int32{gi, outs[j][b][t+1]}
				ng, ok := next[key]
				if !ok {
					ng = int32(len(parents))
					next[key] = ng
					parents = append(parents, gi)
				}
				group[j][b] = ng
			}
		}
		rows := make([]int32, len(parents))
		for i, p := range parents {
			rows[i] = groupRow[p]
		}
		for l := range L {
			selfK[l].gatherRows(parents, (t+1)*HK, len(parents)*maxNew*HK)
			selfV[l].gatherRows(parents, (t+1)*HK, len(parents)*maxNew*HK)
		}
		if !slices.Equal(rows, groupRow) {
			gk.Reset()
			gck, gcv = make([]*nn.Tensor, L), make([]*nn.Tensor, L)
			for l := range L {
				gck[l] = gather(gk, ck[l], rows, len(rows), S, HK)
				gcv[l] = gather(gk, cv[l], rows, len(rows), S, HK)
			}
			gmask = nil
			if encOut.Mask != nil {
				gmask = make([]bool, 0, len(rows)*S)
				for _, r := range rows {
					gmask = append(gmask, encOut.Mask[int(r)*S:(int(r)+1)*S]...)
				}
			}
		}
		groupRow = rows
	}
	return outs
}

// DecoderLayerStep runs decoder block i for target position t alone, as
// greedy decoding does: x is (G, 1, D); bias the stack's position bias
// for one query at offset t (PositionBias(…, 1, t+1, t, …)); past takes
// this position's self-attention keys and values (G, 1, H·K each) and
// returns those of positions 0..t (G, t+1, H·K), from the caller's cache;
// ck and cv are the block's cross-attention keys and values (G, S, H·K)
// under encMask. It returns the block output (after the Block hook) and
// the cross-attention probabilities. Generate runs it with the Decoder's
// caches; a method with a decoder of its own (LST's side network) with
// caches kept in the step's Memo.
func (m *Model) DecoderLayerStep(g *nn.Graph, h *Hooks, i int, x, bias *nn.Tensor, t int, past func(k, v *nn.Tensor) (K, V *nn.Tensor), ck, cv *nn.Tensor, encMask []bool) (out, cprobs *nn.Tensor) {
	blk, name, H := m.Dec[i], decoderName(i), m.Config.NumHeads
	hn := m.norm(g, h, name+"0.layer_norm", x, blk.SelfNorm)
	q := m.linear(g, h, name+"0.SelfAttention.q", hn, blk.Q)
	K, V := past(m.linear(g, h, name+"0.SelfAttention.k", hn, blk.K), m.linear(g, h, name+"0.SelfAttention.v", hn, blk.V))
	a, _ := g.Attention(q, K, V, bias, nn.AttentionOpts{Heads: H, Causal: true, QOffset: t})
	x = g.Add(x, m.sub(g, h, name+"0", m.linear(g, h, name+"0.SelfAttention.o", a, blk.O)))
	cq := m.linear(g, h, name+"1.EncDecAttention.q", m.norm(g, h, name+"1.layer_norm", x, blk.CrossNorm), blk.CQ)
	ca, cprobs := g.Attention(cq, ck, cv, nil, nn.AttentionOpts{Heads: H, KeyMask: encMask})
	x = g.Add(x, m.linear(g, h, name+"1.EncDecAttention.o", ca, blk.CO))
	x = g.Add(x, m.sub(g, h, name+"2", m.ffn(g, h, name+"2.DenseReluDense.", blk, m.norm(g, h, name+"2.layer_norm", x, blk.FFNorm))))
	return m.blockOut(g, h, "decoder", i, x), cprobs
}

func countTrue(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

func sequential(ids []int32) bool {
	for i, v := range ids {
		if int(v) != i {
			return false
		}
	}
	return true
}

// selfCache is one decoder layer's self-attention keys (or values) in
// greedy decoding: rows holds (G, t, H·K) for the t tokens so far; each step
// writes the grown (or regrouped) cache into spare and swaps the two. Both
// stay with the Decoder between calls, so that a trial's many evaluation
// batches do not each allocate, fault in and zero fresh memory at every
// step (a pack's decoding spent more on that than on copying).
type selfCache struct{ rows, spare []float32 }

// into returns spare as n floats, with room for `room` when it must grow.
func (c *selfCache) into(n, room int) []float32 {
	if cap(c.spare) < n {
		c.spare = make([]float32, max(n, room))
	}
	return c.spare[:n]
}

// appendStep grows the cache from (B, t, W) to (B, t+1, W) with one step's
// rows (B, W); room is the size that the call's last step may need.
func (c *selfCache) appendStep(step []float32, B, t, W, room int) {
	out := c.into(B*(t+1)*W, room)
	appendPosition(out, c.rows, step, B, t, W)
	c.rows, c.spare = out, c.rows
}

// appendPosition writes into out (B, t+1, W) the rows of past (B, t, W)
// each followed by its row of step (B, W).
func appendPosition(out, past, step []float32, B, t, W int) {
	for b := 0; b < B; b++ {
		copy(out[b*(t+1)*W:], past[b*t*W:(b+1)*t*W])
		copy(out[(b*(t+1)+t)*W:], step[b*W:(b+1)*W])
	}
}

// gatherRows keeps the cache's rows ids, rows of width w.
func (c *selfCache) gatherRows(ids []int32, w, room int) {
	out := c.into(len(ids)*w, room)
	for i, r := range ids {
		copy(out[i*w:(i+1)*w], c.rows[int(r)*w:(int(r)+1)*w])
	}
	c.rows, c.spare = out, c.rows
}

// Viable reports whether a row's tokens so far (after the start token) can
// still become an answer the caller accepts. Greedy decoding ends a row for
// which it returns false as if the row had produced </s>: evaluation passes
// its task's rule, under which every continuation of such a row scores the
// same, and saves decoding what cannot change a score. Nil decodes every
// row until </s> or maxNew tokens.
type Viable func(tokens []int32) bool

// startRows returns B sequences holding the decoder start token, none
// ended.
func (m *Model) startRows(B int) (out [][]int32, done []bool) {
	out, done = make([][]int32, B), make([]bool, B)
	for b := range out {
		out[b] = []int32{int32(m.Config.DecoderStartTokenID)}
	}
	return out, done
}

// pickNext appends to each row its most likely next token (the first on
// ties, as torch.argmax), or the pad id once the row has ended (produced
// </s>, or tokens viable rejects), and reports whether every row has
// ended. row(b) gives row b's logits.
func (m *Model) pickNext(out [][]int32, done []bool, viable Viable, row func(b int) []float32) bool {
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
		if !done[b] && viable != nil {
			done[b] = !viable(out[b][1:])
		}
		all = all && done[b]
	}
	return all
}

func decoderName(l int) string { return "decoder.block." + strconv.Itoa(l) + ".layer." }

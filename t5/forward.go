package t5

import (
	"fmt"

	"github.com/readsweep/readsweep/nn"
)

// Batch is one batch of token ids, row-major.
type Batch struct {
	B, S, T int
	Input   []int32 // (B, S)
	Mask    []bool  // (B, S): false on padding; nil means no padding
	// Labels are the targets (B, T), −100 where ignored. Decoder inputs
	// are the labels shifted right behind decoder_start_token_id, with
	// −100 replaced by the pad id, as Hugging Face's _shift_right does.
	Labels []int32
}

// DecoderInputs returns the labels shifted right.
func (m *Model) DecoderInputs(labels []int32, B, T int) []int32 {
	out := make([]int32, B*T)
	for b := 0; b < B; b++ {
		out[b*T] = int32(m.Config.DecoderStartTokenID)
		for t := 1; t < T; t++ {
			v := labels[b*T+t-1]
			if v == -100 {
				v = int32(m.Config.PadTokenID)
			}
			out[b*T+t] = v
		}
	}
	return out
}

// Output holds what a forward pass exposes. Hidden states follow Hugging
// Face's tuples: [0] the embeddings, [i] block i−1's output, the last one
// after the final norm. BlockOut are the raw block outputs (what READ
// caches); the attention probabilities are (B, H, Tq, Tk) per layer.
type Output struct {
	Loss   *nn.Tensor // (1); nil without labels
	Logits *nn.Tensor // (B, T, V)

	EncOut, DecOut       *nn.Tensor   // after the final norm (and dropout)
	Mask                 []bool       // the encoder's padding mask in effect (prompt tokens included)
	EncHidden, DecHidden []*nn.Tensor // Hugging Face's hidden_states
	EncBlockOut          []*nn.Tensor
	DecBlockOut          []*nn.Tensor
	EncAttn, DecAttn     []*nn.Tensor
	CrossAttn            []*nn.Tensor

	// Memo, during greedy decoding, is one map per Generate call (per
	// hook set, in GenerateShared) shared by every step's Output: a
	// DecoderOutput hook keeps there what it derives from the encoder's
	// fields alone (Once) and its own key/value caches (Grow), with values
	// copied off the step's graph, instead of recomputing them at every
	// step. Nil elsewhere.
	Memo map[string]*nn.Tensor
	// Incremental, during cached greedy decoding, says the decoder's
	// fields hold one target position, Pos, of the same rows whose
	// earlier positions the hook saw at the call's earlier steps: a hook
	// whose decoder-side work attends over earlier positions keeps their
	// keys and values in the Memo (Grow) instead of being handed the whole
	// prefix again. DecHidden then holds this position's embeddings and
	// the block outputs, as Hugging Face's hidden_states for one step.
	Incremental bool
	Pos         int
}

// Grow appends step (B, 1, W), position Pos's, to the (B, Pos, W) kept in
// the Memo under key at the call's earlier steps, keeps the result there
// and returns it (B, Pos+1, W): a hook's key/value cache for incremental
// decoding.
func (o *Output) Grow(key string, step *nn.Tensor) *nn.Tensor {
	B, W, t := step.Dim(0), step.Len()/step.Dim(0), o.Pos
	var past []float32
	if t > 0 {
		prev := o.Memo[key]
		if prev == nil || prev.Len() != B*t*W {
			var have any = "nothing"
			if prev != nil {
				have = prev.Shape
			}
			panic(fmt.Sprintf("t5: Grow(%q) at position %d: the Memo holds %v, want (%d, %d, %d)", key, t, have, B, t, W))
		}
		past = prev.Data
	}
	grown := make([]float32, B*(t+1)*W)
	appendPosition(grown, past, step.Values(), B, t, W)
	kept := &nn.Tensor{Shape: []int{B, t + 1, W}, Data: grown}
	o.Memo[key] = kept
	return kept
}

// Once returns compute's tensor, computed at the first step of a greedy
// decoding call and kept in the Memo (its values copied off the step's
// graph, which the next step resets) under key; outside decoding (no
// Memo, or a graph that records gradients) it computes every time.
func (o *Output) Once(g *nn.Graph, key string, compute func() *nn.Tensor) *nn.Tensor {
	if o.Memo == nil || !g.NoGrad {
		return compute()
	}
	if t := o.Memo[key]; t != nil {
		return t
	}
	mark := g.Mark()
	t := compute()
	kept := &nn.Tensor{Shape: append([]int(nil), t.Shape...), Data: append([]float32(nil), t.Values()...)}
	g.Keep(mark)
	o.Memo[key] = kept
	return kept
}

// Hooks let a method change the backbone's dataflow at its seams.
type Hooks struct {
	// InputEmbeds, when set, replaces the encoder's embedding output
	// (B, S, D) (prompt tuning prepends to it). It may return a longer
	// sequence together with its mask.
	InputEmbeds func(g *nn.Graph, x *nn.Tensor, mask []bool) (*nn.Tensor, []bool)
	// EncoderOutput, when set, rewrites the encoder's final output before
	// the decoder reads it (READ's variant B adds its correction here).
	// out holds the encoder's fields.
	EncoderOutput func(g *nn.Graph, out *Output) *nn.Tensor
	// DecoderOutput, when set, rewrites the decoder's final output before
	// the LM head (READ adds its correction here). In Generate it runs at
	// every step on that step's decoder fields (one target position) and
	// the encoder's.
	DecoderOutput func(g *nn.Graph, out *Output) *nn.Tensor
	// Linear, when set, computes every projection of the backbone by name
	// (LoRA adds its low-rank update here); nil means g.Linear(x, w, nil).
	// Names are the weights' without ".weight", e.g.
	// "decoder.block.0.layer.0.SelfAttention.q".
	Linear func(g *nn.Graph, name string, x, w *nn.Tensor) *nn.Tensor
	// Norm, when set, computes every RMSNorm by name (e.g.
	// "encoder.block.0.layer.1.layer_norm", "decoder.final_layer_norm");
	// BitFit adds its biases here.
	Norm func(g *nn.Graph, name string, x, w *nn.Tensor) *nn.Tensor
	// SubLayer, when set, rewrites the output of each self-attention and
	// feed-forward sub-layer before its residual add (Houlsby adapters);
	// name is the sub-layer's, e.g. "encoder.block.0.layer.1".
	SubLayer func(g *nn.Graph, name string, y *nn.Tensor) *nn.Tensor
	// Block, when set, rewrites each block's output (one adapter per
	// block); stack is "encoder" or "decoder".
	Block func(g *nn.Graph, stack string, i int, x *nn.Tensor) *nn.Tensor
	// LeanEncoder says the caller needs only the encoder's block outputs
	// and final output: when the encoder runs tape-free, each block's
	// intermediate activations are released as soon as the block is done,
	// and Output.EncAttn stays empty. READ sets it.
	LeanEncoder bool
}

// Forward runs encoder, decoder and LM head on g; with labels it also
// computes the mean cross-entropy loss. Dropout is active when g.Train is.
func (m *Model) Forward(g *nn.Graph, bt Batch, h *Hooks) (*Output, error) {
	if len(bt.Input) != bt.B*bt.S || (bt.Mask != nil && len(bt.Mask) != bt.B*bt.S) || len(bt.Labels) != bt.B*bt.T {
		return nil, fmt.Errorf("t5: batch of %d×%d inputs and %d×%d labels has %d ids, %d mask entries and %d labels",
			bt.B, bt.S, bt.B, bt.T, len(bt.Input), len(bt.Mask), len(bt.Labels))
	}
	if h == nil {
		h = &Hooks{}
	}
	out := &Output{}
	encOut, mask := m.encode(g, bt.Input, bt.Mask, bt.B, bt.S, h, out)
	dec := m.DecoderInputs(bt.Labels, bt.B, bt.T)
	m.decode(g, dec, encOut, mask, bt.B, bt.T, h, out)
	final := out.DecOut
	if h.DecoderOutput != nil {
		final = h.DecoderOutput(g, out)
	}
	out.Logits = m.lmHead(g, h, final)
	out.Loss = g.CrossEntropy(out.Logits, bt.Labels)
	return out, nil
}

// HeadLoss finishes a forward pass from states the backbone produced
// earlier for batch bt (block outputs, head-averaged cross-attention as
// (B, 1, T, S), the final decoder output): the DecoderOutput hook, the LM
// head and the loss. It adds what a lookup gives again cheaply: the
// padding mask and both stacks' embeddings (EncHidden[0], DecHidden[0];
// the deeper hidden states are the block outputs). Methods whose loss
// depends on the frozen backbone only through these states train from a
// cache with it.
func (m *Model) HeadLoss(g *nn.Graph, h *Hooks, st *Output, bt Batch) *Output {
	D := m.Config.DModel
	st.Mask = bt.Mask
	st.EncHidden = []*nn.Tensor{g.Embedding(m.Shared, bt.Input).View(bt.B, bt.S, D)}
	st.DecHidden = []*nn.Tensor{g.Embedding(m.Shared, m.DecoderInputs(bt.Labels, bt.B, bt.T)).View(bt.B, bt.T, D)}
	final := st.DecOut
	if h != nil && h.DecoderOutput != nil {
		final = h.DecoderOutput(g, st)
	}
	st.Logits = m.lmHead(g, h, final)
	st.Loss = g.CrossEntropy(st.Logits, bt.Labels)
	return st
}

func (m *Model) linear(g *nn.Graph, h *Hooks, name string, x, w *nn.Tensor) *nn.Tensor {
	if h.Linear != nil {
		return h.Linear(g, name, x, w)
	}
	return g.Linear(x, w, nil)
}

func (m *Model) norm(g *nn.Graph, h *Hooks, name string, x, w *nn.Tensor) *nn.Tensor {
	if h.Norm != nil {
		return h.Norm(g, name, x, w)
	}
	return g.RMSNorm(x, w, float32(m.Config.LayerNormEps))
}

func (m *Model) sub(g *nn.Graph, h *Hooks, name string, y *nn.Tensor) *nn.Tensor {
	if h.SubLayer != nil {
		return h.SubLayer(g, name, y)
	}
	return y
}

func (m *Model) blockOut(g *nn.Graph, h *Hooks, stack string, i int, x *nn.Tensor) *nn.Tensor {
	if h.Block != nil {
		return h.Block(g, stack, i, x)
	}
	return x
}

// lmHead projects the decoder output to the vocabulary; hooks see it as
// the projection "lm_head".
func (m *Model) lmHead(g *nn.Graph, h *Hooks, x *nn.Tensor) *nn.Tensor {
	if h == nil {
		h = &Hooks{}
	}
	if s := m.Config.OutputScale(); s != 1 {
		x = g.Scale(x, s)
	}
	return m.linear(g, h, "lm_head", x, m.LMHead)
}

// Encode runs the encoder alone and returns its final output (B, S, D)
// and the mask in effect (prompt tokens included).
func (m *Model) Encode(g *nn.Graph, ids []int32, mask []bool, B, S int, h *Hooks) (*nn.Tensor, []bool, *Output) {
	if h == nil {
		h = &Hooks{}
	}
	out := &Output{}
	enc, mk := m.encode(g, ids, mask, B, S, h, out)
	return enc, mk, out
}

func (m *Model) encode(g *nn.Graph, ids []int32, mask []bool, B, S int, h *Hooks, out *Output) (*nn.Tensor, []bool) {
	c := m.Config
	p := float32(c.DropoutRate)
	x := g.Embedding(m.Shared, ids).View(B, S, c.DModel)
	if h.InputEmbeds != nil {
		x, mask = h.InputEmbeds(g, x, mask)
		S = x.Dim(1)
	}
	x = g.Dropout(x, p)
	bias := g.PositionBias(m.EncRelBias, S, S, 0, true, c.RelMaxDistance)
	out.EncHidden = append(out.EncHidden, x)
	var xn *nn.Tensor // x normalised for the next block by the add that made it
	for i := range m.Enc {
		mark := g.Mark()
		res, y, probs := m.encoderBlock(g, h, i, x, xn, bias, mask)
		next, nextW := nextNorm("encoder", i, m.Enc, m.EncFinal)
		x, xn = m.blockEnd(g, h, "encoder", i, res, y, next, nextW)
		if h.LeanEncoder {
			g.Keep(mark, x, xn) // a no-op unless the block was tape-free; xn is nil after a Block hook
		} else {
			out.EncAttn = append(out.EncAttn, probs)
		}
		out.EncBlockOut = append(out.EncBlockOut, x)
		if i < len(m.Enc)-1 {
			out.EncHidden = append(out.EncHidden, x)
		}
	}
	if xn == nil {
		xn = m.norm(g, h, "encoder.final_layer_norm", x, m.EncFinal)
	}
	out.EncOut = g.Dropout(xn, p)
	out.EncHidden = append(out.EncHidden, out.EncOut)
	out.Mask = mask
	if h.EncoderOutput != nil {
		out.EncOut = h.EncoderOutput(g, out)
	}
	return out.EncOut, mask
}

func (m *Model) decode(g *nn.Graph, ids []int32, enc *nn.Tensor, encMask []bool, B, T int, h *Hooks, out *Output) {
	c := m.Config
	p := float32(c.DropoutRate)
	x := g.Dropout(g.Embedding(m.Shared, ids).View(B, T, c.DModel), p)
	bias := g.PositionBias(m.DecRelBias, T, T, 0, false, c.RelMaxDistance)
	out.DecHidden = append(out.DecHidden, x)
	var xn *nn.Tensor
	for i := range m.Dec {
		res, y, probs, cprobs := m.decoderBlock(g, h, i, x, xn, bias, enc, encMask)
		next, nextW := nextNorm("decoder", i, m.Dec, m.DecFinal)
		x, xn = m.blockEnd(g, h, "decoder", i, res, y, next, nextW)
		out.DecAttn = append(out.DecAttn, probs)
		out.CrossAttn = append(out.CrossAttn, cprobs)
		out.DecBlockOut = append(out.DecBlockOut, x)
		if i < len(m.Dec)-1 {
			out.DecHidden = append(out.DecHidden, x)
		}
	}
	if xn == nil {
		xn = m.norm(g, h, "decoder.final_layer_norm", x, m.DecFinal)
	}
	out.DecOut = g.Dropout(xn, p)
	out.DecHidden = append(out.DecHidden, out.DecOut)
}

// EncoderLayer runs encoder block i on x (B, S, D) with the stack's
// position bias and padding mask; it returns the block output (after the
// Block hook) and its self-attention probabilities.
func (m *Model) EncoderLayer(g *nn.Graph, h *Hooks, i int, x, bias *nn.Tensor, mask []bool) (out, probs *nn.Tensor) {
	res, y, probs := m.encoderBlock(g, h, i, x, nil, bias, mask)
	return m.blockOut(g, h, "encoder", i, g.Add(res, g.Dropout(y, float32(m.Config.DropoutRate)))), probs
}

// DecoderLayer runs decoder block i on x (B, T, D), attending to enc
// (B, S, D) under encMask; it returns the block output and its self- and
// cross-attention probabilities.
func (m *Model) DecoderLayer(g *nn.Graph, h *Hooks, i int, x, bias, enc *nn.Tensor, encMask []bool) (out, probs, cprobs *nn.Tensor) {
	res, y, probs, cprobs := m.decoderBlock(g, h, i, x, nil, bias, enc, encMask)
	return m.blockOut(g, h, "decoder", i, g.Add(res, g.Dropout(y, float32(m.Config.DropoutRate)))), probs, cprobs
}

// encoderBlock is EncoderLayer up to the block's last residual add: the
// block output is res + dropout(y) (blockEnd adds them, fused with the
// norm that reads the sum next). xn is x normalised by the block's first
// norm when the previous block's add made it, else nil.
func (m *Model) encoderBlock(g *nn.Graph, h *Hooks, i int, x, xn, bias *nn.Tensor, mask []bool) (res, y, probs *nn.Tensor) {
	c := m.Config
	p := float32(c.DropoutRate)
	blk := m.Enc[i]
	name := fmt.Sprintf("encoder.block.%d.layer.", i)
	if xn == nil {
		xn = m.norm(g, h, name+"0.layer_norm", x, blk.SelfNorm)
	}
	a, probs := m.attention(g, h, name+"0.SelfAttention.", blk.Q, blk.K, blk.V, blk.O, xn, nil, bias,
		nn.AttentionOpts{Heads: c.NumHeads, KeyMask: mask, Dropout: p})
	x, xn = m.residual(g, h, name+"1.layer_norm", x, a, m.sub(g, h, name+"0", a), blk.FFNorm)
	ff := m.ffn(g, h, name+"1.DenseReluDense.", blk, xn)
	return x, m.subOut(g, h, name+"1", ff), probs
}

// decoderBlock is DecoderLayer up to the block's last residual add, as
// encoderBlock is EncoderLayer.
func (m *Model) decoderBlock(g *nn.Graph, h *Hooks, i int, x, xn, bias, enc *nn.Tensor, encMask []bool) (res, y, probs, cprobs *nn.Tensor) {
	c := m.Config
	p := float32(c.DropoutRate)
	blk := m.Dec[i]
	name := fmt.Sprintf("decoder.block.%d.layer.", i)
	if xn == nil {
		xn = m.norm(g, h, name+"0.layer_norm", x, blk.SelfNorm)
	}
	a, probs := m.attention(g, h, name+"0.SelfAttention.", blk.Q, blk.K, blk.V, blk.O, xn, nil, bias,
		nn.AttentionOpts{Heads: c.NumHeads, Causal: true, Dropout: p})
	x, xn = m.residual(g, h, name+"1.layer_norm", x, a, m.sub(g, h, name+"0", a), blk.CrossNorm)
	ca, cprobs := m.attention(g, h, name+"1.EncDecAttention.", blk.CQ, blk.CK, blk.CV, blk.CO, xn, enc, nil,
		nn.AttentionOpts{Heads: c.NumHeads, KeyMask: encMask, Dropout: p})
	x, xn = m.residual(g, h, name+"2.layer_norm", x, ca, ca, blk.FFNorm)
	ff := m.ffn(g, h, name+"2.DenseReluDense.", blk, xn)
	return x, m.subOut(g, h, name+"2", ff), probs, cprobs
}

// residual adds sub-layer output y (out after the SubLayer hook), with
// dropout, to the stream x, fused with the norm read next (addNorm), and
// gives out, y and the dropped y back to the device: no backward reads
// them, unless a hook's did (nn.Graph.Drop keeps those).
func (m *Model) residual(g *nn.Graph, h *Hooks, name string, x, out, y, w *nn.Tensor) (sum, normed *nn.Tensor) {
	d := g.Dropout(y, float32(m.Config.DropoutRate))
	sum, normed = m.addNorm(g, h, name, x, d, w)
	g.Drop(out, y, d)
	return sum, normed
}

// subOut is a block's last sub-layer output after the SubLayer hook, for
// blockEnd; the output before the hook goes back to the device when the
// hook made another.
func (m *Model) subOut(g *nn.Graph, h *Hooks, name string, out *nn.Tensor) *nn.Tensor {
	y := m.sub(g, h, name, out)
	if y != out {
		g.Drop(out)
	}
	return y
}

// addNorm adds the sub-layer output y to the residual stream x and
// normalises the sum by w (the norm called name) for the sub-layer that
// reads it next: one op, nn.Graph.AddRMSNorm, unless the Norm hook
// rewrites that norm.
func (m *Model) addNorm(g *nn.Graph, h *Hooks, name string, x, y, w *nn.Tensor) (sum, normed *nn.Tensor) {
	if h.Norm != nil {
		sum = g.Add(x, y)
		return sum, h.Norm(g, name, sum, w)
	}
	return g.AddRMSNorm(x, y, w, float32(m.Config.LayerNormEps))
}

// nextNorm names the norm that reads block i's output of stack, and gives
// its weight: the next block's first, or the stack's final norm.
func nextNorm(stack string, i int, blocks []Block, final *nn.Tensor) (string, *nn.Tensor) {
	if i < len(blocks)-1 {
		return fmt.Sprintf("%s.block.%d.layer.0.layer_norm", stack, i+1), blocks[i+1].SelfNorm
	}
	return stack + ".final_layer_norm", final
}

// blockEnd finishes block i of stack: its output res + dropout(y) and,
// fused with the add, that output normalised by the norm read next (next,
// w), or nil when the Block hook rewrites the output first.
func (m *Model) blockEnd(g *nn.Graph, h *Hooks, stack string, i int, res, y *nn.Tensor, next string, w *nn.Tensor) (out, normed *nn.Tensor) {
	if h.Block != nil {
		d := g.Dropout(y, float32(m.Config.DropoutRate))
		out = m.blockOut(g, h, stack, i, g.Add(res, d))
		g.Drop(y, d)
		return out, nil
	}
	return m.residual(g, h, next, res, y, y, w)
}

// attention projects x (queries) and kv (keys and values; x itself when
// nil), attends, and projects back. name is the module prefix, e.g.
// "decoder.block.0.layer.1.EncDecAttention.".
func (m *Model) attention(g *nn.Graph, h *Hooks, name string, wq, wk, wv, wo, x, kv, bias *nn.Tensor, o nn.AttentionOpts) (*nn.Tensor, *nn.Tensor) {
	if kv == nil {
		kv = x
	}
	q := m.linear(g, h, name+"q", x, wq)
	k := m.linear(g, h, name+"k", kv, wk)
	v := m.linear(g, h, name+"v", kv, wv)
	a, probs := g.Attention(q, k, v, bias, o)
	return m.linear(g, h, name+"o", a, wo), probs
}

// ffn is T5's feed-forward: wo·drop(relu(wi·x)) or, gated,
// wo·drop(gelu_new(wi_0·x) ⊙ wi_1·x).
func (m *Model) ffn(g *nn.Graph, h *Hooks, name string, blk Block, x *nn.Tensor) *nn.Tensor {
	p := float32(m.Config.DropoutRate)
	var hid *nn.Tensor
	if m.Config.Gated {
		hid = g.GatedGelu(m.linear(g, h, name+"wi_0", x, blk.Wi0), m.linear(g, h, name+"wi_1", x, blk.Wi1))
	} else {
		pre := m.linear(g, h, name+"wi", x, blk.Wi)
		hid = g.ReLU(pre)
		g.Drop(pre) // ReLU's backward reads its output, not pre
	}
	out := m.linear(g, h, name+"wo", g.Dropout(hid, p), blk.Wo)
	g.Drop(hid) // read again only by a backward, if wo's product saved it
	return out
}

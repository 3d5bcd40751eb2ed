package nn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
)

// Tensor is a float32 array with a shape. Data and Grad are row-major.
type Tensor struct {
	Shape []int
	Data  []float32
	Grad  []float32 // nil: no gradient flows into this tensor

	// dev is the tensor's storage on a GPU, authoritative where present:
	// tensors of a GPU graph have no Data or Grad (Values and GradValues
	// copy them back), parameters mirrored by ToDevice keep stale ones.
	dev *devTensor
	// base is the tensor a View was made of (nil: none): a view goes to
	// the GPU as its base, sharing the base's device storage, never as a
	// copy of its own that the base's gradient would not see.
	base *Tensor
}

// Len returns the number of elements.
func (t *Tensor) Len() int {
	if t.dev != nil {
		return numel(t.Shape)
	}
	return len(t.Data)
}

// takesGrad reports whether a gradient flows into t.
func (t *Tensor) takesGrad() bool {
	return t != nil && (t.Grad != nil || (t.dev != nil && (!t.dev.grad.IsNil() || t.dev.lazyGrad)))
}

// adoptBase gives a view made before its base went to the GPU the base's
// device storage, so that every accessor of the view reads and writes
// what the base does.
func (t *Tensor) adoptBase() {
	if t.dev == nil && t.base != nil && t.base.dev != nil {
		t.dev = t.base.dev
	}
}

// Values returns t's values on the host, copying them from the GPU first
// where t lives there.
func (t *Tensor) Values() []float32 {
	t.adoptBase()
	if t.dev == nil {
		return t.Data
	}
	return t.fetch(&t.Data, t.dev.data)
}

// fetch copies device buffer b into *host, sized to t first.
func (t *Tensor) fetch(host *[]float32, b Buffer) []float32 {
	t.dev.mustLive()
	if len(*host) != t.Len() {
		*host = make([]float32, t.Len())
	}
	if err := t.dev.dev.Download(*host, b); err != nil {
		panic(fmt.Sprintf("nn: copying a tensor from the GPU: %v", err))
	}
	return *host
}

// GradValues returns t's gradient on the host (nil without one), copying
// it from the GPU first where t lives there. A GPU graph keeps an
// intermediate tensor's gradient only until the op that made it has run
// its backward; after that this returns nil. A mirrored parameter's is
// zeros between ZeroGrad and the backward that reaches it.
func (t *Tensor) GradValues() []float32 {
	t.adoptBase()
	switch {
	case t.dev == nil:
		return t.Grad
	case t.dev.grad.IsNil() && t.dev.paramGrad:
		clear(t.Grad)
		return t.Grad
	case t.dev.grad.IsNil():
		return t.Grad
	}
	return t.fetch(&t.Grad, t.dev.grad)
}

// SetValues sets t's values (on the GPU too, where t lives there).
func (t *Tensor) SetValues(v []float32) {
	t.adoptBase()
	mustLen("SetValues", "v", len(v), t.Len())
	if len(t.Data) != len(v) {
		t.Data = make([]float32, len(v))
	}
	copy(t.Data, v)
	if t.dev != nil {
		t.dev.dev.Write(t.dev.data, v)
	}
}

// OnDevice reports whether t lives on a GPU.
func (t *Tensor) OnDevice() bool {
	t.adoptBase()
	return t.dev != nil
}

// Dim returns the size of dimension i (negative counts from the end).
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.Shape)
	}
	return t.Shape[i]
}

// Rows returns the product of all but the last dimension.
func (t *Tensor) Rows() int { return t.Len() / t.Dim(-1) }

// CountShapes returns the number of values in tensors of these shapes.
func CountShapes(shapes [][]int) int {
	n := 0
	for _, s := range shapes {
		n += numel(s)
	}
	return n
}

func numel(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

// arenaSpace is the bookkeeping of a bump allocator over reusable chunks,
// in elements: the host arena (float32 slices) and the GPU arena (device
// buffers) each own their chunks' memory and share this.
type arenaSpace struct {
	sizes []int    // elements per chunk
	pos   arenaPos // next free place
	peak  int      // elements handed out at most, over all resets
}

// arenaPos is a place in an arena: a chunk, an offset in it, and the
// elements handed out up to there.
type arenaPos struct{ chunk, off, used int }

// take reserves n elements and returns their chunk and offset. grow > 0
// means the caller must append a chunk of grow elements, the returned
// chunk, first: each new chunk doubles the last (the first has first
// elements), so a graph sized by its first step stays in one or two.
func (a *arenaSpace) take(n, first int) (chunk, off, grow int) {
	at, next, ok := a.fit(a.pos, n)
	if !ok {
		grow = first
		if k := len(a.sizes); k > 0 {
			grow = 2 * a.sizes[k-1]
		}
		grow = max(grow, n)
		a.sizes = append(a.sizes, grow)
		at = arenaPos{chunk: len(a.sizes) - 1, used: a.pos.used}
		next = arenaPos{chunk: at.chunk, off: n, used: at.used + n}
	}
	a.pos = next
	a.peak = max(a.peak, a.pos.used)
	return at.chunk, at.off, grow
}

// fit returns where n elements go at p or in a later chunk, and the
// place after them; ok is false when no existing chunk holds them.
func (a *arenaSpace) fit(p arenaPos, n int) (at, next arenaPos, ok bool) {
	for p.chunk < len(a.sizes) && p.off+n > a.sizes[p.chunk] {
		p.chunk, p.off = p.chunk+1, 0
	}
	if p.chunk >= len(a.sizes) {
		return p, p, false
	}
	return p, arenaPos{chunk: p.chunk, off: p.off + n, used: p.used + n}, true
}

func (a *arenaSpace) reset() { a.pos = arenaPos{} }

// arena hands out float32 slices from reusable chunks (zeroed by alloc,
// as the last user left them by allocOut), so a training step allocates
// nothing once the first step has sized it.
type arena struct {
	arenaSpace
	chunks [][]float32
}

// arenaFirstChunk is the host arena's first chunk size.
const arenaFirstChunk = 1 << 16

func (a *arena) alloc(n int) []float32 {
	s := a.allocOut(n, false)
	clear(s)
	return s
}

// allocOut is alloc without zeroing reused memory, for op outputs, which
// their kernels overwrite whole: clearing them was a tenth of a READ
// evaluation's time. With poison (READSWEEP_POISON_OUTPUTS=1, a test
// setting) they are filled with NaN instead, so an op that reads its output
// before writing it shows in every result.
func (a *arena) allocOut(n int, poison bool) []float32 {
	c, off, grow := a.take(n, arenaFirstChunk)
	if grow > 0 {
		a.chunks = append(a.chunks, make([]float32, grow))
	}
	s := a.chunks[c][off : off+n : off+n]
	if poison {
		nan := float32(math.NaN())
		for i := range s {
			s[i] = nan
		}
	}
	return s
}

// Graph runs ops: it owns their outputs (in an arena) and, when gradients
// are wanted, the tape of backward closures.
type Graph struct {
	Backend Backend
	// Train enables dropout.
	Train bool
	// NoGrad records nothing: every output has a nil Grad.
	NoGrad bool
	poison bool // fill new outputs with NaN (see arena.allocOut)
	// Seed seeds dropout masks. Each dropout op draws a fresh stream, the
	// DropoutStreams-th: the count goes on across Reset, so a training loop
	// that resets its graph every step draws new masks every step, as
	// torch's generator does. Runs that take turns on one graph (a pack)
	// each keep their own Seed and count and set them before their step.
	Seed           uint64
	DropoutStreams uint64
	// FreeSaved makes Backward on a GPU give each activation a backward
	// reads back to the device as soon as the last backward reading it has
	// run, as PyTorch frees saved tensors (retain_graph=False): the
	// gradients of the parameters grow while the activations shrink, not
	// on top of them. Reading such a tensor after Backward panics, and so
	// does a second Backward before Reset. On the CPU it changes nothing.
	FreeSaved bool

	arena arena
	tape  []func()
	gpu   gpuGraph // the ops on a GPU; nil on the CPU
}

// gpuGraph runs a Graph's ops on a GPU (graph_cuda.go). Each method does
// the device part of the Graph method of the same name, once the Graph
// has checked the shapes and made the output.
type gpuGraph interface {
	newTensor(grad bool, shape []int) *Tensor
	reset()
	release()
	mark() devMark
	keep(m devMark, ts []*Tensor)
	drop(ts []*Tensor)
	holds(d *devTensor) bool
	peakBytes() int64
	backwardSeed(loss *Tensor)
	gradBuffer(t *Tensor) Buffer // t's gradient, allocated if need be
	linear(out, x, w, bias *Tensor, N, C, OC int)
	addLinear(out, y, x, w *Tensor, s float32, N, C, OC int)
	embedding(out, table *Tensor, ids []int32, D int)
	rmsnorm(out, x, w *Tensor, N, D int, eps float32)
	addRMSNorm(sum, out, x, y, w *Tensor, N, D int, eps float32)
	gatedGelu(out, a, b *Tensor)
	attention(out, probs, q, k, v, bias *Tensor, o AttentionOpts, s AttentionShape)
	positionBias(out, table *Tensor, buckets []int32, numBuckets, H int)
	unary(out, x *Tensor, fwd, bwd string, useOut bool)
	add(out, a, b *Tensor)
	mul(out, a, b *Tensor)
	scale(out, x *Tensor, s float32)
	dropout(out, x *Tensor, p float32)
	crossEntropy(out, logits *Tensor, targets []int32, N, V int)
	concat(out *Tensor, ts []*Tensor, N, total int)
	slice(out, x *Tensor, lo, hi, N, C int)
	gru(out, gi, gh, h *Tensor, N, R int)
	lstm(hOut, cOut, gates, cPrev *Tensor, N, R int)
	addRow(out, x, b *Tensor, N, C int)
	mulRow(out, x, b *Tensor, N, C int)
	prepend(out, p, x *Tensor, B, P, S, D int)
	batchMatmul(out, a, b *Tensor, B, M, K, N int)
	meanHeads(out, p *Tensor, B, H, TqTk int)
	gateMix(out, a, b, alpha *Tensor, temp float32)
}

// graphDevice is a backend whose graphs run on a device (the GPU).
type graphDevice interface {
	newGraphOps(g *Graph) gpuGraph
	mirror(t *Tensor)
}

// AttentionShape is one attention call's sizes.
type AttentionShape struct{ B, Tq, Tk, H, K int }

// NewGraph returns a graph on backend be; on a GPU backend its tensors
// live on the GPU.
func NewGraph(be Backend) *Graph {
	g := &Graph{Backend: be, poison: os.Getenv("READSWEEP_POISON_OUTPUTS") == "1"}
	if d, ok := be.(graphDevice); ok {
		g.gpu = d.newGraphOps(g)
	}
	return g
}

// ToDevice mirrors tensors (parameters) on be's GPU for good, values and
// gradients; other backends leave them as they are. From then on the
// device copies are authoritative: the optimiser updates them there, and
// Values, GradValues and SetValues read and write them.
func ToDevice(be Backend, ts ...*Tensor) {
	if d, ok := be.(graphDevice); ok {
		for _, t := range ts {
			d.mirror(t)
		}
	}
}

// Release frees the graph's device memory (a GPU graph's arena; nothing
// on the CPU). The graph and its tensors must not be used afterwards.
// Graphs that are dropped without it release it when collected.
func (g *Graph) Release() {
	if g.gpu != nil {
		g.gpu.release()
	}
	runtime.KeepAlive(g) // no collector cleanup while release runs
}

// Reset forgets every activation and the tape; tensors from before are
// invalid afterwards.
func (g *Graph) Reset() {
	g.arena.reset()
	g.tape = g.tape[:0]
	if g.gpu != nil {
		g.gpu.reset()
	}
}

// Mark records the graph's allocation point, for Keep.
type Mark struct {
	host arenaPos
	dev  devMark
	tape int
}

// devMark is a GPU graph's allocation point: its arena's and the number
// of tensor blocks it had made.
type devMark struct {
	arena   arenaPos
	tensors int
}

// Mark returns the current allocation point.
func (g *Graph) Mark() Mark {
	m := Mark{host: g.arena.pos, tape: len(g.tape)}
	if g.gpu != nil {
		m.dev = g.gpu.mark()
	}
	return m
}

// Keep releases everything allocated since m except the tensors ts, whose
// data it moves down to m (their headers are updated in place, so every
// reference to them stays valid). It does nothing when a backward was
// recorded since m. Tensors allocated since m other than ts must not be
// used afterwards: this is for tape-free stretches such as a frozen
// backbone block, whose output alone matters. Nil entries are skipped (a
// tensor the caller may or may not have made).
func (g *Graph) Keep(m Mark, ts ...*Tensor) {
	a := &g.arena
	if len(g.tape) != m.tape {
		return
	}
	ts = slices.DeleteFunc(slices.Clone(ts), func(t *Tensor) bool { return t == nil })
	for _, t := range ts {
		if t.takesGrad() {
			return
		}
	}
	if g.gpu != nil {
		g.gpu.keep(m.dev, ts)
		return
	}
	// Place each kept tensor at the lowest free position from m on. A
	// destination never lies after its source, so copy (a memmove) is safe.
	pos := m.host
	for _, t := range ts {
		n := t.Len()
		at, next, ok := a.fit(pos, n)
		if !ok {
			return // cannot happen: t itself lies in some chunk
		}
		dst := a.chunks[at.chunk][at.off : at.off+n : at.off+n]
		copy(dst, t.Data)
		t.Data = dst
		pos = next
	}
	a.pos = pos
}

// Drop tells the graph that the caller will not read ts again. On a GPU,
// each of them that no recorded backward reads (an output only a residual
// add or a dropout consumed, say) goes back to the device cache now, not
// at Reset: PyTorch frees such a tensor when its last reference goes, and
// a step's peak memory is made of them otherwise. Views, parameters and
// tensors of other graphs are left alone; reading a dropped tensor
// panics. On the CPU it does nothing: the arena keeps them to Reset.
func (g *Graph) Drop(ts ...*Tensor) {
	if g.gpu != nil {
		g.gpu.drop(ts)
	}
}

// PeakBytes returns the most activation memory the graph has held.
func (g *Graph) PeakBytes() int64 {
	if g.gpu != nil {
		return g.gpu.peakBytes() + int64(g.arena.peak)*4
	}
	return int64(g.arena.peak) * 4
}

// New returns a tensor from the graph's arena for an op to write whole,
// with a zeroed gradient buffer when grad is set. On the CPU its values
// are left as the arena had them; Zeros gives zeros.
func (g *Graph) New(grad bool, shape ...int) *Tensor {
	if g.gpu != nil {
		return g.gpu.newTensor(grad, shape)
	}
	n := numel(shape)
	t := &Tensor{Shape: append([]int(nil), shape...), Data: g.arena.allocOut(n, g.poison)}
	if grad {
		t.Grad = g.arena.alloc(n) // backward adds into gradients
	}
	return t
}

// Zeros returns a new tensor of zeros that takes no gradient (an initial
// recurrent state). New's values are undefined until an op writes them.
func (g *Graph) Zeros(shape ...int) *Tensor {
	if g.gpu != nil {
		t := g.gpu.newTensor(false, shape) // not cleared, as New's
		t.dev.dev.Zero(t.dev.data)
		return t
	}
	return &Tensor{Shape: append([]int(nil), shape...), Data: g.arena.alloc(numel(shape))}
}

// wants reports whether an op over inputs must record its backward.
func (g *Graph) wants(inputs ...*Tensor) bool {
	if g.NoGrad {
		return false
	}
	for _, t := range inputs {
		if t.takesGrad() {
			return true
		}
	}
	return false
}

func (g *Graph) record(backward func()) { g.tape = append(g.tape, backward) }

// Backward sets d(loss)/d(loss) = 1 and runs the tape in reverse, adding
// into every Grad reachable from loss.
func (g *Graph) Backward(loss *Tensor) {
	if g.gpu != nil {
		g.gpu.backwardSeed(loss)
		for i := len(g.tape) - 1; i >= 0; i-- {
			g.tape[i]()
		}
		return
	}
	if loss.Grad == nil {
		panic("nn: Backward: loss has no gradient (no parameter takes one, or NoGrad is set)")
	}
	loss.Grad[0] = 1
	for i := len(g.tape) - 1; i >= 0; i-- {
		g.tape[i]()
	}
}

func grad(t *Tensor) []float32 {
	if t == nil {
		return nil
	}
	return t.Grad
}

func data(t *Tensor) []float32 {
	if t == nil {
		return nil
	}
	return t.Data
}

// AddLinear returns y + s·(x·wᵀ), with x (…, C), w (OC, C) and y shaped
// like the product: LoRA's update on top of its base product. Its values
// and gradients are those of Add(y, Scale(Linear(x, w, nil), s)), rounded
// the same way; on a GPU it is one product and one kernel forward, and
// neither x·wᵀ nor its scaled copy outlives the op.
func (g *Graph) AddLinear(y, x, w *Tensor, s float32) *Tensor {
	C, OC := x.Dim(-1), w.Dim(0)
	if w.Dim(1) != C {
		panic(fmt.Sprintf("nn: AddLinear: x has %d features, w is %v", C, w.Shape))
	}
	N := x.Rows()
	mustLen("AddLinear", "y", y.Len(), N*OC)
	out := g.New(g.wants(y, x, w), y.Shape...)
	if g.gpu != nil {
		g.gpu.addLinear(out, y, x, w, s, N, C, OC)
		return out
	}
	z := g.New(false, N, OC) // x·wᵀ, then s·dout in the backward
	MatmulForward(g.Backend, z.Data, x.Data, w.Data, nil, N, C, OC)
	parallelFor(len(out.Data), elementwiseGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out.Data[i] = y.Data[i] + float32(s*z.Data[i]) // rounded, as Scale rounds it
		}
	})
	if out.Grad != nil {
		g.record(func() {
			parallelFor(len(out.Grad), elementwiseGrain, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					if y.Grad != nil {
						y.Grad[i] += out.Grad[i]
					}
					z.Data[i] = s * out.Grad[i]
				}
			})
			if x.Grad != nil || w.Grad != nil {
				MatmulBackward(g.Backend, x.Grad, w.Grad, nil, z.Data, x.Data, w.Data, N, C, OC)
			}
		})
	}
	return out
}

// Linear returns x·wᵀ (+ bias) over the last dimension of x.
// x: (..., C); w: (OC, C); bias: (OC) or nil.
func (g *Graph) Linear(x, w, bias *Tensor) *Tensor {
	C, OC := x.Dim(-1), w.Dim(0)
	if w.Dim(1) != C {
		panic(fmt.Sprintf("nn: Linear: x has %d features, w is %v", C, w.Shape))
	}
	N := x.Rows()
	shape := append(append([]int(nil), x.Shape[:len(x.Shape)-1]...), OC)
	out := g.New(g.wants(x, w, bias), shape...)
	if g.gpu != nil {
		g.gpu.linear(out, x, w, bias, N, C, OC)
		return out
	}
	MatmulForward(g.Backend, out.Data, x.Data, w.Data, data(bias), N, C, OC)
	if out.Grad != nil {
		g.record(func() { MatmulBackward(g.Backend, x.Grad, w.Grad, grad(bias), out.Grad, x.Data, w.Data, N, C, OC) })
	}
	return out
}

// Embedding gathers rows of table (V, D) at ids; the result is (len(ids), D).
func (g *Graph) Embedding(table *Tensor, ids []int32) *Tensor {
	D := table.Dim(1)
	out := g.New(g.wants(table), len(ids), D)
	if g.gpu != nil {
		g.gpu.embedding(out, table, ids, D)
		return out
	}
	EmbeddingForward(out.Data, table.Data, ids, D)
	if out.Grad != nil {
		g.record(func() { EmbeddingBackward(table.Grad, out.Grad, ids, D) })
	}
	return out
}

// RMSNorm normalises the last dimension of x and scales it by w.
func (g *Graph) RMSNorm(x, w *Tensor, eps float32) *Tensor {
	D := x.Dim(-1)
	N := x.Rows()
	out := g.New(g.wants(x, w), x.Shape...)
	if g.gpu != nil {
		g.gpu.rmsnorm(out, x, w, N, D, eps)
		return out
	}
	rstd := g.arena.alloc(N)
	RMSNormForward(out.Data, rstd, x.Data, w.Data, N, D, eps)
	if out.Grad != nil {
		g.record(func() { RMSNormBackward(x.Grad, grad(w), out.Grad, x.Data, w.Data, rstd, N, D) })
	}
	return out
}

// AddRMSNorm returns sum = x + y and RMSNorm(sum, w): a residual add and
// the norm that reads the stream next, as T5 does after every sub-layer.
// Its values and gradients are Add's and RMSNorm's; on a GPU it is one
// kernel each way instead of four (add, norm; norm, two accumulations).
func (g *Graph) AddRMSNorm(x, y, w *Tensor, eps float32) (sum, normed *Tensor) {
	if g.gpu == nil {
		sum = g.Add(x, y)
		return sum, g.RMSNorm(sum, w, eps)
	}
	mustLen("AddRMSNorm", "y", y.Len(), x.Len())
	D := x.Dim(-1)
	mustLen("AddRMSNorm", "w", w.Len(), D)
	wants := g.wants(x, y, w)
	sum, normed = g.New(wants, x.Shape...), g.New(wants, x.Shape...)
	g.gpu.addRMSNorm(sum, normed, x, y, w, x.Rows(), D, eps)
	return sum, normed
}

// NormLinear returns Linear(RMSNorm(x, nw), w, bias): x (..., C), nw (C),
// w (OC, C), bias (OC) or nil. Its values are those of the two ops in
// turn. Its backward differs where x takes no gradient (READ's encoder
// side reads the frozen backbone's states): the normalised input's
// gradient, a product as large as the forward one, would serve only the
// norm weight's, and both weight gradients follow from one product instead,
// M = doutᵀ·x̂ (OC, C) with x̂ = x·rstd: dw = M·diag(nw) and dnw_c =
// Σ_o w[o,c]·M[o,c].
func (g *Graph) NormLinear(x, nw, w, bias *Tensor, eps float32) *Tensor {
	if g.gpu != nil || x.takesGrad() || !nw.takesGrad() || !w.takesGrad() {
		return g.Linear(g.RMSNorm(x, nw, eps), w, bias)
	}
	C, OC := x.Dim(-1), w.Dim(0)
	if w.Dim(1) != C || nw.Len() != C {
		panic(fmt.Sprintf("nn: NormLinear: x has %d features, norm weight %v, w %v", C, nw.Shape, w.Shape))
	}
	N := x.Rows()
	shape := append(append([]int(nil), x.Shape[:len(x.Shape)-1]...), OC)
	out := g.New(g.wants(w, nw, bias), shape...)
	in, rstd := g.arena.alloc(N*C), g.arena.alloc(N)
	RMSNormForward(in, rstd, x.Data, nw.Data, N, C, eps)
	MatmulForward(g.Backend, out.Data, in, w.Data, data(bias), N, C, OC)
	if out.Grad != nil {
		xhat, m := in, g.arena.alloc(OC*C) // in is not needed after the forward product
		g.record(func() {
			NormLinearBackward(g.Backend, w.Grad, nw.Grad, grad(bias), out.Grad, x.Data, rstd, w.Data, nw.Data, xhat, m, N, C, OC)
		})
	}
	return out
}

// AttentionOpts describe one attention call's masking.
type AttentionOpts struct {
	Heads   int
	KeyMask []bool  // (B, Tk): false marks padding; nil: no padding
	Causal  bool    // decoder self-attention
	QOffset int     // position of the first query (incremental decoding)
	Dropout float32 // on the probabilities, in training graphs
}

// Attention returns T5 attention's head outputs (B, Tq, H·K) and the
// probabilities (B, H, Tq, Tk); bias (H, Tq, Tk) may be nil.
// q: (B, Tq, H·K); k, v: (B, Tk, H·K).
func (g *Graph) Attention(q, k, v, bias *Tensor, o AttentionOpts) (out, probs *Tensor) {
	B, Tq, HK := q.Dim(0), q.Dim(1), q.Dim(2)
	Tk := k.Dim(1)
	H := o.Heads
	K := HK / H
	want := g.wants(q, k, v, bias)
	out = g.New(want, B, Tq, HK)
	probs = g.New(false, B, H, Tq, Tk)
	if g.gpu != nil {
		if o.KeyMask != nil {
			mustLen("Attention", "KeyMask", len(o.KeyMask), B*Tk)
		}
		g.gpu.attention(out, probs, q, k, v, bias, o, AttentionShape{B: B, Tq: Tq, Tk: Tk, H: H, K: K})
		return out, probs
	}
	var drop []float32
	if g.Train && o.Dropout > 0 {
		drop = g.dropoutMask(B*H*Tq*Tk, o.Dropout)
	}
	// Working memory for each goroutine the kernels may cut the heads into.
	parts := runtime.GOMAXPROCS(0)
	var scratch []float32
	if drop != nil {
		scratch = g.arena.alloc(parts * Tq * Tk)
	}
	AttentionForward(g.Backend, out.Data, probs.Data, drop, scratch, q.Data, k.Data, v.Data, data(bias), o.KeyMask, o.Causal, o.QOffset, B, Tq, Tk, H, K)
	if want {
		g.record(func() {
			scratch := g.arena.alloc(parts * 2 * Tq * Tk)
			AttentionBackward(g.Backend, q.Grad, k.Grad, v.Grad, grad(bias), scratch, out.Grad, probs.Data, drop, q.Data, k.Data, v.Data, B, Tq, Tk, H, K)
		})
	}
	return out, probs
}

// PositionBias returns T5's relative position bias (H, Tq, Tk) from table
// (numBuckets, H) for queries at qOffset.. and keys at 0..Tk−1.
func (g *Graph) PositionBias(table *Tensor, Tq, Tk, qOffset int, bidirectional bool, maxDistance int) *Tensor {
	numBuckets, H := table.Dim(0), table.Dim(1)
	buckets := make([]int32, Tq*Tk)
	for i := 0; i < Tq; i++ {
		for j := 0; j < Tk; j++ {
			buckets[i*Tk+j] = int32(RelativeBucket(j-(qOffset+i), bidirectional, numBuckets, maxDistance))
		}
	}
	out := g.New(g.wants(table), H, Tq, Tk)
	if g.gpu != nil {
		g.gpu.positionBias(out, table, buckets, numBuckets, H)
		return out
	}
	PositionBiasForward(out.Data, table.Data, buckets, H, Tq, Tk)
	if out.Grad != nil {
		g.record(func() { PositionBiasBackward(table.Grad, out.Grad, buckets, H, Tq, Tk) })
	}
	return out
}

// unary runs an elementwise op whose backward needs x (useOut false) or
// the output (useOut true).
func (g *Graph) unary(x *Tensor, fwd func(out, x []float32), bwd func(dx, dout, saved []float32), useOut bool, kernel string) *Tensor {
	out := g.New(g.wants(x), x.Shape...)
	if g.gpu != nil {
		g.gpu.unary(out, x, kernel+"_forward", kernel+"_backward", useOut)
		return out
	}
	fwd(out.Data, x.Data)
	if out.Grad != nil {
		saved := x.Data
		if useOut {
			saved = out.Data
		}
		g.record(func() { bwd(x.Grad, out.Grad, saved) })
	}
	return out
}

// ReLU returns max(x, 0).
//
// Its backward reads the output (x > 0 exactly where max(x, 0) > 0, NaN
// included), as PyTorch's does, so that x can go back to a GPU once the
// caller is done with it (Graph.Drop): in T5's feed-forward x is as large
// as the hidden state, the largest activation of a block.
func (g *Graph) ReLU(x *Tensor) *Tensor { return g.unary(x, ReLUForward, ReLUBackward, true, "relu") }

// GeluNew returns the tanh approximation of GELU.
func (g *Graph) GeluNew(x *Tensor) *Tensor {
	return g.unary(x, GeluNewForward, GeluNewBackward, false, "gelu")
}

// Sigmoid returns 1/(1+e^−x).
func (g *Graph) Sigmoid(x *Tensor) *Tensor {
	return g.unary(x, SigmoidForward, SigmoidBackward, true, "sigmoid")
}

// Tanh returns tanh(x).
func (g *Graph) Tanh(x *Tensor) *Tensor { return g.unary(x, TanhForward, TanhBackward, true, "tanh") }

// GatedGelu returns gelu_new(a) ⊙ b, T5 v1.1's gated feed-forward. Its
// values and gradients are GeluNew's then Mul's; on a GPU it is one kernel
// each way, and gelu_new(a), as large as the FFN's hidden state, is never
// stored.
func (g *Graph) GatedGelu(a, b *Tensor) *Tensor {
	if g.gpu == nil {
		return g.Mul(g.GeluNew(a), b)
	}
	mustLen("GatedGelu", "b", b.Len(), a.Len())
	out := g.New(g.wants(a, b), a.Shape...)
	g.gpu.gatedGelu(out, a, b)
	return out
}

// Add returns a + b (same shapes).
func (g *Graph) Add(a, b *Tensor) *Tensor {
	mustLen("Add", "b", b.Len(), a.Len())
	out := g.New(g.wants(a, b), a.Shape...)
	if g.gpu != nil {
		g.gpu.add(out, a, b)
		return out
	}
	parallelFor(len(out.Data), elementwiseGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out.Data[i] = a.Data[i] + b.Data[i]
		}
	})
	if out.Grad != nil {
		g.record(func() {
			parallelFor(len(out.Grad), elementwiseGrain, func(lo, hi int) {
				for _, t := range []*Tensor{a, b} {
					if t.Grad != nil {
						for i := lo; i < hi; i++ {
							t.Grad[i] += out.Grad[i]
						}
					}
				}
			})
		})
	}
	return out
}

// Mul returns the elementwise product a ⊙ b (same shapes).
func (g *Graph) Mul(a, b *Tensor) *Tensor {
	mustLen("Mul", "b", b.Len(), a.Len())
	out := g.New(g.wants(a, b), a.Shape...)
	if g.gpu != nil {
		g.gpu.mul(out, a, b)
		return out
	}
	for i := range out.Data {
		out.Data[i] = a.Data[i] * b.Data[i]
	}
	if out.Grad != nil {
		g.record(func() {
			if a.Grad != nil {
				for i, d := range out.Grad {
					a.Grad[i] += d * b.Data[i]
				}
			}
			if b.Grad != nil {
				for i, d := range out.Grad {
					b.Grad[i] += d * a.Data[i]
				}
			}
		})
	}
	return out
}

// Scale returns s·x.
func (g *Graph) Scale(x *Tensor, s float32) *Tensor {
	out := g.New(g.wants(x), x.Shape...)
	if g.gpu != nil {
		g.gpu.scale(out, x, s)
		return out
	}
	parallelFor(len(out.Data), elementwiseGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out.Data[i] = s * x.Data[i]
		}
	})
	if out.Grad != nil {
		g.record(func() {
			parallelFor(len(out.Grad), elementwiseGrain, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					x.Grad[i] += s * out.Grad[i]
				}
			})
		})
	}
	return out
}

// Dropout zeroes each element with probability p and scales the rest by
// 1/(1−p) (inverted dropout). It is the identity unless g.Train is set.
func (g *Graph) Dropout(x *Tensor, p float32) *Tensor {
	if !g.Train || p == 0 {
		return x
	}
	if g.gpu != nil {
		out := g.New(g.wants(x), x.Shape...)
		g.gpu.dropout(out, x, p)
		return out
	}
	mask := g.dropoutMask(x.Len(), p)
	out := g.New(g.wants(x), x.Shape...)
	for i, v := range x.Data {
		out.Data[i] = v * mask[i]
	}
	if out.Grad != nil {
		g.record(func() {
			for i, d := range out.Grad {
				x.Grad[i] += d * mask[i]
			}
		})
	}
	return out
}

// dropoutMask returns n scales, each 0 with probability p and 1/(1−p)
// otherwise, from a stream keyed by the graph's seed and the op's index.
func (g *Graph) dropoutMask(n int, p float32) []float32 {
	g.DropoutStreams++
	rng := rand.New(rand.NewPCG(g.Seed, g.DropoutStreams))
	scale := 1 / (1 - p)
	mask := g.arena.alloc(n)
	for i := range mask {
		if rng.Float32() >= p {
			mask[i] = scale
		}
	}
	return mask
}

// View returns a tensor of another shape over the same data and gradient.
func (t *Tensor) View(shape ...int) *Tensor {
	if numel(shape) != t.Len() {
		panic(fmt.Sprintf("nn: View: %v has %d elements, %v has %d", t.Shape, t.Len(), shape, numel(shape)))
	}
	base := t
	if t.base != nil {
		base = t.base
	}
	return &Tensor{Shape: append([]int(nil), shape...), Data: t.Data, Grad: t.Grad, dev: t.dev, base: base}
}

// CrossEntropy returns the mean of −log softmax(logits)[target] over rows
// whose target is not −100, as a 1-element tensor. logits: (..., V);
// targets: one per row.
func (g *Graph) CrossEntropy(logits *Tensor, targets []int32) *Tensor {
	V := logits.Dim(-1)
	N := logits.Rows()
	mustLen("CrossEntropy", "targets", len(targets), N)
	if g.gpu != nil {
		for _, t := range targets {
			if t != -100 && (t < 0 || int(t) >= V) {
				panic("nn: CrossEntropyForward: target out of range")
			}
		}
		out := g.New(g.wants(logits), 1)
		g.gpu.crossEntropy(out, logits, targets, N, V)
		return out
	}
	probs := g.arena.alloc(N * V)
	loss, count := CrossEntropyForward(probs, logits.Data, targets, N, V, -100)
	out := g.New(g.wants(logits), 1)
	out.Data[0] = float32(loss)
	if out.Grad != nil {
		g.record(func() { CrossEntropyBackward(logits.Grad, probs, targets, N, V, -100, out.Grad[0], count) })
	}
	return out
}

// Concat joins tensors along their last dimension; the others must agree.
func (g *Graph) Concat(ts ...*Tensor) *Tensor {
	N := ts[0].Rows()
	total := 0
	for _, t := range ts {
		mustLen("Concat", "rows", t.Rows(), N)
		total += t.Dim(-1)
	}
	shape := append(append([]int(nil), ts[0].Shape[:len(ts[0].Shape)-1]...), total)
	out := g.New(g.wants(ts...), shape...)
	if g.gpu != nil {
		g.gpu.concat(out, ts, N, total)
		return out
	}
	off := 0
	for _, t := range ts {
		C := t.Dim(-1)
		for n := 0; n < N; n++ {
			copy(out.Data[n*total+off:n*total+off+C], t.Data[n*C:(n+1)*C])
		}
		off += C
	}
	if out.Grad != nil {
		g.record(func() {
			off := 0
			for _, t := range ts {
				C := t.Dim(-1)
				if t.Grad != nil {
					for n := 0; n < N; n++ {
						src := out.Grad[n*total+off : n*total+off+C]
						dst := t.Grad[n*C : (n+1)*C]
						for i := range dst {
							dst[i] += src[i]
						}
					}
				}
				off += C
			}
		})
	}
	return out
}

// Slice returns columns [lo, hi) of the last dimension.
func (g *Graph) Slice(x *Tensor, lo, hi int) *Tensor {
	C, N := x.Dim(-1), x.Rows()
	W := hi - lo
	shape := append(append([]int(nil), x.Shape[:len(x.Shape)-1]...), W)
	out := g.New(g.wants(x), shape...)
	if g.gpu != nil {
		g.gpu.slice(out, x, lo, hi, N, C)
		return out
	}
	for n := 0; n < N; n++ {
		copy(out.Data[n*W:(n+1)*W], x.Data[n*C+lo:n*C+hi])
	}
	if out.Grad != nil {
		g.record(func() {
			for n := 0; n < N; n++ {
				dst, src := x.Grad[n*C+lo:n*C+hi], out.Grad[n*W:(n+1)*W]
				for i := range dst {
					dst[i] += src[i]
				}
			}
		})
	}
	return out
}

// GRUCell returns the next state of a PyTorch GRUCell: x (N, I), h (N, R),
// wih (3R, I), whh (3R, R), biases (3R) or nil.
func (g *Graph) GRUCell(x, h, wih, whh, bih, bhh *Tensor) *Tensor {
	return g.GRUGates(g.Linear(x, wih, bih), g.Linear(h, whh, bhh), h)
}

// GRUGates is GRUCell from its projections gi = x·wihᵀ + bih and gh =
// h·whhᵀ + bhh (N, 3R), computed by the caller (NormLinear for gi; bhh
// alone for gh where h is zero).
func (g *Graph) GRUGates(gi, gh, h *Tensor) *Tensor {
	N, R := h.Dim(0), h.Dim(1)
	out := g.New(g.wants(gi, gh, h), N, R)
	if g.gpu != nil {
		g.gpu.gru(out, gi, gh, h, N, R)
		return out
	}
	gates := g.arena.alloc(N * 3 * R)
	GRUGateForward(out.Data, gates, gi.Data, gh.Data, h.Data, N, R)
	if out.Grad != nil {
		g.record(func() { GRUGateBackward(gi.Grad, gh.Grad, h.Grad, out.Grad, gates, gh.Data, h.Data, N, R) })
	}
	return out
}

// LSTMCell returns the next (h, c) of a PyTorch LSTMCell: x (N, I),
// h, c (N, R), wih (4R, I), whh (4R, R), biases (4R) or nil.
func (g *Graph) LSTMCell(x, h, c, wih, whh, bih, bhh *Tensor) (hOut, cOut *Tensor) {
	return g.LSTMGates(g.Linear(x, wih, bih), g.Linear(h, whh, bhh), c)
}

// LSTMGates is LSTMCell from its projections gi = x·wihᵀ + bih and gh =
// h·whhᵀ + bhh (N, 4R).
func (g *Graph) LSTMGates(gi, gh, c *Tensor) (hOut, cOut *Tensor) {
	N, R := c.Dim(0), c.Dim(1)
	gates := g.Add(gi, gh)
	want := g.wants(gates, c)
	hOut, cOut = g.New(want, N, R), g.New(want, N, R)
	if g.gpu != nil {
		g.gpu.lstm(hOut, cOut, gates, c, N, R)
		return hOut, cOut
	}
	acts, tc := g.arena.alloc(N*4*R), g.arena.alloc(N*R)
	LSTMGateForward(hOut.Data, cOut.Data, acts, tc, gates.Data, c.Data, N, R)
	if want {
		g.record(func() { LSTMGateBackward(gates.Grad, c.Grad, hOut.Grad, cOut.Grad, acts, tc, c.Data, N, R) })
	}
	return hOut, cOut
}

// RNNCell returns tanh(x·wihᵀ + bih + h·whhᵀ + bhh), PyTorch's RNNCell.
func (g *Graph) RNNCell(x, h, wih, whh, bih, bhh *Tensor) *Tensor {
	return g.RNNGates(g.Linear(x, wih, bih), g.Linear(h, whh, bhh))
}

// RNNGates is RNNCell from its projections gi = x·wihᵀ + bih and gh =
// h·whhᵀ + bhh (N, R).
func (g *Graph) RNNGates(gi, gh *Tensor) *Tensor {
	return g.Tanh(g.Add(gi, gh))
}

// AddRow adds b (C) to every row of x (..., C): a bias.
func (g *Graph) AddRow(x, b *Tensor) *Tensor {
	C := x.Dim(-1)
	mustLen("AddRow", "b", b.Len(), C)
	out := g.New(g.wants(x, b), x.Shape...)
	N := x.Rows()
	if g.gpu != nil {
		g.gpu.addRow(out, x, b, N, C)
		return out
	}
	for n := 0; n < N; n++ {
		o, r := out.Data[n*C:(n+1)*C], x.Data[n*C:(n+1)*C]
		for i := range o {
			o[i] = r[i] + b.Data[i]
		}
	}
	if out.Grad != nil {
		g.record(func() {
			for n := 0; n < N; n++ {
				d := out.Grad[n*C : (n+1)*C]
				if x.Grad != nil {
					xg := x.Grad[n*C : (n+1)*C]
					for i := range d {
						xg[i] += d[i]
					}
				}
				if b.Grad != nil {
					for i := range d {
						b.Grad[i] += d[i]
					}
				}
			}
		})
	}
	return out
}

// MulRow multiplies every row of x (..., C) by b (C), elementwise: a
// learned rescaling of each feature (IA³). b's gradient sums over the
// rows in float64.
func (g *Graph) MulRow(x, b *Tensor) *Tensor {
	C := x.Dim(-1)
	mustLen("MulRow", "b", b.Len(), C)
	out := g.New(g.wants(x, b), x.Shape...)
	N := x.Rows()
	if g.gpu != nil {
		g.gpu.mulRow(out, x, b, N, C)
		return out
	}
	parallelFor(N, max(1, (1<<14)/max(C, 1)), func(lo, hi int) {
		for n := lo; n < hi; n++ {
			o, r := out.Data[n*C:(n+1)*C], x.Data[n*C:(n+1)*C]
			for i := range o {
				o[i] = r[i] * b.Data[i]
			}
		}
	})
	if out.Grad != nil {
		g.record(func() {
			if x.Grad != nil {
				parallelFor(N, max(1, (1<<14)/max(C, 1)), func(lo, hi int) {
					for n := lo; n < hi; n++ {
						d, xg := out.Grad[n*C:(n+1)*C], x.Grad[n*C:(n+1)*C]
						for i := range d {
							xg[i] += d[i] * b.Data[i]
						}
					}
				})
			}
			if b.Grad != nil {
				// By columns, each summed over every row in order: the
				// same result on any number of goroutines.
				parallelFor(C, 64, func(lo, hi int) {
					for i := lo; i < hi; i++ {
						var s float64
						for n := 0; n < N; n++ {
							s += float64(out.Grad[n*C+i]) * float64(x.Data[n*C+i])
						}
						b.Grad[i] += float32(s)
					}
				})
			}
		})
	}
	return out
}

// Prepend puts the rows of p (P, D) in front of every sequence of x
// (B, S, D), giving (B, P+S, D); p's gradient sums over the batch.
func (g *Graph) Prepend(p, x *Tensor) *Tensor {
	B, S, D := x.Dim(0), x.Dim(1), x.Dim(2)
	P := p.Dim(0)
	mustLen("Prepend", "p", p.Len(), P*D)
	out := g.New(g.wants(p, x), B, P+S, D)
	if g.gpu != nil {
		g.gpu.prepend(out, p, x, B, P, S, D)
		return out
	}
	for b := 0; b < B; b++ {
		copy(out.Data[b*(P+S)*D:], p.Data)
		copy(out.Data[(b*(P+S)+P)*D:(b+1)*(P+S)*D], x.Data[b*S*D:(b+1)*S*D])
	}
	if out.Grad != nil {
		g.record(func() {
			for b := 0; b < B; b++ {
				og := out.Grad[b*(P+S)*D : (b+1)*(P+S)*D]
				if p.Grad != nil {
					for i := range p.Grad {
						p.Grad[i] += og[i]
					}
				}
				if x.Grad != nil {
					xg := x.Grad[b*S*D : (b+1)*S*D]
					for i := range xg {
						xg[i] += og[P*D+i]
					}
				}
			}
		})
	}
	return out
}

// BatchMatmul returns a·b per batch: a (B, M, K), b (B, K, N) → (B, M, N).
func (g *Graph) BatchMatmul(a, b *Tensor) *Tensor {
	B, M, K := a.Dim(0), a.Dim(1), a.Dim(2)
	N := b.Dim(2)
	if b.Dim(0) != B || b.Dim(1) != K {
		panic(fmt.Sprintf("nn: BatchMatmul: %v · %v", a.Shape, b.Shape))
	}
	out := g.New(g.wants(a, b), B, M, N)
	if g.gpu != nil {
		g.gpu.batchMatmul(out, a, b, B, M, K, N)
		return out
	}
	for i := 0; i < B; i++ {
		g.Backend.Sgemm(false, false, M, N, K, 1, a.Data[i*M*K:], K, b.Data[i*K*N:], N, 0, out.Data[i*M*N:], N)
	}
	if out.Grad != nil {
		g.record(func() {
			for i := 0; i < B; i++ {
				d := out.Grad[i*M*N:]
				if a.Grad != nil {
					g.Backend.Sgemm(false, true, M, K, N, 1, d, N, b.Data[i*K*N:], N, 1, a.Grad[i*M*K:], K)
				}
				if b.Grad != nil {
					g.Backend.Sgemm(true, false, K, N, M, 1, a.Data[i*M*K:], K, d, N, 1, b.Grad[i*K*N:], N)
				}
			}
		})
	}
	return out
}

// MeanHeads averages attention probabilities (B, H, Tq, Tk) over heads,
// giving (B, Tq, Tk) without a gradient (probabilities never take one).
func (g *Graph) MeanHeads(p *Tensor) *Tensor {
	B, H, Tq, Tk := p.Dim(0), p.Dim(1), p.Dim(2), p.Dim(3)
	out := g.New(false, B, Tq, Tk)
	if g.gpu != nil {
		g.gpu.meanHeads(out, p, B, H, Tq*Tk)
		return out
	}
	inv := 1 / float32(H)
	for b := 0; b < B; b++ {
		dst := out.Data[b*Tq*Tk : (b+1)*Tq*Tk]
		clear(dst)
		for h := 0; h < H; h++ {
			src := p.Data[(b*H+h)*Tq*Tk : (b*H+h+1)*Tq*Tk]
			for i := range dst {
				dst[i] += src[i] * inv
			}
		}
	}
	return out
}

// GateMix returns σ(alpha/temp)·a + (1 − σ(alpha/temp))·b, a learned
// scalar gate (alpha has one element) between two tensors of one shape:
// LST's ladder.
func (g *Graph) GateMix(a, b, alpha *Tensor, temp float32) *Tensor {
	mustLen("GateMix", "b", b.Len(), a.Len())
	mustLen("GateMix", "alpha", alpha.Len(), 1)
	if g.gpu != nil {
		out := g.New(g.wants(a, b, alpha), a.Shape...)
		g.gpu.gateMix(out, a, b, alpha, temp)
		return out
	}
	gate := sigmoid(alpha.Data[0] / temp)
	out := g.New(g.wants(a, b, alpha), a.Shape...)
	for i := range out.Data {
		out.Data[i] = gate*a.Data[i] + (1-gate)*b.Data[i]
	}
	if out.Grad != nil {
		g.record(func() {
			var dg float64
			for i, d := range out.Grad {
				if a.Grad != nil {
					a.Grad[i] += gate * d
				}
				if b.Grad != nil {
					b.Grad[i] += (1 - gate) * d
				}
				dg += float64(d) * float64(a.Data[i]-b.Data[i])
			}
			if alpha.Grad != nil {
				alpha.Grad[0] += float32(dg) * gate * (1 - gate) / temp
			}
		})
	}
	return out
}

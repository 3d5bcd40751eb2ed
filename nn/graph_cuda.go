//go:build cgo && linux

package nn

import (
	"cmp"
	"math"
	"runtime"
	"slices"
	"unsafe"
)

// cudaGraph runs a Graph's ops on the GPU: tensors the graph makes each
// have a block from the device cache (given back at reset, or earlier:
// Drop, FreeSaved), ops' bookkeeping lives in a device arena reset with
// the graph, parameters are mirrored once
// (ToDevice, or on first use for tensors that take a gradient), and other
// host tensors an op reads are uploaded into the arena for this graph's
// lifetime. Each op mirrors its CPU path in graph.go; backward closures go
// on the same tape.
type cudaGraph struct {
	g       *Graph
	c       *CUDA
	arena   *devArena
	uploads map[*Tensor]Buffer
	lazy    []*devTensor // tensors whose gradient gr allocated
	// lastReader lists, by tape index, the tensors whose values no
	// backward before that one on the tape reads (the first op to save
	// them): Backward runs the tape in reverse, so after that entry's
	// backward nothing reads them again (FreeSaved).
	lastReader map[int][]*devTensor
	cleanup    runtime.Cleanup
}

func (c *CUDA) newGraphOps(g *Graph) gpuGraph {
	cg := &cudaGraph{g: g, c: c, arena: &devArena{c: c, poison: g.poison}, uploads: map[*Tensor]Buffer{}, lastReader: map[int][]*devTensor{}}
	// A graph dropped without Release gives its arena back when collected.
	cg.cleanup = runtime.AddCleanup(g, func(a *devArena) { a.free() }, cg.arena)
	return cg
}

// release frees the arena now; the collector's cleanup is cancelled first,
// or both would free the same chunks. (Graph.Release keeps the graph
// reachable until this returns, so the cleanup cannot be under way.)
func (cg *cudaGraph) release() {
	cg.cleanup.Stop()
	cg.dropGrads()
	cg.arena.free()
}

// devArena hands out zeroed device memory from chunks that survive Reset,
// as arena does on the host, for an op's own bookkeeping (norm scales,
// masks, ids). The tensors a graph makes each get a block of their own
// from the device cache instead, listed here, so that Drop can give one
// back before the step ends.
type devArena struct {
	arenaSpace
	c       *CUDA
	poison  bool // fill new blocks with NaN (see fresh)
	chunks  []Buffer
	tensors []Buffer // by slot; nil once dropped
	// ids name the tensor in each slot (every tensor gets a new one), so
	// that a tensor whose slot Reset or Keep gave to another is known.
	ids    []uint64
	nextID uint64
	// live and peakLive count the tensors' elements.
	live, peakLive int
	masks          map[maskKey]Buffer // keyMask's uploads, from the device cache
}

// devAlign rounds arena blocks to 64 elements: 256-byte alignment, as
// cuBLAS and vector loads like.
func devAlign(n int) int { return (n + 63) &^ 63 }

// alloc returns a block of n elements that the caller's kernel or upload
// overwrites whole: it is not cleared (see fresh).
func (a *devArena) alloc(n int) Buffer {
	c, off, grow := a.take(devAlign(n), 1<<20)
	if grow > 0 {
		a.chunks = append(a.chunks, a.c.Alloc(grow))
	}
	b := Buffer{ptr: a.chunks[c].ptr + uint64(off)*4, n: n}
	a.fresh(b)
	return b
}

// fresh leaves a new block as the allocator gave it, as the CPU graph's
// allocOut does: every op writes its outputs whole, and clearing them took a
// memset per op, the most numerous device call of a step. With poison
// (READSWEEP_POISON_OUTPUTS=1) it fills them with NaN, so that an op reading
// its output before writing it fails its checks.
func (a *devArena) fresh(b Buffer) {
	if a.poison {
		a.c.Fill(b, float32(math.NaN()))
	}
}

// tensor returns a block of n elements for a graph tensor (not cleared:
// see fresh), its slot and its id.
func (a *devArena) tensor(n int) (b Buffer, slot int, id uint64) {
	b = a.c.Alloc(n)
	a.fresh(b)
	a.nextID++
	a.tensors, a.ids = append(a.tensors, b), append(a.ids, a.nextID)
	a.live += n
	a.peakLive = max(a.peakLive, a.live)
	return b, len(a.tensors), a.nextID
}

// holds reports whether d's block is still d's: not dropped, and its slot
// not given to another tensor by Reset or Keep.
func (a *devArena) holds(d *devTensor) bool {
	return !d.dropped && d.slot > 0 && d.slot <= len(a.tensors) && a.ids[d.slot-1] == d.id && !a.tensors[d.slot-1].IsNil()
}

// freeTensor gives back the block in slot (from 1), if it is still held.
func (a *devArena) freeTensor(slot int) {
	if b := a.tensors[slot-1]; !b.IsNil() {
		a.c.Free(b)
		a.live -= b.n
		a.tensors[slot-1] = Buffer{}
	}
}

// freeTensors gives back the blocks from slot from+1 on and forgets them.
func (a *devArena) freeTensors(from int) {
	for slot := from + 1; slot <= len(a.tensors); slot++ {
		a.freeTensor(slot)
	}
	a.tensors, a.ids = a.tensors[:from], a.ids[:from]
}

// free returns the arena's chunks and the tensors' blocks to the device
// cache.
func (a *devArena) free() {
	a.freeTensors(0)
	a.freeMasks()
	if len(a.chunks) > 0 {
		a.c.Free(a.chunks...)
	}
	a.chunks, a.arenaSpace = nil, arenaSpace{peak: a.peak}
}

func (cg *cudaGraph) reset() {
	cg.dropGrads()
	cg.arena.reset()
	cg.arena.freeTensors(0)
	clear(cg.uploads)
	clear(cg.lastReader)
	cg.arena.freeMasks()
}

func (a *devArena) freeMasks() {
	for k, b := range a.masks {
		a.c.Free(b)
		delete(a.masks, k)
	}
}

func (cg *cudaGraph) mark() devMark {
	return devMark{arena: cg.arena.pos, tensors: len(cg.arena.tensors)}
}

// keep gives back every tensor made since mark m but those of ts, which
// move down to m's slots, and the arena above m. Tensors of ts made
// before m stay where they are.
func (cg *cudaGraph) keep(m devMark, ts []*Tensor) {
	a := cg.arena
	var kept []*devTensor
	var blocks []Buffer
	for _, t := range ts {
		d := t.dev
		if d == nil || d.owner != gpuGraph(cg) || d.slot <= m.tensors || !a.holds(d) || slices.Contains(kept, d) {
			continue
		}
		kept = append(kept, d)
		blocks = append(blocks, a.tensors[d.slot-1])
		a.tensors[d.slot-1] = Buffer{} // not freed below
	}
	a.freeTensors(m.tensors)
	for i, d := range kept {
		a.tensors, a.ids = append(a.tensors, blocks[i]), append(a.ids, d.id)
		d.slot = len(a.tensors)
	}
	a.pos = m.arena
}

// drop gives back the blocks of ts that no recorded backward reads (see
// Graph.Drop).
func (cg *cudaGraph) drop(ts []*Tensor) {
	for _, t := range ts {
		if t == nil || t.base != nil || t.dev == nil {
			continue
		}
		d := t.dev
		if d.owner != gpuGraph(cg) || d.slot == 0 || d.saved || d.persistent {
			continue
		}
		cg.arena.giveBack(d)
	}
}

// giveBack frees d's block, unless Reset or Keep gave it back already, and
// marks d dropped.
func (a *devArena) giveBack(d *devTensor) {
	if a.holds(d) {
		a.freeTensor(d.slot)
	}
	d.data, d.dropped = Buffer{}, true
}

// save marks tensors whose values the backward about to be recorded
// reads. The first op to save a graph tensor is the last to read it in
// Backward, which frees it after that (FreeSaved).
func (cg *cudaGraph) save(ts ...*Tensor) {
	at := len(cg.g.tape)
	for _, t := range ts {
		if t == nil || t.dev == nil || t.dev.saved {
			continue
		}
		d := t.dev
		d.saved = true
		if d.slot > 0 && d.owner == gpuGraph(cg) {
			cg.lastReader[at] = append(cg.lastReader[at], d)
		}
	}
}

// freeSaved gives back the tensors whose last reader is tape entry at.
func (cg *cudaGraph) freeSaved(at int) {
	for _, d := range cg.lastReader[at] {
		cg.arena.giveBack(d)
	}
	delete(cg.lastReader, at)
}

// holds reports whether d, a tensor of this graph, still has its block.
func (cg *cudaGraph) holds(d *devTensor) bool { return cg.arena.holds(d) }

func (cg *cudaGraph) peakBytes() int64 { return int64(cg.arena.peak+cg.arena.peakLive) * 4 }

func (cg *cudaGraph) newTensor(grad bool, shape []int) *Tensor {
	b, slot, id := cg.arena.tensor(numel(shape))
	d := &devTensor{dev: cg.c, data: b, lazyGrad: grad, owner: cg, slot: slot, id: id}
	return &Tensor{Shape: append([]int(nil), shape...), dev: d}
}

// d returns t's device values: its own, a parameter mirror made now (for
// a tensor with a gradient), or an upload for this graph's lifetime.
func (cg *cudaGraph) d(t *Tensor) Buffer {
	if t == nil {
		return Buffer{}
	}
	if t.dev != nil {
		t.dev.mustLive()
		return t.dev.data
	}
	if t.Grad != nil || (t.base != nil && t.base.dev != nil) {
		cg.c.mirror(t) // a view of a mirrored tensor: the base's buffers
		return t.dev.data
	}
	if b, ok := cg.uploads[t]; ok {
		return b
	}
	b := cg.arena.alloc(len(t.Data))
	cg.c.Write(b, t.Data)
	cg.uploads[t] = b
	return b
}

// gr returns t's device gradient, or the nil Buffer when none flows into
// t. A graph tensor's gradient is allocated (zeroed) when backward first
// touches it.
func (cg *cudaGraph) gr(t *Tensor) Buffer {
	if t == nil || t.dev == nil {
		return Buffer{}
	}
	d := t.dev
	if d.lazyGrad && d.grad.IsNil() { // a parameter's is read under its lock alone
		cg.lazy = append(cg.lazy, d)
	}
	if d.lazyGrad || d.paramGrad {
		return d.gradOrZero(t.Len())
	}
	return d.grad
}

// gradFlows reports whether gr gives t a gradient.
func gradFlows(t *Tensor) bool {
	return t != nil && t.dev != nil && (t.dev.lazyGrad || t.dev.paramGrad || !t.dev.grad.IsNil())
}

// grWrite calls write with t's device gradient, as gr returns it, and
// whether it was allocated just now: then write must set it whole (a
// product with beta 0, a copy) instead of adding to it. Without a gradient
// it gets the nil Buffer.
func (cg *cudaGraph) grWrite(t *Tensor, write func(g Buffer, fresh bool)) {
	cg.grWriteAll([]*Tensor{t}, func(gs []Buffer, fresh []bool) { write(gs[0], fresh[0]) })
}

// grWriteAll is grWrite for the tensors one call writes (a product's input
// and weight; attention's q, k and v). A tensor named twice (Linear(x, x))
// is zeroed and added to by both writes, whichever runs first. The locks
// are taken in the tensors' address order, so that graphs writing (p, q)
// and (q, p) at once cannot wait on each other.
func (cg *cudaGraph) grWriteAll(ts []*Tensor, write func(gs []Buffer, fresh []bool)) {
	gs, fresh := make([]Buffer, len(ts)), make([]bool, len(ts))
	var order []int // the tensors that take a gradient gr allocates, each once
	twice := map[*devTensor]bool{}
	for i, t := range ts {
		if t == nil || t.dev == nil || !(t.dev.lazyGrad || t.dev.paramGrad) {
			gs[i] = cg.gr(t)
			continue
		}
		seen := false
		for _, j := range order {
			if ts[j].dev == t.dev {
				seen, twice[t.dev] = true, true
			}
		}
		if !seen {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Compare(uintptr(unsafe.Pointer(ts[a].dev)), uintptr(unsafe.Pointer(ts[b].dev)))
	})
	var lockNext func(k int)
	lockNext = func(k int) {
		if k == len(order) {
			for i, t := range ts { // the second naming of a tensor
				if gs[i].IsNil() && gradFlows(t) {
					gs[i] = t.dev.grad
				}
			}
			write(gs, fresh)
			return
		}
		i := order[k]
		d := ts[i].dev
		if d.lazyGrad && d.grad.IsNil() {
			cg.lazy = append(cg.lazy, d)
		}
		d.gradWrite(ts[i].Len(), func(g Buffer, isNew bool) {
			switch {
			case isNew && twice[d]:
				cg.c.Zero(g)
			case isNew:
				cg.arena.fresh(g) // NaN under poison: a write that adds shows
				fresh[i] = true
			}
			gs[i] = g
			lockNext(k + 1)
		})
	}
	lockNext(0)
}

// accumulateInto adds src into t's gradient, or copies it there when the
// gradient is new (same size only: a broadcast adds).
func (cg *cudaGraph) accumulateInto(t *Tensor, src Buffer) {
	cg.grWrite(t, func(g Buffer, fresh bool) {
		switch {
		case g.IsNil():
		case fresh && g.n == src.n:
			cg.c.Copy(g, src)
		case fresh:
			cg.c.Zero(g)
			cg.c.Accumulate(g, src)
		default:
			cg.c.Accumulate(g, src)
		}
	})
}

func (cg *cudaGraph) gradBuffer(t *Tensor) Buffer { return cg.gr(t) }

// dropGrads frees the gradients still held (a backward that did not run,
// or tensors no op made).
func (cg *cudaGraph) dropGrads() {
	for _, d := range cg.lazy {
		cg.dropGrad(d)
	}
	cg.lazy = cg.lazy[:0]
}

// dropGrad frees a graph tensor's gradient (parameters keep theirs to
// the optimiser's step; ZeroGrad frees them).
func (cg *cudaGraph) dropGrad(d *devTensor) {
	if d.lazyGrad {
		d.freeGrad()
	}
}

func (cg *cudaGraph) ints(x []int32) Buffer {
	b := cg.arena.alloc(len(x))
	cg.c.WriteInt32(b, x)
	return b
}

func (cg *cudaGraph) backwardSeed(loss *Tensor) {
	if !loss.takesGrad() {
		panic("nn: Backward: loss has no gradient (no parameter takes one, or NoGrad is set)")
	}
	cg.c.Fill(cg.gr(loss).Slice(0, 1), 1)
}

// record puts backward on the tape, then drops the gradients of the op's
// outputs: once the op that made a tensor has run its backward, every
// consumer already has (the tape runs in reverse), so the buffer goes
// back to the cache for the next gradient. Only the live frontier of
// gradients is held, as in PyTorch, not one per activation.
func (cg *cudaGraph) record(backward func(), outs ...*Tensor) {
	at := len(cg.g.tape)
	ran := false
	cg.g.record(func() {
		if ran && cg.g.FreeSaved {
			panic("nn: a second Backward on a GPU graph with FreeSaved, whose first gave the activations back")
		}
		ran = true
		backward()
		for _, o := range outs {
			cg.dropGrad(o.dev)
		}
		if cg.g.FreeSaved {
			cg.freeSaved(at)
		}
	})
}

func (cg *cudaGraph) linear(out, x, w, bias *Tensor, N, C, OC int) {
	dx, dw, db := cg.d(x), cg.d(w), cg.d(bias)
	cg.c.MatmulForward(out.dev.data, dx, dw, db, N, C, OC)
	if out.takesGrad() {
		cg.save(x, w)
		cg.record(func() {
			gout, gbias := cg.gr(out), cg.gr(bias)
			cg.grWriteAll([]*Tensor{x, w}, func(g []Buffer, set []bool) {
				cg.c.matmulBackward(g[0], g[1], gbias, gout, dx, dw, N, C, OC, set[0], set[1])
			})
		}, out)
	}
}

func (cg *cudaGraph) addLinear(out, y, x, w *Tensor, s float32, N, C, OC int) {
	dx, dw := cg.d(x), cg.d(w)
	cg.c.MatmulForward(out.dev.data, dx, dw, Buffer{}, N, C, OC)
	cg.c.AddScaled(out.dev.data, cg.d(y), s)
	if out.takesGrad() {
		cg.save(x, w)
		cg.record(func() {
			gout := cg.gr(out)
			cg.accumulateInto(y, gout)
			if !gradFlows(x) && !gradFlows(w) {
				return
			}
			// s·dout, rounded before the products read it, as the CPU
			// rounds it: cuBLAS's alpha would scale after a tf32 or bf16
			// product rounded dout instead.
			dz := cg.c.Alloc(N * OC)
			cg.c.Scale(dz, gout, s)
			cg.grWriteAll([]*Tensor{x, w}, func(g []Buffer, set []bool) {
				cg.c.matmulBackward(g[0], g[1], Buffer{}, dz, dx, dw, N, C, OC, set[0], set[1])
			})
			cg.c.Free(dz)
		}, out)
	}
}

func (cg *cudaGraph) embedding(out, table *Tensor, ids []int32, D int) {
	dt := cg.d(table)
	V := table.Dim(0)
	for _, id := range ids {
		if id < 0 || int(id) >= V {
			panic("nn: EmbeddingForward: id out of range")
		}
	}
	bi := cg.ints(ids)
	cg.c.EmbeddingForward(out.dev.data, dt, bi, D)
	if out.takesGrad() {
		cg.record(func() { cg.c.EmbeddingBackward(cg.gr(table), cg.gr(out), bi, D) }, out)
	}
}

func (cg *cudaGraph) rmsnorm(out, x, w *Tensor, N, D int, eps float32) {
	dx, dw := cg.d(x), cg.d(w)
	rstd := cg.arena.alloc(N)
	cg.c.RMSNormForward(out.dev.data, rstd, dx, dw, N, D, eps)
	if out.takesGrad() {
		cg.save(x, w)
		cg.record(func() { cg.c.RMSNormBackward(cg.gr(x), cg.gr(w), cg.gr(out), dx, dw, rstd, N, D) }, out)
	}
}

func (cg *cudaGraph) addRMSNorm(sum, out, x, y, w *Tensor, N, D int, eps float32) {
	dw := cg.d(w)
	rstd := cg.arena.alloc(N)
	cg.c.AddRMSNormForward(sum.dev.data, out.dev.data, rstd, cg.d(x), cg.d(y), dw, N, D, eps)
	if sum.takesGrad() {
		cg.save(sum, w)
		cg.record(func() {
			// The sum's own gradient exists only if something after the op read it.
			cg.c.AddRMSNormBackward(cg.gr(x), cg.gr(y), cg.gr(w), sum.dev.grad, cg.gr(out), sum.dev.data, dw, rstd, N, D)
		}, sum, out)
	}
}

// keyMask returns m on the device, uploaded once per step: every layer
// passes the same slice, and each upload waits for the stream. The graph
// reads the slice's contents once; they must not change within a step.
func (cg *cudaGraph) keyMask(m []bool) Buffer {
	if m == nil {
		return Buffer{}
	}
	key := maskKey{&m[0], len(m)}
	if b, ok := cg.arena.masks[key]; ok {
		return b
	}
	b := cg.c.UploadMask(m)
	if cg.arena.masks == nil {
		cg.arena.masks = map[maskKey]Buffer{}
	}
	cg.arena.masks[key] = b
	return b
}

// maskKey is a key mask slice's identity.
type maskKey struct {
	first *bool
	n     int
}

func (cg *cudaGraph) attention(out, probs, q, k, v, bias *Tensor, o AttentionOpts, s AttentionShape) {
	dq, dk, dv, db := cg.d(q), cg.d(k), cg.d(v), cg.d(bias)
	mask := cg.keyMask(o.KeyMask)
	P := s.B * s.H * s.Tq * s.Tk
	// Working memory comes from the cache and goes back after the op (the
	// frees are queued behind its kernels), not from the arena, which
	// would hold it to the end of the step: 2·B·H·Tq·Tk floats is 150 MB
	// per attention at t5-base, 96 × 128.
	var drop DropoutKeys
	var scratch Buffer
	if cg.g.Train && o.Dropout > 0 {
		drop, scratch = cg.dropoutKeys(o.Dropout), cg.c.Alloc(P)
	}
	cg.c.AttentionForward(out.dev.data, probs.dev.data, scratch, dq, dk, dv, db, mask, drop, o.Causal, o.QOffset, s)
	cg.c.Free(scratch)
	if out.takesGrad() {
		cg.save(q, k, v, probs)
		cg.record(func() {
			work := cg.c.Alloc(2 * P)
			gbias, gout := cg.gr(bias), cg.gr(out)
			cg.grWriteAll([]*Tensor{q, k, v}, func(g []Buffer, set []bool) {
				cg.c.attentionBackward(g[0], g[1], g[2], gbias, work, gout, probs.dev.data, dq, dk, dv, drop, s, [3]bool{set[0], set[1], set[2]})
			})
			cg.c.Free(work)
		}, out)
	}
}

// dropoutKeys names the next dropout op's mask, keyed by the graph's seed
// and the op's index as on the CPU (the generators differ). Kernels draw
// it when they need it; nothing stores it.
func (cg *cudaGraph) dropoutKeys(p float32) DropoutKeys {
	cg.g.DropoutStreams++
	return DropoutKeys{Seed: cg.g.Seed, Stream: cg.g.DropoutStreams, P: p}
}

func (cg *cudaGraph) positionBias(out, table *Tensor, buckets []int32, numBuckets, H int) {
	dt := cg.d(table)
	bb := cg.ints(buckets)
	cg.c.PositionBiasForward(out.dev.data, dt, bb, H)
	if out.takesGrad() {
		cg.record(func() { cg.c.PositionBiasBackward(cg.gr(table), cg.gr(out), bb, numBuckets, H) }, out)
	}
}

// unary runs kernel fwd and, for backward, bwd over the saved input (or
// the output, when useOut).
func (cg *cudaGraph) unary(out, x *Tensor, fwd, bwd string, useOut bool) {
	dx := cg.d(x)
	n := out.Len()
	cg.c.elementwise(fwd, n, out.dev.data, dx)
	if out.takesGrad() {
		saved, keep := dx, x
		if useOut {
			saved, keep = out.dev.data, out
		}
		cg.save(keep)
		cg.record(func() {
			if gx := cg.gr(x); !gx.IsNil() {
				cg.c.elementwise(bwd, n, gx, cg.gr(out), saved)
			}
		}, out)
	}
}

func (cg *cudaGraph) gatedGelu(out, a, b *Tensor) {
	da, db := cg.d(a), cg.d(b)
	n := out.Len()
	cg.c.elementwise("gated_gelu_forward", n, out.dev.data, da, db)
	if out.takesGrad() {
		cg.save(a, b)
		cg.record(func() {
			ga, gb := cg.gr(a), cg.gr(b)
			if !ga.IsNil() || !gb.IsNil() {
				cg.c.elementwise("gated_gelu_backward", n, ga, gb, cg.gr(out), da, db)
			}
		}, out)
	}
}

func (cg *cudaGraph) add(out, a, b *Tensor) {
	cg.c.Add(out.dev.data, cg.d(a), cg.d(b))
	if out.takesGrad() {
		cg.record(func() {
			gout := cg.gr(out)
			cg.accumulateInto(a, gout)
			cg.accumulateInto(b, gout)
		}, out)
	}
}

func (cg *cudaGraph) mul(out, a, b *Tensor) {
	da, db := cg.d(a), cg.d(b)
	cg.c.Mul(out.dev.data, da, db)
	if out.takesGrad() {
		cg.save(a, b)
		cg.record(func() { cg.c.MulBackward(cg.gr(a), cg.gr(b), cg.gr(out), da, db) }, out)
	}
}

func (cg *cudaGraph) scale(out, x *Tensor, s float32) {
	cg.c.Scale(out.dev.data, cg.d(x), s)
	if out.takesGrad() {
		cg.record(func() {
			if gx := cg.gr(x); !gx.IsNil() {
				cg.c.ScaleBackward(gx, cg.gr(out), s)
			}
		}, out)
	}
}

func (cg *cudaGraph) dropout(out, x *Tensor, p float32) {
	keys := cg.dropoutKeys(p)
	cg.c.DropoutApply(out.dev.data, cg.d(x), keys, false)
	if out.takesGrad() {
		cg.record(func() {
			if gx := cg.gr(x); !gx.IsNil() {
				cg.c.DropoutApply(gx, cg.gr(out), keys, true)
			}
		}, out)
	}
}

// crossEntropy returns the loss, summed over rows in float64 as on the
// CPU, on the device: neither it nor its gradient is copied back here.
func (cg *cudaGraph) crossEntropy(out, logits *Tensor, targets []int32, N, V int) {
	dl := cg.d(logits)
	probs := cg.arena.alloc(N * V)
	tb := cg.ints(targets)
	count := cg.c.CrossEntropyForward(out.dev.data, probs, dl, tb, targets, N, V, -100)
	if out.takesGrad() {
		cg.record(func() {
			if gl := cg.gr(logits); !gl.IsNil() {
				cg.c.CrossEntropyBackward(gl, probs, tb, cg.gr(out), N, V, -100, count)
			}
		}, out)
	}
}

// copyBlock: dst[r·dstStride+dstOff+c] (+)= src[r·srcStride+srcOff+c].
func (cg *cudaGraph) copyBlock(dst Buffer, dstStride, dstOff int, src Buffer, srcStride, srcOff, rows, cols int, accumulate bool) {
	cg.c.post(func() {
		cg.c.launch("copy_block", elementwiseGrid(rows*cols), elementwiseBlock, dst, dstStride, dstOff, src, srcStride, srcOff, rows, cols, accumulate)
	})
}

func (cg *cudaGraph) concat(out *Tensor, ts []*Tensor, N, total int) {
	srcs := make([]Buffer, len(ts))
	off := 0
	for i, t := range ts {
		srcs[i] = cg.d(t)
		C := t.Dim(-1)
		cg.copyBlock(out.dev.data, total, off, srcs[i], C, 0, N, C, false)
		off += C
	}
	if out.takesGrad() {
		cg.record(func() {
			off := 0
			for _, t := range ts {
				C := t.Dim(-1)
				if gt := cg.gr(t); !gt.IsNil() {
					cg.copyBlock(gt, C, 0, cg.gr(out), total, off, N, C, true)
				}
				off += C
			}
		}, out)
	}
}

func (cg *cudaGraph) slice(out, x *Tensor, lo, hi, N, C int) {
	W := hi - lo
	cg.copyBlock(out.dev.data, W, 0, cg.d(x), C, lo, N, W, false)
	if out.takesGrad() {
		cg.record(func() {
			if gx := cg.gr(x); !gx.IsNil() {
				cg.copyBlock(gx, C, lo, cg.gr(out), W, 0, N, W, true)
			}
		}, out)
	}
}

func (cg *cudaGraph) gru(out, gi, gh, h *Tensor, N, R int) {
	dgi, dgh, dh := cg.d(gi), cg.d(gh), cg.d(h)
	gates := cg.arena.alloc(N * 3 * R)
	cg.c.GRUGateForward(out.dev.data, gates, dgi, dgh, dh, N, R)
	if out.takesGrad() {
		cg.save(gh, h)
		cg.record(func() {
			cg.c.GRUGateBackward(cg.gr(gi), cg.gr(gh), cg.gr(h), cg.gr(out), gates, dgh, dh, N, R)
		}, out)
	}
}

func (cg *cudaGraph) lstm(hOut, cOut, gates, cPrev *Tensor, N, R int) {
	dg, dc := cg.d(gates), cg.d(cPrev)
	acts, tc := cg.arena.alloc(N*4*R), cg.arena.alloc(N*R)
	cg.c.LSTMGateForward(hOut.dev.data, cOut.dev.data, acts, tc, dg, dc, N, R)
	if hOut.takesGrad() {
		cg.save(cPrev)
		cg.record(func() {
			cg.c.LSTMGateBackward(cg.gr(gates), cg.gr(cPrev), cg.gr(hOut), cg.gr(cOut), acts, tc, dc, N, R)
		}, hOut, cOut)
	}
}

func (cg *cudaGraph) addRow(out, x, b *Tensor, N, C int) {
	cg.c.Add(out.dev.data, cg.d(x), cg.d(b))
	if out.takesGrad() {
		cg.record(func() {
			cg.accumulateInto(x, cg.gr(out))
			if gb := cg.gr(b); !gb.IsNil() {
				cg.c.AccumulateRows(gb, cg.gr(out), N, C)
			}
		}, out)
	}
}

func (cg *cudaGraph) mulRow(out, x, b *Tensor, N, C int) {
	dx, db := cg.d(x), cg.d(b)
	cg.c.MulRow(out.dev.data, dx, db)
	if out.takesGrad() {
		cg.save(x, b)
		cg.record(func() { cg.c.MulRowBackward(cg.gr(x), cg.gr(b), cg.gr(out), dx, db, N, C) }, out)
	}
}

func (cg *cudaGraph) prepend(out, p, x *Tensor, B, P, S, D int) {
	dp, dx := cg.d(p), cg.d(x)
	row := (P + S) * D
	cg.copyBlock(out.dev.data, row, 0, dp, 0, 0, B, P*D, false)
	cg.copyBlock(out.dev.data, row, P*D, dx, S*D, 0, B, S*D, false)
	if out.takesGrad() {
		cg.record(func() {
			if gp := cg.gr(p); !gp.IsNil() {
				og := cg.gr(out)
				cg.c.post(func() { cg.c.accumulateColumns(gp, og, B, P*D, row) })
			}
			if gx := cg.gr(x); !gx.IsNil() {
				cg.copyBlock(gx, S*D, 0, cg.gr(out), row, P*D, B, S*D, true)
			}
		}, out)
	}
}

func (cg *cudaGraph) batchMatmul(out, a, b *Tensor, B, M, K, N int) {
	da, db := cg.d(a), cg.d(b)
	o := out.dev.data
	cg.c.post(func() { cg.c.gemmBatched(false, false, M, N, K, 1, da, K, M*K, db, N, K*N, 0, o, N, M*N, B) })
	if out.takesGrad() {
		cg.save(a, b)
		cg.record(func() {
			// Operands are read here, on the caller's goroutine; the CUDA
			// thread sees only buffers.
			d, ga, gb := cg.gr(out), cg.gr(a), cg.gr(b)
			cg.c.post(func() {
				cg.c.sharingOperands(func() {
					if !ga.IsNil() {
						cg.c.gemmBatched(false, true, M, K, N, 1, d, N, M*N, db, N, K*N, 1, ga, K, M*K, B)
					}
					if !gb.IsNil() {
						cg.c.gemmBatched(true, false, K, N, M, 1, da, K, M*K, d, N, M*N, 1, gb, N, K*N, B)
					}
				})
			})
		}, out)
	}
}

func (cg *cudaGraph) meanHeads(out, p *Tensor, B, H, TqTk int) {
	dp, o := cg.d(p), out.dev.data
	cg.c.post(func() { cg.c.launch("mean_heads", elementwiseGrid(B*TqTk), elementwiseBlock, o, dp, B, H, TqTk) })
}

func (cg *cudaGraph) gateMix(out, a, b, alpha *Tensor, temp float32) {
	da, db, dal, o := cg.d(a), cg.d(b), cg.d(alpha), out.dev.data
	n := out.Len()
	cg.c.post(func() {
		cg.c.launch("gate_mix_forward", elementwiseGrid(n), elementwiseBlock, o, da, db, dal, temp, n)
	})
	if out.takesGrad() {
		cg.save(a, b, alpha)
		cg.record(func() {
			blocks := min(elementwiseGrid(n), 1024)
			partial := cg.arena.alloc(2 * blocks)
			ga, gb, gal, d := cg.gr(a), cg.gr(b), cg.gr(alpha), cg.gr(out)
			cg.c.post(func() {
				cg.c.launch("gate_mix_backward", blocks, rowBlockMax, ga, gb, partial, d, da, db, dal, temp, n)
				if !gal.IsNil() {
					cg.c.launch("gate_mix_alpha", 1, 1, gal, partial, blocks, dal, temp)
				}
			})
		}, out)
	}
}

// mirror gives t a persistent device copy of its values and, where it
// has one, its gradient (see ToDevice).
func (c *CUDA) mirror(t *Tensor) {
	if t.dev != nil {
		return
	}
	if t.base != nil {
		// A view mirrors its base and shares its buffers: a copy of the
		// view alone would take the gradient the base never sees.
		c.mirror(t.base)
		t.dev = t.base.dev
		return
	}
	d := &devTensor{dev: c, data: c.Upload(t.Data), persistent: true, paramGrad: t.Grad != nil}
	if t.Grad != nil {
		d.grad = c.Upload(t.Grad)
	}
	t.dev = d
}

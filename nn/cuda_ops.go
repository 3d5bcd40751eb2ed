//go:build cgo && linux

package nn

import (
	"fmt"
	"strings"
	"unsafe"
)

// The device-resident ops: each mirrors the CPU kernel of the same name in
// kernels.go, on Buffers, with the same shapes and the same "adds into"
// convention for gradients. Tests hold every one to its CPU twin.

const (
	elementwiseBlock = 256
	rowBlockMax      = 256 // RS_BLOCK in cuda/common.cuh
)

// elementwiseGrid sizes a grid-stride loop over n elements: enough blocks
// to fill an H100 (132 SMs × 16 resident blocks) and no more.
func elementwiseGrid(n int) int {
	return max(1, min((n+elementwiseBlock-1)/elementwiseBlock, 132*16))
}

// rowBlock is the block size for one-block-per-row reductions over rows
// of length n: a power of two between a warp and rowBlockMax.
func rowBlock(n int) int {
	b := 32
	for b < n && b < rowBlockMax {
		b <<= 1
	}
	return b
}

func (c *CUDA) elementwise(name string, n int, args ...any) {
	c.post(func() { c.launch(name, elementwiseGrid(n), elementwiseBlock, append(args, n)...) })
}

// columnChunk is the rows one thread sums in the first pass of a column
// sum; with fewer rows than this one pass does it all.
const columnChunk = 128

// accumulateColumns adds into dst (cols) the sum of src's rows (rows of
// stride elements): one thread per column for few rows, else per-chunk
// partial sums first, so a 12288-row bias gradient does not run 12288
// dependent loads per thread. The order of every sum is fixed. Runs on
// the CUDA thread.
func (c *CUDA) accumulateColumns(dst, src Buffer, rows, cols, stride int) {
	if rows <= columnChunk {
		c.launch("accumulate_columns", elementwiseGrid(cols), elementwiseBlock, dst, src, rows, cols, stride)
		return
	}
	chunks := (rows + columnChunk - 1) / columnChunk
	partial := c.alloc(chunks * cols)
	c.launch("column_partial", elementwiseGrid(chunks*cols), elementwiseBlock, partial, src, rows, cols, stride, columnChunk)
	c.launch("accumulate_columns", elementwiseGrid(cols), elementwiseBlock, dst, partial, chunks, cols, cols)
	c.release(partial)
}

func mustBuf(op, name string, b Buffer, want int) {
	if b.n < want {
		panic(fmt.Sprintf("nn: CUDA %s: %s has %d elements, want %d", op, name, b.n, want))
	}
}

// MatmulForward: out = inp·wᵀ (+ bias). inp (N, C), w (OC, C), out (N, OC).
func (c *CUDA) MatmulForward(out, inp, w, bias Buffer, N, C, OC int) {
	mustBuf("MatmulForward", "out", out, N*OC)
	c.post(func() {
		c.gemm(false, true, N, OC, C, 1, inp, C, w, C, 0, out, OC)
		if !bias.IsNil() {
			c.launch("add_forward", elementwiseGrid(N*OC), elementwiseBlock, out, out, bias, N*OC, OC)
		}
	})
}

// MatmulBackward adds into dinp, dw and dbias; any may be nil.
func (c *CUDA) MatmulBackward(dinp, dw, dbias, dout, inp, w Buffer, N, C, OC int) {
	c.matmulBackward(dinp, dw, dbias, dout, inp, w, N, C, OC, false, false)
}

// matmulBackward is MatmulBackward that sets dinp (setInp) or dw (setW)
// instead of adding into them: a gradient allocated just now, which
// cuBLAS's beta 0 overwrites without a memset first.
func (c *CUDA) matmulBackward(dinp, dw, dbias, dout, inp, w Buffer, N, C, OC int, setInp, setW bool) {
	beta := func(set bool) float32 {
		if set {
			return 0
		}
		return 1
	}
	c.post(func() {
		c.sharingOperands(func() {
			if !dinp.IsNil() {
				c.gemm(false, false, N, C, OC, 1, dout, OC, w, C, beta(setInp), dinp, C)
			}
			if !dw.IsNil() {
				c.gemm(true, false, OC, C, N, 1, dout, OC, inp, C, beta(setW), dw, C)
			}
		})
		if !dbias.IsNil() {
			c.accumulateColumns(dbias, dout, N, OC, OC)
		}
	})
}

// AddScaled sets out to y + s·out, the product rounded first.
func (c *CUDA) AddScaled(out, y Buffer, s float32) {
	mustBuf("AddScaled", "y", y, out.n)
	c.elementwise("add_scaled", out.n, out, y, s)
}

// EmbeddingForward gathers rows of table (V, D) at ids (an int32 buffer).
func (c *CUDA) EmbeddingForward(out, table, ids Buffer, D int) {
	N := ids.n
	c.post(func() { c.launch("embedding_forward", N, rowBlock(D), out, table, ids, N, D) })
}

// EmbeddingBackward adds dout's rows into dtable at ids.
func (c *CUDA) EmbeddingBackward(dtable, dout, ids Buffer, D int) {
	N := ids.n
	c.post(func() { c.launch("embedding_backward", elementwiseGrid(D), elementwiseBlock, dtable, dout, ids, N, D) })
}

// RMSNormForward is T5LayerNorm; rstd (N) is saved for backward.
func (c *CUDA) RMSNormForward(out, rstd, x, w Buffer, N, D int, eps float32) {
	c.post(func() { c.launch("rmsnorm_forward", N, rowBlockMax, out, rstd, x, w, N, D, eps) })
}

// RMSNormBackward adds into dx and dw (either may be nil).
func (c *CUDA) RMSNormBackward(dx, dw, dout, x, w, rstd Buffer, N, D int) {
	c.post(func() {
		if !dx.IsNil() {
			c.launch("rmsnorm_backward_x", N, rowBlockMax, dx, dout, x, w, rstd, N, D)
		}
		c.rmsnormDW(dw, dout, x, rstd, N, D)
	})
}

// rmsnormDW adds the norm weight's gradient into dw (nil: none): the rows
// of dout·x·rstd summed per chunk, then the chunks as a column sum.
func (c *CUDA) rmsnormDW(dw, dout, x, rstd Buffer, N, D int) {
	if dw.IsNil() {
		return
	}
	chunks := (N + columnChunk - 1) / columnChunk
	partial := c.alloc(chunks * D)
	c.launch("rmsnorm_dw_partial", elementwiseGrid(chunks*D), elementwiseBlock, partial, dout, x, rstd, N, D, columnChunk)
	c.accumulateColumns(dw, partial, chunks, D, D)
	c.release(partial)
}

// AddRMSNormForward is Add then RMSNormForward in one kernel: sum = x + y,
// out = rmsnorm(sum)·w, rstd (N) saved for backward.
func (c *CUDA) AddRMSNormForward(sum, out, rstd, x, y, w Buffer, N, D int, eps float32) {
	c.post(func() { c.launch("add_rmsnorm_forward", N, rowBlockMax, sum, out, rstd, x, y, w, N, D, eps) })
}

// AddRMSNormBackward adds the sum's whole gradient (dsum, what its other
// readers gave, nil for none, plus the norm's from dout) into dx and dy,
// and the weight's into dw; any of dx, dy, dw may be nil.
func (c *CUDA) AddRMSNormBackward(dx, dy, dw, dsum, dout, sum, w, rstd Buffer, N, D int) {
	c.post(func() {
		if !dx.IsNil() || !dy.IsNil() {
			c.launch("add_rmsnorm_backward_x", N, rowBlockMax, dx, dy, dsum, dout, sum, w, rstd, N, D)
		}
		c.rmsnormDW(dw, dout, sum, rstd, N, D)
	})
}

// AttentionForward is AttentionForward in kernels.go on the device: probs
// (B, H, Tq, Tk) and out (B, Tq, H·K); keyMask from UploadMask or nil;
// drop the keys of the probabilities' dropout mask (P 0 for none), drawn
// in the kernels, with scratch (B, H, Tq, Tk) holding the dropped
// probabilities. q, k and v are copied head-major
// (split_heads, one launch for every tensor of a length), so each of the
// two products is one strided batch over B·H: a cuBLAS call where a loop
// over the heads made H.
func (c *CUDA) AttentionForward(out, probs, scratch, q, k, v, bias, keyMask Buffer, drop DropoutKeys, causal bool, qOffset int, s AttentionShape) {
	B, Tq, Tk, H, K := s.B, s.Tq, s.Tk, s.H, s.K
	mustBuf("AttentionForward", "probs", probs, B*H*Tq*Tk)
	if drop.P > 0 {
		mustBuf("AttentionForward", "scratch", scratch, B*H*Tq*Tk)
	}
	c.post(func() {
		hq, hk := c.splitHeadsByLength(s, []Buffer{q}, []Buffer{k, v})
		qh, kh, vh := hq[0], hk[0], hk[1]
		c.gemmBatched(false, true, Tq, Tk, K, 1, qh, K, Tq*K, kh, K, Tk*K, 0, probs, Tk, Tq*Tk, B*H)
		c.release(qh, kh)
		c.launch("attention_softmax", B*H*Tq, rowBlock(Tk), probs, bias, keyMask, causal, qOffset, B, H, Tq, Tk)
		w := probs
		if drop.P > 0 {
			w = scratch
			c.dropoutApply(w, probs, drop, false)
		}
		oh := c.alloc(B * H * Tq * K)
		c.gemmBatched(false, false, Tq, K, Tk, 1, w, Tk, Tq*Tk, vh, K, Tk*K, 0, oh, K, Tq*K, B*H)
		c.mergeHeads(B, Tq, H, K, []bool{false}, []Buffer{out}, []Buffer{oh})
		c.release(vh, oh)
	})
}

// splitHeadsByLength copies head-major the tensors of Tq rows (rowsQ) and
// of Tk rows (rowsK): one launch when the lengths agree (self-attention),
// else one per length.
func (c *CUDA) splitHeadsByLength(s AttentionShape, rowsQ, rowsK []Buffer) (hq, hk []Buffer) {
	if s.Tq == s.Tk {
		hs := c.splitHeads(s.B, s.Tq, s.H, s.K, append(append([]Buffer(nil), rowsQ...), rowsK...)...)
		return hs[:len(rowsQ)], hs[len(rowsQ):]
	}
	return c.splitHeads(s.B, s.Tq, s.H, s.K, rowsQ...), c.splitHeads(s.B, s.Tk, s.H, s.K, rowsK...)
}

// splitHeads returns new buffers holding each of xs (B, T, H·K) as
// (B, H, T, K), at most four, in one launch.
func (c *CUDA) splitHeads(B, T, H, K int, xs ...Buffer) []Buffer {
	n := B * T * H * K
	outs := make([]Buffer, len(xs))
	args := make([]any, 0, 13)
	for i, x := range xs {
		mustBuf("splitHeads", "x", x, n)
		outs[i] = c.alloc(n)
		args = append(args, outs[i], x)
	}
	for len(args) < 8 {
		args = append(args, Buffer{})
	}
	c.launch("split_heads", elementwiseGrid(len(xs)*n), elementwiseBlock, append(args, len(xs), B, T, H, K)...)
	return outs
}

// mergeHeads writes (or adds, when accumulate) each xs[i] (B, H, T, K)
// into outs[i] (B, T, H·K): at most three in one launch, or one launch
// each where two outs are the same buffer (their adds would race).
func (c *CUDA) mergeHeads(B, T, H, K int, adds []bool, outs, xs []Buffer) {
	for i := range outs {
		for j := range i {
			if outs[j].ptr == outs[i].ptr {
				for k := range outs {
					c.mergeHeads(B, T, H, K, adds[k:k+1], outs[k:k+1], xs[k:k+1])
				}
				return
			}
		}
	}
	n := B * T * H * K
	args := make([]any, 0, 12)
	mask := 0
	for i := range outs {
		args = append(args, outs[i], xs[i])
		if adds[i] {
			mask |= 1 << i
		}
	}
	for len(args) < 6 {
		args = append(args, Buffer{})
	}
	c.launch("merge_heads", elementwiseGrid(len(outs)*n), elementwiseBlock, append(args, len(outs), B, T, H, K, mask)...)
}

// AttentionBackward adds into dq, dk, dv and dbias (any may be nil; dbias
// sums over the batch). scratch: 2·B·H·Tq·Tk elements. As forward, each
// product is one strided batch over B·H on head-major copies (made in one
// launch per length); the gradients come back through merge_heads, which
// adds, in one launch per length.
func (c *CUDA) AttentionBackward(dq, dk, dv, dbias, scratch, dout, probs, q, k, v Buffer, drop DropoutKeys, s AttentionShape) {
	c.attentionBackward(dq, dk, dv, dbias, scratch, dout, probs, q, k, v, drop, s, [3]bool{})
}

// attentionBackward is AttentionBackward that sets dq, dk or dv (set[0],
// [1], [2]) instead of adding into them: gradients allocated just now.
func (c *CUDA) attentionBackward(dq, dk, dv, dbias, scratch, dout, probs, q, k, v Buffer, drop DropoutKeys, s AttentionShape, set [3]bool) {
	B, Tq, Tk, H, K := s.B, s.Tq, s.Tk, s.H, s.K
	P := B * H * Tq * Tk
	mustBuf("AttentionBackward", "scratch", scratch, 2*P)
	ds, pd := scratch.Slice(0, P), scratch.Slice(P, 2*P)
	c.post(func() {
		rowsQ, rowsK := []Buffer{dout}, []Buffer{v}
		if !dk.IsNil() {
			rowsQ = append(rowsQ, q)
		}
		if !dq.IsNil() {
			rowsK = append(rowsK, k)
		}
		hq, hk := c.splitHeadsByLength(s, rowsQ, rowsK)
		douth, vh := hq[0], hk[0]
		// The gradients in (B, H, T, K), merged back at the end by length.
		var outQ, gradQ, outK, gradK []Buffer
		var addQ, addK []bool
		// d(dropped probs) = dout·vᵀ
		c.gemmBatched(false, true, Tq, Tk, K, 1, douth, K, Tq*K, vh, K, Tk*K, 0, ds, Tk, Tq*Tk, B*H)
		c.release(vh)
		if !dv.IsNil() {
			w := probs
			if drop.P > 0 {
				w = pd
				c.dropoutApply(pd, probs, drop, false)
			}
			dvh := c.alloc(B * H * Tk * K)
			c.gemmBatched(true, false, Tk, K, Tq, 1, w, Tk, Tq*Tk, douth, K, Tq*K, 0, dvh, K, Tk*K, B*H)
			outK, gradK, addK = append(outK, dv), append(gradK, dvh), append(addK, !set[2])
		}
		c.release(douth)
		c.launch("attention_softmax_backward", B*H*Tq, rowBlock(Tk), ds, probs, drop.Seed, drop.Stream, drop.P, B*H*Tq, Tk)
		if !dq.IsNil() {
			kh, dqh := hk[1], c.alloc(B*H*Tq*K)
			c.gemmBatched(false, false, Tq, K, Tk, 1, ds, Tk, Tq*Tk, kh, K, Tk*K, 0, dqh, K, Tq*K, B*H)
			outQ, gradQ, addQ = append(outQ, dq), append(gradQ, dqh), append(addQ, !set[0])
			c.release(kh)
		}
		if !dk.IsNil() {
			qh, dkh := hq[1], c.alloc(B*H*Tk*K)
			c.gemmBatched(true, false, Tk, K, Tq, 1, ds, Tk, Tq*Tk, qh, K, Tq*K, 0, dkh, K, Tk*K, B*H)
			outK, gradK, addK = append(outK, dk), append(gradK, dkh), append(addK, !set[1])
			c.release(qh)
		}
		if Tq == Tk {
			outQ, gradQ, addQ = append(outQ, outK...), append(gradQ, gradK...), append(addQ, addK...)
			outK, gradK, addK = nil, nil, nil
		}
		if len(outQ) > 0 {
			c.mergeHeads(B, Tq, H, K, addQ, outQ, gradQ)
		}
		if len(outK) > 0 {
			c.mergeHeads(B, Tk, H, K, addK, outK, gradK)
		}
		c.release(gradQ...)
		c.release(gradK...)
		if !dbias.IsNil() {
			c.accumulateColumns(dbias, ds, B, H*Tq*Tk, H*Tq*Tk)
		}
	})
}

// PositionBiasForward gathers T5's relative position bias (H, Tq·Tk) from
// table (numBuckets, H) at buckets (an int32 buffer of Tq·Tk).
func (c *CUDA) PositionBiasForward(out, table, buckets Buffer, H int) {
	c.post(func() {
		c.launch("position_bias_forward", elementwiseGrid(H*buckets.n), elementwiseBlock, out, table, buckets, H, buckets.n)
	})
}

// PositionBiasBackward adds dout into dtable.
func (c *CUDA) PositionBiasBackward(dtable, dout, buckets Buffer, numBuckets, H int) {
	c.post(func() {
		c.launch("position_bias_backward", elementwiseGrid(numBuckets*H), elementwiseBlock, dtable, dout, buckets, numBuckets, H, buckets.n)
	})
}

// Unary forward ops: out = f(x), n = x.Len().
func (c *CUDA) ReLUForward(out, x Buffer)    { c.elementwise("relu_forward", x.n, out, x) }
func (c *CUDA) GeluNewForward(out, x Buffer) { c.elementwise("gelu_forward", x.n, out, x) }
func (c *CUDA) SigmoidForward(out, x Buffer) { c.elementwise("sigmoid_forward", x.n, out, x) }
func (c *CUDA) TanhForward(out, x Buffer)    { c.elementwise("tanh_forward", x.n, out, x) }

// Unary backward ops add into dx; saved is x (ReLU, GELU) or the forward
// output (sigmoid, tanh), as on the CPU.
func (c *CUDA) ReLUBackward(dx, dout, x Buffer)    { c.elementwise("relu_backward", x.n, dx, dout, x) }
func (c *CUDA) GeluNewBackward(dx, dout, x Buffer) { c.elementwise("gelu_backward", x.n, dx, dout, x) }
func (c *CUDA) SigmoidBackward(dx, dout, y Buffer) {
	c.elementwise("sigmoid_backward", y.n, dx, dout, y)
}
func (c *CUDA) TanhBackward(dx, dout, y Buffer) { c.elementwise("tanh_backward", y.n, dx, dout, y) }

// Add: out = a + b, b repeated over a when shorter (a bias row).
func (c *CUDA) Add(out, a, b Buffer) {
	if b.n == 0 || a.n%b.n != 0 {
		panic(fmt.Sprintf("nn: CUDA Add: %d elements plus %d", a.n, b.n))
	}
	c.post(func() { c.launch("add_forward", elementwiseGrid(a.n), elementwiseBlock, out, a, b, a.n, b.n) })
}

// Accumulate: dst += src.
func (c *CUDA) Accumulate(dst, src Buffer) { c.elementwise("accumulate", src.n, dst, src) }

// AccumulateRows: dst (cols) += the sum of src's rows (rows, cols).
func (c *CUDA) AccumulateRows(dst, src Buffer, rows, cols int) {
	c.post(func() {
		c.launch("accumulate_columns", elementwiseGrid(cols), elementwiseBlock, dst, src, rows, cols, cols)
	})
}

// Mul: out = a ⊙ b; MulBackward adds dout⊙b into da and dout⊙a into db.
func (c *CUDA) Mul(out, a, b Buffer) { c.elementwise("mul_forward", a.n, out, a, b) }
func (c *CUDA) MulBackward(da, db, dout, a, b Buffer) {
	c.elementwise("mul_backward", a.n, da, db, dout, a, b)
}

// MulRow: out = x ⊙ b, b (cols) repeated over x's rows.
func (c *CUDA) MulRow(out, x, b Buffer) {
	if b.n == 0 || x.n%b.n != 0 {
		panic(fmt.Sprintf("nn: CUDA MulRow: %d elements times a row of %d", x.n, b.n))
	}
	c.post(func() { c.launch("mul_row_forward", elementwiseGrid(x.n), elementwiseBlock, out, x, b, x.n, b.n) })
}

// MulRowBackward adds dout ⊙ b (b repeated over rows) into dx and the
// column sums of dout ⊙ x into db; either may be nil. The column sums
// take accumulateColumns's fixed order.
func (c *CUDA) MulRowBackward(dx, db, dout, x, b Buffer, rows, cols int) {
	c.post(func() {
		if !dx.IsNil() {
			c.launch("mul_row_backward", elementwiseGrid(dout.n), elementwiseBlock, dx, dout, b, dout.n, b.n)
		}
		if !db.IsNil() {
			prod := c.alloc(dout.n)
			c.launch("mul_forward", elementwiseGrid(dout.n), elementwiseBlock, prod, dout, x, dout.n)
			c.accumulateColumns(db, prod, rows, cols, cols)
			c.release(prod)
		}
	})
}

// Scale: out = s·x; ScaleBackward: dx += s·dout.
func (c *CUDA) Scale(out, x Buffer, s float32) { c.elementwise("scale_forward", x.n, out, x, s) }
func (c *CUDA) ScaleBackward(dx, dout Buffer, s float32) {
	c.elementwise("scale_backward", dout.n, dx, dout, s)
}

// DropoutKeys name a dropout mask on the device: inverted-dropout scales
// (0 with probability P, else 1/(1−P)) from a counter-based generator
// keyed by (Seed, Stream), so the same keys give the same mask on any GPU
// and launch shape, and a backward draws its forward's mask again instead
// of storing it. P 0 is no dropout. The CPU backend draws from another
// generator, so the two masks differ.
type DropoutKeys struct {
	Seed, Stream uint64
	P            float32
}

// DropoutMask fills mask with the scales the keys name: what DropoutApply
// and attention multiply by, for a test to read.
func (c *CUDA) DropoutMask(mask Buffer, k DropoutKeys) {
	c.post(func() {
		c.launch("dropout_mask", elementwiseGrid(mask.n), elementwiseBlock, mask, k.Seed, k.Stream, k.P, mask.n)
	})
}

// DropoutApply sets out to x ⊙ mask, or with accumulate adds it to out:
// dropout's forward and, on the output's gradient, its backward.
func (c *CUDA) DropoutApply(out, x Buffer, k DropoutKeys, accumulate bool) {
	mustBuf("DropoutApply", "out", out, x.n)
	c.post(func() { c.dropoutApply(out, x, k, accumulate) })
}

func (c *CUDA) dropoutApply(out, x Buffer, k DropoutKeys, accumulate bool) {
	c.launch("dropout_apply", elementwiseGrid(x.n), elementwiseBlock, out, x, k.Seed, k.Stream, k.P, x.n, accumulate)
}

// CrossEntropyForward computes softmax probs (N, V) and, into loss (one
// value), the mean of −log p[target] over rows whose target is not
// ignore, summed in float64 as on the host; it returns the count of such
// rows, from hostTargets (targets is their int32 buffer). Nothing comes
// back to the host: the step waits for the loss only where it is read.
func (c *CUDA) CrossEntropyForward(loss, probs, logits, targets Buffer, hostTargets []int32, N, V int, ignore int32) (count int) {
	mustBuf("CrossEntropyForward", "loss", loss, 1)
	for _, t := range hostTargets {
		if t != ignore {
			count++
		}
	}
	c.post(func() {
		// The per-row losses are doubles: 2 float32 slots each.
		lb := c.alloc(2 * N)
		c.launch("cross_entropy_forward", N, rowBlock(V), probs, lb, logits, targets, N, V, int(ignore))
		c.launch("cross_entropy_mean", 1, 1, loss, lb, targets, N, int(ignore))
		c.release(lb)
	})
	return count
}

// CrossEntropyBackward adds (softmax − onehot)·dloss[0]/count into
// dlogits, count the rows not ignored (CrossEntropyForward's).
func (c *CUDA) CrossEntropyBackward(dlogits, probs, targets, dloss Buffer, N, V int, ignore int32, count int) {
	if count == 0 {
		return
	}
	c.post(func() {
		c.launch("cross_entropy_backward", N, rowBlock(V), dlogits, probs, targets, N, V, int(ignore), dloss, count)
	})
}

// GRUGateForward and the cell ops below mirror kernels.go (PyTorch's gate order).
func (c *CUDA) GRUGateForward(out, gates, gi, gh, h Buffer, N, R int) {
	c.post(func() {
		c.launch("gru_gate_forward", elementwiseGrid(N*R), elementwiseBlock, out, gates, gi, gh, h, N, R)
	})
}

func (c *CUDA) GRUGateBackward(dgi, dgh, dh, dout, gates, gh, h Buffer, N, R int) {
	c.post(func() {
		c.launch("gru_gate_backward", elementwiseGrid(N*R), elementwiseBlock, dgi, dgh, dh, dout, gates, gh, h, N, R)
	})
}

func (c *CUDA) LSTMGateForward(hOut, cOut, acts, tc, g, cPrev Buffer, N, R int) {
	c.post(func() {
		c.launch("lstm_gate_forward", elementwiseGrid(N*R), elementwiseBlock, hOut, cOut, acts, tc, g, cPrev, N, R)
	})
}

func (c *CUDA) LSTMGateBackward(dg, dc, dhOut, dcOut, acts, tc, cPrev Buffer, N, R int) {
	c.post(func() {
		c.launch("lstm_gate_backward", elementwiseGrid(N*R), elementwiseBlock, dg, dc, dhOut, dcOut, acts, tc, cPrev, N, R)
	})
}

// chunkElems is RS_CHUNK in cuda/optim.cu: the most elements one block of
// a whole-model kernel takes.
const chunkElems = 65536

// maxChunkTables bounds the tables kept on the device, the least recently
// used going first. A trial uses up to three (two optimiser groups and its
// gradients), a pack of 8 trials 24; a table is 40 bytes per 64k elements
// (136 kB for t5-base).
const maxChunkTables = 64

// chunkTableEntry is a cached table and when it was last asked for.
type chunkTableEntry struct {
	buf  Buffer
	used uint64
}

// chunkTable returns the device table of chunks (cuda/optim.cu's RsChunk:
// four addresses and a count) that splits the same-length buffers of
// each column of arrays into pieces of at most chunkElems, and the
// number of chunks. Tables are cached by content on the device, so a
// model's optimiser uploads its table once, not at every step; a cached
// table is right whenever its addresses and lengths are the ones asked
// for, whatever was freed in between. Run on the CUDA thread.
func (c *CUDA) chunkTable(arrays ...[]Buffer) (Buffer, int) {
	var table []uint64
	for i, b := range arrays[0] {
		for off := 0; off < b.n; off += chunkElems {
			var ptrs [4]uint64
			for j, col := range arrays {
				if col[i].n != b.n {
					c.fail(fmt.Errorf("nn: CUDA chunk table: buffers of %d and %d values side by side", b.n, col[i].n))
					return Buffer{}, 0
				}
				ptrs[j] = col[i].ptr + 4*uint64(off)
			}
			table = append(table, ptrs[0], ptrs[1], ptrs[2], ptrs[3], uint64(min(chunkElems, b.n-off)))
		}
	}
	n := len(table) / 5
	if n == 0 || c.err != nil {
		return Buffer{}, 0
	}
	c.chunkUses++
	key := unsafe.String((*byte)(unsafe.Pointer(&table[0])), 8*len(table))
	if e, ok := c.chunkTables[key]; ok {
		e.used = c.chunkUses
		return e.buf, n
	}
	if len(c.chunkTables) >= maxChunkTables {
		var oldest string
		for k, e := range c.chunkTables {
			if oldest == "" || e.used < c.chunkTables[oldest].used {
				oldest = k
			}
		}
		c.release(c.chunkTables[oldest].buf)
		delete(c.chunkTables, oldest)
	}
	t := c.alloc(2 * len(table))
	c.upload(t.ptr, unsafe.Pointer(&table[0]), 8*len(table))
	if c.err != nil {
		return Buffer{}, 0
	}
	if c.chunkTables == nil {
		c.chunkTables = map[string]*chunkTableEntry{}
	}
	c.chunkTables[strings.Clone(key)] = &chunkTableEntry{buf: t, used: c.chunkUses}
	return t, n
}

// AdamWStep applies one AdamW update to every p[i] from g[i] with moments
// m[i], v[i], as AdamW.Step does on the CPU, in one launch; step counts
// from 1.
func (c *CUDA) AdamWStep(o *AdamW, step int, p, g, m, v []Buffer) {
	s := o.scalars(step)
	c.post(func() {
		if len(g) != len(p) || len(m) != len(p) || len(v) != len(p) {
			c.fail(fmt.Errorf("nn: CUDA AdamW step over %d tensors with %d gradients and %d, %d moments", len(p), len(g), len(m), len(v)))
			return
		}
		c.launchOverChunks("adamw_chunks", [][]Buffer{p, g, m, v}, s.b1, s.c1, s.b2, s.c2, s.eps, s.decay, s.stepSize, s.bc2Sqrt)
	})
}

// launchOverChunks launches kernel name with one block per chunk of the
// table over columns (see chunkTable), the table first, then args. Run on
// the CUDA thread.
func (c *CUDA) launchOverChunks(name string, columns [][]Buffer, args ...any) {
	if table, n := c.chunkTable(columns...); n > 0 {
		c.launch(name, n, elementwiseBlock, append([]any{table}, args...)...)
	}
}

// SumSquares returns Σ x² over every buffer in xs, accumulated in
// float64, in one launch and one copy back (gradient-norm clipping).
func (c *CUDA) SumSquares(xs []Buffer) (float64, error) {
	var sums []float64
	var err error
	c.do(func() {
		table, n := c.chunkTable(xs)
		if n > 0 {
			sums = make([]float64, n)
			sb := c.alloc(2 * n)
			c.launch("sum_squares_chunks", n, rowBlockMax, sb, table)
			c.download(unsafe.Pointer(&sums[0]), sb.ptr, 8*n)
			c.release(sb)
		}
		err = c.err
	})
	var total float64
	for _, v := range sums {
		total += v
	}
	return total, err
}

// ScaleAll multiplies every buffer in xs by s in place, in one launch.
func (c *CUDA) ScaleAll(xs []Buffer, s float32) {
	c.post(func() { c.launchOverChunks("scale_chunks", [][]Buffer{xs}, s) })
}

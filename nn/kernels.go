package nn

import (
	"math"
	"runtime"
)

// MatmulForward computes out = inp·wᵀ (+ bias), PyTorch's nn.Linear.
// inp: (N, C); w: (OC, C); bias: (OC) or nil; out: (N, OC), overwritten.
func MatmulForward(be Backend, out, inp, w, bias []float32, N, C, OC int) {
	mustLen("MatmulForward", "out", len(out), N*OC)
	mustLen("MatmulForward", "inp", len(inp), N*C)
	mustLen("MatmulForward", "w", len(w), OC*C)
	be.Sgemm(false, true, N, OC, C, 1, inp, C, w, C, 0, out, OC)
	if bias != nil {
		parallelFor(N, 64, func(lo, hi int) {
			for n := lo; n < hi; n++ {
				row := out[n*OC : (n+1)*OC]
				for o, b := range bias {
					row[o] += b
				}
			}
		})
	}
}

// MatmulBackward adds into dinp, dw and dbias; any of them may be nil.
func MatmulBackward(be Backend, dinp, dw, dbias, dout, inp, w []float32, N, C, OC int) {
	if dinp != nil {
		be.Sgemm(false, false, N, C, OC, 1, dout, OC, w, C, 1, dinp, C)
	}
	if dw != nil {
		be.Sgemm(true, false, OC, C, N, 1, dout, OC, inp, C, 1, dw, C)
	}
	if dbias != nil {
		for n := 0; n < N; n++ {
			row := dout[n*OC : (n+1)*OC]
			for o := range dbias {
				dbias[o] += row[o]
			}
		}
	}
}

// NormLinearBackward is the backward of Linear(RMSNorm(x, nw), w, bias)
// for an x that takes no gradient: with x̂ = x·rstd (into xhat, N×C) and
// M = doutᵀ·x̂ (into m, OC×C), dw += M·diag(nw), dnw_c += Σ_o w[o,c]·M[o,c]
// (summed in float64) and dbias += Σ_n dout[n]. One product where the
// composed backward takes two (doutᵀ·in, dout·w).
func NormLinearBackward(be Backend, dw, dnw, dbias, dout, x, rstd, w, nw, xhat, m []float32, N, C, OC int) {
	parallelFor(N, 16, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			r := rstd[n]
			for i, v := range x[n*C : (n+1)*C] {
				xhat[n*C+i] = v * r
			}
		}
	})
	be.Sgemm(true, false, OC, C, N, 1, dout, OC, xhat, C, 0, m, C)
	parallelFor(OC, 16, func(lo, hi int) {
		for o := lo; o < hi; o++ {
			row, d := m[o*C:(o+1)*C], dw[o*C:(o+1)*C]
			for c, v := range row {
				d[c] += v * nw[c]
			}
		}
	})
	// Each worker sums its own columns over every o, in o's order, so the
	// split changes nothing in the result.
	sums := make([]float64, C)
	parallelFor(C, 64, func(lo, hi int) {
		part := sums[lo:hi]
		for o := 0; o < OC; o++ {
			row, wr := m[o*C+lo:o*C+hi], w[o*C+lo:o*C+hi]
			for c, v := range row {
				part[c] += float64(wr[c]) * float64(v)
			}
		}
		for c, v := range part {
			dnw[lo+c] += float32(v)
		}
	})
	if dbias != nil {
		for n := 0; n < N; n++ {
			row := dout[n*OC : (n+1)*OC]
			for o := range dbias {
				dbias[o] += row[o]
			}
		}
	}
}

// EmbeddingForward gathers rows: out[n] = table[ids[n]].
// table: (V, D); ids: (N); out: (N, D).
func EmbeddingForward(out, table []float32, ids []int32, D int) {
	V := len(table) / D
	for n, id := range ids {
		if id < 0 || int(id) >= V {
			panic("nn: EmbeddingForward: id out of range")
		}
		copy(out[n*D:(n+1)*D], table[int(id)*D:(int(id)+1)*D])
	}
}

// EmbeddingBackward adds dout's rows into dtable at ids.
func EmbeddingBackward(dtable, dout []float32, ids []int32, D int) {
	for n, id := range ids {
		dst, src := dtable[int(id)*D:(int(id)+1)*D], dout[n*D:(n+1)*D]
		for i := range dst {
			dst[i] += src[i]
		}
	}
}

// RMSNormForward scales each row of x to unit root mean square, then by w
// (T5LayerNorm: no mean subtraction, no bias). The mean of squares is
// accumulated in float64. x, out: (N, D); w: (D); rstd: (N), saved for
// backward. reference: HF modeling_t5.py T5LayerNorm.
func RMSNormForward(out, rstd, x, w []float32, N, D int, eps float32) {
	parallelFor(N, 16, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			row := x[n*D : (n+1)*D]
			var ss float64
			for _, v := range row {
				ss += float64(v) * float64(v)
			}
			r := float32(1 / math.Sqrt(float64(float32(ss/float64(D))+eps)))
			rstd[n] = r
			o := out[n*D : (n+1)*D]
			for i, v := range row {
				o[i] = w[i] * (v * r)
			}
		}
	})
}

// RMSNormBackward adds into dx and dw (either may be nil).
func RMSNormBackward(dx, dw, dout, x, w, rstd []float32, N, D int) {
	if dx != nil {
		parallelFor(N, 16, func(lo, hi int) {
			for n := lo; n < hi; n++ {
				row, g, r := x[n*D:(n+1)*D], dout[n*D:(n+1)*D], rstd[n]
				var dot float64 // Σ dxhat·xhat
				for i := range row {
					dot += float64(g[i]*w[i]) * float64(row[i]*r)
				}
				mean := float32(dot / float64(D))
				d := dx[n*D : (n+1)*D]
				for i := range row {
					d[i] += r * (g[i]*w[i] - row[i]*r*mean)
				}
			}
		})
	}
	if dw != nil {
		for n := 0; n < N; n++ {
			row, g, r := x[n*D:(n+1)*D], dout[n*D:(n+1)*D], rstd[n]
			for i := range dw {
				dw[i] += g[i] * row[i] * r
			}
		}
	}
}

// AttentionForward is T5's multi-head attention core: for each batch b
// and head h, probs = softmax(q·kᵀ + bias + mask) with no 1/√K scaling
// (T5 folds it into the initialisation), then out = probs·v.
//
// q: (B, Tq, H·K); k, v: (B, Tk, H·K); bias: (H, Tq, Tk) or nil, shared by
// the batch; keyMask: (B, Tk), false for padded keys, or nil; causal masks
// keys after the query (query i sits at position qOffset+i, key j at j).
// probs: (B, H, Tq, Tk), saved for backward; out: (B, Tq, H·K). drop,
// when not nil, is (B, H, Tq, Tk) of dropout scales applied to probs
// before they weight v (0 or 1/(1−p)); probs keeps the undropped values,
// and scratch holds the dropped ones, (Tq, Tk) per goroutine: the (b, h)
// pairs are cut into at most len(scratch)/(Tq·Tk) parts (any number without
// dropout), each on its own goroutine, its products on be.
// reference: HF modeling_t5.py T5Attention.forward.
func AttentionForward(be Backend, out, probs, drop, scratch, q, k, v, bias []float32, keyMask []bool, causal bool, qOffset, B, Tq, Tk, H, K int) {
	HK := H * K
	parts := runtime.GOMAXPROCS(0)
	if drop != nil {
		parts = len(scratch) / (Tq * Tk)
	}
	parallelParts(B*H, attentionGrain(Tq, Tk, K), parts, func(part, lo, hi int) {
		for bh := lo; bh < hi; bh++ {
			b, h := bh/H, bh%H
			p := probs[(b*H+h)*Tq*Tk : (b*H+h+1)*Tq*Tk]
			qbh, kbh, vbh := q[b*Tq*HK+h*K:], k[b*Tk*HK+h*K:], v[b*Tk*HK+h*K:]
			headGemm(be, false, true, Tq, Tk, K, qbh, HK, kbh, HK, 0, p, Tk)
			for i := 0; i < Tq; i++ {
				row := p[i*Tk : (i+1)*Tk]
				for j := range row {
					if (keyMask != nil && !keyMask[b*Tk+j]) || (causal && j > qOffset+i) {
						row[j] = float32(math.Inf(-1))
					} else if bias != nil {
						row[j] += bias[(h*Tq+i)*Tk+j]
					}
				}
			}
			softmaxRows(p, p, Tq, Tk, nil, nil)
			w := p
			if drop != nil {
				w = scratch[part*Tq*Tk : (part+1)*Tq*Tk]
				d := drop[(b*H+h)*Tq*Tk : (b*H+h+1)*Tq*Tk]
				for i := range w {
					w[i] = p[i] * d[i]
				}
			}
			headGemm(be, false, false, Tq, K, Tk, w, Tk, vbh, HK, 0, out[b*Tq*HK+h*K:], HK)
		}
	})
}

// headGemmMax is the largest of attention's per-head products (m·n·k)
// that headGemm gives to smallGemm; see BenchmarkHeadGemm.
const headGemmMax = 1 << 15

// headGemm is one batch row and head's product in attention: c =
// op(a)·op(b) + beta·c, beta 0 or 1. A small one runs on smallGemm: attention
// calls thousands of them a step from every core at once, and each call
// into OpenBLAS locks its buffer pool, so they queued on each other there.
// The choice reads the head's shape alone, never the batch's size, so a
// trial packed or alone, a row decoded in any group, gets the same
// arithmetic.
func headGemm(be Backend, transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if ProductPrecision(be) != FP32 { // the backend's products round their operands: smallGemm would not
		be.Sgemm(transA, transB, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
		return
	}
	if m*n*k <= headGemmMax && (beta == 0 || beta == 1) && smallGemm(transA, transB, m, n, k, a, lda, b, ldb, beta == 1, c, ldc) {
		return
	}
	be.Sgemm(transA, transB, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
}

// softmaxRows writes to out each of in's rows' softmax (rows × cols;
// masked scores −∞; out may be in): e^(s−max) by expf (a few float32
// ulps, as PyTorch's vectorised exp), summed in float64, and, where sums
// and maxes are not nil, each row's sum and largest score. Where the CPU
// has AVX2 the rows go eight lanes at a time, bit for bit as
// softmaxRowsGo: attention makes millions of rows a few dozen scores long
// a step, and cross-entropy one a vocabulary long per target token, where
// float64 math.Exp per element was a sixteenth of an LST trial's CPU
// time.
func softmaxRows(out, in []float32, rows, cols int, sums []float64, maxes []float32) {
	if !softmaxRowsVector(out, in, rows, cols, sums, maxes) {
		softmaxRowsGo(out, in, rows, cols, sums, maxes)
	}
}

func softmaxRowsGo(out, in []float32, rows, cols int, sums []float64, maxes []float32) {
	for i := 0; i < rows; i++ {
		row, o := in[i*cols:(i+1)*cols], out[i*cols:(i+1)*cols]
		mx := float32(math.Inf(-1))
		for _, s := range row {
			mx = max(mx, s)
		}
		var sum float64
		for j, s := range row {
			e := float32(0)
			if !math.IsInf(float64(s), -1) {
				e = expf(s - mx)
			}
			o[j] = e
			sum += float64(e)
		}
		inv := float32(1 / sum)
		for j := range o {
			o[j] *= inv
		}
		if sums != nil {
			sums[i], maxes[i] = sum, mx
		}
	}
}

// attentionGrain is how many (b, h) pairs make a goroutine's worth of
// attention: about 32k multiply-adds.
func attentionGrain(Tq, Tk, K int) int { return max(1, (1<<15)/(2*Tq*Tk*K)) }

// AttentionBackward adds into dq, dk, dv and dbias (any may be nil; dbias
// sums over the batch). drop is the forward's dropout scales or nil.
// scratch: 2·Tq·Tk of working memory per goroutine; the heads are cut into
// at most len(scratch)/(2·Tq·Tk) parts.
func AttentionBackward(be Backend, dq, dk, dv, dbias, scratch, dout, probs, drop, q, k, v []float32, B, Tq, Tk, H, K int) {
	HK := H * K
	// By heads: dbias sums over the batch, so each head's batch stays in
	// one goroutine and in b's order.
	parallelParts(H, max(1, attentionGrain(Tq, Tk, K)/B), len(scratch)/(2*Tq*Tk), func(part, lo, hi int) {
		ds, pd := scratch[2*part*Tq*Tk:(2*part+1)*Tq*Tk], scratch[(2*part+1)*Tq*Tk:(2*part+2)*Tq*Tk]
		for h := lo; h < hi; h++ {
			for b := 0; b < B; b++ {
				p := probs[(b*H+h)*Tq*Tk : (b*H+h+1)*Tq*Tk]
				var d []float32
				if drop != nil {
					d = drop[(b*H+h)*Tq*Tk : (b*H+h+1)*Tq*Tk]
				}
				qbh, kbh, vbh, dobh := q[b*Tq*HK+h*K:], k[b*Tk*HK+h*K:], v[b*Tk*HK+h*K:], dout[b*Tq*HK+h*K:]
				// d(dropped probs) = dout·vᵀ
				headGemm(be, false, true, Tq, Tk, K, dobh, HK, vbh, HK, 0, ds, Tk)
				if dv != nil {
					w := p
					if d != nil {
						for i := range pd {
							pd[i] = p[i] * d[i]
						}
						w = pd
					}
					headGemm(be, true, false, Tk, K, Tq, w, Tk, dobh, HK, 1, dv[b*Tk*HK+h*K:], HK)
				}
				// Softmax backward on each row: ds = p ⊙ (dp − Σ p·dp).
				for i := 0; i < Tq; i++ {
					row, pr := ds[i*Tk:(i+1)*Tk], p[i*Tk:(i+1)*Tk]
					if d != nil {
						dr := d[i*Tk : (i+1)*Tk]
						for j := range row {
							row[j] *= dr[j]
						}
					}
					var dot float32
					for j := range row {
						dot += pr[j] * row[j]
					}
					for j := range row {
						row[j] = pr[j] * (row[j] - dot)
					}
				}
				if dq != nil {
					headGemm(be, false, false, Tq, K, Tk, ds, Tk, kbh, HK, 1, dq[b*Tq*HK+h*K:], HK)
				}
				if dk != nil {
					headGemm(be, true, false, Tk, K, Tq, ds, Tk, qbh, HK, 1, dk[b*Tk*HK+h*K:], HK)
				}
				if dbias != nil {
					dst := dbias[h*Tq*Tk : (h+1)*Tq*Tk]
					for i := range dst {
						dst[i] += ds[i]
					}
				}
			}
		}
	})
}

// RelativeBucket maps a relative position (key − query) to T5's bucket.
// reference: HF modeling_t5.py T5Attention._relative_position_bucket.
func RelativeBucket(rel int, bidirectional bool, numBuckets, maxDistance int) int {
	ret := 0
	n := rel
	if bidirectional {
		numBuckets /= 2
		if n > 0 {
			ret += numBuckets
		}
		if n < 0 {
			n = -n
		}
	} else {
		n = max(-n, 0)
	}
	maxExact := numBuckets / 2
	if n < maxExact {
		return ret + n
	}
	// HF evaluates the logarithm in float32 and truncates.
	f := float32(math.Log(float64(float32(n)/float32(maxExact)))) / float32(math.Log(float64(maxDistance)/float64(maxExact))) * float32(numBuckets-maxExact)
	return ret + min(maxExact+int(f), numBuckets-1)
}

// PositionBiasForward gathers T5's relative position bias.
// table: (numBuckets, H); buckets: (Tq·Tk) bucket per (i, j); out: (H, Tq, Tk).
func PositionBiasForward(out, table []float32, buckets []int32, H, Tq, Tk int) {
	for h := 0; h < H; h++ {
		for ij, bk := range buckets {
			out[h*Tq*Tk+ij] = table[int(bk)*H+h]
		}
	}
}

// PositionBiasBackward adds dout into dtable.
func PositionBiasBackward(dtable, dout []float32, buckets []int32, H, Tq, Tk int) {
	for h := 0; h < H; h++ {
		for ij, bk := range buckets {
			dtable[int(bk)*H+h] += dout[h*Tq*Tk+ij]
		}
	}
}

// elementwiseGrain is the least number of elements an elementwise op
// (ReLU, Add, Scale) gives a goroutine.
const elementwiseGrain = 1 << 14

// ReLUForward: out = max(x, 0).
func ReLUForward(out, x []float32) {
	parallelFor(len(x), elementwiseGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			out[i] = max(x[i], 0)
		}
	})
}

// ReLUBackward adds dout where x > 0 into dx; x may be ReLU's output,
// which is > 0 in the same places.
func ReLUBackward(dx, dout, x []float32) {
	parallelFor(len(x), elementwiseGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			// A mask instead of a branch: the sign of x is a coin toss, and
			// the mispredicted branch was 4 % of a LoRA step. Where x ≤ 0
			// it adds +0, which leaves dx as it was (but for −0).
			var keep uint32
			if x[i] > 0 {
				keep = math.MaxUint32
			}
			dx[i] += math.Float32frombits(math.Float32bits(dout[i]) & keep)
		}
	})
}

// geluC is √(2/π), geluA the cubic term's coefficient and geluC3 its
// slope's (exact as a constant: 0.134145, as the C kernel writes it).
const (
	geluC  = 0.7978845608028654
	geluA  = 0.044715
	geluC3 = 3 * geluA
)

// GeluNewForward is the tanh approximation of GELU, HF's gelu_new:
// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), in float32 with tanhf (as
// PyTorch's float32 kernel), eight lanes at a time where the CPU has AVX2
// (bit for bit the Go loop's), where float64 math.Tanh per element took
// 15 ns on unit-scale inputs.
func GeluNewForward(out, x []float32) {
	parallelFor(len(x), 1<<13, func(lo, hi int) {
		if !geluForwardVector(out, x, lo, hi) {
			geluForwardGo(out, x, lo, hi)
		}
	})
}

// geluTanh is tanh(√(2/π)·(x + 0.044715·x³)), which GELU's forward and
// backward both take.
func geluTanh(v float32) float32 { return tanhf(geluC * (v + geluA*v*v*v)) }

func geluForwardGo(out, x []float32, lo, hi int) {
	for i := lo; i < hi; i++ {
		v := x[i]
		out[i] = 0.5 * v * (1 + geluTanh(v))
	}
}

// GeluNewBackward adds into dx.
func GeluNewBackward(dx, dout, x []float32) {
	parallelFor(len(x), 1<<13, func(lo, hi int) {
		if !geluBackwardVector(dx, dout, x, lo, hi) {
			geluBackwardGo(dx, dout, x, lo, hi)
		}
	})
}

func geluBackwardGo(dx, dout, x []float32, lo, hi int) {
	for i := lo; i < hi; i++ {
		v := x[i]
		t := geluTanh(v)
		d := 0.5*(1+t) + 0.5*v*(1-t*t)*geluC*(1+geluC3*v*v)
		dx[i] += d * dout[i]
	}
}

// SigmoidForward: out = 1/(1+e^−x).
func SigmoidForward(out, x []float32) {
	for i, v := range x {
		out[i] = float32(1 / (1 + math.Exp(-float64(v))))
	}
}

// SigmoidBackward adds dout·y·(1−y) into dx, y the forward output.
func SigmoidBackward(dx, dout, y []float32) {
	for i := range dx {
		dx[i] += dout[i] * y[i] * (1 - y[i])
	}
}

// TanhForward: out = tanh(x).
func TanhForward(out, x []float32) {
	for i, v := range x {
		out[i] = float32(math.Tanh(float64(v)))
	}
}

// TanhBackward adds dout·(1−y²) into dx, y the forward output.
func TanhBackward(dx, dout, y []float32) {
	for i := range dx {
		dx[i] += dout[i] * (1 - y[i]*y[i])
	}
}

// CrossEntropyForward computes, per row, −log softmax(logits)[target] and
// returns their mean over rows whose target is not ignore, accumulated in
// float64, with the count of such rows. logits: (N, V); targets: (N).
// probs: (N, V) receives the softmax, saved for backward.
func CrossEntropyForward(probs, logits []float32, targets []int32, N, V int, ignore int32) (float64, int) {
	losses, sums, maxes := make([]float64, N), make([]float64, N), make([]float32, N)
	parallelFor(N, 4, func(lo, hi int) {
		softmaxRows(probs[lo*V:hi*V], logits[lo*V:hi*V], hi-lo, V, sums[lo:hi], maxes[lo:hi])
		for n := lo; n < hi; n++ {
			if t := targets[n]; t != ignore {
				if t < 0 || int(t) >= V {
					panic("nn: CrossEntropyForward: target out of range")
				}
				losses[n] = math.Log(sums[n]) - float64(logits[n*V+int(t)]-maxes[n])
			}
		}
	})
	return meanLoss(losses, targets, ignore)
}

// meanLoss averages the per-row losses of rows not ignored, in float64,
// and counts them (0, 0 when every row is ignored).
func meanLoss(losses []float64, targets []int32, ignore int32) (float64, int) {
	var total float64
	count := 0
	for n, t := range targets {
		if t != ignore {
			total += losses[n]
			count++
		}
	}
	if count == 0 {
		return 0, 0
	}
	return total / float64(count), count
}

// CrossEntropyBackward adds into dlogits the gradient of dloss·mean loss:
// (softmax − onehot)·dloss/count on rows not ignored.
func CrossEntropyBackward(dlogits, probs []float32, targets []int32, N, V int, ignore int32, dloss float32, count int) {
	if count == 0 {
		return
	}
	scale := dloss / float32(count)
	parallelFor(N, 4, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			t := targets[n]
			if t == ignore {
				continue
			}
			d, p := dlogits[n*V:(n+1)*V], probs[n*V:(n+1)*V]
			for i := range d {
				d[i] += p[i] * scale
			}
			d[t] -= scale
		}
	})
}

// GRUGateForward combines a GRU cell's two projections into the new state,
// with PyTorch's gate order (r, z, n):
// r = σ(gi_r + gh_r), z = σ(gi_z + gh_z), n = tanh(gi_n + r·gh_n),
// h' = (1−z)·n + z·h. gi, gh: (N, 3R) = x·W_ihᵀ + b_ih and h·W_hhᵀ + b_hh;
// h, out: (N, R); gates: (N, 3R) saves r, z, n for backward.
// reference: torch.nn.GRUCell.
func GRUGateForward(out, gates, gi, gh, h []float32, N, R int) {
	parallelFor(N, 8, func(lo, hi int) {
		if !gruGateRows(out, gates, gi, gh, h, lo, hi, R) {
			gruGateRowsGo(out, gates, gi, gh, h, lo, hi, R)
		}
	})
}

// gruGateRowsGo is GRUGateForward's rows lo to hi, one element at a time:
// the reference that the vector kernel (gruGateRows) matches bit for bit.
func gruGateRowsGo(out, gates, gi, gh, h []float32, lo, hi, R int) {
	for n := lo; n < hi; n++ {
		for j := 0; j < R; j++ {
			a, b := n*3*R, n*R
			r := sigmoid(gi[a+j] + gh[a+j])
			z := sigmoid(gi[a+R+j] + gh[a+R+j])
			c := tanhf(gi[a+2*R+j] + r*gh[a+2*R+j])
			gates[a+j], gates[a+R+j], gates[a+2*R+j] = r, z, c
			out[b+j] = (1-z)*c + z*h[b+j]
		}
	}
}

// GRUGateBackward adds into dgi, dgh and dh (any may be nil).
func GRUGateBackward(dgi, dgh, dh, dout, gates, gh, h []float32, N, R int) {
	parallelFor(N, 8, func(lo, hi int) {
		if !gruGateBackRows(dgi, dgh, dh, dout, gates, gh, h, lo, hi, R) {
			gruGateBackRowsGo(dgi, dgh, dh, dout, gates, gh, h, lo, hi, R)
		}
	})
}

// gruGateBackRowsGo is GRUGateBackward's rows lo to hi, one element at a
// time: the reference that gruGateBackRows matches bit for bit.
func gruGateBackRowsGo(dgi, dgh, dh, dout, gates, gh, h []float32, lo, hi, R int) {
	for n := lo; n < hi; n++ {
		for j := 0; j < R; j++ {
			a, b := n*3*R, n*R
			r, z, c := gates[a+j], gates[a+R+j], gates[a+2*R+j]
			d := dout[b+j]
			dc := d * (1 - z) * (1 - c*c) // through tanh
			dz := d * (h[b+j] - c) * z * (1 - z)
			dr := dc * gh[a+2*R+j] * r * (1 - r)
			if dgi != nil {
				dgi[a+j] += dr
				dgi[a+R+j] += dz
				dgi[a+2*R+j] += dc
			}
			if dgh != nil {
				dgh[a+j] += dr
				dgh[a+R+j] += dz
				dgh[a+2*R+j] += dc * r
			}
			if dh != nil {
				dh[b+j] += d * z
			}
		}
	}
}

// LSTMGateForward combines an LSTM cell's summed projections g = gi + gh,
// (N, 4R) in PyTorch's order (i, f, g, o), with the previous cell c into
// c' = σ(f)·c + σ(i)·tanh(g) and h' = σ(o)·tanh(c'). acts: (N, 4R) saves
// the activated gates; tc: (N, R) saves tanh(c'). reference:
// torch.nn.LSTMCell.
func LSTMGateForward(hOut, cOut, acts, tc, g, c []float32, N, R int) {
	parallelFor(N, 8, func(lo, hi int) {
		if !lstmGateRows(hOut, cOut, acts, tc, g, c, lo, hi, R) {
			lstmGateRowsGo(hOut, cOut, acts, tc, g, c, lo, hi, R)
		}
	})
}

// lstmGateRowsGo is LSTMGateForward's rows lo to hi, one element at a
// time: the reference that lstmGateRows matches bit for bit.
func lstmGateRowsGo(hOut, cOut, acts, tc, g, c []float32, lo, hi, R int) {
	for n := lo; n < hi; n++ {
		for j := 0; j < R; j++ {
			a, b := n*4*R, n*R
			i := sigmoid(g[a+j])
			f := sigmoid(g[a+R+j])
			gg := tanhf(g[a+2*R+j])
			o := sigmoid(g[a+3*R+j])
			acts[a+j], acts[a+R+j], acts[a+2*R+j], acts[a+3*R+j] = i, f, gg, o
			cn := f*c[b+j] + i*gg
			cOut[b+j] = cn
			t := tanhf(cn)
			tc[b+j] = t
			hOut[b+j] = o * t
		}
	}
}

// LSTMGateBackward adds into dg and dc (either may be nil) from the
// gradients of h' and c' (dcOut may be nil).
func LSTMGateBackward(dg, dc, dhOut, dcOut, acts, tc, c []float32, N, R int) {
	parallelFor(N, 8, func(lo, hi int) {
		for n := lo; n < hi; n++ {
			for j := 0; j < R; j++ {
				a, b := n*4*R, n*R
				i, f, gg, o := acts[a+j], acts[a+R+j], acts[a+2*R+j], acts[a+3*R+j]
				t := tc[b+j]
				dcn := dhOut[b+j] * o * (1 - t*t)
				if dcOut != nil {
					dcn += dcOut[b+j]
				}
				if dg != nil {
					dg[a+j] += dcn * gg * i * (1 - i)
					dg[a+R+j] += dcn * c[b+j] * f * (1 - f)
					dg[a+2*R+j] += dcn * i * (1 - gg*gg)
					dg[a+3*R+j] += dhOut[b+j] * t * o * (1 - o)
				}
				if dc != nil {
					dc[b+j] += dcn * f
				}
			}
		}
	})
}

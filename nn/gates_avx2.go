//go:build cgo && amd64

package nn

// #include "gates_avx2.h"
import "C"

import "unsafe"

// haveAVX2 is whether this CPU runs gates_avx2.c's kernels; it does not
// change after start.
var haveAVX2 = C.rs_have_avx2() != 0

// vectorRows reports whether rows lo to hi of width R go to the vector
// kernels: the CPU has AVX2, R is a multiple of 8 and there are rows.
func vectorRows(lo, hi, R int) bool { return haveAVX2 && R%8 == 0 && hi > lo }

// cFloats is s's first element for C, or NULL for a nil s.
func cFloats(s []float32) *C.float {
	if s == nil {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&s[0]))
}

// gruGateRows is GRUGateForward's rows lo to hi in eight lanes at a time
// (bit for bit the Go loop's result), when vectorRows says so; it reports
// false, doing nothing, otherwise.
func gruGateRows(out, gates, gi, gh, h []float32, lo, hi, R int) bool {
	if !vectorRows(lo, hi, R) {
		return false
	}
	C.rs_gru_gate_forward(cFloats(out), cFloats(gates), cFloats(gi), cFloats(gh), cFloats(h), C.int64_t(lo), C.int64_t(hi), C.int64_t(R))
	return true
}

// lstmGateRows is LSTMGateForward's rows lo to hi as gruGateRows is
// GRUGateForward's.
func lstmGateRows(hOut, cOut, acts, tc, g, c []float32, lo, hi, R int) bool {
	if !vectorRows(lo, hi, R) {
		return false
	}
	C.rs_lstm_gate_forward(cFloats(hOut), cFloats(cOut), cFloats(acts), cFloats(tc), cFloats(g), cFloats(c), C.int64_t(lo), C.int64_t(hi), C.int64_t(R))
	return true
}

// gruGateBackRows is GRUGateBackward's rows lo to hi as gruGateRows is
// GRUGateForward's; dgi, dgh and dh may be nil.
func gruGateBackRows(dgi, dgh, dh, dout, gates, gh, h []float32, lo, hi, R int) bool {
	if !vectorRows(lo, hi, R) {
		return false
	}
	C.rs_gru_gate_backward(cFloats(dgi), cFloats(dgh), cFloats(dh), cFloats(dout), cFloats(gates), cFloats(gh), cFloats(h),
		C.int64_t(lo), C.int64_t(hi), C.int64_t(R))
	return true
}

// adamwRows is AdamW.Step's update of elements lo to hi eight lanes at a
// time (bit for bit the Go loop's result) where the CPU has AVX2; it
// reports false, doing nothing, otherwise.
func adamwRows(p, g, m, v []float32, lo, hi int, s adamwScalars) bool {
	if !haveAVX2 || hi <= lo {
		return false
	}
	C.rs_adamw_rows(cFloats(p), cFloats(g), cFloats(m), cFloats(v), C.int64_t(lo), C.int64_t(hi), C.float(s.b1), C.float(s.c1),
		C.float(s.b2), C.float(s.c2), C.float(s.bc2Sqrt), C.float(s.eps), C.float(s.decay), C.float(s.stepSize))
	return true
}

// softmaxRowsVector is softmaxRowsGo eight lanes at a time (bit for bit
// its result) where the CPU has AVX2; it reports false, doing nothing,
// otherwise.
func softmaxRowsVector(out, in []float32, rows, cols int, sums []float64, maxes []float32) bool {
	if !haveAVX2 || rows == 0 || cols == 0 {
		return false
	}
	_, _ = out[rows*cols-1], in[rows*cols-1]
	var cSums *C.double
	var cMaxes *C.float
	if sums != nil {
		_, _ = sums[rows-1], maxes[rows-1]
		cSums, cMaxes = (*C.double)(unsafe.Pointer(&sums[0])), cFloats(maxes)
	}
	C.rs_softmax_rows(cFloats(out), cFloats(in), C.int64_t(rows), C.int64_t(cols), cSums, cMaxes)
	return true
}

// geluForwardVector is geluForwardGo eight lanes at a time (bit for bit
// its result) where the CPU has AVX2; it reports false, doing nothing,
// otherwise.
func geluForwardVector(out, x []float32, lo, hi int) bool {
	if !haveAVX2 || hi <= lo {
		return false
	}
	_, _ = out[hi-1], x[hi-1]
	C.rs_gelu_forward(cFloats(out), cFloats(x), C.int64_t(lo), C.int64_t(hi))
	return true
}

// geluBackwardVector is geluBackwardGo as geluForwardVector is
// geluForwardGo.
func geluBackwardVector(dx, dout, x []float32, lo, hi int) bool {
	if !haveAVX2 || hi <= lo {
		return false
	}
	_, _, _ = dx[hi-1], dout[hi-1], x[hi-1]
	C.rs_gelu_backward(cFloats(dx), cFloats(dout), cFloats(x), C.int64_t(lo), C.int64_t(hi))
	return true
}

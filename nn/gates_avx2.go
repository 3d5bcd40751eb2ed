//go:build cgo && amd64

package nn

// #include "gates_avx2.h"
import "C"

import "unsafe"

// haveAVX2 is whether this CPU runs gates_avx2.c's kernels; it does not
// change after start.
var haveAVX2 = C.rs_have_avx2() != 0

// gruGateRows is GRUGateForward's rows lo to hi in eight lanes at a time
// (bit for bit the Go loop's result), when the CPU has AVX2 and R is a
// multiple of 8; it reports false, doing nothing, otherwise.
func gruGateRows(out, gates, gi, gh, h []float32, lo, hi, R int) bool {
	if !haveAVX2 || R%8 != 0 || hi <= lo {
		return false
	}
	C.rs_gru_gate_forward((*C.float)(unsafe.Pointer(&out[0])), (*C.float)(unsafe.Pointer(&gates[0])),
		(*C.float)(unsafe.Pointer(&gi[0])), (*C.float)(unsafe.Pointer(&gh[0])), (*C.float)(unsafe.Pointer(&h[0])),
		C.int64_t(lo), C.int64_t(hi), C.int64_t(R))
	return true
}

// lstmGateRows is LSTMGateForward's rows lo to hi as gruGateRows is
// GRUGateForward's.
func lstmGateRows(hOut, cOut, acts, tc, g, c []float32, lo, hi, R int) bool {
	if !haveAVX2 || R%8 != 0 || hi <= lo {
		return false
	}
	f := func(s []float32) *C.float { return (*C.float)(unsafe.Pointer(&s[0])) }
	C.rs_lstm_gate_forward(f(hOut), f(cOut), f(acts), f(tc), f(g), f(c), C.int64_t(lo), C.int64_t(hi), C.int64_t(R))
	return true
}

// gruGateBackRows is GRUGateBackward's rows lo to hi as gruGateRows is
// GRUGateForward's; dgi, dgh and dh may be nil.
func gruGateBackRows(dgi, dgh, dh, dout, gates, gh, h []float32, lo, hi, R int) bool {
	if !haveAVX2 || R%8 != 0 || hi <= lo {
		return false
	}
	f := func(s []float32) *C.float {
		if s == nil {
			return nil
		}
		return (*C.float)(unsafe.Pointer(&s[0]))
	}
	C.rs_gru_gate_backward(f(dgi), f(dgh), f(dh), f(dout), f(gates), f(gh), f(h), C.int64_t(lo), C.int64_t(hi), C.int64_t(R))
	return true
}

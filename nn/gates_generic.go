//go:build !cgo || !amd64

package nn

// gruGateRows has no vector kernel here: GRUGateForward's Go loop runs.
func gruGateRows(out, gates, gi, gh, h []float32, lo, hi, R int) bool { return false }

// lstmGateRows has no vector kernel here: LSTMGateForward's Go loop runs.
func lstmGateRows(hOut, cOut, acts, tc, g, c []float32, lo, hi, R int) bool { return false }

// gruGateBackRows has no vector kernel here: GRUGateBackward's Go loop runs.
func gruGateBackRows(dgi, dgh, dh, dout, gates, gh, h []float32, lo, hi, R int) bool { return false }

// adamwRows has no vector kernel here: AdamW.Step's Go loop runs.
func adamwRows(p, g, m, v []float32, lo, hi int, s adamwScalars) bool { return false }

// softmaxRowsVector has no vector kernel here: softmaxRowsGo runs.
func softmaxRowsVector(out, in []float32, rows, cols int, sums []float64, maxes []float32) bool {
	return false
}

// geluForwardVector has no vector kernel here: geluForwardGo runs.
func geluForwardVector(out, x []float32, lo, hi int) bool { return false }

// geluBackwardVector has no vector kernel here: geluBackwardGo runs.
func geluBackwardVector(dx, dout, x []float32, lo, hi int) bool { return false }

package nn

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// ulps is how many float32 steps got is from the float64 reference.
func ulps(got float32, want float64) float64 {
	w := float32(want)
	if got == w {
		return 0
	}
	step := math.Abs(float64(math.Nextafter32(w, float32(math.Inf(1)))) - float64(w))
	return math.Abs(float64(got)-want) / step
}

// TestFastMath checks expf, sigmoid and tanhf against float64 math on a
// fine grid over their whole range and on random inputs: a few ulps at
// most, exact limits, NaN kept.
func TestFastMath(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	xs := []float32{0, -0.0, 1e-30, -1e-30, 0.625, -0.625, 88.7, -87.3, -103, 9.01, -9.02}
	for x := float32(-110); x < 110; x += 0.000731 {
		xs = append(xs, x)
	}
	for range 200000 {
		xs = append(xs, float32(rng.NormFloat64()*4))
	}
	worst := map[string]float64{}
	for _, x := range xs {
		for name, c := range map[string]struct {
			got  float32
			want float64
		}{
			"expf":    {expf(x), math.Exp(float64(x))},
			"sigmoid": {sigmoid(x), 1 / (1 + math.Exp(-float64(x)))},
			"tanhf":   {tanhf(x), math.Tanh(float64(x))},
		} {
			if c.want < 1.2e-38 && math.Abs(float64(c.got)-c.want) < 1.2e-38 {
				continue // results below float32's normal range: absolute error only
			}
			if u := ulps(c.got, c.want); u > worst[name] {
				worst[name] = u
				if u > 4 {
					t.Errorf("%s(%g) = %g, want %g (%.1f ulps)", name, x, c.got, c.want, u)
				}
			}
		}
	}
	t.Logf("worst errors in float32 ulps: %v", worst)
	if !math.IsInf(float64(expf(100)), 1) || expf(-200) != 0 || sigmoid(-200) != 0 || sigmoid(200) != 1 || tanhf(50) != 1 || tanhf(-50) != -1 {
		t.Error("limits")
	}
	if nan := float32(math.NaN()); expf(nan) == expf(nan) || tanhf(nan) == tanhf(nan) {
		t.Error("NaN not kept")
	}
}

func BenchmarkGates(b *testing.B) {
	xs := make([]float32, 4096)
	for i := range xs {
		xs[i] = float32(i)/512 - 4
	}
	var sink float32
	b.Run("float64 math", func(b *testing.B) {
		for range b.N {
			for _, x := range xs {
				sink += float32(1/(1+math.Exp(-float64(x)))) + float32(math.Tanh(float64(x)))
			}
		}
	})
	b.Run("float32 Cephes", func(b *testing.B) {
		for range b.N {
			for _, x := range xs {
				sink += sigmoid(x) + tanhf(x)
			}
		}
	})
	_ = sink
}

// TestGateVectorsMatchGo runs the GRU (forward and backward) and LSTM
// gate kernels' vector paths (gates_avx2.c, where the CPU has AVX2) and the Go loops on the
// same inputs: every gate, state and output bit for bit, over the
// functions' whole range, their thresholds, ±Inf, NaN and subnormals.
// Without a vector kernel the test says so and checks nothing else.
func TestGateVectorsMatchGo(t *testing.T) {
	const N, R = 61, 256
	rng := rand.New(rand.NewPCG(3, 4))
	special := []float32{0, float32(math.Copysign(0, -1)), 1e-40, -1e-40, 0.625, -0.625, 0.62499994, 9.01091, -9.01091, 9.010911,
		44.36, -51.98, 88.72283, -103.97208, -87.33, -87.34, 88.7, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())}
	draw := func() float32 {
		switch rng.IntN(4) {
		case 0:
			return special[rng.IntN(len(special))]
		case 1:
			return float32(rng.Float64()*240 - 120)
		default:
			return float32(rng.NormFloat64() * 3)
		}
	}
	gi, gh, h := make([]float32, N*3*R), make([]float32, N*3*R), make([]float32, N*R)
	for _, s := range [][]float32{gi, gh, h} {
		for i := range s {
			s[i] = draw()
		}
	}
	outV, gatesV := make([]float32, N*R), make([]float32, N*3*R)
	if !gruGateRows(outV, gatesV, gi, gh, h, 0, N, R) {
		t.Log("no vector kernel on this build or CPU: GRUGateForward runs the Go loop")
		return
	}
	outG, gatesG := make([]float32, N*R), make([]float32, N*3*R)
	gruGateRowsGo(outG, gatesG, gi, gh, h, 0, N, R)
	same := func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b) }
	bad := 0
	for i := range gatesG {
		if !same(gatesV[i], gatesG[i]) && bad < 10 {
			bad++
			t.Errorf("gate %d (inputs %g, %g): vector %g (%#x), Go %g (%#x)", i, gi[i], gh[i], gatesV[i], math.Float32bits(gatesV[i]), gatesG[i], math.Float32bits(gatesG[i]))
		}
	}
	for i := range outG {
		if !same(outV[i], outG[i]) && bad < 20 {
			bad++
			t.Errorf("output %d: vector %g, Go %g", i, outV[i], outG[i])
		}
	}
	// LSTM, on the same kind of inputs.
	g, c := make([]float32, N*4*R), make([]float32, N*R)
	for _, s := range [][]float32{g, c} {
		for i := range s {
			s[i] = draw()
		}
	}
	lstm := func(vector bool) [][]float32 {
		hOut, cOut, acts, tc := make([]float32, N*R), make([]float32, N*R), make([]float32, N*4*R), make([]float32, N*R)
		if vector {
			lstmGateRows(hOut, cOut, acts, tc, g, c, 0, N, R)
		} else {
			lstmGateRowsGo(hOut, cOut, acts, tc, g, c, 0, N, R)
		}
		return [][]float32{hOut, cOut, acts, tc}
	}
	lv, lg := lstm(true), lstm(false)
	for k, name := range []string{"h", "c", "gate", "tanh(c)"} {
		for i := range lg[k] {
			if !same(lv[k][i], lg[k][i]) && bad < 25 {
				bad++
				t.Errorf("LSTM %s %d: vector %g, Go %g", name, i, lv[k][i], lg[k][i])
			}
		}
	}
	// GRU backward, into accumulators that already hold values, with each
	// of them absent in turn.
	dout, gates := make([]float32, N*R), make([]float32, N*3*R)
	for _, s := range [][]float32{dout, gates, gh, h} {
		for i := range s {
			s[i] = draw()
		}
	}
	for _, absent := range []string{"", "dgi", "dgh", "dh"} {
		back := func(vector bool) [][]float32 {
			acc := [][]float32{make([]float32, N*3*R), make([]float32, N*3*R), make([]float32, N*R)}
			src := rand.New(rand.NewPCG(5, 6))
			for k, name := range []string{"dgi", "dgh", "dh"} {
				if name == absent {
					acc[k] = nil
				}
				for i := range acc[k] {
					acc[k][i] = float32(src.NormFloat64())
				}
			}
			if vector {
				gruGateBackRows(acc[0], acc[1], acc[2], dout, gates, gh, h, 0, N, R)
			} else {
				gruGateBackRowsGo(acc[0], acc[1], acc[2], dout, gates, gh, h, 0, N, R)
			}
			return acc
		}
		bv, bg := back(true), back(false)
		for k, name := range []string{"dgi", "dgh", "dh"} {
			if (bv[k] == nil) != (bg[k] == nil) || (name == absent) != (bg[k] == nil) {
				t.Fatalf("GRU backward without %q: %s is nil in one result only", absent, name)
			}
			for i := range bg[k] {
				if !same(bv[k][i], bg[k][i]) && bad < 35 {
					bad++
					t.Errorf("GRU backward without %q: %s %d: vector %g, Go %g", absent, name, i, bv[k][i], bg[k][i])
				}
			}
		}
	}
	// Per function, over a fine grid: a gate's pre-activation is gi + gh
	// with gh = 0, so r and z are sigmoid(x) and n = tanh(x).
	var xs []float32
	for x := float32(-110); x < 110; x += 0.0137 {
		xs = append(xs, x)
	}
	xs = append(xs, special...)
	for len(xs)%8 != 0 {
		xs = append(xs, 0)
	}
	M := len(xs) / 8
	gi, gh, h = make([]float32, M*3*8), make([]float32, M*3*8), make([]float32, M*8)
	for n := range M {
		for j := range 8 {
			x := xs[n*8+j]
			gi[n*24+j], gi[n*24+8+j], gi[n*24+16+j] = x, -x, x
		}
	}
	outV, gatesV, outG, gatesG = make([]float32, M*8), make([]float32, M*24), make([]float32, M*8), make([]float32, M*24)
	gruGateRows(outV, gatesV, gi, gh, h, 0, M, 8)
	gruGateRowsGo(outG, gatesG, gi, gh, h, 0, M, 8)
	for i := range gatesG {
		if !same(gatesV[i], gatesG[i]) && bad < 30 {
			bad++
			t.Errorf("grid: gate %d of x = %g: vector %g, Go %g", i, gi[i], gatesV[i], gatesG[i])
		}
	}
}

// TestAdamWKernelMatchesGo: the AVX2 AdamW update gives the Go loop's
// parameters and moments bit for bit, tail included, over large, tiny and
// zero gradients and moments.
func TestAdamWKernelMatchesGo(t *testing.T) {
	const n = 1000 + 5
	rng := rand.New(rand.NewPCG(7, 8))
	draw := func() float32 {
		switch rng.IntN(5) {
		case 0:
			return 0
		case 1:
			return float32(rng.NormFloat64() * 1e-20)
		default:
			return float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(7)-3)))
		}
	}
	p, g, m, v := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range p {
		p[i], g[i], m[i] = draw(), draw(), draw()
		v[i] = float32(math.Abs(float64(draw())))
	}
	o := NewAdamW(3e-4)
	o.WeightDecay = 0.01
	for step := 1; step <= 3; step++ {
		s := o.scalars(step)
		pv, mv, vv := slices.Clone(p), slices.Clone(m), slices.Clone(v)
		if !adamwRows(pv, g, mv, vv, 0, n, s) {
			t.Log("no vector kernel on this build or CPU: AdamW.Step runs the Go loop")
			return
		}
		adamwRowsGo(p, g, m, v, 0, n, s)
		for i := range p {
			if math.Float32bits(pv[i]) != math.Float32bits(p[i]) || math.Float32bits(mv[i]) != math.Float32bits(m[i]) || math.Float32bits(vv[i]) != math.Float32bits(v[i]) {
				t.Fatalf("step %d, element %d (g %g): vector p %g m %g v %g, Go p %g m %g v %g", step, i, g[i], pv[i], mv[i], vv[i], p[i], m[i], v[i])
			}
		}
	}
}

// TestSoftmaxRowsVectorMatchesGo holds the AVX2 softmax to softmaxRowsGo
// bit for bit, over row lengths around the eight lanes, masked (−∞)
// scores, a row masked whole, scores far apart (exp underflows to 0), a
// row's largest score in any lane or the tail, a largest score of zero
// with both signs, and a NaN score, in place and into another slice with
// the rows' sums and maxima; and softmaxRowsGo to a float64 softmax.
func TestSoftmaxRowsVectorMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	inf := float32(math.Inf(-1))
	for _, cols := range []int{1, 3, 7, 8, 9, 16, 22, 64, 67} {
		const rows = 13
		p := make([]float32, rows*cols)
		mx := make([]float32, rows)
		for i := range rows {
			mx[i] = inf
			for j := range cols {
				s := float32(rng.NormFloat64() * 5)
				switch {
				case i == 4: // masked whole, as a padded query's row can be
					s = inf
				case i == 7 && j == 0:
					s = 200 // every other score underflows
				case i == 8 && j == cols-1, i == 9 && j == cols/2:
					s = 40 // the largest, in the tail or a middle lane
				case i == 10 && j == cols/3:
					s = float32(math.NaN())
				case i == 11: // the largest score is zero, of both signs
					s = []float32{float32(math.Copysign(0, -1)), 0, -1.5}[j%3]
				case rng.IntN(5) == 0:
					s = inf
				}
				p[i*cols+j] = s
				mx[i] = max(mx[i], s)
			}
		}
		want := append([]float32(nil), p...)
		for i := range rows {
			row := want[i*cols : (i+1)*cols]
			var sum float64
			for _, s := range row {
				if s != inf {
					sum += math.Exp(float64(s - mx[i]))
				}
			}
			for j, s := range row {
				row[j] = 0
				if s != inf {
					row[j] = float32(math.Exp(float64(s-mx[i])) / sum)
				}
			}
		}
		goRows := make([]float32, rows*cols)
		goSums, goMaxes := make([]float64, rows), make([]float32, rows)
		softmaxRowsGo(goRows, p, rows, cols, goSums, goMaxes)
		for i, v := range goRows {
			if r := i / cols; r == 4 || r == 10 {
				if v == v {
					t.Fatalf("cols %d: row %d (masked whole, or with a NaN score) gave %g, want NaN", cols, r, v)
				}
				continue
			}
			if math.Abs(float64(v-want[i])) > 2e-6*float64(want[i])+1e-30 {
				t.Fatalf("cols %d: softmaxRowsGo[%d] = %g, float64 softmax %g", cols, i, v, want[i])
			}
		}
		inPlace := append([]float32(nil), p...)
		softmaxRowsGo(inPlace, inPlace, rows, cols, nil, nil)
		sameBits := func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b) }
		for i := range inPlace {
			if !sameBits(inPlace[i], goRows[i]) {
				t.Fatalf("cols %d: element %d in place %g, to another slice %g", cols, i, inPlace[i], goRows[i])
			}
		}

		vec := make([]float32, rows*cols)
		vecSums, vecMaxes := make([]float64, rows), make([]float32, rows)
		if !softmaxRowsVector(vec, p, rows, cols, vecSums, vecMaxes) {
			t.Log("no vector kernel on this build or CPU: softmax runs the Go loop")
			return
		}
		for i := range vec {
			if !sameBits(vec[i], goRows[i]) {
				t.Fatalf("cols %d: element %d (score %g): vector %g (%#x), Go %g (%#x)", cols, i, p[i], vec[i], math.Float32bits(vec[i]), goRows[i], math.Float32bits(goRows[i]))
			}
		}
		for r := range rows {
			if math.Float64bits(vecSums[r]) != math.Float64bits(goSums[r]) && (vecSums[r] == vecSums[r] || goSums[r] == goSums[r]) {
				t.Fatalf("cols %d: row %d's sum: vector %g, Go %g", cols, r, vecSums[r], goSums[r])
			}
			// A NaN row's max may be either; a zero max's sign may differ
			// (Go's max prefers +0), which shifts no score.
			if r != 10 && vecMaxes[r] != goMaxes[r] {
				t.Fatalf("cols %d: row %d's max: vector %g, Go %g", cols, r, vecMaxes[r], goMaxes[r])
			}
		}
		vecInPlace := append([]float32(nil), p...)
		softmaxRowsVector(vecInPlace, vecInPlace, rows, cols, nil, nil)
		for i := range vecInPlace {
			if !sameBits(vecInPlace[i], goRows[i]) {
				t.Fatalf("cols %d: element %d in place: vector %g, Go %g", cols, i, vecInPlace[i], goRows[i])
			}
		}
	}
}

// TestGeluVectorMatchesGo holds the AVX2 GELU forward and backward to the
// Go loops bit for bit, over ranges whose ends are not multiples of eight,
// tanh's thresholds, large and special inputs; and the Go loops to the
// float64 formulas.
func TestGeluVectorMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	special := []float32{0, float32(math.Copysign(0, -1)), 1e-40, -1e-40, 0.5, -0.5, 0.7, -0.7, 3, -3, 5, -5, 9, -9, 30, -30,
		1e20, -1e20, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())}
	const n = 203
	x, dout, dx0 := make([]float32, n), make([]float32, n), make([]float32, n)
	for i := range x {
		if i%4 == 0 {
			x[i] = special[rng.IntN(len(special))]
		} else {
			x[i] = float32(rng.NormFloat64() * 3)
		}
		dout[i], dx0[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	same := func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b) }
	outG, dxG := make([]float32, n), append([]float32(nil), dx0...)
	geluForwardGo(outG, x, 0, n)
	geluBackwardGo(dxG, dout, x, 0, n)
	for i, v := range x {
		if math.IsInf(float64(v), 0) || v != v || math.Abs(float64(v)) > 1e10 {
			continue // x³ overflows float32 there (as it does in PyTorch's float32 kernel)
		}
		w := float64(v)
		th := math.Tanh(geluC * (w + 0.044715*w*w*w))
		wantOut := 0.5 * w * (1 + th)
		wantD := 0.5*(1+th) + 0.5*w*(1-th*th)*geluC*(1+3*0.044715*w*w)
		if math.Abs(float64(outG[i])-wantOut) > 1e-6*(1+math.Abs(w)) {
			t.Fatalf("gelu(%g) = %g, float64 %g", v, outG[i], wantOut)
		}
		if want := float64(dx0[i]) + wantD*float64(dout[i]); math.Abs(float64(dxG[i])-want) > 1e-5*(1+math.Abs(want)) {
			t.Fatalf("gelu'(%g) step: dx %g, float64 %g", v, dxG[i], want)
		}
	}
	for _, r := range [][2]int{{0, n}, {3, 200}, {5, 12}, {8, 9}} {
		lo, hi := r[0], r[1]
		outV, dxV := make([]float32, n), append([]float32(nil), dx0...)
		if !geluForwardVector(outV, x, lo, hi) || !geluBackwardVector(dxV, dout, x, lo, hi) {
			t.Log("no vector kernel on this build or CPU: GELU runs the Go loops")
			return
		}
		outR, dxR := make([]float32, n), append([]float32(nil), dx0...)
		geluForwardGo(outR, x, lo, hi)
		geluBackwardGo(dxR, dout, x, lo, hi)
		for i := range x {
			if !same(outV[i], outR[i]) || !same(dxV[i], dxR[i]) {
				t.Fatalf("[%d, %d) element %d (x %g): vector out %g dx %g, Go out %g dx %g", lo, hi, i, x[i], outV[i], dxV[i], outR[i], dxR[i])
			}
		}
	}
}

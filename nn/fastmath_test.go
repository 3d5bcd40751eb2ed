package nn

import (
	"math"
	"math/rand/v2"
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

package pruner

import (
	"math"
	"testing"

	"github.com/readsweep/readsweep/sweep/storage"
)

func curve(vals ...float64) map[int]float64 {
	m := map[int]float64{}
	for i, v := range vals {
		m[i] = v
	}
	return m
}

func TestMedian(t *testing.T) {
	var done []storage.FrozenTrial
	for i, v := range []float64{0.5, 0.6, 0.7, 0.8, 0.9} {
		done = append(done, storage.FrozenTrial{Number: i, State: storage.Complete, Intermediate: curve(v, v+0.01)})
	}
	max := storage.Study{Direction: storage.Maximize}
	min := storage.Study{Direction: storage.Minimize}
	tests := []struct {
		name  string
		study storage.Study
		prior []storage.FrozenTrial
		trial map[int]float64
		want  bool
	}{
		{"below median prunes", max, done, curve(0.55), true},
		{"above median survives", max, done, curve(0.75), false},
		{"best so far counts", max, done, curve(0.9, 0.1), false},
		{"minimise flips", min, done, curve(0.55), false},
		{"minimise prunes high", min, done, curve(0.85), true},
		{"too few complete", max, done[:4], curve(0.0), false},
		{"nan prunes", max, done, curve(math.NaN()), true},
		{"step nobody reached", max, done, curve(0.9, 0.9, 0.1), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := storage.FrozenTrial{Number: 99, State: storage.Running, Intermediate: tc.trial}
			if got, record := NewMedian().Prune(tc.study, tc.prior, tr); got != tc.want || record != nil {
				t.Errorf("Prune = %v, %v; want %v, nothing recorded", got, record, tc.want)
			}
		})
	}
}

func TestNanPercentile(t *testing.T) {
	if got := nanPercentile([]float64{4, 1, math.NaN(), 3, 2}, 50); got != 2.5 {
		t.Errorf("median = %v, want 2.5", got)
	}
	if got := nanPercentile([]float64{1, 2, 3}, 50); got != 2 {
		t.Errorf("median = %v, want 2", got)
	}
}

package tpe

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"reflect"
	"testing"

	"github.com/readsweep/readsweep/sweep/storage"
)

// TestObjectivesMatchPeer checks the Go objectives against the values
// tpe_bench.py --test-vectors printed (testdata/test-vectors.json).
func TestObjectivesMatchPeer(t *testing.T) {
	raw, err := os.ReadFile("testdata/test-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]json.Number
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	h6Half := [6]float64{0.5, 0.5, 0.5, 0.5, 0.5, 0.5}
	have := map[string]float64{
		"gauss(0,0)":         Gauss(0, 0),
		"gauss(7,31)":        Gauss(7, 31),
		"lr_curve(1e-4)":     LRCurve(1e-4),
		"lr_curve(1e-6)":     LRCurve(1e-6),
		"lr_curve(3e-5)":     LRCurve(3e-5),
		"lr_curve(5e-4)":     LRCurve(5e-4),
		"lr_curve(1.5e-3)":   LRCurve(1.5e-3),
		"lr_curve(3e-3)":     LRCurve(3e-3),
		"branin(-pi,12.275)": Branin(-math.Pi, 12.275),
		"branin(0,0)":        Branin(0, 0),
		"hartmann6(x*)":      Hartmann6(h6XStar),
		"hartmann6(0.5^6)":   Hartmann6(h6Half),
	}
	for name, h := range have {
		w, err := want[name].Float64()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if math.Abs(h-w) > 1e-12*math.Max(1, math.Abs(w)) {
			t.Errorf("%s = %.17g, want %.17g", name, h, w)
		}
	}
	if got, w := splitmix64(0), want["splitmix64(0)"].String(); json.Number(uintString(got)) != json.Number(w) {
		t.Errorf("splitmix64(0) = %d, want %s", got, w)
	}
}

func uintString(u uint64) string {
	b, _ := json.Marshal(u)
	return string(b)
}

func lrSpace() map[string]storage.Distribution {
	return map[string]storage.Distribution{"lr": storage.Float(1e-6, 3e-3, true)}
}

// history builds n finished trials of the lr objective.
func history(n int) []storage.FrozenTrial {
	var trials []storage.FrozenTrial
	for i := range n {
		lr := math.Pow(10, -6+3.4*float64(i)/float64(max(n-1, 1)))
		v := 1 - LRCurve(lr)
		trials = append(trials, storage.FrozenTrial{Number: i, State: storage.Complete, Value: &v,
			Params: map[string]float64{"lr": lr}, Distributions: lrSpace()})
	}
	return trials
}

func TestSampleDeterministic(t *testing.T) {
	study := storage.Study{Direction: storage.Maximize}
	for _, n := range []int{0, 5, 12, 31} {
		o := DefaultOptions()
		o.Seed, o.Seeded = 42, true
		a, err := New(o).Sample(study, history(n), n, lrSpace())
		if err != nil {
			t.Fatal(err)
		}
		b, _ := New(o).Sample(study, history(n), n, lrSpace())
		if !reflect.DeepEqual(a, b) {
			t.Errorf("n=%d: same seed gave %v then %v", n, a, b)
		}
		o.Seed = 43
		c, _ := New(o).Sample(study, history(n), n, lrSpace())
		if reflect.DeepEqual(a, c) {
			t.Errorf("n=%d: seeds 42 and 43 both gave %v", n, a)
		}
		if lr := a["lr"]; !(lr >= 1e-6 && lr <= 3e-3) {
			t.Errorf("n=%d: lr=%g outside [1e-6, 3e-3]", n, lr)
		}
	}
}

// TestSplit checks gamma, the ordering of pruned trials and the constant
// liar against the rules of the spec.
func TestSplit(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	space := lrSpace()
	p := func(lr float64) map[string]float64 { return map[string]float64{"lr": lr} }
	trials := []storage.FrozenTrial{
		{Number: 0, State: storage.Complete, Value: f(0.5), Params: p(1e-5), Distributions: space},
		{Number: 1, State: storage.Complete, Value: f(0.9), Params: p(2e-5), Distributions: space},
		{Number: 2, State: storage.Pruned, Intermediate: map[int]float64{0: 0.1, 3: 0.95}, Params: p(3e-5), Distributions: space},
		{Number: 3, State: storage.Fail, Params: p(4e-5), Distributions: space},
		{Number: 4, State: storage.Running, Params: p(5e-5), Distributions: space},
		{Number: 5, State: storage.Running}, // the trial being sampled
	}
	for i := 6; i < 14; i++ {
		trials = append(trials, storage.FrozenTrial{Number: i, State: storage.Complete, Value: f(0.1), Params: p(1e-6), Distributions: space})
	}
	s := New(DefaultOptions())
	below, above := s.split(storage.Maximize, trials, 5, []string{"lr"}, space)
	// 11 finished (10 complete + 1 pruned) → gamma = 2 below: the two best complete.
	if len(below) != 2 || below[0].number != 0 || below[1].number != 1 {
		t.Errorf("below = %v, want trials 0 and 1", below)
	}
	if len(above) != 10 { // 8 complete + pruned + running liar
		t.Errorf("len(above) = %d, want 10", len(above))
	}
	for i := 1; i < len(above); i++ {
		if above[i].number < above[i-1].number {
			t.Errorf("above not ordered by number: %v", above)
		}
	}
	s.opts.ConstantLiar = false
	_, above = s.split(storage.Maximize, trials, 5, []string{"lr"}, space)
	if len(above) != 9 {
		t.Errorf("without constant liar len(above) = %d, want 9", len(above))
	}
}

func TestBandwidths(t *testing.T) {
	d := storage.Float(0, 10, false)
	dm := numericDim(d, []float64{2, 3, 9})
	// sorted 2,3,9 padded 0..10: endpoints take inner gaps (1 and 6), middle max(1,6)=6;
	// clip below at 10/5 = 2.
	want := []float64{2, 6, 6, 10}
	if !reflect.DeepEqual(dm.sd, want) {
		t.Errorf("sd = %v, want %v", dm.sd, want)
	}
	if dm.mu[3] != 5 {
		t.Errorf("prior mu = %v, want 5", dm.mu[3])
	}
	one := numericDim(d, []float64{2})
	if one.sd[0] != 8 {
		t.Errorf("single observation sd = %v, want max(2-0, 10-2) = 8", one.sd[0])
	}
}

func TestLogPDFNormalised(t *testing.T) {
	d := storage.Float(0, 1, false)
	p := newParzen([]observation{{0, []float64{0.2}}, {1, []float64{0.9}}}, []storage.Distribution{d}, 1)
	var sum float64
	const n = 20000
	for i := range n {
		x := (float64(i) + 0.5) / n
		sum += math.Exp(p.logPDF([]float64{x})) / n
	}
	if math.Abs(sum-1) > 1e-3 {
		t.Errorf("density integrates to %v, want 1", sum)
	}
	di := storage.Distribution{Kind: storage.IntDist, Low: 1, High: 5, Step: 1}
	q := newParzen([]observation{{0, []float64{2}}}, []storage.Distribution{di}, 1)
	var mass float64
	for v := 1; v <= 5; v++ {
		mass += math.Exp(q.logPDF([]float64{float64(v)}))
	}
	if math.Abs(mass-1) > 1e-9 {
		t.Errorf("int mass sums to %v, want 1", mass)
	}
}

func TestStartupIsRandom(t *testing.T) {
	o := DefaultOptions()
	o.Seed, o.Seeded = 7, true
	tpe, _ := New(o).Sample(storage.Study{}, history(3), 3, lrSpace())
	rnd, _ := NewRandom(7, true).Sample(storage.Study{}, history(3), 3, lrSpace())
	if tpe["lr"] != rnd["lr"] {
		t.Errorf("startup trial: tpe %v, random %v; want the same draw", tpe, rnd)
	}
}

func TestBeatsRandomOnBranin(t *testing.T) {
	ctx := context.Background()
	obj := Objectives()[1]
	var tpeMean, rndMean float64
	const seeds = 10
	for seed := range uint64(seeds) {
		o := DefaultOptions()
		o.Seed, o.Seeded = seed, true
		a, err := RunObjective(ctx, obj, New(o), seed, 32)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := RunObjective(ctx, obj, NewRandom(seed, true), seed, 32)
		tpeMean += a.Regret[31] / seeds
		rndMean += b.Regret[31] / seeds
	}
	if tpeMean >= rndMean {
		t.Errorf("mean regret@32 on branin: tpe %.4g, random %.4g; TPE should beat random", tpeMean, rndMean)
	}
}

func TestParseOptions(t *testing.T) {
	o, err := ParseOptions(map[string]any{"seed": 3.0, "n_startup_trials": 5.0, "constant_liar": false})
	if err != nil || o.Seed != 3 || !o.Seeded || o.NStartupTrials != 5 || o.ConstantLiar {
		t.Errorf("ParseOptions = %+v, %v", o, err)
	}
	if _, err := ParseOptions(map[string]any{"n_startup": 5.0}); err == nil {
		t.Error("unknown option accepted")
	}
}

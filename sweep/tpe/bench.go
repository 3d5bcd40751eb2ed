package tpe

import (
	"context"
	"fmt"
	"io"
	"math"
	"sort"
	"time"

	"github.com/readsweep/readsweep/sweep/storage"
)

// The objectives of scripts/peers/tpe_bench.py, re-implemented one to one so
// that sampler quality is compared with Optuna's on equal terms. All are
// minimised.

// Gauss is the benchmark's reproducible noise: Box-Muller over two
// splitmix64 draws keyed by (seed, n).
func Gauss(seed, n uint64) float64 {
	key := seed*1000003 + n
	h1 := splitmix64(key)
	h2 := splitmix64(h1)
	u1 := (float64(h1>>11) + 0.5) / (1 << 53)
	u2 := float64(h2>>11) / (1 << 53)
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

// LRCurve is a synthetic validation loss against learning rate: optimum 0.15
// at lr = 1e-4, slow under-fitting to the left, divergence past 1e-3.
func LRCurve(lr float64) float64 {
	x := math.Log10(lr)
	const c = -4.0
	w := 1.0
	if x >= c {
		w = 0.5
	}
	base := 0.15 + 0.35*(1-math.Exp(-0.5*((x-c)/w)*((x-c)/w)))
	r := math.Min(1, math.Max(0, (x+3)/0.3))
	return base + 0.45*r*r
}

// Branin is the Branin-Hoo function on [-5, 10] × [0, 15].
func Branin(x1, x2 float64) float64 {
	b := 5.1 / (4 * math.Pi * math.Pi)
	c := 5 / math.Pi
	t := 1 / (8 * math.Pi)
	return (x2-b*x1*x1+c*x1-6)*(x2-b*x1*x1+c*x1-6) + 10*(1-t)*math.Cos(x1) + 10
}

var (
	h6Alpha = [4]float64{1.0, 1.2, 3.0, 3.2}
	h6A     = [4][6]float64{
		{10, 3, 17, 3.5, 1.7, 8},
		{0.05, 10, 17, 0.1, 8, 14},
		{3, 3.5, 1.7, 10, 17, 8},
		{17, 8, 0.05, 10, 0.1, 14},
	}
	h6P = [4][6]float64{
		{0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886},
		{0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991},
		{0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650},
		{0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381},
	}
	h6XStar = [6]float64{0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573}
)

// Hartmann6 is the six-dimensional Hartmann function on [0, 1]^6.
func Hartmann6(x [6]float64) float64 {
	var s float64
	for i := range 4 {
		var inner float64
		for j := range 6 {
			inner += h6A[i][j] * (x[j] - h6P[i][j]) * (x[j] - h6P[i][j])
		}
		s += h6Alpha[i] * math.Exp(-inner)
	}
	return -s
}

// Objective is one benchmark problem.
type Objective struct {
	Name  string
	Space map[string]storage.Distribution
	True  func(p map[string]float64) float64
	FStar float64
	Noise float64 // scale of Gauss noise added to observations
}

// Objectives returns the three problems of tpe_bench.py.
func Objectives() []Objective {
	h6 := map[string]storage.Distribution{}
	for j := range 6 {
		h6[fmt.Sprintf("x%d", j)] = storage.Float(0, 1, false)
	}
	return []Objective{
		{Name: "lr", Space: map[string]storage.Distribution{"lr": storage.Float(1e-6, 3e-3, true)},
			True: func(p map[string]float64) float64 { return LRCurve(p["lr"]) }, FStar: 0.15, Noise: 0.01},
		{Name: "branin", Space: map[string]storage.Distribution{"x1": storage.Float(-5, 10, false), "x2": storage.Float(0, 15, false)},
			True: func(p map[string]float64) float64 { return Branin(p["x1"], p["x2"]) }, FStar: 5 / (4 * math.Pi)},
		{Name: "hartmann6", Space: h6,
			True: func(p map[string]float64) float64 {
				var x [6]float64
				for j := range 6 {
					x[j] = p[fmt.Sprintf("x%d", j)]
				}
				return Hartmann6(x)
			}, FStar: Hartmann6(h6XStar)},
	}
}

// BenchSampler is what the benchmark drives: a sweep Sampler.
type BenchSampler interface {
	Sample(study storage.Study, trials []storage.FrozenTrial, number int, space map[string]storage.Distribution) (map[string]float64, error)
}

// Run is one seed's optimisation: regret after each trial and the mean
// time per suggestion.
type Run struct {
	Regret   []float64
	PerTrial time.Duration
}

// RunObjective optimises obj for n trials with the sampler, in memory, the
// way tpe_bench.py's run_one does: regret after k trials is the true value
// at the best observed trial minus f*.
func RunObjective(ctx context.Context, obj Objective, s BenchSampler, seed uint64, n int) (Run, error) {
	study := storage.Study{Name: obj.Name, Direction: storage.Minimize}
	var trials []storage.FrozenTrial
	bestObs, bestTrue := math.Inf(1), math.Inf(1)
	var run Run
	var spent time.Duration
	for i := range n {
		if err := ctx.Err(); err != nil {
			return run, err
		}
		t0 := time.Now()
		p, err := s.Sample(study, trials, i, obj.Space)
		spent += time.Since(t0)
		if err != nil {
			return run, err
		}
		f := obj.True(p)
		y := f
		if obj.Noise != 0 {
			y += obj.Noise * Gauss(seed, uint64(i))
		}
		trials = append(trials, storage.FrozenTrial{Number: i, State: storage.Complete, Value: &y, Params: p, Distributions: obj.Space})
		if y < bestObs {
			bestObs, bestTrue = y, f
		}
		run.Regret = append(run.Regret, bestTrue-obj.FStar)
	}
	run.PerTrial = spent / time.Duration(max(n, 1))
	return run, nil
}

// Summary aggregates runs over seeds at the checkpoints.
type Summary struct {
	Objective, Sampler string
	Mean, Median       []float64 // per checkpoint
	MsPerSuggest       float64
}

// Summarize reduces runs (one per seed) at the given 1-based checkpoints.
func Summarize(objective, sampler string, runs []Run, checkpoints []int) Summary {
	s := Summary{Objective: objective, Sampler: sampler}
	var ms float64
	for _, r := range runs {
		ms += float64(r.PerTrial) / float64(time.Millisecond)
	}
	s.MsPerSuggest = ms / float64(len(runs))
	for _, k := range checkpoints {
		vals := make([]float64, len(runs))
		var sum float64
		for i, r := range runs {
			vals[i] = r.Regret[k-1]
			sum += vals[i]
		}
		sort.Float64s(vals)
		med := vals[len(vals)/2]
		if len(vals)%2 == 0 {
			med = (vals[len(vals)/2-1] + vals[len(vals)/2]) / 2
		}
		s.Mean = append(s.Mean, sum/float64(len(vals)))
		s.Median = append(s.Median, med)
	}
	return s
}

// WriteTable prints summaries in tpe_bench.py's table layout.
func WriteTable(w io.Writer, sums []Summary, checkpoints []int) {
	fmt.Fprintf(w, "%-10s %-10s", "objective", "sampler")
	for _, k := range checkpoints {
		fmt.Fprintf(w, " %11s %9s", fmt.Sprintf("@%d mean", k), "median")
	}
	fmt.Fprintf(w, " %8s\n", "ms/sugg")
	for _, s := range sums {
		fmt.Fprintf(w, "%-10s %-10s", s.Objective, s.Sampler)
		for i := range checkpoints {
			fmt.Fprintf(w, " %11.4g %9.4g", s.Mean[i], s.Median[i])
		}
		fmt.Fprintf(w, " %8.3f\n", s.MsPerSuggest)
	}
}

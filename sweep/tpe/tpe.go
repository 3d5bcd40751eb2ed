// Package tpe implements Optuna's Tree-structured Parzen Estimator sampler
// (the 5.0 behaviour: multivariate, constant liar, neighbour bandwidths with
// the magic clip) and the random sampler it starts with.
//
// # Determinism
//
// A sampler with a seed draws each trial's values from a stream keyed by
// (seed, trial number), so the same history gives the same suggestion in
// any process, in any order: a sweep resumed after a crash, or a sequence of
// `sweep ask` calls, repeats exactly.
//
// # Reference
//
// optuna/samplers/_tpe/{sampler.py, parzen_estimator.py,
// probability_distributions.py} at 5.0.0.dev; the spec in
// shared/reference/tpe-spec.md lists every rule implemented here.
package tpe

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	"github.com/readsweep/readsweep/sweep/storage"
)

// Options are the TPE knobs, named as Optuna's TPESampler arguments.
type Options struct {
	NStartupTrials int     // random trials before TPE starts (10)
	NEICandidates  int     // candidates drawn from l(x) per suggestion (24)
	PriorWeight    float64 // weight of the prior kernel (1.0)
	Multivariate   bool    // one joint density over all parameters (true)
	ConstantLiar   bool    // running trials count as bad observations (true)
	Seed           uint64
	Seeded         bool // false: a fresh random seed per Sampler
}

// DefaultOptions returns Optuna 5.0's defaults for a single objective.
func DefaultOptions() Options {
	return Options{NStartupTrials: 10, NEICandidates: 24, PriorWeight: 1, Multivariate: true, ConstantLiar: true}
}

// ParseOptions reads Optuna-style sampler kwargs (as from --sampler-kwargs)
// over the defaults. Unknown keys are errors.
func ParseOptions(kw map[string]any) (Options, error) {
	o := DefaultOptions()
	for k, v := range kw {
		var err error
		switch k {
		case "n_startup_trials":
			o.NStartupTrials, err = asInt(v)
		case "n_ei_candidates":
			o.NEICandidates, err = asInt(v)
			if err == nil && o.NEICandidates < 1 {
				err = fmt.Errorf("must be at least 1")
			}
		case "prior_weight":
			o.PriorWeight, err = asFloat(v)
			if err == nil && !(o.PriorWeight > 0) {
				err = fmt.Errorf("must be positive")
			}
		case "multivariate":
			o.Multivariate, err = asBool(v)
		case "constant_liar":
			o.ConstantLiar, err = asBool(v)
		case "seed":
			if v == nil {
				continue
			}
			var s int
			s, err = asInt(v)
			o.Seed, o.Seeded = uint64(int64(s)), true
		default:
			return o, fmt.Errorf("tpe: unknown sampler option %q (known: n_startup_trials, n_ei_candidates, prior_weight, multivariate, constant_liar, seed)", k)
		}
		if err != nil {
			return o, fmt.Errorf("tpe: sampler option %q: %w", k, err)
		}
	}
	if o.NStartupTrials < 0 {
		return o, fmt.Errorf("tpe: sampler option \"n_startup_trials\": must not be negative")
	}
	return o, nil
}

func asInt(v any) (int, error) {
	switch x := v.(type) {
	case int:
		return x, nil
	case int64:
		return int(x), nil
	case float64:
		if x == math.Trunc(x) {
			return int(x), nil
		}
	}
	return 0, fmt.Errorf("want an integer, got %v", v)
}

func asFloat(v any) (float64, error) {
	switch x := v.(type) {
	case int:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case float64:
		return x, nil
	}
	return 0, fmt.Errorf("want a number, got %v", v)
}

func asBool(v any) (bool, error) {
	if b, ok := v.(bool); ok {
		return b, nil
	}
	return false, fmt.Errorf("want true or false, got %v", v)
}

// Sampler suggests parameters by TPE once the study has NStartupTrials
// finished trials, and at random before.
type Sampler struct {
	opts Options
}

// New returns a TPE sampler.
func New(o Options) *Sampler {
	if !o.Seeded {
		o.Seed, o.Seeded = rand.Uint64(), true
	}
	if o.NEICandidates == 0 {
		o.NEICandidates = 24
	}
	if o.PriorWeight == 0 {
		o.PriorWeight = 1
	}
	return &Sampler{opts: o}
}

// Options returns the sampler's settings, its seed included.
func (s *Sampler) Options() Options { return s.opts }

// Random samples uniformly (log-uniformly for log parameters).
type Random struct {
	Seed uint64
}

// NewRandom returns a random sampler; seeded false picks a fresh seed.
func NewRandom(seed uint64, seeded bool) *Random {
	if !seeded {
		seed = rand.Uint64()
	}
	return &Random{Seed: seed}
}

// Sample draws every parameter of space independently at random.
func (r *Random) Sample(_ storage.Study, _ []storage.FrozenTrial, number int, space map[string]storage.Distribution) (map[string]float64, error) {
	rng := trialRNG(r.Seed, number)
	out := make(map[string]float64, len(space))
	for _, name := range slices.Sorted(maps.Keys(space)) {
		out[name] = sampleRandom(rng, space[name])
	}
	return out, nil
}

// trialRNG gives each trial its own stream, independent of process history.
func trialRNG(seed uint64, number int) *rand.Rand {
	return rand.New(rand.NewPCG(seed, splitmix64(uint64(number)+0x5DEECE66D)))
}

func splitmix64(x uint64) uint64 {
	x += 0x9E3779B97F4A7C15
	z := x
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

// sampleRandom implements Optuna's RandomSampler for one distribution.
func sampleRandom(rng *rand.Rand, d storage.Distribution) float64 {
	switch d.Kind {
	case storage.CategoricalDist:
		return float64(rng.IntN(len(d.Choices)))
	case storage.FloatDist:
		if d.Step == 0 {
			if d.Log {
				return math.Exp(uniform(rng, math.Log(d.Low), math.Log(d.High)))
			}
			return uniform(rng, d.Low, d.High)
		}
	}
	// Stepped float or int: uniform over the bins, rounded to the grid.
	lo, hi := d.Low-d.Step/2, d.High+d.Step/2
	var v float64
	if d.Log {
		v = math.Exp(uniform(rng, math.Log(lo), math.Log(hi)))
	} else {
		v = uniform(rng, lo, hi)
	}
	return snap(v, d)
}

func uniform(rng *rand.Rand, lo, hi float64) float64 { return lo + (hi-lo)*rng.Float64() }

// snap rounds v to the distribution's grid and clips it into range.
func snap(v float64, d storage.Distribution) float64 {
	v = d.Low + math.Floor((v-d.Low)/d.Step+0.5)*d.Step
	hi := d.Low + math.Floor((d.High-d.Low)/d.Step)*d.Step
	return math.Min(math.Max(v, d.Low), hi)
}

// Sample suggests internal values for every parameter of space for trial
// number, given the study's trials (the trial itself may be among them).
func (s *Sampler) Sample(study storage.Study, trials []storage.FrozenTrial, number int, space map[string]storage.Distribution) (map[string]float64, error) {
	for name, d := range space {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("tpe: parameter %q: %w", name, err)
		}
	}
	rng := trialRNG(s.opts.Seed, number)
	out := make(map[string]float64, len(space))
	var dims []string
	for _, name := range slices.Sorted(maps.Keys(space)) {
		if d := space[name]; d.Single() {
			out[name] = d.Low
			if d.Kind == storage.CategoricalDist {
				out[name] = 0
			}
			continue
		}
		dims = append(dims, name)
	}
	finished := 0
	for _, t := range trials {
		if t.State == storage.Complete || t.State == storage.Pruned {
			finished++
		}
	}
	if finished < s.opts.NStartupTrials {
		for _, name := range dims {
			out[name] = sampleRandom(rng, space[name])
		}
		return out, nil
	}
	groups := [][]string{dims}
	if !s.opts.Multivariate {
		groups = groups[:0]
		for _, name := range dims {
			groups = append(groups, []string{name})
		}
	}
	for _, g := range groups {
		if len(g) == 0 {
			continue
		}
		vals := s.sampleGroup(rng, study.Direction, trials, number, g, space)
		for i, name := range g {
			out[name] = vals[i]
		}
	}
	return out, nil
}

// observation is one trial's coordinates in a group's parameters.
type observation struct {
	number int
	x      []float64 // internal values
}

func (s *Sampler) sampleGroup(rng *rand.Rand, dir storage.Direction, trials []storage.FrozenTrial, number int, names []string, space map[string]storage.Distribution) []float64 {
	below, above := s.split(dir, trials, number, names, space)
	dists := make([]storage.Distribution, len(names))
	for i, n := range names {
		dists[i] = space[n]
	}
	l := newParzen(below, dists, s.opts.PriorWeight)
	g := newParzen(above, dists, s.opts.PriorWeight)
	best, bestScore := []float64(nil), math.Inf(-1)
	for range s.opts.NEICandidates {
		x := l.sample(rng)
		score := l.logPDF(x) - g.logPDF(x)
		if best == nil || score > bestScore {
			best, bestScore = x, score
		}
	}
	return best
}

// gamma is the number of "below" trials for n finished trials.
func gamma(n int) int { return min(int(math.Ceil(0.1*float64(n))), 25) }

// weights returns Optuna's default observation weights: flat for the newest
// 25 trials, a linear ramp for older ones.
func weights(m int) []float64 {
	w := make([]float64, m)
	if m < 25 {
		for i := range w {
			w[i] = 1
		}
		return w
	}
	ramp := m - 25
	for i := 0; i < ramp; i++ {
		if ramp == 1 {
			w[i] = 1 / float64(m)
		} else {
			w[i] = 1/float64(m) + (1-1/float64(m))*float64(i)/float64(ramp-1)
		}
	}
	for i := ramp; i < m; i++ {
		w[i] = 1
	}
	return w
}

// split divides the usable trials into the good (below) and bad (above)
// observations, each ordered by trial number. reference: _split_trials.
func (s *Sampler) split(dir storage.Direction, trials []storage.FrozenTrial, number int, names []string, space map[string]storage.Distribution) (below, above []observation) {
	sign := 1.0 // minimisation internally
	if dir == storage.Maximize {
		sign = -1
	}
	type scored struct {
		obs  observation
		key1 float64
		key2 float64
	}
	var complete, pruned []scored
	var running []observation
	for _, t := range trials {
		if t.Number == number {
			continue
		}
		obs, ok := observe(t, names, space)
		if !ok {
			continue
		}
		switch t.State {
		case storage.Complete:
			if t.Value == nil {
				continue
			}
			v := sign * *t.Value
			if math.IsNaN(v) {
				v = math.Inf(1)
			}
			complete = append(complete, scored{obs: obs, key1: v})
		case storage.Pruned:
			step, v, ok := t.LastStep()
			if !ok {
				pruned = append(pruned, scored{obs: obs, key1: 1, key2: 0})
				continue
			}
			v *= sign
			if math.IsNaN(v) {
				v = math.Inf(1)
			}
			pruned = append(pruned, scored{obs: obs, key1: -float64(step), key2: v})
		case storage.Running:
			if s.opts.ConstantLiar {
				running = append(running, obs)
			}
		}
	}
	nBelow := gamma(len(complete) + len(pruned))
	sort.SliceStable(complete, func(i, j int) bool { return complete[i].key1 < complete[j].key1 })
	sort.SliceStable(pruned, func(i, j int) bool {
		if pruned[i].key1 != pruned[j].key1 {
			return pruned[i].key1 < pruned[j].key1
		}
		return pruned[i].key2 < pruned[j].key2
	})
	take := func(list []scored) {
		for _, sc := range list {
			if len(below) < nBelow {
				below = append(below, sc.obs)
			} else {
				above = append(above, sc.obs)
			}
		}
	}
	take(complete)
	take(pruned)
	above = append(above, running...)
	byNumber := func(o []observation) {
		sort.SliceStable(o, func(i, j int) bool { return o[i].number < o[j].number })
	}
	byNumber(below)
	byNumber(above)
	return below, above
}

// observe returns the trial's coordinates when it has every parameter of
// names with the same distribution.
func observe(t storage.FrozenTrial, names []string, space map[string]storage.Distribution) (observation, bool) {
	x := make([]float64, len(names))
	for i, n := range names {
		v, ok := t.Params[n]
		if !ok || !sameDist(t.Distributions[n], space[n]) {
			return observation{}, false
		}
		x[i] = v
	}
	return observation{number: t.Number, x: x}, true
}

func sameDist(a, b storage.Distribution) bool {
	if a.Kind != b.Kind || a.Low != b.Low || a.High != b.High || a.Log != b.Log || a.Step != b.Step || len(a.Choices) != len(b.Choices) {
		return false
	}
	for i := range a.Choices {
		if fmt.Sprint(a.Choices[i]) != fmt.Sprint(b.Choices[i]) {
			return false
		}
	}
	return true
}

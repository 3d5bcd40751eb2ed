// Package pruner decides, from a trial's intermediate values and those of
// the study's finished trials, whether to stop the trial early.
//
// # Reference
//
// optuna/pruners/_percentile.py and _median.py (5.0.0.dev); the rules are
// listed in shared/reference/tpe-spec.md under "Pruners".
package pruner

import (
	"math"
	"sort"

	"github.com/readsweep/readsweep/sweep/storage"
)

// Median prunes a trial whose best intermediate value so far is worse than
// the median of the COMPLETE trials' values at the same step, as Optuna's
// MedianPruner does.
type Median struct {
	NStartupTrials int // no pruning before this many COMPLETE trials (5)
	NWarmupSteps   int // no pruning before this step (0)
	IntervalSteps  int // prune only at the first report of each interval (1)
	NMinTrials     int // COMPLETE trials that must have reported the step (1)
}

// NewMedian returns a Median pruner with Optuna's defaults.
func NewMedian() Median { return Median{NStartupTrials: 5, IntervalSteps: 1, NMinTrials: 1} }

// Prune reports whether trial, whose latest report is its last step, should
// stop. It records nothing on the trial.
func (m Median) Prune(study storage.Study, trials []storage.FrozenTrial, trial storage.FrozenTrial) (bool, map[string]any) {
	return m.prune(study, trials, trial), nil
}

func (m Median) prune(study storage.Study, trials []storage.FrozenTrial, trial storage.FrozenTrial) bool {
	var complete []storage.FrozenTrial
	for _, t := range trials {
		if t.State == storage.Complete {
			complete = append(complete, t)
		}
	}
	if len(complete) < m.NStartupTrials {
		return false
	}
	step, _, ok := trial.LastStep()
	if !ok || step < m.NWarmupSteps {
		return false
	}
	if !firstInInterval(step, trial.Steps(), m.NWarmupSteps, max(m.IntervalSteps, 1)) {
		return false
	}
	best := math.NaN()
	for _, v := range trial.Intermediate {
		if math.IsNaN(v) {
			continue
		}
		if math.IsNaN(best) || study.Direction.Better(v, best) {
			best = v
		}
	}
	if math.IsNaN(best) {
		return true
	}
	var atStep []float64
	for _, t := range complete {
		if v, ok := t.Intermediate[step]; ok {
			atStep = append(atStep, v)
		}
	}
	if len(atStep) < max(m.NMinTrials, 1) {
		return false
	}
	med := nanPercentile(atStep, 50)
	if math.IsNaN(med) {
		return false
	}
	return study.Direction.Better(med, best)
}

func firstInInterval(step int, steps []int, warmup, interval int) bool {
	nearestLower := (step-warmup)/interval*interval + warmup
	secondLast := -1
	for _, s := range steps {
		if s > secondLast && s != step {
			secondLast = s
		}
	}
	return secondLast < nearestLower
}

// nanPercentile is numpy's nanpercentile with linear interpolation.
func nanPercentile(xs []float64, q float64) float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	sort.Float64s(v)
	pos := q / 100 * float64(len(v)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(v)-1)
	return v[lo] + (pos-float64(lo))*(v[hi]-v[lo])
}

package pruner

import (
	"math"
	"sort"
	"time"

	"github.com/readsweep/readsweep/sweep/storage"
)

// SuccessiveHalving is asynchronous successive halving (ASHA), with the
// rules of Optuna's SuccessiveHalvingPruner (optuna/pruners/
// _successive_halving.py): rung k ends at step min_resource ·
// reduction_factor^(min_early_stopping_rate + k); a trial reaching it
// goes on only if its value there is in the top 1/reduction_factor of the
// values every trial had there (the best one while fewer than
// reduction_factor have), and is pruned otherwise, or when
// bootstrap_count or fewer trials have reached the rung.
//
// Optuna records each trial's rung values as system attributes when it
// checks; here they are read back from the intermediate values, which is
// the same thing where every report is checked and a pruned trial reports
// no more (as the orchestrator does): a trial completed rung k exactly
// when it reported a step at or past the rung's end, with the value of
// the first such report.
type SuccessiveHalving struct {
	MinResource          int // steps of rung 0 before the early-stopping rate; 0: auto
	ReductionFactor      int // η (4)
	MinEarlyStoppingRate int // s (0)
	BootstrapCount       int // trials that must reach a rung before any goes on (0)
}

// NewSuccessiveHalving returns the pruner with Optuna's defaults.
func NewSuccessiveHalving() SuccessiveHalving { return SuccessiveHalving{ReductionFactor: 4} }

// Prune reports whether trial, whose latest report is its last step, should
// stop.
func (p SuccessiveHalving) Prune(study storage.Study, trials []storage.FrozenTrial, trial storage.FrozenTrial) bool {
	if _, _, ok := trial.LastStep(); !ok {
		return false
	}
	minRes := p.MinResource
	// recorded says whether a trial's reports were checked when they were
	// made: always with a fixed min_resource; with auto, Optuna checks
	// nothing until a trial is COMPLETE, so only trials started after the
	// first one ended have rung values.
	recorded := func(storage.FrozenTrial) bool { return true }
	if minRes == 0 {
		last, known, ok := firstComplete(trials)
		if !ok {
			return false // no COMPLETE trial yet: nothing to size the rungs by
		}
		minRes = max(last/100, 1)
		recorded = startedAfter(known)
	}
	return p.prune(study, trials, trial, minRes, recorded)
}

// startedAfter is the rule for which trials' reports a pruner that set
// itself up when the first trial completed (at known) has checked: those
// of the trials started since. It is exact when trials run one at a time;
// a trial running across that moment had some of its reports checked.
func startedAfter(known time.Time) func(storage.FrozenTrial) bool {
	return func(t storage.FrozenTrial) bool { return !t.Start.Before(known) }
}

// prune is Prune with the rungs sized (rung 0 of rate 0 ends at minRes)
// and the trials whose reports were checked known.
func (p SuccessiveHalving) prune(study storage.Study, trials []storage.FrozenTrial, trial storage.FrozenTrial, minRes int, recorded func(storage.FrozenTrial) bool) bool {
	step, value, ok := trial.LastStep()
	if !ok {
		return false
	}
	eta := max(p.ReductionFactor, 2)
	rungEnd := func(k int) int { return minRes * pow(eta, p.MinEarlyStoppingRate+k) }
	// Rungs this trial completed at earlier reports.
	prev := -1
	for s := range trial.Intermediate {
		if s < step && s > prev && recorded(trial) {
			prev = s
		}
	}
	rung := 0
	for rungEnd(rung) <= prev {
		rung++
	}
	for {
		end := rungEnd(rung)
		if step < end {
			return false
		}
		if math.IsNaN(value) {
			return true
		}
		competing := []float64{value}
		for _, t := range trials {
			if t.ID == trial.ID || !recorded(t) {
				continue
			}
			// A NaN report is pruned before it is recorded: it never competes.
			if v, ok := firstAtOrAfter(t, end); ok && !math.IsNaN(v) {
				competing = append(competing, v)
			}
		}
		if len(competing) <= p.BootstrapCount {
			return true
		}
		if !promotable(value, competing, eta, study.Direction) {
			return true
		}
		rung++
	}
}

// firstComplete is the COMPLETE trial that a pruner sizing itself from
// "the COMPLETE trials" saw: Optuna sizes at the first check after one
// completes and keeps the size, so in a study run one trial at a time that
// is the first to complete. It returns that trial's last reported step
// (the most of any trials completing at the same moment), when it
// completed, and false while no COMPLETE trial has reported.
// (Taking the most steps of every COMPLETE trial agreed only while trials
// reported fewer than 200 steps; with eval_steps they report optimiser
// steps, and early stopping makes their last steps differ.)
func firstComplete(trials []storage.FrozenTrial) (last int, at time.Time, ok bool) {
	last = -1
	for _, t := range trials {
		s, _, reported := t.LastStep()
		if t.State != storage.Complete || !reported {
			continue
		}
		switch {
		case at.IsZero() || t.Complete.Before(at):
			at, last = t.Complete, s
		case t.Complete.Equal(at):
			last = max(last, s)
		}
	}
	return last, at, last >= 0
}

// firstAtOrAfter is the value of t's first report at step ≥ end: what
// Optuna stored as t's value for the rung that ends at end.
func firstAtOrAfter(t storage.FrozenTrial, end int) (float64, bool) {
	best, found := math.MaxInt, false
	for s := range t.Intermediate {
		if s >= end && s < best {
			best, found = s, true
		}
	}
	if !found {
		return 0, false
	}
	return t.Intermediate[best], true
}

// promotable is Optuna's _is_trial_promotable_to_next_rung.
func promotable(value float64, competing []float64, eta int, d storage.Direction) bool {
	idx := len(competing)/eta - 1
	if idx == -1 {
		// Optuna cannot suspend trials, so while fewer than η compete it
		// promotes only the best.
		idx = 0
	}
	sort.Float64s(competing)
	if d == storage.Maximize {
		return value >= competing[len(competing)-1-idx]
	}
	return value <= competing[idx]
}

func pow(b, e int) int {
	r := 1
	for range e {
		r *= b
	}
	return r
}

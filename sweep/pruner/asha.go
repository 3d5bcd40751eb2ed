package pruner

import (
	"math"
	"sort"
	"strconv"
	"sync"

	"github.com/readsweep/readsweep/sweep/storage"
)

// SuccessiveHalving is asynchronous successive halving (ASHA), with the
// rules of Optuna's SuccessiveHalvingPruner (optuna/pruners/
// _successive_halving.py): rung k ends at step min_resource ·
// reduction_factor^(min_early_stopping_rate + k); a trial reaching it
// records its value there and goes on only if that value is in the top
// 1/reduction_factor of the values recorded for the rung (the best one
// while fewer than reduction_factor are), and is pruned otherwise, or when
// bootstrap_count or fewer trials have recorded the rung.
//
// Each check returns the rung values it recorded as Optuna's own
// completed_rung_k system attributes, and later checks read the rungs back
// from them, as Optuna does: a trial's rung is the number of such
// attributes it has, and its competitors are the trials holding the
// rung's. So a trial that was running when an auto min_resource was fixed
// records every rung it has passed at its next check, with that check's
// value, exactly as under Optuna, whatever number of trials run at once;
// and Optuna can continue a study started here.
//
// With min_resource auto the pruner is sized, per study, at its first
// check that finds a COMPLETE trial, and keeps that size, as an Optuna
// pruner keeps its estimate for its life; so use one SuccessiveHalving
// for the life of a run.
type SuccessiveHalving struct {
	MinResource          int // steps of rung 0 before the early-stopping rate; 0: auto
	ReductionFactor      int // η (4)
	MinEarlyStoppingRate int // s (0)
	BootstrapCount       int // trials that must reach a rung before any goes on (0)

	sized sizes
}

// NewSuccessiveHalving returns the pruner with Optuna's defaults.
func NewSuccessiveHalving() *SuccessiveHalving { return &SuccessiveHalving{ReductionFactor: 4} }

// Prune reports whether trial, whose latest report is its last step, should
// stop, and returns the rung values the check records on it.
func (p *SuccessiveHalving) Prune(study storage.Study, trials []storage.FrozenTrial, trial storage.FrozenTrial) (bool, map[string]any) {
	if _, _, ok := trial.LastStep(); !ok {
		return false, nil
	}
	minRes := p.MinResource
	if minRes == 0 {
		var ok bool
		minRes, ok = p.sized.get(study.ID, func() (int, bool) {
			last, ok := lastCompleteStep(trials)
			return max(last/100, 1), ok
		})
		if !ok {
			return false, nil // no COMPLETE trial yet: nothing to size the rungs by
		}
	}
	return p.judge(study, trials, trial, minRes)
}

// judge is Prune with rung 0 of rate 0 ending at step minRes.
func (p *SuccessiveHalving) judge(study storage.Study, trials []storage.FrozenTrial, trial storage.FrozenTrial, minRes int) (bool, map[string]any) {
	step, value, ok := trial.LastStep()
	if !ok {
		return false, nil
	}
	eta := max(p.ReductionFactor, 2)
	var record map[string]any
	for rung := completedRungs(trial); ; rung++ {
		if step < minRes*pow(eta, p.MinEarlyStoppingRate+rung) {
			return false, record
		}
		if math.IsNaN(value) {
			return true, record
		}
		key := rungKey(rung)
		if record == nil {
			record = map[string]any{}
		}
		record[key] = value
		// trials is the study as it was before this check recorded
		// anything, as Optuna's list is; so the trial's own value is
		// added here, once.
		competing := []float64{value}
		for _, t := range trials {
			if v, ok := rungValue(t, key); ok {
				competing = append(competing, v)
			}
		}
		if len(competing) <= p.BootstrapCount {
			return true, record
		}
		if !promotable(value, competing, eta, study.Direction) {
			return true, record
		}
	}
}

// rungKey is the system attribute Optuna records a trial's value at the end
// of rung k under.
func rungKey(k int) string { return "completed_rung_" + strconv.Itoa(k) }

// completedRungs is Optuna's _get_current_rung: how many rungs in a row,
// from 0, the trial has recorded.
func completedRungs(t storage.FrozenTrial) int {
	k := 0
	for {
		if _, ok := t.SystemAttrs[rungKey(k)]; !ok {
			return k
		}
		k++
	}
}

// rungValue is t's recorded value for the rung key. Python's json writes a
// non-finite float as a bare token, which storage hands back as its text.
func rungValue(t storage.FrozenTrial, key string) (float64, bool) {
	switch v := t.SystemAttrs[key].(type) {
	case float64:
		return v, true
	case string:
		switch v {
		case "Infinity":
			return math.Inf(1), true
		case "-Infinity":
			return math.Inf(-1), true
		case "NaN":
			return math.NaN(), true
		}
	}
	return 0, false
}

// lastCompleteStep is the last reported step of the study's COMPLETE
// trials, the most of them, as Optuna sizes an auto resource from; false
// while no COMPLETE trial has reported.
func lastCompleteStep(trials []storage.FrozenTrial) (int, bool) {
	last := -1
	for _, t := range trials {
		if s, _, ok := t.LastStep(); ok && t.State == storage.Complete {
			last = max(last, s)
		}
	}
	return last, last >= 0
}

// sizes holds, per study, the resource a pruner sized itself with at the
// first check that could: Optuna's pruners estimate an auto resource once
// and keep it, and a Runner serves several studies with one pruner.
type sizes struct {
	mu sync.Mutex
	by map[int64]int
}

// get returns the study's size, estimating it first if it has none; false
// while estimate cannot.
func (s *sizes) get(study int64, estimate func() (int, bool)) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.by[study]; ok {
		return v, true
	}
	v, ok := estimate()
	if !ok {
		return 0, false
	}
	if s.by == nil {
		s.by = map[int64]int{}
	}
	s.by[study] = v
	return v, true
}

// known returns the study's size if one was set.
func (s *sizes) known(study int64) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.by[study]
	return v, ok
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

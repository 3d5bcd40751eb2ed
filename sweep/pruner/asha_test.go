package pruner

import (
	"encoding/json"
	"maps"
	"math"
	"os"
	"testing"
	"time"

	"github.com/readsweep/readsweep/sweep/storage"
)

// TestSuccessiveHalvingMatchesOptuna replays the golden scenarios (made by
// testdata/make_asha_golden.py with Optuna's SuccessiveHalvingPruner):
// trials one after another, a prune check after every report, a pruned
// trial reporting no more. Every trial must be pruned at the same step as
// under Optuna, or not at all.
func TestSuccessiveHalvingMatchesOptuna(t *testing.T) {
	raw, err := os.ReadFile("testdata/asha_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Scenarios []struct {
			MinResource          int          `json:"min_resource"`
			ReductionFactor      int          `json:"reduction_factor"`
			MinEarlyStoppingRate int          `json:"min_early_stopping_rate"`
			BootstrapCount       int          `json:"bootstrap_count"`
			Direction            string       `json:"direction"`
			Values               [][]*float64 `json:"values"`
			PrunedAt             []int        `json:"pruned_at"`
		}
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	pruned := 0
	for si, sc := range golden.Scenarios {
		p := &SuccessiveHalving{MinResource: sc.MinResource, ReductionFactor: sc.ReductionFactor,
			MinEarlyStoppingRate: sc.MinEarlyStoppingRate, BootstrapCount: sc.BootstrapCount}
		dir, _ := storage.ParseDirection(sc.Direction)
		study := storage.Study{Direction: dir}
		var trials []storage.FrozenTrial
		for i, curve := range sc.Values {
			trials = append(trials, goldenTrial(i))
			at := replayReports(trials, curve, func(cur storage.FrozenTrial) bool { return check(p, study, trials, cur) })
			if at >= 0 {
				pruned++
			}
			if at != sc.PrunedAt[i] {
				t.Fatalf("scenario %d (%+v, %s), trial %d: pruned at step %d, Optuna at %d", si, p, sc.Direction, i, at, sc.PrunedAt[i])
			}
		}
	}
	if pruned < 100 {
		t.Fatalf("only %d trials pruned: the goldens exercise little", pruned)
	}
}

// goldenTrial is trial i of a golden scenario, RUNNING: trials start one
// after another, a minute apart.
func goldenTrial(i int) storage.FrozenTrial {
	return storage.FrozenTrial{ID: int64(i + 1), Number: i, State: storage.Running, Intermediate: map[int]float64{},
		SystemAttrs: map[string]any{}, Start: time.Date(2026, 12, 2, 0, i, 0, 0, time.UTC)}
}

// replayReports makes the last of trials report curve's values one step at
// a time (nil: NaN), asking prune after each, and finishes it as Optuna's
// golden script did: PRUNED at the step prune said so (returned; -1 when
// never), else FAIL if its last value is missing, else COMPLETE with it.
func replayReports(trials []storage.FrozenTrial, curve []*float64, prune func(storage.FrozenTrial) bool) int {
	cur := &trials[len(trials)-1]
	at := -1
	for step, v := range curve {
		val := math.NaN()
		if v != nil {
			val = *v
		}
		cur.Intermediate[step] = val
		if prune(*cur) {
			at = step
			break
		}
	}
	cur.Complete = cur.Start.Add(30 * time.Second)
	switch last := curve[len(curve)-1]; {
	case at >= 0:
		cur.State = storage.Pruned
	case last == nil:
		cur.State = storage.Fail
	default:
		cur.State = storage.Complete
		cur.Value = last
	}
	return at
}

// checker is a pruner that records rung values.
type checker interface {
	Prune(storage.Study, []storage.FrozenTrial, storage.FrozenTrial) (bool, map[string]any)
}

// check asks p about cur, one of trials, and stores what the check
// records on cur, as the orchestrator does before its next check.
func check(p checker, study storage.Study, trials []storage.FrozenTrial, cur storage.FrozenTrial) bool {
	stop, record := p.Prune(study, trials, cur)
	maps.Copy(cur.SystemAttrs, record)
	return stop
}

// TestAutoMinResourceIsFixedAtTheFirstCheckThatCanSizeIt: min_resource
// auto is sized, per study, at the first check that finds a COMPLETE
// trial, from the most steps of the COMPLETE trials then (1,200: 12), and
// kept when a longer trial completes later, as an Optuna pruner keeps its
// estimate; until then a check records nothing.
func TestAutoMinResourceIsFixedAtTheFirstCheckThatCanSizeIt(t *testing.T) {
	p := NewSuccessiveHalving()
	study := storage.Study{ID: 7, Direction: storage.Maximize}
	trial := func(number, last int, state storage.TrialState) storage.FrozenTrial {
		return storage.FrozenTrial{ID: int64(number + 1), Number: number, State: state,
			Intermediate: map[int]float64{last: 0.5}, SystemAttrs: map[string]any{}}
	}
	running := trial(0, 2000, storage.Running)
	if stop, record := p.Prune(study, []storage.FrozenTrial{running}, running); stop || record != nil {
		t.Fatalf("with no trial COMPLETE: pruned %v, recorded %v (want neither)", stop, record)
	}
	if _, ok := p.sized.known(study.ID); ok {
		t.Fatal("sized with no trial COMPLETE")
	}
	trials := []storage.FrozenTrial{running, trial(1, 450, storage.Complete), trial(2, 1200, storage.Complete)}
	_, record := p.Prune(study, trials, running)
	if n, _ := p.sized.known(study.ID); n != 12 {
		t.Fatalf("min_resource sized %d, want 1200/100 = 12", n)
	}
	// Step 2000 passes the rungs ending at 12, 48, 192 and 768: a trial
	// unchecked until now records them all with its one value.
	if len(record) != 4 || record["completed_rung_3"] != 0.5 {
		t.Fatalf("recorded %v, want completed_rung_0..3 = 0.5", record)
	}
	trials = append(trials, trial(3, 5000, storage.Complete))
	p.Prune(study, trials, trial(4, 20, storage.Running))
	if n, _ := p.sized.known(study.ID); n != 12 {
		t.Fatalf("min_resource resized to %d by a later trial, want it kept at 12", n)
	}
	if _, ok := p.sized.known(8); ok {
		t.Fatal("another study was sized too")
	}
}

package pruner

import (
	"encoding/json"
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
		p := SuccessiveHalving{MinResource: sc.MinResource, ReductionFactor: sc.ReductionFactor,
			MinEarlyStoppingRate: sc.MinEarlyStoppingRate, BootstrapCount: sc.BootstrapCount}
		dir, _ := storage.ParseDirection(sc.Direction)
		study := storage.Study{Direction: dir}
		var trials []storage.FrozenTrial
		for i, curve := range sc.Values {
			trials = append(trials, goldenTrial(i))
			at := replayReports(trials, curve, func(cur storage.FrozenTrial) bool { return p.Prune(study, trials, cur) })
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
		Start: time.Date(2026, 12, 2, 0, i, 0, 0, time.UTC)}
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

// TestAutoMinResourceIsTheFirstCompleteTrials: min_resource auto is sized
// once, by the first trial to complete (450 steps: 4), as Optuna keeps its
// first estimate; a later, longer trial (1,200 steps) does not resize the
// rungs.
func TestAutoMinResourceIsTheFirstCompleteTrials(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	trial := func(id int64, last int, end time.Duration) storage.FrozenTrial {
		return storage.FrozenTrial{ID: id, State: storage.Complete, Intermediate: map[int]float64{last: 1},
			Start: t0, Complete: t0.Add(end)}
	}
	trials := []storage.FrozenTrial{trial(2, 1200, 2*time.Minute), trial(1, 450, time.Minute)}
	if last, first, ok := firstComplete(trials); !ok || last != 450 || !first.Equal(t0.Add(time.Minute)) {
		t.Fatalf("sized by the trial ending at %v with %d steps (%v); want the first to complete, 450 steps", first, last, ok)
	}
	if _, _, ok := firstComplete(nil); ok {
		t.Fatal("sized with no trial complete (want: not sized yet)")
	}
}

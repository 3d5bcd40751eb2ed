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
			start := time.Date(2026, 12, 2, 0, i, 0, 0, time.UTC) // one after another, a minute each
			trials = append(trials, storage.FrozenTrial{ID: int64(i + 1), Number: i, State: storage.Running, Intermediate: map[int]float64{},
				Start: start})
			cur := &trials[len(trials)-1]
			at := -1
			for step, v := range curve {
				val := math.NaN()
				if v != nil {
					val = *v
				}
				cur.Intermediate[step] = val
				if p.Prune(study, trials, *cur) {
					at = step
					break
				}
			}
			cur.Complete = cur.Start.Add(30 * time.Second)
			switch last := curve[len(curve)-1]; {
			case at >= 0:
				cur.State = storage.Pruned
				pruned++
			case last == nil:
				cur.State = storage.Fail
			default:
				cur.State = storage.Complete
				cur.Value = last
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

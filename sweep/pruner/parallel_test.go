package pruner

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"testing"

	"github.com/readsweep/readsweep/sweep/storage"
)

// TestPrunersMatchOptunaWithTrialsAtOnce replays the golden event logs
// (made by testdata/make_parallel_golden.py through Optuna's own
// SuccessiveHalvingPruner and HyperbandPruner) with three or five trials
// running at once: their reports, checks and completions interleaved, a
// trial's completion told some events after its last report. Every check
// must decide as Optuna's did, every new trial's sampler (Hyperband) must
// see the same trials, and every trial must end with the same
// completed_rung_k attributes, so that Optuna could continue the study.
func TestPrunersMatchOptunaWithTrialsAtOnce(t *testing.T) {
	raw, err := os.ReadFile("testdata/parallel_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Scenarios []struct {
			Pruner               string            `json:"pruner"`
			Study                string            `json:"study"`
			Workers              int               `json:"workers"`
			MinResource          int               `json:"min_resource"`
			MaxResource          int               `json:"max_resource"`
			ReductionFactor      int               `json:"reduction_factor"`
			MinEarlyStoppingRate int               `json:"min_early_stopping_rate"`
			BootstrapCount       int               `json:"bootstrap_count"`
			Direction            string            `json:"direction"`
			Events               []json.RawMessage `json:"events"`
			Rungs                []map[string]any  `json:"rungs"`
			Seen                 [][]int           `json:"seen"`
		}
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	checks, pruned := 0, 0
	for si, sc := range golden.Scenarios {
		var p checker
		var h *Hyperband
		switch sc.Pruner {
		case "asha":
			p = &SuccessiveHalving{MinResource: sc.MinResource, ReductionFactor: sc.ReductionFactor,
				MinEarlyStoppingRate: sc.MinEarlyStoppingRate, BootstrapCount: sc.BootstrapCount}
		case "hyperband":
			h = &Hyperband{MinResource: sc.MinResource, MaxResource: sc.MaxResource, ReductionFactor: sc.ReductionFactor, BootstrapCount: sc.BootstrapCount}
			p = h
		default:
			t.Fatalf("scenario %d: unknown pruner %q", si, sc.Pruner)
		}
		dir, _ := storage.ParseDirection(sc.Direction)
		study := storage.Study{ID: int64(si + 1), Name: sc.Study, Direction: dir}
		name := fmt.Sprintf("scenario %d (%s %+v, %s, %d at once)", si, sc.Pruner, p, sc.Direction, sc.Workers)
		var trials []storage.FrozenTrial
		for ei, ev := range sc.Events {
			var e []any
			if err := json.Unmarshal(ev, &e); err != nil {
				t.Fatalf("%s, event %d: %v", name, ei, err)
			}
			n := int(e[1].(float64))
			switch e[0] {
			case "ask":
				trials = append(trials, goldenTrial(n))
				if h == nil {
					continue
				}
				var seen []int
				for _, s := range h.SamplerTrials(study, trials, n) {
					seen = append(seen, s.Number)
				}
				if !slices.Equal(seen, sc.Seen[n]) {
					t.Fatalf("%s: trial %d's sampler saw trials %v, under Optuna %v", name, n, seen, sc.Seen[n])
				}
			case "report":
				step, value := int(e[2].(float64)), math.NaN()
				if v, ok := e[3].(float64); ok {
					value = v
				}
				trials[n].Intermediate[step] = value
				got := check(p, study, trials, trials[n])
				checks++
				if got {
					pruned++
				}
				if want := e[4].(bool); got != want {
					t.Fatalf("%s, event %d: trial %d at step %d (%v) pruned %v, under Optuna %v; its rungs %v",
						name, ei, n, step, value, got, want, trials[n].SystemAttrs)
				}
			case "tell":
				state, err := storage.ParseTrialState(e[2].(string))
				if err != nil {
					t.Fatalf("%s, event %d: %v", name, ei, err)
				}
				trials[n].State = state
				if state == storage.Complete {
					_, v, _ := trials[n].LastStep()
					trials[n].Value = &v
				}
			default:
				t.Fatalf("%s, event %d: unknown event %v", name, ei, e[0])
			}
		}
		for n, want := range sc.Rungs {
			if !maps.EqualFunc(trials[n].SystemAttrs, want, func(a, b any) bool { return a == b }) {
				t.Fatalf("%s: trial %d recorded %v, under Optuna %v", name, n, trials[n].SystemAttrs, want)
			}
		}
	}
	if checks < 20000 || pruned < 4000 {
		t.Fatalf("%d checks, %d pruned: the goldens exercise little", checks, pruned)
	}
	t.Logf("%d scenarios, %d checks, %d pruned", len(golden.Scenarios), checks, pruned)
}

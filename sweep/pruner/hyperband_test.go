package pruner

import (
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/readsweep/readsweep/sweep/storage"
)

// TestHyperbandMatchesOptuna replays the golden scenarios (made by
// testdata/make_hyperband_golden.py with Optuna's HyperbandPruner): trials
// one after another, a prune check after every report, a pruned trial
// reporting no more. Every trial must be pruned at the same step as under
// Optuna, or not at all, fall in the same bracket, and its sampler must be
// shown the same trials.
func TestHyperbandMatchesOptuna(t *testing.T) {
	raw, err := os.ReadFile("testdata/hyperband_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Scenarios []struct {
			Study           string       `json:"study"`
			MinResource     int          `json:"min_resource"`
			MaxResource     int          `json:"max_resource"`
			ReductionFactor int          `json:"reduction_factor"`
			BootstrapCount  int          `json:"bootstrap_count"`
			Direction       string       `json:"direction"`
			Budgets         []int        `json:"budgets"`
			Brackets        []int        `json:"brackets"`
			Values          [][]*float64 `json:"values"`
			PrunedAt        []int        `json:"pruned_at"`
			Seen            [][]int      `json:"seen"`
		}
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	pruned, filtered := 0, 0
	for si, sc := range golden.Scenarios {
		h := &Hyperband{MinResource: sc.MinResource, MaxResource: sc.MaxResource, ReductionFactor: sc.ReductionFactor, BootstrapCount: sc.BootstrapCount}
		dir, _ := storage.ParseDirection(sc.Direction)
		study := storage.Study{Name: sc.Study, Direction: dir}
		var trials []storage.FrozenTrial
		for i, curve := range sc.Values {
			trials = append(trials, goldenTrial(i))
			var seen []int
			for _, s := range h.SamplerTrials(study, trials, i) {
				seen = append(seen, s.Number)
			}
			if !slices.Equal(seen, sc.Seen[i]) {
				t.Fatalf("scenario %d (%+v, %s), trial %d: the sampler saw trials %v, under Optuna %v", si, h, sc.Study, i, seen, sc.Seen[i])
			}
			if len(seen) < i+1 {
				filtered++
			}
			at := replayReports(trials, curve, func(cur storage.FrozenTrial) bool { return check(h, study, trials, cur) })
			if at >= 0 {
				pruned++
			}
			if at != sc.PrunedAt[i] {
				t.Fatalf("scenario %d (%+v, %s, %s), trial %d: pruned at step %d, Optuna at %d", si, h, sc.Study, sc.Direction, i, at, sc.PrunedAt[i])
			}
		}
		b, ok := h.current(study)
		if !ok || !slices.Equal(b.budgets, sc.Budgets) {
			t.Fatalf("scenario %d (%+v): bracket budgets %v, Optuna's %v", si, h, b.budgets, sc.Budgets)
		}
		for i, want := range sc.Brackets {
			if got := b.of(study, i); got != want {
				t.Fatalf("scenario %d (%+v, %s): trial %d in bracket %d, Optuna's %d", si, h, sc.Study, i, got, want)
			}
		}
	}
	if pruned < 1000 || filtered < 1000 {
		t.Fatalf("only %d trials pruned and %d samplings shown part of a study: the goldens exercise little", pruned, filtered)
	}
}

// TestHyperbandBracketCounts checks the number of brackets over a grid of
// max_resource × min_resource × reduction_factor against Optuna's, which
// floors a float logarithm: at exact powers the answer hangs on the last
// bit (log_3 243 is 4.999999999999999 in Python, 5 with Go's math.Log).
func TestHyperbandBracketCounts(t *testing.T) {
	raw, err := os.ReadFile("testdata/hyperband_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Counts []int `json:"n_brackets"`
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	if len(golden.Counts) != 1000*4*5 {
		t.Fatalf("%d bracket counts in the golden file, want 20000", len(golden.Counts))
	}
	i := 0
	for maxRes := 1; maxRes <= 1000; maxRes++ {
		for minRes := 1; minRes <= 4; minRes++ {
			for eta := 2; eta <= 6; eta++ {
				h := &Hyperband{MinResource: minRes, MaxResource: maxRes, ReductionFactor: eta}
				b, _ := h.bracketsFor(maxRes)
				if want := golden.Counts[i]; len(b.budgets) != max(want, 0) {
					t.Fatalf("%+v: %d brackets, Optuna %d", h, len(b.budgets), want)
				}
				i++
			}
		}
	}
}

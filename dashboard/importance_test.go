package dashboard

import (
	"encoding/json"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/sweep/storage"
)

// TestImportancesAreOptunas holds the importance to Optuna's own numbers:
// testdata/ped_anova.json has eight studies (every kind of distribution,
// maximisation, conditional parameters in several domains, ties, infinite
// values, a single parameter, six trials, two objectives) and what
// get_param_importances returned for each (scripts/peers/ped_anova.py).
func TestImportancesAreOptunas(t *testing.T) {
	b, err := os.ReadFile("testdata/ped_anova.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Optuna  string
		Studies []struct {
			Name      string
			Direction string
			Trials    []struct {
				Number        int
				State         string
				Value         any
				Params        map[string]float64
				Distributions map[string]storage.Distribution
			}
			Importances map[string]float64
		}
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Studies) < 9 {
		t.Fatalf("testdata has %d studies", len(ref.Studies))
	}
	worst := 0.0
	for _, s := range ref.Studies {
		dir, err := storage.ParseDirection(strings.ToLower(s.Direction))
		if err != nil {
			t.Fatal(err)
		}
		var trials []storage.FrozenTrial
		for _, tr := range s.Trials {
			state, err := storage.ParseTrialState(tr.State)
			if err != nil {
				t.Fatal(err)
			}
			ft := storage.FrozenTrial{ID: int64(tr.Number + 1), Number: tr.Number, State: state, Params: tr.Params, Distributions: tr.Distributions}
			switch v := tr.Value.(type) {
			case float64:
				ft.Value = &v
			case string:
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatal(err)
				}
				ft.Value = &f
			}
			trials = append(trials, ft)
		}
		got := Importances(trials, dir)
		if len(got) != len(s.Importances) {
			t.Errorf("%s: %d importances, Optuna %s has %d", s.Name, len(got), ref.Optuna, len(s.Importances))
			continue
		}
		for i, imp := range got {
			want, ok := s.Importances[imp.Param]
			if !ok {
				t.Errorf("%s: importance of %q, which Optuna does not name", s.Name, imp.Param)
				continue
			}
			if want > 0 {
				worst = max(worst, math.Abs(imp.Value-want)/want)
			}
			if math.Abs(imp.Value-want) > 1e-12+1e-9*want {
				t.Errorf("%s: %s = %.17g, Optuna %s says %.17g", s.Name, imp.Param, imp.Value, ref.Optuna, want)
			}
			if i > 0 && got[i-1].Value < imp.Value {
				t.Errorf("%s: not largest first: %v", s.Name, got)
			}
		}
	}
	t.Logf("largest relative difference from Optuna %s: %.2g", ref.Optuna, worst)
}

// TestImportancesWithoutEnoughTrials: nothing sampled, nothing finished or
// one trial gives equal shares or nothing, never NaN.
func TestImportancesWithoutEnoughTrials(t *testing.T) {
	if got := Importances(nil, storage.Minimize); got != nil {
		t.Errorf("no trials: %v", got)
	}
	one := 0.5
	d := map[string]storage.Distribution{"lr": storage.Float(1e-5, 1e-2, true), "x": storage.Float(0, 1, false)}
	trials := []storage.FrozenTrial{
		{ID: 1, State: storage.Complete, Value: &one, Params: map[string]float64{"lr": 1e-3, "x": 0.5}, Distributions: d},
		{ID: 2, State: storage.Running, Params: map[string]float64{"lr": 1e-4, "x": 0.1}, Distributions: d},
	}
	got := Importances(trials, storage.Maximize)
	if len(got) != 2 || got[0].Value != 0.5 || got[1].Value != 0.5 {
		t.Errorf("one finished trial: %v, want equal shares", got)
	}
}

// TestImportancesOnDamagedTrials: values outside their domain (a choice
// index past the choices, NaN, beyond the bounds) and domains Optuna
// rejects, as a hand-edited database may hold, are left out; nothing
// panics and every share is a number.
func TestImportancesOnDamagedTrials(t *testing.T) {
	cat := storage.Distribution{Kind: storage.CategoricalDist, Choices: []any{"a", "b"}}
	bad := storage.Distribution{Kind: storage.FloatDist, Low: 0, High: 1, Log: true}
	var trials []storage.FrozenTrial
	for i := range 40 {
		v := float64(i)
		p := map[string]float64{"c": float64(i % 2), "x": float64(i) / 40, "l": 0.5}
		switch i % 5 {
		case 0:
			p["c"] = 7
		case 1:
			p["x"] = math.NaN()
		case 2:
			p["x"] = 9
		}
		trials = append(trials, storage.FrozenTrial{ID: int64(i + 1), Number: i, State: storage.Complete, Value: &v, Params: p,
			Distributions: map[string]storage.Distribution{"c": cat, "x": storage.Float(0, 1, false), "l": bad}})
	}
	got := Importances(trials, storage.Minimize)
	if len(got) != 3 {
		t.Fatalf("importances %v", got)
	}
	for _, imp := range got {
		if math.IsNaN(imp.Value) || imp.Value < 0 || imp.Value > 1 {
			t.Errorf("%s = %v", imp.Param, imp.Value)
		}
	}
}

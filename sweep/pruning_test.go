package sweep

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/readsweep/readsweep/sweep/storage"
	"github.com/readsweep/readsweep/trial"
)

// checkLog is a pruner that logs every check in the order the study's
// checks were made, with the asks and tells each one's snapshot of the
// study first shows: what Optuna's pruner would have seen, event by event.
type checkLog struct {
	Pruner
	mu     sync.Mutex
	seen   map[int]storage.TrialState
	events [][]any
	late   int // checks that recorded two or more rungs at once
}

func (c *checkLog) Prune(study storage.Study, trials []storage.FrozenTrial, trial storage.FrozenTrial) (bool, map[string]any) {
	stop, record := c.Pruner.Prune(study, trials, trial)
	c.mu.Lock()
	defer c.mu.Unlock()
	sorted := append([]storage.FrozenTrial(nil), trials...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Number < sorted[j].Number })
	for _, t := range sorted {
		if _, ok := c.seen[t.Number]; !ok {
			c.events = append(c.events, []any{"ask", t.Number})
			c.seen[t.Number] = storage.Running
		}
	}
	for _, t := range sorted {
		if t.State.IsFinished() && !c.seen[t.Number].IsFinished() {
			c.events = append(c.events, []any{"tell", t.Number, t.State.String(), t.Value})
			c.seen[t.Number] = t.State
		}
	}
	step, value, _ := trial.LastStep()
	c.events = append(c.events, []any{"report", trial.Number, step, value, stop})
	if len(record) > 1 {
		c.late++
	}
	return stop, record
}

// staggered runs trial N in process after a delay of (N mod 3) × 25 ms,
// so that three trials at once are at different epochs when the first
// completes: the moment a pruner sizes itself finds trials mid-way.
func staggered(ctx context.Context, p Proc) error {
	spec, err := stdinSpec(p)
	if err != nil {
		return err
	}
	select {
	case <-time.After(time.Duration(spec.Number%3) * 25 * time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}
	return trial.Run(ctx, spec, nil, nil, p.Stdout, p.Stderr)
}

// TestParallelPruningReplaysThroughOptuna runs a study with three trials at
// once under ASHA (min_resource auto) and under Hyperband (max_resource
// auto), then replays every prune check, in the order made, through
// Optuna's own pruner (testdata/optuna_replay.py): every decision must
// agree, and the completed_rung_k attributes in the database, read by
// Optuna, must be those Optuna records.
func TestParallelPruningReplaysThroughOptuna(t *testing.T) {
	for _, tc := range []struct{ name, pruner string }{
		{"asha", "{name: asha, reduction_factor: 2}"},
		{"hyperband", "{name: hyperband, reduction_factor: 2}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, store := testRunner(t, `trainer: synthetic
datasets: [sst2]
methods:
  read: [{cell: gru, epoch_ms: 4}]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: 30
parallel: 3
sampler: {seed: 11, n_startup_trials: 6}
training: {max_epochs: 16, patience: 2}
pruner: `+tc.pruner+"\n", staggered)
			log := &checkLog{Pruner: r.Pruner, seen: map[int]storage.TrialState{}}
			r.Pruner = log
			if _, err := r.Run(context.Background(), Plan(r.Config, nil)); err != nil {
				t.Fatal(err)
			}
			studies, err := store.Studies(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			trials, _ := store.Trials(context.Background(), studies[0].ID)
			if n := storage.Count(trials); n[storage.Pruned] == 0 || n[storage.Complete] == 0 {
				t.Fatalf("states %v: want some trials pruned and some complete", n)
			}
			if log.late == 0 {
				t.Fatal("no check recorded two rungs at once: no trial ran across the moment the pruner sized itself, which is what this test is for")
			}
			pc := r.Config.Pruner
			run := map[string]any{"study": studies[0].Name, "direction": "maximize", "events": log.events,
				"pruner": map[string]any{"name": pc.Name, "min_resource": pc.MinResource, "max_resource": pc.MaxResource,
					"reduction_factor": pc.ReductionFactor, "min_early_stopping_rate": pc.MinEarlyStoppingRate,
					"bootstrap_count": pc.BootstrapCount}}
			if tc.name == "hyperband" {
				run["pruner"].(map[string]any)["min_resource"] = max(pc.MinResource, 1)
			}
			raw, _ := json.Marshal(run)
			events := filepath.Join(t.TempDir(), "events.json")
			if err := os.WriteFile(events, raw, 0o644); err != nil {
				t.Fatal(err)
			}
			url := "sqlite:///" + filepath.Join(filepath.Dir(r.Config.OutputDir), "r.db") // where testRunner put it
			out, err := exec.Command("/usr/bin/python3", "testdata/optuna_replay.py", events, url).CombinedOutput()
			if err != nil {
				if strings.Contains(string(out), "No module named 'optuna'") || os.IsNotExist(err) {
					t.Fatalf("Optuna is needed for this test: apt-get install python3-optuna (%v: %s)", err, out)
				}
				t.Fatalf("Optuna's pruner disagrees with this run's (%v):\n%s", err, out)
			}
			t.Logf("%s (%d checks recorded several rungs at once)", strings.TrimSpace(string(out)), log.late)
		})
	}
}

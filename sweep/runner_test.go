package sweep

import (
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"testing"

	"github.com/readsweep/readsweep/sweep/storage"
	"github.com/readsweep/readsweep/trial"
)

// inProcess replaces the trial subprocess with the synthetic trainer run in
// this process, reading the spec the runner wrote to stdin.
func inProcess(ctx context.Context, p Proc) error {
	raw, err := io.ReadAll(p.Stdin)
	if err != nil {
		return err
	}
	var spec trial.Spec
	if err := json.Unmarshal(raw, &spec); err != nil {
		return err
	}
	return trial.Run(ctx, spec, nil, nil, p.Stdout, p.Stderr)
}

func TestRunnerInProcess(t *testing.T) {
	dir := t.TempDir()
	cfg, err := ParseConfig("test.yaml", []byte(`trainer: synthetic
datasets: [sst2, rte, cola]
methods:
  read: [{cell: gru}, {cell: lstm}]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: 12
sampler: {seed: 4, n_startup_trials: 4}
pruner: {name: median, n_startup_trials: 2, n_warmup_steps: 1}
training: {max_epochs: 5}
parallel: 3
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg.OutputDir = filepath.Join(dir, "runs")
	store, err := storage.OpenSQLite(filepath.Join(dir, "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	sampler, _ := NewSampler(cfg.Sampler)
	var progressCalls int
	r := &Runner{Config: cfg, Storage: store, Sampler: sampler, Pruner: NewPruner(cfg.Pruner), Exec: inProcess,
		Progress: func(done, total int, running []string) { progressCalls++ }}
	plan := Plan(cfg, nil)
	res, err := r.Run(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Finished) != 6 || res.States[storage.Fail] != 0 || res.States[storage.Complete]+res.States[storage.Pruned] != 72 {
		t.Errorf("result %+v", res)
	}
	if res.States[storage.Pruned] == 0 {
		t.Error("nothing pruned")
	}
	if progressCalls == 0 {
		t.Error("progress never reported")
	}
	sel, err := Best(context.Background(), store, "read", nil)
	if err != nil {
		t.Fatal(err)
	}
	chosen, ok := sel.Chosen()
	if !ok || !chosen.Complete || len(chosen.Best) != 3 {
		t.Fatalf("selection %+v", sel)
	}
	for _, a := range sel.Archs[1:] {
		if a.Mean > chosen.Mean {
			t.Errorf("chosen %s (%.4f) but %s has mean %.4f", chosen.Arch, chosen.Mean, a.Arch, a.Mean)
		}
	}
	// A second run finds nothing to do.
	res, err = r.Run(context.Background(), plan)
	if err != nil || len(res.States) != 0 {
		t.Errorf("second run: %+v, %v", res, err)
	}
}

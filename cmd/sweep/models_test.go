package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/trial"
)

// TestModelsAfterTheSweep follows the README's "After the sweep": a sweep
// and its final runs, `sweep best --export` of the chosen LoRA's final
// models, `sweep predict` on each run's test split (the score Table 1
// averages, the trial's own test score), on a GLUE TSV file with the
// leaderboard's file written, and on a merged export; then the mistakes a
// user makes, each refused with the file or trial named.
func TestModelsAfterTheSweep(t *testing.T) {
	dir := t.TempDir()
	tinyModel(t, dir)
	fixture := mustAbs(t, "../../glue/testdata/fixture")
	writeConfig(t, dir, `storage: sqlite:///models.db
model: tiny-t5
data_dir: `+fixture+`
datasets: [sst2]
methods:
  lora: [{rank: 4}]
search:
  lr: {low: 1.0e-2, high: 3.0e-2, log: true}
trials: 2
training: {max_epochs: 3, batch_size: 32, seeds: [0, 1]}
`)
	for _, cmd := range [][]string{{"run", "sweep.yaml"}, {"final", "sweep.yaml"}} {
		if _, errOut, code := sweepCmd(t, dir, cmd...); code != 0 {
			t.Fatalf("sweep %s: exit %d\n%s", cmd[0], code, errOut)
		}
	}
	studies := load(t, filepath.Join(dir, "models.db"))
	finals := studies["final/lora/rank-4/sst2"]
	if len(finals) != 2 {
		t.Fatalf("final runs: %v", finals)
	}
	for _, tr := range studies["lora/rank-4/sst2"] {
		if _, ok := tr.UserAttrs["model_dir"]; ok {
			t.Errorf("search trial #%d saved a model (save_model defaults to none there)", tr.Number)
		}
	}

	stdout, errOut, code := sweepCmd(t, dir, "best", "--method", "lora", "--config", "sweep.yaml", "--export", "out")
	if code != 0 {
		t.Fatalf("best --export: exit %d\n%s%s", code, stdout, errOut)
	}
	for _, tr := range finals {
		seed := int(math.Round(tr.Params["seed"]))
		model := filepath.Join("out", "sst2", fmt.Sprintf("seed-%d", seed))
		if want := fmt.Sprintf("final/lora/rank-4/sst2#%d → %s", tr.Number, model); !strings.Contains(stdout, want) {
			t.Errorf("best --export does not say %q:\n%s", want, stdout)
		}
		for _, f := range []string{"adapter_config.json", "adapter_model.safetensors", trial.ModelInfoName} {
			if _, err := os.Stat(filepath.Join(dir, model, f)); err != nil {
				t.Errorf("seed %d: %v", seed, err)
			}
		}
		_, errOut, code := sweepCmd(t, dir, "predict", "--model", model, "--split", "test", "--out", "pred.tsv")
		want := fmt.Sprintf("accuracy %.2f", tr.UserAttrs["test"].(float64))
		if code != 0 || !strings.Contains(errOut, want) {
			t.Errorf("seed %d: predict on the test split: exit %d, want %q (the trial's test score):\n%s", seed, code, want, errOut)
		}
		raw, _ := os.ReadFile(filepath.Join(dir, "pred.tsv"))
		if lines := strings.Split(strings.TrimSpace(string(raw)), "\n"); len(lines) != 41 || lines[0] != "index\tprediction" {
			t.Errorf("seed %d: predictions file of %d lines:\n%s", seed, len(lines), raw)
		}
	}

	// Any GLUE file, the leaderboard's file beside the predictions.
	model := filepath.Join("out", "sst2", "seed-0")
	stdout, errOut, code = sweepCmd(t, dir, "predict", "--model", model, "--input", filepath.Join(fixture, "SST-2", "dev.tsv"), "--glue-submission", "glue")
	if code != 0 || !strings.Contains(errOut, "80 sst2 examples") || !strings.Contains(errOut, "accuracy ") {
		t.Fatalf("predict --input dev.tsv: exit %d\n%s", code, errOut)
	}
	if rows := strings.Split(strings.TrimSpace(stdout), "\n"); len(rows) != 81 || !strings.HasPrefix(rows[1], "0\t") {
		t.Errorf("predict printed %d rows:\n%.300s", len(rows), stdout)
	}
	sub, err := os.ReadFile(filepath.Join(dir, "glue", "SST-2.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(string(sub)), "\n")
	if len(rows) != 81 || rows[0] != "index\tprediction" {
		t.Fatalf("SST-2.tsv has %d rows", len(rows))
	}
	for _, r := range rows[1:] {
		if !strings.HasSuffix(r, "\t0") && !strings.HasSuffix(r, "\t1") {
			t.Fatalf("SST-2.tsv row %q: the leaderboard wants 0 or 1", r)
		}
	}

	// A merged export is a plain T5 folder that predicts as the adapter did.
	ref := fmt.Sprintf("final/lora/rank-4/sst2#%d", finals[0].Number)
	if stdout, errOut, code := sweepCmd(t, dir, "export", ref, "--out", "merged", "--merge", "--config", "sweep.yaml"); code != 0 || !strings.Contains(stdout, "merged into a Hugging Face T5 folder") {
		t.Fatalf("export --merge: exit %d\n%s%s", code, stdout, errOut)
	}
	for _, f := range []string{"config.json", "model.safetensors", "spiece.model"} {
		if _, err := os.Stat(filepath.Join(dir, "merged", f)); err != nil {
			t.Error(err)
		}
	}
	_, errOut, code = sweepCmd(t, dir, "predict", "--model", "merged", "--split", "test")
	if want := fmt.Sprintf("accuracy %.2f", finals[0].UserAttrs["test"].(float64)); code != 0 || !strings.Contains(errOut, want) {
		t.Errorf("the merged model: exit %d, want %q:\n%s", code, want, errOut)
	}

	// Mistakes.
	os.MkdirAll(filepath.Join(dir, "broken"), 0o755)
	dev, _ := os.ReadFile(filepath.Join(fixture, "SST-2", "dev.tsv"))
	os.WriteFile(filepath.Join(dir, "dev.tsv"), dev, 0o644)
	os.WriteFile(filepath.Join(dir, "SST-2.tsv"), dev, 0o644)
	fixtureCopy := filepath.Join(dir, "data")
	os.MkdirAll(filepath.Join(fixtureCopy, "SST-2"), 0o755)
	os.WriteFile(filepath.Join(fixtureCopy, "SST-2", "dev.tsv"), dev, 0o644)
	for _, f := range []string{"adapter_config.json", trial.ModelInfoName} {
		raw, _ := os.ReadFile(filepath.Join(dir, model, f))
		os.WriteFile(filepath.Join(dir, "broken", f), raw, 0o644)
	}
	weights, _ := os.ReadFile(filepath.Join(dir, model, "adapter_model.safetensors"))
	os.WriteFile(filepath.Join(dir, "broken", "adapter_model.safetensors"), weights[:len(weights)/2], 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"a search trial", []string{"export", "lora/rank-4/sst2#0", "--out", "x", "--config", "sweep.yaml"}, "lora/rank-4/sst2#0 saved no model: it ran with save_model: none"},
		{"into a full folder", []string{"export", ref, "--out", "out", "--config", "sweep.yaml"}, "the folder exists and is not empty"},
		{"no such study", []string{"export", "nosuch#1", "--out", "x", "--config", "sweep.yaml"}, `no study named "nosuch"`},
		{"another task", []string{"predict", "--model", model, "--task", "rte", "--split", "test"}, "was trained for sst2, not rte"},
		{"not a model", []string{"predict", "--model", "tiny-t5", "--split", "test"}, "tiny-t5 is not a saved model: it has no readsweep-model.json"},
		{"a truncated model", []string{"predict", "--model", "broken", "--split", "test"}, "broken/adapter_model.safetensors"},
		{"a file of another task", []string{"predict", "--model", model, "--input", filepath.Join(fixture, "RTE", "dev.tsv")}, `no column "sentence" in the header`},
		{"no examples", []string{"predict", "--model", model}, "predict needs --input FILE"},
		{"predictions over the input", []string{"predict", "--model", model, "--input", "dev.tsv", "--out", "dev.tsv"}, "dev.tsv exists and is not a predictions file"},
		{"predictions over the data", []string{"predict", "--model", model, "--split", "test", "--out", filepath.Join(fixtureCopy, "SST-2", "dev.tsv")}, "exists and is not a predictions file"},
		{"a leaderboard file over the input", []string{"predict", "--model", model, "--input", "SST-2.tsv", "--glue-submission", "."}, "SST-2.tsv exists and is not a predictions file"},
		{"a trial's model as csv", []string{"export", ref, "--out", "y", "--format", "csv", "--config", "sweep.yaml"}, "--format is for the trials' table"},
		{"a missing model", []string{"predict", "--model", "nosuch", "--split", "test"}, "model folder nosuch does not exist"},
	} {
		_, errOut, code := sweepCmd(t, dir, tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, want %q:\n%s", tc.name, code, tc.want, errOut)
		}
	}

	for _, f := range []string{"dev.tsv", "SST-2.tsv", filepath.Join("data", "SST-2", "dev.tsv")} {
		if raw, _ := os.ReadFile(filepath.Join(dir, f)); string(raw) != string(dev) {
			t.Errorf("%s was overwritten", f)
		}
	}
	// The base model changed under the adapter: refused by its digest.
	cfg := filepath.Join(dir, "tiny-t5", "config.json")
	raw, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(raw), `"dropout_rate": 0.1`, `"dropout_rate": 0.2`, 1)), 0o644)
	if _, errOut, code := sweepCmd(t, dir, "predict", "--model", model, "--split", "test"); code == 0 || !strings.Contains(errOut, "is not the one") {
		t.Errorf("a changed base model: exit %d\n%s", code, errOut)
	}
}

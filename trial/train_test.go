package trial

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/baselines"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/read"
	"github.com/readsweep/readsweep/t5"
)

// tinyModel writes a random 2-layer T5 with the test tokenizer.
func tinyModel(t *testing.T) string {
	t.Helper()
	tok, err := t5.LoadTokenizer("../t5/testdata/spm/tiny.model")
	if err != nil {
		t.Fatal(err)
	}
	c := t5.DefaultConfig()
	c.VocabSize, c.DModel, c.DKV, c.DFF, c.NumLayers, c.NumDecoderLayers, c.NumHeads = tok.VocabSize(), 32, 8, 64, 2, 2, 4
	dir := t.TempDir()
	if err := t5.New(c, 1).Save(dir); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile("../t5/testdata/spm/tiny.model")
	os.WriteFile(filepath.Join(dir, "spiece.model"), raw, 0o644)
	return dir
}

// TestEveryMethodTrains runs one short trial per method on the GLUE
// fixture: the training loss falls and the trial ends with a final line
// carrying the metering attributes.
func TestEveryMethodTrains(t *testing.T) {
	model := tinyModel(t)
	reg := methods.Registry{}
	baselines.Register(reg)
	read.Register(reg)
	for _, tc := range []struct {
		method string
		arch   map[string]any
		lr     float64
	}{
		{"full", nil, 3e-3},
		{"bitfit", nil, 3e-2},
		{"lora", map[string]any{"rank": 4, "targets": "all_qv"}, 1e-2},
		{"adapter", map[string]any{"bottleneck": 8}, 1e-2},
		{"prompt", map[string]any{"prompts": 4}, 3e-2},
		{"read", map[string]any{"hidden": 16}, 1e-2},
		{"read", map[string]any{"hidden": 16, "cell": "lstm", "agg": "mean"}, 1e-2},
		{"read", map[string]any{"hidden": 16, "cell": "rnn", "merge": "pre_norm"}, 1e-2},
		{"read", map[string]any{"hidden": 16, "variant": "B"}, 1e-2},
		{"read", map[string]any{"hidden": 16, "recurrence": false}, 1e-2},
		{"lst", map[string]any{"sidenet_dim": 16}, 1e-2},
		{"lst", map[string]any{"sidenet_dim": 8, "init": "random"}, 1e-2},
	} {
		t.Run(fmt.Sprint(tc.method, tc.arch), func(t *testing.T) {
			spec := Spec{Version: Version, Study: tc.method + "/x/sst2", Method: tc.method, Arch: tc.arch, Dataset: "sst2",
				Params: map[string]any{"lr": tc.lr}, Seed: 1, Model: model, DataDir: "../glue/testdata/fixture",
				Training: map[string]any{"max_epochs": 4, "batch_size": 16, "patience": 10, "state_cache_dir": t.TempDir(), "init_examples": 32}}
			var out, logs bytes.Buffer
			if err := Run(context.Background(), spec, reg, nil, &out, &logs); err != nil {
				t.Fatalf("%v\n%s", err, logs.String())
			}
			losses, final := trialOutput(t, out.String())
			if len(losses) != 4 || final == nil {
				t.Fatalf("%d epochs, final %v:\n%s", len(losses), final, out.String())
			}
			if losses[3] >= losses[0] {
				t.Errorf("training loss did not fall: %v", losses)
			}
			for _, key := range []string{"test", "validation", "trainable_params", "trainable_percent", "peak_rss_bytes",
				"energy_joules", "energy_source", "train_seconds", "eval_seconds", "latency_ms_batch1", "train_examples_per_second"} {
				if _, ok := final.Attrs[key]; !ok {
					t.Errorf("final line lacks %s", key)
				}
			}
		})
	}
}

func TestTrainErrors(t *testing.T) {
	reg := methods.Registry{}
	baselines.Register(reg)
	base := Spec{Version: Version, Method: "lora", Dataset: "sst2", Params: map[string]any{"lr": 1e-3}, DataDir: "../glue/testdata/fixture"}
	for _, tc := range []struct {
		change func(*Spec)
		want   string
	}{
		{func(s *Spec) { s.Model = "/nonexistent/model" }, "sweep fetch model"},
		{func(s *Spec) { s.Training = map[string]any{"max_epoch": 3} }, `unknown training setting "max_epoch"`},
		{func(s *Spec) { s.Training = map[string]any{"eval_steps": 2.5} }, "eval_steps = 2.5, want a whole number"},
		{func(s *Spec) { s.Training = map[string]any{"eval_steps": []any{5, 0}} }, "eval_steps = [5 0]: 0 is not a step"},
		{func(s *Spec) { s.Training = map[string]any{"eval_steps": []any{}} }, "eval_steps = []: name steps"},
		{func(s *Spec) { s.Params = map[string]any{"lr": -1.0} }, "params.lr"},
		{func(s *Spec) { s.Arch = map[string]any{"rank": "big"} }, "rank: big is not a number"},
	} {
		spec := base
		spec.Model = tinyModel(t)
		tc.change(&spec)
		err := Run(context.Background(), spec, reg, nil, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
	// A learning rate that blows up the loss fails the trial with a clear message.
	spec := base
	spec.Model, spec.Method, spec.Arch = tinyModel(t), "full", nil
	spec.Params = map[string]any{"lr": 1e9}
	spec.Training = map[string]any{"max_epochs": 3, "clip_norm": 0}
	err := Run(context.Background(), spec, reg, nil, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "training loss is") {
		t.Errorf("diverging run: %v", err)
	}
}

// trialOutput reads a trial's standard output: the training loss of each
// epoch line and the final message (nil without one).
func trialOutput(t *testing.T, out string) (losses []float64, final *Message) {
	t.Helper()
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		m, err := ParseMessage([]byte(line))
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if m.Type == TypeEpoch {
			losses = append(losses, m.Attrs["train_loss"].(float64))
		} else {
			final = &m
		}
	}
	return losses, final
}

// TestLatencyOnlyWhenAsked: latency_examples 0 (what the orchestrator
// gives search trials) times nothing and reports no latency; a count
// reports a positive one.
func TestLatencyOnlyWhenAsked(t *testing.T) {
	model := tinyModel(t)
	reg := methods.Registry{}
	read.Register(reg)
	for _, n := range []int{0, 2} {
		spec := readSpec(model, t.TempDir(), "fp32")
		spec.Training["max_epochs"], spec.Training["latency_examples"] = 1, n
		var out, logs bytes.Buffer
		if err := Run(context.Background(), spec, reg, nil, &out, &logs); err != nil {
			t.Fatalf("%v\n%s", err, logs.String())
		}
		_, final := trialOutput(t, out.String())
		if final == nil {
			t.Fatalf("no final line:\n%s", out.String())
		}
		v, ok := final.Attrs["latency_ms_batch1"].(float64)
		if n == 0 && ok {
			t.Errorf("latency_examples 0 reported a latency of %v ms", v)
		}
		if n > 0 && !(v > 0) {
			t.Errorf("latency_examples %d reported %v", n, final.Attrs["latency_ms_batch1"])
		}
	}
}

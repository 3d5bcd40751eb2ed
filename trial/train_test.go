package trial

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/baselines"
	"github.com/readsweep/readsweep/glue"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/read"
	"github.com/readsweep/readsweep/t5"
)

// tinySpiece is the test tokenizer.
const tinySpiece = "../t5/testdata/spm/tiny.model"

// tinyConfig is the random 2-layer T5 the trial tests use, sized to the
// test tokenizer, which it returns too.
func tinyConfig(t *testing.T) (*t5.Tokenizer, t5.Config) {
	t.Helper()
	tok, err := t5.LoadTokenizer(tinySpiece)
	if err != nil {
		t.Fatal(err)
	}
	c := t5.DefaultConfig()
	c.VocabSize, c.DModel, c.DKV, c.DFF, c.NumLayers, c.NumDecoderLayers, c.NumHeads = tok.VocabSize(), 32, 8, 64, 2, 2, 4
	return tok, c
}

// tinyModel writes a random tinyConfig T5 with the test tokenizer.
func tinyModel(t *testing.T) string {
	t.Helper()
	_, c := tinyConfig(t)
	dir := t.TempDir()
	if err := t5.New(c, 1).Save(dir); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(tinySpiece)
	os.WriteFile(filepath.Join(dir, "spiece.model"), raw, 0o644)
	return dir
}

// TestAnswerRule: evaluation's row-ending rule (the tokenizer's Decode,
// then glue.Task.Reachable) keeps every token prefix of every label's
// target, with space pieces before and after, and ends rows whose text has
// left every label; and a pack of READ trials on a random model (junk
// answers) scores the same with the rule as decoding every row to the end,
// while the rule ends rows early.
func TestAnswerRule(t *testing.T) {
	tok, c := tinyConfig(t)
	space := int32(-1)
	for id := range int32(tok.VocabSize()) {
		if tok.Piece(id) == "\u2581" {
			space = id
		}
	}
	if space < 0 {
		t.Fatal("the test tokenizer has no space piece")
	}
	for _, name := range []string{"sst2", "mnli", "cola"} {
		task := mustLookup(t, name)
		for _, l := range task.Labels {
			ids := append(append([]int32{space, space}, tok.EncodePieces(l)...), space)
			// With just enough tokens to spell the label, every prefix goes on.
			viable := answerRule(tok, task, len(ids))
			for i := 1; i <= len(ids); i++ {
				if !viable(ids[:i]) {
					t.Errorf("%s: %q's tokens %v: the prefix %v was ruled out", name, l, ids, ids[:i])
				}
			}
			if junk := append(tok.EncodePieces(l), tok.EncodePieces("x")...); viable(junk) {
				t.Errorf("%s: %q followed by x (%v) was kept", name, l, junk)
			}
		}
		// The bound never exceeds a real spelling, and padding (no text)
		// goes on exactly while some label's bound fits in the steps left.
		need := fewestTokens(tok, task.Labels)
		fewest := math.MaxInt
		for _, l := range task.Labels {
			if n := len(tok.EncodePieces(l)); need[l] < 1 || need[l] > n {
				t.Errorf("%s: %q needs at least %d tokens by the bound, and its encoding has %d", name, l, need[l], n)
			}
			fewest = min(fewest, need[l])
		}
		viable := answerRule(tok, task, 8)
		pads := make([]int32, 8)
		for i := 1; i <= 8; i++ {
			if got, want := viable(pads[:i]), fewest <= 8-i; got != want {
				t.Errorf("%s: %d pad tokens of 8: going on %v, want %v (the fewest tokens of a label: %d)", name, i, got, want, fewest)
			}
		}
	}
	// A label with a space inside: its pieces' texts, trimmed, spell it with a gap.
	l := "not entailment"
	if n, pieces := fewestTokens(tok, []string{l})[l], len(tok.EncodePieces(l)); n > pieces {
		t.Errorf("%q needs %d tokens by the bound, more than its encoding's %d", l, n, pieces)
	}
	if answerRule(tok, mustLookup(t, "stsb"), 8) != nil {
		t.Error("STS-B answers are ended early")
	}

	m := t5.New(c, 1)
	reg := methods.Registry{}
	read.Register(reg)
	var meths []methods.Method
	for seed := range 3 {
		meth, err := reg.New("read", m, map[string]any{"hidden": 8}, uint64(seed))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range meth.Trainable() {
			for i := range w.Data {
				w.Data[i] *= float32(1 + 20*seed)
			}
		}
		meths = append(meths, meth)
	}
	task := mustLookup(t, "sst2")
	var ex []example
	for i, s := range []string{"a fine film", "dull and long", "the cast is moving", "messy", "truly superb acting", "it is tedious"} {
		ex = append(ex, example{src: tok.Encode("sst2 sentence: " + s), tgt: tok.Encode(task.Labels[i%2]), gold: glue.Example{Label: i % 2}})
	}
	be := nn.DefaultBackend()
	scores := func(rule bool) (glue.Scores, int) {
		dec := m.NewDecoder(be)
		defer dec.Release()
		shared := newEncodings(m, 1<<30, t.Logf)
		defer shared.release()
		decode := packDecoders(m, be, dec, meths, shared, func(int) bool { return true }, func(int) int { return 0 })[0]
		ended := 0
		counted := func(key string, ids []int32, mask []bool, B, S, n int, viable t5.Viable) [][]int32 {
			if !rule {
				return decode(key, ids, mask, B, S, n, nil)
			}
			return decode(key, ids, mask, B, S, n, func(tokens []int32) bool {
				ok := viable(tokens)
				if !ok {
					ended++
				}
				return ok
			})
		}
		return evaluate(counted, "validation", tok, task, ex, 4, 8, answerRule(tok, task, 8), func() {}), ended
	}
	full, _ := scores(false)
	cut, ended := scores(true)
	if fmt.Sprint(cut) != fmt.Sprint(full) {
		t.Errorf("scores with the rule %v, decoded to the end %v", cut, full)
	}
	if ended == 0 {
		t.Error("no row ended early: the test does not reach the rule")
	}
}

func mustLookup(t *testing.T, name string) *glue.Task {
	t.Helper()
	task, err := glue.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return task
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
		{"ia3", nil, 3e-2},
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

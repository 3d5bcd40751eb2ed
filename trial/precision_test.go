package trial

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/baselines"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/read"
	"github.com/readsweep/readsweep/t5"
)

// TestReducedPrecisionStaysNearFP32 trains full fine-tuning, LoRA and READ
// for 20 steps on both tiny checkpoints (the trajectory goldens' batches
// and learning rates) with products at fp32, tf32 and bf16: every step's
// loss at tf32 and bf16 stays within 1e-2 (relative) of fp32's, and
// differs from it, which shows the operands were rounded at all.
func TestReducedPrecisionStaysNearFP32(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(trajectoryDir, "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Cases []trajectoryCase }
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	reg := methods.Registry{}
	baselines.Register(reg)
	read.Register(reg)
	seen := map[string]bool{}
	for _, c := range file.Cases {
		key := c.Checkpoint + "/" + c.Method
		if seen[key] || (c.Method != "full" && c.Method != "lora" && c.Method != "read") {
			continue
		}
		seen[key] = true
		t.Run(key, func(t *testing.T) {
			fp32 := precisionLosses(t, reg, c, nn.FP32)
			for _, p := range []nn.Precision{nn.TF32, nn.BF16} {
				got := precisionLosses(t, reg, c, p)
				worst, moved := 0.0, false
				for i := range fp32 {
					worst = math.Max(worst, math.Abs(got[i]/fp32[i]-1))
					moved = moved || got[i] != fp32[i]
				}
				if worst > 1e-2 || !moved {
					t.Errorf("%s: losses %v; fp32 %v (largest relative difference %.2g, want ≤ 1e-2 and > 0)", p, got, fp32, worst)
				}
				t.Logf("%s: largest relative loss difference from fp32 over %d steps: %.2g", p, len(fp32), worst)
			}
		})
	}
	if len(seen) != 6 {
		t.Fatalf("ran %d checkpoint/method pairs, want 6", len(seen))
	}
}

func precisionLosses(t *testing.T, reg methods.Registry, c trajectoryCase, p nn.Precision) []float64 {
	m, err := t5.Load(filepath.Join("..", "t5", "testdata", c.Checkpoint))
	if err != nil {
		t.Fatal(err)
	}
	meth, err := reg.New(c.Method, m, c.Arch, 1)
	if err != nil {
		t.Fatal(err)
	}
	set, err := ParseSettings(map[string]any{"weight_decay": c.WeightDecay, "warmup_ratio": c.WarmupRatio, "clip_norm": c.ClipNorm,
		"dropout": 0, "precision": p.String()})
	if err != nil {
		t.Fatal(err)
	}
	be, err := nn.WithPrecision(nn.Gonum{}, set.Precision)
	if err != nil {
		t.Fatal(err)
	}
	batches, order := trajectoryBatches(t, c.Checkpoint)
	st := newStepper(nn.NewGraph(be), m, meth, set, c.LR, c.Steps, nil, false, 0)
	defer st.g.Release()
	var losses []float64
	for _, k := range order {
		got, err := st.run(k, batches[k])
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, got.Loss)
	}
	return losses
}

// TestReducedPrecisionCachesItsOwnStates: the backbone's cached states
// (READ's and LST's state cache, LST's importance, the evaluation
// encodings) are keyed by the products' precision, so a bf16 trial never
// reads states an fp32 one computed; fp32's keys are the model's digest,
// as before the setting.
func TestReducedPrecisionCachesItsOwnStates(t *testing.T) {
	model := t.TempDir() // modelDigest leaves a memo beside the weights
	for _, f := range []string{"config.json", "model.safetensors"} {
		b, err := os.ReadFile(filepath.Join("..", "t5", "testdata", "tiny-t5-v1", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(model, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	digest, err := modelDigest(model)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, p := range []string{"fp32", "tf32", "bf16"} {
		set, err := ParseSettings(map[string]any{"precision": p, "state_cache_dir": t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		_, d, err := cacheDir(set, model)
		if err != nil {
			t.Fatal(err)
		}
		if p == "fp32" && d != digest {
			t.Errorf("fp32's cache digest %s is not the model's %s", d, digest)
		}
		keys[d] = true
	}
	if len(keys) != 3 {
		t.Errorf("three precisions share cache keys: %v", keys)
	}
	if _, err := ParseSettings(map[string]any{"precision": "fp16"}); err == nil || !strings.Contains(err.Error(), "precision") {
		t.Errorf("precision fp16 accepted or not named: %v", err)
	}
}

// TestCheckpointFingerprintReadsSettings: a setting written at its default
// (precision: fp32, patience: 5) is the training it was without it, so a
// checkpoint still resumes; another precision is another training.
func TestCheckpointFingerprintReadsSettings(t *testing.T) {
	spec := Spec{Method: "lora", Dataset: "sst2", Training: map[string]any{"max_epochs": 3, "seeds": []any{0}}}
	fp := func(extra map[string]any) string {
		s := spec
		s.Training = map[string]any{}
		for k, v := range spec.Training {
			s.Training[k] = v
		}
		for k, v := range extra {
			s.Training[k] = v
		}
		return checkpointFingerprint(s, Member{Params: map[string]any{"lr": 1e-3}}, 1, "digest", nil)
	}
	base := fp(nil)
	if fp(map[string]any{"precision": "fp32", "patience": 5}) != base {
		t.Error("writing settings at their defaults changed the checkpoint's fingerprint")
	}
	if fp(map[string]any{"precision": "bf16"}) == base || fp(map[string]any{"seeds": []any{0, 1}}) == base {
		t.Error("another precision, or other seeds, kept the fingerprint")
	}
}

// TestDropoutSettingIsARate: dropout must be a rate in [0, 1) as the
// model holds it (a float32), so one that rounds to 1 is refused, and so
// is a negative one but -1, the default's marker; the error names the
// setting, and settings that leave dropout out parse.
func TestDropoutSettingIsARate(t *testing.T) {
	for _, m := range []map[string]any{nil, {"max_epochs": 2}, {"dropout": -1}} {
		if s, err := ParseSettings(m); err != nil || s.Dropout != -1 {
			t.Errorf("%v: dropout %v, %v; want the default, -1", m, s.Dropout, err)
		}
	}
	for _, d := range []float64{-0.1, 1, 0.99999999999, math.NaN()} {
		if _, err := ParseSettings(map[string]any{"dropout": d}); err == nil || !strings.Contains(err.Error(), "dropout") {
			t.Errorf("dropout %v: %v, want an error naming dropout", d, err)
		}
	}
	for _, d := range []float64{0, 0.1, 0.9} {
		if _, err := ParseSettings(map[string]any{"dropout": d}); err != nil {
			t.Errorf("dropout %v: %v", d, err)
		}
	}
}

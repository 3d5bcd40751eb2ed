package trial

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/readsweep/readsweep/baselines"
	"github.com/readsweep/readsweep/glue"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/read"
	"github.com/readsweep/readsweep/t5"
)

// paperValidation is the paper's validation split of the fixture's task.
func paperValidation(t *testing.T, task *glue.Task) []glue.Example {
	t.Helper()
	data, err := glue.Load("../glue/testdata/fixture", task)
	if err != nil {
		t.Fatal(err)
	}
	splits, err := glue.PaperSplits(data, glue.DefaultSplitSeed)
	if err != nil {
		t.Fatal(err)
	}
	return splits.Validation
}

// TestSavedModelPredictsItsScore trains every method with save_model:
// best, loads each trial's model/ and predicts the validation split with
// it: the metrics are the trial's best validation metrics, exactly. A
// packed READ trial saves each member's own model.
func TestSavedModelPredictsItsScore(t *testing.T) {
	model := tinyModel(t)
	reg := methods.Registry{}
	baselines.Register(reg)
	read.Register(reg)
	task := mustLookup(t, "sst2")
	val := paperValidation(t, task)
	for _, tc := range []struct {
		method string
		arch   map[string]any
		lrs    []float64
	}{
		{"full", nil, []float64{3e-3}},
		{"bitfit", nil, []float64{3e-2}},
		{"lora", map[string]any{"rank": 4}, []float64{3e-2}},
		{"lora", map[string]any{"rank": 4, "targets": "all_qv", "alpha": 8}, []float64{1e-2}},
		{"adapter", map[string]any{"bottleneck": 8}, []float64{1e-2}},
		{"prompt", map[string]any{"prompts": 4}, []float64{3e-2}},
		{"read", map[string]any{"hidden": 16}, []float64{1e-2}},
		{"read", map[string]any{"hidden": 16}, []float64{1e-2, 3e-2}},
		{"lst", map[string]any{"sidenet_dim": 8}, []float64{1e-2}},
		{"ia3", nil, []float64{3e-2}},
	} {
		t.Run(fmt.Sprint(tc.method, tc.arch, len(tc.lrs)), func(t *testing.T) {
			spec := Spec{Version: Version, Study: tc.method + "/x/sst2", Method: tc.method, Arch: tc.arch, Dataset: "sst2",
				Params: map[string]any{"lr": tc.lrs[0]}, Seed: 1, Model: model, DataDir: "../glue/testdata/fixture", OutputDir: t.TempDir(),
				Training: map[string]any{"max_epochs": 3, "batch_size": 16, "patience": 10, "state_cache_dir": t.TempDir(),
					"init_examples": 16, "save_model": "best", "latency_examples": 0}}
			if len(tc.lrs) > 1 {
				for i, lr := range tc.lrs {
					spec.Pack = append(spec.Pack, Member{Number: i, TrialID: int64(i + 1), Params: map[string]any{"lr": lr}, OutputDir: t.TempDir()})
				}
			}
			var out, logs bytes.Buffer
			if err := Run(context.Background(), spec, reg, nil, &out, &logs); err != nil {
				t.Fatalf("%v\n%s", err, logs.String())
			}
			lines := trialLines(t, out.String())
			for _, mb := range spec.Members() {
				key := -1
				if len(spec.Pack) > 0 {
					key = mb.Number
				}
				ls := lines[key]
				final := ls[len(ls)-1]
				dir, _ := final.Attrs["model_dir"].(string)
				if final.Type != TypeFinal || dir != filepath.Join(mb.OutputDir, ModelDirName) {
					t.Fatalf("#%d: final %+v\n%s", mb.Number, final, logs.String())
				}
				size, _ := final.Attrs["model_bytes"].(float64)
				if got := folderBytes(t, dir); size <= 0 || int64(size) != got {
					t.Errorf("#%d: model_bytes %v, the folder holds %d", mb.Number, size, got)
				}
				lm, err := LoadModel(dir, reg)
				if err != nil {
					t.Fatal(err)
				}
				if lm.Info.Trial != mb.Number || lm.Info.Epoch != int(final.Attrs["best_epoch"].(float64)) || lm.Info.Saved != "best" {
					t.Errorf("#%d: %+v", mb.Number, lm.Info)
				}
				trained := lm.T5.Params.Tensors // full fine-tuning trains the whole backbone
				if lm.Method != nil {
					trained = lm.Method.Trainable()
				}
				if got := trainableDigest(trained); got != final.Attrs["trainable_sha256"] {
					t.Errorf("#%d: the saved model's trained tensors have digest %s, the trial's best state %v", mb.Number, got, final.Attrs["trainable_sha256"])
				}
				p, err := lm.Predict(context.Background(), task, val, true, PredictOptions{Device: "cpu"})
				if err != nil {
					t.Fatal(err)
				}
				want := final.Attrs["validation_metrics"].(map[string]any)
				for k, v := range want {
					if p.Scores[k] != v.(float64) {
						t.Errorf("#%d: predicted validation %s %v, the trial's best %v", mb.Number, k, p.Scores[k], v)
					}
				}
				if p.Scores["score"] != final.Attrs["validation"].(float64) || len(p.Texts) != len(val) {
					t.Errorf("#%d: score %v of %d texts, the trial's %v", mb.Number, p.Scores["score"], len(p.Texts), final.Attrs["validation"])
				}
			}
		})
	}
}

func folderBytes(t *testing.T, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		info, _ := e.Info()
		n += info.Size()
	}
	return n
}

// TestExportsLoadInPyTorch trains each method whose saved model is a
// format other tools read (a Hugging Face T5 folder, peft's LoRA, IA³ and
// prompt-tuning folders), on both T5 layouts (v1.0: ReLU, tied
// embeddings; v1.1: gated GELU, its own LM head), exports it with and
// without --merge, and has plain PyTorch (scripts/peers/torch_t5.py, which
// follows transformers' and peft's loading: names, shapes, dtypes, config
// keys, peft's target matching and formulas) compute the logits of a
// batch from each folder: they equal the trained model's here within
// 1e-4.
func TestExportsLoadInPyTorch(t *testing.T) {
	reg := methods.Registry{}
	baselines.Register(reg)
	read.Register(reg)
	_, v1 := tinyConfig(t)
	v11 := v1
	v11.FeedForwardProj, v11.Gated, v11.TieWordEmbeddings = "gated-gelu", true, new(bool)
	batch := t5.Batch{B: 2, S: 6, T: 3, Input: []int32{5, 17, 33, 80, 9, 1, 44, 12, 1, 0, 0, 0},
		Mask: []bool{true, true, true, true, true, true, true, true, true, false, false, false}, Labels: []int32{7, 19, 1, 23, 1, -100}}
	batchFile := filepath.Join(t.TempDir(), "batch.safetensors")
	asFloats := func(x []int32) []float32 {
		out := make([]float32, len(x))
		for i, v := range x {
			out[i] = float32(v)
		}
		return out
	}
	mask := make([]int32, len(batch.Mask))
	for i, m := range batch.Mask {
		if m {
			mask[i] = 1
		}
	}
	if err := t5.WriteSafetensors(batchFile, []string{"input_ids", "attention_mask", "labels"}, [][]int{{2, 6}, {2, 6}, {2, 3}},
		[][]float32{asFloats(batch.Input), asFloats(mask), asFloats(batch.Labels)}); err != nil {
		t.Fatal(err)
	}
	for _, layout := range []struct {
		name string
		c    t5.Config
	}{{"v1.0", v1}, {"v1.1", v11}} {
		base := t.TempDir()
		if err := t5.New(layout.c, 1).Save(base); err != nil {
			t.Fatal(err)
		}
		if err := copyFile(tinySpiece, filepath.Join(base, "spiece.model")); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			method string
			arch   map[string]any
			lr     float64
			merge  bool
		}{
			{"full", nil, 3e-3, false},
			{"lora", map[string]any{"rank": 4}, 3e-2, true},
			{"lora", map[string]any{"rank": 2, "targets": "all_qv", "alpha": 5}, 3e-2, true},
			{"prompt", map[string]any{"prompts": 3}, 3e-2, false},
			{"ia3", nil, 3e-2, true},
		} {
			t.Run(fmt.Sprint(layout.name, " ", tc.method, tc.arch), func(t *testing.T) {
				spec := Spec{Version: Version, Study: tc.method + "/x/sst2", Method: tc.method, Arch: tc.arch, Dataset: "sst2",
					Params: map[string]any{"lr": tc.lr}, Seed: 1, Model: base, DataDir: "../glue/testdata/fixture", OutputDir: t.TempDir(),
					Training: map[string]any{"max_epochs": 2, "batch_size": 16, "max_train_examples": 64, "max_eval_examples": 16,
						"save_model": "best", "latency_examples": 0, "state_cache": "off"}}
				var out, logs bytes.Buffer
				if err := Run(context.Background(), spec, reg, nil, &out, &logs); err != nil {
					t.Fatalf("%v\n%s", err, logs.String())
				}
				saved := filepath.Join(spec.OutputDir, ModelDirName)
				lm, err := LoadModel(saved, reg)
				if err != nil {
					t.Fatal(err)
				}
				g := nn.NewGraph(nn.DefaultBackend())
				o, err := lm.T5.Forward(g, batch, lm.Hooks())
				if err != nil {
					t.Fatal(err)
				}
				ours := o.Logits.Values()
				folders := []string{filepath.Join(t.TempDir(), "export")}
				if _, err := ExportModel(saved, folders[0], false, reg); err != nil {
					t.Fatal(err)
				}
				if tc.merge {
					folders = append(folders, filepath.Join(t.TempDir(), "merged"))
					if info, err := ExportModel(saved, folders[1], true, reg); err != nil || !info.Merged {
						t.Fatalf("merge: %+v, %v", info, err)
					}
				}
				for _, folder := range folders {
					logitsFile := filepath.Join(t.TempDir(), "logits.safetensors")
					cmd := exec.Command("/usr/bin/python3", "../scripts/peers/torch_t5.py", "logits", folder, batchFile, logitsFile)
					if msg, err := cmd.CombinedOutput(); err != nil {
						t.Fatalf("PyTorch (apt-get install python3-torch) could not read %s: %v\n%s", folder, err, msg)
					}
					st, err := t5.OpenSafetensors(logitsFile)
					if err != nil {
						t.Fatal(err)
					}
					theirs, _, err := st.ReadAll("logits")
					st.Close()
					if err != nil || len(theirs) != len(ours) {
						t.Fatalf("%d logits from PyTorch, %d here (%v)", len(theirs), len(ours), err)
					}
					worst := 0.0
					for i := range ours {
						worst = max(worst, math.Abs(float64(ours[i]-theirs[i])))
					}
					if worst > 1e-4 {
						t.Errorf("%s: PyTorch's logits differ from ours by up to %g", filepath.Base(folder), worst)
					}
					t.Logf("%s: max |PyTorch's logit − ours| = %.2g", filepath.Base(folder), worst)
				}
			})
		}
	}
}

// TestSavedFullModelIsAModel: a fully fine-tuned trial's saved folder is
// a model like any other: a sweep's `model:` trains on it (here LoRA),
// and that trial's saved adapter names it as its base.
func TestSavedFullModelIsAModel(t *testing.T) {
	reg := methods.Registry{}
	baselines.Register(reg)
	run := func(method, model string) string {
		spec := Spec{Version: Version, Study: method + "/x/sst2", Method: method, Dataset: "sst2", Params: map[string]any{"lr": 3e-3},
			Seed: 1, Model: model, DataDir: "../glue/testdata/fixture", OutputDir: t.TempDir(),
			Training: map[string]any{"max_epochs": 1, "batch_size": 32, "save_model": "best", "latency_examples": 0, "max_eval_examples": 8}}
		var out, logs bytes.Buffer
		if err := Run(context.Background(), spec, reg, nil, &out, &logs); err != nil {
			t.Fatalf("%s on %s: %v\n%s", method, model, err, logs.String())
		}
		_, final := trialOutput(t, out.String())
		return final.Attrs["model_dir"].(string)
	}
	full := run("full", tinyModel(t))
	adapter := run("lora", full)
	lm, err := LoadModel(adapter, reg)
	if err != nil {
		t.Fatal(err)
	}
	if lm.BaseDir != full || lm.Info.BaseModel != full {
		t.Errorf("the adapter's base is %s (%s), want the fine-tuned %s", lm.BaseDir, lm.Info.BaseModel, full)
	}
}

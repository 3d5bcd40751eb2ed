package trial

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/readsweep/readsweep/baselines"
	"github.com/readsweep/readsweep/methods"
)

// TestSavedModelFailures: a model that cannot be written whole (the file
// size limit standing in for a full disk) leaves the previous one as it
// was and no temporary folder; a trial whose save fails keeps its scores
// and says why in model_error; a saved model whose settings no longer
// match its weights, and merges that cannot be done, are refused with the
// file or the reason named.
func TestSavedModelFailures(t *testing.T) {
	model := tinyModel(t)
	reg := methods.Registry{}
	baselines.Register(reg)
	train := func(method string, arch map[string]any, out string) Message {
		spec := Spec{Version: Version, Study: method + "/x/sst2", Method: method, Arch: arch, Dataset: "sst2",
			Params: map[string]any{"lr": 1e-2}, Seed: 1, Model: model, DataDir: "../glue/testdata/fixture", OutputDir: out,
			Training: map[string]any{"max_epochs": 1, "batch_size": 32, "save_model": "last", "latency_examples": 0, "max_eval_examples": 8}}
		var stdout, logs bytes.Buffer
		if err := Run(context.Background(), spec, reg, nil, &stdout, &logs); err != nil {
			t.Fatalf("%v\n%s", err, logs.String())
		}
		lines := trialLines(t, stdout.String())[-1]
		return lines[len(lines)-1]
	}
	out := t.TempDir()
	first := train("full", nil, out)
	dir := filepath.Join(out, ModelDirName)
	if first.Attrs["model_dir"] != dir {
		t.Fatalf("first save: %v", first.Attrs)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "model.safetensors"))

	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	signal.Ignore(syscall.SIGXFSZ)
	defer signal.Reset(syscall.SIGXFSZ)
	low := lim
	low.Cur = uint64(len(before) / 2)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &low); err != nil {
		t.Fatal(err)
	}
	second := train("full", nil, out)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	why, _ := second.Attrs["model_error"].(string)
	if second.Type != TypeFinal || !strings.Contains(why, "save model") || second.Attrs["model_dir"] != nil || second.Attrs["test"] == nil {
		t.Errorf("a save over the size limit: %v", second.Attrs)
	}
	after, _ := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if !bytes.Equal(before, after) {
		t.Error("the previous model changed")
	}
	if entries, _ := os.ReadDir(out); len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("left in the trial's folder: %v", names)
	}
	if _, err := LoadModel(dir, reg); err != nil {
		t.Errorf("the previous model does not load: %v", err)
	}

	// A saved model whose info was edited to other settings.
	bitfit := filepath.Join(t.TempDir(), "bitfit")
	os.MkdirAll(bitfit, 0o755)
	train("bitfit", nil, bitfit)
	saved := filepath.Join(bitfit, ModelDirName)
	if _, err := ExportModel(saved, filepath.Join(t.TempDir(), "m"), true, reg); err == nil || !strings.Contains(err.Error(), "bitfit cannot be merged into a T5: T5's projections and norms have no biases") {
		t.Errorf("merging BitFit: %v", err)
	}
	infoPath := filepath.Join(saved, ModelInfoName)
	raw, _ := os.ReadFile(infoPath)
	var info map[string]any
	json.Unmarshal(raw, &info)
	info["arch"] = map[string]any{"scope": "all"}
	raw, _ = json.Marshal(info)
	os.WriteFile(infoPath, raw, 0o644)
	if _, err := LoadModel(saved, reg); err == nil || !strings.Contains(err.Error(), "method.safetensors has no tensor") {
		t.Errorf("weights of other settings: %v", err)
	}
	os.WriteFile(infoPath, []byte("{not json"), 0o644)
	if _, err := LoadModel(saved, reg); err == nil || !strings.Contains(err.Error(), infoPath) {
		t.Errorf("a corrupt %s: %v", ModelInfoName, err)
	}
}

// TestModelFolderEdges: what a review tried on saved and exported
// folders. Folders that killed writers left are removed by the next
// writer; a file linked into a model is exported as the file; `--out
// dir/` works; an export whose folder another writer filled first fails
// instead of both succeeding; a base model with another tokenizer, and
// lengths that would make decoding allocate without bound, are refused.
func TestModelFolderEdges(t *testing.T) {
	model := tinyModel(t)
	reg := methods.Registry{}
	baselines.Register(reg)
	spec := Spec{Version: Version, Study: "lora/x/sst2", Method: "lora", Dataset: "sst2", Params: map[string]any{"lr": 1e-2},
		Seed: 1, Model: model, DataDir: "../glue/testdata/fixture", OutputDir: t.TempDir(),
		Training: map[string]any{"max_epochs": 1, "batch_size": 32, "save_model": "best", "latency_examples": 0, "max_eval_examples": 8}}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	saved := filepath.Join(spec.OutputDir, ModelDirName)
	host, _ := os.Hostname()
	stale := fmt.Sprintf("%s.tmp-%s-%d", saved, strings.ReplaceAll(host, "-", "_"), dead.Process.Pid)
	elsewhere := saved + ".tmp-another_host-1" // a writer on another machine sharing the folder
	os.MkdirAll(elsewhere, 0o755)
	os.MkdirAll(stale, 0o755)
	var out, logs bytes.Buffer
	if err := Run(context.Background(), spec, reg, nil, &out, &logs); err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("a killed writer's %s is still there", stale)
	}
	if _, err := os.Stat(elsewhere); err != nil {
		t.Errorf("another machine's writer's folder was removed: %v", err)
	}

	// A linked weights file, exported into "dir/".
	linked := t.TempDir()
	for _, e := range []string{"adapter_config.json", ModelInfoName} {
		raw, _ := os.ReadFile(filepath.Join(saved, e))
		os.WriteFile(filepath.Join(linked, e), raw, 0o644)
	}
	os.Symlink(filepath.Join(saved, "adapter_model.safetensors"), filepath.Join(linked, "adapter_model.safetensors"))
	dst := t.TempDir() + "/" // an empty folder, named with a slash
	if _, err := ExportModel(linked, dst, false, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadModel(dst, reg); err != nil {
		t.Errorf("the export of a folder with a linked file: %v", err)
	}

	// Another writer filled the folder between the check and the rename.
	tmp, busy := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(busy, "theirs"), []byte("x"), 0o644)
	if err := placeDir(tmp, busy, false); err == nil {
		t.Error("an export replaced a folder another export had filled")
	}

	// Another tokenizer under the same weights.
	other := t.TempDir()
	for _, f := range []string{"config.json", "model.safetensors"} {
		raw, _ := os.ReadFile(filepath.Join(model, f))
		os.WriteFile(filepath.Join(other, f), raw, 0o644)
	}
	os.WriteFile(filepath.Join(other, "spiece.model"), append(mustRead(t, filepath.Join(model, "spiece.model")), 0), 0o644)
	edited := t.TempDir()
	info, _ := ReadModelInfo(saved)
	info.BaseModel = other
	for _, e := range []string{"adapter_config.json", "adapter_model.safetensors"} {
		os.WriteFile(filepath.Join(edited, e), mustRead(t, filepath.Join(saved, e)), 0o644)
	}
	writeJSON(filepath.Join(edited, ModelInfoName), info)
	if _, err := LoadModel(edited, reg); err == nil || !strings.Contains(err.Error(), "has another tokenizer") {
		t.Errorf("another tokenizer: %v", err)
	}
	info, _ = ReadModelInfo(saved)
	info.MaxTargetLength = 10_000_000
	writeJSON(filepath.Join(edited, ModelInfoName), info)
	if _, err := LoadModel(edited, reg); err == nil || !strings.Contains(err.Error(), "max_target_length 10000000") {
		t.Errorf("a target length of ten million: %v", err)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

package t5

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/hub"
	"github.com/readsweep/readsweep/hub/hubtest"
)

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFetch downloads a checkpoint from a fake hub, loads it and checks
// that its forward pass is the one of the original files.
func TestFetch(t *testing.T) {
	src := "testdata/tiny-t5-v1"
	hubtest.NewServer(t, map[string][]byte{
		"models/google-t5/t5-tiny/config.json":                readFile(t, filepath.Join(src, "config.json")),
		"models/google-t5/t5-tiny/model.safetensors":          readFile(t, filepath.Join(src, "model.safetensors")),
		"models/google-t5/t5-tiny/spiece.model":               readFile(t, "testdata/spm/tiny.model"),
		"models/google-t5/t5-tiny/README.md":                  []byte("not needed"),
		"models/org/sharded/config.json":                      readFile(t, filepath.Join(src, "config.json")),
		"models/org/sharded/spiece.model":                     readFile(t, "testdata/spm/tiny.model"),
		"models/org/pt-only/config.json":                      readFile(t, "testdata/pytorch/sharded/config.json"),
		"models/org/pt-only/spiece.model":                     readFile(t, "testdata/spm/tiny.model"),
		"models/org/pt-only/pytorch_model.bin.index.json":     readFile(t, "testdata/pytorch/sharded/pytorch_model.bin.index.json"),
		"models/org/pt-only/pytorch_model-00001-of-00002.bin": readFile(t, "testdata/pytorch/sharded/pytorch_model-00001-of-00002.bin"),
		"models/org/pt-only/pytorch_model-00002-of-00002.bin": readFile(t, "testdata/pytorch/sharded/pytorch_model-00002-of-00002.bin"),
		"models/org/no-weights/config.json":                   readFile(t, filepath.Join(src, "config.json")),
		"models/org/no-weights/spiece.model":                  readFile(t, "testdata/spm/tiny.model"),
	})
	dir := t.TempDir()
	if _, err := Fetch(context.Background(), hub.FromEnv(), "t5-tiny", "main", dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err == nil {
		t.Error("fetched a file the model does not need")
	}
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LoadTokenizer(filepath.Join(dir, "spiece.model")); err != nil {
		t.Fatal(err)
	}
	orig, _ := Load(src)
	compare(t, "shared.weight", m.Shared.Data, orig.Shared.Data, 0, 0)
	// A repository of pytorch_model.bin shards (the T5 v1.1 ones) loads as
	// its safetensors twin.
	ptDir := t.TempDir()
	if _, err = Fetch(context.Background(), hub.FromEnv(), "org/pt-only", "main", ptDir); err != nil {
		t.Fatalf("pytorch-only repository: %v", err)
	}
	fromPT, err := Load(ptDir)
	if err != nil {
		t.Fatal(err)
	}
	twin, _ := Load("testdata/tiny-t5-v1")
	for i, name := range twin.Params.Names {
		compare(t, name, fromPT.Params.Tensors[i].Data, twin.Params.Tensors[i].Data, 0, 0)
	}
	_, err = Fetch(context.Background(), hub.FromEnv(), "org/no-weights", "main", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "the repository has none of model.safetensors") {
		t.Errorf("a repository without weights: %v", err)
	}
	_, err = Fetch(context.Background(), hub.FromEnv(), "org/missing", "main", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "the repository does not exist") {
		t.Errorf("missing repository: %v", err)
	}
}

// TestShardedCheckpoint splits a checkpoint in two shards with an index
// and loads it.
func TestShardedCheckpoint(t *testing.T) {
	orig, err := Load("testdata/tiny-t5-v11")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "config.json"), readFile(t, "testdata/tiny-t5-v11/config.json"), 0o644)
	half := len(orig.Params.Names) / 2
	index := `{"metadata": {}, "weight_map": {`
	for k, part := range [][]int{{0, half}, {half, len(orig.Params.Names)}} {
		var names []string
		var shapes [][]int
		var data [][]float32
		file := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[k]
		for i := part[0]; i < part[1]; i++ {
			names = append(names, orig.Params.Names[i])
			shapes = append(shapes, orig.Params.Tensors[i].Shape)
			data = append(data, orig.Params.Tensors[i].Data)
			if i > 0 {
				index += ", "
			}
			index += `"` + orig.Params.Names[i] + `": "` + file + `"`
		}
		if err := WriteSafetensors(filepath.Join(dir, file), names, shapes, data); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), []byte(index+"}}"), 0o644)
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range orig.Params.Names {
		compare(t, name, m.Params.Tensors[i].Data, orig.Params.Tensors[i].Data, 0, 0)
	}
}

func TestHalfPrecision(t *testing.T) {
	for bits, want := range map[uint16]float32{0x3C00: 1, 0xC000: -2, 0x7BFF: 65504, 0x0001: 5.9604645e-08, 0x3555: 0.33325195, 0x8000: 0} {
		if got := HalfToFloat(bits); got != want {
			t.Errorf("F16 %#04x = %v, want %v", bits, got, want)
		}
	}
	// A BF16 and an F16 tensor in one file, read as float32.
	dir := t.TempDir()
	header := `{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[1],"data_offsets":[4,6]}}`
	buf := make([]byte, 8)
	buf[0] = byte(len(header))
	buf = append(buf, header...)
	buf = append(buf, 0x80, 0x3F, 0x40, 0xC0, 0x00, 0x3C) // bf16 1.0, bf16 −3.0, f16 1.0
	p := filepath.Join(dir, "x.safetensors")
	os.WriteFile(p, buf, 0o644)
	s, err := OpenSafetensors(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b := make([]float32, 2), make([]float32, 1)
	if err := s.Read("a", a); err != nil || a[0] != 1 || a[1] != -3 {
		t.Errorf("BF16: %v, %v", a, err)
	}
	if err := s.Read("b", b); err != nil || b[0] != 1 {
		t.Errorf("F16: %v, %v", b, err)
	}
	if err := s.Read("a", b); err == nil {
		t.Error("reading 2 values into 1 succeeded")
	}
}

// TestFetchPinsTheRevision: main moves while a model downloads; every
// file on disk is the first commit's, and the commit is recorded beside
// them.
func TestFetchPinsTheRevision(t *testing.T) {
	src := "testdata/tiny-t5-v1"
	files := map[string][]byte{
		"models/google-t5/t5-tiny/config.json":       readFile(t, filepath.Join(src, "config.json")),
		"models/google-t5/t5-tiny/model.safetensors": readFile(t, filepath.Join(src, "model.safetensors")),
		"models/google-t5/t5-tiny/spiece.model":      readFile(t, "testdata/spm/tiny.model"),
	}
	h := hubtest.NewServer(t, files)
	first := h.Main()
	c := hub.FromEnv()
	moved := false
	c.Progress = func(string, int64, int64) {
		if !moved {
			moved = true
			h.Commit(map[string][]byte{
				"models/google-t5/t5-tiny/config.json":       []byte(`{"d_model": 4}`),
				"models/google-t5/t5-tiny/model.safetensors": []byte("other weights"),
				"models/google-t5/t5-tiny/spiece.model":      []byte("other tokenizer"),
			})
		}
	}
	dir := t.TempDir()
	commit, err := Fetch(context.Background(), c, "t5-tiny", "main", dir)
	if err != nil {
		t.Fatal(err)
	}
	if commit != first || h.Main() == first {
		t.Fatalf("fetched %s; main was %s, is %s", commit, first, h.Main())
	}
	for key, want := range files {
		p := filepath.Join(dir, filepath.Base(key))
		if got := readFile(t, p); string(got) != string(want) {
			t.Errorf("%s is not the first commit's", filepath.Base(key))
		}
	}
	rec := readFile(t, filepath.Join(dir, hub.RevisionFile))
	if !strings.Contains(string(rec), `"commit": "`+first+`"`) || !strings.Contains(string(rec), `"revision": "main"`) {
		t.Errorf("%s: %s", hub.RevisionFile, rec)
	}
}

// TestFetchReplacesTheSnapshot: a model refetched after its weights were
// sharded keeps no single-file weights of the old snapshot (Load would
// prefer them), and an index that names a shard outside the folder is
// refused.
func TestFetchReplacesTheSnapshot(t *testing.T) {
	src := "testdata/tiny-t5-v1"
	base := map[string][]byte{
		"models/org/m/config.json":  readFile(t, filepath.Join(src, "config.json")),
		"models/org/m/spiece.model": readFile(t, "testdata/spm/tiny.model"),
	}
	with := func(extra map[string][]byte) map[string][]byte {
		out := map[string][]byte{}
		for k, v := range base {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	h := hubtest.NewServer(t, with(map[string][]byte{"models/org/m/model.safetensors": readFile(t, filepath.Join(src, "model.safetensors"))}))
	dir := t.TempDir()
	if _, err := Fetch(context.Background(), hub.FromEnv(), "org/m", "main", dir); err != nil {
		t.Fatal(err)
	}
	h.Commit(with(map[string][]byte{
		"models/org/m/model.safetensors.index.json": []byte(`{"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}`),
		"models/org/m/model-1.safetensors":          []byte("shard one"),
		"models/org/m/model-2.safetensors":          []byte("shard two"),
	}))
	if _, err := Fetch(context.Background(), hub.FromEnv(), "org/m", "main", dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "model.safetensors")); err == nil {
		t.Error("the replaced snapshot's model.safetensors is still there, and Load would read it")
	}
	for _, f := range []string{"model-1.safetensors", "model-2.safetensors", "config.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	h.Commit(with(map[string][]byte{
		"models/org/m/model.safetensors.index.json": []byte(`{"weight_map": {"a": "../evil.safetensors"}}`),
	}))
	_, err := Fetch(context.Background(), hub.FromEnv(), "org/m", "main", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), `names shard "../evil.safetensors", not a file name in the folder`) {
		t.Errorf("a shard outside the folder: %v", err)
	}
}

// TestHubRepo: the short names go where the hub keeps them.
func TestHubRepo(t *testing.T) {
	for in, want := range map[string]string{
		"t5-small": "google-t5/t5-small", "t5-base": "google-t5/t5-base", "t5-v1_1-base": "google/t5-v1_1-base",
		"flan-t5-base": "google/flan-t5-base", "org/my-t5": "org/my-t5", "mt5-base": "mt5-base",
	} {
		if got := HubRepo(in); got != want {
			t.Errorf("HubRepo(%q) = %q, want %q", in, got, want)
		}
	}
}

package trial

import (
	"bufio"
	"bytes"
	"context"
	"encoding/gob"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/readsweep/readsweep/baselines"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/read"
	"github.com/readsweep/readsweep/t5"
)

func readSpec(model, cacheDir, mode string) Spec {
	return Spec{Version: Version, Study: "read/gru/sst2", Method: "read", Arch: map[string]any{"hidden": 16}, Dataset: "sst2",
		Params: map[string]any{"lr": 1e-2}, Seed: 2, Model: model, DataDir: "../glue/testdata/fixture",
		Training: map[string]any{"max_epochs": 3, "batch_size": 16, "patience": 10, "state_cache": mode, "state_cache_dir": cacheDir}}
}

func epochLosses(t *testing.T, out string) []float64 {
	t.Helper()
	var losses []float64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		m, err := ParseMessage([]byte(line))
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == TypeEpoch {
			losses = append(losses, m.Attrs["train_loss"].(float64))
		}
	}
	return losses
}

// TestStateCache trains READ three ways: without the cache, computing it
// (later epochs read memory), and in a second trial reading the file. The
// losses agree; fp16 states stay close.
func TestStateCache(t *testing.T) {
	model := tinyModel(t)
	reg := methods.Registry{}
	read.Register(reg)
	dir := t.TempDir()
	run := func(mode string) (string, string) {
		var out, logs bytes.Buffer
		if err := Run(context.Background(), readSpec(model, dir, mode), reg, nil, &out, &logs); err != nil {
			t.Fatalf("%v\n%s", err, logs.String())
		}
		return out.String(), logs.String()
	}
	plainOut, _ := run("off")
	firstOut, firstLogs := run("fp32")
	written := stateFiles(dir)
	if len(written) != 1 {
		t.Fatalf("cache files %v after the first trial, want one", written)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	os.Chtimes(written[0], old, old)
	secondOut, secondLogs := run("fp32")
	if !strings.Contains(firstLogs, "computing the backbone's states") || !strings.Contains(secondLogs, "reading the frozen backbone's states") {
		t.Fatalf("cache did not go miss then hit:\n%s\n%s", firstLogs, secondLogs)
	}
	if st, err := os.Stat(written[0]); err != nil || !st.ModTime().Equal(old) {
		t.Errorf("the trial that read the state cache wrote it again (%v)", err)
	}
	plain, first, second := epochLosses(t, plainOut), epochLosses(t, firstOut), epochLosses(t, secondOut)
	for i := range plain {
		if math.Abs(first[i]-plain[i]) > 1e-6 || math.Abs(second[i]-plain[i]) > 1e-6 {
			t.Errorf("epoch %d loss: no cache %.7f, computing %.7f, from file %.7f", i, plain[i], first[i], second[i])
		}
	}
	halfOut, halfLogs := run("fp16")
	half := epochLosses(t, halfOut)
	if !strings.Contains(halfLogs, "computing") || math.Abs(half[2]-plain[2]) > 1e-2 {
		t.Errorf("fp16 cache: losses %v vs %v\n%s", half, plain, halfLogs)
	}
	// The fp16 file read back (the computing trial kept float32 states in
	// memory; later trials train on the rounded ones).
	halfAgainOut, halfAgainLogs := run("fp16")
	if again := epochLosses(t, halfAgainOut); !strings.Contains(halfAgainLogs, "reading") || math.Abs(again[2]-plain[2]) > 1e-2 {
		t.Errorf("fp16 from file: losses %v vs %v\n%s", again, plain, halfAgainLogs)
	}
	// A damaged file is an error that names it, not a crash: a tensor of the
	// wrong dtype, then bytes that are no safetensors at all.
	files := stateFiles(dir)
	if len(files) != 2 {
		t.Fatalf("cache files %v, want one fp32 and one fp16", files)
	}
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		raw = bytes.Replace(raw, []byte(`"F32"`), []byte(`"I32"`), 1)
		os.WriteFile(f, bytes.Replace(raw, []byte(`"F16"`), []byte(`"I16"`), 1), 0o644)
	}
	var outBad, logsBad bytes.Buffer
	if err := Run(context.Background(), readSpec(model, dir, "fp32"), reg, nil, &outBad, &logsBad); err == nil || !strings.Contains(err.Error(), "want F32 or F16") {
		t.Errorf("a cache tensor of the wrong dtype: %v", err)
	}
	for _, f := range files {
		os.WriteFile(f, []byte("not a cache"), 0o644)
	}
	var out0, logs0 bytes.Buffer
	if err := Run(context.Background(), readSpec(model, dir, "fp32"), reg, nil, &out0, &logs0); err == nil || !strings.Contains(err.Error(), "delete it to rebuild") {
		t.Errorf("a damaged cache file: %v", err)
	}
	// A budget too small for the split: trained without the cache, said so.
	spec := readSpec(model, t.TempDir(), "fp32")
	spec.Training["state_cache_gb"] = 1e-9
	var out, logs bytes.Buffer
	if err := Run(context.Background(), spec, reg, nil, &out, &logs); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "exceed state_cache_gb") {
		t.Errorf("over-budget run did not say so:\n%s", logs.String())
	}
	if got := epochLosses(t, out.String()); math.Abs(got[2]-plain[2]) > 1e-6 {
		t.Errorf("over-budget run's losses %v, want %v", got, plain)
	}
}

func TestFloatToHalf(t *testing.T) {
	for _, f := range []float32{0, 1, -2, 0.5, 65504, 1e-5, -3.14159, 5.96e-8, 70000} {
		h := floatToHalf(f)
		back := t5.HalfToFloat(h)
		switch {
		case f == 70000:
			if !math.IsInf(float64(back), 1) {
				t.Errorf("%v → %v, want +Inf", f, back)
			}
		case math.Abs(float64(back-f)) > math.Abs(float64(f))*1e-3+6e-8:
			t.Errorf("%v → %#04x → %v", f, h, back)
		}
	}
	if floatToHalf(1) != 0x3C00 || floatToHalf(-2) != 0xC000 {
		t.Error("exact values changed bits")
	}
}

// BenchmarkStateCacheLoad opens a t5-small-sized state cache (10 batches
// of 16 × 64 × 4 tokens, 6 + 6 blocks: about 125 MB) and reads every value
// once, from the mapped safetensors file and, in the same run, from the
// gob file the cache used to be, and reports both times and their ratio.
func BenchmarkStateCacheLoad(b *testing.B) {
	const batches, B, S, T, D, L = 10, 16, 64, 4, 512, 6
	c := &stateCache{path: filepath.Join(b.TempDir(), "states.safetensors"), budget: 1 << 40, batches: make([]*batchStates, batches)}
	fill := func(n int) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(i%97) / 97
		}
		return x
	}
	for i := range batches {
		st := &batchStates{B: B, S: S, T: T, DecOut: fill(B * T * D)}
		for range L {
			st.Enc = append(st.Enc, fill(B*S*D))
			st.Dec = append(st.Dec, fill(B*T*D))
			st.Cross = append(st.Cross, fill(B*T*S))
		}
		c.add(i, st)
	}
	if err := c.save(); err != nil {
		b.Fatal(err)
	}
	gobPath := filepath.Join(b.TempDir(), "states.gob")
	f, _ := os.Create(gobPath)
	gob.NewEncoder(f).Encode(c.batches)
	f.Close()
	touch := func(sts []*batchStates) (sum float32) {
		for _, st := range sts {
			for _, set := range [][][]float32{st.Enc, st.Dec, st.Cross, {st.DecOut}} {
				for _, x := range set {
					for j := 0; j < len(x); j += 1024 { // one value a page: what the trainer will read
						sum += x[j]
					}
				}
			}
		}
		return sum
	}
	var mapped, decoded time.Duration
	for range b.N {
		t0 := time.Now()
		m := &stateCache{path: c.path, batches: make([]*batchStates, batches)}
		if ok, err := m.load(batches); !ok || err != nil {
			b.Fatal(ok, err)
		}
		var sts []*batchStates
		for i := range batches {
			sts = append(sts, m.get(i))
		}
		touch(sts)
		mapped += time.Since(t0)
		m.close()
		t0 = time.Now()
		in, _ := os.Open(gobPath)
		var old []*batchStates
		if err := gob.NewDecoder(bufio.NewReader(in)).Decode(&old); err != nil {
			b.Fatal(err)
		}
		in.Close()
		touch(old)
		decoded += time.Since(t0)
	}
	b.ReportMetric(float64(mapped.Milliseconds())/float64(b.N), "mmap-ms")
	b.ReportMetric(float64(decoded.Milliseconds())/float64(b.N), "gob-ms")
	b.ReportMetric(float64(decoded)/float64(mapped), "gob/mmap")
}

// TestLSTStateCache: LST trains from cached states (the embeddings are
// looked up again, the block outputs read) to the same losses as from the
// backbone, computing the cache and reading it from the file; the Fisher
// importance is computed once and read back by the next trial.
func TestLSTStateCache(t *testing.T) {
	model := tinyModel(t)
	reg := methods.Registry{}
	baselines.Register(reg)
	dir := t.TempDir()
	lstSpec := func(mode string) Spec {
		spec := readSpec(model, dir, mode)
		spec.Method, spec.Arch, spec.Study = "lst", map[string]any{"sidenet_dim": 8}, "lst/x/sst2"
		spec.Training["init_examples"] = 16
		return spec
	}
	run := func(mode string) (string, string) {
		var out, logs bytes.Buffer
		if err := Run(context.Background(), lstSpec(mode), reg, nil, &out, &logs); err != nil {
			t.Fatalf("%v\n%s", err, logs.String())
		}
		return out.String(), logs.String()
	}
	plainOut, plainLogs := run("off")
	firstOut, firstLogs := run("fp32")
	secondOut, secondLogs := run("fp32")
	if strings.Contains(plainLogs, "state cache") || !strings.Contains(firstLogs, "computing the backbone's states") || !strings.Contains(secondLogs, "reading the frozen backbone's states") {
		t.Fatalf("cache did not go off, miss, hit:\n%s\n%s\n%s", plainLogs, firstLogs, secondLogs)
	}
	if !strings.Contains(plainLogs, "initialised lst from 16 training examples (") || !strings.Contains(firstLogs, "initialised lst from 16 training examples (") ||
		!strings.Contains(secondLogs, "initialised lst from the importance of 16 training examples in ") {
		t.Errorf("the Fisher importance was not computed, computed, then read:\n%s\n%s\n%s", plainLogs, firstLogs, secondLogs)
	}
	plain, first, second := epochLosses(t, plainOut), epochLosses(t, firstOut), epochLosses(t, secondOut)
	for i := range plain {
		if first[i] != plain[i] || second[i] != plain[i] {
			t.Errorf("epoch %d loss: no cache %.9f, computing %.9f, from file %.9f", i, plain[i], first[i], second[i])
		}
	}
	// A damaged importance file is an error that names it.
	files := stateFiles(dir)
	if len(files) != 2 {
		t.Fatalf("cache files %v, want the states and the importance", files)
	}
	for _, f := range files {
		if raw, _ := os.ReadFile(f); !bytes.Contains(raw, []byte("batch0.")) {
			os.WriteFile(f, raw[:len(raw)/2], 0o644)
		}
	}
	if err := Run(context.Background(), lstSpec("fp32"), reg, nil, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "importance cache") || !strings.Contains(err.Error(), "delete it to rebuild") {
		t.Errorf("a damaged importance file: %v", err)
	}
}

// stateFiles lists the cache folder's files but the evaluation splits'
// encodings.
func stateFiles(dir string) []string {
	all, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	var out []string
	for _, f := range all {
		if !strings.HasPrefix(filepath.Base(f), "encodings-") {
			out = append(out, f)
		}
	}
	return out
}

// TestEncodingsFile: the first READ trial writes the validation and test
// splits' encodings beside the state cache; the next maps them and scores
// every validation and the test split exactly as the first did, and as a
// trial with caching off. A damaged file is encoded anew, with a log line
// naming it, and rewritten.
func TestEncodingsFile(t *testing.T) {
	model := tinyModel(t)
	reg := methods.Registry{}
	read.Register(reg)
	dir := t.TempDir()
	run := func(mode string) ([]Message, string) {
		var out, logs bytes.Buffer
		if err := Run(context.Background(), readSpec(model, dir, mode), reg, nil, &out, &logs); err != nil {
			t.Fatalf("%v\n%s", err, logs.String())
		}
		return trialLines(t, out.String())[-1], logs.String()
	}
	same := func(what string, got, want []Message) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d reports, want %d", what, len(got), len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.Value != w.Value || fmt.Sprint(g.Attrs["metrics"]) != fmt.Sprint(w.Attrs["metrics"]) || g.Attrs["test"] != w.Attrs["test"] {
				t.Errorf("%s: report %d: %v %v %v, want %v %v %v", what, i, g.Value, g.Attrs["metrics"], g.Attrs["test"], w.Value, w.Attrs["metrics"], w.Attrs["test"])
			}
		}
	}
	plain, plainLogs := run("off")
	if strings.Contains(plainLogs, "encodings:") {
		t.Errorf("state_cache: off wrote or read encodings:\n%s", plainLogs)
	}
	first, firstLogs := run("fp32")
	for _, split := range []string{"validation", "test"} {
		if !strings.Contains(firstLogs, split+" encodings: saved to ") {
			t.Errorf("first trial did not save the %s encodings:\n%s", split, firstLogs)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "encodings-*.safetensors"))
	if len(files) != 2 {
		t.Fatalf("encodings files %v, want validation and test", files)
	}
	second, secondLogs := run("fp32")
	if !strings.Contains(secondLogs, "validation encodings: reading the encoder's outputs from ") || strings.Contains(secondLogs, "saved to") {
		t.Errorf("second trial did not read the encodings:\n%s", secondLogs)
	}
	same("computing", first, plain)
	same("from the file", second, plain)

	for _, f := range files { // the tensors the trial looks for, renamed
		raw, _ := os.ReadFile(f)
		if !bytes.Contains(raw, []byte(`/enc_out"`)) {
			t.Fatalf("%s has no enc_out tensor to damage", f)
		}
		os.WriteFile(f, bytes.ReplaceAll(raw, []byte(`/enc_out"`), []byte(`/enc_Out"`)), 0o644)
	}
	third, thirdLogs := run("fp32")
	if !strings.Contains(thirdLogs, "no tensor enc_out; encoding anew and rewriting it") || !strings.Contains(thirdLogs, "validation encodings: saved to") {
		t.Errorf("a damaged file was not encoded anew and rewritten:\n%s", thirdLogs)
	}
	same("after a damaged file", third, plain)
}

package trial

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"

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
		if err := Run(context.Background(), readSpec(model, dir, mode), reg, &out, &logs); err != nil {
			t.Fatalf("%v\n%s", err, logs.String())
		}
		return out.String(), logs.String()
	}
	plainOut, _ := run("off")
	firstOut, firstLogs := run("fp32")
	secondOut, secondLogs := run("fp32")
	if !strings.Contains(firstLogs, "computing the backbone's states") || !strings.Contains(secondLogs, "reading the frozen backbone's states") {
		t.Fatalf("cache did not go miss then hit:\n%s\n%s", firstLogs, secondLogs)
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
	// A budget too small for the split: trained without the cache, said so.
	spec := readSpec(model, t.TempDir(), "fp32")
	spec.Training["state_cache_gb"] = 1e-9
	var out, logs bytes.Buffer
	if err := Run(context.Background(), spec, reg, &out, &logs); err != nil {
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

package trial

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/baselines"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/read"
	"github.com/readsweep/readsweep/t5"
)

// trialLines splits protocol output by trial number (-1: untagged).
func trialLines(t *testing.T, out string) map[int][]Message {
	t.Helper()
	by := map[int][]Message{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		m, err := ParseMessage([]byte(line))
		if err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		if m.Type == TypeHeartbeat {
			continue
		}
		n := -1
		if m.Trial != nil {
			n = *m.Trial
		}
		by[n] = append(by[n], m)
	}
	return by
}

func packSpec(model, cacheDir string, lrs ...float64) Spec {
	return packSpecOf(readSpec(model, cacheDir, "fp32"), lrs...)
}

func packSpecOf(s Spec, lrs ...float64) Spec {
	s.Training["max_epochs"] = 2
	for i, lr := range lrs {
		s.Pack = append(s.Pack, Member{Number: i, TrialID: int64(i + 1), Params: map[string]any{"lr": lr}})
	}
	return s
}

// TestPackEqualsUnpacked trains two trials one after the other (the
// second reads the first's state cache) and as one pack, for both methods
// that pack (READ decodes its pack jointly, LST each trial alone): every
// epoch's loss and score, the best validation and the test score are bit
// for bit the same. A pruning verdict takes one trial out; the other goes
// on as before.
func TestPackEqualsUnpacked(t *testing.T) {
	model := tinyModel(t)
	reg := methods.Registry{}
	read.Register(reg)
	baselines.Register(reg)
	for _, tc := range []struct {
		name, method string
		arch         map[string]any
		dropout      float64
	}{
		{"read", "read", map[string]any{"hidden": 16}, 0},
		{"lst", "lst", map[string]any{"sidenet_dim": 8}, 0},
		{"read with dropout", "read", map[string]any{"hidden": 16}, 0.1},
	} {
		t.Run(tc.name, func(t *testing.T) { testPackEqualsUnpacked(t, model, reg, tc.method, tc.arch, tc.dropout) })
	}
}

func testPackEqualsUnpacked(t *testing.T, model string, reg methods.Registry, method string, arch map[string]any, dropout float64) {
	spec := func(cacheDir string) Spec {
		s := readSpec(model, cacheDir, "fp32")
		s.Method, s.Arch, s.Study = method, arch, method+"/x/sst2"
		s.Training["max_epochs"] = 2
		s.Training["init_examples"] = 16
		if dropout > 0 {
			s.Training["dropout"] = dropout
		}
		return s
	}
	lrs := []float64{1e-2, 3e-3}
	run := func(spec Spec, verdicts string) (string, string) {
		var out, logs bytes.Buffer
		if err := Run(context.Background(), spec, reg, strings.NewReader(verdicts), &out, &logs); err != nil {
			t.Fatalf("%v\n%s", err, logs.String())
		}
		return out.String(), logs.String()
	}
	alone := map[int][]Message{}
	dir := t.TempDir()
	for i, lr := range lrs {
		spec := spec(dir)
		spec.Number, spec.Params = i, map[string]any{"lr": lr}
		out, _ := run(spec, "")
		alone[i] = trialLines(t, out)[-1]
	}
	out, logs := run(packSpecOf(spec(t.TempDir()), lrs...), "")
	packed := trialLines(t, out)
	if !strings.Contains(logs, "pack of 2 trials") || !strings.Contains(logs, "[#1] epoch 1:") {
		t.Errorf("pack log:\n%s", logs)
	}
	same := func(a, b Message) bool {
		if a.Type != b.Type || a.Step != b.Step || a.Value != b.Value {
			return false
		}
		if a.Type == TypeEpoch {
			return a.Attrs["train_loss"] == b.Attrs["train_loss"]
		}
		return a.Attrs["test"] == b.Attrs["test"] && a.Attrs["best_epoch"] == b.Attrs["best_epoch"]
	}
	for i := range lrs {
		if len(packed[i]) != 3 || len(alone[i]) != 3 {
			t.Fatalf("trial %d: %d lines packed, %d alone; want 2 epochs and a final", i, len(packed[i]), len(alone[i]))
		}
		for k := range packed[i] {
			if !same(packed[i][k], alone[i][k]) {
				t.Errorf("trial %d line %d: packed %+v, alone %+v", i, k, packed[i][k], alone[i][k])
			}
		}
		if packed[i][2].Attrs["pack_size"] != float64(2) {
			t.Errorf("trial %d: pack_size %v", i, packed[i][2].Attrs["pack_size"])
		}
	}

	out, logs = run(packSpecOf(spec(t.TempDir()), lrs...), `{"trial": 0, "prune": false}`+"\n"+`{"trial": 1, "prune": true}`+"\n")
	pruned := trialLines(t, out)
	if len(pruned[1]) != 1 || pruned[1][0].Type != TypeEpoch {
		t.Errorf("pruned trial wrote %+v, want its first epoch only", pruned[1])
	}
	if len(pruned[0]) != 3 || !same(pruned[0][2], alone[0][2]) {
		t.Errorf("the trial left in the pack: %+v, want %+v", pruned[0], alone[0])
	}
	if !strings.Contains(logs, "[#1] pruned after epoch 0") {
		t.Errorf("log does not say the trial was pruned:\n%s", logs)
	}
}

// TestPackRefusesBackboneTrainers: READ's variant B changes the states the
// decoder reads, so its trials cannot share one backbone pass.
func TestPackRefusesBackboneTrainers(t *testing.T) {
	model := tinyModel(t)
	reg := methods.Registry{}
	read.Register(reg)
	spec := packSpec(model, t.TempDir(), 1e-2, 1e-3)
	spec.Arch = map[string]any{"hidden": 16, "variant": "B"}
	err := Run(context.Background(), spec, reg, nil, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "cannot be packed") {
		t.Fatalf("err = %v, want the pack refused", err)
	}
}

// TestEncodingsNotSharedWhenTheEncoderTrains: a validation batch's
// encoding is kept across epochs only for methods that leave the
// backbone's encoder frozen. Full fine-tuning has no hooks at all, yet its
// encoder changes every step: its next validation must decode from the
// encoder as it is now, as a fresh Generate does.
func TestEncodingsNotSharedWhenTheEncoderTrains(t *testing.T) {
	_, c := tinyConfig(t)
	m := t5.New(c, 1)
	reg := methods.Registry{}
	baselines.Register(reg)
	meth, err := reg.New("full", m, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	be := nn.DefaultBackend()
	dec := m.NewDecoder(be)
	defer dec.Release()
	shared := newEncodings(m, 1<<30, t.Logf)
	defer shared.release()
	steps := 0
	decode := packDecoders(m, be, dec, []methods.Method{meth}, shared, func(int) bool { return true }, func(int) int { return steps })[0]
	const B, S, n = 4, 6, 5
	ids, mask := make([]int32, B*S), make([]bool, B*S)
	for i := range ids {
		ids[i], mask[i] = int32(3+(i*7)%(c.VocabSize-3)), true
	}
	before := decode("validation/0", ids, mask, B, S, n, nil)
	// An optimiser step on the encoder (here: its final norm flipped).
	for i := range m.EncFinal.Data {
		m.EncFinal.Data[i] *= -3
	}
	steps++
	want := m.Generate(be, ids, mask, B, S, n, meth.Hooks())
	if slices.EqualFunc(before, want, slices.Equal) {
		t.Fatal("the test's encoder change does not change the decoded tokens; change it more")
	}
	if got := decode("validation/0", ids, mask, B, S, n, nil); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("after the encoder changed, validation decoded %v (the old encoding's tokens: %v), want %v", got, before, want)
	}
}

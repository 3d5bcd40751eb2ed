package trial

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/readsweep/readsweep/baselines"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/read"
)

// cancelOn is a log writer that cancels a trial's context when a line
// matches: a stop at a chosen point, deterministically.
type cancelOn struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	match  func(line string) bool
	cancel context.CancelFunc
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.buf.Write(p)
	for _, line := range strings.Split(string(p), "\n") {
		if c.match != nil && c.match(line) {
			c.cancel()
		}
	}
	return len(p), nil
}

func (c *cancelOn) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// checkpointAt matches a checkpoint's log line and returns its step.
var checkpointAt = regexp.MustCompile(`checkpoint: \d+ trial\(s\) at step (\d+)`)

// sameTraining says how two runs' lines differ in what training decides:
// per validation the step, value and training loss; at the end the scores,
// where the best was, the steps and the weights' digest. "" when they
// do not.
func sameTraining(got, want []Message) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d lines, want %d", len(got), len(want))
	}
	for k := range got {
		x, y := got[k], want[k]
		if x.Type != y.Type || x.Step != y.Step || x.Value != y.Value {
			return fmt.Sprintf("line %d: %s step %d value %v, want %s step %d value %v", k, x.Type, x.Step, x.Value, y.Type, y.Step, y.Value)
		}
		keys := []string{"train_loss"}
		if x.Type == TypeFinal {
			keys = []string{"test", "validation", "best_epoch", "best_step", "epochs", "steps", "trainable_sha256", "test_metrics", "validation_metrics"}
		}
		for _, key := range keys {
			if fmt.Sprint(x.Attrs[key]) != fmt.Sprint(y.Attrs[key]) {
				return fmt.Sprintf("line %d (%s): %s %v, want %v", k, x.Type, key, x.Attrs[key], y.Attrs[key])
			}
		}
	}
	return ""
}

// withoutResumed splits a resumed run's lines into its resumed message
// and the rest.
func withoutResumed(lines []Message) (*Message, []Message) {
	var resumed *Message
	var rest []Message
	for _, m := range lines {
		if m.Type == TypeResumed {
			resumed = &m
			continue
		}
		rest = append(rest, m)
	}
	return resumed, rest
}

// TestResumeEqualsUninterrupted stops trials in the middle of their
// second epoch of four (after a periodic checkpoint), or at its end (as
// SIGTERM does: the checkpoint on stopping), resumes them from the
// checkpoint as a new trial in a new folder, and checks that the stopped
// run's lines and the resumed run's make exactly the uninterrupted run's:
// every validation's value and training loss, the final scores and the
// weights' digest, bit for bit. Full fine-tuning trains with dropout, so
// the dropout streams resume too; a pack resumes member by member.
func TestResumeEqualsUninterrupted(t *testing.T) {
	model := tinyModel(t)
	reg := methods.Registry{}
	baselines.Register(reg)
	read.Register(reg)
	for _, tc := range []struct {
		name, method string
		arch         map[string]any
		packed       bool
		training     map[string]any
	}{
		{"full", "full", nil, false, nil},
		{"lora", "lora", map[string]any{"rank": 4, "targets": "all_qv"}, false, nil},
		{"read", "read", map[string]any{"hidden": 16}, false, nil},
		{"read packed", "read", map[string]any{"hidden": 16}, true, nil},
		{"lst", "lst", map[string]any{"sidenet_dim": 8}, false, nil},
		{"read eval_steps", "read", map[string]any{"hidden": 16}, false, map[string]any{"eval_steps": 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testResume(t, reg, model, tc.method, tc.arch, tc.packed, tc.training, "cpu")
		})
	}
}

func testResume(t *testing.T, reg methods.Registry, model, method string, arch map[string]any, packed bool, extra map[string]any, device string) {
	cacheDir := t.TempDir()
	spec := func(every any) Spec {
		training := map[string]any{"max_epochs": 4, "batch_size": 16, "patience": 10, "state_cache_dir": cacheDir,
			"init_examples": 16, "checkpoint_every": every}
		for k, v := range extra {
			training[k] = v
		}
		s := Spec{Version: Version, Study: method + "/x/sst2", Method: method, Arch: arch, Dataset: "sst2",
			Params: map[string]any{"lr": 1e-2}, Seed: 3, Model: model, DataDir: "../glue/testdata/fixture", Training: training,
			OutputDir: t.TempDir(), Device: device}
		if method == "full" {
			s.Params["lr"] = 3e-3
		}
		if packed {
			for i, lr := range []float64{1e-2, 3e-3} {
				s.Pack = append(s.Pack, Member{Number: i, TrialID: int64(i + 1), Params: map[string]any{"lr": lr}, OutputDir: t.TempDir()})
			}
			s.OutputDir = s.Pack[0].OutputDir
		}
		return s
	}
	run := func(ctx context.Context, s Spec, logs *cancelOn) (map[int][]Message, error) {
		var out bytes.Buffer
		err := Run(ctx, s, reg, nil, &out, logs)
		lines := map[int][]Message{}
		if strings.TrimSpace(out.String()) != "" {
			lines = trialLines(t, out.String())
		}
		return lines, err
	}
	key := func(mb Member) int { // a member's lines in trialLines
		if packed {
			return mb.Number
		}
		return -1
	}
	whole, err := run(context.Background(), spec(0), &cancelOn{})
	if err != nil {
		t.Fatal(err)
	}
	first := whole[key(spec(0).Members()[0])]
	final := first[len(first)-1]
	if final.Type != TypeFinal || final.Attrs["epochs"] != float64(4) {
		t.Fatalf("the uninterrupted run: %+v", first)
	}
	batches := int(final.Attrs["steps"].(float64)) / 4
	if batches < 4 {
		t.Fatalf("%d batches per epoch: too few to stop mid-epoch", batches)
	}

	for _, stop := range []struct {
		name  string
		every any
		at    func(line string) bool
	}{
		{"mid-epoch, periodic", 1, func(line string) bool {
			m := checkpointAt.FindStringSubmatch(line)
			return m != nil && m[1] == strconv.Itoa(batches+batches/2)
		}},
		{"epoch's end, on stopping", "30m", func(line string) bool {
			return strings.Contains(line, "epoch 1: train loss") || strings.Contains(line, "(epoch 1): train loss")
		}},
	} {
		t.Run(stop.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stopped := spec(stop.every)
			logs := &cancelOn{match: stop.at, cancel: cancel}
			before, err := run(ctx, stopped, logs)
			if err == nil {
				t.Fatalf("the run was not stopped:\n%s", logs)
			}
			resumed := spec(stop.every)
			for i := range resumed.Members() {
				from := filepath.Join(stopped.Members()[i].OutputDir, CheckpointName)
				if _, err := os.Stat(from); err != nil {
					t.Fatalf("no checkpoint: %v\n%s", err, logs)
				}
				if packed {
					resumed.Pack[i].ResumeFrom = from
				} else {
					resumed.ResumeFrom = from
				}
			}
			var mixed Spec // member 0 resumes, member 1 starts: their places in the data differ
			if packed {
				mixed = spec(stop.every)
				raw, _ := os.ReadFile(resumed.Pack[0].ResumeFrom)
				mixed.Pack[0].ResumeFrom = filepath.Join(t.TempDir(), CheckpointName)
				os.WriteFile(mixed.Pack[0].ResumeFrom, raw, 0o644)
			}
			logs2 := &cancelOn{}
			after, err := run(context.Background(), resumed, logs2)
			if err != nil {
				t.Fatalf("%v\n%s", err, logs2)
			}
			for i, mb := range resumed.Members() {
				note, rest := withoutResumed(after[key(mb)])
				if note == nil {
					t.Fatalf("#%d: no resumed line:\n%s", mb.Number, logs2)
				}
				values, _ := note.Attrs["values"].([]any)
				if len(values) != len(before[key(mb)]) || note.Attrs["from_trial"] != float64(mb.Number) {
					t.Errorf("#%d: resumed %+v after %d lines", mb.Number, note, len(before[key(mb)]))
				}
				joined := append(append([]Message{}, before[key(mb)]...), rest...)
				if diff := sameTraining(joined, whole[key(mb)]); diff != "" {
					t.Errorf("#%d: stopped and resumed differ from uninterrupted: %s\n%s", mb.Number, diff, logs2)
				}
				if _, err := os.Stat(resumed.Members()[i].ResumeFrom); !os.IsNotExist(err) && stop.every == 1 {
					t.Errorf("#%d: the predecessor's checkpoint is still there after the trial wrote its own", mb.Number)
				}
			}
			if !packed {
				return
			}
			lines, err := run(context.Background(), mixed, &cancelOn{})
			if err != nil {
				t.Fatal(err)
			}
			_, rest := withoutResumed(lines[0])
			if diff := sameTraining(append(append([]Message{}, before[0]...), rest...), whole[0]); diff != "" {
				t.Errorf("#0 resumed beside a fresh trial: %s", diff)
			}
			if diff := sameTraining(lines[1], whole[1]); diff != "" {
				t.Errorf("#1 fresh beside a resumed trial: %s", diff)
			}
		})
	}
}

// TestDamagedCheckpointStartsAfresh: a checkpoint cut short, with a
// flipped byte, or of another training (another learning rate) is not
// resumed: the trial says why in its log, trains from the start exactly
// as a fresh one, and leaves the file where it was.
func TestDamagedCheckpointStartsAfresh(t *testing.T) {
	model := tinyModel(t)
	reg := methods.Registry{}
	read.Register(reg)
	spec := func(lr float64) Spec {
		return Spec{Version: Version, Study: "read/x/sst2", Method: "read", Arch: map[string]any{"hidden": 16}, Dataset: "sst2",
			Params: map[string]any{"lr": lr}, Seed: 3, Model: model, DataDir: "../glue/testdata/fixture", OutputDir: t.TempDir(),
			Training: map[string]any{"max_epochs": 2, "batch_size": 16, "state_cache_dir": t.TempDir(), "checkpoint_every": 3}}
	}
	var fresh bytes.Buffer
	if err := Run(context.Background(), spec(1e-2), reg, nil, &fresh, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	// A whole checkpoint of the same training, from a run stopped at step 6.
	ctx, cancel := context.WithCancel(context.Background())
	stopped := spec(1e-2)
	logs := &cancelOn{cancel: cancel, match: func(line string) bool {
		m := checkpointAt.FindStringSubmatch(line)
		return m != nil && m[1] == "6"
	}}
	if err := Run(ctx, stopped, reg, nil, &bytes.Buffer{}, logs); err == nil {
		t.Fatal("not stopped")
	}
	good, err := os.ReadFile(filepath.Join(stopped.OutputDir, CheckpointName))
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 0x10
	// A header whose first tensor claims 2⁶²+1 values, and one whose
	// tensor is far larger than the run's (a sparse file could back it):
	// neither may be allocated.
	withLen := func(n int64) []byte {
		off := len(checkpointMagic)
		hlen := int(binary.LittleEndian.Uint64(good[off:]))
		var h map[string]any
		if err := json.Unmarshal(good[off+8:off+8+hlen], &h); err != nil {
			t.Fatal(err)
		}
		h["tensors"].([]any)[0].(map[string]any)["len"] = n
		nh, _ := json.Marshal(h)
		out := append([]byte(checkpointMagic), binary.LittleEndian.AppendUint64(nil, uint64(len(nh)))...)
		out = append(out, nh...)
		out = append(out, good[off+8+hlen:]...)
		if n < 1<<40 {
			out = append(out, make([]byte, 4*n)...)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		file []byte
		lr   float64
		says string
	}{
		{"truncated", good[:len(good)-100], 1e-2, "does not match its contents"},
		{"flipped byte", flipped, 1e-2, "does not match its contents"},
		{"empty", nil, 1e-2, "not a checkpoint"},
		{"another learning rate", good, 3e-3, "belongs to another training"},
		{"a tensor of 2⁶²+1 values", withLen(1<<62 + 1), 1e-2, "does not match its contents"},
		{"a tensor larger than the run's", withLen(1 << 24), 1e-2, "does not match its contents"},
		{"a FIFO", nil, 1e-2, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), CheckpointName)
			if tc.name == "a FIFO" {
				// Opening one for reading would wait for a writer for ever.
				if err := syscall.Mkfifo(path, 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				os.WriteFile(path, tc.file, 0o644)
			}
			s := spec(tc.lr)
			s.ResumeFrom = path
			var out, logs bytes.Buffer
			if err := Run(context.Background(), s, reg, nil, &out, &logs); err != nil {
				t.Fatalf("%v\n%s", err, logs.String())
			}
			if !strings.Contains(logs.String(), "not resuming: checkpoint "+path) || !strings.Contains(logs.String(), tc.says) {
				t.Errorf("log does not say why the checkpoint is not resumed (%q):\n%s", tc.says, logs.String())
			}
			if strings.Contains(out.String(), `"resumed"`) {
				t.Errorf("a resumed line for a checkpoint not resumed:\n%s", out.String())
			}
			if tc.lr == 1e-2 {
				if diff := sameTraining(trialLines(t, out.String())[-1], trialLines(t, fresh.String())[-1]); diff != "" {
					t.Errorf("not as a fresh trial: %s", diff)
				}
			}
			if tc.file != nil {
				if raw, _ := os.ReadFile(path); !bytes.Equal(raw, tc.file) {
					t.Error("the checkpoint file was changed")
				}
			}
		})
	}
}

func TestCheckpointEverySetting(t *testing.T) {
	for _, tc := range []struct {
		v     any
		every string
		steps int
		bad   bool
	}{
		{nil, "30m0s", 0, false}, // the default
		{"2h", "2h0m0s", 0, false},
		{500, "0s", 500, false},
		{"500", "0s", 500, false},
		{0, "0s", 0, false},
		{"0", "0s", 0, false},
		{"1ms", "", 0, true},
		{-1, "", 0, true},
		{2.5, "", 0, true},
		{"soon", "", 0, true},
		{true, "", 0, true},
	} {
		m := map[string]any{}
		if tc.v != nil {
			m["checkpoint_every"] = tc.v
		}
		s, err := ParseSettings(m)
		if tc.bad {
			if err == nil || !strings.Contains(err.Error(), "checkpoint_every") {
				t.Errorf("checkpoint_every %v: error %v, want one naming the key", tc.v, err)
			}
			continue
		}
		if err != nil || s.CheckpointEvery.String() != tc.every || s.CheckpointSteps != tc.steps {
			t.Errorf("checkpoint_every %v: %v, %d steps (%v); want %s, %d", tc.v, s.CheckpointEvery, s.CheckpointSteps, err, tc.every, tc.steps)
		}
	}
}

// TestPrunedTrialDoesNotCheckpoint: a trial stopped after the
// orchestrator marked it pruned writes no checkpoint; the same stop
// without the mark does.
func TestPrunedTrialDoesNotCheckpoint(t *testing.T) {
	model := tinyModel(t)
	reg := methods.Registry{}
	read.Register(reg)
	for _, pruned := range []bool{true, false} {
		s := Spec{Version: Version, Study: "read/x/sst2", Method: "read", Arch: map[string]any{"hidden": 16}, Dataset: "sst2",
			Params: map[string]any{"lr": 1e-2}, Seed: 3, Model: model, DataDir: "../glue/testdata/fixture", OutputDir: t.TempDir(),
			Training: map[string]any{"max_epochs": 3, "batch_size": 16, "state_cache_dir": t.TempDir()}}
		if pruned {
			os.WriteFile(filepath.Join(s.OutputDir, PrunedName), nil, 0o644)
		}
		ctx, cancel := context.WithCancel(context.Background())
		logs := &cancelOn{cancel: cancel, match: func(line string) bool { return strings.Contains(line, "epoch 0: train loss") }}
		if err := Run(ctx, s, reg, nil, &bytes.Buffer{}, logs); err == nil {
			t.Fatal("not stopped")
		}
		_, err := os.Stat(filepath.Join(s.OutputDir, CheckpointName))
		if pruned != os.IsNotExist(err) {
			t.Errorf("pruned %v: checkpoint stat %v\n%s", pruned, err, logs)
		}
	}
}

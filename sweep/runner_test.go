package sweep

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/readsweep/readsweep/sweep/pruner"
	"github.com/readsweep/readsweep/sweep/storage"
	"github.com/readsweep/readsweep/trial"
)

// inProcess replaces the trial subprocess with the synthetic trainer run in
// this process, reading the spec the runner wrote to stdin.
func inProcess(ctx context.Context, p Proc) error {
	spec, err := stdinSpec(p)
	if err != nil {
		return err
	}
	return trial.Run(ctx, spec, nil, nil, p.Stdout, p.Stderr)
}

// stdinSpec reads the spec the runner wrote to a trial process's stdin.
func stdinSpec(p Proc) (trial.Spec, error) {
	var spec trial.Spec
	raw, err := io.ReadAll(p.Stdin)
	if err != nil {
		return spec, err
	}
	err = json.Unmarshal(raw, &spec)
	return spec, err
}

// testRunner parses a sweep file and returns a Runner over a fresh SQLite
// database in a temporary directory, with exec as its trial process.
func testRunner(t *testing.T, yaml string, exec func(context.Context, Proc) error) (*Runner, *storage.DB) {
	t.Helper()
	dir := t.TempDir()
	cfg, err := ParseConfig("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	cfg.OutputDir = filepath.Join(dir, "runs")
	store, err := storage.OpenSQLite(filepath.Join(dir, "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	sampler, _ := NewSampler(cfg.Sampler)
	return &Runner{Config: cfg, Storage: store, Sampler: sampler, Pruner: NewPruner(cfg.Pruner), Exec: exec}, store
}

func TestRunnerInProcess(t *testing.T) {
	r, store := testRunner(t, `trainer: synthetic
datasets: [sst2, rte, cola]
methods:
  read: [{cell: gru}, {cell: lstm}]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: 12
sampler: {seed: 4, n_startup_trials: 4}
pruner: {name: median, n_startup_trials: 2, n_warmup_steps: 1}
training: {max_epochs: 5}
parallel: 3
`, inProcess)
	cfg := r.Config
	var progressCalls int
	r.Progress = func(done, total int, running []string) { progressCalls++ }
	plan := Plan(cfg, nil)
	res, err := r.Run(context.Background(), plan)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Finished) != 6 || res.States[storage.Fail] != 0 || res.States[storage.Complete]+res.States[storage.Pruned] != 72 {
		t.Errorf("result %+v", res)
	}
	if res.States[storage.Pruned] == 0 {
		t.Error("nothing pruned")
	}
	if progressCalls == 0 {
		t.Error("progress never reported")
	}
	sel, err := Best(context.Background(), store, "read", nil)
	if err != nil {
		t.Fatal(err)
	}
	chosen, ok := sel.Chosen()
	if !ok || !chosen.Complete || len(chosen.Best) != 3 {
		t.Fatalf("selection %+v", sel)
	}
	for _, a := range sel.Archs[1:] {
		if a.Mean > chosen.Mean {
			t.Errorf("chosen %s (%.4f) but %s has mean %.4f", chosen.Arch, chosen.Mean, a.Arch, a.Mean)
		}
	}
	// A second run finds nothing to do.
	res, err = r.Run(context.Background(), plan)
	if err != nil || len(res.States) != 0 {
		t.Errorf("second run: %+v, %v", res, err)
	}
}

// fakePack plays a pack's trial process: every member reports epochs of a
// value that grows with the epoch and peaks at lr = 3e-4, reads a verdict
// per epoch line and drops the pruned; trial number 2 fails on its own.
// Before its final lines it calls beforeFinals (if not nil) with the
// trial numbers it heard pruned.
func fakePack(sizes *[]int, beforeFinals func(pruned []int)) func(ctx context.Context, p Proc) error {
	return func(ctx context.Context, p Proc) error {
		var spec trial.Spec
		for _, kv := range p.Env {
			if path, ok := strings.CutPrefix(kv, trial.SpecEnv+"="); ok {
				raw, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				if err := json.Unmarshal(raw, &spec); err != nil {
					return err
				}
			}
		}
		members := spec.Members()
		*sizes = append(*sizes, len(members))
		verdicts := bufio.NewScanner(p.Stdin)
		alive := map[int]bool{}
		for _, mb := range members {
			alive[mb.Number] = true
		}
		var pruned []int
		line := func(mb trial.Member, m trial.Message) {
			if len(spec.Pack) > 0 {
				n := mb.Number
				m.Trial = &n
			}
			p.Stdout.Write(m.Encode())
		}
		epochs := intAt(spec.Training, "max_epochs")
		for e := range epochs {
			reported := 0
			for _, mb := range members {
				if !alive[mb.Number] {
					continue
				}
				if mb.Number == 2 {
					line(mb, trial.Message{Type: trial.TypeFinal, Value: trial.Float(math.NaN()), Attrs: map[string]any{"fail_reason": "boom"}})
					alive[mb.Number] = false
					continue
				}
				lr := mb.Params["lr"].(float64)
				v := float64(e+1) / float64(epochs) * (1 - math.Abs(math.Log10(lr/3e-4))/4)
				line(mb, trial.Message{Type: trial.TypeEpoch, Step: e, Value: trial.Float(v)})
				fmt.Fprintf(p.Stderr, "[#%d] epoch %d\nshared line\n", mb.Number, e)
				reported++
			}
			for range reported {
				if len(spec.Pack) == 0 || !verdicts.Scan() {
					break
				}
				var v trial.Verdict
				json.Unmarshal(verdicts.Bytes(), &v)
				if v.Prune {
					alive[v.Trial] = false
					pruned = append(pruned, v.Trial)
				}
			}
		}
		if beforeFinals != nil {
			beforeFinals(pruned)
		}
		for _, mb := range members {
			if alive[mb.Number] {
				lr := mb.Params["lr"].(float64)
				line(mb, trial.Message{Type: trial.TypeFinal, Value: trial.Float(1 - math.Abs(math.Log10(lr/3e-4))/4)})
			}
		}
		return nil
	}
}

func intAt(m map[string]any, key string) int {
	switch v := m[key].(type) {
	case int:
		return v
	case float64:
		return int(v)
	}
	return 0
}

// TestRunnerPacks runs a study in packs of four under ASHA: the runner
// samples each pack's trials, routes every line to its trial, prunes
// inside packs by verdict (recording a pruned trial while its pack goes
// on), fails only the trial that failed (and retries it), splits the
// logs, and stops at the budget exactly.
func TestRunnerPacks(t *testing.T) {
	var sizes []int
	var store *storage.DB
	// early lists the trials that were PRUNED, with their end time, in the
	// study while their pack still ran.
	early := map[int]bool{}
	var earlyErrs []string
	whilePackRuns := func(pruned []int) {
		studies, _ := store.Studies(context.Background())
		trials, _ := store.Trials(context.Background(), studies[0].ID)
		for _, n := range pruned {
			for _, tr := range trials {
				if tr.Number != n {
					continue
				}
				if tr.State != storage.Pruned || tr.Complete.IsZero() {
					earlyErrs = append(earlyErrs, fmt.Sprintf("#%d: %v (finished %v) while its pack ran on", n, tr.State, tr.Complete))
				}
				early[n] = true
			}
		}
	}
	r, store := testRunner(t, `datasets: [sst2]
methods:
  read: [{cell: gru}]
search:
  lr: {low: 1.0e-6, high: 3.0e-2, log: true}
trials: 10
sampler: {seed: 4, n_startup_trials: 4}
pruner: {name: asha, min_resource: 1, reduction_factor: 2}
training: {max_epochs: 4}
pack: 4
max_retries: 1
`, fakePack(&sizes, whilePackRuns))
	cfg := r.Config
	r.Packable = func(method string, _ map[string]any) bool { return method == "read" }
	res, err := r.Run(context.Background(), Plan(cfg, nil))
	if err != nil {
		t.Fatal(err)
	}
	studies, _ := store.Studies(context.Background())
	trials, _ := store.Trials(context.Background(), studies[0].ID)
	n := storage.Count(trials)
	if n[storage.Complete]+n[storage.Pruned] != 10 || n[storage.Pruned] == 0 || n[storage.Fail] != 1 || res.States[storage.Fail] != 1 {
		t.Errorf("states %v (run %v), want 10 finished, some pruned, trial 2 failed", n, res.States)
	}
	retried := false
	for _, tr := range trials {
		retried = retried || tr.SystemAttrs["failed_trial"] == float64(2)
	}
	if !retried {
		t.Error("trial 2 was not retried")
	}
	for _, e := range earlyErrs {
		t.Error(e)
	}
	for _, tr := range trials {
		if tr.State == storage.Pruned && !early[tr.Number] {
			t.Errorf("#%d is PRUNED, but its pack did not hear so", tr.Number)
		}
	}
	if len(early) == 0 {
		t.Error("no trial was pruned inside a pack: the test reaches nothing")
	}
	if sizes[0] != 4 || slices.Max(sizes) != 4 {
		t.Errorf("pack sizes %v, want packs of up to 4", sizes)
	}
	lrs := map[float64]bool{}
	for _, tr := range trials {
		if tr.Number == 2 {
			if tr.UserAttrs["fail_reason"] != "boom" {
				t.Errorf("#2: fail_reason %v", tr.UserAttrs["fail_reason"])
			}
			continue
		}
		if tr.State == storage.Fail {
			continue
		}
		if lrs[tr.Params["lr"]] && tr.SystemAttrs["fixed_params"] == nil {
			t.Errorf("#%d: lr %g sampled twice", tr.Number, tr.Params["lr"])
		}
		lrs[tr.Params["lr"]] = true
		want := 4
		if tr.State == storage.Pruned {
			want = len(tr.Intermediate) // pruned after its last reported epoch
		}
		if len(tr.Intermediate) != want || len(tr.Intermediate) == 0 {
			t.Errorf("#%d %v: %d epochs", tr.Number, tr.State, len(tr.Intermediate))
		}
		log, _ := os.ReadFile(filepath.Join(cfg.OutputDir, "read", "gru", "sst2", fmt.Sprintf("trial-%d", tr.Number), "stderr.log"))
		if strings.Count(string(log), "epoch ") != len(tr.Intermediate) || !strings.Contains(string(log), "shared line\n") || strings.Contains(string(log), "[#") {
			t.Errorf("#%d's log:\n%s", tr.Number, log)
		}
	}
}

// oneStudy is the start of a sweep file with one study: the synthetic
// trainer's READ (GRU) on sst2 over the usual learning-rate range.
const oneStudy = `trainer: synthetic
datasets: [sst2]
methods:
  read: [{cell: gru}]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
`

// oneStudyRunner is testRunner over oneStudy with extra keys, its plan and
// its study, created.
func oneStudyRunner(t *testing.T, extra string) (*Runner, *storage.DB, []Planned, storage.Study) {
	t.Helper()
	r, store := testRunner(t, oneStudy+extra, inProcess)
	plan := Plan(r.Config, nil)
	st, err := store.CreateStudy(context.Background(), plan[0].Name, storage.Maximize, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r, store, plan, st
}

// orphan creates a RUNNING trial of lr with a heartbeat, as a process
// that then died leaves it.
func orphan(t *testing.T, store *storage.DB, studyID int64, lr float64) storage.FrozenTrial {
	t.Helper()
	tr, err := store.CreateTrial(context.Background(), studyID, storage.TrialOptions{State: storage.Running, Heartbeat: true,
		Params: map[string]float64{"lr": lr}, Distributions: map[string]storage.Distribution{"lr": storage.Float(1e-6, 3e-3, true)}})
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestStaleTrialRetriedOnce: a process that dies after enqueuing its
// failed trial's retry but before recording the FAIL leaves a RUNNING
// trial; the next run reaps it and does not enqueue it again. One that
// died before enqueuing gets its retry from the reaper. Each lost trial
// ends with exactly one COMPLETE retry.
func TestStaleTrialRetriedOnce(t *testing.T) {
	r, store, plan, st := oneStudyRunner(t, `trials: 4
training: {max_epochs: 1}
heartbeat_interval: 50ms
heartbeat_grace: 100ms
`)
	ctx := context.Background()
	var lost []storage.FrozenTrial
	for _, lr := range []float64{1e-4, 2e-4} {
		lost = append(lost, orphan(t, store, st.ID, lr))
	}
	// #0's process enqueued its retry, then died; #1's died at once.
	if err := enqueueRetry(ctx, store, st.ID, lost[0], true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // both heartbeats go stale
	if _, err := r.Run(ctx, plan); err != nil {
		t.Fatal(err)
	}
	trials, err := store.Trials(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lost {
		retries, complete := 0, 0
		for _, o := range trials {
			if retryOf(o) == l.Number {
				retries++
				if o.State == storage.Complete {
					complete++
				}
			}
		}
		if trials[l.Number].State != storage.Fail || retries != 1 || complete != 1 {
			t.Errorf("#%d: %v, %d retries (%d COMPLETE), want FAIL and one COMPLETE retry", l.Number, trials[l.Number].State, retries, complete)
		}
	}
}

// TestSearchTrialsSkipLatency: Table 1 reads inference time from the final
// runs, so search trials are told latency_examples 0, unless the sweep
// file sets it; final runs keep the trainer's default.
func TestSearchTrialsSkipLatency(t *testing.T) {
	for _, tc := range []struct {
		training      string
		search, final any // latency_examples in the trials' specs
	}{
		{"{max_epochs: 2}", 0, nil},
		{"{max_epochs: 2, latency_examples: 4}", 4, 4},
	} {
		var mu sync.Mutex
		seen := map[bool][]any{} // final → latency_examples of each spawn
		r, store := testRunner(t, oneStudy+`trials: 2
training: `+tc.training+"\n", func(ctx context.Context, p Proc) error {
			spec, err := stdinSpec(p)
			if err != nil {
				return err
			}
			final := strings.HasPrefix(spec.Study, FinalPrefix)
			mu.Lock()
			defer mu.Unlock()
			if v, ok := spec.Training["latency_examples"]; ok {
				seen[final] = append(seen[final], v)
			} else {
				seen[final] = append(seen[final], nil)
			}
			return trial.Run(ctx, spec, nil, nil, p.Stdout, p.Stderr)
		})
		ctx := context.Background()
		if _, err := r.Run(ctx, Plan(r.Config, nil)); err != nil {
			t.Fatal(err)
		}
		finals, err := FinalPlan(ctx, store, r.Config, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Run(ctx, finals); err != nil {
			t.Fatal(err)
		}
		for final, want := range map[bool]any{false: tc.search, true: tc.final} {
			if len(seen[final]) == 0 {
				t.Fatalf("%s: no trial with final=%v ran", tc.training, final)
			}
			for _, got := range seen[final] {
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("training %s: a trial (final %v) was given latency_examples %v, want %v", tc.training, final, got, want)
				}
			}
		}
	}
}

// retryOf is the number of the trial that t retries (the last of its
// retry history), or −1.
func retryOf(t storage.FrozenTrial) int {
	h, _ := t.SystemAttrs["retry_history"].([]any)
	if len(h) == 0 {
		return -1
	}
	switch n := h[len(h)-1].(type) {
	case float64: // as stored
		return int(n)
	case int:
		return n
	}
	return -1
}

// samplerSpy records, per trial number, the trials a sampler was shown.
type samplerSpy struct {
	Sampler
	mu   sync.Mutex
	seen map[int][]int
}

func (s *samplerSpy) Sample(study storage.Study, trials []storage.FrozenTrial, number int, space map[string]storage.Distribution) (map[string]float64, error) {
	s.mu.Lock()
	for _, t := range trials {
		s.seen[number] = append(s.seen[number], t.Number)
	}
	s.mu.Unlock()
	return s.Sampler.Sample(study, trials, number, space)
}

// TestRunnerHyperband runs a study under Hyperband: trials are pruned, and
// once the brackets are set up the sampler learns only from the new
// trial's bracket, as Optuna's samplers do.
func TestRunnerHyperband(t *testing.T) {
	r, store := testRunner(t, oneStudy+`trials: 24
sampler: {seed: 4, n_startup_trials: 4}
pruner: {name: hyperband, min_resource: 1, max_resource: 9, reduction_factor: 3}
training: {max_epochs: 9, patience: 9}
`, inProcess)
	spy := &samplerSpy{Sampler: r.Sampler, seen: map[int][]int{}}
	r.Sampler = spy
	if _, err := r.Run(context.Background(), Plan(r.Config, nil)); err != nil {
		t.Fatal(err)
	}
	studies, _ := store.Studies(context.Background())
	trials, _ := store.Trials(context.Background(), studies[0].ID)
	n := storage.Count(trials)
	if n[storage.Complete]+n[storage.Pruned] != 24 || n[storage.Pruned] == 0 {
		t.Fatalf("states %v, want 24 finished, some pruned", n)
	}
	h := r.Pruner.(*pruner.Hyperband)
	narrowed := 0
	for number, seen := range spy.seen {
		if number == 0 {
			continue // the first report sets the brackets up
		}
		own, ok := h.Bracket(studies[0], number)
		if !ok {
			t.Fatal("brackets not set up with a fixed max_resource")
		}
		for _, other := range seen {
			if b, _ := h.Bracket(studies[0], other); b != own {
				t.Errorf("trial %d (bracket %d) was sampled from trial %d of bracket %d", number, own, other, b)
			}
		}
		if len(seen) < number+1 {
			narrowed++
		}
	}
	if narrowed == 0 {
		t.Error("no sampling was narrowed to a bracket")
	}
}

// TestReapedTrialsAndTheirCheckpoints: a dead trial that left a
// checkpoint beyond the one it was given trained on, so its retry is free
// (it does not use up max_retries); one that left none, or one no
// further than it was given, has used its last retry here (max_retries
// 0), and its lineage's checkpoints and leftover temporary files go; one
// the pruner had stopped is not retried at all.
func TestReapedTrialsAndTheirCheckpoints(t *testing.T) {
	r, store, plan, st := oneStudyRunner(t, `trials: 4
max_retries: 0
training: {max_epochs: 1}
heartbeat_interval: 50ms
heartbeat_grace: 100ms
`)
	ctx := context.Background()
	progressed, stuck, again, pruned := orphan(t, store, st.ID, 1e-4), orphan(t, store, st.ID, 2e-4), orphan(t, store, st.ID, 3e-4), orphan(t, store, st.ID, 4e-4)
	ss := &studyState{plan: plan[0], study: st}
	for _, tr := range []storage.FrozenTrial{progressed, stuck, again, pruned} {
		os.MkdirAll(r.trialDir(ss, tr), 0o755)
	}
	fakeCheckpoint(t, filepath.Join(r.trialDir(ss, progressed), trial.CheckpointName), 40, 20)
	fakeCheckpoint(t, filepath.Join(r.trialDir(ss, again), trial.CheckpointName), 20, 20)
	fakeCheckpoint(t, filepath.Join(r.trialDir(ss, pruned), trial.CheckpointName), 30, 0)
	os.WriteFile(filepath.Join(r.trialDir(ss, pruned), trial.PrunedName), nil, 0o644)
	temp := filepath.Join(r.trialDir(ss, stuck), "."+trial.CheckpointName+".123.tmp")
	os.WriteFile(temp, []byte("half a write"), 0o644)
	time.Sleep(300 * time.Millisecond) // the heartbeats go stale
	if _, err := r.Run(ctx, plan); err != nil {
		t.Fatal(err)
	}
	trials, err := store.Trials(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	retried := map[int]bool{}
	for _, o := range trials {
		if n := retryOf(o); n >= 0 {
			retried[n] = true
		}
	}
	if !retried[progressed.Number] || retried[stuck.Number] || retried[again.Number] || retried[pruned.Number] {
		t.Errorf("retried %v: want #%d alone (it checkpointed beyond what it was given)", retried, progressed.Number)
	}
	for _, gone := range []string{temp, filepath.Join(r.trialDir(ss, again), trial.CheckpointName), filepath.Join(r.trialDir(ss, pruned), trial.CheckpointName)} {
		if _, err := os.Stat(gone); !os.IsNotExist(err) {
			t.Errorf("%s is still there (%v)", gone, err)
		}
	}
}

// fakeCheckpoint writes a checkpoint file with no tensors, after steps
// optimiser steps, given one of offered steps, in the file format of
// trial's checkpoints (docs/protocol.md).
func fakeCheckpoint(t *testing.T, path string, steps, offered int) {
	t.Helper()
	header, _ := json.Marshal(map[string]any{"steps": steps, "offered_steps": offered, "tensors": []any{}})
	body := binary.LittleEndian.AppendUint64([]byte("READSWEEP-CHECKPOINT 1\n"), uint64(len(header)))
	body = append(body, header...)
	body = binary.BigEndian.AppendUint32(body, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := trial.CheckpointProgressed(path); got != (steps > offered) {
		t.Fatalf("fake checkpoint %s does not read as one", path)
	}
}

// TestFinishedTrialStandsWhenInterrupted: a trial whose final line came
// in as the sweep was being stopped is COMPLETE, not FAIL "interrupted"
// and trained again.
func TestFinishedTrialStandsWhenInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r, store := testRunner(t, oneStudy+"trials: 1\n", func(_ context.Context, p Proc) error {
		p.Stdout.Write(trial.Message{Type: trial.TypeFinal, Value: 0.75}.Encode())
		cancel() // Ctrl-C, after the result
		return nil
	})
	if _, err := r.Run(ctx, Plan(r.Config, nil)); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	studies, _ := store.Studies(context.Background())
	trials, _ := store.Trials(context.Background(), studies[0].ID)
	if len(trials) != 1 || trials[0].State != storage.Complete {
		t.Errorf("%d trials, the first %v (%v); want one COMPLETE", len(trials), trials[0].State, trials[0].UserAttrs["fail_reason"])
	}
}

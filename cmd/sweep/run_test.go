package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
)

// syntheticSweep is a one-study sweep file of the synthetic trainer on
// sst2: candidate is its architecture, extra more top-level keys.
func syntheticSweep(db, candidate string, trials int, extra string) string {
	return fmt.Sprintf(`storage: sqlite:///%s
trainer: synthetic
datasets: [sst2]
methods:
  synthetic: [%s]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: %d
training: {max_epochs: 1}
%s`, db, candidate, trials, extra)
}

// watchdogScript behaves by the LoRA rank it is given: 1 prints an epoch
// and then hangs ignoring SIGTERM (only SIGKILL ends it), 2 keeps beating
// but never finishes, 3 fails with a message on stderr, 4 reports its
// writable-memory limit (RLIMIT_DATA) as its value, 5 dies as the Go
// runtime does when out of memory, its reason far above its stderr's tail.
const watchdogScript = `case "$2" in
1) echo '{"type": "epoch", "step": 0, "value": 0.5}'; trap '' TERM; while :; do sleep 0.05; done ;;
2) while :; do echo '{"type": "heartbeat"}'; sleep 0.05; done ;;
3) echo "glue: no sst2 data under /nowhere" >&2; exit 1 ;;
4) echo "{\"type\": \"final\", \"value\": $(ulimit -d)}" ;;
5) echo 'runtime: out of memory: cannot allocate 4194304-byte block' >&2; echo 'fatal error: out of memory' >&2
   i=0; while [ $i -lt 200 ]; do echo "	/usr/local/go/src/runtime/panic.go:1229 +0x48 fp=0x94ccffe17e0 frame $i" >&2; i=$((i+1)); done
   exit 2 ;;
esac`

// TestWatchdog runs a sweep whose trials stall, overrun, fail and report
// their memory limit: the first two are stopped by stall_timeout and
// trial_timeout with the limit named in fail_reason, retried once, and the
// sweep goes on; the failure's reason carries the stderr line that says
// why; the memory limit reaches the trial.
func TestWatchdog(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, `storage: sqlite:///w.db
datasets: [sst2]
methods:
  lora: [{rank: 1}, {rank: 2}, {rank: 3}, {rank: 4}, {rank: 5}]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: 1
parallel: 5
device: cpu
max_retries: 1
max_failures: 2
stall_timeout: 3s
trial_timeout: 5s
kill_grace: 300ms
trial_memory_gb: 0.5
command: ["/bin/sh", "-c", `+strconvQuote(watchdogScript)+`, "trial", "{lr}", "{rank}"]
`)
	_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
	if code != 1 {
		t.Fatalf("exit %d, want 1 (four studies give up)\n%s", code, errOut)
	}
	studies := load(t, filepath.Join(dir, "w.db"))
	for _, tc := range []struct{ study, reason string }{
		{"lora/rank-1/sst2", "stall_timeout 3s: no message since"},
		{"lora/rank-2/sst2", "trial_timeout 5s: still running after"},
		{"lora/rank-3/sst2", "exit status 1: glue: no sst2 data under /nowhere"},
	} {
		trials := studies[tc.study]
		if n := storage.Count(trials); n[storage.Fail] != 2 {
			t.Errorf("%s: %v, want 2 FAIL (the trial and its retry)", tc.study, n)
			continue
		}
		for _, tr := range trials {
			if got, _ := tr.UserAttrs["fail_reason"].(string); !strings.Contains(got, tc.reason) {
				t.Errorf("%s#%d: fail_reason %q, want %q", tc.study, tr.Number, got, tc.reason)
			}
		}
		if !strings.Contains(errOut, tc.reason) {
			t.Errorf("the run log does not show %q:\n%s", tc.reason, errOut)
		}
	}
	if got, _ := studies["lora/rank-1/sst2"][0].UserAttrs["fail_reason"].(string); !strings.Contains(got, "(last: epoch 0)") {
		t.Errorf("stall reason %q does not name the last message", got)
	}
	mem := studies["lora/rank-4/sst2"]
	if len(mem) != 1 || mem[0].State != storage.Complete || *mem[0].Value != 0.5*(1<<20) {
		t.Errorf("memory study: %+v, want one COMPLETE trial reporting ulimit -d = %d KiB", mem, 1<<19)
	}
	if len(studies["lora/rank-5/sst2"]) == 0 {
		t.Error("the out-of-memory study ran no trial")
	}
	for _, tr := range studies["lora/rank-5/sst2"] {
		if got, _ := tr.UserAttrs["fail_reason"].(string); got != "trial_memory_gb 0.5: out of memory (exit status 2)" {
			t.Errorf("a Go runtime's out-of-memory death: fail_reason %q", got)
		}
	}
}

// TestPreflight: a sweep whose model and data are missing stops before its
// first trial with every problem listed, instead of failing each trial.
func TestPreflight(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, `storage: sqlite:///p.db
model: ./no-model
data_dir: ./no-data
datasets: [sst2, rte]
methods:
  lora: [{rank: 4}]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: 2
`)
	_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, errOut)
	}
	for _, want := range []string{"sweep.yaml: no trial started, since:", "model folder ./no-model does not exist",
		"no sst2 data under ./no-data", "no rte data under ./no-data"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	for name, trials := range load(t, filepath.Join(dir, "p.db")) {
		if len(trials) > 0 {
			t.Errorf("%s: %d trials ran", name, len(trials))
		}
	}
}

// TestReadingCommandsNeverWrite: the inspecting commands open storage
// read-only, so an empty file stays empty and a study database unchanged.
func TestReadingCommandsNeverWrite(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"best", "--method", "lora"}, {"studies"}, {"export", "--format", "json"}, {"table"}} {
		_, errOut, code := sweepCmd(t, dir, append(args, "--storage", "sqlite:///empty.db")...)
		if code == 0 || !strings.Contains(errOut, "not a study database") {
			t.Errorf("%v on an empty file: exit %d, %s", args, code, errOut)
		}
		if st, err := os.Stat(empty); err != nil || st.Size() != 0 {
			t.Fatalf("%v wrote into the empty file (%v)", args, err)
		}
	}
}

// TestMaxFailuresIsExact: with two trials at a time on one failing study,
// the run stops at exactly max_failures and says how many failed.
func TestMaxFailuresIsExact(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, syntheticSweep("m.db", "{fail: exit, name: exits}", 4, "parallel: 2\nmax_retries: 0\nmax_failures: 3\n"))
	_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, errOut)
	}
	if n := storage.Count(load(t, filepath.Join(dir, "m.db"))["synthetic/exits/sst2"]); n[storage.Fail] != 3 {
		t.Errorf("%v, want exactly max_failures = 3 FAIL trials", n)
	}
	for _, want := range []string{"this run: 0 complete, 0 pruned, 3 failed", "gave up on synthetic/exits/sst2 (3 failed): max_failures is 3"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("summary lacks %q:\n%s", want, errOut)
		}
	}
}

// TestReadOnlyStorageSaysSoFirst: a sweep on storage it cannot write stops
// with that error, not after a summary of zeros.
func TestReadOnlyStorageSaysSoFirst(t *testing.T) {
	dir := t.TempDir()
	path := writeConfig(t, dir, strings.Replace(failureConfig, "sqlite:///f.db", "sqlite:///"+filepath.Join(dir, "ro.db"), 1))
	s, err := storage.OpenSQLite(filepath.Join(dir, "ro.db")) // the schema exists
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	cfg, err := sweep.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OutputDir = filepath.Join(dir, "runs")
	ro, err := storage.OpenReadOnly(cfg.Storage)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	plan, err := planChecked(cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	err = runPlan(cfg, ro, plan, path, "run", time.Time{})
	if err == nil || !strings.Contains(err.Error(), "cannot be written") {
		t.Fatalf("runPlan on read-only storage: %v", err)
	}
}

// TestRunLogShowsChoices: a categorical parameter appears in the run log
// by its choice, not its index.
func TestRunLogShowsChoices(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, `storage: sqlite:///c.db
trainer: synthetic
datasets: [sst2]
methods:
  synthetic: [{name: fine}]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
  act: {choices: [relu, gelu]}
trials: 2
training: {max_epochs: 1}
`)
	_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "act=relu") && !strings.Contains(errOut, "act=gelu") {
		t.Errorf("the run log does not show the categorical's choice:\n%s", errOut)
	}
}

// TestChangedSearchSpaceIsReported: after the file's lr range changes, a
// second run says which studies differ and how, and starts no trial.
func TestChangedSearchSpaceIsReported(t *testing.T) {
	dir := t.TempDir()
	body := syntheticSweep("sp.db", "{name: fine}", 2, "")
	writeConfig(t, dir, body)
	if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml"); code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	writeConfig(t, dir, strings.Replace(strings.Replace(body, "high: 3.0e-3", "high: 1.0e-2", 1), "trials: 2", "trials: 4", 1))
	_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
	if code != 1 || !strings.Contains(errOut, "1 studies exist with another search space") ||
		!strings.Contains(errOut, `synthetic/fine/sst2: lr was {"name":"FloatDistribution"`) ||
		!strings.Contains(errOut, `"high":0.003`) || !strings.Contains(errOut, `the file says {"name":"FloatDistribution"`) || !strings.Contains(errOut, `"high":0.01`) ||
		!strings.Contains(errOut, "No trial was started") {
		t.Fatalf("exit %d:\n%s", code, errOut)
	}
	if n := len(load(t, filepath.Join(dir, "sp.db"))["synthetic/fine/sst2"]); n != 2 {
		t.Errorf("%d trials after the refused run, want the 2 of the first", n)
	}
}

// TestSecondInterruptKillsAtOnce: a trial that ignores SIGTERM holds the
// first Ctrl-C for kill_grace (30 s here), and the run says so; a second
// Ctrl-C kills it at once.
func TestSecondInterruptKillsAtOnce(t *testing.T) {
	dir := t.TempDir()
	// The trial says when its trap is set: a SIGTERM before that would end
	// it at once (the trial is RUNNING in the database before its process
	// has started).
	started := filepath.Join(dir, "started")
	writeConfig(t, dir, loopingSweep("i.db", "30s", "trap '' TERM INT; ", started))
	cmd, errOut := startRunning(t, dir, "i.db", started)
	defer cmd.Process.Kill()
	cmd.Process.Signal(os.Interrupt)
	waitFor(t, func() bool { return strings.Contains(errOut.String(), "Ctrl-C again kills them now") })
	if !regexp.MustCompile(`1 running trial\(s\), the longest running for \d+s, got SIGTERM and have up to kill_grace \(30s\) to end`).MatchString(errOut.String()) {
		t.Errorf("the first interrupt's message:\n%s", errOut.String())
	}
	start := time.Now()
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the second Ctrl-C took %v to end the run (kill_grace is 30 s)", took)
	}
	if !strings.Contains(errOut.String(), "killing the running trials") {
		t.Errorf("the second interrupt's message:\n%s", errOut.String())
	}
}

// loopingSweep is a sweep file of one trial that runs until it is stopped:
// its shell runs trap (a TERM or INT handler, or nothing), then makes the
// file started. Its trial folders go to dir/out.
func loopingSweep(db, killGrace, trap, started string) string {
	return `storage: sqlite:///` + db + `
output_dir: out
datasets: [sst2]
methods:
  lora: [{rank: 1}]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: 1
kill_grace: ` + killGrace + `
command: ["/bin/sh", "-c", "` + trap + `touch ` + started + `; while :; do sleep 0.05; done"]
`
}

// startRunning starts `sweep run sweep.yaml` in dir and waits until its
// trial has made the file started and is RUNNING in the database db.
func startRunning(t *testing.T, dir, db, started string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	errOut := &syncBuffer{}
	return startRunningTo(t, dir, db, started, errOut), errOut
}

// startRunningTo is startRunning with the run's stderr going to stderr.
func startRunningTo(t *testing.T, dir, db, started string, stderr io.Writer) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(sweepBin, "run", "sweep.yaml")
	cmd.Dir = dir
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		_, err := os.Stat(started)
		return err == nil && storage.Count(load(t, filepath.Join(dir, db))["lora/rank-1/sst2"])[storage.Running] == 1
	})
	return cmd
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("timed out waiting")
}

// TestPackedSweep sweeps READ with pack: 3 and LoRA beside it with the real
// trainer: READ's four trials run as a pack of three and one alone, each
// with its own epochs, result and log; LoRA's trials are not packed. A
// pack whose process fails fails each of its trials with the reason.
func TestPackedSweep(t *testing.T) {
	dir := t.TempDir()
	model := tinyModel(t, dir)
	body := `model: %s
data_dir: ` + mustAbs(t, "../../glue/testdata/fixture") + `
output_dir: runs
datasets: [sst2]
methods:
  read: [{hidden: 16}]
  lst: [{sidenet_dim: 16, init: magnitude}]
  lora: [{rank: 4}]
search:
  lr: {low: 1.0e-3, high: 1.0e-2, log: true}
trials: 4
pack: 3
max_retries: 0
max_failures: 3
training: {max_epochs: 2, batch_size: 32, state_cache_dir: cache}
`
	writeConfig(t, dir, "storage: sqlite:///p.db\n"+fmt.Sprintf(body, "tiny-t5"))
	_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
	if code != 0 {
		t.Fatalf("sweep run: exit %d\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "pack 3: 2 of 3 studies") {
		t.Errorf("the run does not say which studies pack:\n%s", errOut)
	}
	studies := load(t, filepath.Join(dir, "p.db"))
	checkBudgets(t, studies, 3, 4)
	packSizes := map[string][]any{}
	for name, trials := range studies {
		for _, tr := range trials {
			if tr.State != storage.Complete || len(tr.Intermediate) != 2 || tr.UserAttrs["test"] == nil {
				t.Errorf("%s#%d: %v, %d epochs, attrs %v", name, tr.Number, tr.State, len(tr.Intermediate), tr.UserAttrs)
			}
			packSizes[name] = append(packSizes[name], tr.UserAttrs["pack_size"])
		}
	}
	for _, name := range []string{"read/hidden-16/sst2", "lst/16-magnitude/sst2"} {
		if got := fmt.Sprint(packSizes[name]); got != "[3 3 3 <nil>]" {
			t.Errorf("%s pack sizes %s, want three packed and one alone", name, got)
		}
	}
	if got := fmt.Sprint(packSizes["lora/rank-4/sst2"]); got != "[<nil> <nil> <nil> <nil>]" {
		t.Errorf("LoRA pack sizes %s, want none packed", got)
	}
	for n := range 3 {
		log, err := os.ReadFile(filepath.Join(dir, "runs", "read", "hidden-16", "sst2", fmt.Sprintf("trial-%d", n), "stderr.log"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(log), fmt.Sprintf("trial read/hidden-16/sst2#%d:", n)) || !strings.Contains(string(log), "epoch 1:") ||
			!strings.Contains(string(log), "pack of 3 trials") || strings.Contains(string(log), "[#") {
			t.Errorf("trial %d's log:\n%s", n, log)
		}
	}
	// The pack again by hand from its first trial's spec, profiled.
	if _, errOut, code := sweepCmd(t, dir, "trial", "--spec", "runs/read/hidden-16/sst2/trial-0/spec.json", "--cpuprofile", "pack.prof"); code != 0 || !strings.Contains(errOut, "pack of 3 trials") {
		t.Errorf("sweep trial --spec of a pack: exit %d\n%s", code, errOut)
	}
	if st, err := os.Stat(filepath.Join(dir, "pack.prof")); err != nil || st.Size() == 0 {
		t.Errorf("no CPU profile written: %v", err)
	}

	// A model whose weights do not load: the pack's process fails, and so
	// does every trial in it.
	broken := filepath.Join(dir, "broken")
	os.MkdirAll(broken, 0o755)
	for _, f := range []string{"config.json", "spiece.model"} {
		b, _ := os.ReadFile(filepath.Join(model, f))
		os.WriteFile(filepath.Join(broken, f), b, 0o644)
	}
	os.WriteFile(filepath.Join(broken, "model.safetensors"), []byte("not safetensors"), 0o644)
	writeConfig(t, dir, "storage: sqlite:///broken.db\n"+strings.Replace(fmt.Sprintf(body, "broken"), "  lora: [{rank: 4}]\n", "", 1))
	if _, errOut, code = sweepCmd(t, dir, "run", "sweep.yaml"); code != 1 {
		t.Fatalf("broken model: exit %d\n%s", code, errOut)
	}
	trials := load(t, filepath.Join(dir, "broken.db"))["read/hidden-16/sst2"]
	if len(trials) != 3 {
		t.Fatalf("broken model: %d trials, want one pack of 3 (max_failures 3)", len(trials))
	}
	for _, tr := range trials {
		if reason, _ := tr.UserAttrs["fail_reason"].(string); tr.State != storage.Fail || !strings.Contains(reason, "pack of 3: exit status 1") {
			t.Errorf("broken model: #%d %v %q", tr.Number, tr.State, reason)
		}
	}
}

// TestPackedSweepEvalSteps runs a packed READ study under ASHA with
// validations inside the first epoch (eval_steps: [2]): intermediate
// values are stored at optimiser steps (2, then each epoch's end: 240
// examples in batches of 32 are 8 steps), ASHA's rungs end at steps 2 and
// 6 (judged by the values at 2 and 8), pruned trials leave their pack, and
// a trial that completes says at which step its best validation was.
func TestPackedSweepEvalSteps(t *testing.T) {
	dir := t.TempDir()
	tinyModel(t, dir)
	writeConfig(t, dir, `storage: sqlite:///e.db
model: tiny-t5
data_dir: `+mustAbs(t, "../../glue/testdata/fixture")+`
output_dir: runs
datasets: [sst2]
methods:
  read: [{hidden: 16}]
search:
  lr: {low: 1.0e-3, high: 3.0e-1, log: true}
trials: 6
pack: 3
sampler: {seed: 3}
pruner: {name: asha, min_resource: 2, reduction_factor: 3}
training: {max_epochs: 2, batch_size: 32, patience: 9, state_cache_dir: cache, eval_steps: [2]}
`)
	_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
	if code != 0 {
		t.Fatalf("sweep run: exit %d\n%s", code, errOut)
	}
	trials := load(t, filepath.Join(dir, "e.db"))["read/hidden-16/sst2"]
	n := storage.Count(trials)
	if len(trials) != 6 || n[storage.Complete]+n[storage.Pruned] != 6 || n[storage.Complete] == 0 || n[storage.Pruned] == 0 {
		t.Fatalf("states %v, want 6 finished, some pruned", n)
	}
	for _, tr := range trials {
		var steps []int
		for s := range tr.Intermediate {
			steps = append(steps, s)
		}
		slices.Sort(steps)
		want := []int{2, 8, 16}
		if tr.State == storage.Pruned {
			want = want[:len(steps)]
		}
		if !slices.Equal(steps, want) {
			t.Errorf("#%d %v: intermediate values at steps %v, want %v", tr.Number, tr.State, steps, want)
		}
		if tr.State != storage.Complete {
			continue
		}
		best, _ := tr.UserAttrs["best_step"].(float64)
		if !slices.Contains(want, int(best)) || tr.UserAttrs["steps"] != float64(16) || tr.UserAttrs["epochs"] != float64(2) ||
			*tr.Value != tr.Intermediate[int(best)] {
			t.Errorf("#%d: value %v, best_step %v, steps %v, epochs %v; intermediate %v", tr.Number, *tr.Value, tr.UserAttrs["best_step"],
				tr.UserAttrs["steps"], tr.UserAttrs["epochs"], tr.Intermediate)
		}
	}
	// The study says its values are at steps: `sweep trials` shows the last.
	stdout, _, _ := sweepCmd(t, dir, "trials", "read/hidden-16/sst2", "--storage", "sqlite:///e.db")
	if !strings.Contains(stdout, "STEPS") {
		t.Errorf("sweep trials of a study with eval_steps:\n%s", stdout)
	}
}

// TestBenchSweepCost runs the sweep-cost benchmark at a tiny shape for
// both methods that pack: every row runs its sweep to the end and is
// printed with its trial counts.
func TestBenchSweepCost(t *testing.T) {
	// READ's ASHA rows validate after every epoch, LST's at steps 2 and 3
	// besides.
	ashaRows := map[string]string{"read": "min_resource 1, reduction_factor 3 (epochs", "lst": "min_resource 2, reduction_factor 3 (optimiser steps; eval_steps: [2, 3])"}
	for _, method := range []string{"read", "lst"} {
		sizes := "2,3" // two sizes: the marginal trial's cost
		if method == "lst" {
			sizes = "3"
		}
		args := []string{"bench", "sweep-cost", "--method", method, "--d-model", "32", "--d-kv", "8", "--d-ff", "64",
			"--layers", "2", "--heads", "4", "--hidden", "8", "--sidenet-dim", "8", "--epochs", "2", "--trials", sizes, "--pack", "2", "--dir", t.TempDir()}
		if method == "lst" {
			args = append(args, "--eval-steps", "2,3")
		}
		out, errOut, code := sweepCmd(t, mustAbs(t, "../.."), args...)
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s\n%s", method, code, out, errOut)
		}
		for _, want := range []string{"1 trial, computes the state cache", "1 trial (3 of 3)", "× 1 trial: of the median single trial", "3 trials, pack 2, ASHA", "3c/0p", ashaRows[method], map[string]string{"read": "READ (GRU 8)", "lst": "LST (side width 8"}[method]} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: output lacks %q:\n%s", method, want, out)
			}
		}
		if method == "read" {
			for _, want := range []string{"one more trial (unpacked): ", "one more trial (pack 2): ", "× its side network's training"} {
				if !strings.Contains(out, want) {
					t.Errorf("read: output lacks %q:\n%s", want, out)
				}
			}
		}
	}
	// A checkpoint of the user's instead of the random model, on part of
	// the data: its shape is the checkpoint's, and the limits reach every
	// study's training settings.
	tmp := t.TempDir()
	model := filepath.Join(tmp, "their-t5")
	if _, errOut, code := sweepCmd(t, tmp, "model", "new", "--out", model, "--spiece", mustAbs(t, "../../examples/spiece-tiny.model"),
		"--d-model", "24", "--d-kv", "8", "--d-ff", "48", "--layers", "1", "--heads", "3"); code != 0 {
		t.Fatalf("model new: exit %d\n%s", code, errOut)
	}
	// The data in the layout `sweep fetch glue` writes (sst2/*.jsonl here).
	data := filepath.Join(tmp, "glue")
	if err := os.MkdirAll(filepath.Join(data, "sst2"), 0o755); err != nil {
		t.Fatal(err)
	}
	for split, tsv := range map[string]string{"train": "train.tsv", "validation": "dev.tsv"} {
		raw, err := os.ReadFile(mustAbs(t, "../../glue/testdata/fixture/SST-2/"+tsv))
		if err != nil {
			t.Fatal(err)
		}
		var jsonl strings.Builder
		for i, line := range strings.Split(strings.TrimSpace(string(raw)), "\n")[1:] {
			sentence, label, _ := strings.Cut(line, "\t")
			fmt.Fprintf(&jsonl, "{\"sentence\": %q, \"label\": %s, \"idx\": %d}\n", sentence, label, i)
		}
		if err := os.WriteFile(filepath.Join(data, "sst2", split+".jsonl"), []byte(jsonl.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	work := filepath.Join(tmp, "work")
	out, errOut, code := sweepCmd(t, mustAbs(t, "../.."), "bench", "sweep-cost", "--model", model, "--data", data, "--hidden", "8", "--epochs", "1",
		"--trials", "2", "--pack", "2", "--ones", "1", "--asha=false", "--max-train-examples", "16", "--max-eval-examples", "8", "--dir", work)
	if code != 0 {
		t.Fatalf("--model: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"on SST-2 (" + data + "), T5 " + model + ", d_model 24, d_ff 48, 1+1 layers, 3 heads, max_train_examples 16, max_eval_examples 8;", "2 trials, pack 2", "2c/0p"} {
		if !strings.Contains(out, want) {
			t.Errorf("--model: output lacks %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(work, "model")); err == nil {
		t.Error("--model: the benchmark wrote a random model beside the user's")
	}
	for i := range 4 {
		cfg, err := os.ReadFile(filepath.Join(work, fmt.Sprintf("run%d.yaml", i)))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{fmt.Sprintf("model: %q", model), "max_train_examples: 16, max_eval_examples: 8"} {
			if !strings.Contains(string(cfg), want) {
				t.Errorf("run%d.yaml lacks %q:\n%s", i, want, cfg)
			}
		}
	}
	if _, errOut, code := sweepCmd(t, tmp, "bench", "sweep-cost", "--model", model, "--layers", "2", "--dir", filepath.Join(tmp, "w2")); code != 2 || !strings.Contains(errOut, "drop --layers") {
		t.Errorf("--model with --layers: exit %d, %s", code, errOut)
	}
	missing := filepath.Join(tmp, "no-such-model")
	if _, errOut, code := sweepCmd(t, mustAbs(t, "../.."), "bench", "sweep-cost", "--model", missing, "--dir", filepath.Join(tmp, "w3")); code != 1 || !strings.Contains(errOut, "--model: trial: model folder "+missing+" does not exist") {
		t.Errorf("--model %s: exit %d, %s", missing, code, errOut)
	}
	// A folder with weights but no tokenizer: the trials would fail on it.
	partial := filepath.Join(tmp, "no-tokenizer")
	if err := os.MkdirAll(partial, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"config.json", "model.safetensors"} {
		raw, err := os.ReadFile(filepath.Join(model, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(partial, f), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, errOut, code := sweepCmd(t, mustAbs(t, "../.."), "bench", "sweep-cost", "--model", partial, "--dir", filepath.Join(tmp, "w4")); code != 1 || !strings.Contains(errOut, "model "+partial+" has no spiece.model") {
		t.Errorf("--model %s: exit %d, %s", partial, code, errOut)
	}
	for _, w := range []string{"w2", "w3", "w4"} {
		if _, err := os.Stat(filepath.Join(tmp, w)); err == nil {
			t.Errorf("a refused --model left its work folder %s", w)
		}
	}
	if _, errOut, code := sweepCmd(t, t.TempDir(), "bench", "sweep-cost", "--method", "lora"); code != 2 || !strings.Contains(errOut, "want read or lst") {
		t.Errorf("--method lora: exit %d, %s", code, errOut)
	}
	if _, errOut, code := sweepCmd(t, t.TempDir(), "bench", "sweep-cost", "--eval-steps", "5,x"); code != 2 || !strings.Contains(errOut, `--eval-steps "5,x"`) {
		t.Errorf("--eval-steps 5,x: exit %d, %s", code, errOut)
	}
}

// TestHangupStopsLikeInterrupt: SIGHUP (a dropped SSH session) stops the
// run as Ctrl-C does: the trial is stopped and recorded as interrupted,
// not left RUNNING, and the reason lands in output_dir/sweep.log, since the
// terminal that would show it is gone.
func TestHangupStopsLikeInterrupt(t *testing.T) {
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	writeConfig(t, dir, loopingSweep("h.db", "5s", "", started))
	cmd, errOut := startRunning(t, dir, "h.db", started)
	defer cmd.Process.Kill()
	cmd.Process.Signal(syscall.SIGHUP)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("sweep run still running 20 s after SIGHUP:\n%s", errOut.String())
	}
	trials := load(t, filepath.Join(dir, "h.db"))["lora/rank-1/sst2"]
	if n := storage.Count(trials); n[storage.Running] != 0 || n[storage.Fail] != 1 {
		t.Fatalf("after SIGHUP: %v, want the trial FAIL (interrupted), none RUNNING", n)
	}
	if got, _ := trials[0].UserAttrs["fail_reason"].(string); !strings.Contains(got, "interrupted") {
		t.Errorf("fail_reason %q, want interrupted", got)
	}
	logged, err := os.ReadFile(filepath.Join(dir, "out", "sweep.log"))
	if err != nil || !strings.Contains(string(logged), "stopping on SIGHUP") {
		t.Errorf("out/sweep.log: %q, %v; want the SIGHUP message", logged, err)
	}
}

// TestTrialOutputEdgeCases: a trial that leaves a child holding its stdout
// open still COMPLETEs when it exits after its final line (and the child
// is killed); a stdout line over 16 MiB is skipped with a warning without
// losing the protocol lines after it; a step reported twice keeps its first
// value, as Optuna does; a negative step fails the trial.
func TestTrialOutputEdgeCases(t *testing.T) {
	dir := t.TempDir()
	childPid := filepath.Join(dir, "child.pid")
	script := `case "$1" in
1) echo '{"type": "epoch", "step": 0, "value": 0.5}'
   sleep 60 & echo $! > ` + childPid + `
   echo '{"type": "final", "value": 0.5}' ;;
2) head -c 17000000 /dev/zero | tr '\0' x; echo
   echo '{"type": "epoch", "step": 0, "value": 0.25}'
   echo '{"type": "final", "value": 0.25}' ;;
3) echo '{"type": "epoch", "step": 0, "value": 0.75}'
   echo '{"type": "epoch", "step": 0, "value": 0.1}'
   echo '{"type": "final", "value": 0.75}' ;;
4) echo '{"type": "epoch", "step": -1, "value": 0.5}'
   echo '{"type": "final", "value": 0.5}' ;;
esac`
	writeConfig(t, dir, `storage: sqlite:///o.db
datasets: [sst2]
methods:
  lora: [{rank: 1}, {rank: 2}, {rank: 3}, {rank: 4}]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: 1
trial_timeout: 15s
max_retries: 0
command: ["/bin/sh", "-c", `+strconvQuote(script)+`, "trial", "{rank}"]
`)
	start := time.Now()
	_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
	if code != 1 { // the study whose trial reports step -1 gives up
		t.Fatalf("exit %d, want 1\n%s", code, errOut)
	}
	if took := time.Since(start); took > 12*time.Second {
		t.Errorf("the run took %v: it waited for the background child", took)
	}
	studies := load(t, filepath.Join(dir, "o.db"))
	for study, want := range map[string]float64{"lora/rank-1/sst2": 0.5, "lora/rank-2/sst2": 0.25, "lora/rank-3/sst2": 0.75} {
		trials := studies[study]
		if len(trials) != 1 || trials[0].State != storage.Complete || *trials[0].Value != want {
			t.Errorf("%s: %+v, want one COMPLETE trial of value %g", study, trials, want)
			continue
		}
		if len(trials[0].Intermediate) != 1 {
			t.Errorf("%s: intermediate values %v, want the one epoch", study, trials[0].Intermediate)
		}
	}
	if got := studies["lora/rank-3/sst2"][0].Intermediate[0]; got != 0.75 {
		t.Errorf("a step reported twice stored %g, want the first value, 0.75", got)
	}
	if !strings.Contains(errOut, "step 0 reported again; the first value stands") {
		t.Errorf("no warning for the repeated step:\n%s", errOut)
	}
	// Its study runs trials until max_failures, each failing alike.
	if len(studies["lora/rank-4/sst2"]) == 0 {
		t.Error("the study whose trial reports step -1 ran no trial")
	}
	for _, tr := range studies["lora/rank-4/sst2"] {
		got, _ := tr.UserAttrs["fail_reason"].(string)
		if tr.State != storage.Fail || len(tr.Intermediate) != 0 || !strings.Contains(got, "step -1; steps count from 0") {
			t.Errorf("a trial reporting step -1: %s, %v, %q; want FAIL, no intermediate value, the step in the reason", tr.State, tr.Intermediate, got)
		}
	}
	if !strings.Contains(errOut, "skipped a stdout line of 17000001 bytes") {
		t.Errorf("no warning for the long line:\n%s", errOut)
	}
	pid, err := os.ReadFile(childPid)
	if err != nil {
		t.Fatal(err)
	}
	// Killed, it may linger as a zombie until init reaps it: a state of
	// Z (or no process at all) is dead.
	stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat")
	if fields := strings.Fields(string(stat)); err == nil && len(fields) > 2 && fields[2] != "Z" {
		t.Errorf("the trial's background child (pid %s) still runs after the trial ended: %s", strings.TrimSpace(string(pid)), stat)
	}
}

// TestPreflightChecksEverySplitAndTheCommand: a task folder with train.tsv
// but no dev.tsv, and a command: program that does not exist or cannot be
// executed, stop the sweep before its first trial, each named.
func TestPreflightChecksEverySplitAndTheCommand(t *testing.T) {
	dir := t.TempDir()
	rte := filepath.Join(dir, "data", "RTE")
	if err := os.MkdirAll(rte, 0o755); err != nil {
		t.Fatal(err)
	}
	train, err := os.ReadFile("../../glue/testdata/fixture/RTE/train.tsv")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rte, "train.tsv"), train, 0o644); err != nil {
		t.Fatal(err)
	}
	base := "storage: sqlite:///p.db\ndatasets: [rte]\nmethods:\n  lora: [{rank: 4}]\nsearch:\n  lr: {low: 1.0e-6, high: 3.0e-3, log: true}\n"
	for _, tc := range []struct{ extra, want string }{
		{"model: ./no-model\ndata_dir: ./data\n", "glue: data/RTE has train.tsv but no dev.tsv (the validation split)"},
		{"command: [./no-such-trainer, \"{lr}\"]\n", "command: ./no-such-trainer cannot be run"},
		{"command: [./sweep.yaml, \"{lr}\"]\n", "command: ./sweep.yaml cannot be run: permission denied"},
	} {
		writeConfig(t, dir, base+tc.extra)
		_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
		if code != 1 || !strings.Contains(errOut, "no trial started") || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, want 1 naming %q:\n%s", tc.extra, code, tc.want, errOut)
		}
		for name, trials := range load(t, filepath.Join(dir, "p.db")) {
			if len(trials) > 0 {
				t.Errorf("%q: %s: %d trials ran", tc.extra, name, len(trials))
			}
		}
	}
}

// TestRecreatedDatabaseKeepsEarlierLogs: a database deleted and made anew
// with the same output_dir numbers its trials from 0 again; the earlier
// run's trial folders are moved aside, not overwritten.
func TestRecreatedDatabaseKeepsEarlierLogs(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, syntheticSweep("r.db", "{name: fine}", 1, "output_dir: out\n"))
	if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml"); code != 0 {
		t.Fatalf("run: exit %d\n%s", code, errOut)
	}
	trialDir := filepath.Join(dir, "out", "synthetic", "fine", "sst2", "trial-0")
	first, err := os.ReadFile(filepath.Join(trialDir, "spec.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"r.db", "r.db-wal", "r.db-shm"} {
		os.Remove(filepath.Join(dir, f))
	}
	_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
	if code != 0 {
		t.Fatalf("second run: exit %d\n%s", code, errOut)
	}
	aside, _ := filepath.Glob(trialDir + ".earlier-*")
	if len(aside) != 1 {
		t.Fatalf("earlier folders %v, want one moved aside\n%s", aside, errOut)
	}
	if kept, err := os.ReadFile(filepath.Join(aside[0], "spec.json")); err != nil || string(kept) != string(first) {
		t.Errorf("the earlier spec.json was not kept as it was: %v", err)
	}
	if !strings.Contains(errOut, "held an earlier run's trial (another database); moved to trial-0.earlier-") {
		t.Errorf("the run does not say it moved the folder:\n%s", errOut)
	}
}

// TestHangupWithStderrGone: when the terminal or the `| tee` that reads
// stderr is gone, a SIGHUP still stops the run cleanly (no death by
// SIGPIPE on its first message), and the trial is recorded as interrupted.
func TestHangupWithStderrGone(t *testing.T) {
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	writeConfig(t, dir, loopingSweep("g.db", "5s", "", started))
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := startRunningTo(t, dir, "g.db", started, w)
	w.Close()
	defer cmd.Process.Kill()
	r.Close() // the reader of stderr is gone
	cmd.Process.Signal(syscall.SIGHUP)
	cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("sweep run died of %v", ws.Signal())
	}
	trials := load(t, filepath.Join(dir, "g.db"))["lora/rank-1/sst2"]
	if n := storage.Count(trials); n[storage.Running] != 0 || n[storage.Fail] != 1 {
		t.Errorf("after SIGHUP: %v, want the trial FAIL (interrupted), none RUNNING", n)
	}
}

// TestSecondHangupKeepsKillGrace: a second SIGHUP (a closed SSH session
// often sends two) does not cut the trials' kill_grace short; a trial that
// ends on SIGTERM within it is recorded as interrupted.
func TestSecondHangupKeepsKillGrace(t *testing.T) {
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	ended := filepath.Join(dir, "ended")
	writeConfig(t, dir, loopingSweep("k.db", "20s", "trap 'sleep 1; touch "+ended+"; exit 1' TERM; ", started))
	cmd, errOut := startRunning(t, dir, "k.db", started)
	defer cmd.Process.Kill()
	cmd.Process.Signal(syscall.SIGHUP)
	time.Sleep(50 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGHUP)
	cmd.Wait()
	if _, err := os.Stat(ended); err != nil {
		t.Errorf("the trial's TERM handler did not finish: the second SIGHUP killed it\n%s", errOut.String())
	}
	if strings.Contains(errOut.String(), "killing the running trials") {
		t.Errorf("a second SIGHUP escalated to SIGKILL:\n%s", errOut.String())
	}
}

// TestMemoryLimitEndsTheTrial: trial_memory_gb on the built-in trainer at
// a limit too low for the matrix library's buffers ends the trial with an
// out-of-memory reason within seconds (OpenBLAS used to wait for memory for
// ever, until stall_timeout); at 1 GB the tiny model trains (the limit
// counts writable memory, not the address space that Go's runtime and
// glibc reserve, which killed such trials in their package initialisation).
func TestMemoryLimitEndsTheTrial(t *testing.T) {
	dir := t.TempDir()
	tinyModel(t, dir)
	for _, tc := range []struct {
		gb       string
		complete bool
	}{{"0.3", false}, {"1", true}} {
		db := "mem" + tc.gb + ".db"
		writeConfig(t, dir, `storage: sqlite:///`+db+`
model: tiny-t5
data_dir: `+mustAbs(t, "../../glue/testdata/fixture")+`
datasets: [sst2]
methods:
  full: [{}]
search:
  lr: {low: 1.0e-3, high: 1.0e-2, log: true}
trials: 1
device: cpu
trial_memory_gb: `+tc.gb+`
stall_timeout: 90s
max_retries: 0
max_failures: 1
training: {max_epochs: 1, batch_size: 32}
`)
		start := time.Now()
		_, errOut, _ := sweepCmd(t, dir, "run", "sweep.yaml")
		trials := load(t, filepath.Join(dir, db))["full/default/sst2"]
		if len(trials) != 1 {
			t.Fatalf("%s GB: %d trials\n%s", tc.gb, len(trials), errOut)
		}
		reason, _ := trials[0].UserAttrs["fail_reason"].(string)
		switch {
		case tc.complete && trials[0].State != storage.Complete:
			t.Errorf("%s GB: %s (%q), want COMPLETE", tc.gb, trials[0].State, reason)
		case !tc.complete && trials[0].State == storage.Fail && !strings.HasPrefix(reason, "trial_memory_gb "+tc.gb+": out of memory"):
			// A machine whose matrix library fits may finish instead; a
			// failure must say why.
			t.Errorf("%s GB: fail_reason %q, want trial_memory_gb %s: out of memory …", tc.gb, reason, tc.gb)
		}
		if took := time.Since(start); took > 60*time.Second {
			t.Errorf("%s GB: the run took %v: the trial waited instead of ending", tc.gb, took)
		}
	}
}

// TestGPUsInsideASlurmAllocation: inside a Slurm job, the slots take the
// GPUs Slurm gave the task, not the sweep file's node-wide numbers, and
// the run says so; outside one, gpus stands.
func TestGPUsInsideASlurmAllocation(t *testing.T) {
	env := func(vars map[string]string) func(string) string { return func(k string) string { return vars[k] } }
	gpus, note := allocatedGPUs([]string{"0", "1"}, env(map[string]string{"SLURM_JOB_ID": "77", "CUDA_VISIBLE_DEVICES": "2,5"}))
	if !slices.Equal(gpus, []string{"2", "5"}) || !strings.Contains(note, "CUDA_VISIBLE_DEVICES=2,5") || !strings.Contains(note, "Slurm job 77") {
		t.Errorf("inside an allocation: %v, %q", gpus, note)
	}
	for _, vars := range []map[string]string{
		{"CUDA_VISIBLE_DEVICES": "2,5"}, // not Slurm's
		{"SLURM_JOB_ID": "77"},          // no GPU allocated: the file's stand
	} {
		if gpus, note := allocatedGPUs([]string{"0", "1"}, env(vars)); !slices.Equal(gpus, []string{"0", "1"}) || note != "" {
			t.Errorf("%v: %v, %q", vars, gpus, note)
		}
	}
	if gpus, note := allocatedGPUs(nil, env(map[string]string{"SLURM_JOB_ID": "77", "CUDA_VISIBLE_DEVICES": "2"})); gpus != nil || note != "" {
		t.Errorf("no gpus in the file: %v, %q (the trials inherit Slurm's)", gpus, note)
	}
}

// TestSlurmDuration reads every form of sbatch's --time.
func TestSlurmDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"90": 90 * time.Minute, "5:30": 5*time.Minute + 30*time.Second, "2:00:00": 2 * time.Hour,
		"1-12": 36 * time.Hour, "1-00:30": 24*time.Hour + 30*time.Minute, "2-01:02:03": 49*time.Hour + 2*time.Minute + 3*time.Second,
		"UNLIMITED": 0, "infinite": 0, "-1": 0,
	} {
		if got, err := slurmDuration(in); err != nil || got != want {
			t.Errorf("%q: %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "1h", "1:2:3:4", "x-1", "-5", "1:-2"} {
		if got, err := slurmDuration(bad); err == nil {
			t.Errorf("%q: %v, want an error", bad, got)
		}
	}
}

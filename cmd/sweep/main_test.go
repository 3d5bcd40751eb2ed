package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/readsweep/readsweep/hub/hubtest"
	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
	"github.com/readsweep/readsweep/sweep/storage/pgtest"
)

// sweepBin is the binary under test, built once by TestMain.
var sweepBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sweep-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sweepBin = filepath.Join(dir, "sweep")
	if out, err := exec.Command("go", "build", "-o", sweepBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build sweep: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	pgtest.Stop()
	os.Exit(code)
}

// sweepCmd runs the binary in dir and returns stdout, stderr and the exit code.
func sweepCmd(t *testing.T, dir string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(sweepBin, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func writeConfig(t *testing.T, dir, body string) string {
	t.Helper()
	path := filepath.Join(dir, "sweep.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func load(t *testing.T, dbPath string) map[string][]storage.FrozenTrial {
	t.Helper()
	s, err := storage.OpenSQLite(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	studies, err := s.Studies(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]storage.FrozenTrial{}
	for _, st := range studies {
		trials, err := s.Trials(ctx, st.ID)
		if err != nil {
			t.Fatal(err)
		}
		out[st.Name] = trials
	}
	return out
}

// checkBudgets asserts every study has exactly budget COMPLETE+PRUNED trials,
// nothing RUNNING or WAITING, and numbers 0..n-1.
func checkBudgets(t *testing.T, studies map[string][]storage.FrozenTrial, want, budget int) {
	t.Helper()
	if len(studies) != want {
		t.Errorf("%d studies, want %d", len(studies), want)
	}
	for name, trials := range studies {
		n := storage.Count(trials)
		if n[storage.Complete]+n[storage.Pruned] != budget || n[storage.Running] != 0 || n[storage.Waiting] != 0 {
			t.Errorf("%s: states %v, want %d COMPLETE+PRUNED and none RUNNING or WAITING", name, n, budget)
		}
		for i, tr := range trials {
			if tr.Number != i {
				t.Errorf("%s: trial numbers not 0..n-1 at %d: %d", name, i, tr.Number)
				break
			}
		}
	}
}

// TestExampleSweepReadByOptuna runs the README's example and has Optuna
// (Debian python3-optuna) open every study and report the same best trials.
func TestExampleSweepReadByOptuna(t *testing.T) {
	dir := t.TempDir()
	raw, err := os.ReadFile("../../examples/synthetic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	writeConfig(t, dir, string(raw))
	if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml"); code != 0 {
		t.Fatalf("sweep run exit %d:\n%s", code, errOut)
	}
	db := filepath.Join(dir, "synthetic.db")
	studies := load(t, db)
	checkBudgets(t, studies, 8, 8)
	pruned := 0
	for name, trials := range studies {
		for _, tr := range trials {
			if tr.State != storage.Pruned {
				continue
			}
			pruned++
			_, last, ok := tr.LastStep()
			if !ok || tr.Value == nil || *tr.Value != last {
				t.Errorf("%s#%d PRUNED with value %v, want its last intermediate value %v", name, tr.Number, tr.Value, last)
			}
		}
	}
	if pruned == 0 {
		t.Error("the median pruner pruned nothing in the example sweep")
	}

	python := "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import optuna").CombinedOutput(); err != nil {
		t.Fatalf("Optuna is needed for this test: apt-get install python3-optuna (%v: %s)", err, out)
	}
	out, err := exec.Command(python, "testdata/optuna_reads_db.py", db, "--json", "--skip-compat").CombinedOutput()
	if err != nil {
		t.Fatalf("optuna_reads_db.py: %v\n%s", err, out)
	}
	var report struct {
		Studies []struct {
			Name string `json:"name"`
			Best struct {
				Number int     `json:"number"`
				Value  float64 `json:"value"`
			} `json:"best"`
			States map[string]int `json:"states"`
		} `json:"studies"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(report.Studies) != 8 || len(report.Warnings) > 0 {
		t.Fatalf("Optuna saw %d studies, warnings %v", len(report.Studies), report.Warnings)
	}
	for _, st := range report.Studies {
		best, ok := storage.BestTrial(studies[st.Name], storage.Maximize)
		if !ok || best.Number != st.Best.Number || *best.Value != st.Best.Value {
			t.Errorf("%s: Optuna's best #%d %v, ours #%d %v", st.Name, st.Best.Number, st.Best.Value, best.Number, *best.Value)
		}
	}
	// export writes every trial.
	stdout, errOut, code := sweepCmd(t, dir, "export", "--format", "json", "--config", "sweep.yaml")
	var rows []map[string]any
	if code != 0 || json.Unmarshal([]byte(stdout), &rows) != nil || len(rows) != 64 {
		t.Errorf("export json: exit %d, %d rows, %s", code, len(rows), errOut)
	}
	stdout, _, _ = sweepCmd(t, dir, "export", "--config", "sweep.yaml")
	if lines := strings.Split(strings.TrimSpace(stdout), "\n"); len(lines) != 65 || !strings.HasPrefix(lines[0], "study,method,arch,dataset,number,state,value,params_lr") {
		t.Errorf("export csv: %d lines, header %q", len(lines), lines[0])
	}
	// sweep best prints the same trials.
	stdout, errOut, code = sweepCmd(t, dir, "best", "--method", "read", "--config", "sweep.yaml")
	if code != 0 {
		t.Fatalf("sweep best: %s", errOut)
	}
	if !strings.Contains(stdout, "PRECISION") {
		t.Errorf("sweep best has no precision column:\n%s", stdout)
	}
	for _, st := range report.Studies {
		if strings.HasPrefix(st.Name, "read/") && strings.Contains(stdout, st.Name) {
			if !strings.Contains(stdout, fmt.Sprintf("%s#%d", st.Name, st.Best.Number)) {
				t.Errorf("sweep best does not list %s#%d:\n%s", st.Name, st.Best.Number, stdout)
			}
		}
	}
}

const failureConfig = `storage: sqlite:///f.db
trainer: synthetic
datasets: [sst2]
methods:
  synthetic:
    - {fail: panic, name: panics}
    - {fail: no_final, name: silent}
    - {fail: nan, name: nan}
    - {fail: exit, name: exits}
    - {name: fine}
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: 2
max_retries: 1
max_failures: 2
training: {max_epochs: 2}
`

// TestFailingTrials checks that a panic, a missing final line, a NaN value
// and a non-zero exit each end FAIL with their reason and stderr, are
// retried once with the same parameters, and that the run reports it.
func TestFailingTrials(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, failureConfig)
	_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
	if code != 1 {
		t.Errorf("exit %d, want 1 (studies abandoned)\n%s", code, errOut)
	}
	studies := load(t, filepath.Join(dir, "f.db"))
	reasons := map[string]string{
		"panics": "exit status 2", "silent": "without a final line", "nan": "NaN", "exits": "exit status 3",
	}
	for arch, reason := range reasons {
		trials := studies["synthetic/"+arch+"/sst2"]
		n := storage.Count(trials)
		if n[storage.Fail] != 2 || n[storage.Complete] != 0 {
			t.Errorf("%s: states %v, want 2 FAIL (first try and one retry)", arch, n)
			continue
		}
		first, retry := trials[0], trials[1]
		if got, _ := first.UserAttrs["fail_reason"].(string); !strings.Contains(got, reason) {
			t.Errorf("%s: fail_reason %q, want it to mention %q", arch, got, reason)
		}
		if f, _ := retry.SystemAttrs["failed_trial"].(float64); int(f) != first.Number || retry.Params["lr"] != first.Params["lr"] {
			t.Errorf("%s: retry %+v is not a copy of trial %d", arch, retry.SystemAttrs, first.Number)
		}
	}
	if tail, _ := studies["synthetic/panics/sst2"][0].UserAttrs["stderr_tail"].(string); !strings.Contains(tail, "panic: synthetic failure") {
		t.Errorf("stderr_tail of the panicking trial: %q", tail)
	}
	if n := storage.Count(studies["synthetic/fine/sst2"]); n[storage.Complete] != 2 {
		t.Errorf("the healthy study: %v, want 2 COMPLETE", n)
	}
	stdout, _, _ := sweepCmd(t, dir, "trials", "synthetic/panics/sst2", "--state", "fail", "--storage", "sqlite:///f.db")
	if !strings.Contains(stdout, "retry of #0") {
		t.Errorf("sweep trials output:\n%s", stdout)
	}
	stdout, _, _ = sweepCmd(t, dir, "show", "synthetic/panics/sst2#0", "--config", "sweep.yaml")
	for _, want := range []string{"FAIL", "fail_reason", "stderr_tail:", "panic: synthetic failure", "FloatDistribution"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("sweep show lacks %q:\n%s", want, stdout)
		}
	}
	// The user re-enqueues the last failure of each study by hand.
	stdout, errOut, code = sweepCmd(t, dir, "retry", "--config", "sweep.yaml")
	if code != 0 || !strings.Contains(stdout, "4 trial(s) enqueued") {
		t.Errorf("sweep retry: exit %d\n%s%s", code, stdout, errOut)
	}
	if n := storage.Count(load(t, filepath.Join(dir, "f.db"))["synthetic/nan/sst2"]); n[storage.Waiting] != 1 {
		t.Errorf("after retry: %v, want one WAITING trial", n)
	}
	stdout, _, _ = sweepCmd(t, dir, "run", "sweep.yaml", "--dry-run")
	if !strings.Contains(stdout, "synthetic/fine/sst2") || !strings.Contains(stdout, "8 trials to run") {
		t.Errorf("dry run:\n%s", stdout)
	}
}

const slowConfig = `storage: sqlite:///k.db
trainer: synthetic
datasets: [sst2, rte]
methods:
  read:
    - {cell: gru, epoch_ms: 60}
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: 6
sampler: {seed: 1, n_startup_trials: 3}
training: {max_epochs: 4}
parallel: 2
heartbeat_interval: 300ms
heartbeat_grace: 1s
kill_grace: 1s
`

// TestKillAndResume kills `sweep run` with SIGKILL in the middle of a sweep
// and checks that a second run loses no finished trial, reruns the orphans
// and ends with every budget exact.
func TestKillAndResume(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, slowConfig)
	db := filepath.Join(dir, "k.db")
	deadline := time.Now().Add(60 * time.Second)
	var before map[string][]storage.FrozenTrial
	var journalled map[string]string
	// Kill -9 while trials run; should the kill land in the instant between
	// two trials, resume and kill again.
	for attempt := 0; ; attempt++ {
		cmd := exec.Command(sweepBin, "run", "sweep.yaml")
		cmd.Dir = dir
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for {
			time.Sleep(100 * time.Millisecond)
			if _, err := os.Stat(db); err != nil {
				continue
			}
			before = load(t, db)
			complete, running := 0, 0
			for _, trials := range before {
				n := storage.Count(trials)
				complete += n[storage.Complete]
				running += n[storage.Running]
			}
			if complete >= 3 && running > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the sweep never reached 3 COMPLETE trials with some RUNNING")
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		before = load(t, db)
		journalled = orphanJournals(dir, before)
		running := 0
		for _, trials := range before {
			running += storage.Count(trials)[storage.Running]
		}
		if running > len(journalled) || attempt == 2 {
			break
		}
	}
	time.Sleep(1500 * time.Millisecond) // let the orphans' heartbeats go stale

	_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
	if code != 0 {
		t.Fatalf("resume: exit %d\n%s", code, errOut)
	}
	if !strings.Contains(errOut, "of them found dead from an earlier run") {
		t.Errorf("the resumed run's summary does not count the reaped trials:\n%s", errOut)
	}
	after := load(t, db)
	checkBudgets(t, after, 2, 6)
	orphans := 0
	for name, trials := range before {
		for _, tr := range trials {
			now := after[name][tr.Number]
			switch tr.State {
			case storage.Complete:
				if now.ID != tr.ID || now.State != storage.Complete || *now.Value != *tr.Value {
					t.Errorf("%s#%d was COMPLETE %v before the kill, now %s %v", name, tr.Number, *tr.Value, now.State, now.Value)
				}
			case storage.Running:
				if state, ok := journalled[fmt.Sprintf("%s#%d", name, tr.Number)]; ok {
					if now.ID != tr.ID || now.State.String() != state {
						t.Errorf("%s#%d had journalled its result before the kill; now %s, want %s from its journal", name, tr.Number, now.State, state)
					}
					continue
				}
				orphans++
				if now.State != storage.Fail {
					t.Errorf("%s#%d was orphaned by the kill; now %s, want FAIL", name, tr.Number, now.State)
				}
				if reason, _ := now.UserAttrs["fail_reason"].(string); !strings.Contains(reason, "lost its process: no heartbeat") {
					t.Errorf("%s#%d was reaped without its reason: fail_reason %q", name, tr.Number, reason)
				}
			}
		}
	}
	if orphans == 0 {
		t.Fatal("the kill left no RUNNING trial; the test proved nothing")
	}
	// Each orphan was retried with its parameters.
	for name, trials := range after {
		for _, tr := range trials {
			if tr.State != storage.Fail {
				continue
			}
			found := false
			for _, r := range trials {
				if f, ok := r.SystemAttrs["failed_trial"].(float64); ok && int(f) == tr.Number && r.Params["lr"] == tr.Params["lr"] {
					found = true
				}
			}
			if !found {
				t.Errorf("%s#%d failed and was not retried", name, tr.Number)
			}
		}
	}
}

// orphanJournals gives the journalled state of each RUNNING trial of a
// killed run whose result was journalled in the instant before the kill: the next run records them from
// their journals (sweep/journal.go) instead of reaping them.
func orphanJournals(dir string, studies map[string][]storage.FrozenTrial) map[string]string {
	journalled := map[string]string{}
	for name, trials := range studies {
		for _, tr := range trials {
			if tr.State != storage.Running {
				continue
			}
			j := filepath.Join(dir, "runs", filepath.FromSlash(name), fmt.Sprintf("trial-%d", tr.Number), ".sweep-result.json")
			var result struct{ State string }
			if b, err := os.ReadFile(j); err == nil && json.Unmarshal(b, &result) == nil {
				journalled[fmt.Sprintf("%s#%d", name, tr.Number)] = result.State
			}
		}
	}
	return journalled
}

// TestConcurrentRuns starts two `sweep run` on one database: they share the
// work, run nothing twice, and every study ends with exactly its budget.
func TestConcurrentRuns(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, strings.Replace(slowConfig, "epoch_ms: 60", "epoch_ms: 20", 1))
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for range 2 {
		cmd := exec.Command(sweepBin, "run", "sweep.yaml")
		cmd.Dir = dir
		var b bytes.Buffer
		cmd.Stderr = &b
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
		outs = append(outs, &b)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("run %d: %v\n%s", i, err, outs[i])
		}
	}
	studies := load(t, filepath.Join(dir, "k.db"))
	checkBudgets(t, studies, 2, 6)
	for name, trials := range studies {
		if n := len(trials); n != 6 {
			t.Errorf("%s has %d trials, want 6 (none run twice, none failed)", name, n)
		}
	}
	// Both processes did some of the work.
	for i, b := range outs {
		if !strings.Contains(b.String(), "COMPLETE") {
			t.Errorf("run %d finished no trial:\n%s", i, b)
		}
	}
}

// TestAskTell drives a study through ask and tell as an external objective
// would, and checks that a seed makes the sequence reproducible.
func TestAskTell(t *testing.T) {
	space := `{"x": {"name": "FloatDistribution", "attributes": {"low": -5.0, "high": 10.0}}, "y": {"name": "FloatDistribution", "attributes": {"low": 0.0, "high": 15.0}}}`
	sequence := func(dir string) []string {
		var seq []string
		for i := range 14 {
			out, errOut, code := sweepCmd(t, dir, "ask", "--storage", "sqlite:///a.db", "--study-name", "branin",
				"--sampler", "tpe", "--sampler-kwargs", `{"seed": 5, "n_startup_trials": 5}`, "--search-space", space)
			if code != 0 {
				t.Fatalf("ask %d: %s", i, errOut)
			}
			var got struct {
				Number int                `json:"number"`
				Params map[string]float64 `json:"params"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil || got.Number != i {
				t.Fatalf("ask %d printed %q (%v)", i, out, err)
			}
			v := fmt.Sprint((got.Params["x"]-2)*(got.Params["x"]-2) + got.Params["y"])
			if _, errOut, code := sweepCmd(t, dir, "tell", "--storage", "sqlite:///a.db", "--study-name", "branin",
				"--trial-number", fmt.Sprint(got.Number), "--values", v); code != 0 {
				t.Fatalf("tell %d: %s", i, errOut)
			}
			seq = append(seq, strings.TrimSpace(out))
		}
		return seq
	}
	a, b := sequence(t.TempDir()), sequence(t.TempDir())
	if strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Errorf("same seed, different asks:\n%s\n---\n%s", strings.Join(a, "\n"), strings.Join(b, "\n"))
	}
	dir := t.TempDir()
	sequence(dir)
	trials := load(t, filepath.Join(dir, "a.db"))["branin"]
	values := make([]float64, 0, len(trials))
	for _, tr := range trials {
		if tr.State != storage.Complete {
			t.Errorf("trial %d is %s after tell", tr.Number, tr.State)
		}
		values = append(values, *tr.Value)
	}
	sort.Float64s(values)
	if _, errOut, code := sweepCmd(t, dir, "tell", "--storage", "sqlite:///a.db", "--study-name", "branin", "--trial-number", "0", "--values", "1"); code != 1 || !strings.Contains(errOut, "branin trial 0 is already COMPLETE") {
		t.Errorf("telling a finished trial: exit %d, %s", code, errOut)
	}
	if _, _, code := sweepCmd(t, dir, "tell", "--storage", "sqlite:///a.db", "--study-name", "branin", "--trial-number", "0", "--values", "1", "--skip-if-finished"); code != 0 {
		t.Errorf("--skip-if-finished: exit %d", code)
	}
}

// TestCLIErrors checks exit codes and messages of misuse.
func TestCLIErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"run"}, 2, "usage: sweep run"},
		{[]string{"run", "missing.yaml"}, 1, "missing.yaml"},
		{[]string{"studies", "--storage", "sqlite:///nothing.db"}, 1, "no database at nothing.db"},
		{[]string{"best"}, 2, "usage: sweep best"},
		{[]string{"run", "sweep.yaml", "--only", "colour=red"}, 2, "unknown key \"colour\""},
		{[]string{"trial"}, 1, "trial: spec from standard input"},
		{[]string{"bench", "t5", "--dropout", "1"}, 2, "--dropout 1: want a rate in [0, 1)"},
		{[]string{"bench", "t5", "--dropout", "0.1", "--peer", "scripts/peers/torch_cpu_peer.py"}, 2, "the peers run without dropout"},
	}
	writeConfig(t, dir, "datasets: [sst2]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 1.0e-6, high: 3.0e-3, log: true}\n")
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, errOut, code := sweepCmd(t, dir, tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", code, errOut, tc.code, tc.want)
			}
		})
	}
}

// TestExternalCommand sweeps a program named by `command:`: placeholders are
// filled in, GPU slots are passed in CUDA_VISIBLE_DEVICES, and the spec file
// is named by $SWEEP_TRIAL_SPEC.
func TestExternalCommand(t *testing.T) {
	dir := t.TempDir()
	script := `test -s "$SWEEP_TRIAL_SPEC" || exit 9; echo noise; echo "{\"type\": \"epoch\", \"step\": 0, \"value\": $1}"; echo "{\"type\": \"final\", \"value\": $1, \"attrs\": {\"gpu\": \"$CUDA_VISIBLE_DEVICES\", \"arch\": \"$2\", \"rank\": $3}}"`
	writeConfig(t, dir, `storage: sqlite:///e.db
datasets: [mrpc]
methods:
  lora: [{rank: 8}, {rank: 16}]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: 3
parallel: 2
gpus: [3, 5]
command: ["/bin/sh", "-c", `+strconvQuote(script)+`, "trial", "{lr}", "{arch}", "{rank}"]
`)
	if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml"); code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	studies := load(t, filepath.Join(dir, "e.db"))
	checkBudgets(t, studies, 2, 3)
	for name, trials := range studies {
		for _, tr := range trials {
			if *tr.Value != tr.Params["lr"] {
				t.Errorf("%s#%d: value %v, want the lr %v passed as {lr}", name, tr.Number, *tr.Value, tr.Params["lr"])
			}
			if gpu := tr.UserAttrs["gpu"]; gpu != "3" && gpu != "5" {
				t.Errorf("%s#%d: CUDA_VISIBLE_DEVICES = %v", name, tr.Number, gpu)
			}
			if arch := tr.UserAttrs["arch"]; "lora/"+arch.(string)+"/mrpc" != name {
				t.Errorf("%s#%d: {arch} = %v", name, tr.Number, arch)
			}
		}
	}
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestDataCommands runs `sweep data stats` on the fixture and `sweep fetch
// glue` against a fake hub.
func TestDataCommands(t *testing.T) {
	stdout, errOut, code := sweepCmd(t, ".", "data", "stats", "--dir", "../../glue/testdata/fixture", "--tasks", "cola,qqp,mnli")
	if code != 0 {
		t.Fatalf("data stats: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"qqp     tsv    238          40    40", "mnli: MNLI: validation = mismatched, test = matched"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("data stats lacks %q:\n%s", want, stdout)
		}
	}
	hubtest.NewServer(t, map[string][]byte{
		"datasets/nyu-mll/glue/rte/train.jsonl": []byte("{}"), // not parquet: ignored
	})
	dir := t.TempDir()
	_, errOut, code = sweepCmd(t, dir, "fetch", "glue", "--tasks", "rte")
	if code != 1 || !strings.Contains(errOut, "no train/validation parquet files") {
		t.Errorf("fetch of a task the hub lacks: exit %d, %s", code, errOut)
	}
	if _, errOut, code := sweepCmd(t, dir, "fetch", "glue", "--tasks", "glue"); code != 2 || !strings.Contains(errOut, "unknown task") {
		t.Errorf("fetch of an unknown task: exit %d, %s", code, errOut)
	}
	if _, errOut, code := sweepCmd(t, dir, "fetch", "model", "t5-small", "--dir", dir); code != 1 || !strings.Contains(errOut, "google-t5/t5-small: hub: GET") || !strings.Contains(errOut, "the repository does not exist") {
		t.Errorf("fetch of a model the hub lacks: exit %d, %s", code, errOut)
	}
}

// TestRealSweep makes a tiny model with `sweep model new` and sweeps two
// methods on the GLUE fixture with the real trainer.
func TestRealSweep(t *testing.T) {
	dir := t.TempDir()
	tinyModel(t, dir)
	writeConfig(t, dir, `storage: sqlite:///real.db
model: tiny-t5
data_dir: `+mustAbs(t, "../../glue/testdata/fixture")+`
datasets: [sst2]
methods:
  full: [{}]
  lora: [{rank: 4}]
search:
  lr: {low: 1.0e-3, high: 1.0e-2, log: true}
trials: 2
training: {max_epochs: 2, batch_size: 32}
`)
	if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml"); code != 0 {
		t.Fatalf("sweep run: exit %d\n%s", code, errOut)
	}
	studies := load(t, filepath.Join(dir, "real.db"))
	checkBudgets(t, studies, 2, 2)
	for name, trials := range studies {
		for _, tr := range trials {
			if len(tr.Intermediate) != 2 || tr.UserAttrs["trainable_params"] == nil || tr.UserAttrs["test"] == nil {
				t.Errorf("%s#%d: %d epochs, attrs %v", name, tr.Number, len(tr.Intermediate), tr.UserAttrs)
			}
		}
	}
	if stdout, errOut, code := sweepCmd(t, dir, "best", "--method", "lora", "--config", "sweep.yaml"); code != 0 || !strings.Contains(stdout, "chosen architecture rank-4") {
		t.Errorf("sweep best: exit %d\n%s%s", code, stdout, errOut)
	}
}

// tinyModel makes a random 2-layer T5 (d_model 32) with `sweep model new`
// in dir/tiny-t5 and returns its path.
func tinyModel(t *testing.T, dir string) string {
	t.Helper()
	model := filepath.Join(dir, "tiny-t5")
	if _, errOut, code := sweepCmd(t, dir, "model", "new", "--out", model, "--spiece", filepath.Join(mustAbs(t, "../../examples"), "spiece-tiny.model"), "--d-model", "32", "--d-kv", "8", "--d-ff", "64"); code != 0 {
		t.Fatalf("model new: %s", errOut)
	}
	return model
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestArchSettingsCheckedBeforeRunning rejects a bad candidate and a
// method this build lacks before any trial runs, naming the line.
func TestArchSettingsCheckedBeforeRunning(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, "storage: sqlite:///c.db\nmodel: m\ndatasets: [sst2]\nmethods:\n  lora:\n    - {rank: 8}\n    - {rnak: 8}\nsearch:\n  lr: {low: 1.0e-6, high: 3.0e-3, log: true}\n")
	_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
	if code != 1 || !strings.Contains(errOut, `sweep.yaml:7: methods.lora[1]: methods: lora: unknown architecture setting "rnak"`) {
		t.Errorf("exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "c.db")); err == nil {
		t.Error("a database was created for a sweep that cannot run")
	}
	writeConfig(t, dir, "model: m\ndatasets: [sst2]\nmethods:\n  read: [{cell: gru}]\n  lst: [{sidenet_dim: 96}, {sidenet_dim: 96000}]\nsearch:\n  lr: {low: 1.0e-6, high: 3.0e-3, log: true}\n")
	if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml"); code != 1 || !strings.Contains(errOut, "sweep.yaml:5: methods.lst[1]: methods: lst: architecture setting sidenet_dim") {
		t.Errorf("exit %d: %s", code, errOut)
	}
	// Training settings too: a typo, a bad value, each with its line.
	for _, tc := range []struct{ training, want string }{
		{"training:\n  max_epochs: 3\n  eval_step: 5\n", `sweep.yaml:8: training.eval_step: unknown training setting "eval_step"`},
		{"training: {max_epochs: 3, eval_steps: [5, 0]}\n", "sweep.yaml:6: training.eval_steps: training setting eval_steps = [5 0]: 0 is not a step ≥ 1"},
		{"training: {max_epochs: 0}\n", "sweep.yaml:6: training.max_epochs: training setting max_epochs = 0 is not a whole number ≥ 1"},
		{"training: {batch_size: -1}\n", "sweep.yaml:6: training.batch_size: training setting batch_size = -1 is not a whole number ≥ 1"},
		{"training: {max_source_length: 1}\n", "sweep.yaml:6: training.max_source_length: training setting max_source_length = 1 is not a whole number ≥ 2"},
	} {
		writeConfig(t, dir, "storage: sqlite:///t.db\nmodel: m\ndatasets: [sst2]\nmethods:\n  lora: [{rank: 8}]\n"+tc.training+"search:\n  lr: {low: 1.0e-6, high: 3.0e-3, log: true}\n")
		if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml"); code != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d: %s", tc.training, code, errOut)
		}
		if _, err := os.Stat(filepath.Join(dir, "t.db")); err == nil {
			t.Error("a database was created for a sweep whose training settings are wrong")
		}
	}
}

// TestWorkersOnPostgres runs two `sweep worker`s against one PostgreSQL
// database: they share the work, nothing runs twice, budgets end exact,
// and Optuna (with psycopg2) reads the studies.
func TestWorkersOnPostgres(t *testing.T) {
	url := pgtest.Fresh(t)
	dir := t.TempDir()
	writeConfig(t, dir, strings.Replace(slowConfig, "epoch_ms: 60", "epoch_ms: 20", 1))
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for range 2 {
		cmd := exec.Command(sweepBin, "worker", "sweep.yaml", "--storage", url)
		cmd.Dir = dir
		var b bytes.Buffer
		cmd.Stderr = &b
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, &b)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("worker %d: %v\n%s", i, err, outs[i])
		}
	}
	s, err := storage.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	studies, _ := s.Studies(ctx)
	got := map[string][]storage.FrozenTrial{}
	for _, st := range studies {
		got[st.Name], _ = s.Trials(ctx, st.ID)
	}
	checkBudgets(t, got, 2, 6)
	for name, trials := range got {
		if len(trials) != 6 {
			t.Errorf("%s has %d trials, want 6 (none run twice, none failed)", name, len(trials))
		}
	}
	checkDashboardOnPostgres(t, dir, url, got)
	for i, b := range outs {
		if !strings.Contains(b.String(), "COMPLETE") {
			t.Errorf("worker %d finished no trial:\n%s", i, b)
		}
	}
	script := `
import json, sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
st = optuna.storages.RDBStorage(sys.argv[1], skip_compatibility_check=True)
out = {}
for s in st.get_all_studies():
    study = optuna.load_study(study_name=s.study_name, storage=st)
    out[s.study_name] = {"n": len(study.trials), "best": study.best_trial.number, "value": study.best_value}
print(json.dumps(out))
`
	pyURL := strings.Replace(url, "postgresql://", "postgresql+psycopg2://", 1)
	out, err := exec.Command("/usr/bin/python3", "-c", script, pyURL).CombinedOutput()
	if err != nil {
		t.Fatalf("Optuna could not read the PostgreSQL studies (python3-optuna and python3-psycopg2 are needed): %v\n%s", err, out)
	}
	var report map[string]struct {
		N     int     `json:"n"`
		Best  int     `json:"best"`
		Value float64 `json:"value"`
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for name, trials := range got {
		best, _ := storage.BestTrial(trials, storage.Maximize)
		r := report[name]
		if r.N != 6 || r.Best != best.Number || r.Value != *best.Value {
			t.Errorf("%s: Optuna sees %+v, we see best #%d %v", name, r, best.Number, *best.Value)
		}
	}
}

// TestSlurmWorkers submits a job array of two workers to a throw-away Slurm
// cluster (scripts/start-slurm.sh: slurmctld and two slurmd on this
// machine) sharing a PostgreSQL database, kills one worker with SIGKILL
// mid-trial, and checks that its trial went stale, was retried by the
// other worker, and that every budget ended exact.
// startSlurm starts a one-node Slurm cluster of the test's own
// (scripts/start-slurm.sh), stopped when the test ends, and points the
// Slurm commands at it.
func startSlurm(t *testing.T) {
	t.Helper()
	cluster, err := os.MkdirTemp("", "readsweep-slurm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("../../scripts/start-slurm.sh", "--stop", cluster).Run()
		os.RemoveAll(cluster)
	})
	start := exec.Command("../../scripts/start-slurm.sh", cluster)
	start.Env = append(os.Environ(), fmt.Sprintf("SLURM_TEST_PORT=%d", 20000+os.Getpid()%10000))
	out, err := start.Output()
	if err != nil {
		t.Fatalf("Slurm is needed for this test (apt-get install slurm-wlm munge; root): %v\n%s", err, out)
	}
	t.Setenv("SLURM_CONF", strings.TrimSpace(string(out)))
}

func TestSlurmWorkers(t *testing.T) {
	url := pgtest.Fresh(t)
	startSlurm(t)
	// A folder with a space and a # in its name: sbatch reads #SBATCH
	// lines its own way, and the log path holds the folder.
	dir := filepath.Join(t.TempDir(), "my sweep #1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, dir, strings.NewReplacer("trials: 6", "trials: 5", "parallel: 2", "parallel: 1", "epoch_ms: 60", "epoch_ms: 150").Replace(slowConfig))
	stdout, submitErr, code := sweepCmd(t, dir, "submit", "--slurm", "sweep.yaml", "--workers", "2", "--storage", url)
	if code != 0 {
		t.Fatalf("submit: exit %d\n%s", code, submitErr)
	}
	job := strings.TrimSpace(stdout)
	// A second submit of the same sweep while the first job runs warns
	// (held, then cancelled: it is not part of this test's budgets).
	second, secondErr, code := sweepCmd(t, dir, "submit", "--slurm", "sweep.yaml", "--workers", "1", "--storage", url, "--sbatch-arg=--hold")
	if code != 0 || !strings.Contains(secondErr, "job "+job+" of this folder's sweep is still queued or running") {
		t.Errorf("a second submit while job %s runs: exit %d\n%s", job, code, secondErr)
	}
	if id := strings.TrimSpace(second); id != "" {
		exec.Command("scancel", id).Run()
	}
	s, err := storage.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	load := func() map[string][]storage.FrozenTrial {
		studies, _ := s.Studies(ctx)
		got := map[string][]storage.FrozenTrial{}
		for _, st := range studies {
			got[st.Name], _ = s.Trials(ctx, st.ID)
		}
		return got
	}
	// Kill worker 0 once both workers have a trial running.
	deadline := time.Now().Add(60 * time.Second)
	for {
		running := 0
		for _, trials := range load() {
			running += storage.Count(trials)[storage.Running]
		}
		if running >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the workers never ran two trials at once")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := exec.Command("scancel", "--signal=KILL", job+"_0").CombinedOutput(); err != nil {
		t.Fatalf("scancel: %v: %s", err, out)
	}
	// Requeue worker 1 mid-trial, as a preemption does: SIGTERM, then the
	// task runs again. Slurm holds a requeued task for a while (its begin
	// time); the test lets it go at once. Its log keeps what it wrote
	// before the requeue.
	if out, err := exec.Command("scontrol", "requeue", job+"_1").CombinedOutput(); err != nil {
		t.Fatalf("scontrol requeue: %v: %s", err, out)
	}
	for {
		out, _ := exec.Command("squeue", "-h", "-j", job+"_1", "-o", "%T").Output()
		if strings.TrimSpace(string(out)) == "PENDING" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("task 1 never went back to PENDING after the requeue: %s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := exec.Command("scontrol", "update", "JobId="+job+"_1", "StartTime=now").CombinedOutput(); err != nil {
		t.Fatalf("scontrol update: %v: %s", err, out)
	}
	for {
		out, _ := exec.Command("squeue", "-h", "-j", job).Output()
		if len(bytes.TrimSpace(out)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s did not finish:\n%s", job, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	got := load()
	checkBudgets(t, got, 2, 5)
	taskLog, err := os.ReadFile(filepath.Join(dir, "runs", "slurm", "sweep-"+job+"_1.out"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(taskLog), "studies → "); n != 2 || !strings.Contains(string(taskLog), "stopping on SIGTERM") {
		t.Errorf("the requeued task's log has %d starts (want 2: before and after the requeue) and lacks its stop before it:\n%s", n, taskLog)
	}
	failed := 0
	for name, trials := range got {
		for _, tr := range trials {
			if tr.State != storage.Fail {
				continue
			}
			failed++
			retried := false
			for _, r := range trials {
				if f, ok := r.SystemAttrs["failed_trial"].(float64); ok && int(f) == tr.Number && r.State == storage.Complete {
					retried = true
				}
			}
			if !retried {
				t.Errorf("%s#%d failed with the killed worker and was not retried", name, tr.Number)
			}
		}
	}
	if failed == 0 {
		t.Error("killing a worker mid-trial failed no trial; the test proved nothing")
	}
	// The status command that submit printed works as printed (the URL
	// came from --storage, not the sweep file), and names where the
	// killed worker's trial ran.
	suggested := regexp.MustCompile("`sweep (status [^`]*)`").FindStringSubmatch(submitErr)
	if suggested == nil {
		t.Fatalf("submit printed no status command:\n%s", submitErr)
	}
	sh := exec.Command("bash", "-c", strconv.Quote(sweepBin)+" "+suggested[1])
	sh.Dir = dir
	statusOut, err := sh.CombinedOutput()
	status := string(statusOut)
	if err != nil || !strings.Contains(status, "read/gru-150/sst2") || !strings.Contains(status, "Slurm job "+job) ||
		!strings.Contains(status, "Latest failures:") || !strings.Contains(status, "slurm_job_id "+job) {
		t.Errorf("%s: %v\n%s", suggested[1], err, status)
	}
}

// checkDashboardOnPostgres serves the workers' PostgreSQL studies with
// `sweep dashboard`: every study is there, and the password in the storage
// URL appears on no page and in no log line.
func checkDashboardOnPostgres(t *testing.T, dir, storageURL string, want map[string][]storage.FrozenTrial) {
	t.Helper()
	u, err := url.Parse(storageURL)
	if err != nil {
		t.Fatal(err)
	}
	pw, ok := u.User.Password()
	if !ok || pw == "" {
		t.Fatalf("the test server's URL has no password to hide: %s", storageURL)
	}
	var log bytes.Buffer
	base := startDashboard(t, dir, &log, storageURL)
	var pages strings.Builder
	for _, p := range []string{"", "api/overview", "api/selection", "api/live"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s\n%s", p, resp.Status, body)
		}
		pages.Write(body)
	}
	for name := range want {
		if !strings.Contains(pages.String(), `"name":"`+name+`"`) {
			t.Errorf("the dashboard on PostgreSQL does not list %s", name)
		}
	}
	time.Sleep(300 * time.Millisecond) // let the log catch up
	if strings.Contains(pages.String(), pw) || strings.Contains(log.String(), pw) {
		t.Errorf("the PostgreSQL password appears on a page or in the dashboard's log:\n%s", log.String())
	}
}

// TestTrialsShowStepsOfStepStudies: a study whose trials validate every
// few optimiser steps (report_unit: step) lists the last step reported,
// not a count of validations called epochs; export adds the steps column
// and takes epochs from the trainer's attribute. Studies that report by
// epoch, and older ones without the attribute, keep EPOCHS.
func TestTrialsShowStepsOfStepStudies(t *testing.T) {
	dir := t.TempDir()
	url := "sqlite:///" + filepath.Join(dir, "s.db")
	s, err := storage.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		attrs map[string]any
		inter map[int]float64
	}{
		"read/gru-256/sst2": {map[string]any{sweep.AttrReportUnit: "step"}, map[int]float64{5: 40, 10: 55, 15: 60}},
		"lora/rank-8/sst2":  {map[string]any{sweep.AttrReportUnit: "epoch"}, map[int]float64{0: 40, 1: 55}},
		"bitfit/all/sst2":   {nil, map[int]float64{0: 40, 1: 55, 2: 56, 3: 57}},
	} {
		state, value := storage.Complete, 60.0
		storeTrial(t, s, name, c.attrs, storage.TrialUpdate{State: &state, Value: &value, Intermediate: c.inter,
			UserAttrs: map[string]any{"epochs": 1}})
	}
	s.Close()
	for study, want := range map[string][]string{
		"read/gru-256/sst2": {"STEPS", "15"},
		"lora/rank-8/sst2":  {"EPOCHS", "2"},
		"bitfit/all/sst2":   {"EPOCHS", "4"},
	} {
		stdout, errOut, code := sweepCmd(t, dir, "trials", study, "--storage", url)
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if code != 0 || len(lines) != 2 {
			t.Fatalf("trials %s: exit %d\n%s%s", study, code, stdout, errOut)
		}
		if head, row := strings.Fields(lines[0]), strings.Fields(lines[1]); head[3] != want[0] || row[3] != want[1] {
			t.Errorf("trials %s: column %q = %q, want %q = %q\n%s", study, head[3], row[3], want[0], want[1], stdout)
		}
	}
	stdout, errOut, code := sweepCmd(t, dir, "export", "--storage", url)
	if code != 0 {
		t.Fatalf("export: exit %d: %s", code, errOut)
	}
	records, err := csv.NewReader(strings.NewReader(stdout)).ReadAll()
	if err != nil || len(records) != 4 {
		t.Fatalf("export: %d records, %v\n%s", len(records), err, stdout)
	}
	col := map[string]int{}
	for i, h := range records[0] {
		col[h] = i
	}
	for _, r := range records[1:] {
		want := map[string][2]string{"read/gru-256/sst2": {"1", "15"}, "lora/rank-8/sst2": {"2", ""}, "bitfit/all/sst2": {"4", ""}}[r[col["study"]]]
		if got := [2]string{r[col["epochs"]], r[col["steps"]]}; got != want {
			t.Errorf("export %s: epochs, steps = %q, want %q", r[col["study"]], got, want)
		}
	}
}

// TestSweepRidesOutADatabaseOutage stops the PostgreSQL server for longer
// than heartbeat_grace in the middle of a sweep with two trials at once,
// then starts it again: the same `sweep run` goes on, says once that the
// database went away and once that it came back, fails no trial (none is
// taken for dead for its heartbeat gap) and ends with every budget exact
// and every trial's epochs all recorded.
func TestSweepRidesOutADatabaseOutage(t *testing.T) {
	srv := pgtest.Own(t)
	dir := t.TempDir()
	writeConfig(t, dir, strings.NewReplacer("storage: sqlite:///k.db", "storage: "+srv.URL, "epoch_ms: 60", "epoch_ms: 250",
		"heartbeat_grace: 1s", "heartbeat_grace: 3s").Replace(slowConfig))
	cmd := exec.Command(sweepBin, "run", "sweep.yaml")
	cmd.Dir = dir
	var errOut syncBuffer
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s, err := storage.Open(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	counts := func() map[storage.TrialState]int {
		n := map[storage.TrialState]int{}
		studies, _ := s.Studies(ctx)
		for _, st := range studies {
			trials, _ := s.Trials(ctx, st.ID)
			for k, v := range storage.Count(trials) {
				n[k] += v
			}
		}
		return n
	}
	waitFor(t, func() bool { n := counts(); return n[storage.Complete] >= 2 && n[storage.Running] == 2 })
	s.Close()
	srv.Stop()
	time.Sleep(5 * time.Second) // over heartbeat_grace
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("sweep run: %v\n%s", err, errOut.String())
		}
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("sweep run did not end\n%s", errOut.String())
	}
	log := errOut.String()
	if strings.Count(log, "does not answer") != 1 || strings.Count(log, "answers again") != 1 {
		t.Errorf("want one line as the database went away and one as it came back:\n%s", log)
	}
	s, err = storage.Open(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := map[string][]storage.FrozenTrial{}
	studies, _ := s.Studies(ctx)
	for _, st := range studies {
		got[st.Name], _ = s.Trials(ctx, st.ID)
	}
	checkBudgets(t, got, 2, 6)
	for name, trials := range got {
		for _, tr := range trials {
			if tr.State != storage.Complete && tr.State != storage.Pruned {
				t.Errorf("%s#%d %s: %v", name, tr.Number, tr.State, tr.UserAttrs["fail_reason"])
			}
			if tr.State == storage.Complete && len(tr.Intermediate) != 4 {
				t.Errorf("%s#%d: %d of its 4 epochs recorded", name, tr.Number, len(tr.Intermediate))
			}
		}
	}
}

// TestSuspendedWorkerKeepsItsTrial suspends one of two `sweep run`
// processes sharing a sweep, with its trial, for 30 s (what `scontrol
// suspend` does: SIGSTOP to every process of the job), under the default
// heartbeat_grace: the other process does not take the suspended trial
// for dead, the suspended one notices its pause, and the sweep ends with
// no FAIL and exact budgets.
func TestSuspendedWorkerKeepsItsTrial(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, `storage: sqlite:///s.db
trainer: synthetic
datasets: [sst2]
methods:
  read: [{cell: gru, epoch_ms: 800}]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: 6
training: {max_epochs: 6}
`)
	start := func() (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(sweepBin, "run", "sweep.yaml", "--parallel", "1")
		cmd.Dir = dir
		var errOut syncBuffer
		cmd.Stderr = &errOut
		// A session of its own, as a job's: the suspension reaches its
		// trials too.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &errOut
	}
	a, aOut := start()
	waitFor(t, func() bool {
		return storage.Count(load(t, filepath.Join(dir, "s.db"))["read/gru-800/sst2"])[storage.Running] == 1
	})
	b, bOut := start()
	waitFor(t, func() bool {
		return storage.Count(load(t, filepath.Join(dir, "s.db"))["read/gru-800/sst2"])[storage.Running] == 2
	})
	// Trials of 4.8 s: the suspended one has seconds left after the pause,
	// time for the run to see its clock jump.
	signalSession(t, a.Process.Pid, syscall.SIGSTOP)
	time.Sleep(30 * time.Second)
	signalSession(t, a.Process.Pid, syscall.SIGCONT)
	for _, p := range []struct {
		cmd *exec.Cmd
		out *syncBuffer
	}{{a, aOut}, {b, bOut}} {
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("sweep run: %v\n%s", err, p.out.String())
		}
	}
	got := load(t, filepath.Join(dir, "s.db"))
	checkBudgets(t, got, 1, 6)
	for _, tr := range got["read/gru-800/sst2"] {
		if tr.State == storage.Fail {
			t.Errorf("#%d failed: %v\nsuspended:\n%s\nother:\n%s", tr.Number, tr.UserAttrs["fail_reason"], aOut.String(), bOut.String())
		}
	}
	if !strings.Contains(aOut.String(), "this process was stopped for 3") {
		t.Errorf("the suspended run did not notice its pause:\n%s", aOut.String())
	}
}

// signalSession sends sig to every process of session sid (a job's
// processes, as Slurm signals them).
func signalSession(t *testing.T, sid int, sig syscall.Signal) {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// After the command's closing parenthesis: state ppid pgrp session.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 3 && fields[3] == strconv.Itoa(sid) {
			syscall.Kill(pid, sig)
		}
	}
}

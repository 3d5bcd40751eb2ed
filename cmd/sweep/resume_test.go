package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/readsweep/readsweep/sweep/storage"
	"github.com/readsweep/readsweep/sweep/storage/pgtest"
	"github.com/readsweep/readsweep/trial"
)

// trainLosses reads the training loss of every validation from the
// stderr.log files of a study's trial folders, by step (a resumed trial's
// log holds the steps after its checkpoint; its predecessor's the rest).
func trainLosses(t *testing.T, studyDir string) map[string]string {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(studyDir, "trial-*", "stderr.log"))
	line := regexp.MustCompile(`(?m)^(epoch \d+): train loss (\S+)`)
	out := map[string]string{}
	for _, f := range logs {
		raw, _ := os.ReadFile(f)
		for _, m := range line.FindAllStringSubmatch(string(raw), -1) {
			out[m[1]] = m[2]
		}
	}
	return out
}

// TestStoppedSweepResumes stops `sweep run` in the middle of a trial's
// second epoch of four (full fine-tuning, LoRA, READ alone and packed,
// LST), runs it again, and compares the study with an
// uninterrupted run's: the resumed trial's every epoch value and training
// loss, its validation and test scores and its weights' digest are the
// same bit for bit, its curve is whole in the database, its attributes
// say where it resumed, the study holds exactly its budget of COMPLETE
// trials and no checkpoint is left. Stopped by kill -9 (the trial dies
// with it: the periodic checkpoint is what is left; the next run reaps
// it after heartbeat_grace), by SIGTERM (a preemption: the trial
// checkpoints on its way out) and by SIGHUP (a closed terminal).
func TestStoppedSweepResumes(t *testing.T) {
	for _, tc := range []struct {
		name, method, arch string
		sig                syscall.Signal
		every              string
		pack               int
	}{
		{"full, kill -9", "full", "{}", syscall.SIGKILL, "5", 1},
		{"lora, kill -9", "lora", "{rank: 4}", syscall.SIGKILL, "5", 1},
		{"read, kill -9", "read", "{hidden: 16}", syscall.SIGKILL, "1", 1},
		{"read packed, kill -9", "read", "{hidden: 16}", syscall.SIGKILL, "1", 2},
		{"lst, kill -9", "lst", "{sidenet_dim: 8}", syscall.SIGKILL, "1", 1},
		{"read packed, SIGTERM", "read", "{hidden: 16}", syscall.SIGTERM, "30m", 2},
		{"lst, SIGTERM", "lst", "{sidenet_dim: 8}", syscall.SIGTERM, "30m", 1},
		{"lora, SIGHUP", "lora", "{rank: 4}", syscall.SIGHUP, "30m", 1},
		{"full, SIGHUP", "full", "{}", syscall.SIGHUP, "30m", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// Wider than tinyModel's, so that an epoch lasts long enough to
			// be stopped in.
			if _, errOut, code := sweepCmd(t, dir, "model", "new", "--out", "small-t5", "--spiece", filepath.Join(mustAbs(t, "../../examples"), "spiece-tiny.model"),
				"--d-model", "128", "--d-kv", "32", "--d-ff", "512"); code != 0 {
				t.Fatalf("model new: %s", errOut)
			}
			body := `model: small-t5
data_dir: ` + mustAbs(t, "../../glue/testdata/fixture") + `
datasets: [sst2]
methods:
  ` + tc.method + `: [` + tc.arch + `]
search:
  lr: {low: 1.0e-3, high: 1.0e-2, log: true}
sampler: {name: random, seed: 4}
trials: ` + fmt.Sprint(tc.pack) + `
pack: ` + fmt.Sprint(tc.pack) + `
parallel: 1
heartbeat_interval: 1s
heartbeat_grace: 3s
kill_grace: 60s
training: {max_epochs: 4, batch_size: 4, patience: 10, checkpoint_every: ` + tc.every + `, state_cache_dir: cache}
`
			writeConfig(t, dir, "storage: sqlite:///whole.db\noutput_dir: whole\n"+body)
			if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml"); code != 0 {
				t.Fatalf("the uninterrupted run: exit %d\n%s", code, errOut)
			}
			writeConfig(t, dir, "storage: sqlite:///r.db\noutput_dir: runs\n"+body)
			cmd := exec.Command(sweepBin, "run", "sweep.yaml")
			cmd.Dir = dir
			errOut := &syncBuffer{}
			cmd.Stderr = errOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var studyName string
			trialDir := func(n int) string {
				dirs, _ := filepath.Glob(filepath.Join(dir, "runs", tc.method, "*", "sst2", fmt.Sprintf("trial-%d", n)))
				if len(dirs) == 0 {
					return ""
				}
				return dirs[0]
			}
			// Stop it inside epoch 2 (steps batches+1 … 2·batches−1): by
			// the checkpoint's step, or by the trial's log.
			batches, epochSeconds := 0, 0.0
			waitForLong(t, 60*time.Second, func() bool {
				d := trialDir(0)
				if d == "" {
					return false
				}
				if batches == 0 {
					log, _ := os.ReadFile(filepath.Join(d, "stderr.log"))
					m := regexp.MustCompile(`(\d+)/\d+/\d+ examples`).FindSubmatch(log)
					if m == nil {
						return false
					}
					var n int
					fmt.Sscan(string(m[1]), &n)
					batches = (n + 3) / 4
				}
				if tc.sig == syscall.SIGKILL {
					// Every member's: a pack writes them one after the other.
					for k := range tc.pack {
						steps, _, err := trial.CheckpointSteps(filepath.Join(trialDir(k), trial.CheckpointName))
						if err != nil || steps <= batches || steps >= 2*batches {
							return false
						}
					}
					return true
				}
				log, _ := os.ReadFile(filepath.Join(d, "stderr.log"))
				if m := epochZero.FindSubmatch(log); m != nil {
					fmt.Sscan(string(m[1]), &epochSeconds)
					return true
				}
				return false
			})
			// A third of an epoch on: inside epoch 2, however loaded the
			// machine (the first epoch's time says how fast it goes).
			time.Sleep(time.Duration(epochSeconds / 3 * float64(time.Second)))
			cmd.Process.Signal(tc.sig)
			cmd.Wait()
			first := load(t, filepath.Join(dir, "r.db"))
			for name := range first {
				studyName = name
			}
			if n := storage.Count(first[studyName]); n[storage.Complete] != 0 {
				t.Fatalf("the run ended before it was stopped: %v\n%s", n, errOut.String())
			}
			if tc.sig == syscall.SIGKILL {
				time.Sleep(3 * time.Second) // heartbeat_grace: the next run reaps the trial
			}
			if _, errOut2, code := sweepCmd(t, dir, "run", "sweep.yaml"); code != 0 {
				t.Fatalf("the second run: exit %d\n%s\nfirst run:\n%s", code, errOut2, errOut.String())
			} else if !strings.Contains(errOut2, "resumes from #0's checkpoint at step") {
				t.Errorf("the second run does not say it resumed:\n%s", errOut2)
			}

			whole := load(t, filepath.Join(dir, "whole.db"))[studyName]
			resumed := load(t, filepath.Join(dir, "r.db"))[studyName]
			var done []storage.FrozenTrial
			for _, tr := range resumed {
				if tr.State == storage.Complete {
					done = append(done, tr)
				}
			}
			if len(done) != tc.pack || storage.Count(resumed)[storage.Running] != 0 {
				t.Fatalf("%v; want exactly %d COMPLETE (the budget)", storage.Count(resumed), tc.pack)
			}
			for k, tr := range done {
				want := whole[k]
				from, _ := tr.UserAttrs["resumed_from"].(string)
				var n, step int
				// Inside epoch 2, or a step or two on: the kill lands
				// a moment after the check, while the trial trains on.
				if _, err := fmt.Sscanf(from, "%d at step %d", &n, &step); err != nil || n != k || step <= batches || step > 2*batches+batches/2 {
					t.Errorf("#%d: resumed_from %q, want trial %d's checkpoint inside epoch 2 (steps %d to %d)", tr.Number, from, k, batches+1, 2*batches-1)
				}
				if fmt.Sprint(tr.Intermediate) != fmt.Sprint(want.Intermediate) || *tr.Value != *want.Value {
					t.Errorf("#%d: curve %v value %v, uninterrupted %v %v", tr.Number, tr.Intermediate, *tr.Value, want.Intermediate, *want.Value)
				}
				for _, key := range []string{"test", "validation", "best_epoch", "steps", "trainable_sha256"} {
					if fmt.Sprint(tr.UserAttrs[key]) != fmt.Sprint(want.UserAttrs[key]) {
						t.Errorf("#%d: %s %v, uninterrupted %v", tr.Number, key, tr.UserAttrs[key], want.UserAttrs[key])
					}
				}
			}
			if tc.pack == 1 {
				studyDir := filepath.Dir(trialDir(0))
				wholeDir := strings.Replace(studyDir, filepath.Join(dir, "runs"), filepath.Join(dir, "whole"), 1)
				if got, want := trainLosses(t, studyDir), trainLosses(t, wholeDir); fmt.Sprint(got) != fmt.Sprint(want) || len(got) != 4 {
					t.Errorf("training losses %v, uninterrupted %v", got, want)
				}
			}
			left, _ := filepath.Glob(filepath.Join(dir, "runs", "*", "*", "*", "trial-*", trial.CheckpointName))
			if len(left) > 0 {
				t.Errorf("checkpoints left: %v", left)
			}
		})
	}
}

// epochZero is a trial's log line for its first epoch, with its seconds.
var epochZero = regexp.MustCompile(`(?m)^epoch 0: train loss .*\(([0-9.]+)s\)$`)

// waitForLong polls cond every 10 ms for up to d.
func waitForLong(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("timed out waiting")
}

// TestSlurmRequeueResumes: `scontrol requeue` of a running worker (what
// a preemption does) stops its trial, which checkpoints on SIGTERM; the
// requeued worker resumes the trial from that checkpoint, and the study
// ends with exactly its budget of COMPLETE trials. Real Slurm, as CI has.
func TestSlurmRequeueResumes(t *testing.T) {
	url := pgtest.Fresh(t)
	startSlurm(t)
	dir := t.TempDir()
	if _, errOut, code := sweepCmd(t, dir, "model", "new", "--out", "small-t5", "--spiece", filepath.Join(mustAbs(t, "../../examples"), "spiece-tiny.model"),
		"--d-model", "128", "--d-kv", "32", "--d-ff", "512"); code != 0 {
		t.Fatalf("model new: %s", errOut)
	}
	writeConfig(t, dir, `model: small-t5
data_dir: `+mustAbs(t, "../../glue/testdata/fixture")+`
output_dir: runs
datasets: [sst2]
methods:
  lora: [{rank: 4}]
search:
  lr: {low: 1.0e-3, high: 1.0e-2, log: true}
trials: 1
heartbeat_interval: 1s
heartbeat_grace: 5s
training: {max_epochs: 40, patience: 40, batch_size: 4, state_cache_dir: cache}
`)
	stdout, errOut, code := sweepCmd(t, dir, "submit", "--slurm", "sweep.yaml", "--workers", "1", "--storage", url)
	if code != 0 {
		t.Fatalf("submit: exit %d\n%s", code, errOut)
	}
	job := strings.TrimSpace(stdout)
	trialLog := filepath.Join(dir, "runs", "lora", "rank-4", "sst2", "trial-0", "stderr.log")
	waitForLong(t, 90*time.Second, func() bool {
		log, _ := os.ReadFile(trialLog)
		return strings.Contains(string(log), "epoch 1: train loss")
	})
	if out, err := exec.Command("scontrol", "requeue", job+"_0").CombinedOutput(); err != nil {
		t.Fatalf("scontrol requeue: %v: %s", err, out)
	}
	waitForLong(t, 60*time.Second, func() bool {
		out, _ := exec.Command("squeue", "-h", "-j", job+"_0", "-o", "%T").Output()
		return strings.TrimSpace(string(out)) == "PENDING"
	})
	if out, err := exec.Command("scontrol", "update", "JobId="+job+"_0", "StartTime=now").CombinedOutput(); err != nil {
		t.Fatalf("scontrol update: %v: %s", err, out)
	}
	waitForLong(t, 120*time.Second, func() bool {
		out, _ := exec.Command("squeue", "-h", "-j", job).Output()
		return len(bytes.TrimSpace(out)) == 0
	})
	s, err := storage.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	studies, _ := s.Studies(context.Background())
	if len(studies) != 1 {
		t.Fatalf("%d studies", len(studies))
	}
	trials, _ := s.Trials(context.Background(), studies[0].ID)
	taskLog, _ := os.ReadFile(filepath.Join(dir, "runs", "slurm", "sweep-"+job+"_0.out"))
	n := storage.Count(trials)
	if n[storage.Complete] != 1 || n[storage.Fail] != 1 || len(trials) != 2 {
		t.Fatalf("%v; want the interrupted trial FAIL and its retry COMPLETE\n%s", n, taskLog)
	}
	done := trials[1]
	if from, _ := done.UserAttrs["resumed_from"].(string); !strings.HasPrefix(from, "0 at step ") || done.State != storage.Complete {
		t.Errorf("#1: %v, resumed_from %q; want it resumed from #0's checkpoint\n%s", done.State, from, taskLog)
	}
	if len(done.Intermediate) != 40 {
		t.Errorf("#1: %d intermediate values, want the whole curve of 40 epochs", len(done.Intermediate))
	}
	if !strings.Contains(string(taskLog), "resumes from #0's checkpoint") {
		t.Errorf("the task's log does not say it resumed:\n%s", taskLog)
	}
}

// TestDetachedRun: `sweep run --detach` checks the sweep, prints the pid
// of a run in a session of its own (no terminal to send it SIGHUP) and
// returns; the run finishes the study with its output in
// output_dir/sweep.log. A sweep file with a mistake fails at once, in the
// terminal, with nothing started.
func TestDetachedRun(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, syntheticSweep("d.db", "{name: fine, epoch_ms: 400}", 3, "output_dir: out\n"))
	stdout, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml", "--detach")
	if code != 0 || !strings.Contains(errOut, "running in the background as pid") {
		t.Fatalf("run --detach: exit %d\n%s", code, errOut)
	}
	var pid int
	if _, err := fmt.Sscan(stdout, &pid); err != nil {
		t.Fatalf("no pid on stdout: %q", stdout)
	}
	if own, theirs := sessionOf(t, os.Getpid()), sessionOf(t, pid); own == theirs || theirs != pid {
		t.Errorf("the detached run (pid %d) is in session %d, this test in %d; want one of its own", pid, theirs, own)
	}
	waitForLong(t, 30*time.Second, func() bool {
		return syscall.Kill(pid, 0) != nil
	})
	if n := storage.Count(load(t, filepath.Join(dir, "d.db"))["synthetic/fine/sst2"]); n[storage.Complete] != 3 {
		t.Errorf("the detached run left %v", n)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "out", "sweep.log"))
	if !strings.Contains(string(log), "started detached: sweep run sweep.yaml") || !strings.Contains(string(log), "this run: 3 complete") {
		t.Errorf("out/sweep.log:\n%s", log)
	}

	writeConfig(t, dir, syntheticSweep("d.db", "{name: fine}", 3, "output_dir: out\nparallel: -1\n"))
	if _, errOut, code := sweepCmd(t, dir, "run", "--detach", "sweep.yaml"); code == 0 || !strings.Contains(errOut, "parallel") {
		t.Errorf("a bad sweep file with --detach: exit %d\n%s", code, errOut)
	}
	// What the run's own checks would find (a missing model, a database
	// that cannot open) is said in the terminal too.
	writeConfig(t, dir, "storage: sqlite:///d.db\noutput_dir: out\nmodel: /nonexistent/model\ndata_dir: "+mustAbs(t, "../../glue/testdata/fixture")+
		"\ndatasets: [sst2]\nmethods: {lora: [{rank: 4}]}\nsearch: {lr: {low: 1.0e-4, high: 1.0e-2, log: true}}\ntrials: 1\n")
	if _, errOut, code := sweepCmd(t, dir, "run", "--detach", "sweep.yaml"); code == 0 || !strings.Contains(errOut, "/nonexistent/model") {
		t.Errorf("a missing model with --detach: exit %d\n%s", code, errOut)
	}
	writeConfig(t, dir, syntheticSweep("no/such/folder/d.db", "{name: fine}", 3, "output_dir: out\n"))
	if _, errOut, code := sweepCmd(t, dir, "run", "--detach", "sweep.yaml"); code == 0 || strings.Contains(errOut, "background") {
		t.Errorf("a database that cannot open with --detach: exit %d\n%s", code, errOut)
	}
}

// sessionOf reads process pid's session id from /proc (field 6 of stat,
// after the parenthesised name).
func sessionOf(t *testing.T, pid int) int {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	var sid int
	fmt.Sscan(fields[3], &sid)
	return sid
}

// TestBenchResume runs `sweep bench resume` on a small random model: two
// kills, each losing less than checkpoint_every, two restarts timed to
// their first step, the checkpoint's cost and a finished trial that says
// where it resumed.
func TestBenchResume(t *testing.T) {
	out, errOut, code := sweepCmd(t, mustAbs(t, "../.."), "bench", "resume", "--d-model", "64", "--d-kv", "16", "--d-ff", "128", "--layers", "2", "--heads", "4",
		"--every", "1s", "--epochs", "30", "--batch", "4", "--kills", "2", "--dir", t.TempDir())
	if code != 0 {
		t.Fatalf("bench resume: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`kill 1: [0-9.]+s after its newest checkpoint \(step \d+\): lost ≤ checkpoint_every: true`),
		regexp.MustCompile(`kill 2: [0-9.]+s after its newest checkpoint \(step \d+\): lost ≤ checkpoint_every: true`),
		regexp.MustCompile(`restart to the first resumed step \(.*\): [0-9.]+, [0-9.]+ s`),
		regexp.MustCompile(`checkpoint: \d+ MB in [0-9.]+s \(median of \d+\) = [0-9.]+% of the default interval \(30m0s\)`),
		regexp.MustCompile(`final: value [0-9.]+, .*resumed_from 1 at step \d+`),
		regexp.MustCompile(`OPENBLAS_CORETYPE=`),
	} {
		if !want.MatchString(out) {
			t.Errorf("bench output lacks %s:\n%s", want, out)
		}
	}
}

func TestSignalLead(t *testing.T) {
	for _, tc := range []struct {
		grace time.Duration
		limit string
		want  int
	}{
		{10 * time.Second, "", 70},
		{10 * time.Second, "24:00:00", 70},
		{10 * time.Second, "1", 30}, // one minute: half of it
		{30 * time.Hour, "", 65535}, // sbatch's most
		{10 * time.Second, "UNLIMITED", 70},
	} {
		if got := signalLead(tc.grace, tc.limit); got != tc.want {
			t.Errorf("kill_grace %v, --time %q: lead %d s, want %d", tc.grace, tc.limit, got, tc.want)
		}
	}
}

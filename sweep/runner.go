package sweep

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/sweep/storage"
	"github.com/readsweep/readsweep/trial"
)

// Proc is one trial process to run.
type Proc struct {
	Argv           []string // Argv[0] is the program; no shell is involved
	Env            []string // added to the orchestrator's environment
	Dir            string
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// KillGrace is how long a cancelled process has between SIGTERM and
	// SIGKILL.
	KillGrace time.Duration
	// MemoryBytes caps the process's writable memory (RLIMIT_DATA); 0: none.
	MemoryBytes int64
	// KillNow, when closed, cuts KillGrace short: SIGKILL at once.
	KillNow <-chan struct{}
}

// Runner runs the trials of planned studies until each has its budget.
type Runner struct {
	// KillNow, when closed, makes running trials get SIGKILL at once
	// instead of after KillGrace (a second Ctrl-C).
	KillNow <-chan struct{}
	// started holds when each running trial (by id) started, for the
	// interrupt message.
	startedMu sync.Mutex
	started   map[int64]time.Time

	Config  *Config
	Storage storage.Storage
	Sampler Sampler
	Pruner  Pruner // nil: never prune
	// Log receives one line per finished trial and other events.
	Log io.Writer
	// Progress, when set, is told the sweep's progress instead of logging
	// a count on every line (a terminal progress bar).
	Progress ProgressFunc
	// Exec starts a trial process and waits for it; cancelling ctx must
	// stop it. Nil means ExecProc; tests replace it.
	Exec func(ctx context.Context, p Proc) error
	// Executable is the program `sweep trial` runs as; empty means this one.
	Executable string
	// Deadline, when set, is when this process will be stopped (a Slurm
	// task's time limit): no trial starts that would not finish by then,
	// judged by its study's mean COMPLETE trial.
	Deadline time.Time
	// Command is how this process was started ("sweep run", "sweep
	// worker"), for the messages that tell what to do next.
	Command string
	// Where is recorded in every trial's user attributes: the host and,
	// under Slurm, the job and array task that ran it, so that a failure
	// can be matched to its log.
	Where map[string]any
	// Packable reports whether a study's method trains from the frozen
	// backbone's states, so that Config.Pack of its trials can share one
	// process; nil packs nothing.
	Packable func(method string, arch map[string]any) bool
}

// ProgressFunc reports done of total trials and what is running now. A
// Runner never calls it concurrently.
type ProgressFunc func(done, total int, running []string)

// Result counts what one Run did.
type Result struct {
	States    map[storage.TrialState]int // trials this run finished, by state
	Finished  []string                   // studies at their budget
	Abandoned []string                   // studies given up after MaxFailures
	Reaped    int                        // of the FAIL trials, those found dead (an earlier run's, no heartbeat)
	Failures  map[string]int             // FAIL trials this run, by study
}

type studyState struct {
	plan     Planned
	study    storage.Study
	inflight int
	failures int
	done     bool
	waitTill time.Time     // full of running trials owned elsewhere: poll later
	finished int           // COMPLETE+PRUNED, as last seen
	meanTook time.Duration // a COMPLETE trial's mean wall time, as last seen (0: none yet)
	// outOfTime: this process's time limit would end a new trial before
	// it did; it starts none.
	outOfTime bool
	// checking serialises the study's prune checks, so that each sees the
	// rung values the one before recorded, as one Optuna process's do.
	checking sync.Mutex
}

type runState struct {
	progressMu sync.Mutex // serialises Progress calls
	mu         sync.Mutex
	studies    []*studyState
	running    map[int64]string // trial id → label for progress
	result     Result
	awake      awakeness
}

// Run fills every planned study to its budget and returns when all are
// full or abandoned, or ctx is cancelled.
func (r *Runner) Run(ctx context.Context, plan []Planned) (Result, error) {
	rs := &runState{running: map[int64]string{}, result: Result{States: map[storage.TrialState]int{}, Failures: map[string]int{}}}
	var conflicts []string // studies whose stored trials were sampled from another space
	for _, p := range plan {
		st, err := r.Storage.CreateStudy(ctx, p.Name, r.Config.Direction, p.StudyAttrs(r.Config))
		if err != nil {
			return rs.result, err
		}
		ss := &studyState{plan: p, study: st}
		trials, err := r.Storage.Trials(ctx, st.ID)
		if err != nil {
			return rs.result, err
		}
		if n, err := r.replayJournals(ctx, ss, trials); err != nil {
			return rs.result, err
		} else if n > 0 {
			if trials, err = r.Storage.Trials(ctx, st.ID); err != nil {
				return rs.result, err
			}
		}
		r.count(ss, trials)
		if diff := append(spaceDiff(trials, r.space(ss)), precisionDiff(trials, r.Config.Training)...); len(diff) > 0 {
			conflicts = append(conflicts, ss.plan.Name+": "+strings.Join(diff, "; "))
		}
		rs.studies = append(rs.studies, ss)
	}
	if err := spaceConflicts(conflicts); err != nil {
		return rs.result, err
	}
	r.progress(rs)

	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	tick := time.NewTicker(pauseTick)
	defer tick.Stop()
	go rs.awake.watch(wctx, tick.C, r.logf)

	var wg sync.WaitGroup
	errc := make(chan error, r.Config.Parallel)
	for slot := range r.Config.Parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.worker(ctx, rs, slot); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	for _, ss := range rs.studies {
		if ss.failures > 0 {
			rs.result.Failures[ss.plan.Name] = ss.failures
		}
		if ss.finished >= r.budget(ss) {
			rs.result.Finished = append(rs.result.Finished, ss.plan.Name)
		} else if ss.failures >= r.Config.MaxFailures {
			rs.result.Abandoned = append(rs.result.Abandoned, ss.plan.Name)
		}
	}
	if err := <-errc; err != nil {
		return rs.result, err
	}
	return rs.result, ctx.Err()
}

// spaceConflicts refuses to add trials to studies whose stored trials were
// sampled from another search space than the one planned (a range changed
// in the sweep file, or a study Optuna wrote): TPE would mix them into one
// model and one budget without saying so.
func spaceConflicts(conflicts []string) error {
	if len(conflicts) == 0 {
		return nil
	}
	return fmt.Errorf("sweep: %d studies exist with another search space or product precision than the sweep file's:\n  %s\n"+
		"No trial was started. To go on, restore the search: (or training.precision) the studies were run with, or start new studies for the new one "+
		"(a new storage, or new candidate names with name: under methods); trials sampled from different spaces, or scored at different precisions, cannot share one TPE model or one budget",
		len(conflicts), strings.Join(conflicts, "\n  "))
}

// precisionDiff says whether the study's finished trials ran their
// products at another precision than training sets (trials that did not
// record one, from before the setting or another trainer, say nothing).
func precisionDiff(trials []storage.FrozenTrial, training map[string]any) []string {
	want := nn.FP32.String()
	if p, ok := training["precision"]; ok { // read as the trial reads it (another trainer's other keys aside)
		if set, err := trial.ParseSettings(map[string]any{"precision": p}); err == nil {
			want = set.Precision.String()
		}
	}
	ran := map[string]int{}
	for _, t := range trials {
		if p, ok := t.UserAttrs["precision"].(string); ok && p != want {
			ran[p]++
		}
	}
	var out []string
	for _, p := range slices.Sorted(maps.Keys(ran)) {
		out = append(out, fmt.Sprintf("precision: %d trials ran %s products, the sweep file says %s", ran[p], p, want))
	}
	return out
}

// spaceDiff says how the distributions stored with trials differ from
// space, one line per parameter.
func spaceDiff(trials []storage.FrozenTrial, space map[string]storage.Distribution) []string {
	text := func(d storage.Distribution) string {
		b, _ := json.Marshal(d)
		return string(b)
	}
	stored := map[string]string{}
	for _, t := range trials {
		for name, d := range t.Distributions {
			stored[name] = text(d) // Optuna keeps one per trial; the latest tells
		}
	}
	if len(stored) == 0 {
		return nil
	}
	var diff []string
	for _, name := range slices.Sorted(maps.Keys(stored)) {
		want, ok := space[name]
		switch {
		case !ok:
			diff = append(diff, fmt.Sprintf("%s is in the stored trials (%s), not in the file", name, stored[name]))
		case text(want) != stored[name]:
			diff = append(diff, fmt.Sprintf("%s was %s, the file says %s", name, stored[name], text(want)))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(space)) {
		if _, ok := stored[name]; !ok {
			diff = append(diff, fmt.Sprintf("%s is in the file, not in the stored trials", name))
		}
	}
	return diff
}

// Running returns how many trials this runner is running now, and how
// long the longest-running of them has run.
func (r *Runner) Running() (n int, longest time.Duration) {
	r.startedMu.Lock()
	defer r.startedMu.Unlock()
	for _, t := range r.started {
		longest = max(longest, time.Since(t))
	}
	return len(r.started), longest
}

// setRunning records trial id as running since start, or no longer running.
func (r *Runner) setRunning(id int64, start time.Time, running bool) {
	r.startedMu.Lock()
	defer r.startedMu.Unlock()
	if r.started == nil {
		r.started = map[int64]time.Time{}
	}
	if running {
		r.started[id] = start
	} else {
		delete(r.started, id)
	}
}

// refresh re-reads how many trials of the study are finished.
func (r *Runner) refresh(ctx context.Context, ss *studyState) error {
	trials, err := r.Storage.Trials(ctx, ss.study.ID)
	if err != nil {
		return err
	}
	r.count(ss, trials)
	return nil
}

// count records how many of the study's trials are finished.
func (r *Runner) count(ss *studyState, trials []storage.FrozenTrial) {
	n := storage.Count(trials)
	ss.finished = n[storage.Complete] + n[storage.Pruned]
	ss.done = ss.finished >= r.budget(ss)
	var took time.Duration
	complete := 0
	for _, t := range trials {
		if t.State == storage.Complete && !t.Start.IsZero() && t.Complete.After(t.Start) {
			took += t.Complete.Sub(t.Start)
			complete++
		}
	}
	if complete > 0 {
		ss.meanTook = took / time.Duration(complete)
	}
}

// budget is a study's number of COMPLETE+PRUNED trials to reach.
func (r *Runner) budget(ss *studyState) int {
	if ss.plan.Trials > 0 {
		return ss.plan.Trials
	}
	return r.Config.Trials
}

// space is a study's search space.
func (r *Runner) space(ss *studyState) map[string]storage.Distribution {
	if ss.plan.Space != nil {
		return ss.plan.Space
	}
	return r.Config.Space
}

// next picks the study with work for a new trial process: the one with
// the fewest trials in flight from this process, then plan order, and
// reserves the trials that process will run (pack(study) or fewer). It
// returns nil and how long to wait when every open study is full of trials
// owned elsewhere, and nil, 0 when all are done.
func (r *Runner) next(rs *runState) (*studyState, int, time.Duration) {
	cfg := r.Config
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var best *studyState
	wait := time.Duration(0)
	now := time.Now()
	for _, ss := range rs.studies {
		// Trials in flight may all fail: never start more than the failures
		// left, so a study stops at exactly max_failures.
		if ss.done || ss.outOfTime || ss.failures+ss.inflight >= cfg.MaxFailures {
			continue
		}
		if !r.Deadline.IsZero() && ss.meanTook > 0 && r.Deadline.Sub(now) < ss.meanTook {
			// Started, it would be killed at the limit and run again
			// from scratch: better left to a worker with the time.
			ss.outOfTime = true
			r.logf("%s: not starting another trial: %v left of the time limit, and its trials take %v on average", ss.plan.Name,
				r.Deadline.Sub(now).Round(time.Second), ss.meanTook.Round(time.Second))
			continue
		}
		if now.Before(ss.waitTill) {
			if d := ss.waitTill.Sub(now); wait == 0 || d < wait {
				wait = d
			}
			continue
		}
		if best == nil || ss.inflight < best.inflight {
			best = ss
		}
	}
	if best == nil {
		return nil, 0, wait
	}
	n := max(1, min(r.packSize(best), cfg.MaxFailures-best.failures-best.inflight, r.budget(best)-best.finished-best.inflight))
	best.inflight += n
	return best, n, 0
}

func (r *Runner) worker(ctx context.Context, rs *runState, slot int) error {
	for ctx.Err() == nil {
		ss, n, wait := r.next(rs)
		if ss == nil {
			if wait == 0 {
				return nil
			}
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
			continue
		}
		states, err := r.runTrials(ctx, rs, ss, slot, n)
		rs.mu.Lock()
		ss.inflight -= n
		for _, state := range states {
			rs.result.States[state]++
			if state == storage.Fail {
				ss.failures++
				if ss.failures == r.Config.MaxFailures {
					r.logf("%s: %d trials failed in this run; not scheduling it again (fix the cause, then %s again)", ss.plan.Name, ss.failures, r.command())
				}
			}
		}
		switch {
		case errors.Is(err, storage.ErrStudyFull):
			err = nil
			if rerr := r.refresh(ctx, ss); rerr != nil && ctx.Err() == nil {
				err = rerr
			}
			if !ss.done {
				// Running elsewhere: poll until they finish or go stale.
				ss.waitTill = time.Now().Add(min(time.Second, r.Config.HeartbeatInterval))
			}
		case err == nil:
			if rerr := r.refresh(ctx, ss); rerr != nil && ctx.Err() == nil {
				err = rerr
			}
		}
		rs.mu.Unlock()
		r.progress(rs)
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}

// packSize is how many trials of the study one process trains: the sweep
// file's pack for methods that train from the backbone's states, else 1.
func (r *Runner) packSize(ss *studyState) int {
	if r.Config.Pack > 1 && r.Packable != nil && r.Packable(ss.plan.Method, ss.plan.Arch.Settings) {
		return r.Config.Pack
	}
	return 1
}

func (r *Runner) progress(rs *runState) {
	if r.Progress == nil {
		return
	}
	rs.mu.Lock()
	done, total := 0, 0
	for _, ss := range rs.studies {
		done += min(ss.finished, r.budget(ss))
		total += r.budget(ss)
	}
	running := make([]string, 0, len(rs.running))
	for _, l := range rs.running {
		running = append(running, l)
	}
	rs.mu.Unlock()
	sort.Strings(running)
	rs.progressMu.Lock()
	defer rs.progressMu.Unlock()
	r.Progress(done, total, running)
}

func (r *Runner) logf(format string, args ...any) {
	if r.Log != nil {
		fmt.Fprintf(r.Log, "sweep: "+format+"\n", args...)
	}
}

// reapDead fails the study's RUNNING trials whose process is gone (after
// recording any result such a process journalled) and queues their
// retries; not within a heartbeat grace of this process's own pause or
// outage, when every heartbeat looks old.
func (r *Runner) reapDead(ctx context.Context, rs *runState, ss *studyState) error {
	cfg := r.Config
	if back := rs.awake.backSince(r.Storage); !back.IsZero() && time.Since(back) < cfg.HeartbeatGrace {
		return nil
	}
	// A dead process's journalled result is recorded, not reaped.
	if err := r.replayRunning(ctx, ss); err != nil {
		return err
	}
	stale, err := r.Storage.FailStaleTrials(ctx, ss.study.ID, cfg.HeartbeatGrace)
	if err != nil || len(stale) == 0 {
		return err
	}
	all, err := r.Storage.Trials(ctx, ss.study.ID)
	if err != nil {
		return err
	}
	retried := retriedNumbers(all)
	for _, t := range stale {
		r.logf("%s#%d lost its process (no heartbeat for %v): FAIL", ss.plan.Name, t.Number, cfg.HeartbeatGrace)
		rs.mu.Lock()
		rs.result.States[storage.Fail]++
		rs.result.Reaped++
		rs.mu.Unlock()
		t.State = storage.Fail
		if retried[t.Number] {
			continue // its process enqueued the retry, then died before recording the FAIL
		}
		dir := r.trialDir(ss, t)
		if _, err := os.Stat(filepath.Join(dir, trial.PrunedName)); err == nil {
			// The pruner had stopped it; its process died before saying so.
			r.logf("%s#%d had been pruned: not retried", ss.plan.Name, t.Number)
			r.dropCheckpoints(ss, t)
			continue
		}
		// A trial that left a checkpoint beyond the one it was given
		// trained further than its lineage had: retrying it is free, as
		// for an interruption (each free retry is further on, so there are
		// finitely many). One that did not counts.
		progressed := trial.CheckpointProgressed(filepath.Join(dir, trial.CheckpointName))
		queued, err := r.retry(ctx, ss, t, !progressed)
		if err != nil {
			return err
		}
		if !queued {
			r.dropCheckpoints(ss, t)
		}
	}
	return nil
}

// runTrials is the life of one trial process: reap stale trials, create
// (or claim) n trials (n > 1: a pack), sample their parameters, run them
// under a heartbeat, record each outcome, enqueue retries of failures, log
// a line per trial. It returns the states of the trials it finished, or
// storage.ErrStudyFull when the study has no room for a trial.
func (r *Runner) runTrials(ctx context.Context, rs *runState, ss *studyState, slot, n int) ([]storage.TrialState, error) {
	cfg := r.Config
	if err := r.reapDead(ctx, rs, ss); err != nil {
		return nil, err
	}

	var states []storage.TrialState
	var members []storage.FrozenTrial
	space := r.space(ss)
	for len(members)+len(states) < n {
		t, err := r.Storage.CreateTrial(ctx, ss.study.ID, storage.TrialOptions{
			State: storage.Running, Budget: r.budget(ss), Heartbeat: true, ClaimWaiting: true,
		})
		if errors.Is(err, storage.ErrStudyFull) && len(members)+len(states) > 0 {
			break // the pack is smaller than asked
		}
		if err != nil {
			return states, err
		}
		// The trials of a pack are sampled one after the other, each
		// seeing the earlier ones as running (the constant liar).
		trials, err := r.Storage.Trials(ctx, ss.study.ID)
		if err != nil {
			return states, err
		}
		params, err := r.params(ss.study, trials, t, space)
		if err != nil {
			st, err := r.finish(ctx, ss, t, outcome{state: storage.Fail, reason: err.Error()}, 0)
			if err != nil {
				return states, err
			}
			states = append(states, st)
			continue
		}
		if err := r.Storage.UpdateTrial(ctx, t.ID, storage.TrialUpdate{Params: params, Distributions: space, UserAttrs: r.Where}); err != nil {
			return states, err
		}
		t.Params, t.Distributions = params, space
		members = append(members, t)
	}
	if len(members) == 0 {
		return states, nil
	}

	labels := make([]string, len(members))
	rs.mu.Lock()
	for i, t := range members {
		labels[i] = fmt.Sprintf("%s#%d", ss.plan.Name, t.Number)
		rs.running[t.ID] = labels[i]
	}
	rs.mu.Unlock()
	start := time.Now()
	for _, t := range members {
		r.setRunning(t.ID, start, true)
	}
	defer func() {
		for _, t := range members {
			r.setRunning(t.ID, start, false)
		}
	}()
	at := func(step int) string { return fmt.Sprintf("epoch %d", step+1) }
	if e, ok := cfg.Training["max_epochs"].(int); ok {
		at = func(step int) string { return fmt.Sprintf("epoch %d/%d", step+1, e) }
	}
	if cfg.ReportsSteps() {
		at = func(step int) string { return fmt.Sprintf("step %d", step) }
	}
	// A packed trial that is pruned or finishes while the rest of its pack
	// goes on is recorded then, not when the pack's process ends: its
	// state, value and duration are right for readers of the study
	// meanwhile (and for TPE in parallel workers).
	var finishErr error
	ended := func(i int, out outcome) {
		rs.mu.Lock()
		delete(rs.running, members[i].ID)
		rs.mu.Unlock()
		r.setRunning(members[i].ID, start, false)
		r.progress(rs)
		st, err := r.finish(ctx, ss, members[i], out, time.Since(start))
		if err != nil {
			if finishErr == nil {
				finishErr = err
			}
			return
		}
		states = append(states, st)
	}
	outs := r.spawn(ctx, ss, members, slot, func(i, step int) {
		rs.mu.Lock()
		rs.running[members[i].ID] = labels[i] + " " + at(step)
		rs.mu.Unlock()
		r.progress(rs)
	}, ended)
	rs.mu.Lock()
	for _, t := range members {
		delete(rs.running, t.ID)
	}
	rs.mu.Unlock()
	if finishErr != nil {
		return states, finishErr
	}
	for i, t := range members {
		if outs[i].recorded {
			continue
		}
		if outs[i].lost {
			r.logf("%s was failed by another process (stale heartbeat); dropped", labels[i])
			states = append(states, storage.Fail)
			continue
		}
		st, err := r.finish(ctx, ss, t, outs[i], time.Since(start))
		if err != nil {
			return states, err
		}
		states = append(states, st)
	}
	return states, nil
}

// params returns the trial's internal parameter values: the fixed ones of
// an enqueued (retried) trial, the sampler's suggestion for the rest.
func (r *Runner) params(study storage.Study, trials []storage.FrozenTrial, t storage.FrozenTrial, space map[string]storage.Distribution) (map[string]float64, error) {
	out := map[string]float64{}
	fixed, _ := t.SystemAttrs["fixed_params"].(map[string]any)
	for name, v := range fixed {
		d, ok := space[name]
		if !ok {
			continue
		}
		iv, err := d.ToInternal(v)
		if err != nil || !d.Contains(iv) {
			return nil, fmt.Errorf("fixed param %s=%v does not fit the search space", name, v)
		}
		out[name] = iv
	}
	if len(out) == len(space) {
		return out, nil
	}
	if f, ok := r.Pruner.(samplingFilter); ok {
		trials = f.SamplerTrials(study, trials, t.Number)
	}
	sampled, err := r.Sampler.Sample(study, trials, t.Number, space)
	if err != nil {
		return nil, fmt.Errorf("sample parameters: %w", err)
	}
	for name, v := range sampled {
		if _, ok := out[name]; !ok {
			out[name] = v
		}
	}
	return out, nil
}

type outcome struct {
	state      storage.TrialState
	value      *float64
	attrs      map[string]any
	reason     string // why it failed
	stderrTail string
	lost       bool // another process failed the trial (stale heartbeat)
	recorded   bool // spawn's ended already recorded it (a pack went on without it)
	retry      bool // interrupted: rerun it whatever the retry count
	// unsaved are intermediate values the database did not take when
	// reported (it was away for longer than storage_retry): they go in
	// with the outcome.
	unsaved map[int]float64
}

// finish records the outcome of trial t and logs it.
func (r *Runner) finish(ctx context.Context, ss *studyState, t storage.FrozenTrial, out outcome, took time.Duration) (storage.TrialState, error) {
	u := storage.TrialUpdate{State: &out.state, Value: out.value, UserAttrs: out.attrs}
	if out.state == storage.Fail {
		u.UserAttrs = map[string]any{"fail_reason": out.reason}
		if out.stderrTail != "" {
			u.UserAttrs["stderr_tail"] = out.stderrTail
		}
	}
	// Record even when the sweep is being interrupted: the result exists.
	// Not for long then, though: the journal keeps it for the next run.
	wctx := context.WithoutCancel(ctx)
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(wctx, max(r.Config.KillGrace, 5*time.Second))
		defer cancel()
	}
	retried := false
	if out.state == storage.Fail {
		// The retry goes in before the FAIL: a process killed between the
		// two (a Slurm job's SIGKILL reaches the trial first) leaves a
		// RUNNING trial that a live process reaps without enqueuing it
		// again, not a FAIL trial that nobody retries.
		var err error
		if retried, err = r.queueRetry(wctx, ss, t, !out.retry); err != nil {
			return 0, err
		}
	}
	if len(out.unsaved) > 0 {
		u.Intermediate = out.unsaved
	}
	jpath := filepath.Join(r.trialDir(ss, t), journalName)
	if err := writeJournal(jpath, newJournal(ss.plan.Name, t, u)); err != nil {
		r.logf("%s#%d: its result journal was not written (%v); the result goes to the database alone", ss.plan.Name, t.Number, err)
		jpath = ""
	}
	if err := r.Storage.UpdateTrial(wctx, t.ID, u); err != nil {
		if !errors.Is(err, storage.ErrTrialFinished) {
			if jpath != "" {
				// Said here too: with trials at once, the run's error names
				// only the first of them.
				r.logf("%s#%d %s: not recorded (the database does not answer); kept in %s for the next run", ss.plan.Name, t.Number, out.state, jpath)
				return 0, fmt.Errorf("%w (the result of %s#%d is kept in %s, and recorded by the next run)", err, ss.plan.Name, t.Number, jpath)
			}
			return 0, err
		}
		// Recorded meanwhile: from the journal, by another process
		// that found it while the database was away, or failed by one
		// that took it for dead.
		got, ok := r.storedState(wctx, ss, t)
		if !ok {
			return 0, fmt.Errorf("%s#%d: recorded meanwhile, but its state cannot be read (its result stays in %s): %w", ss.plan.Name, t.Number, jpath, err)
		}
		if got != out.state {
			kept := "lost (its journal could not be written)"
			if jpath != "" {
				aside := filepath.Join(filepath.Dir(jpath), unappliedName)
				os.Rename(jpath, aside)
				kept = "kept in " + aside
			}
			r.logf("%s#%d was failed by another process (stale heartbeat) before its %s result was recorded; the result is %s", ss.plan.Name, t.Number, out.state, kept)
			return storage.Fail, nil
		}
	}
	if jpath != "" {
		os.Remove(jpath)
	}
	if !retried {
		r.dropCheckpoints(ss, t)
	}
	t.State = out.state
	line := fmt.Sprintf("%s#%d %s", ss.plan.Name, t.Number, out.state)
	if out.value != nil {
		line += fmt.Sprintf(" %.4f", *out.value)
	}
	ext := t.ExternalParams() // a categorical by its choice, not its index
	for _, name := range slices.Sorted(maps.Keys(ext)) {
		if f, ok := ext[name].(float64); ok {
			line += fmt.Sprintf(" %s=%.3g", name, f)
		} else {
			line += fmt.Sprintf(" %s=%v", name, ext[name])
		}
	}
	line += fmt.Sprintf(" (%.1fs)", took.Seconds())
	if out.state == storage.Fail {
		line += ": " + Printable(out.reason)
	}
	r.logf("%s", line)
	if retried {
		r.logf("%s#%d will be retried with the same parameters", ss.plan.Name, t.Number)
	}
	return out.state, nil
}

// command is Command, or "sweep run" when unset.
func (r *Runner) command() string {
	if r.Command == "" {
		return "sweep run"
	}
	return r.Command
}

// storedState is trial t's state as the database holds it now.
func (r *Runner) storedState(ctx context.Context, ss *studyState, t storage.FrozenTrial) (storage.TrialState, bool) {
	trials, err := r.Storage.Trials(ctx, ss.study.ID)
	if err != nil {
		return 0, false
	}
	for _, other := range trials {
		if other.ID == t.ID {
			return other.State, true
		}
	}
	return 0, false
}

// retry enqueues a WAITING copy of failed trial t, unless it has used its
// MaxRetries, says so, and reports whether it did. Retries of interrupted
// trials (counted false) are free.
func (r *Runner) retry(ctx context.Context, ss *studyState, t storage.FrozenTrial, counted bool) (bool, error) {
	retried, err := r.queueRetry(ctx, ss, t, counted)
	if retried {
		r.logf("%s#%d will be retried with the same parameters", ss.plan.Name, t.Number)
	}
	return retried, err
}

// queueRetry is retry without the log line: it reports whether it
// enqueued one.
func (r *Runner) queueRetry(ctx context.Context, ss *studyState, t storage.FrozenTrial, counted bool) (bool, error) {
	if counted && retriesUsed(t) >= r.Config.MaxRetries {
		return false, nil
	}
	if err := enqueueRetry(ctx, r.Storage, ss.study.ID, t, counted); err != nil {
		return false, err
	}
	return true, nil
}

// retriedNumbers is the set of trial numbers that some trial of trials
// retries: every number in a retry history.
func retriedNumbers(trials []storage.FrozenTrial) map[int]bool {
	retried := map[int]bool{}
	for _, t := range trials {
		for _, n := range retryHistory(t) {
			retried[n] = true
		}
	}
	return retried
}

// retryHistory lists the trials t retries, the first first.
func retryHistory(t storage.FrozenTrial) []int {
	h, _ := t.SystemAttrs["retry_history"].([]any)
	var out []int
	for _, n := range h {
		switch n := n.(type) {
		case float64: // as stored
			out = append(out, int(n))
		case int:
			out = append(out, n)
		}
	}
	return out
}

// retriesUsed counts the counted retries in t's lineage.
func retriesUsed(t storage.FrozenTrial) int {
	h, _ := t.SystemAttrs["retry_history"].([]any)
	free, _ := t.SystemAttrs["free_retries"].(float64)
	return len(h) - int(free)
}

// enqueueRetry adds a WAITING copy of failed trial t with its parameters
// and its lineage, as Optuna's RetryFailedTrialCallback does
// (fixed_params, failed_trial, retry_history).
func enqueueRetry(ctx context.Context, s storage.Storage, studyID int64, t storage.FrozenTrial, counted bool) error {
	history, _ := t.SystemAttrs["retry_history"].([]any)
	history = append(append([]any{}, history...), t.Number)
	free, _ := t.SystemAttrs["free_retries"].(float64)
	if !counted {
		free++
	}
	first := t.Number
	if f, ok := t.SystemAttrs["failed_trial"].(float64); ok {
		first = int(f)
	}
	_, err := s.CreateTrial(ctx, studyID, storage.TrialOptions{
		State: storage.Waiting,
		SystemAttrs: map[string]any{
			"fixed_params":  t.ExternalParams(),
			"failed_trial":  first,
			"retry_history": history,
			"free_retries":  free,
		},
	})
	return err
}

// Retry enqueues again every FAIL trial of the study that has no retry yet,
// whatever its retry count (the user asked), and returns how many.
func Retry(ctx context.Context, s storage.Storage, st storage.Study) (int, error) {
	trials, err := s.Trials(ctx, st.ID)
	if err != nil {
		return 0, err
	}
	retried := retriedNumbers(trials)
	n := 0
	for _, t := range trials {
		if t.State != storage.Fail || retried[t.Number] {
			continue
		}
		if err := enqueueRetry(ctx, s, st.ID, t, true); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// epoch records trial t's epoch line m as an intermediate value and asks
// the pruner; it reports whether the line came after the trial was pruned
// or lost (and was ignored). It sets *lost or *pruned under mu.
func (r *Runner) epoch(ctx context.Context, ss *studyState, t storage.FrozenTrial, m trial.Message, mu *sync.Mutex, lost, pruned *bool, unsaved map[int]float64) bool {
	mu.Lock()
	stop := *pruned || *lost
	mu.Unlock()
	if stop {
		return true
	}
	// Values the database did not take before go in with this one.
	values := map[int]float64{m.Step: float64(m.Value)}
	for step, v := range unsaved {
		values[step] = v
	}
	if err := r.Storage.UpdateTrial(ctx, t.ID, storage.TrialUpdate{Intermediate: values}); err != nil {
		if errors.Is(err, storage.ErrTrialFinished) {
			mu.Lock()
			*lost = true
			mu.Unlock()
			return false
		}
		if len(unsaved) == 0 {
			r.logf("%s#%d: %s value not recorded yet (%v); it is kept and recorded with the next one or the result", ss.plan.Name, t.Number, m.Type, err)
		}
		unsaved[m.Step] = float64(m.Value)
		return false
	}
	clear(unsaved)
	if r.Pruner == nil {
		return false
	}
	ss.checking.Lock()
	defer ss.checking.Unlock()
	trials, err := r.Storage.Trials(ctx, ss.study.ID)
	if err != nil {
		return false
	}
	for _, other := range trials {
		if other.ID != t.ID {
			continue
		}
		stop, record := r.Pruner.Prune(ss.study, trials, other)
		if len(record) > 0 {
			// Unrecorded, the rungs are judged again at the next check,
			// as for a trial Optuna never checked: worse pruning, no harm.
			if err := r.Storage.UpdateTrial(ctx, t.ID, storage.TrialUpdate{SystemAttrs: record}); err != nil {
				r.logf("%s trial %d: its rung values were not recorded: %v", ss.study.Name, t.Number, err)
			}
		}
		if stop {
			mu.Lock()
			*pruned = true
			mu.Unlock()
		}
	}
	return false
}

// packLog writes a trial process's standard error to its members' logs:
// a line beginning "[#N] " to trial N's alone (without the tag), any other
// line to every member's.
type packLog struct {
	index   map[int]int
	to      []io.Writer
	mu      sync.Mutex
	partial []byte
}

func (l *packLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		nl := bytes.IndexByte(l.partial, '\n')
		if nl < 0 {
			break
		}
		l.line(l.partial[:nl+1])
		l.partial = l.partial[nl+1:]
	}
	return len(p), nil
}

// flush writes a last line without a newline.
func (l *packLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.line(append(l.partial, '\n'))
		l.partial = nil
	}
}

func (l *packLog) line(b []byte) {
	if len(l.to) > 1 && bytes.HasPrefix(b, []byte("[#")) {
		if end := bytes.Index(b, []byte("] ")); end > 2 {
			if n, err := strconv.Atoi(string(b[2:end])); err == nil {
				if i, ok := l.index[n]; ok {
					l.to[i].Write(b[end+2:])
					return
				}
			}
		}
	}
	for _, w := range l.to {
		w.Write(b)
	}
}

// argv expands the command template, or runs this executable's `trial`.
func (r *Runner) argv(spec trial.Spec, specPath string) ([]string, error) {
	if len(r.Config.Command) == 0 {
		exe := r.Executable
		if exe == "" {
			var err error
			if exe, err = os.Executable(); err != nil {
				return nil, fmt.Errorf("find the sweep executable: %w", err)
			}
		}
		return []string{exe, "trial"}, nil
	}
	vars := map[string]string{
		"trial_id": strconv.FormatInt(spec.TrialID, 10), "number": strconv.Itoa(spec.Number),
		"study": spec.Study, "method": spec.Method, "arch": spec.ArchName, "dataset": spec.Dataset,
		"seed": strconv.FormatInt(spec.Seed, 10), "spec": specPath, "output_dir": spec.OutputDir,
		"model": spec.Model, "data_dir": spec.DataDir, "resume_from": spec.ResumeFrom,
	}
	for k, v := range spec.Arch {
		vars[k] = fmt.Sprint(v)
	}
	for k, v := range spec.Params {
		if f, ok := v.(float64); ok {
			vars[k] = strconv.FormatFloat(f, 'g', -1, 64)
		} else {
			vars[k] = fmt.Sprint(v)
		}
	}
	out := make([]string, len(r.Config.Command))
	for i, arg := range r.Config.Command {
		var unknown string
		out[i] = placeholder.ReplaceAllStringFunc(arg, func(m string) string {
			v, ok := vars[m[1:len(m)-1]]
			if !ok && unknown == "" {
				unknown = m
			}
			return v
		})
		if unknown != "" {
			return nil, fmt.Errorf("command[%d] %q: unknown placeholder %s", i, arg, unknown)
		}
	}
	return out, nil
}

// placeholder matches {name} in command templates; other braces (JSON in an
// argument, say) are left alone.
var placeholder = regexp.MustCompile(`\{[A-Za-z_][A-Za-z0-9_]*\}`)

// fixedPlaceholders are the command placeholders every trial defines,
// besides its parameters and architecture settings.
var fixedPlaceholders = []string{"trial_id", "number", "study", "method", "arch", "dataset", "seed", "spec", "output_dir", "model", "data_dir", "resume_from"}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
	// oom: the stream said it ran out of memory somewhere, maybe far above
	// the tail (a Go runtime's "fatal error: out of memory" comes before
	// its goroutine dump).
	oom bool
}

var outOfMemory = regexp.MustCompile(`(?i)out of memory|cannot allocate memory|MemoryError`)

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	// The phrase may straddle two writes: look at it with the tail's end.
	seam := t.buf[max(0, len(t.buf)-32):]
	t.oom = t.oom || outOfMemory.Match(append(append([]byte(nil), seam...), p...))
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

// OOM reports whether the stream said it ran out of memory.
func (t *tailBuffer) OOM() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.oom
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

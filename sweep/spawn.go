package sweep

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/readsweep/readsweep/sweep/storage"
	"github.com/readsweep/readsweep/trial"
)

// spawn runs one trial process for members (more than one: a pack) and
// turns what it reports into an outcome per member; onEpoch(i, step) is
// called after member i reports an epoch, for progress display. A packed
// member that is pruned, or reports its final line, while its process
// runs on is handed to ended at once (its outcome is then marked
// recorded).
func (r *Runner) spawn(ctx context.Context, ss *studyState, members []storage.FrozenTrial, slot int, onEpoch func(i, step int), ended func(i int, out outcome)) []outcome {
	p := newTrialProc(r, ss, members, onEpoch, ended)
	spec := r.trialSpec(ss, members)
	specJSON, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return p.failAll("encode spec: %v", err)
	}
	specPath, stderr, closeLogs, err := p.openFiles(specJSON)
	defer closeLogs()
	if err != nil {
		return p.failAll("%v", err)
	}
	argv, err := r.argv(spec, specPath)
	if err != nil {
		return p.failAll("%v", err)
	}
	stdin, closePipe, err := p.openStdin(specJSON)
	defer closePipe()
	if err != nil {
		return p.failAll("verdict pipe: %v", err)
	}

	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p.cancel = cancel
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		p.heartbeat(tctx)
	}()
	// A pack's time limit grows with its trials.
	p.wd = startWatchdog(r.Config.TrialTimeout*time.Duration(len(members)), r.Config.StallTimeout, cancel)
	defer p.wd.close()

	out, pw := io.Pipe()
	runErr := make(chan error, 1)
	run := r.Exec
	if run == nil {
		run = ExecProc
	}
	go func() {
		err := run(tctx, Proc{
			Argv: argv, Env: r.procEnv(specPath, slot), Stdin: stdin,
			Stdout: pw, Stderr: stderr, KillGrace: r.Config.KillGrace, KillNow: r.KillNow,
			MemoryBytes: int64(r.Config.TrialMemoryGB * (1 << 30)),
		})
		stderr.flush()
		pw.Close()
		runErr <- err
	}()
	p.readMessages(tctx, out)
	io.Copy(io.Discard, out) // unblock the writer after a scan error
	err = <-runErr
	cancel()
	<-hbDone
	return p.outcomes(ctx, err)
}

// trialDir is trial t's output folder.
func (r *Runner) trialDir(ss *studyState, t storage.FrozenTrial) string {
	return filepath.Join(r.Config.OutputDir, filepath.FromSlash(ss.plan.Name), "trial-"+strconv.Itoa(t.Number))
}

// trialSpec is what the process for members is told to run.
func (r *Runner) trialSpec(ss *studyState, members []storage.FrozenTrial) trial.Spec {
	cfg := r.Config
	t0 := members[0]
	spec := trial.Spec{
		Version: trial.Version, TrialID: t0.ID, Number: t0.Number, Study: ss.plan.Name,
		Method: ss.plan.Method, Arch: ss.plan.Arch.Settings, ArchName: ss.plan.Arch.Name, Dataset: ss.plan.Dataset,
		Params: t0.ExternalParams(), Seed: cfg.Seed, Training: cfg.Training, Trainer: cfg.Trainer, Device: cfg.Device,
		Model: cfg.Model, DataDir: cfg.DataDir, OutputDir: r.trialDir(ss, t0),
	}
	if spec.Arch == nil {
		spec.Arch = map[string]any{}
	}
	if _, set := cfg.Training["latency_examples"]; !set && !Identify(ss.study).Final {
		// Table 1's inference time comes from the final runs: a search
		// trial does not spend a second or more timing single examples,
		// unless the sweep file asks for it.
		spec.Training = maps.Clone(cfg.Training)
		if spec.Training == nil {
			spec.Training = map[string]any{}
		}
		spec.Training["latency_examples"] = 0
	}
	if _, set := cfg.Training["save_model"]; !set && Identify(ss.study).Final && cfg.Trainer != "synthetic" {
		// A final run's model is the one Table 1 scores: keep it
		// (docs/models.md), unless the sweep file says otherwise.
		spec.Training = maps.Clone(spec.Training)
		if spec.Training == nil {
			spec.Training = map[string]any{}
		}
		spec.Training["save_model"] = "best"
	}
	if seed, ok := spec.Params["seed"].(int64); ok {
		spec.Seed = seed // final runs search over seeds
	}
	spec.ResumeFrom = r.checkpointOf(ss, t0)
	if len(members) > 1 {
		for _, t := range members {
			spec.Pack = append(spec.Pack, trial.Member{TrialID: t.ID, Number: t.Number, Params: t.ExternalParams(), OutputDir: r.trialDir(ss, t),
				ResumeFrom: r.checkpointOf(ss, t)})
		}
	}
	return spec
}

// checkpointOf is the checkpoint a retried trial t resumes: the newest
// its lineage left (the trials it retries, the latest first); "" for
// none. A checkpoint is in its trial's folder, so workers on other
// machines find it when output_dir is on a shared filesystem.
func (r *Runner) checkpointOf(ss *studyState, t storage.FrozenTrial) string {
	for _, n := range slices.Backward(retryHistory(t)) {
		path := filepath.Join(r.trialDir(ss, storage.FrozenTrial{Number: n}), trial.CheckpointName)
		if _, err := os.Stat(path); err == nil {
			return path
		}
	}
	return ""
}

// dropCheckpoints removes trial t's checkpoint and its lineage's, and the
// pruning mark: once t is recorded and not retried, nobody resumes them.
func (r *Runner) dropCheckpoints(ss *studyState, t storage.FrozenTrial) {
	dir := r.trialDir(ss, t)
	os.Remove(filepath.Join(dir, trial.PrunedName))
	for _, n := range append(retryHistory(t), t.Number) {
		d := r.trialDir(ss, storage.FrozenTrial{Number: n})
		os.Remove(filepath.Join(d, trial.CheckpointName))
		trial.RemoveCheckpointTemps(d)
	}
}

// procEnv is the trial process's environment beyond the orchestrator's:
// where its spec is, and the GPU of its slot.
func (r *Runner) procEnv(specPath string, slot int) []string {
	absSpec, _ := filepath.Abs(specPath)
	env := []string{trial.SpecEnv + "=" + absSpec}
	if gpus := r.Config.GPUs; len(gpus) > 0 {
		env = append(env, "CUDA_VISIBLE_DEVICES="+gpus[slot%len(gpus)])
	}
	return env
}

// trialProc is one trial process as spawn follows it: its members, what
// each has reported, and whether another process or the pruner ended it.
type trialProc struct {
	r       *Runner
	ss      *studyState
	members []storage.FrozenTrial
	packed  bool
	index   map[int]int // trial number → member
	onEpoch func(i, step int)
	ended   func(i int, out outcome)

	tails    []*tailBuffer // each member's stderr tail, for its fail reason
	verdicts *os.File      // a pack's answers to its epoch lines
	cancel   context.CancelFunc
	wd       *watchdog

	mu                     sync.Mutex // guards lost, pruned, recorded
	lost, pruned, recorded []bool

	finals       []*trial.Message
	reported     []map[int]bool // the steps each member has reported
	lastValue    []float64
	hasLast      []bool
	unsaved      []map[int]float64 // each member's intermediate values not yet in the database
	protoErr     error             // the first line that broke the protocol
	skippedLines int               // stdout lines over maxProtocolLine, not read
}

func newTrialProc(r *Runner, ss *studyState, members []storage.FrozenTrial, onEpoch func(i, step int), ended func(i int, out outcome)) *trialProc {
	n := len(members)
	p := &trialProc{r: r, ss: ss, members: members, packed: n > 1, index: map[int]int{}, onEpoch: onEpoch, ended: ended,
		tails: make([]*tailBuffer, n), lost: make([]bool, n), pruned: make([]bool, n), recorded: make([]bool, n),
		finals: make([]*trial.Message, n), reported: make([]map[int]bool, n), lastValue: make([]float64, n), hasLast: make([]bool, n),
		unsaved: make([]map[int]float64, n)}
	for i, t := range members {
		p.index[t.Number] = i
		p.reported[i] = map[int]bool{}
		p.unsaved[i] = map[int]float64{}
	}
	return p
}

// failAll fails every member with the same reason, before the process ran.
func (p *trialProc) failAll(format string, args ...any) []outcome {
	outs := make([]outcome, len(p.members))
	for i := range outs {
		outs[i] = outcome{state: storage.Fail, reason: fmt.Sprintf(format, args...)}
	}
	return outs
}

// openFiles gives each member its directory with the spec and its own
// log: the lines the process tags [#N] go to trial N's log, the rest to
// all. It returns the first member's spec path, the process's stderr and
// a function that closes the logs (to call in every case).
func (p *trialProc) openFiles(specJSON []byte) (specPath string, stderr *packLog, closeLogs func(), err error) {
	var files []*os.File
	closeLogs = func() {
		for _, f := range files {
			f.Close()
		}
	}
	logs := make([]io.Writer, len(p.members))
	for i, t := range p.members {
		dir := p.r.trialDir(p.ss, t)
		if err := p.moveAsideEarlier(dir); err != nil {
			return "", nil, closeLogs, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", nil, closeLogs, fmt.Errorf("make output dir: %v", err)
		}
		path := filepath.Join(dir, "spec.json")
		if err := os.WriteFile(path, specJSON, 0o644); err != nil {
			return "", nil, closeLogs, fmt.Errorf("write spec: %v", err)
		}
		if i == 0 {
			specPath = path
		}
		f, err := os.Create(filepath.Join(dir, "stderr.log"))
		if err != nil {
			return "", nil, closeLogs, fmt.Errorf("create log: %v", err)
		}
		files = append(files, f)
		p.tails[i] = &tailBuffer{max: 4096}
		logs[i] = io.MultiWriter(f, p.tails[i])
	}
	return specPath, &packLog{index: p.index, to: logs}, closeLogs, nil
}

// moveAsideEarlier renames a trial folder that already holds a spec: a
// trial number runs once in a database, so the folder is an earlier
// database's (one deleted and made anew with the same output_dir), whose
// logs must not be overwritten.
func (p *trialProc) moveAsideEarlier(dir string) error {
	if _, err := os.Stat(filepath.Join(dir, "spec.json")); err != nil {
		return nil
	}
	aside := dir + ".earlier-" + time.Now().Format("20060102-150405.000")
	if err := os.Rename(dir, aside); err != nil {
		return fmt.Errorf("move aside an earlier run's %s: %v", dir, err)
	}
	p.r.logf("%s: held an earlier run's trial (another database); moved to %s", dir, filepath.Base(aside))
	return nil
}

// openStdin is the process's standard input. An unpacked trial gets its
// spec on stdin as well; a pack reads its spec from the file and gets a
// verdict per epoch line on stdin, written to p.verdicts.
func (p *trialProc) openStdin(specJSON []byte) (io.Reader, func(), error) {
	if !p.packed {
		return strings.NewReader(string(specJSON)), func() {}, nil
	}
	// An OS pipe the child inherits: with an io.Pipe, exec's copying
	// goroutine would hold Wait until the orchestrator closed it.
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, func() {}, err
	}
	p.verdicts = wr
	return rd, func() { rd.Close(); wr.Close() }, nil
}

// allLost: no member is left to run, and another process failed some
// (the rest were recorded). The caller holds p.mu.
func (p *trialProc) allLost() bool {
	some := false
	for i, l := range p.lost {
		if !l && !p.recorded[i] {
			return false
		}
		some = some || l
	}
	return some
}

// record hands member i's outcome to ended while its process runs on.
func (p *trialProc) record(i int, out outcome) {
	out.unsaved = p.unsaved[i]
	p.mu.Lock()
	p.recorded[i] = true
	p.mu.Unlock()
	p.ended(i, out)
}

// heartbeat proves, every HeartbeatInterval until ctx ends, that the
// members are alive; it stops the process once someone else failed all
// of them.
func (p *trialProc) heartbeat(ctx context.Context) {
	tick := time.NewTicker(p.r.Config.HeartbeatInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			for i, t := range p.members {
				p.mu.Lock()
				done := p.recorded[i]
				p.mu.Unlock()
				if done {
					continue
				}
				err := p.r.Storage.UpdateTrial(ctx, t.ID, storage.TrialUpdate{Heartbeat: true})
				if errors.Is(err, storage.ErrTrialFinished) {
					p.mu.Lock()
					// Not if this process recorded it since the check.
					p.lost[i] = p.lost[i] || !p.recorded[i]
					p.mu.Unlock()
				}
			}
			p.mu.Lock()
			gone := p.allLost()
			p.mu.Unlock()
			if gone {
				p.cancel()
				return
			}
		}
	}
}

// prunedValue is a pruned trial's value: its last reported one.
func (p *trialProc) prunedValue(i int) *float64 {
	if p.hasLast[i] && !math.IsNaN(p.lastValue[i]) {
		return &p.lastValue[i]
	}
	return nil
}

// maxProtocolLine is the longest stdout line read as a protocol line; a
// longer one is skipped with a warning, and the lines after it are read
// as usual.
const maxProtocolLine = 16 << 20

// readMessages follows the process's protocol lines until its stdout
// ends: heartbeats feed the watchdog, epoch lines the study and the
// pruner, final lines the outcome.
func (p *trialProc) readMessages(ctx context.Context, out io.Reader) {
	rd := bufio.NewReaderSize(out, 64*1024)
	for {
		line, skipped, err := readLine(rd, maxProtocolLine)
		if skipped > 0 {
			p.skippedLines++
			p.r.logf("%s#%d: skipped a stdout line of %d bytes (over %d MiB); reading on", p.ss.plan.Name, p.members[0].Number, skipped, maxProtocolLine>>20)
		}
		if len(line) > 0 {
			p.line(ctx, line)
		}
		if err != nil {
			return
		}
	}
}

// readLine reads one line of at most max bytes, without its line ending
// ("\n", "\r\n", or none at the end of the stream). A longer line is read
// to its end and dropped: skipped is its length.
func readLine(rd *bufio.Reader, max int) (line []byte, skipped int, err error) {
	for {
		chunk, err := rd.ReadSlice('\n')
		// max + 2 leaves room for the ending, cut below.
		if skipped == 0 && len(line)+len(chunk) <= max+2 {
			line = append(line, chunk...)
		} else {
			skipped += len(line) + len(chunk)
			line = nil
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if skipped == 0 && len(line) > max {
			skipped = len(line)
		}
		if skipped > 0 {
			return nil, skipped, err
		}
		return line, 0, err
	}
}

// line handles one protocol line of the process.
func (p *trialProc) line(ctx context.Context, b []byte) {
	m, err := trial.ParseMessage(b)
	if errors.Is(err, trial.ErrNotMessage) {
		return
	}
	if err != nil {
		if p.protoErr == nil {
			p.protoErr = err
		}
		return
	}
	if m.Type == trial.TypeHeartbeat {
		p.wd.heard("a heartbeat")
		return
	}
	i := 0
	if p.packed {
		var ok bool
		if m.Trial != nil {
			i, ok = p.index[*m.Trial]
		}
		if !ok {
			if p.protoErr == nil {
				p.protoErr = fmt.Errorf("trial: a pack's %q line names no trial of the pack", m.Type)
			}
			return
		}
	}
	switch m.Type {
	case trial.TypeFinal:
		p.final(i, m)
	case trial.TypeResumed:
		p.resumed(ctx, i, m)
	default:
		p.epochLine(ctx, i, m)
	}
}

// resumed copies the intermediate values member i's predecessor reported
// before its checkpoint into member i, so the study and the pruner see one
// curve, and says where it resumed (user attribute resumed_from).
func (p *trialProc) resumed(ctx context.Context, i int, m trial.Message) {
	p.wd.heard("the resumed line")
	t := p.members[i]
	var values []trial.Reported
	raw, _ := json.Marshal(m.Attrs["values"])
	if err := json.Unmarshal(raw, &values); err != nil {
		if p.protoErr == nil {
			p.protoErr = fmt.Errorf("trial: a resumed line's values: %w", err)
		}
		return
	}
	from, _ := m.Attrs["from_trial"].(float64)
	where := fmt.Sprintf("%d at step %d", int(from), m.Step)
	u := storage.TrialUpdate{Intermediate: map[int]float64{}, UserAttrs: map[string]any{"resumed_from": where}}
	for _, v := range values {
		if v.Step < 0 {
			continue // Optuna refuses a negative step
		}
		u.Intermediate[v.Step] = float64(v.Value)
		p.reported[i][v.Step] = true
		p.lastValue[i], p.hasLast[i] = float64(v.Value), true
	}
	p.r.logf("%s#%d resumes from #%d's checkpoint at step %d (%d values reported before it)", p.ss.plan.Name, t.Number, int(from), m.Step, len(values))
	if err := p.r.Storage.UpdateTrial(ctx, t.ID, u); err != nil && !errors.Is(err, storage.ErrTrialFinished) {
		// The values go in with the next one, or with the result.
		maps.Copy(p.unsaved[i], u.Intermediate)
	}
}

// final keeps member i's final line; a packed member that finished is
// recorded at once.
func (p *trialProc) final(i int, m trial.Message) {
	p.wd.heard("the final line")
	p.finals[i] = &m
	p.mu.Lock()
	over := p.lost[i] || p.pruned[i] || p.recorded[i]
	p.mu.Unlock()
	if p.packed && !over && !math.IsNaN(float64(m.Value)) {
		// A packed trial that finished is done, whatever becomes
		// of the rest of its pack.
		v := float64(m.Value)
		p.record(i, outcome{state: storage.Complete, value: &v, attrs: m.Attrs})
	}
}

// epochLine records member i's epoch line, asks the pruner, and answers
// a pack's verdict or stops an unpacked trial that must stop.
func (p *trialProc) epochLine(ctx context.Context, i int, m trial.Message) {
	p.wd.heard(fmt.Sprintf("epoch %d", m.Step))
	switch {
	case p.reported[i][m.Step]:
		// As Optuna's report: the first value of a step stands (a pack
		// still gets its verdict below).
		p.r.logf("%s#%d: step %d reported again; the first value stands", p.ss.plan.Name, p.members[i].Number, m.Step)
	case !p.r.epoch(ctx, p.ss, p.members[i], m, &p.mu, &p.lost[i], &p.pruned[i], p.unsaved[i]):
		p.reported[i][m.Step] = true
		p.lastValue[i], p.hasLast[i] = float64(m.Value), true
		p.onEpoch(i, m.Step)
	}
	p.mu.Lock()
	stop := p.pruned[i] || p.lost[i]
	wasPruned := p.pruned[i] && !p.lost[i]
	prunedNow := p.packed && wasPruned && !p.recorded[i]
	p.mu.Unlock()
	if prunedNow {
		// Recorded before the verdict goes out: once the pack hears
		// it, the study says so.
		p.record(i, outcome{state: storage.Pruned, value: p.prunedValue(i)})
	}
	switch {
	case p.packed:
		p.verdicts.Write(trial.Verdict{Trial: p.members[i].Number, Prune: stop}.Encode())
	case stop:
		if wasPruned {
			// Nobody resumes a pruned trial: it need not checkpoint.
			os.WriteFile(filepath.Join(p.r.trialDir(p.ss, p.members[i]), trial.PrunedName), nil, 0o644)
		}
		p.cancel()
	}
	p.mu.Lock()
	gone := p.allLost()
	p.mu.Unlock()
	if gone {
		p.cancel()
	}
}

// outcomes says how each member ended, once the process has exited with
// err; ctx is the run's (ended: the sweep was stopped).
func (p *trialProc) outcomes(ctx context.Context, err error) []outcome {
	cfg := p.r.Config
	outs := make([]outcome, len(p.members))
	for i := range p.members {
		out := outcome{stderrTail: p.tails[i].String(), unsaved: p.unsaved[i]}
		final := p.finals[i]
		finished := final != nil && err == nil && p.protoErr == nil && !math.IsNaN(float64(final.Value))
		switch {
		case p.recorded[i]:
			out.recorded = true
		case p.lost[i]:
			out.lost = true
		case p.pruned[i]:
			out.state, out.value = storage.Pruned, p.prunedValue(i)
		case final != nil && final.Attrs["fail_reason"] != nil:
			out.state, out.reason = storage.Fail, fmt.Sprint(final.Attrs["fail_reason"])
		case p.wd.fired() != "":
			out.state, out.reason = storage.Fail, p.wd.fired()
		case ctx.Err() != nil && !finished:
			// A finished trial's result stands (the default below), even
			// if the sweep was being stopped as the trial wrote it.
			out.state, out.reason, out.retry = storage.Fail, "interrupted: "+p.r.command()+" was stopped", true
		case err != nil:
			out.state, out.reason = storage.Fail, err.Error()
			cause := stderrCause(out.stderrTail)
			if cfg.TrialMemoryGB > 0 && p.tails[i].OOM() {
				out.reason = fmt.Sprintf("trial_memory_gb %g: out of memory (%s)", cfg.TrialMemoryGB, err)
				if !outOfMemory.MatchString(cause) {
					cause = "" // a line of a dump (a stack frame), not the reason
				}
			}
			if cause != "" {
				out.reason += ": " + cause
			}
			if p.packed {
				out.reason = fmt.Sprintf("pack of %d: %s", len(p.members), out.reason)
			}
		case p.protoErr != nil:
			out.state, out.reason = storage.Fail, p.protoErr.Error()
		case final == nil:
			out.state, out.reason = storage.Fail, "the trial exited without a final line"
			if p.skippedLines > 0 {
				out.reason += fmt.Sprintf(" (%d stdout line(s) over %d MiB were skipped unread)", p.skippedLines, maxProtocolLine>>20)
			}
		case math.IsNaN(float64(final.Value)):
			out.state, out.reason = storage.Fail, "the final value is NaN"
		default:
			v := float64(final.Value)
			out.state, out.value, out.attrs = storage.Complete, &v, final.Attrs
		}
		outs[i] = out
	}
	return outs
}

package trial

import (
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
)

// DefaultCheckpointEvery is the built-in trainer's checkpoint interval:
// short enough that a preemption costs little, long enough that writing
// even t5-large's full fine-tuning state stays well under 1 % of the time.
const DefaultCheckpointEvery = 30 * time.Minute

// PrunedName is the file the orchestrator leaves in a trial's folder
// before it stops the trial for pruning: a trial that finds it does not
// checkpoint on SIGTERM, since nobody will resume it.
const PrunedName = ".sweep-pruned"

// parseCheckpointEvery reads checkpoint_every: a duration ("30m"), a
// number of optimiser steps (500), or 0 (never).
func (s *Settings) parseCheckpointEvery(v any) error {
	bad := fmt.Errorf("trial: training setting checkpoint_every = %v, want a duration (30m, 2h), a number of optimiser steps (500) or 0 (never)", v)
	s.CheckpointEvery, s.CheckpointSteps = 0, 0
	if f, ok := methods.Number(v); ok {
		if f < 0 || f != math.Trunc(f) || f > math.MaxInt32 {
			return bad
		}
		s.CheckpointSteps = int(f)
		return nil
	}
	str, ok := v.(string)
	if !ok {
		return bad
	}
	if n, err := strconv.Atoi(str); err == nil && n >= 0 {
		s.CheckpointSteps = n
		return nil
	}
	d, err := time.ParseDuration(str)
	if err != nil || d < 0 || (d > 0 && d < time.Second) {
		return bad
	}
	s.CheckpointEvery = d
	return nil
}

// resume moves each member that has a predecessor's checkpoint to where
// that checkpoint stopped, and tells the orchestrator. A checkpoint that
// does not verify, or belongs to another training, is left alone: the
// member starts afresh and its log says why.
func (j *trainJob) resume() error {
	digest, err := modelDigest(j.modelDir)
	if err != nil {
		digest = "path:" + j.modelDir
	}
	for i, pr := range j.runs {
		pr.fingerprint = checkpointFingerprint(j.spec, pr.Member, pr.seed, digest, j.batches)
		if pr.ResumeFrom == "" {
			continue
		}
		t0 := time.Now()
		c, err := readCheckpoint(pr.ResumeFrom, func(c *checkpoint) (map[string]int, error) {
			pr.offeredSteps = c.Steps // even if refused: the lineage's progress
			return j.acceptHeader(i, c)
		})
		if err == nil {
			err = j.restoreRun(i, c)
		}
		if err != nil {
			pr.logf("not resuming: %v; training from the start", err)
			pr.ResumeFrom = "" // left where it is: it is not this training's
			continue
		}
		fr := j.fruns[i]
		j.resumed = true
		pr.resumedFrom = fmt.Sprintf("%d at step %d", c.Trial, c.Steps)
		pr.logf("resuming trial #%d's checkpoint: step %d (epoch %d, batch %d of %d), %d validations so far; read and restored in %.2fs, %.2fs after the trial started",
			c.Trial, c.Steps, c.Epoch, c.Batch, len(j.batches), c.Evals, time.Since(t0).Seconds(), time.Since(j.start).Seconds())
		if _, err := j.stdout.Write(pr.message(j.packed, Message{Type: TypeResumed, Step: fr.st.step,
			Attrs: map[string]any{"from_trial": c.Trial, "epoch": c.Epoch, "values": c.Reported}})); err != nil {
			return fmt.Errorf("trial: %w", err)
		}
	}
	j.lastCheckpoint = time.Now()
	return nil
}

// acceptHeader judges checkpoint c's header for run i, before any
// tensor is read: the same training, shapes, optimiser groups, a cursor
// inside the data and validations that add up. It returns the length
// every tensor of the file must have.
func (j *trainJob) acceptHeader(i int, c *checkpoint) (map[string]int, error) {
	pr, fr := j.runs[i], j.fruns[i]
	nb := len(j.batches)
	mismatch := func(why string, args ...any) error {
		return fmt.Errorf("checkpoint %s: %s", pr.ResumeFrom, fmt.Sprintf(why, args...))
	}
	switch {
	case c.Fingerprint != pr.fingerprint:
		return nil, mismatch("%v (method, architecture, parameters, seed, training settings, backbone or data differ)", errCheckpointMismatch)
	case !slices.EqualFunc(c.Shapes, shapesOf(fr.st.trainable), slices.Equal[[]int]):
		return nil, mismatch("its trainable tensors have other shapes")
	case len(c.Optim) != len(fr.st.groups):
		return nil, mismatch("%d optimiser groups, want %d", len(c.Optim), len(fr.st.groups))
	case c.Epoch < 0 || c.Epoch > j.set.MaxEpochs || c.Batch < 0 || c.Batch >= max(nb, 1) || c.Steps != c.Epoch*nb+c.Batch:
		return nil, mismatch("step %d at epoch %d, batch %d does not fit %d batches per epoch", c.Steps, c.Epoch, c.Batch, nb)
	case c.Evals != len(c.EvalScores) || c.BestAt[0] >= c.Evals || c.BestAt[0] < -1:
		return nil, mismatch("%d validations with %d scores, the best at %d", c.Evals, len(c.EvalScores), c.BestAt[0])
	}
	var probe rand.PCG
	if err := probe.UnmarshalBinary(c.Shuffle); err != nil {
		return nil, mismatch("data order: %v", err)
	}
	want := map[string]int{}
	for k, t := range fr.st.trainable {
		want["trainable."+strconv.Itoa(k)] = t.Len()
		if c.BestAt[0] >= 0 {
			want["best."+strconv.Itoa(k)] = t.Len()
		}
	}
	for g, grp := range fr.st.groups {
		if c.Optim[g] < 0 {
			return nil, mismatch("optimiser group %d at step %d", g, c.Optim[g])
		}
		if c.Optim[g] == 0 {
			continue
		}
		n := 0
		for _, t := range grp.tensors {
			n += t.Len()
		}
		want[fmt.Sprintf("adamw.%d.m", g)], want[fmt.Sprintf("adamw.%d.v", g)] = n, n
	}
	return want, nil
}

// restoreRun puts run i where checkpoint c (its header accepted) stopped,
// after checking that every tensor is there; on an error the run is as it
// was.
func (j *trainJob) restoreRun(i int, c *checkpointData) error {
	pr, fr := j.runs[i], j.fruns[i]
	nb := len(j.batches)
	mismatch := func(why string, args ...any) error {
		return fmt.Errorf("checkpoint %s: %s", pr.ResumeFrom, fmt.Sprintf(why, args...))
	}
	need := func(name string, n int) ([]float32, error) {
		v, ok := c.values[name]
		if !ok || len(v) != n {
			return nil, mismatch("tensor %s is missing or of another size", name)
		}
		return v, nil
	}
	trainable := make([][]float32, len(fr.st.trainable))
	var best [][]float32
	for k, t := range fr.st.trainable {
		var err error
		if trainable[k], err = need("trainable."+strconv.Itoa(k), t.Len()); err != nil {
			return err
		}
		if c.BestAt[0] >= 0 {
			v, err := need("best."+strconv.Itoa(k), t.Len())
			if err != nil {
				return err
			}
			best = append(best, v)
		}
	}
	moments := make([]nn.AdamWState, len(fr.st.groups))
	for g, grp := range fr.st.groups {
		moments[g].Steps = c.Optim[g]
		if c.Optim[g] == 0 {
			continue
		}
		n := 0
		for _, t := range grp.tensors {
			n += t.Len()
		}
		var err error
		if moments[g].M, err = need(fmt.Sprintf("adamw.%d.m", g), n); err != nil {
			return err
		}
		if moments[g].V, err = need(fmt.Sprintf("adamw.%d.v", g), n); err != nil {
			return err
		}
	}
	// Everything fits: from here nothing fails.
	restore(fr.st.trainable, trainable)
	for g, grp := range fr.st.groups {
		if err := grp.opt.SetState(moments[g], grp.tensors); err != nil {
			return mismatch("%v", err)
		}
	}
	fr.st.step, fr.st.streams = c.Steps, c.Streams
	fr.order.UnmarshalBinary(c.Shuffle)
	fr.epoch, fr.batch, fr.evals = c.Epoch, c.Batch, c.Evals
	if fr.batch > 0 {
		fr.drawOrder(nb)
	}
	fr.best = float64(c.Best)
	fr.bestAt = evalPoint{index: c.BestAt[0], epoch: c.BestAt[1], steps: c.BestAt[2], bySteps: j.set.EvalSteps > 0 || len(j.set.EvalAt) > 0}
	fr.bestState = best
	fr.epochs, fr.examples, fr.trainSeconds = c.Epochs, c.Examples, c.TrainSeconds
	fr.lossSum, fr.losses, fr.seconds = c.LossSum, c.Losses, c.Seconds
	fr.stopped = c.Stopped
	pr.evalScores, pr.evalSeconds, pr.reported = scoresIn(c.EvalScores), c.EvalSeconds, c.Reported
	pr.priorSeconds, pr.priorJoules, pr.priorGPUJoules = c.PriorSeconds, c.PriorJoules, c.PriorGPUJoules
	return nil
}

// checkpointIfDue writes the members' checkpoints when checkpoint_every
// has passed since the last: a duration, or rounds of steps. fit calls it
// before each round.
func (j *trainJob) checkpointIfDue() {
	if j.resumed && !j.firstStepSaid && j.roundsSinceCheckpoint > 0 {
		// How long a preempted trial takes to get going again.
		j.logf("resumed: the first step ended %.2fs after the trial started", time.Since(j.start).Seconds())
		j.firstStepSaid = true
	}
	set := j.set
	due := (set.CheckpointSteps > 0 && j.roundsSinceCheckpoint >= set.CheckpointSteps) ||
		(set.CheckpointEvery > 0 && time.Since(j.lastCheckpoint) >= set.CheckpointEvery)
	if due && j.roundsSinceCheckpoint > 0 {
		j.checkpoint()
	}
	j.roundsSinceCheckpoint++
}

// checkpointOnStop checkpoints an interrupted trial (SIGTERM: Ctrl-C, a
// preemption, a closed terminal), unless the orchestrator stopped it for
// pruning or it has taken no step since its last checkpoint.
func (j *trainJob) checkpointOnStop() {
	if _, err := os.Stat(filepath.Join(j.spec.OutputDir, PrunedName)); err == nil && j.spec.OutputDir != "" {
		return
	}
	if j.roundsSinceCheckpoint == 0 {
		return // nothing trained since the last checkpoint (or the start)
	}
	j.logf("interrupted: checkpointing")
	j.checkpoint()
}

// checkpoint writes each member's checkpoint into its folder; a member
// that failed or was pruned has none. A write that fails (a full disk)
// leaves the previous checkpoint in place, and the trial goes on.
func (j *trainJob) checkpoint() {
	t0 := time.Now()
	energy := j.meter.stop(j.set.PackageWatts).joules
	gpuEnergy := 0.0
	if j.gpu != nil {
		if e := j.gpu.counterJoules(); !math.IsNaN(e) {
			gpuEnergy = e
		}
	}
	going := 0
	for _, fr := range j.fruns {
		if fr.err == nil && !fr.pruned {
			going++
		}
	}
	var bytes int64
	for i, pr := range j.runs {
		fr := j.fruns[i]
		if fr.err != nil || fr.pruned || pr.OutputDir == "" {
			continue
		}
		path := filepath.Join(pr.OutputDir, CheckpointName)
		c, names, values, err := j.captureRun(i, energy/float64(max(going, 1)), gpuEnergy/float64(max(going, 1)))
		if err == nil {
			err = writeCheckpoint(path, c, names, values)
		}
		if err != nil {
			pr.logf("checkpoint at step %d not written (%v); the previous one stays", fr.st.step, err)
			continue
		}
		for _, v := range values {
			bytes += int64(len(v)) * 4
		}
		if pr.ResumeFrom != "" && pr.ResumeFrom != path {
			os.Remove(pr.ResumeFrom) // only the latest checkpoint is kept
			pr.ResumeFrom = ""
		}
	}
	j.lastCheckpoint, j.roundsSinceCheckpoint = time.Now(), 0
	j.logf("checkpoint: %d trial(s) at step %d, %.1f MB in %.2fs", going, j.fruns[0].st.step, float64(bytes)/1e6, time.Since(t0).Seconds())
}

// captureRun is run i's checkpoint: its header and tensors by name. The
// tensors share the run's memory until its next step.
func (j *trainJob) captureRun(i int, joules, gpuJoules float64) (checkpoint, []string, [][]float32, error) {
	pr, fr := j.runs[i], j.fruns[i]
	orderAt := fr.orderAt
	if fr.batch == 0 { // the next epoch's order is not drawn yet
		orderAt, _ = fr.order.MarshalBinary()
	}
	c := checkpoint{
		Fingerprint: pr.fingerprint, Trial: pr.Number, Steps: fr.st.step, Offered: pr.offeredSteps,
		Epoch: fr.epoch, Batch: fr.batch, Shuffle: orderAt, Streams: fr.st.streams,
		Evals: fr.evals, Best: Float(fr.best), BestAt: [3]int{fr.bestAt.index, fr.bestAt.epoch, fr.bestAt.steps},
		Epochs: fr.epochs, Examples: fr.examples, TrainSeconds: fr.trainSeconds,
		LossSum: fr.lossSum, Losses: fr.losses, Seconds: fr.seconds, Stopped: fr.stopped,
		EvalScores: scoresOut(pr.evalScores), EvalSeconds: pr.evalSeconds, Reported: pr.reported,
		PriorSeconds: pr.priorSeconds + time.Since(j.start).Seconds(), PriorJoules: pr.priorJoules + joules,
		PriorGPUJoules: pr.priorGPUJoules + gpuJoules,
		Shapes:         shapesOf(fr.st.trainable),
	}
	var names []string
	var values [][]float32
	for k, t := range fr.st.trainable {
		names, values = append(names, "trainable."+strconv.Itoa(k)), append(values, t.Values())
	}
	for g, grp := range fr.st.groups {
		s, err := grp.opt.State()
		if err != nil {
			return c, nil, nil, err
		}
		c.Optim = append(c.Optim, s.Steps)
		if s.Steps > 0 {
			names = append(names, fmt.Sprintf("adamw.%d.m", g), fmt.Sprintf("adamw.%d.v", g))
			values = append(values, s.M, s.V)
		}
	}
	for k, v := range fr.bestState {
		names, values = append(names, "best."+strconv.Itoa(k)), append(values, v)
	}
	return c, names, values, nil
}

// trainableDigest is the SHA-256 of the tensors' values (little-endian
// float32, in order): two runs that trained the same weights, bit for
// bit, have the same digest.
func trainableDigest(ts []*nn.Tensor) string {
	h := sha256.New()
	for _, t := range ts {
		writeFloats(h, t.Values())
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

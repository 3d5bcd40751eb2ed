package trial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// stepper turns batches into optimiser steps: the forward pass (or the
// cached backbone states), the loss, backward, global-norm clipping, the
// learning-rate schedule and AdamW. Train drives it over epochs (fit); the
// trajectory tests drive it over PyTorch's batches, so both run this code.
type stepper struct {
	m         *t5.Model
	hooks     *t5.Hooks
	g         *nn.Graph
	trainable []*nn.Tensor
	groups    []paramGroup
	cache     *stateCache // nil: always run the backbone
	dropout   bool
	seed      uint64 // of the dropout masks
	streams   uint64 // dropout streams drawn so far (g.DropoutStreams)

	lr            float64
	warmup, total int
	shifted       bool // lr_schedule: linear_shifted
	clip          float64
	step          int // optimiser steps taken
}

// paramGroup is one of AdamW's parameter groups, as in torch: the same
// rule for every tensor in it.
type paramGroup struct {
	opt     *nn.AdamW
	tensors []*nn.Tensor
}

// stepStats is what one step did.
type stepStats struct {
	Loss     float64 // the batch's mean cross-entropy over non-ignored label tokens
	GradNorm float64 // the global L2 norm of the gradients before clipping
	LR       float64 // the learning rate the step used
}

// newStepper prepares training meth's tensors on m for total steps at peak
// learning rate lr, with dropout masks from seed. Its steps run on g, which
// the steppers of a pack share: their steps take turns, and one graph's
// activation memory serves them all instead of k copies of it.
func newStepper(g *nn.Graph, m *t5.Model, meth methods.Method, set Settings, lr float64, total int, cache *stateCache, dropout bool, seed uint64) *stepper {
	s := &stepper{m: m, hooks: meth.Hooks(), g: g, trainable: meth.Trainable(), cache: cache, dropout: dropout, seed: seed,
		lr: lr, total: total, shifted: set.LRSchedule == "linear_shifted", clip: set.ClipNorm}
	s.warmup = warmupSteps(set.WarmupRatio, total, s.shifted)
	s.groups = paramGroups(meth, lr, set)
	return s
}

// paramGroups splits the trainable tensors as Hugging Face's Trainer does:
// weight decay for methods that decay (full fine-tuning), and there only
// for tensors whose names are not biases or norms (decay_norms_and_biases:
// true decays those too).
func paramGroups(meth methods.Method, lr float64, set Settings) []paramGroup {
	decays := false
	if d, ok := meth.(methods.Decayer); ok && d.WeightDecay() && set.WeightDecay != 0 {
		decays = true
	}
	names := tensorNames(meth)
	decayed, plain := paramGroup{opt: nn.NewAdamW(lr)}, paramGroup{opt: nn.NewAdamW(lr)}
	decayed.opt.WeightDecay = set.WeightDecay
	plain.opt.WeightDecay = 0
	for _, t := range meth.Trainable() {
		if decays && (set.DecayNormsAndBiases || takesWeightDecay(names[t])) {
			decayed.tensors = append(decayed.tensors, t)
		} else {
			plain.tensors = append(plain.tensors, t)
		}
	}
	var groups []paramGroup
	for _, g := range []paramGroup{decayed, plain} {
		if len(g.tensors) > 0 {
			groups = append(groups, g)
		}
	}
	return groups
}

// tensorNames names a method's tensors (Hugging Face's names for the
// backbone's, the method's own for the rest).
func tensorNames(meth methods.Method) map[*nn.Tensor]string {
	names := map[*nn.Tensor]string{}
	w := meth.Weights()
	for i, t := range w.Tensors {
		names[t] = w.Names[i]
	}
	return names
}

// noDecayName matches the parameter names transformers'
// get_decay_parameter_names leaves undecayed: biases (T5's
// relative_attention_bias included) and norms of any spelling.
var noDecayName = regexp.MustCompile(`bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)`)

func takesWeightDecay(name string) bool { return !noDecayName.MatchString(strings.ToLower(name)) }

// warmupSteps is the number of warm-up steps: ceil(ratio·total) as Hugging
// Face's TrainingArguments.get_warmup_steps, or floor for linear_shifted.
func warmupSteps(ratio float64, total int, shifted bool) int {
	if shifted {
		return int(ratio * float64(total))
	}
	return int(math.Ceil(ratio * float64(total)))
}

// learningRate is the rate of optimiser step `step` (0-based): a linear
// warm-up to lr, then a linear decay to 0 at total. Hugging Face's
// get_linear_schedule_with_warmup starts the warm-up at 0 (step/warmup);
// linear_shifted, this trainer's first schedule, at lr/warmup
// ((step+1)/warmup).
func learningRate(lr float64, step, warmup, total int, shifted bool) float64 {
	if step < warmup {
		if shifted {
			return lr * float64(step+1) / float64(warmup)
		}
		return lr * float64(step) / float64(max(1, warmup))
	}
	return lr * math.Max(0, float64(total-step)/float64(max(total-warmup, 1)))
}

// run takes one optimiser step on batch bt, the training split's batch bi
// (the state cache's key).
func (s *stepper) run(bi int, bt t5.Batch) (stepStats, error) {
	g := s.g
	g.Reset()
	g.Train = s.dropout
	g.Seed, g.DropoutStreams = s.seed, s.streams
	defer func() { s.streams = g.DropoutStreams }()
	var out *t5.Output
	if st := s.cache.get(bi); st != nil {
		out = s.m.HeadLoss(g, s.hooks, st.output(s.m.Config.DModel), bt)
	} else {
		var err error
		if out, err = s.m.Forward(g, bt, s.hooks); err != nil {
			return stepStats{}, err
		}
		if s.cache != nil {
			s.cache.add(bi, capture(g, out, bt.B, bt.S, bt.T))
		}
	}
	g.Drop(out.Logits) // the loss has what backward needs from them
	g.Backward(out.Loss)
	// Read after the backward is queued, so that on a GPU the host does not
	// wait for the forward before queueing it; a bad loss still stops the
	// trial before the optimiser touches the weights.
	loss := float64(out.Loss.Values()[0])
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return stepStats{}, fmt.Errorf("the training loss is %v at step %d (lr %.3g too high?)", loss, s.step, s.lr)
	}
	clip := s.clip
	if clip <= 0 {
		clip = math.Inf(1) // the norm is still reported
	}
	norm := nn.ClipGradNorm(s.trainable, clip)
	lr := learningRate(s.lr, s.step, s.warmup, s.total, s.shifted)
	for _, grp := range s.groups {
		grp.opt.LR = lr
		grp.opt.Step(grp.tensors)
	}
	nn.ZeroGrad(s.trainable)
	s.step++
	return stepStats{Loss: loss, GradNorm: norm, LR: lr}, nil
}

// heartbeatEvery is how often, at most, a trial says it is alive between
// epochs: well inside the orchestrator's default stall_timeout (30 min).
const heartbeatEvery = 30 * time.Second

// heartbeat returns a function that writes a heartbeat line to w when at
// least every has passed since the last one. The trainer calls it after
// each training step and evaluation batch, so a trial that stops making
// progress also stops beating (a timer would beat through a deadlock).
func heartbeat(w io.Writer, every time.Duration) func() {
	last := time.Now()
	return func() {
		if time.Since(last) < every {
			return
		}
		last = time.Now()
		w.Write(Message{Type: TypeHeartbeat}.Encode())
	}
}

// fitConfig is what fit needs besides the runs it trains.
type fitConfig struct {
	maxEpochs, patience int
	batches             int // per epoch
	// evalSteps, when above 0, validates every evalSteps optimiser steps
	// (and after the last) instead of after every epoch; patience then
	// counts validations.
	evalSteps int
	// evalAt, when set, adds validations after these optimiser steps to
	// every epoch's; reports then name optimiser steps too.
	evalAt []int
	batch  func(i int) t5.Batch // the training split's batch i
	beat   func()               // after every step: the protocol heartbeat
	// epochDone, when set, is called when every active run has taken
	// epoch's last step, before that step's validations.
	epochDone func(epoch int)
	// afterEval, when set, is told which runs reported at a validation;
	// it may stop some (a pack's pruning verdicts).
	afterEval func(at evalPoint, reported []*fitRun)
	// between, when set, is called before every round of steps, where
	// every run's state is whole: checkpoints are taken there.
	between func()
	// keepLast keeps each run's last parameters (lastState) before fit
	// restores its best.
	keepLast bool
}

// evalPoint is one validation in fit: the index-th (from 0), after steps
// optimiser steps, during epoch (from 0).
type evalPoint struct {
	index, epoch, steps int
	bySteps             bool // eval_steps is set: the protocol's step counts optimiser steps
}

// report is the step an intermediate value is reported at: the epoch, or
// the optimiser steps taken when validation runs every eval_steps.
func (at evalPoint) report() int {
	if at.bySteps {
		return at.steps
	}
	return at.epoch
}

func (at evalPoint) String() string {
	if at.bySteps {
		return fmt.Sprintf("step %d (epoch %d)", at.steps, at.epoch)
	}
	return fmt.Sprintf("epoch %d", at.epoch)
}

// fitRun is one trial's training in fit: its stepper and epoch order, and
// how it ended.
type fitRun struct {
	st    *stepper
	order *rand.PCG            // the source of the epoch orders, from the trial's seed
	logf  func(string, ...any) // progress lines for the trial's log
	// validate scores the current parameters (and reports them); meanLoss
	// and trainSeconds cover the steps since the previous validation.
	// Higher is better.
	validate func(at evalPoint, meanLoss, trainSeconds float64) (float64, error)

	// The cursor: the next step is batch `batch` of epoch `epoch`'s
	// order perm, drawn from orderAt (the source's state before).
	epoch, batch int
	perm         []int
	orderAt      []byte
	evals        int // validations so far

	best         float64   // the best validation score
	bestAt       evalPoint // where it was reached (index −1: nowhere yet)
	epochs       int       // epochs begun
	examples     int       // training examples seen
	trainSeconds float64   // in this run's own steps
	bestState    [][]float32
	lastState    [][]float32 // the parameters at the end, with fitConfig.keepLast
	stopped      bool        // no more steps: patience ran out, pruned or failed
	pruned       bool        // stopped by the orchestrator
	err          error       // why it failed

	lossSum, seconds float64 // since the last validation
	losses           int
}

// newFitRun starts a run at its first step; a checkpoint may then move it.
func newFitRun(st *stepper, seed uint64, logf func(string, ...any)) *fitRun {
	return &fitRun{st: st, order: rand.NewPCG(seed, 0x7a), logf: logf, best: math.Inf(-1), bestAt: evalPoint{index: -1}}
}

// completed reports whether the run trained to its end: neither failed
// nor pruned.
func (r *fitRun) completed() bool { return r.err == nil && !r.pruned }

// drawOrder starts the run's epoch: it draws the batch order.
func (r *fitRun) drawOrder(batches int) {
	r.orderAt, _ = r.order.MarshalBinary()
	r.perm = rand.New(r.order).Perm(batches)
	r.epochs = r.epoch + 1
}

// fit trains its runs epoch after epoch until max_epochs, validating after
// every epoch (or every eval_steps steps), until `patience` validations in
// a row bring a run no improvement, then restores each run's parameters of
// its best validation: what the test split is scored with. Several runs (a
// pack) take their steps in turn, batch by batch, so the first to need a
// batch's backbone states computes them and the others read them from the
// state cache. Each run keeps its own place in the data, so runs resumed
// from checkpoints of different steps train side by side. A run's own
// failure stops that run only; fit returns an error only when ctx ends,
// between two steps, where every run's state is whole (a checkpoint's).
func fit(ctx context.Context, runs []*fitRun, fc fitConfig) error {
	total := fc.maxEpochs * fc.batches
	due := func(step int) bool {
		if fc.evalSteps > 0 {
			return step%fc.evalSteps == 0 || step == total
		}
		return step%fc.batches == 0 || slices.Contains(fc.evalAt, step)
	}
	bySteps := fc.evalSteps > 0 || len(fc.evalAt) > 0
	for {
		if err := ctx.Err(); err != nil {
			return err // pruned or interrupted: stop now, not after the epoch
		}
		var active []*fitRun
		for _, r := range runs {
			if !r.stopped && r.epoch < fc.maxEpochs {
				active = append(active, r)
			}
		}
		if len(active) == 0 {
			break
		}
		if fc.between != nil {
			fc.between()
		}
		var bt t5.Batch
		built := -1
		var validating []*fitRun
		var ended []int // epochs that runs ended in this round
		for _, r := range active {
			if r.batch == 0 {
				r.drawOrder(fc.batches)
			}
			bi := r.perm[r.batch]
			if bi != built {
				bt, built = fc.batch(bi), bi
			}
			t0 := time.Now()
			var stats stepStats
			var err error
			phase(ctx, "train", func() { stats, err = r.st.run(bi, bt) })
			r.seconds += time.Since(t0).Seconds()
			if err != nil {
				r.err, r.stopped = fmt.Errorf("trial: epoch %d: %w", r.epoch, err), true
				continue
			}
			r.lossSum += stats.Loss
			r.losses++
			r.examples += bt.B
			r.batch++
			if due(r.epoch*fc.batches + r.batch) {
				validating = append(validating, r)
			}
			if r.batch == fc.batches && !slices.Contains(ended, r.epoch) {
				ended = append(ended, r.epoch)
			}
		}
		fc.beat()
		if fc.epochDone != nil {
			for _, e := range ended {
				fc.epochDone(e)
			}
		}
		validateAll(validating, fc, bySteps)
		for _, r := range active {
			if r.batch == fc.batches {
				r.epoch, r.batch = r.epoch+1, 0
			}
		}
	}
	for _, r := range runs {
		switch {
		case !r.completed():
		case r.bestState == nil:
			r.err = errors.New("trial: no validation finished")
		default:
			if fc.keepLast {
				r.lastState = snapshot(r.st.trainable, nil)
			}
			restore(r.st.trainable, r.bestState)
		}
	}
	return ctx.Err()
}

// validateAll validates runs that are due, together when they stand at
// the same point (a pack in step: one verdict round), else point by point.
func validateAll(runs []*fitRun, fc fitConfig, bySteps bool) {
	for len(runs) > 0 {
		r0 := runs[0]
		at := evalPoint{index: r0.evals, epoch: r0.epoch, steps: r0.st.step, bySteps: bySteps}
		var same, rest []*fitRun
		for _, r := range runs {
			if r.evals == at.index && r.epoch == at.epoch && r.st.step == at.steps {
				same = append(same, r)
			} else {
				rest = append(rest, r)
			}
		}
		for _, r := range same {
			r.evals++
		}
		validateRuns(same, at, fc)
		runs = rest
	}
}

// validateRuns validates the runs still training at `at`, keeps each one's
// best parameters, applies patience and tells afterEval.
func validateRuns(active []*fitRun, at evalPoint, fc fitConfig) {
	var reported []*fitRun
	for _, r := range active {
		if r.stopped {
			continue
		}
		r.trainSeconds += r.seconds
		value, err := r.validate(at, r.lossSum/float64(max(r.losses, 1)), r.seconds)
		r.lossSum, r.losses, r.seconds = 0, 0, 0
		if err != nil {
			r.err, r.stopped = err, true
			continue
		}
		reported = append(reported, r)
		if value > r.best {
			r.best, r.bestAt = value, at
			r.bestState = snapshot(r.st.trainable, r.bestState)
		} else if at.index-r.bestAt.index >= fc.patience {
			r.logf("no improvement for %d validations: stopping", fc.patience)
			r.stopped = true
		}
	}
	if fc.afterEval != nil && len(reported) > 0 {
		fc.afterEval(at, reported)
	}
}

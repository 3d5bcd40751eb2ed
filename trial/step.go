package trial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"regexp"
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
// learning rate lr.
func newStepper(m *t5.Model, meth methods.Method, be nn.Backend, set Settings, lr float64, total int, cache *stateCache, dropout bool) *stepper {
	s := &stepper{m: m, hooks: meth.Hooks(), g: nn.NewGraph(be), trainable: meth.Trainable(), cache: cache, dropout: dropout,
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
	loss := float64(out.Loss.Values()[0])
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return stepStats{}, fmt.Errorf("the training loss is %v at step %d (lr %.3g too high?)", loss, s.step, s.lr)
	}
	g.Backward(out.Loss)
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
	batches             int                  // per epoch
	batch               func(i int) t5.Batch // the training split's batch i
	beat                func()               // after every step: the protocol heartbeat
	// afterEpoch, when set, is told which runs reported an epoch; it may
	// stop some (a pack's pruning verdicts).
	afterEpoch func(epoch int, reported []*fitRun)
}

// fitRun is one trial's training in fit: its stepper and epoch order, and
// how it ended.
type fitRun struct {
	st      *stepper
	shuffle *rand.Rand           // the epoch order, from the trial's seed
	logf    func(string, ...any) // progress lines for the trial's log
	// validate scores the current parameters after an epoch (and reports
	// the epoch); higher is better.
	validate func(epoch int, meanLoss, trainSeconds float64) (float64, error)

	best         float64 // the best validation score
	bestEpoch    int     // where it was reached (0-based)
	epochs       int     // epochs trained
	examples     int     // training examples seen
	trainSeconds float64 // in this run's own steps
	bestState    [][]float32
	stopped      bool  // no more epochs: patience ran out, pruned or failed
	pruned       bool  // stopped by the orchestrator
	err          error // why it failed
}

// completed reports whether the run trained to its end: neither failed
// nor pruned.
func (r *fitRun) completed() bool { return r.err == nil && !r.pruned }

// fit trains its runs epoch after epoch until max_epochs, or until
// `patience` epochs in a row bring a run no improvement of its validation
// score, then restores each run's parameters of its best epoch: what the
// test split is scored with. Several runs (a pack) take their steps in
// turn, batch by batch, so the first to need a batch's backbone states
// computes them and the others read them from the state cache. A run's
// own failure stops that run only; fit returns an error only when ctx ends.
func fit(ctx context.Context, runs []*fitRun, fc fitConfig) error {
	for _, r := range runs {
		r.best, r.bestEpoch = math.Inf(-1), -1
	}
	for epoch := 0; epoch < fc.maxEpochs; epoch++ {
		var active []*fitRun
		for _, r := range runs {
			if !r.stopped {
				active = append(active, r)
			}
		}
		if len(active) == 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		perms := make([][]int, len(active))
		for i, r := range active {
			perms[i] = r.shuffle.Perm(fc.batches)
		}
		lossSum, seconds := make([]float64, len(active)), make([]float64, len(active))
		for p := range fc.batches {
			if err := ctx.Err(); err != nil {
				return err // pruned or interrupted: stop now, not after the epoch
			}
			var bt t5.Batch
			built := -1
			for i, r := range active {
				if r.stopped {
					continue
				}
				bi := perms[i][p]
				if bi != built {
					bt, built = fc.batch(bi), bi
				}
				t0 := time.Now()
				stats, err := r.st.run(bi, bt)
				seconds[i] += time.Since(t0).Seconds()
				if err != nil {
					r.err, r.stopped = fmt.Errorf("trial: epoch %d: %w", epoch, err), true
					continue
				}
				lossSum[i] += stats.Loss
				r.examples += bt.B
			}
			fc.beat()
		}
		var reported []*fitRun
		for i, r := range active {
			if r.err != nil {
				continue
			}
			r.trainSeconds += seconds[i]
			r.epochs = epoch + 1
			value, err := r.validate(epoch, lossSum[i]/float64(fc.batches), seconds[i])
			if err != nil {
				r.err, r.stopped = err, true
				continue
			}
			reported = append(reported, r)
			if value > r.best {
				r.best, r.bestEpoch = value, epoch
				r.bestState = snapshot(r.st.trainable, r.bestState)
			} else if epoch-r.bestEpoch >= fc.patience {
				r.logf("no improvement for %d epochs: stopping", fc.patience)
				r.stopped = true
			}
		}
		if fc.afterEpoch != nil && len(reported) > 0 {
			fc.afterEpoch(epoch, reported)
		}
	}
	for _, r := range runs {
		switch {
		case !r.completed():
		case r.bestState == nil:
			r.err = errors.New("trial: no epoch finished")
		default:
			restore(r.st.trainable, r.bestState)
		}
	}
	return ctx.Err()
}

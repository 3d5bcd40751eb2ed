package trial

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/readsweep/readsweep/glue"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// Settings are the training settings a trial reads from Spec.Training.
type Settings struct {
	MaxEpochs       int     // 30
	Patience        int     // epochs without improvement before stopping (5)
	BatchSize       int     // 32
	EvalBatchSize   int     // 64
	MaxSourceLength int     // tokens, </s> included (128)
	MaxTargetLength int     // 0: the longest training target
	WarmupRatio     float64 // share of steps with a rising learning rate (0)
	// LRSchedule is linear (Hugging Face's get_linear_schedule_with_warmup:
	// ceil(warmup_ratio·steps) warm-up steps from 0) or linear_shifted (the
	// first schedule here: floor(warmup_ratio·steps) steps, from lr/warmup).
	LRSchedule string
	// DecayNormsAndBiases applies weight decay to every trainable tensor;
	// by default, as Hugging Face's Trainer, biases and norms take none.
	DecayNormsAndBiases bool
	WeightDecay         float64 // for methods that decay (full fine-tuning) (0.01)
	ClipNorm            float64 // global gradient norm (1.0)
	Dropout             float64 // −1: the backbone's rate for full fine-tuning, 0 for the others
	DataSeed            uint64  // seed of the paper's split shuffle (42)
	MaxTrainExamples    int     // 0: all
	MaxEvalExamples     int     // 0: all
	PackageWatts        float64 // for the energy estimate when RAPL is unreadable (65)
	GPUP0Watts          float64 // p₀ of the paper's GPU energy estimate (250, a V100's datasheet power)
	LatencyExamples     int     // test examples timed one at a time (16)
	InitExamples        int     // training examples a data-driven initialisation sees (1024)
	// EvalSteps, when above 0, validates every EvalSteps optimiser steps
	// (and after the last) instead of after every epoch, so a pruner such
	// as ASHA can stop a trial within its first epoch; intermediate values
	// are then reported at optimiser steps, and patience counts
	// validations. EvalAt (eval_steps: [5, 15]) validates at those steps
	// besides every epoch's end: where ASHA's rungs end, and no more often.
	EvalSteps int
	EvalAt    []int
	// StateCache is off, fp32 or fp16: how a state-trained method (READ
	// variant A, LST) keeps the frozen backbone's states (fp32).
	StateCache    string
	StateCacheDir string  // default: the user cache's readsweep/states
	StateCacheGB  float64 // budget per cache file (2)
	// CheckpointEvery and CheckpointSteps (checkpoint_every: 30m, or a
	// number of optimiser steps) are how often a trial writes the
	// checkpoint a retry resumes from; both 0: never (checkpoint_every: 0).
	// An interrupted trial (SIGTERM) checkpoints whatever they say.
	CheckpointEvery time.Duration
	CheckpointSteps int
	// SaveModel is none, best (the state of the best validation, what the
	// test split is scored with) or last: what the trial writes to its
	// folder's model/ (docs/models.md). Final runs default to best.
	SaveModel string
	// Precision is what matrix products read their operands at (fp32,
	// tf32 or bf16; nn.Precision): reduced, as a GPU's tensor cores run
	// under PyTorch's TF32 mode or bf16 autocast, with everything else in
	// float32. The CPU rounds the operands the same way.
	Precision nn.Precision
}

// ParseSettings reads the training settings, rejecting unknown keys so a
// typo is not silently ignored. The orchestrator's own keys (seeds) pass.
func ParseSettings(m map[string]any) (Settings, error) {
	s := Settings{MaxEpochs: 30, Patience: 5, BatchSize: 32, EvalBatchSize: 64, MaxSourceLength: 128,
		WeightDecay: 0.01, ClipNorm: 1, Dropout: -1, DataSeed: glue.DefaultSplitSeed, PackageWatts: 65, GPUP0Watts: 250, LatencyExamples: 16, InitExamples: 1024,
		StateCache: "fp32", StateCacheGB: 2, LRSchedule: "linear", CheckpointEvery: DefaultCheckpointEvery, SaveModel: "none"}
	num := func(key string, v any) (float64, error) {
		if f, ok := methods.Number(v); ok {
			return f, nil
		}
		return 0, fmt.Errorf("trial: training setting %s = %v is not a number", key, v)
	}
	ints := map[string]*int{"max_epochs": &s.MaxEpochs, "patience": &s.Patience, "batch_size": &s.BatchSize,
		"eval_batch_size": &s.EvalBatchSize, "max_source_length": &s.MaxSourceLength, "max_target_length": &s.MaxTargetLength,
		"max_train_examples": &s.MaxTrainExamples, "max_eval_examples": &s.MaxEvalExamples, "latency_examples": &s.LatencyExamples,
		"init_examples": &s.InitExamples}
	// The least each whole-number setting can be; the rest take 0.
	minimums := map[string]int{"max_epochs": 1, "batch_size": 1, "eval_batch_size": 1, "max_source_length": 2}
	floats := map[string]*float64{"warmup_ratio": &s.WarmupRatio, "weight_decay": &s.WeightDecay, "clip_norm": &s.ClipNorm,
		"dropout": &s.Dropout, "package_watts": &s.PackageWatts, "gpu_p0_watts": &s.GPUP0Watts, "state_cache_gb": &s.StateCacheGB}
	for k, v := range m {
		switch {
		case ints[k] != nil:
			f, err := num(k, v)
			if err != nil {
				return s, err
			}
			if least := minimums[k]; f != math.Trunc(f) || f < float64(least) {
				return s, fmt.Errorf("trial: training setting %s = %v is not a whole number ≥ %d", k, v, least)
			}
			*ints[k] = int(f)
		case floats[k] != nil:
			f, err := num(k, v)
			if err != nil {
				return s, err
			}
			*floats[k] = f
		case k == "eval_steps":
			if list, ok := v.([]any); ok {
				for _, x := range list {
					f, ok := methods.Number(x)
					if !ok || f != math.Trunc(f) || f < 1 {
						return s, fmt.Errorf("trial: training setting eval_steps = %v: %v is not a step ≥ 1", v, x)
					}
					s.EvalAt = append(s.EvalAt, int(f))
				}
				if len(s.EvalAt) == 0 {
					return s, fmt.Errorf("trial: training setting eval_steps = []: name steps, or give a number")
				}
				break
			}
			f, ok := methods.Number(v)
			if !ok || f != math.Trunc(f) || f < 0 {
				return s, fmt.Errorf("trial: training setting eval_steps = %v, want a whole number ≥ 0 or a list of steps", v)
			}
			s.EvalSteps = int(f)
		case k == "data_seed":
			f, err := num(k, v)
			if err != nil {
				return s, err
			}
			s.DataSeed = uint64(f)
		case k == "state_cache":
			str, _ := v.(string)
			if str != "off" && str != "fp32" && str != "fp16" {
				return s, fmt.Errorf("trial: training setting state_cache = %v, want off, fp32 or fp16", v)
			}
			s.StateCache = str
		case k == "save_model":
			str, _ := v.(string)
			if str != "none" && str != "best" && str != "last" {
				return s, fmt.Errorf("trial: training setting save_model = %v, want none, best or last", v)
			}
			s.SaveModel = str
		case k == "precision":
			str, _ := v.(string)
			p, err := nn.ParsePrecision(str)
			if err != nil {
				return s, fmt.Errorf("trial: training setting precision = %#v, want fp32, tf32 or bf16", v)
			}
			s.Precision = p
		case k == "lr_schedule":
			str, _ := v.(string)
			if str != "linear" && str != "linear_shifted" {
				return s, fmt.Errorf("trial: training setting lr_schedule = %v, want linear or linear_shifted", v)
			}
			s.LRSchedule = str
		case k == "decay_norms_and_biases":
			b, ok := v.(bool)
			if !ok {
				return s, fmt.Errorf("trial: training setting decay_norms_and_biases = %v, want true or false", v)
			}
			s.DecayNormsAndBiases = b
		case k == "state_cache_dir":
			str, ok := v.(string)
			if !ok {
				return s, fmt.Errorf("trial: training setting state_cache_dir = %v is not a path", v)
			}
			s.StateCacheDir = str
		case k == "checkpoint_every":
			if err := s.parseCheckpointEvery(v); err != nil {
				return s, err
			}
		case k == "seeds" || k == "seed":
		default:
			return s, fmt.Errorf("trial: unknown training setting %q", k)
		}
	}
	switch {
	case s.Dropout != -1 && !t5.DropoutRateValid(s.Dropout):
		return s, fmt.Errorf("trial: dropout %v must be in [0, 1), or -1 for the default (the backbone's rate for full fine-tuning, 0 for the others)", s.Dropout)
	case s.WarmupRatio < 0 || s.WarmupRatio >= 1:
		return s, fmt.Errorf("trial: warmup_ratio %v must be in [0, 1)", s.WarmupRatio)
	}
	return s, nil
}

// example is one tokenised pair.
type example struct {
	src, tgt []int32
	gold     glue.Example
}

// Train runs one trial, or a pack of trials of one study: it attaches the
// method to the backbone (once per packed trial), trains on the task's
// training split with early stopping on the validation score, and reports
// epochs and the final result on stdout as protocol lines. verdicts, for a
// pack, carries the orchestrator's answer to each epoch line; nil, or its
// end, lets every trial go on.
func Train(ctx context.Context, spec Spec, reg methods.Registry, verdicts io.Reader, stdout, stderr io.Writer) error {
	j, err := newTrainJob(ctx, spec, stdout, stderr)
	if err != nil {
		return err
	}
	defer j.release()
	if err := j.load(); err != nil {
		return err
	}
	if err := j.attach(reg); err != nil {
		return err
	}
	j.tokenize()
	if err := j.openDevice(); err != nil {
		return err
	}
	if err := j.initFromData(); err != nil {
		return err
	}
	if err := j.openCaches(); err != nil {
		return err
	}
	j.newFitRuns()
	if err := j.resume(); err != nil {
		return err
	}
	fc := j.fitConfig()
	if j.packed {
		fc.afterEval = verdictReader(verdicts, j.runs, j.fruns)
	}
	if err := fit(ctx, j.fruns, fc); err != nil {
		j.checkpointOnStop()
		return err
	}
	j.fitDone = true
	if !j.packed && j.fruns[0].err != nil {
		return j.fruns[0].err
	}
	j.saveModels()
	if err := j.scoreTest(); err != nil {
		return err
	}
	return j.report()
}

// trainJob is one call of Train: what its steps set up, in order, and
// what the later steps read.
type trainJob struct {
	ctx     context.Context
	spec    Spec
	set     Settings
	members []Member
	packed  bool
	stdout  io.Writer
	stderr  io.Writer
	logf    func(string, ...any)
	start   time.Time
	meter   *meter

	// load
	task     *glue.Task
	modelDir string
	m        *t5.Model
	tok      *t5.Tokenizer
	splits   glue.Splits

	// attach
	baseConfig t5.Config // the backbone's own, before the trial's dropout
	runs       []*packRun
	nTrain     int
	total      int
	dropout    float64

	// tokenize
	train, val, test []example
	batches          [][]example
	maxTgt           int
	viable           t5.Viable

	// openDevice
	be     nn.Backend
	device string
	gpu    *gpuMeter

	// openCaches, newFitRuns
	cache     *stateCache
	encodings *encodings
	beat      func()
	fruns     []*fitRun
	fitDone   bool // a finished trial decodes the test split; others stop decoding

	// checkpoints
	lastCheckpoint        time.Time
	roundsSinceCheckpoint int  // rounds of steps since the last checkpoint
	resumed               bool // some member resumed a checkpoint
	firstStepSaid         bool

	releases []func() // run by release, last first
}

// newTrainJob reads the settings and checks each member's learning rate.
func newTrainJob(ctx context.Context, spec Spec, stdout, stderr io.Writer) (*trainJob, error) {
	j := &trainJob{ctx: ctx, spec: spec, stdout: stdout, stderr: stderr, start: time.Now(), meter: startMeter(),
		members: spec.Members(), packed: len(spec.Pack) > 0}
	j.logf = func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	var err error
	if j.set, err = ParseSettings(spec.Training); err != nil {
		return nil, err
	}
	for _, mb := range j.members {
		if lr, ok := mb.Params["lr"].(float64); !ok || !(lr > 0) {
			return nil, fmt.Errorf("trial: #%d: params.lr = %v, want a positive number", mb.Number, mb.Params["lr"])
		}
	}
	return j, nil
}

// release frees what the steps opened, in the reverse order.
func (j *trainJob) release() {
	for i := len(j.releases) - 1; i >= 0; i-- {
		j.releases[i]()
	}
	j.releases = nil
}

// load reads the task, the backbone, its tokenizer and the paper's splits.
func (j *trainJob) load() error {
	var err error
	if j.task, err = glue.Lookup(j.spec.Dataset); err != nil {
		return err
	}
	if j.modelDir, err = ResolveModel(j.spec.Model); err != nil {
		return err
	}
	if j.m, err = t5.Load(j.modelDir); err != nil {
		return err
	}
	if j.tok, err = t5.LoadTokenizer(filepath.Join(j.modelDir, "spiece.model")); err != nil {
		return err
	}
	if j.tok.VocabSize() > j.m.Config.VocabSize {
		return fmt.Errorf("trial: the tokenizer has %d ids but the model only %d embeddings", j.tok.VocabSize(), j.m.Config.VocabSize)
	}
	data, err := glue.Load(j.spec.DataDir, j.task)
	if err != nil {
		return err
	}
	j.splits, err = glue.PaperSplits(data, j.set.DataSeed)
	return err
}

// attach builds each member's method on the backbone and fixes the
// dropout rate the backbone trains with.
func (j *trainJob) attach(reg methods.Registry) error {
	j.runs = make([]*packRun, len(j.members))
	for i, mb := range j.members {
		pr := &packRun{Member: mb, seed: memberSeed(j.spec.Seed, mb), logf: j.logf}
		pr.lr = mb.Params["lr"].(float64)
		if j.packed {
			tag := fmt.Sprintf("[#%d] ", mb.Number)
			pr.logf = func(format string, args ...any) { fmt.Fprintf(j.stderr, tag+format+"\n", args...) }
		}
		var err error
		if pr.meth, err = reg.New(j.spec.Method, j.m, j.spec.Arch, uint64(pr.seed)); err != nil {
			return err
		}
		if st, ok := pr.meth.(methods.StateTrainer); j.packed && (!ok || !st.TrainsFromStates()) {
			// The members would share, and train, one backbone.
			return fmt.Errorf("trial: %s does not train from the frozen backbone's states, so its trials cannot be packed", j.spec.Method)
		}
		j.runs[i] = pr
	}
	meth := j.runs[0].meth
	j.nTrain = methods.PaperTrainable(j.m, meth.Trainable())
	j.total = methods.PaperTotal(j.m)
	j.dropout = j.set.Dropout
	if j.dropout < 0 {
		j.dropout = 0
		if d, ok := meth.(methods.Dropouter); ok && d.BackboneDropout() {
			j.dropout = j.m.Config.DropoutRate
		}
	}
	j.baseConfig = j.m.Config
	j.m.Config.DropoutRate = j.dropout
	return nil
}

// tokenize encodes the three splits, cuts training targets to the
// target length and buckets the training split into batches.
func (j *trainJob) tokenize() {
	set, tok := j.set, j.tok
	j.train = tokenize(tok, j.task, limit(j.splits.Train, set.MaxTrainExamples), set.MaxSourceLength)
	j.val = tokenize(tok, j.task, limit(j.splits.Validation, set.MaxEvalExamples), set.MaxSourceLength)
	j.test = tokenize(tok, j.task, limit(j.splits.Test, set.MaxEvalExamples), set.MaxSourceLength)
	j.maxTgt = set.MaxTargetLength
	if j.maxTgt == 0 {
		for _, e := range j.train {
			j.maxTgt = max(j.maxTgt, len(e.tgt))
		}
	}
	for i := range j.train {
		if len(j.train[i].tgt) > j.maxTgt {
			j.train[i].tgt = append(j.train[i].tgt[:j.maxTgt-1:j.maxTgt-1], tok.EOS())
		}
	}
	j.viable = answerRule(tok, j.task, j.maxTgt)
	for _, pr := range j.runs {
		pr.logf("trial %s#%d: %s on %s (%s), %d/%d/%d examples, lr %.3g, %d trainable parameters (%.3f%%), dropout %.2g",
			j.spec.Study, pr.Number, j.spec.Method, j.task.Name, j.splits.Rule, len(j.train), len(j.val), len(j.test), pr.lr, j.nTrain,
			100*float64(j.nTrain)/float64(j.total), j.dropout)
	}
	if j.packed {
		j.logf("pack of %d trials: one model load, one data pipeline and one backbone pass for all", len(j.runs))
	}
	j.batches = bucket(j.train, set.BatchSize)
}

// openDevice selects the backend and, on a GPU, starts its energy meter.
func (j *trainJob) openDevice() error {
	be, device, closeBackend, err := selectBackend(j.spec.Device, dataLimit())
	if err != nil {
		return err
	}
	j.releases = append(j.releases, func() { closeBackend() })
	if be, err = nn.WithPrecision(be, j.set.Precision); err != nil {
		return fmt.Errorf("trial: precision %s on %s: %w", j.set.Precision, device, err)
	}
	j.be, j.device = be, device
	j.logf("device: %s", device)
	if j.set.Precision != nn.FP32 {
		j.logf("precision: products read their operands at %s, everything else is float32", j.set.Precision)
	}
	if g, ok := be.(nn.GPU); ok {
		if s, err := openNVML(g.Info().PCIBusID); err != nil {
			j.logf("GPU energy: not metered (%v)", err)
		} else {
			j.gpu = startGPUMeter(s, time.Second)
		}
	}
	return nil
}

// blasWarmUp bounds, under a memory limit, the backend's opening and first
// product: they take milliseconds, unless the BLAS library found no room
// for its buffers.
const blasWarmUp = 10 * time.Second

// selectBackend opens the device's backend. Under a memory limit (limit
// bytes, 0: none) it also makes a first product split across the cores as
// the trainer's are, so that a BLAS library allocates its buffers before
// the model does: OpenBLAS, short of memory for them, does not fail but
// waits for memory for ever inside a C call that nothing can cancel. The
// trial then ends with an out-of-memory error, and the process's exit ends
// the waiting thread.
func selectBackend(device string, limit uint64) (nn.Backend, string, func() error, error) {
	type opened struct {
		be           nn.Backend
		note         string
		closeBackend func() error
		err          error
	}
	ready := make(chan opened, 1) // the opener never blocks, even if given up on
	go func() {
		var o opened
		o.be, o.note, o.closeBackend, o.err = nn.SelectBackend(device)
		if _, gpu := o.be.(nn.GPU); o.err == nil && limit > 0 && !gpu {
			warmUpBLAS(o.be)
		}
		ready <- o
	}()
	var timeout <-chan time.Time
	if limit > 0 {
		timeout = time.After(blasWarmUp)
	}
	select {
	case o := <-ready:
		return o.be, o.note, o.closeBackend, o.err
	case <-timeout:
		return nil, "", nil, fmt.Errorf("trial: out of memory: the matrix library found no room for its buffers under the memory limit of %d MB (trial_memory_gb); raise it", limit>>20)
	}
}

// warmUpBLAS makes the matrix library take, now, a buffer for each of
// the calls the trainer can have in it at once: OpenBLAS takes one per
// concurrent call, and a product split across goroutines (GOMAXPROCS
// parts at most) makes that many calls at once. One product at a time
// took one buffer, and the second, taken later in training with the model
// loaded, could find no room under the limit and wait for ever (a trial
// that stalled instead of ending out of memory, under load). So every
// goroutine multiplies until all have been at it together for a while.
func warmUpBLAS(be nn.Backend) {
	const n = 128 // above OpenBLAS's threshold for splitting a product
	const overlap = 50 * time.Millisecond
	workers := runtime.GOMAXPROCS(0)
	var started sync.WaitGroup
	started.Add(workers)
	var done sync.WaitGroup
	for range workers {
		done.Add(1)
		go func() {
			defer done.Done()
			a, c := make([]float32, n*n), make([]float32, n*n)
			be.Sgemm(false, false, n, n, n, 1, a, n, a, n, 0, c, n)
			started.Done()
			started.Wait() // every worker is in or past its first product
			for end := time.Now().Add(overlap); time.Now().Before(end); {
				be.Sgemm(false, false, n, n, n, 1, a, n, a, n, 0, c, n)
			}
		}()
	}
	done.Wait()
}

// initFromData runs a data-driven initialisation (LST's importance) once
// for the pack, when the method asks for one.
func (j *trainJob) initFromData() error {
	di, ok := j.runs[0].meth.(methods.DataInitializer)
	if !ok || !di.ImportanceWanted() {
		return nil
	}
	// Single training examples, as the LST recipe samples them.
	var sample []t5.Batch
	for _, e := range j.train[:min(len(j.train), j.set.InitExamples)] {
		sample = append(sample, makeBatch([]example{e}, j.tok.Pad()))
	}
	imp, release, err := dataImportance(di, j.be, j.m, sample, j.set, j.modelDir, j.task.Name, j.spec.Method, j.logf)
	if err != nil {
		return err
	}
	for _, pr := range j.runs { // the backbone's importance is the pack's
		pr.meth.(methods.DataInitializer).InitFrom(imp)
	}
	release()
	return nil
}

// packMethods lists the members' methods, in pack order.
func (j *trainJob) packMethods() []methods.Method {
	meths := make([]methods.Method, len(j.runs))
	for i, pr := range j.runs {
		meths[i] = pr.meth
	}
	return meths
}

// openCaches opens the training states' cache and the evaluation
// splits' encodings (kept on disk where the method allows).
func (j *trainJob) openCaches() error {
	set := j.set
	cache, err := openStateCache(j.runs[0].meth, set, j.dropout, j.modelDir, j.task.Name, len(j.batches), j.logf)
	if err != nil {
		return err
	}
	j.cache = cache
	j.releases = append(j.releases, cache.close)
	j.encodings = newEncodings(j.m, int64(set.StateCacheGB*1e9), j.logf)
	j.releases = append(j.releases, j.encodings.release)
	if persistEncodings(j.m, j.be, j.packMethods(), set) {
		if dir, digest, err := cacheDir(set, j.modelDir); err == nil {
			for split, ex := range map[string][]example{"validation": j.val, "test": j.test} {
				j.encodings.persist(split, filepath.Join(dir, "encodings-"+split+"-"+encodingsKey(digest, split, set.EvalBatchSize, ex)+".safetensors"))
			}
		}
	}
	return nil
}

// newFitRuns moves the parameters to the device and gives each member its
// optimiser, data order, validation and decoder.
func (j *trainJob) newFitRuns() {
	set := j.set
	// On a GPU the parameters move there once (after any data-driven
	// initialisation); the optimiser updates them there.
	nn.ToDevice(j.be, j.m.Params.Tensors...)
	j.beat = heartbeat(j.stdout, heartbeatEvery)
	j.fruns = make([]*fitRun, len(j.runs))
	steps := nn.NewGraph(j.be) // the pack's training steps, one at a time
	steps.FreeSaved = true     // a step reads nothing of the graph after its backward
	j.releases = append(j.releases, steps.Release)
	for i, pr := range j.runs {
		nn.ToDevice(j.be, pr.meth.Trainable()...)
		st := newStepper(steps, j.m, pr.meth, set, pr.lr, set.MaxEpochs*len(j.batches), j.cache, j.dropout > 0, uint64(pr.seed))
		fr := newFitRun(st, uint64(pr.seed), pr.logf)
		fr.validate = func(at evalPoint, meanLoss, trainSeconds float64) (float64, error) {
			return j.validate(pr, at, meanLoss, trainSeconds)
		}
		j.fruns[i] = fr
	}
	// A trial decodes with its pack while it is training (validation) or
	// finished (test); a failed or pruned one no longer decodes.
	dec := j.m.NewDecoder(j.be)
	j.releases = append(j.releases, dec.Release)
	decoders := packDecoders(j.m, j.be, dec, j.packMethods(), j.encodings, func(i int) bool {
		fr := j.fruns[i]
		if j.fitDone {
			return fr.completed()
		}
		return !fr.stopped
	}, func(i int) int { return j.fruns[i].st.step })
	for i, pr := range j.runs {
		pr.decode = decoders[i]
	}
}

// validate scores member pr on the validation split and reports the
// value as an epoch line.
func (j *trainJob) validate(pr *packRun, at evalPoint, meanLoss, trainSeconds float64) (float64, error) {
	t1 := time.Now()
	var scores glue.Scores
	phase(j.ctx, "validation", func() {
		scores = evaluate(pr.decode, "validation", j.tok, j.task, j.val, j.set.EvalBatchSize, j.maxTgt, j.viable, j.beat)
	})
	j.encodings.save("validation")
	pr.evalSeconds += time.Since(t1).Seconds()
	pr.evalScores = append(pr.evalScores, scores)
	value := scores["score"]
	pr.reported = append(pr.reported, Reported{Step: at.report(), Value: Float(value)})
	if _, err := j.stdout.Write(pr.message(j.packed, Message{Type: TypeEpoch, Step: at.report(), Value: Float(value),
		Attrs: map[string]any{"train_loss": meanLoss, "metrics": scores}})); err != nil {
		return 0, fmt.Errorf("trial: %w", err)
	}
	pr.logf("%s: train loss %.4f, validation %s %.2f (%.1fs)", at, meanLoss, j.task.Metric, value,
		trainSeconds+time.Since(t1).Seconds())
	return value, nil
}

// fitConfig is the loop's schedule, data and per-epoch hook.
func (j *trainJob) fitConfig() fitConfig {
	set := j.set
	return fitConfig{
		maxEpochs: set.MaxEpochs,
		patience:  set.Patience,
		batches:   len(j.batches),
		evalSteps: set.EvalSteps,
		evalAt:    set.EvalAt,
		keepLast:  set.SaveModel == "last",
		batch:     func(i int) t5.Batch { return makeBatch(j.batches[i], j.tok.Pad()) },
		beat:      j.beat,
		between:   j.checkpointIfDue,
		epochDone: func(epoch int) {
			if epoch != 0 || j.cache == nil {
				return
			}
			if err := j.cache.save(); err != nil {
				j.logf("state cache: not saved: %v", err)
			} else if j.cache.over {
				j.logf("state cache: the training split's states exceed state_cache_gb = %g; running the backbone every epoch", set.StateCacheGB)
			}
		},
	}
}

// scoreTest scores each member that trained to the end on the test split (and
// times single examples once a pack); a member that failed reports its
// reason as its final line.
func (j *trainJob) scoreTest() error {
	set := j.set
	latency := -1.0
	for i, pr := range j.runs {
		fr := j.fruns[i]
		switch {
		case fr.pruned:
			continue
		case fr.err != nil:
			// The pack goes on; this trial alone fails, with the reason.
			pr.logf("%v", fr.err)
			if _, err := j.stdout.Write(pr.message(j.packed, Message{Type: TypeFinal, Value: Float(math.NaN()),
				Attrs: map[string]any{"fail_reason": fr.err.Error()}})); err != nil {
				return err
			}
			continue
		}
		t2 := time.Now()
		var testScores glue.Scores
		phase(j.ctx, "test", func() {
			testScores = evaluate(pr.decode, "test", j.tok, j.task, j.test, set.EvalBatchSize, j.maxTgt, j.viable, j.beat)
		})
		j.encodings.save("test")
		pr.evalSeconds += time.Since(t2).Seconds()
		pr.test = testScores
		// Latency is the architecture's, not the learning rate's: a pack
		// times it once, with its first finished trial; latency_examples 0
		// (a search trial's default) times nothing.
		if latency < 0 && set.LatencyExamples > 0 {
			phase(j.ctx, "latency", func() { latency = latencyMS(pr.decode, j.test, set.LatencyExamples, j.maxTgt) })
		}
		pr.latency = latency
	}
	return nil
}

// report writes each finished member's final line: its scores, and the
// process's time, memory and energy (shared evenly within a pack).
func (j *trainJob) report() error {
	energy := j.meter.stop(j.set.PackageWatts)
	cpuEnergy := energy
	var ge gpuEnergy
	if j.gpu != nil {
		ge = j.gpu.stop(j.set.GPUP0Watts)
		if !math.IsNaN(ge.joules) {
			// Table 1 is GPU energy: the counter replaces the CPU figure.
			energy.joules, energy.source = ge.joules, "nvml"
		}
	}
	// A pack's energy and memory are the process's; energy is split evenly
	// between the trials that trained to the end.
	finished := 0
	for _, fr := range j.fruns {
		if fr.completed() {
			finished++
		}
	}
	share := 1 / float64(max(finished, 1))
	for i, pr := range j.runs {
		fr := j.fruns[i]
		if !fr.completed() {
			continue
		}
		prior := pr.priorJoules // what its predecessors spent, in energy_source's terms
		if energy.source == "nvml" {
			prior = pr.priorGPUJoules
		}
		attrs := map[string]any{
			"validation":                fr.best,
			"validation_metrics":        pr.evalScores[fr.bestAt.index],
			"test":                      pr.test["score"],
			"test_metrics":              pr.test,
			"best_epoch":                fr.bestAt.epoch,
			"best_step":                 fr.bestAt.steps,
			"epochs":                    fr.epochs,
			"steps":                     fr.st.step,
			"trainable_params":          j.nTrain,
			"trainable_percent":         100 * float64(j.nTrain) / float64(j.total),
			"peak_rss_bytes":            peakRSS(),
			"energy_joules":             energy.joules*share + prior,
			"energy_source":             energy.source,
			"train_seconds":             fr.trainSeconds,
			"eval_seconds":              pr.evalSeconds,
			"seconds":                   time.Since(j.start).Seconds() + pr.priorSeconds,
			"trainable_sha256":          trainableDigest(fr.st.trainable),
			"train_examples_per_second": float64(fr.examples) / math.Max(fr.trainSeconds, 1e-9),
			"backend":                   j.be.Name(),
			"precision":                 j.set.Precision.String(),
			"device":                    j.device,
			"split_rule":                j.splits.Rule,
		}
		if pr.latency >= 0 {
			attrs["latency_ms_batch1"] = pr.latency
		}
		if pr.resumedFrom != "" {
			attrs["resumed_from"] = pr.resumedFrom
		}
		switch {
		case pr.modelErr != nil:
			attrs["model_error"] = pr.modelErr.Error()
		case pr.modelDir != "":
			attrs["model_dir"], attrs["model_bytes"] = pr.modelDir, pr.modelBytes
		}
		if j.packed {
			attrs["pack_size"] = len(j.runs)
			attrs["pack_trials"] = packNumbers(j.members)
		}
		if g, ok := j.be.(nn.GPU); ok {
			attrs["gpu"] = g.Info().String()
			attrs["gpu_peak_bytes"] = g.PeakBytes()
		}
		if j.gpu != nil {
			attrs["gpu_utilisation_mean"] = ge.meanUtil
			attrs["gpu_memory_used_peak_bytes"] = ge.memPeak
			attrs["energy_paper_estimate_joules"] = ge.paperJoules * share
			attrs["cpu_energy_joules"], attrs["cpu_energy_source"] = cpuEnergy.joules*share+pr.priorJoules, cpuEnergy.source
		}
		pr.logf("best validation %.2f at %s; test %.2f", fr.best, fr.bestAt, pr.test["score"])
		if _, err := j.stdout.Write(pr.message(j.packed, Message{Type: TypeFinal, Value: Float(fr.best), Attrs: attrs})); err != nil {
			return err
		}
	}
	return nil
}

// phase runs f under the profiler label phase=name (inherited by the
// goroutines it starts), so that `sweep trial --cpuprofile` splits a
// trial's time by what it was doing: go tool pprof -tagfocus phase=test.
func phase(ctx context.Context, name string, f func()) {
	pprof.Do(ctx, pprof.Labels("phase", name), func(context.Context) { f() })
}

// persistEncodings reports whether the evaluation splits' encodings go to
// files beside the state cache: caching is on, every method keeps the
// encoder frozen, and the CPU decodes (a GPU encodes a split in no time,
// and decodes from device memory).
func persistEncodings(m *t5.Model, be nn.Backend, meths []methods.Method, set Settings) bool {
	if _, gpu := be.(nn.GPU); gpu || set.StateCache == "off" {
		return false
	}
	for _, meth := range meths {
		if !encoderFrozen(m, meth) {
			return false
		}
	}
	return true
}

// openStateCache prepares the backbone-state cache when the method trains
// from states, the backbone runs without dropout and caching is on; it
// loads the file of an earlier trial with the same key.
func openStateCache(meth methods.Method, set Settings, dropout float64, modelDir, task string, n int, logf func(string, ...any)) (*stateCache, error) {
	st, ok := meth.(methods.StateTrainer)
	if !ok || !st.TrainsFromStates() || set.StateCache == "off" || dropout > 0 {
		return nil, nil
	}
	c := &stateCache{half: set.StateCache == "fp16", budget: int64(set.StateCacheGB * 1e9), batches: make([]*batchStates, n)}
	dir, digest, err := cacheDir(set, modelDir)
	if err != nil {
		logf("state cache: in memory only (%v)", err)
		return c, nil
	}
	key := cacheKey("v2", digest, task, "train", fmt.Sprint(set.DataSeed, set.MaxTrainExamples, set.MaxSourceLength, set.MaxTargetLength, set.BatchSize), set.StateCache)
	c.path = filepath.Join(dir, key+".safetensors")
	found, err := c.load(n)
	if err != nil {
		return nil, err
	}
	if found {
		logf("state cache: reading the frozen backbone's states from %s", c.path)
	} else {
		logf("state cache: computing the backbone's states in epoch 0, then %s", c.path)
	}
	return c, nil
}

// ResolveModel finds a model folder: a path, or a name fetched into the
// cache by `sweep fetch model`.
func ResolveModel(name string) (string, error) {
	if name == "" {
		return "", errors.New("trial: no model in the spec (set model: in the sweep file)")
	}
	if st, err := os.Stat(name); err == nil && st.IsDir() {
		return name, nil
	}
	if dir, err := t5.CacheDir(name); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
			return dir, nil
		}
	}
	if filepath.IsAbs(name) || strings.HasPrefix(name, "./") || strings.HasPrefix(name, "../") {
		return "", fmt.Errorf("trial: model folder %s does not exist (`sweep model new --out %s` makes a random one; `sweep fetch model t5-base --dir %s` downloads one)", name, name, name)
	}
	return "", fmt.Errorf("trial: model %q is neither a folder nor in the cache; `sweep fetch model %s` downloads it", name, name)
}

func limit(ex []glue.Example, n int) []glue.Example {
	if n > 0 && len(ex) > n {
		return ex[:n]
	}
	return ex
}

// tokenize turns examples into T5 text-to-text ids; sources longer than
// maxSrc keep their first maxSrc−1 tokens and </s>.
func tokenize(tok *t5.Tokenizer, task *glue.Task, ex []glue.Example, maxSrc int) []example {
	out := make([]example, len(ex))
	for i, e := range ex {
		src := tok.Encode(task.Input(e))
		if len(src) > maxSrc {
			src = append(src[:maxSrc-1:maxSrc-1], tok.EOS())
		}
		out[i] = example{src: src, tgt: tok.Encode(task.Target(e)), gold: e}
	}
	return out
}

// bucket groups examples of similar source length into batches, so little
// padding is computed.
func bucket(ex []example, size int) [][]example {
	idx := make([]int, len(ex))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return len(ex[idx[a]].src) < len(ex[idx[b]].src) })
	var out [][]example
	for lo := 0; lo < len(idx); lo += size {
		var b []example
		for _, i := range idx[lo:min(lo+size, len(idx))] {
			b = append(b, ex[i])
		}
		out = append(out, b)
	}
	return out
}

// makeBatch pads a batch: inputs with the pad id (masked), labels with
// −100 (ignored by the loss).
func makeBatch(ex []example, pad int32) t5.Batch {
	S, T := 0, 0
	for _, e := range ex {
		S, T = max(S, len(e.src)), max(T, len(e.tgt))
	}
	bt := t5.Batch{B: len(ex), S: S, T: T, Input: make([]int32, len(ex)*S), Mask: make([]bool, len(ex)*S), Labels: make([]int32, len(ex)*T)}
	for b, e := range ex {
		for i := 0; i < S; i++ {
			bt.Input[b*S+i] = pad
			if i < len(e.src) {
				bt.Input[b*S+i], bt.Mask[b*S+i] = e.src[i], true
			}
		}
		for i := 0; i < T; i++ {
			bt.Labels[b*T+i] = -100
			if i < len(e.tgt) {
				bt.Labels[b*T+i] = e.tgt[i]
			}
		}
	}
	return bt
}

// evaluate decodes greedily, at most maxTgt tokens, and scores the
// predictions with the task's metric. Rows end early where viable (an
// answerRule for maxTgt) rules them out: the scores are those of decoding
// them to the end.
func evaluate(decode decoder, split string, tok *t5.Tokenizer, task *glue.Task, ex []example, batchSize, maxTgt int, viable t5.Viable, beat func()) glue.Scores {
	preds, _ := decodeAll(decode, split, tok, task, ex, batchSize, maxTgt, viable, beat)
	gold := make([]glue.Example, len(ex))
	for i, e := range ex {
		gold[i] = e.gold
	}
	return task.Evaluate(preds, gold)
}

// decodeAll decodes ex in batches of similar length and returns each
// example's prediction and decoded text, in ex's order.
func decodeAll(decode decoder, split string, tok *t5.Tokenizer, task *glue.Task, ex []example, batchSize, maxTgt int, viable t5.Viable, beat func()) ([]glue.Prediction, []string) {
	preds := make([]glue.Prediction, len(ex))
	texts := make([]string, len(ex))
	byLen := make([]int, len(ex))
	for i := range byLen {
		byLen[i] = i
	}
	sort.SliceStable(byLen, func(a, b int) bool { return len(ex[byLen[a]].src) < len(ex[byLen[b]].src) })
	for lo := 0; lo < len(byLen); lo += batchSize {
		part := byLen[lo:min(lo+batchSize, len(byLen))]
		b := make([]example, len(part))
		for i, k := range part {
			b[i] = ex[k]
		}
		bt := makeBatch(b, tok.Pad())
		out := decode(fmt.Sprintf("%s/%d", split, lo), bt.Input, bt.Mask, bt.B, bt.S, maxTgt, viable)
		for i, k := range part {
			texts[k] = tok.Decode(out[i][1:])
			preds[k] = task.Parse(texts[k])
		}
		beat()
	}
	return preds, texts
}

// answerRule is the row-ending rule of evaluation's decoding, at most
// maxNew tokens a row: a row goes on while its text so far (Decode of its
// tokens, which the prediction's text extends) can still parse to a label
// (glue.Task.Reachable) whose rest the tokens left can spell. Decode trims
// trailing space too, and fewestTokens is a lower bound: both only keep a
// row going longer than it must. A random model's rows of padding (no
// text) end once too few steps are left for any label. Nil for regression,
// whose answers decode to the end.
func answerRule(tok *t5.Tokenizer, task *glue.Task, maxNew int) t5.Viable {
	if task.Regression() {
		return nil
	}
	need := fewestTokens(tok, task.Labels)
	return func(tokens []int32) bool {
		left := maxNew - len(tokens)
		return task.Reachable(tok.Decode(tokens), func(rest string) bool { return need[rest] <= left })
	}
}

// fewestTokens maps every suffix of every label to a lower bound on the
// tokens that add it to a decoded text: the fewest pieces whose texts,
// trimmed of space, spell it in turn with any space between them
// (decoding's texts must also put their spaces where Parse allows them, so
// it needs at least as many). A suffix no pieces spell maps to more tokens
// than any decoding has.
func fewestTokens(tok *t5.Tokenizer, labels []string) map[string]int {
	seen := map[string]bool{}
	var texts []string
	for id := range int32(tok.VocabSize()) {
		if s := tok.Decode([]int32{id}); s != "" && !seen[s] {
			seen[s] = true
			texts = append(texts, s)
		}
	}
	need := map[string]int{"": 0}
	for _, l := range labels {
		// Shorter suffixes first, so that every longer one finds its rests.
		for i := len(l) - 1; i >= 0; i-- {
			s := l[i:]
			if _, done := need[s]; done {
				continue
			}
			if t := strings.TrimLeftFunc(s, unicode.IsSpace); t != s {
				need[s] = need[t] // space comes with the pieces around it
				continue
			}
			best := math.MaxInt32
			for _, p := range texts {
				if rest, ok := strings.CutPrefix(s, p); ok {
					best = min(best, need[rest]+1)
				}
			}
			need[s] = best
		}
	}
	return need
}

// latencyMS times greedy decoding of single examples, each to its end.
func latencyMS(decode decoder, ex []example, n, maxTgt int) float64 {
	n = min(n, len(ex))
	if n == 0 {
		return 0
	}
	t0 := time.Now()
	for _, e := range ex[:n] {
		decode("", e.src, nil, 1, len(e.src), maxTgt, nil)
	}
	return float64(time.Since(t0).Microseconds()) / 1000 / float64(n)
}

func snapshot(ts []*nn.Tensor, into [][]float32) [][]float32 {
	if into == nil {
		into = make([][]float32, len(ts))
		for i, t := range ts {
			into[i] = make([]float32, t.Len())
		}
	}
	for i, t := range ts {
		copy(into[i], t.Values())
	}
	return into
}

func restore(ts []*nn.Tensor, from [][]float32) {
	for i, t := range ts {
		t.SetValues(from[i])
	}
}

// Preflight checks, before a sweep starts its first trial, what every
// built-in trial will need: the model folder (config.json, spiece.model,
// safetensors weights) and each dataset's files under dataDir. It reports
// every problem at once, so a sweep does not burn max_failures trials per
// study on a missing folder.
func Preflight(model, dataDir string, datasets []string) error {
	var problems []error
	if dir, err := ResolveModel(model); err != nil {
		problems = append(problems, err)
	} else {
		for _, f := range []string{"config.json", "spiece.model"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				problems = append(problems, fmt.Errorf("model %s has no %s", dir, f))
			}
		}
		found := false
		for _, f := range t5.WeightFiles {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				found = true
			}
		}
		if !found {
			problems = append(problems, fmt.Errorf("model %s has no weights (%s)", dir, strings.Join(t5.WeightFiles, ", ")))
		}
	}
	if dataDir == "" {
		problems = append(problems, errors.New("data_dir is not set: name the folder with the GLUE tasks (`sweep fetch glue --dir data/glue` downloads them)"))
	} else {
		for _, name := range datasets {
			task, err := glue.Lookup(name)
			if err == nil {
				_, _, err = glue.Files(dataDir, task)
			}
			if err != nil {
				problems = append(problems, err)
			}
		}
	}
	return errors.Join(problems...)
}

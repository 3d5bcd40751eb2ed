package trial

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/baselines"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/read"
	"github.com/readsweep/readsweep/t5"
)

// trajectoryCase is one entry of testdata/trajectory/cases.json (made by
// make.py beside it with PyTorch).
type trajectoryCase struct {
	Checkpoint   string         `json:"checkpoint"`
	Method       string         `json:"method"`
	Arch         map[string]any `json:"arch"`
	LR           float64        `json:"lr"`
	WeightDecay  float64        `json:"weight_decay"`
	WarmupRatio  float64        `json:"warmup_ratio"`
	ClipNorm     float64        `json:"clip_norm"`
	Steps        int            `json:"steps"`
	File         string         `json:"file"`
	ClippedSteps int            `json:"clipped_steps"` // in PyTorch's float32 run
	// How far PyTorch's own float32 run ended from the float64 trajectory
	// the goldens hold (relative, as the test measures ours).
	Torch32LossErr     float64 `json:"torch32_loss_err"`
	Torch32GradNormErr float64 `json:"torch32_grad_norm_err"`
	Torch32FinalErr    float64 `json:"torch32_final_err"`
}

// trajectoryTol is the tolerance: 1e-5, or 10× PyTorch's own float32 error
// where float32 cannot reach 1e-5. Over 20 AdamW steps an element whose
// gradient crosses zero takes a step of either sign, so rounding decides
// it; PyTorch's float32 distance is one sample of that (its summation
// order), ours another (OpenBLAS's or gonum's), hence the margin.
func trajectoryTol(torch32 float64) float64 { return math.Max(1e-5, 10*torch32) }

const trajectoryDir = "testdata/trajectory"

// TestTrajectoriesMatchPyTorch trains every method on both tiny checkpoints
// for 20 steps through the trainer's own stepper, from the initial tensors
// PyTorch started from, on PyTorch's batches, and compares each step's loss,
// gradient norm before clipping and learning rate, and the final tensors,
// with what torch.optim.AdamW, LambdaLR (Hugging Face's linear schedule) and
// clip_grad_norm_ did in float64 from the same start (trajectoryTol). On the
// OpenBLAS and the pure-Go paths.
func TestTrajectoriesMatchPyTorch(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(trajectoryDir, "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Cases []trajectoryCase }
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Cases) != 24 {
		t.Fatalf("%d cases, want 6 methods × 2 checkpoints × 2 schedules", len(file.Cases))
	}
	clipped := 0
	for _, c := range file.Cases {
		clipped += c.ClippedSteps
	}
	if clipped == 0 {
		t.Fatal("no case clips: the goldens do not exercise clipping")
	}
	reg := methods.Registry{}
	baselines.Register(reg)
	read.Register(reg)
	for _, be := range cpuBackends() {
		for _, c := range file.Cases {
			t.Run(be.Name()+"/"+c.File, func(t *testing.T) { checkTrajectory(t, be, reg, c) })
		}
	}
}

// cpuBackends are OpenBLAS where it opens, and gonum's pure-Go BLAS.
func cpuBackends() []nn.Backend {
	if o, err := nn.LoadOpenBLAS(); err == nil {
		return []nn.Backend{o, nn.Gonum{}}
	}
	return []nn.Backend{nn.Gonum{}}
}

func checkTrajectory(t *testing.T, be nn.Backend, reg methods.Registry, c trajectoryCase) {
	m, err := t5.Load(filepath.Join("..", "t5", "testdata", c.Checkpoint))
	if err != nil {
		t.Fatal(err)
	}
	gold, err := t5.OpenSafetensors(filepath.Join(trajectoryDir, c.File))
	if err != nil {
		t.Fatal(err)
	}
	defer gold.Close()
	batches, order := trajectoryBatches(t, c.Checkpoint)
	meth, err := reg.New(c.Method, m, c.Arch, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Every trainable tensor starts where PyTorch's did.
	names := tensorNames(meth)
	trainable := meth.Trainable()
	for _, x := range trainable {
		if err := gold.Read("init."+names[x], x.Data); err != nil {
			t.Fatalf("trainable tensor %q: %v", names[x], err)
		}
	}
	if n := countPrefix(gold, "init."); n != len(trainable) {
		t.Fatalf("PyTorch trained %d tensors, the %s method %d", n, c.Method, len(trainable))
	}
	set, err := ParseSettings(map[string]any{"weight_decay": c.WeightDecay, "warmup_ratio": c.WarmupRatio,
		"clip_norm": c.ClipNorm, "dropout": 0})
	if err != nil {
		t.Fatal(err)
	}
	st := newStepper(nn.NewGraph(be), m, meth, set, c.LR, c.Steps, nil, false, 0)
	defer st.g.Release()
	wantLoss, wantNorm, wantLR := goldVector(t, gold, "loss"), goldVector(t, gold, "grad_norm"), goldVector(t, gold, "lr")
	var lossErr, normErr, finalErr float64 // ours, for the log
	for i, k := range order {
		got, err := st.run(k, batches[k])
		if err != nil {
			t.Fatal(err)
		}
		lossErr = math.Max(lossErr, math.Abs(got.Loss/float64(wantLoss[i])-1))
		normErr = math.Max(normErr, math.Abs(got.GradNorm/float64(wantNorm[i])-1))
		if !closeRel(got.Loss, wantLoss[i], trajectoryTol(c.Torch32LossErr)) || !closeRel(got.GradNorm, wantNorm[i], trajectoryTol(c.Torch32GradNormErr)) ||
			!closeRel(got.LR, wantLR[i], 1e-6) {
			t.Fatalf("step %d: loss %.8g, grad norm %.8g, lr %.6g; PyTorch %.8g, %.8g, %.6g",
				i, got.Loss, got.GradNorm, got.LR, wantLoss[i], wantNorm[i], wantLR[i])
		}
	}
	for _, x := range trainable {
		want, _, err := gold.ReadAll("final." + names[x])
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(names[x], ".k.bias") {
			checkZeroGradientBias(t, names[x], x.Data, want, c)
			continue
		}
		var scale, worst float64
		for j, v := range want {
			scale = math.Max(scale, math.Abs(float64(v)))
			worst = math.Max(worst, math.Abs(float64(x.Data[j]-v)))
		}
		if !strings.HasSuffix(names[x], ".k.bias") {
			finalErr = math.Max(finalErr, worst/scale)
		}
		if tol := trajectoryTol(c.Torch32FinalErr); worst > tol*scale {
			t.Errorf("%s after %d steps: max |Go − PyTorch| = %.3g, %.3g of its largest value (tolerance %.3g; PyTorch's float32 run %.3g)",
				names[x], c.Steps, worst, worst/scale, tol, c.Torch32FinalErr)
		}
	}
	t.Logf("from PyTorch's float64 trajectory: loss %.1e, grad norm %.1e, final %.1e (PyTorch's float32 run: %.1e, %.1e, %.1e)",
		lossErr, normErr, finalErr, c.Torch32LossErr, c.Torch32GradNormErr, c.Torch32FinalErr)
}

// checkZeroGradientBias checks BitFit's bias on an attention's keys: it
// adds the same amount to every score of a query, which the softmax takes
// away, so its gradient is exactly zero and what each side computes is
// rounding noise that AdamW then scales up to steps of about lr/10 (ε 1e-8
// against noise near 1e-9). No two implementations agree on that noise, so
// here both must only stay within what AdamW can do in the steps taken
// (|Δ| ≤ lr per step) while every other tensor is compared exactly.
func checkZeroGradientBias(t *testing.T, name string, got, want []float32, c trajectoryCase) {
	limit := float32(c.LR * float64(c.Steps))
	for j := range got {
		if math.Abs(float64(got[j])) > float64(limit) || math.Abs(float64(want[j])) > float64(limit) {
			t.Errorf("%s[%d] = %g (PyTorch %g): more than lr·steps = %g from its zero start", name, j, got[j], want[j], limit)
			return
		}
	}
}

// trajectoryBatches reads the batches PyTorch trained on and the order it
// took them in.
func trajectoryBatches(t *testing.T, checkpoint string) ([]t5.Batch, []int) {
	f, err := t5.OpenSafetensors(filepath.Join(trajectoryDir, checkpoint+".batches.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var batches []t5.Batch
	for k := 0; ; k++ {
		ids, shape, err := f.ReadInts(fmt.Sprintf("batch.%d.input_ids", k))
		if err != nil {
			break
		}
		am, _, err := f.ReadInts(fmt.Sprintf("batch.%d.attention_mask", k))
		if err != nil {
			t.Fatal(err)
		}
		labels, lshape, err := f.ReadInts(fmt.Sprintf("batch.%d.labels", k))
		if err != nil {
			t.Fatal(err)
		}
		mask := make([]bool, len(am))
		for i, v := range am {
			mask[i] = v == 1
		}
		batches = append(batches, t5.Batch{B: shape[0], S: shape[1], T: lshape[1], Input: ids, Mask: mask, Labels: labels})
	}
	o, _, err := f.ReadInts("order")
	if err != nil {
		t.Fatal(err)
	}
	order := make([]int, len(o))
	for i, v := range o {
		order[i] = int(v)
	}
	if len(batches) == 0 {
		t.Fatal("no batches")
	}
	return batches, order
}

func goldVector(t *testing.T, f *t5.Safetensors, name string) []float32 {
	v, _, err := f.ReadAll(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func countPrefix(f *t5.Safetensors, prefix string) int {
	n := 0
	for name := range f.Tensors {
		if strings.HasPrefix(name, prefix) {
			n++
		}
	}
	return n
}

func closeRel(got float64, want float32, tol float64) bool {
	return math.Abs(got-float64(want)) <= tol*math.Max(math.Abs(float64(want)), 1e-12)
}

// TestEarlyStoppingRestoresBestEpoch runs fit, the trainer's epoch loop,
// with a real READ stepper and validation scores that peak at epoch 1:
// with patience 3 it trains epochs 0–4 (three without improvement after
// the best), stops, and leaves the parameters as they were when epoch 1
// was validated, which is what the test split is then scored with.
func TestEarlyStoppingRestoresBestEpoch(t *testing.T) {
	reg := methods.Registry{}
	read.Register(reg)
	for _, tc := range []struct {
		scores       []float64
		patience     int
		epochs, best int
		maxEpochs    int
	}{
		{[]float64{10, 30, 20, 25, 15, 99, 99}, 3, 5, 1, 7}, // stops after 3 epochs without improvement
		{[]float64{10, 30, 20, 25, 35, 12, 11}, 3, 7, 4, 7}, // an improvement at epoch 4 resets the count; ends at max_epochs
		{[]float64{50, 40, 60}, 0, 2, 0, 3},                 // patience 0: the first epoch without improvement stops
	} {
		m, err := t5.Load(filepath.Join("..", "t5", "testdata", "tiny-t5-v1"))
		if err != nil {
			t.Fatal(err)
		}
		meth, err := reg.New("read", m, map[string]any{"hidden": 8}, 1)
		if err != nil {
			t.Fatal(err)
		}
		set, _ := ParseSettings(map[string]any{"dropout": 0})
		batches, _ := trajectoryBatches(t, "tiny-t5-v1")
		st := newStepper(nn.NewGraph(nn.Gonum{}), m, meth, set, 1e-2, tc.maxEpochs*len(batches), nil, false, 0)
		var seen [][]float32 // the parameters at each validation
		r := &fitRun{st: st, order: rand.NewPCG(1, 2), logf: func(string, ...any) {}, best: math.Inf(-1), bestAt: evalPoint{index: -1},
			validate: func(at evalPoint, _, _ float64) (float64, error) {
				if at.index != at.epoch || at.report() != at.epoch || at.steps != (at.epoch+1)*len(batches) {
					t.Fatalf("validation %+v: want one per epoch, reported at the epoch", at)
				}
				seen = append(seen, flatten(st.trainable))
				return tc.scores[at.epoch], nil
			}}
		err = fit(t.Context(), []*fitRun{r}, fitConfig{
			maxEpochs: tc.maxEpochs, patience: tc.patience, batches: len(batches),
			batch: func(i int) t5.Batch { return batches[i] },
			beat:  func() {},
		})
		if err == nil {
			err = r.err
		}
		st.g.Release()
		if err != nil {
			t.Fatal(err)
		}
		if r.epochs != tc.epochs || r.bestAt.epoch != tc.best || r.best != tc.scores[tc.best] {
			t.Fatalf("scores %v, patience %d: %d epochs, best %g at %d; want %d epochs, best at %d",
				tc.scores, tc.patience, r.epochs, r.best, r.bestAt.epoch, tc.epochs, tc.best)
		}
		now := flatten(st.trainable)
		for i := range now {
			if now[i] != seen[tc.best][i] {
				t.Fatalf("scores %v: parameter %d is %g after fit, %g at the best epoch", tc.scores, i, now[i], seen[tc.best][i])
			}
		}
		if last := seen[len(seen)-1]; tc.best != len(seen)-1 && equalFloats(last, now) {
			t.Fatalf("scores %v: the last epoch's parameters were kept", tc.scores)
		}
	}
}

// TestEvalSteps: with eval_steps N, fit validates every N optimiser steps
// across epoch boundaries and after the last step; with a list, at those
// steps and after every epoch. It reports the steps taken, counts patience
// in validations (stopping in mid-epoch), and restores the parameters of
// the best validation.
func TestEvalSteps(t *testing.T) {
	reg := methods.Registry{}
	read.Register(reg)
	m, err := t5.Load(filepath.Join("..", "t5", "testdata", "tiny-t5-v1"))
	if err != nil {
		t.Fatal(err)
	}
	batches, _ := trajectoryBatches(t, "tiny-t5-v1")
	nb := len(batches)
	if nb < 3 {
		t.Fatalf("%d trajectory batches; the test needs 3 or more", nb)
	}
	// Every 2 steps over 3 epochs: validations at 2, 4, …, and at 3·nb.
	var every2 []int
	for s := 2; s < 3*nb; s += 2 {
		every2 = append(every2, s)
	}
	if every2[len(every2)-1] != 3*nb {
		every2 = append(every2, 3*nb)
	}
	// At steps 1 and nb+2, and after each epoch.
	listed := []int{1, nb, nb + 2, 2 * nb, 3 * nb}
	for _, tc := range []struct {
		name     string
		setting  any
		want     []int
		patience int
		scores   func(k int) float64
		best     int // validation index
		stops    int // validations made
	}{
		{"every 2, improving", 2, every2, 99, func(k int) float64 { return float64(k) }, len(every2) - 1, len(every2)},
		{"every 2, peak at the 2nd", 2, every2, 2, func(k int) float64 { return []float64{1, 5, 2, 3, 4, 9, 9, 9, 9, 9, 9, 9, 9}[k] }, 1, 4},
		{"listed, peak at the 3rd", []any{nb + 2, 1}, listed, 1, func(k int) float64 { return []float64{1, 2, 7, 3, 9}[k] }, 2, 4},
		{"listed, improving", []any{1, nb + 2}, listed, 9, func(k int) float64 { return float64(k) }, 4, 5},
	} {
		want := tc.want
		meth, err := reg.New("read", m, map[string]any{"hidden": 8}, 1)
		if err != nil {
			t.Fatal(err)
		}
		set, err := ParseSettings(map[string]any{"dropout": 0, "eval_steps": tc.setting})
		if err != nil {
			t.Fatal(err)
		}
		st := newStepper(nn.NewGraph(nn.Gonum{}), m, meth, set, 1e-2, 3*nb, nil, false, 0)
		var steps []int
		var seen [][]float32
		r := &fitRun{st: st, order: rand.NewPCG(1, 2), logf: func(string, ...any) {}, best: math.Inf(-1), bestAt: evalPoint{index: -1},
			validate: func(at evalPoint, _, _ float64) (float64, error) {
				if at.index != len(steps) || at.report() != at.steps || at.steps != st.step || at.epoch != (at.steps-1)/nb {
					t.Fatalf("%s: validation %+v after %d steps (validation %d)", tc.name, at, st.step, len(steps))
				}
				steps = append(steps, at.steps)
				seen = append(seen, flatten(st.trainable))
				return tc.scores(at.index), nil
			}}
		err = fit(t.Context(), []*fitRun{r}, fitConfig{maxEpochs: 3, patience: tc.patience, batches: nb, evalSteps: set.EvalSteps, evalAt: set.EvalAt,
			batch: func(i int) t5.Batch { return batches[i] }, beat: func() {}})
		if err == nil {
			err = r.err
		}
		st.g.Release()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(steps, want[:tc.stops]) {
			t.Fatalf("%s: validated at steps %v, want %v", tc.name, steps, want[:tc.stops])
		}
		if r.bestAt.index != tc.best || r.bestAt.steps != want[tc.best] || !equalFloats(flatten(st.trainable), seen[tc.best]) {
			t.Fatalf("%s: best %+v, want validation %d with its parameters restored", tc.name, r.bestAt, tc.best)
		}
	}
}

func flatten(ts []*nn.Tensor) []float32 {
	var out []float32
	for _, x := range ts {
		out = append(out, x.Data...)
	}
	return out
}

func equalFloats(a, b []float32) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

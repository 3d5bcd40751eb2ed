package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/readsweep/readsweep/glue"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/sweep/storage"
	"github.com/readsweep/readsweep/t5"
	"github.com/readsweep/readsweep/trial"
	"gonum.org/v1/gonum/stat"
)

// benchSweepCost measures what a READ (or LST) study costs as a user runs it: `sweep
// run` on a random model (or a checkpoint named by --model), one trial, then studies of 8 and 32 trials,
// unpacked and packed, without and with ASHA, each timed from the command's
// start to its end. Every run shares one state cache, which the first trial
// fills, so the rows after it compare the warm-cache cost the issue is about.
func benchSweepCost(args []string) error {
	fs := newFlags("bench sweep-cost", "bench sweep-cost [--d-model 512 --d-kv 64 --d-ff 2048 --layers 6 --heads 8] [--method read|lst] [--hidden 256] [--sidenet-dim 64] [--epochs 3] [--batch 16] [--src 64] [--trials 8,32] [--pack 8] [--asha] [--asha-only] [--eval-steps N|S1,S2,…] [--min-resource N] [--reduction-factor 3] [--ones 3] [--data glue/testdata/fixture] [--spiece examples/spiece-tiny.model] [--model DIR|NAME] [--max-train-examples N] [--max-eval-examples N] [--dir DIR]")
	shape := addShapeFlags(fs, modelShape{DModel: 512, DKV: 64, DFF: 2048, Layers: 6, Heads: 8}) // t5-small's
	method := fs.String("method", "read", "the method of the study: read or lst (both pack)")
	hidden := fs.Int("hidden", 256, "READ's GRU size")
	sidenet := fs.Int("sidenet-dim", 64, "LST's side width (d_model/8 for t5-small)")
	epochs := fs.Int("epochs", 3, "max_epochs")
	batch := fs.Int("batch", 16, "batch_size")
	src := fs.Int("src", 64, "max_source_length")
	trialList := fs.String("trials", "8,32", "study sizes after the single trial")
	pack := fs.Int("pack", 8, "pack size of the packed rows")
	asha := fs.Bool("asha", true, "also run each study size with the ASHA pruner")
	ashaOnly := fs.Bool("asha-only", false, "run the single trial and the ASHA rows only")
	evalSteps := fs.String("eval-steps", "", "the ASHA rows' eval_steps: N validates every N optimiser steps, S1,S2,… at those steps and after every epoch (default: after every epoch)")
	minResource := fs.Int("min-resource", 0, "ASHA's min_resource, in the unit of the reports (default: 1 epoch, or the first validation step)")
	eta := fs.Int("reduction-factor", 3, "ASHA's reduction_factor")
	ones := fs.Int("ones", 3, "runs of the single trial (warm cache); their median is the baseline of the ratios")
	data := fs.String("data", "glue/testdata/fixture", "GLUE folder with SST-2")
	spiece := fs.String("spiece", "examples/spiece-tiny.model", "tokenizer of the random model")
	dir := fs.String("dir", "", "work folder (default: a temporary one, removed after)")
	// The fixture and a random model are what this machine has; a
	// pretrained checkpoint and the real SST-2 are where early validations
	// tell learning rates apart and evaluation is a small share, so the
	// same measurement can run there.
	modelFlag := fs.String("model", "", "a T5 checkpoint, a folder or a name that 'sweep fetch model' cached, instead of a random model of the shape flags (it brings its own tokenizer)")
	maxTrain := fs.Int("max-train-examples", 0, "training examples per epoch (0: the split's all)")
	maxEval := fs.Int("max-eval-examples", 0, "validation and test examples (0: the splits' all)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	var sizes []int
	for _, f := range strings.Split(*trialList, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err != nil || n < 1 {
			return fmt.Errorf("%w: --trials %q: want sizes like 8,32", errUsage, *trialList)
		}
		sizes = append(sizes, n)
	}
	var arch, about string
	switch *method {
	case "read":
		arch, about = fmt.Sprintf("read: [{hidden: %d}]", *hidden), fmt.Sprintf("READ (GRU %d)", *hidden)
	case "lst":
		arch, about = fmt.Sprintf("lst: [{sidenet_dim: %d}]", *sidenet), fmt.Sprintf("LST (side width %d, Fisher init)", *sidenet)
	default:
		return fmt.Errorf("%w: --method %q: want read or lst (the methods that pack)", errUsage, *method)
	}
	evalSetting, firstEval, err := parseEvalSteps(*evalSteps)
	if err != nil {
		return err
	}
	if *minResource <= 0 {
		*minResource = max(firstEval, 1)
	}
	if *ashaOnly {
		*asha = true
	}
	if len(pos) > 0 || *pack < 2 || *epochs < 1 || *eta < 2 || *ones < 1 || *maxTrain < 0 || *maxEval < 0 {
		fs.Usage()
		return errUsage
	}
	if *modelFlag != "" {
		var shapeSet []string
		fs.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "d-model", "d-kv", "d-ff", "layers", "heads", "spiece":
				shapeSet = append(shapeSet, "--"+f.Name)
			}
		})
		if len(shapeSet) > 0 {
			return fmt.Errorf("%w: --model %s brings its own shape and tokenizer: drop %s", errUsage, *modelFlag, strings.Join(shapeSet, ", "))
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	absData, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	sst2, err := glue.Lookup("sst2")
	if err != nil {
		return err
	}
	// Either layout: GLUE's SST-2/*.tsv (the fixture) or the hub's
	// sst2/*.parquet that `sweep fetch glue` writes.
	if _, err := glue.DetectLayout(absData, sst2); err != nil {
		return fmt.Errorf("bench sweep-cost: --data (run from the repository's root, or name the folder): %w", err)
	}
	modelDir := "model" // `sweep model new` writes it in the work folder, where the sweeps run
	about += " on SST-2 (" + *data + "), "
	if *modelFlag == "" {
		about += fmt.Sprintf("random T5 d_model %d, d_ff %d, %d+%d layers, %d heads", shape.DModel, shape.DFF, shape.Layers, shape.Layers, shape.Heads)
	} else {
		// What `sweep run` would refuse, refused before any folder is made.
		if err := trial.Preflight(*modelFlag, absData, []string{"sst2"}); err != nil {
			return fmt.Errorf("bench sweep-cost: --model: %w", err)
		}
		found, err := trial.ResolveModel(*modelFlag)
		if err != nil {
			return fmt.Errorf("bench sweep-cost: --model: %w", err)
		}
		if modelDir, err = filepath.Abs(found); err != nil {
			return err
		}
		mc, err := t5.LoadConfig(modelDir)
		if err != nil {
			return fmt.Errorf("bench sweep-cost: --model: %w", err)
		}
		name := modelDir
		if abs, _ := filepath.Abs(*modelFlag); abs != modelDir {
			name = *modelFlag + " (" + modelDir + ")" // a name from the cache
		}
		about += fmt.Sprintf("T5 %s, d_model %d, d_ff %d, %d+%d layers, %d heads", name, mc.DModel, mc.DFF, mc.NumLayers, mc.NumDecoderLayers, mc.NumHeads)
	}
	work := *dir
	if work == "" {
		if work, err = os.MkdirTemp("", "sweep-cost-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return fmt.Errorf("bench sweep-cost: --dir: %w", err)
	}
	sweepCmd := func(args ...string) (time.Duration, error) {
		cmd := exec.Command(exe, args...)
		cmd.Dir = work
		var errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &errOut, &errOut
		t0 := time.Now()
		if err := cmd.Run(); err != nil {
			return 0, fmt.Errorf("sweep %s: %w\n%s", strings.Join(args, " "), err, errOut.String())
		}
		return time.Since(t0), nil
	}
	if *modelFlag == "" {
		absSpiece, err := filepath.Abs(*spiece)
		if err != nil {
			return err
		}
		if _, err := sweepCmd(append([]string{"model", "new", "--out", modelDir, "--spiece", absSpiece}, shape.args()...)...); err != nil {
			return err
		}
	}
	limits := ""
	for _, l := range []struct {
		key string
		n   int
	}{{"max_train_examples", *maxTrain}, {"max_eval_examples", *maxEval}} {
		if l.n > 0 {
			limits += fmt.Sprintf(", %s: %d", l.key, l.n)
			about += fmt.Sprintf(", %s %d", l.key, l.n)
		}
	}
	type row struct {
		name         string
		trials, pack int
		asha         bool
	}
	// One trial's time varies by a tenth or more between runs on a shared
	// machine, and every ratio divides by it: the baseline is the median of
	// several.
	rows := []row{{"1 trial, computes the state cache", 1, 1, false}}
	for i := range *ones {
		name := "1 trial"
		if *ones > 1 {
			name = fmt.Sprintf("1 trial (%d of %d)", i+1, *ones)
		}
		rows = append(rows, row{name, 1, 1, false})
	}
	for _, n := range sizes {
		if !*ashaOnly {
			rows = append(rows, row{fmt.Sprintf("%d trials", n), n, 1, false}, row{fmt.Sprintf("%d trials, pack %d", n, *pack), n, *pack, false})
		}
		if *asha {
			rows = append(rows, row{fmt.Sprintf("%d trials, ASHA", n), n, 1, true}, row{fmt.Sprintf("%d trials, pack %d, ASHA", n, *pack), n, *pack, true})
		}
	}
	fmt.Printf("sweep bench sweep-cost: %s; %d epochs, batch %d, max_source_length %d; state cache fp32, parallel 1, TPE seed 0\n",
		about, *epochs, *batch, *src)
	if *asha {
		unit := "epochs; validation after every epoch"
		if evalSetting != "" {
			unit = fmt.Sprintf("optimiser steps; eval_steps: %s", evalSetting)
		}
		fmt.Printf("ASHA rows: min_resource %d, reduction_factor %d (%s)\n", *minResource, *eta, unit)
	}
	fmt.Printf("%s, %d CPUs; %s; OPENBLAS_CORETYPE=%q\n", runtime.GOARCH, runtime.NumCPU(), blasLine(nn.DefaultBackend()), os.Getenv("OPENBLAS_CORETYPE"))
	fmt.Printf("%-34s %9s %9s %12s %10s %7s %9s %15s\n", "run", "wall s", "× 1 trial", "side train s", "side share", "eval s", "trials", "best validation")
	var one float64
	var oneRuns []float64
	// The marginal cost of a trial: between two study sizes of one kind
	// (packed or not, without ASHA), the extra wall time per extra trial.
	type seriesPoint struct {
		trials     int
		wall, eval float64
	}
	series := map[int]seriesPoint{} // by pack size
	var marginal []string
	for i, r := range rows {
		db := fmt.Sprintf("run%d.db", i)
		pruner, extra, patience := "", "", *epochs
		if r.asha {
			pruner = fmt.Sprintf("pruner: {name: asha, min_resource: %d, reduction_factor: %d}\n", *minResource, *eta)
			if evalSetting != "" {
				// Patience counts validations: as many as there are, so
				// that only the pruner stops a trial early.
				extra, patience = ", eval_steps: "+evalSetting, 1<<20
			}
		}
		cfg := fmt.Sprintf(`storage: sqlite:///%s
model: %q
data_dir: %q
output_dir: runs%d
datasets: [sst2]
methods:
  %s
search:
  lr: {low: 1.0e-5, high: 1.0e-1, log: true}
trials: %d
pack: %d
sampler: {name: tpe, seed: 0}
%straining: {max_epochs: %d, patience: %d, batch_size: %d, max_source_length: %d, state_cache: fp32, state_cache_dir: states, seeds: [0]%s%s}
`, db, modelDir, absData, i, arch, r.trials, r.pack, pruner, *epochs, patience, *batch, *src, limits, extra)
		file := fmt.Sprintf("run%d.yaml", i)
		if err := os.WriteFile(filepath.Join(work, file), []byte(cfg), 0o644); err != nil {
			return err
		}
		wall, err := sweepCmd("run", file)
		if err != nil {
			return err
		}
		c, err := costOf(filepath.Join(work, db))
		if err != nil {
			return err
		}
		ratio := "-"
		switch {
		case i >= 1 && i <= *ones:
			oneRuns = append(oneRuns, wall.Seconds())
			if i == *ones {
				one = median(oneRuns)
			}
		case one > 0:
			ratio = fmt.Sprintf("%.2f", wall.Seconds()/one)
		}
		counts := fmt.Sprintf("%dc/%dp", c.n[storage.Complete], c.n[storage.Pruned])
		fmt.Printf("%-34s %9.1f %9s %12.1f %9.0f%% %7.1f %9s %15.2f\n", r.name, wall.Seconds(), ratio, c.train, 100*c.train/wall.Seconds(), c.eval, counts, c.best)
		if !r.asha && r.trials > 1 {
			if prev, ok := series[r.pack]; ok && prev.trials < r.trials {
				extra := float64(r.trials - prev.trials)
				cost, side := (wall.Seconds()-prev.wall)/extra, c.train/float64(r.trials)
				kind := "unpacked"
				if r.pack > 1 {
					kind = fmt.Sprintf("pack %d", r.pack)
				}
				marginal = append(marginal, fmt.Sprintf("one more trial (%s): %.2f s = (%.1f − %.1f) / %.0f, %.2f× its side network's training (%.2f s); evaluation %.2f s of it",
					kind, cost, wall.Seconds(), prev.wall, extra, cost/side, side, (c.eval-prev.eval)/extra))
			}
			series[r.pack] = seriesPoint{r.trials, wall.Seconds(), c.eval}
		}
	}
	fmt.Printf("× 1 trial: of the median single trial, %.1f s (%s)\n", one, joinSeconds(oneRuns))
	for _, line := range marginal {
		fmt.Println(line)
	}
	fmt.Println("side train s: the COMPLETE trials' own training steps (train_seconds: the side network over cached states, plus the backbone in the first trial; LST's Fisher pass is outside it); side share: of the wall time; eval s: the COMPLETE trials' validation and test decoding (a pack's shared decoding counts in the trial that ran it, so with ASHA some of it may sit in a pruned trial, uncounted). Wall time includes process starts, model loads, evaluation and sampling.")
	return nil
}

// parseEvalSteps turns --eval-steps (N, or S1,S2,…) into the sweep file's
// eval_steps value and its first validation step; "" is every epoch.
func parseEvalSteps(flag string) (setting string, first int, err error) {
	if flag == "" {
		return "", 0, nil
	}
	var steps []string
	for _, f := range strings.Split(flag, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err != nil || n < 1 {
			return "", 0, fmt.Errorf("%w: --eval-steps %q: want N or steps like 3,12", errUsage, flag)
		}
		if first == 0 || n < first {
			first = n
		}
		steps = append(steps, strconv.Itoa(n))
	}
	if len(steps) == 1 {
		return steps[0], first, nil
	}
	return "[" + strings.Join(steps, ", ") + "]", first, nil
}

// studyCost is what a bench study spent, from its trials' attributes.
type studyCost struct {
	train, eval, best float64
	n                 map[storage.TrialState]int
}

// costOf sums the training and evaluation seconds of the study's COMPLETE
// trials (a pruned trial's are in its log only) and finds the best
// validation.
func costOf(path string) (studyCost, error) {
	db, err := storage.OpenReadOnly("sqlite:///" + path)
	if err != nil {
		return studyCost{}, err
	}
	defer db.Close()
	ctx := context.Background()
	studies, err := db.Studies(ctx)
	if err != nil || len(studies) != 1 {
		return studyCost{}, fmt.Errorf("bench sweep-cost: %s: %d studies (%v)", path, len(studies), err)
	}
	trials, err := db.Trials(ctx, studies[0].ID)
	if err != nil {
		return studyCost{}, err
	}
	c := studyCost{best: math.Inf(-1), n: storage.Count(trials)}
	for _, t := range trials {
		if s, ok := t.UserAttrs["train_seconds"].(float64); ok {
			c.train += s
		}
		if s, ok := t.UserAttrs["eval_seconds"].(float64); ok {
			c.eval += s
		}
		if t.State == storage.Complete && t.Value != nil {
			c.best = math.Max(c.best, *t.Value)
		}
	}
	return c, nil
}

// median is the middle run (the lower of the two middle ones for an even
// count).
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return stat.Quantile(0.5, stat.Empirical, s, nil)
}

func joinSeconds(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.1f", x)
	}
	return strings.Join(parts, ", ")
}

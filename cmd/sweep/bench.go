package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/sweep/tpe"
	"github.com/readsweep/readsweep/t5"
)

func cmdBench(args []string) error {
	if len(args) > 0 && args[0] == "t5" {
		return benchT5(args[1:])
	}
	if len(args) == 0 || args[0] != "tpe" {
		return fmt.Errorf("%w: usage: sweep bench tpe [--seeds 30] ... | sweep bench t5 [--size t5-small] [--peer torch_cpu_peer.py]", errUsage)
	}
	fs := newFlags("bench tpe", "bench tpe [--seeds 30] [--trials 32] [--samplers tpe,random] [--objectives lr,branin,hartmann6]")
	seeds := fs.Int("seeds", 30, "seeds per objective and sampler (0..seeds-1)")
	trials := fs.Int("trials", 32, "trials per run")
	samplers := fs.String("samplers", "tpe,random", "samplers: tpe, tpe_uni (independent), random")
	objectives := fs.String("objectives", "lr,branin,hartmann6", "objectives of shared/peers/tpe_bench.py")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 || *seeds < 1 || *trials < 1 {
		fs.Usage()
		return errUsage
	}
	var checkpoints []int
	for _, k := range []int{8, 16, 32} {
		if k <= *trials {
			checkpoints = append(checkpoints, k)
		}
	}
	if len(checkpoints) == 0 || checkpoints[len(checkpoints)-1] != *trials {
		checkpoints = append(checkpoints, *trials)
	}
	objs := map[string]tpe.Objective{}
	for _, o := range tpe.Objectives() {
		objs[o.Name] = o
	}
	var sums []tpe.Summary
	for _, on := range strings.Split(*objectives, ",") {
		obj, ok := objs[on]
		if !ok {
			return fmt.Errorf("%w: unknown objective %q (want lr, branin, hartmann6)", errUsage, on)
		}
		for _, sn := range strings.Split(*samplers, ",") {
			var runs []tpe.Run
			for seed := range uint64(*seeds) {
				var s tpe.BenchSampler
				switch sn {
				case "tpe", "tpe_uni":
					o := tpe.DefaultOptions()
					o.Seed, o.Seeded, o.Multivariate = seed, true, sn == "tpe"
					s = tpe.New(o)
				case "random":
					s = tpe.NewRandom(seed, true)
				default:
					return fmt.Errorf("%w: unknown sampler %q (want tpe, tpe_uni, random)", errUsage, sn)
				}
				r, err := tpe.RunObjective(context.Background(), obj, s, seed, *trials)
				if err != nil {
					return err
				}
				runs = append(runs, r)
			}
			sums = append(sums, tpe.Summarize(on, sn, runs, checkpoints))
		}
	}
	fmt.Printf("sweep TPE  trials=%d seeds=%d  (regret = f_true(best observed) - f_star; mean / median)\n", *trials, *seeds)
	tpe.WriteTable(os.Stdout, sums, checkpoints)
	fmt.Println("Optuna 5.0.0.dev, same objectives (shared/peers/optuna-5.0dev-tpe-results.txt): @32 mean lr " +
		strconv.FormatFloat(0.003183, 'g', -1, 64) + ", branin 0.5863, hartmann6 0.8484; 1.20-2.38 ms/suggest")
	return nil
}

// benchT5 times full fine-tuning steps of a random T5 and, with --peer,
// the PyTorch CPU peer at the same shapes in the same run.
func benchT5(args []string) error {
	fs := newFlags("bench t5", "bench t5 [--size t5-small] [--batch 8] [--src 64] [--tgt 4] [--steps 3] [--peer shared/peers/torch_cpu_peer.py]")
	size := fs.String("size", "t5-small", "t5-tiny, t5-small, t5-base or t5-large (random weights)")
	batch := fs.Int("batch", 8, "batch size")
	src := fs.Int("src", 64, "source length")
	tgt := fs.Int("tgt", 4, "target length")
	steps := fs.Int("steps", 3, "timed steps after one warm-up step")
	peer := fs.String("peer", "", "path of torch_cpu_peer.py to run beside (needs Debian's python3-torch)")
	backend := fs.String("backend", "", "openblas or gonum (default: openblas in cgo builds)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *steps < 1 {
		fs.Usage()
		return errUsage
	}
	be := nn.DefaultBackend()
	if *backend == "gonum" {
		be = nn.Gonum{}
	} else if *backend != "" && *backend != be.Name() {
		return fmt.Errorf("%w: --backend %q is not available in this build (have %s, gonum)", errUsage, *backend, be.Name())
	}
	fmt.Printf("OPENBLAS_CORETYPE=%q GOMAXPROCS=%d\n", os.Getenv("OPENBLAS_CORETYPE"), runtime.GOMAXPROCS(0))
	r, err := t5.BenchTrainStep(be, *size, *batch, *src, *tgt, *steps)
	if err != nil {
		return err
	}
	fmt.Printf("ours   %s full-tuning step %dx%dx%d on %s: %.3f s/step, peak RSS %.0f MB, matrix work %.1f GFLOP/s (%.0f%% of the step), activations %.0f MB\n",
		r.Size, r.Batch, r.Src, r.Tgt, r.Backend, r.SecondsPerStep, r.PeakRSSMB, r.GemmGFLOPS, 100*r.GemmShare, r.ActivationPeakMB)
	if *peer == "" {
		return nil
	}
	cmd := exec.Command("/usr/bin/python3", *peer, *size, "full", strconv.Itoa(*batch), strconv.Itoa(*src), strconv.Itoa(*tgt), strconv.Itoa(*steps))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("peer %s: %w", *peer, err)
	}
	var p struct {
		StepS     float64 `json:"step_s"`
		PeakRSSMB float64 `json:"peak_rss_mb"`
	}
	if err := json.Unmarshal(out, &p); err != nil {
		return fmt.Errorf("peer printed %q: %w", out, err)
	}
	fmt.Printf("peer   PyTorch CPU: %.3f s/step, peak RSS %.0f MB\n", p.StepS, p.PeakRSSMB)
	fmt.Printf("ratio  time %.2fx, memory %.2fx (ours / PyTorch; target time ≤ 0.5x at no more memory)\n", r.SecondsPerStep/p.StepS, r.PeakRSSMB/p.PeakRSSMB)
	return nil
}

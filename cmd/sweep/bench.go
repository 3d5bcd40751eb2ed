package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/sweep/tpe"
	"github.com/readsweep/readsweep/t5"
	"github.com/readsweep/readsweep/trial"
)

func cmdBench(args []string) error {
	if len(args) > 0 && args[0] == "t5" {
		return benchT5(args[1:])
	}
	if len(args) > 0 && args[0] == "t5-step" {
		return benchStep(args[1:])
	}
	if len(args) > 0 && args[0] == "read" {
		return benchRead(args[1:])
	}
	if len(args) > 0 && args[0] == "dashboard" {
		return benchDashboard(args[1:])
	}
	if len(args) > 0 && args[0] == "sweep-cost" {
		return benchSweepCost(args[1:])
	}
	if len(args) > 0 && args[0] == "resume" {
		return benchResume(args[1:])
	}
	if len(args) == 0 || args[0] != "tpe" {
		return fmt.Errorf("%w: usage: sweep bench tpe|t5|read|dashboard|sweep-cost|resume [flags] (sweep bench t5 -h shows its flags)", errUsage)
	}
	fs := newFlags("bench tpe", "bench tpe [--seeds 30] [--trials 32] [--samplers tpe,random] [--objectives lr,branin,hartmann6]")
	seeds := fs.Int("seeds", 30, "seeds per objective and sampler (0..seeds-1)")
	trials := fs.Int("trials", 32, "trials per run")
	samplers := fs.String("samplers", "tpe,random", "samplers: tpe, tpe_uni (independent), random")
	objectives := fs.String("objectives", "lr,branin,hartmann6", "objectives of scripts/peers/tpe_bench.py")
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
	fmt.Println("Optuna 5.0.0.dev, same objectives (scripts/peers/optuna-5.0dev-tpe-results.txt): @32 mean lr " +
		strconv.FormatFloat(0.003183, 'g', -1, 64) + ", branin 0.5863, hartmann6 0.8484; 1.20-2.38 ms/suggest")
	return nil
}

// benchT5 times training steps of each method on a random T5 and, with
// --peer, the PyTorch CPU peer for the methods it has (full, lora) at the
// same shapes in the same run.
func benchT5(args []string) error {
	fs := newFlags("bench t5", "bench t5 [--size t5-small] [--methods full,bitfit,lora,adapter,prompt] [--batch 8] [--src 64] [--tgt 4] [--steps 3] [--peer scripts/peers/torch_cpu_peer.py]")
	size := fs.String("size", "t5-small", "t5-tiny, t5-small, t5-base or t5-large (random weights)")
	names := fs.String("methods", "full", "methods to time, with their default architectures")
	batch := fs.Int("batch", 8, "batch size")
	src := fs.Int("src", 64, "source length")
	tgt := fs.Int("tgt", 4, "target length")
	steps := fs.Int("steps", 3, "timed steps after one warm-up step")
	peer := fs.String("peer", "", "a peer to run beside: scripts/peers/torch_cpu_peer.py (Debian python3-torch) or, with --backend cuda, scripts/torch_gpu_peer.py ($READSWEEP_PYTHON picks the interpreter)")
	backend := fs.String("backend", "", "openblas, gonum or cuda (default: OpenBLAS where a library opens, else gonum)")
	precisionName := fs.String("precision", "fp32", "what products read their operands at: fp32, tf32 or bf16 (the training setting precision; the peer runs TF32 or bf16 autocast to match)")
	dropout := fs.Float64("dropout", 0, "dropout rate in training, as a trial's dropout setting (T5's is 0.1); 0, as the peers run, unless asked")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *steps < 1 {
		fs.Usage()
		return errUsage
	}
	precision, err := nn.ParsePrecision(*precisionName)
	if err != nil {
		return fmt.Errorf("%w: --precision: %v", errUsage, err)
	}
	if !t5.DropoutRateValid(*dropout) {
		return fmt.Errorf("%w: --dropout %v: want a rate in [0, 1)", errUsage, *dropout)
	}
	if *dropout > 0 && *peer != "" {
		return fmt.Errorf("%w: --dropout %v with --peer: the peers run without dropout, so the two would not be the same step", errUsage, *dropout)
	}
	be, err := benchBackend(*backend)
	if err != nil {
		return err
	}
	if g, ok := be.(nn.GPU); ok {
		fmt.Println("GPU:", g.Info())
		g.Close() // each method opens it again in its own process
	}
	fmt.Printf("%s shapes, batch %d × %d source × %d target tokens, %d steps, %s products, dropout %g; OPENBLAS_CORETYPE=%q GOMAXPROCS=%d\n",
		*size, *batch, *src, *tgt, *steps, precision, *dropout, os.Getenv("OPENBLAS_CORETYPE"), runtime.GOMAXPROCS(0))
	fmt.Println(blasLine(be))
	_, onGPU := be.(nn.GPU)
	memHeader, peerMem := "ours RSS MB", "PyTorch RSS MB"
	if onGPU {
		memHeader, peerMem = "ours GPU MB", "PyTorch GPU MB"
	}
	fmt.Printf("%-8s %12s %12s %12s %14s %14s %10s\n", "method", "ours s/step", memHeader, "infer ms@1", "PyTorch s/step", peerMem, "time ratio")
	var calls []string // per method, on a GPU
	peerRan := ""      // where and how, as the peer says
	for _, name := range strings.Split(*names, ",") {
		// Each method runs in a fresh process so peak memory is its own.
		r, err := benchOne(be.Name(), precision, *dropout, *size, name, *batch, *src, *tgt, *steps)
		if err != nil {
			return err
		}
		mem := r.PeakRSSMB
		if onGPU {
			mem = r.DevicePeakMB
		}
		line := fmt.Sprintf("%-8s %12.3f %12.0f %12.1f", name, r.SecondsPerStep, mem, r.LatencyMS)
		if *peer != "" && (name == "full" || name == "lora" || name == "read") {
			p, err := runPeer(*peer, precision, *size, name, *batch, *src, *tgt, *steps)
			if err != nil {
				return err
			}
			pm := p.PeakRSSMB
			if onGPU {
				pm = p.PeakGPUMB
			}
			line += fmt.Sprintf(" %14.3f %14.0f %9.2fx", p.StepS, pm, r.SecondsPerStep/p.StepS)
			peerRan = p.describe()
		}
		fmt.Println(line)
		if onGPU {
			calls = append(calls, fmt.Sprintf("%s %.0f kernels + %.0f cuBLAS calls + %.0f memsets + %.0f copies, %.0f waits", name, r.KernelsPerStep, r.BLASPerStep, r.MemsetsPerStep, r.CopiesPerStep, r.SyncsPerStep))
		}
	}
	if onGPU {
		fmt.Println("device calls per step (waits: the host waiting for the GPU):", strings.Join(calls, "; "))
	}
	if peerRan != "" {
		fmt.Printf("ours ran %s products; %s\n", precision, peerRan)
	}
	fmt.Println("lora runs rank 32 on q and v of every attention, as the peer does; the others their defaults")
	if onGPU {
		if precision == nn.FP32 {
			fmt.Println("target (issue 9, PyTorch + HF on an H100, fp32, TF32 off, t5-base 96×128×4): full 0.245 s / 10.7 GB, LoRA 0.216 s / 7.26 GB, READ 0.101 s / 8.0 GB;")
		}
		fmt.Println("ours ≤ 1.2× for full and LoRA, ≤ 1.0× for READ, no more memory, against the peer at the same precision (the CPU peer does not apply)")
		return nil
	}
	if precision != nn.FP32 {
		fmt.Println("no target: the CPU peer runs fp32")
		return nil
	}
	fmt.Println("target: ours ≤ 0.5× PyTorch's time, at no more memory")
	return nil
}

// benchOne times one method in a child process (`sweep bench t5-step`).
func benchOne(backend string, precision nn.Precision, dropout float64, size, method string, B, S, T, steps int) (t5.StepBench, error) {
	exe, err := os.Executable()
	if err != nil {
		return t5.StepBench{}, err
	}
	cmd := exec.Command(exe, "bench", "t5-step", backend, size, method, strconv.Itoa(B), strconv.Itoa(S), strconv.Itoa(T), strconv.Itoa(steps), precision.String(), strconv.FormatFloat(dropout, 'g', -1, 64))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return t5.StepBench{}, fmt.Errorf("bench %s: %w", method, err)
	}
	var r t5.StepBench
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("bench %s printed %q: %w", method, out, err)
	}
	return r, nil
}

// benchStep is the child side of benchOne: it prints one StepBench as JSON.
func benchStep(args []string) error {
	if len(args) != 9 {
		return fmt.Errorf("%w: bench t5-step BACKEND SIZE METHOD B S T STEPS PRECISION DROPOUT", errUsage)
	}
	precision, err := nn.ParsePrecision(args[7])
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	dropout, err := strconv.ParseFloat(args[8], 64)
	if err != nil || !t5.DropoutRateValid(dropout) {
		return fmt.Errorf("%w: dropout %q: want a rate in [0, 1)", errUsage, args[8])
	}
	var n [4]int
	for i := range n {
		v, err := strconv.Atoi(args[3+i])
		if err != nil || v < 1 {
			return fmt.Errorf("%w: %q is not a positive number", errUsage, args[3+i])
		}
		n[i] = v
	}
	be, err := benchBackend(args[0])
	if err != nil {
		return err
	}
	if g, ok := be.(nn.GPU); ok {
		defer g.Close()
	}
	if be, err = nn.WithPrecision(be, precision); err != nil {
		return err
	}
	m, err := t5.NewBenchModel(args[1])
	if err != nil {
		return err
	}
	m.Config.DropoutRate = dropout
	var arch map[string]any
	if args[2] == "lora" {
		// The peer's LoRA: rank 32 on q and v of every attention.
		arch = map[string]any{"targets": "all_qv"}
	}
	meth, err := registry().New(args[2], m, arch, 0)
	if err != nil {
		return err
	}
	r, err := t5.BenchTrainStep(be, m, meth.Hooks(), meth.Trainable(), args[1], n[0], n[1], n[2], n[3])
	if err != nil {
		return err
	}
	// Inference latency at batch 1: n[2] new tokens after n[1] source tokens.
	ids := make([]int32, n[1])
	for i := range ids {
		ids[i] = int32(2 + i)
	}
	decode := func() { m.Generate(be, ids, nil, 1, n[1], n[2], meth.Hooks()) }
	decode()
	const reps = 5
	t0 := time.Now()
	for range reps {
		decode()
	}
	r.LatencyMS = float64(time.Since(t0).Microseconds()) / 1000 / reps
	return json.NewEncoder(os.Stdout).Encode(r)
}

type peerResult struct {
	StepS     float64 `json:"step_s"`
	PeakRSSMB float64 `json:"peak_rss_mb"`
	PeakGPUMB float64 `json:"peak_gpu_mb"` // scripts/torch_gpu_peer.py
	Device    string  `json:"device"`      // the GPU peer's; the CPU peer runs on the CPU
	Precision string  `json:"precision"`   // the GPU peer's; the CPU peer runs fp32
}

// describe says where and at what precision the peer ran.
func (p peerResult) describe() string {
	device, precision := cmp.Or(p.Device, "cpu"), cmp.Or(p.Precision, "fp32")
	if precision == "bf16" {
		precision = "bf16 autocast"
	}
	return "PyTorch ran on " + device + " at " + precision
}

// peerPython runs the peers: Debian's interpreter (python3-torch) unless
// $READSWEEP_PYTHON names another (a GPU machine's pip-installed PyTorch).
func peerPython() string {
	if p := os.Getenv("READSWEEP_PYTHON"); p != "" {
		return p
	}
	return "/usr/bin/python3"
}

func runPeer(peer string, precision nn.Precision, size, method string, B, S, T, steps int) (peerResult, error) {
	cmd := exec.Command(peerPython(), peer, size, method, strconv.Itoa(B), strconv.Itoa(S), strconv.Itoa(T), strconv.Itoa(steps))
	cmd.Env = append(os.Environ(), "READSWEEP_PEER_PRECISION="+precision.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return peerResult{}, fmt.Errorf("peer %s %s: %w", peer, method, err)
	}
	var p peerResult
	if err := json.Unmarshal(out, &p); err != nil {
		return p, fmt.Errorf("peer printed %q: %w", out, err)
	}
	return p, nil
}

// benchRead prints READ's memory and time against full fine-tuning and
// LoRA, and its state cache's speed-up, in one run.
func benchRead(args []string) error {
	fs := newFlags("bench read", "bench read [--sizes t5-small,t5-base] [--batches 8] [--steps 3] [--peer scripts/peers/torch_cpu_peer.py]")
	sizes := fs.String("sizes", "t5-small,t5-base", "model shapes to compare at")
	nb := fs.Int("batches", 8, "batches in the cache benchmark's epoch")
	steps := fs.Int("steps", 3, "timed steps per method")
	peer := fs.String("peer", "", "torch_cpu_peer.py, run beside for full, lora and read (t5-small only)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *nb < 1 || *steps < 1 {
		fs.Usage()
		return errUsage
	}
	be := nn.DefaultBackend()
	const B, S, T = 8, 64, 4
	fmt.Printf("batch %d × %d × %d; OPENBLAS_CORETYPE=%q GOMAXPROCS=%d; LoRA is rank 32 on every q and v (the peer's)\n",
		B, S, T, os.Getenv("OPENBLAS_CORETYPE"), runtime.GOMAXPROCS(0))
	fmt.Println(blasLine(be))
	for _, size := range strings.Split(*sizes, ",") {
		res := map[string]t5.StepBench{}
		for _, meth := range []string{"full", "lora", "read"} {
			r, err := benchOne(be.Name(), nn.FP32, 0, size, meth, B, S, T, *steps)
			if err != nil {
				return err
			}
			res[meth] = r
			line := fmt.Sprintf("%-9s %-5s %7.3f s/step %7.0f MB peak RSS", size, meth, r.SecondsPerStep, r.PeakRSSMB)
			if *peer != "" && size == "t5-small" {
				p, err := runPeer(*peer, nn.FP32, size, meth, B, S, T, *steps)
				if err != nil {
					return err
				}
				line += fmt.Sprintf("   PyTorch %6.3f s/step %6.0f MB", p.StepS, p.PeakRSSMB)
			}
			fmt.Println(line)
		}
		r, f, l := res["read"], res["full"], res["lora"]
		fmt.Printf("%-9s READ / full: time %.2fx (target ≤ 0.5x), memory %.2fx (target ≤ 0.35x); READ / LoRA memory %.2fx (target ≤ 0.6x)\n",
			size, r.SecondsPerStep/f.SecondsPerStep, r.PeakRSSMB/f.PeakRSSMB, r.PeakRSSMB/l.PeakRSSMB)
	}
	c, err := trial.BenchStateCache(be, registry(), "t5-small", B, S, T, *nb)
	if err != nil {
		return err
	}
	fmt.Printf("state cache, t5-small, READ epoch of %d batches: %.2f s running the backbone, %.2f s from %.0f MB of cached states: %.1fx faster (target ≥ 5x)\n",
		c.Batches, c.EpochSeconds, c.CachedEpochSeconds, c.CacheMB, c.EpochSeconds/c.CachedEpochSeconds)
	return nil
}

// benchBackend opens the named backend: the default (OpenBLAS where it
// opens, else gonum), openblas (an error saying why where none opens),
// gonum, or cuda (an error saying why where no GPU opens).
func benchBackend(name string) (nn.Backend, error) {
	switch name {
	case "":
		return nn.DefaultBackend(), nil
	case "openblas":
		o, err := nn.LoadOpenBLAS()
		if err != nil {
			return nil, fmt.Errorf("--backend openblas: %w", err)
		}
		return o, nil
	case "gonum":
		return nn.Gonum{}, nil
	case "cuda":
		be, _, _, err := nn.SelectBackend("cuda")
		return be, err
	default:
		return nil, fmt.Errorf("%w: --backend %q: want openblas, gonum or cuda", errUsage, name)
	}
}

// blasLine says which BLAS a CPU benchmark runs on: the library's file,
// build and core type for OpenBLAS, so that two runs can be compared.
func blasLine(be nn.Backend) string {
	switch b := be.(type) {
	case nn.OpenBLAS:
		return "BLAS: OpenBLAS " + b.Info().String()
	case nn.GPU:
		return "BLAS: " + b.Info().BLAS
	}
	return "BLAS: " + be.Name()
}

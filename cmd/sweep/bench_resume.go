package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/trial"
)

// benchResume measures what preemption costs a trial with checkpoints:
// it trains one trial with `sweep trial`, kills it (SIGKILL, as a node
// failure does) at random moments, resumes each time from the newest
// checkpoint, and prints the work each kill lost (at most
// checkpoint_every), the seconds from each restart to its first step,
// and a checkpoint's cost as a share of the default interval.
func benchResume(args []string) error {
	fs := newFlags("bench resume", "bench resume [--d-model 512 --d-kv 64 --d-ff 2048 --layers 6 --heads 8] [--method full] [--kills 3] [--every 20s] [--epochs 6] [--batch 8] [--src 64] [--data glue/testdata/fixture] [--spiece examples/spiece-tiny.model] [--model DIR|NAME] [--dir DIR]")
	shape := addShapeFlags(fs, modelShape{DModel: 512, DKV: 64, DFF: 2048, Layers: 6, Heads: 8}) // t5-small's
	method := fs.String("method", "full", "the method trained (full: the largest checkpoint)")
	kills := fs.Int("kills", 3, "times the trial is killed before it may finish")
	every := fs.Duration("every", 20*time.Second, "checkpoint_every while measuring (the default interval is "+trial.DefaultCheckpointEvery.String()+")")
	epochs := fs.Int("epochs", 6, "max_epochs")
	batch := fs.Int("batch", 8, "batch_size")
	src := fs.Int("src", 64, "max_source_length")
	data := fs.String("data", "glue/testdata/fixture", "GLUE folder with SST-2")
	spiece := fs.String("spiece", "examples/spiece-tiny.model", "tokenizer of the random model")
	modelFlag := fs.String("model", "", "a T5 checkpoint (folder or cached name) instead of a random model of the shape flags")
	dir := fs.String("dir", "", "work folder (default: a temporary one, removed after)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *kills < 1 || *every < time.Second || *epochs < 1 {
		fs.Usage()
		return fmt.Errorf("%w: --kills ≥ 1, --every ≥ 1s and --epochs ≥ 1", errUsage)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	work := *dir
	if work == "" {
		if work, err = os.MkdirTemp("", "sweep-bench-resume"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
	}
	absData, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	model, about := *modelFlag, *modelFlag
	if model == "" {
		model = filepath.Join(work, "model")
		absSpiece, err := filepath.Abs(*spiece)
		if err != nil {
			return err
		}
		out, err := exec.Command(exe, append([]string{"model", "new", "--out", model, "--spiece", absSpiece}, shape.args()...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("sweep model new: %v\n%s", err, out)
		}
		about = fmt.Sprintf("random T5 d_model %d, d_ff %d, %d layers", shape.DModel, shape.DFF, shape.Layers)
	}
	fmt.Printf("sweep bench resume: %s, %s on SST-2 (%s), %d epochs, batch %d × %d tokens; checkpoint_every %s; %d kills (SIGKILL)\n",
		*method, about, *data, *epochs, *batch, *src, *every, *kills)
	fmt.Printf("%s, %d CPUs; %s; OPENBLAS_CORETYPE=%q\n", runtime.GOARCH, runtime.NumCPU(), blasLine(nn.DefaultBackend()), os.Getenv("OPENBLAS_CORETYPE"))

	spec := trial.Spec{Version: trial.Version, Study: *method + "/bench/sst2", Method: *method, Arch: map[string]any{}, Dataset: "sst2",
		Params: map[string]any{"lr": 1e-4}, Seed: 1, Model: model, DataDir: absData, Trainer: "builtin",
		Training: map[string]any{"max_epochs": *epochs, "patience": *epochs, "batch_size": *batch, "max_source_length": *src,
			"latency_examples": 0, "checkpoint_every": every.String(), "state_cache_dir": filepath.Join(work, "cache")}}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var lost, restarts, writes []float64
	var ckptMB float64
	var final *trial.Message
	for k := 0; final == nil; k++ {
		spec.Number = k
		spec.OutputDir = filepath.Join(work, fmt.Sprintf("trial-%d", k))
		run, err := startBenchTrial(exe, spec)
		if err != nil {
			return err
		}
		own := filepath.Join(spec.OutputDir, trial.CheckpointName)
		killed := false
		if k < *kills {
			var lostNow float64
			if killed, lostNow, err = killAfterCheckpoint(run, own, time.Duration(rng.Float64()*float64(*every))); err != nil {
				return err
			}
			if killed {
				lost = append(lost, lostNow)
				steps, _, err := trial.CheckpointSteps(own)
				if err != nil {
					return fmt.Errorf("the checkpoint left by kill %d: %w", k+1, err)
				}
				fmt.Printf("kill %d: %.1fs after its newest checkpoint (step %d): lost ≤ checkpoint_every: %v\n",
					k+1, lostNow, steps, lostNow <= (*every+time.Second).Seconds())
			} else {
				fmt.Printf("the trial finished before kill %d: give it more --epochs for more kills\n", k+1)
			}
		}
		if !killed {
			if err := run.wait(); err != nil {
				return fmt.Errorf("run %d: %w\n%s", k, err, run.log())
			}
		}
		log := run.log()
		if m := firstStepLine.FindStringSubmatch(log); m != nil {
			s, _ := strconv.ParseFloat(m[1], 64)
			restarts = append(restarts, s)
			if r := resumingLine.FindStringSubmatch(log); r != nil {
				read, _ := strconv.ParseFloat(r[1], 64)
				at, _ := strconv.ParseFloat(r[2], 64)
				fmt.Printf("restart %d: first step %.1fs after the process started: setup (model, data) %.1fs, checkpoint read and restored %.1fs, the step %.1fs\n",
					k, s, at-read, read, s-at)
			}
		} else if k > 0 {
			return fmt.Errorf("run %d did not resume its predecessor's checkpoint:\n%s", k, log)
		}
		for _, m := range checkpointLine.FindAllStringSubmatch(log, -1) {
			mb, _ := strconv.ParseFloat(m[1], 64)
			s, _ := strconv.ParseFloat(m[2], 64)
			ckptMB, writes = mb, append(writes, s)
		}
		final = run.final
		spec.ResumeFrom = own
	}
	if len(restarts) > 0 {
		fmt.Printf("restart to the first resumed step (process start, model and data, checkpoint read, one step): %s s\n", joinSeconds(restarts))
	}
	if len(writes) > 0 {
		slices.Sort(writes)
		median := writes[len(writes)/2]
		fmt.Printf("checkpoint: %.0f MB in %.2fs (median of %d) = %.3f%% of the default interval (%s); target ≤ 1%%\n",
			ckptMB, median, len(writes), 100*median/trial.DefaultCheckpointEvery.Seconds(), trial.DefaultCheckpointEvery)
	}
	fmt.Printf("work lost per kill: %s s (checkpoint_every %s)\n", joinSeconds(lost), *every)
	fmt.Printf("final: value %.2f, test %v, %v steps, resumed_from %v\n", float64(final.Value), final.Attrs["test"], final.Attrs["steps"], final.Attrs["resumed_from"])
	return nil
}

// killAfterCheckpoint waits for the trial's first checkpoint at own,
// then for delay, and kills it (SIGKILL); it returns the seconds since the
// newest checkpoint, or false when the trial ended first.
func killAfterCheckpoint(run *benchTrial, own string, delay time.Duration) (bool, float64, error) {
	for {
		if _, err := os.Stat(own); err == nil {
			break
		}
		if run.exited() {
			return false, 0, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-run.done:
		return false, 0, nil
	case <-time.After(delay):
	}
	killed := time.Now()
	run.cmd.Process.Kill()
	run.wait()
	st, err := os.Stat(own)
	if err != nil {
		return false, 0, err
	}
	return true, killed.Sub(st.ModTime()).Seconds(), nil
}

var (
	resumingLine   = regexp.MustCompile(`read and restored in ([0-9.]+)s, ([0-9.]+)s after the trial started`)
	firstStepLine  = regexp.MustCompile(`resumed: the first step ended ([0-9.]+)s after the trial started`)
	checkpointLine = regexp.MustCompile(`checkpoint: \d+ trial\(s\) at step \d+, ([0-9.]+) MB in ([0-9.]+)s`)
)

// benchTrial is one `sweep trial` process of the bench.
type benchTrial struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // how, once done
	final  *trial.Message
}

func startBenchTrial(exe string, spec trial.Spec) (*benchTrial, error) {
	if err := os.MkdirAll(spec.OutputDir, 0o755); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	specPath := filepath.Join(spec.OutputDir, "spec.json")
	if err := os.WriteFile(specPath, raw, 0o644); err != nil {
		return nil, err
	}
	b := &benchTrial{stderr: &syncBuffer{}, done: make(chan struct{})}
	b.cmd = exec.Command(exe, "trial", "--spec", specPath)
	b.cmd.Stderr = b.stderr
	out, err := b.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := b.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			if m, err := trial.ParseMessage(sc.Bytes()); err == nil && m.Type == trial.TypeFinal {
				b.final = &m
			}
		}
		b.err = b.cmd.Wait() // after the last read of stdout, as Wait wants
		close(b.done)
	}()
	return b, nil
}

func (b *benchTrial) exited() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

func (b *benchTrial) wait() error {
	<-b.done
	return b.err
}

func (b *benchTrial) log() string { return b.stderr.String() }

// syncBuffer is a buffer a process writes while another goroutine reads
// it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/methods/all"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
	"github.com/readsweep/readsweep/t5"
	"github.com/readsweep/readsweep/trial"
)

func cmdRun(args []string) error { return runCommand("run", args, 0) }

// cmdWorker runs trials of the planned studies in a shared storage until
// every budget is met: `sweep run` is the plan plus N such workers, and a
// worker on any machine that reaches the database joins the same sweep.
func cmdWorker(args []string) error { return runCommand("worker", args, 1) }

func runCommand(name string, args []string, defaultParallel int) error {
	// A terminal or a `| tee` that is gone takes stderr with it: writing
	// there must fail, not kill the run halfway through stopping its
	// trials or before its last words. Notified for the whole process
	// rather than ignored, so that trials do not inherit it.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	fs := newFlags(name, name+" SWEEPS.yaml [--storage URL] [--parallel N] [--only method=read,dataset=sst2] [--dry-run]")
	help := "trials at once" // flag adds worker's default, 1
	if defaultParallel == 0 {
		help = "trials at once (default: the sweep file's parallel)"
	}
	parallel := fs.Int("parallel", defaultParallel, help)
	url := fs.String("storage", "", "storage URL (overrides the file's), e.g. postgresql://user@host/db (a password is better in PGPASSWORD or ~/.pgpass)")
	urlFile := storageFileFlag(fs)
	only := fs.String("only", "", "run only matching studies: method=M,arch=A,dataset=D (repeat a key for several values)")
	dry := fs.Bool("dry-run", false, "print the plan and stored progress, run nothing")
	limit := fs.String("time", "", "this process's time limit, as sbatch's --time (2-00:00:00, 90): no trial starts that its study's mean trial says would not end in time")
	detached := fs.Bool("detach", false, "check the sweep, then run it in the background, apart from this terminal (a closed SSH session does not stop it); its output goes to output_dir/sweep.log")
	started := time.Now()
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := argCount(fs, pos, 1, 1, "one sweep file"); err != nil {
		return err
	}
	var deadline time.Time
	if *limit != "" {
		d, err := slurmDuration(*limit)
		if err != nil {
			return fmt.Errorf("%w: --time %q: %v", errUsage, *limit, err)
		}
		if d > 0 {
			deadline = started.Add(d)
		}
	}
	cfg, err := sweep.LoadConfig(pos[0])
	if err != nil {
		return err
	}
	if err := checkParallel(fs, *parallel); err != nil {
		return err
	}
	if *parallel > 0 {
		cfg.Parallel = *parallel
	}
	if err := setStorage(cfg, *url, *urlFile); err != nil {
		return err
	}
	plan, err := planChecked(cfg, *only)
	if err != nil {
		return err
	}
	if *dry {
		return dryRun(cfg, plan)
	}
	if *detached {
		// What would stop the run stops it here, in the terminal: not in
		// a log nobody is reading yet.
		if err := preflight(cfg, plan, pos[0]); err != nil {
			return err
		}
		store, err := storage.Open(cfg.Storage)
		if err != nil {
			return err
		}
		store.Close()
		return detach(name, args, cfg.OutputDir)
	}
	// A worker started while the database restarts waits for it.
	store, err := storage.OpenRidingOutages(cfg.Storage, storage.Outages{RetryFor: cfg.StorageRetry, Logf: stderrf})
	if err != nil {
		return err
	}
	defer store.Close()
	if name == "worker" {
		if err := warnForeignStorage(store, plan); err != nil {
			return err
		}
	}
	return runPlan(cfg, store, plan, pos[0], name, deadline)
}

// detach starts the same command again without --detach in a session of
// its own (no controlling terminal: nothing sends it SIGHUP), with its
// output appended to output_dir/sweep.log, and returns once it runs.
func detach(name string, args []string, outputDir string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	rest := []string{name}
	for _, a := range args {
		if a == "--detach" || a == "-detach" || strings.HasPrefix(a, "--detach=") || strings.HasPrefix(a, "-detach=") {
			continue
		}
		rest = append(rest, a)
	}
	if err := os.MkdirAll(outputDir, 0o755); err != nil {
		return fmt.Errorf("--detach: %w", err)
	}
	logPath := filepath.Join(outputDir, "sweep.log")
	log, err := os.OpenFile(logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("--detach: %w", err)
	}
	defer log.Close()
	fmt.Fprintf(log, "%s sweep: started detached: sweep %s\n", time.Now().Format(time.RFC3339), strings.Join(rest, " "))
	cmd := exec.Command(exe, rest...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("--detach: %w", err)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	fmt.Printf("%d\n", pid)
	fmt.Fprintf(os.Stderr, "sweep: running in the background as pid %d, apart from this terminal; its output goes to %s (tail -f it). `kill -INT %d` stops it as Ctrl-C does: its trials checkpoint, and the same command resumes them\n",
		pid, logPath, pid)
	return nil
}

// slurmDuration reads a time limit as sbatch's --time takes it: minutes,
// minutes:seconds, hours:minutes:seconds, days-hours,
// days-hours:minutes, days-hours:minutes:seconds; UNLIMITED (infinite,
// -1) is 0, no limit.
func slurmDuration(s string) (time.Duration, error) {
	if l := strings.ToLower(s); l == "unlimited" || l == "infinite" || l == "-1" {
		return 0, nil
	}
	days := 0
	clock := s
	if d, rest, ok := strings.Cut(s, "-"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("days %q: want a number", d)
		}
		days, clock = n, rest
	}
	var parts []int
	for _, p := range strings.Split(clock, ":") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("%q: want [days-]hours:minutes:seconds, minutes or minutes:seconds", s)
		}
		parts = append(parts, n)
	}
	var h, m, sec int
	switch {
	case len(parts) > 3:
		return 0, fmt.Errorf("%q: too many fields", s)
	case days > 0 || strings.Contains(s, "-"):
		// After days-, fields are hours[:minutes[:seconds]].
		h = parts[0]
		if len(parts) > 1 {
			m = parts[1]
		}
		if len(parts) > 2 {
			sec = parts[2]
		}
	case len(parts) == 3:
		h, m, sec = parts[0], parts[1], parts[2]
	case len(parts) == 2:
		m, sec = parts[0], parts[1]
	default:
		m = parts[0]
	}
	return time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec)*time.Second, nil
}

// warnForeignStorage warns a worker pointed at a database that holds none
// of its sweep's studies (`sweep submit` plans them before any worker
// starts): a wrong --storage or $SWEEP_STORAGE would otherwise start a
// second, separate sweep there without a word.
func warnForeignStorage(store *storage.DB, plan []sweep.Planned) error {
	studies, err := store.Studies(context.Background())
	if err != nil {
		return err
	}
	planned := map[string]bool{}
	for _, p := range plan {
		planned[p.Name] = true
	}
	for _, st := range studies {
		if planned[st.Name] {
			return nil
		}
	}
	what := "no study"
	if len(studies) > 0 {
		what = fmt.Sprintf("%d studies, none of this sweep's", len(studies))
	}
	fmt.Fprintf(os.Stderr, "sweep: warning: %s holds %s; this worker plans its %d studies there (is it the storage `sweep submit` used?)\n",
		storage.Redact(store.Path()), what, len(plan))
	return nil
}

// cmdFinal runs the final runs: Appendix D.2's architecture per method, its
// best learning rate per dataset, once per configured seed.
func cmdFinal(args []string) error {
	fs := newFlags("final", "final SWEEPS.yaml [--parallel N] [--only method=read,dataset=sst2] [--dry-run]")
	parallel := fs.Int("parallel", 0, "trials at once (overrides the file's parallel)")
	only := fs.String("only", "", "restrict to methods and datasets: method=M,dataset=D")
	dry := fs.Bool("dry-run", false, "print the choices and stop")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := argCount(fs, pos, 1, 1, "one sweep file"); err != nil {
		return err
	}
	if err := checkParallel(fs, *parallel); err != nil {
		return err
	}
	cfg, err := sweep.LoadConfig(pos[0])
	if err != nil {
		return err
	}
	if *parallel > 0 {
		cfg.Parallel = *parallel
	}
	filter, err := sweep.ParseFilter(*only)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	store, err := openExisting(cfg.Storage)
	if err != nil {
		return err
	}
	defer store.Close()
	plan, err := sweep.FinalPlan(context.Background(), store, cfg, filter)
	if err != nil {
		return err
	}
	for _, p := range plan {
		fmt.Fprintf(os.Stderr, "sweep: %s: lr %.4g (from %s), seeds %v\n", p.Name, p.Space["lr"].Low, p.Attrs["selected_from"], cfg.Seeds())
	}
	if *dry {
		return nil
	}
	return runPlan(cfg, store, plan, pos[0], "final", time.Time{})
}

// allocatedGPUs honours the GPUs that Slurm gave this task: inside an
// allocation, CUDA_VISIBLE_DEVICES names them, and the sweep file's gpus
// (numbered on the whole node) would pick others, or ones another job
// holds. The slots take Slurm's devices in turn instead; note says so.
func allocatedGPUs(gpus []string, getenv func(string) string) ([]string, string) {
	slurm := getenv("CUDA_VISIBLE_DEVICES")
	if len(gpus) == 0 || getenv("SLURM_JOB_ID") == "" || slurm == "" {
		return gpus, ""
	}
	given := strings.Split(slurm, ",")
	return given, fmt.Sprintf("gpus %v ignored inside Slurm job %s: its slots take the GPUs Slurm gave it, CUDA_VISIBLE_DEVICES=%s",
		gpus, getenv("SLURM_JOB_ID"), slurm)
}

// where says where this process runs, for each trial's attributes: the
// host and, in a Slurm job, its id (an array's, for a task of one) and
// array task.
func where() map[string]any {
	w := map[string]any{}
	if host, err := os.Hostname(); err == nil {
		w["host"] = host
	}
	job := os.Getenv("SLURM_ARRAY_JOB_ID")
	if job == "" {
		job = os.Getenv("SLURM_JOB_ID")
	}
	if job != "" {
		w["slurm_job_id"] = job
	}
	if task := os.Getenv("SLURM_ARRAY_TASK_ID"); task != "" {
		w["slurm_array_task_id"] = task
	}
	return w
}

// stderrf writes one "sweep: " line to standard error.
func stderrf(format string, args ...any) { fmt.Fprintf(os.Stderr, "sweep: "+format+"\n", args...) }

// runPlan runs a plan's trials with progress display until each study has
// its budget.
func runPlan(cfg *sweep.Config, store storage.Storage, plan []sweep.Planned, file, command string, deadline time.Time) error {
	sampler, err := sweep.NewSampler(cfg.Sampler)
	if err != nil {
		return err
	}
	if gpus, note := allocatedGPUs(cfg.GPUs, os.Getenv); note != "" {
		cfg.GPUs = gpus
		fmt.Fprintln(os.Stderr, "sweep: "+note)
	}
	if err := preflight(cfg, plan, file); err != nil {
		return err
	}

	// The first Ctrl-C (or SIGTERM, or SIGHUP from a closed terminal) stops
	// the sweep: running trials get SIGTERM and kill_grace to end, and are
	// queued again; a second one kills them at once.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	killNow := make(chan struct{})
	r := &sweep.Runner{Config: cfg, Storage: store, Sampler: sampler, Pruner: sweep.NewPruner(cfg.Pruner), Log: os.Stderr, KillNow: killNow, Where: where(), Command: "sweep " + command, Deadline: deadline}
	if cfg.Pack > 1 {
		reg, standIn := registry(), standInModel(cfg.Model)
		packable := map[string]bool{} // by packKey
		packs := 0
		for _, p := range plan {
			if trial.Packable(reg, standIn, p.Method, p.Arch.Settings) {
				packable[packKey(p.Method, p.Arch.Settings)] = true
				packs++
			}
		}
		r.Packable = func(method string, arch map[string]any) bool { return packable[packKey(method, arch)] }
		// A study never has more trials than its budget to pack.
		fmt.Fprintf(os.Stderr, "sweep: pack %d: %d of %d studies train from the backbone's states and run up to %d trials per process; the rest one per process\n",
			cfg.Pack, packs, len(plan), min(cfg.Pack, cfg.Trials))
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	finished := make(chan struct{})
	defer close(finished)
	go func() {
		var sig os.Signal
		select {
		case sig = <-sigs:
		case <-finished:
			return
		}
		n, longest := r.Running()
		msg := fmt.Sprintf("sweep: stopping on %s: %d running trial(s), the longest running for %s, got SIGTERM and have up to kill_grace (%s) to end; they are queued again for the next run",
			signalName(sig), n, longest.Round(time.Second), cfg.KillGrace)
		if sig == syscall.SIGHUP {
			// The terminal is gone, and stderr with it: the message goes to
			// the run log in output_dir as well.
			appendRunLog(cfg.OutputDir, msg)
		}
		again := "Ctrl-C again kills them now"
		if command == "worker" {
			// A batch task: the scheduler, not a person, signals it.
			again = "a second SIGTERM kills them now"
		}
		fmt.Fprintf(os.Stderr, "\n%s; %s\n", msg, again)
		stop()
		for {
			select {
			case again := <-sigs:
				if again == syscall.SIGHUP {
					// A closed SSH session often sends two: only a person's
					// second Ctrl-C (or SIGTERM) cuts kill_grace short.
					continue
				}
				if sig == syscall.SIGHUP {
					appendRunLog(cfg.OutputDir, "sweep: killing the running trials on "+signalName(again))
				}
				fmt.Fprintln(os.Stderr, "sweep: killing the running trials")
				close(killNow)
			case <-finished:
			}
			return
		}
	}()
	var bar *progressbar.ProgressBar
	if term.IsTerminal(int(os.Stderr.Fd())) {
		bar = progressbar.NewOptions(1,
			progressbar.OptionSetWriter(os.Stderr),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionSetDescription("trials"),
		)
		r.Log = &barWriter{bar: bar, w: os.Stderr}
		r.Progress = func(done, total int, running []string) {
			bar.ChangeMax(total)
			desc := "trials"
			if len(running) > 0 {
				desc = "running " + strings.Join(running, ", ")
			}
			bar.Describe(desc)
			bar.Set(done)
		}
	}
	if db, ok := store.(*storage.DB); ok {
		log := r.Log
		db.RideOutages(storage.Outages{RetryFor: cfg.StorageRetry, Logf: func(format string, args ...any) {
			fmt.Fprintf(log, "sweep: "+format+"\n", args...)
		}})
	}
	fmt.Fprintf(r.Log, "sweep: %d studies → %s (parallel %d)\n", len(plan), storage.Redact(cfg.Storage), cfg.Parallel)
	if cfg.Trainer == "builtin" && len(cfg.Command) == 0 {
		// Said once here: each trial's own notice goes to its stderr.log.
		nn.DefaultBackend()
		fmt.Fprintf(r.Log, "sweep: CPU matrix products: %s\n", nn.BLASDescription())
	}
	res, err := r.Run(ctx, plan)
	interrupted := ctx.Err() != nil
	if bar != nil {
		bar.Finish()
		fmt.Fprintln(os.Stderr)
	}
	ran := 0
	for _, n := range res.States {
		ran += n
	}
	if err != nil && !interrupted && ran == 0 {
		// Nothing ran: the error is the whole story (a summary of zeros
		// would only bury it).
		if strings.Contains(err.Error(), "readonly database") {
			return fmt.Errorf("%s cannot be written (file or folder permissions; sweep run records every trial there): %w", storage.Redact(cfg.Storage), err)
		}
		return err
	}
	failed := fmt.Sprintf("%d failed", res.States[storage.Fail])
	if res.Reaped > 0 {
		failed += fmt.Sprintf(" (%d of them found dead from an earlier run)", res.Reaped)
	}
	fmt.Fprintf(os.Stderr, "sweep: this run: %d complete, %d pruned, %s; %d of %d studies at their budget\n",
		res.States[storage.Complete], res.States[storage.Pruned], failed, len(res.Finished), len(plan))
	if len(res.Abandoned) > 0 {
		var gave []string
		for _, name := range res.Abandoned {
			gave = append(gave, fmt.Sprintf("%s (%d failed)", name, res.Failures[name]))
		}
		fmt.Fprintf(os.Stderr, "sweep: gave up on %s: max_failures is %d; see `sweep trials STUDY --state fail`\n",
			strings.Join(gave, ", "), cfg.MaxFailures)
	}
	if err != nil || interrupted {
		if interrupted {
			return fmt.Errorf("interrupted; running the same command again resumes where this stopped (%s)", file)
		}
		return err
	}
	if len(res.Abandoned) > 0 {
		return fmt.Errorf("%d studies did not reach their budget", len(res.Abandoned))
	}
	return nil
}

// preflight checks what the plan's trials need before the first starts:
// output_dir can be made, and, for built-in trials, the model and the data.
// Every problem is listed, under the sweep file's name.
func preflight(cfg *sweep.Config, plan []sweep.Planned, file string) error {
	var problems []error
	if err := os.MkdirAll(cfg.OutputDir, 0o755); err != nil {
		problems = append(problems, fmt.Errorf("output_dir: %w", err))
	}
	if cfg.Trainer == "builtin" && len(cfg.Command) == 0 {
		var datasets []string
		for _, p := range plan {
			if !slices.Contains(datasets, p.Dataset) {
				datasets = append(datasets, p.Dataset)
			}
		}
		if err := trial.Preflight(cfg.Model, cfg.DataDir, datasets); err != nil {
			problems = append(problems, err)
		}
	}
	if len(cfg.Command) > 0 && !strings.Contains(cfg.Command[0], "{") {
		// Looked up as exec will: on PATH, or relative to this directory.
		if _, err := exec.LookPath(cfg.Command[0]); err != nil {
			problems = append(problems, fmt.Errorf("command: %s cannot be run: %w", cfg.Command[0], errors.Unwrap(err)))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: no trial started, since:", file)
	for _, line := range strings.Split(errors.Join(problems...).Error(), "\n") {
		fmt.Fprintf(&b, "\n  - %s", line)
	}
	return errors.New(b.String())
}

func dryRun(cfg *sweep.Config, plan []sweep.Planned) error {
	done := map[string]map[storage.TrialState]int{}
	if path, ok := sqliteFile(cfg.Storage); ok {
		if _, err := os.Stat(path); err == nil {
			store, err := storage.Open(cfg.Storage)
			if err != nil {
				return err
			}
			defer store.Close()
			studies, err := store.Studies(context.Background())
			if err != nil {
				return err
			}
			for _, st := range studies {
				trials, err := store.Trials(context.Background(), st.ID)
				if err != nil {
					return err
				}
				done[st.Name] = storage.Count(trials)
			}
		}
	}
	fmt.Printf("%d studies, %d trials each, storage %s, sampler %s, pruner %s, trainer %s\n",
		len(plan), cfg.Trials, storage.Redact(cfg.Storage), cfg.Sampler.Name, cfg.Pruner.Name, cfg.Trainer)
	fmt.Printf("%-40s %8s %8s %8s\n", "STUDY", "COMPLETE", "PRUNED", "FAIL")
	left := 0
	for _, p := range plan {
		n := done[p.Name]
		fmt.Printf("%-40s %8d %8d %8d\n", p.Name, n[storage.Complete], n[storage.Pruned], n[storage.Fail])
		left += max(0, cfg.Trials-n[storage.Complete]-n[storage.Pruned])
	}
	fmt.Printf("%d trials to run\n", left)
	return nil
}

// barWriter prints log lines above the progress bar.
type barWriter struct {
	mu  sync.Mutex
	bar *progressbar.ProgressBar
	w   io.Writer
}

func (b *barWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bar.Clear()
	n, err := b.w.Write(p)
	b.bar.RenderBlank()
	return n, err
}

// cmdTrial runs one trial; with --spec it runs stand-alone from a spec
// file (for example a trial's runs/.../spec.json), for debugging.
func cmdTrial(args []string) error {
	fs := newFlags("trial", "trial [--spec spec.json] [--cpuprofile FILE]   (else the spec comes from $SWEEP_TRIAL_SPEC or stdin)")
	specPath := fs.String("spec", "", "spec file to run")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the trial to FILE (go tool pprof)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		fs.Usage()
		return errUsage
	}
	spec, err := trial.ReadSpec(*specPath, os.Stdin)
	if err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("trial: --cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("trial: --cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return trial.Run(ctx, spec, registry(), os.Stdin, os.Stdout, os.Stderr)
}

// storageFileFlag adds --storage-file to fs.
func storageFileFlag(fs *flag.FlagSet) *string {
	return fs.String("storage-file", "", "read the storage URL from this file (keep it mode 0600): unlike --storage, it shows in no process list")
}

// setStorage sets cfg's storage from --storage or --storage-file, when
// one was given, else as configStorage says.
func setStorage(cfg *sweep.Config, url, urlFile string) error {
	switch {
	case url != "" && urlFile != "":
		return fmt.Errorf("%w: --storage and --storage-file both name the storage; give one", errUsage)
	case url != "":
		cfg.Storage = url
	case urlFile != "":
		var err error
		if cfg.Storage, err = readStorageFile(urlFile); err != nil {
			return err
		}
	default:
		cfg.Storage = configStorage(cfg)
	}
	return nil
}

// configStorage is the storage a sweep file means: the one it names, else
// $SWEEP_STORAGE, else the default. Every command reads a sweep file's
// storage through it, so that run, worker, submit, status and the
// dashboard agree.
func configStorage(cfg *sweep.Config) string {
	if env := os.Getenv("SWEEP_STORAGE"); !cfg.StorageNamed && env != "" {
		return env
	}
	return cfg.Storage
}

// readStorageFile reads the storage URL that --storage-file names.
func readStorageFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--storage-file: %w", err)
	}
	url := strings.TrimSpace(string(b))
	if url == "" {
		return "", fmt.Errorf("--storage-file %s: the file is empty; it should hold the storage URL", path)
	}
	if strings.ContainsAny(url, "\n\r") {
		return "", fmt.Errorf("--storage-file %s: holds more than one line; it should hold the storage URL alone", path)
	}
	return url, nil
}

// checkParallel refuses a --parallel below 1 that the user typed (0 is
// also the flag's "not given" for commands that default to the file's).
func checkParallel(fs *flag.FlagSet, parallel int) error {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "parallel" })
	if set && parallel < 1 {
		return fmt.Errorf("%w: --parallel %d: run at least 1 trial at once", errUsage, parallel)
	}
	return nil
}

// signalName says which signal stopped the run, in the words a user knows.
func signalName(sig os.Signal) string {
	switch sig {
	case os.Interrupt:
		return "Ctrl-C (SIGINT)"
	case syscall.SIGHUP:
		return "SIGHUP (the terminal or SSH session closed)"
	case syscall.SIGTERM:
		// Go names it "terminated"; a scheduler's log reader looks for the
		// signal (Slurm's preemption, requeue, scancel and time limit).
		return "SIGTERM"
	}
	return sig.String()
}

// appendRunLog adds a dated line to output_dir/sweep.log, where a run whose
// terminal has gone leaves its last words.
func appendRunLog(outputDir, line string) {
	if err := os.MkdirAll(outputDir, 0o755); err != nil {
		return
	}
	f, err := os.OpenFile(filepath.Join(outputDir, "sweep.log"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s %s\n", time.Now().Format(time.RFC3339), line)
}

// planChecked plans the studies --only selects and checks their methods
// and settings.
func planChecked(cfg *sweep.Config, only string) ([]sweep.Planned, error) {
	filter, err := sweep.ParseFilter(only)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	plan := sweep.Plan(cfg, filter)
	if len(plan) == 0 {
		return nil, fmt.Errorf("--only %q matches no study of %s", only, cfg.File)
	}
	if err := checkArchs(cfg, plan); err != nil {
		return nil, err
	}
	return plan, nil
}

// checkArchs validates, before any trial runs, that every planned method
// is built in and its architecture settings are valid, by attaching it to
// the stand-in T5 of the sweep's model.
func checkArchs(cfg *sweep.Config, plan []sweep.Planned) error {
	if cfg.Trainer != "builtin" || len(cfg.Command) > 0 {
		return nil
	}
	if err := cfg.CheckTraining(func(settings map[string]any) error {
		_, err := trial.ParseSettings(settings)
		if err != nil {
			return errors.New(strings.TrimPrefix(err.Error(), "trial: "))
		}
		return nil
	}); err != nil {
		return err
	}
	reg, standIn := registry(), standInModel(cfg.Model)
	return cfg.CheckArchs(plan, func(method string, settings map[string]any) error {
		if method == "synthetic" {
			return nil // the orchestrator's test double takes any settings
		}
		if _, ok := reg[method]; !ok {
			return fmt.Errorf("method %s is not part of this build yet (it lands with its own issue); leave it out with --only", method)
		}
		_, err := reg.New(method, standIn, settings, 0)
		return err
	})
}

// standInModel is the T5 that methods are attached to before any trial
// runs, to check their settings and ask whether they pack: the sweep's
// model's shape (its config.json) with one block per stack and at most
// 5,000 vocabulary entries, so that size limits (LST's side width, prompt
// counts) are the model's own. A model not at hand yet (a name to fetch)
// is stood in for by t5-large's width, the largest the paper uses.
// Attaching a method only reads the stand-in and resets its gradients.
func standInModel(model string) *t5.Model {
	c := t5.DefaultConfig()
	c.VocabSize, c.DModel, c.DKV, c.DFF, c.NumHeads = 5000, 1024, 64, 256, 2
	if dir, err := trial.ResolveModel(model); err == nil {
		if mc, err := t5.LoadConfig(dir); err == nil {
			c = mc
		}
	}
	c.VocabSize, c.NumLayers, c.NumDecoderLayers = min(c.VocabSize, 5000), 1, 1
	return t5.NewZeros(c)
}

// packKey names a method with its architecture settings (fmt prints a
// map's keys sorted).
func packKey(method string, arch map[string]any) string { return method + " " + fmt.Sprint(arch) }

// registry holds every fine-tuning method this build has.
func registry() methods.Registry { return all.Registry() }

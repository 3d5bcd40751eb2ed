package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/readsweep/readsweep/internal/atomicfile"
	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
)

// cmdSubmit plans a sweep in its (shared) storage and submits a Slurm job
// array of workers.
func cmdSubmit(args []string) error {
	fs := newFlags("submit", "submit --slurm SWEEPS.yaml [--workers N] [--gres gpu:1] [--time 24:00:00] [--partition P] [--account A] [--qos Q] [--mem M] [--cpus-per-task N] [--constraint C] [--job-name J] [--output F] [--sbatch-arg OPT]... [--storage URL | --storage-file F] [--only ...] [--dry-run]")
	slurm := fs.Bool("slurm", false, "submit to Slurm (the only scheduler so far)")
	workers := fs.Int("workers", 2, "workers in the job array, one trial at a time each")
	gres := fs.String("gres", "", "generic resources per worker, e.g. gpu:1")
	limit := fs.String("time", "", "time limit per worker (sbatch --time)")
	partition := fs.String("partition", "", "Slurm partition")
	pass := map[string]*string{}
	for _, o := range []struct{ name, usage string }{
		{"account", "account to charge (sbatch --account)"},
		{"qos", "quality of service (sbatch --qos)"},
		{"mem", "memory per worker, e.g. 32G (sbatch --mem)"},
		{"cpus-per-task", "CPU cores per worker (sbatch --cpus-per-task)"},
		{"constraint", "node features, e.g. a100 (sbatch --constraint)"},
	} {
		pass[o.name] = fs.String(o.name, "", o.usage)
	}
	jobName := fs.String("job-name", "sweep", "the job's name (sbatch --job-name)")
	output := fs.String("output", "", "each worker's log, with sbatch's %A (job) and %a (task) (default runs/slurm/sweep-%A_%a.out)")
	var extra stringList
	fs.Var(&extra, "sbatch-arg", "any other sbatch option, e.g. --sbatch-arg=--mail-type=END (repeatable)")
	url := fs.String("storage", "", "storage URL every worker reaches (overrides the file's)")
	urlFrom := storageFileFlag(fs)
	only := fs.String("only", "", "restrict to studies: method=M,dataset=D")
	dry := fs.Bool("dry-run", false, "print the batch script instead of submitting it")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || !*slurm {
		fs.Usage()
		return errUsage
	}
	if *workers < 1 {
		return fmt.Errorf("%w: --workers %d: submit at least 1", errUsage, *workers)
	}
	cfg, err := sweep.LoadConfig(pos[0])
	if err != nil {
		return err
	}
	if err := setStorage(cfg, *url, *urlFrom); err != nil {
		return err
	}
	plan, err := planChecked(cfg, *only)
	if err != nil {
		return err
	}
	if _, ok := sqliteFile(cfg.Storage); ok {
		fmt.Fprintln(os.Stderr, "sweep: warning: SQLite storage works across machines only on a shared file system that supports locking; PostgreSQL is the safe choice")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfgPath, err := filepath.Abs(pos[0])
	if err != nil {
		return err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	logs := filepath.Join(cwd, "runs", "slurm")
	if *output == "" {
		*output = filepath.Join(logs, "sweep-%A_%a.out")
	} else if *output, err = filepath.Abs(*output); err != nil {
		return err
	}
	opts, err := sbatchOptions(*workers, *output, cfg.KillGrace, extra, map[string]string{
		"job-name": *jobName, "gres": *gres, "time": *limit, "partition": *partition, "account": *pass["account"], "qos": *pass["qos"],
		"mem": *pass["mem"], "cpus-per-task": *pass["cpus-per-task"], "constraint": *pass["constraint"]})
	if err != nil {
		return err
	}
	// The workers read the URL from a file only its owner reads: in argv
	// it would show in ps and sacct, password and all.
	urlFile := filepath.Join(logs, "storage.url")
	worker := []string{exe, "worker", cfgPath, "--storage-file", urlFile, "--parallel", "1"}
	if *only != "" {
		worker = append(worker, "--only", *only)
	}
	if *limit != "" {
		if _, err := slurmDuration(*limit); err != nil {
			return fmt.Errorf("%w: --time %q: %v", errUsage, *limit, err)
		}
		// The worker starts no trial its time limit would cut short.
		worker = append(worker, "--time", *limit)
	}
	script, err := jobScript(fmt.Sprintf("%d workers of %s, sharing %s", *workers, pos[0], storage.Redact(cfg.Storage)), opts, cwd, worker)
	if err != nil {
		return err
	}
	if *dry {
		fmt.Print(script)
		return nil
	}
	// Plan the studies now, so `sweep status` shows them before a worker starts.
	store, err := storage.Open(cfg.Storage)
	if err != nil {
		return err
	}
	for _, p := range plan {
		if _, err := store.CreateStudy(context.Background(), p.Name, cfg.Direction, p.StudyAttrs(cfg)); err != nil {
			store.Close()
			return err
		}
	}
	store.Close()
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	// A new file of mode 0600 renamed into place: writing over an older,
	// more readable one would keep its mode.
	if err := atomicfile.Write(urlFile, []byte(cfg.Storage+"\n"), 0o600); err != nil {
		return err
	}
	scriptFile := filepath.Join(logs, "sweep.sbatch")
	if err := os.WriteFile(scriptFile, []byte(script), 0o644); err != nil {
		return err
	}
	jobFile := filepath.Join(logs, "job")
	warnIfQueued(jobFile)
	id, err := sbatch(scriptFile)
	if err != nil {
		return err
	}
	os.WriteFile(jobFile, []byte(id+"\n"), 0o644) // for the next submit's warning
	fmt.Println(id)
	// The URL file, not the sweep file's storage: --storage or
	// $SWEEP_STORAGE may have named another.
	fmt.Fprintf(os.Stderr, "sweep: submitted job %s (%d workers, script %s); `sweep status --config %s --storage-file %s --job %s` follows it\n",
		id, *workers, scriptFile, shellQuote(pos[0]), shellQuote(urlFile), id)
	return nil
}

// sbatchOptions are the job's sbatch options, one per #SBATCH line in the
// order sbatch reads them: submit's own, those of its flags (named, by
// option name; empty ones left out), then the user's --sbatch-arg, last
// so that they win.
func sbatchOptions(workers int, output string, killGrace time.Duration, extra []string, named map[string]string) ([]string, error) {
	opts := []string{"--job-name=" + named["job-name"], fmt.Sprintf("--array=0-%d", workers-1), "--requeue", "--ntasks=1",
		"--output=" + output,
		// A requeued task appends to its log: truncated, it would lose
		// what ran before the requeue, and the record of it.
		"--open-mode=append",
		// Before the time limit the worker (the batch shell, exec'd) gets
		// SIGTERM: its trials checkpoint within kill_grace and are queued
		// again, for the next job to resume. Slurm may signal up to a
		// minute early or late, hence the minute on top.
		fmt.Sprintf("--signal=B:TERM@%d", signalLead(killGrace, named["time"]))}
	for _, name := range []string{"gres", "time", "partition", "account", "qos", "mem", "cpus-per-task", "constraint"} {
		if v := named[name]; v != "" {
			opts = append(opts, "--"+name+"="+v)
		}
	}
	for _, a := range extra {
		if !strings.HasPrefix(a, "-") {
			return nil, fmt.Errorf("%w: --sbatch-arg %q: give an sbatch option, e.g. --sbatch-arg=--mail-type=END", errUsage, a)
		}
		if err := notSubmits(a); err != nil {
			return nil, fmt.Errorf("%w: --sbatch-arg %q: %v", errUsage, a, err)
		}
		opts = append(opts, a)
	}
	return opts, nil
}

// signalLead is how many seconds before the time limit the worker gets
// SIGTERM: kill_grace and a minute (Slurm signals up to a minute off),
// at most half of a short --time and sbatch's 65535.
func signalLead(killGrace time.Duration, limit string) int {
	lead := killGrace + time.Minute
	if d, err := slurmDuration(limit); err == nil && d > 0 && lead > d/2 {
		lead = d / 2
	}
	return max(1, min(int(lead.Seconds()), 65535))
}

// jobScript is the batch script: a comment saying what it runs, the
// options as #SBATCH lines, then the worker command, run from the folder
// submit ran in.
func jobScript(what string, opts []string, dir string, worker []string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/bash\n# Written by `sweep submit`: %s.\n", oneLine(what))
	for _, o := range opts {
		line, err := sbatchDirective(o)
		if err != nil {
			return "", fmt.Errorf("%w: %v", errUsage, err)
		}
		b.WriteString(line)
	}
	quoted := make([]string, len(worker))
	for i, a := range worker {
		quoted[i] = shellQuote(a)
	}
	// Without the submit folder (not mounted on the node, removed), the
	// worker would write output_dir wherever it stood.
	fmt.Fprintf(&b, "cd %s || { echo \"sweep worker: cannot enter the submit folder on $(hostname)\" >&2; exit 1; }\nexec %s\n",
		shellQuote(dir), strings.Join(quoted, " "))
	return b.String(), nil
}

// warnIfQueued warns when the job the last submit from this folder
// recorded in jobFile is still queued or running: two jobs of one sweep
// share its budgets (nothing runs twice), but it is seldom what was meant.
func warnIfQueued(jobFile string) {
	prev, err := os.ReadFile(jobFile)
	if err != nil {
		return
	}
	id := strings.TrimSpace(string(prev))
	if out, err := exec.Command("squeue", "-h", "-j", id).Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		fmt.Fprintf(os.Stderr, "sweep: warning: job %s of this folder's sweep is still queued or running; the new job's workers share its budgets (scancel %s to replace it)\n", id, id)
	}
}

// sbatch submits a script and returns the job id. The id is on stdout
// alone: sites' submit plugins write notices to stderr, passed on as they
// are.
func sbatch(script string) (string, error) {
	cmd := exec.Command("sbatch", "--parsable", script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	os.Stderr.Write(stderr.Bytes())
	if err != nil {
		return "", fmt.Errorf("sbatch %s: %v: %s", script, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return strings.TrimSpace(strings.Split(string(out), ";")[0]), nil
}

// slurmJobID is a job id as squeue takes it: a job, or an array task.
var slurmJobID = regexp.MustCompile(`^[0-9]+(_[0-9]+)?$`)

// staleTrials counts the RUNNING trials whose heartbeat is older than grace.
func staleTrials(trials []storage.FrozenTrial, grace time.Duration) int {
	n := 0
	for _, t := range trials {
		// Stored heartbeats are naive UTC, read as UTC.
		if t.State == storage.Running && !t.Heartbeat.IsZero() && time.Since(t.Heartbeat) > grace {
			n++
		}
	}
	return n
}

// latestFailures describes the study's last n FAIL trials, newest first:
// number, where it ran and the first line of its reason.
func latestFailures(study string, trials []storage.FrozenTrial, n int) []string {
	var out []string
	for i := len(trials) - 1; i >= 0 && len(out) < n; i-- {
		t := trials[i]
		if t.State != storage.Fail {
			continue
		}
		line := fmt.Sprintf("%s#%d", study, t.Number)
		var at []string
		for _, k := range []string{"host", "slurm_job_id", "slurm_array_task_id"} {
			if v, ok := t.UserAttrs[k]; ok {
				at = append(at, fmt.Sprintf("%s %v", k, v))
			}
		}
		if len(at) > 0 {
			line += " (" + strings.Join(at, ", ") + ")"
		}
		reason, _ := t.UserAttrs["fail_reason"].(string)
		if reason == "" {
			reason = "no reason recorded"
		}
		out = append(out, line+": "+sweep.Printable(reason))
	}
	return out
}

// sbatchDirective is the #SBATCH line for one option. sbatch reads such a
// line its own way: whitespace ends the option unless in double quotes,
// an unescaped # starts a comment even inside them, and a backslash makes
// the next character plain. So a value goes in double quotes, with \\, \"
// and \# escaped: a folder with a space or a job name with a # arrive as
// given.
func sbatchDirective(opt string) (string, error) {
	if strings.ContainsAny(opt, "\n\r") {
		// A line break would end the directive and start a command.
		return "", fmt.Errorf("sbatch option %q holds a line break", opt)
	}
	name, value, hasValue := strings.Cut(opt, "=")
	if strings.ContainsAny(name, " \t\"\\#") {
		return "", fmt.Errorf("sbatch option %q: write it as --option=value", opt)
	}
	if !hasValue {
		return "#SBATCH " + name + "\n", nil
	}
	if value == "" {
		return "", fmt.Errorf("sbatch option %q has an empty value", opt)
	}
	return "#SBATCH " + name + `="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "#", `\#`).Replace(value) + "\"\n", nil
}

// submitsOwn are the sbatch options submit sets: an --sbatch-arg may not
// set them again (its own flag, where one exists, says how).
var submitsOwn = map[string]string{
	"--array": "submit sets it from --workers", "-a": "submit sets it from --workers",
	"--requeue": "submit sets it", "--no-requeue": "the workers rely on --requeue", "--open-mode": "submit sets append",
	"--ntasks": "a worker is one task", "-n": "a worker is one task",
	"--output": "use --output", "-o": "use --output", "--job-name": "use --job-name", "-J": "use --job-name",
	"--time": "use --time (the workers read it too)", "-t": "use --time (the workers read it too)",
	"--gres": "use --gres", "--partition": "use --partition", "-p": "use --partition", "--account": "use --account",
	"-A": "use --account", "--qos": "use --qos", "-q": "use --qos", "--mem": "use --mem",
	"--cpus-per-task": "use --cpus-per-task", "-c": "use --cpus-per-task", "--constraint": "use --constraint", "-C": "use --constraint",
}

// notSubmits refuses an --sbatch-arg that sets one of submit's options.
func notSubmits(opt string) error {
	name, _, _ := strings.Cut(opt, "=")
	if !strings.HasPrefix(name, "--") && len(name) > 2 {
		name = name[:2] // a short option with its value attached: -o/tmp/x
	}
	if why, ok := submitsOwn[name]; ok {
		return fmt.Errorf("%s: %s", name, why)
	}
	// sbatch takes any unambiguous beginning of a long option (--arr=).
	for own, why := range submitsOwn {
		if strings.HasPrefix(name, "--") && len(name) > 3 && strings.HasPrefix(own, name) {
			return fmt.Errorf("%s (%s): %s", name, own, why)
		}
	}
	return nil
}

// stringList is a flag given any number of times.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// oneLine is s with line breaks shown as \n, for a comment line.
func oneLine(s string) string { return strings.NewReplacer("\n", `\n`, "\r", `\r`).Replace(s) }

// shellQuote quotes s for bash as one word, with nothing in it expanded.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// cmdStatus shows each study's progress and, with --job, the Slurm states
// of the workers.
func cmdStatus(args []string) error {
	fs := newFlags("status", "status [--job ID] [--storage URL | --config FILE]")
	job := fs.String("job", "", "Slurm job id whose array tasks to list")
	get := storageFlags(fs)
	return withStore(fs, args, 0, 0, get, func(ctx context.Context, s *storage.DB, _ []string) error {
		studies, err := s.Studies(ctx)
		if err != nil {
			return err
		}
		var cfg *sweep.Config // budgets come from the sweep file
		if file := fs.Lookup("config").Value.String(); file != "" {
			if cfg, err = sweep.LoadConfig(file); err != nil {
				return err
			}
		}
		grace := sweep.DefaultHeartbeatGrace
		if cfg != nil {
			grace = cfg.HeartbeatGrace
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "STUDY\tDONE\tRUNNING\tWAITING\tFAIL")
		short := 0 // studies below their budget
		var failures []string
		for _, st := range studies {
			trials, err := s.Trials(ctx, st.ID)
			if err != nil {
				return err
			}
			n := storage.Count(trials)
			finished := n[storage.Complete] + n[storage.Pruned]
			done := strconv.Itoa(finished)
			if cfg != nil {
				budget := cfg.Trials
				if sweep.Identify(st).Final {
					budget = len(cfg.Seeds())
				}
				done += " of " + strconv.Itoa(budget)
				if finished < budget {
					short++
				}
			}
			running := strconv.Itoa(n[storage.Running])
			if stale := staleTrials(trials, grace); stale > 0 {
				// Their process is gone (or cannot reach the database):
				// the next worker to start a trial fails and retries them.
				running += fmt.Sprintf(" (%d stale)", stale)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\n", st.Name, done, running, n[storage.Waiting], n[storage.Fail])
			failures = append(failures, latestFailures(st.Name, trials, 3)...)
		}
		tw.Flush()
		if len(failures) > 0 {
			fmt.Println("\nLatest failures:")
			for _, f := range failures {
				fmt.Println("  " + f)
			}
		}
		if cfg == nil {
			fmt.Fprintln(os.Stderr, "sweep: pass --config SWEEPS.yaml to see each study's budget")
		}
		if *job == "" {
			return nil
		}
		if !slurmJobID.MatchString(*job) {
			return fmt.Errorf("%w: --job %q: want a Slurm job id such as 1234 or 1234_5", errUsage, *job)
		}
		out, err := exec.Command("squeue", "-h", "-r", "-j", *job, "-o", "%i %T %R").CombinedOutput()
		if err != nil {
			return fmt.Errorf("squeue: %v: %s", err, bytes.TrimSpace(out))
		}
		fmt.Printf("\nSlurm job %s:\n", *job)
		if len(bytes.TrimSpace(out)) == 0 {
			fmt.Println("  no task queued or running (finished, or not this cluster's job)")
			if short > 0 {
				// Dead or timed-out tasks are not replaced.
				fmt.Printf("  %d studies are below their budget with no worker left: `sweep submit` the sweep file again to finish them\n", short)
			}
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line != "" {
				fmt.Println("  " + line)
			}
		}
		return nil
	})
}

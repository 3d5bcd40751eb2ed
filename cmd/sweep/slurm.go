package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
)

// cmdSubmit plans a sweep in its (shared) storage and submits a Slurm job
// array of workers.
func cmdSubmit(args []string) error {
	fs := newFlags("submit", "submit --slurm SWEEPS.yaml [--workers N] [--gres gpu:1] [--time 24:00:00] [--partition P] [--storage URL | --storage-file F] [--only ...] [--dry-run]")
	slurm := fs.Bool("slurm", false, "submit to Slurm (the only scheduler so far)")
	workers := fs.Int("workers", 2, "workers in the job array, one trial at a time each")
	gres := fs.String("gres", "", "generic resources per worker, e.g. gpu:1")
	limit := fs.String("time", "", "time limit per worker (sbatch --time)")
	partition := fs.String("partition", "", "Slurm partition")
	url := fs.String("storage", "", "storage URL every worker reaches (overrides the file's)")
	urlFrom := storageFileFlag(fs)
	only := fs.String("only", "", "restrict to studies: method=M,dataset=D")
	dry := fs.Bool("dry-run", false, "print the batch script instead of submitting it")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || !*slurm || *workers < 1 {
		fs.Usage()
		return errUsage
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
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/bash\n# Written by `sweep submit`: %d workers of %s, sharing %s.\n", *workers, pos[0], storage.Redact(cfg.Storage))
	fmt.Fprintf(&b, "#SBATCH --job-name=sweep\n#SBATCH --array=0-%d\n#SBATCH --requeue\n#SBATCH --ntasks=1\n#SBATCH --output=%s/sweep-%%A_%%a.out\n", *workers-1, logs)
	if *gres != "" {
		fmt.Fprintf(&b, "#SBATCH --gres=%s\n", *gres)
	}
	if *limit != "" {
		fmt.Fprintf(&b, "#SBATCH --time=%s\n", *limit)
	}
	if *partition != "" {
		fmt.Fprintf(&b, "#SBATCH --partition=%s\n", *partition)
	}
	// The workers read the URL from a file only its owner reads: in argv
	// it would show in ps and sacct, password and all.
	urlFile := filepath.Join(logs, "storage.url")
	args2 := []string{exe, "worker", cfgPath, "--storage-file", urlFile, "--parallel", "1"}
	if *only != "" {
		args2 = append(args2, "--only", *only)
	}
	quoted := make([]string, len(args2))
	for i, a := range args2 {
		quoted[i] = strconv.Quote(a)
	}
	fmt.Fprintf(&b, "cd %s\nexec %s\n", strconv.Quote(cwd), strings.Join(quoted, " "))
	if *dry {
		fmt.Print(b.String())
		return nil
	}
	// Plan the studies now, so `sweep status` shows them before a worker starts.
	store, err := storage.Open(cfg.Storage)
	if err != nil {
		return err
	}
	for _, p := range plan {
		if _, err := store.CreateStudy(context.Background(), p.Name, cfg.Direction, map[string]any{
			"method": p.Method, "arch": p.Arch.Name, "arch_settings": p.Arch.Settings, "dataset": p.Dataset}); err != nil {
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
	tmp := urlFile + ".tmp"
	os.Remove(tmp)
	if err := os.WriteFile(tmp, []byte(cfg.Storage+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, urlFile); err != nil {
		return err
	}
	script := filepath.Join(logs, "sweep.sbatch")
	if err := os.WriteFile(script, []byte(b.String()), 0o644); err != nil {
		return err
	}
	out, err := exec.Command("sbatch", "--parsable", script).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sbatch %s: %v: %s", script, err, bytes.TrimSpace(out))
	}
	id := strings.TrimSpace(strings.Split(string(out), ";")[0])
	fmt.Println(id)
	fmt.Fprintf(os.Stderr, "sweep: submitted job %s (%d workers, script %s); `sweep status --config %s --job %s` follows it\n", id, *workers, script, pos[0], id)
	return nil
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
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "STUDY\tDONE\tRUNNING\tWAITING\tFAIL")
		for _, st := range studies {
			trials, err := s.Trials(ctx, st.ID)
			if err != nil {
				return err
			}
			n := storage.Count(trials)
			done := strconv.Itoa(n[storage.Complete] + n[storage.Pruned])
			if cfg != nil {
				budget := cfg.Trials
				if sweep.Identify(st).Final {
					budget = len(cfg.Seeds())
				}
				done += " of " + strconv.Itoa(budget)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", st.Name, done, n[storage.Running], n[storage.Waiting], n[storage.Fail])
		}
		tw.Flush()
		if cfg == nil {
			fmt.Fprintln(os.Stderr, "sweep: pass --config SWEEPS.yaml to see each study's budget")
		}
		if *job == "" {
			return nil
		}
		out, err := exec.Command("squeue", "-h", "-r", "-j", *job, "-o", "%i %T %R").CombinedOutput()
		if err != nil {
			return fmt.Errorf("squeue: %v: %s", err, bytes.TrimSpace(out))
		}
		fmt.Printf("\nSlurm job %s:\n", *job)
		if len(bytes.TrimSpace(out)) == 0 {
			fmt.Println("  no task queued or running (finished, or not this cluster's job)")
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line != "" {
				fmt.Println("  " + line)
			}
		}
		return nil
	})
}

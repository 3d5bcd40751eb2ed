package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/readsweep/readsweep/glue"
	"github.com/readsweep/readsweep/hub"
	"github.com/readsweep/readsweep/t5"
)

func cmdFetch(args []string) error {
	if len(args) > 0 && args[0] == "model" {
		return fetchModel(args[1:])
	}
	if len(args) == 0 || args[0] != "glue" {
		return fmt.Errorf("%w: usage: sweep fetch glue [--dir data/glue] [--tasks ...] | sweep fetch model NAME [--dir DIR]", errUsage)
	}
	fs := newFlags("fetch glue", "fetch glue [--dir data/glue] [--tasks cola,sst2,...] [--revision main]")
	dir := fs.String("dir", "data/glue", "where to put the files (one folder per task)")
	names := fs.String("tasks", strings.Join(glue.PaperTasks, ","), "tasks to fetch (rte too if asked)")
	revision := fs.String("revision", "main", "revision of the hub's nyu-mll/glue dataset")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		fs.Usage()
		return errUsage
	}
	tasks, err := lookupTasks(*names)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	c := hub.FromEnv()
	c.Progress = byteProgress()
	c.Log = stderrf
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "sweep: fetching %d GLUE tasks from %s/datasets/%s into %s\n", len(tasks), c.Endpoint, glue.HubRepo, *dir)
	commit, err := glue.Fetch(ctx, c, *dir, *revision, tasks)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "sweep: %s at %s is commit %s (recorded in each task folder's %s)\n", glue.HubRepo, *revision, commit, hub.RevisionFile)
	fmt.Fprintf(os.Stderr, "sweep: done; `sweep data stats --dir %s` shows the splits\n", *dir)
	return nil
}

// byteProgress draws one byte bar per file on a terminal, and prints one
// line per finished file otherwise.
func byteProgress() func(path string, done, total int64) {
	var mu sync.Mutex
	var bar *progressbar.ProgressBar
	current := ""
	tty := term.IsTerminal(int(os.Stderr.Fd()))
	return func(path string, done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if path != current {
			current = path
			if tty {
				bar = progressbar.DefaultBytes(total, path)
			}
		}
		if bar != nil {
			bar.Set64(done)
		}
		if done == total && !tty {
			fmt.Fprintf(os.Stderr, "sweep: %s (%d bytes)\n", path, total)
		}
	}
}

func lookupTasks(names string) ([]*glue.Task, error) {
	var out []*glue.Task
	for _, n := range strings.Split(names, ",") {
		t, err := glue.Lookup(strings.TrimSpace(n))
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

func cmdData(args []string) error {
	if len(args) == 0 || args[0] != "stats" {
		return fmt.Errorf("%w: usage: sweep data stats [--dir data/glue] [--tasks ...] [--seed 42]", errUsage)
	}
	fs := newFlags("data stats", "data stats [--dir data/glue] [--tasks cola,sst2,...] [--seed 42]")
	dir := fs.String("dir", "data/glue", "GLUE data directory (TSV, hub parquet or jsonl layout)")
	names := fs.String("tasks", strings.Join(glue.PaperTasks, ","), "tasks to report")
	seed := fs.Uint64("seed", glue.DefaultSplitSeed, "seed of the split shuffle")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		fs.Usage()
		return errUsage
	}
	tasks, err := lookupTasks(*names)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "TASK\tLAYOUT\tTRAIN\tVALIDATION\tTEST\tTABLE 6 (k)\tSKIPPED\tLOAD\t")
	var notes []string
	for _, t := range tasks {
		start := time.Now()
		d, err := glue.Load(*dir, t)
		if err != nil {
			return err
		}
		took := time.Since(start)
		s, err := glue.PaperSplits(d, *seed)
		if err != nil {
			return err
		}
		skipped := 0
		for _, n := range d.Skipped {
			skipped += n
		}
		ref := "-"
		if r, ok := glue.Table6[t.Name]; ok {
			ref = fmt.Sprintf("%g/%g/%g", r[0], r[2], r[1])
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%d\t%.2fs\t\n", t.Name, d.Layout, len(s.Train), len(s.Validation), len(s.Test), ref, skipped, took.Seconds())
		notes = append(notes, fmt.Sprintf("%s: %s", t.Name, s.Rule))
	}
	tw.Flush()
	fmt.Printf("\nsplit seed %d; Table 6 is train/validation/test in thousands as the paper prints it\n", *seed)
	for _, n := range notes {
		fmt.Println(n)
	}
	return nil
}

// fetchModel downloads a T5 checkpoint and its tokenizer from the hub.
func fetchModel(args []string) error {
	fs := newFlags("fetch model", "fetch model NAME [--dir DIR] [--revision main]   (NAME: t5-small, t5-base, or ORG/REPO)")
	dir := fs.String("dir", "", "where to put the files (default: the user cache, readsweep/models/ORG/NAME)")
	revision := fs.String("revision", "main", "repository revision")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	if *dir == "" {
		if *dir, err = t5.CacheDir(pos[0]); err != nil {
			return err
		}
	}
	c := hub.FromEnv()
	c.Progress = byteProgress()
	c.Log = stderrf
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(os.Stderr, "sweep: fetching %s from %s into %s\n", t5.HubRepo(pos[0]), c.Endpoint, *dir)
	commit, err := t5.Fetch(ctx, c, pos[0], *revision, *dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "sweep: %s at %s is commit %s (recorded in %s/%s)\n", t5.HubRepo(pos[0]), *revision, commit, *dir, hub.RevisionFile)
	fmt.Println(*dir)
	return nil
}

package main

import (
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
)

// storageFlags adds --storage, --storage-file and --config to fs.
func storageFlags(fs *flag.FlagSet) func() (string, error) {
	url := fs.String("storage", "", "storage URL (default $SWEEP_STORAGE, else sqlite:///sweeps.db)")
	urlFile := storageFileFlag(fs)
	cfg := fs.String("config", "", "take the storage URL from this sweep file")
	return func() (string, error) {
		switch {
		case *url != "" && *urlFile != "":
			return "", fmt.Errorf("%w: --storage and --storage-file both name the storage; give one", errUsage)
		case *url != "":
			return *url, nil
		case *urlFile != "":
			return readStorageFile(*urlFile)
		case *cfg != "":
			c, err := sweep.LoadConfig(*cfg)
			if err != nil {
				return "", err
			}
			return configStorage(c), nil
		case os.Getenv("SWEEP_STORAGE") != "":
			return os.Getenv("SWEEP_STORAGE"), nil
		}
		return "sqlite:///sweeps.db", nil
	}
}

// sqliteFile returns the file behind a sqlite URL, as storage reads it; a
// URL it cannot read is left to storage's open to report.
func sqliteFile(url string) (string, bool) {
	path, ok, err := storage.SQLiteFile(url)
	return path, ok && err == nil // a server says itself whether the database exists
}

// openExisting opens a storage that must already exist, for writing
// (run on a sweep file's storage, retry, tell): no command creates an empty
// database by mistake.
func openExisting(url string) (*storage.DB, error) {
	if path, ok := sqliteFile(url); ok {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no database at %s (run `sweep run` first, or pass --storage / --config)", path)
		}
	}
	return storage.Open(url)
}

// openForReading opens an existing storage read-only: the inspecting
// commands and the dashboard never write, not even a schema into an empty
// file, and never take the write lock a running sweep needs.
func openForReading(url string) (*storage.DB, error) {
	if path, ok := sqliteFile(url); ok {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no database at %s (run `sweep run` first, or pass --storage / --config)", path)
		}
	}
	db, err := storage.OpenReadOnly(url)
	if err == nil && db.Immutable() {
		fmt.Fprintf(os.Stderr, "sweep: %s or its folder is not writable here: reading it as a snapshot, without a sweep's later writes\n", db.Path())
	}
	return db, err
}

// withStore parses flags, checks the positional arguments' count (between
// minPos and maxPos), opens the existing database read-only and calls fn.
func withStore(fs *flag.FlagSet, args []string, minPos, maxPos int, get func() (string, error), fn func(ctx context.Context, s *storage.DB, pos []string) error) error {
	return withStoreOpened(openForReading, fs, args, minPos, maxPos, get, fn)
}

// withWritableStore is withStore for the commands that write (retry).
func withWritableStore(fs *flag.FlagSet, args []string, minPos, maxPos int, get func() (string, error), fn func(ctx context.Context, s *storage.DB, pos []string) error) error {
	return withStoreOpened(openExisting, fs, args, minPos, maxPos, get, fn)
}

func withStoreOpened(open func(string) (*storage.DB, error), fs *flag.FlagSet, args []string, minPos, maxPos int, get func() (string, error), fn func(ctx context.Context, s *storage.DB, pos []string) error) error {
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	takes := map[[2]int]string{{0, 0}: "no arguments besides its flags", {1, 1}: "one argument", {0, 1}: "at most one argument"}[[2]int{minPos, maxPos}]
	if err := argCount(fs, pos, minPos, maxPos, takes); err != nil {
		return err
	}
	url, err := get()
	if err != nil {
		return err
	}
	s, err := open(url)
	if err != nil {
		return err
	}
	defer s.Close()
	return fn(context.Background(), s, pos)
}

func cmdBest(args []string) error {
	fs := newFlags("best", "best --method M [--dataset D[,D...]] [--export DIR [--merge]] [--storage URL | --config FILE]")
	method := fs.String("method", "", "method whose architecture to choose (required)")
	datasets := fs.String("dataset", "", "limit to these datasets (comma-separated)")
	export := fs.String("export", "", "export the choice's models into this folder: each dataset's final runs (DATASET/seed-S), else its best trial (DATASET)")
	merge := fs.Bool("merge", false, "with --export: fold the method into plain Hugging Face T5 folders (LoRA, IA³)")
	get := storageFlags(fs)
	if *method == "" && len(args) == 0 {
		fs.Usage()
		return errUsage
	}
	return withStore(fs, args, 0, 0, get, func(ctx context.Context, s *storage.DB, _ []string) error {
		if *method == "" {
			return fmt.Errorf("%w: best needs --method (the method whose architecture to choose)", errUsage)
		}
		var ds []string
		if *datasets != "" {
			ds = strings.Split(*datasets, ",")
		}
		sel, err := sweep.Best(ctx, s, *method, ds)
		if err != nil {
			return err
		}
		printSelection(os.Stdout, sel)
		if *export != "" {
			fmt.Println()
			return exportBest(ctx, s, sel, *export, *merge)
		}
		if *merge {
			return fmt.Errorf("%w: --merge goes with --export DIR", errUsage)
		}
		return nil
	})
}

func printSelection(w io.Writer, sel sweep.Selection) {
	chosen, ok := sel.Chosen()
	if !ok {
		fmt.Fprintf(w, "%s: no COMPLETE trial yet in %d candidate(s)\n", sel.Method, len(sel.Archs))
		return
	}
	fmt.Fprintf(w, "%s: chosen architecture %s (mean best validation %.4f over %d datasets)\n\n", sel.Method, chosen.Arch, chosen.Mean, len(chosen.Best))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DATASET\tLR\tVALIDATION\tTEST\tPRECISION\tTRIAL")
	for _, d := range sel.Datasets {
		b, ok := chosen.Best[d]
		if !ok {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t%s (no COMPLETE trial)\n", d, chosen.Study[d])
			continue
		}
		precision, ok := b.UserAttrs["precision"].(string)
		if !ok {
			precision = "-" // a trainer that does not say (command:, synthetic), or a trial from before the setting
		}
		test := "-"
		if v, ok := b.UserAttrs["test"].(float64); ok {
			test = fmt.Sprintf("%.4f", v)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.4f\t%s\t%s\t%s#%d\n", d, formatParam(b, "lr"), *b.Value, test, precision, chosen.Study[d], b.Number)
	}
	tw.Flush()
	fmt.Fprintf(w, "\ncandidates (Appendix D.2: best validation per dataset, averaged):\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ARCH\tMEAN\tDATASETS")
	for _, a := range sel.Archs {
		mark := ""
		if !a.Complete {
			mark = " (incomplete)"
		}
		fmt.Fprintf(tw, "%s\t%.4f\t%d/%d%s\n", a.Arch, a.Mean, len(a.Best), len(sel.Datasets), mark)
	}
	tw.Flush()
}

func formatParam(t storage.FrozenTrial, name string) string {
	v, ok := t.Params[name]
	if !ok {
		return "-"
	}
	return fmt.Sprint(formatValue(t.Distributions[name].ToExternal(v)))
}

func formatValue(v any) any {
	if f, ok := v.(float64); ok {
		return strconv.FormatFloat(f, 'g', 4, 64)
	}
	return v
}

func cmdStudies(args []string) error {
	fs := newFlags("studies", "studies [--storage URL | --config FILE]")
	get := storageFlags(fs)
	return withStore(fs, args, 0, 0, get, func(ctx context.Context, s *storage.DB, pos []string) error {
		studies, err := s.Studies(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "STUDY\tCOMPLETE\tPRUNED\tFAIL\tRUNNING\tWAITING\tBEST\tBEST PARAMS")
		for _, st := range studies {
			trials, err := s.Trials(ctx, st.ID)
			if err != nil {
				return err
			}
			n := storage.Count(trials)
			best, params := "-", ""
			if b, ok := storage.BestTrial(trials, st.Direction); ok {
				best = fmt.Sprintf("%.4f", *b.Value)
				params = formatParams(b)
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\n", st.Name, n[storage.Complete], n[storage.Pruned], n[storage.Fail], n[storage.Running], n[storage.Waiting], best, params)
		}
		return tw.Flush()
	})
}

func formatParams(t storage.FrozenTrial) string {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(t.Params)) {
		parts = append(parts, fmt.Sprintf("%s=%v", n, formatParam(t, n)))
	}
	return strings.Join(parts, " ")
}

func findStudy(ctx context.Context, s storage.Storage, name string) (storage.Study, error) {
	studies, err := s.Studies(ctx)
	if err != nil {
		return storage.Study{}, err
	}
	var names []string
	for _, st := range studies {
		if st.Name == name {
			return st, nil
		}
		names = append(names, st.Name)
	}
	hint := ""
	if len(names) > 0 {
		hint = "; `sweep studies` lists the " + strconv.Itoa(len(names)) + " studies"
	}
	return storage.Study{}, fmt.Errorf("no study named %q%s", name, hint)
}

// findTrial returns trial number n of the named study.
func findTrial(ctx context.Context, s storage.Storage, name string, n int) (storage.Study, storage.FrozenTrial, error) {
	st, err := findStudy(ctx, s, name)
	if err != nil {
		return st, storage.FrozenTrial{}, err
	}
	trials, err := s.Trials(ctx, st.ID)
	if err != nil {
		return st, storage.FrozenTrial{}, err
	}
	for _, t := range trials {
		if t.Number == n {
			return st, t, nil
		}
	}
	return st, storage.FrozenTrial{}, fmt.Errorf("study %s has no trial #%d (it has %d trials)", name, n, len(trials))
}

func cmdTrials(args []string) error {
	fs := newFlags("trials", "trials STUDY [--state STATE] [--storage URL | --config FILE]")
	state := fs.String("state", "", "only trials in this state (complete, pruned, fail, running, waiting)")
	get := storageFlags(fs)
	return withStore(fs, args, 1, 1, get, func(ctx context.Context, s *storage.DB, pos []string) error {
		var want *storage.TrialState
		if *state != "" {
			st, err := storage.ParseTrialState(*state)
			if err != nil {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
			want = &st
		}
		st, err := findStudy(ctx, s, pos[0])
		if err != nil {
			return err
		}
		trials, err := s.Trials(ctx, st.ID)
		if err != nil {
			return err
		}
		// A study that validates every few optimiser steps shows the
		// last step reported; counting its reports would not be epochs.
		progress, column := func(t storage.FrozenTrial) string { return strconv.Itoa(len(t.Intermediate)) }, "EPOCHS"
		if sweep.Identify(st).ReportUnit == sweep.UnitStep {
			progress, column = lastReportedStep, "STEPS"
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "#\tSTATE\tVALUE\t%s\tSECONDS\tPARAMS\tNOTE\n", column)
		for _, t := range trials {
			if want != nil && t.State != *want {
				continue
			}
			val := "-"
			if t.Value != nil {
				val = fmt.Sprintf("%.4f", *t.Value)
			}
			secs := "-"
			if !t.Start.IsZero() && !t.Complete.IsZero() {
				secs = fmt.Sprintf("%.1f", t.Complete.Sub(t.Start).Seconds())
			}
			note, _ := t.UserAttrs["fail_reason"].(string)
			if f, ok := t.SystemAttrs["failed_trial"].(float64); ok {
				note = strings.TrimSpace(fmt.Sprintf("retry of #%d %s", int(f), note))
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Number, t.State, val, progress(t), secs, formatParams(t), firstLine(note))
		}
		return tw.Flush()
	})
}

// lastReportedStep is the step of a trial's last intermediate value, or
// "-" before its first.
func lastReportedStep(t storage.FrozenTrial) string {
	return cmp.Or(lastStep(t.Intermediate), "-")
}

// lastStep is the largest step of intermediate values, "" when none.
func lastStep(values map[int]float64) string {
	if len(values) == 0 {
		return ""
	}
	return strconv.Itoa(slices.Max(slices.Collect(maps.Keys(values))))
}

func firstLine(s string) string {
	s = sweep.Printable(s)
	if r := []rune(s); len(r) > 80 {
		s = string(r[:77]) + "..."
	}
	return s
}

func cmdShow(args []string) error {
	fs := newFlags("show", "show STUDY#N [--storage URL | --config FILE]")
	get := storageFlags(fs)
	return withStore(fs, args, 1, 1, get, func(ctx context.Context, s *storage.DB, pos []string) error {
		name, num, ok := strings.Cut(pos[0], "#")
		n, err := strconv.Atoi(num)
		if !ok || err != nil {
			return fmt.Errorf("%w: %q: want STUDY#NUMBER, e.g. read/gru-256/sst2#3", errUsage, pos[0])
		}
		st, t, err := findTrial(ctx, s, name, n)
		if err != nil {
			return err
		}
		printTrial(os.Stdout, st, t)
		return nil
	})
}

func printTrial(w io.Writer, st storage.Study, t storage.FrozenTrial) {
	fmt.Fprintf(w, "%s#%d  %s", st.Name, t.Number, t.State)
	if t.Value != nil {
		fmt.Fprintf(w, "  value %.6g", *t.Value)
	}
	fmt.Fprintln(w)
	ts := func(x time.Time) string {
		if x.IsZero() {
			return "-"
		}
		return x.Format("2006-01-02 15:04:05") + " UTC"
	}
	fmt.Fprintf(w, "started %s, finished %s\n", ts(t.Start), ts(t.Complete))
	if len(t.Params) > 0 {
		fmt.Fprintln(w, "\nparams:")
		for _, name := range slices.Sorted(maps.Keys(t.Params)) {
			dj, _ := json.Marshal(t.Distributions[name])
			fmt.Fprintf(w, "  %s = %v    %s\n", name, t.Distributions[name].ToExternal(t.Params[name]), dj)
		}
	}
	if len(t.Intermediate) > 0 {
		fmt.Fprintln(w, "\nintermediate values:")
		for _, step := range t.Steps() {
			fmt.Fprintf(w, "  %4d  %.6g\n", step, t.Intermediate[step])
		}
	}
	for _, group := range []struct {
		title string
		m     map[string]any
	}{{"user attrs", t.UserAttrs}, {"system attrs", t.SystemAttrs}} {
		if len(group.m) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", group.title)
		for _, k := range slices.Sorted(maps.Keys(group.m)) {
			v := group.m[k]
			if s, ok := v.(string); ok && strings.Contains(s, "\n") {
				fmt.Fprintf(w, "  %s:\n    %s\n", k, strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    "))
				continue
			}
			fmt.Fprintf(w, "  %s = %s\n", k, plainJSON(v))
		}
	}
}

func cmdRetry(args []string) error {
	fs := newFlags("retry", "retry [STUDY] [--storage URL | --config FILE]")
	get := storageFlags(fs)
	return withWritableStore(fs, args, 0, 1, get, func(ctx context.Context, s *storage.DB, pos []string) error {
		studies, err := s.Studies(ctx)
		if err != nil {
			return err
		}
		if len(pos) == 1 {
			st, err := findStudy(ctx, s, pos[0])
			if err != nil {
				return err
			}
			studies = []storage.Study{st}
		}
		total := 0
		for _, st := range studies {
			n, err := sweep.Retry(ctx, s, st)
			if err != nil {
				return err
			}
			if n > 0 {
				fmt.Printf("%s: %d failed trial(s) enqueued again\n", st.Name, n)
			}
			total += n
		}
		fmt.Printf("%d trial(s) enqueued; `sweep run` runs them first, within each study's budget\n", total)
		return nil
	})
}

func cmdExport(args []string) error {
	fs := newFlags("export", "export [--format csv|json] [--out FILE] [--storage URL | --config FILE]\n       sweep export STUDY#N --out DIR [--merge] [--storage URL | --config FILE]")
	format := fs.String("format", "csv", "csv or json")
	out := fs.String("out", "", "write here instead of stdout (with STUDY#N: the new folder for its model)")
	merge := fs.Bool("merge", false, "with STUDY#N: fold the method into a plain Hugging Face T5 folder (LoRA, IA³)")
	get := storageFlags(fs)
	return withStore(fs, args, 0, 1, get, func(ctx context.Context, s *storage.DB, pos []string) error {
		if len(pos) == 1 {
			formatSet := false
			fs.Visit(func(f *flag.Flag) { formatSet = formatSet || f.Name == "format" })
			if formatSet {
				return fmt.Errorf("%w: --format is for the trials' table; a trial's model (STUDY#N) is exported as its folder", errUsage)
			}
			return exportTrialModel(ctx, s, pos[0], *out, *merge)
		}
		if *merge {
			return fmt.Errorf("%w: --merge exports a trial's model: sweep export STUDY#N --out DIR --merge", errUsage)
		}
		if *format != "csv" && *format != "json" {
			return fmt.Errorf("%w: --format %q: want csv or json", errUsage, *format)
		}
		rows, err := exportRows(ctx, s)
		if err != nil {
			return err
		}
		return writeOutput(*out, func(w io.Writer) error {
			if *format == "json" {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				enc.SetEscapeHTML(false) // a file for people and tools, not a web page: < stays <
				return enc.Encode(rows)
			}
			return writeCSV(w, rows)
		})
	})
}

type exportRow struct {
	Study        string          `json:"study"`
	Method       string          `json:"method"`
	Arch         string          `json:"arch"`
	Dataset      string          `json:"dataset"`
	Number       int             `json:"number"`
	State        string          `json:"state"`
	Value        *float64        `json:"value"`
	Params       map[string]any  `json:"params"`
	Intermediate map[int]float64 `json:"intermediate_values"`
	Start        string          `json:"datetime_start"`
	Complete     string          `json:"datetime_complete"`
	UserAttrs    map[string]any  `json:"user_attrs"`
	ReportUnit   string          `json:"report_unit"` // of the intermediate values: epoch or step
}

func exportRows(ctx context.Context, s storage.Storage) ([]exportRow, error) {
	studies, err := s.Studies(ctx)
	if err != nil {
		return nil, err
	}
	rows := []exportRow{}
	for _, st := range studies {
		info := sweep.Identify(st)
		trials, err := s.Trials(ctx, st.ID)
		if err != nil {
			return nil, err
		}
		for _, t := range trials {
			r := exportRow{Study: st.Name, Method: info.Method, Arch: info.Arch, Dataset: info.Dataset, Number: t.Number,
				State: t.State.String(), Params: t.ExternalParams(), UserAttrs: t.UserAttrs, Intermediate: map[int]float64{}, ReportUnit: info.ReportUnit}
			if t.Value != nil && !math.IsInf(*t.Value, 0) {
				r.Value = t.Value
			}
			for k, v := range t.Intermediate {
				if !math.IsNaN(v) && !math.IsInf(v, 0) {
					r.Intermediate[k] = v
				}
			}
			if !t.Start.IsZero() {
				r.Start = t.Start.Format(time.RFC3339Nano)
			}
			if !t.Complete.IsZero() {
				r.Complete = t.Complete.Format(time.RFC3339Nano)
			}
			rows = append(rows, r)
		}
	}
	return rows, nil
}

func writeCSV(w io.Writer, rows []exportRow) error {
	params := map[string]bool{}
	for _, r := range rows {
		for k := range r.Params {
			params[k] = true
		}
	}
	pnames := slices.Sorted(maps.Keys(params))
	cw := csv.NewWriter(w)
	head := []string{"study", "method", "arch", "dataset", "number", "state", "value"}
	for _, p := range pnames {
		head = append(head, "params_"+p)
	}
	// epochs: validations, one an epoch, unless the study reports at steps;
	// then the trainer's epochs attribute (when it wrote one) and the last
	// step reported.
	head = append(head, "epochs", "steps", "datetime_start", "datetime_complete", "user_attrs")
	cw.Write(head)
	for _, r := range rows {
		val := ""
		if r.Value != nil {
			val = strconv.FormatFloat(*r.Value, 'g', -1, 64)
		}
		rec := []string{r.Study, r.Method, r.Arch, r.Dataset, strconv.Itoa(r.Number), r.State, val}
		for _, p := range pnames {
			v, ok := r.Params[p]
			if !ok {
				rec = append(rec, "")
				continue
			}
			rec = append(rec, fmt.Sprint(v))
		}
		epochs, steps := strconv.Itoa(len(r.Intermediate)), ""
		if r.ReportUnit == sweep.UnitStep {
			epochs, steps = "", lastStep(r.Intermediate)
			if e, ok := r.UserAttrs["epochs"].(float64); ok {
				epochs = strconv.Itoa(int(e))
			}
		}
		rec = append(rec, epochs, steps, r.Start, r.Complete, plainJSON(r.UserAttrs))
		cw.Write(rec)
	}
	cw.Flush()
	return cw.Error()
}

// plainJSON is v as one line of JSON without HTML escaping (json.Marshal
// writes < as \u003c, which a terminal or a CSV cell should not show).
func plainJSON(v any) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprintf("%v", v)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

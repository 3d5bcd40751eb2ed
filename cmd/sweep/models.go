package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/readsweep/readsweep/glue"
	"github.com/readsweep/readsweep/internal/atomicfile"
	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
	"github.com/readsweep/readsweep/trial"
)

// After the sweep: the models trials saved (training.save_model), their
// export and prediction. docs/models.md is the user's side of it.

// cmdPredict runs a saved or exported model on a file of examples.
func cmdPredict(args []string) error {
	fs := newFlags("predict", "predict --model DIR (--input FILE [--task TASK] | --split validation|test [--data DIR]) [--out FILE] [--glue-submission DIR] [--device auto|cpu|cuda]")
	modelDir := fs.String("model", "", "a trial's saved model (its folder's model/) or a folder `sweep export` wrote (required)")
	taskName := fs.String("task", "", "the GLUE task of the examples (default: the model's)")
	input := fs.String("input", "", "the examples: a GLUE TSV file (train, dev or test), a hub parquet file or JSON lines (required)")
	split := fs.String("split", "", "instead of --input: the trial's own validation or test split (the paper's split of its data)")
	dataDir := fs.String("data", "", "with --split: the GLUE data folder (default: the trial's data_dir)")
	out := fs.String("out", "", "write the predictions (index, prediction) here instead of to stdout")
	submission := fs.String("glue-submission", "", "also write the task's file for GLUE's leaderboard into this folder")
	device := fs.String("device", "auto", "auto (the GPU when one opens), cpu or cuda")
	batch := fs.Int("batch-size", 0, "examples decoded together (default: the trial's eval_batch_size)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if err := argCount(fs, pos, 0, 0, "no arguments besides its flags"); err != nil {
		return err
	}
	switch {
	case *modelDir == "":
		return fmt.Errorf("%w: predict needs --model DIR (a trial's model/ folder, or one `sweep export` wrote)", errUsage)
	case *input == "" && *split == "":
		return fmt.Errorf("%w: predict needs --input FILE (GLUE TSV, parquet or JSON lines) or --split validation|test", errUsage)
	case *input != "" && *split != "":
		return fmt.Errorf("%w: --input and --split both name the examples; give one", errUsage)
	case *dataDir != "" && *split == "":
		return fmt.Errorf("%w: --data goes with --split", errUsage)
	case *batch < 0:
		return fmt.Errorf("%w: --batch-size %d: want a positive number (or 0: the trial's)", errUsage, *batch)
	case *device != "auto" && *device != "cpu" && *device != "cuda":
		return fmt.Errorf("%w: --device %q: want auto, cpu or cuda", errUsage, *device)
	}
	info, err := trial.ReadModelInfo(*modelDir)
	if err != nil {
		return err
	}
	if *out != "" {
		if err := replaceable(*out); err != nil {
			return fmt.Errorf("%w: --out: %v", errUsage, err)
		}
	}
	if *submission != "" {
		if err := os.MkdirAll(*submission, 0o755); err != nil {
			return fmt.Errorf("--glue-submission: %w", err)
		}
	}
	if *taskName == "" {
		*taskName = info.Task
	}
	task, err := glue.Lookup(*taskName)
	if err != nil {
		return err
	}
	if task.Name != info.Task {
		return fmt.Errorf("%s was trained for %s, not %s: predict its own task (or leave out --task)", *modelDir, info.Task, task.Name)
	}
	var examples []glue.Example
	labelled := true
	if *split != "" {
		examples, err = info.PaperSplit(*dataDir, *split)
		*input = *split + " split"
	} else {
		examples, labelled, err = glue.ReadFile(*input, task)
	}
	if err != nil {
		return err
	}
	lm, err := trial.LoadModel(*modelDir, registry())
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opt := trial.PredictOptions{Device: *device, BatchSize: *batch}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		bar := progressbar.NewOptions(len(examples), progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true), progressbar.OptionFullWidth(), progressbar.OptionSetDescription("predicting"))
		opt.Progress = func(done int) { bar.Set(done) }
		defer func() { bar.Finish(); fmt.Fprintln(os.Stderr) }()
	}
	p, err := lm.Predict(ctx, task, examples, labelled, opt)
	if err != nil {
		return err
	}
	var rows bytes.Buffer
	rows.WriteString(predictionsHeader)
	for i, ex := range examples {
		fmt.Fprintf(&rows, "%d\t%s\n", ex.Idx, predictionText(task, p.Labels[i], p.Texts[i]))
	}
	if err := writeOutput(*out, func(w io.Writer) error { _, err := w.Write(rows.Bytes()); return err }); err != nil {
		return err
	}
	if *submission != "" {
		name, err := writeSubmission(*submission, *input, task, examples, p.Labels)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "sweep: GLUE leaderboard file %s\n", name)
	}
	fmt.Fprintf(os.Stderr, "sweep: %d %s examples predicted by %s (%s, %s) on %s\n", len(examples), task.Name, *modelDir, info.Method, info.Layout, p.Device)
	if labelled {
		fmt.Fprintf(os.Stderr, "sweep: %s: %s\n", *input, formatScores(task, p.Scores))
	} else {
		fmt.Fprintf(os.Stderr, "sweep: no metric: not every example of %s has a label\n", *input)
	}
	return nil
}

// predictionsHeader starts every file predict writes.
const predictionsHeader = "index\tprediction\n"

// replaceable says whether predict may write path: a new file, or one an
// earlier predict wrote. Anything else there (the input, a GLUE data
// file) is refused rather than overwritten.
func replaceable(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, len(predictionsHeader))
	if n, _ := io.ReadFull(f, head); n == 0 || string(head[:n]) == predictionsHeader {
		return nil
	}
	return fmt.Errorf("%s exists and is not a predictions file (it does not start with \"index<TAB>prediction\"); name another, or remove it", path)
}

// predictionText is one answer as the task spells labels: the class name,
// the score, or (text that parses to neither) the decoded text, quoted.
func predictionText(task *glue.Task, p glue.Prediction, text string) string {
	switch {
	case task.Regression() && p.Score >= 0:
		return strconv.FormatFloat(p.Score, 'g', -1, 64)
	case !task.Regression() && p.Label >= 0:
		return task.Labels[p.Label]
	}
	return strconv.Quote(text)
}

// formatScores is the task's score, then the metrics it is made of.
func formatScores(task *glue.Task, s glue.Scores) string {
	line := fmt.Sprintf("%s %.2f", task.Metric, s["score"])
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s)) {
		if k != "score" && k != task.Metric.String() {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, s[k]))
		}
	}
	if len(parts) > 0 {
		line += " (" + strings.Join(parts, ", ") + ")"
	}
	return line
}

// writeSubmission writes the leaderboard's file for task's predictions
// into dir: its name, an index and a prediction column, the labels as
// GLUE spells them.
func writeSubmission(dir, input string, task *glue.Task, ex []glue.Example, preds []glue.Prediction) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	mismatched := strings.Contains(strings.ToLower(filepath.Base(input)), "mismatched")
	path := filepath.Join(dir, task.SubmissionName(mismatched))
	if err := replaceable(path); err != nil {
		return "", fmt.Errorf("--glue-submission: %w", err)
	}
	var b bytes.Buffer
	b.WriteString(predictionsHeader)
	none := 0
	for i, e := range ex {
		if task.Regression() && preds[i].Score < 0 || !task.Regression() && preds[i].Label < 0 {
			none++
		}
		fmt.Fprintf(&b, "%d\t%s\n", e.Idx, task.SubmissionLabel(preds[i]))
	}
	if none > 0 {
		fmt.Fprintf(os.Stderr, "sweep: %d of %d answers were not a label; the leaderboard file gives them class 0 (score 0)\n", none, len(ex))
	}
	return path, atomicfile.Write(path, b.Bytes(), 0o644)
}

// exportTrialModel is `sweep export STUDY#N --out DIR [--merge]`.
func exportTrialModel(ctx context.Context, s storage.Storage, ref, out string, merge bool) error {
	name, num, ok := strings.Cut(ref, "#")
	n, err := strconv.Atoi(num)
	if !ok || err != nil {
		return fmt.Errorf("%w: %q: want STUDY#NUMBER, e.g. lora/r8/sst2#3", errUsage, ref)
	}
	if out == "" {
		return fmt.Errorf("%w: export %s needs --out DIR (a new folder)", errUsage, ref)
	}
	st, t, err := findTrial(ctx, s, name, n)
	if err != nil {
		return err
	}
	return exportModelOf(st, t, out, merge)
}

// savedModelOf is the folder trial t saved its model in.
func savedModelOf(st storage.Study, t storage.FrozenTrial) (string, error) {
	ref := fmt.Sprintf("%s#%d", st.Name, t.Number)
	if t.State != storage.Complete {
		return "", fmt.Errorf("%s is %s: only a COMPLETE trial has a model", ref, t.State)
	}
	if why, ok := t.UserAttrs["model_error"].(string); ok {
		return "", fmt.Errorf("%s saved no model: %s", ref, why)
	}
	dir, ok := t.UserAttrs["model_dir"].(string)
	if !ok || dir == "" {
		return "", fmt.Errorf("%s saved no model: it ran with save_model: none (search trials' default); "+
			"`sweep final` saves each final run's, or set training.save_model: best", ref)
	}
	return dir, nil
}

func exportModelOf(st storage.Study, t storage.FrozenTrial, out string, merge bool) error {
	dir, err := savedModelOf(st, t)
	if err != nil {
		return err
	}
	info, err := trial.ExportModel(dir, out, merge, registry())
	if err != nil {
		return err
	}
	how := info.Layout
	if info.Merged {
		how = "merged into a Hugging Face T5 folder"
	}
	fmt.Printf("%s#%d → %s (%s, %s state of epoch %d, validation %.2f; %s)\n", st.Name, t.Number, out, info.Method, info.Saved, info.Epoch, float64(info.Validation), how)
	return nil
}

// exportBest is `sweep best --method M --export DIR`: the final runs'
// models of the chosen architecture (DIR/DATASET/seed-S) where there are
// final runs, else the chosen architecture's best trial per dataset
// (DIR/DATASET). Every model is looked up before any is written.
func exportBest(ctx context.Context, s storage.Storage, sel sweep.Selection, out string, merge bool) error {
	chosen, ok := sel.Chosen()
	if !ok {
		return fmt.Errorf("%s has no COMPLETE trial to export", sel.Method)
	}
	studies, err := s.Studies(ctx)
	if err != nil {
		return err
	}
	byName := map[string]storage.Study{}
	for _, st := range studies {
		byName[st.Name] = st
	}
	type job struct {
		st  storage.Study
		t   storage.FrozenTrial
		out string
	}
	var jobs []job
	var problems []error
	for _, d := range sel.Datasets {
		if st, ok := byName[sweep.FinalPrefix+sel.Method+"/"+chosen.Arch+"/"+d]; ok {
			trials, err := s.Trials(ctx, st.ID)
			if err != nil {
				return err
			}
			found := 0
			for _, t := range trials {
				if t.State != storage.Complete {
					continue
				}
				found++
				seed := "seed-" + strconv.FormatInt(int64(math.Round(t.Params["seed"])), 10)
				if _, err := savedModelOf(st, t); err != nil {
					problems = append(problems, err)
				}
				jobs = append(jobs, job{st, t, filepath.Join(out, d, seed)})
			}
			if found > 0 {
				continue
			}
		}
		best, ok := chosen.Best[d]
		if !ok {
			problems = append(problems, fmt.Errorf("%s has no COMPLETE trial", chosen.Study[d]))
			continue
		}
		st := byName[chosen.Study[d]]
		if _, err := savedModelOf(st, best); err != nil {
			problems = append(problems, err)
		}
		jobs = append(jobs, job{st, best, filepath.Join(out, d)})
	}
	if err := errors.Join(problems...); err != nil {
		return fmt.Errorf("nothing exported:\n%w", err)
	}
	for _, j := range jobs {
		if err := exportModelOf(j.st, j.t, j.out, merge); err != nil {
			return err
		}
	}
	return nil
}

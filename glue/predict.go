package glue

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// unlabelled marks an example as having no gold label: Label −1 and, for
// STS-B, Score −1 (gold scores are in [0, 5]).
func unlabelled(ex Example) Example {
	ex.Label, ex.Score = -1, -1
	return ex
}

// Labelled reports whether ex has a gold label or score.
func (t *Task) Labelled(ex Example) bool {
	if t.Regression() {
		return ex.Score >= 0
	}
	return ex.Label >= 0
}

// tsvColumns names, per task, the header cells of the text columns and
// of the gold label in GLUE's TSV files with a header (train, dev and
// test; test files lack the label and start with an index column).
var tsvColumns = map[string]struct {
	text  []string
	label string
}{
	"cola": {[]string{"sentence"}, "label"}, "sst2": {[]string{"sentence"}, "label"},
	"mrpc": {[]string{"#1 String", "#2 String"}, "Quality"}, "qqp": {[]string{"question1", "question2"}, "is_duplicate"},
	"stsb": {[]string{"sentence1", "sentence2"}, "score"}, "mnli": {[]string{"sentence1", "sentence2"}, "gold_label"},
	"qnli": {[]string{"question", "sentence"}, "label"}, "rte": {[]string{"sentence1", "sentence2"}, "label"},
}

// ReadFile reads one file of task t's examples, for prediction: a GLUE
// TSV file (train, dev or test), a hub parquet file or JSON lines, by its
// extension. Labels may be absent (a test split); labelled reports whether
// every example has one. Idx is the file's index column where it has one.
func ReadFile(path string, t *Task) (ex []Example, labelled bool, err error) {
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".tsv":
		ex, err = readAnyTSV(path, t)
	case ".parquet":
		ex, err = readParquet(path, t, true)
	case ".jsonl", ".json":
		ex, err = readJSONL(path, t, true)
	default:
		return nil, false, fmt.Errorf("glue: %s: unknown file type %q (want .tsv, .parquet or .jsonl)", path, ext)
	}
	if err != nil {
		return nil, false, err
	}
	if len(ex) == 0 {
		return nil, false, fmt.Errorf("glue: %s holds no examples", path)
	}
	labelled = true
	for _, e := range ex {
		labelled = labelled && t.Labelled(e)
	}
	return ex, labelled, nil
}

// readAnyTSV reads a GLUE TSV file by its header's column names (test
// files have no label column and an index column first), or by column
// position (readTSV) when it has no header: CoLA's train and dev files.
func readAnyTSV(path string, t *Task) ([]Example, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("glue: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	first, err := readLine(r)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("glue: %s: %w", path, err)
	}
	header := splitTabs(nil, bytes.TrimPrefix(first, []byte("\ufeff")))
	col := map[string]int{}
	for i, h := range header {
		col[string(h)] = i
	}
	want := tsvColumns[t.Name]
	textCols := make([]int, len(want.text))
	for i, name := range want.text {
		c, ok := col[name]
		if !ok {
			if t.tsvHeader {
				return nil, fmt.Errorf("glue: %s:1: no column %q in the header: is this %s's file?", path, name, t.Dir)
			}
			ex, _, err := readTSV(path, t) // CoLA's train and dev: no header
			return ex, err
		}
		textCols[i] = c
	}
	labelCol, hasLabel := col[want.label]
	idxCol, hasIdx := col["index"]
	if !hasIdx {
		idxCol, hasIdx = col["id"]
	}
	var out []Example
	for lineNo := 2; ; lineNo++ {
		line, err := readLine(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("glue: %s: %w", path, err)
		}
		if len(line) == 0 {
			continue
		}
		fields := splitTabs(nil, line)
		ex := Example{Idx: len(out), Text: make([]string, len(textCols)), Label: -1}
		for i, c := range textCols {
			if c >= len(fields) {
				return nil, fmt.Errorf("glue: %s:%d: %d columns, the header names %d", path, lineNo, len(fields), len(header))
			}
			ex.Text[i] = string(fields[c])
		}
		if hasIdx && idxCol < len(fields) {
			if n, err := strconv.Atoi(string(fields[idxCol])); err == nil {
				ex.Idx = n
			}
		}
		if !hasLabel || labelCol >= len(fields) {
			out = append(out, unlabelled(ex))
			continue
		}
		if err := t.setLabel(&ex, string(fields[labelCol])); err != nil {
			return nil, fmt.Errorf("glue: %s:%d: %w", path, lineNo, err)
		}
		out = append(out, ex)
	}
	return out, nil
}

// SubmissionName is the file GLUE's leaderboard expects for a task's
// test predictions; mismatched picks MNLI's mismatched test set.
func (t *Task) SubmissionName(mismatched bool) string {
	switch t.Name {
	case "mnli":
		if mismatched {
			return "MNLI-mm.tsv"
		}
		return "MNLI-m.tsv"
	}
	return t.Dir + ".tsv"
}

// SubmissionLabel is a prediction as GLUE's leaderboard spells it: the
// class id for CoLA, SST-2, MRPC and QQP, the class name for the NLI
// tasks, the score (clipped to [0, 5]) for STS-B. A prediction that
// parsed to no label is given class 0 (score 0): the leaderboard takes
// every row.
func (t *Task) SubmissionLabel(p Prediction) string {
	if t.Regression() {
		return strconv.FormatFloat(min(max(p.Score, 0), 5), 'f', 3, 64)
	}
	label := max(p.Label, 0)
	switch t.Name {
	case "mnli", "qnli", "rte":
		return t.Labels[label]
	}
	return strconv.Itoa(label)
}

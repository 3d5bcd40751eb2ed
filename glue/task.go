// Package glue reads the GLUE benchmark tasks from disk, splits them the way
// the READ paper does, formats them as T5 text-to-text pairs, and scores
// predictions with each task's metric.
//
// # Layouts
//
// Load detects one of three layouts under a data directory: the official
// GLUE TSV folders (CoLA/train.tsv, MNLI/dev_matched.tsv, ...), the Hugging
// Face hub's parquet files (cola/train-00000-of-00001.parquet, or the older
// cola/glue-train.parquet), or JSON lines exported by `datasets`
// (cola/train.jsonl). TSV files are split on tabs without quote processing,
// as GLUE's own readers do.
//
// # Splits
//
// GLUE's test labels are private, so PaperSplits builds the READ paper's
// splits (Section 3): tasks with fewer than 10k training examples split the
// original validation set into two halves (validation, test); larger tasks
// keep the original validation set as the test set and take 1,000 training
// examples as validation; MNLI validates on mismatched and tests on matched.
//
// # Metrics
//
// Scores are reported ×100: CoLA Matthews correlation, STS-B the mean of
// Pearson and Spearman, MRPC and QQP the mean of F1 and accuracy, the rest
// accuracy.
package glue

import (
	"fmt"
	"strings"
)

// Metric names a task's reported score.
type Metric int

const (
	MetricAccuracy        Metric = iota // accuracy
	MetricMCC                           // Matthews correlation
	MetricF1Accuracy                    // mean of F1 and accuracy
	MetricPearsonSpearman               // mean of Pearson and Spearman
)

func (m Metric) String() string {
	return [...]string{"accuracy", "matthews_correlation", "f1_accuracy", "pearson_spearman"}[m]
}

// Task describes one GLUE task: its files, columns, labels and metric.
type Task struct {
	Name   string   // hub config name: cola, sst2, ...
	Dir    string   // folder of the official TSV distribution: CoLA, SST-2, ...
	Fields []string // text feature names in the hub's order
	// Labels are the class names by id (TFDS/HF order); nil for STS-B,
	// whose label is a score in [0, 5].
	Labels []string
	Metric Metric
	// TrainSize is the hub's training-set size, for reference in reports.
	TrainSize int

	// TSV layout: text columns, label column (-1: last), whether
	// train/dev files have a header, and the least number of columns of
	// a well-formed row.
	tsvText   []int
	tsvLabel  int
	tsvHeader bool
	tsvCols   int
	// t5Order is the order of fields in T5's input: keys sorted
	// alphabetically (MNLI puts hypothesis before premise).
	t5Order []int
}

// Regression reports whether the task predicts a score (STS-B).
func (t *Task) Regression() bool { return t.Labels == nil }

var tasks = []*Task{
	{Name: "cola", Dir: "CoLA", Fields: []string{"sentence"}, Labels: []string{"unacceptable", "acceptable"},
		Metric: MetricMCC, TrainSize: 8551, tsvText: []int{3}, tsvLabel: 1, tsvHeader: false, tsvCols: 4},
	{Name: "sst2", Dir: "SST-2", Fields: []string{"sentence"}, Labels: []string{"negative", "positive"},
		Metric: MetricAccuracy, TrainSize: 67349, tsvText: []int{0}, tsvLabel: 1, tsvHeader: true, tsvCols: 2},
	{Name: "mrpc", Dir: "MRPC", Fields: []string{"sentence1", "sentence2"}, Labels: []string{"not_equivalent", "equivalent"},
		Metric: MetricF1Accuracy, TrainSize: 3668, tsvText: []int{3, 4}, tsvLabel: 0, tsvHeader: true, tsvCols: 5},
	{Name: "qqp", Dir: "QQP", Fields: []string{"question1", "question2"}, Labels: []string{"not_duplicate", "duplicate"},
		Metric: MetricF1Accuracy, TrainSize: 363846, tsvText: []int{3, 4}, tsvLabel: 5, tsvHeader: true, tsvCols: 6},
	{Name: "stsb", Dir: "STS-B", Fields: []string{"sentence1", "sentence2"},
		Metric: MetricPearsonSpearman, TrainSize: 5749, tsvText: []int{7, 8}, tsvLabel: -1, tsvHeader: true, tsvCols: 10},
	{Name: "mnli", Dir: "MNLI", Fields: []string{"premise", "hypothesis"}, Labels: []string{"entailment", "neutral", "contradiction"},
		Metric: MetricAccuracy, TrainSize: 392702, tsvText: []int{8, 9}, tsvLabel: -1, tsvHeader: true, tsvCols: 12, t5Order: []int{1, 0}},
	{Name: "qnli", Dir: "QNLI", Fields: []string{"question", "sentence"}, Labels: []string{"entailment", "not_entailment"},
		Metric: MetricAccuracy, TrainSize: 104743, tsvText: []int{1, 2}, tsvLabel: -1, tsvHeader: true, tsvCols: 4},
	{Name: "rte", Dir: "RTE", Fields: []string{"sentence1", "sentence2"}, Labels: []string{"entailment", "not_entailment"},
		Metric: MetricAccuracy, TrainSize: 2490, tsvText: []int{1, 2}, tsvLabel: -1, tsvHeader: true, tsvCols: 4},
}

// Tasks returns every supported task: the paper's seven and RTE.
func Tasks() []*Task { return tasks }

// PaperTasks are the seven tasks of the READ paper's Table 1.
var PaperTasks = []string{"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli"}

// Lookup returns the task called name (hub config names, case-insensitive;
// the TSV folder names such as SST-2 are accepted too).
func Lookup(name string) (*Task, error) {
	for _, t := range tasks {
		if strings.EqualFold(t.Name, name) || strings.EqualFold(t.Dir, name) {
			return t, nil
		}
	}
	names := make([]string, len(tasks))
	for i, t := range tasks {
		names[i] = t.Name
	}
	return nil, fmt.Errorf("glue: unknown task %q (known: %s)", name, strings.Join(names, ", "))
}

// Example is one labelled (or, in test files, unlabelled) pair.
type Example struct {
	// Idx is the record's 0-based row in its TSV or jsonl file (header
	// excluded), or the hub parquet files' idx column, which for MRPC
	// counts rows across train and validation together.
	Idx   int
	Text  []string // in Task.Fields order
	Label int      // class id; -1 when unlabelled or for STS-B
	Score float32  // STS-B only
}

package glue

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
)

const fixture = "testdata/fixture"

func mustTask(t *testing.T, name string) *Task {
	t.Helper()
	task, err := Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return task
}

// TestFixtureLoads reads every task of the fixture and checks sizes, quirks
// and a few parsed rows.
func TestFixtureLoads(t *testing.T) {
	want := map[string][2]int{ // train, first validation split
		"cola": {240, 80}, "sst2": {240, 80}, "mrpc": {200, 60}, "qqp": {238, 80},
		"stsb": {200, 80}, "mnli": {300, 60}, "qnli": {240, 80}, "rte": {200, 60},
	}
	for _, task := range Tasks() {
		t.Run(task.Name, func(t *testing.T) {
			d, err := Load(fixture, task)
			if err != nil {
				t.Fatal(err)
			}
			if d.Layout != LayoutTSV {
				t.Errorf("layout %s", d.Layout)
			}
			val := task.SplitNames()[1]
			if got := [2]int{len(d.Splits["train"]), len(d.Splits[val])}; got != want[task.Name] {
				t.Errorf("sizes %v, want %v", got, want[task.Name])
			}
			for _, ex := range d.Splits["train"] {
				for i, s := range ex.Text {
					if s == "" {
						t.Fatalf("row %d: empty %s", ex.Idx, task.Fields[i])
					}
				}
				if !task.Regression() && (ex.Label < 0 || ex.Label >= len(task.Labels)) {
					t.Fatalf("row %d: label %d", ex.Idx, ex.Label)
				}
			}
		})
	}
	d, _ := Load(fixture, mustTask(t, "qqp"))
	if n := d.Skipped[filepath.Join(fixture, "QQP", "train.tsv")]; n != 2 {
		t.Errorf("QQP skipped %d malformed rows, want 2 (counted: %v)", n, d.Skipped)
	}
	if idx := d.Splits["train"][17].Idx; idx != 18 {
		t.Errorf("QQP row after the first malformed one has idx %d, want 18 (source row numbers)", idx)
	}
	cola, _ := Load(fixture, mustTask(t, "cola"))
	if ex := cola.Splits["train"][1]; ex.Label != 0 || ex.Text[0] != "Ben a found map in Paris ." {
		t.Errorf("CoLA row 1 = %+v (header-less file, label in column 2, sentence in 4)", ex)
	}
	mnli, _ := Load(fixture, mustTask(t, "mnli"))
	if len(mnli.Splits["validation_mismatched"]) != 60 || len(mnli.Splits["validation_matched"]) != 60 {
		t.Errorf("MNLI validation splits: %d matched, %d mismatched", len(mnli.Splits["validation_matched"]), len(mnli.Splits["validation_mismatched"]))
	}
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(path), 0o755)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTSVQuirksAndErrors(t *testing.T) {
	tests := []struct {
		name, task, train, want string
	}{
		{"unbalanced quotes stay in the text", "mrpc", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\t\" He said so .\tHe said it \" .\n", ""},
		{"CRLF line ends", "sst2", "sentence\tlabel\r\ngood film\t1\r\n", ""},
		{"unknown label", "rte", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n", "RTE/train.tsv:2: unknown label \"maybe\""},
		{"too few columns", "mrpc", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tonly one\n", "MRPC/train.tsv:2: 4 columns, want 5"},
		{"score out of range", "stsb", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n0\tg\tf\ty\to\ts\ts\ta\tb\t7.5\n", "STS-B/train.tsv:2: score \"7.5\""},
		{"another task's file", "qqp", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n", "QQP/train.tsv:1: header has \"year\" in column 4, want \"question1\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			task := mustTask(t, tc.task)
			writeFile(t, filepath.Join(dir, task.Dir, "train.tsv"), tc.train)
			writeFile(t, filepath.Join(dir, task.Dir, "dev.tsv"), tc.train)
			d, err := Load(dir, task)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tc.task == "mrpc" && d.Splits["train"][0].Text[0] != "\" He said so ." {
					t.Errorf("text %q", d.Splits["train"][0].Text[0])
				}
				if tc.task == "sst2" && d.Splits["train"][0].Text[0] != "good film" {
					t.Errorf("text %q", d.Splits["train"][0].Text[0])
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := Load(t.TempDir(), mustTask(t, "cola")); err == nil || !strings.Contains(err.Error(), "sweep fetch glue") {
		t.Errorf("empty dir: %v", err)
	}
}

type hubRow struct {
	Premise    string `parquet:"premise"`
	Hypothesis string `parquet:"hypothesis"`
	Label      int64  `parquet:"label"`
	Idx        int32  `parquet:"idx"`
}

type hubScoreRow struct {
	Sentence1 string  `parquet:"sentence1"`
	Sentence2 string  `parquet:"sentence2"`
	Label     float32 `parquet:"label"`
	Idx       int32   `parquet:"idx"`
}

// TestHubLayouts reads parquet (both hub file namings, sharded) and jsonl.
func TestHubLayouts(t *testing.T) {
	dir := t.TempDir()
	mnli := mustTask(t, "mnli")
	write := func(name string, rows []hubRow) {
		os.MkdirAll(filepath.Join(dir, "mnli"), 0o755)
		if err := parquet.WriteFile(filepath.Join(dir, "mnli", name), rows); err != nil {
			t.Fatal(err)
		}
	}
	write("train-00000-of-00002.parquet", []hubRow{{"p0", "h0", 0, 0}, {"p1", "h1", 2, 1}})
	write("train-00001-of-00002.parquet", []hubRow{{"p2", "h2", 1, 2}})
	write("validation_matched-00000-of-00001.parquet", []hubRow{{"pm", "hm", 1, 0}})
	write("validation_mismatched-00000-of-00001.parquet", []hubRow{{"px", "hx", 2, 0}, {"py", "hy", 0, 1}})
	d, err := Load(dir, mnli)
	if err != nil {
		t.Fatal(err)
	}
	if d.Layout != LayoutParquet || len(d.Splits["train"]) != 3 || d.Splits["train"][2].Text[0] != "p2" || d.Splits["train"][1].Label != 2 {
		t.Errorf("parquet: %+v", d.Splits)
	}
	if len(d.Splits["validation_mismatched"]) != 2 || len(d.Splits["validation_matched"]) != 1 {
		t.Errorf("validation splits mixed up: %+v", d.Files)
	}

	stsb := mustTask(t, "stsb")
	os.MkdirAll(filepath.Join(dir, "stsb"), 0o755)
	for _, name := range []string{"glue-train.parquet", "glue-validation.parquet"} {
		if err := parquet.WriteFile(filepath.Join(dir, "stsb", name), []hubScoreRow{{"a", "b", 4.75, 0}}); err != nil {
			t.Fatal(err)
		}
	}
	d, err = Load(dir, stsb)
	if err != nil || d.Splits["validation"][0].Score != 4.75 {
		t.Fatalf("old parquet naming: %+v, %v", d, err)
	}

	rte := mustTask(t, "rte")
	writeFile(t, filepath.Join(dir, "rte", "train.jsonl"), `{"sentence1": "a", "sentence2": "b", "label": 1, "idx": 0}`+"\n")
	writeFile(t, filepath.Join(dir, "rte", "validation.jsonl"), `{"sentence1": "c", "sentence2": "d", "label": 0, "idx": 0}`+"\n"+`{"sentence1": "e", "label": 0, "idx": 1}`+"\n")
	if _, err := Load(dir, rte); err == nil || !strings.Contains(err.Error(), "validation.jsonl:2: field \"sentence2\" missing") {
		t.Errorf("jsonl error: %v", err)
	}
}

// TestPaperSplitSizes applies the protocol to splits of the hub's sizes
// and checks the paper's Table 6 (with the text's rule for the large tasks,
// see shared/reference/glue-formats.md §3.2).
func TestPaperSplitSizes(t *testing.T) {
	hub := map[string][]int{ // train, validation (MNLI: matched, mismatched)
		"cola": {8551, 1043}, "sst2": {67349, 872}, "mrpc": {3668, 408}, "qqp": {363846, 40430},
		"stsb": {5749, 1500}, "mnli": {392702, 9815, 9832}, "qnli": {104743, 5463}, "rte": {2490, 277},
	}
	want := map[string][3]int{ // train, validation, test
		"cola": {8551, 521, 522}, "sst2": {66349, 1000, 872}, "mrpc": {3668, 204, 204}, "qqp": {362846, 1000, 40430},
		"stsb": {5749, 750, 750}, "mnli": {392702, 9832, 9815}, "qnli": {103743, 1000, 5463}, "rte": {2490, 138, 139},
	}
	make := func(n int) []Example {
		ex := make([]Example, n)
		for i := range ex {
			ex[i].Idx = i
		}
		return ex
	}
	for name, sizes := range hub {
		task := mustTask(t, name)
		d := &Data{Task: task, Splits: map[string][]Example{"train": make(sizes[0])}}
		if name == "mnli" {
			d.Splits["validation_matched"], d.Splits["validation_mismatched"] = make(sizes[1]), make(sizes[2])
		} else {
			d.Splits["validation"] = make(sizes[1])
		}
		s, err := PaperSplits(d, DefaultSplitSeed)
		if err != nil {
			t.Fatal(err)
		}
		if got := [3]int{len(s.Train), len(s.Validation), len(s.Test)}; got != want[name] {
			t.Errorf("%s: sizes %v, want %v", name, got, want[name])
		}
		seen := map[int]bool{}
		for _, part := range [][]Example{s.Train, s.Validation} {
			for _, ex := range part {
				if seen[ex.Idx] && name != "mnli" && !(len(sizes) == 2 && sizes[0] < SmallTrain) {
					t.Fatalf("%s: example %d in two splits", name, ex.Idx)
				}
				seen[ex.Idx] = true
			}
		}
		again, _ := PaperSplits(d, DefaultSplitSeed)
		other, _ := PaperSplits(d, 7)
		if again.Validation[0].Idx != s.Validation[0].Idx || again.Validation[len(s.Validation)-1].Idx != s.Validation[len(s.Validation)-1].Idx {
			t.Errorf("%s: same seed, different split", name)
		}
		if name != "mnli" && sameIdx(other.Validation, s.Validation) {
			t.Errorf("%s: seeds 42 and 7 give the same validation set", name)
		}
	}
}

func sameIdx(a, b []Example) bool {
	for i := range a {
		if a[i].Idx != b[i].Idx {
			return false
		}
	}
	return true
}

func TestT5Format(t *testing.T) {
	tests := []struct {
		task        string
		ex          Example
		input, want string
	}{
		{"cola", Example{Text: []string{"John ran ."}, Label: 1}, "cola sentence: John ran .", "acceptable"},
		{"qqp", Example{Text: []string{"Why do I easily get bored of my friends?", "Why do I get bored of my friends so quickly?"}, Label: 1},
			"qqp question1: Why do I easily get bored of my friends? question2: Why do I get bored of my friends so quickly?", "duplicate"},
		{"mnli", Example{Text: []string{"The cat sat.", "A cat sat."}, Label: 0}, "mnli hypothesis: A cat sat. premise: The cat sat.", "entailment"},
		{"qnli", Example{Text: []string{"Who?", "Ann did."}, Label: 1}, "qnli question: Who? sentence: Ann did.", "not_entailment"},
		{"stsb", Example{Text: []string{"a", "b"}, Score: 4.75}, "stsb sentence1: a sentence2: b", "4.8"},
		{"sst2", Example{Text: []string{"fine"}, Label: -1}, "sst2 sentence: fine", "<unk>"},
	}
	for _, tc := range tests {
		task := mustTask(t, tc.task)
		if got := task.Input(tc.ex); got != tc.input {
			t.Errorf("%s input %q, want %q", tc.task, got, tc.input)
		}
		if got := task.Target(tc.ex); got != tc.want {
			t.Errorf("%s target %q, want %q", tc.task, got, tc.want)
		}
	}
	// T5's STS-B rounding: float32, ×5, half to even, ÷5, one decimal.
	for score, want := range map[float32]string{4.75: "4.8", 2.615: "2.6", 2.5: "2.4", 3.5: "3.6", 4.5: "4.4", 0.5: "0.4", 0.3: "0.4", 0.1: "0.0", 0: "0.0", 5: "5.0", 1.7: "1.6", 0.9: "0.8"} {
		if got := FormatScore(score); got != want {
			t.Errorf("FormatScore(%v) = %q, want %q", score, got, want)
		}
	}
}

func TestParse(t *testing.T) {
	mnli, stsb := mustTask(t, "mnli"), mustTask(t, "stsb")
	for text, want := range map[string]int{"neutral": 1, " contradiction\n": 2, "Neutral": -1, "": -1, "entailment entailment": -1} {
		if got := mnli.Parse(text).Label; got != want {
			t.Errorf("mnli Parse(%q) = %d, want %d", text, got, want)
		}
	}
	for text, want := range map[string]float64{"3.8": 3.8, "5": 5, "nan": -1, "three": -1, "": -1} {
		if got := stsb.Parse(text).Score; got != want {
			t.Errorf("stsb Parse(%q) = %v, want %v", text, got, want)
		}
	}
}

// TestReachable: a prefix is unreachable only if no text beginning with it
// parses to a label. Random answers around the label words (spaces of
// several kinds on both sides, a label's cuts, doubled labels, stray
// letters) check the direction that matters: every prefix of a text Parse
// accepts is reachable, with a rest no longer than what the text adds, so
// evaluation never stops a row that would score.
func TestReachable(t *testing.T) {
	mnli, stsb := mustTask(t, "mnli"), mustTask(t, "stsb")
	for prefix, want := range map[string]bool{"": true, " \n": true, "neu": true, " neutral": true, "neutral \t": true,
		"contra": true, "neutral x": false, "neutralx": false, "neu ": false, "Neu": false, "entailment entailment": false, "x": false} {
		if got := mnli.Reachable(prefix, nil); got != want {
			t.Errorf("mnli Reachable(%q) = %v, want %v", prefix, got, want)
		}
	}
	short := func(rest string) bool { return len(rest) <= 2 }
	for prefix, want := range map[string]bool{"neu": false, "neutr": true, "neutral": true, " neutral ": true, "": false} {
		if got := mnli.Reachable(prefix, short); got != want {
			t.Errorf("mnli Reachable(%q) with at most 2 bytes to add = %v, want %v", prefix, got, want)
		}
	}
	if !stsb.Reachable("three", nil) {
		t.Error("an STS-B answer was ruled out; regression answers are never cut short")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{" ", "\u00a0", "\n", "x", "e", "⁇", "not_"}
	accepted := 0
	for _, task := range Tasks() {
		if task.Regression() {
			continue
		}
		for range 2000 {
			var b strings.Builder
			for range rng.IntN(3) {
				b.WriteString(pieces[rng.IntN(3)])
			}
			l := task.Labels[rng.IntN(len(task.Labels))]
			switch rng.IntN(4) {
			case 0:
				l = l[:rng.IntN(len(l)+1)]
			case 1:
				l += pieces[rng.IntN(len(pieces))] + l
			}
			b.WriteString(l)
			for range rng.IntN(3) {
				b.WriteString(pieces[rng.IntN(len(pieces))])
			}
			text := b.String()
			if task.Parse(text).Label < 0 {
				continue
			}
			accepted++
			for i := range text {
				if !task.Reachable(text[:i], nil) {
					t.Fatalf("%s: %q parses to a label, yet its prefix %q was ruled out", task.Name, text, text[:i])
				}
				// The rest a label needs is never more than the text adds.
				if !task.Reachable(text[:i], func(rest string) bool { return len(rest) <= len(text)-i }) {
					t.Fatalf("%s: %q parses to a label, yet its prefix %q needs more than the %d bytes that follow", task.Name, text, text[:i], len(text)-i)
				}
			}
		}
	}
	if accepted < 1000 {
		t.Fatalf("only %d random answers parse: the check is too weak", accepted)
	}
}

// TestMetricsMatchSklearn compares each metric with scikit-learn and scipy
// on the inputs of testdata/metrics_golden.json.
func TestMetricsMatchSklearn(t *testing.T) {
	raw, err := os.ReadFile("testdata/metrics_golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Cases []struct {
			Name                  string
			Gold, Pred            []int
			X, Y                  []float64
			Accuracy, MCC         float64
			F1, Pearson, Spearman *float64
		}
	}
	if err := json.Unmarshal(raw, &golden); err != nil {
		t.Fatal(err)
	}
	check := func(name, metric string, got, want float64) {
		if math.Abs(got-want) > 1e-12 {
			t.Errorf("%s: %s = %.17g, want %.17g", name, metric, got, want)
		}
	}
	for _, c := range golden.Cases {
		if c.Gold != nil {
			check(c.Name, "accuracy", Accuracy(c.Pred, c.Gold), c.Accuracy)
			check(c.Name, "mcc", MatthewsCorr(c.Pred, c.Gold), c.MCC)
			if c.F1 != nil {
				check(c.Name, "f1", F1(c.Pred, c.Gold), *c.F1)
			}
			continue
		}
		check(c.Name, "pearson", Pearson(c.X, c.Y), *c.Pearson)
		check(c.Name, "spearman", Spearman(c.X, c.Y), *c.Spearman)
	}
	if len(golden.Cases) < 10 {
		t.Fatalf("only %d golden cases", len(golden.Cases))
	}
}

func TestEvaluate(t *testing.T) {
	mrpc := mustTask(t, "mrpc")
	gold := []Example{{Label: 1}, {Label: 0}, {Label: 1}, {Label: 1}}
	preds := []Prediction{mrpc.Parse("equivalent"), mrpc.Parse("equivalent"), mrpc.Parse("banana"), mrpc.Parse("equivalent")}
	s := mrpc.Evaluate(preds, gold)
	// accuracy 2/4; F1 with the invalid answer counted wrong: tp 2, fp 1, fn 1 → 4/6.
	if math.Abs(s["accuracy"]-50) > 1e-9 || math.Abs(s["f1"]-400.0/6) > 1e-9 || math.Abs(s["score"]-(50+400.0/6)/2) > 1e-9 {
		t.Errorf("mrpc scores %v", s)
	}
	cola := mustTask(t, "cola")
	if s := cola.Evaluate([]Prediction{{Label: 1}, {Label: 1}}, []Example{{Label: 0}, {Label: 1}}); s["score"] != 0 {
		t.Errorf("constant CoLA prediction scored %v, want MCC 0", s)
	}
	stsb := mustTask(t, "stsb")
	s = stsb.Evaluate([]Prediction{{Score: 1}, {Score: 2}, {Score: 3}}, []Example{{Score: 1.1}, {Score: 2.2}, {Score: 2.9}})
	if math.Abs(s["spearman"]-100) > 1e-9 || s["pearson"] < 99 {
		t.Errorf("stsb scores %v", s)
	}
}

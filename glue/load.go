package glue

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// Layouts Load understands.
const (
	LayoutTSV     = "tsv"     // official GLUE distribution
	LayoutParquet = "parquet" // Hugging Face hub files
	LayoutJSONL   = "jsonl"   // datasets' Dataset.to_json
)

// Data is one task's labelled splits as found on disk.
type Data struct {
	Task   *Task
	Layout string
	// Splits holds "train" and "validation", or for MNLI "train",
	// "validation_matched" and "validation_mismatched".
	Splits map[string][]Example
	// Files lists the files read per split.
	Files map[string][]string
	// Skipped counts rows dropped as a documented quirk (QQP's malformed
	// rows), per file.
	Skipped map[string]int
}

// SplitNames returns the labelled splits of a task in hub naming.
func (t *Task) SplitNames() []string {
	if t.Name == "mnli" {
		return []string{"train", "validation_matched", "validation_mismatched"}
	}
	return []string{"train", "validation"}
}

// tsvFile maps a hub split name to the official TSV file name.
func tsvFile(split string) string {
	switch split {
	case "train":
		return "train.tsv"
	case "validation":
		return "dev.tsv"
	}
	return "dev_" + strings.TrimPrefix(split, "validation_") + ".tsv"
}

// DetectLayout reports which layout holds task under dir.
func DetectLayout(dir string, t *Task) (string, error) {
	if fileExists(filepath.Join(dir, t.Dir, "train.tsv")) {
		return LayoutTSV, nil
	}
	sub := filepath.Join(dir, t.Name)
	for _, layout := range []struct{ name, glob string }{{LayoutParquet, "*.parquet"}, {LayoutJSONL, "*.jsonl"}, {LayoutJSONL, "*.json"}} {
		if m, _ := filepath.Glob(filepath.Join(sub, layout.glob)); len(m) > 0 {
			return layout.name, nil
		}
	}
	return "", fmt.Errorf("glue: no %s data under %s: looked for %s (GLUE TSV), %s (hub parquet) and %s (jsonl); `sweep fetch glue --dir %s` downloads it",
		t.Name, dir, filepath.Join(t.Dir, "train.tsv"), filepath.Join(t.Name, "*.parquet"), filepath.Join(t.Name, "*.jsonl"), dir)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// Load reads the labelled splits of task t from dir, in whichever layout
// it finds there.
func Load(dir string, t *Task) (*Data, error) {
	layout, splits, err := Files(dir, t)
	if err != nil {
		return nil, err
	}
	d := &Data{Task: t, Layout: layout, Splits: map[string][]Example{}, Files: map[string][]string{}, Skipped: map[string]int{}}
	for _, split := range t.SplitNames() {
		files := splits[split]
		var all []Example
		for _, f := range files {
			var ex []Example
			var skipped int
			switch layout {
			case LayoutTSV:
				ex, skipped, err = readTSV(f, t)
			case LayoutParquet:
				ex, err = readParquet(f, t, false)
			case LayoutJSONL:
				ex, err = readJSONL(f, t, false)
			}
			if err != nil {
				return nil, err
			}
			if skipped > 0 {
				d.Skipped[f] = skipped
			}
			all = append(all, ex...)
		}
		d.Splits[split] = all
		d.Files[split] = files
	}
	return d, nil
}

// Files lists the files of every split Load reads for task t under dir,
// and their layout; a split without its file is an error naming it, so
// that a sweep's pre-flight finds it before any trial starts.
func Files(dir string, t *Task) (layout string, splits map[string][]string, err error) {
	if layout, err = DetectLayout(dir, t); err != nil {
		return "", nil, err
	}
	splits = map[string][]string{}
	for _, split := range t.SplitNames() {
		var files []string
		switch layout {
		case LayoutTSV:
			f := filepath.Join(dir, t.Dir, tsvFile(split))
			if !fileExists(f) {
				return "", nil, fmt.Errorf("glue: %s has %s but no %s (the %s split)", filepath.Join(dir, t.Dir), "train.tsv", tsvFile(split), split)
			}
			files = []string{f}
		default:
			if files, err = splitFiles(filepath.Join(dir, t.Name), split, layout); err != nil {
				return "", nil, err
			}
		}
		splits[split] = files
	}
	return layout, splits, nil
}

// splitFiles finds a split's files in a hub config folder by split name,
// whatever the revision's naming (train-00000-of-00002.parquet,
// glue-train.parquet, train.jsonl).
func splitFiles(dir, split, layout string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("glue: %w", err)
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		ext := filepath.Ext(name)
		if e.IsDir() || (layout == LayoutParquet) != (ext == ".parquet") || (layout == LayoutJSONL && ext != ".jsonl" && ext != ".json") {
			continue
		}
		if hubSplit(name) == split {
			out = append(out, filepath.Join(dir, name))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("glue: no %s file for split %q in %s", layout, split, dir)
	}
	sort.Strings(out)
	return out, nil
}

// tsvHeaders names, per task, the header cell of the first text column: a
// file of another task (a known mix-up of QQP and STS-B downloads) is
// caught by it.
var tsvHeaders = map[string]string{
	"sst2": "sentence", "mrpc": "#1 String", "qqp": "question1", "stsb": "sentence1",
	"mnli": "sentence1", "qnli": "question", "rte": "sentence1",
}

// readTSV reads one GLUE TSV file: tab-separated, no quoting, optional BOM.
func readTSV(path string, t *Task) ([]Example, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("glue: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var out []Example
	fields := make([][]byte, 0, 16)
	lineNo, row, skipped := 0, 0, 0
	for {
		line, err := readLine(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("glue: %s: %w", path, err)
		}
		lineNo++
		if lineNo == 1 {
			line = bytes.TrimPrefix(line, []byte("\ufeff"))
		}
		fields = splitTabs(fields[:0], line)
		if lineNo == 1 && t.tsvHeader {
			want := tsvHeaders[t.Name]
			col := t.tsvText[0]
			if col >= len(fields) || string(fields[col]) != want {
				got := ""
				if col < len(fields) {
					got = string(fields[col])
				}
				return nil, 0, fmt.Errorf("glue: %s:1: header has %q in column %d, want %q: is this %s's file? (a widely copied download script swaps QQP and STS-B)",
					path, got, col+1, want, t.Dir)
			}
			continue
		}
		if len(line) == 0 {
			continue
		}
		if len(fields) < t.tsvCols || hasEmptyText(fields, t) {
			if t.Name == "qqp" { // documented quirk: malformed rows are dropped, as TFDS and HF do
				skipped++
				row++
				continue
			}
			return nil, 0, fmt.Errorf("glue: %s:%d: %d columns, want %d", path, lineNo, len(fields), t.tsvCols)
		}
		ex := Example{Idx: row, Text: make([]string, len(t.tsvText)), Label: -1}
		for i, c := range t.tsvText {
			ex.Text[i] = string(fields[c])
		}
		lc := t.tsvLabel
		if lc < 0 {
			lc = len(fields) - 1
		}
		if err := t.setLabel(&ex, string(fields[lc])); err != nil {
			return nil, 0, fmt.Errorf("glue: %s:%d: %w", path, lineNo, err)
		}
		out = append(out, ex)
		row++
	}
	return out, skipped, nil
}

func hasEmptyText(fields [][]byte, t *Task) bool {
	if t.Name != "qqp" {
		return false
	}
	for _, c := range t.tsvText {
		if c < len(fields) && len(fields[c]) == 0 {
			return true
		}
	}
	return len(fields) > t.tsvLabel && len(fields[t.tsvLabel]) == 0
}

// readLine returns the next line without its end-of-line bytes; the slice
// is valid until the next call.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		buf := append([]byte(nil), line...)
		for err == bufio.ErrBufferFull {
			line, err = r.ReadSlice('\n')
			buf = append(buf, line...)
		}
		line = buf
	}
	if err == io.EOF && len(line) > 0 {
		err = nil
	}
	if err != nil {
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r")), nil
}

func splitTabs(dst [][]byte, line []byte) [][]byte {
	for {
		i := bytes.IndexByte(line, '\t')
		if i < 0 {
			return append(dst, line)
		}
		dst = append(dst, line[:i])
		line = line[i+1:]
	}
}

// setLabel parses a gold label as TFDS does: a class name becomes its
// index, anything else must be the index itself; STS-B scores are floats.
func (t *Task) setLabel(ex *Example, s string) error {
	if t.Regression() {
		f, err := strconv.ParseFloat(s, 32)
		if err != nil || f < 0 || f > 5 {
			return fmt.Errorf("score %q is not a number in [0, 5]", s)
		}
		ex.Score = float32(f)
		return nil
	}
	for i, l := range t.Labels {
		if s == l {
			ex.Label = i
			return nil
		}
	}
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 || i >= len(t.Labels) {
		return fmt.Errorf("unknown label %q (want %s or 0..%d)", s, strings.Join(t.Labels, ", "), len(t.Labels)-1)
	}
	ex.Label = i
	return nil
}

// labelValue stores a hub label (int class id, or float score) in ex.
func (t *Task) labelValue(ex *Example, v float64) error {
	if t.Regression() {
		if v < 0 || v > 5 {
			return fmt.Errorf("score %v outside [0, 5]", v)
		}
		ex.Score = float32(v)
		return nil
	}
	if v != math.Trunc(v) || v < 0 || int(v) >= len(t.Labels) {
		return fmt.Errorf("label %v is not a class id 0..%d", v, len(t.Labels)-1)
	}
	ex.Label = int(v)
	return nil
}

// readParquet reads a hub parquet file by column name.
func readParquet(path string, t *Task, optional bool) ([]Example, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("glue: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("glue: %w", err)
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("glue: %s: %w", path, err)
	}
	col := map[string]int{}
	for i, p := range pf.Schema().Columns() {
		col[strings.Join(p, ".")] = i
	}
	textCols := make([]int, len(t.Fields))
	for i, name := range t.Fields {
		c, ok := col[name]
		if !ok {
			return nil, fmt.Errorf("glue: %s: no column %q (have %v); is this %s's file?", path, name, pf.Schema().Columns(), t.Name)
		}
		textCols[i] = c
	}
	labelCol, ok := col["label"]
	if !ok && !optional {
		return nil, fmt.Errorf("glue: %s: no column \"label\"", path)
	} else if !ok {
		labelCol = -1
	}
	idxCol, hasIdx := col["idx"]
	var out []Example
	buf := make([]parquet.Row, 512)
	for _, rg := range pf.RowGroups() {
		rows := rg.Rows()
		for {
			n, err := rows.ReadRows(buf)
			for _, row := range buf[:n] {
				ex := Example{Idx: len(out), Text: make([]string, len(t.Fields)), Label: -1}
				var label float64
				labelSeen := false
				for _, v := range row {
					c := v.Column()
					switch {
					case c == labelCol && !v.IsNull():
						label, labelSeen = numeric(v), true
					case hasIdx && c == idxCol && !v.IsNull():
						ex.Idx = int(numeric(v))
					default:
						for i, tc := range textCols {
							if c == tc {
								ex.Text[i] = string(v.ByteArray())
							}
						}
					}
				}
				if optional && (!labelSeen || label == -1) { // the hub's test splits: label -1
					out = append(out, unlabelled(ex))
					continue
				}
				if !labelSeen {
					return nil, fmt.Errorf("glue: %s: row %d has no label", path, len(out))
				}
				if err := t.labelValue(&ex, label); err != nil {
					return nil, fmt.Errorf("glue: %s: row %d: %w", path, len(out), err)
				}
				out = append(out, ex)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("glue: %s: %w", path, err)
			}
		}
		rows.Close()
	}
	return out, nil
}

func numeric(v parquet.Value) float64 {
	switch v.Kind() {
	case parquet.Int32:
		return float64(v.Int32())
	case parquet.Int64:
		return float64(v.Int64())
	case parquet.Float:
		return float64(v.Float())
	case parquet.Double:
		return v.Double()
	case parquet.Boolean:
		if v.Boolean() {
			return 1
		}
	}
	return 0
}

// readJSONL reads datasets' JSON lines export.
func readJSONL(path string, t *Task, optional bool) ([]Example, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("glue: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var out []Example
	for lineNo := 1; ; lineNo++ {
		line, err := readLine(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("glue: %s: %w", path, err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			return nil, fmt.Errorf("glue: %s:%d: %w", path, lineNo, err)
		}
		ex := Example{Idx: len(out), Text: make([]string, len(t.Fields)), Label: -1}
		for i, name := range t.Fields {
			s, ok := rec[name].(string)
			if !ok {
				return nil, fmt.Errorf("glue: %s:%d: field %q missing or not a string", path, lineNo, name)
			}
			ex.Text[i] = s
		}
		if idx, ok := rec["idx"].(float64); ok {
			ex.Idx = int(idx)
		}
		label, ok := rec["label"].(float64)
		if optional && (!ok || label == -1) {
			out = append(out, unlabelled(ex))
			continue
		}
		if !ok {
			return nil, fmt.Errorf("glue: %s:%d: field \"label\" missing or not a number", path, lineNo)
		}
		if err := t.labelValue(&ex, label); err != nil {
			return nil, fmt.Errorf("glue: %s:%d: %w", path, lineNo, err)
		}
		out = append(out, ex)
	}
	return out, nil
}

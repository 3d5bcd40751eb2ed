package glue

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// bigTSV writes a GLUE-sized training file of n rows for task (QQP: 6
// short columns; MNLI: 12 columns with parse trees, the bulk of its 300 MB)
// once per machine under the temp dir, and returns the data directory.
func bigTSV(b *testing.B, task *Task, n int) string {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("readsweep-glue-bench-%s-%d", task.Name, n))
	path := filepath.Join(dir, task.Dir, "train.tsv")
	if _, err := os.Stat(path); err == nil {
		return dir
	}
	os.MkdirAll(filepath.Dir(path), 0o755)
	f, err := os.Create(path + ".tmp")
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	words := strings.Fields("the a of to and in is was for on that with as by at from his her an were are which this be or has had not but")
	sent := func(i, k int) string {
		var s strings.Builder
		for j := range 12 + (i*7+k)%20 {
			s.WriteString(words[(i*31+j*17+k)%len(words)])
			s.WriteByte(' ')
		}
		return s.String() + "."
	}
	switch task.Name {
	case "qqp":
		fmt.Fprintln(w, "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate")
		for i := range n {
			fmt.Fprintf(w, "%d\t%d\t%d\t%s?\t%s?\t%d\n", i, 2*i, 2*i+1, sent(i, 1), sent(i, 2), i%3%2)
		}
	case "mnli":
		fmt.Fprintln(w, "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
		labels := task.Labels
		for i := range n {
			p, h := sent(i, 1), sent(i, 2)
			bp := func(s string) string { return "( ( " + strings.ReplaceAll(s, " ", " ) ( ") + " ) )" }
			pp := func(s string) string { return "(ROOT (S (NP " + strings.ReplaceAll(s, " ", ") (NN ") + ")))" }
			l := labels[i%3]
			fmt.Fprintf(w, "%d\t%d\t%de\tfiction\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", i, i, i, bp(p), bp(h), pp(p), pp(h), p, h, l, l)
		}
	}
	w.Flush()
	f.Close()
	// The loader also wants a dev file.
	dev := "dev.tsv"
	if task.Name == "mnli" {
		dev = "dev_matched.tsv"
		copyHead(b, path+".tmp", filepath.Join(dir, task.Dir, "dev_mismatched.tsv"), 1000)
	}
	copyHead(b, path+".tmp", filepath.Join(dir, task.Dir, dev), 1000)
	os.Rename(path+".tmp", path)
	return dir
}

func copyHead(b *testing.B, src, dst string, lines int) {
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, _ := os.Create(dst)
	defer out.Close()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for i := 0; i <= lines && sc.Scan(); i++ {
		fmt.Fprintln(out, sc.Text())
	}
}

// benchmarkLoad loads a 400k-row task and reports the file size, the heap
// the loaded data keeps, and the bytes allocated while loading.
func benchmarkLoad(b *testing.B, name string) {
	task, _ := Lookup(name)
	const rows = 400_000
	dir := bigTSV(b, task, rows)
	st, _ := os.Stat(filepath.Join(dir, task.Dir, "train.tsv"))
	var d *Data
	var before, after runtime.MemStats
	for b.Loop() {
		d = nil
		runtime.GC()
		runtime.ReadMemStats(&before)
		var err error
		d, err = Load(dir, task)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
	}
	if len(d.Splits["train"]) != rows {
		b.Fatalf("loaded %d rows, want %d", len(d.Splits["train"]), rows)
	}
	b.ReportMetric(float64(st.Size())/1e6, "MB-file")
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/1e6, "MB-kept")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/1e6, "MB-allocated")
}

func BenchmarkLoadQQP(b *testing.B)  { benchmarkLoad(b, "qqp") }
func BenchmarkLoadMNLI(b *testing.B) { benchmarkLoad(b, "mnli") }

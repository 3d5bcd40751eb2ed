package glue

import (
	"bytes"
	"context"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/readsweep/readsweep/hub"
	"github.com/readsweep/readsweep/hub/hubtest"
)

type colaRow struct {
	Sentence string `parquet:"sentence"`
	Label    int64  `parquet:"label"`
	Idx      int32  `parquet:"idx"`
}

func parquetBytes(t *testing.T, rows []colaRow) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := parquet.Write(&b, rows); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestFetch downloads CoLA from a fake hub and loads what it wrote.
func TestFetch(t *testing.T) {
	train := []colaRow{{"A sentence .", 1, 0}, {"Sentence a .", 0, 1}, {"Another one .", 1, 2}}
	srv := hubtest.NewServer(t, map[string][]byte{
		"datasets/nyu-mll/glue/cola/train-00000-of-00001.parquet":      parquetBytes(t, train),
		"datasets/nyu-mll/glue/cola/validation-00000-of-00001.parquet": parquetBytes(t, train[:2]),
		"datasets/nyu-mll/glue/cola/test-00000-of-00001.parquet":       parquetBytes(t, []colaRow{{"Unlabelled .", -1, 0}}),
		"datasets/nyu-mll/glue/sst2/train-00000-of-00001.parquet":      []byte("not requested"),
	})
	dir := t.TempDir()
	cola := mustTask(t, "cola")
	if _, err := Fetch(context.Background(), hub.FromEnv(), dir, "main", []*Task{cola}); err != nil {
		t.Fatal(err)
	}
	d, err := Load(dir, cola)
	if err != nil {
		t.Fatal(err)
	}
	if d.Layout != LayoutParquet || len(d.Splits["train"]) != 3 || len(d.Splits["validation"]) != 2 || d.Splits["train"][1].Text[0] != "Sentence a ." {
		t.Errorf("loaded %+v", d.Splits)
	}
	requests := len(srv.Auth())
	if _, err := Fetch(context.Background(), hub.FromEnv(), dir, "main", []*Task{cola}); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Auth()) - requests; n != 2 {
		t.Errorf("a second fetch made %d requests, want only the revision's commit and the listing", n)
	}
	if _, err := Fetch(context.Background(), hub.FromEnv(), dir, "main", []*Task{mustTask(t, "rte")}); err == nil {
		t.Error("fetching a task the hub lacks succeeded")
	}
}

// TestFetchConverterLayout: the parquet converter's revision
// (refs/convert/parquet) keeps each split in a folder of its own
// (cola/train/0000.parquet); its files are fetched and load.
func TestFetchConverterLayout(t *testing.T) {
	train := []colaRow{{"A sentence .", 1, 0}, {"Sentence a .", 0, 1}, {"Another one .", 1, 2}}
	srv := hubtest.NewServer(t, map[string][]byte{"datasets/nyu-mll/glue/cola/train-00000-of-00001.parquet": []byte("main's")})
	commit := srv.Branch("refs/convert/parquet", map[string][]byte{
		"datasets/nyu-mll/glue/cola/train/0000.parquet":      parquetBytes(t, train),
		"datasets/nyu-mll/glue/cola/validation/0000.parquet": parquetBytes(t, train[:2]),
		"datasets/nyu-mll/glue/cola/test/0000.parquet":       parquetBytes(t, train[:1]),
	})
	dir := t.TempDir()
	cola := mustTask(t, "cola")
	got, err := Fetch(context.Background(), hub.FromEnv(), dir, "refs/convert/parquet", []*Task{cola})
	if err != nil || got != commit {
		t.Fatalf("Fetch = %s, %v; want commit %s", got, err, commit)
	}
	d, err := Load(dir, cola)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Splits["train"]) != 3 || len(d.Splits["validation"]) != 2 {
		t.Errorf("loaded %d train, %d validation", len(d.Splits["train"]), len(d.Splits["validation"]))
	}
}

// TestFetchReplacesTheSnapshot: CoLA fetched at main, then at the
// converter's revision into the same folder, loads the second alone, not
// both (which doubled the training set).
func TestFetchReplacesTheSnapshot(t *testing.T) {
	train := []colaRow{{"A sentence .", 1, 0}, {"Sentence a .", 0, 1}, {"Another one .", 1, 2}}
	srv := hubtest.NewServer(t, map[string][]byte{
		"datasets/nyu-mll/glue/cola/train-00000-of-00001.parquet":      parquetBytes(t, train),
		"datasets/nyu-mll/glue/cola/validation-00000-of-00001.parquet": parquetBytes(t, train[:2]),
	})
	srv.Branch("refs/convert/parquet", map[string][]byte{
		"datasets/nyu-mll/glue/cola/train/0000.parquet":      parquetBytes(t, train),
		"datasets/nyu-mll/glue/cola/validation/0000.parquet": parquetBytes(t, train[:2]),
	})
	dir := t.TempDir()
	cola := mustTask(t, "cola")
	for _, rev := range []string{"main", "refs/convert/parquet"} {
		if _, err := Fetch(context.Background(), hub.FromEnv(), dir, rev, []*Task{cola}); err != nil {
			t.Fatal(err)
		}
	}
	d, err := Load(dir, cola)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Splits["train"]) != 3 || len(d.Splits["validation"]) != 2 {
		t.Errorf("loaded %d train, %d validation: both snapshots' files were read", len(d.Splits["train"]), len(d.Splits["validation"]))
	}
}

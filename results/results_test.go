package results

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/sweep/storage"
)

// fixtureDB stores final runs of two methods on two tasks, three seeds
// each for READ, one for full fine-tuning, plus a sweep study.
func fixtureDB(t *testing.T) *storage.DB {
	t.Helper()
	s, err := storage.OpenSQLite(filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	add := func(study string, attrs map[string]any, runs ...map[string]any) {
		st, err := s.CreateStudy(ctx, study, storage.Maximize, attrs)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range runs {
			tr, _ := s.CreateTrial(ctx, st.ID, storage.TrialOptions{State: storage.Running})
			complete := storage.Complete
			v := a["validation"].(float64)
			space := map[string]storage.Distribution{"lr": storage.Float(1e-6, 1e-2, true)}
			if err := s.UpdateTrial(ctx, tr.ID, storage.TrialUpdate{State: &complete, Value: &v, UserAttrs: a,
				Params: map[string]float64{"lr": 1e-4}, Distributions: space}); err != nil {
				t.Fatal(err)
			}
		}
	}
	run := func(test, energy float64) map[string]any {
		return map[string]any{"validation": test + 1, "test": test, "energy_joules": energy, "seconds": 100.0,
			"peak_rss_bytes": 2e9, "latency_ms_batch1": 50.0, "trainable_percent": 0.8, "trainable_params": 1972224.0,
			"energy_source": "estimate"}
	}
	final := func(m, a, d string) map[string]any {
		return map[string]any{"method": m, "arch": a, "dataset": d, "final": true}
	}
	add("final/read/gru-256/sst2", final("read", "gru-256", "sst2"), run(90, 3.6e6), run(92, 3.6e6), run(94, 3.6e6))
	add("final/read/gru-256/cola", final("read", "gru-256", "cola"), run(50, 7.2e6), run(52, 7.2e6), run(54, 7.2e6))
	fullRun := run(93, 36e6)
	fullRun["trainable_percent"] = 100.0
	add("final/full/default/sst2", final("full", "default", "sst2"), fullRun)
	add("read/gru-256/sst2", map[string]any{"method": "read", "arch": "gru-256", "dataset": "sst2"}, run(99, 1))
	return s
}

func TestCollectAndTable1(t *testing.T) {
	s := fixtureDB(t)
	rows, datasets, err := Collect(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Method != "full" || rows[1].Method != "read" || strings.Join(datasets, ",") != "cola,sst2" {
		t.Fatalf("rows %+v, datasets %v", rows, datasets)
	}
	read := rows[1]
	if sc := read.Scores["sst2"]; sc.Mean != 92 || math.Abs(sc.Std-2) > 1e-12 || sc.N != 3 {
		t.Errorf("READ sst2 %+v, want 92 ± 2 over 3 seeds (the sweep study's 99 must not count)", sc)
	}
	// Energy: mean per task summed (1 + 2 kWh); power = 3 kWh over 200 s.
	if math.Abs(read.EnergyKWh-3) > 1e-9 || math.Abs(read.PowerKW-3*3.6e6/200/1000) > 1e-9 || read.Avg != 72 {
		t.Errorf("READ energy %v kWh, power %v kW, avg %v", read.EnergyKWh, read.PowerKW, read.Avg)
	}
	tab := Table1(rows, datasets, true)
	var md bytes.Buffer
	if err := Render(&md, tab, "md"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| READ (gru-256) | **0.80** |", "52.00 ± 2.00", "**93.00**", "84.08 (printed 84.97)"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	var js bytes.Buffer
	Render(&js, tab, "json")
	var parsed map[string]any
	if err := json.Unmarshal(js.Bytes(), &parsed); err != nil {
		t.Errorf("json: %v", err)
	}
	var tex, csvOut bytes.Buffer
	Render(&tex, Table3(rows, true), "latex")
	Render(&csvOut, tab, "csv")
	if !strings.Contains(tex.String(), `\textbf{`) || !strings.Contains(csvOut.String(), "93.00 *") {
		t.Errorf("latex or csv lacks the best marks:\n%s\n%s", tex.String(), csvOut.String())
	}
	if err := Render(&md, tab, "xml"); err == nil {
		t.Error("unknown format accepted")
	}
}

func TestPlots(t *testing.T) {
	s := fixtureDB(t)
	rows, _, _ := Collect(context.Background(), s)
	dir := t.TempDir()
	files, err := Figure1(rows, dir)
	if err != nil {
		t.Fatal(err)
	}
	more, err := StudyPlots(context.Background(), s, dir)
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, more...)
	if len(files) != 10 { // 3 figure panels + history and lr of one sweep study, each PNG and SVG
		t.Errorf("%d files: %v", len(files), files)
	}
	for _, f := range files {
		if st, err := os.Stat(f); err != nil || st.Size() < 500 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

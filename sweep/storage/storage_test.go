package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// engines are the storage backends every test below runs on: a fresh
// SQLite file, and a fresh PostgreSQL database.
var engines = []struct {
	name string
	url  func(t *testing.T) string
	// ago is SQL for "seconds before now" in the engine's heartbeat clock.
	ago func(sec int) string
}{
	{"sqlite", func(t *testing.T) string { return "sqlite:///" + filepath.Join(t.TempDir(), "t.db") },
		func(sec int) string { return fmt.Sprintf("datetime('now', '-%d seconds')", sec) }},
	{"postgres", freshPostgres, func(sec int) string { return fmt.Sprintf("LOCALTIMESTAMP - interval '%d seconds'", sec) }},
}

func openURL(t *testing.T, url string) *DB {
	t.Helper()
	s, err := Open(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// eachEngine runs fn as a subtest per engine.
func eachEngine(t *testing.T, fn func(t *testing.T, url string, ago func(int) string)) {
	for _, e := range engines {
		t.Run(e.name, func(t *testing.T) { fn(t, e.url(t), e.ago) })
	}
}

func TestStudyAndTrialRoundTrip(t *testing.T) {
	eachEngine(t, func(t *testing.T, url string, _ func(int) string) { testRoundTrip(t, openURL(t, url)) })
}

func testRoundTrip(t *testing.T, s *DB) {
	ctx := context.Background()
	st, err := s.CreateStudy(ctx, "read/gru-256/sst2", Maximize, map[string]any{"method": "read"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.CreateStudy(ctx, "read/gru-256/sst2", Maximize, nil)
	if err != nil || again.ID != st.ID || again.UserAttrs["method"] != "read" {
		t.Fatalf("get-or-create: %+v, %v", again, err)
	}
	if _, err := s.CreateStudy(ctx, "read/gru-256/sst2", Minimize, nil); err == nil {
		t.Error("direction change accepted")
	}
	space := map[string]Distribution{
		"lr":  Float(1e-6, 3e-3, true),
		"n":   {Kind: IntDist, Low: 1, High: 4, Step: 1},
		"act": {Kind: CategoricalDist, Choices: []any{"relu", "gelu"}},
	}
	tr, err := s.CreateTrial(ctx, st.ID, TrialOptions{State: Running, Heartbeat: true})
	if err != nil {
		t.Fatal(err)
	}
	v := 0.75
	inf := math.Inf(-1)
	steps := map[int]float64{0: 0.5, 1: math.NaN(), 2: math.Inf(1)}
	if err := s.UpdateTrial(ctx, tr.ID, TrialUpdate{Params: map[string]float64{"lr": 1e-4, "n": 3, "act": 1}, Distributions: space,
		Intermediate: steps, UserAttrs: map[string]any{"test": 0.7}}); err != nil {
		t.Fatal(err)
	}
	state := Complete
	if err := s.UpdateTrial(ctx, tr.ID, TrialUpdate{State: &state, Value: &v}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateTrial(ctx, tr.ID, TrialUpdate{Value: &inf}); !errors.Is(err, ErrTrialFinished) {
		t.Errorf("update of a finished trial: %v, want ErrTrialFinished", err)
	}
	trials, err := s.Trials(ctx, st.ID)
	if err != nil || len(trials) != 1 {
		t.Fatalf("trials: %v, %v", trials, err)
	}
	got := trials[0]
	if got.State != Complete || *got.Value != 0.75 || got.Number != 0 || got.Complete.IsZero() || got.Heartbeat.IsZero() {
		t.Errorf("trial = %+v", got)
	}
	p := got.ExternalParams()
	if p["lr"] != 1e-4 || p["n"] != int64(3) || p["act"] != "gelu" {
		t.Errorf("params = %v", p)
	}
	if !math.IsNaN(got.Intermediate[1]) || !math.IsInf(got.Intermediate[2], 1) || got.Intermediate[0] != 0.5 {
		t.Errorf("intermediate = %v", got.Intermediate)
	}
	if got.UserAttrs["test"] != 0.7 {
		t.Errorf("user attrs = %v", got.UserAttrs)
	}
	// The stored encodings Optuna reads.
	var typ string
	var dj string
	s.db.QueryRow(`SELECT intermediate_value_type FROM trial_intermediate_values WHERE step = 1`).Scan(&typ)
	s.db.QueryRow(`SELECT distribution_json FROM trial_params WHERE param_name = 'lr'`).Scan(&dj)
	if typ != "NAN" || dj != `{"name": "FloatDistribution", "attributes": {"step": null, "low": 1e-06, "high": 0.003, "log": true}}` {
		t.Errorf("stored NaN type %q, distribution %s", typ, dj)
	}
	var alembic string
	var schema int
	s.db.QueryRow(`SELECT version_num FROM alembic_version`).Scan(&alembic)
	s.db.QueryRow(`SELECT schema_version FROM version_info`).Scan(&schema)
	if alembic != "v3.2.0.a" || schema != 12 {
		t.Errorf("stamp %s / %d", alembic, schema)
	}
}

func TestBudgetAndNumbersUnderConcurrency(t *testing.T) {
	eachEngine(t, func(t *testing.T, url string, _ func(int) string) { testConcurrency(t, url) })
}

func testConcurrency(t *testing.T, url string) {
	ctx := context.Background()
	first := openURL(t, url)
	st, _ := first.CreateStudy(ctx, "s", Minimize, nil)
	// Four independent handles stand in for four processes.
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := 0
	for range 4 {
		s := openURL(t, url)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				_, err := s.CreateTrial(ctx, st.ID, TrialOptions{State: Running, Budget: 13})
				if errors.Is(err, ErrStudyFull) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				created++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	trials, _ := first.Trials(ctx, st.ID)
	if created != 13 || len(trials) != 13 {
		t.Fatalf("created %d trials (%d stored), want the budget 13", created, len(trials))
	}
	for i, tr := range trials {
		if tr.Number != i {
			t.Fatalf("trial numbers %v..., want 0..12", tr.Number)
		}
	}
}

// reapGrace is the heartbeat grace of the reaping tests, whose heartbeats
// are a minute old.
const reapGrace = 2 * time.Second

// waitServerUp waits until a PostgreSQL server has been up for grace: one
// younger judges no heartbeat stale (it was not there to receive them).
func waitServerUp(t *testing.T, s *DB, grace time.Duration) {
	t.Helper()
	if s.d != postgresDialect {
		return
	}
	for {
		var up float64
		if err := s.db.QueryRow(`SELECT extract(epoch FROM now() - pg_postmaster_start_time())::float8`).Scan(&up); err != nil {
			t.Fatal(err)
		}
		if up > grace.Seconds()+0.1 {
			return
		}
		time.Sleep(time.Duration((grace.Seconds()+0.2-up)*1e9) * time.Nanosecond)
	}
}

func TestWaitingClaimAndStale(t *testing.T) {
	eachEngine(t, func(t *testing.T, url string, ago func(int) string) { testWaitingAndStale(t, openURL(t, url), ago) })
}

func testWaitingAndStale(t *testing.T, s *DB, ago func(int) string) {
	ctx := context.Background()
	st, _ := s.CreateStudy(ctx, "s", Minimize, nil)
	w, err := s.CreateTrial(ctx, st.ID, TrialOptions{State: Waiting, SystemAttrs: map[string]any{"fixed_params": map[string]any{"lr": 0.001}}})
	if err != nil || w.State != Waiting || !w.Start.IsZero() {
		t.Fatalf("waiting trial %+v, %v", w, err)
	}
	c, err := s.CreateTrial(ctx, st.ID, TrialOptions{State: Running, ClaimWaiting: true, Heartbeat: true})
	if err != nil || c.ID != w.ID || c.State != Running || c.SystemAttrs["fixed_params"] == nil {
		t.Fatalf("claim: %+v, %v", c, err)
	}
	other, _ := s.CreateTrial(ctx, st.ID, TrialOptions{State: Running}) // ask/tell: no heartbeat
	// Age the claimed trial's heartbeat past the grace period.
	if _, err := s.db.Exec(s.d.bind(`UPDATE trial_heartbeats SET heartbeat = `+ago(60)+` WHERE trial_id = ?`), c.ID); err != nil {
		t.Fatal(err)
	}
	waitServerUp(t, s, reapGrace)
	stale, err := s.FailStaleTrials(ctx, st.ID, reapGrace)
	if err != nil || len(stale) != 1 || stale[0].ID != c.ID {
		t.Fatalf("stale = %+v, %v", stale, err)
	}
	trials, _ := s.Trials(ctx, st.ID)
	n := Count(trials)
	if n[Fail] != 1 || n[Running] != 1 || trials[1].ID != other.ID {
		t.Errorf("after reaping: %v", n)
	}
}

// TestStaleTrialReapedOnce: workers that start together over one dead
// trial (independent handles, as processes) all look for stale trials at
// once; exactly one of them gets the trial, so exactly one queues its
// retry.
func TestStaleTrialReapedOnce(t *testing.T) {
	eachEngine(t, func(t *testing.T, url string, ago func(int) string) {
		ctx := context.Background()
		first := openURL(t, url)
		st, _ := first.CreateStudy(ctx, "s", Minimize, nil)
		var dead []int64
		for range 3 {
			tr, err := first.CreateTrial(ctx, st.ID, TrialOptions{State: Running, Heartbeat: true})
			if err != nil {
				t.Fatal(err)
			}
			dead = append(dead, tr.ID)
		}
		if _, err := first.db.Exec(first.d.bind(`UPDATE trial_heartbeats SET heartbeat = ` + ago(60))); err != nil {
			t.Fatal(err)
		}
		waitServerUp(t, first, reapGrace)
		const workers = 6
		handles := make([]*DB, workers)
		for i := range handles {
			handles[i] = openURL(t, url)
		}
		got := make([][]FrozenTrial, workers)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i, s := range handles {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				var err error
				if got[i], err = s.FailStaleTrials(ctx, st.ID, reapGrace); err != nil {
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
		reaped := map[int64]int{}
		for _, g := range got {
			for _, tr := range g {
				reaped[tr.ID]++
			}
		}
		for _, id := range dead {
			if reaped[id] != 1 {
				t.Errorf("trial row %d reaped by %d workers, want exactly 1 (all: %v)", id, reaped[id], reaped)
			}
		}
	})
}

func TestOpenErrors(t *testing.T) {
	for _, url := range []string{"mysql://x", "sqlite://relative-without-slash"} {
		if _, err := Open(url); err == nil {
			t.Errorf("Open(%q) succeeded", url)
		}
	}
	// A database of another Optuna revision is refused with a hint.
	path := filepath.Join(t.TempDir(), "old.db")
	db, _ := sql.Open("sqlite3", path)
	db.Exec(`CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY); INSERT INTO alembic_version VALUES ('v2.6.0.a');`)
	db.Close()
	if _, err := OpenSQLite(path); err == nil {
		t.Error("old revision accepted")
	}
}

func TestDistributionJSON(t *testing.T) {
	for _, in := range []string{
		`{"name": "FloatDistribution", "attributes": {"step": null, "low": 1e-06, "high": 0.003, "log": true}}`,
		`{"name": "IntDistribution", "attributes": {"log": false, "step": 1, "low": 1, "high": 4}}`,
		`{"name": "CategoricalDistribution", "attributes": {"choices": ["mlp", "cnn"]}}`,
	} {
		var d Distribution
		if err := d.UnmarshalJSON([]byte(in)); err != nil {
			t.Fatal(err)
		}
		out, _ := d.MarshalJSON()
		if string(out) != in {
			t.Errorf("round trip\n have %s\n want %s", out, in)
		}
	}
	var d Distribution
	if err := d.UnmarshalJSON([]byte(`{"name": "FloatDistribution", "attributes": {"low": 1, "high": 0}}`)); err == nil {
		t.Error("low > high accepted")
	}
}

// TestSnapshotIsTheTrialsInSummary: the snapshot's one bulk read gives
// each study's trials as Trials does (numbers in order even where ids are
// not: two studies interleaved, numbers swapped against ids; several
// parameters, trials without any, shared and differing distributions,
// non-finite values), less the intermediate values and attributes.
func TestSnapshotIsTheTrialsInSummary(t *testing.T) {
	eachEngine(t, func(t *testing.T, url string, _ func(int) string) {
		s := openURL(t, url)
		ctx := context.Background()
		a, _ := s.CreateStudy(ctx, "a", Maximize, nil)
		b, _ := s.CreateStudy(ctx, "b", Minimize, nil)
		values := []float64{0.5, math.Inf(1), math.NaN(), -2}
		for i := range 12 {
			st := a
			if i%3 == 1 {
				st = b
			}
			tr, err := s.CreateTrial(ctx, st.ID, TrialOptions{State: Running})
			if err != nil {
				t.Fatal(err)
			}
			u := TrialUpdate{Intermediate: map[int]float64{0: float64(i)}, UserAttrs: map[string]any{"i": i}}
			if i%4 != 3 {
				u.Params = map[string]float64{"lr": 1e-4 * float64(i+1), "act": float64(i % 2)}
				u.Distributions = map[string]Distribution{"lr": Float(1e-6, float64(1+i%2), true), "act": {Kind: CategoricalDist, Choices: []any{"relu", "gelu"}}}
			}
			if err := s.UpdateTrial(ctx, tr.ID, u); err != nil {
				t.Fatal(err)
			}
			if i%5 != 4 {
				state, v := Complete, values[i%len(values)]
				u := TrialUpdate{State: &state, Value: &v}
				if math.IsNaN(v) {
					state, u.Value = Fail, nil
				}
				if err := s.UpdateTrial(ctx, tr.ID, u); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Study a's first two trials trade numbers: ids and numbers disagree.
		if _, err := s.db.Exec(s.d.bind(`UPDATE trials SET number = CASE number WHEN 0 THEN 1 ELSE 0 END WHERE study_id = ? AND number IN (0, 1)`), a.ID); err != nil {
			t.Fatal(err)
		}
		studies, snap, err := s.Snapshot(ctx)
		if err != nil || len(studies) != 2 {
			t.Fatalf("snapshot: %d studies, %v", len(studies), err)
		}
		for _, st := range studies {
			full, err := s.Trials(ctx, st.ID)
			if err != nil {
				t.Fatal(err)
			}
			sum := snap[st.ID]
			if len(sum) != len(full) {
				t.Fatalf("%s: snapshot has %d trials, Trials %d", st.Name, len(sum), len(full))
			}
			for i := range full {
				f, g := full[i], sum[i]
				if f.Number != i || g.Number != i || g.ID != f.ID || g.State != f.State || !sameValue(g.Value, f.Value) ||
					fmt.Sprint(g.Params) != fmt.Sprint(f.Params) || fmt.Sprint(g.Distributions) != fmt.Sprint(f.Distributions) ||
					!g.Start.Equal(f.Start) || !g.Complete.Equal(f.Complete) {
					t.Errorf("%s #%d: snapshot %+v\nTrials %+v", st.Name, i, g, f)
				}
				if len(f.Intermediate) != 1 || f.UserAttrs["i"] == nil || len(g.Intermediate) != 0 || len(g.UserAttrs) != 0 {
					t.Errorf("%s #%d: Trials has %v %v, the snapshot %v %v", st.Name, i, f.Intermediate, f.UserAttrs, g.Intermediate, g.UserAttrs)
				}
			}
		}
	})
}

func sameValue(a, b *float64) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b || math.IsNaN(*a) && math.IsNaN(*b)
}

// TestDistributionsOptunaWrites: what Optuna writes or reads and Go's JSON
// does not take as it is (NaN and Infinity among the choices, the
// abbreviated form), and Optuna's decimal rule for a single-valued stepped
// float.
func TestDistributionsOptunaWrites(t *testing.T) {
	var d Distribution
	if err := d.UnmarshalJSON([]byte(`{"name": "CategoricalDistribution", "attributes": {"choices": [1.0, NaN, "NaN", -Infinity, "a\"NaN"]}}`)); err != nil {
		t.Fatal(err)
	}
	if len(d.Choices) != 5 || !math.IsNaN(d.Choices[1].(float64)) || d.Choices[2] != "NaN" || !math.IsInf(d.Choices[3].(float64), -1) || d.Choices[4] != `a"NaN` {
		t.Errorf("choices %#v", d.Choices)
	}
	for text, want := range map[string]Distribution{
		`{"type": "float", "low": 0.5, "high": 2, "log": true}`: {Kind: FloatDist, Low: 0.5, High: 2, Log: true},
		`{"type": "int", "low": 1, "high": 9}`:                  {Kind: IntDist, Low: 1, High: 9, Step: 1},
		`{"type": "categorical", "choices": ["a", null]}`:       {Kind: CategoricalDist, Choices: []any{"a", nil}},
	} {
		var got Distribution
		if err := json.Unmarshal([]byte(text), &got); err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: %+v, %v; want %+v", text, got, err, want)
		}
	}
	if err := json.Unmarshal([]byte(`{"type": "normal"}`), &d); err == nil {
		t.Error("an unknown abbreviated type was read")
	}
	for _, c := range []struct {
		d      Distribution
		single bool
	}{
		{Distribution{Kind: FloatDist, Low: 0.1, High: 0.3, Step: 0.2}, false}, // 0.1 + 0.2 > 0.3 in binary
		{Distribution{Kind: FloatDist, Low: 0.2, High: 0.3, Step: 0.1}, false},
		{Distribution{Kind: FloatDist, Low: 0.2, High: 0.3, Step: 0.2}, true},
		{Distribution{Kind: IntDist, Low: 1, High: 4, Step: 4}, true},
		{Distribution{Kind: IntDist, Low: 1, High: 2, Step: 1, Log: true}, false},
	} {
		if got := c.d.Single(); got != c.single {
			t.Errorf("%+v: Single() = %v, Optuna says %v", c.d, got, c.single)
		}
	}
}

package sweep

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/readsweep/readsweep/sweep/storage"
	"github.com/readsweep/readsweep/trial"
)

// awayStore is a storage whose database does not answer some writes: the
// intermediate values of the steps in lostSteps, and every result while
// resultsLost.
type awayStore struct {
	storage.Storage
	mu          sync.Mutex
	lostSteps   map[int]bool
	resultsLost bool
}

var errAway = errors.New("failed to connect: connection refused")

func (s *awayStore) UpdateTrial(ctx context.Context, id int64, u storage.TrialUpdate) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.State != nil && s.resultsLost {
		return errAway
	}
	for step := range u.Intermediate {
		if s.lostSteps[step] && len(u.Intermediate) == 1 {
			return errAway
		}
	}
	return s.Storage.UpdateTrial(ctx, id, u)
}

// TestResultSurvivesAnOutage: intermediate values the database did not
// take go in with the next one, and a result it did not take stays in the
// trial's journal until the next run records it: the trial is neither
// trained again nor left with holes in its curve.
func TestResultSurvivesAnOutage(t *testing.T) {
	r, store := testRunner(t, oneStudy+"trials: 1\ntraining: {max_epochs: 4}\n", inProcess)
	away := &awayStore{Storage: store, lostSteps: map[int]bool{0: true, 1: true, 3: true}, resultsLost: true}
	r.Storage = away
	var log strings.Builder
	r.Log = &log
	ctx := context.Background()
	plan := Plan(r.Config, nil)
	_, err := r.Run(ctx, plan)
	if err == nil || !strings.Contains(err.Error(), "is kept in") {
		t.Fatalf("run with the database away at the end: %v, want the result kept in its journal", err)
	}
	st, err := store.CreateStudy(ctx, plan[0].Name, storage.Maximize, nil) // the run's, as it stands
	if err != nil {
		t.Fatal(err)
	}
	trials, err := store.Trials(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(trials) != 1 || trials[0].State != storage.Running || len(trials[0].Intermediate) != 3 {
		t.Fatalf("after the outage: %+v, want one RUNNING trial with steps 0-2 (0 and 1 late, with 2)", trials)
	}
	journal := filepath.Join(r.trialDir(&studyState{plan: plan[0]}, trials[0]), journalName)
	if _, err := os.Stat(journal); err != nil {
		t.Fatalf("no journal: %v\nlog:\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "COMPLETE: not recorded (the database does not answer); kept in "+journal) {
		t.Errorf("the log does not name the kept result:\n%s", log.String())
	}

	// The database answers again; the next run records the result and
	// trains nothing.
	r.Storage = store
	res, err := r.Run(ctx, plan)
	if err != nil {
		t.Fatal(err)
	}
	trials, err = store.Trials(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(trials) != 1 || trials[0].State != storage.Complete || trials[0].Value == nil || len(trials[0].Intermediate) != 4 {
		t.Fatalf("after the next run: %+v, want the trial COMPLETE with its 4 steps", trials)
	}
	if n := res.States[storage.Complete] + res.States[storage.Fail]; n != 0 {
		t.Errorf("the next run trained %d trial(s), want none", n)
	}
	if _, err := os.Stat(journal); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the journal is still there after it was recorded: %v", err)
	}
}

// backAfterOutage is a storage that came back from an outage at back.
type backAfterOutage struct {
	storage.Storage
	back time.Time
}

func (s backAfterOutage) BackSince() time.Time { return s.back }

// TestNoTrialTakenForDeadRightAfterAnOutage: after the database was away,
// every heartbeat looks old, the live ones too; no trial is failed for it
// until a full grace has passed with the database there.
func TestNoTrialTakenForDeadRightAfterAnOutage(t *testing.T) {
	r, store, plan, st := oneStudyRunner(t, `trials: 2
training: {max_epochs: 1}
heartbeat_interval: 100ms
heartbeat_grace: 1s
`)
	ctx := context.Background()
	orphan(t, store, st.ID, 1e-4)
	time.Sleep(1500 * time.Millisecond) // its heartbeat is stale
	back := time.Now()
	r.Storage = backAfterOutage{Storage: store, back: back}
	if _, err := r.Run(ctx, plan); err != nil {
		t.Fatal(err)
	}
	trials, err := store.Trials(ctx, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	failed := trials[0]
	if failed.State != storage.Fail || failed.Complete.IsZero() {
		t.Fatalf("#0: %v, want FAIL", failed.State)
	}
	if failed.Complete.Before(back.Add(r.Config.HeartbeatGrace)) {
		t.Errorf("#0 failed at %v, %v after the database came back; want at least heartbeat_grace %v", failed.Complete, failed.Complete.Sub(back), r.Config.HeartbeatGrace)
	}
}

// TestNoTrialStartedPastTheDeadline: a worker whose time limit is nearer
// than its study's mean trial starts no trial (it would be killed at the
// limit and run again from scratch), says why, and ends; with the time, it
// runs them.
func TestNoTrialStartedPastTheDeadline(t *testing.T) {
	r, store := testRunner(t, `trainer: synthetic
datasets: [sst2]
methods:
  read: [{cell: gru, epoch_ms: 100}]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: 2
training: {max_epochs: 3}
`, inProcess)
	ctx := context.Background()
	if _, err := r.Run(ctx, Plan(r.Config, nil)); err != nil {
		t.Fatal(err)
	}
	r.Config.Trials = 4
	var log strings.Builder
	r.Log = &log
	r.Deadline = time.Now().Add(100 * time.Millisecond) // trials take about 300 ms
	res, err := r.Run(ctx, Plan(r.Config, nil))
	if err != nil {
		t.Fatal(err)
	}
	if n := res.States[storage.Complete] + res.States[storage.Fail] + res.States[storage.Pruned]; n != 0 || !strings.Contains(log.String(), "not starting another trial") {
		t.Errorf("with 100 ms left: %d trials ran\n%s", n, log.String())
	}
	r.Deadline = time.Now().Add(time.Hour)
	if res, err = r.Run(ctx, Plan(r.Config, nil)); err != nil || res.States[storage.Complete] != 2 {
		t.Errorf("with an hour left: %v, %v; want the 2 trials left run", res.States, err)
	}
	studies, _ := store.Studies(ctx)
	trials, _ := store.Trials(ctx, studies[0].ID)
	if len(trials) != 4 {
		t.Errorf("%d trials stored, want 4", len(trials))
	}
}

// TestBadJournalsSetAside: a journal that is not JSON, or holds no result
// to record (COMPLETE without a finite value), is said once and set
// aside, never recorded, and does not stop the run; the trial is found
// dead and retried as any other.
func TestBadJournalsSetAside(t *testing.T) {
	r, store, plan, st := oneStudyRunner(t, `trials: 3
training: {max_epochs: 1}
heartbeat_interval: 50ms
heartbeat_grace: 100ms
`)
	var log strings.Builder
	r.Log = &log
	ctx := context.Background()
	ss := &studyState{plan: plan[0]}
	for i, body := range []string{`{not json`, `{"trial_id": 2, "study": "` + plan[0].Name + `", "number": 1, "state": "COMPLETE", "value": "NaN"}`} {
		tr := orphan(t, store, st.ID, 1e-4)
		if tr.Number != i {
			t.Fatalf("trial number %d, want %d", tr.Number, i)
		}
		dir := r.trialDir(ss, tr)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, journalName), []byte(body), 0o644)
	}
	time.Sleep(300 * time.Millisecond) // the heartbeats go stale
	if _, err := r.Run(ctx, plan); err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	trials, _ := store.Trials(ctx, st.ID)
	for _, tr := range trials[:2] {
		if tr.State != storage.Fail {
			t.Errorf("#%d: %v, want FAIL (found dead), not recorded from a bad journal", tr.Number, tr.State)
		}
		dir := r.trialDir(ss, tr)
		if _, err := os.Stat(filepath.Join(dir, unappliedName)); err != nil {
			t.Errorf("#%d: the bad journal was not set aside: %v", tr.Number, err)
		}
	}
	if n := strings.Count(log.String(), "is not a result to record"); n != 2 {
		t.Errorf("said %d times, want once per bad journal:\n%s", n, log.String())
	}
}

// TestOldJournalIgnored: a journal left in a trial folder by a database
// that was replaced (same study, same trial id and number, written before
// this trial started) is not recorded on the new trial.
func TestOldJournalIgnored(t *testing.T) {
	r, store, plan, st := oneStudyRunner(t, `trials: 2
training: {max_epochs: 1}
heartbeat_interval: 50ms
heartbeat_grace: 100ms
`)
	ctx := context.Background()
	tr := orphan(t, store, st.ID, 1e-4)
	path := filepath.Join(r.trialDir(&studyState{plan: plan[0]}, tr), journalName)
	v := trial.Float(0.9)
	if err := writeJournal(path, journal{TrialID: tr.ID, Study: plan[0].Name, Number: tr.Number, State: "COMPLETE", Value: &v}); err != nil {
		t.Fatal(err)
	}
	hourAgo := time.Now().Add(-time.Hour)
	os.Chtimes(path, hourAgo, hourAgo)
	time.Sleep(300 * time.Millisecond) // the heartbeat goes stale
	if _, err := r.Run(ctx, plan); err != nil {
		t.Fatal(err)
	}
	trials, _ := store.Trials(ctx, st.ID)
	if trials[0].State != storage.Fail {
		t.Errorf("#0 is %v with value %v: the old database's journal was recorded on it", trials[0].State, trials[0].Value)
	}
}

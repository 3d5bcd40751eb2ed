package sweep

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/readsweep/readsweep/internal/atomicfile"
	"github.com/readsweep/readsweep/sweep/storage"
	"github.com/readsweep/readsweep/trial"
)

// A finished trial's result is written to a journal in its folder before
// the database: if the database does not answer within storage_retry, or
// the process is killed before it does, the result survives, and the next
// run (or any worker of the sweep) writes it to the database, instead of
// the trial being found dead and trained again.
const (
	// Hidden, with the tool's name: a trial program's own result.json in
	// the same folder is left alone.
	journalName   = ".sweep-result.json"
	unappliedName = ".sweep-result.unapplied.json" // a journal the database had overtaken, or a bad one
)

// journal is one trial's result as the database is to record it.
type journal struct {
	TrialID      int64               `json:"trial_id"`
	Study        string              `json:"study"`
	Number       int                 `json:"number"`
	State        string              `json:"state"`
	Value        *trial.Float        `json:"value,omitempty"` // NaN and infinities survive, as strings
	Intermediate map[int]trial.Float `json:"intermediate,omitempty"`
	UserAttrs    map[string]any      `json:"user_attrs,omitempty"`
}

func newJournal(study string, t storage.FrozenTrial, u storage.TrialUpdate) journal {
	j := journal{TrialID: t.ID, Study: study, Number: t.Number, State: u.State.String(), UserAttrs: u.UserAttrs}
	if u.Value != nil {
		v := trial.Float(*u.Value)
		j.Value = &v
	}
	if len(u.Intermediate) > 0 {
		j.Intermediate = map[int]trial.Float{}
		for step, v := range u.Intermediate {
			j.Intermediate[step] = trial.Float(v)
		}
	}
	return j
}

// update is the database update the journal stands for.
func (j journal) update() (storage.TrialUpdate, error) {
	state, err := storage.ParseTrialState(j.State)
	if err != nil || !state.IsFinished() {
		return storage.TrialUpdate{}, fmt.Errorf("state %q is not a finished trial's", j.State)
	}
	finite := j.Value != nil && !math.IsNaN(float64(*j.Value)) && !math.IsInf(float64(*j.Value), 0)
	switch {
	case state == storage.Complete && !finite:
		return storage.TrialUpdate{}, errors.New("a COMPLETE trial needs a finite value")
	case state == storage.Pruned && j.Value != nil && !finite:
		return storage.TrialUpdate{}, errors.New("a PRUNED trial's value must be finite")
	case state == storage.Fail && j.Value != nil:
		return storage.TrialUpdate{}, errors.New("a FAIL trial has no value")
	}
	u := storage.TrialUpdate{State: &state, UserAttrs: j.UserAttrs}
	if j.Value != nil {
		v := float64(*j.Value)
		u.Value = &v
	}
	if len(j.Intermediate) > 0 {
		u.Intermediate = map[int]float64{}
		for step, v := range j.Intermediate {
			u.Intermediate[step] = float64(v)
		}
	}
	return u, nil
}

// writeJournal writes j to path whole or not at all, and to the disk: a
// node that loses power right after keeps it. It is as readable as the
// trial's other files, for a worker of another user.
func writeJournal(path string, j journal) error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o644)
}

// readJournal reads the journal at path; a missing file is (nil, nil).
func readJournal(path string) (*journal, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var j journal
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &j, nil
}

// replayJournals writes to the database the journalled results of the
// study's trials that it still holds RUNNING: results a process wrote to
// its journal and could not record (the database was away, or the
// process was killed in between). A journal that lost the race to another
// process's verdict (the trial was found dead meanwhile) is renamed
// .sweep-result.unapplied.json and said, not deleted: the result is the
// user's.
// It returns how many it recorded.
func (r *Runner) replayJournals(ctx context.Context, ss *studyState, trials []storage.FrozenTrial) (int, error) {
	recorded := 0
	retried := retriedNumbers(trials)
	for _, t := range trials {
		path := filepath.Join(r.trialDir(ss, t), journalName)
		aside := filepath.Join(filepath.Dir(path), unappliedName)
		j, err := readJournal(path)
		if j == nil && err == nil {
			continue
		}
		if err == nil && (j.TrialID != t.ID || j.Number != t.Number || j.Study != ss.plan.Name || olderThan(path, t.Start)) {
			// The folder is another study's of the same name, or a
			// database's that was replaced under the same output_dir (whose
			// trial ids and numbers start again from the same values; its
			// journal was written before this trial started).
			continue
		}
		var u storage.TrialUpdate
		if err == nil {
			u, err = j.update()
		}
		if err != nil {
			// Said once: it is set aside, not read again.
			r.logf("%s#%d: its result journal %s is not a result to record (%v); kept as %s", ss.plan.Name, t.Number, path, err, aside)
			os.Rename(path, aside)
			continue
		}
		if t.State.IsFinished() {
			if t.State == *u.State {
				os.Remove(path) // recorded; its process died before removing it
				r.dropRecordedCheckpoints(ss, t, *u.State, retried[t.Number])
				continue
			}
			r.logf("%s#%d: its journalled result (%s) was not recorded before the trial was found %s; kept in %s", ss.plan.Name, t.Number, j.State, t.State, aside)
			os.Rename(path, aside)
			continue
		}
		err = r.Storage.UpdateTrial(ctx, t.ID, u)
		if errors.Is(err, storage.ErrTrialFinished) {
			continue // another process recorded it just now
		}
		if err != nil {
			// Left for the next look: one journal never stops a run.
			r.logf("%s#%d: its journalled result %s was not recorded: %v", ss.plan.Name, t.Number, path, err)
			continue
		}
		r.logf("%s#%d %s: recorded from its journal (its process could not reach the database)", ss.plan.Name, t.Number, j.State)
		os.Remove(path)
		r.dropRecordedCheckpoints(ss, t, *u.State, retried[t.Number])
		recorded++
	}
	return recorded, nil
}

// dropRecordedCheckpoints drops the checkpoints of a trial recorded from
// its journal, unless it FAILed and has a retry (its process queued it
// before writing the journal), which resumes them.
func (r *Runner) dropRecordedCheckpoints(ss *studyState, t storage.FrozenTrial, state storage.TrialState, retried bool) {
	if state != storage.Fail || !retried {
		r.dropCheckpoints(ss, t)
	}
}

// olderThan reports whether the file at path was last written before t
// (less a margin for the clocks of a shared file system's nodes).
func olderThan(path string, t time.Time) bool {
	st, err := os.Stat(path)
	return err == nil && !t.IsZero() && st.ModTime().Before(t.Add(-2*time.Second))
}

// replayRunning replays the journals of the study's RUNNING trials.
func (r *Runner) replayRunning(ctx context.Context, ss *studyState) error {
	trials, err := r.Storage.Trials(ctx, ss.study.ID)
	if err != nil {
		return err
	}
	running := trials[:0]
	for _, t := range trials {
		if t.State == storage.Running {
			running = append(running, t)
		}
	}
	_, err = r.replayJournals(ctx, ss, running)
	return err
}

package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// TrialState is the life-cycle state of a trial, stored by its Optuna name.
type TrialState int

const (
	Running TrialState = iota
	Complete
	Pruned
	Fail
	Waiting
)

var stateNames = [...]string{"RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING"}

func (s TrialState) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("TrialState(%d)", int(s))
	}
	return stateNames[s]
}

// IsFinished reports whether a trial in state s can no longer change.
func (s TrialState) IsFinished() bool { return s == Complete || s == Pruned || s == Fail }

// ParseTrialState accepts Optuna's state names in any case.
func ParseTrialState(name string) (TrialState, error) {
	for i, n := range stateNames {
		if strings.EqualFold(n, name) {
			return TrialState(i), nil
		}
	}
	return 0, fmt.Errorf("storage: unknown trial state %q (want running, complete, pruned, fail or waiting)", name)
}

// Direction says whether a study minimises or maximises its objective.
type Direction int

const (
	Minimize Direction = iota
	Maximize
)

func (d Direction) String() string {
	if d == Maximize {
		return "MAXIMIZE"
	}
	return "MINIMIZE"
}

// ParseDirection accepts "minimize" or "maximize" in any case.
func ParseDirection(s string) (Direction, error) {
	switch {
	case strings.EqualFold(s, "minimize"):
		return Minimize, nil
	case strings.EqualFold(s, "maximize"):
		return Maximize, nil
	}
	return 0, fmt.Errorf("storage: unknown direction %q (want minimize or maximize)", s)
}

// Better reports whether a is strictly better than b in direction d.
// NaN is never better than anything.
func (d Direction) Better(a, b float64) bool {
	if d == Maximize {
		return a > b
	}
	return a < b
}

// Study is one named optimisation problem. Studies are values: changing one
// changes nothing stored.
type Study struct {
	ID        int64
	Name      string
	Direction Direction // of the first objective, the one this package reads
	UserAttrs map[string]any
	// Objectives counts the study's directions: Optuna's multi-objective
	// studies have several, whose values past the first are not read.
	Objectives int
}

// FrozenTrial is a snapshot of one trial. Storage returns fresh copies, so a
// FrozenTrial is never changed by later writes; finished trials never change.
type FrozenTrial struct {
	ID      int64
	StudyID int64
	Number  int // 0-based within the study
	State   TrialState
	Value   *float64 // nil until COMPLETE (or PRUNED with a reported value)

	// Params holds internal representations (raw floats, ints as floats,
	// categorical indexes), keyed like Distributions.
	Params        map[string]float64
	Distributions map[string]Distribution
	Intermediate  map[int]float64 // step → value
	UserAttrs     map[string]any
	SystemAttrs   map[string]any

	Start     time.Time // zero while WAITING
	Complete  time.Time // zero until finished
	Heartbeat time.Time // zero for trials without a heartbeat (ask/tell trials)
}

// ExternalParams returns the trial's parameters as the objective sees them.
func (t FrozenTrial) ExternalParams() map[string]any {
	out := make(map[string]any, len(t.Params))
	for name, v := range t.Params {
		out[name] = t.Distributions[name].ToExternal(v)
	}
	return out
}

// LastStep returns the trial's last reported step and its value; ok is false
// when it reported none.
func (t FrozenTrial) LastStep() (step int, value float64, ok bool) {
	step = math.MinInt
	for s, v := range t.Intermediate {
		if s > step {
			step, value, ok = s, v, true
		}
	}
	return step, value, ok
}

// Steps returns the trial's reported steps in increasing order.
func (t FrozenTrial) Steps() []int {
	steps := make([]int, 0, len(t.Intermediate))
	for s := range t.Intermediate {
		steps = append(steps, s)
	}
	sort.Ints(steps)
	return steps
}

// BestTrial returns the COMPLETE trial with the best value, the earliest on
// ties, as Optuna's Study.best_trial does.
func BestTrial(trials []FrozenTrial, d Direction) (FrozenTrial, bool) {
	var best FrozenTrial
	found := false
	for _, t := range trials {
		if t.State != Complete || t.Value == nil || math.IsNaN(*t.Value) {
			continue
		}
		if !found || d.Better(*t.Value, *best.Value) || (*t.Value == *best.Value && t.Number < best.Number) {
			best, found = t, true
		}
	}
	return best, found
}

// Count returns how many trials are in each state.
func Count(trials []FrozenTrial) map[TrialState]int {
	n := make(map[TrialState]int)
	for _, t := range trials {
		n[t.State]++
	}
	return n
}

// Errors callers branch on.
var (
	ErrStudyFull     = errors.New("storage: study has its budget of trials")
	ErrTrialFinished = errors.New("storage: trial is already finished")
	ErrNotFound      = errors.New("storage: not found")
)

// marshalAttr encodes an attribute value the way Optuna's json.dumps does,
// a non-finite number as Python's bare token (a pruner's rung value can
// be infinite).
func marshalAttr(v any) (string, error) {
	if f, ok := v.(float64); ok && (math.IsInf(f, 0) || math.IsNaN(f)) {
		switch {
		case math.IsNaN(f):
			return "NaN", nil
		case f > 0:
			return "Infinity", nil
		}
		return "-Infinity", nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

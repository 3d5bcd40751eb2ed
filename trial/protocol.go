// Package trial defines the protocol spoken between the sweep orchestrator
// and a trial process, and runs the trial side of it (`sweep trial`).
//
// # Protocol
//
// The orchestrator starts the trial without a shell and writes one JSON
// Spec to its standard input; the same JSON is in the file named by
// $SWEEP_TRIAL_SPEC. The trial writes JSON lines to standard output:
//
//	{"type":"epoch","step":0,"value":0.71}
//	{"type":"final","value":0.74,"attrs":{"test":0.73,"seconds":12.5}}
//
// Every other stdout line is ignored; standard error is free-form log. An
// "epoch" is a validation score, stored as an intermediate value and shown
// to the pruner; the orchestrator may then stop the trial (SIGTERM, then
// SIGKILL after a grace period). "final" ends the trial: its value is the
// objective and attrs are stored as trial user attributes. Exit status ≠ 0,
// a crash, no final line or a NaN final value make the trial FAIL.
// docs/protocol.md is the full description.
//
// # Test double
//
// The "synthetic" trainer (Synthetic) reports a noisy learning-rate curve
// instead of training anything. It exists to exercise the orchestrator and
// the samplers; it is not a fine-tuning method.
package trial

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/readsweep/readsweep/sweep/storage"
)

// Version is the protocol version written into every Spec.
const Version = 1

// SpecEnv names the environment variable holding the spec file's path.
const SpecEnv = "SWEEP_TRIAL_SPEC"

// Spec is everything a trial needs to run, sent by the orchestrator.
type Spec struct {
	Version  int            `json:"version"`
	TrialID  int64          `json:"trial_id"` // database id, unique across studies
	Number   int            `json:"number"`   // 0-based within the study
	Study    string         `json:"study"`    // method/arch/dataset
	Method   string         `json:"method"`
	Arch     map[string]any `json:"arch"` // architecture settings of the candidate
	ArchName string         `json:"arch_name"`
	Dataset  string         `json:"dataset"`
	Params   map[string]any `json:"params"` // sampled hyperparameters, "lr" among them
	Seed     int64          `json:"seed"`
	// Training holds the sweep's training settings (max_epochs, patience,
	// batch_size, ...) verbatim.
	Training map[string]any `json:"training"`
	Trainer  string         `json:"trainer"` // "builtin" or "synthetic"
	// Device is auto (the GPU when one opens), cpu or cuda; empty reads as auto.
	Device    string `json:"device,omitempty"`
	Model     string `json:"model"`
	DataDir   string `json:"data_dir"`
	OutputDir string `json:"output_dir"` // the trial's own directory
	// ResumeFrom is the first member's predecessor's checkpoint (Member).
	ResumeFrom string `json:"resume_from,omitempty"`
	// Pack, when set, makes this one process train several trials of the
	// study side by side over one pass of the frozen backbone (sweep file
	// `pack: k`); TrialID, Number, Params and OutputDir above are then the
	// first member's. See "Packs" in docs/protocol.md.
	Pack []Member `json:"pack,omitempty"`
}

// Member is one trial of a pack.
type Member struct {
	TrialID   int64          `json:"trial_id"`
	Number    int            `json:"number"`
	Params    map[string]any `json:"params"`
	OutputDir string         `json:"output_dir"`
	// ResumeFrom is the checkpoint of a predecessor (the trial this one
	// retries) to continue from; see "Checkpoints" in docs/protocol.md.
	ResumeFrom string `json:"resume_from,omitempty"`
}

// Members returns the trials the spec asks for: its pack, or itself.
func (s Spec) Members() []Member {
	if len(s.Pack) > 0 {
		return s.Pack
	}
	return []Member{{TrialID: s.TrialID, Number: s.Number, Params: s.Params, OutputDir: s.OutputDir, ResumeFrom: s.ResumeFrom}}
}

// Verdict is the orchestrator's answer, on a pack's standard input, to
// each epoch line of a packed trial: go on, or leave the pack (pruned).
type Verdict struct {
	Trial int  `json:"trial"`
	Prune bool `json:"prune"`
}

// Encode returns v as one line, newline included.
func (v Verdict) Encode() []byte {
	b, _ := json.Marshal(v)
	return append(b, '\n')
}

// Message types a trial writes.
const (
	TypeEpoch = "epoch"
	TypeFinal = "final"
	// TypeHeartbeat says the trial is alive between epochs (no value); the
	// orchestrator's stall_timeout counts from the last message of any type.
	TypeHeartbeat = "heartbeat"
	// TypeResumed says the trial continues from its predecessor's
	// checkpoint after step optimiser steps (no value). Its attrs name
	// the predecessor (from_trial) and the intermediate values reported
	// before the checkpoint (values: [{step, value}]), which the
	// orchestrator copies into the trial so the pruner sees one curve.
	TypeResumed = "resumed"
)

// Message is one line a trial writes on standard output.
type Message struct {
	Type string `json:"type"`
	// Trial is the number of the packed trial the line is about; absent
	// outside packs.
	Trial *int           `json:"trial,omitempty"`
	Step  int            `json:"step"`
	Value Float          `json:"value"`
	Attrs map[string]any `json:"attrs,omitempty"`
}

// Float is a float64 that also reads NaN and ±Infinity, written as strings
// ("NaN"), as null (NaN) or bare, as Python's json.dumps writes them.
type Float float64

// MarshalJSON writes non-finite values as strings, since JSON has no token
// for them.
func (f Float) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	case math.IsInf(v, 1):
		return []byte(`"Infinity"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Infinity"`), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

// UnmarshalJSON accepts numbers, null and the strings NaN, Infinity and
// -Infinity.
func (f *Float) UnmarshalJSON(b []byte) error {
	s := string(bytes.TrimSpace(b))
	switch s {
	case "null", `"NaN"`, `"nan"`:
		*f = Float(math.NaN())
		return nil
	case `"Infinity"`, `"inf"`:
		*f = Float(math.Inf(1))
		return nil
	case `"-Infinity"`, `"-inf"`:
		*f = Float(math.Inf(-1))
		return nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("trial: value %s is not a number", s)
	}
	*f = Float(v)
	return nil
}

// ErrNotMessage marks a stdout line that is not a protocol message; the
// orchestrator ignores such lines.
var ErrNotMessage = errors.New("trial: not a protocol message")

// ParseMessage decodes one stdout line. Lines that are not JSON objects
// with a "type" return ErrNotMessage; a malformed protocol message returns
// another error.
func ParseMessage(line []byte) (Message, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return Message{}, ErrNotMessage
	}
	var probe struct {
		Type *string `json:"type"`
	}
	fixed := []byte(storage.QuoteNonFinite(string(line)))
	if err := json.Unmarshal(fixed, &probe); err != nil || probe.Type == nil {
		return Message{}, ErrNotMessage
	}
	var m Message
	if err := json.Unmarshal(fixed, &m); err != nil {
		return Message{}, fmt.Errorf("trial: bad %q message: %w", *probe.Type, err)
	}
	switch m.Type {
	case TypeEpoch, TypeFinal:
	case TypeHeartbeat, TypeResumed:
		return m, nil
	default:
		return Message{}, fmt.Errorf("trial: unknown message type %q (want epoch, heartbeat, resumed or final)", m.Type)
	}
	if !bytes.Contains(fixed, []byte(`"value"`)) {
		return Message{}, fmt.Errorf("trial: %q message without a value", m.Type)
	}
	if m.Type == TypeEpoch && m.Step < 0 {
		// Optuna refuses a negative step, so a study holding one could
		// not be read back by it.
		return Message{}, fmt.Errorf("trial: epoch message with step %d; steps count from 0", m.Step)
	}
	return m, nil
}

// Encode returns m as one protocol line, newline included.
func (m Message) Encode() []byte {
	b, err := json.Marshal(m)
	if err != nil {
		// Attrs that cannot be encoded are dropped rather than losing the
		// value itself.
		m.Attrs = map[string]any{"attrs_error": err.Error()}
		b, _ = json.Marshal(m)
	}
	return append(b, '\n')
}

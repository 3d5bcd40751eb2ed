package trial

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/readsweep/readsweep/methods"
)

func TestParseMessage(t *testing.T) {
	tests := []struct {
		line    string
		want    Message
		wantErr error // nil, ErrNotMessage, or errAny
	}{
		{`{"type":"epoch","step":3,"value":0.5}`, Message{Type: "epoch", Step: 3, Value: 0.5}, nil},
		{`{"type": "final", "value": 0.75, "attrs": {"test": 0.7}}`, Message{Type: "final", Value: 0.75, Attrs: map[string]any{"test": 0.7}}, nil},
		{`{"type": "final", "value": NaN}`, Message{Type: "final", Value: Float(math.NaN())}, nil},
		{`{"type": "epoch", "step": 1, "value": -Infinity}`, Message{Type: "epoch", Step: 1, Value: Float(math.Inf(-1))}, nil},
		{`{"type": "final", "value": "NaN"}`, Message{Type: "final", Value: Float(math.NaN())}, nil},
		{`{"type": "final", "value": 0.5, "attrs": {"note": "lr 3, NaN, then 0.1"}}`, Message{Type: "final", Value: 0.5, Attrs: map[string]any{"note": "lr 3, NaN, then 0.1"}}, nil},
		{`loading checkpoint...`, Message{}, ErrNotMessage},
		{`{"loss": 0.3}`, Message{}, ErrNotMessage},
		{`{"type": "final"}`, Message{}, errAny},
		{`{"type": "progress", "value": 1}`, Message{}, errAny},
		{`{"type": "epoch", "value": "high"}`, Message{}, errAny},
		{`{"type": "epoch", "step": -1, "value": 0.5}`, Message{}, errAny},
	}
	for _, tc := range tests {
		t.Run(tc.line, func(t *testing.T) {
			m, err := ParseMessage([]byte(tc.line))
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("error %v", err)
			case tc.wantErr == ErrNotMessage && !errors.Is(err, ErrNotMessage):
				t.Fatalf("error %v, want ErrNotMessage", err)
			case tc.wantErr == errAny && (err == nil || errors.Is(err, ErrNotMessage)):
				t.Fatalf("error %v, want a protocol error", err)
			}
			if err != nil {
				return
			}
			if m.Type != tc.want.Type || m.Step != tc.want.Step || !sameFloat(float64(m.Value), float64(tc.want.Value)) || len(m.Attrs) != len(tc.want.Attrs) {
				t.Errorf("have %+v, want %+v", m, tc.want)
			}
		})
	}
}

var errAny = errors.New("any error")

func sameFloat(a, b float64) bool { return a == b || (math.IsNaN(a) && math.IsNaN(b)) }

func TestEncodeRoundTrip(t *testing.T) {
	for _, v := range []float64{0.25, math.NaN(), math.Inf(1)} {
		m := Message{Type: TypeFinal, Value: Float(v), Attrs: map[string]any{"k": "v"}}
		got, err := ParseMessage(m.Encode())
		if err != nil || !sameFloat(float64(got.Value), v) {
			t.Errorf("round trip of %v: %+v, %v", v, got, err)
		}
	}
}

func TestSynthetic(t *testing.T) {
	spec := Spec{Version: Version, Number: 4, Study: "read/gru-256/sst2", Method: "read", ArchName: "gru-256", Dataset: "sst2",
		Params: map[string]any{"lr": 1e-4}, Training: map[string]any{"max_epochs": 5.0}, Trainer: "synthetic"}
	var out, errb bytes.Buffer
	if err := Run(context.Background(), spec, nil, nil, &out, &errb); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d lines, want 5 epochs + final:\n%s", len(lines), out.String())
	}
	final, err := ParseMessage([]byte(lines[5]))
	if err != nil || final.Type != TypeFinal {
		t.Fatalf("last line %q: %v", lines[5], err)
	}
	// lr = 1e-4 is the optimum: 1 − 0.15 − offset(<0.05) ± noise, after 5 epochs of warm-up.
	if v := float64(final.Value); v < 0.6 || v > 0.9 {
		t.Errorf("final value %v outside the expected band", v)
	}
	var again bytes.Buffer
	Run(context.Background(), spec, nil, nil, &again, &errb)
	a, _ := ParseMessage([]byte(strings.Split(again.String(), "\n")[5]))
	if a.Value != final.Value {
		t.Errorf("same spec gave %v then %v", final.Value, a.Value)
	}
}

func TestMethodNotBuilt(t *testing.T) {
	spec := Spec{Version: Version, Method: "read", Params: map[string]any{"lr": 1e-4}}
	err := Run(context.Background(), spec, methods.Registry{}, nil, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "not part of this build") {
		t.Errorf("Run = %v, want an error saying the trainer is missing", err)
	}
}

// TestHeartbeat: a heartbeat line parses without a value, and the trainer
// writes one only when the interval has passed since the last.
func TestHeartbeat(t *testing.T) {
	m, err := ParseMessage([]byte(`{"type": "heartbeat"}`))
	if err != nil || m.Type != TypeHeartbeat {
		t.Fatalf("heartbeat: %+v, %v", m, err)
	}
	var buf bytes.Buffer
	beat := heartbeat(&buf, 20*time.Millisecond)
	beat()
	if buf.Len() != 0 {
		t.Fatalf("beat before the interval: %q", buf.String())
	}
	time.Sleep(30 * time.Millisecond)
	beat()
	beat()
	if m, err := ParseMessage(bytes.TrimSpace(buf.Bytes())); err != nil || m.Type != TypeHeartbeat {
		t.Fatalf("after the interval, %q (%v); want one heartbeat line", buf.String(), err)
	}
}

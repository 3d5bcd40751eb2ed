package storage

import (
	"math"
	"reflect"
	"testing"
)

func TestDecodeAttrReadsWhatOptunaWrites(t *testing.T) {
	for _, tc := range []struct {
		js   string
		want any
	}{
		{`0.5`, 0.5},
		{`NaN`, "NaN"},
		{`-Infinity`, "-Infinity"},
		{`[1.0, NaN, Infinity, -Infinity]`, []any{1.0, "NaN", "Infinity", "-Infinity"}},
		{`{"loss": NaN, "note": "NaN stays text, \"Infinity\" too"}`, map[string]any{"loss": "NaN", "note": `NaN stays text, "Infinity" too`}},
		{`{"a": "x\\"}`, map[string]any{"a": `x\`}},
		{`not json {`, `not json {`},
	} {
		if got := decodeAttr(tc.js); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("decodeAttr(%s) = %#v, want %#v", tc.js, got, tc.want)
		}
	}
}

// TestMarshalAttrWritesNonFiniteAsPython: an infinite rung value is
// written as json.dumps writes it, which Optuna and decodeAttr read back.
func TestMarshalAttrWritesNonFiniteAsPython(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{{math.Inf(1), "Infinity"}, {math.Inf(-1), "-Infinity"}, {math.NaN(), "NaN"}, {0.25, "0.25"}} {
		if got, err := marshalAttr(tc.v); err != nil || got != tc.want {
			t.Errorf("marshalAttr(%v) = %q, %v; want %q", tc.v, got, err, tc.want)
		}
	}
}

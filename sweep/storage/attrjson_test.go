package storage

import (
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

package storage

import (
	"encoding/json"
	"strings"
)

// decodeAttr reads one attribute's value_json as Optuna's json.loads does.
// Python's json.dumps writes non-finite floats as the bare tokens NaN,
// Infinity and -Infinity, which are not JSON: they are read here as the
// strings "NaN", "Infinity" and "-Infinity", so that every page and export
// can still encode the value. A value that is not JSON even then is kept
// as its raw text: one bad attribute never hides a trial's others.
func decodeAttr(js string) any {
	var v any
	if err := json.Unmarshal([]byte(js), &v); err == nil {
		return v
	}
	if err := json.Unmarshal([]byte(QuoteNonFinite(js)), &v); err == nil {
		return v
	}
	return js
}

// QuoteNonFinite puts quotes around the tokens NaN, Infinity and -Infinity
// where they stand outside JSON strings: Python's json.dumps writes them
// bare, in Optuna's attributes and in trial programs' protocol lines.
func QuoteNonFinite(js string) string {
	var b strings.Builder
	inString, escaped := false, false
	for i := 0; i < len(js); i++ {
		c := js[i]
		if inString {
			b.WriteByte(c)
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		if c == '"' {
			inString = true
			b.WriteByte(c)
			continue
		}
		matched := false
		for _, tok := range []string{"-Infinity", "Infinity", "NaN"} {
			if strings.HasPrefix(js[i:], tok) {
				b.WriteString(`"` + tok + `"`)
				i += len(tok) - 1
				matched = true
				break
			}
		}
		if !matched {
			b.WriteByte(c)
		}
	}
	return b.String()
}

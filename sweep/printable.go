package sweep

import (
	"strings"
	"unicode"
)

// Printable is a line a trial program wrote (its fail reason), made safe
// to print to a terminal or a log: its first line only, without control
// characters (C0, DEL, C1, whose CSI can drive a terminal as ESC does) or
// the format characters that reorder or break what follows (bidirectional
// overrides, line and paragraph separators).
func Printable(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return -1
		}
		return r
	}, s)
}

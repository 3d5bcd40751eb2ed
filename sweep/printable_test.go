package sweep

import "testing"

// TestPrintable: what a hostile trial program puts in its fail reason
// cannot drive the terminal that prints it, reorder the line or add one.
func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"plain reason":                   "plain reason",
		"first\nsecond":                  "first",
		"\x1b[2J\x1b]0;title\x07cleared": "[2J]0;titlecleared",
		"csi \u009b31m red":              "csi 31m red",
		"a\rb\x00c\x7fd":                 "abcd",
		"evil \u202egnp.exe":             "evil gnp.exe",
		"one\u2028two\u2029three":        "onetwothree",
		"accents é, 中文, emoji 🙂 stay":    "accents é, 中文, emoji 🙂 stay",
	} {
		if got := Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}

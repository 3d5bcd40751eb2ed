package main

import (
	"errors"
	"fmt"
	"testing"
)

// TestErrorTextHasOnePrefix: the log adds "sweep: ", so neither a usage
// error's "usage: " marker nor the sweep package's own "sweep: " doubles it.
func TestErrorTextHasOnePrefix(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("%w: usage: sweep bench tpe|t5|read [flags]", errUsage), "usage: sweep bench tpe|t5|read [flags]"},
		{fmt.Errorf("%w: --backend %q: want openblas, gonum or cuda", errUsage, "x"), `--backend "x": want openblas, gonum or cuda`},
		{errors.New("sweep: study a/b/c: no trials"), "study a/b/c: no trials"},
		{errors.New("trial: lr must be positive"), "trial: lr must be positive"},
	} {
		if got := errorText(tc.err); got != tc.want {
			t.Errorf("errorText(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestPlainJSONKeepsAngleBrackets: show and export print attributes as
// written, not HTML-escaped.
func TestPlainJSONKeepsAngleBrackets(t *testing.T) {
	got := plainJSON(map[string]any{"reason": "loss <nan> & 'inf'"})
	if want := `{"reason":"loss <nan> & 'inf'"}`; got != want {
		t.Fatalf("plainJSON = %s, want %s", got, want)
	}
}

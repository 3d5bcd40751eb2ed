package sweep

import "testing"

func TestStderrCausePrefersTheError(t *testing.T) {
	for _, tc := range []struct{ tail, want string }{
		{"loading\nERROR: no GPU found\ncleanup done\n", "ERROR: no GPU found"},
		{"Traceback (most recent call last):\n  File \"t.py\", line 3\nValueError: lr must be positive\nbye\n", "ValueError: lr must be positive"},
		{"step 1\npanic: runtime error: index out of range\n\ngoroutine 1 [running]:\nmain.main()\n", "panic: runtime error: index out of range"},
		{"fatal error: out of memory\nruntime/mgc.go:1695 +0x105\n", "fatal error: out of memory"},
		{"step 1\nstep 2\nkilled at step 2\n", "killed at step 2"},
		{"\n\n", ""},
	} {
		if got := stderrCause(tc.tail); got != tc.want {
			t.Errorf("stderrCause(%q) = %q, want %q", tc.tail, got, tc.want)
		}
	}
}

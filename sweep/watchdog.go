package sweep

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"
)

// watchdog stops a trial that runs past trial_timeout or says nothing for
// stall_timeout: it calls stop (cancelling the trial's context: SIGTERM,
// then SIGKILL after kill_grace) and keeps the reason, which names the
// limit. The orchestrator's own heartbeat only proves the orchestrator is
// alive; this proves the trial is.
type watchdog struct {
	timeout, stall time.Duration
	start          time.Time
	done           chan struct{}

	mu       sync.Mutex
	last     time.Time // the last protocol message
	lastWhat string
	reason   string // set once a limit is hit
}

func startWatchdog(timeout, stall time.Duration, stop func()) *watchdog {
	now := time.Now()
	w := &watchdog{timeout: timeout, stall: stall, start: now, last: now, lastWhat: "none yet", done: make(chan struct{})}
	limit := timeout
	if limit <= 0 || (stall > 0 && stall < limit) {
		limit = stall
	}
	if limit <= 0 {
		return w
	}
	every := min(max(limit/20, 5*time.Millisecond), time.Second)
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case now := <-tick.C:
				if w.check(now) {
					stop()
					return
				}
			}
		}
	}()
	return w
}

// check records why the trial must stop, if it must.
func (w *watchdog) check(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.timeout > 0 && now.Sub(w.start) > w.timeout:
		w.reason = fmt.Sprintf("trial_timeout %s: still running after %s (last message: %s)",
			shortDuration(w.timeout), shortDuration(now.Sub(w.start).Round(time.Second)), w.lastWhat)
	case w.stall > 0 && now.Sub(w.last) > w.stall:
		w.reason = fmt.Sprintf("stall_timeout %s: no message since %s (last: %s)",
			shortDuration(w.stall), w.last.Format("15:04:05"), w.lastWhat)
	}
	return w.reason != ""
}

// heard notes a protocol message (what describes it for the reason).
func (w *watchdog) heard(what string) {
	w.mu.Lock()
	w.last, w.lastWhat = time.Now(), what
	w.mu.Unlock()
}

// fired returns why the watchdog stopped the trial, or "".
func (w *watchdog) fired() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.reason
}

func (w *watchdog) close() { close(w.done) }

// shortDuration writes 30m rather than time.Duration's 30m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// stderrCause picks the line of a trial's stderr that says why it failed:
// a Go panic's message, else the last line that reads as an error (error,
// fatal, panic, traceback, exception), else the last non-empty line: a
// program that logs "cleanup done" after its error still names the error.
func stderrCause(tail string) string {
	lines := strings.Split(strings.TrimSpace(tail), "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "panic: ") {
			return l
		}
	}
	last := ""
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" {
			continue
		}
		if last == "" {
			last = l
		}
		if errorLine.MatchString(l) {
			return cut(l)
		}
	}
	return cut(last)
}

var errorLine = regexp.MustCompile(`(?i)error|fatal|panic|traceback|exception`)

// cut shortens a fail reason's line to 300 bytes.
func cut(l string) string {
	if len(l) > 300 {
		return l[:300] + "…"
	}
	return l
}

package sweep

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAwakenessNoticesAPause: ticks a second apart are a running process;
// a gap of over 5 s between two is a pause (SIGSTOP, scontrol suspend),
// noted with its end and said once; a storage back from an outage later
// moves the mark.
func TestAwakenessNoticesAPause(t *testing.T) {
	var a awakeness
	ticks := make(chan time.Time)
	var mu sync.Mutex
	var said []string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		a.watch(ctx, ticks, func(format string, args ...any) {
			mu.Lock()
			said = append(said, fmt.Sprintf(format, args...))
			mu.Unlock()
		})
		close(done)
	}()
	t0 := time.Now()
	for i := 1; i <= 3; i++ {
		ticks <- t0.Add(time.Duration(i) * time.Second)
	}
	if !a.backSince(nil).IsZero() {
		t.Fatal("a pause noted without one")
	}
	woke := t0.Add(33 * time.Second)
	ticks <- woke // 30 s without a tick
	ticks <- woke.Add(time.Second)
	cancel()
	<-done
	if got := a.backSince(nil); !got.Equal(woke) {
		t.Errorf("back since %v, want %v", got, woke)
	}
	if len(said) != 1 || !strings.Contains(said[0], "stopped for 30s") {
		t.Errorf("said %q, want one line naming the 30 s pause", said)
	}
	later := woke.Add(time.Minute)
	if got := a.backSince(backAfterOutage{back: later}); !got.Equal(later) {
		t.Errorf("with an outage after the pause: %v, want %v", got, later)
	}
	if got := a.backSince(backAfterOutage{back: t0}); !got.Equal(woke) {
		t.Errorf("with an outage before the pause: %v, want %v", got, woke)
	}
}

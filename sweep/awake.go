package sweep

import (
	"context"
	"sync"
	"time"
)

// awakeness is what a run knows of its own pauses. A heartbeat is judged
// stale only on time during which this process itself was running and
// reached the database: after a SIGSTOP (Slurm's scontrol suspend, a
// hypervisor pause, a laptop's sleep) or a database outage, every other
// process's heartbeat looks old for reasons that are not their death.
type awakeness struct {
	mu     sync.Mutex
	wokeAt time.Time // end of the latest pause noticed; zero: none
}

// pauseTick is how often the run checks that it was not stopped; a gap of
// pauseGap between two ticks is taken for a pause.
const (
	pauseTick = time.Second
	pauseGap  = 5 * time.Second
)

// watch notes each pause until ctx ends, from ticks that come every
// pauseTick while the process runs; log is told of each.
func (a *awakeness) watch(ctx context.Context, ticks <-chan time.Time, logf func(format string, args ...any)) {
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticks:
			// Wall time: the monotonic clock stands still in a machine's sleep.
			if gap := now.Round(0).Sub(last.Round(0)); gap > pauseGap {
				a.mu.Lock()
				a.wokeAt = now
				a.mu.Unlock()
				logf("this process was stopped for %v (suspended?); no trial is taken for dead before a heartbeat grace has passed", gap.Round(time.Second))
			}
			last = now
		}
	}
}

// backSince is the end of the latest stretch in which this process could
// not have seen heartbeats being written: a pause of its own, or an outage
// of its database (storage that reports one). Zero: none.
func (a *awakeness) backSince(s any) time.Time {
	a.mu.Lock()
	since := a.wokeAt
	a.mu.Unlock()
	if o, ok := s.(interface{ BackSince() time.Time }); ok && o.BackSince().After(since) {
		since = o.BackSince()
	}
	return since
}

package storage

import (
	"context"
	"strings"
	"sync"
	"time"
)

// Outages is how a storage rides out a database that goes away for a
// while (a restart, a failover, a maintenance window): how long it keeps
// retrying, and where it says that the database went away and came back.
// The zero value retries a few times over about 3 s and says nothing.
type Outages struct {
	// RetryFor is how long a transaction that lost its connection is
	// retried, with back-off capped at 5 s, before its error is returned;
	// opening the database is retried as long.
	RetryFor time.Duration
	// Logf, if set, is told once when the database stops answering and
	// once when it answers again.
	Logf func(format string, args ...any)
}

// maxBackoff caps the wait between two tries of a transaction.
const maxBackoff = 5 * time.Second

// outageState is what a DB knows of its connection's history.
type outageState struct {
	mu        sync.Mutex
	downSince time.Time // zero: up
	lastSaid  time.Time // when the outage was last said
	backAt    time.Time // when it last came back after an outage; zero: never went away
}

// remindEvery is how often a long outage is said again.
const remindEvery = time.Minute

// RideOutages sets how the storage rides out outages from now on.
func (s *DB) RideOutages(o Outages) { s.outages = o }

// BackSince is when this process last reached the database again after
// losing it (zero: it never lost it). Until a heartbeat grace has passed
// since, heartbeats it finds stale may be stale only because their owners
// could not reach the database either.
func (s *DB) BackSince() time.Time {
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	return s.out.backAt
}

// wentAway notes a failed try and returns when the outage began; its
// first is said, and every minute after.
func (s *DB) wentAway(err error) time.Time {
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	now := time.Now()
	if s.out.downSince.IsZero() {
		s.out.downSince, s.out.lastSaid = now, now
		if s.outages.Logf != nil {
			s.outages.Logf("the database %s does not answer (%s); retrying for up to %v (storage_retry)", s.path, oneLine(RedactText(err.Error())), s.outages.RetryFor)
		}
	} else if now.Sub(s.out.lastSaid) >= remindEvery {
		s.out.lastSaid = now
		if s.outages.Logf != nil {
			s.outages.Logf("the database %s has not answered for %v; retrying until %v have passed", s.path, now.Sub(s.out.downSince).Round(time.Second), s.outages.RetryFor)
		}
	}
	return s.out.downSince
}

// oneLine puts a driver's error on one line: pgx lists each address it
// tried on a line of its own, often the same error twice.
func oneLine(msg string) string {
	var parts []string
	seen := map[string]bool{}
	for _, line := range strings.Split(msg, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !seen[line] {
			seen[line] = true
			parts = append(parts, line)
		}
	}
	return strings.Join(parts, " ")
}

// answered notes a successful try; the first after an outage is logged.
func (s *DB) answered() {
	s.out.mu.Lock()
	defer s.out.mu.Unlock()
	if s.out.downSince.IsZero() {
		return
	}
	now := time.Now()
	if s.outages.Logf != nil {
		s.outages.Logf("the database %s answers again, after %v", s.path, now.Sub(s.out.downSince).Round(time.Second))
	}
	s.out.downSince, s.out.backAt = time.Time{}, now
}

// retrying runs try until it succeeds, fails for good (retryable says
// no), ctx ends or the outage has lasted RetryFor (without a window: 6
// tries over about 3 s).
func (s *DB) retrying(ctx context.Context, try func() error) error {
	var first time.Time
	for attempt := 0; ; attempt++ {
		err := try()
		if err == nil {
			// Also on a first try: after an outage longer than the window,
			// no call is left retrying to see the database come back.
			s.answered()
			return nil
		}
		if !s.d.retryable(err) || ctx.Err() != nil {
			return err
		}
		if first.IsZero() {
			first = time.Now()
		}
		window := s.outages.RetryFor
		if window > 0 && !s.d.conflict(err) {
			// The window is the outage's, not this write's: every write
			// waiting on it gives up together.
			first = s.wentAway(err)
		}
		if window <= 0 && attempt == 5 || window > 0 && time.Since(first) >= window {
			return err
		}
		wait := min(time.Duration(100<<min(attempt, 6))*time.Millisecond, maxBackoff)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		}
	}
}

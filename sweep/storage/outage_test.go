package storage

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/readsweep/readsweep/sweep/storage/pgtest"
)

// TestRideOutAServerRestart: a PostgreSQL server that goes away for a few
// seconds (a crash, a failover) costs a sweep nothing. A write made in the
// outage waits for the server and lands; the outage is said once when it
// starts and once when it ends; a process opening the database in the
// outage waits for it; and right after the restart no heartbeat is judged
// stale, since none could be written while the server was down. Without a
// window, the old rule stands: a few seconds of tries, then the error.
func TestRideOutAServerRestart(t *testing.T) {
	srv := pgtest.Own(t)
	var mu sync.Mutex
	var said []string
	o := Outages{RetryFor: time.Minute, Logf: func(format string, args ...any) {
		mu.Lock()
		said = append(said, fmt.Sprintf(format, args...))
		mu.Unlock()
	}}
	db, err := OpenRidingOutages(srv.URL, o)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	plain, err := Open(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	ctx := context.Background()
	st, err := db.CreateStudy(ctx, "s", Maximize, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := db.CreateTrial(ctx, st.ID, TrialOptions{State: Running, Heartbeat: true})
	if err != nil {
		t.Fatal(err)
	}

	// Its heartbeat is a minute old when the server goes away.
	if _, err := db.db.Exec(`UPDATE trial_heartbeats SET heartbeat = LOCALTIMESTAMP - interval '60 seconds'`); err != nil {
		t.Fatal(err)
	}
	const down = 3 * time.Second
	srv.Stop()
	restarted := make(chan error, 1)
	go func() {
		time.Sleep(down)
		restarted <- srv.Start()
	}()
	plainErr := make(chan error, 1)
	go func() { plainErr <- plain.UpdateTrial(ctx, tr.ID, TrialUpdate{Heartbeat: true}) }()
	start := time.Now()
	if err := db.UpdateTrial(ctx, tr.ID, TrialUpdate{Intermediate: map[int]float64{0: 0.5}}); err != nil {
		t.Fatalf("a write in a %v outage: %v", down, err)
	}
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	if err := <-plainErr; err == nil {
		t.Error("without a window, a write in an outage succeeded")
	}
	if took := time.Since(start); took < down/2 {
		t.Errorf("the write took %v: it did not wait for the server", took)
	}
	if db.BackSince().IsZero() {
		t.Error("BackSince is zero after an outage")
	}
	mu.Lock()
	if len(said) != 2 || !strings.Contains(said[0], "does not answer") || !strings.Contains(said[1], "answers again") {
		t.Errorf("said %q, want one line as the database went away and one as it came back", said)
	}
	for _, line := range said {
		if strings.Contains(line, pgPassword(t, srv.URL)) {
			t.Errorf("a line shows the password: %q", line)
		}
	}
	mu.Unlock()

	// The heartbeat is over a grace old, but the server has not been up
	// for a grace (the write above lands within one back-off, under 5 s,
	// of the restart).
	const grace = 6 * time.Second
	if stale, err := db.FailStaleTrials(ctx, st.ID, grace); err != nil || len(stale) != 0 {
		t.Errorf("right after the restart: %d trial(s) failed (%v), want none", len(stale), err)
	}
	time.Sleep(grace)
	if stale, err := db.FailStaleTrials(ctx, st.ID, grace); err != nil || len(stale) != 1 {
		t.Errorf("a grace after the restart: %d trial(s) failed (%v), want the one", len(stale), err)
	}

	// Opening in an outage waits for the server.
	srv.Stop()
	go func() {
		time.Sleep(down)
		restarted <- srv.Start()
	}()
	late, err := OpenRidingOutages(srv.URL, o)
	if err != nil {
		t.Fatalf("opened in an outage: %v", err)
	}
	late.Close()
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}

	// The window is the outage's: once it has passed, every write waiting
	// on it gives up, and a later one at once, not after a window of its
	// own.
	short, err := OpenRidingOutages(srv.URL, Outages{RetryFor: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer short.Close()
	srv.Stop()
	start = time.Now()
	if err := short.UpdateTrial(ctx, tr.ID, TrialUpdate{Heartbeat: true}); err == nil {
		t.Fatal("a write succeeded with the server down")
	}
	first := time.Since(start)
	start = time.Now()
	short.UpdateTrial(ctx, tr.ID, TrialUpdate{Heartbeat: true})
	if again := time.Since(start); first < 2*time.Second || again > time.Second {
		t.Errorf("the first write gave up after %v (window 2s), the next after %v more: want at once", first, again)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := short.CreateTrial(ctx, st.ID, TrialOptions{State: Running}); err != nil {
		t.Errorf("after the server came back: %v", err)
	}
	// Seen back though no call was left retrying: the next outage gets a
	// window of its own, and the reaper its grace.
	if short.BackSince().IsZero() {
		t.Error("the database was not seen back after an outage longer than the window")
	}
}

// pgPassword is the password in a PostgreSQL URL.
func pgPassword(t *testing.T, url string) string {
	_, rest, _ := strings.Cut(url, "://")
	userinfo, _, _ := strings.Cut(rest, "@")
	_, pw, ok := strings.Cut(userinfo, ":")
	if !ok || pw == "" {
		t.Fatalf("no password in the server's URL")
	}
	return pw
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/readsweep/readsweep/dashboard"
	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
)

// cmdDashboard serves the read-only web dashboard of a study database.
func cmdDashboard(args []string) error {
	fs := newFlags("dashboard", "dashboard [--addr 127.0.0.1:8080] [--config sweeps.yaml] [STORAGE]")
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on (127.0.0.1: this machine only)")
	cfgFile := fs.String("config", "", "sweep file: budgets, ETAs and trial logs; its storage unless STORAGE is given")
	poll := fs.Duration("poll", time.Second, "how often open pages check the database for changes")
	allow := fs.String("allow-host", "", "further names requests may address the dashboard by, comma-separated (a reverse proxy's); "+
		"others are refused (DNS rebinding)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return fmt.Errorf("%w: one STORAGE at most, got %d arguments (%v)", errUsage, len(pos), pos)
	}
	var cfg *sweep.Config
	if *cfgFile != "" {
		if cfg, err = sweep.LoadConfig(*cfgFile); err != nil {
			return err
		}
	}
	url := ""
	switch {
	case len(pos) == 1:
		url = pos[0]
	case cfg != nil:
		url = configStorage(cfg)
	case os.Getenv("SWEEP_STORAGE") != "":
		url = os.Getenv("SWEEP_STORAGE")
	default:
		url = "sqlite:///sweeps.db"
	}
	file, isFile, err := storage.SQLiteFile(url)
	if err != nil {
		return err
	}
	if !isFile {
		file = ""
	}
	// A SQLite file that `sweep run` has not created yet is waited for:
	// the pages say so until it appears, then show it.
	var store *storage.DB
	if _, err := os.Stat(file); file == "" || err == nil {
		if store, err = openForReading(url); err != nil {
			return err
		}
	}
	var opened atomic.Pointer[storage.DB] // the store, once there is one
	opened.Store(store)
	defer func() {
		if db := opened.Load(); db != nil {
			db.Close()
		}
	}()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("dashboard: %w", err)
	}
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); !net.ParseIP(host).IsLoopback() {
		fmt.Fprintf(os.Stderr, "sweep: the dashboard listens on %s: anyone who reaches this machine can read the studies\n", ln.Addr())
	}
	var allowHosts []string
	for _, h := range strings.Split(*allow, ",") {
		if h = strings.TrimSpace(h); h != "" {
			allowHosts = append(allowHosts, h)
		}
	}
	label := file
	if store != nil {
		label = store.Path()
	}
	opt := dashboard.Options{Config: cfg, Label: label, Poll: *poll, Addr: *addr, Listen: ln.Addr().String(), AllowHosts: allowHosts, File: file,
		Waiting: fmt.Sprintf("waiting for %s: no database there yet (`sweep run` creates it); this page shows it once it appears", file)}
	var current atomic.Pointer[dashboard.Server]
	current.Store(dashboard.New(store, opt))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if store == nil {
		waiting := opt
		fmt.Fprintf(os.Stderr, "sweep: %s\n", opt.Waiting)
		go func() {
			for ctx.Err() == nil {
				time.Sleep(*poll)
				st, err := os.Stat(file)
				if err != nil || st.Size() == 0 {
					continue // not there, or not yet written
				}
				db, err := openForReading(url)
				if st.IsDir() || err != nil {
					// Being created (a moment later it opens), or not a
					// database: say which, and go on waiting.
					why := fmt.Sprintf("%s is there but does not open as a database (%v); waiting for it to be one", file, err)
					if st.IsDir() {
						why = fmt.Sprintf("%s is a folder, not a database file; waiting for a database there", file)
					}
					if why != waiting.Waiting {
						fmt.Fprintf(os.Stderr, "sweep: %s\n", why)
						waiting.Waiting = why
						current.Store(dashboard.New(nil, waiting))
					}
					continue
				}
				opened.Store(db)
				current.Store(dashboard.New(db, opt))
				fmt.Fprintf(os.Stderr, "sweep: %s appeared; showing it\n", file)
				return
			}
		}()
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { current.Load().ServeHTTP(w, r) }),
		ReadHeaderTimeout: 10 * time.Second}
	// The URL on stdout is for scripts (and the tests) to read.
	fmt.Printf("http://%s/\n", ln.Addr())
	fmt.Fprintf(os.Stderr, "sweep: dashboard of %s (read-only); Ctrl-C stops it\n", opt.Label)
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("dashboard: %w", err)
	}
	return nil
}

// benchDashboard fills a database the size of the paper's grid (7 methods
// × 17 candidates × 7 datasets × 32 trials, about 27,000 trials with epoch
// values and attributes) and times every page's data, cold (first load
// after a change) and warm.
func benchDashboard(args []string) error {
	fs := newFlags("bench dashboard", "bench dashboard [--trials 32] [--archs 17] [--dir DIR] | bench dashboard --db FILE")
	trials := fs.Int("trials", 32, "trials per study")
	archs := fs.Int("archs", 17, "architecture candidates per method (7 methods, 7 datasets)")
	dir := fs.String("dir", "", "where to write the database (default: a temporary folder, removed after)")
	dbFile := fs.String("db", "", "time the pages of this existing SQLite database instead of generating one")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *trials < 1 || *archs < 1 {
		fs.Usage()
		return errUsage
	}
	path := *dbFile
	if path == "" {
		if *dir == "" {
			d, err := os.MkdirTemp("", "readsweep-bench-dashboard-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(d)
			*dir = d
		}
		path = filepath.Join(*dir, "bench.db")
		t0 := time.Now()
		n, err := fillBenchDatabase(path, *archs, *trials)
		if err != nil {
			return err
		}
		fmt.Printf("generated %d studies, %d trials in %.1f s (%s)\n", n.studies, n.trials, time.Since(t0).Seconds(), path)
	}
	store, err := openForReading(path)
	if err != nil {
		return err
	}
	defer store.Close()
	studies, trialsByStudy, err := store.Snapshot(context.Background())
	if err != nil {
		return err
	}
	total := 0
	for _, ts := range trialsByStudy {
		total += len(ts)
	}
	fmt.Printf("%d studies, %d trials\n", len(studies), total)
	study, number := "", 0
	for _, st := range studies {
		if ts := trialsByStudy[st.ID]; len(ts) > 0 {
			study, number = st.Name, ts[len(ts)-1].Number
			break
		}
	}
	if study == "" {
		return fmt.Errorf("%s has no trials to time", path)
	}
	get := func(srv *httptest.Server, p string) (time.Duration, error) {
		s := time.Now()
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%s: %s", p, resp.Status)
		}
		return time.Since(s), nil
	}
	q := neturl.QueryEscape(study)
	pages := []struct{ name, path string }{
		{"page (HTML+JS)", "/"}, {"overview", "/api/overview"}, {"live", "/api/live"},
		{"study", "/api/study?name=" + q}, {"trial", "/api/trial?study=" + q + "&number=" + strconv.Itoa(number)},
		{"selection (D.2, all methods)", "/api/selection"},
	}
	fmt.Printf("%-30s %12s %12s   (target < 1 s each; 2 cores)\n", "page", "first", "then")
	for _, p := range pages {
		// A new server has no snapshot: its first request reads the whole
		// database, as the first request after a trial is written does.
		srv := httptest.NewServer(dashboard.New(store, dashboard.Options{Label: path}))
		cold, err := get(srv, p.path)
		if err != nil {
			srv.Close()
			return err
		}
		var warm []time.Duration
		for range 5 {
			d, err := get(srv, p.path)
			if err != nil {
				srv.Close()
				return err
			}
			warm = append(warm, d)
		}
		srv.Close()
		sort.Slice(warm, func(a, b int) bool { return warm[a] < warm[b] })
		fmt.Printf("%-30s %10.0f ms %10.0f ms\n", p.name, ms(cold), ms(warm[len(warm)/2]))
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type benchCounts struct{ studies, trials int }

// fillBenchDatabase writes the paper-sized grid of finished trials through
// the storage API, as sweeps write them.
func fillBenchDatabase(path string, archs, trials int) (benchCounts, error) {
	var n benchCounts
	store, err := storage.OpenSQLite(path)
	if err != nil {
		return n, err
	}
	defer store.Close()
	ctx := context.Background()
	methods := []string{"full", "bitfit", "lora", "adapter", "prompt", "lst", "read"}
	datasets := []string{"cola", "mnli", "qnli", "mrpc", "qqp", "sst2", "stsb"}
	rng := rand.New(rand.NewPCG(1, 2))
	lrDist := storage.Float(1e-6, 3e-3, true)
	for a := range archs * len(methods) {
		method := methods[a%len(methods)]
		arch := fmt.Sprintf("arch-%d", a/len(methods))
		for _, ds := range datasets {
			name := method + "/" + arch + "/" + ds
			st, err := store.CreateStudy(ctx, name, storage.Maximize, map[string]any{"method": method, "arch": arch, "dataset": ds})
			if err != nil {
				return n, err
			}
			n.studies++
			for range trials {
				lr := 1e-6 * math.Pow(3000, rng.Float64())
				t, err := store.CreateTrial(ctx, st.ID, storage.TrialOptions{Params: map[string]float64{"lr": lr},
					Distributions: map[string]storage.Distribution{"lr": lrDist}})
				if err != nil {
					return n, err
				}
				inter := map[int]float64{}
				v := 0.0
				for e := range 10 {
					v = 100 * (1 - 1/(1+float64(e)+rng.Float64()*3))
					inter[e] = v
				}
				state := storage.Complete
				if err := store.UpdateTrial(ctx, t.ID, storage.TrialUpdate{State: &state, Value: &v, Intermediate: inter,
					UserAttrs: map[string]any{"test": v - 1, "trainable_params": 1972224, "peak_rss_bytes": 4.1e8, "energy_joules": 1234.5,
						"train_seconds": 312.4, "eval_seconds": 40.1, "best_epoch": 7, "epochs": 10}}); err != nil {
					return n, err
				}
				n.trials++
			}
		}
	}
	return n, nil
}

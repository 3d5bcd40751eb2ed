// Package dashboard serves `sweep dashboard`: a read-only web view of a
// study database (SQLite or PostgreSQL, ours or Optuna's) that follows a
// running sweep live. The overview and the selection come from an
// in-memory summary of every trial (states, values, parameters), reloaded
// when a cheap change token moves; the summary answers storage.Storage's
// reads, so the Appendix D.2 selection and the Table 1 preview are computed
// by sweep.Best and results.Collect, the code `sweep best` and `sweep
// table` run. A study's, a trial's and the running trials' pages read
// those trials in full. Open pages poll the change token and redraw when it
// moves.
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/readsweep/readsweep/glue"
	"github.com/readsweep/readsweep/results"
	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
)

//go:embed static
var static embed.FS

// Options configure a Server.
type Options struct {
	// Config, when given, supplies budgets, parallelism, max_epochs and the
	// trials' output folders (for their logs); without it those stay blank.
	Config *sweep.Config
	// Label is the storage as pages show it (never with a password).
	Label string
	// Poll is how often an open page asks for the change token (default 1 s).
	Poll time.Duration
	// Addr is the address the server was asked to listen on (--addr, as
	// typed) and Listen the one it listens on: their hosts, with the
	// loopback names, are what a request's Host header may name (DNS
	// rebinding: a page of any site whose name is made to resolve to
	// 127.0.0.1 would otherwise read the studies). An unspecified host
	// (0.0.0.0, ::) admits this machine's names and addresses too.
	Addr, Listen string
	// AllowHosts are further names the Host header may carry (a reverse
	// proxy's).
	AllowHosts []string
	// Waiting, when the server has no store yet, is what every data
	// request answers (503) meanwhile: the database is not there yet.
	Waiting string
	// File is the SQLite database's file ("" for a server): the dashboard
	// notices it deleted, replaced or overwritten, and says so instead of
	// showing what it read before.
	File string
}

// Server is the dashboard's HTTP handler.
type Server struct {
	store *storage.DB
	opt   Options
	mux   *http.ServeMux

	hosts map[string]bool // what the Host header may name
	file  *fileWatch

	mu   sync.Mutex
	snap *snapshot
}

// New returns the dashboard over store, which should be opened with
// storage.OpenReadOnly: the server only reads.
func New(store *storage.DB, opt Options) *Server {
	if opt.Poll <= 0 {
		opt.Poll = time.Second
	}
	s := &Server{store: store, opt: opt, mux: http.NewServeMux(), hosts: allowedHosts(opt.AllowHosts, opt.Addr, opt.Listen)}
	if opt.File != "" && store != nil {
		s.file = watchFile(opt.File)
	}
	files, _ := fs.Sub(static, "static")
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(files)))
	s.mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		page, _ := static.ReadFile("static/index.html")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
	s.mux.HandleFunc("GET /api/overview", s.jsonHandler(s.overview))
	s.mux.HandleFunc("GET /api/live", s.jsonHandler(s.live))
	s.mux.HandleFunc("GET /api/study", s.jsonHandler(s.study))
	s.mux.HandleFunc("GET /api/trial", s.jsonHandler(s.trial))
	s.mux.HandleFunc("GET /api/selection", s.jsonHandler(s.selection))
	s.mux.HandleFunc("GET /figure/{name}", s.figure)
	s.mux.HandleFunc("GET /api/token", s.token)
	return s
}

// ServeHTTP serves GET and HEAD only: nothing here changes the storage.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'")
	w.Header().Set("Referrer-Policy", "no-referrer")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "the dashboard is read-only", http.StatusMethodNotAllowed)
		return
	}
	if host := hostOf(r.Host); !s.hosts[host] {
		http.Error(w, fmt.Sprintf("dashboard: Host %q is not a name of this server, and a page of another site may be using it to read the studies (DNS rebinding); "+
			"`sweep dashboard --allow-host %s` admits it", r.Host, host), http.StatusForbidden)
		return
	}
	if s.store == nil && (strings.HasPrefix(r.URL.Path, "/api/") || strings.HasPrefix(r.URL.Path, "/figure/")) {
		http.Error(w, s.opt.Waiting, http.StatusServiceUnavailable)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// hostOf is a Host header's name, without its port, in lower case.
func hostOf(hostport string) string {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	return strings.ToLower(strings.Trim(host, "[]"))
}

// allowedHosts are the names a request may be addressed to: the loopback
// names, extra, the hosts of addrs (or, for one that listens on every
// interface, this machine's name and addresses as well).
func allowedHosts(extra []string, addrs ...string) map[string]bool {
	hosts := map[string]bool{"localhost": true, "127.0.0.1": true, "::1": true}
	for _, h := range extra {
		hosts[hostOf(h)] = true
	}
	everywhere := false
	for _, addr := range addrs {
		host := hostOf(addr)
		if host != "" {
			hosts[host] = true // the URL printed, even [::] or 0.0.0.0, is one a user will open
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			everywhere = true
		}
	}
	if !everywhere {
		return hosts
	}
	if name, err := os.Hostname(); err == nil {
		hosts[strings.ToLower(name)] = true
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				hosts[ipn.IP.String()] = true
			}
		}
	}
	return hosts
}

// httpError is an error with the status it answers.
type httpError struct {
	status int
	msg    string
}

func (e httpError) Error() string { return e.msg }

func (s *Server) jsonHandler(fn func(ctx context.Context, r *http.Request, snap *snapshot) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		snap, err := s.current(r.Context())
		var v any
		if err == nil {
			v, err = fn(r.Context(), r, snap)
		}
		var body []byte
		if err == nil {
			// Encoded whole before the status goes out: a value JSON cannot
			// hold is a 500 that says so, not a 200 with an empty body.
			if body, err = json.Marshal(v); err != nil {
				err = fmt.Errorf("dashboard: %s: %w", r.URL.Path, err)
			}
		}
		if err != nil {
			status := http.StatusInternalServerError
			if errors.Is(err, errFileChanged) {
				status = http.StatusServiceUnavailable
			}
			var he httpError
			if errors.As(err, &he) {
				status = he.status
			}
			http.Error(w, err.Error(), status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(append(body, '\n'))
	}
}

// snapshot is the database as last read. It serves the read half of
// storage.Storage, so sweep.Best and results.Collect run on it.
type snapshot struct {
	token   string
	store   *storage.DB
	studies []storage.Study
	trials  map[int64][]storage.FrozenTrial // without intermediate values and attributes
	byName  map[string]storage.Study
	final   map[int64]bool // final-run studies, whose trials Trials reads in full

	fullMu  sync.Mutex
	full    map[int64][]storage.FrozenTrial // final studies in full, read when asked
	reasons map[int64]string                // a study's latest fail_reason, read when asked

	// Table 1's rows and Figure 1's SVGs, computed once per snapshot.
	resultsOnce sync.Once
	rows        []results.Row
	datasets    []string
	figures     map[string][]byte
	resultsErr  error
}

var errReadOnly = errors.New("dashboard: read-only")

func (p *snapshot) Studies(context.Context) ([]storage.Study, error) { return p.studies, nil }

// Trials is the summary of a sweep study's trials (states, values,
// parameters: what sweep.Best reads), and a final study's trials in full
// (results.Collect reads their attributes; there are few).
func (p *snapshot) Trials(ctx context.Context, id int64) ([]storage.FrozenTrial, error) {
	if !p.final[id] {
		return p.trials[id], nil
	}
	p.fullMu.Lock()
	defer p.fullMu.Unlock()
	if t, ok := p.full[id]; ok {
		return t, nil
	}
	t, err := p.store.Trials(ctx, id)
	if err != nil {
		return nil, err
	}
	p.full[id] = t
	return t, nil
}

// failReason is the fail_reason of a study's latest failed trial (the
// summary holds no attributes: the study's trials are read, once per
// snapshot).
func (p *snapshot) failReason(ctx context.Context, id int64) (string, error) {
	p.fullMu.Lock()
	defer p.fullMu.Unlock()
	if r, ok := p.reasons[id]; ok {
		return r, nil
	}
	trials, err := p.store.Trials(ctx, id)
	if err != nil {
		return "", err
	}
	reason := ""
	for _, t := range trials {
		if r, ok := t.UserAttrs["fail_reason"].(string); ok && t.State == storage.Fail {
			reason = r
		}
	}
	p.reasons[id] = shortReason(reason)
	return p.reasons[id], nil
}

// shortReason is a fail reason's first line, cut for a table.
func shortReason(r string) string {
	r, _, _ = strings.Cut(strings.TrimSpace(r), "\n")
	if len(r) > 300 {
		r = strings.ToValidUTF8(r[:300], "") + "…"
	}
	return r
}

func (p *snapshot) CreateStudy(context.Context, string, storage.Direction, map[string]any) (storage.Study, error) {
	return storage.Study{}, errReadOnly
}
func (p *snapshot) CreateTrial(context.Context, int64, storage.TrialOptions) (storage.FrozenTrial, error) {
	return storage.FrozenTrial{}, errReadOnly
}
func (p *snapshot) UpdateTrial(context.Context, int64, storage.TrialUpdate) error { return errReadOnly }
func (p *snapshot) FailStaleTrials(context.Context, int64, time.Duration) ([]storage.FrozenTrial, error) {
	return nil, errReadOnly
}
func (p *snapshot) Close() error { return nil }

var _ storage.Storage = (*snapshot)(nil)

// current returns the snapshot, reloading it when the change token moved.
func (s *Server) current(ctx context.Context) (*snapshot, error) {
	if err := s.file.check(); err != nil {
		return nil, err
	}
	token, err := s.store.ChangeToken(ctx)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap != nil && s.snap.token == token {
		return s.snap, nil
	}
	studies, trials, err := s.store.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	snap := &snapshot{token: token, store: s.store, studies: studies, trials: trials, byName: map[string]storage.Study{},
		final: map[int64]bool{}, full: map[int64][]storage.FrozenTrial{}, reasons: map[int64]string{}}
	for _, st := range studies {
		snap.byName[st.Name] = st
		snap.final[st.ID] = sweep.Identify(st).Final
	}
	s.snap = snap
	return snap, nil
}

// ---- overview ----------------------------------------------------------

type counts struct {
	Complete int `json:"complete"`
	Running  int `json:"running"`
	Fail     int `json:"fail"`
	Pruned   int `json:"pruned"`
	Waiting  int `json:"waiting"`
}

func countsOf(trials []storage.FrozenTrial) counts {
	n := storage.Count(trials)
	return counts{Complete: n[storage.Complete], Running: n[storage.Running], Fail: n[storage.Fail],
		Pruned: n[storage.Pruned], Waiting: n[storage.Waiting]}
}

func (c *counts) plus(o counts) {
	c.Complete, c.Running, c.Fail, c.Pruned, c.Waiting = c.Complete+o.Complete, c.Running+o.Running, c.Fail+o.Fail,
		c.Pruned+o.Pruned, c.Waiting+o.Waiting
}

type studyRow struct {
	Name       string   `json:"name"`
	Method     string   `json:"method"`
	Arch       string   `json:"arch"`
	Dataset    string   `json:"dataset"`
	Final      bool     `json:"final"`
	Budget     int      `json:"budget"` // 0: unknown (no config)
	Best       any      `json:"best"`   // a number, "Infinity", "-Infinity" or "NaN"; null: none
	BestLR     *float64 `json:"best_lr"`
	Seconds    float64  `json:"seconds"`     // summed over finished trials
	ETASeconds *float64 `json:"eta_seconds"` // remaining budget × mean trial time; none while nothing runs
	// Stopped: below its budget with nothing running or waiting (the run
	// gave up on it at max_failures, or was stopped).
	Stopped bool   `json:"stopped"`
	Metric  string `json:"metric"` // what its values are
	// FailReason is its latest failed trial's fail_reason.
	FailReason string `json:"fail_reason,omitempty"`
	counts
}

// metricNames say what a task's values are.
var metricNames = map[glue.Metric]string{glue.MetricAccuracy: "accuracy", glue.MetricMCC: "Matthews correlation",
	glue.MetricF1Accuracy: "mean of F1 and accuracy", glue.MetricPearsonSpearman: "mean of Pearson and Spearman"}

// metricOf is what a study's values are: its task's metric, or
// "value" for a study of no known task.
func metricOf(info sweep.StudyInfo) string {
	if task, err := glue.Lookup(info.Dataset); err == nil {
		return metricNames[task.Metric]
	}
	return "value"
}

type overview struct {
	Storage   string     `json:"storage"`
	Generated string     `json:"generated"`
	Parallel  int        `json:"parallel"`
	Totals    studyRow   `json:"totals"`
	Studies   []studyRow `json:"studies"`
}

// number is v for JSON, which has no NaN or ±Inf: those as the strings
// JavaScript's Number() reads back ("NaN", "Infinity", "-Infinity"), so a
// trial that scored +inf shows as such, not as "no value".
func number(v float64) any {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "Infinity"
	case math.IsInf(v, -1):
		return "-Infinity"
	}
	return v
}

// finite drops NaN and ±Inf (for parameters, which are never either).
func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func (s *Server) budget(info sweep.StudyInfo) int {
	if s.opt.Config == nil {
		return 0
	}
	if info.Final {
		return len(s.opt.Config.Seeds())
	}
	return s.opt.Config.Trials
}

func trialSeconds(t storage.FrozenTrial) float64 {
	if t.Start.IsZero() || t.Complete.IsZero() {
		return 0
	}
	return t.Complete.Sub(t.Start).Seconds()
}

func (s *Server) overview(ctx context.Context, _ *http.Request, snap *snapshot) (any, error) {
	out := overview{Storage: s.opt.Label, Generated: time.Now().UTC().Format(time.RFC3339), Parallel: 1, Studies: []studyRow{}}
	if s.opt.Config != nil {
		out.Parallel = s.opt.Config.Parallel
	}
	var allSeconds float64
	var allFinished int
	for _, st := range snap.studies {
		info := sweep.Identify(st)
		row := studyRow{Name: st.Name, Method: info.Method, Arch: info.Arch, Dataset: info.Dataset, Final: info.Final, Budget: s.budget(info), Metric: metricOf(info)}
		trials := snap.trials[st.ID]
		row.counts = countsOf(trials)
		finished := 0
		for _, t := range trials {
			if sec := trialSeconds(t); sec > 0 && t.State.IsFinished() {
				row.Seconds += sec
				finished++
			}
		}
		if b, ok := storage.BestTrial(trials, st.Direction); ok && b.Value != nil {
			row.Best = number(*b.Value)
			if lr, ok := b.Params["lr"]; ok {
				row.BestLR = finite(lr)
			}
		}
		allSeconds += row.Seconds
		allFinished += finished
		left := row.Budget - row.Complete - row.Pruned
		if row.Budget > 0 && finished > 0 && row.Running > 0 {
			eta := float64(max(0, left)) * row.Seconds / float64(finished)
			row.ETASeconds = &eta
		}
		row.Stopped = row.Budget > 0 && left > 0 && row.Running == 0 && row.Waiting == 0 && len(trials) > 0
		if row.Fail > 0 {
			reason, err := snap.failReason(ctx, st.ID)
			if err != nil {
				return nil, err
			}
			row.FailReason = reason
		}
		out.Studies = append(out.Studies, row)
		out.Totals.counts.plus(row.counts)
		out.Totals.Budget += row.Budget
		out.Totals.Seconds += row.Seconds
	}
	if out.Totals.Budget > 0 && allFinished > 0 && out.Totals.Running > 0 {
		// Studies without a finished trial yet take the sweep's mean.
		mean := allSeconds / float64(allFinished)
		var eta float64
		for _, r := range out.Studies {
			eta += float64(max(0, r.Budget-r.Complete-r.Pruned)) * mean
		}
		eta /= float64(max(1, out.Parallel))
		out.Totals.ETASeconds = &eta
	}
	sort.SliceStable(out.Studies, func(a, b int) bool {
		x, y := out.Studies[a], out.Studies[b]
		if x.Final != y.Final {
			return !x.Final
		}
		if x.Method != y.Method {
			return x.Method < y.Method
		}
		if x.Arch != y.Arch {
			return x.Arch < y.Arch
		}
		return x.Dataset < y.Dataset
	})
	return out, nil
}

// ---- trials ------------------------------------------------------------

type trialJSON struct {
	Number int    `json:"number"`
	State  string `json:"state"`
	Value  any    `json:"value"` // number(), or null

	Params       map[string]any                  `json:"params"`
	Distribution map[string]storage.Distribution `json:"distributions,omitempty"`
	Intermediate [][2]any                        `json:"intermediate"` // [step, number()]
	Start        string                          `json:"start,omitempty"`
	Complete     string                          `json:"complete,omitempty"`
	Seconds      float64                         `json:"seconds"`
	FailReason   string                          `json:"fail_reason,omitempty"`
	UserAttrs    map[string]any                  `json:"user_attrs,omitempty"`
	SystemAttrs  map[string]any                  `json:"system_attrs,omitempty"`
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// maxAttrString is the most of one attribute string a page is sent: a
// trial may store megabytes (a log), which no page can show.
const maxAttrString = 8 << 10

// cleanJSON replaces values JSON cannot carry (NaN, ±Inf, anywhere in
// nested attributes) with their names as strings, and cuts long strings.
func cleanJSON(v any) any {
	switch x := v.(type) {
	case string:
		if len(x) > maxAttrString {
			return strings.ToValidUTF8(x[:maxAttrString], "") + fmt.Sprintf("… (%d bytes more, cut by the dashboard)", len(x)-maxAttrString)
		}
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = cleanJSON(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cleanJSON(e)
		}
		return out
	}
	return v
}

func toTrialJSON(t storage.FrozenTrial, attrs bool) trialJSON {
	j := trialJSON{Number: t.Number, State: t.State.String(), Params: map[string]any{}, Intermediate: [][2]any{},
		Start: stamp(t.Start), Complete: stamp(t.Complete), Seconds: trialSeconds(t)}
	if t.State == storage.Running && !t.Start.IsZero() {
		j.Seconds = time.Since(t.Start).Seconds()
	}
	if t.Value != nil {
		j.Value = number(*t.Value)
	}
	if r, ok := t.UserAttrs["fail_reason"].(string); ok && t.State == storage.Fail {
		j.FailReason = shortReason(r)
	}
	for k, v := range t.ExternalParams() { // a categorical by its choice, not its index
		j.Params[k] = cleanJSON(v)
	}
	for _, st := range t.Steps() {
		j.Intermediate = append(j.Intermediate, [2]any{st, number(t.Intermediate[st])})
	}
	if attrs {
		j.UserAttrs = cleanJSON(t.UserAttrs).(map[string]any)
		j.SystemAttrs = cleanJSON(t.SystemAttrs).(map[string]any)
		j.Distribution = map[string]storage.Distribution{}
		for name, d := range t.Distributions {
			if d.Choices != nil { // a NaN choice (Optuna writes one) has no JSON: its text instead
				d.Choices = cleanJSON(d.Choices).([]any)
			}
			j.Distribution[name] = d
		}
	}
	return j
}

func (s *Server) findStudy(snap *snapshot, name string) (storage.Study, error) {
	st, ok := snap.byName[name]
	if !ok {
		return st, httpError{http.StatusNotFound, fmt.Sprintf("no study named %q", name)}
	}
	return st, nil
}

func (s *Server) study(ctx context.Context, r *http.Request, snap *snapshot) (any, error) {
	st, err := s.findStudy(snap, r.URL.Query().Get("name"))
	if err != nil {
		return nil, err
	}
	info := sweep.Identify(st)
	full, err := s.store.Trials(ctx, st.ID)
	if err != nil {
		return nil, err
	}
	trials := []trialJSON{}
	for _, t := range full {
		trials = append(trials, toTrialJSON(t, false))
	}
	return map[string]any{"name": st.Name, "method": info.Method, "arch": info.Arch, "dataset": info.Dataset,
		"direction": st.Direction.String(), "budget": s.budget(info), "user_attrs": cleanJSON(st.UserAttrs), "metric": metricOf(info),
		"report_unit": info.ReportUnit, "objectives": st.Objectives, "log_params": logParams(full),
		"importance": Importances(full, st.Direction), "trials": trials}, nil
}

// logParams lists the parameters sampled on a log scale: their slice
// plots use a log axis.
func logParams(trials []storage.FrozenTrial) []string {
	out := []string{}
	for _, t := range trials {
		for name, d := range t.Distributions {
			if d.Log && !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	sort.Strings(out)
	return out
}

func (s *Server) trial(ctx context.Context, r *http.Request, snap *snapshot) (any, error) {
	st, err := s.findStudy(snap, r.URL.Query().Get("study"))
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(r.URL.Query().Get("number"))
	if err != nil {
		return nil, httpError{http.StatusBadRequest, "number: want a trial number"}
	}
	full, err := s.store.Trials(ctx, st.ID)
	if err != nil {
		return nil, err
	}
	for _, t := range full {
		if t.Number == n {
			info := sweep.Identify(st)
			return map[string]any{"study": st.Name, "report_unit": info.ReportUnit, "metric": metricOf(info), "trial": toTrialJSON(t, true), "log": s.logTail(st.Name, n)}, nil
		}
	}
	return nil, httpError{http.StatusNotFound, fmt.Sprintf("%s has no trial %d", st.Name, n)}
}

// logTail is the end of a trial's stderr.log, where the sweep file says
// trials write it; empty without a config or a file.
func (s *Server) logTail(study string, number int) string {
	// A study name with ../ (or an absolute one) must not leave output_dir.
	if s.opt.Config == nil || !filepath.IsLocal(filepath.FromSlash(study)) {
		return ""
	}
	path := filepath.Join(s.opt.Config.OutputDir, filepath.FromSlash(study), "trial-"+strconv.Itoa(number), "stderr.log")
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const tail = 8 << 10
	if st, err := f.Stat(); err == nil && st.Size() > tail {
		f.Seek(st.Size()-tail, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// ---- live --------------------------------------------------------------

// deviceLine is the trainer's log line naming the device it opened.
var deviceLine = regexp.MustCompile(`(?m)^(?:\[#\d+\] )?device: (.+)$`)

// deviceOf is the device a running trial opened, as its stderr.log's head
// says (a GPU the sweep asked for may have fallen back to the CPU), else
// the sweep file's device setting, marked as such.
func (s *Server) deviceOf(study string, number int, configured string) string {
	if s.opt.Config != nil && filepath.IsLocal(filepath.FromSlash(study)) {
		path := filepath.Join(s.opt.Config.OutputDir, filepath.FromSlash(study), "trial-"+strconv.Itoa(number), "stderr.log")
		if f, err := os.Open(path); err == nil {
			head := make([]byte, 16<<10)
			n, _ := io.ReadFull(f, head)
			f.Close()
			if m := deviceLine.FindSubmatch(head[:n]); m != nil {
				return string(m[1])
			}
		}
	}
	if configured == "" {
		return ""
	}
	return configured + " (configured)"
}

func (s *Server) live(ctx context.Context, _ *http.Request, snap *snapshot) (any, error) {
	type running struct {
		Study      string   `json:"study"`
		Device     string   `json:"device"`
		ETASeconds *float64 `json:"eta_seconds"`
		ReportUnit string   `json:"report_unit"` // of the intermediate values: epoch or step
		Metric     string   `json:"metric"`
		trialJSON
	}
	maxEpochs := 0
	device := ""
	if c := s.opt.Config; c != nil {
		device = c.Device
		maxEpochs = 30
		if v, ok := c.Training["max_epochs"].(int); ok {
			maxEpochs = v
		}
		if c.ReportsSteps() {
			// The count of validations says nothing of the epochs left.
			maxEpochs = 0
		}
	}
	out := []running{}
	for _, st := range snap.studies {
		if !slices.ContainsFunc(snap.trials[st.ID], func(t storage.FrozenTrial) bool { return t.State == storage.Running }) {
			continue
		}
		full, err := s.store.Trials(ctx, st.ID) // with the epoch values
		if err != nil {
			return nil, err
		}
		info := sweep.Identify(st)
		unit := info.ReportUnit
		for _, t := range full {
			if t.State != storage.Running {
				continue
			}
			r := running{Study: st.Name, Device: s.deviceOf(st.Name, t.Number, device), ReportUnit: unit, Metric: metricOf(info), trialJSON: toTrialJSON(t, false)}
			if done := len(t.Intermediate); maxEpochs > 0 && done > 0 && unit == sweep.UnitEpoch {
				eta := r.Seconds / float64(done) * float64(max(0, maxEpochs-done))
				r.ETASeconds = &eta
			}
			out = append(out, r)
		}
	}
	return map[string]any{"running": out}, nil
}

// ---- selection ---------------------------------------------------------

func (s *Server) selection(ctx context.Context, _ *http.Request, snap *snapshot) (any, error) {
	type cell struct {
		Value  any      `json:"value"`
		LR     *float64 `json:"lr"`
		Study  string   `json:"study"`
		Number int      `json:"number"`
	}
	type arch struct {
		Arch     string          `json:"arch"`
		Mean     any             `json:"mean"`
		Complete bool            `json:"complete"`
		Best     map[string]cell `json:"best"`
	}
	type method struct {
		Method   string   `json:"method"`
		Datasets []string `json:"datasets"`
		Chosen   string   `json:"chosen"`
		Archs    []arch   `json:"archs"`
	}
	var methods []string
	for _, st := range snap.studies {
		if info := sweep.Identify(st); !info.Final && info.Method != "" && !slices.Contains(methods, info.Method) {
			methods = append(methods, info.Method)
		}
	}
	sort.Strings(methods)
	out := map[string]any{}
	sels := []method{}
	for _, m := range methods {
		sel, err := sweep.Best(ctx, snap, m, nil)
		if err != nil {
			return nil, err
		}
		mj := method{Method: m, Datasets: sel.Datasets, Archs: []arch{}}
		if c, ok := sel.Chosen(); ok {
			mj.Chosen = c.Arch
		}
		for _, a := range sel.Archs {
			aj := arch{Arch: a.Arch, Mean: number(a.Mean), Complete: a.Complete, Best: map[string]cell{}}
			for ds, t := range a.Best {
				c := cell{Study: a.Study[ds], Number: t.Number}
				if t.Value != nil {
					c.Value = number(*t.Value)
				}
				if lr, ok := t.Params["lr"]; ok {
					c.LR = finite(lr)
				}
				aj.Best[ds] = c
			}
			mj.Archs = append(mj.Archs, aj)
		}
		sels = append(sels, mj)
	}
	out["methods"] = sels
	if err := snap.collect(ctx); err != nil {
		return nil, err
	}
	if len(snap.rows) > 0 {
		t := results.Table1(snap.rows, snap.datasets, false)
		var cells [][]string
		for _, r := range t.Rows {
			var line []string
			for _, c := range r {
				line = append(line, c.Text)
			}
			cells = append(cells, line)
		}
		out["table1"] = map[string]any{"title": t.Title, "header": t.Header, "rows": cells, "notes": t.Notes}
		out["figures"] = slices.Sorted(maps.Keys(snap.figures))
	}
	return out, nil
}

// collect reads the final runs (results.Collect, as `sweep table` does)
// and draws Figure 1 (results.Figure1, as `sweep plot` does), once per
// snapshot: the selection page and each figure request share them.
func (p *snapshot) collect(ctx context.Context) error {
	p.resultsOnce.Do(func() {
		p.rows, p.datasets, p.resultsErr = results.Collect(ctx, p)
		if p.resultsErr != nil || len(p.rows) == 0 {
			return
		}
		dir, err := os.MkdirTemp("", "readsweep-dashboard-")
		if err != nil {
			p.resultsErr = err
			return
		}
		defer os.RemoveAll(dir)
		files, err := results.Figure1(p.rows, dir)
		if err != nil {
			p.resultsErr = err
			return
		}
		p.figures = map[string][]byte{}
		for _, f := range files {
			if strings.HasSuffix(f, ".svg") {
				if b, err := os.ReadFile(f); err == nil {
					p.figures[filepath.Base(f)] = b
				}
			}
		}
	})
	return p.resultsErr
}

func (s *Server) figure(w http.ResponseWriter, r *http.Request) {
	snap, err := s.current(r.Context())
	if err == nil {
		err = snap.collect(r.Context())
	}
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, errFileChanged) {
			status = http.StatusServiceUnavailable
		}
		http.Error(w, err.Error(), status)
		return
	}
	b, ok := snap.figures[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Write(b)
}

// ---- live updates ------------------------------------------------------

// token answers the database's change token and how often to ask again. A
// page polls it and redraws when it moves: unlike a Server-Sent Events
// stream, polling holds no connection open, and a browser allows only six
// to one host, so a stream per tab would stop the seventh tab from loading.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if err := s.file.check(); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	token, err := s.store.ChangeToken(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(map[string]any{"token": token, "poll_ms": s.opt.Poll.Milliseconds()})
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
)

// startDashboard runs `sweep dashboard` on a free port and returns its URL;
// the process is stopped when the test ends. stderr collects its log.
func startDashboard(t *testing.T, dir string, stderr io.Writer, args ...string) string {
	t.Helper()
	cmd := exec.Command(sweepBin, append([]string{"dashboard", "--addr", "127.0.0.1:0", "--poll", "200ms"}, args...)...)
	cmd.Dir = dir
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("sweep dashboard printed no URL: %v", err)
	}
	return strings.TrimSpace(line)
}

// browser starts Debian's chromium headless. Its absence fails the test
// with what to install: the dashboard is only tested in a real browser.
func browser(t testing.TB) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatal("no chromium on PATH: the dashboard's browser tests need it (Debian: apt-get install chromium; .ci/run installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(1360, 900), chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelTimeout(); cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// navigate opens url and waits until the dashboard has rendered a view.
func navigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, `window.dashboard !== undefined && dashboard.view === (location.hash || "#/")`)
}

// wait polls a JavaScript expression until it is true.
func wait(t *testing.T, ctx context.Context, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond),
		chromedp.WithPollingTimeout(20*time.Second))); err != nil {
		t.Fatalf("waiting for %s: %v", expr, err)
	}
}

// js evaluates a JavaScript expression.
func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// text is the rendered text of the page's main view, read in one script
// call: chromedp.Text looks the node up and then reads it, and a live
// update that redraws the view in between ("No node with given id found")
// failed the test under CI load.
func text(t *testing.T, ctx context.Context) string {
	t.Helper()
	return js[string](t, ctx, `document.querySelector("main").innerText`)
}

// screenshot saves a PNG of the page in the test's folder and, where
// READSWEEP_SCREENSHOTS names a folder, there too (the README's picture).
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG (below it, JPEG)
	if err != nil {
		t.Fatal(err)
	}
	dirs := []string{t.TempDir()}
	if d := os.Getenv("READSWEEP_SCREENSHOTS"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const dashboardSweep = `storage: sqlite:///d.db
trainer: synthetic
datasets: [sst2, rte]
methods:
  read:
    - {cell: gru, epoch_ms: 5}
    - {cell: lstm, epoch_ms: 5}
  lora: [{rank: 8, epoch_ms: 5}]
search:
  lr: {low: 1.0e-6, high: 3.0e-3, log: true}
trials: 5
sampler: {seed: 3, n_startup_trials: 3}
training: {max_epochs: 4, seeds: [0, 1]}
parallel: 2
`

// TestDashboardInBrowser fills a database with a real sweep and its final
// runs, opens the dashboard in chromium, and checks what a user sees: every
// study on the overview, a study's charts with one point per complete
// trial, a trial's details, the D.2 selection with Table 1; and a trial
// written while the study page is open appears without a reload.
func TestDashboardInBrowser(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, dashboardSweep)
	for _, args := range [][]string{{"run", "sweep.yaml"}, {"final", "sweep.yaml"}} {
		if _, errOut, code := sweepCmd(t, dir, args...); code != 0 {
			t.Fatalf("sweep %v: exit %d\n%s", args, code, errOut)
		}
	}
	studies := load(t, filepath.Join(dir, "d.db"))
	base := startDashboard(t, dir, io.Discard, "--config", "sweep.yaml")
	ctx := browser(t)

	navigate(t, ctx, base)
	wait(t, ctx, `document.querySelectorAll("tr.study-row").length > 0`)
	if rows := js[int](t, ctx, `document.querySelectorAll("tr.study-row").length`); rows != len(studies) {
		t.Errorf("the overview lists %d studies, the database has %d", rows, len(studies))
	}
	screenshot(t, ctx, "dashboard-overview.png")

	var name string // a READ study of the sweep (not a final run)
	for n := range studies {
		if strings.HasPrefix(n, "read/") && strings.HasSuffix(n, "/sst2") && (name == "" || n < name) {
			name = n
		}
	}
	complete := 0
	for _, tr := range studies[name] {
		if tr.State == storage.Complete {
			complete++
		}
	}
	navigate(t, ctx, base+"#/study/"+url.PathEscape(name))
	wait(t, ctx, `window.dashboard !== undefined && dashboard.charts.history !== undefined && document.querySelector("#trials") !== null`)
	points := js[int](t, ctx, `dashboard.charts.history.data[0].length`)
	lrPoints := js[int](t, ctx, `dashboard.charts.lr.data[0].length`)
	trialRows := js[int](t, ctx, `document.querySelectorAll("#trials tr.trial-row").length`)
	if points != complete || lrPoints != complete || trialRows != len(studies[name]) {
		t.Errorf("study page: %d history points, %d lr points, %d rows; the study has %d complete of %d trials",
			points, lrPoints, trialRows, complete, len(studies[name]))
	}
	// Best so far never falls in a maximised study.
	if bad := js[int](t, ctx, `dashboard.charts.history.data[2].findIndex((v, i, a) => i > 0 && v < a[i-1])`); bad != -1 {
		t.Errorf("best-so-far falls at trial %d: %v", bad, js[[]float64](t, ctx, `dashboard.charts.history.data[2]`))
	}
	screenshot(t, ctx, "dashboard-study.png")

	// A trial written while the page is open appears without a reload.
	js[bool](t, ctx, `window.notReloaded = true`)
	addTrial(t, filepath.Join(dir, "d.db"), name, 0.987654)
	wait(t, ctx, fmt.Sprintf(`document.querySelectorAll("#trials tr.trial-row").length === %d && window.notReloaded === true && dashboard.charts.history.data[0].length === %d`,
		trialRows+1, complete+1))

	navigate(t, ctx, base+"#/trial/"+url.PathEscape(name)+"/0")
	wait(t, ctx, `document.querySelector("main h1") !== null && document.querySelector("main h1").textContent.includes("#0")`)
	page := text(t, ctx)
	for _, want := range []string{"Parameters", "lr", "User attributes", "stderr.log"} {
		if !strings.Contains(page, want) {
			t.Errorf("trial page lacks %q:\n%.600s", want, page)
		}
	}
	navigate(t, ctx, base+"#/selection")
	wait(t, ctx, `document.querySelectorAll("main h2").length >= 3`)
	page = text(t, ctx)
	for _, want := range []string{"read: ", "lora: rank-8-5", "Table 1", "READ", "LoRA"} {
		if !strings.Contains(page, want) {
			t.Errorf("selection page lacks %q:\n%.800s", want, page)
		}
	}
	screenshot(t, ctx, "dashboard-selection.png")

	// Eight tabs open at once all render and follow the database: pages
	// hold no connection open (a browser allows six to one host).
	var last context.Context
	for i := range 8 {
		tab, cancel := chromedp.NewContext(ctx)
		defer cancel()
		navigate(t, tab, fmt.Sprintf("%s?tab=%d#/study/%s", base, i, url.PathEscape(name)))
		last = tab
	}
	addTrial(t, filepath.Join(dir, "d.db"), name, 0.5)
	wait(t, last, fmt.Sprintf(`document.querySelectorAll("#trials tr.trial-row").length === %d`, trialRows+2))
}

// addTrial writes one COMPLETE trial into a study, as a sweep would.
func addTrial(t *testing.T, path, study string, value float64) {
	t.Helper()
	addTrialLR(t, path, study, value, 1e-4, 1)
}

// addTrialLR adds a COMPLETE trial of learning rate lr that reported value
// at each of steps epochs.
func addTrialLR(t *testing.T, path, study string, value, lr float64, steps int) {
	t.Helper()
	s, err := storage.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var id int64 = -1
	studies, _ := s.Studies(ctx)
	for _, st := range studies {
		if st.Name == study {
			id = st.ID
		}
	}
	tr, err := s.CreateTrial(ctx, id, storage.TrialOptions{Params: map[string]float64{"lr": lr},
		Distributions: map[string]storage.Distribution{"lr": storage.Float(1e-6, 3e-3, true)}})
	if err != nil {
		t.Fatal(err)
	}
	state := storage.Complete
	reports := map[int]float64{}
	for i := range steps {
		reports[i] = value
	}
	if err := s.UpdateTrial(ctx, tr.ID, storage.TrialUpdate{State: &state, Value: &value, Intermediate: reports}); err != nil {
		t.Fatal(err)
	}
}

// storeTrial creates study (with attrs) in s and one trial in it (lr
// 1e-3) finished as u says.
func storeTrial(t *testing.T, s storage.Storage, study string, attrs map[string]any, u storage.TrialUpdate) {
	t.Helper()
	ctx := context.Background()
	st, err := s.CreateStudy(ctx, study, storage.Maximize, attrs)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := s.CreateTrial(ctx, st.ID, storage.TrialOptions{Params: map[string]float64{"lr": 1e-3},
		Distributions: map[string]storage.Distribution{"lr": storage.Float(1e-6, 3e-3, true)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateTrial(ctx, tr.ID, u); err != nil {
		t.Fatal(err)
	}
}

// TestDashboardEscapesEverything: study names, attributes and logs are
// shown as text; a study called <script>… runs nothing.
func TestDashboardEscapesEverything(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.db")
	s, err := storage.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	evil := `<script>window.pwned=1</script>/<img src=x onerror="window.pwned=2">/sst2`
	state := storage.Fail
	storeTrial(t, s, evil, map[string]any{"note": `<b onmouseover="window.pwned=3">bold</b>`}, storage.TrialUpdate{State: &state, UserAttrs: map[string]any{
		"fail_reason": `<img src=x onerror="window.pwned=4">`, "stderr_tail": "</pre><script>window.pwned=5</script>"}})
	s.Close()
	base := startDashboard(t, dir, io.Discard, "sqlite:///x.db")
	bctx := browser(t)
	var page string
	for _, p := range []string{"", "#/study/" + url.PathEscape(evil), "#/trial/" + url.PathEscape(evil) + "/0"} {
		navigate(t, bctx, base+p)
		time.Sleep(300 * time.Millisecond) // an injected handler would have run by now
		page = text(t, bctx)
		if js[bool](t, bctx, `window.pwned !== undefined`) {
			t.Fatalf("page %q ran injected script", p)
		}
		if !strings.Contains(page, "<script>window.pwned=1</script>") {
			t.Errorf("page %q does not show the study name as text:\n%.400s", p, page)
		}
	}
	if !strings.Contains(page, `<img src=x onerror="window.pwned=4">`) || !strings.Contains(page, "</pre><script>window.pwned=5</script>") {
		t.Errorf("trial page does not show the attributes as text:\n%.800s", page)
	}
}

// TestDashboardStepStudy: a study that validates every few optimiser
// steps (report_unit: step) shows each trial's last reported step, not a
// count of validations headed "epochs", and its charts' x axis says step.
func TestDashboardStepStudy(t *testing.T) {
	dir := t.TempDir()
	s, err := storage.OpenSQLite(filepath.Join(dir, "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	state, value := storage.Complete, 77.5
	storeTrial(t, s, "read/gru-256/sst2", map[string]any{sweep.AttrReportUnit: "step"},
		storage.TrialUpdate{State: &state, Value: &value, Intermediate: map[int]float64{5: 50, 10: 70, 45: 77.5}})
	s.Close()
	base := startDashboard(t, dir, io.Discard, "sqlite:///s.db")
	bctx := browser(t)
	navigate(t, bctx, base+"#/study/"+url.PathEscape("read/gru-256/sst2"))
	wait(t, bctx, `document.querySelector("#trials tbody tr") !== null`)
	head := js[string](t, bctx, `[...document.querySelectorAll("#trials th")].map(h => h.textContent).join("|")`)
	row := js[string](t, bctx, `[...document.querySelectorAll("#trials tbody tr td")].map(d => d.textContent).join("|")`)
	if !strings.Contains(head, "last step") || strings.Contains(head, "epochs") || !strings.Contains(row, "|45|") {
		t.Errorf("trial table of a step study: head %q, row %q; want a last step column holding 45", head, row)
	}
}

// TestDashboardNeverBlocksTheWriter: while `sweep run` writes, an open
// page polls the change token every 200 ms and a client reads the overview
// as fast as it can; the sweep sees no "database is
// locked", loses nothing, and the dashboard accepts no writes.
func TestDashboardNeverBlocksTheWriter(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, strings.ReplaceAll(strings.ReplaceAll(dashboardSweep, "trials: 5", "trials: 12"), "epoch_ms: 5", "epoch_ms: 2"))
	addTrialless := func() { // the database exists before the dashboard opens it
		if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml", "--only", "method=lora,dataset=rte"); code != 0 {
			t.Fatalf("exit %d\n%s", code, errOut)
		}
	}
	addTrialless()
	var dashLog strings.Builder
	base := startDashboard(t, dir, &dashLog, "--config", "sweep.yaml")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads, failures int
	var mu sync.Mutex
	wg.Add(2)
	go func() { // an open page following the database
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if resp, err := http.Get(base + "api/token"); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := http.Get(base + "api/overview")
			mu.Lock()
			reads++
			if err != nil || resp.StatusCode != 200 {
				failures++
			}
			mu.Unlock()
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	_, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml")
	close(stop)
	wg.Wait()
	if code != 0 || strings.Contains(errOut, "locked") || strings.Contains(errOut, "busy") {
		t.Fatalf("sweep run beside the dashboard: exit %d\n%s", code, errOut)
	}
	checkBudgets(t, load(t, filepath.Join(dir, "d.db")), 6, 12)
	if reads < 10 || failures > 0 {
		t.Errorf("%d overview reads, %d failed", reads, failures)
	}
	if strings.Contains(dashLog.String(), "locked") {
		t.Errorf("dashboard log: %s", dashLog.String())
	}
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		req, _ := http.NewRequest(method, base+"api/overview", strings.NewReader("{}"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s: %s, want 405", method, resp.Status)
		}
	}
}

// TestDashboardOnOptunasDatabase opens a database that Optuna itself wrote
// (Debian's 3.1: schema v3.0.0.d, a categorical parameter, attributes we
// never write): every study is listed, the charts have its points, and the
// categorical shows its choice, not its index.
func TestDashboardOnOptunasDatabase(t *testing.T) {
	dir := t.TempDir()
	script := `
import optuna, sys
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = optuna.create_study(study_name="optuna-native", storage="sqlite:///" + sys.argv[1], direction="minimize",
                        sampler=optuna.samplers.RandomSampler(seed=1))
s.set_user_attr("owner", "<i>someone</i>")
def f(trial):
    x = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
    opt = trial.suggest_categorical("optimizer", ["adam", "sgd"])
    trial.set_user_attr("note", {"nested": [1, 2, "<b>x</b>"]})
    for step in range(3):
        trial.report(x * (3 - step), step)
    return x if opt == "adam" else 2 * x
s.optimize(f, n_trials=6)
m = optuna.create_study(study_name="multi", storage="sqlite:///" + sys.argv[1], directions=["minimize", "maximize"],
                        sampler=optuna.samplers.RandomSampler(seed=2))
def g(trial):
    x = trial.suggest_float("x", 1e-3, 1.0, log=True)
    n = trial.suggest_int("layers", 1, 4)
    act = trial.suggest_categorical("act", ["relu", "gelu", "tanh"])
    return x * n, len(act) - x
m.optimize(g, n_trials=8)
n = optuna.create_study(study_name="nan-choice", storage="sqlite:///" + sys.argv[1], sampler=optuna.samplers.RandomSampler(seed=3))
n.optimize(lambda t: t.suggest_float("x", 0, 1) + (t.suggest_categorical("c", [1.0, float("nan")]) == 1.0), n_trials=4)
`
	if out, err := exec.Command("/usr/bin/python3", "-c", script, filepath.Join(dir, "optuna.db")).CombinedOutput(); err != nil {
		t.Fatalf("Optuna (apt-get install python3-optuna) could not write the database: %v\n%s", err, out)
	}
	base := startDashboard(t, dir, io.Discard, "sqlite:///optuna.db")
	ctx := browser(t)
	navigate(t, ctx, base)
	if n := js[int](t, ctx, `document.querySelectorAll("tr.study-row").length`); n != 3 {
		t.Fatalf("overview lists %d studies, want 3:\n%s", n, text(t, ctx))
	}
	// A categorical with a NaN choice (Python's json writes it bare): its
	// study and trials open like any other.
	navigate(t, ctx, base+"#/trial/nan-choice/0")
	if !js[bool](t, ctx, `[...document.querySelectorAll("table.kv td.name")].some(td => td.textContent === "c")`) {
		t.Errorf("the trial of a study with a NaN choice shows no parameter c:\n%.600s", text(t, ctx))
	}
	// Several parameters and objectives: a slice plot per parameter (a
	// categorical one by its choices), parallel coordinates with a line
	// per trial, and a notice that the first objective is shown.
	navigate(t, ctx, base+"#/study/multi")
	wait(t, ctx, `dashboard.charts["slice-x"] !== undefined && document.querySelector("#parallel") !== null`)
	for _, c := range []string{"slice-x", "slice-layers", "slice-act"} {
		if n := js[int](t, ctx, fmt.Sprintf(`(dashboard.charts[%q] || {data: [[]]}).data[0].length`, c)); n != 8 {
			t.Errorf("%s has %d points, want 8", c, n)
		}
	}
	if n := js[int](t, ctx, `document.querySelectorAll("#parallel .pc-line").length`); n != 8 {
		t.Errorf("parallel coordinates draw %d trials, want 8", n)
	}
	if !js[bool](t, ctx, `dashboard.charts["slice-x"].scales.x.distr === 3`) {
		t.Error("x, sampled on a log scale, is not plotted on one")
	}
	if note := js[string](t, ctx, `(e => e ? e.textContent : "")(document.querySelector("#objectives"))`); !strings.Contains(note, "2 objectives") {
		t.Errorf("no notice that only the first of 2 objectives is shown: %q", note)
	}
	// Parameter importance (PED-ANOVA, held to Optuna's numbers in
	// dashboard's TestImportancesAreOptunas): a bar per parameter, the
	// shares summing to 100 %.
	wait(t, ctx, `document.querySelector("#importance") !== null`)
	shares := js[[]string](t, ctx, `[...document.querySelectorAll("#importance tr")].map(r => r.cells[0].textContent + "=" + r.cells[2].textContent)`)
	sum := 0.0
	for _, s := range shares {
		var pct float64
		fmt.Sscanf(s[strings.Index(s, "=")+1:], "%g", &pct)
		sum += pct
	}
	if len(shares) != 3 || math.Abs(sum-100) > 0.2 {
		t.Errorf("importance shows %q, want x, layers and act summing to 100 %%", shares)
	}
	screenshot(t, ctx, "dashboard-optuna-study.png")
	js[bool](t, ctx, `document.querySelector("#parallel .pc-line").dispatchEvent(new MouseEvent("click", {bubbles: true})); true`)
	wait(t, ctx, `location.hash.startsWith("#/trial/multi/")`)
	navigate(t, ctx, base+"#/study/optuna-native")
	wait(t, ctx, `dashboard.charts.history !== undefined`)
	if n := js[int](t, ctx, `dashboard.charts.history.data[0].length`); n != 6 {
		t.Errorf("history has %d points, want 6", n)
	}
	if bad := js[int](t, ctx, `dashboard.charts.history.data[2].findIndex((v, i, a) => i > 0 && v > a[i-1])`); bad != -1 {
		t.Errorf("best-so-far rises at trial %d in a minimised study", bad)
	}
	page := text(t, ctx)
	if !strings.Contains(page, "optimizer=adam") && !strings.Contains(page, "optimizer=sgd") {
		t.Errorf("the categorical parameter is not shown by its choice:\n%.800s", page)
	}
	navigate(t, ctx, base+"#/trial/optuna-native/0")
	if page := text(t, ctx); !strings.Contains(page, `{"nested":[1,2,"<b>x</b>"]}`) {
		t.Errorf("an Optuna attribute is not shown plainly:\n%.800s", page)
	}
}

// BenchmarkDashboardInBrowser times, in chromium, each page of the
// dashboard over a database the size of the paper's grid (7 methods × 17
// candidates × 7 datasets × 32 trials, made as `sweep bench dashboard`
// makes it; READSWEEP_BENCH_DB reuses one): from navigation until the page
// has drawn its view. Run: go test -run XXX -bench DashboardInBrowser ./cmd/sweep/
func BenchmarkDashboardInBrowser(b *testing.B) {
	dir := b.TempDir()
	path := os.Getenv("READSWEEP_BENCH_DB")
	if path == "" {
		path = filepath.Join(dir, "bench.db")
		if _, err := fillBenchDatabase(path, 17, 32); err != nil {
			b.Fatal(err)
		}
	}
	cmd := exec.Command(sweepBin, "dashboard", "--addr", "127.0.0.1:0", path)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatal(err)
	}
	base := strings.TrimSpace(line)
	ctx := browser(b)
	pages := []struct{ name, hash string }{
		{"overview", "#/"}, {"live", "#/live"}, {"study", "#/study/" + url.PathEscape("read/arch-0/sst2")},
		{"trial", "#/trial/" + url.PathEscape("read/arch-0/sst2") + "/3"}, {"selection", "#/selection"},
	}
	total := map[string]time.Duration{}
	load := 0
	for range b.N {
		for _, p := range pages {
			// A fresh load (a new document each time): the page, its
			// script, its data, its drawing.
			load++
			start := time.Now()
			if err := chromedp.Do(ctx, chromedp.Navigate(fmt.Sprintf("%s?load=%d%s", base, load, p.hash))); err != nil {
				b.Fatal(err)
			}
			if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.dashboard !== undefined && dashboard.view === (location.hash || "#/") && document.querySelector("main p.error") === null`,
				chromedp.WithPollingInterval(5*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second))); err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			total[p.name] += time.Since(start)
		}
	}
	for _, p := range pages {
		b.ReportMetric(float64(total[p.name].Milliseconds())/float64(b.N), p.name+"-ms")
	}
}

// TestDashboardRefusesOtherHosts: a request addressed to a name that is
// not the server's (a page of another site whose name resolves to
// 127.0.0.1: DNS rebinding) is refused with 403; the loopback names, the
// listening address and --allow-host names are served.
func TestDashboardRefusesOtherHosts(t *testing.T) {
	dir := t.TempDir()
	addTrialStudy(t, filepath.Join(dir, "h.db"))
	base := startDashboard(t, dir, io.Discard, "sqlite:///h.db", "--allow-host", "proxy.example")
	u, _ := url.Parse(base)
	for _, tc := range []struct {
		host string
		want int
	}{{"evil.example", 403}, {"evil.example:" + u.Port(), 403}, {"127.0.0.1.evil.example", 403},
		{u.Host, 200}, {"localhost:" + u.Port(), 200}, {"proxy.example", 200}} {
		req, _ := http.NewRequest("GET", base+"api/overview", nil)
		req.Host = tc.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || tc.want == 403 && !strings.Contains(string(body), "DNS rebinding") {
			t.Errorf("Host %s: %d %s, want %d", tc.host, resp.StatusCode, body, tc.want)
		}
	}
}

// addTrialStudy writes a database with one study and one trial.
func addTrialStudy(t *testing.T, path string) {
	t.Helper()
	s, err := storage.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	state, value := storage.Complete, 0.5
	storeTrial(t, s, "lora/r8/sst2", nil, storage.TrialUpdate{State: &state, Value: &value})
	s.Close()
}

// TestDashboardSeesItsFileChange: a database file deleted, replaced (mv)
// or overwritten under a running dashboard is said so, on the page and by
// every answer (503), instead of showing what was read before as live.
func TestDashboardSeesItsFileChange(t *testing.T) {
	dir := t.TempDir()
	bctx := browser(t)
	for _, tc := range []struct {
		name   string
		change func(path string)
		want   string
	}{
		{"deleted", func(path string) { os.Remove(path) }, "was deleted"},
		{"replaced", func(path string) {
			other := path + ".new"
			addTrialStudy(t, other)
			os.Rename(other, path)
		}, "was replaced by another file"},
		{"overwritten", func(path string) { os.WriteFile(path, []byte("not a database"), 0o644) }, "overwritten"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.name + ".db"
			path := filepath.Join(dir, name)
			addTrialStudy(t, path)
			base := startDashboard(t, dir, io.Discard, "sqlite:///"+name)
			navigate(t, bctx, base)
			wait(t, bctx, `document.querySelector("#status").className === "live"`)
			tc.change(path)
			wait(t, bctx, fmt.Sprintf(`document.querySelector("#status").textContent.includes(%q) && document.querySelector("#view .error") !== null`, tc.want))
			resp, err := http.Get(base + "api/overview")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 503 || !strings.Contains(string(body), tc.want) {
				t.Errorf("overview after the file was %s: %d %s", tc.name, resp.StatusCode, body)
			}
		})
	}
}

// TestDashboardNonFiniteValues: +inf, −inf and NaN are shown as such, not
// as "no value": a study whose best trial scored +inf says +∞, a trial's
// non-finite intermediate values are listed under its chart, and every
// chart's x axis counts (trials, epochs) rather than reading them as dates.
func TestDashboardNonFiniteValues(t *testing.T) {
	dir := t.TempDir()
	s, err := storage.OpenSQLite(filepath.Join(dir, "inf.db"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := s.CreateStudy(ctx, "lora/r8/stsb", storage.Maximize, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []float64{0.3, math.Inf(1), math.Inf(-1)} {
		tr, err := s.CreateTrial(ctx, st.ID, storage.TrialOptions{Params: map[string]float64{"lr": 1e-3},
			Distributions: map[string]storage.Distribution{"lr": storage.Float(1e-6, 3e-3, true)}})
		if err != nil {
			t.Fatal(err)
		}
		state, value := storage.Complete, v
		if err := s.UpdateTrial(ctx, tr.ID, storage.TrialUpdate{State: &state, Value: &value,
			Intermediate: map[int]float64{0: 0.1, 1: math.NaN(), 2: v}}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	base := startDashboard(t, dir, io.Discard, "sqlite:///inf.db")
	bctx := browser(t)
	navigate(t, bctx, base)
	wait(t, bctx, `document.querySelector("tr.study-row") !== null`)
	if row := js[string](t, bctx, `document.querySelector("tr.study-row").textContent`); !strings.Contains(row, "+∞") {
		t.Errorf("the overview's best: %q, want +∞", row)
	}
	navigate(t, bctx, base+"#/study/"+url.PathEscape("lora/r8/stsb"))
	wait(t, bctx, `document.querySelectorAll("#trials tbody tr").length === 3`)
	values := js[string](t, bctx, `[...document.querySelectorAll("#trials tbody tr")].map(r => r.children[2].textContent).join(" ")`)
	epochs := js[string](t, bctx, `[...document.querySelectorAll("#trials tbody tr")].map(r => r.children[4].textContent).join(" ")`)
	if values != "0.3000 +∞ −∞" || epochs != "3 3 3" {
		t.Errorf("trial values %q, epochs %q; want 0.3000 +∞ −∞ and 3 3 3", values, epochs)
	}
	if !js[bool](t, bctx, `Object.values(dashboard.charts).every(u => u.scales.x.time === false)`) {
		t.Error("a study chart reads its x axis as time")
	}
	navigate(t, bctx, base+"#/trial/"+url.PathEscape("lora/r8/stsb")+"/1")
	wait(t, bctx, `document.querySelector("#non-finite") !== null`)
	if note := js[string](t, bctx, `document.querySelector("#non-finite").textContent`); note != "Not drawn: epoch 1 = NaN, epoch 2 = +∞" {
		t.Errorf("trial page: %q", note)
	}
	if !js[bool](t, bctx, `dashboard.charts.trial.scales.x.time === false`) {
		t.Error("the trial page's chart labels its epochs as dates")
	}
}

// TestDashboardSaysWhatHappened: opened before `sweep run` has made the
// database, the dashboard waits for it and says so, then shows it; a study
// below its budget with nothing running is marked stopped, with no ETA;
// failures give their reason in the overview and the trial table; rows and
// the selection's cells are links; each study's page names its metric; a long name is cut instead of
// pushing the numbers off the screen; a long attribute is cut by the
// server; a trial's log opens at its end.
func TestDashboardSaysWhatHappened(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, `storage: sqlite:///w.db
model: tiny-t5
data_dir: `+mustAbs(t, "../../glue/testdata/fixture")+`
datasets: [sst2]
methods:
  lora: [{rank: 4}]
search:
  lr: {low: 1.0e-3, high: 1.0e-2, log: true}
trials: 3
`)
	var logs syncBuffer
	base := startDashboard(t, dir, &logs, "--config", "sweep.yaml")
	bctx := browser(t)
	navigate(t, bctx, base)
	wait(t, bctx, `document.querySelector("#status").textContent.includes("waiting for") && document.querySelector("#view .error") !== null`)

	s, err := storage.OpenSQLite(filepath.Join(dir, "w.db"))
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("very-long-architecture-", 30)
	complete, failed, value := storage.Complete, storage.Fail, 71.5
	storeTrial(t, s, "lora/rank-4/sst2", nil, storage.TrialUpdate{State: &complete, Value: &value})
	var tail strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&tail, "line %d of the trial's log\n", i)
	}
	storeTrial(t, s, "lora/"+long+"/sst2", nil, storage.TrialUpdate{State: &failed,
		UserAttrs: map[string]any{"fail_reason": "out of memory", "stderr_tail": tail.String()}})
	s.Close()
	wait(t, bctx, `document.querySelector("#status").className === "live" && document.querySelectorAll("tr.study-row").length === 2`)
	if !strings.Contains(logs.String(), "appeared; showing it") {
		t.Errorf("the dashboard did not say the database appeared:\n%s", logs.String())
	}
	stopped := js[int](t, bctx, `document.querySelectorAll("td.stopped").length`)
	cards := js[string](t, bctx, `document.querySelector(".cards").textContent`)
	if stopped != 2 || !strings.Contains(cards, "nothing running") {
		t.Errorf("%d studies marked stopped (want 2); cards %q", stopped, cards)
	}
	if right, width := js[float64](t, bctx, `document.querySelector("#view table").getBoundingClientRect().right`), js[float64](t, bctx, `window.innerWidth`); right > width {
		t.Errorf("the overview is %.0f px wide in a %.0f px window: a long name pushed the numbers off", right, width)
	}
	if failed := js[string](t, bctx, `[...document.querySelectorAll("tr.study-row")].map(r => r.children[4].textContent).join("|")`); !strings.Contains(failed, "1out of memory") {
		t.Errorf("the overview's failed column does not give the reason: %q", failed)
	}
	if links := js[string](t, bctx, `[...document.querySelectorAll("tr.study-row a")].map(a => a.getAttribute("href")).join(" ")`); !strings.Contains(links, "#/study/lora%2Frank-4%2Fsst2") {
		t.Errorf("the overview's rows are not links: %q", links)
	}
	navigate(t, bctx, base+"#/selection")
	if link := js[string](t, bctx, `(a => a ? a.getAttribute("href") : "")(document.querySelector("#view td a"))`); link != "#/trial/lora%2Frank-4%2Fsst2/0" {
		t.Errorf("the selection's cell links to %q, want its trial", link)
	}
	navigate(t, bctx, base+"#/study/"+url.PathEscape("lora/"+long+"/sst2"))
	if state := js[string](t, bctx, `document.querySelector("#trials tbody tr").children[1].textContent`); state != "FAILout of memory" {
		t.Errorf("the trial table's state cell: %q, want the reason beside FAIL", state)
	}
	navigate(t, bctx, base+"#/study/"+url.PathEscape("lora/rank-4/sst2"))
	if sub := js[string](t, bctx, `document.querySelector("#view p.muted").textContent`); !strings.Contains(sub, "MAXIMIZE accuracy") {
		t.Errorf("the study page does not name its metric: %q", sub)
	}
	if link := js[string](t, bctx, `document.querySelector("#trials tbody a").getAttribute("href")`); link != "#/trial/lora%2Frank-4%2Fsst2/0" {
		t.Errorf("the trial number links to %q", link)
	}
	navigate(t, bctx, base+"#/trial/"+url.PathEscape("lora/"+long+"/sst2")+"/0")
	wait(t, bctx, `document.querySelector("#log") !== null`)
	log := js[string](t, bctx, `document.querySelector("#log").textContent`)
	if !strings.Contains(log, "bytes more, cut by the dashboard") || strings.Contains(log, "line 1999 ") {
		t.Errorf("a %d-byte attribute reached the page whole", tail.Len())
	}
	if !js[bool](t, bctx, `(p => p.scrollTop > 0 && p.scrollTop + p.clientHeight >= p.scrollHeight - 2)(document.querySelector("#log"))`) {
		t.Error("the log box does not open at its end")
	}
}

// TestDashboardChartsFollowInPlace: a zoomed chart keeps its zoom (and
// stays the same chart) while three polls bring new trials into it;
// hovering a point shows its trial and learning rate, and clicking it
// opens the trial.
func TestDashboardChartsFollowInPlace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "z.db")
	addTrialStudy(t, path)
	addTrial(t, path, "lora/r8/sst2", 60)
	addTrial(t, path, "lora/r8/sst2", 50)
	base := startDashboard(t, dir, io.Discard, "sqlite:///z.db")
	bctx := browser(t)
	navigate(t, bctx, base+"#/study/"+url.PathEscape("lora/r8/sst2"))
	wait(t, bctx, `dashboard.charts.history !== undefined && dashboard.charts.history.data[0].length === 3`)
	js[bool](t, bctx, `window.zoomed = dashboard.charts.history; zoomed.setScale("x", {min: 0.5, max: 1.5}); true`)
	for k := range 3 {
		addTrial(t, path, "lora/r8/sst2", 55+float64(k))
		wait(t, bctx, fmt.Sprintf(`dashboard.charts.history.data[0].length === %d`, 4+k))
	}
	if !js[bool](t, bctx, `dashboard.charts.history === zoomed && zoomed.scales.x.min === 0.5 && zoomed.scales.x.max === 1.5`) {
		t.Errorf("the zoom was lost: x from %v to %v, same chart %v", js[any](t, bctx, `dashboard.charts.history.scales.x.min`),
			js[any](t, bctx, `dashboard.charts.history.scales.x.max`), js[bool](t, bctx, `dashboard.charts.history === zoomed`))
	}
	js[bool](t, bctx, `dashboard.charts.history.setScale("x", {min: -0.5, max: 6.5}); true`)
	time.Sleep(100 * time.Millisecond) // the redraw at the new scale
	js[bool](t, bctx, `(u => { u.setCursor({left: u.valToPos(1, "x"), top: u.valToPos(60, "y")}); return true })(dashboard.charts.history)`)
	if legend := js[string](t, bctx, `dashboard.charts.history.root.querySelector(".u-legend").textContent`); !strings.Contains(legend, "#1, lr 1.00e-4") || !strings.Contains(legend, "60") {
		t.Errorf("hovering trial 1 shows %q", legend)
	}
	// The intermediate values: one line a trial; hovering names the line
	// nearest the cursor with its parameters, and a click opens its trial.
	js[bool](t, bctx, `(u => { u.setCursor({left: u.valToPos(0, "x"), top: u.valToPos(50, "y")}); return true })(dashboard.charts.intermediate)`)
	if tip := js[string](t, bctx, `dashboard.charts.intermediate.tip.textContent`); !strings.Contains(tip, "#2 (lr 1.00e-4)") || !strings.Contains(tip, ": 50") {
		t.Errorf("hovering trial 2's line shows %q", tip)
	}
	click := func(chart string, x, y float64) {
		// A poll may redraw the view between the caller's wait and this
		// click (seen once under a loaded CI machine): click what is there.
		wait(t, bctx, fmt.Sprintf(`dashboard.charts[%q] !== undefined && document.body.contains(dashboard.charts[%q].root)`, chart, chart))
		js[bool](t, bctx, fmt.Sprintf(`(u => {
			const r = u.over.getBoundingClientRect(), at = {bubbles: true, clientX: r.left + u.valToPos(%g, "x"), clientY: r.top + u.valToPos(%g, "y")};
			for (const type of ["mousemove", "mousedown", "mouseup", "click"]) u.over.dispatchEvent(new MouseEvent(type, at));
			return true })(dashboard.charts[%q])`, x, y, chart))
	}
	click("intermediate", 0, 50)
	wait(t, bctx, `location.hash === "#/trial/lora%2Fr8%2Fsst2/2"`)
	// The trial's own chart: axes named, hover gives the epoch's value.
	wait(t, bctx, `dashboard.charts.trial !== undefined`)
	if labels := js[string](t, bctx, `dashboard.charts.trial.axes.map(a => a.label).join("|")`); !strings.Contains(labels, "accuracy") {
		t.Errorf("the trial chart's axes say %q, not the metric", labels)
	}
	js[bool](t, bctx, `(u => { u.setCursor({left: u.valToPos(0, "x"), top: u.valToPos(50, "y")}); return true })(dashboard.charts.trial)`)
	if tip := js[string](t, bctx, `dashboard.charts.trial.tip.textContent`); !strings.Contains(tip, ": 50") {
		t.Errorf("hovering the trial's point shows %q", tip)
	}
	js[bool](t, bctx, `history.back(); true`)
	// Polls under a zoom and a hover: the intermediate values keep their
	// zoom when a trial joins them, and the learning-rate plot, sorted by
	// lr, still names and opens the hovered trial when a trial of smaller
	// lr arrives before it.
	wait(t, bctx, `location.hash.startsWith("#/study/") && dashboard.chartsView === location.hash && dashboard.charts.lr !== undefined && document.body.contains(dashboard.charts.lr.root)`)
	addTrialLR(t, path, "lora/r8/sst2", 42, 2e-3, 4)
	wait(t, bctx, `dashboard.charts.lr.data[0].length === 7`)
	js[bool](t, bctx, `(u => { window.zi = u; u.setScale("x", {min: 1, max: 2}); window.zoomX = [1, 2]; return true })(dashboard.charts.intermediate)`)
	js[bool](t, bctx, `(u => { u.setCursor({left: u.valToPos(2e-3, "x"), top: u.valToPos(42, "y")}); return true })(dashboard.charts.lr)`)
	addTrialLR(t, path, "lora/r8/sst2", 43, 2e-6, 4)
	wait(t, bctx, `dashboard.charts.lr.data[0].length === 8 && dashboard.charts.intermediate.data[7].some(v => v !== null)`)
	if !js[bool](t, bctx, `dashboard.charts.intermediate === zi && zi.scales.x.min === zoomX[0] && zi.scales.x.max === zoomX[1]`) {
		t.Errorf("the intermediate values lost their zoom when a trial joined them: %v", js[any](t, bctx, `[zoomX, zi.scales.x.min, zi.scales.x.max, dashboard.charts.intermediate === zi]`))
	}
	// The lr plot was not zoomed: its range grew to the new point, and what
	// is under the cursor now is what its legend names and a click opens.
	if !js[bool](t, bctx, `dashboard.charts.lr.scales.x.min <= 2e-6`) {
		t.Error("the unzoomed lr plot did not widen to a new point")
	}
	legend := js[string](t, bctx, `dashboard.charts.lr.root.querySelector(".u-legend").textContent`)
	var hovered int
	if i := strings.Index(legend, "#"); i < 0 {
		t.Fatalf("the lr legend names no trial: %q", legend)
	} else {
		fmt.Sscanf(legend[i+1:], "%d", &hovered)
	}
	js[bool](t, bctx, `(u => { u.over.dispatchEvent(new MouseEvent("mousedown", {bubbles: true})); u.over.dispatchEvent(new MouseEvent("click", {bubbles: true})); return true })(dashboard.charts.lr)`)
	wait(t, bctx, fmt.Sprintf(`location.hash === "#/trial/lora%%2Fr8%%2Fsst2/%d"`, hovered))
	js[bool](t, bctx, `history.back(); true`)
	wait(t, bctx, `location.hash.startsWith("#/study/") && dashboard.chartsView === location.hash && dashboard.charts.history !== undefined && document.body.contains(dashboard.charts.history.root)`)
	click("history", 1, 60)
	wait(t, bctx, `location.hash === "#/trial/lora%2Fr8%2Fsst2/1"`)
}

// TestDashboardOverviewFilterAndLive: the overview's filter box keeps the
// studies whose name holds its words, a method's row folds its studies
// away; a running trial's row on the live page names the device its log
// says it opened; a WAITING trial's page says it waits.
func TestDashboardOverviewFilterAndLive(t *testing.T) {
	dir := t.TempDir()
	writeConfig(t, dir, `storage: sqlite:///f.db
model: tiny-t5
data_dir: `+mustAbs(t, "../../glue/testdata/fixture")+`
datasets: [sst2]
methods:
  lora: [{rank: 4}, {rank: 8}]
search:
  lr: {low: 1.0e-3, high: 1.0e-2, log: true}
trials: 3
output_dir: runs
device: cuda
`)
	s, err := storage.OpenSQLite(filepath.Join(dir, "f.db"))
	if err != nil {
		t.Fatal(err)
	}
	running, waiting := storage.Running, storage.Waiting
	storeTrial(t, s, "lora/rank-4/sst2", nil, storage.TrialUpdate{State: &running, Intermediate: map[int]float64{0: 0.61, 1: 0.72}})
	storeTrial(t, s, "lora/rank-8/sst2", nil, storage.TrialUpdate{State: &waiting})
	s.Close()
	logDir := filepath.Join(dir, "runs", "lora", "rank-4", "sst2", "trial-0")
	os.MkdirAll(logDir, 0o755)
	os.WriteFile(filepath.Join(logDir, "stderr.log"), []byte("trial lora/rank-4/sst2#0: lora on sst2\ndevice: cpu (gonum; no GPU: cuInit failed)\n"), 0o644)
	base := startDashboard(t, dir, io.Discard, "--config", "sweep.yaml")
	bctx := browser(t)
	navigate(t, bctx, base)
	visible := func() int {
		return js[int](t, bctx, `[...document.querySelectorAll("tr.study-row")].filter(r => !r.hidden).length`)
	}
	if n := visible(); n != 2 {
		t.Fatalf("%d studies shown, want 2", n)
	}
	if err := chromedp.Do(bctx, chromedp.SendKeys("#study-filter", "rank-8")); err != nil {
		t.Fatal(err)
	}
	if n := visible(); n != 1 {
		t.Errorf("the filter rank-8 shows %d studies", n)
	}
	js[bool](t, bctx, `document.getElementById("study-filter").value = ""; document.getElementById("study-filter").dispatchEvent(new Event("input")); document.querySelector("tr.group").click(); true`)
	if n := visible(); n != 0 {
		t.Errorf("a folded method still shows %d studies", n)
	}
	navigate(t, bctx, base+"#/live")
	if device := js[string](t, bctx, `document.querySelector("#view tbody tr").children[3].textContent`); device != "cpu (gonum; no GPU: cuInit failed)" {
		t.Errorf("the live page's device: %q, want the one the trial's log names", device)
	}
	// Its chart: axes named, hover names the trial and its epoch's value,
	// a click opens it.
	wait(t, bctx, `dashboard.charts.live0 !== undefined`)
	if labels := js[string](t, bctx, `dashboard.charts.live0.axes.map(a => a.label).join("|")`); labels != "epoch|accuracy" {
		t.Errorf("the live chart's axes say %q", labels)
	}
	js[bool](t, bctx, `(u => { u.setCursor({left: u.valToPos(1, "x"), top: u.valToPos(0.72, "y")}); return true })(dashboard.charts.live0)`)
	if tip := js[string](t, bctx, `dashboard.charts.live0.tip.textContent`); tip != "#0 (lr 1.00e-3), epoch 1: 0.7200" {
		t.Errorf("hovering the live chart shows %q", tip)
	}
	js[bool](t, bctx, `(u => {
		const r = u.over.getBoundingClientRect(), at = {bubbles: true, clientX: r.left + u.valToPos(1, "x"), clientY: r.top + u.valToPos(0.72, "y")};
		for (const type of ["mousemove", "mousedown", "mouseup", "click"]) u.over.dispatchEvent(new MouseEvent(type, at));
		return true })(dashboard.charts.live0)`)
	wait(t, bctx, `location.hash === "#/trial/lora%2Frank-4%2Fsst2/0"`)
	navigate(t, bctx, base+"#/trial/"+url.PathEscape("lora/rank-8/sst2")+"/0")
	wait(t, bctx, `document.querySelector("#waiting") !== null`)
}

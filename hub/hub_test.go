package hub

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/readsweep/readsweep/hub/hubtest"
)

// newServer starts a fake hub and a client of it that retries at once.
func newServer(t *testing.T, files map[string][]byte) (*hubtest.Server, *Client) {
	h := hubtest.NewServer(t, files)
	c := FromEnv()
	c.RetryWait = 10 * time.Millisecond
	c.Log = t.Logf
	return h, c
}

// weights is an LFS file's content: big enough to be cut and resumed.
var weights = bytes.Repeat([]byte("safetensors bytes "), 4000)

const (
	repo    = "google-t5/t5-tiny"
	weightP = "models/" + repo + "/model.safetensors"
	configP = "models/" + repo + "/config.json"
)

// fetchAll resolves, lists and downloads every file of repo into dir.
func fetchAll(t *testing.T, c *Client, revision, dir string) (string, map[string]File) {
	t.Helper()
	ctx := context.Background()
	commit, err := c.Resolve(ctx, Models, repo, revision)
	if err != nil {
		t.Fatal(err)
	}
	files, err := c.List(ctx, Models, repo, commit, "")
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]File{}
	for _, f := range files {
		byPath[f.Path] = f
		if err := c.Download(ctx, Models, repo, commit, f, filepath.Join(dir, f.Path)); err != nil {
			t.Fatal(err)
		}
	}
	return commit, byPath
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestListAndDownload: the listing gives an LFS file its SHA-256 and real
// size and any other file its git blob id; an interrupted download
// resumes from its part file; the token goes to the hub's host and never
// to the CDN an LFS file redirects to; a verified file is not fetched
// again.
func TestListAndDownload(t *testing.T) {
	h, c := newServer(t, map[string][]byte{weightP: weights, configP: []byte(`{"d_model": 8}`)})
	ctx := context.Background()
	commit, err := c.Resolve(ctx, Models, repo, "main")
	if err != nil || commit != h.Main() {
		t.Fatalf("Resolve = %q, %v; want %s", commit, err, h.Main())
	}
	files, err := c.List(ctx, Models, repo, commit, "")
	if err != nil || len(files) != 2 {
		t.Fatalf("List = %+v, %v", files, err)
	}
	for _, f := range files {
		switch f.Path {
		case "model.safetensors":
			if f.Size != int64(len(weights)) || len(f.SHA256) != 64 || f.BlobID != "" {
				t.Errorf("LFS file listed as %+v", f)
			}
		case "config.json":
			if f.Size != 14 || f.SHA256 != "" || len(f.BlobID) != 40 {
				t.Errorf("git file listed as %+v", f)
			}
		}
	}
	dir := t.TempDir()
	dst := filepath.Join(dir, "model.safetensors")
	f := files[0]
	if f.Path != "model.safetensors" {
		f = files[1]
	}
	os.WriteFile(partName(dst, commit), weights[:5000], 0o644) // an earlier, interrupted download
	var last int64
	c.Progress = func(_ string, done, total int64) { last = done }
	if err := c.Download(ctx, Models, repo, commit, f, dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustRead(t, dst), weights) || last != int64(len(weights)) {
		t.Errorf("downloaded %d bytes (progress %d), want %d", len(mustRead(t, dst)), last, len(weights))
	}
	if r := h.Ranges(); len(r) != 1 || r[0] != "bytes=5000-" {
		t.Errorf("range requests %v, want one resuming at 5000", r)
	}
	for _, a := range h.Auth() {
		if a != "Bearer "+hubtest.Token {
			t.Errorf("the hub got Authorization %q, want the HF_TOKEN", a)
		}
	}
	if cdn := h.CDNAuth(); len(cdn) != 1 || cdn[0] != "" {
		t.Errorf("the CDN got Authorization %q: the token left the hub's host", cdn)
	}
	before := len(h.Requests())
	if err := c.Download(ctx, Models, repo, commit, f, dst); err != nil || len(h.Requests()) != before {
		t.Errorf("re-download: %v, %d requests", err, len(h.Requests())-before)
	}
}

// TestPinnedWhileMainMoves: main moves after the listing; every file
// still comes from the commit the revision named first, byte for byte.
func TestPinnedWhileMainMoves(t *testing.T) {
	oldFiles := map[string][]byte{weightP: weights, configP: []byte(`{"d_model": 8}`)}
	h, c := newServer(t, oldFiles)
	first := h.Main()
	moved := false
	c.Progress = func(string, int64, int64) {
		if !moved {
			moved = true
			h.Commit(map[string][]byte{weightP: bytes.ToUpper(weights), configP: []byte(`{"d_model": 9}`)})
		}
	}
	dir := t.TempDir()
	commit, _ := fetchAll(t, c, "main", dir)
	if commit != first || h.Main() == first {
		t.Fatalf("pinned %s; main was %s, now %s", commit, first, h.Main())
	}
	for _, p := range []string{"model.safetensors", "config.json"} {
		if !bytes.Equal(mustRead(t, filepath.Join(dir, p)), oldFiles["models/"+repo+"/"+p]) {
			t.Errorf("%s is not the pinned commit's", p)
		}
	}
}

// TestGitFileVerifiedByBlobID: a file stored in git (no SHA-256) of the
// right size but other content is replaced, not kept.
func TestGitFileVerifiedByBlobID(t *testing.T) {
	_, c := newServer(t, map[string][]byte{configP: []byte(`{"d_model": 8}`)})
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"d_model": 7}`), 0o644) // same length, older
	fetchAll(t, c, "main", dir)
	if got := mustRead(t, filepath.Join(dir, "config.json")); string(got) != `{"d_model": 8}` {
		t.Errorf("config.json is %s, want the hub's", got)
	}
}

// TestRetries: rate limits (with Retry-After honoured), server errors, a
// stream cut halfway and a stream that stalls are all ridden out, and the
// file is the hub's.
func TestRetries(t *testing.T) {
	h, c := newServer(t, map[string][]byte{weightP: weights, configP: []byte(`{"d_model": 8}`)})
	c.StallTimeout = 300 * time.Millisecond
	h.Inject(hubtest.Fault{Match: "/revision/", Status: 429, RetryAfter: "1", Times: 1})
	h.Inject(hubtest.Fault{Match: "/tree/", Status: 503, Times: 2})
	h.Inject(hubtest.Fault{Match: "/repos/", CutAfter: 10000, Times: 1})
	h.Inject(hubtest.Fault{Match: "/repos/", StallAfter: 20000, Times: 1})
	h.Inject(hubtest.Fault{Match: "config.json", Status: 502, Times: 1})
	start := time.Now()
	dir := t.TempDir()
	fetchAll(t, c, "main", dir)
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("took %v: Retry-After: 1 was not honoured", took)
	}
	if !bytes.Equal(mustRead(t, filepath.Join(dir, "model.safetensors")), weights) {
		t.Error("the weights are not the hub's")
	}
	if r := h.Ranges(); len(r) != 2 || r[0] != "bytes=10000-" || r[1] != "bytes=30000-" {
		t.Errorf("ranges %v, want a resume after the cut and one after the stall", r)
	}

	// A limit that never lifts ends with the hub's answer, after Retries.
	h.Inject(hubtest.Fault{Match: "/revision/", Status: 429})
	c.Retries = 2
	_, err := c.Resolve(context.Background(), Models, repo, "main")
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 429 {
		t.Errorf("a lasting rate limit: %v", err)
	}
}

// TestWrongContentRange: a 206 that does not start where the part file
// ends restarts the file instead of appending at the wrong place.
func TestWrongContentRange(t *testing.T) {
	h, c := newServer(t, map[string][]byte{weightP: weights})
	h.Inject(hubtest.Fault{Match: "/repos/", WrongRange: true, Times: 1})
	ctx := context.Background()
	commit, _ := c.Resolve(ctx, Models, repo, "main")
	files, _ := c.List(ctx, Models, repo, commit, "")
	dst := filepath.Join(t.TempDir(), "model.safetensors")
	os.WriteFile(partName(dst, commit), weights[:5000], 0o644)
	if err := c.Download(ctx, Models, repo, commit, files[0], dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustRead(t, dst), weights) {
		t.Error("the file is not the hub's")
	}
}

// TestConcurrentDownloads: two downloads of one file at once (two fetch
// runs, two Slurm workers) take turns: one fetches, the other finds it.
func TestConcurrentDownloads(t *testing.T) {
	h, c := newServer(t, map[string][]byte{weightP: weights})
	ctx := context.Background()
	commit, _ := c.Resolve(ctx, Models, repo, "main")
	files, _ := c.List(ctx, Models, repo, commit, "")
	dst := filepath.Join(t.TempDir(), "model.safetensors")
	// Slow, so that the two overlap.
	h.Inject(hubtest.Fault{Match: "/repos/", StallAfter: 1000, Times: 1})
	c.StallTimeout = 300 * time.Millisecond
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			other := *c
			errs[i] = other.Download(ctx, Models, repo, commit, files[0], dst)
		}()
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil || !bytes.Equal(mustRead(t, dst), weights) {
		t.Fatalf("downloads: %v, %v", errs[0], errs[1])
	}
	gets := 0
	for _, r := range h.Requests() {
		if strings.Contains(r, "/resolve/") {
			gets++
		}
	}
	if gets != 2 { // the first try, stalled, and its resume
		t.Errorf("%d downloads of the file, want one process's (a try and its resume)", gets)
	}
}

// TestErrorsSayWhatIsWrong: the hub's X-Error-Code turns into what a user
// needs to know, with the hub's own message.
func TestErrorsSayWhatIsWrong(t *testing.T) {
	h, c := newServer(t, map[string][]byte{configP: []byte(`{}`), "models/org/gated/config.json": []byte(`{}`)})
	h.Gate("models/org/gated")
	ctx := context.Background()
	for _, tc := range []struct {
		run        func() error
		code, want string
	}{
		{func() error { _, err := c.Resolve(ctx, Models, "org/no-such-model", "main"); return err }, "RepoNotFound", "the repository does not exist"},
		{func() error { _, err := c.List(ctx, Models, repo, "v9", ""); return err }, "RevisionNotFound", "no such revision"},
		{func() error {
			return c.Download(ctx, Models, repo, "main", File{Path: "missing.bin"}, filepath.Join(t.TempDir(), "x"))
		}, "EntryNotFound", "no such file"},
		{func() error { _, err := c.Resolve(ctx, Models, "org/gated", "main"); return err }, "GatedRepo", "accept its conditions"},
	} {
		err := tc.run()
		var se *StatusError
		if !errors.As(err, &se) || se.Code != tc.code || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "the hub says") {
			t.Errorf("%s: %v", tc.code, err)
		}
	}
}

// TestListingPages: a listing longer than a page is read to its end.
func TestListingPages(t *testing.T) {
	files := map[string][]byte{}
	for _, p := range []string{"a.json", "b.json", "sub/c.json", "sub/d.json", "e.json"} {
		files["models/"+repo+"/"+p] = []byte(p)
	}
	h, c := newServer(t, files)
	h.PageSize(2)
	got, err := c.List(context.Background(), Models, repo, "main", "")
	if err != nil || len(got) != 5 {
		t.Errorf("listed %d files (%v), want 5", len(got), err)
	}
}

// TestRenamedRepository: a resolve URL redirected with a relative
// Location (a renamed repository) is followed, with the token, since it
// stays on the hub's host.
func TestRenamedRepository(t *testing.T) {
	h, c := newServer(t, map[string][]byte{configP: []byte(`{"d_model": 8}`)})
	h.Alias("models/old-org/t5-tiny", "models/"+repo)
	files, err := c.List(context.Background(), Models, repo, "main", "")
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "config.json")
	if err := c.Download(context.Background(), Models, "old-org/t5-tiny", "main", files[0], dst); err != nil {
		t.Fatal(err)
	}
	for _, a := range h.Auth() {
		if a != "Bearer "+hubtest.Token {
			t.Errorf("the hub got Authorization %q after a redirect on its own host", a)
		}
	}
}

// TestPermanentFailures: a host name that does not exist and a
// certificate that does not verify are not retried; a refused or reset
// connection is.
func TestPermanentFailures(t *testing.T) {
	wrap := func(err error) error { return &url.Error{Op: "Get", URL: "https://x", Err: err} }
	for err, want := range map[error]bool{
		wrap(&net.DNSError{Err: "no such host", Name: "hf.invalid", IsNotFound: true}):   true,
		wrap(x509.UnknownAuthorityError{}):                                               true,
		wrap(x509.HostnameError{Host: "x"}):                                              true,
		wrap(&net.DNSError{Err: "server misbehaving", Name: "hf.co", IsTemporary: true}): false,
		wrap(&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}):                        false,
		wrap(&net.OpError{Op: "read", Err: syscall.ECONNRESET}):                          false,
	} {
		if got := permanent(err); got != want {
			t.Errorf("permanent(%v) = %v", err, got)
		}
	}
}

// TestHostileHub: what a broken or hostile hub (or a mirror taken over)
// answers cannot get the token elsewhere, fill the disk, loop for ever or
// slip in a file that cannot be verified.
func TestHostileHub(t *testing.T) {
	var mu sync.Mutex
	var stolen []string
	sent := 0 // bytes of the endless body the client took
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		stolen = append(stolen, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Write([]byte("[]"))
	}))
	defer other.Close()
	blob := func(b []byte) string {
		h := sha1.New()
		fmt.Fprintf(h, "blob %d\x00", len(b))
		h.Write(b)
		return hex.EncodeToString(h.Sum(nil))
	}
	small := []byte("0123456789")
	var hub *httptest.Server
	hub = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/models/o/leak/tree/main/":
			w.Header().Set("Link", "<"+other.URL+"/page2>; rel=\"next\"")
			w.Write([]byte("[]"))
		case "/api/models/o/loop/tree/main/":
			w.Header().Set("Link", "<"+hub.URL+r.URL.RequestURI()+">; rel=\"next\"")
			w.Write([]byte("[]"))
		case "/api/models/o/nodigest/tree/main/":
			w.Write([]byte(`[{"type": "file", "path": "config.json", "size": 10}]`))
		case "/o/endless/resolve/main/f.bin":
			chunk := bytes.Repeat([]byte("x"), 1<<16)
			for range 1024 { // 64 MiB for a file listed at 10 bytes
				if _, err := w.Write(chunk); err != nil {
					return
				}
				mu.Lock()
				sent += len(chunk)
				mu.Unlock()
			}
		case "/o/total/resolve/main/f.bin":
			if r.Header.Get("Range") != "" {
				// The right start, but another file's length.
				w.Header().Set("Content-Range", "bytes 5-9/99")
				w.WriteHeader(http.StatusPartialContent)
				w.Write(small[5:])
				return
			}
			w.Write(small)
		case "/o/redirect/resolve/main/f.bin":
			http.Redirect(w, r, r.URL.Path, http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	}))
	defer hub.Close()
	c := &Client{Endpoint: hub.URL, Token: "SECRET", RetryWait: time.Millisecond}
	ctx := context.Background()

	if _, err := c.List(ctx, Models, "o/leak", "main", ""); err == nil || !strings.Contains(err.Error(), "on another host") {
		t.Errorf("a next page on another host: %v", err)
	}
	if len(stolen) != 0 {
		t.Errorf("the other host was asked %d times, with %q", len(stolen), stolen)
	}
	if _, err := c.List(ctx, Models, "o/loop", "main", ""); err == nil || !strings.Contains(err.Error(), "loop back") {
		t.Errorf("pages that loop: %v", err)
	}
	if _, err := c.List(ctx, Models, "o/nodigest", "main", ""); err == nil || !strings.Contains(err.Error(), "no digest") {
		t.Errorf("an entry without a digest: %v", err)
	}

	dir := t.TempDir()
	f := File{Path: "f.bin", Size: int64(len(small)), BlobID: blob(small)}
	dst := filepath.Join(dir, "f.bin")
	err := c.Download(ctx, Models, "o/endless", "main", f, dst)
	if err == nil || !strings.Contains(err.Error(), "more than the 10 bytes it lists") {
		t.Errorf("an endless body: %v", err)
	}
	mu.Lock()
	if sent > 32<<20 {
		t.Errorf("the client read %d MiB of a file listed at 10 bytes", sent>>20)
	}
	mu.Unlock()

	empty := File{Path: "f.bin", Size: 0, BlobID: blob(nil)}
	if err := c.Download(ctx, Models, "o/endless", "main", empty, filepath.Join(dir, "empty.bin")); err == nil || !strings.Contains(err.Error(), "more than the 0 bytes it lists") {
		t.Errorf("an endless body for an empty file: %v", err)
	}

	os.WriteFile(partName(dst, "main"), small[:5], 0o644)
	if err := c.Download(ctx, Models, "o/total", "main", f, dst); err != nil || !bytes.Equal(mustRead(t, dst), small) {
		t.Errorf("a Content-Range of another length: %v", err)
	}

	start := time.Now()
	err = c.Download(ctx, Models, "o/redirect", "main", f, filepath.Join(dir, "g.bin"))
	if err == nil || !strings.Contains(err.Error(), "more than 10 redirects") || time.Since(start) > 2*time.Second {
		t.Errorf("a redirect loop: %v after %v", err, time.Since(start))
	}
}

// TestTokenStaysHome: the token goes to the endpoint's host and scheme
// only: not a CDN subdomain, another port, a look-alike host, or plain
// http after https.
func TestTokenStaysHome(t *testing.T) {
	c := &Client{Endpoint: "https://huggingface.co"}
	for raw, want := range map[string]bool{
		"https://huggingface.co/org/m/resolve/main/x": true,
		"http://huggingface.co/org/m/resolve/main/x":  false,
		"https://cdn-lfs.huggingface.co/repos/x":      false,
		"https://huggingface.co:8443/x":               false,
		"https://huggingface.co.evil.com/x":           false,
		"https://evil.com/huggingface.co/x":           false,
	} {
		u, _ := url.Parse(raw)
		if got := c.home(u); got != want {
			t.Errorf("token to %s: %v, want %v", raw, got, want)
		}
	}
}

// TestWaitsAskedFor: the hub's Retry-After and RateLimit are honoured up
// to five minutes, whatever number they hold.
func TestWaitsAskedFor(t *testing.T) {
	c := &Client{RetryWait: time.Second}
	for header, want := range map[[2]string]time.Duration{
		{"Retry-After", "3"}:                             3 * time.Second,
		{"Retry-After", "31536000"}:                      maxAsked,
		{"Retry-After", "9223372036854775807"}:           maxAsked,
		{"RateLimit", `"api";r=0;t=55`}:                  56 * time.Second,
		{"RateLimit", `"api";r=0;t=9223372036854775807`}: maxAsked + time.Second,
	} {
		resp := &http.Response{Header: http.Header{}}
		resp.Header.Set(header[0], header[1])
		if got := c.wait(0, resp); got != want {
			t.Errorf("%s: %s: wait %v, want %v", header[0], header[1], got, want)
		}
	}
}

// TestSnapshotRecords: two fetches finishing at once each write a whole
// record; a new snapshot removes the files of the one it replaces that
// it does not have, and nothing it did not record.
func TestSnapshotRecords(t *testing.T) {
	dir := t.TempDir()
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				errs <- WriteSnapshot(dir, Snapshot{Repo: "o/r", Commit: strings.Repeat(fmt.Sprint(i), 40)})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"old.parquet", "both.parquet", "mine.txt"} {
		os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644)
	}
	if err := ReplaceSnapshot(dir, Snapshot{Commit: "a", Files: []string{"old.parquet", "both.parquet", "../outside"}}); err != nil {
		t.Fatal(err)
	}
	if err := ReplaceSnapshot(dir, Snapshot{Commit: "b", Files: []string{"both.parquet", "new.parquet"}}); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]bool{"old.parquet": false, "both.parquet": true, "mine.txt": true} {
		if _, err := os.Stat(filepath.Join(dir, f)); (err == nil) != want {
			t.Errorf("%s there: %v, want %v", f, err == nil, want)
		}
	}
}

// TestTokenFromLogin: without HF_TOKEN, the token huggingface-cli login
// wrote ($HF_HOME/token) is used.
func TestTokenFromLogin(t *testing.T) {
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "token"), []byte("hf_fromfile\n"), 0o600)
	t.Setenv("HF_TOKEN", "")
	t.Setenv("HF_TOKEN_PATH", "")
	t.Setenv("HF_HOME", home)
	if c := FromEnv(); c.Token != "hf_fromfile" {
		t.Errorf("token %q, want the login's", c.Token)
	}
	t.Setenv("HF_TOKEN", " hf_env\n")
	if c := FromEnv(); c.Token != "hf_env" {
		t.Errorf("token %q, want HF_TOKEN's, trimmed", c.Token)
	}
}

// TestCorruptPartRestarts: a part file of the same revision holding other
// bytes costs one more download, not a failure.
func TestCorruptPartRestarts(t *testing.T) {
	_, c := newServer(t, map[string][]byte{weightP: weights})
	ctx := context.Background()
	commit, _ := c.Resolve(ctx, Models, repo, "main")
	files, _ := c.List(ctx, Models, repo, commit, "")
	dst := filepath.Join(t.TempDir(), "model.safetensors")
	os.WriteFile(partName(dst, commit), bytes.Repeat([]byte("garbage!"), 1000), 0o644)
	if err := c.Download(ctx, Models, repo, commit, files[0], dst); err != nil || !bytes.Equal(mustRead(t, dst), weights) {
		t.Errorf("after a corrupt part file: %v", err)
	}
}

// TestCutListingRetried: a listing page cut partway is asked again.
func TestCutListingRetried(t *testing.T) {
	files := map[string][]byte{}
	for i := range 20 {
		files[fmt.Sprintf("models/%s/f%02d.json", repo, i)] = []byte(fmt.Sprint(i))
	}
	h, c := newServer(t, files)
	h.Inject(hubtest.Fault{Match: "/tree/", CutAfter: 100, Times: 1})
	got, err := c.List(context.Background(), Models, repo, "main", "")
	if err != nil || len(got) != 20 {
		t.Errorf("listed %d (%v), want 20", len(got), err)
	}
}

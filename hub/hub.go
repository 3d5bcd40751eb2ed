// Package hub downloads files from the Hugging Face hub as huggingface_hub's
// snapshot_download does: it resolves a revision to its commit once, lists
// and downloads at that commit (so a branch that moves meanwhile cannot mix
// two revisions), verifies every file (SHA-256 for LFS files, the git blob
// id for the others), retries rate limits, server errors and broken
// streams, resumes partial downloads, and sends the token to the hub's own
// host only.
//
// # Environment
//
// HF_ENDPOINT replaces https://huggingface.co (a mirror, or a test server);
// HF_TOKEN, when set, is sent as a bearer token.
package hub

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/readsweep/readsweep/internal/atomicfile"
)

// DefaultEndpoint is the public hub.
const DefaultEndpoint = "https://huggingface.co"

// Repository kinds, as the hub's URLs spell them.
const (
	Models   = "models"
	Datasets = "datasets"
)

// Client talks to one hub endpoint.
type Client struct {
	Endpoint string // without a trailing slash
	Token    string // sent as "Authorization: Bearer" to the endpoint's host, never elsewhere
	// HTTP is the client requests go through; nil: one with connection
	// timeouts. Its redirects are followed without the token whenever
	// they leave the endpoint's host.
	HTTP *http.Client
	// Progress, when set, is called as a file's bytes arrive; done counts
	// bytes already on disk from an earlier, interrupted download too.
	Progress func(path string, done, total int64)
	// Log, when set, is told of each retry.
	Log func(format string, args ...any)
	// Retries is how many times a request that met a rate limit, a
	// server error or a broken connection is tried again (0: 5).
	Retries int
	// RetryWait is the first wait before a retry, doubled each time up to
	// a minute, unless the hub says how long (0: 1 s).
	RetryWait time.Duration
	// StallTimeout ends a request that makes no progress for this long,
	// to be retried (0: a minute).
	StallTimeout time.Duration
}

// FromEnv returns a client configured by HF_ENDPOINT and the token as
// huggingface_hub finds it: HF_TOKEN, else the file HF_TOKEN_PATH names,
// else $HF_HOME/token (~/.cache/huggingface/token, which
// `huggingface-cli login` writes).
func FromEnv() *Client {
	c := &Client{Endpoint: DefaultEndpoint, Token: strings.TrimSpace(os.Getenv("HF_TOKEN"))}
	if c.Token == "" {
		path := os.Getenv("HF_TOKEN_PATH")
		if path == "" {
			home := os.Getenv("HF_HOME")
			if home == "" {
				if cache, err := os.UserCacheDir(); err == nil {
					home = filepath.Join(cache, "huggingface")
				}
			}
			if home != "" {
				path = filepath.Join(home, "token")
			}
		}
		if b, err := os.ReadFile(path); err == nil && path != "" {
			c.Token = strings.TrimSpace(string(b))
		}
	}
	if e := os.Getenv("HF_ENDPOINT"); e != "" {
		c.Endpoint = strings.TrimRight(e, "/")
	}
	return c
}

// File is one file of a repository as the tree API describes it.
type File struct {
	Path   string // relative to the repository root
	Size   int64
	SHA256 string // of the content, for files stored with LFS
	// BlobID is the git blob id (SHA-1 of "blob <size>\0" and the
	// content) of a file stored in git itself; empty for LFS files, whose
	// blob is their pointer.
	BlobID string
}

type treeEntry struct {
	Type string `json:"type"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	OID  string `json:"oid"`
	LFS  *struct {
		OID  string `json:"oid"`
		Size int64  `json:"size"`
	} `json:"lfs"`
}

// StatusError is an unexpected HTTP answer. Code is the hub's
// X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo),
// Message its explanation.
type StatusError struct {
	URL     string
	Status  int
	Code    string
	Message string
	// Token says whether the request carried a token, for the hint.
	Token bool
}

func (e *StatusError) Error() string {
	what := ""
	switch {
	case e.Code == "RepoNotFound" && e.Token:
		what = "the repository does not exist, or the token (HF_TOKEN) has no access to it"
	case e.Code == "RepoNotFound":
		// The hub answers 401 for a repository that does not exist too.
		what = "the repository does not exist (or is private: set HF_TOKEN to a token with access to it)"
	case e.Code == "RevisionNotFound":
		what = "the repository has no such revision (branch, tag or commit)"
	case e.Code == "EntryNotFound":
		what = "the repository has no such file at this revision"
	case e.Code == "GatedRepo":
		what = "the repository is gated: accept its conditions on its page, and set HF_TOKEN to a token of that account"
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		what = "not allowed: set HF_TOKEN to a token with access to this repository"
	case e.Status == http.StatusNotFound:
		what = "not found: check the repository name and revision"
	}
	msg := fmt.Sprintf("hub: GET %s: %d %s", e.URL, e.Status, http.StatusText(e.Status))
	if what != "" {
		msg += ": " + what
	}
	if e.Message != "" {
		msg += " (the hub says: " + e.Message + ")"
	}
	return msg
}

// statusError reads an error answer's code and message.
func statusError(u string, resp *http.Response) *StatusError {
	e := &StatusError{URL: u, Status: resp.StatusCode, Code: resp.Header.Get("X-Error-Code"), Message: resp.Header.Get("X-Error-Message"),
		Token: resp.Request != nil && resp.Request.Header.Get("Authorization") != ""}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	var parsed struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &parsed) == nil && parsed.Error != "" {
		e.Message = parsed.Error
	} else if e.Message == "" {
		e.Message = strings.TrimSpace(string(body))
	}
	if len(e.Message) > 300 {
		e.Message = e.Message[:300] + "…"
	}
	return e
}

func (c *Client) retries() int {
	if c.Retries > 0 {
		return c.Retries
	}
	return 5
}

func (c *Client) stallTimeout() time.Duration {
	if c.StallTimeout > 0 {
		return c.StallTimeout
	}
	return time.Minute
}

func (c *Client) logf(format string, args ...any) {
	if c.Log != nil {
		c.Log(format, args...)
	}
}

// httpClient is c.HTTP, or one with connection timeouts, with redirects
// that drop the token off the endpoint's host: Go would forward it to
// subdomains, and the hub's CDN hosts are its subdomains.
func (c *Client) httpClient() *http.Client {
	base := c.HTTP
	if base == nil {
		base = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   30 * time.Second,
			ResponseHeaderTimeout: c.stallTimeout(),
			MaxIdleConnsPerHost:   4,
		}}
	}
	client := *base
	client.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errTooManyRedirects
		}
		if c.home(req.URL) && c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		} else {
			req.Header.Del("Authorization")
		}
		return nil
	}
	return &client
}

var errTooManyRedirects = errors.New("more than 10 redirects")

// home reports whether u is on the endpoint's own host and scheme: the
// only place the token goes (not a CDN, not plain http after https).
func (c *Client) home(u *url.URL) bool {
	e, err := url.Parse(c.Endpoint)
	return err == nil && u.Host == e.Host && u.Scheme == e.Scheme
}

// retryableStatus: a rate limit or a server that may answer better later.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// rateLimitReset reads the hub's RateLimit header ("api";r=0;t=55): the
// seconds until the window resets.
var rateLimitReset = regexp.MustCompile(`(?:^|;)\s*t=(\d+)`)

// wait is how long to wait before try attempt+1: what the hub asked
// (Retry-After, RateLimit), else RetryWait doubled per attempt, at most a
// minute.
func (c *Client) wait(attempt int, resp *http.Response) time.Duration {
	first := c.RetryWait
	if first <= 0 {
		first = time.Second
	}
	d := min(first<<min(attempt, 10), time.Minute)
	if resp == nil {
		return d
	}
	// Whatever the hub asks, at most maxAsked: longer, a retry is not the
	// way on, and a huge number must not overflow.
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if n, err := strconv.ParseInt(strings.TrimSpace(ra), 10, 64); err == nil && n >= 0 {
			return time.Duration(min(n, int64(maxAsked/time.Second))) * time.Second
		}
		if t, err := http.ParseTime(ra); err == nil {
			return min(max(time.Until(t), 0), maxAsked)
		}
	}
	if m := rateLimitReset.FindStringSubmatch(resp.Header.Get("RateLimit")); m != nil {
		if n, err := strconv.ParseInt(m[1], 10, 64); err == nil {
			return time.Duration(min(n, int64(maxAsked/time.Second))+1) * time.Second
		}
	}
	return d
}

// maxAsked caps a wait the hub asks for.
const maxAsked = 5 * time.Minute

// backOff says what is tried again, and when, then waits that long (what
// the hub asked in resp, else the growing back-off of c.wait) or until
// ctx ends.
func (c *Client) backOff(ctx context.Context, attempt int, resp *http.Response, again string) error {
	wait := c.wait(attempt, resp)
	c.logf("%s in %v", again, wait.Round(time.Millisecond))
	return sleep(ctx, wait)
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// get sends a GET, retrying rate limits, server errors and connections
// that fail or stall. The answer's body ends the request with an error if
// it stalls for StallTimeout; close it.
func (c *Client) get(ctx context.Context, u string, header http.Header) (*http.Response, error) {
	client := c.httpClient()
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithCancel(ctx)
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("hub: %w", err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		if c.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		req.Header.Set("User-Agent", "readsweep")
		resp, err := client.Do(req)
		if err != nil && resp != nil {
			resp.Body.Close() // a redirect refused: the error tells why
			resp = nil
		}
		if err == nil && !retryableStatus(resp.StatusCode) {
			resp.Body = &stallReader{r: resp.Body, cancel: cancel, timer: time.AfterFunc(c.stallTimeout(), cancel), every: c.stallTimeout()}
			return resp, nil
		}
		why := ""
		if err != nil {
			why = err.Error()
		} else {
			why = resp.Status
		}
		if ctx.Err() != nil || attempt >= c.retries() || permanent(err) {
			if resp != nil {
				defer cancel()
				defer resp.Body.Close()
				return nil, statusError(u, resp)
			}
			cancel()
			if attempt == 0 {
				return nil, fmt.Errorf("hub: %w", err)
			}
			return nil, fmt.Errorf("hub: %w (after %d tries; is %s reachable? HF_ENDPOINT names another hub or mirror)", err, attempt+1, c.Endpoint)
		}
		if resp != nil {
			resp.Body.Close() // its headers stay, for the wait they ask
		}
		cancel()
		if err := c.backOff(ctx, attempt, resp, fmt.Sprintf("hub: GET %s: %s; trying again", u, why)); err != nil {
			return nil, err
		}
	}
}

// permanent reports a failure that no retry mends: a host name that does
// not exist, a certificate that does not verify.
func permanent(err error) bool {
	var dns *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var hostname x509.HostnameError
	return err != nil && (errors.Is(err, errTooManyRedirects) || errors.As(err, &dns) && dns.IsNotFound ||
		errors.As(err, &unknownCA) || errors.As(err, &invalid) || errors.As(err, &hostname))
}

// stallReader cancels its request when no byte arrives for a while.
type stallReader struct {
	r      io.ReadCloser
	cancel context.CancelFunc
	timer  *time.Timer
	every  time.Duration
}

func (s *stallReader) Read(b []byte) (int, error) {
	n, err := s.r.Read(b)
	if n > 0 {
		s.timer.Reset(s.every)
	}
	return n, err
}

func (s *stallReader) Close() error {
	s.timer.Stop()
	err := s.r.Close()
	s.cancel()
	return err
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// Resolve returns the commit a revision (a branch, tag or commit) names
// now. Listing and downloading at the commit keeps every file of one
// snapshot from the same revision, however the branch moves.
func (c *Client) Resolve(ctx context.Context, kind, repo, revision string) (string, error) {
	u := fmt.Sprintf("%s/api/%s/%s/revision/%s", c.Endpoint, kind, repo, url.PathEscape(revision))
	resp, err := c.get(ctx, u, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", statusError(u, resp)
	}
	var info struct {
		SHA string `json:"sha"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil {
		return "", fmt.Errorf("hub: GET %s: %w", u, err)
	}
	if !commitID.MatchString(info.SHA) {
		return "", fmt.Errorf("hub: GET %s: no commit in the answer (sha %q)", u, info.SHA)
	}
	return info.SHA, nil
}

var commitID = regexp.MustCompile(`^[0-9a-f]{40}$`)

// nextLink is the rel="next" URL of a Link header.
var nextLink = regexp.MustCompile(`<([^>]+)>\s*;\s*rel="?next"?`)

// List returns the files under dir (recursively) of a repository at a
// revision, reading every page of the listing. Each entry must carry its
// digest (SHA-256 for LFS files, the git blob id for the others): a file
// that cannot be verified is not downloaded.
func (c *Client) List(ctx context.Context, kind, repo, revision, dir string) ([]File, error) {
	u := fmt.Sprintf("%s/api/%s/%s/tree/%s/%s?recursive=true&expand=false", c.Endpoint, kind, repo, url.PathEscape(revision), escapePath(dir))
	var out []File
	seen := map[string]bool{}
	for u != "" {
		if seen[u] {
			return nil, fmt.Errorf("hub: listing %s: the pages loop back to %s", repo, u)
		}
		seen[u] = true
		entries, next, err := c.listPage(ctx, u)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.Type != "file" {
				continue
			}
			f := File{Path: e.Path, Size: e.Size, BlobID: e.OID}
			if e.LFS != nil {
				f.SHA256, f.Size, f.BlobID = e.LFS.OID, e.LFS.Size, ""
			}
			if !sha256Hex.MatchString(f.SHA256) && !commitID.MatchString(f.BlobID) {
				return nil, fmt.Errorf("hub: listing %s: %s has no digest to verify it by (oid %q, lfs oid %q)", repo, e.Path, e.OID, f.SHA256)
			}
			out = append(out, f)
		}
		u = next
	}
	return out, nil
}

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// listPage reads one page of a listing and the URL of the next (empty:
// none), trying a page cut partway again as get tries a failed request.
func (c *Client) listPage(ctx context.Context, u string) ([]treeEntry, string, error) {
	for attempt := 0; ; attempt++ {
		resp, err := c.get(ctx, u, nil)
		if err != nil {
			return nil, "", err
		}
		if resp.StatusCode != http.StatusOK {
			err := statusError(u, resp)
			resp.Body.Close()
			return nil, "", err
		}
		var entries []treeEntry
		err = json.NewDecoder(resp.Body).Decode(&entries)
		resp.Body.Close()
		if err != nil {
			if ctx.Err() != nil || attempt >= c.retries() || !(errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.Canceled) || isNetErr(err)) {
				return nil, "", fmt.Errorf("hub: GET %s: %w", u, err)
			}
			if err := c.backOff(ctx, attempt, nil, fmt.Sprintf("hub: GET %s: %v; trying again", u, err)); err != nil {
				return nil, "", err
			}
			continue
		}
		m := nextLink.FindStringSubmatch(resp.Header.Get("Link"))
		if m == nil {
			return entries, "", nil
		}
		page, _ := url.Parse(u)
		ref, err := url.Parse(m[1])
		if err != nil {
			return nil, "", fmt.Errorf("hub: GET %s: bad Link %q", u, m[1])
		}
		next := page.ResolveReference(ref)
		if !c.home(next) {
			// The next page would get the token: only the hub's own.
			return nil, "", fmt.Errorf("hub: GET %s: the next page of the listing is on another host (%s)", u, next.Redacted())
		}
		return entries, next.String(), nil
	}
}

// isNetErr reports a connection that failed while a body was read.
func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne)
}

// URL returns the download URL of a file.
func (c *Client) URL(kind, repo, revision, path string) string {
	prefix := c.Endpoint
	if kind == Datasets {
		prefix += "/datasets"
	}
	return fmt.Sprintf("%s/%s/resolve/%s/%s", prefix, repo, url.PathEscape(revision), escapePath(path))
}

// ErrVerify marks a downloaded file whose size or digest is not what the
// hub reported.
var ErrVerify = errors.New("hub: downloaded file does not match the hub's size and digest")

// Download fetches f of a repository at revision (best a commit, from
// Resolve) to dst. A complete dst that verifies is kept as it is; a part
// file of an interrupted download of the same revision is resumed. The
// file appears at dst only once whole and verified. Two processes
// downloading the same dst take turns: the second finds the file there.
func (c *Client) Download(ctx context.Context, kind, repo, revision string, f File, dst string) error {
	// A file that is there and verifies needs no lock, nor a writable
	// folder (a shared, read-only cache).
	if ok, _ := verify(dst, f); ok {
		c.report(f, f.Size, f.Size)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	unlock, err := lockFile(ctx, dst+".lock")
	if errors.Is(err, syscall.ENOLCK) || errors.Is(err, syscall.EOPNOTSUPP) {
		// A file system without locks (Lustre without -o flock): go on;
		// the download still verifies before it replaces anything.
		c.logf("hub: %s: the file system does not lock files; two fetches of it at once may each download it", dst)
		unlock, err = func() {}, nil
	}
	if err != nil {
		return fmt.Errorf("hub: lock %s: %w", dst, err)
	}
	defer unlock()
	if ok, _ := verify(dst, f); ok { // another process fetched it meanwhile
		c.report(f, f.Size, f.Size)
		return nil
	}
	part := partName(dst, revision)
	removeOtherParts(dst, part)
	u := c.URL(kind, repo, revision, f.Path)
	restarted := false
	for attempt := 0; ; attempt++ {
		err := c.downloadOnce(ctx, u, f, part)
		if err == nil {
			err = c.finish(part, dst, f)
			if errors.Is(err, ErrVerify) && !restarted {
				// A part file left by an earlier run held other bytes
				// (finish removed it): once more from the first byte.
				restarted = true
				c.logf("hub: %s did not verify; downloading it again from the start", f.Path)
				continue
			}
			return err
		}
		var broken *brokenStream
		if !errors.As(err, &broken) || ctx.Err() != nil {
			return err
		}
		if attempt >= c.retries() {
			return fmt.Errorf("hub: download %s: %w (after %d tries; run again to resume)", f.Path, broken.err, attempt+1)
		}
		if err := c.backOff(ctx, attempt, nil, fmt.Sprintf("hub: download %s: %v; resuming", f.Path, broken.err)); err != nil {
			return err
		}
	}
}

// partName is where a download of revision to dst grows: one per
// revision, so that a part file is never resumed with another
// revision's bytes.
func partName(dst, revision string) string {
	tag := revision
	if commitID.MatchString(revision) {
		tag = revision[:12]
	}
	return dst + "." + url.PathEscape(tag) + ".part"
}

// removeOtherParts deletes part files of dst other than keep: left by
// downloads of other revisions, they would never be resumed.
func removeOtherParts(dst, keep string) {
	matches, _ := filepath.Glob(globEscape(dst) + ".*.part")
	for _, m := range matches {
		if m != keep {
			os.Remove(m)
		}
	}
}

// globEscape quotes the pattern characters of a path for filepath.Glob.
func globEscape(p string) string {
	return strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`).Replace(p)
}

// brokenStream is a download cut or garbled partway: resumable.
type brokenStream struct{ err error }

func (b *brokenStream) Error() string { return b.err.Error() }

// downloadOnce adds to part what the server sends from part's end.
func (c *Client) downloadOnce(ctx context.Context, u string, f File, part string) error {
	var have int64
	if st, err := os.Stat(part); err == nil {
		have = st.Size()
		if f.Size > 0 && have > f.Size {
			have = 0
		}
	}
	header := http.Header{}
	if have > 0 {
		header.Set("Range", fmt.Sprintf("bytes=%d-", have))
	}
	resp, err := c.get(ctx, u, header)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	flags := os.O_CREATE | os.O_WRONLY
	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		start, total, ok := contentRange(resp.Header.Get("Content-Range"))
		if !ok || start != have || f.Size > 0 && total >= 0 && total != f.Size {
			// Appending would put bytes at the wrong place: start over.
			os.Remove(part)
			return &brokenStream{fmt.Errorf("asked for bytes from %d, the answer's Content-Range is %q", have, resp.Header.Get("Content-Range"))}
		}
		flags |= os.O_APPEND
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0 && have == f.Size:
		return nil // the part file is already whole
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0:
		// The part file is not a beginning of this file: start over.
		os.Remove(part)
		return &brokenStream{fmt.Errorf("the hub cannot resume from byte %d", have)}
	case resp.StatusCode == http.StatusOK:
		flags |= os.O_TRUNC
		have = 0
	default:
		return statusError(u, resp)
	}
	out, err := os.OpenFile(part, flags, 0o644)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	total := f.Size
	if total == 0 && resp.ContentLength > 0 {
		total = have + resp.ContentLength
	}
	w := &progressWriter{w: out, done: have, total: total, report: func(d, t int64) { c.report(f, d, t) }}
	// Never more than the listing says (an empty file included): a body
	// without end must not fill the disk before the digest fails.
	body := io.LimitReader(resp.Body, f.Size-have+1)
	_, err = io.Copy(w, body)
	if err == nil && w.done > f.Size {
		out.Close()
		os.Remove(part)
		return &brokenStream{fmt.Errorf("the hub sent more than the %d bytes it lists", f.Size)}
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		return fmt.Errorf("hub: %w", cerr)
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("hub: download %s (resumable: run again): %w", f.Path, ctx.Err())
		}
		return &brokenStream{err}
	}
	if resp.ContentLength >= 0 && w.done-have != resp.ContentLength {
		return &brokenStream{fmt.Errorf("the stream ended after %d of %d bytes", w.done-have, resp.ContentLength)}
	}
	return nil
}

// contentRange reads "bytes START-END/TOTAL" (TOTAL -1 when "*").
func contentRange(cr string) (start, total int64, ok bool) {
	rest, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return 0, 0, false
	}
	span, size, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, false
	}
	first, _, ok := strings.Cut(span, "-")
	if !ok {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	total = -1
	if size != "*" {
		if total, err = strconv.ParseInt(size, 10, 64); err != nil {
			return 0, 0, false
		}
	}
	return start, total, true
}

func (c *Client) finish(part, dst string, f File) error {
	ok, err := verify(part, f)
	if err != nil {
		return err
	}
	if !ok {
		os.Remove(part)
		return fmt.Errorf("%w: %s", ErrVerify, f.Path)
	}
	if err := os.Rename(part, dst); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	return nil
}

func (c *Client) report(f File, done, total int64) {
	if c.Progress != nil {
		c.Progress(f.Path, done, total)
	}
}

// verify reports whether path holds f: its size, and its SHA-256 (LFS) or
// git blob id (the others) when the hub gave one.
func verify(path string, f File) (bool, error) {
	st, err := os.Stat(path)
	if err != nil {
		return false, nil
	}
	if f.Size > 0 && st.Size() != f.Size {
		return false, nil
	}
	var h hash.Hash
	var want string
	switch {
	case f.SHA256 != "":
		h, want = sha256.New(), f.SHA256
	case f.BlobID != "":
		h, want = sha1.New(), f.BlobID
		fmt.Fprintf(h, "blob %d\x00", st.Size())
	default:
		return true, nil
	}
	in, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("hub: %w", err)
	}
	defer in.Close()
	if _, err := io.Copy(h, in); err != nil {
		return false, fmt.Errorf("hub: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)) == strings.ToLower(want), nil
}

type progressWriter struct {
	w           io.Writer
	done, total int64
	report      func(done, total int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.done += int64(n)
	p.report(p.done, p.total)
	return n, err
}

// RevisionFile, in a folder of downloaded files, records the repository,
// the revision asked for and the commit it named, so that the files can
// be traced to their snapshot.
const RevisionFile = ".hub-revision.json"

// Snapshot is what RevisionFile holds.
type Snapshot struct {
	Endpoint string `json:"endpoint"`
	Kind     string `json:"kind"`
	Repo     string `json:"repo"`
	Revision string `json:"revision"`
	Commit   string `json:"commit"`
	// Files are the snapshot's files, relative to the folder (slashes).
	Files []string `json:"files"`
}

// ReplaceSnapshot records s in dir and removes the files of the snapshot
// it replaces that s does not have: a fetch of another revision (a
// re-split dataset, weights sharded since) must not leave the old files
// for a loader to read beside the new ones. Files this package did not
// record are left alone.
func ReplaceSnapshot(dir string, s Snapshot) error {
	var old Snapshot
	if b, err := os.ReadFile(filepath.Join(dir, RevisionFile)); err == nil {
		json.Unmarshal(b, &old) // an unreadable record removes nothing
	}
	keep := map[string]bool{}
	for _, f := range s.Files {
		keep[f] = true
	}
	for _, f := range old.Files {
		if keep[f] || !filepath.IsLocal(filepath.FromSlash(f)) {
			continue
		}
		if err := os.Remove(filepath.Join(dir, filepath.FromSlash(f))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("hub: remove %s of the replaced snapshot %s: %w", f, old.Commit, err)
		}
	}
	return WriteSnapshot(dir, s)
}

// WriteSnapshot records s in dir's RevisionFile, whole: two fetches
// finishing at once each leave a whole record.
func WriteSnapshot(dir string, s Snapshot) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, RevisionFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	return nil
}

// Package hub downloads files from the Hugging Face hub: it lists a
// repository folder through the hub's tree API and fetches files from their
// resolve URLs, resuming partial downloads and verifying the sizes and
// SHA-256 digests the hub reports.
//
// # Environment
//
// HF_ENDPOINT replaces https://huggingface.co (a mirror, or a test server);
// HF_TOKEN, when set, is sent as a bearer token.
package hub

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
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
	Token    string // sent as "Authorization: Bearer" when set
	HTTP     *http.Client
	// Progress, when set, is called as a file's bytes arrive; done counts
	// bytes already on disk from an earlier, interrupted download too.
	Progress func(path string, done, total int64)
}

// FromEnv returns a client configured by HF_ENDPOINT and HF_TOKEN.
func FromEnv() *Client {
	c := &Client{Endpoint: DefaultEndpoint, Token: os.Getenv("HF_TOKEN"), HTTP: http.DefaultClient}
	if e := os.Getenv("HF_ENDPOINT"); e != "" {
		c.Endpoint = strings.TrimRight(e, "/")
	}
	return c
}

// File is one file of a repository as the tree API describes it.
type File struct {
	Path   string // relative to the repository root
	Size   int64
	SHA256 string // of the content, for files stored with LFS; empty otherwise
}

type treeEntry struct {
	Type string `json:"type"`
	Path string `json:"path"`
	Size int64  `json:"size"`
	LFS  *struct {
		OID  string `json:"oid"`
		Size int64  `json:"size"`
	} `json:"lfs"`
}

// StatusError is an unexpected HTTP answer.
type StatusError struct {
	URL    string
	Status int
	Body   string
}

func (e *StatusError) Error() string {
	hint := ""
	switch e.Status {
	case http.StatusUnauthorized, http.StatusForbidden:
		hint = "; HINT: set HF_TOKEN to a token with access to this repository"
	case http.StatusNotFound:
		hint = "; check the repository name and revision"
	}
	return fmt.Sprintf("hub: GET %s: %s%s", e.URL, http.StatusText(e.Status), hint)
}

func (c *Client) get(ctx context.Context, u string, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	req.Header.Set("User-Agent", "readsweep")
	client := c.HTTP
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	return resp, nil
}

func escapePath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		parts[i] = url.PathEscape(s)
	}
	return strings.Join(parts, "/")
}

// List returns the files under dir (recursively) of a repository at a
// revision.
func (c *Client) List(ctx context.Context, kind, repo, revision, dir string) ([]File, error) {
	u := fmt.Sprintf("%s/api/%s/%s/tree/%s/%s?recursive=true", c.Endpoint, kind, repo, url.PathEscape(revision), escapePath(dir))
	resp, err := c.get(ctx, u, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, &StatusError{URL: u, Status: resp.StatusCode, Body: string(body)}
	}
	var entries []treeEntry
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		return nil, fmt.Errorf("hub: GET %s: %w", u, err)
	}
	var out []File
	for _, e := range entries {
		if e.Type != "file" {
			continue
		}
		f := File{Path: e.Path, Size: e.Size}
		if e.LFS != nil {
			f.SHA256, f.Size = e.LFS.OID, e.LFS.Size
		}
		out = append(out, f)
	}
	return out, nil
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
var ErrVerify = errors.New("hub: downloaded file does not match the hub's size or SHA-256")

// Download fetches f to dst. A complete dst that verifies is kept as it
// is; dst+".part" from an interrupted download is resumed with a Range
// request. The file appears at dst only once it is complete and verified.
func (c *Client) Download(ctx context.Context, kind, repo, revision string, f File, dst string) error {
	if ok, _ := verify(dst, f); ok {
		c.report(f, f.Size, f.Size)
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	part := dst + ".part"
	var have int64
	if st, err := os.Stat(part); err == nil {
		have = st.Size()
		if f.Size > 0 && have > f.Size {
			have = 0
		}
	}
	u := c.URL(kind, repo, revision, f.Path)
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
		flags |= os.O_APPEND
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0 && have == f.Size:
		// The part file is already whole.
		resp.Body.Close()
		return c.finish(part, dst, f)
	case resp.StatusCode == http.StatusOK:
		flags |= os.O_TRUNC
		have = 0
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &StatusError{URL: u, Status: resp.StatusCode, Body: string(body)}
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
	_, err = io.Copy(w, resp.Body)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("hub: download %s (resumable: run again): %w", f.Path, err)
	}
	return c.finish(part, dst, f)
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

// verify reports whether path holds f: its size, and its SHA-256 when the
// hub gave one.
func verify(path string, f File) (bool, error) {
	st, err := os.Stat(path)
	if err != nil {
		return false, nil
	}
	if f.Size > 0 && st.Size() != f.Size {
		return false, nil
	}
	if f.SHA256 == "" {
		return true, nil
	}
	in, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("hub: %w", err)
	}
	defer in.Close()
	h := sha256.New()
	if _, err := io.Copy(h, in); err != nil {
		return false, fmt.Errorf("hub: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)) == strings.ToLower(f.SHA256), nil
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

// Package hubtest serves the Hugging Face hub's API from memory, for tests
// of code that downloads from the hub, answering as the real hub does:
//
//   - /api/{models|datasets}/ORG/REPO/revision/REV: the commit a revision
//     names ({"sha": ...});
//   - /api/KIND/ORG/REPO/tree/REV/DIR?recursive=true: the files, a page at
//     a time with a Link header to the next; an LFS file with its real size
//     at the top level, "lfs": {"oid" (SHA-256), "size", "pointerSize"} and
//     the pointer's blob oid; any other file with its git blob oid;
//   - /[datasets/]ORG/REPO/resolve/REV/PATH: a small file served with its
//     X-Repo-Commit; an LFS file redirected to a second host, a CDN, as
//     huggingface.co redirects to cdn-lfs; an aliased (renamed) repository
//     redirected with a relative Location;
//   - errors with X-Error-Code: RepoNotFound (401, as the hub answers for a
//     repository that does not exist), RevisionNotFound, EntryNotFound,
//     GatedRepo, and a JSON body {"error": ...}.
//
// Faults can be injected: a status (429 with Retry-After, 503) a number of
// times, a stream cut partway, a 206 whose Content-Range starts elsewhere.
// Commit moves main to new files, as a push does. NewServer points
// HF_ENDPOINT at it and sets HF_TOKEN.
package hubtest

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// Token is the HF_TOKEN NewServer sets.
const Token = "hubtest-token"

// Server is a fake hub. Files are keyed "datasets/ORG/REPO/PATH" or
// "models/ORG/REPO/PATH".
type Server struct {
	mu       sync.Mutex
	commits  map[string]map[string][]byte // commit → files
	main     string                       // the commit main names
	branches map[string]string            // other refs (refs/convert/parquet) → commit
	aliases  map[string]string            // "KIND/OLD/NAME" → "KIND/NEW/NAME"
	gated    map[string]bool              // "KIND/ORG/NAME"
	pageSize int
	faults   []*Fault
	ranges   []string
	hubAuth  []string
	cdnAuth  []string
	requests []string // method and path of every request, to either host
	cdn      *httptest.Server
	hub      *httptest.Server
}

// Fault is a wrong answer to requests whose path contains Match (on the
// hub or the CDN), Times times (0: always).
type Fault struct {
	Match string
	Times int
	// Status answers with this status; RetryAfter, when set, is sent as
	// the Retry-After header.
	Status     int
	RetryAfter string
	// CutAfter sends this many bytes of the body, then drops the
	// connection.
	CutAfter int
	// WrongRange answers a Range request with 206 and a body starting at
	// byte 0, its Content-Range saying so.
	WrongRange bool
	// StallAfter sends this many bytes of the body, then nothing until
	// the client goes away.
	StallAfter int
}

// NewServer starts a fake hub serving files (as main's first commit)
// until the test ends.
func NewServer(t testing.TB, files map[string][]byte) *Server {
	s := &Server{commits: map[string]map[string][]byte{}, branches: map[string]string{}, aliases: map[string]string{}, gated: map[string]bool{}, pageSize: 50}
	s.main = s.addCommit(files)
	s.cdn = httptest.NewServer(http.HandlerFunc(s.serveCDN))
	s.hub = httptest.NewServer(s)
	t.Cleanup(s.hub.Close)
	t.Cleanup(s.cdn.Close)
	t.Setenv("HF_ENDPOINT", s.hub.URL+"/")
	t.Setenv("HF_TOKEN", Token)
	return s
}

// URL is the hub's address; CDNURL the host LFS files redirect to.
func (s *Server) URL() string    { return s.hub.URL }
func (s *Server) CDNURL() string { return s.cdn.URL }

// addCommit stores files as a new commit and returns its id.
func (s *Server) addCommit(files map[string][]byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "%d", len(s.commits))
	keys := make([]string, 0, len(files))
	for k := range files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%s\x00%x\x00", k, sha256.Sum256(files[k]))
	}
	id := hex.EncodeToString(h.Sum(nil))
	s.commits[id] = files
	return id
}

// Commit makes files main's new commit, as a push does, and returns its
// id; the earlier commits stay reachable by id.
func (s *Server) Commit(files map[string][]byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.main = s.addCommit(files)
	return s.main
}

// Branch makes ref (refs/convert/parquet, a tag) name a new commit of
// files, and returns its id.
func (s *Server) Branch(ref string, files map[string][]byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.addCommit(files)
	s.branches[ref] = id
	return id
}

// Main is the commit main names now.
func (s *Server) Main() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.main
}

// Alias makes old ("KIND/ORG/NAME") a renamed repository whose resolve
// URLs redirect, with a relative Location, to new.
func (s *Server) Alias(old, new string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aliases[old] = new
}

// Gate makes a repository ("KIND/ORG/NAME") answer GatedRepo to every
// request.
func (s *Server) Gate(repo string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gated[repo] = true
}

// PageSize sets how many entries a tree page holds.
func (s *Server) PageSize(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pageSize = n
}

// Inject adds a fault.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// Ranges returns the Range headers of the requests for bytes so far (a
// redirected request's, once: where the bytes came from).
func (s *Server) Ranges() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

// Auth returns the Authorization headers the hub's own host received, one
// per request.
func (s *Server) Auth() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.hubAuth...)
}

// CDNAuth returns the Authorization headers the CDN host received.
func (s *Server) CDNAuth() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.cdnAuth...)
}

// Requests returns "METHOD PATH" of every request to either host.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// fault returns the first live fault of a kind (a status, or one in the
// body) for a path, counting it used.
func (s *Server) fault(p string, status bool) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.faults {
		if !strings.Contains(p, f.Match) || f.Times < 0 || (f.Status != 0) != status {
			continue
		}
		if f.Times > 0 {
			if f.Times--; f.Times == 0 {
				f.Times = -1 // used up
			}
		}
		c := *f
		return &c
	}
	return nil
}

// isLFS says which files the hub stores with LFS: its weights, data and
// tokenizer models, as .gitattributes marks them in real repositories.
func isLFS(p string) bool {
	switch path.Ext(p) {
	case ".safetensors", ".bin", ".parquet", ".model", ".msgpack", ".h5", ".arrow":
		return true
	}
	return false
}

// blobOID is git's object id of a blob with this content.
func blobOID(b []byte) string {
	h := sha1.New()
	fmt.Fprintf(h, "blob %d\x00", len(b))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// lfsPointer is the pointer file git stores for an LFS file.
func lfsPointer(b []byte) []byte {
	return []byte(fmt.Sprintf("version https://git-lfs.github.com/spec/v1\noid sha256:%x\nsize %d\n", sha256.Sum256(b), len(b)))
}

func hubError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("X-Error-Code", code)
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

func (s *Server) record(r *http.Request, cdn bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cdn {
		s.cdnAuth = append(s.cdnAuth, r.Header.Get("Authorization"))
	} else {
		s.hubAuth = append(s.hubAuth, r.Header.Get("Authorization"))
	}
	s.requests = append(s.requests, r.Method+" "+r.URL.Path)
}

// repoFiles returns the files of repository KIND/ORG/NAME at rev (a
// branch or a commit id), keyed by their path in the repository.
func (s *Server) repoFiles(repo, rev string) (files map[string][]byte, commit string, repoOK, revOK bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	commit = rev
	if rev == "main" {
		commit = s.main
	} else if id, ok := s.branches[rev]; ok {
		commit = id
	}
	prefix := repo + "/"
	for _, all := range s.commits {
		for k := range all {
			if strings.HasPrefix(k, prefix) {
				repoOK = true
			}
		}
	}
	all, ok := s.commits[commit]
	if !ok {
		return nil, "", repoOK, false
	}
	files = map[string][]byte{}
	for k, v := range all {
		if rel, ok := strings.CutPrefix(k, prefix); ok {
			files[rel] = v
		}
	}
	return files, commit, repoOK, true
}

// snapshot finds repo's files at an escaped revision, or answers the
// hub's error for a repository or revision that does not exist.
func (s *Server) snapshot(w http.ResponseWriter, r *http.Request, repo, revEsc string) (files map[string][]byte, commit, rev string, ok bool) {
	rev, err := url.PathUnescape(revEsc)
	if err != nil {
		http.NotFound(w, r)
		return nil, "", "", false
	}
	files, commit, repoOK, revOK := s.repoFiles(repo, rev)
	switch {
	case !repoOK:
		hubError(w, http.StatusUnauthorized, "RepoNotFound", "Repository Not Found for url: "+r.URL.String()+".")
		return nil, "", "", false
	case !revOK:
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return nil, "", "", false
	}
	return files, commit, rev, true
}

func (s *Server) isGated(repo string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gated[repo]
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.record(r, false)
	p := r.URL.Path
	if f := s.fault(p, true); f != nil {
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		hubError(w, f.Status, "", http.StatusText(f.Status))
		return
	}
	if rest, ok := strings.CutPrefix(p, "/api/"); ok {
		s.api(w, r, rest)
		return
	}
	kind := "models"
	if rest, ok := strings.CutPrefix(p, "/datasets/"); ok {
		kind, p = "datasets", "/"+rest
	}
	parts := strings.SplitN(strings.TrimPrefix(p, "/"), "/", 5) // ORG NAME resolve REV PATH
	if len(parts) < 5 || parts[2] != "resolve" {
		http.NotFound(w, r)
		return
	}
	repo := kind + "/" + parts[0] + "/" + parts[1]
	s.mu.Lock()
	target, aliased := s.aliases[repo]
	s.mu.Unlock()
	if aliased {
		// Relative, as the hub redirects a renamed repository.
		targetKind, name, _ := strings.Cut(target, "/")
		loc := "/" + name
		if targetKind == "datasets" {
			loc = "/datasets/" + name
		}
		w.Header().Set("Location", loc+"/resolve/"+parts[3]+"/"+parts[4])
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	if s.isGated(repo) {
		hubError(w, http.StatusUnauthorized, "GatedRepo", "Access to this repository is restricted: accept its conditions on its page")
		return
	}
	files, commit, rev, ok := s.snapshot(w, r, repo, parts[3])
	if !ok {
		return
	}
	data, ok := files[parts[4]]
	if !ok {
		hubError(w, http.StatusNotFound, "EntryNotFound", parts[4]+" does not exist on \""+rev+"\"")
		return
	}
	w.Header().Set("X-Repo-Commit", commit)
	if isLFS(parts[4]) {
		// To another host, absolute, as huggingface.co sends LFS files
		// to its CDN.
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(data)))
		w.Header().Set("Location", fmt.Sprintf("%s/repos/%s/%s/%x?sig=x", s.cdn.URL, commit[:2], commit, sha256.Sum256(data)))
		w.WriteHeader(http.StatusFound)
		return
	}
	s.serveBytes(w, r, data)
}

// serveCDN serves LFS files by content digest.
func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request) {
	s.record(r, true)
	if f := s.fault(r.URL.Path, true); f != nil {
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		http.Error(w, http.StatusText(f.Status), f.Status)
		return
	}
	want := path.Base(r.URL.Path)
	s.mu.Lock()
	var data []byte
	found := false
	for _, files := range s.commits {
		for _, b := range files {
			if fmt.Sprintf("%x", sha256.Sum256(b)) == want {
				data, found = b, true
			}
		}
	}
	s.mu.Unlock()
	if !found {
		http.NotFound(w, r)
		return
	}
	s.serveBytes(w, r, data)
}

// serveBytes answers a GET with an optional "bytes=N-" range, applying a
// fault on the way.
func (s *Server) serveBytes(w http.ResponseWriter, r *http.Request, data []byte) {
	f := s.fault(r.URL.Path, false)
	start := 0
	if rg := r.Header.Get("Range"); rg != "" {
		s.mu.Lock()
		s.ranges = append(s.ranges, rg)
		s.mu.Unlock()
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		if err != nil || n < 0 {
			http.Error(w, "bad range", http.StatusBadRequest)
			return
		}
		if n >= len(data) {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", len(data)))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		start = n
		if f != nil && f.WrongRange {
			start = 0
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, len(data)-1, len(data)))
	}
	body := data[start:]
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("ETag", `"`+blobOID(data)+`"`)
	if r.Header.Get("Range") != "" {
		w.WriteHeader(http.StatusPartialContent)
	} else {
		w.WriteHeader(http.StatusOK)
	}
	if f != nil && f.StallAfter > 0 && f.StallAfter < len(body) {
		w.Write(body[:f.StallAfter])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		return
	}
	if f != nil && f.CutAfter > 0 && f.CutAfter < len(body) {
		w.Write(body[:f.CutAfter])
		w.(http.Flusher).Flush()
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
			}
		}
		return
	}
	w.Write(body)
}

// api answers the revision and tree endpoints.
func (s *Server) api(w http.ResponseWriter, r *http.Request, rest string) {
	kind, rest, _ := strings.Cut(rest, "/")
	org, rest, _ := strings.Cut(rest, "/")
	name, rest, _ := strings.Cut(rest, "/")
	repo := kind + "/" + org + "/" + name
	if s.isGated(repo) {
		hubError(w, http.StatusUnauthorized, "GatedRepo", "Access to this repository is restricted: accept its conditions on its page")
		return
	}
	endpoint, tail, _ := strings.Cut(rest, "/")
	// A revision may hold slashes (refs/convert/parquet), escaped.
	revEsc, dir, _ := strings.Cut(tail, "/")
	if endpoint == "revision" {
		revEsc = tail
	}
	files, commit, _, ok := s.snapshot(w, r, repo, revEsc)
	if !ok {
		return
	}
	switch endpoint {
	case "revision":
		json.NewEncoder(w).Encode(map[string]any{"id": org + "/" + name, "sha": commit})
	case "tree":
		s.tree(w, r, files, dir)
	default:
		http.NotFound(w, r)
	}
}

// tree lists files under dir a page at a time (a "cursor" query names the
// page), each with the fields the hub gives, plus directory entries to
// be skipped.
func (s *Server) tree(w http.ResponseWriter, r *http.Request, files map[string][]byte, dir string) {
	var entries []map[string]any
	dirs := map[string]bool{}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, rel := range paths {
		if dir != "" && !strings.HasPrefix(rel, dir+"/") {
			continue
		}
		data := files[rel]
		for d := path.Dir(rel); d != "." && d != dir && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			entries = append(entries, map[string]any{"type": "directory", "oid": blobOID([]byte(d)), "size": 0, "path": d})
		}
		e := map[string]any{"type": "file", "path": rel, "size": len(data), "oid": blobOID(data)}
		if isLFS(rel) {
			ptr := lfsPointer(data)
			e["oid"] = blobOID(ptr)
			e["lfs"] = map[string]any{"oid": fmt.Sprintf("%x", sha256.Sum256(data)), "size": len(data), "pointerSize": len(ptr)}
		}
		entries = append(entries, e)
	}
	s.mu.Lock()
	size := s.pageSize
	s.mu.Unlock()
	start, _ := strconv.Atoi(r.URL.Query().Get("cursor"))
	start = min(max(start, 0), len(entries))
	end := min(start+size, len(entries))
	if end < len(entries) {
		next := *r.URL
		q := next.Query()
		q.Set("cursor", strconv.Itoa(end))
		next.RawQuery = q.Encode()
		w.Header().Set("Link", fmt.Sprintf(`<%s%s>; rel="next"`, s.hub.URL, next.RequestURI()))
	}
	page := entries[start:end]
	if page == nil {
		page = []map[string]any{}
	}
	b, _ := json.Marshal(page)
	w.Header().Set("Content-Type", "application/json")
	s.serveBytes(w, r, b) // a page can be cut too
}

// Package hubtest serves the Hugging Face hub's URL layout from memory, for
// tests of code that downloads from the hub: the tree API
// (/api/{models|datasets}/ORG/REPO/tree/REV/DIR) and resolve URLs with Range
// support. NewServer points HF_ENDPOINT at it and sets HF_TOKEN.
package hubtest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Token is the HF_TOKEN NewServer sets.
const Token = "hubtest-token"

// Server is a fake hub. Files are keyed "datasets/ORG/REPO/PATH" or
// "models/ORG/REPO/PATH".
type Server struct {
	mu     sync.Mutex
	files  map[string][]byte
	ranges []string
	auth   []string
}

// NewServer starts a fake hub serving files until the test ends.
func NewServer(t testing.TB, files map[string][]byte) *Server {
	s := &Server{files: files}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	t.Setenv("HF_ENDPOINT", srv.URL+"/")
	t.Setenv("HF_TOKEN", Token)
	return s
}

// Ranges returns the Range headers received so far.
func (s *Server) Ranges() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

// Auth returns the Authorization headers received so far, one per request.
func (s *Server) Auth() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.auth...)
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.auth = append(s.auth, r.Header.Get("Authorization"))
	if rg := r.Header.Get("Range"); rg != "" {
		s.ranges = append(s.ranges, rg)
	}
	s.mu.Unlock()
	p := r.URL.Path
	if rest, ok := strings.CutPrefix(p, "/api/"); ok {
		s.tree(w, rest)
		return
	}
	kind := "models"
	if rest, ok := strings.CutPrefix(p, "/datasets/"); ok {
		kind, p = "datasets", "/"+rest
	}
	org, rest, _ := strings.Cut(p[1:], "/")
	name, rest, _ := strings.Cut(rest, "/")
	rest = strings.TrimPrefix(rest, "resolve/")
	_, file, _ := strings.Cut(rest, "/") // after the revision
	data, ok := s.files[kind+"/"+org+"/"+name+"/"+file]
	if !ok {
		http.NotFound(w, r)
		return
	}
	http.ServeContent(w, r, file, time.Time{}, strings.NewReader(string(data)))
}

// tree answers /api/KIND/ORG/REPO/tree/REV/DIR like the hub: files with
// their LFS size and SHA-256, plus a directory entry to be skipped.
func (s *Server) tree(w http.ResponseWriter, rest string) {
	kind, rest, _ := strings.Cut(rest, "/")
	i := strings.Index(rest, "/tree/")
	if i < 0 {
		http.NotFound(w, nil)
		return
	}
	repo, tail := rest[:i], rest[i+len("/tree/"):]
	_, dir, _ := strings.Cut(tail, "/")
	prefix := kind + "/" + repo + "/"
	out := []map[string]any{}
	for key, data := range s.files {
		rel, ok := strings.CutPrefix(key, prefix)
		if !ok || (dir != "" && !strings.HasPrefix(rel, dir+"/")) {
			continue
		}
		sum := sha256.Sum256(data)
		out = append(out, map[string]any{"type": "file", "path": rel, "size": 134,
			"lfs": map[string]any{"oid": hex.EncodeToString(sum[:]), "size": len(data)}})
	}
	out = append(out, map[string]any{"type": "directory", "path": strings.TrimPrefix(dir+"/sub", "/")})
	json.NewEncoder(w).Encode(out)
}

// Package pgtest gives tests a fresh PostgreSQL database: on the server
// named by $READSWEEP_TEST_POSTGRES (an admin URL), or on a throw-away
// server that scripts/start-postgres.sh starts (Debian's postgresql-15;
// .ci/run installs it) once per test binary. Call Stop from TestMain.
package pgtest

import (
	"database/sql"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

var server struct {
	once sync.Once
	url  string
	err  error
	dir  string
	root string
}

// repoRoot finds the module root from the test's working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("pgtest: no go.mod above the working directory")
		}
		dir = parent
	}
}

func admin(t testing.TB) string {
	t.Helper()
	server.once.Do(func() {
		if u := os.Getenv("READSWEEP_TEST_POSTGRES"); u != "" {
			server.url = u
			return
		}
		root, err := repoRoot()
		if err != nil {
			server.err = err
			return
		}
		dir, err := os.MkdirTemp("", "readsweep-pg")
		if err != nil {
			server.err = err
			return
		}
		os.Chmod(dir, 0o755) // the server runs as the postgres user
		server.dir, server.root = dir, root
		server.url, server.err = start(root, filepath.Join(dir, "pg"))
	})
	if server.err != nil {
		t.Fatalf("PostgreSQL is needed for this test (apt-get install postgresql-15, or set READSWEEP_TEST_POSTGRES): %v", server.err)
	}
	return server.url
}

// start runs scripts/start-postgres.sh in pgDir on a port that is free
// when asked. The port can still be taken before the server binds it (test
// packages run side by side, and their clients' ports come from the same
// range), so a failed start is tried again, twice, on another port; the
// error carries the script's stderr and the server log's end.
func start(root, pgDir string) (string, error) {
	script := filepath.Join(root, startScript)
	var failures []string
	for range 3 {
		port, err := freePort()
		if err != nil {
			return "", err
		}
		out, err := exec.Command(script, pgDir, port).Output()
		if err == nil {
			return strings.TrimSpace(string(out)), nil
		}
		detail := ""
		if ee, ok := err.(*exec.ExitError); ok {
			detail = strings.TrimSpace(string(ee.Stderr))
		}
		if log, rerr := os.ReadFile(filepath.Join(pgDir, "server.log")); rerr == nil {
			detail += " | server.log: " + lastLines(string(log), 3)
		}
		failures = append(failures, fmt.Sprintf("port %s: %v: %s", port, err, detail))
		// initdb wants an empty folder, and a server that started too
		// slowly for pg_ctl's wait may still be running.
		stopServer(root, pgDir)
		os.RemoveAll(pgDir)
	}
	return "", fmt.Errorf("%s failed 3 times: %s", startScript, strings.Join(failures, "; "))
}

// startScript, under the module root, starts and stops the server.
const startScript = "scripts/start-postgres.sh"

// stopServer stops the server started in pgDir, if it runs.
func stopServer(root, pgDir string) {
	exec.Command(filepath.Join(root, startScript), "--stop", pgDir).Run()
}

// freePort asks the kernel for a loopback TCP port no one listens on.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pgtest: finding a free port: %w", err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " / ")
}

// Fresh creates an empty database and returns its URL.
func Fresh(t testing.TB) string {
	t.Helper()
	a := admin(t)
	db, err := sql.Open("pgx", a)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	name := fmt.Sprintf("rs_%d_%d", os.Getpid(), time.Now().UnixNano())
	if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(a)
	u.Path = "/" + name
	return u.String()
}

// Stop stops the server this package started, if any.
func Stop() {
	if server.dir == "" {
		return
	}
	stopServer(server.root, filepath.Join(server.dir, "pg"))
	os.RemoveAll(server.dir)
}

// Server is a PostgreSQL server of one test's own, which it may stop and
// start again (a restart, an outage) without disturbing other tests.
type Server struct {
	URL       string // its postgres database, as the admin
	root, dir string
	port      string
}

// Own starts a server for t alone; it is stopped when t ends.
func Own(t testing.TB) *Server {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "readsweep-pg-own")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // the server runs as the postgres user
	s := &Server{root: root, dir: filepath.Join(dir, "pg")}
	t.Cleanup(func() {
		stopServer(root, s.dir)
		os.RemoveAll(dir)
	})
	if s.URL, err = start(root, s.dir); err != nil {
		t.Fatalf("PostgreSQL is needed for this test (apt-get install postgresql-15): %v", err)
	}
	u, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	s.port = u.Port()
	return s
}

// Stop stops the server at once, as a crash or a failover does: clients
// lose their connections.
func (s *Server) Stop() { stopServer(s.root, s.dir) }

// Start starts the stopped server again, on its port, with its data.
func (s *Server) Start() error {
	out, err := exec.Command(filepath.Join(s.root, startScript), s.dir, s.port).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: restart: %v: %s", err, out)
	}
	return nil
}

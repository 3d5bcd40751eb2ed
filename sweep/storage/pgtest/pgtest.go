// Package pgtest gives tests a fresh PostgreSQL database: on the server
// named by $READSWEEP_TEST_POSTGRES (an admin URL), or on a throw-away
// server that scripts/start-postgres.sh starts (Debian's postgresql-15;
// .ci/run installs it) once per test binary. Call Stop from TestMain.
package pgtest

import (
	"database/sql"
	"fmt"
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
		port := fmt.Sprint(50000 + os.Getpid()%10000)
		out, err := exec.Command(filepath.Join(root, "scripts/start-postgres.sh"), filepath.Join(dir, "pg"), port).Output()
		if err != nil {
			server.err = fmt.Errorf("scripts/start-postgres.sh: %v (%s)", err, out)
			return
		}
		server.url = strings.TrimSpace(string(out))
	})
	if server.err != nil {
		t.Fatalf("PostgreSQL is needed for this test (apt-get install postgresql-15, or set READSWEEP_TEST_POSTGRES): %v", server.err)
	}
	return server.url
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
	exec.Command(filepath.Join(server.root, "scripts/start-postgres.sh"), "--stop", filepath.Join(server.dir, "pg")).Run()
	os.RemoveAll(server.dir)
}

package storage

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadOnlyPlaces: a WAL database in a folder without write permission,
// or a file without it, opens read-only as an immutable snapshot with its
// studies, and the reader leaves no -shm or -wal file beside it.
func TestReadOnlyPlaces(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fileMode  os.FileMode
		dirMode   os.FileMode
		immutable bool
	}{
		{"writable", 0o644, 0o755, false},
		{"read-only file", 0o444, 0o755, true},
		{"read-only folder", 0o644, 0o555, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "db")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "s.db")
			w, err := OpenSQLite(path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.CreateStudy(context.Background(), "kept", Maximize, nil); err != nil {
				t.Fatal(err)
			}
			w.Close()
			os.Remove(path + "-shm")
			os.Remove(path + "-wal")
			if err := os.Chmod(path, tc.fileMode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.dirMode); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Chmod(dir, 0o755) })

			r, err := OpenReadOnly("sqlite:///" + path)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			studies, err := r.Studies(context.Background())
			r.Close()
			if err != nil || len(studies) != 1 || studies[0].Name != "kept" {
				t.Errorf("studies %v, %v; want the one study", studies, err)
			}
			if r.Immutable() != tc.immutable {
				t.Errorf("Immutable() = %v, want %v", r.Immutable(), tc.immutable)
			}
			if tc.immutable {
				for _, side := range []string{"-shm", "-wal"} {
					if _, err := os.Stat(path + side); err == nil {
						t.Errorf("the reader left %s beside the file", filepath.Base(path+side))
					}
				}
			}
		})
	}
}

// TestOpenSaysWhatIsWrongWithThePlace: a URL with one slash, and a file in
// a folder that does not exist, are named instead of SQLite's bare "unable
// to open database file".
func TestOpenSaysWhatIsWrongWithThePlace(t *testing.T) {
	dir := t.TempDir()
	for url, want := range map[string]string{
		"sqlite:/x.db": `"sqlite:/x.db": want sqlite:///relative.db, sqlite:////absolute.db`,
		"sqlite:///" + filepath.Join(dir, "missing", "x.db"): "the folder " + filepath.Join(dir, "missing") + " does not exist",
	} {
		if _, err := Open(url); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Open(%q): %v, want %q", url, err, want)
		}
	}
}

package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestWrite: the file has the data and the mode; writers at once each
// leave a whole file; a failed write leaves the old one and no
// temporary file.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	if err := Write(path, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 25 {
				if err := Write(path, []byte(strings.Repeat(fmt.Sprint(i), 1000+j)), 0o644); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	b, _ := os.ReadFile(path)
	if len(b) < 1000 || strings.Count(string(b), string(b[0])) != len(b) {
		t.Errorf("a mixed file: %.40q…", b)
	}
	if err := Write(filepath.Join(dir, "no-such-dir", "g"), []byte("x"), 0o644); err == nil {
		t.Error("a write into a missing folder succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("left %d entries, want the file alone", len(entries))
	}
}

package dashboard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// errFileChanged marks the errors of a database file that is no longer
// the one the dashboard opened.
var errFileChanged = errors.New("the database file changed under the dashboard")

// fileWatch is the identity of the SQLite file the dashboard opened: a
// connection keeps reading a deleted or renamed-over file (the old inode)
// and shows its old studies as live, and a file overwritten in place
// turns into read errors; both are said instead.
type fileWatch struct {
	path string
	info os.FileInfo // the file as opened

	mu      sync.Mutex
	largest int64 // sweeps only add to a database: a smaller file was overwritten
}

func watchFile(path string) *fileWatch {
	w := &fileWatch{path: path}
	if st, err := os.Stat(path); err == nil {
		w.info, w.largest = st, st.Size()
	}
	return w
}

// sqliteMagic starts every SQLite database file.
var sqliteMagic = []byte("SQLite format 3\x00")

// check says how the file differs from the one opened; nil when it is
// the same file (or there is none to watch).
func (w *fileWatch) check() error {
	if w == nil || w.info == nil {
		return nil
	}
	st, err := os.Stat(w.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s was deleted; what the dashboard read before is not shown. Restart it once the file is back", errFileChanged, w.path)
	case err != nil:
		return fmt.Errorf("%w: %s: %v", errFileChanged, w.path, err)
	case !os.SameFile(st, w.info):
		return fmt.Errorf("%w: %s was replaced by another file (moved or copied over it); restart the dashboard to show the new one", errFileChanged, w.path)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if st.Size() < w.largest {
		return fmt.Errorf("%w: %s shrank from %d to %d bytes: it was overwritten; restart the dashboard", errFileChanged, w.path, w.largest, st.Size())
	}
	w.largest = st.Size()
	if st.Size() == 0 {
		return nil // being created: SQLite writes its header with the first table
	}
	f, err := os.Open(w.path)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", errFileChanged, w.path, err)
	}
	defer f.Close()
	head := make([]byte, len(sqliteMagic))
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, sqliteMagic) {
		return fmt.Errorf("%w: %s is no longer a SQLite database (overwritten); restart the dashboard", errFileChanged, w.path)
	}
	return nil
}

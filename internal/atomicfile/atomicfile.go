// Package atomicfile writes a file whole or not at all: a process killed
// mid-write, a full disk or two writers at once leave either the old file
// or the new one, never a mix or a half.
package atomicfile

import (
	"io"
	"os"
	"path/filepath"
)

// Write writes data to path with mode perm through a temporary file of
// its own in the same folder, flushed to the disk, then renamed over path.
func Write(path string, data []byte, perm os.FileMode) error {
	return WriteWith(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteWith is Write for contents that fill streams into the file (too
// large to hold twice in memory): the temporary file takes fill's output,
// and goes, path untouched, when fill or any later step fails. Its name
// is "." + path's base + ".*.tmp", for a cleaner of left-overs to match.
func WriteWith(path string, perm os.FileMode, fill func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	err = fill(f)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

//go:build unix

package storage

import (
	"os"

	"golang.org/x/sys/unix"
)

// writable reports whether this process may write path (a file or a
// folder), asked of the kernel without writing anything. A path with no
// write permission bit counts as read-only even for root, who may write
// it anyway: its owner marked it so.
func writable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().Perm()&0o222 != 0 && unix.Access(path, unix.W_OK) == nil
}

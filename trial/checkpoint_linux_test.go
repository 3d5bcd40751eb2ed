package trial

import (
	"bytes"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
)

// TestCheckpointWriteFailsWhole: a checkpoint that cannot be written
// whole (the file size limit stands in for a full disk: the write fails
// part way) returns an error, keeps the previous checkpoint byte for byte
// and leaves no temporary file behind.
func TestCheckpointWriteFailsWhole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, CheckpointName)
	small := [][]float32{{1, 2, 3}}
	if err := writeCheckpoint(path, checkpoint{Trial: 1, Steps: 3}, []string{"trainable.0"}, small); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)

	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	signal.Ignore(syscall.SIGXFSZ) // a write past the limit fails with EFBIG instead of killing the process
	defer signal.Reset(syscall.SIGXFSZ)
	low := lim
	low.Cur = 64 << 10
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &low); err != nil {
		t.Fatal(err)
	}
	big := [][]float32{make([]float32, 1<<20)}
	err := writeCheckpoint(path, checkpoint{Trial: 1, Steps: 9}, []string{"trainable.0"}, big)
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	if err == nil {
		t.Fatal("a checkpoint over the size limit was written")
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("the previous checkpoint changed")
	}
	if c, err := readCheckpoint(path, nil); err != nil || c.Steps != 3 {
		t.Errorf("the previous checkpoint does not read back: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("files left behind: %v", entries)
	}
}

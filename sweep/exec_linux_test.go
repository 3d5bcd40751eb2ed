package sweep

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// slowWriter takes its first write only after a pause longer than
// outputDrain, as a runner blocked on a locked database does.
type slowWriter struct {
	mu     sync.Mutex
	b      bytes.Buffer
	paused bool
}

func (w *slowWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.paused {
		w.paused = true
		time.Sleep(outputDrain + time.Second)
	}
	return w.b.Write(p)
}

// TestExecProcReadsAllOutput: what a trial wrote before it exited reaches
// the orchestrator even when the orchestrator reads it slower than the
// drain's silence limit; a child left holding stdout is killed and does
// not hold the trial open.
func TestExecProcReadsAllOutput(t *testing.T) {
	pidFile := t.TempDir() + "/child.pid"
	script := `i=0; while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done
sleep 60 & echo $! > ` + pidFile + `
echo final`
	var out slowWriter
	var errOut bytes.Buffer
	start := time.Now()
	err := ExecProc(context.Background(), Proc{Argv: []string{"/bin/sh", "-c", script}, Stdout: &out, Stderr: &errOut, KillGrace: time.Second})
	if err != nil {
		t.Fatalf("ExecProc: %v (stderr %q)", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.b.String()), "\n")
	if len(lines) != 3001 || lines[len(lines)-1] != "final" {
		t.Errorf("read %d lines ending %q, want 3001 ending \"final\"", len(lines), lines[len(lines)-1])
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("took %v: the background child held the trial", took)
	}
	pid, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	stat, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/stat")
	if fields := strings.Fields(string(stat)); err == nil && len(fields) > 2 && fields[2] != "Z" {
		t.Errorf("the background child still runs: %s", stat)
	}
}

// TestReadLineBoundary: a line's limit counts its content, whatever its
// ending: max bytes pass with "\n", "\r\n" or none at the end; one more is
// skipped, then the next line reads as usual.
func TestReadLineBoundary(t *testing.T) {
	const max = 10
	content := strings.Repeat("x", max)
	for _, tc := range []struct {
		in      string
		lines   []string
		skipped []int
	}{
		{content + "\nok\n", []string{content, "ok"}, []int{0, 0}},
		{content + "\r\nok\r\n", []string{content, "ok"}, []int{0, 0}},
		{content, []string{content}, []int{0}},
		{content + "x\nok\n", []string{"", "ok"}, []int{11, 0}},
		{content + "x\r\nok", []string{"", "ok"}, []int{13, 0}},
		{content + "x", []string{""}, []int{11}},
	} {
		rd := bufio.NewReaderSize(strings.NewReader(tc.in), 16)
		for i := range tc.lines {
			line, skipped, _ := readLine(rd, max)
			if string(line) != tc.lines[i] || skipped != tc.skipped[i] {
				t.Errorf("%q, line %d: %q skipped %d, want %q skipped %d", tc.in, i, line, skipped, tc.lines[i], tc.skipped[i])
			}
		}
	}
}

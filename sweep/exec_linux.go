//go:build linux

package sweep

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// outputDrain is how long a trial's output is still read after its process
// exited, for children that keep stdout or stderr open.
const outputDrain = 2 * time.Second

// ExecProc runs p without a shell in its own process group. Cancelling ctx
// sends SIGTERM to the group, then SIGKILL after p.KillGrace; the trial also
// gets SIGKILL if the orchestrator dies (kill -9 included). Once the trial
// exits, what it left running in its group is killed.
func ExecProc(ctx context.Context, p Proc) error {
	argv := p.Argv
	if p.MemoryBytes > 0 {
		// The limit must be in place before the trial's first instruction:
		// set after Start (prlimit), a fast trial can allocate, or fork a
		// child that inherits no limit, before it lands. Go's exec cannot set
		// it between fork and exec, so a shell sets it on itself and execs
		// the trial in its place (same pid, process group and death signal).
		argv = append([]string{"/bin/sh", "-c", `ulimit -v "$0" || exit 125; exec "$@"`,
			strconv.FormatInt(p.MemoryBytes/1024, 10)}, p.Argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Dir = p.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.Stdin, p.Stdout, p.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// The trial's exit ends it, not the end of its output: a child it left
	// in the background may hold stdout open for ever, and its final line
	// is already read. Wait gives the pipes outputDrain, then closes them.
	cmd.WaitDelay = outputDrain
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Argv[0], err)
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-time.After(p.KillGrace):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			case <-p.KillNow:
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			case <-done:
			}
		case <-done:
		}
	}()
	err := cmd.Wait()
	close(done)
	// Whatever the trial left running in its process group goes with it.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if errors.Is(err, exec.ErrWaitDelay) {
		err = nil // it exited 0; only a child's copy of stdout was still open
	}
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return fmt.Errorf("killed by signal %s", ws.Signal())
			}
			return fmt.Errorf("exit status %d", ee.ExitCode())
		}
		return err
	}
	return nil
}

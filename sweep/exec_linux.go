//go:build linux

package sweep

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// ExecProc runs p without a shell in its own process group. Cancelling ctx
// sends SIGTERM to the group, then SIGKILL after p.KillGrace; the trial also
// gets SIGKILL if the orchestrator dies (kill -9 included).
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

//go:build linux

package sweep

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ExecProc runs p without a shell in its own process group. Cancelling ctx
// sends SIGTERM to the group, then SIGKILL after p.KillGrace; the trial also
// gets SIGKILL if the orchestrator dies (kill -9 included).
func ExecProc(ctx context.Context, p Proc) error {
	cmd := exec.Command(p.Argv[0], p.Argv[1:]...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Dir = p.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.Stdin, p.Stdout, p.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.Argv[0], err)
	}
	if p.MemoryBytes > 0 {
		// Set on the child right after it starts: what it allocated before
		// is small, and Go's exec has no way to set it before exec.
		lim := unix.Rlimit{Cur: uint64(p.MemoryBytes), Max: uint64(p.MemoryBytes)}
		if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_AS, &lim, nil); err != nil {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			cmd.Wait()
			return fmt.Errorf("trial_memory_gb: set RLIMIT_AS: %w", err)
		}
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

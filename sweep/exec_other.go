//go:build !linux

package sweep

import (
	"context"
	"fmt"
	"os"
	"os/exec"
)

// ExecProc runs p without a shell; cancelling ctx kills it after
// p.KillGrace. Process-group and parent-death handling are Linux-only.
func ExecProc(ctx context.Context, p Proc) error {
	cmd := exec.CommandContext(ctx, p.Argv[0], p.Argv[1:]...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Dir = p.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.Stdin, p.Stdout, p.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = p.KillGrace
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", p.Argv[0], err)
	}
	return nil
}

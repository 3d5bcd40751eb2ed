//go:build linux

package sweep

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// outputDrain is how long a trial's output may stay silent after its
// process exited before the pipe is closed: a child that escaped its
// process group (setsid) may hold stdout open for ever.
const outputDrain = 2 * time.Second

// ExecProc runs p without a shell in its own process group. Cancelling ctx
// sends SIGTERM to the group, then SIGKILL after p.KillGrace; the trial also
// gets SIGKILL if the orchestrator dies (kill -9 included). Once the trial
// exits, what it left running in its group is killed, and its output is
// read to the end: everything it wrote before exiting reaches p.Stdout and
// p.Stderr, however slowly they take it.
func ExecProc(ctx context.Context, p Proc) error {
	argv := p.Argv
	if p.MemoryBytes > 0 {
		// The limit must be in place before the trial's first instruction:
		// set after Start (prlimit), a fast trial can allocate, or fork a
		// child that inherits no limit, before it lands. Go's exec cannot set
		// it between fork and exec, so a shell sets it on itself and execs
		// the trial in its place (same pid, process group and death signal).
		// RLIMIT_DATA, not RLIMIT_AS: it counts the writable memory a
		// process maps, not the address space that Go's runtime and glibc
		// reserve without using (on their own close to 2 GB, which made
		// a trial under 1 GB die in its package initialisation).
		argv = append([]string{"/bin/sh", "-c", `ulimit -d "$0" || exit 125; exec "$@"`,
			strconv.FormatInt(p.MemoryBytes/1024, 10)}, p.Argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Dir = p.Dir
	cmd.Stdin = p.Stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// The trial writes into pipes of ours rather than exec's, which Wait
	// would either wait on until every child holding them exits, or (with
	// WaitDelay) close with unread output in them.
	var outputs []*drain
	for _, o := range []struct {
		to  io.Writer
		set *io.Writer
	}{{p.Stdout, &cmd.Stdout}, {p.Stderr, &cmd.Stderr}} {
		if o.to == nil {
			continue
		}
		d, w, err := newDrain(o.to)
		if err != nil {
			for _, d := range outputs {
				d.close()
			}
			return fmt.Errorf("start %s: %w", p.Argv[0], err)
		}
		defer w.Close()
		*o.set = w
		outputs = append(outputs, d)
	}
	err := cmd.Start()
	for _, o := range []io.Writer{cmd.Stdout, cmd.Stderr} {
		if f, ok := o.(*os.File); ok {
			f.Close() // the trial holds its copies; EOF comes when they close
		}
	}
	if err != nil {
		for _, d := range outputs {
			d.close()
		}
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
	err = cmd.Wait()
	close(done)
	// Whatever the trial left running in its process group goes with it.
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	for _, d := range outputs {
		d.finish()
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

// drain copies one of a trial's output pipes to its writer.
type drain struct {
	r      *os.File
	exited atomic.Bool   // the trial has exited: reads may time out
	done   chan struct{} // the copy has ended
}

func newDrain(to io.Writer) (*drain, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	d := &drain{r: r, done: make(chan struct{})}
	go d.copy(to)
	return d, w, nil
}

// copy reads until EOF, or, once the trial has exited, until the pipe has
// been silent for outputDrain (a child outside the process group holding
// it). The deadline counts silence only: a slow writer never cuts it.
func (d *drain) copy(to io.Writer) {
	defer close(d.done)
	defer d.r.Close()
	buf := make([]byte, 64*1024)
	for {
		if d.exited.Load() {
			d.r.SetReadDeadline(time.Now().Add(outputDrain))
		}
		n, err := d.r.Read(buf)
		if n > 0 {
			to.Write(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// finish lets the copy end on silence and waits for it.
func (d *drain) finish() {
	d.exited.Store(true)
	d.r.SetReadDeadline(time.Now().Add(outputDrain))
	<-d.done
}

// close ends a copy whose trial never started.
func (d *drain) close() {
	d.r.Close()
	<-d.done
}

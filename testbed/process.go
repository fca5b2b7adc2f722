package testbed

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Process is a program running in a network namespace (under `ip netns exec`, which execs in
// place, so the PID is the program's), its stdout and stderr appended to a log file. It gets
// SIGKILL if the testbed process dies, and has its own process group so that a terminal's
// Ctrl-C reaches only the testbed, which then stops its processes in order.
type Process struct {
	Name    string // for messages
	LogPath string

	cmd     *exec.Cmd
	done    chan struct{} // closed once the process exited and waitErr is set
	waitErr error
}

// StartInNetNS starts args[0] with args[1:] inside the named network namespace. env nil means
// the testbed's own environment. The process is started from a locked OS thread that stays
// alive until the process exits, so its parent-death signal fires only when the testbed dies,
// never when a thread exits.
func StartInNetNS(name, netns, logPath string, env []string, args ...string) (*Process, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("start %s: no command", name)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns}, args...)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer logf.Close()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// PID returns the process ID.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited returns an error describing the exit (with the end of the log) if the process has
// exited, else nil.
func (p *Process) Exited() error {
	select {
	case <-p.done:
		err := p.waitErr
		if err == nil {
			err = errors.New("exited with status 0")
		}
		return fmt.Errorf("%s exited: %w; log %s ends with:\n%s", p.Name, err, p.LogPath, p.LogTail(20))
	default:
		return nil
	}
}

// ExitedWithin waits up to d for the process to exit and returns Exited's error, or nil if it
// is still running.
func (p *Process) ExitedWithin(d time.Duration) error {
	select {
	case <-p.done:
		return p.Exited()
	case <-time.After(d):
		return nil
	}
}

// Stop sends SIGTERM, waits up to grace, then SIGKILLs. It returns once the process is gone.
func (p *Process) Stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	p.cmd.Process.Kill()
	<-p.done
}

// Terminate sends SIGTERM and waits up to grace for a clean exit (status 0). Otherwise the
// process is killed and the error says why, with the end of its log.
func (p *Process) Terminate(grace time.Duration) error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.waitErr != nil {
			return fmt.Errorf("%s: %w; log ends with:\n%s", p.Name, p.waitErr, p.LogTail(20))
		}
		return nil
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM; log ends with:\n%s", p.Name, grace, p.LogTail(20))
	}
}

// LogTail returns the last n lines of the log, or why it could not be read.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

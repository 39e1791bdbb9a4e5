package kubetest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// proc is one child process (etcd or kube-apiserver) that can be stopped and
// started again with the same arguments, logging to a file in the run dir.
type proc struct {
	name string
	bin  string
	args []string
	dir  string // run dir: <name>.log and <name>.pid live here

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when the running process has been reaped
	err  error         // its exit status
}

func (p *proc) logPath() string { return filepath.Join(p.dir, p.name+".log") }
func (p *proc) pidPath() string { return filepath.Join(p.dir, p.name+".pid") }

// start launches the process. It dies with the test binary (Pdeathsig), and
// its pid is recorded so a later run can reap it if even that failed.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("kubetest: %s already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("kubetest: %s log: %w", p.name, err)
	}
	fmt.Fprintf(logf, "\n==== %s start %s\n", p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("kubetest: start %s: %w", p.name, err)
	}
	_ = os.WriteFile(p.pidPath(), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600)
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() {
		err := cmd.Wait()
		logf.Close()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// exited returns a channel closed when the current process has exited, or
// nil when none runs.
func (p *proc) exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// stop sends sig, waits up to grace for the exit, then SIGKILLs and reaps.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
	p.mu.Lock()
	p.cmd, p.done = nil, nil
	p.mu.Unlock()
	_ = os.Remove(p.pidPath())
	return nil
}

// logTail returns the last n bytes of the process's log, for error messages.
func (p *proc) logTail(n int) string {
	b, err := os.ReadFile(p.logPath())
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// exitError describes why a process exited early.
func (p *proc) exitError() error {
	p.mu.Lock()
	err := p.err
	p.mu.Unlock()
	if err == nil {
		err = errors.New("exit status 0")
	}
	return fmt.Errorf("kubetest: %s exited: %w; last log lines:\n%s", p.name, err, p.logTail(3000))
}

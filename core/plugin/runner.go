package plugin

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/hashicorp/go-plugin/runner"
	"go.uber.org/zap"
)

// procRunner is go-plugin's runner.Runner for one plugin process, so that
// the host owns the process rather than go-plugin:
//
//   - stdout is drained for as long as the process lives, whatever it
//     carries: go-plugin reads only the handshake line (its line scanner
//     gives up on a line over 64 KiB and then stops reading, which would
//     block the plugin's next write for ever); later lines are logged;
//   - the tail of stderr is kept, and the exit status recorded, so that a
//     plugin that dies is reported with its status and last words;
//   - Kill signals the process through its handle (a pidfd on Linux), never
//     a bare PID that may have been reused by another process.
type procRunner struct {
	cmd  *exec.Cmd
	log  *zap.Logger
	pid  int
	tail *tailBuffer

	handshake *lineReader   // what go-plugin reads as the plugin's stdout
	stderr    io.ReadCloser // go-plugin's view of stderr (its log parser)
	drained   chan struct{} // closed when stdout reached EOF

	mu     sync.Mutex
	exited bool
	status string // "exit status 3", "signal: killed"
}

var _ runner.Runner = (*procRunner)(nil)

func newProcRunner(path string, args []string, env []string, log *zap.Logger) *procRunner {
	cmd := exec.Command(path, args...)
	cmd.Env = env
	return &procRunner{cmd: cmd, log: log, tail: &tailBuffer{max: 4096}, handshake: newLineReader(), drained: make(chan struct{})}
}

func (r *procRunner) Start(context.Context) error {
	outR, outW, err := os.Pipe()
	if err != nil {
		return err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return err
	}
	r.cmd.Stdout, r.cmd.Stderr = outW, errW
	err = r.cmd.Start()
	outW.Close() // the child holds its own copies
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return err
	}
	r.pid = r.cmd.Process.Pid
	r.stderr = &teeCloser{Reader: io.TeeReader(errR, r.tail), c: errR}
	go r.drainStdout(outR)
	return nil
}

// drainStdout hands the first line to go-plugin (the handshake) and logs
// every later line (cut at 1 KiB), reading until the process closes its
// stdout.
func (r *procRunner) drainStdout(out *os.File) {
	defer close(r.drained)
	defer out.Close()
	br := bufio.NewReaderSize(out, 64*1024)
	first := true
	var line []byte
	for {
		chunk, isPrefix, err := br.ReadLine()
		if err != nil {
			r.handshake.give(nil)
			return
		}
		if len(line) < 64*1024 {
			line = append(line, chunk...)
		}
		if isPrefix {
			continue // the rest of a long line: read and dropped
		}
		if first {
			first = false
			r.handshake.give(append(line, '\n'))
		} else {
			r.log.Info("plugin: stdout", zap.String("line", cut(line, 1024)))
		}
		line = line[:0]
	}
}

func cut(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n]) + fmt.Sprintf("… (%d bytes)", len(b))
}

func (r *procRunner) Wait(context.Context) error {
	err := r.cmd.Wait()
	r.mu.Lock()
	r.exited = true
	if r.cmd.ProcessState != nil {
		r.status = r.cmd.ProcessState.String()
	}
	r.mu.Unlock()
	return err
}

// Kill SIGKILLs the process through its handle: once the process was
// reaped, it signals nothing.
func (r *procRunner) Kill(context.Context) error {
	if r.cmd.Process == nil {
		return nil
	}
	if err := r.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

func (r *procRunner) Stdout() io.ReadCloser { return r.handshake }
func (r *procRunner) Stderr() io.ReadCloser { return r.stderr }
func (r *procRunner) Name() string          { return r.cmd.Path }
func (r *procRunner) ID() string {
	if r.pid == 0 {
		return ""
	}
	return strconv.Itoa(r.pid)
}
func (r *procRunner) Diagnose(context.Context) string {
	return "the binary is no disco plugin, was built for another system, or failed before go-plugin's handshake"
}
func (r *procRunner) PluginToHost(n, a string) (string, string, error) { return n, a, nil }
func (r *procRunner) HostToPlugin(n, a string) (string, string, error) { return n, a, nil }

// exit describes how the process ended, with the tail of its stderr; ""
// while it runs.
func (r *procRunner) exit() string {
	r.mu.Lock()
	exited, status := r.exited, r.status
	r.mu.Unlock()
	if !exited {
		return ""
	}
	if t := lastLines(r.tail.String(), 5, 1024); t != "" {
		return status + "; stderr: " + t
	}
	return status
}

// lastLines returns the last n non-empty lines of s, at most max bytes,
// joined with " | ".
func lastLines(s string, n, max int) string {
	var out []string
	size := 0
	lines := strings.Split(s, "\n")
	for i := len(lines) - 1; i >= 0 && len(out) < n; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" {
			continue
		}
		if size+len(l) > max {
			break
		}
		size += len(l)
		out = append([]string{l}, out...)
	}
	return strings.Join(out, " | ")
}

// lineReader serves one line (or EOF) to go-plugin's handshake reader.
type lineReader struct {
	once sync.Once
	ch   chan []byte
	buf  []byte
	done bool
}

func newLineReader() *lineReader { return &lineReader{ch: make(chan []byte, 1)} }

// give hands over the handshake line; nil means EOF. Only the first call
// counts; it never blocks.
func (l *lineReader) give(line []byte) {
	l.once.Do(func() { l.ch <- line; close(l.ch) })
}

func (l *lineReader) Read(p []byte) (int, error) {
	if len(l.buf) == 0 {
		if l.done {
			return 0, io.EOF
		}
		line, ok := <-l.ch
		if !ok || line == nil {
			l.done = true
			return 0, io.EOF
		}
		l.buf = line
		l.done = true // one line only
	}
	n := copy(p, l.buf)
	l.buf = l.buf[n:]
	return n, nil
}

func (l *lineReader) Close() error { l.give(nil); return nil }

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

type teeCloser struct {
	io.Reader
	c io.Closer
}

func (t *teeCloser) Close() error { return t.c.Close() }

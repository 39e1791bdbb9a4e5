package plugin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/plugin"
)

// The test binary is also the plugin: run with DISCO_TEST_PLUGIN=source or
// sink (and DISCO_TEST_DIR, the directory it shares with the test), it
// serves a test source or sink over go-plugin, as a real process.
func TestMain(m *testing.M) {
	if kind := os.Getenv("DISCO_TEST_PLUGIN"); kind != "" && kind != "host" {
		// Every start of a plugin process leaves a line in dir/starts.
		f, err := os.OpenFile(filepath.Join(os.Getenv("DISCO_TEST_DIR"), "starts"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(f, os.Getpid())
			f.Close()
		}
	}
	switch os.Getenv("DISCO_TEST_PLUGIN") {
	case "source":
		plugin.ServeSource(&dirSource{dir: os.Getenv("DISCO_TEST_DIR")})
		return
	case "sink":
		plugin.ServeSink(&dirSink{dir: os.Getenv("DISCO_TEST_DIR"), held: map[core.Target]core.Set{}, fails: map[core.Target]int{}})
		return
	case "ticker":
		plugin.ServeSource(tickerSource{})
		return
	case "crashy": // a source that dies soon after every start, saying why on stderr
		stderr := os.Stderr // go-plugin's Serve redirects os.Stderr
		go func() {
			time.Sleep(300 * time.Millisecond)
			fmt.Fprintln(stderr, "crashy: dying on purpose")
			os.Exit(3)
		}()
		plugin.ServeSource(&dirSource{dir: os.Getenv("DISCO_TEST_DIR")})
		return
	case "oldproto": // a plugin built with disco v0.2's SDK: protocol version 1
		serveOldProtocol()
		return
	case "host": // a host running a source plugin, until killed
		os.Setenv("DISCO_TEST_PLUGIN", "source")
		src, err := plugin.NewSource(os.Args[0])
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		defer src.Close()
		fmt.Println("ready")
		time.Sleep(time.Minute)
		return
	}
	goleak.VerifyTestMain(m)
}

// dirSource is the plugin's source: target t's backends are the JSON file
// dir/<t.Name>.json (a list of "address:port"), read every 10 ms; a file
// dir/broken makes every target fail (unavailable); a watch that ends
// writes dir/<t.Name>.cancelled.
type dirSource struct{ dir string }

func (s *dirSource) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
	switch t.Name {
	case "warn":
		plugin.Logger().Warn("test plugin warning", zap.String("target", t.String()))
	case "flaky": // publishes, then fails with an ordinary retryable error
		appendLine(filepath.Join(s.dir, "flaky.calls"), "watch")
		pub.Publish(coreSet("10.0.0.1:80"))
		time.Sleep(20 * time.Millisecond)
		return fmt.Errorf("backend hiccup: %w", core.ErrUnavailable)
	case "gone":
		return fmt.Errorf("no such thing: %w", core.ErrNotFound)
	case "silent": // never says anything: a watch stuck inside the plugin
		<-ctx.Done()
		return nil
	}
	defer os.WriteFile(filepath.Join(s.dir, t.Name+".cancelled"), nil, 0o644)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last []byte
	sent := false
	for {
		if _, err := os.Stat(filepath.Join(s.dir, "broken")); err == nil {
			pub.Fail(fmt.Errorf("backend broken: %w", core.ErrUnavailable))
			sent = false
		} else if data, err := os.ReadFile(filepath.Join(s.dir, t.Name+".json")); err == nil && (!sent || string(data) != string(last)) {
			var hps []string
			if err := json.Unmarshal(data, &hps); err == nil {
				var eps []*core.Endpoint
				for _, hp := range hps {
					host, port, _ := strings.Cut(hp, ":")
					var p uint16
					fmt.Sscan(port, &p)
					eps = append(eps, &core.Endpoint{Addresses: []string{host}, Port: p})
				}
				set, err := core.NewSet(eps...)
				if err == nil {
					if t.Name == "shout" {
						// As a Python or Node plugin that prints: one line
						// far over 64 KiB, then a short one, on the
						// process's real stdout.
						stdout := os.NewFile(1, "stdout")
						stdout.Write([]byte(strings.Repeat("x", 200*1024) + "\n"))
						stdout.Write([]byte("published " + string(data) + "\n"))
					}
					pub.Publish(set)
					last, sent = data, true
				}
			}
		} else if os.IsNotExist(err) && !sent {
			pub.Publish(core.Set{})
			sent = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// dirSink is the plugin's sink: it holds each target's endpoints and writes
// them to dir/<target name>.held (JSON list of host:port), so the test can
// observe what the plugin holds.
//
// Some targets misbehave on purpose: "flaky" fails its first three updates
// with a retryable error; "err-*" always fail with the error named;
// "frozen" hangs in its first update (whatever the context says) in the
// first process. Every applied update appends its seq to
// dir/<target name>.seqs, and with a file dir/hang-after present the process
// stops (SIGSTOP) right after applying one, before the host hears back.
type dirSink struct {
	dir   string
	mu    sync.Mutex
	held  map[core.Target]core.Set
	fails map[core.Target]int
}

func (s *dirSink) Accept(ctx context.Context, u core.Update) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch u.Target.Name {
	case "flaky":
		s.mu.Lock()
		s.fails[u.Target]++
		n := s.fails[u.Target]
		s.mu.Unlock()
		if n <= 3 {
			return fmt.Errorf("receiver busy (%d): %w", n, core.ErrUnavailable)
		}
	case "err-permanent":
		return core.Permanent(fmt.Errorf("cannot ever take this: %w", core.ErrUnavailable))
	case "err-retryafter":
		return core.Retry(errors.New("come back later"), 1500*time.Millisecond)
	case "err-notfound":
		return fmt.Errorf("no such table: %w", core.ErrNotFound)
	case "err-resync":
		return fmt.Errorf("lost my data: %w", core.ErrResync)
	case "frozen":
		if _, err := os.Stat(filepath.Join(s.dir, "froze")); err != nil {
			os.WriteFile(filepath.Join(s.dir, "froze"), nil, 0o644)
			select {} // stuck for good, as a plugin blocked on a full pipe
		}
	}
	if _, err := os.Stat(filepath.Join(s.dir, "slow")); err == nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	base := s.held[u.Target]
	if u.BaseSeq == 0 {
		base = core.Set{}
	}
	next, err := base.Apply(u.Delta)
	if err != nil {
		return fmt.Errorf("%v: %w", err, core.ErrResync)
	}
	if !u.State.Synced {
		return nil
	}
	s.held[u.Target] = next
	var hps []string
	for e := range next.All() {
		hps = append(hps, e.HostPorts()...)
	}
	data, _ := json.Marshal(hps)
	tmp := filepath.Join(s.dir, ".tmp-"+u.Target.Name)
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, u.Target.Name+".held")); err != nil {
		return err
	}
	appendLine(filepath.Join(s.dir, u.Target.Name+".seqs"), fmt.Sprintf("%s %d", u.Epoch, u.Seq))
	if os.Remove(filepath.Join(s.dir, "hang-after")) == nil {
		// Applied, but the host never hears back: the process stops until
		// the host's health check kills it.
		syscall.Kill(os.Getpid(), syscall.SIGSTOP)
		select {}
	}
	return nil
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

func readLines(path string) []string {
	data, _ := os.ReadFile(path)
	return strings.Fields(strings.ReplaceAll(string(data), " ", "_"))
}

func coreSet(hps ...string) core.Set {
	var eps []*core.Endpoint
	for _, hp := range hps {
		host, port, _ := strings.Cut(hp, ":")
		var p uint16
		fmt.Sscan(port, &p)
		eps = append(eps, &core.Endpoint{Addresses: []string{host}, Port: p})
	}
	set, _ := core.NewSet(eps...)
	return set
}

// pluginBinary returns this test binary, to run as a plugin in dir.
func pluginBinary(t testing.TB, kind, dir string) []plugin.Option {
	t.Helper()
	t.Setenv("DISCO_TEST_PLUGIN", kind)
	t.Setenv("DISCO_TEST_DIR", dir)
	return []plugin.Option{plugin.WithRestart(20*time.Millisecond, 200*time.Millisecond, 5), plugin.WithHealthCheck(200 * time.Millisecond)}
}

func self(t testing.TB) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

func writeJSON(t testing.TB, path string, v any) {
	t.Helper()
	data, _ := json.Marshal(v)
	if err := os.WriteFile(path+".tmp", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// sourceHarness runs core's source conformance suite through a plugin
// process.
type sourceHarness struct {
	dir string
	src *plugin.Source
	n   atomic.Int32
}

func (h *sourceHarness) Source() core.Source { return h.src }
func (h *sourceHarness) NewTarget(t *testing.T) core.Target {
	return core.Target{Name: fmt.Sprintf("t%d", h.n.Add(1))}
}
func (h *sourceHarness) Write(t *testing.T, tg core.Target, bs []coretest.Backend) {
	hps := []string{}
	for _, b := range bs {
		hps = append(hps, b.HostPort())
	}
	writeJSON(t, filepath.Join(h.dir, tg.Name+".json"), hps)
}
func (h *sourceHarness) Break(t *testing.T) bool {
	return os.WriteFile(filepath.Join(h.dir, "broken"), nil, 0o644) == nil
}
func (h *sourceHarness) Heal(t *testing.T) { os.Remove(filepath.Join(h.dir, "broken")) }
func (h *sourceHarness) Missing(t *testing.T) (core.Target, error, bool) {
	return core.Target{Name: "nosuch"}, nil, true
}
func (h *sourceHarness) Timeout() time.Duration { return 10 * time.Second }
func (h *sourceHarness) IgnoreGoroutines() []string {
	return []string{"go-plugin", "hashicorp", "os/exec", "grpc"}
}

func newPluginSource(t *testing.T) (*plugin.Source, string) {
	t.Helper()
	dir := t.TempDir()
	src, err := plugin.NewSource(self(t), pluginBinary(t, "source", dir)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src, dir
}

func TestSourceThroughThePluginPassesTheSourceSuite(t *testing.T) {
	src, dir := newPluginSource(t)
	coretest.TestSource(t, &sourceHarness{dir: dir, src: src})
}

// sinkHarness runs core's sink conformance suite through a plugin process.
type sinkHarness struct{ dirs sync.Map }

func (h *sinkHarness) NewSink(t *testing.T) core.Sink {
	dir := t.TempDir()
	s, err := plugin.NewSink(self(t), pluginBinary(t, "sink", dir)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	h.dirs.Store(s, dir)
	return s
}
func (h *sinkHarness) Observe(t *testing.T, s core.Sink, tg core.Target) []string {
	dir, _ := h.dirs.Load(s)
	data, err := os.ReadFile(filepath.Join(dir.(string), tg.Name+".held"))
	if err != nil {
		return nil
	}
	var hps []string
	_ = json.Unmarshal(data, &hps)
	return hps
}
func (h *sinkHarness) Routes() bool           { return false }
func (h *sinkHarness) MultiTarget() bool      { return true }
func (h *sinkHarness) Timeout() time.Duration { return 10 * time.Second }

func TestSinkThroughThePluginPassesTheSinkSuite(t *testing.T) {
	coretest.TestSink(t, &sinkHarness{})
}

// A source plugin killed with SIGKILL mid-stream: the last good state stays
// (stale), the plugin is restarted and the target watched again, and a
// change made meanwhile arrives.
func TestSourcePluginKilledIsRestartedAndRewatched(t *testing.T) {
	src, dir := newPluginSource(t)
	tg := core.Target{Name: "greeter"}
	writeJSON(t, filepath.Join(dir, "greeter.json"), []string{"10.0.0.1:80", "10.0.0.2:80"})
	_, rec := coretest.Watch(t, src, tg)
	waitEndpoints(t, rec, tg, false, "10.0.0.1:80", "10.0.0.2:80")
	killPlugin(t, "source")
	began := time.Now()
	writeJSON(t, filepath.Join(dir, "greeter.json"), []string{"10.0.0.3:80"})
	waitEndpoints(t, rec, tg, false, "10.0.0.3:80")
	t.Logf("from SIGKILL to the new state: %v", time.Since(began))
	for _, u := range rec.For(tg) {
		if u.State.Synced && u.State.Endpoints.Len() == 0 {
			t.Fatal("an empty state was published while the plugin was down")
		}
	}
}

// A sink plugin killed with SIGKILL: restarted, and the full state of every
// target replayed to it at once, without a new update.
func TestSinkPluginKilledIsRestartedAndReplayed(t *testing.T) {
	dir := t.TempDir()
	sink, err := plugin.NewSink(self(t), pluginBinary(t, "sink", dir)...)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	tg := core.Target{Name: "greeter"}
	set := coretest.Set(t, &core.Endpoint{Addresses: []string{"10.0.0.1"}, Port: 80}, &core.Endpoint{Addresses: []string{"10.0.0.2"}, Port: 80})
	hub := coretest.Hub(t, coretest.NewStatic(map[core.Target]core.Set{tg: set}))
	defer hub.Close()
	sub, err := hub.Subscribe("plugin", sink, tg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	held := filepath.Join(dir, "greeter.held")
	waitFile(t, held, `["10.0.0.1:80","10.0.0.2:80"]`)
	os.Remove(held)
	killPlugin(t, "sink")
	began := time.Now()
	waitFile(t, held, `["10.0.0.1:80","10.0.0.2:80"]`)
	t.Logf("from SIGKILL to the full state replayed: %v", time.Since(began))
}

// A binary that is not there, not executable, or not a disco plugin: an
// error naming the binary and what was wrong.
func TestBadBinaries(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "not-exec")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	garbage := filepath.Join(dir, "garbage")
	os.WriteFile(garbage, []byte("#!/bin/sh\necho 'not|a|handshake'\nsleep 5\n"), 0o755)
	exits := filepath.Join(dir, "exits")
	os.WriteFile(exits, []byte("#!/bin/sh\nexit 3\n"), 0o755)
	version := filepath.Join(dir, "version")
	os.WriteFile(version, []byte("#!/bin/sh\necho '1|9|tcp|127.0.0.1:1|grpc'\nsleep 5\n"), 0o755)
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "missing"), "no such file"},
		{notExec, "permission denied"},
		{exits, "exited during go-plugin's handshake"},
		{garbage, ""},
		{version, "version"},
	} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			_, err := plugin.NewSource(tc.path, plugin.WithRestart(time.Millisecond, time.Millisecond, 1))
			if err == nil || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewSource(%s) = %v, want an error naming it and saying %q", filepath.Base(tc.path), err, tc.want)
			}
			t.Logf("%v", err)
		})
	}
}

// Cancelling a watch on the host ends it inside the plugin.
func TestCancelCrossesTheBoundary(t *testing.T) {
	src, dir := newPluginSource(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, core.Target{Name: "c"}, nopPublisher{}) }()
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(dir, "c.cancelled"), "")
}

type nopPublisher struct{}

func (nopPublisher) Publish(core.Set)             {}
func (nopPublisher) PublishStale(core.Set, error) {}
func (nopPublisher) Fail(error)                   {}

// killPlugin SIGKILLs this test's plugin processes of kind.
func killPlugin(t *testing.T, kind string) { t.Helper(); signalPlugin(t, kind, syscall.SIGKILL) }

// eachPlugin calls fn with the pid of each plugin process of kind run for
// this test (by its DISCO_TEST_DIR), and returns how many.
func eachPlugin(kind string, fn func(pid int)) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		vars := strings.Split(string(env), "\x00")
		if slices.Contains(vars, "DISCO_TEST_DIR="+os.Getenv("DISCO_TEST_DIR")) && slices.Contains(vars, "DISCO_TEST_PLUGIN="+kind) {
			fn(pid)
			n++
		}
	}
	return n
}

func waitEndpoints(t *testing.T, rec *coretest.Recorder, tg core.Target, stale bool, want ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	want = slices.Sorted(slices.Values(want))
	if last, err := rec.WaitState(ctx, tg, func(st core.State) bool {
		return st.Synced && st.Stale.IsStale() == stale && slices.Equal(coretest.HostPorts(st.Endpoints), want)
	}); err != nil {
		t.Fatalf("%s: want %v, last %+v", tg, want, last)
	}
}

func waitFile(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		data, err := os.ReadFile(path)
		if err == nil && (want == "" || string(data) == want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q (%v), want %q", path, data, err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A plugin that stops answering (SIGSTOP) is found by the health check,
// killed and restarted; its targets are watched again.
func TestHangingPluginIsKilledAndRestarted(t *testing.T) {
	src, dir := newPluginSource(t)
	tg := core.Target{Name: "greeter"}
	writeJSON(t, filepath.Join(dir, "greeter.json"), []string{"10.0.0.1:80"})
	_, rec := coretest.Watch(t, src, tg)
	waitEndpoints(t, rec, tg, false, "10.0.0.1:80")
	signalPlugin(t, "source", syscall.SIGSTOP)
	writeJSON(t, filepath.Join(dir, "greeter.json"), []string{"10.0.0.2:80"})
	waitEndpoints(t, rec, tg, false, "10.0.0.2:80")
}

// A plugin that keeps crashing soon after it starts is given up on after
// the bound, with an error naming the binary: the watch ends.
func TestCrashLoopIsGivenUpOn(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DISCO_TEST_PLUGIN", "crashy")
	t.Setenv("DISCO_TEST_DIR", dir)
	src, err := plugin.NewSource(self(t), plugin.WithRestart(10*time.Millisecond, 50*time.Millisecond, 3), plugin.WithHealthCheck(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = src.Watch(ctx, core.Target{Name: "x"}, nopPublisher{})
	if !errors.Is(err, plugin.ErrGaveUp) || !strings.Contains(err.Error(), self(t)) || !core.IsPermanent(err) {
		t.Fatalf("Watch = %v, want a permanent ErrGaveUp naming the binary", err)
	}
}

// A host killed with SIGKILL leaves no plugin process behind.
func TestKilledHostLeavesNoPlugin(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(self(t))
	cmd.Env = append(os.Environ(), "DISCO_TEST_PLUGIN=host", "DISCO_TEST_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("host said %q", line)
	}
	children := childrenOf(cmd.Process.Pid)
	if len(children) == 0 {
		t.Fatal("the host runs no plugin process")
	}
	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range children {
		for syscall.Kill(pid, 0) == nil {
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("plugin %d outlived its killed host", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var child int
		if _, err := fmt.Sscan(e.Name(), &child); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
		var ppid int
		if len(fields) > 1 {
			fmt.Sscan(fields[1], &ppid)
		}
		if ppid == pid {
			out = append(out, child)
		}
	}
	return out
}

// A slow sink plugin delays no other sink of the hub.
func TestSlowSinkPluginDelaysNoOne(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "slow"), nil, 0o644)
	sink, err := plugin.NewSink(self(t), pluginBinary(t, "sink", dir)...)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	tg := core.Target{Name: "greeter"}
	src := coretest.NewStatic(map[core.Target]core.Set{tg: {}})
	hub := coretest.Hub(t, src)
	defer hub.Close()
	slow, err := hub.Subscribe("slow plugin", sink, tg)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	rec := coretest.NewRecorder()
	fast, err := hub.Subscribe("in-process", rec, tg)
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	began := time.Now()
	for i := 1; i <= 20; i++ {
		want := fmt.Sprintf("10.0.0.%d:80", i)
		src.Set(tg, coretest.Set(t, &core.Endpoint{Addresses: []string{fmt.Sprintf("10.0.0.%d", i)}, Port: 80}))
		waitEndpoints(t, rec, tg, false, want)
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Fatalf("20 changes took %v beside a sink plugin taking 2 s per update", d)
	}
}

// The plugin's log lines (plugin.Logger, hclog JSON on its stderr) reach
// the host's zap logger at their level, named after the binary.
func TestPluginLogsReachTheHostLogger(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	dir := t.TempDir()
	src, err := plugin.NewSource(self(t), append(pluginBinary(t, "source", dir), plugin.WithLogger(zap.New(core)))...)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Watch(ctx, coreTarget("warn"), nopPublisher{}) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, e := range logs.All() {
			if e.Message == "test plugin warning" {
				if e.Level != zapcore.WarnLevel || !strings.Contains(e.LoggerName, filepath.Base(self(t))) {
					t.Fatalf("entry at %v from %q, want warn from the binary's name", e.Level, e.LoggerName)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			for _, e := range logs.All() {
				t.Logf("%v %q %q %v", e.Level, e.LoggerName, e.Message, e.Context)
			}
			t.Fatalf("the plugin's warning never reached the host; got %d entries", logs.Len())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func coreTarget(name string) core.Target { return core.Target{Name: name} }

// signalPlugin sends sig to this test's plugin processes of kind.
func signalPlugin(t *testing.T, kind string, sig syscall.Signal) {
	t.Helper()
	if n := eachPlugin(kind, func(pid int) { syscall.Kill(pid, sig) }); n == 0 {
		t.Fatal("no plugin process to signal")
	}
}

// A host whose handshake cookie the plugin does not know: the plugin
// refuses to run, and the host's error names the binary and says so.
func TestWrongHandshakeCookie(t *testing.T) {
	dir := t.TempDir()
	defer plugin.SetHostCookie("someone-else")()
	_, err := plugin.NewSource(self(t), pluginBinary(t, "source", dir)...)
	if err == nil || !strings.Contains(err.Error(), self(t)) || !strings.Contains(err.Error(), "handshake") {
		t.Fatalf("NewSource with another cookie = %v", err)
	}
}

package plugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/plugin"
)

// serveOldProtocol serves a source the way a plugin built with disco
// v0.2's SDK does: go-plugin protocol version 1.
func serveOldProtocol() {
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  goplugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: plugin.CookieKey, MagicCookieValue: plugin.CookieValue},
		VersionedPlugins: map[int]goplugin.PluginSet{1: {plugin.SourcePlugin: oldPlugin{}}},
		GRPCServer:       goplugin.DefaultGRPCServer,
	})
}

type oldPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
}

func (oldPlugin) GRPCServer(*goplugin.GRPCBroker, *grpc.Server) error { return nil }
func (oldPlugin) GRPCClient(context.Context, *goplugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, nil
}

// podLikeSet returns n endpoints shaped like Kubernetes pods (a UID, a pod
// name, a node and a zone): about 140 bytes each on the wire, so that
// 30,000 of them pass gRPC's default 4 MiB limit.
func podLikeSet(t *testing.T, n int) core.Set {
	eps := make([]*core.Endpoint, n)
	for i := range eps {
		eps[i] = &core.Endpoint{
			ID:   fmt.Sprintf("6f1d2c8e-%04x-4a1b-9c3d-%012x", i%65536, i),
			Name: fmt.Sprintf("greeter-7d9f8b6c5-%05d", i), Addresses: []string{fmt.Sprintf("10.%d.%d.%d", i/62500, i/250%250, i%250+1)},
			Port: 8080, Node: fmt.Sprintf("node-%04d.cluster.internal", i%500), Zone: fmt.Sprintf("europe-west1-%c", 'a'+i%3),
			Hostname: fmt.Sprintf("greeter-%d", i),
		}
	}
	return coretest.Set(t, eps...)
}

// starts returns how many plugin processes were started in dir.
func starts(dir string) int { return len(readLines(filepath.Join(dir, "starts"))) }

// A source plugin whose Watch returns an ordinary retryable error is
// retried by the hub with a backoff; the plugin process is never touched.
func TestRetryableSourceErrorKeepsThePlugin(t *testing.T) {
	src, dir := newPluginSource(t)
	hub := coretest.Hub(t, src, core.WithBackoff(10*time.Millisecond, 40*time.Millisecond))
	defer hub.Close()
	tg := core.Target{Name: "flaky"}
	rec := coretest.NewRecorder()
	sub, err := hub.Subscribe("rec", rec, tg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	deadline := time.Now().Add(15 * time.Second)
	for len(readLines(filepath.Join(dir, "flaky.calls"))) < 12 {
		if time.Now().After(deadline) {
			t.Fatalf("%d watch calls", len(readLines(filepath.Join(dir, "flaky.calls"))))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := starts(dir); n != 1 {
		t.Fatalf("the plugin process was started %d times for a retryable error, want once", n)
	}
	st, _ := hub.State(tg)
	if st.Ended || errors.Is(st.Stale.Err(), plugin.ErrGaveUp) {
		t.Fatalf("the watch ended: %+v", st.Stale)
	}
	if st.Stale.IsStale() && (st.Stale.Kind != core.KindUnavailable || !strings.Contains(st.Stale.Reason, "backend hiccup")) {
		t.Fatalf("stale with %+v, want the plugin's own unavailable error", st.Stale)
	}
}

// A sink plugin whose Update fails with an ordinary retryable error is
// retried by core; the process is never touched and the state arrives.
func TestRetryableSinkErrorKeepsThePlugin(t *testing.T) {
	dir := t.TempDir()
	sink, err := plugin.NewSink(self(t), pluginBinary(t, "sink", dir)...)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	tg := core.Target{Name: "flaky"}
	hub := coretest.Hub(t, coretest.NewStatic(map[core.Target]core.Set{tg: coreSet("10.0.0.1:80")}), core.WithBackoff(10*time.Millisecond, 40*time.Millisecond))
	defer hub.Close()
	sub, err := hub.Subscribe("plugin", sink, tg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	waitFile(t, filepath.Join(dir, "flaky.held"), `["10.0.0.1:80"]`)
	if n := starts(dir); n != 1 {
		t.Fatalf("the sink plugin was started %d times for retryable errors, want once", n)
	}
}

// A sink plugin's errors cross as data and are classified on the host
// exactly as in process: kind, the permanent and retryable marks, a retry
// delay, a resync.
func TestSinkErrorsCrossAsData(t *testing.T) {
	dir := t.TempDir()
	sink, err := plugin.NewSink(self(t), pluginBinary(t, "sink", dir)...)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	set := coreSet("10.0.0.1:80")
	update := func(name string) error {
		tg := core.Target{Name: name}
		return sink.Accept(context.Background(), core.Update{Target: tg, Epoch: "e", Seq: 1,
			State: core.State{Endpoints: set, Synced: true}, Delta: core.Delta{Added: set.Slice()}})
	}
	for _, tc := range []struct {
		name  string
		check func(error) bool
	}{
		{"err-permanent", func(err error) bool { return core.IsPermanent(err) && core.KindOf(err) == core.KindUnavailable }},
		{"err-retryafter", func(err error) bool {
			d, ok := core.RetryDelay(err)
			return ok && d == 1500*time.Millisecond && !core.IsPermanent(err)
		}},
		{"err-notfound", func(err error) bool { return errors.Is(err, core.ErrNotFound) && core.IsPermanent(err) }},
		{"err-resync", func(err error) bool { return errors.Is(err, core.ErrResync) && !core.IsPermanent(err) }},
	} {
		err := update(tc.name)
		if err == nil || !tc.check(err) || !strings.Contains(err.Error(), self(t)) {
			t.Errorf("%s: %v (permanent %v, kind %q)", tc.name, err, core.IsPermanent(err), core.KindOf(err))
		}
	}
	if n := starts(dir); n != 1 {
		t.Fatalf("the sink plugin was started %d times for its own errors, want once", n)
	}
}

// 100,000 endpoints cross both ways: to a sink plugin and from a source
// plugin.
func TestLargeTargetsCross(t *testing.T) {
	const n = 100_000
	set := podLikeSet(t, n)

	t.Run("to a sink plugin", func(t *testing.T) {
		dir := t.TempDir()
		sink, err := plugin.NewSink(self(t), pluginBinary(t, "sink", dir)...)
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		tg := core.Target{Name: "big"}
		hub := coretest.Hub(t, coretest.NewStatic(map[core.Target]core.Set{tg: set}))
		defer hub.Close()
		sub, err := hub.Subscribe("plugin", sink, tg)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		deadline := time.Now().Add(60 * time.Second)
		for {
			var hps []string
			if data, err := os.ReadFile(filepath.Join(dir, "big.held")); err == nil {
				_ = json.Unmarshal(data, &hps)
			}
			if len(hps) == n {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the plugin holds %d endpoints, want %d", len(hps), n)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("from a source plugin", func(t *testing.T) {
		t.Setenv("DISCO_TEST_PLUGIN", "ticker")
		src, err := plugin.NewSource(self(t))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		_, rec := coretest.Watch(t, src, core.Target{Name: "n" + strconv.Itoa(n), Port: "3600000"})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if last, err := rec.WaitState(ctx, core.Target{Name: "n" + strconv.Itoa(n), Port: "3600000"}, func(st core.State) bool {
			return st.Synced && st.Endpoints.Len() == n
		}); err != nil {
			t.Fatalf("host holds %d endpoints: %v", last.Endpoints.Len(), err)
		}
	})
}

// A message over the limit is a clear permanent error, not an endless
// retry.
func TestOversizedUpdateIsPermanent(t *testing.T) {
	dir := t.TempDir()
	sink, err := plugin.NewSink(self(t), append(pluginBinary(t, "sink", dir), plugin.WithMaxMessageSize(512<<10))...)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	set := podLikeSet(t, 30_000)
	err = sink.Accept(context.Background(), core.Update{Target: core.Target{Name: "big"}, Epoch: "e", Seq: 1,
		State: core.State{Endpoints: set, Synced: true}, Delta: core.Delta{Added: set.Slice()}})
	if err == nil || !core.IsPermanent(err) || !strings.Contains(err.Error(), "message limit") {
		t.Fatalf("Update of 30,000 endpoints over a 512 KiB limit = %v, want a permanent error naming the limit", err)
	}
}

// A sink plugin that hangs after it applied an update, before the host
// heard back, is killed by the health check and restarted: the replay to
// the new process is never older than what reached the old one.
func TestReplayNeverGoesBackInTime(t *testing.T) {
	dir := t.TempDir()
	sink, err := plugin.NewSink(self(t), pluginBinary(t, "sink", dir)...)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	tg := core.Target{Name: "persist"}
	src := coretest.NewStatic(map[core.Target]core.Set{tg: coreSet("10.0.0.1:80")})
	hub := coretest.Hub(t, src)
	defer hub.Close()
	sub, err := hub.Subscribe("plugin", sink, tg)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	held := filepath.Join(dir, "persist.held")
	for i := 2; i <= 8; i++ {
		if i%2 == 1 { // three times
			os.WriteFile(filepath.Join(dir, "hang-after"), nil, 0o644)
		}
		hp := fmt.Sprintf("10.0.0.%d:80", i)
		src.Set(tg, coreSet(hp))
		waitFile(t, held, `["`+hp+`"]`)
	}
	if n := starts(dir); n != 4 {
		t.Fatalf("%d plugin processes, want 4 (three killed)", n)
	}
	var last uint64
	lines, _ := os.ReadFile(filepath.Join(dir, "persist.seqs"))
	for _, line := range strings.Split(strings.TrimSpace(string(lines)), "\n") {
		_, seqText, _ := strings.Cut(line, " ")
		seq, _ := strconv.ParseUint(seqText, 10, 64)
		if seq < last {
			t.Fatalf("the plugin was given seq %d after seq %d reached it: %q", seq, last, lines)
		}
		last = seq
	}
}

// A plugin that prints a line far over 64 KiB on its stdout (as a Python
// or Node plugin may) keeps working: its stdout is drained whatever it
// carries.
func TestLongStdoutLineDoesNotFreezeThePlugin(t *testing.T) {
	src, dir := newPluginSource(t)
	tg := core.Target{Name: "shout"}
	_, rec := coretest.Watch(t, src, tg)
	for i := 1; i <= 5; i++ {
		hp := fmt.Sprintf("10.0.0.%d:80", i)
		writeJSON(t, filepath.Join(dir, "shout.json"), []string{hp})
		waitEndpoints(t, rec, tg, false, hp)
	}
}

// A source plugin that sends nothing for a watch, and a sink plugin stuck in
// an update, are visible (stale; a failed update) and then restarted.
func TestNoProgressIsVisibleThenRestarted(t *testing.T) {
	t.Run("source", func(t *testing.T) {
		dir := t.TempDir()
		src, err := plugin.NewSource(self(t), append(pluginBinary(t, "source", dir), plugin.WithProgressTimeout(500*time.Millisecond))...)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		tg := core.Target{Name: "silent"}
		_, rec := coretest.Watch(t, src, tg)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if _, err := rec.WaitState(ctx, tg, func(st core.State) bool {
			return strings.Contains(st.Stale.Reason, "sent nothing")
		}); err != nil {
			t.Fatalf("the silent watch is not stale: %v", err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for starts(dir) < 2 {
			if time.Now().After(deadline) {
				t.Fatal("the plugin was not restarted")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("sink", func(t *testing.T) {
		dir := t.TempDir()
		sink, err := plugin.NewSink(self(t), append(pluginBinary(t, "sink", dir), plugin.WithProgressTimeout(500*time.Millisecond))...)
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		tg := core.Target{Name: "frozen"}
		hub := coretest.Hub(t, coretest.NewStatic(map[core.Target]core.Set{tg: coreSet("10.0.0.1:80")}))
		defer hub.Close()
		sub, err := hub.Subscribe("plugin", sink, tg)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		waitFile(t, filepath.Join(dir, "frozen.held"), `["10.0.0.1:80"]`)
		if n := starts(dir); n != 2 {
			t.Fatalf("%d plugin processes, want 2: the frozen one restarted", n)
		}
	})
}

// After a crash loop the error names the binary, the true number of starts
// and the last real failure (exit status, the tail of stderr), however
// many targets waited on the restarts.
func TestGiveUpErrorSaysWhatHappened(t *testing.T) {
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
	errs := make(chan error, 3)
	for _, name := range []string{"a", "b", "c"} {
		go func() { errs <- src.Watch(ctx, core.Target{Name: name}, nopPublisher{}) }()
	}
	for range 3 {
		err := <-errs
		if !errors.Is(err, plugin.ErrGaveUp) || !core.IsPermanent(err) {
			t.Fatalf("Watch = %v, want a permanent ErrGaveUp", err)
		}
		n := starts(dir)
		msg := err.Error()
		for _, want := range []string{self(t), fmt.Sprintf("started %d times", n), "exit status 3", "crashy: dying on purpose"} {
			if !strings.Contains(msg, want) {
				t.Fatalf("the give-up error %q does not say %q (the binary ran %d times)", msg, want, n)
			}
		}
	}
	if n := starts(dir); n != 4 {
		t.Fatalf("the binary ran %d times, want 4 (3 restarts)", n)
	}
}

// A plugin of the old protocol version gets a clear error naming both
// versions.
func TestOldProtocolPluginIsRefused(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DISCO_TEST_PLUGIN", "oldproto")
	t.Setenv("DISCO_TEST_DIR", dir)
	_, err := plugin.NewSource(self(t))
	if err == nil {
		t.Fatal("a version-1 plugin was accepted")
	}
	for _, want := range []string{self(t), "protocol version 1", "version " + strconv.Itoa(plugin.ProtocolVersion)} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}
}

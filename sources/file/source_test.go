package file_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sources/file"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv("DISCO_FILE_WATCH"); dir != "" { // runAsNobody's child
		childWatch(dir)
		return
	}
	goleak.VerifyTestMain(m)
}

// fileHarness runs core's source conformance suite against the file
// source over a directory: each target is a file of its own, written by
// rename; Break makes every file unparsable, Heal writes them back.
type fileHarness struct {
	dir  string
	src  *file.Source
	n    atomic.Int32
	good map[string][]byte // file → contents while broken
}

func (h *fileHarness) Source() core.Source { return h.src }

func (h *fileHarness) NewTarget(t *testing.T) core.Target {
	tg, err := h.src.Target(fmt.Sprintf("conf-%d", h.n.Add(1)))
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func (h *fileHarness) Write(t *testing.T, tg core.Target, bs []coretest.Backend) {
	var eps []string
	for _, b := range bs {
		eps = append(eps, fmt.Sprintf("%s:%d", b.Address, b.Port))
	}
	writeRename(t, filepath.Join(h.dir, tg.Name+".yaml"), discoFile(tg.Name, eps...))
}

func (h *fileHarness) Break(t *testing.T) bool {
	h.good = map[string][]byte{}
	paths, _ := filepath.Glob(filepath.Join(h.dir, "*.yaml"))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		h.good[p] = data
		writeRename(t, p, []byte("targets: [\n"))
	}
	return true
}

func (h *fileHarness) Heal(t *testing.T) {
	for p, data := range h.good {
		writeRename(t, p, data)
	}
}

// A target in no file has no endpoints: synced and empty.
func (h *fileHarness) Missing(t *testing.T) (core.Target, error, bool) {
	return core.Target{Name: "nosuch"}, nil, true
}

func (h *fileHarness) Timeout() time.Duration     { return 10 * time.Second }
func (h *fileHarness) IgnoreGoroutines() []string { return nil }

func TestSourcePassesTheSourceSuite(t *testing.T) {
	dir := t.TempDir()
	src, err := file.New(dir, file.WithGrace(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	coretest.TestSource(t, &fileHarness{dir: dir, src: src})
}

// discoFile is a file of disco's format defining one target.
func discoFile(target string, eps ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by the test\ntargets:\n  - target: %s\n    endpoints:\n", target)
	if len(eps) == 0 {
		b.WriteString("      []\n")
	}
	for _, e := range eps {
		fmt.Fprintf(&b, "      - %q\n", e)
	}
	return []byte(b.String())
}

// addrs returns n endpoints 10.<net>.0.1:80 ...
func addrs(net, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("10.%d.%d.%d:80", net, i/250, i%250+1)
	}
	return out
}

// waitFor waits until tg's last state is synced, fresh and exactly want.
func waitFor(t *testing.T, rec *coretest.Recorder, tg core.Target, want ...string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	last, err := rec.WaitState(ctx, tg, func(st core.State) bool {
		return st.Synced && !st.Stale.IsStale() && slices.Equal(coretest.HostPorts(st.Endpoints), want)
	})
	if err != nil {
		t.Fatalf("%s: want %d endpoints %.60q, last: synced %v stale %q, %d endpoints %.60q", tg, len(want), want, last.Synced, last.Stale.Reason, last.Endpoints.Len(), coretest.HostPorts(last.Endpoints))
	}
}

// waitStale waits until tg's last state is stale, and returns it.
func waitStale(t *testing.T, rec *coretest.Recorder, tg core.Target) core.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := rec.WaitState(ctx, tg, func(st core.State) bool { return st.Stale.IsStale() })
	if err != nil {
		t.Fatalf("%s never went stale; last %+v", tg, st)
	}
	return st
}

func newSource(t *testing.T, path string, opts ...file.Option) *file.Source {
	t.Helper()
	src, err := file.New(path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// A file that fails to parse keeps its last good endpoints, stale, with the
// file, the line and the reason; fixing it makes the state fresh again.
func TestBrokenFileKeepsTheLastGoodSet(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "greeter.yaml")
	writeRename(t, path, discoFile("greeter", "10.1.0.1:80", "10.1.0.2:80"))
	src := newSource(t, dir, file.WithGrace(20*time.Millisecond))
	tg := core.Target{Name: "greeter"}
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, "10.1.0.1:80", "10.1.0.2:80")

	writeRename(t, path, []byte("targets:\n  - target: greeter\n    endpoints:\n      - 10.1.0.3\n"))
	st := waitStale(t, rec, tg)
	if got := coretest.HostPorts(st.Endpoints); !st.Synced || !slices.Equal(got, []string{"10.1.0.1:80", "10.1.0.2:80"}) {
		t.Fatalf("stale state holds %q (synced %v), want the last good set", got, st.Synced)
	}
	if want := path + ":4: "; !strings.Contains(st.Stale.Reason, want) || !strings.Contains(st.Stale.Reason, "host:port") || st.Stale.Kind != core.KindInvalid {
		t.Fatalf("staleness %+v: want kind invalid and a reason with %q and what is wrong", st.Stale, want)
	}
	for _, u := range rec.For(tg) {
		if n := u.State.Endpoints.Len(); n != 2 {
			t.Fatalf("a state with %d endpoints was published", n)
		}
	}
	writeRename(t, path, discoFile("greeter", "10.1.0.3:80"))
	waitFor(t, rec, tg, "10.1.0.3:80")
}

// A file that never parsed says so at once: WaitSynced fails with its
// error, naming file and line.
func TestFileThatNeverParsedFailsFast(t *testing.T) {
	dir := t.TempDir()
	writeRename(t, filepath.Join(dir, "a.json"), []byte("{\"targets\": [\n  {\"target\": \"a\", }\n]}"))
	src := newSource(t, dir)
	sub, _ := coretest.Watch(t, src, core.Target{Name: "a"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := sub.WaitSynced(ctx)
	if err == nil || !errors.Is(err, core.ErrInvalid) || !strings.Contains(err.Error(), "a.json:2: ") || ctx.Err() != nil {
		t.Fatalf("WaitSynced = %v, want at once an invalid error naming a.json:2", err)
	}
}

// In a directory, a deleted file takes its targets' endpoints with it
// (after the grace period); others stay as they are.
func TestDeletedFileRemovesItsEndpoints(t *testing.T) {
	dir := t.TempDir()
	writeRename(t, filepath.Join(dir, "a.yaml"), discoFile("a", "10.2.0.1:80"))
	writeRename(t, filepath.Join(dir, "b.json"), []byte(`[{"targets": ["10.2.0.2:80"]}]`)) // file_sd: target b
	src := newSource(t, dir, file.WithGrace(20*time.Millisecond))
	a, b := core.Target{Name: "a"}, core.Target{Name: "b"}
	_, rec := coretest.Watch(t, src, a, b)
	waitFor(t, rec, a, "10.2.0.1:80")
	waitFor(t, rec, b, "10.2.0.2:80")
	if err := os.Remove(filepath.Join(dir, "b.json")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, rec, b)
	if n := len(rec.For(a)); n != 1 {
		t.Fatalf("target a got %d updates, want 1", n)
	}
}

// A target defined in two files is a conflict: stale, naming both.
func TestTargetInTwoFilesIsAConflict(t *testing.T) {
	dir := t.TempDir()
	writeRename(t, filepath.Join(dir, "a.yaml"), discoFile("greeter", "10.3.0.1:80"))
	src := newSource(t, dir)
	tg := core.Target{Name: "greeter"}
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, "10.3.0.1:80")
	writeRename(t, filepath.Join(dir, "b.yaml"), discoFile("greeter", "10.3.0.2:80"))
	st := waitStale(t, rec, tg)
	if !strings.Contains(st.Stale.Reason, "a.yaml:3") || !strings.Contains(st.Stale.Reason, "b.yaml:3") || coretest.HostPorts(st.Endpoints)[0] != "10.3.0.1:80" {
		t.Fatalf("conflict state %q %+v", coretest.HostPorts(st.Endpoints), st.Stale)
	}
	if err := os.Remove(filepath.Join(dir, "a.yaml")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, rec, tg, "10.3.0.2:80")
}

// Without file-system events (WithoutNotify: NFS and the like), the
// periodic read still follows every change.
func TestPeriodicReadWithoutEvents(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "greeter.yaml")
	writeRename(t, path, discoFile("greeter", "10.4.0.1:80"))
	src := newSource(t, dir, file.WithoutNotify(), file.WithInterval(50*time.Millisecond))
	tg := core.Target{Name: "greeter"}
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, "10.4.0.1:80")
	writeInPlace(t, path, discoFile("greeter", "10.4.0.2:80"))
	waitFor(t, rec, tg, "10.4.0.2:80")
	writeRename(t, path, discoFile("greeter", "10.4.0.3:80"))
	waitFor(t, rec, tg, "10.4.0.3:80")
}

// A source of one file reads that file only; the file gone keeps its last
// good endpoints, stale (the one file is the whole configuration).
func TestSingleFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "endpoints.yaml")
	writeRename(t, path, discoFile("greeter", "10.5.0.1:80"))
	writeRename(t, filepath.Join(dir, "other.yaml"), discoFile("other", "10.5.0.9:80"))
	src := newSource(t, path, file.WithGrace(20*time.Millisecond))
	tg, other := core.Target{Name: "greeter"}, core.Target{Name: "other"}
	_, rec := coretest.Watch(t, src, tg, other)
	waitFor(t, rec, tg, "10.5.0.1:80")
	waitFor(t, rec, other)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	st := waitStale(t, rec, tg)
	if !strings.Contains(st.Stale.Reason, "does not exist") || st.Endpoints.Len() != 1 {
		t.Fatalf("after the file was removed: %d endpoints, %+v", st.Endpoints.Len(), st.Stale)
	}
	writeRename(t, path, discoFile("greeter", "10.5.0.2:80"))
	waitFor(t, rec, tg, "10.5.0.2:80")
}

func TestNewNeedsAnExistingPath(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	if _, err := file.New(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("New(%s) = %v", missing, err)
	}
}

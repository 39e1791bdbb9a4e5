package file_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sources/file"
)

// writeChunked rewrites path in place in n line-aligned chunks, gap apart:
// every prefix it leaves parses (a shorter list of endpoints).
func writeChunked(t testing.TB, path string, data []byte, n int, gap time.Duration) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lines := bytes.SplitAfter(data, []byte("\n"))
	per := (len(lines) + n - 1) / n
	for i := 0; i < len(lines); i += per {
		if _, err := f.Write(bytes.Join(lines[i:min(i+per, len(lines))], nil)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(gap)
	}
}

// wholeOrStale fails the test for any published state that is fresh but
// not one of the whole files.
func wholeOrStale(t *testing.T, rec *coretest.Recorder, tg core.Target, files ...[]string) (fresh, stale int) {
	t.Helper()
	for _, u := range rec.For(tg) {
		got := coretest.HostPorts(u.State.Endpoints)
		if u.State.Stale.IsStale() {
			stale++
			continue
		}
		whole := false
		for _, f := range files {
			whole = whole || slices.Equal(got, sorted(f))
		}
		if !u.State.Synced || !whole {
			t.Fatalf("published as fresh a state that is no whole file: synced %v, %d endpoints", u.State.Synced, len(got))
		}
		fresh++
	}
	return fresh, stale
}

// A writer that rewrites a file in place in 12 line-aligned chunks 5 ms
// apart (no pause reaching the settle time), 20 times: no part of a file is
// ever published as fresh; each whole file is.
func TestChunkedInPlaceWriterIsNeverTorn(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "greeter.yaml")
	a, b := addrs(1, 60), addrs(2, 48)
	files := [][]byte{discoFile("greeter", a...), discoFile("greeter", b...)}
	writeInPlace(t, path, files[0])
	src := newSource(t, dir)
	tg := core.Target{Name: "greeter"}
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, a...)
	for i := 1; i <= 20; i++ {
		writeChunked(t, path, files[i%2], 12, 5*time.Millisecond)
		want := [][]string{a, b}[i%2]
		waitFor(t, rec, tg, want...)
	}
	fresh, stale := wholeOrStale(t, rec, tg, a, b)
	t.Logf("%d fresh states, %d stale, for 20 chunked writes", fresh, stale)
}

// A two-step writer (half the file, a pause shorter than the settle time,
// the rest) beside a directory another writer keeps busy: the busy
// neighbour never makes the source read the half-written file as fresh.
func TestTwoStepWriterBesideABusyDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "greeter.yaml")
	a, b := addrs(1, 40), addrs(2, 30)
	files := [][]byte{discoFile("greeter", a...), discoFile("greeter", b...)}
	writeInPlace(t, path, files[0])
	src := newSource(t, dir)
	tg := core.Target{Name: "greeter"}
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, a...)
	stop := make(chan struct{})
	busyDone := make(chan struct{})
	go func() { // the neighbour: a file rewritten every 2 ms
		defer close(busyDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			os.WriteFile(filepath.Join(dir, "other.yaml"), discoFile("other", addrs(3, 1+i%5)...), 0o644)
		}
	}()
	for i := 1; i <= 20; i++ {
		writeChunked(t, path, files[i%2], 2, 5*time.Millisecond)
		waitFor(t, rec, tg, [][]string{a, b}[i%2]...)
	}
	close(stop)
	<-busyDone
	wholeOrStale(t, rec, tg, a, b)
}

// A file that keeps changing for longer than WithMaxSettle is read anyway,
// and what was read is published stale ("still being written"), never
// fresh; once the file is quiet it is read again and published fresh.
func TestFileThatNeverSettlesIsPublishedStale(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "greeter.yaml")
	a, b := addrs(1, 40), addrs(2, 80)
	writeInPlace(t, path, discoFile("greeter", a...))
	src := newSource(t, dir, file.WithMaxSettle(100*time.Millisecond))
	tg := core.Target{Name: "greeter"}
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, a...)
	writeChunked(t, path, discoFile("greeter", b...), 80, 5*time.Millisecond) // 400 ms of writing
	waitFor(t, rec, tg, b...)
	_, stale := wholeOrStale(t, rec, tg, a, b)
	if stale == 0 {
		t.Fatal("nothing was published stale while the file changed for 400 ms with WithMaxSettle(100ms)")
	}
	for _, u := range rec.For(tg) {
		if u.State.Stale.IsStale() && !strings.Contains(u.State.Stale.Reason, "still being written") {
			t.Fatalf("stale for %q, want \"still being written\"", u.State.Stale.Reason)
		}
	}
}

// Prometheus' own documented examples (the file_sd_config documentation and
// discovery/file's fixtures) are read as Prometheus reads them: port-less
// targets take the default port, a group without targets adds none, a
// target in two groups is one backend.
func TestPrometheusFileSDDocuments(t *testing.T) {
	docs := map[string]string{
		// discovery/file/fixtures/target_groups.json
		"a.json": "[\n\t{\n\t\t\"targets\": [\"localhost:9090\", \"example.org:443\"],\n\t\t\"labels\": {\n\t\t\t\"foo\": \"bar\"\n\t\t}\n\t},\n\t{\n\t\t\"targets\": [\"my.domain\"]\n\t}\n]\n",
		// discovery/file/fixtures/target_groups.yml
		"b.yml": "- targets: ['localhost:9090', 'example.org:443']\n  labels:\n    foo: bar\n\n- targets: ['my.domain']\n",
		// discovery/file/fixtures/valid2.yml
		"c.yml": "- targets: ['my.domain']\n- targets: ['localhost:9090']\n  labels:\n    foo: bar\n    fred: baz\n- targets: ['example.org:443']\n  labels:\n    scheme: https\n",
		// a group without targets, and one address in two groups
		"d.yml": "- labels: {job: empty}\n- targets: ['10.0.0.1:9100']\n  labels: {dc: a}\n- targets: ['10.0.0.1:9100', '10.0.0.2:9100']\n  labels: {dc: b}\n",
	}
	dir := t.TempDir()
	for name, doc := range docs {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src := newSource(t, dir, file.WithDefaultPort(80))
	ts := []core.Target{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}}
	_, rec := coretest.Watch(t, src, ts...)
	waitFor(t, rec, ts[0], "example.org:443", "localhost:9090", "my.domain:80")
	waitFor(t, rec, ts[1], "example.org:443", "localhost:9090", "my.domain:80")
	waitFor(t, rec, ts[2], "example.org:443", "localhost:9090", "my.domain:80")
	waitFor(t, rec, ts[3], "10.0.0.1:9100", "10.0.0.2:9100")
	st, _ := rec.Last(ts[3])
	if e, _ := st.State.Endpoints.Get("10.0.0.1:9100"); e == nil || e.Labels["dc"] != "a" {
		t.Fatalf("10.0.0.1:9100 carries %v, want the first group's labels", e)
	}
	st, _ = rec.Last(ts[0])
	if e, _ := st.State.Endpoints.Get("localhost:9090"); e == nil || e.Labels["foo"] != "bar" {
		t.Fatalf("localhost:9090 carries %v, want foo=bar", e)
	}
}

// A file over the size bound is an error naming the file and the limit;
// the last good endpoints stay, stale.
func TestFileOverTheSizeBound(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "greeter.yaml")
	a := addrs(1, 10)
	writeRename(t, path, discoFile("greeter", a...))
	src := newSource(t, dir, file.WithMaxSize(4096))
	tg := core.Target{Name: "greeter"}
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, a...)
	writeRename(t, path, discoFile("greeter", addrs(2, 400)...))
	st := waitStale(t, rec, tg)
	if !strings.Contains(st.Stale.Reason, path) || !strings.Contains(st.Stale.Reason, "limit of 4096") || !slices.Equal(coretest.HostPorts(st.Endpoints), sorted(a)) {
		t.Fatalf("stale %q with %d endpoints, want the last good 10 and a reason naming the file and the limit", st.Stale.Reason, st.Endpoints.Len())
	}
}

// A directory that can no longer be listed (chmod 000, seen by a process
// that is not root; removed) marks its targets stale with the reason,
// keeping their last good endpoints, and recovers when it can be read
// again.
func TestUnreadableDirectoryMarksTargetsStale(t *testing.T) {
	t.Run("removed", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "conf")
		os.Mkdir(dir, 0o755)
		a := addrs(1, 3)
		writeRename(t, filepath.Join(dir, "greeter.yaml"), discoFile("greeter", a...))
		src := newSource(t, dir, file.WithInterval(50*time.Millisecond))
		tg := core.Target{Name: "greeter"}
		_, rec := coretest.Watch(t, src, tg)
		waitFor(t, rec, tg, a...)
		if err := os.Rename(dir, dir+".gone"); err != nil {
			t.Fatal(err)
		}
		st := waitStale(t, rec, tg)
		if !strings.Contains(st.Stale.Reason, "cannot list "+dir) || st.Endpoints.Len() != 3 {
			t.Fatalf("stale %q with %d endpoints", st.Stale.Reason, st.Endpoints.Len())
		}
		os.Rename(dir+".gone", dir)
		waitFor(t, rec, tg, a...)
	})
	t.Run("chmod 000", func(t *testing.T) {
		// Root reads any directory: the watching process runs as nobody.
		out := runAsNobody(t, func(dir string) {
			writeRename(t, filepath.Join(dir, "greeter.yaml"), discoFile("greeter", addrs(1, 3)...))
		}, func(dir string) { os.Chmod(dir, 0) })
		if !strings.Contains(out, "stale: file: target greeter: keeping the last good endpoints: file: cannot list") || !strings.Contains(out, "permission denied") {
			t.Fatalf("the watching process saw:\n%s", out)
		}
	})
}

// runAsNobody runs this test binary as the user nobody watching a
// directory (prepared by setup), runs change once the first state was
// seen, and returns what the child printed. Skips where that cannot be
// done (not root, no nobody).
func runAsNobody(t *testing.T, setup, change func(dir string)) string {
	t.Helper()
	if os.Geteuid() != 0 {
		dir := t.TempDir()
		setup(dir)
		return watchAndReport(t, dir, change)
	}
	base, err := os.MkdirTemp("", "disco-file-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(filepath.Join(base, "conf"), 0o755); os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	dir := filepath.Join(base, "conf")
	os.Mkdir(dir, 0o755)
	setup(dir)
	exe, _ := os.Executable()
	bin := filepath.Join(base, "file.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, data, 0o755)
	const nobody = 65534
	filepath.Walk(base, func(p string, _ os.FileInfo, _ error) error { return os.Chown(p, nobody, nobody) })
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "DISCO_FILE_WATCH="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot run as nobody: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "fresh:") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	change(dir)
	for !strings.Contains(out.String(), "stale:") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stdin.Close()
	cmd.Wait()
	return out.String()
}

// lockedBuffer is a buffer a child process writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// watchAndReport watches the target greeter of dir in this process,
// prints each state ("fresh: ..." or "stale: <reason>") and returns the
// output once a stale state came after change.
func watchAndReport(t *testing.T, dir string, change func(string)) string {
	src := newSource(t, dir, file.WithInterval(50*time.Millisecond))
	tg := core.Target{Name: "greeter"}
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, addrs(1, 3)...)
	change(dir)
	st := waitStale(t, rec, tg)
	os.Chmod(dir, 0o755)
	return "fresh: 3\nstale: " + st.Stale.Reason + "\n"
}

// childWatch is the child's side of runAsNobody: it watches the target
// greeter of dir and prints each state until its stdin closes.
func childWatch(dir string) {
	src, err := file.New(dir, file.WithInterval(50*time.Millisecond))
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	hub, err := core.NewHub(src)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer hub.Close()
	tg := core.Target{Name: "greeter"}
	sub, err := hub.Subscribe("print", core.SinkFunc(func(_ context.Context, u core.Update) error {
		if u.State.Stale.IsStale() {
			fmt.Printf("stale: %s\n", u.State.Stale.Reason)
		} else {
			data, _ := json.Marshal(coretest.HostPorts(u.State.Endpoints))
			fmt.Printf("fresh: %s\n", data)
		}
		return nil
	}), tg)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer sub.Close()
	buf := make([]byte, 1)
	os.Stdin.Read(buf) // until the parent closes it
}

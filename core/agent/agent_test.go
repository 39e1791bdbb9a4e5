package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// staticFactory makes coretest.Static sources: every target it is asked for
// has one endpoint, 10.0.0.<n>:80, n from the config.
type staticFactory struct {
	mu   sync.Mutex
	made []*coretest.Static
}

type staticConfig struct {
	N       int      `yaml:"n"`
	Targets []string `yaml:"targets"`
}

func (*staticFactory) Type() string   { return "static" }
func (*staticFactory) NewConfig() any { return &staticConfig{N: 1} }
func (*staticFactory) Validate(cfg any) error {
	if c := cfg.(*staticConfig); c.N < 1 || c.N > 254 {
		return fmt.Errorf("n: %d: want 1 to 254: %w", c.N, core.ErrInvalid)
	}
	return nil
}
func (*staticFactory) Target(_ any, text string) (core.Target, error) {
	if strings.Contains(text, "!") {
		return core.Target{}, fmt.Errorf("no ! in a static target: %w", core.ErrInvalid)
	}
	return core.ParseTarget(text, core.HostSyntax)
}
func (f *staticFactory) NewSource(_ core.Env, cfg any) (core.Source, error) {
	c := cfg.(*staticConfig)
	sets := map[core.Target]core.Set{}
	for _, t := range c.Targets {
		set, err := core.NewSet(&core.Endpoint{ID: t, Addresses: []string{fmt.Sprintf("10.0.0.%d", c.N)}, Port: 80})
		if err != nil {
			return nil, err
		}
		sets[core.Target{Name: t}] = set
	}
	s := coretest.NewStatic(sets)
	f.mu.Lock()
	f.made = append(f.made, s)
	f.mu.Unlock()
	return s, nil
}

// recordFactory makes recording sinks; it counts attachments per target.
type recordFactory struct {
	demand bool

	mu       sync.Mutex
	sinks    []*recordSink
	attaches map[string]int
}

type recordConfig struct {
	Label string `yaml:"label"`
}

type recordSink struct {
	f      *recordFactory
	name   string
	label  string
	rec    *coretest.Recorder
	closed bool
}

func (f *recordFactory) Type() string {
	if f.demand {
		return "demand"
	}
	return "record"
}
func (*recordFactory) NewConfig() any       { return &recordConfig{} }
func (*recordFactory) Validate(any) error   { return nil }
func (f *recordFactory) DemandDriven() bool { return f.demand }
func (f *recordFactory) NewSink(env core.Env, cfg any) (core.AttachableSink, error) {
	s := &recordSink{f: f, name: env.Name, label: cfg.(*recordConfig).Label, rec: coretest.NewRecorder()}
	f.mu.Lock()
	f.sinks = append(f.sinks, s)
	f.mu.Unlock()
	return s, nil
}

func (s *recordSink) Attach(hub *core.Hub, targets ...core.Target) (io.Closer, error) {
	s.f.mu.Lock()
	if s.f.attaches == nil {
		s.f.attaches = map[string]int{}
	}
	for _, t := range targets {
		s.f.attaches[s.name+"/"+t.String()]++
	}
	if len(targets) == 0 {
		s.f.attaches[s.name+"/"]++
	}
	s.f.mu.Unlock()
	if len(targets) == 0 {
		return io.NopCloser(nil), nil
	}
	return hub.Subscribe(s.name, s.rec, targets...)
}

func (s *recordSink) Close() error { s.closed = true; return nil }

func (f *recordFactory) attached(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attaches[key]
}

func factories() (Factories, *staticFactory, *recordFactory) {
	sf, rf := &staticFactory{}, &recordFactory{}
	return Factories{Sources: []core.SourceFactory{sf}, Sinks: []core.SinkFactory{rf, &recordFactory{demand: true}}}, sf, rf
}

func writeConfig(t *testing.T, path, text string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Every error names the file, the line and the key.
func TestConfigErrorsNameFileLineAndKey(t *testing.T) {
	f, _, _ := factories()
	t.Setenv("DISCO_TEST_N", "7")
	good := `sources:
  s1:
    type: static
    n: ${DISCO_TEST_N}
    targets: [a, b]
sinks:
  r1:
    type: record
pipelines:
  - source: s1
    targets: [a]
    sinks: [r1]
`
	cfg, err := Parse("disco.yaml", []byte(good), f)
	if err != nil {
		t.Fatalf("a good file: %v", err)
	}
	if n := cfg.Sources["s1"].Config.(*staticConfig).N; n != 7 {
		t.Fatalf("${DISCO_TEST_N}: n = %d, want 7", n)
	}
	for _, c := range []struct{ name, text, want string }{
		{"unknown top key", "sourcez: {}\n" + good, `disco.yaml:1: sourcez: unknown key (known: log, http, shutdown, reload, sources, sinks, pipelines)`},
		{"unknown component key", strings.Replace(good, "    n: ${DISCO_TEST_N}", "    m: 3", 1), `disco.yaml:4: sources.s1.m: unknown key (known: n, targets)`},
		{"wrong type", strings.Replace(good, "    n: ${DISCO_TEST_N}", "    n: many", 1), "disco.yaml:4: sources.s1: cannot unmarshal !!str `many` into int"},
		{"validation names its key's line", strings.Replace(good, "    n: ${DISCO_TEST_N}", "    n: 999", 1), `disco.yaml:4: sources.s1: n: 999: want 1 to 254`},
		{"no type", strings.Replace(good, "    type: static\n", "", 1), `disco.yaml:3: sources.s1.type: required (one of: static)`},
		{"unknown type", strings.Replace(good, "type: static", "type: statik", 1), `disco.yaml:3: sources.s1.type: "statik": no such type in this distribution (it has: static)`},
		{"dangling source", strings.Replace(good, "  - source: s1", "  - source: s2", 1), `disco.yaml:10: pipelines[0].source: "s2": no such source (sources: s1)`},
		{"dangling sink", strings.Replace(good, "sinks: [r1]", "sinks: [r9]", 1), `disco.yaml:12: pipelines[0].sinks[0]: "r9": no such sink (sinks: r1)`},
		{"bad target", strings.Replace(good, "targets: [a]", "targets: [a, b!]", 1), `disco.yaml:11: pipelines[0].targets[1]: "b!": no ! in a static target`},
		{"unset variable", strings.Replace(good, "${DISCO_TEST_N}", "${DISCO_TEST_UNSET}", 1), `disco.yaml:4: environment variable DISCO_TEST_UNSET is not set`},
		{"syntax", good + "  - {\n", `disco.yaml:13: did not find expected node content`},
		{"demand-driven sink with targets", strings.Replace(good, "type: record", "type: demand", 1), `disco.yaml:12: pipelines[0].sinks[0]: r1 (demand) serves what its clients ask for: put it in a pipeline with no targets`},
		{"sink without targets", strings.Replace(good, "    targets: [a]\n", "", 1), `disco.yaml:11: pipelines[0].sinks[0]: r1 (record) needs targets`},
		{"no pipelines", strings.Split(good, "pipelines:")[0], `pipelines: none`},
	} {
		_, err := Parse("disco.yaml", []byte(c.text), f)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v\nwant it to contain %q", c.name, err, c.want)
		}
		if err != nil && !errors.Is(err, core.ErrInvalid) {
			t.Errorf("%s: %v does not wrap ErrInvalid", c.name, err)
		}
	}
	if _, err := Parse("d.yaml", []byte(strings.Replace(good, "${DISCO_TEST_N}", "${DISCO_TEST_UNSET:-9}", 1)), f); err != nil {
		t.Errorf("${VAR:-default}: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.yaml"), f); err == nil || !strings.Contains(err.Error(), "none.yaml: open") {
		t.Errorf("a missing file: %v", err)
	}
}

// A reload restarts only what changed: an added target is one new
// attachment, the others untouched (their seq goes on); a changed sink
// restarts with its attachments; an invalid file changes nothing and says
// why; a removed source stops with its attachments.
func TestReloadRestartsOnlyWhatChanged(t *testing.T) {
	f, sf, rf := factories()
	path := filepath.Join(t.TempDir(), "disco.yaml")
	base := `reload: {interval: 50ms, settle: 20ms}
http: {listen: 127.0.0.1:0}
sources:
  s1: {type: static, targets: [a, b, c]}
  s2: {type: static, n: 2, targets: [x]}
sinks:
  r1: {type: record, label: one}
  d1: {type: demand}
pipelines:
  - {source: s1, targets: [a, b], sinks: [r1]}
  - {source: s2, targets: [x], sinks: [r1]}
  - {source: s1, sinks: [d1]}
`
	writeConfig(t, path, base)
	a, err := New(path, f, zap.NewNop(), zap.NewAtomicLevel())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	if ok, missing := waitReady(a); !ok {
		t.Fatalf("not ready: %v", missing)
	}
	r1 := rf.sinks[0]
	seqA := lastSeq(r1.rec, "a")

	// A target added: one attachment more, a and b untouched.
	writeConfig(t, path, strings.Replace(base, "targets: [a, b], sinks", "targets: [a, b, c], sinks", 1))
	res := a.Reload(false)
	if res.Error != "" || len(res.Stopped) != 0 || len(res.Started) != 1 || !strings.Contains(res.Started[0], "r1 <- s1 c") {
		t.Fatalf("adding a target: %+v", res)
	}
	if rf.attached("r1/a") != 1 || rf.attached("r1/b") != 1 || rf.attached("r1/c") != 1 || len(sf.made) != 2 {
		t.Fatalf("attachments %v, sources made %d: a and b must not be attached again", rf.attaches, len(sf.made))
	}
	if a.Reload(false).Unchanged != true {
		t.Fatal("the same file again is no change")
	}
	if got := lastSeq(r1.rec, "a"); got != seqA {
		t.Fatalf("a's seq %d -> %d: an unchanged target was renumbered", seqA, got)
	}

	// An invalid file: nothing changes, the error names the line.
	writeConfig(t, path, strings.Replace(base, "n: 2", "n: 0", 1))
	res = a.Reload(false)
	if !strings.Contains(res.Error, path+":5: sources.s2: n: 0: want 1 to 254") || len(res.Started)+len(res.Stopped) != 0 {
		t.Fatalf("an invalid file: %+v", res)
	}
	if ok, _ := a.Ready(); !ok || len(a.sources) != 2 {
		t.Fatal("an invalid file stopped something")
	}

	// A sink's config changed: it restarts with its attachments, the sources
	// stay.
	writeConfig(t, path, strings.Replace(base, "label: one", "label: two", 1))
	res = a.Reload(false)
	if res.Error != "" || !contains(res.Stopped, "sink r1") || !contains(res.Started, "sink r1") || contains(res.Started, "source s1") {
		t.Fatalf("a sink changed: %+v", res)
	}
	if !r1.closed || len(sf.made) != 2 {
		t.Fatal("the old sink was not closed, or a source was remade")
	}

	// A source removed: it stops with its attachments.
	writeConfig(t, path, strings.Replace(strings.Replace(base, "  s2: {type: static, n: 2, targets: [x]}\n", "", 1), "  - {source: s2, targets: [x], sinks: [r1]}\n", "", 1))
	res = a.Reload(false)
	if res.Error != "" || !contains(res.Stopped, "source s2") || !contains(res.Stopped, "r1 <- s2 x") {
		t.Fatalf("a source removed: %+v", res)
	}
	for _, ts := range a.Targets() {
		if ts.Source == "s2" {
			t.Fatalf("a removed source still shows: %+v", ts)
		}
	}
}

// The config file is watched: a change is applied once it is quiet.
func TestFileChangeIsAppliedWithoutASignal(t *testing.T) {
	f, _, rf := factories()
	path := filepath.Join(t.TempDir(), "disco.yaml")
	base := `reload: {interval: 20ms, settle: 20ms}
http: {listen: 127.0.0.1:0}
sources:
  s1: {type: static, targets: [a, b]}
sinks:
  r1: {type: record}
pipelines:
  - {source: s1, targets: [a], sinks: [r1]}
`
	writeConfig(t, path, base)
	a, err := New(path, f, zap.NewNop(), zap.NewAtomicLevel())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	writeConfig(t, path, strings.Replace(base, "targets: [a], sinks", "targets: [a, b], sinks", 1))
	for deadline := time.Now().Add(10 * time.Second); rf.attached("r1/b") == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the file's change was not applied")
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func waitReady(a *Agent) (bool, []string) {
	var missing []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		var ok bool
		if ok, missing = a.Ready(); ok {
			return true, nil
		}
	}
	return false, missing
}

func lastSeq(rec *coretest.Recorder, target string) uint64 {
	var seq uint64
	for _, u := range rec.Updates() {
		if u.Target.Name == target {
			seq = u.Seq
		}
	}
	return seq
}

// The HTTP side: liveness, readiness, the status page and its JSON twin,
// metrics, and /-/reload only when enabled.
func TestHTTPEndpoints(t *testing.T) {
	f, _, _ := factories()
	path := filepath.Join(t.TempDir(), "disco.yaml")
	base := `http: {listen: 127.0.0.1:0}
sources:
  s1: {type: static, n: 3, targets: [a]}
sinks:
  r1: {type: record}
pipelines:
  - {source: s1, targets: [a], sinks: [r1]}
`
	writeConfig(t, path, base)
	a, err := New(path, f, zap.NewNop(), zap.NewAtomicLevel())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	waitReady(a)
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	get := func(p string) (int, string) {
		res, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := get("/livez"); code != 200 || body != "ok\n" {
		t.Fatalf("/livez: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	code, body := get("/")
	if code != 200 || !strings.Contains(body, `data-target="a"`) || !strings.Contains(body, "10.0.0.3:80") || !strings.Contains(body, `id="ready">ready`) {
		t.Fatalf("/: %d\n%s", code, body)
	}
	if strings.Contains(body, "http://") && strings.Contains(body, "<script") {
		t.Fatal("the status page loads something")
	}
	var ts []TargetStatus
	code, body = get("/api/targets")
	if err := json.Unmarshal([]byte(body), &ts); err != nil || code != 200 || len(ts) != 1 || ts[0].Endpoints[0].Addresses[0] != "10.0.0.3" || !ts[0].Synced {
		t.Fatalf("/api/targets: %d %v\n%s", code, err, body)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, `disco_agent_target_endpoints{source="s1",target="a"} 1`) {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	res, err := http.Post(srv.URL+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("/-/reload while not enabled: %d", res.StatusCode)
	}
	writeConfig(t, path, strings.Replace(base, "http: {listen: 127.0.0.1:0}", "http: {listen: 127.0.0.1:0, enable_lifecycle: true}", 1))
	a.Reload(false)
	writeConfig(t, path, strings.Replace(base, "n: 3", "n: 300", 1))
	res, err = http.Post(srv.URL+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "disco.yaml:3: sources.s1: n: 300") {
		t.Fatalf("/-/reload of an invalid file: %d %s", res.StatusCode, b)
	}
	if _, body := get("/"); !strings.Contains(body, `id="reload-error"`) || !strings.Contains(body, "n: 300") {
		t.Fatalf("the status page does not show the failed reload:\n%s", body)
	}
}

// SIGHUP reloads (the file is not polled here: an hour apart).
func TestSIGHUPReloads(t *testing.T) {
	f, _, rf := factories()
	path := filepath.Join(t.TempDir(), "disco.yaml")
	base := `reload: {interval: 1h}
http: {listen: 127.0.0.1:0}
sources:
  s1: {type: static, targets: [a, b]}
sinks:
  r1: {type: record}
pipelines:
  - {source: s1, targets: [a], sinks: [r1]}
`
	writeConfig(t, path, base)
	a, err := New(path, f, zap.NewNop(), zap.NewAtomicLevel())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(5 * time.Second); rf.attached("r1/a") == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("not started")
		}
	}
	writeConfig(t, path, strings.Replace(base, "targets: [a], sinks", "targets: [a, b], sinks", 1))
	time.Sleep(50 * time.Millisecond)
	if rf.attached("r1/b") != 0 {
		t.Fatal("applied before the signal")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); rf.attached("r1/b") == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload")
		}
	}
}

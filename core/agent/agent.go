package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/disco-lb/disco/core"
)

// Agent runs the sources, sinks and pipelines of a config file, and
// applies the file's changes without a restart: a reload parses and
// validates the whole new file first, keeps the running config if it is
// invalid, and restarts only the components whose config changed, so
// unchanged targets are neither listed again nor renumbered.
type Agent struct {
	f     Factories
	path  string
	log   *zap.Logger
	level zap.AtomicLevel
	reg   *prometheus.Registry // the agent's own series; components have one each
	m     *agentMetrics

	reloadMu sync.Mutex // one reload at a time

	mu      sync.Mutex
	cfg     *Config
	sources map[string]*sourceRun
	sinks   map[string]*sinkRun
	edges   map[edge]io.Closer
	lastErr error     // the last reload's error, nil after a good one
	lastAt  time.Time // when the last good config was applied
	hash    [32]byte  // of the file last loaded (good or not)
}

type sourceRun struct {
	c     *Component
	src   core.Source
	hub   *core.Hub
	reg   *prometheus.Registry
	track *tracker
}

type sinkRun struct {
	c    *Component
	sink core.AttachableSink
	reg  *prometheus.Registry
}

// edge is one attachment: a sink fed one target of a source (target ""
// for a demand-driven sink).
type edge struct{ sink, source, target string }

// New returns an agent for the config file at path, built from the
// factories. It loads and checks the file; Run starts it.
func New(path string, f Factories, log *zap.Logger, level zap.AtomicLevel) (*Agent, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a := &Agent{f: f, path: path, log: log, level: level, reg: reg, m: newAgentMetrics(reg),
		sources: map[string]*sourceRun{}, sinks: map[string]*sinkRun{}, edges: map[edge]io.Closer{}}
	cfg, hash, err := a.load()
	if err != nil {
		return nil, err
	}
	a.cfg, a.hash = cfg, hash
	return a, nil
}

func (a *Agent) load() (*Config, [32]byte, error) {
	data, err := os.ReadFile(a.path)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("config %s: %w", a.path, err)
	}
	hash := sha256.Sum256(data)
	cfg, err := Parse(a.path, data, a.f)
	return cfg, hash, err
}

// Start builds and starts every component of the loaded config. A
// component that cannot start (a port in use, a plugin that does not run)
// is an error; what started is stopped again.
func (a *Agent) Start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.setLevel(a.cfg)
	if err := a.applyLocked(a.cfg); err != nil {
		a.stopLocked(context.Background(), 0)
		return err
	}
	a.lastAt = time.Now()
	a.m.reloadOK.Set(1)
	a.m.lastReload.SetToCurrentTime()
	return nil
}

func (a *Agent) setLevel(cfg *Config) {
	if l, err := parseLevel(cfg.Log.Level); err == nil {
		a.level.SetLevel(l)
	}
}

func parseLevel(s string) (zapcore.Level, error) {
	l, err := zapcore.ParseLevel(s)
	if err != nil {
		return l, fmt.Errorf("%q: want debug, info, warn or error", s)
	}
	return l, nil
}

// ReloadResult says what a reload did.
type ReloadResult struct {
	Unchanged bool     `json:"unchanged,omitempty"` // the file is the same: nothing to do
	Started   []string `json:"started,omitempty"`   // components and attachments started
	Stopped   []string `json:"stopped,omitempty"`
	Error     string   `json:"error,omitempty"` // the file's problems (nothing changed), or what failed to start
}

// Reload loads the file again and applies what changed. An invalid file
// changes nothing: the running config stays, and the error says why (it is
// logged, counted, and shown on the status page). force applies an
// unchanged file too (SIGHUP, /-/reload).
func (a *Agent) Reload(force bool) ReloadResult {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	cfg, hash, err := a.load()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil && hash == a.hash && !force {
		return ReloadResult{Unchanged: true}
	}
	a.hash = hash
	if err != nil {
		a.lastErr = err
		a.m.reloads.WithLabelValues("failure").Inc()
		a.m.reloadOK.Set(0)
		a.log.Error("agent: the new config is invalid; the running one stays", zap.String("config", a.path), zap.Error(err))
		return ReloadResult{Error: err.Error()}
	}
	before := a.snapshotLocked()
	a.setLevel(cfg)
	err = a.applyLocked(cfg)
	after := a.snapshotLocked()
	res := ReloadResult{Started: minus(after, before), Stopped: minus(before, after)}
	a.cfg = cfg
	if err != nil {
		res.Error = err.Error()
		a.lastErr = err
		a.m.reloads.WithLabelValues("failure").Inc()
		a.m.reloadOK.Set(0)
		a.log.Error("agent: reloaded, but a component did not start", zap.Error(err))
		return res
	}
	a.lastErr = nil
	a.lastAt = time.Now()
	a.m.reloads.WithLabelValues("success").Inc()
	a.m.reloadOK.Set(1)
	a.m.lastReload.SetToCurrentTime()
	a.log.Info("agent: reloaded", zap.Strings("started", res.Started), zap.Strings("stopped", res.Stopped))
	return res
}

// snapshotLocked names every running component and attachment, with its
// config's key, so that two snapshots tell what a reload changed.
func (a *Agent) snapshotLocked() []string {
	var out []string
	for n, s := range a.sources {
		out = append(out, fmt.Sprintf("source %s#%p", n, s))
	}
	for n, s := range a.sinks {
		out = append(out, fmt.Sprintf("sink %s#%p", n, s))
	}
	for e, c := range a.edges {
		out = append(out, fmt.Sprintf("%s#%p", e, c))
	}
	return out
}

func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			name, _, _ := strings.Cut(x, "#")
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

func (e edge) String() string {
	if e.target == "" {
		return fmt.Sprintf("%s <- %s", e.sink, e.source)
	}
	return fmt.Sprintf("%s <- %s %s", e.sink, e.source, e.target)
}

// applyLocked makes the running components those of cfg: components whose
// config changed or that left are stopped with their attachments; new
// ones are started; attachments are opened and closed one by one. What
// did not change is not touched.
func (a *Agent) applyLocked(cfg *Config) error {
	want := map[edge]core.Target{}
	for _, pl := range cfg.Pipelines {
		for _, s := range pl.Sinks {
			if len(pl.targets) == 0 {
				want[edge{s, pl.Source, ""}] = core.Target{}
			}
			for _, t := range pl.targets {
				want[edge{s, pl.Source, t.String()}] = t
			}
		}
	}
	restartSource := func(n string) bool {
		run, ok := a.sources[n]
		c, keep := cfg.Sources[n]
		return ok && (!keep || c.key != run.c.key)
	}
	restartSink := func(n string) bool {
		run, ok := a.sinks[n]
		c, keep := cfg.Sinks[n]
		return ok && (!keep || c.key != run.c.key)
	}
	// Attachments that go: gone from the file, or of a component that
	// restarts.
	for e, c := range a.edges {
		if _, ok := want[e]; !ok || restartSource(e.source) || restartSink(e.sink) {
			c.Close()
			delete(a.edges, e)
		}
	}
	for n, run := range a.sinks {
		if restartSink(n) {
			run.sink.Close()
			delete(a.sinks, n)
			a.log.Info("agent: sink stopped", zap.String("sink", n))
		}
	}
	for n, run := range a.sources {
		if restartSource(n) {
			a.stopSource(run)
			delete(a.sources, n)
			a.log.Info("agent: source stopped", zap.String("source", n))
		}
	}
	var errs []error
	for _, n := range sortedKeys(cfg.Sources) {
		if _, ok := a.sources[n]; ok {
			continue
		}
		run, err := a.startSource(cfg.Sources[n])
		if err != nil {
			errs = append(errs, fmt.Errorf("source %s: %w", n, err))
			continue
		}
		a.sources[n] = run
		a.log.Info("agent: source started", zap.String("source", n), zap.String("type", run.c.Type))
	}
	for _, n := range sortedKeys(cfg.Sinks) {
		if _, ok := a.sinks[n]; ok {
			continue
		}
		run, err := a.startSink(cfg.Sinks[n])
		if err != nil {
			errs = append(errs, fmt.Errorf("sink %s: %w", n, err))
			continue
		}
		a.sinks[n] = run
		a.log.Info("agent: sink started", zap.String("sink", n), zap.String("type", run.c.Type))
	}
	edges := make([]edge, 0, len(want))
	for e := range want {
		edges = append(edges, e)
	}
	sort.Slice(edges, func(i, j int) bool { return edges[i].String() < edges[j].String() })
	for _, e := range edges {
		if _, ok := a.edges[e]; ok {
			continue
		}
		src, sink := a.sources[e.source], a.sinks[e.sink]
		if src == nil || sink == nil {
			continue // its component failed to start: said above
		}
		var c io.Closer
		var err error
		if e.target == "" {
			c, err = sink.sink.Attach(src.hub)
		} else {
			t := want[e]
			if tp, ok := src.src.(interface {
				Target(string) (core.Target, error)
			}); ok {
				if t2, err := tp.Target(e.target); err == nil {
					t = t2 // the source's own reading: a default namespace, say
				}
			}
			c, err = sink.sink.Attach(src.hub, t)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e, err))
			continue
		}
		a.edges[e] = c
	}
	a.m.components.WithLabelValues("source").Set(float64(len(a.sources)))
	a.m.components.WithLabelValues("sink").Set(float64(len(a.sinks)))
	return errors.Join(errs...)
}

func sortedKeys(m map[string]*Component) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (a *Agent) env(kind string, c *Component) (core.Env, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return core.Env{
		Name:       c.Name,
		Log:        a.log.With(zap.String(kind, c.Name)),
		Registerer: prometheus.WrapRegistererWith(prometheus.Labels{kind: c.Name}, reg),
	}, reg
}

func (a *Agent) startSource(c *Component) (*sourceRun, error) {
	f, _ := a.f.source(c.Type)
	env, reg := a.env("source", c)
	src, err := f.NewSource(env, c.Config)
	if err != nil {
		return nil, err
	}
	track := newTracker(c.Name, a.m)
	hub, err := core.NewHub(src, core.WithLogger(env.Log), core.WithMetrics(track), core.WithLinger(5*time.Second))
	if err != nil {
		if cl, ok := src.(io.Closer); ok {
			cl.Close()
		}
		return nil, err
	}
	return &sourceRun{c: c, src: src, hub: hub, reg: reg, track: track}, nil
}

func (a *Agent) stopSource(run *sourceRun) {
	run.hub.Close()
	if cl, ok := run.src.(io.Closer); ok {
		cl.Close()
	}
}

func (a *Agent) startSink(c *Component) (*sinkRun, error) {
	f, _ := a.f.sink(c.Type)
	env, reg := a.env("sink", c)
	s, err := f.NewSink(env, c.Config)
	if err != nil {
		return nil, err
	}
	return &sinkRun{c: c, sink: s, reg: reg}, nil
}

// Stop drains and stops everything: deliveries in flight get drain to
// finish, then attachments, sinks and sources stop.
func (a *Agent) Stop(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopLocked(ctx, a.cfg.Shutdown.Drain)
}

func (a *Agent) stopLocked(ctx context.Context, drain time.Duration) {
	if drain > 0 {
		dctx, cancel := context.WithTimeout(ctx, drain)
		var wg sync.WaitGroup
		for n, s := range a.sinks {
			if d, ok := s.sink.(interface{ Drain(context.Context) error }); ok {
				wg.Go(func() {
					if err := d.Drain(dctx); err != nil {
						a.log.Warn("agent: deliveries still in flight at the drain deadline", zap.String("sink", n), zap.Duration("drain", drain))
					}
				})
			}
		}
		wg.Wait()
		cancel()
	}
	for e, c := range a.edges {
		c.Close()
		delete(a.edges, e)
	}
	for n, s := range a.sinks {
		s.sink.Close()
		delete(a.sinks, n)
	}
	for n, s := range a.sources {
		a.stopSource(s)
		delete(a.sources, n)
	}
}

// Registry gathers the agent's metrics and every component's.
func (a *Agent) gatherers() prometheus.Gatherers {
	a.mu.Lock()
	defer a.mu.Unlock()
	g := prometheus.Gatherers{a.reg}
	for _, s := range a.sources {
		g = append(g, s.reg)
	}
	for _, s := range a.sinks {
		g = append(g, s.reg)
	}
	return g
}

package coretest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/route"
	"github.com/disco-lb/disco/core/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// staticHarness runs the source suite against coretest.Static.
type staticHarness struct {
	src *coretest.Static
	n   atomic.Int32
}

func (h *staticHarness) Source() core.Source { return h.src }
func (h *staticHarness) NewTarget(t *testing.T) core.Target {
	return core.Target{Name: fmt.Sprintf("t%d", h.n.Add(1))}
}
func (h *staticHarness) Write(t *testing.T, tg core.Target, bs []coretest.Backend) {
	eps := make([]*core.Endpoint, len(bs))
	for i, b := range bs {
		eps[i] = &core.Endpoint{Addresses: []string{b.Address}, Port: b.Port}
	}
	h.src.Set(tg, coretest.Set(t, eps...))
}
func (h *staticHarness) Break(*testing.T) bool  { return false }
func (h *staticHarness) Heal(*testing.T)        {}
func (h *staticHarness) Timeout() time.Duration { return 5 * time.Second }
func (h *staticHarness) IgnoreGoroutines() []string {
	return nil
}
func (h *staticHarness) Missing(*testing.T) (core.Target, error, bool) {
	return core.Target{Name: "missing"}, core.ErrNotFound, true
}

func TestStaticPassesTheSourceSuite(t *testing.T) {
	coretest.TestSource(t, &staticHarness{src: coretest.NewStatic(nil)})
}

// wireSink sends every update over JSON in the delta form to a Replica, as
// a webhook receiver or a plugin would: the suite checks the wire contract.
type wireSink struct {
	r *wire.Replica
}

func (s *wireSink) Accept(ctx context.Context, u core.Update) error {
	b, err := json.Marshal(wire.From(u, wire.DeltaForm))
	if err != nil {
		return err
	}
	w, err := wire.Decode(b)
	if err != nil {
		return err
	}
	if u, err := s.r.Next(w); err == nil {
		s.r.Commit(u)
	} else if err != nil && !errors.Is(err, wire.ErrDuplicate) {
		return err
	}
	return nil
}

type wireHarness struct{}

func (wireHarness) NewSink(*testing.T) core.Sink { return &wireSink{r: wire.NewReplica()} }
func (wireHarness) Observe(t *testing.T, s core.Sink, tg core.Target) []string {
	st, _, _, _ := s.(*wireSink).r.State(tg)
	var out []string
	for e := range st.Endpoints.All() {
		out = append(out, e.HostPorts()...)
	}
	return out
}
func (wireHarness) Routes() bool           { return false }
func (wireHarness) MultiTarget() bool      { return true }
func (wireHarness) Timeout() time.Duration { return 5 * time.Second }

func TestWireReplicaPassesTheSinkSuite(t *testing.T) { coretest.TestSink(t, wireHarness{}) }

// routingSink keeps core.Routable of each target: the suite's routing
// expectations, checked against the plainest implementation.
type routingSink struct {
	mu sync.Mutex
	m  map[core.Target][]*core.Endpoint
}

func (s *routingSink) Accept(ctx context.Context, u core.Update) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.State.Synced {
		s.m[u.Target] = route.Routable(u.State.Endpoints)
	}
	return nil
}

type routingHarness struct{}

func (routingHarness) NewSink(*testing.T) core.Sink {
	return &routingSink{m: map[core.Target][]*core.Endpoint{}}
}
func (routingHarness) Observe(t *testing.T, s core.Sink, tg core.Target) []string {
	rs := s.(*routingSink)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var out []string
	for _, e := range rs.m[tg] {
		out = append(out, e.HostPorts()...)
	}
	return out
}
func (routingHarness) Routes() bool           { return true }
func (routingHarness) MultiTarget() bool      { return true }
func (routingHarness) Timeout() time.Duration { return 5 * time.Second }

func TestRoutingSinkPassesTheSinkSuite(t *testing.T) { coretest.TestSink(t, routingHarness{}) }

// ghostSink applies each delta blindly, ignoring that an update from
// nothing replaces what it holds: the suite must catch the ghosts.
type ghostSink struct {
	mu sync.Mutex
	m  map[core.Target]map[string]*core.Endpoint
}

func (s *ghostSink) Accept(ctx context.Context, u core.Update) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	held := s.m[u.Target]
	if held == nil {
		held = map[string]*core.Endpoint{}
		s.m[u.Target] = held
	}
	for _, e := range u.Removed {
		delete(held, e.ID)
	}
	for _, c := range u.Changed {
		held[c.New.ID] = c.New
	}
	for _, e := range u.Added {
		held[e.ID] = e
	}
	return nil
}

type ghostHarness struct{ wireHarness }

func (ghostHarness) NewSink(*testing.T) core.Sink {
	return &ghostSink{m: map[core.Target]map[string]*core.Endpoint{}}
}
func (ghostHarness) Observe(t *testing.T, s core.Sink, tg core.Target) []string {
	gs := s.(*ghostSink)
	gs.mu.Lock()
	defer gs.mu.Unlock()
	var out []string
	for _, e := range gs.m[tg] {
		out = append(out, e.HostPorts()...)
	}
	return out
}
func (ghostHarness) Timeout() time.Duration { return 200 * time.Millisecond }

// partialSource publishes a target's endpoints one at a time: the suite
// must catch the partial sets.
type partialSource struct{ static *coretest.Static }

func (p partialSource) Watch(ctx context.Context, tg core.Target, pub core.Publisher) error {
	return p.static.Watch(ctx, tg, partialPublisher{pub})
}

type partialPublisher struct{ core.Publisher }

func (p partialPublisher) Publish(s core.Set) {
	var eps []*core.Endpoint
	for e := range s.All() {
		eps = append(eps, e)
		part, _ := core.NewSet(eps...)
		p.Publisher.Publish(part)
	}
	if s.Len() == 0 {
		p.Publisher.Publish(s)
	}
}

type partialHarness struct{ *staticHarness }

func (h partialHarness) Source() core.Source { return partialSource{h.src} }

// TestBrokenImplementationsFailTheSuites runs the suites against broken
// implementations in a child process and expects them to fail there, in the
// check written for that very fault.
func TestBrokenImplementationsFailTheSuites(t *testing.T) {
	if which := os.Getenv("CORETEST_BROKEN"); which != "" {
		switch which {
		case "sink":
			coretest.TestSink(t, ghostHarness{})
		case "source":
			coretest.TestSource(t, partialHarness{&staticHarness{src: coretest.NewStatic(nil)}})
		}
		return
	}
	for which, want := range map[string]string{
		"sink":   "--- FAIL: TestBrokenImplementationsFailTheSuites/update_from_nothing_replaces",
		"source": "which the backend never held",
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenImplementationsFailTheSuites$", "-test.v")
		cmd.Env = append(os.Environ(), "CORETEST_BROKEN="+which)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("broken %s: suite err = %v, output lacks %q:\n%s", which, err, want, out)
		}
	}
}

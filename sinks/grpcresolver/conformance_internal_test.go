package grpcresolver

import (
	"context"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
)

// lastStateCC is a resolver.ClientConn that keeps the last state it got.
type lastStateCC struct {
	resolver.ClientConn
	mu   sync.Mutex
	last *resolver.State
}

func (c *lastStateCC) UpdateState(s resolver.State) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = &s
	return nil
}
func (c *lastStateCC) ReportError(error)                                    {}
func (c *lastStateCC) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

// resolverHarness runs core's sink conformance suite against a resolver:
// what grpc-go gets is what it observes.
type resolverHarness struct {
	mu  sync.Mutex
	ccs map[core.Sink]*lastStateCC
}

func (h *resolverHarness) NewSink(t *testing.T) core.Sink {
	hub := coretest.Hub(t, coretest.NewStatic(nil))
	b, err := New("conformance", hub)
	if err != nil {
		t.Fatal(err)
	}
	cc := &lastStateCC{}
	f, _ := detachedFeed(b, core.Target{Name: "conformance"}, cc)
	t.Cleanup(f.stop)
	sink := &resolverSink{f: f}
	h.mu.Lock()
	h.ccs[sink] = cc
	h.mu.Unlock()
	return sink
}

type resolverSink struct{ f *targetFeed }

func (s *resolverSink) Accept(ctx context.Context, u core.Update) error { return s.f.Accept(ctx, u) }

// detachedFeed is a target's feed with one ClientConn and no subscription:
// a test feeds it with Accept.
func detachedFeed(b *Builder, t core.Target, cc resolver.ClientConn) (*targetFeed, *discoResolver) {
	f := newFeed(b, t)
	close(f.ready)
	go f.send()
	r := &discoResolver{b: b, cc: cc, target: t}
	f.join(r)
	return f, r
}

func (h *resolverHarness) Observe(t *testing.T, s core.Sink, _ core.Target) []string {
	h.mu.Lock()
	cc := h.ccs[s]
	h.mu.Unlock()
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.last == nil {
		return nil
	}
	var out []string
	for _, e := range cc.last.Endpoints {
		for _, a := range e.Addresses {
			out = append(out, a.Addr)
		}
	}
	return out
}
func (h *resolverHarness) Routes() bool           { return true }
func (h *resolverHarness) MultiTarget() bool      { return false }
func (h *resolverHarness) Timeout() time.Duration { return 5 * time.Second }

func TestResolverPassesTheSinkSuite(t *testing.T) {
	coretest.TestSink(t, &resolverHarness{ccs: map[core.Sink]*lastStateCC{}})
}

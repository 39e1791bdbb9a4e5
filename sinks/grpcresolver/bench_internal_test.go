package grpcresolver

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
)

// keepCC is a resolver.ClientConn that keeps the last state, as grpc-go
// does, and signals each one.
type keepCC struct {
	resolver.ClientConn
	mu   sync.Mutex
	last resolver.State
	got  chan struct{}
}

func (c *keepCC) UpdateState(s resolver.State) error {
	c.mu.Lock()
	c.last = s
	c.mu.Unlock()
	select {
	case c.got <- struct{}{}:
	default:
	}
	return nil
}
func (c *keepCC) ReportError(error)                                    {}
func (c *keepCC) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

func benchSet(b *testing.B, n int) core.Set {
	eps := make([]*core.Endpoint, n)
	for i := range eps {
		eps[i] = &core.Endpoint{ID: fmt.Sprintf("pod-uid-%05d", i), Name: fmt.Sprintf("greeter-%05d", i),
			Addresses: []string{fmt.Sprintf("10.244.%d.%d", i/250, i%250+1)}, Port: 50051,
			Zone: fmt.Sprintf("zone-%d", i%3), Node: fmt.Sprintf("node-%d", i%50)}
	}
	s, err := core.NewSet(eps...)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkUpdateOneChange: the resolver's own work for one endpoint of n
// changing readiness (what update does before grpc-go's UpdateState, which
// is measured apart in connpool's BenchmarkGRPCUpdateState).
func BenchmarkUpdateOneChange(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			hub := coretest.Hub(b, coretest.NewStatic(nil))
			bl, err := New("bench", hub)
			if err != nil {
				b.Fatal(err)
			}
			f, r := detachedFeed(bl, core.Target{Name: "bench"}, &keepCC{got: make(chan struct{}, 1)})
			defer f.stop()
			set := benchSet(b, n)
			ctx := context.Background()
			if err := f.Accept(ctx, core.Update{Target: r.target, Seq: 1, State: core.State{Endpoints: set, Synced: true}, Delta: core.Diff(core.Set{}, set)}); err != nil {
				b.Fatal(err)
			}
			flip := [2]*core.Endpoint{set.At(n / 2), nil}
			c := *flip[0]
			c.Conditions.Ready = new(false)
			flip[1] = &c
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				next, err := set.With(flip[(i+1)%2])
				if err != nil {
					b.Fatal(err)
				}
				if err := f.Accept(ctx, core.Update{Target: r.target, Seq: uint64(i + 2), BaseSeq: uint64(i + 1),
					State: core.State{Endpoints: next, Synced: true}, Delta: core.Diff(set, next)}); err != nil {
					b.Fatal(err)
				}
				set = next
			}
		})
	}
}

// BenchmarkRetainedHeap: what core and the resolver keep per endpoint, for
// a target of 2,000 endpoints served to 1 or 50 ClientConns (ClientConns
// that keep the last state, as grpc-go does; grpc-go's own structures are
// not counted).
func BenchmarkRetainedHeap(b *testing.B) {
	const n = 2000
	for _, conns := range []int{1, 50} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			var perEndpoint float64
			for i := 0; i < b.N; i++ {
				target := core.Target{Name: "bench"}
				set := benchSet(b, n)
				runtime.GC()
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				hub := coretest.Hub(b, coretest.NewStatic(map[core.Target]core.Set{target: set}))
				bl, err := New("bench", hub, WithTargetParser(func(string) (core.Target, error) { return target, nil }))
				if err != nil {
					b.Fatal(err)
				}
				var ccs []*keepCC
				var rs []resolver.Resolver
				for range conns {
					cc := &keepCC{got: make(chan struct{}, 1)}
					r, err := bl.Build(resolver.Target{}, cc, resolver.BuildOptions{})
					if err != nil {
						b.Fatal(err)
					}
					ccs, rs = append(ccs, cc), append(rs, r)
				}
				for _, cc := range ccs {
					select {
					case <-cc.got:
					case <-time.After(10 * time.Second):
						b.Fatal("no state")
					}
				}
				runtime.GC()
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				perEndpoint = float64(after.HeapAlloc-before.HeapAlloc) / n
				for _, r := range rs {
					r.Close()
				}
				hub.Close()
				runtime.KeepAlive(set)
			}
			b.ReportMetric(perEndpoint, "B/endpoint")
		})
	}
}

// discoGoroutines counts the goroutines running disco code (core's
// mailboxes and feeds, the resolver's senders).
func discoGoroutines() int {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/disco-lb/disco/") && !strings.Contains(g, "discoGoroutines") {
			n++
		}
	}
	return n
}

// BenchmarkGoroutinesPerTarget: the goroutines disco runs for t targets of
// c ClientConns each (one subscription per target, fanned out to its
// ClientConns): they grow with targets, not with ClientConns.
func BenchmarkGoroutinesPerTarget(b *testing.B) {
	for _, tc := range []struct{ targets, conns int }{{1, 1}, {1, 50}, {1, 500}, {10, 50}} {
		b.Run(fmt.Sprintf("targets=%d/conns=%d", tc.targets, tc.conns), func(b *testing.B) {
			var n int
			for range b.N {
				n = goroutinesFor(b, tc.targets, tc.conns)
			}
			b.ReportMetric(float64(n), "goroutines")
			b.ReportMetric(float64(n)/float64(tc.targets), "goroutines/target")
		})
	}
}

func goroutinesFor(tb testing.TB, targets, conns int) int {
	set := benchSetTB(tb, 10)
	hub := coretest.Hub(tb, fixedSource(set))
	bl, err := New("bench", hub)
	if err != nil {
		tb.Fatal(err)
	}
	defer bl.Close()
	var ccs []*keepCC
	for t := range targets {
		for range conns {
			cc := &keepCC{got: make(chan struct{}, 1)}
			u, _ := url.Parse(fmt.Sprintf("bench:///t%d", t))
			if _, err := bl.Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{}); err != nil {
				tb.Fatal(err)
			}
			ccs = append(ccs, cc)
		}
	}
	for _, cc := range ccs {
		select {
		case <-cc.got:
		case <-time.After(10 * time.Second):
			tb.Fatal("no state")
		}
	}
	return discoGoroutines()
}

func fixedSource(set core.Set) core.Source {
	return core.SourceFunc(func(ctx context.Context, _ core.Target, pub core.Publisher) error {
		pub.Publish(set)
		<-ctx.Done()
		return nil
	})
}

func benchSetTB(tb testing.TB, n int) core.Set {
	eps := make([]*core.Endpoint, n)
	for i := range eps {
		eps[i] = &core.Endpoint{ID: fmt.Sprintf("pod-%d", i), Addresses: []string{fmt.Sprintf("10.244.0.%d", i+1)}, Port: 50051}
	}
	s, err := core.NewSet(eps...)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// Goroutines grow with targets, not ClientConns: 500 ClientConns of one
// target cost what one does.
func TestGoroutinesGrowWithTargetsNotClientConns(t *testing.T) {
	one := goroutinesFor(t, 1, 1)
	many := goroutinesFor(t, 1, 500)
	ten := goroutinesFor(t, 10, 20)
	if many != one || ten > 10*one {
		t.Fatalf("disco goroutines: %d for 1 ClientConn, %d for 500 of one target, %d for 10 targets of 20: want the same for one target, and at most %d for ten", one, many, ten, 10*one)
	}
	t.Logf("disco goroutines: %d for a target (1 or 500 ClientConns), %d for 10 targets", one, ten)
}

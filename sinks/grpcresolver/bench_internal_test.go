package grpcresolver

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/disco-lb/disco/core"
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
			hub := core.NewHub(core.NewStatic(nil))
			defer hub.Close()
			bl := New("bench", hub)
			r := newResolver(bl, &keepCC{got: make(chan struct{}, 1)}, core.Target{Name: "bench"})
			set := benchSet(b, n)
			ctx := context.Background()
			if err := r.update(ctx, core.Update{Target: r.target, Seq: 1, State: core.State{Endpoints: set, Synced: true}, Delta: core.Diff(core.Set{}, set)}); err != nil {
				b.Fatal(err)
			}
			flip := [2]*core.Endpoint{set.At(n / 2), nil}
			c := *flip[0]
			c.Conditions.Ready = core.Bool(false)
			flip[1] = &c
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				next, err := set.With(flip[(i+1)%2])
				if err != nil {
					b.Fatal(err)
				}
				if err := r.update(ctx, core.Update{Target: r.target, Seq: uint64(i + 2), BaseSeq: uint64(i + 1),
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
				hub := core.NewHub(core.NewStatic(map[core.Target]core.Set{target: set}))
				bl := New("bench", hub, WithTargetParser(func(string) (core.Target, error) { return target, nil }))
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

package connpool_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/connpool"
)

func intPool(b *testing.B, n int, opts ...connpool.Option) (*connpool.Pool[int], *feed, []*core.Endpoint) {
	b.Helper()
	p := must(connpool.New(func(_ context.Context, e *core.Endpoint) (int, error) { return int(e.Port), nil }, func(int) error { return nil }, opts...))
	b.Cleanup(func() { p.Close() })
	eps := make([]*core.Endpoint, n)
	for i := range eps {
		eps[i] = &core.Endpoint{ID: fmt.Sprintf("pod-%05d", i), Addresses: []string{fmt.Sprintf("10.244.%d.%d", i/250, i%250+1)}, Port: uint16(i + 1)}
	}
	f := &feed{t: b, sink: p}
	f.set(eps...)
	for p.Len() < n {
		time.Sleep(time.Millisecond)
	}
	return p, f, eps
}

// BenchmarkPickDone: Pick and Done from every P at once over 100 endpoints.
func BenchmarkPickDone(b *testing.B) {
	for _, pol := range []struct {
		name string
		p    connpool.Policy
	}{{"p2c", connpool.PowerOfTwo}, {"roundrobin", connpool.RoundRobin}} {
		b.Run(pol.name, func(b *testing.B) {
			p, _, _ := intPool(b, 100, connpool.WithPolicy(pol.p))
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					h, err := p.Pick(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					h.Done()
				}
			})
		})
	}
}

// BenchmarkOneEndpointChange: one endpoint of the pool flips readiness; the
// pool's cost to apply core's delta (core's own diff is in core's figures).
func BenchmarkOneEndpointChange(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			p, _, eps := intPool(b, n)
			e := eps[n/2]
			down := *e
			down.Conditions.Ready = new(false)
			versions := []*core.Endpoint{&down, e}
			state := core.State{Synced: true}
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				old, cur := versions[(i+1)%2], versions[i%2]
				if err := p.Accept(ctx, core.Update{Target: target, Seq: uint64(i + 2), State: state,
					Delta: core.Delta{Changed: []core.Change{{Old: old, New: cur}}}}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGRPCUpdateState: the same change through grpc-go's resolver
// path: UpdateState with n addresses, one of them swapped, on a ClientConn
// with round_robin. The dialer never completes a connection (it waits for
// grpc-go to give up), so every subchannel stays connecting and the figure
// is the resolver-to-balancer path alone, without reconnect churn.
func BenchmarkGRPCUpdateState(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("endpoints=%d", n), func(b *testing.B) {
			r := manual.NewBuilderWithScheme(fmt.Sprintf("bench%d", n))
			eps := make([]resolver.Endpoint, n)
			for i := range eps {
				eps[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: fmt.Sprintf("127.0.0.1:%d", 20000+i)}}}
			}
			r.InitialState(resolver.State{Endpoints: eps})
			cc, err := grpc.NewClient(r.Scheme()+":///x", grpc.WithResolvers(r),
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
					<-ctx.Done()
					return nil, ctx.Err()
				}),
				grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Close()
			cc.Connect()
			time.Sleep(100 * time.Millisecond)
			alt := []resolver.Address{{Addr: fmt.Sprintf("127.0.0.1:%d", 19999)}}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				next := make([]resolver.Endpoint, n)
				copy(next, eps)
				if i%2 == 0 {
					next[n/2] = resolver.Endpoint{Addresses: alt}
				}
				r.UpdateState(resolver.State{Endpoints: next})
			}
		})
	}
}

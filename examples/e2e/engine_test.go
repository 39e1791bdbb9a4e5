package e2e_test

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/route"
	"github.com/disco-lb/disco/sinks/connpool"
	"github.com/disco-lb/disco/sinks/grpcresolver"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
)

// countingSource counts the Watch calls of the source it wraps.
type countingSource struct {
	core.Source
	mu      sync.Mutex
	started map[core.Target]int
	running map[core.Target]int
}

func (c *countingSource) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
	c.mu.Lock()
	c.started[t]++
	c.running[t]++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.running[t]--
		c.mu.Unlock()
	}()
	return c.Source.Watch(ctx, t, pub)
}

// Target passes the Kubernetes source's own target syntax through.
func (c *countingSource) Target(text string) (core.Target, error) {
	return c.Source.(*kubernetes.Source).Target(text)
}

func (c *countingSource) counts(t core.Target) (started, running int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.started[t], c.running[t]
}

// One engine: in one process, a gRPC resolver serving 50 ClientConns and a
// connection pool on the same target, through one shared hub over the
// Kubernetes source and a real API server, cost exactly one Source.Watch;
// every ClientConn and the pool reach the pods; when all are closed, the
// watch stops.
func TestOneWatchForFiftyClientConnsAndAPool(t *testing.T) {
	c := newCluster(t, 1)
	ctx := ctxFor(t, 3*time.Minute)
	names := c.startReady("greeter", 0, 3, "")
	k, err := kubernetes.New(c.cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	src := &countingSource{Source: k, started: map[core.Target]int{}, running: map[core.Target]int{}}
	hub := coretest.Hub(t, src)
	defer hub.Close()
	b := must(grpcresolver.NewKubernetes(hub))
	defer b.Close()
	target := core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}

	var conns []*grpc.ClientConn
	for range 50 {
		cc, err := grpc.NewClient("kubernetes:///greeter.demo:grpc", grpc.WithResolvers(b),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cc)
	}
	pool := must(connpool.New(connpool.DialGRPC(5*time.Second, grpc.WithTransportCredentials(insecure.NewCredentials())), connpool.CloseGRPC))
	defer pool.Close()
	sub, err := hub.Subscribe("pool", pool, target)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 51)
	for _, cc := range conns {
		wg.Go(func() {
			r, err := testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
			if err == nil && !slices.Contains(names, r.ServerId) {
				err = fmt.Errorf("answered by %q", r.ServerId)
			}
			errs <- err
		})
	}
	wg.Go(func() {
		r, err := testgrpc.NewTestServiceClient(must(connpool.NewChannel(pool))).UnaryCall(ctx, &testgrpc.SimpleRequest{})
		if err == nil && !slices.Contains(names, r.ServerId) {
			err = fmt.Errorf("pool call answered by %q", r.ServerId)
		}
		errs <- err
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if started, running := src.counts(target); started != 1 || running != 1 {
		t.Fatalf("Source.Watch called %d times (%d running) for 50 ClientConns and a pool; want 1", started, running)
	}
	for _, cc := range conns {
		cc.Close()
	}
	sub.Close()
	deadline := time.Now().Add(10 * time.Second)
	for _, running := src.counts(target); running != 0; _, running = src.counts(target) {
		if time.Now().After(deadline) {
			t.Fatal("the watch still runs after every consumer closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// loopbackEndpoint starts a test server on loopback and returns it as an
// endpoint named name, in zone, hinted for hints.
func loopbackEndpoint(t *testing.T, name, zone string, hints ...string) *core.Endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, ln, name)
	return &core.Endpoint{ID: name, Name: name, Addresses: []string{"127.0.0.1"},
		Port: uint16(ln.Addr().(*net.TCPAddr).Port), Zone: zone, ZoneHints: hints}
}

// Both sinks route by core's one locality rule: given the same endpoints,
// the resolver's zone-aware policy (which servers answer calls) and the
// pool with a zone (what it picks from) use the same set, and it is
// route.Locality's.
func TestResolverAndPoolPickTheSameLocalSet(t *testing.T) {
	grpcresolver.RegisterZoneAware("zone-a") // once per process: the same default as TestZoneAwareBalancing
	notReady := func(e *core.Endpoint) *core.Endpoint {
		c := *e
		c.Conditions.Ready = new(false)
		return &c
	}
	a0 := loopbackEndpoint(t, "a0", "zone-a")
	a1 := loopbackEndpoint(t, "a1", "zone-a")
	b0 := loopbackEndpoint(t, "b0", "zone-b")
	ha0 := loopbackEndpoint(t, "ha0", "zone-a", "zone-a")
	hb0 := loopbackEndpoint(t, "hb0", "zone-b", "zone-a") // in zone-b, hinted for zone-a
	hb1 := loopbackEndpoint(t, "hb1", "zone-b", "zone-b")
	tests := []struct {
		name     string
		minReady int
		eps      []*core.Endpoint
		want     []string
	}{
		{"by zone", 1, []*core.Endpoint{a0, a1, b0}, []string{"a0", "a1"}},
		{"by zone, too few local", 3, []*core.Endpoint{a0, a1, b0}, []string{"a0", "a1", "b0"}},
		{"by zone, a local one not ready", 2, []*core.Endpoint{a0, notReady(a1), b0}, []string{"a0", "b0"}},
		{"by hints", 1, []*core.Endpoint{ha0, hb0, hb1}, []string{"ha0", "hb0"}},
		{"hinted and unhinted mixed: every zone", 1, []*core.Endpoint{ha0, hb0, a0, b0}, []string{"a0", "b0", "ha0", "hb0"}},
		{"no local endpoint", 1, []*core.Endpoint{b0, hb1}, []string{"b0", "hb1"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxFor(t, time.Minute)
			set, err := core.NewSet(tt.eps...)
			if err != nil {
				t.Fatal(err)
			}
			loc := route.Locality{Zone: "zone-a", MinLocal: tt.minReady}
			var want []string
			for _, e := range loc.Select(route.Routable(set)) {
				want = append(want, e.Name)
			}
			slices.Sort(want)
			if !slices.Equal(want, tt.want) {
				t.Fatalf("route.Locality selects %v, the table says %v", want, tt.want)
			}
			target := core.Target{Name: fmt.Sprintf("svc%d", i)}
			hub := coretest.Hub(t, coretest.NewStatic(map[core.Target]core.Set{target: set}))
			defer hub.Close()

			pool := must(connpool.New(connpool.DialGRPC(5*time.Second, grpc.WithTransportCredentials(insecure.NewCredentials())),
				connpool.CloseGRPC, connpool.WithZone("zone-a", tt.minReady)))
			defer pool.Close()
			sub, err := hub.Subscribe("pool", pool, target)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			var got []string
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				got = got[:0]
				for _, e := range pool.Endpoints() {
					got = append(got, e.Name)
				}
				slices.Sort(got)
				if slices.Equal(got, want) || time.Now().After(deadline) {
					break
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("pool picks from %v, route.Locality says %v", got, want)
			}

			b := must(grpcresolver.New("static", hub,
				grpcresolver.WithServiceConfig(grpcresolver.ZoneAwareServiceConfig("zone-a", tt.minReady))))
			defer b.Close()
			client := testgrpc.NewTestServiceClient(dial(t, "static:///"+target.Name, grpc.WithResolvers(b)))
			answering := map[string]bool{}
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
				seen := map[string]bool{}
				for range 60 {
					r, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
					if err != nil {
						t.Fatal(err)
					}
					seen[r.ServerId] = true
				}
				answering = seen
				if slices.Equal(slices.Sorted(maps.Keys(seen)), want) {
					break
				}
			}
			if got := slices.Sorted(maps.Keys(answering)); !slices.Equal(got, want) {
				t.Fatalf("the resolver's zone-aware policy sends calls to %v, the pool and route.Locality to %v", got, want)
			}
		})
	}
}

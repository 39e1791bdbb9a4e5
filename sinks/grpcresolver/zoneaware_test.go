package grpcresolver_test

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/grpcresolver"
)

// zoneEndpoint is a loopback server as an endpoint in zone, hinted for hints.
func zoneEndpoint(t *testing.T, name, zone string, hints ...string) *core.Endpoint {
	s, addr := loopbackServer(t, name)
	e := endpointAt(s.Name, addr)
	e.Zone, e.ZoneHints = zone, hints
	return e
}

// answering returns, once the calls settle, the set of servers that answer
// 60 calls in a row; it fails if that set is not want within 10 s.
func answering(t *testing.T, ctx context.Context, client testgrpc.TestServiceClient, want ...string) {
	t.Helper()
	slices.Sort(want)
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		seen := map[string]bool{}
		for range 60 {
			r, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
			if err != nil {
				t.Fatal(err)
			}
			seen[r.ServerId] = true
		}
		got = slices.Sorted(maps.Keys(seen))
		if slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("servers answering: %v, want %v", got, want)
}

// Without hints, the zone-aware policy keeps a zone-a client in zone-a while
// at least minReady endpoints there are ready, and uses every zone below
// that.
func TestZoneAwareByZoneWithMinReady(t *testing.T) {
	grpcresolver.RegisterZoneAware("zone-a")
	ctx := ctxFor(t, time.Minute)
	a0, a1 := zoneEndpoint(t, "a-0", "zone-a"), zoneEndpoint(t, "a-1", "zone-a")
	b0, b1 := zoneEndpoint(t, "b-0", "zone-b"), zoneEndpoint(t, "b-1", "zone-b")
	target := core.Target{Name: "greeter"}
	src := coretest.NewStatic(map[core.Target]core.Set{target: coretest.Set(t, a0, b0, b1)})
	b := staticBuilder(t, src, grpcresolver.WithServiceConfig(grpcresolver.ZoneAwareServiceConfig("zone-a", 2)))
	client := testgrpc.NewTestServiceClient(dial(t, "static:///greeter", grpc.WithResolvers(b)))
	answering(t, ctx, client, "a-0", "b-0", "b-1") // 1 ready in zone-a < minReady 2: every zone
	src.Set(target, coretest.Set(t, a0, a1, b0, b1))
	answering(t, ctx, client, "a-0", "a-1") // 2 ready in zone-a: zone-a only
	a1NotReady := *a1
	a1NotReady.Conditions.Ready = new(false)
	src.Set(target, coretest.Set(t, a0, &a1NotReady, b0, b1))
	answering(t, ctx, client, "a-0", "b-0", "b-1") // back below minReady
}

// With hints on every endpoint, an endpoint serves the zones its hints name,
// whatever zone it is in (topology-aware routing moves capacity between
// zones); with hints on some endpoints only, no zone is preferred, as in
// kube-proxy.
func TestZoneAwareFollowsHints(t *testing.T) {
	grpcresolver.RegisterZoneAware("zone-a")
	ctx := ctxFor(t, time.Minute)
	a0 := zoneEndpoint(t, "a-0", "zone-a", "zone-a")
	b0 := zoneEndpoint(t, "b-0", "zone-b", "zone-a") // in zone-b, hinted for zone-a
	b1 := zoneEndpoint(t, "b-1", "zone-b", "zone-b")
	target := core.Target{Name: "greeter"}
	src := coretest.NewStatic(map[core.Target]core.Set{target: coretest.Set(t, a0, b0, b1)})
	b := staticBuilder(t, src, grpcresolver.WithServiceConfig(grpcresolver.ZoneAwareServiceConfig("", 1))) // zone from RegisterZoneAware
	client := testgrpc.NewTestServiceClient(dial(t, "static:///greeter", grpc.WithResolvers(b)))
	answering(t, ctx, client, "a-0", "b-0")
	a1 := zoneEndpoint(t, "a-1", "zone-a") // no hints: hints are being rolled out
	src.Set(target, coretest.Set(t, a0, a1, b0, b1))
	answering(t, ctx, client, "a-0", "a-1", "b-0", "b-1")
}

package xds

import (
	"fmt"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/disco-lb/disco/core"
)

func ep(id, zone string, opts ...func(*core.Endpoint)) *core.Endpoint {
	e := &core.Endpoint{ID: id, Name: id, Addresses: []string{"10.0.0." + strings.TrimPrefix(id, "p")}, Port: 50051, Zone: zone}
	for _, o := range opts {
		o(e)
	}
	return e
}

var (
	notReady    = func(e *core.Endpoint) { e.Conditions = core.Conditions{Ready: new(false)} }
	terminating = func(e *core.Endpoint) {
		e.Conditions = core.Conditions{Ready: new(false), Serving: new(true), Terminating: new(true)}
	}
	weight   = func(w uint32) func(*core.Endpoint) { return func(e *core.Endpoint) { e.Weight = w } }
	priority = func(p uint32) func(*core.Endpoint) { return func(e *core.Endpoint) { e.Priority = p } }
	addrs    = func(a ...string) func(*core.Endpoint) { return func(e *core.Endpoint) { e.Addresses = a } }
)

// render writes an assignment as "p<priority> <zone>(<weight>): addr(w),addr+extra(w)" per
// locality, in order.
func render(cla *endpointv3.ClusterLoadAssignment) string {
	var out []string
	for _, l := range cla.Endpoints {
		var eps []string
		for _, lbe := range l.LbEndpoints {
			e := lbe.GetEndpoint()
			a := e.Address.GetSocketAddress().Address
			for _, x := range e.AdditionalAddresses {
				a += "+" + x.Address.GetSocketAddress().Address
			}
			eps = append(eps, fmt.Sprintf("%s(%d)", a, lbe.LoadBalancingWeight.GetValue()))
			if lbe.HealthStatus.String() != "HEALTHY" {
				eps[len(eps)-1] += "!" + lbe.HealthStatus.String()
			}
		}
		out = append(out, fmt.Sprintf("p%d %s(%d): %s", l.Priority, l.Locality.GetZone(), l.LoadBalancingWeight.GetValue(), strings.Join(eps, ",")))
	}
	return strings.Join(out, "; ")
}

// The mapping from a target's state to what a gRPC client accepts: each
// case a rule that, broken, gets the update NACKed, a locality dropped, or
// traffic where it should not go. Every assignment passes Envoy's own
// validation.
func TestAssignmentMapping(t *testing.T) {
	set := func(eps ...*core.Endpoint) core.Set {
		s, err := core.NewSet(eps...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	fresh := func(eps ...*core.Endpoint) core.State { return core.State{Endpoints: set(eps...), Synced: true} }
	for _, tc := range []struct {
		name string
		st   core.State
		zone string
		want string
	}{
		{"ready endpoints, HEALTHY, one locality per zone weighted by the sum", fresh(ep("p1", "a"), ep("p2", "a"), ep("p3", "b")), "",
			"p0 a(2): 10.0.0.1(1),10.0.0.2(1); p0 b(1): 10.0.0.3(1)"},
		{"weights: 0 is 1, a locality's weight is its endpoints' sum", fresh(ep("p1", "a", weight(5)), ep("p2", "a", weight(0)), ep("p3", "b", weight(2))), "",
			"p0 a(6): 10.0.0.1(5),10.0.0.2(1); p0 b(2): 10.0.0.3(2)"},
		{"not ready ones left out while one is ready", fresh(ep("p1", "a"), ep("p2", "a", notReady), ep("p3", "a", terminating)), "",
			"p0 a(1): 10.0.0.1(1)"},
		{"terminating fallback only when none is ready", fresh(ep("p1", "a", notReady), ep("p2", "a", terminating)), "",
			"p0 a(1): 10.0.0.2(1)"},
		{"nothing routable: empty", fresh(ep("p1", "a", notReady)), "", ""},
		{"dual stack: one endpoint with an additional address", fresh(ep("p1", "a", addrs("10.0.0.1", "fd00::1"))), "",
			"p0 a(1): 10.0.0.1+fd00::1(1)"},
		{"a duplicate address is sent once", fresh(ep("p1", "a", addrs("10.0.0.9")), ep("p2", "b", addrs("10.0.0.9")), ep("p3", "b")), "",
			"p0 a(1): 10.0.0.9(1); p0 b(1): 10.0.0.3(1)"},
		{"SRV priorities: contiguous from 0", fresh(ep("p1", "", priority(10)), ep("p2", "", priority(30)), ep("p3", "", priority(10))), "",
			"p0 (2): 10.0.0.1(1),10.0.0.3(1); p1 (1): 10.0.0.2(1)"},
		{"zone variant: own zone at 0, the rest at 1", fresh(ep("p1", "a"), ep("p2", "b"), ep("p3", "a")), "a",
			"p0 a(2): 10.0.0.1(1),10.0.0.3(1); p1 b(1): 10.0.0.2(1)"},
		{"zone variant, no endpoint in the zone: every zone at 0", fresh(ep("p1", "b"), ep("p2", "c")), "a",
			"p0 b(1): 10.0.0.1(1); p0 c(1): 10.0.0.2(1)"},
		{"zone variant with priorities", fresh(ep("p1", "a", priority(1)), ep("p2", "b", priority(1)), ep("p3", "b", priority(2))), "a",
			"p0 a(1): 10.0.0.1(1); p1 b(1): 10.0.0.2(1); p2 b(1): 10.0.0.3(1)"},
		{"not synced yet: empty", core.State{}, "", ""},
		{"not found: empty, never missing", core.State{Synced: true, Stale: core.Staleness{Since: time.Now(), Kind: core.KindNotFound, Reason: "gone"}}, "", ""},
		{"stale (unavailable) keeps its last good endpoints", core.State{Endpoints: set(ep("p1", "a")), Synced: true,
			Stale: core.Staleness{Since: time.Now(), Kind: core.KindUnavailable, Reason: "API server down"}}, "", "p0 a(1): 10.0.0.1(1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cla := assignment("greeter.demo:grpc", tc.st, tc.zone, nil)
			if got := render(cla); got != tc.want {
				t.Fatalf("assignment:\n got %s\nwant %s", got, tc.want)
			}
			if cla.ClusterName != "greeter.demo:grpc" {
				t.Fatalf("cluster name %q", cla.ClusterName)
			}
			if err := validate(cla); err != nil {
				t.Fatalf("Envoy's validation refuses it: %v", err)
			}
		})
	}
}

// The other three resources pass Envoy's validation, and name one another.
func TestChainResources(t *testing.T) {
	l, err := listener("greeter.demo:grpc")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []interface{ ValidateAll() error }{l, routeConfig("greeter.demo:grpc"), cluster("greeter.demo:grpc")} {
		if err := r.ValidateAll(); err != nil {
			t.Fatal(err)
		}
	}
	if c := cluster("x"); c.EdsClusterConfig.ServiceName != "x" {
		t.Fatal("the cluster does not name its assignment")
	}
}

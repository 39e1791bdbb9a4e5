package xds_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/xds"
)

// adsConn dials the fixture's server for raw ADS streams.
func (f *fixture) adsConn() discoverygrpc.AggregatedDiscoveryServiceClient {
	f.t.Helper()
	cc, err := grpc.NewClient(f.uri, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { cc.Close() })
	return discoverygrpc.NewAggregatedDiscoveryServiceClient(cc)
}

// sotw is a raw state-of-the-world ADS stream, as Envoy or a gRPC client
// speaks it.
type sotw struct {
	t     *testing.T
	s     discoverygrpc.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	nonce map[string]string
	ver   map[string]string
}

func (f *fixture) sotw(ctx context.Context) *sotw {
	s, err := f.adsConn().StreamAggregatedResources(ctx)
	if err != nil {
		f.t.Fatal(err)
	}
	return &sotw{t: f.t, s: s, nonce: map[string]string{}, ver: map[string]string{}}
}

func (x *sotw) ask(typ string, names ...string) {
	x.t.Helper()
	if err := x.s.Send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: "raw"}, TypeUrl: typ, ResourceNames: names,
		VersionInfo: x.ver[typ], ResponseNonce: x.nonce[typ]}); err != nil {
		x.t.Fatal(err)
	}
}

// next receives the next response and ACKs it, keeping the subscription
// to names.
func (x *sotw) next(ack bool, names ...string) *discoverygrpc.DiscoveryResponse {
	x.t.Helper()
	r, err := x.s.Recv()
	if err != nil {
		x.t.Fatal(err)
	}
	x.nonce[r.TypeUrl], x.ver[r.TypeUrl] = r.Nonce, r.VersionInfo
	if ack {
		x.ask(r.TypeUrl, names...)
	}
	return r
}

func assignments(t *testing.T, r *discoverygrpc.DiscoveryResponse) map[string]int {
	out := map[string]int{}
	for _, a := range r.Resources {
		var cla endpointv3.ClusterLoadAssignment
		if err := a.UnmarshalTo(&cla); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, l := range cla.Endpoints {
			n += len(l.LbEndpoints)
		}
		out[cla.ClusterName] = n
	}
	return out
}

// One ADS stream unsubscribing from a resource and subscribing to it again
// gets it again (a known go-control-plane case: a cache that remembers it
// was sent would send nothing).
func TestUnsubscribeThenResubscribeOnOneStream(t *testing.T) {
	b1 := startBackend(t, "b1", 61)
	a, b := core.Target{Name: "a"}, core.Target{Name: "b"}
	f := newFixture(t, map[core.Target]core.Set{a: set(t, b1.endpoint("")), b: set(t, b1.endpoint(""))})
	x := f.sotw(ctxFor(t, 20*time.Second))
	x.ask(resource.EndpointType, "a", "b")
	got := map[string]int{}
	for len(got) < 2 {
		for k, v := range assignments(t, x.next(true, "a", "b")) {
			got[k] = v
		}
	}
	x.ask(resource.EndpointType, "b") // unsubscribe from a
	x.ask(resource.EndpointType, "a", "b")
	r := x.next(true, "a", "b")
	if _, ok := assignments(t, r)["a"]; !ok {
		t.Fatalf("resubscribed to a, got %v", assignments(t, r))
	}
}

// A name that is no target gets an empty assignment (and a log line), not
// a crash and not silence; a stream asking for more names than the bound
// is ended with an error saying so, and the server serves others on.
func TestBadNamesAndTooManyNames(t *testing.T) {
	b1 := startBackend(t, "b1", 62)
	tg := core.Target{Name: "greeter"}
	f := newFixture(t, map[core.Target]core.Set{tg: set(t, b1.endpoint(""))}, xds.WithMaxResourcesPerStream(1000))
	x := f.sotw(ctxFor(t, 20*time.Second))
	bad := "greeter?zone=a?zone=b"
	x.ask(resource.EndpointType, bad)
	if got := assignments(t, x.next(true, bad)); len(got) != 1 || got[bad] != 0 {
		t.Fatalf("a name that is no target: %v, want an empty assignment", got)
	}

	var many []string
	for i := range 10_000 {
		many = append(many, fmt.Sprintf("target-%d", i))
	}
	y := f.sotw(ctxFor(t, 20*time.Second))
	y.ask(resource.EndpointType, many...)
	if _, err := y.s.Recv(); grpcstatus.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "over the limit of 1000") {
		t.Fatalf("10,000 names on one stream: %v, want the stream ended with the limit named", err)
	}
	c := f.client("")
	serving(t, c, 5, "b1")
}

// A client that never ACKs holds up no one (it gets nothing more: in the
// state-of-the-world protocol each response answers a request); a NACK is
// counted and logged.
func TestSilentAndNACKingClients(t *testing.T) {
	b1, b2 := startBackend(t, "b1", 63), startBackend(t, "b2", 64)
	tg := core.Target{Name: "greeter"}
	f := newFixture(t, map[core.Target]core.Set{tg: set(t, b1.endpoint(""))})
	silent := f.sotw(ctxFor(t, 20*time.Second))
	silent.ask(resource.EndpointType, "greeter")
	silent.next(false) // never ACKed
	c := f.client("")
	serving(t, c, 5, "b1")
	f.src.Set(tg, set(t, b2.endpoint("")))
	serving(t, c, 5, "b2")

	nack := f.sotw(ctxFor(t, 20*time.Second))
	nack.ask(resource.EndpointType, "greeter")
	nack.next(false)
	if err := nack.s.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: []string{"greeter"},
		ResponseNonce: nack.nonce[resource.EndpointType], ErrorDetail: &status.Status{Code: 3, Message: "test NACK"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.metric("disco_xds_replies_total", "nack") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the NACK was not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The delta (incremental) protocol, as Envoy speaks it: subscribe, get the
// resource, get a change of it alone, unsubscribe.
func TestDeltaProtocol(t *testing.T) {
	b1, b2 := startBackend(t, "b1", 65), startBackend(t, "b2", 66)
	a, b := core.Target{Name: "a"}, core.Target{Name: "b"}
	f := newFixture(t, map[core.Target]core.Set{a: set(t, b1.endpoint("")), b: set(t, b1.endpoint(""))})
	s, err := f.adsConn().DeltaAggregatedResources(ctxFor(t, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	send := func(req *discoverygrpc.DeltaDiscoveryRequest) {
		t.Helper()
		req.TypeUrl = resource.EndpointType
		if err := s.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() *discoverygrpc.DeltaDiscoveryResponse {
		t.Helper()
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		send(&discoverygrpc.DeltaDiscoveryRequest{ResponseNonce: r.Nonce}) // ACK
		return r
	}
	send(&discoverygrpc.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "envoy-like"}, ResourceNamesSubscribe: []string{"a", "b"}})
	got := map[string]bool{}
	for len(got) < 2 {
		for _, r := range recv().Resources {
			got[r.Name] = true
		}
	}
	f.src.Set(a, set(t, b1.endpoint(""), b2.endpoint("")))
	r := recv()
	if len(r.Resources) != 1 || r.Resources[0].Name != "a" {
		t.Fatalf("a change of a: %d resources, want a alone", len(r.Resources))
	}
	var cla endpointv3.ClusterLoadAssignment
	if err := r.Resources[0].Resource.UnmarshalTo(&cla); err != nil || len(cla.Endpoints[0].LbEndpoints) != 2 {
		t.Fatalf("a's new assignment: %v %v", &cla, err)
	}
	send(&discoverygrpc.DeltaDiscoveryRequest{ResourceNamesUnsubscribe: []string{"a"}})
	deadline := time.Now().Add(5 * time.Second)
	for f.metric("disco_xds_subscriptions", "endpoints") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("subscriptions after unsubscribing a: %v, want 1", f.metric("disco_xds_subscriptions", "endpoints"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// metric sums the series of name that carry a label of value label (every
// series with label "").
func (f *fixture) metric(name, label string) float64 {
	f.t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetValue() == label
			}
			if match {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

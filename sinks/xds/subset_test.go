package xds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/xds"
)

// watcher is a raw ADS stream subscribed to one assignment, ACKing every
// response and keeping the last one's addresses, how many came and their
// bytes.
type watcher struct {
	name  string
	mu    sync.Mutex
	addr  []string
	n     int
	bytes int
	done  chan struct{}
}

func (f *fixture) watch(ctx context.Context, name string) *watcher {
	f.t.Helper()
	return rawWatch(f.t, ctx, f.adsConn(), name)
}

func rawWatch(tb testing.TB, ctx context.Context, ads discoverygrpc.AggregatedDiscoveryServiceClient, name string) *watcher {
	tb.Helper()
	s, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	w := &watcher{name: name, done: make(chan struct{})}
	ask := func(ver, nonce string) error {
		return s.Send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: name}, TypeUrl: resource.EndpointType,
			ResourceNames: []string{name}, VersionInfo: ver, ResponseNonce: nonce})
	}
	if err := ask("", ""); err != nil {
		tb.Fatal(err)
	}
	go func() {
		defer close(w.done)
		for {
			r, err := s.Recv()
			if err != nil {
				return
			}
			var addrs []string
			for _, a := range r.Resources {
				var cla endpointv3.ClusterLoadAssignment
				if a.UnmarshalTo(&cla) != nil {
					return
				}
				for _, l := range cla.Endpoints {
					for _, e := range l.LbEndpoints {
						addrs = append(addrs, e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress())
					}
				}
			}
			slices.Sort(addrs)
			w.mu.Lock()
			w.addr, w.n, w.bytes = addrs, w.n+1, w.bytes+proto.Size(r)
			w.mu.Unlock()
			if ask(r.VersionInfo, r.Nonce) != nil {
				return
			}
		}
	}()
	return w
}

func (w *watcher) last() ([]string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.addr, w.n
}

// subsetEndpoints is endpoints pod-<from>.. pod-<from+n-1>.
func subsetEndpoints(from, n int) []*core.Endpoint {
	eps := make([]*core.Endpoint, n)
	for i := range eps {
		eps[i] = &core.Endpoint{ID: fmt.Sprintf("pod-%d", from+i), Addresses: []string{benchAddr(from + i)}, Port: 8080}
	}
	return eps
}

// balancedWithin waits until every watcher has k endpoints of want and
// every endpoint of want has ⌊m⌋ or ⌈m⌉ of them, and returns how many
// responses each watcher had then.
func balancedWithin(t *testing.T, ws []*watcher, want []*core.Endpoint, k int) []int {
	t.Helper()
	exists := map[string]bool{}
	for _, e := range want {
		exists[e.Addresses[0]] = true
	}
	lo := len(ws) * k / len(want)
	var why string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		load := map[string]int{}
		for a := range exists {
			load[a] = 0
		}
		counts := make([]int, len(ws))
		why = ""
		for i, w := range ws {
			addrs, n := w.last()
			counts[i] = n
			if len(addrs) != k {
				why = fmt.Sprintf("%s has %v, want %d endpoints", w.name, addrs, k)
			}
			for _, a := range addrs {
				if !exists[a] {
					why = fmt.Sprintf("%s has %s, which is gone", w.name, a)
				}
				load[a]++
			}
		}
		for a, l := range load {
			if l != lo && l != lo+1 {
				why = fmt.Sprintf("endpoint %s has %d clients, want %d or %d", a, l, lo, lo+1)
			}
		}
		if why == "" {
			time.Sleep(200 * time.Millisecond) // anything late would show now
			for i, w := range ws {
				_, counts[i] = w.last()
			}
			return counts
		}
	}
	t.Fatalf("not balanced: %s", why)
	return nil
}

// Server-side subsetting on raw ADS streams: 12 clients that name
// themselves get 3 of 6 endpoints each and every endpoint has 6 of them;
// a client that does not name itself gets all 6; an added and a removed
// endpoint reach only the clients whose subset changed and keep the
// balance; a client leaving leaves the others where they are.
func TestSubsettingBalancesAndMovesLittle(t *testing.T) {
	tg := core.Target{Name: "greeter"}
	eps := subsetEndpoints(0, 6)
	f := newFixture(t, map[core.Target]core.Set{tg: set(t, eps...)}, xds.WithSubsetSize(func(t core.Target) int {
		if t.Name == "greeter" {
			return 3
		}
		return 0
	}))
	ctx, cancel := context.WithCancel(context.Background())
	const n = 12
	ws := make([]*watcher, n)
	for i := range ws {
		ws[i] = f.watch(ctx, fmt.Sprintf("greeter?client=c%d", i))
	}
	all := f.watch(ctx, "greeter")
	defer func() {
		cancel()
		for _, w := range append(ws, all) {
			<-w.done
		}
	}()
	before := balancedWithin(t, ws, eps, 3)
	if got, _ := all.last(); len(got) != 6 {
		t.Fatalf("a client with no id has %v, want all 6", got)
	}

	heard := func(before, after []int) (n int) {
		for i := range before {
			if after[i] > before[i] {
				n++
			}
		}
		return n
	}
	// Added: 12×3/7 is 5.1, so the new endpoint takes 5 clients, each of
	// whom changes one endpoint; the other 7 hear nothing.
	more := append(slices.Clone(eps), subsetEndpoints(6, 1)...)
	f.src.Set(tg, set(t, more...))
	after := balancedWithin(t, ws, more, 3)
	if h := heard(before, after); h == 0 || h > 6 {
		t.Fatalf("an added endpoint reached %d clients, want 1 to 6", h)
	}
	// Removed: its 5 or 6 clients get one other each.
	before = after
	less := slices.Delete(slices.Clone(more), 0, 1)
	f.src.Set(tg, set(t, less...))
	after = balancedWithin(t, ws, less, 3)
	if h := heard(before, after); h == 0 || h > 6 {
		t.Fatalf("a removed endpoint reached %d clients, want 1 to 6", h)
	}
	// A client that comes is given the least loaded endpoints: 13×3/6 is
	// 6.5, nobody else moves.
	before = after
	ws = append(ws, f.watch(ctx, "greeter?client=c-new"))
	after = balancedWithin(t, ws, less, 3)
	if h := heard(before, after[:n]); h != 0 {
		t.Fatalf("a new client moved %d others", h)
	}
	f.noNACKIfAny()
}

// A grpc-go client with a client id in its bootstrap is balanced over its
// own subset only; four clients with subsets of 2 of 4 backends cover
// every backend exactly twice.
func TestGRPCGoClientsUseTheirSubsets(t *testing.T) {
	var bs []*backend
	var eps []*core.Endpoint
	for i := range 4 {
		b := startBackend(t, fmt.Sprintf("b%d", i), 70+i)
		bs = append(bs, b)
		eps = append(eps, b.endpoint(""))
	}
	tg := core.Target{Name: "greeter"}
	f := newFixture(t, map[core.Target]core.Set{tg: set(t, eps...)}, xds.WithSubsetSize(func(core.Target) int { return 2 }))
	load := map[string]int{}
	for i := range 4 {
		c := testgrpc.NewTestServiceClient(f.dialWith(xds.Bootstrap{ServerURI: f.uri, NodeID: fmt.Sprintf("pod-%d", i), Client: fmt.Sprintf("pod-%d", i)}))
		seen := map[string]bool{}
		ctx := ctxFor(t, 30*time.Second)
		for calls := 0; len(seen) < 2 || calls < 200; calls++ {
			r, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
			if err != nil {
				t.Fatal(err)
			}
			seen[r.ServerId] = true
			if len(seen) > 2 {
				t.Fatalf("client pod-%d reached %v, more than its subset of 2", i, seen)
			}
		}
		for s := range seen {
			load[s]++
		}
	}
	for _, b := range bs {
		if load[b.name] != 2 {
			t.Fatalf("backends have %v clients, want 2 each", load)
		}
	}
	f.noNACK()
}

func TestBootstrapClientID(t *testing.T) {
	data := must(xds.Bootstrap{ServerURI: "x:1", Zone: "zone-a", Client: "pod-7.ns_1:a"}.JSON())
	var doc struct {
		Template string `json:"client_default_listener_resource_name_template"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Template != "%s?zone=zone-a&client=pod-7.ns_1:a" {
		t.Fatalf("template %q", doc.Template)
	}
	for _, bad := range []string{"a&b", "a=b", "a?b", "a b", "a/b"} {
		if _, err := (xds.Bootstrap{ServerURI: "x:1", Client: bad}).JSON(); err == nil || !strings.Contains(err.Error(), "client id") {
			t.Errorf("client id %q: %v, want an error naming it", bad, err)
		}
	}
}

func (f *fixture) noNACKIfAny() {
	f.t.Helper()
	if n := f.metric("disco_xds_replies_total", "nack"); n > 0 {
		f.t.Fatalf("clients NACKed %v responses", n)
	}
}

// The README's Kubernetes bootstrap (GRPC_XDS_BOOTSTRAP_CONFIG with the
// kubelet's $(POD_NAME)) is what Bootstrap{Client} writes for that pod,
// once the kubelet has substituted the name.
func TestReadmeKubernetesBootstrap(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	i := strings.Index(text, "- name: GRPC_XDS_BOOTSTRAP_CONFIG")
	if i < 0 {
		t.Fatal("README: no GRPC_XDS_BOOTSTRAP_CONFIG example")
	}
	start := strings.Index(text[i:], "value: '") + i + len("value: '")
	end := strings.Index(text[start:], "'") + start
	raw := strings.ReplaceAll(text[start:end], "$(POD_NAME)", "pod-7")
	type doc struct {
		Servers []struct {
			URI      string   `json:"server_uri"`
			Features []string `json:"server_features"`
			Creds    []struct {
				Type string `json:"type"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
		Node struct {
			ID       string          `json:"id"`
			Locality json.RawMessage `json:"locality"`
		} `json:"node"`
		Template string `json:"client_default_listener_resource_name_template"`
	}
	var got, want doc
	if err := json.Unmarshal([]byte(raw), &got); err != nil {
		t.Fatalf("README bootstrap: %v\n%s", err, raw)
	}
	if err := json.Unmarshal(must(xds.Bootstrap{ServerURI: "xds-server.demo.svc:18000", NodeID: "pod-7", Client: "pod-7"}.JSON()), &want); err != nil {
		t.Fatal(err)
	}
	if got.Template != want.Template || got.Node.ID != want.Node.ID || got.Node.Locality == nil ||
		len(got.Servers) != 1 || got.Servers[0].URI != want.Servers[0].URI || got.Servers[0].Creds[0].Type != "insecure" ||
		!slices.Equal(got.Servers[0].Features, want.Servers[0].Features) {
		t.Fatalf("README bootstrap %+v, Bootstrap writes %+v", got, want)
	}
}

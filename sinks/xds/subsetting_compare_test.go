package xds_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand"
	"net"
	"slices"
	"testing"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/randomsubsetting"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/route"
	"github.com/disco-lb/disco/sinks/xds"
)

// The subsetting figures of issue 26, computed in one run with the real
// code of each method:
//
//   - disco-xds: route.Subsets, what the xDS server gives the clients that
//     name themselves (WithSubsetSize), one per target, sticky;
//   - disco-pool: route.Rendezvous with the client's id as seed, what
//     connpool.WithSubset keeps;
//   - grpc-a68: grpc-go's random_subsetting_experimental balancer (gRFC
//     A68), driven as a ClientConn drives it, one balancer per client,
//     its child policy recording the subset it is given;
//   - sre-book: deterministic subsetting as the SRE book's chapter 20
//     writes it (rounds of clients over a list shuffled per round).
//
//	go test -run '^$' -bench BenchmarkSubsetting -benchtime 1x ./sinks/xds

// subsetter is one method: the subsets of n clients over backends.
type subsetter interface {
	name() string
	// subsets returns each client's subset of backends; base is the state
	// a change starts from (a stateful method is given base first).
	subsets(clients, base, backends []string, k int) [][]string
}

type discoXDS struct{}

func (discoXDS) name() string { return "disco-xds" }
func (discoXDS) subsets(clients, base, backends []string, k int) [][]string {
	s := route.NewSubsets(k)
	if base != nil {
		s.Assign(clients, base)
	}
	s.Assign(clients, backends)
	out := make([][]string, len(clients))
	for i, c := range clients {
		out[i] = s.Of(c)
	}
	return out
}

type discoPool struct{}

func (discoPool) name() string { return "disco-pool" }
func (discoPool) subsets(clients, _, backends []string, k int) [][]string {
	out := make([][]string, len(clients))
	for i, c := range clients {
		out[i] = route.Rendezvous(c, backends, k)
	}
	return out
}

type sreBook struct{}

func (sreBook) name() string { return "sre-book" }
func (sreBook) subsets(clients, _, backends []string, k int) [][]string {
	out := make([][]string, len(clients))
	count := len(backends) / k
	for id := range clients {
		round := id / count
		list := slices.Clone(backends)
		r := rand.New(rand.NewSource(int64(round)))
		r.Shuffle(len(list), func(i, j int) { list[i], list[j] = list[j], list[i] })
		start := (id % count) * k
		out[id] = slices.Clone(list[start : start+k])
	}
	return out
}

// grpcA68 keeps one real balancer per client (its seed drawn at Build, as
// in a ClientConn), so a change is seen by the same balancers.
type grpcA68 struct {
	bals []balancer.Balancer
	k    int
}

func (*grpcA68) name() string { return "grpc-a68" }

// recordedSubset is what the recording child was last given (the driver
// is one goroutine).
var recordedSubset []string

const recordName = "disco_test_record_subset"

type recordBuilder struct{}

func (recordBuilder) Build(balancer.ClientConn, balancer.BuildOptions) balancer.Balancer {
	return recordBalancer{}
}
func (recordBuilder) Name() string { return recordName }

type recordBalancer struct{}

func (recordBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	recordedSubset = recordedSubset[:0]
	for _, e := range s.ResolverState.Endpoints {
		recordedSubset = append(recordedSubset, e.Addresses[0].Addr)
	}
	return nil
}
func (recordBalancer) ResolverError(error)                                        {}
func (recordBalancer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {}
func (recordBalancer) Close()                                                     {}
func (recordBalancer) ExitIdle()                                                  {}

func init() { balancer.Register(recordBuilder{}) }

// stubCC is a balancer.ClientConn the recording child never calls.
type stubCC struct{ balancer.ClientConn }

func (g *grpcA68) subsets(clients, _, backends []string, k int) [][]string {
	if len(g.bals) != len(clients) || g.k != k {
		g.bals, g.k = nil, k
		for range clients {
			g.bals = append(g.bals, balancer.Get(randomsubsetting.Name).Build(stubCC{}, balancer.BuildOptions{}))
		}
	}
	js, _ := json.Marshal(map[string]any{"subsetSize": k, "childPolicy": []any{map[string]any{recordName: map[string]any{}}}})
	cfg, err := balancer.Get(randomsubsetting.Name).(balancer.ConfigParser).ParseConfig(js)
	if err != nil {
		panic(err)
	}
	eps := make([]resolver.Endpoint, len(backends))
	for i, b := range backends {
		eps[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: b}}}
	}
	out := make([][]string, len(clients))
	for i, bal := range g.bals {
		if err := bal.UpdateClientConnState(balancer.ClientConnState{ResolverState: resolver.State{Endpoints: eps}, BalancerConfig: cfg}); err != nil {
			panic(err)
		}
		out[i] = slices.Sorted(slices.Values(recordedSubset))
	}
	return out
}

func (g *grpcA68) close() {
	for _, b := range g.bals {
		b.Close()
	}
}

// subsetFigures are one method's figures at one size.
type subsetFigures struct {
	minOverMean, maxOverMean float64
	movedPerAdd, movedPerDel float64
	mean                     float64
}

func backendNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = benchAddr(i) + ":8080"
	}
	return out
}

func clientNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("pod-%d", i)
	}
	return out
}

func movedBetween(a, b [][]string) int {
	n := 0
	for i := range b {
		for _, x := range b[i] {
			if !slices.Contains(a[i], x) {
				n++
			}
		}
	}
	return n
}

// measure computes m's figures for clients × backends with subsets of k,
// averaging the churn over trials single additions and removals.
func measure(m subsetter, nClients, nBackends, k, trials int) subsetFigures {
	clients, backends := clientNames(nClients), backendNames(nBackends)
	base := m.subsets(clients, nil, backends, k)
	load := map[string]int{}
	for _, b := range backends {
		load[b] = 0
	}
	total := 0
	for _, s := range base {
		for _, b := range s {
			load[b]++
			total++
		}
	}
	var f subsetFigures
	f.mean = float64(total) / float64(nBackends)
	lo, hi := total, 0
	for _, l := range load {
		lo, hi = min(lo, l), max(hi, l)
	}
	f.minOverMean, f.maxOverMean = float64(lo)/f.mean, float64(hi)/f.mean
	for j := range trials {
		added := append(slices.Clone(backends), fmt.Sprintf("192.0.2.%d:8080", j+1))
		f.movedPerAdd += float64(movedBetween(base, m.subsets(clients, backends, added, k)))
		gone := j * nBackends / trials
		removed := slices.Delete(slices.Clone(backends), gone, gone+1)
		f.movedPerDel += float64(movedBetween(base, m.subsets(clients, backends, removed, k)))
	}
	f.movedPerAdd /= float64(trials)
	f.movedPerDel /= float64(trials)
	return f
}

var subsetSizes = []struct{ clients, backends, k int }{{300, 300, 10}, {1000, 100, 10}}

func methods() []subsetter {
	return []subsetter{discoXDS{}, discoPool{}, &grpcA68{}, sreBook{}}
}

func BenchmarkSubsetting(b *testing.B) {
	for _, sz := range subsetSizes {
		for _, m := range methods() {
			b.Run(fmt.Sprintf("%dx%d/k=%d/%s", sz.clients, sz.backends, sz.k, m.name()), func(b *testing.B) {
				var f subsetFigures
				for range b.N {
					f = measure(m, sz.clients, sz.backends, sz.k, 10)
				}
				if g, ok := m.(*grpcA68); ok {
					g.close()
				}
				b.ReportMetric(f.minOverMean, "min/mean")
				b.ReportMetric(f.maxOverMean, "max/mean")
				b.ReportMetric(f.movedPerAdd, "moved/add")
				b.ReportMetric(f.movedPerDel, "moved/remove")
				b.ReportMetric(f.mean, "conns/backend")
			})
		}
	}
}

// The short version for make test: at a small size, disco-xds is as even
// as whole numbers allow and moves about one backend's connections per
// change, fewer than the SRE book's method; the client-side methods move
// little and are uneven. No timing.
func TestSubsettingMethodsCompared(t *testing.T) {
	figs := map[string]subsetFigures{}
	for _, m := range methods() {
		figs[m.name()] = measure(m, 60, 30, 5, 3)
		if g, ok := m.(*grpcA68); ok {
			g.close()
		}
	}
	for _, n := range slices.Sorted(maps.Keys(figs)) {
		t.Logf("%-10s %+v", n, figs[n])
	}
	d := figs["disco-xds"]
	if d.minOverMean != 1 || d.maxOverMean != 1 {
		t.Errorf("disco-xds: %.2f..%.2f of the mean, want exactly even (60×5/30 = 10)", d.minOverMean, d.maxOverMean)
	}
	if d.movedPerAdd > d.mean+1 || d.movedPerDel > d.mean+1 {
		t.Errorf("disco-xds moved %.1f per add, %.1f per removal; want at most %.0f", d.movedPerAdd, d.movedPerDel, d.mean+1)
	}
	if s := figs["sre-book"]; d.movedPerAdd >= s.movedPerAdd || s.minOverMean != 1 {
		t.Errorf("sre-book %+v: want even, and more churn than disco-xds", s)
	}
	for _, n := range []string{"disco-pool", "grpc-a68"} {
		if f := figs[n]; f.movedPerAdd > f.mean+5 || f.movedPerDel > f.mean+5 {
			t.Errorf("%s moved %+v: a rendezvous hash moves about one backend's worth", n, f)
		}
	}
}

// BenchmarkSubsetBytesPerChange: what 100 clients of a 10,000-endpoint
// target receive when one endpoint is replaced by another (a rollout
// step), with every endpoint each and with subsets of 20 (WithSubsetSize):
// bytes per client per change, and how many of the 100 hear of it.
//
//	go test -run '^$' -bench BenchmarkSubsetBytesPerChange -benchtime 20x ./sinks/xds
func BenchmarkSubsetBytesPerChange(b *testing.B) {
	const size, nClients, k = 10_000, 100, 20
	for _, mode := range []string{"all", "subset=20"} {
		b.Run(mode, func(b *testing.B) {
			eps := subsetEndpoints(0, size)
			tg := core.Target{Name: "greeter"}
			src := coretest.NewStatic(map[core.Target]core.Set{tg: coretest.Set(b, eps...)})
			hub := coretest.Hub(b, src)
			srv := must(xds.New(hub, xds.WithTargetParser(byName), xds.WithSubsetSize(func(core.Target) int { return k })))
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = srv.Serve(ctx, lis) }()
			cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
			if err != nil {
				b.Fatal(err)
			}
			ads := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc)
			var ws []*watcher
			for i := range nClients {
				name := "greeter"
				if mode != "all" {
					name = fmt.Sprintf("greeter?client=pod-%d", i)
				}
				ws = append(ws, rawWatch(b, ctx, ads, name))
			}
			marker := rawWatch(b, ctx, ads, "greeter") // hears every change, after the subsets are stored
			defer func() {
				cancel()
				for _, w := range append(ws, marker) {
					<-w.done
				}
				cc.Close()
				<-done
				srv.Close()
			}()
			waitFor := func(w *watcher, n int) {
				for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
					if _, got := w.last(); got >= n {
						return
					}
					if time.Now().After(deadline) {
						b.Fatalf("%s never got response %d", w.name, n)
					}
				}
			}
			for _, w := range ws {
				waitFor(w, 1)
			}
			waitFor(marker, 1)
			settle := func() (bytes, responses int) {
				prev := -1
				for {
					time.Sleep(300 * time.Millisecond)
					bytes, responses = 0, 0
					for _, w := range ws {
						w.mu.Lock()
						bytes, responses = bytes+w.bytes, responses+w.n
						w.mu.Unlock()
					}
					if responses == prev {
						return bytes, responses
					}
					prev = responses
				}
			}
			bytes0, responses0 := settle()
			b.ResetTimer()
			for i := range b.N {
				eps[i] = subsetEndpoints(size+i, 1)[0]
				src.Set(tg, coretest.Set(b, eps...))
				waitFor(marker, i+2)
			}
			b.StopTimer()
			bytes, responses := settle()
			b.ReportMetric(float64(bytes-bytes0)/float64(b.N*nClients), "B/client/change")
			b.ReportMetric(float64(responses-responses0)/float64(b.N), "clients-reached/change")
		})
	}
}

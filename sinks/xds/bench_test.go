package xds_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/xds"
)

// The fleet figures: N client streams on one target, against disco's
// server and, side by side in the same run, a plain go-control-plane server
// (a LinearCache per type behind a MuxCache, its assignment set by hand:
// what one writes without disco). The clients run in a process of their own
// (this test binary again, benchClientsEnv), so that the server's memory
// and CPU are the server's alone. Every update changes one endpoint: the
// port of a marker endpoint (192.0.2.1, never dialed) is the update's
// number, which the clients read to know which update they received.
//
//	go test -run '^$' -bench BenchmarkThousandStreams -benchtime 200x ./sinks/xds

const benchClientsEnv = "DISCO_XDS_BENCH_CLIENTS" // "addr n name"

// benchUpdate is what the clients report once all of them received update
// k: when the first and the last received it (unix nanos), and the bytes
// of the response one client got.
type benchUpdate struct {
	K     int   `json:"k"`
	First int64 `json:"first"`
	Last  int64 `json:"last"`
	Bytes int   `json:"bytes"`
}

// benchClients is the clients' main: n raw ADS streams (one connection
// each, as n client processes would have), each subscribed to the four
// resources of name, ACKing every response. A stream that ends (the server
// restarted) is opened again at once and subscribes again, as a client's
// does: the connection's reconnect backoff is short (50 ms, jitter 20%), so
// that n clients come back together, the worst case for a server.
func benchClients(spec string) int {
	f := strings.Fields(spec)
	addr, name := f[0], f[2]
	n, _ := strconv.Atoi(f[1])
	type tally struct {
		clients     map[int]bool
		first, last int64
		bytes       int
	}
	var mu sync.Mutex
	seen := map[int]*tally{}
	out := json.NewEncoder(os.Stdout)
	got := func(client, k int, size int) {
		now := time.Now().UnixNano()
		mu.Lock()
		defer mu.Unlock()
		t := seen[k]
		if t == nil {
			t = &tally{clients: map[int]bool{}, first: now, bytes: size}
			seen[k] = t
		}
		t.clients[client] = true
		t.last = now
		if len(t.clients) == n {
			_ = out.Encode(benchUpdate{K: k, First: t.first, Last: t.last, Bytes: t.bytes})
			delete(seen, k)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
				MinConnectTimeout: 5 * time.Second}))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer cc.Close()
		ads := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc)
		node := &corev3.Node{Id: fmt.Sprintf("bench-%d", i)}
		wg.Go(func() {
			for ctx.Err() == nil {
				s, err := ads.StreamAggregatedResources(ctx, grpc.WaitForReady(true))
				if err != nil {
					continue
				}
				ask := func(typ, version, nonce string) {
					_ = s.Send(&discoverygrpc.DiscoveryRequest{Node: node, TypeUrl: typ, ResourceNames: []string{name}, VersionInfo: version, ResponseNonce: nonce})
				}
				for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
					ask(typ, "", "")
				}
				for {
					r, err := s.Recv()
					if err != nil {
						break
					}
					ask(r.TypeUrl, r.VersionInfo, r.Nonce)
					if r.TypeUrl != resource.EndpointType {
						continue
					}
					for _, a := range r.Resources {
						var cla endpointv3.ClusterLoadAssignment
						if a.UnmarshalTo(&cla) != nil {
							continue
						}
						if k, ok := marker(&cla); ok {
							got(i, k, proto.Size(r))
						}
					}
				}
			}
		})
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // until the benchmark closes stdin
	cancel()
	wg.Wait()
	return 0
}

// marker finds the marker endpoint's port: the update's number.
func marker(cla *endpointv3.ClusterLoadAssignment) (int, bool) {
	for _, l := range cla.Endpoints {
		for _, e := range l.LbEndpoints {
			if sa := e.GetEndpoint().GetAddress().GetSocketAddress(); sa.GetAddress() == "192.0.2.1" {
				return int(sa.GetPortValue()), true
			}
		}
	}
	return 0, false
}

// benchAddr is the IPv4 address of test endpoint i (10.1.0.0 on, one for
// each i below 2^24).
func benchAddr(i int) string { return fmt.Sprintf("10.%d.%d.%d", 1+i>>16, (i>>8)&255, i&255) }

// benchSet is size endpoints plus the marker for update k.
func benchSet(tb testing.TB, size, k int) core.Set {
	eps := make([]*core.Endpoint, 0, size+1)
	for i := range size {
		eps = append(eps, &core.Endpoint{ID: fmt.Sprintf("pod-%d", i), Addresses: []string{benchAddr(i)}, Port: 8080, Zone: "zone-a"})
	}
	eps = append(eps, &core.Endpoint{ID: "marker", Addresses: []string{"192.0.2.1"}, Port: uint16(k), Zone: "zone-a"})
	return coretest.Set(tb, eps...)
}

// benchServer is a server under test: it serves on lis, and publishes
// update k.
type benchServer interface {
	update(k int)
	stop()
}

type discoBench struct {
	src  *coretest.Static
	size int
	tb   testing.TB
	srv  *xds.Server
	done chan struct{}
	stp  context.CancelFunc
}

func newDiscoBench(tb testing.TB, lis net.Listener, size int) benchServer {
	d := &discoBench{src: coretest.NewStatic(map[core.Target]core.Set{{Name: "greeter"}: benchSet(tb, size, 0)}), size: size, tb: tb, done: make(chan struct{})}
	hub := coretest.Hub(tb, d.src)
	d.srv = must(xds.New(hub, xds.WithTargetParser(byName)))
	ctx, cancel := context.WithCancel(context.Background())
	d.stp = cancel
	go func() { defer close(d.done); _ = d.srv.Serve(ctx, lis) }()
	return d
}

func (d *discoBench) update(k int) {
	d.src.Set(core.Target{Name: "greeter"}, benchSet(d.tb, d.size, k))
}
func (d *discoBench) stop() { d.stp(); <-d.done; d.srv.Close() }

// plainBench is go-control-plane alone: the four resources by hand, the
// assignment rebuilt and set on each update.
type plainBench struct {
	caches map[string]*cache.LinearCache
	size   int
	gs     *grpc.Server
	cancel context.CancelFunc
	done   chan struct{}
}

func newPlainBench(tb testing.TB, lis net.Listener, size int) benchServer {
	p := &plainBench{caches: map[string]*cache.LinearCache{}, size: size, done: make(chan struct{})}
	muxed := map[string]cache.Cache{}
	// The same resources disco serves, taken from a disco server's answer
	// would be circular: build them as a hand-written server does.
	for typ, r := range plainResources("greeter") {
		c := cache.NewLinearCache(typ)
		if r != nil {
			if err := c.UpdateResource("greeter", r); err != nil {
				tb.Fatal(err)
			}
		}
		p.caches[typ], muxed[typ] = c, c
	}
	p.update(0)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	srv := serverv3.NewServer(ctx, &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        muxed,
	}, nil)
	p.gs = grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(p.gs, srv)
	go func() { defer close(p.done); _ = p.gs.Serve(lis) }()
	return p
}

func (p *plainBench) update(k int) {
	var lbs []*endpointv3.LbEndpoint
	add := func(ip string, port int) {
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}}}})
	}
	for i := range p.size {
		add(benchAddr(i), 8080)
	}
	add("192.0.2.1", k)
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "greeter", Endpoints: []*endpointv3.LocalityLbEndpoints{{
		Locality: &corev3.Locality{Zone: "zone-a"}, LbEndpoints: lbs, LoadBalancingWeight: wrapperspb.UInt32(uint32(len(lbs)))}}}
	_ = p.caches[resource.EndpointType].UpdateResource("greeter", cla)
}

func (p *plainBench) stop() { p.gs.Stop(); p.cancel(); <-p.done }

// plainResources are the listener, route and cluster a hand-written
// server serves (the same shape as disco's, see resources.go), and no
// assignment yet.
func plainResources(name string) map[string]types.Resource {
	return map[string]types.Resource{
		resource.ListenerType: must(xds.ListenerForTest(name)),
		resource.RouteType:    xds.RouteConfigForTest(name),
		resource.ClusterType:  xds.ClusterForTest(name),
		resource.EndpointType: nil,
	}
}

// clientsProcess runs n bench clients of the server at addr.
type clientsProcess struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	updates chan benchUpdate
}

func startBenchClients(tb testing.TB, addr string, n int) *clientsProcess {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d greeter", benchClientsEnv, addr, n))
	cmd.Stderr = os.Stderr
	p := &clientsProcess{cmd: cmd, updates: make(chan benchUpdate, 16)}
	var err error
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var u benchUpdate
			if json.Unmarshal(sc.Bytes(), &u) == nil {
				p.updates <- u
			}
		}
		close(p.updates)
	}()
	tb.Cleanup(func() { p.stdin.Close(); _ = cmd.Wait() })
	return p
}

// wait returns the report of update k (older ones are skipped).
func (p *clientsProcess) wait(tb testing.TB, k int) benchUpdate {
	tb.Helper()
	timeout := time.After(2 * time.Minute)
	for {
		select {
		case u, ok := <-p.updates:
			if !ok {
				tb.Fatal("the clients exited")
			}
			if u.K == k {
				return u
			}
		case <-timeout:
			tb.Fatalf("update %d never reached every client", k)
		}
	}
}

// memory is the process's heap and goroutine stacks in use, and its
// goroutines.
type memory struct{ heap, stack, goroutines int }

func memoryNow() memory {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memory{int(m.HeapInuse), int(m.StackInuse), runtime.NumGoroutine()}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkThousandStreams: memory per stream, server CPU per client
// update, and the time from a new state to its receipt by the last of
// 1,000 clients (p50, p99), for disco's server and a plain go-control-plane
// server side by side.
func BenchmarkThousandStreams(b *testing.B) {
	const n, size = 1000, 10
	for _, s := range []struct {
		name string
		new  func(testing.TB, net.Listener, int) benchServer
	}{{"disco", newDiscoBench}, {"plain-go-control-plane", newPlainBench}} {
		b.Run(s.name, func(b *testing.B) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			before := memoryNow()
			srv := s.new(b, lis, size)
			defer srv.stop()
			clients := startBenchClients(b, lis.Addr().String(), n)
			clients.wait(b, 0) // every client has everything
			time.Sleep(time.Second)
			after := memoryNow()
			heap, stack := float64(after.heap-before.heap)/n, float64(after.stack-before.stack)/n
			var lat []time.Duration
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := 1; i <= b.N; i++ {
				at := time.Now()
				srv.update(i)
				u := clients.wait(b, i)
				lat = append(lat, time.Unix(0, u.Last).Sub(at))
			}
			b.StopTimer()
			cpu := cpuTime() - cpu0
			slices.Sort(lat)
			b.ReportMetric((heap+stack)/1024, "KiB/stream")
			b.ReportMetric(heap/1024, "KiB-heap/stream")
			b.ReportMetric(stack/1024, "KiB-stacks/stream")
			b.ReportMetric(float64(after.goroutines-before.goroutines)/n, "goroutines/stream")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*n), "µs-cpu/client-update")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-p50-last-client")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "ms-p99-last-client")
		})
	}
}

// BenchmarkBytesPerChange: the bytes a client receives when one endpoint
// of a target of 100, 1,000 or 10,000 changes. gRPC clients take whole
// assignments (state of the world; delta xDS too sends the whole
// ClusterLoadAssignment, its unit), so it grows with the target.
func BenchmarkBytesPerChange(b *testing.B) {
	for _, size := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("endpoints=%d", size), func(b *testing.B) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			srv := newDiscoBench(b, lis, size)
			defer srv.stop()
			clients := startBenchClients(b, lis.Addr().String(), 1)
			clients.wait(b, 0)
			var bytes int
			b.ResetTimer()
			for i := 1; i <= b.N; i++ {
				srv.update(i)
				bytes = clients.wait(b, i).Bytes
			}
			b.ReportMetric(float64(bytes), "B/change")
		})
	}
}

// resubscribeRun restarts a server under n client streams (a new server,
// and a new hub as a restarted process has, on the same address) and
// returns, per restart, the time until every client holds the current
// assignment again, and the peak of the process's heap and stacks in use
// meanwhile (sampled every 5 ms).
func resubscribeRun(tb testing.TB, n, size, restarts int) (times []time.Duration, peaks []int, steady memory) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := lis.Addr().String()
	srv := newDiscoBench(tb, lis, size)
	defer func() { srv.stop() }()
	clients := startBenchClients(tb, addr, n)
	clients.wait(tb, 0)
	steady = memoryNow()
	for range restarts {
		srv.stop()
		runtime.GC()
		var peak atomic.Int64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			var m runtime.MemStats
			for {
				runtime.ReadMemStats(&m)
				if v := int64(m.HeapInuse + m.StackInuse); v > peak.Load() {
					peak.Store(v)
				}
				select {
				case <-stop:
					return
				case <-time.After(5 * time.Millisecond):
				}
			}
		}()
		var lis net.Listener
		for range 100 {
			if lis, err = net.Listen("tcp", addr); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			tb.Fatal(err)
		}
		at := time.Now()
		srv = newDiscoBench(tb, lis, size)
		u := clients.wait(tb, 0) // every client holds update 0 again
		close(stop)
		<-sampled
		times = append(times, time.Unix(0, u.Last).Sub(at))
		peaks = append(peaks, int(peak.Load()))
	}
	return times, peaks, steady
}

// BenchmarkThousandResubscribes: the relay restarted under 1,000 xDS
// streams, which all come back at once and subscribe again (a mass
// resubscribe has taken down a mesh control plane before): the time until
// every client holds the current endpoints, and the peak memory.
//
//	go test -run '^$' -bench BenchmarkThousandResubscribes -benchtime 5x ./sinks/xds
func BenchmarkThousandResubscribes(b *testing.B) {
	const n, size = 1000, 100
	start := memoryNow()
	times, peaks, steady := resubscribeRun(b, n, size, b.N)
	slices.Sort(times)
	slices.Sort(peaks)
	b.ReportMetric(float64(times[len(times)/2].Milliseconds()), "ms-p50-all-current")
	b.ReportMetric(float64(times[len(times)-1].Milliseconds()), "ms-max-all-current")
	b.ReportMetric(float64(steady.heap+steady.stack-start.heap-start.stack)/(1<<20), "MiB-steady")
	b.ReportMetric(float64(peaks[len(peaks)-1]-start.heap-start.stack)/(1<<20), "MiB-peak")
}

// The short version of BenchmarkThousandResubscribes for make test: the
// server restarted twice under 100 client streams (in a process of their
// own, coming back together); every client holds the current assignment
// again each time. No timing.
func TestMassResubscribe(t *testing.T) {
	times, _, _ := resubscribeRun(t, 100, 20, 2)
	if len(times) != 2 {
		t.Fatalf("%d restarts converged, want 2", len(times))
	}
}

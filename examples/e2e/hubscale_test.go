package e2e_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/grpcresolver"
	"github.com/disco-lb/disco/sinks/xds"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

// A thousand targets in one hub (BENCHMARKS.md, "A thousand targets"):
// Services of the real API server, each with one EndpointSlice, watched by
// one hub and fed to the xDS server (one delta ADS stream subscribed to
// every target's assignment, as a relay's many clients together are) and
// to disco's resolver (one resolver per target, as ClientConns have, whose
// ClientConn records the endpoints it is given; nothing is dialed).
//
//	go test -run '^$' -bench BenchmarkThousandTargets -benchtime 20x -count 3 -timeout 30m ./e2e

// scaleServices creates Services svc-0.. in namespace ns with one slice
// each of sizes[i] endpoints (addresses from 10.64.0.0, never dialed).
func scaleServices(tb testing.TB, cs k8s.Interface, ns string, sizes []int) {
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		tb.Fatal(err)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	addr := 0
	firsts := make([]int, len(sizes))
	for i, n := range sizes {
		firsts[i] = addr
		addr += n
	}
	for range 8 {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(sizes); i = int(next.Add(1) - 1) {
				if err := createScaleService(ctx, cs, ns, i, firsts[i], sizes[i]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		tb.Fatal(err)
	}
}

func scaleSlice(ns string, i, first, n int, version uint16) *discoveryv1.EndpointSlice {
	svc := fmt.Sprintf("svc-%d", i)
	port, proto, ready, name := int32(80), corev1.ProtocolTCP, true, "http"
	eps := make([]discoveryv1.Endpoint, n)
	for j := range eps {
		a := 64<<16 + first + j
		eps[j] = discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.%d.%d.%d", a>>16, (a>>8)&255, a&255)},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}}
	}
	if version > 0 { // a one-endpoint change: the first endpoint's zone
		zone := fmt.Sprintf("zone-%d", version)
		eps[0].Zone = &zone
	}
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-1", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   eps,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
	}
}

func createScaleService(ctx context.Context, cs k8s.Interface, ns string, i, first, n int) error {
	svc := fmt.Sprintf("svc-%d", i)
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: svc},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, scaleSlice(ns, i, first, n, 0), metav1.CreateOptions{})
	return err
}

// countingCC is a resolver.ClientConn that keeps the number of endpoints
// of the last state.
type countingCC struct {
	resolver.ClientConn
	n       atomic.Int64
	updates atomic.Int64
}

func (c *countingCC) UpdateState(s resolver.State) error {
	c.n.Store(int64(len(s.Endpoints)))
	c.updates.Add(1)
	return nil
}
func (c *countingCC) ReportError(error)                                    {}
func (c *countingCC) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

// deltaEDS is delta ADS streams subscribed to many assignments, ten per
// stream (a client subscribes to a few targets: a stream's every request
// costs go-control-plane what the stream holds); it keeps the endpoint
// count of each and counts the resources received.
type deltaEDS struct {
	mu       sync.Mutex
	counts   map[string]int
	received atomic.Int64
	wg       sync.WaitGroup
	done     chan struct{}
}

func watchAll(tb testing.TB, ctx context.Context, addr string, names []string) *deltaEDS {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		tb.Fatal(err)
	}
	d := &deltaEDS{counts: map[string]int{}, done: make(chan struct{})}
	ads := discoverygrpc.NewAggregatedDiscoveryServiceClient(cc)
	for group := range slices.Chunk(names, 10) {
		s, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		if err := s.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: &corev3.Node{Id: "scale"}, TypeUrl: resource.EndpointType, ResourceNamesSubscribe: group}); err != nil {
			tb.Fatal(err)
		}
		d.wg.Go(func() {
			for {
				r, err := s.Recv()
				if err != nil {
					return
				}
				d.mu.Lock()
				for _, res := range r.Resources {
					var cla endpointv3.ClusterLoadAssignment
					if res.Resource.UnmarshalTo(&cla) != nil {
						continue
					}
					n := 0
					for _, l := range cla.Endpoints {
						n += len(l.LbEndpoints)
					}
					d.counts[res.Name] = n
					d.received.Add(1)
				}
				d.mu.Unlock()
				if s.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resource.EndpointType, ResponseNonce: r.Nonce}) != nil {
					return
				}
			}
		})
	}
	go func() { d.wg.Wait(); cc.Close(); close(d.done) }()
	return d
}

func (d *deltaEDS) count(name string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.counts[name]
}

// hubScale is one hub of len(sizes) Services with both sinks attached.
type hubScale struct {
	sizes     []int
	names     []string
	ccs       []*countingCC
	eds       *deltaEDS
	syncTime  time.Duration
	memBefore runtime.MemStats
	memAfter  runtime.MemStats
	grBefore  int
	grAfter   int
	cs        k8s.Interface
	ns        string
	close     func()
}

func heapNow() runtime.MemStats {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

func startHubScale(tb testing.TB, cp *kubetest.ControlPlane, ns string, sizes []int) *hubScale {
	cs, err := cp.AdminClient()
	if err != nil {
		tb.Fatal(err)
	}
	scaleServices(tb, cs, ns, sizes)
	h := &hubScale{sizes: sizes, cs: cs, ns: ns}
	for i := range sizes {
		h.names = append(h.names, fmt.Sprintf("svc-%d.%s:http", i, ns))
	}
	h.memBefore, h.grBefore = heapNow(), runtime.NumGoroutine()
	start := time.Now()
	cfg := cp.AdminConfig()
	cfg.QPS, cfg.Burst = 0, 0 // the source's default: not throttled here
	src, err := kubernetes.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	hub, err := core.NewHub(src)
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := xds.New(hub, xds.WithMaxResourcesPerStream(len(sizes)))
	if err != nil {
		tb.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ctx, lis) }()
	h.eds = watchAll(tb, ctx, lis.Addr().String(), h.names)
	b, err := grpcresolver.NewKubernetes(hub)
	if err != nil {
		tb.Fatal(err)
	}
	var rs []resolver.Resolver
	for _, name := range h.names {
		cc := &countingCC{}
		u, _ := url.Parse("kubernetes:///" + name)
		r, err := b.Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		rs = append(rs, r)
		h.ccs = append(h.ccs, cc)
	}
	h.close = func() {
		for _, r := range rs {
			r.Close()
		}
		b.Close()
		cancel()
		<-served
		<-h.eds.done
		srv.Close()
		hub.Close()
	}
	tb.Cleanup(h.close)
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(5 * time.Millisecond) {
		if h.allSynced() {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatal("never synced")
		}
	}
	h.syncTime = time.Since(start)
	h.memAfter, h.grAfter = heapNow(), runtime.NumGoroutine()
	return h
}

func (h *hubScale) allSynced() bool {
	for i, n := range h.sizes {
		if h.ccs[i].n.Load() != int64(n) || h.eds.count(h.names[i]) != n {
			return false
		}
	}
	return true
}

func cpuNow() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// change makes changes one-endpoint changes of target i, each waited for
// in both sinks, and returns the process's CPU and allocations per change.
func (h *hubScale) change(tb testing.TB, i, changes int) (time.Duration, uint64) {
	first := 0
	for _, n := range h.sizes[:i] {
		first += n
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := cpuNow()
	for v := 1; v <= changes; v++ {
		u0, r0 := h.ccs[i].updates.Load(), h.eds.received.Load()
		cur, err := h.cs.DiscoveryV1().EndpointSlices(h.ns).Get(context.Background(), fmt.Sprintf("svc-%d-1", i), metav1.GetOptions{})
		if err != nil {
			tb.Fatal(err)
		}
		next := scaleSlice(h.ns, i, first, h.sizes[i], uint16(v))
		next.ResourceVersion = cur.ResourceVersion
		if _, err := h.cs.DiscoveryV1().EndpointSlices(h.ns).Update(context.Background(), next, metav1.UpdateOptions{}); err != nil {
			tb.Fatal(err)
		}
		for deadline := time.Now().Add(time.Minute); h.ccs[i].updates.Load() == u0 || h.eds.received.Load() == r0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				tb.Fatal("a change never reached both sinks")
			}
		}
	}
	cpu := cpuNow() - cpu0
	runtime.ReadMemStats(&m1)
	return cpu / time.Duration(changes), (m1.Mallocs - m0.Mallocs) / uint64(changes)
}

// BenchmarkThousandTargets: 1,000 Services (900 of 10 endpoints, 100 of
// 910: 100,000 in all) and, to tell what a target costs from what an
// endpoint costs, 1,000 Services of 10 (10,000): memory per target and per
// endpoint, goroutines per target, time to sync all, and the CPU and
// allocations of one one-endpoint change (of a target of 910 and of 10;
// they include the API server client's decoding and the in-process test
// clients').
func BenchmarkThousandTargets(b *testing.B) {
	cp := kubetest.New(b)
	small := make([]int, 1000)
	for i := range small {
		small[i] = 10
	}
	mixed := make([]int, 1000)
	for i := range mixed {
		mixed[i] = 10
		if i >= 900 {
			mixed[i] = 910
		}
	}
	a := startHubScale(b, cp, "small", small)
	heapA := float64(a.memAfter.HeapInuse+a.memAfter.StackInuse) - float64(a.memBefore.HeapInuse+a.memBefore.StackInuse)
	grA := a.grAfter - a.grBefore
	syncA := a.syncTime
	a.close()
	h := startHubScale(b, cp, "mixed", mixed)
	heapB := float64(h.memAfter.HeapInuse+h.memAfter.StackInuse) - float64(h.memBefore.HeapInuse+h.memBefore.StackInuse)
	perEndpoint := (heapB - heapA) / 90_000
	perTarget := (heapA - 10_000*perEndpoint) / 1000
	b.ResetTimer()
	cpuBig, allocBig := h.change(b, 950, b.N)
	cpuSmall, allocSmall := h.change(b, 10, b.N)
	b.StopTimer()
	b.ReportMetric(perTarget/1024, "KiB/target")
	b.ReportMetric(perEndpoint, "B/endpoint")
	b.ReportMetric(float64(grA)/1000, "goroutines/target")
	b.ReportMetric(syncA.Seconds(), "s-sync-1000x10")
	b.ReportMetric(h.syncTime.Seconds(), "s-sync-100k")
	b.ReportMetric(heapB/(1<<20), "MiB-100k")
	b.ReportMetric(float64(cpuBig.Microseconds()), "µs-cpu/change-of-910")
	b.ReportMetric(float64(cpuSmall.Microseconds()), "µs-cpu/change-of-10")
	b.ReportMetric(float64(allocBig), "allocs/change-of-910")
	b.ReportMetric(float64(allocSmall), "allocs/change-of-10")
}

// TestHubScaleShort is BenchmarkThousandTargets in small, for make test:
// 30 Services in one hub, every one reaches both sinks whole, and a
// change of one reaches both without a second look at the others.
func TestHubScaleShort(t *testing.T) {
	cp := kubetest.New(t)
	sizes := make([]int, 30)
	for i := range sizes {
		sizes[i] = 10
		if i%10 == 9 {
			sizes[i] = 300
		}
	}
	h := startHubScale(t, cp, "short", sizes)
	before := make([]int64, len(sizes))
	for i, cc := range h.ccs {
		before[i] = cc.updates.Load()
	}
	h.change(t, 19, 3)
	h.change(t, 4, 2)
	if !h.allSynced() {
		t.Fatal("a change lost endpoints")
	}
	for i, cc := range h.ccs {
		want := before[i]
		switch i {
		case 19:
			want += 3
		case 4:
			want += 2
		}
		if got := cc.updates.Load(); got < want || (i != 19 && i != 4 && got != want) {
			t.Errorf("target %d: %d resolver updates, want %d", i, got, want)
		}
	}
}

package e2e_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/client-go/rest"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/grpcresolver"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest/fleet"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest/podnet"
)

// cluster is a real API server and real pods (kubetest/fleet): each pod a
// network namespace running a gRPC test server that answers with its pod
// name, its EndpointSlices written the way the controller does.
type cluster struct {
	t     testing.TB
	cp    *kubetest.ControlPlane
	fleet *fleet.Fleet

	serverOpts []grpc.ServerOption // for the pods' servers
	dialOpts   []grpc.DialOption   // for clients

	mu   sync.Mutex
	pods map[string]*greeterPod
}

type greeterPod struct {
	name string
	srv  *server
	gs   *grpc.Server
}

func newCluster(t testing.TB, slices int) *cluster {
	t.Helper()
	n := podnet.NewForTest(t)
	cp := kubetest.New(t)
	cs, err := cp.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	f, err := fleet.New(ctxFor(t, time.Minute), cs, n, "demo", "greeter", "grpc", 50051, slices)
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{t: t, cp: cp, fleet: f, pods: map[string]*greeterPod{}}
}

// startPod creates a pod running a server, not yet ready.
func (c *cluster) startPod(name, zone string, hints ...string) *greeterPod {
	c.t.Helper()
	p, err := c.fleet.AddPod(context.Background(), name, zone, hints...)
	if err != nil {
		c.t.Fatal(err)
	}
	ln, err := p.Listen("tcp", ":50051")
	if err != nil {
		c.t.Fatal(err)
	}
	srv, gs := serveOn(c.t, ln, name, c.serverOpts...)
	g := &greeterPod{name: name, srv: srv, gs: gs}
	c.mu.Lock()
	c.pods[name] = g
	c.mu.Unlock()
	return g
}

func (c *cluster) set(name string, ready, terminating bool) { c.fleet.Set(name, ready, terminating) }

// startReady starts pods named prefix-first .. prefix-(first+n-1) in zone,
// marks them ready and publishes; it returns their names.
func (c *cluster) startReady(prefix string, first, n int, zone string, hints ...string) []string {
	c.t.Helper()
	var names []string
	for i := first; i < first+n; i++ {
		p := c.startPod(fmt.Sprintf("%s-%d", prefix, i), zone, hints...)
		c.set(p.name, true, false)
		names = append(names, p.name)
	}
	c.publish()
	return names
}

func (c *cluster) publish() {
	c.t.Helper()
	if err := c.fleet.Publish(context.Background()); err != nil {
		c.t.Fatal(err)
	}
}

// removePod takes the pod out of the slices, then deletes it.
func (c *cluster) removePod(name string) {
	c.t.Helper()
	c.mu.Lock()
	g := c.pods[name]
	c.mu.Unlock()
	g.gs.Stop()
	if err := c.fleet.Remove(context.Background(), name); err != nil {
		c.t.Fatal(err)
	}
}

// drain deletes a pod the way Kubernetes does (see fleet.Drain).
func (c *cluster) drain(name string, preStop time.Duration) {
	c.t.Helper()
	c.mu.Lock()
	g := c.pods[name]
	c.mu.Unlock()
	if err := c.fleet.Drain(context.Background(), name, preStop, g.gs.GracefulStop); err != nil {
		c.t.Fatal(err)
	}
}

// client dials kubernetes:///greeter.demo:grpc through the resolver.
func (c *cluster) client(opts ...grpcresolver.Option) testgrpc.TestServiceClient {
	cl, _ := c.clientAndBuilder(opts...)
	return cl
}

func (c *cluster) clientAndBuilder(opts ...grpcresolver.Option) (testgrpc.TestServiceClient, *grpcresolver.Builder) {
	c.t.Helper()
	return c.dialAs(c.cp.AdminConfig(), "kubernetes:///greeter.demo:grpc", opts...)
}

// dialAs dials target through a resolver whose source uses cfg.
func (c *cluster) dialAs(cfg *rest.Config, target string, opts ...grpcresolver.Option) (testgrpc.TestServiceClient, *grpcresolver.Builder) {
	c.t.Helper()
	src, err := kubernetes.New(cfg)
	if err != nil {
		c.t.Fatal(err)
	}
	hub := coretest.Hub(c.t, src)
	c.t.Cleanup(func() { hub.Close() })
	b := must(grpcresolver.NewKubernetes(hub, opts...))
	c.t.Cleanup(func() { b.Close() })
	return testgrpc.NewTestServiceClient(dial(c.t, target, append([]grpc.DialOption{grpc.WithResolvers(b)}, c.dialOpts...)...)), b
}

// loadResult is what load saw: calls per pod and the failures.
type loadResult struct {
	ok, failed  int64
	perPod      map[string]int64
	errs        []error   // the first 10
	lastFailure time.Time // when the last failed call ended
}

// startLoad runs load in the background; the function it returns stops it
// (once at least min calls were made) and returns the result.
func startLoad(ctx context.Context, client testgrpc.TestServiceClient, concurrency int, min int64) (stop func() loadResult) {
	stopc := make(chan struct{})
	res := make(chan loadResult, 1)
	go func() { res <- load(ctx, client, concurrency, min, stopc) }()
	return func() loadResult { close(stopc); return <-res }
}

// loadN runs load until n calls were made.
func loadN(ctx context.Context, client testgrpc.TestServiceClient, concurrency int, n int64) loadResult {
	stop := make(chan struct{})
	close(stop)
	return load(ctx, client, concurrency, n, stop)
}

// load runs concurrency callers (5 s per call) until stop is closed and at
// least min calls were made.
func load(ctx context.Context, client testgrpc.TestServiceClient, concurrency int, min int64, stop <-chan struct{}) loadResult {
	var total atomic.Int64
	var mu sync.Mutex
	res := loadResult{perPod: map[string]int64{}}
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					if total.Load() >= min {
						return
					}
				case <-ctx.Done():
					return
				default:
				}
				total.Add(1)
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				var pr peer.Peer
				began := time.Now()
				r, err := client.UnaryCall(cctx, &testgrpc.SimpleRequest{}, grpc.Peer(&pr))
				cancel()
				if err != nil {
					err = fmt.Errorf("call began %s, peer %v: %w", began.Format("15:04:05.000000"), pr.Addr, err)
				}
				mu.Lock()
				if err != nil {
					res.failed++
					res.lastFailure = time.Now()
					if len(res.errs) < 10 {
						res.errs = append(res.errs, err)
					}
				} else {
					res.ok++
					res.perPod[r.ServerId]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return res
}

// waitServing waits until every named pod has answered a call.
func waitServing(t *testing.T, ctx context.Context, client testgrpc.TestServiceClient, names ...string) {
	t.Helper()
	waitServingTB(t, ctx, client, names...)
}

func waitServingTB(t testing.TB, ctx context.Context, client testgrpc.TestServiceClient, names ...string) {
	t.Helper()
	seen := map[string]bool{}
	for len(seen) < len(names) {
		r, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("waiting for %v: %v", names, err)
		}
		if slices.Contains(names, r.ServerId) {
			seen[r.ServerId] = true
		}
	}
}

// Five pods replaced one by one the way Kubernetes does it, under load of
// 50 concurrent callers: not one call may fail.
func TestRollingReplacementUnderLoadFailsNoCall(t *testing.T) {
	c := newCluster(t, 1)
	ctx := ctxFor(t, 3*time.Minute)
	names := c.startReady("greeter-old", 0, 5, "")
	client := c.client()
	waitServing(t, ctx, client, names...)

	stop := startLoad(ctx, client, 50, 10000)
	time.Sleep(300 * time.Millisecond) // load is flowing
	for i, old := range names {
		// The new pod starts and becomes ready.
		c.startReady("greeter-new", i, 1, "")
		// The old pod is deleted: terminating, drained, gone.
		c.drain(old, 500*time.Millisecond)
	}
	r := stop()
	t.Logf("rolling replacement of 5 pods under 50 concurrent callers: %d calls, %d failed; per pod %v", r.ok+r.failed, r.failed, r.perPod)
	if r.failed != 0 {
		t.Fatalf("%d calls failed, want 0: %v", r.failed, r.errs)
	}
	if r.ok < 10000 {
		t.Fatalf("only %d calls", r.ok)
	}
	for i := range 5 {
		if r.perPod[fmt.Sprintf("greeter-new-%d", i)] == 0 {
			t.Fatalf("new pod %d got no call", i)
		}
	}
}

// Scaling 2 -> 6: every new pod gets calls within a second of being ready in
// its slice. With N steady pods, the busiest gets at most 1.2x the calls of
// the least busy.
func TestScaleUpAndDistribution(t *testing.T) {
	c := newCluster(t, 2)
	ctx := ctxFor(t, 3*time.Minute)
	names := c.startReady("greeter", 0, 2, "")
	client := c.client()
	waitServing(t, ctx, client, names...)

	stop := startLoad(ctx, client, 20, 0)
	var delays []time.Duration
	for i := 2; i < 6; i++ {
		p := c.startPod(fmt.Sprintf("greeter-%d", i), "")
		c.set(p.name, true, false)
		readyAt := time.Now() // the slice write is issued now
		c.publish()
		for p.srv.First.Load() == 0 {
			if ctx.Err() != nil {
				t.Fatalf("pod %s never got a call", p.name)
			}
			time.Sleep(2 * time.Millisecond)
		}
		delays = append(delays, time.Unix(0, p.srv.First.Load()).Sub(readyAt))
	}
	stop()
	// How soon is measured by BenchmarkPropagationToPicker, not asserted.
	t.Logf("scale 2->6: first call to each new pod after its slice write was issued: %v", delays)

	// Distribution over the 6 steady pods.
	r := loadN(ctx, client, 50, 12000)
	if r.failed != 0 {
		t.Fatalf("%d calls failed: %v", r.failed, r.errs)
	}
	var counts []int64
	for _, n := range r.perPod {
		counts = append(counts, n)
	}
	slices.Sort(counts)
	ratio := float64(counts[len(counts)-1]) / float64(counts[0])
	t.Logf("distribution over 6 pods, %d calls: %v, busiest/least busy = %.3f", r.ok, r.perPod, ratio)
	if len(counts) != 6 || ratio > 1.2 {
		t.Fatalf("distribution %v (ratio %.3f), want all 6 pods within 1.2x", r.perPod, ratio)
	}
}

// A client in zone-a sends nothing to zone-b while zone-a has ready pods,
// and fails over when zone-a empties.
func TestZoneAwareBalancing(t *testing.T) {
	grpcresolver.RegisterZoneAware("zone-a")
	c := newCluster(t, 1)
	ctx := ctxFor(t, 3*time.Minute)
	c.startReady("a", 0, 2, "zone-a", "zone-a")
	c.startReady("b", 0, 2, "zone-b", "zone-b")
	client := c.client(grpcresolver.WithServiceConfig(grpcresolver.ZoneAwareServiceConfig("", 1)))
	waitServing(t, ctx, client, "a-0", "a-1")
	r := loadN(ctx, client, 10, 2000)
	t.Logf("zone-a client, zone-a ready: %v", r.perPod)
	if r.failed != 0 || r.perPod["b-0"]+r.perPod["b-1"] != 0 || r.perPod["a-0"] == 0 || r.perPod["a-1"] == 0 {
		t.Fatalf("calls %v failed %d: want zone-a only", r.perPod, r.failed)
	}
	// Zone a empties: its pods go not ready, then away.
	c.set("a-0", false, true)
	c.set("a-1", false, true)
	c.publish()
	waitServing(t, ctx, client, "b-0", "b-1")
	c.removePod("a-0")
	c.removePod("a-1")
	r = loadN(ctx, client, 10, 2000)
	t.Logf("zone-a client, zone-a empty: %v", r.perPod)
	if r.failed != 0 || r.perPod["b-0"] == 0 || r.perPod["b-1"] == 0 {
		t.Fatalf("after failover: calls %v failed %d: %v", r.perPod, r.failed, r.errs)
	}
}

// 250 endpoints in 3 slices: the client connects to all 250 (kuberesolver
// sees only one slice).
func TestConnectsToAll250EndpointsAcross3Slices(t *testing.T) {
	c := newCluster(t, 3)
	ctx := ctxFor(t, 5*time.Minute)
	names := c.startReady("greeter", 0, 250, "")
	client := c.client()
	waitServing(t, ctx, client, names...)
	r := loadN(ctx, client, 50, 5000)
	if r.failed != 0 || len(r.perPod) != 250 {
		t.Fatalf("%d pods answered of 250, %d failed", len(r.perPod), r.failed)
	}
	t.Logf("250 endpoints in 3 slices: %d calls reached %d pods", r.ok, len(r.perPod))
}

// A client whose ServiceAccount may not list EndpointSlices: calls fail
// fast with Unavailable naming what to grant; once a Role grants it, the
// same ClientConn serves calls without a restart.
func TestForbiddenFailsCallsFastThenGrantRecovers(t *testing.T) {
	c := newCluster(t, 1)
	ctx := ctxFor(t, 3*time.Minute)
	names := c.startReady("greeter", 0, 2, "")
	cfg, err := c.cp.ServiceAccountConfig(ctx, "demo", "client")
	if err != nil {
		t.Fatal(err)
	}
	client, _ := c.dialAs(cfg, "kubernetes:///greeter.demo:grpc")
	err = failsFast(t, ctx, client)
	for _, want := range []string{"endpointslices.discovery.k8s.io in namespace demo", "grant verbs list and watch", "system:serviceaccount:demo:client"} {
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), want) {
			t.Fatalf("call = %v, want Unavailable saying %q", err, want)
		}
	}
	t.Logf("without the grant: %v", err)
	if err := c.cp.Grant(ctx, "demo", "client", "disco-endpointslices", false, rbacv1.PolicyRule{
		APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"},
	}); err != nil {
		t.Fatal(err)
	}
	waitServing(t, ctx, client, names...)
}

// A target whose Service does not exist: calls fail fast naming it.
func TestMissingServiceFailsCallsFast(t *testing.T) {
	c := newCluster(t, 1)
	ctx := ctxFor(t, 3*time.Minute)
	c.startReady("greeter", 0, 1, "")
	client, _ := c.dialAs(c.cp.AdminConfig(), "kubernetes:///nosuch.demo:grpc")
	err := failsFast(t, ctx, client)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "demo/nosuch") || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("call = %v, want Unavailable naming demo/nosuch as not found", err)
	}
	t.Logf("missing Service: %v", err)
}

// A deleted Service: its pods may still run and its slices still exist
// (the garbage collector deletes them after the Service), but those IPs may
// soon belong to other pods. Calls stop reaching the old pods and fail fast
// (Unavailable); with the zone-aware policy, naming the Service as not
// found (round_robin only says it has nothing to pick from).
func TestDeletedServiceFailsCallsFast(t *testing.T) {
	grpcresolver.RegisterZoneAware("zone-a")
	for _, policy := range []string{"round_robin", "zone-aware"} {
		t.Run(policy, func(t *testing.T) {
			c := newCluster(t, 1)
			ctx := ctxFor(t, 3*time.Minute)
			names := c.startReady("greeter", 0, 2, "")
			var opts []grpcresolver.Option
			if policy == "zone-aware" {
				opts = append(opts, grpcresolver.WithServiceConfig(grpcresolver.ZoneAwareServiceConfig("zone-a", 1)))
			}
			client := c.client(opts...)
			waitServing(t, ctx, client, names...)
			cs, err := c.cp.AdminClient()
			if err != nil {
				t.Fatal(err)
			}
			if err := cs.CoreV1().Services("demo").Delete(ctx, "greeter", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			var last error
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if _, last = client.UnaryCall(ctx, &testgrpc.SimpleRequest{}); last != nil {
					break
				}
			}
			if last == nil {
				t.Fatal("calls still reach the pods of a deleted Service")
			}
			err = failsFast(t, ctx, client)
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("call = %v, want Unavailable", err)
			}
			if policy == "zone-aware" && !strings.Contains(err.Error(), "service demo/greeter not found") {
				t.Fatalf("call = %v, want it to name the deleted Service", err)
			}
			t.Logf("deleted Service, %s: %v", policy, err)
		})
	}
}

// A pod whose node vanishes (its packets dropped, no reset) stays ready in
// its slice until Kubernetes notices the node, 40 s or more, and round robin
// soon has every caller's call stuck on it. With keepalive on both sides, as
// the README recommends, the client drops the connection by itself: grpc-go
// sets TCP_USER_TIMEOUT to the keepalive timeout, so with calls in flight the
// kernel gives up after 2 s of unacknowledged data (an idle connection is
// found by a ping within Time + Timeout). The stuck calls fail with
// Unavailable rather than at their 5 s deadline, and later calls go to the
// other pods. Without keepalive this test fails: the calls hang to their
// deadline.
func TestVanishedPodIsLeftWithKeepalive(t *testing.T) {
	c := newCluster(t, 1)
	c.serverOpts = []grpc.ServerOption{grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
		MinTime: 10 * time.Second, PermitWithoutStream: true})}
	c.dialOpts = []grpc.DialOption{grpc.WithKeepaliveParams(keepalive.ClientParameters{
		Time: 10 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true})}
	ctx := ctxFor(t, 3*time.Minute)
	names := c.startReady("greeter", 0, 3, "")
	client := c.client()
	waitServing(t, ctx, client, names...)

	stop := startLoad(ctx, client, 8, 0)
	time.Sleep(500 * time.Millisecond)
	vanished := time.Now()
	if err := c.fleet.Pod("greeter-1").Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(15 * time.Second)
	during := stop()
	stop = startLoad(ctx, client, 8, 0) // the last 5 s
	time.Sleep(5 * time.Second)
	settled := stop()

	failed := during.failed + settled.failed
	for _, err := range append(during.errs, settled.errs...) {
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("call failed with %v, want Unavailable (keepalive)", err)
		}
	}
	detected := max(during.lastFailure.Sub(vanished), settled.lastFailure.Sub(vanished))
	t.Logf("pod vanished: %d calls failed (Unavailable), the last %v after; %d calls in the last 5 s, %d to the vanished pod",
		failed, detected.Round(time.Millisecond), settled.ok, settled.perPod["greeter-1"])
	if failed == 0 || failed > 8 {
		t.Fatalf("%d calls failed, want 1 to 8 (those stuck on the vanished pod)", failed)
	}
	if detected > 10*time.Second {
		t.Fatalf("stuck calls failed %v after the vanish, want within 10 s", detected)
	}
	if settled.ok < 100 || settled.perPod["greeter-1"] != 0 {
		t.Fatalf("%d calls in the last 5 s, %d to the vanished pod: want calls flowing, none to it", settled.ok, settled.perPod["greeter-1"])
	}
}

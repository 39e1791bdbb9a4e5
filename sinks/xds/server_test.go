package xds_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	grpcxds "google.golang.org/grpc/xds"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/xds"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchClientsEnv); spec != "" {
		os.Exit(benchClients(spec))
	}
	goleak.VerifyTestMain(m,
		// grpc-go's xDS client keeps a process-wide pool with watchdog
		// goroutines; they are grpc-go's, not the server's.
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/xds/xdsclient.(*clientImpl).run"),
		// The certificate-file watcher of a bootstrap's TLS credentials
		// (TestMutualTLS), which that pool owns.
		goleak.IgnoreAnyFunction("google.golang.org/grpc/credentials/tls/certprovider/pemfile.(*watcher).run"),
	)
}

// backend is a real gRPC test server on a loopback address of its own,
// answering with its name.
type backend struct {
	testgrpc.UnimplementedTestServiceServer
	name  string
	ip    string
	port  uint16
	calls atomic.Int64
	gs    *grpc.Server
}

func (b *backend) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	b.calls.Add(1)
	return &testgrpc.SimpleResponse{ServerId: b.name}, nil
}

func startBackend(t *testing.T, name string, n int) *backend {
	t.Helper()
	ip := fmt.Sprintf("127.0.0.%d", n)
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, ip: ip, port: uint16(ln.Addr().(*net.TCPAddr).Port), gs: grpc.NewServer()}
	testgrpc.RegisterTestServiceServer(b.gs, b)
	done := make(chan struct{})
	go func() { defer close(done); b.gs.Serve(ln) }()
	t.Cleanup(func() { b.gs.Stop(); <-done })
	return b
}

func (b *backend) endpoint(zone string, opts ...func(*core.Endpoint)) *core.Endpoint {
	e := &core.Endpoint{ID: b.name, Name: b.name, Addresses: []string{b.ip}, Port: b.port, Zone: zone}
	for _, o := range opts {
		o(e)
	}
	return e
}

func set(t *testing.T, eps ...*core.Endpoint) core.Set { return coretest.Set(t, eps...) }

// fixture is a hub over a static source, an xDS server on loopback, and
// its registry.
type fixture struct {
	t    *testing.T
	src  *coretest.Static
	hub  *core.Hub
	srv  *xds.Server
	reg  *prometheus.Registry
	uri  string
	stop func() // stops the running server
}

func newFixture(t *testing.T, sets map[core.Target]core.Set, opts ...xds.Option) *fixture {
	t.Helper()
	f := &fixture{t: t, src: coretest.NewStatic(sets), reg: prometheus.NewRegistry()}
	f.hub = coretest.Hub(t, f.src)
	f.start(opts...)
	return f
}

// byName parses a resource name as the static source's target of that
// name.
func byName(text string) (core.Target, error) { return core.Target{Name: text}, nil }

// start runs a server on a new listener (on the same address as before, if
// there was one).
func (f *fixture) start(opts ...xds.Option) {
	t := f.t
	t.Helper()
	addr := "127.0.0.1:0"
	if f.uri != "" {
		addr = f.uri
	}
	var lis net.Listener
	var err error
	for range 50 { // the old server's port may linger an instant
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	f.uri = lis.Addr().String()
	srv, err := xds.New(f.hub, append([]xds.Option{xds.WithTargetParser(byName), xds.WithRegisterer(f.reg)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, lis) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
			srv.Close()
		}
	})
	f.stop = func() { stopped = true; cancel(); <-done; srv.Close() }
}

func (f *fixture) client(zone string) testgrpc.TestServiceClient {
	f.t.Helper()
	return testgrpc.NewTestServiceClient(f.dial(zone))
}

// dial returns a grpc-go client of xds:///greeter whose bootstrap names the
// server (and zone), closed when the test ends.
func (f *fixture) dial(zone string) *grpc.ClientConn {
	f.t.Helper()
	return f.dialWith(xds.Bootstrap{ServerURI: f.uri, NodeID: "test-" + zone, Zone: zone})
}

// dialWith returns a grpc-go client of xds:///greeter with bootstrap b.
func (f *fixture) dialWith(b xds.Bootstrap) *grpc.ClientConn {
	t := f.t
	t.Helper()
	bs, err := b.JSON()
	if err != nil {
		t.Fatal(err)
	}
	rb, err := grpcxds.NewXDSResolverWithConfigForTesting(bs)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///greeter", grpc.WithResolvers(rb), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// serving calls until every name in want answered and, after that, n calls
// reached only names in want; it returns the counts of those n.
func serving(t *testing.T, c testgrpc.TestServiceClient, n int, want ...string) map[string]int {
	t.Helper()
	ctx := ctxFor(t, 30*time.Second)
	seen := map[string]bool{}
	for len(seen) < len(want) {
		r, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("waiting for %v: %v", want, err)
		}
		if contains(want, r.ServerId) {
			seen[r.ServerId] = true
		}
	}
	// Settle: the client may still have an older assignment's picker.
	for deadline := time.Now().Add(10 * time.Second); ; {
		got := map[string]int{}
		ok := true
		for range n {
			r, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
			if err != nil {
				t.Fatal(err)
			}
			got[r.ServerId]++
			ok = ok && contains(want, r.ServerId)
		}
		if ok {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls reached %v, want only %v", got, want)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// noNACK fails the test if a client rejected a response.
func (f *fixture) noNACK() {
	f.t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	acks := 0.0
	for _, mf := range mfs {
		if mf.GetName() != "disco_xds_replies_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == "nack" && m.GetCounter().GetValue() > 0 {
					f.t.Fatalf("clients NACKed %v responses", m.GetCounter().GetValue())
				}
				if l.GetName() == "result" && l.GetValue() == "ack" {
					acks += m.GetCounter().GetValue()
				}
			}
		}
	}
	if acks == 0 {
		f.t.Fatal("no ACK counted: the replies metric is not working")
	}
}

// A grpc-go client with no disco code in it, dialing xds:///greeter with a
// bootstrap naming the server, is balanced over the target's endpoints and
// follows them: changes, a scale to zero and back, and a deleted target
// (calls fail fast) that comes back.
func TestGRPCGoClientFollowsTheTarget(t *testing.T) {
	b1, b2, b3 := startBackend(t, "b1", 11), startBackend(t, "b2", 12), startBackend(t, "b3", 13)
	tg := core.Target{Name: "greeter"}
	f := newFixture(t, map[core.Target]core.Set{tg: set(t, b1.endpoint(""), b2.endpoint(""))})
	c := f.client("")
	got := serving(t, c, 100, "b1", "b2")
	if got["b1"] < 20 || got["b2"] < 20 {
		t.Fatalf("round robin over two endpoints: %v", got)
	}
	f.src.Set(tg, set(t, b2.endpoint(""), b3.endpoint("")))
	serving(t, c, 50, "b2", "b3")

	f.src.Set(tg, set(t)) // scale to zero: calls fail fast, not at their deadline
	failFast(t, c)
	f.src.Set(tg, set(t, b1.endpoint("")))
	serving(t, c, 20, "b1")

	f.noNACK()
}

// A target that is deleted (the Kubernetes source publishes it empty and
// not found) is an empty assignment, never a deleted resource: calls fail
// fast; and it comes back.
func TestDeletedTargetFailsFastAndRecovers(t *testing.T) {
	b1, b2 := startBackend(t, "b1", 14), startBackend(t, "b2", 15)
	tg := core.Target{Name: "greeter"}
	src := coretest.NewScript()
	f := &fixture{t: t, hub: coretest.Hub(t, src), reg: prometheus.NewRegistry()}
	f.start()
	cc := f.dial("")
	cc.Connect() // idle until its first call otherwise
	c := testgrpc.NewTestServiceClient(cc)
	if err := src.WaitRunning(ctxFor(t, 10*time.Second), tg, 1); err != nil {
		t.Fatal(err)
	}
	src.Publish(tg, set(t, b1.endpoint("")))
	serving(t, c, 10, "b1")
	src.PublishStale(tg, core.Set{}, fmt.Errorf("service greeter deleted: %w", core.ErrNotFound))
	failFast(t, c)
	src.Publish(tg, set(t, b2.endpoint("")))
	serving(t, c, 10, "b2")
	f.noNACK()
}

// failFast waits until a call fails within a second (an empty assignment),
// rather than waiting for its deadline.
func failFast(t *testing.T, c testgrpc.TestServiceClient) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		began := time.Now()
		r, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		cancel()
		if err != nil && time.Since(began) < time.Second {
			return
		}
		_ = r
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("calls still succeed, or fail only at their deadline, with no endpoint")
}

// The terminating fallback as core routes it: serving-but-terminating
// endpoints take calls only when none is ready.
func TestTerminatingFallback(t *testing.T) {
	b1, b2 := startBackend(t, "b1", 21), startBackend(t, "b2", 22)
	term := func(e *core.Endpoint) {
		e.Conditions = core.Conditions{Ready: new(false), Serving: new(true), Terminating: new(true)}
	}
	tg := core.Target{Name: "greeter"}
	f := newFixture(t, map[core.Target]core.Set{tg: set(t, b1.endpoint(""), b2.endpoint("", term))})
	c := f.client("")
	serving(t, c, 50, "b1")
	f.src.Set(tg, set(t, b1.endpoint("", term), b2.endpoint("", term)))
	serving(t, c, 50, "b1", "b2")
	f.noNACK()
}

// Zone preference: a client whose bootstrap names zone-a gets zone-a's
// endpoints at priority 0 and the rest at 1; when zone-a has none ready,
// the rest take the calls.
func TestZonePreference(t *testing.T) {
	a1, a2, b1 := startBackend(t, "a1", 31), startBackend(t, "a2", 32), startBackend(t, "b1", 33)
	notReady := func(e *core.Endpoint) { e.Conditions = core.Conditions{Ready: new(false)} }
	tg := core.Target{Name: "greeter"}
	f := newFixture(t, map[core.Target]core.Set{tg: set(t, a1.endpoint("zone-a"), a2.endpoint("zone-a"), b1.endpoint("zone-b"))})
	ca, cb, any := f.client("zone-a"), f.client("zone-b"), f.client("")
	serving(t, ca, 60, "a1", "a2")
	serving(t, cb, 30, "b1")
	serving(t, any, 60, "a1", "a2", "b1")
	f.src.Set(tg, set(t, a1.endpoint("zone-a", notReady), a2.endpoint("zone-a", notReady), b1.endpoint("zone-b")))
	serving(t, ca, 30, "b1")
	f.noNACK()
}

// Demand-driven: a server with no client watches nothing; a client's
// subscription starts the target's watch, shared by every client of the
// target; the last client leaving stops it.
func TestDemandDriven(t *testing.T) {
	b1 := startBackend(t, "b1", 41)
	tg := core.Target{Name: "greeter"}
	src := coretest.NewScript()
	hub := coretest.Hub(t, src)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := xds.New(hub, xds.WithTargetParser(byName))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx, lis) }()
	defer func() { cancel(); <-done; srv.Close() }()
	time.Sleep(100 * time.Millisecond)
	if n := src.Started(tg); n != 0 {
		t.Fatalf("a server with no client started %d watches", n)
	}
	f := &fixture{t: t, uri: lis.Addr().String()}
	var ccs []*grpc.ClientConn
	for range 3 {
		cc := f.dial("")
		cc.Connect() // a channel is idle until its first call otherwise
		ccs = append(ccs, cc)
	}
	wctx := ctxFor(t, 10*time.Second)
	if err := src.WaitRunning(wctx, tg, 1); err != nil {
		t.Fatal(err)
	}
	src.Publish(tg, set(t, b1.endpoint("")))
	for _, cc := range ccs {
		serving(t, testgrpc.NewTestServiceClient(cc), 5, "b1")
	}
	if n := src.Started(tg); n != 1 {
		t.Fatalf("%d watches for three clients of one target, want 1", n)
	}
	// grpc-go clients close their ADS stream with their channel: the last
	// one closing releases the target.
	ccs[0].Close()
	ccs[1].Close()
	time.Sleep(200 * time.Millisecond)
	if n := src.Running(tg); n != 1 {
		t.Fatalf("%d watches with one client left, want 1", n)
	}
	ccs[2].Close()
	deadline := time.Now().Add(10 * time.Second)
	for src.Running(tg) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the target is still watched after its last client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A server restarted under its clients: they keep their last endpoints
// meanwhile (no failed call), and resync with the new one, following
// changes again.
func TestServerRestartKeepsClientsEndpoints(t *testing.T) {
	b1, b2 := startBackend(t, "b1", 51), startBackend(t, "b2", 52)
	tg := core.Target{Name: "greeter"}
	f := newFixture(t, map[core.Target]core.Set{tg: set(t, b1.endpoint(""))})
	c := f.client("")
	serving(t, c, 10, "b1")
	var failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
					failed.Add(1)
				}
				cancel()
			}
		})
	}
	f.stop()
	time.Sleep(500 * time.Millisecond) // no server: the client keeps its endpoints
	f.start()
	f.src.Set(tg, set(t, b1.endpoint(""), b2.endpoint("")))
	serving(t, c, 20, "b1", "b2")
	close(stop)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Fatalf("%d calls failed while the xDS server restarted", n)
	}
}

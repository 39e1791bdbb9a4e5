package grpcresolver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/grpcresolver"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// server is a test service that answers UnaryCall with its name and counts
// the calls it served.
type server struct {
	testgrpc.UnimplementedTestServiceServer
	name  string
	calls atomic.Int64
	first atomic.Int64 // unix nanos of the first call
}

func (s *server) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.first.CompareAndSwap(0, time.Now().UnixNano())
	s.calls.Add(1)
	return &testgrpc.SimpleResponse{ServerId: s.name, Hostname: s.name}, nil
}

// serveOn runs a gRPC test server on ln until the test ends.
func serveOn(t testing.TB, ln net.Listener, name string, opts ...grpc.ServerOption) (*server, *grpc.Server) {
	t.Helper()
	s := &server{name: name}
	gs := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(gs, s)
	done := make(chan struct{})
	go func() { defer close(done); gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return s, gs
}

func loopbackServer(t *testing.T, name string) (*server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := serveOn(t, ln, name)
	return s, ln.Addr().String()
}

func endpointAt(id, hostport string) *core.Endpoint {
	host, port, _ := net.SplitHostPort(hostport)
	var p uint16
	fmt.Sscan(port, &p)
	return &core.Endpoint{ID: id, Name: id, Addresses: []string{host}, Port: p}
}

func staticParser(text string) (core.Target, error) {
	u, err := url.Parse(text)
	if err != nil {
		return core.Target{}, err
	}
	name := strings.TrimPrefix(u.Path, "/")
	if name == "" || strings.Contains(name, " ") {
		return core.Target{}, fmt.Errorf("bad target %q: %w", text, core.ErrInvalid)
	}
	return core.Target{Name: name}, nil
}

func dial(t testing.TB, target string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(target, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func TestBalancesAcrossEveryEndpointAndFollowsChanges(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	var eps []*core.Endpoint
	for i := range 3 {
		s, addr := loopbackServer(t, fmt.Sprint("s", i))
		eps = append(eps, endpointAt(s.name, addr))
	}
	target := core.Target{Name: "greeter"}
	src := core.NewStatic(map[core.Target]core.Set{target: coretest.Set(t, eps[:2]...)})
	b := grpcresolver.New("static", src, staticParser)
	defer b.Close()
	client := testgrpc.NewTestServiceClient(dial(t, "static:///greeter", grpc.WithResolvers(b)))
	call := func(n int) map[string]int {
		seen := map[string]int{}
		for range n {
			r, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
			if err != nil {
				t.Fatal(err)
			}
			seen[r.ServerId]++
		}
		return seen
	}
	for seen := call(2); seen["s0"] == 0 || seen["s1"] == 0; seen = call(2) {
		if ctx.Err() != nil { // until both connections are ready
			t.Fatal("both servers never answered")
		}
	}
	if seen := call(40); seen["s0"] != 20 || seen["s1"] != 20 {
		t.Fatalf("calls per server: %v, want 20/20 round robin", seen)
	}
	src.Set(target, coretest.Set(t, eps[1], eps[2]))
	deadline := time.Now().Add(10 * time.Second)
	for {
		seen := call(30)
		if seen["s0"] == 0 && seen["s1"] == 15 && seen["s2"] == 15 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the change: %v", seen)
		}
	}
}

func TestMissingTargetFailsFastWithItsReason(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	src := core.NewStatic(nil) // knows no target: ErrNotFound
	b := grpcresolver.New("static", src, staticParser)
	defer b.Close()
	client := testgrpc.NewTestServiceClient(dial(t, "static:///nosuch", grpc.WithResolvers(b)))
	err := failsFast(t, ctx, client)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "target not found") {
		t.Fatalf("call = %v, want Unavailable naming the missing target", err)
	}
}

// failsFast makes one call without WaitForReady and returns its error; the
// call must fail within 5 s, not wait for its 30 s deadline.
func failsFast(t *testing.T, ctx context.Context, client testgrpc.TestServiceClient) error {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	begin := time.Now()
	_, err := client.UnaryCall(cctx, &testgrpc.SimpleRequest{})
	if err == nil {
		t.Fatal("call succeeded, want a failure")
	}
	if d := time.Since(begin); d > 5*time.Second {
		t.Fatalf("call failed after %v (%v): want a fast failure", d, err)
	}
	return err
}

func TestUnparseableTargetFailsCalls(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	b := grpcresolver.New("static", core.NewStatic(nil), staticParser)
	defer b.Close()
	client := testgrpc.NewTestServiceClient(dial(t, "static:///bad%20name", grpc.WithResolvers(b)))
	_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	if err == nil || !strings.Contains(err.Error(), "bad target") {
		t.Fatalf("call = %v, want the parse error", err)
	}
}

// recordingCC is a resolver.ClientConn that records what the resolver sends.
type recordingCC struct {
	resolver.ClientConn
	mu      sync.Mutex
	states  []resolver.State
	errs    []error
	changed chan struct{}
}

func newRecordingCC() *recordingCC { return &recordingCC{changed: make(chan struct{}, 100)} }

func (c *recordingCC) UpdateState(s resolver.State) error {
	c.mu.Lock()
	c.states = append(c.states, s)
	c.mu.Unlock()
	c.changed <- struct{}{}
	return nil
}

func (c *recordingCC) ReportError(err error) {
	c.mu.Lock()
	c.errs = append(c.errs, err)
	c.mu.Unlock()
	c.changed <- struct{}{}
}

func (c *recordingCC) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

func (c *recordingCC) counts() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.states), len(c.errs)
}

func (c *recordingCC) wait(t *testing.T, ctx context.Context, states, errs int) {
	t.Helper()
	for {
		s, e := c.counts()
		if s >= states && e >= errs {
			if s > states || e > errs {
				t.Fatalf("%d states and %d errors, want %d and %d", s, e, states, errs)
			}
			return
		}
		select {
		case <-c.changed:
		case <-ctx.Done():
			t.Fatalf("%d states and %d errors, want %d and %d", s, e, states, errs)
		}
	}
}

func build(t *testing.T, b *grpcresolver.Builder, target string, cc resolver.ClientConn) resolver.Resolver {
	t.Helper()
	u, _ := url.Parse(target)
	r, err := b.Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// scripted builds a resolver for static:///greeter (core target "greeter")
// over a scripted source, sending to cc, and waits until its watch runs.
func scripted(t *testing.T, ctx context.Context, cc resolver.ClientConn, opts ...grpcresolver.Option) (*coretest.Script, resolver.Resolver) {
	t.Helper()
	src := coretest.NewScript()
	b := grpcresolver.New("static", src, staticParser, opts...)
	t.Cleanup(func() { b.Close() })
	r := build(t, b, "static:///greeter", cc)
	if err := src.WaitRunning(ctx, core.Target{Name: "greeter"}, 1); err != nil {
		t.Fatal(err)
	}
	return src, r
}

func TestWhatTheResolverSends(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	target := core.Target{Name: "greeter"}
	cc := newRecordingCC()
	src, _ := scripted(t, ctx, cc)

	// Before the first sync: a transient failure sends nothing at all.
	src.Fail(target, errors.New("connection refused"))
	time.Sleep(50 * time.Millisecond)
	if s, _ := cc.counts(); s != 0 {
		t.Fatal("a state was sent before the first sync")
	}

	// Dual stack: one endpoint with both addresses; attributes carried.
	dual := &core.Endpoint{ID: "a", Name: "greeter-a", Addresses: []string{"10.244.0.2", "fd00::2"}, Port: 50051,
		Zone: "zone-a", Node: "node-1", ZoneHints: []string{"zone-a"}, Weight: 3}
	notReady := &core.Endpoint{ID: "b", Addresses: []string{"10.244.0.3"}, Port: 50051, Conditions: core.Conditions{Ready: core.Bool(false)}}
	src.Publish(target, coretest.Set(t, dual, notReady))
	cc.wait(t, ctx, 1, 1)
	st := cc.states[0]
	if len(st.Endpoints) != 1 || len(st.Endpoints[0].Addresses) != 2 || st.Endpoints[0].Addresses[1].Addr != "[fd00::2]:50051" || len(st.Addresses) != 2 {
		t.Fatalf("state = %+v; want the ready dual-stack endpoint only, with both addresses", st)
	}
	info, ok := grpcresolver.InfoOf(st.Endpoints[0].Attributes)
	if !ok || info.Name != "greeter-a" || info.Zone != "zone-a" || info.Node != "node-1" || info.Weight != 3 || info.ZoneHints[0] != "zone-a" {
		t.Fatalf("info = %+v", info)
	}
	if a, ok := grpcresolver.InfoOf(st.Addresses[1].Attributes); !ok || a.ID != "a" {
		t.Fatalf("address info = %+v", a)
	}

	// A change to a non-routable endpoint, or staleness, changes nothing sent.
	notReady2 := *notReady
	notReady2.Zone = "zone-b"
	src.Publish(target, coretest.Set(t, dual, &notReady2))
	src.Fail(target, errors.New("watch broken"))
	time.Sleep(100 * time.Millisecond)
	if s, _ := cc.counts(); s != 1 {
		t.Fatalf("%d states: an unchanged routable set was sent again", s)
	}

	// Scale to zero is a real, empty state.
	src.Publish(target, core.Set{})
	cc.wait(t, ctx, 2, 1)
	if n := len(cc.states[1].Endpoints); n != 0 {
		t.Fatalf("scale to zero sent %d endpoints", n)
	}

	// A synced target whose Service disappears: the error is reported.
	src.Fail(target, fmt.Errorf("service demo/greeter not found: %w", core.ErrNotFound))
	cc.wait(t, ctx, 2, 2)
	if err := cc.errs[1]; !errors.Is(err, core.ErrNotFound) || !strings.Contains(err.Error(), "service demo/greeter not found") {
		t.Fatalf("reported %v", err)
	}
}

func TestResolversShareAWatchAndCloseReleasesIt(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	target := core.Target{Name: "greeter"}
	src := coretest.NewScript()
	b := grpcresolver.New("static", src, staticParser)
	defer b.Close()
	u, _ := url.Parse("static:///greeter")
	var rs []resolver.Resolver
	for range 3 {
		r, err := b.Build(resolver.Target{URL: *u}, newRecordingCC(), resolver.BuildOptions{})
		if err != nil {
			t.Fatal(err)
		}
		rs = append(rs, r)
	}
	if err := src.WaitRunning(ctx, target, 1); err != nil {
		t.Fatal(err)
	}
	if n := src.Started(target); n != 1 {
		t.Fatalf("%d watches for three ClientConns of one target", n)
	}
	rs[0].Close()
	rs[1].Close()
	if n := src.Running(target); n != 1 {
		t.Fatal("the watch stopped while a ClientConn still uses it")
	}
	rs[2].Close()
	if err := src.WaitRunning(ctx, target, 0); err != nil {
		t.Fatal(err)
	}
}

// Every target form of kubernetes.ParseTarget, written as users write it in
// grpc.NewClient, reaches the service it names.
func TestKubernetesTargetFormsThroughNewClient(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	s, addr := loopbackServer(t, "greeter-0")
	set := coretest.Set(t, endpointAt(s.name, addr))
	src := core.NewStatic(map[core.Target]core.Set{
		{Namespace: "demo", Name: "greeter", Port: "grpc"}:  set,
		{Namespace: "demo", Name: "greeter", Port: "50051"}: set,
		{Name: "greeter", Port: "grpc"}:                     set, // no namespace: the source's default
	})
	b := grpcresolver.New("kubernetes", src, kubernetes.ParseTarget)
	defer b.Close()
	for _, target := range []string{
		"kubernetes:///greeter.demo:grpc",
		"kubernetes:///greeter.demo.svc.cluster.local:grpc",
		"kubernetes:///greeter.demo.svc:grpc",
		"kubernetes:///greeter:grpc",
		"kubernetes://demo/greeter:grpc",
		"kubernetes://demo/greeter:50051",
		// The authority form takes a port number only: Go's URL parser,
		// which grpc-go uses, rejects a named port in an authority.
		"kubernetes://greeter.demo:50051/",
	} {
		t.Run(target, func(t *testing.T) {
			client := testgrpc.NewTestServiceClient(dial(t, target, grpc.WithResolvers(b)))
			r, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
			if err != nil || r.ServerId != "greeter-0" {
				t.Fatalf("call = %v, %v", r, err)
			}
		})
	}
}

// slowCC is a recordingCC whose UpdateState blocks until release is closed,
// as grpc-go's does for milliseconds at thousands of endpoints.
type slowCC struct {
	*recordingCC
	entered chan struct{}
	release chan struct{}
}

func (c *slowCC) UpdateState(s resolver.State) error {
	c.entered <- struct{}{}
	<-c.release
	return c.recordingCC.UpdateState(s)
}

// While grpc-go is busy in UpdateState, a burst of changes coalesces: the
// next UpdateState carries the newest set, and the ones between are never
// sent.
func TestBurstsCoalesceWhileUpdateStateIsBusy(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	target := core.Target{Name: "greeter"}
	cc := &slowCC{recordingCC: newRecordingCC(), entered: make(chan struct{}, 100), release: make(chan struct{})}
	src, _ := scripted(t, ctx, cc)
	ep := func(i int) *core.Endpoint {
		return &core.Endpoint{ID: fmt.Sprint(i), Addresses: []string{fmt.Sprintf("10.244.0.%d", i)}, Port: 50051}
	}
	src.Publish(target, coretest.Set(t, ep(1)))
	select {
	case <-cc.entered: // the first UpdateState is in grpc-go, busy
	case <-ctx.Done():
		t.Fatal("no UpdateState")
	}
	var eps []*core.Endpoint
	for i := 2; i <= 101; i++ {
		eps = append(eps, ep(i))
		src.Publish(target, coretest.Set(t, eps...))
	}
	close(cc.release)
	cc.wait(t, ctx, 2, 0)
	time.Sleep(100 * time.Millisecond) // nothing more may follow
	if s, _ := cc.counts(); s != 2 {
		t.Fatalf("%d UpdateState calls for 1 + a burst of 100 changes, want 2", s)
	}
	got := map[string]bool{}
	for _, e := range cc.states[1].Endpoints {
		got[e.Addresses[0].Addr] = true
	}
	if len(got) != 100 || got["10.244.0.1:50051"] || !got["10.244.0.101:50051"] {
		t.Fatalf("second state has %d endpoints, want the newest set: .2 to .101", len(got))
	}
}

// rejectingCC refuses states while reject is set, as grpc-go's balancer does
// for a state it cannot use.
type rejectingCC struct {
	*recordingCC
	reject atomic.Bool
	gate   chan struct{} // when set, UpdateState waits for it to close
}

func (c *rejectingCC) UpdateState(s resolver.State) error {
	if c.gate != nil {
		<-c.gate
	}
	c.recordingCC.UpdateState(s)
	if c.reject.Load() {
		return errors.New("bad resolver state")
	}
	return nil
}

// ResolveNow is a hint: it re-sends nothing while grpc-go accepted the last
// state (the watch pushes changes), and re-sends a rejected state at most
// once per interval, without blocking the caller.
func TestResolveNowResendsOnlyARejectedStateRateLimited(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	target := core.Target{Name: "greeter"}
	cc := &rejectingCC{recordingCC: newRecordingCC()}
	src, r := scripted(t, ctx, cc, grpcresolver.WithResolveNowInterval(200*time.Millisecond))
	src.Publish(target, coretest.Set(t, endpointAt("a", "10.244.0.2:50051")))
	cc.wait(t, ctx, 1, 0)
	for range 100 {
		r.ResolveNow(resolver.ResolveNowOptions{})
	}
	time.Sleep(100 * time.Millisecond)
	if s, _ := cc.counts(); s != 1 {
		t.Fatalf("%d states after ResolveNow on an accepted state, want 1", s)
	}

	cc.reject.Store(true)
	src.Publish(target, coretest.Set(t, endpointAt("b", "10.244.0.3:50051")))
	cc.wait(t, ctx, 2, 0) // rejected
	// grpc-go calls ResolveNow with its own locks held: it returns while the
	// re-send it started is still inside UpdateState.
	cc.gate = make(chan struct{})
	returned := make(chan struct{})
	go func() { r.ResolveNow(resolver.ResolveNowOptions{}); close(returned) }()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("ResolveNow blocked while UpdateState was busy")
	}
	close(cc.gate)
	cc.wait(t, ctx, 3, 0)
	time.Sleep(200 * time.Millisecond)
	begin := time.Now()
	for time.Since(begin) < 500*time.Millisecond {
		r.ResolveNow(resolver.ResolveNowOptions{}) // grpc-go calls it on every failed connection
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	s, _ := cc.counts()
	// 500 ms of calls, one re-send per 200 ms: 2 or 3 (the first at once).
	if resent := s - 3; resent < 2 || resent > 3 {
		t.Fatalf("rejected state re-sent %d times in 500 ms at most once per 200 ms, want 2-3", resent)
	}
	cc.mu.Lock()
	last := cc.states[len(cc.states)-1]
	cc.mu.Unlock()
	if len(last.Endpoints) != 1 || last.Endpoints[0].Addresses[0].Addr != "10.244.0.3:50051" {
		t.Fatalf("re-sent %+v, want the rejected state", last)
	}

	// Accepted again: ResolveNow stops re-sending.
	cc.reject.Store(false)
	s0, _ := cc.counts()
	time.Sleep(250 * time.Millisecond)
	r.ResolveNow(resolver.ResolveNowOptions{}) // re-sent and accepted
	for s, _ = cc.counts(); s <= s0; s, _ = cc.counts() {
		select {
		case <-cc.changed:
		case <-ctx.Done():
			t.Fatal("the rejected state was not re-sent")
		}
	}
	time.Sleep(250 * time.Millisecond) // re-sends in flight land
	s, _ = cc.counts()
	for range 3 {
		time.Sleep(250 * time.Millisecond)
		r.ResolveNow(resolver.ResolveNowOptions{})
	}
	time.Sleep(50 * time.Millisecond)
	if s2, _ := cc.counts(); s2 != s {
		t.Fatalf("%d more states after the state was accepted, want 0", s2-s)
	}
}

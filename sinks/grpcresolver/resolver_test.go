package grpcresolver_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/disco-lb/disco/sinks/grpcresolver/grpctest"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/grpcresolver"
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

// server is grpctest's test service: it answers with its name and counts
// the calls it served.
type server = grpctest.Server

// serveOn runs a gRPC test server on ln until the test ends.
func serveOn(t testing.TB, ln net.Listener, name string, opts ...grpc.ServerOption) (*server, *grpc.Server) {
	t.Helper()
	return grpctest.Serve(t, ln, name, opts...)
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

// staticBuilder returns a builder for scheme "static" over a hub of src,
// reading targets with staticParser; both are closed when the test ends.
func staticBuilder(t testing.TB, src core.Source, opts ...grpcresolver.Option) *grpcresolver.Builder {
	t.Helper()
	hub := coretest.Hub(t, src)
	t.Cleanup(func() { hub.Close() })
	b := must(grpcresolver.New("static", hub, append([]grpcresolver.Option{grpcresolver.WithTargetParser(staticParser)}, opts...)...))
	t.Cleanup(func() { b.Close() })
	return b
}

func dial(t testing.TB, target string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	return grpctest.Dial(t, target, opts...)
}

func TestBalancesAcrossEveryEndpointAndFollowsChanges(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	var eps []*core.Endpoint
	for i := range 3 {
		s, addr := loopbackServer(t, fmt.Sprint("s", i))
		eps = append(eps, endpointAt(s.Name, addr))
	}
	target := core.Target{Name: "greeter"}
	src := coretest.NewStatic(map[core.Target]core.Set{target: coretest.Set(t, eps[:2]...)})
	b := staticBuilder(t, src)
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
	b := staticBuilder(t, coretest.NewStatic(nil)) // knows no target: ErrNotFound
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
	b := staticBuilder(t, coretest.NewStatic(nil))
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

// expect fails unless exactly states states and errs errors were sent.
func (c *recordingCC) expect(t *testing.T, states, errs int) {
	t.Helper()
	if s, e := c.counts(); s != states || e != errs {
		t.Fatalf("%d states and %d errors, want %d and %d", s, e, states, errs)
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
// over a scripted source, sending to cc, inside a synctest bubble, and waits
// until its watch runs.
func scripted(t *testing.T, cc resolver.ClientConn, opts ...grpcresolver.Option) (*coretest.Script, resolver.Resolver) {
	t.Helper()
	src := coretest.NewScript()
	b := staticBuilder(t, src, opts...)
	r := build(t, b, "static:///greeter", cc)
	synctest.Wait()
	return src, r
}

func TestWhatTheResolverSends(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := core.Target{Name: "greeter"}
		cc := newRecordingCC()
		src, _ := scripted(t, cc)

		// Before the first sync: a failure is reported (calls fail fast
		// with its reason), and no state is sent.
		src.Fail(target, errors.New("connection refused"))
		synctest.Wait()
		cc.expect(t, 0, 1)

		// Dual stack: one endpoint with both addresses; attributes carried.
		dual := &core.Endpoint{ID: "a", Name: "greeter-a", Addresses: []string{"10.244.0.2", "fd00::2"}, Port: 50051,
			Zone: "zone-a", Node: "node-1", ZoneHints: []string{"zone-a"}, Weight: 3}
		notReady := &core.Endpoint{ID: "b", Addresses: []string{"10.244.0.3"}, Port: 50051, Conditions: core.Conditions{Ready: new(false)}}
		src.Publish(target, coretest.Set(t, dual, notReady))
		synctest.Wait()
		cc.expect(t, 1, 1)
		st := cc.states[0]
		if len(st.Endpoints) != 1 || len(st.Endpoints[0].Addresses) != 2 || st.Endpoints[0].Addresses[1].Addr != "[fd00::2]:50051" || len(st.Addresses) != 0 {
			t.Fatalf("state = %+v; want the ready dual-stack endpoint only, with both addresses (Endpoints only: State.Addresses is deprecated)", st)
		}
		info, ok := grpcresolver.InfoOf(st.Endpoints[0].Attributes)
		if !ok || info.Name != "greeter-a" || info.Zone != "zone-a" || info.Node != "node-1" || info.Weight != 3 || info.ZoneHints[0] != "zone-a" {
			t.Fatalf("info = %+v", info)
		}
		if a, ok := grpcresolver.InfoOf(st.Endpoints[0].Addresses[1].Attributes); !ok || a.ID != "a" {
			t.Fatalf("address info = %+v", a)
		}
		if e, ok := grpcresolver.EndpointOf(st.Endpoints[0].Attributes); !ok || e != dual {
			t.Fatalf("EndpointOf = %v, %v", e, ok)
		}

		// A change to a non-routable endpoint, or staleness, changes nothing sent.
		notReady2 := *notReady
		notReady2.Zone = "zone-b"
		src.Publish(target, coretest.Set(t, dual, &notReady2))
		src.Fail(target, errors.New("watch broken"))
		synctest.Wait()
		cc.expect(t, 1, 1)

		// Scale to zero is a real, empty state.
		src.Publish(target, core.Set{})
		synctest.Wait()
		cc.expect(t, 2, 1)
		if n := len(cc.states[1].Endpoints); n != 0 {
			t.Fatalf("scale to zero sent %d endpoints", n)
		}

		// A synced target whose Service disappears: the error is reported,
		// once.
		src.Fail(target, fmt.Errorf("service demo/greeter not found: %w", core.ErrNotFound))
		synctest.Wait()
		src.Fail(target, fmt.Errorf("service demo/greeter not found: %w", core.ErrNotFound))
		synctest.Wait()
		cc.expect(t, 2, 2)
		if err := cc.errs[1]; !errors.Is(err, core.ErrNotFound) || !strings.Contains(err.Error(), "service demo/greeter not found") {
			t.Fatalf("reported %v", err)
		}
		// Back: the same (empty) state is sent again after an error.
		src.Publish(target, core.Set{})
		synctest.Wait()
		cc.expect(t, 3, 2)
	})
}

func TestResolversShareAWatchAndCloseReleasesIt(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	target := core.Target{Name: "greeter"}
	src := coretest.NewScript()
	b := staticBuilder(t, src)
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

// Every target form of core.ServiceSyntax (kubernetes.ParseTarget's),
// written as users write it in grpc.NewClient, reaches the service it
// names.
func TestKubernetesTargetFormsThroughNewClient(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	s, addr := loopbackServer(t, "greeter-0")
	set := coretest.Set(t, endpointAt(s.Name, addr))
	src := coretest.NewStatic(map[core.Target]core.Set{
		{Namespace: "demo", Name: "greeter", Port: "grpc"}:  set,
		{Namespace: "demo", Name: "greeter", Port: "50051"}: set,
		{Name: "greeter", Port: "grpc"}:                     set, // no namespace: the source's default
	})
	hub := coretest.Hub(t, src)
	defer hub.Close()
	b := must(grpcresolver.New("kubernetes", hub)) // core.ParseTarget by default
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
	synctest.Test(t, func(t *testing.T) {
		target := core.Target{Name: "greeter"}
		cc := &slowCC{recordingCC: newRecordingCC(), entered: make(chan struct{}, 100), release: make(chan struct{})}
		src, _ := scripted(t, cc)
		ep := func(i int) *core.Endpoint {
			return &core.Endpoint{ID: fmt.Sprint(i), Addresses: []string{fmt.Sprintf("10.244.0.%d", i)}, Port: 50051}
		}
		src.Publish(target, coretest.Set(t, ep(1)))
		synctest.Wait()
		<-cc.entered // the first UpdateState is in grpc-go, busy
		var eps []*core.Endpoint
		for i := 2; i <= 101; i++ {
			eps = append(eps, ep(i))
			src.Publish(target, coretest.Set(t, eps...))
		}
		synctest.Wait() // every state reached the resolver while grpc-go was busy
		close(cc.release)
		synctest.Wait()
		cc.expect(t, 2, 0)
		got := map[string]bool{}
		for _, e := range cc.states[1].Endpoints {
			got[e.Addresses[0].Addr] = true
		}
		if len(got) != 100 || got["10.244.0.1:50051"] || !got["10.244.0.101:50051"] {
			t.Fatalf("second state has %d endpoints, want the newest set: .2 to .101", len(got))
		}
	})
}

// rejectingCC refuses empty states, as grpc-go's round_robin does (no
// address: ErrBadResolverState), and can hold one UpdateState in a gate.
type rejectingCC struct {
	*recordingCC
	mu     sync.Mutex
	gateAt int           // UpdateState number (1-based) to hold; 0: none
	gate   chan struct{} // closed to let it through
	calls  int
}

func (c *rejectingCC) UpdateState(s resolver.State) error {
	c.mu.Lock()
	c.calls++
	hold := c.calls == c.gateAt
	c.mu.Unlock()
	if hold {
		<-c.gate
	}
	c.recordingCC.UpdateState(s)
	if len(s.Endpoints) == 0 {
		return errors.New("bad resolver state: no address")
	}
	return nil
}

// ResolveNow is a hint: it re-sends nothing while grpc-go accepted the last
// state (the watch pushes changes), and re-sends a rejected state at most
// once per interval, without blocking the caller.
func TestResolveNowResendsOnlyARejectedStateRateLimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := core.Target{Name: "greeter"}
		cc := &rejectingCC{recordingCC: newRecordingCC()}
		src, r := scripted(t, cc, grpcresolver.WithResolveNowInterval(200*time.Millisecond))
		src.Publish(target, coretest.Set(t, endpointAt("a", "10.244.0.2:50051")))
		synctest.Wait()
		for range 100 {
			r.ResolveNow(resolver.ResolveNowOptions{})
		}
		synctest.Wait()
		cc.expect(t, 1, 0) // accepted: nothing re-sent

		src.Publish(target, core.Set{}) // rejected by grpc-go
		synctest.Wait()
		cc.expect(t, 2, 0)
		// grpc-go calls ResolveNow with its own locks held: it returns while
		// the re-send is still inside UpdateState.
		cc.mu.Lock()
		cc.gateAt, cc.gate = 3, make(chan struct{})
		cc.mu.Unlock()
		time.Sleep(time.Second)
		r.ResolveNow(resolver.ResolveNowOptions{}) // returns: we are here
		synctest.Wait()
		close(cc.gate)
		synctest.Wait()
		cc.expect(t, 3, 0)
		// grpc-go calls it on every failed connection: 1 s of calls, one
		// re-send per 200 ms.
		time.Sleep(time.Second)
		for range 1000 {
			r.ResolveNow(resolver.ResolveNowOptions{})
			time.Sleep(time.Millisecond)
		}
		synctest.Wait()
		cc.expect(t, 3+5, 0)
		if last := cc.states[len(cc.states)-1]; len(last.Endpoints) != 0 {
			t.Fatalf("re-sent %+v, want the rejected state", last)
		}
		// Accepted again: ResolveNow stops re-sending.
		src.Publish(target, coretest.Set(t, endpointAt("b", "10.244.0.3:50051")))
		synctest.Wait()
		for range 5 {
			time.Sleep(time.Second)
			r.ResolveNow(resolver.ResolveNowOptions{})
		}
		synctest.Wait()
		cc.expect(t, 9, 0)
	})
}

// A re-send that ResolveNow asked for never overtakes a newer state: after
// a scale to zero (rejected) and back, grpc-go ends with the endpoints.
func TestResolveNowNeverOvertakesANewerState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := core.Target{Name: "greeter"}
		cc := &rejectingCC{recordingCC: newRecordingCC(), gateAt: 3, gate: make(chan struct{})}
		src, r := scripted(t, cc, grpcresolver.WithResolveNowInterval(time.Millisecond))
		a := coretest.Set(t, endpointAt("a", "10.244.0.2:50051"))
		src.Publish(target, a)
		synctest.Wait()
		src.Publish(target, core.Set{}) // scale to zero: rejected
		synctest.Wait()
		time.Sleep(time.Second)
		r.ResolveNow(resolver.ResolveNowOptions{}) // the re-send of the empty state is held in the gate
		synctest.Wait()
		src.Publish(target, a) // back: the newer state
		synctest.Wait()
		close(cc.gate)
		synctest.Wait()
		last := cc.states[len(cc.states)-1]
		if len(last.Endpoints) != 1 {
			t.Fatalf("grpc-go was left with %d endpoints after scale to zero and back (states: %d)", len(last.Endpoints), len(cc.states))
		}
		src.Publish(target, a)
		synctest.Wait()
		if l := cc.states[len(cc.states)-1]; len(l.Endpoints) != 1 {
			t.Fatal("a later identical state was sent wrong")
		}
	})
}

// A synced target that ends with no endpoints and a reason (a deleted
// Service): grpc-go gets no address first (on a resolver error alone it
// keeps the last ones), then the reason.
func TestDeletedTargetSendsNoAddressThenTheReason(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		target := core.Target{Name: "greeter"}
		cc := newRecordingCC()
		src, _ := scripted(t, cc)
		src.Publish(target, coretest.Set(t, endpointAt("a", "10.244.0.2:50051")))
		synctest.Wait()
		cc.expect(t, 1, 0)
		src.PublishStale(target, core.Set{}, fmt.Errorf("service demo/greeter not found: %w", core.ErrNotFound))
		synctest.Wait()
		cc.expect(t, 2, 1)
		if n := len(cc.states[1].Endpoints); n != 0 {
			t.Fatalf("sent %d endpoints for a deleted target", n)
		}
		if !errors.Is(cc.errs[0], core.ErrNotFound) {
			t.Fatalf("reported %v", cc.errs[0])
		}
	})
}

// must returns v, failing loudly on err (a constructor's error in a test).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// grpc-go's random subsetting (gRFC A68) over disco's resolver: a
// ClientConn of a 10-endpoint target calls exactly 3 of them, and when one
// of its 3 goes, exactly 3 again.
func TestRandomSubsettingOverTheResolver(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	var eps []*core.Endpoint
	for i := range 10 {
		s, addr := loopbackServer(t, fmt.Sprint("s", i))
		eps = append(eps, endpointAt(s.Name, addr))
	}
	target := core.Target{Name: "greeter"}
	src := coretest.NewStatic(map[core.Target]core.Set{target: coretest.Set(t, eps...)})
	b := staticBuilder(t, src)
	client := testgrpc.NewTestServiceClient(dial(t, "static:///greeter", grpc.WithResolvers(b),
		grpc.WithDefaultServiceConfig(grpcresolver.ServiceConfig(grpcresolver.RandomSubsetting(3, map[string]any{"round_robin": map[string]any{}})))))
	reached := func(exclude string) map[string]bool {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
			seen := map[string]bool{}
			for range 60 {
				r, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
				if err != nil {
					t.Fatal(err)
				}
				seen[r.ServerId] = true
			}
			if exclude != "" && seen[exclude] {
				continue // the batch straddled the change: the gone one, then its replacement
			}
			if len(seen) > 3 {
				t.Fatalf("calls reached %v, more than a subset of 3", seen)
			}
			if len(seen) == 3 && !seen[exclude] {
				return seen
			}
		}
		t.Fatal("calls never reached 3 endpoints")
		return nil
	}
	first := reached("")
	var gone string
	for s := range first {
		gone = s
		break
	}
	src.Set(target, coretest.Set(t, slices.DeleteFunc(slices.Clone(eps), func(e *core.Endpoint) bool { return e.ID == gone })...))
	second := reached(gone)
	kept := 0
	for s := range second {
		if first[s] {
			kept++
		}
	}
	if kept != 2 {
		t.Fatalf("subsets %v then %v: want the 2 that stayed kept", first, second)
	}
}

package connpool_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
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
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/connpool"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var target = core.Target{Name: "greeter"}

// feed applies successive sets to a pool the way core does: with deltas.
type feed struct {
	t    testing.TB
	sink core.Sink
	prev core.Set
	seq  uint64
}

func (f *feed) set(eps ...*core.Endpoint) {
	f.t.Helper()
	s, err := core.NewSet(eps...)
	if err != nil {
		f.t.Fatal(err)
	}
	base := f.seq
	f.seq++
	if err := f.sink.Accept(context.Background(), core.Update{Target: target, Epoch: "test", Seq: f.seq, BaseSeq: base,
		State: core.State{Endpoints: s, Synced: true}, Delta: core.Diff(f.prev, s)}); err != nil {
		f.t.Fatal(err)
	}
	f.prev = s
}

// server answers UnaryCall with its name; it can hold calls until released.
type server struct {
	testgrpc.UnimplementedTestServiceServer
	name    string
	calls   atomic.Int64
	hold    chan struct{} // non-nil: calls wait on it
	started chan struct{}
}

func (s *server) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.calls.Add(1)
	if s.hold != nil {
		s.started <- struct{}{}
		select {
		case <-s.hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &testgrpc.SimpleResponse{ServerId: s.name}, nil
}

func (s *server) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	s.calls.Add(1)
	for range req.ResponseParameters {
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte(s.name)}}); err != nil {
			return err
		}
	}
	return nil
}

func serve(t testing.TB, ln net.Listener, s *server) {
	gs := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(gs, s)
	done := make(chan struct{})
	go func() { defer close(done); gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-done })
}

func loopback(t testing.TB, name string) (*server, *core.Endpoint) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{name: name}
	serve(t, ln, s)
	return s, &core.Endpoint{ID: name, Addresses: []string{"127.0.0.1"}, Port: uint16(ln.Addr().(*net.TCPAddr).Port)}
}

// countingClose wraps CloseGRPC and counts closes per connection.
type closes struct {
	mu sync.Mutex
	n  map[*grpc.ClientConn]int
}

func (c *closes) close(cc *grpc.ClientConn) error {
	c.mu.Lock()
	c.n[cc]++
	c.mu.Unlock()
	return connpool.CloseGRPC(cc)
}

// waitClosed waits until n connections have been closed.
func (c *closes) waitClosed(t testing.TB, n int, why string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.n)
		c.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections closed: %s", got, n, why)
		}
		time.Sleep(time.Millisecond)
	}
}

func grpcPool(t testing.TB, opts ...connpool.Option) (*connpool.Pool[*grpc.ClientConn], *closes) {
	cl := &closes{n: map[*grpc.ClientConn]int{}}
	p := must(connpool.New(connpool.DialGRPC(2*time.Second, grpc.WithTransportCredentials(insecure.NewCredentials())), cl.close, opts...))
	t.Cleanup(func() { p.Close() })
	return p, cl
}

// servedPool returns a gRPC pool fed with n loopback servers, all pickable.
func servedPool(t *testing.T, n int) (*connpool.Pool[*grpc.ClientConn], *closes, *feed, []*server) {
	t.Helper()
	p, cl := grpcPool(t)
	f := &feed{t: t, sink: p}
	var eps []*core.Endpoint
	var servers []*server
	for i := range n {
		s, e := loopback(t, fmt.Sprint("s", i))
		servers, eps = append(servers, s), append(eps, e)
	}
	f.set(eps...)
	for p.Len() < n {
		time.Sleep(5 * time.Millisecond)
	}
	return p, cl, f, servers
}

func TestChannelBalancesAcrossEndpoints(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	p, _, _, servers := servedPool(t, 3)
	client := testgrpc.NewTestServiceClient(must(connpool.NewChannel(p)))
	for range 600 {
		if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range servers {
		if n := s.calls.Load(); n < 100 {
			t.Fatalf("server %s got %d of 600 calls", s.name, n)
		}
	}
}

// A removed endpoint gets no new call at once; its calls in flight complete;
// its connection closes once, after them.
func TestRemovalDuringInFlightCalls(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	p, cl := grpcPool(t)
	f := &feed{t: t, sink: p}
	a, ea := loopback(t, "a")
	a.hold, a.started = make(chan struct{}), make(chan struct{}, 10)
	b, eb := loopback(t, "b")
	f.set(ea)
	client := testgrpc.NewTestServiceClient(must(connpool.NewChannel(p)))
	errs := make(chan error, 5)
	for range 5 {
		go func() {
			r, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
			if err == nil && r.ServerId != "a" {
				err = fmt.Errorf("answered by %s", r.ServerId)
			}
			errs <- err
		}()
	}
	for range 5 {
		<-a.started // five calls in flight on a
	}
	f.set(eb) // a goes, b comes
	for p.Len() < 1 {
		time.Sleep(time.Millisecond)
	}
	for range 20 {
		r, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		if err != nil || r.ServerId != "b" {
			t.Fatalf("new call after removal: %v %v", r, err)
		}
	}
	cl.mu.Lock()
	closedEarly := len(cl.n)
	cl.mu.Unlock()
	if closedEarly != 0 {
		t.Fatal("a's connection closed while its calls were in flight")
	}
	close(a.hold)
	for range 5 {
		if err := <-errs; err != nil {
			t.Fatalf("in-flight call on the removed endpoint: %v", err)
		}
	}
	cl.waitClosed(t, 1, "a's connection never closed after its calls ended")
	if b.calls.Load() != 20 || a.calls.Load() != 5 {
		t.Fatalf("calls: a %d b %d", a.calls.Load(), b.calls.Load())
	}
}

// An endpoint nobody listens on is retried with backoff and unavailable
// meanwhile; once its server starts, it is picked.
func TestDialFailureAndRecovery(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	ln.Close() // nothing listens there now
	cl := &closes{n: map[*grpc.ClientConn]int{}}
	p := must(connpool.New(connpool.DialGRPC(200*time.Millisecond, grpc.WithTransportCredentials(insecure.NewCredentials())), cl.close,
		connpool.WithBackoff(50*time.Millisecond, 200*time.Millisecond)))
	defer p.Close()
	f := &feed{t: t, sink: p}
	f.set(&core.Endpoint{ID: "late", Addresses: []string{"127.0.0.1"}, Port: uint16(addr.Port)})
	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err = p.Pick(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Pick with an unreachable endpoint = %v, want the context's deadline", err)
	}
	ln, err = net.Listen("tcp", addr.String())
	if err != nil {
		t.Skipf("port taken meanwhile: %v", err)
	}
	serve(t, ln, &server{name: "late"})
	h, err := p.Pick(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h.Done()
}

func TestPickWaitsForFirstEndpointAndRespectsContext(t *testing.T) {
	p := must(connpool.New(func(context.Context, *core.Endpoint) (int, error) { return 1, nil }, func(int) error { return nil }))
	defer p.Close()
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := p.Pick(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Pick on an empty pool = %v", err)
	}
	got := make(chan error, 1)
	go func() {
		h, err := p.Pick(ctxFor(t, 10*time.Second))
		if err == nil {
			h.Done()
		}
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	(&feed{t: t, sink: p}).set(&core.Endpoint{ID: "x", Addresses: []string{"10.0.0.1"}})
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := p.Pick(context.Background()); !errors.Is(err, connpool.ErrClosed) {
		t.Fatalf("Pick after Close = %v", err)
	}
}

func TestZonePreferenceAndTerminatingFallback(t *testing.T) {
	p := must(connpool.New(func(_ context.Context, e *core.Endpoint) (string, error) { return e.ID, nil }, func(string) error { return nil },
		connpool.WithZone("zone-a", 1), connpool.WithPolicy(connpool.RoundRobin)))
	defer p.Close()
	f := &feed{t: t, sink: p}
	f2, tr := new(false), new(true)
	a := &core.Endpoint{ID: "a", Addresses: []string{"1"}, Zone: "zone-a"}
	b := &core.Endpoint{ID: "b", Addresses: []string{"2"}, Zone: "zone-b"}
	aDraining := &core.Endpoint{ID: "a", Addresses: []string{"1"}, Zone: "zone-a", Conditions: core.Conditions{Ready: f2, Serving: tr, Terminating: tr}}
	bDraining := &core.Endpoint{ID: "b", Addresses: []string{"2"}, Zone: "zone-b", Conditions: core.Conditions{Ready: f2, Serving: tr, Terminating: tr}}
	picks := func() map[string]int {
		m := map[string]int{}
		ctx := ctxFor(t, 5*time.Second)
		for range 20 {
			h, err := p.Pick(ctx)
			if err != nil {
				t.Fatal(err)
			}
			m[h.Conn]++
			h.Done()
		}
		return m
	}
	waitLen := func(n int) {
		for p.Len() != n {
			time.Sleep(time.Millisecond)
		}
	}
	f.set(a, b)
	waitLen(2)
	if m := picks(); m["a"] != 20 {
		t.Fatalf("zone-a client picked %v, want zone-a only", m)
	}
	f.set(aDraining, b) // zone a has no ready endpoint: every zone
	waitLen(1)
	if m := picks(); m["b"] != 20 {
		t.Fatalf("picked %v, want b (the only ready one)", m)
	}
	f.set(aDraining, bDraining) // none ready: the draining ones
	waitLen(2)
	if m := picks(); m["a"]+m["b"] != 20 || m["a"] == 0 || m["b"] == 0 {
		t.Fatalf("picked %v, want both draining endpoints", m)
	}
}

// Many goroutines pick while endpoints churn: no pick ever returns a closed
// connection, and every connection is closed exactly once.
func TestRacePickersWhileEndpointsChurn(t *testing.T) {
	type conn struct {
		id     int
		closed atomic.Bool
		uses   atomic.Int64
	}
	var mu sync.Mutex
	var all []*conn
	var closes sync.Map
	var nextID atomic.Int64
	p := must(connpool.New(func(_ context.Context, e *core.Endpoint) (*conn, error) {
		if rand.IntN(10) == 0 {
			return nil, errors.New("flaky build")
		}
		c := &conn{id: int(nextID.Add(1))}
		mu.Lock()
		all = append(all, c)
		mu.Unlock()
		return c, nil
	}, func(c *conn) error {
		if n, _ := closes.LoadOrStore(c.id, new(atomic.Int64)); n.(*atomic.Int64).Add(1) > 1 {
			t.Errorf("connection %d closed twice", c.id)
		}
		if c.uses.Load() != 0 {
			t.Errorf("connection %d closed with %d calls in flight", c.id, c.uses.Load())
		}
		c.closed.Store(true)
		return nil
	}, connpool.WithBackoff(time.Millisecond, 5*time.Millisecond), connpool.WithConnsPerEndpoint(2), connpool.WithDrainTimeout(time.Minute)))
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	var picks atomic.Int64
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				h, err := p.Pick(ctx)
				if err != nil {
					continue
				}
				if h.Conn.closed.Load() {
					t.Error("picked a closed connection")
				}
				h.Conn.uses.Add(1)
				time.Sleep(time.Duration(rand.IntN(50)) * time.Microsecond)
				h.Conn.uses.Add(-1)
				h.Done()
				picks.Add(1)
			}
		})
	}
	f := &feed{t: t, sink: p}
	for ctx.Err() == nil {
		var eps []*core.Endpoint
		for i := range 20 {
			if rand.IntN(3) == 0 {
				continue
			}
			e := &core.Endpoint{ID: fmt.Sprint("e", i), Addresses: []string{fmt.Sprintf("10.0.0.%d", i+1)}}
			switch rand.IntN(4) {
			case 0:
				e.Conditions.Ready = new(false)
			case 1:
				e.Conditions = core.Conditions{Ready: new(false), Serving: new(true), Terminating: new(true)}
			case 2:
				e.Addresses = []string{fmt.Sprintf("10.0.1.%d", i+1)} // new address: new connection
			}
			eps = append(eps, e)
		}
		f.set(eps...)
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	p.Close()
	mu.Lock()
	defer mu.Unlock()
	for _, c := range all {
		if !c.closed.Load() {
			t.Fatalf("connection %d not closed by Close", c.id)
		}
	}
	t.Logf("%d picks, %d connections built and closed", picks.Load(), len(all))
}

// Power-of-two-choices at steady state: 6 real servers, 12,000 calls from 50
// callers; the busiest server gets at most 1.2x the calls of the least busy.
func TestDistributionAtSteadyState(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	p, _, _, servers := servedPool(t, 6)
	client := testgrpc.NewTestServiceClient(must(connpool.NewChannel(p)))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for next.Add(1) <= 12000 {
				if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	lo, hi := int64(1<<62), int64(0)
	var counts []int64
	for _, s := range servers {
		n := s.calls.Load()
		counts = append(counts, n)
		lo, hi = min(lo, n), max(hi, n)
	}
	ratio := float64(hi) / float64(lo)
	t.Logf("power of two choices, 6 servers, 12000 calls: %v, busiest/least busy = %.3f", counts, ratio)
	if ratio > 1.2 {
		t.Fatalf("distribution %v: ratio %.3f > 1.2", counts, ratio)
	}
}

// A stream stays on the connection it started on, and releases it when it
// finishes: removing its endpoint afterwards closes the connection at once.
func TestStreamsStayOnTheirConnection(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	p, cl, f, _ := servedPool(t, 2)
	client := testgrpc.NewTestServiceClient(must(connpool.NewChannel(p)))
	for range 10 {
		stream, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: make([]*testgrpc.ResponseParameters, 20)})
		if err != nil {
			t.Fatal(err)
		}
		var from []string
		for {
			r, err := stream.Recv()
			if err != nil {
				break
			}
			from = append(from, string(r.Payload.Body))
		}
		if len(from) != 20 {
			t.Fatalf("%d messages", len(from))
		}
		for _, s := range from {
			if s != from[0] {
				t.Fatalf("one stream answered by %v", from)
			}
		}
	}
	f.set() // both go; no call in flight: both connections close now
	cl.waitClosed(t, 2, "a finished stream did not release its connection")
}

// Close closes every connection, those draining calls in flight included,
// and no drain timer fires afterwards.
func TestCloseClosesDrainingConnections(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	p, cl := grpcPool(t, connpool.WithDrainTimeout(time.Hour))
	f := &feed{t: t, sink: p}
	a, ea := loopback(t, "a")
	a.hold, a.started = make(chan struct{}), make(chan struct{}, 1)
	_, eb := loopback(t, "b")
	f.set(ea, eb)
	for p.Len() < 2 {
		time.Sleep(time.Millisecond)
	}
	var h connpool.Handle[*grpc.ClientConn]
	for { // hold a handle on a: its connection drains when a is removed
		var err error
		if h, err = p.Pick(ctx); err != nil {
			t.Fatal(err)
		}
		if h.Endpoint().ID == "a" {
			break
		}
		h.Done()
	}
	f.set(eb)
	p.Close()
	cl.waitClosed(t, 2, "Close left a draining connection open")
	h.Done() // the call ends after Close: nothing is closed twice
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for cc, n := range cl.n {
		if n != 1 {
			t.Fatalf("connection %p closed %d times", cc, n)
		}
	}
}

// The user's close function runs outside the pool's lock: a slow close
// blocks no other update of the pool, and a close that calls back into the
// pool does not deadlock.
func TestCloseFuncRunsOutsideTheLock(t *testing.T) {
	release := make(chan struct{})
	other := core.Target{Name: "other"}
	var p *connpool.Pool[string]
	reentered := make(chan struct{})
	p = must(connpool.New(func(_ context.Context, e *core.Endpoint) (string, error) { return e.ID, nil },
		func(c string) error {
			if c == "slow" {
				// Re-entrant: an update of another target takes the pool's lock.
				if err := p.Accept(context.Background(), core.Update{Target: other, Seq: 1, State: core.State{Synced: true}}); err != nil {
					t.Error(err)
				}
				close(reentered)
				<-release
			}
			return nil
		}))
	defer p.Close()
	f := &feed{t: t, sink: p}
	slow := &core.Endpoint{ID: "slow", Addresses: []string{"10.0.0.1"}}
	fast := &core.Endpoint{ID: "fast", Addresses: []string{"10.0.0.2"}}
	f.set(slow, fast)
	for p.Len() < 2 {
		time.Sleep(time.Millisecond)
	}
	removed := make(chan struct{})
	go func() { f.set(fast); close(removed) }() // closes slow: blocks in the user's close
	select {
	case <-reentered:
	case <-time.After(10 * time.Second):
		t.Fatal("the close function could not call back into the pool")
	}
	added := make(chan struct{})
	go func() { // another update goes through while the close blocks
		n := coretest.Set(t, &core.Endpoint{ID: "new", Addresses: []string{"10.0.0.3"}})
		p.Accept(context.Background(), core.Update{Target: other, Seq: 2, State: core.State{Endpoints: n, Synced: true}, Delta: core.Diff(core.Set{}, n)})
		close(added)
	}()
	select {
	case <-added:
	case <-time.After(10 * time.Second):
		t.Fatal("an update waited for the user's close function")
	}
	close(release)
	<-removed
}

// NewStream never writes into the caller's call options.
func TestNewStreamLeavesTheCallersOptionsAlone(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	p, _, _, _ := servedPool(t, 1)
	ch := must(connpool.NewChannel(p))
	backing := make([]grpc.CallOption, 1, 4)
	backing[0] = grpc.WaitForReady(true)
	sentinel := grpc.MaxCallRecvMsgSize(123)
	backing = append(backing, sentinel)[:1] // spare capacity holding a value of ours
	s, err := ch.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/grpc.testing.TestService/StreamingOutputCall", backing...)
	if err != nil {
		t.Fatal(err)
	}
	if got := backing[:2][1]; got != sentinel {
		t.Fatal("NewStream appended into the caller's array")
	}
	s.CloseSend()
	for s.RecvMsg(&testgrpc.StreamingOutputCallResponse{}) == nil {
	}
}

// poolHarness runs core's sink conformance suite against a pool whose
// connections are the endpoints' host:ports. The pool balances over every
// target it is fed, so Observe sees them all: the several-targets check is
// TestOnePoolServesSeveralTargets.
type poolHarness struct{}

func (poolHarness) NewSink(t *testing.T) core.Sink {
	p := must(connpool.New(func(_ context.Context, e *core.Endpoint) (string, error) { return e.HostPort(), nil },
		func(string) error { return nil }))
	t.Cleanup(func() { p.Close() })
	return p
}

func (poolHarness) Observe(t *testing.T, s core.Sink, _ core.Target) []string {
	var out []string
	for _, e := range s.(*connpool.Pool[string]).Endpoints() {
		out = append(out, e.HostPorts()...)
	}
	return out
}
func (poolHarness) Routes() bool           { return true }
func (poolHarness) MultiTarget() bool      { return false }
func (poolHarness) Timeout() time.Duration { return 5 * time.Second }

func TestPoolPassesTheSinkSuite(t *testing.T) { coretest.TestSink(t, poolHarness{}) }

// One pool fed two targets balances over both; emptying one (even by an
// update from nothing) leaves the other's endpoints, including one with the
// same ID.
func TestOnePoolServesSeveralTargets(t *testing.T) {
	p := must(connpool.New(func(_ context.Context, e *core.Endpoint) (string, error) { return e.HostPort(), nil },
		func(string) error { return nil }))
	defer p.Close()
	one, two := core.Target{Name: "one"}, core.Target{Name: "two"}
	a1 := &core.Endpoint{ID: "a", Addresses: []string{"10.0.1.1"}}
	a2 := &core.Endpoint{ID: "a", Addresses: []string{"10.0.2.1"}}
	b2 := &core.Endpoint{ID: "b", Addresses: []string{"10.0.2.2"}}
	send := func(tg core.Target, seq, base uint64, prev, next core.Set) {
		if err := p.Accept(context.Background(), core.Update{Target: tg, Seq: seq, BaseSeq: base,
			State: core.State{Endpoints: next, Synced: true}, Delta: core.Diff(prev, next)}); err != nil {
			t.Fatal(err)
		}
	}
	hosts := func(want int) string {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			var hs []string
			for _, e := range p.Endpoints() {
				hs = append(hs, e.Addresses[0])
			}
			slices.Sort(hs)
			if len(hs) == want || time.Now().After(deadline) {
				return strings.Join(hs, ",")
			}
		}
	}
	s1, s2 := coretest.Set(t, a1), coretest.Set(t, a2, b2)
	send(one, 1, 0, core.Set{}, s1)
	send(two, 1, 0, core.Set{}, s2)
	if got := hosts(3); got != "10.0.1.1,10.0.2.1,10.0.2.2" {
		t.Fatalf("endpoints %s, want both targets'", got)
	}
	send(one, 2, 0, core.Set{}, core.Set{}) // from nothing: target one is empty
	if got := hosts(2); got != "10.0.2.1,10.0.2.2" {
		t.Fatalf("endpoints %s, want target two's untouched", got)
	}
}

// unavailableServer answers every call with UNAVAILABLE, after sending
// headers if committed is set.
type unavailableServer struct {
	testgrpc.UnimplementedTestServiceServer
	committed bool
	calls     atomic.Int64
}

func (s *unavailableServer) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.calls.Add(1)
	if s.committed {
		grpc.SendHeader(ctx, metadata.Pairs("x-started", "1"))
	}
	return nil, status.Error(codes.Unavailable, "shutting down")
}

// A unary call that fails with UNAVAILABLE is retried on another endpoint,
// also when the server had begun to answer (headers sent); without
// WithRetry nothing is retried.
func TestChannelRetriesUnavailableElsewhere(t *testing.T) {
	ctx := ctxFor(t, time.Minute)
	for _, tc := range []struct {
		name      string
		committed bool
		retry     bool
		wantFail  bool
	}{
		{name: "not committed, retried", retry: true},
		{name: "headers sent, retried", committed: true, retry: true},
		{name: "no retry configured", wantFail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := grpcPool(t, connpool.WithPolicy(connpool.RoundRobin))
			f := &feed{t: t, sink: p}
			bad := &unavailableServer{committed: tc.committed}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			gs := grpc.NewServer()
			testgrpc.RegisterTestServiceServer(gs, bad)
			go gs.Serve(ln)
			t.Cleanup(gs.Stop)
			_, good := loopback(t, "good")
			f.set(&core.Endpoint{ID: "bad", Addresses: []string{"127.0.0.1"}, Port: uint16(ln.Addr().(*net.TCPAddr).Port)}, good)
			for p.Len() < 2 {
				time.Sleep(time.Millisecond)
			}
			var opts []connpool.ChannelOption
			if tc.retry {
				opts = append(opts, connpool.WithRetry(connpool.RecommendedRetry))
			}
			client := testgrpc.NewTestServiceClient(must(connpool.NewChannel(p, opts...)))
			failed := 0
			for range 20 {
				if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
					failed++
				}
			}
			if (failed > 0) != tc.wantFail || bad.calls.Load() == 0 {
				t.Fatalf("%d of 20 calls failed (the bad server had %d), want failures: %v", failed, bad.calls.Load(), tc.wantFail)
			}
		})
	}
}

// must returns v, failing loudly on err (a constructor's error in a test).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

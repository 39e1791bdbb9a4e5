package e2e_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/connpool"
	"github.com/disco-lb/disco/sinks/grpcresolver"
)

// Any source behind any sink: the same rollout, driven through DNS records
// or a file instead of EndpointSlices, must fail no call through the gRPC
// resolver (under a scheme of the test's choosing) and through the pool.

// backend is a real gRPC test server on a loopback address of its own.
type backend struct {
	name string
	ip   string
	port int
	srv  *server
	gs   *grpc.Server
}

// startBackend serves on ip:port (port 0: any).
func startBackend(t *testing.T, name, ip string, port int) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	srv, gs := serveOn(t, ln, name)
	return &backend{name: name, ip: ip, port: ln.Addr().(*net.TCPAddr).Port, srv: srv, gs: gs}
}

// rollout is a source's side of the test: publish makes the source see
// exactly these backends (DNS records, a file, ...).
type rollout struct {
	hub      *core.Hub
	scheme   string      // the resolver's scheme
	target   string      // what a ClientConn dials, scheme:///...
	poolAt   core.Target // the same target, for the pool
	publish  func(bs []*backend)
	backends func(i int) *backend // the i-th backend (0-based), started
}

// runRollout starts 3 backends, then replaces each by a new one (new one
// in, wait until it serves through both clients, old one out, wait until it
// gets no more calls, stop it gracefully) under 8 callers through the
// resolver and 8 through the pool. No call may fail.
func runRollout(t *testing.T, r rollout) {
	ctx := ctxFor(t, 3*time.Minute)
	live := []*backend{r.backends(0), r.backends(1), r.backends(2)}
	r.publish(live)

	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	b := must(grpcresolver.New(r.scheme, r.hub))
	t.Cleanup(func() { b.Close() })
	cc, err := grpc.NewClient(r.target, append([]grpc.DialOption{creds}, b.DialOptions()...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	pool, ch, err := connpool.Recommended([]grpc.DialOption{creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	sub, err := r.hub.Subscribe("pool", pool, r.poolAt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	clients := map[string]testgrpc.TestServiceClient{"resolver": testgrpc.NewTestServiceClient(cc), "pool": testgrpc.NewTestServiceClient(ch)}

	names := func(bs []*backend) []string {
		var out []string
		for _, b := range bs {
			out = append(out, b.name)
		}
		return out
	}
	for _, c := range clients {
		waitServing(t, ctx, c, names(live)...)
	}
	stops := map[string]func() loadResult{}
	for path, c := range clients {
		stops[path] = startLoad(ctx, c, 8, 200)
	}
	for i := range 3 {
		fresh := r.backends(i + 3)
		live = append(live, fresh)
		r.publish(live)
		for _, c := range clients {
			waitServing(t, ctx, c, fresh.name)
		}
		old := live[0]
		live = live[1:]
		r.publish(live)
		waitUnused(t, ctx, old)
		old.gs.GracefulStop()
	}
	for path, stop := range stops {
		res := stop()
		t.Logf("%s: %d calls, %d failed, per backend %v", path, res.ok+res.failed, res.failed, res.perPod)
		if res.failed > 0 {
			t.Errorf("%s: %d calls failed during the rollout, first: %v", path, res.failed, res.errs)
		}
	}
	for _, c := range clients {
		waitServing(t, ctx, c, names(live)...)
	}
}

// waitUnused waits until b served no call for 500 ms while load runs: both
// clients dropped it.
func waitUnused(t *testing.T, ctx context.Context, b *backend) {
	t.Helper()
	last, since := b.srv.Calls.Load(), time.Now()
	for time.Since(since) < 500*time.Millisecond {
		select {
		case <-ctx.Done():
			t.Fatalf("%s still gets calls after it was removed", b.name)
		case <-time.After(20 * time.Millisecond):
		}
		if n := b.srv.Calls.Load(); n != last {
			last, since = n, time.Now()
		}
	}
}

// loopbackIP is 127.0.0.<n>: every 127/8 address is on lo, so each backend
// has an address of its own, as pods do.
func loopbackIP(n int) string { return fmt.Sprintf("127.0.0.%d", n) }

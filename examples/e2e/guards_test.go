package e2e_test

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/connpool"
	"github.com/disco-lb/disco/sinks/grpcresolver"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

// What a process holds: goroutines, open file descriptors, and the API
// server's watches of endpointslices.
type footprint struct{ goroutines, fds, watches int }

func (c *cluster) footprint(t *testing.T) footprint {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	watches := int(scrapeAPIServer(t, c.cp).sum("apiserver_longrunning_requests", `resource="endpointslices"`, `verb="WATCH"`))
	return footprint{goroutines: runtime.NumGoroutine(), fds: len(fds), watches: watches}
}

// apiMetrics is one scrape of the API server's /metrics: the lines of its
// samples.
type apiMetrics []string

func scrapeAPIServer(tb testing.TB, cp *kubetest.ControlPlane) apiMetrics {
	tb.Helper()
	cs, err := cp.AdminClient()
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	var m apiMetrics
	for _, line := range strings.Split(string(raw), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			m = append(m, line)
		}
	}
	return m
}

// sum adds up the samples of metric that carry every one of labels
// (`verb="WATCH"`).
func (m apiMetrics) sum(metric string, labels ...string) float64 {
	total := 0.0
	for _, line := range m {
		rest, ok := strings.CutPrefix(line, metric)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		matches := true
		for _, l := range labels {
			matches = matches && strings.Contains(rest, l)
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if matches && err == nil {
			total += v
		}
	}
	return total
}

// settles waits until the footprint is back within slack goroutines and
// fds of base, with base's watches exactly.
func (c *cluster) settles(t *testing.T, base footprint, what string) {
	t.Helper()
	var now footprint
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		now = c.footprint(t)
		if now.goroutines <= base.goroutines+5 && now.fds <= base.fds+2 && now.watches == base.watches {
			t.Logf("%s: %+v, baseline %+v", what, now, base)
			return
		}
	}
	t.Fatalf("%s: %+v, baseline %+v: not back", what, now, base)
}

// churnClients opens n clients in batches, makes a call on each, and
// closes them; open makes one and returns its call and its closer.
func churnClients(t *testing.T, n int, open func() (func(context.Context) error, func())) {
	t.Helper()
	ctx := ctxFor(t, 5*time.Minute)
	for done := 0; done < n; done += 100 {
		var wg sync.WaitGroup
		closers := make([]func(), 100)
		errs := make(chan error, 100)
		for i := range 100 {
			call, closer := open()
			closers[i] = closer
			wg.Go(func() { errs <- call(ctx) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range closers {
			c()
		}
	}
}

// leavesNothing warms up with 100 clients made by open (lazily started
// goroutines, connection pools), then churns 1,000 and checks that
// goroutines, file descriptors and watches come back to where they were.
func (c *cluster) leavesNothing(t *testing.T, open func() (func(context.Context) error, func()), what string) {
	t.Helper()
	before := c.footprint(t) // no watch of our own yet
	churnClients(t, 100, open)
	c.settles(t, footprint{goroutines: 1 << 20, fds: 1 << 20, watches: before.watches}, "after the warm-up")
	base := c.footprint(t)
	churnClients(t, 1000, open)
	c.settles(t, base, "after 1,000 "+what)
}

// 1,000 ClientConns opened, used and closed through the resolver on one
// hub: goroutines, file descriptors and API server watches come back to
// where they were.
func TestThousandClientConnsLeaveNothing(t *testing.T) {
	c := newCluster(t, 1)
	c.startReady("greeter", 0, 2, "")
	src, err := kubernetes.New(c.cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	hub := coretest.Hub(t, src)
	defer hub.Close()
	b := must(grpcresolver.NewKubernetes(hub))
	defer b.Close()
	open := func() (func(context.Context) error, func()) {
		cc, err := grpc.NewClient("kubernetes:///greeter.demo:grpc",
			append(b.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		call := func(ctx context.Context) error {
			_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
			return err
		}
		return call, func() { cc.Close() }
	}
	c.leavesNothing(t, open, "ClientConns")
}

// 1,000 pools built, subscribed, used and closed: the same.
func TestThousandPoolsLeaveNothing(t *testing.T) {
	c := newCluster(t, 1)
	c.startReady("greeter", 0, 2, "")
	src, err := kubernetes.New(c.cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	hub := coretest.Hub(t, src)
	defer hub.Close()
	target := core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}
	open := func() (func(context.Context) error, func()) {
		pool, ch, err := connpool.Recommended([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())})
		if err != nil {
			t.Fatal(err)
		}
		sub, err := hub.Subscribe("pool", pool, target)
		if err != nil {
			t.Fatal(err)
		}
		call := func(ctx context.Context) error {
			_, err := testgrpc.NewTestServiceClient(ch).UnaryCall(ctx, &testgrpc.SimpleRequest{})
			return err
		}
		return call, func() { sub.Close(); pool.Close() }
	}
	c.leavesNothing(t, open, "pools")
}

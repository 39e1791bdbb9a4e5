// Package e2e_test holds disco's end-to-end tests: a real kube-apiserver
// (kubetest), real pods (network namespaces with their own 10.244.x.y
// addresses running gRPC servers) and a client balancing across them through
// the gRPC resolver or the connection pool, in one process or as a user's
// separate program. They live in the examples module because they combine
// modules that do not depend on each other; the product modules keep only
// their unit tests.
package e2e_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
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

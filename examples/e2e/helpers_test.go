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
	"os"
	"testing"
	"time"

	"github.com/disco-lb/disco/sinks/grpcresolver/grpctest"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

func TestMain(m *testing.M) {
	if target := os.Getenv(goXDSClientEnv); target != "" {
		os.Exit(goXDSClient(target))
	}
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
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

func dial(t testing.TB, target string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	return grpctest.Dial(t, target, opts...)
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

// must returns v, failing loudly on err (a constructor's error in a test).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

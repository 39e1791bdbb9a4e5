// Package grpctest holds the gRPC test server that disco's resolver tests
// and end-to-end tests share: a test service that answers with its name
// and counts the calls it served, run until the test ends.
package grpctest

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// Server is a test service that answers UnaryCall with its name (as
// ServerId and Hostname) and counts the calls it served.
type Server struct {
	testgrpc.UnimplementedTestServiceServer
	Name  string
	Calls atomic.Int64
	First atomic.Int64 // unix nanos of the first call
}

// UnaryCall answers with the server's name.
func (s *Server) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.First.CompareAndSwap(0, time.Now().UnixNano())
	s.Calls.Add(1)
	return &testgrpc.SimpleResponse{ServerId: s.Name, Hostname: s.Name}, nil
}

// Serve runs a test server named name on ln until the test ends.
func Serve(tb testing.TB, ln net.Listener, name string, opts ...grpc.ServerOption) (*Server, *grpc.Server) {
	tb.Helper()
	s := &Server{Name: name}
	gs := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(gs, s)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(ln) }()
	tb.Cleanup(func() { gs.Stop(); <-done })
	return s, gs
}

// Dial returns a client of target (insecure, round robin unless opts say
// otherwise), closed when the test ends.
func Dial(tb testing.TB, target string, opts ...grpc.DialOption) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient(target, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	return cc
}

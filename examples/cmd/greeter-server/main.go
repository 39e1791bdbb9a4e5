// Command greeter-server is the greeter for a real cluster (and the demo's
// service): SayHello answers with the pod's name ($POD_NAME, else the host
// name). It serves gRPC health for the readiness probe and, on SIGTERM,
// reports NOT_SERVING, then drains calls in flight with GracefulStop.
//
// Environment: POD_NAME, PORT (default 50051), DRAIN_TIMEOUT (default 20s).
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/disco-lb/disco/examples/greeter"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "greeter-server:", err)
		os.Exit(1)
	}
}

func run() error {
	pod := os.Getenv("POD_NAME")
	if pod == "" {
		pod, _ = os.Hostname()
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "50051"
	}
	drain := 20 * time.Second
	if v := os.Getenv("DRAIN_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("DRAIN_TIMEOUT %q: %w", v, err)
		}
		drain = d
	}
	ln, err := net.Listen("tcp", ":"+port)
	if err != nil {
		return err
	}
	gs := grpc.NewServer(greeter.ServerKeepalive())
	greeter.Register(gs, &greeter.Server{Pod: pod})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(ln) }()
	fmt.Printf("greeter-server: %s serving on %s\n", pod, ln.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Terminating: fail readiness, finish calls in flight, then exit.
	hs.Shutdown()
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(drain):
		gs.Stop()
	}
	fmt.Printf("greeter-server: %s drained\n", pod)
	return nil
}

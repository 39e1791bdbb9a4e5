package connpool_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/connpool"
)

// The seed's use in Go: create the channel, start discovery with a build
// function, pass the channel to the generated client.
func ExampleNewChannel() {
	ctx := context.Background()

	// How to build a connection to one backend: your timeouts, TLS, creds.
	build := connpool.DialGRPC(5*time.Second, grpc.WithTransportCredentials(insecure.NewCredentials()))
	pool, err := connpool.New(build, connpool.CloseGRPC)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	ch, err := connpool.NewChannel(pool)
	if err != nil {
		log.Fatal(err)
	}

	// Discovery feeds the pool. In a real program the source is
	// kubernetes.New(cfg, kubernetes.WithNamespace(ns)) from
	// github.com/disco-lb/disco/sources/kubernetes; here a fixed answer
	// stands in for it.
	target := core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}
	set, _ := core.NewSet(&core.Endpoint{ID: "greeter-0", Addresses: []string{"10.244.0.2"}, Port: 50051})
	src := core.SourceFunc(func(ctx context.Context, _ core.Target, pub core.Publisher) error {
		pub.Publish(set)
		<-ctx.Done()
		return nil
	})
	hub, err := core.NewHub(src) // one per source, shared with gRPC resolvers and other pools
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	sub, err := hub.Subscribe("pool", pool, target)
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	if err := sub.WaitSynced(ctx); err != nil { // no sleep: wait for discovery
		log.Fatal(err)
	}

	// Generated clients take the channel: greeter.NewClient(ch).
	_ = ch
}

// The TLS variant: the build function gets each endpoint, so it can verify
// the service's name (or a per-pod name) and set per-backend options.
func ExampleDialGRPC_tls() {
	creds := credentials.NewTLS(&tls.Config{ServerName: "greeter.demo.svc", MinVersion: tls.VersionTLS13})
	build := func(ctx context.Context, ep *core.Endpoint) (*grpc.ClientConn, error) {
		return connpool.DialGRPC(5*time.Second, grpc.WithTransportCredentials(creds))(ctx, ep)
	}
	pool, err := connpool.New(build, connpool.CloseGRPC, connpool.WithZone("zone-a", 1))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	fmt.Println(pool.Len())
	// Output: 0
}

// Any connection type: the pool balances whatever your build function makes.
func ExamplePool_Do() {
	type conn struct{ addr string }
	pool, err := connpool.New(
		func(_ context.Context, ep *core.Endpoint) (*conn, error) { return &conn{addr: ep.HostPort()}, nil },
		func(*conn) error { return nil })
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	set, _ := core.NewSet(&core.Endpoint{ID: "a", Addresses: []string{"10.0.0.1"}, Port: 6379})
	_ = pool.Accept(context.Background(), core.Update{Target: core.Target{Name: "cache"}, State: core.State{Endpoints: set, Synced: true},
		Delta: core.Diff(core.Set{}, set)})
	err = pool.Do(context.Background(), func(c *conn) error { fmt.Println("using", c.addr); return nil })
	fmt.Println(err)
	// Output:
	// using 10.0.0.1:6379
	// <nil>
}

// A value out of range is an error at construction naming the option.
func ExampleNew_badOption() {
	_, err := connpool.New(connpool.DialGRPC(0), connpool.CloseGRPC, connpool.WithConnsPerEndpoint(0))
	fmt.Println(err)
	// Output: connpool: option WithConnsPerEndpoint(0): want 1 to 64: invalid
}

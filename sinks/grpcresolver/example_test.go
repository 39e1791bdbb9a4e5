package grpcresolver_test

import (
	"context"
	"fmt"
	"log"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/grpcresolver"
)

// fixed is a source answering every target with set (a stand-in for the
// Kubernetes, DNS or file source of a real program).
func fixed(set core.Set) core.Source {
	return core.SourceFunc(func(ctx context.Context, _ core.Target, pub core.Publisher) error {
		pub.Publish(set)
		<-ctx.Done()
		return nil
	})
}

// The usual setup in a pod: one hub over the Kubernetes source, the
// resolver for scheme "kubernetes", a client balancing round robin over
// every ready pod. In a real program:
//
//	cfg, ns, err := kubernetes.LoadConfig("") // in-cluster, or $KUBECONFIG
//	src, err := kubernetes.New(cfg, kubernetes.WithNamespace(ns))
//
// (github.com/disco-lb/disco/sources/kubernetes); here a fixed answer
// stands in for it.
func ExampleNewKubernetes() {
	hub, err := core.NewHub(fixed(core.Set{})) // one per source, shared by every client and pool
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	b, err := grpcresolver.NewKubernetes(hub)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	cc, err := grpc.NewClient("kubernetes:///greeter.demo:grpc",
		grpc.WithResolvers(b), // or grpcresolver.Register(b) once at start-up
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	// greeter.NewClient(cc).SayHello(ctx, ...)
}

// Zone-aware balancing: stay in the client's zone while it has a ready
// endpoint, use every zone otherwise.
func ExampleRegisterZoneAware() {
	grpcresolver.RegisterZoneAware("") // zone from the service config below
	fmt.Println(grpcresolver.ZoneAwareServiceConfig("zone-a", 1))
	// Output: {"loadBalancingConfig":[{"disco_zone_aware":{"zone":"zone-a","minReady":1}}]}
}

// Any core source can serve a scheme: here fixed endpoints, with targets
// read by core.ParseTarget.
func ExampleNew() {
	set, _ := core.NewSet(&core.Endpoint{Addresses: []string{"10.0.0.1"}, Port: 50051})
	hub, err := core.NewHub(fixed(set))
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	b, err := grpcresolver.New("static", hub)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	cc, err := grpc.NewClient("static:///greeter", grpc.WithResolvers(b), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
}

// The recommended client setup in one call: the resolver, least request,
// keepalive and a retry of unary calls on UNAVAILABLE (see the README,
// "When a pod dies").
func ExampleBuilder_DialOptions() {
	hub, err := core.NewHub(fixed(core.Set{})) // a hub over kubernetes.New(cfg) in a real program
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close()
	b, err := grpcresolver.NewKubernetes(hub)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	cc, err := grpc.NewClient("kubernetes:///greeter.demo:grpc",
		append(b.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	fmt.Println(grpcresolver.ServiceConfig(grpcresolver.LeastRequest))
	// Output: {"loadBalancingConfig":[{"disco_least_request":{}}]}
}

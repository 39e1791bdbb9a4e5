// Command scale-client is one client of a fleet, for the relay figures
// (examples/e2e/relay_test.go, BENCHMARKS.md "The relay"): it keeps a
// connection to every endpoint of a target, discovered one of three ways,
// until its standard input closes.
//
//	-mode resolver  disco's resolver in this process: its own watch of the API server
//	-mode xds       grpc-go's xDS client (xds:///target, GRPC_XDS_BOOTSTRAP): no watch of its own
//	-mode watch     kuberesolver's way: a plain client-go watch of the target's
//	                EndpointSlices; it prints "event <unix nanoseconds>" for each
//
// It prints "started" once set up.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/xds" // xds:///
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/grpcresolver"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
)

func main() {
	mode := flag.String("mode", "resolver", "resolver, xds or watch")
	target := flag.String("target", "greeter.demo:grpc", "the Service and port (name.namespace:port)")
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file (resolver and watch)")
	flag.Parse()
	if err := run(*mode, *target, *kubeconfig); err != nil {
		fmt.Fprintln(os.Stderr, "scale-client:", err)
		os.Exit(1)
	}
}

func run(mode, target, kubeconfig string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	roundRobin := grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`)
	switch mode {
	case "resolver":
		cfg, _, err := kubernetes.LoadConfig(kubeconfig)
		if err != nil {
			return err
		}
		src, err := kubernetes.New(cfg)
		if err != nil {
			return err
		}
		hub, err := core.NewHub(src)
		if err != nil {
			return err
		}
		defer hub.Close()
		b, err := grpcresolver.NewKubernetes(hub)
		if err != nil {
			return err
		}
		defer b.Close()
		cc, err := grpc.NewClient("kubernetes:///"+target, grpc.WithResolvers(b), roundRobin, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		cc.Connect()
	case "xds":
		cc, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer cc.Close()
		cc.Connect()
	case "watch":
		t, err := core.ParseTarget(target, core.ServiceSyntax)
		if err != nil {
			return err
		}
		cfg, _, err := kubernetes.LoadConfig(kubeconfig)
		if err != nil {
			return err
		}
		cfg.QPS, cfg.Burst = -1, 0
		cs, err := k8s.NewForConfig(cfg)
		if err != nil {
			return err
		}
		w, err := cs.DiscoveryV1().EndpointSlices(t.Namespace).Watch(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + t.Name})
		if err != nil {
			return err
		}
		defer w.Stop()
		out := bufio.NewWriter(os.Stdout)
		go func() {
			for range w.ResultChan() {
				fmt.Fprintf(out, "event %d\n", time.Now().UnixNano())
				_ = out.Flush()
			}
		}()
	default:
		return errors.New("-mode: want resolver, xds or watch")
	}
	fmt.Println("started")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// Command greeter-client calls the greeter through disco and prints how
// many calls each pod answered. It is the program to copy for each sink:
//
//	-via resolver   grpc.NewClient("kubernetes:///...") with disco's resolver (default)
//	-via pool       a connpool of connections you build, behind a balanced channel
//
// In a cluster it uses the pod's service account and namespace; outside, the
// kubeconfig ($KUBECONFIG or ~/.kube/config). It exits 1 if any call failed.
//
// Environment (flags override): TARGET (default kubernetes:///greeter:grpc),
// CALLS (1000), CONCURRENCY (8).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/examples/greeter"
	"github.com/disco-lb/disco/sinks/connpool"
	"github.com/disco-lb/disco/sinks/grpcresolver"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func main() {
	calls, _ := strconv.Atoi(env("CALLS", "1000"))
	conc, _ := strconv.Atoi(env("CONCURRENCY", "8"))
	target := flag.String("target", env("TARGET", "kubernetes:///greeter:grpc"), "service to call")
	via := flag.String("via", "resolver", "resolver or pool")
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig file (default: in-cluster, $KUBECONFIG or ~/.kube/config)")
	flag.IntVar(&calls, "calls", calls, "calls to make")
	flag.IntVar(&conc, "concurrency", conc, "concurrent callers")
	flag.Parse()
	if err := run(*target, *via, *kubeconfig, calls, conc); err != nil {
		fmt.Fprintln(os.Stderr, "greeter-client:", err)
		os.Exit(1)
	}
}

func run(target, via, kubeconfig string, calls, conc int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cfg, ns, err := kubernetes.LoadConfig(kubeconfig)
	if err != nil {
		return err
	}
	src, err := kubernetes.New(cfg, kubernetes.WithNamespace(ns))
	if err != nil {
		return err
	}
	hub, err := core.NewHub(src) // one per source: every client and pool shares its watches
	if err != nil {
		return err
	}
	defer hub.Close()
	var cc grpc.ClientConnInterface
	switch via {
	case "resolver":
		b, err := grpcresolver.NewKubernetes(hub)
		if err != nil {
			return err
		}
		defer b.Close()
		conn, err := grpc.NewClient(target, // the recommended setup: least request, keepalive, retry
			append(b.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			return err
		}
		defer conn.Close()
		cc = conn
	case "pool":
		t, err := src.Target(target)
		if err != nil {
			return err
		}
		pool, ch, err := connpool.Recommended([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())})
		if err != nil {
			return err
		}
		defer pool.Close()
		sub, err := hub.Subscribe("pool", pool, t)
		if err != nil {
			return err
		}
		defer sub.Close()
		if err := sub.WaitSynced(ctx); err != nil { // no sleep: wait for discovery
			return err
		}
		cc = ch
	default:
		return fmt.Errorf("-via %q: want resolver or pool", via)
	}
	client := greeter.NewClient(cc)
	var mu sync.Mutex
	perPod := map[string]int{}
	var next, failed atomic.Int64
	var firstErr error
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(calls) {
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				pod, err := client.SayHello(cctx, "client", grpc.WaitForReady(true))
				cancel()
				mu.Lock()
				if err != nil {
					failed.Add(1)
					if firstErr == nil {
						firstErr = err
					}
				} else {
					perPod[pod]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	names := make([]string, 0, len(perPod))
	for n := range perPod {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("%-30s %d\n", n, perPod[n])
	}
	fmt.Printf("calls %d, failed %d, pods %d\n", calls, failed.Load(), len(perPod))
	if failed.Load() > 0 {
		return errors.Join(fmt.Errorf("%d calls failed", failed.Load()), firstErr)
	}
	return nil
}

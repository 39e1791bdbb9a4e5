package e2e_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/connpool"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest/fleet"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest/podnet"
)

// The seed's use, end to end: Kubernetes discovery feeds a pool of gRPC
// connections built by the user, a generated client calls through the
// balanced channel, and five pods are replaced one by one the way
// Kubernetes does it under 50 concurrent callers: no call fails.
func TestRollingReplacementThroughThePoolFailsNoCall(t *testing.T) {
	n := podnet.NewForTest(t)
	cp := kubetest.New(t)
	ctx := ctxFor(t, 3*time.Minute)
	cs, err := cp.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	fl, err := fleet.New(ctx, cs, n, "demo", "greeter", "grpc", 50051, 1)
	if err != nil {
		t.Fatal(err)
	}
	stops := map[string]func(){}
	var smu sync.Mutex
	start := func(name string) {
		p, err := fl.AddPod(ctx, name, "")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := p.Listen("tcp", ":50051")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer()
		testgrpc.RegisterTestServiceServer(gs, &server{Name: name})
		done := make(chan struct{})
		go func() { defer close(done); gs.Serve(ln) }()
		t.Cleanup(func() { gs.Stop(); <-done })
		smu.Lock()
		stops[name] = gs.GracefulStop
		smu.Unlock()
		fl.Set(name, true, false)
		if err := fl.Publish(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		start(fmt.Sprint("greeter-old-", i))
	}

	// The user's side: a pool with their build function, fed by discovery.
	pool := must(connpool.New(connpool.DialGRPC(5*time.Second, grpc.WithTransportCredentials(insecure.NewCredentials())), connpool.CloseGRPC))
	defer pool.Close()
	src, err := kubernetes.New(cp.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	tgt := core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}
	hub := coretest.Hub(t, src)
	sub, err := hub.Subscribe("pool", pool, tgt)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	client := testgrpc.NewTestServiceClient(must(connpool.NewChannel(pool)))

	var ok, failed atomic.Int64
	var emu sync.Mutex
	var errs []error
	perPod := map[string]int64{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					if ok.Load()+failed.Load() >= 10000 {
						return
					}
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				r, err := client.UnaryCall(cctx, &testgrpc.SimpleRequest{})
				cancel()
				emu.Lock()
				if err != nil {
					failed.Add(1)
					if len(errs) < 5 {
						errs = append(errs, err)
					}
				} else {
					ok.Add(1)
					perPod[r.ServerId]++
				}
				emu.Unlock()
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	for i := range 5 {
		start(fmt.Sprint("greeter-new-", i))
		old := fmt.Sprint("greeter-old-", i)
		smu.Lock()
		gracefulStop := stops[old]
		smu.Unlock()
		if err := fl.Drain(ctx, old, 500*time.Millisecond, gracefulStop); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("rolling replacement through the pool: %d calls, %d failed; per pod %v", ok.Load()+failed.Load(), failed.Load(), perPod)
	if failed.Load() != 0 {
		t.Fatalf("%d calls failed: %v", failed.Load(), errs)
	}
	for i := range 5 {
		if perPod[fmt.Sprint("greeter-new-", i)] == 0 {
			t.Fatalf("new pod %d got no call", i)
		}
	}
}

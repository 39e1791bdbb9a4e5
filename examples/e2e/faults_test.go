package e2e_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/examples/greeter"
	"github.com/disco-lb/disco/sinks/connpool"
	"github.com/disco-lb/disco/sinks/grpcresolver"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest/fleet"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest/podnet"
)

// A pod that dies, has its connections reset, vanishes (its link deleted:
// no reset, just silence) or loses its link, under 200 callers with 5 s
// deadlines; its EndpointSlice entry left unchanged for 2 s afterwards, as
// Kubernetes takes a while to notice, then removed.

// faultModes are the ways a pod fails.
var faultModes = []string{"sigkill", "reset", "unplug", "linkdown"}

var (
	serverBinOnce sync.Once
	serverBin     string
	serverBinErr  error
)

// greeterServer builds the greeter-server binary once, for pods that are
// real processes (SIGKILL).
func greeterServer(t testing.TB) string {
	serverBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "disco-e2e-bin")
		if err != nil {
			serverBinErr = err
			return
		}
		serverBin = filepath.Join(dir, "greeter-server")
		out, err := exec.Command("go", "build", "-o", serverBin, "../cmd/greeter-server").CombinedOutput()
		if err != nil {
			serverBinErr = fmt.Errorf("build greeter-server: %v\n%s", err, out)
		}
	})
	if serverBinErr != nil {
		t.Fatal(serverBinErr)
	}
	return serverBin
}

// faultPods is a real API server and n greeter pods, ready in one slice.
type faultPods struct {
	t     testing.TB
	cp    *kubetest.ControlPlane
	fleet *fleet.Fleet
	procs map[string]*exec.Cmd
}

func newFaultPods(t testing.TB, n int, processes bool) *faultPods {
	t.Helper()
	pn := podnet.NewForTest(t)
	cp := kubetest.New(t)
	cs, err := cp.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(t, 3*time.Minute)
	fl, err := fleet.New(ctx, cs, pn, "demo", "greeter", "grpc", 50051, 1)
	if err != nil {
		t.Fatal(err)
	}
	fp := &faultPods{t: t, cp: cp, fleet: fl, procs: map[string]*exec.Cmd{}}
	for i := range n {
		name := fmt.Sprintf("greeter-%d", i)
		p, err := fl.AddPod(ctx, name, "")
		if err != nil {
			t.Fatal(err)
		}
		if processes {
			cmd := p.Command(context.Background(), greeterServer(t))
			cmd.Env = append(os.Environ(), "POD_NAME="+name, "PORT=50051")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			fp.procs[name] = cmd
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			for {
				c, err := net.DialTimeout("tcp", p.Addr(50051), time.Second)
				if err == nil {
					c.Close()
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("pod %s never listened: %v", name, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		} else {
			ln, err := p.Listen("tcp", ":50051")
			if err != nil {
				t.Fatal(err)
			}
			gs := grpc.NewServer(greeter.ServerKeepalive())
			greeter.Register(gs, &greeter.Server{Pod: name})
			done := make(chan struct{})
			go func() { defer close(done); gs.Serve(ln) }()
			t.Cleanup(func() { gs.Stop(); <-done })
		}
		fl.Set(name, true, false)
	}
	if err := fl.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	return fp
}

// fail makes pod name fail by mode.
func (fp *faultPods) fail(ctx context.Context, name, mode string) {
	p := fp.fleet.Pod(name)
	var err error
	switch mode {
	case "sigkill":
		err = fp.procs[name].Process.Kill()
	case "reset":
		p.ResetConnections()
	case "unplug":
		err = p.Unplug(ctx)
	case "linkdown":
		err = p.Disconnect(ctx)
	}
	if err != nil {
		fp.t.Fatal(err)
	}
}

// clientSetup is how the client is configured.
type clientSetup struct {
	keepalive, retry, leastRequest bool
}

var recommended = clientSetup{keepalive: true, retry: true, leastRequest: true}

// client returns a greeter client through the resolver or the pool, set
// up by s, over a hub of the Kubernetes source.
func (fp *faultPods) client(path string, s clientSetup) *greeter.Client {
	fp.t.Helper()
	src, err := kubernetes.New(fp.cp.AdminConfig())
	if err != nil {
		fp.t.Fatal(err)
	}
	hub := coretest.Hub(fp.t, src)
	fp.t.Cleanup(func() { hub.Close() })
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	if path == "resolver" {
		b := must(grpcresolver.NewKubernetes(hub))
		fp.t.Cleanup(func() { b.Close() })
		opts := []grpc.DialOption{creds}
		if s == recommended {
			opts = append(opts, b.DialOptions()...) // the one call
		} else {
			lb := map[string]any{"round_robin": map[string]any{}}
			if s.leastRequest {
				lb = grpcresolver.LeastRequest
			}
			opts = append(opts, grpc.WithResolvers(b), grpc.WithDefaultServiceConfig(grpcresolver.ServiceConfig(lb)))
			if s.keepalive {
				opts = append(opts, grpc.WithKeepaliveParams(grpcresolver.Keepalive))
			}
			if s.retry {
				opts = append(opts, grpc.WithChainUnaryInterceptor(grpcresolver.UnaryRetry(grpcresolver.RecommendedRetry)))
			}
		}
		cc, err := grpc.NewClient("kubernetes:///greeter.demo:grpc", opts...)
		if err != nil {
			fp.t.Fatal(err)
		}
		fp.t.Cleanup(func() { cc.Close() })
		return greeter.NewClient(cc)
	}
	var pool *connpool.Pool[*grpc.ClientConn]
	var ch *connpool.Channel
	if s == recommended {
		pool, ch, _ = connpool.Recommended([]grpc.DialOption{creds}) // the one call; no option to fail
	} else {
		dial := []grpc.DialOption{creds}
		if s.keepalive {
			dial = append(dial, connpool.RecommendedDialOptions()...)
		}
		var popts []connpool.Option
		if !s.leastRequest {
			popts = append(popts, connpool.WithPolicy(connpool.RoundRobin))
		}
		pool = must(connpool.New(connpool.DialGRPC(5*time.Second, dial...), connpool.CloseGRPC, popts...))
		var copts []connpool.ChannelOption
		if s.retry {
			copts = append(copts, connpool.WithRetry(connpool.RecommendedRetry))
		}
		ch = must(connpool.NewChannel(pool, copts...))
	}
	fp.t.Cleanup(func() { pool.Close() })
	sub, err := hub.Subscribe("pool", pool, core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"})
	if err != nil {
		fp.t.Fatal(err)
	}
	fp.t.Cleanup(func() { sub.Close() })
	return greeter.NewClient(ch)
}

// faultRun is what callers saw in one failure scenario.
type faultRun struct {
	ok, failed int64
	stalled    int64 // calls that took over 1 s (stuck on the failed pod for a while)
	errs       []error
	stallAt    []time.Duration // when stalled calls began, from the fault (the first 20)
}

// runFault runs 200 callers through client for 1 s, fails pod 0 by mode,
// leaves its slice entry for 2 s, removes it, and goes on 2 s more.
func (fp *faultPods) runFault(ctx context.Context, client *greeter.Client, mode string) faultRun {
	var r faultRun
	var mu sync.Mutex
	var ok, failed, stalled atomic.Int64
	var faultAt time.Time
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Every pod answers first.
	for deadline := time.Now().Add(30 * time.Second); ; {
		seen := map[string]bool{}
		for range 50 {
			if pod, err := client.SayHello(ctx, "warm", grpc.WaitForReady(true)); err == nil {
				seen[pod] = true
			}
		}
		if len(seen) == len(fp.fleet.Names()) {
			break
		}
		if time.Now().After(deadline) {
			fp.t.Fatalf("pods answering: %v", seen)
		}
	}
	for range 200 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				begin := time.Now()
				_, err := client.SayHello(cctx, "load")
				cancel()
				if time.Since(begin) > time.Second {
					stalled.Add(1)
					mu.Lock()
					if len(r.stallAt) < 20 {
						r.stallAt = append(r.stallAt, begin.Sub(faultAt))
					}
					mu.Unlock()
				}
				if err == nil {
					ok.Add(1)
					continue
				}
				failed.Add(1)
				mu.Lock()
				if len(r.errs) < 5 {
					r.errs = append(r.errs, err)
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	mu.Lock()
	faultAt = time.Now()
	mu.Unlock()
	fp.fail(ctx, "greeter-0", mode)
	time.Sleep(2 * time.Second) // Kubernetes has not noticed yet
	if err := fp.fleet.Remove(ctx, "greeter-0"); err != nil {
		fp.t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	r.ok, r.failed, r.stalled = ok.Load(), failed.Load(), stalled.Load()
	return r
}

// With the recommended setup (one call for the resolver: Builder.DialOptions;
// for the pool: RecommendedDialOptions and WithRetry(RecommendedRetry)), no
// call fails, whatever way a pod fails, through either sink.
func TestNoCallFailsWhenAPodFails(t *testing.T) {
	for _, path := range []string{"resolver", "pool"} {
		for _, mode := range faultModes {
			t.Run(path+"/"+mode, func(t *testing.T) {
				fp := newFaultPods(t, 5, mode == "sigkill")
				ctx := ctxFor(t, 3*time.Minute)
				r := fp.runFault(ctx, fp.client(path, recommended), mode)
				t.Logf("%s, %s: %d calls, %d failed, %d took over 1 s (began at %v after the fault)", path, mode, r.ok+r.failed, r.failed, r.stalled, r.stallAt)
				if r.failed != 0 {
					t.Fatalf("%d calls failed: %v", r.failed, r.errs)
				}
			})
		}
	}
}

// BenchmarkFailureModes measures the failure table of the README: failed
// calls per failure mode and client setup, through the resolver and the
// pool. Run with -benchtime=1x (each sub-benchmark is one scenario).
func BenchmarkFailureModes(b *testing.B) {
	setups := []struct {
		name string
		s    clientSetup
	}{
		{"plain", clientSetup{}},
		{"keepalive", clientSetup{keepalive: true}},
		{"retry", clientSetup{retry: true}},
		{"keepalive+retry", clientSetup{keepalive: true, retry: true}},
		{"recommended", recommended},
	}
	for _, path := range []string{"resolver", "pool"} {
		for _, mode := range faultModes {
			for _, setup := range setups {
				b.Run(path+"/"+mode+"/"+setup.name, func(b *testing.B) {
					var r faultRun
					for b.Loop() {
						fp := newFaultPods(b, 5, mode == "sigkill")
						r = fp.runFault(ctxFor(b, 3*time.Minute), fp.client(path, setup.s), mode)
					}
					b.ReportMetric(float64(r.failed), "failed")
					b.ReportMetric(float64(r.stalled), "stalled>1s")
					b.ReportMetric(float64(r.ok+r.failed), "calls")
				})
			}
		}
	}
}

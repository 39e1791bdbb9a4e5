package e2e_test

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	etcdresolver "go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/grpcresolver"
	"github.com/disco-lb/disco/sources/etcd"
	"github.com/disco-lb/disco/sources/etcd/etcdtest"
)

// registry is a service registered in a real etcd with etcd's own
// endpoints.Manager, as a user of etcd's gRPC resolver registers it.
type registry struct {
	t      *testing.T
	client *clientv3.Client
	em     endpoints.Manager
	mu     sync.Mutex
	keys   map[string]bool
}

func newRegistry(t *testing.T, c *clientv3.Client, service string) *registry {
	em, err := endpoints.NewManager(c, service)
	if err != nil {
		t.Fatal(err)
	}
	return &registry{t: t, client: c, em: em, keys: map[string]bool{}}
}

// publish makes the registrations exactly bs (one transaction).
func (r *registry) publish(bs []*backend) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ups []*endpoints.UpdateWithOpts
	want := map[string]bool{}
	for _, b := range bs {
		key := "greeter/" + b.name
		want[key] = true
		if !r.keys[key] {
			ups = append(ups, endpoints.NewAddUpdateOpts(key, endpoints.Endpoint{Addr: fmt.Sprintf("%s:%d", b.ip, b.port)}))
		}
	}
	for key := range r.keys {
		if !want[key] {
			ups = append(ups, endpoints.NewDeleteUpdateOpts(key))
		}
	}
	if len(ups) == 0 {
		return
	}
	if err := r.em.Update(context.Background(), ups); err != nil {
		r.t.Fatal(err)
	}
	r.keys = want
}

// A service registered with etcd's endpoints.Manager, rolled one instance
// at a time under load through disco's resolver and pool: no call fails.
func TestEtcdRolloutFailsNoCall(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	src := must(etcd.NewForClient(c))
	hub := coretest.Hub(t, src)
	reg := newRegistry(t, c, "greeter")
	bs := map[int]*backend{}
	runRollout(t, rollout{
		hub: hub, scheme: "etcd-disco", target: "etcd-disco:///greeter", poolAt: core.Target{Name: "greeter"},
		publish: reg.publish,
		backends: func(i int) *backend {
			if bs[i] == nil {
				bs[i] = startBackend(t, fmt.Sprintf("etcd-%d", i), loopbackIP(80+i), 0)
			}
			return bs[i]
		},
	})
}

// firstSeen records, per client, when each backend first answered.
type firstSeen struct {
	mu     sync.Mutex
	at     map[string]time.Time
	ok     atomic.Int64
	failed atomic.Int64
	errs   []error
}

func (f *firstSeen) load(ctx context.Context, client testgrpc.TestServiceClient, callers int) {
	for range callers {
		go func() {
			for ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				r, err := client.UnaryCall(cctx, &testgrpc.SimpleRequest{})
				cancel()
				if ctx.Err() != nil {
					return
				}
				f.mu.Lock()
				if err != nil {
					f.failed.Add(1)
					if len(f.errs) < 5 {
						f.errs = append(f.errs, err)
					}
				} else {
					f.ok.Add(1)
					if _, ok := f.at[r.ServerId]; !ok {
						f.at[r.ServerId] = time.Now()
					}
				}
				f.mu.Unlock()
			}
		}()
	}
}

func (f *firstSeen) seen(name string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.at[name]
	return t, ok
}

// The same rollout through disco's etcd source and resolver and through
// etcd's own gRPC resolver, side by side on the same registrations in one
// run: failed calls of each, and the time from a registration's write to
// its first call through each.
func TestEtcdRolloutBesideEtcdsOwnResolver(t *testing.T) {
	srv := etcdtest.Start(t)
	c := srv.Client()
	hub := coretest.Hub(t, must(etcd.NewForClient(c)))
	reg := newRegistry(t, c, "greeter")
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	b := must(grpcresolver.New("etcd-disco", hub))
	t.Cleanup(func() { b.Close() })
	discoCC := must(grpc.NewClient("etcd-disco:///greeter", append([]grpc.DialOption{creds}, b.DialOptions()...)...))
	t.Cleanup(func() { discoCC.Close() })
	eb, err := etcdresolver.NewBuilder(c)
	if err != nil {
		t.Fatal(err)
	}
	etcdCC := must(grpc.NewClient("etcd:///greeter", creds, grpc.WithResolvers(eb),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`)))
	t.Cleanup(func() { etcdCC.Close() })

	var live []*backend
	for i := range 3 {
		live = append(live, startBackend(t, fmt.Sprintf("side-%d", i), loopbackIP(90+i), 0))
	}
	reg.publish(live)
	ctx := ctxFor(t, 3*time.Minute)
	clients := map[string]testgrpc.TestServiceClient{"disco": testgrpc.NewTestServiceClient(discoCC), "etcd": testgrpc.NewTestServiceClient(etcdCC)}
	for _, cl := range clients {
		waitServing(t, ctx, cl, "side-0", "side-1", "side-2")
	}
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	seen := map[string]*firstSeen{}
	for name, cl := range clients {
		seen[name] = &firstSeen{at: map[string]time.Time{}}
		seen[name].load(lctx, cl, 8)
	}
	latency := map[string][]time.Duration{}
	for i := range 3 {
		fresh := startBackend(t, fmt.Sprintf("side-new-%d", i), loopbackIP(95+i), 0)
		live = append(live, fresh)
		written := time.Now()
		reg.publish(live)
		for name, f := range seen {
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
				if at, ok := f.seen(fresh.name); ok {
					latency[name] = append(latency[name], at.Sub(written))
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: %s never answered", name, fresh.name)
				}
			}
		}
		old := live[0]
		live = live[1:]
		reg.publish(live)
		waitUnused(t, ctx, old)
		old.gs.GracefulStop()
	}
	stop()
	for _, name := range []string{"disco", "etcd"} {
		f := seen[name]
		sort.Slice(latency[name], func(i, j int) bool { return latency[name][i] < latency[name][j] })
		t.Logf("%s: %d calls, %d failed; registration write to first call on each new instance: %v", name, f.ok.Load()+f.failed.Load(), f.failed.Load(), latency[name])
	}
	if n := seen["disco"].failed.Load(); n != 0 {
		t.Fatalf("disco: %d calls failed: %v", n, seen["disco"].errs)
	}
	if n := seen["etcd"].failed.Load(); n != 0 {
		t.Logf("etcd's own resolver failed %d calls in the same rollout: %v", n, seen["etcd"].errs)
	}
}

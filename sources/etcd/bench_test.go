package etcd_test

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"slices"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/naming/endpoints"
	etcdresolver "go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sources/etcd"
	"github.com/disco-lb/disco/sources/etcd/etcdtest"
)

//	go test -run '^$' -bench . -benchtime 200x ./sources/etcd

// watchCC is a resolver.ClientConn that reports each address list.
type watchCC struct {
	resolver.ClientConn
	states chan []string
}

func (c *watchCC) UpdateState(s resolver.State) error {
	var addrs []string
	for _, a := range s.Addresses {
		addrs = append(addrs, a.Addr)
	}
	for _, e := range s.Endpoints {
		for _, a := range e.Addresses {
			addrs = append(addrs, a.Addr)
		}
	}
	c.states <- addrs
	return nil
}
func (c *watchCC) ReportError(error)             {}
func (c *watchCC) NewAddress([]resolver.Address) {}
func (c *watchCC) ParseServiceConfig(string) *serviceconfig.ParseResult {
	return &serviceconfig.ParseResult{}
}

// BenchmarkChangeToPublish: from a registration's write (etcd's
// endpoints.Manager) to disco's hub publishing it, and, in the same run on
// the same writes, to etcd's own gRPC resolver handing it to gRPC.
func BenchmarkChangeToPublish(b *testing.B) {
	srv := etcdtest.Start(b)
	c := srv.Client()
	em, err := endpoints.NewManager(c, "svc")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if err := em.AddEndpoint(ctx, "svc/base", endpoints.Endpoint{Addr: "10.9.0.1:80"}); err != nil {
		b.Fatal(err)
	}
	discoSeen := make(chan []string, 1024)
	hub := coretest.Hub(b, must(etcd.NewForClient(c)))
	sub, err := hub.Subscribe("bench", core.SinkFunc(func(_ context.Context, u core.Update) error {
		var addrs []string
		for e := range u.State.Endpoints.All() {
			addrs = append(addrs, e.HostPort())
		}
		discoSeen <- addrs
		return nil
	}), core.Target{Name: "svc"})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	cc := &watchCC{states: make(chan []string, 1024)}
	eb, err := etcdresolver.NewBuilder(c)
	if err != nil {
		b.Fatal(err)
	}
	r, err := eb.Build(resolver.Target{URL: *mustURL("etcd:///svc")}, cc, resolver.BuildOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	wait := func(ch chan []string, addr string) time.Time {
		for {
			select {
			case addrs := <-ch:
				if slices.Contains(addrs, addr) {
					return time.Now()
				}
			case <-time.After(30 * time.Second):
				b.Fatalf("%s never seen", addr)
			}
		}
	}
	var disco, own []time.Duration
	for i := 0; b.Loop(); i++ {
		addr := fmt.Sprintf("10.1.%d.%d:80", i/250, 1+i%250)
		begin := time.Now()
		if err := em.AddEndpoint(ctx, fmt.Sprintf("svc/%d", i), endpoints.Endpoint{Addr: addr}); err != nil {
			b.Fatal(err)
		}
		d1, d2 := wait(discoSeen, addr), wait(cc.states, addr)
		disco, own = append(disco, d1.Sub(begin)), append(own, d2.Sub(begin))
	}
	slices.Sort(disco)
	slices.Sort(own)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(disco[len(disco)/2]), "ms-p50-disco")
	b.ReportMetric(ms(disco[len(disco)*99/100]), "ms-p99-disco")
	b.ReportMetric(ms(own[len(own)/2]), "ms-p50-etcd-resolver")
	b.ReportMetric(ms(own[len(own)*99/100]), "ms-p99-etcd-resolver")
}

// BenchmarkMemoryPer1000: the heap the source and a hub keep for a target
// of 1,000 registered endpoints (etcd's client excluded: it exists before).
func BenchmarkMemoryPer1000(b *testing.B) {
	srv := etcdtest.Start(b)
	c := srv.Client()
	ctx := context.Background()
	for i := range 1000 {
		if _, err := c.Put(ctx, fmt.Sprintf("svc/%d", i), fmt.Sprintf(`{"Op":0,"Addr":"10.2.%d.%d:80"}`, i/250, 1+i%250)); err != nil {
			b.Fatal(err)
		}
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	var per float64
	for b.Loop() {
		before := heap()
		src := must(etcd.NewForClient(c))
		hub := must(core.NewHub(src))
		sub, err := hub.Subscribe("mem", coretest.NewRecorder(), core.Target{Name: "svc"})
		if err != nil {
			b.Fatal(err)
		}
		if err := sub.WaitSynced(ctx); err != nil {
			b.Fatal(err)
		}
		per = float64(heap()-before) / 1000
		sub.Close()
		hub.Close()
	}
	b.ReportMetric(per, "B/endpoint")
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

package e2e_test

import (
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sinks/connpool"
	"github.com/disco-lb/disco/sinks/grpcresolver"
	"github.com/disco-lb/disco/sources/dns"
	"github.com/disco-lb/disco/sources/dns/dnstest"
)

func dnsHub(t *testing.T, srv *dnstest.Server) (*dns.Source, *core.Hub) {
	t.Helper()
	src, err := dns.New(dns.WithServer(srv.Addr()), dns.WithTTLBounds(100*time.Millisecond, 10*time.Second),
		dns.WithTimeout(300*time.Millisecond), dns.WithBackoff(50*time.Millisecond, 500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	hub := coretest.Hub(t, src)
	t.Cleanup(func() { hub.Close() })
	return src, hub
}

// Backends behind SRV records of a real DNS server (dnsmasq, records with a
// 1 s TTL), replaced one by one; every change of the SRV set restarts
// dnsmasq, so the source also rides out a server that is briefly gone.
func TestDNSSRVRolloutFailsNoCall(t *testing.T) {
	one := uint32(1)
	srv := dnstest.Start(t, dnstest.Config{TTL: &one})
	src, hub := dnsHub(t, srv)
	name := "_grpc._tcp." + srv.Name("greeter")
	tg, err := src.Target(name)
	if err != nil {
		t.Fatal(err)
	}
	runRollout(t, rollout{
		hub: hub, scheme: "dns+srv", target: "dns+srv:///" + name, poolAt: tg,
		backends: func(i int) *backend {
			b := startBackend(t, "b"+strconv.Itoa(i), loopbackIP(30+i), 0)
			srv.SetHosts(srv.Name(b.name), b.ip)
			return b
		},
		publish: func(live []*backend) {
			var recs []dnstest.SRV
			for _, b := range live {
				recs = append(recs, dnstest.SRV{Target: srv.Name(b.name), Port: uint16(b.port), Priority: 10, Weight: 10})
			}
			srv.SetSRV(name, recs...)
		},
	})
}

// Backends behind A records of one name (a headless Service's DNS, say),
// all on one port, replaced one by one by rewriting the records while
// dnsmasq runs.
func TestDNSHostRolloutFailsNoCall(t *testing.T) {
	one := uint32(1)
	srv := dnstest.Start(t, dnstest.Config{TTL: &one})
	src, hub := dnsHub(t, srv)
	first := startBackend(t, "b0", loopbackIP(40), 0)
	port := first.port
	name := srv.Name("greeter") + ":" + strconv.Itoa(port)
	tg, err := src.Target(name)
	if err != nil {
		t.Fatal(err)
	}
	runRollout(t, rollout{
		hub: hub, scheme: "dns+host", target: "dns+host:///" + name, poolAt: tg,
		backends: func(i int) *backend {
			if i == 0 {
				return first
			}
			return startBackend(t, "b"+strconv.Itoa(i), loopbackIP(40+i), port)
		},
		publish: func(live []*backend) {
			var ips []string
			for _, b := range live {
				ips = append(ips, b.ip)
			}
			srv.SetHosts(srv.Name("greeter"), ips...)
		},
	})
}

// SRV priority end to end (RFC 2782), real gRPC servers behind a real
// dnsmasq: a backup record (priority 20) takes no call beside the
// primaries (priority 10), through the resolver and through the pool;
// once the primaries' records are gone it takes every call, and no call
// fails meanwhile; and the pool, which knows its connections, also fails
// over to the backup while the primaries are still listed but cannot be
// reached.
func TestDNSSRVPriorityRoutesToTheLowest(t *testing.T) {
	one := uint32(1)
	srv := dnstest.Start(t, dnstest.Config{TTL: &one})
	src, hub := dnsHub(t, srv)
	name := "_grpc._tcp." + srv.Name("prio")
	tg, err := src.Target(name)
	if err != nil {
		t.Fatal(err)
	}
	p1, p2, backup := startBackend(t, "p1", loopbackIP(60), 0), startBackend(t, "p2", loopbackIP(61), 0), startBackend(t, "backup", loopbackIP(62), 0)
	for _, b := range []*backend{p1, p2, backup} {
		srv.SetHosts(srv.Name(b.name), b.ip)
	}
	rec := func(b *backend, prio uint16) dnstest.SRV {
		return dnstest.SRV{Target: srv.Name(b.name), Port: uint16(b.port), Priority: prio, Weight: 10}
	}
	srv.SetSRV(name, rec(p1, 10), rec(p2, 10), rec(backup, 20))

	ctx := ctxFor(t, 2*time.Minute)
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	b := must(grpcresolver.New("dns+srv", hub))
	t.Cleanup(func() { b.Close() })
	cc, err := grpc.NewClient("dns+srv:///"+name, append([]grpc.DialOption{creds}, b.DialOptions()...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	pool, ch, err := connpool.Recommended([]grpc.DialOption{creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pool.Close() })
	sub, err := hub.Subscribe("pool", pool, tg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Close() })
	clients := map[string]testgrpc.TestServiceClient{"resolver": testgrpc.NewTestServiceClient(cc), "pool": testgrpc.NewTestServiceClient(ch)}
	for path, c := range clients {
		waitServing(t, ctx, c, "p1", "p2")
		res := loadN(ctx, c, 4, 300)
		if res.failed > 0 || res.perPod["backup"] > 0 {
			t.Fatalf("%s with the primaries listed: %v (%d failed): the backup must take nothing", path, res.perPod, res.failed)
		}
	}
	stops := map[string]func() loadResult{}
	for path, c := range clients {
		stops[path] = startLoad(ctx, c, 4, 100)
	}
	srv.SetSRV(name, rec(backup, 20))
	for _, c := range clients {
		waitServing(t, ctx, c, "backup")
	}
	for path, stop := range stops {
		if res := stop(); res.failed > 0 {
			t.Fatalf("%s: %d calls failed while the primaries' records went: %v", path, res.failed, res.errs)
		}
	}
	for path, c := range clients {
		if res := loadN(ctx, c, 4, 200); res.failed > 0 || res.perPod["backup"] != res.ok {
			t.Fatalf("%s without primaries: %v (%d failed), want the backup only", path, res.perPod, res.failed)
		}
	}

	// The pool knows its connections: primaries listed but down, the
	// backup takes the calls.
	srv.SetSRV(name, rec(p1, 10), rec(p2, 10), rec(backup, 20))
	waitServing(t, ctx, clients["pool"], "p1", "p2")
	p1.gs.Stop()
	p2.gs.Stop()
	if res := loadN(ctx, clients["pool"], 4, 200); res.perPod["backup"] < 150 {
		t.Fatalf("pool with the primaries down: %v (%d failed), want the backup to take the calls", res.perPod, res.failed)
	}
}

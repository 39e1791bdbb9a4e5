package e2e_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/disco-lb/disco/core"
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
	hub := core.NewHub(src)
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

package dns_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/route"
	"github.com/disco-lb/disco/sources/dns"
	"github.com/disco-lb/disco/sources/dns/dnstest"
)

// A CNAME's TTL counts: a name whose CNAME (TTL 2 s) is re-pointed to
// another name whose A record has TTL 30 s is followed within the CNAME's
// TTL, not the A record's, for a host target and for an SRV target alike
// (a real dnsmasq: --cname with its own TTL, --host-record with its own).
func TestCNAMETTLCounts(t *testing.T) {
	srv := dnstest.Start(t, dnstest.Config{TTL: ptr(uint32(30))}) // the SRV records' TTL too
	src := newSource(t, srv, dns.WithTTLBounds(50*time.Millisecond, time.Minute))
	a, b, www := srv.Name("a"), srv.Name("b"), srv.Name("www")
	srv.SetHostRecord(a, 30, "10.5.0.1")
	srv.SetHostRecord(b, 30, "10.5.0.2")
	srv.SetCNAME(www, a, 2)
	svc := "_grpc._tcp." + srv.Name("svc")
	srv.SetSRV(svc, dnstest.SRV{Target: www, Port: 8080, Priority: 0, Weight: 1})

	host, srvTarget := target(t, src, www+":80"), target(t, src, svc)
	_, rec := coretest.Watch(t, src, host, srvTarget)
	waitFor(t, rec, host, "www.disco.test:80 10.5.0.1 80")
	waitFor(t, rec, srvTarget, "www.disco.test:8080 10.5.0.1 8080 w1 p0")

	began := time.Now()
	srv.SetCNAME(www, b, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second) // half the A record's TTL
	defer cancel()
	for _, tc := range []struct {
		tg   core.Target
		want string
	}{{host, "www.disco.test:80 10.5.0.2 80"}, {srvTarget, "www.disco.test:8080 10.5.0.2 8080 w1 p0"}} {
		if _, err := rec.WaitState(ctx, tc.tg, func(st core.State) bool {
			eps := endpointsOf(st.Endpoints)
			return len(eps) == 1 && eps[0] == tc.want
		}); err != nil {
			t.Fatalf("%s: the re-pointed CNAME was not followed within 15 s (A record TTL 30 s, CNAME TTL 2 s): %v", tc.tg, err)
		}
		t.Logf("%s followed the CNAME after %v", tc.tg, time.Since(began).Round(time.Millisecond))
	}
}

// A family's negative answer counts with its SOA's TTL: a name with an A
// record of TTL 30 s and no AAAA record (negative TTL 2 s) is asked again
// after 2 s, so an AAAA record added meanwhile is seen then.
func TestNegativeTTLOfTheOtherFamilyCounts(t *testing.T) {
	f := newFake(t)
	f.set("web.test.", rr(t, "web.test. 30 IN A 10.6.0.1"))
	f.with(func(f *fake) {
		f.soa["web.test."] = rr(t, "test. 2 IN SOA ns.test. admin.test. 1 60 60 60 2")[0].(*mdns.SOA)
	})
	src := fakeSource(t, f, dns.WithTTLBounds(50*time.Millisecond, time.Minute))
	tg := target(t, src, "web.test:80")
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, "web.test:80 10.6.0.1 80")
	f.set("web.test.", rr(t, "web.test. 30 IN A 10.6.0.1", "web.test. 30 IN AAAA fd00::6:1"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := rec.WaitState(ctx, tg, func(st core.State) bool {
		eps := endpointsOf(st.Endpoints)
		return len(eps) == 1 && eps[0] == "web.test:80 10.6.0.1,fd00::6:1 80"
	}); err != nil {
		t.Fatal("the AAAA record added after the negative TTL (2 s) was not seen within 10 s (the A record's TTL is 30 s)")
	}
}

// SRV priority (RFC 2782) is carried on the endpoint, and core.Routable
// routes to the lowest priority that has endpoints: backups take no
// traffic beside the primaries, and take it when none is left.
func TestSRVPriorityFromARealServer(t *testing.T) {
	srv := dnstest.Start(t, dnstest.Config{TTL: ptr(uint32(0))})
	src := newSource(t, srv)
	p1, p2, backup := srv.Name("p1"), srv.Name("p2"), srv.Name("backup")
	srv.SetHosts(p1, "10.7.0.1")
	srv.SetHosts(p2, "10.7.0.2")
	srv.SetHosts(backup, "10.7.0.9")
	name := "_grpc._tcp." + srv.Name("prio")
	srv.SetSRV(name,
		dnstest.SRV{Target: p1, Port: 80, Priority: 10, Weight: 3},
		dnstest.SRV{Target: p2, Port: 80, Priority: 10, Weight: 1},
		dnstest.SRV{Target: backup, Port: 80, Priority: 20, Weight: 5})
	tg := target(t, src, name)
	_, rec := coretest.Watch(t, src, tg)
	st := waitFor(t, rec, tg, "backup.disco.test:80 10.7.0.9 80 w5 p20", "p1.disco.test:80 10.7.0.1 80 w3 p10", "p2.disco.test:80 10.7.0.2 80 w1 p10")
	if got := idsOfEndpoints(route.Routable(st.Endpoints)); fmt.Sprint(got) != "[p1.disco.test:80 p2.disco.test:80]" {
		t.Fatalf("routable %v, want the priority-10 records only", got)
	}
	srv.SetSRV(name, dnstest.SRV{Target: backup, Port: 80, Priority: 20, Weight: 5})
	st = waitFor(t, rec, tg, "backup.disco.test:80 10.7.0.9 80 w5 p20")
	if got := idsOfEndpoints(route.Routable(st.Endpoints)); fmt.Sprint(got) != "[backup.disco.test:80]" {
		t.Fatalf("routable %v, want the backup once no primary is left", got)
	}
}

func idsOfEndpoints(eps []*core.Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.ID)
	}
	return out
}

// The additional section is used (with its TTLs): a 200-target SRV answer
// that carries its targets' addresses costs one question (over UDP, then
// TCP for the whole answer), not 401; without it,
// the targets are asked concurrently, never more than WithConcurrency at
// once.
func TestSRVTargetsUseTheAdditionalSectionAndAQueryBound(t *testing.T) {
	for _, glue := range []bool{true, false} {
		t.Run(fmt.Sprintf("glue=%v", glue), func(t *testing.T) {
			f := newFake(t)
			var inflight, peak atomic.Int32
			f.with(func(f *fake) {
				f.delay = 2 * time.Millisecond
				f.onQuery = func(enter bool) {
					if !enter {
						inflight.Add(-1)
						return
					}
					n := inflight.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
				}
			})
			name := "_grpc._tcp.fleet.test."
			srvFleet(t, f, name, 200, 30, glue)
			src := fakeSource(t, f, dns.WithConcurrency(8))
			tg := target(t, src, name[:len(name)-1])
			_, rec := coretest.Watch(t, src, tg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := rec.WaitState(ctx, tg, func(st core.State) bool { return st.Synced && st.Endpoints.Len() == 200 }); err != nil {
				t.Fatal(err)
			}
			queries := f.total()
			switch {
			case glue && queries != 2:
				t.Fatalf("%d queries with every address in the additional section, want 2 (the SRV question over UDP, truncated, then TCP)", queries)
			case !glue && queries != 402:
				t.Fatalf("%d queries, want 402 (the SRV question over UDP and TCP, an A and an AAAA per target)", queries)
			case !glue && (peak.Load() > 8 || peak.Load() < 2):
				t.Fatalf("at most %d queries in flight, want 2 to 8 (concurrent, bounded by WithConcurrency(8))", peak.Load())
			}
		})
	}
}

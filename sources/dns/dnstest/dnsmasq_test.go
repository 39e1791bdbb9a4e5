package dnstest_test

import (
	"context"
	"slices"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/disco-lb/disco/sources/dns/dnstest"
)

func query(t *testing.T, addr, name string, qt uint16) *mdns.Msg {
	t.Helper()
	q := new(mdns.Msg)
	q.SetQuestion(mdns.Fqdn(name), qt)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m, _, err := (&mdns.Client{}).ExchangeContext(ctx, q, addr)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return m
}

func answers(m *mdns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		out = append(out, rr.String())
	}
	slices.Sort(out)
	return out
}

// The server answers what the test sets, changes it at run time, says
// NXDOMAIN for names it does not have, and times out while paused.
func TestServerAnswersWhatTheTestSets(t *testing.T) {
	ttl := uint32(7)
	s := dnstest.Start(t, dnstest.Config{TTL: &ttl})
	web := s.Name("web")
	s.SetHosts(web, "10.0.0.1", "fd00::1")
	a := query(t, s.Addr(), web, mdns.TypeA)
	if len(a.Answer) != 1 || a.Answer[0].(*mdns.A).A.String() != "10.0.0.1" || a.Answer[0].Header().Ttl != 7 {
		t.Fatalf("A %s: %v", web, answers(a))
	}
	aaaa := query(t, s.Addr(), web, mdns.TypeAAAA)
	if len(aaaa.Answer) != 1 || aaaa.Answer[0].(*mdns.AAAA).AAAA.String() != "fd00::1" {
		t.Fatalf("AAAA %s: %v", web, answers(aaaa))
	}
	s.SetHosts(web, "10.0.0.2", "10.0.0.3")
	if got := query(t, s.Addr(), web, mdns.TypeA); len(got.Answer) != 2 {
		t.Fatalf("A %s after change: %v", web, answers(got))
	}
	if m := query(t, s.Addr(), s.Name("nosuch"), mdns.TypeA); m.Rcode != mdns.RcodeNameError {
		t.Fatalf("nosuch: rcode %s, want NXDOMAIN", mdns.RcodeToString[m.Rcode])
	}

	svc := "_grpc._tcp." + s.Name("svc")
	s.SetSRV(svc, dnstest.SRV{Target: web, Port: 50051, Priority: 10, Weight: 60})
	m := query(t, s.Addr(), svc, mdns.TypeSRV)
	if len(m.Answer) != 1 || m.Answer[0].(*mdns.SRV).Weight != 60 || m.Answer[0].Header().Ttl != 7 {
		t.Fatalf("SRV %s: %v", svc, answers(m))
	}
	if got := query(t, s.Addr(), web, mdns.TypeA); len(got.Answer) != 2 {
		t.Fatalf("hosts lost across a restart: %v", answers(got))
	}

	s.Pause()
	q := new(mdns.Msg)
	q.SetQuestion(mdns.Fqdn(web), mdns.TypeA)
	if _, _, err := (&mdns.Client{Timeout: 300 * time.Millisecond}).Exchange(q, s.Addr()); err == nil {
		t.Fatal("a paused server answered")
	}
	s.Resume()
	query(t, s.Addr(), web, mdns.TypeA)
}

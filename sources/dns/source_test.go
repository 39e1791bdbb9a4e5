package dns_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sources/dns"
	"github.com/disco-lb/disco/sources/dns/dnstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ptr[T any](v T) *T { return &v }

// dnsHarness runs core's source conformance suite against the DNS source
// and a real dnsmasq: each target is a name of the test domain, Write sets
// its A records, Break stops the process (queries time out).
type dnsHarness struct {
	srv *dnstest.Server
	src *dns.Source
	n   atomic.Int32
}

func (h *dnsHarness) Source() core.Source { return h.src }

func (h *dnsHarness) NewTarget(t *testing.T) core.Target {
	tg, err := h.src.Target(fmt.Sprintf("%s:8080", h.srv.Name(fmt.Sprintf("conf-%d", h.n.Add(1)))))
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

func (h *dnsHarness) Write(t *testing.T, tg core.Target, bs []coretest.Backend) {
	var addrs []string
	for _, b := range bs {
		if b.Port != 8080 {
			t.Fatalf("harness writes port 8080 only, got %d", b.Port)
		}
		addrs = append(addrs, b.Address)
	}
	h.srv.SetHosts(tg.Name, addrs...)
}

func (h *dnsHarness) Break(t *testing.T) bool { h.srv.Pause(); return true }
func (h *dnsHarness) Heal(t *testing.T)       { h.srv.Resume() }

// NXDOMAIN: the name has no endpoints, synced and empty.
func (h *dnsHarness) Missing(t *testing.T) (core.Target, error, bool) {
	tg, err := h.src.Target(h.srv.Name("nosuch") + ":8080")
	if err != nil {
		t.Fatal(err)
	}
	return tg, nil, true
}

func (h *dnsHarness) Timeout() time.Duration     { return 10 * time.Second }
func (h *dnsHarness) IgnoreGoroutines() []string { return nil }

func TestSourcePassesTheSourceSuite(t *testing.T) {
	srv := dnstest.Start(t, dnstest.Config{TTL: ptr(uint32(0))})
	src, err := dns.New(dns.WithServer(srv.Addr()), dns.WithTTLBounds(50*time.Millisecond, time.Second),
		dns.WithTimeout(200*time.Millisecond), dns.WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	coretest.TestSource(t, &dnsHarness{srv: srv, src: src})
}

// endpointsOf renders a set as "id addrs port weight priority" lines.
func endpointsOf(s core.Set) []string {
	var out []string
	for e := range s.All() {
		line := fmt.Sprintf("%s %s %d", e.ID, strings.Join(e.Addresses, ","), e.Port)
		if p, ok := e.Labels["dns.priority"]; ok {
			if p != fmt.Sprint(e.Priority) {
				line += " priority label " + p + " but field " + fmt.Sprint(e.Priority)
			}
			line += fmt.Sprintf(" w%d p%d", e.Weight, e.Priority)
		}
		out = append(out, line)
	}
	return out
}

// waitFor waits until tg's last state is synced, fresh and has want.
func waitFor(t *testing.T, rec *coretest.Recorder, tg core.Target, want ...string) core.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	last, err := rec.WaitState(ctx, tg, func(st core.State) bool {
		return st.Synced && !st.Stale.IsStale() && slices.Equal(endpointsOf(st.Endpoints), want)
	})
	if err != nil {
		t.Fatalf("%s: want %q, last state: synced %v stale %q endpoints %q", tg, want, last.Synced, last.Stale.Reason, endpointsOf(last.Endpoints))
	}
	return last
}

func newSource(t *testing.T, srv *dnstest.Server, opts ...dns.Option) *dns.Source {
	t.Helper()
	return sourceAt(t, srv.Addr(), opts...)
}

// sourceAt returns a source asking addr, with short timeouts and backoff so
// tests run fast.
func sourceAt(t testing.TB, addr string, opts ...dns.Option) *dns.Source {
	t.Helper()
	base := []dns.Option{dns.WithServer(addr), dns.WithTTLBounds(50*time.Millisecond, 10*time.Second),
		dns.WithTimeout(200 * time.Millisecond), dns.WithBackoff(20*time.Millisecond, 200*time.Millisecond)}
	src, err := dns.New(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func target(t *testing.T, src *dns.Source, text string) core.Target {
	t.Helper()
	tg, err := src.Target(text)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// SRV records from a real dnsmasq: one endpoint per target host with all of
// its addresses, the record's port, weight and priority; the records change
// at run time (dnsmasq restarts, so the source rides out refused queries).
func TestSRVFromARealServer(t *testing.T) {
	srv := dnstest.Start(t, dnstest.Config{TTL: ptr(uint32(0))})
	src := newSource(t, srv)
	a, b, c := srv.Name("a"), srv.Name("b"), srv.Name("c")
	srv.SetHosts(a, "10.1.0.1", "fd00::1") // dual-stack
	srv.SetHosts(b, "10.1.0.2")
	srv.SetHosts(c, "fd00::3") // IPv6 only
	name := "_grpc._tcp." + srv.Name("greeter")
	srv.SetSRV(name,
		dnstest.SRV{Target: a, Port: 50051, Priority: 10, Weight: 60},
		dnstest.SRV{Target: b, Port: 50052, Priority: 10, Weight: 40},
		dnstest.SRV{Target: srv.Name("gone"), Port: 50053, Priority: 10, Weight: 5}, // no addresses: left out
	)
	tg := target(t, src, name)
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg,
		"a.disco.test:50051 10.1.0.1,fd00::1 50051 w60 p10",
		"b.disco.test:50052 10.1.0.2 50052 w40 p10")

	srv.SetSRV(name,
		dnstest.SRV{Target: a, Port: 50051, Priority: 10, Weight: 60},
		dnstest.SRV{Target: c, Port: 50053, Priority: 20, Weight: 0},
	)
	waitFor(t, rec, tg,
		"a.disco.test:50051 10.1.0.1,fd00::1 50051 w60 p10",
		"c.disco.test:50053 fd00::3 50053 w0 p20")

	// A host's addresses change without the SRV records changing.
	srv.SetHosts(a, "10.1.0.9")
	waitFor(t, rec, tg,
		"a.disco.test:50051 10.1.0.9 50051 w60 p10",
		"c.disco.test:50053 fd00::3 50053 w0 p20")

	// No SRV records left: NODATA for the name, a synced empty set.
	srv.SetSRV(name)
	waitFor(t, rec, tg)
}

// A and AAAA: a name with one address of each family is one dual-stack
// endpoint; several addresses of a family are one endpoint each.
func TestHostRecordsFromARealServer(t *testing.T) {
	srv := dnstest.Start(t, dnstest.Config{TTL: ptr(uint32(0))})
	src := newSource(t, srv)
	web := srv.Name("web")
	srv.SetHosts(web, "10.2.0.1", "fd00::1")
	tg := target(t, src, web+":50051")
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, "web.disco.test:50051 10.2.0.1,fd00::1 50051")
	srv.SetHosts(web, "10.2.0.1", "10.2.0.2", "fd00::1")
	waitFor(t, rec, tg, "10.2.0.1:50051 10.2.0.1 50051", "10.2.0.2:50051 10.2.0.2 50051", "[fd00::1]:50051 fd00::1 50051")
	srv.SetHosts(web) // NXDOMAIN
	waitFor(t, rec, tg)
}

// A change is seen within the answer's TTL plus a small margin, and the
// source does not query more often than the TTL allows (dnsmasq logs every
// query it gets).
func TestChangeSeenWithinTTL(t *testing.T) {
	srv := dnstest.Start(t, dnstest.Config{TTL: ptr(uint32(1))})
	src := newSource(t, srv)
	web := srv.Name("ttl")
	srv.SetHosts(web, "10.3.0.1")
	tg := target(t, src, web+":50051")
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, "ttl.disco.test:50051 10.3.0.1 50051")
	var worst time.Duration
	for i := range 3 {
		addr := fmt.Sprintf("10.3.0.%d", i+2)
		changed := time.Now()
		srv.SetHosts(web, addr)
		waitFor(t, rec, tg, fmt.Sprintf("ttl.disco.test:50051 %s 50051", addr))
		worst = max(worst, time.Since(changed))
	}
	// TTL 1 s: the change is seen by the next query, at most 1 s later.
	// The margin is generous for a loaded CI machine; BenchmarkChangeToPublish
	// measures the real figure.
	if worst > 3*time.Second {
		t.Fatalf("a change took %v to be seen with a TTL of 1s", worst)
	}
	t.Logf("worst change-to-publish with TTL 1s: %v", worst)
}

// Every query the source makes is at least the TTL apart: with TTL 1 s and
// a floor of 50 ms, 2 s of watching is about 2 queries per record type,
// not 40.
func TestSourceQueriesNoMoreOftenThanTheTTL(t *testing.T) {
	f := newFake(t)
	f.set("web.test.", answerA(1, "10.4.0.1")(t, "web.test."))
	src := fakeSource(t, f)
	tg := target(t, src, "web.test:80")
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, "web.test:80 10.4.0.1 80")
	before := f.count("web.test.", "A")
	time.Sleep(2 * time.Second)
	n := f.count("web.test.", "A") - before
	if n < 1 || n > 3 {
		t.Fatalf("%d A queries in 2s with a TTL of 1s, want 1 to 3", n)
	}
}

func TestTargetSyntax(t *testing.T) {
	src, err := dns.New(dns.WithServer("127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		text, want string
	}{
		{"greeter.example.com:50051", ""},
		{"_grpc._tcp.greeter.example.com", ""},
		{"greeter.example.com", "needs a port"},
		{"greeter.example.com:http", "needs a port"},
		{"greeter.example.com:70000", "between 1 and 65535"},
		{"_grpc._tcp.greeter.example.com:50051", "takes no port"},
		{"bad..name:80", "empty label"},
		{"", ""},
	} {
		_, err := src.Target(tc.text)
		switch {
		case tc.text == "":
			if !errors.Is(err, core.ErrInvalid) {
				t.Errorf("Target(%q) = %v, want ErrInvalid", tc.text, err)
			}
		case tc.want == "" && err != nil:
			t.Errorf("Target(%q) = %v", tc.text, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, core.ErrInvalid)):
			t.Errorf("Target(%q) = %v, want ErrInvalid saying %q", tc.text, err, tc.want)
		}
	}
	hostOnly, _ := dns.New(dns.WithServer("127.0.0.1:1"), dns.WithMode(dns.Host))
	if _, err := hostOnly.Target("_grpc._tcp.example.com:80"); err != nil {
		t.Errorf("Host mode: %v", err)
	}
	srvOnly, _ := dns.New(dns.WithServer("127.0.0.1:1"), dns.WithMode(dns.SRV))
	if _, err := srvOnly.Target("greeter.example.com"); err != nil {
		t.Errorf("SRV mode: %v", err)
	}
}

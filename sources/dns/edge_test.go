package dns_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/sources/dns"
)

// waitStale waits until tg's last state is stale and returns it.
func waitStale(t *testing.T, rec *coretest.Recorder, tg core.Target) core.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := rec.WaitState(ctx, tg, func(st core.State) bool { return st.Stale.IsStale() })
	if err != nil {
		t.Fatalf("%s never went stale; last: %+v", tg, st)
	}
	return st
}

// A UDP answer with the TC bit set is asked again over TCP, and the full
// TCP answer is what is published.
func TestTruncatedAnswerIsAskedAgainOverTCP(t *testing.T) {
	f := newFake(t)
	var addrs []string
	for i := range 40 {
		addrs = append(addrs, "10.5.0."+strconv.Itoa(i+1))
	}
	f.set("big.test.", answerA(30, addrs...)(t, "big.test."))
	f.with(func(f *fake) { f.trunc["big.test."] = 3 })
	src := fakeSource(t, f)
	tg := target(t, src, "big.test:80")
	_, rec := coretest.Watch(t, src, tg)
	var want []string
	for _, a := range addrs {
		want = append(want, a+":80 "+a+" 80")
	}
	slices.Sort(want)
	waitFor(t, rec, tg, want...)
	if f.countNet("big.test.", "A", "tcp") == 0 {
		t.Fatal("no TCP query")
	}
}

// SERVFAIL, REFUSED, silence and garbage are the server's failures, not
// the name's: the last good set stays, stale, with a reason naming the
// server and what it did; the source recovers when the server does.
func TestServerFailuresKeepTheLastGoodSet(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fail   func(f *fake)
		reason string
	}{
		{"SERVFAIL", func(f *fake) { f.rcode = mdns.RcodeServerFailure }, "SERVFAIL"},
		{"REFUSED", func(f *fake) { f.rcode = mdns.RcodeRefused }, "REFUSED"},
		{"timeout", func(f *fake) { f.drop = true }, "timeout"},
		{"garbage", func(f *fake) { f.garbage = true }, "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.set("web.test.", answerA(0, "10.6.0.1", "10.6.0.2")(t, "web.test."))
			src := fakeSource(t, f)
			tg := target(t, src, "web.test:80")
			_, rec := coretest.Watch(t, src, tg)
			want := []string{"10.6.0.1:80 10.6.0.1 80", "10.6.0.2:80 10.6.0.2 80"}
			waitFor(t, rec, tg, want...)
			f.with(tc.fail)
			st := waitStale(t, rec, tg)
			if got := endpointsOf(st.Endpoints); !st.Synced || strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("stale state holds %q (synced %v), want the last good %q", got, st.Synced, want)
			}
			if st.Stale.Kind != core.KindUnavailable || !strings.Contains(st.Stale.Reason, tc.reason) || !strings.Contains(st.Stale.Reason, "web.test") {
				t.Fatalf("staleness %+v: want unavailable, naming %q and the name", st.Stale, tc.reason)
			}
			for _, u := range rec.For(tg) {
				if u.State.Synced && u.State.Endpoints.Len() != 2 {
					t.Fatalf("the failing server made the source publish %q", endpointsOf(u.State.Endpoints))
				}
			}
			f.with(func(f *fake) { f.rcode, f.drop, f.garbage = 0, false, false })
			waitFor(t, rec, tg, want...)
		})
	}
}

// NXDOMAIN and NODATA mean the name has no endpoints: a synced, fresh,
// empty set (scale to zero), not a failure.
func TestNoSuchNameIsEmptyNotStale(t *testing.T) {
	f := newFake(t)
	f.set("web.test.", answerA(0, "10.7.0.1")(t, "web.test."))
	src := fakeSource(t, f)
	tg := target(t, src, "web.test:80")
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, "web.test:80 10.7.0.1 80")
	f.set("web.test.", nil) // NXDOMAIN
	waitFor(t, rec, tg)
	f.set("web.test.", answerA(0, "10.7.0.2")(t, "web.test."))
	waitFor(t, rec, tg, "web.test:80 10.7.0.2 80")
	f.set("web.test.", rr(t, "web.test. 0 IN TXT hello")) // NODATA for A and AAAA
	waitFor(t, rec, tg)
}

// "No such name" is cached for the SOA's negative TTL (RFC 2308), not
// asked again at the floor.
func TestNegativeAnswerHonoursTheSOA(t *testing.T) {
	f := newFake(t)
	f.with(func(f *fake) {
		f.soa["gone.test."] = rr(t, "test. 1 IN SOA ns.test. admin.test. 1 60 60 60 1")[0].(*mdns.SOA)
	})
	src := fakeSource(t, f)
	tg := target(t, src, "gone.test:80")
	sub, _ := coretest.Watch(t, src, tg)
	if err := sub.WaitSynced(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	before := f.count("gone.test.", "A")
	time.Sleep(2 * time.Second)
	if n := f.count("gone.test.", "A") - before; n < 1 || n > 3 {
		t.Fatalf("%d A queries in 2s for a name whose absence may be cached 1s, want 1 to 3", n)
	}
}

// SRV edge cases: "." means no service; duplicate records count once; a
// host answered only in the additional section is used; CNAMEs are
// followed; a host with no address is left out.
func TestSRVEdgeCases(t *testing.T) {
	f := newFake(t)
	f.set("_grpc._tcp.none.test.", rr(t, "_grpc._tcp.none.test. 30 IN SRV 0 0 0 ."))
	f.set("_grpc._tcp.svc.test.", rr(t,
		"_grpc._tcp.svc.test. 30 IN SRV 10 50 8080 a.test.",
		"_grpc._tcp.svc.test. 30 IN SRV 10 50 8080 A.TEST.", // the same, in other case
		"_grpc._tcp.svc.test. 30 IN SRV 20 0 8081 glue.test.",
		"_grpc._tcp.svc.test. 30 IN SRV 20 0 8082 alias.test.",
		"_grpc._tcp.svc.test. 30 IN SRV 30 0 8083 void.test.",
	))
	f.set("a.test.", rr(t, "a.test. 30 IN A 10.8.0.1", "a.test. 30 IN AAAA fd00::8:1"))
	f.set("alias.test.", rr(t, "alias.test. 30 IN CNAME real.test."))
	f.set("real.test.", rr(t, "real.test. 30 IN A 10.8.0.3"))
	f.with(func(f *fake) {
		f.extra["_grpc._tcp.svc.test."] = rr(t, "glue.test. 30 IN A 10.8.0.2")
	})
	src := fakeSource(t, f)
	none, svc := target(t, src, "_grpc._tcp.none.test"), target(t, src, "_grpc._tcp.svc.test")
	_, rec := coretest.Watch(t, src, none, svc)
	waitFor(t, rec, none)
	waitFor(t, rec, svc,
		"a.test:8080 10.8.0.1,fd00::8:1 8080 w50 p10",
		"alias.test:8082 10.8.0.3 8082 w0 p20",
		"glue.test:8081 10.8.0.2 8081 w0 p20")
}

// The servers are asked in order: a dead or failing first server costs a
// timeout, not the answer.
func TestNextServerAnswersWhenOneFails(t *testing.T) {
	bad, good := newFake(t), newFake(t)
	bad.with(func(f *fake) { f.rcode = mdns.RcodeServerFailure })
	good.set("web.test.", answerA(30, "10.9.0.1")(t, "web.test."))
	src, err := dns.New(dns.WithServer(bad.addr, good.addr), dns.WithTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	tg := target(t, src, "web.test:80")
	_, rec := coretest.Watch(t, src, tg)
	waitFor(t, rec, tg, "web.test:80 10.9.0.1 80")
	if bad.count("web.test.", "A") == 0 {
		t.Fatal("the first server was not asked")
	}
}

// A source needs a server: an empty or missing resolv.conf is an error that
// says so.
func TestNewWithoutServers(t *testing.T) {
	if _, err := dns.New(dns.WithResolvConf(t.TempDir() + "/nope")); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("New with a missing resolv.conf = %v", err)
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

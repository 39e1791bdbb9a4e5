package dns_test

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/disco-lb/disco/sources/dns"
)

// fake is an in-process DNS server on loopback (UDP and TCP) for the edge
// cases a real server will not produce on demand: truncation, SERVFAIL,
// silence, garbage.
type fake struct {
	addr    string
	mu      sync.Mutex
	records map[string][]mdns.RR // FQDN → records of every type
	extra   map[string][]mdns.RR // FQDN → additional section for its answers
	soa     map[string]*mdns.SOA // FQDN → SOA for negative answers
	trunc   map[string]int       // FQDN → answers per UDP reply before TC
	rcode   int                  // non-zero: every query gets this code
	drop    bool                 // no answer at all
	garbage bool                 // answer bytes that are no DNS message
	counts  map[string]int       // "name type network" → queries
	delay   time.Duration        // each answer waits this long (a round trip)
	onQuery func(enter bool)     // called as a query starts and ends
}

func newFake(t testing.TB) *fake {
	t.Helper()
	f := &fake{records: map[string][]mdns.RR{}, extra: map[string][]mdns.RR{}, soa: map[string]*mdns.SOA{},
		trunc: map[string]int{}, counts: map[string]int{}}
	// A UDP port whose TCP twin is free too: a few tries, as another
	// process may hold the TCP port.
	var pc net.PacketConn
	var ln net.Listener
	var err error
	for range 20 {
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	f.addr = pc.LocalAddr().String()
	for _, s := range []*mdns.Server{{PacketConn: pc, Handler: f}, {Listener: ln, Handler: f}} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() { defer close(done); _ = s.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { _ = s.Shutdown(); <-done })
	}
	return f
}

func fakeSource(t *testing.T, f *fake, opts ...dns.Option) *dns.Source {
	t.Helper()
	return sourceAt(t, f.addr, opts...)
}

// rr parses records in zone-file syntax.
func rr(t *testing.T, lines ...string) []mdns.RR {
	t.Helper()
	out := make([]mdns.RR, len(lines))
	for i, l := range lines {
		r, err := mdns.NewRR(l)
		if err != nil {
			t.Fatalf("record %q: %v", l, err)
		}
		out[i] = r
	}
	return out
}

// answerA returns A and AAAA records of web.test. with the TTL.
func answerA(ttl int, addrs ...string) func(t *testing.T, name string) []mdns.RR {
	return func(t *testing.T, name string) []mdns.RR {
		var lines []string
		for _, a := range addrs {
			typ := "A"
			if strings.Contains(a, ":") {
				typ = "AAAA"
			}
			lines = append(lines, name+" "+strconv.Itoa(ttl)+" IN "+typ+" "+a)
		}
		return rr(t, lines...)
	}
}

// set replaces the records of name (nil: the name does not exist).
func (f *fake) set(name string, recs []mdns.RR) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if recs == nil {
		delete(f.records, name)
		return
	}
	f.records[name] = recs
}

func (f *fake) with(fn func(f *fake)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fake) count(name, typ string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[name+" "+typ+" udp"] + f.counts[name+" "+typ+" tcp"]
}

func (f *fake) countNet(name, typ, network string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[name+" "+typ+" "+network]
}

// total returns how many queries the server got.
func (f *fake) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.counts {
		n += c
	}
	return n
}

func (f *fake) ServeDNS(w mdns.ResponseWriter, q *mdns.Msg) {
	f.mu.Lock()
	delay, on := f.delay, f.onQuery
	f.mu.Unlock()
	if on != nil {
		on(true)
	}
	time.Sleep(delay) // outside the lock: answers overlap as a real server's do
	if on != nil {
		on(false) // before the answer goes out: the client may ask again at once
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(q.Question) != 1 {
		return
	}
	qn, qt := strings.ToLower(q.Question[0].Name), q.Question[0].Qtype
	network := w.RemoteAddr().Network()
	f.counts[qn+" "+mdns.TypeToString[qt]+" "+network]++
	switch {
	case f.drop:
		return
	case f.garbage:
		_, _ = w.Write([]byte("this is no DNS message"))
		return
	}
	m := new(mdns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if f.rcode != 0 {
		m.Rcode = f.rcode
		_ = w.WriteMsg(m)
		return
	}
	recs, ok := f.records[qn]
	if !ok {
		m.Rcode = mdns.RcodeNameError
	}
	for _, r := range recs {
		if r.Header().Rrtype == qt || (r.Header().Rrtype == mdns.TypeCNAME && qt != mdns.TypeCNAME) {
			m.Answer = append(m.Answer, r)
			if c, ok := r.(*mdns.CNAME); ok { // follow one level, as a recursive server does
				for _, r2 := range f.records[strings.ToLower(c.Target)] {
					if r2.Header().Rrtype == qt {
						m.Answer = append(m.Answer, r2)
					}
				}
			}
		}
	}
	if len(m.Answer) > 0 {
		m.Extra = f.extra[qn]
	} else if soa := f.soa[qn]; soa != nil {
		m.Ns = []mdns.RR{soa}
	}
	if n, ok := f.trunc[qn]; ok && network == "udp" && len(m.Answer) > n {
		m.Answer = m.Answer[:n]
		m.Truncated = true
	} else if network == "udp" {
		size := mdns.MinMsgSize // as a real server: what fits the client's buffer, else TC
		if opt := q.IsEdns0(); opt != nil {
			size = int(opt.UDPSize())
		}
		m.Truncate(size)
	}
	_ = w.WriteMsg(m)
}

// srvFleet sets name's SRV answer to n targets h<i>.test., each with an A
// record; with glue, their addresses ride in the additional section too.
func srvFleet(t testing.TB, f *fake, name string, n int, ttl int, glue bool) {
	var srvs, extra []mdns.RR
	for i := range n {
		host := fmt.Sprintf("h%d.test.", i)
		r, _ := mdns.NewRR(fmt.Sprintf("%s %d IN SRV 0 1 8080 %s", name, ttl, host))
		srvs = append(srvs, r)
		a, _ := mdns.NewRR(fmt.Sprintf("%s %d IN A 10.%d.%d.%d", host, ttl, 8+i/62500, i/250%250, i%250+1))
		f.set(host, []mdns.RR{a})
		if glue {
			extra = append(extra, a)
		}
	}
	f.set(name, srvs)
	f.with(func(f *fake) { f.extra[name] = extra })
}

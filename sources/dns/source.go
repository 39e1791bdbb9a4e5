package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/kit"
)

// Mode selects what a target's name is asked for.
type Mode int

const (
	// Auto: SRV for names that start with '_' (_grpc._tcp.example.com),
	// A and AAAA for the rest.
	Auto Mode = iota
	// SRV records only.
	SRV
	// A and AAAA records only.
	Host
)

// Option configures a Source. A value out of range makes New fail with an
// error naming the option and what it allows.
type Option = kit.Option[*options]

type options struct {
	kit.Common // WithLogger, WithBackoff
	servers    []string
	mode       Mode
	floor      time.Duration
	ceiling    time.Duration
	timeout    time.Duration
	confPath   string
	// concurrency bounds the address queries of one SRV answer in flight.
	concurrency int
}

// WithServer sets the DNS servers to ask, in order ("10.96.0.10:53"; a
// missing port means 53). Default: the nameservers of /etc/resolv.conf.
func WithServer(addrs ...string) Option {
	return func(o *options) error {
		o.servers = nil
		for _, a := range addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				a = net.JoinHostPort(a, "53")
			}
			if _, port, err := net.SplitHostPort(a); err != nil || port == "" {
				return &kit.OptionError{Option: "WithServer", Value: a, Want: "host or host:port"}
			}
			o.servers = append(o.servers, a)
		}
		return nil
	}
}

// WithResolvConf sets the file that lists the servers when WithServer is
// not given (default /etc/resolv.conf).
func WithResolvConf(path string) Option {
	return func(o *options) error { o.confPath = path; return nil }
}

// WithMode forces SRV or A/AAAA queries (default Auto).
func WithMode(m Mode) Option {
	return kit.Checked(kit.Between("WithMode", m, Auto, Host), func(o *options) { o.mode = m })
}

// WithTTLBounds bounds the time between two queries of a name: its answer's
// TTL, but at least floor and at most ceiling (0 < floor <= ceiling <= 24h;
// defaults 1s and 5m). A TTL of 0 is asked again after floor.
func WithTTLBounds(floor, ceiling time.Duration) Option {
	return func(o *options) error {
		if floor <= 0 || ceiling < floor || ceiling > 24*time.Hour {
			return &kit.OptionError{Option: "WithTTLBounds", Value: fmt.Sprintf("%v, %v", floor, ceiling), Want: "0 < floor <= ceiling <= 24h"}
		}
		o.floor, o.ceiling = floor, ceiling
		return nil
	}
}

// WithTimeout bounds each query (more than 0, at most 1m; default 2s).
func WithTimeout(d time.Duration) Option {
	return kit.Checked(kit.Positive("WithTimeout", d, time.Minute), func(o *options) { o.timeout = d })
}

// WithBackoff sets the jittered backoff between failed queries (0 < min <=
// max <= 24h; default 200ms to 30s).
func WithBackoff(min, max time.Duration) Option {
	return kit.WithBackoff[*options]("WithBackoff", min, max)
}

// WithConcurrency bounds how many hosts of one SRV answer are asked for
// their addresses at once (1 to 1024; default 16); hosts whose addresses
// the answer's additional section carries are not asked at all.
func WithConcurrency(n int) Option {
	return kit.Checked(kit.Between("WithConcurrency", n, 1, 1024), func(o *options) { o.concurrency = n })
}

// WithLogger sets the logger (nil: none).
var WithLogger = kit.WithLogger[*options]

// Source discovers endpoints from DNS. It implements core.Source. Safe for
// concurrent use; each watched target queries on its own schedule.
type Source struct {
	opts options
}

var _ core.Source = (*Source)(nil)

// ErrNoServer is returned by New when no DNS server is given or found.
var ErrNoServer = errors.New("dns: no DNS server")

// New returns a source asking opts' servers (or /etc/resolv.conf's). It
// starts nothing.
func New(opts ...Option) (*Source, error) {
	o := options{Common: kit.Common{Log: zap.NewNop(), Backoff: kit.Backoff{Min: 200 * time.Millisecond, Max: 30 * time.Second}},
		mode: Auto, floor: time.Second, ceiling: 5 * time.Minute, timeout: 2 * time.Second, confPath: "/etc/resolv.conf", concurrency: 16}
	if err := kit.Apply(&o, opts...); err != nil {
		return nil, fmt.Errorf("dns: %w: %w", err, core.ErrInvalid)
	}
	if len(o.servers) == 0 {
		conf, err := mdns.ClientConfigFromFile(o.confPath)
		if err != nil {
			return nil, fmt.Errorf("dns: read %s: %v: %w", o.confPath, err, ErrNoServer)
		}
		for _, s := range conf.Servers {
			o.servers = append(o.servers, net.JoinHostPort(s, conf.Port))
		}
		if len(o.servers) == 0 {
			return nil, fmt.Errorf("dns: %s lists no nameserver: %w", o.confPath, ErrNoServer)
		}
	}
	return &Source{opts: o}, nil
}

// Target parses text with core.ParseTarget (core.HostSyntax) and checks it
// fits the source's mode: an SRV name takes no port, an A/AAAA name needs a
// port number. Errors wrap core.ErrInvalid.
func (s *Source) Target(text string) (core.Target, error) {
	t, err := core.ParseTarget(text, core.HostSyntax)
	if err != nil {
		return t, err
	}
	return t, s.check(t)
}

func (s *Source) srv(t core.Target) bool {
	return s.opts.mode == SRV || (s.opts.mode == Auto && strings.HasPrefix(t.Name, "_"))
}

func (s *Source) check(t core.Target) error {
	if err := t.Validate(); err != nil {
		return err
	}
	if _, ok := mdns.IsDomainName(t.Name); !ok {
		return fmt.Errorf("dns: target %s: %q is not a domain name: %w", t, t.Name, core.ErrInvalid)
	}
	if s.srv(t) {
		if t.Port != "" {
			return fmt.Errorf("dns: target %s: an SRV name takes no port (the records give it): %w", t, core.ErrInvalid)
		}
		return nil
	}
	if n, err := strconv.Atoi(t.Port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("dns: target %s: an A/AAAA name needs a port number (name:50051): %w", t, core.ErrInvalid)
	}
	return nil
}

// Watch implements core.Source: it queries the target's name, publishes
// what it finds, and queries again when the answer's TTL runs out, until
// ctx ends.
func (s *Source) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
	if err := s.check(t); err != nil {
		return err
	}
	log := s.opts.Log.With(zap.Stringer("target", t))
	attempt := 0
	for {
		set, ttl, err := s.resolve(ctx, t)
		if ctx.Err() != nil {
			return nil
		}
		var wait time.Duration
		if err != nil {
			if attempt == 0 {
				log.Warn("dns: query failing; keeping the last good set", zap.Error(err))
			}
			pub.Fail(err)
			wait = s.opts.Backoff.Delay(attempt)
			attempt++
		} else {
			if attempt > 0 {
				log.Info("dns: query answered again")
			}
			pub.Publish(set)
			attempt = 0
			wait = min(max(ttl, s.opts.floor), s.opts.ceiling)
		}
		if !kit.Sleep(ctx, wait) {
			return nil
		}
	}
}

// resolve asks for the target's records and returns the set and the time
// until the answer expires.
func (s *Source) resolve(ctx context.Context, t core.Target) (core.Set, time.Duration, error) {
	name := mdns.Fqdn(t.Name)
	if s.srv(t) {
		return s.resolveSRV(ctx, t, name)
	}
	port, _ := strconv.Atoi(t.Port)
	addrs, minttl, err := s.addresses(ctx, name)
	if err != nil {
		return core.Set{}, 0, err
	}
	ttl := minttl.d
	host := strings.TrimSuffix(name, ".")
	if len(addrs) == 0 {
		return core.Set{}, ttl, nil
	}
	if dualStackHost(addrs) {
		// One address of each family: one host, as a dual-stack pod is.
		e := &core.Endpoint{ID: net.JoinHostPort(host, t.Port), Name: host, Addresses: addrs, Port: uint16(port)}
		set, err := core.NewSet(e)
		return set, ttl, err
	}
	// Several addresses of a family: DNS does not say which IPv4 and IPv6
	// addresses belong together, so each address is an endpoint.
	eps := make([]*core.Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = &core.Endpoint{Addresses: []string{a}, Port: uint16(port), Name: host}
	}
	set, err := core.NewSet(eps...)
	return set, ttl, err
}

func (s *Source) resolveSRV(ctx context.Context, t core.Target, name string) (core.Set, time.Duration, error) {
	msg, err := s.query(ctx, name, mdns.TypeSRV)
	if err != nil {
		return core.Set{}, 0, err
	}
	var ttl minTTL
	for _, rr := range msg.Answer { // every record of the chain counts: CNAMEs too
		ttl.note(rr)
	}
	// Addresses the server put in the additional section save a query; they
	// count with their own TTLs.
	extra := map[string]*hostAddrs{}
	for _, rr := range msg.Extra {
		var addr string
		switch r := rr.(type) {
		case *mdns.A:
			addr = r.A.String()
		case *mdns.AAAA:
			addr = r.AAAA.String()
		default:
			continue
		}
		host := strings.ToLower(rr.Header().Name)
		h := extra[host]
		if h == nil {
			h = &hostAddrs{}
			extra[host] = h
		}
		h.addrs = append(h.addrs, addr)
		h.ttl.note(rr)
	}
	type record struct {
		id, host string
		r        *mdns.SRV
	}
	var recs []record
	seen := map[string]bool{}
	hosts := map[string]*hostAddrs{}
	var ask []string // hosts to query, in answer order
	for _, rr := range msg.Answer {
		r, ok := rr.(*mdns.SRV)
		if !ok || r.Target == "." { // "." means: the service is decidedly not available here
			continue
		}
		host := strings.ToLower(r.Target)
		id := net.JoinHostPort(strings.TrimSuffix(host, "."), strconv.Itoa(int(r.Port)))
		if seen[id] {
			continue
		}
		seen[id] = true
		recs = append(recs, record{id: id, host: host, r: r})
		if hosts[host] == nil {
			if h := extra[host]; h != nil {
				sortAddrs(h.addrs)
				hosts[host] = h
			} else {
				hosts[host] = &hostAddrs{}
				ask = append(ask, host)
			}
		}
	}
	if err := s.lookupAll(ctx, ask, hosts); err != nil {
		return core.Set{}, 0, fmt.Errorf("dns: SRV %s: %w", name, err)
	}
	var eps []*core.Endpoint
	for _, rec := range recs {
		h := hosts[rec.host]
		if len(h.addrs) == 0 {
			continue // a target without addresses cannot be reached
		}
		ttl.min(h.ttl)
		r := rec.r
		eps = append(eps, &core.Endpoint{
			ID: rec.id, Name: strings.TrimSuffix(rec.host, "."), Addresses: h.addrs, Port: r.Port,
			Weight: uint32(r.Weight), Priority: uint32(r.Priority),
			Labels: map[string]string{"dns.priority": strconv.Itoa(int(r.Priority)), "dns.weight": strconv.Itoa(int(r.Weight))},
		})
	}
	if !ttl.set {
		return core.Set{}, s.negativeTTL(msg), nil // no such name, or no SRV records
	}
	set, err := core.NewSet(eps...)
	return set, ttl.d, err
}

// hostAddrs is one host's addresses and the smallest TTL of the records
// that gave them.
type hostAddrs struct {
	addrs []string
	ttl   minTTL
}

// lookupAll asks for the addresses of every host in names, at most
// WithConcurrency at a time, filling hosts; the first error ends it.
func (s *Source) lookupAll(ctx context.Context, names []string, hosts map[string]*hostAddrs) error {
	if len(names) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, s.opts.concurrency)
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, host := range names {
		h := hosts[host]
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			errs[i] = ctx.Err()
			continue
		}
		wg.Go(func() {
			defer func() { <-sem }()
			addrs, ttl, err := s.addresses(ctx, host)
			if err != nil {
				errs[i] = fmt.Errorf("target %s: %w", host, err)
				cancel()
				return
			}
			h.addrs, h.ttl = addrs, ttl
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return ctx.Err()
}

// minTTL is the smallest TTL seen.
type minTTL struct {
	d   time.Duration
	set bool
}

func (m *minTTL) note(rr mdns.RR) {
	m.add(time.Duration(rr.Header().Ttl) * time.Second)
}

func (m *minTTL) add(d time.Duration) {
	if !m.set || d < m.d {
		m.d, m.set = d, true
	}
}

func (m *minTTL) min(o minTTL) {
	if o.set {
		m.add(o.d)
	}
}

func sortAddrs(addrs []string) {
	slices.SortFunc(addrs, func(a, b string) int {
		if v6a, v6b := strings.Contains(a, ":"), strings.Contains(b, ":"); v6a != v6b {
			if v6a {
				return 1
			}
			return -1
		}
		return strings.Compare(a, b)
	})
}

// dualStackHost reports whether addrs (IPv4 first, as addresses returns
// them) are at most one address of each family.
func dualStackHost(addrs []string) bool {
	switch len(addrs) {
	case 1:
		return true
	case 2:
		return !strings.Contains(addrs[0], ":") && strings.Contains(addrs[1], ":")
	}
	return false
}

// addresses returns a name's IPv4 then IPv6 addresses (sorted within each
// family) and the smallest TTL of every record that gave them, CNAMEs of
// the chain included, and of a family's negative answer (RFC 2308) when the
// other family has addresses; none, and the negative TTL, if the name has
// no address.
func (s *Source) addresses(ctx context.Context, name string) ([]string, minTTL, error) {
	var v4, v6 []string
	var ttl, negTTL minTTL
	var neg *mdns.Msg
	for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		msg, err := s.query(ctx, name, qt)
		if err != nil {
			return nil, minTTL{}, err
		}
		found := false
		for _, rr := range msg.Answer {
			switch r := rr.(type) {
			case *mdns.A:
				v4 = append(v4, r.A.String())
				found = true
			case *mdns.AAAA:
				v6 = append(v6, r.AAAA.String())
				found = true
			case *mdns.CNAME, *mdns.DNAME:
			default:
				continue
			}
			ttl.note(rr) // the addresses, and every alias on the way to them
		}
		if !found {
			if neg == nil {
				neg = msg
			}
			if d, ok := soaTTL(msg); ok { // an answer without a SOA is not to be cached (RFC 2308)
				negTTL.add(d)
			}
		}
	}
	slices.Sort(v4)
	slices.Sort(v6)
	if len(v4)+len(v6) == 0 {
		return nil, minTTL{d: s.negativeTTL(neg), set: true}, nil
	}
	ttl.min(negTTL) // a family that has none now may have some after its negative TTL
	return slices.Compact(append(v4, v6...)), ttl, nil
}

// negativeTTL is how long "no such records" may be cached: the SOA
// minimum of the authority section (RFC 2308), else the floor.
func (s *Source) negativeTTL(msg *mdns.Msg) time.Duration {
	if d, ok := soaTTL(msg); ok {
		return d
	}
	return s.opts.floor
}

// soaTTL is the negative TTL a negative answer carries in its SOA, if any.
func soaTTL(msg *mdns.Msg) (time.Duration, bool) {
	if msg != nil {
		for _, rr := range msg.Ns {
			if soa, ok := rr.(*mdns.SOA); ok {
				return time.Duration(min(soa.Minttl, soa.Hdr.Ttl)) * time.Second, true
			}
		}
	}
	return 0, false
}

// query asks the servers in turn for name's records of type qt. It returns
// the first answer that is NOERROR or NXDOMAIN (an empty Answer section
// means the name has no such records); an error (wrapping
// core.ErrUnavailable) if every server gave SERVFAIL, REFUSED or another
// code, or did not answer. A truncated UDP answer is asked again over TCP.
func (s *Source) query(ctx context.Context, name string, qt uint16) (*mdns.Msg, error) {
	q := new(mdns.Msg)
	q.SetQuestion(name, qt)
	q.RecursionDesired = true
	q.SetEdns0(4096, false) // answers up to 4 KB over UDP; larger ones come truncated and are asked over TCP
	var errs []error
	for _, server := range s.opts.servers {
		msg, err := s.exchange(ctx, q, server, "udp")
		if err == nil && msg.Truncated {
			msg, err = s.exchange(ctx, q, server, "tcp")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %v", server, err))
			continue
		}
		switch msg.Rcode {
		case mdns.RcodeSuccess:
			return msg, nil
		case mdns.RcodeNameError: // no such name, so no endpoints
			msg.Answer = nil
			return msg, nil
		default:
			errs = append(errs, fmt.Errorf("%s: %s", server, mdns.RcodeToString[msg.Rcode]))
		}
	}
	return nil, fmt.Errorf("dns: %s %s: %w: %w", mdns.TypeToString[qt], name, errors.Join(errs...), core.ErrUnavailable)
}

func (s *Source) exchange(ctx context.Context, q *mdns.Msg, server, network string) (*mdns.Msg, error) {
	c := &mdns.Client{Net: network, Timeout: s.opts.timeout, UDPSize: 4096}
	ctx, cancel := context.WithTimeout(ctx, s.opts.timeout)
	defer cancel()
	msg, _, err := c.ExchangeContext(ctx, q, server)
	return msg, err
}

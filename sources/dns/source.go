package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
	"go.uber.org/zap"

	"github.com/disco-lb/disco/core"
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

// Option configures a Source.
type Option func(*options)

type options struct {
	servers  []string
	mode     Mode
	floor    time.Duration
	ceiling  time.Duration
	timeout  time.Duration
	backoff  core.Backoff
	log      *zap.Logger
	confPath string
}

// WithServer sets the DNS servers to ask, in order ("10.96.0.10:53"; a
// missing port means 53). Default: the nameservers of /etc/resolv.conf.
func WithServer(addrs ...string) Option {
	return func(o *options) {
		o.servers = nil
		for _, a := range addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				a = net.JoinHostPort(a, "53")
			}
			o.servers = append(o.servers, a)
		}
	}
}

// WithResolvConf sets the file that lists the servers when WithServer is
// not given (default /etc/resolv.conf).
func WithResolvConf(path string) Option { return func(o *options) { o.confPath = path } }

// WithMode forces SRV or A/AAAA queries (default Auto).
func WithMode(m Mode) Option { return func(o *options) { o.mode = m } }

// WithTTLBounds bounds the time between two queries of a name: its answer's
// TTL, but at least floor and at most ceiling (defaults 1s and 5m). A TTL
// of 0 is asked again after floor.
func WithTTLBounds(floor, ceiling time.Duration) Option {
	return func(o *options) {
		if floor > 0 {
			o.floor = floor
		}
		if ceiling >= o.floor {
			o.ceiling = ceiling
		}
	}
}

// WithTimeout bounds each query (default 2s).
func WithTimeout(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// WithBackoff sets the jittered backoff between failed queries (default
// 200ms to 30s).
func WithBackoff(min, max time.Duration) Option {
	return func(o *options) { o.backoff = core.Backoff{Min: min, Max: max} }
}

// WithLogger sets the logger (nil: no-op).
func WithLogger(l *zap.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

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
	o := options{mode: Auto, floor: time.Second, ceiling: 5 * time.Minute, timeout: 2 * time.Second,
		backoff: core.Backoff{Min: 200 * time.Millisecond, Max: 30 * time.Second}, log: zap.NewNop(), confPath: "/etc/resolv.conf"}
	for _, opt := range opts {
		opt(&o)
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
	log := s.opts.log.With(zap.Stringer("target", t))
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
			wait = s.opts.backoff.Delay(attempt)
			attempt++
		} else {
			if attempt > 0 {
				log.Info("dns: query answered again")
			}
			pub.Publish(set)
			attempt = 0
			wait = min(max(ttl, s.opts.floor), s.opts.ceiling)
		}
		if !core.Sleep(ctx, wait) {
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
	addrs, ttl, err := s.addresses(ctx, name)
	if err != nil {
		return core.Set{}, 0, err
	}
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
	if len(msg.Answer) == 0 { // no such name, or no SRV records
		return core.Set{}, s.negativeTTL(msg), nil
	}
	ttl := time.Duration(-1)
	note := func(h mdns.RR_Header) {
		if d := time.Duration(h.Ttl) * time.Second; ttl < 0 || d < ttl {
			ttl = d
		}
	}
	// Addresses the server put in the additional section save a query.
	extra := map[string][]string{}
	for _, rr := range msg.Extra {
		switch r := rr.(type) {
		case *mdns.A:
			extra[strings.ToLower(r.Hdr.Name)] = append(extra[strings.ToLower(r.Hdr.Name)], r.A.String())
		case *mdns.AAAA:
			extra[strings.ToLower(r.Hdr.Name)] = append(extra[strings.ToLower(r.Hdr.Name)], r.AAAA.String())
		}
	}
	var eps []*core.Endpoint
	seen := map[string]bool{}
	for _, rr := range msg.Answer {
		r, ok := rr.(*mdns.SRV)
		if !ok || r.Target == "." { // "." means: the service is decidedly not available here
			continue
		}
		note(r.Hdr)
		host := strings.ToLower(r.Target)
		id := net.JoinHostPort(strings.TrimSuffix(host, "."), strconv.Itoa(int(r.Port)))
		if seen[id] {
			continue
		}
		seen[id] = true
		addrs, hostTTL, err := s.addresses(ctx, host)
		if err != nil {
			return core.Set{}, 0, fmt.Errorf("dns: SRV %s: target %s: %w", name, host, err)
		}
		if len(addrs) == 0 {
			addrs = extra[host]
		}
		if len(addrs) == 0 {
			continue // a target without addresses cannot be reached
		}
		if hostTTL < ttl || ttl < 0 {
			ttl = hostTTL
		}
		eps = append(eps, &core.Endpoint{
			ID: id, Name: strings.TrimSuffix(host, "."), Addresses: addrs, Port: r.Port, Weight: uint32(r.Weight),
			Labels: map[string]string{"dns.priority": strconv.Itoa(int(r.Priority)), "dns.weight": strconv.Itoa(int(r.Weight))},
		})
	}
	if ttl < 0 {
		ttl = s.negativeTTL(msg)
	}
	set, err := core.NewSet(eps...)
	return set, ttl, err
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
// family) and the smallest TTL; none (and the negative TTL) if the name
// has none.
func (s *Source) addresses(ctx context.Context, name string) ([]string, time.Duration, error) {
	var v4, v6 []string
	ttl := time.Duration(-1)
	var neg *mdns.Msg
	for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
		msg, err := s.query(ctx, name, qt)
		if err != nil {
			return nil, 0, err
		}
		if len(msg.Answer) == 0 {
			if neg == nil {
				neg = msg
			}
			continue
		}
		for _, rr := range msg.Answer {
			switch r := rr.(type) {
			case *mdns.A:
				v4 = append(v4, r.A.String())
			case *mdns.AAAA:
				v6 = append(v6, r.AAAA.String())
			default:
				continue
			}
			if d := time.Duration(rr.Header().Ttl) * time.Second; ttl < 0 || d < ttl {
				ttl = d
			}
		}
	}
	slices.Sort(v4)
	slices.Sort(v6)
	if ttl < 0 {
		ttl = s.negativeTTL(neg)
	}
	return slices.Compact(append(v4, v6...)), ttl, nil
}

// negativeTTL is how long "no such records" may be cached: the SOA
// minimum of the authority section (RFC 2308), else the floor.
func (s *Source) negativeTTL(msg *mdns.Msg) time.Duration {
	if msg != nil {
		for _, rr := range msg.Ns {
			if soa, ok := rr.(*mdns.SOA); ok {
				return time.Duration(min(soa.Minttl, soa.Hdr.Ttl)) * time.Second
			}
		}
	}
	return s.opts.floor
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
	c := &mdns.Client{Net: network, Timeout: s.opts.timeout}
	ctx, cancel := context.WithTimeout(ctx, s.opts.timeout)
	defer cancel()
	msg, _, err := c.ExchangeContext(ctx, q, server)
	return msg, err
}

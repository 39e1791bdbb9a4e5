// Package grpcresolver is disco's grpc-go resolver: a resolver.Builder
// backed by any core source, so that
//
//	grpc.NewClient("kubernetes:///greeter.demo:grpc", grpc.WithResolvers(b), ...)
//
// balances across every ready pod of the service and follows them as they
// come and go. The ClientConns of one target share one subscription to it
// on a core.Hub (one watch, one list of endpoints, one sender goroutine);
// the last one's Close releases it.
//
// The resolver sends grpc-go resolver.State with Endpoints (all addresses of
// an endpoint, so dual stack works) and Addresses, carrying zone, node,
// hostname, zone hints, pod name and weight as attributes (see Info). It
// sends only routable endpoints (route.Routable: ready ones; serving and
// terminating ones only while none is ready; of the lowest priority), never an empty state before
// the first sync, an empty state when the service truly has none, and
// ReportError when the target is missing, forbidden or malformed, so calls
// fail fast with a message saying which. Unchanged states are never sent,
// and bursts coalesce in core's mailbox.
//
// Nothing is registered at init: pass the builder with grpc.WithResolvers,
// or call Register. The zone-aware balancer (ZoneAwareName) is registered by
// RegisterZoneAware.
package grpcresolver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/kit"
)

// TargetParser turns a gRPC target into a core target.
type TargetParser func(target string) (core.Target, error)

// Option configures a Builder. A value out of range makes New fail with an
// error naming the option and what it allows.
type Option = kit.Option[*config]

type config struct {
	kit.Common      // WithLogger
	parse           TargetParser
	serviceConfig   string
	resolveNowEvery time.Duration
}

// WithLogger sets the logger (nil: none).
var WithLogger = kit.WithLogger[*config]

// WithTargetParser sets how targets are parsed. Default: the hub's source's
// own Target method if it has one (kubernetes.Source, say), else
// core.ParseTarget with core.ServiceSyntax.
func WithTargetParser(p TargetParser) Option {
	return func(c *config) error { c.parse = p; return nil }
}

// WithServiceConfig makes every resolver send this service config JSON (for
// example the zone-aware policy, see ZoneAwareServiceConfig). JSON that does
// not parse is an error of New; one grpc-go refuses fails the first Build.
func WithServiceConfig(js string) Option {
	return func(c *config) error {
		if !json.Valid([]byte(js)) {
			return &kit.OptionError{Option: "WithServiceConfig", Value: fmt.Sprintf("%.40q", js), Want: "a JSON service config"}
		}
		c.serviceConfig = js
		return nil
	}
}

// WithResolveNowInterval sets how often ResolveNow may re-send the last
// state after grpc-go rejected it (more than 0, at most 1h; default 1s).
// The watch pushes every change, so ResolveNow is only a hint.
func WithResolveNowInterval(d time.Duration) Option {
	return kit.Checked(kit.Positive("WithResolveNowInterval", d, time.Hour), func(c *config) { c.resolveNowEvery = d })
}

// Builder is a resolver.Builder for one scheme over a core.Hub. The
// ClientConns of one target share one subscription to it: one watch, one
// shared list of endpoints kept by deltas, and one sender goroutine that
// hands each ClientConn what it has not got yet, so goroutines grow with
// targets, not with ClientConns. Pools and other sinks on the same hub
// share the watch too. Safe for concurrent use by many ClientConns. Close
// it when done: it closes the resolvers it still runs (the hub stays open;
// its owner closes it).
type Builder struct {
	scheme string
	hub    *core.Hub
	cfg    config

	mu      sync.Mutex
	closed  bool
	targets map[core.Target]*targetFeed
}

var _ resolver.Builder = (*Builder)(nil)

// ErrClosed is returned by Build after Close.
var ErrClosed = errors.New("grpcresolver: builder closed")

// New returns a builder for scheme whose targets hub serves. It starts
// nothing; it fails with core.ErrInvalid for no hub, a scheme grpc-go
// cannot use, or an option out of range.
func New(scheme string, hub *core.Hub, opts ...Option) (*Builder, error) {
	if hub == nil {
		return nil, fmt.Errorf("grpcresolver: New needs a hub: %w", core.ErrInvalid)
	}
	if !validScheme(scheme) {
		return nil, fmt.Errorf("grpcresolver: scheme %q: want a letter, then letters, digits, '+', '-' or '.' (RFC 3986): %w", scheme, core.ErrInvalid)
	}
	c := config{Common: kit.Common{Log: zap.NewNop()}, resolveNowEvery: time.Second}
	if ts, ok := hub.Source().(interface {
		Target(string) (core.Target, error)
	}); ok {
		c.parse = ts.Target
	} else {
		c.parse = func(text string) (core.Target, error) { return core.ParseTarget(text, core.ServiceSyntax) }
	}
	if err := kit.Apply(&c, opts...); err != nil {
		return nil, fmt.Errorf("grpcresolver: %w: %w", err, core.ErrInvalid)
	}
	return &Builder{scheme: scheme, hub: hub, cfg: c, targets: map[core.Target]*targetFeed{}}, nil
}

func validScheme(s string) bool {
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.'):
		default:
			return false
		}
	}
	return s != ""
}

// NewKubernetes returns a builder for scheme "kubernetes" over a hub of the
// Kubernetes source, which parses its own targets (kubernetes:///svc.ns:port,
// kubernetes://ns/svc:port and the other forms of core.ServiceSyntax, with
// the source's default namespace).
func NewKubernetes(hub *core.Hub, opts ...Option) (*Builder, error) {
	return New("kubernetes", hub, opts...)
}

// Register registers b with grpc-go's global resolver registry, so that
// grpc.NewClient finds its scheme without grpc.WithResolvers. Call it at
// start-up, before creating clients; it is not safe to call concurrently
// with them (a grpc-go rule).
func Register(b *Builder) { resolver.Register(b) }

// Scheme implements resolver.Builder.
func (b *Builder) Scheme() string { return b.scheme }

// Hub returns the hub the builder subscribes on.
func (b *Builder) Hub() *core.Hub { return b.hub }

// Close closes every resolver the builder still runs, and their
// subscriptions; later Builds fail. Idempotent.
func (b *Builder) Close() error {
	b.mu.Lock()
	b.closed = true
	feeds := make([]*targetFeed, 0, len(b.targets))
	for _, f := range b.targets {
		feeds = append(feeds, f)
	}
	b.mu.Unlock()
	for _, f := range feeds {
		f.closeAll()
	}
	return nil
}

// Build implements resolver.Builder: it parses the target and joins the
// target's feed (subscribing to it on the hub if this is its first
// ClientConn), and returns at once; the first state follows the first
// sync. An unparseable target is an error (grpc.NewClient fails with it).
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	text := target.URL.String()
	t, err := b.cfg.parse(text)
	if err != nil {
		return nil, fmt.Errorf("grpcresolver: %w", err)
	}
	r := &discoResolver{b: b, cc: cc, target: t}
	if b.cfg.serviceConfig != "" {
		r.sc = cc.ParseServiceConfig(b.cfg.serviceConfig)
		if r.sc != nil && r.sc.Err != nil {
			return nil, fmt.Errorf("grpcresolver: service config: %w", r.sc.Err)
		}
	}
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return nil, ErrClosed
		}
		f := b.targets[t]
		if f == nil {
			f = newFeed(b, t)
			b.targets[t] = f
			b.mu.Unlock()
			if err := f.start(); err != nil {
				b.mu.Lock()
				if b.targets[t] == f {
					delete(b.targets, t)
				}
				b.mu.Unlock()
				return nil, fmt.Errorf("grpcresolver: %w", err)
			}
		} else {
			b.mu.Unlock()
		}
		if f.join(r) {
			return r, nil
		}
		// The feed was closing (its last resolver left meanwhile): make a
		// new one.
	}
}

// targetFeed is one target's subscription and the ClientConns it feeds.
// Core's mailbox goroutine calls Accept with each new state; Accept decides
// what grpc-go should get (once for every ClientConn of the target) and
// wakes the sender goroutine, the only one that calls the ClientConns, so
// a re-send asked by ResolveNow can never overtake a newer state.
type targetFeed struct {
	b      *Builder
	target core.Target
	log    *zap.Logger
	ts     targetState // the shared list, kept by deltas

	ready   chan struct{} // closed once the subscription exists (or failed)
	sub     *core.Subscription
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	wake    chan struct{}
	stopped sync.Once

	mu        sync.Mutex
	closing   bool
	resolvers map[*discoResolver]struct{}
	// The decision every resolver should hold: a state (nil: none) and
	// then an error to report (nil: none); gen counts decisions.
	state    *resolver.State
	err      error
	gen      uint64
	reported string // the message of err, reported once per message
	emptyOK  bool   // the last state sent had no endpoint
}

func newFeed(b *Builder, t core.Target) *targetFeed {
	ctx, cancel := context.WithCancel(context.Background())
	return &targetFeed{b: b, target: t, log: b.cfg.Log.With(zap.Stringer("target", t)), ready: make(chan struct{}),
		ctx: ctx, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1), resolvers: map[*discoResolver]struct{}{}}
}

// start subscribes to the target and starts the sender.
func (f *targetFeed) start() error {
	defer close(f.ready)
	go f.send()
	sub, err := f.b.hub.Subscribe("grpc:"+f.target.String(), f, f.target)
	if err != nil {
		f.mu.Lock()
		f.closing = true
		f.mu.Unlock()
		f.cancel()
		<-f.done
		return err
	}
	f.sub = sub
	return nil
}

// join adds r to the feed, unless the feed is closing (false).
func (f *targetFeed) join(r *discoResolver) bool {
	<-f.ready
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return false
	}
	r.f = f
	f.resolvers[r] = struct{}{}
	if f.gen > 0 {
		f.poke() // it gets the current decision
	}
	return true
}

// leave removes r; the last one closes the subscription and the sender.
func (f *targetFeed) leave(r *discoResolver) {
	f.mu.Lock()
	if _, ok := f.resolvers[r]; !ok {
		f.mu.Unlock()
		return
	}
	delete(f.resolvers, r)
	last := len(f.resolvers) == 0 && !f.closing
	if last {
		f.closing = true
	}
	f.mu.Unlock()
	if last {
		f.b.mu.Lock()
		if f.b.targets[f.target] == f {
			delete(f.b.targets, f.target)
		}
		f.b.mu.Unlock()
		f.stop()
	}
}

func (f *targetFeed) stop() {
	f.stopped.Do(func() {
		if f.sub != nil {
			f.sub.Close()
		}
		f.cancel()
		<-f.done
	})
}

// closeAll closes every resolver of the feed (the builder is closing).
func (f *targetFeed) closeAll() {
	<-f.ready
	f.mu.Lock()
	rs := make([]*discoResolver, 0, len(f.resolvers))
	for r := range f.resolvers {
		rs = append(rs, r)
	}
	f.mu.Unlock()
	for _, r := range rs {
		r.Close()
	}
}

func (f *targetFeed) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Accept implements core.Sink (the subscription's goroutine, one at a
// time): it makes the decision every ClientConn of the target gets.
func (f *targetFeed) Accept(_ context.Context, u core.Update) error {
	st := u.State
	if !st.Synced {
		if st.Stale.IsStale() {
			f.report(st.Stale.Err(), false)
		}
		return nil // never an empty state before the first sync
	}
	if st.Stale.IsStale() && st.Stale.Kind != core.KindUnavailable && st.Endpoints.Len() == 0 {
		// Deleted Service, revoked permission: grpc-go keeps using the last
		// addresses on a resolver error alone, so send no address first,
		// then the reason: calls fail fast with it.
		f.report(st.Stale.Err(), true)
		return nil
	}
	shared := f.ts.build(u.Epoch, u.Seq, st)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == shared && f.err == nil {
		return nil // grpc-go pays O(endpoints) per UpdateState: never for nothing
	}
	f.decide(shared, nil)
	f.reported, f.emptyOK = "", len(shared.Endpoints) == 0
	return nil
}

// report decides that the target cannot be resolved, once per message;
// with empty, after a state without any address, so that the balancer
// drops the addresses it had.
func (f *targetFeed) report(err error, empty bool) {
	if err == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.reported == err.Error() {
		return
	}
	f.reported = err.Error()
	reason := fmt.Errorf("grpcresolver: %s: %w", f.target, err)
	var st *resolver.State
	if empty && !f.emptyOK {
		// The reason rides with the empty state too, so that disco's
		// zone-aware balancer fails calls with it from that state on, not
		// only once the ReportError that follows has reached it.
		st = &resolver.State{Attributes: attributes.New(reasonKey{}, reason)}
		f.emptyOK = true
	}
	f.decide(st, reason)
	f.log.Warn("grpcresolver: cannot resolve target", zap.Error(err))
}

func (f *targetFeed) decide(st *resolver.State, err error) {
	f.state, f.err = st, err
	f.gen++
	f.poke()
}

// send is the sender goroutine: the only caller of the target's
// ClientConns. It hands each resolver the decision it has not had yet,
// and re-sends a rejected state when ResolveNow asks.
func (f *targetFeed) send() {
	defer close(f.done)
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-f.wake:
		}
		f.mu.Lock()
		st, err, gen := f.state, f.err, f.gen
		var todo []*discoResolver
		for r := range f.resolvers {
			if r.gen != gen || r.resend {
				todo = append(todo, r)
			}
		}
		f.mu.Unlock()
		for _, r := range todo {
			if f.ctx.Err() != nil {
				return
			}
			r.deliver(st, err, gen)
		}
	}
}

// discoResolver is one ClientConn's resolver: what it has had of its
// target's decisions. Everything but ResolveNow runs on the target's
// sender goroutine.
type discoResolver struct {
	b      *Builder
	f      *targetFeed
	cc     resolver.ClientConn
	target core.Target
	sc     *serviceconfig.ParseResult
	closed sync.Once

	// Guarded by f.mu.
	gen        uint64          // the decision it has
	last       *resolver.State // the last state it was sent
	rejected   bool            // grpc-go returned an error for last
	resend     bool            // ResolveNow asked to re-send last
	lastResend time.Time
}

// deliver sends r the decision gen (or re-sends its last state).
func (r *discoResolver) deliver(shared *resolver.State, err error, gen uint64) {
	f := r.f
	f.mu.Lock()
	var st *resolver.State
	switch {
	case r.gen != gen:
		if shared != nil {
			s := *shared // the list is shared by every resolver of the target, read-only
			s.ServiceConfig = r.sc
			st = &s
		}
	case r.resend:
		st, err = r.last, nil
	default:
		err = nil
	}
	r.gen, r.resend = gen, false
	f.mu.Unlock()
	if st != nil {
		uerr := r.cc.UpdateState(*st)
		f.mu.Lock()
		r.last, r.rejected = st, uerr != nil && err == nil
		f.mu.Unlock()
		if uerr != nil && err == nil {
			// The balancer refused the state (for example no address at
			// all): grpc-go will call ResolveNow.
			f.log.Debug("grpcresolver: state not accepted", zap.Int("endpoints", len(st.Endpoints)), zap.Error(uerr))
		}
	}
	if err != nil {
		r.cc.ReportError(err)
	}
}

// ResolveNow implements resolver.Resolver. The watch pushes every change,
// so this is a hint: it only has the sender re-send the last state if
// grpc-go rejected it, at most once per interval, and never blocks.
func (r *discoResolver) ResolveNow(resolver.ResolveNowOptions) {
	f := r.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if !r.rejected || r.last == nil || time.Since(r.lastResend) < r.b.cfg.resolveNowEvery {
		return
	}
	r.lastResend = time.Now()
	r.resend = true
	f.poke()
}

// Close implements resolver.Resolver: the ClientConn leaves its target's
// feed; the last one to leave releases the watch (shared watches go on for
// pools and other sinks). Idempotent.
func (r *discoResolver) Close() { r.closed.Do(func() { r.f.leave(r) }) }

// Info is what the resolver tells a balancer or interceptor of every
// endpoint and address it sends (read it with InfoOf).
type Info struct {
	ID        string
	Name      string // pod name
	Zone      string
	Node      string
	Hostname  string
	ZoneHints []string
	Weight    uint32
}

type endpointKey struct{}

// reasonKey keys the error that an empty resolver.State stands for.
type reasonKey struct{}

// reasonOf returns the error an empty state carries (see report), or nil.
func reasonOf(s resolver.State) error {
	err, _ := s.Attributes.Value(reasonKey{}).(error)
	return err
}

// EndpointOf returns the core endpoint behind an endpoint or address sent
// by this resolver (shared and read-only).
func EndpointOf(a *attributes.Attributes) (*core.Endpoint, bool) {
	e, ok := a.Value(endpointKey{}).(*core.Endpoint)
	return e, ok
}

// InfoOf returns the Info of an endpoint or address sent by this resolver.
func InfoOf(a *attributes.Attributes) (Info, bool) {
	e, ok := EndpointOf(a)
	if !ok {
		return Info{}, false
	}
	return Info{ID: e.ID, Name: e.Name, Zone: e.Zone, Node: e.Node, Hostname: e.Hostname, ZoneHints: e.ZoneHints, Weight: e.Weight}, true
}

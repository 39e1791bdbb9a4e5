// Package grpcresolver is disco's grpc-go resolver: a resolver.Builder
// backed by any core source, so that
//
//	grpc.NewClient("kubernetes:///greeter.demo:grpc", grpc.WithResolvers(b), ...)
//
// balances across every ready pod of the service and follows them as they
// come and go. Each ClientConn's Build subscribes to its target on a shared
// core.Hub (concurrent ClientConns to one target share one watch) and Close
// releases it.
//
// The resolver sends grpc-go resolver.State with Endpoints (all addresses of
// an endpoint, so dual stack works) and Addresses, carrying zone, node,
// hostname, zone hints, pod name and weight as attributes (see Info). It
// sends only routable endpoints (core.Routable: ready ones; serving and
// terminating ones only while none is ready), never an empty state before
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
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/disco-lb/disco/core"
)

// TargetParser turns a gRPC target into a core target.
type TargetParser func(target string) (core.Target, error)

// Option configures a Builder.
type Option func(*Builder)

// WithLogger sets the logger (nil: no-op).
func WithLogger(l *zap.Logger) Option {
	return func(b *Builder) {
		if l != nil {
			b.log = l
		}
	}
}

// WithTargetParser sets how targets are parsed. Default: the hub's source's
// own Target method if it has one (kubernetes.Source, say), else
// core.ParseTarget with core.ServiceSyntax.
func WithTargetParser(p TargetParser) Option { return func(b *Builder) { b.parse = p } }

// WithServiceConfig makes every resolver send this service config JSON (for
// example the zone-aware policy, see ZoneAwareServiceConfig). A bad JSON is
// reported on the first Build.
func WithServiceConfig(json string) Option { return func(b *Builder) { b.serviceConfig = json } }

// WithResolveNowInterval sets how often ResolveNow may re-send the last
// state after grpc-go rejected it (default 1s). The watch pushes every
// change, so ResolveNow is only a hint.
func WithResolveNowInterval(d time.Duration) Option {
	return func(b *Builder) { b.resolveNowEvery = d }
}

// Builder is a resolver.Builder for one scheme over a core.Hub: every
// ClientConn's Build subscribes to its target on the hub, so ClientConns,
// pools and other sinks sharing that hub share one watch per target. Safe
// for concurrent use by many ClientConns. Close it when done: it closes the
// resolvers it still runs (the hub stays open; its owner closes it).
type Builder struct {
	scheme          string
	hub             *core.Hub
	parse           TargetParser
	log             *zap.Logger
	serviceConfig   string
	resolveNowEvery time.Duration

	mu        sync.Mutex
	closed    bool
	resolvers map[*discoResolver]struct{}
	targets   map[core.Target]*targetState // what the resolvers of each target send
}

var _ resolver.Builder = (*Builder)(nil)

// ErrClosed is returned by Build after Close.
var ErrClosed = errors.New("grpcresolver: builder closed")

// New returns a builder for scheme whose targets hub serves. It starts
// nothing.
func New(scheme string, hub *core.Hub, opts ...Option) *Builder {
	b := &Builder{scheme: scheme, hub: hub, log: zap.NewNop(), resolveNowEvery: time.Second,
		resolvers: map[*discoResolver]struct{}{}, targets: map[core.Target]*targetState{}}
	if ts, ok := hub.Source().(interface {
		Target(string) (core.Target, error)
	}); ok {
		b.parse = ts.Target
	} else {
		b.parse = func(text string) (core.Target, error) { return core.ParseTarget(text, core.ServiceSyntax) }
	}
	for _, o := range opts {
		o(b)
	}
	return b
}

// NewKubernetes returns a builder for scheme "kubernetes" over a hub of the
// Kubernetes source, which parses its own targets (kubernetes:///svc.ns:port,
// kubernetes://ns/svc:port and the other forms of core.ServiceSyntax, with
// the source's default namespace).
func NewKubernetes(hub *core.Hub, opts ...Option) *Builder { return New("kubernetes", hub, opts...) }

// Register registers b with grpc-go's global resolver registry, so that
// grpc.NewClient finds its scheme without grpc.WithResolvers. Call it at
// start-up, before creating clients; it is not safe to call concurrently
// with them (a grpc-go rule).
func Register(b *Builder) { resolver.Register(b) }

// Scheme implements resolver.Builder.
func (b *Builder) Scheme() string { return b.scheme }

// Hub returns the hub the builder subscribes on.
func (b *Builder) Hub() *core.Hub { return b.hub }

// Close closes every resolver the builder still runs; later Builds fail.
// Idempotent.
func (b *Builder) Close() error {
	b.mu.Lock()
	b.closed = true
	rs := make([]*discoResolver, 0, len(b.resolvers))
	for r := range b.resolvers {
		rs = append(rs, r)
	}
	b.mu.Unlock()
	for _, r := range rs {
		r.Close()
	}
	return nil
}

// Build implements resolver.Builder: it parses the target, subscribes to
// it, and returns at once; the first state follows the first sync. An
// unparseable target is an error (grpc.NewClient fails with it).
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	text := target.URL.String()
	t, err := b.parse(text)
	if err != nil {
		return nil, fmt.Errorf("grpcresolver: %w", err)
	}
	r := newResolver(b, cc, t)
	if b.serviceConfig != "" {
		r.sc = cc.ParseServiceConfig(b.serviceConfig)
		if r.sc != nil && r.sc.Err != nil {
			return nil, fmt.Errorf("grpcresolver: service config: %w", r.sc.Err)
		}
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	b.resolvers[r] = struct{}{}
	if ts := b.targets[t]; ts != nil {
		r.ts = ts
	} else {
		b.targets[t] = r.ts
	}
	r.ts.refs++
	b.mu.Unlock()
	go r.send()
	sub, err := b.hub.Subscribe("grpc:"+t.String(), core.SinkFunc(r.update), t)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("grpcresolver: %w", err)
	}
	r.mu.Lock()
	if r.isClosed { // the builder closed meanwhile
		r.mu.Unlock()
		sub.Close()
		return nil, ErrClosed
	}
	r.sub = sub
	r.mu.Unlock()
	return r, nil
}

// discoResolver is one ClientConn's resolver. Core's mailbox goroutine
// calls update (one at a time) with each new state; update decides what
// grpc-go should get and hands it to the sender goroutine, the only one
// that calls the ClientConn, so a re-send asked by ResolveNow can never
// overtake a newer state (grpc-go's own dns resolver is built the same way).
type discoResolver struct {
	b      *Builder
	cc     resolver.ClientConn
	target core.Target
	ts     *targetState // shared with the target's other resolvers
	log    *zap.Logger
	sc     *serviceconfig.ParseResult

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	wake   chan struct{}
	closed sync.Once

	mu sync.Mutex
	// Set by update (core's goroutine).
	sub      *core.Subscription
	isClosed bool
	pending  *resolver.State // a state to send; nil: none
	pendErr  error           // an error to report; nil: none
	decided  *resolver.State // the shared state the last one sent or pending came from
	reported string
	// Set by the sender.
	last       *resolver.State
	rejected   bool // grpc-go returned an error for last
	resend     bool // ResolveNow asked to re-send last
	lastResend time.Time
}

func newResolver(b *Builder, cc resolver.ClientConn, t core.Target) *discoResolver {
	ctx, cancel := context.WithCancel(context.Background())
	return &discoResolver{b: b, cc: cc, target: t, log: b.log.With(zap.Stringer("target", t)), ts: &targetState{},
		ctx: ctx, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1)}
}

func (r *discoResolver) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// update runs on the subscription's goroutine (one at a time).
func (r *discoResolver) update(_ context.Context, u core.Update) error {
	st := u.State
	if !st.Synced {
		if st.Stale.IsStale() {
			r.report(st.Stale.Err(), false)
		}
		return nil // never an empty state before the first sync
	}
	if st.Stale.IsStale() && st.Stale.Kind != core.KindUnavailable && st.Endpoints.Len() == 0 {
		// Deleted Service, revoked permission: grpc-go keeps using the last
		// addresses on a resolver error alone, so send no address first,
		// then the reason: calls fail fast with it.
		r.report(st.Stale.Err(), true)
		return nil
	}
	shared := r.ts.build(u.Epoch, u.Seq, st)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.decided == shared {
		return nil // grpc-go pays O(endpoints) per UpdateState: never for nothing
	}
	rs := *shared // the list is shared by every resolver of the target, read-only
	rs.ServiceConfig = r.sc
	r.decided = shared
	r.pending, r.pendErr, r.reported = &rs, nil, ""
	r.poke()
	return nil
}

// report has grpc-go told that the target cannot be resolved, once per
// message; with empty, after a state without any address, so that the
// balancer drops the addresses it had.
func (r *discoResolver) report(err error, empty bool) {
	if err == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.reported == err.Error() {
		return
	}
	r.reported = err.Error()
	r.pending = nil
	r.pendErr = fmt.Errorf("grpcresolver: %s: %w", r.target, err)
	if empty && (r.decided == nil || len(r.decided.Endpoints) > 0) {
		// The reason rides with the empty state too, so that disco's
		// zone-aware balancer fails calls with it from that state on, not
		// only once the ReportError that follows has reached it.
		r.pending = &resolver.State{ServiceConfig: r.sc, Attributes: attributes.New(reasonKey{}, r.pendErr)}
	}
	r.decided = nil // the next state is sent, even if it equals the last one
	r.log.Warn("grpcresolver: cannot resolve target", zap.Error(err))
	r.poke()
}

// send is the sender goroutine: the only caller of the ClientConn.
func (r *discoResolver) send() {
	defer close(r.done)
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.wake:
		}
		r.mu.Lock()
		st, err := r.pending, r.pendErr
		if st == nil && err == nil && r.resend {
			st = r.last
		}
		r.pending, r.pendErr, r.resend = nil, nil, false
		r.mu.Unlock()
		if st != nil {
			uerr := r.cc.UpdateState(*st)
			r.mu.Lock()
			r.last, r.rejected = st, uerr != nil && err == nil
			r.mu.Unlock()
			if uerr != nil && err == nil {
				// The balancer refused the state (for example no address at
				// all): grpc-go will call ResolveNow.
				r.log.Debug("grpcresolver: state not accepted", zap.Int("endpoints", len(st.Endpoints)), zap.Error(uerr))
			}
		}
		if err != nil {
			r.cc.ReportError(err)
		}
	}
}

// ResolveNow implements resolver.Resolver. The watch pushes every change,
// so this is a hint: it only has the sender re-send the last state if
// grpc-go rejected it, at most once per interval, and never blocks.
func (r *discoResolver) ResolveNow(resolver.ResolveNowOptions) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.rejected || r.last == nil || time.Since(r.lastResend) < r.b.resolveNowEvery {
		return
	}
	r.lastResend = time.Now()
	r.resend = true
	r.poke()
}

// Close implements resolver.Resolver: it stops delivery and releases the
// watch (shared watches go on for other ClientConns). Idempotent.
func (r *discoResolver) Close() {
	r.closed.Do(func() {
		r.mu.Lock()
		sub := r.sub
		r.isClosed = true
		r.mu.Unlock()
		if sub != nil {
			sub.Close()
		}
		r.cancel()
		<-r.done
		r.b.mu.Lock()
		if _, ok := r.b.resolvers[r]; ok {
			delete(r.b.resolvers, r)
			if r.ts.refs--; r.ts.refs == 0 {
				delete(r.b.targets, r.target)
			}
		}
		r.b.mu.Unlock()
	})
}

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

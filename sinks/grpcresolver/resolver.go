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
	"fmt"
	"slices"
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

// TargetSource is a source that parses its own target syntax, as
// kubernetes.Source does (Target method).
type TargetSource interface {
	core.Source
	Target(text string) (core.Target, error)
}

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

// WithHubOptions passes options (metrics, max staleness, backoff) to the
// Builder's core.Hub.
func WithHubOptions(opts ...core.Option) Option {
	return func(b *Builder) { b.hubOpts = append(b.hubOpts, opts...) }
}

// Builder is a resolver.Builder for one scheme over one source. It is safe
// for concurrent use by many ClientConns. Close it when done: it stops every
// watch it still runs.
type Builder struct {
	scheme          string
	parse           TargetParser
	log             *zap.Logger
	serviceConfig   string
	resolveNowEvery time.Duration
	hubOpts         []core.Option

	once sync.Once
	hub  *core.Hub
	src  core.Source
}

var _ resolver.Builder = (*Builder)(nil)

// New returns a builder for scheme whose targets parse returns and src
// watches. It starts nothing.
func New(scheme string, src core.Source, parse TargetParser, opts ...Option) *Builder {
	b := &Builder{scheme: scheme, parse: parse, src: src, log: zap.NewNop(), resolveNowEvery: time.Second}
	for _, o := range opts {
		o(b)
	}
	return b
}

// NewKubernetes returns a builder for scheme "kubernetes" over a source that
// parses its own targets (kubernetes.Source): kubernetes:///svc.ns:port,
// kubernetes://ns/svc:port and the other forms of kubernetes.ParseTarget.
func NewKubernetes(src TargetSource, opts ...Option) *Builder {
	return New("kubernetes", src, src.Target, opts...)
}

// Register registers b with grpc-go's global resolver registry, so that
// grpc.NewClient finds its scheme without grpc.WithResolvers. Call it at
// start-up, before creating clients; it is not safe to call concurrently
// with them (a grpc-go rule).
func Register(b *Builder) { resolver.Register(b) }

// Scheme implements resolver.Builder.
func (b *Builder) Scheme() string { return b.scheme }

// Hub returns the builder's hub (created on first use), to wait for a
// target's first sync or read its state.
func (b *Builder) Hub() *core.Hub {
	b.once.Do(func() { b.hub = core.NewHub(b.src, append([]core.Option{core.WithLogger(b.log)}, b.hubOpts...)...) })
	return b.hub
}

// Close stops every watch and resolver of the builder. Idempotent.
func (b *Builder) Close() error { return b.Hub().Close() }

// Build implements resolver.Builder: it parses the target, subscribes to
// it, and returns at once; the first state follows the first sync. An
// unparseable target is an error (grpc.NewClient fails with it).
func (b *Builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	text := target.URL.String()
	t, err := b.parse(text)
	if err != nil {
		return nil, fmt.Errorf("grpcresolver: %w", err)
	}
	r := &discoResolver{b: b, cc: cc, target: t, log: b.log.With(zap.Stringer("target", t))}
	if b.serviceConfig != "" {
		r.sc = cc.ParseServiceConfig(b.serviceConfig)
		if r.sc != nil && r.sc.Err != nil {
			return nil, fmt.Errorf("grpcresolver: service config: %w", r.sc.Err)
		}
	}
	sub, err := b.Hub().Subscribe(t, "grpc:"+t.String(), core.SinkFunc(r.update))
	if err != nil {
		return nil, fmt.Errorf("grpcresolver: %w", err)
	}
	r.sub = sub
	return r, nil
}

type discoResolver struct {
	b      *Builder
	cc     resolver.ClientConn
	target core.Target
	log    *zap.Logger
	sc     *serviceconfig.ParseResult
	sub    *core.Subscription

	mu         sync.Mutex
	sent       []*core.Endpoint // routable endpoints last sent
	sentAny    bool
	reported   string // last error reported
	lastState  *resolver.State
	rejected   bool      // grpc-go returned an error for lastState
	lastResend time.Time // rate limit of ResolveNow re-sends
}

// update runs on the subscription's goroutine (one at a time).
func (r *discoResolver) update(_ context.Context, u core.Update) error {
	st := u.State
	if !st.Synced {
		if st.Stale.IsStale() {
			r.report(st.Stale.Err())
		}
		return nil // never an empty state before the first sync
	}
	if st.Stale.IsStale() && st.Stale.Kind != core.KindUnavailable && st.Endpoints.Len() == 0 {
		r.report(st.Stale.Err()) // deleted Service, revoked permission: fail fast
		return nil
	}
	routable := core.Routable(st.Endpoints)
	r.mu.Lock()
	same := r.sentAny && slices.EqualFunc(routable, r.sent, func(a, b *core.Endpoint) bool { return a == b || a.Equal(b) })
	r.mu.Unlock()
	if same {
		return nil // grpc-go pays O(endpoints) per UpdateState: never for nothing
	}
	rs := &resolver.State{Endpoints: make([]resolver.Endpoint, 0, len(routable))}
	for _, e := range routable {
		info := infoOf(e)
		re := resolver.Endpoint{Attributes: attributes.New(infoKey{}, info)}
		for _, hp := range e.HostPorts() {
			a := resolver.Address{Addr: hp, Attributes: attributes.New(infoKey{}, info)}
			re.Addresses = append(re.Addresses, a)
			rs.Addresses = append(rs.Addresses, a)
		}
		rs.Endpoints = append(rs.Endpoints, re)
	}
	if r.sc != nil {
		rs.ServiceConfig = r.sc
	}
	err := r.cc.UpdateState(*rs)
	r.mu.Lock()
	r.sent, r.sentAny, r.lastState, r.rejected, r.reported = routable, true, rs, err != nil, ""
	r.mu.Unlock()
	if err != nil {
		// The balancer refused the state (for example no address at all):
		// grpc-go will call ResolveNow; nothing to retry from here.
		r.log.Debug("grpcresolver: state not accepted", zap.Int("endpoints", len(routable)), zap.Error(err))
	}
	return nil
}

// report tells grpc-go the target cannot be resolved, once per message.
func (r *discoResolver) report(err error) {
	if err == nil {
		return
	}
	r.mu.Lock()
	if r.reported == err.Error() {
		r.mu.Unlock()
		return
	}
	r.reported = err.Error()
	r.sentAny = false
	r.mu.Unlock()
	r.log.Warn("grpcresolver: cannot resolve target", zap.Error(err))
	r.cc.ReportError(fmt.Errorf("grpcresolver: %s: %w", r.target, err))
}

// ResolveNow implements resolver.Resolver. The watch pushes every change,
// so this is a hint: it only re-sends the last state if grpc-go rejected it,
// at most once per interval.
func (r *discoResolver) ResolveNow(resolver.ResolveNowOptions) {
	r.mu.Lock()
	if !r.rejected || r.lastState == nil || time.Since(r.lastResend) < r.b.resolveNowEvery {
		r.mu.Unlock()
		return
	}
	r.lastResend = time.Now()
	st := *r.lastState
	r.mu.Unlock()
	go func() {
		if err := r.cc.UpdateState(st); err == nil {
			r.mu.Lock()
			r.rejected = false
			r.mu.Unlock()
		}
	}()
}

// Close implements resolver.Resolver: it stops delivery and releases the
// watch (shared watches go on for other ClientConns).
func (r *discoResolver) Close() { r.sub.Close() }

// Info is what the resolver attaches to every endpoint and address it sends
// (read it with InfoOf in a balancer or interceptor).
type Info struct {
	ID        string
	Name      string // pod name
	Zone      string
	Node      string
	Hostname  string
	ZoneHints []string
	Weight    uint32
}

// Equal lets grpc-go compare attributes.
func (i Info) Equal(o any) bool {
	j, ok := o.(Info)
	return ok && i.ID == j.ID && i.Name == j.Name && i.Zone == j.Zone && i.Node == j.Node &&
		i.Hostname == j.Hostname && i.Weight == j.Weight && slices.Equal(i.ZoneHints, j.ZoneHints)
}

type infoKey struct{}

func infoOf(e *core.Endpoint) Info {
	return Info{ID: e.ID, Name: e.Name, Zone: e.Zone, Node: e.Node, Hostname: e.Hostname, ZoneHints: e.ZoneHints, Weight: e.Weight}
}

// InfoOf returns the Info of an endpoint or address sent by this resolver.
func InfoOf(a *attributes.Attributes) (Info, bool) {
	i, ok := a.Value(infoKey{}).(Info)
	return i, ok
}

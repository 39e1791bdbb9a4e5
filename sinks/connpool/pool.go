// Package connpool is a generic pool of connections that a core sink feeds:
// the user says how to build a connection for an endpoint (timeouts, TLS,
// credentials) and how to close one; the pool keeps one (or several) per
// endpoint, builds them as endpoints appear, and balances picks across them.
// On removal an endpoint stops being picked at once, and its connection is
// closed when its in-flight work ends or a drain timeout passes.
//
// Picking is power-of-two-choices on in-flight count (default) or round
// robin, over ready endpoints (serving-and-terminating ones only while none
// is ready), preferring the client's zone when configured. A pick and its
// Done cost a few atomic operations and allocate nothing; an endpoint
// change costs O(1) whatever the pool's size.
//
// Channel adapts a pool of *grpc.ClientConn to grpc.ClientConnInterface, so
// generated clients take it directly.
package connpool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/disco-lb/disco/core"
)

// BuildFunc builds a connection to an endpoint. It is called from the
// pool's goroutines; ctx ends when the endpoint goes or the pool closes. An
// error makes the pool retry after a jittered backoff; the endpoint is not
// picked meanwhile.
type BuildFunc[C any] func(ctx context.Context, ep *core.Endpoint) (C, error)

// CloseFunc closes a connection the pool built, exactly once.
type CloseFunc[C any] func(C) error

// Policy selects how Pick chooses among ready endpoints.
type Policy int

const (
	// PowerOfTwo picks two endpoints at random and takes the one with fewer
	// calls in flight (the default): near-even load without coordination.
	PowerOfTwo Policy = iota
	// RoundRobin takes endpoints in turn.
	RoundRobin
)

// ErrClosed is returned by Pick after Close.
var ErrClosed = errors.New("connpool: closed")

// Option configures a Pool.
type Option func(*config)

type config struct {
	policy     Policy
	perEP      int
	zone       string
	minLocal   int
	drain      time.Duration
	backoffMin time.Duration
	backoffMax time.Duration
	log        *zap.Logger
}

// WithPolicy sets the picking policy (default PowerOfTwo).
func WithPolicy(p Policy) Option { return func(c *config) { c.policy = p } }

// WithConnsPerEndpoint keeps n connections per endpoint (default 1).
func WithConnsPerEndpoint(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.perEP = n
		}
	}
}

// WithZone prefers endpoints in zone (or hinted for it, when hints are
// present) while at least minReady of them are ready; otherwise every zone.
func WithZone(zone string, minReady int) Option {
	return func(c *config) { c.zone, c.minLocal = zone, max(minReady, 1) }
}

// WithDrainTimeout bounds how long a removed endpoint's connection stays
// open for calls in flight (default 30s).
func WithDrainTimeout(d time.Duration) Option { return func(c *config) { c.drain = d } }

// WithBuildBackoff sets the bounds of the jittered backoff between failed
// builds (default 100ms to 10s).
func WithBuildBackoff(min, max time.Duration) Option {
	return func(c *config) { c.backoffMin, c.backoffMax = min, max }
}

// WithLogger sets the logger (nil: no-op).
func WithLogger(l *zap.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// Pool is a pool of connections of type C, fed as a core.Sink. Safe for
// concurrent use. Close it to close every connection.
type Pool[C any] struct {
	build BuildFunc[C]
	close CloseFunc[C]
	cfg   config

	ready, fallback, local *slots[C]
	rr                     atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex // guards the maps and wake
	eps     map[string]*endpointState[C]
	closed  bool
	wake    chan struct{} // closed when a member becomes pickable
	closing sync.Once
}

var _ core.Sink = (*Pool[int])(nil)

// endpointState is one endpoint and its members (connections).
type endpointState[C any] struct {
	key     string
	ep      *core.Endpoint
	members []*member[C]
	cancel  context.CancelFunc
}

// member is one connection of one endpoint.
type member[C any] struct {
	pool                         *Pool[C]
	ep                           atomic.Pointer[core.Endpoint] // latest version: conditions change in place
	conn                         C
	inflight                     atomic.Int64
	removed                      atomic.Bool
	closeMu                      sync.Once
	built                        bool // guarded by pool.mu
	inReady, inFallback, inLocal bool
	iReady, iFallback, iLocal    int
}

// New returns an empty pool; feed it as a core sink (a Pipeline or Hub
// subscription). It starts goroutines only to build connections.
func New[C any](build BuildFunc[C], closeFn CloseFunc[C], opts ...Option) *Pool[C] {
	cfg := config{perEP: 1, drain: 30 * time.Second, backoffMin: 100 * time.Millisecond, backoffMax: 10 * time.Second, log: zap.NewNop()}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool[C]{
		build: build, close: closeFn, cfg: cfg,
		ready: newSlots[C](), fallback: newSlots[C](), local: newSlots[C](),
		ctx: ctx, cancel: cancel,
		eps:  map[string]*endpointState[C]{},
		wake: make(chan struct{}),
	}
}

// Handle is a picked connection. Call Done exactly once when the call on it
// ends.
type Handle[C any] struct {
	Conn C
	m    *member[C]
}

// Done releases the handle: the endpoint's in-flight count drops, and a
// removed endpoint's connection closes when its last handle is done.
func (h Handle[C]) Done() {
	if h.m != nil {
		h.m.release()
	}
}

// Endpoint returns the picked endpoint.
func (h Handle[C]) Endpoint() *core.Endpoint { return h.m.ep.Load() }

// Pick returns a connection to a ready endpoint, waiting for the first one
// while ctx allows. It allocates nothing once endpoints are ready.
func (p *Pool[C]) Pick(ctx context.Context) (Handle[C], error) {
	for {
		if m := p.pickOnce(); m != nil {
			return Handle[C]{Conn: m.conn, m: m}, nil
		}
		p.mu.Lock()
		closed, wake := p.closed, p.wake
		p.mu.Unlock()
		if closed {
			return Handle[C]{}, ErrClosed
		}
		if p.pickable() {
			continue
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return Handle[C]{}, fmt.Errorf("connpool: no ready endpoint: %w", ctx.Err())
		}
	}
}

func (p *Pool[C]) pickable() bool {
	return p.ready.len() > 0 || p.fallback.len() > 0
}

// set returns the slots to pick from now.
func (p *Pool[C]) set() *slots[C] {
	if p.cfg.zone != "" && p.local.len() >= p.cfg.minLocal {
		return p.local
	}
	if p.ready.len() > 0 {
		return p.ready
	}
	return p.fallback
}

func (p *Pool[C]) pickOnce() *member[C] {
	for range 8 { // retry past members removed under our feet
		a := p.set().arr.Load()
		n := int(a.n.Load())
		if n == 0 {
			return nil
		}
		var m *member[C]
		if p.cfg.policy == RoundRobin || n == 1 {
			m = a.at(int(p.rr.Add(1) % uint64(n)))
		} else {
			i, j := rand.IntN(n), rand.IntN(n-1)
			if j >= i {
				j++
			}
			x, y := a.at(i), a.at(j)
			switch {
			case x == nil:
				m = y
			case y == nil:
				m = x
			case y.inflight.Load() < x.inflight.Load():
				m = y
			default:
				m = x
			}
		}
		if m == nil {
			continue
		}
		m.inflight.Add(1)
		if m.removed.Load() {
			m.release()
			continue
		}
		return m
	}
	return nil
}

// Do picks a connection, runs fn with it and releases it.
func (p *Pool[C]) Do(ctx context.Context, fn func(C) error) error {
	h, err := p.Pick(ctx)
	if err != nil {
		return err
	}
	defer h.Done()
	return fn(h.Conn)
}

// Len returns how many endpoints can be picked now (ready, or the fallback
// when none is ready).
func (p *Pool[C]) Len() int {
	if n := p.ready.len(); n > 0 {
		return n / p.cfg.perEP
	}
	return p.fallback.len() / p.cfg.perEP
}

func (m *member[C]) release() {
	if m.inflight.Add(-1) == 0 && m.removed.Load() {
		m.closeConn()
	}
}

func (m *member[C]) closeConn() {
	m.closeMu.Do(func() { // a drain timer firing later finds it done
		if err := m.pool.close(m.conn); err != nil {
			m.pool.cfg.log.Debug("connpool: close", zap.String("endpoint", m.ep.Load().ID), zap.Error(err))
		}
	})
}

// Update implements core.Sink: it applies the delta (O(1) per endpoint
// changed, whatever the pool's size).
func (p *Pool[C]) Update(ctx context.Context, u core.Update) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	prefix := u.Target.String() + "/"
	for _, e := range u.Removed {
		p.removeLocked(prefix + e.ID)
	}
	for _, c := range u.Changed {
		key := prefix + c.New.ID
		if c.Old.Port != c.New.Port || !sameAddrs(c.Old, c.New) {
			p.removeLocked(key) // a new address is a new connection
			p.addLocked(key, c.New)
			continue
		}
		if st := p.eps[key]; st != nil {
			p.placeLocked(st, c.New)
		}
	}
	for _, e := range u.Added {
		p.addLocked(prefix+e.ID, e)
	}
	return nil
}

func sameAddrs(a, b *core.Endpoint) bool {
	if len(a.Addresses) != len(b.Addresses) {
		return false
	}
	for i := range a.Addresses {
		if a.Addresses[i] != b.Addresses[i] {
			return false
		}
	}
	return true
}

func (p *Pool[C]) addLocked(key string, e *core.Endpoint) {
	if p.eps[key] != nil {
		return
	}
	ctx, cancel := context.WithCancel(p.ctx)
	st := &endpointState[C]{key: key, ep: e, cancel: cancel}
	p.eps[key] = st
	for range p.cfg.perEP {
		m := &member[C]{pool: p, iReady: -1, iFallback: -1, iLocal: -1}
		m.ep.Store(e)
		st.members = append(st.members, m)
		p.wg.Go(func() { p.buildLoop(ctx, st, m) })
	}
}

// buildLoop builds one member's connection, retrying with jittered backoff,
// then makes it pickable.
func (p *Pool[C]) buildLoop(ctx context.Context, st *endpointState[C], m *member[C]) {
	for attempt := 0; ; attempt++ {
		ep := m.ep.Load()
		conn, err := p.build(ctx, ep)
		if err == nil {
			p.mu.Lock()
			if ctx.Err() != nil || m.removed.Load() {
				p.mu.Unlock()
				if err := p.close(conn); err != nil {
					p.cfg.log.Debug("connpool: close", zap.Error(err))
				}
				return
			}
			m.conn, m.built = conn, true
			p.placeMemberLocked(m, st.ep)
			p.mu.Unlock()
			return
		}
		if ctx.Err() != nil {
			return
		}
		d := min(p.cfg.backoffMin<<min(attempt, 20), p.cfg.backoffMax)
		d = d/2 + rand.N(d/2+1)
		p.cfg.log.Warn("connpool: build failed; retrying", zap.String("endpoint", ep.ID),
			zap.Strings("addresses", ep.Addresses), zap.Duration("backoff", d), zap.Error(err))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// placeLocked moves an endpoint's members to the sets its new conditions
// call for.
func (p *Pool[C]) placeLocked(st *endpointState[C], e *core.Endpoint) {
	st.ep = e
	for _, m := range st.members {
		m.ep.Store(e)
		if m.built {
			p.placeMemberLocked(m, e)
		}
	}
}

func (p *Pool[C]) placeMemberLocked(m *member[C], e *core.Endpoint) {
	c := e.Conditions
	wantReady := c.IsReady()
	wantFallback := !wantReady && c.IsServing() && c.IsTerminating()
	wantLocal := wantReady && p.cfg.zone != "" && p.inZone(e)
	p.setsLocked(m, wantReady, wantFallback, wantLocal)
	if wantReady || wantFallback {
		close(p.wake)
		p.wake = make(chan struct{})
	}
}

// inZone: hinted for the zone when the endpoint carries hints, else in it.
func (p *Pool[C]) inZone(e *core.Endpoint) bool {
	if len(e.ZoneHints) > 0 {
		return slices.Contains(e.ZoneHints, p.cfg.zone)
	}
	return e.Zone == p.cfg.zone
}

// setsLocked puts m in, or takes it out of, each pick set.
func (p *Pool[C]) setsLocked(m *member[C], ready, fallback, local bool) {
	p.toggle(p.ready, m, &m.inReady, &m.iReady, ready, func(x *member[C]) *int { return &x.iReady })
	p.toggle(p.fallback, m, &m.inFallback, &m.iFallback, fallback, func(x *member[C]) *int { return &x.iFallback })
	p.toggle(p.local, m, &m.inLocal, &m.iLocal, local, func(x *member[C]) *int { return &x.iLocal })
}

func (p *Pool[C]) toggle(s *slots[C], m *member[C], in *bool, idx *int, want bool, idxOf func(*member[C]) *int) {
	switch {
	case want && !*in:
		s.add(m, idx)
		*in = true
	case !want && *in:
		s.remove(idx, idxOf)
		*in = false
	}
}

// removeLocked stops picking an endpoint at once and closes its connections
// when their calls end or the drain timeout passes.
func (p *Pool[C]) removeLocked(key string) {
	st := p.eps[key]
	if st == nil {
		return
	}
	delete(p.eps, key)
	st.cancel() // stops a build in progress
	for _, m := range st.members {
		m.removed.Store(true)
		if !m.built {
			continue
		}
		p.setsLocked(m, false, false, false)
		if m.inflight.Load() == 0 {
			m.closeConn()
		} else {
			time.AfterFunc(p.cfg.drain, m.closeConn)
		}
	}
}

// Close stops every build, closes every connection (waiting for none of the
// calls in flight) and makes Pick fail with ErrClosed. Idempotent.
func (p *Pool[C]) Close() error {
	p.closing.Do(func() {
		p.mu.Lock()
		p.closed = true
		keys := make([]string, 0, len(p.eps))
		for k := range p.eps {
			keys = append(keys, k)
		}
		for _, k := range keys {
			st := p.eps[k]
			p.removeLocked(k)
			for _, m := range st.members {
				if m.built {
					m.closeConn()
				}
			}
		}
		close(p.wake)
		p.wake = make(chan struct{})
		p.mu.Unlock()
		p.cancel()
		p.wg.Wait()
	})
	return nil
}

// Package connpool is a generic pool of connections that a core sink feeds:
// the user says how to build a connection for an endpoint (timeouts, TLS,
// credentials) and how to close one; the pool keeps one (or several) per
// endpoint, builds them as endpoints appear, and balances picks across them.
// On removal an endpoint stops being picked at once, and its connection is
// closed when its in-flight work ends or a drain timeout passes.
//
// Picking is power-of-two-choices on in-flight count (default) or round
// robin, over ready endpoints (serving-and-terminating ones only while none
// is ready), preferring the client's zone when configured (route.Locality,
// the rule the gRPC resolver's zone-aware policy applies too). One pool can
// serve several targets. A pick and its
// Done cost a few atomic operations and allocate nothing; an endpoint
// change costs O(1) whatever the pool's size.
//
// Channel adapts a pool of *grpc.ClientConn to grpc.ClientConnInterface, so
// generated clients take it directly.
package connpool

import (
	"cmp"
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
	"github.com/disco-lb/disco/core/kit"
	"github.com/disco-lb/disco/core/route"
)

// BuildFunc builds a connection to an endpoint. It is called from the
// pool's goroutines; ctx ends when the endpoint goes or the pool closes. An
// error makes the pool retry after a jittered backoff; the endpoint is not
// picked meanwhile.
type BuildFunc[C any] func(ctx context.Context, ep *core.Endpoint) (C, error)

// CloseFunc closes a connection the pool built, exactly once. The pool
// never calls it with a lock held, so it may block (a graceful close) and
// may call back into the pool.
type CloseFunc[C any] func(C) error

// Policy selects how Pick chooses among ready endpoints.
type Policy int

const (
	// PowerOfTwo picks two endpoints at random and takes the one with fewer
	// calls in flight (the default): near-even load without coordination,
	// and a backend whose calls stop completing stops getting new ones.
	PowerOfTwo Policy = iota
	// RoundRobin takes endpoints in turn.
	RoundRobin
)

// ErrClosed is returned by Pick after Close.
var ErrClosed = errors.New("connpool: closed")

// Option configures a Pool. A value out of range makes New fail with an
// error naming the option and what it allows.
type Option = kit.Option[*config]

type config struct {
	kit.Common     // WithLogger, WithBackoff
	usable     any // func(C) bool, or nil
	policy     Policy
	perEP      int
	locality   route.Locality
	drain      time.Duration
	subset     int
	seed       string
}

// WithUsable makes picks prefer connections for which usable reports true
// (for gRPC, GRPCUsable: the connection is ready), when there are any: a
// connection just reset, or reconnecting, is left alone while others can
// serve. usable is called on every pick: it must be cheap.
func WithUsable[C any](usable func(C) bool) Option {
	return func(c *config) error { c.usable = usable; return nil }
}

// WithPolicy sets the picking policy (default PowerOfTwo).
func WithPolicy(p Policy) Option {
	return kit.Checked(kit.Between("WithPolicy", p, PowerOfTwo, RoundRobin), func(c *config) { c.policy = p })
}

// WithConnsPerEndpoint keeps n connections per endpoint (1 to 64; default
// 1).
func WithConnsPerEndpoint(n int) Option {
	return kit.Checked(kit.Between("WithConnsPerEndpoint", n, 1, 64), func(c *config) { c.perEP = n })
}

// WithZone prefers endpoints local to zone by route.Locality (the rule the
// gRPC resolver's zone-aware policy applies too): when every ready endpoint
// carries zone hints, those hinted for the zone; when none does, those in
// the zone; when some do and some do not, no preference. Local endpoints
// are used while at least minReady (1 to 1,000,000) of them are ready;
// otherwise every zone.
func WithZone(zone string, minReady int) Option {
	return kit.Checked(kit.Between("WithZone", minReady, 1, 1_000_000), func(c *config) { c.locality = route.Locality{Zone: zone, MinLocal: minReady} })
}

// WithSubset keeps connections to only k (1 to 100,000) of each target's
// routable endpoints (ready ones; serving-and-terminating ones while none
// is), chosen by route.Rendezvous with seed: a client of a 1,000-pod
// service keeps k connections, not 1,000. An endpoint that goes, or stops
// being routable, is replaced by one other; the rest stay. The seed should
// be unique per client and stable (the pod name), so that many clients
// spread over the backends and a restarted client keeps its subset; ""
// is a random seed per pool (as gRFC A68's random subsetting). Clients
// that cannot see each other spread only about evenly: with 300 clients of
// 10 over 300 backends, from 0.3 to 2 times the mean per backend (see
// BENCHMARKS.md); the xDS server's subsets (sinks/xds WithSubsetSize) are
// even.
func WithSubset(k int, seed string) Option {
	return kit.Checked(kit.Between("WithSubset", k, 1, 100_000), func(c *config) {
		c.subset, c.seed = k, seed
		if seed == "" {
			c.seed = fmt.Sprintf("%016x", rand.Uint64())
		}
	})
}

// WithDrainTimeout bounds how long a removed endpoint's connection stays
// open for calls in flight (0 to 24h; default 30s; 0 closes it at once).
func WithDrainTimeout(d time.Duration) Option {
	return kit.Checked(kit.NonNegative("WithDrainTimeout", d, 24*time.Hour), func(c *config) { c.drain = d })
}

// WithBackoff sets the jittered backoff between failed builds of a
// connection (0 < min <= max <= 24h; default 100ms to 10s).
func WithBackoff(min, max time.Duration) Option {
	return kit.WithBackoff[*config]("WithBackoff", min, max)
}

// WithLogger sets the logger (nil: none).
var WithLogger = kit.WithLogger[*config]

// Pool is a pool of connections of type C, fed as a core.Sink for one or
// more targets. Safe for concurrent use. Close it to close every
// connection.
type Pool[C any] struct {
	build BuildFunc[C]
	close CloseFunc[C]
	cfg   config

	// The members by priority (RFC 2782), lowest first: Pick uses the
	// lowest tier with ready members (else the lowest with fallback ones).
	// Replaced whole under mu; read without a lock.
	tiers atomic.Pointer[[]*tier[C]]
	rr    atomic.Uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex // guards targets, draining, closed and wake
	targets  map[core.Target]map[string]*endpointState[C]
	draining map[*member[C]]*time.Timer // removed members waiting for their calls
	closed   bool
	wake     chan struct{} // closed when a member becomes pickable
	closing  sync.Once
}

var _ core.Sink = (*Pool[int])(nil)

// tier is the members of one priority: its pick sets (ready members;
// serving-and-terminating ones, used while none is ready; ready ones hinted
// for the client's zone; ready ones in it) and the counts of ready members
// with and without zone hints, for route.Locality's rule.
type tier[C any] struct {
	priority                         uint32
	ready, fallback, byHints, byZone *pickSet[C]
	hinted, unhinted                 atomic.Int64
	members                          int // placed in it (guarded by pool.mu)
}

func newTier[C any](priority uint32) *tier[C] {
	return &tier[C]{priority: priority, ready: newPickSet[C](), fallback: newPickSet[C](), byHints: newPickSet[C](), byZone: newPickSet[C]()}
}

// endpointState is one endpoint and its members (connections).
type endpointState[C any] struct {
	ep      *core.Endpoint
	members []*member[C]
	cancel  context.CancelFunc
}

// member is one connection of one endpoint.
type member[C any] struct {
	pool      *Pool[C]
	ep        atomic.Pointer[core.Endpoint] // latest version: conditions change in place
	conn      C
	inflight  atomic.Int64
	removed   atomic.Bool
	closeOnce sync.Once
	// Guarded by pool.mu.
	built  bool
	tier   *tier[C] // the tier of its endpoint's priority, once placed
	in     [4]bool  // in its tier's ready, fallback, byHints, byZone
	idx    [4]int   // position in each
	counts int8     // 0: not counted; 1: counted hinted; 2: counted unhinted
}

const (
	setReady = iota
	setFallback
	setByHints
	setByZone
)

// New returns an empty pool; feed it as a core sink (subscribe it to a
// Hub). It starts goroutines only to build connections. It fails with
// core.ErrInvalid for a missing build or close function, or an option out
// of range.
func New[C any](build BuildFunc[C], closeFn CloseFunc[C], opts ...Option) (*Pool[C], error) {
	cfg := config{Common: kit.Common{Log: zap.NewNop(), Backoff: kit.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}},
		perEP: 1, drain: 30 * time.Second}
	if build == nil || closeFn == nil {
		return nil, fmt.Errorf("connpool: New needs a build and a close function: %w", core.ErrInvalid)
	}
	if err := kit.Apply(&cfg, opts...); err != nil {
		return nil, fmt.Errorf("connpool: %w: %w", err, core.ErrInvalid)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Pool[C]{
		build: build, close: closeFn, cfg: cfg,
		ctx: ctx, cancel: cancel,
		targets:  map[core.Target]map[string]*endpointState[C]{},
		draining: map[*member[C]]*time.Timer{},
		wake:     make(chan struct{}),
	}
	p.tiers.Store(&[]*tier[C]{})
	return p, nil
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
func (p *Pool[C]) Pick(ctx context.Context) (Handle[C], error) { return p.pickAvoiding(ctx, nil) }

// pickAvoiding is Pick preferring endpoints not in avoid (a retry's earlier
// attempts), if there are any.
func (p *Pool[C]) pickAvoiding(ctx context.Context, avoid []*core.Endpoint) (Handle[C], error) {
	for {
		if m := p.pickOnce(); m != nil {
			for try := 0; len(avoid) > 0 && try < 8 && slices.Contains(avoid, m.ep.Load()); try++ {
				if other := p.pickOnce(); other != nil {
					m.release()
					m = other
				}
			}
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
	for _, t := range *p.tiers.Load() {
		if t.ready.len() > 0 || t.fallback.len() > 0 {
			return true
		}
	}
	return false
}

// set returns the pick set to use now and its tier's index: in the lowest
// tier with ready members, the local set by route.Locality when it has
// enough members, else the ready one; with no ready member in any tier, the
// lowest tier's fallback set (core.Routable's rule). -1: none.
func (p *Pool[C]) set() (*pickSet[C], int) {
	tiers := *p.tiers.Load()
	for i, t := range tiers {
		if t.ready.len() == 0 {
			continue
		}
		if loc := p.cfg.locality; loc.Zone != "" {
			var local *pickSet[C]
			switch loc.Rule(int(t.hinted.Load()), int(t.unhinted.Load())) {
			case route.ByHints:
				local = t.byHints
			case route.ByZone:
				local = t.byZone
			}
			if local != nil && loc.Enough(local.len()/p.cfg.perEP) {
				return local, i
			}
		}
		return t.ready, i
	}
	for i, t := range tiers {
		if t.fallback.len() > 0 {
			return t.fallback, i
		}
	}
	return nil, -1
}

func (p *Pool[C]) pickOnce() *member[C] {
	for range 8 { // retry past members removed under our feet
		set, tierIdx := p.set()
		if set == nil {
			return nil
		}
		a := set.arr.Load()
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
		if usable, ok := p.cfg.usable.(func(C) bool); ok && !usable(m.conn) {
			// Another, usable one, from a random start; else one of the next
			// priority that is (RFC 2782: the lowest priority that can be
			// reached); else this one.
			if o := usableIn(a, m, usable); o != nil {
				m = o
			} else {
				tiers := *p.tiers.Load()
				for _, t := range tiers[min(tierIdx+1, len(tiers)):] {
					if o := usableIn(t.ready.arr.Load(), m, usable); o != nil {
						m = o
						break
					}
				}
			}
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

// usableIn returns a usable member of a other than m, from a random start,
// or nil.
func usableIn[C any](a *pickArray[C], m *member[C], usable func(C) bool) *member[C] {
	n := int(a.n.Load())
	if n == 0 {
		return nil
	}
	start := rand.IntN(n)
	for k := range n {
		if o := a.at((start + k) % n); o != nil && o != m && usable(o.conn) {
			return o
		}
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

// Len returns how many endpoints can be picked now (ready ones of the
// lowest priority that has some, or the fallback when none is ready).
func (p *Pool[C]) Len() int {
	tiers := *p.tiers.Load()
	for _, t := range tiers {
		if n := t.ready.len(); n > 0 {
			return n / p.cfg.perEP
		}
	}
	for _, t := range tiers {
		if n := t.fallback.len(); n > 0 {
			return n / p.cfg.perEP
		}
	}
	return 0
}

// Endpoints returns the endpoints Pick chooses from now (the local ones
// when the zone preference applies), each once, in no particular order.
func (p *Pool[C]) Endpoints() []*core.Endpoint {
	set, _ := p.set()
	if set == nil {
		return nil
	}
	a := set.arr.Load()
	n := int(a.n.Load())
	seen := make(map[*core.Endpoint]bool, n)
	var out []*core.Endpoint
	for i := range n {
		if m := a.at(i); m != nil {
			if e := m.ep.Load(); !seen[e] {
				seen[e] = true
				out = append(out, e)
			}
		}
	}
	return out
}

func (m *member[C]) release() {
	if m.inflight.Add(-1) == 0 && m.removed.Load() {
		m.closeConn()
	}
}

// closeConn closes the member's connection once, outside every pool lock.
func (m *member[C]) closeConn() {
	m.closeOnce.Do(func() {
		p := m.pool
		p.mu.Lock()
		if t := p.draining[m]; t != nil {
			t.Stop()
			delete(p.draining, m)
		}
		p.mu.Unlock()
		if err := p.close(m.conn); err != nil {
			p.cfg.Log.Debug("connpool: close", zap.String("endpoint", m.ep.Load().ID), zap.Error(err))
		}
	})
}

// Accept implements core.Sink: it applies the delta (O(1) per endpoint
// changed, whatever the pool's size), or, for an update from nothing
// (BaseSeq 0: a first update, a resync), replaces what the pool holds for
// the target with the update's state.
func (p *Pool[C]) Accept(ctx context.Context, u core.Update) error {
	var closeNow []*member[C]
	defer func() { // user code runs outside the lock
		for _, m := range closeNow {
			m.closeConn()
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	eps := p.targets[u.Target]
	if eps == nil {
		eps = map[string]*endpointState[C]{}
		p.targets[u.Target] = eps
	}
	if p.cfg.subset > 0 {
		closeNow = p.subsetLocked(eps, u.State.Endpoints, closeNow)
	} else if u.BaseSeq == 0 {
		for id := range eps {
			if _, ok := u.State.Endpoints.Get(id); !ok {
				closeNow = p.removeLocked(eps, id, closeNow)
			}
		}
		for e := range u.State.Endpoints.All() {
			closeNow = p.putLocked(eps, e, closeNow)
		}
	} else {
		for _, e := range u.Removed {
			closeNow = p.removeLocked(eps, e.ID, closeNow)
		}
		for _, c := range u.Changed {
			closeNow = p.putLocked(eps, c.New, closeNow)
		}
		for _, e := range u.Added {
			closeNow = p.putLocked(eps, e, closeNow)
		}
	}
	if len(eps) == 0 {
		delete(p.targets, u.Target)
	}
	return nil
}

// subsetLocked makes eps the pool's subset of set's routable endpoints.
func (p *Pool[C]) subsetLocked(eps map[string]*endpointState[C], set core.Set, closeNow []*member[C]) []*member[C] {
	routable := route.Routable(set)
	ids := make([]string, len(routable))
	byID := make(map[string]*core.Endpoint, len(routable))
	for i, e := range routable {
		ids[i], byID[e.ID] = e.ID, e
	}
	keep := route.Rendezvous(p.cfg.seed, ids, p.cfg.subset)
	kept := make(map[string]bool, len(keep))
	for _, id := range keep {
		kept[id] = true
	}
	for id := range eps {
		if !kept[id] {
			closeNow = p.removeLocked(eps, id, closeNow)
		}
	}
	for _, id := range keep {
		closeNow = p.putLocked(eps, byID[id], closeNow)
	}
	return closeNow
}

// putLocked adds e, or updates the endpoint with its ID: a new address or
// port is a new connection; other changes move it between pick sets.
func (p *Pool[C]) putLocked(eps map[string]*endpointState[C], e *core.Endpoint, closeNow []*member[C]) []*member[C] {
	st := eps[e.ID]
	switch {
	case st == nil:
	case st.ep == e:
		return closeNow // redelivered: nothing to do
	case st.ep.Port != e.Port || !slices.Equal(st.ep.Addresses, e.Addresses):
		closeNow = p.removeLocked(eps, e.ID, closeNow)
		st = nil
	default:
		p.placeLocked(st, e)
		return closeNow
	}
	ctx, cancel := context.WithCancel(p.ctx)
	st = &endpointState[C]{ep: e, cancel: cancel}
	eps[e.ID] = st
	for range p.cfg.perEP {
		m := &member[C]{pool: p, idx: [4]int{-1, -1, -1, -1}}
		m.ep.Store(e)
		st.members = append(st.members, m)
		p.wg.Go(func() { p.buildLoop(ctx, st, m) })
	}
	return closeNow
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
					p.cfg.Log.Debug("connpool: close", zap.Error(err))
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
		d := p.cfg.Backoff.Delay(attempt)
		p.cfg.Log.Warn("connpool: build failed; retrying", zap.String("endpoint", ep.ID),
			zap.Strings("addresses", ep.Addresses), zap.Duration("backoff", d), zap.Error(err))
		if !kit.Sleep(ctx, d) {
			return
		}
	}
}

// placeLocked moves an endpoint's members to the sets its new version calls
// for.
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
	if m.tier == nil || m.tier.priority != e.Priority {
		p.unplaceLocked(m)
		m.tier = p.tierLocked(e.Priority)
		m.tier.members++
	}
	loc := p.cfg.locality
	ready := e.Conditions.IsReady()
	fallback := route.IsFallback(e)
	p.countLocked(m, ready, len(e.ZoneHints) > 0)
	p.setsLocked(m, [4]bool{
		setReady:    ready,
		setFallback: fallback,
		setByHints:  ready && loc.Local(e, route.ByHints),
		setByZone:   ready && loc.Local(e, route.ByZone),
	})
	if ready || fallback {
		close(p.wake)
		p.wake = make(chan struct{})
	}
}

// tierLocked returns the tier of priority, adding it in order if new.
func (p *Pool[C]) tierLocked(priority uint32) *tier[C] {
	tiers := *p.tiers.Load()
	i, found := slices.BinarySearchFunc(tiers, priority, func(t *tier[C], prio uint32) int { return cmp.Compare(t.priority, prio) })
	if found {
		return tiers[i]
	}
	t := newTier[C](priority)
	next := slices.Insert(slices.Clone(tiers), i, t)
	p.tiers.Store(&next)
	return t
}

// unplaceLocked takes m out of its tier, dropping the tier once empty.
func (p *Pool[C]) unplaceLocked(m *member[C]) {
	t := m.tier
	if t == nil {
		return
	}
	p.countLocked(m, false, false)
	p.setsLocked(m, [4]bool{})
	m.tier = nil
	if t.members--; t.members > 0 {
		return
	}
	tiers := *p.tiers.Load()
	if i := slices.Index(tiers, t); i >= 0 {
		next := slices.Delete(slices.Clone(tiers), i, i+1)
		p.tiers.Store(&next)
	}
}

// countLocked keeps the hinted/unhinted counts of ready members.
func (p *Pool[C]) countLocked(m *member[C], ready, hinted bool) {
	t := m.tier
	switch m.counts {
	case 1:
		t.hinted.Add(-1)
	case 2:
		t.unhinted.Add(-1)
	}
	m.counts = 0
	switch {
	case ready && hinted:
		t.hinted.Add(1)
		m.counts = 1
	case ready:
		t.unhinted.Add(1)
		m.counts = 2
	}
}

// setsLocked puts m in, or takes it out of, each pick set of its tier.
func (p *Pool[C]) setsLocked(m *member[C], want [4]bool) {
	t := m.tier
	for i, s := range [4]*pickSet[C]{t.ready, t.fallback, t.byHints, t.byZone} {
		switch {
		case want[i] && !m.in[i]:
			s.add(m, &m.idx[i])
			m.in[i] = true
		case !want[i] && m.in[i]:
			s.remove(&m.idx[i], func(x *member[C]) *int { return &x.idx[i] })
			m.in[i] = false
		}
	}
}

// removeLocked stops picking an endpoint at once. Members without calls in
// flight are returned to be closed (outside the lock); the others close when
// their calls end or the drain timeout passes.
func (p *Pool[C]) removeLocked(eps map[string]*endpointState[C], id string, closeNow []*member[C]) []*member[C] {
	st := eps[id]
	if st == nil {
		return closeNow
	}
	delete(eps, id)
	st.cancel() // stops a build in progress
	for _, m := range st.members {
		m.removed.Store(true)
		if !m.built {
			continue
		}
		p.unplaceLocked(m)
		if m.inflight.Load() == 0 {
			closeNow = append(closeNow, m)
		} else {
			p.draining[m] = time.AfterFunc(p.cfg.drain, m.closeConn)
		}
	}
	return closeNow
}

// Close stops every build, closes every connection, draining ones
// included (waiting for none of the calls in flight), stops every timer and
// makes Pick fail with ErrClosed. Idempotent.
func (p *Pool[C]) Close() error {
	p.closing.Do(func() {
		var closeNow []*member[C]
		p.mu.Lock()
		p.closed = true
		for _, eps := range p.targets {
			for id := range eps {
				closeNow = p.removeLocked(eps, id, closeNow)
			}
		}
		clear(p.targets)
		for m, t := range p.draining {
			t.Stop()
			closeNow = append(closeNow, m)
		}
		clear(p.draining)
		close(p.wake)
		p.wake = make(chan struct{})
		p.mu.Unlock()
		p.cancel()
		p.wg.Wait()
		for _, m := range closeNow {
			m.closeConn()
		}
	})
	return nil
}

package xds

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/kit"
	"github.com/disco-lb/disco/core/route"
)

// Option configures a Server. A value out of range makes New fail with an
// error naming the option and what it allows.
type Option = kit.Option[*config]

type config struct {
	kit.Common    // WithLogger
	parse         func(string) (core.Target, error)
	reg           prometheus.Registerer
	maxPerStream  int
	serverOptions []grpc.ServerOption
	subsetSize    func(core.Target) int
}

// WithLogger sets the logger (nil: none).
var WithLogger = kit.WithLogger[*config]

// WithTargetParser sets how a resource name's target is read (default: the
// hub's source's own Target method if it has one, kubernetes.Source's say,
// else core.ParseTarget with core.ServiceSyntax).
func WithTargetParser(parse func(string) (core.Target, error)) Option {
	return func(c *config) error { c.parse = parse; return nil }
}

// WithRegisterer registers the server's Prometheus metrics with reg (none
// by default).
func WithRegisterer(reg prometheus.Registerer) Option {
	return func(c *config) error { c.reg = reg; return nil }
}

// WithMaxResourcesPerStream bounds how many resources of one type one
// stream may subscribe to (1 to 1,000,000; default 1,000): a request for
// more ends that stream with an error saying so, and costs no watch.
func WithMaxResourcesPerStream(n int) Option {
	return kit.Checked(kit.Between("WithMaxResourcesPerStream", n, 1, 1_000_000), func(c *config) { c.maxPerStream = n })
}

// WithSubsetSize turns on server-side subsetting: a client that names
// itself (a resource name with client=<id>, which Bootstrap{Client: id}
// asks for) gets size(target) of the target's endpoints, 0 meaning all of
// them. The subsets are balanced across this server's clients of the
// target (every endpoint has as many clients as whole numbers allow) and
// sticky (an added or removed endpoint moves about as many connections
// as one endpoint has; see route.Subsets). A client that does not name
// itself gets every endpoint.
func WithSubsetSize(size func(core.Target) int) Option {
	return func(c *config) error { c.subsetSize = size; return nil }
}

// WithServerOptions adds gRPC server options to the server Serve makes:
// TLS or mTLS credentials (grpc.Creds), keepalive, limits.
func WithServerOptions(opts ...grpc.ServerOption) Option {
	return func(c *config) error { c.serverOptions = append(c.serverOptions, opts...); return nil }
}

// typeNames are the short names of the four types, for metrics and logs.
var typeNames = map[string]string{
	resource.ListenerType: "listener", resource.RouteType: "route",
	resource.ClusterType: "cluster", resource.EndpointType: "endpoints",
}

// Server is an xDS management server (ADS, state of the world and delta)
// whose resources are disco targets, demand-driven: a client's
// subscription to a ClusterLoadAssignment subscribes the hub to its target
// (sharing the watch with every other consumer of the hub), and the last
// client leaving releases it (after the hub's linger). A server with no
// client watches nothing. Each resource type has its own go-control-plane
// LinearCache, so a change of a target costs O(its subscribers). Safe for
// concurrent use.
type Server struct {
	hub *core.Hub
	cfg config
	log *zap.Logger
	m   *metrics

	caches map[string]*cache.LinearCache
	xds    serverv3.Server
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup // subscriptions being closed

	mu      sync.Mutex
	closed  bool
	streams map[int64]*stream
	refs    map[string]map[string]int // type URL → name → subscribers
	feeds   map[core.Target]*feed

	updatedMu sync.Mutex           // after mu, when both are held
	updatedAt map[string]time.Time // EDS name → when its state last changed
}

// stream is what one client stream subscribes to.
type stream struct {
	names map[string]map[string]bool // type URL → names
	sent  map[string]time.Time       // EDS name → the change last handed to it (guarded by updatedMu)
	nack  map[string]bool            // type URLs already NACKed (logged once)
}

// feed is one target's subscription to the hub and the assignments it
// serves: one per variant (resource name: the target, or the target for a
// client's zone).
type feed struct {
	s      *Server
	target core.Target
	sub    *core.Subscription

	mu       sync.Mutex
	state    core.State
	has      bool
	variants map[string]resourceName                      // EDS name → who asks
	subsets  *route.Subsets                               // nil: no subsetting
	built    map[string]*endpointv3.ClusterLoadAssignment // a client's variant → its last assignment
}

// New returns an xDS server for the targets of hub. It starts nothing:
// Register it on a gRPC server of your own, or run Serve. It fails with
// core.ErrInvalid for no hub or an option out of range.
func New(hub *core.Hub, opts ...Option) (*Server, error) {
	if hub == nil {
		return nil, fmt.Errorf("xds: New needs a hub: %w", core.ErrInvalid)
	}
	c := config{Common: kit.Common{Log: zap.NewNop()}, maxPerStream: 1000, parse: defaultParser(hub)}
	if err := kit.Apply(&c, opts...); err != nil {
		return nil, fmt.Errorf("xds: %w: %w", err, core.ErrInvalid)
	}
	m, err := newMetrics(c.reg)
	if err != nil {
		return nil, err
	}
	s := &Server{hub: hub, cfg: c, log: c.Log, m: m, caches: map[string]*cache.LinearCache{},
		streams: map[int64]*stream{}, refs: map[string]map[string]int{}, feeds: map[core.Target]*feed{}, updatedAt: map[string]time.Time{}}
	// A version prefix of its own per server: a client that comes back from
	// another server (or this one restarted) gets every resource again.
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := hex.EncodeToString(b[:]) + "-"
	for typ := range typeNames {
		s.caches[typ] = cache.NewLinearCache(typ, cache.WithVersionPrefix(prefix))
		s.refs[typ] = map[string]int{}
	}
	muxed := map[string]cache.Cache{}
	for typ, c := range s.caches {
		muxed[typ] = c
	}
	mux := &cache.MuxCache{
		Classify:      func(r *cache.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cache.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        muxed,
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.xds = serverv3.NewServer(s.ctx, mux, s.callbacks())
	return s, nil
}

// defaultParser reads a target as the hub's source does, if it has a
// Target method (kubernetes.Source's), else by core.ParseTarget with
// core.ServiceSyntax.
func defaultParser(hub *core.Hub) func(string) (core.Target, error) {
	if ts, ok := hub.Source().(interface {
		Target(string) (core.Target, error)
	}); ok {
		return ts.Target
	}
	return func(text string) (core.Target, error) { return core.ParseTarget(text, core.ServiceSyntax) }
}

// Register registers the aggregated discovery service (state of the world
// and delta) on gs.
func (s *Server) Register(gs *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, s.xds)
}

// Serve serves xDS on lis with a gRPC server of its own (WithServerOptions
// set its credentials) until ctx ends or Close is called, then stops it:
// streams end, and clients keep their last resources until they reach a
// server again.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	gs := grpc.NewServer(s.cfg.serverOptions...)
	s.Register(gs)
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	select {
	case <-ctx.Done():
	case <-s.ctx.Done():
	case err := <-done:
		return err
	}
	gs.Stop()
	<-done
	return nil
}

// Close stops the server: every client's subscriptions are released,
// Serve returns, metrics are unregistered. Idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	feeds := s.feeds
	s.feeds = map[core.Target]*feed{}
	s.mu.Unlock()
	s.cancel()
	for _, f := range feeds {
		f.sub.Close()
	}
	s.bg.Wait()
	s.m.unregister()
	return nil
}

func (s *Server) callbacks() serverv3.CallbackFuncs {
	return serverv3.CallbackFuncs{
		StreamOpenFunc:      func(_ context.Context, id int64, _ string) error { return s.open(id) },
		StreamClosedFunc:    func(id int64, _ *corev3.Node) { s.closeStream(id) },
		DeltaStreamOpenFunc: func(_ context.Context, id int64, _ string) error { return s.open(id) },
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) {
			s.closeStream(id)
		},
		StreamRequestFunc: func(id int64, req *discoverygrpc.DiscoveryRequest) error {
			s.reply(id, req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			return s.subscribe(id, req.GetTypeUrl(), req.GetResourceNames(), true, nil)
		},
		StreamResponseFunc: func(_ context.Context, id int64, req *discoverygrpc.DiscoveryRequest, _ *discoverygrpc.DiscoveryResponse) {
			s.pushed(id, req.GetTypeUrl(), req.GetResourceNames()) // a state-of-the-world response holds what was asked
		},
		StreamDeltaRequestFunc: func(id int64, req *discoverygrpc.DeltaDiscoveryRequest) error {
			s.reply(id, req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			return s.subscribe(id, req.GetTypeUrl(), req.GetResourceNamesSubscribe(), false, req.GetResourceNamesUnsubscribe())
		},
		StreamDeltaResponseFunc: func(id int64, req *discoverygrpc.DeltaDiscoveryRequest, resp *discoverygrpc.DeltaDiscoveryResponse) {
			names := make([]string, len(resp.GetResources()))
			for i, r := range resp.GetResources() {
				names[i] = r.GetName()
			}
			s.pushed(id, req.GetTypeUrl(), names)
		},
	}
}

func (s *Server) open(id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("xds: server closed")
	}
	s.streams[id] = &stream{names: map[string]map[string]bool{}, sent: map[string]time.Time{}, nack: map[string]bool{}}
	s.m.streams.Inc()
	return nil
}

func (s *Server) closeStream(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[id]
	if st == nil {
		return
	}
	delete(s.streams, id)
	s.m.streams.Dec()
	for typ, names := range st.names {
		for name := range names {
			s.releaseLocked(typ, name)
		}
	}
}

// reply counts a client's ACK or NACK of a response.
func (s *Server) reply(id int64, typ, nonce, detail string, nack bool) {
	if nonce == "" {
		return // a first request, not a reply
	}
	short := typeNames[typ]
	if !nack {
		s.m.replies.WithLabelValues(short, "ack").Inc()
		return
	}
	s.m.replies.WithLabelValues(short, "nack").Inc()
	s.mu.Lock()
	first := false
	if st := s.streams[id]; st != nil && !st.nack[typ] {
		st.nack[typ], first = true, true
	}
	s.mu.Unlock()
	if first {
		s.log.Error("xds: a client rejected a response (NACK)", zap.Int64("stream", id), zap.String("type", short), zap.String("detail", detail))
	}
}

// subscribe applies a request's subscription: the full list (state of
// the world), or names added and removed (delta).
func (s *Server) subscribe(id int64, typ string, names []string, full bool, removed []string) error {
	if _, ok := typeNames[typ]; !ok {
		return nil // the mux answers another type with an error
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[id]
	if st == nil {
		return nil
	}
	cur := st.names[typ]
	if cur == nil {
		cur = map[string]bool{}
		st.names[typ] = cur
	}
	// Delta: only the names a request adds or removes (an ACK names none),
	// so a stream's request costs what it changes, not what it holds.
	var add, drop []string
	if full {
		next := make(map[string]bool, len(names))
		for _, n := range names {
			if n != "*" {
				next[n] = true
			}
		}
		for n := range next {
			if !cur[n] {
				add = append(add, n)
			}
		}
		for n := range cur {
			if !next[n] {
				drop = append(drop, n)
			}
		}
	} else {
		gone := map[string]bool{}
		for _, n := range removed {
			if cur[n] {
				gone[n] = true
			}
		}
		for _, n := range names {
			switch {
			case n == "*":
			case gone[n]:
				delete(gone, n) // removed and added again: kept
			case !cur[n]:
				add = append(add, n)
			}
		}
		for n := range gone {
			drop = append(drop, n)
		}
	}
	add = slices.Compact(slices.Sorted(slices.Values(add)))
	if total := len(cur) + len(add) - len(drop); total > s.cfg.maxPerStream {
		s.log.Warn("xds: a stream asks for too many resources; ending it", zap.Int64("stream", id),
			zap.String("type", typeNames[typ]), zap.Int("names", total), zap.Int("limit", s.cfg.maxPerStream))
		return status.Errorf(codes.ResourceExhausted, "xds: %d %s resources asked for on one stream, over the limit of %d (WithMaxResourcesPerStream)",
			total, typeNames[typ], s.cfg.maxPerStream)
	}
	for _, n := range add {
		cur[n] = true
		s.acquireLocked(typ, n)
	}
	for _, n := range drop {
		delete(cur, n)
		s.updatedMu.Lock()
		delete(st.sent, n)
		s.updatedMu.Unlock()
		s.releaseLocked(typ, n)
	}
	return nil
}

// acquireLocked counts one more subscriber of (typ, name), making the
// resource exist for the first.
func (s *Server) acquireLocked(typ, name string) {
	s.m.subscriptions.WithLabelValues(typeNames[typ]).Inc()
	if s.refs[typ][name]++; s.refs[typ][name] > 1 {
		return
	}
	var res types.Resource
	var err error
	switch typ {
	case resource.ListenerType:
		res, err = listener(name)
	case resource.RouteType:
		res = routeConfig(name)
	case resource.ClusterType:
		res = cluster(name)
	case resource.EndpointType:
		s.acquireEndpointsLocked(name)
		return
	}
	if err == nil {
		err = validate(res)
	}
	if err != nil {
		s.m.invalid.Inc()
		s.log.Error("xds: a resource failed to build; not sent", zap.String("name", name), zap.Error(err))
		return
	}
	_ = s.caches[typ].UpdateResource(name, res)
}

// releaseLocked counts one subscriber less; the last one makes the
// resource go (a ClusterLoadAssignment's target released).
func (s *Server) releaseLocked(typ, name string) {
	s.m.subscriptions.WithLabelValues(typeNames[typ]).Dec()
	if s.refs[typ][name]--; s.refs[typ][name] > 0 {
		return
	}
	delete(s.refs[typ], name)
	if typ == resource.EndpointType {
		s.releaseEndpointsLocked(name)
	}
	_ = s.caches[typ].DeleteResource(name)
}

// acquireEndpointsLocked makes name's assignment follow its target: the
// target's feed (a hub subscription, shared by every variant of the
// target) starts with its first variant. A name that is no target gets an
// empty assignment and a log line.
func (s *Server) acquireEndpointsLocked(name string) {
	rn, err := parseName(name, s.cfg.parse)
	if err != nil {
		s.log.Warn("xds: a client asks for a resource that names no target; it gets no endpoint", zap.String("name", name), zap.Error(err))
		s.setAssignment(name, core.State{Synced: true}, "", nil)
		return
	}
	f := s.feeds[rn.target]
	if f == nil {
		f = &feed{s: s, target: rn.target, variants: map[string]resourceName{}, built: map[string]*endpointv3.ClusterLoadAssignment{}}
		if s.cfg.subsetSize != nil {
			if k := s.cfg.subsetSize(rn.target); k > 0 {
				f.subsets = route.NewSubsets(k)
			}
		}
		sub, err := s.hub.Subscribe("xds:"+rn.target.String(), f, rn.target)
		if err != nil {
			s.log.Error("xds: cannot subscribe to a target; its clients get no endpoint", zap.String("name", name), zap.Error(err))
			s.setAssignment(name, core.State{Synced: true}, "", nil)
			return
		}
		f.sub = sub
		s.feeds[rn.target] = f
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.variants[name] = rn
	if !f.has {
		return
	}
	if f.subsets == nil || rn.client == "" {
		s.setAssignment(name, f.state, rn.zone, nil)
		return
	}
	f.resubsetLocked()
}

func (s *Server) releaseEndpointsLocked(name string) {
	s.updatedMu.Lock()
	delete(s.updatedAt, name)
	s.updatedMu.Unlock()
	rn, err := parseName(name, s.cfg.parse)
	if err != nil {
		return
	}
	f := s.feeds[rn.target]
	if f == nil {
		return
	}
	f.mu.Lock()
	delete(f.variants, name)
	delete(f.built, name)
	last := len(f.variants) == 0
	if !last && f.has && f.subsets != nil && rn.client != "" {
		f.resubsetLocked()
	}
	f.mu.Unlock()
	if last {
		delete(s.feeds, rn.target)
		s.bg.Go(func() { f.sub.Close() }) // the hub's linger keeps a returning target warm
	}
}

// Accept implements core.Sink for one target: every variant of it gets its
// assignment of the new state.
func (f *feed) Accept(_ context.Context, u core.Update) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state, f.has = u.State, true
	if f.subsets != nil {
		f.resubsetLocked()
	}
	for name, rn := range f.variants {
		if f.subsets == nil || rn.client == "" {
			f.s.setAssignment(name, u.State, rn.zone, nil)
		}
	}
	return nil
}

// resubsetLocked gives every client that names itself its subset of the
// routable endpoints, and sends the assignments that changed: a change
// costs the clients it touches, not every client of the target.
func (f *feed) resubsetLocked() {
	var clients, backends []string
	for _, rn := range f.variants {
		if rn.client != "" {
			clients = append(clients, rn.client)
		}
	}
	for _, e := range route.Routable(f.state.Endpoints) {
		backends = append(backends, e.ID)
	}
	f.subsets.Assign(clients, backends)
	for name, rn := range f.variants {
		if rn.client == "" {
			continue
		}
		keep := map[string]bool{}
		for _, id := range f.subsets.Of(rn.client) {
			keep[id] = true
		}
		cla := assignment(name, f.state, rn.zone, keep)
		if last := f.built[name]; last != nil && proto.Equal(last, cla) {
			continue
		}
		if f.s.storeAssignment(name, cla) {
			f.built[name] = cla
		}
	}
}

// setAssignment builds and stores name's assignment.
func (s *Server) setAssignment(name string, st core.State, zone string, keep map[string]bool) {
	s.storeAssignment(name, assignment(name, st, zone, keep))
}

// storeAssignment stores name's assignment; one that fails validation
// (never expected) is not sent, the last good one stays.
func (s *Server) storeAssignment(name string, cla *endpointv3.ClusterLoadAssignment) bool {
	if err := validate(cla); err != nil {
		s.m.invalid.Inc()
		s.log.Error("xds: an assignment failed validation; keeping the last one", zap.String("name", name), zap.Error(err))
		return false
	}
	s.markUpdated(name)
	_ = s.caches[resource.EndpointType].UpdateResource(name, cla)
	return true
}

func (s *Server) markUpdated(name string) {
	now := time.Now()
	s.updatedMu.Lock()
	s.updatedAt[name] = now
	s.updatedMu.Unlock()
}

// pushed counts a response, and for assignments the time from the changes
// it carries to now: it looks at the names the response holds, not at
// everything the stream subscribes to.
func (s *Server) pushed(id int64, typ string, names []string) {
	s.m.pushes.WithLabelValues(typeNames[typ]).Inc()
	if typ != resource.EndpointType {
		return
	}
	now := time.Now()
	s.mu.Lock()
	st := s.streams[id]
	s.mu.Unlock()
	if st == nil {
		return
	}
	s.updatedMu.Lock()
	defer s.updatedMu.Unlock()
	for _, n := range names {
		at, ok := s.updatedAt[n]
		if !ok || st.sent[n].Equal(at) {
			continue
		}
		st.sent[n] = at
		s.m.pushSeconds.Observe(now.Sub(at).Seconds())
	}
}

// validator is what every generated Envoy type offers.
type validator interface{ ValidateAll() error }

func validate(res types.Resource) error {
	if v, ok := res.(validator); ok {
		return v.ValidateAll()
	}
	return nil
}

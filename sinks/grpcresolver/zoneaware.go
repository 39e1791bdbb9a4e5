package grpcresolver

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/serviceconfig"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/route"
)

// ZoneAwareName is the name of the zone-aware load-balancing policy.
const ZoneAwareName = "disco_zone_aware"

// ZoneAwareServiceConfig returns the service config JSON that selects the
// zone-aware policy for a client in zone (empty: the zone given to
// RegisterZoneAware), preferring its zone while at least minReady endpoints
// there are ready:
//
//	{"loadBalancingConfig":[{"disco_zone_aware":{"zone":"zone-a","minReady":1}}]}
func ZoneAwareServiceConfig(zone string, minReady int) string {
	return ServiceConfig(map[string]any{ZoneAwareName: ZoneAwareConfig{Zone: zone, MinReady: minReady}})
}

// ZoneAwareConfig is the policy's configuration (JSON in the service config).
type ZoneAwareConfig struct {
	serviceconfig.LoadBalancingConfig `json:"-"`
	// Zone is the client's zone; empty means the zone given to
	// RegisterZoneAware (for example from the node's
	// topology.kubernetes.io/zone label).
	Zone string `json:"zone,omitempty"`
	// MinReady is how many ready endpoints the client's zone needs before
	// traffic stays in it; fewer, and every zone is used. Default 1.
	MinReady int `json:"minReady,omitempty"`
}

var registerOnce, leastRequestOnce sync.Once

// LeastRequestName is the name of disco's least-request policy: of two
// ready endpoints chosen at random, the one with fewer calls in flight (the
// zone-aware policy's picker, with no zone preference unless its config
// names a zone). grpc-go's own least_request_experimental was measured too
// and stalled every caller for seconds when a pod vanished (see the README,
// "When a pod dies").
const LeastRequestName = "disco_least_request"

// RegisterLeastRequest registers the least-request policy with grpc-go
// under LeastRequestName. Builder.DialOptions calls it; call it yourself
// (once, at start-up, before creating clients: a grpc-go rule) to name the
// policy in a service config of your own. Later calls do nothing.
func RegisterLeastRequest() {
	leastRequestOnce.Do(func() { balancer.Register(zoneBuilder{name: LeastRequestName}) })
}

// RegisterZoneAware registers the zone-aware policy with grpc-go under
// ZoneAwareName, with defaultZone as the client's zone when the service
// config names none. Call it once at start-up (later calls do nothing); it
// is not safe to call concurrently with creating clients (a grpc-go rule).
//
// The policy round-robins over the ready endpoints local to the client's
// zone by route.Locality, the rule the connection pool applies too: when
// every ready endpoint carries zone hints (hints.forZones), those hinted
// for the zone; when none does, those in the zone; when some do and some do
// not, every endpoint (kube-proxy's rule). While fewer than MinReady are
// local, it round-robins over every ready endpoint, in any zone.
// Each endpoint has one connection (a pick_first child per endpoint, as in
// grpc-go's round_robin).
func RegisterZoneAware(defaultZone string) {
	registerOnce.Do(func() { balancer.Register(zoneBuilder{name: ZoneAwareName, defaultZone: defaultZone}) })
}

type zoneBuilder struct {
	name        string // ZoneAwareName, or LeastRequestName
	defaultZone string
}

func (zb zoneBuilder) Name() string { return zb.name }

func (zb zoneBuilder) ParseConfig(js json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg := &ZoneAwareConfig{}
	if err := json.Unmarshal(js, cfg); err != nil {
		return nil, fmt.Errorf("grpcresolver: %s config %s: %w", ZoneAwareName, js, err)
	}
	if cfg.MinReady < 0 {
		return nil, fmt.Errorf("grpcresolver: %s config: minReady %d is negative", ZoneAwareName, cfg.MinReady)
	}
	return cfg, nil
}

func (zb zoneBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	zbal := &zoneBalancer{cc: cc, zone: zb.defaultZone, minReady: 1}
	zbal.Balancer = endpointsharding.NewBalancer(&interceptor{ClientConn: cc, zb: zbal}, opts,
		balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return zbal
}

type zoneBalancer struct {
	balancer.Balancer // endpointsharding over pick_first children
	cc                balancer.ClientConn

	mu        sync.Mutex
	zone      string
	minReady  int
	endpoints int                      // in the last resolver state
	reason    error                    // why the last resolver state is empty, if the resolver said
	inflight  map[string]*atomic.Int64 // calls in flight per endpoint (first address)
}

// ResolverError shows the resolver's reason (a deleted Service, a denied
// permission) to calls when there is no endpoint to try: endpointsharding
// alone would only say it has no children.
func (zb *zoneBalancer) ResolverError(err error) {
	zb.mu.Lock()
	none := zb.endpoints == 0
	zb.mu.Unlock()
	if none {
		zb.cc.UpdateState(balancer.State{ConnectivityState: connectivity.TransientFailure, Picker: base.NewErrPicker(err)})
		return
	}
	zb.Balancer.ResolverError(err)
}

func (zb *zoneBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	if cfg, ok := s.BalancerConfig.(*ZoneAwareConfig); ok {
		zb.mu.Lock()
		if cfg.Zone != "" {
			zb.zone = cfg.Zone
		}
		if cfg.MinReady > 0 {
			zb.minReady = cfg.MinReady
		}
		zb.mu.Unlock()
	}
	zb.mu.Lock()
	zb.endpoints = len(s.ResolverState.Endpoints)
	zb.reason = reasonOf(s.ResolverState)
	zb.mu.Unlock()
	return zb.Balancer.UpdateClientConnState(balancer.ClientConnState{
		ResolverState: pickfirst.EnableHealthListener(s.ResolverState),
	})
}

// interceptor sits between endpointsharding and the ClientConn: it turns
// endpointsharding's round robin over every ready child into a zone-aware
// one.
type interceptor struct {
	balancer.ClientConn
	zb *zoneBalancer
}

func (i *interceptor) UpdateState(s balancer.State) {
	i.zb.mu.Lock()
	loc := route.Locality{Zone: i.zb.zone, MinLocal: i.zb.minReady}
	i.zb.mu.Unlock()
	var ready []endpointsharding.ChildState
	for _, c := range endpointsharding.ChildStatesFromPicker(s.Picker) {
		if c.State.ConnectivityState == connectivity.Ready {
			ready = append(ready, c)
		}
	}
	if len(ready) == 0 {
		i.zb.mu.Lock()
		reason := i.zb.reason
		if i.zb.endpoints > 0 {
			reason = nil
		}
		i.zb.mu.Unlock()
		if reason != nil { // no endpoint, and the resolver said why: calls fail with that
			i.ClientConn.UpdateState(balancer.State{ConnectivityState: connectivity.TransientFailure, Picker: base.NewErrPicker(reason)})
			return
		}
		i.ClientConn.UpdateState(s) // connecting, idle or failing: endpointsharding's view
		return
	}
	// core's one locality rule, as the connection pool applies it.
	use := route.Select(loc, ready, func(c endpointsharding.ChildState) *core.Endpoint {
		if e, ok := EndpointOf(c.Endpoint.Attributes); ok {
			return e
		}
		return &core.Endpoint{} // not from this resolver: no zone, no hints
	})
	children := make([]zoneChild, len(use))
	i.zb.mu.Lock()
	live := make(map[string]*atomic.Int64, len(use))
	for j, c := range use {
		key := ""
		if len(c.Endpoint.Addresses) > 0 {
			key = c.Endpoint.Addresses[0].Addr
		}
		n := i.zb.inflight[key] // calls in flight survive picker updates
		if n == nil {
			n = &atomic.Int64{}
		}
		live[key] = n
		children[j] = zoneChild{picker: c.State.Picker, inflight: n}
	}
	i.zb.inflight = live
	i.zb.mu.Unlock()
	i.ClientConn.UpdateState(balancer.State{
		ConnectivityState: connectivity.Ready,
		Picker:            &zonePicker{children: children},
	})
}

type zoneChild struct {
	picker   balancer.Picker
	inflight *atomic.Int64
}

// zonePicker picks by least request: of two children chosen at random,
// the one with fewer calls in flight (a child whose calls stop completing
// stops getting new ones), as the connection pool does.
type zonePicker struct {
	children []zoneChild
}

func (p *zonePicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	n := len(p.children)
	if n == 0 {
		return balancer.PickResult{}, errors.New("grpcresolver: no ready endpoint")
	}
	i := rand.IntN(n)
	c := p.children[i]
	if n > 1 {
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		if other := p.children[j]; other.inflight.Load() < c.inflight.Load() {
			c = other
		}
	}
	res, err := c.picker.Pick(info)
	if err != nil {
		return res, err
	}
	c.inflight.Add(1)
	done := res.Done
	res.Done = func(di balancer.DoneInfo) {
		c.inflight.Add(-1)
		if done != nil {
			done(di)
		}
	}
	return res, nil
}

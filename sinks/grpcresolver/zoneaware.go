package grpcresolver

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/serviceconfig"
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
	b, _ := json.Marshal(map[string]any{"loadBalancingConfig": []any{
		map[string]any{ZoneAwareName: ZoneAwareConfig{Zone: zone, MinReady: minReady}},
	}})
	return string(b)
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

var registerOnce sync.Once

// RegisterZoneAware registers the zone-aware policy with grpc-go under
// ZoneAwareName, with defaultZone as the client's zone when the service
// config names none. Call it once at start-up (later calls do nothing); it
// is not safe to call concurrently with creating clients (a grpc-go rule).
//
// The policy round-robins over the ready endpoints that serve the client's
// zone: those whose zone hints (hints.forZones) name it, or, when no ready
// endpoint carries hints, those in the zone. While fewer than MinReady of
// them are ready, it round-robins over every ready endpoint, in any zone.
// Each endpoint has one connection (a pick_first child per endpoint, as in
// grpc-go's round_robin).
func RegisterZoneAware(defaultZone string) {
	registerOnce.Do(func() { balancer.Register(zoneBuilder{defaultZone: defaultZone}) })
}

type zoneBuilder struct{ defaultZone string }

func (zb zoneBuilder) Name() string { return ZoneAwareName }

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

	mu       sync.Mutex
	zone     string
	minReady int
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
	children := endpointsharding.ChildStatesFromPicker(s.Picker)
	var local, all []balancer.Picker
	i.zb.mu.Lock()
	zone, minReady := i.zb.zone, i.zb.minReady
	i.zb.mu.Unlock()
	hinted := false
	for _, c := range children {
		if c.State.ConnectivityState != connectivity.Ready {
			continue
		}
		if info, ok := InfoOf(c.Endpoint.Attributes); ok && len(info.ZoneHints) > 0 {
			hinted = true
		}
	}
	for _, c := range children {
		if c.State.ConnectivityState != connectivity.Ready {
			continue
		}
		all = append(all, c.State.Picker)
		info, _ := InfoOf(c.Endpoint.Attributes)
		if zone != "" && servesZone(info, zone, hinted) {
			local = append(local, c.State.Picker)
		}
	}
	if len(all) == 0 {
		i.ClientConn.UpdateState(s) // connecting, idle or failing: endpointsharding's view
		return
	}
	use := all
	if len(local) >= max(minReady, 1) {
		use = local
	}
	i.ClientConn.UpdateState(balancer.State{
		ConnectivityState: connectivity.Ready,
		Picker:            &zonePicker{pickers: use, next: uint32(rand.IntN(len(use)))},
	})
}

// servesZone: with hints in play, an endpoint serves the zones its hints
// name; without, the zone it is in.
func servesZone(info Info, zone string, hinted bool) bool {
	if hinted {
		return slices.Contains(info.ZoneHints, zone)
	}
	return info.Zone == zone
}

type zonePicker struct {
	pickers []balancer.Picker
	next    uint32
}

func (p *zonePicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	if len(p.pickers) == 0 {
		return balancer.PickResult{}, errors.New("grpcresolver: no ready endpoint")
	}
	n := atomic.AddUint32(&p.next, 1)
	return p.pickers[n%uint32(len(p.pickers))].Pick(info)
}

package xds

import (
	"cmp"
	"fmt"
	"net"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/route"
)

// The resources a proxyless gRPC client needs for xds:///<name>: a Listener
// named name (an API listener whose HTTP connection manager gets its routes
// by RDS over ADS, with the router filter), a RouteConfiguration named name
// (every domain to the cluster), a Cluster named name (EDS over ADS, round
// robin) and a ClusterLoadAssignment named name. One name, four types.

var ads = &corev3.ConfigSource{
	ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	ResourceApiVersion:    corev3.ApiVersion_V3,
}

func listener(name string) (*listenerv3.Listener, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	manager, err := anypb.New(&hcmv3.HttpConnectionManager{
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads, RouteConfigName: name}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router},
		}},
	})
	if err != nil {
		return nil, err
	}
	return &listenerv3.Listener{Name: name, ApiListener: &listenerv3.ApiListener{ApiListener: manager}}, nil
}

func routeConfig(name string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name: name, Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: ""}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: name}}},
			}},
		}},
	}
}

func cluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads, ServiceName: name},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
}

// assignment maps a target's state to the ClusterLoadAssignment name
// serves, for a client in zone (empty: no preference). Every assignment it
// builds is one a gRPC client accepts (no NACK):
//
//   - not synced yet, or a target that is gone (not found, forbidden): no
//     endpoint (an empty assignment, never a missing resource, which costs
//     a client a 15 s wait); a stale target keeps its last good endpoints;
//   - ready endpoints, HEALTHY; only when none is ready, the serving and
//     terminating ones (Kubernetes' fallback, as route.Routable); the rest
//     left out;
//   - endpoint priorities (DNS SRV) become EDS priorities, contiguous from
//     0, lowest first; with a zone, each is split into the client's zone
//     (by route.Locality, core's one zone rule) and the rest, after it;
//   - one locality per zone and priority, weighted by the sum of its
//     endpoints' weights (never 0: a client drops a locality of weight 0);
//   - an endpoint's weight is at least 1; an address already sent is left
//     out (a duplicate is NACKed); a dual-stack endpoint is one endpoint
//     with additional addresses;
//   - with a subset (keep not nil), only the endpoints it keeps.
func assignment(name string, st core.State, zone string, keep map[string]bool) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	if !st.Synced || (st.Stale.IsStale() && st.Stale.Kind != core.KindUnavailable && st.Endpoints.Len() == 0) {
		return cla
	}
	var ready, fallback []*core.Endpoint
	for e := range st.Endpoints.All() {
		switch {
		case e.Conditions.IsReady():
			ready = append(ready, e)
		case route.IsFallback(e):
			fallback = append(fallback, e)
		}
	}
	use := ready
	if len(use) == 0 {
		use = fallback
	}
	if keep != nil {
		use = slices.DeleteFunc(slices.Clone(use), func(e *core.Endpoint) bool { return !keep[e.ID] })
	}
	// Priority levels, lowest first; with a zone, local then the rest.
	slices.SortStableFunc(use, func(a, b *core.Endpoint) int { return cmp.Compare(a.Priority, b.Priority) })
	var groups [][]*core.Endpoint
	for i := 0; i < len(use); {
		j := i
		for j < len(use) && use[j].Priority == use[i].Priority {
			j++
		}
		level := use[i:j]
		i = j
		if zone == "" {
			groups = append(groups, level)
			continue
		}
		local := route.Locality{Zone: zone}.Select(level)
		if len(local) == len(level) { // all local, or no preference
			groups = append(groups, level)
			continue
		}
		rest := make([]*core.Endpoint, 0, len(level)-len(local))
		for _, e := range level {
			if !slices.Contains(local, e) {
				rest = append(rest, e)
			}
		}
		groups = append(groups, local, rest)
	}
	seen := map[string]bool{}
	for _, g := range groups {
		byZone := map[string]*endpointv3.LocalityLbEndpoints{}
		var zones []string
		prio := uint32(len(prioritiesUsed(cla.Endpoints)))
		for _, e := range g {
			lbe := lbEndpoint(e, seen)
			if lbe == nil {
				continue
			}
			loc := byZone[e.Zone]
			if loc == nil {
				loc = &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{Zone: e.Zone}, Priority: prio,
					LoadBalancingWeight: wrapperspb.UInt32(0)}
				byZone[e.Zone] = loc
				zones = append(zones, e.Zone)
			}
			loc.LbEndpoints = append(loc.LbEndpoints, lbe)
			loc.LoadBalancingWeight.Value += lbe.LoadBalancingWeight.GetValue()
		}
		slices.Sort(zones)
		for _, z := range zones {
			cla.Endpoints = append(cla.Endpoints, byZone[z])
		}
	}
	return cla
}

// prioritiesUsed returns the EDS priorities used so far (a group all of
// whose addresses were sent already uses none, so priorities stay
// contiguous).
func prioritiesUsed(locs []*endpointv3.LocalityLbEndpoints) map[uint32]bool {
	out := map[uint32]bool{}
	for _, l := range locs {
		out[l.Priority] = true
	}
	return out
}

// lbEndpoint is one endpoint of an assignment, HEALTHY, its first address
// the endpoint's and the others additional ones; addresses already in seen
// are left out (nil: none left).
func lbEndpoint(e *core.Endpoint, seen map[string]bool) *endpointv3.LbEndpoint {
	var addrs []*corev3.Address
	for _, a := range e.Addresses {
		key := net.JoinHostPort(a, fmt.Sprint(e.Port))
		if seen[key] {
			continue
		}
		seen[key] = true
		addrs = append(addrs, &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Protocol: corev3.SocketAddress_TCP, Address: a, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(e.Port)},
		}}})
	}
	if len(addrs) == 0 {
		return nil
	}
	ep := &endpointv3.Endpoint{Address: addrs[0], Hostname: cmp.Or(e.Name, e.Hostname)}
	for _, a := range addrs[1:] {
		ep.AdditionalAddresses = append(ep.AdditionalAddresses, &endpointv3.Endpoint_AdditionalAddress{Address: a})
	}
	return &endpointv3.LbEndpoint{
		HostIdentifier:      &endpointv3.LbEndpoint_Endpoint{Endpoint: ep},
		HealthStatus:        corev3.HealthStatus_HEALTHY,
		LoadBalancingWeight: wrapperspb.UInt32(max(e.Weight, 1)),
	}
}

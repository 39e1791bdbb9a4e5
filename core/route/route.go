// Package route holds the routing rules every disco sink applies to a
// target's endpoints, so that the gRPC resolver, the connection pool and
// the xDS server agree: which endpoints take traffic (Routable: ready ones,
// kube-proxy's terminating fallback, and priorities), and which of those a
// client in a zone prefers (Locality).
package route

import (
	"slices"

	"github.com/disco-lb/disco/core"
)

// Routable returns the endpoints of s that should get new requests, by
// kube-proxy's rule (KEP-1669) and then by priority (RFC 2782): every ready
// endpoint of the lowest Priority that has one; only if none is ready, the
// endpoints that are serving while terminating (draining pods that still
// answer), again of the lowest Priority that has one. Sources publish all
// endpoints with their conditions and priorities; sinks that route use
// this. The result is in ID order, in a new slice.
func Routable(s core.Set) []*core.Endpoint {
	var ready, fallback []*core.Endpoint
	readyPrio, fallbackPrio := ^uint32(0), ^uint32(0)
	for e := range s.All() {
		switch c := e.Conditions; {
		case c.IsReady():
			if e.Priority < readyPrio {
				readyPrio, ready = e.Priority, ready[:0]
			}
			if e.Priority == readyPrio {
				ready = append(ready, e)
			}
		case len(ready) == 0 && IsFallback(e):
			if e.Priority < fallbackPrio {
				fallbackPrio, fallback = e.Priority, fallback[:0]
			}
			if e.Priority == fallbackPrio {
				fallback = append(fallback, e)
			}
		}
	}
	if len(ready) > 0 {
		return ready
	}
	return fallback
}

// IsFallback reports whether e may get requests only while no endpoint of
// its target is ready: it is not ready, but serving while terminating.
func IsFallback(e *core.Endpoint) bool {
	c := e.Conditions
	return !c.IsReady() && c.IsServing() && c.IsTerminating()
}

// Locality is a client's zone preference, the one rule every disco sink
// applies (the gRPC resolver's zone-aware policy and the connection pool).
// It is kube-proxy's topology-aware routing (KEP-2433), extended to
// services without hints:
//
//   - Only ready endpoints take part. Fallback endpoints (serving while
//     terminating, used while none is ready) get no zone preference.
//   - If every ready endpoint carries zone hints, the local endpoints are
//     those hinted for Zone (hints.forZones).
//   - If no ready endpoint carries hints, the local endpoints are those
//     whose Zone is Zone.
//   - If some carry hints and some do not (hints being rolled out or
//     withdrawn), there is no preference: every endpoint is used, as
//     kube-proxy does.
//   - The local endpoints are used while there are at least MinLocal of
//     them (1 if unset); otherwise every ready endpoint is.
//
// The zero Locality (no Zone) prefers nothing.
type Locality struct {
	// Zone is the client's zone (for a pod, its node's
	// topology.kubernetes.io/zone label). Empty: no preference.
	Zone string
	// MinLocal is how many local endpoints there must be for traffic to
	// stay local; below that, every zone is used. Values below 1 mean 1.
	MinLocal int
}

// Rule says how Locality matches endpoints to the client's zone, given the
// set of ready endpoints.
type Rule int

const (
	// NoPreference: use every endpoint.
	NoPreference Rule = iota
	// ByHints: local means hinted for the zone.
	ByHints
	// ByZone: local means in the zone.
	ByZone
)

// Rule returns the matching rule for a set of ready endpoints of which
// hinted carry zone hints and unhinted do not.
func (l Locality) Rule(hinted, unhinted int) Rule {
	switch {
	case l.Zone == "":
		return NoPreference
	case hinted > 0 && unhinted == 0:
		return ByHints
	case hinted == 0 && unhinted > 0:
		return ByZone
	}
	return NoPreference
}

// Local reports whether the ready endpoint e is local under rule.
func (l Locality) Local(e *core.Endpoint, rule Rule) bool {
	switch rule {
	case ByHints:
		return slices.Contains(e.ZoneHints, l.Zone)
	case ByZone:
		return e.Zone == l.Zone
	}
	return false
}

// Enough reports whether local endpoints are enough to keep traffic local.
func (l Locality) Enough(local int) bool { return local > 0 && local >= max(l.MinLocal, 1) }

// Select returns the endpoints of eps a client in l.Zone should use: eps
// are the candidates (Routable's result, or the ready ones a balancer has
// connections to). When eps are fallback endpoints, or the rule finds too
// few local ones, it returns eps itself; otherwise a new slice of the local
// ones, in eps' order.
func (l Locality) Select(eps []*core.Endpoint) []*core.Endpoint {
	return Select(l, eps, func(e *core.Endpoint) *core.Endpoint { return e })
}

// Select is Locality.Select over any items that carry an endpoint (a
// balancer's children, a pool's connections): it returns items itself or a
// new slice of the local ones.
func Select[T any](l Locality, items []T, endpoint func(T) *core.Endpoint) []T {
	if l.Zone == "" {
		return items
	}
	hinted, unhinted := 0, 0
	for _, it := range items {
		e := endpoint(it)
		if !e.Conditions.IsReady() {
			continue
		}
		if len(e.ZoneHints) > 0 {
			hinted++
		} else {
			unhinted++
		}
	}
	rule := l.Rule(hinted, unhinted)
	if rule == NoPreference {
		return items
	}
	var local []T
	for _, it := range items {
		if e := endpoint(it); e.Conditions.IsReady() && l.Local(e, rule) {
			local = append(local, it)
		}
	}
	if !l.Enough(len(local)) {
		return items
	}
	return local
}

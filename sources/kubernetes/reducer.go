package kubernetes

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/disco-lb/disco/core"
)

// sliceData is what the source keeps of one EndpointSlice: its endpoints
// as core endpoints, sorted by ID, with the slice's first port number. Views
// publish these very endpoints (shared, never copied) when the port they
// resolve is that number and no other slice lists the endpoint, so the source
// keeps little beyond the state it publishes. Managed fields, owner
// references, labels and the rest of the object are dropped on arrival.
type sliceData struct {
	name    string
	family  discoveryv1.AddressType
	ports   []slicePort
	eps     []*core.Endpoint // sorted by ID, IDs unique
	trigger time.Time        // endpoints.kubernetes.io/last-change-trigger-time, if any
}

type slicePort struct {
	name string
	port int32 // 0: unset ("all ports")
}

// get finds the slice's endpoint with the given ID.
func (d *sliceData) get(id string) *core.Endpoint {
	i, ok := slices.BinarySearchFunc(d.eps, id, func(e *core.Endpoint, id string) int { return strings.Compare(e.ID, id) })
	if !ok {
		return nil
	}
	return d.eps[i]
}

// shared pointers for conditions: endpoints never modify them.
var (
	trueP  = core.Bool(true)
	falseP = core.Bool(false)
)

func boolP(b *bool) *bool {
	switch {
	case b == nil:
		return nil
	case *b:
		return trueP
	default:
		return falseP
	}
}

// interner shares repeated strings (zones, nodes, zone-hint lists) between
// endpoints, so a service's thousands of endpoints do not hold thousands of
// copies of the same three zone names.
type interner struct {
	strs  map[string]string
	hints map[string][]string
}

func newInterner() *interner {
	return &interner{strs: map[string]string{}, hints: map[string][]string{}}
}

func (in *interner) str(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := in.strs[s]; ok {
		return v
	}
	s = strings.Clone(s)
	in.strs[s] = s
	return s
}

func (in *interner) hintList(h []string) []string {
	if len(h) == 0 {
		return nil
	}
	k := strings.Join(h, "\x00")
	if v, ok := in.hints[k]; ok {
		return v
	}
	v := make([]string, len(h))
	for i, z := range h {
		v[i] = in.str(z)
	}
	in.hints[k] = v
	return v
}

// triggerAnnotation is set by the EndpointSlice controller to the time of
// the change (pod update, service update) that caused the slice's update.
const triggerAnnotation = "endpoints.kubernetes.io/last-change-trigger-time"

// compact keeps what the source uses of s. Endpoints without an address are
// dropped (the API server rejects them anyway); one endpoint listed twice in
// a slice (same targetRef) is kept once with the union of its addresses.
func compact(s *discoveryv1.EndpointSlice, in *interner) *sliceData {
	d := &sliceData{name: s.Name, family: s.AddressType}
	if v := s.Annotations[triggerAnnotation]; v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			d.trigger = t
		}
	}
	var basePort int32
	for _, p := range s.Ports {
		sp := slicePort{}
		if p.Name != nil {
			sp.name = in.str(*p.Name)
		}
		if p.Port != nil {
			sp.port = *p.Port
			if basePort == 0 {
				basePort = sp.port
			}
		}
		d.ports = append(d.ports, sp)
	}
	d.eps = make([]*core.Endpoint, 0, len(s.Endpoints))
	for _, e := range s.Endpoints {
		if len(e.Addresses) == 0 {
			continue
		}
		ce := &core.Endpoint{
			ID:        e.Addresses[0],
			Addresses: e.Addresses, // the decoded object is dropped: no copy needed
			Port:      uint16(basePort),
			Conditions: core.Conditions{
				Ready:       boolP(e.Conditions.Ready),
				Serving:     boolP(e.Conditions.Serving),
				Terminating: boolP(e.Conditions.Terminating),
			},
			Zone:     in.str(deref(e.Zone)),
			Node:     in.str(deref(e.NodeName)),
			Hostname: deref(e.Hostname),
		}
		if e.Hints != nil {
			zones := make([]string, 0, len(e.Hints.ForZones))
			for _, z := range e.Hints.ForZones {
				zones = append(zones, z.Name)
			}
			ce.ZoneHints = in.hintList(zones)
		}
		if ref := e.TargetRef; ref != nil {
			if ref.UID != "" {
				ce.ID = string(ref.UID)
			}
			ce.Name = ref.Name
		}
		d.eps = append(d.eps, ce)
	}
	slices.SortFunc(d.eps, func(a, b *core.Endpoint) int { return strings.Compare(a.ID, b.ID) })
	d.eps = slices.CompactFunc(d.eps, func(a, b *core.Endpoint) bool {
		if a.ID != b.ID {
			return false
		}
		for _, addr := range b.Addresses {
			if !slices.Contains(a.Addresses, addr) {
				a.Addresses = append(slices.Clip(a.Addresses), addr)
			}
		}
		return true
	})
	return d
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// resolvePort finds the port a slice offers for the target's port spec:
// by number (it must be listed, unless the slice lists no port), by name
// (only a listed name with a number counts), or, for an empty spec, the
// slice's only port. ok is false when the slice has no such port and so
// contributes nothing; ambiguous reports an empty spec with several ports.
func resolvePort(spec string, ports []slicePort) (port int32, ok, ambiguous bool) {
	if spec == "" {
		switch {
		case len(ports) == 1 && ports[0].port != 0:
			return ports[0].port, true, false
		case len(ports) > 1:
			return 0, false, true
		}
		return 0, false, false
	}
	if n, err := strconv.Atoi(spec); err == nil {
		if len(ports) == 0 {
			return int32(n), true, false
		}
		for _, p := range ports {
			if p.port == int32(n) {
				return p.port, true, false
			}
		}
		return 0, false, false
	}
	for _, p := range ports {
		if p.name == spec && p.port != 0 {
			return p.port, true, false
		}
	}
	return 0, false, false
}

// contribution is one slice's view of one endpoint.
type contribution struct {
	slice  string
	family discoveryv1.AddressType
	port   int32
	ep     *core.Endpoint
}

// view is the state of one target (one port spec) of a service, kept
// incrementally: a slice change touches only that slice's endpoints. Its
// index is a count per endpoint ID of the slices listing it; the slices
// themselves are searched only for endpoints listed by two or more.
type view struct {
	port      string
	count     map[string]uint16 // endpoint ID -> number of contributing slices
	ports     map[string]int32  // contributing slice -> the port it resolves to
	ambiguous map[string]bool   // slices skipped: empty port spec, several ports
	set       core.Set
}

func newView(port string) *view {
	return &view{port: port, count: map[string]uint16{}, ports: map[string]int32{}, ambiguous: map[string]bool{}}
}

// apply replaces the slice called name: old is what the view last saw of it
// (nil: new slice), cur what it is now (nil: deleted); all holds every
// current slice, cur included. It reports whether the set changed.
func (v *view) apply(all map[string]*sliceData, name string, old, cur *sliceData) (changed bool, err error) {
	var touched []string
	if _, ok := v.ports[name]; ok && old != nil {
		for _, e := range old.eps {
			if v.count[e.ID]--; v.count[e.ID] == 0 {
				delete(v.count, e.ID)
			}
			touched = append(touched, e.ID)
		}
	}
	delete(v.ports, name)
	delete(v.ambiguous, name)
	if cur != nil {
		port, ok, ambiguous := resolvePort(v.port, cur.ports)
		if ambiguous {
			v.ambiguous[name] = true
		}
		if ok {
			v.ports[name] = port
			for _, e := range cur.eps {
				v.count[e.ID]++
				touched = append(touched, e.ID)
			}
		}
	}
	slices.Sort(touched)
	touched = slices.Compact(touched)
	var put []*core.Endpoint
	var drop []string
	for _, id := range touched {
		var m *core.Endpoint
		switch n := v.count[id]; {
		case n == 0:
			if _, ok := v.set.Get(id); ok {
				drop = append(drop, id)
			}
			continue
		case n == 1 && cur != nil && v.ports[name] != 0:
			if e := cur.get(id); e != nil {
				m = withPort(e, v.ports[name])
				break
			}
			fallthrough
		default:
			m = merge(id, v.gather(all, id))
		}
		if old, ok := v.set.Get(id); ok && (old == m || old.Equal(m)) {
			continue // keep the published pointer: no change
		}
		put = append(put, m)
	}
	if len(put) == 0 && len(drop) == 0 {
		return false, nil
	}
	next, err := v.set.Without(drop...).With(put...)
	if err != nil {
		return false, fmt.Errorf("kubernetes: slice %s: %w", name, err)
	}
	v.set = next
	return true, nil
}

// gather finds every contribution to endpoint id among the contributing
// slices (a binary search in each).
func (v *view) gather(all map[string]*sliceData, id string) []contribution {
	var cs []contribution
	for name, port := range v.ports {
		d := all[name]
		if d == nil {
			continue
		}
		if e := d.get(id); e != nil {
			cs = append(cs, contribution{slice: name, family: d.family, port: port, ep: e})
		}
	}
	return cs
}

// withPort returns e itself when it already has the port, else a copy.
func withPort(e *core.Endpoint, port int32) *core.Endpoint {
	if int32(e.Port) == port {
		return e
	}
	c := *e
	c.Port = uint16(port)
	return &c
}

// ambiguity returns an error naming the slices skipped for an empty port
// spec, or nil.
func (v *view) ambiguity() error {
	if len(v.ambiguous) == 0 {
		return nil
	}
	names := make([]string, 0, len(v.ambiguous))
	for n := range v.ambiguous {
		names = append(names, n)
	}
	slices.Sort(names)
	return fmt.Errorf("kubernetes: no port in the target and slices %s have several ports: name one (svc:port): %w",
		strings.Join(names, ", "), core.ErrInvalid)
}

func familyRank(f discoveryv1.AddressType) int {
	switch f {
	case discoveryv1.AddressTypeIPv4:
		return 0
	case discoveryv1.AddressTypeIPv6:
		return 1
	default:
		return 2
	}
}

func condRank(c core.Conditions) int {
	switch {
	case c.IsReady():
		return 0
	case c.IsServing():
		return 1
	default:
		return 2
	}
}

// merge joins the contributions of one endpoint: a dual-stack pod's IPv4 and
// IPv6 slices, or one endpoint listed in two slices during an update. The
// best contribution (ready before serving before the rest, IPv4 before IPv6,
// then by slice name) gives conditions, port and location; addresses are the
// union in that order.
func merge(id string, cs []contribution) *core.Endpoint {
	slices.SortFunc(cs, func(a, b contribution) int {
		return cmp.Or(cmp.Compare(familyRank(a.family), familyRank(b.family)), strings.Compare(a.slice, b.slice))
	})
	best := cs[0]
	for _, c := range cs[1:] {
		if condRank(c.ep.Conditions) < condRank(best.ep.Conditions) {
			best = c
		}
	}
	if len(cs) == 1 {
		return withPort(best.ep, best.port)
	}
	e := *best.ep
	e.ID = id
	e.Port = uint16(best.port)
	e.Addresses = nil
	for _, c := range cs {
		for _, a := range c.ep.Addresses {
			if !slices.Contains(e.Addresses, a) {
				e.Addresses = append(e.Addresses, a)
			}
		}
		if e.Name == "" {
			e.Name = c.ep.Name
		}
		if e.Zone == "" {
			e.Zone = c.ep.Zone
		}
		if e.Node == "" {
			e.Node = c.ep.Node
		}
		if e.Hostname == "" {
			e.Hostname = c.ep.Hostname
		}
	}
	return &e
}

package kubernetes

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/disco-lb/disco/core"
)

// sliceData is what the source keeps of one EndpointSlice: its endpoints as
// core endpoints, one per address, sorted by address, with the slice's first
// port number. Views publish these very endpoints (shared, never copied)
// when the port they resolve is that number and the endpoint is not joined
// with another family's, so the source keeps little beyond the state it
// publishes. Managed fields, owner references, labels and the rest of the
// object are dropped on arrival.
type sliceData struct {
	name    string
	family  discoveryv1.AddressType
	ports   []slicePort
	eps     []*core.Endpoint // sorted by address (Addresses[0]), one per address
	dropped []string         // endpoints left out as unusable, each with why
	trigger time.Time        // endpoints.kubernetes.io/last-change-trigger-time, if any
}

type slicePort struct {
	name string
	port int32 // 0: unset (the API's "all ports")
}

// get finds the slice's endpoint with the given address.
func (d *sliceData) get(addr string) *core.Endpoint {
	i, ok := slices.BinarySearchFunc(d.eps, addr, cmpAddr)
	if !ok {
		return nil
	}
	return d.eps[i]
}

func cmpAddr(e *core.Endpoint, addr string) int { return strings.Compare(e.Addresses[0], addr) }

// shared pointers for conditions: endpoints never modify them.
var (
	trueP  = new(true)
	falseP = new(false)
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

// compact keeps what the source uses of s, normalised the way the API
// server accepts it and kube-proxy reads it:
//
//   - an endpoint is its first address (kube-proxy reads no other: the API
//     defines no meaning for the rest); IP addresses in canonical form;
//   - zone hints with an empty name are dropped, repeated ones kept once;
//   - an address listed twice in the slice is one endpoint, by rank (see
//     better);
//   - an endpoint that is really unusable (no address, an address that is
//     not an IP in an IPv4 or IPv6 slice) is left out and named in dropped.
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
	ipFamily := s.AddressType == discoveryv1.AddressTypeIPv4 || s.AddressType == discoveryv1.AddressTypeIPv6
	var buf [64]byte
	for i, e := range s.Endpoints {
		who := func() string {
			w := fmt.Sprintf("endpoint %d", i)
			if e.TargetRef != nil && e.TargetRef.Name != "" {
				w += fmt.Sprintf(" (%s %s)", strings.ToLower(e.TargetRef.Kind), e.TargetRef.Name)
			}
			return w
		}
		if len(e.Addresses) == 0 {
			d.dropped = append(d.dropped, who()+": no address")
			continue
		}
		addrs := e.Addresses[:1:1] // the decoded object is dropped: no copy needed
		if ipFamily {
			ip, err := netip.ParseAddr(addrs[0])
			if err != nil || (s.AddressType == discoveryv1.AddressTypeIPv4) != ip.Unmap().Is4() {
				d.dropped = append(d.dropped, fmt.Sprintf("%s: address %q is not an %s address", who(), addrs[0], s.AddressType))
				continue
			}
			if canon := ip.Unmap().AppendTo(buf[:0]); string(canon) != addrs[0] {
				addrs = []string{string(canon)} // kube-proxy keys by the canonical form
			}
		}
		addr := addrs[0]
		ce := &core.Endpoint{
			ID:        addr,
			Addresses: addrs,
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
			var zones []string
			for _, z := range e.Hints.ForZones {
				if z.Name != "" && !slices.Contains(zones, z.Name) {
					zones = append(zones, z.Name)
				}
			}
			ce.ZoneHints = in.hintList(zones)
		}
		if ref := e.TargetRef; ref != nil {
			if ref.UID != "" {
				ce.ID = string(ref.UID)
			}
			ce.Name = ref.Name
		}
		if err := ce.Validate(); err != nil {
			d.dropped = append(d.dropped, fmt.Sprintf("%s: %v", who(), err))
			continue
		}
		d.eps = append(d.eps, ce)
	}
	slices.SortStableFunc(d.eps, func(a, b *core.Endpoint) int {
		return cmp.Or(strings.Compare(a.Addresses[0], b.Addresses[0]), better(a, b))
	})
	d.eps = slices.CompactFunc(d.eps, func(a, b *core.Endpoint) bool { return a.Addresses[0] == b.Addresses[0] })
	return d
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// condRank orders conditions as kube-proxy's EndpointSliceCache lets them
// win when one address is listed more than once: a non-terminating entry
// wins over a terminating one (kube-proxy: `!exists || !terminating`).
// Within a class kube-proxy keeps whichever slice it read last, which is
// arbitrary; disco is deterministic: ready first, then serving.
func condRank(c core.Conditions) int {
	r := 0
	if c.IsTerminating() {
		r += 4
	}
	if !c.IsReady() {
		r += 2
	}
	if !c.IsServing() {
		r++
	}
	return r
}

// better orders two entries for one address: the one that wins first.
func better(a, b *core.Endpoint) int {
	return cmp.Compare(condRank(a.Conditions), condRank(b.Conditions))
}

// resolvePort finds the port a slice offers for the target's port spec, by
// kube-proxy's rules:
//
//   - by name: a listed port of that name with a number;
//   - by number: a listed port with that number;
//   - no spec: the slice's only port, if it has a number; several ports
//     are ambiguous.
//
// A slice that lists no port defines none (the API says so, and kube-proxy
// ignores it), and a listed port without a number (the API's "all ports")
// is ignored as kube-proxy ignores it: neither contributes anything, never
// a guessed port. ok is false when the slice has no such port.
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
		for _, p := range ports {
			if p.port == int32(n) && n != 0 {
				return int32(n), true, false
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

// contribution is one slice's entry for one address.
type contribution struct {
	slice *sliceData
	port  int32
	ep    *core.Endpoint
}

// addrState is what a view knows of one address: how many contributing
// slice entries list it, and the winning entry (its ID owns the address)
// with the slice it is in. A slice replaced or deleted touches all its
// addresses, so these pointers never outlive their slice.
type addrState struct {
	count uint16
	win   *core.Endpoint
	from  *sliceData
}

func (st addrState) owner() string {
	if st.win == nil {
		return ""
	}
	return st.win.ID
}

// view is the state of one target (one port spec) of a service, kept
// incrementally: a slice change touches only that slice's addresses.
//
// The rules (kube-proxy's, which keys endpoints by address):
//
//   - An address belongs to one endpoint. When several entries list it (an
//     endpoint moving between slices, or an IP reused by a new pod while
//     the old one terminates), the best by condRank wins (non-terminating
//     before terminating), and the others are not published at all: a
//     client reaching that IP reaches the winner.
//   - The addresses an endpoint ID (a pod UID) wins are joined into one
//     endpoint: a dual-stack pod's IPv4 and IPv6 slices give one endpoint
//     with both addresses, IPv4 first.
type view struct {
	port      string
	ports     map[string]int32 // contributing slice -> the port it resolves to
	ambiguous map[string]bool  // slices skipped: empty port spec, several ports
	addrs     map[string]addrState
	set       core.Set
}

func newView(port string) *view {
	return &view{port: port, ports: map[string]int32{}, ambiguous: map[string]bool{}, addrs: map[string]addrState{}}
}

// apply replaces the slice called name: old is what the view last saw of it
// (nil: new slice), cur what it is now (nil: deleted); all holds every
// current slice, cur included. It reports whether the set changed.
func (v *view) apply(all map[string]*sliceData, name string, old, cur *sliceData) (changed bool, err error) {
	var touched []string
	if _, ok := v.ports[name]; ok && old != nil {
		for _, e := range old.eps {
			st := v.addrs[e.Addresses[0]]
			st.count--
			v.addrs[e.Addresses[0]] = st
			touched = append(touched, e.Addresses[0])
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
				st := v.addrs[e.Addresses[0]]
				st.count++
				v.addrs[e.Addresses[0]] = st
				touched = append(touched, e.Addresses[0])
			}
		}
	}
	slices.Sort(touched)
	touched = slices.Compact(touched)

	// Owners of the touched addresses: the endpoints to rebuild.
	var ids []string
	var gained map[string][]string // endpoint ID -> addresses it newly owns
	for _, a := range touched {
		st := v.addrs[a]
		prev := st.owner()
		if prev != "" {
			ids = append(ids, prev)
		}
		if st.count == 0 {
			delete(v.addrs, a)
			continue
		}
		var win contribution
		if st.count == 1 && cur != nil && v.ports[name] != 0 {
			if e := cur.get(a); e != nil {
				win = contribution{slice: cur, port: v.ports[name], ep: e}
			}
		}
		if win.ep == nil {
			win = best(v.gather(all, a))
		}
		st.win, st.from = win.ep, win.slice
		v.addrs[a] = st
		if owner := st.owner(); owner != prev {
			ids = append(ids, owner)
			if gained == nil {
				gained = map[string][]string{}
			}
			gained[owner] = append(gained[owner], a)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)

	// Rebuild them: the entries of the addresses each still owns.
	var put []*core.Endpoint
	var drop []string
	for _, id := range ids {
		old, had := v.set.Get(id)
		var m *core.Endpoint
		if len(gained[id]) == 0 && had && len(old.Addresses) == 1 {
			// The common case: one address, kept or lost.
			if st, ok := v.addrs[old.Addresses[0]]; ok && st.owner() == id {
				m = withPort(st.win, v.ports[st.from.name])
			}
		} else {
			var cand []string
			if had {
				cand = append(cand, old.Addresses...)
			}
			cand = append(cand, gained[id]...)
			var cs []contribution
			for _, a := range cand {
				st, ok := v.addrs[a]
				if !ok || st.owner() != id || slices.ContainsFunc(cs, func(c contribution) bool { return c.ep.Addresses[0] == a }) {
					continue
				}
				cs = append(cs, contribution{slice: st.from, port: v.ports[st.from.name], ep: st.win})
			}
			if len(cs) > 0 {
				m = join(id, cs)
			}
		}
		switch {
		case m == nil && had:
			drop = append(drop, id)
		case m == nil:
		case had && (old == m || old.Equal(m)):
			// keep the published pointer: no change
		default:
			put = append(put, m)
		}
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

// gather finds every contribution to address a among the contributing
// slices (a binary search in each).
func (v *view) gather(all map[string]*sliceData, a string) []contribution {
	var cs []contribution
	for name, port := range v.ports {
		d := all[name]
		if d == nil {
			continue
		}
		if e := d.get(a); e != nil {
			cs = append(cs, contribution{slice: d, port: port, ep: e})
		}
	}
	return cs
}

// best returns the winning contribution for one address: by condRank,
// then by slice name, so that the choice does not depend on map order.
func best(cs []contribution) contribution {
	return slices.MinFunc(cs, func(a, b contribution) int {
		return cmp.Or(better(a.ep, b.ep), strings.Compare(a.slice.name, b.slice.name))
	})
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

// join makes one endpoint of the addresses one ID won: a dual-stack pod's
// IPv4 and IPv6 entries. Addresses go IPv4 first; the best entry (by
// condRank, IPv4 first among equals) gives conditions, port and location.
// A single entry is published as it is (shared).
func join(id string, cs []contribution) *core.Endpoint {
	slices.SortFunc(cs, func(a, b contribution) int {
		return cmp.Or(cmp.Compare(familyRank(a.slice.family), familyRank(b.slice.family)), strings.Compare(a.ep.Addresses[0], b.ep.Addresses[0]))
	})
	top := cs[0]
	for _, c := range cs[1:] {
		if better(c.ep, top.ep) < 0 {
			top = c
		}
	}
	if len(cs) == 1 {
		return withPort(top.ep, top.port)
	}
	e := *top.ep
	e.ID = id
	e.Port = uint16(top.port)
	e.Addresses = make([]string, 0, len(cs))
	for _, c := range cs {
		e.Addresses = append(e.Addresses, c.ep.Addresses[0])
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

// dropped returns what the contributing slices left out, for an error.
func (v *view) dropped(all map[string]*sliceData) []string {
	var out []string
	for _, name := range slices.Sorted(maps.Keys(v.ports)) {
		if d := all[name]; d != nil {
			for _, why := range d.dropped {
				out = append(out, "slice "+name+" "+why)
			}
		}
	}
	return out
}

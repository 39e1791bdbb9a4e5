package grpcresolver

import (
	"slices"
	"strings"
	"sync"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/resolver"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/route"
)

// targetState is what every resolver of one target sends grpc-go, built
// once and shared: the ClientConns of a target read one list of
// resolver.Endpoints (read-only; each resolver sends a shallow copy of the
// State with its own service config). It follows the target's core states
// by their deltas: an endpoint's resolver.Endpoint is built once, when it
// appears or changes, and a change costs O(changed) plus the one copy of
// the list that grpc-go's API needs (a new slice per UpdateState; 32 B per
// endpoint, moved, not rebuilt).
type targetState struct {
	mu    sync.Mutex
	epoch string // the core update the state was built from
	seq   uint64
	set   core.Set
	tally routeTally          // ready and fallback endpoints of set, per priority
	state *resolver.State     // Endpoints sorted by ID; nil before the first build
	list  []resolver.Endpoint // state.Endpoints
}

// endpointOf builds grpc-go's view of one endpoint: every address, with
// the core endpoint as the attribute (see EndpointOf and InfoOf).
func endpointOf(e *core.Endpoint) resolver.Endpoint {
	attrs := attributes.New(endpointKey{}, e)
	re := resolver.Endpoint{Attributes: attrs, Addresses: make([]resolver.Address, len(e.Addresses))}
	for i, hp := range e.HostPorts() {
		re.Addresses[i] = resolver.Address{Addr: hp, Attributes: attrs}
	}
	return re
}

func idOf(re resolver.Endpoint) string {
	e, _ := EndpointOf(re.Attributes)
	return e.ID
}

// build returns the shared state for a synced core state (st of update
// epoch/seq, the delta d from the state of base) and whether it differs
// from the one built before. It never modifies a list it handed out.
func (ts *targetState) build(epoch string, seq uint64, st core.State) *resolver.State {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.state != nil && ts.epoch == epoch && ts.seq == seq {
		return ts.state
	}
	d := core.Diff(ts.set, st.Endpoints)
	prevMode, had := ts.tally.mode(), ts.state != nil
	for _, e := range d.Removed {
		ts.tally.count(e, -1)
	}
	for _, c := range d.Changed {
		ts.tally.count(c.Old, -1)
		ts.tally.count(c.New, 1)
	}
	for _, e := range d.Added {
		ts.tally.count(e, 1)
	}
	ts.epoch, ts.seq, ts.set = epoch, seq, st.Endpoints
	mode := ts.tally.mode()
	if !had || mode != prevMode {
		// First build, or the routing rule moved (the first ready endpoint
		// came, or the last went: kube-proxy's terminating fallback; or the
		// lowest priority with routable endpoints changed): O(n).
		routable := route.Routable(st.Endpoints)
		list := make([]resolver.Endpoint, len(routable))
		for i, e := range routable {
			list[i] = endpointOf(e)
		}
		ts.setList(list)
		return ts.state
	}
	// The rule held: apply the delta to the routable list.
	routable := mode.routable
	var drop []string        // IDs leaving the list
	var put []*core.Endpoint // new versions entering or replacing
	for _, e := range d.Removed {
		drop = append(drop, e.ID)
	}
	for _, c := range d.Changed {
		was, is := routable(c.Old), routable(c.New)
		switch {
		case is:
			put = append(put, c.New)
		case was:
			drop = append(drop, c.New.ID)
		}
	}
	for _, e := range d.Added {
		if routable(e) {
			put = append(put, e)
		}
	}
	if len(drop) == 0 && len(put) == 0 {
		return ts.state // nothing grpc-go sees changed
	}
	slices.Sort(drop)
	slices.SortFunc(put, func(a, b *core.Endpoint) int { return strings.Compare(a.ID, b.ID) })
	old := ts.list
	list := make([]resolver.Endpoint, 0, len(old)+len(put))
	i := 0
	for len(drop) > 0 || len(put) > 0 {
		// The next ID to act on.
		var next string
		switch {
		case len(drop) == 0:
			next = put[0].ID
		case len(put) == 0:
			next = drop[0]
		default:
			next = min(drop[0], put[0].ID)
		}
		j, _ := slices.BinarySearchFunc(old[i:], next, func(re resolver.Endpoint, id string) int { return strings.Compare(idOf(re), id) })
		list = append(list, old[i:i+j]...) // unchanged run, moved
		i += j
		if i < len(old) && idOf(old[i]) == next {
			i++ // replaced or dropped
		}
		if len(drop) > 0 && drop[0] == next {
			drop = drop[1:]
		}
		if len(put) > 0 && put[0].ID == next {
			list = append(list, endpointOf(put[0]))
			put = put[1:]
		}
	}
	list = append(list, old[i:]...)
	ts.setList(list)
	return ts.state
}

// routeTally counts a set's ready and fallback endpoints per priority, so
// that a delta tells whether core.Routable's choice moved.
type routeTally struct {
	ready, fallback map[uint32]int
}

func (t *routeTally) count(e *core.Endpoint, n int) {
	var m *map[uint32]int
	switch {
	case e.Conditions.IsReady():
		m = &t.ready
	case route.IsFallback(e):
		m = &t.fallback
	default:
		return
	}
	if *m == nil {
		*m = map[uint32]int{}
	}
	if (*m)[e.Priority] += n; (*m)[e.Priority] == 0 {
		delete(*m, e.Priority)
	}
}

// routeMode is core.Routable's choice: ready endpoints or the fallback,
// of one priority.
type routeMode struct {
	ready    bool
	priority uint32
}

func (t *routeTally) mode() routeMode {
	lowest := func(m map[uint32]int) uint32 {
		p := ^uint32(0)
		for k := range m {
			p = min(p, k)
		}
		return p
	}
	if len(t.ready) > 0 {
		return routeMode{ready: true, priority: lowest(t.ready)}
	}
	return routeMode{priority: lowest(t.fallback)}
}

// routable reports whether e is in core.Routable's result under the mode.
func (m routeMode) routable(e *core.Endpoint) bool {
	if e.Priority != m.priority {
		return false
	}
	if m.ready {
		return e.Conditions.IsReady()
	}
	return route.IsFallback(e)
}

func (ts *targetState) setList(list []resolver.Endpoint) {
	ts.list = list
	ts.state = &resolver.State{Endpoints: list}
}

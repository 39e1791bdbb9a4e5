package grpcresolver

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/grpc/resolver"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/route"
)

func renderList(list []resolver.Endpoint) []string {
	var out []string
	for _, re := range list {
		e, _ := EndpointOf(re.Attributes)
		out = append(out, fmt.Sprintf("%s@%s", e.ID, re.Addresses[0].Addr))
	}
	return out
}

// FuzzTargetState: the shared state, kept by deltas, always equals the
// routable set computed from scratch (same endpoints, in ID order, the
// current versions), through random changes: endpoints coming and going,
// readiness flips (also of the last ready one: the terminating fallback),
// priorities (the lowest routable one moving up and down), address changes; and no state handed out is ever modified afterwards.
func FuzzTargetState(f *testing.F) {
	f.Add(uint64(1), uint8(50))
	f.Add(uint64(7), uint8(200))
	f.Fuzz(func(t *testing.T, seed uint64, steps uint8) {
		r := rand.New(rand.NewPCG(seed, 3))
		ts := &targetState{}
		set := core.Set{}
		type handout struct {
			st   *resolver.State
			seen []string
		}
		var handed []handout
		for seq := range uint64(steps) + 1 {
			id := fmt.Sprintf("e%02d", r.IntN(12))
			if r.IntN(4) == 0 {
				set = set.Without(id)
			} else {
				e := &core.Endpoint{ID: id, Addresses: []string{fmt.Sprintf("10.0.0.%d", r.IntN(3)+1)}, Port: 80, Priority: uint32(r.IntN(3))}
				switch r.IntN(4) {
				case 0:
					e.Conditions = core.Conditions{Ready: new(false)}
				case 1:
					e.Conditions = core.Conditions{Ready: new(false), Serving: new(true), Terminating: new(true)}
				}
				var err error
				if set, err = set.With(e); err != nil {
					t.Fatal(err)
				}
			}
			st := ts.build("epoch", seq+1, core.State{Endpoints: set, Synced: true})
			var got []*core.Endpoint
			for _, re := range st.Endpoints {
				e, ok := EndpointOf(re.Attributes)
				if !ok || len(re.Addresses) != len(e.Addresses) || re.Addresses[0].Addr != e.HostPort() {
					t.Fatalf("step %d: a resolver.Endpoint does not match its core endpoint", seq)
				}
				got = append(got, e)
			}
			want := route.Routable(set)
			if !slices.EqualFunc(got, want, func(a, b *core.Endpoint) bool { return a == b || a.Equal(b) }) {
				t.Fatalf("step %d: shared state %v, routable %v", seq, renderList(st.Endpoints), want)
			}
			for _, h := range handed {
				if !slices.Equal(renderList(h.st.Endpoints), h.seen) {
					t.Fatalf("step %d: a state handed out before was modified", seq)
				}
			}
			handed = append(handed, handout{st: st, seen: renderList(st.Endpoints)})
		}
	})
}

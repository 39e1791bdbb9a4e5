package route_test

import (
	"strings"
	"testing"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/route"
)

func zoned(id, zone string, hints ...string) *core.Endpoint {
	return &core.Endpoint{ID: id, Addresses: []string{id}, Zone: zone, ZoneHints: hints}
}

// TestLocality: kube-proxy's topology rule, extended to un-hinted services.
func TestLocality(t *testing.T) {
	notReady := zoned("x", "a")
	notReady.Conditions.Ready = new(false)
	tests := []struct {
		name string
		loc  route.Locality
		in   []*core.Endpoint
		want string
	}{
		{"no zone: everything", route.Locality{}, []*core.Endpoint{zoned("1", "a"), zoned("2", "b")}, "1,2"},
		{"by zone without hints", route.Locality{Zone: "a"}, []*core.Endpoint{zoned("1", "a"), zoned("2", "b"), zoned("3", "a")}, "1,3"},
		{"by hints when all carry them", route.Locality{Zone: "a"}, []*core.Endpoint{zoned("1", "b", "a"), zoned("2", "a", "b"), zoned("3", "c", "c")}, "1"},
		{"mixed hints: no preference (kube-proxy)", route.Locality{Zone: "a"}, []*core.Endpoint{zoned("1", "a", "a"), zoned("2", "a"), zoned("3", "b")}, "1,2,3"},
		{"not ready ones do not count for hints", route.Locality{Zone: "a"}, []*core.Endpoint{zoned("1", "b", "a"), notReady}, "1"},
		{"too few local: every zone", route.Locality{Zone: "a", MinLocal: 2}, []*core.Endpoint{zoned("1", "a"), zoned("2", "b")}, "1,2"},
		{"enough local", route.Locality{Zone: "a", MinLocal: 2}, []*core.Endpoint{zoned("1", "a"), zoned("2", "b"), zoned("3", "a")}, "1,3"},
		{"none local: every zone", route.Locality{Zone: "c"}, []*core.Endpoint{zoned("1", "a"), zoned("2", "b")}, "1,2"},
		{"no hint for the zone: every zone", route.Locality{Zone: "c"}, []*core.Endpoint{zoned("1", "a", "a"), zoned("2", "b", "b")}, "1,2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := strings.Join(idsOf(tt.loc.Select(tt.in)), ","); got != tt.want {
				t.Fatalf("Select = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRoutablePriority: RFC 2782's rule on top of kube-proxy's: the lowest
// priority with ready endpoints takes the traffic; the next one only when
// none of a lower one is left; the terminating fallback likewise.
func TestRoutablePriority(t *testing.T) {
	p := func(id string, prio uint32, ready, serving, terminating bool) *core.Endpoint {
		return &core.Endpoint{ID: id, Addresses: []string{id}, Priority: prio,
			Conditions: core.Conditions{Ready: new(ready), Serving: new(serving), Terminating: new(terminating)}}
	}
	up := func(id string, prio uint32) *core.Endpoint { return p(id, prio, true, true, false) }
	draining := func(id string, prio uint32) *core.Endpoint { return p(id, prio, false, true, true) }
	for _, tc := range []struct {
		name string
		in   []*core.Endpoint
		want string
	}{
		{"one priority", []*core.Endpoint{up("a", 0), up("b", 0)}, "a,b"},
		{"primary over backup", []*core.Endpoint{up("a", 10), up("b", 20), up("c", 10)}, "a,c"},
		{"backup when the primary has none ready", []*core.Endpoint{draining("a", 10), up("b", 20), up("c", 30)}, "b"},
		{"a ready backup beats a draining primary", []*core.Endpoint{draining("a", 0), up("b", 5)}, "b"},
		{"fallback of the lowest priority", []*core.Endpoint{draining("a", 7), draining("b", 3), p("c", 1, false, false, true)}, "b"},
		{"nothing routable", []*core.Endpoint{p("a", 0, false, false, false)}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set, err := core.NewSet(tc.in...)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(idsOf(route.Routable(set)), ","); got != tc.want {
				t.Fatalf("Routable = %q, want %q", got, tc.want)
			}
		})
	}
}

func idsOf(eps []*core.Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.ID)
	}
	return out
}

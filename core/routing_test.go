package core_test

import (
	"strings"
	"testing"

	"github.com/disco-lb/disco/core"
)

func zoned(id, zone string, hints ...string) *core.Endpoint {
	return &core.Endpoint{ID: id, Addresses: []string{id}, Zone: zone, ZoneHints: hints}
}

// TestLocality: kube-proxy's topology rule, extended to un-hinted services.
func TestLocality(t *testing.T) {
	notReady := zoned("x", "a")
	notReady.Conditions.Ready = core.Bool(false)
	tests := []struct {
		name string
		loc  core.Locality
		in   []*core.Endpoint
		want string
	}{
		{"no zone: everything", core.Locality{}, []*core.Endpoint{zoned("1", "a"), zoned("2", "b")}, "1,2"},
		{"by zone without hints", core.Locality{Zone: "a"}, []*core.Endpoint{zoned("1", "a"), zoned("2", "b"), zoned("3", "a")}, "1,3"},
		{"by hints when all carry them", core.Locality{Zone: "a"}, []*core.Endpoint{zoned("1", "b", "a"), zoned("2", "a", "b"), zoned("3", "c", "c")}, "1"},
		{"mixed hints: no preference (kube-proxy)", core.Locality{Zone: "a"}, []*core.Endpoint{zoned("1", "a", "a"), zoned("2", "a"), zoned("3", "b")}, "1,2,3"},
		{"not ready ones do not count for hints", core.Locality{Zone: "a"}, []*core.Endpoint{zoned("1", "b", "a"), notReady}, "1"},
		{"too few local: every zone", core.Locality{Zone: "a", MinLocal: 2}, []*core.Endpoint{zoned("1", "a"), zoned("2", "b")}, "1,2"},
		{"enough local", core.Locality{Zone: "a", MinLocal: 2}, []*core.Endpoint{zoned("1", "a"), zoned("2", "b"), zoned("3", "a")}, "1,3"},
		{"none local: every zone", core.Locality{Zone: "c"}, []*core.Endpoint{zoned("1", "a"), zoned("2", "b")}, "1,2"},
		{"no hint for the zone: every zone", core.Locality{Zone: "c"}, []*core.Endpoint{zoned("1", "a", "a"), zoned("2", "b", "b")}, "1,2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := strings.Join(idsOf(tt.loc.Select(tt.in)), ","); got != tt.want {
				t.Fatalf("Select = %q, want %q", got, tt.want)
			}
		})
	}
}

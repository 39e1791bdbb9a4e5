package core_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/route"
)

func ep(id string, addrs ...string) *core.Endpoint {
	return &core.Endpoint{ID: id, Addresses: addrs, Port: 8080}
}

func ids(s core.Set) []string {
	var out []string
	for e := range s.All() {
		out = append(out, e.ID)
	}
	return out
}

func TestNewSet(t *testing.T) {
	tests := []struct {
		name    string
		in      []*core.Endpoint
		want    []string // IDs in order
		wantErr string   // substring; empty: no error
	}{
		{name: "empty", in: nil, want: nil},
		{name: "sorted by ID", in: []*core.Endpoint{ep("c", "10.0.0.3"), ep("a", "10.0.0.1"), ep("b", "10.0.0.2")}, want: []string{"a", "b", "c"}},
		{name: "ID defaults to host:port", in: []*core.Endpoint{{Addresses: []string{"fd00::1"}, Port: 80}}, want: []string{"[fd00::1]:80"}},
		{name: "ID defaults to address without port", in: []*core.Endpoint{{Addresses: []string{"10.0.0.1"}}}, want: []string{"10.0.0.1"}},
		{name: "duplicate ID", in: []*core.Endpoint{ep("a", "10.0.0.1"), ep("a", "10.0.0.2")}, wantErr: `duplicate endpoint ID "a"`},
		{name: "duplicate default ID", in: []*core.Endpoint{{Addresses: []string{"10.0.0.1"}, Port: 1}, {Addresses: []string{"10.0.0.1"}, Port: 1}}, wantErr: `duplicate endpoint ID "10.0.0.1:1"`},
		{name: "no address", in: []*core.Endpoint{ep("a")}, wantErr: `endpoint "a": no address`},
		{name: "empty address", in: []*core.Endpoint{ep("a", "10.0.0.1", "")}, wantErr: `endpoint "a": address 1 is empty`},
		{name: "duplicate address", in: []*core.Endpoint{ep("a", "10.0.0.1", "10.0.0.1")}, wantErr: `duplicate address "10.0.0.1"`},
		{name: "nil endpoint", in: []*core.Endpoint{nil}, wantErr: "nil endpoint"},
		{name: "empty zone hint", in: []*core.Endpoint{{ID: "a", Addresses: []string{"x"}, ZoneHints: []string{""}}}, wantErr: "empty zone hint"},
		{name: "empty label key", in: []*core.Endpoint{{ID: "a", Addresses: []string{"x"}, Labels: map[string]string{"": "v"}}}, wantErr: "empty label key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := core.NewSet(tt.in...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, core.ErrInvalid) {
					t.Fatalf("NewSet error = %v, want one containing %q wrapping ErrInvalid", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewSet: %v", err)
			}
			if got := ids(s); strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Fatalf("IDs = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewSetDoesNotModifyInput(t *testing.T) {
	in := []*core.Endpoint{ep("b", "2"), {Addresses: []string{"1"}}}
	if _, err := core.NewSet(in...); err != nil {
		t.Fatal(err)
	}
	if in[0].ID != "b" || in[1].ID != "" {
		t.Fatalf("input modified: %q %q", in[0].ID, in[1].ID)
	}
}

func TestSetWithWithout(t *testing.T) {
	base, err := core.NewSet(ep("b", "2"), ep("d", "4"), ep("f", "6"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		put    []*core.Endpoint
		remove []string
		want   string
	}{
		{name: "insert front", put: []*core.Endpoint{ep("a", "1")}, want: "a,b,d,f"},
		{name: "insert middle", put: []*core.Endpoint{ep("c", "3")}, want: "b,c,d,f"},
		{name: "insert end", put: []*core.Endpoint{ep("g", "7")}, want: "b,d,f,g"},
		{name: "replace", put: []*core.Endpoint{ep("d", "40")}, want: "b,d,f"},
		{name: "many unsorted", put: []*core.Endpoint{ep("g", "7"), ep("a", "1"), ep("d", "40"), ep("e", "5")}, want: "a,b,d,e,f,g"},
		{name: "remove", remove: []string{"d"}, want: "b,f"},
		{name: "remove unknown and repeated", remove: []string{"x", "b", "b"}, want: "d,f"},
		{name: "remove all", remove: []string{"f", "b", "d"}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := base.With(tt.put...)
			if err != nil {
				t.Fatal(err)
			}
			s = s.Without(tt.remove...)
			if got := strings.Join(ids(s), ","); got != tt.want {
				t.Fatalf("IDs = %q, want %q", got, tt.want)
			}
			if got := strings.Join(ids(base), ","); got != "b,d,f" {
				t.Fatalf("base modified: %q", got)
			}
		})
	}
	if e, ok := base.Get("d"); !ok || e.Addresses[0] != "4" {
		t.Fatalf("Get(d) = %v %v", e, ok)
	}
	if _, ok := base.Get("x"); ok {
		t.Fatal("Get(x) found")
	}
	if _, err := base.With(ep("a", "1"), ep("a", "2")); err == nil {
		t.Fatal("With accepted duplicate IDs")
	}
	if _, err := base.With(ep("a")); !errors.Is(err, core.ErrInvalid) {
		t.Fatalf("With accepted an endpoint without address: %v", err)
	}
}

func TestEndpointEqual(t *testing.T) {
	full := func() *core.Endpoint {
		return &core.Endpoint{ID: "a", Name: "pod-a", Addresses: []string{"10.0.0.1", "fd00::1"}, Port: 80,
			Hostname: "h", Node: "n", Zone: "z", ZoneHints: []string{"z"}, Weight: 3,
			Labels: map[string]string{"k": "v"}, Conditions: core.Conditions{Ready: new(true)}}
	}
	mods := map[string]func(*core.Endpoint){
		"name": func(e *core.Endpoint) { e.Name = "x" }, "address": func(e *core.Endpoint) { e.Addresses = []string{"10.0.0.1"} },
		"port": func(e *core.Endpoint) { e.Port = 81 }, "hostname": func(e *core.Endpoint) { e.Hostname = "x" },
		"node": func(e *core.Endpoint) { e.Node = "x" }, "zone": func(e *core.Endpoint) { e.Zone = "x" },
		"hints": func(e *core.Endpoint) { e.ZoneHints = nil }, "weight": func(e *core.Endpoint) { e.Weight = 1 },
		"labels":      func(e *core.Endpoint) { e.Labels = map[string]string{"k": "w"} },
		"ready":       func(e *core.Endpoint) { e.Conditions.Ready = new(false) },
		"serving":     func(e *core.Endpoint) { e.Conditions.Serving = new(false) },
		"terminating": func(e *core.Endpoint) { e.Conditions.Terminating = new(true) },
	}
	if !full().Equal(full()) {
		t.Fatal("equal endpoints differ")
	}
	for name, mod := range mods {
		e := full()
		mod(e)
		if full().Equal(e) {
			t.Errorf("change of %s not seen", name)
		}
	}
	// Unset conditions equal their defaults.
	a, b := full(), full()
	a.Conditions = core.Conditions{}
	b.Conditions = core.Conditions{Ready: new(true), Serving: new(true), Terminating: new(false)}
	if !a.Equal(b) {
		t.Fatal("unset conditions differ from their defaults")
	}
}

func TestConditionsDefaults(t *testing.T) {
	var c core.Conditions
	if !c.IsReady() || !c.IsServing() || c.IsTerminating() {
		t.Fatalf("zero Conditions = ready %v serving %v terminating %v, want true true false", c.IsReady(), c.IsServing(), c.IsTerminating())
	}
}

func TestHostPorts(t *testing.T) {
	e := &core.Endpoint{Addresses: []string{"10.0.0.1", "fd00::1"}, Port: 50051}
	if got := strings.Join(e.HostPorts(), " "); got != "10.0.0.1:50051 [fd00::1]:50051" {
		t.Fatalf("HostPorts = %q", got)
	}
	if got := e.HostPort(); got != "10.0.0.1:50051" {
		t.Fatalf("HostPort = %q", got)
	}
}

func TestSetJSON(t *testing.T) {
	s, err := core.NewSet(ep("b", "10.0.0.2"), &core.Endpoint{ID: "a", Addresses: []string{"10.0.0.1", "fd00::1"},
		Conditions: core.Conditions{Terminating: new(true)}, Labels: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	st := core.State{Endpoints: s, Synced: true}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back core.State
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.Endpoints.Equal(s) || !back.Synced || back.Stale.IsStale() {
		t.Fatalf("round trip lost data: %s", b)
	}
	var empty core.Set
	if b, _ := json.Marshal(empty); string(b) != "[]" {
		t.Fatalf("empty set = %s, want []", b)
	}
	for in, want := range map[string]string{
		`[{"id":"a","addresses":["x"]},{"id":"a","addresses":["y"]}]`: `duplicate endpoint ID "a"`,
		`[{"id":"a","addresses":[]}]`:                                 `endpoint "a": no address`,
		`{"id":"a"}`:                                                  "decode endpoint set",
	} {
		var s core.Set
		if err := json.Unmarshal([]byte(in), &s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Unmarshal(%s) error = %v, want %q", in, err, want)
		}
	}
}

func TestRoutable(t *testing.T) {
	f, tr := new(false), new(true)
	ready := &core.Endpoint{ID: "ready", Addresses: []string{"1"}}
	notReady := &core.Endpoint{ID: "starting", Addresses: []string{"2"}, Conditions: core.Conditions{Ready: f, Serving: f}}
	draining := &core.Endpoint{ID: "draining", Addresses: []string{"3"}, Conditions: core.Conditions{Ready: f, Serving: tr, Terminating: tr}}
	gone := &core.Endpoint{ID: "gone", Addresses: []string{"4"}, Conditions: core.Conditions{Ready: f, Serving: f, Terminating: tr}}
	tests := []struct {
		name string
		in   []*core.Endpoint
		want string
	}{
		{name: "ready wins over draining", in: []*core.Endpoint{ready, notReady, draining, gone}, want: "ready"},
		{name: "draining only when none is ready", in: []*core.Endpoint{notReady, draining, gone}, want: "draining"},
		{name: "nothing usable", in: []*core.Endpoint{notReady, gone}, want: ""},
		{name: "empty", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, e := range route.Routable(coretest.Set(t, tt.in...)) {
				got = append(got, e.ID)
			}
			if strings.Join(got, ",") != tt.want {
				t.Fatalf("Routable = %v, want %q", got, tt.want)
			}
		})
	}
}

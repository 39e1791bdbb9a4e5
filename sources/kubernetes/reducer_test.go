package kubernetes

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/route"
)

// ep describes one endpoint of a test slice.
type ep struct {
	uid, pod string
	addrs    []string
	ready    *bool
	serving  *bool
	term     *bool
	zone     string
	node     string
	host     string
	hints    []string
}

func port(name string, n int32) discoveryv1.EndpointPort {
	p := discoveryv1.EndpointPort{Name: &name}
	if n != 0 {
		p.Port = &n
	}
	return p
}

func mkSlice(name string, family discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...ep) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "demo"},
		AddressType: family,
		Ports:       ports,
	}
	for _, e := range eps {
		de := discoveryv1.Endpoint{
			Addresses:  e.addrs,
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.term},
		}
		if e.uid != "" || e.pod != "" {
			de.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: "demo", Name: e.pod, UID: types.UID(e.uid)}
		}
		if e.zone != "" {
			de.Zone = &e.zone
		}
		if e.node != "" {
			de.NodeName = &e.node
		}
		if e.host != "" {
			de.Hostname = &e.host
		}
		if e.hints != nil {
			de.Hints = &discoveryv1.EndpointHints{}
			for _, z := range e.hints {
				de.Hints.ForZones = append(de.Hints.ForZones, discoveryv1.ForZone{Name: z})
			}
		}
		s.Endpoints = append(s.Endpoints, de)
	}
	return s
}

var (
	v4    = discoveryv1.AddressTypeIPv4
	v6    = discoveryv1.AddressTypeIPv6
	grpc  = []discoveryv1.EndpointPort{port("grpc", 50051)}
	yes   = new(true)
	no    = new(false)
	intrn = newInterner()
)

// op is one step of a scenario: a slice upsert (s) or a delete (del).
type op struct {
	s   *discoveryv1.EndpointSlice
	del string
}

// svc is a service's slices with one view, driven the way the source does.
type svc struct {
	all map[string]*sliceData
	v   *view
}

func newSvc(port string) *svc { return &svc{all: map[string]*sliceData{}, v: newView(port)} }

// put replaces (or adds, or with d nil deletes) a slice.
func (s *svc) put(name string, d *sliceData) (bool, error) {
	old := s.all[name]
	if d == nil {
		delete(s.all, name)
	} else {
		s.all[name] = d
	}
	return s.v.apply(s.all, name, old, d)
}

func run(t *testing.T, portSpec string, ops ...op) *svc {
	t.Helper()
	s := newSvc(portSpec)
	for _, o := range ops {
		var err error
		if o.s != nil {
			_, err = s.put(o.s.Name, compact(o.s, intrn))
		} else {
			_, err = s.put(o.del, nil)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// render describes a set compactly: "id=addr,addr:port[flags]" sorted by ID.
func render(s core.Set) string {
	var out []string
	for e := range s.All() {
		f := ""
		if !e.Conditions.IsReady() {
			f += "!r"
		}
		if !e.Conditions.IsServing() {
			f += "!s"
		}
		if e.Conditions.IsTerminating() {
			f += "T"
		}
		out = append(out, fmt.Sprintf("%s=%s:%d%s", e.ID, strings.Join(e.Addresses, ","), e.Port, f))
	}
	return strings.Join(out, " ")
}

func TestReducer(t *testing.T) {
	a := ep{uid: "uid-a", pod: "greeter-a", addrs: []string{"10.244.1.1"}}
	b := ep{uid: "uid-b", pod: "greeter-b", addrs: []string{"10.244.1.2"}}
	c := ep{uid: "uid-c", pod: "greeter-c", addrs: []string{"10.244.1.3"}}
	noRef := ep{addrs: []string{"10.244.9.9"}}
	tests := []struct {
		name string
		port string
		ops  []op
		want string
	}{
		{name: "all slices of a service merge", port: "grpc",
			ops:  []op{{s: mkSlice("s1", v4, grpc, a, b)}, {s: mkSlice("s2", v4, grpc, c)}},
			want: "uid-a=10.244.1.1:50051 uid-b=10.244.1.2:50051 uid-c=10.244.1.3:50051"},
		{name: "an update removes what left the slice", port: "grpc",
			ops:  []op{{s: mkSlice("s1", v4, grpc, a, b)}, {s: mkSlice("s1", v4, grpc, b)}},
			want: "uid-b=10.244.1.2:50051"},
		{name: "an endpoint in two slices stays until both drop it", port: "grpc",
			ops:  []op{{s: mkSlice("s1", v4, grpc, a, b)}, {s: mkSlice("s2", v4, grpc, b)}, {del: "s1"}},
			want: "uid-b=10.244.1.2:50051"},
		{name: "an address without targetRef in two slices is counted too", port: "grpc",
			ops:  []op{{s: mkSlice("s1", v4, grpc, noRef)}, {s: mkSlice("s2", v4, grpc, noRef)}, {s: mkSlice("s1", v4, grpc)}},
			want: "10.244.9.9=10.244.9.9:50051"},
		{name: "deleting every slice empties the set", port: "grpc",
			ops:  []op{{s: mkSlice("s1", v4, grpc, a)}, {del: "s1"}},
			want: ""},
		{name: "deleting an unknown slice changes nothing", port: "grpc",
			ops:  []op{{s: mkSlice("s1", v4, grpc, a)}, {del: "nope"}},
			want: "uid-a=10.244.1.1:50051"},
		{name: "named port resolves per slice", port: "grpc",
			ops: []op{
				{s: mkSlice("old", v4, []discoveryv1.EndpointPort{port("grpc", 50051)}, a)},
				{s: mkSlice("new", v4, []discoveryv1.EndpointPort{port("http", 8080), port("grpc", 9090)}, b)},
			},
			want: "uid-a=10.244.1.1:50051 uid-b=10.244.1.2:9090"},
		{name: "a slice without the named port contributes nothing", port: "grpc",
			ops:  []op{{s: mkSlice("s1", v4, grpc, a)}, {s: mkSlice("s2", v4, []discoveryv1.EndpointPort{port("http", 8080)}, b)}},
			want: "uid-a=10.244.1.1:50051"},
		{name: "a named port without a number contributes nothing", port: "grpc",
			ops:  []op{{s: mkSlice("s1", v4, []discoveryv1.EndpointPort{port("grpc", 0)}, a)}},
			want: ""},
		{name: "port by number must be listed", port: "8080",
			ops:  []op{{s: mkSlice("s1", v4, []discoveryv1.EndpointPort{port("http", 8080)}, a)}, {s: mkSlice("s2", v4, grpc, b)}},
			want: "uid-a=10.244.1.1:8080"},
		{name: "a slice that lists no port contributes nothing (kube-proxy)", port: "7000",
			ops:  []op{{s: mkSlice("s1", v4, nil, a)}},
			want: ""},
		{name: "a port without a number contributes nothing (kube-proxy)", port: "7000",
			ops:  []op{{s: mkSlice("s1", v4, []discoveryv1.EndpointPort{port("grpc", 0)}, a)}},
			want: ""},
		{name: "no port in the target: the slice's only port", port: "",
			ops:  []op{{s: mkSlice("s1", v4, grpc, a)}},
			want: "uid-a=10.244.1.1:50051"},
		{name: "unset ready and serving are true, unset terminating false", port: "grpc",
			ops:  []op{{s: mkSlice("s1", v4, grpc, a)}},
			want: "uid-a=10.244.1.1:50051"},
		{name: "explicit conditions are carried", port: "grpc",
			ops: []op{{s: mkSlice("s1", v4, grpc,
				ep{uid: "u1", addrs: []string{"10.244.1.1"}, ready: no, serving: yes, term: yes},
				ep{uid: "u2", addrs: []string{"10.244.1.2"}, ready: no, serving: no})}},
			want: "u1=10.244.1.1:50051!rT u2=10.244.1.2:50051!r!s"},
		{name: "IPv4 and IPv6 slices of one pod join by targetRef", port: "grpc",
			ops: []op{
				{s: mkSlice("v6", v6, grpc, ep{uid: "uid-a", pod: "greeter-a", addrs: []string{"fd00::1"}})},
				{s: mkSlice("v4", v4, grpc, a)},
			},
			want: "uid-a=10.244.1.1,fd00::1:50051"},
		{name: "dual stack: the IPv6 slice going leaves the IPv4 address", port: "grpc",
			ops: []op{
				{s: mkSlice("v4", v4, grpc, a)},
				{s: mkSlice("v6", v6, grpc, ep{uid: "uid-a", addrs: []string{"fd00::1"}})},
				{del: "v6"},
			},
			want: "uid-a=10.244.1.1:50051"},
		{name: "a copy that is ready wins over one that is not", port: "grpc",
			ops: []op{
				{s: mkSlice("s1", v4, grpc, ep{uid: "uid-a", addrs: []string{"10.244.1.1"}, ready: no})},
				{s: mkSlice("s2", v4, grpc, a)},
			},
			want: "uid-a=10.244.1.1:50051"},
		{name: "one address in two slices: not terminating wins over terminating (kube-proxy)", port: "grpc",
			ops: []op{
				{s: mkSlice("s1", v4, grpc, ep{uid: "uid-a", addrs: []string{"10.244.1.1"}, ready: no})},
				{s: mkSlice("s2", v4, grpc, ep{uid: "uid-a", addrs: []string{"10.244.1.1"}, ready: no, serving: yes, term: yes})},
			},
			want: "uid-a=10.244.1.1:50051!r"},
		{name: "IP reuse: the new pod owns the address, the old one is gone (kube-proxy)", port: "grpc",
			ops: []op{
				{s: mkSlice("s1", v4, grpc, ep{uid: "old", pod: "greeter-old", addrs: []string{"10.244.1.1"}, ready: no, serving: yes, term: yes})},
				{s: mkSlice("s2", v4, grpc, ep{uid: "new", pod: "greeter-new", addrs: []string{"10.244.1.1"}, ready: no})},
			},
			want: "new=10.244.1.1:50051!r"},
		{name: "IP reuse: the old pod's address returns to it when the new one goes", port: "grpc",
			ops: []op{
				{s: mkSlice("s1", v4, grpc, ep{uid: "old", addrs: []string{"10.244.1.1"}, ready: no, serving: yes, term: yes})},
				{s: mkSlice("s2", v4, grpc, ep{uid: "new", addrs: []string{"10.244.1.1"}, ready: no})},
				{del: "s2"},
			},
			want: "old=10.244.1.1:50051!rT"},
		{name: "only the first address of an endpoint counts (kube-proxy)", port: "grpc",
			ops:  []op{{s: mkSlice("s1", v4, grpc, ep{uid: "uid-a", addrs: []string{"10.244.1.1", "10.244.1.1", "10.244.1.9"}})}},
			want: "uid-a=10.244.1.1:50051"},
		{name: "an address listed twice in one slice: not terminating wins", port: "grpc",
			ops: []op{{s: mkSlice("s1", v4, grpc,
				ep{uid: "old", addrs: []string{"10.244.1.1"}, ready: no, serving: yes, term: yes},
				ep{uid: "new", addrs: []string{"10.244.1.1"}, ready: no})}},
			want: "new=10.244.1.1:50051!r"},
		{name: "empty zone hints are dropped, the endpoint kept", port: "grpc",
			ops:  []op{{s: mkSlice("s1", v4, grpc, ep{uid: "uid-a", addrs: []string{"10.244.1.1"}, hints: []string{"", "zone-a", "zone-a"}})}},
			want: "uid-a=10.244.1.1:50051"},
		{name: "FQDN slices are handled: the name is the address", port: "grpc",
			ops:  []op{{s: mkSlice("f", discoveryv1.AddressTypeFQDN, grpc, ep{addrs: []string{"greeter.example.com"}})}},
			want: "greeter.example.com=greeter.example.com:50051"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := run(t, tt.port, tt.ops...).v
			if got := render(v.set); got != tt.want {
				t.Fatalf("set = %q\nwant  %q", got, tt.want)
			}
		})
	}
}

func TestReducerAmbiguousPort(t *testing.T) {
	s := run(t, "", op{s: mkSlice("s1", v4, []discoveryv1.EndpointPort{port("http", 80), port("grpc", 50051)},
		ep{uid: "a", addrs: []string{"10.244.1.1"}})})
	v := s.v
	if v.set.Len() != 0 {
		t.Fatalf("set = %s", render(v.set))
	}
	err := v.ambiguity()
	if err == nil || !strings.Contains(err.Error(), "slices s1 have several ports") {
		t.Fatalf("ambiguity = %v", err)
	}
	if _, err := s.put("s1", nil); err != nil || v.ambiguity() != nil {
		t.Fatalf("ambiguity kept after the slice went: %v", v.ambiguity())
	}
}

func TestReducerCarriesLocationAndHints(t *testing.T) {
	v := run(t, "grpc", op{s: mkSlice("s1", v4, grpc, ep{uid: "u", pod: "greeter-0", addrs: []string{"10.244.1.1"},
		zone: "zone-a", node: "node-1", host: "greeter-0", hints: []string{"zone-a", "zone-b"}})}).v
	e, ok := v.set.Get("u")
	if !ok {
		t.Fatal("missing")
	}
	if e.Name != "greeter-0" || e.Zone != "zone-a" || e.Node != "node-1" || e.Hostname != "greeter-0" ||
		!slices.Equal(e.ZoneHints, []string{"zone-a", "zone-b"}) || e.Port != 50051 {
		t.Fatalf("endpoint = %+v", e)
	}
}

// The kube-proxy rule on the source's output: terminating endpoints that
// still serve are used only while no endpoint is ready.
func TestReducerTerminatingFallback(t *testing.T) {
	ready := ep{uid: "new", addrs: []string{"10.244.1.2"}}
	draining := ep{uid: "old", addrs: []string{"10.244.1.1"}, ready: no, serving: yes, term: yes}
	routable := func(s *svc) string {
		var ids []string
		for _, e := range route.Routable(s.v.set) {
			ids = append(ids, e.ID)
		}
		return strings.Join(ids, ",")
	}
	v := run(t, "grpc", op{s: mkSlice("s1", v4, grpc, draining, ready)})
	if got := routable(v); got != "new" {
		t.Fatalf("routable with a ready endpoint = %q", got)
	}
	if _, err := v.put("s1", compact(mkSlice("s1", v4, grpc, draining), intrn)); err != nil {
		t.Fatal(err)
	}
	if got := routable(v); got != "old" {
		t.Fatalf("routable with none ready = %q, want the draining one", got)
	}
}

// An unchanged endpoint keeps its pointer across updates of its slice, so
// core's diff stays proportional to the change.
func TestReducerKeepsPointersOfUnchangedEndpoints(t *testing.T) {
	a := ep{uid: "a", addrs: []string{"10.244.1.1"}}
	b := ep{uid: "b", addrs: []string{"10.244.1.2"}}
	s := run(t, "grpc", op{s: mkSlice("s1", v4, grpc, a, b)})
	before, _ := s.v.set.Get("a")
	b.ready = no
	changed, err := s.put("s1", compact(mkSlice("s1", v4, grpc, a, b), intrn))
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	// The new slice object brings new base endpoints; equal data keeps the
	// published pointer.
	if after, _ := s.v.set.Get("a"); after != before {
		t.Fatal("unchanged endpoint got a new pointer")
	}
	if changed, _ := s.put("s1", compact(mkSlice("s1", v4, grpc, a, b), intrn)); changed {
		t.Fatal("an identical slice reported a change")
	}
}

// FuzzReducer applies random slice upserts and deletes (endpoints moving
// between slices, dual stack, duplicates, ports appearing and going) and
// checks that the incrementally kept set always equals one computed from
// scratch from the current slices, and that every address a slice offering
// the port lists is published exactly once.
func FuzzReducer(f *testing.F) {
	f.Add(uint64(1), uint8(30))
	f.Add(uint64(42), uint8(200))
	f.Fuzz(func(t *testing.T, seed uint64, steps uint8) {
		r := rand.New(rand.NewPCG(seed, 99))
		in := newInterner()
		spec := []string{"grpc", "50051", ""}[r.IntN(3)]
		live := newSvc(spec)
		cur := live.all
		for range steps {
			name := fmt.Sprintf("s%d", r.IntN(4))
			if r.IntN(5) == 0 {
				if _, err := live.put(name, nil); err != nil {
					t.Fatal(err)
				}
			} else {
				family := []discoveryv1.AddressType{v4, v6}[r.IntN(2)]
				var ports []discoveryv1.EndpointPort
				switch r.IntN(4) {
				case 0:
					ports = grpc
				case 1:
					ports = []discoveryv1.EndpointPort{port("http", 8080), port("grpc", 50051)}
				case 2:
					ports = []discoveryv1.EndpointPort{port("http", 8080)}
				}
				var eps []ep
				for range r.IntN(6) {
					pod := r.IntN(8)
					addr := fmt.Sprintf("10.244.0.%d", pod)
					if family == v6 {
						addr = fmt.Sprintf("fd00::%d", pod)
					}
					e := ep{addrs: []string{addr}, ready: []*bool{nil, yes, no}[r.IntN(3)]}
					if r.IntN(4) > 0 {
						e.uid, e.pod = fmt.Sprintf("uid-%d", pod), fmt.Sprintf("pod-%d", pod)
					}
					eps = append(eps, e)
				}
				d := compact(mkSlice(name, family, ports, eps...), in)
				if _, err := live.put(name, d); err != nil {
					t.Fatal(err)
				}
			}
			v := live.v
			fresh := newSvc(spec)
			for _, n := range slices.Sorted(maps.Keys(cur)) {
				if _, err := fresh.put(n, cur[n]); err != nil {
					t.Fatal(err)
				}
			}
			if !fresh.v.set.Equal(v.set) {
				t.Fatalf("incremental %q\nfrom scratch %q", render(v.set), render(fresh.v.set))
			}
			// Every address a contributing slice lists is published exactly
			// once (by the endpoint that owns it).
			want := map[string]bool{}
			for _, d := range cur {
				if _, ok, _ := resolvePort(spec, d.ports); ok {
					for _, e := range d.eps {
						want[e.Addresses[0]] = true
					}
				}
			}
			got := map[string]int{}
			for e := range v.set.All() {
				for _, a := range e.Addresses {
					got[a]++
				}
			}
			if len(got) != len(want) {
				t.Fatalf("%d addresses published, want %d", len(got), len(want))
			}
			for a, n := range got {
				if !want[a] || n != 1 {
					t.Fatalf("address %s published %d times (listed: %v)", a, n, want[a])
				}
			}
		}
	})
}

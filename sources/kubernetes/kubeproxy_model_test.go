package kubernetes

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/route"
)

// kubeProxyRoutable is a reference model of what kube-proxy routes to for
// one service port, written from its rules (pkg/proxy/endpointslicecache.go
// and topology.go of k8s.io/kubernetes 1.36), independently of the source:
//
//   - only slices labelled kubernetes.io/service-name=<service> count;
//   - a slice contributes through each listed port that has a name and a
//     number (port by name: that name; by number: that number); a slice
//     without ports contributes nothing;
//   - an endpoint is its first address; no address, no endpoint;
//   - endpoints are keyed by address and port: when several entries give
//     one key, a non-terminating entry replaces a terminating one
//     (`!exists || !terminating`); among entries of one class kube-proxy
//     keeps the last it reads, in map order, so the model fixes the order
//     the way the source documents it (ready, then serving, then slice name);
//   - unset ready and serving are true, unset terminating false;
//   - routed: every ready endpoint; if none is ready, those serving while
//     terminating.
//
// It returns the routed "address:port" keys, sorted.
func kubeProxyRoutable(service, spec string, objs map[string]*discoveryv1.EndpointSlice) []string {
	type entry struct {
		ready, serving, terminating bool
		slice                       string
	}
	rank := func(e entry) int {
		r := 0
		if e.terminating {
			r += 4
		}
		if !e.ready {
			r += 2
		}
		if !e.serving {
			r++
		}
		return r
	}
	eps := map[string]entry{}
	for _, name := range slices.Sorted(maps.Keys(objs)) {
		s := objs[name]
		if s.Labels[discoveryv1.LabelServiceName] != service {
			continue
		}
		for _, p := range s.Ports {
			if p.Name == nil || p.Port == nil || *p.Port == 0 {
				continue
			}
			if n, err := strconv.Atoi(spec); err == nil {
				if int(*p.Port) != n {
					continue
				}
			} else if *p.Name != spec {
				continue
			}
			for _, e := range s.Endpoints {
				if len(e.Addresses) == 0 {
					continue
				}
				c := e.Conditions
				en := entry{ready: c.Ready == nil || *c.Ready, serving: c.Serving == nil || *c.Serving,
					terminating: c.Terminating != nil && *c.Terminating, slice: name}
				key := net.JoinHostPort(e.Addresses[0], strconv.Itoa(int(*p.Port)))
				old, exists := eps[key]
				if !exists || cmp.Or(cmp.Compare(rank(en), rank(old)), strings.Compare(en.slice, old.slice)) < 0 {
					eps[key] = en
				}
			}
		}
	}
	var ready, fallback []string
	for k, e := range eps {
		switch {
		case e.ready:
			ready = append(ready, k)
		case e.serving && e.terminating:
			fallback = append(fallback, k)
		}
	}
	if len(ready) == 0 {
		ready = fallback
	}
	slices.Sort(ready)
	return ready
}

// modelPub is a Publisher that keeps what the source last said.
type modelPub struct {
	mu     sync.Mutex
	set    core.Set
	stale  error
	failed error
}

func (p *modelPub) Publish(s core.Set) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.set, p.stale, p.failed = s, nil, nil
}

func (p *modelPub) PublishStale(s core.Set, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.set, p.stale, p.failed = s, err, nil
}

func (p *modelPub) Fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failed = err
}

// routed returns what a disco sink routes to: core.Routable's addresses.
func (p *modelPub) routed() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, e := range route.Routable(p.set) {
		out = append(out, e.HostPorts()...)
	}
	slices.Sort(out)
	return out
}

// modelPod is a pod of the generator: a UID with an IP for life; a new pod
// may get the IP of an old one (IP reuse).
type modelPod struct {
	uid, name, ip string
}

// FuzzSourceMatchesKubeProxy is the differential test: random sequences of
// EndpointSlice writes (adds, updates, deletes, relabels to another service,
// condition flips, IP reuse by a new pod while the old one terminates, an
// address listed twice, extra addresses, empty zone hints, slices without
// ports or with ports without numbers) go to the source (through the same
// event path as its watch) and to the kube-proxy model; after every step
// the source's routable set is the model's.
//
// make test runs the seeds and a short random run; longer on demand:
//
//	go test -run '^$' -fuzz FuzzSourceMatchesKubeProxy -fuzztime 10m ./sources/kubernetes
func FuzzSourceMatchesKubeProxy(f *testing.F) {
	for _, seed := range []uint64{1, 2, 3, 42, 1234} {
		f.Add(seed, uint8(60), false)
		f.Add(seed, uint8(60), true)
	}
	f.Fuzz(func(t *testing.T, seed uint64, steps uint8, byNumber bool) {
		r := rand.New(rand.NewPCG(seed, 7))
		spec := "grpc"
		if byNumber {
			spec = "50051"
		}
		src, err := NewForClient(fake.NewClientset(), WithServiceLookup(false))
		if err != nil {
			t.Fatal(err)
		}
		ss := newServiceSlices(src, serviceKey{"demo", "greeter"})
		pub := &modelPub{}
		ss.addView(core.Target{Namespace: "demo", Name: "greeter", Port: spec}, pub)
		ss.replace(nil)
		lw := ss.sliceLoop()

		pods := make([]modelPod, 6)
		for i := range pods {
			pods[i] = modelPod{uid: fmt.Sprintf("uid-%d", i), name: fmt.Sprintf("pod-%d", i), ip: fmt.Sprintf("10.244.0.%d", i+1)}
		}
		objs := map[string]*discoveryv1.EndpointSlice{} // what the API server holds
		ours := map[string]bool{}                       // slices the source's watch has seen as ours
		condition := func() *bool { return []*bool{nil, yes, no}[r.IntN(3)] }
		var log []string
		for step := range int(steps) {
			name := fmt.Sprintf("s%d", r.IntN(4))
			switch op := r.IntN(10); {
			case op == 0: // delete
				if _, ok := objs[name]; ok {
					delete(objs, name)
					log = append(log, "delete "+name)
					if ours[name] {
						delete(ours, name)
						lw.event(watch.Deleted, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "demo"}})
					}
				}
				continue
			case op == 1: // IP reuse: a new pod gets an old pod's IP
				old := pods[r.IntN(len(pods))]
				pods = append(pods, modelPod{uid: fmt.Sprintf("uid-%d", len(pods)), name: fmt.Sprintf("pod-%d", len(pods)), ip: old.ip})
				log = append(log, "reuse "+old.ip)
				continue
			}
			s := &discoveryv1.EndpointSlice{
				ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "demo", Labels: map[string]string{discoveryv1.LabelServiceName: "greeter"}},
				AddressType: discoveryv1.AddressTypeIPv4,
			}
			if r.IntN(8) == 0 {
				s.Labels[discoveryv1.LabelServiceName] = "other" // relabelled away
			}
			switch r.IntN(6) {
			case 0, 1, 2:
				s.Ports = []discoveryv1.EndpointPort{port("grpc", 50051)}
			case 3:
				s.Ports = []discoveryv1.EndpointPort{port("http", 8080), port("grpc", 50051)}
			case 4:
				s.Ports = []discoveryv1.EndpointPort{port("grpc", 0)} // a port without a number
			case 5: // no ports
			}
			for range r.IntN(5) {
				p := pods[r.IntN(len(pods))]
				e := discoveryv1.Endpoint{
					Addresses:  []string{p.ip},
					Conditions: discoveryv1.EndpointConditions{Ready: condition(), Serving: condition(), Terminating: condition()},
					TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: "demo", Name: p.name, UID: types.UID(p.uid)},
				}
				if r.IntN(6) == 0 {
					e.Addresses = append(e.Addresses, p.ip, "10.244.9.9") // odd but valid
				}
				if r.IntN(6) == 0 {
					e.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: ""}, {Name: "zone-a"}}}
				}
				s.Endpoints = append(s.Endpoints, e)
				if r.IntN(8) == 0 { // the same pod listed twice in the slice
					d := e
					d.Conditions = discoveryv1.EndpointConditions{Ready: condition(), Terminating: condition()}
					s.Endpoints = append(s.Endpoints, d)
				}
			}
			objs[name] = s
			log = append(log, fmt.Sprintf("write %s %v", name, describe(s)))
			if s.Labels[discoveryv1.LabelServiceName] == "greeter" {
				t := watch.Modified
				if !ours[name] {
					t = watch.Added
				}
				ours[name] = true
				lw.event(t, s.DeepCopy())
			} else if ours[name] {
				delete(ours, name) // the watch by label sees it leave
				lw.event(watch.Deleted, s.DeepCopy())
			}
			want := kubeProxyRoutable("greeter", spec, objs)
			if got := pub.routed(); !slices.Equal(got, want) {
				t.Fatalf("step %d: the source routes to %v, kube-proxy to %v\n%s", step, got, want, strings.Join(log, "\n"))
			}
			if pub.stale != nil || pub.failed != nil {
				t.Fatalf("step %d: stale %v, failed %v on valid slices", step, pub.stale, pub.failed)
			}
		}
	})
}

func describe(s *discoveryv1.EndpointSlice) string {
	var b strings.Builder
	fmt.Fprintf(&b, "svc=%s ports=", s.Labels[discoveryv1.LabelServiceName])
	for _, p := range s.Ports {
		fmt.Fprintf(&b, "%s:%v ", deref(p.Name), p.Port)
	}
	for _, e := range s.Endpoints {
		c := e.Conditions
		f := func(b *bool) string {
			if b == nil {
				return "-"
			}
			return strconv.FormatBool(*b)[:1]
		}
		fmt.Fprintf(&b, "[%s %s r%s s%s t%s]", e.TargetRef.UID, strings.Join(e.Addresses, ","), f(c.Ready), f(c.Serving), f(c.Terminating))
	}
	return b.String()
}

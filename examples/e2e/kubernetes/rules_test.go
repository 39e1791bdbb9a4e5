package kubernetes_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/route"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

// The source against a real API server where it used to differ from
// Kubernetes: each test writes slices the way the EndpointSlice and garbage
// collector controllers do.

func routable(s core.Set) string {
	var out []string
	for _, e := range route.Routable(s) {
		out = append(out, strings.Join(e.HostPorts(), "+"))
	}
	return strings.Join(out, " ")
}

// A deleted Service ends with no endpoints and not found, promptly, in
// either order of deletes: the garbage collector's (Service, then its
// slices) and the reverse.
func TestDeletedServiceEndsWithNoEndpoints(t *testing.T) {
	cp := kubetest.New(t)
	for _, order := range []string{"service first", "slices first"} {
		t.Run(order, func(t *testing.T) {
			e := newEnv(t, cp, "deleted-"+strings.ReplaceAll(order, " ", "-"))
			e.service("greeter")
			ps := pods("p", 2, 0)
			e.apply(slice("greeter", "greeter-a", v4, grpcPort, ps...))
			ctx := ctxFor(t, time.Minute)
			reg := prometheus.NewRegistry()
			w := watchTarget(t, newSource(t, cp.AdminConfig(), kubernetes.WithRegisterer(reg)), core.Target{Namespace: e.ns, Name: "greeter", Port: "grpc"})
			w.waitState(ctx, "both pods", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, ps...) })
			deleteService := func() {
				if err := e.cs.CoreV1().Services(e.ns).Delete(ctx, "greeter", metav1.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			begin := time.Now()
			if order == "service first" {
				deleteService()
			} else {
				e.delete("greeter-a")
				w.waitState(ctx, "empty", func(s core.State) bool { return s.Synced && s.Endpoints.Len() == 0 })
				begin = time.Now()
				deleteService()
			}
			st := w.waitState(ctx, "no endpoints, not found", func(s core.State) bool {
				return s.Endpoints.Len() == 0 && s.Stale.Kind == core.KindNotFound
			})
			t.Logf("%s: no endpoints and not found %v after the Service delete", order, time.Since(begin))
			if !st.Synced || !strings.Contains(st.Stale.Reason, "service "+e.ns+"/greeter not found") {
				t.Fatalf("state %+v", st)
			}
			if order == "service first" {
				e.delete("greeter-a") // the garbage collector, later: nothing changes
				deletes := map[string]string{"namespace": e.ns, "service": "greeter", "type": "delete"}
				for m := findMetric(t, reg, "disco_kubernetes_events_total", deletes); m == nil || m.GetCounter().GetValue() < 1; m = findMetric(t, reg, "disco_kubernetes_events_total", deletes) {
					if ctx.Err() != nil {
						t.Fatal("the slice delete never reached the source")
					}
					time.Sleep(5 * time.Millisecond)
				}
				if u, _ := w.rec.Last(w.tgt); u.State.Endpoints.Len() != 0 || u.State.Stale.Kind != core.KindNotFound {
					t.Fatalf("after the slices went: %+v", u.State)
				}
			}
		})
	}
}

// One address in two slices, one saying not ready, the other serving while
// terminating: kube-proxy keeps the non-terminating entry, so nothing is
// routed (no terminating fallback for an address a slice says is not
// ready).
func TestAddressInTwoSlicesFollowsKubeProxy(t *testing.T) {
	cp := kubetest.New(t)
	e := newEnv(t, cp, "two-slices")
	e.service("greeter")
	p := pod{name: "p-0", uid: "p-uid-0", ip: "10.244.1.1", ready: new(false)}
	draining := p
	draining.serving, draining.terminating = new(true), new(true)
	e.apply(slice("greeter", "greeter-a", v4, grpcPort, p))
	e.apply(slice("greeter", "greeter-b", v4, grpcPort, draining))
	ctx := ctxFor(t, time.Minute)
	w := watchTarget(t, newSource(t, cp.AdminConfig()), core.Target{Namespace: e.ns, Name: "greeter", Port: "grpc"})
	st := w.waitState(ctx, "synced", func(s core.State) bool { return s.Synced && s.Endpoints.Len() == 1 })
	if got := routable(st.Endpoints); got != "" {
		t.Fatalf("routed to %q; kube-proxy routes nothing", got)
	}
	if ep, _ := st.Endpoints.Get("p-uid-0"); ep.Conditions.IsTerminating() || ep.Conditions.IsReady() {
		t.Fatalf("published conditions %+v, want not ready, not terminating", ep.Conditions)
	}
	// The not-ready entry goes: the terminating one is all there is, and
	// serves as the fallback.
	e.apply(slice("greeter", "greeter-a", v4, grpcPort))
	st = w.waitState(ctx, "fallback", func(s core.State) bool { return routable(s.Endpoints) != "" })
	if got := routable(st.Endpoints); got != "10.244.1.1:50051" {
		t.Fatalf("routed to %q", got)
	}
}

// IP reuse: the old pod terminating, a new pod (another UID) with the same
// IP not ready yet. kube-proxy keys by address and routes nothing; so does
// the source, and it publishes only the new pod for that address.
func TestIPReuseRoutesNothing(t *testing.T) {
	cp := kubetest.New(t)
	e := newEnv(t, cp, "ip-reuse")
	e.service("greeter")
	old := pod{name: "greeter-old", uid: "uid-old", ip: "10.244.1.1", ready: new(false), serving: new(true), terminating: new(true)}
	neu := pod{name: "greeter-new", uid: "uid-new", ip: "10.244.1.1", ready: new(false)}
	e.apply(slice("greeter", "greeter-a", v4, grpcPort, old))
	ctx := ctxFor(t, time.Minute)
	w := watchTarget(t, newSource(t, cp.AdminConfig()), core.Target{Namespace: e.ns, Name: "greeter", Port: "grpc"})
	w.waitState(ctx, "the old pod as the fallback", func(s core.State) bool { return routable(s.Endpoints) == "10.244.1.1:50051" })
	e.apply(slice("greeter", "greeter-b", v4, grpcPort, neu))
	st := w.waitState(ctx, "the new pod owns the address", func(s core.State) bool {
		_, ok := s.Endpoints.Get("uid-new")
		return ok
	})
	if got := routable(st.Endpoints); got != "" || st.Endpoints.Len() != 1 {
		t.Fatalf("routed to %q with %s; kube-proxy routes nothing", got, describe(st.Endpoints))
	}
	neu.ready = new(true)
	e.apply(slice("greeter", "greeter-b", v4, grpcPort, neu))
	st = w.waitState(ctx, "the new pod ready", func(s core.State) bool { return routable(s.Endpoints) != "" })
	if ep, _ := st.Endpoints.Get("uid-new"); ep == nil || ep.Name != "greeter-new" {
		t.Fatalf("routed to %s, want the new pod", describe(st.Endpoints))
	}
}

// What the API server accepts, the source uses: an endpoint listing its
// address twice and a zone hint without a name do not cost the slice (or
// its neighbours) anything, and the state is fresh.
func TestOddButValidSlicesAreUsed(t *testing.T) {
	cp := kubetest.New(t)
	e := newEnv(t, cp, "odd")
	e.service("greeter")
	ps := pods("p", 3, 0)
	s := slice("greeter", "greeter-a", v4, grpcPort, ps...)
	s.Endpoints[0].Addresses = []string{ps[0].ip, ps[0].ip}
	s.Endpoints[1].Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: ""}, {Name: "zone-a"}}}
	e.apply(s) // the API server accepts both
	ctx := ctxFor(t, time.Minute)
	w := watchTarget(t, newSource(t, cp.AdminConfig()), core.Target{Namespace: e.ns, Name: "greeter", Port: "grpc"})
	st := w.waitState(ctx, "all three", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, ps...) })
	if st.Stale.IsStale() {
		t.Fatalf("stale: %+v", st.Stale)
	}
	if ep, _ := st.Endpoints.Get(ps[1].uid); len(ep.ZoneHints) != 1 || ep.ZoneHints[0] != "zone-a" {
		t.Fatalf("zone hints %v, want [zone-a]", ep.ZoneHints)
	}
}

// A Service created after the client asked for it is noticed at once (it
// used to wait for a 30-second recheck).
func TestServiceCreatedLaterIsNoticedPromptly(t *testing.T) {
	cp := kubetest.New(t)
	e := newEnv(t, cp, "later")
	ctx := ctxFor(t, time.Minute)
	w := watchTarget(t, newSource(t, cp.AdminConfig()), core.Target{Namespace: e.ns, Name: "greeter", Port: "grpc"})
	w.waitState(ctx, "not found", func(s core.State) bool { return s.Stale.Kind == core.KindNotFound })
	ps := pods("p", 1, 0)
	begin := time.Now()
	e.service("greeter")
	e.apply(slice("greeter", "greeter-a", v4, grpcPort, ps...))
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second) // well before the old 30 s recheck
	defer cancel()
	w.waitState(wctx, "found", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, ps...) && !s.Stale.IsStale() })
	t.Logf("service created: its endpoint published %v later", time.Since(begin))
}

// A slice that lists no port contributes nothing (kube-proxy ignores it),
// however the target names its port.
func TestSliceWithoutPortsContributesNothing(t *testing.T) {
	cp := kubetest.New(t)
	e := newEnv(t, cp, "no-ports")
	e.service("greeter")
	ps := pods("p", 2, 0)
	e.apply(slice("greeter", "greeter-a", v4, grpcPort, ps[0]))
	e.apply(slice("greeter", "greeter-b", v4, nil, ps[1]))
	ctx := ctxFor(t, time.Minute)
	for _, port := range []string{"grpc", "50051"} {
		w := watchTarget(t, newSource(t, cp.AdminConfig()), core.Target{Namespace: e.ns, Name: "greeter", Port: port})
		st := w.waitState(ctx, "synced", func(s core.State) bool { return s.Synced })
		if !hasExactly(st.Endpoints, 50051, ps[0]) {
			t.Fatalf("port %s: %s, want only the slice with ports", port, describe(st.Endpoints))
		}
	}
}

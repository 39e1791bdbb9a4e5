package kubernetes_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	"github.com/disco-lb/disco/core/route"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

// Scenarios that need one control plane between them, each in its own
// namespace.
func TestSourceAgainstRealAPIServer(t *testing.T) {
	cp := kubetest.New(t)
	t.Run("250 endpoints in 3 slices, rolling replacement of all", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cp, "rolling")
		e.service("greeter")
		old := pods("old", 250, 0)
		e.apply(slice("greeter", "greeter-a", v4, grpcPort, old[:100]...))
		e.apply(slice("greeter", "greeter-b", v4, grpcPort, old[100:200]...))
		e.apply(slice("greeter", "greeter-c", v4, grpcPort, old[200:]...))
		ctx := ctxFor(t, 2*time.Minute)
		w := watchTarget(t, newSource(t, cp.AdminConfig()), core.Target{Namespace: "rolling", Name: "greeter", Port: "grpc"})
		if err := w.sub.WaitSynced(ctx); err != nil {
			t.Fatal(err)
		}
		w.waitState(ctx, "all 250 across 3 slices", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, old...) })

		// Replace every pod, 10 at a time, each step one slice update (new
		// pods in, old out), as a rolling update does.
		cur := slices.Clone(old)
		neu := pods("new", 250, 0)
		for i := 0; i < 250; i += 10 {
			copy(cur[i:i+10], neu[i:i+10])
			switch {
			case i < 100:
				e.apply(slice("greeter", "greeter-a", v4, grpcPort, cur[:100]...))
			case i < 200:
				e.apply(slice("greeter", "greeter-b", v4, grpcPort, cur[100:200]...))
			default:
				e.apply(slice("greeter", "greeter-c", v4, grpcPort, cur[200:]...))
			}
		}
		w.waitState(ctx, "all 250 replaced", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, neu...) })
		for _, u := range w.rec.Updates() {
			if n := u.State.Endpoints.Len(); n != 250 {
				t.Fatalf("seq %d had %d endpoints; a rolling replacement never has fewer or more than 250", u.Seq, n)
			}
		}
	})

	t.Run("scale to zero and back", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cp, "zero")
		e.service("greeter")
		ps := pods("p", 3, 0)
		e.apply(slice("greeter", "greeter-a", v4, grpcPort, ps...))
		ctx := ctxFor(t, time.Minute)
		w := watchTarget(t, newSource(t, cp.AdminConfig()), core.Target{Namespace: "zero", Name: "greeter", Port: "grpc"})
		w.waitState(ctx, "3 pods", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, ps...) })
		e.apply(slice("greeter", "greeter-a", v4, grpcPort)) // the controller keeps an empty slice
		st := w.waitState(ctx, "zero", func(s core.State) bool { return s.Endpoints.Len() == 0 })
		if !st.Synced || st.Stale.IsStale() {
			t.Fatalf("scaled to zero: synced=%v stale=%+v; want an empty, synced, fresh state", st.Synced, st.Stale)
		}
		e.apply(slice("greeter", "greeter-a", v4, grpcPort, ps[:2]...))
		w.waitState(ctx, "back to 2", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, ps[:2]...) })
		e.delete("greeter-a") // no slice at all, Service still there: empty
		w.waitState(ctx, "no slice", func(s core.State) bool { return s.Endpoints.Len() == 0 && s.Synced && !s.Stale.IsStale() })
	})

	t.Run("an endpoint in two slices stays until both drop it", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cp, "shared")
		e.service("greeter")
		ps := pods("p", 3, 0)
		e.apply(slice("greeter", "greeter-a", v4, grpcPort, ps[0], ps[1]))
		e.apply(slice("greeter", "greeter-b", v4, grpcPort, ps[1], ps[2]))
		ctx := ctxFor(t, time.Minute)
		w := watchTarget(t, newSource(t, cp.AdminConfig()), core.Target{Namespace: "shared", Name: "greeter", Port: "grpc"})
		w.waitState(ctx, "3 pods", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, ps...) })
		e.delete("greeter-a")
		w.waitState(ctx, "p-1 kept by greeter-b", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, ps[1], ps[2]) })
		e.apply(slice("greeter", "greeter-b", v4, grpcPort, ps[2]))
		w.waitState(ctx, "p-1 gone with its last slice", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, ps[2]) })
	})

	t.Run("dual stack: IPv4 and IPv6 slices join into one endpoint per pod", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cp, "dual")
		e.service("greeter")
		v4pods := pods("p", 2, 0)
		v6pods := slices.Clone(v4pods)
		for i := range v6pods {
			v6pods[i].ip = fmt.Sprintf("fd00:10:244::%d", i+1)
		}
		e.apply(slice("greeter", "greeter-v4", v4, grpcPort, v4pods...))
		e.apply(slice("greeter", "greeter-v6", v6, grpcPort, v6pods...))
		ctx := ctxFor(t, time.Minute)
		w := watchTarget(t, newSource(t, cp.AdminConfig()), core.Target{Namespace: "dual", Name: "greeter", Port: "grpc"})
		w.waitState(ctx, "2 dual-stack endpoints", func(s core.State) bool {
			if s.Endpoints.Len() != 2 {
				return false
			}
			for i, p := range v4pods {
				ep, ok := s.Endpoints.Get(p.uid)
				if !ok || !slices.Equal(ep.Addresses, []string{p.ip, v6pods[i].ip}) {
					return false
				}
			}
			return true
		})
		e.delete("greeter-v4")
		w.waitState(ctx, "IPv6 only", func(s core.State) bool {
			ep, ok := s.Endpoints.Get(v4pods[0].uid)
			return s.Endpoints.Len() == 2 && ok && slices.Equal(ep.Addresses, []string{v6pods[0].ip})
		})
	})

	t.Run("named port resolves per slice; slices without it contribute nothing", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cp, "ports")
		e.service("greeter")
		ps := pods("p", 3, 0)
		e.apply(slice("greeter", "greeter-a", v4, []discoveryv1.EndpointPort{epPort("grpc", 50051)}, ps[0]))
		e.apply(slice("greeter", "greeter-b", v4, []discoveryv1.EndpointPort{epPort("http", 8080), epPort("grpc", 9090)}, ps[1]))
		e.apply(slice("greeter", "greeter-c", v4, []discoveryv1.EndpointPort{epPort("http", 8080)}, ps[2]))
		ctx := ctxFor(t, time.Minute)
		src := newSource(t, cp.AdminConfig())
		w := watchTarget(t, src, core.Target{Namespace: "ports", Name: "greeter", Port: "grpc"})
		st := w.waitState(ctx, "grpc on a and b", func(s core.State) bool { return s.Endpoints.Len() == 2 })
		a, _ := st.Endpoints.Get(ps[0].uid)
		b, _ := st.Endpoints.Get(ps[1].uid)
		if a == nil || b == nil || a.Port != 50051 || b.Port != 9090 {
			t.Fatalf("ports: %s", describe(st.Endpoints))
		}
		http := watchTarget(t, src, core.Target{Namespace: "ports", Name: "greeter", Port: "8080"})
		http.waitState(ctx, "8080 on b and c", func(s core.State) bool {
			_, onB := s.Endpoints.Get(ps[1].uid)
			_, onC := s.Endpoints.Get(ps[2].uid)
			return s.Endpoints.Len() == 2 && onB && onC
		})
	})

	t.Run("terminating endpoints are used only while none is ready", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cp, "terminating")
		e.service("greeter")
		oldPod, newPod := pods("old", 1, 0)[0], pods("new", 1, 1)[0]
		oldPod.ready, oldPod.serving, oldPod.terminating = new(false), new(true), new(true)
		e.apply(slice("greeter", "greeter-a", v4, grpcPort, oldPod, newPod))
		ctx := ctxFor(t, time.Minute)
		w := watchTarget(t, newSource(t, cp.AdminConfig()), core.Target{Namespace: "terminating", Name: "greeter", Port: "grpc"})
		routable := func(s core.State) string {
			var ids []string
			for _, ep := range route.Routable(s.Endpoints) {
				ids = append(ids, ep.Name)
			}
			return strings.Join(ids, ",")
		}
		st := w.waitState(ctx, "both", func(s core.State) bool { return s.Endpoints.Len() == 2 })
		if got := routable(st); got != "new-1" {
			t.Fatalf("routable = %q, want the ready one only", got)
		}
		if ep, _ := st.Endpoints.Get(oldPod.uid); !ep.Conditions.IsTerminating() || ep.Conditions.IsReady() || !ep.Conditions.IsServing() {
			t.Fatalf("conditions of the draining pod: %+v", ep.Conditions)
		}
		newPod.ready = new(false)
		e.apply(slice("greeter", "greeter-a", v4, grpcPort, oldPod, newPod))
		st = w.waitState(ctx, "none ready", func(s core.State) bool { return len(route.Routable(s.Endpoints)) != 1 || routable(s) == "old-0" })
		if got := routable(st); got != "old-0" {
			t.Fatalf("routable = %q, want the serving-terminating one", got)
		}
	})

	t.Run("zone, node, hints and pod name reach the state", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cp, "zones")
		e.service("greeter")
		p := pods("p", 1, 0)[0]
		p.zone, p.hints = "zone-a", []string{"zone-a"}
		e.apply(slice("greeter", "greeter-a", v4, grpcPort, p))
		ctx := ctxFor(t, time.Minute)
		w := watchTarget(t, newSource(t, cp.AdminConfig()), core.Target{Namespace: "zones", Name: "greeter", Port: "grpc"})
		st := w.waitState(ctx, "one", func(s core.State) bool { return s.Endpoints.Len() == 1 })
		ep := st.Endpoints.At(0)
		if ep.Zone != "zone-a" || !slices.Equal(ep.ZoneHints, []string{"zone-a"}) || ep.Name != "p-0" || ep.ID != p.uid {
			t.Fatalf("endpoint = %+v", ep)
		}
	})

	t.Run("a missing Service is an error; one without slices is empty", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cp, "missing")
		ctx := ctxFor(t, time.Minute)
		src := newSource(t, cp.AdminConfig())
		w := watchTarget(t, src, core.Target{Namespace: "missing", Name: "nosuch", Port: "grpc"})
		err := w.sub.WaitSynced(ctx)
		if !errors.Is(err, core.ErrNotFound) || !strings.Contains(err.Error(), "service missing/nosuch not found") {
			t.Fatalf("WaitSynced = %v, want not found", err)
		}
		e.service("empty")
		w2 := watchTarget(t, src, core.Target{Namespace: "missing", Name: "empty", Port: "grpc"})
		if err := w2.sub.WaitSynced(ctx); err != nil {
			t.Fatalf("existing Service without slices: %v", err)
		}
		// The missing service appears: the target recovers by itself.
		e.service("nosuch")
		e.apply(slice("nosuch", "nosuch-a", v4, grpcPort, pods("p", 1, 0)...))
		w.waitState(ctx, "appeared", func(s core.State) bool { return s.Synced && s.Endpoints.Len() == 1 && !s.Stale.IsStale() })
	})

	t.Run("targets of one service share one watch; metrics follow them", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cp, "shared-watch")
		e.service("greeter")
		e.apply(slice("greeter", "greeter-a", v4, grpcPort, pods("p", 2, 0)...))
		ctx := ctxFor(t, time.Minute)
		reg := prometheus.NewRegistry()
		src := newSource(t, cp.AdminConfig(), kubernetes.WithRegisterer(reg))
		hub := coretest.Hub(t, src)
		defer hub.Close()
		var subs []*core.Subscription
		for _, port := range []string{"grpc", "50051"} {
			sub, err := hub.Subscribe(port, core.SinkFunc(func(context.Context, core.Update) error { return nil }), core.Target{Namespace: "shared-watch", Name: "greeter", Port: port})
			if err != nil {
				t.Fatal(err)
			}
			if err := sub.WaitSynced(ctx); err != nil {
				t.Fatal(err)
			}
			subs = append(subs, sub)
		}
		lists := counterValue(t, reg, "disco_kubernetes_events_total", map[string]string{"namespace": "shared-watch", "service": "greeter", "type": "list"})
		if lists != 1 {
			t.Fatalf("%v lists for two targets of one service, want 1 shared watch", lists)
		}
		if got := gaugeValue(t, reg, "disco_kubernetes_endpoints", map[string]string{"namespace": "shared-watch", "port": "grpc", "condition": "ready"}); got != 2 {
			t.Fatalf("ready gauge = %v", got)
		}
		// The EndpointSlice controller stamps the time of the change that
		// caused an update; the source observes the delay from it.
		changed := slice("greeter", "greeter-a", v4, grpcPort, pods("p", 3, 0)...)
		changed.Annotations = map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": time.Now().Add(-2 * time.Second).Format(time.RFC3339Nano)}
		e.apply(changed)
		deadline := time.Now().Add(30 * time.Second)
		for {
			mfs, _ := reg.Gather()
			var h *dto.Histogram
			for _, mf := range mfs {
				if mf.GetName() == "disco_kubernetes_propagation_seconds" {
					h = mf.GetMetric()[0].GetHistogram()
				}
			}
			if h != nil && h.GetSampleCount() >= 1 {
				if h.GetSampleSum() < 2 {
					t.Fatalf("propagation sum %v s, want at least the 2 s since the trigger", h.GetSampleSum())
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no propagation sample")
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, s := range subs {
			s.Close()
		}
		if n := seriesOf(t, reg, "shared-watch"); n != 0 {
			t.Fatalf("%d series left after the last target went", n)
		}
	})

	t.Run("the client's zone from its node's label", func(t *testing.T) {
		t.Parallel()
		ctx := ctxFor(t, time.Minute)
		cs, err := cp.AdminClient()
		if err != nil {
			t.Fatal(err)
		}
		_, err = cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1",
			Labels: map[string]string{"topology.kubernetes.io/zone": "zone-a"}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		src := newSource(t, cp.AdminConfig())
		if z, err := src.NodeZone(ctx, "node-1"); err != nil || z != "zone-a" {
			t.Fatalf("NodeZone = %q, %v", z, err)
		}
		if _, err := src.NodeZone(ctx, "nosuch"); !errors.Is(err, core.ErrNotFound) {
			t.Fatalf("NodeZone(nosuch) = %v", err)
		}
	})

	t.Run("kubeconfig outside the cluster, with its context namespace", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, cp, "default")
		e.service("kc")
		e.apply(slice("kc", "kc-a", v4, grpcPort, pods("p", 1, 0)...))
		cfg, ns, err := kubernetes.LoadConfig(cp.Kubeconfig())
		if err != nil {
			t.Fatal(err)
		}
		if ns != "default" {
			t.Fatalf("namespace from kubeconfig = %q", ns)
		}
		src := newSource(t, cfg, kubernetes.WithNamespace(ns))
		target, err := src.Target("kubernetes:///kc:grpc")
		if err != nil {
			t.Fatal(err)
		}
		w := watchTarget(t, src, target)
		w.waitState(ctxFor(t, time.Minute), "one", func(s core.State) bool { return s.Endpoints.Len() == 1 })
	})
}

// The API server is killed (SIGKILL) and restarted while slices keep
// changing: the state is never empty meanwhile, is marked stale while the
// server is down, and converges to exactly the final set.
func TestSourceSurvivesAPIServerRestart(t *testing.T) {
	t.Parallel()
	cp := kubetest.New(t)
	e := newEnv(t, cp, "restart")
	e.service("greeter")
	ps := pods("p", 40, 0)
	e.apply(slice("greeter", "greeter-a", v4, grpcPort, ps[:10]...))
	ctx := ctxFor(t, 3*time.Minute)
	w := watchTarget(t, newSource(t, cp.AdminConfig()), core.Target{Namespace: "restart", Name: "greeter", Port: "grpc"})
	w.waitState(ctx, "first 10", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, ps[:10]...) })

	// A writer moves a window of 10 pods forward, retrying through the outage.
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		api := e.cs.DiscoveryV1().EndpointSlices("restart")
		for i := 1; i <= 30; i++ {
			s := slice("greeter", "greeter-a", v4, grpcPort, ps[i:i+10]...)
			for {
				cur, err := api.Get(ctx, "greeter-a", metav1.GetOptions{})
				if err == nil {
					s.ResourceVersion = cur.ResourceVersion
					if _, err = api.Update(ctx, s, metav1.UpdateOptions{}); err == nil {
						break
					}
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
			if i == 10 {
				close(done)
			}
		}
	})
	<-done
	if err := cp.StopAPIServer(false); err != nil {
		t.Fatal(err)
	}
	w.waitState(ctx, "marked stale while the API server is down", func(s core.State) bool { return s.Stale.IsStale() })
	if err := cp.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	st := w.waitState(ctx, "converged", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, ps[30:40]...) && !s.Stale.IsStale() })
	if st.Stale.IsStale() {
		t.Fatal("still stale")
	}
	sawStale := false
	for _, u := range w.rec.Updates() {
		if u.State.Endpoints.Len() != 10 {
			t.Fatalf("seq %d had %d endpoints; never empty, never partial", u.Seq, u.State.Endpoints.Len())
		}
		sawStale = sawStale || u.State.Stale.IsStale()
	}
	if !sawStale {
		t.Fatal("never marked stale")
	}
}

// Changes the source missed while cut off, with etcd compacted past its
// resourceVersion, reach it through a 410 Gone relist: deleted slices leave
// no ghost, new ones appear.
func TestSourceReconcilesAfter410Gone(t *testing.T) {
	t.Parallel()
	cp := kubetest.New(t, kubetest.WithWatchCache(false))
	e := newEnv(t, cp, "gone")
	e.service("greeter")
	ps := pods("p", 6, 0)
	e.apply(slice("greeter", "greeter-a", v4, grpcPort, ps[0], ps[1]))
	e.apply(slice("greeter", "greeter-b", v4, grpcPort, ps[2], ps[3]))
	ctx := ctxFor(t, 3*time.Minute)
	cfg := cp.AdminConfig()
	px := newProxy(t, strings.TrimPrefix(cfg.Host, "https://"))
	cfg.Host = "https://" + px.addr()
	w := watchTarget(t, newSource(t, cfg, kubernetes.WithLogger(testLogger(t))), core.Target{Namespace: "gone", Name: "greeter", Port: "grpc"})
	w.waitState(ctx, "4 pods", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, ps[:4]...) })

	px.setCut(true)
	w.waitState(ctx, "stale when cut off", func(s core.State) bool { return s.Stale.IsStale() })
	e.delete("greeter-a")                                              // missed delete
	e.apply(slice("greeter", "greeter-b", v4, grpcPort, ps[3], ps[4])) // missed update
	e.apply(slice("greeter", "greeter-c", v4, grpcPort, ps[5]))        // missed add
	if _, err := cp.CompactEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	px.setCut(false)
	st := w.waitState(ctx, "reconciled", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, ps[3], ps[4], ps[5]) })
	if st.Stale.IsStale() {
		t.Fatalf("still stale: %+v", st.Stale)
	}
}

// A ServiceAccount without `list` gets a clear error naming what to grant;
// once a Role grants it, the same source recovers without a restart.
func TestSourceForbiddenThenGranted(t *testing.T) {
	t.Parallel()
	cp := kubetest.New(t)
	e := newEnv(t, cp, "rbac")
	e.service("greeter")
	ps := pods("p", 2, 0)
	e.apply(slice("greeter", "greeter-a", v4, grpcPort, ps...))
	ctx := ctxFor(t, 3*time.Minute)
	cfg, err := cp.ServiceAccountConfig(ctx, "rbac", "client")
	if err != nil {
		t.Fatal(err)
	}
	w := watchTarget(t, newSource(t, cfg), core.Target{Namespace: "rbac", Name: "greeter", Port: "grpc"})
	err = w.sub.WaitSynced(ctx)
	if !errors.Is(err, core.ErrForbidden) {
		t.Fatalf("WaitSynced = %v, want forbidden", err)
	}
	// The verb is the one the API server refused first: list, or watch when
	// client-go lists through a watch (watch-list).
	msg := err.Error()
	if !strings.Contains(msg, "forbidden to list endpointslices.discovery.k8s.io in namespace rbac") &&
		!strings.Contains(msg, "forbidden to watch endpointslices.discovery.k8s.io in namespace rbac") {
		t.Fatalf("error %q does not name the refused verb, resource and namespace", msg)
	}
	for _, want := range []string{"grant verbs list and watch", "system:serviceaccount:rbac:client"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error %q does not say %q", msg, want)
		}
	}
	// The minimal Role of the README: list and watch endpointslices (no
	// services: a missing Service would then read as empty).
	if err := cp.Grant(ctx, "rbac", "client", "disco-endpointslices", false, rbacv1.PolicyRule{
		APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"},
	}); err != nil {
		t.Fatal(err)
	}
	st := w.waitState(ctx, "recovered after the grant", func(s core.State) bool { return s.Synced && hasExactly(s.Endpoints, 50051, ps...) })
	if st.Stale.IsStale() {
		t.Fatalf("still stale: %+v", st.Stale)
	}
}

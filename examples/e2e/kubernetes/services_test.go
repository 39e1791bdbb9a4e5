package kubernetes_test

import (
	"context"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

// requestLog records the requests a source makes of the API server
// (through rest.Config's WrapTransport), as "WATCH services ?" or
// "GET endpointslices ?labelSelector=...": the method, or WATCH, the last
// element of the path, and the selectors.
type requestLog struct {
	mu   sync.Mutex
	reqs []string
	next http.RoundTripper
}

func (l *requestLog) RoundTrip(r *http.Request) (*http.Response, error) {
	verb := r.Method
	q := r.URL.Query()
	if w := q.Get("watch"); w == "true" || w == "1" {
		verb = "WATCH"
	}
	for _, k := range []string{"watch", "resourceVersion", "timeoutSeconds", "allowWatchBookmarks", "limit"} {
		q.Del(k)
	}
	l.mu.Lock()
	l.reqs = append(l.reqs, fmt.Sprintf("%s %s ?%s", verb, path.Base(r.URL.Path), q.Encode()))
	l.mu.Unlock()
	return l.next.RoundTrip(r)
}

// all returns the requests so far.
func (l *requestLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reqs)
}

func (l *requestLog) count(prefix string) int {
	n := 0
	for _, r := range l.all() {
		if strings.HasPrefix(r, prefix) {
			n++
		}
	}
	return n
}

// waitFor waits until at least n requests start with prefix.
func (l *requestLog) waitFor(t *testing.T, prefix string, n int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); l.count(prefix) < n; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %q, want %d: %q", l.count(prefix), prefix, n, l.all())
		}
	}
}

// Targets of many Services of a namespace share one list and watch of the
// namespace's Services (a hub of a thousand targets held a thousand
// Service watches), and each still learns of its own Service alone: a
// deleted Service ends its targets with not found, and no other.
func TestServicesWatchedOncePerNamespace(t *testing.T) {
	cp := kubetest.New(t)
	e := newEnv(t, cp, "one-services-watch")
	names := []string{"alpha", "beta", "gamma", "delta"}
	all := map[string][]pod{}
	for i, n := range names {
		e.service(n)
		all[n] = pods(n, 1, i)
		e.apply(slice(n, n+"-a", v4, grpcPort, all[n]...))
	}
	log := &requestLog{}
	cfg := cp.AdminConfig()
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { log.next = rt; return log }
	hub := coretest.Hub(t, newSource(t, cfg))
	rec := coretest.NewRecorder()
	var subs []*core.Subscription
	for _, n := range names {
		sub, err := hub.Subscribe("recorder", rec, core.Target{Namespace: e.ns, Name: n, Port: "grpc"})
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	ctx := ctxFor(t, time.Minute)
	for _, n := range names {
		if _, err := rec.WaitState(ctx, core.Target{Namespace: e.ns, Name: n, Port: "grpc"}, func(s core.State) bool {
			return hasExactly(s.Endpoints, 50051, all[n]...) && !s.Stale.IsStale()
		}); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	// A state is published after its list, before its watch opens.
	log.waitFor(t, "WATCH endpointslices", len(names))
	log.waitFor(t, "WATCH services", 1)
	if got := log.count("WATCH services"); got != 1 {
		t.Fatalf("%d watches of services for %d Services of one namespace, want 1: %q", got, len(names), log.all())
	}
	if err := e.cs.CoreV1().Services(e.ns).Delete(ctx, "beta", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	beta := core.Target{Namespace: e.ns, Name: "beta", Port: "grpc"}
	if _, err := rec.WaitState(ctx, beta, func(s core.State) bool { return s.Stale.Kind == core.KindNotFound && s.Endpoints.Len() == 0 }); err != nil {
		t.Fatalf("beta deleted: %v", err)
	}
	e.service("epsilon") // another Service of the namespace: nothing changes
	for _, n := range []string{"alpha", "gamma", "delta"} {
		u, _ := rec.Last(core.Target{Namespace: e.ns, Name: n, Port: "grpc"})
		if !hasExactly(u.State.Endpoints, 50051, all[n]...) || u.State.Stale.IsStale() {
			t.Fatalf("%s after beta's delete: %+v", n, u.State)
		}
	}
	e.service("beta")
	if _, err := rec.WaitState(ctx, beta, func(s core.State) bool {
		return hasExactly(s.Endpoints, 50051, all["beta"]...) && !s.Stale.IsStale()
	}); err != nil {
		t.Fatalf("beta created again: %v", err)
	}
	// The last target of the namespace gone, its Services watch ends too;
	// a new target starts one again.
	for _, s := range subs {
		s.Close()
	}
	sub, err := hub.Subscribe("recorder", rec, core.Target{Namespace: e.ns, Name: "epsilon", Port: "grpc"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := rec.WaitState(ctx, core.Target{Namespace: e.ns, Name: "epsilon", Port: "grpc"}, func(s core.State) bool { return s.Synced && !s.Stale.IsStale() }); err != nil {
		t.Fatalf("epsilon: %v", err)
	}
	log.waitFor(t, "WATCH services", 2)
	if got := log.count("WATCH services"); got != 2 {
		t.Fatalf("%d watches of services, want 2 (one per namespace in use, again after none was)", got)
	}
}

// A Role restricted to named Services (resourceNames) may not list every
// Service of the namespace: each Service is then followed on its own, and
// a deleted Service still ends its target with not found, at once.
func TestServicesOfRestrictedRoleFollowedEachAlone(t *testing.T) {
	t.Parallel()
	cp := kubetest.New(t)
	e := newEnv(t, cp, "resource-names")
	e.service("greeter")
	e.service("other")
	ps := pods("p", 2, 0)
	e.apply(slice("greeter", "greeter-a", v4, grpcPort, ps...))
	ctx := ctxFor(t, 2*time.Minute)
	if err := cp.Grant(ctx, e.ns, "client", "disco-named", false,
		rbacv1.PolicyRule{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"services"}, ResourceNames: []string{"greeter"}, Verbs: []string{"get", "list", "watch"}},
	); err != nil {
		t.Fatal(err)
	}
	cfg, err := cp.ServiceAccountConfig(ctx, e.ns, "client")
	if err != nil {
		t.Fatal(err)
	}
	log := &requestLog{}
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { log.next = rt; return log }
	w := watchTarget(t, newSource(t, cfg, kubernetes.WithServiceRecheck(time.Hour)), core.Target{Namespace: e.ns, Name: "greeter", Port: "grpc"})
	w.waitState(ctx, "both pods", func(s core.State) bool { return hasExactly(s.Endpoints, 50051, ps...) && !s.Stale.IsStale() })
	for deadline := time.Now().Add(30 * time.Second); log.count("WATCH services ?fieldSelector=metadata.name%3Dgreeter") == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the Service is not watched on its own: %q", log.all())
		}
	}
	begin := time.Now()
	if err := e.cs.CoreV1().Services(e.ns).Delete(ctx, "greeter", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second) // by the watch, not the hour's recheck
	defer cancel()
	w.waitState(wctx, "not found", func(s core.State) bool { return s.Stale.Kind == core.KindNotFound && s.Endpoints.Len() == 0 })
	t.Logf("deleted Service seen %v later, by its own watch", time.Since(begin))
}

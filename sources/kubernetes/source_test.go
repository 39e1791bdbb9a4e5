package kubernetes_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
)

// Unit tests of the source's decisions with client-go's fake clientset;
// the same rules against a real API server are in examples/e2e/kubernetes.

var target = core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}

func service() *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "greeter"}}
}

func fakeSlice(name string, addrs ...string) *discoveryv1.EndpointSlice {
	grpc, port := "grpc", int32(50051)
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "demo", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "greeter"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &grpc, Port: &port}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
	}
	return s
}

type fakeWatch struct {
	hub *core.Hub
	sub *core.Subscription
	rec *coretest.Recorder
	// watching is closed, per resource, once the source's first watch of
	// it is open.
	watching map[string]chan struct{}
}

func watchFake(t *testing.T, client *fake.Clientset, opts ...kubernetes.Option) *fakeWatch {
	t.Helper()
	src, err := kubernetes.NewForClient(client, append([]kubernetes.Option{kubernetes.WithBackoff(10*time.Millisecond, 50*time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	w := &fakeWatch{hub: coretest.Hub(t, src), rec: coretest.NewRecorder(), watching: map[string]chan struct{}{}}
	// The fake clientset's watch starts at the moment it is opened,
	// whatever resource version it is asked for: a change made between the
	// source's list and its watch is lost, where an API server replays it
	// from the list's version. So a test changes objects only once the
	// source watches them (established); the watch is the fake's own, opened
	// here to know when it is.
	for _, res := range []string{"services", "endpointslices"} {
		ch := make(chan struct{})
		w.watching[res] = ch
		var once sync.Once
		client.PrependWatchReactor(res, func(a k8stesting.Action) (bool, watch.Interface, error) {
			var lo metav1.ListOptions
			if wa, ok := a.(k8stesting.WatchActionImpl); ok {
				lo = wa.ListOptions
			}
			wi, err := client.Tracker().Watch(a.GetResource(), a.GetNamespace(), lo)
			if err != nil {
				return false, nil, err
			}
			once.Do(func() { close(ch) })
			return true, wi, nil
		})
	}
	t.Cleanup(func() { w.hub.Close() })
	if w.sub, err = w.hub.Subscribe("test", w.rec, target); err != nil {
		t.Fatal(err)
	}
	return w
}

// established waits until the source watches the named resources
// ("services", "endpointslices"): changes made from now on reach it.
func (w *fakeWatch) established(t *testing.T, resources ...string) {
	t.Helper()
	for _, res := range resources {
		select {
		case <-w.watching[res]:
		case <-time.After(10 * time.Second):
			t.Fatalf("the source never watched %s", res)
		}
	}
}

// until waits for the last state to satisfy ok.
func (w *fakeWatch) until(t *testing.T, what string, ok func(core.State) bool) core.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var last core.State
	if err := w.rec.WaitFor(ctx, func(us []core.Update) bool {
		if len(us) == 0 {
			return false
		}
		last = us[len(us)-1].State
		return ok(last)
	}); err != nil {
		t.Fatalf("%s: not reached; last state %+v", what, last)
	}
	return last
}

func addrs(s core.Set) string {
	var out []string
	for e := range s.All() {
		out = append(out, e.Addresses...)
	}
	return strings.Join(out, ",")
}

// A Service lookup that fails for another reason than not found is
// unavailable and retried: never "empty, synced, fresh".
func TestServiceLookupErrorIsUnavailableNotEmpty(t *testing.T) {
	client := fake.NewClientset(service())
	var failures atomic.Int32
	failures.Store(3)
	client.PrependReactor("list", "services", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failures.Add(-1) >= 0 {
			return true, nil, apierrors.NewInternalError(errors.New("etcd timeout"))
		}
		return false, nil, nil
	})
	w := watchFake(t, client)
	st := w.until(t, "unavailable", func(s core.State) bool { return s.Stale.IsStale() })
	if st.Synced || st.Stale.Kind != core.KindUnavailable || !strings.Contains(st.Stale.Reason, "etcd timeout") {
		t.Fatalf("state while the Service lookup fails: %+v", st)
	}
	for _, u := range w.rec.Updates() {
		if u.State.Synced {
			t.Fatalf("a synced state was published while the Service lookup failed: %+v", u.State)
		}
	}
	w.until(t, "synced once the lookup works", func(s core.State) bool { return s.Synced && !s.Stale.IsStale() })
}

// An unusable endpoint is left out, named and counted; the state stays
// stale while it is there, whatever else changes, and is fresh once it goes.
func TestUnusableEndpointKeepsTheStateStale(t *testing.T) {
	bad := fakeSlice("greeter-bad", "10.244.0.9")
	bad.Endpoints = append(bad.Endpoints, discoveryv1.Endpoint{Addresses: []string{"fd00::1"}}) // IPv6 in an IPv4 slice
	client := fake.NewClientset(service(), fakeSlice("greeter-a", "10.244.0.1"), bad)
	reg := prometheus.NewRegistry()
	w := watchFake(t, client, kubernetes.WithRegisterer(reg))
	st := w.until(t, "published, stale", func(s core.State) bool { return s.Synced && s.Endpoints.Len() == 2 })
	if st.Stale.Kind != core.KindInvalid || !strings.Contains(st.Stale.Reason, `slice greeter-bad endpoint 1: address "fd00::1" is not an IPv4 address`) {
		t.Fatalf("staleness %+v does not name the unusable endpoint", st.Stale)
	}
	if got := addrs(st.Endpoints); got != "10.244.0.1,10.244.0.9" {
		t.Fatalf("endpoints %s: the usable ones of both slices must stay", got)
	}
	if n := gauge(t, reg, "disco_kubernetes_unusable_endpoints"); n != 1 {
		t.Fatalf("unusable endpoints gauge = %v", n)
	}
	w.established(t, "services", "endpointslices")
	ctx := context.Background()
	slices := client.DiscoveryV1().EndpointSlices("demo")
	if _, err := slices.Update(ctx, fakeSlice("greeter-a", "10.244.0.1", "10.244.0.2"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	st = w.until(t, "an unrelated change", func(s core.State) bool { return s.Endpoints.Len() == 3 })
	if st.Stale.Kind != core.KindInvalid {
		t.Fatalf("an unrelated change cleared the stale mark: %+v", st.Stale)
	}
	if _, err := slices.Update(ctx, fakeSlice("greeter-bad", "10.244.0.9"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.until(t, "fresh once the endpoint is fixed", func(s core.State) bool { return !s.Stale.IsStale() && s.Endpoints.Len() == 3 })
	if n := gauge(t, reg, "disco_kubernetes_unusable_endpoints"); n != 0 {
		t.Fatalf("unusable endpoints gauge = %v after the fix", n)
	}
}

// gauge returns the value of the one series of a gauge.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			return mf.Metric[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no single series of %s", name)
	return 0
}

// A deleted Service ends with no endpoints and not found at once, though
// its slices are still there (the garbage collector deletes them after).
func TestDeletedServiceDropsItsEndpoints(t *testing.T) {
	client := fake.NewClientset(service(), fakeSlice("greeter-a", "10.244.0.1"))
	w := watchFake(t, client)
	w.until(t, "synced", func(s core.State) bool { return s.Synced && s.Endpoints.Len() == 1 })
	w.established(t, "services", "endpointslices")
	if err := client.CoreV1().Services("demo").Delete(context.Background(), "greeter", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	st := w.until(t, "no endpoints, not found", func(s core.State) bool { return s.Endpoints.Len() == 0 && s.Stale.IsStale() })
	if st.Stale.Kind != core.KindNotFound || !st.Synced {
		t.Fatalf("after the Service was deleted: %+v", st)
	}
	// Recreated: the slices count again.
	if _, err := client.CoreV1().Services("demo").Create(context.Background(), service(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.until(t, "back", func(s core.State) bool { return s.Endpoints.Len() == 1 && !s.Stale.IsStale() })
}

// A Service created after the client asked for it is noticed at once.
func TestServiceCreatedLaterIsNoticed(t *testing.T) {
	client := fake.NewClientset()
	w := watchFake(t, client)
	if err := w.sub.WaitSynced(context.Background()); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("WaitSynced = %v, want not found", err)
	}
	w.established(t, "services", "endpointslices")
	ctx := context.Background()
	if _, err := client.DiscoveryV1().EndpointSlices("demo").Create(ctx, fakeSlice("greeter-a", "10.244.0.1"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Services("demo").Create(ctx, service(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.until(t, "found", func(s core.State) bool { return s.Synced && s.Endpoints.Len() == 1 && !s.Stale.IsStale() })
}

// Without list and watch on services, the source falls back to get, at the
// configured interval.
func TestServiceLookupFallsBackToGet(t *testing.T) {
	client := fake.NewClientset(fakeSlice("greeter-a", "10.244.0.1"))
	for _, verb := range []string{"list", "watch"} {
		client.PrependReactor(verb, "services", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(corev1.Resource("services"), "", errors.New("no list"))
		})
	}
	w := watchFake(t, client, kubernetes.WithServiceRecheck(20*time.Millisecond))
	if err := w.sub.WaitSynced(context.Background()); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("WaitSynced = %v, want not found (by get)", err)
	}
	if _, err := client.CoreV1().Services("demo").Create(context.Background(), service(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.until(t, "found by the next get", func(s core.State) bool { return s.Synced && s.Endpoints.Len() == 1 })
}

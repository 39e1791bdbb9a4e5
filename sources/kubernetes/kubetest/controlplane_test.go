package kubetest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

func TestMain(m *testing.M) {
	if os.Getenv("KUBETEST_HELPER") == "1" {
		holdControlPlane()
		return
	}
	goleak.VerifyTestMain(m,
		// client-go's and klog's process-wide background goroutines.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreAnyFunction("k8s.io/client-go/util/workqueue.(*Typed[...]).updateUnfinishedWorkLoop"),
	)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func slice(name string, addrs ...string) *discoveryv1.EndpointSlice {
	port, proto, pname := int32(50051), "TCP", "grpc"
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "greeter"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &port, Protocol: (*corev1.Protocol)(&proto)}},
	}
	for _, a := range addrs {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{a}})
	}
	return s
}

func TestEndpointSliceRoundTrip(t *testing.T) {
	t.Parallel()
	cp := kubetest.New(t)
	ctx := ctxFor(t, time.Minute)
	if err := cp.EnsureNamespace(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	// Through the kubeconfig file, as code outside a cluster loads it.
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.DiscoveryV1().EndpointSlices("demo").Create(ctx, slice("greeter-abc", "10.244.1.2", "10.244.1.3"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := cs.DiscoveryV1().EndpointSlices("demo").Get(ctx, "greeter-abc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Endpoints) != 2 || got.Endpoints[1].Addresses[0] != "10.244.1.3" || *got.Ports[0].Name != "grpc" {
		t.Fatalf("read back %+v", got)
	}
	// The API server really validates: loopback addresses are refused.
	_, err = cs.DiscoveryV1().EndpointSlices("demo").Create(ctx, slice("bad", "127.0.0.1"), metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("loopback slice: %v", err)
	}
	out, err := cp.Kubectl(ctx, "get", "endpointslices", "-n", "demo", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list discoveryv1.EndpointSliceList
	if err := json.Unmarshal(out, &list); err != nil || len(list.Items) != 1 || list.Items[0].Name != "greeter-abc" {
		t.Fatalf("kubectl: %v %s", err, out)
	}
}

func TestServiceAccountGetsForbiddenUntilGranted(t *testing.T) {
	t.Parallel()
	cp := kubetest.New(t)
	ctx := ctxFor(t, time.Minute)
	cfg, err := cp.ServiceAccountConfig(ctx, "demo", "client")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cs.DiscoveryV1().EndpointSlices("demo").List(ctx, metav1.ListOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `system:serviceaccount:demo:client" cannot list resource "endpointslices"`) {
		t.Fatalf("list without a role: %v", err)
	}
	rule := rbacv1.PolicyRule{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}}
	if err := cp.Grant(ctx, "demo", "client", "endpointslice-reader", false, rule); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second) // RBAC caches update within moments
	for {
		_, err = cs.DiscoveryV1().EndpointSlices("demo").List(ctx, metav1.ListOptions{})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("list after the grant: %v", err)
	}
	// The Role covers its namespace only.
	if _, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list in another namespace: %v", err)
	}
}

func TestInformerSurvivesAPIServerRestart(t *testing.T) {
	t.Parallel()
	for _, graceful := range []bool{false, true} {
		t.Run(fmt.Sprintf("graceful=%v", graceful), func(t *testing.T) {
			cp := kubetest.New(t)
			ctx := ctxFor(t, 3*time.Minute)
			if err := cp.EnsureNamespace(ctx, "demo"); err != nil {
				t.Fatal(err)
			}
			cs, err := cp.AdminClient()
			if err != nil {
				t.Fatal(err)
			}
			factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace("demo"))
			inf := factory.Discovery().V1().EndpointSlices().Informer()
			var mu sync.Mutex
			seen := map[string]bool{}
			inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
				mu.Lock()
				defer mu.Unlock()
				seen[obj.(*discoveryv1.EndpointSlice).Name] = true
			}})
			stop := make(chan struct{})
			factory.Start(stop)
			t.Cleanup(func() { close(stop); factory.Shutdown() })
			if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
				t.Fatal("informer never synced")
			}
			has := func(name string) bool {
				mu.Lock()
				defer mu.Unlock()
				return seen[name]
			}
			if _, err := cs.DiscoveryV1().EndpointSlices("demo").Create(ctx, slice("before", "10.244.1.2"), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, ctx, func() bool { return has("before") })
			begin := time.Now()
			if err := cp.RestartAPIServer(ctx, graceful); err != nil {
				t.Fatal(err)
			}
			t.Logf("API server restarted in %v", time.Since(begin).Round(time.Millisecond))
			if _, err := cs.DiscoveryV1().EndpointSlices("demo").Create(ctx, slice("after", "10.244.1.3"), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, ctx, func() bool { return has("after") })
		})
	}
}

func waitFor(t *testing.T, ctx context.Context, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatal("condition not met before the deadline")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestEtcdCompactionMakesOldWatchGone(t *testing.T) {
	t.Parallel()
	cp := kubetest.New(t, kubetest.WithWatchCache(false))
	ctx := ctxFor(t, time.Minute)
	if err := cp.EnsureNamespace(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	cs, err := cp.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	created, err := cs.DiscoveryV1().EndpointSlices("demo").Create(ctx, slice("s", "10.244.1.2"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		created.Endpoints[0].Addresses[0] = fmt.Sprintf("10.244.1.%d", 10+i)
		if created, err = cs.DiscoveryV1().EndpointSlices("demo").Update(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := cs.DiscoveryV1().EndpointSlices("demo").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldRV := list.ResourceVersion
	if err := cs.DiscoveryV1().EndpointSlices("demo").Delete(ctx, "s", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.DiscoveryV1().EndpointSlices("demo").Create(ctx, slice("t", "10.244.1.9"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rev, err := cp.CompactEtcd(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("compacted etcd at revision %d; watching from %s", rev, oldRV)
	w, err := cs.DiscoveryV1().EndpointSlices("demo").Watch(ctx, metav1.ListOptions{ResourceVersion: oldRV})
	if err == nil {
		defer w.Stop()
		select {
		case ev := <-w.ResultChan():
			if ev.Type != watch.Error {
				t.Fatalf("watch from a compacted resourceVersion gave %s, want an error", ev.Type)
			}
			err = apierrors.FromObject(ev.Object)
		case <-ctx.Done():
			t.Fatal("no event")
		}
	}
	if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) {
		t.Fatalf("want 410 Gone, got %v", err)
	}
}

func TestEtcdRestart(t *testing.T) {
	t.Parallel()
	cp := kubetest.New(t)
	ctx := ctxFor(t, 2*time.Minute)
	cs, err := cp.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.EnsureNamespace(ctx, "demo"); err != nil {
		t.Fatal(err)
	}
	if err := cp.StopEtcd(false); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = cs.DiscoveryV1().EndpointSlices("demo").Create(short, slice("x", "10.244.1.2"), metav1.CreateOptions{})
	cancel()
	if err == nil {
		t.Fatal("write succeeded without etcd")
	}
	if err := cp.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() bool {
		_, err := cs.DiscoveryV1().EndpointSlices("demo").Create(ctx, slice("x", "10.244.1.2"), metav1.CreateOptions{})
		return err == nil || apierrors.IsAlreadyExists(err)
	})
}

func TestStopRemovesEverything(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, time.Minute)
	cp, err := kubetest.Start(ctx)
	if err != nil {
		if !kubetest.Required() {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	dir := cp.Dir()
	pids, _ := os.ReadDir(dir)
	if len(pids) == 0 {
		t.Fatal("empty run dir")
	}
	cp.Stop()
	cp.Stop()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("run dir still there: %v", err)
	}
}

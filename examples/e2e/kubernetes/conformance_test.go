package kubernetes_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

// kubeHarness runs core's source conformance suite against the Kubernetes
// source and a real API server: each target is a Service with one
// EndpointSlice that Write replaces, Break kills the API server.
type kubeHarness struct {
	env *env
	src *kubernetes.Source
	n   atomic.Int32
}

func (h *kubeHarness) Source() core.Source { return h.src }

func (h *kubeHarness) NewTarget(t *testing.T) core.Target {
	name := fmt.Sprintf("conf-%d", h.n.Add(1))
	h.env.service(name)
	return core.Target{Namespace: h.env.ns, Name: name, Port: "grpc"}
}

func (h *kubeHarness) Write(t *testing.T, tg core.Target, bs []coretest.Backend) {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: tg.Name + "-abc", Labels: map[string]string{discoveryv1.LabelServiceName: tg.Name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{epPort("grpc", 8080)},
		Endpoints:   []discoveryv1.Endpoint{},
	}
	for _, b := range bs {
		if b.Port != 8080 {
			t.Fatalf("harness writes port 8080 only, got %d", b.Port)
		}
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{b.Address},
			Conditions: discoveryv1.EndpointConditions{Ready: new(true)}})
	}
	h.env.apply(s)
}

func (h *kubeHarness) Break(t *testing.T) bool {
	if err := h.env.cp.StopAPIServer(false); err != nil {
		t.Fatal(err)
	}
	return true
}

func (h *kubeHarness) Heal(t *testing.T) {
	if err := h.env.cp.StartAPIServer(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func (h *kubeHarness) Missing(t *testing.T) (core.Target, error, bool) {
	_, err := h.env.cs.CoreV1().Services(h.env.ns).Get(context.Background(), "nosuch", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("service nosuch: %v", err)
	}
	return core.Target{Namespace: h.env.ns, Name: "nosuch", Port: "grpc"}, core.ErrNotFound, true
}

// The API server restarts in the suite: the source relists after its
// backoff (see BENCHMARKS.md).
func (h *kubeHarness) Timeout() time.Duration { return time.Minute }

func (h *kubeHarness) IgnoreGoroutines() []string {
	return []string{"k8s.io/klog/v2.(*flushDaemon)"}
}

func TestSourcePassesTheSourceSuite(t *testing.T) {
	cp := kubetest.New(t)
	e := newEnv(t, cp, "conformance")
	coretest.TestSource(t, &kubeHarness{env: e, src: newSource(t, cp.AdminConfig())})
}

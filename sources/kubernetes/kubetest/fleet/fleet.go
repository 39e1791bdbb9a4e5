// Package fleet plays the part of a Deployment and the EndpointSlice
// controller for tests and the demo: it creates a Service, runs its "pods"
// in network namespaces (podnet), and writes the service's EndpointSlices
// from the pods' states the way the controller does (ready, serving,
// terminating, zone, hints, targetRef), spread over a chosen number of
// slices. The servers inside the pods are the caller's.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	k8s "k8s.io/client-go/kubernetes"

	"github.com/disco-lb/disco/sources/kubernetes/kubetest/podnet"
)

// Fleet is one Service and its pods. Safe for concurrent use.
type Fleet struct {
	cs        k8s.Interface
	net       *podnet.Network
	namespace string
	service   string
	portName  string
	port      int32
	slices    int

	mu    sync.Mutex
	pods  map[string]*Pod
	order int
	rv    map[string]string // slice name -> resourceVersion
}

// Pod is one pod of the fleet and the state the slices show for it.
type Pod struct {
	*podnet.Pod
	UID         string
	Zone        string
	Hints       []string
	ready       bool
	terminating bool
	added       int
}

// New creates namespace (if missing) and a headless Service with one port
// (portName, port), and returns a fleet whose endpoints spread over slices
// EndpointSlices.
func New(ctx context.Context, cs k8s.Interface, n *podnet.Network, namespace, service, portName string, port int32, slices int) (*Fleet, error) {
	if slices < 1 {
		return nil, errors.New("fleet: need at least one slice")
	}
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("fleet: namespace %s: %w", namespace, err)
	}
	_, err = cs.CoreV1().Services(namespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: service},
		Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: portName, Port: port}}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("fleet: service %s/%s: %w", namespace, service, err)
	}
	return &Fleet{cs: cs, net: n, namespace: namespace, service: service, portName: portName, port: port, slices: slices,
		pods: map[string]*Pod{}, rv: map[string]string{}}, nil
}

// AddPod creates a pod (not ready, so not yet routable) in zone, hinted for
// hints. Start its server, then SetReady and Publish.
func (f *Fleet) AddPod(ctx context.Context, name, zone string, hints ...string) (*Pod, error) {
	p, err := f.net.AddPod(ctx, name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	pod := &Pod{Pod: p, UID: fmt.Sprintf("uid-%s-%d", name, f.order), Zone: zone, Hints: hints, added: f.order}
	f.order++
	f.pods[name] = pod
	return pod, nil
}

// Set records a pod's conditions for the next Publish: ready, or (on
// deletion) terminating, which also makes it not ready but serving.
func (f *Fleet) Set(name string, ready, terminating bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.pods[name]; p != nil {
		p.ready, p.terminating = ready && !terminating, terminating
	}
}

// Pod returns the named pod, or nil.
func (f *Fleet) Pod(name string) *Pod {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pods[name]
}

// Names returns the pods' names in creation order.
func (f *Fleet) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ps := f.sortedLocked()
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name()
	}
	return out
}

func (f *Fleet) sortedLocked() []*Pod {
	ps := make([]*Pod, 0, len(f.pods))
	for _, p := range f.pods {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].added < ps[j].added })
	return ps
}

// Publish writes every slice from the pods' current states and returns
// once the API server acknowledged them.
func (f *Fleet) Publish(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	ps := f.sortedLocked()
	api := f.cs.DiscoveryV1().EndpointSlices(f.namespace)
	proto := corev1.ProtocolTCP
	for s := range f.slices {
		name, port := f.portName, f.port
		sl := &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", f.service, s), Labels: map[string]string{discoveryv1.LabelServiceName: f.service}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port, Protocol: &proto}},
			Endpoints:   []discoveryv1.Endpoint{},
		}
		for i, p := range ps {
			if i%f.slices != s {
				continue
			}
			ready, serving, term := p.ready, p.ready || p.terminating, p.terminating
			e := discoveryv1.Endpoint{
				Addresses:  []string{p.IP().String()},
				Conditions: discoveryv1.EndpointConditions{Ready: &ready, Serving: &serving, Terminating: &term},
				TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: f.namespace, Name: p.Name(), UID: types.UID(p.UID)},
			}
			if p.Zone != "" {
				z := p.Zone
				e.Zone = &z
			}
			if len(p.Hints) > 0 {
				e.Hints = &discoveryv1.EndpointHints{}
				for _, h := range p.Hints {
					e.Hints.ForZones = append(e.Hints.ForZones, discoveryv1.ForZone{Name: h})
				}
			}
			sl.Endpoints = append(sl.Endpoints, e)
		}
		var out *discoveryv1.EndpointSlice
		var err error
		if rv := f.rv[sl.Name]; rv != "" {
			sl.ResourceVersion = rv
			out, err = api.Update(ctx, sl, metav1.UpdateOptions{})
		} else {
			out, err = api.Create(ctx, sl, metav1.CreateOptions{})
		}
		if err != nil {
			return fmt.Errorf("fleet: slice %s: %w", sl.Name, err)
		}
		f.rv[sl.Name] = out.ResourceVersion
	}
	return nil
}

// Remove takes a pod out of the slices and deletes it (its namespace and
// address). Stop its server first, or it is killed abruptly.
func (f *Fleet) Remove(ctx context.Context, name string) error {
	f.mu.Lock()
	p := f.pods[name]
	delete(f.pods, name)
	f.mu.Unlock()
	if p == nil {
		return fmt.Errorf("fleet: no pod %s", name)
	}
	if err := f.Publish(ctx); err != nil {
		return err
	}
	return p.Delete()
}

// Drain deletes a pod the way Kubernetes does: terminating (not ready, still
// serving) in its slice; a preStop delay that covers the propagation; stop
// (the server's graceful stop, letting calls in flight finish); then out of
// the slice and gone.
func (f *Fleet) Drain(ctx context.Context, name string, preStop time.Duration, stop func()) error {
	f.Set(name, false, true)
	if err := f.Publish(ctx); err != nil {
		return err
	}
	select {
	case <-time.After(preStop):
	case <-ctx.Done():
		return ctx.Err()
	}
	stop()
	return f.Remove(ctx, name)
}

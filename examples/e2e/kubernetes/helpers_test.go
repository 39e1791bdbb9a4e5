package kubernetes_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/coretest"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
	"github.com/disco-lb/disco/sources/kubernetes/kubetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
	)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// pod is one endpoint of a test slice.
type pod struct {
	name, uid, ip string
	ready         *bool
	serving       *bool
	terminating   *bool
	zone          string
	hints         []string
}

func pods(prefix string, n, first int) []pod {
	out := make([]pod, n)
	for i := range out {
		k := first + i
		out[i] = pod{name: fmt.Sprintf("%s-%d", prefix, k), uid: fmt.Sprintf("%s-uid-%d", prefix, k),
			ip: fmt.Sprintf("10.244.%d.%d", k/200+1, k%200+1)}
	}
	return out
}

func epPort(name string, n int32) discoveryv1.EndpointPort {
	proto := corev1.ProtocolTCP
	return discoveryv1.EndpointPort{Name: &name, Port: &n, Protocol: &proto}
}

func slice(svc, name string, family discoveryv1.AddressType, ports []discoveryv1.EndpointPort, ps ...pod) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: family,
		Ports:       ports,
		Endpoints:   []discoveryv1.Endpoint{},
	}
	for _, p := range ps {
		e := discoveryv1.Endpoint{
			Addresses:  []string{p.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: p.ready, Serving: p.serving, Terminating: p.terminating},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: p.name, UID: types.UID(p.uid)},
		}
		if p.zone != "" {
			e.Zone = &p.zone
		}
		if p.hints != nil {
			e.Hints = &discoveryv1.EndpointHints{}
			for _, z := range p.hints {
				e.Hints.ForZones = append(e.Hints.ForZones, discoveryv1.ForZone{Name: z})
			}
		}
		s.Endpoints = append(s.Endpoints, e)
	}
	return s
}

var grpcPort = []discoveryv1.EndpointPort{epPort("grpc", 50051)}

// env is a namespace of a real control plane with an admin client.
type env struct {
	t  testing.TB
	cp *kubetest.ControlPlane
	cs *k8s.Clientset
	ns string
}

func newEnv(t *testing.T, cp *kubetest.ControlPlane, ns string) *env {
	t.Helper()
	ctx := ctxFor(t, time.Minute)
	if err := cp.EnsureNamespace(ctx, ns); err != nil {
		t.Fatal(err)
	}
	cs, err := cp.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, cp: cp, cs: cs, ns: ns}
}

func (e *env) service(name string) {
	e.t.Helper()
	_, err := e.cs.CoreV1().Services(e.ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone,
			Ports: []corev1.ServicePort{{Name: "grpc", Port: 50051, TargetPort: intstr.FromString("grpc")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
}

// apply creates or replaces a slice.
func (e *env) apply(s *discoveryv1.EndpointSlice) {
	e.t.Helper()
	api := e.cs.DiscoveryV1().EndpointSlices(e.ns)
	ctx := context.Background()
	cur, err := api.Get(ctx, s.Name, metav1.GetOptions{})
	if err == nil {
		s.ResourceVersion = cur.ResourceVersion
		_, err = api.Update(ctx, s, metav1.UpdateOptions{})
	} else {
		_, err = api.Create(ctx, s, metav1.CreateOptions{})
	}
	if err != nil {
		e.t.Fatalf("apply slice %s: %v", s.Name, err)
	}
}

func (e *env) delete(name string) {
	e.t.Helper()
	if err := e.cs.DiscoveryV1().EndpointSlices(e.ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// watcher subscribes a recorder to one target through a core hub.
type watcher struct {
	t   *testing.T
	hub *core.Hub
	sub *core.Subscription
	rec *coretest.Recorder
	tgt core.Target
}

func newSource(t testing.TB, cfg *rest.Config, opts ...kubernetes.Option) *kubernetes.Source {
	t.Helper()
	src, err := kubernetes.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func watchTarget(t *testing.T, src core.Source, target core.Target) *watcher {
	t.Helper()
	hub := coretest.Hub(t, src)
	rec := coretest.NewRecorder()
	sub, err := hub.Subscribe("recorder", rec, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close() })
	return &watcher{t: t, hub: hub, sub: sub, rec: rec, tgt: target}
}

// waitState waits until the latest accepted state satisfies cond.
func (w *watcher) waitState(ctx context.Context, what string, cond func(core.State) bool) core.State {
	w.t.Helper()
	last, err := w.rec.WaitState(ctx, w.tgt, cond)
	if err != nil {
		w.t.Fatalf("%s: %v; last state: synced=%v stale=%+v endpoints=%s", what, err, last.Synced, last.Stale, describe(last.Endpoints))
	}
	return last
}

// describe lists "ip:port" of a set, sorted by ID, capped for messages.
func describe(s core.Set) string {
	var out []string
	for e := range s.All() {
		out = append(out, strings.Join(e.HostPorts(), "+"))
		if len(out) == 12 {
			out = append(out, fmt.Sprintf("... (%d in all)", s.Len()))
			break
		}
	}
	return "[" + strings.Join(out, " ") + "]"
}

// hasExactly reports whether the set holds exactly these pods at port.
func hasExactly(s core.Set, port uint16, ps ...pod) bool {
	if s.Len() != len(ps) {
		return false
	}
	for _, p := range ps {
		e, ok := s.Get(p.uid)
		if !ok || e.Port != port || e.Addresses[0] != p.ip || e.Name != p.name {
			return false
		}
	}
	return true
}

// proxy forwards loopback TCP to the API server and can cut every
// connection and refuse new ones, to disconnect one client only.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.serve)
	t.Cleanup(func() {
		ln.Close()
		p.setCut(true)
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { io.Copy(up, c); up.Close(); c.Close() })
		p.wg.Go(func() { io.Copy(c, up); up.Close(); c.Close() })
	}
}

// setCut closes every connection and refuses new ones (true), or lets
// connections through again (false).
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

var (
	v4 = discoveryv1.AddressTypeIPv4
	v6 = discoveryv1.AddressTypeIPv6
)

// metric finds the one series of name with all the given labels.
func metric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	m := findMetric(t, reg, name, labels)
	if m == nil {
		t.Fatalf("no series %s%v", name, labels)
	}
	return m
}

// findMetric is metric, nil if there is no such series (yet).
func findMetric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	return metric(t, reg, name, labels).GetCounter().GetValue()
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	return metric(t, reg, name, labels).GetGauge().GetValue()
}

// seriesOf counts the series carrying namespace ns.
func seriesOf(t *testing.T, reg *prometheus.Registry, ns string) int {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "namespace" && lp.GetValue() == ns {
					n++
				}
			}
		}
	}
	return n
}

func testLogger(t *testing.T) *zap.Logger { return zaptest.NewLogger(t) }

package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/disco-lb/disco/core"
)

// Option configures a Source.
type Option func(*options)

type options struct {
	namespace     string
	log           *zap.Logger
	registerer    prometheus.Registerer
	selector      string
	serviceLookup bool
	recheck       time.Duration
}

// WithNamespace sets the namespace of targets that name none. Default: the
// namespace LoadConfig found (the pod's own in a cluster, the kubeconfig
// context's outside), else "default".
func WithNamespace(ns string) Option { return func(o *options) { o.namespace = ns } }

// WithLogger sets the logger (nil: no-op).
func WithLogger(l *zap.Logger) Option {
	return func(o *options) {
		if l != nil {
			o.log = l
		}
	}
}

// WithRegisterer registers the source's Prometheus metrics with r (never the
// global registry unless you pass it). Series of a service are removed when
// its last target goes.
func WithRegisterer(r prometheus.Registerer) Option { return func(o *options) { o.registerer = r } }

// WithLabelSelector adds a label selector, ANDed with
// kubernetes.io/service-name=<service>, to every slice watch (for example to
// consider only slices managed by one controller).
func WithLabelSelector(sel string) Option { return func(o *options) { o.selector = sel } }

// WithServiceLookup turns the Service check on (the default) or off. On: a
// service with no slice is looked up, and a missing Service makes the target
// fail with core.ErrNotFound (needs `get` on services; without that
// permission, or with the check off, it is "empty and synced").
func WithServiceLookup(on bool) Option { return func(o *options) { o.serviceLookup = on } }

// LoadConfig finds the API server the way kubectl does: the kubeconfig file
// at path if given, else $KUBECONFIG or ~/.kube/config, else the in-cluster
// service account. It returns the config and the namespace to default to:
// the kubeconfig context's, or the pod's own in a cluster.
func LoadConfig(path string) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = path
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes: load config: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("kubernetes: namespace from config: %w", err)
	}
	return cfg, ns, nil
}

// Source discovers endpoints of Kubernetes services from their
// EndpointSlices. It implements core.Source; a target is a service, its
// namespace and a port (see ParseTarget). Targets of one service share one
// watch of its slices, started with the first and stopped with the last.
type Source struct {
	client  k8s.Interface
	opts    options
	metrics *metrics

	mu       sync.Mutex
	services map[serviceKey]*serviceWatch
}

var _ core.Source = (*Source)(nil)

type serviceKey struct{ namespace, name string }

// New returns a source that talks to the API server of cfg (copied; the copy
// asks for protobuf). It starts nothing: watches start when targets are
// watched. Metrics are registered now if a registerer is given.
func New(cfg *rest.Config, opts ...Option) (*Source, error) {
	c := rest.CopyConfig(cfg)
	c.ContentType = "application/vnd.kubernetes.protobuf"
	c.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	if c.UserAgent == "" {
		c.UserAgent = "disco-kubernetes-source"
	}
	client, err := k8s.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes: client: %w", err)
	}
	return NewForClient(client, opts...)
}

// NewForClient returns a source over an existing clientset (tests use the
// fake one); New is the usual constructor.
func NewForClient(client k8s.Interface, opts ...Option) (*Source, error) {
	o := options{log: zap.NewNop(), serviceLookup: true, recheck: 30 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if o.namespace == "" {
		o.namespace = "default"
	}
	m, err := newMetrics(o.registerer)
	if err != nil {
		return nil, err
	}
	return &Source{client: client, opts: o, metrics: m, services: map[serviceKey]*serviceWatch{}}, nil
}

// Namespace returns the namespace given to targets that name none.
func (s *Source) Namespace() string { return s.opts.namespace }

// Target parses text with ParseTarget and fills in the default namespace.
func (s *Source) Target(text string) (core.Target, error) {
	t, err := ParseTarget(text)
	if err != nil {
		return t, err
	}
	if t.Namespace == "" {
		t.Namespace = s.opts.namespace
	}
	return t, nil
}

// Watch implements core.Source: it publishes the endpoints of the service's
// slices for the target's port until ctx ends.
func (s *Source) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
	if t.Namespace == "" {
		t.Namespace = s.opts.namespace
	}
	if err := validateTarget(t); err != nil {
		return fmt.Errorf("kubernetes: target %s: %v: %w", t, err, core.ErrInvalid)
	}
	sw := s.acquire(serviceKey{t.Namespace, t.Name})
	v := sw.addView(t, pub)
	<-ctx.Done()
	sw.removeView(v)
	s.release(sw)
	return nil
}

func (s *Source) acquire(k serviceKey) *serviceWatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	sw := s.services[k]
	if sw == nil {
		sw = newServiceWatch(s, k)
		s.services[k] = sw
		sw.start()
	}
	sw.refs++
	return sw
}

func (s *Source) release(sw *serviceWatch) {
	s.mu.Lock()
	sw.refs--
	last := sw.refs == 0
	if last {
		delete(s.services, sw.key)
	}
	s.mu.Unlock()
	if last {
		sw.stop()
	}
}

// serviceWatch runs one reflector over the slices of one service and keeps
// a view per watched target (port). It is the reflector's store: the
// reflector calls Add/Update/Delete/Replace from its goroutine, in order.
type serviceWatch struct {
	src  *Source
	key  serviceKey
	refs int // guarded by src.mu
	log  *zap.Logger

	cancel context.CancelFunc
	done   chan struct{}
	lookup chan struct{} // wakes the service-existence checker

	mu      sync.Mutex
	in      *interner
	slices  map[string]*sliceData
	synced  bool // a list has been applied
	failing error
	missing error // the Service is known not to exist
	checked bool  // existence known for the current empty state
	views   map[*targetView]struct{}
}

type targetView struct {
	t   core.Target
	pub core.Publisher
	v   *view
}

func newServiceWatch(s *Source, k serviceKey) *serviceWatch {
	return &serviceWatch{
		src: s, key: k,
		log:    s.opts.log.With(zap.String("namespace", k.namespace), zap.String("service", k.name)),
		done:   make(chan struct{}),
		lookup: make(chan struct{}, 1),
		in:     newInterner(),
		slices: map[string]*sliceData{},
		views:  map[*targetView]struct{}{},
	}
}

func (sw *serviceWatch) selector() string {
	sel := discoveryv1.LabelServiceName + "=" + sw.key.name
	if extra := sw.src.opts.selector; extra != "" {
		sel += "," + extra
	}
	return sel
}

func (sw *serviceWatch) start() {
	ctx, cancel := context.WithCancel(context.Background())
	sw.cancel = cancel
	slicesAPI := sw.src.client.DiscoveryV1().EndpointSlices(sw.key.namespace)
	calls := 0 // watch calls; only the reflector's goroutine touches it
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = sw.selector()
			l, err := slicesAPI.List(ctx, o)
			if err != nil {
				sw.fail("list", err)
			}
			return l, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sw.selector()
			if calls++; calls > 1 {
				// Every watch after the first: client-go turns EOFs and
				// timeouts into empty watches, so a dead connection would go
				// unnoticed. Check the API server answers (a list served
				// from its cache, limit 1).
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := slicesAPI.List(pctx, metav1.ListOptions{LabelSelector: o.LabelSelector, Limit: 1, ResourceVersion: "0"})
				cancel()
				if err != nil {
					sw.fail("list", err)
					return nil, err
				}
				// After a failure, reconcile with a complete list before the
				// state is fresh again: a watch-list ends in one, a plain
				// resumed watch is turned into a relist.
				listing := o.SendInitialEvents != nil && *o.SendInitialEvents
				if !listing && sw.isFailing() {
					return nil, apierrors.NewResourceExpired("disco: relisting to reconcile after a failure")
				}
			}
			w, err := slicesAPI.Watch(ctx, o)
			if err != nil {
				sw.fail("watch", err)
			}
			return w, err
		},
	}
	discard := logr.Discard() // errors are classified and logged by fail
	r := cache.NewReflectorWithOptions(lw, &discoveryv1.EndpointSlice{}, sw, cache.ReflectorOptions{
		Name: "disco " + sw.key.namespace + "/" + sw.key.name, Logger: &discard,
	})
	sw.log.Info("kubernetes: watching endpointslices", zap.String("selector", sw.selector()))
	var wg sync.WaitGroup
	wg.Go(func() { r.RunWithContext(klog.NewContext(ctx, discard)) })
	if sw.src.opts.serviceLookup {
		wg.Go(func() { sw.checkService(ctx) })
	}
	go func() { wg.Wait(); close(sw.done) }()
}

func (sw *serviceWatch) stop() {
	sw.cancel()
	<-sw.done
	sw.src.metrics.forgetService(sw.key)
	sw.log.Info("kubernetes: stopped watching endpointslices")
}

// addView starts serving target t through pub, from the slices known now.
func (sw *serviceWatch) addView(t core.Target, pub core.Publisher) *targetView {
	tv := &targetView{t: t, pub: pub, v: newView(t.Port)}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(sw.slices)) {
		if _, err := tv.v.apply(sw.slices, name, nil, sw.slices[name]); err != nil {
			sw.log.Error("kubernetes: bad slice", zap.Error(err))
		}
	}
	sw.views[tv] = struct{}{}
	if sw.synced {
		sw.publishLocked(tv, time.Time{})
	}
	if sw.failing != nil {
		pub.Fail(sw.failing)
	}
	return tv
}

func (sw *serviceWatch) removeView(tv *targetView) {
	sw.mu.Lock()
	delete(sw.views, tv)
	sw.mu.Unlock()
	sw.src.metrics.forgetTarget(tv.t)
}

// publishLocked publishes a view's state: its set, or the reason it has
// none (ambiguous port, missing Service). trigger, if set, is when the
// change that caused this began (for the latency histogram).
func (sw *serviceWatch) publishLocked(tv *targetView, trigger time.Time) {
	if err := tv.v.ambiguity(); err != nil && tv.v.set.Len() == 0 {
		tv.pub.Fail(err)
		return
	}
	if len(sw.slices) == 0 && sw.src.opts.serviceLookup {
		if sw.missing != nil {
			tv.pub.Fail(sw.missing)
			return
		}
		if !sw.checked {
			return // the checker publishes once it knows whether the Service exists
		}
	}
	tv.pub.Publish(tv.v.set)
	sw.src.metrics.published(tv.t, tv.v.set, trigger)
}

// change applies a slice change to every view and publishes those that
// changed (all of them when refresh is set, e.g. after a relist).
func (sw *serviceWatch) change(name string, d *sliceData, refresh bool) {
	trigger := time.Time{}
	if d != nil {
		trigger = d.trigger
	}
	old := sw.slices[name]
	if d == nil {
		delete(sw.slices, name)
	} else {
		sw.slices[name] = d
	}
	if len(sw.slices) == 0 {
		sw.wakeLookupLocked()
	} else {
		sw.missing = nil
	}
	for tv := range sw.views {
		changed, err := tv.v.apply(sw.slices, name, old, d)
		if err != nil {
			sw.log.Error("kubernetes: bad slice", zap.Error(err))
			tv.pub.Fail(err)
			continue
		}
		if sw.synced && (changed || refresh) {
			sw.publishLocked(tv, trigger)
		}
	}
}

// wakeLookupLocked asks the checker whether the Service of an empty service
// exists; until it answers, views of it publish nothing.
func (sw *serviceWatch) wakeLookupLocked() {
	sw.checked = false
	select {
	case sw.lookup <- struct{}{}:
	default:
	}
}

// Add implements cache.ReflectorStore.
func (sw *serviceWatch) Add(obj any) error { return sw.Update(obj) }

// Update implements cache.ReflectorStore.
func (sw *serviceWatch) Update(obj any) error {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return fmt.Errorf("kubernetes: unexpected object %T", obj)
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.src.metrics.event(sw.key, "update")
	sw.change(s.Name, compact(s, sw.in), false)
	return nil
}

// Delete implements cache.ReflectorStore.
func (sw *serviceWatch) Delete(obj any) error {
	var name string
	switch o := obj.(type) {
	case *discoveryv1.EndpointSlice:
		name = o.Name
	case cache.DeletedFinalStateUnknown:
		_, name, _ = strings.Cut(o.Key, "/")
	default:
		return fmt.Errorf("kubernetes: unexpected object %T", obj)
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.src.metrics.event(sw.key, "delete")
	if _, ok := sw.slices[name]; ok {
		sw.change(name, nil, false)
	}
	return nil
}

// Replace implements cache.ReflectorStore: a complete list (initial, or a
// relist after a broken watch or 410 Gone). The state is reconciled to
// exactly the list: slices not in it are removed, so no ghost survives, and
// the target is fresh again.
func (sw *serviceWatch) Replace(list []any, _ string) error {
	next := make(map[string]*discoveryv1.EndpointSlice, len(list))
	for _, obj := range list {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return fmt.Errorf("kubernetes: unexpected object %T", obj)
		}
		next[s.Name] = s
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.src.metrics.event(sw.key, "list")
	wasSynced, wasFailing := sw.synced, sw.failing
	sw.synced = false // publish once, below, with everything applied
	for name := range sw.slices {
		if next[name] == nil {
			sw.change(name, nil, false)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(next)) {
		sw.change(name, compact(next[name], sw.in), false)
	}
	if len(sw.slices) == 0 {
		sw.wakeLookupLocked()
	}
	sw.synced, sw.failing = true, nil
	if !wasSynced {
		sw.log.Info("kubernetes: synced", zap.Int("slices", len(sw.slices)))
	} else if wasFailing != nil {
		sw.log.Info("kubernetes: watch recovered; state reconciled", zap.Int("slices", len(sw.slices)))
	}
	for tv := range sw.views {
		sw.publishLocked(tv, time.Time{})
	}
	return nil
}

// Resync implements cache.ReflectorStore (no periodic resync is configured).
func (sw *serviceWatch) Resync() error { return nil }

func (sw *serviceWatch) isFailing() bool {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.failing != nil
}

// fail classifies a list or watch error and marks every target of the
// service stale (the last good state stays).
func (sw *serviceWatch) fail(verb string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	var e error
	res := "endpointslices.discovery.k8s.io"
	switch {
	case apierrors.IsForbidden(err):
		e = fmt.Errorf("kubernetes: forbidden to %s %s in namespace %s: grant verbs list and watch on endpointslices (apiGroup discovery.k8s.io) to this client's ServiceAccount with a Role (see README, RBAC): %v: %w",
			verb, res, sw.key.namespace, err, core.ErrForbidden)
	case apierrors.IsUnauthorized(err):
		e = fmt.Errorf("kubernetes: %s %s in namespace %s: credentials rejected (expired or wrong token?): %v: %w",
			verb, res, sw.key.namespace, err, core.ErrForbidden)
	default:
		e = fmt.Errorf("kubernetes: %s %s in namespace %s: %v: %w", verb, res, sw.key.namespace, err, core.ErrUnavailable)
	}
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.failing == nil || sw.failing.Error() != e.Error() {
		sw.log.Warn("kubernetes: endpointslice watch failing; keeping the last good state", zap.Error(e))
	}
	sw.failing = e
	sw.src.metrics.failure(sw.key, core.KindOf(e))
	for tv := range sw.views {
		tv.pub.Fail(e)
	}
}

// checkService looks the Service up whenever the service has no slice, so a
// missing Service is an error rather than an empty set, and looks again
// every recheck interval while it is missing.
func (sw *serviceWatch) checkService(ctx context.Context) {
	tick := time.NewTicker(sw.src.opts.recheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sw.lookup:
		case <-tick.C:
			sw.mu.Lock()
			again := len(sw.slices) == 0 && sw.missing != nil
			sw.mu.Unlock()
			if !again {
				continue
			}
		}
		_, err := sw.src.client.CoreV1().Services(sw.key.namespace).Get(ctx, sw.key.name, metav1.GetOptions{})
		if ctx.Err() != nil {
			return
		}
		sw.mu.Lock()
		if len(sw.slices) > 0 {
			sw.mu.Unlock()
			continue
		}
		switch {
		case apierrors.IsNotFound(err):
			sw.missing = fmt.Errorf("kubernetes: service %s/%s not found: %w", sw.key.namespace, sw.key.name, core.ErrNotFound)
		case err != nil && apierrors.IsForbidden(err):
			sw.missing = nil
			sw.log.Info("kubernetes: may not get services; a service without endpointslices counts as empty", zap.Error(err))
		default:
			sw.missing = nil
		}
		sw.checked = true
		if sw.synced {
			for tv := range sw.views {
				sw.publishLocked(tv, time.Time{})
			}
		}
		sw.mu.Unlock()
	}
}

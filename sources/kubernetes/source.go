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
	client   k8s.Interface
	opts     options
	metrics  *metrics
	services *core.Shared[serviceKey, *serviceSlices] // one reflector per watched service
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
	src := &Source{client: client, opts: o, metrics: m}
	src.services = core.NewShared(func(k serviceKey) *serviceSlices {
		ss := newServiceSlices(src, k)
		ss.start()
		return ss
	}, func(_ serviceKey, ss *serviceSlices) { ss.stop() }, 0)
	return src, nil
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
	k := serviceKey{t.Namespace, t.Name}
	ss, err := s.services.Acquire(k)
	if err != nil {
		return err
	}
	defer s.services.Release(k)
	v := ss.addView(t, pub)
	<-ctx.Done()
	ss.removeView(v)
	return nil
}

// serviceSlices runs one reflector over the slices of one service and keeps
// a view per watched target (port). It is the reflector's store: the
// reflector calls Add/Update/Delete/Replace from its goroutine, in order.
type serviceSlices struct {
	src *Source
	key serviceKey
	log *zap.Logger

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

func newServiceSlices(s *Source, k serviceKey) *serviceSlices {
	return &serviceSlices{
		src: s, key: k,
		log:    s.opts.log.With(zap.String("namespace", k.namespace), zap.String("service", k.name)),
		done:   make(chan struct{}),
		lookup: make(chan struct{}, 1),
		in:     newInterner(),
		slices: map[string]*sliceData{},
		views:  map[*targetView]struct{}{},
	}
}

func (ss *serviceSlices) selector() string {
	sel := discoveryv1.LabelServiceName + "=" + ss.key.name
	if extra := ss.src.opts.selector; extra != "" {
		sel += "," + extra
	}
	return sel
}

func (ss *serviceSlices) start() {
	ctx, cancel := context.WithCancel(context.Background())
	ss.cancel = cancel
	slicesAPI := ss.src.client.DiscoveryV1().EndpointSlices(ss.key.namespace)
	calls := 0 // watch calls; only the reflector's goroutine touches it
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = ss.selector()
			l, err := slicesAPI.List(ctx, o)
			if err != nil {
				ss.fail("list", err)
			}
			return l, err
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = ss.selector()
			if calls++; calls > 1 {
				// Every watch after the first: client-go turns EOFs and
				// timeouts into empty watches, so a dead connection would go
				// unnoticed. Check the API server answers (a list served
				// from its cache, limit 1).
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := slicesAPI.List(pctx, metav1.ListOptions{LabelSelector: o.LabelSelector, Limit: 1, ResourceVersion: "0"})
				cancel()
				if err != nil {
					ss.fail("list", err)
					return nil, err
				}
				// After a failure, reconcile with a complete list before the
				// state is fresh again: a watch-list ends in one, a plain
				// resumed watch is turned into a relist.
				listing := o.SendInitialEvents != nil && *o.SendInitialEvents
				if !listing && ss.isFailing() {
					return nil, apierrors.NewResourceExpired("disco: relisting to reconcile after a failure")
				}
			}
			w, err := slicesAPI.Watch(ctx, o)
			if err != nil {
				ss.fail("watch", err)
			}
			return w, err
		},
	}
	discard := logr.Discard() // errors are classified and logged by fail
	r := cache.NewReflectorWithOptions(lw, &discoveryv1.EndpointSlice{}, ss, cache.ReflectorOptions{
		Name: "disco " + ss.key.namespace + "/" + ss.key.name, Logger: &discard,
	})
	ss.log.Info("kubernetes: watching endpointslices", zap.String("selector", ss.selector()))
	var wg sync.WaitGroup
	wg.Go(func() { r.RunWithContext(klog.NewContext(ctx, discard)) })
	if ss.src.opts.serviceLookup {
		wg.Go(func() { ss.checkService(ctx) })
	}
	go func() { wg.Wait(); close(ss.done) }()
}

func (ss *serviceSlices) stop() {
	ss.cancel()
	<-ss.done
	ss.src.metrics.forgetService(ss.key)
	ss.log.Info("kubernetes: stopped watching endpointslices")
}

// addView starts serving target t through pub, from the slices known now.
func (ss *serviceSlices) addView(t core.Target, pub core.Publisher) *targetView {
	tv := &targetView{t: t, pub: pub, v: newView(t.Port)}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, name := range slices.Sorted(maps.Keys(ss.slices)) {
		if _, err := tv.v.apply(ss.slices, name, nil, ss.slices[name]); err != nil {
			ss.log.Error("kubernetes: bad slice", zap.Error(err))
		}
	}
	ss.views[tv] = struct{}{}
	if ss.synced {
		ss.publishLocked(tv, time.Time{})
	}
	if ss.failing != nil {
		pub.Fail(ss.failing)
	}
	return tv
}

func (ss *serviceSlices) removeView(tv *targetView) {
	ss.mu.Lock()
	delete(ss.views, tv)
	ss.mu.Unlock()
	ss.src.metrics.forgetTarget(tv.t)
}

// publishLocked publishes a view's state: its set, or the reason it has
// none (ambiguous port, missing Service). trigger, if set, is when the
// change that caused this began (for the latency histogram).
func (ss *serviceSlices) publishLocked(tv *targetView, trigger time.Time) {
	if err := tv.v.ambiguity(); err != nil && tv.v.set.Len() == 0 {
		tv.pub.Fail(err)
		return
	}
	if len(ss.slices) == 0 && ss.src.opts.serviceLookup {
		if ss.missing != nil {
			tv.pub.Fail(ss.missing)
			return
		}
		if !ss.checked {
			return // the checker publishes once it knows whether the Service exists
		}
	}
	tv.pub.Publish(tv.v.set)
	ss.src.metrics.published(tv.t, tv.v.set, trigger)
}

// change applies a slice change to every view and publishes those that
// changed (all of them when refresh is set, e.g. after a relist).
func (ss *serviceSlices) change(name string, d *sliceData, refresh bool) {
	trigger := time.Time{}
	if d != nil {
		trigger = d.trigger
	}
	old := ss.slices[name]
	if d == nil {
		delete(ss.slices, name)
	} else {
		ss.slices[name] = d
	}
	if len(ss.slices) == 0 {
		ss.wakeLookupLocked()
	} else {
		ss.missing = nil
	}
	for tv := range ss.views {
		changed, err := tv.v.apply(ss.slices, name, old, d)
		if err != nil {
			ss.log.Error("kubernetes: bad slice", zap.Error(err))
			tv.pub.Fail(err)
			continue
		}
		if ss.synced && (changed || refresh) {
			ss.publishLocked(tv, trigger)
		}
	}
}

// wakeLookupLocked asks the checker whether the Service of an empty service
// exists; until it answers, views of it publish nothing.
func (ss *serviceSlices) wakeLookupLocked() {
	ss.checked = false
	select {
	case ss.lookup <- struct{}{}:
	default:
	}
}

// Add implements cache.ReflectorStore.
func (ss *serviceSlices) Add(obj any) error { return ss.Update(obj) }

// Update implements cache.ReflectorStore.
func (ss *serviceSlices) Update(obj any) error {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return fmt.Errorf("kubernetes: unexpected object %T", obj)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.src.metrics.event(ss.key, "update")
	ss.change(s.Name, compact(s, ss.in), false)
	return nil
}

// Delete implements cache.ReflectorStore.
func (ss *serviceSlices) Delete(obj any) error {
	var name string
	switch o := obj.(type) {
	case *discoveryv1.EndpointSlice:
		name = o.Name
	case cache.DeletedFinalStateUnknown:
		_, name, _ = strings.Cut(o.Key, "/")
	default:
		return fmt.Errorf("kubernetes: unexpected object %T", obj)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.src.metrics.event(ss.key, "delete")
	if _, ok := ss.slices[name]; ok {
		ss.change(name, nil, false)
	}
	return nil
}

// Replace implements cache.ReflectorStore: a complete list (initial, or a
// relist after a broken watch or 410 Gone). The state is reconciled to
// exactly the list: slices not in it are removed, so no ghost survives, and
// the target is fresh again.
func (ss *serviceSlices) Replace(list []any, _ string) error {
	next := make(map[string]*discoveryv1.EndpointSlice, len(list))
	for _, obj := range list {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return fmt.Errorf("kubernetes: unexpected object %T", obj)
		}
		next[s.Name] = s
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.src.metrics.event(ss.key, "list")
	wasSynced, wasFailing := ss.synced, ss.failing
	ss.synced = false // publish once, below, with everything applied
	for name := range ss.slices {
		if next[name] == nil {
			ss.change(name, nil, false)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(next)) {
		ss.change(name, compact(next[name], ss.in), false)
	}
	if len(ss.slices) == 0 {
		ss.wakeLookupLocked()
	}
	ss.synced, ss.failing = true, nil
	if !wasSynced {
		ss.log.Info("kubernetes: synced", zap.Int("slices", len(ss.slices)))
	} else if wasFailing != nil {
		ss.log.Info("kubernetes: watch recovered; state reconciled", zap.Int("slices", len(ss.slices)))
	}
	for tv := range ss.views {
		ss.publishLocked(tv, time.Time{})
	}
	return nil
}

// Resync implements cache.ReflectorStore (no periodic resync is configured).
func (ss *serviceSlices) Resync() error { return nil }

func (ss *serviceSlices) isFailing() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.failing != nil
}

// fail classifies a list or watch error and marks every target of the
// service stale (the last good state stays).
func (ss *serviceSlices) fail(verb string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	var e error
	res := "endpointslices.discovery.k8s.io"
	switch {
	case apierrors.IsForbidden(err):
		e = fmt.Errorf("kubernetes: forbidden to %s %s in namespace %s: grant verbs list and watch on endpointslices (apiGroup discovery.k8s.io) to this client's ServiceAccount with a Role (see README, RBAC): %v: %w",
			verb, res, ss.key.namespace, err, core.ErrForbidden)
	case apierrors.IsUnauthorized(err):
		e = fmt.Errorf("kubernetes: %s %s in namespace %s: credentials rejected (expired or wrong token?): %v: %w",
			verb, res, ss.key.namespace, err, core.ErrForbidden)
	default:
		e = fmt.Errorf("kubernetes: %s %s in namespace %s: %v: %w", verb, res, ss.key.namespace, err, core.ErrUnavailable)
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.failing == nil || ss.failing.Error() != e.Error() {
		ss.log.Warn("kubernetes: endpointslice watch failing; keeping the last good state", zap.Error(e))
	}
	ss.failing = e
	ss.src.metrics.failure(ss.key, core.KindOf(e))
	for tv := range ss.views {
		tv.pub.Fail(e)
	}
}

// checkService looks the Service up whenever the service has no slice, so a
// missing Service is an error rather than an empty set, and looks again
// every recheck interval while it is missing.
func (ss *serviceSlices) checkService(ctx context.Context) {
	tick := time.NewTicker(ss.src.opts.recheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ss.lookup:
		case <-tick.C:
			ss.mu.Lock()
			again := len(ss.slices) == 0 && ss.missing != nil
			ss.mu.Unlock()
			if !again {
				continue
			}
		}
		_, err := ss.src.client.CoreV1().Services(ss.key.namespace).Get(ctx, ss.key.name, metav1.GetOptions{})
		if ctx.Err() != nil {
			return
		}
		ss.mu.Lock()
		if len(ss.slices) > 0 {
			ss.mu.Unlock()
			continue
		}
		switch {
		case apierrors.IsNotFound(err):
			ss.missing = fmt.Errorf("kubernetes: service %s/%s not found: %w", ss.key.namespace, ss.key.name, core.ErrNotFound)
		case err != nil && apierrors.IsForbidden(err):
			ss.missing = nil
			ss.log.Info("kubernetes: may not get services; a service without endpointslices counts as empty", zap.Error(err))
		default:
			ss.missing = nil
		}
		ss.checked = true
		if ss.synced {
			for tv := range ss.views {
				ss.publishLocked(tv, time.Time{})
			}
		}
		ss.mu.Unlock()
	}
}

package kubernetes

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/kit"
)

// Option configures a Source. A value out of range makes New fail with an
// error naming the option and what it allows.
type Option = kit.Option[*options]

type options struct {
	kit.Common    // WithLogger, WithBackoff
	namespace     string
	registerer    prometheus.Registerer
	selector      string
	serviceLookup bool
	recheck       time.Duration
}

// WithNamespace sets the namespace of targets that name none. Default: the
// namespace LoadConfig found (the pod's own in a cluster, the kubeconfig
// context's outside), else "default".
func WithNamespace(ns string) Option {
	return func(o *options) error {
		if ns != "" {
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				return &kit.OptionError{Option: "WithNamespace", Value: fmt.Sprintf("%q", ns), Want: "a namespace name (" + strings.Join(errs, "; ") + ")"}
			}
		}
		o.namespace = ns
		return nil
	}
}

// WithLogger sets the logger (nil: none).
var WithLogger = kit.WithLogger[*options]

// WithRegisterer registers the source's Prometheus metrics with r (never the
// global registry unless you pass it). Series of a service are removed when
// its last target goes.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(o *options) error { o.registerer = r; return nil }
}

// WithLabelSelector adds a label selector, ANDed with
// kubernetes.io/service-name=<service>, to every slice watch (for example to
// consider only slices managed by one controller). One that does not parse
// is an error of New.
func WithLabelSelector(sel string) Option {
	return func(o *options) error {
		if _, err := labels.Parse(sel); err != nil {
			return &kit.OptionError{Option: "WithLabelSelector", Value: fmt.Sprintf("%q", sel), Want: "a label selector (" + err.Error() + ")"}
		}
		o.selector = sel
		return nil
	}
}

// WithServiceLookup turns the Service check on (the default) or off. On,
// the source watches the target's Service itself (list and watch on
// services, for that one name): a Service that does not exist, or is
// deleted, is a core.ErrNotFound with no endpoints, whatever slices remain
// (the garbage collector deletes them after the Service), and one created
// later is noticed at once. Without list/watch permission it falls back to
// get every WithServiceRecheck interval; without get, or with the check
// off, a service without slices is "empty and synced".
func WithServiceLookup(on bool) Option {
	return func(o *options) error { o.serviceLookup = on; return nil }
}

// WithServiceRecheck sets how often the Service is looked up with get when
// the source may not list and watch services (more than 0, at most 1h;
// default 10s).
func WithServiceRecheck(d time.Duration) Option {
	return kit.Checked(kit.Positive("WithServiceRecheck", d, time.Hour), func(o *options) { o.recheck = d })
}

// WithBackoff sets the bounds of the jittered backoff between failed lists
// and watches (0 < min <= max <= 24h; default 800ms to 30s, client-go's).
// Whatever backoff has built up, the source relists within about half a
// second of the API server answering its readiness probe again.
func WithBackoff(min, max time.Duration) Option {
	return kit.WithBackoff[*options]("WithBackoff", min, max)
}

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
	client     k8s.Interface
	opts       options
	metrics    *metrics
	services   *kit.Shared[serviceKey, *serviceSlices] // one reflector per watched service
	namespaces *kit.Shared[string, *nsServices]        // one Services watch per namespace of them
}

var _ core.Source = (*Source)(nil)

type serviceKey struct{ namespace, name string }

// New returns a source that talks to the API server of cfg (copied; the copy
// asks for protobuf). It starts nothing: watches start when targets are
// watched. Metrics are registered now if a registerer is given.
func New(cfg *rest.Config, opts ...Option) (*Source, error) {
	if cfg == nil {
		return nil, fmt.Errorf("kubernetes: New needs a config (LoadConfig finds one): %w", core.ErrInvalid)
	}
	c := rest.CopyConfig(cfg)
	if c.QPS == 0 && c.RateLimiter == nil {
		// client-go's default, 5 requests a second, makes a source that
		// starts many watches (an agent with 1,000 targets: 4,000 list and
		// watch calls) take minutes. The API server's priority and fairness
		// paces clients; set cfg.QPS (and Burst) to throttle here too.
		c.QPS = -1
	}
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
	o := options{Common: kit.Common{Log: zap.NewNop(), Backoff: kit.Backoff{Min: 800 * time.Millisecond, Max: 30 * time.Second}},
		serviceLookup: true, recheck: 10 * time.Second}
	if err := kit.Apply(&o, opts...); err != nil {
		return nil, fmt.Errorf("kubernetes: %w: %w", err, core.ErrInvalid)
	}
	if o.namespace == "" {
		o.namespace = "default"
	}
	m, err := newMetrics(o.registerer)
	if err != nil {
		return nil, err
	}
	src := &Source{client: client, opts: o, metrics: m}
	src.services = kit.NewShared(func(k serviceKey, _ <-chan struct{}) *serviceSlices {
		ss := newServiceSlices(src, k)
		ss.start()
		return ss
	}, func(_ serviceKey, ss *serviceSlices) { ss.stop() }, 0)
	src.namespaces = kit.NewShared(func(ns string, _ <-chan struct{}) *nsServices {
		n := newNSServices(src, ns)
		n.start()
		return n
	}, func(_ string, n *nsServices) { n.stop() }, 0)
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

// serviceSlices watches the EndpointSlices of one service, learns whether
// the Service exists from its namespace's nsServices (or looks it up
// alone), and keeps a view per watched target (port). It runs its own
// list-and-watch loops rather than client-go's Reflector, to control what a
// failure means: the state goes stale at once, and a recovered API server
// is relisted as soon as it answers, whatever backoff had built up.
type serviceSlices struct {
	src *Source
	key serviceKey
	log *zap.Logger

	ctx    context.Context // ends with stop
	cancel context.CancelFunc
	ns     *nsServices    // the namespace's Services watch; nil when looked up alone or off
	wg     sync.WaitGroup // the slices loop and the Service lookup

	mu      sync.Mutex
	in      *interner
	slices  map[string]*sliceData
	synced  bool  // a list of slices has been applied
	failing error // the slices' list or watch is failing
	svc     svcState
	svcErr  error // the Service's lookup is failing
	views   map[*targetView]struct{}
}

// svcState is what the source knows of the Service object.
type svcState int

const (
	svcUnknown   svcState = iota // not yet looked up
	svcExists                    // it exists
	svcMissing                   // it does not exist
	svcUnchecked                 // no lookup: off, or not allowed
)

type targetView struct {
	t         core.Target
	pub       core.Publisher
	v         *view
	published bool // a synced state has been published
}

func newServiceSlices(s *Source, k serviceKey) *serviceSlices {
	ss := &serviceSlices{
		src: s, key: k,
		log:    s.opts.Log.With(zap.String("namespace", k.namespace), zap.String("service", k.name)),
		in:     newInterner(),
		slices: map[string]*sliceData{},
		views:  map[*targetView]struct{}{},
	}
	if !s.opts.serviceLookup {
		ss.svc = svcUnchecked
	}
	return ss
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
	ss.log.Info("kubernetes: watching endpointslices", zap.String("selector", ss.selector()))
	ss.ctx = ctx
	ss.wg.Go(func() { ss.src.loop(ctx, ss.sliceLoop()) })
	if ss.src.opts.serviceLookup {
		// The namespace's one watch of Services says whether this one
		// exists; where it may not, the Service is looked up on its own.
		ns, err := ss.src.namespaces.Acquire(ss.key.namespace)
		if err == nil && ns.add(ss) {
			ss.ns = ns
		} else {
			ss.lookUpAlone()
		}
	}
}

// lookUpAlone starts the Service's own lookup. Called before stop, never
// after it has begun (nsServices calls it under its lock, for subscribers).
func (ss *serviceSlices) lookUpAlone() {
	ss.wg.Go(func() { ss.watchService(ss.ctx) })
}

func (ss *serviceSlices) stop() {
	if ss.ns != nil {
		ss.ns.remove(ss) // no lookUpAlone after this
	}
	ss.cancel()
	ss.wg.Wait()
	if ss.ns != nil {
		ss.src.namespaces.Release(ss.key.namespace)
	}
	ss.src.metrics.forgetService(ss.key)
	ss.log.Info("kubernetes: stopped watching endpointslices")
}

// listWatch is one resource a loop follows.
type listWatch struct {
	resource string
	list     func(ctx context.Context) (items []runtime.Object, rv string, err error)
	probe    func(ctx context.Context) error // a cheap list (limit 1, from the cache)
	watch    func(ctx context.Context, rv string) (watch.Interface, error)
	replace  func(items []runtime.Object)
	event    func(t watch.EventType, obj runtime.Object)
	fail     func(verb string, err error) // also ends with stop() true to end the loop
	stop     func(err error) bool         // an error after which the loop gives up (nil: never)
}

// loop lists, then watches from the list's resource version, applying
// every event; a watch that ends is resumed from the last version, a 410
// Gone relists at once, and a failure marks the state stale and relists
// after a jittered backoff (so the state is reconciled exactly before it is
// fresh again).
func (s *Source) loop(ctx context.Context, lw listWatch) {
	rv := ""
	attempt, short := 0, 0
	for ctx.Err() == nil {
		if rv == "" {
			items, v, err := lw.list(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				lw.fail("list", err)
				if lw.stop != nil && lw.stop(err) {
					return
				}
				if !s.wait(ctx, attempt, err) {
					return
				}
				attempt++
				continue
			}
			lw.replace(items)
			rv, attempt = v, 0
		}
		w, err := lw.watch(ctx, rv)
		if ctx.Err() != nil {
			if err == nil {
				w.Stop()
			}
			return
		}
		if err != nil {
			if isGone(err) {
				rv = ""
				continue
			}
			lw.fail("watch", err)
			if lw.stop != nil && lw.stop(err) {
				return
			}
			rv = "" // reconcile with a complete list before the state is fresh again
			if !s.wait(ctx, attempt, err) {
				return
			}
			attempt++
			continue
		}
		began := time.Now()
		next, events, err := s.consume(ctx, w, rv, lw)
		w.Stop()
		if ctx.Err() != nil {
			return
		}
		if err == nil && events == 0 && time.Since(began) < time.Second {
			// client-go turns a broken connection (EOF, reset, timeout) into
			// a watch that ends at once: ask the server whether it answers.
			if err = lw.probe(ctx); err == nil {
				short++
			}
		} else {
			short = 0
		}
		switch {
		case err == nil && short > 3:
			// Watches keep ending at once although the server answers:
			// back off rather than spin.
			rv = next
			if !s.wait(ctx, attempt, errShortWatches) {
				return
			}
			attempt++
		case err == nil:
			rv = next // the watch ended (timeout, or the connection went): resume
		case isGone(err):
			rv = ""
		default:
			lw.fail("watch", err)
			rv = ""
			if !s.wait(ctx, attempt, err) {
				return
			}
			attempt++
		}
	}
}

// errShortWatches: watches end at once although the server answers.
var errShortWatches = apierrors.NewServiceUnavailable("watches end at once")

// consume applies a watch's events until it ends; it returns the last
// resource version seen, how many events came, and the error of an ERROR
// event.
func (s *Source) consume(ctx context.Context, w watch.Interface, rv string, lw listWatch) (string, int, error) {
	events := 0
	for {
		select {
		case <-ctx.Done():
			return rv, events, nil
		case ev, ok := <-w.ResultChan():
			if !ok {
				return rv, events, nil
			}
			events++
			switch ev.Type {
			case watch.Error:
				return rv, events, apierrors.FromObject(ev.Object)
			case watch.Bookmark:
			default:
				lw.event(ev.Type, ev.Object)
			}
			if m, err := meta.Accessor(ev.Object); err == nil && m.GetResourceVersion() != "" {
				rv = m.GetResourceVersion()
			}
		}
	}
}

func isGone(err error) bool {
	return apierrors.IsResourceExpired(err) || apierrors.IsGone(err)
}

// answered reports whether err came from an API server that answered (an
// HTTP status), rather than from one that could not be reached.
func answered(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return false // connection refused, reset, EOF, timeout
	}
	// 503 is what a starting or stopping server answers: probe for it.
	return !apierrors.IsServiceUnavailable(err)
}

// wait waits out the backoff before retry number attempt. When the last
// error says the API server could not be reached, it probes the server's
// /readyz every few hundred milliseconds meanwhile and returns as soon as
// it answers, so a recovered server is relisted at once whatever backoff had
// built up; a server that answered with an error is left alone for the whole
// backoff. It returns false when ctx ends.
func (s *Source) wait(ctx context.Context, attempt int, err error) bool {
	deadline := time.Now().Add(s.opts.Backoff.Delay(attempt))
	probe := !answered(err)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return true
		}
		step := left
		if probe {
			step = min(left, 200*time.Millisecond+rand.N(200*time.Millisecond))
		}
		t := time.NewTimer(step)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		if probe && s.ready(ctx) {
			return true
		}
	}
}

// sliceLoop follows the service's EndpointSlices.
func (ss *serviceSlices) sliceLoop() listWatch {
	api := ss.src.client.DiscoveryV1().EndpointSlices(ss.key.namespace)
	lw := listWatch{
		resource: "endpointslices.discovery.k8s.io",
		replace:  ss.replace,
		event: func(t watch.EventType, obj runtime.Object) {
			s, ok := obj.(*discoveryv1.EndpointSlice)
			if !ok {
				return
			}
			ss.mu.Lock()
			defer ss.mu.Unlock()
			if t == watch.Deleted {
				ss.src.metrics.event(ss.key, "delete")
				if _, ok := ss.slices[s.Name]; ok {
					ss.change(s.Name, nil, false)
				}
				return
			}
			ss.src.metrics.event(ss.key, "update")
			ss.change(s.Name, compact(s, ss.in), false)
		},
		fail: ss.fail,
	}
	bind(&lw, api.List, api.Watch, metav1.ListOptions{LabelSelector: ss.selector()})
	return lw
}

// bind sets a listWatch's list, probe and watch to the calls of a typed
// client with opts (a label or field selector).
func bind[L runtime.Object](lw *listWatch, list func(context.Context, metav1.ListOptions) (L, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error), opts metav1.ListOptions) {
	lw.list = func(ctx context.Context) ([]runtime.Object, string, error) {
		l, err := list(ctx, opts)
		if err != nil {
			return nil, "", err
		}
		items, err := meta.ExtractList(l)
		if err != nil {
			return nil, "", err
		}
		la, err := meta.ListAccessor(l)
		if err != nil {
			return nil, "", err
		}
		return items, la.GetResourceVersion(), nil
	}
	lw.probe = func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		o := opts
		o.Limit, o.ResourceVersion = 1, "0" // one object, from the API server's cache
		_, err := list(ctx, o)
		return err
	}
	lw.watch = func(ctx context.Context, rv string) (watch.Interface, error) {
		o := opts
		timeout := int64(300 + rand.IntN(300)) // as client-go: 5 to 10 minutes
		o.ResourceVersion, o.AllowWatchBookmarks, o.TimeoutSeconds = rv, true, &timeout
		return watchFn(ctx, o)
	}
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
	ss.publishLocked(tv, time.Time{})
	return tv
}

func (ss *serviceSlices) removeView(tv *targetView) {
	ss.mu.Lock()
	delete(ss.views, tv)
	ss.mu.Unlock()
	ss.src.metrics.forgetTarget(tv.t)
}

// publishLocked tells a view's publisher the view's state: its set, fresh
// or stale, or why there is none. trigger, if set, is when the change that
// caused this began (for the latency histogram).
func (ss *serviceSlices) publishLocked(tv *targetView, trigger time.Time) {
	if !ss.synced {
		if ss.failing != nil {
			tv.pub.Fail(ss.failing)
		}
		return
	}
	switch ss.svc {
	case svcUnknown:
		if ss.svcErr != nil {
			tv.pub.Fail(ss.svcErr) // not an empty answer: unavailable until known
		}
		return
	case svcMissing:
		err := fmt.Errorf("kubernetes: service %s/%s not found: %w", ss.key.namespace, ss.key.name, core.ErrNotFound)
		if tv.published {
			tv.pub.PublishStale(core.Set{}, err) // deleted: no endpoints, whatever slices remain
		} else {
			tv.pub.Fail(err)
		}
		return
	}
	if err := tv.v.ambiguity(); err != nil && tv.v.set.Len() == 0 {
		tv.pub.Fail(err)
		return
	}
	tv.published = true
	if dropped := tv.v.dropped(ss.slices); len(dropped) > 0 {
		tv.pub.PublishStale(tv.v.set, fmt.Errorf("kubernetes: service %s/%s: %d unusable endpoints left out: %s: %w",
			ss.key.namespace, ss.key.name, len(dropped), strings.Join(dropped, "; "), core.ErrInvalid))
	} else {
		tv.pub.Publish(tv.v.set)
	}
	ss.src.metrics.published(tv.t, tv.v.set, trigger)
}

func (ss *serviceSlices) publishAllLocked() {
	for tv := range ss.views {
		ss.publishLocked(tv, time.Time{})
	}
}

// change applies a slice change to every view and publishes those that
// changed.
func (ss *serviceSlices) change(name string, d *sliceData, _ bool) {
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
	ss.countDroppedLocked()
	for tv := range ss.views {
		changed, err := tv.v.apply(ss.slices, name, old, d)
		if err != nil {
			ss.log.Error("kubernetes: bad slice", zap.Error(err))
			tv.pub.Fail(err)
			continue
		}
		invalidChanged := (old != nil && len(old.dropped) > 0) || (d != nil && len(d.dropped) > 0)
		if ss.synced && (changed || invalidChanged) {
			ss.publishLocked(tv, trigger)
		}
	}
}

func (ss *serviceSlices) countDroppedLocked() {
	n := 0
	for _, d := range ss.slices {
		n += len(d.dropped)
	}
	ss.src.metrics.unusable(ss.key, n)
}

// replace applies a complete list (initial, or a relist after a failure or
// 410 Gone): the state is reconciled to exactly the list, so no ghost
// survives, and it is fresh again.
func (ss *serviceSlices) replace(items []runtime.Object) {
	next := make(map[string]*discoveryv1.EndpointSlice, len(items))
	for _, obj := range items {
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
			next[s.Name] = s
		}
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
	ss.synced, ss.failing = true, nil
	if !wasSynced {
		ss.log.Info("kubernetes: synced", zap.Int("slices", len(ss.slices)))
	} else if wasFailing != nil {
		ss.log.Info("kubernetes: watch recovered; state reconciled", zap.Int("slices", len(ss.slices)))
	}
	ss.publishAllLocked()
}

// fail classifies a list or watch error of the slices and marks every
// target of the service stale (the last good state stays).
func (ss *serviceSlices) fail(verb string, err error) {
	e := ss.classify(verb, "endpointslices.discovery.k8s.io", "list and watch", err)
	if e == nil {
		return
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

// classify turns an API error into a core error that says what to do.
func (ss *serviceSlices) classify(verb, resource, grant string, err error) error {
	return classify(ss.key.namespace, verb, resource, grant, err)
}

// classify turns an API error about resource in namespace ns into a core
// error that says what to do (nil for a canceled context).
func classify(ns, verb, resource, grant string, err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("kubernetes: forbidden to %s %s in namespace %s: grant verbs %s on %s to this client's ServiceAccount with a Role (see README, RBAC): %v: %w",
			verb, resource, ns, grant, resource, err, core.ErrForbidden)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("kubernetes: %s %s in namespace %s: credentials rejected (expired or wrong token?): %v: %w",
			verb, resource, ns, err, core.ErrForbidden)
	default:
		return fmt.Errorf("kubernetes: %s %s in namespace %s: %v: %w", verb, resource, ns, err, core.ErrUnavailable)
	}
}

// watchService follows the Service object on its own, where the source may
// not list and watch every Service of the namespace (a Role restricted by
// resourceNames): list and watch of that one name, or, if that is not
// allowed, get every recheck interval; if get is not allowed either, the
// check is off.
func (ss *serviceSlices) watchService(ctx context.Context) {
	api := ss.src.client.CoreV1().Services(ss.key.namespace)
	field := "metadata.name=" + ss.key.name
	forbidden := false
	lw := listWatch{
		resource: "services",
		replace: func(items []runtime.Object) {
			if len(items) > 0 {
				ss.setService(svcExists, nil)
			} else {
				ss.setService(svcMissing, nil)
			}
		},
		event: func(t watch.EventType, obj runtime.Object) {
			if t == watch.Deleted {
				ss.setService(svcMissing, nil)
			} else {
				ss.setService(svcExists, nil)
			}
		},
		fail: func(verb string, err error) {
			if apierrors.IsForbidden(err) {
				forbidden = true
				return
			}
			ss.setService(svcUnknown, ss.classify(verb, "services", "get, list and watch", err))
		},
		stop: func(error) bool { return forbidden },
	}
	bind(&lw, api.List, api.Watch, metav1.ListOptions{FieldSelector: field})
	ss.src.loop(ctx, lw)
	if !forbidden || ctx.Err() != nil {
		return
	}
	ss.log.Info("kubernetes: may not list and watch services; looking the Service up with get", zap.Duration("every", ss.src.opts.recheck))
	tick := time.NewTicker(ss.src.opts.recheck)
	defer tick.Stop()
	for {
		_, err := api.Get(ctx, ss.key.name, metav1.GetOptions{})
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			ss.setService(svcExists, nil)
		case apierrors.IsNotFound(err):
			ss.setService(svcMissing, nil)
		case apierrors.IsForbidden(err):
			ss.log.Info("kubernetes: may not get services either; a service without endpointslices counts as empty", zap.Error(err))
			ss.setService(svcUnchecked, nil)
			return
		default:
			ss.setService(svcUnknown, ss.classify("get", "services", "get, list and watch", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// setService records what the Service lookup found and republishes when it
// changes what the targets show. A lookup that fails keeps a known answer
// (existence does not flip on a transient error); without one, it is
// reported as unavailable, never as an empty set.
func (ss *serviceSlices) setService(st svcState, err error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if err != nil {
		ss.svcErr = err
		if ss.svc == svcUnknown {
			for tv := range ss.views {
				tv.pub.Fail(err)
			}
		}
		return
	}
	ss.svcErr = nil
	if ss.svc == st {
		return
	}
	switch st {
	case svcMissing:
		ss.log.Info("kubernetes: service not found")
	case svcExists:
		if ss.svc == svcMissing {
			ss.log.Info("kubernetes: service exists again")
		}
	}
	ss.svc = st
	ss.publishAllLocked()
}

// ready reports whether the API server answers its readiness probe.
func (s *Source) ready(ctx context.Context) bool {
	rc := s.client.Discovery().RESTClient()
	if rc == nil || reflect.ValueOf(rc).IsNil() {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err := rc.Get().AbsPath("/readyz").DoRaw(ctx)
	return err == nil
}

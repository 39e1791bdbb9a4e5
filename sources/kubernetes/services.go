package kubernetes

import (
	"context"
	"sync"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
)

// nsServices follows which Services exist in one namespace, for every
// watched Service of it: one list and watch per namespace, not one per
// Service, so that a hub of a thousand targets holds a thousand
// EndpointSlice watches and one Services watch per namespace rather than
// two thousand watches (and their goroutines). Where the source may not
// list and watch every Service of the namespace (a Role restricted by
// resourceNames), each Service is looked up on its own (watchService), as
// are those that come later, until the namespace is no longer watched.
type nsServices struct {
	src    *Source
	ns     string
	log    *zap.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	listed    bool                // a list succeeded: exists is what the API server holds
	exists    map[string]struct{} // the names of the namespace's Services
	err       error               // the last list or watch failed (nil once one succeeds)
	forbidden bool                // each Service is looked up on its own
	subs      map[string]map[*serviceSlices]struct{}
}

func newNSServices(s *Source, ns string) *nsServices {
	return &nsServices{src: s, ns: ns, log: s.opts.Log.With(zap.String("namespace", ns)),
		exists: map[string]struct{}{}, subs: map[string]map[*serviceSlices]struct{}{}}
}

func (n *nsServices) start() {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	api := n.src.client.CoreV1().Services(n.ns)
	lw := listWatch{
		resource: "services",
		replace:  n.replace,
		event:    n.event,
		fail:     n.fail,
		stop:     func(error) bool { n.mu.Lock(); defer n.mu.Unlock(); return n.forbidden },
	}
	bind(&lw, api.List, api.Watch, metav1.ListOptions{})
	n.wg.Go(func() { n.src.loop(ctx, lw) })
}

func (n *nsServices) stop() {
	n.cancel()
	n.wg.Wait()
}

// add subscribes ss to its Service's existence and tells it what is known
// so far. It returns false if ss must look its Service up on its own.
func (n *nsServices) add(ss *serviceSlices) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.forbidden {
		return false
	}
	subs := n.subs[ss.key.name]
	if subs == nil {
		subs = map[*serviceSlices]struct{}{}
		n.subs[ss.key.name] = subs
	}
	subs[ss] = struct{}{}
	switch {
	case n.listed:
		ss.setService(n.stateLocked(ss.key.name), nil)
	case n.err != nil:
		ss.setService(svcUnknown, n.err)
	}
	return true
}

// remove ends ss's subscription; after it returns, n calls nothing of ss.
func (n *nsServices) remove(ss *serviceSlices) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if subs := n.subs[ss.key.name]; subs != nil {
		delete(subs, ss)
		if len(subs) == 0 {
			delete(n.subs, ss.key.name)
		}
	}
}

func (n *nsServices) stateLocked(name string) svcState {
	if _, ok := n.exists[name]; ok {
		return svcExists
	}
	return svcMissing
}

func (n *nsServices) replace(items []runtime.Object) {
	n.mu.Lock()
	defer n.mu.Unlock()
	clear(n.exists)
	for _, obj := range items {
		if m, err := meta.Accessor(obj); err == nil {
			n.exists[m.GetName()] = struct{}{}
		}
	}
	n.listed, n.err = true, nil
	for name, subs := range n.subs {
		st := n.stateLocked(name)
		for ss := range subs {
			ss.setService(st, nil)
		}
	}
}

func (n *nsServices) event(t watch.EventType, obj runtime.Object) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	name := m.GetName()
	n.mu.Lock()
	defer n.mu.Unlock()
	if t == watch.Deleted {
		delete(n.exists, name)
	} else {
		n.exists[name] = struct{}{}
	}
	st := n.stateLocked(name)
	for ss := range n.subs[name] {
		ss.setService(st, nil)
	}
}

func (n *nsServices) fail(verb string, err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if apierrors.IsForbidden(err) {
		n.log.Info("kubernetes: may not list and watch every service of the namespace; looking each up on its own", zap.Error(err))
		n.forbidden = true
		for _, subs := range n.subs {
			for ss := range subs {
				ss.lookUpAlone()
			}
		}
		clear(n.subs)
		return
	}
	e := classify(n.ns, verb, "services", "get, list and watch", err)
	if e == nil {
		return
	}
	n.err = e
	for _, subs := range n.subs {
		for ss := range subs {
			ss.setService(svcUnknown, e)
		}
	}
}

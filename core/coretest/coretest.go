// Package coretest has what tests of code built on core need: the
// conformance suites every source (TestSource) and every sink (TestSink)
// must pass, a Recorder sink that records every update it accepts, and a
// Script source whose watches a test drives by hand. The doubles are real
// implementations of core's interfaces, safe for concurrent use, and start
// no goroutines. Like core, it depends on the standard library only.
package coretest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/disco-lb/disco/core"
)

// Recorder is a Sink that records every update. Its Update can be made to
// block (Block/Unblock) or to fail (FailWith) to exercise a pipeline's
// mailbox and retries.
type Recorder struct {
	mu      sync.Mutex
	updates []core.Update
	calls   int
	fail    error
	gate    chan struct{} // non-nil while blocked
	changed chan struct{}
}

var _ core.Sink = (*Recorder)(nil)

// NewRecorder returns an empty, unblocked recorder.
func NewRecorder() *Recorder { return &Recorder{changed: make(chan struct{})} }

// Update implements core.Sink: it waits while the recorder is blocked (or
// until ctx ends), then fails with the configured error or records u.
func (r *Recorder) Accept(ctx context.Context, u core.Update) error {
	r.mu.Lock()
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	defer r.notifyLocked()
	if r.fail != nil {
		return r.fail
	}
	r.updates = append(r.updates, u)
	return nil
}

func (r *Recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// Block makes later Update calls wait until Unblock.
func (r *Recorder) Block() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gate == nil {
		r.gate = make(chan struct{})
	}
}

// Unblock releases waiting and later Update calls.
func (r *Recorder) Unblock() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gate != nil {
		close(r.gate)
		r.gate = nil
	}
}

// FailWith makes Update return err (nil: accept again).
func (r *Recorder) FailWith(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fail = err
}

// Updates returns a copy of the accepted updates, oldest first.
func (r *Recorder) Updates() []core.Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]core.Update(nil), r.updates...)
}

// For returns the accepted updates of one target, oldest first.
func (r *Recorder) For(t core.Target) []core.Update {
	var out []core.Update
	for _, u := range r.Updates() {
		if u.Target == t {
			out = append(out, u)
		}
	}
	return out
}

// Last returns the last accepted update of t.
func (r *Recorder) Last(t core.Target) (core.Update, bool) {
	us := r.For(t)
	if len(us) == 0 {
		return core.Update{}, false
	}
	return us[len(us)-1], true
}

// Calls counts Update calls that got past the block, accepted or failed.
func (r *Recorder) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// WaitFor blocks until cond, called with the accepted updates after every
// Update call, returns true, or ctx ends. cond runs without the recorder's
// lock held, so it may call the recorder's other methods.
func (r *Recorder) WaitFor(ctx context.Context, cond func([]core.Update) bool) error {
	for {
		r.mu.Lock()
		us := r.updates[:len(r.updates):len(r.updates)]
		ch := r.changed
		r.mu.Unlock()
		if cond(us) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("coretest: condition not met: %w", ctx.Err())
		}
	}
}

// WaitState blocks until the last accepted state of t satisfies cond, or
// ctx ends. It returns that state, or with the error the last state seen
// (zero if none came).
func (r *Recorder) WaitState(ctx context.Context, t core.Target, cond func(core.State) bool) (core.State, error) {
	var last core.State
	err := r.WaitFor(ctx, func(us []core.Update) bool {
		for i := len(us) - 1; i >= 0; i-- {
			if us[i].Target == t {
				last = us[i].State
				return cond(last)
			}
		}
		return false
	})
	return last, err
}

// Hub returns a new hub over src, closed when the test ends; an error of
// NewHub fails the test.
func Hub(tb testing.TB, src core.Source, opts ...core.Option) *core.Hub {
	tb.Helper()
	hub, err := core.NewHub(src, opts...)
	if err != nil {
		tb.Fatalf("coretest: %v", err)
	}
	tb.Cleanup(func() { hub.Close() })
	return hub
}

// Watch subscribes a new Recorder to targets through a new hub over src,
// closed when the test ends.
func Watch(tb testing.TB, src core.Source, targets ...core.Target) (*core.Subscription, *Recorder) {
	tb.Helper()
	hub := Hub(tb, src)
	rec := NewRecorder()
	sub, err := hub.Subscribe("recorder", rec, targets...)
	if err != nil {
		tb.Fatalf("coretest: subscribe: %v", err)
	}
	return sub, rec
}

// HostPorts returns every address:port of a set, sorted.
func HostPorts(s core.Set) []string {
	var out []string
	for e := range s.All() {
		out = append(out, e.HostPorts()...)
	}
	slices.Sort(out)
	return out
}

// WaitSeq blocks until the recorder accepted an update of t with a sequence
// number of at least seq.
func (r *Recorder) WaitSeq(ctx context.Context, t core.Target, seq uint64) error {
	return r.WaitFor(ctx, func(us []core.Update) bool {
		for i := len(us) - 1; i >= 0; i-- {
			if us[i].Target == t && us[i].Seq >= seq {
				return true
			}
		}
		return false
	})
}

// Script is a Source whose watches the test drives: Publish and Fail act on
// every running watch of a target, and the counters tell how often Watch was
// called and how many watches run.
type Script struct {
	mu      sync.Mutex
	pubs    map[core.Target]map[*scriptWatch]struct{}
	started map[core.Target]int
	err     map[core.Target]error
	changed chan struct{}
}

type scriptWatch struct{ pub core.Publisher }

var _ core.Source = (*Script)(nil)

// NewScript returns a script with no watches.
func NewScript() *Script {
	return &Script{
		pubs:    map[core.Target]map[*scriptWatch]struct{}{},
		started: map[core.Target]int{},
		err:     map[core.Target]error{},
		changed: make(chan struct{}),
	}
}

// Watch implements core.Source: it registers the watch and blocks until ctx
// ends, or returns the error set with WatchErr at once.
func (s *Script) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
	w := &scriptWatch{pub: pub}
	s.mu.Lock()
	s.started[t]++
	if err := s.err[t]; err != nil {
		s.notifyLocked()
		s.mu.Unlock()
		return err
	}
	if s.pubs[t] == nil {
		s.pubs[t] = map[*scriptWatch]struct{}{}
	}
	s.pubs[t][w] = struct{}{}
	s.notifyLocked()
	s.mu.Unlock()

	<-ctx.Done()

	s.mu.Lock()
	delete(s.pubs[t], w)
	if len(s.pubs[t]) == 0 {
		delete(s.pubs, t)
	}
	s.notifyLocked()
	s.mu.Unlock()
	return nil
}

func (s *Script) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// WatchErr makes later Watch calls of t return err at once (nil: block again).
func (s *Script) WatchErr(t core.Target, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.err[t] = err
}

// Publish publishes set to every running watch of t; it reports how many.
func (s *Script) Publish(t core.Target, set core.Set) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.pubs[t] {
		w.pub.Publish(set)
	}
	return len(s.pubs[t])
}

// PublishStale publishes set, stale with err, to every running watch of t;
// it reports how many.
func (s *Script) PublishStale(t core.Target, set core.Set, err error) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.pubs[t] {
		w.pub.PublishStale(set, err)
	}
	return len(s.pubs[t])
}

// Fail reports err to every running watch of t; it reports how many.
func (s *Script) Fail(t core.Target, err error) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w := range s.pubs[t] {
		w.pub.Fail(err)
	}
	return len(s.pubs[t])
}

// Running returns how many watches of t are running now.
func (s *Script) Running(t core.Target) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pubs[t])
}

// Started returns how many times Watch was called for t.
func (s *Script) Started(t core.Target) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.started[t]
}

// WaitRunning blocks until exactly n watches of t run, or ctx ends.
func (s *Script) WaitRunning(ctx context.Context, t core.Target, n int) error {
	for {
		s.mu.Lock()
		ok := len(s.pubs[t]) == n
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("coretest: %d watches of %s not reached: %w", n, t, ctx.Err())
		}
	}
}

// Endpoints builds one endpoint per address, with ID = address, for tests.
func Endpoints(port uint16, addrs ...string) []*core.Endpoint {
	out := make([]*core.Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = &core.Endpoint{ID: a, Addresses: []string{a}, Port: port}
	}
	return out
}

// Set is core.NewSet for tests: it fails tb on an error.
func Set(tb testing.TB, eps ...*core.Endpoint) core.Set {
	tb.Helper()
	s, err := core.NewSet(eps...)
	if err != nil {
		tb.Fatalf("coretest: %v", err)
	}
	return s
}

// States turns fuzz input into a sequence of sets, each derived from the
// previous by puts (new versions of up to 16 IDs, some not ready) and
// removals: the input of a fuzz test of a sink or of anything that diffs.
func States(t testing.TB, data []byte) []core.Set {
	var out []core.Set
	var cur core.Set
	for i := 0; i+1 < len(data); i += 2 {
		op, arg := data[i], data[i+1]
		id := fmt.Sprintf("e%02d", arg%16)
		var err error
		switch op % 4 {
		case 0, 1: // put a version of id
			e := &core.Endpoint{ID: id, Addresses: []string{fmt.Sprintf("10.0.%d.%d", arg%16, op/4)}, Port: 80}
			if op%8 == 1 {
				e.Conditions.Ready = new(false)
			}
			cur, err = cur.With(e)
		case 2:
			cur = cur.Without(id)
		case 3: // emit a state
			out = append(out, cur)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return append(out, cur)
}

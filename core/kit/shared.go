package kit

import (
	"errors"
	"sync"
	"time"
)

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("kit: shared values closed")

// Shared keeps one value per key for as many users as want it, reference
// counted: the first Acquire of a key starts its value, later ones share
// it, and the last Release stops it, at once or after a linger period (a
// user that comes back within it finds the value still running). core's
// Hub shares one Watch per target this way, and the Kubernetes source one
// EndpointSlice reflector per service.
//
// start runs under Shared's lock (it must not block or call back into
// Shared); stop runs outside it and may block, for example to wait for the
// value's goroutines. A key being stopped is not shared with a new
// Acquire: that one starts a new value, and start gets a channel that is
// closed once the old value's stop has returned (nil if none is stopping),
// so that the new value can wait for it before doing its work: one
// Watch of a target at a time. Safe for concurrent use.
type Shared[K comparable, V any] struct {
	start  func(k K, after <-chan struct{}) V
	stop   func(K, V)
	linger time.Duration

	mu       sync.Mutex
	closed   bool
	items    map[K]*sharedItem[V]
	ending   map[K]chan struct{} // keys whose value is being stopped; closed when stopped
	stopping sync.WaitGroup
}

type sharedItem[V any] struct {
	v     V
	refs  int
	timer *time.Timer // lingering after the last release
}

// NewShared returns an empty Shared. linger is how long a value stays after
// its last release (0: stop at once).
func NewShared[K comparable, V any](start func(k K, after <-chan struct{}) V, stop func(K, V), linger time.Duration) *Shared[K, V] {
	return &Shared[K, V]{start: start, stop: stop, linger: linger, items: map[K]*sharedItem[V]{}, ending: map[K]chan struct{}{}}
}

// Acquire returns the value of k, starting it if no one holds it, and
// counts one more user. It fails with ErrClosed after Close.
func (s *Shared[K, V]) Acquire(k K) (V, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		var zero V
		return zero, ErrClosed
	}
	it := s.items[k]
	if it == nil {
		var after <-chan struct{}
		if ch, ok := s.ending[k]; ok {
			after = ch
		}
		it = &sharedItem[V]{v: s.start(k, after)}
		s.items[k] = it
	}
	if it.timer != nil {
		it.timer.Stop()
		it.timer = nil
	}
	it.refs++
	return it.v, nil
}

// Release counts one user less of k; the last one stops its value (after
// the linger period). Releasing a key not held does nothing.
func (s *Shared[K, V]) Release(k K) {
	s.mu.Lock()
	it := s.items[k]
	if it == nil || it.refs == 0 {
		s.mu.Unlock()
		return
	}
	it.refs--
	if it.refs > 0 || s.closed {
		s.mu.Unlock()
		return
	}
	if s.linger > 0 {
		it.timer = time.AfterFunc(s.linger, func() { s.expire(k, it) })
		s.mu.Unlock()
		return
	}
	ended := s.endingLocked(k)
	s.mu.Unlock()
	s.stopItem(k, it, ended)
}

// endingLocked removes k's value and records that it is being stopped.
func (s *Shared[K, V]) endingLocked(k K) chan struct{} {
	delete(s.items, k)
	s.stopping.Add(1)
	ch := make(chan struct{})
	s.ending[k] = ch
	return ch
}

// expire stops a value whose linger period ended unless a user came back.
func (s *Shared[K, V]) expire(k K, it *sharedItem[V]) {
	s.mu.Lock()
	if s.closed || s.items[k] != it || it.refs > 0 || it.timer == nil {
		s.mu.Unlock()
		return
	}
	it.timer = nil
	ended := s.endingLocked(k)
	s.mu.Unlock()
	s.stopItem(k, it, ended)
}

func (s *Shared[K, V]) stopItem(k K, it *sharedItem[V], ended chan struct{}) {
	defer s.stopping.Done()
	s.stop(k, it.v)
	s.mu.Lock()
	if s.ending[k] == ended {
		delete(s.ending, k)
	}
	s.mu.Unlock()
	close(ended)
}

// Get returns the value of k if it is held (or lingering), without counting
// a user.
func (s *Shared[K, V]) Get(k K) (V, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := s.items[k]
	if it == nil {
		var zero V
		return zero, false
	}
	return it.v, true
}

// Keys returns the keys that hold a value (lingering ones included), in
// no order.
func (s *Shared[K, V]) Keys() []K {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]K, 0, len(s.items))
	for k := range s.items {
		out = append(out, k)
	}
	return out
}

// Len returns how many keys hold a value (lingering ones included).
func (s *Shared[K, V]) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.items)
}

// Close stops every value, waits for every stop (those of earlier releases
// too), and makes later Acquire calls fail with ErrClosed. Idempotent.
func (s *Shared[K, V]) Close() {
	s.mu.Lock()
	s.closed = true
	items := s.items
	s.items = map[K]*sharedItem[V]{}
	ended := make(map[K]chan struct{}, len(items))
	for k, it := range items {
		if it.timer != nil {
			it.timer.Stop()
			it.timer = nil
		}
		ended[k] = s.endingLocked(k) // deletes from s.items, no longer items
	}
	s.mu.Unlock()
	for k, it := range items {
		go s.stopItem(k, it, ended[k]) // in parallel: each may wait for its goroutines
	}
	s.stopping.Wait()
}

package core

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Hub serves the targets of one Source on demand: the first subscriber of a
// target starts the source's Watch of it, later subscribers share that watch
// (and get its current state at once), and the last one to leave stops it.
// Sinks that know their targets only at run time use a Hub directly; a gRPC
// resolver subscribes in Build and closes the subscription in Close.
//
// A Hub starts goroutines only when subscribed to; Close stops them all and
// waits for them. It is safe for concurrent use.
type Hub struct {
	src Source
	cfg config
	seq atomic.Uint64

	closeOnce sync.Once

	mu      sync.Mutex
	closed  bool
	watches map[Target]*watch
	subs    map[*Subscription]struct{}
}

// NewHub returns a hub over src. It starts nothing.
func NewHub(src Source, opts ...Option) *Hub {
	return &Hub{
		src:     src,
		cfg:     newConfig(opts),
		watches: map[Target]*watch{},
		subs:    map[*Subscription]struct{}{},
	}
}

// Subscribe delivers every state of target to sink until the subscription is
// closed, starting the source's watch of target unless one runs already. The
// sink gets its own goroutine and mailbox (see Sink); name labels its logs and
// metrics. It fails with ErrInvalid for an invalid target and ErrClosed after
// Close.
func (h *Hub) Subscribe(target Target, name string, sink Sink) (*Subscription, error) {
	w, err := h.acquire(target)
	if err != nil {
		return nil, err
	}
	r := newRunner(&h.cfg, name, sink)
	sub := &Subscription{hub: h, w: w, r: r}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		h.release(w)
		return nil, ErrClosed
	}
	h.subs[sub] = struct{}{}
	h.mu.Unlock()
	w.attach(r)
	r.start()
	return sub, nil
}

// State returns the current state of a watched target; false if the target
// is not watched or its source has published nothing yet.
func (h *Hub) State(target Target) (State, bool) {
	h.mu.Lock()
	w := h.watches[target]
	h.mu.Unlock()
	if w == nil {
		return State{}, false
	}
	return w.current()
}

// WaitSynced blocks until target's source has published a complete set at
// least once. It returns at once with an error wrapping ErrNotFound,
// ErrForbidden or ErrInvalid if the source reports one of those before the
// first sync; transient failures (ErrUnavailable) keep it waiting until ctx
// ends, and its error then names the last failure. A target nobody watches
// gives ErrNotWatched.
func (h *Hub) WaitSynced(ctx context.Context, target Target) error {
	h.mu.Lock()
	w := h.watches[target]
	h.mu.Unlock()
	if w == nil {
		return fmt.Errorf("core: target %s: %w", target, ErrNotWatched)
	}
	return w.waitSynced(ctx)
}

// Close ends every subscription and watch and waits for all their
// goroutines. Idempotent; later Subscribe calls fail with ErrClosed.
func (h *Hub) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		subs := make([]*Subscription, 0, len(h.subs))
		for s := range h.subs {
			subs = append(subs, s)
		}
		h.mu.Unlock()
		for _, s := range subs {
			s.Close()
		}
		h.mu.Lock()
		ws := make([]*watch, 0, len(h.watches))
		for _, w := range h.watches {
			ws = append(ws, w)
		}
		clear(h.watches)
		h.mu.Unlock()
		for _, w := range ws {
			w.stop()
		}
	})
	return nil
}

func (h *Hub) acquire(t Target) (*watch, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	w := h.watches[t]
	if w == nil {
		w = newWatch(h, t)
		h.watches[t] = w
		w.start()
	}
	w.refs++
	return w, nil
}

func (h *Hub) release(w *watch) {
	h.mu.Lock()
	w.refs--
	last := w.refs == 0
	if last && h.watches[w.target] == w {
		delete(h.watches, w.target)
	}
	h.mu.Unlock()
	if last {
		w.stop()
	}
}

// Subscription is one sink's registration for one target on a Hub.
type Subscription struct {
	hub       *Hub
	w         *watch
	r         *runner
	closeOnce sync.Once
}

// Target returns the subscribed target.
func (s *Subscription) Target() Target { return s.w.target }

// WaitSynced is Hub.WaitSynced for the subscription's target.
func (s *Subscription) WaitSynced(ctx context.Context) error { return s.w.waitSynced(ctx) }

// State returns the target's current state (false before the first one).
func (s *Subscription) State() (State, bool) { return s.w.current() }

// Close stops delivery to the sink, waits for its goroutine (cancelling the
// context of an Update in progress), and releases the watch: the source stops
// watching the target if no one else subscribes to it. Idempotent.
func (s *Subscription) Close() error {
	s.closeOnce.Do(func() {
		s.w.detach(s.r)
		s.r.stop()
		s.hub.release(s.w)
		s.hub.mu.Lock()
		delete(s.hub.subs, s)
		s.hub.mu.Unlock()
	})
	return nil
}

// watch is one running Source.Watch of one target, shared by its consumers.
// It is the Publisher the source gets.
type watch struct {
	hub    *Hub
	target Target
	refs   int // guarded by hub.mu

	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once

	mu      sync.Mutex
	stopped bool
	has     bool
	seq     uint64
	state   State
	runners []*runner
	changed chan struct{} // closed and replaced at every change
	expiry  *time.Timer
}

var _ Publisher = (*watch)(nil)

func newWatch(h *Hub, t Target) *watch {
	ctx, cancel := context.WithCancel(context.Background())
	return &watch{hub: h, target: t, ctx: ctx, cancel: cancel, done: make(chan struct{}), changed: make(chan struct{})}
}

func (w *watch) log() *zap.Logger { return w.hub.cfg.log }

func (w *watch) start() {
	w.log().Info("core: watch started", zap.Stringer("target", w.target))
	go w.run()
}

func (w *watch) run() {
	defer close(w.done)
	cfg := &w.hub.cfg
	for attempt := 0; ; attempt++ {
		began := time.Now()
		err := w.hub.src.Watch(w.ctx, w.target, w)
		if w.ctx.Err() != nil {
			return
		}
		if err == nil {
			w.log().Info("core: source finished watching; keeping its last state", zap.Stringer("target", w.target))
			return
		}
		w.Fail(err)
		if !IsRetryable(err) {
			w.log().Error("core: source cannot watch target", zap.Stringer("target", w.target), zap.Error(err))
			return
		}
		if time.Since(began) > cfg.backoffMax {
			attempt = 0
		}
		delay := cfg.backoff(attempt)
		w.log().Warn("core: source watch ended; restarting", zap.Stringer("target", w.target),
			zap.Duration("backoff", delay), zap.Error(err))
		t := time.NewTimer(delay)
		select {
		case <-w.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// stop ends the watch and waits for the source's Watch to return.
func (w *watch) stop() {
	w.stopOnce.Do(func() {
		w.mu.Lock()
		w.stopped = true
		w.stopExpiryLocked()
		close(w.changed)
		w.mu.Unlock()
		w.cancel()
		<-w.done
		w.hub.cfg.metrics.TargetForgotten(w.target)
		w.log().Info("core: watch stopped", zap.Stringer("target", w.target))
	})
}

// Publish implements Publisher.
func (w *watch) Publish(set Set) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	if w.has && w.state.Synced && !w.state.Stale.IsStale() && w.state.Endpoints.Equal(set) {
		return
	}
	if w.state.Stale.IsStale() {
		w.log().Info("core: target fresh again", zap.Stringer("target", w.target),
			zap.Duration("stale_for", time.Since(w.state.Stale.Since)))
	}
	w.stopExpiryLocked()
	w.commitLocked(State{Endpoints: set, Synced: true})
}

// Fail implements Publisher.
func (w *watch) Fail(err error) {
	if err == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	st := w.state
	reason, kind := err.Error(), KindOf(err)
	if w.has && st.Stale.IsStale() && st.Stale.Reason == reason && st.Stale.Kind == kind {
		return
	}
	since := st.Stale.Since
	if since.IsZero() {
		since = time.Now()
		w.log().Warn("core: target stale; keeping last good state", zap.Stringer("target", w.target),
			zap.Bool("synced", st.Synced), zap.Int("endpoints", st.Endpoints.Len()), zap.Error(err))
	}
	st.Stale = Staleness{Since: since, Reason: reason, Kind: kind, Dropped: st.Stale.Dropped}
	w.commitLocked(st)
	if max := w.hub.cfg.maxStale; max > 0 && st.Synced && !st.Stale.Dropped && w.expiry == nil {
		w.expiry = time.AfterFunc(time.Until(since.Add(max)), func() { w.expire(since) })
	}
}

// expire drops the last good endpoints of a target stale since since.
func (w *watch) expire(since time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st := w.state
	if w.stopped || !st.Stale.Since.Equal(since) || st.Stale.Dropped {
		return
	}
	w.expiry = nil
	w.log().Warn("core: dropping last good endpoints: stale for longer than the maximum",
		zap.Stringer("target", w.target), zap.Duration("max_staleness", w.hub.cfg.maxStale),
		zap.Int("endpoints", st.Endpoints.Len()))
	st.Endpoints = Set{}
	st.Stale.Dropped = true
	w.commitLocked(st)
}

func (w *watch) stopExpiryLocked() {
	if w.expiry != nil {
		w.expiry.Stop()
		w.expiry = nil
	}
}

// commitLocked makes st the current state and offers it to every runner.
func (w *watch) commitLocked(st State) {
	w.seq = w.hub.seq.Add(1)
	w.state = st
	w.has = true
	close(w.changed)
	w.changed = make(chan struct{})
	for _, r := range w.runners {
		r.offer(w.target, w.seq, st)
	}
	w.hub.cfg.metrics.StatePublished(w.target, w.seq, st)
}

func (w *watch) current() (State, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state, w.has
}

// attach makes r receive the target's states, starting with the current one.
func (w *watch) attach(r *runner) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.runners = append(w.runners, r)
	r.addSlot(w.target)
	if w.has {
		r.offer(w.target, w.seq, w.state)
	}
}

// detach stops offering states to r and drops r's mailbox slot.
func (w *watch) detach(r *runner) {
	w.mu.Lock()
	if i := slices.Index(w.runners, r); i >= 0 {
		w.runners = slices.Delete(w.runners, i, i+1)
	}
	w.mu.Unlock()
	r.removeSlot(w.target)
}

func (w *watch) waitSynced(ctx context.Context) error {
	for {
		w.mu.Lock()
		stopped, st, has, ch := w.stopped, w.state, w.has, w.changed
		w.mu.Unlock()
		switch {
		case stopped:
			return fmt.Errorf("core: target %s: %w", w.target, ErrNotWatched)
		case has && st.Synced:
			return nil
		case has && st.Stale.IsStale() && st.Stale.Kind != KindUnavailable:
			return fmt.Errorf("core: target %s: %w", w.target, st.Stale.Err())
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if st.Stale.IsStale() {
				return fmt.Errorf("core: target %s not synced (last error: %s): %w", w.target, st.Stale.Reason, ctx.Err())
			}
			return fmt.Errorf("core: target %s not synced: %w", w.target, ctx.Err())
		}
	}
}

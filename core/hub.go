package core

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/disco-lb/disco/core/kit"
)

// Hub is core's one engine: it serves the targets of one Source to sinks.
// The first subscription to a target starts the source's Watch of it (a
// feed); later subscriptions share that feed and get its current state at
// once; when the last one leaves, the feed stops (after WithLinger's grace
// period, if set). Every sink consumer in a process should share one Hub
// per source: a gRPC resolver with many ClientConns, a connection pool and
// a webhook on the same target then cost one Watch.
//
// A Hub starts goroutines only when subscribed to; Close stops them all and
// waits for them. It is safe for concurrent use.
type Hub struct {
	src   Source
	cfg   config
	epoch string
	// seqFloor is at least the highest Seq any feed of this hub has used: a
	// new feed numbers its states from there, so a target's Seq never goes
	// back within the epoch, even across a stop and restart of its feed.
	seqFloor atomic.Uint64

	feeds     *kit.Shared[Target, *feed]
	closeOnce sync.Once

	mu     sync.Mutex
	closed bool
	subs   map[*Subscription]struct{}
}

// NewHub returns a hub over src with a new random epoch. It starts
// nothing; it fails with ErrInvalid for a nil source or an option out of
// range (the error names the option and what it allows).
func NewHub(src Source, opts ...Option) (*Hub, error) {
	if src == nil {
		return nil, fmt.Errorf("core: NewHub: no source: %w", ErrInvalid)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("core: %w: %w", err, ErrInvalid)
	}
	h := &Hub{src: src, cfg: cfg, epoch: newEpoch(), subs: map[*Subscription]struct{}{}}
	h.feeds = kit.NewShared(func(t Target, after <-chan struct{}) *feed { return newFeed(h, t, after) }, func(_ Target, f *feed) { f.stop() }, h.cfg.linger)
	return h, nil
}

func newEpoch() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand's contract)
	return hex.EncodeToString(b[:])
}

// Epoch returns the hub's epoch (see Update.Epoch): 16 hex digits, random
// per hub.
func (h *Hub) Epoch() string { return h.epoch }

// Source returns the source the hub serves.
func (h *Hub) Source() Source { return h.src }

// Subscribe delivers every state of each of targets to sink until the
// subscription is closed, starting the source's watch of a target unless
// one runs already (or restarting one that ended). The sink gets one
// goroutine and one latest-state-wins mailbox for all its targets (see
// Sink); name labels its logs and metrics. Duplicate targets count once. It
// fails with ErrInvalid for no target or an invalid one, and ErrClosed
// after Close.
func (h *Hub) Subscribe(name string, sink Sink, targets ...Target) (*Subscription, error) {
	ts := uniqueTargets(targets)
	if len(ts) == 0 {
		return nil, fmt.Errorf("core: subscribe %q: no target: %w", name, ErrInvalid)
	}
	for _, t := range ts {
		if err := t.Validate(); err != nil {
			return nil, err
		}
	}
	sub := &Subscription{hub: h, name: name, targets: ts, mb: newMailbox(&h.cfg, h.epoch, name, sink)}
	release := func() {
		for _, f := range sub.feeds {
			h.feeds.Release(f.target)
		}
	}
	for _, t := range ts {
		f, err := h.feeds.Acquire(t)
		if err != nil {
			release()
			return nil, ErrClosed // kit.ErrClosed: the hub closed
		}
		sub.feeds = append(sub.feeds, f)
	}
	// Under h.mu, so that Close finds the subscription either not yet
	// registered (and Subscribe fails) or complete.
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		release()
		return nil, ErrClosed
	}
	h.subs[sub] = struct{}{}
	sub.mb.onExit = func() { h.forget(sub) }
	for _, f := range sub.feeds {
		f.attach(sub.mb)
		f.ensureRunning()
	}
	sub.mb.start()
	return sub, nil
}

func uniqueTargets(targets []Target) []Target {
	var out []Target
	for _, t := range targets {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// Targets returns the targets the hub watches now (a lingering one too),
// sorted.
func (h *Hub) Targets() []Target {
	ts := h.feeds.Keys()
	slices.SortFunc(ts, func(a, b Target) int { return strings.Compare(a.String(), b.String()) })
	return ts
}

// State returns the current state of a watched target; false if the target
// is not watched or its source has published nothing yet.
func (h *Hub) State(target Target) (State, bool) {
	f, ok := h.feeds.Get(target)
	if !ok {
		return State{}, false
	}
	return f.current()
}

// WaitSynced blocks until target's source has published a complete set at
// least once. It returns at once with an error wrapping ErrNotFound,
// ErrForbidden or ErrInvalid if the source reports one of those before the
// first sync, and with an error wrapping ErrEnded (and the source's error)
// if the Watch ended before it; transient failures keep it waiting until
// ctx ends, and its error then names the last failure. A target nobody
// watches gives ErrNotWatched.
func (h *Hub) WaitSynced(ctx context.Context, target Target) error {
	f, ok := h.feeds.Get(target)
	if !ok {
		return fmt.Errorf("core: target %s: %w", target, ErrNotWatched)
	}
	return f.waitSynced(ctx)
}

// Close ends every subscription and feed and waits for all their
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
		// A subscription closed from inside its sink's Accept did not wait
		// for its goroutine: wait here (but never for the caller's own).
		for _, s := range subs {
			if !s.mb.inside() {
				s.mb.wait()
			}
		}
		h.feeds.Close()
	})
	return nil
}

// Subscription is one sink's registration for one or more targets on a Hub.
type Subscription struct {
	hub     *Hub
	name    string
	targets []Target
	feeds   []*feed // one per target, in order; set before the mailbox starts
	mb      *mailbox

	closeOnce sync.Once
}

// Targets returns the subscribed targets.
func (s *Subscription) Targets() []Target { return slices.Clone(s.targets) }

// WaitSynced waits until every target of the subscription has synced (see
// Hub.WaitSynced), and returns the first error.
func (s *Subscription) WaitSynced(ctx context.Context) error {
	var errs []error
	for _, f := range s.feeds {
		if err := f.waitSynced(ctx); err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
	}
	return errors.Join(errs...)
}

// State returns the current state of one of the subscription's targets
// (false before its first state, or for another target).
func (s *Subscription) State(t Target) (State, bool) {
	if i := slices.Index(s.targets, t); i >= 0 && i < len(s.feeds) {
		return s.feeds[i].current()
	}
	return State{}, false
}

// Close stops delivery to the sink, waits for its goroutine (cancelling the
// context of an Accept in progress), and releases the targets: the source
// stops watching a target no one else subscribes to. Idempotent. A sink may
// close its own subscription from inside Accept: Close then returns without
// waiting for itself, and the subscription's goroutine ends once that
// Accept returns (Hub.Close still waits for it).
func (s *Subscription) Close() error {
	s.closeOnce.Do(func() {
		for _, f := range s.feeds {
			f.detach(s.mb)
		}
		s.mb.stop()
		for _, f := range s.feeds {
			s.hub.feeds.Release(f.target)
		}
		if !s.mb.inside() {
			s.hub.forget(s) // else its goroutine does, as it ends
		}
	})
	return nil
}

func (h *Hub) forget(s *Subscription) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

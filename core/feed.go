package core

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/disco-lb/disco/core/kit"
)

// feed is one target's running Source.Watch, its current state, and the
// mailboxes it offers every new state to. Shared by every subscription of
// the target (the Hub's Shared holds one per target).
type feed struct {
	hub    *Hub
	target Target
	log    *zap.Logger

	mu        sync.Mutex
	stopped   bool // stop was called: nothing runs or commits any more
	running   bool // a run goroutine is active
	cancel    context.CancelFunc
	done      chan struct{}   // closed when the current run goroutine returns
	after     <-chan struct{} // closed once the target's previous feed stopped (nil: none)
	live      uint64          // the Watch attempt whose publisher counts; 0: none
	attempts  uint64
	has       bool
	seq       uint64
	state     State
	mailboxes []*mailbox
	changed   chan struct{} // closed and replaced at every change
	expiry    *time.Timer
	endErr    error // the permanent error the Watch ended with, as returned
	awaiting  bool  // restarted after it ended, and not heard from since
}

func newFeed(h *Hub, t Target, after <-chan struct{}) *feed {
	return &feed{
		hub: h, target: t, log: h.cfg.Log.With(zap.Stringer("target", t)),
		seq: h.seqFloor.Load(), changed: make(chan struct{}), after: after,
	}
}

// ensureRunning starts the source's Watch unless it runs: on the first
// subscription, and on a later one after the watch ended.
func (f *feed) ensureRunning() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped || f.running {
		return
	}
	restart := f.has && f.state.Ended
	ctx, cancel := context.WithCancel(context.Background())
	var prev <-chan struct{} = f.done // the ended run's goroutine may still be returning
	if f.done == nil {
		prev = f.after // the previous feed of the target may still be stopping
	}
	f.running, f.cancel, f.done, f.endErr = true, cancel, make(chan struct{}), nil
	if restart {
		f.log.Info("core: restarting the ended watch for a new subscriber")
		st := f.state
		st.Ended = false
		f.commitLocked(st)
		f.awaiting = true // WaitSynced waits for the new Watch's verdict
	} else {
		f.log.Info("core: watch started")
	}
	go f.run(ctx, f.done, prev)
}

func (f *feed) run(ctx context.Context, done chan struct{}, prev <-chan struct{}) {
	defer close(done)
	if prev != nil { // one Watch of a target at a time
		select {
		case <-prev:
		case <-ctx.Done():
			return
		}
	}
	backoff := f.hub.cfg.Backoff
	for attempt := 0; ; attempt++ {
		pub, ok := f.newAttempt()
		if !ok {
			return // stopped meanwhile
		}
		began := time.Now()
		err := f.hub.src.Watch(ctx, f.target, pub)
		f.endAttempt(pub.n)
		if ctx.Err() != nil {
			return
		}
		if err == nil || IsPermanent(err) {
			f.end(err)
			return
		}
		f.fail(err)
		if time.Since(began) > backoff.Max {
			attempt = 0 // it ran well for a while: start the backoff over
		}
		delay := backoff.Delay(attempt)
		f.log.Warn("core: source watch ended; restarting", zap.Duration("backoff", delay), zap.Error(err))
		if !kit.Sleep(ctx, delay) {
			return
		}
	}
}

func (f *feed) newAttempt() (publisher, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return publisher{}, false
	}
	f.attempts++
	f.live = f.attempts
	return publisher{f: f, n: f.live}, true
}

func (f *feed) endAttempt(n uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.live == n {
		f.live = 0
	}
}

// end records that the Watch returned for good (err nil or permanent).
func (f *feed) end(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running = false
	if f.stopped {
		return
	}
	st := f.state
	f.endErr = err
	if err != nil {
		f.log.Error("core: source cannot watch target; the watch ended", zap.Error(err))
		st.Stale = f.staleLocked(err)
	} else {
		f.log.Info("core: source finished watching; keeping its last state")
	}
	st.Ended = true
	f.commitLocked(st)
	f.armExpiryLocked()
}

// stop ends the feed and waits for the source's Watch to return.
func (f *feed) stop() {
	f.mu.Lock()
	f.stopped = true
	f.live = 0
	f.stopExpiryLocked()
	close(f.changed)
	cancel, done := f.cancel, f.done
	f.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	f.hub.cfg.metrics.TargetForgotten(f.target)
	f.log.Info("core: watch stopped")
}

// publisher is the Publisher of one Watch attempt: it counts only while
// that attempt is the live one.
type publisher struct {
	f *feed
	n uint64
}

var _ Publisher = publisher{}

// locked runs fn under the feed's lock if p's attempt is the live one.
func (p publisher) locked(fn func(f *feed)) {
	f := p.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.live == p.n {
		fn(f)
	}
}

// Publish implements Publisher.
func (p publisher) Publish(set Set) {
	p.locked(func(f *feed) {
		if f.has && f.state.Synced && !f.state.Stale.IsStale() && f.state.Endpoints.Equal(set) {
			return
		}
		if f.state.Stale.IsStale() {
			f.log.Info("core: target fresh again", zap.Duration("stale_for", time.Since(f.state.Stale.Since)))
		}
		f.stopExpiryLocked()
		f.commitLocked(State{Endpoints: set, Synced: true})
	})
}

// PublishStale implements Publisher.
func (p publisher) PublishStale(set Set, err error) {
	if err == nil {
		p.Publish(set)
		return
	}
	p.locked(func(f *feed) {
		stale := f.staleLocked(err)
		stale.Dropped = false // a new set
		if f.has && f.state.Synced && f.state.Stale.sameAs(stale) && f.state.Endpoints.Equal(set) {
			return
		}
		if !f.state.Stale.IsStale() {
			f.log.Warn("core: target published stale", zap.Int("endpoints", set.Len()), zap.Error(err))
		}
		f.commitLocked(State{Endpoints: set, Synced: true, Stale: stale})
		f.armExpiryLocked()
	})
}

// Fail implements Publisher.
func (p publisher) Fail(err error) {
	if err != nil {
		p.locked(func(f *feed) { f.failLocked(err) })
	}
}

func (f *feed) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.failLocked(err)
	}
}

func (f *feed) staleLocked(err error) Staleness {
	since := f.state.Stale.Since
	if since.IsZero() {
		since = time.Now()
	}
	return Staleness{Since: since, Reason: err.Error(), Kind: KindOf(err), Dropped: f.state.Stale.Dropped}
}

func (f *feed) failLocked(err error) {
	st := f.state
	reason, kind := err.Error(), KindOf(err)
	if f.has && st.Stale.IsStale() && st.Stale.Reason == reason && st.Stale.Kind == kind {
		return
	}
	if !st.Stale.IsStale() {
		f.log.Warn("core: target stale; keeping last good state",
			zap.Bool("synced", st.Synced), zap.Int("endpoints", st.Endpoints.Len()), zap.Error(err))
	}
	st.Stale = f.staleLocked(err)
	f.commitLocked(st)
	f.armExpiryLocked()
}

// armExpiryLocked starts the max-staleness timer of a stale synced state.
func (f *feed) armExpiryLocked() {
	st := f.state
	max := f.hub.cfg.maxStale
	if max <= 0 || !st.Synced || !st.Stale.IsStale() || st.Stale.Dropped || f.expiry != nil {
		return
	}
	since := st.Stale.Since
	f.expiry = time.AfterFunc(time.Until(since.Add(max)), func() { f.expire(since) })
}

// expire drops the last good endpoints of a target stale since since.
func (f *feed) expire(since time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.state
	if f.stopped || !st.Stale.Since.Equal(since) || st.Stale.Dropped {
		return
	}
	f.expiry = nil
	f.log.Warn("core: dropping last good endpoints: stale for longer than the maximum",
		zap.Duration("max_staleness", f.hub.cfg.maxStale), zap.Int("endpoints", st.Endpoints.Len()))
	st.Endpoints = Set{}
	st.Stale.Dropped = true
	f.commitLocked(st)
}

func (f *feed) stopExpiryLocked() {
	if f.expiry != nil {
		f.expiry.Stop()
		f.expiry = nil
	}
}

// commitLocked makes st the current state, numbers it and offers it to
// every mailbox.
func (f *feed) commitLocked(st State) {
	f.seq++
	for { // raise the hub's floor to this seq
		floor := f.hub.seqFloor.Load()
		if floor >= f.seq || f.hub.seqFloor.CompareAndSwap(floor, f.seq) {
			break
		}
	}
	f.state = st
	f.has = true
	f.awaiting = false // any news from the source is its verdict
	close(f.changed)
	f.changed = make(chan struct{})
	for _, mb := range f.mailboxes {
		mb.offer(f.target, f.seq, st)
	}
	f.hub.cfg.metrics.StatePublished(f.target, f.seq, st)
}

func (f *feed) current() (State, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state, f.has
}

// attach makes mb receive the target's states, starting with the current one.
func (f *feed) attach(mb *mailbox) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mailboxes = append(f.mailboxes, mb)
	mb.addLane(f.target)
	if f.has {
		mb.offer(f.target, f.seq, f.state)
	}
}

// detach stops offering states to mb and drops mb's lane for the target.
func (f *feed) detach(mb *mailbox) {
	f.mu.Lock()
	if i := slices.Index(f.mailboxes, mb); i >= 0 {
		f.mailboxes = slices.Delete(f.mailboxes, i, i+1)
	}
	f.mu.Unlock()
	mb.removeLane(f.target)
}

func (f *feed) waitSynced(ctx context.Context) error {
	for {
		f.mu.Lock()
		stopped, st, has, ch, endErr, awaiting := f.stopped, f.state, f.has, f.changed, f.endErr, f.awaiting
		f.mu.Unlock()
		switch {
		case stopped:
			return fmt.Errorf("core: target %s: %w", f.target, ErrNotWatched)
		case has && st.Synced:
			return nil
		case awaiting:
		case has && st.Ended && endErr != nil:
			return fmt.Errorf("core: target %s: %w: %w", f.target, ErrEnded, endErr)
		case has && st.Ended:
			return fmt.Errorf("core: target %s: %w before the first sync", f.target, ErrEnded)
		case has && st.Stale.IsStale() && st.Stale.Kind != KindUnavailable:
			return fmt.Errorf("core: target %s: %w", f.target, st.Stale.Err())
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if st.Stale.IsStale() {
				return fmt.Errorf("core: target %s not synced (last error: %s): %w", f.target, st.Stale.Reason, ctx.Err())
			}
			return fmt.Errorf("core: target %s not synced: %w", f.target, ctx.Err())
		}
	}
}

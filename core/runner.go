package core

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// runner feeds one sink from a latest-state-wins mailbox that holds at most
// one pending state per target, so memory stays O(targets) however far the
// sink falls behind. It is the only goroutine that calls the sink.
type runner struct {
	cfg  *config
	name string
	sink Sink

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	lifeMu  sync.Mutex
	started bool
	stopped bool

	mu    sync.Mutex
	slots map[Target]*slot
	queue []*slot // FIFO of slots with a pending state, ready now
	retry []*slot // slots waiting out a backoff
	wake  chan struct{}
}

// slot is one target's place in a runner's mailbox.
type slot struct {
	target Target

	// Guarded by runner.mu.
	gone      bool // detached
	has       bool // a pending state waits
	seq       uint64
	state     State
	queued    bool // in runner.queue
	waiting   bool // in runner.retry
	notBefore time.Time

	// Owned by the runner goroutine.
	attempt  int
	accepted bool
	accState State
}

func newRunner(cfg *config, name string, sink Sink) *runner {
	ctx, cancel := context.WithCancel(context.Background())
	return &runner{
		cfg: cfg, name: name, sink: sink,
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		slots: map[Target]*slot{},
		wake:  make(chan struct{}, 1),
	}
}

func (r *runner) start() {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	if r.started || r.stopped {
		return
	}
	r.started = true
	go r.loop()
}

// stop cancels the sink's context and waits for the goroutine. Safe before
// start and more than once.
func (r *runner) stop() {
	r.lifeMu.Lock()
	r.stopped = true
	started := r.started
	r.lifeMu.Unlock()
	r.cancel()
	if started {
		<-r.done
	}
}

func (r *runner) addSlot(t Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.slots[t] == nil {
		r.slots[t] = &slot{target: t}
	}
}

func (r *runner) removeSlot(t Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.slots[t]; s != nil {
		s.gone = true
		s.has = false
		s.state = State{}
		delete(r.slots, t)
	}
}

// offer puts the newest state of t in the mailbox, replacing (coalescing) a
// pending one. O(1), never blocks on the sink.
func (r *runner) offer(t Target, seq uint64, st State) {
	r.mu.Lock()
	s := r.slots[t]
	if s == nil {
		r.mu.Unlock()
		return
	}
	coalesced := s.has
	s.has, s.seq, s.state = true, seq, st
	if !s.queued && !s.waiting {
		s.queued = true
		r.queue = append(r.queue, s)
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	if coalesced {
		r.cfg.metrics.UpdateCoalesced(r.name, t)
	}
}

func (r *runner) loop() {
	defer close(r.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		s, st, seq, wait := r.next()
		if s != nil {
			r.deliver(s, seq, st)
			continue
		}
		if wait > 0 {
			timer.Reset(wait)
		}
		select {
		case <-r.ctx.Done():
			return
		case <-r.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// next takes the oldest ready pending state. With none, it returns how long
// until the earliest retry is due (0: nothing scheduled).
func (r *runner) next() (s *slot, st State, seq uint64, wait time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.retry) > 0 {
		now := time.Now()
		var earliest time.Time
		keep := r.retry[:0]
		for _, rs := range r.retry {
			switch {
			case rs.gone:
			case !rs.notBefore.After(now):
				rs.waiting = false
				if rs.has && !rs.queued {
					rs.queued = true
					r.queue = append(r.queue, rs)
				}
			default:
				if earliest.IsZero() || rs.notBefore.Before(earliest) {
					earliest = rs.notBefore
				}
				keep = append(keep, rs)
			}
		}
		clear(r.retry[len(keep):])
		r.retry = keep
		if !earliest.IsZero() {
			wait = max(earliest.Sub(now), time.Nanosecond)
		}
	}
	for len(r.queue) > 0 {
		s = r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
		s.queued = false
		if s.gone || s.waiting || !s.has {
			continue
		}
		st, seq = s.state, s.seq
		s.has, s.state = false, State{}
		return s, st, seq, 0
	}
	return nil, State{}, 0, wait
}

// deliver hands the sink the update from its last accepted state to st.
func (r *runner) deliver(s *slot, seq uint64, st State) {
	d := Diff(s.accState.Endpoints, st.Endpoints)
	if s.accepted && d.Empty() && s.accState.sameStatus(st) {
		return // the states in between cancelled out: nothing new for this sink
	}
	err := r.sink.Update(r.ctx, Update{Target: s.target, Seq: seq, State: st, Delta: d})
	if err == nil {
		s.accepted, s.accState, s.attempt = true, st, 0
		r.cfg.metrics.UpdateDelivered(r.name, s.target)
		return
	}
	if r.ctx.Err() != nil {
		return // shutting down
	}
	retryable := IsRetryable(err)
	r.cfg.metrics.SinkError(r.name, s.target, retryable)
	if !retryable {
		s.attempt = 0
		r.cfg.log.Error("core: sink rejected update", zap.String("sink", r.name),
			zap.Stringer("target", s.target), zap.Uint64("seq", seq), zap.Error(err))
		return
	}
	delay := r.cfg.backoff(s.attempt)
	s.attempt++
	r.cfg.log.Warn("core: sink failed; retrying with the newest state", zap.String("sink", r.name),
		zap.Stringer("target", s.target), zap.Uint64("seq", seq), zap.Int("attempt", s.attempt),
		zap.Duration("backoff", delay), zap.Error(err))
	r.mu.Lock()
	defer r.mu.Unlock()
	if s.gone {
		return
	}
	if !s.has {
		s.has, s.seq, s.state = true, seq, st
	}
	if !s.waiting {
		s.waiting = true
		r.retry = append(r.retry, s)
	}
	s.notBefore = time.Now().Add(delay)
}

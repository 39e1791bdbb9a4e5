package core

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// mailbox feeds one sink (one Subscription) from a latest-state-wins inbox
// that holds at most one pending state per target (a lane), so memory stays
// O(targets) however far the sink falls behind. Its goroutine is the only
// one that calls the sink.
type mailbox struct {
	cfg   *config
	epoch string
	name  string
	sink  Sink

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	gid    atomic.Uint64 // the loop goroutine's ID, once it runs
	onExit func()        // called by the loop goroutine as it ends (nil: none)

	lifeMu  sync.Mutex
	started bool
	stopped bool

	mu    sync.Mutex
	lanes map[Target]*lane
	queue []*lane // FIFO of lanes with a pending state, ready now
	retry []*lane // lanes waiting out a backoff
	wake  chan struct{}
}

// lane is one target's place in a mailbox.
type lane struct {
	target Target

	// Guarded by mailbox.mu.
	gone      bool // detached
	has       bool // a pending state waits
	seq       uint64
	state     State
	queued    bool // in mailbox.queue
	waiting   bool // in mailbox.retry
	notBefore time.Time

	// Owned by the mailbox goroutine.
	attempt  int
	accepted bool // accSeq and accState hold the last accepted update
	accSeq   uint64
	accState State
}

func newMailbox(cfg *config, epoch, name string, sink Sink) *mailbox {
	ctx, cancel := context.WithCancel(context.Background())
	return &mailbox{
		cfg: cfg, epoch: epoch, name: name, sink: sink,
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		lanes: map[Target]*lane{},
		wake:  make(chan struct{}, 1),
	}
}

func (m *mailbox) start() {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.started || m.stopped {
		return
	}
	m.started = true
	go m.loop()
}

// stop cancels the sink's context and waits for the goroutine, unless it
// is called from that goroutine (a sink closing its own subscription from
// inside Accept): then the goroutine ends once Accept returns. Safe before
// start and more than once.
func (m *mailbox) stop() {
	m.lifeMu.Lock()
	m.stopped = true
	started := m.started
	m.lifeMu.Unlock()
	m.cancel()
	if started && !m.inside() {
		<-m.done
	}
}

// wait waits for the goroutine, if it started.
func (m *mailbox) wait() {
	m.lifeMu.Lock()
	started := m.started
	m.lifeMu.Unlock()
	if started {
		<-m.done
	}
}

// inside reports whether the caller is the mailbox's own goroutine.
func (m *mailbox) inside() bool {
	id := m.gid.Load()
	return id != 0 && id == goid()
}

func (m *mailbox) addLane(t Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lanes[t] == nil {
		m.lanes[t] = &lane{target: t}
	}
}

func (m *mailbox) removeLane(t Target) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l := m.lanes[t]; l != nil {
		l.gone = true
		l.has = false
		l.state = State{}
		delete(m.lanes, t)
	}
}

// offer puts the newest state of t in the inbox, replacing (coalescing) a
// pending one. O(1), never blocks on the sink.
func (m *mailbox) offer(t Target, seq uint64, st State) {
	m.mu.Lock()
	l := m.lanes[t]
	if l == nil {
		m.mu.Unlock()
		return
	}
	coalesced := l.has
	l.has, l.seq, l.state = true, seq, st
	if !l.queued && !l.waiting {
		l.queued = true
		m.queue = append(m.queue, l)
	}
	m.mu.Unlock()
	m.poke()
	if coalesced {
		m.cfg.metrics.UpdateCoalesced(m.name, t)
	}
}

func (m *mailbox) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *mailbox) loop() {
	defer close(m.done)
	if m.onExit != nil {
		defer m.onExit()
	}
	m.gid.Store(goid())
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		l, st, seq, wait := m.next()
		if l != nil {
			m.deliver(l, seq, st)
			continue
		}
		if wait > 0 {
			timer.Reset(wait)
		}
		select {
		case <-m.ctx.Done():
			return
		case <-m.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// next takes the oldest ready pending state. With none, it returns how long
// until the earliest retry is due (0: nothing scheduled).
func (m *mailbox) next() (l *lane, st State, seq uint64, wait time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.retry) > 0 {
		now := time.Now()
		var earliest time.Time
		keep := m.retry[:0]
		for _, rl := range m.retry {
			switch {
			case rl.gone:
			case !rl.notBefore.After(now):
				rl.waiting = false
				if rl.has && !rl.queued {
					rl.queued = true
					m.queue = append(m.queue, rl)
				}
			default:
				if earliest.IsZero() || rl.notBefore.Before(earliest) {
					earliest = rl.notBefore
				}
				keep = append(keep, rl)
			}
		}
		clear(m.retry[len(keep):])
		m.retry = keep
		if !earliest.IsZero() {
			wait = max(earliest.Sub(now), time.Nanosecond)
		}
	}
	for len(m.queue) > 0 {
		l = m.queue[0]
		m.queue[0] = nil
		m.queue = m.queue[1:]
		l.queued = false
		if l.gone || l.waiting || !l.has {
			continue
		}
		st, seq = l.state, l.seq
		l.has, l.state = false, State{}
		return l, st, seq, 0
	}
	return nil, State{}, 0, wait
}

// deliver hands the sink the update from its last accepted state to st.
func (m *mailbox) deliver(l *lane, seq uint64, st State) {
	d := Diff(l.accState.Endpoints, st.Endpoints)
	if l.accepted && d.Empty() && l.accState.sameStatus(st) {
		return // the states in between cancelled out: nothing new for this sink
	}
	base := uint64(0)
	if l.accepted {
		base = l.accSeq
	}
	err := m.sink.Accept(m.ctx, Update{Target: l.target, Epoch: m.epoch, Seq: seq, BaseSeq: base, State: st, Delta: d})
	if err == nil {
		l.accepted, l.accSeq, l.accState, l.attempt = true, seq, st, 0
		m.cfg.metrics.UpdateDelivered(m.name, l.target)
		return
	}
	if m.ctx.Err() != nil {
		return // shutting down
	}
	if errors.Is(err, ErrResync) {
		m.cfg.metrics.SinkResync(m.name, l.target)
		l.accepted, l.accSeq, l.accState = false, 0, State{}
		if base != 0 {
			// Redeliver at once, from nothing.
			m.cfg.Log.Info("core: sink lost its state; resending the full state", zap.String("sink", m.name),
				zap.Stringer("target", l.target), zap.Uint64("seq", seq), zap.Error(err))
			m.requeue(l, seq, st, 0)
			return
		}
		// Asked again for what was already a full state: back off as for
		// any transient error.
	}
	permanent := IsPermanent(err)
	m.cfg.metrics.SinkError(m.name, l.target, !permanent)
	if permanent {
		l.attempt = 0
		m.cfg.Log.Error("core: sink rejected update", zap.String("sink", m.name),
			zap.Stringer("target", l.target), zap.Uint64("seq", seq), zap.Error(err))
		return
	}
	delay := m.cfg.Backoff.Delay(l.attempt)
	if d, ok := RetryDelay(err); ok {
		delay = d // the sink's own schedule
	}
	l.attempt++
	m.cfg.Log.Warn("core: sink failed; retrying with the newest state", zap.String("sink", m.name),
		zap.Stringer("target", l.target), zap.Uint64("seq", seq), zap.Int("attempt", l.attempt),
		zap.Duration("backoff", delay), zap.Error(err))
	m.requeue(l, seq, st, delay)
}

// requeue puts st back for another delivery after delay, unless a newer
// state is pending already.
func (m *mailbox) requeue(l *lane, seq uint64, st State, delay time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l.gone {
		return
	}
	if !l.has {
		l.has, l.seq, l.state = true, seq, st
	}
	if delay <= 0 {
		if !l.queued && !l.waiting {
			l.queued = true
			m.queue = append(m.queue, l)
		}
		return
	}
	if !l.waiting {
		l.waiting = true
		m.retry = append(m.retry, l)
	}
	l.notBefore = time.Now().Add(delay)
}

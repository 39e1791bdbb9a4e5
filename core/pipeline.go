package core

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Pipeline connects a fixed list of targets to a fixed list of sinks: a
// thin composition over a Hub, with Run(ctx) for the whole lifetime. Each
// sink is one subscription to every target (its own goroutine and
// latest-state-wins mailbox, see Sink).
//
// NewPipeline starts nothing; Run does the work until its context ends or
// Close is called.
type Pipeline struct {
	hub     *Hub
	ownHub  bool
	targets []Target
	sinks   []NamedSink

	started   atomic.Bool
	running   chan struct{} // closed once every sink is subscribed
	closing   chan struct{}
	runDone   chan struct{}
	closeOnce sync.Once
}

// NewPipeline returns a pipeline that watches targets (duplicates ignored)
// with src, through a Hub of its own configured by opts, and delivers to
// sinks. Run's end closes that Hub.
func NewPipeline(src Source, targets []Target, sinks []NamedSink, opts ...Option) *Pipeline {
	p := NewHub(src, opts...).Pipeline(targets, sinks)
	p.ownHub = true
	return p
}

// Pipeline returns a pipeline over h: its targets are watched through h,
// sharing feeds with every other subscriber of h. Run's end does not close
// h.
func (h *Hub) Pipeline(targets []Target, sinks []NamedSink) *Pipeline {
	return &Pipeline{
		hub:     h,
		targets: uniqueTargets(targets),
		sinks:   slices.Clone(sinks),
		running: make(chan struct{}),
		closing: make(chan struct{}),
		runDone: make(chan struct{}),
	}
}

// Run subscribes every sink to every target and feeds them until ctx is
// done or Close is called, then closes the subscriptions (and the pipeline's
// own Hub) and returns nil once every goroutine has exited. It fails at
// once with ErrInvalid for an invalid target or none, ErrAlreadyRunning if
// called twice and ErrClosed after Close.
func (p *Pipeline) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer close(p.runDone)
	if p.ownHub {
		defer p.hub.Close()
	}
	select {
	case <-p.closing:
		return ErrClosed
	default:
	}
	sinks := p.sinks
	if len(sinks) == 0 { // still watch, for WaitSynced and State
		sinks = []NamedSink{Named("pipeline", SinkFunc(func(context.Context, Update) error { return nil }))}
	}
	var subs []*Subscription
	defer func() {
		for _, s := range subs {
			s.Close()
		}
	}()
	for _, s := range sinks {
		sub, err := p.hub.Subscribe(s.Name, s.Sink, p.targets...)
		if err != nil {
			return fmt.Errorf("core: pipeline: %w", err)
		}
		subs = append(subs, sub)
	}
	close(p.running)
	select {
	case <-ctx.Done():
	case <-p.closing:
	}
	return nil
}

// WaitSynced blocks until target, one of the pipeline's targets, has its
// first synced state (see Hub.WaitSynced). It may be called before Run.
func (p *Pipeline) WaitSynced(ctx context.Context, target Target) error {
	if !slices.Contains(p.targets, target) {
		return fmt.Errorf("core: pipeline has no target %s: %w", target, ErrNotWatched)
	}
	select {
	case <-p.running:
	case <-p.runDone:
		return ErrClosed
	case <-p.closing:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("core: target %s not synced: pipeline not running: %w", target, ctx.Err())
	}
	return p.hub.WaitSynced(ctx, target)
}

// State returns the current state of a watched target (see Hub.State).
func (p *Pipeline) State(target Target) (State, bool) { return p.hub.State(target) }

// Close stops Run and waits until it has returned. Idempotent; a Run called
// after Close returns ErrClosed.
func (p *Pipeline) Close() error {
	p.closeOnce.Do(func() { close(p.closing) })
	if p.started.Load() {
		<-p.runDone
	} else if p.ownHub {
		p.hub.Close()
	}
	return nil
}

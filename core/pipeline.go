package core

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// NamedSink is a sink with the name its logs and metrics carry.
type NamedSink struct {
	Name string
	Sink Sink
}

// Named pairs a sink with its name.
func Named(name string, s Sink) NamedSink { return NamedSink{Name: name, Sink: s} }

// Pipeline connects one source, over a fixed list of targets, to sinks.
// Each sink gets every state of every target through its own goroutine and
// latest-state-wins mailbox (see Sink). The Pipeline's Hub serves further
// targets on demand and shares watches with the fixed ones.
//
// NewPipeline starts nothing; Run does the work until its context ends or
// Close is called.
type Pipeline struct {
	hub     *Hub
	targets []Target
	sinks   []NamedSink

	started   atomic.Bool
	running   chan struct{} // closed once every target is watched
	closing   chan struct{}
	runDone   chan struct{}
	closeOnce sync.Once
}

// NewPipeline returns a pipeline that watches targets (duplicates ignored)
// with src and delivers to sinks.
func NewPipeline(src Source, targets []Target, sinks []NamedSink, opts ...Option) *Pipeline {
	ts := slices.Clone(targets)
	slices.SortFunc(ts, func(a, b Target) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace),
			strings.Compare(a.Name, b.Name), strings.Compare(a.Port, b.Port))
	})
	return &Pipeline{
		hub:     NewHub(src, opts...),
		targets: slices.Compact(ts),
		sinks:   slices.Clone(sinks),
		running: make(chan struct{}),
		closing: make(chan struct{}),
		runDone: make(chan struct{}),
	}
}

// Run watches every target and feeds every sink until ctx is done or Close is
// called, then stops the source's watches and the sinks' goroutines (and every
// Hub subscription) and returns nil once all of them have exited. It fails at
// once with ErrInvalid for an invalid target, ErrAlreadyRunning if called
// twice and ErrClosed after Close.
func (p *Pipeline) Run(ctx context.Context) error {
	if !p.started.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	defer close(p.runDone)
	defer p.hub.Close()
	select {
	case <-p.closing:
		return ErrClosed
	default:
	}
	for _, t := range p.targets {
		if err := t.Validate(); err != nil {
			return err
		}
	}
	runners := make([]*runner, len(p.sinks))
	for i, s := range p.sinks {
		runners[i] = newRunner(&p.hub.cfg, s.Name, s.Sink)
	}
	watches := make([]*watch, 0, len(p.targets))
	defer func() {
		for _, w := range watches {
			for _, r := range runners {
				w.detach(r)
			}
		}
		for _, r := range runners {
			r.stop()
		}
		for _, w := range watches {
			p.hub.release(w)
		}
	}()
	for _, t := range p.targets {
		w, err := p.hub.acquire(t)
		if err != nil {
			return fmt.Errorf("core: pipeline: %w", err)
		}
		watches = append(watches, w)
		for _, r := range runners {
			w.attach(r)
		}
	}
	for _, r := range runners {
		r.start()
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

// Hub returns the pipeline's hub, to serve more targets on demand from the
// same source while the pipeline runs. Run's end closes it.
func (p *Pipeline) Hub() *Hub { return p.hub }

// Close stops Run and waits until it has returned. Idempotent; a Run called
// after Close returns ErrClosed.
func (p *Pipeline) Close() error {
	p.closeOnce.Do(func() { close(p.closing) })
	if p.started.Load() {
		<-p.runDone
	} else {
		p.hub.Close()
	}
	return nil
}

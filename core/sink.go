package core

import "context"

// Sink acts on the endpoints of targets: a gRPC resolver, a connection pool,
// a webhook.
type Sink interface {
	// Update delivers a new state of one target with the delta from the
	// last update of that target this sink accepted (BaseSeq; 0: from
	// nothing, the delta adds every endpoint and the sink replaces whatever
	// it holds for the target).
	//
	// Called from the sink's own goroutine (one per Subscription), one call
	// at a time for all the subscription's targets. A sink subscribed more
	// than once gets concurrent calls, one per subscription. Update may
	// block: while it does, newer states of every target coalesce in the
	// subscription's mailbox (latest state wins), and no source or other
	// sink waits. ctx is cancelled when the subscription is being closed.
	//
	// Return nil to accept the update. Errors follow core's one rule (see
	// IsPermanent): a transient error makes core retry after a jittered
	// backoff with the newest state by then (the delta recomputed from the
	// last accepted update); a permanent one is logged and counted, and the
	// update is not accepted, so the next delta still contains its changes.
	// An error wrapping ErrResync says the sink lost what it held: the next
	// update comes at once, from nothing (BaseSeq 0, every endpoint added).
	// The Update and everything it references is shared and read-only; keep
	// it as long as needed.
	Update(ctx context.Context, u Update) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, u Update) error

// Update calls f.
func (f SinkFunc) Update(ctx context.Context, u Update) error { return f(ctx, u) }

// NamedSink is a sink with the name its logs and metrics carry.
type NamedSink struct {
	Name string
	Sink Sink
}

// Named pairs a sink with its name.
func Named(name string, s Sink) NamedSink { return NamedSink{Name: name, Sink: s} }

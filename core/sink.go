package core

import "context"

// Sink acts on the endpoints of targets: a gRPC resolver, a connection pool,
// a webhook.
type Sink interface {
	// Accept takes a new state of one target. u embeds the Delta from the
	// last update of the target this sink accepted (u.BaseSeq; 0: from
	// nothing, every endpoint added: replace what you hold).
	//
	// Called from the subscription's own goroutine, one call at a time;
	// it may block: newer states coalesce meanwhile (latest wins) and no
	// source or other sink waits. ctx ends when the subscription closes.
	//
	// Return nil to accept. A transient error is retried with the newest
	// state after a backoff (or the delay of Retry); a permanent one (see
	// IsPermanent) is logged and the next delta still holds its changes;
	// ErrResync (which Set.Apply wraps) gets the full state at once. u is
	// shared and read-only.
	Accept(ctx context.Context, u Update) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, u Update) error

// Accept calls f.
func (f SinkFunc) Accept(ctx context.Context, u Update) error { return f(ctx, u) }

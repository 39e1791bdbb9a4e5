package core

import "context"

// Sink acts on the endpoints of targets: a gRPC resolver, a connection pool,
// a webhook.
type Sink interface {
	// Update delivers a new state of one target with the delta since the
	// last update of that target this sink accepted.
	//
	// Called from the sink's own goroutine (one per sink and Pipeline or
	// Subscription), one call at a time, never concurrently for one
	// registration. A sink registered with several pipelines or
	// subscriptions gets concurrent calls, one per registration. Update may
	// block: while it does, newer states of every target coalesce in the
	// sink's mailbox (latest state wins), and no source or other sink waits.
	// ctx is cancelled when the sink is being shut down.
	//
	// Return nil to accept the update. An error wrapped with Retryable makes
	// core retry after a jittered backoff with the newest state by then (and
	// the delta recomputed against the last accepted one). Any other error
	// is permanent: logged and counted, and the update is not accepted, so
	// the next delta still contains its changes. The Update and everything
	// it references is shared and read-only; keep it as long as needed.
	Update(ctx context.Context, u Update) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, u Update) error

// Update calls f.
func (f SinkFunc) Update(ctx context.Context, u Update) error { return f(ctx, u) }

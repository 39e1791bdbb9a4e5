package core

import "context"

// Source discovers the endpoints of targets.
type Source interface {
	// Watch discovers target and reports to pub until ctx is done.
	//
	// Called by a Hub (or a Pipeline), in a goroutine of its own, once per
	// target while at least one consumer wants that target: concurrent
	// demands share one call. Watch blocks. It calls pub.Publish with the
	// complete set of endpoints every time its view changes (or whenever it
	// likes: core drops a set equal to the current one), and pub.Fail when
	// it cannot reach its backend; it never publishes a partial set.
	//
	// It returns once ctx is done, promptly and with every goroutine it
	// started for this target stopped. Returning earlier ends this attempt:
	//
	//   - a permanent error (see IsPermanent: ErrInvalid, ErrNotFound,
	//     ErrForbidden, or marked with Permanent) marks the target stale
	//     with it and ends the watch: State.Ended is set, WaitSynced returns
	//     the error, and the next new subscriber of the target starts a new
	//     Watch;
	//   - any other error marks the target stale with it (the last good set
	//     stays) and the Hub calls Watch again after a jittered backoff;
	//   - nil means the source has nothing more to say: the last state stays,
	//     marked Ended.
	//
	// Each call gets a Publisher of its own: once the call has returned, its
	// Publisher ignores everything (a goroutine the source leaked, a frame
	// still in flight from a plugin). A source watching many targets may
	// share work between calls (one informer per service, say).
	Watch(ctx context.Context, target Target, pub Publisher) error
}

// Publisher receives a source's view of one target. Its methods are safe for
// concurrent use, never block on sinks, and are ignored once the watch ended.
type Publisher interface {
	// Publish replaces the target's state with exactly set, marks it synced
	// and fresh. Core derives what changed for each sink.
	Publish(set Set)
	// PublishStale replaces the target's state with exactly set, marks it
	// synced, and stale with err's message and kind, in one step: set is
	// the best the source can say, but it cannot vouch for all of it (part
	// of the backend's data was unusable and left out, or the target is
	// gone and set is empty). No sink ever sees set as fresh.
	PublishStale(set Set, err error)
	// Fail reports that the source cannot confirm the target's state now.
	// The last good set stays in force, marked stale with err's message and
	// kind (see KindOf); if the source never published, the state stays
	// unsynced and carries the error (a missing or forbidden target surfaces
	// this way). Wrap ErrNotFound, ErrForbidden, ErrInvalid or
	// ErrUnavailable to classify err.
	Fail(err error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context, target Target, pub Publisher) error

// Watch calls f.
func (f SourceFunc) Watch(ctx context.Context, target Target, pub Publisher) error {
	return f(ctx, target, pub)
}

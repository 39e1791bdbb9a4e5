// Package core is disco's typed change stream: sources discover the endpoints
// of targets, sinks act on them, and core connects any source to any sink.
// It depends on the standard library and zap only.
//
// # Data
//
// An [Endpoint] is one backend: a stable ID (a pod's UID, else its address),
// every address it has (a dual-stack pod is one endpoint), a port, its zone,
// node and hostname, the Kubernetes conditions ready, serving and
// terminating (unset ready/serving mean true, unset terminating means false),
// zone hints, an optional weight and labels. A [Set] is an immutable set of
// endpoints sorted by ID. A [State] is the complete Set of one [Target] plus
// whether the source has synced and, when it cannot reach its backend, since
// when and why it is stale. An [Update] is what a sink receives: the target,
// a sequence number, the full new State and the [Delta] since the last update
// this sink accepted.
//
// All of these are plain data (no funcs, channels or interfaces), safe to
// encode as JSON, and immutable once published: endpoints are shared by
// pointer between sets, states and sinks, and nobody may modify them.
//
// # Sources publish state; core derives change
//
// A source never computes deltas. It says "target T now has exactly this
// set" and core works out, for each sink, what was added, removed and changed
// since that sink last accepted an update. A resync cannot leave ghosts.
//
// # Writing a source
//
// Implement [Source]: one method, Watch, that core calls in its own goroutine
// for one target while someone wants that target, with a [Publisher] to
// report to. A minimal source that polls something:
//
//	type pollSource struct{ lookup func(context.Context, core.Target) ([]*core.Endpoint, error) }
//
//	func (s pollSource) Watch(ctx context.Context, t core.Target, pub core.Publisher) error {
//		tick := time.NewTicker(10 * time.Second)
//		defer tick.Stop()
//		for {
//			eps, err := s.lookup(ctx, t)
//			if err == nil {
//				var set core.Set
//				if set, err = core.NewSet(eps...); err == nil {
//					pub.Publish(set) // the complete set; equal sets are dropped by core
//				}
//			}
//			if err != nil {
//				pub.Fail(err) // keeps the last good set, marked stale
//			}
//			select {
//			case <-ctx.Done():
//				return nil
//			case <-tick.C:
//			}
//		}
//	}
//
// The rules:
//
//   - Publish only complete sets, never a part. Validate what you read with
//     [NewSet] (it names a bad endpoint); on bad data call Fail and keep
//     going: core keeps the last good set.
//   - Classify failures by wrapping [ErrNotFound], [ErrForbidden],
//     [ErrInvalid] or [ErrUnavailable]; consumers waiting for the first sync
//     fail fast on the first three and keep waiting on the last.
//   - Return from Watch promptly when ctx is done, with every goroutine you
//     started for the target stopped. Return a [Retryable] error to be
//     restarted after a backoff; any other error ends the watch for good.
//   - Never modify an endpoint after publishing it. To change one, publish a
//     set holding a new endpoint with the same ID. For large targets build
//     the next set from the previous one with [Set.With] and [Set.Without]:
//     unchanged endpoints stay shared, and core's diff then costs one
//     pointer comparison per unchanged endpoint.
//   - Share expensive work between targets inside the source (one informer
//     per service, say); core already guarantees one Watch call per target.
//
// # Writing a sink
//
// Implement [Sink] (or use [SinkFunc]). Update is called from the sink's own
// goroutine, one call at a time, and may block: newer states coalesce in its
// mailbox meanwhile, one per target, and no one else waits. Return an error
// wrapped with [Retryable] to get the newest state again after a jittered
// backoff; other errors are logged and counted.
//
// # Running
//
// A [Pipeline] watches a fixed list of targets and feeds its sinks until its
// Run's context ends. A [Hub] serves targets on demand: [Hub.Subscribe]
// starts the source's watch of a target (or shares the running one), and the
// last [Subscription.Close] stops it. Both let a consumer wait for the first
// synced state (WaitSynced) instead of sleeping. [Static] is a source of fixed
// endpoints; package coretest has a recording sink and a scripted source for
// tests.
//
// # Observability
//
// Pass a zap logger with [WithLogger] (lifecycle and errors are logged) and a
// [Metrics] with [WithMetrics] (updates per target, coalesced updates, sink
// errors, staleness). [Stats] keeps them in memory for a program to read;
// other modules adapt Metrics to Prometheus.
package core

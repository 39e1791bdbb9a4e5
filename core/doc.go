// Package core is disco's typed change stream: sources discover the endpoints
// of targets, sinks act on them, and core connects any source to any sink, in
// one process or, through its wire form, across a process boundary. It
// depends on the standard library and zap only.
//
// # Data
//
// A [Target] names what is discovered (a service in a namespace and a port;
// a DNS name; a file key); [ParseTarget] reads the one text syntax every
// disco module uses. An [Endpoint] is one backend: a stable ID (a pod's UID,
// else its address), every address it has (a dual-stack pod is one
// endpoint), a port, its zone, node and hostname, the Kubernetes conditions
// ready, serving and terminating (unset ready/serving mean true, unset
// terminating means false), zone hints, an optional weight and labels. A
// [Set] is an immutable, persistent set of endpoints sorted by ID. A [State]
// is the complete Set of one target plus whether the source has synced, and,
// when it cannot reach its backend, since when and why it is stale, and
// whether its watch ended. An [Update] is what a sink receives: the target,
// the hub's epoch, a sequence number, the full new State and the [Delta]
// from the update of BaseSeq (the last one this sink accepted).
//
// All of these are plain data (no funcs, channels or interfaces) and
// immutable once published: endpoints are shared by pointer between sets,
// states and sinks, and nobody may modify them.
//
// # Sources publish state; core derives change
//
// A source never computes deltas. It says "target T now has exactly this
// set" and core works out, for each sink, what was added, removed and changed
// since that sink last accepted an update. A resync cannot leave ghosts.
//
// # One engine: the Hub
//
// A [Hub] serves the targets of one source. [Hub.Subscribe] registers a sink
// for one or more targets: the first subscription of a target starts the
// source's Watch of it (its feed), later ones share the feed and get its
// current state at once, and the last one to leave stops it (after
// [WithLinger]'s grace period). Share one Hub per source in a process: a
// gRPC resolver with many ClientConns, a connection pool and a webhook on the
// same target then cost one Watch. A [Pipeline] is a thin composition over a
// Hub for a fixed list of targets and sinks, run for a context's lifetime.
// Consumers wait for the first synced state with WaitSynced instead of
// sleeping.
//
// # Updates on both sides of a wire
//
// Seq strictly increases per target within an epoch (a random ID per Hub),
// so a receiver in another process tells a sender's restart (a new epoch)
// from states it did not need (a gap). Each Delta is relative to BaseSeq:
// [Set.Apply] of the delta to that state gives the new one. BaseSeq 0 means
// "from nothing": every endpoint is added, and a sink replaces whatever it
// held. A sink that lost its state returns [ErrResync] and gets such an
// update at once. [Update.Wire] gives the wire form ([WireUpdate], schema
// [WireSchema], documented in SCHEMA.md), full or delta-only (O(changed)
// bytes); [DecodeWire] and a [Replica] rebuild Updates on the receiving side.
//
// # One error rule
//
// For sources and sinks alike ([IsPermanent]): an error is retried with a
// jittered backoff ([Backoff]) unless it wraps [ErrInvalid], [ErrNotFound] or
// [ErrForbidden], or is marked [Permanent]; [Retryable] overrides a
// classification. A Watch that returns a permanent error ends (State.Ended,
// WaitSynced returns the error) until a new subscriber restarts it; a
// transient one restarts it after a backoff. A sink's permanent error is
// logged and counted, a transient one retried with the newest state.
//
// # Writing a source
//
// Implement [Source]: one method, Watch, that core calls in a goroutine of
// its own for one target while someone wants that target, with a
// [Publisher] to report to. A minimal source that polls something:
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
//     started for the target stopped. Returning earlier follows the error
//     rule above; nil ends the watch keeping its last state.
//   - Never modify an endpoint after publishing it. To change one, publish a
//     set holding a new endpoint with the same ID. For large targets build
//     the next set from the previous one with [Set.With] and [Set.Without]:
//     unchanged endpoints stay shared, and core's diff then costs one
//     pointer comparison per unchanged endpoint.
//   - Share expensive work between targets inside the source (one informer
//     per service, say); [Shared] counts users of a shared value. Core
//     guarantees one Watch call per target per Hub, but two Hubs may watch
//     the same target at once.
//
// Package coretest's TestSource is the conformance suite every source must
// pass.
//
// # Writing a sink
//
// Implement [Sink] (or use [SinkFunc]). Update is called from the
// subscription's own goroutine, one call at a time, and may block: newer
// states coalesce in its mailbox meanwhile, one per target, and no one else
// waits. Apply the delta (or, with BaseSeq 0, replace what you hold); route
// with [Routable] and [Locality] so every sink follows the same rules;
// return errors by the rule above, or [ErrResync] if you lost your state.
// Package coretest's TestSink is the conformance suite every sink must pass.
//
// # Observability
//
// Pass a zap logger with [WithLogger] (lifecycle and errors are logged) and a
// [Metrics] with [WithMetrics] (updates per target, coalesced updates, sink
// errors and resyncs, staleness). [Stats] keeps them in memory for a program
// to read; other modules adapt Metrics to Prometheus.
package core

// Package core is disco's contract: sources discover the endpoints of
// targets, sinks act on them, and a Hub connects any source to any sink.
// It depends on the standard library and zap only; the mechanisms beside
// it live in packages that say what they do: wire (the update across a
// process boundary), route (which endpoints take traffic, and zones), kit
// (backoff, shared values, options) and coretest (conformance suites).
//
// # The contract
//
//   - A Target names what is discovered (ParseTarget reads the one text
//     syntax). An Endpoint is one backend, with a stable ID. A Set is the
//     immutable, sorted set of a target's endpoints. A State is the
//     complete Set of a target, whether the source synced, and since when
//     and why it is stale.
//   - A Source's Watch publishes complete sets (Publisher.Publish), never
//     a part, and failures (Publisher.Fail: the last good set stays,
//     stale). Core derives what changed.
//   - A Sink's Accept gets an Update: the new State and, embedded, the
//     Delta from the last update of the target this sink accepted (BaseSeq;
//     0: from nothing). Set.Apply of the delta to what the sink holds gives
//     the new set, or an error wrapping ErrResync, which gets the full
//     state at once.
//   - A Hub serves one source's targets: Hub.Subscribe, the one way in,
//     starts the target's Watch for the first subscriber and shares it;
//     the last Close stops it. Each subscription has its own goroutine and
//     a latest-state-wins mailbox, so a slow sink delays no one. Names of
//     subscriptions label logs and metrics; they need not be unique.
//   - One error rule (IsPermanent): an error is retried with a backoff
//     unless it wraps ErrInvalid, ErrNotFound or ErrForbidden, or is
//     marked Permanent; Retry overrides the classification and may carry a
//     delay.
//
// Seq strictly increases per target within an epoch (random per hub), so
// a receiver in another process tells a restart from states it did not
// need. Every guarantee above has a test; the README lists them, and
// explains how to write a source and a sink. Package coretest's TestSource
// and TestSink are the conformance suites every source and sink passes.
package core

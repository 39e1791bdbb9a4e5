package core

import "time"

// State is the complete view of one target at one moment: every endpoint the
// source knows (never a part), whether the source has synced at least once,
// and, while the source cannot reach its backend, since when and why.
//
// States are values built by core and shared by every sink; nothing reachable
// from one may be modified.
type State struct {
	// Endpoints is the complete set, sorted by ID. Empty with Synced set is a
	// real answer: the target has no endpoints (scale to zero).
	Endpoints Set `json:"endpoints"`
	// Synced is true once the source has published a complete set. Before
	// that Endpoints is empty and means "not known yet", not "none".
	Synced bool `json:"synced"`
	// Stale is set while the source cannot confirm Endpoints; they are the
	// last good set, kept in force. The zero value means fresh.
	Stale Staleness `json:"stale,omitzero"`
	// Ended is set once the source's Watch of the target has returned for
	// good (a permanent error, which Stale then carries, or the source had
	// nothing more to say). The state will not change until the target is
	// subscribed to anew, which restarts the Watch.
	Ended bool `json:"ended,omitempty"`
}

// Staleness says since when and why a state may no longer match its backend.
// The zero value means fresh.
type Staleness struct {
	// Since is when the source first failed; zero when fresh.
	Since time.Time `json:"since,omitzero"`
	// Reason is the source's latest error message.
	Reason string `json:"reason,omitempty"`
	// Kind classifies Reason (see KindOf).
	Kind ErrorKind `json:"kind,omitempty"`
	// Dropped is true once the last good endpoints were dropped because the
	// state stayed stale longer than the configured maximum (WithMaxStaleness).
	Dropped bool `json:"dropped,omitempty"`
}

// IsStale reports whether the state is stale.
func (s Staleness) IsStale() bool { return !s.Since.IsZero() }

// Err returns the staleness as an error whose message is Reason and which
// wraps the sentinel of Kind (errors.Is(err, ErrNotFound), say), or nil when
// fresh.
func (s Staleness) Err() error {
	if !s.IsStale() {
		return nil
	}
	return staleError{reason: s.Reason, kind: s.Kind}
}

type staleError struct {
	reason string
	kind   ErrorKind
}

func (e staleError) Error() string { return e.reason }
func (e staleError) Unwrap() error { return e.kind.Sentinel() }

// sameStatus reports whether two states agree on everything but endpoints.
func (s State) sameStatus(o State) bool {
	return s.Synced == o.Synced && s.Stale.sameAs(o.Stale) && s.Ended == o.Ended
}

func (s Staleness) sameAs(o Staleness) bool {
	return s.Since.Equal(o.Since) && s.Reason == o.Reason && s.Kind == o.Kind && s.Dropped == o.Dropped
}

// Update is what a sink receives: the new complete state of one target and,
// embedded, the Delta from the last update of that target this sink
// accepted. Updates are values; their slices and endpoints are shared and
// must not be modified. Across a process boundary an Update travels in
// package wire's form.
type Update struct {
	// Target the update is about.
	Target Target `json:"target"`
	// Epoch identifies the Hub that numbered the update: a random ID made
	// when the Hub was created. A receiver in another process that sees a
	// new epoch knows the sender restarted and its Seq starts over.
	Epoch string `json:"epoch"`
	// Seq numbers the states of the target within an epoch: it strictly
	// increases from one update of the target to the next, for every sink.
	// A gap means states in between were coalesced (the sink got the newest
	// one) or the target's watch was restarted; the Delta is still exact,
	// because it is taken from BaseSeq.
	Seq uint64 `json:"seq"`
	// BaseSeq is the Seq of the update the Delta starts from: the last one
	// of the target this sink accepted. 0 means "from nothing": the Delta
	// adds every endpoint (a first update, or a resync after ErrResync), and
	// a sink that holds anything for the target replaces it.
	BaseSeq uint64 `json:"baseSeq,omitempty"`
	// State is the complete new state.
	State State `json:"state"`
	// Delta holds the endpoints added, removed and changed since BaseSeq:
	// applying it to that update's endpoints gives State.Endpoints.
	Delta
}

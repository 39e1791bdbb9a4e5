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
	// last good set, kept in force.
	Stale Staleness `json:"stale"`
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
	return s.Synced == o.Synced && s.Stale == o.Stale
}

// Update is what a sink receives: the new complete state of one target and
// the delta since the last update of that target this sink accepted (the
// first update's delta adds every endpoint). Updates are values; their
// slices and endpoints are shared and must not be modified.
type Update struct {
	// Target the update is about.
	Target Target `json:"target"`
	// Seq numbers the states of the target; it strictly increases across the
	// updates a sink accepts. Gaps mean intermediate states were coalesced.
	Seq uint64 `json:"seq"`
	// State is the complete new state.
	State State `json:"state"`
	// Delta holds the endpoints added, removed and changed since the last
	// update of this target that this sink accepted.
	Delta
}

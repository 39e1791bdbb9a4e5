package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// WireSchema names the wire form of an Update that webhooks (JSON) and
// plugins (protobuf, field for field) share. Additive changes (new optional
// fields) keep the name; receivers ignore fields they do not know. A change
// that breaks receivers would be "disco.update.v2". See SCHEMA.md.
const WireSchema = "disco.update.v1"

// WireForm selects how much of the state a WireUpdate carries.
type WireForm int

const (
	// FullForm carries the complete set of endpoints, and the delta since
	// BaseSeq as well: a receiver can replace what it holds, whatever it
	// missed.
	FullForm WireForm = iota
	// DeltaForm carries only what changed since BaseSeq: O(changed) bytes,
	// whatever the size of the target. A receiver applies it to the state of
	// BaseSeq; one that does not hold that state asks for a resync.
	DeltaForm
)

// WireUpdate is an Update as it crosses a process boundary: plain fields,
// the delta as new versions of added and changed endpoints and IDs of removed
// ones, and the complete set only in the full form. Build one with
// Update.Wire, decode one with DecodeWire, and turn a stream of them back
// into Updates with a Replica.
type WireUpdate struct {
	// Schema is WireSchema.
	Schema string `json:"schema"`
	// Target, Epoch, Seq and BaseSeq are the Update's (see Update).
	Target  Target `json:"target"`
	Epoch   string `json:"epoch"`
	Seq     uint64 `json:"seq"`
	BaseSeq uint64 `json:"baseSeq,omitempty"`
	// Synced, Stale and Ended are the State's; Stale is absent when fresh.
	Synced bool       `json:"synced"`
	Stale  *Staleness `json:"stale,omitempty"`
	Ended  bool       `json:"ended,omitempty"`
	// Count is the number of endpoints of the complete state, so that a
	// receiver applying a delta can check it ends where the sender is.
	Count int `json:"count"`
	// Endpoints is the complete set (full form only; nil in the delta form,
	// an empty array for an empty full state).
	Endpoints *Set `json:"endpoints,omitempty"`
	// Added and Changed hold the new versions of endpoints added and changed
	// since BaseSeq; Removed the IDs of endpoints removed. Each in ID order.
	Added   []*Endpoint `json:"added,omitempty"`
	Changed []*Endpoint `json:"changed,omitempty"`
	Removed []string    `json:"removed,omitempty"`
}

// Wire returns u in the wire form. Endpoints are shared, not copied.
func (u Update) Wire(form WireForm) WireUpdate {
	w := WireUpdate{
		Schema: WireSchema, Target: u.Target, Epoch: u.Epoch, Seq: u.Seq, BaseSeq: u.BaseSeq,
		Synced: u.State.Synced, Ended: u.State.Ended, Count: u.State.Endpoints.Len(),
		Added: u.Added,
	}
	if u.State.Stale.IsStale() {
		st := u.State.Stale
		w.Stale = &st
	}
	if form == FullForm {
		set := u.State.Endpoints
		w.Endpoints = &set
	}
	if len(u.Changed) > 0 {
		w.Changed = make([]*Endpoint, len(u.Changed))
		for i, c := range u.Changed {
			w.Changed[i] = c.New
		}
	}
	if len(u.Removed) > 0 {
		w.Removed = make([]string, len(u.Removed))
		for i, e := range u.Removed {
			w.Removed[i] = e.ID
		}
	}
	return w
}

// MarshalJSON encodes u in the full wire form.
func (u Update) MarshalJSON() ([]byte, error) { return json.Marshal(u.Wire(FullForm)) }

// DecodeWire decodes and validates a JSON WireUpdate. Errors wrap ErrInvalid
// and say what is wrong: not JSON, another schema, no target name, an
// invalid or duplicate endpoint.
func DecodeWire(data []byte) (WireUpdate, error) {
	var w WireUpdate
	if err := json.Unmarshal(data, &w); err != nil {
		return WireUpdate{}, fmt.Errorf("core: decode update: %w: %w", err, ErrInvalid)
	}
	if err := w.Validate(); err != nil {
		return WireUpdate{}, err
	}
	return w, nil
}

// Validate checks what a receiver relies on: the schema, a target name, an
// epoch, valid endpoints without duplicate IDs in the delta, and a Count that
// matches the full set. Errors wrap ErrInvalid.
func (w WireUpdate) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("core: update of %s seq %d: %s: %w", w.Target, w.Seq, fmt.Sprintf(format, args...), ErrInvalid)
	}
	switch {
	case w.Schema != WireSchema && !strings.HasPrefix(w.Schema, WireSchema+"."):
		return bad("schema %q, want %q", w.Schema, WireSchema)
	case w.Target.Validate() != nil:
		return bad("no target name")
	case w.Epoch == "":
		return bad("no epoch")
	case w.Seq == 0:
		return bad("seq 0")
	case w.BaseSeq >= w.Seq:
		return bad("baseSeq %d not below seq", w.BaseSeq)
	case w.Count < 0:
		return bad("count %d", w.Count)
	case w.Endpoints != nil && w.Endpoints.Len() != w.Count:
		return bad("count %d but %d endpoints", w.Count, w.Endpoints.Len())
	case w.Stale != nil && !w.Stale.IsStale():
		return bad("stale without since")
	case w.BaseSeq == 0 && len(w.Changed)+len(w.Removed) > 0:
		return bad("a delta from nothing (baseSeq 0) changes or removes endpoints")
	}
	seen := make(map[string]string, len(w.Added)+len(w.Changed)+len(w.Removed))
	note := func(id, list string) error {
		if prev, dup := seen[id]; dup {
			return bad("endpoint %q both in %s and %s", id, prev, list)
		}
		seen[id] = list
		return nil
	}
	for _, list := range []struct {
		name string
		eps  []*Endpoint
	}{{"added", w.Added}, {"changed", w.Changed}} {
		for _, e := range list.eps {
			if err := e.Validate(); err != nil {
				return bad("%s: %v", list.name, err)
			}
			if e.ID == "" {
				return bad("%s: endpoint without id", list.name)
			}
			if err := note(e.ID, list.name); err != nil {
				return err
			}
		}
	}
	for _, id := range w.Removed {
		if id == "" {
			return bad("removed: empty id")
		}
		if err := note(id, "removed"); err != nil {
			return err
		}
	}
	return nil
}

// Replica rebuilds, on the receiving side of a wire, the state of every
// target from WireUpdates, and turns each into the Update an in-process
// sink would have got: the complete State, and a Delta against what the
// replica held. Next computes without changing anything, Commit records,
// so that a receiver commits only what its own sink accepted. Safe for
// concurrent use; memory is one state per target, shared with the Updates.
type Replica struct {
	mu      sync.Mutex
	targets map[Target]replicaEntry
}

type replicaEntry struct {
	epoch string
	seq   uint64
	state State
}

// NewReplica returns an empty replica.
func NewReplica() *Replica { return &Replica{targets: map[Target]replicaEntry{}} }

// Next returns the Update that w makes of what r holds for w.Target:
//
//   - w is not newer than what r holds (same epoch, seq not above): an error
//     wrapping ErrDuplicate (a retried or late delivery: acknowledge it,
//     apply nothing);
//   - full form, or a delta from nothing (BaseSeq 0): the new state
//     replaces what r holds, whatever it was;
//   - delta form: applied to what r holds, which must be the state of
//     w.BaseSeq in w.Epoch; otherwise, or if the result does not have
//     w.Count endpoints, an error wrapping ErrResync (ask for the full
//     state).
//
// The Update's BaseSeq and Delta are relative to what r held (BaseSeq 0 if
// nothing in this epoch).
func (r *Replica) Next(w WireUpdate) (Update, error) {
	if err := w.Validate(); err != nil {
		return Update{}, err
	}
	r.mu.Lock()
	held, has := r.targets[w.Target]
	r.mu.Unlock()
	sameEpoch := has && held.epoch == w.Epoch
	if sameEpoch && w.Seq <= held.seq {
		return Update{}, fmt.Errorf("core: update of %s seq %d: holding seq %d: %w", w.Target, w.Seq, held.seq, ErrDuplicate)
	}
	u := Update{Target: w.Target, Epoch: w.Epoch, Seq: w.Seq,
		State: State{Synced: w.Synced, Ended: w.Ended}}
	if w.Stale != nil {
		u.State.Stale = *w.Stale
	}
	if sameEpoch {
		u.BaseSeq = held.seq
	}
	var next Set
	switch {
	case w.Endpoints != nil:
		next = *w.Endpoints
	case w.BaseSeq == 0:
		set, err := NewSet(w.Added...)
		if err != nil {
			return Update{}, fmt.Errorf("core: update of %s seq %d: %w", w.Target, w.Seq, err)
		}
		next = set
	case !sameEpoch || held.seq != w.BaseSeq:
		heldAt := "nothing"
		if has {
			heldAt = fmt.Sprintf("epoch %s seq %d", held.epoch, held.seq)
		}
		return Update{}, fmt.Errorf("core: update of %s seq %d is a delta from epoch %s seq %d, holding %s: %w",
			w.Target, w.Seq, w.Epoch, w.BaseSeq, heldAt, ErrResync)
	default:
		d := Delta{Added: w.Added, Removed: make([]*Endpoint, 0, len(w.Removed)), Changed: make([]Change, 0, len(w.Changed))}
		for _, id := range w.Removed {
			e, ok := held.state.Endpoints.Get(id)
			if !ok {
				return Update{}, fmt.Errorf("core: update of %s seq %d removes %q, not held: %w", w.Target, w.Seq, id, ErrResync)
			}
			d.Removed = append(d.Removed, e)
		}
		for _, e := range w.Changed {
			old, ok := held.state.Endpoints.Get(e.ID)
			if !ok {
				return Update{}, fmt.Errorf("core: update of %s seq %d changes %q, not held: %w", w.Target, w.Seq, e.ID, ErrResync)
			}
			d.Changed = append(d.Changed, Change{Old: old, New: e})
		}
		set, err := held.state.Endpoints.Apply(d)
		if err != nil {
			return Update{}, fmt.Errorf("core: update of %s seq %d: %w", w.Target, w.Seq, err)
		}
		if set.Len() != w.Count {
			return Update{}, fmt.Errorf("core: update of %s seq %d: %d endpoints after the delta, sender has %d: %w",
				w.Target, w.Seq, set.Len(), w.Count, ErrResync)
		}
		u.State.Endpoints, u.Delta = set, d
		return u, nil
	}
	if next.Len() != w.Count {
		return Update{}, fmt.Errorf("core: update of %s seq %d: %d endpoints, count says %d: %w", w.Target, w.Seq, next.Len(), w.Count, ErrInvalid)
	}
	u.State.Endpoints = next
	var base Set
	if sameEpoch {
		base = held.state.Endpoints
	}
	u.Delta = Diff(base, next)
	return u, nil
}

// Commit records u (from Next) as what r holds for u.Target, unless r
// holds a newer update of the same epoch already: within an epoch commits
// only move forward, whatever order concurrent receivers commit in; an
// update of another epoch replaces what r holds (the sender restarted).
func (r *Replica) Commit(u Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if held, ok := r.targets[u.Target]; ok && held.epoch == u.Epoch && held.seq >= u.Seq {
		return
	}
	r.targets[u.Target] = replicaEntry{epoch: u.Epoch, seq: u.Seq, state: u.State}
}

// Apply is Next followed by Commit.
func (r *Replica) Apply(w WireUpdate) (Update, error) {
	u, err := r.Next(w)
	if err != nil {
		return Update{}, err
	}
	r.Commit(u)
	return u, nil
}

// SinkError is a sink's own error from Replica.Deliver, as opposed to an
// error about the update.
type SinkError struct{ Err error }

func (e *SinkError) Error() string { return e.Err.Error() }
func (e *SinkError) Unwrap() error { return e.Err }

// Deliver is the receiving side of a wire in one call: it hands sink the
// Update that w makes of what r holds (Next), and records it (Commit) once
// the sink accepted it. Its errors are Next's, about w (ErrDuplicate:
// acknowledge, nothing to do; ErrResync; ErrInvalid), or the sink's,
// wrapped in *SinkError; a sink that lost its state (ErrResync) makes r
// forget the target, so that the full state replaces it.
func (r *Replica) Deliver(ctx context.Context, w WireUpdate, sink Sink) error {
	u, err := r.Next(w)
	if err != nil {
		return err
	}
	if err := sink.Update(ctx, u); err != nil {
		if errors.Is(err, ErrResync) {
			r.Forget(u.Target)
		}
		return &SinkError{Err: err}
	}
	r.Commit(u)
	return nil
}

// State returns what r holds for t, with its epoch and seq.
func (r *Replica) State(t Target) (st State, epoch string, seq uint64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.targets[t]
	return e.state, e.epoch, e.seq, ok
}

// Targets returns the targets r holds a state for.
func (r *Replica) Targets() []Target {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Target, 0, len(r.targets))
	for t := range r.targets {
		out = append(out, t)
	}
	return out
}

// Forget drops what r holds for t (the next delta for it needs a resync).
func (r *Replica) Forget(t Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.targets, t)
}

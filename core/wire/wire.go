// Package wire is core's update as it crosses a process boundary: the
// schema webhooks (JSON) and plugins (protobuf, field for field) share, and
// the Replica that rebuilds, on the receiving side, the updates an
// in-process sink would have got. See SCHEMA.md.
package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/disco-lb/disco/core"
)

// ErrDuplicate is wrapped by Replica.Next for a message that is not newer
// than the update it holds (a retried or late delivery): acknowledge it and
// apply nothing.
var ErrDuplicate = errors.New("wire: update already applied")

// Schema names the wire form of a core.Update that webhooks (JSON) and
// plugins (protobuf, field for field) share. Additive changes (new optional
// fields) keep the name; receivers ignore fields they do not know. A change
// that breaks receivers would be "disco.update.v2". See SCHEMA.md.
const Schema = "disco.update.v1"

// Form selects how much of the state a Message carries.
type Form int

const (
	// FullForm carries the complete set of endpoints, and the delta since
	// BaseSeq as well: a receiver can replace what it holds, whatever it
	// missed.
	FullForm Form = iota
	// DeltaForm carries only what changed since BaseSeq: O(changed) bytes,
	// whatever the size of the target. A receiver applies it to the state of
	// BaseSeq; one that does not hold that state asks for a resync.
	DeltaForm
)

// Message is a core.Update as it crosses a process boundary: plain fields,
// the delta as new versions of added and changed endpoints and IDs of
// removed ones, and the complete set only in the full form. Build one with
// From, decode one with Decode, and turn a stream of them back into
// core.Updates with a Replica.
type Message struct {
	// Schema is Schema.
	Schema string `json:"schema"`
	// Target, Epoch, Seq and BaseSeq are the Update's (see core.Update).
	Target  core.Target `json:"target"`
	Epoch   string      `json:"epoch"`
	Seq     uint64      `json:"seq"`
	BaseSeq uint64      `json:"baseSeq,omitempty"`
	// Synced, Stale and Ended are the State's; Stale is absent when fresh.
	Synced bool            `json:"synced"`
	Stale  *core.Staleness `json:"stale,omitempty"`
	Ended  bool            `json:"ended,omitempty"`
	// Count is the number of endpoints of the complete state, so that a
	// receiver applying a delta can check it ends where the sender is.
	Count int `json:"count"`
	// Endpoints is the complete set (full form only; nil in the delta form,
	// an empty array for an empty full state).
	Endpoints *core.Set `json:"endpoints,omitempty"`
	// Added and Changed hold the new versions of endpoints added and changed
	// since BaseSeq; Removed the IDs of endpoints removed. Each in ID order.
	Added   []*core.Endpoint `json:"added,omitempty"`
	Changed []*core.Endpoint `json:"changed,omitempty"`
	Removed []string         `json:"removed,omitempty"`
}

// From returns u in the wire form. Endpoints are shared, not copied.
func From(u core.Update, form Form) Message {
	w := Message{
		Schema: Schema, Target: u.Target, Epoch: u.Epoch, Seq: u.Seq, BaseSeq: u.BaseSeq,
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
		w.Changed = make([]*core.Endpoint, len(u.Changed))
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

// Decode decodes and validates a JSON Message. Errors wrap core.ErrInvalid
// and say what is wrong: not JSON, another schema, no target name, an
// invalid or duplicate endpoint.
func Decode(data []byte) (Message, error) {
	var w Message
	if err := json.Unmarshal(data, &w); err != nil {
		return Message{}, fmt.Errorf("wire: decode update: %w: %w", err, core.ErrInvalid)
	}
	if err := w.Validate(); err != nil {
		return Message{}, err
	}
	return w, nil
}

// Validate checks what a receiver relies on: the schema, a target name, an
// epoch, valid endpoints without duplicate IDs in the delta, and a Count that
// matches the full set. Errors wrap core.ErrInvalid.
func (w Message) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("wire: update of %s seq %d: %s: %w", w.Target, w.Seq, fmt.Sprintf(format, args...), core.ErrInvalid)
	}
	switch {
	case w.Schema != Schema && !strings.HasPrefix(w.Schema, Schema+"."):
		return bad("schema %q, want %q", w.Schema, Schema)
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
		eps  []*core.Endpoint
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
// target from Messages, and turns each into the core.Update an in-process
// sink would have got: the complete State, and a Delta against what the
// replica held. Next computes without changing anything, Commit records,
// so that a receiver commits only what its own sink accepted. Safe for
// concurrent use; memory is one state per target, shared with the Updates.
type Replica struct {
	mu      sync.Mutex
	targets map[core.Target]replicaEntry
}

type replicaEntry struct {
	epoch string
	seq   uint64
	state core.State
}

// NewReplica returns an empty replica.
func NewReplica() *Replica { return &Replica{targets: map[core.Target]replicaEntry{}} }

// Next returns the Update that w makes of what r holds for w.Target:
//
//   - w is not newer than what r holds (same epoch, seq not above): an error
//     wrapping ErrDuplicate (a retried or late delivery: acknowledge it,
//     apply nothing);
//   - full form, or a delta from nothing (BaseSeq 0): the new state
//     replaces what r holds, whatever it was;
//   - delta form: applied to what r holds, which must be the state of
//     w.BaseSeq in w.Epoch; otherwise, or if the result does not have
//     w.Count endpoints, an error wrapping core.ErrResync (ask for the
//     full state).
//
// The Update's BaseSeq and Delta are relative to what r held (BaseSeq 0 if
// nothing in this epoch).
func (r *Replica) Next(w Message) (core.Update, error) {
	if err := w.Validate(); err != nil {
		return core.Update{}, err
	}
	r.mu.Lock()
	held, has := r.targets[w.Target]
	r.mu.Unlock()
	sameEpoch := has && held.epoch == w.Epoch
	if sameEpoch && w.Seq <= held.seq {
		return core.Update{}, fmt.Errorf("wire: update of %s seq %d: holding seq %d: %w", w.Target, w.Seq, held.seq, ErrDuplicate)
	}
	u := core.Update{Target: w.Target, Epoch: w.Epoch, Seq: w.Seq,
		State: core.State{Synced: w.Synced, Ended: w.Ended}}
	if w.Stale != nil {
		u.State.Stale = *w.Stale
	}
	if sameEpoch {
		u.BaseSeq = held.seq
	}
	var next core.Set
	switch {
	case w.Endpoints != nil:
		next = *w.Endpoints
	case w.BaseSeq == 0:
		set, err := core.NewSet(w.Added...)
		if err != nil {
			return core.Update{}, fmt.Errorf("wire: update of %s seq %d: %w", w.Target, w.Seq, err)
		}
		next = set
	case !sameEpoch || held.seq != w.BaseSeq:
		heldAt := "nothing"
		if has {
			heldAt = fmt.Sprintf("epoch %s seq %d", held.epoch, held.seq)
		}
		return core.Update{}, fmt.Errorf("wire: update of %s seq %d is a delta from epoch %s seq %d, holding %s: %w",
			w.Target, w.Seq, w.Epoch, w.BaseSeq, heldAt, core.ErrResync)
	default:
		d := core.Delta{Added: w.Added, Removed: make([]*core.Endpoint, 0, len(w.Removed)), Changed: make([]core.Change, 0, len(w.Changed))}
		for _, id := range w.Removed {
			e, ok := held.state.Endpoints.Get(id)
			if !ok {
				return core.Update{}, fmt.Errorf("wire: update of %s seq %d removes %q, not held: %w", w.Target, w.Seq, id, core.ErrResync)
			}
			d.Removed = append(d.Removed, e)
		}
		for _, e := range w.Changed {
			old, ok := held.state.Endpoints.Get(e.ID)
			if !ok {
				return core.Update{}, fmt.Errorf("wire: update of %s seq %d changes %q, not held: %w", w.Target, w.Seq, e.ID, core.ErrResync)
			}
			d.Changed = append(d.Changed, core.Change{Old: old, New: e})
		}
		set, err := held.state.Endpoints.Apply(d)
		if err != nil {
			return core.Update{}, fmt.Errorf("wire: update of %s seq %d: %w", w.Target, w.Seq, err)
		}
		if set.Len() != w.Count {
			return core.Update{}, fmt.Errorf("wire: update of %s seq %d: %d endpoints after the delta, sender has %d: %w",
				w.Target, w.Seq, set.Len(), w.Count, core.ErrResync)
		}
		u.State.Endpoints, u.Delta = set, d
		return u, nil
	}
	if next.Len() != w.Count {
		return core.Update{}, fmt.Errorf("wire: update of %s seq %d: %d endpoints, count says %d: %w", w.Target, w.Seq, next.Len(), w.Count, core.ErrInvalid)
	}
	u.State.Endpoints = next
	var base core.Set
	if sameEpoch {
		base = held.state.Endpoints
	}
	u.Delta = core.Diff(base, next)
	return u, nil
}

// Commit records u (from Next) as what r holds for u.Target, unless r
// holds a newer update of the same epoch already: within an epoch commits
// only move forward, whatever order concurrent receivers commit in; an
// update of another epoch replaces what r holds (the sender restarted).
func (r *Replica) Commit(u core.Update) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if held, ok := r.targets[u.Target]; ok && held.epoch == u.Epoch && held.seq >= u.Seq {
		return
	}
	r.targets[u.Target] = replicaEntry{epoch: u.Epoch, seq: u.Seq, state: u.State}
}

// SinkError is a sink's own error from Replica.Receive, as opposed to an
// error about the message.
type SinkError struct{ Err error }

func (e *SinkError) Error() string { return e.Err.Error() }
func (e *SinkError) Unwrap() error { return e.Err }

// Receive is the receiving side of a wire in one call: it hands sink the
// core.Update that w makes of what r holds (Next), and records it (Commit)
// once the sink accepted it. Its errors are Next's, about w (ErrDuplicate:
// acknowledge, nothing to do; core.ErrResync; core.ErrInvalid), or the
// sink's, wrapped in *SinkError; a sink that lost its state
// (core.ErrResync) makes r forget the target, so that the full state
// replaces it.
func (r *Replica) Receive(ctx context.Context, w Message, sink core.Sink) error {
	u, err := r.Next(w)
	if err != nil {
		return err
	}
	if err := sink.Accept(ctx, u); err != nil {
		if errors.Is(err, core.ErrResync) {
			r.Forget(u.Target)
		}
		return &SinkError{Err: err}
	}
	r.Commit(u)
	return nil
}

// State returns what r holds for t, with its epoch and seq.
func (r *Replica) State(t core.Target) (st core.State, epoch string, seq uint64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.targets[t]
	return e.state, e.epoch, e.seq, ok
}

// Targets returns the targets r holds a state for.
func (r *Replica) Targets() []core.Target {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]core.Target, 0, len(r.targets))
	for t := range r.targets {
		out = append(out, t)
	}
	return out
}

// Forget drops what r holds for t (the next delta for it needs a resync).
func (r *Replica) Forget(t core.Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.targets, t)
}

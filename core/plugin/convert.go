package plugin

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/plugin/internal/pb"
	"github.com/disco-lb/disco/core/wire"
)

func targetToPB(t core.Target) *pb.Target {
	return &pb.Target{Namespace: t.Namespace, Name: t.Name, Port: t.Port}
}

func targetFromPB(t *pb.Target) core.Target {
	if t == nil {
		return core.Target{}
	}
	return core.Target{Namespace: t.Namespace, Name: t.Name, Port: t.Port}
}

func endpointToPB(e *core.Endpoint) *pb.Endpoint {
	return &pb.Endpoint{
		Id: e.ID, Name: e.Name, Addresses: e.Addresses, Port: uint32(e.Port), Hostname: e.Hostname, Node: e.Node,
		Zone: e.Zone, ZoneHints: e.ZoneHints, Weight: e.Weight, Labels: e.Labels, Priority: e.Priority,
		Conditions: &pb.Conditions{Ready: e.Conditions.Ready, Serving: e.Conditions.Serving, Terminating: e.Conditions.Terminating},
	}
}

// endpointFromPB converts an endpoint from the wire; a port that does not
// fit a port number is ErrInvalid naming the endpoint.
func endpointFromPB(p *pb.Endpoint) (*core.Endpoint, error) {
	if p.Port > math.MaxUint16 {
		name := p.Id
		if name == "" && len(p.Addresses) > 0 {
			name = p.Addresses[0]
		}
		return nil, fmt.Errorf("endpoint %q: port %d is above 65535: %w", name, p.Port, core.ErrInvalid)
	}
	e := &core.Endpoint{
		ID: p.Id, Name: p.Name, Addresses: p.Addresses, Port: uint16(p.Port), Hostname: p.Hostname, Node: p.Node,
		Zone: p.Zone, ZoneHints: p.ZoneHints, Weight: p.Weight, Labels: maps.Clone(p.Labels), Priority: p.Priority,
	}
	if c := p.Conditions; c != nil {
		e.Conditions = core.Conditions{Ready: c.Ready, Serving: c.Serving, Terminating: c.Terminating}
	}
	return e, nil
}

func endpointsToPB(eps []*core.Endpoint) []*pb.Endpoint {
	out := make([]*pb.Endpoint, len(eps))
	for i, e := range eps {
		out[i] = endpointToPB(e)
	}
	return out
}

func endpointsFromPB(eps []*pb.Endpoint) ([]*core.Endpoint, error) {
	out := make([]*core.Endpoint, len(eps))
	for i, p := range eps {
		e, err := endpointFromPB(p)
		if err != nil {
			return nil, err
		}
		out[i] = e
	}
	return out, nil
}

func wireToPB(w wire.Message) *pb.UpdateRequest {
	p := &pb.UpdateRequest{
		Target: targetToPB(w.Target), Epoch: w.Epoch, Seq: w.Seq, BaseSeq: w.BaseSeq, Synced: w.Synced, Ended: w.Ended,
		Count: uint32(w.Count), Added: endpointsToPB(w.Added), Changed: endpointsToPB(w.Changed), Removed: w.Removed,
	}
	if w.Stale != nil {
		p.Stale = &pb.Staleness{SinceUnixNano: w.Stale.Since.UnixNano(), Reason: w.Stale.Reason, Kind: kindToPB(w.Stale.Kind), Dropped: w.Stale.Dropped}
	}
	if w.Endpoints != nil {
		p.Full = true
		p.Endpoints = endpointsToPB(w.Endpoints.Slice())
	}
	return p
}

func wireFromPB(p *pb.UpdateRequest) (wire.Message, error) {
	w := wire.Message{
		Schema: wire.Schema, Target: targetFromPB(p.Target), Epoch: p.Epoch, Seq: p.Seq, BaseSeq: p.BaseSeq,
		Synced: p.Synced, Ended: p.Ended, Count: int(p.Count), Removed: p.Removed,
	}
	var err error
	if w.Added, err = endpointsFromPB(p.Added); err != nil {
		return wire.Message{}, err
	}
	if w.Changed, err = endpointsFromPB(p.Changed); err != nil {
		return wire.Message{}, err
	}
	if s := p.Stale; s != nil {
		w.Stale = &core.Staleness{Since: time.Unix(0, s.SinceUnixNano), Reason: s.Reason, Kind: kindFromPB(s.Kind), Dropped: s.Dropped}
	}
	if p.Full {
		eps, err := endpointsFromPB(p.Endpoints)
		if err != nil {
			return wire.Message{}, err
		}
		set, err := core.NewSet(eps...)
		if err != nil {
			return wire.Message{}, err
		}
		w.Endpoints = &set
	}
	return w, w.Validate()
}

func kindToPB(k core.ErrorKind) pb.ErrorKind {
	switch k {
	case core.KindNotFound:
		return pb.ErrorKind_ERROR_KIND_NOT_FOUND
	case core.KindForbidden:
		return pb.ErrorKind_ERROR_KIND_FORBIDDEN
	case core.KindInvalid:
		return pb.ErrorKind_ERROR_KIND_INVALID
	case core.KindNone:
		return pb.ErrorKind_ERROR_KIND_UNSPECIFIED
	}
	return pb.ErrorKind_ERROR_KIND_UNAVAILABLE
}

// kindFromPB reads a kind; unset or unknown is unavailable (an unknown
// failure is transient).
func kindFromPB(k pb.ErrorKind) core.ErrorKind {
	switch k {
	case pb.ErrorKind_ERROR_KIND_NOT_FOUND:
		return core.KindNotFound
	case pb.ErrorKind_ERROR_KIND_FORBIDDEN:
		return core.KindForbidden
	case pb.ErrorKind_ERROR_KIND_INVALID:
		return core.KindInvalid
	}
	return core.KindUnavailable
}

// errorToPB carries a core error across as data: its kind, message, how it
// was marked, its retry delay and whether it asks for a resync. nil is nil.
func errorToPB(err error) *pb.Error {
	if err == nil {
		return nil
	}
	e := &pb.Error{Kind: kindToPB(core.KindOf(err)), Message: err.Error(), Resync: errors.Is(err, core.ErrResync)}
	var marked interface{ Retryable() bool }
	if errors.As(err, &marked) {
		e.Retry = pb.Retry_RETRY_PERMANENT
		if marked.Retryable() {
			e.Retry = pb.Retry_RETRY_RETRYABLE
		}
	}
	if d, ok := core.RetryDelay(err); ok {
		ms := d.Milliseconds()
		e.RetryAfterMillis = &ms
	}
	return e
}

// errorFromPB is errorToPB's inverse: an error that core classifies exactly
// as the plugin's own was, its message prefixed with the plugin's name.
func errorFromPB(name string, e *pb.Error) error {
	if e == nil {
		return nil
	}
	var err error = &remoteError{msg: "plugin " + name + ": " + e.Message, kind: kindFromPB(e.Kind), resync: e.Resync}
	switch e.Retry {
	case pb.Retry_RETRY_PERMANENT:
		err = core.Permanent(err)
	case pb.Retry_RETRY_RETRYABLE:
		err = core.Retry(err, 0)
	}
	if e.RetryAfterMillis != nil {
		err = core.Retry(err, time.Duration(*e.RetryAfterMillis)*time.Millisecond)
	}
	return err
}

// remoteError is a plugin's error on the host: its message, and the
// sentinels of its kind and of a resync.
type remoteError struct {
	msg    string
	kind   core.ErrorKind
	resync bool
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() []error {
	if e.resync {
		return []error{e.kind.Sentinel(), core.ErrResync}
	}
	return []error{e.kind.Sentinel()}
}

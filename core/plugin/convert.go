package plugin

import (
	"maps"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/plugin/internal/pb"
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
		Zone: e.Zone, ZoneHints: e.ZoneHints, Weight: e.Weight, Labels: e.Labels,
		Conditions: &pb.Conditions{Ready: e.Conditions.Ready, Serving: e.Conditions.Serving, Terminating: e.Conditions.Terminating},
	}
}

func endpointFromPB(p *pb.Endpoint) *core.Endpoint {
	e := &core.Endpoint{
		ID: p.Id, Name: p.Name, Addresses: p.Addresses, Port: uint16(p.Port), Hostname: p.Hostname, Node: p.Node,
		Zone: p.Zone, ZoneHints: p.ZoneHints, Weight: p.Weight, Labels: maps.Clone(p.Labels),
	}
	if c := p.Conditions; c != nil {
		e.Conditions = core.Conditions{Ready: c.Ready, Serving: c.Serving, Terminating: c.Terminating}
	}
	return e
}

func endpointsToPB(eps []*core.Endpoint) []*pb.Endpoint {
	out := make([]*pb.Endpoint, len(eps))
	for i, e := range eps {
		out[i] = endpointToPB(e)
	}
	return out
}

func endpointsFromPB(eps []*pb.Endpoint) []*core.Endpoint {
	out := make([]*core.Endpoint, len(eps))
	for i, e := range eps {
		out[i] = endpointFromPB(e)
	}
	return out
}

func wireToPB(w core.WireUpdate) *pb.WireUpdate {
	p := &pb.WireUpdate{
		Target: targetToPB(w.Target), Epoch: w.Epoch, Seq: w.Seq, BaseSeq: w.BaseSeq, Synced: w.Synced, Ended: w.Ended,
		Count: uint32(w.Count), Added: endpointsToPB(w.Added), Changed: endpointsToPB(w.Changed), Removed: w.Removed,
	}
	if w.Stale != nil {
		p.Stale = &pb.Staleness{SinceUnixNano: w.Stale.Since.UnixNano(), Reason: w.Stale.Reason, Kind: string(w.Stale.Kind), Dropped: w.Stale.Dropped}
	}
	if w.Endpoints != nil {
		p.Full = true
		p.Endpoints = endpointsToPB(w.Endpoints.Slice())
	}
	return p
}

func wireFromPB(p *pb.WireUpdate) (core.WireUpdate, error) {
	w := core.WireUpdate{
		Schema: core.WireSchema, Target: targetFromPB(p.Target), Epoch: p.Epoch, Seq: p.Seq, BaseSeq: p.BaseSeq,
		Synced: p.Synced, Ended: p.Ended, Count: int(p.Count), Added: endpointsFromPB(p.Added),
		Changed: endpointsFromPB(p.Changed), Removed: p.Removed,
	}
	if s := p.Stale; s != nil {
		w.Stale = &core.Staleness{Since: time.Unix(0, s.SinceUnixNano), Reason: s.Reason, Kind: kindOf(s.Kind), Dropped: s.Dropped}
	}
	if p.Full {
		set, err := core.NewSet(endpointsFromPB(p.Endpoints)...)
		if err != nil {
			return core.WireUpdate{}, err
		}
		w.Endpoints = &set
	}
	return w, w.Validate()
}

// kindOf reads a core.ErrorKind; an unknown one is unavailable.
func kindOf(s string) core.ErrorKind {
	if k := core.ErrorKind(s); k.Sentinel() != nil {
		return k
	}
	return core.KindUnavailable
}

// kindError is an error of a core kind with the message it came with.
func kindError(kind, msg string) error {
	return &remoteError{msg: msg, kind: kindOf(kind)}
}

type remoteError struct {
	msg  string
	kind core.ErrorKind
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind.Sentinel() }

package core

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
)

// Conditions are an endpoint's Kubernetes conditions. A nil field is unset
// and takes Kubernetes' default: unset Ready and Serving mean true, unset
// Terminating means false. So the zero Conditions describe an endpoint that
// is ready, serving and not terminating. Use the methods to read them.
type Conditions struct {
	Ready       *bool `json:"ready,omitempty"`
	Serving     *bool `json:"serving,omitempty"`
	Terminating *bool `json:"terminating,omitempty"`
}

// IsReady reports the Ready condition (unset means true).
func (c Conditions) IsReady() bool { return c.Ready == nil || *c.Ready }

// IsServing reports the Serving condition (unset means true).
func (c Conditions) IsServing() bool { return c.Serving == nil || *c.Serving }

// IsTerminating reports the Terminating condition (unset means false).
func (c Conditions) IsTerminating() bool { return c.Terminating != nil && *c.Terminating }

// Equal compares the effective conditions, so unset and its default are equal.
func (c Conditions) Equal(o Conditions) bool {
	return c.IsReady() == o.IsReady() && c.IsServing() == o.IsServing() &&
		c.IsTerminating() == o.IsTerminating()
}

// Endpoint is one backend of a target. Identity is ID: stable for the life of
// the backend (a pod's UID when known, else its address), unique in a Set.
//
// Ownership: once an Endpoint is handed to NewSet or Set.With it belongs to
// the set and must never be modified again, by anyone; sets, states and
// updates share endpoints by pointer. To change an endpoint, publish a new
// one with the same ID.
type Endpoint struct {
	// ID is the stable identity. NewSet and Set.With fill an empty ID with
	// the first address joined with the port.
	ID string `json:"id"`
	// Name is a human name for logs and attributes (Kubernetes: the pod name).
	Name string `json:"name,omitempty"`
	// Addresses holds every address of the backend, in the source's order of
	// preference: a dual-stack pod is one endpoint with an IPv4 and an IPv6
	// address. At least one is required; no duplicates.
	Addresses []string `json:"addresses"`
	// Port is the port the target selected; 0 when the source has none.
	Port uint16 `json:"port,omitempty"`
	// Hostname, Node and Zone locate the backend (Kubernetes: endpoint
	// hostname, nodeName, zone).
	Hostname string `json:"hostname,omitempty"`
	Node     string `json:"node,omitempty"`
	Zone     string `json:"zone,omitempty"`
	// Conditions are ready, serving and terminating, with Kubernetes' defaults.
	Conditions Conditions `json:"conditions,omitzero"`
	// ZoneHints are the zones this endpoint should serve (Kubernetes:
	// hints.forZones). Empty means no hint.
	ZoneHints []string `json:"zoneHints,omitempty"`
	// Weight is a relative weight for balancers; 0 means unset (treat as 1).
	Weight uint32 `json:"weight,omitempty"`
	// Priority orders fallback groups (DNS SRV priority, RFC 2782): the
	// lowest value with routable endpoints takes the traffic, a higher one
	// only when none of a lower one is left. 0, the default, is the first.
	Priority uint32 `json:"priority,omitempty"`
	// Labels are free-form metadata.
	Labels map[string]string `json:"labels,omitempty"`
}

// HostPort returns the first address joined with the port ("10.0.0.1:80",
// "[fd00::1]:80"), or the bare address when the port is 0.
func (e *Endpoint) HostPort() string { return hostPort(e.Addresses[0], e.Port) }

// HostPorts returns every address joined with the port, in order.
func (e *Endpoint) HostPorts() []string {
	out := make([]string, len(e.Addresses))
	for i, a := range e.Addresses {
		out[i] = hostPort(a, e.Port)
	}
	return out
}

func hostPort(addr string, port uint16) string {
	if port == 0 {
		return addr
	}
	return net.JoinHostPort(addr, strconv.Itoa(int(port)))
}

// Equal reports whether two endpoints carry the same data. Conditions compare
// by effective value; nil and empty slices and maps are equal.
func (e *Endpoint) Equal(o *Endpoint) bool {
	if e == o {
		return true
	}
	if e == nil || o == nil {
		return false
	}
	return e.ID == o.ID && e.Name == o.Name && e.Port == o.Port &&
		e.Hostname == o.Hostname && e.Node == o.Node && e.Zone == o.Zone &&
		e.Weight == o.Weight && e.Priority == o.Priority && e.Conditions.Equal(o.Conditions) &&
		slices.Equal(e.Addresses, o.Addresses) && slices.Equal(e.ZoneHints, o.ZoneHints) &&
		maps.Equal(e.Labels, o.Labels)
}

// Validate checks the endpoint on its own: at least one address, no empty or
// duplicate address, no empty zone hint or label key. It does not require ID
// (sets fill it in).
func (e *Endpoint) Validate() error {
	if e == nil {
		return fmt.Errorf("core: nil endpoint: %w", ErrInvalid)
	}
	if len(e.Addresses) == 0 {
		return fmt.Errorf("core: endpoint %q: no address: %w", e.ID, ErrInvalid)
	}
	for i, a := range e.Addresses {
		if a == "" {
			return fmt.Errorf("core: endpoint %q: address %d is empty: %w", e.ID, i, ErrInvalid)
		}
		if slices.Contains(e.Addresses[:i], a) {
			return fmt.Errorf("core: endpoint %q: duplicate address %q: %w", e.ID, a, ErrInvalid)
		}
	}
	if slices.Contains(e.ZoneHints, "") {
		return fmt.Errorf("core: endpoint %q: empty zone hint: %w", e.ID, ErrInvalid)
	}
	if _, ok := e.Labels[""]; ok {
		return fmt.Errorf("core: endpoint %q: empty label key: %w", e.ID, ErrInvalid)
	}
	return nil
}

// withID returns e, or a copy of e carrying the default ID when e has none.
func withID(e *Endpoint) *Endpoint {
	if e.ID != "" {
		return e
	}
	c := *e
	c.ID = hostPort(e.Addresses[0], e.Port)
	return &c
}

package xds

import (
	"fmt"
	"strings"

	"github.com/disco-lb/disco/core"
)

// A resource name is a target, then optionally "?" and parameters that
// say who asks: zone=<zone> and client=<id>, joined by "&".
// "greeter.demo:grpc?zone=zone-a" is the variant of target greeter.demo:grpc
// for a client in zone-a (its own zone's endpoints at priority 0, the rest
// at 1); "greeter.demo:grpc?client=pod-7" is pod-7's own assignment, its
// subset when the server subsets the target (WithSubsetSize). A client
// asks for them through its bootstrap's
// client_default_listener_resource_name_template, "%s?zone=zone-a" or
// "%s?zone=zone-a&client=pod-7" (see Bootstrap).

// resourceName is what a resource name says: a disco target, and the zone
// and the identity of the client that asks (empty: none).
type resourceName struct {
	target core.Target
	zone   string
	client string
}

// parseName reads a resource name: the text of a target in the source's
// syntax (the path of xds:///<target>), with optional parameters.
func parseName(name string, parse func(string) (core.Target, error)) (resourceName, error) {
	text, query, _ := strings.Cut(name, "?")
	var rn resourceName
	if query != "" {
		for _, kv := range strings.Split(query, "&") {
			key, value, _ := strings.Cut(kv, "=")
			var dst *string
			switch key {
			case "zone":
				dst = &rn.zone
			case "client":
				dst = &rn.client
			default:
				return resourceName{}, fmt.Errorf("xds: resource name %q: unknown parameter %q (want zone= or client=): %w", name, key, core.ErrInvalid)
			}
			if *dst != "" || value == "" || strings.ContainsAny(value, "?=") {
				return resourceName{}, fmt.Errorf("xds: resource name %q: parameter %s: want it once, with a value and no ? or =: %w", name, key, core.ErrInvalid)
			}
			*dst = value
		}
	}
	t, err := parse(text)
	if err != nil {
		return resourceName{}, fmt.Errorf("xds: resource name %q: %w", name, err)
	}
	rn.target = t
	return rn, nil
}

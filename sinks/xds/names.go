package xds

import (
	"fmt"
	"strings"

	"github.com/disco-lb/disco/core"
)

// zoneSuffix separates a resource name's target from the client's zone:
// "greeter.demo:grpc?zone=zone-a" is the variant of target greeter.demo:grpc
// for a client in zone-a (its own zone's endpoints at priority 0, the rest
// at 1). A client asks for it through its bootstrap's
// client_default_listener_resource_name_template, "%s?zone=zone-a" (see
// Bootstrap).
const zoneSuffix = "?zone="

// resourceName is what a resource name says: a disco target, and the zone
// of the client that asks (empty: none).
type resourceName struct {
	target core.Target
	zone   string
}

// parseName reads a resource name: the text of a target in the source's
// syntax (the path of xds:///<target>), with an optional ?zone=<zone>.
func parseName(name string, parse func(string) (core.Target, error)) (resourceName, error) {
	text, zone, _ := strings.Cut(name, zoneSuffix)
	if strings.Contains(zone, "?") {
		return resourceName{}, fmt.Errorf("xds: resource name %q: more than one ?zone=: %w", name, core.ErrInvalid)
	}
	t, err := parse(text)
	if err != nil {
		return resourceName{}, fmt.Errorf("xds: resource name %q: %w", name, err)
	}
	return resourceName{target: t, zone: zone}, nil
}

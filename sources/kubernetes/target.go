package kubernetes

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/disco-lb/disco/core"
)

// ParseTarget parses the target forms users of kuberesolver and grpc-go
// know, into a core.Target whose Name is the service, Namespace the
// namespace (empty when the text names none: the source's default applies)
// and Port the port by number or name (empty when none is given):
//
//	greeter                          greeter.demo:grpc
//	greeter:50051                    greeter.demo.svc.cluster.local:grpc
//	kubernetes:///greeter.demo:grpc  kubernetes://demo/greeter:8080
//	kubernetes://greeter.demo:grpc/  (authority form)
//
// Any scheme is accepted (the resolver decides which it serves). Errors wrap
// core.ErrInvalid and name what is wrong.
func ParseTarget(s string) (core.Target, error) {
	bad := func(format string, args ...any) (core.Target, error) {
		return core.Target{}, fmt.Errorf("kubernetes: target %q: %s: %w", s, fmt.Sprintf(format, args...), core.ErrInvalid)
	}
	hostport, authorityNS := s, ""
	if scheme, rest, ok := strings.Cut(s, "://"); ok {
		if scheme == "" {
			return bad("empty scheme")
		}
		authority, path, _ := strings.Cut(rest, "/")
		path = strings.TrimSuffix(path, "/")
		switch {
		case path != "" && authority != "":
			authorityNS, hostport = authority, path // kubernetes://ns/svc:port
		case path != "":
			hostport = path // kubernetes:///svc.ns:port
		default:
			hostport = authority // kubernetes://svc.ns:port/
		}
		if strings.Contains(hostport, "/") {
			return bad("too many path segments")
		}
	}
	if hostport == "" {
		return bad("no service name")
	}
	host, port, hasPort := strings.Cut(hostport, ":")
	if hasPort && port == "" {
		return bad("empty port after ':'")
	}
	if strings.Contains(port, ":") {
		return bad("more than one ':'")
	}
	labels := strings.Split(host, ".")
	t := core.Target{Name: labels[0], Port: port}
	if len(labels) >= 2 {
		t.Namespace = labels[1]
	}
	if len(labels) > 2 {
		// svc.ns.svc[.cluster-domain]
		if labels[2] != "svc" {
			return bad("%q is not a service name: expected name, name.namespace or name.namespace.svc.<cluster domain>", host)
		}
		for _, l := range labels[3:] {
			if l == "" {
				return bad("empty label in cluster domain of %q", host)
			}
		}
	}
	if authorityNS != "" {
		if t.Namespace != "" && t.Namespace != authorityNS {
			return bad("namespace %q in the authority contradicts %q in the name", authorityNS, t.Namespace)
		}
		t.Namespace = authorityNS
	}
	if err := validateTarget(t); err != nil {
		return bad("%v", err)
	}
	return t, nil
}

// validateTarget checks names the way the API server does.
func validateTarget(t core.Target) error {
	if msgs := validation.IsDNS1035Label(t.Name); len(msgs) > 0 {
		return fmt.Errorf("service name %q: %s", t.Name, strings.Join(msgs, "; "))
	}
	if t.Namespace != "" {
		if msgs := validation.IsDNS1123Label(t.Namespace); len(msgs) > 0 {
			return fmt.Errorf("namespace %q: %s", t.Namespace, strings.Join(msgs, "; "))
		}
	}
	if t.Port == "" {
		return nil
	}
	if n, err := strconv.Atoi(t.Port); err == nil {
		if msgs := validation.IsValidPortNum(n); len(msgs) > 0 {
			return fmt.Errorf("port %d: %s", n, strings.Join(msgs, "; "))
		}
		if strconv.Itoa(n) != t.Port {
			return fmt.Errorf("port %q: not in canonical form (%d)", t.Port, n)
		}
		return nil
	}
	if msgs := validation.IsValidPortName(t.Port); len(msgs) > 0 {
		return fmt.Errorf("port name %q: %s", t.Port, strings.Join(msgs, "; "))
	}
	return nil
}

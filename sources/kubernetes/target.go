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
//	kubernetes://greeter.demo:grpc/  demo/greeter:grpc
//
// It is core.ParseTarget with core.ServiceSyntax, so the gRPC resolver,
// plugins and config files read targets the same way. Any scheme is
// accepted (the resolver decides which it serves). Errors wrap
// core.ErrInvalid and name what is wrong.
func ParseTarget(s string) (core.Target, error) {
	return core.ParseTarget(s, core.ServiceSyntax)
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

package core

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Target names what a source discovers: for Kubernetes a service in a
// namespace and one of its ports, for DNS a name and a port, for a file a key.
// It is a comparable value, usable as a map key and safe to copy across a
// process boundary.
type Target struct {
	// Namespace scopes Name. Sources without namespaces leave it empty.
	Namespace string `json:"namespace,omitempty"`
	// Name is the service (or DNS name, or file key). Required.
	Name string `json:"name"`
	// Port selects one port of the service, by number ("8080") or by name
	// ("grpc"). Empty lets the source choose (for example the only port).
	Port string `json:"port,omitempty"`
}

// String renders the target as "namespace/name:port", leaving out empty
// parts (a name holding ':', an IPv6 address, is bracketed). ParseTarget
// reads this form back.
func (t Target) String() string {
	s := t.Name
	if strings.Contains(s, ":") {
		s = "[" + s + "]"
	}
	if t.Namespace != "" {
		s = t.Namespace + "/" + s
	}
	if t.Port != "" {
		s += ":" + t.Port
	}
	return s
}

// Validate reports whether the target can be watched at all: it needs a
// name. Sources check the rest against their own rules.
func (t Target) Validate() error {
	if t.Name == "" {
		return fmt.Errorf("core: target %q: empty name: %w", t.String(), ErrInvalid)
	}
	return nil
}

// TargetSyntax says how ParseTarget reads the name part of a target.
type TargetSyntax int

const (
	// ServiceSyntax reads Kubernetes service names, as users of kuberesolver
	// and grpc-go write them:
	//
	//	greeter                          greeter.demo:grpc
	//	greeter:50051                    greeter.demo.svc.cluster.local:grpc
	//	kubernetes:///greeter.demo:grpc  kubernetes://demo/greeter:8080
	//	kubernetes://greeter.demo:grpc/  demo/greeter:grpc (Target.String)
	//
	// The name is a DNS-1035 label, the namespace a DNS-1123 label (empty when
	// the text names none: the source's default applies). The authority, if
	// any, is the namespace.
	ServiceSyntax TargetSyntax = iota
	// HostSyntax reads a DNS name, an IP address or a key, whole, as the
	// name, with an optional port: dns:///greeter.example.com:50051,
	// dns+srv:///_grpc._tcp.example.com, [fd00::1]:80, file:///greeter. An
	// authority is refused; a namespace may be given as "namespace/name".
	HostSyntax
)

// ParseTarget parses a target the way every disco module does (the gRPC
// resolver, plugins, config files), so that one text means one target
// everywhere:
//
//	[scheme://[authority]/]name[:port]
//	[scheme://]namespace/name[:port]
//
// The scheme, if any, is not checked (the caller decides which it serves).
// The port is a number (1-65535, canonical) or an IANA service name (up to
// 15 lower-case letters, digits and hyphens). syntax says how the name
// reads. Errors wrap ErrInvalid, quote the text and name the bad part.
func ParseTarget(text string, syntax TargetSyntax) (Target, error) {
	bad := func(format string, args ...any) (Target, error) {
		return Target{}, fmt.Errorf("core: target %q: %s: %w", text, fmt.Sprintf(format, args...), ErrInvalid)
	}
	rest, authority, hasAuthority := text, "", false
	if scheme, after, ok := strings.Cut(text, "://"); ok {
		if scheme == "" {
			return bad("empty scheme")
		}
		var path string
		authority, path, _ = strings.Cut(after, "/")
		path = strings.TrimSuffix(path, "/")
		switch {
		case path != "":
			rest, hasAuthority = path, authority != ""
		default:
			rest, authority = authority, "" // scheme://name:port/
		}
		if hasAuthority && syntax == HostSyntax {
			return bad("an authority (%q) is not supported: write scheme:///name", authority)
		}
		if hasAuthority && strings.Contains(rest, "/") {
			return bad("too many path segments")
		}
	}
	namespace, hostport, hasNS := strings.Cut(rest, "/")
	if !hasNS {
		namespace, hostport = "", rest
	} else if strings.Contains(hostport, "/") {
		return bad("too many path segments")
	}
	if hasNS && namespace == "" {
		return bad("empty namespace before '/'")
	}
	if hostport == "" {
		return bad("no name")
	}
	host, port, err := splitHostPort(hostport)
	if err != "" {
		return bad("%s", err)
	}
	if port != "" {
		if msg := checkPort(port); msg != "" {
			return bad("%s", msg)
		}
	}
	t := Target{Name: host, Port: port}
	switch syntax {
	case ServiceSyntax:
		labels := strings.Split(host, ".")
		t.Name = labels[0]
		if len(labels) >= 2 {
			t.Namespace = labels[1]
		}
		if len(labels) > 2 {
			if labels[2] != "svc" {
				return bad("%q is not a service name: expected name, name.namespace or name.namespace.svc.<cluster domain>", host)
			}
			for _, l := range labels[3:] {
				if l == "" {
					return bad("empty label in cluster domain of %q", host)
				}
			}
		}
		if msg := checkLabel(t.Name, true); msg != "" {
			return bad("service name %q: %s", t.Name, msg)
		}
		for _, ns := range []string{authority, namespace} {
			if ns == "" {
				continue
			}
			if t.Namespace != "" && t.Namespace != ns {
				return bad("namespace %q contradicts %q in the name", ns, t.Namespace)
			}
			t.Namespace = ns
		}
	case HostSyntax:
		if msg := checkHost(host); msg != "" {
			return bad("name %q: %s", host, msg)
		}
		t.Namespace = namespace
	default:
		return bad("unknown target syntax %d", syntax)
	}
	if t.Namespace != "" {
		if msg := checkLabel(t.Namespace, false); msg != "" {
			return bad("namespace %q: %s", t.Namespace, msg)
		}
	}
	return t, nil
}

// splitHostPort splits "host", "host:port" and "[v6]:port"; it returns a
// message on error.
func splitHostPort(s string) (host, port, msg string) {
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return "", "", "missing ']' after an IPv6 address"
		}
		host, rest := s[1:end], s[end+1:]
		if host == "" {
			return "", "", "empty address in brackets"
		}
		if rest == "" {
			return host, "", ""
		}
		if rest[0] != ':' {
			return "", "", fmt.Sprintf("unexpected %q after ']'", rest)
		}
		if rest == ":" {
			return "", "", "empty port after ':'"
		}
		return host, rest[1:], ""
	}
	host, port, hasPort := strings.Cut(s, ":")
	switch {
	case hasPort && port == "":
		return "", "", "empty port after ':'"
	case strings.Contains(port, ":"):
		return "", "", "more than one ':' (bracket an IPv6 address: [fd00::1]:80)"
	case host == "":
		return "", "", "no name"
	}
	return host, port, ""
}

// checkPort accepts a canonical port number or an IANA service name.
func checkPort(p string) string {
	if n, err := strconv.Atoi(p); err == nil {
		switch {
		case n < 1 || n > 65535:
			return fmt.Sprintf("port %d: must be between 1 and 65535", n)
		case strconv.Itoa(n) != p:
			return fmt.Sprintf("port %q: not in canonical form (%d)", p, n)
		}
		return ""
	}
	// IANA_SVC_NAME (RFC 6335), as Kubernetes checks port names.
	letter := false
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z':
			letter = true
		case c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(p)-1 && p[i-1] != '-':
		default:
			return fmt.Sprintf("port name %q: only lower-case letters, digits and single inner hyphens", p)
		}
	}
	switch {
	case len(p) > 15:
		return fmt.Sprintf("port name %q: longer than 15 characters", p)
	case !letter:
		return fmt.Sprintf("port name %q: needs a letter", p)
	}
	return ""
}

// checkLabel checks a DNS label: DNS-1035 (starts with a letter) for
// service names, DNS-1123 (may start with a digit) for namespaces.
func checkLabel(l string, dns1035 bool) string {
	if l == "" {
		return "empty"
	}
	if len(l) > 63 {
		return "longer than 63 characters"
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && (i > 0 || !dns1035):
		case c == '-' && i > 0 && i < len(l)-1:
		default:
			if dns1035 {
				return "must be lower-case letters, digits and inner hyphens, starting with a letter"
			}
			return "must be lower-case letters, digits and inner hyphens"
		}
	}
	return ""
}

// checkHost accepts an IP address or a DNS name whose labels hold letters,
// digits, hyphens and underscores (SRV names: _grpc._tcp.example.com); a
// trailing dot (a fully qualified name) is allowed.
func checkHost(h string) string {
	if _, err := netip.ParseAddr(h); err == nil {
		return ""
	}
	name := strings.TrimSuffix(h, ".")
	if len(name) > 253 {
		return "longer than 253 characters"
	}
	for _, l := range strings.Split(name, ".") {
		if l == "" {
			return "empty label"
		}
		if len(l) > 63 {
			return fmt.Sprintf("label %q longer than 63 characters", l)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
			case c == '-' && i > 0 && i < len(l)-1:
			default:
				return fmt.Sprintf("label %q: only letters, digits, '_' and inner '-'", l)
			}
		}
	}
	return ""
}

package core_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/disco-lb/disco/core"
)

func TestParseTarget(t *testing.T) {
	svcT := func(ns, name, port string) core.Target { return core.Target{Namespace: ns, Name: name, Port: port} }
	tests := []struct {
		in      string
		syntax  core.TargetSyntax
		want    core.Target
		wantErr string
	}{
		{in: "greeter", want: svcT("", "greeter", "")},
		{in: "greeter:50051", want: svcT("", "greeter", "50051")},
		{in: "greeter.demo", want: svcT("demo", "greeter", "")},
		{in: "greeter.demo:grpc", want: svcT("demo", "greeter", "grpc")},
		{in: "greeter.demo.svc.cluster.local:grpc", want: svcT("demo", "greeter", "grpc")},
		{in: "greeter.demo.svc:8080", want: svcT("demo", "greeter", "8080")},
		{in: "kubernetes:///greeter.demo:grpc", want: svcT("demo", "greeter", "grpc")},
		{in: "kubernetes:///greeter", want: svcT("", "greeter", "")},
		{in: "kubernetes://demo/greeter:8080", want: svcT("demo", "greeter", "8080")},
		{in: "kubernetes://greeter.demo:grpc/", want: svcT("demo", "greeter", "grpc")},
		{in: "kubernetes://demo/greeter.demo:grpc", want: svcT("demo", "greeter", "grpc")},
		{in: "kubernetes:///demo/greeter:grpc", want: svcT("demo", "greeter", "grpc")},
		{in: "demo/greeter:grpc", want: svcT("demo", "greeter", "grpc")},
		{in: "1demo/greeter", want: svcT("1demo", "greeter", "")},

		{in: "", wantErr: "no name"},
		{in: "kubernetes:///", wantErr: "no name"},
		{in: "://greeter", wantErr: "empty scheme"},
		{in: "greeter:", wantErr: "empty port after ':'"},
		{in: "greeter:1:2", wantErr: "more than one ':'"},
		{in: "Greeter", wantErr: `service name "Greeter"`},
		{in: "1greeter", wantErr: `service name "1greeter"`},
		{in: "greeter.Demo", wantErr: `namespace "Demo"`},
		{in: "greeter.demo.cluster.local", wantErr: `expected name, name.namespace or name.namespace.svc.<cluster domain>`},
		{in: "greeter.demo.svc..local", wantErr: "empty label in cluster domain"},
		{in: "greeter:0", wantErr: "port 0"},
		{in: "greeter:70000", wantErr: "port 70000"},
		{in: "greeter:0080", wantErr: "not in canonical form"},
		{in: "greeter:grpc_port", wantErr: `port name "grpc_port"`},
		{in: "greeter:a-very-long-port-name", wantErr: `port name "a-very-long-port-name"`},
		{in: "greeter:1-2", wantErr: "needs a letter"},
		{in: "kubernetes://other/greeter.demo:grpc", wantErr: `namespace "other" contradicts "demo"`},
		{in: "other/greeter.demo", wantErr: `namespace "other" contradicts "demo"`},
		{in: "kubernetes://demo/greeter/extra", wantErr: "too many path segments"},
		{in: "a/b/c", wantErr: "too many path segments"},
		{in: "/greeter", wantErr: "empty namespace"},
		{in: "kubernetes://Demo/greeter", wantErr: `namespace "Demo"`},

		{in: "dns:///greeter.example.com:50051", syntax: core.HostSyntax, want: svcT("", "greeter.example.com", "50051")},
		{in: "dns+srv:///_grpc._tcp.example.com", syntax: core.HostSyntax, want: svcT("", "_grpc._tcp.example.com", "")},
		{in: "greeter.example.com.:grpc", syntax: core.HostSyntax, want: svcT("", "greeter.example.com.", "grpc")},
		{in: "[fd00::1]:80", syntax: core.HostSyntax, want: svcT("", "fd00::1", "80")},
		{in: "10.0.0.1:80", syntax: core.HostSyntax, want: svcT("", "10.0.0.1", "80")},
		{in: "file:///greeter", syntax: core.HostSyntax, want: svcT("", "greeter", "")},
		{in: "team-a/Greeter:grpc", syntax: core.HostSyntax, want: svcT("team-a", "Greeter", "grpc")},
		{in: "dns://8.8.8.8/greeter.example.com", syntax: core.HostSyntax, wantErr: `an authority ("8.8.8.8") is not supported`},
		{in: "greeter..example.com", syntax: core.HostSyntax, wantErr: "empty label"},
		{in: "greeter-.example", syntax: core.HostSyntax, wantErr: `label "greeter-"`},
		{in: "gr eeter", syntax: core.HostSyntax, wantErr: `label "gr eeter"`},
		{in: "[fd00::1", syntax: core.HostSyntax, wantErr: "missing ']'"},
		{in: "[fd00::1]80", syntax: core.HostSyntax, wantErr: `unexpected "80" after ']'`},
		{in: "fd00::1:80", syntax: core.HostSyntax, wantErr: "bracket an IPv6 address"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := core.ParseTarget(tt.in, tt.syntax)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, core.ErrInvalid) {
					t.Fatalf("ParseTarget(%q) = %v, %v; want an ErrInvalid containing %q", tt.in, got, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), `"`+tt.in+`"`) {
					t.Fatalf("error %q does not quote the target", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseTarget(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if back, err := core.ParseTarget(got.String(), tt.syntax); err != nil || back != got {
				t.Fatalf("String() %q parses to %+v, %v", got.String(), back, err)
			}
		})
	}
}

// FuzzParseTarget: any input either parses into a target that its String
// form parses back to, or fails with ErrInvalid; it never panics.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"greeter", "greeter.demo:grpc", "kubernetes://demo/greeter:8080", "kubernetes:///a.b.svc.x:1",
		"x://y/", ":::", "dns+srv:///_grpc._tcp.example.com", "[fd00::1]:80", "ns/name:port"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, host bool) {
		syntax := core.ServiceSyntax
		if host {
			syntax = core.HostSyntax
		}
		got, err := core.ParseTarget(s, syntax)
		if err != nil {
			if !errors.Is(err, core.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if got.Name == "" {
			t.Fatalf("%q parsed without a name", s)
		}
		back, err := core.ParseTarget(got.String(), syntax)
		if err != nil || back != got {
			t.Fatalf("%q parsed to %+v, whose text %q parses to %+v, %v", s, got, got.String(), back, err)
		}
	})
}

package kubernetes_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/disco-lb/disco/core"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in      string
		want    core.Target
		wantErr string
	}{
		{in: "greeter", want: core.Target{Name: "greeter"}},
		{in: "greeter:50051", want: core.Target{Name: "greeter", Port: "50051"}},
		{in: "greeter.demo", want: core.Target{Namespace: "demo", Name: "greeter"}},
		{in: "greeter.demo:grpc", want: core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}},
		{in: "greeter.demo.svc.cluster.local:grpc", want: core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}},
		{in: "greeter.demo.svc:8080", want: core.Target{Namespace: "demo", Name: "greeter", Port: "8080"}},
		{in: "kubernetes:///greeter.demo:grpc", want: core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}},
		{in: "kubernetes:///greeter", want: core.Target{Name: "greeter"}},
		{in: "kubernetes://demo/greeter:8080", want: core.Target{Namespace: "demo", Name: "greeter", Port: "8080"}},
		{in: "kubernetes://greeter.demo:grpc/", want: core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}},
		{in: "kubernetes://demo/greeter.demo:grpc", want: core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}},
		{in: "dns:///greeter.demo:grpc", want: core.Target{Namespace: "demo", Name: "greeter", Port: "grpc"}},

		{in: "", wantErr: "no service name"},
		{in: "kubernetes:///", wantErr: "no service name"},
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
		{in: "kubernetes://other/greeter.demo:grpc", wantErr: `namespace "other" in the authority contradicts "demo"`},
		{in: "kubernetes://demo/greeter/extra", wantErr: "too many path segments"},
		{in: "kubernetes://Demo/greeter", wantErr: `namespace "Demo"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := kubernetes.ParseTarget(tt.in)
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
		})
	}
}

// FuzzParseTarget: any input either parses into a target whose parts are
// valid Kubernetes names (and that parses back to itself), or fails with
// ErrInvalid; it never panics.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"greeter", "greeter.demo:grpc", "kubernetes://demo/greeter:8080", "kubernetes:///a.b.svc.x:1", "x://y/", ":::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := kubernetes.ParseTarget(s)
		if err != nil {
			if !errors.Is(err, core.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		text := got.Name
		if got.Namespace != "" {
			text += "." + got.Namespace
		}
		if got.Port != "" {
			text += ":" + got.Port
		}
		back, err := kubernetes.ParseTarget(text)
		if err != nil || back != got {
			t.Fatalf("%q parsed to %+v, whose text %q parses to %+v, %v", s, got, text, back, err)
		}
	})
}

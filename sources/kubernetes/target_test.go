package kubernetes_test

import (
	"errors"
	"testing"

	"github.com/disco-lb/disco/core"
	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
)

// The target syntax is core.ParseTarget's (tested there); the source adds
// its default namespace to targets that name none.
func TestSourceTargetFillsTheDefaultNamespace(t *testing.T) {
	src, err := kubernetes.NewForClient(nil, kubernetes.WithNamespace("team-a"))
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]core.Target{
		"kubernetes:///greeter:grpc":      {Namespace: "team-a", Name: "greeter", Port: "grpc"},
		"kubernetes:///greeter.demo:grpc": {Namespace: "demo", Name: "greeter", Port: "grpc"},
		"kubernetes://demo/greeter:8080":  {Namespace: "demo", Name: "greeter", Port: "8080"},
	} {
		if got, err := src.Target(in); err != nil || got != want {
			t.Errorf("Target(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if _, err := src.Target("kubernetes:///Greeter"); !errors.Is(err, core.ErrInvalid) {
		t.Errorf("Target of a bad name = %v, want ErrInvalid", err)
	}
}

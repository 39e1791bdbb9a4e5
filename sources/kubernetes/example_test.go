package kubernetes_test

import (
	"fmt"

	kubernetes "github.com/disco-lb/disco/sources/kubernetes"
)

// The target forms users of kuberesolver and grpc-go know all parse to a
// service, a namespace and a port.
func ExampleParseTarget() {
	for _, s := range []string{
		"greeter.demo:grpc",
		"kubernetes:///greeter.demo.svc.cluster.local:50051",
		"kubernetes://demo/greeter:grpc",
		"greeter:grpc_port",
	} {
		t, err := kubernetes.ParseTarget(s)
		fmt.Printf("%q -> %v %v\n", s, t, err)
	}
	// Output:
	// "greeter.demo:grpc" -> demo/greeter:grpc <nil>
	// "kubernetes:///greeter.demo.svc.cluster.local:50051" -> demo/greeter:50051 <nil>
	// "kubernetes://demo/greeter:grpc" -> demo/greeter:grpc <nil>
	// "greeter:grpc_port" ->  core: target "greeter:grpc_port": port name "grpc_port": only lower-case letters, digits and single inner hyphens: invalid
}

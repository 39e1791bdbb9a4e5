package kubernetes_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The source's tests against a real API server, and the conformance suite,
// are in examples/e2e/kubernetes (they need the test control plane, a
// module of its own); these are its unit tests.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"))
}

package kubetest

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// Required reports whether tests must fail rather than skip when a control
// plane cannot start for lack of binaries: DISCO_REQUIRE_K8S=1 (CI sets it).
func Required() bool { return os.Getenv("DISCO_REQUIRE_K8S") == "1" }

// New starts a control plane for the test and stops it, reaping both
// processes and removing every file, when the test ends (also when it fails
// or panics). Parallel tests get separate control planes. Without binaries
// the test is skipped with a message saying how to get them, or fails when
// Required.
func New(tb testing.TB, opts ...Option) *ControlPlane {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	begin := time.Now()
	cp, err := Start(ctx, opts...)
	if errors.Is(err, ErrNoBinaries) && !Required() {
		tb.Skipf("%v", err)
	}
	if err != nil {
		tb.Fatalf("start control plane: %v", err)
	}
	tb.Logf("kubetest: control plane ready in %v at %s (dir %s)", time.Since(begin).Round(time.Millisecond), cp.apiURL, cp.dir)
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("kubetest: logs of the failed test's control plane:\n%s", cp.LogTail(4000))
		}
		cp.Stop()
	})
	return cp
}

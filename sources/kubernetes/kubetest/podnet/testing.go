package podnet

import (
	"context"
	"os"
	"testing"
	"time"
)

// Required reports whether tests must fail rather than skip when pods cannot
// be made: DISCO_REQUIRE_NETNS=1 (CI sets it).
func Required() bool { return os.Getenv("DISCO_REQUIRE_NETNS") == "1" }

// NewForTest returns a network that is closed when the test ends, also on
// failure or panic. Where pods cannot be made it skips with what is missing
// (or fails when Required).
func NewForTest(tb testing.TB) *Network {
	tb.Helper()
	if err := Check(); err != nil {
		if Required() {
			tb.Fatal(err)
		}
		tb.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := New(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := n.Close(); err != nil {
			tb.Errorf("podnet: close: %v", err)
		}
	})
	return n
}

package kit

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the jittered exponential backoff every disco module uses
// between retries: core (a failing sink, a source's Watch restarted), the
// connection pool (a failed build), plugins (a crashed plugin restarted).
type Backoff struct {
	// Min is the first step (default 100ms), Max the cap (default 30s).
	Min, Max time.Duration
}

// DefaultBackoff is 100ms doubling up to 30s.
var DefaultBackoff = Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second}

// Delay returns the delay before retry number attempt (0-based): the
// exponential step min·2^attempt, capped at Max, with "equal jitter" (half
// fixed, half random), so that clients failing together do not retry
// together and the delay never falls below half the step.
func (b Backoff) Delay(attempt int) time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = DefaultBackoff.Min
	}
	if hi < lo {
		hi = max(lo, DefaultBackoff.Max)
	}
	d := lo
	for i := 0; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	half := d / 2
	return half + rand.N(half+1)
}

// Sleep waits d, or until ctx ends; it reports whether d passed (false:
// ctx ended first). The wait between retries, for every disco module.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

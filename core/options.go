package core

import (
	"math/rand/v2"
	"time"

	"go.uber.org/zap"
)

// Option configures a Hub or a Pipeline.
type Option func(*config)

type config struct {
	log        *zap.Logger
	metrics    Metrics
	maxStale   time.Duration
	backoffMin time.Duration
	backoffMax time.Duration
}

func newConfig(opts []Option) config {
	c := config{
		log:        zap.NewNop(),
		metrics:    nopMetrics{},
		backoffMin: 100 * time.Millisecond,
		backoffMax: 30 * time.Second,
	}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// WithLogger sets the logger for lifecycle events and errors (nil: no-op).
// Per-endpoint events are counted (see Metrics), not logged.
func WithLogger(l *zap.Logger) Option {
	return func(c *config) {
		if l != nil {
			c.log = l
		}
	}
}

// WithMetrics sets where counters and gauges go (nil: nowhere).
func WithMetrics(m Metrics) Option {
	return func(c *config) {
		if m != nil {
			c.metrics = m
		}
	}
}

// WithMaxStaleness bounds how long the last good endpoints of a stale target
// stay in force: after d they are dropped (an empty state, still stale, with
// Staleness.Dropped set). 0, the default, keeps them for ever.
func WithMaxStaleness(d time.Duration) Option {
	return func(c *config) { c.maxStale = d }
}

// WithBackoff sets the bounds of the jittered exponential backoff used to
// retry a failing sink and to restart a source's Watch. Defaults: 100ms, 30s.
func WithBackoff(min, max time.Duration) Option {
	return func(c *config) {
		if min > 0 {
			c.backoffMin = min
		}
		if max >= c.backoffMin {
			c.backoffMax = max
		}
	}
}

// backoff returns the delay before retry number attempt (0-based): the
// exponential step, capped, with "equal jitter" (half fixed, half random) so
// that many clients failing together do not retry together.
func (c *config) backoff(attempt int) time.Duration {
	d := c.backoffMin
	for i := 0; i < attempt && d < c.backoffMax; i++ {
		d *= 2
	}
	d = min(d, c.backoffMax)
	half := d / 2
	return half + rand.N(half+1)
}

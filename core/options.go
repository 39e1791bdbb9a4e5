package core

import (
	"time"

	"go.uber.org/zap"
)

// Option configures a Hub (and the Pipeline built on it).
type Option func(*config)

type config struct {
	log      *zap.Logger
	metrics  Metrics
	maxStale time.Duration
	backoff  Backoff
	linger   time.Duration
}

func newConfig(opts []Option) config {
	c := config{log: zap.NewNop(), metrics: nopMetrics{}, backoff: DefaultBackoff}
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

// WithBackoff sets the bounds of the jittered exponential backoff (see
// Backoff) used to retry a failing sink and to restart a source's Watch.
// Defaults: 100ms, 30s.
func WithBackoff(min, max time.Duration) Option {
	return func(c *config) {
		if min > 0 {
			c.backoff.Min = min
		}
		if max >= c.backoff.Min {
			c.backoff.Max = max
		}
	}
}

// WithLinger keeps a target's watch running for d after its last
// subscriber left, so that a client that closes and reopens connections to
// the same target does not cost its backend a new watch each time (for
// Kubernetes, a LIST and a WATCH). 0, the default, stops it at once.
func WithLinger(d time.Duration) Option {
	return func(c *config) { c.linger = max(d, 0) }
}
